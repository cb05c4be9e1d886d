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
import io
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from errors import UserError
from constants import DATASET_VALS, normalize_entry
from records import read_numbered_records, read_text

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

Entry = Mapping[str, Any]


def get_task(benchmark: str, task: str) -> Entry:
    """The registry entry of `benchmark`/`task`, or a UserError listing the valid ones.

    An entry put into `DATASET_VALS` directly (as the original toolkit's README showed) is validated and
    normalised here, once, by the same `constants.normalize_entry` as the built-in ones.
    """
    if benchmark not in DATASET_VALS:
        raise UserError(f"unknown benchmark {benchmark!r}; valid: {', '.join(DATASET_VALS)}")
    if task not in DATASET_VALS[benchmark]:
        raise UserError(
            f"unknown task {task!r} of benchmark {benchmark!r}; "
            f"valid: {', '.join(DATASET_VALS[benchmark])}"
        )
    entry = DATASET_VALS[benchmark][task]
    if entry.get("name") != f"{benchmark}/{task}":  # not normalised yet
        entry = DATASET_VALS[benchmark][task] = normalize_entry(benchmark, task, entry)
    return entry


# --- labels ------------------------------------------------------------------------------------


def task_names(benchmark: str, dataset_name: str) -> list[str]:
    """`--dataset_name`'s tasks: one name, a comma-separated list (a multi-task mixture), or `all`: every task of the
    benchmark that has training data (GLUE: not AX)."""
    if dataset_name == "all":
        names = [name for name in DATASET_VALS.get(benchmark, {}) if "train" in get_task(benchmark, name)["splits"]]
        if not names:
            raise UserError(f"--dataset_name all: benchmark {benchmark!r} has no task with training data; "
                            f"valid benchmarks: {', '.join(DATASET_VALS)}")
        return names
    names = [name.strip() for name in dataset_name.split(",") if name.strip()]
    if len(set(names)) != len(names):
        raise UserError(f"--dataset_name {dataset_name}: a task is named twice")
    return names


# --- multi-task mixtures (T5, Raffel et al. 2020, sec. 3.5.2) ---------------------------------------------------

MIXING_RATES = ("examples_proportional", "equal", "temperature")
T5_MIXING_CAP = 2**19  # T5's K for the examples-proportional mixtures of sec. 3.5.2


def mixing_rates(sizes: Mapping[str, int], method: str, cap: int = T5_MIXING_CAP, temperature: float = 1.0) -> dict[str, float]:
    """Each task's share of the mixture. examples_proportional: min(n, K) / sum of min(n', K); temperature: those
    capped sizes raised to 1/T, renormalised (T = 1 is examples-proportional, large T tends to equal); equal: 1/M."""
    if method == "equal":
        weights = {name: 1.0 for name in sizes}
    elif method in ("examples_proportional", "temperature"):
        power = 1.0 / temperature if method == "temperature" else 1.0
        weights = {name: float(min(n, cap)) ** power for name, n in sizes.items()}
    else:
        raise UserError(f"--mixing_rate {method}: must be one of {', '.join(MIXING_RATES)}")
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items()}


def mixture(datasets_by_task: Mapping[str, Any], rates: Mapping[str, float], draws: int, seed: int) -> Any:
    """One training set of at least `draws` examples, each drawn from task m with probability rates[m]
    (`datasets.interleave_datasets`). T5 repeats every task of a mixture as often as needed: each task is repeated
    enough times (its expected draws plus a 20% margin) that the default `first_exhausted` stopping does not end
    the mixture before `draws` (--max_steps x the global batch)."""
    import math

    from datasets import concatenate_datasets, interleave_datasets

    repeated = []
    for name, dataset in datasets_by_task.items():
        if len(dataset) == 0:
            raise UserError(f"task {name}: no training examples to mix")
        copies = math.ceil((1.2 * rates[name] * draws + 64) / len(dataset))
        repeated.append(concatenate_datasets([dataset] * copies) if copies > 1 else dataset)
    mixed = interleave_datasets(repeated, probabilities=[rates[name] for name in datasets_by_task], seed=seed,
                                stopping_strategy="first_exhausted")
    if len(mixed) < draws:  # about 5 standard deviations below the expected length: not seen in practice
        raise RuntimeError(f"the mixture ran out after {len(mixed)} of {draws} examples")
    return mixed


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


# --- tokenizing -----------------------------------------------------------------------------------


def tokenize_task_split(entry: Entry, split: str, dataset: Any, tokenizer: Any, max_source_length: int, max_target_length: int,
                        num_proc: int | None = None) -> Any:
    """T5 text-to-text pairs -> input_ids / attention_mask / labels, truncated (and counted) with `</s>` kept."""
    from modeling import encode_truncated

    has_labels = any(label not in (None, -1) for label in dataset[entry["label_column_name"]])

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        records = [dict(zip(batch, values)) for values in zip(*batch.values())]
        input_ids, source_truncated = encode_truncated(tokenizer, [format_source(entry, r) for r in records], max_source_length)
        out = {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids], "source_truncated": source_truncated}
        if has_labels:
            targets = [format_target(entry, r) or "" for r in records]
            out["labels"], out["target_truncated"] = encode_truncated(tokenizer, targets, max_target_length)
        else:
            out["target_truncated"] = [False] * len(records)
        return out

    tokenized = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names,
                            num_proc=num_proc, desc=f"tokenizing {split}")
    for kind, limit_flag in (("source", "--max_source_length"), ("target", "--max_target_length")):
        count = sum(tokenized[f"{kind}_truncated"])
        if count:
            logger.warning("%s: %d of %d %ss truncated to %s", split, count, len(tokenized), kind, limit_flag)
    return tokenized.remove_columns(["source_truncated", "target_truncated"])


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
    (`DIR/SST-2/train.tsv`, `DIR/BoolQ/val.jsonl`), or what the entry's loader (`LOADERS`) finds
    there; else, when no file was given at all, the entry's loader (e.g. the toy task's generator) or
    the Hub (`datasets.load_dataset(hub_path, hub_config)`). An entry with a `split_rule` and no
    validation file of its own gets its validation split carved from the train split (`split_rule_indices`).
    `local` is `read_local_splits`' result for the same arguments, when the caller read the files first.
    """
    import datasets  # here, not at the top: scripts' `--help` stays fast

    if local is None:
        local = read_local_splits(entry, dataset_dir=dataset_dir, train_file=train_file, validation_file=validation_file,
                                  test_file=test_file, roles=roles)
    splits = {name: _as_dataset(entry, columns) for name, columns in local.columns.items()}
    rest = local.rest
    loader = get_loader(entry)
    if rest and loader is not None:
        produced = loader(entry, None)
        for name, is_test in rest.items():
            if not produced.get(name):
                raise UserError(f"task {entry['name']}: loader {entry['loader']!r} produced no {name!r} split; "
                                "pass a dataset directory or files")
            splits[name] = _as_dataset(entry, _loaded_columns(entry, name, produced[name], is_test))
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
    train_name, validation_name = entry["splits"].get("train", [None])[0], entry["splits"].get("validation", [None])[0]
    if local.carve_validation and train_name in splits:
        train = splits.pop(train_name)
        train_rows, validation_rows = split_rule_indices(entry, len(train))
        if local.keep_train:
            splits[train_name] = train.select(train_rows)
        splits[validation_name] = train.select(validation_rows)
    return datasets.DatasetDict(splits)


def split_rule_indices(entry: Entry, count: int) -> tuple[list[int], list[int]]:
    """(train, validation) row indices of a single native file under the entry's `split_rule`.

    A seeded shuffle (`random.Random(seed)`) of the `count` rows; the first round(count *
    validation_fraction) of it, at least one and never all, are the validation split. Both lists keep
    file order, and the same file, fraction and seed give the same split on every machine.
    """
    rule = entry["split_rule"]
    if count < 2:
        raise UserError(f"task {entry['name']}: split_rule needs at least 2 training records to carve a validation split; got {count}")
    order = list(range(count))
    random.Random(rule["seed"]).shuffle(order)
    size = min(max(round(count * rule["validation_fraction"]), 1), count - 1)
    return sorted(order[size:]), sorted(order[:size])


@dataclass
class LocalSplits:
    """The splits read from local files (split name -> validated columns), those still to load from
    the Hub or the task's loader (split name -> is a test split), and whether `load_task_splits` carves
    the validation split from the train split (the entry's `split_rule`) and then keeps the train split."""

    columns: dict[str, dict[str, list[Any]]]
    rest: dict[str, bool]
    carve_validation: bool = False
    keep_train: bool = True


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
    # A split rule reads the train split's source in place of a validation split of its own.
    carve = bool(entry["split_rule"]) and "validation" in roles and not validation_file
    keep_train = "train" in roles
    if carve:
        roles = ["train"] + [role for role in roles if role not in ("train", "validation")]
    columns: dict[str, dict[str, list[Any]]] = {}
    rest: dict[str, bool] = {}
    loaded: dict[str, list[dict[str, Any]]] | None = None  # the loader's splits, read once
    for role in roles:
        is_test = role == "test"
        if files[role]:
            columns[entry["splits"][role][0]] = _read_files(entry, [Path(files[role])], is_test)
        elif dataset_dir is not None:
            for name in entry["splits"][role]:
                try:
                    paths = _find_split_files(entry, name, Path(dataset_dir))
                except UserError:
                    loader = get_loader(entry)
                    if loader is None:
                        raise
                    loaded = loader(entry, Path(dataset_dir)) if loaded is None else loaded
                    if not loaded.get(name):
                        raise
                    columns[name] = _loaded_columns(entry, name, loaded[name], is_test)
                else:
                    columns[name] = _read_files(entry, paths, is_test, entry["tsv_headerless"].get(name))
        elif not any(files.values()):
            rest.update({name: is_test for name in entry["splits"][role]})
    return LocalSplits(columns, rest, carve_validation=carve, keep_train=keep_train)


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
) -> tuple[list[dict[str, Any]], list[str], list[int] | None]:
    """Rows (dicts), column names, and each row's 1-based line number (None: report 1-based row numbers)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return _read_rows(path, path.suffix.lower(), headerless)


def _read_rows(
    path: Path, suffix: str, headerless: Sequence[str] | None
) -> tuple[list[dict[str, Any]], list[str], list[int] | None]:
    if suffix in (".tsv", ".csv"):
        return _read_delimited(path, suffix == ".tsv", headerless)
    if suffix in (".jsonl", ".json"):
        rows, numbers = read_numbered_records(str(path))  # JSON lines, or one JSON list of records
        if not all(isinstance(row, dict) for row in rows):
            raise UserError(f"{path}: every record must be a JSON object")
        return rows, list(dict.fromkeys(key for row in rows for key in row)), numbers
    if suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet

        try:
            table = pyarrow.parquet.read_table(path)
        except (pyarrow.ArrowException, OSError) as error:
            raise UserError(f"{path}: not a readable parquet file ({str(error).splitlines()[0]})") from None
        return table.to_pylist(), table.column_names, None
    raise UserError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .json, .jsonl or .parquet")


def _read_delimited(
    path: Path, tsv: bool, headerless: Sequence[str] | None
) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """Rows of a TSV / CSV file and the line each starts on (a quoted CSV field may span lines).

    A row with more fields than the header is an error: zipped with the header, its last fields would
    vanish (a tab inside a TSV text: `the verdict<TAB>0<TAB>1 (really positive)` would train as label 0).
    A row with fewer fields leaves columns missing, which the column checks report with the line.
    """
    # GLUE TSVs hold unbalanced quotes (e.g. SST-2, MNLI): quoting must be off for them.
    text = io.StringIO(read_text(path), newline="")
    reader = csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(text)
    columns: list[str] | None = list(headerless) if headerless else None
    rows, numbers = [], []
    start = 1  # the line the next row starts on
    for fields in reader:
        if columns is None:
            columns = fields
        elif len(fields) > len(columns):
            has = f"the header has {len(columns)}" if not headerless else f"the file has no header and {len(columns)} columns"
            hint = "a tab inside the text?" if tsv else "a comma outside quotes?"
            raise UserError(f"{path}: line {start}: {len(fields)} fields, {has} ({hint})")
        else:
            rows.append(dict(zip(columns, fields)))
            numbers.append(start)
        start = reader.line_num + 1
    return rows, columns or [], numbers


def _validated_columns(
    entry: Entry,
    path: Path,
    rows: list[dict[str, Any]],
    columns: list[str],
    line_numbers: Sequence[int] | None,
    is_test: bool,
) -> dict[str, list[Any]]:
    """Rows of any source -> the Hub's columns (text, label id or score, idx), validating every value.

    Messages name a row by its 1-based line in the file (`line_numbers`), else its 1-based row number.
    """
    if not rows:
        raise UserError(f"{path}: no records")

    def where(i: int) -> str:
        return f"{path}, row {i + 1}" if line_numbers is None else f"{path}, line {line_numbers[i]}"

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


def _loaded_columns(entry: Entry, split: str, rows: list[dict[str, Any]], is_test: bool) -> dict[str, list[Any]]:
    """A loader's records of one split -> validated columns (messages name the loader and the row)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return _validated_columns(entry, Path(f"<loader {entry['loader']}, split {split}>"), rows, columns, None, is_test)


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


# --- loaders: data that is not csv/tsv/json/parquet rows ---------------------------------------------
# The registry names a loader (`entry["loader"]`); the code lives here. A loader takes the entry and
# the dataset directory (None when none was given) and returns records (dicts with the entry's text
# and label columns, Hub or original names) per split name: the splits it can produce, possibly none.
# `read_local_splits` calls it for the splits a dataset directory lacks in the standard layouts;
# `load_task_splits` calls it with None where it would otherwise ask the Hub.

Loader = Callable[[Entry, Path | None], dict[str, list[dict[str, Any]]]]


def _toy_generator(entry: Entry, dataset_dir: Path | None) -> dict[str, list[dict[str, Any]]]:
    """The toy task generated in memory, as `write_toy_benchmark` writes it (no test labels).

    Nothing for a dataset directory: there the toy task is the TSV files `write_toy_benchmark` wrote,
    and a folder without them is an error, not a reason to generate.
    """
    from examples import generate_toy_splits

    if dataset_dir is not None:
        return {}
    text_column, label_column = entry["text_columns"][0], entry["label_column_name"]
    return {
        name: [{text_column: s, **({} if name in entry["splits"].get("test", []) else {label_column: y})} for s, y in examples]
        for name, examples in generate_toy_splits(entry["generator"]).items()
    }


# The bias benchmarks as classification tasks (constants.BIAS): records from the native release files in
# the dataset directory, or from the Hub's parquet copies (dataset_dir None), read by bias_data.py.
PAIR_ORDER_SEED = 42  # CrowS-Pairs: which sentence of a pair comes first


def _crows_pairs_classification(entry: Entry, dataset_dir: Path | None) -> dict[str, list[dict[str, Any]]]:
    """CrowS-Pairs pairs in a seeded random order: label 1 ("true") when sentence1 is the more stereotyping
    sentence (sent_more), 0 when the order is swapped. All go to the train split; the entry's split_rule
    carves the validation split."""
    import bias_data

    if dataset_dir is None:
        pairs = bias_data.load_hub("crows_pairs")
    else:
        pairs = bias_data.find_crows_pairs(str(dataset_dir))
    rng = random.Random(PAIR_ORDER_SEED)
    records = []
    for pair in pairs:
        label = rng.randint(0, 1)
        first, second = (pair["sent_more"], pair["sent_less"]) if label else (pair["sent_less"], pair["sent_more"])
        records.append({"sentence1": first, "sentence2": second, "label": label, "idx": pair["id"]})
    return {"train": records}


def _stereoset_classification(entry: Entry, dataset_dir: Path | None) -> dict[str, list[dict[str, Any]]]:
    """StereoSet intersentence: (context, sentence) with label 1 for the stereotype, 0 for the anti-stereotype;
    unrelated sentences dropped. All go to the train split; the entry's split_rule carves the validation split."""
    import bias_data

    examples = (bias_data.load_hub("stereoset") if dataset_dir is None else bias_data.find_stereoset(str(dataset_dir)))["intersentence"]
    labels = {"stereotype": 1, "anti-stereotype": 0}
    records = [{"context": example["context"], "sentence": sentence["sentence"], "label": labels[sentence["gold_label"]]}
               for example in examples for sentence in example["sentences"] if sentence["gold_label"] in labels]
    return {"train": [{**record, "idx": i} for i, record in enumerate(records)]}


def _winobias_classification(entry: Entry, dataset_dir: Path | None) -> dict[str, list[dict[str, Any]]]:
    """WinoBias sentences with label 1 when pro-stereotyped, 0 when anti-stereotyped; the dev files are the
    train split and the test files the validation split (as the original did)."""
    import bias_data

    out = {}
    for split, name in (("dev", "train"), ("test", "validation")):
        rows = bias_data.load_hub("winobias", split) if dataset_dir is None else bias_data.read_winobias(str(dataset_dir), split)
        out[name] = [{"sentence": row["sentence"], "label": int(row["stereotype"] == "pro"), "idx": i} for i, row in enumerate(rows)]
    return out


LOADERS: dict[str, Loader] = {
    "toy_generator": _toy_generator,
    "crows_pairs_classification": _crows_pairs_classification,
    "stereoset_classification": _stereoset_classification,
    "winobias_classification": _winobias_classification,
}


def get_loader(entry: Entry) -> Loader | None:
    """The entry's loader function, None when it names none; a UserError listing `LOADERS` otherwise."""
    name = entry["loader"]
    if name is None:
        return None
    if name not in LOADERS:
        raise UserError(f"registry entry {entry['name']}: 'loader' is {name!r}; valid: {', '.join(LOADERS)}")
    return LOADERS[name]
