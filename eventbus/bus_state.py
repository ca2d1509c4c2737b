"""What a bus tells about the run as it stands: its parts, the control state, the position.

Mixed into :class:`~eventbus.Bus`, the facade whose methods move the run; these only read it
(and set what a loop may set: the stop flag, the learning rate, the model adapter).
"""

from __future__ import annotations

from typing import Any

from .control import Control
from .coordination import Coordinator
from .cursor import Cursor
from .dispatch import Dispatcher
from .engine import Engine
from .recorder import Recorder

__all__ = ["BusState"]


class BusState:
    """The run's state as properties, read from the bus's parts."""

    _engine: Engine
    _cursor: Cursor
    _dispatch: Dispatcher
    _coordinator: Coordinator | None

    @property
    def recorder(self) -> Recorder:
        """The recorder part: envelope, header, sinks (:mod:`eventbus.recorder`)."""
        return self._engine.recorder

    @property
    def control(self) -> Control:
        """The control part: stop flag, learning rate, kept weights (:mod:`eventbus.control`)."""
        return self._engine.control

    @property
    def cursor(self) -> Cursor:
        """The run's position (:mod:`eventbus.cursor`)."""
        return self._cursor

    @property
    def run_id(self) -> str:
        return self._engine.recorder.run_id

    @property
    def model(self) -> Any:
        """The model adapter decisions are applied to (None without one).

        Set after the bus was built (a bridge attaching the model at ``fit``), the adapter gets
        the rate the run has where none could hold it before: a resumed run's trains at the
        rate the log ends with, not at its optimizer's initial one."""
        return self._engine.control.model

    @model.setter
    def model(self, value: Any) -> None:
        self._engine.attach(value)

    @property
    def stop_training(self) -> bool:
        """True once a decision stopped training; the loop reads this."""
        return self._engine.control.stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        if value:
            self._engine.control.request_stop(None)
        else:
            self._clear_stop()

    def _clear_stop(self) -> None:
        self._engine.control.clear_stop()
        if self._coordinator is not None:
            self._coordinator.stop_cleared()

    @property
    def learning_rate(self) -> float | None:
        """The current learning rate: the model adapter's if it has one, else the bus's own."""
        return self._engine.control.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._engine.control.set_learning_rate(value)

    @property
    def logs_learning_rate(self) -> bool:
        """Whether each epoch's logs carry ``learning_rate``: as in Keras, only while a plugin
        that sets the rate (ReduceLROnPlateau, LearningRateScheduler) is on the bus."""
        return self._dispatch.logs_learning_rate

    @property
    def held_warnings(self) -> list[Any]:
        """The warning records a bus that shows none (a replay's) kept, in order."""
        return list(self._engine.held_warnings or ())

    @property
    def snapshots(self) -> dict[str, dict[str, Any]]:
        """Weights kept by ``snapshot_weights`` decisions, by tag (copies, NumPy arrays)."""
        return self._engine.control.snapshots

    @property
    def resumed(self) -> bool:
        """True once a resume has restored a recorded run: the loop goes on from
        ``initial_epoch``, and sinks drop what a crashed attempt wrote past that point."""
        return self._cursor.resumed

    @property
    def initial_epoch(self) -> int:
        """The epoch a loop should start from; above 0 only for a resumed run."""
        return self._cursor.initial_epoch

    @property
    def epoch(self) -> int | None:
        """The epoch in progress (from the last ``epoch_begin``)."""
        return self._cursor.epoch

    @property
    def step(self) -> int:
        """Training batches finished so far, across epochs."""
        return self._cursor.step

    @property
    def seq(self) -> int:
        """The sequence number of the last record."""
        return self._engine.recorder.seq

    @property
    def replaying(self) -> bool:
        """True while recorded events are being fed again (replay, or restoring a resume)."""
        return not self._engine.control.live

    @property
    def history(self) -> Any:
        """The History plugin on this bus (as Keras's ``model.history``)."""
        for plugin in self._dispatch.plugins:
            if any(cls.__name__ == "History" for cls in type(plugin).__mro__):
                return plugin
        raise AttributeError("the bus has no History plugin")
