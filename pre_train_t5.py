"""T5 span-corruption pre-training, from scratch or continued from a checkpoint, with Seq2SeqTrainer.

    python pre_train_t5.py --output_dir runs/pretrain --train_file corpus.txt --train_tokenizer_vocab_size 32000

With no data flag it pre-trains on the embedded default corpus (Python standard library docstrings).
Runs unchanged under `accelerate launch`, `torchrun` and `deepspeed`. Objective: Raffel et al. 2020,
sec. 3.1.4 (see data_collators.py). Defaults follow T5 v1.1: gated-GELU, no dropout while
pre-training, Adafactor at 1e-2 with inverse-square-root decay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

# Only light modules here: flags and data are checked before transformers and torch are imported.
from arguments import light_parse, parse_args
from controls import add_new_tokens, check_controls
from corpus import CorpusFiles, find_corpus_files, load_raw_corpus, split_off_validation, tokenize_and_pack
from data_collators import T5DataCollator, compute_input_and_target_lengths
from errors import UserError, run_main
from modeling import check_model_source
from outputs import FINISHED_MARKER, RunLock, RunOutputs, check_not_model_dir, check_output_dir

logger = logging.getLogger("pre_train_t5")


@dataclass
class ModelArguments:
    """Which model and tokenizer to start from: a checkpoint, a config, or T5 v1.1 sizes from scratch."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Checkpoint to continue pre-training (Hub name or local dir). Omit to start from scratch."})
    config_name: str | None = field(default=None, metadata={"help": "Config to build a fresh model from (Hub name or local dir), e.g. google/t5-v1_1-base."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Existing tokenizer (Hub name or local dir). Default: the checkpoint's, else one trained on the corpus."})
    train_tokenizer_vocab_size: int = field(default=32000, metadata={"help": "Pieces of the SentencePiece unigram tokenizer trained on the corpus when no tokenizer is given (plus 100 sentinels)."})
    d_model: int | None = field(default=None, metadata={"help": "From scratch: hidden size (T5 v1.1 small: 512)."})
    d_ff: int | None = field(default=None, metadata={"help": "From scratch: feed-forward size (small: 1024)."})
    d_kv: int | None = field(default=None, metadata={"help": "From scratch: size per attention head (small: 64)."})
    num_layers: int | None = field(default=None, metadata={"help": "From scratch: encoder layers (small: 8)."})
    num_decoder_layers: int | None = field(default=None, metadata={"help": "From scratch: decoder layers (default: num_layers)."})
    num_heads: int | None = field(default=None, metadata={"help": "From scratch: attention heads (small: 6)."})
    dropout_rate: float = field(default=0.0, metadata={"help": "Dropout while pre-training (T5 v1.1 pre-trained without; also applied to a continued checkpoint)."})

    def __post_init__(self) -> None:
        if self.model_name_or_path and self.config_name:
            raise UserError("--model_name_or_path and --config_name both given: continue a checkpoint or build from a config, not both")
        if self.train_tokenizer_vocab_size < 10:
            raise UserError(f"--train_tokenizer_vocab_size {self.train_tokenizer_vocab_size}: must be at least 10")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise UserError(f"--dropout_rate {self.dropout_rate}: must lie in [0, 1)")


@dataclass
class DataArguments:
    """The corpus and the span-corruption objective."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset with a text column, e.g. allenai/c4 (use --streaming for large ones)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Config of --dataset_name, e.g. en."})
    train_file: str | None = field(default=None, metadata={"help": "Local corpus: .txt or .txt.gz (a document per line) or .jsonl (field 'text')."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation corpus, same kinds. Default: hold out --validation_split_percentage of the rows."})
    data_dir: str | None = field(default=None, metadata={"help": "Directory holding train.txt (or .txt.gz/.jsonl) and optionally dev.txt."})
    text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    validation_split_percentage: float = field(default=5.0, metadata={"help": "Percent of packed rows held out for validation when there is no validation split."})
    max_seq_length: int = field(default=512, metadata={"help": "Encoder input length after corruption (rows are packed to the expanded length, 568 for 512)."})
    noise_density: float = field(default=0.15, metadata={"help": "Fraction of tokens corrupted (T5: 0.15)."})
    mean_noise_span_length: float = field(default=3.0, metadata={"help": "Mean corrupted span length in tokens (T5: 3)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training rows (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many validation rows (streaming default: 1000)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenizing (datasets.map num_proc)."})
    streaming: bool = field(default=False, metadata={"help": "Stream the corpus instead of tokenizing it all first (needs --max_steps)."})

    def __post_init__(self) -> None:
        if self.dataset_name and (self.train_file or self.data_dir):
            raise UserError("--dataset_name and a local corpus (--train_file/--data_dir) both given: use one")
        if not 0.0 < self.noise_density < 1.0:
            raise UserError(f"--noise_density {self.noise_density}: must lie strictly between 0 and 1")
        if self.mean_noise_span_length < 1.0:
            raise UserError(f"--mean_noise_span_length {self.mean_noise_span_length}: must be at least 1")
        if self.max_seq_length < 4:
            raise UserError(f"--max_seq_length {self.max_seq_length}: must be at least 4")
        if not 0.0 < self.validation_split_percentage < 100.0:
            raise UserError(f"--validation_split_percentage {self.validation_split_percentage}: must lie in (0, 100)")


def get_tokenizer(model_args: ModelArguments, train_split: Any, text_column: str, seed: int) -> Any:
    from modeling import load_tokenizer, train_tokenizer

    if model_args.tokenizer_name:
        return load_tokenizer(model_args.tokenizer_name)
    if model_args.model_name_or_path:
        return load_tokenizer(model_args.model_name_or_path, flag="--model_name_or_path")
    texts = (text for batch in train_split.iter(batch_size=1000) for text in batch[text_column])
    return train_tokenizer(texts, model_args.train_tokenizer_vocab_size, seed=seed)


def get_model(model_args: ModelArguments, tokenizer: Any) -> Any:
    from modeling import fit_embeddings_to_tokenizer, load_config, load_model, new_t5, t5_v1_1_config

    if model_args.model_name_or_path:
        model = load_model(model_args.model_name_or_path, dropout_rate=model_args.dropout_rate)
    else:
        if model_args.config_name:
            config = load_config(model_args.config_name, dropout_rate=model_args.dropout_rate)
            config.vocab_size = max(config.vocab_size, len(tokenizer))
        else:
            sizes = {k: getattr(model_args, k) for k in ("d_model", "d_ff", "d_kv", "num_layers", "num_decoder_layers", "num_heads")}
            config = t5_v1_1_config(len(tokenizer), tokenizer, dropout_rate=model_args.dropout_rate, **sizes)
        model = new_t5(config)
    fit_embeddings_to_tokenizer(model, tokenizer)
    return model


def token_accuracy_metrics() -> tuple[Any, Any]:
    """(preprocess_logits_for_metrics, compute_metrics) for the fraction of label tokens predicted exactly."""
    from metrics import token_accuracy

    def argmax(logits: Any, labels: Any) -> Any:
        return (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)

    def compute(prediction: Any) -> dict[str, float]:
        return {"token_accuracy": token_accuracy(prediction.predictions, prediction.label_ids)}

    return argmax, compute


def corrupt_once(rows: Any, collator: T5DataCollator) -> Any:
    """Corrupt the validation rows once, with their own fixed noise stream, so that every evaluation
    (and every number of processes) scores the same masked spans."""
    import copy

    import datasets
    import numpy as np

    if not hasattr(rows, "num_rows"):  # a streamed split: at most --max_eval_samples rows
        rows = datasets.Dataset.from_list(list(rows))
    fixed = copy.copy(collator)
    fixed.rng = np.random.default_rng([collator.seed, 1])
    return rows.map(lambda batch: fixed.corrupt(np.asarray(batch["input_ids"])), batched=True, desc="corrupting validation rows")


def log_examples(collator: T5DataCollator, rows: Any, tokenizer: Any, source: str, held_out: int, count: int = 2) -> None:
    """Two decoded corrupted examples: most pipeline bugs show up here."""
    examples = [row for _, row in zip(range(count), rows)]
    if not examples:  # a streamed corpus that validation used up
        raise UserError(f"{source}: no training rows left after holding out {held_out} rows for validation; give a --validation_file or a smaller --max_eval_samples")
    batch = collator(examples)
    for i in range(len(examples)):
        logger.info("example %d input:  %s", i, tokenizer.decode(batch["input_ids"][i]))
        logger.info("example %d labels: %s", i, tokenizer.decode(batch["labels"][i]))


# The script's arguments; the last names its Trainer-arguments class (trainer_arguments.py).
ARGUMENTS = (ModelArguments, DataArguments, "PreTrainingArguments")


def main(argv: list[str] | None = None, callbacks: list[Any] | None = None) -> dict[str, float]:
    """Run pre-training; `callbacks` are extra `TrainerCallback`s (bench/pretrain_throughput.py times steps with one)."""
    # Flags, paths and corpus files first, before the heavy imports: a mistake is reported in about a second.
    early = light_parse(ARGUMENTS, argv)
    files = check_inputs(*early) if early else None
    with RunLock(early[-1].output_dir or "trainer_output" if early else None):  # one run per output dir
        from transformers import set_seed

        from runner import setup_logging
        from trainers import ToolkitTrainer

        model_args, data_args, training_args = parse_args(ARGUMENTS, argv, __doc__, early)
        if early is None:  # --help
            files = check_inputs(model_args, data_args, training_args)
        setup_logging(training_args)
        set_seed(training_args.seed)

        # Data, tokenizer and model.
        raw = load_raw_corpus(files, data_args.dataset_name, data_args.dataset_config_name, data_args.text_column, data_args.streaming)
        tokenizer = get_tokenizer(model_args, raw["train"], data_args.text_column, training_args.seed)
        model = get_model(model_args, tokenizer)
        add_new_tokens(tokenizer, model, training_args.add_new_tokens)
        expanded_length, target_length = compute_input_and_target_lengths(
            data_args.max_seq_length, data_args.noise_density, data_args.mean_noise_span_length
        )
        logger.info(
            "model: %.2fM parameters, %s; rows of %d tokens corrupt to %d inputs / %d labels",
            model.num_parameters() / 1e6, training_args.precision, expanded_length, data_args.max_seq_length, target_length,
        )

        # Tokenize once, pack into rows, hold out validation.
        packed = tokenize_and_pack(raw, tokenizer, expanded_length, data_args.text_column, data_args.preprocessing_num_workers, training_args.main_process_first)
        source = files.train if files else data_args.dataset_name or "the embedded default corpus"
        _check_rows(packed["train"], "training", source, expanded_length)
        if "validation" in packed:
            _check_rows(packed["validation"], "validation", files.validation if files and files.validation else source, expanded_length)
        train_rows, eval_rows = split_off_validation(packed, data_args.validation_split_percentage, training_args.seed, data_args.max_eval_samples or 1000, source)
        train_rows, eval_rows = _limit(train_rows, data_args.max_train_samples), _limit(eval_rows, data_args.max_eval_samples)
        train_rows = train_rows.map(lambda _, i: {"row_id": i}, with_indices=True)  # the collator's noise key

        # Span corruption.
        try:
            collator = T5DataCollator(tokenizer, data_args.noise_density, data_args.mean_noise_span_length, data_args.max_seq_length, seed=training_args.seed)
        except ValueError as err:
            raise UserError(f"tokenizer: {err}") from None
        eval_rows = corrupt_once(eval_rows, collator)
        log_examples(collator, train_rows, tokenizer, source, eval_rows.num_rows)

        # Train and evaluate.
        argmax, compute_metrics = token_accuracy_metrics()
        trainer = ToolkitTrainer(
            model=model,
            args=training_args,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            data_collator=collator,
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
            preprocess_logits_for_metrics=argmax,
            callbacks=callbacks,
        )
        return run_and_report(trainer, training_args, (model_args, data_args, training_args), argv)


def check_inputs(model_args: ModelArguments, data_args: DataArguments, run: Any) -> CorpusFiles | None:
    """The checks that need no heavy import: output dir, flag combinations, model paths, corpus files.

    `run` holds the Trainer flags: `EarlyTrainingFlags` before the heavy imports, else the full arguments.
    """
    check_output_dir(run.output_dir or "trainer_output", run.overwrite_output_dir, run.no_train or bool(run.resume_from_checkpoint))
    check_controls(run, model=model_args.model_name_or_path)
    if run.lora_r is not None and not model_args.model_name_or_path:
        raise UserError(f"--lora_r {run.lora_r}: LoRA adapts a pretrained model, and this run builds a new one; give "
                        "--model_name_or_path (or pre-train without --lora_r)")
    if data_args.streaming and run.max_steps <= 0:
        raise UserError("--streaming needs --max_steps: a streamed corpus has no length to count epochs by")
    for flag in ("--model_name_or_path", "--config_name", "--tokenizer_name"):
        name = getattr(model_args, flag[2:])
        if name:
            tokenizer_here = flag == "--tokenizer_name" or (flag == "--model_name_or_path" and not model_args.tokenizer_name)
            check_model_source(name, flag, needs_config=flag != "--tokenizer_name", needs_tokenizer=tokenizer_here)
    if model_args.model_name_or_path and not run.no_train:
        check_not_model_dir(run.output_dir or "trainer_output", model_args.model_name_or_path, "--output_dir", "--model_name_or_path")
    return find_corpus_files(data_args.train_file, data_args.validation_file, data_args.data_dir)


def _limit(rows: Any, count: int | None) -> Any:
    if count is None:
        return rows
    return rows.select(range(min(count, rows.num_rows))) if hasattr(rows, "num_rows") else rows.take(count)


def _check_rows(rows: Any, split: str, source: str, row_length: int) -> None:
    if hasattr(rows, "num_rows") and rows.num_rows == 0:
        raise UserError(f"{source}: the {split} text is shorter than one row of {row_length} tokens; give more text or a shorter --max_seq_length")


def run_and_report(trainer: Any, training_args: Any, arg_objects: tuple, argv: list[str] | None) -> dict[str, float]:
    """Train (if asked), evaluate, save model, tokenizer, results, provenance and the loss curve."""
    from modeling import save_tokenizer
    from runner import run_training

    outputs = RunOutputs(training_args.output_dir, evaluation_only=training_args.no_train)
    results: dict[str, float] = {}
    if not training_args.no_train:
        results.update(run_training(trainer))
    results.update(trainer.evaluate())
    if trainer.is_world_process_zero():
        if not training_args.no_train:
            save_tokenizer(trainer.processing_class, training_args.output_dir)
        path = outputs.finish(results, trainer.state.log_history, arg_objects, argv, script="pre_train_t5.py")
        print(f"eval_loss = {results['eval_loss']:.4f}  eval_token_accuracy = {results.get('eval_token_accuracy', float('nan')):.4f}")
        print(f"results written to {path}" if training_args.no_train else
              f"model, tokenizer, {FINISHED_MARKER} and loss_curve.png written to {training_args.output_dir}")
    return results


if __name__ == "__main__":
    run_main(main)
