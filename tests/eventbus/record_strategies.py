"""Hypothesis strategies for records, shared by the core's tests."""

from __future__ import annotations

import math

from hypothesis import strategies as st

from eventbus import records as r
from eventbus.testing import same  # noqa: F401 - the tests import it from here

metric_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
#: Any float, NaN and the infinities included: all are legal metric values.
metric_values = st.floats(allow_nan=True, allow_infinity=True)
#: What a set_learning_rate decision may carry: a finite rate, 0 or more.
learning_rates = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
logs = st.dictionaries(metric_names, metric_values, max_size=5)
#: A vector metric as records hold it: a list of floats, never of one (that is its float).
vector_values = st.lists(metric_values, max_size=5).filter(lambda v: len(v) != 1)
#: Metrics with vectors among the floats (Keras's F1Score: one value per class).
vector_logs = st.dictionaries(metric_names, metric_values | vector_values, max_size=5)
indices = st.integers(min_value=0, max_value=10**6)
#: Text in evidence, the words that spell non-finite floats (and their escapes) included: a
#: string reads back a string.
text = st.text(max_size=10) | st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "~NaN", "~~Infinity", "~-Infinity", "~", "~x", "NaN~"])
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | metric_values | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8)
evidence = st.dictionaries(st.text(min_size=1, max_size=8), plain, max_size=4)


def _envelope(draw: st.DrawFn, seq: int) -> dict:
    return {"run_id": draw(st.text("0123456789abcdef", min_size=1, max_size=16)), "seq": seq,
            "time": draw(st.floats(0, 4e9))}


@st.composite
def observations(draw: st.DrawFn, seq: int | None = None,
                 metrics: st.SearchStrategy[dict] = logs) -> r.Observation:
    cls = draw(st.sampled_from([r.KINDS[k] for k in r.OBSERVATION_KINDS]))
    fields = _envelope(draw, seq if seq is not None else draw(indices))
    fields["logs"] = draw(metrics)
    for name in ("epoch", "batch", "step"):
        if name in cls.model_fields:
            fields[name] = draw(indices)
    if cls is r.TrainBegin:
        fields["params"] = draw(st.dictionaries(st.text(min_size=1, max_size=6), plain,
                                                max_size=3))
    return cls(**fields)


@st.composite
def decisions(draw: st.DrawFn, seq: int | None = None) -> r.Decision:
    cls = draw(st.sampled_from([r.KINDS[k] for k in r.DECISION_KINDS]))
    fields = _envelope(draw, seq if seq is not None else draw(indices))
    fields.update(source=draw(st.text(max_size=12)), reason=draw(st.text(max_size=40)),
                  evidence=draw(evidence), cause_seq=draw(st.none() | indices),
                  epoch=draw(st.none() | indices), code=draw(st.none() | st.text(max_size=8)))
    if cls is r.SetLearningRate:
        fields.update(value=draw(learning_rates), previous=draw(st.none() | metric_values))
    elif cls is r.SaveCheckpoint:
        fields.update(path=draw(st.text(min_size=1, max_size=20)), weights_only=draw(st.booleans()))
    elif cls is r.DeleteCheckpoint:
        fields["path"] = draw(st.text(min_size=1, max_size=20))
    elif cls in (r.SnapshotWeights, r.RestoreWeights):
        fields["tag"] = draw(st.text(min_size=1, max_size=10))
    return cls(**fields)


@st.composite
def outcomes(draw: st.DrawFn, seq: int | None = None) -> r.Outcome:
    fields = _envelope(draw, seq if seq is not None else draw(indices))
    fields.update(source=draw(st.text(max_size=10)), cause_seq=draw(st.none() | indices))
    choice = draw(st.sampled_from(["saved", "deleted", "warning", "plugin", "sink"]))
    if choice == "deleted":
        return r.CheckpointDeleted(**fields, path="w.h5",
                                   sha256=draw(st.text("0123456789abcdef", min_size=64,
                                                       max_size=64)))
    if choice == "saved":
        return r.CheckpointSaved(**fields, path="w.h5", size=draw(indices),
                                 sha256=draw(st.text("0123456789abcdef", min_size=64,
                                                     max_size=64)))
    if choice == "warning":
        return r.Warning(**fields, message=draw(st.text(max_size=30)), details=draw(evidence))
    if choice == "plugin":
        return r.PluginFailed(**fields, plugin="P", event="epoch_end", error="ValueError",
                              message=draw(st.text(max_size=20)))
    return r.SinkFailed(**fields, sink="S", error="OSError", message=draw(st.text(max_size=20)))


def any_record(seq: int | None = None,
               metrics: st.SearchStrategy[dict] = logs) -> st.SearchStrategy[r.Record]:
    """Any record; observations' logs drawn from ``metrics``."""
    return st.one_of(observations(seq, metrics), decisions(seq), outcomes(seq))


# --- the monitor rule (eventbus.monitor) ---------------------------------------------------

#: Words that say nothing about a metric's direction, to pad names with.
_NEUTRAL_WORDS = ("sparse", "categorical", "mean", "output", "head", "weighted", "x2", "top")


@st.composite
def placed_metric_names(draw: st.DrawFn, mode: str | None = None) -> str:
    """A metric name the monitor rule places (as ``mode`` when given): one word of the kind
    among neutral ones, any case, maybe ``val_`` in front."""
    from eventbus.monitor import MAX_WORDS, MIN_WORDS

    kind = mode or draw(st.sampled_from(["min", "max"]))
    # A list word with "_" in it (mean_io_u's io_u) is two words of a name: left out here, as
    # neutral words between its two would break it.
    words = sorted(w for w in (MIN_WORDS if kind == "min" else MAX_WORDS) if "_" not in w)
    parts = draw(st.lists(st.sampled_from(_NEUTRAL_WORDS), max_size=2))
    parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(words)))
    name = draw(st.sampled_from(["_", "-", "."])).join(parts)
    name = draw(st.sampled_from([name, name.upper(), name.capitalize()]))
    return draw(st.sampled_from(["", "val_"])) + name


#: Epoch values of one metric with exact repeats (ties), NaN and the infinities.
metric_runs = st.lists(
    st.one_of(st.sampled_from([0.0, -0.0, 0.5, 0.5, 1.0, 2.0, math.nan, math.inf, -math.inf]),
              st.floats(min_value=-10.0, max_value=10.0)),
    max_size=20)
