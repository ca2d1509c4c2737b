"""Reading a file a log names, only below a folder the user gave.

A log is untrusted input, and the checkpoint paths it records are whatever its writer put there:
``/home/me/private.xlsx``, ``../../secrets``, ``models/x.h5`` with ``models`` a link out of the
run's folder. What a command does with such a file (``verify`` says whether it holds bytes the
log guesses, a backfill uploads it to MLflow) must not reach beyond the folder the user named.
So a recorded path is taken only below a root (:func:`place`: no ``..`` anywhere, an absolute
path only below a root), and opened one folder at a time with no link followed below the root
(:func:`open_below`). The root itself is the user's own: a link to it is followed.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence

from .openflags import DIR_FD, FOLDER, NO_FOLLOW, NON_BLOCK, READ_ONLY
from .outputs import file_type

__all__ = ["Refused", "folder_below", "open_below", "place"]



class Refused(Exception):
    """Why a recorded path is not read, in words that follow the path. ``outside``: the path
    leads out of the root (a ``..``, an absolute path elsewhere, a linked folder), as opposed to
    something other than a regular file where the file should be."""

    def __init__(self, why: str, *, outside: bool = False):
        super().__init__(why)
        self.why = why
        self.outside = outside


def place(path: str, roots: Sequence[str], called: str = "the root") -> tuple[str, list[str]]:
    """The root ``path`` is below and the names from it down to the file; a relative path is
    taken from the first root. Judged on the names alone: no ``..`` anywhere. ``called`` names
    the roots in the message (``"the checkpoint root"``)."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise Refused("is not a file's path")
    names = [name for name in re.split(r"[/\\]" if os.altsep else "/", path)
             if name not in ("", ".")]
    if ".." in names:
        raise Refused("has a '..' in it", outside=True)
    if not names:
        raise Refused("names no file")
    if not os.path.isabs(path):
        return roots[0], names
    absolute = os.path.normpath(path)
    for root in roots:
        for base in dict.fromkeys((root, os.path.realpath(root))):
            prefix = os.path.join(base, "")
            if absolute.startswith(prefix):
                return base, absolute[len(prefix):].split(os.sep)
    raise Refused(f"is not below {called} ({', '.join(roots)})", outside=True)


def _lmode(name: str, folder: int | None) -> int:
    """The mode of what is at ``name`` (in ``folder``), a link not followed; FileNotFoundError
    if nothing is."""
    if folder is None:
        return os.lstat(name).st_mode
    return os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode


def _what(mode: int) -> str:
    return "a link" if stat.S_ISLNK(mode) else file_type(mode)


def folder_below(root: str, parts: Sequence[str]) -> tuple[int | None, str]:
    """The folder ``root/parts...``, reached one folder at a time with no link followed below
    ``root``: ``(its descriptor, "")``, to open names in with ``dir_fd``; where the platform
    has no ``dir_fd`` (Windows), ``(None, its path)``, each folder checked by its path on the
    way. Refused names a linked folder, or a name that is not a folder."""
    if not DIR_FD:
        for i in range(len(parts)):
            _check_folder(os.path.join(root, *parts[:i + 1]), None)
        return None, os.path.join(root, *parts)
    folder = os.open(root, FOLDER)
    try:
        for part in parts:
            _check_folder(part, folder)
            below = os.open(part, FOLDER | NO_FOLLOW, dir_fd=folder)
            os.close(folder)
            folder = below
    except BaseException:
        os.close(folder)
        raise
    return folder, ""


def _check_folder(part: str, folder: int | None) -> None:
    mode = _lmode(part, folder)
    if stat.S_ISLNK(mode):
        raise Refused(f"is in a folder reached through a link ({os.path.basename(part)}); "
                      "links are not followed", outside=True)
    if not stat.S_ISDIR(mode):
        raise Refused(f"is below {os.path.basename(part)}, which is not a folder")


def open_below(root: str, names: list[str]) -> int:
    """The regular file at ``root/names...`` open for reading, one folder at a time, no link
    followed below ``root`` (at a folder or at the file), nothing opened but folders and the
    file once ``lstat`` says it is a regular file (a FIFO, device or directory never is).
    FileNotFoundError when nothing is there; Refused for anything else that is not read."""
    folder, inside = folder_below(root, names[:-1])
    try:
        name = names[-1] if folder is not None else os.path.join(inside, names[-1])
        mode = _lmode(name, folder)
        if not stat.S_ISREG(mode):
            raise Refused(f"is {_what(mode)}, not a regular file")
        fd = os.open(name, READ_ONLY, dir_fd=folder)
    finally:
        if folder is not None:
            os.close(folder)
    mode = os.fstat(fd).st_mode  # of what was opened: what is checked is what is read
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise Refused(f"is {_what(mode)}, not a regular file")
    if NON_BLOCK:
        os.set_blocking(fd, True)
    return fd
