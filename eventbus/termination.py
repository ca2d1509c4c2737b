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
or the user's is left as it is. Only in the main thread, where Python runs signal handlers.
"""

from __future__ import annotations

import os
import signal
import threading
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
            self._previous = signal.signal(signal.SIGTERM, _raise)
        except (ValueError, OSError):  # no signals here (an embedded interpreter)
            self._previous = None

    def exit(self, error: BaseException | None) -> None:
        """Put the default back; after a :class:`Terminated`, end the process by SIGTERM (the
        caller has closed the bus)."""
        if self._previous is None:
            return
        previous, self._previous = self._previous, None
        if signal.getsignal(signal.SIGTERM) is _raise:
            signal.signal(signal.SIGTERM, previous)
        if isinstance(error, Terminated):
            os.kill(os.getpid(), signal.SIGTERM)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum} (SIGTERM): the bus is closed before the process ends")
