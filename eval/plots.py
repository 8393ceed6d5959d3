"""Plots people would rather look at than read: training curves."""

from __future__ import annotations

from pathlib import Path

from tandem.io import atomic_output


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    _pyplot().close(fig)
    return path


def plot_training_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training loss and validation NDCG@10 per epoch, on two axes, saved as PNG."""
    plt = _pyplot()
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
    handles = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax1.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize=8)
    ax1.set_title(title or "training")
    fig.tight_layout()
    return _save(fig, path)


def plot_policy_curves(policies: dict, path: str | Path, title: str = "") -> Path:
    """NDCG@10 against realised request ratio, one line per request policy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, rows in sorted(policies.items()):
        pts = sorted((r["request_ratio"], r["ndcg@10"]) for r in rows.values())
        style = {"linestyle": "--", "alpha": 0.6} if name in ("random", "always", "never") else {"linewidth": 2}
        ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker="o", label=name, **style)
    ax.set_xlabel("requests to the cloud (% of users)")
    ax.set_ylabel("test NDCG@10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "NDCG@10 against request ratio")
    fig.tight_layout()
    return _save(fig, path)


def plot_trials(trials: list[tuple[int, float]], path: str | Path, title: str = "") -> Path:
    """Validation NDCG@10 of each completed tuning trial (points) and the best so far (step line)."""
    plt = _pyplot()
    trials = sorted(trials)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    xs, ys = [t[0] for t in trials], [t[1] for t in trials]
    ax.scatter(xs, ys, color="tab:gray", s=18, label="trial")
    best, running = float("-inf"), []
    for y in ys:
        best = max(best, y)
        running.append(best)
    ax.step(xs, running, where="post", color="tab:blue", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("valid NDCG@10")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "tuning")
    fig.tight_layout()
    return _save(fig, path)


def plot_realtime(report: dict, path: str | Path, title: str = "") -> Path:
    """NDCG@10 per device method on the real-time positions, one horizontal bar each, labelled with its paired
    difference from the static SRM (mean over users) and its 95% bootstrap interval."""
    plt = _pyplot()
    given = list(report["methods"])  # static first, then the methods, then the nested ones; first on top
    names = sorted(given, key=lambda n: (n.endswith("_nested"), not n.startswith("static"), given.index(n)))[::-1]
    values = [report["methods"][n]["ndcg@10"] for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(names) + 1.2), dpi=110)
    colour = {"static": "tab:gray", "static_nested": "silver"}
    ax.barh(names, values, color=[colour.get(n, "tab:orange" if n.endswith("_nested") else "tab:blue")
                                  for n in names])
    base = report["methods"]["static"]["by_user"]["ndcg@10"]
    for i, n in enumerate(names):
        vs = report.get("vs_static", {}).get(n)
        if vs:
            lo, hi = vs["ci95"]
            ax.annotate(f" {vs['delta_ndcg@10']:+.4f} [{lo:+.4f}, {hi:+.4f}]", (values[i], i), va="center",
                        fontsize=7, fontweight="bold" if lo > 0 or hi < 0 else "normal")
    ax.set_xlim(0, max(values) * 1.6)
    ax.set_xlabel("NDCG@10 (mean over positions); label: user-mean difference from static [95% CI]")
    ax.set_title(title or f"real-time positions; user-mean static {base:.4f}", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return _save(fig, path)
