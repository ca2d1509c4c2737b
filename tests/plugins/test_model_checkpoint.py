"""ModelCheckpoint: when it decides to save, the file names, and the sink it brings along."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, ConfigError, NumpyModel, PluginError, RunWarning, read_log, replay
from eventbus.jsonl import JsonlWriter
from eventbus.records import (
    BatchBegin,
    BatchEnd,
    Decision,
    EpochBegin,
    EpochEnd,
    TrainBegin,
    TrainEnd,
)
from eventbus.replay import effective_records
from eventbus.testing import drive, epochs, run
from plugins import ModelCheckpoint
from sinks.hdf5 import HDF5CheckpointWriter, load_checkpoint

from hypothesis_profiles import FILES, examples
from plugin_strategies import decision_view, metric_sequences, resume_matches

#: drive(), run() and Bus() here have no model: the checkpoint writer says each save wrote no
#: file, which is beside what the tests and classes so marked check (the save decisions).
NO_MODEL = pytest.mark.filterwarnings(
    "ignore:.*save_checkpoint from 'ModelCheckpoint' needs a model adapter:eventbus.RunWarning")

MISSING_MONITOR = "Can save best model only with val_loss available; available: loss"


def saves(values: list[float], filepath: str = "{epoch:02d}-{val_loss:.2f}.h5",
          **params: Any) -> list[str]:
    """The paths ModelCheckpoint decides to save to on a run of val_loss values."""
    monitor = params.get("monitor", "val_loss")
    decisions = drive(ModelCheckpoint(filepath, **params), epochs(**{monitor: values}))
    return [d.path for d in decisions if d.kind == "save_checkpoint"]


def batch_run(losses: list[list[float]]) -> list:
    """Epochs of training batches whose logs hold ``loss``; epoch logs hold the mean."""
    events: list = [TrainBegin()]
    step = 0
    for epoch, epoch_losses in enumerate(losses):
        events.append(EpochBegin(epoch=epoch))
        for batch, loss in enumerate(epoch_losses):
            events.append(BatchBegin(batch=batch, step=step))
            events.append(BatchEnd(batch=batch, step=step, logs={"loss": loss}))
            step += 1
        events.append(EpochEnd(epoch=epoch, logs={"loss": float(np.mean(epoch_losses))}))
    events.append(TrainEnd())
    return events


@NO_MODEL
class TestKerasExamples:
    """Hand-worked on Keras 3.15's ModelCheckpoint."""

    def test_every_epoch_with_epoch_02d_names(self) -> None:
        """save_best_only=False: a file every epoch, {epoch} counted from 1."""
        assert saves([0.5, 0.6, 0.4]) == ["01-0.50.h5", "02-0.60.h5", "03-0.40.h5"]

    def test_save_best_only(self) -> None:
        """Only epochs that improve on the best so far are saved."""
        assert saves([0.5, 0.4, 0.45, 0.3], save_best_only=True) == \
            ["01-0.50.h5", "02-0.40.h5", "04-0.30.h5"]

    def test_initial_value_threshold(self) -> None:
        """With initial_value_threshold=0.42 the first save must beat 0.42."""
        assert saves([0.5, 0.4, 0.45, 0.3], save_best_only=True,
                     initial_value_threshold=0.42) == ["02-0.40.h5", "04-0.30.h5"]

    def test_initial_value_threshold_under_max(self) -> None:
        """Under mode='max' the threshold is a floor to rise above."""
        assert saves([0.7, 0.8, 0.85, 0.9], "{epoch}.h5", monitor="val_accuracy",
                     save_best_only=True, initial_value_threshold=0.8) == ["3.h5", "4.h5"]

    def test_equal_value_is_not_better(self) -> None:
        """Improvement is strict: an equal value does not overwrite the best file."""
        assert saves([0.5, 0.5], "best.h5", save_best_only=True) == ["best.h5"]

    def test_period_every_n_epochs(self) -> None:
        """Keras 2's period=2 saves every second epoch, with a deprecation warning."""
        with pytest.warns(DeprecationWarning, match="period"):
            plugin = ModelCheckpoint("{epoch}.h5", period=2)
        decisions = drive(plugin, epochs(val_loss=[0.5] * 5))
        assert [d.path for d in decisions] == ["2.h5", "4.h5"]
        assert {d.code for d in decisions} == {"period"}

    def test_save_freq_counts_batches_across_epochs(self) -> None:
        """save_freq=2 with 3 batches an epoch: after steps 2, 4 and 6; {batch} is 1-based."""
        decisions = drive(ModelCheckpoint("{epoch}-{batch}.h5", save_freq=2),
                          batch_run([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
        assert [d.path for d in decisions] == ["1-2.h5", "2-1.h5", "2-3.h5"]
        assert [d.evidence["step"] for d in decisions] == [1, 3, 5]

    def test_save_freq_with_save_best_only(self) -> None:
        """save_freq=N and save_best_only together judge the batch's metric (Keras 3 crashes)."""
        decisions = drive(ModelCheckpoint("{epoch}-{batch}-{loss:.1f}.h5", monitor="loss",
                                          save_freq=1, save_best_only=True),
                          batch_run([[0.9, 0.8, 0.85], [0.7, 0.75, 0.6]]))
        assert [d.path for d in decisions] == ["1-1-0.9.h5", "1-2-0.8.h5", "2-1-0.7.h5",
                                               "2-3-0.6.h5"]

    def test_a_first_nan_is_not_saved(self) -> None:
        """NaN never saves, first or not, and the next real value is saved as the first best;
        Keras 3.15 saves the NaN epoch and, as nothing beats NaN, no later one."""
        assert saves([math.nan, 0.5, 0.4, 0.45], "{epoch}.h5", save_best_only=True) == \
            ["2.h5", "3.h5"]

    def test_reason_and_evidence(self) -> None:
        """The decision says what improved, from what to what."""
        decisions = drive(ModelCheckpoint("m.h5", save_best_only=True),
                          epochs(val_loss=[0.5, 0.4]))
        assert decisions[0].reason == ("val_loss = 0.5 at the end of epoch 1: the first value, "
                                       "so the best so far")
        assert decisions[1].reason == "val_loss improved from 0.5 to 0.4 at the end of epoch 2"
        assert decisions[1].code == "improved"
        assert decisions[1].evidence["best"] == 0.5 and decisions[1].evidence["value"] == 0.4
        assert decisions[1].weights_only is False

    def test_verbose(self, capsys: pytest.CaptureFixture[str]) -> None:
        """verbose=1 prints Keras's lines (inf as the first best, where Keras 3.15 says None)."""
        drive(ModelCheckpoint("m.h5", save_best_only=True, verbose=1),
              epochs(val_loss=[0.5, 0.6]))
        assert capsys.readouterr().out == (
            "\nEpoch 1: val_loss improved from inf to 0.50000, saving model to m.h5\n"
            "\nEpoch 2: val_loss did not improve from 0.50000\n")


def staged(*stages: list[float], metric: str = "val_loss") -> list:
    """A staged fit: one train_begin ... train_end per stage, epochs numbered on across stages
    (as Keras's ``fit(initial_epoch=...)``)."""
    events: list = []
    epoch = 0
    for values in stages:
        events.append(TrainBegin())
        for value in values:
            events.append(EpochBegin(epoch=epoch))
            events.append(EpochEnd(epoch=epoch, logs={metric: value}))
            epoch += 1
        events.append(TrainEnd())
    return events


@NO_MODEL
class TestAcrossFits:
    """Keras's ModelCheckpoint has no on_train_begin: what it learnt carries over to the next
    fit() of the same instance."""

    def test_best_is_kept_across_fits(self) -> None:
        """A second fit whose values are all worse saves nothing: best.h5 stays the best."""
        decisions = drive(ModelCheckpoint("best-{epoch}.h5", save_best_only=True),
                          staged([0.3, 0.2], [0.5, 0.4]))
        assert [d.path for d in decisions] == ["best-1.h5", "best-2.h5"]

    def test_an_improvement_in_a_later_fit_is_saved(self) -> None:
        """The later fit saves where it beats the best of every earlier fit."""
        decisions = drive(ModelCheckpoint("{epoch}.h5", save_best_only=True),
                          staged([0.3, 0.2], [0.5, 0.1, 0.15]))
        assert [d.path for d in decisions] == ["1.h5", "2.h5", "4.h5"]
        assert decisions[-1].evidence["best"] == 0.2

    def test_save_freq_counts_batches_across_fits(self) -> None:
        """save_freq=3 over two fits of 4 batches: after the 3rd and the 6th batch overall
        (the 2nd of the second fit); the count does not restart at its train_begin."""
        events = batch_run([[1.0] * 4]) + batch_run([[1.0] * 4])
        decisions = drive(ModelCheckpoint("m.h5", save_freq=3), events)
        assert [(d.epoch, d.evidence["batch"]) for d in decisions] == [(0, 2), (0, 1)]

    def test_missing_monitor_warns_once_per_fit(self) -> None:
        """The missing-monitor warning is once per run: a new fit may warn again."""
        with pytest.warns(RunWarning, match=MISSING_MONITOR) as shown:
            _, records = run([ModelCheckpoint("m.h5", save_best_only=True)],
                             staged([0.5], [0.4], metric="loss"))
        assert [r.kind for r in records if r.category == "outcome"] == ["warning", "warning"]
        assert len(shown) == 2

    @given(st.lists(metric_sequences(max_size=6), min_size=1, max_size=4),
           st.one_of(st.none(), st.floats(-5.0, 5.0)))
    def test_saves_at_new_bests_of_all_fits(self, stages: list[list[float]],
                                            threshold: float | None) -> None:
        """Property: over any staged fit, saves come exactly at the epochs that beat every
        earlier value of every stage (and the threshold)."""
        decisions = drive(ModelCheckpoint("{epoch}.h5", save_best_only=True,
                                          initial_value_threshold=threshold),
                          staged(*stages))
        values = [v for stage in stages for v in stage]
        assert [d.epoch for d in decisions] == reference_saves(values, threshold)

    @given(st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3), min_size=1,
                    max_size=3), st.integers(1, 7))
    def test_save_freq_across_fits(self, fits: list[list[int]], n: int) -> None:
        """Property: saves come after every n-th training batch counted over all fits."""
        events = [e for lengths in fits for e in batch_run([[1.0] * k for k in lengths])]
        decisions = drive(ModelCheckpoint("m.h5", save_freq=n), events)
        total = sum(sum(lengths) for lengths in fits)
        assert len(decisions) == total // n

    # A crash between two fits resumes a finished fit, which the bus says.
    @pytest.mark.filterwarnings("ignore:bus. resume. the run in .* had finished")
    @examples(FILES)  # logs written, replayed, resumed
    @given(st.lists(metric_sequences(min_size=1, max_size=4), min_size=2, max_size=3),
           st.data())
    def test_replay_and_resume_of_a_staged_fit(self, stages: list[list[float]],
                                               data: st.DataObject) -> None:
        """Replay of a staged fit's log, and a resume after a crash anywhere in it, give the
        decisions of the uninterrupted run."""
        events = staged(*stages)

        def make() -> list[object]:
            return [ModelCheckpoint("{epoch}.h5", save_best_only=True)]

        cut = data.draw(st.integers(0, len(events) - 1), label="events before the crash")
        with tempfile.TemporaryDirectory() as directory:
            full = f"{directory}/full.jsonl"
            with Bus(make(), log=full) as bus:
                for event in events:
                    bus.publish(event)
            assert replay(full, verify=True).ok
            expected = [decision_view(d) for d in replay(full).decisions]

            path = f"{directory}/resumed.jsonl"
            writer = JsonlWriter(path)
            bus = Bus(make(), log=writer)
            for event in events[:cut]:
                bus.publish(event)
            writer.close()  # the crash
            with Bus(make(), log=path, resume=True) as again:
                start = again.initial_epoch
                # The loop goes on: the fit that was running from initial_epoch, then the
                # fits after it (their train_begin and train_end included).
                for i, event in enumerate(events):
                    epoch = getattr(event, "epoch", None)
                    if (epoch is None and i >= cut) or (epoch is not None and epoch >= start):
                        again.publish(event)
            resumed = [decision_view(d) for d in effective_records(read_log(path))
                       if isinstance(d, Decision)]
        assert resumed == expected


class TestFilepath:
    @pytest.mark.parametrize("filepath", ["{0}.h5", "{}.h5", "{a.b}.h5", "{a[0]}.h5",
                                          "{val_loss:.{p}f}.h5", "{epoch.h5", "model.pt",
                                          "weights"])
    def test_bad_templates_are_config_errors(self, filepath: str) -> None:
        """Positional fields, attribute or index access, nested specs, a broken template or
        a name that is not .keras/.h5/.hdf5 are refused when the plugin is built."""
        with pytest.raises(ConfigError) as info:
            ModelCheckpoint(filepath)
        assert (info.value.plugin, info.value.field) == ("ModelCheckpoint", "filepath")

    def test_a_keras_file_without_a_keras_model_is_a_recorded_failure(self, tmp_path) -> None:
        """A .keras name is Keras's format: with a NumPy model the write fails, recorded as
        sink_failed naming the adapter; the run goes on."""
        from eventbus import NumpyModel, SinkFailureWarning

        path = tmp_path / "m.keras"
        with pytest.warns(SinkFailureWarning, match="a .keras file is Keras's format; this "
                                                    "model adapter \\(NumpyModel\\)"), \
                Bus([ModelCheckpoint(str(path))], model=NumpyModel({"w": [0.0]})) as bus:
            bus.train_begin({"epochs": 1})
            bus.epoch_begin(0)
            bus.epoch_end(0, {"val_loss": 1.0})
            bus.train_end()
        assert not path.exists()
        assert [f.kind for f in bus.failures] == ["sink_failed"]

    def test_missing_field_names_it_and_lists_the_keys(self) -> None:
        """A field the logs do not have stops the run with the field and the keys present."""
        with pytest.raises(PluginError, match=r"needs \{val_acc\}.*available: epoch, "
                                              r"val_loss") as info:
            drive(ModelCheckpoint("{val_acc:.2f}.h5"), epochs(val_loss=[0.5]),
                  learning_rate=0.1)
        assert isinstance(info.value.__cause__, ConfigError)

    def test_bad_format_spec_for_the_value(self) -> None:
        """{val_loss:d} cannot format a float: a ConfigError, not a bare ValueError."""
        with pytest.raises(PluginError) as info:
            drive(ModelCheckpoint("{val_loss:d}.h5"), epochs(val_loss=[0.5]))
        assert isinstance(info.value.__cause__, ConfigError)


class TestTemplateBounds:
    """A filepath template cannot make formatting allocate without bound: a hostile log (or a
    slip) with {epoch:>60000000} would allocate 60 MB at every save."""

    @pytest.mark.parametrize("filepath", ["x-{epoch:>60000000}.h5", "{epoch:065d}.h5",
                                          "{val_loss:.100f}.h5", "{epoch:0>99999}.h5",
                                          "{val_loss:_>1000,.2f}.h5"])
    def test_wide_format_specs_are_refused_when_built(self, filepath: str) -> None:
        """A width or precision over 64 is a ConfigError naming the plugin, field and spec."""
        with pytest.raises(ConfigError) as info:
            ModelCheckpoint(filepath)
        assert (info.value.plugin, info.value.field) == ("ModelCheckpoint", "filepath")
        spec = filepath[filepath.index(":") + 1:filepath.index("}")]
        assert repr(spec) in str(info.value) and "64" in str(info.value)

    @pytest.mark.parametrize("filepath", ["{epoch:>64}.h5", "{epoch:064d}.h5",
                                          "{val_loss:9>8.64f}.h5", "{epoch:02d}-{val_loss:.4e}.h5"])
    @NO_MODEL
    def test_specs_within_the_bound_are_accepted(self, filepath: str) -> None:
        """Widths and precisions up to 64, a digit as the fill character included."""
        assert len(saves([0.5], filepath)) == 1

    def test_a_template_longer_than_a_path_is_refused(self) -> None:
        """A filepath over 4096 characters is refused, without echoing all of it."""
        with pytest.raises(ConfigError) as info:
            ModelCheckpoint("a" * 5000 + ".h5")
        assert info.value.field == "filepath" and "4096" in str(info.value)
        assert len(str(info.value)) < 300

    def test_the_formatted_path_is_capped(self) -> None:
        """Bounded specs still add up: 80 fields of 62 characters (4960) stop the save with a
        ConfigError at format time, before any file is named."""
        plugin = ModelCheckpoint("{val_loss:.60f}" * 80 + ".h5")
        with pytest.raises(PluginError) as info:
            drive(plugin, epochs(val_loss=[0.5]))
        cause = info.value.__cause__
        assert isinstance(cause, ConfigError) and cause.field == "filepath"
        assert "4096" in str(cause) and "4963 characters" in str(cause)

    def test_a_huge_float_is_capped_too(self) -> None:
        """{val_loss:.2f} of 1e300 is 303 characters: a few of them pass the cap."""
        with pytest.raises(PluginError, match="at most 4096"):
            drive(ModelCheckpoint("{val_loss:.64f}" * 12 + ".h5"), epochs(val_loss=[1e300]))

    @NO_MODEL
    def test_a_hostile_log_is_refused_at_replay(self, tmp_path: Path) -> None:
        """A log whose header was edited to {epoch:>60000000}: replay refuses to rebuild the
        plugin (naming the spec) instead of allocating 60 MB per recorded save."""
        import orjson

        from eventbus import ReplayError

        path = tmp_path / "run.jsonl"
        with Bus([ModelCheckpoint("m-{epoch}.h5")], log=path) as bus:
            for event in epochs(val_loss=[0.5, 0.4]):
                bus.publish(event)
        lines = path.read_bytes().splitlines()
        header = orjson.loads(lines[0])
        header["plugins"][0]["params"]["filepath"] = "x-{epoch:>60000000}.h5"
        path.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:]]) + b"\n")
        with pytest.raises(ReplayError, match=r"'>60000000'") as info:
            replay(path)
        assert isinstance(info.value.__cause__, ConfigError)


class TestConfig:
    @pytest.mark.parametrize(("params", "field"), [
        ({"save_freq": "batch"}, "save_freq"), ({"save_freq": 0}, "save_freq"),
        ({"save_freq": True}, "save_freq"), ({"mode": "lowest"}, "mode"),
        ({"save_best_only": True, "initial_value_threshold": "x"}, "initial_value_threshold"),
        ({"save_best_only": "False"}, "save_best_only"),
        ({"save_weights_only": 1}, "save_weights_only"),
        ({"filepath": 5}, "filepath"), ({"filepath": None}, "filepath")])
    def test_bad_parameters_name_the_field(self, params: dict[str, Any], field: str) -> None:
        """Each bad parameter is a ConfigError naming the field."""
        params = {"filepath": "m.h5", **params}
        with pytest.raises(ConfigError) as info:
            ModelCheckpoint(**params)
        assert (info.value.plugin, info.value.field) == ("ModelCheckpoint", field)

    @NO_MODEL
    def test_direction_is_needed_only_to_compare(self) -> None:
        """An unplaceable monitor is fine when nothing is compared (Keras 3 fails anyway)."""
        assert saves([1.0], "m.h5", monitor="val_thing") == ["m.h5"]

    def test_period_with_save_freq_is_an_error(self) -> None:
        """period counts epochs, save_freq batches: not both."""
        with pytest.warns(DeprecationWarning), pytest.raises(ConfigError):
            ModelCheckpoint("m.h5", period=2, save_freq=10)


class TestMissingMonitor:
    def test_warns_once_and_does_not_save(self) -> None:
        """save_best_only without the monitor: a warning listing the keys, no save (a file
        kept as the best must be the best)."""
        with pytest.warns(RunWarning, match=MISSING_MONITOR) as shown:
            _, records = run([ModelCheckpoint("m.h5", save_best_only=True)],
                             epochs(loss=[0.5, 0.4]))
        assert len(shown) == 1
        out = [r for r in records if r.category in ("decision", "outcome")]
        assert [r.kind for r in out] == ["warning"]
        assert out[0].details == {"monitor": "val_loss", "available": ["loss"]}


class TestWithTheSink:
    def _train(self, plugins: list[object], directory: Path, values: list[float]) -> list:
        model = NumpyModel({"w": np.zeros(2)}, config={"units": 2})
        cwd = os.getcwd()
        os.chdir(directory)
        try:
            _, records = run(plugins, epochs(val_loss=values), model=model)
        finally:
            os.chdir(cwd)
        return records

    def test_adds_its_own_writer(self, tmp_path: Path) -> None:
        """ModelCheckpoint alone on a bus with a model writes HDF5 files."""
        records = self._train([ModelCheckpoint("ck/{epoch:02d}.h5", save_best_only=True)],
                              tmp_path, [0.5, 0.4, 0.6])
        saved = [r.path for r in records if r.kind == "checkpoint_saved"]
        assert saved == ["ck/01.h5", "ck/02.h5"]
        assert sorted(os.listdir(tmp_path / "ck")) == ["01.h5", "02.h5"]
        checkpoint = load_checkpoint(tmp_path / "ck" / "02.h5")
        assert checkpoint.metadata["epoch"] == 1 and checkpoint.metadata["value"] == 0.4
        assert checkpoint.model_config["units"] == 2

    def test_a_given_writer_is_used_once(self, tmp_path: Path) -> None:
        """With a writer on the bus (before or after), each save is written once."""
        for plugins in ([HDF5CheckpointWriter(), ModelCheckpoint("a.h5")],
                        [ModelCheckpoint("b.h5"), HDF5CheckpointWriter()],
                        [ModelCheckpoint("c.h5"), ModelCheckpoint("d.h5")]):
            records = self._train(plugins, tmp_path, [0.5, 0.4])
            decisions = [r for r in records if r.kind == "save_checkpoint"]
            saved = [r for r in records if r.kind == "checkpoint_saved"]
            assert [r.cause_seq for r in saved] == [d.seq for d in decisions]

    def test_header_lists_the_writer_and_replay_skips_it(self, tmp_path: Path) -> None:
        """The added writer is in the header (a sink) and replay rebuilds only the plugin."""
        path = tmp_path / "run.jsonl"
        model = NumpyModel({"w": np.zeros(2)})
        with Bus([ModelCheckpoint(str(tmp_path / "m.h5"), save_best_only=True)], model=model,
                 log=path) as bus:
            for event in epochs(val_loss=[0.5, 0.4, 0.6, 0.3]):
                bus.publish(event)
        result = replay(path, verify=True)
        assert result.ok and len(result.decisions) == 3
        assert [(s.name, s.side_effects) for s in result.header.plugins] == \
            [("ModelCheckpoint", False), ("HDF5CheckpointWriter", True)]


def reference_saves(values: list[float], threshold: float | None) -> list[int]:
    best = threshold
    out = []
    for epoch, value in enumerate(values):
        if not math.isnan(value) and (best is None or value < best):
            best = value
            out.append(epoch)
    return out


@NO_MODEL
class TestProperties:
    @given(metric_sequences(), st.one_of(st.none(), st.floats(-5.0, 5.0)))
    def test_save_best_only_saves_exactly_at_new_bests(self, values: list[float],
                                                       threshold: float | None) -> None:
        """Saves happen at exactly the epochs that beat every earlier value and the
        threshold."""
        decisions = drive(ModelCheckpoint("{epoch}.h5", save_best_only=True,
                                          initial_value_threshold=threshold),
                          epochs(val_loss=values))
        assert [d.epoch for d in decisions] == reference_saves(values, threshold)
        assert [d.path for d in decisions] == [f"{e + 1}.h5" for e in
                                               reference_saves(values, threshold)]

    @given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.integers(1, 7))
    def test_save_freq_saves_every_n_batches(self, lengths: list[int], n: int) -> None:
        """Across epochs of any length, saves come after every n-th training batch."""
        decisions = drive(ModelCheckpoint("m.h5", save_freq=n),
                          batch_run([[1.0] * k for k in lengths]))
        total = sum(lengths)
        assert [d.evidence["step"] for d in decisions] == list(range(n - 1, total, n))

    @examples(FILES)  # logs written, replayed, resumed
    @given(metric_sequences(max_size=10), st.integers(0, 30))
    def test_replay_and_resume_give_the_same_decisions(self, values: list[float],
                                                       cut: int) -> None:
        """Replay from the log, or resume after a crash anywhere: the same saves."""
        def make() -> list[object]:
            return [ModelCheckpoint("{epoch}.h5", save_best_only=True)]

        with tempfile.TemporaryDirectory() as directory:
            path = f"{directory}/run.jsonl"
            with Bus(make(), log=path) as bus:
                for event in epochs(val_loss=values):
                    bus.publish(event)
            assert replay(path, verify=True).ok
        full, resumed = resume_matches(make, values, cut)
        assert resumed == full
