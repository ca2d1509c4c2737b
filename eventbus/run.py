"""What a plugin or a sink may know of the run it is part of: a read-only description.

Sinks are opened with it (``Sink.open(run)``) and plugins get it at registration
(``on_attach(run)``). It reads the bus's state as it is now (``step`` grows as batches end), and
offers the few things a part of a run may do besides returning records: report an outcome from
another thread, name a plugin, attach or detach a sink it writes through, and, for a backup,
give back weights kept before a crash. Everything else about the run (stopping, the learning
rate, the weights) changes only through decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .records import Outcome

__all__ = ["Run"]


@runtime_checkable
class Run(Protocol):
    """The run as plugins and sinks see it. Every attribute is read-only."""

    @property
    def run_id(self) -> str:
        """The id every record of the run carries."""

    @property
    def resumed(self) -> bool:
        """True when the run goes on from a log after a crash: a sink then keeps what it wrote
        for the epochs before ``initial_epoch`` and drops what it wrote past that point."""

    @property
    def initial_epoch(self) -> int:
        """The epoch the loop starts from (above 0 only for a resumed run)."""

    @property
    def epoch(self) -> int | None:
        """The epoch in progress."""

    @property
    def step(self) -> int:
        """Training batches finished so far, across epochs."""

    @property
    def learning_rate(self) -> float | None:
        """The current learning rate, if the run has one."""

    @property
    def model(self) -> Any:
        """The model adapter (:mod:`eventbus.model`), or None. Sinks read weights through it."""

    @property
    def logs(self) -> Sequence[str]:
        """The paths of the run's event logs."""

    @property
    def plugins(self) -> Sequence[object]:
        """The plugins of the run, in call order."""

    @property
    def sinks(self) -> Sequence[Any]:
        """The sinks the run writes to."""

    @property
    def snapshots(self) -> Mapping[str, Mapping[str, Any]]:
        """Weights kept by ``snapshot_weights`` decisions, by tag (read-only)."""

    def label(self, plugin: object) -> str:
        """The name ``plugin``'s records carry in this run."""

    def report(self, outcome: Outcome) -> None:
        """Queue an outcome to be recorded on the bus's thread (safe from any thread)."""

    def add_sink(self, sink: Any) -> None:
        """Write the run through ``sink`` as well (ModelCheckpoint adds its checkpoint writer)."""

    def remove_sink(self, sink: Any) -> None:
        """Write to ``sink`` no more, and close it."""

    def keep_weights(self, tag: str, weights: Mapping[str, Any], *,
                     optimizer: Mapping[str, Any] | None = None) -> None:
        """Keep weights under ``tag`` as a ``snapshot_weights`` decision would (a backup gives
        back those kept before a crash)."""

    def restore_weights(self, tag: str, *, source: str) -> None:
        """Put the weights kept under ``tag`` into the model through the bus (as a
        ``restore_weights`` decision is applied), recorded as ``weights_restored``."""

    def recompute(self, plugins: Sequence[object], *, learning_rate: float | None = None) -> Any:
        """A bus of its own for ``plugins`` that writes and applies nothing, as replay's does
        (``feed(record)`` returns their decisions): for a plugin that recomputes decisions
        live, as :mod:`eventbus.shadow` does."""

