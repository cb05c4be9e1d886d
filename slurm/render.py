"""Fill in an sbatch template: each `{{NAME}}` becomes a value. Prints the job script.

    python slurm/render.py slurm/single_node.sbatch SCRIPT=fine_tune_t5.py GPUS=4 \
        OUTPUT_DIR='runs/sst2-$SLURM_JOB_ID' -- --dataset_name sst2 --output_dir 'runs/sst2-$SLURM_JOB_ID' > job.sbatch
    sbatch job.sbatch

Why a render step and not shell variables: sbatch reads the `#SBATCH` lines before any shell runs, so
the GPU count, node count and time limit there cannot come from `${VAR}`.

Values are pasted in as they are, so `$SLURM_JOB_ID` in a value expands when the job runs (write it in
single quotes on your command line): a requeued job keeps its job id, hence its output directory and
W&B run. The script's arguments come either as `ARGS='...'` (shell words, pasted as they are) or as
the words after `--`, each put in double quotes (so `$VAR` in them still expands in the job).
Each template lists its placeholders' defaults on a `# defaults: NAME=VALUE ...` line; REPO_DIR
defaults to this repository. A placeholder without a value, or a NAME the template does not have,
is an error.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from typing import Sequence

PLACEHOLDER = re.compile(r"\{\{([A-Z][A-Z0-9_]*)\}\}")
DEFAULTS_LINE = re.compile(r"^# defaults: (.*)$", re.MULTILINE)
REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def placeholders(template: str) -> set[str]:
    """The NAMEs of the template's `{{NAME}}` placeholders."""
    return set(PLACEHOLDER.findall(template))


def template_defaults(template: str) -> dict[str, str]:
    """Defaults the template declares on its `# defaults: NAME=VALUE ...` line (shell-quoted values)."""
    defaults = {"REPO_DIR": REPO_DIR}
    for line in DEFAULTS_LINE.findall(template):
        for word in shlex.split(line):
            name, _, value = word.partition("=")
            defaults[name] = value
    return defaults


def render(template: str, **values: str) -> str:
    """The template with every `{{NAME}}` replaced by `values[NAME]` or the template's default."""
    names = placeholders(template)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"the template has no placeholder {', '.join(unknown)}; it has {', '.join(sorted(names))}")
    merged = {**template_defaults(template), **{k: str(v) for k, v in values.items()}}
    missing = sorted(names - set(merged))
    if missing:
        raise ValueError(f"no value for {', '.join(missing)}: pass NAME=VALUE")
    multiline = sorted(name for name in names if "\n" in merged[name])
    if multiline:
        raise ValueError(f"{', '.join(multiline)}: a value must be one line (join setup commands with ';')")
    return PLACEHOLDER.sub(lambda match: merged[match.group(1)], template)


def double_quote(word: str) -> str:
    """`word` as one shell word that still expands `$VAR` when the job runs."""
    return '"' + re.sub(r'(["\\`])', r"\\\1", word) + '"'


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] | None = None
    if "--" in args:
        args, script_args = args[: args.index("--")], args[args.index("--") + 1 :]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    values = {}
    for item in args[1:]:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"error: {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 2
        values[name] = value
    if script_args is not None:
        if "ARGS" in values:
            print("error: give the script's arguments as ARGS=... or after --, not both", file=sys.stderr)
            return 2
        values["ARGS"] = " ".join(double_quote(word) for word in script_args)
    try:
        with open(args[0], encoding="utf-8") as f:
            print(render(f.read(), **values), end="")
    except (OSError, ValueError) as err:
        print(f"error: {args[0]}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
