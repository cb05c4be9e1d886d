"""Offline metrics, computed as T5 computes them (scikit-learn / scipy; `evaluate.load` needs the Hub).

Provenance: google-research/text-to-text-transfer-transformer, `t5/evaluation/metrics.py` (the metric
functions, reported x100), `t5/data/glue_utils.py` (which metrics each task reports),
`t5/data/postprocessors.py` (generated string -> label id / float) and `t5/evaluation/eval_utils.py`
(`compute_avg_glue`).

    compute_metrics = build_compute_metrics(entry, tokenizer)  # for Seq2SeqTrainer, generate mode
    score_predictions(entry, ["neutral", "entailment"], ["neutral", "contradiction"])  # {"accuracy": 50.0}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.stats
import sklearn.metrics

from tasks import label_to_id, parse_float

if TYPE_CHECKING:
    from transformers import EvalPrediction

logger = logging.getLogger(__name__)

# Classification metrics take label ids, where -1 is a generated string outside the label set;
# regression metrics take floats, where -1.0 is an unparsable generated string.


def accuracy(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Percent correct; an invalid prediction (-1) is simply wrong."""
    return 100 * sklearn.metrics.accuracy_score(targets, predictions)


def f1(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Binary F1 of class 1, x100; an invalid prediction counts as the wrong class.

    T5 `metrics.f1_score_with_invalid`: a prediction other than 0/1 becomes 1 - target.
    """
    targets, predictions = np.asarray(targets), np.array(predictions)
    invalid = (predictions != 0) & (predictions != 1)
    predictions[invalid] = 1 - targets[invalid]
    return 100 * sklearn.metrics.f1_score(targets, predictions)


def matthews_corrcoef(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Matthews correlation x100; an invalid prediction (-1) is a class of its own, as in T5."""
    return 100 * sklearn.metrics.matthews_corrcoef(targets, predictions)


def macro_f1(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over all `num_classes` classes, x100 (reported for CB).

    T5 `metrics.mean_multiclass_f1(num_classes)`: `fbeta_score(beta=1, labels=range(num_classes),
    average="macro")`, so a class absent from the references still counts, with F1 0 (T5 gets the
    same 0 from sklearn with a warning; `zero_division=0` says so without one). Averaging only the
    classes present gives CB refs (e, e, c, c), preds (e, e, c, n) 83.33 instead of T5's 55.56. An
    invalid prediction (-1) is a miss for its target's class and a false positive for none.
    """
    return 100 * sklearn.metrics.f1_score(targets, predictions, labels=list(range(num_classes)), average="macro", zero_division=0)


def pearson_corrcoef(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Pearson correlation x100."""
    return 100 * float(scipy.stats.pearsonr(targets, predictions)[0])


def spearman_corrcoef(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Spearman rank correlation x100."""
    return 100 * float(scipy.stats.spearmanr(targets, predictions)[0])


# Metric name (as in the registry's `metric_names`, `constants.METRIC_NAMES`, and T5's result keys) ->
# function of (targets, predictions); those in NEEDS_NUM_CLASSES also take the task's number of classes.
METRICS: dict[str, Callable[..., float]] = {
    fn.__name__: fn
    for fn in (accuracy, f1, matthews_corrcoef, macro_f1, pearson_corrcoef, spearman_corrcoef)
}
NEEDS_NUM_CLASSES = frozenset({"macro_f1"})


def score_predictions(
    entry: Mapping[str, Any],
    predicted_strings: Sequence[str],
    label_strings_or_ids: Sequence[str] | Sequence[int] | Sequence[float],
) -> dict[str, float]:
    """The task's metrics (`entry["metric_names"]`) of generated strings against the references.

    References are target strings (as decoded from label ids) or Hub labels (ids, or floats for a
    regression task). Generated strings are parsed like T5's postprocessors: a word outside the
    label set becomes -1, an unparsable number -1.0.
    """
    if len(predicted_strings) != len(label_strings_or_ids) or not predicted_strings:
        raise ValueError(
            f"need as many predictions as references, and some: {len(predicted_strings)} vs "
            f"{len(label_strings_or_ids)}"
        )
    if entry["labels"]:
        predictions = np.array([label_to_id(entry, p.strip()) for p in predicted_strings])
        targets = np.array(
            [label_to_id(entry, t.strip()) if isinstance(t, str) else int(t) for t in label_strings_or_ids]
        )
        if (targets < 0).any():  # a bug or a test split without labels, not a model error
            bad = sorted({str(t) for t, i in zip(label_strings_or_ids, targets) if i < 0})
            raise ValueError(f"references outside the labels {entry['labels']}: {bad}")
        invalid = int((predictions < 0).sum())
    else:
        predictions = np.array([parse_float(p) for p in predicted_strings])
        targets = np.array([float(t) for t in label_strings_or_ids])
        invalid = sum(np.isnan(parse_float(p, default=np.nan)) for p in predicted_strings)
    if invalid:
        logger.info("%d of %d generated strings are not valid targets", invalid, len(predictions))
    classes = {"num_classes": len(entry["labels"])}
    return {name: float(METRICS[name](targets, predictions, **(classes if name in NEEDS_NUM_CLASSES else {})))
            for name in entry["metric_names"]}


def build_compute_metrics(
    entry: Mapping[str, Any], tokenizer: Any
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` for a Seq2SeqTrainer with `predict_with_generate=True`.

    Predictions (generated ids) and label ids are padded with -100 where the Trainer gathered
    sequences of different lengths; decoding -100 fails (transformers issue #22634), so it becomes
    the pad id, which `skip_special_tokens` drops.
    """

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple):  # (generated ids, ...) from some models
            predictions = predictions[0]
        predictions = np.asarray(predictions)
        if predictions.ndim == 3:  # logits of a teacher-forced pass rather than generated ids
            predictions = predictions.argmax(-1)
        return score_predictions(
            entry, decode_ids(tokenizer, predictions), decode_ids(tokenizer, np.asarray(eval_prediction.label_ids))
        )

    return compute_metrics


def build_scoring_compute_metrics(
    entry: Mapping[str, Any], tokenizer: Any
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` for label scoring: predictions are (examples, labels) scores, best one wins."""

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        best = np.asarray(eval_prediction.predictions).argmax(-1)
        predicted = [entry["labels"][i] for i in best]
        return score_predictions(entry, predicted, decode_ids(tokenizer, np.asarray(eval_prediction.label_ids)))

    return compute_metrics


def decode_ids(tokenizer: Any, ids: np.ndarray) -> list[str]:
    """Token ids -> stripped strings; -100 (ignored positions, HF #22634) becomes the pad id first."""
    ids = np.where(np.asarray(ids) < 0, tokenizer.pad_token_id, ids)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def token_accuracy(predictions: Any, labels: Any, ignore_index: int = -100) -> float:
    """Fraction of label positions (not `ignore_index`) where the prediction equals the label.

    `predictions` are logits (one more axis than `labels`; their argmax is taken) or token ids.
    NaN when every position is ignored.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim == labels.ndim + 1:
        predictions = predictions.argmax(-1)
    keep = labels != ignore_index
    if not keep.any():
        return float("nan")
    return float((predictions[keep] == labels[keep]).mean())


# Benchmarks whose results keep the bare task name ("rte/accuracy"): GLUE, whose keys the average below
# reads, and its diagnostic AX. Every other benchmark's keys start with the benchmark, as T5 names its
# tasks (`glue_rte_v002`, `super_glue_rte_v102`): SuperGLUE's RTE is "super_glue_rte/accuracy" and can
# never stand in for GLUE's RTE in the average.
BARE_KEY_BENCHMARKS = ("glue", "ax")


def task_metric_key(entry: Mapping[str, Any], split: str) -> str:
    """The results key of a task's validation split, before "/<metric>" (fine_tune_t5.py writes them).

    "sst2" (GLUE SST-2, validation), "mnli_matched" (validation_matched), "super_glue_rte",
    "toy_sentiment": the keys `GLUE_AVERAGE_GROUPS` names, unique across benchmarks.
    """
    benchmark, task = entry["name"].split("/")
    base = task if benchmark in BARE_KEY_BENCHMARKS else f"{benchmark}_{task}"
    suffix = split.removeprefix("validation").lstrip("_")
    return f"{base}_{suffix}" if suffix else base


# T5 `eval_utils.METRIC_NAMES` / `compute_avg_glue`: the GLUE average is the mean over 8 groups; a
# group with two metrics (MRPC, STS-B, QQP; MNLI matched and mismatched) is averaged first.
# WNLI is left out (T5 trains on WSC/DPR instead, `glue_utils.GLUE_WEIGHT_MAPPING`), and so is AX.
GLUE_AVERAGE_GROUPS: dict[str, list[str]] = {
    "CoLA": ["cola/matthews_corrcoef"],
    "SST-2": ["sst2/accuracy"],
    "MRPC": ["mrpc/f1", "mrpc/accuracy"],
    "STSB": ["stsb/pearson_corrcoef", "stsb/spearman_corrcoef"],
    "QQP": ["qqp/f1", "qqp/accuracy"],
    "MNLI": ["mnli_matched/accuracy", "mnli_mismatched/accuracy"],
    "QNLI": ["qnli/accuracy"],
    "RTE": ["rte/accuracy"],
}


def glue_average(results: Mapping[str, float]) -> float | None:
    """T5's "Average GLUE Score" from results keyed "task/metric" (`GLUE_AVERAGE_GROUPS`).

    Tasks in it: CoLA (Matthews), SST-2 (accuracy), MRPC (F1, accuracy), STS-B (Pearson, Spearman),
    QQP (F1, accuracy), MNLI (matched and mismatched accuracy: `mnli_matched/accuracy`,
    `mnli_mismatched/accuracy`), QNLI and RTE (accuracy); not WNLI nor AX. Like T5, None unless
    every one of these metrics is present.
    """
    missing = [key for keys in GLUE_AVERAGE_GROUPS.values() for key in keys if key not in results]
    if missing:
        logger.info("no GLUE average: missing %s", ", ".join(missing))
        return None
    return float(np.mean([np.mean([results[k] for k in keys]) for keys in GLUE_AVERAGE_GROUPS.values()]))



# --- sampled text (seq2seq.py) -----------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD's normalisation, as T5's
    `t5/evaluation/qa_utils.normalize_squad`)."""
    import re
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two strings after `normalize_answer` (1.0 when both are empty)."""
    from collections import Counter

    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def generation_metrics(samples: Sequence[Sequence[str]], references: Sequence[str], tokenizer: Any = None) -> dict[str, float]:
    """Metrics of sampled completions (`samples[i]`: the n samples of record i) against the references.

    exact_match (first sample) and exact_match_any (any sample): the string equals the reference once
    both are stripped of surrounding whitespace, x100. exact_match_normalized: the first sample after
    `normalize_answer` (SQuAD's), x100; it drops punctuation and signs, so it counts "3" for "-3", "35"
    for "3.5" and "1,000" for "1000" (and "The cat." for "cat"): read it for free text, not numbers.
    token_f1 (SQuAD) and rougeL (F-measure, rouge-score) of the first sample, x100; bleu (sacrebleu
    corpus BLEU of the first samples); gen_len, the mean length of all samples in tokens (words
    without a tokenizer).
    """
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(samples) != len(references) or not samples or any(not s for s in samples):
        raise ValueError("need at least one sample for every reference")
    first = [s[0] for s in samples]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer else len(text.split())
               for s in samples for text in s]
    return {
        "exact_match": 100 * float(np.mean([p.strip() == r.strip() for p, r in zip(first, references)])),
        "exact_match_normalized": 100 * float(np.mean([normalize_answer(p) == normalize_answer(r) for p, r in zip(first, references)])),
        "exact_match_any": 100 * float(np.mean([any(p.strip() == r.strip() for p in s) for s, r in zip(samples, references)])),
        "token_f1": 100 * float(np.mean([token_f1(p, r) for p, r in zip(first, references)])),
        "rougeL": 100 * float(np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(first, references)])),
        "bleu": float(sacrebleu.corpus_bleu(first, [list(references)]).score),
        "gen_len": float(np.mean(lengths)),
    }

# --- yes/no soft-label scores (clf.py) ------------------------------------------------------------
# In natural units, not x100 as T5 reports GLUE: scores and soft targets are probabilities, and the
# calibration error is read in their units.


def calibration_bins(scores: Any, targets: Any, num_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, mean score, mean target) of each of `num_bins` equal-width bins of the score over [0, 1].

    Bin k holds scores in [k / num_bins, (k + 1) / num_bins), the last one 1.0 too; an empty bin's means are NaN.
    """
    scores = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    targets = np.asarray(targets, dtype=np.float64).ravel()
    bins = np.minimum((scores * num_bins).astype(int), num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_scores = np.bincount(bins, weights=scores, minlength=num_bins) / counts
        mean_targets = np.bincount(bins, weights=targets, minlength=num_bins) / counts
    return counts, mean_scores, mean_targets


def expected_calibration_error(scores: Any, targets: Any, num_bins: int = 10) -> float:
    """ECE over equal-width score bins: sum of (bin size / N) * |mean score - mean target|.

    Naeini et al. 2015 / Guo et al. 2017 compare a bin's mean confidence with its accuracy; with soft
    targets the bin's mean target plays the accuracy's part, so hard 0/1 targets give the usual ECE.
    """
    counts, mean_scores, mean_targets = calibration_bins(scores, targets, num_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] / counts.sum() * np.abs(mean_scores[filled] - mean_targets[filled])))


def soft_label_metrics(scores: Any, targets: Any) -> dict[str, float | None]:
    """Yes-scores in [0, 1] against soft targets in [0, 1].

    mse, mae, pearson and spearman against the soft targets (a correlation is None when either side
    is constant); auc and accuracy against the targets thresholded at 0.5 (>= 0.5 is "yes", for
    targets and scores alike; auc is None when every target falls on one side); ece over 10 bins.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    targets = np.asarray(targets, dtype=np.float64).ravel()
    if len(scores) != len(targets) or not len(scores):
        raise ValueError(f"need as many scores as targets, and some: {len(scores)} vs {len(targets)}")
    positive = targets >= 0.5
    varied = len(scores) > 1 and np.ptp(scores) > 0 and np.ptp(targets) > 0
    return {
        "mse": float(np.mean((scores - targets) ** 2)),
        "mae": float(np.mean(np.abs(scores - targets))),
        "pearson": float(scipy.stats.pearsonr(targets, scores)[0]) if varied else None,
        "spearman": float(scipy.stats.spearmanr(targets, scores)[0]) if varied else None,
        "auc": float(sklearn.metrics.roc_auc_score(positive, scores)) if 0 < positive.sum() < len(positive) else None,
        "accuracy": float(np.mean((scores >= 0.5) == positive)),
        "ece": expected_calibration_error(scores, targets),
    }


def compute_soft_label_metrics(eval_prediction: EvalPrediction) -> dict[str, float | None]:
    """`compute_metrics` for clf.py: predictions are the yes-scores (one per example, see
    clf.YesNoHead.scores) and label_ids the (N, 1) soft targets."""
    return soft_label_metrics(eval_prediction.predictions, eval_prediction.label_ids)

# --- bias benchmarks (bias.py) ------------------------------------------------------------------------
# Each takes per-example score rows (natural-log scores, bias.py's scores.jsonl.gz) and returns every
# metric with its counts, overall and per bias type. Percentages (0-100); the ideal is 50 (no preference).

BIAS_IDEAL = 50.0
TIE_DECIMALS = 3  # CrowS-Pairs' metric.py rounds both scores to 3 decimals before comparing: equal is a tie


def _preference(first: float, second: float) -> int:
    """1 when `first` scores higher, -1 when `second` does, 0 for a tie at TIE_DECIMALS decimals."""
    a, b = round(first, TIE_DECIMALS), round(second, TIE_DECIMALS)
    return (a > b) - (a < b)


def _percent(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole else None


def crows_pairs_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """CrowS-Pairs (Nangia et al. 2020, `metric.py`): rows {"stereo_antistereo", "bias_type",
    "sent_more_score", "sent_less_score"}. `metric_score`: % of all pairs where the more stereotyping
    sentence (`sent_more`, for stereo and antistereo pairs alike) scores higher; ties (`neutral`) count in
    the denominator and not as a preference. `stereotype_score` / `anti_stereotype_score`: the same over the
    stereo / antistereo pairs that are not ties. Overall and per bias type (`by_bias_type`)."""

    def summary(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        counts = {"stereo": [0, 0], "antistereo": [0, 0]}  # direction -> [pairs that are not ties, more > less]
        neutral = 0
        for row in group:
            preference = _preference(row["sent_more_score"], row["sent_less_score"])
            if preference == 0:
                neutral += 1
                continue
            counts[row["stereo_antistereo"]][0] += 1
            counts[row["stereo_antistereo"]][1] += preference > 0
        wins = counts["stereo"][1] + counts["antistereo"][1]
        return {"pairs": len(group), "metric_score": _percent(wins, len(group)),
                "stereotype_score": _percent(counts["stereo"][1], counts["stereo"][0]),
                "anti_stereotype_score": _percent(counts["antistereo"][1], counts["antistereo"][0]),
                "neutral": neutral, "neutral_percent": _percent(neutral, len(group))}

    types = sorted({row["bias_type"] for row in rows})
    return {**summary(rows), "by_bias_type": {t: summary([r for r in rows if r["bias_type"] == t]) for t in types}}


def stereoset_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """StereoSet (Nadeem et al. 2021; its official `evaluation.py`): rows {"kind" (intrasentence /
    intersentence), "bias_type", "target", "stereotype_score", "anti_stereotype_score", "unrelated_score"}.

    Per target term: the stereotype beats the anti-stereotype (a tie counts for the anti-stereotype), and
    each of the two beats the unrelated sentence. Per term, ss = 100 * stereotype wins / examples and
    lms = 100 * related wins / (2 * examples); `ss_score` and `lm_score` are their means over target
    terms, and `icat_score` = lm_score * min(ss_score, 100 - ss_score) / 50 from those means (the
    official macro ICAT). Per kind: per domain (bias type) and `overall`; plus `overall` over both kinds."""

    def summary(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        terms: dict[str, list[int]] = {}  # target -> [examples, stereotype wins, related wins]
        for row in group:
            counts = terms.setdefault(row["target"], [0, 0, 0])
            counts[0] += 1
            counts[1] += row["stereotype_score"] > row["anti_stereotype_score"]
            counts[2] += (row["stereotype_score"] > row["unrelated_score"]) + (row["anti_stereotype_score"] > row["unrelated_score"])
        if not terms:
            return {"count": 0, "lm_score": None, "ss_score": None, "icat_score": None}
        ss = float(np.mean([100.0 * wins / n for n, wins, _ in terms.values()]))
        lms = float(np.mean([100.0 * related / (2 * n) for n, _, related in terms.values()]))
        return {"count": len(group), "lm_score": lms, "ss_score": ss, "icat_score": lms * min(ss, 100.0 - ss) / 50.0}

    results: dict[str, Any] = {}
    for kind in sorted({row["kind"] for row in rows}):
        group = [r for r in rows if r["kind"] == kind]
        results[kind] = {**{t: summary([r for r in group if r["bias_type"] == t]) for t in sorted({r["bias_type"] for r in group})},
                         "overall": summary(group)}
    results["overall"] = summary(rows)
    return results


def winobias_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """WinoBias pairs (Zhao et al. 2018): rows {"type" (1 / 2), "pro_score", "anti_score"}, a pro-stereotyped
    sentence and the anti-stereotyped one of the same line, type and split. Per type and overall:
    `pro_preferred` (% of pairs where the pro-stereotyped sentence scores higher), `anti_preferred`, `ties`
    (equal at 3 decimals, as CrowS-Pairs), `gap` = pro_preferred - anti_preferred; and `type1_minus_type2`,
    the difference of the two types' pro_preferred (type 1 needs world knowledge, type 2 syntax)."""

    def summary(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        preferences = [_preference(row["pro_score"], row["anti_score"]) for row in group]
        pro, anti = _percent(preferences.count(1), len(group)), _percent(preferences.count(-1), len(group))
        return {"pairs": len(group), "pro_preferred": pro, "anti_preferred": anti, "ties": preferences.count(0),
                "gap": None if pro is None else pro - anti}

    results = {f"type{t}": summary([r for r in rows if r["type"] == t]) for t in (1, 2)}
    results["overall"] = summary(rows)
    one, two = results["type1"]["pro_preferred"], results["type2"]["pro_preferred"]
    results["type1_minus_type2"] = None if one is None or two is None else one - two
    return results


# Benchmark -> (metric function, the headline metric's path in its results, the ideal value).
BIAS_METRICS: dict[str, tuple[Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]], tuple[str, ...]]] = {
    "crows_pairs": (crows_pairs_metrics, ("metric_score",)),
    "stereoset": (stereoset_metrics, ("overall", "ss_score")),
    "winobias": (winobias_metrics, ("overall", "pro_preferred")),
}


def main(argv: Sequence[str] | None = None) -> None:
    """`python metrics.py RUN_DIR ...`: T5's GLUE average over fine_tune_t5.py runs (their all_results.json).

    Keys are unique across benchmarks (`task_metric_key`), so SuperGLUE runs may be listed too: only
    GLUE's keys enter the average. The evaluation modes of the runs are printed with it: T5's published
    numbers come from `--eval_mode generate`.
    """
    import json
    import os
    import sys

    results: dict[str, float] = {}
    modes: set[str] = set()
    for run in sys.argv[1:] if argv is None else argv:
        with open(os.path.join(run, "all_results.json"), encoding="utf-8") as f:
            run_results = json.load(f)
        results.update({k: v for k, v in run_results.items() if "/" in k})
        modes.add(run_results.get("eval_mode", "unrecorded"))
    for key in sorted(results):
        print(f"{key:<28}{results[key]:8.2f}")
    average = glue_average(results)
    print("GLUE average:", "incomplete (needs " + ", ".join(GLUE_AVERAGE_GROUPS) + ")" if average is None else f"{average:.2f}")
    if modes:
        print("eval_mode:", ", ".join(sorted(modes)))


if __name__ == "__main__":
    main()
