"""Losses: the task loss every script trains with, and the interface of extra loss terms.

The task loss is a `compute_loss_func` (outputs, labels, num_items_in_batch); an extra term (a
regulariser, KL divergence to a frozen copy of the starting model) is a `LossTerm`, which sees the model,
the inputs and the outputs. `trainers.ToolkitTrainer` adds the terms to the task loss, keeps gradient
accumulation exact for all of them, and logs each under its own name.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


class LossTerm(Protocol):
    """An extra loss term: `loss = task loss + sum(term(model, inputs, outputs))`.

    `__call__` gets the bare model (not a DDP wrapper) and returns the term's value for one micro-batch
    as a mean over that micro-batch (a scalar tensor connected to the model's parameters); the Trainer divides it by the gradient accumulation
    steps, so k equal micro-batches give the gradient of one batch k times larger. Under several
    processes each computes its own micro-batch's mean and DDP averages the gradients: the term's
    gradient is that of the global mean. `name` is the key it is logged under (train logs, and
    `eval_<name>` in evaluation unless `train_only`).
    """

    name: str
    train_only: bool

    def __call__(self, model: Any, inputs: dict[str, Any], outputs: Any) -> torch.Tensor: ...


def token_weighted_cross_entropy(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None,
                                 shift_labels: bool = False) -> torch.Tensor:
    """Cross-entropy summed over label tokens and divided by the label tokens of the whole step.

    The toolkit's task loss (the Trainer's `compute_loss_func`). With gradient accumulation the Trainer
    counts the label tokens of all k micro-batches (`num_items_in_batch`), so k micro-batches give the
    same loss and gradient as one batch k times larger, token-weighted. transformers 5.23 gets this
    wrong for T5 by itself: T5's `forward` takes **kwargs, so the Trainer skips dividing by the
    accumulation steps while T5 returns a per-batch mean, and loss and gradient come out k times too
    large. `shift_labels`: a causal LM's logits at position t predict the label at t + 1 (the Trainer
    then counts `labels[..., 1:]`).
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    labels = labels.to(logits.device)
    if shift_labels:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    total = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum")
    if num_items_in_batch is None:  # evaluation, or a caller that did not count: the batch mean
        num_items_in_batch = labels.ne(-100).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def causal_cross_entropy(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """`token_weighted_cross_entropy` for causal LMs (labels shifted by one)."""
    return token_weighted_cross_entropy(outputs, labels, num_items_in_batch, shift_labels=True)
