"""Command-line arguments: one flag table per script, read by two parsers that cannot disagree.

Each script names its arguments once, as a tuple of argument dataclasses whose last element names its
Trainer-arguments class in `trainer_arguments.py`:

    ARGUMENTS = (ModelArguments, DataArguments, "PreTrainingArguments")
    early = light_parse(ARGUMENTS, argv)        # stdlib only: ~0.1 s, before torch and transformers
    ...                                         # check flags, paths and data files with early's values
    model_args, data_args, training_args = parse_args(ARGUMENTS, argv, __doc__, early)

Both parsers know every flag of the script: the script's own dataclasses are read field by field, and
the Trainer's flags (about 150, defined by transformers) come from `trainer_flags.json`, a table
generated from the real parser (`python arguments.py` rewrites it; a test fails when it is stale).
Both refuse abbreviations (`--max_step` is not `--max_steps`: as flags grow an abbreviation changes
meaning) with one line, `unknown flag --max_step (did you mean --max_steps?)`; flags users do type
short are explicit aliases (`--data` for `--data_name`). After the full parse, every value the early
checks saw is compared with the value training uses; a difference is a bug in this module.

Also here: `--config FILE` (YAML or JSON), the W&B agent's extra `--_wandb=...`, and the Trainer-flag
checks that need no heavy import (`EarlyTrainingFlags`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import typing
from typing import Any, Mapping, Optional, Sequence

from controls import TrainingControls, check_control_values
from errors import UserError

CONFIG_FLAG = "--config"
TRAINER_FLAGS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainer_flags.json")
TRAINER_ARGUMENTS_MODULE = "trainer_arguments"

# A script's arguments: its dataclasses, then the name of its class in trainer_arguments.py.
Arguments = Sequence[Any]


# --- Flags -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flag:
    """One argparse option, as HfArgumentParser declares it for a dataclass field."""

    options: tuple[str, ...]  # "--max_steps", "--max-steps", aliases
    dest: str  # the field
    nargs: Optional[str] = None  # None: one value; "?": a bool (bare means True); "+": a list
    negates: bool = False  # "--no_x": stores False into x
    choices: Optional[tuple[str, ...]] = None
    required: bool = False


def dataclass_flags(cls: type) -> list[Flag]:
    """The options HfArgumentParser adds for `cls` (transformers 5.23 `_parse_dataclass_field`), with one
    change both parsers share: a tri-state bool (`Optional[bool] = None`, e.g. --bf16) also takes a bare
    flag. tests/test_arguments.py checks this against HfArgumentParser's own actions."""
    hints = typing.get_type_hints(cls)
    flags: list[Flag] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        options = (f"--{f.name}",) + ((f"--{f.name.replace('_', '-')}",) if "_" in f.name else ())
        aliases = f.metadata.get("aliases", [])
        options += tuple([aliases] if isinstance(aliases, str) else aliases)
        hint = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if _bool_hint(hint):
            flags.append(Flag(options, f.name, nargs="?"))
            if f.default is True:
                flags.append(Flag((f"--no_{f.name}", f"--no-{f.name.replace('_', '-')}"), f.name, negates=True))
        else:
            choices = _choices(hint)
            flags.append(Flag(options, f.name, nargs="+" if _list_element(hint) else None, choices=choices, required=required))
    return flags


def parser_flags(parser: argparse.ArgumentParser) -> list[Flag]:
    """The options of a built parser (the source of `trainer_flags.json`)."""
    flags = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        negates = isinstance(action, argparse._StoreFalseAction)
        choices = tuple(str(c) for c in action.choices) if action.choices is not None else None
        nargs = None if negates else action.nargs
        flags.append(Flag(tuple(action.option_strings), action.dest, nargs, negates, choices, bool(action.required)))
    return flags


def trainer_flags(class_name: str) -> list[Flag]:
    """The flags of a `trainer_arguments` class, from the generated table (no heavy import)."""
    with open(TRAINER_FLAGS_FILE, encoding="utf-8") as f:
        table = json.load(f)
    if class_name not in table:
        raise KeyError(f"{class_name} is not in {TRAINER_FLAGS_FILE}; regenerate it: python arguments.py")
    return [Flag(tuple(d["options"]), d["dest"], d.get("nargs"), d.get("negates", False),
                 tuple(d["choices"]) if d.get("choices") else None, d.get("required", False)) for d in table[class_name]]


def flag_table(class_names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The table `trainer_flags.json` holds, built from the real parser (imports transformers)."""
    import importlib

    module = importlib.import_module(TRAINER_ARGUMENTS_MODULE)
    table = {}
    for name in class_names:
        rows = []
        for flag in parser_flags(_full_parser([getattr(module, name)])):
            row: dict[str, Any] = {"options": list(flag.options), "dest": flag.dest}
            row.update({k: v for k, v in (("nargs", flag.nargs), ("negates", flag.negates), ("required", flag.required)) if v})
            if flag.choices:
                row["choices"] = list(flag.choices)
            rows.append(row)
        table[name] = rows
    return table


def format_flag_table(table: dict[str, list[dict[str, Any]]]) -> str:
    """`trainer_flags.json`'s text: one line per flag, so a transformers upgrade reads as a small diff."""
    blocks = []
    for name in sorted(table):
        rows = ",\n".join("    " + json.dumps(row, sort_keys=True) for row in table[name])
        blocks.append(f"  {json.dumps(name)}: [\n{rows}\n  ]")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _bool_hint(hint: Any) -> bool:
    return hint is bool or hint == Optional[bool]


def _list_element(hint: Any) -> Any:
    """The element type of a `list[X]` (or `Optional[list[X]]`) field, else None."""
    for kind in (hint, *typing.get_args(hint)):
        if typing.get_origin(kind) is list:
            return (typing.get_args(kind) or (str,))[0]
    return None


def _choices(hint: Any) -> Optional[tuple[str, ...]]:
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
    if len(kinds) == 1 and typing.get_origin(kinds[0]) is typing.Literal:
        return tuple(str(c) for c in typing.get_args(kinds[0]))
    return None


def _scalar_type(hint: Any) -> Any:
    """How the early parse converts a field's value: str, int, float, bool or a list's element type;
    None (keep the string) for anything else, which only the full parse reads."""
    element = _list_element(hint)
    if element is not None:
        return element if element in (str, int, float) else None
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if typing.get_args(hint) else [hint]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (str, int, float, bool) else None


# --- Early checks of Trainer flags (no heavy import) ----------------------------------------------


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
        if not os.path.isfile(os.path.join(resume_from_checkpoint, "trainer_state.json")):
            raise UserError(f"--resume_from_checkpoint {resume_from_checkpoint}: not a complete checkpoint (no trainer_state.json; "
                            "a save that was cut short?); give another checkpoint-N dir, or 'auto' for the newest complete one")


SWEEP_PLACEHOLDERS = {"{run_id}": "WANDB_RUN_ID", "{sweep_id}": "WANDB_SWEEP_ID"}


def sweep_run_dir(value: str | None, flag: str) -> str | None:
    """`value` with `{run_id}` / `{sweep_id}` replaced by the W&B run and sweep ids `wandb agent` gives the run's
    process (WANDB_RUN_ID, WANDB_SWEEP_ID), so that each run of a sweep gets its own output dir."""
    if not value or "{" not in value:
        return value
    for placeholder, variable in SWEEP_PLACEHOLDERS.items():
        if placeholder in value:
            if not os.environ.get(variable):
                raise UserError(f"{flag} {value}: {placeholder} is the W&B {variable.split('_')[1].lower()} id, which `wandb agent` sets "
                                f"({variable}); outside a sweep, name the run dir yourself")
            value = value.replace(placeholder, os.environ[variable])
    return value


@dataclasses.dataclass
class EarlyTrainingFlags(TrainingControls):
    """The Trainer flags the scripts check before the heavy imports (same names and defaults as
    `trainer_arguments.ToolkitTrainingArguments`, the training controls included; `parse_args` checks that both
    read the same values)."""

    output_dir: Optional[str] = None
    overwrite_output_dir: bool = False
    no_train: bool = False
    resume_from_checkpoint: Optional[str] = None
    do_predict: bool = False
    max_steps: int = -1
    fp16: bool = False
    allow_fp16: bool = False
    push_to_hub: bool = False
    push_to_hub_dry_run: bool = False
    hub_token: Optional[str] = None  # read only to tell whether a push has a token (hub.check_hub); never saved
    hub_model_id: Optional[str] = None

    def __post_init__(self) -> None:
        self.output_dir = sweep_run_dir(self.output_dir, "--output_dir")
        check_fp16(self.fp16, self.allow_fp16)
        check_resume_flag(self.resume_from_checkpoint)
        check_control_values(self)


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


# --- The two parsers --------------------------------------------------------------------------------


class EarlyArgs(tuple):
    """`light_parse`'s dataclass instances, plus the values it read (`seen`: field -> value)."""

    seen: dict[str, Any]


class _OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse's: usage text plus the message; ours: one line
        raise UserError(message)


def light_parse(arguments: Arguments, argv: Sequence[str] | None) -> EarlyArgs | None:
    """The script's own dataclasses and `EarlyTrainingFlags` from the command line, without importing
    torch or transformers; None on --help (the full parser prints the help).

    Every flag of the script is known here (see the module docstring), so an unknown or abbreviated
    flag, a missing required flag or a bad value is refused as the full parse would refuse it.
    """
    own, trainer = _split(arguments)
    light_types = [*own, EarlyTrainingFlags]
    flags = [flag for cls in own for flag in dataclass_flags(cls)] + trainer_flags(trainer)
    args = expand_argv(argv, frozenset(f.dest for f in flags if f.nargs == "+"))
    if "-h" in args or "--help" in args:
        return None
    converters: dict[str, Any] = {}
    for cls in light_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = _scalar_type(hints[f.name])
            converters[f.name] = string_to_bool if kind is bool else kind
    parser = _OneLineErrors(add_help=False, allow_abbrev=False)
    for flag in flags:
        if flag.negates:
            parser.add_argument(*flag.options, dest=flag.dest, action="store_false", default=argparse.SUPPRESS)
        else:
            extra = {"const": True} if flag.nargs == "?" else {}
            parser.add_argument(*flag.options, dest=flag.dest, nargs=flag.nargs, type=converters.get(flag.dest),
                                choices=flag.choices, required=flag.required, default=argparse.SUPPRESS, **extra)
    values, unknown = parser.parse_known_args(args)
    if unknown:
        raise unknown_flag_error(unknown, [o for flag in flags for o in flag.options])
    found = vars(values)
    early = EarlyArgs(cls(**{f.name: found[f.name] for f in dataclasses.fields(cls) if f.init and f.name in found}) for cls in light_types)
    # What the checks read: the given values, else the defaults (before any __post_init__ change).
    early.seen = {f.name: found[f.name] if f.name in found else _default(f) for cls in light_types for f in dataclasses.fields(cls) if f.init}
    return early


def parse_args(arguments: Arguments, argv: Sequence[str] | None, description: str | None = None,
               early: EarlyArgs | None = None) -> tuple:
    """Instances of the script's dataclasses and of its Trainer-arguments class, from the command line
    (and any `--config FILE`), through HfArgumentParser.

    Unknown or abbreviated flags, values of the wrong type, missing required flags and invalid
    combinations (the dataclasses' `__post_init__` checks) become one-line `UserError`s; `--help` prints
    help. With `early` (light_parse's result), every value the early checks saw must equal the value
    parsed here.
    """
    dataclass_types = resolve_arguments(arguments)
    parser = _full_parser(dataclass_types, description)
    flags = parser_flags(parser)
    args = expand_argv(argv, frozenset(f.dest for f in flags if f.nargs == "+"))
    namespace, unknown = parser.parse_known_args(args)
    if unknown:
        raise unknown_flag_error(unknown, [o for flag in flags for o in flag.options])
    values = vars(namespace)
    if early is not None:
        differ = {k: (v, values[k]) for k, v in early.seen.items() if k in values and values[k] != v}
        assert not differ, f"the early and the full parse read different values (early, full): {differ}"
    outputs = []
    for cls in dataclass_types:
        inputs = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.init and f.name in values}
        try:
            outputs.append(cls(**inputs))
        except UserError:
            raise
        except ValueError as err:  # TrainingArguments' own checks
            raise UserError(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__) from None
    return tuple(outputs)


def resolve_arguments(arguments: Arguments) -> list[type]:
    """The script's dataclasses with its Trainer-arguments class imported (heavy)."""
    import importlib

    own, trainer = _split(arguments)
    return [*own, getattr(importlib.import_module(TRAINER_ARGUMENTS_MODULE), trainer)]


def _split(arguments: Arguments) -> tuple[list[type], str]:
    *own, trainer = arguments
    if not isinstance(trainer, str):
        raise TypeError("a script's ARGUMENTS end with the name of its class in trainer_arguments.py")
    return list(own), trainer


def _full_parser(dataclass_types: Sequence[type], description: str | None = None) -> argparse.ArgumentParser:
    """HfArgumentParser without abbreviations, with one-line errors, and with bare tri-state bools."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message: str) -> typing.NoReturn:
            raise UserError(message)

    parser = Parser(dataclass_types, description=description, allow_abbrev=False)
    tri_state = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)
                 if f.default is None and typing.get_type_hints(cls).get(f.name) == Optional[bool]}
    for action in parser._actions:
        if action.dest in tri_state and action.option_strings and action.nargs is None:
            action.nargs, action.const = "?", True  # `--bf16` alone means --bf16=True
    return parser


def unknown_flag_error(unknown: Sequence[str], options: Sequence[str]) -> UserError:
    """One line for the first argument no option takes: an unknown flag with the nearest known one."""
    token = next((t for t in unknown if t.startswith("-")), None)
    if token is None:
        return UserError(f"unexpected argument {unknown[0]!r}: every value follows its --flag")
    name = token.split("=", 1)[0]
    prefixed = sorted((o for o in options if o.startswith(name) and "-" not in o[2:]), key=len)
    close = prefixed or difflib.get_close_matches(name, [o for o in options if "-" not in o[2:]], n=1, cutoff=0.6)
    return UserError(f"unknown flag {name}" + (f" (did you mean {close[0]}?)" if close else ""))


# --- Config files and the W&B agent's arguments ----------------------------------------------------


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
    return fold_dotted_flags(from_files + rest)


def json_mapping(value: str | Mapping[str, Any] | None, flag: str) -> dict[str, Any]:
    """A mapping-valued flag's value: JSON text (what a config file's mapping or the dotted flags become), an
    already-parsed mapping, or None ({}); anything else is a one-line error naming the flag."""
    if value is None or value == "":
        return {}
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as err:
            raise UserError(f"--{flag}: invalid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(parsed, Mapping):
        raise UserError(f"--{flag}: must be a mapping (JSON, a config file's mapping, or --{flag}.key value), got {value!r}")
    return dict(parsed)


def _scalar(text: str) -> Any:
    """A dotted flag's value as the original finetune-lm parser read it: numbers, True / False / None, else text."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]  # quoted: a string even if it looks like a number
    return text


def fold_dotted_flags(args: list[str]) -> list[str]:
    """`--name.key.sub value` (the original finetune-lm toolkit's way of setting nested mappings) becomes one
    `--name=<JSON mapping>`, merged over an earlier `--name=<JSON mapping>` (from a config file, say). Values
    up to the next flag: one is a scalar, several a list."""
    folded: dict[str, dict[str, Any]] = {}
    slots: dict[str, int] = {}  # base -> where its --base=<JSON> goes in `out`
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if not (arg.startswith("--") and "." in name):
            out.append(arg)
            i += 1
            continue
        base, *keys = name[2:].split(".")
        if "=" in arg:
            values, i = [arg.split("=", 1)[1]], i + 1
        else:
            j = i + 1
            while j < len(args) and not args[j].startswith("--"):
                j += 1
            values, i = args[i + 1 : j], j
        if not keys or not all(keys) or not values:
            raise UserError(f"{name}: a nested setting is --name.key value (e.g. --data_preprocessing_fn.train mask_words)")
        if base not in folded:
            folded[base] = _earlier_mapping(out, base)
            slots[base] = len(out)
            out.append("")
        node = folded[base]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UserError(f"{name}: {key!r} already holds a value, not a mapping")
        parsed = [_scalar(v) for v in values]
        node[keys[-1]] = parsed[0] if len(parsed) == 1 else parsed
    for base, slot in slots.items():
        out[slot] = f"--{base}={json.dumps(folded[base])}"
    return out


def _earlier_mapping(args: list[str], base: str) -> dict[str, Any]:
    """The JSON mapping of the last `--base=<mapping>` in `args` (a config file's), else {}."""
    for arg in reversed(args):
        if arg.startswith(f"--{base}="):
            try:
                value = json.loads(arg.split("=", 1)[1])
            except json.JSONDecodeError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def config_file_argv(path: str, list_fields: frozenset[str] = frozenset()) -> list[str]:
    """`--name=value` arguments from a YAML/JSON config file.

    A YAML list becomes `--name v1 v2` for list-valued fields and `--name=v1,v2` otherwise (e.g.
    `report_to: [wandb, tensorboard]`, which the toolkit's arguments split at commas).
    """
    from records import read_text

    if not os.path.isfile(path):
        raise UserError(f"{CONFIG_FLAG} {path}: no such file")
    text = read_text(path)
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


if __name__ == "__main__":  # regenerate trainer_flags.json after changing trainer_arguments.py or transformers
    import importlib

    names = importlib.import_module(TRAINER_ARGUMENTS_MODULE).SCRIPT_CLASSES
    with open(TRAINER_FLAGS_FILE, "w", encoding="utf-8") as out:
        out.write(format_flag_table(flag_table(names)))
    print(f"wrote {TRAINER_FLAGS_FILE} ({', '.join(names)})")
