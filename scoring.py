"""Scoring with a model: label scoring (rank classification), and clf.py's yes/no score.

Label scoring picks the label whose tokens the model finds most likely.

Each candidate label is scored by the summed log-probability of its tokens, `</s>` included, given
the input (optionally divided by its token count, `length_normalize`); the best one wins, so the
prediction is always a valid label. All labels of a batch are scored in one batched decoder pass over
a shared encoder pass. This is T5's rank-classification evaluation (t5/evaluation: `rank_classification`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F


def label_token_ids(tokenizer: Any, labels: Sequence[str]) -> torch.Tensor:
    """(num_labels, max_len) token ids of each label word followed by `</s>`, padded with -100."""
    encoded = [tokenizer(label, add_special_tokens=True)["input_ids"] for label in labels]
    width = max(len(ids) for ids in encoded)
    return torch.tensor([ids + [-100] * (width - len(ids)) for ids in encoded], dtype=torch.long)


@torch.no_grad()
def score_labels(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    candidates: torch.Tensor,
    length_normalize: bool = False,
) -> torch.Tensor:
    """(batch, num_labels) log-probabilities of each candidate label for each input.

    `candidates` is `label_token_ids(...)`: every input is paired with every label in one decoder
    pass of batch x num_labels rows; the encoder runs once per input.
    """
    batch, num_labels = input_ids.shape[0], candidates.shape[0]
    candidates = candidates.to(input_ids.device)
    encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
    hidden = encoder_outputs.last_hidden_state.repeat_interleave(num_labels, dim=0)
    mask = attention_mask.repeat_interleave(num_labels, dim=0) if attention_mask is not None else None
    targets = candidates.repeat(batch, 1)  # row b * num_labels + j is label j for input b
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=targets)
    logits = model(
        encoder_outputs=(hidden,), attention_mask=mask, decoder_input_ids=decoder_input_ids, use_cache=False
    ).logits
    log_probs = F.log_softmax(logits.float(), dim=-1)
    valid = targets.ne(-100)
    token_scores = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    scores = token_scores.sum(-1)
    if length_normalize:
        scores = scores / valid.sum(-1)
    return scores.view(batch, num_labels)


@dataclass(frozen=True)
class YesNoHead:
    """The two logits read at the first decoder step: score = softmax([logit_yes, logit_no])[0].

    One job, in three Trainer hooks: `loss` is the `compute_loss_func`, `scores` the
    `preprocess_logits_for_metrics` (it keeps one number per example instead of the vocabulary's logits).
    """

    yes_id: int
    no_id: int

    def margin(self, logits: torch.Tensor) -> torch.Tensor:
        """logit_yes - logit_no at the first decoder step, in float32: the score is sigmoid(margin)."""
        return (logits[:, 0, self.yes_id] - logits[:, 0, self.no_id]).float()

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        """Cross-entropy between softmax([yes, no]) and (t, 1 - t), summed over the examples and divided by
        the examples of the whole optimizer step.

        That cross-entropy is binary cross-entropy on sigmoid(margin), computed from the margin for
        stability. Each example carries one label (its soft target, a (batch, 1) float), so the
        Trainer's `num_items_in_batch` (labels != -100 over all accumulated micro-batches) counts the
        examples of the step, and k micro-batches give the loss and gradient of one batch k times
        larger (HF #36331, #37766). Without it (evaluation) the batch mean.
        """
        import torch

        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        targets = labels.reshape(-1).to(device=logits.device, dtype=torch.float32)
        total = torch.nn.functional.binary_cross_entropy_with_logits(self.margin(logits), targets, reduction="sum")
        if num_items_in_batch is None:
            num_items_in_batch = targets.numel()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch

    def scores(self, logits: Any, labels: Any = None) -> torch.Tensor:
        """The score of each example (batch,); `logits` may come with the encoder's states in a tuple."""
        import torch

        return torch.sigmoid(self.margin(logits[0] if isinstance(logits, tuple) else logits))
