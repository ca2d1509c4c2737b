"""The monitor rule: which way a metric should go, and what counts as better.

One rule, used by the decision plugins (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint, any
third-party plugin that wants it) and by the audit, so that the audit never calls a value the
best that a plugin would have called the worst. It lives in the core because the core must not
import ``plugins``.

``mode`` is ``"min"``, ``"max"`` or ``"auto"``. ``auto`` places the metric by its name (after
removing ``val_``): the name is lower-cased and split into words (runs of letters and digits);
it is minimised if some word is in :data:`MIN_WORDS` and none in :data:`MAX_WORDS`, maximised
the other way round. A name with neither kind of word, or both, cannot be placed (Keras looks
at the compiled model's metrics for a direction; plugins never see the model, so the name is
all there is, and guessing wrong would silently invert a callback). Two forms of the one rule:

- :func:`infer_mode` is strict, for a plugin about to compare: a name it cannot place is a
  :class:`~eventbus.errors.ConfigError` asking for ``mode``.
- :func:`guess_mode` is lenient, for reading a log that already exists (the audit): a name it
  cannot place gives ``None``, "direction unknown", never a guess.

As in Keras 3 (whose ``_set_monitor_op`` runs at the first ``epoch_end``), the direction is
needed only to compare, so a plugin is built whatever its metric's name: :class:`Monitor`
places a name at once when the rule can (the rule reads the name alone, so placing it now or at
the first comparison gives the same answer), and otherwise leaves ``mode`` None until its first
comparison, which is then the ConfigError (:meth:`Monitor.resolve`).

Improvement is strict, with ``min_delta`` taken as its absolute value: under ``min`` a value
improves on ``best`` when ``value + |min_delta| < best``, under ``max`` when
``value - |min_delta| > best``. The first value seen always improves; NaN never does. These are
Keras 3's rules, except for a first NaN (Keras takes it as the best; see the plugin pages).

A monitored metric is one number. A vector metric (a list in the logs: Keras's ``F1Score`` per
class) has no "better"; given one, :class:`Monitor` raises a
:class:`~eventbus.errors.MetricValueError` naming the metric and the plugin, which the bus
reports as the plugin's failure on the event (Keras fails there too, on an array's ambiguous
truth value).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from .checks import require_real
from .errors import ConfigError, MetricValueError
from .records import Warning

__all__ = [
    "MAX_WORDS",
    "MIN_WORDS",
    "Mode",
    "Monitor",
    "fmt",
    "guess_mode",
    "infer_mode",
    "require_real",
    "why_unplaced",
]

Mode = Literal["min", "max"]

#: Words in a metric name that mean "lower is better".
MIN_WORDS = frozenset({
    "loss", "error", "err", "mse", "mae", "mape", "msle", "rmse", "crossentropy", "hinge",
    "squared_hinge", "divergence", "kld", "kl", "logcosh", "poisson", "huber", "perplexity",
    "wer", "cer", "distance", "nll", "regret", "fpr", "fnr",
    "log_cosh",  # two words (see _words)
})
#: Words in a metric name that mean "higher is better".
MAX_WORDS = frozenset({
    "acc", "accuracy", "auc", "precision", "recall", "f1", "fbeta", "iou", "miou", "r2",
    "sensitivity", "specificity", "bleu", "rouge", "map", "ndcg", "dice", "tpr", "tnr",
    "psnr", "ssim", "score", "top1", "top5", "reward", "return", "kappa", "mcc", "f2",
    # Keras's IoU metrics are named io_u, mean_io_u, binary_io_u: two words.
    "similarity", "correlation", "io_u",
})

_WORD = re.compile(r"[a-z0-9]+")


def _words(name: str) -> tuple[set[str], set[str]]:
    """The words of ``name`` (without ``val_``) that mean lower, and higher, is better; two
    words in a row count as one too (``io_u``, ``log_cosh``, ``squared_hinge``)."""
    tokens = _WORD.findall(name.removeprefix("val_").lower())
    words = {*tokens, *(f"{a}_{b}" for a, b in zip(tokens, tokens[1:]))}
    return words & MIN_WORDS, words & MAX_WORDS


def guess_mode(name: str) -> Mode | None:
    """``"min"`` or ``"max"`` for the metric ``name``, from its name; ``None`` when the name
    cannot be placed (no word of either kind, or words of both)."""
    lower, higher = _words(name)
    if lower and not higher:
        return "min"
    if higher and not lower:
        return "max"
    return None


def why_unplaced(name: str) -> str:
    """Why :func:`guess_mode` cannot place ``name``, as a clause for a message."""
    lower, higher = _words(name)
    if lower and higher:
        return f"its name has words of both kinds ({sorted(lower)} and {sorted(higher)})"
    return "its name has no word that says which way is better"


def infer_mode(monitor: str, *, plugin: str, event: str | None = None,
               logs: Mapping[str, Any] | None = None) -> Mode:
    """``"min"`` or ``"max"`` for the metric ``monitor``, from its name; a name the rule cannot
    place is a ConfigError naming ``plugin``, the metric and ``event`` (where the direction was
    needed, e.g. ``"epoch_end (epoch 1)"``), and asking for ``mode``; when ``logs`` (the
    event's) lack the metric, it says so too: a misspelt name is the likelier fault."""
    mode = guess_mode(monitor)
    if mode is not None:
        return mode
    at = f" at {event}" if event else ""
    absent = ""
    if logs is not None and monitor not in logs:
        names = list(logs)
        held = ", ".join(map(repr, names[:20])) + (f" and {len(names) - 20} more"
                                                   if len(names) > 20 else "")
        absent = (f"; and {monitor!r} is not in the logs either (they hold "
                  f"{held or 'nothing'}): is it misspelt?")
    raise ConfigError(
        f"{plugin}: mode='auto' cannot tell whether monitor={monitor!r} should be minimised or "
        f"maximised{at}: {why_unplaced(monitor)}. Pass mode='min' or mode='max' to "
        f"{plugin}{absent}", plugin=plugin, field="mode")


def fmt(value: float | None) -> str:
    """A metric value as reasons show it: six significant digits."""
    return "None" if value is None else f"{value:.6g}"


class Monitor:
    """Tracks the best value of one metric and says whether a new value improves on it.

    ``mode="auto"`` places the metric by its name (:func:`guess_mode`); a name the rule cannot
    place leaves ``mode`` None, and the first comparison (:meth:`resolve`, which
    :meth:`beats` calls) raises the ConfigError asking for ``mode``. ``initial`` is the best
    value before any is seen (ModelCheckpoint's ``initial_value_threshold``); ``None`` means
    the first value always improves. ``plugin`` names the owner in error messages.
    """

    __slots__ = ("best", "initial", "min_delta", "mode", "monitor", "plugin", "warned")

    def __init__(self, monitor: str, mode: str = "auto", min_delta: float = 0.0, *,
                 plugin: str, initial: float | None = None):
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"{plugin}: monitor must be a metric name (a non-empty str); got "
                              f"{monitor!r}", plugin=plugin, field="monitor")
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"{plugin}: mode must be 'auto', 'min' or 'max'; got {mode!r}",
                              plugin=plugin, field="mode")
        self.monitor = monitor
        self.plugin = plugin
        #: ``"min"`` or ``"max"``; None while ``mode="auto"`` has not placed the name (until
        #: the first comparison raises).
        self.mode: Mode | None = guess_mode(monitor) if mode == "auto" \
            else mode  # type: ignore[assignment]
        self.min_delta = abs(require_real(min_delta, "min_delta", plugin))
        self.initial = None if initial is None else require_real(initial, "initial_value_threshold",
                                                                  plugin, finite=False)
        self.best: float | None = self.initial
        self.warned = False

    def beats(self, value: float, reference: float | None) -> bool:
        """Whether ``value`` improves on ``reference`` (None: anything but NaN does)."""
        if type(value) is list:
            raise self._vector(value)
        mode = self.mode or self.resolve()  # a comparison needs the direction, NaN's too
        if math.isnan(value):  # NaN never improves
            return False
        if reference is None:
            return True
        if mode == "min":
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

    def resolve(self, event: str | None = None, logs: Mapping[str, Any] | None = None) -> Mode:
        """The direction, for a comparison about to be made at ``event`` (e.g.
        ``"epoch_end (epoch 1)"``, for the message): ``mode`` when known, else the name's by
        :func:`infer_mode`, whose ConfigError (naming the plugin, ``mode``, the metric and
        ``event``) is what a name the rule cannot place gives, as Keras 3's first
        ``epoch_end`` raises (``logs``, the event's: the message says if the metric is not
        there). Plugins call it when a value of the metric first arrives."""
        if self.mode is None:
            self.mode = infer_mode(self.monitor, plugin=self.plugin,
                                   event=event or "its first comparison", logs=logs)
        return self.mode

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

    def _vector(self, value: list[float]) -> MetricValueError:
        name, plugin = self.monitor, self.plugin
        shown = ", ".join(fmt(v) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return MetricValueError(
            f"{plugin}: monitor={name!r} is a vector metric ({len(value)} values: [{shown}]); "
            f"{plugin} compares one number per event. Monitor a number: one element or a "
            f"reduction of it, logged under its own name (e.g. logs['{name}_mean'] = "
            f"mean of logs['{name}'])", plugin=plugin, field=f"logs.{name}")

    def worst(self) -> float:
        """The value every real number improves on (what Keras starts ``best`` at)."""
        return math.inf if (self.mode or self.resolve()) == "min" else -math.inf

    def __repr__(self) -> str:
        return (f"Monitor({self.monitor!r}, mode={self.mode!r}, min_delta={self.min_delta}, "
                f"best={self.best})")
