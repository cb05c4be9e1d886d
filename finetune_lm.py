"""Fine-tune any Hugging Face language model (causal, masked or T5) on text, and write how surprised it is
by every token of test sentences, with the sentences' metadata on every row.

    python finetune_lm.py --model_name_or_path gpt2 --train_file data/x.txt.gz --validation_file data/x_dev.txt.gz \
        --test_file data/stimuli.txt.gz --epochs 3 --lr 2e-5

Reproduces the original `finetune-lm` toolkit (../shared/reference/finetune-lm.md in this workplace):
its data formats (`.txt.gz` lines or `.json.gz` {"text", "labels"} lines, each with a
`<stem>_metadata.json.gz` beside it), its preprocessing functions (lm_preprocessing.py) chosen per split
in a YAML config (`--config`) or with its dotted flags (`--data_preprocessing_fn.train mask_words`), its
flag names (--epochs, --lr, --max_length, ...), and its outputs: `<prefix>-test_results.csv.gz` (one row per
scored token, its columns), `metrics.csv.gz`, `loss_curves.pdf`, `config.txt`, the best model in `model/`
and the tokenizer in `tokenizer/`. Surprisal is in bits (-log2 p), as in lm-zoo and minicons; see surprisal.py.
The model type (--model_task lm | mlm | seq2seq) is read from the checkpoint's config when not given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Optional

# Only light modules here: flags and data are checked before transformers and torch are imported.
from arguments import light_parse, parse_args
from controls import add_new_tokens, check_controls
from errors import UserError, preemption_requested, run_main
from lm_data import Preprocessing, TextDataset, dataset_name, preprocessing_settings, read_text_dataset
from modeling import MODEL_TASKS, check_model_source, local_model_task
from outputs import (FINISHED_MARKER, PREEMPTED_EXIT_CODE, RunLock, RunOutputs, check_not_model_dir, check_output_dir, write_json_atomic,
                     write_records, write_text_atomic)
from studies import StudyArguments, StudySettings, study_settings, trainer_argument_names

logger = logging.getLogger("finetune_lm")

TEST_CHUNK_ROWS = 1024  # model rows per resumable chunk of test scoring
ORIGINAL_TERM_NAMES = {"kl_loss": "KLBaselineLoss"}  # metrics.csv.gz columns, as the original names its loss classes


@dataclass
class LMModelArguments:
    """The model (the original's ModelArguments)."""

    model_name_or_path: str = field(metadata={"help": "Checkpoint: a Hub name (gpt2, bert-base-uncased, google-t5/t5-small) or a local dir."})
    model_task: Optional[str] = field(default=None, metadata={"help": "lm (causal), mlm (masked) or seq2seq (T5); default: read from the checkpoint's config."})
    config_name: Optional[str] = field(default=None, metadata={"help": "Config to load the weights with (default: the checkpoint's)."})
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Tokenizer (default: the checkpoint's)."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Hugging Face cache dir (default: HF's)."})
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Kept for the original's command lines; word alignment needs the fast tokenizer, so False is refused."})
    model_revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit)."})
    token: Optional[str] = field(default=None, metadata={"help": "Hugging Face token, or a file holding it (never saved or logged)."})
    use_gpu: bool = field(default=False, metadata={"help": "Kept for the original's command lines: devices are chosen by torch / accelerate (a GPU when there is one)."})

    def __post_init__(self) -> None:
        if self.model_task is not None and self.model_task not in MODEL_TASKS:
            raise UserError(f"--model_task {self.model_task}: must be one of {', '.join(MODEL_TASKS)} (causal, masked, encoder-decoder)")
        if not self.use_fast_tokenizer:
            raise UserError("--use_fast_tokenizer False: tokens are aligned with words through the fast tokenizer's offsets; drop the flag")


@dataclass
class LMDataArguments:
    """The data, its preprocessing and the test outputs (the original's DataTrainingArguments)."""

    train_file: Optional[str] = field(default=None, metadata={"help": "Training examples: .txt(.gz) lines or .jsonl / .jsonl.gz / .json.gz {\"text\", \"labels\"} lines."})
    validation_file: Optional[str] = field(default=None, metadata={"help": "Validation examples (same formats): evaluated every epoch; the best model is kept."})
    test_file: Optional[list[str]] = field(default=None, metadata={"help": "Test file(s) to score per token; one results file, a dataset_name column naming each."})
    max_length: int = field(default=1024, metadata={"help": "Tokens per example (special tokens included); longer examples are cut."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N training examples."})
    max_validation_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N validation examples."})
    max_test_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N examples of each test file."})
    data_preprocessing_fn: Optional[str] = field(default=None, metadata={"help": "Per split: a function of lm_preprocessing.FUNCTIONS (identity, mask_random_tokens, mask_random_spans, mask_truerandom_spans, expand_with_masks, mask_word_tokens, mask_words, remove_non_mask_tokens_from_labels): a JSON mapping {train: ..., validation: ..., test: ...}, --data_preprocessing_fn.test NAME, or one name for all. Default identity."})
    data_preprocessing_fn_kwargs: Optional[str] = field(default=None, metadata={"help": "Per split: the function's keyword arguments (JSON mapping per split, or --data_preprocessing_fn_kwargs.train.mask_prop 0.15)."})
    data_preprocessing_fn_strategy: Optional[str] = field(default=None, metadata={"help": "Per split: once (before training) or per_batch (new masks every batch). Default once."})
    test_output_file_prefix: Optional[str] = field(default=None, metadata={"help": "Results file prefix (default: the model name with / -> -)."})
    epoch_surprisals: bool = field(default=False, metadata={"help": "Also write the validation set's per-token surprisals after every epoch into metrics.csv.gz."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Kept for the original's command lines: nothing is cached."})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={"help": "Kept for the original's command lines: tokenizing runs in the fast tokenizer's threads."})
    pad_to_max_length: bool = field(default=False, metadata={"help": "Kept for the original's command lines: batches are padded to their longest row."})
    ignore_pad_for_token_loss: bool = field(default=True, metadata={"help": "Kept for the original's command lines: padding never counts in the loss."})
    save_tmp_test_files: bool = field(default=False, metadata={"help": "Kept for the original's command lines: test scoring always keeps finished chunks until the results file is written."})

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise UserError(f"--max_length {self.max_length}: must be at least 2")
        for name in ("max_train_samples", "max_validation_samples", "max_test_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} {getattr(self, name)}: must be at least 1")


@dataclass
class LMOptimizationArguments(StudyArguments):
    """An optuna study instead of training and testing (the original's OptimizationArguments; studies.py)."""

    do_optimize: bool = field(default=False, metadata={"help": "Run an optuna study over --params instead of training and testing: each trial trains on --train_file and is scored by its validation loss (minimised); test files are ignored. Outputs: optimization_trials.csv.gz, optimization_plots.pdf, the study's journal, config.txt."})


# The script's arguments; the last names its Trainer-arguments class (trainer_arguments.py).
ARGUMENTS = (LMModelArguments, LMDataArguments, LMOptimizationArguments, "LMTrainingArguments")


@dataclass
class CheckedInputs:
    """What the light checks found: the run dir, each split's datasets, each split's preprocessing, the
    model type if the checkpoint's config says it."""

    run_dir: str
    datasets: dict[str, list[TextDataset]]
    preprocessing: dict[str, Preprocessing]
    model_task: str | None
    study: StudySettings | None = None  # --do_optimize: the study's checked settings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # Flags, paths and data first, before the heavy imports: a mistake is reported in about a second.
    early = light_parse(ARGUMENTS, argv)
    checked = check_inputs(*early) if early else None
    with RunLock(checked.run_dir if checked else None):  # one run per output dir
        from transformers import set_seed

        from lm_preprocessing import TokenInfo
        from modeling import load_language_model, load_tokenizer, model_task_of, resolve_model_task
        from runner import rank_zero_value, setup_logging

        model_args, data_args, opt_args, training_args = parse_args(ARGUMENTS, argv, __doc__, early)
        checked = checked or check_inputs(model_args, data_args, opt_args, training_args)
        run_dir = training_args.output_dir = rank_zero_value(training_args, checked.run_dir)
        setup_logging(training_args)
        set_seed(training_args.seed)

        # Model and tokenizer: the task decides the head (AutoModelFor{CausalLM,MaskedLM,Seq2SeqLM}).
        hub = {"revision": model_args.model_revision, "token": hub_token(model_args.token), "cache_dir": model_args.cache_dir}
        tokenizer = load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path,
                                   "--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path", **hub)
        config = load_config_for(model_args, hub)
        model_task = resolve_model_task(model_args.model_task, checked.model_task or model_task_of(config), model_args.model_name_or_path)
        preprocessing = preprocessing_settings(data_args.data_preprocessing_fn, data_args.data_preprocessing_fn_kwargs,
                                               data_args.data_preprocessing_fn_strategy, model_task)
        check_against_tokenizer(preprocessing, TokenInfo.from_tokenizer(tokenizer, model_task))  # before the model loads
        model = load_language_model(model_args.model_name_or_path, model_task, config=config, **hub)
        add_new_tokens(tokenizer, model, training_args.add_new_tokens)
        if training_args.head_mask:  # for test-only scoring too (a Trainer applies it again, replacing this one)
            from controls import apply_head_mask_flag

            apply_head_mask_flag(training_args.head_mask, model)
        info = TokenInfo.from_tokenizer(tokenizer, model_task)
        logger.info("%s: %s model (%s), %s parameters", model_args.model_name_or_path, model_task, type(model).__name__,
                    f"{sum(p.numel() for p in model.parameters()):,}")

        # Data: token ids with each token's word; `once` preprocessing now, `per_batch` in the collator.
        encoded = {split: [encode(ds, tokenizer, model_task, data_args.max_length, split) for ds in sets]
                   for split, sets in checked.datasets.items()}
        results: dict[str, Any] = {"model_task": model_task}

        # Optimise (--do_optimize): a study of training runs scored by validation loss, instead of training and testing.
        if checked.study is not None:
            trainer = build_trainer(model, tokenizer, info, encoded, preprocessing, training_args, record_batches=False)
            return optimize(trainer, checked.study, (model_args, data_args, opt_args, training_args), argv, results)

        # Train: per-epoch validation, the best model (lowest validation loss) to model/, the tokenizer to tokenizer/.
        trainer = None
        if "train" in encoded:
            trainer = train(model, tokenizer, info, encoded, checked, preprocessing, training_args, data_args, results)
            model = trainer.model

        # Test: per-token surprisal of every test file, in resumable chunks.
        outputs = RunOutputs(run_dir, evaluation_only=trainer is None)
        if "test" in encoded and training_args.should_save:
            prefix = data_args.test_output_file_prefix or model_args.model_name_or_path.replace("/", "-")
            context = ResultContext.of(run_dir, model_task, model, tokenizer)
            rows, words = [], []
            for dataset, examples in zip(checked.datasets["test"], encoded["test"]):
                fingerprint = chunk_fingerprint(model_args, data_args, training_args, dataset, preprocessing["test"], trainer)
                token_rows, word_rows = score_test_file(model, tokenizer, info, context, dataset, examples, preprocessing["test"],
                                                        training_args, os.path.join(run_dir, ".test-chunks", fingerprint))
                rows += token_rows
                words += word_rows
            results["test_results_file"] = os.path.basename(outputs.write_records(f"{prefix}-test_results.csv.gz", rows))
            results["test_results_words_file"] = os.path.basename(outputs.write_records(f"{prefix}-test_results_words.csv.gz", words))
            results["test_tokens_scored"] = len(rows)
            results["test_mean_surprisal"] = round(sum(r["surprisal"] for r in rows) / max(len(rows), 1), 6)
            shutil.rmtree(os.path.join(run_dir, ".test-chunks"), ignore_errors=True)

        # Outputs (main process): config.txt, then the finished-run tail (all_results.json last).
        if training_args.should_save:
            write_text_atomic(outputs.path("config.txt"), config_text((model_args, data_args, opt_args, training_args)))
            outputs.finish(results, trainer.state.log_history if trainer else [], (model_args, data_args, opt_args, training_args), argv,
                           script="finetune_lm.py", model_dir=os.path.join(training_args.output_dir, "model"))
            print(f"{ {k: v for k, v in results.items() if not k.endswith('_file')} }; outputs in {run_dir}")
        return results


def check_inputs(model_args: LMModelArguments, data_args: LMDataArguments, opt_args: LMOptimizationArguments, run: Any) -> CheckedInputs:
    """The checks that need no heavy import: the model source, every data file (and its metadata), the
    preprocessing settings, the study's settings, and the output dir. `run` holds the Trainer flags
    (`EarlyTrainingFlags` before the heavy imports, else the full arguments)."""
    check_model_source(model_args.model_name_or_path, "--model_name_or_path", needs_tokenizer=model_args.tokenizer_name is None)
    model_task = model_args.model_task or local_model_task(model_args.model_name_or_path)
    preprocessing = preprocessing_settings(data_args.data_preprocessing_fn, data_args.data_preprocessing_fn_kwargs,
                                           data_args.data_preprocessing_fn_strategy, model_task)
    if data_args.validation_file and not data_args.train_file:
        raise UserError("--validation_file without --train_file: validation picks the best model of a training run; give "
                        "--train_file, or score the file with --test_file")
    if not data_args.train_file and not data_args.test_file:
        raise UserError("nothing to do: give --train_file (with --validation_file) to fine-tune, and/or --test_file to score "
                        "(a test-only run needs --test_file)")
    study = None
    if opt_args.do_optimize:  # the original's rule: test files take no part in choosing hyper-parameters
        if not (data_args.train_file and data_args.validation_file) or run.no_train:
            raise UserError("--do_optimize: each trial trains on --train_file and is scored on --validation_file; give both "
                            "(and no --no_train)")
        study = study_settings(opt_args.params, opt_args.study_kwargs, opt_args.optimize_kwargs,
                               trainer_argument_names(ARGUMENTS[-1]), kl_dataset=bool(run.kl_dataset))
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_validation_samples, "test": data_args.max_test_samples}
    files = {"train": [data_args.train_file], "validation": [data_args.validation_file],
             "test": data_args.test_file if study is None and data_args.test_file else []}
    datasets = {split: [read_text_dataset(path, f"--{split}_file").head(limits[split]) for path in paths if path]
                for split, paths in files.items()}
    datasets = {split: sets for split, sets in datasets.items() if sets}
    names = [ds.name for ds in datasets.get("test", [])]
    if len(set(names)) != len(names):
        raise UserError(f"--test_file: two files are named {next(n for n in names if names.count(n) > 1)!r}; the dataset_name "
                        "column could not tell them apart: rename one")
    run_dir = run.output_dir or default_output_dir(model_args.model_name_or_path, data_args.train_file)
    training = bool(data_args.train_file) and not run.no_train
    check_controls(run, evaluates=bool(data_args.validation_file) if training else None, model=model_args.model_name_or_path)
    # A study's rerun continues it (studies.py), in the same output dir.
    check_output_dir(run_dir, run.overwrite_output_dir, resuming=not training or bool(run.resume_from_checkpoint) or study is not None)
    if training:
        check_not_model_dir(run_dir, model_args.model_name_or_path, "--output_dir", "--model_name_or_path")
    elif "train" in datasets:
        del datasets["train"]
        datasets.pop("validation", None)
    return CheckedInputs(run_dir, datasets, preprocessing, model_task, study)


def default_output_dir(model: str, train_file: str | None) -> str:
    """The original's: outputs/<train file>/<model>/<YYYY-mm-dd_HH_MM_SS.ffffff>, or outputs/test_only/<model>."""
    from lm_data import dataset_name

    model = model.replace("/", "-")
    if not train_file:
        return os.path.join("outputs", "test_only", model)
    return os.path.join("outputs", dataset_name(train_file), model, datetime.now().strftime("%Y-%m-%d_%H_%M_%S.%f"))


def hub_token(token: str | None) -> str | None:
    """--token: the token itself, or a file holding it (the original's rule)."""
    if token and os.path.isfile(token):
        with open(token, encoding="utf-8") as f:
            return f.read().strip()
    return token


def load_config_for(model_args: LMModelArguments, hub: dict[str, Any]) -> Any:
    from modeling import load_config

    name = model_args.config_name or model_args.model_name_or_path
    return load_config(name, "--config_name" if model_args.config_name else "--model_name_or_path", **hub)


def encode(dataset: TextDataset, tokenizer: Any, model_task: str, max_length: int, split: str) -> list[dict[str, Any]]:
    from lm_data import encode_dataset

    examples = encode_dataset(dataset, tokenizer, model_task, max_length, f"--{split}_file")
    for i, example in enumerate(examples[:2] if split == "train" else []):  # most format bugs show in two examples
        logger.info("train example %d: %s", i, tokenizer.decode(example["input_ids"]))
    return examples


def check_against_tokenizer(preprocessing: dict[str, Preprocessing], info: Any) -> None:
    """The settings' checks that need the tokenizer (a word to mask that is not one known token, a seq2seq
    tokenizer without sentinels), run on no examples before the model loads."""
    import numpy as np

    from lm_preprocessing import preprocess

    for setting in preprocessing.values():
        preprocess([], setting.name, setting.kwargs, info, np.random.default_rng(0))


def pad_id(tokenizer: Any) -> int:
    """The id padding uses (never scored, never in the loss): the tokenizer's pad, else its EOS (GPT-2 has no pad)."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def preprocess_all(examples: list[dict[str, Any]], setting: Preprocessing, info: Any, seed: int, batch_size: int) -> list[dict[str, Any]]:
    from lm_preprocessing import preprocess_encoded

    return preprocess_encoded(examples, setting.name, setting.kwargs, setting.strategy, info, seed, batch_size)


# --- Training -----------------------------------------------------------------------------------------


def build_trainer(model: Any, tokenizer: Any, info: Any, encoded: dict[str, list], preprocessing: dict[str, Preprocessing],
                  training_args: Any, record_batches: bool = True) -> Any:
    """The Trainer of a training run (or of a study's trials): the splits as model rows, one collator per split;
    with `record_batches`, each batch's losses for metrics.csv.gz."""
    from data_collators import LMCollator
    from lm_preprocessing import BoundPreprocessing
    from trainers import ToolkitTrainer

    def split_rows(split: str) -> list[dict[str, Any]]:
        """The model rows of a split, as the Trainer takes them ({"input_ids", "labels"})."""
        examples = encoded[split][0]
        if preprocessing[split].strategy == "per_batch":  # the collator masks each batch anew
            return [{"input_ids": e["input_ids"], **({"labels": e["labels"]} if "labels" in e else {})} for e in examples]
        rows = preprocess_all(examples, preprocessing[split], info, training_args.seed, training_args.per_device_eval_batch_size)
        return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]

    def collator(split: str) -> Any:
        setting = preprocessing[split]
        per_batch = BoundPreprocessing(setting.name, setting.kwargs, info) if setting.strategy == "per_batch" else None
        start = model.config.decoder_start_token_id if model_task == "seq2seq" else None
        return LMCollator(pad_id(tokenizer), per_batch, seed=training_args.seed, decoder_start_token_id=start)

    model_task = info.model_task
    train_rows = split_rows("train")
    validation_rows = split_rows("validation") if "validation" in encoded else None
    if validation_rows is None:  # nothing to pick the best model by
        training_args.eval_strategy = "no"
        training_args.load_best_model_at_end = False
    # One collator for training; evaluation batches use the validation split's preprocessing.
    return ToolkitTrainer(model=model, args=training_args, train_dataset=train_rows, eval_dataset=validation_rows,
                          data_collator=collator("train"), eval_data_collator=collator("validation"),
                          processing_class=tokenizer, record_batches=record_batches)


def train(model: Any, tokenizer: Any, info: Any, encoded: dict[str, list], checked: CheckedInputs, preprocessing: dict[str, Preprocessing],
          training_args: Any, data_args: LMDataArguments, results: dict[str, Any]) -> Any:
    """Fine-tune; writes model/, tokenizer/, metrics.csv.gz and loss_curves.pdf / .png; returns the Trainer."""
    from runner import run_training

    trainer = build_trainer(model, tokenizer, info, encoded, preprocessing, training_args)
    validation_rows = trainer.eval_dataset
    epoch_rows: list[dict[str, Any]] = []
    if data_args.epoch_surprisals and validation_rows is not None:
        trainer.add_callback(EpochSurprisals(trainer, tokenizer, info, checked, encoded, preprocessing, training_args, epoch_rows))
    results.update(run_training(trainer, model_dir=os.path.join(training_args.output_dir, "model")))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(os.path.join(training_args.output_dir, "tokenizer"))
        batches = metrics_rows(trainer.batch_records, training_args.seed)
        write_records(os.path.join(training_args.output_dir, "metrics.csv.gz"), batches + epoch_rows)
        from plots import plot_batch_losses

        plot_batch_losses(batches, [os.path.join(training_args.output_dir, f"loss_curves.{ext}") for ext in ("pdf", "png")])
    if validation_rows is not None:
        results.update(trainer.evaluate())
    return trainer


def optimize(trainer: Any, study: StudySettings, arg_objects: tuple, argv: list[str] | None, results: dict[str, Any]) -> dict[str, Any]:
    """--do_optimize (studies.py): the study's trials, scored by validation loss; its outputs, config.txt, provenance
    and all_results.json (the best trial) in the run dir. No final training and no test scoring, as the original."""
    from provenance import write_provenance
    from studies import run_study

    model_args, data_args, _, training_args = arg_objects
    run_dir = training_args.output_dir
    if data_args.test_file:
        logger.info("--test_file ignored while optimising: hyper-parameters are chosen on the validation data only")
    default_name = f"{dataset_name(data_args.train_file)}-{model_args.model_name_or_path.strip('/').replace('/', '-')}"  # a rerun resumes it
    results.update(run_study(trainer, study, "eval_loss", run_dir, default_name).summary())
    if training_args.should_save:
        write_text_atomic(os.path.join(run_dir, "config.txt"), config_text(arg_objects))
        write_provenance(run_dir, arg_objects, argv)
        write_json_atomic(os.path.join(run_dir, FINISHED_MARKER), results)
        print(f"study {results['study_name']}: best eval_loss {results['study_best_value']} with {results['study_best_params']}; "
              f"outputs in {run_dir}")
    return results


def metrics_rows(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """metrics.csv.gz's batch rows, the original's form: epoch, batch_number (0-based within the epoch and
    dataset type), dataset_type, loss, one column per loss term, seed."""
    counters: dict[tuple[str, int], int] = {}
    rows = []
    for record in records:
        key = (record["dataset_type"], record["epoch"])
        number = counters[key] = counters.get(key, -1) + 1
        values = {ORIGINAL_TERM_NAMES.get(k, k): float(v) for k, v in record.items() if k not in ("dataset_type", "epoch")}
        rows.append({"epoch": record["epoch"], "batch_number": number, "dataset_type": record["dataset_type"], **values, "seed": seed})
    return rows


def config_text(arg_objects: tuple) -> str:
    """config.txt: every resolved argument, one `name: value` per line (secrets redacted)."""
    from provenance import redact

    lines = []
    for obj in arg_objects:
        values = obj.to_dict() if hasattr(obj, "to_dict") else asdict(obj)
        lines += [f"{type(obj).__name__}.{k}: {v}" for k, v in sorted(redact(values).items())]
    return "\n".join(lines) + "\n"


class EpochSurprisals:
    """--epoch_surprisals: after each evaluation, the validation set's per-token rows (dataset_type
    validation, with the epoch) for metrics.csv.gz."""

    def __new__(cls, trainer: Any, tokenizer: Any, info: Any, checked: CheckedInputs, encoded: dict, preprocessing: dict,
                training_args: Any, out: list) -> Any:
        from transformers import TrainerCallback

        dataset, examples = checked.datasets["validation"][0], encoded["validation"][0]
        rows = preprocess_all(examples, preprocessing["validation"], info, training_args.seed, training_args.per_device_eval_batch_size)

        class _Callback(TrainerCallback):
            def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if not trainer.is_world_process_zero():
                    return
                context = ResultContext.of(args.output_dir, info.model_task, trainer.model, tokenizer)
                epoch = max(round(state.epoch or 0), 1)
                tokens, _ = result_rows(trainer.model, tokenizer, info, context, dataset, examples, rows, args.per_device_eval_batch_size, "validation")
                out.extend({**row, "epoch": epoch} for row in tokens)

        return _Callback()


# --- Test outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultContext:
    """The columns every result row starts with."""

    model_name: str  # the original's: the run's output dir
    task: str
    n_params: str

    @classmethod
    def of(cls, run_dir: str, model_task: str, model: Any, tokenizer: Any) -> "ResultContext":
        from surprisal import TASK_NAMES, format_count

        return cls(run_dir, TASK_NAMES[model_task], format_count(sum(p.numel() for p in model.parameters())))


def chunk_fingerprint(model_args: Any, data_args: Any, training_args: Any, dataset: TextDataset, setting: Preprocessing, trainer: Any) -> str:
    """Names the chunk dir of one test file's scoring: a rerun reuses finished chunks only when the model, the
    data and every setting that changes the rows are the same."""
    stat = os.stat(dataset.path)
    key = {
        "model": model_args.model_name_or_path, "task": model_args.model_task, "tokenizer": model_args.tokenizer_name,
        "file": os.path.abspath(dataset.path), "size": stat.st_size, "mtime": stat.st_mtime_ns, "examples": len(dataset),
        "max_length": data_args.max_length, "preprocessing": [setting.name, dict(setting.kwargs), setting.strategy],
        "seed": training_args.seed, "batch": training_args.per_device_test_batch_size,
        "trained": None if trainer is None else [trainer.state.global_step, trainer.state.best_model_checkpoint],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{dataset.name}-{digest}"


def score_test_file(model: Any, tokenizer: Any, info: Any, context: ResultContext, dataset: TextDataset, examples: list[dict[str, Any]],
                    setting: Preprocessing, training_args: Any, chunk_dir: str) -> tuple[list[dict], list[dict]]:
    """Token and word rows of one test file. Rows are scored in chunks of TEST_CHUNK_ROWS model rows; each
    finished chunk is kept in `chunk_dir` (written atomically), a rerun skips those, and a preemption signal
    stops between chunks (exit 75: rerun the same command to continue)."""
    from records import read_records

    from tqdm.auto import tqdm

    rows = preprocess_all(examples, setting, info, training_args.seed, training_args.per_device_test_batch_size)
    chunks = range(0, len(rows), TEST_CHUNK_ROWS)
    tokens: list[dict] = []
    words: list[dict] = []
    progress = tqdm(total=len(rows), desc=f"scoring {dataset.name}", unit="row", disable=training_args.disable_tqdm)
    for number, start in enumerate(chunks):
        token_file = os.path.join(chunk_dir, f"{number:05d}.tokens.jsonl.gz")
        word_file = os.path.join(chunk_dir, f"{number:05d}.words.jsonl.gz")
        if os.path.isfile(token_file) and os.path.isfile(word_file):
            tokens += read_records(token_file)
            words += read_records(word_file)
            progress.update(min(TEST_CHUNK_ROWS, len(rows) - start))
            continue
        if preemption_requested():
            logger.warning("preempted while scoring %s: %d of %d chunks done and kept in %s; rerun the same command to continue",
                           dataset.path, number, len(chunks), chunk_dir)
            raise SystemExit(PREEMPTED_EXIT_CODE)
        chunk_tokens, chunk_words = result_rows(model, tokenizer, info, context, dataset, examples, rows[start : start + TEST_CHUNK_ROWS],
                                                training_args.per_device_test_batch_size, "test", training_args.bf16, progress)
        write_records(word_file, chunk_words)
        write_records(token_file, chunk_tokens)  # last: its presence marks the chunk done
        tokens += chunk_tokens
        words += chunk_words
    progress.close()
    logger.info("%s: scored %d rows, %d tokens", dataset.name, len(rows), len(tokens))
    return tokens, words


def result_rows(model: Any, tokenizer: Any, info: Any, context: ResultContext, dataset: TextDataset, examples: list[dict[str, Any]],
                rows: list[dict[str, Any]], batch_size: int, dataset_type: str, bf16: bool = False,
                progress: Any = None) -> tuple[list[dict], list[dict]]:
    """The original's per-token rows (and our per-word rows) for model rows scored by `surprisal.score_rows`
    (under bf16 autocast with --bf16; the log-softmax stays float32)."""
    import torch

    from surprisal import WordMarks, score_rows, to_bits, word_positions

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device.type
    try:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bool(bf16)):
            scored = score_rows(model, info.model_task, rows, batch_size, pad_id(tokenizer), progress)
    finally:
        model.train(was_training)
    marks = WordMarks.of(tokenizer)
    cache: dict[int, str] = {}

    def piece(token_id: int) -> str:
        if token_id not in cache:
            text = tokenizer.decode([token_id])
            cache[token_id] = text.strip() or text  # a lone space stays visible
        return cache[token_id]

    def text_of(ids: list[int]) -> str:
        return tokenizer.decode([i for i in ids if i not in marks.control_ids]).strip()

    seq2seq = info.model_task == "seq2seq"
    token_rows: list[dict] = []
    word_rows: list[dict] = []
    for row, result in zip(rows, scored):
        source = row["source"]
        example = examples[source]
        head = {"model_name": context.model_name, "task": context.task, "n_params": context.n_params, "dataset_name": dataset.name,
                "item": source, "original_text": dataset.texts[source], "input_text": text_of(row["input_ids"])}
        metadata = dataset.metadata[source]
        if seq2seq:
            gold = example.get("labels", example["input_ids"])
            text_words = example.get("label_words", example["input_words"]) if list(row["labels"]) == list(gold) else None
            generated = list(row["labels"])
            for position, predicted in zip(result.positions, result.predicted_ids):
                generated[position] = int(predicted)
            sequences = [("label_sequence", list(row["labels"]), result.token_ids, result.logprobs, text_words),
                         ("generated_sequence", generated, result.predicted_ids, result.predicted_logprobs, None)]
        else:
            text_words = example["input_words"] if len(row["input_ids"]) == len(example["input_ids"]) else None
            sequences = [(None, list(row["input_ids"]), result.token_ids, result.logprobs, text_words)]
        for kind, sequence, token_ids, logprobs, words in sequences:
            positions = [int(p) for p in result.positions]
            word_num, in_word, starts, is_word = word_positions(sequence, tokenizer.convert_ids_to_tokens(sequence), marks, set(positions), words)
            if seq2seq:
                lead = {**head, "generated_sequence_type": kind, "label_text": text_of(sequence)}
            else:
                lead = {**head, "input_label": dataset.labels[source] if dataset.labels[source] is not None else dataset.texts[source]}
            per_word: dict[int, dict[str, Any]] = {}
            for k, position in enumerate(positions):
                token_id, logprob = int(token_ids[k]), float(logprobs[k])
                predicted_id, predicted_logprob = int(result.predicted_ids[k]), float(result.predicted_logprobs[k])
                token_rows.append({
                    **lead, "word_num": word_num[position], "token_num_in_word": in_word[position], "token": piece(token_id),
                    "token_id": token_id, "token_is_start_of_word": starts[position], "token_is_word": is_word[position],
                    "surprisal": to_bits(logprob), "logprob": logprob, "predicted_token": piece(predicted_id),
                    "predicted_token_id": predicted_id, "predicted_token_surprisal": to_bits(predicted_logprob),
                    **metadata, "dataset_type": dataset_type,
                })
                word = per_word.setdefault(word_num[position], {"logprob": 0.0, "n_tokens": 0})
                word["logprob"] += logprob
                word["n_tokens"] += 1
            for number, word in per_word.items():
                word_ids = [t for t, w in zip(sequence, word_num) if w == number]
                word_rows.append({**lead, "word_num": number, "word": text_of(word_ids), "n_tokens": word["n_tokens"],
                                  "surprisal": to_bits(word["logprob"]), "logprob": word["logprob"], **metadata, "dataset_type": dataset_type})
    return token_rows, word_rows


if __name__ == "__main__":
    run_main(main)
