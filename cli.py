"""Command-line plumbing shared by the scripts: user errors, config files, the W&B agent's arguments."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from typing import Any, Callable, Optional, Sequence


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


# --- Early checks: before the heavy imports --------------------------------------------------------
#
# Importing transformers and torch takes 3-8 s. The scripts first parse their own (light) argument
# groups with `light_parse` and check flags, paths and data files, so that a mistake is reported in
# well under a second; the full HfArgumentParser parse then reads every flag again.


def check_fp16(fp16: bool, allow_fp16: bool) -> None:
    if fp16 and not allow_fp16:
        raise UserError(
            "--fp16: T5's activations overflow float16 and training diverges (HF #5651, #14531; nanoT5: all its "
            "fp16 runs diverged); use --bf16 or fp32, or pass --allow_fp16 to force it"
        )


def check_resume_flag(resume_from_checkpoint: Any) -> None:
    if isinstance(resume_from_checkpoint, str) and resume_from_checkpoint not in ("True", "true", "auto"):
        if not os.path.isdir(resume_from_checkpoint):
            raise UserError(f"--resume_from_checkpoint {resume_from_checkpoint}: no such checkpoint directory")


@dataclasses.dataclass
class EarlyTrainingFlags:
    """The Trainer flags the scripts check before the heavy imports (same names and defaults as
    `training.ToolkitTrainingArguments`, which parses them again with all the others)."""

    output_dir: Optional[str] = None
    overwrite_output_dir: bool = False
    no_train: bool = False
    resume_from_checkpoint: Optional[str] = None
    do_predict: bool = False
    max_steps: int = -1
    fp16: bool = False
    allow_fp16: bool = False

    def __post_init__(self) -> None:
        check_fp16(self.fp16, self.allow_fp16)
        check_resume_flag(self.resume_from_checkpoint)


def string_to_bool(value: Any) -> bool:
    """A bool flag's value, read as HfArgumentParser reads it."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(
        f"Truthy value expected: got {value} but expected one of yes/no, true/false, t/f, y/n, 1/0 (case insensitive)."
    )


class _LightParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UserError(message)


def light_parse(dataclass_types: Sequence[type], argv: Sequence[str] | None) -> tuple | None:
    """Instances of light (stdlib-only) argument dataclasses from the command line, or None to defer.

    Reads the dataclasses' str/int/float/bool fields as HfArgumentParser would (same flag spellings,
    value types, errors and `__post_init__` checks) and leaves every other flag to the full parse.
    Defers (None) on --help and when a required flag may have been given abbreviated: abbreviations
    resolve against the full set of flags, which only the full parse knows.
    """
    args = _bare_optional_bool_flags(expand_argv(argv, _list_fields(dataclass_types)), dataclass_types)
    if "-h" in args or "--help" in args:
        return None
    parser = _LightParser(add_help=False, allow_abbrev=False)
    required: list[tuple[str, list[str]]] = []
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = _scalar_type(hints[f.name])
            if not f.init or kind is None:
                continue
            names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
            names += list(f.metadata.get("aliases", []))
            if kind is bool:
                parser.add_argument(*names, dest=f.name, type=string_to_bool, nargs="?", const=True, default=argparse.SUPPRESS)
                if f.default is True:
                    parser.add_argument(f"--no_{f.name}", f"--no-{f.name.replace('_', '-')}", dest=f.name,
                                        action="store_false", default=argparse.SUPPRESS)
            else:
                parser.add_argument(*names, dest=f.name, type=kind, default=argparse.SUPPRESS)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append((f.name, names[:2]))
    values, unknown = parser.parse_known_args(args)
    missing = [names for name, names in required if not hasattr(values, name)]
    if missing:
        given = [token.split("=", 1)[0] for token in unknown if token.startswith("--")]
        if any(name.startswith(token) for names in missing for name in names for token in given):
            return None
        raise UserError(f"the following arguments are required: {', '.join('/'.join(names) for names in missing)}")
    found = vars(values)
    return tuple(cls(**{f.name: found[f.name] for f in dataclasses.fields(cls) if f.name in found}) for cls in dataclass_types)


def _scalar_type(hint: Any) -> type | None:
    """str, int, float or bool for a (possibly Optional) scalar field; None for anything else."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if typing.get_args(hint) else [hint]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (str, int, float, bool) else None
