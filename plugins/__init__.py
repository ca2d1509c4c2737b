"""The built-in plugins: Keras's documented callbacks, running on the bus.

``from plugins import EarlyStopping`` works for every name in ``__all__``; each module is imported
on first use, so importing one plugin does not import TensorBoard or HTTP code.
"""

from __future__ import annotations

from eventbus._lazy import lazy_exports

_MODULES = {
    "BackupAndRestore": "backup_and_restore",
    "BaseLogger": "base_logger",
    "CSVLogger": "csv_logger",
    "Callback": "callback",
    "EarlyStopping": "early_stopping",
    "History": "history",
    "LambdaCallback": "lambda_callback",
    "LearningRateScheduler": "learning_rate_scheduler",
    "ModelCheckpoint": "model_checkpoint",
    "ProgbarLogger": "progbar_logger",
    "ReduceLROnPlateau": "reduce_lr_on_plateau",
    "RemoteMonitor": "remote_monitor",
    "TensorBoard": "tensorboard",
    "TerminateOnNaN": "terminate_on_nan",
}

__all__ = sorted(_MODULES)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES)
