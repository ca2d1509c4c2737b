"""A terminal for tests: a child process in a real pseudo-terminal, and a screen that renders what
it wrote as a VT100-style terminal would.

:func:`run_in_pty` runs a Python script in a pty of the given size (pexpect) and returns the
bytes it wrote. :class:`Screen` interprets them: printable characters with auto-wrap at the
last column (xterm's pending wrap), carriage return, line feed, backspace, and the CSI
sequences a progress display uses (cursor up/down/left/right/column/position, erase in display,
erase in line, colours). Any other escape sequence is an error, so a test cannot pass over
output it did not understand. ``wraps`` counts the lines that overflowed the width.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pexpect

_CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")


class Screen:
    """What a ``columns`` x ``rows`` terminal shows, with the lines scrolled off kept above."""

    def __init__(self, columns: int, rows: int):
        self.columns, self.rows = columns, rows
        self.grid = [[" "] * columns for _ in range(rows)]
        self.scrolled: list[str] = []  # lines scrolled off the top
        self.row = self.col = 0
        self.pending = False  # the last column was written: the next character wraps
        self.wraps = 0

    def feed(self, text: str) -> Screen:
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                match = _CSI.match(text, i)
                if match is None:
                    raise AssertionError(f"unknown escape sequence at {text[i:i + 12]!r}")
                self._csi(match.group(1), match.group(2))
                i = match.end()
                continue
            if ch == "\r":
                self.col, self.pending = 0, False
            elif ch == "\n":
                self._line_feed()
                self.pending = False
            elif ch == "\b":
                self.col, self.pending = max(0, self.col - 1), False
            elif ch < " ":
                raise AssertionError(f"unexpected control character {ch!r}")
            else:
                self._put(ch)
            i += 1
        return self

    def _put(self, ch: str) -> None:
        if self.pending:
            self.wraps += 1
            self.col, self.pending = 0, False
            self._line_feed()
        self.grid[self.row][self.col] = ch
        if self.col == self.columns - 1:
            self.pending = True
        else:
            self.col += 1

    def _line_feed(self) -> None:
        if self.row == self.rows - 1:
            self.scrolled.append("".join(self.grid.pop(0)).rstrip())
            self.grid.append([" "] * self.columns)
        else:
            self.row += 1

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # private modes (cursor visibility): nothing on screen
        numbers = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = numbers[0] if numbers else 0
        self.pending = False
        if final == "m":
            return
        if final == "A":
            self.row = max(0, self.row - max(1, n))
        elif final == "B":
            self.row = min(self.rows - 1, self.row + max(1, n))
        elif final == "C":
            self.col = min(self.columns - 1, self.col + max(1, n))
        elif final == "D":
            self.col = max(0, self.col - max(1, n))
        elif final == "G":
            self.col = min(self.columns - 1, max(1, n) - 1)
        elif final == "H":
            row, col = (numbers + [1, 1])[:2]
            self.row, self.col = min(self.rows, max(1, row)) - 1, min(self.columns, max(1, col)) - 1
        elif final == "K":
            start, stop = {0: (self.col, self.columns), 1: (0, self.col + 1),
                           2: (0, self.columns)}[n]
            self.grid[self.row][start:stop] = [" "] * (stop - start)
        elif final == "J":
            if n == 0:
                self.grid[self.row][self.col:] = [" "] * (self.columns - self.col)
                for r in range(self.row + 1, self.rows):
                    self.grid[r] = [" "] * self.columns
            elif n == 2:
                self.grid = [[" "] * self.columns for _ in range(self.rows)]
            else:
                raise AssertionError(f"unexpected erase ESC[{params}J")
        else:
            raise AssertionError(f"unexpected escape sequence ESC[{params}{final}")

    def lines(self) -> list[str]:
        """Everything shown, scrolled-off lines first, without trailing blank lines."""
        out = self.scrolled + ["".join(row).rstrip() for row in self.grid]
        while out and not out[-1]:
            out.pop()
        return out


def run_in_pty(script: str, *, columns: int, rows: int = 24, cwd: Path | None = None,
               timeout: float = 60.0) -> str:
    """Run ``python -c script`` in a pseudo-terminal of ``columns`` x ``rows``; what it wrote."""
    child = pexpect.spawn(sys.executable, ["-c", script], dimensions=(rows, columns),
                          cwd=str(cwd) if cwd else None, encoding="utf-8", timeout=timeout,
                          env={**child_env(), "TERM": "xterm"})
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    return output


def child_env() -> dict[str, str]:
    """The environment of a child process: this checkout first on its path, the terminal's size
    read from the terminal (no COLUMNS or LINES), colours allowed."""
    repo = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    return env
