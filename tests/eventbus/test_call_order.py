"""Call order: list order, moved by run_before / run_after and pluggy's tryfirst / trylast."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, Plugin, hookimpl
from eventbus.dispatch import Dispatcher


class Named(Plugin):
    def __init__(self, name: str, before=(), after=()):
        self.name = name
        self.run_before = before
        self.run_after = after

    @hookimpl
    def on_epoch_end(self, event):
        pass


def epoch_end_order(dispatcher: Dispatcher) -> list[str]:
    return [dispatcher.owner[id(fn)].name for fn in dispatcher.calls["on_epoch_end"]]


def build(plugins) -> Dispatcher:
    dispatcher = Dispatcher()
    for plugin in plugins:
        dispatcher.register(plugin)
    return dispatcher


@st.composite
def acyclic_constraints(draw):
    """n plugins and edges (a, b) meaning a runs before b, acyclic by a hidden ranking."""
    n = draw(st.integers(1, 7))
    hidden = draw(st.permutations(range(n)))
    place = {p: i for i, p in enumerate(hidden)}
    pairs = [(a, b) for a in range(n) for b in range(n) if place[a] < place[b]]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True) if pairs else st.just([]))
    styles = draw(st.lists(st.booleans(), min_size=len(edges), max_size=len(edges)))
    return n, list(zip(edges, styles))


@given(acyclic_constraints())
def test_the_order_keeps_every_constraint_and_is_the_earliest_such_order(case):
    n, edges = case
    before = {i: [] for i in range(n)}
    after = {i: [] for i in range(n)}
    for (a, b), on_first in edges:
        if on_first:
            before[a].append(f"p{b}")  # a says: run before b
        else:
            after[b].append(f"p{a}")  # b says: run after a
    order = epoch_end_order(build([Named(f"p{i}", before[i], after[i]) for i in range(n)]))
    place = {name: i for i, name in enumerate(order)}
    assert sorted(order) == sorted(f"p{i}" for i in range(n))
    for (a, b), _ in edges:
        assert place[f"p{a}"] < place[f"p{b}"]
    # Stable: at each step the earliest plugin in list order whose predecessors have all run.
    done: set[int] = set()
    for name in order:
        free = [i for i in range(n) if i not in done
                and all(a in done for (a, b), _ in edges if b == i)]
        assert int(name[1:]) == min(free)
        done.add(int(name[1:]))


def test_without_constraints_the_order_is_the_lists():
    names = ["c", "a", "b"]
    assert epoch_end_order(build([Named(n) for n in names])) == names


def test_a_name_not_on_the_bus_is_no_constraint():
    assert epoch_end_order(build([Named("a", after="Missing"), Named("b")])) == ["a", "b"]


def test_a_constraint_applies_to_every_plugin_of_that_name():
    plugins = [Named("w"), Named("w"), Named("first", before=["w"])]
    assert epoch_end_order(build(plugins)) == ["first", "w", "w"]


def test_a_cycle_is_refused_naming_it_and_leaves_the_bus_as_it_was():
    dispatcher = build([Named("a", after=["b"])])
    with pytest.raises(ConfigError, match=r"cycle: 'a' runs after 'b' runs after 'a'"):
        dispatcher.register(Named("b", after=["a"]))
    assert [p.name for p in dispatcher.plugins] == ["a"]
    assert epoch_end_order(dispatcher) == ["a"]
    dispatcher.register(Named("c"))
    assert epoch_end_order(dispatcher) == ["a", "c"]


def test_a_constraint_that_is_not_names_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="run_after must be a plugin name") as info:
        build([Named("a", after=[3])])
    assert info.value.field == "run_after"


class Early(Plugin):
    name = "early"

    @hookimpl(tryfirst=True)
    def on_epoch_end(self, event):
        pass


class Late(Plugin):
    name = "late"

    @hookimpl(trylast=True)
    def on_epoch_end(self, event):
        pass


def test_pluggys_tryfirst_and_trylast_are_honoured():
    plugins = [Late(), Named("a"), Early(), Named("b")]
    assert epoch_end_order(build(plugins)) == ["early", "a", "b", "late"]


def test_the_bus_calls_plugins_in_that_order():
    seen: list[str] = []

    class Says(Plugin):
        def __init__(self, name, **order):
            self.name = name
            self.run_after = order.get("after", ())

        @hookimpl
        def on_epoch_end(self, event):
            seen.append(self.name)

    bus = Bus([Says("logger", after="decider"), Says("decider")])
    bus.train_begin()
    bus.epoch_begin(0)
    bus.epoch_end(0, {"loss": 1.0})
    bus.train_end()
    assert seen == ["decider", "logger"]
