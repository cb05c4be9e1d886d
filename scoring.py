"""Label scoring (rank classification): pick the label whose tokens the model finds most likely.

Each candidate label is scored by the summed log-probability of its tokens, `</s>` included, given
the input (optionally divided by its token count, `length_normalize`); the best one wins, so the
prediction is always a valid label. All labels of a batch are scored in one batched decoder pass over
a shared encoder pass. This is T5's rank-classification evaluation (t5/evaluation: `rank_classification`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from transformers import Seq2SeqTrainer

from training import ExactEvalMixin


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


class ExactSeq2SeqTrainer(ExactEvalMixin, Seq2SeqTrainer):
    """A Seq2SeqTrainer whose evaluation counts each example once under several processes."""


class LabelScoringTrainer(ExactSeq2SeqTrainer):
    """A Seq2SeqTrainer whose evaluation predictions are label scores instead of generated tokens.

    `prediction_step` returns (teacher-forced loss on the reference, scores (batch, num_labels),
    reference label ids); everything else is the Seq2SeqTrainer's.
    """

    def __init__(self, *args: Any, candidates: torch.Tensor, length_normalize: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.candidates = candidates
        self.length_normalize = length_normalize

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        loss = None
        if labels is not None:
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.compute_loss(model, dict(inputs)).detach()
        if prediction_loss_only:
            return loss, None, None
        with self.compute_loss_context_manager():
            scores = score_labels(  # the bare model: a DDP wrapper has no get_encoder()
                self.accelerator.unwrap_model(model), inputs["input_ids"], inputs.get("attention_mask"),
                self.candidates, self.length_normalize,
            )
        return loss, scores, labels


class SamplingSeq2SeqTrainer(Seq2SeqTrainer):
    """A Seq2SeqTrainer whose evaluation adds sampled-completion metrics to the eval loss (seq2seq.py).

    `sampler` (seq2seq.CompletionSampler) has the eval `records`, an `evaluate(trainer)` that samples
    and scores them, and keeps the merged metrics in `last_metrics`.

    `evaluation_loop` computes the loss as usual, then samples; the metrics are merged before the
    Trainer logs them, so W&B, callbacks and `metric_for_best_model` see `eval_exact_match` etc.
    """

    def __init__(self, *args: Any, sampler: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sampler = sampler

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> Any:
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=True,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if metric_key_prefix == "eval" and self.sampler.records:
            sampled = self.sampler.evaluate(self)
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in sampled.items()})
            self.sampler.last_metrics = dict(output.metrics)
        return output
