"""Time T5DataCollator against a plain per-example implementation of the same span corruption,
on rows of Python lists and on numpy rows, side by side in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/collator.py --batch_size 128 --input_length 512 --repeats 50

The per-example side follows HF's Flax pre-training collator (run_t5_mlm_flax.py) and nanoT5: one
numpy mask per row (T5's `_random_segmentation`: shuffle a 0/1 "new segment" indicator, cumsum,
np.unique for the segment lengths), stacked; then batch-wide sentinel insertion with -1 markers for
the tokens to drop, EOS appended, torch tensors and decoder_input_ids. Both sides take the same list
of `{"input_ids": ...}` examples and return the same three int64 tensors. The same token ids are fed
twice: each row a Python list, and each row a numpy array (a view of one batch array, as a
numpy-formatted `datasets.Dataset` hands them out). All six (collator, row format) pairs run
interleaved in one process after a warm-up; the table shows the median of `--repeats` batches. The
rows->array lines time only the stacking of the examples into one int64 array, which both
collators do first. The last line states which format pre_train_t5.py's rows have, read from
`corpus.tokenize_and_pack` and `corpus.split_off_validation` run on a few documents.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
ROW_FORMATS = ("lists", "numpy")
COLLATORS = ("T5DataCollator", "per-example", "rows->array")


class StubTokenizer:
    """What the collator and corpus.tokenize_and_pack read from a T5 tokenizer: pad, EOS, the
    descending sentinel ids, and ids for text (one per word, then EOS)."""

    pad_token_id, eos_token_id, unk_token_id = PAD, EOS, 2

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        return [VOCAB_SIZE - 1 - int(t[len("<extra_id_") : -1]) for t in tokens]

    def __call__(self, texts: list[str], **_: Any) -> dict[str, list[list[int]]]:
        return {"input_ids": [[3 + sum(map(ord, word)) % 1000 for word in text.split()] + [EOS] for text in texts]}


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


def pipeline_row_format(length: int) -> str:
    """The type of `input_ids` in the rows pre_train_t5.py hands the collator: pack a few documents with
    corpus.tokenize_and_pack, hold out validation with split_off_validation and add the `row_id`
    column as pre_train_t5.py does."""
    import datasets

    from corpus import split_off_validation, tokenize_and_pack

    documents = [" ".join(f"word{(i * 7 + j) % 50}" for j in range(40)) for i in range(4 * length)]
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": documents})})
    datasets.disable_progress_bars()
    packed = tokenize_and_pack(raw, StubTokenizer(), length, "text", None, lambda desc="": contextlib.nullcontext())
    train, _ = split_off_validation(packed, 5.0, 0, 8, "bench")
    train = train.map(lambda _, i: {"row_id": i}, with_indices=True)
    ids = train[0]["input_ids"]
    return "numpy" if isinstance(ids, np.ndarray) else "lists" if isinstance(ids, list) else type(ids).__name__


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--input_length", type=int, default=512, help="corrupted input length (568 raw tokens at 512)")
    parser.add_argument("--noise_density", type=float, default=0.15)
    parser.add_argument("--mean_noise_span_length", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=50, help="timed batches per side; the median is reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)

    # Set-up: both collators, and distinct batches of raw rows (literal pad and EOS ids included), each
    # batch once as Python lists and once as numpy rows (views of one array) holding the same ids.
    vectorised = T5DataCollator(
        StubTokenizer(), args.noise_density, args.mean_noise_span_length, input_length=args.input_length
    )
    length, _ = compute_input_and_target_lengths(args.input_length, args.noise_density, args.mean_noise_span_length)
    per_example = PerExampleCollator(vectorised.sentinels, length, args.noise_density, args.mean_noise_span_length)
    rng = np.random.default_rng(0)
    shape = (args.batch_size, length)
    blocks = [rng.integers(0, VOCAB_SIZE - NUM_SENTINELS, shape) for _ in range(args.warmup + args.repeats)]
    batches = {
        "lists": [[{"input_ids": row.tolist()} for row in block] for block in blocks],
        "numpy": [[{"input_ids": row} for row in block] for block in blocks],
    }

    # Sanity: same shapes, both put every original token back, and the row format changes nothing.
    sentinels = set(vectorised.sentinels.tolist())
    for row_format in ROW_FORMATS:
        a, b = vectorised(batches[row_format][0]), per_example(batches[row_format][0])
        for key in a:
            assert a[key].shape == b[key].shape, (key, tuple(a[key].shape), tuple(b[key].shape))
        check(f"T5DataCollator on {row_format}", a, batches[row_format][0], sentinels)
        check(f"per-example on {row_format}", b, batches[row_format][0], sentinels)
    settings = (args.noise_density, args.mean_noise_span_length, args.input_length)
    same_noise = [T5DataCollator(StubTokenizer(), *settings)(batches[row_format][0]) for row_format in ROW_FORMATS]
    for key in a:
        assert torch.equal(same_noise[0][key], same_noise[1][key]), f"lists and numpy rows differ in {key}"

    # Timing: all six sides interleaved, alternating the order; warm-up batches are not counted.
    collators: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
        "T5DataCollator": vectorised,
        "per-example": per_example,
        "rows->array": lambda batch: np.array([e["input_ids"] for e in batch], dtype=np.int64),  # both pay this
    }
    sides = [(name, row_format) for row_format in ROW_FORMATS for name in COLLATORS]
    times: dict[tuple[str, str], list[float]] = {side: [] for side in sides}
    for i in range(args.warmup + args.repeats):
        for name, row_format in sides if i % 2 == 0 else sides[::-1]:
            batch = batches[row_format][i]
            start = time.perf_counter()
            collators[name](batch)
            if i >= args.warmup:
                times[name, row_format].append(time.perf_counter() - start)

    # Report.
    pipeline = pipeline_row_format(length)
    print(f"batch {args.batch_size} x {length} tokens -> input_ids {tuple(a['input_ids'].shape)}, "
          f"labels {tuple(a['labels'].shape)}; "
          f"{args.repeats} batches per side, torch {torch.__version__}, numpy {np.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'collator':<16}{'rows':<7}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'rows/s':>10}")
    for (name, row_format), ts in times.items():
        median = statistics.median(ts)
        print(f"{name:<16}{row_format:<7}{median * 1e3:>11.2f}{min(ts) * 1e3:>9.2f}{max(ts) * 1e3:>9.2f}"
              f"{args.batch_size / median:>10.0f}")
    report: dict[str, Any] = {"batch_size": args.batch_size, "row_length": length, "repeats": args.repeats,
                              "pipeline_row_format": pipeline, "formats": {}}
    for row_format in ROW_FORMATS:
        median = {name: statistics.median(times[name, row_format]) for name in COLLATORS}
        best = {name: min(times[name, row_format]) for name in COLLATORS}
        ratio = median["per-example"] / median["T5DataCollator"]
        # Net of the shared conversion; from the fastest runs, as a difference of medians is too noisy.
        core = (best["per-example"] - best["rows->array"]) / (best["T5DataCollator"] - best["rows->array"])
        print(f"{row_format} rows: T5DataCollator is {ratio:.1f}x faster than the per-example implementation "
              f"(~{core:.0f}x on the work after the rows->array stacking both share, best runs)")
        report["formats"][row_format] = {**{f"{name}_median_ms": t * 1e3 for name, t in median.items()},
                                         "speedup": ratio, "speedup_after_stacking": core}
    lists_ms, numpy_ms = (report["formats"][f]["T5DataCollator_median_ms"] for f in ROW_FORMATS)
    print(f"T5DataCollator takes {numpy_ms:.2f} ms a batch on numpy rows against {lists_ms:.2f} ms on lists "
          f"({lists_ms / numpy_ms:.1f}x)")
    print(f"pre_train_t5.py hands the collator {pipeline} rows (corpus.tokenize_and_pack -> split_off_validation "
          "-> row_id map)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
