"""Metrics against hand-computed values, invalid generated labels as T5 treats them, the GLUE average."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from types import SimpleNamespace

import numpy as np
from absl.testing import absltest, parameterized

from metrics import (
    GLUE_AVERAGE_GROUPS,
    accuracy,
    build_compute_metrics,
    f1,
    generation_metrics,
    glue_average,
    macro_f1,
    main,
    matthews_corrcoef,
    pearson_corrcoef,
    score_predictions,
    spearman_corrcoef,
    task_metric_key,
    token_accuracy,
)
from tasks import get_task


class MetricFunctionsTest(parameterized.TestCase):
    def test_accuracy(self) -> None:
        self.assertEqual(accuracy([0, 1, 1, 0], [0, 1, 0, 0]), 75.0)
        self.assertEqual(accuracy([0, 1], [0, -1]), 50.0)  # invalid: simply wrong

    def test_f1_counts_invalid_as_the_wrong_class(self) -> None:
        # -1 at a positive target -> 0 (a false negative), at a negative target -> 1 (a false positive):
        # TP 1, FP 1, FN 1 -> F1 = 2 / (2 + 1 + 1).
        self.assertEqual(f1([1, 1, 0, 0], [1, -1, 0, -1]), 50.0)
        self.assertAlmostEqual(f1([1, 1, 0, 0], [1, 0, 0, 0]), 100 * 2 / 3, places=10)

    def test_matthews_sees_invalid_as_its_own_class(self) -> None:
        # Multi-class MCC (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)) with classes
        # {0, 1, -1}: c 3, s 4, t (2, 2, 0), p (1, 2, 1) -> (12 - 6) / sqrt(10 * 8).
        mcc = matthews_corrcoef([0, 1, 0, 1], [0, 1, -1, 1])
        self.assertAlmostEqual(mcc, 100 * 6 / math.sqrt(80), places=10)
        # Had -1 counted as class 1 instead: 2 / sqrt(12), a different number.
        self.assertAlmostEqual(matthews_corrcoef([0, 1, 0, 1], [0, 1, 1, 1]), 100 * 2 / math.sqrt(12), places=10)

    def test_macro_f1(self) -> None:
        # Per-class F1: class 0 2/3 (TP 1, FN 1), class 1 1.0, class 2 0 (its one example predicted -1).
        self.assertAlmostEqual(macro_f1([0, 1, 2, 0], [0, 1, -1, 2], num_classes=3), 100 * 5 / 9, places=10)

    def test_macro_f1_averages_every_class_of_the_task(self) -> None:
        # CB ids: entailment 0, contradiction 1, neutral 2. Refs (e, e, c, c), preds (e, e, c, n): F1 of
        # e 1, c 2/3 (TP 1, FN 1), n 0 (one false positive, no support) -> 5/9 over T5's range(3); the
        # classes present in the references alone would give (1 + 2/3) / 2 = 83.33.
        self.assertAlmostEqual(macro_f1([0, 0, 1, 1], [0, 0, 1, 2], num_classes=3), 100 * 5 / 9, places=10)
        self.assertEqual(round(macro_f1([0, 0, 1, 1], [0, 0, 1, 2], num_classes=3), 2), 55.56)

    def test_correlations(self) -> None:
        # x deviations (-1, 0, 1), y (-4/3, -1/3, 5/3): r = 3 / (sqrt(2) * sqrt(42) / 3) = 9 / sqrt(84).
        targets, predictions = [1.0, 2.0, 3.0], [1.0, 2.0, 4.0]
        self.assertAlmostEqual(pearson_corrcoef(targets, predictions), 100 * 9 / math.sqrt(84), places=10)
        self.assertAlmostEqual(spearman_corrcoef(targets, predictions), 100.0, places=10)

    def test_token_accuracy(self) -> None:
        logits = np.zeros((1, 4, 3))
        for position, token in enumerate([2, 1, 0, 1]):
            logits[0, position, token] = 1.0
        labels = np.array([[2, 0, -100, 1]])  # position 2 ignored; 2 of the other 3 match
        self.assertAlmostEqual(token_accuracy(logits, labels), 2 / 3)
        self.assertAlmostEqual(token_accuracy(np.array([[2, 1, 0, 1]]), labels), 2 / 3)  # ids work too
        self.assertTrue(math.isnan(token_accuracy(logits, np.full((1, 4), -100))))


class ScorePredictionsTest(parameterized.TestCase):
    def test_mnli_invalid_is_wrong(self) -> None:
        entry = get_task("glue", "mnli")
        predicted = ["entailment", "maybe", "contradiction", "neutral"]
        references = ["entailment", "neutral", "contradiction", "entailment"]
        self.assertEqual(score_predictions(entry, predicted, references), {"accuracy": 50.0})
        self.assertEqual(score_predictions(entry, predicted, [0, 1, 2, 0]), {"accuracy": 50.0})  # ids alike

    def test_mrpc_f1_and_accuracy(self) -> None:
        entry = get_task("glue", "mrpc")
        predicted = ["equivalent", "yes", "not_equivalent", "no"]
        self.assertEqual(score_predictions(entry, predicted, [1, 1, 0, 0]), {"f1": 50.0, "accuracy": 50.0})

    def test_cola_matthews(self) -> None:
        entry = get_task("glue", "cola")
        predicted = ["unacceptable", "acceptable", "grammatical", "acceptable"]
        result = score_predictions(entry, predicted, [0, 1, 0, 1])
        self.assertAlmostEqual(result["matthews_corrcoef"], 100 * 6 / math.sqrt(80), places=10)

    def test_stsb_unparsable_becomes_minus_one(self) -> None:
        # Predictions (1, -1, 3) against (1, 2, 3): deviations (0, -2, 2) and (-1, 0, 1) -> r = 2 / 4;
        # ranks (2, 1, 3) against (1, 2, 3) -> rho = 1 / 2.
        predicted = ["1.0", "one point five", "3.0"]
        result = score_predictions(get_task("glue", "stsb"), predicted, ["1.0", "2.0", "3.0"])
        self.assertAlmostEqual(result["pearson_corrcoef"], 50.0, places=10)
        self.assertAlmostEqual(result["spearman_corrcoef"], 50.0, places=10)

    def test_cb_macro_f1_and_accuracy(self) -> None:
        result = score_predictions(
            get_task("super_glue", "cb"), ["entailment", "contradiction", "bogus", "neutral"], [0, 1, 2, 0]
        )
        self.assertAlmostEqual(result["macro_f1"], 100 * 5 / 9, places=10)
        self.assertEqual(result["accuracy"], 50.0)

    def test_cb_macro_f1_counts_a_class_missing_from_the_references(self) -> None:
        predicted = ["entailment", "entailment", "contradiction", "neutral"]
        result = score_predictions(get_task("super_glue", "cb"), predicted, [0, 0, 1, 1])  # no neutral reference
        self.assertEqual(round(result["macro_f1"], 2), 55.56)  # T5 mean_3class_f1, not 83.33
        self.assertEqual(result["accuracy"], 75.0)

    def test_bad_references_raise(self) -> None:
        with self.assertRaises(ValueError):
            score_predictions(get_task("glue", "sst2"), ["positive"], [-1])  # an unlabelled test split
        with self.assertRaises(ValueError):
            score_predictions(get_task("glue", "sst2"), ["positive"], [])


class StubTokenizer:
    """Decodes like a T5 tokenizer and, like it, fails on negative ids (transformers issue #22634)."""

    pad_token_id = 0
    vocab = {0: "<pad>", 1: "</s>", 5: "entailment", 6: "neutral", 7: "contradiction"}

    def batch_decode(self, ids: np.ndarray, skip_special_tokens: bool = False) -> list[str]:
        assert (np.asarray(ids) >= 0).all(), "OverflowError: out of range integral type conversion attempted"
        special = {0, 1} if skip_special_tokens else set()
        return [" ".join(self.vocab[int(i)] for i in row if int(i) not in special) for row in ids]


class ComputeMetricsTest(absltest.TestCase):
    def test_generated_ids_with_minus_100(self) -> None:
        compute_metrics = build_compute_metrics(get_task("glue", "mnli"), StubTokenizer())
        prediction = SimpleNamespace(  # an EvalPrediction: generated ids and label ids, both -100 padded
            predictions=np.array([[0, 5, 1, -100], [0, 6, 1, 0], [0, 6, 6, 1]]),
            label_ids=np.array([[5, 1, -100, -100], [7, 1, -100, -100], [6, 1, -100, -100]]),
        )
        # "entailment" right, "neutral" wrong, "neutral neutral" is no label: 1 of 3.
        result = compute_metrics(prediction)
        self.assertEqual(list(result), ["accuracy"])
        self.assertAlmostEqual(result["accuracy"], 100 / 3, places=10)


class GenerationMetricsTest(absltest.TestCase):
    def test_exact_match_on_numbers_is_strict(self) -> None:
        # SQuAD's normalisation drops punctuation: "-3" -> "3", "3.5" -> "35", "1,000" -> "1000".
        samples = [["3", "-3"], ["35"], ["1,000"], [" 42\n"], ["8", "7 "]]
        references = ["-3", "3.5", "1000", "42", "7"]
        metrics = generation_metrics(samples, references)
        self.assertEqual(metrics["exact_match"], 20.0)  # first samples: only " 42\n" (trimmed) equals "42"
        self.assertEqual(metrics["exact_match_normalized"], 80.0)  # all but "8" vs "7" after normalisation
        self.assertEqual(metrics["exact_match_any"], 60.0)  # "-3", "42" and "7 " (trimmed) among the samples
        self.assertEqual(list(metrics)[:3], ["exact_match", "exact_match_normalized", "exact_match_any"])


class GlueAverageTest(absltest.TestCase):
    RESULTS = {
        "cola/matthews_corrcoef": 50.0, "sst2/accuracy": 90.0,
        "mrpc/f1": 80.0, "mrpc/accuracy": 70.0,  # MRPC 75
        "stsb/pearson_corrcoef": 80.0, "stsb/spearman_corrcoef": 90.0,  # STS-B 85
        "qqp/f1": 70.0, "qqp/accuracy": 80.0,  # QQP 75
        "mnli_matched/accuracy": 80.0, "mnli_mismatched/accuracy": 82.0,  # MNLI 81
        "qnli/accuracy": 88.0, "rte/accuracy": 60.0,
        "wnli/accuracy": 40.0,  # not in T5's average
    }

    def test_average(self) -> None:
        # (50 + 90 + 75 + 85 + 75 + 81 + 88 + 60) / 8
        self.assertEqual(glue_average(self.RESULTS), 604 / 8)
        self.assertEqual(len(GLUE_AVERAGE_GROUPS), 8)

    def test_incomplete_results_give_none(self) -> None:
        results = dict(self.RESULTS)
        del results["mnli_mismatched/accuracy"]
        self.assertIsNone(glue_average(results))

    def test_keys_are_unique_across_benchmarks(self) -> None:
        self.assertEqual(task_metric_key(get_task("glue", "rte"), "validation"), "rte")
        self.assertEqual(task_metric_key(get_task("super_glue", "rte"), "validation"), "super_glue_rte")
        self.assertEqual(task_metric_key(get_task("glue", "mnli"), "validation_mismatched"), "mnli_mismatched")
        self.assertEqual(task_metric_key(get_task("toy", "sentiment"), "validation"), "toy_sentiment")
        self.assertEqual(task_metric_key(get_task("ax", "ax"), "test"), "ax_test")

    def test_super_glue_rte_run_stays_out_of_the_glue_average(self) -> None:
        # `python metrics.py runs/glue/* runs/super_glue/rte`: each run dir holds all_results.json as
        # fine_tune_t5.py writes it; SuperGLUE's RTE (84) must not replace GLUE's (60) in the average.
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        runs = {}
        for key, value in self.RESULTS.items():
            task = key.split("/")[0].split("_")[0]  # mnli_matched and mnli_mismatched: one MNLI run
            runs.setdefault(f"glue/{task}", {"eval_mode": "score"})[key] = value
        super_rte = task_metric_key(get_task("super_glue", "rte"), "validation")
        runs["super_glue/rte"] = {"eval_mode": "score", "eval_accuracy": 84.0, f"{super_rte}/accuracy": 84.0}
        for run, results in runs.items():
            os.makedirs(os.path.join(root, run))
            with open(os.path.join(root, run, "all_results.json"), "w", encoding="utf-8") as f:
                json.dump(results, f)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main([os.path.join(root, run) for run in sorted(runs)])  # glue/* first, then super_glue/rte
        lines = out.getvalue().splitlines()
        self.assertIn("GLUE average: 75.50", lines)  # (50 + 90 + 75 + 85 + 75 + 81 + 88 + 60) / 8, as above
        self.assertIn(f"{'rte/accuracy':<28}{60.0:8.2f}", lines)
        self.assertIn(f"{'super_glue_rte/accuracy':<28}{84.0:8.2f}", lines)
        self.assertEqual(lines[-1], "eval_mode: score")


if __name__ == "__main__":
    absltest.main()
