"""Preprocessing functions for fine-tuning a causal, masked or T5 LM (the `finetune-lm` toolkit's
`data_preprocessing.py`): identity, masks BERT-style (Devlin et al. 2019, sec. 3.1) and T5 span
corruption (Raffel et al. 2020, sec. 3.1.4).

A split names one function, its kwargs and a strategy: `once` (applied to the whole split before
training) or `per_batch` (applied by `data_collators.LMCollator`, new masks each batch).
`check_preprocessing` validates a choice before anything heavy is loaded; `preprocess` applies it.

Only positions whose id is not special (`TokenInfo.special_ids`) are ever masked, so BERT's
[CLS]/[SEP], T5's `</s>` and GPT-2's BOS stay. Chosen positions become:
  - mlm: the mask token; labels hold the original id there and -100 elsewhere;
  - seq2seq: T5 inputs and targets, each noise span one sentinel (numbered in order of the spans):
      inputs:  ... <extra_id_0> ... <extra_id_1> ... </s>
      labels:  <extra_id_0> span_0 <extra_id_1> span_1 ... </s>
Labels read from the data file are kept unchanged; masking then changes only the inputs.

Module-level imports are stdlib and numpy only: the scripts' light checks import this before torch.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from data_collators import random_spans_noise_mask_batch
from data_collators import sentinel_ids as read_sentinel_ids
from errors import UserError
from modeling import MODEL_TASKS

SPLITS = ("train", "validation", "test")
STRATEGIES = ("once", "per_batch")
IGNORE = -100  # label id the loss skips
BERT_REPLACEMENT_PROPS = {"mask": 0.8, "random": 0.1, "original": 0.1}  # Devlin et al. 2019, sec. 3.1
T5_REPLACEMENT_PROPS = {"mask": 1.0, "random": 0.0, "original": 0.0}  # every chosen token is noise
REQUIRED = object()  # a kwarg the user must give (it has no default)

Example = dict[str, Any]
Span = tuple[int, int]  # [start, end) positions in an example's input_ids


@dataclass(frozen=True)
class TokenInfo:
    """What the functions need to know about the tokenizer: which ids to use and which never to touch."""

    model_task: str  # "lm" | "mlm" | "seq2seq"
    mask_token_id: int | None  # mlm's mask token
    sentinel_ids: tuple[int, ...]  # seq2seq: <extra_id_0>, <extra_id_1>, ... (read from the tokenizer)
    eos_token_id: int | None
    unk_token_id: int | None
    special_ids: frozenset[int]  # never masked nor drawn as random replacements
    vocab_size: int  # len(tokenizer)
    encode: Callable[[str], list[int]]  # a word -> ids without special tokens
    id_to_token: Callable[[list[int]], list[str]] | None = None  # for messages only

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, model_task: str) -> TokenInfo:
        """Read the ids from a HF tokenizer. Sentinels are counted in the vocabulary and looked up by
        name (data_collators.sentinel_ids), never assumed to descend from the end of the vocabulary."""
        if model_task not in MODEL_TASKS:
            raise ValueError(f"model_task must be one of {', '.join(MODEL_TASKS)}, got {model_task!r}")
        sentinels: tuple[int, ...] = ()
        if model_task == "seq2seq":
            count = sum(1 for token in tokenizer.get_vocab() if re.fullmatch(r"<extra_id_\d+>", token))
            sentinels = tuple(int(i) for i in read_sentinel_ids(tokenizer, count)) if count else ()
        return cls(
            model_task=model_task,
            mask_token_id=tokenizer.mask_token_id,
            sentinel_ids=sentinels,
            eos_token_id=tokenizer.eos_token_id,
            unk_token_id=tokenizer.unk_token_id,
            special_ids=frozenset(tokenizer.all_special_ids) | frozenset(sentinels),
            vocab_size=len(tokenizer),
            encode=functools.partial(tokenizer.encode, add_special_tokens=False),  # picklable for workers
            id_to_token=tokenizer.convert_ids_to_tokens,
        )


# ---------------------------------------------------------------------------------------------------
# Building the outputs from chosen spans


def _maskable(ids: Sequence[int], info: TokenInfo) -> list[int]:
    """Positions that may be masked: every id that is not special."""
    return [i for i, token in enumerate(ids) if token not in info.special_ids]


def _runs(positions: Sequence[int]) -> list[Span]:
    """Sorted positions merged into maximal runs of adjacent ones (a special token between two
    chosen positions keeps them apart)."""
    spans: list[Span] = []
    for p in sorted(positions):
        if spans and spans[-1][1] == p:
            spans[-1] = (spans[-1][0], p + 1)
        else:
            spans.append((p, p + 1))
    return spans


def _corrupt(
    example: Example, spans: list[Span], info: TokenInfo, name: str, replacements: Mapping[int, int] | None = None
) -> Example:
    """`example` with `spans` masked: mlm's mask tokens (or `replacements[position]`) or seq2seq's sentinels.

    Labels the example already holds are kept; otherwise they are built from the spans (module docstring).
    """
    ids, labels, out = example["input_ids"], example["labels"], dict(example)
    if info.model_task == "mlm":
        if info.mask_token_id is None:
            raise UserError(f"{name}: the tokenizer has no mask token, so it cannot mask tokens for a masked LM")
        inputs = list(ids)
        new_labels = [IGNORE] * len(ids)
        for start, end in spans:
            for p in range(start, end):
                inputs[p] = info.mask_token_id if replacements is None else replacements.get(p, info.mask_token_id)
                new_labels[p] = ids[p]
    else:  # seq2seq: T5's noise_span_to_unique_sentinel (inputs) and nonnoise_span_to_unique_sentinel (labels)
        if len(spans) > len(info.sentinel_ids):
            raise UserError(
                f"{name}: example {example['source'] + 1} needs {len(spans)} sentinels, "
                f"the tokenizer has {len(info.sentinel_ids)}"
            )
        inputs, new_labels, previous_end = [], [], 0
        for sentinel, (start, end) in zip(info.sentinel_ids, spans):
            inputs += [*ids[previous_end:start], sentinel]
            new_labels += [sentinel, *ids[start:end]]
            previous_end = end
        inputs += ids[previous_end:]
        if info.eos_token_id is not None:
            new_labels.append(info.eos_token_id)
    out["input_ids"] = inputs
    out["labels"] = new_labels if labels is None else labels
    return out


def _mask_chosen(examples: list[Example], chosen: list[list[int]], info: TokenInfo, name: str) -> list[Example]:
    """Mask each example's chosen positions; for seq2seq adjacent ones share one sentinel."""
    return [_corrupt(example, _runs(positions), info, name) for example, positions in zip(examples, chosen)]


def _num_masked(mask_prop: float, length: int) -> int:
    """max(round(mask_prop * L), 1) of L maskable tokens, as the original toolkit (Python's round)."""
    return max(int(round(mask_prop * length)), 1)


def _random_positions(
    examples: list[Example], mask_prop: float, info: TokenInfo, rng: np.random.Generator
) -> list[list[int]]:
    """Per example, `_num_masked` distinct maskable positions, every subset equally likely."""
    chosen = []
    for example in examples:
        maskable = _maskable(example["input_ids"], info)
        if not maskable:
            chosen.append([])
            continue
        picks = rng.choice(len(maskable), size=_num_masked(mask_prop, len(maskable)), replace=False)
        chosen.append(sorted(maskable[i] for i in picks))
    return chosen


def _random_non_special(info: TokenInfo, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` ids drawn uniformly from the non-special part of the vocabulary (redrawing specials)."""
    ids = rng.integers(0, info.vocab_size, size=size)
    special = np.isin(ids, list(info.special_ids))
    while special.any():
        ids[special] = rng.integers(0, info.vocab_size, size=int(special.sum()))
        special = np.isin(ids, list(info.special_ids))
    return ids


# ---------------------------------------------------------------------------------------------------
# The functions. Each takes normalised examples (input_ids and labels as lists, labels None when
# absent, source set) and returns output examples.


def identity(examples: list[Example], info: TokenInfo, rng: np.random.Generator) -> list[Example]:
    """Labels absent -> a copy of the input ids (a causal LM shifts them itself); else unchanged."""
    return [{**e, "labels": list(e["input_ids"]) if e["labels"] is None else e["labels"]} for e in examples]


def remove_non_mask_tokens_from_labels(
    examples: list[Example], info: TokenInfo, rng: np.random.Generator
) -> list[Example]:
    """Labels -100 wherever the input is not the mask token: for data with masks already in the text.

    Labels absent -> a copy of the input ids first (as the original toolkit).
    """
    out = []
    for example in identity(examples, info, rng):
        ids, labels = example["input_ids"], example["labels"]
        if len(labels) != len(ids):
            raise UserError(
                f"remove_non_mask_tokens_from_labels: example {example['source'] + 1} has {len(ids)} input tokens "
                f"but {len(labels)} labels; labels must align with the inputs, one per token"
            )
        kept = [label if token == info.mask_token_id else IGNORE for token, label in zip(ids, labels)]
        out.append({**example, "labels": kept})
    return out


def mask_random_tokens(
    examples: list[Example],
    info: TokenInfo,
    rng: np.random.Generator,
    mask_prop: float,
    replacement_props: Mapping[str, float] | None,
) -> list[Example]:
    """BERT's masked LM objective (Devlin et al. 2019, sec. 3.1): of L maskable tokens, choose
    max(round(mask_prop * L), 1) uniformly; each independently becomes the mask token, a random
    non-special id or stays (`replacement_props`, default 0.8 / 0.1 / 0.1). Labels: the chosen tokens.

    seq2seq: the chosen tokens are noise, adjacent ones under one sentinel (only props mask=1 is valid).
    """
    chosen = _random_positions(examples, mask_prop, info, rng)
    default = BERT_REPLACEMENT_PROPS if info.model_task == "mlm" else T5_REPLACEMENT_PROPS
    props = default if replacement_props is None else replacement_props
    if info.model_task != "mlm" or props["mask"] == 1.0:
        return _mask_chosen(examples, chosen, info, "mask_random_tokens")
    p = np.array([props["mask"], props["random"], props["original"]], dtype=float)
    out = []
    for example, positions in zip(examples, chosen):
        kind = rng.choice(3, size=len(positions), p=p / p.sum())  # 0 mask, 1 random, 2 original
        random_ids = _random_non_special(info, int((kind == 1).sum()), rng).tolist()
        replacements = {}
        for position, k in zip(positions, kind):
            if k == 1:
                replacements[position] = random_ids.pop()
            elif k == 2:
                replacements[position] = example["input_ids"][position]
        out.append(_corrupt(example, _runs(positions), info, "mask_random_tokens", replacements))
    return out


def mask_random_spans(
    examples: list[Example], info: TokenInfo, rng: np.random.Generator, mask_prop: float, mean_noise_span_length: float
) -> list[Example]:
    """T5 span corruption (Raffel et al. 2020, sec. 3.1.4) over each example's L maskable tokens, drawn
    by data_collators.random_spans_noise_mask_batch: round(mask_prop * L) noise tokens (at least 1, at
    most L - 1) in round(noise / mean_noise_span_length) spans (at least 1; HF #22246 cap), the first
    token never noise. The original toolkit used max(1, mask_prop * len / mean) spans; we use T5's
    counts, so a row corrupts exactly as T5DataCollator corrupts it. L == 1: that token is the one span.

    Rows are grouped by L, each group drawn in one batch (groups in order of first appearance).
    A special token inside the text splits a span it falls in (it stays where it was).
    """
    maskable = [_maskable(example["input_ids"], info) for example in examples]
    chosen: list[list[int]] = [[] for _ in examples]
    groups: dict[int, list[int]] = {}
    for row, positions in enumerate(maskable):
        groups.setdefault(len(positions), []).append(row)
    for length, rows in groups.items():
        if length == 0:
            continue
        if length == 1:
            masks = np.ones((len(rows), 1), dtype=bool)
        else:
            masks = random_spans_noise_mask_batch(len(rows), length, mask_prop, mean_noise_span_length, rng)
        for row, mask in zip(rows, masks):
            chosen[row] = [maskable[row][i] for i in np.flatnonzero(mask)]
    return _mask_chosen(examples, chosen, info, "mask_random_spans")


def mask_truerandom_spans(
    examples: list[Example], info: TokenInfo, rng: np.random.Generator, mask_prop: float
) -> list[Example]:
    """max(round(mask_prop * L), 1) maskable tokens chosen uniformly without replacement; for seq2seq
    adjacent chosen tokens share one sentinel (so span lengths are not controlled, unlike T5's)."""
    return _mask_chosen(examples, _random_positions(examples, mask_prop, info, rng), info, "mask_truerandom_spans")


def expand_with_masks(examples: list[Example], info: TokenInfo, rng: np.random.Generator) -> list[Example]:
    """One copy per maskable position, in order, with that position masked (mlm: the mask token;
    seq2seq: <extra_id_0>, labels <extra_id_0> token </s>). Each copy keeps the original's source and
    other keys; an example with nothing maskable yields no copy."""
    return [
        _corrupt(example, [(p, p + 1)], info, "expand_with_masks")
        for example in examples
        for p in _maskable(example["input_ids"], info)
    ]


def _describe(ids: list[int], info: TokenInfo) -> str:
    """'['▁dog', 's'] (ids [12, 9])' for messages."""
    return f"{info.id_to_token(ids)} (ids {ids})" if info.id_to_token is not None else f"ids {ids}"


def mask_word_tokens(
    examples: list[Example], info: TokenInfo, rng: np.random.Generator, word_tokens_to_mask: list[str]
) -> list[Example]:
    """Mask every maskable occurrence of the given single-token words (seq2seq: adjacent ones share one sentinel)."""
    targets = set()
    for word in word_tokens_to_mask:
        ids = list(info.encode(word))
        if len(ids) != 1 or ids[0] == info.unk_token_id:
            reason = "the unknown token" if ids == [info.unk_token_id] else f"{len(ids)} tokens"
            raise UserError(
                f"mask_word_tokens: word_tokens_to_mask entry {word!r} must be one known token; "
                f"it encodes to {reason}: {_describe(ids, info)}"
            )
        targets.add(ids[0])
    chosen = [[p for p in _maskable(e["input_ids"], info) if e["input_ids"][p] in targets] for e in examples]
    return _mask_chosen(examples, chosen, info, "mask_word_tokens")


def _word_sequences(words: list[str], info: TokenInfo) -> list[tuple[int, ...]]:
    """Each word's token sequences, longest first: as encoded alone and with a leading space (byte-level
    BPE, e.g. GPT-2 / RoBERTa, spells a word mid-sentence differently: 'Ġdog' vs 'dog'). Sequences that
    hold the unknown token are dropped; a word left with none is an error."""
    sequences: list[tuple[int, ...]] = []
    for word in words:
        forms = [tuple(info.encode(form)) for form in (word, " " + word)]
        known = [ids for ids in forms if ids and info.unk_token_id not in ids]
        if not known:
            raise UserError(
                f"mask_words: words_to_mask entry {word!r} encodes to no known tokens: "
                f"{_describe(list(forms[0]), info)}"
            )
        sequences += [ids for ids in known if ids not in sequences]
    return sorted(sequences, key=len, reverse=True)  # stable: ties keep the words' order


def mask_words(
    examples: list[Example], info: TokenInfo, rng: np.random.Generator, words_to_mask: list[str]
) -> list[Example]:
    """Mask every occurrence of the words: contiguous runs of maskable tokens equal to a word's tokens,
    longest sequence first, never overlapping an earlier match. mlm: each of its tokens masked;
    seq2seq: each match one sentinel span, even where two matched words are adjacent."""
    sequences = _word_sequences(words_to_mask, info)
    out = []
    for example in examples:
        ids = example["input_ids"]
        free = [token not in info.special_ids for token in ids]  # maskable and not yet matched
        matches: list[Span] = []
        for seq in sequences:
            n, start = len(seq), 0
            while start + n <= len(ids):
                if tuple(ids[start : start + n]) == seq and all(free[start : start + n]):
                    matches.append((start, start + n))
                    free[start : start + n] = [False] * n
                    start += n
                else:
                    start += 1
        out.append(_corrupt(example, sorted(matches), info, "mask_words"))
    return out


# ---------------------------------------------------------------------------------------------------
# The registry and its checks


@dataclass(frozen=True)
class PreprocessingFunction:
    """A registry entry: the function, its kwargs and the model tasks it suits."""

    apply: Callable[..., list[Example]]  # (examples, info, rng, **kwargs) -> examples
    defaults: Mapping[str, Any]  # every allowed kwarg -> its default (REQUIRED: the user must give it)
    masks: bool  # replaces tokens by mask / sentinel tokens: nothing a causal LM can learn from
    model_tasks: tuple[str, ...] = MODEL_TASKS


FUNCTIONS: dict[str, PreprocessingFunction] = {
    "identity": PreprocessingFunction(identity, {}, masks=False),
    "remove_non_mask_tokens_from_labels": PreprocessingFunction(
        remove_non_mask_tokens_from_labels, {}, masks=False, model_tasks=("mlm",)
    ),
    "mask_random_tokens": PreprocessingFunction(
        mask_random_tokens, {"mask_prop": 0.15, "replacement_props": None}, masks=True
    ),
    "mask_random_spans": PreprocessingFunction(
        mask_random_spans, {"mask_prop": 0.15, "mean_noise_span_length": 3.0}, masks=True
    ),
    "mask_truerandom_spans": PreprocessingFunction(mask_truerandom_spans, {"mask_prop": 0.15}, masks=True),
    "expand_with_masks": PreprocessingFunction(expand_with_masks, {}, masks=True),
    "mask_word_tokens": PreprocessingFunction(mask_word_tokens, {"word_tokens_to_mask": REQUIRED}, masks=True),
    "mask_words": PreprocessingFunction(mask_words, {"words_to_mask": REQUIRED}, masks=True),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_mask_prop(value: Any, where: str) -> None:
    if not (_is_number(value) and 0 < value <= 1):
        raise UserError(f"{where}: mask_prop must be a number in (0, 1], got {value!r}")


def _check_mean_noise_span_length(value: Any, where: str) -> None:
    if not (_is_number(value) and value >= 1):
        raise UserError(f"{where}: mean_noise_span_length must be a number >= 1, got {value!r}")


def _check_replacement_props(value: Any, where: str) -> None:
    if value is None:
        return
    valid = (
        isinstance(value, Mapping)
        and set(value) == set(T5_REPLACEMENT_PROPS)
        and all(_is_number(p) and p >= 0 for p in value.values())
        and abs(sum(value.values()) - 1.0) <= 1e-6
    )
    if not valid:
        raise UserError(
            f"{where}: replacement_props must map exactly 'mask', 'random' and 'original' to non-negative "
            f"numbers that sum to 1, got {value!r}"
        )


def _check_words(key: str) -> Callable[[Any, str], None]:
    def check(value: Any, where: str) -> None:
        if not (isinstance(value, (list, tuple)) and value and all(isinstance(w, str) and w for w in value)):
            raise UserError(f"{where}: {key} must be a non-empty list of non-empty strings, got {value!r}")

    return check


_KWARG_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "mask_prop": _check_mask_prop,
    "mean_noise_span_length": _check_mean_noise_span_length,
    "replacement_props": _check_replacement_props,
    "word_tokens_to_mask": _check_words("word_tokens_to_mask"),
    "words_to_mask": _check_words("words_to_mask"),
}


def _check_model_task(name: str, kwargs: Mapping[str, Any], model_task: str | None, where: str) -> None:
    """The checks that need the model task; skipped while it is not known (None)."""
    spec = FUNCTIONS[name]
    if model_task is None:
        return
    if model_task == "lm" and spec.masks:
        raise UserError(f"{where}: {name} masks tokens; a causal LM (lm) predicts every token: use identity")
    if model_task not in spec.model_tasks:
        raise UserError(f"{where}: {name} needs a model_task of {' or '.join(spec.model_tasks)}, got {model_task}")
    props = kwargs.get("replacement_props")
    not_t5 = props is not None and any(abs(props[k] - v) > 1e-6 for k, v in T5_REPLACEMENT_PROPS.items())
    if model_task == "seq2seq" and not_t5:
        raise UserError(
            f"{where}: replacement_props {dict(props)} cannot apply to a seq2seq model, which replaces every "
            f"chosen token by a sentinel: leave it unset or use {T5_REPLACEMENT_PROPS}"
        )


def check_preprocessing(
    name: str, kwargs: Mapping[str, Any], strategy: str, model_task: str | None, where: str
) -> dict[str, Any]:
    """Validate a split's choice before anything heavy; return the kwargs with defaults filled.

    `where` names the setting in messages (e.g. "data_preprocessing_fn.train"); `model_task` None means
    not yet known (the task checks are skipped; `preprocess` repeats them).
    """
    if name not in FUNCTIONS:
        raise UserError(f"{where}: unknown preprocessing function {name!r}; valid: {', '.join(FUNCTIONS)}")
    if strategy not in STRATEGIES:
        raise UserError(f"{where}: unknown preprocessing strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    spec = FUNCTIONS[name]
    kwargs = dict(kwargs or {})
    for key in kwargs:
        if key not in spec.defaults:
            valid = f"valid: {', '.join(spec.defaults)}" if spec.defaults else "it takes none"
            raise UserError(f"{where}: {name} takes no kwarg {key!r}; {valid}")
    for key, default in spec.defaults.items():
        if default is REQUIRED and key not in kwargs:
            raise UserError(f"{where}: {name} needs the kwarg {key}")
    filled = {**spec.defaults, **kwargs}
    for key in ("word_tokens_to_mask", "words_to_mask"):
        if isinstance(filled.get(key), str):  # one word given alone (`--...words_to_mask cat`): a list of one
            filled[key] = [filled[key]]
    for key, value in filled.items():
        _KWARG_CHECKS[key](value, where)
    if filled.get("replacement_props") is not None:
        filled["replacement_props"] = {k: float(v) for k, v in filled["replacement_props"].items()}
    _check_model_task(name, filled, model_task, where)
    return filled


def preprocess(
    examples: list[dict[str, Any]], name: str, kwargs: Mapping[str, Any], info: TokenInfo, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Apply function `name` (kwargs already checked by `check_preprocessing`).

    Each input example: {"input_ids": [...], optional "labels": [...], optional "source": int, other
    keys carried unchanged}. Each output has "input_ids", "labels" and "source" (the index of the
    original example: the input's "source", else its position in `examples`).
    """
    _check_model_task(name, kwargs, info.model_task, where=name)
    normalised = []
    for position, example in enumerate(examples):
        labels = example.get("labels")
        normalised.append({
            **example,
            "input_ids": [int(t) for t in example["input_ids"]],
            "labels": None if labels is None else [int(t) for t in labels],
            "source": int(example.get("source", position)),
        })
    spec = FUNCTIONS[name]
    defaults = {key: value for key, value in spec.defaults.items() if value is not REQUIRED}
    return spec.apply(normalised, info, rng, **{**defaults, **kwargs})


@dataclass(frozen=True)
class BoundPreprocessing:
    """`preprocess` with its function, kwargs and tokens fixed: the per_batch callable LMCollator takes."""

    name: str
    kwargs: Mapping[str, Any]
    info: TokenInfo

    def __call__(self, examples: list[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
        return preprocess(examples, self.name, self.kwargs, self.info, rng)


def preprocess_encoded(examples: list[dict[str, Any]], name: str, kwargs: Mapping[str, Any], strategy: str, info: TokenInfo,
                       seed: int, batch_size: int) -> list[dict[str, Any]]:
    """Model rows ({"input_ids", "labels", "source"}) from tokenized examples ({"input_ids", optional "labels"}):
    `once` over all of them with one generator; `per_batch` in consecutive batches of `batch_size`, each with its
    own generator (seed, batch), so that any batch's masks are the same however a run was interrupted."""
    bare = [{"input_ids": e["input_ids"], **({"labels": e["labels"]} if "labels" in e else {}), "source": i}
            for i, e in enumerate(examples)]
    if strategy == "once":
        return preprocess(bare, name, kwargs, info, np.random.default_rng(seed))
    rows: list[dict[str, Any]] = []
    for start in range(0, len(bare), batch_size):
        rows += preprocess(bare[start : start + batch_size], name, kwargs, info, np.random.default_rng([seed, start // batch_size]))
    return rows
