"""Bridges to training frameworks: PyTorch, Keras 3, Lightning, Hugging Face, ``torch.distributed``.

Importing this package imports no framework. Each name below loads its module (and so its
framework) on first use::

    from eventbus.integrations import TorchModel       # imports torch
    from eventbus.integrations import KerasBridge      # imports keras
    from eventbus.integrations import LightningBridge  # imports lightning
    from eventbus.integrations import TrainerBridge    # imports transformers
    from eventbus.integrations import DistributedBus   # imports torch.distributed
"""

from __future__ import annotations

from eventbus._lazy import lazy_exports

_MODULES = {
    "DistributedBus": "distributed",
    "DistributedError": "distributed",
    "KerasBridge": "keras",
    "KerasModel": "keras",
    "LightningBridge": "lightning",
    "RankTimeoutError": "distributed",
    "TorchModel": "torch",
    "TorchTransport": "distributed",
    "TrainerBridge": "transformers",
    "audit_ranks": "distributed",
    "checked_rank_logs": "distributed",
    "from_keras_callback": "keras",
    "rank_log_path": "distributed",
    "rank_logs": "distributed",
    "read_rank_logs": "distributed",
    "replay_ranks": "distributed",
    "scalars": "torch",
}

__all__ = sorted(_MODULES)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES)
