"""Pushing a finished run to the Hugging Face Hub (`--push_to_hub`, every training script) or writing what would be
pushed (`--push_to_hub_dry_run`).

At the end of a finished training run (after its results are written), the run's folder `<output_dir>/hub/` gets
the model (or the LoRA adapter), the tokenizer, the results, `provenance.json`, the loss curve and a model card
(`README.md`) generated from the run: script, base model, data, a metrics table, the command line and the
training arguments with secrets removed. With `--push_to_hub` that folder is then uploaded, in one commit, to
`--hub_model_id` (default: the output dir's name under the token's user), created if needed
(`--hub_private_repo`). Checkpoints are not pushed: one push, of a finished run. The Trainer's own pushes
(a repository created as the Trainer is built, a push per save) are off (`trainers.ToolkitTrainer`).

Offline (`HF_HUB_OFFLINE=1`), without a token, or with a token the Hub refuses, `--push_to_hub` is refused
by the early checks, before any model loads (`check_hub`), not after hours of training.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from typing import Any, Mapping, Sequence

from errors import UserError

logger = logging.getLogger(__name__)

HUB_DIR = "hub"  # inside the run dir: what is (or would be) pushed
# Files of a run dir that go to the Hub: the model or adapter, its tokenizer, the run's results and records of it.
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json", "adapter_config.json",
               "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model",
               "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja")
RUN_FILES = ("all_results.json", "provenance.json", "loss_curve.png")
# Argument fields that describe the data, whichever script ran (the card's "Data" section).
DATA_FIELDS = ("benchmark", "dataset_name", "dataset_dir", "dataset_config_name", "train_file", "validation_file", "test_file",
               "data_dir", "data_name", "mount_dir", "kl_dataset")
# The training arguments the card lists (all of them are in provenance.json).
CARD_ARGUMENTS = ("learning_rate", "lr_scheduler_type", "warmup_steps", "optim", "num_train_epochs", "max_steps",
                  "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay", "max_grad_norm", "bf16", "fp16",
                  "seed", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "kl_scaleby", "patience")
MODEL_FIELDS = ("model_name_or_path", "model_init_name", "model_pretrain_name", "config_name")


def repo_name(repo_id: str | None, output_dir: str | None) -> str:
    """The repository a push goes to: --hub_model_id, else the output dir's name (a user error when the Hub would
    refuse it, e.g. a groups.py run dir `learning_rate=0.001,seed=1`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    name = repo_id or os.path.basename(os.path.abspath(output_dir or "trainer_output"))
    try:
        validate_repo_id(name if "/" in name else f"user/{name}")
    except HFValidationError as err:
        flag = "--hub_model_id" if repo_id else f"the output dir's name {name!r} (the default repository name)"
        raise UserError(f"--push_to_hub: {flag} is not a valid Hub repository name ({str(err).splitlines()[0]}); "
                        "give --hub_model_id NAME or ORG/NAME") from None
    return name


def check_hub(push: bool, dry_run: bool, no_train: bool, token: str | None = None, repo_id: str | None = None,
              output_dir: str | None = None) -> None:
    """The early refusal of a push that cannot happen: an invalid repository name, the Hub off, no token, or a token
    the Hub refuses (one `whoami` call; only when online and pushing)."""
    if (push or dry_run) and no_train:
        flag = "--push_to_hub" if push else "--push_to_hub_dry_run"
        raise UserError(f"{flag} with --no_train: a run pushes what it trained; push the trained run's own folder "
                        f"(`huggingface-cli upload REPO RUN_DIR/{HUB_DIR}` after a --push_to_hub_dry_run run)")
    if not push:
        return
    repo_name(repo_id, output_dir)
    from modeling import offline

    if offline():
        raise UserError("--push_to_hub: the Hub is off here (HF_HUB_OFFLINE=1); run with --push_to_hub_dry_run to write what "
                        f"would be pushed into OUTPUT_DIR/{HUB_DIR}, then `huggingface-cli upload REPO OUTPUT_DIR/{HUB_DIR}` "
                        "where there is internet")
    from huggingface_hub import get_token

    token = token or get_token()  # --hub_token, else HF_TOKEN or the token `huggingface-cli login` saved
    if not token:
        raise UserError("--push_to_hub: no Hugging Face token; set HF_TOKEN, pass --hub_token, or run `huggingface-cli login` "
                        "(a token with write access)")
    from huggingface_hub import HfApi

    try:
        HfApi().whoami(token=token)
    except Exception as err:  # network errors and HTTP 401 alike: one line, before training
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--push_to_hub: the Hub did not accept the token or could not be reached ({first}); "
                        f"check the token, or use --push_to_hub_dry_run and upload OUTPUT_DIR/{HUB_DIR} later") from None


def model_card(script: str, arguments: Mapping[str, Any], command: Sequence[str], results: Mapping[str, Any],
               adapter: bool, has_loss_curve: bool) -> str:
    """The README.md of a run (`arguments`: the run's resolved arguments, secrets already redacted)."""
    base = next((arguments[k] for k in MODEL_FIELDS if arguments.get(k)), None)
    data = {k: arguments[k] for k in DATA_FIELDS if arguments.get(k) not in (None, "", [])}
    header = ["---", f"library_name: {'peft' if adapter else 'transformers'}", "tags:", "- t5-toolkit", f"- {script.removesuffix('.py')}"]
    if adapter:
        header.append("- lora")
    if base and not os.path.isabs(str(base)) and not os.path.exists(str(base)):
        header.append(f"base_model: {base}")  # a Hub name; a local path says nothing on the Hub
    header.append("---")
    lines = header + ["", f"# {os.path.basename(os.path.abspath(arguments.get('output_dir') or '.'))}", "",
                      f"Trained with `{script}` of t5-toolkit" + (f", starting from `{base}`" if base else ", from scratch") +
                      (" (a LoRA adapter: load it with peft on that base model, or with any t5-toolkit script as the model)." if adapter else "."),
                      "", "## Data", ""]
    lines += [f"- {k}: `{json.dumps(v) if not isinstance(v, str) else v}`" for k, v in data.items()] or ["- (see the command line)"]
    lines += ["", "## Results", "", "| metric | value |", "|---|---|"]
    for key, value in results.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"| {key} | {value:.6g} |" if isinstance(value, float) else f"| {key} | {value} |")
    lines += ["", "## Training", "", "```bash", "python " + shlex.join(command), "```", "",
              "| argument | value |", "|---|---|"]
    lines += [f"| {k} | {arguments[k]} |" for k in CARD_ARGUMENTS if arguments.get(k) not in (None, [], "")]
    lines += ["", "Every argument, the package versions and the git commit are in `provenance.json`."]
    if has_loss_curve:
        lines += ["", "## Loss curve", "", "![loss curve](loss_curve.png)"]
    return "\n".join(lines) + "\n"


def stage(run_dir: str, model_dir: str, card: str) -> list[str]:
    """Fill `<run_dir>/hub/` with the files to push (hard links where the file system allows, else copies) and the
    card; returns the file names. An earlier hub/ folder is replaced."""
    target = os.path.join(run_dir, HUB_DIR)
    if os.path.isdir(target):
        shutil.rmtree(target)
    os.makedirs(target)
    sources = [os.path.join(model_dir, n) for n in MODEL_FILES] + [os.path.join(run_dir, n) for n in RUN_FILES]
    names = []
    for source in sources:
        name = os.path.basename(source)
        if os.path.isfile(source) and name not in names:
            try:
                os.link(source, os.path.join(target, name))
            except OSError:
                shutil.copy2(source, os.path.join(target, name))
            names.append(name)
    with open(os.path.join(target, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)
    return sorted(names + ["README.md"])


def push_run(run_dir: str, model_dir: str, script: str, results: Mapping[str, Any], arg_objects: Sequence[Any],
             argv: Sequence[str] | None, push: bool, repo_id: str | None, private: bool | None) -> list[str]:
    """Stage the run of `script` for the Hub and, with `push`, upload it; returns the staged file names."""
    from provenance import command_line, resolved_arguments

    arguments = resolved_arguments(arg_objects)
    adapter = os.path.isfile(os.path.join(model_dir, "adapter_config.json"))
    card = model_card(script, arguments, command_line(argv, script), results, adapter,
                      os.path.isfile(os.path.join(run_dir, "loss_curve.png")))
    names = stage(run_dir, model_dir, card)
    if adapter:
        from adapters import adapter_base

        base = adapter_base(model_dir)
        if base and os.path.isabs(base):
            logger.warning("the adapter's base model is the local path %s (adapter_config.json base_model_name_or_path): "
                           "others cannot load it from the Hub; set it to the base model's Hub name in %s/adapter_config.json "
                           "before pushing", base, os.path.join(run_dir, HUB_DIR))
    folder = os.path.join(run_dir, HUB_DIR)
    if not push:
        logger.info("--push_to_hub_dry_run: the files a push would upload are in %s: %s", folder, ", ".join(names))
        return names
    from huggingface_hub import HfApi

    api = HfApi()
    name = repo_name(repo_id, run_dir)
    try:
        if "/" not in name:
            name = f"{api.whoami()['name']}/{name}"
        api.create_repo(name, private=private, exist_ok=True)
        api.upload_folder(repo_id=name, folder_path=folder, commit_message=f"t5-toolkit run {os.path.basename(os.path.abspath(run_dir))}")
    except Exception as err:  # the run's results are written: say how to push them, do not lose them in a traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--push_to_hub: the upload to {name} failed ({first}); the run is finished and its files are staged "
                        f"in {folder}: `huggingface-cli upload {name} {folder}`") from None
    logger.info("pushed %s to https://huggingface.co/%s", folder, name)
    return names
