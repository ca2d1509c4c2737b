"""An event-sourced callback bus for training loops.

Events in, decisions out, side effects at the edge: a training loop publishes typed events to a
:class:`Bus`; plugins (pure state machines) return decisions; the bus records every event and
decision to an event log, applies the decisions, and the log can be replayed, audited and resumed.
"""

from ._lazy import lazy_exports as _lazy_exports
from ._markers import hookimpl, hookspec
from ._version import __version__
from .bus import Bus, PluginIsolatedWarning, RunWarning, SinkFailureWarning
from .errors import (
    AbortTraining,
    CheckpointError,
    ConfigError,
    DeliveryError,
    DistributedError,
    EventBusError,
    EventError,
    LogCorruptError,
    LogError,
    MetricValueError,
    PluginError,
    RankTimeoutError,
    RegistryError,
    ReplayError,
    SchemaVersionError,
    UsageError,
)
from .events import Event
from .log import read_header, read_log
from .model import ModelAdapter, NumpyModel
from .plugin import Plugin
from .registry import registry
from .run import Run
from .sink import Sink

__all__ = [
    "AbortTraining",
    "Bus",
    "CheckpointError",
    "ConfigError",
    "DeliveryError",
    "DistributedError",
    "Event",
    "EventBusError",
    "EventError",
    "LogCorruptError",
    "LogError",
    "MetricValueError",
    "ModelAdapter",
    "NumpyModel",
    "Plugin",
    "PluginError",
    "PluginIsolatedWarning",
    "RankTimeoutError",
    "RegistryError",
    "ReplayError",
    "ReplayResult",
    "Run",
    "RunWarning",
    "SchemaVersionError",
    "Sink",
    "SinkFailureWarning",
    "TornLogWarning",
    "UsageError",
    "__version__",
    "hookimpl",
    "hookspec",
    "read_header",
    "read_log",
    "registry",
    "replay",
]

# The record classes, by name: ``eventbus.StopTraining``, ``eventbus.EpochEnd`` (the module
# ``eventbus.records`` has them all, with the groups' bases).
_RECORDS = ("Record", "Observation", "Decision", "Outcome", "Header", "TrainBegin", "TrainEnd",
            "EpochBegin", "EpochEnd", "BatchBegin", "BatchEnd", "TestBegin", "TestEnd",
            "TestBatchBegin", "TestBatchEnd", "PredictBegin", "PredictEnd", "PredictBatchBegin",
            "PredictBatchEnd", "StopTraining", "SetLearningRate", "SaveCheckpoint",
            "DeleteCheckpoint", "SnapshotWeights", "RestoreWeights")
__all__ = sorted([*__all__, *_RECORDS, "Audit", "audit"])

# Loaded on first use: replay, audit and the JSON Lines reader are no part of what a Bus needs,
# and cost ``import eventbus`` about a tenth of its time.
_LAZY = {"ReplayResult": "replay", "TornLogWarning": "jsonl", "replay": "replay",
         "Audit": "audit", "audit": "audit", **dict.fromkeys(_RECORDS, "records")}
__getattr__, __dir__ = _lazy_exports(__name__, globals(), _LAZY)
