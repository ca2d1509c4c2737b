"""The seam where a bus agrees with others: several processes of one training job.

A bus given a :class:`Coordinator` (``Bus(..., coordinator=...)``) consults it at four points,
and nowhere else:

- registering a plugin: ``admits(name)`` (a sink that writes once for the job runs on one
  process only);
- writing the header: ``header_meta()`` is added to its ``meta``;
- a stop (a plugin's ``stop_training`` decision, or ``bus.stop_training = True``):
  ``hold_stop(decision)`` returning True holds it as a request until the epoch ends, so no
  process leaves a step the others are in;
- an epoch's end: ``epoch_logs(epoch, logs)`` before the ``epoch_end`` is recorded (metrics
  averaged over the processes, so each decides on the same value), and ``agree(epoch,
  cause_seq)`` after its plugins ran: the decisions the processes agreed on, which the bus
  records and applies, and whether every process stops now.

:class:`eventbus.integrations.distributed.DistributedBus` is the bus with the coordinator of
``torch.distributed`` ranks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from .records import Decision, StopTraining

__all__ = ["Agreement", "Coordinator"]


class Agreement:
    """What the processes agreed at an epoch's end."""

    __slots__ = ("decisions", "stop")

    def __init__(self, decisions: list[Decision] | None = None, stop: bool = False):
        #: Decisions to record and apply on this process (made outside its plugins).
        self.decisions = decisions or []
        #: Every process stops at this epoch's end.
        self.stop = stop


@runtime_checkable
class Coordinator(Protocol):
    """How a bus takes part in a job of several processes (see the module documentation)."""

    def admits(self, name: str) -> bool:
        """Whether a plugin registered under ``name`` runs on this process."""

    def header_meta(self) -> Mapping[str, Any]:
        """Facts about this process and the job for the log header."""

    def hold_stop(self, decision: StopTraining | None) -> bool:
        """True to hold a stop until the processes agree at the epoch's end."""

    def stop_cleared(self) -> None:
        """A new fit starts, or the loop cleared ``stop_training``: forget a held request."""

    def epoch_logs(self, epoch: int, logs: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The logs of an epoch's end as this process records them."""

    def agree(self, epoch: int, cause_seq: int) -> Agreement:
        """Agree with the other processes once the epoch's plugins have run."""
