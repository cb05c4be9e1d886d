"""Yes/no soft-label regression with T5: a calibrated score in [0, 1] for a yes/no question.

    python clf.py --model_pretrain_name google/flan-t5-xl --data_name 1226verifier_ft_all \
        --max_steps 2001 --eval_steps 2000 --save_steps 2000

The score of an input is softmax([logit_yes, logit_no])[0] at the first decoder step (the decoder sees
its start token only); training minimises the cross-entropy between that two-way softmax and the soft
target (t, 1 - t), i.e. binary cross-entropy on the score. Data: `<mount>/data/<data_name>.json` =
{"train": [{"input": ..., "target": 0.83, ...}], "eval": [...]}, or JSON lines per split
(--train_file, --eval_file); other keys are copied to the predictions. Results go to
`<mount>/models/<training_run_name>/`: the model, `predictions_eval.jsonl` (each eval record plus its
`score`), `reliability_diagram.png`, `all_results.json` (eval_mse, eval_pearson, eval_auc, eval_ece, ...).
`--no_train --predict_file F` scores new records with a trained model. Defaults follow T5's
fine-tuning (Adafactor, constant learning rate 1e-3). The shipped example, `mount/data/clf_example.json`
(is a sentence about sport?), is written by `write_example_data` below.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from typing import TYPE_CHECKING

# Only light modules here: flags and data are checked before transformers and torch are imported.
from cli import EarlyTrainingFlags, UserError, light_parse, parse_args, run_main
from modeling import check_model_source
from outputs import FINISHED_MARKER, check_output_dir, unique_path, write_json_atomic, write_text_atomic
from records import (
    Record,
    default_run_name,
    is_probability,
    is_string,
    load_run_records,
    model_folder_or_name,
    run_path,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("clf")

SOFT_LABELED = {"input": is_string, "target": is_probability}  # train and eval records
UNLABELED = {"input": is_string}  # --predict_file records


@dataclass
class ClfDataArguments:
    """Where the model, the data and the results live (the `mount/` layout), and the yes/no question."""

    model_pretrain_name: str = field(metadata={"help": "Model to start from: a folder under <mount_dir>/models if there is one, else a local path or Hub name (e.g. google/flan-t5-xl)."})
    data_name: str | None = field(default=None, metadata={"help": "Data file <mount_dir>/data/<data_name>.json holding 'train' and 'eval' lists of {\"input\", \"target\"} records."})
    train_file: str | None = field(default=None, metadata={"help": "Training records as JSON lines (one {\"input\", \"target\"} per line); overrides data_name's train."})
    eval_file: str | None = field(default=None, metadata={"help": "Eval records as JSON lines; overrides data_name's eval."})
    predict_file: str | None = field(default=None, metadata={"help": "Records with an 'input' (JSON lines or a list) to score; written to predictions_predict.jsonl."})
    training_run_name: str | None = field(default=None, metadata={"help": "Results go to <mount_dir>/models/<training_run_name>/ (default: <data_name>-<model>-<time>)."})
    mount_dir: str = field(default="mount", metadata={"help": "The mounted home holding models/ and data/."})
    template: str | None = field(default=None, metadata={"help": "Wraps each input as the yes/no question; must contain {input}; \\n stands for a newline. Default: the input as it is."})
    yes_token: str = field(default="yes", metadata={"help": "The word whose first-step probability is the score; must be a single token."})
    no_token: str = field(default="no", metadata={"help": "The word it is weighed against; must be a single token."})
    max_source_length: int = field(default=512, metadata={"help": "Input tokens; longer inputs are truncated (and counted)."})

    def __post_init__(self) -> None:
        if self.template is not None:
            self.template = self.template.replace("\\n", "\n")  # a shell flag cannot easily hold a newline
            if "{input}" not in self.template:
                raise UserError(f"--template {self.template!r}: must contain {{input}}, where each record's input goes")
        if self.yes_token == self.no_token:
            raise UserError(f"--yes_token and --no_token are both {self.yes_token!r}: they must differ")
        if self.max_source_length < 2:
            raise UserError(f"--max_source_length {self.max_source_length}: must be at least 2")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # Flags, paths and records first, before the heavy imports: a mistake is reported in about a second,
    # before anything is written or logged (a mistake is one line on stderr).
    early = light_parse((ClfDataArguments, EarlyTrainingFlags), argv)
    checked = check_inputs(*early) if early else None

    from transformers import set_seed

    from modeling import fit_embeddings_to_tokenizer, load_model, load_tokenizer
    from training import MountRunArguments, run_training, setup_logging

    data_args, training_args = parse_args((ClfDataArguments, MountRunArguments), argv, __doc__)
    model_dir, run_dir, records = checked or check_inputs(data_args, training_args)
    training_args.output_dir = run_dir

    tokenizer = load_tokenizer(model_dir, "--model_pretrain_name")
    head = YesNoHead(single_token_id(tokenizer, data_args.yes_token, "--yes_token"),
                     single_token_id(tokenizer, data_args.no_token, "--no_token"))

    # Model.
    setup_logging(training_args)
    set_seed(training_args.seed)
    model = load_model(model_dir, "--model_pretrain_name")
    fit_embeddings_to_tokenizer(model, tokenizer)

    # Data: (templated) input -> encoder ids; the soft target travels as the label.
    features = {split: encode(rows, tokenizer, data_args.template, data_args.max_source_length, split, labeled=split != "predict")
                for split, rows in records.items()}
    log_examples(tokenizer, next(iter(features.values())), data_args)

    # Trainer: one decoder step; the loss and the scores read the yes/no logits.
    trainer = build_trainer(model, tokenizer, training_args, head, features.get("train"), features.get("eval"))

    # Train, evaluate, predict.
    results: dict[str, Any] = {}
    if "train" in features:
        results.update(run_training(trainer))
        trainer.save_model(run_dir)
        trainer.save_state()
    scores: dict[str, list[float]] = {}
    for split in ("eval", "predict"):
        if split in features:
            output = trainer.predict(features[split], metric_key_prefix=split)  # one pass: metrics and scores
            if split == "eval":
                trainer.log(output.metrics)  # as trainer.evaluate() would: log history, W&B, TensorBoard
            results.update(output.metrics)
            scores[split] = [round(float(s), 6) for s in output.predictions]

    # Outputs (the main process only).
    if trainer.is_world_process_zero():
        write_outputs(run_dir, records, scores, trainer, results, (data_args, training_args), argv)
    return results


def data_label(data_args: ClfDataArguments) -> str | None:
    """The data's name in a default run name: --data_name, else the first given file's stem."""
    path = data_args.train_file or data_args.eval_file or data_args.predict_file
    return data_args.data_name or (os.path.splitext(os.path.basename(path))[0] if path else None)


def check_inputs(data_args: ClfDataArguments, run: Any) -> tuple[str, str, dict[str, list[Record]]]:
    """(model dir or name, run dir, records): the checks that need no heavy import.

    `run` holds the Trainer flags: `EarlyTrainingFlags` before the heavy imports, else the full arguments.
    An evaluation/prediction-only run may write beside a finished one (under new file names).
    """
    model_dir = model_folder_or_name(data_args.mount_dir, data_args.model_pretrain_name)
    check_model_source(model_dir, "--model_pretrain_name")
    run_dir = run_path(data_args.mount_dir, data_args.training_run_name or default_run_name(data_label(data_args), model_dir))
    check_output_dir(run_dir, run.overwrite_output_dir, run.no_train or bool(run.resume_from_checkpoint))
    return model_dir, run_dir, load_records(data_args, train=not run.no_train)


def load_records(data_args: ClfDataArguments, train: bool) -> dict[str, list[Record]]:
    """Checked records: train and eval (input and soft target), and predict (input) when a file is given."""
    return load_run_records(data_args.mount_dir, data_args.data_name, data_args.train_file, data_args.eval_file,
                            data_args.predict_file, train, SOFT_LABELED, UNLABELED)


def single_token_id(tokenizer: Any, word: str, flag: str) -> int:
    """The id of `word` as the model would write it; a user error unless it is one known token."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise UserError(f"{flag} {word!r}: must be a single known token of the model's tokenizer, but it encodes as {pieces}; "
                        "choose a word the tokenizer keeps whole (T5's yes and no are)")
    return ids[0]


def question(text: str, template: str | None) -> str:
    # str.replace, not str.format: templates and inputs may hold other braces.
    return text if template is None else template.replace("{input}", text)


def encode(rows: Sequence[Record], tokenizer: Any, template: str | None, max_length: int, split: str, labeled: bool) -> list[dict[str, Any]]:
    """Features for the collator: `input_ids` (with `</s>`, truncated keeping it) and, if labeled, the soft target."""
    from modeling import encode_truncated

    input_ids, truncated = encode_truncated(tokenizer, [question(r["input"], template) for r in rows], max_length)
    if any(truncated):
        logger.warning("%s: %d of %d inputs truncated to --max_source_length %d", split, sum(truncated), len(rows), max_length)
    return [{"input_ids": ids, **({"labels": float(r["target"])} if labeled else {})} for ids, r in zip(input_ids, rows)]


def log_examples(tokenizer: Any, features: list[dict[str, Any]], data_args: ClfDataArguments, count: int = 2) -> None:
    """Two decoded inputs and their targets: most template and format bugs show up here."""
    for i, feature in enumerate(features[:count]):
        logger.info("example %d input:  %s", i, tokenizer.decode(feature["input_ids"]))
        logger.info("example %d target: P(%r) = %s", i, data_args.yes_token, feature.get("labels", "(none)"))


@dataclass(frozen=True)
class YesNoHead:
    """The two logits read at the first decoder step: score = softmax([logit_yes, logit_no])[0].

    One job, in three Trainer hooks: `loss` is the `compute_loss_func`, `scores` the
    `preprocess_logits_for_metrics` (it keeps one number per example instead of the vocabulary's logits).
    """

    yes_id: int
    no_id: int

    def margin(self, logits: torch.Tensor) -> torch.Tensor:
        """logit_yes - logit_no at the first decoder step, in float32: the score is sigmoid(margin)."""
        return (logits[:, 0, self.yes_id] - logits[:, 0, self.no_id]).float()

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        """Cross-entropy between softmax([yes, no]) and (t, 1 - t), summed over the examples and divided by
        the examples of the whole optimizer step.

        That cross-entropy is binary cross-entropy on sigmoid(margin), computed from the margin for
        stability. Each example carries one label (its soft target, a (batch, 1) float), so the
        Trainer's `num_items_in_batch` (labels != -100 over all accumulated micro-batches) counts the
        examples of the step, and k micro-batches give the loss and gradient of one batch k times
        larger (HF #36331, #37766). Without it (evaluation) the batch mean.
        """
        import torch

        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        targets = labels.reshape(-1).to(device=logits.device, dtype=torch.float32)
        total = torch.nn.functional.binary_cross_entropy_with_logits(self.margin(logits), targets, reduction="sum")
        if num_items_in_batch is None:
            num_items_in_batch = targets.numel()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch

    def scores(self, logits: Any, labels: Any = None) -> torch.Tensor:
        """The score of each example (batch,); `logits` may come with the encoder's states in a tuple."""
        import torch

        return torch.sigmoid(self.margin(logits[0] if isinstance(logits, tuple) else logits))


@dataclass
class YesNoCollator:
    """Right-pads the inputs, gives the decoder its start token only (one step), and carries the soft
    targets as (batch, 1) float `labels`, so the Trainer counts one item per example."""

    pad_token_id: int
    decoder_start_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, feature in enumerate(features):
            input_ids[row, : len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
            attention_mask[row, : len(feature["input_ids"])] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": torch.full((len(features), 1), self.decoder_start_token_id, dtype=torch.long),
        }
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([[f["labels"]] for f in features], dtype=torch.float32)
        return batch


def build_trainer(model: Any, tokenizer: Any, training_args: Any, head: YesNoHead,
                  train: list[dict[str, Any]] | None, eval_features: list[dict[str, Any]] | None) -> Any:
    from metrics import compute_soft_label_metrics
    from scoring import ExactSeq2SeqTrainer
    from training import finite_loss, use_t5_adafactor

    trainer = ExactSeq2SeqTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=eval_features,
        data_collator=YesNoCollator(tokenizer.pad_token_id, model.config.decoder_start_token_id),
        processing_class=tokenizer, compute_loss_func=finite_loss(head.loss),
        preprocess_logits_for_metrics=head.scores, compute_metrics=compute_soft_label_metrics,
    )
    use_t5_adafactor(trainer)
    return trainer


def write_outputs(run_dir: str, records: dict[str, list[Record]], scores: dict[str, list[float]], trainer: Any,
                  results: dict[str, Any], arg_objects: tuple, argv: list[str] | None) -> None:
    """Predictions (each record plus `score`), the reliability diagram, provenance, the loss curve and the
    results. A run without training may sit beside a finished one, so its files take new names."""
    from training import plot_loss_curve, write_provenance

    trained = "train" in records
    place = (lambda path: path) if trained else unique_path
    for split, split_scores in scores.items():
        if any("score" in r for r in records[split]):
            logger.warning("%s: records already hold a 'score'; the predictions file replaces it", split)
        rows = [{**record, "score": score} for record, score in zip(records[split], split_scores)]
        path = place(os.path.join(run_dir, f"predictions_{split}.jsonl"))
        write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        results[f"{split}_predictions_file"] = os.path.basename(path)
    if "eval" in scores:
        plot_reliability_diagram(scores["eval"], [r["target"] for r in records["eval"]],
                                 place(os.path.join(run_dir, "reliability_diagram.png")))
    if trained:
        write_provenance(run_dir, arg_objects, argv)
        plot_loss_curve(trainer.state.log_history, os.path.join(run_dir, "loss_curve.png"))
        write_json_atomic(os.path.join(run_dir, FINISHED_MARKER), results)  # last: marks the run finished
    else:
        write_json_atomic(unique_path(os.path.join(run_dir, "eval_results.json")), results)
    shown = {k: round(v, 3) for k, v in results.items() if k.startswith("eval_") and isinstance(v, float) and "per_second" not in k and "runtime" not in k}
    print(f"{shown or 'no eval records'}; outputs in {run_dir}")


def plot_reliability_diagram(scores: Sequence[float], targets: Sequence[float], path: str, num_bins: int = 10) -> None:
    """Mean target against mean score in equal-width score bins (the ECE's bins), with the bin sizes below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from metrics import calibration_bins, expected_calibration_error

    counts, mean_scores, mean_targets = calibration_bins(scores, targets, num_bins)
    filled = counts > 0
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    top.plot(mean_scores[filled], mean_targets[filled], "o-", color="tab:blue", label="mean target per bin")
    top.set_ylabel("mean target")
    top.set_ylim(0, 1)
    top.set_title(f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}: "
                  f"ECE {expected_calibration_error(scores, targets, num_bins):.3f} ({len(scores)} records)")
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    bottom.bar(edges[:-1], counts, width=1.0 / num_bins, align="edge", color="tab:gray", edgecolor="white")
    bottom.set_xlabel("score (predicted P(yes))")
    bottom.set_ylabel("records")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# --- the shipped example: is a sentence about sport? ------------------------------------------------
# Soft targets as a larger model might give them: 0.9 when both the subject and the event are about
# sport, 0.5 when one is, 0.1 when neither is, plus noise. The example lives in mount/data/clf_example.json:
#     python -c "import clf; clf.write_example_data()"

EXAMPLE_SUBJECTS = (
    ["The striker", "The goalkeeper", "The coach", "The home team", "The marathon runner", "The tennis champion",
     "The cycling squad", "The captain"],
    ["The city council", "The bakery", "The museum", "The startup", "The orchestra", "The hospital", "The school board",
     "The bookshop"],
)  # sport: index 0
EXAMPLE_EVENTS = (
    ["scored twice in the final", "won the championship", "broke the course record", "was injured before the match",
     "lost the semi-final on penalties", "trained through the night before the race"],
    ["opened a new branch downtown", "announced higher prices", "hired a new director", "published its annual report",
     "was praised by critics", "delayed the renovation"],
)
EXAMPLE_OPENERS = ["", "Reports say that ", "On Monday, ", "According to local news, ", "Surprisingly, "]
EXAMPLE_ENDINGS = ["last week", "yesterday", "after months of talks", "despite the rain", "this morning"]
EXAMPLE_SIZES = {"train": 200, "eval": 50}


def example_data(seed: int = 0, sizes: dict[str, int] = EXAMPLE_SIZES, noise: float = 0.04) -> dict[str, list[Record]]:
    """Deterministic soft-labeled sentences (no sentence twice across the splits); records carry an `id`."""
    rng = random.Random(seed)
    seen: set[str] = set()
    data: dict[str, list[Record]] = {}
    for split, n in sizes.items():
        rows: list[Record] = []
        while len(rows) < n:
            sporty = rng.choice([(True, True), (True, True), (False, False), (False, False), (True, False), (False, True)])
            subject = rng.choice(EXAMPLE_SUBJECTS[0 if sporty[0] else 1])
            event = rng.choice(EXAMPLE_EVENTS[0 if sporty[1] else 1])
            opener = rng.choice(EXAMPLE_OPENERS)
            if opener:
                subject = subject[0].lower() + subject[1:]
            sentence = f"{opener}{subject} {event} {rng.choice(EXAMPLE_ENDINGS)}."
            if sentence in seen:
                continue
            seen.add(sentence)
            target = 0.1 + 0.4 * sum(sporty) + rng.gauss(0.0, noise)
            rows.append({"id": f"{split}-{len(rows)}", "input": sentence, "target": round(min(max(target, 0.0), 1.0), 2)})
        data[split] = rows
    return data


def write_example_data(path: str = os.path.join("mount", "data", "clf_example.json"), seed: int = 0) -> str:
    write_text_atomic(path, json.dumps(example_data(seed), indent=1) + "\n")
    return path


if __name__ == "__main__":
    run_main(main)
