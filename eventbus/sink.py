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
training never stops for a sink.

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

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import Run

__all__ = ["RecordDict", "Sink"]


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
