"""Users' own records: the `mount/` layout and JSON / JSONL data files of seq2seq.py and clf.py.

Container jobs mount the user's home as `mount/`:

    mount/models/<model folder>/          checkpoints to start from (--model_init_name)
    mount/models/<training_run_name>/     where a run writes its results
    mount/data/<data_name>.json           {"train": [{...}, ...], "eval": [{...}, ...]}

A data file is either that JSON object of splits, or JSON lines (one record per line, OpenAI's legacy
fine-tuning form) given per split (`--train_file`, `--eval_file`). Every record is a JSON object;
the fields a script needs are checked with per-field validators, and any other keys are kept and
copied to the outputs. Every problem is a `UserError` naming the file, split, record and field.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from datetime import datetime
from typing import Any, Callable, Mapping

from errors import UserError

Record = dict[str, Any]
# A validator returns None for a valid value, else what is wrong with it ("must be a string").
Validator = Callable[[Any], "str | None"]


def is_string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"must be a string, got {type(value).__name__} {_short(value)}"


def is_probability(value: Any) -> str | None:
    """A number in [0, 1]: a soft label."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number in [0, 1], got {type(value).__name__} {_short(value)}"
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        return f"must be a number in [0, 1], got {value}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- the mount layout ---------------------------------------------------------------------------


def data_path(mount_dir: str, data_name: str) -> str:
    return os.path.join(mount_dir, "data", f"{data_name}.json")


def model_path(mount_dir: str, name: str | None, path: str | None, name_flag: str, path_flag: str) -> str:
    """Exactly one of a model folder under `<mount>/models` (`name`) or a path / Hub name (`path`)."""
    if (name is None) == (path is None):
        raise UserError(f"give exactly one of {name_flag} (a folder under {mount_dir}/models) or {path_flag} (a path or Hub name)")
    if name is not None:
        folder = os.path.join(mount_dir, "models", name)
        if not os.path.isdir(folder):
            raise UserError(f"{name_flag} {name}: no model folder {folder}")
        return folder
    return path


def model_folder_or_name(mount_dir: str, name: str) -> str:
    """One flag for both: `<mount>/models/<name>` when that folder exists, else `name` as given (a path or Hub name)."""
    folder = os.path.join(mount_dir, "models", name)
    return folder if os.path.isdir(folder) else name


def default_run_name(data_name: str | None, model: str) -> str:
    """`<data_name>-<model basename>-<YYYYmmdd-HHMMSS>`: a repeated command never lands in a finished run."""
    return f"{_run_name_prefix(data_name, model)}{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def preempted_run_name(mount_dir: str, data_name: str | None, model: str) -> str | None:
    """The newest run of this data and model (named by `default_run_name`) that a signal stopped (it holds
    the PREEMPTED marker), or None: what `--resume_from_checkpoint auto` without a run name resumes."""
    from outputs import PREEMPTED_MARKER

    prefix = _run_name_prefix(data_name, model)
    models = os.path.join(mount_dir, "models")
    names = sorted(n for n in os.listdir(models) if n.startswith(prefix) and os.path.isfile(os.path.join(models, n, PREEMPTED_MARKER))) \
        if os.path.isdir(models) else []
    return names[-1] if names else None


def _run_name_prefix(data_name: str | None, model: str) -> str:
    return f"{data_name or 'data'}-{os.path.basename(os.path.normpath(model)) or 'model'}-"


def run_path(mount_dir: str, training_run_name: str) -> str:
    from arguments import sweep_run_dir

    training_run_name = sweep_run_dir(training_run_name, "--training_run_name")
    if not training_run_name or os.sep in training_run_name or training_run_name in (".", ".."):
        raise UserError(f"--training_run_name {training_run_name!r}: must be a plain folder name (results go to {mount_dir}/models/<name>)")
    return os.path.join(mount_dir, "models", training_run_name)


# --- data files ---------------------------------------------------------------------------------


def load_splits(
    files: Mapping[str, str | None], data_file: str | None, fields: Mapping[str, Validator], splits: tuple[str, ...],
    not_all_empty: tuple[str, ...] = (),
) -> dict[str, list[Record]]:
    """Records of each wanted split, from per-split files (JSON lines or JSON) or one JSON file of splits.

    `files` maps a split to its own file (or None); splits without one come from `data_file`'s
    `{"<split>": [...]}`. Every split must be non-empty and every record must pass `fields`; in no
    split may every record's string field named in `not_all_empty` be empty (`count_empty`).
    """
    out: dict[str, list[Record]] = {}
    container = None
    for split in splits:
        path = files.get(split)
        if path is not None:
            out[split] = read_records(path, split)
        else:
            if data_file is None:
                raise UserError(f"no {split} data: give --data_name (a {{\"train\": [...], \"eval\": [...]}} file) or --{split}_file")
            if container is None:
                container = _read_json(data_file)
                if not isinstance(container, dict):
                    raise UserError(f"{data_file}: must be a JSON object with splits {', '.join(splits)}, got {type(container).__name__}")
            if split not in container:
                raise UserError(f"{data_file}: no {split!r} key; the file has {', '.join(map(repr, container)) or 'no keys'}")
            if not isinstance(container[split], list):
                raise UserError(f"{data_file}: {split!r} must be a list of records, got {type(container[split]).__name__}")
            out[split] = container[split]
        where = path or data_file
        validate(out[split], fields, where, split)
        for name in not_all_empty:
            count_empty(out[split], name, where, split)
    return out


def load_run_records(
    mount_dir: str, data_name: str | None, train_file: str | None, eval_file: str | None, predict_file: str | None,
    train: bool, fields: Mapping[str, Validator], predict_fields: Mapping[str, Validator],
    not_all_empty: tuple[str, ...] = (),
) -> dict[str, list[Record]]:
    """The records a seq2seq.py / clf.py run needs: train and eval when training, eval (if given) for an
    evaluation-only run, and `predict` (records checked against `predict_fields`) when a file is given.
    `not_all_empty`: string fields that may not be empty in every record of a train or eval split."""
    data_file = data_path(mount_dir, data_name) if data_name else None
    if train:
        splits: tuple[str, ...] = ("train", "eval")
    elif data_file or eval_file:
        splits = ("eval",)
    elif predict_file:
        splits = ()
    else:
        raise UserError("--no_train needs eval records (--data_name or --eval_file) or a --predict_file")
    records = load_splits({"train": train_file, "eval": eval_file}, data_file, fields, splits, not_all_empty)
    if predict_file:
        records["predict"] = read_records(predict_file, "predict")
        validate(records["predict"], predict_fields, predict_file, "predict")
    return records


def read_records(path: str, split: str | None = None) -> list[Record]:
    """Records of a file (optionally gzipped): JSON lines, a JSON list of records, one JSON object (a file
    of one record), or `{split: [...]}`. The toolkit's one reader of JSON / JSON-lines data files."""
    return read_numbered_records(path, split)[0]


def read_numbered_records(path: str, split: str | None = None) -> tuple[list[Record], list[int] | None]:
    """`read_records`, plus each record's 1-based line number for JSON lines (blank lines counted);
    None for one JSON document, whose records have no line of their own."""
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _parse_json(text, path), None
    if stripped.startswith("{") and _looks_like_one_object(stripped):
        data = json.loads(stripped)
        if split is not None and isinstance(data, dict) and isinstance(data.get(split), list):
            return data[split], None
        return [data], None  # a file of one record
    records, numbers = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == 1 and stripped.startswith(("{", "[")) and "\n" in stripped.strip():
                _parse_json(text, path)  # one JSON document over several lines: report where it breaks
            raise UserError(f"{path}: line {number}: invalid JSON at column {err.colno}: {err.msg}") from None
        numbers.append(number)
    return records, numbers


def _looks_like_one_object(text: str) -> bool:
    """True for a JSON document spread over lines, False for JSON lines (several objects)."""
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def validate(records: Any, fields: Mapping[str, Validator], where: str, split: str) -> None:
    if not isinstance(records, list):
        raise UserError(f"{where}: {split!r} must be a list of records")
    if not records:
        raise UserError(f"{where}: the {split} split is empty")
    for number, record in enumerate(records, start=1):  # 1-based, as users count
        if not isinstance(record, dict):
            raise UserError(f"{where}: {split} record {number}: must be a JSON object, got {type(record).__name__}")
        for name, check in fields.items():
            if name not in record:
                raise UserError(f"{where}: {split} record {number}: no {name!r} field (required: {', '.join(fields)})")
            problem = check(record[name])
            if problem:
                raise UserError(f"{where}: {split} record {number}: field {name!r} {problem}")


def count_empty(records: list[Record], name: str, where: str, split: str) -> int:
    """How many records' string field `name` is empty or only whitespace; a UserError when all are (a
    model trained on them learns to write nothing, and exact match against them means nothing)."""
    empty = sum(1 for record in records if not record[name].strip())
    if empty == len(records):
        raise UserError(f"{where}: all {empty} {split} records have an empty {name!r} (nothing to learn or score)")
    return empty


def read_text(path: str | os.PathLike) -> str:
    """A whole text file as UTF-8 (gunzipped when it ends in .gz); one-line errors for a missing file, a
    broken gzip stream and bytes that are not UTF-8. A leading byte-order mark (Excel's and Windows
    editors' "UTF-8") is dropped, as the utf-8-sig codec does: it would otherwise become part of the
    first column name or break the JSON."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (OSError, EOFError) as err:  # a corrupt or truncated gzip stream
        raise UserError(f"{path}: not a readable gzip file ({err})") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # offsets in errors stay those of the file
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}, line {line}); "
                        "re-encode it as UTF-8") from None


def _parse_json(text: str, path: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None


def _read_json(path: str) -> Any:
    return _parse_json(read_text(path), path)
