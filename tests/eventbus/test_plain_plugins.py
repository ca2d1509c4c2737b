"""Plugins that are plain objects (``@hookimpl`` methods, no ``eventbus.Plugin``): what the log
header records of them, and replay rebuilding them from it, or asking for an instance."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, Plugin, ReplayError, hookimpl, read_log, replay
from eventbus import records as r
from eventbus.plugin import plugin_spec
from eventbus.registry import Registry
from eventbus.replay import replay_each

from hypothesis_profiles import FILES, examples


class StopAt:
    """Stops once ``epoch`` is reached: a third-party plugin as the docs allow, no base class."""

    def __init__(self, epoch=5, monitor="loss"):
        self.epoch = epoch
        self._monitor = monitor  # kept under _name: found as well

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch >= self.epoch and self._monitor in event.logs:
            return r.StopTraining(reason=f"epoch {event.epoch} reached",
                                  evidence={"epoch": event.epoch})
        return None


class Renamed:
    """Keeps its argument under another name: nothing tells what it was built with."""

    def __init__(self, epoch=5):
        self.stop_epoch = epoch

    @hookimpl
    def on_epoch_end(self, event):
        if event.epoch >= self.stop_epoch:
            return r.StopTraining(reason="reached")
        return None


class NoParameters:
    """Takes no constructor arguments at all."""

    def __init__(self):
        self.seen = 0

    @hookimpl
    def on_epoch_end(self, event):
        self.seen += 1


class NoInit:
    @hookimpl
    def on_epoch_end(self, event):
        return None


def train(path, plugins, epochs=6):
    with Bus(plugins, log=path) as bus:
        bus.train_begin({"epochs": epochs})
        for epoch in range(epochs):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
            if bus.stop_training:
                break
        bus.train_end()
    return bus


def header_specs(path):
    return {spec.name: spec for spec in next(read_log(path)).plugins}


@pytest.fixture()
def registry():
    reg = Registry(group="eventbus-tests-none")
    for cls in (StopAt, Renamed, NoParameters, NoInit):
        reg.register(cls)
    return reg


class TestHeader:
    def test_kept_attributes_are_the_recorded_parameters(self, tmp_path):
        """Each ``__init__`` parameter is read from ``self.<name>`` or ``self._<name>``."""
        path = tmp_path / "run.jsonl"
        with Bus([], log=path) as bus:
            bus.register(StopAt(epoch=1, monitor="val_loss"))
            bus.train_begin()
        spec = header_specs(path)["StopAt"]
        assert spec.params == {"epoch": 1, "monitor": "val_loss"}
        assert spec.recordable and spec.cls.endswith(":StopAt")

    @pytest.mark.parametrize("plugin", [NoParameters(), NoInit()], ids=type)
    def test_no_constructor_parameters_is_recordable_as_nothing(self, plugin):
        """A class whose constructor takes no arguments is rebuilt as ``cls()``."""
        spec = plugin_spec(plugin)
        assert (spec.params, spec.recordable) == ({}, True)

    def test_a_dataclass_is_recorded_by_its_fields(self):
        """A dataclass keeps every constructor argument as a field of the same name."""
        @dataclasses.dataclass(frozen=True)
        class Threshold:
            value: float
            monitor: str = "loss"

            @hookimpl
            def on_epoch_end(self, event):
                return None

        spec = plugin_spec(Threshold(0.5))
        assert (spec.params, spec.recordable) == ({"value": 0.5, "monitor": "loss"}, True)

    def test_a_parameter_not_kept_is_unrecordable_even_with_a_default(self):
        """A default is not what the plugin was built with: the header says it cannot tell."""
        spec = plugin_spec(Renamed(epoch=1))
        assert not spec.recordable
        assert spec.params == {"epoch": "<unrecordable: not kept as self.epoch or self._epoch>"}

    def test_a_kept_value_that_is_not_plain_data_is_unrecordable(self):
        """A callable kept as an attribute is shown by its type, as a Plugin's would be."""
        class Scheduled:
            def __init__(self, schedule, scale=2.0):
                self.schedule, self.scale = schedule, scale

        spec = plugin_spec(Scheduled(print))
        assert not spec.recordable
        assert spec.params == {"schedule": "<unrecordable builtin_function_or_method>",
                               "scale": 2.0}

    def test_a_class_attribute_of_the_same_name_does_not_count(self):
        """Only the instance's own attributes say what it was built with."""
        class Defaulted:
            patience = 3

            def __init__(self, patience=3):
                self.limit = patience

        assert not plugin_spec(Defaulted(patience=7)).recordable

    def test_slots_and_properties_count_as_kept(self):
        """A slot or a property of the instance is read like an attribute; an unset slot is not
        kept."""
        class Slotted:
            __slots__ = ("factor", "_window")

            def __init__(self, factor, window=3, other=None):
                self.factor, self._window = factor, window

            @property
            def other(self):
                return "computed"

        spec = plugin_spec(Slotted(0.5, window=4))
        assert spec.params == {"factor": 0.5, "window": 4, "other": "computed"}
        assert spec.recordable

        class Unset:
            __slots__ = ("factor",)

            def __init__(self, factor=None):
                pass

        assert not plugin_spec(Unset()).recordable

    @pytest.mark.parametrize("kept,recordable", [
        ({"args": (), "kwargs": {}}, True),
        ({"args": (1,), "kwargs": {}}, False),
        ({"args": (), "kwargs": {"a": 1}}, False),
        ({"kwargs": {}}, False),  # *args not kept: it may have held anything
    ])
    def test_star_arguments_are_recordable_only_when_kept_and_empty(self, kept, recordable):
        """``*args`` and ``**kwargs`` cannot be given back by name unless there is nothing to
        give: empty ones leave the params as they are, any other marks the spec unrecordable."""
        class Star:
            def __init__(self, limit, *args, **kwargs):
                self.limit = limit
                for name, value in kept.items():
                    setattr(self, name, value)

        spec = plugin_spec(Star(2))
        assert spec.recordable is recordable
        assert spec.params["limit"] == 2
        if recordable:
            assert spec.params == {"limit": 2}
        else:
            assert any(str(v).startswith("<unrecordable") for v in spec.params.values())

    def test_get_config_wins_over_the_attributes(self):
        """An object with its own ``get_config`` is recorded by it, Plugin or not."""
        class Configured:
            def __init__(self, epoch=5):
                self.stop_epoch = epoch

            def get_config(self):
                return {"epoch": self.stop_epoch}

        spec = plugin_spec(Configured(2))
        assert (spec.params, spec.recordable) == ({"epoch": 2}, True)

    def test_plugin_subclasses_are_recorded_by_get_config_alone(self):
        """A Plugin's spec is its recorded constructor arguments, whatever its attributes."""
        class Quiet(Plugin):
            def __init__(self, epoch=5, fn=None):
                self.stop_epoch = epoch

        spec = plugin_spec(Quiet(epoch=2))
        assert (spec.params, spec.recordable) == ({"epoch": 2, "fn": None}, True)
        spec = plugin_spec(Quiet(fn=len))
        assert not spec.recordable
        assert spec.params == {"epoch": 5, "fn": "<unrecordable builtin_function_or_method>"}


class TestReplay:
    def test_verify_rebuilds_it_with_its_recorded_arguments(self, tmp_path, registry):
        """Replay builds ``StopAt(epoch=1)``, not ``StopAt()``: same decision, same epoch."""
        path = tmp_path / "run.jsonl"
        bus = train(path, [StopAt(epoch=1)])
        assert bus.stop_training
        result = replay(path, verify=True, registry=registry)
        assert result.ok and len(result.decisions) == 1
        assert result.stopped_at == 1 and result.plugins[0].epoch == 1

    def test_what_if_changes_one_parameter(self, tmp_path, registry):
        """Overrides apply on top of the recorded parameters, one replay per variant."""
        path = tmp_path / "run.jsonl"
        train(path, [StopAt(epoch=2, monitor="loss")])
        earlier, never = replay_each(path, [{"StopAt": {"epoch": 0}},
                                            {"StopAt": {"monitor": "val_loss"}}],
                                     registry=registry)
        assert earlier.stopped_at == 0 and earlier.plugins[0]._monitor == "loss"
        assert never.stopped_at is None and never.plugins[0].epoch == 2

    def test_unkept_parameters_ask_for_an_instance(self, tmp_path, registry):
        """Replay refuses to guess: it applies the plugin's recorded decisions, unchecked,
        rather than rebuild it with defaults; changing its parameters is an error that names
        them and says to pass an instance, and one passed verifies."""
        path = tmp_path / "run.jsonl"
        train(path, [Renamed(epoch=1)])
        alone = replay(path, verify=True, registry=registry)
        assert alone.ok and not alone.decisions and alone.stopped_at == 1  # as recorded
        assert [d.kind for d in alone.unchecked] == ["stop_training"]
        with pytest.raises(ReplayError, match=r"'Renamed'.*\(epoch\); pass an instance: "
                                              r"replay\(log, plugins=\[Renamed\(\.\.\.\)\]\)"):
            replay(path, overrides={"Renamed": {"epoch": 2}}, registry=registry)
        assert replay(path, plugins=[Renamed(epoch=1)], verify=True, registry=registry).ok

    def test_no_parameters_replays(self, tmp_path, registry):
        """A plugin built with no arguments is rebuilt from the log as it was."""
        path = tmp_path / "run.jsonl"
        train(path, [NoParameters(), StopAt(epoch=2)])
        result = replay(path, verify=True, registry=registry)
        assert result.ok and result.plugins[0].seen == 3

    @examples(FILES)
    @given(losses=st.lists(st.floats(0.01, 10.0), min_size=1, max_size=8),
           epoch=st.integers(0, 8), monitor=st.sampled_from(["loss", "val_loss"]))
    def test_replay_agrees_with_the_run(self, tmp_path_factory, losses, epoch, monitor):
        """For any run, the replay of a plain plugin verifies and stops where the run did."""
        registry = Registry(group="eventbus-tests-none")
        registry.register(StopAt)
        path = tmp_path_factory.mktemp("plain") / "run.jsonl"
        with Bus([StopAt(epoch=epoch, monitor=monitor)], log=path) as bus:
            bus.train_begin({"epochs": len(losses)})
            for i, loss in enumerate(losses):
                bus.epoch_begin(i)
                bus.epoch_end(i, {"loss": loss})
                if bus.stop_training:
                    break
            bus.train_end()
        result = replay(path, verify=True, registry=registry)
        assert result.ok
        stops = monitor == "loss" and epoch < len(losses)
        assert result.stopped_at == (epoch if stops else None)


PLUGIN_SOURCE = textwrap.dedent('''
    from eventbus import hookimpl
    from eventbus.records import StopTraining

    class StopAt:
        """Stops at a fixed epoch."""
        def __init__(self, epoch=3):
            self.epoch = epoch

        @hookimpl
        def on_epoch_end(self, event):
            if event.epoch >= self.epoch:
                return StopTraining(reason=f"epoch {event.epoch} reached",
                                    evidence={"epoch": event.epoch})

    class Renamed:
        def __init__(self, epoch=3):
            self.stop_epoch = epoch

        @hookimpl
        def on_epoch_end(self, event):
            if event.epoch >= self.stop_epoch:
                return StopTraining(reason="reached")
''')

TRAIN = textwrap.dedent('''
    import sys
    from eventbus import Bus
    import stopat_plugin

    plugin = getattr(stopat_plugin, sys.argv[1])(epoch=2)
    with Bus([plugin], log="events.jsonl") as bus:
        bus.train_begin({"epochs": 5})
        for e in range(5):
            bus.epoch_begin(e)
            bus.epoch_end(e, {"loss": 1.0})
            if bus.stop_training:
                break
        bus.train_end()
''')


class TestEntryPoint:
    """A plain plugin installed as a distribution (a dist-info with its entry point on the
    path), run and replayed by the command line in processes of their own."""

    @pytest.fixture()
    def env(self, tmp_path) -> dict[str, str]:
        site = tmp_path / "site"
        site.mkdir()
        (site / "stopat_plugin.py").write_text(PLUGIN_SOURCE)
        info = site / "stopat_plugin-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stopat-plugin\n"
                                       "Version: 1.0\n")
        (info / "entry_points.txt").write_text(
            "[eventbus]\nStopAt = stopat_plugin:StopAt\nRenamed = stopat_plugin:Renamed\n")
        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)
        env["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in
                                                           [os.environ.get("PYTHONPATH")] if p])
        return env

    def run(self, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=120, env=env, cwd=cwd)

    def test_rebuilt_from_the_header_verified_and_what_if(self, tmp_path, env):
        """``replay --verify`` matches the log; ``--set StopAt.epoch=1`` stops one epoch
        earlier."""
        (tmp_path / "train.py").write_text(TRAIN)
        done = self.run(tmp_path, env, "train.py", "StopAt")
        assert done.returncode == 0, done.stderr
        header = next(read_log(tmp_path / "events.jsonl"))
        assert header.plugins[0].params == {"epoch": 2} and header.plugins[0].recordable
        done = self.run(tmp_path, env, "-m", "eventbus", "replay", "events.jsonl", "--verify")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "verify: all 1 decisions match the log" in done.stdout
        done = self.run(tmp_path, env, "-m", "eventbus", "replay", "events.jsonl",
                        "--set", "StopAt.epoch=1", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["stopped_at"] == 1

    def test_unkept_parameter_fails_with_what_to_do(self, tmp_path, env):
        """A plugin the header cannot describe is never rebuilt with defaults (which would
        report a mismatch, or answer a what-if wrongly): --verify leaves its decisions
        unchecked and says whose; a --set of it is refused by name."""
        (tmp_path / "train.py").write_text(TRAIN)
        done = self.run(tmp_path, env, "train.py", "Renamed")
        assert done.returncode == 0, done.stderr
        done = self.run(tmp_path, env, "-m", "eventbus", "replay", "events.jsonl", "--verify")
        assert done.returncode == 0, done.stderr
        assert "by Renamed, are not checked" in done.stdout
        done = self.run(tmp_path, env, "-m", "eventbus", "replay", "events.jsonl", "--set",
                        "Renamed.epoch=2")
        assert done.returncode == 2
        assert "plugin 'Renamed' has parameters the log could not record (epoch); pass an " \
               "instance" in done.stderr
