"""Parsing an untrusted file in a child process first, so a C library cannot hang the run.

HDF5 is a C library: a checkpoint with one byte changed can send it into a loop that never
ends (a backup folder someone else can write, a log's checkpoint on resume), and no Python
timeout can stop code that never returns to Python. So the parse is done first in a forked
child under a deadline (:func:`run_isolated`): if the child finishes, the same bytes parse in
this process the same way; if it loops, it is killed and the file is refused with a
:class:`~eventbus.errors.CheckpointError`; if the library crashes, only the child dies.

The child reports only a small JSON value or the error it met (never a pickle: what comes back
from a process that parsed hostile bytes is data). Where ``os.fork`` is missing (Windows) the
work runs in this process, as before.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import select
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any

from eventbus.errors import CheckpointError

__all__ = ["BASE_SECONDS", "parse_seconds", "run_isolated"]

#: True in the child: work it runs is not isolated again.
_in_child = False
#: The most a child may report (a verdict, an error message): more is a damaged child.
_MOST_REPORTED = 1 << 16


#: The deadline of any parse, before the time its size adds (a module attribute: tests and
#: users with very slow disks may change it).
BASE_SECONDS = 30.0


def parse_seconds(size: int) -> float:
    """The deadline for parsing a file of ``size`` bytes: :data:`BASE_SECONDS`, plus a second
    per 50 MB (reading from a slow disk), far beyond any real checkpoint's parse."""
    return BASE_SECONDS + size / 50e6


def run_isolated(work: Callable[[], Any], *, path: str, seconds: float,
                 descriptor: int | None = None) -> Any:
    """``work()``'s value (JSON), computed in a forked child that must finish within
    ``seconds``: a child that does not is killed, and one that dies is reported, both as a
    :class:`CheckpointError` naming ``path``. An error ``work`` raises in the child is raised
    here as its kind (``CheckpointError`` with its dataset, or ``OSError``) with its message.

    ``descriptor``: the open file ``work`` reads. The child shares its offset with this process;
    the offset is put back once the child is done, or a buffered reader here would go on
    reading from where the child left it, past the bytes it holds.
    """
    if _in_child or not hasattr(os, "fork"):
        return work()
    offset = None if descriptor is None else os.lseek(descriptor, 0, os.SEEK_CUR)
    try:
        return _run_in_child(work, path, seconds)
    finally:
        if offset is not None:
            os.lseek(descriptor, offset, os.SEEK_SET)  # type: ignore[arg-type]


def _run_in_child(work: Callable[[], Any], path: str, seconds: float) -> Any:
    read, write = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that fork() in a process with threads may deadlock the child;
            # the child runs only the parse (its modules already imported), and a child that
            # hangs for any reason is killed at the deadline.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        os.close(read)
        os.close(write)
        raise
    if pid == 0:  # pragma: no cover - the child (its coverage is not collected)
        _child(work, read, write, path)
    os.close(write)
    try:
        report, status = _wait(pid, read, time.monotonic() + seconds)
    finally:
        os.close(read)
    if status is None:
        raise CheckpointError(f"{path}: reading it did not finish within {seconds:.0f} s (a "
                              "damaged or crafted file: the HDF5 library loops on it)",
                              path=path)
    if os.WIFSIGNALED(status):
        raise CheckpointError(f"{path}: the HDF5 library crashed reading it (signal "
                              f"{os.WTERMSIG(status)}): a damaged or crafted file", path=path)
    try:
        result = json.loads(report)
        if not isinstance(result, dict):
            raise ValueError(result)
    except ValueError:
        raise CheckpointError(f"{path}: reading it ended without a verdict (exit status "
                              f"{os.waitstatus_to_exitcode(status)})", path=path) from None
    if "error" in result:
        if result["error"] == "CheckpointError":
            raise CheckpointError(str(result.get("message")), path=path,
                                  dataset=result.get("dataset"),
                                  misfit=result.get("misfit") is True)
        raise OSError(str(result.get("message")))
    return result.get("value")


def _child(work: Callable[[], Any], read: int, write: int,
           path: str) -> None:  # pragma: no cover
    """Run ``work`` and report: never returns (``os._exit``), so nothing of the parent runs
    here (no atexit handler, no buffered output flushed twice)."""
    global _in_child
    code = 1
    try:
        _in_child = True
        os.close(read)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child, not a handler
        # A library that crashes the child is the parent's to report, as a CheckpointError:
        # not with a dump of the child's stack on the user's terminal (faulthandler, which
        # pytest and python -X faulthandler turn on, is inherited by the fork).
        faulthandler.disable()
        try:
            out: dict[str, Any] = {"value": work()}
        except CheckpointError as exc:
            out = {"error": "CheckpointError", "message": str(exc),
                   "dataset": getattr(exc, "dataset", None),
                   "misfit": getattr(exc, "misfit", False) is True}
        except OSError as exc:
            out = {"error": "OSError", "message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - what the library raised, named
            out = {"error": "CheckpointError", "message": f"{path}: cannot be read as a "
                   f"checkpoint ({type(exc).__name__}: {exc})"}
        data = json.dumps(out).encode()[:_MOST_REPORTED]
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(write, data):]
        code = 0
    finally:
        os._exit(code)


def _wait(pid: int, read: int, deadline: float) -> tuple[bytes, int | None]:
    """What the child reported and its wait status; a status of None when it was killed at
    the deadline (or when this process is interrupted: the child is not left running)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([read], [], [], left)
            if not ready:
                continue
            chunk = os.read(read, 1 << 16)
            if not chunk:  # the child closed its end: it is exiting
                return b"".join(chunks), os.waitpid(pid, 0)[1]
            size += len(chunk)
            if size <= _MOST_REPORTED:
                chunks.append(chunk)
    except BaseException:
        _kill(pid)
        raise
    _kill(pid)
    return b"", None


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.waitpid(pid, 0)
