"""Running a training worker to the end through SIGKILLs, for the crash tests.

A worker prints ``started at epoch N`` once its bus is built (and has resumed), then a line for
each event it has just published (``train_begin``, ``epoch_begin 3``, ``batch_begin 3 0``,
``batch_end 3 0``, ``epoch_end 3``, ``train_end``), and ``done`` at the very end. After each line
but ``done`` it waits for a line on its stdin; at the end of its stdin (a run on its own, with
stdin from /dev/null) it does not wait.

:func:`kill_until_done` answers every line, except that it SIGKILLs the worker instead of
answering once the worker has printed the event chosen for that attempt. The worker is killed
exactly there, while it waits, however loaded the machine is (the Parquet writer's background
thread still runs meanwhile, so a segment may be half written). The chosen events come from the
uninterrupted run, in the order it published them, so each attempt is killed further on than the
one before, and the run ends after exactly one attempt more than there are kills.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def running(argv: list[str], *, answer: bool = False,
            timeout: float = 120) -> Iterator[subprocess.Popen[str]]:
    """A worker started with text pipes (stdin too if it is to be ``answer``-ed, else
    /dev/null); killed after ``timeout`` seconds, so that a hung worker fails the test instead of
    hanging the suite; killed if still running, and its pipes closed, after."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if answer else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        yield proc
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()


def events_of(stdout: str) -> list[str]:
    """The events a worker run on its own printed, in order (without ``started`` and ``done``)."""
    lines = stdout.splitlines()
    assert lines[0].startswith("started") and lines[-1] == "done", stdout
    return lines[1:-1]


def kill_points(rng: random.Random, events: Sequence[str], *, most: int = 3) -> list[int]:
    """1 to ``most`` positions in ``events``, distinct and in order: where to kill the run."""
    return sorted(rng.sample(range(len(events)), rng.randint(1, most)))


def kill_until_done(argv: list[str], events: Sequence[str], points: Sequence[int]) -> int:
    """Start ``argv`` again and again until it prints ``done``; returns the kills.

    Attempt ``i`` is SIGKILLed once it has printed ``events[points[i]]`` (or an event after it,
    should it resume past that one); the attempt after the last point runs to the end. An event
    the uninterrupted run did not publish, or a worker that fails, fails the caller, the latter
    with its stderr.
    """
    position = {event: i for i, event in enumerate(events)}
    kills = 0
    for point in [*points, None]:
        with running(argv, answer=True) as proc:
            line = proc.stdout.readline()
            assert line.startswith("started"), (line, proc.stderr.read())
            proc.stdin.write("\n")
            proc.stdin.flush()
            for line in iter(proc.stdout.readline, ""):  # "" once the worker is gone
                event = line.rstrip("\n")
                if event == "done":
                    break
                assert event in position, f"not an event of the uninterrupted run: {event!r}"
                if point is not None and position[event] >= point:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    break
                proc.stdin.write("\n")
                proc.stdin.flush()
            else:
                proc.wait()
                raise AssertionError(f"the worker ended without done (status "
                                     f"{proc.returncode}): {proc.stderr.read()}")
            if event == "done":
                proc.stdin.close()
                assert proc.wait() == 0, proc.stderr.read()
                return kills
    raise AssertionError("unreachable: the attempt after the last kill point is never killed")
