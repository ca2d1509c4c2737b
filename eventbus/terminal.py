"""Text from a log, made safe to show on a terminal.

A log is untrusted input (docs/reliability.md): its run_id, a metric name, a reason, a
checkpoint path or the log's own file name can hold characters a terminal acts on instead of
showing: ESC and 8-bit CSI sequences that set the window title, clear the screen, move the
cursor, plant a link (OSC 8) or write the clipboard (OSC 52); a carriage return that overwrites
the start of a line; U+202E, which shows the rest of a line backwards. Every string the command
line writes goes through :func:`printable` (a whole block: its own lines kept) and every field
from a log through :func:`inline` (a line break in it is shown, not obeyed, so a reason cannot
forge a line of output). :func:`json_safe` is the same for ``--json``.

The bus's own warnings go through :func:`warn`: made printable, shown after the live progress
block (:func:`make_room`) is erased, since standard error shares the terminal with it, and
attributed to the user's line that called into the library, not to a line inside it.

Each such character is shown as a visible escape, ``\\x1b`` or ``\\u202e``, as Python's
``repr`` writes it: the text stays readable, and what it held is still there to see. A
backslash is left alone, so a log may spell ``\\x1b`` in plain text too; that shows the same
and does nothing either.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading
import unicodedata
import warnings
from typing import Any

__all__ = ["GuardedStream", "char_columns", "columns", "fit", "inline", "json_safe", "make_room",
           "printable", "set_live", "unguarded", "warn", "width_of"]

# C0 but tab and newline; DEL and C1 (an 8-bit CSI, 0x9b, is ESC [ to many terminals); the
# bidirectional formatting characters (marks, embeddings, overrides, isolates); the Unicode
# line and paragraph separators, which some viewers break lines at; and lone surrogates (a file
# name's undecodable bytes), which a UTF-8 stream refuses to write at all.
_CONTROLS = ("\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
             "\u2066-\u2069\ud800-\udfff")
_BLOCK = re.compile(f"[{_CONTROLS}]")
_FIELD = re.compile(f"[\n{_CONTROLS}]")
# In JSON text C0 is already escaped (the format requires it), and these may occur only inside
# strings, where \\uXXXX means the same character: the data read back is equal.
_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                   "\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab shown as an escape: a block
    of output whose line structure is the caller's own."""
    return _BLOCK.sub(_escape, text)


def inline(value: object) -> str:
    """``str(value)`` to put inside a line: as :func:`printable`, and a newline shown as
    ``\\n`` too, so a field from a log cannot start a line of its own."""
    return _FIELD.sub(_escape, str(value))


def json_safe(text: str) -> str:
    """JSON text (as ``orjson`` or ``json.dumps`` writes it) with DEL, C1, bidirectional
    controls, line separators and lone surrogates written as ``\\uXXXX``: the same data, nothing
    a terminal acts on."""
    return _JSON.sub(_json_escape, text)


# --- the live block, and messages written while it is drawn ---------------------------------

#: The block of lines redrawn in place on a terminal now (``sinks.progress.LiveBlock``), if
#: any. A message written meanwhile erases it first (:func:`make_room`), as ``tqdm.write`` does
#: for its bar, so the two never share a line; the block's next draw puts it back below.
_live: Any = None
_drawing_thread: int | None = None
_drawing_pid: int | None = None
#: A block a write through a guard erased, drawn again once that text ends its line.
_erased: Any = None
#: Whether text written through a guard left its line open (``print(".", end="")``): the
#: block's next draw then starts on the next line, so the two never share one.
_line_open = False
#: Each stream's guard, made once and kept: ``print`` holds ``sys.stdout`` without a
#: reference of its own while it writes (CPython 3.11), so a guard that a write takes out of
#: ``sys`` must outlive that write, or the interpreter reads freed memory.
_guards: dict[int, GuardedStream] = {}


def set_live(block: Any, drawn: bool) -> None:
    """``block`` is drawn now (``drawn``), or is no longer. While one is drawn, standard output
    and standard error, where they are terminals, are :class:`GuardedStream`: what anyone else
    writes there (a user's ``print`` in a callback, a framework's log line) erases the block
    first, and the block's next draw comes below it."""
    global _live, _drawing_thread, _drawing_pid
    if drawn:
        if _live is None:
            _guard_streams()
        _live, _drawing_thread, _drawing_pid = block, threading.get_ident(), os.getpid()
    elif _live is block:
        _live = None
        _unguard_streams()


def close_open_line() -> str:
    """A line break when text written beside a block left its line open, to draw the block
    below it (once); else nothing."""
    global _line_open
    if not _line_open:
        return ""
    _line_open = False
    return "\n"


def make_room(out: Any = None) -> None:
    """Before a message is written to ``out`` (or, ``None``, to standard error: the same
    terminal as a rule): erase the live block drawn there, if any."""
    block = _live
    if block is not None and (out is None or block.out is unguarded(out)):
        block.clear()


class GuardedStream:
    """``sys.stdout`` or ``sys.stderr`` (a terminal) while a live block is drawn: a write
    erases the block first, as ``tqdm.write`` does for its bar, and once the text ends a line
    the block is drawn again below it, as it last was. Without it, a ``print`` from a callback
    moved the cursor below the block, and the next draw, going back up the block's height from
    there, erased the printed line and left a copy of the bar behind. Drawn again at once, the
    bar stays in view below the text even if no draw comes after it (the loop was stopped by
    an exception, and the traceback is written). Everything else is the stream's own. Only
    writes from the thread that draws the block erase it (two threads writing escape
    sequences at once would garble the screen); a forked child's writes never do (the block
    is its parent's)."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> int:
        global _erased, _line_open
        if text and _live is not None and threading.get_ident() == _drawing_thread:
            _erased = _live
            _live.clear()
        written = self.stream.write(text)
        if text and (_erased is not None or _live is not None):
            _line_open = not text.endswith("\n")  # (print(".", end=""): the block goes below)
        if _erased is not None and _live is None and text.endswith("\n"):
            block, _erased = _erased, None
            block.redraw()  # below the text, as it was
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _leave_the_block() -> None:
    """At the interpreter's exit, a block still drawn (a loop an exception stopped, no ``with
    bus:`` to end it) stays as it is, and the shell's prompt comes on the line below it."""
    block = _live
    if block is not None and os.getpid() == _drawing_pid:
        with contextlib.suppress(Exception):
            block.end()


def _forked() -> None:
    """In a forked child (a DataLoader worker): the block on the terminal is the parent's."""
    global _live, _erased, _drawing_thread, _line_open
    _live = _erased = _drawing_thread = None
    _line_open = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def unguarded(stream: Any) -> Any:
    """The stream itself, if ``stream`` is a :class:`GuardedStream` of it."""
    return stream.stream if type(stream) is GuardedStream else stream


#: The logging handlers given a guard as their stream, to be given theirs back.
_guarded_handlers: list[Any] = []


def _guard_streams() -> None:
    if not _guards:
        atexit.register(_leave_the_block)
    guarded = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or type(stream) is GuardedStream:
            continue
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):  # not a file, or closed
            tty = False
        if tty:
            guard = _guards.get(id(stream))
            if guard is None:
                guard = _guards[id(stream)] = GuardedStream(stream)
            setattr(sys, name, guard)
            guarded[id(stream)] = guard
    for handler in _stream_handlers():
        guard = guarded.get(id(handler.stream))
        if guard is not None:
            handler.stream = guard
            _guarded_handlers.append(handler)


def _stream_handlers() -> list[Any]:
    """The logging handlers writing to a stream: ``logging.basicConfig()``, called before the
    run, holds the terminal's stream itself, not ``sys.stderr``, and its lines would be erased
    by the block's next draw as an unguarded ``print`` was. A program that never imported
    ``logging`` has none (it is not imported here for them)."""
    logging = sys.modules.get("logging")
    if logging is None:
        return []
    # Every handler alive, as logging keeps them for its shutdown: the cost of a redraw (one at
    # each print while the block is drawn) follows the handlers, not the loggers, of which a
    # program of many libraries has thousands.
    every = getattr(logging, "_handlerList", None)
    if every is not None:
        handlers = [ref() for ref in list(every)]
    else:  # another logging: the loggers' own handlers
        loggers = [logging.getLogger(), *(logger for logger in
                                          list(logging.Logger.manager.loggerDict.values())
                                          if isinstance(logger, logging.Logger))]
        handlers = [handler for logger in loggers for handler in logger.handlers]
    return [handler for handler in handlers if isinstance(handler, logging.StreamHandler)]


def _unguard_streams() -> None:
    # A stream the program put in place meanwhile (``redirect_stdout``) is left as it is; a
    # guard someone kept a reference to goes on writing, erasing nothing once no block is drawn.
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if type(stream) is GuardedStream:
            setattr(sys, name, stream.stream)
    while _guarded_handlers:
        handler = _guarded_handlers.pop()
        if type(handler.stream) is GuardedStream:
            handler.stream = handler.stream.stream


_LIBRARY = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              package) + os.sep for package in ("eventbus", "plugins", "sinks"))


def warn(text: str, category: type[Warning]) -> None:
    """Warn with ``text`` made printable, the live block erased first, at the first line
    outside the library up the stack: the user's loop, or the framework calling the bus."""
    make_room()
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY):
        level, frame = level + 1, frame.f_back
    warnings.warn(printable(text), category, stacklevel=level)


# --- text fitted to a terminal's width ------------------------------------------------------

#: A row of the audit's decision table (seq, epoch, ...), and where it has its reason (see
#: ``audit.render``).
_DECISION_ROW = re.compile(r"  [ \d]{5}\d  ")
_REASON_COLUMN = 56


def width_of(stream: Any) -> int | None:
    """The columns of the terminal ``stream`` writes to; None when it is not one (a file, a
    pipe: lines are kept whole for tools that read them)."""
    try:
        if not stream.isatty():
            return None
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None


def columns(text: str) -> int:
    """The terminal columns ``text`` takes: two for a wide character (East Asian Wide or
    Fullwidth: CJK, most emoji), none for a combining mark or a format character, one for any
    other. ``len`` counts characters: a line of CJK measured so runs past the width, and the
    terminal wraps it mid-word."""
    if text.isascii():
        return len(text)
    return sum(map(char_columns, text))


def char_columns(char: str) -> int:
    """The terminal columns one character takes (see :func:`columns`)."""
    if unicodedata.combining(char) or unicodedata.category(char) in _ZERO_WIDTH:
        return 0
    return 2 if unicodedata.east_asian_width(char) in _WIDE else 1


_ZERO_WIDTH = frozenset({"Mn", "Me", "Cf"})
_WIDE = frozenset({"W", "F"})
_CHUNKS = re.compile("( +)")


def fit(text: str, width: int | None) -> str:
    """``text`` with each line wider than ``width`` columns broken at its spaces onto lines of
    its own, indented under where it began (a decision row's reason under the reason column,
    when its words fit there), so a terminal never wraps a line mid-word. ``width`` None: as
    it is.

    Widths are in columns (:func:`columns`), and a word wider than a line is cut in one pass:
    ``textwrap`` counts characters, and cuts such a word a line at a time, copying the rest
    each time, so a megabyte reason from a log took minutes."""
    if not width:
        return text
    out = []
    for line in text.split("\n"):
        if "\t" in line:
            line = line.expandtabs()  # as the terminal shows it (and textwrap did)
        if columns(line) <= width:
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip(" "))
        hang = _REASON_COLUMN if _DECISION_ROW.match(line) else indent + 4
        # Too narrow to hang so far, or a word of the reason (a metric named in CJK, two
        # columns a character) wider than the reason column: a little in, the word whole.
        if width - hang < 24 or (hang == _REASON_COLUMN and
                                 max(map(columns, line.split())) > width - hang):
            hang = min(indent + 4, width // 3)
        out.extend(_wrap(line, width, hang) or [line])
    return "\n".join(out)


def _wrap(line: str, width: int, hang: int) -> list[str]:
    """``textwrap.wrap(line, width, subsequent_indent=" " * hang, break_on_hyphens=False)``,
    in columns: runs of spaces kept inside a line and dropped where lines break, and a word
    wider than a line fills the line it starts on, then as many lines as it needs. What is
    left of such a word is an offset into it, never a copy."""
    chunks = [chunk for chunk in _CHUNKS.split(line) if chunk]  # words and runs of spaces
    lines: list[str] = []
    i = off = left = 0  # the chunk, where in it the next line goes on, and its columns left
    ascii_ = True

    def take(index: int) -> None:
        nonlocal i, off, left, ascii_
        i, off = index, 0
        if i < len(chunks):
            ascii_ = chunks[i].isascii()
            left = len(chunks[i]) if ascii_ else columns(chunks[i])

    take(0)
    while i < len(chunks):
        indent = " " * hang if lines else ""
        room = width - len(indent)
        if lines and chunks[i][0] == " ":
            take(i + 1)  # a line never starts with the spaces it was broken at
            continue
        parts, used = [], 0
        while i < len(chunks) and used + left <= room:
            parts.append(chunks[i][off:])
            used += left
            take(i + 1)
        if i < len(chunks) and left > room:  # wider than a line: fill this one with it
            chunk, space = chunks[i], room - used
            if ascii_:
                end, taken = off + space, space
            else:
                if not off:  # the word's widths, read once as its lines are made
                    widths, pending = map(char_columns, chunk), None
                end, taken = off, 0
                while True:  # it is wider than the space: a character will not fit
                    width_ = next(widths) if pending is None else pending
                    if taken + width_ > space:
                        pending = width_
                        break
                    pending, taken, end = None, taken + width_, end + 1
            if end == off and not parts:  # a wide character alone on a line of one column
                taken, end, pending = (1 if ascii_ else pending), end + 1, None
                while not ascii_ and end < len(chunk):  # with the marks that combine with it
                    pending = next(widths)
                    if pending:
                        break
                    end, pending = end + 1, None
            if end > off:
                parts.append(chunk[off:end])
                left, off = left - taken, end
                if off == len(chunk):  # the word ends here: no empty rest on the next line
                    take(i + 1)
        if parts and parts[-1][0] == " ":
            parts.pop()
        if parts:
            lines.append(indent + "".join(parts))
    return lines
