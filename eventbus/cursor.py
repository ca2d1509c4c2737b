"""Where a run is: the one state machine of its position.

The loop's methods, ``publish``, ``feed`` (replay and resume) and resume itself all move the run
through these transitions, so a rule about the run's position is written once:

- a fit begins (``train_begin``) and ends (``train_end``); a resumed run's repeated
  ``train_begin``, and a finished run's repeated ``train_end``, are not published again;
- an epoch begins, and ends once: a second ``epoch_end`` for it would advance every patience and
  cooldown again;
- a training batch that ends advances the step;
- evaluation inside a fit belongs to the fit's epoch, outside it to none;
- after a stop, a loop (Keras's ``fit``) ends the epoch in progress and publishes nothing more
  but ``train_end`` (:func:`after_stop`, which replay follows).
"""

from __future__ import annotations

from typing import Any

from .errors import EventError

__all__ = ["Cursor", "after_stop"]


class Cursor:
    """The run's position: epoch, step, whether a fit is under way."""

    __slots__ = ("ended", "epoch", "floor", "in_train", "initial_epoch", "resumed",
                 "skip_train_begin", "skip_train_end", "step")

    def __init__(self) -> None:
        #: The epoch in progress (from the last ``epoch_begin``).
        self.epoch: int | None = None
        #: Training batches finished, across epochs.
        self.step = 0
        self.in_train = False
        #: The epoch of the last ``epoch_end``, until the next ``epoch_begin``.
        self.ended: int | None = None
        # A resumed run: the loop's repeated begin (and a finished run's end) are not published.
        self.skip_train_begin = False
        self.skip_train_end = False
        #: True once a recorded run was resumed; it goes on from ``initial_epoch``.
        self.resumed = False
        self.initial_epoch = 0
        #: The first epoch the resumed fit may begin (the log has the ones before); None once
        #: that fit ends or another begins.
        self.floor: int | None = None

    # --- the loop ----------------------------------------------------------------------------

    def train_begin(self) -> bool:
        """A fit starts. False when it is a resumed run's ``train_begin``, which the log already
        has: it is not published, and the state the resume restored stands."""
        self.in_train = True
        if self.skip_train_begin:  # the restored position stands, the last ended epoch too
            self.skip_train_begin = False
            return False
        self.ended = self.floor = None
        return True

    def train_end(self) -> bool:
        """A fit ends. False after resuming a finished run that trained no further epoch."""
        if self.skip_train_end:
            self.skip_train_end = False
            self.in_train = False
            return False
        return True

    def trained(self) -> None:
        """The fit's ``train_end`` was published."""
        self.in_train = False
        self.floor = None

    def check_epoch_begin(self, epoch: int) -> None:
        """Refuse, in a resumed fit, an epoch the log has already finished: its row, its
        records and every plugin's counting would be there twice (a loop that starts at 0
        again, a framework resumed from an older checkpoint than the log)."""
        floor = self.floor
        if floor is not None and epoch < floor:
            raise EventError(
                f"epoch_begin: epoch {epoch} has already ended in the run this bus resumed, "
                f"which goes on from epoch {floor} (bus.initial_epoch); begin the loop there "
                f"(range(bus.initial_epoch, epochs)), or resume the framework from the "
                f"checkpoint of epoch {floor - 1}'s end; when the framework's newest checkpoint "
                f"is older (a kill while it was written), resume the bus to it: Bus(..., "
                f"resume=True, resume_at_most={epoch - 1}). A new fit (its own train_begin) "
                "counts from 0 again", event="epoch_begin", field="epoch")

    def epoch_begin(self, epoch: int) -> None:
        self.epoch = epoch
        self.ended = None
        self.skip_train_end = False  # a resumed finished run trained on: its end is new

    def check_epoch_end(self, epoch: int) -> None:
        """Refuse a second end of one epoch: plugins count epochs by their ends."""
        if epoch == self.ended:
            raise EventError(f"epoch_end: epoch {epoch} has already ended; publish "
                             f"epoch_begin({epoch + 1}) before ending another epoch",
                             event="epoch_end", field="epoch")

    def epoch_ended(self, epoch: int) -> None:
        self.ended = epoch

    def eval_epoch(self) -> int | None:
        """The epoch an evaluation belongs to: the fit's, or None outside a fit."""
        return self.epoch if self.in_train else None

    # --- records fed again (replay, resume) -----------------------------------------------------

    def replayed(self, record: Any) -> bool:
        """Move to where a recorded observation leaves the run; True when it starts a new fit
        (which starts unstopped, as it did live)."""
        kind = record.kind
        if kind == "batch_end" or kind == "batch_begin":
            self.epoch = record.epoch
            self.step = record.step + (kind == "batch_end")
        elif kind == "epoch_begin":
            self.epoch_begin(record.epoch)
        elif kind == "epoch_end":
            self.ended = record.epoch
        elif kind == "train_begin":
            self.in_train = True
            self.ended = None
            return True
        elif kind == "train_end":
            self.in_train = False
        return False

    def resume_at(self, finished: int | None, *, began: bool, ended: bool) -> None:
        """Go on after the last finished epoch of a recorded run. The loop then runs unchanged:
        its ``train_begin`` must not reset the restored state, and a finished run's
        ``train_end`` is not published twice."""
        self.skip_train_begin = began
        self.skip_train_end = ended
        self.in_train = began and not ended
        self.epoch = self.ended = finished
        self.initial_epoch = self.floor = finished + 1 if finished is not None else 0
        self.resumed = True


def after_stop(record: Any, stop_epoch: int) -> bool:
    """Whether a loop that stopped during ``stop_epoch`` would no longer publish ``record``.

    As Keras's fit: the batch loop ends at once, the epoch still ends (evaluation and
    ``epoch_end``), no further epoch begins, and ``train_end`` comes last.
    """
    if record.kind == "train_end":
        return False
    if record.kind in ("batch_begin", "batch_end", "epoch_begin"):
        return True
    epoch = getattr(record, "epoch", None)
    return epoch is None or epoch > stop_epoch
