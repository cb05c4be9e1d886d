"""finetune_lm.py end to end on tiny random GPT-2, BERT and T5 models built in code: per-token surprisal equal
to a direct teacher-forced log-softmax for each model type, the original toolkit's columns, words, metadata,
training outputs, resumable test scoring, and the original's flags."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import shutil
import tempfile
from typing import Any

from absl.testing import absltest, parameterized

from tests.fixtures import generated_corpus, save_tiny_lm, tiny_lm_tokenizer

TOKEN_COLUMNS = ["model_name", "task", "n_params", "dataset_name", "item", "original_text", "input_text"]
TAIL_COLUMNS = ["word_num", "token_num_in_word", "token", "token_id", "token_is_start_of_word", "token_is_word", "surprisal",
                "logprob", "predicted_token", "predicted_token_id", "predicted_token_surprisal"]
STIMULI = ["the model learns tokens.", "a decoder predicts missing words in every sentence.", "weights go down quickly"]


def read_csv(path: str) -> list[dict[str, str]]:
    import csv

    with gzip.open(path, "rt", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_lines(path: str, lines: list[str]) -> str:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run(argv: list[str]) -> dict[str, Any]:
    import finetune_lm

    with contextlib.redirect_stdout(io.StringIO()):
        return finetune_lm.main([*argv, "--report_to", "none", "--disable_tqdm", "True"])


def direct_surprisals(model_dir: str, kind: str, text: str) -> list[float]:
    """Bits for each scored token of `text`, computed the plain way, one sentence at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    tokenizer = tiny_lm_tokenizer(kind)
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        if kind == "gpt2":  # BOS-conditioned: p(x_t | <|endoftext|> x_<t)
            model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
            ids = [tokenizer.bos_token_id] + ids
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            return [-logprobs[t - 1, ids[t]].item() / math.log(2) for t in range(1, len(ids))]
        if kind == "bert":  # one copy per position, that position masked
            model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
            out = []
            for i in range(1, len(ids) - 1):  # [CLS] ... [SEP]
                masked = list(ids)
                masked[i] = tokenizer.mask_token_id
                logprobs = torch.log_softmax(model(torch.tensor([masked])).logits[0].double(), -1)
                out.append(-logprobs[i, ids[i]].item() / math.log(2))
            return out
        model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()  # T5, the text its own target
        decoder_input = [model.config.decoder_start_token_id] + ids[:-1]
        logits = model(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([decoder_input])).logits[0]
        logprobs = torch.log_softmax(logits.double(), -1)
        return [-logprobs[t, ids[t]].item() / math.log(2) for t in range(len(ids))]


class FinetuneLMTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="finetune_lm_")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.models = {kind: save_tiny_lm(os.path.join(cls.tmp, "models", kind), kind) for kind in ("gpt2", "bert", "t5")}
        data = os.path.join(cls.tmp, "data")
        os.makedirs(data)
        lines = generated_corpus(80, seed=3)
        cls.train = write_lines(os.path.join(data, "train.txt.gz"), lines[:48])
        cls.dev = write_lines(os.path.join(data, "dev.txt.gz"), lines[48:56])
        cls.test = write_lines(os.path.join(data, "stimuli.txt.gz"), STIMULI)
        write_lines(os.path.join(data, "stimuli_metadata.json.gz"), [json.dumps({"condition": c, "id": i}) for i, c in enumerate("aba")])
        cls.jsonl = os.path.join(data, "more.jsonl")
        with open(cls.jsonl, "w", encoding="utf-8") as f:
            f.write(json.dumps({"text": "missing spans of words"}) + "\n")

    def output_dir(self) -> str:
        return tempfile.mkdtemp(dir=self.tmp)

    # --- Scores ------------------------------------------------------------------------------------------

    @parameterized.parameters(("gpt2", "LM", []), ("bert", "MLM", ["--data_preprocessing_fn.test", "expand_with_masks"]), ("t5", "Seq2Seq", []))
    def test_surprisal_equals_direct_log_softmax(self, kind: str, task: str, extra: list[str]) -> None:
        out = self.output_dir()
        results = run(["--model_name_or_path", self.models[kind], "--test_file", self.test, "--output_dir", out,
                       "--per_device_test_batch_size", "2", "--test_output_file_prefix", "tiny", *extra])
        self.assertEqual(results["model_task"], {"gpt2": "lm", "bert": "mlm", "t5": "seq2seq"}[kind])
        rows = read_csv(os.path.join(out, "tiny-test_results.csv.gz"))
        middle = ["generated_sequence_type", "label_text"] if kind == "t5" else ["input_label"]
        self.assertEqual(list(rows[0]), TOKEN_COLUMNS + middle + TAIL_COLUMNS + ["condition", "id", "dataset_type"])
        if kind == "t5":
            generated = [r for r in rows if r["generated_sequence_type"] == "generated_sequence"]
            rows = [r for r in rows if r["generated_sequence_type"] == "label_sequence"]
            self.assertEqual(len(generated), len(rows))
            for gen, gold in zip(generated, rows):  # the argmax at each teacher-forced position
                self.assertEqual((gen["token_id"], gen["surprisal"]), (gold["predicted_token_id"], gold["predicted_token_surprisal"]))
        for item, text in enumerate(STIMULI):
            mine = [r for r in rows if r["item"] == str(item)]
            expected = direct_surprisals(self.models[kind], kind, text)
            self.assertLen(mine, len(expected))
            for row, bits in zip(mine, expected):
                self.assertAlmostEqual(float(row["surprisal"]), bits, delta=1e-4)
                self.assertAlmostEqual(float(row["logprob"]), -bits * math.log(2), delta=1e-4)
                self.assertGreaterEqual(float(row["surprisal"]), float(row["predicted_token_surprisal"]) - 1e-6)
            self.assertEqual({r["original_text"] for r in mine}, {text})
            self.assertEqual({(r["condition"], r["id"]) for r in mine}, {("aba"[item], str(item))})
        self.assertEqual({(r["task"], r["dataset_name"], r["model_name"], r["dataset_type"]) for r in rows}, {(task, "stimuli", out, "test")})
        self.assertRegex(rows[0]["n_params"], r"^\d+K$")

    def test_words_join_to_the_texts_words(self) -> None:
        out = self.output_dir()
        run(["--model_name_or_path", self.models["gpt2"], "--test_file", self.test, self.jsonl, "--output_dir", out])
        tokenizer = tiny_lm_tokenizer("gpt2")
        rows = read_csv(os.path.join(out, f"{self.models['gpt2'].replace('/', '-')}-test_results.csv.gz"))
        words = read_csv(os.path.join(out, f"{self.models['gpt2'].replace('/', '-')}-test_results_words.csv.gz"))
        self.assertEqual(sorted({(r["dataset_name"], r["item"]) for r in rows}),
                         [("more", "0"), ("stimuli", "0"), ("stimuli", "1"), ("stimuli", "2")])
        self.assertEqual({r["condition"] for r in rows if r["dataset_name"] == "more"}, {""})  # no metadata file
        for (name, item), text in [(("stimuli", str(i)), t) for i, t in enumerate(STIMULI)] + [(("more", "0"), "missing spans of words")]:
            mine = [r for r in rows if (r["dataset_name"], r["item"]) == (name, item)]
            # The GPT-2 tokenizer splits words into several pieces: every word's pieces join to the word.
            self.assertGreater(len(mine), len(text.split()))
            by_word: dict[int, list[dict]] = {}
            for r in mine:
                by_word.setdefault(int(r["word_num"]), []).append(r)
            self.assertEqual(sorted(by_word), list(range(len(text.split()))))
            for number, pieces in by_word.items():
                self.assertEqual(tokenizer.decode([int(p["token_id"]) for p in pieces]).strip(), text.split()[number])
                self.assertEqual([int(p["token_num_in_word"]) for p in pieces], list(range(len(pieces))))
                self.assertEqual([p["token_is_start_of_word"] for p in pieces], ["True"] + ["False"] * (len(pieces) - 1))
                self.assertEqual({p["token_is_word"] for p in pieces}, {str(len(pieces) == 1)})
            word_rows = [w for w in words if (w["dataset_name"], w["item"]) == (name, item)]
            self.assertEqual([w["word"] for w in word_rows], text.split())
            for w in word_rows:
                total = sum(float(p["surprisal"]) for p in by_word[int(w["word_num"])])
                self.assertAlmostEqual(float(w["surprisal"]), total, places=6)
                self.assertEqual(int(w["n_tokens"]), len(by_word[int(w["word_num"])]))

    def test_t5_sentinels_are_words_of_their_own(self) -> None:
        out = self.output_dir()
        masked = os.path.join(self.tmp, "data", "masked.jsonl")
        with open(masked, "w", encoding="utf-8") as f:
            f.write(json.dumps({"text": "the model <extra_id_0> tokens.", "labels": "<extra_id_0> learns<extra_id_1>"}) + "\n")
        run(["--model_name_or_path", self.models["t5"], "--test_file", masked, "--output_dir", out, "--test_output_file_prefix", "t"])
        rows = [r for r in read_csv(os.path.join(out, "t-test_results.csv.gz")) if r["generated_sequence_type"] == "label_sequence"]
        self.assertEqual([(r["token"], r["word_num"], r["token_is_word"]) for r in rows],
                         [("<extra_id_0>", "0", "True"), ("learns", "1", "True"), ("<extra_id_1>", "2", "True"), ("</s>", "3", "True")])
        self.assertEqual({r["label_text"] for r in rows}, {"<extra_id_0> learns<extra_id_1>"})

    # --- Training ------------------------------------------------------------------------------------------

    def test_training_writes_the_originals_outputs(self) -> None:
        cwd = os.getcwd()
        work = self.output_dir()
        os.chdir(work)
        self.addCleanup(os.chdir, cwd)
        shutil.copytree(self.models["gpt2"], "models/gpt2")
        results = run(["--model_name_or_path", "models/gpt2", "--train_file", self.train, "--validation_file", self.dev,
                       "--test_file", self.test, "--epochs", "3", "--lr", "3e-3", "--per_device_train_batch_size", "8",
                       "--per_device_validation_batch_size", "4", "--epoch_surprisals", "--warmup_steps", "0",
                       "--token", "hf_FakeToken0123456789abcdef"])
        (run_dir,) = [os.path.join("outputs", "train", "models-gpt2", d) for d in os.listdir("outputs/train/models-gpt2")]
        self.assertRegex(os.path.basename(run_dir), r"^\d{4}-\d\d-\d\d_\d\d_\d\d_\d\d\.\d{6}$")
        for name in ("model/model.safetensors", "tokenizer/tokenizer.json", "config.txt", "metrics.csv.gz", "loss_curves.pdf",
                     "loss_curves.png", "all_results.json", "models-gpt2-test_results.csv.gz", "models-gpt2-test_results_words.csv.gz"):
            self.assertTrue(os.path.isfile(os.path.join(run_dir, name)), name)
        for base, _, files in os.walk(run_dir):  # the Hub token is in no file
            for name in files:
                path = os.path.join(base, name)
                with (gzip.open if name.endswith(".gz") else open)(path, "rb") as f:
                    self.assertNotIn(b"hf_FakeToken", f.read(), path)
        with open(os.path.join(run_dir, "loss_curves.pdf"), "rb") as f:
            self.assertEqual(f.read(5), b"%PDF-")
        with open(os.path.join(run_dir, "config.txt"), encoding="utf-8") as f:
            config = f.read()
        self.assertIn("LMTrainingArguments.num_train_epochs: 3.0\n", config)
        self.assertIn("LMTrainingArguments.learning_rate: 0.003\n", config)
        self.assertIn("LMDataArguments.epoch_surprisals: True\n", config)

        metrics = read_csv(os.path.join(run_dir, "metrics.csv.gz"))
        batches = [m for m in metrics if m["token_id"] == ""]
        self.assertEqual(list(metrics[0])[:5], ["epoch", "batch_number", "dataset_type", "loss", "seed"])
        train = [m for m in batches if m["dataset_type"] == "train"]
        self.assertEqual([(m["epoch"], m["batch_number"]) for m in train], [(str(e), str(b)) for e in (1, 2, 3) for b in range(6)])
        self.assertEqual({m["seed"] for m in batches}, {"42"})
        first, last = (sum(float(m["loss"]) for m in train if m["epoch"] == e) / 6 for e in ("1", "3"))
        self.assertLess(last, first - 0.3)  # it learns
        validation = [m for m in batches if m["dataset_type"] == "validation"]
        self.assertEqual([(m["epoch"], m["batch_number"]) for m in validation], [(str(e), str(b)) for e in (1, 2, 3) for b in range(2)])
        tokens = [m for m in metrics if m["token_id"] != ""]
        self.assertEqual({m["epoch"] for m in tokens}, {"1", "2", "3"})
        self.assertEqual({m["dataset_type"] for m in tokens}, {"validation"})

        # The best model by validation loss is model/, and the test rows are its scores.
        with open(os.path.join(run_dir, "all_results.json"), encoding="utf-8") as f:
            saved = json.load(f)
        self.assertEqual(saved["eval_loss"], results["eval_loss"])
        epoch_losses = [sum(float(m["loss"]) for m in validation if m["epoch"] == str(e)) / 2 for e in (1, 2, 3)]
        self.assertAlmostEqual(results["eval_loss"], min(epoch_losses), delta=0.05)
        rows = read_csv(os.path.join(run_dir, "models-gpt2-test_results.csv.gz"))
        expected = direct_surprisals(os.path.join(run_dir, "model"), "gpt2", STIMULI[0])
        self.assertEqual(len([r for r in rows if r["item"] == "0"]), len(expected))
        for row, bits in zip((r for r in rows if r["item"] == "0"), expected):
            self.assertAlmostEqual(float(row["surprisal"]), bits, delta=1e-4)

    @parameterized.parameters(("bert", "mask_random_tokens", {}), ("t5", "mask_random_spans", {"mean_noise_span_length": 2}))
    def test_masked_training_per_batch(self, kind: str, function: str, kwargs: dict) -> None:
        out = self.output_dir()
        config = os.path.join(out, "settings.yaml")
        with open(config, "w", encoding="utf-8") as f:  # the original's nested keys, in a config file
            json.dump({"data_preprocessing_fn": {"train": function, "validation": function},
                       "data_preprocessing_fn_kwargs": {"train": {"mask_prop": 0.3, **kwargs}, "validation": {"mask_prop": 0.3, **kwargs}},
                       "data_preprocessing_fn_strategy": {"train": "per_batch"}}, f)
        results = run(["--config", config, "--model_name_or_path", self.models[kind], "--train_file", self.train,
                       "--validation_file", self.dev, "--output_dir", os.path.join(out, "run"), "--epochs", "2", "--lr", "3e-3",
                       "--per_device_train_batch_size", "16"])
        self.assertTrue(math.isfinite(results["eval_loss"]))
        train = [m for m in read_csv(os.path.join(out, "run", "metrics.csv.gz")) if m["dataset_type"] == "train"]
        self.assertLen(train, 6)
        self.assertTrue(os.path.isfile(os.path.join(out, "run", "model", "model.safetensors")))

    # --- Runs that keep results -----------------------------------------------------------------------------

    def test_test_only_runs_never_overwrite(self) -> None:
        cwd = os.getcwd()
        os.chdir(self.output_dir())
        self.addCleanup(os.chdir, cwd)
        argv = ["--model_name_or_path", self.models["gpt2"], "--test_file", self.test, "--test_output_file_prefix", "p"]
        run(argv)
        run_dir = os.path.join("outputs", "test_only", self.models["gpt2"].replace("/", "-"))
        with open(os.path.join(run_dir, "p-test_results.csv.gz"), "rb") as f:
            first = f.read()
        run(argv)
        self.assertTrue(os.path.isfile(os.path.join(run_dir, "p-test_results-1.csv.gz")))
        self.assertTrue(os.path.isfile(os.path.join(run_dir, "eval_results-1.json")))
        with open(os.path.join(run_dir, "p-test_results.csv.gz"), "rb") as f:
            self.assertEqual(f.read(), first)

    def test_scoring_resumes_from_finished_chunks(self) -> None:
        from unittest import mock

        import finetune_lm

        base = ["--model_name_or_path", self.models["bert"], "--test_file", self.test, "--test_output_file_prefix", "p",
                "--data_preprocessing_fn.test", "expand_with_masks", "--per_device_test_batch_size", "4"]
        reference = self.output_dir()
        run([*base, "--output_dir", reference])
        out = self.output_dir()
        chunks_done = []

        def preempted_after_two() -> bool:
            chunks_done.append(1)
            return len(chunks_done) > 2

        with mock.patch.object(finetune_lm, "TEST_CHUNK_ROWS", 5):
            with mock.patch.object(finetune_lm, "preemption_requested", preempted_after_two), self.assertRaises(SystemExit) as stopped:
                run([*base, "--output_dir", out])
            self.assertEqual(stopped.exception.code, 75)
            (chunk_dir,) = os.listdir(os.path.join(out, ".test-chunks"))
            kept = sorted(os.listdir(os.path.join(out, ".test-chunks", chunk_dir)))
            self.assertEqual(kept, ["00000.tokens.jsonl.gz", "00000.words.jsonl.gz", "00001.tokens.jsonl.gz", "00001.words.jsonl.gz"])
            self.assertFalse(os.path.exists(os.path.join(out, "p-test_results.csv.gz")))
            scored = []
            real = finetune_lm.result_rows
            with mock.patch.object(finetune_lm, "result_rows", lambda *a, **k: scored.append(len(a[6])) or real(*a, **k)):
                run([*base, "--output_dir", out])  # the same command again
        total = len(read_csv(os.path.join(reference, "p-test_results.csv.gz")))  # one row per masked copy
        self.assertEqual(sum(scored), total - 10)  # the two kept chunks (5 rows each) are not scored again
        self.assertFalse(os.path.exists(os.path.join(out, ".test-chunks")))
        resumed, whole = (read_csv(os.path.join(d, "p-test_results.csv.gz")) for d in (out, reference))
        numbers = ("surprisal", "logprob", "predicted_token_surprisal")  # batches differ: float sums differ in the last bits
        self.assertEqual([{**r, "model_name": "", **{k: "" for k in numbers}} for r in resumed],
                         [{**r, "model_name": "", **{k: "" for k in numbers}} for r in whole])
        for a, b in zip(resumed, whole):
            for key in numbers:
                self.assertAlmostEqual(float(a[key]), float(b[key]), delta=1e-4)

    # --- Arguments ---------------------------------------------------------------------------------------

    def test_the_originals_flags(self) -> None:
        from arguments import light_parse, parse_args
        from finetune_lm import ARGUMENTS

        argv = ["--model_name_or_path", "gpt2", "--test_file", "a.txt.gz", "b.txt.gz", "--epochs", "2", "--lr", "1e-3",
                "--per_device_validation_batch_size", "4", "--per_device_test_batch_size", "3", "--max_length", "64",
                "--max_validation_samples", "5", "--use_gpu", "--data_preprocessing_fn.train", "mask_words",
                "--data_preprocessing_fn_kwargs.train.words_to_mask", "cat", "dog", "--data_preprocessing_fn_kwargs.test.mask_prop", "0.5"]
        early = light_parse(ARGUMENTS, argv)
        model_args, data_args, _, training_args = parse_args(ARGUMENTS, argv, None, early)
        self.assertEqual((training_args.num_train_epochs, training_args.learning_rate), (2.0, 1e-3))
        self.assertEqual((training_args.per_device_eval_batch_size, training_args.per_device_test_batch_size), (4, 3))
        self.assertEqual((data_args.max_length, data_args.max_validation_samples, data_args.test_file), (64, 5, ["a.txt.gz", "b.txt.gz"]))
        self.assertTrue(model_args.use_gpu)
        self.assertEqual(json.loads(data_args.data_preprocessing_fn), {"train": "mask_words"})
        self.assertEqual(json.loads(data_args.data_preprocessing_fn_kwargs), {"train": {"words_to_mask": ["cat", "dog"]}, "test": {"mask_prop": 0.5}})

    def test_model_task_from_the_config_or_asked_for(self) -> None:
        from errors import UserError

        odd = os.path.join(self.tmp, "models", "odd")
        shutil.copytree(self.models["gpt2"], odd)
        with open(os.path.join(odd, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        config["architectures"] = ["GPT2Model"]
        with open(os.path.join(odd, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f)
        with self.assertRaisesRegex(UserError, r"^--model_name_or_path \S+/odd: cannot tell whether it is a causal LM, a masked LM or an "
                                               r"encoder-decoder .*; pass --model_task lm, mlm or seq2seq$"):
            run(["--model_name_or_path", odd, "--test_file", self.test, "--output_dir", self.output_dir()])
        results = run(["--model_name_or_path", odd, "--model_task", "lm", "--test_file", self.test, "--output_dir", self.output_dir()])
        self.assertEqual(results["model_task"], "lm")


class WordPositionsTest(absltest.TestCase):
    """surprisal.word_positions on hand-written pieces."""

    def test_pieces_without_text(self) -> None:
        from surprisal import WordMarks, word_positions

        marks = WordMarks(own_word_ids=frozenset({90, 91}), control_ids=frozenset({1, 2}), continuation=None)
        ids = [2, 90, 10, 11, 12, 91, 13, 1]  # BOS? no: 2 is a control token before the text, 1 the final </s>
        pieces = ["<s>", "<extra_id_0>", "▁un", "believ", "▁able", "<extra_id_1>", "▁yes", "</s>"]
        word_num, in_word, starts, is_word = word_positions(ids, pieces, marks, scored={1, 2, 3, 4, 5, 6, 7})
        self.assertEqual(word_num, [None, 0, 1, 1, 2, 3, 4, 5])
        self.assertEqual(in_word, [0, 0, 0, 1, 0, 0, 0, 0])
        self.assertEqual(starts, [False, True, True, False, True, True, True, True])
        self.assertEqual(is_word, [False, True, False, False, True, True, True, True])

    def test_wordpiece_continuations(self) -> None:
        from surprisal import WordMarks, word_positions

        marks = WordMarks(own_word_ids=frozenset({4}), control_ids=frozenset({2, 3}), continuation="##")
        ids = [2, 10, 11, 4, 12, 3]
        word_num, in_word, _, _ = word_positions(ids, ["[CLS]", "play", "##ing", "[MASK]", "now", "[SEP]"], marks, scored={3})
        self.assertEqual(word_num, [None, 0, 0, 1, 2, None])
        self.assertEqual(in_word, [0, 0, 1, 0, 0, 0])

    def test_text_words_decide_over_pieces(self) -> None:
        from surprisal import text_word_ids

        # Byte-level offsets include the space before a word; "cat." is one whitespace word of two pieces.
        self.assertEqual(text_word_ids("a cat. sat", [(0, 1), (1, 5), (5, 6), (6, 10), (0, 0)]), [0, 1, 1, 2, None])


class StreamedScoresTest(parameterized.TestCase):
    """surprisal's fast paths against the plain computation: the output layer streamed over slices of the
    vocabulary, GELU by torch's fused kernel, an lm row's last token not fed; and the fallback for a model that
    changes its logits after the output layer."""

    def test_streamed_statistics_equal_the_whole_logits(self) -> None:
        import torch

        from surprisal import logits_statistics, output_statistics

        torch.manual_seed(0)
        for dtype, bias in ((torch.float32, True), (torch.float64, False)):
            head = torch.nn.Linear(16, 50, bias=bias).to(dtype)
            hidden = torch.randn(9, 16, dtype=dtype) * 3
            tokens = torch.tensor([0, 49, 6, 7, 13, 14, 20, 41, 42])  # first, last and both sides of slice borders
            whole = logits_statistics(head(hidden).detach(), tokens)
            for chunk in (7, 50, 8192):
                streamed = output_statistics(hidden, head, tokens, chunk)
                self.assertEqual(streamed[0].dtype, dtype)
                torch.testing.assert_close(streamed[0], whole[0], rtol=0, atol=1e-5)
                self.assertEqual(streamed[1].tolist(), whole[1].tolist())
                torch.testing.assert_close(streamed[2], whole[2], rtol=0, atol=1e-5)
        head = torch.nn.Linear(16, 20)
        with torch.no_grad():
            head.bias[:5] = -math.inf  # a whole first slice that can never be predicted
        hidden, tokens = torch.randn(3, 16), torch.tensor([6, 19, 12])
        whole = logits_statistics(head(hidden).detach(), tokens)
        streamed = output_statistics(hidden, head, tokens, 5)
        self.assertFalse(streamed[0].isnan().any())
        torch.testing.assert_close(streamed[0], whole[0], rtol=0, atol=1e-5)
        self.assertEqual(streamed[1].tolist(), whole[1].tolist())

    def plain_logprobs(self, model: Any, rows: list[list[int]]) -> list[list[float]]:
        import torch

        with torch.no_grad():
            return [torch.log_softmax(model(torch.tensor([row])).logits[0, :-1].double(), -1).gather(1, torch.tensor(row[1:])[:, None])[:, 0].tolist()
                    for row in rows]

    def test_gpt2_scores_through_the_fast_paths(self) -> None:
        from unittest import mock

        from transformers.activations import NewGELUActivation

        import surprisal
        from tests.fixtures import tiny_lm

        model = tiny_lm("gpt2").eval()
        self.assertLen([m for m in model.modules() if type(m) is NewGELUActivation], 2)
        rows = [[0, 5, 9, 33, 7], [0], [0, 12], [0, 40, 41, 42, 43, 44, 45]]  # BOS alone: nothing to score
        expected = self.plain_logprobs(model, rows)
        seen: list[str] = []
        forward = model.transformer.h[0].mlp.forward

        def record(*args: Any, **kwargs: Any) -> Any:
            seen.append(type(model.transformer.h[0].mlp.act).__name__)
            return forward(*args, **kwargs)

        with mock.patch.object(surprisal, "VOCAB_CHUNK", 7), mock.patch.object(model.transformer.h[0].mlp, "forward", record):
            for _ in range(2):  # the first batch checks the streamed statistics; the second uses them
                scored = surprisal.score_rows(model, "lm", [{"input_ids": r, "labels": r} for r in rows], 4, 0)
                for row, result, plain in zip(rows, scored, expected):
                    self.assertEqual(result.positions.tolist(), list(range(1, len(row))))
                    self.assertEqual(result.token_ids.tolist(), row[1:])
                    for mine, theirs in zip(result.logprobs.tolist(), plain):
                        self.assertAlmostEqual(mine, theirs, delta=1e-5)
        self.assertIs(surprisal._HEAD_IS_LAST[model.get_output_embeddings()], True)
        self.assertEqual(seen, ["GELUTanh", "GELUTanh"])
        self.assertLen([m for m in model.modules() if type(m) is NewGELUActivation], 2)  # put back

    def test_lm_positions_outside_the_row_are_refused(self) -> None:
        import surprisal
        from tests.fixtures import tiny_lm

        model = tiny_lm("gpt2").eval()
        for positions in ([0, 1], [4]):  # position 0 (BOS) has no context; 4 is past a row of 4
            with self.assertRaisesRegex(ValueError, r"^scored positions \[.*\] of a row of 4: each must lie in \[1, 4\)$"):
                surprisal.score_rows(model, "lm", [{"input_ids": [0, 5, 9, 33], "labels": [0, 5, 9, 33], "scored": positions}], 2, 0)

    def test_a_scored_position_without_a_label_is_refused(self) -> None:
        import surprisal
        from tests.fixtures import tiny_lm

        model = tiny_lm("bert").eval()
        row = {"input_ids": [2, 4, 30, 3], "labels": [-100, -100, 30, -100], "scored": [1, 2]}  # position 1 has no label
        with self.assertRaisesRegex(ValueError, r"^a scored position has no target token \(label -100\)"):
            surprisal.score_rows(model, "mlm", [row], 2, 0)

    def test_a_zero3_partitioned_output_layer_is_left_to_the_model(self) -> None:
        import surprisal
        from tests.fixtures import tiny_lm

        model = tiny_lm("gpt2").eval()
        rows = [[0, 5, 9, 33, 7], [0, 12]]
        model.get_output_embeddings().weight.ds_id = 3  # as DeepSpeed ZeRO-3 marks the parameters it partitions
        scored = surprisal.score_rows(model, "lm", [{"input_ids": r, "labels": r} for r in rows], 2, 0)
        for result, plain in zip(scored, self.plain_logprobs(model, rows)):
            for mine, theirs in zip(result.logprobs.tolist(), plain):
                self.assertAlmostEqual(mine, theirs, delta=1e-5)
        self.assertNotIn(model.get_output_embeddings(), surprisal._HEAD_IS_LAST)  # never streamed, never checked

    def test_logits_changed_after_the_output_layer_are_scored_as_the_model_gives_them(self) -> None:
        import torch
        from transformers import Gemma2Config, Gemma2ForCausalLM

        import surprisal

        torch.manual_seed(0)
        config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, max_position_embeddings=64, final_logit_softcapping=0.5,
                              pad_token_id=0, bos_token_id=1, eos_token_id=2)
        model = Gemma2ForCausalLM(config).eval()
        rows = [[1, 5, 9, 33, 7], [1, 40, 41]]
        expected = self.plain_logprobs(model, rows)
        (alone,) = surprisal.score_rows(model, "lm", [{"input_ids": [1], "labels": [1]}], 2, 0)  # BOS alone: nothing scored,
        self.assertEqual(alone.logprobs.tolist(), [])
        self.assertNotIn(model.get_output_embeddings(), surprisal._HEAD_IS_LAST)  # so nothing learnt about the head
        for _ in range(2):
            scored = surprisal.score_rows(model, "lm", [{"input_ids": r, "labels": r} for r in rows], 2, 0)
            for result, plain in zip(scored, expected):
                for mine, theirs in zip(result.logprobs.tolist(), plain):
                    self.assertAlmostEqual(mine, theirs, delta=1e-5)
        self.assertIs(surprisal._HEAD_IS_LAST[model.get_output_embeddings()], False)


if __name__ == "__main__":
    absltest.main()
