"""The monitor the decision plugins share: which way a metric should go, what counts as better.

``mode`` is ``"min"``, ``"max"`` or ``"auto"``. ``auto`` places the metric by its name (after
removing ``val_``): losses and errors are minimised; accuracies, AUC, precision, recall, F1 and
the like are maximised; a name it cannot place is a configuration error that asks for ``mode``
(Keras looks at the compiled model's metrics for a direction; plugins never see the model, so
the name is all there is, and guessing wrong would silently invert a callback).

Improvement is strict, with ``min_delta`` taken as its absolute value: under ``min`` a value
improves on ``best`` when ``value + |min_delta| < best``, under ``max`` when
``value - |min_delta| > best``. The first value seen always improves; NaN never does.

The module also holds the few parameter checks every plugin makes, so each error names the plugin
and the field the same way; those a sink makes too (``require_real``, ``require_int``,
``require_bool``) live in :mod:`eventbus.checks` and are re-exported here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from eventbus import ConfigError
from eventbus.checks import require_bool, require_int, require_real
from eventbus.records import Warning

__all__ = [
    "MAX_WORDS",
    "MIN_WORDS",
    "Monitor",
    "fmt",
    "infer_mode",
    "require_bool",
    "require_int",
    "require_names",
    "require_save_freq",
    "require_path",
    "require_real",
]

Mode = Literal["min", "max"]

#: Words in a metric name that mean "lower is better".
MIN_WORDS = frozenset({
    "loss", "error", "err", "mse", "mae", "mape", "msle", "rmse", "crossentropy", "hinge",
    "squared_hinge", "divergence", "kld", "kl", "logcosh", "poisson", "huber", "perplexity",
    "wer", "cer", "distance", "nll", "regret", "fpr", "fnr",
})
#: Words in a metric name that mean "higher is better".
MAX_WORDS = frozenset({
    "acc", "accuracy", "auc", "precision", "recall", "f1", "fbeta", "iou", "miou", "r2",
    "sensitivity", "specificity", "bleu", "rouge", "map", "ndcg", "dice", "tpr", "tnr",
    "psnr", "ssim", "score", "top1", "top5", "reward", "return", "kappa", "mcc", "f2",
})

_WORD = re.compile(r"[a-z0-9]+")


def infer_mode(monitor: str, *, plugin: str) -> Mode:
    """``"min"`` or ``"max"`` for the metric ``monitor``, from its name; raises ConfigError."""
    name = monitor.removeprefix("val_").lower()
    words = set(_WORD.findall(name))
    lower = words & MIN_WORDS
    higher = words & MAX_WORDS
    if lower and not higher:
        return "min"
    if higher and not lower:
        return "max"
    why = (f"its name has words of both kinds ({sorted(lower)} and {sorted(higher)})" if lower
           else "its name has no word that says which way is better")
    raise ConfigError(
        f"{plugin}: cannot tell whether monitor={monitor!r} should be minimised or maximised: "
        f"{why}. Pass mode='min' or mode='max'", plugin=plugin, field="monitor")


def fmt(value: float | None) -> str:
    """A metric value as reasons show it: six significant digits."""
    return "None" if value is None else f"{value:.6g}"


class Monitor:
    """Tracks the best value of one metric and says whether a new value improves on it.

    ``initial`` is the best value before any is seen (ModelCheckpoint's
    ``initial_value_threshold``); ``None`` means the first value always improves.
    """

    __slots__ = ("best", "initial", "min_delta", "mode", "monitor", "warned")

    def __init__(self, monitor: str, mode: str = "auto", min_delta: float = 0.0, *,
                 plugin: str, initial: float | None = None):
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"{plugin}: monitor must be a metric name (a non-empty str); got "
                              f"{monitor!r}", plugin=plugin, field="monitor")
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"{plugin}: mode must be 'auto', 'min' or 'max'; got {mode!r}",
                              plugin=plugin, field="mode")
        self.monitor = monitor
        self.mode: Mode = infer_mode(monitor, plugin=plugin) if mode == "auto" \
            else mode  # type: ignore[assignment]
        self.min_delta = abs(require_real(min_delta, "min_delta", plugin))
        self.initial = None if initial is None else require_real(initial, "initial_value_threshold",
                                                                  plugin, finite=False)
        self.best: float | None = self.initial
        self.warned = False

    def beats(self, value: float, reference: float | None) -> bool:
        """Whether ``value`` improves on ``reference`` (None: anything but NaN does)."""
        if math.isnan(value):  # NaN never improves
            return False
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def improves(self, value: float) -> bool:
        """Whether ``value`` improves on the best so far."""
        return self.beats(value, self.best)

    def update(self, value: float) -> bool:
        """Take ``value`` as the best if it improves; returns whether it did."""
        if self.beats(value, self.best):
            self.best = value
            return True
        return False

    def reset(self) -> None:
        self.best = self.initial
        self.warned = False

    def missing(self, logs: Mapping[str, float], message: str) -> Warning | None:
        """The warning for epoch logs that lack the monitored metric: once per run (until
        :meth:`reset`), listing the keys that were there."""
        if self.warned:
            return None
        self.warned = True
        return Warning(message=message, details={"monitor": self.monitor,
                                                 "available": list(logs)})

    def worst(self) -> float:
        """The value every real number improves on (what Keras starts ``best`` at)."""
        return math.inf if self.mode == "min" else -math.inf

    def __repr__(self) -> str:
        return (f"Monitor({self.monitor!r}, mode={self.mode!r}, min_delta={self.min_delta}, "
                f"best={self.best})")


# --- parameter checks shared by the plugins ------------------------------------------------


def require_path(value: Any, field: str, plugin: str) -> str:
    """``value`` (a str or path) as a non-empty str; anything else is an error."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return text
    raise ConfigError(f"{plugin}: {field} must be a file or directory path (a non-empty str or "
                      f"os.PathLike); got {type(value).__name__} {value!r}", plugin=plugin,
                      field=field)


def require_save_freq(value: Any, plugin: str) -> None:
    """``save_freq``: ``"epoch"`` or a positive int (a number of batches), as Keras takes it."""
    if value != "epoch" and (isinstance(value, bool) or not isinstance(value, int)
                             or value < 1):
        raise ConfigError(f"{plugin}: save_freq must be 'epoch' or a positive int (a number "
                          f"of batches); got {value!r}", plugin=plugin, field="save_freq")


def require_names(value: Any, field: str, plugin: str) -> list[str]:
    """``value`` as a list of names: None is none, one str is one name, else an iterable of str.

    A str is one name, not the letters of one (``stateful_metrics="acc"`` is ``["acc"]``).
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(f"{plugin}: {field} must be a name or a list of names (str); got "
                          f"{type(value).__name__} {value!r}", plugin=plugin, field=field)
    names = list(value)
    wrong = [name for name in names if not isinstance(name, str)]
    if wrong:
        raise ConfigError(f"{plugin}: {field} must hold names (str); got "
                          f"{type(wrong[0]).__name__} {wrong[0]!r}", plugin=plugin, field=field)
    return names
