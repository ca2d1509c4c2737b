"""One writer per log path: an exclusive lock on the file (or a Parquet log's directory).

Two writers on one log lose data without an error: JSON Lines lines interleave mid-file, the
second Parquet writer removes the first's segments, and both resumed runs record the epochs
again. A writer therefore takes ``flock(LOCK_EX | LOCK_NB)`` on what it writes before it changes
anything, and a second writer, in another process or the same one, is refused with a
:class:`LogInUseError` naming the path and, where the system says, the process holding it. The
lock goes with the writer's file descriptor: closed, or the process killed, and it is free.

A plain ``Bus`` on each rank of a process group, all writing one path, is the common way to hit
this; the error says so (``DistributedBus`` gives each rank its own log).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LogError

__all__ = ["LogInUseError", "lock_exclusive"]

try:  # not on Windows: there, the lock is not taken
    import fcntl
except ImportError:  # pragma: no cover - POSIX everywhere this project is tested
    fcntl = None  # type: ignore[assignment]


class LogInUseError(LogError):
    """Another writer holds the log: a log path has one writer."""

    def __init__(self, message: str, *, path: str, holder: int | None):
        super().__init__(message, path=path)
        #: The process id holding the lock, where the system says (None otherwise).
        self.holder = holder


def lock_exclusive(fd: int, path: str | os.PathLike[str]) -> None:
    """Take the exclusive lock on ``fd`` (the log at ``path``) or raise LogInUseError."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        raise LogInUseError(_message(Path(path), holder), path=os.fspath(path),
                            holder=holder) from None


def _message(path: Path, holder: int | None) -> str:
    who = "this process" if holder == os.getpid() else \
        f"process {holder}" if holder is not None else "another writer"
    text = (f"{path}: the log is being written by {who}; a log path has one writer (open "
            "another path, or close the other writer first)")
    ranks = os.environ.get("WORLD_SIZE", "")
    if ranks.isdigit() and int(ranks) > 1 or "RANK" in os.environ:
        text += (". This process is one rank of a process group: a plain Bus on every rank "
                 "writes one path; use eventbus.integrations.distributed.DistributedBus, which "
                 "gives each rank its own log (events.rank{R}.jsonl)")
    else:
        text += (" (a plain Bus on each rank of a process group writing one path does this; "
                 "DistributedBus gives each rank its own log)")
    return text


def _holder(fd: int) -> int | None:
    """The pid holding a lock on ``fd``'s file, from /proc/locks (Linux); None elsewhere."""
    try:
        stat = os.fstat(fd)
        with open("/proc/locks", encoding="ascii") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 08:01:123456 0 EOF"; "->" marks a waiter.
        if len(fields) >= 6 and "->" not in fields[1] and fields[1] == "FLOCK" and \
                fields[5] == inode:
            try:
                return int(fields[4])
            except ValueError:
                return None
    return None
