"""fine_tune_t5.py end to end on the toy task and tiny GLUE-layout directories; label scoring; padding."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile

import torch
from absl.testing import absltest, parameterized

from tests.fixtures import save_tiny_t5, task_tokenizer, write_tsv

import fine_tune_t5  # noqa: E402  (after fixtures: they set HF_HUB_OFFLINE)
from errors import UserError
from constants import DATASET_VALS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = ["--disable_tqdm", "True", "--report_to", "none", "--save_strategy", "no"]


def read_tsv(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


class ToyTaskTest(absltest.TestCase):
    """The offline toy task: learnable, both evaluation modes, both local layouts, submission files."""

    @classmethod
    def setUpClass(cls) -> None:
        from examples import write_toy_benchmark

        cls.tmp = tempfile.mkdtemp()
        cls.model = save_tiny_t5(os.path.join(cls.tmp, "tiny"), d_model=64)
        cls.glue_dir = os.path.join(cls.tmp, "toy_glue")
        write_toy_benchmark(cls.glue_dir)
        cls.trained = os.path.join(cls.tmp, "trained")
        cls.results = fine_tune_t5.main([
            "--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", cls.model,
            "--dataset_dir", cls.glue_dir, "--output_dir", cls.trained, "--max_steps", "150", "--learning_rate", "3e-3",
            "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64", "--logging_steps", "25",
            "--do_predict",
        ] + QUIET)

    def test_learns_the_toy_task(self) -> None:
        self.assertGreaterEqual(self.results["eval_accuracy"], 95.0)
        self.assertEqual(self.results["toy_sentiment/accuracy"], self.results["eval_accuracy"])  # keyed by benchmark
        self.assertBetween(self.results["padded_token_fraction"], 0.0, 0.5)
        with open(os.path.join(self.trained, "all_results.json")) as f:
            saved = json.load(f)
        self.assertAlmostEqual(saved["eval_accuracy"], self.results["eval_accuracy"])
        self.assertEqual(saved["eval_mode"], "score")  # rank classification, the default, named in the results
        for name in ("model.safetensors", "tokenizer.json", "provenance.json", "loss_curve.png"):
            self.assertTrue(os.path.isfile(os.path.join(self.trained, name)), name)

    def test_test_split_predictions_and_submission_file(self) -> None:
        rows = read_tsv(os.path.join(self.trained, "sentiment.tsv"))
        self.assertEqual(rows[0], ["index", "prediction"])
        self.assertEqual([r[0] for r in rows[1:]], [str(i) for i in range(200)])  # each example once, in order
        self.assertTrue({r[1] for r in rows[1:]} <= {"negative", "positive"})
        with open(os.path.join(self.trained, "predictions_test.jsonl")) as f:
            predictions = [json.loads(line) for line in f]
        self.assertEqual([p["idx"] for p in predictions], list(range(200)))
        self.assertEqual([p["prediction"] for p in predictions], [r[1] for r in rows[1:]])

    def test_evaluation_only_run_adds_files_beside_a_finished_one(self) -> None:
        before = {name: open(os.path.join(self.trained, name), "rb").read() for name in ("sentiment.tsv", "all_results.json")}
        fine_tune_t5.main(["--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", self.trained,
                           "--dataset_dir", self.glue_dir, "--output_dir", self.trained, "--no_train", "--do_predict",
                           "--max_predict_samples", "7"] + QUIET)
        for name, content in before.items():
            self.assertEqual(open(os.path.join(self.trained, name), "rb").read(), content, name)
        self.assertLen(read_tsv(os.path.join(self.trained, "sentiment-1.tsv")), 8)
        with open(os.path.join(self.trained, "eval_results.json")) as f:
            saved = json.load(f)
        self.assertEqual(saved["predict_test_examples"], 7)
        self.assertEqual(saved["eval_mode"], "score")

    def test_offline_optuna_search_writes_the_study_files(self) -> None:
        import gzip

        out = os.path.join(self.tmp, "hp")
        results = fine_tune_t5.main([
            "--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", self.model,
            "--dataset_dir", self.glue_dir, "--output_dir", out, "--max_steps", "4", "--per_device_train_batch_size", "8",
            "--max_train_samples", "64", "--max_eval_samples", "32", "--hp_search", "optuna", "--hp_trials", "3",
        ] + QUIET)
        with gzip.open(os.path.join(out, "optimization_trials.csv.gz"), "rt", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([r["number"] for r in rows], ["0", "1", "2"])
        self.assertEqual({r["state"] for r in rows}, {"COMPLETE"})
        self.assertTrue(all(1e-4 <= float(r["params_learning_rate"]) <= 3e-3 for r in rows))
        self.assertTrue({r["params_lr_scheduler_type"] for r in rows} <= set(fine_tune_t5.HP_SPACE["lr_scheduler_type"]["values"]))
        best = results["hp_search_best"]
        self.assertEqual(best["objective"], max(float(r["value"]) for r in rows))  # eval_accuracy, maximised
        with open(os.path.join(out, "optimization_plots.pdf"), "rb") as f:
            self.assertEqual(f.read(5), b"%PDF-")
        self.assertTrue(os.path.isfile(os.path.join(out, "optimization_study.journal")))
        for old in ("hp_search.tsv", "hp_search.png", "hp_search.db"):
            self.assertFalse(os.path.exists(os.path.join(out, old)), old)
        with open(os.path.join(out, "provenance.json")) as f:  # the final model trained with the best values
            arguments = json.load(f)["arguments"]
        self.assertEqual(arguments["learning_rate"], best["learning_rate"])
        self.assertEqual(arguments["lr_scheduler_type"], best["lr_scheduler_type"])

    def test_generate_mode_agrees_with_label_scoring(self) -> None:
        results = fine_tune_t5.main([
            "--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", self.trained,
            "--dataset_dir", self.glue_dir, "--output_dir", os.path.join(self.tmp, "generated"), "--no_train",
            "--eval_mode", "generate", "--per_device_eval_batch_size", "64",
        ] + QUIET)
        self.assertGreaterEqual(results["eval_accuracy"], 90.0)
        self.assertLessEqual(abs(results["eval_accuracy"] - self.results["eval_accuracy"]), 5.0)
        with open(os.path.join(self.tmp, "generated", "eval_results.json")) as f:
            self.assertEqual(json.load(f)["eval_mode"], "generate")

    def test_parquet_hub_layout_reads_the_same_examples(self) -> None:
        from tasks import get_task, load_task_splits

        entry = get_task("toy", "sentiment")
        from_tsv = load_task_splits(entry, dataset_dir=self.glue_dir, roles=["validation"])["validation"]
        hub_dir = os.path.join(self.tmp, "toy_hub")
        os.makedirs(hub_dir)
        from_tsv.to_parquet(os.path.join(hub_dir, "validation-00000-of-00001.parquet"))
        results = fine_tune_t5.main([
            "--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", self.trained,
            "--dataset_dir", hub_dir, "--output_dir", os.path.join(self.tmp, "parquet"), "--no_train",
        ] + QUIET)
        self.assertEqual(results["eval_accuracy"], self.results["eval_accuracy"])


class GlueLayoutTest(parameterized.TestCase):
    """Real GLUE tasks from tiny original-TSV directories: splits, metric keys and leaderboard files."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.model = save_tiny_t5(os.path.join(cls.tmp, "tiny"))
        cls.glue = os.path.join(cls.tmp, "glue")
        words = ["the movie was great", "the plot was dull", "a lovely score", "the cast felt weak"]
        write_tsv(f"{cls.glue}/SST-2/train.tsv", ["sentence", "label"], [[w, i % 2] for i, w in enumerate(words * 4)])
        write_tsv(f"{cls.glue}/SST-2/dev.tsv", ["sentence", "label"], [[w, i % 2] for i, w in enumerate(words)])
        write_tsv(f"{cls.glue}/SST-2/test.tsv", ["index", "sentence"], [[i, w] for i, w in enumerate(words + words[:1])])
        mnli_header = ["index", "sentence1", "sentence2", "gold_label"]
        nli = [["the movie was great", "the plot was dull", "neutral"], ["a lovely score", "a lovely score", "entailment"],
               ["the cast felt weak", "the cast was great", "contradiction"]]
        write_tsv(f"{cls.glue}/MNLI/train.tsv", mnli_header, [[i] + r for i, r in enumerate(nli * 4)])
        write_tsv(f"{cls.glue}/MNLI/dev_matched.tsv", mnli_header, [[i] + r for i, r in enumerate(nli)])
        write_tsv(f"{cls.glue}/MNLI/dev_mismatched.tsv", mnli_header, [[i] + r for i, r in enumerate(nli[:2])])
        write_tsv(f"{cls.glue}/MNLI/test_matched.tsv", ["index", "sentence1", "sentence2"], [[i] + r[:2] for i, r in enumerate(nli)])
        write_tsv(f"{cls.glue}/MNLI/test_mismatched.tsv", ["index", "sentence1", "sentence2"], [[i] + r[:2] for i, r in enumerate(nli[:2])])
        sts = [["the movie was great", "the movie was fine", "3.84"], ["a lovely score", "the plot was dull", "0.7"]]
        write_tsv(f"{cls.glue}/STS-B/train.tsv", ["index", "sentence1", "sentence2", "score"], [[i] + r for i, r in enumerate(sts * 4)])
        write_tsv(f"{cls.glue}/STS-B/dev.tsv", ["index", "sentence1", "sentence2", "score"], [[i] + r for i, r in enumerate(sts)])
        write_tsv(f"{cls.glue}/STS-B/test.tsv", ["index", "sentence1", "sentence2"], [[i] + r[:2] for i, r in enumerate(sts)])

    def run_task(self, task: str, *extra: str) -> tuple[dict, str]:
        out = os.path.join(self.tmp, f"out-{task}-{len(extra)}")
        results = fine_tune_t5.main([
            "--dataset_name", task, "--model_name_or_path", self.model, "--dataset_dir", self.glue,
            "--output_dir", out, "--max_steps", "3", "--per_device_train_batch_size", "4", "--do_predict",
        ] + list(extra) + QUIET)
        return results, out

    def test_sst2_label_ids_in_submission(self) -> None:
        results, out = self.run_task("sst2")
        self.assertIn("sst2/accuracy", results)
        self.assertEqual(results["sst2/accuracy"], results["eval_accuracy"])
        rows = read_tsv(os.path.join(out, "SST-2.tsv"))
        self.assertEqual(rows[0], ["index", "prediction"])
        self.assertEqual([r[0] for r in rows[1:]], ["0", "1", "2", "3", "4"])
        self.assertTrue({r[1] for r in rows[1:]} <= {"0", "1"})

    def test_mnli_two_validation_splits_and_two_submission_files(self) -> None:
        results, out = self.run_task("mnli")
        for split in ("validation_matched", "validation_mismatched"):
            self.assertIn(f"eval_{split}_accuracy", results)
        self.assertIn("mnli_matched/accuracy", results)
        self.assertIn("mnli_mismatched/accuracy", results)
        for name, count in (("MNLI-m.tsv", 3), ("MNLI-mm.tsv", 2)):
            rows = read_tsv(os.path.join(out, name))
            self.assertLen(rows, count + 1)
            self.assertTrue({r[1] for r in rows[1:]} <= {"entailment", "neutral", "contradiction"}, name)

    def test_stsb_generates_floats_clipped_to_range(self) -> None:
        results, out = self.run_task("stsb")
        self.assertIn("stsb/pearson_corrcoef", results)
        rows = read_tsv(os.path.join(out, "STS-B.tsv"))
        self.assertLen(rows, 3)
        for _, value in rows[1:]:
            self.assertBetween(float(value), 0.0, 5.0)

    def test_predicts_a_test_file_without_labels(self) -> None:
        test_file = os.path.join(self.tmp, "unlabeled.jsonl")
        with open(test_file, "w") as f:
            for i, sentence in enumerate(["a lovely score", "the plot was dull", "the cast felt weak"]):
                f.write(json.dumps({"idx": 10 + i, "sentence": sentence}) + "\n")
        out = os.path.join(self.tmp, "unlabeled-out")
        fine_tune_t5.main(["--dataset_name", "sst2", "--model_name_or_path", self.model, "--test_file", test_file,
                           "--output_dir", out, "--no_train", "--do_predict"] + QUIET)
        rows = read_tsv(os.path.join(out, "SST-2.tsv"))
        self.assertEqual([r[0] for r in rows], ["index", "10", "11", "12"])

    def test_unreadable_files_are_one_line_errors(self) -> None:
        latin1 = os.path.join(self.tmp, "latin1.tsv")
        with open(latin1, "wb") as f:
            f.write("sentence\tlabel\ncaf\u00e9\t0\n".encode("latin-1"))
        parquet = os.path.join(self.tmp, "bad.parquet")
        with open(parquet, "w") as f:
            f.write("not parquet")
        for path, pattern in ((latin1, r"latin1\.tsv: not UTF-8 text \(byte 0xe9 at offset 18, line 2\)"), (parquet, r"bad\.parquet: not a readable parquet file")):
            with self.assertRaisesRegex(UserError, pattern):
                fine_tune_t5.main(["--dataset_name", "sst2", "--model_name_or_path", self.model, "--train_file", path,
                                   "--validation_file", path, "--output_dir", os.path.join(self.tmp, "unreadable")] + QUIET)

    def test_task_metric_drives_the_best_checkpoint(self) -> None:
        from arguments import parse_args

        args = parse_args(fine_tune_t5.ARGUMENTS,
                          ["--dataset_name", "mnli", "--model_name_or_path", "m", "--output_dir", "o",
                           "--eval_strategy", "epoch", "--save_strategy", "epoch"])
        training_args = args[2]
        self.assertTrue(training_args.load_best_model_at_end)
        self.assertEqual((training_args.optim, training_args.learning_rate, training_args.lr_scheduler_type),
                         ("adafactor", 1e-3, "constant_with_warmup"))
        self.assertIsNone(training_args.metric_for_best_model)  # main sets the task's
        self.assertEqual(fine_tune_t5.best_model_metric(DATASET_VALS["glue"]["mnli"], ["validation_matched", "validation_mismatched"]),
                         "validation_matched_accuracy")
        no_eval = parse_args(fine_tune_t5.ARGUMENTS,
                             ["--dataset_name", "sst2", "--model_name_or_path", "m", "--output_dir", "o"])[2]
        self.assertFalse(no_eval.load_best_model_at_end)
        parsed = lambda *flags: parse_args(  # noqa: E731
            fine_tune_t5.ARGUMENTS,
            ["--dataset_name", "sst2", "--model_name_or_path", "m", "--output_dir", "o", *flags])[2]
        # Evaluating every logging_steps (30) while saving every 500: not best-checkpoint material, no error.
        self.assertFalse(parsed("--eval_strategy", "steps", "--save_strategy", "steps", "--logging_steps", "30").load_best_model_at_end)
        explicit = parsed("--eval_strategy", "epoch", "--save_strategy", "epoch", "--metric_for_best_model", "loss")
        self.assertEqual((explicit.metric_for_best_model, explicit.greater_is_better), ("loss", False))

    @parameterized.named_parameters(
        ("unknown_task", ["--dataset_name", "sst3"], r"unknown task 'sst3' of benchmark 'glue'; valid: cola, sst2"),
        ("unknown_benchmark", ["--dataset_name", "sst2", "--benchmark", "glu"], r"unknown benchmark 'glu'; valid: glue, ax"),
        ("missing_split", ["--dataset_name", "cola"], r"has no 'train' split; looked for: .*CoLA/train\.tsv"),
        ("score_regression", ["--dataset_name", "stsb", "--eval_mode", "score"], r"--eval_mode score: task glue/stsb is a regression task"),
        ("bad_mode", ["--dataset_name", "sst2", "--eval_mode", "beam"], r"--eval_mode beam: must be one of auto, score, generate"),
        ("fp16", ["--dataset_name", "sst2", "--fp16"], r"--fp16: T5's activations overflow float16"),
    )
    def test_bad_input(self, argv: list[str], pattern: str) -> None:
        out = os.path.join(self.tmp, "bad")
        with self.assertRaisesRegex(UserError, pattern):
            fine_tune_t5.main(argv + ["--model_name_or_path", self.model, "--dataset_dir", self.glue, "--output_dir", out] + QUIET)
        self.assertFalse(os.path.exists(out))

    def test_label_outside_the_registry_is_one_line_on_stderr(self) -> None:
        bad = os.path.join(self.tmp, "bad_glue")
        write_tsv(f"{bad}/SST-2/train.tsv", ["sentence", "label"], [["fine", 0], ["meh", 7]])
        write_tsv(f"{bad}/SST-2/dev.tsv", ["sentence", "label"], [["fine", 0]])
        out = os.path.join(self.tmp, "bad-cli")
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "fine_tune_t5.py"), "--dataset_name", "sst2", "--model_name_or_path",
             self.model, "--dataset_dir", bad, "--output_dir", out],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
        )
        self.assertEqual(proc.returncode, 2)
        self.assertEqual(
            proc.stderr.strip().splitlines(),
            [f"error: {bad}/SST-2/train.tsv, line 3: column 'label': label '7' is not one of negative, positive (or ids 0-1)"],
        )
        self.assertFalse(os.path.exists(out))

    def test_eval_mode_follows_the_entry_eval_kind(self) -> None:
        from constants import normalize_entry

        base = {"prefix": "p", "text_columns": ["sentence"], "labels": ["no", "yes"], "metric_names": ["accuracy"]}
        resolve = fine_tune_t5.resolve_eval_mode
        self.assertEqual(resolve(DATASET_VALS["glue"]["rte"], "auto"), "score")
        self.assertEqual(resolve(DATASET_VALS["glue"]["stsb"], "auto"), "generate")
        self.assertEqual(resolve(normalize_entry("custom", "gen", {**base, "eval_kind": "generation"}), "auto"), "generate")
        self.assertEqual(resolve(DATASET_VALS["super_glue"]["cb"], "generate"), "generate")  # T5's published numbers


class OriginalStyleEntryTest(absltest.TestCase):
    """A task added as the original toolkit's README showed (`text_column_name`, labels id -> word),
    with local TSV / JSON files, fine-tuned and evaluated end to end."""

    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.model = save_tiny_t5(os.path.join(self.tmp, "tiny"))
        from tests.test_constants import ORIGINAL_STYLE

        DATASET_VALS["custom"] = {"reviews": dict(ORIGINAL_STYLE)}  # as written into DATASET_VALS; normalised on first use
        self.addCleanup(DATASET_VALS.pop, "custom", None)

    def test_fine_tunes_and_predicts(self) -> None:
        words = ["the movie was great", "the plot was dull", "a lovely score", "the cast felt weak"]
        train = os.path.join(self.tmp, "train.tsv")
        write_tsv(train, ["sentence", "label"], [[w, i % 2] for i, w in enumerate(words * 4)])
        validation = os.path.join(self.tmp, "dev.json")  # one JSON list, label words and ids mixed
        with open(validation, "w") as f:
            json.dump([{"sentence": w, "label": ["negative", 1][i % 2]} for i, w in enumerate(words)], f)
        test = os.path.join(self.tmp, "test.jsonl")
        with open(test, "w") as f:
            f.writelines(json.dumps({"idx": 20 + i, "sentence": w}) + "\n" for i, w in enumerate(words[:3]))
        out = os.path.join(self.tmp, "out")
        results = fine_tune_t5.main([
            "--benchmark", "custom", "--dataset_name", "reviews", "--model_name_or_path", self.model,
            "--train_file", train, "--validation_file", validation, "--test_file", test, "--output_dir", out,
            "--max_steps", "3", "--per_device_train_batch_size", "4", "--do_predict",
        ] + QUIET)

        self.assertEqual(DATASET_VALS["custom"]["reviews"]["text_columns"], ["sentence"])
        self.assertEqual(results["eval_mode"], "score")
        self.assertBetween(results["eval_accuracy"], 0.0, 100.0)
        self.assertIn(results["eval_accuracy"], (0.0, 25.0, 50.0, 75.0, 100.0))  # 4 validation records
        self.assertEqual(results["custom_reviews/accuracy"], results["eval_accuracy"])
        with open(os.path.join(out, "all_results.json")) as f:
            saved = json.load(f)
        self.assertEqual((saved["eval_mode"], saved["custom_reviews/accuracy"]), ("score", results["eval_accuracy"]))
        self.assertEqual(saved["predict_test_examples"], 3)
        with open(os.path.join(out, "predictions_test.jsonl")) as f:
            predictions = [json.loads(line) for line in f]
        self.assertEqual([p["idx"] for p in predictions], [20, 21, 22])
        self.assertTrue({p["prediction"] for p in predictions} <= {"negative", "positive"})
        self.assertFalse([name for name in os.listdir(out) if name.endswith((".tsv", "-1.jsonl"))])  # no leaderboard file


class LabelScoringTest(absltest.TestCase):
    def test_scores_equal_summed_log_probabilities_of_each_label(self) -> None:
        from scoring import label_token_ids, score_labels
        from tests.fixtures import tiny_t5_config
        from modeling import new_t5

        tokenizer = task_tokenizer()
        torch.manual_seed(0)
        model = new_t5(tiny_t5_config(len(tokenizer))).eval()
        labels = ["entailment", "neutral", "contradiction"]
        candidates = label_token_ids(tokenizer, labels)
        self.assertEqual(candidates[0].tolist()[: len(tokenizer("entailment").input_ids)], tokenizer("entailment").input_ids)
        batch = tokenizer(["a lovely score", "the plot was dull and the acting weak"], padding=True, return_tensors="pt")
        scores = score_labels(model, batch.input_ids, batch.attention_mask, candidates)
        normalized = score_labels(model, batch.input_ids, batch.attention_mask, candidates, length_normalize=True)
        self.assertEqual(tuple(scores.shape), (2, 3))
        for i in range(2):
            for j, label in enumerate(labels):
                target = torch.tensor([tokenizer(label).input_ids])
                with torch.no_grad():
                    mean_nll = model(input_ids=batch.input_ids[i : i + 1], attention_mask=batch.attention_mask[i : i + 1], labels=target).loss
                n = target.shape[1]
                self.assertAlmostEqual(scores[i, j].item(), -mean_nll.item() * n, places=4)
                self.assertAlmostEqual(normalized[i, j].item(), -mean_nll.item(), places=4)


class PaddingCounterTest(absltest.TestCase):
    def test_counts_padded_positions_exactly(self) -> None:
        from data_collators import PaddingCounter

        def pad(features: list[dict]) -> dict[str, torch.Tensor]:
            width = max(len(f["input_ids"]) for f in features)
            lwidth = max(len(f["labels"]) for f in features)
            return {
                "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]),
                "labels": torch.tensor([f["labels"] + [-100] * (lwidth - len(f["labels"])) for f in features]),
            }

        counter = PaddingCounter(pad, pad_token_id=0)
        counter([{"input_ids": [5, 6, 1], "labels": [7, 1]}, {"input_ids": [5, 1], "labels": [1]}])  # 8 real of 10
        counter([{"input_ids": [5, 1], "labels": [7, 1]}])  # 4 real of 4
        self.assertAlmostEqual(counter.padded_fraction, 2 / 14)


if __name__ == "__main__":
    absltest.main()
