"""Fine-tune T5 on a registered task (GLUE, SuperGLUE, the offline toy task) in T5's text-to-text format.

    python fine_tune_t5.py --benchmark glue --dataset_name sst2 --model_name_or_path google-t5/t5-small \
        --output_dir runs/sst2 --eval_strategy epoch --save_strategy epoch --num_train_epochs 3

Tasks come from `constants.DATASET_VALS[benchmark][task]`; no code here names a task. Evaluation
scores each label (rank classification, the default for classification tasks) or generates
(`--eval_mode generate`, always for regression); `--do_predict` writes predictions for the test
split and, for GLUE, the leaderboard submission files. Defaults follow T5's fine-tuning: Adafactor,
constant learning rate 1e-3 (Raffel et al. 2020, sec. 3.1.3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# Only light modules here: flags and data are checked before transformers and torch are imported.
from arguments import light_parse, parse_args
from controls import add_new_tokens, check_controls
from errors import UserError, run_main
from modeling import check_model_source
from outputs import RunLock, RunOutputs, check_not_model_dir, check_output_dir
from tasks import LocalSplits, get_task, load_task_splits, read_local_splits, tokenize_task_split

if TYPE_CHECKING:
    from trainer_arguments import FineTuningArguments

logger = logging.getLogger("fine_tune_t5")

EVAL_MODES = ("auto", "score", "generate")


@dataclass
class TaskArguments:
    """Which task, where its data lives, and how it is tokenized and evaluated."""

    dataset_name: str = field(metadata={"help": "Task of the benchmark, e.g. sst2, mnli, boolq (see constants.DATASET_VALS)."})
    benchmark: str = field(default="glue", metadata={"help": "Benchmark of the task: glue, ax, super_glue, toy."})
    dataset_dir: str | None = field(default=None, metadata={"help": "Local copy: DIR/<task>/*.parquet (Hub layout) or the original files (DIR/SST-2/train.tsv ...)."})
    train_file: str | None = field(default=None, metadata={"help": "Training file (csv, tsv, json, jsonl, parquet) with the task's columns."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation file, same kinds."})
    test_file: str | None = field(default=None, metadata={"help": "Test file for --do_predict; labels may be absent."})
    max_source_length: int = field(default=512, metadata={"help": "Input tokens; longer inputs are truncated (and counted)."})
    max_target_length: int = field(default=128, metadata={"help": "Target tokens; longer targets are truncated (and counted)."})
    eval_mode: str = field(default="auto", metadata={"help": "score (rank the labels), generate, or auto: score for classification, generate for regression."})
    length_normalize: bool = field(default=False, metadata={"help": "Label scoring: divide each label's log-probability by its token count."})
    pad_to_max_length: bool = field(default=False, metadata={"help": "Pad every batch to the max lengths instead of dynamically."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many examples per validation split."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep only this many examples per test split."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenizing (datasets.map num_proc)."})
    hp_search: str | None = field(default=None, metadata={"help": "optuna: a study (studies.py) over learning_rate and lr_scheduler_type, offline (no W&B server), maximising the task's metric; writes optimization_trials.csv.gz, optimization_plots.pdf and the study's journal (a rerun resumes it), then trains with the best values."})
    hp_trials: int = field(default=8, metadata={"help": "Trials of --hp_search (the study's finished trials: a rerun adds the missing ones)."})

    def __post_init__(self) -> None:
        if self.hp_search not in (None, "optuna"):
            raise UserError(f"--hp_search {self.hp_search}: the one backend is optuna")
        if self.hp_trials < 1:
            raise UserError(f"--hp_trials {self.hp_trials}: must be at least 1")
        if self.eval_mode not in EVAL_MODES:
            raise UserError(f"--eval_mode {self.eval_mode}: must be one of {', '.join(EVAL_MODES)}")
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 2:
                raise UserError(f"--{name} {getattr(self, name)}: must be at least 2")


@dataclass
class ModelArguments:
    """The checkpoint to fine-tune."""

    model_name_or_path: str = field(metadata={"help": "Checkpoint (Hub name or local dir), e.g. google-t5/t5-small or runs/demo/pretrain."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: the checkpoint's)."})
    dropout_rate: float | None = field(default=None, metadata={"help": "Override the checkpoint's dropout (T5 fine-tuned with 0.1)."})


# The script's arguments; the last names its Trainer-arguments class (trainer_arguments.py).
ARGUMENTS = (TaskArguments, ModelArguments, "FineTuningArguments")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # Flags, task, paths and local data files first, before the heavy imports: a mistake is reported in about a second.
    early = light_parse(ARGUMENTS, argv)
    checked = check_inputs(*early) if early else None
    with RunLock(early[-1].output_dir or "trainer_output" if early else None):  # one run per output dir
        from transformers import DataCollatorForSeq2Seq, set_seed

        from modeling import fit_embeddings_to_tokenizer, load_model, load_tokenizer
        from runner import run_training, setup_logging

        task_args, model_args, training_args = parse_args(ARGUMENTS, argv, __doc__, early)
        entry, mode, roles, local = checked or check_inputs(task_args, model_args, training_args)
        setup_logging(training_args)

        # Data.
        raw = load_task_splits(
            entry, dataset_dir=task_args.dataset_dir, train_file=task_args.train_file,
            validation_file=task_args.validation_file, test_file=task_args.test_file, roles=roles, local=local,
        )
        set_seed(training_args.seed)
        tokenizer = load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path,
                                   "--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path")
        overrides = {} if model_args.dropout_rate is None else {"dropout_rate": model_args.dropout_rate}
        model = load_model(model_args.model_name_or_path, **overrides)
        fit_embeddings_to_tokenizer(model, tokenizer)
        add_new_tokens(tokenizer, model, training_args.add_new_tokens)

        with training_args.main_process_first(desc="tokenizing"):
            splits = {name: limit(dataset, sample_limit(name, entry, task_args)) for name, dataset in raw.items()}
            tokenized = {name: tokenize_task_split(entry, name, dataset, tokenizer, task_args.max_source_length, task_args.max_target_length,
                                                   task_args.preprocessing_num_workers) for name, dataset in splits.items()}
        train = tokenized.get(entry["splits"]["train"][0]) if "train" in roles else None
        evals = {name: tokenized[name] for name in entry["splits"].get("validation", []) if name in tokenized}
        log_examples(tokenizer, train if train is not None else next(iter(tokenized.values())))

        # Trainer: label scoring or generation; the task's metric picks the best checkpoint.
        from data_collators import PaddingCounter

        pad_multiple = 8 if training_args.bf16 and not training_args.use_cpu else None
        collator = PaddingCounter(
            DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=pad_multiple,
                                   padding="max_length" if task_args.pad_to_max_length else "longest",
                                   max_length=task_args.max_source_length if task_args.pad_to_max_length else None),
            tokenizer.pad_token_id,
        )
        if training_args.metric_for_best_model is None and evals:
            training_args.metric_for_best_model, training_args.greater_is_better = best_model_metric(entry, list(evals)), True
        if mode == "generate":  # decode labels greedily, at most one token longer than the longest label
            training_args.predict_with_generate = True
            training_args.generation_max_length = training_args.generation_max_length or generation_length(entry, tokenizer, task_args.max_target_length)
            training_args.generation_num_beams = training_args.generation_num_beams or 1
        trainer = build_trainer(mode, entry, model, tokenizer, training_args, task_args, train, evals, collator)

        # Train (after an optional hyper-parameter search), evaluate, predict.
        from metrics import task_metric_key  # results keys unique across benchmarks, as metrics.glue_average reads them

        results: dict[str, Any] = {"eval_mode": mode}  # in every results file: T5's published numbers come from generate
        if task_args.hp_search and train is not None and evals:
            results["hp_search_best"] = search_hyperparameters(trainer, task_args.hp_trials, entry["name"])
        elif task_args.hp_search:
            raise UserError(f"--hp_search needs training and a validation split; task {entry['name']} run has {', '.join(raw)}")
        if train is not None:
            results.update(run_training(trainer))
            results["padded_token_fraction"] = collator.padded_fraction
            logger.info("padded-token fraction of the batches built: %.3f", collator.padded_fraction)
        for name, dataset in evals.items():
            prefix = "eval" if len(evals) == 1 else f"eval_{name}"
            metrics = trainer.evaluate(dataset, metric_key_prefix=prefix)
            results.update(metrics)
            results.update({f"{task_metric_key(entry, name)}/{m}": metrics[f"{prefix}_{m}"] for m in entry["metric_names"]})
        predictions = {}
        if training_args.do_predict:
            for name in entry["splits"].get("test", []):
                if name in tokenized:
                    predictions[name] = predict(trainer, mode, entry, tokenizer, tokenized[name])

        # Outputs: only the main process writes.
        if trainer.is_world_process_zero():
            write_outputs(training_args.output_dir, entry, splits, predictions, trainer, results,
                          (task_args, model_args, training_args), argv)
        return results


# The search space of sweeps/glue_*.yaml, for runs without a W&B server (studies.py's `params`).
HP_SPACE = {
    "learning_rate": {"values": [1e-4, 3e-3], "suggest_kwargs": {"log": True}},
    "lr_scheduler_type": {"values": ["constant_with_warmup", "linear", "cosine", "inverse_sqrt"]},
}


def search_hyperparameters(trainer: Any, trials: int, task_name: str) -> dict[str, Any]:
    """--hp_search optuna: a study (studies.py) over HP_SPACE with `trials` trials, objective the task's
    metric_for_best_model, maximised; the study's other settings are the toolkit's defaults (GP sampler, patient
    Wilcoxon pruner). Each trial trains a fresh copy of the model. Writes optimization_trials.csv.gz,
    optimization_plots.pdf and the study's journal (a rerun into the same output dir resumes the study) to the
    output dir, then sets the best values on the arguments: the final model trains with them, from a fresh copy.
    """
    from studies import run_study, set_arguments, study_settings, trainer_argument_names

    args = trainer.args
    key = args.metric_for_best_model if args.metric_for_best_model.startswith("eval_") else f"eval_{args.metric_for_best_model}"
    settings = study_settings(HP_SPACE, None, {"n_trials": trials}, trainer_argument_names(ARGUMENTS[-1]),
                              direction="maximize" if args.greater_is_better else "minimize")
    result = run_study(trainer, settings, key, args.output_dir, f"fine_tune_t5-{task_name.replace('/', '-')}")
    if result.best_value is None:
        raise UserError(f"--hp_search: no trial of study {result.study_name} completed ({result.counts}); see the log")
    logger.info("hp search: best %s = %s with %s", key, result.best_value, result.best_params)
    set_arguments(args, result.best_params)
    return {"objective": result.best_value, **result.best_params}


def check_inputs(task_args: TaskArguments, model_args: ModelArguments, run: Any) -> tuple[Any, str, list[str], LocalSplits]:
    """(task entry, eval mode, split roles, local splits): the checks that need no heavy import.

    `run` holds the Trainer flags: `EarlyTrainingFlags` before the heavy imports, else the full arguments.
    """
    entry = get_task(task_args.benchmark, task_args.dataset_name)
    check_output_dir(run.output_dir or "trainer_output", run.overwrite_output_dir, run.no_train or bool(run.resume_from_checkpoint))
    check_controls(run, model=model_args.model_name_or_path)
    mode = resolve_eval_mode(entry, task_args.eval_mode)
    roles = [r for r in ("train", "validation", "test") if r in entry["splits"] and wanted(r, run)]
    if not roles:
        raise UserError(f"task {entry['name']}: nothing to do; it has only {', '.join(entry['splits'])} splits (use --do_predict)")
    check_model_source(model_args.model_name_or_path, "--model_name_or_path", needs_tokenizer=not model_args.tokenizer_name)
    if model_args.tokenizer_name:
        check_model_source(model_args.tokenizer_name, "--tokenizer_name", needs_config=False, needs_tokenizer=True)
    if not run.no_train:
        check_not_model_dir(run.output_dir or "trainer_output", model_args.model_name_or_path, "--output_dir", "--model_name_or_path")
    local = read_local_splits(entry, dataset_dir=task_args.dataset_dir, train_file=task_args.train_file,
                              validation_file=task_args.validation_file, test_file=task_args.test_file, roles=roles)
    return entry, mode, roles, local


def resolve_eval_mode(entry: Any, mode: str) -> str:
    """--eval_mode auto -> the entry's `eval_kind`: label_scoring -> score, generation/regression -> generate.

    Score (rank classification) is the default for GLUE/SuperGLUE classification; T5's published numbers
    come from generate (greedy decoding, with T5's rules for strings outside the label set).
    """
    kind = entry["eval_kind"]
    if mode == "auto":
        return "score" if kind == "label_scoring" else "generate"
    if mode == "score" and not entry["labels"]:
        raise UserError(f"--eval_mode score: task {entry['name']} is a regression task with no labels to rank; use generate")
    return mode


def wanted(role: str, training_args: Any) -> bool:
    return {"train": not training_args.no_train, "validation": True, "test": training_args.do_predict}[role]


def sample_limit(split: str, entry: Any, task_args: TaskArguments) -> int | None:
    role = next(r for r, names in entry["splits"].items() if split in names)
    return {"train": task_args.max_train_samples, "validation": task_args.max_eval_samples, "test": task_args.max_predict_samples}[role]


def limit(dataset: Any, count: int | None) -> Any:
    return dataset if count is None else dataset.select(range(min(count, len(dataset))))


def log_examples(tokenizer: Any, dataset: Any, count: int = 2) -> None:
    """Two decoded (input, target) pairs: most format bugs show up here."""
    for i in range(min(count, len(dataset))):
        row = dataset[i]
        target = tokenizer.decode(row["labels"]) if "labels" in row else "(no label)"
        logger.info("example %d input:  %s", i, tokenizer.decode(row["input_ids"]))
        logger.info("example %d target: %s", i, target)


def best_model_metric(entry: Any, eval_splits: list[str]) -> str:
    """The task's metric_to_optimize (the first validation split's), as metric_for_best_model names it."""
    metric = entry["metric_to_optimize"]
    return metric if len(eval_splits) == 1 else f"{eval_splits[0]}_{metric}"


def generation_length(entry: Any, tokenizer: Any, max_target_length: int) -> int:
    """Tokens to generate: the longest label's (with `</s>`) plus one, at most --max_target_length."""
    longest = max((len(tokenizer(label)["input_ids"]) for label in entry["labels"]), default=max_target_length)
    return min(longest + 1, max_target_length)


def build_trainer(mode: str, entry: Any, model: Any, tokenizer: Any, training_args: FineTuningArguments,
                  task_args: TaskArguments, train: Any, evals: dict[str, Any], collator: Any) -> Any:
    from metrics import build_compute_metrics, build_scoring_compute_metrics
    from scoring import label_token_ids
    from trainers import LabelScoringTrainer, ToolkitTrainer

    eval_dataset = next(iter(evals.values())) if len(evals) == 1 else (evals or None)
    common = dict(model=model, args=training_args, train_dataset=train, eval_dataset=eval_dataset,
                  data_collator=collator, processing_class=tokenizer)
    if mode == "score":
        return LabelScoringTrainer(**common, compute_metrics=build_scoring_compute_metrics(entry, tokenizer),
                                   candidates=label_token_ids(tokenizer, entry["labels"]),
                                   length_normalize=task_args.length_normalize)
    return ToolkitTrainer(**common, compute_metrics=build_compute_metrics(entry, tokenizer))


def predict(trainer: Any, mode: str, entry: Any, tokenizer: Any, dataset: Any) -> list[str]:
    """Predicted target strings for every example of a split, in order."""
    import numpy as np

    from metrics import decode_ids

    columns = [c for c in dataset.column_names if c != "labels"]
    output = trainer.predict(dataset.select_columns(columns), metric_key_prefix="predict")
    if mode == "score":
        return [entry["labels"][i] for i in np.asarray(output.predictions).argmax(-1)]
    predictions = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return decode_ids(tokenizer, predictions)


def write_outputs(output_dir: str, entry: Any, splits: dict[str, Any], predictions: dict[str, list[str]],
                  trainer: Any, results: dict[str, Any], arg_objects: tuple, argv: list[str] | None) -> None:
    """Predictions, leaderboard files, then the finished-run tail (`outputs.RunOutputs`).

    An evaluation-only run (--no_train) may sit beside a finished one: its files take new names
    (`SST-2-1.tsv`, `eval_results.json`) and replace none.
    """
    from tasks import submission_value

    outputs = RunOutputs(output_dir, evaluation_only=arg_objects[-1].no_train)
    for split, predicted in predictions.items():
        rows = [{"idx": int(idx), "prediction": p} for idx, p in zip(splits[split]["idx"], predicted)]
        outputs.write_records(f"predictions_{split}.jsonl", rows)
        name = entry["submission_file"].get(split)
        if name and name.endswith(".tsv"):
            outputs.write_records(name, [{"index": r["idx"], "prediction": submission_value(entry, r["prediction"])} for r in rows])
        elif name:  # SuperGLUE leaderboard files are JSON lines
            outputs.write_records(name, [{"idx": r["idx"], "label": submission_value(entry, r["prediction"])} for r in rows])
        results[f"predict_{split}_examples"] = len(rows)
    outputs.finish(results, trainer.state.log_history, arg_objects, argv, script="fine_tune_t5.py")
    shown = {k: round(v, 2) for k, v in results.items() if "/" in k}
    print(f"{entry['name']} (eval_mode {results['eval_mode']}): {shown or 'no validation split'}; outputs in {output_dir}")


if __name__ == "__main__":
    run_main(main)
