"""finetune_lm.py's data: text files with their metadata, and the per-split preprocessing settings
(stdlib only: read and checked before torch and transformers are imported).

The original `finetune-lm` toolkit's formats (../shared/reference/finetune-lm.md):
- `.txt` / `.txt.gz`: one example per line (line i is example i; a blank line is an error, since the
  metadata is joined by line number);
- `.jsonl` / `.jsonl.gz` / `.json.gz`: one `{"text": ..., "labels": ...}` object per line; `labels`
  (optional) is the target text for masked and seq2seq models;
- metadata: `<stem>_metadata.json.gz` beside the data file (`data/x.txt.gz` -> `data/x_metadata.json.gz`),
  one JSON object per line, line i belonging to example i; its keys go onto every output row of the
  example. No such file: no metadata.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from errors import UserError
from records import read_numbered_records, read_text

# Longest first: `x.jsonl.gz` is x, not x.jsonl.
DATA_SUFFIXES = (".jsonl.gz", ".json.gz", ".txt.gz", ".jsonl", ".json", ".txt")
METADATA_SUFFIX = "_metadata.json.gz"


@dataclass
class TextDataset:
    """One data file's examples: texts, optional label texts and metadata, line i = example i."""

    path: str
    texts: list[str]
    labels: list[str | None]
    metadata: list[dict[str, Any]]
    name: str = field(default="")  # the file's basename without its data suffix (the `dataset_name` column)

    def __post_init__(self) -> None:
        self.name = self.name or dataset_name(self.path)

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, count: int | None) -> "TextDataset":
        """The first `count` examples (all when None): --max_*_samples."""
        if count is None or count >= len(self):
            return self
        return TextDataset(self.path, self.texts[:count], self.labels[:count], self.metadata[:count], self.name)


def _strip_suffix(path: str) -> str | None:
    base = os.path.basename(path)
    for suffix in DATA_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return None


def dataset_name(path: str) -> str:
    """`data/x.txt.gz` -> `x` (the name in the results' `dataset_name` column)."""
    return _strip_suffix(path) or os.path.basename(path)


def metadata_path(path: str) -> str:
    """`data/x.txt.gz` -> `data/x_metadata.json.gz`."""
    return os.path.join(os.path.dirname(path), dataset_name(path) + METADATA_SUFFIX)


def read_text_dataset(path: str, flag: str) -> TextDataset:
    """The examples of `path` and their metadata; a one-line UserError naming the file, line and field for
    anything wrong (unknown suffix, blank line, a record without a string `text`, metadata of another length)."""
    where = f"{flag} {path}"
    if _strip_suffix(path) is None:
        raise UserError(f"{where}: unknown data file type; give .txt or .txt.gz (one example per line) or "
                        f".jsonl, .jsonl.gz, .json.gz (one {{\"text\": ..., \"labels\": ...}} object per line)")
    if not os.path.isfile(path):
        raise UserError(f"{where}: no such file")
    if path.endswith((".txt", ".txt.gz")):
        lines = read_text(path).split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the last line
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise UserError(f"{where}: line {number} is blank; every line is one example (line i matches line i of the "
                                "metadata): remove it or put text on it")
        texts, labels = [line.rstrip("\r") for line in lines], [None] * len(lines)
    else:
        records, numbers = read_numbered_records(path)
        texts, labels = [], []
        for index, record in enumerate(records):
            line = f"line {numbers[index]}" if numbers else f"record {index + 1}"
            if not isinstance(record, dict):
                raise UserError(f"{where}: {line}: must be a JSON object with a \"text\" field, got {type(record).__name__}")
            if not isinstance(record.get("text"), str):
                problem = "no \"text\" field" if "text" not in record else f"\"text\" must be a string, got {type(record['text']).__name__}"
                raise UserError(f"{where}: {line}: {problem} (each line: {{\"text\": ..., \"labels\": ...}})")
            label = record.get("labels")
            if label is not None and not isinstance(label, str):
                raise UserError(f"{where}: {line}: \"labels\" must be a string (the target text), got {type(label).__name__}")
            texts.append(record["text"])
            labels.append(label)
    if not texts:
        raise UserError(f"{where}: holds no examples")
    return TextDataset(path, texts, labels, read_metadata(path, len(texts), where))


def read_metadata(path: str, count: int, where: str) -> list[dict[str, Any]]:
    """The metadata rows of data file `path` (empty dicts when it has no metadata file)."""
    meta = metadata_path(path)
    if not os.path.isfile(meta):
        return [{} for _ in range(count)]
    rows, numbers = read_numbered_records(meta)
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            line = f"line {numbers[index]}" if numbers else f"record {index + 1}"
            raise UserError(f"{meta}: {line}: must be a JSON object (one per example), got {type(row).__name__}")
    if len(rows) != count:
        raise UserError(f"{meta}: holds {len(rows)} metadata lines but {where} holds {count} examples; line i of the "
                        "metadata belongs to example i, so the counts must match")
    return rows


# --- Preprocessing settings ---------------------------------------------------------------------------

PREPROCESSING_FLAGS = ("data_preprocessing_fn", "data_preprocessing_fn_kwargs", "data_preprocessing_fn_strategy")


@dataclass(frozen=True)
class Preprocessing:
    """One split's preprocessing: a function of `lm_preprocessing.FUNCTIONS`, its kwargs, its strategy."""

    name: str = "identity"
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    strategy: str = "once"


def per_split(value: str | None, flag: str, splits: tuple[str, ...], default: Any) -> dict[str, Any]:
    """A per-split setting: a JSON / YAML mapping keyed by split (what a config file or the original's
    `--flag.train X` gives), or one plain value for every split."""
    if value is None:
        return {split: default for split in splits}
    from arguments import json_mapping

    parsed: Any = json_mapping(value, flag) if isinstance(value, str) and value.lstrip().startswith("{") else value
    if not isinstance(parsed, dict):
        return {split: parsed for split in splits}
    unknown = sorted(set(parsed) - set(splits))
    if unknown:
        raise UserError(f"--{flag}: unknown split {unknown[0]!r}; keys are {', '.join(splits)}")
    return {split: parsed.get(split, default) for split in splits}


def preprocessing_settings(fn: str | None, kwargs: str | None, strategy: str | None, model_task: str | None) -> dict[str, Preprocessing]:
    """Each split's checked `Preprocessing` (default: identity, once)."""
    from lm_preprocessing import SPLITS, check_preprocessing

    names = per_split(fn, PREPROCESSING_FLAGS[0], SPLITS, "identity")
    all_kwargs = per_split(kwargs, PREPROCESSING_FLAGS[1], SPLITS, {})
    strategies = per_split(strategy, PREPROCESSING_FLAGS[2], SPLITS, "once")
    settings = {}
    for split in SPLITS:
        name = str(names[split]).rsplit(".", 1)[-1]  # the original's `data_preprocessing.mask_words` form
        split_kwargs = all_kwargs[split] if all_kwargs[split] is not None else {}
        if not isinstance(split_kwargs, dict):
            raise UserError(f"--{PREPROCESSING_FLAGS[1]}.{split}: must be a mapping of keyword arguments, got {split_kwargs!r}")
        filled = check_preprocessing(name, split_kwargs, str(strategies[split]), model_task, f"{PREPROCESSING_FLAGS[0]}.{split}")
        settings[split] = Preprocessing(name, filled, str(strategies[split]))
    return settings


# --- Tokenizing (takes the tokenizer object; imports nothing heavy) ---------------------------------------


def encode_dataset(dataset: TextDataset, tokenizer: Any, model_task: str, max_length: int, flag: str) -> list[dict[str, Any]]:
    """Each example as token ids, with each token's whitespace word in its text (None: a token the tokenizer
    added): {"input_ids", "input_words", and with a label text "labels", "label_words"}. Causal LM inputs start
    with BOS (surprisal.bos_id), so that the first word is scored too; texts longer than `max_length` tokens
    are cut (with a warning)."""
    from surprisal import bos_id, text_word_ids

    prepend = bos_id(tokenizer) if model_task == "lm" else None
    inputs = _encode(tokenizer, dataset.texts, max_length, prepend)
    cut = sum(1 for ids, _ in inputs if len(ids) >= max_length)
    examples = [{"input_ids": ids, "input_words": text_word_ids(text, offsets)} for (ids, offsets), text in zip(inputs, dataset.texts)]
    if model_task != "lm" and any(label is not None for label in dataset.labels):
        labelled = [(i, label) for i, label in enumerate(dataset.labels) if label is not None]
        encoded = _encode(tokenizer, [label for _, label in labelled], max_length, None)
        for (i, label), (ids, offsets) in zip(labelled, encoded):
            if model_task == "mlm" and len(ids) != len(examples[i]["input_ids"]):
                raise UserError(f"{flag} {dataset.path}: example {i + 1}: \"labels\" encodes to {len(ids)} tokens but \"text\" to "
                                f"{len(examples[i]['input_ids'])}; a masked LM's labels are the text with each mask filled by one token")
            examples[i]["labels"] = ids
            examples[i]["label_words"] = text_word_ids(label, offsets)
    if cut:
        logging.getLogger(__name__).warning("%s: %d of %d examples reach --max_length %d tokens (longer ones are cut)",
                                            dataset.path, cut, len(dataset), max_length)
    return examples


def _encode(tokenizer: Any, texts: list[str], max_length: int, prepend: int | None) -> list[tuple[list[int], list[tuple[int, int]]]]:
    limit = max_length - (1 if prepend is not None else 0)
    encoded = tokenizer(texts, truncation=True, max_length=limit, return_offsets_mapping=True)
    out = []
    for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"]):
        ids, offsets = list(ids), [tuple(o) for o in offsets]
        if prepend is not None and (not ids or ids[0] != prepend):
            ids, offsets = [prepend] + ids, [(0, 0)] + offsets
        out.append((ids, offsets))
    return out
