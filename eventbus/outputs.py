"""Writing a named output (a report, a plot, a converted log) without writing anything else.

The command line's outputs are named by the user, but what is already at that name, or beside
it, may not be theirs: a link planted where the output or its temporary file goes, a FIFO that
blocks whoever opens it, a hard link to the log being read. So an output is written to a new
file created beside it under a name nobody can guess (``O_EXCL``), which then replaces the name
(:func:`write_replacing`): a link there is replaced, never followed, and a reader sees the old
file or the new one, whole. What is at the name is only ever examined with ``lstat`` or opened
without following a link and without blocking (:func:`read_head`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError
from .openflags import NO_FOLLOW, NON_BLOCK

__all__ = ["file_type", "new_file_mode", "open_checked", "read_head", "refuse_special",
           "same_file", "stored_size", "write_replacing"]



def open_checked(path: str | os.PathLike[str], flags: int = os.O_RDONLY,
                 permissions: int = 0o666) -> tuple[int, int]:
    """``path`` opened (``flags``; ``permissions`` for a file ``O_CREAT`` makes) without
    blocking, and the mode of what was opened: a FIFO
    put at the name would block the open for ever, and a name looked at twice can change
    between. A regular file's descriptor is set back to blocking; the caller closes the
    descriptor and decides what to do with anything else (:func:`file_type` names it)."""
    fd = os.open(path, flags | NON_BLOCK, permissions)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and NON_BLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, mode


def stored_size(info: os.stat_result) -> int:
    """The bytes a file stores: its size, or less where it has holes. A sparse file claims a
    size its blocks do not hold (a terabyte in kilobytes), and a budget or deadline drawn from
    the size a file claims would be the file's to set."""
    blocks = getattr(info, "st_blocks", None)
    # No blocks at all: a filesystem that does not count them (some network and FUSE mounts)
    # or keeps a small file in its inode; the size is all there is to go by.
    return info.st_size if not blocks else min(info.st_size, blocks * 512)


def mostly_holes(info: os.stat_result) -> bool:
    """Whether a file claims far more than it stores: over 64 MiB beyond 64 times its stored
    bytes. No file this project writes has holes, and a copy made sparse keeps them only where
    whole blocks were zeros; a planted one makes anything that reads it to its claimed size
    (hashing, copying, splitting into lines) take hours, or the disk or memory it names."""
    return info.st_size > (64 << 20) + 64 * stored_size(info)


def file_type(mode: int) -> str:
    """What a mode that is not a regular file's is, for a message (``a FIFO``)."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def refuse_special(path: str | os.PathLike[str], what: str) -> None:
    """Refuse an output name that holds something other than a file, a link or a directory
    (a FIFO, a device, a socket): opening it would block or write elsewhere. ``what`` starts
    the message (``"report: out"``)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # nothing there (or no way there: the caller's checks of the folder say)
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
        raise ConfigError(f"{what} {path} is not a regular file (a FIFO, device or socket); "
                          "name a file to write", field="out")


def read_head(path: str | os.PathLike[str], size: int) -> bytes | None:
    """The first ``size`` bytes of the regular file at ``path``; None when nothing is there or
    it is a link, a FIFO or anything but a regular file (never followed, never blocked on)."""
    try:
        fd, mode = open_checked(path, os.O_RDONLY | NO_FOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        return file.read(size) if stat.S_ISREG(mode) else None


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path after links, or hard links to one
    inode (writing one would truncate the other)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_replacing(target: str | os.PathLike[str], write: Callable[[Path], None], *,
                    durable: bool = False) -> None:
    """Write ``target`` whole or not at all, never through what is there: ``write`` fills a
    new file beside it (created exclusively, under a name nobody can guess), which then
    replaces ``target`` (a link there is replaced, not followed). The new file gets the
    permissions a new file of this process gets, as if written in place; with ``durable``
    its bytes are on disk (fsynced) before it replaces ``target``."""
    target = Path(target)
    # Its extension kept last: writers that choose a format by it (matplotlib) see the same.
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                suffix=target.suffix or ".tmp")
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, new_file_mode())
        finally:
            os.close(fd)
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file in this process now (0o666 less the
    umask, read by setting it, the only portable way, and back at once): what a file made
    private by ``mkstemp`` is given before it takes a user's name."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
