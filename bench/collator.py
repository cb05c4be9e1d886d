"""Time T5DataCollator against a plain per-example implementation of the same span corruption.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/collator.py --batch_size 128 --input_length 512 --repeats 50

The per-example side follows HF's Flax pre-training collator (run_t5_mlm_flax.py) and nanoT5: one
numpy mask per row (T5's `_random_segmentation`: shuffle a 0/1 "new segment" indicator, cumsum,
np.unique for the segment lengths), stacked; then batch-wide sentinel insertion with -1 markers for
the tokens to drop, EOS appended, torch tensors and decoder_input_ids. Both sides take the same list
of `{"input_ids": ...}` examples and return the same three int64 tensors; runs are interleaved in one
process after a warm-up, and the table shows the median of `--repeats` batches. Rows are numpy arrays
by default, as pre_train_t5.py delivers them (its packed dataset has the numpy format);
`--row_format lists` feeds Python lists instead. The rows->array row times only the stacking of the
examples into one int64 array, which both sides do first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data_collators import T5DataCollator, compute_input_and_target_lengths  # noqa: E402

VOCAB_SIZE, NUM_SENTINELS, PAD, EOS = 32100, 100, 0, 1  # T5's vocabulary: <extra_id_0> = 32099


class StubTokenizer:
    """What a collator reads from a T5 tokenizer: pad, EOS and the descending sentinel ids."""

    pad_token_id, eos_token_id, unk_token_id = PAD, EOS, 2

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        return [VOCAB_SIZE - 1 - int(t[len("<extra_id_") : -1]) for t in tokens]


def segment_lengths(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of a uniformly random cut of `num_items` into `num_segments` non-empty segments."""
    new_segment_after = np.arange(num_items - 1) < num_segments - 1  # which items end a segment, shuffled
    rng.shuffle(new_segment_after)
    segment_of_item = np.cumsum(np.concatenate([[0], new_segment_after]))
    return np.unique(segment_of_item, return_counts=True)[1]


def noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """One row's mask (True = noise), spans alternating non-noise / noise (T5's random_spans_noise_mask)."""
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = min(max(int(round(num_noise / mean_noise_span_length)), 1), length - num_noise)  # HF #22246
    noise = segment_lengths(num_noise, num_spans, rng)
    nonnoise = segment_lengths(length - num_noise, num_spans, rng)
    span_starts = np.cumsum(np.stack([nonnoise, noise], axis=1).reshape(-1))[:-1]
    is_span_start = np.zeros(length, dtype=np.int8)
    is_span_start[span_starts] = 1
    return np.cumsum(is_span_start) % 2 == 1  # odd-numbered spans are noise


class PerExampleCollator:
    """The same output as T5DataCollator, built the HF Flax / nanoT5 way."""

    def __init__(
        self, sentinels: np.ndarray, length: int, noise_density: float, mean_noise_span_length: float, seed: int = 0
    ) -> None:
        self.sentinels, self.length = sentinels, length
        self.noise_density, self.mean_noise_span_length = noise_density, mean_noise_span_length
        self.rng = np.random.default_rng(seed)

    def marks(self, dropped: np.ndarray) -> np.ndarray:
        """Per position: the sentinel id where a dropped span starts, -1 in the rest of it, 0 elsewhere."""
        previous = np.zeros_like(dropped)
        previous[:, 1:] = dropped[:, :-1]
        span_start = dropped & ~previous
        span_index = np.cumsum(span_start, axis=1) - 1
        out = np.where(span_start, self.sentinels[span_index], 0)
        return np.where(dropped & ~span_start, -1, out)

    def squeeze(self, ids: np.ndarray, marks: np.ndarray) -> np.ndarray:
        merged = np.where(marks != 0, marks, ids)
        kept = merged[merged >= 0].reshape(len(ids), -1)  # token ids are >= 0, so -1 marks only drops
        return np.concatenate([kept, np.full((len(ids), 1), EOS, dtype=np.int64)], axis=1)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = np.array([example["input_ids"] for example in examples], dtype=np.int64)
        mask = np.stack(  # one row at a time
            [noise_mask(self.length, self.noise_density, self.mean_noise_span_length, self.rng) for _ in ids]
        )
        input_ids = self.squeeze(ids, self.marks(mask))
        labels = self.squeeze(ids, self.marks(~mask))
        decoder_input_ids = np.zeros_like(labels)  # starts with the pad id
        decoder_input_ids[:, 1:] = labels[:, :-1]
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "decoder_input_ids": torch.from_numpy(decoder_input_ids),
        }


def reconstruct(input_ids: list[int], labels: list[int], sentinels: set[int]) -> list[int]:
    """Put each input sentinel's span (read from the labels) back in its place."""
    spans: dict[int, list[int]] = {}
    for token in labels[:-1]:  # drop EOS
        if token in sentinels:
            current = spans[token] = []
        else:
            current.append(token)
    return [t for token in input_ids[:-1] for t in (spans[token] if token in sentinels else [token])]


def check(name: str, batch: dict[str, torch.Tensor], examples: list[dict[str, Any]], sentinels: set[int]) -> None:
    for key, value in batch.items():
        assert value.dtype == torch.int64, (name, key, value.dtype)
    for example, inputs, labels in zip(examples, batch["input_ids"].tolist(), batch["labels"].tolist()):
        assert reconstruct(inputs, labels, sentinels) == list(example["input_ids"]), f"{name}: reconstruction failed"
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1]), name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--input_length", type=int, default=512, help="corrupted input length (568 raw tokens at 512)")
    parser.add_argument("--noise_density", type=float, default=0.15)
    parser.add_argument("--mean_noise_span_length", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=50, help="timed batches per side; the median is reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--row_format", choices=("numpy", "lists"), default="numpy", help="how each example's ids arrive")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    # Set-up: both collators, and distinct batches of raw rows (literal pad and EOS ids included).
    vectorised = T5DataCollator(
        StubTokenizer(), args.noise_density, args.mean_noise_span_length, input_length=args.input_length
    )
    length, _ = compute_input_and_target_lengths(args.input_length, args.noise_density, args.mean_noise_span_length)
    per_example = PerExampleCollator(vectorised.sentinels, length, args.noise_density, args.mean_noise_span_length)
    rng = np.random.default_rng(0)
    batches = [
        [{"input_ids": row.tolist() if args.row_format == "lists" else row}
         for row in rng.integers(0, VOCAB_SIZE - NUM_SENTINELS, (args.batch_size, length))]
        for _ in range(args.warmup + args.repeats)
    ]

    # Sanity: same shapes, and both put every original token back.
    sentinels = set(vectorised.sentinels.tolist())
    a, b = vectorised(batches[0]), per_example(batches[0])
    for key in a:
        assert a[key].shape == b[key].shape, (key, tuple(a[key].shape), tuple(b[key].shape))
    check("T5DataCollator", a, batches[0], sentinels)
    check("per-example", b, batches[0], sentinels)

    # Timing: interleaved, alternating which side goes first; warm-up batches are not counted.
    sides: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
        "T5DataCollator": vectorised,
        "per-example": per_example,
        "rows->array": lambda batch: np.array([e["input_ids"] for e in batch], dtype=np.int64),  # both pay this
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i, batch in enumerate(batches):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]
        for name in order:
            start = time.perf_counter()
            sides[name](batch)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)

    # Report.
    shape = f"{args.batch_size} x {length}"
    print(f"batch {shape} tokens -> input_ids {tuple(a['input_ids'].shape)}, labels {tuple(a['labels'].shape)}; "
          f"{args.repeats} batches per side, torch {torch.__version__}, numpy {np.__version__}")
    print(f"{'collator':<16}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'rows/s':>10}")
    for name, ts in times.items():
        median = statistics.median(ts)
        rate = args.batch_size / median
        print(f"{name:<16}{median * 1e3:>11.2f}{min(ts) * 1e3:>9.2f}{max(ts) * 1e3:>9.2f}{rate:>10.0f}")
    ratio = statistics.median(times["per-example"]) / statistics.median(times["T5DataCollator"])
    # Net of the shared conversion; from the fastest runs, as a difference of medians is too noisy.
    floor = min(times["rows->array"])
    core = (min(times["per-example"]) - floor) / (min(times["T5DataCollator"]) - floor)
    print(f"T5DataCollator is {ratio:.1f}x faster than the per-example implementation at batch {shape} "
          f"(~{core:.0f}x on the work after the rows->array stacking both share, best runs)")


if __name__ == "__main__":
    main()
