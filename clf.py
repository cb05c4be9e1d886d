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
(is a sentence about sport?), is written by `examples.write_clf_example`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

# Only light modules here: flags and data are checked before transformers and torch are imported.
from arguments import light_parse, parse_args
from controls import add_new_tokens, check_controls
from errors import UserError, run_main
from modeling import check_model_source, single_token_id
from outputs import RunLock, RunOutputs, check_not_model_dir, check_output_dir
from records import (
    Record,
    default_run_name,
    is_probability,
    is_string,
    load_run_records,
    model_folder_or_name,
    preempted_run_name,
    run_path,
)

if TYPE_CHECKING:
    from scoring import YesNoHead

logger = logging.getLogger("clf")

SOFT_LABELED = {"input": is_string, "target": is_probability}  # train and eval records
UNLABELED = {"input": is_string}  # --predict_file records


@dataclass
class ClfDataArguments:
    """Where the model, the data and the results live (the `mount/` layout), and the yes/no question."""

    model_pretrain_name: str = field(metadata={"help": "Model to start from: a folder under <mount_dir>/models if there is one, else a local path or Hub name (e.g. google/flan-t5-xl)."})
    data_name: str | None = field(default=None, metadata={"aliases": ["--data"], "help": "Data file <mount_dir>/data/<data_name>.json holding 'train' and 'eval' lists of {\"input\", \"target\"} records."})
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


# The script's arguments; the last names its Trainer-arguments class (trainer_arguments.py).
ARGUMENTS = (ClfDataArguments, "MountRunArguments")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # Flags, paths and records first, before the heavy imports: a mistake is reported in about a second,
    # before anything is written or logged (a mistake is one line on stderr).
    early = light_parse(ARGUMENTS, argv)
    checked = check_inputs(*early) if early else None
    with RunLock(checked[1] if checked else None):  # one run per run dir
        from transformers import set_seed

        from modeling import fit_embeddings_to_tokenizer, load_model, load_tokenizer
        from runner import rank_zero_value, run_training, setup_logging
        from scoring import YesNoHead

        data_args, training_args = parse_args(ARGUMENTS, argv, __doc__, early)
        model_dir, run_dir, records = checked or check_inputs(data_args, training_args)
        run_dir = training_args.output_dir = rank_zero_value(training_args, run_dir)  # one run dir for all processes

        tokenizer = load_tokenizer(model_dir, "--model_pretrain_name")
        head = YesNoHead(single_token_id(tokenizer, data_args.yes_token, "--yes_token"),
                         single_token_id(tokenizer, data_args.no_token, "--no_token"))

        # Model.
        setup_logging(training_args)
        if training_args.resume_from_checkpoint == "auto" and not data_args.training_run_name:  # see check_inputs
            logger.info("resume auto without --training_run_name: run dir %s (the newest preempted run of this data and "
                        "model, else a new one)", run_dir)
        set_seed(training_args.seed)
        model = load_model(model_dir, "--model_pretrain_name")
        fit_embeddings_to_tokenizer(model, tokenizer)
        add_new_tokens(tokenizer, model, training_args.add_new_tokens)

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
    check_model_source(model_dir, "--model_pretrain_name", needs_tokenizer=True)
    resumed = preempted_run_name(data_args.mount_dir, data_label(data_args), model_dir) if run.resume_from_checkpoint == "auto" else None
    run_dir = run_path(data_args.mount_dir, data_args.training_run_name or resumed or default_run_name(data_label(data_args), model_dir))
    check_output_dir(run_dir, run.overwrite_output_dir, run.no_train or bool(run.resume_from_checkpoint))
    check_controls(run, model=model_dir)
    if not run.no_train:
        check_not_model_dir(run_dir, model_dir, "--training_run_name", "--model_pretrain_name")
    return model_dir, run_dir, load_records(data_args, train=not run.no_train)


def load_records(data_args: ClfDataArguments, train: bool) -> dict[str, list[Record]]:
    """Checked records: train and eval (input and soft target), and predict (input) when a file is given."""
    return load_run_records(data_args.mount_dir, data_args.data_name, data_args.train_file, data_args.eval_file,
                            data_args.predict_file, train, SOFT_LABELED, UNLABELED)


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


def build_trainer(model: Any, tokenizer: Any, training_args: Any, head: YesNoHead,
                  train: list[dict[str, Any]] | None, eval_features: list[dict[str, Any]] | None) -> Any:
    from data_collators import YesNoCollator
    from metrics import compute_soft_label_metrics
    from trainers import ToolkitTrainer

    return ToolkitTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=eval_features,
        data_collator=YesNoCollator(tokenizer.pad_token_id, model.config.decoder_start_token_id),
        processing_class=tokenizer, compute_loss_func=head.loss, kl_first_step=True,
        preprocess_logits_for_metrics=head.scores, compute_metrics=compute_soft_label_metrics,
    )


def write_outputs(run_dir: str, records: dict[str, list[Record]], scores: dict[str, list[float]], trainer: Any,
                  results: dict[str, Any], arg_objects: tuple, argv: list[str] | None) -> None:
    """Predictions (each record plus `score`), the reliability diagram, then the finished-run tail
    (`outputs.RunOutputs`: a run without training may sit beside a finished one, under new names)."""
    from plots import plot_reliability_diagram

    outputs = RunOutputs(run_dir, evaluation_only=arg_objects[-1].no_train)
    for split, split_scores in scores.items():
        path = outputs.write_records(f"predictions_{split}.jsonl", [{"score": score} for score in split_scores], carry=records[split])
        results[f"{split}_predictions_file"] = os.path.basename(path)
    if "eval" in scores:
        plot_reliability_diagram(scores["eval"], [r["target"] for r in records["eval"]], outputs.path("reliability_diagram.png"))
    outputs.finish(results, trainer.state.log_history, arg_objects, argv, script="clf.py")
    shown = {k: round(v, 3) for k, v in results.items() if k.startswith("eval_") and isinstance(v, float) and "per_second" not in k and "runtime" not in k}
    print(f"{shown or 'no eval records'}; outputs in {run_dir}")


if __name__ == "__main__":
    run_main(main)
