"""A checkpoint a log records, read for upload (``sinks.mlflow``): only a regular file this
process's checkpoint writer wrote, or one below a root reached with no link followed, and only
the very bytes whose size and sha256 the log records, copied to a private folder before they
are sent. A log is untrusted input: a path in it may name any file, link or FIFO, and a size
may be a planted sparse file's."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from eventbus.confine import Refused, open_below, place
from eventbus.openflags import NO_FOLLOW, READ_ONLY, UNTTY
from eventbus.outputs import mostly_holes, stored_size
from eventbus.verify import starts_as_checkpoint

__all__ = ["NotFound", "checked_copy", "copy_checked"]

_READ = 1 << 20  # bytes hashed (and copied) at a time


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def checked_copy(record: Mapping[str, Any], roots: Sequence[str], *, live: bool,
                 into: str) -> str:
    """A copy, in the private folder ``into``, of the checkpoint ``record`` names, made of the
    very bytes whose size and sha256 were checked against the record; or Refused (why not),
    or FileNotFoundError (it is gone). Where the path may be in two places (a relative path:
    see :func:`_places`), a file at the first that is not the recorded one gives way to the
    second, as a missing one does."""
    path = record["path"]
    if not isinstance(path, str) or not path or "\0" in path:
        raise Refused("is not a file's path")
    refused: Refused | None = None
    for fd, name in _open_checkpoint(path, roots, live=live):
        try:
            return copy_checked(fd, name, record, into)
        except Refused as why:
            refused = refused or why
        finally:
            os.close(fd)
    assert refused is not None  # (_open_checkpoint raises when it opens nothing)
    raise refused


def _open_checkpoint(path: str, roots: Sequence[str], *,
                     live: bool) -> Iterator[tuple[int, str]]:
    """The recorded checkpoint ``path`` open for reading, and its file name, at each place it
    may be: a file this process's checkpoint writer wrote (a live record only), or a regular
    file below a root reached with no link followed. Refused or NotFound when none opens."""
    if live:
        held = _written_here(path)
        if held is not None:
            yield held, os.path.basename(os.path.normpath(path))
            return
    if not roots:
        raise Refused("was not written by this process's checkpoint writer, and the run has "
                      "no log whose folder (or checkpoint_root) it could be below")
    looked, opened = [], False
    for root, names in _places(path, roots):
        try:
            fd = open_below(root, names)
        except FileNotFoundError:
            looked.append(os.path.join(root, *names))
            continue
        except OSError as exc:  # a link swapped in after the check (ELOOP), no permission, ...
            raise Refused(f"cannot be read ({exc.strerror or exc})") from None
        opened = True
        yield fd, names[-1]
    if not opened:
        raise NotFound(looked)


class NotFound(FileNotFoundError):
    """No file at any of the places a recorded checkpoint was looked for (``looked``)."""

    def __init__(self, looked: list[str]):
        super().__init__(", ".join(looked))
        self.looked = looked


def _places(path: str, roots: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Where below a root the recorded ``path`` may be, in the order to look: a relative path
    is recorded from the folder training ran in, which a backfill from that folder has as its
    working directory (``run/checkpoints/x.h5`` with the log in ``run/``), so it is taken
    from there first, when that is below a root, then from the first root. Each is a root
    and the names below it (:func:`eventbus.confine.place`: no ``..``, nothing outside)."""
    first = place(path, roots, "the checkpoint root")
    if os.path.isabs(path):
        return [first]
    try:
        here = place(os.path.join(os.getcwd(), path), roots, "the checkpoint root")
    except (OSError, Refused):  # no working directory, or one outside every root
        return [first]
    same = os.path.join(here[0], *here[1]) == os.path.join(first[0], *first[1])
    return [here] if same else [here, first]


def _written_here(path: str) -> int | None:
    """``path`` open, if it is a regular file this process's checkpoint writer wrote and left
    unchanged (sinks.hdf5 notes each file it writes: device, inode, size and times)."""
    writer = sys.modules.get("sinks.hdf5")
    if writer is None:  # never imported: this process wrote no checkpoint
        return None
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, READ_ONLY)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode) and writer._written_here(fd):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def copy_checked(fd: int, name: str, record: Mapping[str, Any], into: str) -> str:
    """Copy the open checkpoint to ``into/name``; the copy if it starts as a checkpoint and has
    the record's size and sha256, else Refused. Nothing is read of a file whose size is not
    the recorded one, or that is mostly holes (a planted sparse file claiming a terabyte), nor
    more than that size; nothing is written before the bytes are hashed and found to be the
    recorded ones (a wrong sha256 once made a dense copy of a hole's claimed size)."""
    info = os.fstat(fd)
    size = info.st_size
    if size != record.get("size"):
        raise Refused(f"is {size} bytes; the log records {_shown(record.get('size'))}")
    if mostly_holes(info):
        raise Refused(f"claims {size} bytes but stores {stored_size(info)} (mostly holes); "
                      "not read")
    head = os.pread(fd, 8, 0)
    if not starts_as_checkpoint(head):
        raise Refused("does not start as a checkpoint does (HDF5, or a .keras zip)")
    if _hashed(fd, size, None) != str(record.get("sha256")).lower():
        raise Refused("does not hold the bytes the log records (another sha256)")
    copy = os.path.join(into, name)
    # The folder is private (0700); the file gets the usual mode, which a file store keeps.
    out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW | UNTTY, 0o666)
    with os.fdopen(out, "wb") as file:
        # Hashed again as copied: what is sent is exactly the bytes found to be the recorded.
        if _hashed(fd, size, file) != str(record.get("sha256")).lower():
            raise Refused("changed while it was read")
    return copy


def _hashed(fd: int, size: int, into: Any) -> str:
    """The sha256 of the open file's ``size`` bytes from its start, read in chunks (written to
    ``into`` too, if given); Refused if it holds other than ``size`` bytes now."""
    digest, done = hashlib.sha256(), 0
    while done < size and (chunk := os.pread(fd, min(_READ, size - done), done)):
        digest.update(chunk)
        if into is not None:
            into.write(chunk)
        done += len(chunk)
    if done != size or os.pread(fd, 1, done):
        raise Refused("changed while it was read")
    return digest.hexdigest()
