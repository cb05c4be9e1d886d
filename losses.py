"""Losses: the task loss every script trains with, and the interface of extra loss terms.

The task loss is a `compute_loss_func` (outputs, labels, num_items_in_batch); an extra term (a
regulariser, KL divergence to a frozen copy of the starting model) is a `LossTerm`, which sees the model,
the inputs and the outputs. `trainers.ToolkitTrainer` adds the terms to the task loss, keeps gradient
accumulation exact for all of them, and logs each under its own name.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
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


class KLBaselineLoss:
    """KL divergence of the model being trained from a frozen copy of the model it started from, on examples
    of separate "KL datasets": a loss term against catastrophic forgetting (Hawkins et al. 2020, "Investigating
    representations of verb bias in neural language models"; Wilson et al. 2023, TACL; the original finetune-lm
    toolkit's `KLBaselineLoss`).

    Every optimizer step draws `examples_per_step[d]` examples of each KL dataset d (without replacement, from
    a generator seeded by (seed, step, d): reproducible, and the same after a resume). At each target position
    (labels != -100; a causal LM's logits t are compared at the label t + 1) it takes KL(P_base || Q_model) in
    nats over the vocabulary; the mean over an example's positions, the mean over the step's examples, times
    `scaleby[d]`, then the mean over the datasets. Training only (`train_only`).

    Gradient accumulation stays exact: the k micro-batches of a step (on each of the w processes) split the
    step's examples between them (share j takes examples j, j + k w, ...), and each returns its share's sum / n
    times k w, which the Trainer divides by k and DDP's gradient averaging by w: the shares add up to the mean
    over all n, so 2 x 4 gives what 1 x 8 gives, and two processes what one gives. The frozen forward
    runs without autograd, under the Trainer's precision context. (The original zeroed the gradients every
    batch but stepped every k batches; and for T5 it dropped the labels, so the decoder had no inputs: here
    `collate` builds the decoder inputs.)
    """

    name = "kl_loss"
    train_only = True

    def __init__(self, base_model: Any, datasets: Sequence[Sequence[Mapping[str, Any]]], scaleby: Sequence[float],
                 examples_per_step: Sequence[int], collate: Callable[[list], dict[str, torch.Tensor]], seed: int = 0,
                 batch_size: int = 32, causal: bool = False) -> None:
        if not (len(datasets) == len(scaleby) == len(examples_per_step)):
            raise ValueError("one scaleby and one examples_per_step per KL dataset")
        for rows, n in zip(datasets, examples_per_step):
            if n > len(rows):
                raise ValueError(f"examples_per_step {n} is more than a KL dataset's {len(rows)} examples")
        self.base = base_model.eval().requires_grad_(False)
        self.datasets, self.scaleby, self.examples_per_step = list(datasets), list(scaleby), list(examples_per_step)
        self.collate, self.seed, self.batch_size, self.causal = collate, seed, batch_size, causal
        # (optimizer step, accumulation steps, process rank, process count): `bind` reads them from the Trainer.
        self.step_source: Callable[[], tuple[int, int, int, int]] = lambda: (self._step or 0, 1, 0, 1)
        self._step: int | None = None
        self._micro = 0

    def bind(self, trainer: Any) -> None:
        """Read the optimizer step and the accumulation steps from `trainer` (ToolkitTrainer calls this)."""
        self.base.to(trainer.args.device)
        args = trainer.args
        self.step_source = lambda: (trainer.state.global_step, trainer.current_gradient_accumulation_steps,
                                    args.process_index, args.world_size)

    def drawn(self, step: int, dataset: int) -> np.ndarray:
        """The indices of the examples of KL dataset `dataset` at optimizer step `step`."""
        rng = np.random.default_rng([self.seed, step, dataset])
        return rng.choice(len(self.datasets[dataset]), size=self.examples_per_step[dataset], replace=False)

    def __call__(self, model: Any, inputs: dict[str, Any], outputs: Any) -> torch.Tensor:
        step, k, rank, world = self.step_source()
        if step != self._step:
            self._step, self._micro = step, 0
        part, parts = rank * k + self._micro % k, k * world  # this micro-batch of this process: one share of the step
        self._micro += 1
        device = next(model.parameters()).device
        total = torch.zeros((), device=device)
        for d, rows in enumerate(self.datasets):
            picked = self.drawn(step, d)
            share = picked[part::parts]
            for start in range(0, len(share), self.batch_size):
                batch = self.collate([rows[i] for i in share[start : start + self.batch_size]])
                total = total + self.scaleby[d] * self.per_example(model, batch).sum() / len(picked)
        # The Trainer divides by k and DDP averages over the processes: the shares then add up to the step's mean.
        return total * parts / len(self.datasets)

    def per_example(self, model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Each example's mean KL(P_base || Q_model) over its target positions (nats)."""
        device = next(model.parameters()).device
        model_inputs = {key: value.to(device) for key, value in batch.items() if key != "labels"}
        labels = batch["labels"].to(device)
        with torch.no_grad():
            base_logits = self.base(**model_inputs).logits
        logits = model(**model_inputs).logits
        if self.causal:
            logits, base_logits, labels = logits[:, :-1], base_logits[:, :-1], labels[:, 1:]
        mask = labels.ne(-100)
        log_q = F.log_softmax(logits.float(), dim=-1)
        log_p = F.log_softmax(base_logits.float(), dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # per position
        return (kl * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
