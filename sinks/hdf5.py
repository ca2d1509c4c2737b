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

A log a run resumes from is untrusted input too: the writer reads back or removes a file the
log names only if it can tell it wrote it (the plugin that decided the save is on the bus and
its filepath template makes the path, below the template's folder with no link and no ``..``),
opened once without following a link or blocking (see ``HDF5CheckpointWriter._place``).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import secrets
import stat
import string
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from eventbus import Plugin, Sink
from eventbus.confine import Refused, folder_below
from eventbus.errors import CheckpointError
from eventbus.openflags import NO_FOLLOW, NON_BLOCK, READ_ONLY, UNTTY
from eventbus.outputs import new_file_mode, stored_size
from eventbus.records import (
    CheckpointDeleted,
    CheckpointSaved,
    SinkFailed,
    WeightsRestored,
    decode_nonfinite,
    encode_plain,
    spell_nonfinite,
)
from eventbus.records import Warning as WarningRecord
from eventbus.run import Run
from eventbus.sink import is_transient

from .isolated import parse_seconds, run_isolated

__all__ = ["FORMAT", "FORMAT_VERSION", "MAX_EXPANSION", "Checkpoint", "Expected",
           "HDF5CheckpointWriter", "expected_of", "file_sha256", "load_checkpoint",
           "load_state_dict", "write_atomically", "write_checkpoint"]

FORMAT = "eventbus-checkpoint"
FORMAT_VERSION = 1



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


def _json(value: Any, encode: Any = spell_nonfinite) -> str:
    """JSON text of ``value``; the metadata is ``encode_plain``-ed, as its reader restores it."""
    return orjson.dumps(encode(value), option=orjson.OPT_NON_STR_KEYS).decode()


def _fill(file: Any, weights: Mapping[str, Any], metadata: Mapping[str, Any],
          model_config: Mapping[str, Any] | None,
          optimizer: Mapping[str, Any] | None) -> None:
    """Write a checkpoint's content into an open h5py file."""
    file.attrs["format"] = FORMAT
    file.attrs["format_version"] = FORMAT_VERSION
    file.attrs["metadata"] = _json(dict(metadata), encode_plain)
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
                     optimizer: Mapping[str, Any] | None = None,
                     keep_previous: bool = False) -> tuple[int, str]:
    """Write a checkpoint to ``path`` atomically; returns its size in bytes and its sha256.
    ``keep_previous``: see :func:`write_atomically`."""
    import h5py  # lazily: importing the sink module must not load HDF5 for runs that never save

    def fill(tmp: str) -> None:
        # Built in memory, then written by Python: HDF5 writing to a nearly full disk crashes
        # the process as it closes the file (SIGSEGV), where a write of ours fails as an
        # OSError the checkpoint writer keeps and tries again. (At most twice the file's size
        # in memory while it is written.)
        with h5py.File(tmp, "w", driver="core", backing_store=False) as file:
            _fill(file, weights, metadata or {}, model_config, optimizer)
            file.flush()
            image = file.id.get_file_image()
        with open(tmp, "wb") as out:
            out.write(image)

    return write_atomically(path, fill, keep_previous=keep_previous)


def _suffix(name: str) -> str:
    """The file-name ending a writer chooses its format by (``.weights.h5``, ``.keras``)."""
    return ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]


def write_atomically(path: str | os.PathLike[str], fill: Callable[[str], None], *,
                     keep_previous: bool = False) -> tuple[int, str]:
    """Have ``fill`` write a file at a temporary path, then move it to ``path`` atomically;
    returns its size in bytes and its sha256.

    The temporary file is in the target's folder and ends as the target does (a writer such as
    Keras's ``model.save`` chooses the format by the ending). It is flushed and fsynced, then
    renamed over the target with ``os.replace`` (and the folder fsynced): a crash leaves either
    the previous file or the new one at the target, never a partial file.

    ``keep_previous``: the file the new one replaces stays, whole, at :func:`previous_path`
    (a hard link made before the rename): a crash after the rename but before the event log
    recorded the save leaves the file the log does record there.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise IsADirectoryError(f"checkpoint path {target} is a directory; give a file name")
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    prefix = f".{os.path.basename(target)}."
    ending = ".tmp" + _suffix(target)
    _remove_leftovers(directory, prefix, (ending, ".tmp"))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=ending, dir=directory)
    os.close(fd)
    try:
        fill(tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp's is private: the mode open() would give
        size, digest = _fsync_and_hash(tmp)
        if keep_previous:
            _keep_previous(target)
        with open(tmp, "rb") as written:  # the inode written, whatever is at the name later
            os.replace(tmp, target)
            _remember(os.fstat(written.fileno()))
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return size, digest


def previous_path(path: str) -> str:
    """Where a checkpoint writer keeps the file a save replaced (``keep_previous``): hidden
    beside it, ending as it does, so a framework's loader reads it by its ending."""
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.previous{_suffix(name)}")


def _keep_previous(target: str) -> None:
    """The regular file at ``target``, linked at its previous path (a link at ``target`` is
    not followed: nothing is kept). A file system without hard links keeps nothing."""
    try:
        if not stat.S_ISREG(os.lstat(target).st_mode):
            return
        previous = previous_path(target)
        # Linked under a fresh name, then renamed: the previous path always holds a whole file.
        linked = f"{previous}.{secrets.token_hex(8)}.tmp"
        os.link(target, linked, follow_symlinks=False)
        os.replace(linked, previous)
    except OSError:
        pass  # durability only: the save itself goes on


def remove_previous(path: str) -> None:
    """Remove the file :func:`previous_path` keeps for ``path``, if it is a regular file."""
    previous = previous_path(path)
    with suppress(OSError):
        if stat.S_ISREG(os.lstat(previous).st_mode):
            os.unlink(previous)


#: The files this process wrote, (device, inode) -> (size, mtime, ctime) as written: one still
#: so is unchanged since (a write, or setting its times back, changes its ctime), and its
#: parse needs no child (see sinks.isolated). The newest few thousand.
_WRITTEN: dict[tuple[int, int], tuple[int, int, int]] = {}


def _remember(st: os.stat_result) -> None:
    _WRITTEN[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if len(_WRITTEN) > 4096:
        del _WRITTEN[next(iter(_WRITTEN))]


def _written_here(fd: int) -> bool:
    """Whether the open file is one this process wrote, unchanged since."""
    st = os.fstat(fd)
    return _WRITTEN.get((st.st_dev, st.st_ino)) == (st.st_size, st.st_mtime_ns,
                                                    st.st_ctime_ns)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of the file at ``path``, as ``checkpoint_saved`` records it. Opened as
    :func:`load_checkpoint` opens a file: a regular file only (a FIFO or a device is a
    :class:`~eventbus.errors.CheckpointError`, never waited on or read without end), read no
    further than the size it had when opened."""
    digest = hashlib.sha256()
    with _open_regular(os.fspath(path)) as file:
        left = os.fstat(file.fileno()).st_size
        while left > 0 and (chunk := file.read(min(left, 1 << 20))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _remove_leftovers(directory: str, prefix: str, endings: tuple[str, ...]) -> None:
    """Remove temporary files a crashed write of the same target left behind. Only files and
    links go (``lstat`` says which); anything else under such a name (a folder put there), or
    one that cannot be removed, is left, and the save goes on: it writes a new name of its own."""
    for name in os.listdir(directory):
        if name.startswith(prefix) and any(
                name.endswith(end) and len(name) > len(prefix) + len(end) for end in endings):
            path = os.path.join(directory, name)
            with suppress(OSError):
                mode = os.lstat(path).st_mode
                if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                    os.unlink(path)


# --- reading: a checkpoint is untrusted input ---------------------------------------------------
#
# What the loader refuses, and why (docs/reliability.md lists each with its test):
# - anything but a regular file (a FIFO would hang the open, a device never ends);
# - links other than hard links (a soft or external link reads another object or file), datasets
#   whose values live outside the file (external storage: any readable file's bytes come back as
#   "weights"; virtual datasets: other files' datasets), filters HDF5 would look for as a plugin
#   library to load;
# - dtypes that are not plain numbers (references, variable-length, compound, opaque, arrays);
# - a dataset that declares more bytes than the file holds for it: uncompressed, every byte
#   returned is stored in the file; compressed, at most MAX_EXPANSION times what is stored (just
#   above deflate's ceiling of 1032:1), and the datasets together store no more than the file's
#   size, so a checkpoint of N bytes makes the loader allocate at most about MAX_EXPANSION * N;
# - metadata and model_config that are not JSON objects, and a names list that is not the list
#   of the datasets present;
# - given the model the checkpoint is read for (``expect``, see Expected): weights whose names,
#   shapes or dtype kinds are not the model's, and datasets declaring together more than a
#   checkpoint of the model can hold. Both are told from the declared shapes and dtypes, before
#   any value is read: a file of kilobytes may declare hundreds of megabytes within the
#   compression bound above, which only the model can tell is no checkpoint of it.

#: How much a compressed dataset may expand: deflate's ceiling (1032:1) and a margin.
MAX_EXPANSION = 1100
#: A chunk larger than its dataset is allowed (an extendible dataset), up to this many bytes.
_MAX_SPARE_CHUNK = 1 << 20
#: HDF5 filters whose decoders are built into HDF5 or h5py: deflate, shuffle, fletcher32, szip,
#: nbit, scaleoffset, lzf. Any other id makes HDF5 search its plugin path for a library to load.
_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
#: Those whose output may be larger than their input: deflate, szip, n-bit, scale-offset, LZF.
#: Each alone stays within MAX_EXPANSION; chained, they multiply.
_EXPANDING = frozenset({1, 4, 5, 6, 32000})
_NUMERIC = frozenset("biufc")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: The largest fixed-size attribute value read (this module writes variable-length strings).
_MAX_FIXED_ATTR = 1 << 20


def _refuse(path: str, where: str | None, what: str, *, misfit: bool = False) -> CheckpointError:
    place = f"{path}: {where}" if where else path
    return CheckpointError(f"{place}: {what}", path=path, dataset=where, misfit=misfit)


def _open_regular(path: str, *, follow_links: bool = True) -> Any:
    """``path`` opened for reading, if it is a regular file; stat'ed after opening, so what is
    checked is what is read. O_NONBLOCK: opening a FIFO returns at once instead of waiting for
    a writer."""
    flags = os.O_RDONLY | NON_BLOCK | UNTTY | (0 if follow_links else NO_FOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise OSError(exc.errno, f"{path}: {os.strerror(exc.errno)}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(path, None, f"is {_kind(mode)}; a checkpoint is a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _attr(obj: Any, name: str, path: str, where: str, *, kind: type) -> Any:
    """The scalar attribute ``name`` of ``obj`` (a str or an int), or None when absent; its
    type, shape and size are checked before it is read."""
    import h5py

    if name not in obj.attrs:
        return None
    label = f"{where.rstrip('/')}/@{name}" if where != "/" else f"/@{name}"
    try:
        attr = h5py.h5a.open(obj.id, name.encode())
        dtype, shape = attr.dtype, attr.shape
    except Exception as exc:  # noqa: BLE001 - an HDF5 type NumPy has no dtype for, ...
        raise _refuse(path, label, f"cannot be read ({exc})") from None
    if shape != ():
        raise _refuse(path, label, f"has shape {shape}; a checkpoint stores one value here")
    if dtype.itemsize > _MAX_FIXED_ATTR:  # a fixed-length string declared gigabytes long
        raise _refuse(path, label, f"declares {dtype.itemsize} bytes for one value")
    if kind is str:
        if h5py.check_string_dtype(dtype) is None:
            raise _refuse(path, label, f"has dtype {dtype}; expected a string")
    elif dtype.kind not in "iu" or h5py.check_enum_dtype(dtype) is not None:
        raise _refuse(path, label, f"has dtype {dtype}; expected an integer")
    try:
        value = obj.attrs[name]
    except Exception as exc:  # noqa: BLE001 - h5py raises several kinds on damaged data
        raise _refuse(path, label, f"cannot be read ({type(exc).__name__}: {exc})") from None
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise _refuse(path, label, "is not UTF-8 text") from None
    return value if kind is str else int(value)


def _json_attr(obj: Any, name: str, path: str, where: str, expect: type) -> Any:
    text = _attr(obj, name, path, where, kind=str)
    if text is None:
        return None
    label = f"{where.rstrip('/')}/@{name}" if where != "/" else f"/@{name}"
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _refuse(path, label, f"is not JSON ({exc})") from None
    if not isinstance(value, expect):
        raise _refuse(path, label, f"is a JSON {type(value).__name__}; expected a JSON "
                      f"{'object' if expect is dict else 'list'}")
    return value


def _link(group: Any, name: str, path: str, where: str) -> None:
    """Refuse ``name`` in ``group`` unless it is a hard link: a soft or external link, which
    would read another object or another file, is never followed."""
    import h5py

    try:
        link = group.get(name, getlink=True)
    except Exception as exc:  # noqa: BLE001 - h5py has no class for user-defined links
        raise _refuse(path, where, f"is a link of a kind this loader does not follow ({exc})") \
            from None
    if link is None:
        raise _refuse(path, where, "is missing")
    if isinstance(link, h5py.HardLink):
        return
    if isinstance(link, h5py.ExternalLink):
        raise _refuse(path, where, f"is an external link to {link.path!r} in file "
                      f"{link.filename!r}; a checkpoint holds its datasets itself")
    if isinstance(link, h5py.SoftLink):
        raise _refuse(path, where, f"is a soft link to {link.path!r}; a checkpoint holds its "
                      "datasets under their own names")
    raise _refuse(path, where, f"is a link of a kind this loader does not follow ({link!r})")


def _declared(dataset: Any, path: str, where: str) -> tuple[int, int]:
    """Check one dataset before anything of it is read; returns (bytes it declares, bytes it
    stores in the file)."""
    import h5py

    plist = dataset.id.get_create_plist()
    if dataset.is_virtual:
        raise _refuse(path, where, "is a virtual dataset: its values come from other datasets "
                      "or files; a checkpoint holds its values itself")
    if plist.get_external_count():
        raise _refuse(path, where, "keeps its values in external files "
                      f"({[entry[0] for entry in dataset.external or []]}); a checkpoint "
                      "holds its values itself")
    layout = plist.get_layout()
    if layout not in (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED):
        raise _refuse(path, where, f"has an HDF5 storage layout ({layout}) this loader does "
                      "not read")
    try:
        dtype = dataset.dtype
    except Exception as exc:  # noqa: BLE001 - an HDF5 type NumPy cannot hold
        raise _refuse(path, where, f"has an HDF5 type NumPy cannot hold ({exc})") from None
    if dtype.kind not in _NUMERIC or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.hasobject:
        raise _refuse(path, where, f"has dtype {dtype}; a checkpoint holds numeric arrays only "
                      "(bool, int, uint, float, complex)")
    shape = dataset.shape
    if shape is None:
        raise _refuse(path, where, "has no shape (an empty HDF5 dataspace)")
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    unknown = [f for f in filters if f not in _FILTERS]
    if unknown:
        raise _refuse(path, where, f"uses HDF5 filter {unknown[0]}, which HDF5 would look for as "
                      "a plugin library; checkpoints use HDF5's own filters only")
    expanding = [f for f in filters if f in _EXPANDING]
    if len(expanding) > 1 or len(set(filters)) < len(filters):
        # HDF5 decodes a chunk through the whole pipeline before it compares its size with
        # the dataset's: deflate twice turned a 12 KB file into a gigabyte decoded.
        raise _refuse(path, where, f"decodes through the filters {filters}: more than one that "
                      "expands, or one twice; a checkpoint's chunks pass one at most")
    declared = math.prod(shape) * dtype.itemsize
    stored = dataset.id.get_storage_size()
    if layout == h5py.h5d.CHUNKED:
        chunks = dataset.chunks
        if math.prod(chunks) * dtype.itemsize > max(declared, _MAX_SPARE_CHUNK):
            raise _refuse(path, where, f"has chunks of {chunks}, larger than the dataset "
                          f"{shape}")
        expected = math.prod(-(-size // chunk) for size, chunk in zip(shape, chunks))
        if dataset.id.get_num_chunks() < expected:
            raise _refuse(path, where, f"declares shape {shape} ({declared} bytes) but stores "
                          f"only {dataset.id.get_num_chunks()} of its {expected} chunks")
    limit = stored * (MAX_EXPANSION if filters else 1)
    if declared > limit:
        raise _refuse(path, where, f"declares shape {shape} of {dtype} ({declared} bytes) but "
                      f"stores {stored} bytes in the file"
                      + (f" (more than {MAX_EXPANSION}x compression)" if filters else ""))
    return declared, stored


def _walk(group: Any, prefix: str, path: str, where: str, seen: set[Any],
          found: dict[str, Any]) -> None:
    """Every dataset under ``group``, by its name relative to the top group, through hard links
    only; an object reached twice (a cycle, or two names for one dataset) is refused."""
    import h5py

    for key in group:
        name = f"{prefix}{key}"
        here = f"{where}/{name}"
        _link(group, key, path, here)
        obj = group[key]
        if obj.id in seen:
            raise _refuse(path, here, "is a second link to an object already read (a cycle or "
                          "a shared dataset); a checkpoint stores each array once")
        seen.add(obj.id)
        if isinstance(obj, h5py.Group):
            _walk(obj, f"{name}/", path, where, seen, found)
        elif isinstance(obj, h5py.Dataset):
            found[name] = obj
        else:
            raise _refuse(path, here, f"is a {type(obj).__name__}, not a dataset or group")


def _arrays(file: Any, top: str, path: str,
            seen: set[Any]) -> tuple[dict[str, Any], int, int]:
    """The datasets of ``/top`` in the order its ``names`` attribute gives, each checked, and
    the bytes they declare and store in the file together; nothing of their values is read
    yet."""
    import h5py

    where = f"/{top}"
    _link(file, top, path, where)
    group = file[top]
    if not isinstance(group, h5py.Group):
        raise _refuse(path, where, f"is a {type(group).__name__}; expected a group")
    seen.add(group.id)
    names = _json_attr(group, "names", path, where, list)
    if names is None:
        raise _refuse(path, f"{where}/@names", "is missing; it lists the arrays in order")
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise _refuse(path, f"{where}/@names", "must list each array's name (a str) once")
    found: dict[str, Any] = {}
    _walk(group, "", path, where, seen, found)
    if set(names) != set(found):
        extra = sorted(set(found) - set(names))
        missing = sorted(set(names) - set(found))
        raise _refuse(path, f"{where}/@names", "does not list the datasets present"
                      + (f"; not listed: {extra[:5]}" if extra else "")
                      + (f"; listed but absent: {missing[:5]}" if missing else ""))
    sizes = [_declared(found[name], path, f"{where}/{name}") for name in names]
    return ({name: found[name] for name in names}, sum(d for d, _ in sizes),
            sum(s for _, s in sizes))


@dataclass(frozen=True)
class Expected:
    """What a checkpoint of one model holds (:func:`expected_of`), compared with what a file
    declares before any of its values is read."""

    #: Each weight's (name, shape, dtype kind), in the model's order.
    weights: tuple[tuple[str, tuple[int, ...], str], ...]
    #: The most bytes the datasets of a checkpoint of the model declare together (its weights
    #: and an optimizer's state, :data:`_LARGER_THAN_WEIGHTS` times the weights and 64 MiB).
    most: int
    #: Other names the adapter reads weights by, (name, key): Keras's variable paths, the keys
    #: of an earlier eventbus. A file whose names are none of the model's keys is compared
    #: through them, or, when it has as many weights as the model, by position, as the
    #: adapter's ``set_weights`` reads it; without aliases, only by the model's keys.
    aliases: tuple[tuple[str, str], ...] = ()


def expected_of(model: Any) -> Expected | None:
    """What a checkpoint of ``model`` holds, from its ``get_weights()`` (and ``weight_paths()``
    where the adapter has one); None when there is no model or it cannot tell (no weights yet:
    a Keras model not built, whose ``set_weights`` then says what it makes of the file)."""
    get = getattr(model, "get_weights", None)
    if not callable(get):
        return None
    try:
        weights = get()
        if not isinstance(weights, Mapping):
            return None
        arrays = [(str(name), np.asarray(value)) for name, value in weights.items()]
        paths = getattr(model, "weight_paths", None)
        aliases = tuple((str(p), str(k)) for k, p in paths().items()) if callable(paths) else ()
    except Exception:  # noqa: BLE001 - nothing to compare with: the loader's checks still hold
        return None
    if not arrays:
        return None
    total = sum(array.nbytes for _, array in arrays)
    return Expected(tuple((name, tuple(int(n) for n in array.shape), array.dtype.kind)
                          for name, array in arrays),
                    _LARGER_THAN_WEIGHTS * total + _OVERHEAD, aliases)


def _misfit(datasets: Mapping[str, Any], expect: Expected) -> tuple[str, str] | None:
    """The first weight of ``datasets`` (checked, not read) that is not the model's, and how:
    another name, shape or dtype kind, or one of the model's the file lacks; None when every
    weight fits."""
    want = {name: (shape, kind) for name, shape, kind in expect.weights}
    names = list(datasets)
    keys = names
    aliases = dict(expect.aliases)
    if aliases and not set(names) & set(want):
        if set(names) <= set(aliases):
            keys = [aliases[name] for name in names]
        elif len(names) == len(want):
            keys = list(want)  # by position, as the adapter reads another process's paths
    for name, key in zip(names, keys):
        if key not in want:
            return name, f"is no weight of the model (its weights: {list(want)[:5]})"
        shape, kind = want[key]
        dataset = datasets[name]
        if tuple(dataset.shape) != shape:
            return name, f"has shape {tuple(dataset.shape)}, the model's is {shape}"
        if kind in _NUMERIC and dataset.dtype.kind != kind:
            return name, f"has dtype {dataset.dtype}, the model's is of kind {kind!r}"
    missing = [key for key in want if key not in set(keys)]
    if missing:
        return missing[0], "is missing: the model has this weight, the file does not"
    return None


def _read(datasets: Mapping[str, Any], path: str, top: str) -> dict[str, np.ndarray]:
    out = {}
    for name, dataset in datasets.items():
        try:
            out[name] = np.asarray(dataset[()])
        except Exception as exc:  # noqa: BLE001 - damaged data: h5py raises several kinds
            raise _refuse(path, f"/{top}/{name}", f"cannot be read ({type(exc).__name__}: "
                          f"{exc})") from None
    return out


def load_checkpoint(path: str | os.PathLike[str], *, follow_links: bool = True,
                    expect: Expected | None = None) -> Checkpoint:
    """Read a checkpoint written by this module: weights, metadata, config, optimizer state.

    The file is untrusted input: it is read only if it is a regular file, and only its own
    numeric datasets, each checked against the bytes the file holds for it before any is read
    (see this module's reading notes and docs/reliability.md). Anything else is a
    :class:`~eventbus.errors.CheckpointError` naming the file and the dataset; a file that is
    not HDF5 at all, or cannot be opened, an ``OSError`` naming the file.
    ``follow_links=False``: a link at ``path`` is an ``OSError``, not followed (a folder others
    can write, such as a backup's). ``expect``: the model the checkpoint is for
    (:func:`expected_of`); weights that are not its (another name, shape or dtype kind), or
    datasets declaring more than a checkpoint of it can hold, are a ``CheckpointError``
    naming the first such dataset, told from what the file declares before any value is read.
    """
    name = os.fspath(path)
    with _open_regular(name, follow_links=follow_links) as handle:
        return _load_open(handle, name, expect)


def _load_open(handle: Any, name: str, expect: Expected | None = None) -> Checkpoint:
    """:func:`load_checkpoint` of a regular file already open (``name`` names it in
    messages): the file is read through ``handle`` from its start, never opened again.

    Parsed first in a child process under a deadline (:mod:`sinks.isolated`): a crafted file
    can make the HDF5 library loop for ever, which only a process can be stopped in."""
    if not _written_here(handle.fileno()):
        run_isolated(lambda: _parse(handle, name, expect) and None, path=name,
                     seconds=parse_seconds(stored_size(os.fstat(handle.fileno()))),
                     descriptor=handle.fileno())
    return _parse(handle, name, expect)


def _parse(handle: Any, name: str, expect: Expected | None = None) -> Checkpoint:
    import h5py

    handle.seek(0)
    size = os.fstat(handle.fileno()).st_size
    try:
        file = h5py.File(handle, "r")
    except (OSError, ValueError, RuntimeError) as exc:  # h5py's message does not name it
        raise OSError(f"{name}: not an HDF5 checkpoint file ({exc})") from exc
    with file:
        try:
            return _load(file, name, size, expect)
        except CheckpointError:
            raise
        except (KeyError, OSError, RuntimeError, TypeError, ValueError,
                RecursionError) as exc:
            # A structure damaged in a way the checks above do not name.
            raise _refuse(name, None, f"cannot be read as a checkpoint "
                          f"({type(exc).__name__}: {exc})") from None


def _load(file: Any, path: str, size: int, expect: Expected | None = None) -> Checkpoint:
    if _attr(file, "format", path, "/", kind=str) != FORMAT:
        raise _refuse(path, None, f"not an eventbus checkpoint (no format={FORMAT!r} "
                      "attribute)")
    version = _attr(file, "format_version", path, "/", kind=int) or 0
    if version > FORMAT_VERSION:
        raise _refuse(path, None, f"checkpoint format version {version} is newer than this "
                      f"eventbus reads ({FORMAT_VERSION}); upgrade eventbus")
    metadata = _json_attr(file, "metadata", path, "/", dict)
    if metadata is None:
        raise _refuse(path, "/@metadata", "is missing")
    try:
        metadata = decode_nonfinite({"details": metadata})["details"]
    except RecursionError:
        raise _refuse(path, "/@metadata", "is nested too deeply") from None
    model_config = _json_attr(file, "model_config", path, "/", dict)
    seen: set[Any] = set()
    weights, declared, stored = _arrays(file, "weights", path, seen)
    optimizer: dict[str, Any] = {}
    if file.id.links.exists(b"optimizer"):
        optimizer, more, more_stored = _arrays(file, "optimizer", path, seen)
        declared += more
        stored += more_stored
    if stored > size:
        # Each dataset's bytes are its own: more than the file holds means chunks that point
        # at the same bytes, a way to multiply what one compressed chunk expands to.
        raise _refuse(path, None, f"its datasets claim {stored} bytes of storage in a file of "
                      f"{size} bytes")
    if expect is not None:
        # Before any value is read, here and in the checking child: a file of kilobytes may
        # declare hundreds of megabytes, decoded twice before the model could refuse them.
        misfit = _misfit(weights, expect)
        if misfit is not None:
            raise _refuse(path, f"/weights/{misfit[0]}", f"does not fit the model: {misfit[1]}",
                          misfit=True)
        if declared > expect.most:
            raise _refuse(path, None, f"its datasets declare {declared:,} bytes, more than a "
                          f"checkpoint of this model can hold ({expect.most:,})", misfit=True)
    return Checkpoint(weights=_read(weights, path, "weights"), metadata=metadata,
                      model_config=model_config,
                      optimizer=_read(optimizer, path, "optimizer"))


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The weights of a checkpoint as a PyTorch ``state_dict``, for a checkpoint written
    through :class:`eventbus.integrations.torch.TorchModel` (keyed by PyTorch's names):
    ``net.load_state_dict(load_state_dict("best.h5"))``.

    Read by :func:`load_checkpoint` (nothing is unpickled). The tensors are on the CPU; the
    module's ``load_state_dict`` copies them to its devices and dtypes (a bfloat16 weight,
    stored as float32, goes back to bfloat16).
    """
    import torch  # only for this function: the sink itself needs no framework

    return {name: torch.from_numpy(np.ascontiguousarray(array))
            for name, array in load_checkpoint(path).weights.items()}


class HDF5CheckpointWriter(Plugin, Sink):
    """Writes a checkpoint for every ``save_checkpoint`` decision; records ``checkpoint_saved``.

    A sink taking the ``save_checkpoint`` records. An adapter with a ``save(path,
    weights_only)`` method (:class:`eventbus.integrations.keras.KerasModel`) writes the file in
    its framework's own format (Keras's ``.keras``, ``.weights.h5``); any other adapter's
    weights (``get_weights()``) go into this module's HDF5 layout, with, unless the decision
    asks for weights only, the adapter's ``get_config()`` and ``get_optimizer_state()`` where
    it has them. Either way the file is written under a temporary name and renamed into place,
    and its sha256 is recorded. A failed write is recorded as ``sink_failed`` and the writer
    stays on, so one full disk does not end checkpointing for the rest of the run.

    On a resumed run the writer puts the newest checkpoint the log says was saved, its sha256
    verified, back into the model (a file that is gone or changed is passed over, with a
    warning, for the one before); with none, a ``warning`` says the weights were not restored.
    A BackupAndRestore on the bus restores instead (its backup is at least as new).

    A ``delete_checkpoint`` decision (ModelCheckpoint's ``save_top_k``) removes a file this
    writer wrote, in this run or in the run it resumes (the log's ``checkpoint_saved``), and
    only while it holds the bytes written (their recorded sha256): the path is opened without
    following a link, must be a regular file, and is unlinked only if it is still that same
    file. The removal is recorded as ``checkpoint_deleted``; a file it did not write, one that
    is gone, a link, or a changed file is left, with a ``warning`` saying why; a failed unlink
    is a ``sink_failed``. A removal the resumed log decided but a crash cut short (no
    ``checkpoint_deleted`` after it) is carried out when the run resumes.

    The resumed log is untrusted input, so what it records is only a claim: a file it names is
    read (restored) or removed only if the writer can tell it wrote it, by the rule of
    :meth:`_place`; anything else is left untouched, with a ``warning`` naming the path and the
    reason. Such a file is opened once, without following a link and without blocking,
    must be a regular file, is read no further than its size, and the descriptor that was
    hashed is the one loaded from or checked before the unlink.

    ``verbose`` is accepted for compatibility; what a checkpoint prints is ModelCheckpoint's
    ``verbose`` (the console sink prints it).
    """

    side_effects = True
    takes = frozenset({"save_checkpoint", "checkpoint_saved", "delete_checkpoint",
                       "checkpoint_deleted", "resumed", "train_begin", "epoch_begin",
                       "train_end"})
    #: Marks a checkpoint writer; ModelCheckpoint adds one of its own only when none is there.
    writes_checkpoints = True
    #: Puts the model's weights back when a run resumes (see :mod:`eventbus.resume`).
    restores_weights = True

    def __init__(self, verbose: int = 0):
        self.verbose = verbose
        #: True for the writer ModelCheckpoint added itself; it defers to one the user gave.
        self.auto = False
        self._run: Run | None = None
        #: The checkpoints the resumed log says were saved, by path, the newest save of each
        #: path only (it overwrote the older ones), oldest first.
        self._saved: dict[str, _Saved] = {}
        #: Every save_checkpoint decision of the resumed log, by seq: (path, source, epoch).
        self._decisions: dict[int, tuple[str, str | None, int | None]] = {}
        self._pending = False
        #: Every file this writer wrote and has not removed, in this run and (from the log)
        #: the run it resumes. Only these are ever removed, and those from the log only by
        #: the rule of :meth:`_place`.
        self._written: dict[str, _Saved] = {}
        #: Paths saved in this process since the last flush point (``_AFTER_A_FLUSH``): the
        #: file the first of those saves replaced, the one the log vouches for at the last
        #: finished epoch, is kept beside it (previous_path) until the log surely has them.
        self._replaced: set[str] = set()
        #: Saves a full disk refused (this process's own format only), by path, oldest first:
        #: (the decision, its write with the weights copied), tried again at every record.
        self._kept: dict[str, tuple[dict[str, Any], Callable[[], tuple[int, str]]]] = {}
        #: delete_checkpoint decisions of the resumed log with no checkpoint_deleted after
        #: them (the crash came between the two), by seq: (path, source), carried out when the
        #: run resumes.
        self._unfinished: dict[int, tuple[str, str | None]] = {}

    def open(self, run: Run) -> None:
        self._run = run

    def close(self) -> Any:
        """A last try of the saves a full disk refused (what is still refused is a
        sink_failed naming them); then the files kept in case a crash came between a save and
        its record go: the log holds every save by now."""
        run, out = self._run, []
        if self._kept and run is not None:
            out = self._retry(run)
            if self._kept:
                lost = ", ".join(f"{path} (epoch {record.get('epoch')})"
                                 for path, (record, _) in self._kept.items())
                self._kept.clear()
                out.append(SinkFailed(sink=run.label(self), event="close", error="OSError",
                                      message=f"the saves of {lost} could not be written"))
        for path in self._replaced:
            remove_previous(path)
        self._replaced.clear()
        return out or None

    def _deferred(self, run: Run) -> bool:
        return self.auto and any(
            p is not self and getattr(p, "writes_checkpoints", False) and
            not getattr(p, "auto", False) for p in (*run.plugins, *run.sinks))

    def catch_up(self, record: dict[str, Any], run: Run) -> None:
        """A record of the log a run resumes from: the checkpoints it saved are noted, each
        with the decision that named it (what :meth:`_place` judges them by)."""
        kind = record["kind"]
        if kind == "save_checkpoint":
            self._decisions[record["seq"]] = (record["path"], record.get("source"),
                                              record.get("epoch"))
        elif kind == "checkpoint_saved":
            path = record["path"]
            decision = self._decisions.pop(record.get("cause_seq"), None)  # type: ignore[arg-type]
            # The decision must name this very path: a checkpoint_saved pointing at another
            # decision (or at none) vouches for nothing.
            decided_by = decision[1] if decision is not None and decision[0] == path and \
                isinstance(decision[1], str) else None
            entry = _Saved(sha256=record["sha256"], size=record.get("size"), seq=record["seq"],
                           epoch=decision[2] if decision is not None else record.get("epoch"),
                           decided_by=decided_by)
            self._saved.pop(path, None)  # to the end: the newest
            self._saved[path] = entry
            self._written[path] = entry
            # A newer save at a path an unfinished removal names: the new file stays.
            self._unfinished = {s: d for s, d in self._unfinished.items() if d[0] != path}
        elif kind == "delete_checkpoint":
            self._unfinished[record["seq"]] = (record["path"], record.get("source"))
        elif kind == "checkpoint_deleted":
            self._saved.pop(record["path"], None)  # gone: not a checkpoint to restore
            self._written.pop(record["path"], None)
            self._unfinished.pop(record.get("cause_seq"), None)  # type: ignore[arg-type]

    def write(self, record: dict[str, Any]) -> Any:
        run = self._run
        if run is None or self._deferred(run):
            return None
        kind = record["kind"]
        if self._replaced and kind in _AFTER_A_FLUSH:
            # The saves that replaced files are in the log by now (flushed at every decision
            # and epoch end): the files they replaced need not stay.
            for path in self._replaced:
                remove_previous(path)
            self._replaced.clear()
        if kind == "resumed":
            self._pending = True
            if self._unfinished:
                return self._finish_deletes(run)
        if kind == "delete_checkpoint":
            return self._delete(record, run)
        kept = self._retry(run) if self._kept else []
        if kind != "save_checkpoint":
            if self._pending and run.model is not None:
                self._pending = False
                return kept + self._restore(run)
            return kept or None
        path = record["path"]
        model = run.model
        if model is None:
            return WarningRecord(
                message=f"save_checkpoint from {record['source']!r} needs a model adapter; the "
                        f"bus has none (Bus(model=...)), so {path} was not written",
                details={"path": path})
        save = self._save_of(record, model, run)
        try:
            size, digest = save()
        except Exception as exc:  # noqa: BLE001 - any write failure is the sink's to record
            # Returned rather than raised: a raising sink is switched off for the whole run.
            then, given_up = "", []
            if is_transient(exc) and not callable(getattr(model, "save", None)):
                # A full disk: these weights (held, copied) are written at the next record.
                given_up = self._keep(record, save, run)
                then = "; the weights are kept and written at the writer's next record"
            return [*kept, SinkFailed(sink=run.label(self), event=record["kind"],
                                      error=type(exc).__name__, message=f"{exc}{then}"),
                    *given_up]
        return [*kept, self._saved_now(record, size, digest)]

    def _saved_now(self, record: dict[str, Any], size: int, digest: str) -> CheckpointSaved:
        path = record["path"]
        self._replaced.add(path)
        self._written[path] = _Saved(sha256=digest, size=size, seq=record["seq"],
                                     epoch=record.get("epoch"), decided_by=record.get("source"),
                                     live=True)
        self._kept.pop(path, None)  # a newer save of the path: the kept one is superseded
        return CheckpointSaved(path=path, size=size, sha256=digest, cause_seq=record["seq"],
                               epoch=record.get("epoch"))

    def _keep(self, record: dict[str, Any], save: Callable[[], tuple[int, str]],
              run: Run) -> list[Any]:
        """Keep a refused save for the next record; a save pushed out of the few kept (each
        holds a copy of the weights) is given up, and said so."""
        if isinstance(save, _Save):
            save.copy()  # the arrays may be the model's own: training goes on
        self._kept.pop(record["path"], None)
        self._kept[record["path"]] = (record, save)
        out: list[Any] = []
        while len(self._kept) > _MAX_KEPT_SAVES:
            path, (old, _) = next(iter(self._kept.items()))
            del self._kept[path]
            out.append(SinkFailed(sink=run.label(self), event="save_checkpoint",
                                  error="OSError", cause_seq=old["seq"],
                                  message=f"the kept save of {path} (epoch {old.get('epoch')}) "
                                  f"is given up: {_MAX_KEPT_SAVES} newer saves wait for the "
                                  "disk too"))
        return out

    def _retry(self, run: Run) -> list[Any]:
        """Write the saves a full disk refused, oldest first: their checkpoint_saved records
        name the decisions that asked for them."""
        out: list[Any] = []
        for path, (record, save) in list(self._kept.items()):
            try:
                size, digest = save()
            except Exception as exc:  # noqa: BLE001 - any failure is the sink's to record
                if is_transient(exc):
                    break  # still full: tried again at the next record
                self._kept.pop(path, None)
                out.append(SinkFailed(sink=run.label(self), event="save_checkpoint",
                                      error=type(exc).__name__, message=f"{exc}; the kept "
                                      f"save of {path} (epoch {record.get('epoch')}) is given "
                                      "up", cause_seq=record["seq"]))
                continue
            self._kept.pop(path, None)
            out.append(self._saved_now(record, size, digest))
        return out

    # --- what of a log's paths the writer may touch ------------------------------------------

    def _place(self, path: str, entry: _Saved, run: Run, *,
               removing: str | None = None) -> tuple[str, list[str]] | str | None:
        """Where the file at ``path`` may be opened, for a file this writer can tell it wrote:
        None for one it wrote in this process (opened by its name), else (a folder the user
        named, the names below it); or, in words, why the writer will not touch it.

        A log only claims that a file was saved, and anyone may have written the log; so a
        file it names is the writer's only if all of this holds:

        - the log has the ``save_checkpoint`` decision the ``checkpoint_saved`` answers
          (its ``cause_seq``), naming the same path; a removal (``removing``: the label of
          the plugin asking) comes from that same plugin;
        - a plugin with that decision's label is on the bus now, and would name this path
          now: one with a ``filepath`` template (ModelCheckpoint) must make it (a field stands
          for part of one name, ``-v2`` may follow, as ModelCheckpoint's versions do, or it is
          the plugin's ``last_path`` with ``save_last``). A plugin without one (a third-party
          decider) has its files read back only from the folder of one of the run's logs,
          and none removed: nothing tells which files there are its own;
        - below the template's fixed folder (or the log's), no name is empty, ``.`` or ``..``,
          and the path is then opened one folder at a time without following a link, so a
          link anywhere below that folder, or at the file, is never followed.

        The fixed folder is the part of the template before its first field, up to a ``/``:
        the user's own, so a link there (``/home`` on some systems) is followed.
        """
        if entry.live:
            return None
        decided_by = entry.decided_by
        if decided_by is None:
            return ("has no save_checkpoint decision in the log that names it (its "
                    "checkpoint_saved answers none)")
        if removing is not None and removing != decided_by:
            return f"was saved for {decided_by!r}, not for {removing!r}, which asks to remove it"
        plugin = next((p for p in run.plugins if run.label(p) == decided_by), None)
        if plugin is None:
            return f"was saved for {decided_by!r}, which is not on this bus"
        template = getattr(plugin, "filepath", None)
        last = getattr(plugin, "last_path", None)
        if isinstance(template, str):
            if getattr(plugin, "save_last", False) is True and path == last:
                root = path[:path.rfind("/") + 1] if "/" in path else ""
            else:
                found = _template_root(template, path)
                if found is None:
                    return f"is not a name {decided_by}'s filepath {template!r} makes"
                root = found
            rest = path[len(root):]
        elif removing is not None:
            return (f"was saved for {decided_by!r}, which has no filepath template to tell "
                    "its files by; after a resume only a file a template names is removed")
        else:
            if ".." in _names(path):
                return "has a '..' in it"
            absolute = os.path.abspath(path)
            folders = [os.path.dirname(os.path.abspath(log)) for log in run.logs]
            root = next((f for f in folders if absolute.startswith(os.path.join(f, ""))), "")
            if not root:
                return (f"is outside the folder of the run's log ({', '.join(folders)}), and "
                        f"{decided_by} has no filepath template to tell its files by")
            rest = absolute[len(os.path.join(root, "")):]
        names = _names(rest)
        bad = next((name for name in names if name in ("", ".", "..")), None)
        if bad is not None:
            return f"has {'an empty name' if not bad else repr(bad)} below {root or '.'}"
        return root, names

    def _delete(self, record: dict[str, Any], run: Run) -> Any:
        """Remove the file a ``delete_checkpoint`` names, if it is one this writer wrote and
        still holds the bytes written; otherwise leave it and say why. A save of it still
        kept (a full disk) is dropped: written later, it would undo the removal."""
        path, label = record["path"], run.label(self)
        if self._kept.pop(path, None) is not None and path not in self._written:
            return WarningRecord(
                source=label, message=f"{label}: delete_checkpoint from "
                f"{record.get('source')!r}: {path} was never written (the disk refused its "
                "save); its kept save is dropped", details={"path": path})
        entry = self._written.get(path)
        if entry is None:
            problem: str | None = "was not written by this checkpoint writer"
        else:
            place = self._place(path, entry, run, removing=str(record.get("source")))
            problem = place if isinstance(place, str) else _remove(path, place, entry)
        if problem is None:
            assert entry is not None
            if entry.live:
                remove_previous(path)  # a path this process wrote: its name is the user's
                self._replaced.discard(path)
            self._written.pop(path, None)
            self._saved.pop(path, None)
            return CheckpointDeleted(path=path, sha256=entry.sha256)
        if problem.startswith("cannot be removed"):
            return SinkFailed(sink=label, event=record["kind"], error="OSError",
                              message=f"{path} {problem}")
        if problem == "is gone":
            self._written.pop(path, None)
        return WarningRecord(
            source=label, message=f"{label}: delete_checkpoint from {record.get('source')!r}: "
            f"{path} {problem}; it is left as it is", details={"path": path})

    def _finish_deletes(self, run: Run) -> list[Any]:
        """Remove the files the resumed log decided to remove and the crash kept: those this
        writer can tell it wrote (:meth:`_place`), still holding the bytes written. Any other
        is left, with a warning naming it and why; one that is gone went some other way, and
        nothing is said of it."""
        label = run.label(self)
        out: list[Any] = []
        for seq, (path, source) in self._unfinished.items():
            entry = self._written.get(path)
            if entry is None:
                continue
            place = self._place(path, entry, run, removing=str(source))
            problem = place if isinstance(place, str) else _remove(path, place, entry)
            if problem is None:
                self._written.pop(path, None)
                self._saved.pop(path, None)
                out.append(CheckpointDeleted(path=path, sha256=entry.sha256, cause_seq=seq))
            elif problem != "is gone":
                out.append(WarningRecord(
                    source=label, message=f"{label}: resume: the removal of {path} the log "
                    f"decided (delete_checkpoint #{seq}) is not carried out: it {problem}; the "
                    "file is left as it is", details={"path": path, "seq": seq}))
        self._unfinished.clear()
        return out

    def _save_of(self, record: dict[str, Any], model: Any,
                 run: Run) -> Callable[[], tuple[int, str]]:
        """The write of this save, ready to call (and to call again: what it writes is taken
        from the model now, weights copied)."""
        weights_only = record.get("weights_only", False)
        save = getattr(model, "save", None)
        # The file a first save since the last flush point replaces is the one the log vouches
        # for at the last finished epoch: kept until the next flush point, not replaced by the
        # file of a later save of the same window (save_freq in batches saves several times in
        # an epoch, and a resume abandons them all, going back to that file). Decided as the
        # file is written: a save a full disk refused is written later, maybe in a new window.
        path = record["path"]

        def keep() -> bool:
            return path not in self._replaced

        if callable(save):  # the framework's own format, which its users load
            return lambda: write_atomically(path, lambda tmp: save(tmp, weights_only),
                                            keep_previous=keep())
        if record["path"].endswith(".keras"):
            raise ValueError(f"{record['path']}: a .keras file is Keras's format; this model "
                             f"adapter ({type(model).__name__}) writes HDF5: name the file "
                             ".h5 or .hdf5")
        evidence = record.get("evidence") or {}
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
        return _Save(record["path"], model.get_weights(), metadata, config, optimizer, keep)

    # --- resuming: the newest checkpoint the log vouches for goes back into the model --------

    def _restore(self, run: Run) -> list[Any]:
        if any(getattr(p, "restored_weights", False) for p in (*run.plugins, *run.sinks)):
            return []  # BackupAndRestore restored its own, newer, weights
        label = run.label(self)
        out: list[Any] = []
        for path, entry in list(reversed(self._saved.items())):
            place = self._place(path, entry, run)
            held = place if isinstance(place, str) else _hold(path, place)
            problem = held if isinstance(held, str) else \
                _too_large(held, run.model) or _check(held, entry)
            promote = False
            if problem is not None and not isinstance(place, str):
                # A crash after a save replaced the file and before the log recorded it: the
                # file the log records is the one kept beside it.
                previous = _hold_previous(path, place, entry)
                promote = previous is not None
                if previous is not None:
                    if not isinstance(held, str):
                        held.close()
                    held, problem = previous, None
                    out.append(WarningRecord(
                        source=label, message=f"{label}: resume: the checkpoint {path} was "
                        "saved again after the log's last record of it (a crash in between); "
                        "the file the log records, kept beside it, is restored",
                        details={"path": path, "seq": entry.seq}))
            if problem is not None:
                if not isinstance(held, str):
                    held.close()
                out.append(WarningRecord(
                    source=label, message=f"{label}: resume: the checkpoint {path} {problem}"
                    + ("; it is not read" if isinstance(place, str) else "")
                    + "; an older one is tried", details={"path": path, "seq": entry.seq}))
                continue
            assert isinstance(held, _Held)
            try:
                with held:
                    restored = self._load(run, path, label, held, entry.sha256)
            except Exception as exc:  # noqa: BLE001 - an unreadable file: try the one before
                out.append(WarningRecord(
                    source=label, message=f"{label}: resume: cannot load the checkpoint {path} "
                    f"into the model ({type(exc).__name__}: {exc}); an older one is tried",
                    details={"path": path, "seq": entry.seq}))
                continue
            out.extend(restored)
            self._saved.clear()
            # The file the log records goes back to its name (the next save keeps it beside
            # the new one, so a second crash before the log catches up still finds it), and a
            # kept file the crash left beside a file the log records is no longer needed.
            with suppress(OSError):
                if promote:
                    os.replace(previous_path(path), path)
                else:
                    remove_previous(path)
            epoch = entry.epoch
            if epoch is not None and epoch + 1 < run.initial_epoch:
                out.append(WarningRecord(
                    source=label, message=f"{label}: resume: the newest checkpoint, {path}, was "
                    f"saved at epoch {epoch + 1}; the run goes on at epoch "
                    f"{run.initial_epoch + 1} with those weights",
                    details={"path": path, "epoch": epoch,
                             "initial_epoch": run.initial_epoch}))
            return out
        out.append(WarningRecord(
            source=label, message=f"{label}: resume: the weights were not restored: "
            + ("no checkpoint the log records could be loaded"
               if self._saved else "the log records no checkpoint saved before the crash")
            + f"; the run goes on at epoch {run.initial_epoch + 1} with the model's current "
            "weights", details={"initial_epoch": run.initial_epoch,
                                "checkpoints": len(self._saved)}))
        self._saved.clear()
        return out

    @staticmethod
    def _load(run: Run, path: str, label: str, held: _Held, sha256: str) -> list[Any]:
        """Put the checkpoint ``held`` open (its sha256 checked) into the model: read through
        that same descriptor, never opened again by its name."""
        model = run.model
        tag = f"checkpoint:{path}"
        load = getattr(model, "load", None)
        if callable(load) and not _is_ours(held.file, path):
            # The framework's own format, which its loader reads by name (Keras picks the
            # format by the ending): it gets a private copy of the bytes checked, parsed in a
            # child first where it is HDF5 (a .weights.h5, a legacy .h5).
            _walk_isolated(held.file, path, most=_most_bytes(model))
            with _private_copy(held, path, sha256) as copy:
                load(copy)
            return [WeightsRestored(source=label, tag=tag)]
        # Weights that are not the model's are refused before they are read (the model would
        # refuse them only once restored, and no older checkpoint would be tried).
        checkpoint = _load_open(held.file, path, expected_of(model))
        run.keep_weights(tag, checkpoint.weights, optimizer=checkpoint.optimizer or None)
        run.restore_weights(tag, source=label)
        return []


@dataclass(frozen=True)
class _Saved:
    """A checkpoint file the writer saved, as far as it knows."""

    sha256: str
    size: int | None
    seq: int
    epoch: int | None
    #: The label of the plugin whose save_checkpoint decision named the path; for a file from
    #: the resumed log, None when the log has no decision naming it.
    decided_by: str | None
    #: Written by this writer in this process, not read from a log.
    live: bool = False


def _names(path: str) -> list[str]:
    """The names ``path`` is made of, split at every separator."""
    for sep in {os.sep, os.altsep} - {None, "/"}:
        path = path.replace(sep, "/")  # type: ignore[arg-type]
    return path.split("/")


def _template_root(template: str, path: str) -> str | None:
    """The fixed folder of ``template`` (its text before the first field, up to and with the
    last ``/``), if ``path`` is a name the template makes, else None. A field stands for any
    text without a ``/``; ModelCheckpoint's ``-v1``, ``-v2`` may come before the ending."""
    ending = _suffix(template)
    stem = template[:len(template) - len(ending)]
    try:
        parsed = list(string.Formatter().parse(stem))
    except ValueError:
        return None
    pattern: list[str] = []
    head: list[str] = []
    fixed = True
    for literal, field_name, _, _ in parsed:
        pattern.append(re.escape(literal))
        if fixed:
            head.append(literal)
        if field_name is not None:
            pattern.append("[^/]*")
            fixed = False
    whole = "".join(pattern) + r"(?:-v[0-9]+)?" + re.escape(ending)
    if re.fullmatch(whole, path, flags=re.DOTALL) is None:
        return None
    text = "".join(head)
    return text[:text.rfind("/") + 1]


class _Held:
    """A checkpoint file open for reading, reached without following a link; ``name`` is its
    name in the open folder ``folder`` (None: ``name`` is its whole path)."""

    def __init__(self, file: Any, folder: int | None, name: str):
        self.file = file
        self.folder = folder
        self.name = name
        self.info = os.fstat(file.fileno())

    def __enter__(self) -> _Held:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        if self.folder is not None:
            os.close(self.folder)
            self.folder = None

    def sha256(self) -> tuple[int, str]:
        """The bytes read (no more than the size the file had when opened) and their sha256:
        a file that grows while it is read is not read without end."""
        self.file.seek(0)
        digest, left = hashlib.sha256(), self.info.st_size
        while left > 0 and (chunk := self.file.read(min(left, 1 << 20))):
            digest.update(chunk)
            left -= len(chunk)
        return self.info.st_size - left, digest.hexdigest()

    def unlink(self) -> str | None:
        """Remove the name if it still names the file open here; else what is in the way."""
        try:
            now = os.stat(self.name, dir_fd=self.folder, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (self.info.st_dev, self.info.st_ino):
                return "was replaced while it was checked"
            os.unlink(self.name, dir_fd=self.folder)
        except FileNotFoundError:
            return "is gone"
        except OSError as exc:
            return f"cannot be removed ({exc.strerror or exc})"
        if self.folder is None:
            _fsync_dir(os.path.dirname(os.path.abspath(self.name)))
        else:
            with suppress(OSError):  # durability only, as _fsync_dir
                os.fsync(self.folder)
        return None


def _kind(mode: int) -> str:
    return "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) \
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
        "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


def _close(folder: int | None) -> None:
    if folder is not None:
        os.close(folder)


def _lmode(name: str, folder: int | None) -> int:
    """The mode of what is at ``name`` (in ``folder``), a link not followed; 0 if nothing."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except OSError:
        return 0


def _hold(path: str, place: tuple[str, list[str]] | None) -> _Held | str:
    """The checkpoint at ``path`` open for reading, where :meth:`HDF5CheckpointWriter._place`
    put it; or, in words, why it cannot be: it is gone, a link (never followed), in a folder
    reached through a link, or not a regular file (a FIFO is not waited on, a device not
    read)."""
    folder: int | None = None
    try:
        name = path
        if place is not None:
            root, names = place
            try:
                folder, inside = folder_below(root or ".", names[:-1])
            except Refused as exc:
                return exc.why
            name = names[-1] if folder is not None else os.path.join(inside, names[-1])
        try:
            fd = os.open(name, READ_ONLY, dir_fd=folder)
        except OSError:
            mode = _lmode(name, folder)  # to say why: a socket cannot be opened, for one
            if stat.S_ISLNK(mode):
                return "is a link now, not the file written; links are not followed"
            if mode and not stat.S_ISREG(mode):
                return f"is {_kind(mode)}, not the regular file written"
            raise
        try:
            mode = os.fstat(fd).st_mode  # of what was opened: what is checked is what is read
            file = os.fdopen(fd, "rb") if stat.S_ISREG(mode) else None
        except BaseException:
            os.close(fd)
            raise
        if file is None:
            os.close(fd)
            return f"is {_kind(mode)}, not the regular file written"
        held = _Held(file, folder, name)
        folder = None  # the held file's now
    except FileNotFoundError:
        return "is gone"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    finally:
        _close(folder)
    return held


#: Records a checkpoint writer gets only after the bus flushed the log since its last save.
_AFTER_A_FLUSH = frozenset({"epoch_begin", "train_begin", "train_end"})

#: Saves a full disk refused that a writer keeps (with a copy of their weights) to write later.
_MAX_KEPT_SAVES = 4


@dataclass
class _Save:
    """One checkpoint in this module's format, ready to write (and to write again)."""

    path: str
    weights: Mapping[str, Any]
    metadata: dict[str, Any]
    config: Mapping[str, Any] | None
    optimizer: Mapping[str, Any] | None
    #: Whether the file this save replaces is kept beside it, asked as it is written.
    keep_previous: Callable[[], bool] = lambda: True

    def __call__(self) -> tuple[int, str]:
        return write_checkpoint(self.path, self.weights, metadata=self.metadata,
                                model_config=self.config, optimizer=self.optimizer,
                                keep_previous=self.keep_previous())

    def copy(self) -> None:
        """Hold copies of the arrays (an adapter may hand out views of the model's own)."""
        self.weights = {k: np.array(v, copy=True) for k, v in self.weights.items()}
        if self.optimizer is not None:
            self.optimizer = {k: np.array(v, copy=True) for k, v in self.optimizer.items()}


def _hold_previous(path: str, place: tuple[str, list[str]] | None,
                   entry: _Saved) -> _Held | None:
    """The file :func:`previous_path` keeps for ``path``, open, if it is what ``entry``
    records (opened as :func:`_hold` opens ``path``: no link followed)."""
    previous = previous_path(path)
    if place is not None:
        root, names = place
        place = (root, [*names[:-1], os.path.basename(previous)])
    held = _hold(previous, place)
    if isinstance(held, str):
        return None
    if _check(held, entry) is not None:
        held.close()
        return None
    return held


#: How much larger than the model's weights a checkpoint may be: its optimizer's state (Adam
#: keeps two more copies), the model's config, HDF5's own layout.
_LARGER_THAN_WEIGHTS = 8
_OVERHEAD = 64 << 20


def _weights_bytes(model: Any) -> int | None:
    """The bytes ``model``'s weights take (None: no model, or none it can tell)."""
    get = getattr(model, "get_weights", None)
    if not callable(get):
        return None
    try:
        weights = get()
        arrays = weights.values() if isinstance(weights, Mapping) else weights
        return sum(int(getattr(a, "nbytes", None) or np.asarray(a).nbytes) for a in arrays)
    except Exception:  # noqa: BLE001 - no size to compare with: the loader's checks still hold
        return None


def _most_bytes(model: Any) -> int | None:
    """The most a checkpoint of ``model`` can hold, or None when the model cannot tell."""
    total = _weights_bytes(model)
    return None if total is None else _LARGER_THAN_WEIGHTS * total + _OVERHEAD


def _too_large(held: _Held, model: Any) -> str | None:
    """Why the open checkpoint is no checkpoint of ``model``, by its size alone, before a byte
    is hashed or copied: a log records whatever size a file has, and a sparse file of a
    terabyte (kilobytes on disk) would be read whole and copied to the temporary folder."""
    most = _most_bytes(model)
    size = held.info.st_size
    if most is None or size <= most:
        return None
    return (f"is {size:,} bytes, more than a checkpoint of this model can be (its weights take "
            f"{_weights_bytes(model):,}; at most {most:,} with an optimizer's state)")


def _check(held: _Held, entry: _Saved) -> str | None:
    """What is wrong with the open checkpoint against what was saved, if anything. Nothing
    is read of a file whose size is not the one recorded, and no more than that of one
    whose size is."""
    if entry.size is not None and held.info.st_size != entry.size:
        return (f"was changed since it was saved (it is {held.info.st_size} bytes; "
                f"{entry.size} were written)")
    read, digest = held.sha256()
    if read != held.info.st_size or digest != entry.sha256:
        return "was changed since it was saved (its sha256 differs)"
    return None


def _remove(path: str, place: tuple[str, list[str]] | None, entry: _Saved) -> str | None:
    """Unlink ``path`` if it is the regular file written (``entry``'s size and sha256), and
    still the file checked when it is unlinked; else what is in the way, in words."""
    held = _hold(path, place)
    if isinstance(held, str):
        return held
    with held:
        problem = _check(held, entry)
        return problem if problem is not None else held.unlink()


@contextmanager
def _private_copy(held: _Held, path: str, sha256: str) -> Iterator[str]:
    """A copy of the open checkpoint, in a folder only this process can read, under the
    checkpoint's own file name (a loader may choose the format by its ending); its bytes are
    the ones hashed while copying, and must have the sha256 written."""
    with tempfile.TemporaryDirectory(prefix="eventbus-restore-") as folder:
        copy = os.path.join(folder, os.path.basename(path))
        held.file.seek(0)
        digest, left = hashlib.sha256(), held.info.st_size
        with open(copy, "xb") as out:
            while left > 0 and (chunk := held.file.read(min(left, 1 << 20))):
                out.write(chunk)
                digest.update(chunk)
                left -= len(chunk)
        if left or digest.hexdigest() != sha256:
            raise CheckpointError(f"{path}: changed while it was read", path=path)
        yield copy


def _walk_isolated(handle: Any, path: str, *, most: int | None = None) -> None:
    """Parse the framework's file open at ``handle`` in a child under a deadline, as its loader
    will, and check every dataset as :func:`load_checkpoint` checks its own (no external or
    virtual storage, no filter HDF5 would load as a plugin, no chunk decoded through two
    expanding filters, nothing declared beyond what the file stores): a CheckpointError if the
    library loops or crashes on it, or a dataset would make the loader read elsewhere or
    allocate what the file does not justify. An HDF5 file (a ``.weights.h5``, a legacy
    ``.h5``) is walked itself; a zip (a ``.keras``) through each HDF5 file in it, each read
    only if its size is within what its compressed bytes may expand to, and within ``most``
    (what a checkpoint of the model can hold). Anything else the walk finds wrong is the
    framework's loader's to refuse, with its own words."""
    if _written_here(handle.fileno()):
        return
    # As the libraries find them, not by the first bytes: HDF5 looks for its superblock at 0,
    # 512, 1024, ... (a user block before it), and zipfile finds an archive from its end
    # (anything before it). A file that is both is walked as both.
    import zipfile

    hdf5 = _hdf5_inside(handle)
    handle.seek(0)
    try:
        is_zip = zipfile.is_zipfile(handle)
    except Exception:  # noqa: BLE001 - no zip the framework can read either
        is_zip = False
    if not hdf5 and not is_zip:
        return

    def walk() -> None:
        if hdf5:
            handle.seek(0)
            _walk_hdf5(handle, path, most=most)
        if not is_zip:
            return
        handle.seek(0)
        try:
            archive = zipfile.ZipFile(handle)
            entries = [e for e in archive.infolist() if e.filename.endswith((".h5", ".hdf5"))]
        except Exception:  # noqa: BLE001 - not a zip the framework can read either: it says
            return
        for entry in entries:
            if most is not None and entry.file_size > most:
                raise _refuse(path, entry.filename, f"is {entry.file_size:,} bytes unzipped, "
                              f"more than a checkpoint of this model can be ({most:,})")
            if entry.file_size > max(entry.compress_size, 1) * MAX_EXPANSION:
                raise _refuse(path, entry.filename, f"is {entry.file_size} bytes stored in "
                              f"{entry.compress_size}: more than {MAX_EXPANSION}x compression")
            with archive.open(entry) as inner:
                data = inner.read(entry.file_size + 1)
            _walk_hdf5(io.BytesIO(data[:entry.file_size]), path, entry.filename, most=most)

    run_isolated(walk, path=path, seconds=parse_seconds(stored_size(os.fstat(handle.fileno()))),
                 descriptor=handle.fileno())


def _hdf5_inside(handle: Any) -> bool:
    """Whether HDF5 finds a superblock in the file open at ``handle``: its signature at 0 or
    at a power of two from 512 on, where the library looks for it."""
    size = os.fstat(handle.fileno()).st_size
    offset = 0
    while offset + len(_HDF5_SIGNATURE) <= size:
        handle.seek(offset)
        if handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


def _walk_hdf5(file_object: Any, path: str, inside: str = "", *,
               most: int | None = None) -> None:
    """Every object and attribute of the HDF5 file in ``file_object`` (the file at ``path``, or
    its member ``inside``) read, and every dataset checked (:func:`_declared`), their declared
    bytes together within ``most`` (what a checkpoint of the model can hold); a file HDF5
    cannot open is left to the framework's loader."""
    import h5py

    declared = 0

    def visit(name: str, obj: Any) -> None:
        nonlocal declared
        for key in obj.attrs:
            obj.attrs[key]  # noqa: B018 - read: the parse is the point
        if isinstance(obj, h5py.Dataset):
            declared += _declared(obj, path, f"{inside}/{name}")[0]
            if most is not None and declared > most:
                raise _refuse(path, f"{inside}/{name}", f"brings what the datasets declare to "
                              f"{declared:,} bytes, more than a checkpoint of this model can "
                              f"hold ({most:,})", misfit=True)

    try:
        file = h5py.File(file_object, "r")
    except Exception:  # noqa: BLE001 - not HDF5 after all: the framework's loader says
        return
    with file:
        with suppress(Exception):
            for key in file.attrs:
                file.attrs[key]  # noqa: B018
        try:
            file.visititems(visit)
        except CheckpointError:
            raise
        except Exception:  # noqa: BLE001 - damage the framework's loader reports in its words
            return


def _is_ours(handle: Any, path: str) -> bool:
    """Whether the open file is in this module's layout (a Keras model's checkpoint of an
    eventbus before checkpoints were Keras's own files), read through the adapter's
    ``set_weights``. Read through the descriptor, with the loader's checks."""
    import h5py

    def ours() -> bool:
        try:
            handle.seek(0)
            with h5py.File(handle, "r") as file:
                return _attr(file, "format", path, "/", kind=str) == FORMAT
        except Exception:  # noqa: BLE001 - not readable as ours: the framework's loader says
            return False

    # In a child first, as every parse of a file a log names (see _load_open).
    if _written_here(handle.fileno()):
        return ours()
    return bool(run_isolated(ours, path=path,
                             seconds=parse_seconds(stored_size(os.fstat(handle.fileno()))),
                             descriptor=handle.fileno()))
