"""Plots people would rather look at than read: training curves."""

from __future__ import annotations

from pathlib import Path

from tandem.io import atomic_output


def plot_training_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training loss and validation NDCG@10 per epoch, on two axes, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax1.plot(epochs, [h["loss"] for h in history], color="tab:gray", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss (CE)")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [h.get("valid_ndcg@10", float("nan")) for h in history], color="tab:blue", marker=".",
             label="valid NDCG@10")
    ax2.set_ylabel("valid NDCG@10")
    best = max(history, key=lambda h: h.get("valid_ndcg@10", -1))
    ax2.axvline(best["epoch"], color="tab:blue", alpha=0.3, linestyle="--")
    fig.legend(loc="lower right", fontsize=8)
    ax1.set_title(title or "training")
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
