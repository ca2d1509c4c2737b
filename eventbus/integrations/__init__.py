"""Bridges to training frameworks: PyTorch, Keras 3, Lightning, and ``torch.distributed``.

Importing this package imports no framework. Each name below loads its module (and so its
framework) on first use::

    from eventbus.integrations import TorchModel       # imports torch
    from eventbus.integrations import KerasBridge      # imports keras
    from eventbus.integrations import LightningBridge  # imports lightning
    from eventbus.integrations import DistributedBus   # imports torch.distributed
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "DistributedBus": "distributed",
    "DistributedError": "distributed",
    "KerasBridge": "keras",
    "KerasModel": "keras",
    "LightningBridge": "lightning",
    "RankTimeoutError": "distributed",
    "TorchModel": "torch",
    "TorchTransport": "distributed",
    "audit_ranks": "distributed",
    "from_keras_callback": "keras",
    "rank_log_path": "distributed",
    "rank_logs": "distributed",
    "read_rank_logs": "distributed",
    "replay_ranks": "distributed",
    "scalars": "torch",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'eventbus.integrations' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
