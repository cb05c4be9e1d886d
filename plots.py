"""The figures a run writes: the loss curve (every script), the reliability diagram (clf.py) and bias.py's charts.
Written through a uniquely named temporary file and a rename, so two runs never share a temp file."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence


def _save(fig: Any, path: str, close: bool = True) -> None:
    """Save `fig` to `path` atomically (a temporary file of its own in the same folder, then a rename); the
    format follows the file name."""
    import matplotlib.pyplot as plt

    from outputs import _umask

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=os.path.splitext(path)[1] or ".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from collaborators
        os.replace(tmp, path)
    finally:
        if close:
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


def plot_batch_losses(records: Sequence[dict[str, Any]], paths: Sequence[str]) -> None:
    """finetune_lm.py's `loss_curves`: every training batch's loss and each epoch's mean validation loss
    against the training batch count, one panel per loss (the task loss and each loss term), saved to each
    of `paths` (the original's .pdf and a .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["loss"] + [k for k in dict.fromkeys(k for r in records for k in r) if k not in ("loss", "dataset_type", "epoch", "batch_number", "seed")]
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 3.2 * len(names)), squeeze=False)
    train = [r for r in records if r["dataset_type"] == "train"]
    ends: dict[int, int] = {}  # epoch -> training batches seen when it ended
    for i, r in enumerate(train, start=1):
        ends[r["epoch"]] = i
    for ax, name in zip(axes[:, 0], names):
        points = [(i, r[name]) for i, r in enumerate(train, start=1) if r.get(name) is not None]
        if points:
            ax.plot(*zip(*points), label=f"train {name}", color="tab:blue", linewidth=0.8)
        by_epoch: dict[int, list[float]] = {}
        for r in records:
            if r["dataset_type"] == "validation" and r.get(name) is not None:
                by_epoch.setdefault(r["epoch"], []).append(r[name])
        validation = [(ends.get(epoch, 0), sum(v) / len(v)) for epoch, v in sorted(by_epoch.items())]
        if validation:
            ax.plot(*zip(*validation), "o-", label=f"validation {name} (epoch mean)", color="tab:orange")
        ax.set_xlabel("training batch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    for i, path in enumerate(paths):
        _save(fig, path, close=i == len(paths) - 1)


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


def plot_bias_bars(labels: Sequence[str], values: Sequence[float | None], ideal: float, title: str, path: str) -> None:
    """bias.py's chart: one bar per bias type (or kind / domain) with the ideal value as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(label, value) for label, value in zip(labels, values) if value is not None]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(shown) + 2), 4.5))
    ax.bar(range(len(shown)), [v for _, v in shown], color=["tab:gray" if "overall" in l else "tab:blue" for l, _ in shown])
    ax.axhline(ideal, color="tab:red", linestyle="--", label=f"ideal {ideal:g}")
    ax.set_xticks(range(len(shown)), [label for label, _ in shown], rotation=45, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_head_heatmap(values: Any, path: str, title: str) -> None:
    """A (layers, heads) array as a heatmap (bias.py's head importance), centred on 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.asarray(values, dtype=float)
    bound = float(np.abs(values).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * values.shape[1] + 2), max(3.0, 0.4 * values.shape[0] + 1.5)))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    _save(fig, path)
