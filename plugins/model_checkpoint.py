"""ModelCheckpoint: decide when to save the model, and under which file name.

The plugin decides (``save_checkpoint`` with the formatted path and the evidence); a checkpoint
sink writes (:class:`sinks.hdf5.HDF5CheckpointWriter`, which this plugin adds to the bus itself
when the bus has no checkpoint writer, so adding ModelCheckpoint is all a user does). With a
Keras model the file is Keras's own (``keras.models.load_model`` reads a whole model,
``model.load_weights`` weights); with any other model adapter it is this library's HDF5 layout.
A resumed run gets the newest checkpoint back into the model (see the writer).

``save_top_k=k`` (Lightning's name) keeps the k best files by ``monitor``: each file that falls
out of the k best is a ``delete_checkpoint`` decision, which the writer carries out. Which files
are kept is decided from the observations alone, so a replay and a resumed run (fed the log's
observations again) know them as the run did. ``save_last=True`` also writes the newest model,
at every save occasion, as ``last`` with the template's ending, in the template's directory.
"""

from __future__ import annotations

import bisect
import os
import re
import string
import warnings
from collections.abc import Mapping
from typing import Any

from eventbus import ConfigError, Plugin, hookimpl
from eventbus.records import BatchEnd, DeleteCheckpoint, EpochEnd, SaveCheckpoint, TrainBegin
from eventbus.run import Run
from sinks import console

from .monitor import (
    KerasMonitorNames,
    Monitor,
    fmt,
    require_bool,
    require_int,
    require_path,
    require_real,
    require_save_freq,
    require_verbose,
)

__all__ = ["MissingFieldError", "ModelCheckpoint"]

_EXTENSIONS = (".keras", ".h5", ".hdf5")
#: The widest width or precision a field's format spec may ask for. ``{epoch:>60000000}`` would
#: make every save allocate 60 MB (and a replayed log with it, gigabytes); 64 is room to spare
#: for any real file name.
MAX_SPEC_NUMBER = 64
#: The longest filepath, as a template and once formatted: Linux's PATH_MAX.
MAX_PATH = 4096
_NUMBERS = re.compile(r"\d+")
#: A name save_top_k made unique (Lightning's rule): the stem, then ``-v`` and a version.
_VERSIONED = re.compile(r"(.*)-v([1-9][0-9]*)", re.DOTALL)


def _ending(path: str) -> str:
    """The ending a checkpoint's format is chosen by: ``.weights.h5``, ``.keras``, ``.h5``."""
    return ".weights.h5" if path.endswith(".weights.h5") else os.path.splitext(path)[1]


def _template_fields(filepath: str, plugin: str) -> tuple[str, ...]:
    """The field names of a ``str.format`` template; only plain names, and format specs whose
    widths and precisions are at most :data:`MAX_SPEC_NUMBER`, are allowed."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(filepath))
    except ValueError as exc:
        raise ConfigError(f"{plugin}: filepath {filepath!r} is not a valid template: {exc}",
                          plugin=plugin, field="filepath") from None
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ConfigError(f"{plugin}: filepath {filepath!r} has a positional field "
                              f"{{{name}}}; name it, e.g. {{epoch:02d}} or {{val_loss:.2f}}",
                              plugin=plugin, field="filepath")
        if not name.isidentifier():
            raise ConfigError(f"{plugin}: filepath {filepath!r}: field {{{name}}} is not a plain "
                              "name; attribute and index access are not allowed, only "
                              "{epoch}, {batch} and metric names", plugin=plugin,
                              field="filepath")
        if spec and "{" in spec:
            raise ConfigError(f"{plugin}: filepath {filepath!r}: field {{{name}}} has a nested "
                              "field in its format spec; write the spec out",
                              plugin=plugin, field="filepath")
        # Every run of digits in a spec is a width or a precision (a digit used as the fill
        # character is followed by an alignment sign, so it stands alone): bound them all.
        if spec and any(int(n) > MAX_SPEC_NUMBER for n in _NUMBERS.findall(spec)):
            raise ConfigError(f"{plugin}: filepath {filepath!r}: field {{{name}}} has the "
                              f"format spec {spec[:40]!r}, whose width or precision is over "
                              f"{MAX_SPEC_NUMBER}; a file name does not need it",
                              plugin=plugin, field="filepath")
        names.append(name)
    return tuple(names)


class MissingFieldError(ConfigError, KeyError):
    """A filepath field the save's logs do not have: a ConfigError (a ValueError) naming the
    plugin and the field, and a KeyError, as Keras's ModelCheckpoint raises for it."""

    def __str__(self) -> str:
        return str(self.args[0])  # not KeyError's quoted repr


class ModelCheckpoint(KerasMonitorNames, Plugin):
    """Save the model at the end of every epoch (or every ``save_freq`` batches).

    ``period=N`` is Keras 2's "every N epochs": accepted, with a DeprecationWarning. As in
    Keras, the best value and the save counters are kept across runs (``train_begin``) of the
    same instance.
    """

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", save_freq: str | int = "epoch",
                 initial_value_threshold: float | None = None, *, period: int | None = None,
                 save_top_k: int | None = None, save_last: bool = False):
        name = type(self).name
        self.filepath = require_path(filepath, "filepath", name)
        if len(self.filepath) > MAX_PATH:
            raise ConfigError(f"{name}: filepath is {len(self.filepath)} characters long (it "
                              f"starts {self.filepath[:40]!r}); a path has at most {MAX_PATH}",
                              plugin=name, field="filepath")
        if not self.filepath.endswith(_EXTENSIONS):
            raise ConfigError(f"{name}: filepath must end in .keras (a whole Keras model), "
                              ".weights.h5 (weights, as Keras writes them) or .h5/.hdf5 (e.g. "
                              f"'ckpt-{{epoch:02d}}.keras'); got {self.filepath!r}",
                              plugin=name, field="filepath")
        self._fields = _template_fields(self.filepath, name)
        self.verbose = require_verbose(verbose, name)
        self.save_best_only = require_bool(save_best_only, "save_best_only", name)
        #: The number of best files kept (None: Keras's behaviour, nothing is ever removed).
        self.save_top_k = None if save_top_k is None else \
            require_int(save_top_k, "save_top_k", name, minimum=1)
        if self.save_best_only and self.save_top_k not in (None, 1):
            raise ConfigError(f"{name}: save_best_only=True keeps one file and save_top_k="
                              f"{save_top_k} keeps {save_top_k}; give save_top_k alone",
                              plugin=name, field="save_top_k")
        self.save_last = require_bool(save_last, "save_last", name)
        #: Where save_last writes: "last" with the template's ending, in its directory.
        self.last_path = os.path.join(os.path.dirname(self.filepath),
                                      "last" + _ending(self.filepath))
        self.save_weights_only = require_bool(save_weights_only, "save_weights_only", name)
        if self.save_weights_only and self.filepath.endswith(".keras"):
            raise ConfigError(f"{name}: save_weights_only=True saves weights, and a .keras file "
                              f"is a whole model; name the file .weights.h5 (got "
                              f"{self.filepath!r})", plugin=name, field="filepath")
        require_save_freq(save_freq, name)
        self.save_freq = save_freq
        if save_freq == "epoch":
            self.unsubscribe("on_batch_end")  # saving per epoch costs nothing per batch
        self.period = 1
        if period is not None:
            warnings.warn(f"{name}: `period` is deprecated; it saves every `period` epochs. "
                          "Keras 3 uses `save_freq` (a number of batches) instead",
                          DeprecationWarning, stacklevel=3)
            if save_freq != "epoch":
                raise ConfigError(f"{name}: period counts epochs and save_freq={save_freq!r} "
                                  "counts batches; give one of them", plugin=name,
                                  field="period")
            self.period = require_int(period, "period", name, minimum=1)
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"{name}: mode must be 'auto', 'min' or 'max'; got {mode!r}",
                              plugin=name, field="mode")
        # The direction matters only when comparing, and is found at the first comparison
        # (_resolve); Keras 3 infers it (and may fail) at the first epoch_end whatever
        # save_best_only is.
        self.tracker: Monitor | None = None
        self._keras_monitor_names(monitor, mode, 0.0)
        if self.save_best_only or self.save_top_k is not None:
            threshold = None if initial_value_threshold is None else \
                require_real(initial_value_threshold, "initial_value_threshold", name)
            self.tracker = Monitor(monitor, mode, 0.0, plugin=name, initial=threshold)
        self._batches_since_save = 0
        self._epochs_since_save = 0
        #: The files save_top_k keeps, best first: (value, order saved, path, epoch, batch).
        #: Kept, as the best value is, across runs of the same instance.
        self._kept: list[tuple[float, int, str, int, int | None]] = []
        # Beside it, kept in step: each entry's sort key (best first, then the order saved),
        # the kept paths, and per stem the lowest ``-vN`` that may be free. A save is found its
        # place and a name in time that does not grow with the files kept (a header asking
        # save_top_k=10**15 made replay quadratic in the epochs).
        self._keys: list[tuple[float, int]] = []
        self._kept_paths: set[str] = set()
        self._free_version: dict[str, int] = {}
        self._saves = 0

    @property
    def kept(self) -> list[str]:
        """The paths of the files ``save_top_k`` keeps now, best first."""
        return [entry[2] for entry in self._kept]

    @hookimpl
    def on_attach(self, run: Run) -> None:
        if self.verbose > 0:
            console.attach(run)  # the messages are the decisions; a console sink prints them
        if any(getattr(p, "writes_checkpoints", False) for p in (*run.plugins, *run.sinks)):
            return
        from sinks.hdf5 import HDF5CheckpointWriter

        writer = HDF5CheckpointWriter()
        writer.auto = True
        run.add_sink(writer)

    @hookimpl
    def on_train_begin(self, event: TrainBegin) -> None:
        # As Keras (which has no on_train_begin here): the best value and the save counters
        # carry over to the next fit() of the same instance, so a staged fit keeps the best
        # file the best of all stages. Only the missing-monitor warning is once per run.
        if self.tracker is not None:
            self.tracker.warned = False

    @hookimpl
    def on_epoch_end(self, event: EpochEnd) -> Any:
        if self.save_freq != "epoch":
            return None
        self._epochs_since_save += 1
        if self._epochs_since_save < self.period:
            return None
        self._epochs_since_save = 0
        return self._occasion(event.epoch, None, None, event.logs)

    @hookimpl
    def on_batch_end(self, event: BatchEnd) -> Any:
        if self.save_freq == "epoch":
            return None
        self._batches_since_save += 1
        if self._batches_since_save < self.save_freq:
            return None
        self._batches_since_save = 0
        epoch = event.epoch if event.epoch is not None else 0
        return self._occasion(epoch, event.batch, event.step, event.logs)

    def _occasion(self, epoch: int, batch: int | None, step: int | None,
                  logs: Mapping[str, float]) -> Any:
        """The decisions of one save occasion: the template's file (Keras's rule, or the top
        k's with what falls out of them), then ``last``."""
        path = self._format(epoch, batch, logs)
        evidence: dict[str, Any] = {"epoch": epoch, "batch": batch, "step": step,
                                    "filepath": self.filepath, "save_freq": self.save_freq}
        if batch is None:
            where = f"the end of epoch {epoch + 1}"
        else:
            where = f"batch {batch + 1} of epoch {epoch + 1} (every {self.save_freq} batches)"
        if self.save_top_k is not None:
            out = self._top_k(path, epoch, where, evidence, logs)
        else:
            decision = self._consider(path, where, evidence, logs)
            out = [] if decision is None else [decision]
        if self.save_last:
            out.append(SaveCheckpoint(
                path=self.last_path, weights_only=self.save_weights_only, code="last",
                reason=f"the newest model, at {where}, as {self.last_path}",
                evidence={**evidence, "monitor": self.monitor,
                          "value": logs.get(self.monitor)}))
        return out or None

    def _top_k(self, path: str, epoch: int, where: str, evidence: dict[str, Any],
               logs: Mapping[str, float]) -> list[Any]:
        """Save if the value is among the k best so far; remove what that pushes out.

        A value enters when fewer than k files are kept or it beats the worst kept one
        strictly (a tie keeps the older file, as Lightning does); NaN never enters, and with
        ``initial_value_threshold`` a value must beat it too. The best is never removed: only
        the (k+1)-th is, and k is at least 1.
        """
        assert self.tracker is not None and self.save_top_k is not None
        monitor, k = self.tracker, self.save_top_k
        name = monitor.monitor
        current = logs.get(name)
        if current is None:
            warning = monitor.missing(
                logs, f"Can save the {k} best models only with {name} available; available: "
                      f"{','.join(logs)}. Not saving.")
            return [] if warning is None else [warning]
        self._resolve(evidence)
        worst = self._kept[-1][0] if len(self._kept) >= k else None
        if not monitor.beats(current, monitor.initial) or \
                (worst is not None and not monitor.beats(current, worst)):
            return []
        previous = monitor.best
        monitor.update(current)
        path = self._unique(path)
        self._saves += 1
        # Best first; equal values keep the order they were saved in.
        key = (current if monitor.mode == "min" else -current, self._saves)
        index = bisect.bisect_right(self._keys, key)
        self._keys.insert(index, key)
        self._kept.insert(index, (current, self._saves, path, epoch, evidence["batch"]))
        self._kept_paths.add(path)
        rank = index + 1
        out: list[Any] = [SaveCheckpoint(
            path=path, weights_only=self.save_weights_only, code="top_k",
            reason=f"{name} = {fmt(current)} at {where} is number {rank} of the {k} best",
            evidence={**evidence, "monitor": name, "value": current, "best": previous,
                      "mode": monitor.mode, "save_top_k": k, "rank": rank})]
        for value, _, gone, gone_epoch, gone_batch in self._kept[k:]:
            at = f"epoch {gone_epoch + 1}" + ("" if gone_batch is None else
                                              f" batch {gone_batch + 1}")
            out.append(DeleteCheckpoint(
                path=gone, code="not_top_k",
                reason=f"{at} ({name} {fmt(value)}) is no longer among the {k} best",
                evidence={"monitor": name, "value": value, "epoch": gone_epoch,
                          "batch": gone_batch,
                          "save_top_k": k, "mode": monitor.mode, "displaced_by": path,
                          "displaced_by_value": current, "kept": self.kept[:k]}))
        for entry in self._kept[k:]:
            self._freed(entry[2])
        del self._kept[k:]
        del self._keys[k:]
        return out

    def _freed(self, path: str) -> None:
        """``path`` is kept no more: its name, and its ``-vN`` if it has one, may be taken."""
        self._kept_paths.discard(path)
        ending = _ending(path)
        versioned = _VERSIONED.fullmatch(path[:len(path) - len(ending)])
        if versioned is not None:
            stem, version = versioned[1] + ending, int(versioned[2])
            self._free_version[stem] = min(self._free_version.get(stem, 1), version)

    def _unique(self, path: str) -> str:
        """``path``, or, when a kept file or ``last`` is there already, ``path`` with ``-v1``,
        ``-v2``, ... before its ending (Lightning's rule): a new save never overwrites a file
        that is kept."""
        kept, last = self._kept_paths, self.last_path if self.save_last else None
        if path not in kept and path != last:
            return path
        ending = _ending(path)
        stem = path[:len(path) - len(ending)]
        # Every version below the one noted for this path is taken (a version is noted free
        # again when its file goes): the first free one is found from there.
        version = self._free_version.get(path, 1)
        while (name := f"{stem}-v{version}{ending}") in kept or name == last:
            version += 1
        self._free_version[path] = version + 1
        return name

    def _consider(self, path: str, where: str, evidence: dict[str, Any],
                  logs: Mapping[str, float]) -> Any:
        if self.tracker is None:
            value = logs.get(self.monitor)
            batch = evidence["batch"]
            code = "epoch" if batch is None and self.period == 1 else \
                ("period" if batch is None else "save_freq")
            if code == "period":
                where += f" (every {self.period} epochs)"
            return SaveCheckpoint(path=path, weights_only=self.save_weights_only, code=code,
                                  reason=f"save at {where}",
                                  evidence={**evidence, "monitor": self.monitor,
                                            "value": value})
        name = self.tracker.monitor
        current = logs.get(name)
        if current is None:
            return self.tracker.missing(
                logs, f"Can save best model only with {name} available; available: "
                      f"{','.join(logs)}. Not saving.")
        self._resolve(evidence)
        previous = self.tracker.best
        if not self.tracker.update(current):
            return None
        return SaveCheckpoint(
            path=path, weights_only=self.save_weights_only, code="improved",
            reason=(f"{name} improved from {fmt(previous)} to {fmt(current)} at {where}"
                    if previous is not None else f"{name} = {fmt(current)} at {where}: the "
                    "first value, so the best so far"),
            evidence={**evidence, "monitor": name, "value": current, "best": previous,
                      "mode": self.tracker.mode})

    def _resolve(self, evidence: Mapping[str, Any]) -> None:
        """The direction, at the first comparison (a save occasion whose logs carry the
        metric), as Keras 3 sets it at the first ``epoch_end``: a name ``mode="auto"`` cannot
        place raises the ConfigError here, naming the event."""
        assert self.tracker is not None
        if self.tracker.mode is None:
            epoch, batch = evidence["epoch"] + 1, evidence["batch"]
            self.tracker.resolve(f"epoch_end (epoch {epoch})" if batch is None
                                 else f"batch_end (batch {batch + 1} of epoch {epoch})")

    def _format(self, epoch: int, batch: int | None, logs: Mapping[str, float]) -> str:
        values: dict[str, Any] = dict(logs)
        values["epoch"] = epoch + 1  # 1-based, as Keras names files
        if batch is not None and "batch" not in logs:
            values["batch"] = batch + 1
        missing = [f for f in self._fields if f not in values]
        if missing:
            raise MissingFieldError(
                f"{type(self).name}: filepath {self.filepath!r} needs {{{missing[0]}}}, which "
                f"is not available at epoch {epoch + 1}"
                + (f" batch {batch + 1}" if batch is not None else "")
                + f"; available: {', '.join(sorted(values))}",
                plugin=type(self).name, field="filepath")
        try:
            path = self.filepath.format(**values)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{type(self).name}: filepath {self.filepath!r} cannot be "
                              f"formatted with {values}: {exc}", plugin=type(self).name,
                              field="filepath") from None
        if len(path) > MAX_PATH:
            # Bounded specs still add up: many fields, or a float like 1e300 under 'f'.
            raise ConfigError(f"{type(self).name}: filepath {self.filepath!r} formats to "
                              f"{len(path)} characters at epoch {epoch + 1} (it starts "
                              f"{path[:40]!r}); a path has at most {MAX_PATH}",
                              plugin=type(self).name, field="filepath")
        return path
