"""Run outputs: finished-run protection, atomic writes, names that never replace a result (stdlib only).

A finished training run ends by writing `FINISHED_MARKER`; a run stopped by a signal leaves
`PREEMPTED_MARKER` beside its last checkpoint. Results are written through a temporary file and a
rename, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from cli import UserError

FINISHED_MARKER = "all_results.json"  # written last by a finished training run
PREEMPTED_MARKER = "PREEMPTED"  # written when a signal stopped the run after a checkpoint; job scripts requeue
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: try again later


def unique_path(path: str) -> str:
    """`path`, or `stem-1.ext`, `stem-2.ext`, ... if it exists: results are never overwritten."""
    stem, ext = os.path.splitext(path)
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
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
