"""The records of a run as it went on: a resumed run's abandoned partial epochs left out.

A ``resumed`` record says the run went on from ``from_seq``: the records after that and before
the ``resumed`` record were of an epoch the loop ran again, and they stay in the file
(nothing is rewritten). A record is therefore abandoned when a later ``resumed`` record's
``from_seq`` is below its ``seq``.

:func:`read_effective` streams a log so: the ``resumed`` records are found first by a quick
search (:func:`find_kinds`: a byte search for JSON Lines, three columns for Parquet), then the
log is read once, each record kept or dropped as it comes. Replay, resume and audit read this
way, so a long run is never all in memory.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .log import is_parquet, read_log
from .records import Record, Resumed

__all__ = ["ResumePoint", "abandoned_spans", "effective_records", "find_kinds", "is_abandoned",
           "read_effective", "resume_point", "spans_of"]

Spans = list[tuple[int, int]]
# A resumed run goes on after the last of these (and the decisions it caused).
_RESUME_POINTS = ("train_begin", "epoch_end", "train_end")


def find_kinds(log: str | os.PathLike[str], kinds: Collection[str]) -> list[dict[str, Any]]:
    """The records of ``kinds`` in a log file, in order, as unchecked dicts holding at least
    ``kind``, ``seq`` and the fields that are not metrics; found without reading the rest."""
    if is_parquet(log):
        from .parquet import find_kinds as find
    else:
        from .jsonl import find_kinds as find
    return find(log, kinds)


def abandoned_spans(marks: Iterable[tuple[int, int]]) -> Spans:
    """The seqs a log's ``resumed`` records abandon, as sorted, disjoint open spans.

    ``marks``: ``(seq, from_seq)`` of each ``resumed`` record. A record whose seq lies strictly
    between a mark's ``from_seq`` and its ``seq`` is abandoned.
    """
    spans: Spans = []
    for low, high in sorted((from_seq, seq) for seq, from_seq in marks if from_seq < seq - 1):
        if spans and low < spans[-1][1]:  # overlapping open spans: merge
            spans[-1] = (spans[-1][0], max(spans[-1][1], high))
        else:
            spans.append((low, high))
    return spans


def is_abandoned(seq: int, spans: Spans) -> bool:
    i = bisect_right(spans, (seq, seq)) - 1  # the last span starting at or below seq
    return i >= 0 and spans[i][0] < seq < spans[i][1]


def spans_of(found: Iterable[dict[str, Any]]) -> Spans:
    """The abandoned spans of a log, from the records :func:`find_kinds` found in it."""
    marks = []
    for record in found:
        seq, from_seq = record.get("seq"), record.get("from_seq")
        # Only a from_seq the reader takes (an int before the record's own seq): a damaged
        # one, which the reader refuses where it is, must not abandon the header meanwhile.
        if record.get("kind") == "resumed" and type(seq) is int and type(from_seq) is int \
                and 0 <= from_seq < seq:
            marks.append((seq, from_seq))
    return abandoned_spans(marks)


@dataclass(frozen=True)
class ResumePoint:
    """Where a run recorded in a log goes on when resumed."""

    #: The log's abandoned spans (:func:`abandoned_spans`).
    spans: Spans
    #: The seq of its last ``train_begin``, ``epoch_end`` or ``train_end`` outside them: the
    #: run goes on after that record and the decisions it caused. None: none, only the header.
    seq: int | None
    #: The last finished epoch (of the last ``epoch_end`` outside them), or None.
    epoch: int | None


def resume_point(log: str | os.PathLike[str]) -> ResumePoint:
    """Where the run in ``log`` goes on, found by a quick search before the log is read.

    For JSON Lines only the ``resumed`` records are searched through the whole log (the spans
    they abandon can be anywhere); the last record a run goes on after, and the last epoch end,
    are searched from the log's end, where they are (a tenth of a resume less)."""
    if not is_parquet(log):
        return _resume_point_from_end(log)
    found = find_kinds(log, ("resumed", *_RESUME_POINTS))
    spans = spans_of(found)
    kept = [r for r in found if r.get("kind") in _RESUME_POINTS and type(r.get("seq")) is int
            and not is_abandoned(r["seq"], spans)]
    ends = [r.get("epoch") for r in kept if r["kind"] == "epoch_end"]
    return ResumePoint(spans, kept[-1]["seq"] if kept else None,
                       ends[-1] if ends and type(ends[-1]) is int else None)


def _resume_point_from_end(log: str | os.PathLike[str]) -> ResumePoint:
    from .jsonl import find_kinds_from_end

    spans = spans_of(find_kinds(log, ("resumed",)))
    seq = epoch = None
    for found in find_kinds_from_end(log, _RESUME_POINTS):
        at = found.get("seq")
        if type(at) is not int or is_abandoned(at, spans):
            continue
        if seq is None:
            seq = at
        if found["kind"] == "epoch_end":  # the last finished epoch
            epoch = found.get("epoch")
            epoch = epoch if type(epoch) is int else None
            break
    return ResumePoint(spans, seq, epoch)


def _kept(records: Iterable[Record], spans: Spans) -> Iterator[Record]:
    if not spans:
        return iter(records)
    return (record for record in records if not is_abandoned(record.seq, spans))


def effective_records(records: Iterable[Record]) -> list[Record]:
    """The run as it went on, from records in memory (see :func:`read_effective` for a log)."""
    records = list(records)
    marks = [(r.seq, r.from_seq) for r in records if isinstance(r, Resumed)]
    return list(_kept(records, abandoned_spans(marks)))


def read_effective(log: str | os.PathLike[str] | Iterable[Record], *, validate: bool = False,
                   kinds: Collection[str] | None = None, spans: Spans | None = None,
                   stop: int | None = None) -> Iterator[Record]:
    """Every record of the run as it went on, header first, read as :func:`~eventbus.read_log`
    reads (``validate``, ``kinds``), streamed from a log file or taken from records in memory.

    ``spans``: the log's :func:`abandoned_spans`, when the caller has found them already.
    ``stop`` (a log file and ``kinds`` only): the read ends at the first record of the run of a
    kind left out whose seq is above ``stop`` (see ``jsonl.read_jsonl``).
    """
    if stop is not None and kinds is not None and isinstance(log, (str, os.PathLike)) \
            and os.path.exists(log):
        if spans is None:
            spans = spans_of(find_kinds(log, ("resumed",)))
        found = spans or []

        def kept(seq: int) -> bool:
            return not is_abandoned(seq, found)

        if is_parquet(log):
            from .parquet import read_parquet as read
        else:
            from .jsonl import read_jsonl as read
        yield from _kept(read(log, validate=validate, kinds=kinds, stop=stop, kept=kept), found)
        return
    if not isinstance(log, (str, os.PathLike)):
        selected = effective_records(log)
        yield from (selected if kinds is None else (r for r in selected if r.kind in kinds))
        return
    if spans is None and os.path.exists(log):  # else the reader raises its own error
        spans = spans_of(find_kinds(log, ("resumed",)))
    yield from _kept(read_log(log, validate=validate, kinds=kinds), spans or [])
