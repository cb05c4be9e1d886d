"""T5 span corruption (Raffel et al. 2020, "Exploring the Limits of Transfer Learning", sec. 3.1.4).

A reproduction of Google's `random_spans_noise_mask`, `noise_span_to_unique_sentinel` and
`nonnoise_span_to_unique_sentinel` (google-research/text-to-text-transfer-transformer,
t5/data/preprocessors.py), the same algorithm as HF's Flax pre-training example
(run_t5_mlm_flax.py) and nanoT5, but vectorised over the whole batch.

For an example of `expanded_length` tokens (568 for 512 / 0.15 / 3.0):
  - `num_noise = round(expanded_length * noise_density)`, clipped to [1, expanded_length - 1];
  - `num_spans = max(round(num_noise / mean_noise_span_length), 1)`, and never more than the number
    of noise or of non-noise tokens (HF #22246: short rows at high density asked for more non-noise
    spans than there were non-noise tokens);
  - the noise and the non-noise tokens are each cut into `num_spans` non-empty spans, every
    segmentation equally likely; spans alternate, starting with non-noise (so the row ends in noise);
  - inputs:  nonnoise_0 <extra_id_0> nonnoise_1 <extra_id_1> ... nonnoise_k <extra_id_k> </s>
  - labels:  <extra_id_0> noise_0 <extra_id_1> noise_1 ... <extra_id_k> noise_k </s>

Rounding uses Python floats, as the HF and nanoT5 collators do. Google's TF code computed
`length * noise_density` in float32, which rounds differently at a few lengths; the counts here and
in `compute_input_and_target_lengths` come from one function, so they always agree with each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch


def _noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(num_noise_tokens, num_noise_spans) for a row of `length` tokens."""
    if length < 2:
        raise ValueError(f"span corruption needs rows of at least 2 tokens, got {length}")
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    # Each span needs at least one token on both sides of the alternation (HF #22246).
    num_spans = min(num_spans, num_noise, length - num_noise)
    return num_noise, num_spans


def _corrupted_lengths(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(inputs_length, targets_length) after corrupting a row of `length` tokens, EOS included."""
    num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
    return length - num_noise + num_spans + 1, num_noise + num_spans + 1


def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """The raw row length that corrupts to at most `inputs_length` tokens, and its targets length.

    T5's `random_spans_helper`: the longest `tokens_length` (searching up from inputs_length - 1)
    whose corrupted input fits. (512, 0.15, 3.0) -> (568, 114). Where no length corrupts to exactly
    `inputs_length` (mean span 1 at density 0.5, the HF #22246 cap at high density), the collator pads
    the inputs.
    """
    tokens_length = inputs_length - 1
    while _corrupted_lengths(tokens_length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = _corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)
    # T5's tweak: at density 0.5 make targets no longer than inputs (a round number is likelier there).
    # T5 then assumes one token fewer gives one target fewer; it does not always (e.g. 131 / 0.5 / 3),
    # so the targets length is recomputed.
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        _, targets_length = _corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)
    return tokens_length, targets_length


def _random_cuts(num_items: int, num_segments: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted cut points (batch, num_segments + 1) splitting `num_items` into non-empty segments.

    Row b's segment j is [cuts[b, j], cuts[b, j + 1]). The inner cuts are a uniformly random
    (num_segments - 1)-subset of the slots {1, ..., num_items - 1}, so every segmentation is equally
    likely, as with T5's shuffle of a 0/1 indicator.
    """
    cuts = np.empty((batch_size, num_segments + 1), dtype=np.int64)
    cuts[:, 0], cuts[:, -1] = 0, num_items
    k, slots = num_segments - 1, num_items - 1
    if k == slots:
        cuts[:, 1:-1] = np.arange(1, num_items)
    elif k > 0 and k * (k - 1) <= 2 * slots:
        cuts[:, 1:-1] = _sparse_subsets(slots, k, batch_size, rng)
    elif k > 0:
        cuts[:, 1:-1] = _dense_subsets(slots, k, batch_size, rng)
    return cuts


def _sparse_subsets(slots: int, k: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted uniform k-subsets of {1..slots} when k is small: k i.i.d. draws, redrawn until distinct.

    Conditioning i.i.d. draws on being distinct makes every subset equally likely; with
    k(k-1)/2 <= slots at least ~37% of draws are distinct (the non-noise cuts of 568 / 0.15 / 3).
    """
    picks = np.sort(rng.integers(1, slots + 1, size=(batch_size, k)), axis=1)
    repeat = (picks[:, 1:] == picks[:, :-1]).any(axis=1)
    while repeat.any():
        rows = np.flatnonzero(repeat)
        redrawn = np.sort(rng.integers(1, slots + 1, size=(len(rows), k)), axis=1)
        picks[rows] = redrawn
        repeat[rows] = (redrawn[:, 1:] == redrawn[:, :-1]).any(axis=1)
    return picks


def _dense_subsets(slots: int, k: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted uniform k-subsets of {1..slots}: the slots holding the k smallest of i.i.d. random keys.

    Keys are float32 (partitioning them is ~4x faster than float64); a row whose k-th and (k+1)-th
    keys tie is drawn again, which keeps the choice exactly uniform.
    """
    keys = rng.random((batch_size, slots), dtype=np.float32)
    while True:
        threshold = np.partition(keys, k - 1, axis=1)[:, k - 1 : k]
        chosen = keys <= threshold
        ties = np.count_nonzero(chosen, axis=1) != k
        if not ties.any():
            return np.nonzero(chosen)[1].reshape(batch_size, k) + 1
        keys[ties] = rng.random((int(ties.sum()), slots), dtype=np.float32)


def _span_starts(
    batch_size: int, length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end positions (batch, num_spans) of the noise spans of `batch_size` random masks."""
    num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
    noise_cuts = _random_cuts(num_noise, num_spans, batch_size, rng)
    nonnoise_cuts = _random_cuts(length - num_noise, num_spans, batch_size, rng)
    # Noise span j comes after non-noise spans 0..j and noise spans 0..j-1; it ends where non-noise
    # span j + 1 starts (the last one ends at `length`).
    starts = nonnoise_cuts[:, 1:] + noise_cuts[:, :-1]
    ends = nonnoise_cuts[:, 1:] + noise_cuts[:, 1:]
    return starts, ends


def _paint(starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Boolean (batch, length) mask that is True on [starts[b, j], ends[b, j]) for every span j."""
    batch_size = starts.shape[0]
    delta = np.zeros((batch_size, length + 1), dtype=np.int8)
    rows = np.arange(batch_size)[:, None]
    delta[rows, starts] = 1
    delta[rows, ends] = -1  # the last span ends at `length`, the spare column
    # The running sum is 0 or 1, so its bytes are valid booleans.
    return np.cumsum(delta[:, :length], axis=1, dtype=np.int8).view(bool)


def random_spans_noise_mask_batch(
    batch_size: int, length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """`batch_size` independent span-corruption masks (bool, batch x length), True = noise."""
    starts, ends = _span_starts(batch_size, length, noise_density, mean_noise_span_length, rng)
    return _paint(starts, ends, length)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """One span-corruption mask (bool, length), True = noise: T5's `random_spans_noise_mask`."""
    return random_spans_noise_mask_batch(1, length, noise_density, mean_noise_span_length, rng)[0]


def sentinel_ids(tokenizer: Any, count: int) -> np.ndarray:
    """Ids of `<extra_id_0>` ... `<extra_id_{count-1}>`, read from the tokenizer.

    For a standard T5 vocabulary these descend from len(tokenizer) - 1 (HF #14282 shows what goes
    wrong when a collator assumes instead of asking).
    """
    tokens = [f"<extra_id_{i}>" for i in range(count)]
    ids = tokenizer.convert_tokens_to_ids(tokens)
    unk = getattr(tokenizer, "unk_token_id", None)
    missing = [t for t, i in zip(tokens, ids) if i is None or i == unk]
    if missing:
        raise ValueError(
            f"span corruption needs {count} sentinel tokens <extra_id_0>..<extra_id_{count - 1}>, but the "
            f"tokenizer lacks {missing[0]} ({len(missing)} missing); use a T5 tokenizer with extra_ids >= {count}"
        )
    return np.asarray(ids, dtype=np.int64)


def _stack(examples: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """The examples' `key` values as one int64 array (batch, length).

    numpy rows are copied whole, in C (~0.15 ms for 128 x 568 tokens); rows of Python ints are converted
    one int at a time (2-3.5 ms, about as long as the span corruption itself; bench/collator.py).
    `np.asarray` of a list of arrays is also faster than `np.stack`, which reshapes every row in Python.
    """
    return np.asarray([example[key] for example in examples], dtype=np.int64)


class _WorkerSeededRng:
    """A collator's numpy generator `self.rng`, seeded from `self.seed` and reseeded in each DataLoader worker."""

    seed: int
    rng: np.random.Generator
    _worker_seed: int | None = None  # torch's seed of the DataLoader worker that owns self.rng

    def _reseed_in_worker(self) -> None:
        """Give each DataLoader worker its own noise stream: copies of one generator would repeat masks.

        torch draws a fresh seed per worker and per epoch (from the seeded main process), so workers
        differ from each other and from one epoch to the next, reproducibly.
        """
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self.rng = np.random.default_rng([self.seed, info.seed])
            self._worker_seed = info.seed


class T5DataCollator(_WorkerSeededRng):
    """Span-corrupts packed rows into T5 `input_ids`, `labels` and `decoder_input_ids` tensors.

    Examples are `{"input_ids": [...]}` of exactly `expanded_length` tokens (see
    `compute_input_and_target_lengths`); every row of a batch then corrupts to the same number of
    inputs and `target_length` labels. That is exactly `input_length` for T5's settings; in the few
    settings where no row length corrupts to exactly `input_length`, inputs are right-padded and an
    `attention_mask` is added.
    Token ids are never used as markers: a literal pad or EOS id inside the text is just a token
    (HF #15359).
    """

    def __init__(
        self,
        tokenizer: Any,
        noise_density: float = 0.15,
        mean_noise_span_length: float = 3.0,
        input_length: int = 512,
        target_length: int | None = None,
        decoder_start_token_id: int | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 < noise_density < 1.0:
            raise ValueError(f"noise_density must lie in (0, 1), got {noise_density}")
        if mean_noise_span_length < 1.0:
            raise ValueError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.input_length = input_length
        self.expanded_length, computed_target_length = compute_input_and_target_lengths(
            input_length, noise_density, mean_noise_span_length
        )
        if target_length is not None and target_length != computed_target_length:
            raise ValueError(
                f"target_length {target_length} does not match input_length {input_length} at noise density "
                f"{noise_density} and mean span {mean_noise_span_length}: it must be {computed_target_length} "
                "(or None to compute it)"
            )
        self.target_length = computed_target_length
        _, self.num_spans = _noise_counts(self.expanded_length, noise_density, mean_noise_span_length)
        self.padding = input_length - _corrupted_lengths(self.expanded_length, noise_density, mean_noise_span_length)[0]
        self.sentinels = sentinel_ids(tokenizer, self.num_spans)
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id
        # T5 starts decoding from the pad id.
        self.decoder_start_token_id = self.pad_token_id if decoder_start_token_id is None else decoder_start_token_id
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None  # torch's seed of the DataLoader worker that owns self.rng

    def corrupt(self, input_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Span-corrupt a (batch, expanded_length) int array into numpy input_ids, labels and decoder_input_ids."""
        batch_size, length = input_ids.shape
        if length != self.expanded_length:
            raise ValueError(
                f"examples must hold {self.expanded_length} tokens (input_length {self.input_length} before "
                f"corruption, noise density {self.noise_density}), got {length}"
            )
        starts, ends = _span_starts(batch_size, length, self.noise_density, self.mean_noise_span_length, self.rng)
        noise = _paint(starts, ends, length)
        rows = np.arange(batch_size)[:, None]
        ids = input_ids.astype(np.int64, copy=False)

        # Inputs: each noise span collapses to its sentinel, written over the span's first token.
        inputs = ids.copy()
        inputs[rows, starts] = self.sentinels
        keep = ~noise
        keep[rows, starts] = True
        # Every row keeps the same number of tokens, so the selection reshapes to a rectangle.
        inputs = inputs[keep].reshape(batch_size, -1)

        # Labels: each non-noise span collapses to a sentinel. Non-noise span 0 starts at position 0,
        # span j + 1 where noise span j ends.
        label_sentinel_at = np.concatenate([np.zeros((batch_size, 1), dtype=np.int64), ends[:, :-1]], axis=1)
        labels = ids.copy()
        labels[rows, label_sentinel_at] = self.sentinels
        keep = noise.copy()
        keep[rows, label_sentinel_at] = True
        labels = labels[keep].reshape(batch_size, -1)

        eos = np.full((batch_size, 1), self.eos_token_id, dtype=np.int64)
        labels = np.concatenate([labels, eos], axis=1)
        decoder_input_ids = np.empty_like(labels)  # labels shifted right behind the start token
        decoder_input_ids[:, 0] = self.decoder_start_token_id
        decoder_input_ids[:, 1:] = labels[:, :-1]
        batch = {"input_ids": np.concatenate([inputs, eos], axis=1), "labels": labels, "decoder_input_ids": decoder_input_ids}
        if self.padding > 0:
            batch["attention_mask"] = np.ones((batch_size, self.input_length), dtype=np.int64)
            batch["attention_mask"][:, -self.padding :] = 0
            pad = np.full((batch_size, self.padding), self.pad_token_id, dtype=np.int64)
            batch["input_ids"] = np.concatenate([batch["input_ids"], pad], axis=1)
        return batch

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Corrupt a list of `{"input_ids": ...}` rows into a batch of torch tensors.

        Each row's ids may be a numpy array (what pre_train_t5.py hands over: corpus.tokenize_and_pack
        formats the packed rows as numpy) or a list of ints. Rows corrupted ahead of time (holding
        `labels`, e.g. a fixed validation set) are only stacked. Rows carrying a `row_id` get noise
        derived from the seed and the batch's row ids.
        """
        import torch

        if examples and "labels" in examples[0]:
            keys = [key for key in ("input_ids", "labels", "decoder_input_ids", "attention_mask") if key in examples[0]]
            return {key: torch.from_numpy(_stack(examples, key)) for key in keys}
        self._reseed_in_worker()
        if examples and "row_id" in examples[0]:
            # Noise from (seed, the rows of this batch): a resumed run and any DataLoader worker draw
            # the same masks for the same batch, whatever happened before it.
            self.rng = np.random.default_rng([self.seed] + [int(example["row_id"]) for example in examples])
        try:
            ids = _stack(examples, "input_ids")
        except ValueError as err:  # ragged rows
            lengths = sorted({len(example["input_ids"]) for example in examples})
            raise ValueError(f"examples must all hold {self.expanded_length} tokens, got lengths {lengths}") from err
        if ids.ndim != 2:
            raise ValueError(f"examples must be lists of {self.expanded_length} token ids, got shape {ids.shape}")
        return {key: torch.from_numpy(value) for key, value in self.corrupt(ids).items()}


class PaddingCounter:
    """Wraps a padding collator and counts real and padded tokens of the batches it builds.

    `padded_fraction` is the share of input and label positions that are padding: what dynamic
    padding and length-grouped sampling are there to keep small.
    """

    def __init__(self, collator: Any, pad_token_id: int, label_pad_token_id: int = -100) -> None:
        self.collator = collator
        self.pad_token_id = pad_token_id
        self.label_pad_token_id = label_pad_token_id
        self.real_tokens = 0
        self.positions = 0

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Any:
        # DataCollatorForSeq2Seq returns labels=None for unlabeled features; the Seq2SeqTrainer would
        # then take the batch for a labeled one.
        batch = {key: value for key, value in self.collator(features).items() if value is not None}
        if "attention_mask" in batch:
            self.real_tokens += int(batch["attention_mask"].sum())
            self.positions += batch["attention_mask"].numel()
        if "labels" in batch:
            self.real_tokens += int(batch["labels"].ne(self.label_pad_token_id).sum())
            self.positions += batch["labels"].numel()
        return batch

    @property
    def padded_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.positions if self.positions else 0.0


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


class LMCollator(_WorkerSeededRng):
    """Right-pads a causal, masked or T5 LM's examples into `input_ids`, `attention_mask` and `labels`.

    With `preprocess` (finetune_lm.py's per_batch strategy, e.g. lm_preprocessing.BoundPreprocessing)
    the batch's examples are first preprocessed with this collator's numpy generator, so every batch
    gets new masks (one stream per DataLoader worker). Labels are padded with -100 to the longest label
    row (a seq2seq row's labels may be longer or shorter than its inputs); an example without labels
    gets a copy of its inputs. Other keys (text, metadata) are dropped, except `source` (the index of
    the original example) with `keep_source`. With `decoder_start_token_id` (encoder-decoders) the batch
    also holds `decoder_input_ids`: the labels shifted right behind that token.
    """

    def __init__(
        self,
        pad_token_id: int,
        preprocess: Callable[[list[dict], np.random.Generator], list[dict]] | None = None,
        seed: int = 0,
        keep_source: bool = False,
        decoder_start_token_id: int | None = None,
    ) -> None:
        self.pad_token_id = pad_token_id
        self.decoder_start_token_id = decoder_start_token_id  # encoder-decoders: add decoder_input_ids
        self.preprocess = preprocess
        self.keep_source = keep_source
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        import torch

        features = list(features)
        if self.preprocess is not None:
            self._reseed_in_worker()
            features = self.preprocess(features, self.rng)
        inputs = [np.asarray(f["input_ids"], dtype=np.int64) for f in features]
        labels = [
            row if f.get("labels") is None else np.asarray(f["labels"], dtype=np.int64) for row, f in zip(inputs, features)
        ]
        batch = {
            "input_ids": _pad_rows(inputs, self.pad_token_id),
            "attention_mask": _pad_rows([np.ones_like(row) for row in inputs], 0),
            "labels": _pad_rows(labels, -100),
        }
        if self.decoder_start_token_id is not None:
            # The labels shifted right behind the start token (padding -> pad), as T5's _shift_right does: the
            # Trainer takes the labels out of the batch before the forward pass when a loss function is given.
            decoder_input_ids = np.empty_like(batch["labels"])
            decoder_input_ids[:, 0] = self.decoder_start_token_id
            decoder_input_ids[:, 1:] = batch["labels"][:, :-1]
            decoder_input_ids[decoder_input_ids == -100] = self.pad_token_id
            batch["decoder_input_ids"] = decoder_input_ids
        if self.keep_source:
            missing = [i for i, f in enumerate(features) if "source" not in f]
            if missing:
                raise ValueError(f"keep_source needs a 'source' in every example; batch example {missing[0]} has none")
            batch["source"] = np.asarray([f["source"] for f in features], dtype=np.int64)
        return {key: torch.from_numpy(value) for key, value in batch.items()}


def _pad_rows(rows: Sequence[np.ndarray], value: int) -> np.ndarray:
    """Right-pad 1-D int rows with `value` into one (len(rows), longest) int64 array."""
    out = np.full((len(rows), max((len(row) for row in rows), default=0)), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
