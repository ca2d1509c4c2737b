"""What `import eventbus` loads, and that what it leaves for later still works when first used.

Each check runs in a fresh interpreter, since this test process has long imported everything.
The assertions are on ``sys.modules`` and on pydantic's own build flags, never on time
(``benchmarks/bench_startup.py`` measures the time).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Modules a bare interpreter may already hold here (a ``.pth`` file can import anything), so
#: each script compares what ``import eventbus`` adds against what was there before it.
PRELUDE = """
import sys
before = set(sys.modules)
"""


def run(code: str) -> str:
    """Run ``code`` in a fresh interpreter with this tree first on the path; its stdout."""
    done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_eventbus_loads_no_framework_and_no_numpy():
    """numpy (NumpyModel's), importlib.metadata (the registry's), the replay and log-reading
    modules, and every framework or heavy dependency wait until something uses them."""
    out = run("""
        import eventbus
        added = set(sys.modules) - before
        heavy = ("numpy", "torch", "keras", "tensorflow", "pandas", "requests", "pyarrow",
                 "h5py", "tensorboardX", "tensorboard", "matplotlib", "lightning",
                 "importlib.metadata", "email", "eventbus.replay", "eventbus.audit",
                 "eventbus.jsonl")
        print(sorted(m for m in added if m.split(".")[0] in heavy or m in heavy))
    """)
    assert out.strip() == "[]"


def test_record_models_are_built_on_first_use_not_at_import():
    out = run("""
        from eventbus import records
        print(sorted(k for k, cls in records.KINDS.items() if cls.__pydantic_complete__))
        print(records.PluginSpec.__pydantic_complete__)
    """)
    assert out.split("\n")[:2] == ["[]", "False"]


def test_a_record_works_whatever_builds_its_model_first():
    """A record kind first touched as a trusted record (the bus's batch path), through the log
    reader's union, or built directly, validates, dumps, compares and copies as it always has."""
    run("""
        import math
        import pydantic
        from eventbus import records as r

        fields = {"v": 1, "run_id": "r", "seq": 3, "kind": "batch_end", "time": 1.5,
                  "logs": {"loss": 0.5, "acc": math.nan}, "epoch": 0, "batch": 2, "step": 2}
        fast = r.trusted(r.BatchEnd, dict(fields))
        assert not r.BatchEnd.__pydantic_complete__
        assert isinstance(fast, r.BatchEnd)
        assert r.same_values(fast.model_dump(), fields)
        assert fast.model_dump_json().startswith('{"v":1,"run_id":"r","seq":3')
        assert repr(fast).startswith("BatchEnd(v=1, run_id='r', seq=3")
        assert fast.model_copy(update={"seq": 4}).seq == 4
        slow = r.BatchEnd(**{**fields, "logs": {"loss": 0.5, "acc": 0.25}})
        assert slow == fast.model_copy(update={"logs": {"loss": 0.5, "acc": 0.25}})
        try:
            r.BatchEnd(**{**fields, "batch": "two"})
        except pydantic.ValidationError as exc:
            assert "batch" in str(exc)
        else:
            raise AssertionError("a bad batch index was accepted")

        # The union the log reader validates with, before any of its models was built.
        assert not r.EpochEnd.__pydantic_complete__
        parsed = r.parse_record({"kind": "epoch_end", "seq": 5, "epoch": 1,
                                 "logs": {"val_loss": 0.75}})
        assert type(parsed) is r.EpochEnd and parsed.logs == {"val_loss": 0.75}
        assert r.EpochEnd(seq=5, epoch=1, logs={"val_loss": 0.75}) == parsed
        try:
            r.parse_record({"kind": "no_such_kind"})
        except pydantic.ValidationError as exc:
            assert "no_such_kind" in str(exc)
        else:
            raise AssertionError("an unknown kind was accepted")

        # A nested model (the header's plugins) built through its parent first.
        header = r.Header(created="2026-01-01", library="eventbus", plugins=[{"name": "X"}])
        assert type(header.plugins[0]) is r.PluginSpec and header.plugins[0].name == "X"
        assert r.PluginSpec(name="X") == header.plugins[0]
        try:
            r.PluginSpec(name="X", surprise=1)
        except pydantic.ValidationError as exc:
            assert "surprise" in str(exc)
        else:
            raise AssertionError("an unknown PluginSpec field was accepted")
    """)


def test_lazy_names_are_the_modules_own_and_replay_stays_the_function():
    """``eventbus.replay`` is the function, also after something imported the submodule of the
    same name (which binds the module on the package)."""
    out = run("""
        import eventbus
        assert {"replay", "ReplayResult", "TornLogWarning"} <= set(dir(eventbus))
        assert "eventbus.replay" not in sys.modules
        from eventbus.replay import ReplayResult, replay
        import eventbus.jsonl
        import eventbus.replay as again
        assert eventbus.replay is replay and again is replay, eventbus.replay
        assert eventbus.ReplayResult is ReplayResult
        assert eventbus.TornLogWarning is eventbus.jsonl.TornLogWarning
        from eventbus import TornLogWarning, replay as imported
        assert imported is replay and TornLogWarning is eventbus.jsonl.TornLogWarning
        try:
            eventbus.no_such_name
        except AttributeError as exc:
            print(exc)
    """)
    assert "no_such_name" in out


def test_numpy_and_entry_points_load_when_first_needed():
    """NumpyModel imports numpy when one is made; the registry reads entry points on its first
    lookup by name."""
    out = run("""
        import eventbus
        assert "numpy" not in sys.modules
        model = eventbus.NumpyModel({"w": [1.0, 2.0]}, learning_rate=0.1)
        model.set_weights({"w": [3.0, 4.0]})
        print(model.get_weights()["w"].tolist(), "numpy" in sys.modules)
        print(eventbus.registry.get("EarlyStopping").__name__)
    """)
    assert out.split("\n")[:2] == ["[3.0, 4.0] True", "EarlyStopping"]
