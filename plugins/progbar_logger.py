"""ProgbarLogger: training progress on the terminal (a tqdm bar) or as plain lines in CI logs.

A sink: it takes the records of training, evaluation and prediction as they are recorded, and
shows them; replay and resume, which write through no sink, show nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO, Any

from eventbus import Plugin, Sink
from eventbus.errors import ConfigError

from .monitor import require_real

__all__ = ["ProgbarLogger", "format_logs"]

_NOT_SHOWN = frozenset({"batch", "size", "num_steps"})


def _number(value: float) -> str:
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.4e}"


def format_logs(logs: Mapping[str, float]) -> str:
    """``loss: 0.1234 - val_loss: 0.2345``: Keras's way of showing metrics."""
    return " - ".join(f"{k}: {_number(v)}" for k, v in logs.items() if k not in _NOT_SHOWN)


class ProgbarLogger(Plugin, Sink):
    """Print progress and metrics, as Keras's progress bar does.

    ``verbose=1``: on a terminal, a live bar per epoch (steps done, rate, ETA, the latest batch
    metrics), left with the epoch's metrics when the epoch ends; when the output is not a
    terminal (a CI log, a file) one plain line per epoch instead, so logs stay readable.
    ``verbose=2``: one line per epoch everywhere. ``verbose=0``: nothing.
    ``count_mode``: ``"steps"`` counts batches against ``params["steps"]``; ``"samples"``
    counts the batches' ``size`` against ``params["samples"]``. ``file``: where to write,
    standard output by default.

    As Keras's, it also shows an evaluation run on its own (test events outside training; the
    validation inside an epoch is shown only as the epoch's ``val_`` metrics) and a prediction
    run (outside a training epoch).
    """

    side_effects = True

    def __init__(self, count_mode: str = "steps", verbose: int = 1, *, file: IO[str] | None = None,
                 mininterval: float = 0.1):
        if count_mode not in ("steps", "samples"):
            raise ConfigError(f"ProgbarLogger: count_mode must be 'steps' or 'samples'; got "
                              f"{count_mode!r}", plugin="ProgbarLogger", field="count_mode")
        if verbose not in (0, 1, 2):
            raise ConfigError(f"ProgbarLogger: verbose must be 0, 1 or 2; got {verbose!r}",
                              plugin="ProgbarLogger", field="verbose")
        if file is not None and not all(callable(getattr(file, method, None))
                                        for method in ("write", "flush")):
            raise ConfigError(f"ProgbarLogger: file must be a text stream with write() and "
                              f"flush() (an open file, sys.stderr); got {type(file).__name__}",
                              plugin="ProgbarLogger", field="file")
        self.count_mode = count_mode
        self.verbose = verbose
        self.file = file
        self.mininterval = require_real(mininterval, "mininterval", "ProgbarLogger",
                                        minimum=0.0)
        self._params: dict[str, Any] = {}
        # The run being shown: a training epoch, an evaluation or a prediction (None: none).
        self._showing: str | None = None
        self._bar: Any = None
        self._done = 0
        self._seen = 0
        self._started: float | None = None
        self._shown: float = 0.0
        # The records it shows; silent, it takes none at all.
        self.takes = _KINDS if verbose else frozenset()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["file"] = None if self.file is None else getattr(self.file, "name", "<stream>")
        return config

    @property
    def _out(self) -> IO[str]:
        return self.file if self.file is not None else sys.stdout

    def _live(self) -> bool:
        """A bar only where one can be redrawn: verbose 1 on a terminal."""
        if self.verbose != 1:
            return False
        isatty = getattr(self._out, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # a closed stream
            return False

    def _target(self) -> int | None:
        key = "steps" if self.count_mode == "steps" else "samples"
        value = self._params.get(key)
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    def _title(self, epoch: int) -> str:
        epochs = self._params.get("epochs")
        return f"Epoch {epoch + 1}/{epochs}" if epochs else f"Epoch {epoch + 1}"

    # --- one run shown: begun, advanced per batch, finished with its metrics ------------------

    def _begin(self, showing: str, title: str, target: int | None, time: float) -> None:
        self._close_bar()
        self._showing = showing
        self._done = 0
        self._seen = 0
        self._started = time
        self._shown = 0.0
        if self._live():
            from tqdm import tqdm

            self._bar = tqdm(total=target, desc=title,
                             unit="step" if self.count_mode == "steps" else "sample",
                             file=self._out, leave=True, dynamic_ncols=True,
                             mininterval=self.mininterval)

    def _advance(self, record: dict[str, Any]) -> None:
        logs = record["logs"]
        n = 1 if self.count_mode == "steps" else int(logs.get("size", 0))
        self._done += 1
        self._seen += n
        bar = self._bar
        if bar is None:
            return
        bar.update(n)
        # Formatting metrics costs more than the bar: only as often as the bar redraws.
        if record["time"] - self._shown >= self.mininterval:
            self._shown = record["time"]
            bar.set_postfix_str(format_logs(logs), refresh=False)

    def _finish(self, title: str, target: int | None, logs: Mapping[str, float],
                time: float) -> None:
        self._showing = None
        metrics = format_logs(logs)
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.set_postfix_str(metrics, refresh=False)
            bar.close()
            return
        parts = [title]
        count = self._done if self.count_mode == "steps" else self._seen
        if count:
            unit = "steps" if self.count_mode == "steps" else "samples"
            parts.append(f"{count}/{target} {unit}" if target else f"{count} {unit}")
        if self._started is not None:
            parts.append(f"{time - self._started:.1f}s")
        if metrics:
            parts.append(metrics)
        out = self._out
        out.write(" - ".join(parts) + "\n")
        out.flush()

    # --- the sink: training, evaluation on its own, prediction --------------------------------

    def write(self, record: dict[str, Any]) -> None:
        kind = record["kind"]
        if kind == "batch_end":
            self._advance(record)
        elif kind == "epoch_begin":
            self._begin("epoch", self._title(record["epoch"]), self._target(), record["time"])
        elif kind == "epoch_end":
            self._finish(self._title(record["epoch"]), self._target(), record["logs"],
                         record["time"])
        elif kind == "train_begin":
            self._params = dict(record["params"])
        elif kind == "train_end":
            self._showing = None
            self._close_bar()
        # Evaluation on its own: test events in training carry their epoch and show only as
        # the epoch's val_ metrics.
        elif kind == "test_begin":
            if record.get("epoch") is None:
                self._begin("evaluation", "Evaluation", None, record["time"])
        elif kind == "test_batch_end":
            if self._showing == "evaluation":
                self._advance(record)
        elif kind == "test_end":
            if self._showing == "evaluation":
                self._finish("Evaluation", None, record["logs"], record["time"])
        # Prediction, unless it interrupts a training epoch's bar.
        elif kind == "predict_begin":
            if self._showing != "epoch":
                self._begin("prediction", "Prediction", None, record["time"])
        elif kind == "predict_batch_end":
            if self._showing == "prediction":
                self._advance(record)
        elif kind == "predict_end":
            if self._showing == "prediction":
                self._finish("Prediction", None, record["logs"], record["time"])

    def _close_bar(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()

    def close(self) -> None:
        self._close_bar()


_KINDS = frozenset({"train_begin", "epoch_begin", "batch_end", "epoch_end", "test_begin",
                    "test_batch_end", "test_end", "predict_begin", "predict_batch_end",
                    "predict_end", "train_end"})
