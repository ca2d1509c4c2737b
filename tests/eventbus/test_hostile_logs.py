"""Hostile and damaged logs: whatever a log holds, reading it fails only as the project does.

A log is untrusted input (it may be edited, cut, copied half-way, or made by other code), and
replay, audit, resume and convert read nothing else. Every reader either reads a log or raises
an error of the project's family (``LogCorruptError`` naming the file, the line or row and the
field), never a ``TypeError`` from deep inside. The logs here are written by a real bus with
the built-in plugins, damaged, and read back by the real readers.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import shutil
import stat
import threading
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eventbus import Bus, jsonl, parquet, read_log, replay
from eventbus import records as r
from eventbus.audit import audit, render
from eventbus.effective import find_kinds, read_effective, resume_point
from eventbus.errors import EventBusError, LogCorruptError, LogError
from eventbus.log import is_parquet, last_seq, open_writer
from eventbus.parquet import ParquetWriter
from eventbus.parquet_segments import compact
from plugins import EarlyStopping, ReduceLROnPlateau, TerminateOnNaN

LOSSES = [0.9, 0.8, 0.85, 0.84, 0.86, 0.83]


def plugins() -> list[object]:
    return [EarlyStopping(patience=2), ReduceLROnPlateau(patience=1, factor=0.5),
            TerminateOnNaN()]


def train(path: Path, *, batches: int = 3, resume: bool = False) -> None:
    """A few epochs of a loop, with batches, decisions and (resumed) a resumed record."""
    with Bus(plugins(), log=path, learning_rate=0.1, resume=resume, run_id="hostile") as bus:
        bus.train_begin({"epochs": len(LOSSES), "steps": batches})
        for epoch in range(bus.initial_epoch, len(LOSSES)):
            if bus.stop_training:
                break
            bus.epoch_begin(epoch)
            for batch in range(batches):
                bus.batch_begin(batch)
                bus.batch_end(batch, {"loss": LOSSES[epoch] + batch / 100, "acc": 0.5})
            bus.epoch_end(epoch, {"loss": LOSSES[epoch], "val_loss": LOSSES[epoch] + 0.05})
        bus.train_end()


def resumed_run(path: Path) -> None:
    """A run that crashed in its third epoch (the log cut at a record boundary) and resumed."""
    train(path)
    lines = path.read_bytes().splitlines(keepends=True)
    third = next(i for i, line in enumerate(lines) if b'"epoch_begin"' in line
                 and orjson.loads(line)["epoch"] == 2)
    path.write_bytes(b"".join(lines[:third + 3]))
    train(path, resume=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, object]:
    """The logs every test starts from: JSON Lines bytes (a run, a resumed run) and the
    Parquet table of a run, each written by a real bus."""
    where = tmp_path_factory.mktemp("made")
    # The same bytes every run (a clock of its own, one run id, one start time): a seeded
    # mutation case is then the same damage every time, and a failure can be run again.
    clock = itertools.count()
    with pytest.MonkeyPatch.context() as patch:
        tick = lambda: 1.8e9 + next(clock) / 8  # noqa: E731
        patch.setattr("eventbus.engine._time", tick)  # events' times
        patch.setattr("eventbus.recorder._time", tick)  # decisions', outcomes', the header's
        train(where / "run.jsonl")
        resumed_run(where / "resumed.jsonl")
        train(where / "run.parquet")
    (segment,) = (where / "run.parquet").glob("seg-*.parquet")
    table = pq.read_table(segment)
    payloads = [fixed_start(text) for text in table.column("payload").to_pylist()]
    return {"jsonl": fixed_start((where / "run.jsonl").read_bytes()),
            "resumed": fixed_start((where / "resumed.jsonl").read_bytes()),
            "table": set_column(table, "payload", payloads, pa.string())}


def fixed_start(data):
    """``data`` (bytes or text, or None) with the header's start time (from the clock) fixed."""
    if data is None:
        return None
    if isinstance(data, str):
        return fixed_start(data.encode()).decode()
    return re.sub(rb'"created":"[^"]*"', b'"created":"2026-01-01T00:00:00+00:00"', data)


@pytest.fixture
def fifos_let_go(tmp_path):
    """A reader that opens a FIFO waits for a writer: forever. Every two seconds a thread
    opens the other end of each FIFO under ``tmp_path``, so a reader that does so fails
    (it finds the FIFO empty) instead of hanging the test run."""
    stop = threading.Event()

    def release() -> None:
        while not stop.wait(2.0):
            for directory, _, names in os.walk(tmp_path):  # passes over what vanishes
                for name in names:
                    path = os.path.join(directory, name)
                    try:
                        if stat.S_ISFIFO(os.lstat(path).st_mode):
                            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                    except OSError:
                        pass  # no reader waits on it, or the test removed it meanwhile

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def readers(path: Path) -> dict[str, object]:
    """Every way the project reads a log, each as a call."""
    return {
        "read_log": lambda: list(read_log(path)),
        "read_log(validate=True)": lambda: list(read_log(path, validate=True)),
        "read_effective": lambda: list(read_effective(path)),
        "resume_point": lambda: resume_point(path),
        "last_seq": lambda: last_seq(path),
        "audit": lambda: audit_as_the_command_line_shows_it(path),
        "replay": lambda: replay(path, verify=True),
    }


def audit_as_the_command_line_shows_it(path: Path) -> None:
    """The audit, as text and as ``--json`` (the command line's encoding)."""
    result = audit(path)
    render(result)
    orjson.dumps(r.encode_nonfinite(result.as_dict()),
                 option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def quietly(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn last line is a warning, not a failure
        return call()


def jsonl_log(tmp_path: Path, data: bytes, name: str = "events.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def edit_line(data: bytes, kind: str, changes: dict[str, object]) -> tuple[bytes, int]:
    """``data`` with the first line of ``kind`` changed; and that line's number."""
    lines = data.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if orjson.loads(line)["kind"] == kind]
    i = found[0]
    record = orjson.loads(lines[i])
    record.update(changes)
    lines[i] = orjson.dumps(record) + b"\n"
    return b"".join(lines), i + 1


def parquet_log(tmp_path: Path, table: pa.Table, name: str = "events.parquet") -> Path:
    """``table`` as a Parquet log directory of one segment; the segment's path."""
    directory = tmp_path / name
    directory.mkdir()
    segment = directory / f"seg-000000000000-{table.num_rows - 1:012d}.parquet"
    pq.write_table(table, segment)
    return segment


def set_column(table: pa.Table, name: str, values: list, arrow_type=None) -> pa.Table:
    return table.set_column(table.column_names.index(name), name,
                            pa.array(values, arrow_type))


def row_of(table: pa.Table, kind: str) -> int:
    """The 0-based row of the first record of ``kind``."""
    return table.column("kind").to_pylist().index(kind)


class TestEveryFailureIsTheProjects:
    """The damage a mutation campaign found, each read back by every reader."""

    @pytest.mark.parametrize("validate", [False, True])
    def test_a_kind_that_is_a_list_names_its_line(self, tmp_path, made, validate):
        """An unhashable kind is an unknown kind, not a TypeError."""
        data, line = edit_line(made["jsonl"], "batch_end", {"kind": ["batch_end"]})
        path = jsonl_log(tmp_path, data)
        with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{line}: unknown record "
                                                  r"kind \['batch_end'\]") as info:
            list(read_log(path, validate=validate))
        assert (info.value.line, info.value.field) == (line, "kind")
        for name in ("read_effective", "audit", "replay"):
            with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{line}:"):
                readers(path)[name]()

    @pytest.mark.parametrize("field,value", [
        ("step", "x"), ("step", [3]), ("epoch", "x"), ("batch", 1.5), ("time", "noon"),
        ("run_id", 7), ("logs", ["loss"]), ("seq", "x"), ("seq", 4.0)])
    def test_a_batch_record_of_the_right_shape_and_wrong_types_is_corrupt(
            self, tmp_path, made, field, value):
        """Batch records are made without validation only when their types are right: a
        string step no longer reaches the bus (replay failed with a TypeError)."""
        data, line = edit_line(made["jsonl"], "batch_end", {field: value})
        path = jsonl_log(tmp_path, data)
        for name, read in readers(path).items():
            if name in ("resume_point", "last_seq", "audit"):
                continue  # quick searches, unchecked; audit does not build batch records
            with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{line}: .*{field}") \
                    as info:
                read()
            assert (info.value.line, info.value.field) == (line, field), name

    @pytest.mark.parametrize("kind,field,value", [
        ("epoch_end", "epoch", -2), ("epoch_end", "epoch", 2**64 - 1),
        ("epoch_begin", "epoch", 2**63), ("stop_training", "cause_seq", -1),
        ("stop_training", "epoch", 2**64 - 1)])
    def test_an_index_the_bus_never_writes_is_corrupt(self, tmp_path, made, kind, field, value):
        """The readers hold validated records to the bounds the bus records within (0 to
        2**63-1): a crafted epoch was read, then failed inside a plugin replaying it."""
        data, line = edit_line(made["jsonl"], kind, {field: value})
        path = jsonl_log(tmp_path, data)
        for name in ("read_log", "read_log(validate=True)", "replay"):
            with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{line}: .*{field}") \
                    as info:
                readers(path)[name]()
            assert (info.value.line, info.value.field) == (line, field), name

    def test_a_number_spelled_as_text_is_taken_as_validation_takes_it(self, tmp_path, made):
        """The fast path's check sends a record to validation, which decides: a step of
        "7" is the integer 7 (pydantic's rule for every other record, too)."""
        data, line = edit_line(made["jsonl"], "batch_end", {"step": "7"})
        back = list(read_log(jsonl_log(tmp_path, data)))
        assert back[line - 1].step == 7 and type(back[line - 1].step) is int

    def test_a_metric_that_is_not_a_number_fails_replay_with_its_line(self, tmp_path, made):
        """Batch metrics are trusted on the fast path (checking them costs a sixth of a
        typed read); a plugin that fails in replay makes replay look for the damage."""
        data, line = edit_line(made["jsonl"], "batch_end", {"logs": {"loss": "x", "acc": 0.5}})
        path = jsonl_log(tmp_path, data)
        with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{line}: invalid batch_end "
                                                  r"record: logs: .*'loss'") as info:
            replay(path)
        assert info.value.field == "logs"

    @pytest.mark.parametrize("payload,what", [
        ("[1, 2]", "payload is a JSON list"), ("not json", "payload is not JSON"),
        ('"text"', "payload is a JSON str"), ("1e999", "payload is not JSON"),
        ('{"seq": "x"}', "payload holds seq"), ('{"kind": [1]}', "payload holds kind")])
    def test_a_parquet_payload_that_is_not_an_object_names_file_and_row(
            self, tmp_path, made, payload, what):
        table = made["table"]
        row = row_of(table, "set_learning_rate")
        values = table.column("payload").to_pylist()
        values[row] = payload
        segment = parquet_log(tmp_path, set_column(table, "payload", values, pa.string()))
        path = segment.parent
        for name, read in readers(path).items():
            if name in ("resume_point", "last_seq"):
                quietly(read)  # unchecked: a damaged payload is left to the reader
                continue
            with pytest.raises(LogCorruptError, match=rf"{segment.name} \(row {row + 1}\): "
                                                      f"{what}") as info:
                read()
            assert (info.value.path, info.value.line, info.value.field) == \
                (str(segment), row + 1, "payload")

    @pytest.mark.parametrize("column,arrow_type,what", [
        ("seq", pa.string(), "string, not integers"), ("kind", pa.int64(), "int64, not strings"),
        ("time", pa.string(), "string, not numbers"), ("logs.loss", pa.string(), "string")])
    def test_a_parquet_column_of_another_type_names_file_and_column(
            self, tmp_path, made, column, arrow_type, what):
        table = made["table"]
        if column == "kind":
            kinds = sorted(set(table.column("kind").to_pylist()))
            values = [kinds.index(k) for k in table.column("kind").to_pylist()]
        else:
            values = [None if v is None else str(v) for v in table.column(column).to_pylist()]
        segment = parquet_log(tmp_path, set_column(table, column, values, arrow_type))
        for name, read in readers(segment.parent).items():
            with pytest.raises(LogCorruptError, match=rf"{segment.name}: column {column} is "
                                                      f"{what}") as info:
                read()
            assert (info.value.path, info.value.field) == (str(segment), column), name

    @pytest.mark.parametrize("rate", [[0.1], "0.1", -1.0, True, {"value": 0.1}])
    def test_a_header_learning_rate_that_is_no_rate_names_the_field(self, tmp_path, made,
                                                                      rate):
        """Resume and replay start from meta.learning_rate: a list there failed as a
        TypeError (resume) or as an error about the Bus's argument (replay)."""
        header = orjson.loads(made["jsonl"].split(b"\n", 1)[0])
        header["meta"]["learning_rate"] = rate
        path = jsonl_log(tmp_path, orjson.dumps(header) + b"\n" +
                         made["jsonl"].split(b"\n", 1)[1])
        for name in ("read_log", "audit", "replay", "read_effective"):
            with pytest.raises(LogCorruptError, match=r"events\.jsonl:1: invalid header "
                                                      r"record: meta\.learning_rate") as info:
                readers(path)[name]()
            assert info.value.field == "meta.learning_rate"

    @pytest.mark.parametrize("from_seq", [-10**18, -1e18, -1, 3.5, 3.0, "3", "own seq",
                                          10**6])
    def test_a_resumed_record_must_go_on_from_a_record_before_it(self, tmp_path, made,
                                                                 from_seq):
        """A from_seq below 0 abandoned the header too, and audit said "not an event log";
        now it is the resumed record's line and field."""
        data = made["resumed"]
        seq = next(orjson.loads(line)["seq"] for line in data.splitlines()
                   if b'"resumed"' in line)
        value = seq if from_seq == "own seq" else from_seq
        data, line = edit_line(data, "resumed", {"from_seq": value})
        path = jsonl_log(tmp_path, data)
        for name in ("read_log", "read_effective", "audit", "replay"):
            with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{line}: .*from_seq") \
                    as info:
                readers(path)[name]()
            assert info.value.field == "from_seq", name
        assert resume_point(path).seq is not None  # the quick search passes it over

    def test_values_nested_a_thousand_deep_are_corrupt(self, tmp_path, made):
        """orjson reads JSON nested 1,024 deep; turning that into plain data ran out of
        stack (a RecursionError) while validating the record, or not, by the stack's depth at
        that moment. Plain data nests at most 64 deep: the error names the field."""
        lines = made["jsonl"].splitlines(keepends=True)
        line = next(i for i, text in enumerate(lines, 1) if b'"stop_training"' in text)
        deep = b"[" * 1000 + b"0.5" + b"]" * 1000  # orjson writes no more than 254 deep
        lines[line - 1] = lines[line - 1].replace(b'"evidence":{', b'"evidence":{"deep":' +
                                                  deep + b",")
        path = jsonl_log(tmp_path, b"".join(lines))
        for name in ("read_log", "audit", "replay"):
            with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{line}: invalid "
                                                      r"stop_training record: evidence: .*deep"
                                                      r"\[0\].*nested too deeply"):
                readers(path)[name]()

    @pytest.mark.parametrize("field", ["meta", "params"])
    def test_a_header_nested_hundreds_deep_is_corrupt(self, tmp_path, made, field):
        """The header's meta and its plugins' params are kept as given (not made plain), and
        had no depth bound: 600 levels ended every reader, and a resume, in a RecursionError.
        They nest at most 64 deep too, and a NaN spelled inside is no way around it."""
        lines = made["jsonl"].splitlines(keepends=True)
        header = orjson.loads(lines[0])
        deep: object = "NaN"
        for _ in range(600):
            deep = [deep]
        if field == "meta":
            header["meta"] = {"deep": deep}
        else:
            header["plugins"][0]["params"] = {"deep": deep}
        lines[0] = json.dumps(header).encode() + b"\n"
        path = jsonl_log(tmp_path, b"".join(lines))
        for name in ("read_log", "audit", "replay"):
            with pytest.raises(LogCorruptError, match=r"events\.jsonl:1: invalid header record"
                                                      r": .*nested too deeply"):
                readers(path)[name]()

    def test_a_copied_line_names_both_lines(self, tmp_path, made):
        """A seq that does not increase (a line copied, lines swapped) is damage: the error
        names the line and the one before it."""
        lines = made["jsonl"].splitlines(keepends=True)
        lines.insert(6, lines[5])
        path = jsonl_log(tmp_path, b"".join(lines))
        seq = orjson.loads(lines[5])["seq"]
        for validate in (False, True):
            with pytest.raises(LogCorruptError, match=rf"events\.jsonl:7: seq {seq} does not "
                                                      rf"follow seq {seq} of the record before "
                                                      rf"it \(.*events\.jsonl:6\)") as info:
                list(read_log(path, validate=validate))
            assert (info.value.line, info.value.field) == (7, "seq")
        lines[6], lines[7] = lines[7], lines[5]  # backward: 6, 7, 6
        path.write_bytes(b"".join(lines))
        with pytest.raises(LogCorruptError, match=r"events\.jsonl:8: seq \d+ does not follow"):
            list(read_log(path, kinds=["header"]))  # records left out are checked too

    def test_a_copied_parquet_row_names_both_rows(self, tmp_path, made):
        """Within a file, a repeated seq is damage; across files it is a compaction's
        leftover, read once (test_log_formats)."""
        table = made["table"]
        rows = list(range(table.num_rows))
        rows.insert(5, 4)
        segment = parquet_log(tmp_path, table.take(rows))
        with pytest.raises(LogCorruptError, match=rf"{segment.name} \(row 6\): seq 4 does not "
                                                  rf"follow seq 4 .*{segment.name} \(row 5\)"):
            list(read_log(segment.parent))

    def test_a_damaged_parquet_page_names_file_and_column(self, tmp_path, made):
        """Text that is not UTF-8 in a column (bytes flipped on disk) failed as a
        UnicodeDecodeError while the rows were turned into Python objects."""
        table = made["table"]
        bad = pa.array([b"\xff\xfe" if i == 3 else v.encode()
                        for i, v in enumerate(table.column("run_id").to_pylist())],
                       pa.binary()).view(pa.string())
        segment = parquet_log(tmp_path, table.set_column(
            table.column_names.index("run_id"), "run_id", bad))
        with pytest.raises(LogCorruptError, match=rf"{segment.name} \(rows 1 to "
                                                  rf"{table.num_rows}\): column run_id") as info:
            list(read_log(segment.parent))
        assert info.value.field == "run_id"


# --- the mutation campaign ------------------------------------------------------------------

#: Values a mutation puts in place of a field: every JSON type, edge numbers, other kinds.
HOSTILE = [[], {}, "x", "7", 1.5, -1e18, 10**20, None, True, -1, 0, "NaN", [1, 2], {"a": 1},
           2**63, -2**63 - 1, 1e308, "", "header", "batch_end", "resumed", [[[]]]]
KINDS_TO_PLANT = ["resumed", "epoch_end", "batch_end", "header", "set_learning_rate",
                  "checkpoint_saved", "train_end", "no_such_kind"]


def _poke(rng: random.Random, value: object, depth: int = 0) -> object:
    """``value`` (parsed JSON) with one thing in it changed, removed or added."""
    if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.7:
        key = rng.choice(list(value))
        roll = rng.random()
        if isinstance(value[key], (dict, list)) and roll < 0.5:
            value[key] = _poke(rng, value[key], depth + 1)
        elif roll < 0.6:
            del value[key]
        elif roll < 0.7 and len(value) > 1:  # two fields swap values
            other = rng.choice(list(value))
            value[key], value[other] = value[other], value[key]
        else:
            value[key] = rng.choice(HOSTILE)
        return value
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        value[i] = _poke(rng, value[i], depth + 1) if isinstance(value[i], (dict, list)) \
            else rng.choice(HOSTILE)
        return value
    if isinstance(value, dict):
        value[rng.choice(["seq", "kind", "v", "logs", "from_seq", "extra"])] = \
            rng.choice(HOSTILE)
        return value
    return rng.choice(HOSTILE)


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an int beyond 64 bits: Python's json writes it
        import json
        return json.dumps(value).encode()


def mutate_jsonl(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """``data`` changed once as damage, editing or a crash would: bytes flipped, deleted or
    inserted, the file cut, lines copied, swapped or deleted, a field's type or value
    changed, a record's kind changed; and what was done."""
    lines = data.split(b"\n")
    n = len(lines) - 1  # the whole lines (the last element is what follows the last newline)
    choice = rng.randrange(11)
    if choice == 0 and data:
        at = rng.randrange(len(data))
        return data[:at] + bytes([rng.randrange(256)]) + data[at + 1:], f"byte {at} flipped"
    if choice == 1 and data:
        at = rng.randrange(len(data))
        return data[:at] + data[at + rng.randrange(1, 40):], f"bytes deleted at {at}"
    if choice == 2:
        at = rng.randrange(len(data) + 1)
        junk = rng.choice([b"\n", b"{", b"}", b'"', b"\\u0000", b"null", b"[", b"\xff\xfe",
                           bytes(rng.randrange(256) for _ in range(5))])
        return data[:at] + junk + data[at:], f"{junk!r} inserted at {at}"
    if choice == 3:
        at = rng.randrange(len(data) + 1)
        return data[:at], f"cut at byte {at}"
    if n < 2:
        return data, "unchanged"
    i, j = rng.randrange(n), rng.randrange(n)
    if choice == 4:
        lines.insert(j, lines[i])
        return b"\n".join(lines), f"line {i + 1} copied before line {j + 1}"
    if choice == 5:
        lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines), f"lines {i + 1} and {j + 1} swapped"
    if choice == 6:
        del lines[i]
        return b"\n".join(lines), f"line {i + 1} deleted"
    try:
        record = orjson.loads(lines[i])
    except orjson.JSONDecodeError:
        return data, "unchanged"
    if choice == 7 and isinstance(record, dict):  # a record becomes another kind
        record["kind"] = kind = rng.choice(KINDS_TO_PLANT)
        if kind == "resumed":
            record.update(from_seq=rng.choice([-10**18, -1e18, -1, 0, 3.5, 2, 10**6,
                                               record.get("seq")]),
                          initial_epoch=rng.choice([0, 1, -1, 2.5]), source="bus")
            for field in ("logs", "batch", "step", "epoch"):
                record.pop(field, None)
        what = f"line {i + 1} made a {kind}"
    elif choice == 8 and i == 0:
        record.setdefault("meta", {})["learning_rate"] = rng.choice(HOSTILE)
        what = "the header's meta.learning_rate changed"
    else:
        record = _poke(rng, record)
        what = f"line {i + 1} edited"
    lines[i] = _dumps(record)
    return b"\n".join(lines), what


def mutate_parquet_table(rng: random.Random, table: pa.Table) -> tuple[pa.Table, str]:
    """``table`` with a column's type or values changed, a row copied, moved or dropped, a
    column dropped or added; and what was done."""
    names = table.column_names
    rows = table.num_rows
    choice = rng.randrange(8)
    if choice in (1, 6) and not {"kind", "payload"} <= set(names):
        choice = 2  # an earlier mutation dropped a column these change
    if choice == 0:
        name = rng.choice(names)
        arrow_type = rng.choice([pa.string(), pa.int64(), pa.float64(), pa.bool_(),
                                 pa.int8(), pa.large_string(), pa.null()])
        try:
            column = table.column(name).cast(arrow_type)
        except (pa.ArrowException, ValueError, TypeError):
            column = pa.array([None if v is None else str(v)
                               for v in table.column(name).to_pylist()], pa.string())
        return table.set_column(names.index(name), name, column), f"{name} as {column.type}"
    if choice == 1:
        values = table.column("payload").to_pylist()
        row = rng.randrange(rows)
        values[row] = rng.choice([
            "[1]", "garbage", "{}", '{"seq": "x"}', '{"kind": [1]}', '"text"', "null",
            '{"from_seq": -1e18}', '{"logs": 5}', "1e999", '{"meta": {"learning_rate": [1]}}',
            '{"reason": 5, "source": []}', '{"plugins": [{"name": 5}]}'])
        return set_column(table, "payload", values, pa.string()), f"payload of row {row}"
    if choice == 2:
        name = rng.choice(names)
        return table.drop_columns([name]), f"column {name} dropped"
    if choice == 3:
        order = list(range(rows))
        a, b = rng.randrange(rows), rng.randrange(rows)
        how = rng.randrange(3)
        if how == 0:
            order.insert(a, b)
        elif how == 1:
            order[a], order[b] = order[b], order[a]
        else:
            del order[a]
        return table.take(order), f"rows reordered ({how}: {a}, {b})"
    if choice in (4, 5):
        name = rng.choice([n for n in names if n != "payload"])
        values = table.column(name).to_pylist()
        row = rng.randrange(rows)
        values[row] = rng.choice([None, 2, 0, -1, 10**18, "no_such_kind", "header", "resumed",
                                  1.5, "x", float("nan")])
        arrow_type = table.schema.field(name).type
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        try:
            column = pa.array(values, arrow_type)
        except (pa.ArrowException, ValueError, TypeError):
            column = pa.array([None if v is None else str(v) for v in values], pa.string())
        return table.set_column(names.index(name), name, column), f"{name} of row {row}"
    if choice == 6:
        row = rng.randrange(1, rows)
        kinds = table.column("kind").to_pylist()
        payloads = table.column("payload").to_pylist()
        kinds[row] = "resumed"
        payloads[row] = orjson.dumps({"from_seq": rng.choice([-10**18, -1e18, -1, 0, 3.5, 5]),
                                      "initial_epoch": 0, "source": "bus"}).decode()
        table = set_column(table, "kind", kinds, pa.string())
        return set_column(table, "payload", payloads, pa.string()), f"row {row} made resumed"
    name = rng.choice(["logs.", "logs.extra", "extra", "logs.loss"])
    if name in names:
        table = table.drop_columns([name])
    return table.append_column(name, pa.array([rng.choice([1, None])] * rows)), f"{name} added"


def write_parquet(rng: random.Random, table: pa.Table, where: Path) -> tuple[Path, str]:
    """``table`` as a Parquet log: one file, or a directory of segments (named as a writer
    names them, or not), sometimes with a file damaged or something else in the directory."""
    how = rng.randrange(5)
    if how == 0:
        path = where.with_suffix(".parquet")
        pq.write_table(table, path)
        return path, "one file"
    where.mkdir()
    rows = table.num_rows
    cuts = sorted(rng.sample(range(1, rows), min(rows - 1, rng.randrange(1, 4))))
    start = 0
    for end in [*cuts, rows]:
        part = table.slice(start, end - start)
        first, last = rng.choice([(start, end - 1), (start, end - 1), (0, end - 1),
                                  (rng.randrange(60), rng.randrange(60))])
        pq.write_table(part, where / f"seg-{first:012d}-{last:012d}.parquet")
        start = end
    what = f"segments cut at {cuts}"
    if how == 3:
        victim = rng.choice(sorted(where.iterdir()))
        data = bytearray(victim.read_bytes())
        if rng.random() < 0.3:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        victim.write_bytes(bytes(data))
        what += f", {victim.name} damaged"
    elif how == 4:
        junk = where / f"seg-{rng.randrange(60):012d}-{rng.randrange(60, 99):012d}.parquet"
        kind = rng.choice(["fifo", "directory", "empty", "text", "dangling link",
                           "link to itself"])
        if kind == "fifo":
            os.mkfifo(junk)
        elif kind == "directory":
            junk.mkdir()
        elif kind == "dangling link":
            junk.symlink_to(where / "nowhere")
        elif kind == "link to itself":
            junk.symlink_to(junk)
        else:
            junk.write_bytes(b"" if kind == "empty" else b"not parquet at all")
        what += f", a {kind} as {junk.name}"
    return where, what


def copy_file_or_fifo(source: str, target: str) -> None:
    if stat.S_ISFIFO(os.lstat(source).st_mode):
        os.mkfifo(target)  # shutil copies no FIFO
    else:
        shutil.copy2(source, target)


def resume_a_copy(path: Path) -> None:
    """A bus resumes from a copy of the log (resuming appends to it)."""
    copy = path.with_name(f"resumed-{path.name}")
    if path.is_dir():
        shutil.copytree(path, copy, symlinks=True, copy_function=copy_file_or_fifo)
    else:
        shutil.copy(path, copy)
    try:
        Bus(plugins(), log=copy, learning_rate=0.1, resume=True).close()
    finally:
        shutil.rmtree(copy) if copy.is_dir() else copy.unlink()


def outcomes(path: Path, *, resume: bool) -> list[tuple[str, BaseException | None]]:
    """What each reader did with the log at ``path`` (and a resuming bus, with ``resume``):
    None for success, or its error."""
    done = []
    calls = dict(readers(path))
    if resume:
        calls["Bus(resume=True)"] = lambda: resume_a_copy(path)
    for name, read in calls.items():
        try:
            quietly(read)
        except Exception as exc:  # noqa: BLE001 - what is being counted
            done.append((name, exc))
        else:
            done.append((name, None))
    return done


class MutationReport:
    """Cases run, outcomes by type, and every error from outside the project's family."""

    def __init__(self) -> None:
        self.cases = 0
        self.outcomes: Counter[str] = Counter()
        self.foreign: list[str] = []

    def add(self, case: str, path: Path, *, resume: bool) -> None:
        self.cases += 1
        for name, exc in outcomes(path, resume=resume):
            self.outcomes["ok" if exc is None else type(exc).__name__] += 1
            if exc is not None and not isinstance(exc, EventBusError):
                where = traceback.extract_tb(exc.__traceback__)[-1]
                self.foreign.append(f"{case}: {name}: {type(exc).__name__}: {exc!s:.200} "
                                    f"({Path(where.filename).name}:{where.lineno})")

    def check(self, label: str) -> None:
        print(f"\n{label}: {self.cases} mutated logs, {sum(self.outcomes.values())} reads; "
              f"outcomes {dict(self.outcomes)}; errors from outside the project: "
              f"{len(self.foreign)}")
        assert not self.foreign, "\n".join(self.foreign[:20])
        assert self.outcomes["ok"] and self.outcomes["LogCorruptError"]  # both happen


#: Cases per format: 1,250 in all, about 9 seconds here (the suite's time is kept under four
#: minutes); EVENTBUS_MUTATION_CASES=20000 before a release tries twenty times as many.
JSONL_CASES = int(os.environ.get("EVENTBUS_MUTATION_CASES", "1000"))
PARQUET_CASES = JSONL_CASES // 4


class TestMutatedLogs:
    def test_jsonl_logs(self, tmp_path, made):
        """Real logs (a run, a resumed run) damaged once to three times: every reader, and
        a bus resuming from it, succeeds or raises an error of the project's family."""
        rng = random.Random(20260601)
        report = MutationReport()
        for case in range(JSONL_CASES):
            data = made["resumed" if case % 3 == 0 else "jsonl"]
            done = []
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                data, what = mutate_jsonl(rng, data)
                done.append(what)
            path = jsonl_log(tmp_path, data, f"case{case}.jsonl")
            # A resume writes a copy: every fourth case, to keep the test's time down.
            report.add(f"case {case} ({'; '.join(done)})", path, resume=case % 4 == 1)
            path.unlink()
        report.check("JSON Lines")

    def test_parquet_logs(self, tmp_path, made, fifos_let_go):
        """A real run's table changed (types, values, rows, columns) and written as one file
        or as segments, some damaged on disk or beside a FIFO, a directory, a link."""
        rng = random.Random(20260602)
        report = MutationReport()
        for case in range(PARQUET_CASES):
            table, done = made["table"], []
            for _ in range(rng.choice([1, 1, 2])):
                table, what = mutate_parquet_table(rng, table)
                done.append(what)
            path, how = write_parquet(rng, table, tmp_path / f"case{case}")
            report.add(f"case {case} ({'; '.join(done)}; {how})", path, resume=case % 4 == 1)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        report.check("Parquet")


# --- long lines -----------------------------------------------------------------------------


class CountedBytes(bytes):
    """Bytes read from a file that count what every concatenation with them copies: a reader
    that adds each new piece to the line so far copies the line again per piece."""

    copied = 0

    def __add__(self, other: bytes) -> bytes:
        CountedBytes.copied += len(self) + len(other)
        return bytes(self) + bytes(other)

    def __radd__(self, other: bytes) -> bytes:
        CountedBytes.copied += len(self) + len(other)
        return bytes(other) + bytes(self)


class CountingFile:
    def __init__(self, file) -> None:
        self.file = file

    def read(self, size: int = -1) -> bytes:
        return CountedBytes(self.file.read(size))

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


@pytest.fixture
def small_pieces(monkeypatch):
    """Readers read 4 KiB at a time, through files that count the bytes copied."""
    monkeypatch.setattr(jsonl, "_CHUNK", 4096)
    monkeypatch.setattr(jsonl, "open", lambda path, mode="r": CountingFile(open(path, mode)),
                        raising=False)
    CountedBytes.copied = 0


class TestLongLines:
    @pytest.mark.parametrize("read", ["read_log", "find_kinds", "last_seq"])
    @pytest.mark.parametrize("torn", [True, False])
    def test_a_long_line_is_joined_once(self, tmp_path, made, small_pieces, read, torn):
        """A line of 256 pieces costs about its own size in copies, not 128 times it (25 to
        200 MB torn lines took 2 to 57 s to read)."""
        long = b'{"v":1,"run_id":"r","seq":99,"kind":"warning","time":1.0,"message":"' + \
            b"x" * (1 << 20) + (b"" if torn else b'"}\n')
        path = jsonl_log(tmp_path, made["jsonl"] + long)
        if read == "read_log":
            quietly(lambda: list(read_log(path)))
        elif read == "find_kinds":
            find_kinds(path, ["warning", "epoch_end"])
        else:
            last_seq(path)
        assert CountedBytes.copied <= 2 * path.stat().st_size, CountedBytes.copied

    def test_long_lines_across_pieces_read_back_whole(self, tmp_path, made, small_pieces):
        """Lines of many pieces, whole or torn: the readers see them as they are."""
        message = "y" * 50_000
        record = r.Warning(run_id="r", seq=1000, message=message, source="test")
        path = jsonl_log(tmp_path, made["jsonl"] + orjson.dumps(record.model_dump()) + b"\n")
        back = list(read_log(path))
        assert back[-1].message == message
        assert last_seq(path) == 1000
        assert [f["seq"] for f in find_kinds(path, ["warning"])] == [1000]
        path.write_bytes(path.read_bytes() + b'{"v":1,"kind":"warning","message":"' + b"z" *
                         30_000)
        with pytest.warns(jsonl.TornLogWarning, match="incomplete"):
            assert len(list(read_log(path))) == len(back)
        assert last_seq(path) == 1000

    @pytest.mark.parametrize("where", ["middle", "torn end"])
    def test_a_line_longer_than_the_cap_is_corrupt(self, tmp_path, made, monkeypatch, where):
        """A line over jsonl.MAX_LINE_BYTES (64 MiB; here 64 KiB) is no record, whole or
        torn: every reader says so, with its line, without holding it whole."""
        monkeypatch.setattr(jsonl, "_CHUNK", 4096)
        monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 64 << 10)
        lines = made["jsonl"].splitlines(keepends=True)
        long = b'{"v":1,"kind":"warning","message":"' + b"x" * (100 << 10)
        if where == "middle":
            lines.insert(4, long + b'"}\n')
            number = 5
        else:
            lines.append(long)
            number = len(lines)
        path = jsonl_log(tmp_path, b"".join(lines))
        reads = {"read_log": lambda: list(read_log(path)),
                 "find_kinds": lambda: find_kinds(path, ["resumed"]),
                 "last_seq": lambda: last_seq(path)}
        for name, read in reads.items():
            if where == "middle" and name == "last_seq":
                assert read() == orjson.loads(lines[-1])["seq"]  # read from the end: not
                continue  # as far as the long line
            with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{number}: line is "
                                                      r"longer than 65,536 bytes") as info:
                read()
            assert info.value.line == number

    @pytest.mark.parametrize("search", ["find_kinds", "find_kinds_from_end"])
    def test_lines_of_nul_bytes_are_damage_to_the_searches_too(self, tmp_path, made,
                                                                monkeypatch, search):
        """A tail of NUL lines (a sparse hole with a newline every 60 MiB: a terabyte stores a
        few megabytes) holds no kind's name: the searches a resume makes passed over it to
        its end, hours of reading, before the reader refused the log anyway. They refuse it
        at its first such line, as the reader does."""
        monkeypatch.setattr(jsonl, "_CHUNK", 4096)
        monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 64 << 10)
        lines = made["jsonl"].splitlines(keepends=True)
        number = len(lines) + 1
        path = jsonl_log(tmp_path, b"".join(lines) + (b"\0" * (60 << 10) + b"\n") * 20)
        with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{number}: line is not "
                                                  r"JSON") as info:
            quietly(lambda: list(read_log(path)))
        with pytest.raises(LogCorruptError, match=r"events\.jsonl:\d+: line is not JSON: it "
                                                  r"holds a NUL byte") as info:
            list(getattr(jsonl, search)(path, ["resumed"]))
        # The first such line, or from the end the last: a line of NULs either way.
        assert info.value.line == (number if search == "find_kinds" else number + 19)

    def test_a_torn_last_line_of_nul_bytes_is_a_crash_s_tail(self, tmp_path, made):
        """A crash or a power cut can leave the last line as zeros, with no line break: the
        reader passes it over as a torn tail, and so do a resume's searches (refusing it
        there would refuse a log the readers take, and leave a rank out of a resume)."""
        path = jsonl_log(tmp_path, made["jsonl"] + b"\0" * 4096)
        records = quietly(lambda: list(read_log(path)))
        assert [f["seq"] for f in find_kinds(path, ["epoch_end"])] == \
            [rec.seq for rec in records if rec.kind == "epoch_end"]
        assert [f["seq"] for f in jsonl.find_kinds_from_end(path, ["epoch_end"])] == \
            [rec.seq for rec in records if rec.kind == "epoch_end"][::-1]
        assert resume_point(path) is not None

    def test_the_cap_is_generous(self):
        assert jsonl.MAX_LINE_BYTES == 64 << 20


# --- a live Parquet log being compacted -----------------------------------------------------


def batch_record(seq: int) -> dict:
    return r.BatchEnd(run_id="run", seq=seq, epoch=0, batch=seq, step=seq,
                      logs={"loss": 1.0 / seq}).model_dump()


HEADER = r.Header(run_id="run", seq=0, time=1.0, created="2026-01-01T00:00:00+00:00",
                  library="eventbus test")


class TestReadingWhileCompacting:
    def test_segments_compacted_away_mid_read_are_read_from_the_merged_file(
            self, tmp_path, monkeypatch):
        """The reader listed three segments and read the first; before it opened the
        second, compaction merged them all and removed it. The read goes on in the merged
        file, each record once (it failed with "[Errno 2]": a healthy log called damaged)."""
        path = tmp_path / "events.parquet"
        writer = ParquetWriter(path)
        writer.write(HEADER.model_dump())
        for seq in range(1, 10):
            writer.write(batch_record(seq))
            if seq % 3 == 0:
                writer.flush()
        assert len(list(path.glob("seg-*.parquet"))) == 3
        opened = parquet._open

        def compacting_before_the_second(file):
            calls.append(file)
            if len(calls) == 2:
                compact(path)
            return opened(file)

        monkeypatch.setattr(parquet, "_open", compacting_before_the_second)
        calls: list[Path] = []
        assert [rec.seq for rec in read_log(path)] == list(range(10))
        for seq in (10, 11):
            writer.write(batch_record(seq))
            writer.flush()
        calls = []
        assert last_seq(path) == 11
        for seq in (12, 13):
            writer.write(batch_record(seq))
            writer.flush()
        calls = []
        assert [f["seq"] for f in find_kinds(path, ["header", "batch_end"])] == list(range(14))
        writer.close()
        assert [rec.seq for rec in read_log(path)] == list(range(14))

    def test_a_reader_looping_while_a_writer_flushes_and_closes(self, tmp_path):
        """A real writer on its own thread: many segments, then close() merges them (the
        merged-file path, then compact() once the log is appended to), again and again.
        Every read sees a healthy log: its records so far, each once, in order."""
        path = tmp_path / "events.parquet"
        done = threading.Event()
        failure: list[BaseException] = []

        def write() -> None:
            try:
                seq = 0
                for round_ in range(6):
                    writer = ParquetWriter(path, append=round_ > 0, chunk_records=2)
                    for _ in range(40):
                        writer.write(HEADER.model_dump() if seq == 0 else batch_record(seq))
                        seq += 1
                        if seq % 2 == 0:
                            writer.flush()
                    writer.close()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failure.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=write)
        thread.start()
        reads = 0
        try:
            while not path.exists() or not list(path.glob("seg-*")):
                time.sleep(0.001)
            while not done.is_set():
                seqs = [rec.seq for rec in read_log(path)]
                assert seqs == list(range(len(seqs)))
                top = last_seq(path)
                assert top is not None and top >= seqs[-1]
                found = [f["seq"] for f in find_kinds(path, ["header"])]
                assert found == [0]
                reads += 1
        finally:
            thread.join()
        assert not failure, failure
        assert reads > 0
        assert [rec.seq for rec in read_log(path)] == list(range(240))


# --- things that are not logs ---------------------------------------------------------------


class TestNotALog:
    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
    def test_a_fifo_among_the_segments_is_refused_not_waited_on(self, tmp_path, made,
                                                                 fifos_let_go):
        """Opening a FIFO waits for a writer: forever. Only regular files are opened."""
        segment = parquet_log(tmp_path, made["table"])
        fifo = segment.parent / "seg-000000000050-000000000060.parquet"
        os.mkfifo(fifo)
        single = tmp_path / "single.parquet"
        os.mkfifo(single)
        for path, named in ((segment.parent, fifo), (single, single)):
            for read in readers(path).values():
                with pytest.raises(LogCorruptError, match=rf"{named.name}: not a regular file "
                                                          r"\(a FIFO\)"):
                    read()

    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
    def test_a_resume_refusing_a_fifo_changes_nothing(self, tmp_path, made, fifos_let_go):
        """The refused resume closed its writer, which compacted the log: it opened the
        FIFO (a wait for a writer, forever) and would have rewritten the refused log."""
        segment = parquet_log(tmp_path, made["table"])
        fifo = segment.parent / "seg-000000000100-000000000200.parquet"
        os.mkfifo(fifo)
        before = sorted(p.name for p in segment.parent.iterdir())
        started = time.monotonic()
        with pytest.raises(LogCorruptError, match="not a regular file"):
            Bus([], log=segment.parent, resume=True)
        assert time.monotonic() - started < 1.5  # the fixture would free a wait after 2 s
        assert sorted(p.name for p in segment.parent.iterdir()) == before
        for _, _, names in os.walk(tmp_path):
            assert not [n for n in names if n.endswith(".tmp")]

    def test_a_directory_named_jsonl_is_not_read_as_parquet(self, tmp_path, made):
        """A .jsonl path that is a directory was taken for a Parquet log: read, resumed and
        written as segments under a name that says JSON Lines."""
        directory = tmp_path / "events.jsonl"
        directory.mkdir()
        pq.write_table(made["table"], directory / "seg-000000000000-000000000042.parquet")
        for read in readers(directory).values():
            with pytest.raises(LogError, match=r"events\.jsonl: is a directory, but a \.jsonl "
                                               r"log is a file"):
                read()
        for call in (lambda: is_parquet(directory), lambda: open_writer(directory),
                     lambda: Bus([], log=directory, resume=True)):
            with pytest.raises(LogError, match="is a directory"):
                call()
        assert is_parquet(tmp_path) and is_parquet(tmp_path / "new.parquet")
        assert not is_parquet(tmp_path / "new.jsonl")

    def test_more_metric_names_than_a_parquet_log_takes_is_a_clear_error(self, tmp_path,
                                                                         made):
        """10**6 metric names in one line took 75 s and 6 GB to write as Parquet, and left
        a file Parquet readers refuse (its footer is over their limits); now the writer
        refuses such records at once, naming the limit. JSON Lines holds them."""
        from eventbus.convert import convert

        too_many = {f"m{i}": 0.5 for i in range(parquet.MAX_METRIC_COLUMNS + 1)}
        data, _ = edit_line(made["jsonl"], "epoch_end", {"logs": too_many})
        source = jsonl_log(tmp_path, data)
        assert len(list(read_log(source))[0].plugins) == 3  # a readable JSON Lines log
        with pytest.raises(LogError, match=r"10,00\d names, more than "
                                           r"parquet\.MAX_METRIC_COLUMNS \(10,000\)"):
            convert(source, tmp_path / "out.parquet", to="parquet")
        fewer = {f"m{i}": 0.5 for i in range(parquet.MAX_METRIC_COLUMNS - 10)}
        data, _ = edit_line(made["jsonl"], "epoch_end", {"logs": fewer})
        convert(jsonl_log(tmp_path, data, "fewer.jsonl"), tmp_path / "fewer.parquet",
                to="parquet")
        epoch_end = next(rec for rec in read_log(tmp_path / "fewer.parquet")
                         if rec.kind == "epoch_end")
        assert len(epoch_end.logs) == parquet.MAX_METRIC_COLUMNS - 10
        assert math.isclose(epoch_end.logs["m0"], 0.5)


class TestSegmentNamesThatLie:
    """A segment's name orders it; what a compaction keeps is told by the seqs in the files,
    as the reader reads them. A name claiming more than its file holds made a resumed run's
    close drop every later segment, the resumed run's records too."""

    @staticmethod
    def crashed(path: Path, records: int = 8) -> None:
        """A log of ``records`` records in three segments, left as a kill leaves it."""
        writer = ParquetWriter(path)
        kept = path.parent / "kept"
        kept.mkdir()
        writer.write(r.Header(run_id="run", seq=0, created="2026-01-01T00:00:00+00:00",
                              library="eventbus test").model_dump())
        for seq in range(1, records):
            writer.write(r.EpochEnd(run_id="run", seq=seq, epoch=seq - 1,
                                    logs={"loss": 1.0 / seq}).model_dump())
            if seq in (3, 5, records - 1):
                writer.flush()
        for segment in path.glob("seg-*.parquet"):
            shutil.copy(segment, kept / segment.name)
        writer.close()
        shutil.rmtree(path)
        kept.rename(path)

    @pytest.mark.parametrize("name", ["seg-000000000000-999999999999.parquet",
                                      "seg-000000000000-000000000006.parquet"])
    def test_a_name_claiming_more_loses_nothing(self, tmp_path, name):
        path = tmp_path / "events.parquet"
        self.crashed(path)
        first = sorted(path.glob("seg-*.parquet"))[0]
        shutil.copy(first, path / name)  # seqs 0 to 3 under a name claiming more
        assert [rec.seq for rec in read_log(path)] == list(range(8))
        writer = ParquetWriter(path, append=True)
        writer.write(r.Resumed(run_id="run", seq=8, from_seq=7, initial_epoch=7).model_dump())
        writer.close()
        assert [rec.seq for rec in read_log(path)] == list(range(9))
        assert sorted(pq.read_table(path).column("seq").to_pylist()) == list(range(9))

    def test_a_file_passed_over_by_its_name_stays_unless_all_of_it_is_merged(self, tmp_path):
        """A file whose name says its rows are read already, passed over by the reader as by
        the compaction, goes only once its seqs show that: one holding more stays."""
        path = tmp_path / "events.parquet"
        self.crashed(path)
        table = pq.read_table(sorted(path.glob("seg-*.parquet"))[0])
        extra = set_column(table, "seq", [0, 1, 2, 50])
        pq.write_table(extra, path / "seg-000000000000-000000000002.parquet")
        compact(path)
        left = sorted(p.name for p in path.glob("seg-*.parquet"))
        assert left == ["seg-000000000000-000000000002.parquet",
                        "seg-000000000000-000000000007.parquet"]
        assert [rec.seq for rec in read_log(path)] == list(range(8))

    def test_a_fifo_passed_over_is_neither_opened_nor_removed(self, tmp_path, fifos_let_go):
        path = tmp_path / "events.parquet"
        self.crashed(path)
        os.mkfifo(path / "seg-000000000000-000000000001.parquet")
        compact(path)
        assert sorted(p.name for p in path.glob("seg-*.parquet")) == [
            "seg-000000000000-000000000001.parquet", "seg-000000000000-000000000007.parquet"]
