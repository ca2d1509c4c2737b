"""ProgbarLogger: training progress on a terminal, in a notebook, in CI logs, or to logging.

A sink: it takes the records of training, evaluation and prediction as they are recorded, and
shows them; replay and resume, which write through no sink, show nothing. What the text looks
like and how a terminal is redrawn is :mod:`sinks.progress`; this module decides what to show.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

from eventbus import Plugin, Sink
from eventbus.errors import ConfigError
from sinks import progress
from sinks.console import LOGGER, is_interactive_logging_enabled

from .monitor import require_names, require_real

__all__ = ["ProgbarLogger", "RunningMeans", "format_logs", "ordered"]

_NOT_SHOWN = frozenset({"batch", "size", "num_steps"})
# A vector metric's value in a record (a list; a tuple from a user's own record).
_VECTOR = (list, tuple)
# Shown last, as Keras shows it (its callbacks add it to the epoch's logs after validation).
_LAST = frozenset({"learning_rate", "lr"})


def ordered(values: Mapping[str, Any]) -> dict[str, Any]:
    """Train metrics first, then ``val_*``, then the learning rate, each in the given order."""
    def group(name: str) -> int:
        return 2 if name in _LAST else 1 if name.startswith("val_") else 0

    return {name: values[name] for name in sorted(values, key=group)}


def format_logs(logs: Mapping[str, Any]) -> str:
    """``loss: 0.1234 - val_loss: 0.2345``: Keras's way of showing metrics, in :func:`ordered`
    order (``batch``, ``size`` and ``num_steps`` are not shown)."""
    return progress.SEP.join(progress.metric_items(
        ordered({k: v for k, v in logs.items() if k not in _NOT_SHOWN})))


class RunningMeans:
    """The values Keras's progress bar shows: a metric's mean over the batches so far, weighted
    as ``keras.utils.Progbar`` weights it (by the steps or samples each update adds, at least
    1), or its latest value for a stateful metric; the values an epoch ends with replace them.

    ``stateful``: the names shown as they come; ``True``: every name (Keras 3's metrics are
    already running means over the epoch). A vector metric is averaged element by element; one
    whose length changes starts again from its new value.
    """

    def __init__(self, stateful: Iterable[str] | bool = ()):
        self._all = stateful is True
        self._stateful = frozenset(() if isinstance(stateful, bool) else stateful)
        self._sums: dict[str, Any] = {}
        self._weights: dict[str, float] = {}

    def add(self, logs: Mapping[str, Any], weight: float) -> None:
        weight = max(weight, 1)
        sums, weights = self._sums, self._weights
        for name, value in logs.items():
            if name in _NOT_SHOWN:
                continue
            if self._all or name in self._stateful:
                sums[name], weights[name] = value, 1
            elif name not in sums or _shape(sums[name]) != _shape(value):
                sums[name], weights[name] = _scaled(value, weight), weight
            else:
                total = sums[name]
                sums[name] = [t + v * weight for t, v in zip(total, value)] \
                    if isinstance(total, _VECTOR) else total + value * weight
                weights[name] += weight

    def finish(self, logs: Mapping[str, Any]) -> None:
        """The epoch's own values, shown as they are (Keras's ``finalize``)."""
        for name, value in logs.items():
            if name not in _NOT_SHOWN:
                self._sums[name], self._weights[name] = value, 1

    def values(self) -> dict[str, Any]:
        """The means, train metrics first (:func:`ordered`)."""
        out = {}
        for name, total in self._sums.items():
            weight = self._weights[name]
            out[name] = [t / weight for t in total] if isinstance(total, _VECTOR) \
                else total / weight
        return ordered(out)


def _shape(value: Any) -> int | None:
    return len(value) if isinstance(value, _VECTOR) else None


def _scaled(value: Any, weight: float) -> Any:
    return [v * weight for v in value] if isinstance(value, _VECTOR) else value * weight


class _Shown:
    """One epoch, evaluation or prediction being shown."""

    def __init__(self, what: str, title: str, target: int | None, started: float,
                 means: RunningMeans, display: str):
        self.what = what
        self.title = title
        self.target = target
        self.started = started
        self.means = means
        self.display = display
        self.count = 0  # steps or samples so far
        self.first: tuple[float, int] | None = None  # time and count after the first batch
        self.last = started  # the time of the last batch
        self.drawn = float("-inf")  # when it was last drawn (event time)
        self.lined = started  # when the last plain line was written
        self.bar: Any = None  # tqdm's notebook bar
        self.block: progress.LiveBlock | None = None

    def per_unit(self, now: float) -> float:
        """Seconds per step (or sample), Keras's estimate: the first batch (compilation,
        warm-up) left out once there are others."""
        if not self.count:
            return 0.0
        if self.first is not None and self.count > self.first[1]:
            return (now - self.first[0]) / (self.count - self.first[1])
        return (now - self.started) / self.count


class ProgbarLogger(Plugin, Sink):
    """Print progress and metrics as Keras's progress bar does (docs/plugins/progbar_logger.md).

    ``verbose=1``: on a terminal, a bar line per epoch (counts, bar, ETA, time per step) with the
    running means of the metrics wrapped onto lines of their own beneath it, left on screen with
    the epoch's metrics when it ends; in a notebook, tqdm's notebook bar; elsewhere (a file, a
    CI log) a plain line every ``line_interval`` seconds of the epoch and one at its end.
    ``verbose=2``: one line per epoch. ``verbose=0``: nothing.
    ``count_mode``: ``"steps"`` counts batches against ``params["steps"]``; ``"samples"``
    counts the batches' ``size`` against ``params["samples"]``. ``stateful_metrics``: metrics
    shown as they come rather than averaged over the epoch's batches (with a Keras model, all of
    them: Keras's metrics are already running means). ``file``: where to write; by default
    standard output, or the ``eventbus.console`` logger while interactive logging is off
    (:func:`sinks.console.disable_interactive_logging`, or Keras's own switch).
    """

    side_effects = True

    def __init__(self, count_mode: str = "steps", stateful_metrics: Iterable[str] | None = None,
                 verbose: int = 1, *, file: IO[str] | None = None, mininterval: float = 0.1,
                 line_interval: float = 10.0):
        if count_mode not in ("steps", "samples"):
            raise ConfigError(f"ProgbarLogger: count_mode must be 'steps' or 'samples'; got "
                              f"{count_mode!r}", plugin="ProgbarLogger", field="count_mode")
        if isinstance(verbose, bool):  # as Keras's fit takes it: True is 1
            verbose = int(verbose)
        if verbose not in (0, 1, 2):
            raise ConfigError(f"ProgbarLogger: verbose must be 0, 1 or 2; got {verbose!r}",
                              plugin="ProgbarLogger", field="verbose")
        verbose = int(verbose)
        if file is not None and not all(callable(getattr(file, method, None))
                                        for method in ("write", "flush")):
            raise ConfigError(f"ProgbarLogger: file must be a text stream with write() and "
                              f"flush() (an open file, sys.stderr); got {type(file).__name__}",
                              plugin="ProgbarLogger", field="file")
        self.count_mode = count_mode
        self.stateful_metrics = sorted(set(require_names(stateful_metrics, "stateful_metrics",
                                                         "ProgbarLogger")))
        self.verbose = verbose
        self.file = file
        self.mininterval = require_real(mininterval, "mininterval", "ProgbarLogger",
                                        minimum=0.0)
        self.line_interval = require_real(line_interval, "line_interval", "ProgbarLogger",
                                          minimum=0.0)
        self._unit = "step" if count_mode == "steps" else "sample"
        self._params: dict[str, Any] = {}
        self._run: Any = None
        self._keras = False  # the run's model is a Keras model: its metrics are running means
        self._shown: _Shown | None = None
        self._size: float | None = None  # the size batch_begin gave, for a batch_end without
        # The records it shows; silent, it takes none at all. Counting samples, it also takes
        # batch_begin, where a loop may give the batch's size.
        kinds = _KINDS | {"batch_begin"} if count_mode == "samples" else _KINDS
        self.takes = kinds if verbose else frozenset()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["file"] = None if self.file is None else getattr(self.file, "name", "<stream>")
        return config

    def open(self, run: Any) -> None:
        self._run = run

    # --- where it goes -----------------------------------------------------------------------

    @property
    def _out(self) -> IO[str]:
        return self.file if self.file is not None else sys.stdout

    def _display(self) -> str:
        """``terminal`` (a redrawn block), ``notebook`` (tqdm's widget), ``lines`` (plain
        lines to the stream) or ``log`` (plain lines to the logger)."""
        if self.file is None and not is_interactive_logging_enabled():
            return "log"
        if self.verbose == 2:
            return "lines"
        isatty = getattr(self._out, "isatty", None)
        try:
            tty = bool(isatty and isatty())
        except ValueError:  # a closed stream
            tty = False
        if tty and os.environ.get("TERM") != "dumb":  # a dumb terminal has no cursor moves
            return "terminal"
        if self.file is None and progress.notebook_tqdm() is not None:
            return "notebook"
        return "lines"

    def _emit(self, line: str, display: str) -> None:
        if display == "log":
            LOGGER.info(line)
            return
        out = self._out
        out.write(line + "\n")
        out.flush()

    def _target(self) -> int | None:
        key = "steps" if self.count_mode == "steps" else "samples"
        value = self._params.get(key)
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    def _title(self, epoch: int) -> str:
        epochs = self._params.get("epochs")
        return f"Epoch {epoch + 1}/{epochs}" if epochs else f"Epoch {epoch + 1}"

    # --- one run shown: begun, advanced per batch, finished with its metrics ------------------

    def _begin(self, what: str, title: str, target: int | None, time: float) -> None:
        self._end()
        stateful: Iterable[str] | bool = True if self._keras else self.stateful_metrics
        shown = self._shown = _Shown(what, title, target, time, RunningMeans(stateful),
                                     self._display())
        if shown.display == "notebook":
            bar_class = progress.notebook_tqdm()
            shown.bar = bar_class(total=target, desc=title, unit=self._unit, leave=True)
        elif shown.display == "terminal":
            shown.block = progress.LiveBlock(self._out)
            shown.block.watch()

    def _advance(self, record: dict[str, Any]) -> None:
        shown = self._shown
        if shown is None:
            return
        logs = record["logs"]
        if self.count_mode == "steps":
            n = 1
        else:
            size = logs.get("size", self._size)
            n = int(size) if isinstance(size, (int, float)) and size > 0 else 0
            self._size = None
        shown.count += n
        shown.means.add(logs, n)
        now = shown.last = record["time"]
        if shown.first is None:
            shown.first = (now, shown.count)
        if shown.display == "terminal":
            # Drawn again at once when something printed erased it (GuardedStream): the bar
            # stays below the user's lines.
            if now - shown.drawn >= self.mininterval or not shown.block.rows:
                shown.drawn = now
                self._draw(shown, now, final=False)
        elif shown.display == "notebook":
            shown.bar.update(n)
            if now - shown.drawn >= self.mininterval:
                shown.drawn = now
                shown.bar.set_postfix_str(format_logs(shown.means.values()), refresh=False)
        elif self.verbose == 1 and now - shown.lined >= self.line_interval:
            shown.lined = now
            self._emit(self._line(shown, now, finished=False), shown.display)

    def _finish(self, logs: Mapping[str, Any], time: float) -> None:
        shown, self._shown = self._shown, None
        if shown is None:
            return
        shown.means.finish(logs)
        if shown.display == "terminal":
            self._draw(shown, time, final=True)
        elif shown.display == "notebook":
            shown.bar.set_postfix_str(format_logs(shown.means.values()), refresh=False)
            shown.bar.close()
        else:
            self._emit(self._line(shown, time, finished=True), shown.display)

    def _line(self, shown: _Shown, now: float, *, finished: bool) -> str:
        return progress.plain_line(
            shown.title, shown.count, shown.target, elapsed=now - shown.started,
            per_unit=shown.per_unit(now), unit=self._unit, finished=finished,
            items=progress.metric_items(shown.means.values()))

    def _draw(self, shown: _Shown, now: float, *, final: bool) -> None:
        out = self._out
        columns, rows = progress.terminal_size(out)
        width = columns - 1  # the last column left free: no terminal wraps early there
        target = shown.target or (shown.count if final else None)
        head = progress.bar_line(
            shown.title, shown.count, target, elapsed=now - shown.started,
            per_unit=shown.per_unit(now), unit=self._unit, width=width, finished=final,
            unicode=progress.can_encode(out, "━─"), color=not os.environ.get("NO_COLOR"))
        lines = [head, *progress.wrap(progress.metric_items(shown.means.values()), width)]
        if not final:  # a live block taller than the screen could not be drawn over again
            lines = lines[:max(1, rows - 1)]
        assert shown.block is not None
        shown.block.draw(lines, final=final)

    def _end(self) -> None:
        """What is shown ends before its end (a loop that stopped mid-epoch, TerminateOnNaN):
        where it got stays in view, the count it reached and its running means, drawn again
        below a message that erased it."""
        shown, self._shown = self._shown, None
        if shown is None:
            return
        if shown.display == "notebook":
            shown.bar.close()
        elif not shown.count:  # nothing to show: a block never drawn, or erased
            if shown.block is not None:
                shown.block.end()
        elif shown.display == "terminal":
            self._draw(shown, shown.last, final=True)
        else:
            self._emit(self._line(shown, shown.last, finished=True), shown.display)

    # --- the sink: training, evaluation on its own, prediction --------------------------------

    def write(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "batch_end":
            self._advance(record)
        elif kind == "batch_begin":
            self._size = record["logs"].get("size")
        elif kind == "epoch_begin":
            self._begin("epoch", self._title(record["epoch"]), self._target(), record["time"])
        elif kind == "epoch_end":
            if self._shown is None or self._shown.what != "epoch":  # an epoch_end on its own
                self._begin("epoch", self._title(record["epoch"]), self._target(),
                            record["time"])
            self._finish(record["logs"], record["time"])
        elif kind == "train_begin":
            self._params = dict(record["params"])
            model = getattr(self._run, "model", None)
            self._keras = getattr(model, "keras_model", None) is not None
        elif kind == "train_end":
            self._end()
        # Evaluation on its own: test events in training carry their epoch and show only as
        # the epoch's val_ metrics.
        elif kind == "test_begin":
            if record.get("epoch") is None:
                self._begin("evaluation", "Evaluation", None, record["time"])
        elif kind == "test_batch_end":
            if self._showing("evaluation"):
                self._advance(record)
        elif kind == "test_end":
            if self._showing("evaluation"):
                self._finish(record["logs"], record["time"])
        # Prediction, unless it interrupts a training epoch's bar.
        elif kind == "predict_begin":
            if not self._showing("epoch"):
                self._begin("prediction", "Prediction", None, record["time"])
        elif kind == "predict_batch_end":
            if self._showing("prediction"):
                self._advance(record)
        elif kind == "predict_end":
            if self._showing("prediction"):
                self._finish(record["logs"], record["time"])

    def _showing(self, what: str) -> bool:
        return self._shown is not None and self._shown.what == what

    def close(self) -> None:
        self._end()


_KINDS = frozenset({"train_begin", "epoch_begin", "batch_end", "epoch_end", "test_begin",
                    "test_batch_end", "test_end", "predict_begin", "predict_batch_end",
                    "predict_end", "train_end"})
