"""seq2seq.py: prompt/completion fine-tuning in the mount/ layout, sampled evaluation, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest, parameterized

from tests.fixtures import save_tiny_t5

import seq2seq  # noqa: E402  (after fixtures: they set HF_HUB_OFFLINE)
from errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = ["--disable_tqdm", "True", "--report_to", "none", "--max_target_length", "12", "--save_strategy", "no"]

TRAIN = [
    {"prompt": "the movie was great", "completion": "positive", "id": f"t{i}", "source": "toy"} for i in range(4)
] + [{"prompt": "the plot was dull", "completion": "negative", "id": f"u{i}", "source": "toy"} for i in range(4)]
EVAL = [
    {"prompt": "the movie was great", "completion": "positive", "id": "e0", "meta": {"judge": 3}},
    {"prompt": "the plot was dull", "completion": "negative", "id": "e1", "meta": {"judge": 1}},
    {"prompt": "a lovely score", "completion": "positive", "id": "e2", "meta": None},
]


def make_mount() -> str:
    mount = tempfile.mkdtemp()
    save_tiny_t5(os.path.join(mount, "models", "tiny"))
    os.makedirs(os.path.join(mount, "data"))
    with open(os.path.join(mount, "data", "small.json"), "w") as f:
        json.dump({"train": TRAIN, "eval": EVAL}, f)
    return mount


class Seq2SeqRunTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.mount = make_mount()
        cls.results = seq2seq.main([
            "--mount_dir", cls.mount, "--model_init_name", "tiny", "--data_name", "small", "--training_run_name", "run",
            "--max_steps", "12", "--eval_steps", "6", "--train_batch_size", "4", "--eval_batch_size", "2",
            "--temperature", "0.9", "--n_samples", "3", "--logging_steps", "3", "--learning_rate", "3e-3",
        ] + QUIET)
        cls.run_dir = os.path.join(cls.mount, "models", "run")

    def test_eval_files_hold_the_records_and_their_samples(self) -> None:
        for step in (6, 12):  # every --eval_steps, and the end (step 12) only once
            with open(os.path.join(self.run_dir, f"eval_{step}.json")) as f:
                rows = json.load(f)
            self.assertEqual([{k: v for k, v in r.items() if k != "samples"} for r in rows], EVAL)
            for row in rows:
                self.assertLen(row["samples"], 3)
                self.assertTrue(all(isinstance(s, str) for s in row["samples"]))
        self.assertFalse(os.path.exists(os.path.join(self.run_dir, "eval_12-1.json")))

    def test_metrics_logged_under_sweepable_keys(self) -> None:
        for key in ("eval_loss", "eval_exact_match", "eval_exact_match_normalized", "eval_exact_match_any", "eval_token_f1",
                    "eval_rougeL", "eval_bleu", "eval_gen_len"):
            self.assertIn(key, self.results)
        self.assertBetween(self.results["eval_exact_match"], 0.0, 100.0)
        self.assertGreaterEqual(self.results["eval_exact_match_any"], self.results["eval_exact_match"])
        self.assertGreaterEqual(self.results["eval_exact_match_normalized"], self.results["eval_exact_match"])
        with open(os.path.join(self.run_dir, "all_results.json")) as f:
            self.assertEqual(json.load(f)["eval_exact_match"], self.results["eval_exact_match"])
        losses = [e["loss"] for e in json.load(open(os.path.join(self.run_dir, "trainer_state.json")))["log_history"] if "loss" in e]
        self.assertLess(losses[-1], losses[0])

    def test_no_train_evaluates_greedily_and_deterministically_and_predicts(self) -> None:
        predict = os.path.join(self.mount, "to_predict.jsonl")
        with open(predict, "w") as f:
            f.write(json.dumps({"prompt": "the movie was great", "note": "x"}) + "\n" + json.dumps({"prompt": "dull"}) + "\n")
        argv = ["--mount_dir", self.mount, "--model_init_name", "run", "--data_name", "small", "--training_run_name", "run",
                "--no_train", "--temperature", "0", "--n_samples", "2", "--predict_file", predict] + QUIET
        first = seq2seq.main(argv)
        second = seq2seq.main(argv)
        self.assertEqual(first["eval_exact_match"], second["eval_exact_match"])
        with open(os.path.join(self.run_dir, "eval_0.json")) as f:
            a = json.load(f)
        with open(os.path.join(self.run_dir, "eval_0-1.json")) as f:  # the second run adds a file, replaces none
            b = json.load(f)
        self.assertEqual([r["samples"] for r in a], [r["samples"] for r in b])
        self.assertTrue(all(r["samples"][0] == r["samples"][1] for r in a))  # greedy: n identical samples
        with open(os.path.join(self.run_dir, "predict_to_predict_0.json")) as f:
            predicted = json.load(f)
        self.assertEqual([p["prompt"] for p in predicted], ["the movie was great", "dull"])
        self.assertEqual(predicted[0]["note"], "x")
        self.assertLen(predicted[1]["samples"], 2)
        self.assertTrue(os.path.isfile(os.path.join(self.run_dir, "eval_results.json")))
        with open(os.path.join(self.run_dir, "all_results.json")) as f:  # the training run's results are untouched
            self.assertIn("train_runtime", json.load(f))

    def test_sampling_shows_a_progress_bar_per_generated_batch(self) -> None:
        import contextlib
        import io

        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            seq2seq.main(["--mount_dir", self.mount, "--model_init_name", "tiny", "--data_name", "small", "--training_run_name",
                          "progress", "--no_train", "--temperature", "0", "--n_samples", "2", "--eval_batch_size", "1",
                          "--report_to", "none", "--max_target_length", "4", "--disable_tqdm", "False"])
        # One step per generated batch (3 prompts, batch size 1): the bar moves while sampling runs.
        self.assertRegex(stderr.getvalue(), r"sampling 3 prompts x 2: 100%\|.*\| 3/3 \[")

    def test_jsonl_files_and_batch_size_aliases(self) -> None:
        train, evals = os.path.join(self.mount, "train.jsonl"), os.path.join(self.mount, "eval.jsonl")
        for path, rows in ((train, TRAIN), (evals, EVAL)):
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        data_args, training_args = seq2seq.parse_args(
            seq2seq.ARGUMENTS,
            ["--model_init_path", "x", "--train_batch_size", "5", "--eval_batch_size", "7", "--eval_steps", "10"],
        )
        self.assertEqual((training_args.per_device_train_batch_size, training_args.per_device_eval_batch_size), (5, 7))
        self.assertEqual(training_args.eval_strategy, "steps")
        results = seq2seq.main(["--mount_dir", self.mount, "--model_init_name", "tiny", "--train_file", train,
                                "--eval_file", evals, "--training_run_name", "jsonl", "--max_steps", "2"] + QUIET)
        self.assertIn("eval_rougeL", results)
        with open(os.path.join(self.mount, "models", "jsonl", "eval_2.json")) as f:
            self.assertEqual([r["id"] for r in json.load(f)], ["e0", "e1", "e2"])


class Seq2SeqBadInputTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.mount = make_mount()
        data = os.path.join(cls.mount, "data")
        files = {
            "broken": '{"train": [{"prompt": "a", "completion": "b"}],\n "eval": [,]}',
            "no_eval": json.dumps({"train": TRAIN}),
            "no_prompt": json.dumps({"train": TRAIN[:1] + [{"completion": "x"}], "eval": EVAL}),
            "number": json.dumps({"train": TRAIN, "eval": [{"prompt": "a", "completion": 3}]}),
            "empty": json.dumps({"train": [], "eval": EVAL}),
            "list": json.dumps([1, 2]),
            "empty_completions": json.dumps({"train": [{**r, "completion": ""} for r in TRAIN[:3]], "eval": EVAL}),
            "blank_eval_completions": json.dumps({"train": TRAIN, "eval": [{**r, "completion": " "} for r in EVAL]}),
        }
        for name, text in files.items():
            with open(os.path.join(data, f"{name}.json"), "w") as f:
                f.write(text)

    @parameterized.named_parameters(
        ("missing_file", ["--data_name", "nope"], r"data/nope\.json: no such file"),
        ("invalid_json", ["--data_name", "broken"], r"broken\.json: invalid JSON at line 2 column 11"),
        ("no_eval_key", ["--data_name", "no_eval"], r"no_eval\.json: no 'eval' key; the file has 'train'"),
        ("no_prompt", ["--data_name", "no_prompt"], r"no_prompt\.json: train record 2: no 'prompt' field"),
        ("not_a_string", ["--data_name", "number"], r"number\.json: eval record 1: field 'completion' must be a string, got int 3"),
        ("empty_split", ["--data_name", "empty"], r"empty\.json: the train split is empty"),
        ("all_completions_empty", ["--data_name", "empty_completions"],
         r"^\S+/empty_completions\.json: all 3 train records have an empty 'completion' \(nothing to learn or score\)$"),
        ("all_eval_completions_blank", ["--data_name", "blank_eval_completions"],
         r"^\S+/blank_eval_completions\.json: all 3 eval records have an empty 'completion'"),
        ("not_splits", ["--data_name", "list"], r"list\.json: must be a JSON object with splits train, eval, got list"),
        ("both_models", ["--data_name", "small", "--model_init_path", "t5-small"], r"give exactly one of --model_init_name"),
        ("no_model_folder", ["--data_name", "small", "--model_init_name", "missing"], r"--model_init_name missing: no model folder"),
        ("output_dir", ["--data_name", "small", "--output_dir", "x"], r"--output_dir: results go to <mount_dir>/models"),
        ("bad_samples", ["--data_name", "small", "--n_samples", "0"], r"--n_samples 0: must be at least 1"),
    )
    def test_one_line_error_and_nothing_written(self, argv: list[str], pattern: str) -> None:
        if "--model_init_name" not in argv:
            argv = argv + ["--model_init_name", "tiny"]
        with self.assertRaisesRegex(UserError, pattern):
            seq2seq.main(["--mount_dir", self.mount, "--training_run_name", "bad", "--max_steps", "1"] + argv + QUIET)
        self.assertFalse(os.path.exists(os.path.join(self.mount, "models", "bad")))

    def test_neither_model_flag(self) -> None:
        with self.assertRaisesRegex(UserError, "give exactly one of --model_init_name"):
            seq2seq.main(["--mount_dir", self.mount, "--data_name", "small"])

    def test_invalid_json_as_a_user_sees_it(self) -> None:
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "seq2seq.py"), "--mount_dir", self.mount, "--model_init_name", "tiny",
             "--data_name", "broken", "--training_run_name", "cli"],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
        )
        self.assertEqual(proc.returncode, 2)
        self.assertEqual(proc.stderr.strip().splitlines(),
                         [f"error: {self.mount}/data/broken.json: invalid JSON at line 2 column 11: Expecting value"])
        self.assertFalse(os.path.exists(os.path.join(self.mount, "models", "cli")))


class RecordFilesTest(absltest.TestCase):
    def test_some_empty_completions_are_counted_in_a_warning(self) -> None:
        from tests.fixtures import task_tokenizer

        rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": ""}, {"prompt": "d", "completion": " "}]
        data_args = seq2seq.Seq2SeqDataArguments(model_init_path="x", data_name="mixed", mount_dir="m")
        with self.assertLogs("seq2seq", "WARNING") as logs:
            dataset = seq2seq.tokenize_records(rows, task_tokenizer(), data_args, "train")
        self.assertLen(dataset, 3)  # kept: only a split whose completions are all empty is refused
        self.assertIn("m/data/mixed.json: 2 of 3 train records have an empty 'completion'", "\n".join(logs.output))

    def test_utf8_bom_is_not_part_of_the_data(self) -> None:
        from records import load_run_records

        tmp = tempfile.mkdtemp()
        train, evals = os.path.join(tmp, "train.jsonl"), os.path.join(tmp, "eval.json")
        with open(train, "w", encoding="utf-8-sig") as f:  # as Windows editors save "UTF-8"
            f.writelines(json.dumps(r) + "\n" for r in TRAIN)
        with open(evals, "w", encoding="utf-8-sig") as f:
            json.dump(EVAL, f)
        records = load_run_records("m", None, train, evals, None, True, seq2seq.PROMPT_COMPLETION, {})
        self.assertEqual(records, {"train": TRAIN, "eval": EVAL})


class GenerationMetricsTest(absltest.TestCase):
    def test_hand_computed_values(self) -> None:
        from metrics import generation_metrics

        metrics = generation_metrics([["The cat sat.", "x"], ["a dog", "dog barks"]], ["the cat sat", "dog barks"])
        self.assertEqual(metrics["exact_match"], 0.0)  # strict: "The cat sat." != "the cat sat"
        self.assertEqual(metrics["exact_match_normalized"], 50.0)  # "cat sat" == "cat sat"; "dog" != "dog barks"
        self.assertEqual(metrics["exact_match_any"], 50.0)  # strict: "dog barks" is the second sample of record 2
        self.assertAlmostEqual(metrics["token_f1"], 100 * (1 + 2 / 3) / 2)  # P=1, R=1/2 -> F1=2/3
        self.assertAlmostEqual(metrics["rougeL"], 75.0)  # LCS "dog": P=R=1/2 -> 0.5; first pair 1.0
        self.assertEqual(metrics["gen_len"], 2.0)  # words, without a tokenizer: 3 + 1 + 2 + 2 over 4


if __name__ == "__main__":
    absltest.main()
