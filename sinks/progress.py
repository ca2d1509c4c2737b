"""How progress looks: Keras's numbers, a bar line that fits, metrics on lines of their own.

:class:`plugins.ProgbarLogger` decides what to show; this module makes the text and draws it:

- :func:`metric_items` and :func:`wrap`: ``name: value`` items in Keras's number format, packed
  into lines of at most a given width; an item never straddles two lines unless it alone is wider
  than a line, so nothing is cut.
- :func:`bar_line`: title, counts, bar, ETA (or the time taken) and time per step on one line
  that fits the width: the bar shrinks, then goes, before anything else does.
- :func:`plain_line`: the same facts as one ``" - "``-joined line, for files, CI logs and logging.
- :class:`LiveBlock`: a block of lines redrawn in place on a terminal (carriage return, cursor up,
  erase below). tqdm redraws one line; metrics wrapped onto several lines need a block. A
  message printed meanwhile (:func:`make_room`) erases the block first; the next redraw puts it
  back below the message.
- :func:`notebook_tqdm`: tqdm's notebook bar where it can draw (a Jupyter kernel with
  ipywidgets), the choice ``tqdm.auto`` makes, made at each call rather than once at import.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

# A line's width in columns, as the audit's text measures it: a CJK character takes two.
from eventbus import terminal
from eventbus.terminal import char_columns, columns

__all__ = ["LiveBlock", "bar_line", "columns", "cut", "format_number", "format_value", "make_room",
           "metric_items", "notebook_tqdm", "plain_line", "terminal_size", "wrap"]

#: The separator between metrics, Keras's.
SEP = " - "
#: Keras's bar is 20 columns; here it is at most that, less where the line would not fit.
BAR_WIDTH = 20
#: A bar narrower than this says nothing: the line goes without one.
MIN_BAR = 5


def format_number(value: float) -> str:
    """Keras's progress-bar format: 4 decimals above 1e-3 in magnitude, else scientific."""
    return f"{value:.4f}" if abs(value) > 1e-3 else f"{value:.4e}"


def format_value(value: Any) -> str:
    """A metric's value: a number as :func:`format_number`, a vector as ``[0.5000 0.6000]``."""
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(format_value(v) for v in value) + "]"
    try:
        return format_number(float(value))
    except (TypeError, ValueError):
        return str(value)


def metric_items(values: Mapping[str, Any]) -> list[str]:
    """``["loss: 0.1234", ...]`` in the mapping's order."""
    return [f"{name}: {format_value(value)}" for name, value in values.items()]




def cut(text: str, width: int) -> str:
    """The longest start of ``text`` that takes at most ``width`` columns."""
    if text.isascii():
        return text[:max(0, width)]
    used = 0
    for end, char in enumerate(text):
        used += char_columns(char)
        if used > width:
            return text[:end]
    return text


def _break(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` columns, broken at its spaces, and inside a word
    only where the word is wider than a line (``textwrap.wrap``'s rule, in columns)."""
    if text.isascii():
        return textwrap.wrap(text, width, break_on_hyphens=False)
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and columns(line) + 1 + columns(word) <= width:
            line += " " + word
            continue
        if line:
            lines.append(line)
        while columns(word) > width:
            head = cut(word, width) or word[0]  # a wide character alone on a 1-column line
            lines.append(head)
            word = word[len(head):]
        line = word
    if line:
        lines.append(line)
    return lines


def wrap(items: Sequence[str], width: int) -> list[str]:
    """``items`` joined by ``" - "`` into lines of at most ``width`` columns (at least 1).

    An item goes whole onto the line that has room for it, else onto the next; an item wider
    than a line by itself gets lines of its own, broken at its spaces (``name:`` from a long
    vector's numbers), and inside a word only where a word is wider than a line.
    """
    width = max(1, width)
    lines: list[str] = []
    line = ""
    for item in items:
        if line and columns(line) + len(SEP) + columns(item) <= width:
            line += SEP + item
            continue
        if line:
            lines.append(line)
        if columns(item) <= width:
            line = item
        else:  # its pieces alone on their lines, so the next item does not read as its part
            lines.extend(_break(item, width))
            line = ""
    if line:
        lines.append(line)
    return lines


def format_duration(seconds: float) -> str:
    """Keras's ETA format: ``42s``, ``3:05``, ``1:02:03``."""
    whole = int(max(0.0, seconds))  # Keras's %d: truncated
    if seconds > 3600:
        return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    if seconds > 60:
        return f"{whole // 60}:{whole % 60:02d}"
    return f"{whole}s"


def format_per_unit(seconds: float, unit: str) -> str:
    """Keras's time per step: ``2s/step``, ``35ms/step``, ``80us/step``."""
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.0f}s/{unit}"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/{unit}"
    return f"{seconds * 1e6:.0f}us/{unit}"


def _count(count: int, target: int | None) -> str:
    if target:
        return f"{count:>{len(str(target))}d}/{target}"
    return str(count)


def bar_line(title: str, count: int, target: int | None, *, elapsed: float, per_unit: float,
             unit: str, width: int, finished: bool, unicode: bool = True,
             color: bool = False) -> str:
    """``Epoch 3/10: 54/120 ━━━━━━━━━━━━━━━━━━━━ ETA 3s 21ms/step`` in at most ``width`` columns.

    Finished, the ETA becomes the time taken (``4s``). Without a target, the count has no total
    and there is no bar. Where the line does not fit, the bar shrinks, then goes, then the time per
    step, then the time; what is left is cut at the width (only a title wider than the line).
    ``color``: Keras's colours for the bar (escape codes take no columns).
    """
    counted = _count(count, target) if target else f"{count} {unit}{'s' if count != 1 else ''}"
    if finished or not target:
        when = f"{elapsed:.0f}s"
    else:
        when = "ETA " + format_duration(per_unit * (target - count))
    rate = format_per_unit(per_unit, unit) if count else ""
    words = [f"{title}:", counted]
    tail = [t for t in (when, rate) if t]
    room = min(BAR_WIDTH, width - columns(" ".join([*words, *tail])) - 1)  # less the bar's space
    if target and room >= MIN_BAR:
        return " ".join([*words, _bar(count / target, room, unicode, color), *tail])
    for kept in (tail, tail[:1], []):
        line = " ".join([*words, *kept])
        if columns(line) <= width:
            return line
    return cut(line, width)


def _bar(fraction: float, width: int, unicode: bool, color: bool) -> str:
    done = max(0, min(width, int(width * fraction)))
    if not unicode:  # Keras 2's ``[====>.....]``, for consoles that cannot show the line
        head = ">" if 0 < done < width else ""
        return "=" * (done - len(head)) + head + "." * (width - done)
    if not color:
        return "━" * done + "─" * (width - done)
    return (f"\x1b[32m{'━' * done}\x1b[0m" if done else "") + \
        f"\x1b[37m{'━' * (width - done)}\x1b[0m"


def plain_line(title: str, count: int, target: int | None, *, elapsed: float, per_unit: float,
               unit: str, finished: bool, items: Iterable[str]) -> str:
    """``Epoch 3/10 - 54/120 steps - 2.1s - ETA 3s - 21ms/step - loss: 0.3120``: one line, no
    control characters, for files, CI logs and logging (finished: no ETA)."""
    parts = [title]
    if count:
        parts.append(f"{count}/{target} {unit}s" if target else f"{count} {unit}s")
    parts.append(f"{elapsed:.1f}s")
    if count:
        if target and not finished:
            parts.append("ETA " + format_duration(per_unit * (target - count)))
        parts.append(format_per_unit(per_unit, unit))
    parts.extend(items)
    return SEP.join(parts)


def terminal_size(out: IO[str]) -> tuple[int, int]:
    """The columns and rows of the terminal ``out`` writes to (the environment's, or 80x24,
    where it has none)."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (AttributeError, ValueError, OSError):  # no descriptor, closed, not a terminal
        size = shutil.get_terminal_size((80, 24))
    columns, rows = size
    return (columns if columns > 0 else 80), (rows if rows > 0 else 24)


def can_encode(out: IO[str], text: str) -> bool:
    """Whether ``out``'s encoding can write ``text`` (an ASCII console cannot write ``━``)."""
    encoding = getattr(out, "encoding", None)
    if not encoding:
        return True
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class LiveBlock:
    """Lines redrawn in place on a terminal: each draw goes back to the block's first line and
    erases to the end of the screen before writing, so a block may grow or shrink. The cursor
    stays at the end of the block's last line until :meth:`draw` with ``final``, which leaves the
    block on screen and moves below it.
    """

    def __init__(self, out: IO[str]):
        self.out = terminal.unguarded(out)  # its own writes never erase it
        self.rows = 0  # lines of the block on screen now
        self.lines: Sequence[str] | None = None  # as it was last drawn, while it is live

    def _back(self) -> str:
        """Back to the block's first column and erase it (nothing when none is drawn)."""
        if not self.rows:
            return ""
        return "\r" + (f"\x1b[{self.rows - 1}A" if self.rows > 1 else "") + "\x1b[J"

    def draw(self, lines: Sequence[str], *, final: bool = False) -> None:
        back = self._back() or terminal.close_open_line()
        text = back + "\n".join(lines) + ("\n" if final else "")
        self.rows = 0 if final else len(lines)
        self.lines = None if final else lines
        terminal.set_live(self, not final)
        self.out.write(text)
        self.out.flush()

    def watch(self) -> None:
        """The block is about to be drawn (an epoch began): text written before its first draw
        is watched as once it is drawn, so a line left open (``print(".", end="")``) puts the
        block below it rather than on it, where the next write's erasing took the text too."""
        if not self.rows:
            terminal.set_live(self, True)

    def redraw(self) -> None:
        """Draw the block again as it last was (after a message erased it), if it is live; one
        watched and not drawn yet is watched again."""
        if self.lines is not None and not self.rows:
            self.draw(self.lines)
        elif self.lines is None:
            self.watch()

    def clear(self) -> None:
        """Erase the block; the next draw starts where it began (below a message printed in
        its place)."""
        if self.rows:
            self.out.write(self._back())
            self.out.flush()
            self.rows = 0
        terminal.set_live(self, False)

    def end(self) -> None:
        """Leave the block as it stands and move below it (a run that stopped mid-epoch)."""
        if self.rows:
            self.out.write("\n")
            self.out.flush()
            self.rows = 0
        self.lines = None
        terminal.set_live(self, False)


def make_room(out: IO[str]) -> None:
    """Before a message is written to ``out``: erase the live block drawn there, if any."""
    terminal.make_room(out)


def notebook_tqdm() -> Any:
    """tqdm's notebook bar class in a Jupyter kernel that has ipywidgets, else None (the
    caller falls back to plain lines). Decided at each call, unlike ``tqdm.auto``."""
    if "ipykernel" not in sys.modules:
        return None
    try:
        from tqdm import notebook
    except Exception:  # a tqdm without it, or an IPython that fails to import
        return None
    return notebook.tqdm if getattr(notebook, "IProgress", None) is not None else None
