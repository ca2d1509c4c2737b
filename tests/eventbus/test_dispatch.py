"""eventbus.dispatch: the call tables per hook, labels, refusals, and the one call loop."""

from __future__ import annotations

import gc
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, Plugin, SinkFailureWarning, hookimpl
from eventbus import records as r
from eventbus.dispatch import EVENT_HOOKS, HOOKS, Dispatcher
from eventbus.testing import RecordingWriter

#: The hooks the generated plugins below may implement.
SOME_HOOKS = ("on_epoch_end", "on_batch_end", "on_decision", "augment_epoch_logs")


class Calls(Plugin):
    """Implements on_epoch_end and on_batch_end; appends (tag, kind) to a shared list."""

    def __init__(self, tag: str, seen: list | None = None):
        self.tag = tag
        self.seen = seen if seen is not None else []

    @hookimpl
    def on_epoch_end(self, event):
        self.seen.append((self.tag, event.kind))

    @hookimpl
    def on_batch_end(self, event):
        self.seen.append((self.tag, event.kind))


class Loud(Calls):
    """The same, with side effects."""

    side_effects = True


class Named(Plugin):
    """A plugin whose name is given per instance."""

    def __init__(self, label: str):
        self.name = label  # type: ignore[misc]

    @hookimpl
    def on_epoch_end(self, event):
        return None


def plugin_with(hooks: frozenset[str], side_effects: bool) -> object:
    """A plugin implementing exactly ``hooks`` (a class made per call, as a user's would be)."""
    def make(hook: str):
        if hook == "augment_epoch_logs":
            def augment(self, epoch, logs):
                return None
            return hookimpl(augment)
        if hook == "on_decision":
            def decided(self, decision):
                return None
            return hookimpl(decided)

        def handler(self, event):
            return None
        return hookimpl(handler)

    body = {hook: make(hook) for hook in hooks}
    body["side_effects"] = side_effects
    return type("Generated", (Plugin,), body)()


def owners(dispatcher: Dispatcher, table: dict) -> dict[str, list[object]]:
    return {hook: [dispatcher.owner[id(fn)] for fn in table[hook]] for hook in HOOKS}


class TestCallTables:
    def test_list_order_not_last_registered_first(self):
        """Each hook's table calls the plugins in the order they were registered."""
        seen: list = []
        dispatcher = Dispatcher()
        for tag in "abc":
            dispatcher.register(Calls(tag, seen))
        for fn in dispatcher.calls["on_epoch_end"]:
            fn(r.EpochEnd(epoch=0))
        assert seen == [("a", "epoch_end"), ("b", "epoch_end"), ("c", "epoch_end")]

    def test_every_hook_has_a_table_even_when_empty(self):
        """A dispatcher with no plugins has an empty table for every hook."""
        dispatcher = Dispatcher()
        assert set(dispatcher.calls) == set(HOOKS) == set(dispatcher.pure)
        assert all(dispatcher.calls[hook] == () for hook in HOOKS)
        assert set(EVENT_HOOKS) == {f"on_{kind}" for kind in r.OBSERVATION_KINDS}

    def test_calls_is_one_dict_for_the_dispatchers_life(self):
        """The calls dict a caller keeps sees every later rebuild."""
        dispatcher = Dispatcher()
        kept = dispatcher.calls
        plugin = Calls("a")
        dispatcher.register(plugin)
        assert len(kept["on_epoch_end"]) == 1
        dispatcher.disable(plugin)
        assert kept["on_epoch_end"] == ()

    def test_disable_removes_from_every_table_but_keeps_it_listed(self):
        """A disabled plugin is called for no hook and stays in ``plugins``."""
        seen: list = []
        dispatcher = Dispatcher()
        a, b = Calls("a", seen), Calls("b", seen)
        dispatcher.register(a)
        dispatcher.register(b)
        dispatcher.disable(a)
        assert dispatcher.plugins == [a, b]
        for hook in ("on_epoch_end", "on_batch_end"):
            assert [dispatcher.owner[id(fn)] for fn in dispatcher.calls[hook]] == [b]
            assert dispatcher.handlers(hook, a) == ()
        assert dispatcher.label(a) == "Calls"

    def test_pure_leaves_out_side_effects(self):
        """``pure`` holds only the handlers of plugins without side effects, in order."""
        dispatcher = Dispatcher()
        a, loud, b = Calls("a"), Loud("loud"), Calls("b")
        for plugin in (a, loud, b):
            dispatcher.register(plugin)
        assert owners(dispatcher, dispatcher.calls)["on_epoch_end"] == [a, loud, b]
        assert owners(dispatcher, dispatcher.pure)["on_epoch_end"] == [a, b]

    @given(st.lists(st.tuples(st.frozensets(st.sampled_from(SOME_HOOKS)), st.booleans(),
                              st.booleans()), max_size=6))
    def test_tables_follow_registration_disabling_and_side_effects(self, specs):
        """For any plugins (hooks, side effects, disabled or not) each table lists exactly the
        active implementers in list order, ``pure`` those without side effects, and
        ``handlers``/``subscribes`` agree with them."""
        dispatcher = Dispatcher()
        plugins = []
        for hooks, side_effects, _ in specs:
            plugin = plugin_with(hooks, side_effects)
            dispatcher.register(plugin)
            plugins.append(plugin)
        for plugin, (_, _, disabled) in zip(plugins, specs):
            if disabled:
                dispatcher.disable(plugin)
        assert dispatcher.plugins == plugins
        calls, pure = owners(dispatcher, dispatcher.calls), owners(dispatcher, dispatcher.pure)
        for hook in HOOKS:
            active = [p for p, (hooks, _, disabled) in zip(plugins, specs)
                      if hook in hooks and not disabled]
            assert calls[hook] == active
            assert pure[hook] == [p for p in active if not p.side_effects]
            for plugin in plugins:
                assert len(dispatcher.handlers(hook, plugin)) == (plugin in active)
        for kind in ("epoch_end", "batch_end", "train_begin"):
            assert dispatcher.subscribes(kind) == bool(pure[f"on_{kind}"])
            assert dispatcher.subscribes(kind, side_effects=True) == bool(calls[f"on_{kind}"])

    def test_subscribes(self):
        """``subscribes`` sees pure plugins, and plugins with side effects only when asked."""
        dispatcher = Dispatcher()
        dispatcher.register(Loud("loud"))
        assert not dispatcher.subscribes("epoch_end")
        assert dispatcher.subscribes("epoch_end", side_effects=True)
        assert not dispatcher.subscribes("train_begin", side_effects=True)
        dispatcher.register(Calls("a"))
        assert dispatcher.subscribes("epoch_end")

    def test_handlers_of_one_plugin(self):
        """``handlers(hook, plugin)`` is that plugin's own handler, not its neighbours'."""
        seen: list = []
        dispatcher = Dispatcher()
        a, b = Calls("a", seen), Calls("b", seen)
        dispatcher.register(a)
        dispatcher.register(b)
        (fn,) = dispatcher.handlers("on_batch_end", b)
        fn(r.BatchEnd(batch=0, step=0))
        assert seen == [("b", "batch_end")]
        assert dispatcher.handlers("on_train_begin", a) == ()

    def test_on_change_after_every_rebuild(self):
        """``on_change`` is called once at construction and after each register and disable,
        when the tables are already rebuilt."""
        seen: list = []
        dispatcher = Dispatcher(on_change=lambda: seen.append(
            len(dispatcher.calls["on_epoch_end"]) if seen else "built"))
        plugin = Calls("a")
        dispatcher.register(plugin)
        dispatcher.register(Calls("b"))
        dispatcher.disable(plugin)
        assert seen == ["built", 1, 2, 1]


class TestLabels:
    def test_name_then_numbered(self):
        """Plugins of one name are labelled Name, Name#2, Name#3 in order."""
        dispatcher = Dispatcher()
        labels = [dispatcher.register(Calls(t)) for t in "abc"]
        assert labels == ["Calls", "Calls#2", "Calls#3"]
        assert [dispatcher.label(p) for p in dispatcher.plugins] == labels

    def test_a_taken_numbered_label_is_skipped(self):
        """A label already in use, even a numbered one, is never given twice."""
        dispatcher = Dispatcher()
        labels = [dispatcher.register(Named(n)) for n in ("X#2", "X", "X")]
        assert labels == ["X#2", "X", "X#3"]

    def test_a_refused_plugin_takes_no_label(self):
        """A plugin refused at registration leaves the labels as they were."""
        class Typo(Plugin):
            name = "Calls"

            @hookimpl
            def on_epoch_ended(self, event):
                pass

        dispatcher = Dispatcher()
        with pytest.raises(ConfigError):
            dispatcher.register(Typo())
        assert dispatcher.register(Calls("a")) == "Calls"


class TestRefusals:
    def test_the_same_plugin_twice(self):
        """One object registered twice is a ConfigError naming it."""
        dispatcher = Dispatcher()
        plugin = Calls("a")
        dispatcher.register(plugin)
        with pytest.raises(ConfigError, match="already") as info:
            dispatcher.register(plugin)
        assert info.value.plugin == "Calls"
        assert dispatcher.plugins == [plugin]

    @pytest.mark.parametrize("marker", [{"wrapper": True}, {"hookwrapper": True}])
    def test_hook_wrappers(self, marker):
        """A hook wrapper (new or old style) is refused, naming the plugin and the hook, and
        leaves nothing registered."""
        class Wrapping(Plugin):
            @hookimpl(**marker)
            def on_epoch_end(self, event):
                yield

        dispatcher = Dispatcher()
        with pytest.raises(ConfigError, match="on_epoch_end is a hook wrapper") as info:
            dispatcher.register(Wrapping())
        assert info.value.plugin == "Wrapping"
        assert dispatcher.plugins == [] and dispatcher.calls["on_epoch_end"] == ()
        dispatcher.register(Calls("a"))  # pluggy holds nothing of it either
        assert len(dispatcher.calls["on_epoch_end"]) == 1

    def test_unknown_hook(self):
        """An @hookimpl on a name that is no hook is refused with the plugin and the name."""
        class Typo(Plugin):
            @hookimpl
            def on_epoch_ended(self, event):
                pass

        with pytest.raises(ConfigError, match="on_epoch_ended") as info:
            Dispatcher().register(Typo())
        assert info.value.plugin == "Typo"

    def test_wrong_argument_name(self):
        """An implementation naming an argument its hook does not have is refused."""
        class Misnamed(Plugin):
            @hookimpl
            def on_epoch_end(self, evt):
                pass

        with pytest.raises(ConfigError, match="evt") as info:
            Dispatcher().register(Misnamed())
        assert info.value.plugin == "Misnamed"

    def test_a_class_instead_of_an_instance(self):
        """A plugin class is refused, naming the class and asking for an instance."""
        with pytest.raises(ConfigError, match=r"class Calls; pass an instance") as info:
            Dispatcher().register(Calls)
        assert info.value.plugin == "Calls" and info.value.field == "plugins"

    @pytest.mark.parametrize("thing", [None, "EarlyStopping", 3, {"patience": 2}, [1]])
    def test_plain_data(self, thing):
        """Plain data is refused with what it is, not registered."""
        dispatcher = Dispatcher()
        with pytest.raises(ConfigError, match="not a plugin") as info:
            dispatcher.register(thing)
        assert type(thing).__name__ in str(info.value) and info.value.field == "plugins"
        assert dispatcher.plugins == []


class TestHandlerArguments:
    def test_no_argument_implementations_are_called(self):
        """An implementation taking none of its hook's arguments is called, and what it
        returns comes back."""
        class Bare(Plugin):
            @hookimpl
            def on_epoch_end(self):
                return "bare"

            @hookimpl
            def on_close(self):
                return "closed"

        dispatcher = Dispatcher()
        dispatcher.register(Bare())
        (fn,) = dispatcher.calls["on_epoch_end"]
        assert fn(r.EpochEnd(epoch=0)) == "bare"
        (close,) = dispatcher.calls["on_close"]
        assert close(None) == "closed"

    def test_keyword_hooks_get_only_what_they_name(self):
        """augment_epoch_logs, on_attach and resume_from implementations receive only the
        arguments they declare, whatever the call carries."""
        got: list = []

        class Picky(Plugin):
            @hookimpl
            def augment_epoch_logs(self, epoch):
                got.append(("augment", epoch))

            @hookimpl
            def on_attach(self, run):
                got.append(("attach", run))

            @hookimpl
            def resume_from(self, bus):
                got.append(("resume", bus))

        class Nothing(Plugin):
            @hookimpl
            def augment_epoch_logs(self):
                got.append(("nothing",))

        dispatcher = Dispatcher()
        dispatcher.register(Picky())
        dispatcher.register(Nothing())
        for fn in dispatcher.calls["augment_epoch_logs"]:
            fn({"epoch": 3, "logs": {"loss": 1.0}})
        (attach,) = dispatcher.calls["on_attach"]
        attach({"run": "the run", "bus": "the bus"})
        (resume,) = dispatcher.calls["resume_from"]
        resume({"run": "the run", "bus": "the bus"})
        assert got == [("augment", 3), ("nothing",), ("attach", "the run"),
                       ("resume", "the bus")]

    def test_logs_is_each_implementations_own_copy(self):
        """What one augment_epoch_logs implementation does to ``logs`` neither the caller's
        dict nor the next implementation sees."""
        seen: list = []

        class Scribble(Plugin):
            @hookimpl
            def augment_epoch_logs(self, epoch, logs):
                seen.append(dict(logs))
                logs["scribbled"] = 1.0
                logs.pop("loss", None)

        dispatcher = Dispatcher()
        dispatcher.register(Scribble())
        dispatcher.register(Scribble())
        logs = {"loss": 0.5}
        for fn in dispatcher.calls["augment_epoch_logs"]:
            fn({"epoch": 0, "logs": logs})
        assert logs == {"loss": 0.5}
        assert seen == [{"loss": 0.5}, {"loss": 0.5}]


#: How each generated handler behaves: return None, return a value, or raise.
behaviours = st.lists(st.one_of(st.just(("none",)), st.tuples(st.just("value"), st.integers()),
                                st.tuples(st.just("raise"), st.integers())), max_size=8)


class Acting(Plugin):
    """Does what it is told on epoch_end, and notes that it was called."""

    def __init__(self, behaviour: tuple, called: list):
        self.behaviour = behaviour
        self.called = called

    @hookimpl
    def on_epoch_end(self, event):
        self.called.append(self)
        if self.behaviour[0] == "raise":
            raise ValueError(self.behaviour[1])
        return None if self.behaviour[0] == "none" else self.behaviour[1]


class TestCallLoop:
    @given(behaviours, st.booleans())
    def test_failed_gets_raisers_and_took_gets_results_in_order(self, spec, took_gives):
        """Over handlers returning None, a value or raising: ``failed`` gets exactly the
        raisers with their errors in order, ``took`` exactly the non-None results in order,
        the loop goes on after a failure, and ``call`` returns what ``took`` gave back."""
        called: list = []
        dispatcher = Dispatcher()
        plugins = [Acting(b, called) for b in spec]
        for plugin in plugins:
            dispatcher.register(plugin)
        arg = r.EpochEnd(epoch=0)
        took: list = []
        failed: list = []

        def take(plugin, got, out):
            assert got is arg
            took.append((plugin, out))
            return [out, out] if took_gives else None

        def fail(plugin, got, exc):
            assert got is arg
            failed.append((plugin, exc))

        made = dispatcher.call(dispatcher.calls["on_epoch_end"], arg, take, fail)
        assert called == plugins
        assert [(p, e.args[0]) for p, e in failed] == \
            [(p, p.behaviour[1]) for p in plugins if p.behaviour[0] == "raise"]
        assert all(type(e) is ValueError for _, e in failed)
        assert took == [(p, p.behaviour[1]) for p in plugins if p.behaviour[0] == "value"]
        assert made == ([x for _, out in took for x in (out, out)] if took_gives else [])

    @given(behaviours)
    def test_a_failed_that_raises_ends_the_loop(self, spec):
        """When ``failed`` raises, no later handler is called and the error propagates."""
        called: list = []
        dispatcher = Dispatcher()
        plugins = [Acting(b, called) for b in spec]
        for plugin in plugins:
            dispatcher.register(plugin)

        class Stop(Exception):
            pass

        def fail(plugin, arg, exc):
            raise Stop(plugin) from exc

        first = next((i for i, p in enumerate(plugins) if p.behaviour[0] == "raise"), None)
        if first is None:
            dispatcher.call(dispatcher.calls["on_epoch_end"], None, lambda *a: None, fail)
            assert called == plugins
            return
        with pytest.raises(Stop) as info:
            dispatcher.call(dispatcher.calls["on_epoch_end"], None, lambda *a: None, fail)
        assert info.value.args[0] is plugins[first]
        assert called == plugins[:first + 1]

    def test_a_result_changes_what_later_handlers_see(self):
        """``took`` runs before the next handler, so its effect is visible to it."""
        state = {"stopped": False}
        seen: list = []

        class Decides(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                return "stop"

        class Looks(Plugin):
            @hookimpl
            def on_epoch_end(self, event):
                seen.append(state["stopped"])

        dispatcher = Dispatcher()
        dispatcher.register(Looks())
        dispatcher.register(Decides())
        dispatcher.register(Looks())

        def take(plugin, arg, out):
            state["stopped"] = True

        dispatcher.call(dispatcher.calls["on_epoch_end"], None, take, lambda *a: None)
        assert seen == [False, True]

    def test_disabling_during_the_loop_still_names_later_handlers(self):
        """A plugin disabled by ``failed`` rebuilds the tables; the handlers after it, even one
        made for an implementation without arguments, are still named and called."""
        class Raises(Plugin):
            @hookimpl
            def on_epoch_end(self):
                raise RuntimeError("boom")

        class Bare(Plugin):
            @hookimpl
            def on_epoch_end(self):
                return "bare"

        dispatcher = Dispatcher()
        raises, bare = Raises(), Bare()
        dispatcher.register(raises)
        dispatcher.register(bare)
        took: list = []
        made = dispatcher.call(dispatcher.calls["on_epoch_end"], None,
                               lambda plugin, arg, out: took.append(plugin) or [out],
                               lambda plugin, arg, exc: dispatcher.disable(plugin))
        assert took == [bare] and made == ["bare"]


class TestInlinedBatchEndLoop:
    """Bus.batch_end runs an inlined copy of the call loop; it must behave as ``call``."""

    def test_a_failure_is_isolated_and_the_loop_goes_on(self):
        """A plugin with side effects that raises on batch_end is recorded and disabled; the
        plugins after it are still called."""
        seen: list = []
        writer = RecordingWriter()

        class Breaks(Loud):
            @hookimpl
            def on_batch_end(self, event):
                raise RuntimeError("broken")

        bus = Bus([Breaks("x"), Calls("after", seen)], log=writer)
        with pytest.warns(SinkFailureWarning, match=r"Breaks on batch_end: RuntimeError: broken "
                                                    r"\(seq 1\); the plugin is disabled"):
            bus.batch_end(0, {"loss": 1.0})  # shown at once, not only at close
        bus.batch_end(1, {"loss": 1.0})
        assert seen == [("after", "batch_end"), ("after", "batch_end")]
        assert writer.kinds().count("sink_failed") == 1

    def test_a_bare_handler_after_a_disabled_plugin(self):
        """After a plugin with side effects raises on batch_end (and is disabled), a later
        plugin whose on_batch_end takes no arguments is still called and its decision kept,
        as Dispatcher.call does."""
        class Breaks(Loud):
            @hookimpl
            def on_batch_end(self, event):
                raise RuntimeError("broken")

        class BareStop(Plugin):
            @hookimpl
            def on_batch_end(self):
                return r.StopTraining(reason="enough")

        writer = RecordingWriter()
        bus = Bus([Breaks("x"), BareStop()], log=writer)
        with pytest.warns(SinkFailureWarning, match="Breaks on batch_end"):
            decisions = bus.batch_end(0, {"loss": 1.0})
        assert [d.kind for d in decisions] == ["stop_training"]
        assert writer.kinds()[-2:] == ["sink_failed", "stop_training"]


class TestRegistrationLeavesPluginsFast:
    """pluggy finds implementations with dir(plugin), which makes CPython 3.11+ build the
    instance's __dict__ and slows every later attribute read on it; the dispatcher registers
    an object of its own instead."""

    @pytest.mark.skipif(sys.implementation.name != "cpython" or sys.version_info < (3, 11),
                        reason="inline instance attributes are CPython 3.11+")
    def test_the_plugins_own_attributes_stay_inline(self):
        plugin = Calls("a")
        plugin.patience, plugin.best = 3, 0.5
        assert not any(isinstance(ref, dict) and "patience" in ref
                       for ref in gc.get_referents(plugin))  # the check below can tell
        Dispatcher().register(plugin)
        assert not any(isinstance(ref, dict) and "patience" in ref
                       for ref in gc.get_referents(plugin))
        dir(plugin)  # what pluggy's own register does
        assert any(isinstance(ref, dict) and "patience" in ref
                   for ref in gc.get_referents(plugin))

    def test_an_implementation_set_on_the_instance_under_its_own_name_is_found(self):
        seen = []

        class Late(Plugin):
            def __init__(self):
                def at_epoch(event):
                    seen.append(event)

                self.at_epoch = hookimpl(specname="on_epoch_end")(at_epoch)

        dispatcher = Dispatcher()
        plugin = Late()
        dispatcher.register(plugin)
        assert owners(dispatcher, dispatcher.calls)["on_epoch_end"] == [plugin]
        dispatcher.calls["on_epoch_end"][0]("event")
        assert seen == ["event"]

    def test_an_instance_may_switch_a_class_implementation_off(self):
        class Quiet(Calls):
            def __init__(self):
                super().__init__("quiet")
                self.on_batch_end = None

        dispatcher = Dispatcher()
        plugin = Quiet()
        dispatcher.register(plugin)
        assert owners(dispatcher, dispatcher.calls)["on_epoch_end"] == [plugin]
        assert dispatcher.calls["on_batch_end"] == ()
