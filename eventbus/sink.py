"""The one sink contract: where records go, whatever the destination.

Event logs (JSON Lines, Parquet), the CSV table, TensorBoard, HTTP and checkpoint writers all
take the run's records the same way. The bus calls, in this order:

- ``open(run)``: once, before the first record, with a read-only description of the run
  (:class:`~eventbus.run.Run`): resumed or not, the epoch it goes on from, the step, the model
  adapter. A sink never works out on its own whether the run was resumed.
- ``write(record)``: every record of the kinds in ``takes`` (all of them when ``takes`` is
  None), in ``seq`` order, as the plain dict a log stores. Keep it cheap: defer I/O to ``flush``.
  It may return records: outcomes (``checkpoint_saved``) are recorded, decisions (weights to
  restore) recorded and applied, once every sink has the record that caused them.
- ``flush()``: at every epoch end and every decision; ``sync()`` (a flush that reaches the
  disk; by default the flush) at ``train_end``.
- ``close()``: once, at the end. Sinks that take every record (the logs) close last, so they
  hold what the others report as they close. It may return outcomes, as ``write``.

Optional, on a resume: ``catch_up(record, run)``, before ``open``, with each record of the kinds
the sink takes from the log the run resumes from, up to where it goes on, and the run as it
stood at that record. It is for a sink whose destination a crash can leave behind the log (the
process killed between the log's flush and the sink's): it writes what the destination lacks.
TensorBoard has one; a sink without it gets none of the past.

A sink that raises is closed, recorded as ``sink_failed`` and left out for the rest of the run:
training never stops for a sink. A write that fails for a while (a full disk, a quota) is
not such a failure: a built-in writer keeps what it could not write, reports the fault once
(:class:`FailingWrites`) and tries again at the next flush; only ``close()`` gives up, after
trying for :data:`CLOSE_RETRY_SECONDS`, and then raises saying what was lost.

Two optional fast paths, for the batch records whose metrics the bus has checked are finite
floats: a sink that keeps JSON Lines in memory sets ``line_buffer`` to its ``bytearray``, and
the bus appends each such record to it as one encoded line (encoded once for every such sink)
instead of calling ``write``, and calls ``flush()`` when the buffer holds ``buffer_bytes``; a
sink with a ``write_finite(record)`` method gets each such record there instead of ``write``,
its fields in ``records.BATCH_FIELDS`` order (the Parquet log skips its own checks so).

A sink from another package gets each record as a :class:`RecordDict`: the same dict (a copy),
whose fields read as attributes too (``record.kind``), as code written for record objects
expects.

A plugin that is a ``Sink`` (CSVLogger, TensorBoard, RemoteMonitor, ...) is attached as a sink
when it is registered; other sinks are given as ``Bus(log=[...])`` or added by a plugin at
registration (``run.add_sink``).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

from .records import SinkFailed

if TYPE_CHECKING:
    from .run import Run

__all__ = ["CLOSE_RETRY_SECONDS", "TRANSIENT_ERRNOS", "DrainMark", "FailingWrites", "RecordDict",
           "Sink", "drain", "given_up", "is_transient", "keep_trying", "settle_drain"]

T = TypeVar("T")

#: How long a writer's ``close()`` keeps trying to write what a spell of failing writes left,
#: before it gives that up: a disk filled for a moment (another process's temporary files)
#: often has room again within it.
CLOSE_RETRY_SECONDS = 2.0


#: Errors of a disk that may have room again later (full, over quota, a file size limit, a
#: network filesystem's hiccup), as opposed to a path that cannot be written at all.
TRANSIENT_ERRNOS = frozenset(code for code in (
    errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG, errno.EIO, errno.EAGAIN,
    errno.EINTR, getattr(errno, "ETIMEDOUT", None)) if code is not None)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a write failure that may pass (see :data:`TRANSIENT_ERRNOS`)."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def describe_os_error(exc: OSError) -> str:
    """``No space left on device (errno 28, ENOSPC)``: what a person and a search both find."""
    code = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
    return f"{exc.strerror or exc} (errno {exc.errno}{', ' + code if code else ''})"


class FailingWrites:
    """A writer's spell of failing writes (a full disk, a quota, a flaky network filesystem).

    The writer keeps what it could not write and tries again at its next flush; this reports
    the fault once per spell, as a ``sink_failed`` the run records at its next event (so the
    log itself holds it once the disk has room). :meth:`over` ends the spell.
    """

    __slots__ = ("fault",)

    def __init__(self) -> None:
        self.fault: OSError | None = None

    def failed(self, run: Any, sink: str, event: str, exc: OSError, kept: str,
               then: str = "written at the next flush that can") -> None:
        """``exc`` stopped a write of ``sink``; ``kept`` says what waits, ``then`` when it is
        tried again."""
        if self.fault is not None:
            return
        self.fault = exc
        run.report(SinkFailed(sink=sink, event=event, error=type(exc).__name__,
                              message=f"{describe_os_error(exc)}; {kept}, {then}"))

    def over(self) -> None:
        self.fault = None


class DrainMark:
    """Where a :func:`drain` of one buffer began writing (``start``, the file's size then), kept
    until the drain has taken what it wrote out of the buffer. An interrupt can come at any
    line, the accounting's own too: the next drain sees the mark still set and settles it
    first, so bytes that reached the file are never written again."""

    __slots__ = ("start",)

    def __init__(self) -> None:
        self.start: int | None = None


def drain(file: Any, buffer: bytearray, written: Callable[[int], None] | None = None,
          mark: DrainMark | None = None) -> None:
    """Write ``buffer`` to the unbuffered ``file`` (a raw write may be partial); what reached
    the file leaves the buffer, even when a write fails or a KeyboardInterrupt comes between a
    write and its count. What reached it is measured by the file's size, not counted (a count
    cut short would write those bytes twice); ``written(n)`` is told it before the ``n`` bytes
    leave the buffer. An error is raised once the buffer holds only what is left.

    ``mark``: kept by the caller for this buffer, for an interrupt inside the accounting itself
    (see :class:`DrainMark`)."""
    fd = file.fileno()
    if mark is not None and mark.start is not None:
        _settle(fd, buffer, written, mark.start)
    start = os.fstat(fd).st_size
    if mark is not None:
        mark.start = start
    done = 0
    try:
        with memoryview(buffer) as view:
            while done < len(view):
                done += file.write(view[done:])
    finally:
        done = min(max(os.fstat(fd).st_size - start, 0), len(buffer))
        if done:
            if written is not None:
                written(done)
            del buffer[:done]
    if mark is not None:
        mark.start = None


def settle_drain(file: Any, buffer: bytearray, written: Callable[[int], None] | None = None,
                 mark: DrainMark | None = None) -> None:
    """Settle a :func:`drain` of ``buffer`` an interrupt cut (``mark`` still set): the bytes it
    wrote leave the buffer, before anything else is made of what the buffer holds."""
    if mark is not None and mark.start is not None:
        _settle(file.fileno(), buffer, written, mark.start)
        mark.start = None


def _settle(fd: int, buffer: bytearray, written: Callable[[int], None] | None,
            start: int) -> None:
    """A drain from ``start`` was cut before it was done: the bytes it wrote (the file from
    ``start`` on) leave the buffer if they are still at its head. Already taken out, the head
    holds the bytes that follow them, which differ (records carry their sequence number)."""
    size = os.fstat(fd).st_size
    done = min(max(size - start, 0), len(buffer))
    if done and os.pread(fd, done, start) == bytes(buffer[:done]):
        if written is not None:
            written(done)
        del buffer[:done]


def given_up(exc: OSError, what: str) -> OSError:
    """The error a writer's ``close()`` raises for what it kept and could not write, even
    after :func:`keep_trying`: ``what`` (where, and how much) and the cause."""
    return OSError(exc.errno, f"{what} (tried again at close) could not be written: "
                              f"{describe_os_error(exc)}")


def keep_trying(attempt: Callable[[], T], seconds: float | None = None, *,
                transient_only: bool = False) -> T:
    """``attempt()``, called again while it raises OSError, for at most ``seconds`` (by
    default :data:`CLOSE_RETRY_SECONDS`, read at the call; waits of 50 ms doubling to 0.8 s
    between tries); the last error is raised. ``transient_only``: an error that will not pass
    (:func:`is_transient` says no: a path refused for good) is raised at once."""
    deadline = time.monotonic() + (CLOSE_RETRY_SECONDS if seconds is None else seconds)
    wait = 0.05
    while True:
        try:
            return attempt()
        except OSError as exc:
            left = deadline - time.monotonic()
            if left <= 0 or (transient_only and not is_transient(exc)):
                raise
            time.sleep(min(wait, left))
            wait = min(wait * 2, 0.8)


class RecordDict(dict):  # type: ignore[type-arg]
    """A record as a sink of another package gets it: the plain dict a log stores (a copy of
    it), whose fields also read as attributes (``record.kind``, ``record.logs["loss"]``), as
    a record object's do. The built-in sinks get the dict itself: no copy on their path."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"a {self.get('kind')!r} record has no field {name!r}; it "
                                 f"has {', '.join(self)}") from None


def reading_attributes(write: Any) -> Any:
    """``write`` given each record as a :class:`RecordDict`."""
    def write_record(record: dict[str, Any]) -> Any:
        return write(RecordDict(record))
    return write_record


def is_built_in(sink: object) -> bool:
    """Whether ``sink`` is one of this project's (which read records as dicts)."""
    return type(sink).__module__.partition(".")[0] in ("eventbus", "sinks", "plugins")


class Sink:
    """Base class of sinks, and the contract (see the module documentation)."""

    #: The name a sink's failures are recorded under (a plugin's label when it is one).
    name: str = "sink"
    #: The record kinds written to this sink; None: every record (an event log).
    takes: Collection[str] | None = None
    #: The fast path: a JSON Lines buffer the bus appends batch lines to (None: no fast path).
    line_buffer: bytearray | None = None
    #: The size of ``line_buffer`` at which the bus flushes it.
    buffer_bytes: int = 1 << 20

    def open(self, run: Run) -> None:
        """The run starts (or goes on, ``run.resumed``): prepare to write."""

    def write(self, record: dict[str, Any]) -> Any:
        """Take one record; may return outcome or decision records."""
        raise NotImplementedError

    def flush(self) -> None:
        """Hand what is buffered to the destination."""

    def sync(self) -> None:
        """Flush so that it survives a crash of the machine (fsync where that applies)."""
        self.flush()

    def close(self) -> Any:
        """Flush and release; may return outcome records."""
        self.flush()
