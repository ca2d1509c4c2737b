"""SIGTERM inside ``with bus:``: the bus closes as on Ctrl-C, then the process ends by SIGTERM.

A scheduler ends a job with SIGTERM and, a grace period later, SIGKILL (Slurm, Kubernetes,
``docker stop``, ``systemctl stop``, a plain ``kill``). Left to its default, SIGTERM ends the
process at once, as a kill does: the records since the last flush, queued HTTP payloads and
TensorBoard's queue are lost, although there was time to keep them. Inside ``with bus:`` a
SIGTERM is raised in the main thread as :class:`Terminated` (a ``KeyboardInterrupt``, so the
bus's interrupt handling at any line applies); the ``with`` closes the bus, and then the signal
is delivered again with its default action, so the process still ends by SIGTERM (its exit
status says so) and nothing above the ``with`` runs on as if training had ended.

Only a default handler is replaced: a framework's own (Lightning ends the fit after the batch)
or the user's is left as it is, and so is one installed after the ``with`` began (Lightning's,
when ``trainer.fit`` runs inside it: it calls the handler it found, which then does nothing).
Only in the main thread, where Python runs signal handlers, and only in the process that made
the ``with``: a child forked inside it (a DataLoader worker, a ``multiprocessing`` process) ends
by SIGTERM as it would have. While the bus closes, a SIGTERM is noted, not raised: the closing
finishes, then the process ends by it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["Terminated", "TerminationGuard"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, received inside ``with bus:``; the bus closes, then the process ends by it."""


class TerminationGuard:
    """SIGTERM as :class:`Terminated` while a ``with bus:`` block runs (see the module)."""

    __slots__ = ("_previous",)

    def __init__(self) -> None:
        self._previous: Any = None

    def enter(self) -> None:
        if not hasattr(signal, "SIGTERM") or \
                threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                return  # someone's own handler: theirs to run
            _state.owner, _state.noted, _state.closing = os.getpid(), False, False
            self._previous = signal.signal(signal.SIGTERM, _raise)
        except (ValueError, OSError):  # no signals here (an embedded interpreter)
            self._previous = None

    @contextlib.contextmanager
    def closing(self, error: BaseException | None) -> Iterator[None]:
        """The block ended (``error``: what ended it) and the bus closes inside this: a
        SIGTERM meanwhile is noted; then :meth:`exit`."""
        if self._previous is not None:
            _state.closing = True
        try:
            yield
        finally:
            self.exit(error)

    def exit(self, error: BaseException | None) -> None:
        """Put the default back; after a SIGTERM (raised in the block, or noted while the bus
        closed), end the process by it (the caller has closed the bus)."""
        if self._previous is None:
            return
        previous, self._previous = self._previous, None
        noted, _state.noted, _state.closing = _state.noted, False, False
        if signal.getsignal(signal.SIGTERM) is _raise:
            signal.signal(signal.SIGTERM, previous)
        if noted or isinstance(error, Terminated):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


class _State:
    """The guard's state, one per process: the process that installed the handler, whether a
    SIGTERM came while the bus closed, and whether it is closing."""

    __slots__ = ("closing", "noted", "owner")

    def __init__(self) -> None:
        self.owner = 0
        self.noted = self.closing = False


_state = _State()


def _raise(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _state.owner:  # a child forked in the block: it has no bus to close
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if signal.getsignal(signal.SIGTERM) is not _raise:
        return  # a handler installed since (Lightning's, in fit) runs this one: it decides
    if _state.closing:
        _state.noted = True  # the closing finishes first
        return
    raise Terminated(f"signal {signum} (SIGTERM): the bus is closed before the process ends")
