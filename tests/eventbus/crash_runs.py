"""Running a training worker to the end through SIGKILLs, for the crash tests.

A worker prints ``started ...`` once its bus is built, ``epoch N`` after each epoch and ``done``
at the end. The first attempt is always killed (in its third epoch, at a random batch, so a
fast machine cannot finish first); later ones after a random delay, until one finishes.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
from collections.abc import Iterator


@contextlib.contextmanager
def running(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A worker started with text pipes; killed if still running, and its pipes closed, after."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def kill_until_done(argv: list[str], rng: random.Random, *, later_delay: float,
                    attempts: int = 40) -> int:
    """Start ``argv`` again and again, killing it, until it prints ``done``; returns the kills.

    ``later_delay``: the longest wait before killing an attempt after the first (about the
    length of a clean run from ``started``). A worker that exits non-zero fails the caller with
    its stderr.
    """
    kills = 0
    for _ in range(attempts):
        with running(argv) as proc:
            line = proc.stdout.readline()
            assert line.startswith("started"), (line, proc.stderr.read())
            if kills == 0:
                for line in iter(proc.stdout.readline, ""):  # "" once the worker is gone
                    if line.startswith("epoch 1"):
                        break
                time.sleep(rng.uniform(0.0, 0.03))
            else:
                time.sleep(rng.uniform(0.0, later_delay))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stderr
        if "done" in stdout:
            return kills
    raise AssertionError(f"the worker never finished in {attempts} attempts")
