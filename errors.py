"""User errors and the scripts' entry wrapper (stdlib only: imported before anything heavy).

A mistake in the user's input is a `UserError`; `run_main` turns it into one line on stderr and exit
code 2, without a traceback. A bug in our code still raises.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any, Callable


class UserError(Exception):
    """A mistake in the user's input (file, record, field or flag).

    Scripts turn it into one line on stderr and exit code 2, without a traceback. The message names
    the file, record and field and says what would be valid.
    """


_preemption_requested = False


def preemption_requested() -> bool:
    """Whether SIGTERM / SIGUSR1 arrived since the script started (see `run_main`)."""
    return _preemption_requested


def _request_preemption(signum: int, frame: Any) -> None:
    global _preemption_requested
    _preemption_requested = True


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_launcher() -> None:
    """Under a launcher (torchrun, deepspeed, accelerate launch), have the kernel send us SIGUSR1 when the
    launcher dies, so that a killed launcher ends in a checkpoint and exit 75 instead of an orphan that
    keeps writing into the output dir. Not for a plain `python script.py`: `nohup` users expect training
    to outlive their shell. Linux only; elsewhere nothing happens."""
    if not sys.platform.startswith("linux") or not ("LOCAL_RANK" in os.environ or "ACCELERATE_USE_CPU" in os.environ):
        return
    launcher = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGUSR1, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if launcher == 1 or os.getppid() != launcher:  # the launcher died before we asked (init or a subreaper took us)
        _request_preemption(signal.SIGUSR1, None)


def run_main(main: Callable[[list[str] | None], Any]) -> None:
    """Run a script's `main`, turning a `UserError` into one line on stderr and exit code 2.

    SIGTERM and SIGUSR1 (Slurm's warning) are caught from the start, so a warning that arrives while a
    large model is still loading still ends in a checkpoint at the first step boundary.
    """
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, _request_preemption)
    stop_with_launcher()
    try:
        main(None)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
