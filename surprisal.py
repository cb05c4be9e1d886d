"""Per-token surprisal of any HF language model: the scorer behind finetune_lm.py's test outputs.

For each scored token: logprob = ln p(token | context) and surprisal = -log2 p(token | context) (bits),
computed directly from the logits (log-softmax as logit - logsumexp, in float32):
- lm (causal): p(x_t | x_<t). A BOS token is prepended to every text (the tokenizer's BOS, else its EOS:
  GPT-2's `<|endoftext|>`), so the first word is scored too: the convention of lm-zoo and of minicons'
  `IncrementalLMScorer.token_score(..., bos_token=True)`, whose values ours equal (bench/surprisal.py).
- mlm (masked): p(x_t | the input with x_t masked) at the masked positions only (labels != -100), as
  minicons' `MaskedLMScorer` does per token; `expand_with_masks` gives every token's pseudo-log-likelihood.
- seq2seq (T5): p(y_t | encoder input, y_<t) by teacher forcing: the decoder input is the labels shifted
  right behind the decoder start token, and logits t are scored against label t (the original finetune-lm
  toolkit scored them one position off when a label did not start with pad).

Rows are sorted by length and batched, only real tokens are scored (padding never), and all per-token
arithmetic is batched tensor work; `word_positions` aligns tokens with whitespace-separated words.
Speed, all equal to the plain computation within float rounding (tests/test_finetune_lm.py,
bench/surprisal_throughput.py): an lm row's last token is not fed (nothing scores the logits there); the
output layer runs on the scored positions only, one slice of the vocabulary at a time (`output_statistics`,
checked against the model's own logits on its first batch); GELU's tanh form runs as torch's fused kernel
(`fused_activations`).
"""

from __future__ import annotations

import bisect
import contextlib
import inspect
import math
import re
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

LN2 = math.log(2.0)
TASK_NAMES = {"lm": "LM", "mlm": "MLM", "seq2seq": "Seq2Seq"}  # the original's `task` column


@dataclass
class ScoredSequence:
    """One row's scored tokens: positions in the scored sequence (input ids for lm / mlm, labels for
    seq2seq), the token ids there, their natural-log probabilities, and the argmax prediction at each."""

    positions: np.ndarray
    token_ids: np.ndarray
    logprobs: np.ndarray
    predicted_ids: np.ndarray
    predicted_logprobs: np.ndarray


def bos_id(tokenizer: Any) -> int:
    """The token a causal LM's text starts from: the tokenizer's BOS, else its EOS (GPT-2: <|endoftext|>)."""
    token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to condition the first token on")
    return token_id


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max((len(row) for row in rows), default=0)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def _forward(model: Any, model_task: str, input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_token_id: int,
             scored: Sequence[Sequence[int]] | None, project: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Run one batch (right-padded here) through the model and keep its scored positions.

    Scored positions: lm rows every t >= 1 whose label is not -100 (labels are the inputs for lm), mlm rows
    those whose label is not -100, seq2seq rows every label that is not -100; or, with `scored`, the given
    positions of each row (of its input ids for lm / mlm, of its labels for seq2seq: e.g. a T5 target
    `<extra_id_0> token <extra_id_1>` scored at the token only).

    The output layer sees the scored positions only (a pre-hook on `get_output_embeddings()`): no
    (batch, length, vocab) logits for padding and unscored positions. With `project=False` it sees none
    and the caller projects (`output_statistics`). An lm row's last token is not fed at all: the
    logits there would predict the token after the text.

    Returns (the output layer's input at the scored positions (scored tokens, width), the model's logits
    there (scored tokens, vocab), None without `project`, the scored token ids, keep: a (rows, positions) bool
    mask of the scored positions, offset by one for lm).
    """
    device = next(model.parameters()).device
    offset = 1 if model_task == "lm" else 0  # lm: logits at t - 1 predict the token at t
    fed = [row[: max(1, len(row) - 1)] for row in input_ids] if offset else input_ids
    ids = pad_rows(fed, pad_token_id).to(device)
    attention_mask = pad_rows([[1] * len(row) for row in fed], 0).to(device)
    target = pad_rows(labels, -100).to(device)
    if scored is None:
        keep = target[:, offset:].ne(-100)
    else:
        keep = torch.zeros_like(target[:, offset:], dtype=torch.bool)
        for i, positions in enumerate(scored):
            if any(not offset <= p < len(labels[i]) for p in positions):
                raise ValueError(f"scored positions {list(positions)} of a row of {len(labels[i])}: each must lie in [{offset}, {len(labels[i])})")
            keep[i, [p - offset for p in positions]] = True
    inputs = {"input_ids": ids, "attention_mask": attention_mask}
    if model_task == "seq2seq":  # teacher forcing: the labels shifted right behind the decoder start token
        inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=target)
    if _takes_use_cache(model):
        inputs["use_cache"] = False  # no key/value cache to build for a single pass
    chosen: list[torch.Tensor] = []

    def scored_positions(module: Any, args: tuple) -> tuple:
        hidden = args[0][:, : keep.shape[1]][keep]
        chosen.append(hidden)
        return (hidden if project else hidden[:0],)

    handle = model.get_output_embeddings().register_forward_pre_hook(scored_positions)
    try:
        logits = model(**inputs).logits  # (scored tokens, vocab)
    finally:
        handle.remove()
    tokens = target[:, offset:][keep]
    if tokens.numel() and int(tokens.min()) < 0:
        raise ValueError("a scored position has no target token (label -100): give only positions with a label")
    return chosen[0], (_float(logits) if project else None), tokens, keep


def _takes_use_cache(model: Any) -> bool:
    return "use_cache" in inspect.signature(model.forward).parameters


def _float(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype == torch.float64 else logits.float()  # bf16 / fp16 logits: log-softmax in float32


def scored_logits(model: Any, model_task: str, input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                  pad_token_id: int, scored: Sequence[Sequence[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's logits at the scored positions of one batch (see `_forward`), with autograd: (logits (scored
    tokens, vocab) as float32 (float64 for a float64 model), the scored token ids, keep)."""
    _, logits, tokens, keep = _forward(model, model_task, input_ids, labels, pad_token_id, scored, project=True)
    return logits, tokens, keep  # type: ignore[return-value]


def row_logprob_sums(model: Any, model_task: str, rows: Sequence[dict[str, Any]], pad_token_id: int) -> torch.Tensor:
    """Each row's summed log-probability of its scored tokens, with autograd (one batch: `rows` as score_rows
    takes them); for gradients of a likelihood objective, e.g. with respect to a head mask."""
    chosen, tokens, keep = scored_logits(model, model_task, [r["input_ids"] for r in rows], [r["labels"] for r in rows],
                                         pad_token_id, _scored(rows))
    logprobs = chosen.gather(1, tokens[:, None])[:, 0] - torch.logsumexp(chosen, dim=-1)
    owner = keep.nonzero(as_tuple=True)[0]
    return torch.zeros(len(rows), dtype=logprobs.dtype, device=logprobs.device).index_add(0, owner, logprobs)


Statistics = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # per scored token: ln p(token), argmax id, ln p(argmax)


def logits_statistics(logits: torch.Tensor, tokens: torch.Tensor) -> Statistics:
    normaliser = torch.logsumexp(logits, dim=-1)
    best, predicted = logits.max(dim=-1)
    return logits.gather(1, tokens[:, None])[:, 0] - normaliser, predicted, best - normaliser


VOCAB_CHUNK = 8192  # vocabulary entries projected at a time by `output_statistics`


def output_statistics(hidden: torch.Tensor, head: torch.nn.Linear, tokens: torch.Tensor, chunk: int | None = None) -> Statistics:
    """`logits_statistics` of `head(hidden)`, computed one slice of the vocabulary at a time with a running
    maximum and a running sum of exponentials (the streaming log-sum-exp): the (tokens, vocab) logits are never
    held whole, and each slice is read while it is still in the cache. Equal to `logits_statistics` within
    float rounding (a tie for the argmax goes to the lower id in both)."""
    count, vocab = hidden.shape[0], head.weight.shape[0]
    chunk = chunk or VOCAB_CHUNK
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    running_max = torch.full((count,), -math.inf, dtype=dtype, device=hidden.device)
    running_sum = torch.zeros(count, dtype=dtype, device=hidden.device)
    target = torch.zeros(count, dtype=dtype, device=hidden.device)
    predicted = torch.zeros(count, dtype=torch.long, device=hidden.device)
    for start in range(0, vocab, chunk):
        end = min(start + chunk, vocab)
        logits = torch.nn.functional.linear(hidden, head.weight[start:end], None if head.bias is None else head.bias[start:end]).to(dtype)
        inside = (tokens >= start) & (tokens < end)
        target = torch.where(inside, logits.gather(1, (tokens - start).clamp(0, end - start - 1)[:, None])[:, 0], target)
        best, where = logits.max(dim=1)
        new_max = torch.maximum(running_max, best)
        predicted = torch.where(best > running_max, where + start, predicted)
        shift = torch.where(torch.isfinite(new_max), new_max, 0.0)  # a row all -inf so far: no shift (exp(-inf - -inf) is NaN)
        running_sum = running_sum * torch.exp(running_max - shift) + logits.sub_(shift[:, None]).exp_().sum(dim=1)
        running_max = new_max
    normaliser = torch.where(torch.isfinite(running_max), running_max, 0.0) + running_sum.log()
    return target - normaliser, predicted, running_max - normaliser


# Whether `output_statistics` reproduces a model's own logits, by output layer: checked on the first batch a
# model scores, since some models change the logits after the layer (Gemma 2's soft-capping, Cohere's scale).
_HEAD_IS_LAST: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def _whole_linear(head: Any) -> bool:
    """A plain Linear whose whole floating-point weight is here, with nothing hooked to it: not DeepSpeed ZeRO-3's
    shards (kept elsewhere between passes), a quantized or offloaded weight, or a head whose hooks change its output."""
    if not isinstance(head, torch.nn.Linear):
        return False
    weight = head.weight
    return (type(weight) is torch.nn.Parameter and weight.dim() == 2 and weight.is_floating_point() and not weight.is_meta
            and not hasattr(weight, "ds_id") and not hasattr(head, "_hf_hook") and not head._forward_hooks and not head._forward_pre_hooks)


@torch.no_grad()
def score_batch(model: Any, model_task: str, input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                pad_token_id: int, scored: Sequence[Sequence[int]] | None = None) -> list[ScoredSequence]:
    """Score one batch of rows; `_forward` says which positions (see also the module docstring)."""
    head = model.get_output_embeddings()
    streamed = _HEAD_IS_LAST.get(head) if _whole_linear(head) else False
    hidden, logits, tokens, keep = _forward(model, model_task, input_ids, labels, pad_token_id, scored, project=not streamed)
    if streamed:
        statistics = output_statistics(hidden, head, tokens)
    else:
        statistics = logits_statistics(logits, tokens)  # type: ignore[arg-type]
        if streamed is None and tokens.numel():  # a batch with nothing scored proves nothing
            mine = output_statistics(hidden, head, tokens)
            _HEAD_IS_LAST[head] = all(torch.allclose(a.double(), b.double(), rtol=0, atol=1e-4) for a, b in zip(mine[::2], statistics[::2]))
    offset = 1 if model_task == "lm" else 0
    logprobs, predicted, predicted_logprobs = statistics
    counts = keep.sum(dim=1).tolist()
    rows_at, cols_at = keep.nonzero(as_tuple=True)
    arrays = [t.cpu().numpy() for t in (cols_at + offset, tokens, logprobs, predicted, predicted_logprobs)]
    out, start = [], 0
    for count in counts:
        out.append(ScoredSequence(*(a[start : start + count] for a in arrays)))
        start += count
    return out


def _scored(rows: Sequence[dict[str, Any]]) -> list[list[int]] | None:
    """The rows' own scored positions ("scored"), when they give them (all or none do)."""
    return [list(r["scored"]) for r in rows] if rows and "scored" in rows[0] else None


def batches_by_length(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Row indices in batches of `batch_size`, longest rows first (little padding); every row once."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def score_rows(model: Any, model_task: str, rows: Sequence[dict[str, Any]], batch_size: int, pad_token_id: int,
               progress: Any = None) -> list[ScoredSequence]:
    """`score_batch` over `rows` ({"input_ids", "labels"}, optionally "scored" positions), batched by length,
    with `fused_activations`; results in the rows' order."""
    results: list[ScoredSequence | None] = [None] * len(rows)
    key = "labels" if model_task == "seq2seq" else "input_ids"
    with fused_activations(model):
        for batch in batches_by_length([len(row["input_ids"]) + len(row[key]) for row in rows], batch_size):
            chosen = [rows[i] for i in batch]
            scored = score_batch(model, model_task, [r["input_ids"] for r in chosen], [r["labels"] for r in chosen], pad_token_id,
                                 _scored(chosen))
            for i, sequence in zip(batch, scored):
                results[i] = sequence
            if progress is not None:
                progress.update(len(batch))
    return results  # type: ignore[return-value]


@contextlib.contextmanager
def fused_activations(model: Any) -> Iterator[None]:
    """While scoring, the tanh approximation of GELU written out in tensor operations (transformers'
    `NewGELUActivation` / `FastGELUActivation`: GPT-2's and T5 v1.1's `gelu_new`) is computed by torch's fused
    kernel (`GELUTanh`: the same function, equal within float rounding). Written out, it makes eight passes
    over the (tokens, d_ff) activations: 11.5 ms against the fused kernel's 2.9 ms for 480 tokens x 3072 on a
    2-core CPU, next to about 60 ms of matrix products in the layer; fused, GPT-2 scored ~6% faster. The modules
    are put back afterwards, also on an error."""
    from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

    swapped = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) in (NewGELUActivation, FastGELUActivation):
                swapped.append((parent, name, child))
    fused = GELUTanh()
    try:
        for parent, name, _ in swapped:
            setattr(parent, name, fused)
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


# --- Words -----------------------------------------------------------------------------------------

_WORD = re.compile(r"\S+")


def text_word_ids(text: str, offsets: Sequence[tuple[int, int]]) -> list[int | None]:
    """For each token (by its character offsets in `text`), the index of the whitespace-separated word it
    starts in; a token of whitespace only (byte-level BPE's lone "Ġ") belongs to the word after it; None for
    tokens with no characters (special tokens the tokenizer added)."""
    starts, ends = [], []
    for match in _WORD.finditer(text):
        starts.append(match.start())
        ends.append(match.end())
    out: list[int | None] = []
    for begin, end in offsets:
        while begin < end and text[begin].isspace():  # byte-level BPE offsets may include the space before a word
            begin += 1
        if begin >= end:
            out.append(None if end == 0 or not starts else min(bisect.bisect_left(starts, end), len(starts) - 1))
            continue
        out.append(max(bisect.bisect_right(starts, begin) - 1, 0))
    return out


@dataclass(frozen=True)
class WordMarks:
    """How a tokenizer marks words in its pieces, for sequences that have no text (built by masking)."""

    own_word_ids: frozenset[int]  # masks, sentinels and other added tokens: each is a word of its own
    control_ids: frozenset[int]  # BOS / CLS / SEP / EOS / PAD: not words, unless scored
    continuation: str | None  # WordPiece's "##": a piece that continues a word; None: pieces that start one carry ▁ / Ġ

    @classmethod
    def of(cls, tokenizer: Any) -> "WordMarks":
        added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        control = {tokenizer.convert_tokens_to_ids(t) for t in (tokenizer.bos_token, tokenizer.cls_token, tokenizer.sep_token,
                                                                   tokenizer.eos_token, tokenizer.pad_token) if t is not None}
        model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
        continuation = getattr(model, "continuing_subword_prefix", None) if type(model).__name__ == "WordPiece" else None
        return cls(frozenset((added | set(tokenizer.all_special_ids)) - control), frozenset(control), continuation)


def word_positions(token_ids: Sequence[int], pieces: Sequence[str], marks: WordMarks, scored: set[int],
                   text_words: Sequence[int | None] | None = None) -> tuple[list[int | None], list[int], list[bool], list[bool]]:
    """(word_num, token_num_in_word, token_is_start_of_word, token_is_word) for every position.

    Words are the whitespace-separated words of the text (`text_words`, from `text_word_ids`) when the
    sequence was tokenized from a text; otherwise the pieces' own marks (SentencePiece's ▁, byte-level
    BPE's Ġ, WordPiece's ##), which for SentencePiece and byte-level BPE are the same words. A mask or
    sentinel is a word of its own. Control tokens (BOS, CLS, SEP, EOS) are no word unless scored (T5's
    final </s>), and then one of their own. Numbers are 0-based; unscored control tokens get None.
    """
    n = len(token_ids)
    starts = [False] * n
    counted = [True] * n
    for i, token in enumerate(token_ids):
        if token in marks.control_ids and i not in scored:
            counted[i] = False
            continue
        previous = next((j for j in range(i - 1, -1, -1) if counted[j]), None)
        if previous is None or token in marks.own_word_ids or token in marks.control_ids:
            starts[i] = True
        elif token_ids[previous] in marks.own_word_ids or token_ids[previous] in marks.control_ids:
            starts[i] = True
        elif text_words is not None and text_words[i] is not None:
            starts[i] = text_words[i] != text_words[previous]
        elif marks.continuation is not None:
            starts[i] = not pieces[i].startswith(marks.continuation)
        else:
            starts[i] = pieces[i].startswith(("▁", "Ġ"))
    word_num: list[int | None] = []
    in_word: list[int] = []
    word, position = -1, 0
    for i in range(n):
        if not counted[i]:
            word_num.append(None)
            in_word.append(0)
            continue
        if starts[i]:
            word, position = word + 1, 0
        else:
            position += 1
        word_num.append(word)
        in_word.append(position)
    following = [next((j for j in range(i + 1, n) if counted[j]), None) for i in range(n)]
    is_word = [counted[i] and starts[i] and (following[i] is None or starts[following[i]]) for i in range(n)]
    return word_num, in_word, [s and c for s, c in zip(starts, counted)], is_word


def format_count(count: int) -> str:
    """A parameter count as the original's `n_params` column writes it: 124439808 -> '124M'."""
    for size, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= size:
            return f"{round(count / size)}{unit}"
    return str(count)


def to_bits(logprob: float) -> float:
    return -logprob / LN2
