"""What a run records about itself, with secrets kept out: `provenance.json` (resolved arguments, command
line, git commit, package versions) and the redaction of tokens and API keys from anything saved or
logged (stdlib only)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from typing import Any, Sequence

from outputs import write_json_atomic

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "tokenizers", "sentencepiece", "numpy", "deepspeed", "wandb")

_SECRET_KEY = re.compile(r"(^|_)(token|api_key|key|secret|password|passwd)$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|[0-9a-f]{40}|wandb_v1_[A-Za-z0-9_]{20,})\b")
REDACTED = "<redacted>"


def _is_secret_key(key: str) -> bool:
    name = key.lstrip("-").replace("-", "_")  # --hub-token is --hub_token to the parser
    return bool(_SECRET_KEY.search(name)) and not name.endswith(("_token_id", "yes_token", "no_token"))


def redact(value: Any) -> Any:
    """A copy of `value` with secrets (tokens, API keys) replaced, by key name and by value shape."""
    if isinstance(value, dict):
        return {k: (REDACTED if _is_secret_key(str(k)) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with the values of secret flags (`--hub_token X`, `--hub_token=X`) replaced."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif arg.startswith("--") and "=" in arg and _is_secret_key(arg.split("=", 1)[0]):
            out.append(arg.split("=", 1)[0] + "=" + REDACTED)
        elif arg.startswith("--") and _is_secret_key(arg):
            out.append(arg)
            hide_next = True
        else:
            out.append(_SECRET_VALUE.sub(REDACTED, arg))
    return out


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _package_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def resolved_arguments(arg_objects: Sequence[Any]) -> dict[str, Any]:
    """Every argument of the run's dataclasses, merged, secrets redacted."""
    arguments: dict[str, Any] = {}
    for obj in arg_objects:
        arguments.update(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
    return redact(arguments)


def command_line(argv: Sequence[str] | None, script: str | None = None) -> list[str]:
    """The run's command line (`script`, default the process's, then `argv`, default the process's arguments),
    secrets redacted."""
    return redact_argv([script or os.path.basename(sys.argv[0])] + list(sys.argv[1:] if argv is None else argv))


def write_provenance(output_dir: str, arg_objects: Sequence[Any], argv: Sequence[str] | None, name: str = "provenance.json") -> None:
    """`provenance.json`: the resolved arguments (secrets redacted), the command line, the git commit
    and the installed package versions."""
    write_json_atomic(
        os.path.join(output_dir, name),
        {
            "arguments": resolved_arguments(arg_objects),
            "command": command_line(argv),
            "git_commit": _git_commit(),
            "python": sys.version.split()[0],
            "packages": _package_versions(),
        },
    )
