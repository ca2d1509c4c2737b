"""``eventbus audit --plot``: metric curves with the decisions marked (needs matplotlib)."""

from __future__ import annotations

import os

from .audit import Audit
from .errors import ConfigError

__all__ = ["plot_audit"]

_COLORS = {"stop_training": "tab:red", "set_learning_rate": "tab:orange",
           "save_checkpoint": "tab:green", "restore_weights": "tab:purple",
           "snapshot_weights": "tab:gray"}


def plot_audit(result: Audit, path: str | os.PathLike[str]) -> None:
    """Draw every epoch metric (learning rate on its own axis) and a line per decision."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'eventbus[plot]'",
                          field="plot") from None
    metrics = {k: v for k, v in result.curves.items() if k != "learning_rate"}
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]})
    for name, points in sorted(metrics.items()):
        axes[0].plot([e for e, _ in points], [v for _, v in points], marker=".", label=name)
    axes[0].set_ylabel("metric")
    axes[0].legend(loc="best", fontsize="small")
    lr = result.curves.get("learning_rate")
    if lr:
        axes[1].step([e for e, _ in lr], [v for _, v in lr], where="post", color="tab:orange")
        axes[1].set_yscale("log")
    axes[1].set_ylabel("learning rate")
    axes[1].set_xlabel("epoch")
    seen = set()
    for d in result.decisions:
        if d.epoch is None or d.kind == "snapshot_weights":
            continue
        label = d.kind if d.kind not in seen else None
        seen.add(d.kind)
        for ax in axes:
            ax.axvline(d.epoch, color=_COLORS.get(d.kind, "black"), linestyle="--", alpha=0.6,
                       label=label if ax is axes[0] else None)
    axes[0].legend(loc="best", fontsize="small")
    title = f"run {result.header.run_id}"
    if result.stop is not None:
        title += f": stopped at epoch {result.stop.epoch} by {result.stop.source}"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
