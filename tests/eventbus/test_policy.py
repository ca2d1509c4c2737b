"""eventbus.policy: what a failure becomes, decided in one place."""

from __future__ import annotations

import builtins
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import AbortTraining, ConfigError, Plugin, PluginError, PluginIsolatedWarning
from eventbus import records as r
from eventbus.policy import FailurePolicy


class Pure(Plugin):
    """A decision plugin (no side effects)."""


class Acting(Plugin):
    """A plugin with side effects (a logger, a sink)."""

    side_effects = True


class Wiring:
    """The policy's injected dependencies, as plain callables that note each call in order."""

    def __init__(self):
        self.calls: list[tuple] = []

    def record(self, item):
        self.calls.append(("record", item))

    def disable(self, plugin):
        self.calls.append(("disable", plugin))

    def flush(self):
        self.calls.append(("flush",))

    def label(self, plugin):
        return f"label-of-{type(plugin).__name__}"

    def policy(self, mode: str) -> FailurePolicy:
        return FailurePolicy(mode, record=self.record, disable=self.disable, flush=self.flush,
                             label=self.label)

    def of(self, what: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == what]


class NotAborting(RuntimeError):
    pass


errors = st.sampled_from([
    lambda: RuntimeError("boom"), lambda: ValueError("bad value"), lambda: NotAborting("no"),
    lambda: AbortTraining("stop now"), lambda: PluginError("inner", plugin="x", event="y"),
])


class TestFailurePolicy:
    @given(mode=st.sampled_from(["raise", "isolate"]), side_effects=st.booleans(),
           make_error=errors, closing=st.booleans(),
           kind=st.sampled_from(["epoch_end", "batch_end", "set_learning_rate", "close"]),
           seq=st.none() | st.integers(0, 10**6), epoch=st.none() | st.integers(0, 1000))
    def test_the_decision_table(self, mode, side_effects, make_error, closing, kind, seq, epoch):
        """Exactly one fault is recorded, of the right kind and naming plugin, event, seq and
        epoch; PluginError (chained) is raised only for a pure plugin under "raise" when not
        closing and not an abort; the very AbortTraining is raised when not closing; the plugin
        is disabled when isolated or acting (not closing, not aborting); the log is flushed
        before anything is raised; a pure plugin isolated is warned of."""
        wiring = Wiring()
        policy = wiring.policy(mode)
        policy.closing = closing
        plugin = Acting() if side_effects else Pure()
        exc = make_error()
        abort = isinstance(exc, AbortTraining)
        label = wiring.label(plugin)

        raised = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                policy.plugin_failed(plugin, kind, seq, epoch, exc)
            except Exception as error:  # noqa: BLE001 - what is raised is the subject
                raised = error

        (fault,) = [item for _, item in wiring.of("record")]
        as_sink = closing or (side_effects and not abort)
        assert fault.kind == ("sink_failed" if as_sink else "plugin_failed")
        assert (fault.sink if as_sink else fault.plugin) == label
        assert (fault.event, fault.cause_seq, fault.epoch) == (kind, seq, epoch)
        assert (fault.error, fault.message) == (type(exc).__name__, str(exc))

        raises_plugin_error = mode == "raise" and not side_effects and not closing and not abort
        if raises_plugin_error:
            assert isinstance(raised, PluginError) and raised.__cause__ is exc
            # Also of the cause's built-in class, where that can be mixed in: caught by an
            # ``except ValueError`` around the loop as a Keras callback's would be.
            assert isinstance(raised, type(exc)) or isinstance(exc, (OSError, RuntimeError))
            assert (raised.plugin, raised.event, raised.seq) == (label, kind, seq)
        elif abort and not closing:
            assert raised is exc
        else:
            assert raised is None

        disables = not closing and not abort and (side_effects or mode == "isolate")
        assert wiring.of("disable") == ([("disable", plugin)] if disables else [])
        if raised is not None:
            assert wiring.calls[-1] == ("flush",)  # flushed last: the fault is on disk
            assert wiring.calls[0][0] == "record"
        else:
            assert wiring.of("flush") == []

        isolated = [w for w in caught if issubclass(w.category, PluginIsolatedWarning)]
        warned = mode == "isolate" and not side_effects and not closing and not abort
        assert len(isolated) == (1 if warned else 0)
        if warned:
            assert label in str(isolated[0].message) and kind in str(isolated[0].message)

    def test_closing_records_a_sink_failure_and_raises_nothing(self):
        """While the bus closes, even an abort from a pure plugin under "raise" is only
        recorded, as a sink_failed."""
        wiring = Wiring()
        policy = wiring.policy("raise")
        policy.closing = True
        policy.plugin_failed(Pure(), "close", None, 4, AbortTraining("late"))
        ((_, fault),) = wiring.calls
        assert isinstance(fault, r.SinkFailed) and fault.event == "close" and fault.epoch == 4

    def test_a_subclass_of_abort_training_is_an_abort(self):
        """A subclass of AbortTraining (NonFiniteLossError) is re-raised under "isolate"."""
        from plugins.terminate_on_nan import NonFiniteLossError

        wiring = Wiring()
        exc = NonFiniteLossError("loss is nan")
        with pytest.raises(NonFiniteLossError) as info:
            wiring.policy("isolate").plugin_failed(Pure(), "batch_end", 3, 0, exc)
        assert info.value is exc
        assert [c[0] for c in wiring.calls] == ["record", "flush"]

    @pytest.mark.parametrize("mode", ["Raise", "ignore", None, 1, ""])
    def test_a_bad_mode_is_a_config_error(self, mode):
        """A mode other than "raise" or "isolate" is refused, naming on_plugin_error."""
        wiring = Wiring()
        with pytest.raises(ConfigError, match="on_plugin_error") as info:
            wiring.policy(mode)
        assert info.value.field == "on_plugin_error"

    def test_sink_failed_records_and_returns_the_fault(self):
        """``sink_failed`` records one sink_failed naming sink, event, seq and epoch, and
        returns it; nothing is disabled or flushed."""
        wiring = Wiring()
        fault = wiring.policy("raise").sink_failed("jsonl", "batch_end", 12, 3,
                                                   OSError("disk full"))
        assert wiring.calls == [("record", fault)]
        assert (fault.sink, fault.event, fault.cause_seq, fault.epoch) == \
            ("jsonl", "batch_end", 12, 3)
        assert (fault.error, fault.message) == ("OSError", "disk full")


class TestPluginErrorIsOfItsCausesClass:
    @pytest.mark.parametrize("cause", [ZeroDivisionError("x"), ValueError("v"), KeyError("k"),
                                       TypeError("t"), NotImplementedError("n")])
    def test_a_builtin_cause_s_class_is_mixed_in(self, cause):
        from eventbus.errors import PluginError

        error = PluginError.raised_for(cause, "plugin 'P' failed", plugin="P", event="e")
        assert isinstance(error, PluginError) and isinstance(error, type(cause))
        assert str(error) == "plugin 'P' failed"  # KeyError's quoted repr is not used
        assert (error.plugin, error.event) == ("P", "e")

    def test_a_project_or_user_exception_mixes_in_its_nearest_builtin_base(self):
        """A ConfigError (a LearningRateScheduler's schedule returning text) leaves a bus as a
        ValueError, as Keras's raises; a user's own subclass of ValueError likewise."""
        from eventbus.errors import ConfigError, PluginError

        class Mine(ValueError):
            pass

        class Plain(Exception):
            pass

        for cause in (ConfigError("bad"), Mine("bad")):
            error = PluginError.raised_for(cause, "m", plugin="P", event="e")
            assert isinstance(error, ValueError) and not isinstance(error, type(cause))
        assert type(PluginError.raised_for(Plain(), "m", plugin="P", event="e")) is PluginError

    def test_every_nearest_builtin_base_is_mixed_in(self):
        """ModelCheckpoint's missing path field is a ConfigError and a KeyError (Keras raises
        KeyError): on a bus, ``except KeyError`` and ``except ValueError`` both catch it."""
        from eventbus import Bus
        from eventbus.errors import PluginError
        from plugins import ModelCheckpoint

        with Bus([ModelCheckpoint("m-{val_acc:.2f}.h5")]) as bus:
            bus.train_begin({"epochs": 1})
            bus.epoch_begin(0)
            with pytest.raises(KeyError) as info:
                bus.epoch_end(0, {"loss": 1.0})
        assert isinstance(info.value, PluginError) and isinstance(info.value, ValueError)
        assert "needs {val_acc}" in str(info.value)

    @pytest.mark.parametrize("cause", [OSError(2, "gone"), RuntimeError("r"),
                                       StopIteration(), UnicodeError("u")] + (
    [builtins.ExceptionGroup("two", [ValueError(), KeyError()])]
    if hasattr(builtins, "ExceptionGroup") else []))
    def test_classes_with_fields_or_meaning_of_their_own_are_not(self, cause):
        """An OSError's handler reads errno; a StopIteration is special in generators."""
        import pickle

        from eventbus.errors import PluginError

        error = PluginError.raised_for(cause, "m", plugin="P", event="e", seq=3)
        assert type(error) is PluginError
        again = pickle.loads(pickle.dumps(PluginError.raised_for(ValueError(), "m", plugin="P",
                                                                 event="e", seq=3)))
        assert (type(again), str(again), again.seq) == (PluginError, "m", 3)

    def test_on_a_bus_except_the_plugin_s_own_class_catches_it(self):
        from eventbus import Bus, Plugin, hookimpl
        from eventbus.errors import PluginError

        class Divides(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return 1 / 0

        with Bus([Divides()]) as bus:
            bus.train_begin()
            bus.epoch_begin(0)
            with pytest.raises(ZeroDivisionError) as info:
                bus.epoch_end(0, {"loss": 1.0})
        assert isinstance(info.value, PluginError) and info.value.plugin == "Divides"
        assert [f.kind for f in bus.failures] == ["plugin_failed"]
