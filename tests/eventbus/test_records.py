"""Records: typed, immutable, validated; metric values become floats or are refused clearly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from eventbus import MetricValueError
from eventbus import records as r
from eventbus.metrics import coerce_logs

from record_strategies import any_record, same


def _floats(value):
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _floats(v)
    elif isinstance(value, list):
        for v in value:
            yield from _floats(v)


class TestRecords:
    def test_every_kind_is_registered_once(self):
        """Each record kind maps to exactly one model, and the groups partition the kinds."""
        groups = r.OBSERVATION_KINDS + r.DECISION_KINDS + r.OUTCOME_KINDS + ("header",)
        assert sorted(groups) == sorted(r.KINDS)
        assert set(r.OBSERVATION_KINDS) >= {
            "train_begin", "train_end", "epoch_begin", "epoch_end", "batch_begin", "batch_end",
            "test_begin", "test_end", "test_batch_begin", "test_batch_end", "predict_begin",
            "predict_end", "predict_batch_begin", "predict_batch_end"}
        assert set(r.DECISION_KINDS) >= {"stop_training", "set_learning_rate", "save_checkpoint",
                                         "restore_weights"}

    def test_records_are_immutable(self):
        """A record cannot be changed after it is made."""
        event = r.EpochEnd(epoch=1, logs={"loss": 0.5})
        with pytest.raises(ValidationError):
            event.epoch = 2  # type: ignore[misc]

    def test_unknown_fields_are_refused(self):
        """A typo in a field name is an error, not a silently dropped value."""
        with pytest.raises(ValidationError, match="epochh"):
            r.EpochEnd(epoch=1, epochh=2)

    def test_decision_carries_reason_and_evidence(self):
        """A decision has source, reason, evidence, cause and kind-specific fields."""
        d = r.SetLearningRate(source="ReduceLROnPlateau", reason="plateau", value=0.01,
                              previous=0.1, evidence={"wait": 3}, cause_seq=7)
        assert (d.kind, d.value, d.previous, d.evidence["wait"], d.cause_seq) == \
            ("set_learning_rate", 0.01, 0.1, 3, 7)

    def test_numpy_evidence_becomes_plain_data(self):
        """numpy numbers in evidence are stored as Python numbers: every log format takes them."""
        d = r.StopTraining(reason="x", evidence={"best": np.float32(0.25), "wait": np.int64(3),
                                                 "hist": np.array([1.0, 2.0])})
        assert d.evidence == {"best": 0.25, "wait": 3, "hist": [1.0, 2.0]}
        assert type(d.evidence["wait"]) is int

    @given(any_record())
    def test_validation_round_trip(self, record):
        """record -> dict -> parse_record gives the same record (NaN and inf included)."""
        assert same(r.parse_record(record.model_dump()), record)

    @given(any_record())
    def test_nonfinite_encoding_round_trip(self, record):
        """encode_nonfinite then decode_nonfinite restores every float field."""
        data = record.model_dump()
        encoded = r.encode_nonfinite(data)
        assert all(math.isfinite(x) for x in _floats(encoded))
        assert same(r.parse_record(r.decode_nonfinite(encoded)), record)


class TestMetricValues:
    @pytest.mark.parametrize("value, expected", [
        (1, 1.0), (0.5, 0.5), (np.float32(0.25), 0.25), (np.float64(2.5), 2.5), (np.int64(3), 3.0),
        (np.array(1.5), 1.5), (float("nan"), math.nan), (float("inf"), math.inf),
        (-math.inf, -math.inf)])
    def test_accepted_values_become_floats(self, value, expected):
        """Python numbers, numpy scalars and 0-d arrays become plain floats."""
        out = coerce_logs({"loss": value}, "batch_end")["loss"]
        assert type(out) is float
        assert same(out, expected)

    def test_tensor_like_uses_item(self):
        """Anything with .item() (a 0-d tensor) is read through it."""
        class Scalar:
            ndim = 0

            def item(self):
                return 0.125

        assert coerce_logs({"loss": Scalar()}, "batch_end") == {"loss": 0.125}

    def test_float_protocol_is_used(self):
        """Anything with __float__ and no .item() is converted with float()."""
        class Number:
            def __float__(self):
                return 0.75

        assert coerce_logs({"acc": Number()}, "epoch_end") == {"acc": 0.75}

    @pytest.mark.parametrize("value, type_name", [
        ("0.5", "str"), (None, "NoneType"), (True, "bool"), ([[1.0]], "list"), ({"a": 1}, "dict"),
        (object(), "object")])
    def test_bad_values_name_key_event_and_type(self, value, type_name):
        """A value that is not a real number raises, naming the key, the event kind and the type."""
        with pytest.raises(MetricValueError) as info:
            coerce_logs({"val_loss": value}, "epoch_end")
        message = str(info.value)
        assert "'val_loss'" in message and "epoch_end" in message and type_name in message
        assert info.value.event == "epoch_end" and info.value.field == "logs.val_loss"

    def test_arrays_of_two_dimensions_are_refused_with_their_shape(self):
        """A metric that is a 2-D array (not reduced) is refused with its shape; 1-D arrays
        are vector metrics (tests/eventbus/test_vector_metrics.py)."""
        with pytest.raises(MetricValueError, match=r"shape \(3, 2\)"):
            coerce_logs({"loss": np.ones((3, 2))}, "batch_end")

    def test_error_names_the_plugin_when_a_plugin_supplied_the_value(self):
        """Values contributed by a plugin are blamed on that plugin."""
        with pytest.raises(MetricValueError, match="BaseLogger") as info:
            coerce_logs({"loss": "x"}, "epoch_end", plugin="BaseLogger")
        assert info.value.plugin == "BaseLogger"

    def test_caller_dict_is_copied(self):
        """The bus never keeps the loop's dict: later changes to it do not reach the record."""
        logs = {"loss": 1.0}
        out = coerce_logs(logs, "batch_end")
        logs["loss"] = 2.0
        assert out == {"loss": 1.0}

    def test_non_string_keys_are_refused(self):
        """Metric names must be strings."""
        with pytest.raises(MetricValueError.__mro__[1], match="keys must be str"):
            coerce_logs({1: 0.5}, "batch_end")

    def test_record_validation_uses_the_same_rules(self):
        """Building a record by hand applies the same metric rules, naming the event kind."""
        with pytest.raises(ValidationError, match="epoch_end"):
            r.EpochEnd(epoch=0, logs={"loss": "bad"})
        assert r.EpochEnd(epoch=0, logs={"loss": np.float32(0.5)}).logs == {"loss": 0.5}


nested = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=10)


class TestSameValues:
    @given(nested)
    def test_everything_is_the_same_as_a_copy_of_itself_nan_included(self, value):
        """What plain equality gets wrong whenever a NaN is inside."""
        import copy

        assert r.same_values(value, copy.deepcopy(value))

    @given(nested, st.floats(-1e6, 1e6))
    def test_a_changed_leaf_is_not_the_same(self, value, number):
        """Beside anything, a number against another, or against NaN, is a difference."""
        assert not r.same_values([value, number], [value, number + 1.0])
        assert not r.same_values({"a": value, "b": number}, {"a": value, "b": math.nan})
        assert not r.same_values([value], [value, value])

    def test_records_compare_by_kind_and_fields(self):
        """A trusted record equals its validated twin; another kind with equal fields does not."""
        a = r.BatchEnd(run_id="x", seq=1, epoch=0, batch=0, step=0, logs={"loss": math.nan})
        b = r.trusted(r.BatchEnd, {**a.model_dump(), "logs": {"loss": float("nan")}})
        assert r.same_values(a, b) and a != b  # for == two NaN objects differ
        c = r.BatchBegin(run_id="x", seq=1, epoch=0, batch=0, step=0, logs={"loss": math.nan})
        assert not r.same_values(a, c)


class TestTrustedRecords:
    """Records the bus builds without validation behave as their kind's model."""

    def test_trusted_records_are_their_kind(self):
        """isinstance, equality, repr and dumping are the model's."""
        data = {"v": 1, "run_id": "r", "seq": 3, "kind": "batch_end", "time": 1.0,
                "logs": {"loss": 0.5}, "epoch": 0, "batch": 2, "step": 7}
        fast = r.trusted(r.BatchEnd, dict(data))
        slow = r.parse_record(data)
        assert isinstance(fast, r.BatchEnd) and isinstance(fast, r.Observation)
        assert fast == slow and slow == fast
        assert repr(fast) == repr(slow)
        assert fast.model_dump() == data and fast.model_dump_json() == slow.model_dump_json()
        assert fast.model_fields_set == slow.model_fields_set

    def test_trusted_records_are_immutable_and_copy_to_plain_models(self):
        """They refuse assignment; copies are ordinary validated-model instances."""
        fast = r.trusted(r.EpochEnd, {"v": 1, "run_id": "r", "seq": 1, "kind": "epoch_end",
                                      "time": 0.0, "epoch": 4, "logs": {}})
        with pytest.raises(ValidationError):
            fast.epoch = 5  # type: ignore[misc]
        copy = fast.model_copy(update={"epoch": 5})
        assert type(copy) is r.EpochEnd and copy.epoch == 5 and fast.epoch == 4
