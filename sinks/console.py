"""Console messages: what verbose callbacks print, made from the records, in Keras's words.

Plugins never print: a decision's reason and evidence are the message. This sink prints the
lines Keras's callbacks print with ``verbose=1``, for the plugins of the run whose ``verbose``
is above 0 (TerminateOnNaN's defaults to 1, as Keras always prints it), from the records as
they are written::

    Epoch 9: early stopping
    Restoring model weights from the end of the best epoch: 6.
    Epoch 4: ReduceLROnPlateau reducing learning rate to 0.005.
    Epoch 1: LearningRateScheduler setting learning rate to 0.1.
    Epoch 3: val_loss improved from 0.41000 to 0.39000, saving model to ckpt-03.h5
    Epoch 4: val_loss did not improve from 0.39000
    Epoch 4: finished saving model to ckpt-04.h5
    Batch 7: Invalid loss, terminating training

A plugin the sink does not know gets one line per decision: ``Epoch 3: MyPlugin: <reason>``.
Replay and resume write through no sink, so they print nothing.

Built-in plugins with ``verbose`` add this sink themselves (:func:`attach`), one per run. Lines
go to ``stream`` or, with ``logger``, to that ``logging.Logger`` at INFO; given neither, they go
where Keras sends its own (:func:`print_msg`, as ``keras.utils.io_utils.print_msg``): standard
output, or the ``eventbus.console`` logger at INFO while interactive logging is off.

Interactive logging is this module's switch (:func:`disable_interactive_logging`, as
``keras.config.disable_interactive_logging``); left alone, it follows Keras's own setting when
Keras is already imported, and is on otherwise. Keras is never imported for it.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from eventbus import Sink
from eventbus.records import DECISION_KINDS
from eventbus.run import Run

from . import progress

__all__ = ["ConsoleSink", "attach", "disable_interactive_logging", "enable_interactive_logging",
           "is_interactive_logging_enabled", "print_msg"]

#: Where messages go while interactive logging is off.
LOGGER = logging.getLogger("eventbus.console")

# None: follow Keras's setting if Keras is imported, else on.
_interactive: bool | None = None


def enable_interactive_logging() -> None:
    """Print messages and progress to standard output (the default)."""
    global _interactive
    _interactive = True


def disable_interactive_logging() -> None:
    """Send messages and progress lines to the ``eventbus.console`` logger at INFO instead of
    standard output (a job on a server), as Keras's switch of the same name does."""
    global _interactive
    _interactive = False


def is_interactive_logging_enabled() -> bool:
    """This module's switch if it was set; else Keras's, if Keras is imported; else True."""
    if _interactive is not None:
        return _interactive
    # Keras keeps its switch in its global state; read it only where Keras is already loaded.
    state = sys.modules.get("keras.src.backend.common.global_state")
    if state is not None:
        try:
            return bool(state.get_global_attribute("interactive_logging", True))
        except Exception:  # another Keras layout: its switch cannot be read, keep the default
            return True
    return True


def print_msg(message: str, line_break: bool = True) -> None:
    """Print ``message`` to standard output, or log it at INFO while interactive logging is off
    (``keras.utils.io_utils.print_msg``)."""
    if not is_interactive_logging_enabled():
        LOGGER.info(message)
        return
    out = sys.stdout
    progress.make_room(out)
    text = f"{message}\n" if line_break else message
    try:
        out.write(text)
    except UnicodeEncodeError:  # an ASCII console: what it cannot show is replaced
        encoding = getattr(out, "encoding", None) or "utf-8"
        out.write(text.encode(encoding, errors="replace").decode(encoding))
    out.flush()

_OBSERVATIONS = ("epoch_begin", "epoch_end", "train_begin", "train_end")


def attach(run: Run) -> None:
    """Give ``run`` a console sink unless it has one (a verbose plugin's ``on_attach``)."""
    if not any(isinstance(sink, ConsoleSink) for sink in getattr(run, "sinks", ())):
        run.add_sink(ConsoleSink())


def _epoch(record: dict[str, Any]) -> str:
    epoch = record.get("epoch")
    return "-" if epoch is None else str(epoch + 1)


class ConsoleSink(Sink):
    """Print the messages of the run's verbose plugins (see the module documentation).

    ``stream``: where to write; ``logger``: a logger that gets each line at INFO instead.
    Given neither, each line goes through :func:`print_msg`.
    """

    name = "console"
    takes = frozenset({*DECISION_KINDS, *_OBSERVATIONS, "checkpoint_saved"})

    def __init__(self, stream: IO[str] | None = None, *, logger: logging.Logger | None = None):
        self._stream = stream
        self._logger = logger
        self._run: Run | None = None
        self._kinds: dict[str, str] = {}  # label -> the plugin's class name, for verbose ones
        self._saves: dict[int, tuple[str, dict[str, Any]]] = {}  # seq -> (source, decision)
        self._best: dict[str, float | None] = {}  # ModelCheckpoint label -> best so far
        self._stopped: dict[str, int | None] = {}  # EarlyStopping label -> stop epoch
        # Lines that wait for the decisions of the event that made them (a schedule's rate, a
        # checkpoint that did not improve): printed at the next observation.
        self._waiting: dict[tuple[str, str], str] = {}

    def open(self, run: Run) -> None:
        self._run = run
        self._learn(run)

    def _learn(self, run: Run) -> None:
        """The verbose plugins of the run, by label (plugins registered later included)."""
        for plugin in run.plugins:
            label = run.label(plugin)
            if label in self._kinds:
                continue
            verbose = getattr(plugin, "verbose", 0)
            if isinstance(verbose, int) and not isinstance(verbose, bool) and verbose > 0:
                self._kinds[label] = _kind_of(plugin)
                if self._kinds[label] == "ModelCheckpoint":
                    tracker = getattr(plugin, "tracker", None)  # the plugin's Monitor
                    self._best[label] = getattr(tracker, "initial", None)

    def _print(self, line: str) -> None:
        if self._logger is not None:
            self._logger.info(line)
        elif self._stream is not None:
            progress.make_room(self._stream)
            self._stream.write(line + "\n")
            self._stream.flush()
        else:
            print_msg(line)

    def write(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind in _OBSERVATIONS:
            self._observation(kind, record)
            return
        if kind == "checkpoint_saved":
            saved = self._saves.pop(record.get("cause_seq") or -1, None)
            if saved is not None:
                self._print(f"\nEpoch {_epoch(saved[1])}: finished saving model to "
                            f"{record['path']}")
            return
        source = record.get("source", "")
        if source not in self._kinds and self._run is not None:
            self._learn(self._run)
        what = self._kinds.get(source)
        if what is None:
            return
        line = _decision_line(what, kind, record)
        if what == "EarlyStopping" and kind == "stop_training":
            self._stopped[source] = record.get("epoch")
        elif what == "LearningRateScheduler" and kind == "set_learning_rate":
            self._waiting[(source, "rate")] = line  # replaces the unchanged rate's line
        elif what == "ModelCheckpoint" and kind == "save_checkpoint":
            self._waiting.pop((source, "best"), None)
            self._saves[record["seq"]] = (source, record)
            value = record.get("evidence", {}).get("value")
            if record.get("code") == "improved" and isinstance(value, float):
                self._best[source] = value
            self._print(line)
        elif line:
            self._print(line)

    def _observation(self, kind: str, record: dict[str, Any]) -> None:
        self._release()
        logs = record.get("logs", {})
        for source, what in self._kinds.items():
            if what == "LearningRateScheduler" and kind == "epoch_begin":
                rate = logs.get("learning_rate")
                if rate is not None:
                    self._waiting[(source, "rate")] = (
                        f"\nEpoch {_epoch(record)}: LearningRateScheduler setting learning "
                        f"rate to {rate}.")
            elif what == "ModelCheckpoint" and kind == "epoch_end":
                self._not_improved(source, record)
            elif what == "EarlyStopping" and kind == "train_end" and source in self._stopped:
                stopped = self._stopped.pop(source)
                self._print(f"Epoch {'-' if stopped is None else stopped + 1}: early stopping")

    def _not_improved(self, source: str, record: dict[str, Any]) -> None:
        """A best-only ModelCheckpoint prints when the epoch did not improve (cleared if it
        saves, at the decisions that follow the epoch's end)."""
        plugin = next((p for p in (self._run.plugins if self._run else ())
                       if self._run is not None and self._run.label(p) == source), None)
        monitor = getattr(plugin, "tracker", None)  # the plugin's Monitor
        name = getattr(monitor, "monitor", None)
        if not getattr(plugin, "save_best_only", False) or name not in record.get("logs", {}) \
                or getattr(plugin, "save_freq", "epoch") != "epoch" \
                or getattr(monitor, "mode", "min") is None:  # unplaced: it compared nothing
            return
        best = self._best.get(source)
        if best is None:  # no best yet: the worst value, as Keras 2 shows it
            best = float("inf") if getattr(monitor, "mode", "min") == "min" else float("-inf")
        shown = f"{best:.5f}"
        self._waiting[(source, "best")] = (f"\nEpoch {_epoch(record)}: {name} did not improve "
                                           f"from {shown}")

    def _release(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for line in waiting.values():
            self._print(line)

    def flush(self) -> None:
        self._release()

    def close(self) -> None:
        self._release()


def _kind_of(plugin: object) -> str:
    """The built-in plugin ``plugin`` is (its class or a base), or its own class name."""
    known = ("EarlyStopping", "ReduceLROnPlateau", "LearningRateScheduler", "ModelCheckpoint",
             "TerminateOnNaN")
    for cls in type(plugin).__mro__:
        if cls.__name__ in known:
            return cls.__name__
    return type(plugin).__name__


def _decision_line(what: str, kind: str, record: dict[str, Any]) -> str:
    evidence = record.get("evidence", {})
    epoch = _epoch(record)
    if what == "EarlyStopping":
        if kind == "restore_weights":
            best = evidence.get("best_epoch")
            return ("Restoring model weights from the end of the best epoch: "
                    f"{'-' if best is None else best + 1}.")
        return ""  # the stop is told at train_end, as Keras tells it
    if what == "ReduceLROnPlateau" and kind == "set_learning_rate":
        return f"\nEpoch {epoch}: ReduceLROnPlateau reducing learning rate to {record['value']}."
    if what == "LearningRateScheduler" and kind == "set_learning_rate":
        return (f"\nEpoch {epoch}: LearningRateScheduler setting learning rate to "
                f"{record['value']}.")
    if what == "ModelCheckpoint" and kind == "save_checkpoint":
        if record.get("code") == "improved":
            best = evidence.get("best")
            if best is None:  # the first value: improved from the worst, as Keras 2 shows it
                best = float("-inf") if evidence.get("mode") == "max" else float("inf")
            shown = f"{best:.5f}"
            return (f"\nEpoch {epoch}: {evidence.get('monitor')} improved from {shown} to "
                    f"{evidence.get('value'):.5f}, saving model to {record['path']}")
        return f"\nEpoch {epoch}: saving model to {record['path']}"
    if what == "TerminateOnNaN" and kind == "stop_training":
        return f"Batch {evidence.get('batch')}: Invalid loss, terminating training"
    if what in ("EarlyStopping", "ReduceLROnPlateau", "LearningRateScheduler",
                "ModelCheckpoint", "TerminateOnNaN"):
        return ""
    return f"Epoch {epoch}: {record.get('source')}: {record.get('reason')}"
