"""Task records -> T5 text-to-text pairs, and loading a task's splits from the Hub or local files.

Everything task-specific comes from the registry entry (`constants.DATASET_VALS[benchmark][task]`):

    entry = get_task("glue", "mnli")
    splits = load_task_splits(entry, dataset_dir="glue_data")  # Hub copy or original TSV files
    source, target = format_example(entry, splits["validation_matched"][0])
    # "mnli hypothesis: ... premise: ...", "neutral"

Whatever the source (Hub, a local copy in Hub layout, the original benchmark files, explicit
files), the loaded splits have the Hub's column names: the entry's text columns, `label` (label id,
-1 where unknown; a float for a regression task) and `idx`.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cli import UserError
from constants import DATASET_VALS

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

Entry = Mapping[str, Any]
ROLES = ("train", "validation", "test")


def get_task(benchmark: str, task: str) -> Entry:
    """The registry entry of `benchmark`/`task`, or a UserError listing the valid ones."""
    if benchmark not in DATASET_VALS:
        raise UserError(f"unknown benchmark {benchmark!r}; valid: {', '.join(DATASET_VALS)}")
    if task not in DATASET_VALS[benchmark]:
        raise UserError(
            f"unknown task {task!r} of benchmark {benchmark!r}; "
            f"valid: {', '.join(DATASET_VALS[benchmark])}"
        )
    return DATASET_VALS[benchmark][task]


# --- labels ------------------------------------------------------------------------------------


def id_to_label(entry: Entry, label_id: int) -> str:
    """Label id -> target word (e.g. MNLI 1 -> "neutral")."""
    return entry["labels"][label_id]


def label_to_id(entry: Entry, label: str) -> int:
    """Target word -> label id, -1 for any other string (T5 `postprocessors.string_label_to_class_id`)."""
    labels = entry["labels"]
    return labels.index(label) if label in labels else -1


def format_float(score: float) -> str:
    """STS-B target: the score rounded to the nearest 0.2, one decimal ("3.84" -> "3.8").

    T5 `preprocessors.stsb`: `tf.as_string(tf.round(label * 5) / 5, precision=1)` on the float32
    label; `tf.round` rounds half to even like `np.round`, so 2.5 -> "2.4" and 3.5 -> "3.6".
    """
    five = np.float32(5)
    return f"{np.round(np.float32(score) * five) / five:.1f}"


def parse_float(text: str, default: float = -1.0) -> float:
    """A generated STS-B string -> float, `default` when unparsable (T5 `string_to_float`)."""
    try:
        return float(text)
    except ValueError:
        return default


# --- text-to-text format -------------------------------------------------------------------------


def format_source(entry: Entry, record: Mapping[str, Any]) -> str:
    """T5's input string: "<prefix> <key1>: <value1> <key2>: <value2>", keys sorted.

    Reproduces T5 `t5/data/preprocessors.py` `glue()` (and `stsb()`): the prefix, then "key:" and the
    raw value for each feature sorted by name, joined with single spaces. Values are not stripped or
    collapsed there; SentencePiece's normaliser removes redundant whitespace when tokenizing.
    """
    parts = [entry["prefix"]]
    for key in sorted(entry["text_columns"]):
        parts += [f"{key}:", record[key]]
    return " ".join(parts)


def format_target(entry: Entry, record: Mapping[str, Any]) -> str | None:
    """T5's target string: the label word, or the rounded score; None where the label is unknown (-1)."""
    label = record[entry["label_column_name"]]
    if label is None or label == -1:
        return None
    return id_to_label(entry, label) if entry["labels"] else format_float(label)


def format_example(entry: Entry, record: Mapping[str, Any]) -> tuple[str, str | None]:
    """(source, target) of one Hub-style record."""
    return format_source(entry, record), format_target(entry, record)


def submission_value(entry: Entry, prediction: str) -> str | int | float:
    """A generated string -> the value the leaderboard file holds (`entry["submission_values"]`).

    A string outside the label set becomes label 0 (a leaderboard rejects anything else); an
    unparsable score becomes the low end of `value_range`.
    """
    form = entry["submission_values"]
    if form == "float":
        low, high = entry["value_range"]
        return float(np.clip(parse_float(prediction, default=low), low, high))
    label_id = max(label_to_id(entry, prediction.strip()), 0)
    if form == "label_id":
        return label_id
    return (entry["submission_labels"] or entry["labels"])[label_id]


# --- loading -------------------------------------------------------------------------------------


def load_task_splits(
    entry: Entry,
    *,
    dataset_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    cache_dir: str | None = None,
    roles: Sequence[str] | None = None,
    local: LocalSplits | None = None,
) -> datasets.DatasetDict:
    """The task's splits, keyed by Hub split name, with Hub column names and types.

    Sources, per role (train / validation / test; `roles` picks some, default all of the entry's):
    an explicit file (csv, tsv, json, jsonl, parquet; it stands for the role's first split, e.g.
    MNLI's validation_matched); else `dataset_dir`, a local copy holding one folder per task in the
    Hub repository layout (`DIR/sst2/train-00000-of-00001.parquet`) or the original benchmark files
    (`DIR/SST-2/train.tsv`, `DIR/BoolQ/val.jsonl`); else, when no file was given at all, the Hub
    (`datasets.load_dataset(hub_path, hub_config)`) or, for a generated task, its generator.
    `local` is `read_local_splits`' result for the same arguments, when the caller read the files first.
    """
    import datasets  # here, not at the top: scripts' `--help` stays fast

    if local is None:
        local = read_local_splits(entry, dataset_dir=dataset_dir, train_file=train_file, validation_file=validation_file,
                                  test_file=test_file, roles=roles)
    splits = {name: _as_dataset(entry, columns) for name, columns in local.columns.items()}
    rest = local.rest
    if rest and entry["generator"]:
        generated = generate_toy_splits(entry["generator"])
        text_column, label_column = entry["text_columns"][0], entry["label_column_name"]
        for name, is_test in rest.items():  # as `write_toy_benchmark` writes it: no test labels
            rows = [{text_column: s, **({} if is_test else {label_column: y})} for s, y in generated[name]]
            splits[name] = _as_dataset(entry, _validated_columns(entry, Path("<generated>"), rows, list(rows[0]), None, is_test))
    elif rest:
        if entry["hub_path"] is None:
            raise UserError(f"task {entry['name']} has no Hub copy; pass a dataset directory or files")
        try:
            hub = datasets.load_dataset(entry["hub_path"], entry["hub_config"], cache_dir=cache_dir)
        except OSError as error:  # ConnectionError offline, DatasetNotFoundError, ...
            raise UserError(
                f"could not load {entry['hub_path']} {entry['hub_config']} from the Hub ({error}); "
                "pass a local copy as the dataset directory"
            ) from error
        for name in rest:
            if name not in hub or len(hub[name]) == 0:
                source = f"{entry['hub_path']} {entry['hub_config']}"
                raise UserError(f"{source}: split {name!r} is missing or empty")
            splits[name] = hub[name]
    return datasets.DatasetDict(splits)


@dataclass
class LocalSplits:
    """The splits read from local files (split name -> validated columns) and those still to load
    from the Hub or the task's generator (split name -> is a test split)."""

    columns: dict[str, dict[str, list[Any]]]
    rest: dict[str, bool]


def read_local_splits(
    entry: Entry,
    *,
    dataset_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    roles: Sequence[str] | None = None,
) -> LocalSplits:
    """Read and validate every local file `load_task_splits` would use; no heavy import (the scripts
    call this before importing transformers, so a broken file is reported in about a second)."""
    roles = list(roles or entry["splits"])
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    for role in roles + [role for role, file in files.items() if file]:
        if role not in entry["splits"]:
            raise UserError(f"task {entry['name']} has no {role} split; it has: {', '.join(entry['splits'])}")

    if dataset_dir is not None and not Path(dataset_dir).is_dir():
        raise UserError(f"dataset directory {dataset_dir} does not exist")
    columns: dict[str, dict[str, list[Any]]] = {}
    rest: dict[str, bool] = {}
    for role in roles:
        is_test = role == "test"
        if files[role]:
            columns[entry["splits"][role][0]] = _read_files(entry, [Path(files[role])], is_test)
        elif dataset_dir is not None:
            for name in entry["splits"][role]:
                paths = _find_split_files(entry, name, Path(dataset_dir))
                columns[name] = _read_files(entry, paths, is_test, entry["tsv_headerless"].get(name))
        elif not any(files.values()):
            rest.update({name: is_test for name in entry["splits"][role]})
    return LocalSplits(columns, rest)


def _find_split_files(entry: Entry, split: str, root: Path) -> list[Path]:
    """The file(s) of `split` under `root` (or in `root` itself, a task's own folder).

    The Hub layout first (`root/<hub_config>/<split>-00000-of-00001.parquet`, one file per shard),
    then the original benchmark file (`root/<tsv_dir>/<file>`).
    """
    folders = ([root / entry["hub_config"]] if entry["hub_config"] else []) + [root]
    looked_for = []
    for folder in folders:
        shards = sorted(folder.glob(f"{split}-*.parquet"))
        if shards:
            return shards
        looked_for.append(str(folder / f"{split}-*.parquet"))
    if split in entry["tsv_files"]:
        for path in [root / entry["tsv_dir"] / entry["tsv_files"][split], root / entry["tsv_files"][split]]:
            if path.is_file():
                return [path]
            looked_for.append(str(path))
    raise UserError(f"dataset directory {root} has no {split!r} split; looked for: {', '.join(looked_for)}")


def _read_files(
    entry: Entry, paths: Sequence[Path], is_test: bool, headerless: Sequence[str] | None = None
) -> dict[str, list[Any]]:
    """The validated columns of one split, read from its file(s) (several: shards, concatenated)."""
    columns: dict[str, list[Any]] = {}
    for path in paths:
        for name, values in _validated_columns(entry, path, *_read_file(path, headerless), is_test).items():
            columns.setdefault(name, []).extend(values)
    return columns


def _read_file(
    path: Path, headerless: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], list[str], int | None]:
    """Rows (dicts), column names, and the line number of the first row (None: report row indices)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        return _read_rows(path, suffix, headerless)
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); re-encode it as UTF-8") from None


def _read_rows(
    path: Path, suffix: str, headerless: Sequence[str] | None
) -> tuple[list[dict[str, Any]], list[str], int | None]:
    if suffix in (".tsv", ".csv"):
        with path.open(newline="", encoding="utf-8") as f:
            # GLUE TSVs hold unbalanced quotes (e.g. SST-2, MNLI): quoting must be off for them.
            tsv = suffix == ".tsv"
            lines = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(f))
        columns = list(headerless) if headerless else (lines.pop(0) if lines else [])
        return [dict(zip(columns, line)) for line in lines], columns, 1 if headerless else 2
    if suffix in (".jsonl", ".json"):
        text = path.read_text(encoding="utf-8")
        try:  # JSON lines, or one JSON list of records
            if text.lstrip().startswith("["):
                rows = json.loads(text)
            else:
                rows = []
                for number, line in enumerate(text.splitlines(), start=1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as error:
                            raise UserError(f"{path}: line {number}: invalid JSON at column {error.colno}: {error.msg}") from None
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
        if not all(isinstance(row, dict) for row in rows):
            raise UserError(f"{path}: every record must be a JSON object")
        return rows, list(dict.fromkeys(key for row in rows for key in row)), 1
    if suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet

        try:
            table = pyarrow.parquet.read_table(path)
        except (pyarrow.ArrowException, OSError) as error:
            raise UserError(f"{path}: not a readable parquet file ({str(error).splitlines()[0]})") from None
        return table.to_pylist(), table.column_names, None
    raise UserError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .json, .jsonl or .parquet")


def _validated_columns(
    entry: Entry,
    path: Path,
    rows: list[dict[str, Any]],
    columns: list[str],
    first_line: int | None,
    is_test: bool,
) -> dict[str, list[Any]]:
    """Rows of any source -> the Hub's columns (text, label id or score, idx), validating every value."""
    if not rows:
        raise UserError(f"{path}: no records")

    def where(i: int) -> str:
        return f"{path}, row {i}" if first_line is None else f"{path}, line {i + first_line}"

    def source_column(hub_column: str) -> str | None:
        """The file's column for a Hub column: the Hub name itself or the original benchmark's."""
        for name in (hub_column, entry["tsv_columns"].get(hub_column)):
            if name in columns:
                return name
        return None

    found = f"columns found: {', '.join(columns)}"
    data: dict[str, list[Any]] = {}
    for hub_column in entry["text_columns"]:
        column = source_column(hub_column)
        if column is None:
            raise UserError(f"{path}: missing column {_alternatives(entry, hub_column)}; {found}")
        data[hub_column] = [row.get(column) for row in rows]
        for i, value in enumerate(data[hub_column]):
            if not isinstance(value, str):
                raise UserError(f"{where(i)}: column {column!r} is missing or not text (got {value!r})")

    label_name = entry["label_column_name"]
    column = source_column(label_name)
    if column is None and not is_test:
        raise UserError(f"{path}: missing label column {_alternatives(entry, label_name)}; {found}")
    data[label_name] = [  # `where` is only formatted for an error
        _parse_label(entry, row.get(column), is_test, lambda: f"{where(i)}: column {column!r}")
        for i, row in enumerate(rows)
    ]
    try:
        data["idx"] = [int(row.get("idx", i)) for i, row in enumerate(rows)]
    except (TypeError, ValueError) as error:
        raise UserError(f"{path}: column 'idx' must hold integers ({error})") from error

    logger.info("read %d records from %s", len(rows), path)
    return data


def _as_dataset(entry: Entry, columns: dict[str, list[Any]]) -> datasets.Dataset:
    """Validated columns -> a Dataset with the Hub's features (label names, or a float score)."""
    import datasets

    label_feature = (
        datasets.ClassLabel(names=list(entry["labels"])) if entry["labels"] else datasets.Value("float32")
    )
    features = datasets.Features(
        {**{c: datasets.Value("string") for c in entry["text_columns"]}, entry["label_column_name"]: label_feature,
         "idx": datasets.Value("int32")}
    )
    return datasets.Dataset.from_dict(columns, features=features)


def _alternatives(entry: Entry, hub_column: str) -> str:
    original = entry["tsv_columns"].get(hub_column)
    return f"{hub_column!r}" + (f" (or {original!r})" if original and original != hub_column else "")


def _parse_label(entry: Entry, value: Any, is_test: bool, where: Callable[[], str]) -> int | float:
    """A raw label (Hub id, label word, "0"/"1", JSON bool, score string) -> Hub label id or float."""
    labels = entry["labels"]
    if value is None or value == "" or (is_test and value in (-1, "-1")):
        if is_test:
            return -1
        raise UserError(f"{where()}: empty label")
    if not labels:  # regression
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = None
        low, high = entry["value_range"] or (-np.inf, np.inf)
        if score is None or not low <= score <= high:
            raise UserError(f"{where()}: score {value!r} is not a number in [{low}, {high}]")
        return score
    if isinstance(value, bool):  # SuperGLUE BoolQ JSONL: false/true are ids 0/1 of False/True
        return int(value)
    if isinstance(value, str) and value.strip() in labels:
        return labels.index(value.strip())
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        if 0 <= int(value) < len(labels):
            return int(value)
    raise UserError(
        f"{where()}: label {value!r} is not one of {', '.join(labels)} (or ids 0-{len(labels) - 1})"
    )


# --- the toy benchmark ---------------------------------------------------------------------------


def generate_toy_splits(
    generator: Mapping[str, Any], seed: int = 0, sizes: Mapping[str, int] | None = None
) -> dict[str, list[tuple[str, int]]]:
    """Deterministic templated sentiment examples: split -> [(sentence, label id)].

    Labels are balanced within each split (n // 2 of each, one more of label 0 for odd n) and no
    sentence occurs twice across the splits, so validation and test measure generalisation.
    """
    rng = random.Random(seed)
    sizes = sizes or generator["sizes"]
    seen: set[str] = set()
    splits = {}
    for split, n in sizes.items():
        labels = [i % 2 for i in range(n)]
        rng.shuffle(labels)
        examples = []
        for label in labels:
            for _ in range(1000):  # redraw duplicates; the template space is far larger than any split
                words = generator["words"][label]
                sentence = rng.choice(generator["templates"]).format(
                    subject=rng.choice(generator["subjects"]),
                    subject2=rng.choice(generator["subjects"]),
                    word=rng.choice(words),
                    word2=rng.choice(words),
                    intensifier=rng.choice(generator["intensifiers"]),
                    opener=rng.choice(generator["openers"]),
                )
                if sentence not in seen:
                    break
            else:
                raise ValueError(f"the toy generator ran out of distinct sentences at {len(seen)}")
            seen.add(sentence)
            examples.append((sentence, label))
        splits[split] = examples
    return splits


def write_toy_benchmark(
    directory: str | Path,
    n_train: int = DATASET_VALS["toy"]["sentiment"]["generator"]["sizes"]["train"],
    n_validation: int = DATASET_VALS["toy"]["sentiment"]["generator"]["sizes"]["validation"],
    n_test: int = DATASET_VALS["toy"]["sentiment"]["generator"]["sizes"]["test"],
    seed: int = 0,
) -> Path:
    """Write the toy sentiment task in GLUE's original layout (SST-2's columns); returns its folder.

    `DIRECTORY/<tsv_dir>/train.tsv` and `dev.tsv` hold "sentence\\tlabel", `test.tsv` "index\\tsentence",
    so `load_task_splits(entry, dataset_dir=DIRECTORY)` reads it like any GLUE task.
    """
    entry = DATASET_VALS["toy"]["sentiment"]
    folder = Path(directory) / entry["tsv_dir"]
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    for split, examples in generate_toy_splits(entry["generator"], seed, sizes).items():
        if split == "test":
            lines = ["index\tsentence"] + [f"{i}\t{s}" for i, (s, _) in enumerate(examples)]
        else:
            lines = ["sentence\tlabel"] + [f"{s}\t{label}" for s, label in examples]
        (folder / entry["tsv_files"][split]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    logger.info("wrote the toy benchmark (%s) to %s", sizes, folder)
    return folder
