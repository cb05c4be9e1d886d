"""clf.py: the yes/no soft-label loss by hand, exact gradient accumulation, soft-label metrics, a tiny T5
learning a generated task end to end, prediction with a trained model, and every bad input."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
import torch
from absl.testing import absltest, parameterized

from tests.fixtures import tiny_t5_config

import clf  # noqa: E402  (after fixtures: they set HF_HUB_OFFLINE)
import examples  # noqa: E402
import trainer_arguments  # noqa: E402
from data_collators import YesNoCollator  # noqa: E402
from scoring import YesNoHead  # noqa: E402
from errors import UserError
from arguments import parse_args
from metrics import calibration_bins, compute_soft_label_metrics, expected_calibration_error, soft_label_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = ["--disable_tqdm", "True", "--report_to", "none", "--save_strategy", "no"]
TEMPLATE_FLAG = "Is it about sport?\\n{input}"  # as typed on a command line: \n stands for a newline
TASK_SIZES = {"train": 400, "eval": 100}


@functools.lru_cache(maxsize=None)
def yes_no_tokenizer() -> Any:
    """A SentencePiece T5 tokenizer trained on the generated sentences and the question, where yes and no are whole."""
    from modeling import train_tokenizer

    sentences = [r["input"] for split in examples.clf_example_data(seed=1, sizes=TASK_SIZES).values() for r in split]
    tokenizer = train_tokenizer(sentences + ["Is it about sport? yes no"] * 100, vocab_size=200)
    tokenizer.model_max_length = 512
    return tokenizer


def tiny_t5(seed: int = 0, d_model: int = 32) -> Any:
    from modeling import new_t5

    torch.manual_seed(seed)
    return new_t5(tiny_t5_config(len(yes_no_tokenizer()), d_model=d_model, d_ff=2 * d_model, d_kv=d_model // 4))


def make_mount(root: str) -> str:
    """`root/mount` with a tiny T5 in models/tiny and the generated task in data/sport.json."""
    from modeling import save_tokenizer

    mount = os.path.join(root, "mount")
    tiny_t5().save_pretrained(os.path.join(mount, "models", "tiny"))
    save_tokenizer(yes_no_tokenizer(), os.path.join(mount, "models", "tiny"))
    write_json(os.path.join(mount, "data", "sport.json"), examples.clf_example_data(seed=1, sizes=TASK_SIZES))
    return mount


def write_json(path: str, data: Any) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


class YesNoHeadTest(absltest.TestCase):
    """The score, the loss and the batch, on hand-made logits and ids."""

    YES, NO = 1, 2

    def logits(self) -> torch.Tensor:
        logits = torch.zeros(2, 1, 4)  # (batch, one decoder step, vocabulary)
        logits[0, 0, self.YES], logits[0, 0, 3] = math.log(3.0), 5.0  # P(yes) = 3 / (3 + 1) = 0.75; token 3 is ignored
        logits[1, 0, self.YES] = logits[1, 0, self.NO] = 0.5  # P(yes) = 0.5
        return logits

    def test_loss_equals_hand_computed_binary_cross_entropy(self) -> None:
        head = YesNoHead(self.YES, self.NO)
        labels = torch.tensor([[0.8], [0.25]])
        first = -(0.8 * math.log(0.75) + 0.2 * math.log(0.25))  # 0.507405
        second = -(0.25 * math.log(0.5) + 0.75 * math.log(0.5))  # ln 2
        self.assertAlmostEqual(head.loss({"logits": self.logits()}, labels).item(), (first + second) / 2, places=6)
        # Divided by the examples of the whole accumulated step, not this micro-batch.
        self.assertAlmostEqual(head.loss({"logits": self.logits()}, labels, num_items_in_batch=torch.tensor(4)).item(),
                               (first + second) / 4, places=6)

    def test_loss_is_cross_entropy_of_the_two_way_softmax(self) -> None:
        head = YesNoHead(self.YES, self.NO)
        labels = torch.tensor([[0.8], [0.25]])
        log_p = torch.log_softmax(self.logits()[:, 0, [self.YES, self.NO]], dim=-1)
        soft = torch.cat([labels, 1 - labels], dim=1)
        expected = -(soft * log_p).sum(-1).mean()
        self.assertAlmostEqual(head.loss((self.logits(),), labels).item(), expected.item(), places=6)

    def test_scores(self) -> None:
        head = YesNoHead(self.YES, self.NO)
        torch.testing.assert_close(head.scores((self.logits(), torch.zeros(2, 3, 8))), torch.tensor([0.75, 0.5]))
        extreme = torch.zeros(2, 1, 4)
        extreme[0, 0, self.YES], extreme[1, 0, self.NO] = 1e4, 1e4
        torch.testing.assert_close(head.scores(extreme), torch.tensor([1.0, 0.0]))  # finite, in [0, 1]

    def test_collator(self) -> None:
        batch = YesNoCollator(pad_token_id=0, decoder_start_token_id=0)(
            [{"input_ids": [5, 6, 1], "labels": 0.8}, {"input_ids": [7, 1], "labels": 0.1}])
        torch.testing.assert_close(batch["input_ids"], torch.tensor([[5, 6, 1], [7, 1, 0]]))
        torch.testing.assert_close(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 1, 0]]))
        torch.testing.assert_close(batch["decoder_input_ids"], torch.tensor([[0], [0]]))  # one decoder step
        torch.testing.assert_close(batch["labels"], torch.tensor([[0.8], [0.1]]))
        self.assertNotIn("labels", YesNoCollator(0, 0)([{"input_ids": [5, 1]}]))


class GradientAccumulationTest(absltest.TestCase):
    """Batch 2 with 4 accumulation steps must give the logged loss and the gradient of one batch of 8."""

    def run_one_step(self, batch_size: int, accumulation: int) -> tuple[dict, dict[str, torch.Tensor], float]:
        from transformers import TrainerCallback

        tokenizer = yes_no_tokenizer()
        yes, no = (clf.single_token_id(tokenizer, w, w) for w in ("yes", "no"))
        head = YesNoHead(yes, no)
        rng = np.random.default_rng(0)
        features = [{"input_ids": rng.integers(3, len(tokenizer) - 100, size=4 + i).tolist() + [1], "labels": float(t)}
                    for i, t in enumerate([0.0, 0.1, 0.35, 0.5, 0.6, 0.8, 0.95, 1.0])]  # lengths differ: padding must not matter
        model = tiny_t5(seed=0)
        with torch.no_grad():  # the mean loss of the 8 examples before the step
            batch = YesNoCollator(0, 0)(features)
            labels = batch.pop("labels")
            expected_loss = head.loss(model(**batch), labels).item()

        grads: dict[str, torch.Tensor] = {}

        class Capture(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
                grads.update({name: p.grad.detach().clone() for name, p in model.named_parameters()})

        with tempfile.TemporaryDirectory() as out:
            args = trainer_arguments.MountRunArguments(
                per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, max_steps=1,
                logging_steps=1, report_to="none", save_strategy="no", max_grad_norm=0.0, disable_tqdm=True, seed=0,
            )
            args.output_dir = out
            trainer = clf.build_trainer(model, tokenizer, args, head, features, None)
            trainer.add_callback(Capture())
            trainer.train()
        logged = next(e for e in trainer.state.log_history if "loss" in e)
        return logged, grads, expected_loss

    def test_two_by_four_equals_one_by_eight(self) -> None:
        big_log, big, expected_loss = self.run_one_step(8, 1)
        small_log, small, _ = self.run_one_step(2, 4)
        self.assertAlmostEqual(big_log["loss"], expected_loss, places=5)
        self.assertAlmostEqual(small_log["loss"], big_log["loss"], places=5)
        self.assertAlmostEqual(small_log["grad_norm"], big_log["grad_norm"], places=5)
        self.assertIn("lm_head.weight", big)
        self.assertGreater(big_log["grad_norm"], 0.0)
        for name in big:
            torch.testing.assert_close(small[name], big[name], rtol=1e-4, atol=1e-6, msg=name)


class SoftLabelMetricsTest(absltest.TestCase):
    def test_hand_computed_values(self) -> None:
        scores, targets = [0.9, 0.2, 0.6, 0.4], [1.0, 0.0, 0.7, 0.1]
        got = soft_label_metrics(scores, targets)
        self.assertAlmostEqual(got["mse"], (0.01 + 0.04 + 0.01 + 0.09) / 4)
        self.assertAlmostEqual(got["mae"], (0.1 + 0.2 + 0.1 + 0.3) / 4)
        # Deviations from the means (0.525, 0.45): scores (.375, -.325, .075, -.125), targets (.55, -.45, .25, -.35).
        self.assertAlmostEqual(got["pearson"], 0.415 / math.sqrt(0.2675 * 0.69))
        self.assertAlmostEqual(got["spearman"], 1.0)  # same order
        self.assertAlmostEqual(got["auc"], 1.0)  # both positives (targets >= 0.5) score above both negatives
        self.assertAlmostEqual(got["accuracy"], 1.0)
        self.assertAlmostEqual(got["ece"], (0.1 + 0.2 + 0.1 + 0.3) / 4)  # one record per bin: the mean |score - target|

    def test_accuracy_and_auc_thresholds(self) -> None:
        got = soft_label_metrics([0.7, 0.4, 0.45, 0.5], [0.6, 0.9, 0.2, 0.3])
        self.assertAlmostEqual(got["accuracy"], 0.5)  # right: 0.7 vs 0.6, 0.45 vs 0.2
        self.assertAlmostEqual(got["auc"], 0.5)  # positives (0.7, 0.4) against negatives (0.45, 0.5): 2 of 4 pairs

    def test_expected_calibration_error_by_hand(self) -> None:
        scores = [0.12, 0.18, 0.85, 0.95, 0.55]
        targets = [0.0, 0.5, 1.0, 0.6, 0.55]
        # bin 1: |0.15 - 0.25| x 2/5; bin 5: 0; bin 8: |0.85 - 1.0| x 1/5; bin 9: |0.95 - 0.6| x 1/5
        self.assertAlmostEqual(expected_calibration_error(scores, targets), 0.1 * 2 / 5 + 0.15 / 5 + 0.35 / 5)
        self.assertAlmostEqual(expected_calibration_error([0.3, 0.35], [0.0, 0.65]), 0.0)  # soft: bin means agree

    def test_calibration_bins(self) -> None:
        counts, mean_scores, mean_targets = calibration_bins([0.0, 0.1, 0.15, 0.99, 1.0], [0, 1, 0, 1, 1])
        self.assertEqual(counts.tolist(), [1, 2, 0, 0, 0, 0, 0, 0, 0, 2])  # 1.0 falls in the last bin
        self.assertAlmostEqual(mean_scores[1], 0.125)
        self.assertAlmostEqual(mean_targets[1], 0.5)
        self.assertTrue(math.isnan(mean_scores[2]))

    def test_undefined_metrics_are_none(self) -> None:
        one_sided = soft_label_metrics([0.2, 0.9, 0.6], [0.5, 0.9, 0.7])
        self.assertIsNone(one_sided["auc"])
        self.assertAlmostEqual(one_sided["accuracy"], 2 / 3)
        self.assertIsNotNone(one_sided["pearson"])
        constant = soft_label_metrics([0.5, 0.5, 0.5], [0.1, 0.9, 0.7])
        self.assertIsNone(constant["pearson"])
        self.assertIsNone(constant["spearman"])
        self.assertAlmostEqual(constant["auc"], 0.5)

    def test_compute_metrics_reads_the_trainer_shapes(self) -> None:
        from transformers import EvalPrediction

        got = compute_soft_label_metrics(EvalPrediction(np.array([0.9, 0.2], np.float32), np.array([[1.0], [0.0]], np.float32)))
        self.assertAlmostEqual(got["mse"], 0.025, places=6)


class ClfEndToEndTest(absltest.TestCase):
    """A tiny T5 trained once on the generated task; its outputs; prediction with the trained model."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.mount = make_mount(cls.tmp)
        cls.run_dir = os.path.join(cls.mount, "models", "sport-run")
        cls.results = clf.main([
            "--mount_dir", cls.mount, "--model_pretrain_name", "tiny", "--data_name", "sport",
            "--training_run_name", "sport-run", "--template", TEMPLATE_FLAG, "--max_steps", "120",
            "--learning_rate", "3e-3", "--train_batch_size", "32", "--eval_batch_size", "64", "--logging_steps", "20",
        ] + QUIET)
        cls.eval_records = examples.clf_example_data(seed=1, sizes=TASK_SIZES)["eval"]

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_learns_the_soft_labels(self) -> None:
        self.assertGreaterEqual(self.results["eval_pearson"], 0.9)
        self.assertLess(self.results["eval_mse"], 0.03)
        losses = [e["loss"] for e in json.load(open(os.path.join(self.run_dir, "trainer_state.json")))["log_history"] if "loss" in e]
        self.assertLess(losses[-1], losses[0])

    def test_predictions_file(self) -> None:
        rows = read_jsonl(os.path.join(self.run_dir, "predictions_eval.jsonl"))
        self.assertEqual([{k: v for k, v in r.items() if k != "score"} for r in rows], self.eval_records)  # every field, in order
        scores = [r["score"] for r in rows]
        self.assertTrue(all(0.0 <= s <= 1.0 for s in scores))
        recomputed = soft_label_metrics(scores, [r["target"] for r in rows])
        for name, value in recomputed.items():
            self.assertAlmostEqual(self.results[f"eval_{name}"], value, places=5, msg=name)

    def test_run_folder(self) -> None:
        for name in ("all_results.json", "provenance.json", "loss_curve.png", "reliability_diagram.png", "model.safetensors",
                     "tokenizer.json", "predictions_eval.jsonl"):
            self.assertTrue(os.path.isfile(os.path.join(self.run_dir, name)), name)
        with open(os.path.join(self.run_dir, "reliability_diagram.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        with open(os.path.join(self.run_dir, "all_results.json"), encoding="utf-8") as f:
            saved = json.load(f)
        self.assertEqual(saved["eval_pearson"], self.results["eval_pearson"])
        with open(os.path.join(self.run_dir, "provenance.json"), encoding="utf-8") as f:
            self.assertEqual(json.load(f)["arguments"]["template"], "Is it about sport?\n{input}")

    def test_no_train_predict_file_scores_with_the_trained_model(self) -> None:
        new = [{"input": r["input"], "note": f"n{i}"} for i, r in enumerate(self.eval_records[:10])]  # no target
        path = os.path.join(self.tmp, "new.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in new)
        before = set(os.listdir(os.path.join(self.mount, "models")))
        results = clf.main(["--mount_dir", self.mount, "--model_pretrain_name", "sport-run", "--no_train", "--predict_file", path,
                            "--template", TEMPLATE_FLAG] + QUIET)
        (run,) = set(os.listdir(os.path.join(self.mount, "models"))) - before  # a new, default-named folder
        self.assertTrue(run.startswith("new-sport-run-"), run)
        rows = read_jsonl(os.path.join(self.mount, "models", run, results["predict_predictions_file"]))
        self.assertEqual([{k: v for k, v in r.items() if k != "score"} for r in rows], new)
        trained = read_jsonl(os.path.join(self.run_dir, "predictions_eval.jsonl"))[:10]
        for row, reference in zip(rows, trained):
            self.assertAlmostEqual(row["score"], reference["score"], places=5)
        self.assertFalse(os.path.exists(os.path.join(self.mount, "models", run, "all_results.json")))

    def test_no_train_beside_the_finished_run_never_overwrites(self) -> None:
        argv = ["--mount_dir", self.mount, "--model_pretrain_name", "sport-run", "--training_run_name", "sport-run",
                "--no_train", "--data_name", "sport", "--template", TEMPLATE_FLAG] + QUIET
        results = clf.main(argv)
        self.assertEqual(results["eval_predictions_file"], "predictions_eval-1.jsonl")
        self.assertAlmostEqual(results["eval_pearson"], self.results["eval_pearson"], places=5)
        self.assertTrue(os.path.isfile(os.path.join(self.run_dir, "eval_results.json")))

    def test_one_sided_eval_reports_auc_as_null(self) -> None:
        path = os.path.join(self.tmp, "all_yes.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"input": r["input"], "target": 0.9}) + "\n" for r in self.eval_records[:6])
        results = clf.main(["--mount_dir", self.mount, "--model_pretrain_name", "sport-run", "--training_run_name", "one-sided",
                            "--no_train", "--eval_file", path, "--template", TEMPLATE_FLAG] + QUIET)
        self.assertIsNone(results["eval_auc"])
        with open(os.path.join(self.mount, "models", "one-sided", "eval_results.json"), encoding="utf-8") as f:
            self.assertIsNone(json.load(f)["eval_auc"])  # JSON null, not an error


class ArgumentsTest(absltest.TestCase):
    def test_aliases_eval_steps_and_template(self) -> None:
        data_args, training_args = parse_args(clf.ARGUMENTS, [
            "--model_pretrain_name", "google/flan-t5-xl", "--data_name", "d", "--train_batch_size", "4",
            "--eval_batch_size", "16", "--eval_steps", "2000", "--template", "Q?\\n\\narticle: {input}\\noutput:"])
        self.assertEqual((training_args.per_device_train_batch_size, training_args.per_device_eval_batch_size), (4, 16))
        self.assertEqual(training_args.eval_strategy, "steps")
        self.assertEqual(data_args.template, "Q?\n\narticle: {input}\noutput:")
        self.assertEqual(clf.question("a {b}", data_args.template), "Q?\n\narticle: a {b}\noutput:")

    def test_model_name_resolves_under_mount_models_first(self) -> None:
        from records import model_folder_or_name

        with tempfile.TemporaryDirectory() as mount:
            os.makedirs(os.path.join(mount, "models", "flan-t5-xl"))
            self.assertEqual(model_folder_or_name(mount, "flan-t5-xl"), os.path.join(mount, "models", "flan-t5-xl"))
            self.assertEqual(model_folder_or_name(mount, "google/flan-t5-base"), "google/flan-t5-base")


class ExampleDataTest(absltest.TestCase):
    def test_shipped_example_is_the_generators_and_valid(self) -> None:
        from records import load_splits

        path = os.path.join(ROOT, "mount", "data", "clf_example.json")
        with open(path, encoding="utf-8") as f:
            self.assertEqual(json.load(f), examples.clf_example_data())
        splits = load_splits({}, path, clf.SOFT_LABELED, ("train", "eval"))
        self.assertEqual({k: len(v) for k, v in splits.items()}, examples.EXAMPLE_SIZES)
        inputs = [r["input"] for rows in splits.values() for r in rows]
        self.assertEqual(len(set(inputs)), len(inputs))  # eval measures generalisation


class BadInputTest(parameterized.TestCase):
    """One-line user errors, and nothing written."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.mount = make_mount(cls.tmp)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def data_with(self, bad: dict[str, Any] | None, name: str = "bad") -> str:
        records = [{"input": f"sentence {i}", "target": 0.5} for i in range(5)]
        if bad is not None:
            records[3] = bad
        write_json(os.path.join(self.mount, "data", f"{name}.json"), {"train": records, "eval": records[:2]})
        return name

    def run_main(self, *extra: str, data_name: str | None = None) -> str:
        argv = ["--mount_dir", self.mount, "--model_pretrain_name", "tiny", "--training_run_name", "never"] + QUIET
        argv += ["--data_name", data_name] if data_name else []
        with self.assertRaises(UserError) as caught:
            clf.main(argv + list(extra))
        self.assertFalse(os.path.exists(os.path.join(self.mount, "models", "never")))
        self.assertNotIn("\n", str(caught.exception))
        return str(caught.exception)

    @parameterized.named_parameters(
        ("missing", {"input": "x"}, "train record 4: no 'target' field"),
        ("string", {"input": "x", "target": "0.8"}, "train record 4: field 'target' must be a number in [0, 1], got str \"0.8\""),
        ("null", {"input": "x", "target": None}, "train record 4: field 'target' must be a number in [0, 1], got NoneType null"),
        ("nan", {"input": "x", "target": float("nan")}, "train record 4: field 'target' must be a number in [0, 1], got nan"),
        ("above_one", {"input": "x", "target": 1.5}, "train record 4: field 'target' must be a number in [0, 1], got 1.5"),
        ("negative", {"input": "x", "target": -0.2}, "train record 4: field 'target' must be a number in [0, 1], got -0.2"),
        ("input_not_text", {"input": 7, "target": 0.5}, "train record 4: field 'input' must be a string"),
    )
    def test_bad_target(self, record: dict[str, Any], message: str) -> None:
        self.assertIn(message, self.run_main(data_name=self.data_with(record)))

    def test_bad_target_in_a_jsonl_eval_file(self) -> None:
        path = os.path.join(self.tmp, "eval.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write('{"input": "a", "target": 0.2}\n{"input": "b", "target": NaN}\n')
        message = self.run_main("--eval_file", path, data_name=self.data_with(None))
        self.assertEqual(message, f"{path}: eval record 2: field 'target' must be a number in [0, 1], got nan")

    def test_empty_split(self) -> None:
        write_json(os.path.join(self.mount, "data", "empty.json"), {"train": [], "eval": [{"input": "a", "target": 0.1}]})
        self.assertIn("the train split is empty", self.run_main(data_name="empty"))

    def test_empty_predict_file(self) -> None:
        path = os.path.join(self.tmp, "empty.jsonl")
        open(path, "w").close()
        self.assertIn("the predict split is empty", self.run_main("--no_train", "--predict_file", path))

    @parameterized.named_parameters(
        ("yes_several_tokens", ["--yes_token", "maybe"], "--yes_token 'maybe': must be a single known token"),
        ("no_several_tokens", ["--no_token", "no way"], "--no_token 'no way': must be a single known token"),
        ("same_tokens", ["--no_token", "yes"], "--yes_token and --no_token are both 'yes'"),
        ("template_without_input", ["--template", "Is it sport?"], "must contain {input}"),
        ("output_dir", ["--output_dir", "somewhere"], "--output_dir: results go to <mount_dir>/models/<training_run_name>"),
        ("nothing_to_do", ["--no_train"], "--no_train needs eval records"),
    )
    def test_bad_flags(self, extra: list[str], message: str) -> None:
        data = None if "--no_train" in extra else self.data_with(None, name="good")
        self.assertIn(message, self.run_main(*extra, data_name=data))

    def test_command_line_error_is_one_line_and_exit_2(self) -> None:
        name = self.data_with({"input": "x", "target": 1.5}, name="bad_cli")
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "clf.py"), "--mount_dir", self.mount, "--model_pretrain_name", "tiny",
             "--data_name", name, "--max_steps", "1"],
            capture_output=True, text=True, cwd=self.tmp, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
        )
        self.assertEqual(proc.returncode, 2, proc.stderr)
        path = os.path.join(self.mount, "data", f"{name}.json")
        self.assertEqual(proc.stderr.splitlines(), [f"error: {path}: train record 4: field 'target' must be a number in [0, 1], got 1.5"])
        self.assertEqual(proc.stdout, "")
        self.assertEqual(sorted(os.listdir(os.path.join(self.mount, "models"))), ["tiny"])  # no run folder


if __name__ == "__main__":
    absltest.main()
