"""TensorBoard: metrics, weights, embeddings and decisions as TensorBoard event files.

Keras's layout: epoch metrics go to ``<log_dir>/train`` as ``epoch_<name>`` and the ``val_``
metrics, prefix removed, to ``<log_dir>/validation``, both at step = epoch; ``learning_rate``
(which the bus adds to epoch logs) becomes ``epoch_learning_rate``. With an integer
``update_freq`` batch metrics go to ``train`` as ``batch_<name>`` every ``update_freq`` batches,
at step = batches done. The writing happens on :class:`sinks.tensorboard.TensorBoardSink`'s
thread; the training thread only queues.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from eventbus import Plugin, hookimpl
from eventbus.errors import ConfigError
from eventbus.records import SinkFailed
from eventbus.records import Warning as WarningRecord

__all__ = ["TensorBoard"]

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


class TensorBoard(Plugin):
    """Write what the run reports where TensorBoard reads it.

    Parameters are Keras's. ``histogram_freq``: weight histograms (``<weight>/histogram``, step =
    epoch) every that many epochs, from the model adapter's ``get_weights()``; ``write_images``:
    each weight as a picture too (``<weight>/image``); ``write_graph``: the model adapter's
    ``get_config()`` as text (``model_config``) at the start; ``update_freq``: ``"epoch"``,
    ``"batch"`` or a number of batches; ``embeddings_freq``, ``embeddings_layer_names`` and
    ``embeddings_metadata``: projector files for embedding matrices. Decisions (a learning rate
    cut, an early stop) are written as text under ``decisions`` at their epoch.
    """

    side_effects = True

    def __init__(self, log_dir: str | os.PathLike[str] = "./logs", histogram_freq: int = 0,
                 write_graph: bool = True, write_images: bool = False,
                 update_freq: str | int = "epoch", embeddings_freq: int = 0,
                 embeddings_layer_names: Sequence[str] | str | None = None,
                 embeddings_metadata: Mapping[str, str] | str | None = None,
                 *, flush_timeout: float = 30.0):
        for field, value in (("histogram_freq", histogram_freq),
                             ("embeddings_freq", embeddings_freq)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"TensorBoard: {field} must be an int >= 0; got {value!r}",
                                  plugin="TensorBoard", field=field)
        if update_freq == "epoch":
            self._every: int | None = None
        elif update_freq == "batch":
            self._every = 1
        elif isinstance(update_freq, int) and not isinstance(update_freq, bool) \
                and update_freq > 0:
            self._every = update_freq
        else:
            raise ConfigError(f"TensorBoard: update_freq must be 'epoch', 'batch' or an int > 0; "
                              f"got {update_freq!r}", plugin="TensorBoard", field="update_freq")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = write_graph
        self.write_images = write_images
        self.update_freq = update_freq
        self.embeddings_freq = embeddings_freq
        if isinstance(embeddings_layer_names, str):
            embeddings_layer_names = [embeddings_layer_names]
        self.embeddings_layer_names = list(embeddings_layer_names or [])
        self.embeddings_metadata = embeddings_metadata
        self.flush_timeout = flush_timeout
        if self._every is None:
            self.unsubscribe("on_batch_end")  # nothing per batch: the bus never calls it
        self._bus: Any = None
        self._label = self.name
        self._sink: Any = None
        self._warned: set[str] = set()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["log_dir"] = self.log_dir
        return config

    # --- the sink ------------------------------------------------------------------------------

    def _open(self, resumed: bool) -> Any:
        from sinks.tensorboard import TensorBoardSink

        bus, label = self._bus, self._label

        def on_error(what: str, exc: BaseException) -> None:
            if bus is not None:  # bus.report is the one bus method safe from another thread
                bus.report(SinkFailed(sink=label, event=what, error=type(exc).__name__,
                                      message=str(exc)))

        sink = self._sink = TensorBoardSink(self.log_dir, on_error=on_error)
        if resumed and bus is not None:
            # Drop what a crashed attempt wrote past the point the run resumes from.
            sink.truncate(_resume_filter(bus.initial_epoch, bus.step))
        return sink

    def _get(self) -> Any:
        # A resumed run publishes no train_begin: the first call of any other hook opens.
        return self._sink if self._sink is not None else self._open(resumed=True)

    def _warn_once(self, key: str, message: str, **details: Any) -> WarningRecord | None:
        if key in self._warned:
            return None
        self._warned.add(key)
        return WarningRecord(message=message, details=details)

    # --- hooks --------------------------------------------------------------------------------

    @hookimpl
    def on_attach(self, bus: Any) -> None:
        self._bus = bus
        self._label = bus.label(self)

    @hookimpl
    def on_train_begin(self, event: Any) -> Any:
        sink = self._sink if self._sink is not None else self._open(resumed=False)
        if not self.write_graph:
            return None
        model = getattr(self._bus, "model", None)
        get_config = getattr(model, "get_config", None)
        if not callable(get_config):
            return None
        text = json.dumps(get_config(), indent=2, sort_keys=True, default=str)
        sink.text("train", "model_config", f"```json\n{text}\n```", 0, event.time)
        return None

    @hookimpl
    def on_epoch_begin(self, event: Any) -> None:
        self._get()

    @hookimpl
    def on_epoch_end(self, event: Any) -> Any:
        sink = self._get()
        epoch, when = event.epoch, event.time
        train: dict[str, float] = {}
        validation: dict[str, float] = {}
        for key, value in event.logs.items():
            if key.startswith("val_"):
                validation[key[4:]] = value
            else:
                train[key] = value
        sink.scalars("train", train, epoch, when, "epoch_")
        sink.scalars("validation", validation, epoch, when, "epoch_")
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

    def _weights(self) -> dict[str, np.ndarray] | None:
        model = getattr(self._bus, "model", None)
        if model is None or not callable(getattr(model, "get_weights", None)):
            return None
        # get_weights() returns copies (the adapter contract), taken here on the training
        # thread, so the writer thread never sees a weight change under it.
        return {name: np.asarray(value) for name, value in model.get_weights().items()}

    def _embeddings(self, sink: Any, weights: dict[str, np.ndarray], epoch: int) -> Any:
        names = self.embeddings_layer_names
        if names:
            chosen = {n: w for n, w in weights.items() if _layer(n) in names and w.ndim == 2}
            missing = sorted(set(names) - {_layer(n) for n in chosen})
        else:  # every Embedding layer: Keras names their matrix "embeddings"
            chosen = {n: w for n, w in weights.items()
                      if n.rsplit("/", 1)[-1] == "embeddings" and w.ndim == 2}
            missing = []
        metadata: dict[str, str] = {}
        given = self.embeddings_metadata
        for name in chosen:
            path = given if isinstance(given, str) else (given or {}).get(_layer(name))
            if path is not None:
                metadata[name] = os.fspath(path)
        if chosen:
            sink.embeddings(chosen, epoch, metadata)
        if missing:
            return self._warn_once("embeddings", f"TensorBoard: no 2-D weights for embedding "
                                   f"layers {missing}", missing=missing,
                                   weights=sorted(weights))
        if not chosen:
            return self._warn_once("embeddings", "TensorBoard: embeddings_freq is set but the "
                                   "model has no embedding matrices (2-D weights named "
                                   "'.../embeddings'); name them with embeddings_layer_names")
        return None

    @hookimpl
    def on_batch_end(self, event: Any) -> None:
        done = event.step + 1
        if done % self._every:  # type: ignore[operator]
            return
        logs = event.logs
        if "batch" in logs or "size" in logs:
            logs = {k: v for k, v in logs.items() if k not in _NOT_LOGGED}
        self._get().scalars("train", logs, done, event.time, "batch_")

    @hookimpl
    def on_test_end(self, event: Any) -> None:
        if event.epoch is None or not event.logs:
            return  # evaluation outside training has no iteration count to plot against
        step = self._bus.step if self._bus is not None else 0
        values = {f"evaluation_{k}_vs_iterations": v for k, v in event.logs.items()}
        self._get().scalars("validation", values, step, event.time)

    @hookimpl
    def on_decision(self, decision: Any) -> None:
        lines = [f"**{decision.kind}** from `{decision.source}`: {decision.reason}"]
        if getattr(decision, "value", None) is not None:
            previous = getattr(decision, "previous", None)
            lines.append(f"learning rate {previous} -> {decision.value}")
        if decision.evidence:
            lines.append(f"evidence: `{json.dumps(decision.evidence, sort_keys=True)}`")
        step = decision.epoch if decision.epoch is not None else 0
        self._get().text("train", "decisions", "\n\n".join(lines), step, decision.time)

    @hookimpl
    def on_train_end(self, event: Any) -> Any:
        if self._sink is None or self._sink.flush(self.flush_timeout):
            return None
        return WarningRecord(message=f"TensorBoard: event files not written within "
                             f"{self.flush_timeout}s of train_end; writing goes on",
                             details={"pending": self._sink.pending})

    @hookimpl
    def on_close(self) -> Any:
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


def _resume_filter(initial_epoch: int, steps_done: int) -> Any:
    """What a resumed run keeps of its earlier event files: what it will not write again."""

    def keep(run: str, tag: str, step: int) -> bool:
        if run == "projector":
            return step < initial_epoch
        if run not in ("train", "validation"):
            return True
        if tag.startswith(("batch_", "evaluation_")):
            return step <= steps_done
        if tag.startswith("epoch_") or tag == "decisions" or \
                tag.endswith(("/histogram", "/image")):
            return step < initial_epoch
        return True  # model_config, and whatever other writers put there

    return keep
