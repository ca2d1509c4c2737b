"""The ``os.open`` flags this project opens files with, each 0 where the system lacks it, and
whether a name can be looked up in a folder held open.

Every module that opens a file someone else may have put there (a log, a checkpoint, a backup
folder, TensorBoard's run folder) takes its flags from here, so "never through a link, never
blocking on a FIFO" is spelt once.
"""

from __future__ import annotations

import os

__all__ = ["DIR_FD", "FOLDER", "NO_FOLLOW", "NON_BLOCK", "READ_ONLY", "UNTTY"]

#: A link at the last part of the name is an error (``ELOOP``), not followed.
NO_FOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
#: Opening a FIFO returns at once instead of waiting for a writer that never comes.
NON_BLOCK: int = getattr(os, "O_NONBLOCK", 0)
#: A terminal opened never becomes the process's controlling terminal; bytes are bytes on
#: Windows.
UNTTY: int = getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
#: A file opened to be read: never through a link at the name, never blocking.
READ_ONLY: int = os.O_RDONLY | NO_FOLLOW | NON_BLOCK | UNTTY
#: A folder opened to look names up in it (``dir_fd``).
FOLDER: int = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
#: Whether names can be opened and stat'ed in a folder held open (every POSIX system, not
#: Windows).
DIR_FD: bool = {os.open, os.stat} <= os.supports_dir_fd
