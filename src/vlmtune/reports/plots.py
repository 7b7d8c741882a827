"""Charts for reports: loss curves and base-versus-fine-tuned metric bars (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers without a display
import matplotlib.pyplot as plt  # noqa: E402

from vlmtune.io import atomic_path  # noqa: E402


def loss_curve(train_log: list[dict], val_log: list[dict], path: Path) -> None:
    """Training loss per step and validation loss per evaluation, on one axis."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train_log:
        ax.plot([r["step_number"] for r in train_log], [r["training_loss"] for r in train_log], label="training loss", lw=1, alpha=0.8)
    if val_log:
        ax.plot([r["step_number"] for r in val_log], [r["validation_loss"] for r in val_log], "o-", label="validation loss", lw=2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (per assistant token)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Training and validation loss")
    _save(fig, path)


def metric_bars(series: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """Grouped bars: one group per metric, one bar per model (e.g. base, fine-tuned)."""
    names = list(next(iter(series.values())).keys())
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4), dpi=110)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(names))]
        bars = ax.bar(xs, [values[n] * 100 for n in names], width, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
