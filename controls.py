"""Training controls every script takes (the original finetune-lm toolkit's, rebuilt on the Trainer): a KL term
to the starting model against forgetting, early stopping with the original's rule, freezing parameters or
embedding rows, and new tokens.

The flags are fields of `TrainingControls`, which both `arguments.EarlyTrainingFlags` (the early, stdlib
parse) and `trainer_arguments.ToolkitTrainingArguments` (the Trainer's arguments) inherit, so that the early
checks (`check_controls`) and training read one set of values. `trainers.ToolkitTrainer` applies them:
the KL term (`kl_loss_term`), early stopping (`early_stopping_state`), freezing (`Freezer`). Scripts call
`add_new_tokens` before they tokenize their data. This module imports nothing heavy at load time.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from errors import UserError

KL_SCALEBY = 2.5  # the original's defaults
KL_EXAMPLES_PER_STEP = 20


@dataclass
class TrainingControls:
    """Flags of every script (see the module docstring)."""

    kl_dataset: Optional[list[str]] = field(default=None, metadata={"help": "KL to the starting model on these text files (finetune_lm.py's formats: .txt(.gz) lines, .json(l)(.gz) {\"text\", \"labels\"}): a loss term against forgetting."})
    kl_scaleby: Optional[list[float]] = field(default=None, metadata={"help": f"The KL term's factor, one value or one per --kl_dataset (default {KL_SCALEBY})."})
    kl_examples_per_step: Optional[list[int]] = field(default=None, metadata={"help": f"KL examples drawn per optimizer step, one value or one per --kl_dataset (default {KL_EXAMPLES_PER_STEP})."})
    kl_batch_size: int = field(default=32, metadata={"help": "KL examples per forward pass."})
    kl_max_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N examples of each --kl_dataset."})
    kl_max_length: int = field(default=512, metadata={"help": "Tokens per KL example; longer ones are cut."})
    kl_preprocessing_fn: Optional[str] = field(default=None, metadata={"help": "A finetune_lm.py preprocessing function for the KL data (e.g. mask_random_tokens for a masked LM); default identity."})
    kl_preprocessing_fn_kwargs: Optional[str] = field(default=None, metadata={"help": "Its keyword arguments, a JSON mapping."})
    patience: Optional[int] = field(default=None, metadata={"help": "Early stopping: stop after this many evaluations without an improvement of more than --delta (default: no early stopping)."})
    min_epochs: float = field(default=0, metadata={"help": "Early stopping never stops before this many epochs."})
    delta: float = field(default=0.0, metadata={"help": "Early stopping: the improvement that counts as one (and makes a new best model)."})
    frozen_params: Optional[list[str]] = field(default=None, metadata={"help": "Parameters not to train: names or glob patterns, optionally with rows (shared.weight[5,17])."})
    unfrozen_params: Optional[list[str]] = field(default=None, metadata={"help": "The only parameters to train (same forms); every other one is frozen."})
    freeze_words: Optional[list[str]] = field(default=None, metadata={"help": "Words (one token each) whose embedding rows stay as they are."})
    unfreeze_words: Optional[list[str]] = field(default=None, metadata={"help": "Words (one token each) whose embedding rows are the only weights trained."})
    add_new_tokens: Optional[list[str]] = field(default=None, metadata={"help": "Tokens to add to the tokenizer (new embedding rows start at the mean embedding)."})
    lora_r: Optional[int] = field(default=None, metadata={"help": "Train LoRA adapters of this rank (peft) instead of the whole model: only the adapters train and are saved (adapters.py)."})
    lora_alpha: Optional[float] = field(default=None, metadata={"help": "LoRA's scale numerator: updates are scaled by lora_alpha / lora_r (default: lora_r, i.e. 1)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA adapters' input."})
    lora_target_modules: Optional[list[str]] = field(default=None, metadata={"help": "The layers that get adapters: module names (T5's default: q k v o wi wi_0 wi_1 wo; other models: peft's default for the type) or one regular expression matched against the whole module name (peft takes no globs)."})
    merge_lora: bool = field(default=False, metadata={"help": "After training, also save the model with the adapters merged into its weights, in <output_dir>/merged."})
    head_mask: Optional[str] = field(default=None, metadata={"help": "Mask attention heads while training and evaluating: a .npz / .pt / .json file with one (layers, heads) array per stack (encoder, decoder, cross), or a bare 2-D .npy for a model with one stack; 0 removes a head, a fraction scales it (heads.py). `python bias.py --print_mask_shape --model_name_or_path M` prints the shapes."})


def check_control_values(c: TrainingControls) -> None:
    """The checks of the flags' values alone (run by both parsers' dataclasses)."""
    pairs = (("frozen_params", "unfrozen_params"), ("freeze_words", "unfreeze_words"), ("frozen_params", "unfreeze_words"),
             ("unfrozen_params", "freeze_words"))
    for a, b in pairs:
        if getattr(c, a) and getattr(c, b):
            raise UserError(f"--{a} and --{b} together: give one way of saying what trains")
    count = len(c.kl_dataset or [])
    for name in ("kl_scaleby", "kl_examples_per_step"):
        values = getattr(c, name)
        if values is not None and not c.kl_dataset:
            raise UserError(f"--{name} without --kl_dataset: it sets the KL term, which needs KL data")
        if values is not None and len(values) not in (1, count):
            raise UserError(f"--{name} has {len(values)} values for {count} --kl_dataset files: give one value or one per file")
    if any(v <= 0 for v in c.kl_examples_per_step or []):
        raise UserError(f"--kl_examples_per_step {c.kl_examples_per_step}: must be at least 1")
    if any(v < 0 for v in c.kl_scaleby or []):
        raise UserError(f"--kl_scaleby {c.kl_scaleby}: must not be negative")
    for name in ("kl_batch_size", "kl_max_length"):
        if getattr(c, name) < 1:
            raise UserError(f"--{name} {getattr(c, name)}: must be at least 1")
    if c.patience is not None and c.patience < 1:
        raise UserError(f"--patience {c.patience}: must be at least 1 (leave it out for no early stopping)")
    if c.min_epochs < 0 or c.delta < 0:
        raise UserError(f"--min_epochs {c.min_epochs} / --delta {c.delta}: must not be negative")
    if (c.min_epochs or c.delta) and c.patience is None:
        raise UserError("--min_epochs / --delta without --patience: they shape early stopping, which --patience turns on")
    from adapters import check_lora_values

    check_lora_values(c.lora_r, c.lora_alpha, c.lora_dropout, c.lora_target_modules)
    if c.lora_r is not None:
        for name in ("frozen_params", "unfrozen_params", "freeze_words", "unfreeze_words", "add_new_tokens"):
            if getattr(c, name):
                raise UserError(f"--{name} with --lora_r: LoRA trains its adapters and nothing else, and saves only them; "
                                f"leave --{name} out, or train the whole model without --lora_r")


def per_dataset(values: Sequence[Any] | None, count: int, default: Any) -> list[Any]:
    """One value per KL dataset: the default, a value for all, or one each."""
    values = list(values) if values else [default]
    return values * count if len(values) == 1 else values


def check_controls(c: TrainingControls, evaluates: bool | None = None, model: str | None = None) -> list[Any]:
    """The early checks that read files: each KL dataset is read and validated (and holds enough examples),
    early stopping needs evaluation (`evaluates` None: not known yet), and the head-mask file holds numbers (of
    the right shapes when `model`, the starting checkpoint, is a local folder). Returns the KL datasets."""
    from lm_data import read_text_dataset

    if c.head_mask:
        check_head_mask(c.head_mask, local_mask_shapes(model) if model else None)
    check_lora_source(c, model)
    from hub import check_hub  # not a training control, but every training script's early checks run here

    check_hub(getattr(c, "push_to_hub", False), getattr(c, "push_to_hub_dry_run", False), getattr(c, "no_train", False),
              getattr(c, "hub_token", None), getattr(c, "hub_model_id", None), getattr(c, "output_dir", None))

    if c.patience is not None and evaluates is False:
        raise UserError(f"--patience {c.patience}: early stopping needs an evaluation each epoch (validation data and "
                        "--eval_strategy epoch or steps)")
    kl_preprocessing(c, None)  # a bad function name or kwargs: one line now, not after the model loads
    datasets = [read_text_dataset(path, "--kl_dataset").head(c.kl_max_samples) for path in c.kl_dataset or []]
    for dataset, n in zip(datasets, per_dataset(c.kl_examples_per_step, len(datasets), KL_EXAMPLES_PER_STEP)):
        if len(dataset) < n:
            raise UserError(f"--kl_dataset {dataset.path}: holds {len(dataset)} examples, fewer than --kl_examples_per_step {n} "
                            "(each step draws that many without replacement)")
    return datasets


def check_lora_source(c: TrainingControls, model: str | None) -> None:
    """--lora_r needs a pretrained model that is not already an adapter (which a run continues as it is);
    --merge_lora needs adapters: --lora_r, or an adapter directory to continue."""
    import os

    from adapters import adapter_base

    adapter = bool(model and os.path.isdir(model) and adapter_base(model))
    if c.lora_r is not None and adapter:
        raise UserError(f"--lora_r {c.lora_r} with the adapter directory {model}: a run continues training its adapter "
                        "as saved; leave --lora_r out (or give the base model to start new adapters)")
    if c.merge_lora and c.lora_r is None and not adapter:
        raise UserError("--merge_lora without adapters: give --lora_r, or an adapter directory as the model, to merge")


def kl_preprocessing(c: TrainingControls, model_task: str | None) -> tuple[str, dict[str, Any]]:
    """The KL data's preprocessing function and its checked kwargs (model_task None: not known yet)."""
    from arguments import json_mapping
    from lm_preprocessing import check_preprocessing

    name = c.kl_preprocessing_fn or "identity"
    kwargs = json_mapping(c.kl_preprocessing_fn_kwargs, "kl_preprocessing_fn_kwargs")
    return name, check_preprocessing(name, kwargs, "once", model_task, "--kl_preprocessing_fn")


# --- Head masks ------------------------------------------------------------------------------------------


def local_mask_shapes(model: str) -> dict[str, tuple[int, int]] | None:
    """The head-mask shapes of a local checkpoint, from its config.json (None: a Hub name or no config yet)."""
    import os

    from heads import mask_shape
    from records import _read_json

    from adapters import model_source

    path = os.path.join(model_source(model), "config.json")
    return mask_shape(_read_json(path)) if os.path.isfile(path) else None


def check_head_mask(path: str | None, shapes: dict[str, tuple[int, int]] | None) -> None:
    """--head_mask before the heavy imports: the file exists, and holds arrays of numbers of `shapes` (when the
    shapes are known and the file needs no torch to read: a .pt file is read once the model is loaded)."""
    import os

    if not path:
        return
    if not os.path.isfile(path):
        raise UserError(f"--head_mask {path}: no such file")
    if shapes is not None and not path.endswith(".pt"):
        from heads import read_head_mask

        read_head_mask(path, shapes)


def apply_head_mask_flag(mask: str | dict[str, Any] | None, model: Any) -> dict[str, Any] | None:
    """Mask `model`'s heads (heads.py's hooks) with a mask file or a mapping of stack -> (layers, heads) values;
    None removes a mask applied before. Returns the mapping applied (None for none)."""
    from heads import apply_head_mask, mask_shape, read_head_mask, remove_head_mask

    if mask is None:
        remove_head_mask(model)
        return None
    if isinstance(mask, str):
        mask = read_head_mask(mask, mask_shape(model.config))
    apply_head_mask(model, mask)
    return mask


# --- KL to the starting model ------------------------------------------------------------------------------


def kl_loss_term(c: TrainingControls, model: Any, tokenizer: Any, model_task: str, first_step: bool, seed: int) -> Any:
    """`losses.KLBaselineLoss` from the flags: a frozen copy of `model` as it is now (the starting checkpoint),
    the KL datasets tokenized for `model_task` (lm, mlm, seq2seq) and preprocessed once; with `first_step`
    (clf.py's yes/no head) only the first decoder step is compared, the step the score reads."""
    import copy

    from data_collators import LMCollator
    from lm_data import encode_dataset
    from lm_preprocessing import TokenInfo, preprocess_encoded
    from losses import KLBaselineLoss

    if _zero3():
        raise UserError("--kl_dataset under DeepSpeed ZeRO-3: the frozen copy of the model is not sharded (it would be a whole "
                        "model on every GPU); use zero_stage2_config.json, or plain DDP")
    name, kwargs = kl_preprocessing(c, model_task)
    info = TokenInfo.from_tokenizer(tokenizer, model_task)
    datasets = []
    for dataset in check_controls(c):
        examples = encode_dataset(dataset, tokenizer, model_task, c.kl_max_length, "--kl_dataset")
        rows = preprocess_encoded(examples, name, kwargs, "once", info, seed, c.kl_batch_size)
        if first_step:  # one decoder step: the start token in, one position compared
            rows = [{"input_ids": r["input_ids"], "labels": [0]} for r in rows]
        datasets.append([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    start = model.config.decoder_start_token_id if model_task == "seq2seq" else None
    count = len(datasets)
    return KLBaselineLoss(copy.deepcopy(model), datasets, per_dataset(c.kl_scaleby, count, KL_SCALEBY),
                          per_dataset(c.kl_examples_per_step, count, KL_EXAMPLES_PER_STEP),
                          LMCollator(pad, decoder_start_token_id=start), seed=seed, batch_size=c.kl_batch_size, causal=model_task == "lm")


def _zero3() -> bool:
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:
        return False
    return bool(is_deepspeed_zero3_enabled())


# --- Early stopping -----------------------------------------------------------------------------------------


def early_stopping_state(values: Sequence[float], delta: float, greater_is_better: bool) -> tuple[float | None, int, int | None]:
    """(best value, evaluations since it, index of the evaluation that set it) after the evaluations `values`,
    under the original finetune-lm rule: only a value better than `best - delta` (`best + delta` when greater is
    better) is an improvement and a new best; every other evaluation adds one to the counter. (transformers'
    EarlyStoppingCallback resets on any improvement of a best that also moves on any improvement.)"""
    best, counter, at = None, 0, None
    for i, value in enumerate(values):
        improved = best is None or (value > best + delta if greater_is_better else value < best - delta)
        if improved:
            best, counter, at = value, 0, i
        else:
            counter += 1
    return best, counter, at


# --- Freezing -------------------------------------------------------------------------------------------------

_ROWS = re.compile(r"^(?P<name>.+?)\[(?P<rows>\s*\d+\s*(,\s*\d+\s*)*)\]$")


def parse_param_spec(spec: str) -> tuple[str, list[int] | None]:
    """`shared.weight[5,17]` -> ("shared.weight", [5, 17]); `encoder.*` -> ("encoder.*", None)."""
    match = _ROWS.match(spec)
    if match is None:
        return spec, None
    return match.group("name"), [int(r) for r in match.group("rows").split(",")]


class Freezer:
    """What trains, from --frozen_params / --unfrozen_params / --freeze_words / --unfreeze_words.

    A whole frozen parameter gets `requires_grad = False` (the optimizer never sees it). Frozen rows of a
    parameter that otherwise trains get their gradient zeroed in backward (before clipping, so they do not count
    in the clip norm) and are copied back after each optimizer step, so that weight decay and Adam's moments
    cannot move them: they stay bit-identical. Word rows are frozen in the input and, if it is a separate
    matrix (T5 v1.1, flan-T5), the output embeddings.
    """

    def __init__(self, model: Any, c: TrainingControls, tokenizer: Any) -> None:
        import torch

        from modeling import single_token_id

        names = dict(model.named_parameters())
        frozen_rows: dict[str, set[int]] = {}  # param -> frozen rows (of a param that trains)
        trained_rows: dict[str, set[int]] = {}  # param -> the only rows that train
        frozen_whole: set[str] = set()
        if c.frozen_params or c.unfrozen_params:
            specs = [parse_param_spec(s) for s in (c.frozen_params or c.unfrozen_params)]
            chosen: dict[str, set[int] | None] = {}
            for pattern, rows in specs:
                matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
                if not matched:
                    flag = "--frozen_params" if c.frozen_params else "--unfrozen_params"
                    raise UserError(f"{flag} {pattern!r}: matches no parameter of the model (e.g. {', '.join(list(names)[:3])}); "
                                    "give names or glob patterns such as 'encoder.*'")
                for n in matched:
                    if rows is None or chosen.get(n, set()) is None:
                        chosen[n] = None
                    else:
                        self._check_rows(n, rows, names[n])
                        chosen[n] = chosen.get(n, set()) | set(rows)
            for n in names:
                if c.frozen_params:
                    if n in chosen and chosen[n] is None:
                        frozen_whole.add(n)
                    elif n in chosen:
                        frozen_rows[n] = chosen[n]
                elif n not in chosen:
                    frozen_whole.add(n)
                elif chosen[n] is not None:
                    trained_rows[n] = chosen[n]
        words = c.freeze_words or c.unfreeze_words
        if words:
            flag = "--freeze_words" if c.freeze_words else "--unfreeze_words"
            ids = {single_token_id(tokenizer, w, flag) for w in words}
            embeddings = [n for n, p in names.items() if any(p is e.weight for e in self._embeddings(model))]
            if c.freeze_words:
                for n in embeddings:
                    frozen_rows[n] = frozen_rows.get(n, set()) | ids
            else:
                frozen_whole |= {n for n in names if n not in embeddings}
                for n in embeddings:
                    trained_rows[n] = ids
        for n, rows in trained_rows.items():  # "only these rows train" is "every other row is frozen"
            frozen_rows[n] = set(range(names[n].shape[0])) - rows
        for n in frozen_whole:
            names[n].requires_grad_(False)
            frozen_rows.pop(n, None)
        if any(frozen_rows.values()) and _zero3():
            raise UserError("frozen rows (--freeze_words, --unfreeze_words, name[rows]) under DeepSpeed ZeRO-3: its parameters are "
                            "sharded, so rows cannot be restored; use zero_stage2_config.json, or freeze whole parameters")
        self.frozen_whole = sorted(frozen_whole)
        self.rows = {n: torch.tensor(sorted(r), dtype=torch.long) for n, r in frozen_rows.items() if r}
        self.params = {n: names[n] for n in self.rows}
        self.saved = {n: names[n].detach()[self.rows[n]].clone() for n in self.rows}
        for n, param in self.params.items():
            param.register_hook(self._zero_rows_hook(self.rows[n]))

    @staticmethod
    def _embeddings(model: Any) -> list[Any]:
        out = [model.get_input_embeddings()]
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if output is not None and output.weight is not out[0].weight:
            out.append(output)
        return out

    @staticmethod
    def _check_rows(name: str, rows: list[int], param: Any) -> None:
        if max(rows) >= param.shape[0]:
            raise UserError(f"{name}[{max(rows)}]: the parameter has {param.shape[0]} rows")

    @staticmethod
    def _zero_rows_hook(rows: Any) -> Any:
        def hook(grad: Any) -> Any:
            grad = grad.clone()
            grad[rows.to(grad.device)] = 0
            return grad

        return hook

    def restore(self) -> None:
        """Copy the frozen rows back (after each optimizer step)."""
        import torch

        with torch.no_grad():
            for n, param in self.params.items():
                param[self.rows[n].to(param.device)] = self.saved[n].to(param.device)

    def callback(self) -> Any:
        from transformers import TrainerCallback

        freezer = self

        class _Restore(TrainerCallback):
            def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                freezer.restore()

        return _Restore()


# --- New tokens ---------------------------------------------------------------------------------------------


def add_new_tokens(tokenizer: Any, model: Any, tokens: Sequence[str] | None) -> list[int]:
    """Add `tokens` to the tokenizer (those it does not know already); grow the embeddings only when the tokenizer
    outgrows them (T5 checkpoints have 32128 rows for 32100 tokens: never shrink), new rows at the mean of the
    existing ones (input and output embeddings). Returns the new tokens' ids. (The original called an undefined
    function here.)"""
    import torch

    import logging

    known = tokenizer.get_vocab()

    def is_known(token: str) -> bool:  # in the vocabulary, or already encoded as one token ("the" as "▁the")
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        return token in known or (len(ids) == 1 and ids[0] != tokenizer.unk_token_id)

    new = [t for t in dict.fromkeys(tokens or []) if not is_known(t)]
    kept = [t for t in dict.fromkeys(tokens or []) if t not in new]
    if kept:
        logging.getLogger(__name__).info("--add_new_tokens: %s already one token each; not added", ", ".join(kept))
    if not new:
        return []
    old_size = len(tokenizer)
    tokenizer.add_tokens(new)
    ids = tokenizer.convert_tokens_to_ids(new)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for embedding in Freezer._embeddings(model):
            weight = embedding.weight
            weight[ids] = weight[:old_size].mean(dim=0)  # the tokenizer's own rows, not the spare ones beyond it
    return ids
