"""TensorBoard: metrics, weights, embeddings and decisions as TensorBoard event files.

Keras's layout: epoch metrics go to ``<log_dir>/train`` as ``epoch_<name>`` and the ``val_``
metrics, prefix removed, to ``<log_dir>/validation``, both at step = epoch; the learning rate
becomes ``epoch_learning_rate``, as Keras's TensorBoard writes it for every optimizer: the
epoch's ``learning_rate`` where its logs carry one, else, live, the model's rate at the epoch's
end, and from a log (a conversion, a resume's write-back) the rate the log tells (the header's
``meta.learning_rate``, then each ``set_learning_rate`` decision's), which is the live one
unless the loop moved the rate itself. With an integer
``update_freq`` batch metrics go to ``train`` as ``batch_<name>`` every ``update_freq`` batches,
at step = batches done. With ``write_steps_per_second`` the training steps per second go to
``train`` too: ``epoch_steps_per_second`` (batches of the epoch over the time from its
``epoch_begin`` to its ``epoch_end``) and, with a batch ``update_freq``,
``batch_steps_per_second`` (one over the time from the batch's ``batch_begin`` to its
``batch_end``); times are the events' own, so converting a log gives the values the live run
wrote. A sink: it takes those records as they are recorded; the writing happens on
:class:`sinks.tensorboard.TensorBoardWriter`'s thread, and the training thread only queues.

Decisions: all the decisions of one step (the epoch) go into one Markdown table under
``decisions`` (TensorBoard's server shows one text per step and tag), written once the step is
over (the next epoch starts, ``train_end`` and its decisions are done, or the run closes), and
each also into a marker scalar ``decisions/<what>`` (``stop``, ``lr_cut``, ``checkpoint``, ...)
at that step, so a chart shows where it happened. The run's parameters (every plugin's, the
loop's ``params``, the log header's meta) start a session in TensorBoard's HParams tab, written
to the log directory itself, whose ``train`` and ``validation`` scalars are the session's
metrics.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from eventbus import Plugin, Sink
from eventbus.errors import ConfigError
from eventbus.records import DECISION_KINDS, SinkFailed
from eventbus.records import Warning as WarningRecord
from eventbus.run import Run

from .monitor import require_bool, require_names, require_path, require_real

__all__ = ["TensorBoard", "decisions_table", "number_text"]

_NOT_LOGGED = frozenset({"batch", "size"})


def _image_of(weight: np.ndarray) -> np.ndarray | None:
    """A weight as a 2-D picture, as Keras lays it out; None for shapes Keras does not draw."""
    w = np.squeeze(np.asarray(weight))
    if w.ndim == 0:
        return None
    if w.ndim == 1:  # a bias: one row
        return w.reshape(1, -1)
    if w.ndim == 2:  # a dense kernel, wide side horizontal
        return w.T if w.shape[0] > w.shape[1] else w
    if w.ndim == 3:  # a 1-D convolution kernel (channels last): one tile per channel
        return np.concatenate([w[:, :, i] for i in range(w.shape[2])], axis=1)
    return None


def _layer(weight_name: str) -> str:
    return weight_name.rsplit("/", 1)[0] if "/" in weight_name else weight_name


def _layer_names(weight_name: str, path: str | None = None) -> set[str]:
    """The names a weight's layer answers to: its path and every tail of it, so Keras's
    layer name (``embedding``) finds ``sequential/embedding/embeddings`` as its path does;
    those of the weight's key and of the adapter's other path for it (``weight_paths()``:
    ``0.embedding/embeddings`` is Keras's ``sequential/word_embedding/embeddings``)."""
    names = set()
    for name in (weight_name, path) if path else (weight_name,):
        parts = _layer(name).split("/")
        names.update("/".join(parts[i:]) for i in range(len(parts)))
    return names


def number_text(value: Any) -> str:
    """A number as a person reads it: six significant digits, no float noise
    (``0.010000000000000002`` is ``0.01``, ``0.5603481`` is ``0.560348``), as the plugins'
    reasons print them; integers whole; anything else as ``str``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return format(value, ".6g")


_CELL_ESCAPES = str.maketrans({"|": "\\|", "\n": " ", "\r": " ", "<": "&lt;", "`": "\\`",
                               "*": "\\*", "[": "\\[", "\\": "\\\\"})


def _cell(text: str) -> str:
    """Text for a Markdown table cell: pipes and Markdown's marks escaped, one line. ``_`` is
    left as it is: TensorBoard's Markdown ignores it inside words (``val_loss``), and names
    stay searchable in the raw text."""
    return text.translate(_CELL_ESCAPES)


def _what(record: dict[str, Any]) -> str:
    """The decision column: the kind, and for a learning rate its change."""
    kind = record["kind"]
    if kind == "set_learning_rate":
        previous = record.get("previous")
        before = number_text(previous) if previous is not None else "?"
        return f"{kind} {before} → {number_text(record.get('value'))}"
    return kind


def decisions_table(records: Sequence[Mapping[str, Any]], step: int | None = None) -> str:
    """The decisions of one step as the Markdown text written under ``decisions``: a line
    naming the epoch as counted from 1 (TensorBoard's step counts from 0, as Keras's epochs),
    then a table with one row each, in the order they were recorded: its source, what it
    decided and why."""
    rows = [] if step is None else [
        f"Epoch {step + 1} (step {step}: TensorBoard counts epochs from 0)", ""]
    rows += ["| source | decision | reason |", "| --- | --- | --- |"]
    for record in records:
        rows.append(f"| {_cell(str(record.get('source') or ''))} | "
                    f"{_cell(_what(dict(record)))} | {_cell(str(record.get('reason') or ''))} |")
    return "\n".join(rows)


#: The marker scalar (under ``decisions/``) of each decision kind; a learning rate is a cut, a
#: raise or a set.
_MARKERS = {"stop_training": "stop", "save_checkpoint": "checkpoint",
            "snapshot_weights": "snapshot", "restore_weights": "restore"}


def _marker(record: Mapping[str, Any]) -> str:
    kind = record["kind"]
    if kind == "set_learning_rate":
        previous, value = record.get("previous"), record.get("value")
        if previous is None or value is None or value == previous:
            return "lr_set"
        return "lr_cut" if value < previous else "lr_raise"
    return _MARKERS.get(kind, kind)


def _hparam(value: Any) -> bool | float | str:
    """A value for the HParams tab: a bool, a number or a string (other values as JSON)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class TensorBoard(Plugin, Sink):
    """Write what the run reports where TensorBoard reads it.

    Parameters are Keras 3's, in its order. ``histogram_freq``: weight histograms
    (``<weight>/histogram``, step = epoch) every that many epochs, from the model adapter's
    ``get_weights()``; ``write_graph``: the model adapter's ``get_config()`` as text
    (``model_config``) at the start; ``write_images``: each weight as a picture too
    (``<weight>/image``); ``write_steps_per_second``: training steps per second, per epoch
    (``epoch_steps_per_second``) and, with a batch ``update_freq``, per batch
    (``batch_steps_per_second``), from the events' times; ``update_freq``: ``"epoch"``,
    ``"batch"`` or a number of batches; ``profile_batch``: only ``0`` (profiling needs
    TensorFlow's profiler); ``embeddings_freq``, ``embeddings_metadata`` and (keyword-only, from
    Keras 2) ``embeddings_layer_names``: projector files for embedding matrices, layers named
    as Keras names them (``embedding``) or with their path (``sequential/embedding``).
    Decisions (a learning rate cut, an early stop) are written as one table per epoch under
    ``decisions`` and as ``decisions/<what>`` markers; the run's parameters go to the HParams
    tab.
    """

    side_effects = True

    def __init__(self, log_dir: str | os.PathLike[str] = "./logs", histogram_freq: int = 0,
                 write_graph: bool = True, write_images: bool = False,
                 write_steps_per_second: bool = False, update_freq: str | int = "epoch",
                 profile_batch: int = 0, embeddings_freq: int = 0,
                 embeddings_metadata: Mapping[str, str] | str | None = None, *,
                 embeddings_layer_names: Sequence[str] | str | None = None,
                 flush_timeout: float = 30.0):
        name = type(self).name
        self.log_dir = require_path(log_dir, "log_dir", name)
        for field, value in (("histogram_freq", histogram_freq),
                             ("embeddings_freq", embeddings_freq)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}: {field} must be an int >= 0; got {value!r}",
                                  plugin=name, field=field)
        if update_freq == "epoch":
            self._every: int | None = None
        elif update_freq == "batch":
            self._every = 1
        elif isinstance(update_freq, int) and not isinstance(update_freq, bool) \
                and update_freq > 0:
            self._every = update_freq
        else:
            raise ConfigError(f"{name}: update_freq must be 'epoch', 'batch' or an int > 0; "
                              f"got {update_freq!r}", plugin=name, field="update_freq")
        if isinstance(profile_batch, bool) or profile_batch != 0:
            raise ConfigError(f"{name}: profile_batch must be 0 (no profiling): profiling needs "
                              f"TensorFlow's profiler, which this plugin does not run; got "
                              f"{profile_batch!r}", plugin=name, field="profile_batch")
        self.histogram_freq = histogram_freq
        self.write_graph = require_bool(write_graph, "write_graph", name)
        self.write_images = require_bool(write_images, "write_images", name)
        self.write_steps_per_second = require_bool(write_steps_per_second,
                                                   "write_steps_per_second", name)
        self.update_freq = 1 if update_freq == "batch" else update_freq  # as Keras keeps it
        self.profile_batch = 0
        self.embeddings_freq = embeddings_freq
        self.embeddings_layer_names = require_names(embeddings_layer_names,
                                                    "embeddings_layer_names", name)
        self.embeddings_metadata = _metadata(embeddings_metadata, name)
        self.flush_timeout = require_real(flush_timeout, "flush_timeout", name, minimum=0.0)
        # The records it takes: per batch only with a batch update_freq, and batch begins only
        # to time those batches; the bus never hands it the others.
        takes = {"header", "train_begin", "epoch_begin", "epoch_end", "test_end", "train_end",
                 *DECISION_KINDS}
        if self._every is not None:
            takes.add("batch_end")
            if self.write_steps_per_second:
                takes.add("batch_begin")
        self.takes = frozenset(takes)
        self._run: Run | None = None
        self._label = self.name
        # The rate as the log tells it (the header's, then each set_learning_rate decision's):
        # Keras's TensorBoard writes epoch_learning_rate whether or not the logs carry it.
        self._learning_rate: float | None = None
        self._sink: Any = None
        self._warned: set[str] = set()
        # Where the current epoch and batch began: (epoch or step, time, steps done).
        self._epoch_began: tuple[int, float, int] | None = None
        self._batch_began: tuple[int, float] | None = None
        # Writing back what a crash kept out of the files (catch_up), not the run going on.
        self._catching_up = False
        self._opened = False  # the run opened it (a resume catches up before it opens)
        # When the run began (its train_begin), for the model configuration a resume writes.
        self._began: float | None = None
        # A flush ran out of time: the next ones wait only once the writer has caught up.
        self._lagging = False
        # The decisions of the step not yet over: (step, decision records).
        self._step_decisions: tuple[int, list[dict[str, Any]]] | None = None
        # The HParams session: values from the header, then the loop's params; started once.
        self._hparams: dict[str, bool | float | str] = {}
        self._group = ""
        self._session_started = False

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["log_dir"] = self.log_dir
        config["embeddings_metadata"] = self.embeddings_metadata  # paths as text
        return config

    # --- the sink ------------------------------------------------------------------------------

    def open(self, run: Run) -> None:
        self._run = run
        self._opened = True
        self._label = run.label(self)
        if run.resumed:
            # Drop what a crashed attempt wrote past the point the run resumes from.
            self._get().truncate(_resume_filter(run.initial_epoch, run.step))
            # A resumed run publishes no train_begin: the model's configuration is written
            # here if a crash kept it out of the files.
            self._model_config(self._began if self._began is not None else time.time(),
                               only_missing=True)

    def catch_up(self, record: dict[str, Any], run: Run) -> None:
        """On resume, before ``open``: a record of the run so far, written back where the files
        lack it (a crash of the process can end the run between the event log's flush and
        this sink's). Histograms, images and embeddings are not: the log holds no weights."""
        self._run = run
        self._label = run.label(self)
        self._catching_up = True
        try:
            self._take(record)
        finally:
            self._catching_up = False

    def flush(self) -> None:
        """At every epoch end and decision: wait (up to ``flush_timeout``) until the writer
        thread has written everything queued, so that what the event log holds the files hold
        too, whenever the process is killed."""
        sink = self._sink
        if sink is None:
            return
        wait = self.flush_timeout if not self._lagging or sink.pending == 0 else 0.0
        if sink.flush(wait, sync=False):
            self._lagging = False
        elif not self._lagging:
            self._lagging = True
            if self._run is not None:
                self._run.report(WarningRecord(
                    source=self._label, message=f"TensorBoard: the event files are "
                    f"{sink.pending} item(s) behind after {self.flush_timeout}s; until the "
                    "writer catches up, a crash loses what they lack of the event log (a "
                    "resume writes back the scalars and decisions)",
                    details={"pending": sink.pending}))

    def sync(self) -> None:
        """At ``train_end``, after the decisions made there (a ``restore_weights``): the last
        epoch's table is whole, so it is written now rather than at ``close()`` (a bus kept
        open after training, as in a notebook, may be closed late or never)."""
        self._write_decisions()
        self.flush()

    def _open(self) -> Any:
        from sinks.tensorboard import TensorBoardWriter

        run, label = self._run, self._label

        def on_error(what: str, exc: BaseException) -> None:
            if run is not None:  # run.report is safe from another thread
                run.report(SinkFailed(sink=label, event=what, error=type(exc).__name__,
                                      message=str(exc)))

        # The run's id in its files' names: a resume cuts and reads back only its own files,
        # not those another run wrote into the same log directory. The log's (its header's)
        # first: a conversion writes a recorded run through a bus of its own.
        run_id = self._group or (run.run_id if run is not None else None)
        self._sink = TensorBoardWriter(self.log_dir, on_error=on_error, run_id=run_id or None)
        return self._sink

    def _get(self) -> Any:
        # A loop that never publishes train_begin: the first record written opens the files.
        return self._sink if self._sink is not None else self._open()

    def _warn_once(self, key: str, message: str, **details: Any) -> WarningRecord | None:
        if key in self._warned:
            return None
        self._warned.add(key)
        return WarningRecord(message=message, details=details)

    def write(self, record: dict[str, Any]) -> Any:
        return self._take(record)

    def _take(self, record: dict[str, Any]) -> Any:
        kind = record["kind"]
        if kind == "batch_end":
            return self._batch_end(record)
        if kind == "epoch_end":
            self._end_step_before(record["epoch"])
            self._start_session(record["time"])
            return self._epoch_end(record)
        if kind in DECISION_KINDS:
            return self._decision(record)
        if kind == "batch_begin":
            self._batch_began = (record["step"], record["time"])
        elif kind == "epoch_begin":
            self._get()
            self._end_step_before(record["epoch"])
            self._start_session(record["time"])
            if self.write_steps_per_second:
                steps = self._run.step if self._run is not None else 0
                self._epoch_began = (record["epoch"], record["time"], steps)
        elif kind == "train_begin":
            self._train_begin(record)
        elif kind == "test_end":
            self._test_end(record)
        elif kind == "train_end":
            return self._train_end(record)
        elif kind == "header":
            self._header(record)
        return None

    def _header(self, record: dict[str, Any]) -> None:
        """The run's parameters for the HParams tab: each deciding plugin's
        (``EarlyStopping.patience``) and the header's meta (``meta.seed``)."""
        self._group = str(record.get("run_id") or "")
        for spec in record.get("plugins") or ():
            if spec.get("side_effects"):  # an output's settings (a file name), not the run's
                continue
            label = spec.get("label") or spec.get("name", "")
            for key, value in (spec.get("params") or {}).items():
                if value is not None:  # unset: a column of nulls says nothing
                    self._hparams[f"{label}.{key}"] = _hparam(value)
        for key, value in (record.get("meta") or {}).items():
            if isinstance(value, (bool, int, float, str)):  # not the model's config
                self._hparams[f"meta.{key}"] = _hparam(value)
        self._learn_rate((record.get("meta") or {}).get("learning_rate"))

    def _rate_now(self) -> float | None:
        """The rate of the epoch ending, for a log whose epoch logs lack it: live, the model's
        (a scheduler of the loop's own moves it without a decision), as Keras's TensorBoard
        reads the optimizer's; from a log (a resume's write-back, a conversion), the rate the
        log tells."""
        run = self._run
        if run is not None and not self._catching_up:
            live = run.learning_rate
            if live is not None:
                return float(live)
        return self._learning_rate

    def _learn_rate(self, value: Any) -> None:
        if type(value) in (int, float) and math.isfinite(value):
            self._learning_rate = float(value)

    def _train_begin(self, record: dict[str, Any]) -> None:
        self._began = record["time"]
        if not self._catching_up:  # a resume writes it once it has the model (open)
            # A resumed run whose log had no train_begin (an interrupt before it) has it
            # written by open already.
            run = self._run
            self._model_config(record["time"], only_missing=run is not None and run.resumed)
        for key, value in (record.get("params") or {}).items():
            if value is not None:
                self._hparams[f"params.{key}"] = _hparam(value)
        self._start_session(record["time"])

    def _start_session(self, when: float) -> None:
        """Start the HParams session once, at ``train_begin`` (or the first epoch of a loop
        without one); a resume writes it back only where the files lack it."""
        if self._session_started:
            return
        self._session_started = True
        run = self._run
        resumed = run is not None and run.resumed
        self._get().hparams(".", dict(self._hparams), self._group or "run",
                            self._began if self._began is not None else when, when,
                            only_missing=self._catching_up or resumed)

    def _model_config(self, when: float, *, only_missing: bool = False) -> None:
        sink = self._get()
        model = getattr(self._run, "model", None)
        get_config = getattr(model, "get_config", None)
        if not self.write_graph or not callable(get_config):
            return
        text = json.dumps(get_config(), indent=2, sort_keys=True, default=str)
        sink.text("train", "model_config", f"```json\n{text}\n```", 0, when,
                  only_missing=only_missing)

    def _epoch_end(self, record: dict[str, Any]) -> Any:
        sink = self._get()
        epoch, when = record["epoch"], record["time"]
        train: dict[str, float] = {}
        validation: dict[str, float] = {}
        for key, value in record["logs"].items():
            if key.startswith("val_"):
                validation[key[4:]] = value
            else:
                train[key] = value
        if "learning_rate" not in train:
            rate = self._rate_now()
            if rate is not None:
                train["learning_rate"] = rate
        if self.write_steps_per_second:
            rate = self._epoch_rate(epoch, when)
            if rate is not None:
                train.setdefault("steps_per_second", rate)
        sink.scalars("train", train, epoch, when, "epoch_", only_missing=self._catching_up)
        sink.scalars("validation", validation, epoch, when, "epoch_",
                     only_missing=self._catching_up)
        if self._catching_up:
            return None  # the weights now are not the weights then
        histograms = self.histogram_freq and epoch % self.histogram_freq == 0
        # Keras draws images only with histograms; without them, every epoch.
        images = self.write_images and (histograms or not self.histogram_freq)
        embeddings = self.embeddings_freq and epoch % self.embeddings_freq == 0
        if not (histograms or images or embeddings):
            return None
        weights = self._weights()
        if weights is None:
            return self._warn_once("model", "TensorBoard: histograms, images and embeddings need "
                                   "a model adapter with get_weights(); the bus has none")
        for name, value in weights.items():
            if histograms:
                sink.histogram("train", f"{name}/histogram", value, epoch, when)
            if images:
                picture = _image_of(value)
                if picture is not None:
                    sink.image("train", f"{name}/image", picture, epoch, when)
        if embeddings:
            return self._embeddings(sink, weights, epoch)
        return None

    def _epoch_rate(self, epoch: int, when: float) -> float | None:
        """Training steps per second from the epoch's begin to its end (Keras's
        ``epoch_steps_per_second``); None when its begin was not seen, it had no training
        batch, or no time passed."""
        began = self._epoch_began
        if began is None or began[0] != epoch or self._run is None:
            return None
        steps = self._run.step - began[2]
        seconds = when - began[1]
        return steps / seconds if steps > 0 and seconds > 0 else None

    def _weights(self) -> dict[str, np.ndarray] | None:
        model = getattr(self._run, "model", None)
        if model is None or not callable(getattr(model, "get_weights", None)):
            return None
        # get_weights() returns copies (the adapter contract), taken here on the training
        # thread, so the writer thread never sees a weight change under it.
        return {name: np.asarray(value) for name, value in model.get_weights().items()}

    def _paths(self) -> dict[str, str]:
        """The adapter's other path of each weight key (``KerasModel``'s Keras paths, by which
        a Keras user names layers); empty for an adapter without ``weight_paths()``."""
        model = getattr(self._run, "model", None)
        paths = getattr(model, "weight_paths", None)
        return {str(k): str(v) for k, v in paths().items()} if callable(paths) else {}

    def _embeddings(self, sink: Any, weights: dict[str, np.ndarray], epoch: int) -> Any:
        # A layer is named by its weights' keys or by the adapter's paths (Keras's layer names).
        paths = self._paths()
        answers = {n: _layer_names(n, paths.get(n)) for n in weights}

        def shown(names: Any) -> list[str]:  # a key with the path a Keras user knows it by
            return [f"{n} ({paths[n]})" if paths.get(n, n) != n else n for n in sorted(names)]

        names = self.embeddings_layer_names
        if names:
            chosen = {n: w for n, w in weights.items() if answers[n] & set(names) and w.ndim == 2}
            found = set().union(*(answers[n] for n in chosen)) if chosen else set()
            missing = sorted(set(names) - found)
        else:  # every Embedding layer: Keras names their matrix "embeddings"
            chosen = {n: w for n, w in weights.items()
                      if n.rsplit("/", 1)[-1] == "embeddings" and w.ndim == 2}
            missing = []
        metadata: dict[str, str] = {}
        given = self.embeddings_metadata
        used: set[str] = set()
        for name in chosen:
            if isinstance(given, str):
                metadata[name] = given
                continue
            # Keyed by layer name, as Keras documents it, or by the layer's path.
            keys = sorted(answers[name] & set(given or {}), key=len, reverse=True)
            if keys:
                metadata[name] = os.fspath(given[keys[0]])  # type: ignore[index]
                used.add(keys[0])
        if chosen:
            sink.embeddings(chosen, epoch, metadata)
        warnings = []
        unused = sorted(set(given) - used) if isinstance(given, Mapping) and chosen else []
        if unused:  # a typo in a layer name would otherwise leave the labels out unseen
            warnings.append(self._warn_once(
                "embeddings_metadata", f"TensorBoard: embeddings_metadata names {unused}, "
                f"which match no embedding layer; the embedding matrices are {shown(chosen)}",
                unused=unused, embeddings=sorted(chosen)))
        if missing:
            warnings.append(self._warn_once(
                "embeddings", f"TensorBoard: no 2-D weights for embedding layers {missing}; "
                f"the weights are {shown(weights)}", missing=missing, weights=sorted(weights)))
        if unused or missing:
            return [w for w in warnings if w is not None] or None
        if not chosen:
            return self._warn_once("embeddings", "TensorBoard: embeddings_freq is set but the "
                                   "model has no embedding matrices (2-D weights named "
                                   "'.../embeddings'); name them with embeddings_layer_names")
        return None

    def _batch_end(self, record: dict[str, Any]) -> None:
        done = record["step"] + 1
        if done % self._every:  # type: ignore[operator]
            return
        logs = record["logs"]
        if "batch" in logs or "size" in logs:
            logs = {k: v for k, v in logs.items() if k not in _NOT_LOGGED}
        if self.write_steps_per_second:
            began = self._batch_began
            # Keras's batch_steps_per_second: one over the time from the batch's begin to its
            # end, so without a batch_begin event there is no value.
            if began is not None and began[0] == record["step"] and record["time"] > began[1]:
                logs = {**logs}
                logs.setdefault("steps_per_second", 1.0 / (record["time"] - began[1]))
        self._get().scalars("train", logs, done, record["time"], "batch_",
                            only_missing=self._catching_up)

    def _test_end(self, record: dict[str, Any]) -> None:
        if record.get("epoch") is None or not record["logs"]:
            return  # evaluation outside training has no iteration count to plot against
        step = self._run.step if self._run is not None else 0
        values = {f"evaluation_{k}_vs_iterations": v for k, v in record["logs"].items()}
        self._get().scalars("validation", values, step, record["time"],
                            only_missing=self._catching_up)

    def _decision(self, record: dict[str, Any]) -> None:
        """Keep the decision with the others of its step: TensorBoard's server shows one text
        per step, so the step's table is written once, when the step is over."""
        if record["kind"] == "set_learning_rate":
            self._learn_rate(record.get("value"))
        epoch = record.get("epoch")
        step = epoch if epoch is not None else 0
        pending = self._step_decisions
        if pending is not None and pending[0] != step:
            self._write_decisions()
            pending = None
        if pending is None:
            self._get()
            self._step_decisions = (step, [record])
        else:
            pending[1].append(record)

    def _end_step_before(self, epoch: int) -> None:
        """An epoch begins or ends: the decisions of an earlier step are all in."""
        pending = self._step_decisions
        if pending is not None and pending[0] < epoch:
            self._write_decisions()

    def _write_decisions(self) -> None:
        """The pending step's decisions as one table under ``decisions`` and their markers."""
        pending, self._step_decisions = self._step_decisions, None
        if pending is None:
            return
        step, records = pending
        when = records[-1]["time"]
        # A step before the one a resumed run goes on from (its decisions caught up from the
        # log, or recorded again after a crash kept them out of it) may be in the files
        # already.
        run = self._run
        past = self._catching_up or (run is not None and run.resumed and step < run.initial_epoch)
        sink = self._get()
        markers: dict[str, float] = {}
        for record in records:
            tag = _marker(record)
            markers[tag] = markers.get(tag, 0.0) + 1.0
        sink.scalars("train", markers, step, when, "decisions/", only_missing=past)
        sink.text("train", "decisions", decisions_table(records, step), step, when,
                  only_missing=past)

    def _train_end(self, record: dict[str, Any]) -> Any:
        if self._session_started and not self._catching_up:
            self._get().hparams_end(".", record["time"], record["time"])
        if self._sink is None or self._sink.flush(self.flush_timeout):
            return None
        return WarningRecord(message=f"TensorBoard: event files not written within "
                             f"{self.flush_timeout}s of train_end; writing goes on",
                             details={"pending": self._sink.pending})

    def close(self) -> Any:
        if self._sink is not None and self._opened:
            self._write_decisions()  # the last step's (decisions at train_end included)
        else:  # only caught up (a resume cut before it opened): a write-back half done
            self._step_decisions = None
        sink, self._sink = self._sink, None
        if sink is None:
            return None
        out = []
        if not sink.close(self.flush_timeout):
            out.append(WarningRecord(message=f"TensorBoard: the writer did not finish within "
                                     f"{self.flush_timeout}s of close", details={
                                         "pending": sink.pending}))
        if sink.dropped:
            out.append(WarningRecord(message=f"TensorBoard: {sink.dropped} item(s) dropped: "
                                     "the writer queue was full", details={
                                         "dropped": sink.dropped}))
        return out


def _metadata(value: Any, plugin: str) -> Mapping[str, str] | str | None:
    """``embeddings_metadata`` checked: None, one path for every layer, or layer -> path."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return require_path(value, "embeddings_metadata", plugin)
    if isinstance(value, Mapping):
        out = {}
        for layer, path in value.items():
            if not isinstance(layer, str):
                raise ConfigError(f"{plugin}: embeddings_metadata maps layer names (str) to "
                                  f"files; got the key {layer!r}", plugin=plugin,
                                  field="embeddings_metadata")
            out[layer] = require_path(path, "embeddings_metadata", plugin)
        return out
    raise ConfigError(f"{plugin}: embeddings_metadata must be a file path or a dict of layer "
                      f"name -> file path; got {type(value).__name__} {value!r}", plugin=plugin,
                      field="embeddings_metadata")


def _resume_filter(initial_epoch: int, steps_done: int) -> Any:
    """What a resumed run keeps of its earlier event files: what it will not write again."""

    def keep(run: str, tag: str, step: int) -> bool:
        if run == "projector":
            return step < initial_epoch
        if run not in ("train", "validation"):
            return True
        if tag.startswith(("batch_", "evaluation_")):
            return step <= steps_done
        if tag.startswith(("epoch_", "decisions/")) or tag == "decisions" or \
                tag.endswith(("/histogram", "/image")):
            return step < initial_epoch
        return True  # model_config, and whatever other writers put there

    return keep
