"""LambdaCallback: a callback made of plain functions, with Keras's argument conventions."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from eventbus import Plugin, hookimpl
from eventbus.errors import ConfigError

from .callback import records_only

__all__ = ["LambdaCallback"]

Fn = Callable[..., Any] | None

#: Keras's argument name -> (the bus hook it runs on, how the event becomes its arguments).
_ARGS: dict[str, tuple[str, str]] = {
    "on_epoch_begin": ("on_epoch_begin", "epoch"),
    "on_epoch_end": ("on_epoch_end", "epoch"),
    "on_batch_begin": ("on_batch_begin", "batch"),
    "on_batch_end": ("on_batch_end", "batch"),
    "on_train_begin": ("on_train_begin", "logs"),
    "on_train_end": ("on_train_end", "logs"),
    # Keras 3's names for the batch hooks, and the evaluation and prediction hooks.
    "on_train_batch_begin": ("on_batch_begin", "batch"),
    "on_train_batch_end": ("on_batch_end", "batch"),
    "on_test_begin": ("on_test_begin", "logs"),
    "on_test_end": ("on_test_end", "logs"),
    "on_test_batch_begin": ("on_test_batch_begin", "batch"),
    "on_test_batch_end": ("on_test_batch_end", "batch"),
    "on_predict_begin": ("on_predict_begin", "logs"),
    "on_predict_end": ("on_predict_end", "logs"),
    "on_predict_batch_begin": ("on_predict_batch_begin", "batch"),
    "on_predict_batch_end": ("on_predict_batch_end", "batch"),
}
_HOOKS = sorted({hook for hook, _ in _ARGS.values()})


def _impl(hook: str) -> Any:
    def call(self: LambdaCallback, event: Any) -> Any:
        out = None
        for fn, style in self._calls[hook]:
            logs = dict(event.logs)  # each function gets its own copy to change at will
            if style == "epoch":
                result = fn(event.epoch, logs)
            elif style == "batch":
                result = fn(event.batch, logs)
            else:
                result = fn(logs)
            out = records_only(result) or out
        return out

    call.__name__ = f"_hook_{hook}"
    return hookimpl(specname=hook)(call)


class LambdaCallback(Plugin):
    """Run the given functions at the matching moments of training.

    ``on_epoch_begin``/``on_epoch_end`` are called as ``fn(epoch, logs)``,
    ``on_batch_begin``/``on_batch_end`` (or Keras 3's ``on_train_batch_begin``/
    ``on_train_batch_end``) as ``fn(batch, logs)`` and ``on_train_begin``/``on_train_end`` as
    ``fn(logs)``, positionally, as Keras calls them; ``on_test_*`` and ``on_predict_*`` are
    accepted too. Only ``on_epoch_begin`` and ``on_epoch_end`` may be given positionally: Keras 2
    takes the batch hooks third and fourth, Keras 3 the train hooks, so a third positional
    argument is a TypeError rather than a function silently run at the wrong moment.

    Only the moments given a function are subscribed. What a function returns is ignored unless
    it is a decision or outcome record, which the bus then applies or records.
    """

    side_effects = True

    def __init__(self, on_epoch_begin: Fn = None, on_epoch_end: Fn = None, *,
                 on_batch_begin: Fn = None, on_batch_end: Fn = None, on_train_begin: Fn = None,
                 on_train_end: Fn = None, on_train_batch_begin: Fn = None,
                 on_train_batch_end: Fn = None, **kwargs: Fn):
        # Keras keeps any other keyword as an attribute (custom_method=f); a name that looks
        # like a hook but is none (on_epoch_ned=) would then run nothing, silently: an error.
        extra = {k: v for k, v in kwargs.items() if k not in _ARGS}
        for name in sorted(extra):
            if name.startswith("on_") or hasattr(type(self), name):
                close = difflib.get_close_matches(name, list(_ARGS), n=1)
                what = "not a hook LambdaCallback runs" if name.startswith("on_") else \
                    f"the plugin's own attribute {name!r}, which it would replace"
                raise ConfigError(
                    f"LambdaCallback: {name}= is {what}" + (
                        f" (did you mean {close[0]}=?)" if close else "")
                    + f"; the hooks are {', '.join(sorted(_ARGS))}", plugin="LambdaCallback",
                    field=name)
        self.__dict__.update(extra)
        kwargs = {k: v for k, v in kwargs.items() if k in _ARGS}
        given = dict(kwargs, on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_batch_begin=on_batch_begin, on_batch_end=on_batch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end)
        self._calls: dict[str, list[tuple[Callable[..., Any], str]]] = {h: [] for h in _HOOKS}
        for name, fn in given.items():
            if fn is not None and not callable(fn):
                raise ConfigError(f"LambdaCallback: {name} must be callable; got "
                                  f"{type(fn).__name__}", plugin="LambdaCallback", field=name)
            if fn is not None:
                hook, style = _ARGS[name]
                self._calls[hook].append((fn, style))
        for hook in _HOOKS:
            if not self._calls[hook]:
                # Shadow the class's hook implementation: the bus never calls this hook.
                setattr(self, f"_hook_{hook}", None)


for _hook in _HOOKS:
    setattr(LambdaCallback, f"_hook_{_hook}", _impl(_hook))
del _hook
