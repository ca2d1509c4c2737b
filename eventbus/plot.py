"""``eventbus audit --plot``: metric curves with the decisions marked (needs matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path

from .audit import Audit, human_epoch
from .errors import ConfigError

__all__ = ["check_plot_path", "plot_audit", "require_matplotlib"]

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


def check_plot_path(path: str | os.PathLike[str], *, flag: str = "plot_audit: path") -> None:
    """Raise a ConfigError naming ``flag`` unless matplotlib can write an image at ``path``.

    Checked before the work, so that a bad path is one line, not a traceback or matplotlib's
    own words after the audit: matplotlib installed, an extension it writes (the format comes
    from the name), and an existing directory we may write in.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    target = Path(path)
    formats = sorted(Figure().canvas.get_supported_filetypes())
    extension = target.suffix[1:].lower()
    if extension not in formats:
        what = f"{target.suffix} is not an image format matplotlib writes" if extension else \
            "the name has no extension to say the image format"
        raise ConfigError(f"{flag} {path}: {what}; name a .png file (or one of "
                          f"{', '.join('.' + f for f in formats if f != 'png')})", field="plot")
    if target.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; name the image file to write",
                          field="plot")
    folder = target.parent
    if not folder.is_dir():
        why = f"{folder} is not a directory" if folder.exists() else \
            f"the directory {folder} does not exist"
        raise ConfigError(f"{flag} {path}: {why}", field="plot")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists()
                                                    and not os.access(target, os.W_OK)):
        raise ConfigError(f"{flag} {path}: no permission to write it", field="plot")


def plot_audit(result: Audit, path: str | os.PathLike[str]) -> None:
    """Draw every epoch metric (learning rate on its own axis) and a line per decision."""
    check_plot_path(path)
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
        title += f": stopped at epoch {human_epoch(result.stop.epoch)} by {result.stop.source}"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
