"""LoRA adapters through peft (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): every
training script's `--lora_r` trains low-rank updates of the chosen linear layers and nothing else, saves the
adapter (adapter_config.json + adapter_model.safetensors, no config.json) and, with `--merge_lora`, also the
merged model in `<output_dir>/merged`. Every script loads an adapter directory wherever it takes a model
directory (`modeling._from_pretrained` asks `adapter_base`).

peft matches `target_modules` in two ways, neither a glob: a list of names, each matching a module whose name
is that name or ends with `.name` (`q` matches `encoder.block.0.layer.0.SelfAttention.q`), or one regular
expression matched against the whole module name (`.*decoder.*\\.(q|v)`). `--lora_target_modules` passes a
list of plain names as a list and a single value with regex characters as the regex; a glob (`*.q`) is
refused with the regex to write instead.

This module imports nothing heavy at load time (the early checks use `adapter_base`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Sequence

from errors import UserError

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
MERGED_DIR = "merged"  # --merge_lora: the merged model's folder inside the output dir
# T5's linear layers: attention q, k, v, o; the feed-forward's wi (ReLU T5) or wi_0 / wi_1 (gated-GELU v1.1, flan-t5)
# and wo. Names absent from a model are skipped by peft (only a list that matches nothing is an error).
T5_TARGETS = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")
T5_MODEL_TYPES = ("t5", "mt5", "umt5", "longt5")
_REGEX_CHARACTERS = set(".*+?()[]{}|^$\\")


def adapter_base(path: str) -> str | None:
    """The base model of the adapter directory `path` (its adapter_config.json's base_model_name_or_path), or
    None when `path` is not an adapter directory (no adapter_config.json, or a full model's config.json beside it)."""
    config = os.path.join(path, ADAPTER_CONFIG)
    if not os.path.isfile(config) or os.path.isfile(os.path.join(path, "config.json")):
        return None
    try:
        with open(config, encoding="utf-8") as f:
            base = json.load(f).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"{config}: unreadable adapter config ({err}); a save that was cut short?") from None
    if not base:
        raise UserError(f"{config}: no base_model_name_or_path; the adapter does not say which model it adapts")
    return base


def model_source(path: str) -> str:
    """Where a model's config lives: the base model's name or directory for an adapter directory, else `path`."""
    return adapter_base(path) or path


def check_lora_values(r: int | None, alpha: float | None, dropout: float, targets: Sequence[str] | None) -> None:
    """The LoRA flags' values alone (no model needed)."""
    if r is None:
        for name, value in (("lora_alpha", alpha), ("lora_target_modules", targets)):
            if value is not None:
                raise UserError(f"--{name} without --lora_r: LoRA is off; give --lora_r (the adapters' rank, e.g. 8) to train adapters")
        if dropout:
            raise UserError(f"--lora_dropout {dropout} without --lora_r: LoRA is off; give --lora_r (e.g. 8)")
        return
    if r < 1:
        raise UserError(f"--lora_r {r}: the adapters' rank must be at least 1 (8 or 16 are common)")
    if alpha is not None and alpha <= 0:
        raise UserError(f"--lora_alpha {alpha}: must be positive (the update is scaled by lora_alpha / lora_r)")
    if not 0 <= dropout < 1:
        raise UserError(f"--lora_dropout {dropout}: must be in [0, 1)")
    target_modules(targets)


def target_modules(targets: Sequence[str] | None) -> list[str] | str | None:
    """`--lora_target_modules` as peft takes it: plain names as a list, one regular expression as a string; None: the
    default for the model (`lora_config`)."""
    if not targets:
        return None
    patterns = [t for t in targets if set(t) & _REGEX_CHARACTERS]
    if not patterns:
        return list(targets)
    if len(targets) > 1:
        raise UserError(f"--lora_target_modules {' '.join(targets)}: give module names (q v wo) or one regular expression "
                        f"({patterns[0]!r} is one), not both: peft takes a list of names or a single regex")
    pattern = targets[0]
    try:
        re.compile(pattern)
    except re.error as err:
        hint = ""
        if pattern.startswith("*") or "*" in pattern.replace(".*", ""):
            hint = f"; peft matches a regular expression against the whole module name, not a glob: write '{glob_to_regex(pattern)}'"
        raise UserError(f"--lora_target_modules {pattern!r}: not a valid regular expression ({err}){hint}") from None
    return pattern


def glob_to_regex(pattern: str) -> str:
    return re.escape(pattern).replace("\\*", ".*").replace("\\?", ".")


def _task_type(model: Any) -> str | None:
    from trainers import is_causal_lm  # the one test of "causal LM" every script uses

    if getattr(model.config, "is_encoder_decoder", False):
        return "SEQ_2_SEQ_LM"
    return "CAUSAL_LM" if is_causal_lm(model) else None  # a masked LM: peft has no task type; PeftModel passes inputs through


def lora_config(model: Any, r: int, alpha: float | None, dropout: float, targets: Sequence[str] | None) -> Any:
    """peft's LoraConfig for `model`: lora_alpha defaults to r (scale 1, peft's default 8 / 8), the target modules
    to T5_TARGETS for T5-family models and to peft's default for the model type otherwise (GPT-2: c_attn; BERT:
    query, value)."""
    from peft import LoraConfig

    modules = target_modules(targets)
    if modules is None and getattr(model.config, "model_type", None) in T5_MODEL_TYPES:
        modules = [name for name in T5_TARGETS if _has_module(model, name)]
    return LoraConfig(r=r, lora_alpha=alpha if alpha is not None else r, lora_dropout=dropout, target_modules=modules,
                      task_type=_task_type(model))


def _has_module(model: Any, name: str) -> bool:
    return any(full == name or full.endswith("." + name) for full, _ in model.named_modules())


def add_lora(model: Any, r: int, alpha: float | None, dropout: float, targets: Sequence[str] | None) -> Any:
    """`model` with fresh LoRA adapters (peft's PeftModel); only the adapters train. The base model's name is kept
    as an absolute path when it is a local directory, so the adapter loads from anywhere."""
    from peft import get_peft_model

    config = lora_config(model, r, alpha, dropout, targets)
    base = getattr(model, "name_or_path", None)
    if base and os.path.isdir(base):
        model.name_or_path = os.path.abspath(base)
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as err:
        if "not found" not in str(err):
            raise
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if type(module).__name__ in ("Linear", "Conv1D")})
        given = " ".join(targets) if targets else f"(peft's default for {model.config.model_type})"
        raise UserError(f"--lora_target_modules {given}: matches no layer of this model; its linear layers are named "
                        f"{', '.join(linear)}") from None
    log_trainable(peft_model)
    return peft_model


def load_adapter(base_model: Any, path: str) -> Any:
    """The adapter saved in `path` on `base_model`, trainable (a run can continue training it)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model, path, is_trainable=True)
    log_trainable(model)
    return model


def is_peft_model(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def log_trainable(model: Any) -> None:
    trainable, total = trainable_parameters(model)
    logger.info("LoRA: trainable parameters %s of %s (%.4f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))


def save_merged(adapter_dir: str, output_dir: str, model_class: Any, tokenizer: Any = None) -> str:
    """Merge the adapter saved in `adapter_dir` into a fresh copy of its base model (loaded on the CPU with
    `model_class`, so that sharded or offloaded training weights play no part) and save it, with the tokenizer,
    to `output_dir`; returns `output_dir`. The merged weights are W + (alpha / r) B A, peft's merge_and_unload."""
    from peft import PeftModel
    from transformers.integrations import deepspeed as hf_deepspeed

    # Under ZeRO-3, transformers would partition a model loaded in this process (zero.Init: every weight of size
    # 0 here); the copy to merge is a whole one, on the CPU, so ZeRO-3 is off while it loads.
    saved, hf_deepspeed._hf_deepspeed_config_weak_ref = hf_deepspeed._hf_deepspeed_config_weak_ref, None
    try:
        base = model_class.from_pretrained(adapter_base(adapter_dir))
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved
    merged.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    logger.info("LoRA: the merged model is in %s", output_dir)
    return output_dir
