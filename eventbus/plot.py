"""``eventbus audit --plot``: metric curves with the decisions marked (needs matplotlib)."""

from __future__ import annotations

import os

from .audit import Audit, _ep
from .errors import ConfigError

__all__ = ["plot_audit", "require_matplotlib"]

_COLORS = {"stop_training": "tab:red", "set_learning_rate": "tab:orange",
           "save_checkpoint": "tab:green", "restore_weights": "tab:purple",
           "snapshot_weights": "tab:gray"}


def require_matplotlib() -> None:
    """Raise a ConfigError saying how to install matplotlib when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'eventbus[plot]'",
                          field="plot") from None


def plot_audit(result: Audit, path: str | os.PathLike[str]) -> None:
    """Draw every epoch metric (learning rate on its own axis) and a line per decision."""
    require_matplotlib()
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # Epochs drawn 1-based, as the audit text, the progress bar and Keras's messages count them.
    metrics = {k: v for k, v in result.curves.items() if k != "learning_rate"}
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]})
    for name, points in sorted(metrics.items()):
        axes[0].plot([e + 1 for e, _ in points], [v for _, v in points], marker=".", label=name)
    axes[0].set_ylabel("metric")
    lr = result.curves.get("learning_rate")
    if lr:
        axes[1].step([e + 1 for e, _ in lr], [v for _, v in lr], where="post", color="tab:orange")
        axes[1].set_yscale("log")
    axes[1].set_ylabel("learning rate")
    axes[1].set_xlabel("epoch")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    seen = set()
    for d in result.decisions:
        if d.epoch is None or d.kind == "snapshot_weights":
            continue
        label = d.kind if d.kind not in seen else None
        seen.add(d.kind)
        for ax in axes:
            ax.axvline(d.epoch + 1, color=_COLORS.get(d.kind, "black"), linestyle="--", alpha=0.6,
                       label=label if ax is axes[0] else None)
    axes[0].legend(loc="best", fontsize="small")
    title = f"run {result.header.run_id}"
    if result.stop is not None:
        title += f": stopped at epoch {_ep(result.stop.epoch)} by {result.stop.source}"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
