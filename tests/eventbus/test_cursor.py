"""eventbus.cursor: the run's position as one state machine, and what a loop drops after a
stop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, EventError, replay
from eventbus import records as r
from eventbus.cursor import Cursor, after_stop
from eventbus.records import parse_record
from eventbus.testing import RecordingWriter


class TestFit:
    def test_a_fit_begins_and_ends(self):
        """train_begin starts a fit (published), train_end is published, trained ends it."""
        cursor = Cursor()
        assert cursor.train_begin() is True and cursor.in_train
        assert cursor.train_end() is True and cursor.in_train
        cursor.trained()
        assert not cursor.in_train

    def test_train_begin_forgets_the_last_end(self):
        """A new fit starts with no epoch ended."""
        cursor = Cursor()
        cursor.epoch_ended(4)
        cursor.train_begin()
        assert cursor.ended is None
        cursor.check_epoch_end(4)  # a new fit may end epoch 4 again

    def test_resumed_train_begin_is_skipped_once(self):
        """After resume_at(began=True) the loop's train_begin is not published, once."""
        cursor = Cursor()
        cursor.resume_at(2, began=True, ended=False)
        assert cursor.in_train and cursor.resumed
        assert (cursor.epoch, cursor.ended, cursor.initial_epoch) == (2, 2, 3)
        assert cursor.train_begin() is False
        assert cursor.in_train and cursor.epoch == 2
        assert cursor.train_begin() is True

    def test_a_skipped_train_begin_keeps_the_restored_end(self):
        """The resumed run's train_begin, not published, leaves the last finished epoch
        ended: a second end of it is still refused."""
        cursor = Cursor()
        cursor.resume_at(2, began=True, ended=False)
        cursor.train_begin()
        with pytest.raises(EventError):
            cursor.check_epoch_end(2)

    def test_a_run_that_never_began_publishes_its_train_begin(self):
        """After resume_at(began=False) train_begin is published."""
        cursor = Cursor()
        cursor.resume_at(None, began=False, ended=False)
        assert cursor.initial_epoch == 0 and not cursor.in_train
        assert cursor.train_begin() is True

    def test_a_finished_runs_train_end_is_skipped_once(self):
        """After resume_at(ended=True) the loop's train_end is not published, once."""
        cursor = Cursor()
        cursor.resume_at(4, began=True, ended=True)
        assert not cursor.in_train
        assert cursor.train_begin() is False
        assert cursor.train_end() is False and not cursor.in_train
        assert cursor.train_end() is True

    def test_an_epoch_since_makes_train_end_new(self):
        """A finished run resumed that trains another epoch publishes its train_end."""
        cursor = Cursor()
        cursor.resume_at(4, began=True, ended=True)
        cursor.train_begin()
        cursor.epoch_begin(5)
        assert cursor.train_end() is True


class TestEpochs:
    def test_a_second_end_of_one_epoch_is_refused(self):
        """check_epoch_end refuses the epoch that just ended, naming event and field."""
        cursor = Cursor()
        cursor.epoch_begin(3)
        cursor.check_epoch_end(3)
        cursor.epoch_ended(3)
        with pytest.raises(EventError, match="epoch 3 has already ended") as info:
            cursor.check_epoch_end(3)
        assert (info.value.event, info.value.field) == ("epoch_end", "epoch")
        cursor.check_epoch_end(4)
        cursor.epoch_begin(3)  # the next begin allows it again
        cursor.check_epoch_end(3)

    def test_the_bus_records_one_end_per_epoch(self):
        """On a bus a repeated epoch_end raises and records nothing more."""
        writer = RecordingWriter()
        bus = Bus(log=writer)
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
        with pytest.raises(EventError):
            bus.epoch_end(0, {"loss": 1.0})
        assert writer.kinds().count("epoch_end") == 1

    def test_evaluation_inside_and_outside_a_fit(self):
        """An evaluation belongs to the fit's epoch, and to none outside a fit."""
        cursor = Cursor()
        cursor.epoch_begin(2)
        assert cursor.eval_epoch() is None
        cursor.train_begin()
        cursor.epoch_begin(3)
        assert cursor.eval_epoch() == 3
        cursor.train_end()
        cursor.trained()
        assert cursor.eval_epoch() is None

    def test_the_bus_stamps_evaluation_with_the_fits_epoch(self):
        """test events on a bus carry the fit's epoch inside it and None after it."""
        writer = RecordingWriter()
        bus = Bus(log=writer)
        bus.train_begin()
        bus.epoch_begin(1)
        bus.test_begin()
        bus.test_batch_end(0, {"loss": 1.0})
        bus.train_end()
        bus.test_end()
        epochs = {(rec["kind"], rec["epoch"]) for rec in writer.records
                  if rec["kind"].startswith("test")}
        assert epochs == {("test_begin", 1), ("test_batch_end", 1), ("test_end", None)}


#: One call of a training loop on a bus.
loop_calls = st.one_of(
    st.tuples(st.just("train_begin")), st.tuples(st.just("train_end")),
    st.tuples(st.just("epoch_begin"), st.integers(0, 4)),
    st.tuples(st.just("epoch_end"), st.integers(0, 4)),
    st.tuples(st.just("batch_begin"), st.integers(0, 3)),
    st.tuples(st.just("batch_end"), st.integers(0, 3)),
    st.tuples(st.just("test_begin")), st.tuples(st.just("test_end")),
    st.tuples(st.just("test_batch_end"), st.integers(0, 3)),
    st.tuples(st.just("predict_begin")), st.tuples(st.just("predict_batch_end"),
                                                   st.integers(0, 3)),
    st.tuples(st.just("publish_batch_end"), st.integers(0, 3), st.integers(0, 50),
              st.none() | st.integers(0, 4)),
)


def position(cursor: Cursor) -> tuple:
    return cursor.epoch, cursor.step, cursor.in_train, cursor.ended


class TestAResumedFitGoesOnFromItsPoint:
    """After a resume, an epoch the log has finished is refused until that fit ends or another
    begins: a loop that starts at 0 again (or a framework resumed from an older checkpoint)
    put every finished epoch in the log and the CSV twice, and plugins counted them twice."""

    @given(initial=st.integers(1, 6), epoch=st.integers(0, 8), began=st.booleans(),
           then=st.sampled_from(["nothing", "trained", "a new fit"]))
    def test_only_epochs_from_the_initial_one(self, initial, epoch, began, then):
        cursor = Cursor()
        cursor.resume_at(initial - 1, began=began, ended=False)
        cursor.train_begin()  # the loop's own, repeated: skipped when the log has it
        if then == "trained":
            cursor.trained()
        elif then == "a new fit":
            cursor.train_begin()
        # The loop's train_begin is the resumed fit's when the log has the fit's begin; else
        # it begins a new fit, as does any later one.
        refused = began and then == "nothing"
        if refused and epoch < initial:
            with pytest.raises(EventError, match=f"goes on from epoch {initial}"):
                cursor.check_epoch_begin(epoch)
        else:
            cursor.check_epoch_begin(epoch)

    def test_the_bus_refuses_it_and_records_nothing(self, tmp_path):
        path = tmp_path / "run.jsonl"
        with Bus([], log=path) as bus:
            bus.train_begin({"epochs": 4})
            for epoch in range(2):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
        before = path.read_bytes()
        with Bus([], log=path, resume=True) as bus:
            bus.train_begin({"epochs": 4})
            with pytest.raises(EventError, match="start|begin the loop there"):
                bus.epoch_begin(0)
            bus.epoch_begin(bus.initial_epoch)
            bus.epoch_end(bus.initial_epoch, {"loss": 0.5})
        from eventbus import read_log

        ends = [rec.epoch for rec in read_log(path) if rec.kind == "epoch_end"]
        assert ends == [0, 1, 2] and path.read_bytes().startswith(before)


class TestReplayed:
    @given(st.lists(loop_calls, max_size=30))
    def test_replayed_records_leave_the_cursor_where_the_loop_did(self, calls):
        """For any sequence of loop calls on a real bus, feeding the recorded observations to
        a fresh cursor ends at the live cursor's epoch, step, fit and last ended epoch."""
        writer = RecordingWriter()
        bus = Bus(log=writer)
        for name, *args in calls:
            if name == "publish_batch_end":
                batch, step, epoch = args
                fields = {"batch": batch, "step": step} | ({} if epoch is None
                                                            else {"epoch": epoch})
                bus.publish(r.BatchEnd(**fields, logs={"loss": 1.0}))
                continue
            logs = {"loss": 0.5} if name.endswith("end") else None
            try:
                getattr(bus, name)(*args, logs) if args else getattr(bus, name)(logs=logs)
            except EventError:
                assert name == "epoch_end"  # a second end of one epoch: nothing recorded
        fresh = Cursor()
        for record in writer.records:
            parsed = parse_record(record)
            if isinstance(parsed, r.Observation):
                assert fresh.replayed(parsed) is (parsed.kind == "train_begin")
        assert position(fresh) == position(bus.cursor)

    def test_what_each_kind_moves(self):
        """Batch records set epoch and step, epoch records the epoch and its end, fits the
        in_train flag; only train_begin says a new fit starts."""
        cursor = Cursor()
        assert cursor.replayed(r.TrainBegin()) is True
        assert cursor.in_train
        assert cursor.replayed(r.EpochBegin(epoch=2)) is False
        cursor.replayed(r.BatchBegin(batch=0, step=7, epoch=2))
        assert (cursor.epoch, cursor.step) == (2, 7)
        cursor.replayed(r.BatchEnd(batch=0, step=7, epoch=2))
        assert cursor.step == 8
        cursor.replayed(r.EpochEnd(epoch=2))
        assert cursor.ended == 2
        cursor.replayed(r.TestEnd(epoch=2))
        assert position(cursor) == (2, 8, True, 2)
        cursor.replayed(r.TrainEnd())
        assert not cursor.in_train


OBSERVATIONS = [r.KINDS[kind] for kind in r.OBSERVATION_KINDS]
EPOCH_SCOPED = {"epoch_end", "test_begin", "test_end", "test_batch_begin", "test_batch_end"}
STOP = 3


def observation(kind: str, epoch: int | None) -> r.Observation:
    fields: dict = {}
    cls = r.KINDS[kind]
    if "batch" in cls.model_fields:
        fields["batch"] = 0
    if "step" in cls.model_fields:
        fields["step"] = 0
    if "epoch" in cls.model_fields:
        fields["epoch"] = epoch
    return cls(**fields)


def expected_after_stop(kind: str, epoch: int | None) -> bool:
    if kind == "train_end":
        return False
    if kind in ("batch_begin", "batch_end", "epoch_begin"):
        return True
    if kind in EPOCH_SCOPED:
        return epoch is None or epoch > STOP
    return True  # no epoch of its own: nothing more is published but train_end


def table_rows() -> list[tuple[str, int | None]]:
    """Every observation kind with every epoch it can carry, relative to the stop."""
    rows = []
    for kind in r.OBSERVATION_KINDS:
        field = r.KINDS[kind].model_fields.get("epoch")
        if field is None:
            rows.append((kind, None))
            continue
        epochs = [0, STOP - 1, STOP, STOP + 1, 100]
        rows.extend((kind, e) for e in ([None, *epochs] if not field.is_required() else epochs))
    return rows


class TestAfterStop:
    @pytest.mark.parametrize(("kind", "epoch"), table_rows())
    def test_truth_table(self, kind, epoch):
        """Batch events and epoch_begin are always dropped, train_end never, epoch-scoped
        events kept up to the stopped epoch's end, anything else dropped."""
        record = observation(kind, epoch)
        assert after_stop(record, STOP) is expected_after_stop(kind, epoch)

    def test_the_stopped_epoch_still_ends(self):
        """The epoch a stop came in still has its evaluation and its end."""
        assert not after_stop(r.TestEnd(epoch=STOP), STOP)
        assert not after_stop(r.EpochEnd(epoch=STOP), STOP)
        assert after_stop(r.EpochBegin(epoch=STOP + 1), STOP)

    def test_a_stop_before_any_epoch(self):
        """A stop outside any epoch (-1, as replay marks it) keeps only train_end."""
        for cls in OBSERVATIONS:
            kept = not after_stop(observation(cls.model_fields["kind"].default, 0), -1)
            assert kept is (cls is r.TrainEnd)

    def test_a_replay_of_a_second_fit_after_a_stopped_one(self, tmp_path):
        """Replaying, unchanged, a log of two fits whose first was stopped recomputes every
        recorded decision."""
        from plugins import EarlyStopping

        log = tmp_path / "run.jsonl"
        bus = Bus([EarlyStopping(monitor="loss", patience=0)], log=log)
        for losses in ([1.0, 1.5, 2.0], [1.0, 2.0, 3.0]):
            bus.train_begin()
            for epoch, loss in enumerate(losses):
                if bus.stop_training:
                    break
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": loss})
            bus.train_end()
        bus.close()
        result = replay(log, verify=True)
        assert len(result.recorded) == 2
        assert result.mismatch is None, str(result.mismatch)
