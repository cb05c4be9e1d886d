"""Fine-tune (flan-)T5 on prompt/completion records and read sampled completions of the eval records.

    python seq2seq.py --model_init_path google/flan-t5-small --data_name example --max_steps 200 \
        --eval_steps 100 --temperature 0.7 --n_samples 3

Data: `<mount>/data/<data_name>.json` = {"train": [{"prompt", "completion", ...}], "eval": [...]}, or
JSON lines per split (--train_file, --eval_file). Results go to `<mount>/models/<training_run_name>/`:
at every --eval_steps and at the end, `eval_<step>.json` holds each eval record's fields plus its
`samples`, and eval loss, exact match, token F1, ROUGE-L, BLEU and generation length are logged.
The loss covers the completion only (it is the decoder's target). Defaults follow T5's fine-tuning
(Adafactor, constant learning rate 1e-3).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

# Only light modules here: flags and data are checked before transformers and torch are imported.
from arguments import light_parse, parse_args
from controls import add_new_tokens, check_controls
from errors import UserError, run_main
from modeling import check_model_source
from outputs import RunLock, RunOutputs, check_not_model_dir, check_output_dir, unique_path, write_records
from records import (
    Record,
    count_empty,
    data_path,
    default_run_name,
    is_string,
    load_run_records,
    model_path,
    preempted_run_name,
    run_path,
)

logger = logging.getLogger("seq2seq")

GREEDY_BELOW = 1e-5  # a temperature below this (0 included) means greedy decoding
PROMPT_COMPLETION = {"prompt": is_string, "completion": is_string}


@dataclass
class Seq2SeqDataArguments:
    """Where the model, the data and the results live (the `mount/` layout), and how to sample."""

    model_init_name: str | None = field(default=None, metadata={"help": "Model folder under <mount_dir>/models to start from (e.g. flan-t5-xxl)."})
    model_init_path: str | None = field(default=None, metadata={"help": "Model path relative to the current directory, or a Hub name (e.g. t5-small)."})
    data_name: str | None = field(default=None, metadata={"aliases": ["--data"], "help": "Data file <mount_dir>/data/<data_name>.json holding 'train' and 'eval' lists."})
    train_file: str | None = field(default=None, metadata={"help": "Training records as JSON lines (one {\"prompt\", \"completion\"} per line); overrides data_name's train."})
    eval_file: str | None = field(default=None, metadata={"help": "Eval records as JSON lines; overrides data_name's eval."})
    predict_file: str | None = field(default=None, metadata={"help": "Records with a 'prompt' only (JSON lines or a list): sample completions for them."})
    training_run_name: str | None = field(default=None, metadata={"help": "Results go to <mount_dir>/models/<training_run_name>/ (default: <data_name>-<model>-<time>)."})
    mount_dir: str = field(default="mount", metadata={"help": "The mounted home holding models/ and data/."})
    temperature: float = field(default=0.0, metadata={"help": f"Sampling temperature for eval completions; 0 (or below {GREEDY_BELOW}) is greedy."})
    n_samples: int = field(default=1, metadata={"help": "Completions sampled per eval record."})
    max_source_length: int = field(default=512, metadata={"help": "Prompt tokens; longer prompts are truncated (and counted)."})
    max_target_length: int = field(default=128, metadata={"help": "Completion tokens for training, and the most new tokens sampled."})

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise UserError(f"--n_samples {self.n_samples}: must be at least 1")
        if self.temperature < 0:
            raise UserError(f"--temperature {self.temperature}: must be >= 0 (0 is greedy)")
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 2:
                raise UserError(f"--{name} {getattr(self, name)}: must be at least 2")


# The script's arguments; the last names its Trainer-arguments class (trainer_arguments.py).
ARGUMENTS = (Seq2SeqDataArguments, "MountRunArguments")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # Flags, paths and records first, before the heavy imports: a mistake is reported in about a second,
    # before anything is written.
    early = light_parse(ARGUMENTS, argv)
    checked = check_inputs(*early) if early else None
    with RunLock(checked[1] if checked else None):  # one run per run dir
        from transformers import DataCollatorForSeq2Seq, set_seed

        from data_collators import PaddingCounter
        from modeling import fit_embeddings_to_tokenizer, load_model, load_tokenizer
        from runner import rank_zero_value, run_training, setup_logging
        from trainers import SamplingTrainer

        data_args, training_args = parse_args(ARGUMENTS, argv, __doc__, early)
        model_dir, run_dir, records = checked or check_inputs(data_args, training_args)
        training_args.output_dir = rank_zero_value(training_args, run_dir)  # one run dir for all processes
        setup_logging(training_args)
        if training_args.resume_from_checkpoint == "auto" and not data_args.training_run_name:  # see check_inputs
            logger.info("resume auto without --training_run_name: run dir %s (the newest preempted run of this data and "
                        "model, else a new one)", training_args.output_dir)
        to_predict = records.pop("predict", [])

        # Tokenizer and model.
        set_seed(training_args.seed)
        flag = "--model_init_name" if data_args.model_init_name else "--model_init_path"
        tokenizer = load_tokenizer(model_dir, flag)
        model = load_model(model_dir, flag)
        fit_embeddings_to_tokenizer(model, tokenizer)
        add_new_tokens(tokenizer, model, training_args.add_new_tokens)

        # Data: prompt -> encoder input, completion -> labels.
        datasets_by_split = {split: tokenize_records(rows, tokenizer, data_args, split) for split, rows in records.items()}
        collator = PaddingCounter(DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100), tokenizer.pad_token_id)

        # Trainer whose evaluation also samples completions and scores them.
        sampler = CompletionSampler(records.get("eval", []), tokenizer, data_args, training_args.output_dir, training_args.seed)
        trainer = SamplingTrainer(
            model=model, args=training_args, train_dataset=datasets_by_split.get("train"),
            eval_dataset=datasets_by_split.get("eval"), data_collator=collator, processing_class=tokenizer, sampler=sampler,
        )

        # Train, evaluate (and sample), predict.
        results: dict[str, Any] = {}
        if not training_args.no_train:
            results.update(run_training(trainer))
        if "eval" in datasets_by_split:
            results.update(sampler.last_metrics if sampler.last_step == trainer.state.global_step else trainer.evaluate())
        if to_predict:
            results["predict_file"] = sampler.predict(trainer, to_predict, data_args.predict_file)

        # Outputs (the main process only): an evaluation-only run adds files beside a finished one.
        if trainer.is_world_process_zero():
            out = training_args.output_dir
            RunOutputs(out, evaluation_only=training_args.no_train).finish(results, trainer.state.log_history, (data_args, training_args), argv,
                                                                               script="seq2seq.py")
            shown = {k: round(v, 2) for k, v in results.items() if k.startswith("eval_") and isinstance(v, float)}
            print(f"{shown}; outputs in {out}")
        return results


def check_inputs(data_args: Seq2SeqDataArguments, run: Any) -> tuple[str, str, dict[str, list[Record]]]:
    """(model dir or name, run dir, records): the checks that need no heavy import.

    `run` holds the Trainer flags: `EarlyTrainingFlags` before the heavy imports, else the full arguments.
    """
    model_dir = model_path(data_args.mount_dir, data_args.model_init_name, data_args.model_init_path, "--model_init_name", "--model_init_path")
    model_flag = "--model_init_name" if data_args.model_init_name else "--model_init_path"
    check_model_source(model_dir, model_flag, needs_tokenizer=True)
    resumed = preempted_run_name(data_args.mount_dir, data_args.data_name, model_dir) if run.resume_from_checkpoint == "auto" else None
    run_dir = run_path(data_args.mount_dir, data_args.training_run_name or resumed or default_run_name(data_args.data_name, model_dir))
    check_output_dir(run_dir, run.overwrite_output_dir, run.no_train or bool(run.resume_from_checkpoint))
    check_controls(run, model=model_dir)
    if not run.no_train:
        check_not_model_dir(run_dir, model_dir, "--training_run_name", model_flag)
    records = load_run_records(data_args.mount_dir, data_args.data_name, data_args.train_file, data_args.eval_file,
                               data_args.predict_file, not run.no_train, PROMPT_COMPLETION, {"prompt": is_string},
                               not_all_empty=("completion",))  # a split of empty completions is refused; some: warned below
    return model_dir, run_dir, records


def tokenize_records(rows: Sequence[Record], tokenizer: Any, data_args: Seq2SeqDataArguments, split: str) -> Any:
    """A Dataset of input_ids / attention_mask / labels; truncated prompts and completions are counted."""
    import datasets

    from modeling import encode_truncated

    input_ids, cut_prompts = encode_truncated(tokenizer, [r["prompt"] for r in rows], data_args.max_source_length)
    labels, cut_completions = encode_truncated(tokenizer, [r["completion"] for r in rows], data_args.max_target_length)
    for what, cut, flag in (("prompts", cut_prompts, "--max_source_length"), ("completions", cut_completions, "--max_target_length")):
        if any(cut):
            logger.warning("%s: %d of %d %s truncated to %s", split, sum(cut), len(rows), what, flag)
    where = getattr(data_args, f"{split}_file", None) or data_path(data_args.mount_dir, data_args.data_name)
    empty = count_empty(rows, "completion", where, split)  # all of them: refused by check_inputs
    if empty:
        logger.warning("%s: %d of %d %s records have an empty 'completion' (the model learns to write nothing for them)",
                       where, empty, len(rows), split)
    if split == "train":
        for i in range(min(2, len(rows))):  # two decoded examples: most format bugs show up here
            logger.info("example %d prompt:     %s", i, tokenizer.decode(input_ids[i]))
            logger.info("example %d completion: %s", i, tokenizer.decode(labels[i]))
    return datasets.Dataset.from_dict(
        {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids], "labels": labels}
    )


class CompletionSampler:
    """Samples `n_samples` completions per record, writes them beside the records, and scores them."""

    def __init__(self, records: Sequence[Record], tokenizer: Any, data_args: Seq2SeqDataArguments, output_dir: str, seed: int) -> None:
        self.records = list(records)
        self.tokenizer = tokenizer
        self.n_samples = data_args.n_samples
        self.temperature = data_args.temperature
        self.max_source_length = data_args.max_source_length
        self.max_new_tokens = data_args.max_target_length
        self.output_dir = output_dir
        self.seed = seed
        self.last_step: int | None = None
        self.last_metrics: dict[str, float] = {}

    def sample(self, trainer: Any, prompts: Sequence[str], step: int) -> list[list[str]]:
        """Completions for every prompt, sampled on every process (each takes a share) and gathered.

        Under DeepSpeed ZeRO-3 every process samples every prompt with `synced_gpus=True`, since the
        partitioned weights are gathered layer by layer and all processes must call generate alike.
        """
        import torch
        from accelerate.utils import gather_object
        from transformers.integrations import is_deepspeed_zero3_enabled

        zero3 = is_deepspeed_zero3_enabled()
        rank, world = trainer.args.process_index, trainer.args.world_size
        mine = list(range(len(prompts))) if zero3 or world == 1 else list(range(rank, len(prompts), world))
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        greedy = self.temperature < GREEDY_BELOW
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "synced_gpus": zero3}
        if not greedy:  # plain sampling: every token of the vocabulary stays possible
            kwargs.update(do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0, num_return_sequences=self.n_samples)
        else:
            kwargs.update(do_sample=False, num_beams=1)
        batch_size = trainer.args.per_device_eval_batch_size
        out: list[tuple[int, list[str]]] = []
        # The sampling noise depends on (seed, step, process) only, and training's random streams
        # are left as they were.
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []), torch.no_grad():
            torch.manual_seed(self.seed * 1_000_003 + step * 101 + rank)
            from tqdm.auto import tqdm

            batches = tqdm(range(0, len(mine), batch_size), desc=f"sampling {len(mine)} prompts x {self.n_samples}", unit="batch",
                           disable=trainer.args.disable_tqdm or not trainer.is_local_process_zero())
            for start in batches:
                chunk = mine[start : start + batch_size]
                enc = self.tokenizer([prompts[i] for i in chunk], padding=True, truncation=True,
                                     max_length=self.max_source_length, return_tensors="pt").to(model.device)
                generated = model.generate(**enc, **kwargs)
                texts = [t.strip() for t in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]
                per = 1 if greedy else self.n_samples  # greedy: one decode, repeated n times
                for k, i in enumerate(chunk):
                    out.append((i, texts[k * per : (k + 1) * per] * (self.n_samples if greedy else 1)))
        if was_training:
            model.train()
        if world > 1 and not zero3:
            out = gather_object(out)
        samples = dict(out)
        return [samples[i] for i in range(len(prompts))]

    def evaluate(self, trainer: Any) -> dict[str, float]:
        """Sample the eval records, write `eval_<step>.json`, and return the metrics."""
        from metrics import generation_metrics

        step = trainer.state.global_step
        samples = self.sample(trainer, [r["prompt"] for r in self.records], step)
        metrics = generation_metrics(samples, [r["completion"] for r in self.records], self.tokenizer)
        if trainer.is_world_process_zero():
            path = write_records(unique_path(os.path.join(self.output_dir, f"eval_{step}.json")),
                                 [{"samples": s} for s in samples], carry=self.records)
            logger.info("step %d: %d eval records x %d samples written to %s", step, len(samples), self.n_samples, path)
        self.last_step = step
        return metrics

    def predict(self, trainer: Any, records: Sequence[Record], source: str) -> str:
        """Sample completions for records that have only a prompt; returns the file written."""
        step = trainer.state.global_step
        samples = self.sample(trainer, [r["prompt"] for r in records], step)
        name = os.path.splitext(os.path.basename(source))[0]
        path = unique_path(os.path.join(self.output_dir, f"predict_{name}_{step}.json"))
        if trainer.is_world_process_zero():
            write_records(path, [{"samples": s} for s in samples], carry=records)
        return path


if __name__ == "__main__":
    run_main(main)
