"""Command-line plumbing shared by the scripts: user errors, config files, the W&B agent's arguments."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Sequence


class UserError(Exception):
    """A mistake in the user's input (file, record, field or flag).

    Scripts turn it into one line on stderr and exit code 2, without a traceback. The message names
    the file, record and field and says what would be valid.
    """


CONFIG_FLAG = "--config"


_preemption_requested = False


def preemption_requested() -> bool:
    """Whether SIGTERM / SIGUSR1 arrived since the script started (see `run_main`)."""
    return _preemption_requested


def _request_preemption(signum: int, frame: Any) -> None:
    global _preemption_requested
    _preemption_requested = True


def run_main(main: Callable[[list[str] | None], Any]) -> None:
    """Run a script's `main`, turning a `UserError` into one line on stderr and exit code 2.

    SIGTERM and SIGUSR1 (Slurm's warning) are caught from the start, so a warning that arrives while a
    large model is still loading still ends in a checkpoint at the first step boundary.
    """
    import signal

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, _request_preemption)
    try:
        main(None)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def expand_argv(argv: Sequence[str] | None, list_fields: frozenset[str] = frozenset()) -> list[str]:
    """The command line with the W&B agent's `--_wandb...` dropped and `--config FILE` expanded.

    `--config FILE` (YAML or JSON, a mapping of argument names to values) becomes `--name=value`
    arguments placed first, so flags given on the command line override the file. Values travel as
    strings, which also sidesteps PyYAML reading `5e-4` as the string '5e-4'.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    args = [a for a in args if not a.startswith("--_wandb")]  # added by `wandb agent`
    from_files: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == CONFIG_FLAG or arg.startswith(CONFIG_FLAG + "="):
            if "=" in arg:
                path = arg.split("=", 1)[1]
            elif i + 1 < len(args):
                path, i = args[i + 1], i + 1
            else:
                raise UserError(f"{CONFIG_FLAG} needs a file: a YAML or JSON mapping of argument names to values")
            from_files.extend(config_file_argv(path, list_fields))
        else:
            rest.append(arg)
        i += 1
    return from_files + rest


def config_file_argv(path: str, list_fields: frozenset[str] = frozenset()) -> list[str]:
    """`--name=value` arguments from a YAML/JSON config file.

    A YAML list becomes `--name v1 v2` for list-valued fields and `--name=v1,v2` otherwise (e.g.
    `report_to: [wandb, tensorboard]`, which the toolkit's arguments split at commas).
    """
    if not os.path.isfile(path):
        raise UserError(f"{CONFIG_FLAG} {path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except Exception as err:  # yaml.YAMLError; its mark gives the position
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise UserError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of argument names to values, got {type(data).__name__}")
    argv: list[str] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, list) and key in list_fields:
            argv.append(f"--{key}")
            argv.extend(str(v) for v in value)
        elif isinstance(value, list):
            argv.append(f"--{key}={','.join(str(v) for v in value)}")
        elif isinstance(value, dict):
            argv.append(f"--{key}={json.dumps(value)}")
        else:
            argv.append(f"--{key}={value}")
    return argv


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None, description: str | None = None) -> tuple:
    """Parse the command line (and any `--config FILE`) into instances of `dataclass_types`.

    Unknown arguments, values of the wrong type, missing required flags and invalid combinations
    (the dataclasses' `__post_init__` checks) become one-line `UserError`s; `--help` prints help.
    """
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message: str) -> None:  # argparse's: usage text plus the message; ours: one line
            raise UserError(message)

    parser = Parser(dataclass_types, description=description)
    args = _bare_optional_bool_flags(expand_argv(argv, _list_fields(dataclass_types)), dataclass_types)
    try:
        return parser.parse_args_into_dataclasses(args=args, look_for_args_file=False)
    except UserError:
        raise
    except ValueError as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(message) from None


def _bare_optional_bool_flags(args: list[str], dataclass_types: Sequence[type]) -> list[str]:
    """Let `--bf16` alone mean `--bf16=True` for tri-state (None = auto) bool fields.

    HfArgumentParser only accepts a bare flag for bool fields with a non-None default.
    """
    import dataclasses
    import typing

    names = set()
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is None and hints.get(f.name) == typing.Optional[bool]:
                names.update({f"--{f.name}", f"--{f.name.replace('_', '-')}"})
    out = []
    for i, arg in enumerate(args):
        bare = arg in names and (i + 1 == len(args) or args[i + 1].startswith("--"))
        out.append(arg + "=True" if bare else arg)
    return out


def _list_fields(dataclass_types: Sequence[type]) -> frozenset[str]:
    """Names of the fields HfArgumentParser reads as lists (`--name v1 v2`)."""
    import dataclasses
    import typing

    names = set()
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kinds = typing.get_args(hints.get(f.name)) or (hints.get(f.name),)
            if typing.get_origin(hints.get(f.name)) is list or any(typing.get_origin(k) is list for k in kinds):
                names.add(f.name)
    return frozenset(names)
