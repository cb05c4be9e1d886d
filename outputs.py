"""Run outputs: finished-run protection, atomic writes, names that never replace a result, the one
writer of per-example records, and the finished-run tail (stdlib only).

A finished training run ends by writing `FINISHED_MARKER`; a run stopped by a signal leaves
`PREEMPTED_MARKER` beside its last checkpoint. Results are written through a temporary file and a
rename, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import csv
import gzip
import io
import errno
import fcntl
import json
import logging
import math
import os
import sys
import shutil
import socket
import tempfile
import time
from typing import Any, Mapping, Sequence

from errors import UserError

logger = logging.getLogger(__name__)

FINISHED_MARKER = "all_results.json"  # written last by a finished training run
PREEMPTED_MARKER = "PREEMPTED"  # written when a signal stopped the run after a checkpoint; job scripts requeue
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: try again later


LOCK_FILE = ".lock"  # held (flock) by the main process of the run using the folder


class RunLock:
    """One run per output dir: the main process holds an exclusive `flock` on `<output_dir>/.lock` for the
    run's whole life, and writes its host, pid and start time into it (for the message only: the lock
    itself dies with its process, so a killed run's lock frees itself). A second run into the same dir,
    evaluation-only and resumed runs included, is refused with one line naming the holder.

    Other processes of a multi-process run (RANK > 0) do not lock. Some network filesystems (NFS without
    lock support) do not enforce flock. A dir this lock created and the run left empty is removed again.
    """

    def __init__(self, output_dir: str | None) -> None:
        self.output_dir = output_dir
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> "RunLock":
        if self.output_dir is None or int(os.environ.get("RANK", "0")) != 0:
            return self
        self.created = not os.path.exists(self.output_dir)
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 500).decode("utf-8", "replace").strip() or "a process that did not say who it is"
            os.close(fd)
            raise UserError(f"{self.output_dir}: another run is using this output dir ({holder}); wait for it to end, "
                            "or choose another output dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"host {socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is None:
            return
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        if self.created and os.listdir(self.output_dir) == [LOCK_FILE]:  # nothing written: leave no folder behind
            shutil.rmtree(self.output_dir, ignore_errors=True)


def check_not_model_dir(output_dir: str, model: str, output_flag: str, model_flag: str) -> None:
    """Refuse to train into the folder of the model training starts from (it would be overwritten)."""
    if not os.path.isdir(model):
        return  # a Hub name
    out, base = os.path.realpath(output_dir), os.path.realpath(model)
    if out == base or out.startswith(base + os.sep):
        raise UserError(f"{output_flag} {output_dir}: is the starting model's folder ({model_flag} {model}) or inside it; "
                        "training would overwrite the model it starts from: choose another output")


def unique_path(path: str) -> str:
    """`path`, or `stem-1.ext`, `stem-2.ext`, ... if it exists: results are never overwritten (`x.csv.gz`
    -> `x-1.csv.gz`)."""
    stem, ext = os.path.splitext(path)
    if ext == ".gz":
        stem, inner = os.path.splitext(stem)
        ext = inner + ext
    candidate, n = path, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


def check_output_dir(output_dir: str, overwrite: bool, resuming: bool = False) -> None:
    """Refuse to train into a finished run or below a regular file; creates nothing."""
    path = os.path.abspath(output_dir)
    probe = path
    while probe and not os.path.exists(probe):
        if os.path.islink(probe):
            raise UserError(f"--output_dir {output_dir}: {probe} is a symbolic link to {os.readlink(probe)}, which does not exist; "
                            "create its target or choose another output_dir")
        probe = os.path.dirname(probe)
    if probe and os.path.exists(probe) and not os.path.isdir(probe):
        raise UserError(f"--output_dir {output_dir}: {probe} is a file, not a directory; choose another output_dir")
    if os.path.isfile(os.path.join(path, FINISHED_MARKER)) and not (overwrite or resuming):
        raise UserError(
            f"--output_dir {output_dir}: holds a finished run ({FINISHED_MARKER}); choose a new directory or pass "
            "--overwrite_output_dir to replace it"
        )


def write_text_atomic(path: str, text: str) -> None:
    """Write a file through a temporary file and a rename, so readers never see half a file."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_records(path: str, rows: Sequence[Mapping[str, Any]], carry: Sequence[Mapping[str, Any]] | None = None,
                  example_of: Sequence[int] | None = None) -> str:
    """Per-example (or per-token) output rows, atomically, in the format the file name says: `.jsonl`
    (a JSON object per line), `.json` (one list), `.csv` / `.tsv` (a header of every key in first-seen
    order; lists and objects as JSON), each optionally `.gz`. Returns `path`.

    `carry`: the user's records (their extra fields and metadata). Each row starts with the fields of
    its example's record (row i belongs to example `example_of[i]`, default i), then its own; where a
    record already holds an output key, the output's value wins and a warning says so once.
    """
    if carry is not None:
        rows = _with_record_fields(path, rows, carry, example_of)
    base = path[:-3] if path.endswith(".gz") else path
    kind = os.path.splitext(base)[1].lower()
    warned: list[bool] = []
    if kind == ".jsonl":
        text = "".join(_json_line(row, path, warned) + "\n" for row in rows)
    elif kind == ".json":
        text = "[\n" + ",\n".join(_json_line(row, path, warned) for row in rows) + "\n]\n"
    elif kind in (".csv", ".tsv"):
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, delimiter="\t" if kind == ".tsv" else ",", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for k, v in row.items()})
        text = buffer.getvalue()
    else:
        raise ValueError(f"{path}: records go to .jsonl, .json, .csv or .tsv (optionally .gz)")
    if path.endswith(".gz"):
        write_bytes_atomic(path, gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        write_text_atomic(path, text)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _json_line(row: Any, path: str, warned: list[bool]) -> str:
    """`row` as JSON; NaN and infinities (which JSON has no words for) become null, with one warning."""
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False)
    except ValueError:
        if not warned:
            logger.warning("%s: NaN or infinite values written as null (JSON has no NaN)", os.path.basename(path))
            warned.append(True)
        return json.dumps(_finite(row), ensure_ascii=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _with_record_fields(path: str, rows: Sequence[Mapping[str, Any]], carry: Sequence[Mapping[str, Any]],
                        example_of: Sequence[int] | None) -> list[dict[str, Any]]:
    examples = range(len(rows)) if example_of is None else example_of
    merged, clashes = [], set()
    for row, example in zip(rows, examples, strict=True):
        record = carry[example]
        clashes.update(key for key in row if key in record)
        merged.append({**record, **row})
    if clashes:
        logger.warning("%s: records already hold %s; the output's values replace them", os.path.basename(path),
                       ", ".join(map(repr, sorted(clashes))))
    return merged


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write a file through a uniquely named temporary file in its folder and a rename. The file gets the
    mode a plain `open()` would give it (0644 under umask 022), not mkstemp's 0600: collaborators on a
    shared cluster read results."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            raise disk_full(directory, os.path.basename(path)) from None
        raise


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # no space left on device, disk quota exceeded
RESUME_AFTER_DISK_FULL = "free space, then rerun with --resume_from_checkpoint auto (the checkpoints saved before are intact)"


def disk_full(directory: str, what: str,
              advice: str = "free space or choose another output dir (files written before are intact)") -> UserError:
    """The one-line error for `OSError 28` (no space left on device) or 122 (quota), with the free space left."""
    free = shutil.disk_usage(directory).free if os.path.isdir(directory) else 0
    return UserError(f"{directory}: disk full while writing {what} ({free / 2**20:.1f} MiB free); {advice}")


def no_space_left(err: BaseException, directory: str) -> bool:
    """Whether `err`, raised while writing into `directory`, comes from a full disk (or quota).

    Libraries report it in their own ways: Python's writes raise `OSError` 28, safetensors a
    `SafetensorError` whose message ends "No space left on device (os error 28)", and `torch.save` a
    `RuntimeError` that does not say why ("[enforce fail at inline_container.cc:672] . unexpected pos 576
    vs 534"). So: the error number or its message anywhere in the exception chain, else a probe write of
    1 MiB into `directory` that fails for lack of space.
    """
    seen: BaseException | None = err
    for _ in range(8):  # the chain (__cause__ / __context__), as far as it is likely to go
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return True
        if any(os.strerror(code) in str(seen) for code in NO_SPACE):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".tmp-space-probe-")
    except OSError as probe_err:
        return probe_err.errno in NO_SPACE
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(1 << 20))
            f.flush()
            os.fsync(f.fileno())
        return False
    except OSError as probe_err:
        return probe_err.errno in NO_SPACE
    finally:
        os.unlink(probe)


class RunOutputs:
    """Where a run writes, and the finished-run tail every script ends with.

    A training run writes its files under fixed names and ends with `FINISHED_MARKER` (written last: its
    presence means the run finished). An evaluation-only run (`--no_train`) may sit beside a finished
    run, so each of its files takes a new name (`eval_results.json`, `predictions_eval-1.jsonl`) and
    replaces none. Call the writers on the main process only.
    """

    def __init__(self, output_dir: str, evaluation_only: bool) -> None:
        self.output_dir = output_dir
        self.evaluation_only = evaluation_only

    def path(self, name: str) -> str:
        path = os.path.join(self.output_dir, name)
        return unique_path(path) if self.evaluation_only else path

    def write_records(self, name: str, rows: Sequence[Mapping[str, Any]], carry: Sequence[Mapping[str, Any]] | None = None,
                      example_of: Sequence[int] | None = None) -> str:
        return write_records(self.path(name), rows, carry, example_of)

    def finish(self, results: Mapping[str, Any], log_history: Sequence[Mapping[str, Any]], arg_objects: Sequence[Any],
               argv: Sequence[str] | None, script: str | None = None, model_dir: str | None = None) -> str:
        """A training run: provenance, the loss curve, then the results (the finished marker), then, with
        --push_to_hub or --push_to_hub_dry_run, the Hub folder (hub.py: the model in `model_dir`, default the
        output dir; the card names `script`). An evaluation-only run: its results as `eval_results.json` (a new
        name beside any earlier one). Returns the results file."""
        if self.evaluation_only:
            path = self.path("eval_results.json")
            write_json_atomic(path, dict(results))
            return path
        from plots import plot_loss_curve
        from provenance import write_provenance

        os.makedirs(self.output_dir, exist_ok=True)
        write_provenance(self.output_dir, arg_objects, argv)
        plot_loss_curve(list(log_history), os.path.join(self.output_dir, "loss_curve.png"))
        path = os.path.join(self.output_dir, FINISHED_MARKER)
        write_json_atomic(path, dict(results))  # last: marks the run finished
        run = next((a for a in arg_objects if hasattr(a, "push_to_hub_dry_run")), None)
        if run is not None and (run.push_to_hub or run.push_to_hub_dry_run):
            from hub import push_run

            push_run(self.output_dir, model_dir or self.output_dir, script or os.path.basename(sys.argv[0]), results, arg_objects,
                     argv, run.push_to_hub, run.hub_model_id, run.hub_private_repo)
        return path
