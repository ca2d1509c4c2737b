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
