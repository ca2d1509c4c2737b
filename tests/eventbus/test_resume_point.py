"""``effective.resume_point`` finds where a JSON Lines run goes on with less of the log
searched: the ``resumed`` records through all of it, the records a run goes on after from its
end (``jsonl.find_kinds_from_end``). It must be the point a search of everything finds, on
real crashed-and-resumed runs and on any lines, read in pieces of any size.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_effective import crash_and_resume, crashed_runs, cut, line_count

from eventbus import jsonl
from eventbus.effective import ResumePoint, is_abandoned, resume_point, spans_of
from eventbus.errors import LogCorruptError
from eventbus.jsonl import find_kinds, find_kinds_from_end

from hypothesis_profiles import FILES, examples

KINDS = ("resumed", "train_begin", "epoch_end", "train_end")


def resume_point_by_full_search(log) -> ResumePoint:
    """The point as found by searching the whole log for every kind (as it was found before
    the search from the end): the last train_begin, epoch_end or train_end outside the
    abandoned spans, and the epoch of the last epoch_end among them."""
    found = find_kinds(log, KINDS)
    spans = spans_of(found)
    kept = [f for f in found if f.get("kind") in KINDS[1:] and type(f.get("seq")) is int
            and not is_abandoned(f["seq"], spans)]
    ends = [f.get("epoch") for f in kept if f["kind"] == "epoch_end"]
    return ResumePoint(spans, kept[-1]["seq"] if kept else None,
                       ends[-1] if ends and type(ends[-1]) is int else None)
pieces = st.sampled_from([16, 97, 300, 4096, 1 << 18])


@st.composite
def logs(draw: st.DrawFn) -> list[bytes]:
    """Lines as a log may hold them: records of the kinds wanted and of others, their seq the
    line's index or of any type, a ``resumed`` record abandoning some of the lines before
    it, a kind spelled with an escape, or damage."""
    out = []
    for seq in range(draw(st.integers(0, 60))):
        choice = draw(st.sampled_from(["record", "record", "record", "escaped", "junk"]))
        if choice == "junk":
            out.append(draw(st.sampled_from([b'["epoch_end", 1]', b"epoch_end", b"{"])))
            continue
        kind = draw(st.sampled_from([*KINDS, "batch_end", "stop_training"]))
        record = {"v": 1, "seq": draw(st.just(seq) | st.none() | st.text(max_size=2)),
                  "kind": kind, "epoch": draw(st.integers(0, 5) | st.none()),
                  "logs": {"loss": 0.5}}
        if kind == "resumed":  # abandons the records between from_seq and its own seq
            record["from_seq"] = seq - draw(st.integers(1, 20))
        line = orjson.dumps(record)
        if choice == "escaped":  # its first letter as a \\u escape: a byte search misses it
            line = line.replace(b'"kind":"' + kind[:1].encode(),
                                b'"kind":"\\u%04x' % ord(kind[0]), 1)
        out.append(line)
    return out


@examples(FILES)
@given(body=logs(), newline=st.booleans(),
       torn=st.sampled_from([b"", b'{"v":1,"kind":"epoch_end","seq":9', b'"epoch_end']),
       piece=pieces)
def test_found_from_the_end_is_found_reversed(tmp_path_factory, body, newline, torn, piece):
    path = tmp_path_factory.mktemp("lines") / "events.jsonl"
    path.write_bytes(b"\n".join(body) + (b"\n" if newline and body else b"") + torn)
    chunk = jsonl._CHUNK
    jsonl._CHUNK = piece
    try:
        # A damaged line either search reads is an error in both (the same lines hold a
        # needle); the point, found from the end, reads only what it needs: damage before it
        # is the full read's to find (the resume reads up to the point with the reader).
        assert outcome(lambda: list(find_kinds_from_end(path, KINDS))) == \
            outcome(lambda: find_kinds(path, KINDS)[::-1])
        full = outcome(lambda: resume_point_by_full_search(path))
        if full != "damaged":
            assert resume_point(path) == full
        elif outcome(lambda: resume_point(path)) == "damaged":
            assert full == "damaged"
    finally:
        jsonl._CHUNK = chunk


def outcome(search):
    """What ``search()`` gives, or "damaged" for the LogCorruptError of a damaged line."""
    try:
        return search()
    except LogCorruptError as error:
        assert "line is not" in str(error) and error.line is not None
        return "damaged"


@pytest.mark.filterwarnings("ignore:bus. resume. the run in .* had finished")
@examples(FILES)  # a run crashed, resumed and searched
@given(run=crashed_runs(), at=st.floats(0, 1), piece=pieces)
def test_the_point_of_a_crashed_and_resumed_run_is_the_full_searchs(
        tmp_path_factory, run, at, piece):
    path = tmp_path_factory.mktemp("run") / "events.jsonl"
    crash_and_resume(path, run)
    cut(path, 1 + round(at * (line_count(path) - 1)))
    chunk = jsonl._CHUNK
    jsonl._CHUNK = piece
    try:
        assert resume_point(path) == resume_point_by_full_search(path)
    finally:
        jsonl._CHUNK = chunk


@pytest.mark.parametrize("where", ["middle", "torn end"])
def test_a_line_longer_than_the_cap_is_corrupt_wherever_it_is(tmp_path, monkeypatch, where):
    """The search from the end reads only the log's end, but the one for ``resumed`` reads all
    of it: a line over the cap is refused with its line number wherever it is."""
    monkeypatch.setattr(jsonl, "_CHUNK", 4096)
    monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 64 << 10)
    records = [orjson.dumps({"v": 1, "seq": seq, "kind": kind, "epoch": 0})
               for seq, kind in enumerate(["header", "train_begin", "epoch_end", "epoch_end"])]
    long = b'{"v":1,"kind":"warning","message":"' + b"x" * (100 << 10)
    if where == "middle":
        records.insert(2, long + b'"}')
        number, data = 3, b"\n".join(records) + b"\n"
    else:
        number, data = len(records) + 1, b"\n".join(records) + b"\n" + long
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{number}: line is longer"):
        resume_point(path)
    if where == "torn end":
        with pytest.raises(LogCorruptError, match=rf"events\.jsonl:{number}: line is longer"):
            next(find_kinds_from_end(path, KINDS))
    else:  # read from the end: not as far as the long line
        assert next(find_kinds_from_end(path, KINDS))["seq"] == 3


@examples(FILES)
@given(lengths=st.lists(st.integers(0, 260), max_size=30), newline=st.booleans(),
       piece=st.sampled_from([16, 64, 128]))
def test_lines_at_the_cap_are_taken_and_refused_as_from_the_start(
        tmp_path_factory, lengths, newline, piece):
    """A line of the cap's length is read, one byte more refused, naming the same line, read
    from either end in pieces smaller or larger than the line (never larger than the cap, as
    256 KiB pieces are beside the 64 MiB cap: a line within one piece is not measured)."""
    lines = [b'{"seq":%d,"kind":"epoch_end","x":"' % i for i in range(len(lengths))]
    lines = [line + b"y" * max(0, length - len(line) - 2) + b'"}'
             for line, length in zip(lines, lengths)]
    path = tmp_path_factory.mktemp("cap") / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if newline and lines else b""))
    saved = jsonl._CHUNK, jsonl.MAX_LINE_BYTES
    jsonl._CHUNK, jsonl.MAX_LINE_BYTES = piece, 200
    try:
        too_long = [i + 1 for i, line in enumerate(lines) if len(line) > 200]
        if not too_long:
            assert list(find_kinds_from_end(path, KINDS)) == find_kinds(path, KINDS)[::-1]
            return
        with pytest.raises(LogCorruptError) as forward:
            find_kinds(path, KINDS)
        with pytest.raises(LogCorruptError) as backward:
            list(find_kinds_from_end(path, KINDS))
        assert (forward.value.line, backward.value.line) == (too_long[0], too_long[-1])
    finally:
        jsonl._CHUNK, jsonl.MAX_LINE_BYTES = saved
