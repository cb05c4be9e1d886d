"""One optimizer step of a tiny T5 with a toy loss term (L2 distance to reference weights), as a job that
tests/test_trainers.py runs in-process, in one process, or in two under torchrun.

    python tests/term_job.py OUT BATCH ACCUMULATION [--no_term | --kl] [--deepspeed CONFIG]

Rank 0 writes OUT/result.json: the first train log, the eval metrics, the term's value by hand before
and after the step, and every parameter's gradient at the step.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests.fixtures import tiny_t5, tiny_tokenizer  # noqa: E402

WEIGHT = 0.5  # the term's factor


class L2ToReference:
    """weight * sum of squared distances of every parameter to fixed reference weights: its gradient is
    2 * weight * (p - reference), whatever the batch."""

    name = "l2_to_reference"
    train_only = False

    def __init__(self, model: Any, weight: float = WEIGHT, seed: int = 1) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.weight = weight
        self.reference = {n: p.detach().clone() + 0.01 * torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()}

    def __call__(self, model: Any, inputs: dict[str, Any], outputs: Any) -> torch.Tensor:
        return self.weight * sum(((p - self.reference[n].to(p.device)) ** 2).sum() for n, p in model.named_parameters())

    def by_hand(self, model: Any) -> float:
        with torch.no_grad():
            return float(self(model, {}, None))


def rows(count: int = 8) -> list[dict[str, list[int]]]:
    """Examples whose label lengths differ, so that token weighting matters."""
    rng = np.random.default_rng(0)
    vocab = len(tiny_tokenizer())
    out = []
    for i in range(count):
        labels = rng.integers(3, vocab - 100, size=3 + 2 * i).tolist() + [1]
        out.append({"input_ids": rng.integers(3, vocab - 100, size=12).tolist() + [1], "labels": labels})
    return out


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(r["labels"]) for r in batch)
    labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])
    decoder_input_ids = torch.cat([torch.zeros(len(batch), 1, dtype=torch.long), labels[:, :-1].clamp(min=0)], dim=1)
    return {"input_ids": torch.tensor([r["input_ids"] for r in batch]), "labels": labels, "decoder_input_ids": decoder_input_ids}


def kl_term(seed: int = 0) -> Any:
    """losses.KLBaselineLoss against a different tiny T5 (seed 1, so that the KL and its gradient are not zero),
    over two KL datasets of the job's rows (4 and 3 examples a step, scaleby 2.5 and 1)."""
    from losses import KLBaselineLoss

    return KLBaselineLoss(tiny_t5(seed=1), [rows(8), rows(6)[::-1]], scaleby=[2.5, 1.0], examples_per_step=[4, 3],
                          collate=collate, seed=seed, batch_size=2)


def run(out: str, batch_size: int, accumulation: int, with_term: bool = True, deepspeed: str | None = None,
        kl: bool = False) -> dict[str, Any]:
    from transformers import TrainerCallback

    from trainer_arguments import ToolkitTrainingArguments
    from trainers import ToolkitTrainer

    grads: dict[str, list[float]] = {}

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            # Under DeepSpeed ZeRO the gradients live in its partitioned buffers, not in p.grad.
            grads.update({n: p.grad.detach().flatten().tolist() for n, p in model.named_parameters() if p.grad is not None})

    model = tiny_t5(seed=0)
    term = L2ToReference(model)
    terms = [kl_term()] if kl else [term] if with_term else []
    args = ToolkitTrainingArguments(
        output_dir=out, per_device_train_batch_size=batch_size, per_device_eval_batch_size=4,
        gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=1e-2, logging_steps=1, report_to="none",
        save_strategy="no", max_grad_norm=0.0, disable_tqdm=True, seed=0, deepspeed=deepspeed,
    )
    before = term.by_hand(model)
    trainer = ToolkitTrainer(model=model, args=args, train_dataset=rows(), eval_dataset=rows(), data_collator=collate,
                             loss_terms=terms, callbacks=[Capture()])
    trainer.train()
    metrics = trainer.evaluate()
    result = {
        "log": next(e for e in trainer.state.log_history if "loss" in e),
        "eval": metrics,
        "term_before": before,
        "term_after": term.by_hand(trainer.model),
        "grads": grads,
        "reference_gap": {n: (p.detach() - term.reference[n]).flatten().tolist() for n, p in tiny_t5(seed=0).named_parameters()},
        "trainer_class": type(trainer).__name__,
        "deepspeed": bool(trainer.is_deepspeed_enabled),
    }
    if trainer.is_world_process_zero():
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(result, f)
    return result


if __name__ == "__main__":
    out, batch, accumulation = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    config = sys.argv[sys.argv.index("--deepspeed") + 1] if "--deepspeed" in sys.argv else None
    run(out, batch, accumulation, with_term="--no_term" not in sys.argv, deepspeed=config, kl="--kl" in sys.argv)
