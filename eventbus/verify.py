"""Golden logs: check that a set of stored logs still replay to the decisions they recorded, and
that the checkpoints they name are the files they wrote.

A log kept next to the tests is a regression test of callback behaviour: a change to a plugin
that moves a decision ("stop moves from epoch 21 to 19") shows as a mismatch here. Verifying
reads the logs and the checkpoint files and nothing else: no plugin with side effects runs, no
file is written, a link is never followed (a checkpoint path that is a link counts as changed).
A checkpoint path is read only below ``root`` or the log's own folder (the rule a backfill to
MLflow follows): one that is absolute elsewhere, has a ``..`` or goes through a linked folder is
listed as ``outside``, unread, so that a log someone else wrote cannot ask whether any file this
user can read holds the bytes it guesses.
A checkpoint whose newest record is its removal (``checkpoint_deleted``: ModelCheckpoint's
``save_top_k`` let it go) counts as deleted, not missing, and its file is not read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .confine import Refused, open_below, place
from .effective import read_effective
from .errors import EventBusError
from .outputs import mostly_holes
from .records import CheckpointDeleted, CheckpointSaved
from .replay import replay
from .terminal import inline

__all__ = ["CheckpointCheck", "LogVerdict", "find_logs", "verify_log", "verify_logs"]

_READ = 1 << 20
_CHECKPOINT_KINDS = frozenset({"checkpoint_saved", "checkpoint_deleted"})

_STATUSES = ("verified", "missing", "changed", "deleted", "outside")
#: How every checkpoint file starts: HDF5 (the checkpoint writer's, Keras's .h5) or a zip
#: (Keras's .keras).
_CHECKPOINT_SIGNATURES = (b"\x89HDF\r\n\x1a\n", b"PK\x03\x04")


def starts_as_checkpoint(head: bytes) -> bool:
    """Whether ``head`` (a file's first 8 bytes) starts as a checkpoint file does: the test
    by which ``verify`` hashes a file, and the MLflow sink uploads one."""
    return head.startswith(_CHECKPOINT_SIGNATURES)


@dataclass(frozen=True)
class CheckpointCheck:
    """The newest recorded save of one checkpoint path, against the file there now."""

    path: str
    epoch: int | None
    sha256: str
    #: "verified" (same bytes), "missing" (no file), "changed" (other bytes, or not a
    #: checkpoint file), "deleted" (the run removed it, and the log says so), "outside" (not
    #: read: absolute and not below the root, with a ``..``, or through a linked folder).
    status: str


@dataclass
class LogVerdict:
    log: str
    #: Decisions compared (the recorded ones of the plugins replay runs).
    decisions: int = 0
    #: The first decision that differs, in words; None when all agree.
    mismatch: str | None = None
    #: Where the recorded run was stopped, and where the replayed plugins stop it (0-based).
    recorded_stop: int | None = None
    replayed_stop: int | None = None
    checkpoints: list[CheckpointCheck] = field(default_factory=list)
    #: Why the log could not be verified at all (not a log, a plugin that cannot be rebuilt).
    error: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for c in self.checkpoints if c.status == status)

    @property
    def ok(self) -> bool:
        return self.error is None and self.mismatch is None and not self.count("changed")

    def as_dict(self) -> dict[str, object]:
        return {
            "log": self.log, "ok": self.ok, "decisions": self.decisions,
            "mismatch": self.mismatch, "recorded_stop_epoch": self.recorded_stop,
            "replayed_stop_epoch": self.replayed_stop, "error": self.error,
            "checkpoints": {s: self.count(s) for s in _STATUSES},
            "checkpoint_files": [c.__dict__ for c in self.checkpoints],
        }


def find_logs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The logs named by ``paths``: files as given, and in a directory every ``*.jsonl`` and
    ``*.parquet`` below it (links not followed), sorted."""
    found: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir() and given.suffix != ".parquet":
            found.extend(sorted(_logs_below(given)))
        else:
            found.append(given)
    return found


def _logs_below(root: Path) -> Iterator[Path]:
    # A stack of folders, not recursion (os.walk recurses on Python 3.11): a directory nested
    # thousands deep is no RecursionError; links (to files or directories) are never followed;
    # a folder that cannot be read is passed over, as os.walk passes it.
    folders = [os.fspath(root)]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                found = [(entry.name, entry.is_dir(follow_symlinks=False),
                          entry.is_symlink()) for entry in entries]
        except OSError:
            continue
        below = []
        for name, is_dir, is_link in sorted(found):
            if is_link:
                continue
            if name.endswith((".jsonl", ".parquet")) and (not is_dir or name.endswith(".parquet")):
                yield Path(folder, name)
            elif is_dir:
                below.append(os.path.join(folder, name))
        folders.extend(reversed(below))


def verify_log(log: str | os.PathLike[str], *, root: str | os.PathLike[str] = ".") -> LogVerdict:
    """Replay ``log`` with verification and check its newest checkpoint files.

    Relative checkpoint paths are taken from ``root`` (the directory the run ran in); an
    absolute one is read only below ``root`` or the log's folder."""
    verdict = LogVerdict(str(log))
    try:
        result = replay(log, verify=True)
        newest: dict[str, CheckpointSaved] = {}
        deleted: set[str] = set()
        # Replay read the log once; this second pass builds only the checkpoint records, of
        # the run as it went on: a save a resume abandoned (an unfinished epoch, or finished
        # ones moved back over by ``resume_at_most``) vouches for no file.
        for r in read_effective(log, kinds=_CHECKPOINT_KINDS):
            if isinstance(r, CheckpointSaved):
                newest.pop(r.path, None)  # to the end: the newest save
                newest[r.path] = r
                deleted.discard(r.path)
            elif isinstance(r, CheckpointDeleted):
                deleted.add(r.path)
    except EventBusError as exc:
        verdict.error = str(exc)
        return verdict
    verdict.decisions = len(result.recorded)
    verdict.mismatch = None if result.mismatch is None else str(result.mismatch)
    verdict.recorded_stop = result.recorded_stop
    verdict.replayed_stop = result.stopped_at
    roots = list(dict.fromkeys((os.fspath(root), os.path.dirname(os.path.abspath(log)))))
    verdict.checkpoints = [
        CheckpointCheck(path, saved.epoch, saved.sha256,
                        "deleted" if path in deleted else
                        _file_status(path, roots, saved.sha256, saved.size))
        for path, saved in newest.items()]
    return verdict


def verify_logs(paths: Iterable[str | os.PathLike[str]], *,
                root: str | os.PathLike[str] = ".") -> list[LogVerdict]:
    return [verify_log(log, root=root) for log in find_logs(paths)]


def _file_status(path: str, roots: list[str], sha256: str, size: int | None = None) -> str:
    """Whether the checkpoint at ``path`` (below one of ``roots``) holds the bytes whose digest is
    ``sha256``, read without following a link (a link where a checkpoint was written is not
    that checkpoint).

    Only a regular file below a root (``lstat`` says so before anything is opened: opening a
    device can do something) that starts as a checkpoint does (HDF5's signature, or a
    ``.keras`` zip) is hashed: a log names paths, and a log someone else wrote must not make
    ``verify`` say whether any file this user can read holds the bytes it guesses. A file
    whose size is not the recorded ``size``, or that is mostly holes (a log records the size
    too), is changed, unread: a terabyte sparse file would take hours to hash."""
    try:
        fd = open_below(*place(path, roots, "--root or the log's folder"))
    except FileNotFoundError:
        return "missing"
    except Refused as refused:
        # Not below the root at all, or through a linked folder: not this run's file to judge.
        # A link, FIFO or directory where the file was is a checkpoint that changed.
        return "outside" if refused.outside else "changed"
    except OSError:
        return "changed"
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if (size is not None and info.st_size != size) or mostly_holes(info) or \
                not starts_as_checkpoint(file.read(8)):
            return "changed"
        file.seek(0)
        digest = hashlib.sha256()
        while chunk := file.read(_READ):
            digest.update(chunk)
    return "verified" if digest.hexdigest() == sha256 else "changed"


def describe(verdict: LogVerdict) -> str:
    """What went wrong with one log, in words (empty when nothing did)."""
    if verdict.error:
        return f"cannot verify: {verdict.error}"
    problems = []
    if verdict.mismatch:
        problems.append(verdict.mismatch)
        if verdict.recorded_stop != verdict.replayed_stop:
            problems.append(f"stop moves from {_stop(verdict.recorded_stop)} to "
                            f"{_stop(verdict.replayed_stop)}")
    changed = [c.path for c in verdict.checkpoints if c.status == "changed"]
    if changed:
        problems.append(f"checkpoint(s) changed since the run wrote them: {', '.join(changed)}")
    return "; ".join(problems)


def _stop(epoch: int | None) -> str:
    return "no stop" if epoch is None else f"epoch {epoch + 1}"


def render(verdicts: list[LogVerdict]) -> str:
    """The table ``eventbus verify`` prints, then one line per problem. A log's name and what
    went wrong (text from the log) go through :func:`~eventbus.terminal.inline`: a file name
    or a reason can neither act on the terminal nor start a line of its own."""
    head = ("log", "decisions", "mismatches", *_STATUSES, "result")
    rows = [(inline(v.log), str(v.decisions), "-" if v.error else str(int(v.mismatch is not None)),
             *(str(v.count(s)) for s in _STATUSES), "ok" if v.ok else "FAIL")
            for v in verdicts]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    for v in verdicts:
        if not v.ok:
            lines.append(f"{inline(v.log)}: {inline(describe(v))}")
    ok = sum(v.ok for v in verdicts)
    lines.append(f"{ok} of {len(verdicts)} log(s) verified"
                 + ("" if ok == len(verdicts) else f"; {len(verdicts) - ok} failed"))
    return "\n".join(lines)
