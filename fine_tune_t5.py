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
from typing import TYPE_CHECKING, Any, NamedTuple

# Only light modules here: flags and data are checked before transformers and torch are imported.
from arguments import light_parse, parse_args
from controls import add_new_tokens, check_controls
from errors import UserError, run_main
from modeling import check_model_source
from outputs import RunLock, RunOutputs, check_not_model_dir, check_output_dir
from tasks import (MIXING_RATES, T5_MIXING_CAP, LocalSplits, get_task, load_task_splits, mixing_rates, mixture, read_local_splits, task_names,
                   tokenize_task_split)

if TYPE_CHECKING:
    from trainer_arguments import FineTuningArguments

logger = logging.getLogger("fine_tune_t5")

EVAL_MODES = ("auto", "score", "generate")


@dataclass
class TaskArguments:
    """Which task, where its data lives, and how it is tokenized and evaluated."""

    dataset_name: str = field(metadata={"help": "Task of the benchmark, e.g. sst2, mnli, boolq (see constants.DATASET_VALS); several, comma-separated (sst2,mnli,rte), or all: one model trained on their mixture (T5 sec. 3.5)."})
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
    mixing_rate: str = field(default="examples_proportional", metadata={"help": "Several tasks: each task's share of the training mixture: examples_proportional (to its size, capped at --mixing_cap), equal, or temperature (capped sizes to the power 1/--mixing_temperature), as T5 sec. 3.5.2."})
    mixing_cap: int = field(default=T5_MIXING_CAP, metadata={"help": "T5's K: a task counts at most this many examples in the mixing rates (default 2^19)."})
    mixing_temperature: float = field(default=2.0, metadata={"help": "T of --mixing_rate temperature (T5 tried 2, 4 and 8; 1 is examples-proportional)."})

    def __post_init__(self) -> None:
        if self.hp_search not in (None, "optuna"):
            raise UserError(f"--hp_search {self.hp_search}: the one backend is optuna")
        if self.hp_trials < 1:
            raise UserError(f"--hp_trials {self.hp_trials}: must be at least 1")
        if self.mixing_rate not in MIXING_RATES:
            raise UserError(f"--mixing_rate {self.mixing_rate}: must be one of {', '.join(MIXING_RATES)}")
        if self.mixing_cap < 1 or self.mixing_temperature <= 0:
            raise UserError(f"--mixing_cap {self.mixing_cap} / --mixing_temperature {self.mixing_temperature}: must be positive")
        if self.eval_mode not in EVAL_MODES:
            raise UserError(f"--eval_mode {self.eval_mode}: must be one of {', '.join(EVAL_MODES)}")
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 2:
                raise UserError(f"--{name} {getattr(self, name)}: must be at least 2")
        for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} {getattr(self, name)}: must be at least 1 (leave it out for every example)")


@dataclass
class ModelArguments:
    """The checkpoint to fine-tune."""

    model_name_or_path: str = field(metadata={"help": "Checkpoint (Hub name or local dir), e.g. google-t5/t5-small or runs/demo/pretrain."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: the checkpoint's)."})
    dropout_rate: float | None = field(default=None, metadata={"help": "Override the checkpoint's dropout (T5 fine-tuned with 0.1)."})


# The script's arguments; the last names its Trainer-arguments class (trainer_arguments.py).
ARGUMENTS = (TaskArguments, ModelArguments, "FineTuningArguments")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # Flags, tasks, paths and local data files first, before the heavy imports: a mistake is reported in about a second.
    early = light_parse(ARGUMENTS, argv)
    checked = check_inputs(*early) if early else None
    with RunLock(early[-1].output_dir or "trainer_output" if early else None):  # one run per output dir
        from transformers import DataCollatorForSeq2Seq, set_seed

        from modeling import fit_embeddings_to_tokenizer, load_model, load_tokenizer
        from runner import run_training, setup_logging

        task_args, model_args, training_args = parse_args(ARGUMENTS, argv, __doc__, early)
        plans = checked or check_inputs(task_args, model_args, training_args)
        setup_logging(training_args)

        # Data: each task's splits, tokenized.
        set_seed(training_args.seed)
        tokenizer = load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path,
                                   "--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path")
        overrides = {} if model_args.dropout_rate is None else {"dropout_rate": model_args.dropout_rate}
        model = load_model(model_args.model_name_or_path, **overrides)
        fit_embeddings_to_tokenizer(model, tokenizer)
        add_new_tokens(tokenizer, model, training_args.add_new_tokens)
        tasks = [load_task(plan, task_args, tokenizer, training_args) for plan in plans]
        train = training_set(tasks, task_args, training_args)
        log_examples(tokenizer, train if train is not None else next(iter(tasks[0].tokenized.values())))

        # Trainer: one task trains with its own evaluation (label scoring or generation; its metric picks the best
        # checkpoint); a mixture trains on the loss, validated on every task's first validation split together.
        from data_collators import PaddingCounter

        pad_multiple = 8 if training_args.bf16 and not training_args.use_cpu else None
        collator = PaddingCounter(
            DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=pad_multiple,
                                   padding="max_length" if task_args.pad_to_max_length else "longest",
                                   max_length=task_args.max_source_length if task_args.pad_to_max_length else None),
            tokenizer.pad_token_id,
        )
        user_generation_length = training_args.generation_max_length  # each task's own default otherwise (mixtures)
        if len(tasks) == 1:
            trainer = task_trainer(tasks[0], model, tokenizer, training_args, task_args, train, collator, user_generation_length)
        else:
            trainer = mixture_trainer(tasks, model, tokenizer, training_args, train, collator)

        # Train (after an optional hyper-parameter search), then evaluate and predict each task.
        results: dict[str, Any] = {"eval_mode": tasks[0].mode if len(tasks) == 1 else {t.entry["name"]: t.mode for t in tasks}}
        if task_args.hp_search and train is not None and tasks[0].evals:
            results["hp_search_best"] = search_hyperparameters(trainer, task_args.hp_trials, tasks[0].entry["name"])
        elif task_args.hp_search:
            raise UserError(f"--hp_search needs training and a validation split; task {tasks[0].entry['name']} run has "
                            f"{', '.join(tasks[0].splits)}")
        if train is not None:
            results.update(run_training(trainer))
            results["padded_token_fraction"] = collator.padded_fraction
            logger.info("padded-token fraction of the batches built: %.3f", collator.padded_fraction)
        predictions = {}
        for task in tasks:
            evaluator = trainer if len(tasks) == 1 else task_trainer(task, trainer.model, tokenizer, training_args, task_args, None,
                                                                     collator, user_generation_length)
            results.update(evaluate_task(evaluator, task, prefixed=len(tasks) > 1))
            if training_args.do_predict:
                predictions[task.entry["name"]] = {name: predict(evaluator, task.mode, task.entry, tokenizer, task.tokenized[name])
                                                   for name in task.entry["splits"].get("test", []) if name in task.tokenized}
        if len(tasks) > 1 and all(t.entry["name"].startswith("glue/") for t in tasks):
            from metrics import glue_average

            average = glue_average(results)
            if average is not None:
                results["glue_average"] = average

        # Outputs: only the main process writes.
        if trainer.is_world_process_zero():
            write_outputs(training_args.output_dir, tasks, predictions, trainer, results, (task_args, model_args, training_args), argv)
        return results


class Task:
    """One task of the run: its registry entry, evaluation mode, raw and tokenized splits (limited by the
    --max_*_samples flags) and validation splits."""

    def __init__(self, plan: TaskPlan, splits: dict[str, Any], tokenized: dict[str, Any]) -> None:
        self.entry, self.mode = plan.entry, plan.mode
        self.splits, self.tokenized = splits, tokenized
        self.evals = {name: tokenized[name] for name in plan.entry["splits"].get("validation", []) if name in tokenized}

    @property
    def train(self) -> Any:
        return self.tokenized.get(self.entry["splits"]["train"][0]) if "train" in self.entry["splits"] else None


def load_task(plan: TaskPlan, task_args: TaskArguments, tokenizer: Any, training_args: Any) -> Task:
    raw = load_task_splits(
        plan.entry, dataset_dir=task_args.dataset_dir, train_file=task_args.train_file,
        validation_file=task_args.validation_file, test_file=task_args.test_file, roles=plan.roles, local=plan.local,
    )
    with training_args.main_process_first(desc="tokenizing"):
        splits = {name: limit(dataset, sample_limit(name, plan.entry, task_args)) for name, dataset in raw.items()}
        tokenized = {name: tokenize_task_split(plan.entry, name, dataset, tokenizer, task_args.max_source_length,
                                               task_args.max_target_length, task_args.preprocessing_num_workers)
                     for name, dataset in splits.items()}
    return Task(plan, splits, tokenized)


def training_set(tasks: list[Task], task_args: TaskArguments, training_args: Any) -> Any:
    """The training examples: the task's train split, or the tasks' mixture (T5 sec. 3.5.2) of --max_steps x the
    global batch draws; None for an evaluation-only run."""
    if training_args.no_train:
        return None
    if len(tasks) == 1:
        return tasks[0].train
    trains = {t.entry["name"]: t.train.select_columns(["input_ids", "attention_mask", "labels"]) for t in tasks}
    rates = mixing_rates({name: len(d) for name, d in trains.items()}, task_args.mixing_rate, task_args.mixing_cap,
                         task_args.mixing_temperature)
    logger.info("mixture (%s): %s", task_args.mixing_rate, ", ".join(f"{name} {rate:.4f}" for name, rate in rates.items()))
    draws = training_args.max_steps * training_args.train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size
    return mixture(trains, rates, draws, training_args.seed)


def task_trainer(task: Task, model: Any, tokenizer: Any, training_args: Any, task_args: TaskArguments, train: Any,
                 collator: Any, generation_max_length: int | None = None) -> Any:
    """The Trainer of one task: its metric picks the best checkpoint; label scoring or generation (at most
    `generation_max_length` tokens, the user's --generation_max_length; default: the task's longest label + 1)."""
    if training_args.metric_for_best_model is None and task.evals:
        training_args.metric_for_best_model, training_args.greater_is_better = best_model_metric(task.entry, list(task.evals)), True
    if task.mode == "generate":  # decode labels greedily, at most one token longer than the longest label
        training_args.predict_with_generate = True
        training_args.generation_max_length = generation_max_length or generation_length(task.entry, tokenizer, task_args.max_target_length)
        training_args.generation_num_beams = training_args.generation_num_beams or 1
    else:
        training_args.predict_with_generate = False
    return build_trainer(task.mode, task.entry, model, tokenizer, training_args, task_args, train, task.evals, collator)


def mixture_trainer(tasks: list[Task], model: Any, tokenizer: Any, training_args: Any, train: Any, collator: Any) -> Any:
    """The Trainer of a mixture: the loss on the mixture, validated by the loss on every task's first validation
    split together (the tasks' metrics differ; each is computed after training, task by task)."""
    from datasets import concatenate_datasets

    from trainers import ToolkitTrainer

    firsts = [next(iter(t.evals.values())).select_columns(["input_ids", "attention_mask", "labels"]) for t in tasks if t.evals]
    if training_args.metric_for_best_model is None:
        training_args.metric_for_best_model, training_args.greater_is_better = "loss", False
    return ToolkitTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=concatenate_datasets(firsts) if firsts else None,
                          data_collator=collator, processing_class=tokenizer)


def evaluate_task(trainer: Any, task: Task, prefixed: bool) -> dict[str, Any]:
    """Every validation split's metrics under `eval[_<split>]_<metric>` (in a mixture `eval_<task key>_<metric>`) and
    `<task key>/<metric>`, the keys metrics.glue_average reads."""
    from metrics import task_metric_key  # results keys unique across benchmarks

    results: dict[str, Any] = {}
    for name, dataset in task.evals.items():
        key = task_metric_key(task.entry, name)
        prefix = f"eval_{key}" if prefixed else "eval" if len(task.evals) == 1 else f"eval_{name}"
        metrics = trainer.evaluate(dataset, metric_key_prefix=prefix)
        results.update(metrics)
        results.update({f"{key}/{m}": metrics[f"{prefix}_{m}"] for m in task.entry["metric_names"]})
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


class TaskPlan(NamedTuple):
    """What the early checks found for one task: its entry, evaluation mode, split roles and local splits."""

    entry: Any
    mode: str
    roles: list[str]
    local: LocalSplits


def check_inputs(task_args: TaskArguments, model_args: ModelArguments, run: Any) -> list[TaskPlan]:
    """One `TaskPlan` per task of --dataset_name: the checks that need no heavy import.

    `run` holds the Trainer flags: `EarlyTrainingFlags` before the heavy imports, else the full arguments.
    """
    names = task_names(task_args.benchmark, task_args.dataset_name)
    entries = [get_task(task_args.benchmark, name) for name in names]
    if len(entries) > 1:
        check_mixture(task_args, run, names)
    check_output_dir(run.output_dir or "trainer_output", run.overwrite_output_dir, run.no_train or bool(run.resume_from_checkpoint))
    check_controls(run, model=model_args.model_name_or_path)
    plans = []
    for entry in entries:
        mode = resolve_eval_mode(entry, task_args.eval_mode)
        roles = [r for r in ("train", "validation", "test") if r in entry["splits"] and wanted(r, run)]
        if not roles:
            raise UserError(f"task {entry['name']}: nothing to do; it has only {', '.join(entry['splits'])} splits (use --do_predict)")
        if len(entries) > 1 and not run.no_train and "train" not in roles:
            raise UserError(f"--dataset_name {task_args.dataset_name}: task {entry['name']} has no training data to mix; "
                            f"leave it out (or use --dataset_name all: the tasks with training data)")
        local = read_local_splits(entry, dataset_dir=task_args.dataset_dir, train_file=task_args.train_file,
                                  validation_file=task_args.validation_file, test_file=task_args.test_file, roles=roles)
        plans.append(TaskPlan(entry, mode, roles, local))
    check_model_source(model_args.model_name_or_path, "--model_name_or_path", needs_tokenizer=not model_args.tokenizer_name)
    if model_args.tokenizer_name:
        check_model_source(model_args.tokenizer_name, "--tokenizer_name", needs_config=False, needs_tokenizer=True)
    if not run.no_train:
        check_not_model_dir(run.output_dir or "trainer_output", model_args.model_name_or_path, "--output_dir", "--model_name_or_path")
    return plans


def check_mixture(task_args: TaskArguments, run: Any, names: list[str]) -> None:
    """Several tasks: data from --dataset_dir or the Hub (one file flag cannot serve them all), --max_steps for
    training (the mixture repeats each task and has no epochs), no --hp_search."""
    for flag in ("train_file", "validation_file", "test_file"):
        if getattr(task_args, flag):
            raise UserError(f"--{flag} with several tasks ({', '.join(names)}): give each task's data in --dataset_dir (or the Hub's)")
    if not run.no_train and run.max_steps <= 0:
        raise UserError(f"--dataset_name {task_args.dataset_name}: a mixture of tasks repeats each task as T5 does, so it has no "
                        "epochs; give --max_steps")
    if task_args.hp_search:
        raise UserError("--hp_search with several tasks: search on one task, then train the mixture with its values")


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


def write_outputs(output_dir: str, tasks: list[Task], predictions: dict[str, dict[str, list[str]]], trainer: Any,
                  results: dict[str, Any], arg_objects: tuple, argv: list[str] | None) -> None:
    """Predictions and leaderboard files of each task, then the finished-run tail (`outputs.RunOutputs`).

    Predictions go to `predictions_<split>.jsonl` (a mixture: `predictions_<task>_<split>.jsonl`). An
    evaluation-only run (--no_train) may sit beside a finished one: its files take new names (`SST-2-1.tsv`,
    `eval_results.json`) and replace none.
    """
    from tasks import submission_value

    outputs = RunOutputs(output_dir, evaluation_only=arg_objects[-1].no_train)
    for task in tasks:
        entry = task.entry
        for split, predicted in predictions.get(entry["name"], {}).items():
            rows = [{"idx": int(idx), "prediction": p} for idx, p in zip(task.splits[split]["idx"], predicted)]
            stem = split if len(tasks) == 1 else f"{entry['name'].split('/')[1]}_{split}"
            outputs.write_records(f"predictions_{stem}.jsonl", rows)
            name = entry["submission_file"].get(split)
            if name and name.endswith(".tsv"):
                outputs.write_records(name, [{"index": r["idx"], "prediction": submission_value(entry, r["prediction"])} for r in rows])
            elif name:  # SuperGLUE leaderboard files are JSON lines
                outputs.write_records(name, [{"idx": r["idx"], "label": submission_value(entry, r["prediction"])} for r in rows])
            results[f"predict_{stem}_examples"] = len(rows)
    outputs.finish(results, trainer.state.log_history, arg_objects, argv, script="fine_tune_t5.py")
    shown = {k: round(v, 2) for k, v in results.items() if "/" in k or k == "glue_average"}
    names = ", ".join(t.entry["name"] for t in tasks)
    print(f"{names} (eval_mode {results['eval_mode']}): {shown or 'no validation split'}; outputs in {output_dir}")


if __name__ == "__main__":
    run_main(main)
