"""The run as it went on, streamed: abandoned partial epochs left out without holding the log.

Logs with resumes are made the way crashes make them: a real run's log cut at a record
boundary (what a crash leaves once the torn line is cut), resumed, run on, cut again.
The streaming readers are checked against the plain definition on the records in memory.
"""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, read_log, replay
from eventbus import records as r
from eventbus.audit import audit
from eventbus.effective import (
    abandoned_spans,
    effective_records,
    find_kinds,
    is_abandoned,
    read_effective,
)
from eventbus.parquet import ParquetWriter
from plugins import EarlyStopping, ReduceLROnPlateau, TerminateOnNaN

from hypothesis_profiles import FILES, examples


def abandoned_by_definition(records: list[r.Record]) -> list[r.Record]:
    """A resumed record drops the records before it whose seq is above its from_seq."""
    kept: list[r.Record] = []
    for record in records:
        if isinstance(record, r.Resumed):
            while kept and kept[-1].seq > record.from_seq:
                kept.pop()
        kept.append(record)
    return kept


def resume_point_by_definition(kept: list[r.Record]) -> int:
    """The seq a resume goes on from: the last train_begin, epoch_end or train_end and the
    records after it up to the next observation; the header alone if there is none."""
    ends = [i for i, rec in enumerate(kept) if rec.kind in ("train_begin", "epoch_end",
                                                              "train_end")]
    if not ends:
        return kept[0].seq
    i = ends[-1]
    while i + 1 < len(kept) and not isinstance(kept[i + 1], r.Observation):
        i += 1
    return kept[i].seq


def plugins() -> list[object]:
    return [EarlyStopping(patience=2), ReduceLROnPlateau(patience=1, cooldown=1),
            TerminateOnNaN()]


def train(path: Path, losses: list[float], batches: int) -> Bus:
    """The loop, resumed from ``path`` if it holds a run."""
    with Bus(plugins(), log=path, learning_rate=0.1, resume=True) as bus:
        bus.train_begin({"epochs": len(losses)})
        for epoch in range(bus.initial_epoch, len(losses)):
            if bus.stop_training:
                break
            bus.epoch_begin(epoch)
            for batch in range(batches):
                bus.batch_begin(batch)
                bus.batch_end(batch, {"loss": losses[epoch] + batch})
                if bus.stop_training:
                    break
            bus.epoch_end(epoch, {"loss": losses[epoch], "val_loss": losses[epoch]})
        bus.train_end()
    return bus


def cut(path: Path, lines: int) -> None:
    """What a crash leaves: the log up to a record boundary (the torn line already cut)."""
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:lines]))


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n")


losses = st.lists(st.sampled_from([1.0, 0.5, 0.5, 0.25, math.nan]), min_size=2, max_size=6)
cuts = st.lists(st.floats(0, 1), min_size=1, max_size=3)


@st.composite
def crashed_runs(draw: st.DrawFn) -> tuple[list[float], int, list[float]]:
    return draw(losses), draw(st.integers(1, 3)), draw(cuts)


def crash_and_resume(path: Path, run: tuple[list[float], int, list[float]]) -> None:
    """Train, then for each cut: crash somewhere after the last resume, resume, train on."""
    values, batches, fractions = run
    train(path, values, batches)
    floor = 1  # a crash cannot take back what a resume already flushed
    for fraction in fractions:
        total = line_count(path)
        cut(path, floor + round(fraction * (total - floor)))
        Bus(plugins(), log=path, learning_rate=0.1, resume=True).close()
        floor = line_count(path)
        train(path, values, batches)


def parquet_copy(records: list[r.Record], path: Path) -> Path:
    with ParquetWriter(path) as writer:
        for record in records:
            writer.write(record.model_dump())
    return path


# A crash may fall after the fit's train_end: resuming a finished run is said, not refused.
@pytest.mark.filterwarnings("ignore:bus. resume. the run in .* had finished")
class TestStreamingMatchesTheDefinition:
    @examples(FILES)  # a run crashed, resumed and read
    @given(run=crashed_runs())
    def test_read_effective_and_find_kinds_in_both_formats(self, tmp_path_factory, run):
        path = tmp_path_factory.mktemp("run") / "events.jsonl"
        crash_and_resume(path, run)
        records = list(read_log(path))
        expected = [rec.seq for rec in abandoned_by_definition(records)]
        table = parquet_copy(records, path.with_suffix(".parquet"))
        wanted = ("resumed", "epoch_end", "stop_training")
        for log in (path, table):
            assert [rec.seq for rec in read_effective(log)] == expected
            found = find_kinds(log, wanted)
            assert [(f["kind"], f["seq"]) for f in found] == \
                [(rec.kind, rec.seq) for rec in records if rec.kind in wanted]
        assert [rec.seq for rec in effective_records(records)] == expected
        assert [rec.seq for rec in read_effective(records)] == expected

    @examples(FILES)  # a run crashed, resumed and read
    @given(run=crashed_runs(), at=st.floats(0, 1))
    def test_resume_goes_on_where_the_definition_says(self, tmp_path_factory, run, at):
        path = tmp_path_factory.mktemp("run") / "events.jsonl"
        crash_and_resume(path, run)
        total = line_count(path)
        cut(path, 1 + round(at * (total - 1)))
        kept = abandoned_by_definition(list(read_log(path)))
        ends = [rec.epoch for rec in kept if rec.kind == "epoch_end"]
        last_seq = max(rec.seq for rec in read_log(path))
        bus = Bus(plugins(), log=path, learning_rate=0.1, resume=True)
        bus.close()
        # the last resumed record (decisions the crash lost may follow it)
        resumed = [rec for rec in read_log(path) if isinstance(rec, r.Resumed)][-1]
        assert resumed.from_seq == resume_point_by_definition(kept)
        assert resumed.seq == last_seq + 1
        assert bus.initial_epoch == resumed.initial_epoch == (ends[-1] + 1 if ends else 0)

    @examples(FILES)  # a run crashed, resumed, replayed
    @given(run=crashed_runs())
    def test_a_crashed_and_resumed_run_replays_to_its_decisions(self, tmp_path_factory, run):
        path = tmp_path_factory.mktemp("run") / "events.jsonl"
        crash_and_resume(path, run)
        result = replay(path, verify=True)
        assert result.ok, result.mismatch


@given(marks=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=6),
       seq=st.integers(0, 42))
def test_abandoned_spans_hold_exactly_the_abandoned_seqs(marks, seq):
    """Merged, sorted spans answer as the marks themselves do, for every seq."""
    marks = [(high, low) for high, low in marks if low < high]  # (seq, from_seq): from before
    spans = abandoned_spans(marks)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert is_abandoned(seq, spans) == any(low < seq < high for high, low in marks)


class TestFindKinds:
    def test_lines_across_piece_boundaries_and_escaped_kinds_are_found(self, tmp_path,
                                                                      monkeypatch):
        """A kind spelled with \\u escapes (JSON allows it) is found, and so is a line split
        between two pieces of the read."""
        import eventbus.jsonl as jsonl

        path = tmp_path / "events.jsonl"
        with Bus([], log=path) as bus:
            bus.train_begin()
            for epoch in range(3):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
        lines = path.read_bytes().splitlines(keepends=True)
        escaped = lines[-1].replace(b'"epoch_end"', b'"\\u0065poch_end"')
        assert escaped != lines[-1]
        path.write_bytes(b"".join([*lines[:-1], escaped]))
        expected = [rec.seq for rec in read_log(path) if rec.kind == "epoch_end"]
        assert len(expected) == 3
        for chunk in (7, 64, 1 << 20):
            monkeypatch.setattr(jsonl, "_CHUNK", chunk)
            assert [f["seq"] for f in find_kinds(path, ["epoch_end"])] == expected

    def test_a_damaged_line_is_named_as_the_reader_names_it(self, tmp_path):
        """A resume must not go on from a log its readers refuse: a damaged line the search
        reads is the reader's error, naming the line; a torn last line (a crash) is not."""
        from eventbus import read_log
        from eventbus.errors import LogCorruptError

        path = tmp_path / "events.jsonl"
        with Bus([], log=path) as bus:
            bus.train_begin()
            bus.epoch_end(0, {"loss": 1.0})
        with open(path, "ab") as file:
            file.write(b'{"v":1,"kind":"epoch_end"')  # torn by a crash: tolerated
        assert [f["epoch"] for f in find_kinds(path, ["epoch_end"])] == [0]
        with open(path, "ab") as file:
            file.write(b'\n{"kind": "epoch_end", oops\n')
        # the torn line, no longer the last, is damage now: the search names it as the reader
        with pytest.raises(LogCorruptError, match=r"events.jsonl:4: line is not JSON") as info:
            find_kinds(path, ["epoch_end"])
        with pytest.raises(LogCorruptError, match=r"events.jsonl:4: line is not JSON"):
            list(read_log(path))
        assert info.value.line == 4

    def test_a_resume_does_not_go_on_from_a_log_its_readers_refuse(self, tmp_path):
        from eventbus.errors import LogCorruptError

        path = tmp_path / "events.jsonl"
        with Bus([], log=path) as bus:
            bus.train_begin({"epochs": 3})
            for epoch in range(2):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
        lines = path.read_bytes().splitlines(keepends=True)
        last_end = max(i for i, line in enumerate(lines) if b'"epoch_end"' in line)
        lines[last_end] = lines[last_end].replace(b"}", b",,}", 1)  # damaged, not torn
        path.write_bytes(b"".join(lines))
        before = path.read_bytes()
        with pytest.raises(LogCorruptError, match=f"events.jsonl:{last_end + 1}: line is not"):
            Bus([], log=path, resume=True)
        assert path.read_bytes() == before  # nothing appended


def test_replay_resume_and_audit_do_not_hold_the_log_in_memory(tmp_path):
    """A long run streams: the peak of Python memory stays a small part of what its records
    take when all are built (about 1 KB a record: here about 24 MB; the peaks are 1 to 4 MB,
    the same for 60,000 records)."""
    path, table = tmp_path / "events.jsonl", tmp_path / "events.parquet"
    batches = 8_000
    with Bus(plugins(), log=[path, table], learning_rate=0.1) as bus:
        bus.train_begin({"epochs": 3})
        for epoch in range(3):
            bus.epoch_begin(epoch)
            for batch in range(batches):
                bus.batch_end(batch, {"loss": 0.5, "acc": 0.25})
            bus.epoch_end(epoch, {"loss": 0.5, "val_loss": 1.0 - epoch / 10})
    records = 3 * batches
    for action in (lambda: replay(path, verify=True),
                   lambda: replay(table, verify=True),
                   lambda: audit(path),
                   lambda: Bus(plugins(), log=path, resume=True).close()):
        tracemalloc.start()
        try:
            action()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 250 * records, f"peak {peak / 1e6:.1f} MB for {records} records"
