"""losses.KLBaselineLoss: zero while the model is its base, positive once it moves, its gradient as computed
by hand, exact under gradient accumulation and under DDP on 2 CPU processes, for causal, masked and T5 models."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from absl.testing import absltest, parameterized

from tests.fixtures import generated_corpus, tiny_lm, tiny_lm_tokenizer
from tests.term_job import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def flat(grads: dict[str, list[float]]) -> np.ndarray:
    return np.concatenate([np.asarray(grads[n]) for n in sorted(grads)])


def kl_rows(kind: str, count: int = 6) -> list[dict[str, Any]]:
    """Examples as finetune_lm.py builds them: BOS + text for GPT-2, the text with every third token masked for
    BERT (labels there only), the text its own target for T5."""
    tokenizer = tiny_lm_tokenizer(kind)
    rows = []
    for text in generated_corpus(count, seed=5):
        ids = tokenizer(text)["input_ids"][:16]
        if kind == "gpt2":
            rows.append({"input_ids": [tokenizer.bos_token_id] + ids, "labels": [tokenizer.bos_token_id] + ids})
        elif kind == "bert":
            labels = [t if i % 3 == 1 else -100 for i, t in enumerate(ids)]
            rows.append({"input_ids": [tokenizer.mask_token_id if i % 3 == 1 else t for i, t in enumerate(ids)], "labels": labels})
        else:
            rows.append({"input_ids": ids, "labels": ids})
    return rows


def kl_term(model: Any, kind: str, base: Any = None) -> Any:
    from data_collators import LMCollator
    from losses import KLBaselineLoss

    tokenizer = tiny_lm_tokenizer(kind)
    start = model.config.decoder_start_token_id if kind == "t5" else None
    collate = LMCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0, decoder_start_token_id=start)
    return KLBaselineLoss(base if base is not None else copy.deepcopy(model), [kl_rows(kind)], scaleby=[2.5], examples_per_step=[4],
                          collate=collate, seed=0, batch_size=3, causal=kind == "gpt2")


class KLByModelTypeTest(parameterized.TestCase):
    @parameterized.parameters("gpt2", "bert", "t5")
    def test_zero_at_the_start_positive_once_the_model_moves(self, kind: str) -> None:
        model = tiny_lm(kind, seed=0)
        term = kl_term(model, kind)
        value = term(model, {}, None)
        value.backward()
        self.assertLess(abs(value.item()), 1e-6)
        self.assertLess(max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None), 1e-6)
        with torch.no_grad():  # the model moves away from its base
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        moved = term(model, {}, None)
        self.assertGreater(moved.item(), 1e-4)
        self.assertFalse(any(p.requires_grad for p in term.base.parameters()))

    def test_the_draw_is_the_steps_and_repeatable(self) -> None:
        term = kl_term(tiny_lm("gpt2"), "gpt2")
        self.assertEqual(term.drawn(3, 0).tolist(), term.drawn(3, 0).tolist())
        self.assertNotEqual(term.drawn(3, 0).tolist(), term.drawn(4, 0).tolist())
        self.assertLen(set(term.drawn(3, 0).tolist()), 4)


class KLGradientByHandTest(absltest.TestCase):
    def test_gradient_is_scaled_q_minus_p_at_label_positions(self) -> None:
        """d KL(P || Q) / d logits_q = softmax(logits_q) - P, averaged over an example's label positions, then
        over the step's examples, times scaleby: checked on a "model" whose logits are a parameter."""
        from losses import KLBaselineLoss

        torch.manual_seed(0)
        n, length, vocab = 4, 5, 7

        class Logits(torch.nn.Module):
            def __init__(self, values: torch.Tensor) -> None:
                super().__init__()
                self.values = torch.nn.Parameter(values)

            def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
                return SimpleNamespace(logits=self.values[input_ids[:, 0]])

        model, base = Logits(torch.randn(n, length, vocab)), Logits(torch.randn(n, length, vocab))
        labels = torch.tensor([[1, 2, -100, -100, -100], [3, 3, 3, 3, 3], [-100, 4, -100, 4, -100], [5, 6, 0, -100, -100]])
        rows = [{"input_ids": [i], "labels": labels[i].tolist()} for i in range(n)]

        def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
            return {"input_ids": torch.tensor([r["input_ids"] for r in batch]), "labels": torch.tensor([r["labels"] for r in batch])}

        term = KLBaselineLoss(base, [rows], scaleby=[2.5], examples_per_step=[n], collate=collate, batch_size=3)
        value = term(model, {}, None)
        value.backward()
        p = torch.softmax(base.values.detach().double(), -1)
        q = torch.softmax(model.values.detach().double(), -1)
        mask = (labels != -100).double()
        positions = mask.sum(1, keepdim=True)
        expected_value = 2.5 * ((p * (p.log() - q.log())).sum(-1) * mask / positions).sum() / n
        expected_grad = 2.5 * (q - p) * (mask / positions)[..., None] / n
        self.assertAlmostEqual(value.item(), expected_value.item(), places=5)
        np.testing.assert_allclose(model.values.grad.double().numpy(), expected_grad.numpy(), atol=1e-6)


class KLAccumulationAndDDPTest(absltest.TestCase):
    """One optimizer step of tests/term_job.py's tiny T5 with the KL term (against another tiny T5, two KL
    datasets): 2 x 4 accumulated and 2 processes x 4 give the gradient of 1 x 8."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.one_by_eight = run(os.path.join(cls.tmp, "1x8"), 8, 1, kl=True)
        cls.without = run(os.path.join(cls.tmp, "none"), 8, 1, with_term=False)

    def test_the_term_is_logged_and_adds_to_the_gradient(self) -> None:
        log = self.one_by_eight["log"]
        self.assertGreater(log["kl_loss"], 0.01)
        self.assertAlmostEqual(log["loss"] - log["kl_loss"], self.without["log"]["loss"], places=5)
        self.assertNotIn("eval_kl_loss", self.one_by_eight["eval"])  # training only
        self.assertGreater(np.abs(flat(self.one_by_eight["grads"]) - flat(self.without["grads"])).max(), 1e-5)

    def test_two_by_four_equals_one_by_eight(self) -> None:
        two_by_four = run(os.path.join(self.tmp, "2x4"), 4, 2, kl=True)
        np.testing.assert_allclose(flat(two_by_four["grads"]), flat(self.one_by_eight["grads"]), rtol=1e-4, atol=1e-7)
        self.assertAlmostEqual(two_by_four["log"]["kl_loss"], self.one_by_eight["log"]["kl_loss"], places=5)

    def test_two_processes_equal_one(self) -> None:
        """Two forwards (the task's through DDP, the term's through the bare model) before one backward."""
        out = os.path.join(self.tmp, "ddp")
        proc = subprocess.run(
            [os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", "--master_port", "29543",
             os.path.join(ROOT, "tests", "term_job.py"), out, "4", "1", "--kl"],
            capture_output=True, text=True, cwd=ROOT, timeout=600,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        with open(os.path.join(out, "result.json")) as f:
            ddp = json.load(f)
        self.assertAlmostEqual(ddp["log"]["kl_loss"], self.one_by_eight["log"]["kl_loss"], places=4)
        np.testing.assert_allclose(flat(ddp["grads"]), flat(self.one_by_eight["grads"]), rtol=1e-3, atol=1e-6)


if __name__ == "__main__":
    absltest.main()
