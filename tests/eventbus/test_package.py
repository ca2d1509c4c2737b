"""The package surface: what `import eventbus` exports and what it does not load."""

from __future__ import annotations

import subprocess
import sys

import eventbus
from eventbus import records
from eventbus.registry import registry


def test_all_lists_every_public_name_sorted():
    """__all__ is complete (every public attribute) and sorted, as in pluggy."""
    public = {name for name in dir(eventbus) if not name.startswith("_")}  # lazy names too
    modules = {name for name in public if type(getattr(eventbus, name)).__name__ == "module"}
    assert set(eventbus.__all__) == (public - modules) | {"__version__"}
    assert eventbus.__all__ == sorted(eventbus.__all__)


def test_records_all_is_complete():
    """Every record model is exported by eventbus.records."""
    for kind, cls in records.KINDS.items():
        assert cls.__name__ in records.__all__, kind


def test_import_eventbus_loads_no_heavy_dependency():
    """`import eventbus` stays fast: pyarrow, tensorboardX, requests, h5py load only when used."""
    code = ("import sys, eventbus; heavy = [m for m in ('pyarrow', 'tensorboardX', 'requests', "
            "'h5py', 'tensorboard', 'pandas') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_builtin_plugins_are_registered_through_entry_points():
    """The registry finds built-ins by name through the 'eventbus' entry-point group."""
    infos = {info.name: info for info in registry.info()}
    assert {"EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "CSVLogger"} <= set(infos)
    assert infos["EarlyStopping"].distribution == "eventbus"
    assert infos["EarlyStopping"].target == "plugins.early_stopping:EarlyStopping"


def test_the_names_the_design_gives_are_there(tmp_path):
    """What DESIGN.md's layout and users reach for: the audit beside replay, the record
    classes at the top, the observation classes beside Event, a sink module per log format."""
    import importlib

    from eventbus import events
    from eventbus.jsonl import JsonlWriter
    from eventbus.parquet import ParquetWriter
    from sinks.jsonl import JsonlSink
    from sinks.parquet import ParquetSink

    assert eventbus.audit is importlib.import_module("eventbus.audit").audit
    assert eventbus.replay is importlib.import_module("eventbus.replay").replay
    for kind, cls in records.KINDS.items():
        if cls.category in ("observation", "decision"):
            assert getattr(eventbus, cls.__name__) is cls, kind
        if cls.category == "observation":
            assert getattr(events, cls.__name__) is cls, kind
    assert (JsonlSink, ParquetSink) == (JsonlWriter, ParquetWriter)
    logs = [tmp_path / "run.jsonl", tmp_path / "run.parquet"]
    with eventbus.Bus(log=[JsonlSink(logs[0]), ParquetSink(logs[1])]) as bus:
        bus.epoch_end(0, {"loss": 0.5})
        bus.decide(eventbus.StopTraining(reason="by hand"))
    for log in logs:
        assert [rec.kind for rec in eventbus.read_log(log)] == [
            "header", "epoch_end", "stop_training"]
        result = eventbus.audit(log)
        assert isinstance(result, eventbus.Audit)
        assert result.stop.reason == "by hand"
