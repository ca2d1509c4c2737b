"""TensorBoard event files, written by one background thread.

    sink = TensorBoardWriter("logs")
    sink.scalars("train", {"loss": 0.25}, step=0, wall_time=t, prefix="epoch_")
    sink.close()

Every method the training thread calls only puts a tuple on a queue. The writer thread drains the
queue in batches, encodes the records, frames them as TFRecords (length, masked CRC-32C, data,
masked CRC-32C) and appends them to ``<log_dir>/<run>/events.out.tfevents.*``, one file per run
per sink, flushed to the OS after every batch and fsynced on :meth:`TensorBoardWriter.flush`.

Why not ``SummaryWriter.add_scalar``: it builds a protobuf message per scalar and checksums every
record byte by byte in Python, on the caller's thread. Here scalar events are encoded straight
into protobuf wire bytes (all the scalars of one step share one event), and checksums are
computed for a whole batch of records at once (vectorised with NumPy; a native ``crc32c`` or
``google_crc32c`` module is used when one is installed). Every other record (text, histograms,
images, the hparams plugin's session summaries) is encoded here too, and the files are read
back (resume) by a small protobuf wire-format reader: this module never imports tensorboardX,
whose package imports torch (seconds and hundreds of MiB for a run that has no torch model).
Tests check every encoding against the protobuf classes of tensorboardX and TensorBoard.

A scalar value may be a list (a vector metric): it is written as one scalar per element, tagged
``key/0``, ``key/1``, ...

Resume: what a crash kept out of the files is written back (``only_missing``: only what the
files found in the run directories lack), and :meth:`TensorBoardWriter.truncate` rewrites those
files without the values the resumed run will write again, so TensorBoard never sees a step
twice. The files found are not trusted: they are read a record at a time, each checked against
its masked CRC-32Cs as TensorBoard checks them, so a damaged or planted file (a length claiming
gigabytes, a flipped byte, records of zeros in a sparse file's hole) is reported, by file and
byte, and left as it is, never read whole.

Embeddings are not event records: :meth:`TensorBoardWriter.embeddings` writes ``tensors.tsv``
files under ``<log_dir>/embeddings/`` and regenerates ``<log_dir>/projector_config.pbtxt`` from
what is on disk, the files TensorBoard's projector reads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import queue
import re
import shutil
import socket
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eventbus.errors import LogCorruptError
from eventbus.openflags import FOLDER, NO_FOLLOW, NON_BLOCK
from eventbus.outputs import stored_size, write_replacing
from eventbus.sink import describe_os_error, drain, given_up, is_transient, keep_trying

__all__ = [
    "EventFileCorruptError",
    "TensorBoardSink",
    "TensorBoardWriter",
    "encode_file_version_event",
    "encode_hparams_end_event",
    "encode_hparams_start_event",
    "encode_histogram_event",
    "encode_image_event",
    "encode_scalar_event",
    "encode_text_event",
    "flat_scalars",
    "frame_records",
    "iter_event_file",
    "masked_crc32c",
    "masked_crc32c_many",
    "parse_event",
    "run_id_token",
]

# --- CRC-32C (Castagnoli), as TFRecord framing wants it ------------------------------------------


def _table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _table()
_CRC_NP = np.array(_CRC_TABLE, dtype=np.uint32)
#: Below this many records of one length, a Python loop beats NumPy's per-call overhead.
_VECTOR_MIN = 32


def _native_crc() -> Callable[[bytes], int] | None:
    try:
        from crc32c import crc32c  # type: ignore[import-not-found]

        return crc32c  # type: ignore[no-any-return]
    except ImportError:
        pass
    try:
        import google_crc32c  # type: ignore[import-not-found]

        return google_crc32c.value  # type: ignore[no-any-return]
    except ImportError:
        return None


_NATIVE = _native_crc()


def _crc_py(data: bytes) -> int:
    table = _CRC_TABLE
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# A long record (an image) in lanes: NumPy runs the CRC of every lane at once, then joins them.
# With a zero start value the CRC is linear: crc(A + B) = shift(crc(A), len(B)) ^ crc(B), where
# shift is the state after that many zero bytes (a 32x32 bit matrix, applied a byte at a time
# by tables), and leading zero bytes change nothing, so a segment is padded in front to whole
# lanes. The start value 0xFFFFFFFF adds shift(0xFFFFFFFF, len(data)). Segments of 1 MiB keep
# the copies small whatever the record's size.
_LONG = 2048
_SEGMENT = 1 << 20


def _apply(columns: Sequence[int], x: int) -> int:
    out = i = 0
    while x:
        if x & 1:
            out ^= columns[i]
        x >>= 1
        i += 1
    return out


@functools.cache
def _zero_bytes(log2n: int) -> tuple[int, ...]:
    """The state change of 2**log2n zero bytes, as the images of the state's 32 bits."""
    if log2n == 0:
        return tuple(_CRC_TABLE[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32))
    half = _zero_bytes(log2n - 1)
    return tuple(_apply(half, column) for column in half)


def _shift(state: int, n: int) -> int:
    """``state`` after ``n`` zero bytes."""
    log2n = 0
    while n:
        if n & 1:
            state = _apply(_zero_bytes(log2n), state)
        n >>= 1
        log2n += 1
    return state


@functools.cache
def _shift_tables(log2n: int) -> np.ndarray:
    """``_zero_bytes(log2n)`` by the value of each of the state's four bytes: (4, 256)."""
    columns = _zero_bytes(log2n)
    return np.array([[_apply(columns, v << 8 * j) for v in range(256)] for j in range(4)],
                     np.uint32)


def _crc_lanes(segment: np.ndarray) -> int:
    """The CRC-32C of ``segment`` (uint8) from a zero start, without the final inversion."""
    n = len(segment)
    log2_lane = min(8, max(4, (n.bit_length() - 1) // 2))  # 16 to 256 bytes a lane
    lane = 1 << log2_lane
    lanes = -(-n // lane)
    padded = np.zeros(lanes * lane, np.uint8)
    padded[lanes * lane - n:] = segment
    columns = padded.reshape(lanes, lane).T.copy()
    crc = np.zeros(lanes, np.uint32)
    low = crc.view(np.uint8)[::4] if np.little_endian else crc.view(np.uint8)[3::4]
    index = np.empty(lanes, np.uint8)
    looked_up = np.empty(lanes, np.uint32)
    for column in columns:
        np.bitwise_xor(low, column, out=index)
        _CRC_NP.take(index, out=looked_up)
        crc >>= 8
        crc ^= looked_up
    log2n = log2_lane
    while len(crc) > 1:  # join neighbours: the earlier one shifted over the later one
        if len(crc) & 1:
            crc = np.concatenate([np.zeros(1, np.uint32), crc])
        first, second = crc[0::2], crc[1::2]
        table = _shift_tables(log2n)
        crc = (table[0][first & 0xFF] ^ table[1][(first >> 8) & 0xFF]
               ^ table[2][(first >> 16) & 0xFF] ^ table[3][first >> 24] ^ second)
        log2n += 1
    return int(crc[0])


def _crc_long(data: bytes) -> int:
    """The CRC-32C of ``data``, as :func:`_crc_py` gives it, in NumPy."""
    array = np.frombuffer(data, np.uint8)
    crc = 0
    for start in range(0, len(array), _SEGMENT):
        segment = array[start:start + _SEGMENT]
        crc = _shift(crc, len(segment)) ^ _crc_lanes(segment)
    return crc ^ _shift(0xFFFFFFFF, len(array)) ^ 0xFFFFFFFF


def _crc(data: bytes) -> int:
    return _crc_long(data) if len(data) >= _LONG else _crc_py(data)


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C TFRecord framing stores for ``data``."""
    return _mask(_NATIVE(data) if _NATIVE is not None else _crc(data))


def masked_crc32c_many(datas: Sequence[bytes]) -> list[int]:
    """:func:`masked_crc32c` of each of ``datas``; records of equal length are done together."""
    if _NATIVE is not None:
        return [_mask(_NATIVE(d)) for d in datas]
    out = [0] * len(datas)
    by_length: dict[int, list[int]] = {}
    for i, data in enumerate(datas):
        by_length.setdefault(len(data), []).append(i)
    for length, indices in by_length.items():
        if len(indices) < _VECTOR_MIN or length == 0 or length >= _LONG:
            for i in indices:
                out[i] = _mask(_crc(datas[i]))
            continue
        rows = np.frombuffer(b"".join([datas[i] for i in indices]), np.uint8)
        rows = rows.reshape(len(indices), length)
        crc = np.full(len(indices), 0xFFFFFFFF, np.uint32)
        table = _CRC_NP
        for j in range(length):
            crc = table[(crc ^ rows[:, j]) & 0xFF] ^ (crc >> 8)
        crc ^= np.uint32(0xFFFFFFFF)
        masked = (((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)).astype(np.uint32)
        for i, value in zip(indices, masked.tolist()):
            out[i] = value
    return out


# --- records -------------------------------------------------------------------------------------

_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
_pack_d = struct.Struct("<d").pack
_pack_f = struct.Struct("<f").pack


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # protobuf int64: two's complement in ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _float32(value: float) -> bytes:
    try:
        return _pack_f(value)
    except OverflowError:  # beyond float32's range: TensorFlow's cast gives infinity too
        return _pack_f(math.copysign(math.inf, value))


_value_prefixes: dict[str, bytes] = {}


def _value_prefix(tag: str) -> bytes:
    """Summary.value entry up to the float: field 1 (Value), its length, tag, simple_value key."""
    prefix = _value_prefixes.get(tag)
    if prefix is None:
        name = tag.encode()
        body = b"\x0a" + _varint(len(name)) + name + b"\x15"
        prefix = _value_prefixes[tag] = b"\x0a" + _varint(len(body) + 4) + body
    return prefix


def encode_scalar_event(wall_time: float, step: int, values: Mapping[str, float],
                        prefix: str = "") -> bytes:
    """A serialized ``Event`` whose summary holds one ``simple_value`` per item of ``values``.

    It parses as the ``Event(wall_time=..., step=..., summary=Summary(value=[...]))`` that
    tensorboardX's classes build (tested); fields are written even when zero, which protobuf
    readers accept. Tags are ``prefix + key``; values are stored as float32, as TensorFlow does.
    """
    try:
        summary = b"".join([_value_prefix(prefix + key) + _float32(value)
                            for key, value in values.items()])
    except (TypeError, struct.error):  # a vector metric: one scalar per element
        summary = b"".join([_value_prefix(prefix + key) + _float32(value)
                            for key, value in flat_scalars(values).items()])
    return b"\x09" + _pack_d(wall_time) + b"\x10" + _varint(step) + b"\x2a" + \
        _varint(len(summary)) + summary


def flat_scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """``values`` with each list, tuple or array value spread over one key per element, as
    TensorBoard has no vector scalar: ``{"f1": [0.5, 0.7]}`` -> ``{"f1/0": 0.5, "f1/1": 0.7}``.
    Other values are kept as they are."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, (list, tuple, np.ndarray)):
            for i, item in enumerate(np.ravel(np.asarray(value, dtype=float)).tolist()):
                out[f"{key}/{i}"] = item
        else:
            out[key] = value
    return out


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# SummaryMetadata(plugin_data=PluginData(plugin_name="text")): TextPluginData(version=0) is
# empty, so the content field is left out, as protobuf leaves out an empty bytes field.
_TEXT_METADATA = _field(9, _field(1, _field(1, b"text")))
# TensorProto's dtype DT_STRING (7) and its shape [1].
_TEXT_TENSOR_HEAD = b"\x08\x07" + _field(2, _field(2, b"\x08\x01"))


def encode_text_event(wall_time: float, step: int, tag: str, text: str) -> bytes:
    """A serialized ``Event`` holding ``text`` under ``tag`` for TensorBoard's text plugin.

    It parses as the event tensorboardX's ``summary.text`` builds (tested), but under the tag
    given. Written here, not through tensorboardX's classes, so that the first text of a run
    (the model's configuration, at its start) never waits for tensorboardX's import.
    """
    tensor = _TEXT_TENSOR_HEAD + _field(8, text.encode("utf-8"))
    value = _field(1, tag.encode()) + _field(8, tensor) + _TEXT_METADATA
    return b"\x09" + _pack_d(wall_time) + b"\x10" + _varint(step) + \
        _field(5, _field(1, value))


def _summary_event(wall_time: float, step: int, values: Sequence[bytes]) -> bytes:
    """An ``Event`` at ``step`` whose summary holds the encoded ``Summary.Value`` messages."""
    summary = b"".join([_field(1, value) for value in values])
    return b"\x09" + _pack_d(wall_time) + b"\x10" + _varint(step) + _field(5, summary)


def _packed_doubles(values: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


def encode_histogram_event(wall_time: float, step: int, tag: str, values: Any,
                           bins: int = 30) -> bytes | None:
    """A serialized ``Event`` holding a ``HistogramProto`` of the finite ``values`` in ``bins``
    buckets (30, as ``tf.summary.histogram``), as tensorboardX's ``summary.histogram`` builds it
    (tested); None when no value is finite (TensorFlow would refuse the summary)."""
    array = np.asarray(values, dtype=float).reshape(-1)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return None
    counts, limits = np.histogram(array, bins=bins)
    # The support of the histogram, with one empty bucket on its left: TensorBoard keeps only
    # right bucket limits, so that bucket carries the leftmost limit (tensorboardX does so).
    nonzero = np.cumsum(np.greater(counts, 0))
    start, end = (int(i) for i in np.searchsorted(nonzero, [0, nonzero[-1] - 1], side="right"))
    end += 1
    counts = counts[start - 1:end] if start > 0 else np.concatenate([[0], counts[:end]])
    limits = limits[start:end + 1]
    histo = (b"\x09" + _pack_d(float(array.min())) + b"\x11" + _pack_d(float(array.max()))
             + b"\x19" + _pack_d(float(array.size)) + b"\x21" + _pack_d(float(array.sum()))
             + b"\x29" + _pack_d(float(array.dot(array)))
             + _field(6, _packed_doubles(limits.tolist()))
             + _field(7, _packed_doubles([float(c) for c in counts.tolist()])))
    return _summary_event(wall_time, step, [_field(1, tag.encode()) + _field(5, histo)])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray) -> bytes:
    """A grey-scale PNG of a 2-D ``uint8`` array (rows top to bottom)."""
    height, width = pixels.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.astype(np.uint8)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def encode_image_event(wall_time: float, step: int, tag: str, pixels: np.ndarray) -> bytes:
    """A serialized ``Event`` holding a grey-scale ``Summary.Image`` of the 2-D ``uint8``
    ``pixels``, as tensorboardX's ``summary.image(..., dataformats="HW")`` builds it."""
    height, width = pixels.shape
    image = (b"\x08" + _varint(height) + b"\x10" + _varint(width) + b"\x18\x01"
             + _field(4, encode_png(pixels)))
    return _summary_event(wall_time, step, [_field(1, tag.encode()) + _field(4, image)])


# --- the hparams plugin's session summaries ----------------------------------------------------

#: The tags TensorBoard's hparams plugin looks for.
HPARAMS_START_TAG = "_hparams_/session_start_info"
HPARAMS_END_TAG = "_hparams_/session_end_info"
# TensorProto(dtype=DT_FLOAT, tensor_shape=[0]): the empty tensor a metadata-only value holds.
_NULL_TENSOR = b"\x08\x01" + _field(2, _field(2, b""))


def _hparams_value(tag: str, plugin_data: bytes) -> bytes:
    # SummaryMetadata(plugin_data=PluginData(plugin_name="hparams", content=HParamsPluginData))
    metadata = _field(9, _field(1, _field(1, b"hparams") + _field(2, plugin_data)))
    return _field(1, tag.encode()) + _field(8, _NULL_TENSOR) + metadata


def _protobuf_value(value: bool | float | str) -> bytes:
    """A ``google.protobuf.Value``: a bool, a number (double) or a string."""
    if isinstance(value, bool):
        return b"\x20" + _varint(int(value))
    if isinstance(value, (int, float)):
        return b"\x11" + _pack_d(float(value))
    return _field(3, str(value).encode("utf-8"))


def encode_hparams_start_event(wall_time: float, hparams: Mapping[str, bool | float | str],
                               group_name: str, start_time: float) -> bytes:
    """A serialized ``Event`` holding the hparams plugin's ``SessionStartInfo``: one session
    (the run directory that holds it) with these hyperparameter values, as TensorBoard's
    ``hparams_pb`` builds it (tested)."""
    info = b"".join([_field(1, _field(1, name.encode("utf-8")) + _field(2, _protobuf_value(v)))
                     for name, v in hparams.items()])
    info += _field(4, group_name.encode("utf-8")) + b"\x29" + _pack_d(start_time)
    return _summary_event(wall_time, 0, [_hparams_value(HPARAMS_START_TAG, _field(3, info))])


def encode_hparams_end_event(wall_time: float, end_time: float, status: int = 1) -> bytes:
    """A serialized ``Event`` holding the hparams plugin's ``SessionEndInfo`` (``status`` 1 is
    ``STATUS_SUCCESS``)."""
    info = b"\x08" + _varint(status) + b"\x11" + _pack_d(end_time)
    return _summary_event(wall_time, 0, [_hparams_value(HPARAMS_END_TAG, _field(4, info))])


# --- reading: the protobuf wire format, as far as event files need it ---------------------------


def _fields(data: bytes) -> Iterator[tuple[int, Any, bytes]]:
    """The fields of a protobuf message: ``(number, value, raw bytes of the whole field)``;
    a varint's value is an int, any other the field's payload bytes. Raises ValueError on
    bytes that are no message."""
    pos, size = 0, len(data)
    while pos < size:
        start = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not read here")
        if pos > size:
            raise ValueError("truncated protobuf message")
        yield number, value, data[start:pos]


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


#: The most fields (summary values and others) one event read back may hold: the sink writes
#: one value a metric, and a run of more metrics than this is no run.
MAX_EVENT_FIELDS = 100_000


def parse_event(data: bytes) -> tuple[int, list[tuple[str, str | None, bytes]], list[bytes]]:
    """What resuming needs of a serialized ``Event``: its step, its summary values as
    ``(tag, text or None, raw value bytes)`` and the raw bytes of its other fields. Raises
    ValueError on bytes that are no event."""
    step = 0
    values: list[tuple[str, str | None, bytes]] = []
    others: list[bytes] = []
    for number, value, raw in _fields(data):
        if len(values) + len(others) > MAX_EVENT_FIELDS:
            # Two bytes a field: a record of millions of empty values cost 40 times its size
            # in Python objects, for each pass of a resume over a file it did not write.
            raise ValueError(f"more than {MAX_EVENT_FIELDS:,} fields in one event: no writer "
                             "writes that")
        if number == 2:
            step = _wire(value, int, "Event.step")
            step = step - (1 << 64) if step >= 1 << 63 else step
            others.append(raw)
        elif number == 5:
            for item_number, item, _ in _fields(_wire(value, bytes, "Event.summary")):
                if item_number == 1:
                    if len(values) >= MAX_EVENT_FIELDS:
                        raise ValueError(f"more than {MAX_EVENT_FIELDS:,} summary values in "
                                         "one event: no writer writes that")
                    values.append(_summary_value(_wire(item, bytes, "Summary.value")))
        else:
            others.append(raw)
    return step, values, others


def _wire(value: Any, kind: type, field: str) -> Any:
    """``value`` if it came with the wire type ``field`` has (a varint, or length-delimited
    bytes); a ValueError otherwise: a record with valid checksums may still hold anything."""
    if type(value) is not kind:
        raise ValueError(f"{field} is not {'a varint' if kind is int else 'length-delimited'}")
    return value


def _summary_value(data: bytes) -> tuple[str, str | None, bytes]:
    tag, text = "", None
    for number, value, _ in _fields(data):
        if number == 1:
            tag = _wire(value, bytes, "Summary.Value.tag").decode("utf-8", "replace")
        elif number == 8:  # a tensor: text when it holds a string
            for tensor_number, item, _ in _fields(_wire(value, bytes, "Summary.Value.tensor")):
                if tensor_number == 8:
                    text = _wire(item, bytes, "TensorProto.string_val").decode("utf-8",
                                                                              "replace")
                    break
    return tag, text, data


def encode_file_version_event(wall_time: float) -> bytes:
    """The serialized ``Event(wall_time=..., file_version="brain.Event:2")`` every event file
    starts with, as tensorboardX's classes build it (tested). Written here so that a run
    logging scalars never waits for tensorboardX's import (seconds where it pulls in torch):
    a crash in that time would leave no event file at all."""
    version = _FILE_VERSION.encode()
    return b"\x09" + _pack_d(wall_time) + b"\x1a" + _varint(len(version)) + version


def frame_records(records: Sequence[bytes]) -> bytes:
    """TFRecord framing of ``records``: length, its masked CRC, data, the data's masked CRC."""
    if not records:
        return b""
    lengths = [_pack_q(len(r)) for r in records]
    crcs = masked_crc32c_many(lengths + list(records))
    n = len(records)
    parts = []
    for i, record in enumerate(records):
        parts += (lengths[i], _pack_i(crcs[i]), record, _pack_i(crcs[n + i]))
    return b"".join(parts)


#: The most bytes one record may claim: far more than an event of scalars, text, a histogram or
#: the image of a layer's weights takes. A longer one is damage, never an allocation.
_MAX_RECORD = 256 << 20
#: Records read before their checksums are checked, together: at most this many bytes
#: (besides one long record) and _BATCH_RECORDS records.
_BATCH = 1 << 20
_BATCH_RECORDS = 4096
#: What a resume reads of an event file it found: its records up to this many bytes plus
#: _STORED_RATIO times what the file stores (``outputs.stored_size``). A sparse file claims
#: bytes it does not store: valid 64 MiB records of zeros in a hole cost kilobytes of disk,
#: and were read and checksummed whole at each resume, the loop's flushes waiting on it. An
#: event file as written stores what it claims (a compressing file system a few times less:
#: event files compress 4 to 6 times as a whole); the allowance is for a small file whose
#: blocks are not counted yet.
_READ_ALLOWANCE = 4 << 20
_STORED_RATIO = 16
_unpack_header = struct.Struct("<QI").unpack
_unpack_i = struct.Struct("<I").unpack


class EventFileCorruptError(LogCorruptError):
    """A record of a TensorBoard event file is damaged: its length or data fails its masked
    CRC-32C, it claims more than :data:`_MAX_RECORD` bytes, or it reaches past what a file
    that stores far less than it claims may be read to (a sparse file). ``path``: the file;
    ``offset``: the byte its record starts at; ``field``: ``"length_crc"``, ``"data_crc"``,
    ``"length"`` or ``"stored"`` (``None`` for a file that is not a regular file)."""

    def __init__(self, message: str, *, path: str, offset: int, field: str | None = None):
        super().__init__(message, path=path, field=field)
        self.offset = offset


_DAMAGE = {"length_crc": "its length fails its checksum",
           "data_crc": "its data fails its checksum",
           "length": f"it claims more than {_MAX_RECORD} bytes"}


class _Records:
    """The records of one event file as ``(offset, data)``, read a record at a time (never the
    whole file) and checked a batch at a time against both masked CRC-32Cs, as TensorBoard's
    own reader does. A torn last record (what a crash mid-write leaves: a part of a header, or a
    checked length running past the end of the file) ends the records quietly; a damaged one
    raises :class:`EventFileCorruptError` once the records before it are given, and so does
    one reaching past what the file may be read to by what it stores (:data:`_STORED_RATIO`),
    before anything is read for it. Afterwards ``end`` is the byte after the last whole
    record, ``size`` the file's size and ``stored`` the bytes it stores."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self.end = 0
        self.size = 0
        self.stored = 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        # Never through a link, never blocking on a FIFO: only a regular file is read.
        flags = os.O_RDONLY | NO_FOLLOW | NON_BLOCK
        with open(os.open(self.path, flags), "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise EventFileCorruptError(f"TensorBoard event file {self.path!r}: not a "
                                            "regular file; it is left as it is",
                                            path=self.path, offset=0)
            self.size = size = info.st_size
            self.stored = stored_size(info)
            readable = _READ_ALLOWANCE + _STORED_RATIO * self.stored
            batch: list[tuple[int, bytes, int, bytes, int]] = []
            held = pos = 0
            while True:
                header = file.read(12)
                if len(header) < 12:
                    break  # the end, or a torn header
                length, length_crc = _unpack_header(header)
                end = pos + 16 + length
                if end > size or length > _BATCH or end > readable:
                    # A long claim is checked before anything is read for it.
                    yield from self._checked(batch)
                    held = 0
                    if masked_crc32c(header[:8]) != length_crc:
                        raise self._damaged(pos, "length_crc")
                    if end > size:
                        return  # torn: the rest was never written
                    if length > _MAX_RECORD:
                        raise self._damaged(pos, "length")
                    if end > readable:
                        raise self._damaged(pos, "stored")
                data = file.read(length)
                footer = file.read(4)
                if len(footer) < 4:
                    break  # the file shrank as it was read: what is gone counts as torn
                batch.append((pos, header[:8], length_crc, data, _unpack_i(footer)[0]))
                pos += 16 + length
                held += 16 + length
                if held >= _BATCH or len(batch) >= _BATCH_RECORDS:
                    yield from self._checked(batch)
                    held = 0
            yield from self._checked(batch)

    def _checked(self, batch: list[tuple[int, bytes, int, bytes, int]]) -> Iterator[
            tuple[int, bytes]]:
        """The records of ``batch`` up to the first damaged one; ``batch`` is emptied."""
        crcs = masked_crc32c_many([b[1] for b in batch] + [b[3] for b in batch])
        n = len(batch)
        for i, (offset, _, length_crc, data, data_crc) in enumerate(batch):
            if crcs[i] != length_crc:
                raise self._damaged(offset, "length_crc")
            if crcs[n + i] != data_crc:
                raise self._damaged(offset, "data_crc")
            self.end = offset + 16 + len(data)
            yield offset, data
        batch.clear()

    def _damaged(self, offset: int, field: str) -> EventFileCorruptError:
        if field == "stored":  # whole records, maybe: TensorBoard would read them all
            return EventFileCorruptError(
                f"TensorBoard event file {self.path!r}: the record at byte {offset} reaches "
                f"past what the file stores: it claims {self.size:,} bytes and stores "
                f"{self.stored:,} (a sparse file); a resume reads no more of a file than "
                f"{_READ_ALLOWANCE >> 20} MiB plus {_STORED_RATIO} times what it stores, and "
                "leaves it as it is", path=self.path, offset=offset, field=field)
        return EventFileCorruptError(
            f"TensorBoard event file {self.path!r}: the record at byte {offset} is damaged "
            f"({_DAMAGE[field]}); TensorBoard reads only the records before it, and a resume "
            "leaves the file as it is", path=self.path, offset=offset, field=field)


def iter_event_file(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The records of a TFRecord file, read one at a time and checked against their masked
    CRC-32Cs; stops quietly at a torn last record (a crash mid-write), and raises
    :class:`EventFileCorruptError` (naming the file and the record's byte) at a damaged one,
    after the records before it."""
    for _, data in _Records(path):
        yield data


# --- the writer ----------------------------------------------------------------------------------

_FILE_VERSION = "brain.Event:2"
_EVENTS = "events.out.tfevents."
#: How the temporary file of an event file's rewrite is named (``.`` + the file's name ...).
_REWRITING = "." + _EVENTS
#: The part of an event file's name that says which run wrote it: ``.run_id=<id>``. No host
#: name holds an ``=``, so the name's host part is never taken for it.
_RUN_ID = "run_id="
#: The longest run id kept as it is in a file name; a longer one is named by its hash.
_RUN_ID_NAMED = 64


def run_id_token(run_id: str) -> str:
    """How ``run_id`` appears in an event file's name: every character but ASCII letters,
    digits, ``_`` and ``-`` escaped (``%2F``; a ``.`` would split the name's parts). An id
    longer than 64 characters once escaped is named by its hash instead (``+`` and 32 hex
    digits): a file name is at most 255 bytes."""
    token = re.sub(r"[^A-Za-z0-9_-]", lambda m: "".join(
        f"%{byte:02X}" for byte in m[0].encode("utf-8", "surrogatepass")), run_id)
    if len(token) > _RUN_ID_NAMED:
        token = "+" + hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return token


def _run_id_in_name(name: str) -> str | None:
    """The run id token an event file's name carries (a rewrite's temporary file's too); None
    for a name without one (a file of another writer, or of this one before names held it)."""
    for part in name.lstrip(".").split("."):
        if part.startswith(_RUN_ID):
            return part[len(_RUN_ID):]
    return None


class _RunFile:
    """One event file in one run directory, opened on first write.

    What a write could not hand the file (a full disk) stays in ``kept`` and goes first at the
    next write or sync; a record left half-written is completed by it, so the file stays
    whole. More than ``max_kept`` bytes waiting are given up (a RuntimeError says how many).
    """

    max_kept = 256 << 20

    def __init__(self, directory: Path, suffix: str):
        self.directory = directory
        self.suffix = suffix
        self.file: Any = None
        self.path: Path | None = None
        self.kept = bytearray()

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        # Microseconds in the name keep a resumed run's file after the crashed one's in the
        # lexical order TensorBoard reads a directory in, even when the clock is now behind
        # the one that named that file (another machine, a clock set back).
        stamp = max(now, _newest_stamp(self.directory) + 1e-6)
        name = f"{_EVENTS}{stamp:.6f}.{socket.gethostname()}.{os.getpid()}{self.suffix}"
        self.path = self.directory / name
        # Unbuffered and kept open for the run: ``kept`` is the only buffer. A new file, made
        # in the run's folder opened without following a link: a link put at ``train/`` (a
        # folder others can write) would have the files written wherever it points.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | NO_FOLLOW
        if os.open in os.supports_dir_fd:
            folder = os.open(self.directory, FOLDER | NO_FOLLOW)
            try:
                fd = os.open(name, flags, 0o666, dir_fd=folder)
            finally:
                os.close(folder)
        else:
            fd = os.open(self.path, flags, 0o666)
        self.file = os.fdopen(fd, "ab", buffering=0)
        self.kept[:0] = frame_records([encode_file_version_event(now)])

    def write(self, records: list[bytes]) -> None:
        self.kept += frame_records(records)
        if self.file is None:
            self.open()
        self._write_kept()

    def _write_kept(self) -> None:
        kept = self.kept
        try:
            drain(self.file, kept)  # what reached the file leaves ``kept``, whatever happens
        except OSError:
            if len(kept) > self.max_kept:
                lost = len(kept)
                kept.clear()
                raise RuntimeError(f"{self.path}: {lost} bytes of events could not be "
                                   "written and are given up") from None
            raise

    def sync(self) -> None:
        if self.file is not None:
            if self.kept:
                self._write_kept()
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            try:
                if self.kept:
                    keep_trying(self._write_kept)
                os.fsync(self.file.fileno())
            except OSError as exc:
                lost, self.kept = len(self.kept), bytearray()
                raise given_up(exc, f"{self.path}: {lost} bytes of events") from exc
            finally:
                self.file.close()
                self.file = None


_DIGITS = re.compile(r"[0-9]{1,15}")


def _newest_stamp(directory: Path) -> float:
    """The newest time in the names of the event files in ``directory`` (0 if none)."""
    newest = 0.0
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.startswith(_EVENTS):
                seconds, _, rest = name[len(_EVENTS):].partition(".")
                micros = rest.partition(".")[0]
                # ASCII digits only: "²" is a digit to isdigit() and no number to float().
                if _DIGITS.fullmatch(seconds) and _DIGITS.fullmatch(micros):
                    newest = max(newest, float(f"{seconds}.{micros}"))
    return newest


ErrorCallback = Callable[[str, BaseException], None]


class TensorBoardWriter:
    """Write TensorBoard event files under ``log_dir`` from a background thread.

    Not a bus :class:`~eventbus.Sink`: it takes TensorBoard's values (scalars, histograms,
    images, text), not records. On a bus, ``plugins.TensorBoard`` is the sink, and writes
    through one of these.

    Parameters
    ----------
    log_dir:
        The log directory; each run (``"train"``, ``"validation"``) is a sub-directory.
    on_error:
        Called from the writer thread as ``on_error(what, exc)`` when writing fails; the thread
        goes on with the next item. The TensorBoard plugin reports these as ``sink_failed``.
    max_pending:
        Items the queue may hold; beyond that new items are dropped and counted in
        :attr:`dropped` rather than letting a stalled disk grow memory without bound.
    filename_suffix:
        Appended to event file names.
    run_id:
        The run the files belong to, named in each file's name (``.run_id=<id>``, before
        ``filename_suffix``). A resume's truncation and write-back then read only the files
        of this run: another run's files in the same directories (a fresh run adds its files
        beside those there, as Keras does) are left as they are. Files whose names carry no
        run id are taken as this run's unless some file there names another run. None: no
        id in the names, and every event file found is this run's.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, on_error: ErrorCallback | None = None,
                 max_pending: int = 1_000_000, filename_suffix: str = "",
                 run_id: str | None = None):
        self.log_dir = Path(log_dir)
        self.on_error = on_error
        self.max_pending = max_pending
        #: Items dropped because the queue was full.
        self.dropped = 0
        #: Failures seen by the writer thread.
        self.failures = 0
        self._run_token = None if run_id is None else run_id_token(run_id)
        self._suffix = filename_suffix if run_id is None else \
            f".{_RUN_ID}{self._run_token}{filename_suffix}"
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        # One counter per thread, so neither needs a lock: pending = put - done.
        self._put = 0
        self._done = 0
        self._files: dict[str, _RunFile] = {}
        self._failing: set[str] = set()  # runs whose writes fail now (a full disk)
        #: Event files a resume's truncation could not rewrite for want of room, with what to
        #: keep of them and the file they were (device, inode): rewritten at a later flush (no
        #: one writes them meanwhile, they are not this sink's), or the steps past the resume
        #: point would show twice.
        self._untruncated: dict[Path, tuple[str, Callable[[str, str, int], bool],
                                            tuple[int, int]]] = {}
        self._metadata: dict[str, str] = {}
        # What the files found in the run directories hold, read on the first write-back:
        # (run, tag) -> the highest step of a scalar, and (run, tag, step, text) of each text.
        self._found: tuple[dict[tuple[str, str], int], set[tuple[str, str, int, str]]] | None \
            = None
        # The damaged event files reported already (a resume meets them twice).
        self._damage_seen: set[str] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"tensorboard-sink:{log_dir}",
                                        daemon=True)
        self._thread.start()

    # --- the training thread's side: queue and return ------------------------------------------

    def _enqueue(self, item: tuple[Any, ...]) -> bool:
        if self._closed:
            return False
        if self._put - self._done >= self.max_pending:
            self.dropped += 1
            return False
        self._put += 1
        self._queue.put(item)
        return True

    def scalars(self, run: str, values: Mapping[str, float], step: int, wall_time: float,
                prefix: str = "", *, only_missing: bool = False) -> bool:
        """One event at ``step`` holding a scalar per item, tagged ``prefix + key``.

        ``values`` is kept, not copied: do not change it afterwards (event logs never change).
        ``only_missing``: write only the values whose tag the files that were in the run's
        directory before this sink hold at no step as high (what a resume writes back).
        """
        if not values:
            return True
        return self._enqueue(("S" if only_missing else "s", run, values, step, wall_time,
                              prefix))

    def histogram(self, run: str, tag: str, values: np.ndarray, step: int,
                  wall_time: float) -> bool:
        """A histogram of ``values`` (any shape; non-finite values are left out)."""
        return self._enqueue(("h", run, tag, values, step, wall_time))

    def image(self, run: str, tag: str, image: np.ndarray, step: int, wall_time: float) -> bool:
        """A grey-scale image from a 2-D array, scaled so its minimum is black, maximum white."""
        return self._enqueue(("i", run, tag, image, step, wall_time))

    def text(self, run: str, tag: str, text: str, step: int, wall_time: float, *,
             only_missing: bool = False) -> bool:
        """A text entry (TensorBoard renders it as Markdown). ``only_missing``: unless the files
        that were in the run's directory before this sink hold this text at this step."""
        return self._enqueue(("T" if only_missing else "t", run, tag, text, step, wall_time))

    def hparams(self, run: str, hparams: Mapping[str, bool | float | str], group_name: str,
                start_time: float, wall_time: float, *, only_missing: bool = False) -> bool:
        """Start a session of TensorBoard's HParams tab in ``run`` (``"."``: the log directory
        itself, whose sub-directories' scalars become the session's metrics) with these
        values. ``only_missing``: unless the files found in that directory hold a session
        start already (TensorBoard reads only the first)."""
        record = encode_hparams_start_event(wall_time, hparams, group_name, start_time)
        return self._enqueue(("P" if only_missing else "p", run, record))

    def hparams_end(self, run: str, end_time: float, wall_time: float) -> bool:
        """End the HParams session of ``run`` (status success)."""
        return self._enqueue(("p", run, encode_hparams_end_event(wall_time, end_time)))

    def embeddings(self, matrices: Mapping[str, np.ndarray], step: int,
                   metadata: Mapping[str, str] | None = None) -> bool:
        """Projector data for each ``name -> (N, D) matrix`` at ``step``.

        ``metadata`` maps a name to a TSV file of labels, one line per row of the matrix (a
        header line first when it has several columns); it is copied into the log directory.
        """
        return self._enqueue(("e", dict(matrices), step, dict(metadata or {})))

    def truncate(self, keep: Callable[[str, str, int], bool]) -> bool:
        """Before anything queued after it: drop every value ``keep(run, tag, step)`` rejects.

        Existing event files are rewritten (to a temporary file, then renamed into place); a
        file with nothing to drop is left as it is, and a torn last record is dropped. A file
        with a damaged record (a checksum that fails, a length over 256 MiB, a record reaching
        past 16 times what a sparse file stores) is left as it is and reported through
        ``on_error`` as an :class:`EventFileCorruptError` naming it and the record's byte; the
        other files are still rewritten. Embedding steps are kept where
        ``keep("projector", name, step)`` holds; only folders named in ASCII digits are steps.
        """
        return self._enqueue(("r", keep))

    def flush(self, timeout: float | None = None, *, sync: bool = True) -> bool:
        """Wait until everything queued so far is written to the files (it then survives a
        crash of the process) and, with ``sync``, fsynced (a crash of the machine); False on
        timeout."""
        if self._closed:
            return not self._thread.is_alive()
        done = threading.Event()
        self._put += 1
        self._queue.put(("f", done, sync))
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued, close the files and stop the thread; False on timeout."""
        if not self._closed:
            self._closed = True
            self._put += 1
            self._queue.put(("c",))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Items queued and not written yet."""
        return self._put - self._done

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread -------------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        if self.on_error is not None:
            with contextlib.suppress(Exception):  # a broken callback must not kill the writer
                self.on_error(what, exc)

    def _file(self, run: str) -> _RunFile:
        file = self._files.get(run)
        if file is None:
            file = self._files[run] = _RunFile(self.log_dir / run, self._suffix)
        return file

    def _run(self) -> None:
        get, get_nowait, empty = self._queue.get, self._queue.get_nowait, queue.Empty
        while True:
            batch = [get()]
            with contextlib.suppress(empty):
                while len(batch) < 65536:
                    batch.append(get_nowait())
            if not self._process(batch):
                return

    def _process(self, batch: list[tuple[Any, ...]]) -> bool:
        pending: dict[str, list[bytes]] = {}
        keep_going = True
        for item in batch:
            op = item[0]
            try:
                if op == "s":
                    _, run, values, step, wall_time, prefix = item
                    records = pending.get(run)
                    if records is None:
                        records = pending[run] = []
                    records.append(encode_scalar_event(wall_time, step, values, prefix))
                elif op == "t":
                    _, run, tag, text, step, wall_time = item
                    pending.setdefault(run, []).append(
                        encode_text_event(wall_time, step, tag, text))
                elif op in ("S", "T"):
                    record = self._missing(item)
                    if record is not None:
                        pending.setdefault(item[1], []).append(record)
                elif op in ("h", "i"):
                    _, run, tag, data, step, wall_time = item
                    record = _SUMMARIES[op](wall_time, step, tag, data)
                    if record is not None:
                        pending.setdefault(run, []).append(record)
                elif op in ("p", "P"):
                    _, run, record = item
                    if op == "p" or not self._holds(run, record):
                        pending.setdefault(run, []).append(record)
                else:
                    self._write(pending)  # control items apply after what came before them
                    if op == "e":
                        self._embeddings(*item[1:])
                    elif op == "r":
                        self._truncate(item[1])
                    elif op == "f":
                        if self._untruncated:
                            self._truncate_again()
                        if item[2]:
                            self._sync()
                        item[1].set()
                    elif op == "c":
                        if self._untruncated:
                            self._truncate_again(at_close=True)
                        self._close_files()
                        keep_going = False
            except Exception as exc:
                self._fail(_WHAT.get(op, op), exc)
            finally:
                self._done += 1
        self._write(pending)
        return keep_going

    def _write(self, pending: dict[str, list[bytes]]) -> None:
        for run, records in pending.items():
            if records:
                try:
                    self._file(run).write(records)
                except OSError as exc:  # kept by the file for its next write: said once
                    if run not in self._failing:
                        self._failing.add(run)
                        self._fail(f"write {run}", exc)
                except Exception as exc:
                    self._fail(f"write {run}", exc)
                else:
                    self._failing.discard(run)
        pending.clear()

    def _sync(self) -> None:
        for run, file in self._files.items():
            try:
                file.sync()
            except OSError as exc:  # said once per spell, as a write's
                if run not in self._failing:
                    self._failing.add(run)
                    self._fail(f"sync {run}", exc)
            except Exception as exc:
                self._fail(f"sync {run}", exc)

    def _close_files(self) -> None:
        for run, file in self._files.items():
            try:
                file.close()
            except Exception as exc:
                self._fail(f"close {run}", exc)

    def _found_files(self) -> Iterator[tuple[str, Path]]:
        """The event files of this sink's run in the log directory (run ``"."``) and its run
        directories that this sink did not write, as ``(run, path)``.

        Another run's files (their names carry another run id) are not this run's to cut or
        to count as holding its steps: a fresh run adds its files beside those there. A file
        whose name carries no run id (written before names held one) is taken as this run's,
        as it always was, unless some file there names another run: then it may be that run's
        too, and is left alone."""
        if not self.log_dir.is_dir():
            return
        mine = {file.path for file in self._files.values()}
        # Never through a link: one planted in a log directory others can write would make a
        # resume read, or rewrite, files elsewhere.
        runs = [(".", self.log_dir)] + [(p.name, p) for p in sorted(self.log_dir.iterdir())
                                         if p.is_dir() and not p.is_symlink()]
        found = [(run, path, _run_id_in_name(path.name)) for run, run_dir in runs
                 for path in sorted(run_dir.glob("*tfevents*"))]
        own = self._run_token
        another_run = own is not None and any(token not in (None, own) for *_, token in found)
        for run, path, token in found:
            if own is not None and token != own and (token is not None or another_run):
                continue
            if path.name.startswith(_REWRITING):
                # A rewrite's temporary file a killed process left (outputs.write_replacing
                # names it so): TensorBoard would read it too, and show its steps twice.
                with contextlib.suppress(OSError):
                    path.unlink()
            elif path.is_file() and not path.is_symlink() and \
                    not path.name.endswith(".tmp") and path not in mine:
                yield run, path

    def _holds(self, run: str, record: bytes) -> bool:
        """Whether the found files hold a value of each tag of an encoded event (what a
        write-back of a once-per-run summary, the hparams session, asks)."""
        if self._found is None:
            self._found = self._scan()
        steps = self._found[0]
        _, values, _ = parse_event(record)
        return all((run, tag) in steps for tag, _, _ in values)

    def _missing(self, item: tuple[Any, ...]) -> bytes | None:
        """The event of a write-back item, with only what the found files lack, or a write-back
        of this sink has given them; None if they hold all of it."""
        if self._found is None:
            self._found = self._scan()
        steps, texts = self._found
        if item[0] == "T":
            _, run, tag, text, step, wall_time = item
            if (run, tag, step, text) in texts:
                return None
            texts.add((run, tag, step, text))  # a second write-back of it is passed over
            return encode_text_event(wall_time, step, tag, text)
        _, run, values, step, wall_time, prefix = item
        lacking = {key: value for key, value in flat_scalars(values).items()
                   if steps.get((run, prefix + key), -1) < step}
        for key in lacking:
            steps[(run, prefix + key)] = step
        return encode_scalar_event(wall_time, step, lacking, prefix) if lacking else None

    def _scan(self) -> tuple[dict[tuple[str, str], int], set[tuple[str, str, int, str]]]:
        steps: dict[tuple[str, str], int] = {}
        texts: set[tuple[str, str, int, str]] = set()
        for run, path in self._found_files():
            try:
                for data in iter_event_file(path):
                    try:
                        step, values, _ = parse_event(data)
                    except ValueError:  # not an event: it holds nothing to write back over
                        continue
                    for tag, text, _ in values:
                        if text is not None:
                            texts.add((run, tag, step, text))
                        elif steps.get((run, tag), -1) < step:
                            steps[(run, tag)] = step
            except EventFileCorruptError as exc:
                # What comes before the damage counts: it is what TensorBoard shows.
                self._damaged(exc)
            except OSError as exc:  # it holds nothing that can be read: all is written back
                self._fail("read event file", exc)
            except Exception as exc:  # noqa: BLE001 - one file stops no other's write-back
                self._fail("read event file", ValueError(f"{path}: {type(exc).__name__}: "
                                                         f"{exc}"))
        return steps, texts

    def _truncate_file(self, run: str, path: Path, keep: Callable[[str, str, int], bool], *,
                       at_close: bool = False) -> None:
        """Rewrite ``path`` without what ``keep`` rejects. A full disk keeps it on the list
        of cuts to make at a later flush (reported once); at close it is tried for a while,
        then given up and said. Any other fault is reported, and the file left as it is."""
        try:
            if at_close:
                keep_trying(lambda: _rewrite(path, run, keep), transient_only=True)
            else:
                _rewrite(path, run, keep)
        except EventFileCorruptError as exc:
            self._damaged(exc)
        except OSError as exc:
            if is_transient(exc) and not at_close:
                if path not in self._untruncated:  # said once, as a write's spell is
                    try:
                        info = os.lstat(path)
                    except OSError:  # gone meanwhile: nothing to cut later
                        self._fail("truncate", exc)
                        return
                    self._untruncated[path] = (run, keep, (info.st_dev, info.st_ino))
                    self._fail("truncate", OSError(exc.errno, (
                        f"{path}: {describe_os_error(exc)}; its values past the resume point "
                        "stay until it can be rewritten, tried again at each flush")))
                return
            self._fail("truncate", given_up(exc, f"{path}: the values past the resume point")
                       if is_transient(exc) else exc)
        except Exception as exc:  # one file that cannot be rewritten stops no other
            self._fail("truncate", exc)
        self._untruncated.pop(path, None)

    def _truncate_again(self, *, at_close: bool = False) -> None:
        """The truncations a full disk refused, tried again; at close, for a while. Only on
        the file found then (its device and inode), in a folder that is not a link now: a run
        folder swapped for a link meanwhile would have the cut rewrite another run's file."""
        for path, (run, keep, was) in list(self._untruncated.items()):
            try:
                folder, info = os.lstat(path.parent), os.lstat(path)
                same = stat.S_ISDIR(folder.st_mode) and stat.S_ISREG(info.st_mode) and \
                    (info.st_dev, info.st_ino) == was
            except OSError:
                same = False
            if not same:
                del self._untruncated[path]
                self._fail("truncate", OSError(f"{path}: not the event file the resume found "
                                               "(gone, or reached through a link now); "
                                               "not cut"))
                continue
            self._truncate_file(run, path, keep, at_close=at_close)

    def _damaged(self, exc: EventFileCorruptError) -> None:
        """Report a damaged event file once, whether the write-back or the truncation met it."""
        if exc.path not in self._damage_seen:
            self._damage_seen.add(exc.path)
            self._fail("read event file", exc)

    def _truncate(self, keep: Callable[[str, str, int], bool]) -> None:
        for run, path in self._found_files():
            self._truncate_file(run, path, keep)
        root = self.log_dir / "embeddings"
        if root.is_dir() and not root.is_symlink():
            for step_dir in _step_dirs(root):
                try:
                    for tag_dir in list(step_dir.iterdir()):
                        if tag_dir.is_symlink() or not tag_dir.is_dir():
                            continue
                        if not keep("projector", _unquote(tag_dir.name), int(step_dir.name)):
                            shutil.rmtree(tag_dir)
                    if not any(step_dir.iterdir()):
                        step_dir.rmdir()
                except Exception as exc:
                    self._fail("truncate", exc)
            self._write_projector_config()

    # --- embeddings --------------------------------------------------------------------------

    def _embeddings(self, matrices: dict[str, np.ndarray], step: int,
                    metadata: dict[str, str]) -> None:
        root = self.log_dir / "embeddings"
        for name, matrix in matrices.items():
            matrix = np.asarray(matrix)
            if matrix.ndim != 2:
                raise ValueError(f"embedding {name!r}: expected a 2-D matrix, got shape "
                                 f"{matrix.shape}")
            directory = root / f"{step:05d}" / _quote(name)
            directory.mkdir(parents=True, exist_ok=True)
            # %.9g holds a float32 exactly, %.17g a float64.
            fmt = "%.9g" if matrix.dtype == np.float32 else "%.17g"
            write_replacing(directory / "tensors.tsv", lambda tmp, matrix=matrix, fmt=fmt:
                            np.savetxt(tmp, matrix, fmt=fmt, delimiter="\t"))
        for name, source in metadata.items():
            if name in matrices and name not in self._metadata:
                self._metadata[name] = self._labels(name, source)
        self._write_projector_config()

    def _labels(self, name: str, source: str) -> str:
        """Where the projector finds the labels of ``name``, relative to the log directory: a
        copy of the file at ``source``, so the directory is self-contained; else, as Keras
        reads ``source``, a file already in the log directory; else ``source`` as given (the
        labels may come later), with the missing file reported. A missing label file never
        costs the matrices."""
        target = self.log_dir / "embeddings" / "metadata" / f"{_quote(name)}.tsv"
        try:
            if not os.path.isfile(source):  # a folder, a FIFO: not read; nothing is made
                raise FileNotFoundError(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_replacing(target, lambda tmp: shutil.copyfile(source, tmp))
            return target.relative_to(self.log_dir).as_posix()
        except OSError as exc:  # said once: the name is kept as given, and not read again
            if isinstance(exc, FileNotFoundError) and \
                    not os.path.isabs(source) and (self.log_dir / source).is_file():
                return Path(source).as_posix()  # Keras's reading: a file in the log directory
            why = f"no label file {source!r} in the working directory or in {self.log_dir}" \
                if isinstance(exc, FileNotFoundError) else \
                f"the label file {source!r} cannot be copied ({exc.strerror or exc})"
            self._fail("embeddings", OSError(exc.errno, f"embedding {name!r}: {why}; the "
                                             "projector config names it as given"))
        return Path(source).as_posix()

    def _write_projector_config(self) -> None:
        """projector_config.pbtxt from the embeddings on disk: a function of the directory."""
        root = self.log_dir / "embeddings"
        lines = []
        for step_dir in _step_dirs(root):
            for tag_dir in sorted(step_dir.iterdir()):
                if not (tag_dir / "tensors.tsv").exists():
                    continue
                name = _unquote(tag_dir.name)
                lines.append("embeddings {")
                lines.append(f'  tensor_name: "{_escape(name)}:{step_dir.name}"')
                tensors = (tag_dir / "tensors.tsv").relative_to(self.log_dir).as_posix()
                lines.append(f'  tensor_path: "{tensors}"')
                meta = self._metadata.get(name)
                if meta is None:
                    found = root / "metadata" / f"{tag_dir.name}.tsv"
                    if found.exists():
                        meta = found.relative_to(self.log_dir).as_posix()
                if meta is not None:
                    lines.append(f'  metadata_path: "{meta}"')
                lines.append("}")
        text = "\n".join(lines) + ("\n" if lines else "")
        write_replacing(self.log_dir / "projector_config.pbtxt",
                        lambda tmp: tmp.write_text(text, encoding="utf-8"))


#: The name this writer had first, kept for code that imports it.
TensorBoardSink = TensorBoardWriter

_WHAT = {"s": "scalars", "h": "histogram", "i": "image", "t": "text", "e": "embeddings",
         "r": "truncate", "f": "flush", "c": "close", "S": "write back scalars",
         "T": "write back text", "p": "hparams", "P": "write back hparams"}


#: A step folder's name: ASCII digits (``str.isdigit`` takes "²", which ``int`` refuses).
_STEP = re.compile(r"[0-9]{1,18}")


def _step_dirs(root: Path) -> list[Path]:
    """The step folders under ``root``, in name order: other names, links and files named like
    a step are not this sink's, and are passed over."""
    found = []
    for path in root.iterdir():
        if _STEP.fullmatch(path.name):
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(path.lstat().st_mode):
                    found.append(path)
    return sorted(found)


def _quote(name: str) -> str:
    """A file name for a tag: path separators and other odd characters escaped reversibly."""
    return re.sub(r"[^A-Za-z0-9_.-]", lambda m: f"%{ord(m[0]):02X}", name)


def _unquote(name: str) -> str:
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), name)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _rewrite(path: Path, run: str, keep: Callable[[str, str, int], bool]) -> None:
    """``path`` without the values ``keep`` rejects, and without a torn last record.

    Read once to decide (a file with nothing to drop is not written) and once more to write,
    so no more than a batch of records is held. A damaged file raises
    :class:`EventFileCorruptError` before anything is written and is left as it is: the bytes
    past the damage may still be recovered, and cutting them would lose them for good.
    """
    records = _Records(path)
    changed = False
    for _, data in records:
        changed = changed or _kept(data, run, keep) is not data
    if not changed and records.end == records.size:
        return

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            batch: list[bytes] = []
            held = 0
            for _, data in _Records(path):
                kept = _kept(data, run, keep)
                if kept is not None:
                    batch.append(kept)
                    held += len(kept)
                if held >= _BATCH:
                    out.write(frame_records(batch))
                    batch, held = [], 0
            out.write(frame_records(batch))

    # Beside it under a name nobody can plant a link at, on disk, then renamed over it.
    write_replacing(path, write, durable=True)


def _kept(data: bytes, run: str, keep: Callable[[str, str, int], bool]) -> bytes | None:
    """The event ``data`` with the values ``keep`` accepts: ``data`` itself when that is all of
    them, None when it is none."""
    try:
        step, values, others = parse_event(data)
    except ValueError:  # whole, but not an event: it holds no value to drop, so it stays
        return data
    kept = [raw for tag, _, raw in values if keep(run, tag, step)]
    if len(kept) == len(values):
        return data
    if not kept:
        return None
    return b"".join(others) + _field(5, b"".join([_field(1, raw) for raw in kept]))


# --- histograms and images, made on the writer thread -----------------------------------------


def _image(wall_time: float, step: int, tag: str, values: Any) -> bytes:
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"image {tag!r}: expected a 2-D array, got shape {array.shape}")
    finite = np.isfinite(array)
    low = float(array[finite].min()) if finite.any() else 0.0
    high = float(array[finite].max()) if finite.any() else 0.0
    span = high - low
    scaled = np.zeros(array.shape) if span == 0 else (np.where(finite, array, low) - low) / span
    pixels = np.round(scaled * 255).astype(np.uint8)
    return encode_image_event(wall_time, step, tag, pixels)


_SUMMARIES: dict[str, Callable[[float, int, str, Any], bytes | None]] = {
    "h": encode_histogram_event, "i": _image}
