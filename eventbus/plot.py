"""``eventbus audit --plot``: metric curves with the decisions marked (needs matplotlib).

One panel per family of metric (losses; accuracies and other metrics; the learning rate), so
that a loss near 0.6 and an accuracy near 0.6 do not share an axis by accident. Epochs are
drawn counted from 1, as the audit text and Keras count them: epoch k's metrics at x = k, the
end of its span (k-1, k]. A decision is a dashed line at the epoch it was made; the
learning-rate steps there too, since the rate it sets is the rate of the epochs after it.

What is drawn is computed first, as plain data (:func:`plot_data`), so it can be checked without
reading pixels; :func:`figure_of` draws it and :func:`plot_audit` writes the image.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audit import MOST_CURVES, Audit, human_epoch
from .errors import ConfigError
from .outputs import refuse_special, write_replacing

__all__ = ["DEFERRED_STOP", "Best", "Curve", "Mark", "Panel", "PlotData", "check_plot_path",
           "figure_of", "learning_rate_steps", "plot_audit", "plot_data", "require_matplotlib"]

#: A stop the loop deferred is drawn apart from the one it acted on (see Audit.deferred_stops).
DEFERRED_STOP = "stop_training (deferred)"
_COLORS = {"stop_training": "tab:red", DEFERRED_STOP: "lightcoral",
           "set_learning_rate": "tab:orange", "save_checkpoint": "tab:green",
           "restore_weights": "tab:purple"}
#: Curves in colours no decision line has.
_CURVE_COLORS = ("tab:blue", "tab:cyan", "tab:brown", "tab:olive", "tab:pink", "tab:gray",
                 "black", "navy")
#: Short names for the labels above the top panel, where several decisions share an epoch.
_SHORT = {"stop_training": "stop", DEFERRED_STOP: "stop asked", "set_learning_rate": "lr",
          "save_checkpoint": "ckpt", "restore_weights": "restore"}
#: How far apart (in epochs) the lines of several decisions at one epoch are drawn.
_SPREAD = 0.14
_LEARNING_RATE = ("learning_rate", "lr")
#: More marks than this and only the telling ones are labelled (see figure_of).
_MOST_LABELS = 40
#: Characters of a curve's name, and of the run id and a stop's source in the title: names of
#: megabytes draw in seconds and read (and at most ``audit.MOST_CURVES`` curves a panel).
_LONGEST_NAME = 60
_BIG = 1e300


@dataclass
class Curve:
    name: str
    x: list[int]  # epochs counted from 1
    y: list[float]


@dataclass
class Panel:
    family: str  # "losses", "metrics" or "learning rate"
    curves: list[Curve]
    log_scale: bool = False
    #: For the learning rate: drawn as steps, ``y[i]`` holding from ``x[i]`` to ``x[i + 1]``.
    steps: bool = False
    #: Curves of this family left out (beyond ``MOST_CURVES``), said in the panel's label.
    left_out: int = 0


@dataclass
class Mark:
    """The decisions made at one epoch: one line per kind, spread so none hides another."""

    epoch: int  # counted from 1
    kinds: list[str]
    offsets: list[float]
    label: str


@dataclass
class Best:
    """A monitored metric's best value, and whether the run restored that epoch's weights."""

    name: str
    epoch: int  # counted from 1
    value: float
    restored: bool


@dataclass
class PlotData:
    title: str
    panels: list[Panel] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    best: list[Best] = field(default_factory=list)
    #: Epochs (counted from 1) whose weights a restore_weights decision put back.
    restored_epochs: list[int] = field(default_factory=list)


def _drawable(value: float) -> float:
    """``value`` within +-1e300: beyond, matplotlib's transforms overflow (values of 1e308
    end the plot with "Singular matrix"); drawn at the edge instead."""
    return max(-_BIG, min(value, _BIG)) if math.isfinite(value) else value


def _short(name: str) -> str:
    return name if len(name) <= _LONGEST_NAME else name[:_LONGEST_NAME - 1] + "\u2026"


def _family(name: str) -> str:
    return "losses" if "loss" in name.lower() else "metrics"


def _numeric(points: list[tuple[int, Any]]) -> bool:
    """A curve of one number an epoch: a metric of several values (a list) is not drawn."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in points)


def learning_rate_steps(result: Audit) -> tuple[list[int], list[float]] | None:
    """The learning rate as steps: ``(x, y)``, ``y[i]`` the rate from ``x[i]`` to ``x[i+1]``.

    Epoch k (counted from 1) trains over (k-1, k], so the rate it logged holds from k-1; a cut
    decided at the end of epoch k holds from k, where its decision line is. The rate set by the
    last epoch's decisions, which no epoch logged, is the last step. Without a logged rate the
    steps come from the decisions alone (a change the model refused is no step).
    """
    applied = [d for d in result.lr_changes if d.epoch is not None
               and result.refused_by_model(d) is None]
    logged = next((result.curves[n] for n in _LEARNING_RATE if n in result.curves), None)
    if logged and _numeric(logged):
        x = [epoch for epoch, _ in logged]
        y = [float(v) for _, v in logged]
        last = logged[-1][0]
        after = [d.value for d in applied if d.epoch == last]
        x.append(last + 1)
        y.append(float(after[-1]) if after else y[-1])
        return x, y
    if not applied:
        return None
    x, y = [0], [float(applied[0].previous)]
    for d in applied:
        x.append(d.epoch + 1)  # type: ignore[operator]
        y.append(float(d.value))
    end = (result.last_epoch if result.last_epoch is not None else x[-1] - 1) + 1
    if end > x[-1]:
        x.append(end)
        y.append(y[-1])
    return x, y


def _marks(result: Audit) -> list[Mark]:
    deferred = {id(d) for d in result.deferred_stops}
    by_epoch: dict[int, list[str]] = {}
    for d in result.decisions:
        if d.epoch is None or d.kind == "snapshot_weights":  # a snapshot changes nothing
            continue
        kind = DEFERRED_STOP if id(d) in deferred else d.kind
        kinds = by_epoch.setdefault(d.epoch + 1, [])
        if kind not in kinds:
            kinds.append(kind)
    marks = []
    for epoch, kinds in sorted(by_epoch.items()):
        middle = (len(kinds) - 1) / 2
        marks.append(Mark(epoch, kinds, [(i - middle) * _SPREAD for i in range(len(kinds))],
                          ", ".join(_SHORT.get(k, k) for k in kinds)))
    return marks


def _restored(result: Audit) -> list[int]:
    epochs: dict[int, None] = {}  # ordered, each once (a log may name thousands)
    for d in result.decisions:
        best = d.evidence.get("best_epoch") if d.kind == "restore_weights" else None
        if isinstance(best, int) and not isinstance(best, bool):
            epochs[best + 1] = None
    return list(epochs)


def _title(result: Audit) -> str:
    # The run id and a stop's source come from the log, as metric names do, and are cut as
    # they are: matplotlib lays a title out glyph by glyph (100 KB of source took 24 s).
    title = f"run {_short(result.header.run_id)}"
    planned = f" of {result.planned_epochs}" if result.planned_epochs else ""
    if result.stop is not None:
        title += (f": stopped at epoch {human_epoch(result.stop.epoch)}{planned} by "
                  f"{_short(result.stop.source)}")
    elif result.ended == "completed":
        title += f": completed, {result.epochs_run} epoch(s){planned}"
    elif result.ended == "incomplete":
        title += f": no train_end after epoch {human_epoch(result.last_epoch)}"
    if result.deferred_stops:
        first = result.deferred_stops[0]
        title += (f" (a stop {_short(first.source)} asked at epoch {human_epoch(first.epoch)} "
                  "was deferred)")
    return title


def plot_data(result: Audit) -> PlotData:
    """What :func:`figure_of` draws for ``result``: panels, decision marks, best epochs."""
    data = PlotData(title=_title(result))
    families: dict[str, list[Curve]] = {"losses": [], "metrics": []}
    for name, points in sorted(result.curves.items()):
        if name in _LEARNING_RATE or not points or not _numeric(points):
            continue
        families[_family(name)].append(Curve(name, [e + 1 for e, _ in points],
                                             [_drawable(float(v)) for _, v in points]))
    monitored = {m.name for m in result.monitors}
    for family, curves in families.items():
        if curves:
            curves.sort(key=lambda c: c.name not in monitored)  # stable: by name within
            data.panels.append(Panel(family, curves[:MOST_CURVES],
                                     left_out=max(len(curves) - MOST_CURVES, 0)))
    steps = learning_rate_steps(result)
    if steps is not None:
        x, y = steps
        positive = all(v > 0 and math.isfinite(v) for v in y)
        data.panels.append(Panel("learning rate", [Curve("learning_rate", x, y)],
                                 log_scale=positive, steps=True))
    data.marks = _marks(result)
    data.restored_epochs = _restored(result)
    for m in result.monitors:
        if m.best_epoch is None or m.best is None or m.name not in result.curves:
            continue
        data.best.append(Best(m.name, m.best_epoch + 1, float(m.best),
                              m.best_epoch + 1 in data.restored_epochs))
    return data


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
    refuse_special(target, flag)


def figure_of(result: Audit) -> Any:
    """The matplotlib Figure of :func:`plot_data` (``require_matplotlib`` first). Its text
    comes from the log (metric names, sources, the run id): drawn as it is, never read as
    matplotlib's math (``$\\undefined$`` would fail the plot, ``a$b$`` draw as a formula)."""
    import matplotlib.pyplot as plt

    with plt.rc_context({"text.parse_math": False}):
        return _figure(result)


def _figure(result: Audit) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    data = plot_data(result)
    panels = data.panels or [Panel("metrics", [])]
    ratios = [1.2 if p.family == "learning rate" else 2.5 for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.2 + 2.2 * len(panels)),
                             sharex=True, squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": ratios})
    axes = [row[0] for row in axes]
    colors: dict[str, int] = {}
    for ax, panel in zip(axes, panels):
        for curve in panel.curves:
            if panel.steps:
                # Half an epoch past the last step, so the rate the last decisions set shows.
                ax.step(curve.x + [curve.x[-1] + 0.5], curve.y + [curve.y[-1]], where="post",
                        color="tab:blue", label="learning rate")
            else:
                ax.plot(curve.x, curve.y, marker=".", label=_short(curve.name),
                        color=_CURVE_COLORS[colors.setdefault(curve.name, len(colors))
                                            % len(_CURVE_COLORS)])
        if panel.log_scale:
            ax.set_yscale("log")
        ax.set_ylabel(panel.family + (f"\n({panel.left_out} more not drawn)"
                                      if panel.left_out else ""))
        ax.grid(True, alpha=0.25)
    by_panel = {p.family: ax for p, ax in zip(panels, axes)}
    for best in data.best:
        ax = by_panel.get(_family(best.name))
        if ax is None:
            continue
        what = f"best {_short(best.name)}, epoch {best.epoch}" + (
            ": weights restored" if best.restored else "")
        ax.plot([best.epoch], [best.value], marker="*", markersize=16, color="gold",
                markeredgecolor="black", linestyle="none", label=what, zorder=5)
    # One collection of spans a panel, as for the decisions' lines below: a patch per restored
    # epoch cost matplotlib 7 ms each, and a log can name thousands.
    spans = [(epoch - 0.5, 1.0) for epoch in data.restored_epochs]
    if spans:
        for ax in axes:
            ax.broken_barh(spans, (0, 1), transform=ax.get_xaxis_transform(), color="gold",
                           alpha=0.15, zorder=0)
    # One collection of lines per kind and panel, not an artist per decision: a log of a
    # decision every epoch, thousands of them, cost matplotlib seconds and hundreds of MB.
    at: dict[str, list[float]] = {}
    for mark in data.marks:
        for kind, offset in zip(mark.kinds, mark.offsets):
            at.setdefault(kind, []).append(mark.epoch + offset)
    for kind, xs in at.items():
        for ax in axes:
            ax.vlines(xs, 0, 1, transform=ax.get_xaxis_transform(),
                      colors=_COLORS.get(kind, "black"),
                      linestyles=":" if kind == DEFERRED_STOP else "--", linewidth=1, alpha=0.8)
    for mark in data.marks:
        # One label per epoch above the top panel: several decisions there read as one list.
        # In a long run with a decision every epoch the labels would run together: then only
        # the epochs that end or restore something, or hold several decisions, are labelled.
        if len(data.marks) > _MOST_LABELS and len(mark.kinds) == 1 and \
                mark.kinds[0] not in ("stop_training", "restore_weights"):
            continue
        top = axes[0]
        top.text(mark.epoch, 1.02, mark.label, rotation=90, ha="center", va="bottom",
                 fontsize=7, transform=blended_transform_factory(top.transData, top.transAxes))
    kinds = [k for k in _COLORS if any(k in m.kinds for m in data.marks)]
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        if ax is axes[-1]:
            handles += [Line2D([], [], color=_COLORS[k],
                               linestyle=":" if k == DEFERRED_STOP else "--") for k in kinds]
            labels += [k for k in kinds]
            if data.restored_epochs:
                from matplotlib.patches import Patch

                handles.append(Patch(color="gold", alpha=0.3))
                labels.append("restored epoch")
        if handles:
            # Outside the axes, on the right: a legend inside would cover curves.
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      borderaxespad=0, fontsize="small")
    axes[-1].set_xlabel("epoch (counted from 1)")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlim(left=0)
    fig.suptitle(data.title)
    return fig


def plot_audit(result: Audit, path: str | os.PathLike[str]) -> None:
    """Draw the run's metrics, one panel per family, the learning rate, and its decisions."""
    check_plot_path(path)
    import matplotlib.pyplot as plt
    import numpy as np

    # Values near a double's limits overflow inside matplotlib's transforms; drawn at the edge.
    with np.errstate(over="ignore", invalid="ignore"):
        fig = figure_of(result)
        try:  # beside it, then renamed: a link or FIFO at the name is replaced, not written into
            write_replacing(path, lambda tmp: fig.savefig(tmp, dpi=100))
        finally:
            plt.close(fig)
