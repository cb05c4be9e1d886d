"""The KL-to-base loss term's cost: optimizer-step time with `--kl_dataset` on vs off, side by side.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/kl_overhead.py            # a T5 of d_model 256, 4+4 layers (~10 M parameters)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/kl_overhead.py --small    # the smoke-test size

The same randomly initialised T5, the same training rows and batch size; with the term on, each optimizer
step also draws `--kl_examples_per_step` examples (default: the batch size) of a KL dataset of the same
kind of rows, runs the frozen starting model on them without autograd and the trained model with it
(losses.KLBaselineLoss). The term adds a frozen forward and a forward/backward of the model, so about
2.3x the step time is expected; the issue's target is at most 2.5x. Runs alternate off / on; the first
`--warmup` steps of each run are not timed; the median step time of each side is reported with the CPU.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from machine import machine  # noqa: E402  (bench/machine.py: the script's folder is on sys.path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--kl_examples_per_step", type=int, default=None, help="default: the batch size")
    parser.add_argument("--length", type=int, default=64, help="tokens per input and per target")
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--small", action="store_true", help="a tiny model and few steps (the smoke test)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def setup(args: argparse.Namespace, tmp: str) -> tuple[Any, str, list[dict], Any]:
    """A tokenizer trained on generated text, the model's config, a KL file and the training rows."""
    import random

    from modeling import t5_v1_1_config, train_tokenizer

    rng = random.Random(0)
    words = ("the a model learns tokens from text and predicts missing spans of words in every sentence while training "
             "on small batches with noise density mean length sentinel encoder decoder attention layer weights").split()
    lines = [" ".join(rng.choice(words) for _ in range(args.length)) for _ in range(400)]
    tokenizer = train_tokenizer(lines, vocab_size=300)
    sizes = dict(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4) if args.small else \
        dict(d_model=256, d_ff=1024, d_kv=32, num_layers=4, num_heads=8)
    config = t5_v1_1_config(len(tokenizer), tokenizer, **sizes)
    kl_file = os.path.join(tmp, "kl.txt.gz")
    with gzip.open(kl_file, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines[200:]) + "\n")
    rows = []
    for line in lines[:200]:
        ids = tokenizer(line, truncation=True, max_length=args.length)["input_ids"]
        rows.append({"input_ids": ids, "labels": ids})
    return tokenizer, kl_file, rows, config


def step_times(args: argparse.Namespace, tokenizer: Any, config: Any, rows: list[dict], kl_file: str | None,
               out: str) -> tuple[list[float], list[float]]:
    """Step times after the warm-up, and the KL term's logged values (empty when it is off)."""
    from transformers import TrainerCallback

    from data_collators import LMCollator
    from modeling import new_t5
    from trainer_arguments import ToolkitTrainingArguments
    from trainers import ToolkitTrainer

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())

    torch.manual_seed(0)
    model = new_t5(config)
    n = args.kl_examples_per_step or args.batch_size
    training = ToolkitTrainingArguments(
        output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps, learning_rate=1e-3,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=0, logging_steps=args.warmup + args.steps,
        kl_dataset=[kl_file] if kl_file else None, kl_examples_per_step=[n] if kl_file else None, kl_batch_size=n,
        kl_max_length=args.length)
    trainer = ToolkitTrainer(model=model, args=training, train_dataset=rows, processing_class=tokenizer, callbacks=[Clock()],
                             data_collator=LMCollator(tokenizer.pad_token_id, decoder_start_token_id=config.decoder_start_token_id))
    trainer.train()
    kl = [entry["kl_loss"] for entry in trainer.state.log_history if "kl_loss" in entry]
    return [b - a for a, b in zip(ends[args.warmup - 1 : -1], ends[args.warmup :])], kl


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    if args.small:
        args.steps, args.warmup, args.repeats, args.batch_size, args.length = 3, 1, 1, 4, 16
    tmp = tempfile.mkdtemp()
    tokenizer, kl_file, rows, config = setup(args, tmp)
    times: dict[str, list[float]] = {"off": [], "on": []}
    kl_logged: list[float] = []
    for repeat in range(args.repeats):
        for side in ("off", "on"):
            spent, kl = step_times(args, tokenizer, config, rows, kl_file if side == "on" else None, os.path.join(tmp, f"{side}{repeat}"))
            times[side] += spent
            kl_logged += kl
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    n = args.kl_examples_per_step or args.batch_size
    print(f"KL term cost: T5 d_model {config.d_model}, {config.num_layers}+{config.num_decoder_layers} layers, batch {args.batch_size}, "
          f"{n} KL examples a step, {args.length} tokens; {args.repeats} x {args.steps} timed steps per side")
    print(f"  step time off: {off * 1000:.1f} ms   on: {on * 1000:.1f} ms   ratio on/off: {on / off:.2f}x (target <= 2.5x)")
    print(f"  {machine()}")
    report = {"off_s": off, "on_s": on, "ratio": on / off, "kl_loss_logged": kl_logged, "machine": machine()}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
