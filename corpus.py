"""Pre-training text: finding, validating and loading corpora, then tokenizing and packing them.

Sources, in order of precedence: a Hub dataset (`--dataset_name`), local files (`--train_file`,
`--validation_file`: .txt, .txt.gz, .jsonl with a `text` field), a directory holding `train.*` and
`dev.*`, or, with no data flag at all, the embedded default: the docstrings of the Python standard
library plus its pydoc topics, real English that every machine has offline.
"""

from __future__ import annotations

import ast
import codecs
import gzip
import json
import logging
import os
import sysconfig
from dataclasses import dataclass
from itertools import chain
from typing import Any, Iterator

from errors import UserError

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
DOCUMENT_PIECE_CHARS = 10_000  # longer documents are tokenized in pieces of at most this many characters
ENDS_DOCUMENT = "ends_document"  # column of the pieces: whether a piece is its document's last
SPLIT_STEMS = {"train": ("train",), "validation": ("dev", "validation", "valid")}
_STDLIB_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo", "ensurepip"}


@dataclass(frozen=True)
class CorpusFiles:
    """Local corpus files: a training file and an optional validation file."""

    train: str
    validation: str | None = None


def find_corpus_files(train_file: str | None, validation_file: str | None, data_dir: str | None) -> CorpusFiles | None:
    """Resolve the local data flags to files (None: no local data given); a `UserError` if they are wrong."""
    if data_dir is not None:
        if train_file is not None:
            raise UserError("--data_dir and --train_file both given: use one (a directory holds train.txt and dev.txt)")
        if not os.path.isdir(data_dir):
            raise UserError(f"--data_dir {data_dir}: no such directory")
        found = {split: _find_split_file(data_dir, stems) for split, stems in SPLIT_STEMS.items()}
        if found["train"] is None:
            names = ", ".join("train" + s for s in TEXT_SUFFIXES)
            raise UserError(f"--data_dir {data_dir}: no training file; expected one of {names}")
        train_file, validation_file = found["train"], validation_file or found["validation"]
    if train_file is None:
        if validation_file is not None:
            raise UserError("--validation_file needs --train_file (or --data_dir)")
        return None
    for flag, path in (("--train_file", train_file), ("--validation_file", validation_file)):
        if path is not None:
            validate_text_file(path, flag)
    return CorpusFiles(train_file, validation_file)


def _find_split_file(directory: str, stems: tuple[str, ...]) -> str | None:
    for stem in stems:
        for suffix in TEXT_SUFFIXES:
            path = os.path.join(directory, stem + suffix)
            if os.path.isfile(path):
                return path
    return None


def _open_binary(path: str) -> Any:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def validate_text_file(path: str, flag: str) -> None:
    """Check a corpus file before anything heavy runs: exists, has the right suffix, is UTF-8, has text.

    JSONL files must hold one JSON object per line with a string `text` field. Errors name the file,
    the line and what is wrong.
    """
    if not os.path.exists(path):
        raise UserError(f"{flag} {path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path}: is a directory; give a file, or the directory as --data_dir")
    if not path.endswith(TEXT_SUFFIXES):
        raise UserError(f"{flag} {path}: unsupported file type; use one of {', '.join(TEXT_SUFFIXES)}")
    is_jsonl = ".jsonl" in os.path.basename(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    line_number, characters, pending = 0, 0, ""
    try:
        with _open_binary(path) as f:
            offset = 0
            while chunk := f.read(1 << 20):
                try:
                    text = pending + decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    line = line_number + 1 + chunk[: err.start].count(b"\n") + pending.count("\n")
                    raise UserError(
                        f"{flag} {path}: not UTF-8 text: byte 0x{chunk[err.start]:02x} at offset {offset + err.start} "
                        f"(line {line}); re-encode the file as UTF-8"
                    ) from None
                offset += len(chunk)
                *lines, pending = text.split("\n")
                for line in lines:
                    line_number += 1
                    characters += _check_line(line, line_number, path, flag, is_jsonl)
            if pending:
                characters += _check_line(pending, line_number + 1, path, flag, is_jsonl)
    except (OSError, EOFError) as err:  # a corrupt or truncated gzip stream
        raise UserError(f"{flag} {path}: cannot read: {err}") from None
    if characters == 0:
        raise UserError(f"{flag} {path}: the file holds no text")


def _check_line(line: str, line_number: int, path: str, flag: str, is_jsonl: bool) -> int:
    """Number of text characters on a line; a `UserError` for a malformed JSONL record."""
    if not is_jsonl:
        return len(line.strip())
    if not line.strip():
        return 0
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{flag} {path}: line {line_number}: invalid JSON at column {err.colno}: {err.msg}") from None
    if not isinstance(record, dict) or "text" not in record:
        raise UserError(f"{flag} {path}: line {line_number}: each line must be a JSON object with a \"text\" field")
    if not isinstance(record["text"], str):
        raise UserError(
            f"{flag} {path}: line {line_number}: field \"text\" must be a string, got {type(record['text']).__name__}"
        )
    return len(record["text"].strip())


def stdlib_documents() -> list[str]:
    """The docstrings of the Python standard library (read with `ast`, nothing is imported) and the
    pydoc topic texts: about 2 MB of English prose, the same on every machine with this Python."""
    root = sysconfig.get_paths()["stdlib"]
    documents = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _STDLIB_SKIP_DIRS and not d.startswith(("config-", "__")))
        for name in sorted(files):
            if name.endswith(".py"):
                documents.extend(_docstrings(os.path.join(directory, name)))
    try:
        from pydoc_data.topics import topics

        documents.extend(topics[key] for key in sorted(topics))
    except ImportError:  # some distributions drop pydoc_data
        pass
    return [doc.strip() for doc in documents if len(doc.strip()) >= 40]


def _docstrings(path: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def load_raw_corpus(
    files: CorpusFiles | None,
    dataset_name: str | None,
    dataset_config_name: str | None,
    text_column: str,
    streaming: bool,
    cache_dir: str | None = None,
) -> Any:
    """A `datasets.DatasetDict` (or `IterableDatasetDict`) of documents in column `text_column`."""
    import datasets

    if dataset_name is not None:
        try:
            raw = datasets.load_dataset(dataset_name, dataset_config_name, streaming=streaming, cache_dir=cache_dir)
        except (ConnectionError, FileNotFoundError, ValueError, OSError) as err:
            hint = " (the Hub is off: HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") else ""
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"--dataset_name {dataset_name}: cannot load{hint}: {first}") from None
        if "train" not in raw:
            raise UserError(f"--dataset_name {dataset_name}: no 'train' split; splits are {sorted(raw)}")
        columns = raw["train"].column_names
        if columns is not None and text_column not in columns:
            raise UserError(f"--dataset_name {dataset_name}: no column {text_column!r}; columns are {columns} (set --text_column)")
        return raw
    if files is None:
        logger.info("no data flags: pre-training on the embedded default (Python standard library docstrings)")
        dataset = datasets.Dataset.from_dict({text_column: stdlib_documents()})
        return datasets.DatasetDict({"train": dataset.to_iterable_dataset() if streaming else dataset})
    data_files = {"train": files.train}
    if files.validation is not None:
        data_files["validation"] = files.validation
    builder = "json" if ".jsonl" in os.path.basename(files.train) else "text"
    if files.validation is not None and ("json" if ".jsonl" in os.path.basename(files.validation) else "text") != builder:
        raise UserError(f"--validation_file {files.validation}: must be the same kind of file as {files.train}")
    raw = datasets.load_dataset(builder, data_files=data_files, streaming=streaming, cache_dir=cache_dir)
    if builder == "text" and text_column != "text":
        raw = raw.rename_column("text", text_column)
    # Blank lines of a .txt file are not documents.
    return raw.filter(lambda example: bool(example[text_column] and example[text_column].strip()))


def split_at_spaces(text: str, max_chars: int) -> list[str]:
    """`text` cut into pieces of at most `max_chars` characters, each cut made just before a run of spaces
    (never inside a word), so that `"".join(pieces) == text`. A stretch of `max_chars` characters without
    a space (e.g. Chinese or Japanese text) is cut where it reaches the limit."""
    pieces, start = [], 0
    while len(text) - start > max_chars:
        end = text.rfind(" ", start + 1, start + max_chars + 1)  # the last space the next piece may start with
        while end > start and text[end - 1] == " ":
            end -= 1  # the whole run of spaces goes to the next piece
        if end <= start:
            end = start + max_chars
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces


def _document_pieces(batch: dict[str, list], text_column: str) -> dict[str, list]:
    texts, ends = [], []
    for text in batch[text_column]:
        pieces = split_at_spaces(text, DOCUMENT_PIECE_CHARS) if text else [text]
        texts += pieces
        ends += [False] * (len(pieces) - 1) + [True]
    return {text_column: texts, ENDS_DOCUMENT: ends}


def _longest_document(dataset: Any, text_column: str) -> int | None:
    """Characters in the longest document of an in-memory split (Arrow computes it without a copy); None
    for a streamed split, whose documents are unknown until read."""
    if not hasattr(dataset, "num_rows"):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    column = dataset.data.column(text_column)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return 0  # not text: the tokenizer reports it
    return pc.max(pc.utf8_length(column)).as_py() or 0


def tokenize_and_pack(
    raw: Any, tokenizer: Any, row_length: int, text_column: str, num_proc: int | None, main_process_first: Any
) -> Any:
    """Tokenize every split once and cut the token stream into rows of exactly `row_length` tokens.

    Each document ends with `</s>` (the tokenizer appends it), so documents are joined with `</s>`
    between them, as in the HF and nanoT5 pipelines (Google's T5 joined them with nothing between).
    A document longer than `DOCUMENT_PIECE_CHARS` is first cut into pieces before spaces
    (`split_at_spaces`), one row each, and tokenized piece by piece with `</s>` after its last piece
    only: the same tokens for a tokenizer that never joins words across a space (T5's SentencePiece),
    in bounded memory and with a moving progress bar (a 50 MB single-line corpus, tiny tokenizer, 2 CPU
    cores: 172 s and 5.6 GB peak in one piece, the bar at 0/1; 37 s and 0.8 GB in pieces).
    Rows are packed: no padding; the last partial row of every map batch of 1000 documents (or pieces)
    is dropped.
    Rows come back in the numpy format, so each row's `input_ids` reaches the collator as a numpy
    array, which it stacks in one copy (~0.15 ms for 128 x 568 tokens; from Python lists 2-3.5 ms,
    about as long as the span corruption itself: bench/collator.py). `map`, `select`,
    `train_test_split`, `skip` and `take` keep the format.
    """
    streaming = not hasattr(next(iter(raw.values())), "num_rows")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        texts, ends = batch[text_column], batch.get(ENDS_DOCUMENT)
        if ends is None or all(ends):
            return {"input_ids": tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]}
        ids: list[Any] = [None] * len(texts)
        for last in (True, False):  # </s> after a document's last piece only
            rows = [i for i, end in enumerate(ends) if end == last]
            if rows:
                encoded = tokenizer([texts[i] for i in rows], add_special_tokens=last, verbose=False)["input_ids"]
                for i, row in zip(rows, encoded):
                    ids[i] = row
        return {"input_ids": ids}

    def pack(batch: dict[str, list]) -> dict[str, list]:
        stream = list(chain.from_iterable(batch["input_ids"]))
        usable = len(stream) // row_length * row_length
        return {"input_ids": [stream[i : i + row_length] for i in range(0, usable, row_length)]}

    packed = {}
    with main_process_first(desc="tokenizing and packing the corpus"):
        for split, dataset in raw.items():
            columns = dataset.column_names
            if columns is None:  # a streamed split whose features are unknown until read
                columns = list(next(iter(dataset)).keys())
            longest = _longest_document(dataset, text_column)
            if longest is None or longest > DOCUMENT_PIECE_CHARS:
                split_kwargs: dict[str, Any] = {"batched": True, "remove_columns": columns, "fn_kwargs": {"text_column": text_column}}
                if not streaming:
                    split_kwargs.update(num_proc=num_proc, desc=f"cutting {split} documents longer than {DOCUMENT_PIECE_CHARS} characters")
                dataset = dataset.map(_document_pieces, **split_kwargs)
                columns = [text_column, ENDS_DOCUMENT]
            map_kwargs: dict[str, Any] = {"batched": True, "remove_columns": columns}
            if not streaming:
                map_kwargs.update(num_proc=num_proc, desc=f"tokenizing {split}")
            tokenized = dataset.map(tokenize, **map_kwargs)
            pack_kwargs: dict[str, Any] = {"batched": True}
            if not streaming:
                pack_kwargs.update(num_proc=num_proc, desc=f"packing {split} into rows of {row_length}")
            packed[split] = tokenized.map(pack, **pack_kwargs).with_format("numpy")
    return packed


def split_off_validation(
    packed: dict[str, Any], percentage: float, seed: int, eval_rows_streaming: int, source: str
) -> tuple[Any, Any]:
    """(train, validation) rows; holds out `percentage` % of the packed rows when no validation split exists.

    Rows rather than documents are held out so that a small corpus still gets whole validation rows.
    A streamed corpus without a validation split gives its first `eval_rows_streaming` rows to validation.
    """
    train = packed["train"]
    if "validation" in packed:
        return train, packed["validation"]
    if not hasattr(train, "num_rows"):
        return train.skip(eval_rows_streaming), train.take(eval_rows_streaming)
    if train.num_rows < 2:
        raise UserError(
            f"{source}: the training text fills {train.num_rows} row(s) of packed tokens; at least 2 are needed to "
            "hold out validation (give more text, a shorter --max_seq_length, or a --validation_file)"
        )
    held_out = min(max(1, round(train.num_rows * percentage / 100)), train.num_rows - 1)
    split = train.train_test_split(test_size=held_out, seed=seed, shuffle=True)
    return split["train"], split["test"]
