"""HDF5 checkpoints: the sink that writes what ModelCheckpoint decides, and the reader.

A checkpoint file holds::

    /                 attrs: format="eventbus-checkpoint", format_version=1,
                             metadata (JSON: run_id, epoch, seq, monitor, value, ...),
                             model_config (JSON, when the adapter has one and it was asked for)
    /weights/<name>   one dataset per weight; "dense/kernel" becomes group dense, dataset kernel
    /optimizer/<name> the optimizer's state, where the adapter offers it (get_optimizer_state)

Writes are atomic: the file is written under a temporary name in the target's folder, flushed
and fsynced, then renamed over the target with ``os.replace`` (and the folder fsynced), so a
crash leaves either the previous checkpoint or the new one at the target, never a partial file.
Nothing is pickled: every value is a numeric array or a JSON string, and reading a checkpoint
never runs code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from eventbus import Plugin, Sink
from eventbus.records import CheckpointSaved, SinkFailed, decode_nonfinite, encode_nonfinite
from eventbus.records import Warning as WarningRecord
from eventbus.run import Run

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "HDF5CheckpointWriter", "load_checkpoint",
           "write_checkpoint"]

FORMAT = "eventbus-checkpoint"
FORMAT_VERSION = 1

# Files made by mkstemp are private (0600); a checkpoint gets the mode a plain open() would.
_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` gives back."""

    weights: dict[str, np.ndarray]
    metadata: dict[str, Any]
    model_config: dict[str, Any] | None = None
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)


def _check_names(names: Any, what: str) -> list[str]:
    out = []
    for name in names:
        if not isinstance(name, str) or not name or name.startswith("/") or \
                any(part in ("", ".", "..") for part in name.split("/")):
            raise ValueError(f"{what} name {name!r} cannot be stored: names are non-empty "
                             "'/'-separated paths such as 'dense/kernel'")
        out.append(name)
    return out


def _write_arrays(group: Any, arrays: Mapping[str, Any], what: str) -> None:
    names = _check_names(arrays, what)
    # The order the adapter gave, which HDF5's alphabetical listing would lose.
    group.attrs["names"] = orjson.dumps(names).decode()
    for name in names:
        array = np.asarray(arrays[name])
        if array.dtype.kind not in "biufc":
            raise ValueError(f"{what} {name!r} has dtype {array.dtype}; checkpoints hold "
                             "numeric arrays only")
        group.create_dataset(name, data=array)


def _json(value: Any) -> str:
    return orjson.dumps(encode_nonfinite(value), option=orjson.OPT_NON_STR_KEYS).decode()


def _fill(file: Any, weights: Mapping[str, Any], metadata: Mapping[str, Any],
          model_config: Mapping[str, Any] | None,
          optimizer: Mapping[str, Any] | None) -> None:
    """Write a checkpoint's content into an open h5py file."""
    file.attrs["format"] = FORMAT
    file.attrs["format_version"] = FORMAT_VERSION
    file.attrs["metadata"] = _json(dict(metadata))
    if model_config is not None:
        file.attrs["model_config"] = _json(dict(model_config))
    _write_arrays(file.create_group("weights"), weights, "weight")
    if optimizer:
        _write_arrays(file.create_group("optimizer"), optimizer, "optimizer state")


def _fsync_and_hash(path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(file.fileno())
    return size, digest.hexdigest()


def _fsync_dir(directory: str) -> None:
    # Makes the rename durable; some file systems do not allow it, which costs durability only.
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_checkpoint(path: str | os.PathLike[str], weights: Mapping[str, Any], *,
                     metadata: Mapping[str, Any] | None = None,
                     model_config: Mapping[str, Any] | None = None,
                     optimizer: Mapping[str, Any] | None = None) -> tuple[int, str]:
    """Write a checkpoint to ``path`` atomically; returns its size in bytes and its sha256."""
    import h5py  # lazily: importing the sink module must not load HDF5 for runs that never save

    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise IsADirectoryError(f"checkpoint path {target} is a directory; give a file name")
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    prefix = f".{os.path.basename(target)}."
    _remove_leftovers(directory, prefix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as file:
            _fill(file, weights, metadata or {}, model_config, optimizer)
        os.chmod(tmp, 0o666 & ~_UMASK)
        size, digest = _fsync_and_hash(tmp)
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return size, digest


def _remove_leftovers(directory: str, prefix: str) -> None:
    """Remove temporary files a crashed write of the same target left behind."""
    for name in os.listdir(directory):
        if name.startswith(prefix) and name.endswith(".tmp") and \
                len(name) > len(prefix) + len(".tmp"):
            with suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))


def _read_arrays(group: Any) -> dict[str, np.ndarray]:
    names = orjson.loads(group.attrs["names"])
    return {name: np.asarray(group[name][()]) for name in names}


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by this module: weights, metadata, config, optimizer state."""
    import h5py

    try:
        file = h5py.File(os.fspath(path), "r")
    except OSError as exc:  # h5py's message does not always name the file
        if exc.errno:  # OSError(errno, ...) is FileNotFoundError, PermissionError, ...
            raise OSError(exc.errno, f"{os.fspath(path)}: {os.strerror(exc.errno)}") from exc
        raise OSError(f"{os.fspath(path)}: not an HDF5 checkpoint file ({exc})") from exc
    with file:
        if file.attrs.get("format") != FORMAT:
            raise ValueError(f"{os.fspath(path)}: not an eventbus checkpoint (no "
                             f"format={FORMAT!r} attribute)")
        version = int(file.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ValueError(f"{os.fspath(path)}: checkpoint format version {version} is newer "
                             f"than this eventbus reads ({FORMAT_VERSION}); upgrade eventbus")
        metadata = decode_nonfinite({"details": orjson.loads(file.attrs["metadata"])})["details"]
        config = file.attrs.get("model_config")
        model_config = None if config is None else orjson.loads(config)
        weights = _read_arrays(file["weights"])
        optimizer = _read_arrays(file["optimizer"]) if "optimizer" in file else {}
    return Checkpoint(weights=weights, metadata=metadata, model_config=model_config,
                      optimizer=optimizer)


class HDF5CheckpointWriter(Plugin, Sink):
    """Writes a checkpoint for every ``save_checkpoint`` decision; records ``checkpoint_saved``.

    A sink taking the ``save_checkpoint`` records. The weights come from the run's model
    adapter (``get_weights()``); unless the decision asks for weights only, the adapter's
    ``get_config()`` and ``get_optimizer_state()`` are stored too where it has them. A failed
    write is recorded as ``sink_failed`` and the writer stays on, so one full disk does not end
    checkpointing for the rest of the run. ``verbose`` is accepted for compatibility; what a
    checkpoint prints is ModelCheckpoint's ``verbose`` (the console sink prints it).
    """

    side_effects = True
    takes = frozenset({"save_checkpoint"})
    #: Marks a checkpoint writer; ModelCheckpoint adds one of its own only when none is there.
    writes_checkpoints = True

    def __init__(self, verbose: int = 0):
        self.verbose = verbose
        #: True for the writer ModelCheckpoint added itself; it defers to one the user gave.
        self.auto = False
        self._run: Run | None = None

    def open(self, run: Run) -> None:
        self._run = run

    def _deferred(self, run: Run) -> bool:
        return self.auto and any(
            p is not self and getattr(p, "writes_checkpoints", False) and
            not getattr(p, "auto", False) for p in (*run.plugins, *run.sinks))

    def write(self, record: dict[str, Any]) -> Any:
        run = self._run
        if run is None or self._deferred(run):
            return None
        path = record["path"]
        model = run.model
        if model is None:
            return WarningRecord(
                message=f"save_checkpoint from {record['source']!r} needs a model adapter; the "
                        f"bus has none (Bus(model=...)), so {path} was not written",
                details={"path": path})
        try:
            size, digest = self._write(record, model, run)
        except Exception as exc:  # noqa: BLE001 - any write failure is the sink's to record
            # Returned rather than raised: a raising sink is switched off for the whole run.
            return SinkFailed(sink=run.label(self), event=record["kind"],
                              error=type(exc).__name__, message=str(exc))
        return CheckpointSaved(path=path, size=size, sha256=digest)

    def _write(self, record: dict[str, Any], model: Any, run: Run) -> tuple[int, str]:
        evidence = record.get("evidence") or {}
        weights_only = record.get("weights_only", False)
        metadata = {
            "run_id": run.run_id, "epoch": record.get("epoch"), "seq": record["seq"],
            "cause_seq": record.get("cause_seq"), "source": record.get("source"),
            "code": record.get("code"), "reason": record.get("reason"),
            "monitor": evidence.get("monitor"), "value": evidence.get("value"),
            "batch": evidence.get("batch"), "step": evidence.get("step"),
            "weights_only": weights_only, "learning_rate": run.learning_rate,
        }
        config = optimizer = None
        if not weights_only:
            if callable(getattr(model, "get_config", None)):
                config = model.get_config()
            if callable(getattr(model, "get_optimizer_state", None)):
                optimizer = model.get_optimizer_state()
        return write_checkpoint(record["path"], model.get_weights(), metadata=metadata,
                                model_config=config, optimizer=optimizer)
