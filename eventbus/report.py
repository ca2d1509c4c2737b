"""``eventbus report``: one run, or several, as a single self-contained HTML page.

The page draws what the audit (:mod:`eventbus.audit`) finds in a log: the answer to "why did it
stop?" at the top, the metric curves in one panel per family (losses, other metrics, learning
rate), every decision at the epoch where it happened with its reason on hover, the best epoch of
each monitored metric, the checkpoints with their hashes, resumes, warnings and faults. Several
logs are overlaid to compare runs. ``overrides`` (``--set``) adds a what-if: the decisions a
replay (:mod:`eventbus.replay`) makes with other parameters, drawn over the recorded ones.

Two steps, so that what the page shows is tested without a browser: :func:`build_page` reads the
logs into a :class:`Page` (plain data: the panels, their curves, the marks), and
:func:`render_html` writes it as HTML with inline SVG and a few lines of inline script for the
hover read-out (the reasons are SVG ``<title>`` elements, shown by a browser without script).

A log is untrusted input: every string from it is escaped, the data the script reads is JSON
with ``<``, ``>`` and ``&`` escaped, and the page's Content-Security-Policy lets nothing be
fetched and no script run but the page's own (allowed by its hash).
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import orjson

from .audit import MOST_CURVES, Audit, LogArgument, audit, human_epoch, render
from .effective import read_effective
from .errors import ConfigError, ReplayError
from .outputs import read_head, refuse_special, write_replacing
from .records import Decision, PluginFailed, same_decision

__all__ = ["GENERATOR", "Best", "Curve", "Mark", "Page", "Panel", "RunReport", "WhatIf",
           "build_page", "check_out", "curves_of", "family_of", "render_html", "stop_answer",
           "write_report"]

#: The generator named in every page: a file that names it may be overwritten without --force.
GENERATOR = "eventbus report"

# Families, in the order their panels are drawn.
LOSSES, METRICS, LEARNING_RATE = "losses", "metrics", "learning rate"
_TITLES = {LOSSES: "Losses", METRICS: "Accuracy and other metrics",
           LEARNING_RATE: "Learning rate"}

# kind -> (letter on its glyph, colour, legend text). Unknown decision kinds get "?".
_KINDS = {
    "stop_training": ("S", "#d62728", "stop training"),
    "set_learning_rate": ("L", "#ff7f0e", "learning rate changed"),
    "restore_weights": ("R", "#9467bd", "weights restored"),
    "save_checkpoint": ("C", "#2ca02c", "checkpoint saved"),
    "snapshot_weights": ("K", "#7f7f7f", "weights kept (a new best)"),
    "fault": ("F", "#8c564b", "plugin or sink failed"),
    "warning": ("!", "#b8a000", "warning"),
    "resumed": ("\u21bb", "#17becf", "resumed"),
}
# Curve colours, apart from the decisions' own (a curve is not mistaken for a decision line).
_PALETTE = ("#1f77b4", "#222222", "#e377c2", "#6baed6", "#8c6d31", "#393b79", "#637939")
# One dash pattern per run overlaid (the colour says which metric).
_DASHES = ("", "7 4", "2 3", "9 3 2 3", "4 2")
_WHAT_IF = "#c51b8a"


@dataclass(frozen=True)
class Curve:
    """One metric of one run, as drawn: ``points`` are (epoch counted from 1, value); a value
    of None (NaN or infinite in the log) breaks the line."""

    run: int
    metric: str
    points: tuple[tuple[int, float | None], ...]
    what_if: bool = False


@dataclass(frozen=True)
class Best:
    """The best value of a monitored metric, as the audit found it (epoch counted from 1)."""

    run: int
    metric: str
    epoch: int
    value: float
    mode: str


@dataclass(frozen=True)
class Mark:
    """Something that happened at an epoch: a decision, a warning, a fault, a resume.

    ``epoch`` is counted from 1 (the epoch it happened in); ``text`` is what hovering shows."""

    run: int
    epoch: int
    kind: str
    source: str
    text: str
    what_if: bool = False


@dataclass
class Panel:
    family: str
    title: str
    curves: list[Curve]
    best: list[Best] = field(default_factory=list)
    log_scale: bool = False
    #: Curves of this panel not drawn: at most ``MOST_CURVES`` a run, the monitored first.
    left_out: int = 0

    @property
    def metrics(self) -> list[str]:
        return sorted({c.metric for c in self.curves})


@dataclass
class WhatIf:
    """A replay of one run with other parameters (``eventbus replay --set``)."""

    settings: str
    #: The answer, in a sentence; a caveat first when it is an estimate.
    summary: str
    #: The epoch (counted from 1) at which the replayed plugins stop the run, if they do.
    stopped_at: int | None
    #: The epoch (counted from 1) from which the replayed learning rate differs from the log's.
    diverged_at: int | None


@dataclass
class RunReport:
    label: str
    audit: Audit
    #: The answer to "why did it stop?", in the audit's words.
    stop: str
    what_if: WhatIf | None = None
    #: Epoch metric values that are not numbers (vector metrics, say): not drawn.
    skipped: list[str] = field(default_factory=list)


@dataclass
class Page:
    runs: list[RunReport]
    panels: list[Panel]
    marks: list[Mark]
    #: The epochs the x axes show, counted from 1.
    epochs: tuple[int, int]

    @property
    def title(self) -> str:
        return "eventbus report: " + ", ".join(r.label for r in self.runs)


# --- the page as data -----------------------------------------------------------------------------


def family_of(metric: str) -> str:
    """The panel a metric is drawn in: the learning rate, a loss, or any other metric."""
    lowered = metric.lower()
    if lowered in ("lr", "learning_rate") or lowered.endswith(("_lr", "learning_rate")):
        return LEARNING_RATE
    if "loss" in lowered:
        return LOSSES
    return METRICS


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def stop_answer(result: Audit) -> str:
    """Why the run ended, in the audit's own words: its ``ended:`` line (:func:`render`)."""
    for line in render(result, decisions=False).splitlines():
        text = line.strip()
        if text.startswith("ended: "):
            text = text.removeprefix("ended: ")
            return text[:1].upper() + text[1:]
    # The audit's text has no such line (its wording changed): say what its data says.
    return {"stopped": "Stopped by a plugin", "completed": "Completed",
            "no_training": "No training in the log"}.get(
                result.ended, "No train_end in the log: the run crashed or is still running")


def _decision_text(label: str, d: Decision, what_if: bool = False) -> str:
    rule = f", rule {d.code}" if d.code else ""
    head = f"what-if, {label}" if what_if else label
    return f"{head}: epoch {human_epoch(d.epoch)}: {d.kind} by {d.source}{rule}: {d.reason}"


def _marks(run: int, label: str, result: Audit) -> list[Mark]:
    """The run's decisions, warnings, faults and resumes at the epochs they happened in."""
    marks = [Mark(run, d.epoch + 1, d.kind, d.source, _decision_text(label, d))
             for d in result.decisions if d.epoch is not None]
    for w in result.warnings:
        if w.epoch is not None:
            marks.append(Mark(run, w.epoch + 1, "warning", w.source,
                              f"{label}: epoch {w.epoch + 1}: warning from {w.source}: "
                              f"{w.message}"))
    for f in result.faults:
        if f.epoch is not None:  # type: ignore[attr-defined]
            who = f.plugin if isinstance(f, PluginFailed) else getattr(f, "sink", "")
            marks.append(Mark(run, f.epoch + 1, "fault", who,  # type: ignore[attr-defined]
                              f"{label}: epoch {f.epoch + 1}: {f.kind} {who} on "  # type: ignore
                              f"{getattr(f, 'event', None)}: {getattr(f, 'error', '')}: "
                              f"{getattr(f, 'message', '')}"))
    for r in result.resumes:
        # The run went on after initial_epoch epochs: drawn at the last one it kept.
        marks.append(Mark(run, max(r.initial_epoch, 1), "resumed", r.source,
                          f"{label}: resumed at epoch {human_epoch(r.initial_epoch)} (after "
                          f"seq {r.from_seq}); what the interrupted attempt recorded past that "
                          "point is left out"))
    return marks


def curves_of(result: Audit, run: int = 0) -> tuple[list[Curve], list[str]]:
    """The audit's epoch curves as drawn, for run number ``run``; and the values left out
    because they are not numbers (a vector metric, say), as "name at epoch N"."""
    curves, skipped = [], []
    for metric, points in result.curves.items():
        drawn: list[tuple[int, float | None]] = []
        for epoch, value in points:
            if _is_number(value):
                drawn.append((epoch + 1, _finite(value)))
            else:  # a vector metric, say: not a curve
                skipped.append(f"{metric} at epoch {epoch + 1}")
        if any(v is not None for _, v in drawn):
            curves.append(Curve(run, metric, tuple(drawn)))
    return curves, skipped


def _epoch_seqs(log: LogArgument) -> list[tuple[int, str, int]]:
    """(seq, kind, epoch) of the run's epoch_begin and epoch_end records, as it went on."""
    kinds = ("epoch_begin", "epoch_end")
    return [(r.seq, r.kind, r.epoch) for r in read_effective(log, kinds=kinds)  # type: ignore
            if r.kind in kinds]


def _what_if(log: LogArgument, label: str, run: int, result: Audit,
             overrides: Mapping[str, Mapping[str, Any]]) -> tuple[WhatIf, list[Mark], Curve | None]:
    from .replay import replay

    replayed = replay(log, overrides=overrides)
    settings = ", ".join(f"{p}.{k}={v!r}" for p, ps in overrides.items() for k, v in ps.items())
    epochs = _epoch_seqs(log)
    by_seq = {seq: epoch for seq, _, epoch in epochs}
    diverged = by_seq.get(replayed.diverged_at) if replayed.diverged_at is not None else None
    stop = next((d for d in replayed.decisions if d.kind == "stop_training"), None)
    caveat = ""
    if diverged is not None:
        caveat = (f"An estimate from epoch {diverged + 1} on: there the replayed learning rate "
                  "differs from the recorded one, so the later metrics come from a run trained "
                  "differently. ")
    if stop is not None:
        rule = f", rule {stop.code}" if stop.code else ""
        answer = (f"with {settings} the run would have stopped at epoch {human_epoch(stop.epoch)} "
                  f"({stop.source}{rule}): {stop.reason}")
    else:
        answer = (f"with {settings} no plugin would have stopped the run within the "
                  f"{result.epochs_run} recorded epochs")
    summary = caveat + answer[:1].upper() + answer[1:] + "."
    if replayed.warnings:  # a monitor the log never holds makes the answer moot: said with it
        summary += " The replayed plugins warned: " + "; ".join(
            w.text for w in replayed.warnings)
    # Drawn where the what-if decides otherwise than the run did: the same decision twice
    # would only hide the recorded one.
    recorded: dict[tuple[int | None, str], list[Decision]] = {}
    for d in replayed.recorded:
        recorded.setdefault((d.cause_seq, d.kind), []).append(d)
    marks = [Mark(run, d.epoch + 1, d.kind, d.source, _decision_text(label, d, what_if=True),
                  what_if=True) for d in replayed.decisions if d.epoch is not None
             and not any(same_decision(d, r) for r in recorded.get((d.cause_seq, d.kind), ()))]
    stopped_at = stop.epoch + 1 if stop is not None and stop.epoch is not None else None
    lr = _what_if_learning_rate(result, replayed.decisions, epochs, run, stopped_at)
    return WhatIf(settings, summary, stopped_at, None if diverged is None else diverged + 1), \
        marks, lr


def _what_if_learning_rate(result: Audit, decisions: Sequence[Decision],
                           epochs: Sequence[tuple[int, str, int]], run: int,
                           stopped_at: int | None) -> Curve | None:
    """The learning rate of the what-if at each epoch end: the recorded rate until the first
    replayed change, then the last replayed change made before that epoch ended."""
    recorded = result.curves.get("learning_rate")
    if not recorded or not _is_number(recorded[0][1]):
        return None
    start = result.header.meta.get("learning_rate")
    rate = float(start) if _is_number(start) else float(recorded[0][1])
    changes = sorted((d.cause_seq, d.value) for d in decisions  # type: ignore[attr-defined]
                     if d.kind == "set_learning_rate" and d.cause_seq is not None)
    points: list[tuple[int, float | None]] = []
    i = 0
    for seq, kind, epoch in epochs:
        if kind != "epoch_end":
            continue
        if stopped_at is not None and epoch + 1 > stopped_at:
            break
        # The bus adds the rate to epoch_end's logs before plugins see it: a change caused
        # by this epoch_end applies from the next epoch.
        while i < len(changes) and changes[i][0] < seq:
            rate = changes[i][1]
            i += 1
        points.append((epoch + 1, _finite(rate)))
    return Curve(run, "learning_rate", tuple(points), what_if=True) if points else None


def _labels(logs: Sequence[LogArgument]) -> list[str]:
    """A short name per log: its file name, or its path where file names repeat."""
    names = [Path(log).name if isinstance(log, (str, os.PathLike)) else f"records {i + 1}"
             for i, log in enumerate(logs)]
    if len(set(names)) == len(names):
        return names
    return [os.fspath(log) if isinstance(log, (str, os.PathLike)) else names[i]
            for i, log in enumerate(logs)]


def _log_scale(curves: Iterable[Curve]) -> bool:
    values = [v for c in curves for _, v in c.points if v is not None]
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 8


def _most(curves: list[Curve], monitored: set[tuple[int, str]]) -> list[Curve]:
    """At most :data:`~eventbus.audit.MOST_CURVES` of each run's (and what-if's) curves, the
    monitored first and then by name, in ``curves``' order: a log's thousands of metric
    names would make a page hundreds of times the log's size that no one can read."""
    groups: dict[tuple[int, bool], list[Curve]] = {}
    for curve in curves:
        groups.setdefault((curve.run, curve.what_if), []).append(curve)
    kept = {id(c) for group in groups.values() for c in sorted(
        group, key=lambda c: ((c.run, c.metric) not in monitored, c.metric))[:MOST_CURVES]}
    return [c for c in curves if id(c) in kept]


def build_page(logs: Sequence[LogArgument], *,
               overrides: Mapping[str, Mapping[str, Any]] | None = None,
               labels: Sequence[str] | None = None) -> Page:
    """What the report shows for ``logs`` (paths to .jsonl or .parquet logs, or lists of
    records), each audited; with ``overrides`` (as ``replay(overrides=...)`` takes them), the
    what-if of each run drawn over it."""
    if isinstance(logs, (str, os.PathLike)) or not logs:
        raise ConfigError("report: logs must be a non-empty list of logs", field="logs")
    logs = [log if isinstance(log, (str, os.PathLike)) else list(log) for log in logs]
    names = list(labels) if labels is not None else _labels(logs)
    runs: list[RunReport] = []
    curves: list[Curve] = []
    monitored: set[tuple[int, str]] = set()
    bests: list[Best] = []
    marks: list[Mark] = []
    for i, log in enumerate(logs):
        result = audit(log)
        run_curves, skipped = curves_of(result, i)
        curves.extend(run_curves)
        monitored.update((i, m.name) for m in result.monitors)
        bests.extend(Best(i, m.name, m.best_epoch + 1, m.best, m.mode) for m in result.monitors
                     if _is_number(m.best) and m.best_epoch is not None and m.mode is not None
                     and math.isfinite(m.best))
        marks.extend(_marks(i, names[i], result))
        report = RunReport(names[i], result, stop_answer(result), skipped=skipped)
        if overrides:
            try:
                report.what_if, more, lr = _what_if(log, names[i], i, result, overrides)
            except ReplayError as exc:  # which of several logs the what-if does not fit
                raise ReplayError(f"{names[i]}: {exc}") from exc
            marks.extend(more)
            if lr is not None:
                curves.append(lr)
        runs.append(report)
    panels = []
    for family in (LOSSES, METRICS, LEARNING_RATE):
        # In a fixed order: a log's metrics come in the order its format keeps them.
        members = sorted((c for c in curves if family_of(c.metric) == family),
                         key=lambda c: (c.run, c.what_if, c.metric))
        drawn = _most(members, monitored)
        if drawn:
            names = {(c.run, c.metric) for c in drawn}
            panels.append(Panel(family, _TITLES[family], drawn,
                                [b for b in bests if family_of(b.metric) == family
                                 and (b.run, b.metric) in names],
                                log_scale=family == LEARNING_RATE and _log_scale(drawn),
                                left_out=len(members) - len(drawn)))
    xs = [e for c in curves for e, _ in c.points] + [m.epoch for m in marks]
    epochs = (min(xs), max(xs)) if xs else (1, 1)
    return Page(runs, panels, marks, epochs)


# --- the page as HTML -------------------------------------------------------------------------

# The plot area of every panel, in SVG user units (the SVG scales to the page's width).
_W, _H = 960, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 940, 14, 262
_GLYPH = 13
#: Where the axes stop: values beyond are drawn at the edge (a linear span of two such values,
#: and a log axis's powers of ten, stay finite).
_BIG, _EXP = 1e300, 300.0


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    if not magnitude:  # a span of subnormal numbers: no step between them prints
        return [lo, hi]
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 12) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks between ``10 ** lo`` and ``10 ** hi`` (``lo``, ``hi``: decimal exponents, kept
    within a double's range): 1, 2 and 5 times each power of ten, or, over many decades, every
    few powers of ten alone."""
    lo, hi = max(lo, -_EXP), min(hi, _EXP)
    first, last = math.floor(lo), math.ceil(hi)
    stride = max(1, math.ceil((last - first) / 8))
    out = []
    for exp in range(first, last + 1, stride):
        for m in (1, 2, 5) if stride == 1 else (1,):
            v = m * 10.0 ** exp
            if lo - 1e-9 <= math.log10(v) <= hi + 1e-9:
                out.append(v)
    return out or [10.0 ** lo, 10.0 ** hi]


class _Scale:
    def __init__(self, page: Page, panel: Panel):
        lo, hi = page.epochs
        self.x0, self.x1 = (lo - 1, hi + 1) if lo == hi else (lo, hi)
        values = [v for c in panel.curves for _, v in c.points if v is not None]
        self.log = panel.log_scale
        # Room at the top for the stacks of decision glyphs, at the bottom for a what-if's.
        self.plot_top = _TOP + 4 * _GLYPH
        self.data_bottom = _BOTTOM - (3 * _GLYPH if any(m.what_if for m in page.marks) else 0)
        if self.log:
            self.y0, self.y1 = math.log10(min(values)), math.log10(max(values))
        else:  # within +-1e300, so the span and its padding stay finite (values of 1e308)
            self.y0, self.y1 = max(min(values), -_BIG), min(max(values), _BIG)
        pad = (self.y1 - self.y0) * 0.06 or (abs(self.y0) * 0.1 or 1.0)
        self.y0, self.y1 = self.y0 - pad, self.y1 + pad

    def x(self, epoch: float) -> float:
        return _LEFT + (epoch - self.x0) / (self.x1 - self.x0) * (_RIGHT - _LEFT - 12) + 6

    def y(self, value: float) -> float:
        v = math.log10(value) if self.log else max(-_BIG, min(value, _BIG))
        return self.data_bottom - (v - self.y0) / (self.y1 - self.y0) * (
            self.data_bottom - self.plot_top)

    def y_ticks(self) -> list[float]:
        if self.log:
            return _log_ticks(self.y0, self.y1)
        return _ticks(self.y0, self.y1)


def _a(value: Any) -> str:
    """An attribute value or text, escaped (quotes included)."""
    return escape(str(value), quote=True)


def _n(value: float) -> str:
    return f"{value:.1f}"


def _kind_style(kind: str) -> tuple[str, str, str]:
    return _KINDS.get(kind, ("?", "#444444", kind))


def _colors(page: Page) -> dict[str, str]:
    """A colour per metric, counted within its panel: a panel's curves differ most."""
    colors = {}
    for panel in page.panels:
        for i, metric in enumerate(panel.metrics):
            colors[metric] = _PALETTE[i % len(_PALETTE)]
    return colors


def _series_name(page: Page, curve: Curve) -> str:
    name = curve.metric
    if len(page.runs) > 1:
        name += f" \u00b7 {page.runs[curve.run].label}"
    return name + (" (what-if)" if curve.what_if else "")


def _panel_svg(page: Page, index: int, panel: Panel, colors: dict[str, str]) -> tuple[str, dict]:
    s = _Scale(page, panel)
    out = [f'<svg class="panel" data-panel="{index}" data-family="{_a(panel.family)}" '
           f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{_a(panel.title)}" '
           'xmlns="http://www.w3.org/2000/svg">']
    # Axes and grid.
    out.append(f'<rect class="frame" x="{_LEFT}" y="{s.plot_top}" width="{_RIGHT - _LEFT}" '
               f'height="{_BOTTOM - s.plot_top}"/>')
    for v in s.y_ticks():
        y = s.y(v)
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_RIGHT}" y1="{_n(y)}" y2="{_n(y)}"/>'
                   f'<text class="tick" x="{_LEFT - 6}" y="{_n(y + 4)}" '
                   f'text-anchor="end">{_a(_fmt(float(v)))}</text>')
    for e in _ticks(s.x0, s.x1, 10):
        if float(e).is_integer() and s.x0 <= e <= s.x1:
            x = s.x(e)
            out.append(f'<line class="xtick" x1="{_n(x)}" x2="{_n(x)}" y1="{_BOTTOM}" '
                       f'y2="{_BOTTOM + 5}"/><text class="tick" x="{_n(x)}" y="{_BOTTOM + 18}" '
                       f'text-anchor="middle">{int(e)}</text>')
    out.append(f'<text class="axis" x="{(_LEFT + _RIGHT) // 2}" y="{_H - 6}" '
               'text-anchor="middle">epoch (counted from 1)</text>')
    out.append(f'<text class="axis" transform="translate(16 {(_BOTTOM + s.plot_top) // 2}) '
               f'rotate(-90)" text-anchor="middle">{_a(panel.title.lower())}'
               f'{" (log scale)" if s.log else ""}</text>')
    # Where a what-if stops, the epochs after it would not have run.
    for run in page.runs:
        w = run.what_if
        if w is not None and w.stopped_at is not None and w.stopped_at < s.x1:
            x = s.x(w.stopped_at)
            out.append(f'<g class="whatif-stop"><title>{_a(run.label)}: a run {_a(w.settings)} '
                       f'would have stopped at epoch {w.stopped_at}: the epochs after it would '
                       f'not have run</title><rect x="{_n(x)}" y="{s.plot_top}" '
                       f'width="{_n(_RIGHT - x)}" height="{_BOTTOM - s.plot_top}"/>'
                       f'<line x1="{_n(x)}" x2="{_n(x)}" y1="{s.plot_top}" y2="{_BOTTOM}"/>'
                       f'<text x="{_n(x + 4)}" y="{s.plot_top + 14}">what-if stop</text></g>')
    # Decisions: a line at each epoch where the run decided something, and a stack of glyphs.
    out.extend(_marks_svg(page, s))
    # Curves.
    data_series = []
    for curve in panel.curves:
        color = _WHAT_IF if curve.what_if else colors[curve.metric]
        dash = "5 3" if curve.what_if else _DASHES[curve.run % len(_DASHES)]
        step = family_of(curve.metric) == LEARNING_RATE
        name = _series_name(page, curve)
        out.append(f'<path class="curve{" whatif" if curve.what_if else ""}" '
                   f'd="{_path(s, curve.points, step)}" stroke="{color}"'
                   + (f' stroke-dasharray="{dash}"' if dash else "")
                   + f'><title>{_a(name)}</title></path>')
        if len(curve.points) <= 80 and not curve.what_if:
            out.extend(f'<circle class="dot" cx="{_n(s.x(e))}" cy="{_n(s.y(v))}" r="2.2" '
                       f'fill="{color}"/>' for e, v in curve.points if v is not None)
        data_series.append({"name": name, "values": {str(e): _fmt(v) if v is not None else
                                                     "nan or infinite" for e, v in curve.points}})
    for best in panel.best:
        x, y = s.x(best.epoch), s.y(best.value)
        run = page.runs[best.run].label
        out.append(f'<g class="best"><title>{_a(run)}: best {_a(best.metric)} = '
                   f'{_a(_fmt(best.value))} at epoch {best.epoch} ({_a(best.mode)})</title>'
                   f'<circle cx="{_n(x)}" cy="{_n(y)}" r="7"/>'
                   f'<text x="{_n(x)}" y="{_n(y + 20)}" text-anchor="middle">best</text></g>')
    out.append(f'<line class="cross" x1="0" x2="0" y1="{s.plot_top}" y2="{_BOTTOM}" '
               'visibility="hidden"/>')
    out.append("</svg>")
    meta = {"left": s.x(s.x0), "right": s.x(s.x1), "x0": s.x0, "x1": s.x1,
            "series": data_series}
    return "".join(out), meta


def _path(s: _Scale, points: Sequence[tuple[int, float | None]], step: bool) -> str:
    parts: list[str] = []
    pen_up = True
    prev: tuple[int, float] | None = None
    for epoch, value in points:
        if value is None:
            pen_up, prev = True, None
            continue
        x, y = _n(s.x(epoch)), _n(s.y(value))
        if pen_up:
            parts.append(f"M{x} {y}")
        elif step and prev is not None:
            # The rate an epoch ran with, held since the end of the epoch before.
            parts.append(f"L{_n(s.x(prev[0]))} {y}L{x} {y}")
        else:
            parts.append(f"L{x} {y}")
        pen_up, prev = False, (epoch, value)
    return "".join(parts)


_PRIORITY = ("stop_training", "set_learning_rate", "restore_weights", "save_checkpoint",
             "fault", "warning", "resumed", "snapshot_weights")


def _marks_svg(page: Page, s: _Scale) -> list[str]:
    out = []
    stacks: dict[tuple[int, bool], list[Mark]] = {}
    for mark in page.marks:
        stacks.setdefault((mark.epoch, mark.what_if), []).append(mark)
    for (epoch, what_if), marks in sorted(stacks.items()):
        x = s.x(epoch)
        if not what_if:
            top = min(marks, key=lambda m: _PRIORITY.index(m.kind) if m.kind in _PRIORITY
                      else len(_PRIORITY))
            color = _kind_style(top.kind)[1]
            summary = "\n".join(m.text for m in marks)
            out.append(f'<g class="mark-line"><title>{_a(summary)}</title><line x1="{_n(x)}" '
                       f'x2="{_n(x)}" y1="{s.plot_top}" y2="{_BOTTOM}" stroke="{color}"/></g>')
        # Recorded glyphs stack down from the top, a what-if's up from the bottom; more than
        # fit end in one "+n" glyph that lists the rest.
        room = 3 if what_if else 4
        shown = marks if len(marks) <= room else marks[:room - 1]
        for i, mark in enumerate(shown):
            letter, color, _ = _kind_style(mark.kind)
            out.append(_glyph(x, _glyph_y(i, what_if), letter, color, mark.what_if, mark.kind,
                              mark.text))
        if len(shown) < len(marks):
            rest = marks[len(shown):]
            out.append(_glyph(x, _glyph_y(len(shown), what_if), f"+{len(rest)}", "#444444",
                              what_if, "more", "\n".join(m.text for m in rest)))
    return out


def _glyph_y(i: int, what_if: bool) -> float:
    return _TOP + i * _GLYPH if not what_if else _BOTTOM - (i + 1) * _GLYPH - 2


def _glyph(x: float, y: float, letter: str, color: str, hollow: bool, kind: str,
           text: str) -> str:
    cls = "mark whatif" if hollow else "mark"
    fill, ink = ("#ffffff", color) if hollow else (color, "#ffffff")
    width = _GLYPH - 1 + 6 * (len(letter) - 1)
    return (f'<g class="{cls}" data-kind="{_a(kind)}"><title>{_a(text)}</title>'
            f'<rect x="{_n(x - width / 2)}" y="{_n(y)}" width="{width}" height="{_GLYPH - 1}" '
            f'rx="2" fill="{fill}" stroke="{color}"/><text x="{_n(x)}" y="{_n(y + 9.5)}" '
            f'text-anchor="middle" fill="{ink}">{_a(letter)}</text></g>')


def _legend(page: Page, panel: Panel, colors: dict[str, str]) -> str:
    items = []
    for curve in panel.curves:
        color = _WHAT_IF if curve.what_if else colors[curve.metric]
        dash = "5 3" if curve.what_if else _DASHES[curve.run % len(_DASHES)]
        sample = (f'<svg class="sample" viewBox="0 0 28 8" width="28" height="8"><line x1="0" '
                  f'x2="28" y1="4" y2="4" stroke="{color}" stroke-width="2.5"'
                  + (f' stroke-dasharray="{dash}"' if dash else "") + "/></svg>")
        items.append(f"<li>{sample} {_a(_series_name(page, curve))}</li>")
    for best in panel.best:
        items.append(f'<li><span class="best-key"></span> best {_a(best.metric)}: '
                     f'{_a(_fmt(best.value))} at epoch {best.epoch}'
                     + (f" ({_a(page.runs[best.run].label)})" if len(page.runs) > 1 else "")
                     + "</li>")
    return f'<ul class="legend">{"".join(items)}</ul>'


def _kind_legend(page: Page) -> str:
    kinds = []
    for mark in page.marks:
        if mark.kind not in kinds:
            kinds.append(mark.kind)
    items = []
    for kind in sorted(kinds, key=lambda k: _PRIORITY.index(k) if k in _PRIORITY else 99):
        letter, color, text = _kind_style(kind)
        items.append(f'<li><span class="glyph" style="background:{color}">{_a(letter)}</span> '
                     f"{_a(text)}</li>")
    if any(m.what_if for m in page.marks):
        items.append(f'<li><span class="glyph hollow" style="color:{_WHAT_IF};border-color:'
                     f'{_WHAT_IF}">L</span> where the what-if decides otherwise (hollow, at the '
                     'bottom)</li>')
    return f'<ul class="legend kinds">{"".join(items)}</ul>' if items else ""


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_a(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return (f'<div class="table-box"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>')


def _run_sections(page: Page) -> list[str]:
    out = []
    several = len(page.runs) > 1
    for i, run in enumerate(page.runs):
        a = run.audit
        h = a.header
        title = f"<h3>{_a(run.label)}</h3>" if several else ""
        planned = f" of {a.planned_epochs}" if a.planned_epochs else ""
        facts = [("run", f"<code>{_a(h.run_id)}</code>"), ("library", _a(h.library)),
                 ("started", _a(h.created)),
                 ("epochs run", f"{a.epochs_run}{planned}"),
                 ("plugins", _a(", ".join(p.label or p.name for p in h.plugins) or "none"))]
        for m in a.monitors:
            if m.best is not None and m.best_epoch is not None:
                facts.append((f"best {_a(m.name)}", f"{_a(_fmt(m.best))} at epoch "
                              f"{m.best_epoch + 1} ({_a(m.mode)}; last {_a(_fmt(m.last))})"))
        if run.skipped:
            facts.append(("not drawn", _a(f"{len(run.skipped)} value(s) that are not numbers: "
                                          + ", ".join(run.skipped[:5])
                                          + (" ..." if len(run.skipped) > 5 else ""))))
        if a.vector_metrics:  # lists of numbers: the audit keeps them out of its curves
            facts.append(("not drawn", _a("metrics of several values an epoch: "
                                          + ", ".join(a.vector_metrics))))
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        parts = [f'<section class="run" id="run-{i}">{title}<dl>{dl}</dl>']
        if a.checkpoints:
            rows = [(human_epoch(c["epoch"]), f"<code>{_a(c['path'])}</code>",
                     _a(f"{c['monitor']} = {_fmt(c['value'])}" if c["monitor"] else "-"),
                     _a(c["size"]), f'<code class="hash">{_a(c["sha256"])}</code>')
                    for c in a.checkpoints]
            parts.append(f"<h4>Checkpoints ({len(a.checkpoints)})</h4>"
                         + _table(("epoch", "path", "monitor", "bytes", "sha256"), rows,
                                  "checkpoints"))
        else:
            parts.append("<h4>Checkpoints</h4><p>none</p>")
        if a.resumes:
            rows = [(human_epoch(r.initial_epoch), _a(r.from_seq), _a(r.source or "-"))
                    for r in a.resumes]
            parts.append(f"<h4>Resumes ({len(a.resumes)})</h4>"
                         + _table(("went on from epoch", "after seq", "source"), rows,
                                  "resumes"))
        problems = [(human_epoch(w.epoch), "warning", _a(w.source), _a(w.message))
                    for w in a.warnings]
        problems += [(human_epoch(getattr(f, "epoch", None)), _a(f.kind),
                      _a(getattr(f, "plugin", None) or getattr(f, "sink", None) or ""),
                      _a(f"{getattr(f, 'error', '')}: {getattr(f, 'message', '')} (on "
                         f"{getattr(f, 'event', None)})")) for f in a.faults]
        problems += [(human_epoch(b["epoch"]), "bad record", _a(b["kind"]), _a(b["message"]))
                     for b in a.bad_records]
        if problems:
            parts.append(f"<h4>Warnings and faults ({len(problems)})</h4>"
                         + _table(("epoch", "what", "from", "message"), problems, "problems"))
        else:
            parts.append("<h4>Warnings and faults</h4><p>none</p>")
        rows = [(_a(d.seq), human_epoch(d.epoch), _a(d.kind), _a(d.source),
                 _a(d.reason)) for d in a.decisions]
        parts.append(f"<details><summary>Decisions ({len(a.decisions)})</summary>"
                     + _table(("seq", "epoch", "kind", "source", "reason"), rows, "decisions")
                     + "</details></section>")
        out.append("".join(parts))
    return out


def _json_for_script(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>`` or ``<!--`` can end it."""
    text = orjson.dumps(data).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_SCRIPT = """(function () {
  var tip = document.getElementById('tip');
  var data = JSON.parse(document.getElementById('report-data').textContent);
  function show(text, e) {
    tip.textContent = text; tip.hidden = false;
    tip.style.left = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 4) + 'px';
    var below = e.clientY + 14, high = tip.offsetHeight;
    tip.style.top = (below + high > window.innerHeight - 4 ?
                     Math.max(4, e.clientY - 14 - high) : below) + 'px';
  }
  document.querySelectorAll('svg.panel').forEach(function (svg) {
    var p = data.panels[Number(svg.getAttribute('data-panel'))];
    var cross = svg.querySelector('.cross');
    function hide() { tip.hidden = true; cross.setAttribute('visibility', 'hidden'); }
    svg.addEventListener('mousemove', function (e) {
      var hit = e.target.closest('.mark, .best, .mark-line, .whatif-stop');
      if (hit) { cross.setAttribute('visibility', 'hidden');
                 show(hit.querySelector('title').textContent, e); return; }
      var pt = svg.createSVGPoint(); pt.x = e.clientX; pt.y = e.clientY;
      var q = pt.matrixTransform(svg.getScreenCTM().inverse());
      if (q.x < p.left || q.x > p.right) { hide(); return; }
      var epoch = Math.round(p.x0 + (q.x - p.left) / (p.right - p.left) * (p.x1 - p.x0));
      var x = p.left + (epoch - p.x0) / (p.x1 - p.x0) * (p.right - p.left);
      var lines = ['epoch ' + epoch];
      p.series.forEach(function (s) {
        var v = s.values[String(epoch)];
        if (v !== undefined) { lines.push(s.name + ': ' + v); }
      });
      cross.setAttribute('x1', x); cross.setAttribute('x2', x);
      cross.setAttribute('visibility', 'visible');
      show(lines.join('\\n'), e);
    });
    svg.addEventListener('mouseleave', hide);
  });
})();
"""

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 margin:0 auto;max-width:1100px;padding:16px 24px 48px;color:#222;background:#fff;
 overflow-wrap:break-word}
h1{font-size:22px;margin:8px 0 12px}h2{font-size:18px;margin:28px 0 8px}
h3{font-size:16px;margin:20px 0 6px}h4{font-size:14px;margin:14px 0 4px}
.why{border-left:5px solid #d62728;background:#fdf3f2;padding:10px 14px;margin:0 0 8px}
.why p{margin:4px 0}.why .whatif{border-top:1px dashed #c51b8a;padding-top:6px}
.why .label{font-weight:600}
.panel-box{margin:12px 0 18px;overflow-x:auto}.panel-box h3{margin:6px 0 0}
svg.panel{width:100%;min-width:840px;height:auto;display:block}
.table-box{overflow-x:auto}
@media (max-width:600px){body{padding:12px 10px 32px}.legend{margin-left:0}}
svg.panel .frame{fill:none;stroke:#bbb}svg.panel .grid{stroke:#eee}
svg.panel .xtick{stroke:#999}svg.panel .tick{font-size:11px;fill:#555}
svg.panel .axis{font-size:12px;fill:#444}
svg.panel .curve{fill:none;stroke-width:2;stroke-linejoin:round}
svg.panel .curve.whatif{stroke-width:2.5}
svg.panel .mark-line line{stroke-width:1.2;stroke-dasharray:3 3;opacity:.7}
svg.panel .mark-line{pointer-events:stroke}
svg.panel .mark text{font-size:9.5px;font-weight:700;pointer-events:none}
svg.panel .mark{cursor:help}
svg.panel .best circle{fill:none;stroke:#000;stroke-width:2}
svg.panel .best text{font-size:11px;font-weight:600}
svg.panel .whatif-stop rect{fill:#000;opacity:.05}
svg.panel .whatif-stop line{stroke:#c51b8a;stroke-width:2;stroke-dasharray:6 3}
svg.panel .whatif-stop text{font-size:11px;fill:#c51b8a}
svg.panel .cross{stroke:#888;stroke-width:1}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:4px 18px;padding:0;margin:2px 0 0 70px;
 font-size:12.5px}
.legend li{display:flex;align-items:center;gap:6px}
.legend.runs li{display:block;min-width:0;overflow-wrap:anywhere}
.legend.runs svg.sample{vertical-align:middle}
.glyph{display:inline-block;width:14px;height:14px;line-height:14px;text-align:center;
 border-radius:2px;color:#fff;font-size:10px;font-weight:700;border:1px solid transparent}
.glyph.hollow{background:#fff}
.best-key{display:inline-block;width:10px;height:10px;border:2px solid #000;border-radius:50%}
table{border-collapse:collapse;font-size:12.5px;margin:4px 0;width:100%}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6}code{font-size:12px}code.hash{word-break:break-all}
dl{display:grid;grid-template-columns:fit-content(50%) minmax(0,1fr);gap:2px 14px;margin:6px 0}
dt{color:#666}dd{margin:0}dt,dd{overflow-wrap:anywhere}
@media (max-width:600px){dl{grid-template-columns:fit-content(30%) minmax(0,1fr)}}
#tip{position:fixed;z-index:10;max-width:min(520px,calc(100vw - 8px));background:#222;
 color:#fff;padding:6px 9px;border-radius:4px;font-size:12px;white-space:pre-wrap;
 pointer-events:none}
"""


def _left_out(panel: Panel) -> str:
    if not panel.left_out:
        return ""
    return (f' <small class="left-out">({panel.left_out} more metric(s) not drawn: at most '
            f"{MOST_CURVES} a run, the monitored first)</small>")


def render_html(page: Page) -> str:
    """The page as one HTML document that needs nothing from anywhere else."""
    colors = _colors(page)
    why = []
    for run in page.runs:
        label = f'<span class="label">{_a(run.label)}:</span> ' if len(page.runs) > 1 else ""
        why.append(f'<p class="stop">{label}{_a(run.stop)}</p>')
        if run.what_if is not None:
            why.append(f'<p class="whatif">{label}<strong>What if?</strong> '
                       f"{_a(run.what_if.summary)} (The curves are the recorded run's: a "
                       "what-if changes the decisions, not the training.)</p>")
    panels, data = [], []
    for i, panel in enumerate(page.panels):
        svg, meta = _panel_svg(page, i, panel, colors)
        data.append(meta)
        panels.append(f'<figure class="panel-box" data-family="{_a(panel.family)}">'
                      f"<h3>{_a(panel.title)}{_left_out(panel)}</h3>{svg}"
                      f"{_legend(page, panel, colors)}</figure>")
    if not panels:
        panels.append("<p>No epoch metrics in the log(s): nothing to draw.</p>")
    runs = "".join('<li><svg class="sample" viewBox="0 0 28 8" width="28" height="8"><line '
                   'x1="0" x2="28" y1="4" y2="4" stroke="#333" stroke-width="2.5"'
                   + (f' stroke-dasharray="{_DASHES[i % len(_DASHES)]}"'
                      if _DASHES[i % len(_DASHES)] else "")
                   + f'/></svg> {_a(r.label)} (run <code>{_a(r.audit.header.run_id)}</code>)</li>'
                   for i, r in enumerate(page.runs))
    compare = f'<ul class="legend runs">{runs}</ul>' if len(page.runs) > 1 else ""
    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    policy = (f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src "
              "'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none'")
    heading = "Run report" if len(page.runs) == 1 else f"Run report: {len(page.runs)} runs compared"
    return "".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_a(policy)}">',
        f'<meta name="generator" content="{GENERATOR}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_a(page.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_a(heading)}</h1>",
        '<section class="why" id="why"><p><strong>Why did it stop?</strong></p>',
        "".join(why), "</section>", compare,
        '<section id="charts"><h2>Metrics and decisions</h2>',
        "<p>Epochs are counted from 1. Hover over a glyph or a line for the decision and its "
        "reason, over a curve for the values at that epoch.</p>",
        _kind_legend(page), "".join(panels), "</section>",
        '<section id="details"><h2>Checkpoints, resumes, warnings and faults</h2>',
        "".join(_run_sections(page)), "</section>",
        '<div id="tip" role="tooltip" hidden></div>',
        f'<script type="application/json" id="report-data">'
        f'{_json_for_script({"panels": data})}</script>',
        f"<script>{_SCRIPT}</script></body></html>\n",
    ])


# --- the file ---------------------------------------------------------------------------------


def check_out(path: str | os.PathLike[str], *, force: bool = False,
              flag: str = "out") -> None:
    """Refuse to write ``path`` over a file that is not a report (unless ``force``), or where
    there is no directory to write it in; raises :class:`ConfigError` naming ``flag``."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; name the .html file to write",
                          field="out")
    if not target.parent.is_dir():
        raise ConfigError(f"{flag} {path}: the directory {target.parent} does not exist",
                          field="out")
    refuse_special(target, flag)
    if (target.exists() or target.is_symlink()) and not force:
        head = read_head(target, 4096)  # not through a link, never blocked on
        ours = head is not None and f'<meta name="generator" content="{GENERATOR}">'.encode() \
            in head
        if not ours:
            raise ConfigError(f"{flag} {path} exists and is not a report this command wrote; "
                              "name another file, or add --force to replace it", field="out")


def write_report(logs: Sequence[LogArgument], out: str | os.PathLike[str], *,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 force: bool = False) -> Page:
    """Write the report of ``logs`` to ``out`` (see :func:`build_page`); returns its page.
    The file appears whole or not at all (written beside it, then renamed: a link at ``out``
    is replaced, not followed; see :mod:`eventbus.outputs`)."""
    check_out(out, force=force)
    page = build_page(logs, overrides=overrides)
    html = render_html(page)
    # A file name that is not UTF-8 (Linux names are bytes) comes as surrogate escapes: shown
    # as ``\udce9``, as the terminal shows it, not an error at the last step.
    write_replacing(out, lambda tmp: tmp.write_text(html, encoding="utf-8",
                                                    errors="backslashreplace"))
    return page
