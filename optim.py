"""T5's optimizer: Adafactor with fewer passes over memory than transformers' (same arguments, state, results).

Adafactor (Shazeer & Stern 2018) as T5 trained with it and transformers implements it (after fairseq):
factored second moments for matrices, update clipping at RMS 1, and with `scale_parameter` the step
scaled by the parameter's RMS (mesh-TF's `multiply_by_parameter_scale`). transformers' `step` allocates
three parameter-sized temporaries per matrix (grad**2, the outer product of the factors, -update) and
makes about 20 passes over them; on a CPU a fresh 64 MB tensor costs ~15-20 ms of page faults alone,
and the step took 0.26-0.34 s of a 2-3.4 s T5-small step (batch 4 x 512). This `step` computes the same
update in one reused scratch buffer with about 9 passes: grad**2 and then the update are written into
the buffer, and the learning rate, parameter scale and clipping factor reach the parameter in a single
`addcmul_`. State keys and values are transformers', so checkpoints move freely between the two
(`tests/test_pretrain.py` checks they agree to float rounding over several steps).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from transformers.optimization import Adafactor

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _rms(tensor: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(tensor) / math.sqrt(tensor.numel())


class T5Adafactor(Adafactor):
    """transformers' `Adafactor` with a faster `step`; see the module docstring."""

    def _scratch(self, like: torch.Tensor) -> torch.Tensor:
        """A buffer shaped like `like`, reused across parameters and steps (one per device and dtype)."""
        buffers = self.__dict__.setdefault("_scratch_buffers", {})
        key = (like.device, like.dtype)
        if key not in buffers or buffers[key].numel() < like.numel():
            buffers[key] = torch.empty(like.numel(), device=like.device, dtype=like.dtype)
        return buffers[key][: like.numel()].view(like.shape)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad = p.grad.float() if p.grad.dtype in _LOW_PRECISION else p.grad
        if grad.is_sparse:
            raise RuntimeError("Adafactor does not support sparse gradients.")
        state = self.state[p]
        factored, use_first_moment = self._get_options(group, grad.shape)
        if not state:
            state["step"] = 0
            if use_first_moment:
                state["exp_avg"] = torch.zeros_like(grad)
            if factored:
                state["exp_avg_sq_row"] = torch.zeros(grad.shape[:-1]).to(grad)
                state["exp_avg_sq_col"] = torch.zeros(grad.shape[:-2] + grad.shape[-1:]).to(grad)
            else:
                state["exp_avg_sq"] = torch.zeros_like(grad)
            state["RMS"] = 0
        else:  # a loaded state may sit on another device or in another dtype
            for key in ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq"):
                if key in state:
                    state[key] = state[key].to(grad)

        param = p.float() if p.dtype in _LOW_PRECISION else p
        state["step"] += 1
        state["RMS"] = _rms(param)
        lr = self._get_lr(group, state)  # the step size times max(eps2, the parameter's RMS)
        beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])
        eps1 = group["eps"][0]

        if factored:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            squared = torch.mul(grad, grad, out=self._scratch(grad))
            row.mul_(beta2t).add_(squared.mean(dim=-1).add_(eps1), alpha=1.0 - beta2t)
            col.mul_(beta2t).add_(squared.mean(dim=-2).add_(eps1), alpha=1.0 - beta2t)
            row_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
            col_factor = col.rsqrt().unsqueeze(-2)
            update = torch.mul(grad, row_factor, out=squared)  # grad**2 is used up
            update.mul_(col_factor)
        else:
            exp_avg_sq = state["exp_avg_sq"]
            exp_avg_sq.mul_(beta2t).addcmul_(grad, grad, value=1.0 - beta2t).add_(eps1 * (1.0 - beta2t))
            update = exp_avg_sq.rsqrt().mul_(grad)

        # Clip the update at RMS `clip_threshold`, then scale by lr: one factor, applied once.
        scale = lr / (_rms(update) / group["clip_threshold"]).clamp_(min=1.0)
        if use_first_moment:
            exp_avg = state["exp_avg"]
            exp_avg.mul_(group["beta1"]).add_(update.mul_(scale), alpha=1.0 - group["beta1"])
            update, scale = exp_avg, torch.ones((), device=grad.device)
        if group["weight_decay"] != 0:
            param.mul_(1.0 - group["weight_decay"] * lr)
        param.addcmul_(update, torch.as_tensor(scale, device=update.device, dtype=update.dtype), value=-1.0)
        if p.dtype in _LOW_PRECISION:
            p.copy_(param)
