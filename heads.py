"""Attention-head masks for transformers 5, which dropped `head_mask` (it still accepts the argument and ignores it).

A mask is one (layers, heads) array per attention stack ("encoder", "decoder", "cross"), values 0..1 (fractional
allowed). `apply_head_mask` registers a forward pre-hook on each attention block's output projection that scales
head h's slice of the projection's input (the concatenated per-head attention outputs) by mask[layer, h]. That is
transformers 4.x `head_mask`: there the mask multiplied head h's attention probabilities, which by linearity scales
head h's context vectors before the output projection (BERT's and GPT-2's projections then still add their bias).

    masks = read_head_mask("mask.npz", mask_shape(model.config))
    handle = apply_head_mask(model, masks)   # ... run the model ...; handle.remove()

Numpy only at import (early checks read mask files without torch); torch is imported inside the functions.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from errors import UserError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

STACKS = ("encoder", "decoder", "cross")  # encoder self-attention, decoder self-attention, decoder cross-attention

T5_TYPES = ("t5", "mt5", "umt5")
BERT_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
GPT2_TYPES = ("gpt2",)
LLAMA_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
               "phi3", "olmo", "olmo2", "granite", "starcoder2", "cohere", "stablelm", "smollm3")  # layers.N.self_attn.o_proj
SUPPORTED_TYPES = T5_TYPES + BERT_TYPES + GPT2_TYPES + LLAMA_TYPES

# Each family's output projections by module name; group 1 is the layer index. Anchored on a dot so that BERT's
# `crossattention.output.dense` and GPT-2's `crossattention.c_proj` (models built with cross-attention) stay out.
_PROJECTIONS: dict[str, dict[str, str]] = {
    "t5": {
        "encoder": r"(?:^|\.)encoder\.block\.(\d+)\.layer\.0\.\w*SelfAttention\.o$",
        "decoder": r"(?:^|\.)decoder\.block\.(\d+)\.layer\.0\.SelfAttention\.o$",
        "cross": r"(?:^|\.)decoder\.block\.(\d+)\.layer\.1\.EncDecAttention\.o$",
    },
    "bert": {"encoder": r"(?:^|\.)encoder\.layer\.(\d+)\.attention\.output\.dense$"},
    "gpt2": {"decoder": r"(?:^|\.)h\.(\d+)\.attn\.c_proj$"},
    "llama": {"decoder": r"(?:^|\.)layers\.(\d+)\.self_attn\.o_proj$"},
}

READ_SUFFIXES = (".npz", ".pt", ".json", ".npy")


def _getter(config: Any) -> Callable[..., Any]:
    """One accessor for a transformers config object and config.json's plain dict."""
    if isinstance(config, Mapping):
        return config.get
    return lambda key, default=None: getattr(config, key, default)


def _family(config: Any) -> str:
    get = _getter(config)
    model_type = get("model_type")
    if model_type in T5_TYPES or (get("is_encoder_decoder", False) and get("num_heads") is not None):
        return "t5"
    if model_type in BERT_TYPES:
        return "bert"
    if model_type in GPT2_TYPES:
        return "gpt2"
    if model_type in LLAMA_TYPES:
        return "llama"
    raise UserError(f"model type {model_type!r}: head masking does not support it; supported model types: {', '.join(SUPPORTED_TYPES)}")


def mask_shape(config: Any) -> dict[str, tuple[int, int]]:
    """(layers, heads) of each attention stack the model has, in STACKS order, from its config (object or dict)."""
    get = _getter(config)
    family = _family(config)
    if family == "t5":
        heads = int(get("num_heads"))
        decoder = (int(get("num_decoder_layers") or get("num_layers")), heads)
        return {"encoder": (int(get("num_layers")), heads), "decoder": decoder, "cross": decoder}
    if family == "bert":
        return {"encoder": (int(get("num_hidden_layers")), int(get("num_attention_heads")))}
    if family == "gpt2":
        return {"decoder": (int(get("n_layer")), int(get("n_head")))}
    return {"decoder": (int(get("num_hidden_layers")), int(get("num_attention_heads")))}


def head_modules(model: Any) -> dict[str, list[Any]]:
    """Each stack's attention output projections in layer order (the modules `apply_head_mask` hooks)."""
    shapes = mask_shape(model.config)
    found: dict[str, dict[int, Any]] = {stack: {} for stack in shapes}
    patterns = {stack: re.compile(pattern) for stack, pattern in _PROJECTIONS[_family(model.config)].items()}
    for name, module in model.named_modules():
        for stack, pattern in patterns.items():
            match = pattern.search(name)
            if match:
                found[stack][int(match.group(1))] = module
    modules = {}
    for stack, (layers, _) in shapes.items():
        if sorted(found[stack]) != list(range(layers)):
            raise ValueError(f"{stack}: found output projections for layers {sorted(found[stack])} in a "
                             f"{type(model).__name__}, but its config says {layers} layers")
        modules[stack] = [found[stack][layer] for layer in range(layers)]
    return modules


# --- Mask files ---------------------------------------------------------------------------------------------------

def _shape_str(shape: tuple[int, ...]) -> str:
    return str(tuple(int(n) for n in shape))


def _one_stack_only(path: str, shapes: Mapping[str, tuple[int, int]]) -> str:
    """The model's only stack, for a bare array; a user error for a model with several."""
    if len(shapes) == 1:
        return next(iter(shapes))
    stacks = ", ".join(shapes)
    raise UserError(f"{path}: a bare array fits a model with one attention stack, and this model has {len(shapes)} "
                    f"({stacks}); give an .npz or .json with keys {stacks} (one (layers, heads) array each)")


def _load(path: str, shapes: Mapping[str, tuple[int, int]], flag: str) -> dict[Any, Any]:
    """The file's arrays by key (a bare array under the model's only stack)."""
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            stack = _one_stack_only(path, shapes)
            try:
                return {stack: np.load(path, allow_pickle=False)}
            except ValueError as err:
                if "allow_pickle" in str(err):  # an object array: not numbers
                    return {stack: object()}
                raise
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                loaded = {}
                for key in data.files:
                    try:
                        loaded[key] = data[key]
                    except ValueError:  # an object array needs pickle: not numbers
                        loaded[key] = object()
                return loaded
        if suffix == ".json":
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        else:  # .pt
            import torch

            data = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(data, torch.Tensor):
                return {_one_stack_only(path, shapes): data}
    except UserError:
        raise
    except json.JSONDecodeError as err:
        raise UserError(f"{flag} {path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                        f"give an object such as {{\"{next(iter(shapes))}\": [[1, 0, ...], ...]}}") from None
    except Exception as err:  # a damaged file: numpy, zipfile and pickle raise their own types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{flag} {path}: cannot read it as a {suffix} file ({reason})") from None
    if isinstance(data, list) and suffix == ".json":
        return {_one_stack_only(path, shapes): data}
    if not isinstance(data, dict):
        what = "one 2-D tensor" if suffix == ".pt" else "a 2-D list"
        raise UserError(f"{path}: holds a {type(data).__name__}; give a mapping of stack ({', '.join(shapes)}) to a "
                        f"(layers, heads) array, or {what} for a model with one stack")
    return data


def _mask_array(path: str, key: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (bfloat16 has no numpy type: go through float32)
        value = value.detach().cpu()
        value = None if value.dtype.is_complex else value.float().numpy() if value.dtype.is_floating_point else value.numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged lists
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise UserError(f"{path}: '{key}' is not an array of numbers; give a (layers, heads) array of 0..1 values")
    if tuple(array.shape) != tuple(shape):
        raise UserError(f"{path}: '{key}' has shape {_shape_str(array.shape)}; this model's {key} mask is "
                        f"{_shape_str(shape)} (layers, heads)")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise UserError(f"{path}: '{key}' holds NaN or infinite values; give a (layers, heads) array of 0..1 values")
    return array


def read_head_mask(path: str, shapes: Mapping[str, tuple[int, int]], flag: str = "--head_mask") -> dict[str, np.ndarray]:
    """Masks for every stack in `shapes` (float32, (layers, heads)) from an .npz, .pt, .json or .npy file; a stack the
    file leaves out is unmasked (ones). Keys are stacks; a bare array (.npy, a .pt tensor, a .json list) fits a model
    with one stack. Numbers may be bool, int or float. A one-line user error for anything that does not fit the model."""
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path}: no such file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in READ_SUFFIXES:
        what = f"unknown format {suffix!r}" if suffix else "no format suffix"
        raise UserError(f"{flag} {path}: {what}; give one of {', '.join(READ_SUFFIXES)}")
    data = _load(path, shapes, flag)
    for key in data:
        if key not in shapes:
            raise UserError(f"{path}: '{key}' is not an attention stack of this model; its stacks are {', '.join(shapes)}")
    if not data:
        raise UserError(f"{path}: holds no mask; give at least one of {', '.join(shapes)} as a (layers, heads) array")
    masks = {}
    for stack, shape in shapes.items():
        masks[stack] = (_mask_array(path, stack, data[stack], shape) if stack in data
                        else np.ones(shape, dtype=np.float32))
    return masks


# --- Hooks ---------------------------------------------------------------------------------------------------------

class HeadMaskHandle:
    """The hooks one `apply_head_mask` call registered; `remove()` takes them off (twice is harmless)."""

    def __init__(self, model: Any, hooks: list[Any]) -> None:
        self._model = model
        self._hooks = hooks

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if getattr(self._model, "_head_mask_handle", None) is self:
            del self._model._head_mask_handle


def _scale_heads(mask: Any, layer: int) -> Callable[[Any, tuple[Any, ...]], tuple[Any, ...]]:
    """A pre-hook multiplying the projection input, viewed as (..., heads, head_dim), by mask[layer]."""

    def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        row = mask[layer].to(dtype=x.dtype, device=x.device)
        scaled = (x.unflatten(-1, (row.shape[0], -1)) * row[:, None]).flatten(-2)
        return (scaled, *args[1:])

    return hook


def apply_head_mask(model: Any, masks: Mapping[str, Any]) -> HeadMaskHandle:
    """Scale each head's attention output by `masks[stack][layer, head]` (numpy arrays or torch tensors; a tensor that
    requires grad stays in the graph). Replaces a mask applied before; stacks not in `masks` are left unmasked."""
    import torch

    previous = getattr(model, "_head_mask_handle", None)
    if previous is not None:
        previous.remove()
    shapes = mask_shape(model.config)
    modules = head_modules(model)
    hooks = []
    for stack, mask in masks.items():
        if stack not in shapes:
            raise ValueError(f"head mask for {stack!r}, but the model's stacks are {', '.join(shapes)}")
        if tuple(mask.shape) != tuple(shapes[stack]):
            raise ValueError(f"{stack} head mask of shape {tuple(mask.shape)}; the model's is {shapes[stack]}")
        device = next(modules[stack][0].parameters()).device
        if not isinstance(mask, torch.Tensor):
            mask = torch.as_tensor(np.asarray(mask, dtype=np.float32), device=device)
        elif not mask.requires_grad:
            mask = mask.to(device)
        for layer, module in enumerate(modules[stack]):
            hooks.append(module.register_forward_pre_hook(_scale_heads(mask, layer)))
    logger.info("head mask on %s", ", ".join(f"{stack} {tuple(mask.shape)}" for stack, mask in masks.items()) or "no stack")
    handle = HeadMaskHandle(model, hooks)
    model._head_mask_handle = handle
    return handle


def remove_head_mask(model: Any) -> None:
    """Take off the mask `apply_head_mask` put on `model`, if any."""
    handle = getattr(model, "_head_mask_handle", None)
    if handle is not None:
        handle.remove()


def ones_masks(shapes: Mapping[str, tuple[int, int]], requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """An all-ones mask per stack; with `requires_grad`, the gradient of a loss with respect to it is each head's
    importance (Michel et al. 2019, "Are Sixteen Heads Really Better than One?", sec. 4.1)."""
    import torch

    return {stack: torch.ones(shape, requires_grad=requires_grad) for stack, shape in shapes.items()}


# --- Choosing heads ------------------------------------------------------------------------------------------------

def top_heads(importance: Mapping[str, np.ndarray], k: int) -> list[tuple[str, int, int]]:
    """The k (stack, layer, head) with the largest importance; ties go to the earlier stack, layer, head."""
    order = sorted(importance, key=STACKS.index)
    n = sum(int(np.asarray(importance[stack]).size) for stack in order)
    if not 1 <= k <= n:
        raise UserError(f"--mask_top_k {k}: the model has {n} heads")
    ranked = [(-float(value), rank, layer, head, stack)
              for rank, stack in enumerate(order)
              for (layer, head), value in np.ndenumerate(np.asarray(importance[stack]))]
    ranked.sort(key=lambda row: row[:4])
    return [(stack, int(layer), int(head)) for _, _, layer, head, stack in ranked[:k]]


def masks_without(shapes: Mapping[str, tuple[int, int]], heads: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
    """All-ones masks with `heads` (stack, layer, head) set to 0."""
    masks = {stack: np.ones(shape, dtype=np.float32) for stack, shape in shapes.items()}
    for stack, layer, head in heads:
        layers, num_heads = shapes[stack]
        if not (0 <= layer < layers and 0 <= head < num_heads):
            raise ValueError(f"head ({stack}, {layer}, {head}) is outside the {stack} mask's {(layers, num_heads)}")
        masks[stack][layer, head] = 0.0
    return masks


def shape_json(shapes: Mapping[str, tuple[int, int]]) -> str:
    """The mask shapes as `bias.py --print_mask_shape` prints them (PLMBias's get_mask_shape), in STACKS order."""
    return json.dumps({stack: [int(n) for n in shapes[stack]] for stack in STACKS if stack in shapes})
