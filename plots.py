"""The figures a run writes: the loss curve (every script) and the reliability diagram (clf.py).
Written through a uniquely named temporary file and a rename, so two runs never share a temp file."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence


def _save(fig: Any, path: str) -> None:
    """Save `fig` to `path` atomically (a temporary file of its own in the same folder, then a rename)."""
    import matplotlib.pyplot as plt

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot_loss_curve(log_history: list[dict[str, Any]], path: str) -> None:
    """Training and evaluation loss against the step, from the Trainer's `state.log_history`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per label token")
    ax.set_yscale("log")
    ax.set_title(os.path.basename(os.path.dirname(os.path.abspath(path))) or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_reliability_diagram(scores: Sequence[float], targets: Sequence[float], path: str, num_bins: int = 10) -> None:
    """Mean target against mean score in equal-width score bins (the ECE's bins), with the bin sizes below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from metrics import calibration_bins, expected_calibration_error

    counts, mean_scores, mean_targets = calibration_bins(scores, targets, num_bins)
    filled = counts > 0
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    top.plot(mean_scores[filled], mean_targets[filled], "o-", color="tab:blue", label="mean target per bin")
    top.set_ylabel("mean target")
    top.set_ylim(0, 1)
    top.set_title(f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}: "
                  f"ECE {expected_calibration_error(scores, targets, num_bins):.3f} ({len(scores)} records)")
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    bottom.bar(edges[:-1], counts, width=1.0 / num_bins, align="edge", color="tab:gray", edgecolor="white")
    bottom.set_xlabel("score (predicted P(yes))")
    bottom.set_ylabel("records")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    _save(fig, path)
