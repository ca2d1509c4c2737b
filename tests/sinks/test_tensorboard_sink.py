"""sinks.tensorboard: event encoding, framing, and files TensorBoard's own reader accepts."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.projector import projector_config_pb2
from tensorboardX.crc32c import crc32c as reference_crc
from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.record_writer import masked_crc32c as reference_masked

import sinks.tensorboard as tbs
from eventbus.testing import same
from sinks.tensorboard import (
    TensorBoardWriter,
    encode_file_version_event,
    encode_scalar_event,
    encode_text_event,
    frame_records,
    iter_event_file,
    masked_crc32c,
    masked_crc32c_many,
)

ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
TAGS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
               max_size=20)


def accumulator(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance=ALL)
    acc.Reload()
    return acc


def f32(x: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.float32(x))


class TestEncoding:
    @given(wall_time=st.floats(0, 4e9), step=st.integers(-2**63, 2**63 - 1),
           values=st.dictionaries(TAGS, st.floats(width=64), max_size=4),
           prefix=st.sampled_from(["", "epoch_", "batch_"]))
    def test_scalar_event_is_the_protobuf_encoding(self, wall_time, step, values, prefix):
        """Hand-encoded scalar events parse as the Event tensorboardX's classes would build."""
        data = encode_scalar_event(wall_time, step, values, prefix)
        expected = event_pb2.Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=prefix + k, simple_value=f32(v))
                   for k, v in values.items()]))
        parsed = event_pb2.Event.FromString(data)
        assert (parsed.wall_time, parsed.step) == (expected.wall_time, expected.step)
        assert [v.tag for v in parsed.summary.value] == [v.tag for v in expected.summary.value]
        assert all(same(a.simple_value, b.simple_value)
                   for a, b in zip(parsed.summary.value, expected.summary.value))
        if not any(math.isnan(v) for v in values.values()):
            assert parsed == expected

    @given(wall_time=st.floats(0, 4e9))
    def test_file_version_event_is_the_protobuf_encoding(self, wall_time):
        expected = event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2")
        # Parsed, not compared byte for byte: protobuf leaves a zero wall_time out.
        assert event_pb2.Event.FromString(encode_file_version_event(wall_time)) == expected

    @given(wall_time=st.floats(0, 4e9), step=st.integers(-2**63, 2**63 - 1), tag=TAGS,
           text=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300))
    def test_text_event_is_the_protobuf_encoding(self, wall_time, step, tag, text):
        """Hand-encoded text events are the bytes tensorboardX's classes build for summary.text
        (under the tag given)."""
        from tensorboardX.proto.plugin_text_pb2 import TextPluginData
        from tensorboardX.proto.tensor_pb2 import TensorProto
        from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto

        metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name="text", content=TextPluginData(version=0).SerializeToString()))
        tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf-8")],
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        expected = event_pb2.Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)]))
        assert event_pb2.Event.FromString(encode_text_event(wall_time, step, tag, text)) == \
            expected

    def test_a_run_of_scalars_and_text_never_imports_tensorboardx(self, tmp_path):
        """Its import can take seconds (it may import torch); the event file must not wait."""
        script = (
            "import sys\n"
            "from sinks.tensorboard import TensorBoardWriter\n"
            f"sink = TensorBoardWriter({str(tmp_path)!r})\n"
            "sink.text('train', 'model_config', '{}', step=0, wall_time=1.0)\n"
            "sink.scalars('train', {'loss': 0.5}, step=0, wall_time=1.0)\n"
            "sink.flush()\n"
            "sink.close()\n"
            "print('tensorboardX' in sys.modules)\n")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True, timeout=120)
        assert out.stdout.strip() == "False"
        acc = accumulator(tmp_path / "train")
        assert acc.Scalars("loss")[0].value == 0.5
        assert acc.Tensors("model_config")[0].tensor_proto.string_val == [b"{}"]

    def test_values_beyond_float32_become_infinite(self):
        """A value too large for float32 is stored as infinity (TensorFlow's cast), not an error."""
        event = event_pb2.Event.FromString(encode_scalar_event(0.0, 1, {"x": -1e300}))
        assert event.summary.value[0].simple_value == -math.inf

    @given(datas=st.lists(st.binary(max_size=64), max_size=80))
    def test_crc_matches_tensorboardx(self, datas):
        """Batched masked CRC-32C equals tensorboardX's record checksum, record by record."""
        assert masked_crc32c_many(datas) == [reference_masked(d) for d in datas]

    def test_vectorised_crc_path(self, monkeypatch):
        """Many records of one length take the NumPy path and still match the reference."""
        monkeypatch.setattr(tbs, "_NATIVE", None)
        rng = np.random.default_rng(1)
        datas = [bytes(rng.integers(0, 256, 40, dtype=np.uint8)) for _ in range(100)]
        assert masked_crc32c_many(datas) == [reference_masked(d) for d in datas]
        assert tbs._crc_py(b"123456789") == reference_crc(b"123456789") == 0xE3069283
        assert masked_crc32c(datas[0]) == reference_masked(datas[0])

    def test_framing_round_trip_and_torn_tail(self, tmp_path):
        """Framed records read back; a record cut short at the end is left out quietly."""
        records = [b"a", b"", b"x" * 300]
        path = tmp_path / "events"
        path.write_bytes(frame_records(records))
        assert list(iter_event_file(path)) == records
        path.write_bytes(frame_records(records)[:-3])
        assert list(iter_event_file(path)) == records[:2]


class TestSink:
    @given(series=st.lists(st.dictionaries(st.sampled_from(["loss", "acc", "lr"]),
                                           st.floats(width=32), min_size=1), min_size=1,
                           max_size=40))
    def test_what_is_written_is_what_tensorboard_reads(self, tmp_path_factory, series):
        """Property: every (tag, step, value) given is read back by the EventAccumulator."""
        log_dir = tmp_path_factory.mktemp("tb")
        with TensorBoardWriter(log_dir) as sink:
            for step, values in enumerate(series):
                assert sink.scalars("train", values, step, 1000.0 + step, "epoch_")
        acc = accumulator(log_dir / "train")
        for key in {k for values in series for k in values}:
            expected = [(s, v[key]) for s, v in enumerate(series) if key in v]
            got = [(e.step, e.value) for e in acc.Scalars(f"epoch_{key}")]
            assert [s for s, _ in got] == [s for s, _ in expected]
            assert all(same(g, f32(x)) for (_, g), (_, x) in zip(got, expected))

    def test_histogram_image_text(self, tmp_path):
        """Histograms, images and text entries are read back by TensorBoard's reader."""
        weights = np.arange(12, dtype=float).reshape(3, 4)
        with TensorBoardWriter(tmp_path) as sink:
            sink.histogram("train", "w/histogram", np.append(weights, np.nan), 2, 1.0)
            sink.image("train", "w/image", weights, 2, 1.0)
            sink.text("train", "note", "**hello**", 5, 1.0)
        acc = accumulator(tmp_path / "train")
        histogram = acc.Histograms("w/histogram")[0]
        assert histogram.step == 2
        assert histogram.histogram_value.num == 12  # the NaN is left out
        assert (histogram.histogram_value.min, histogram.histogram_value.max) == (0, 11)
        image = acc.Images("w/image")[0]
        assert (image.width, image.height) == (4, 3)
        text = acc.Tensors("note")[0]
        assert text.step == 5 and text.tensor_proto.string_val == [b"**hello**"]

    def test_embeddings_for_the_projector(self, tmp_path):
        """Embeddings become tensors.tsv files and a projector config the projector can parse."""
        labels = tmp_path / "labels.tsv"
        labels.write_text("a\nb\nc\n")
        log_dir = tmp_path / "logs"
        matrix = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
        with TensorBoardWriter(log_dir) as sink:
            sink.embeddings({"emb/embeddings": matrix}, 0, {"emb/embeddings": str(labels)})
            sink.embeddings({"emb/embeddings": matrix * 2}, 1)
        config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(),
                                   projector_config_pb2.ProjectorConfig())
        assert [e.tensor_name for e in config.embeddings] == ["emb/embeddings:00000",
                                                              "emb/embeddings:00001"]
        for embedding, expected in zip(config.embeddings, (matrix, matrix * 2)):
            loaded = np.loadtxt(log_dir / embedding.tensor_path, delimiter="\t", ndmin=2)
            assert np.array_equal(loaded.astype(np.float32), expected)
            assert (log_dir / embedding.metadata_path).read_text() == "a\nb\nc\n"

    def test_truncate_rewrites_only_what_it_must(self, tmp_path):
        """truncate drops rejected values and keeps the rest; other files stay untouched."""
        with TensorBoardWriter(tmp_path) as sink:
            for step in range(4):
                sink.scalars("train", {"loss": step, "acc": step}, step, 1.0, "epoch_")
                sink.scalars("validation", {"loss": step}, step, 1.0, "epoch_")
        (val_file,) = (tmp_path / "validation").iterdir()
        before = val_file.read_bytes()
        with TensorBoardWriter(tmp_path) as sink:
            sink.truncate(lambda run, tag, step: run != "train" or tag != "epoch_loss"
                          or step < 2)
        acc = accumulator(tmp_path / "train")
        assert [e.step for e in acc.Scalars("epoch_loss")] == [0, 1]
        assert [e.step for e in acc.Scalars("epoch_acc")] == [0, 1, 2, 3]
        assert val_file.read_bytes() == before
        assert not list(tmp_path.rglob("*.tmp"))

    def test_only_missing_writes_back_what_the_files_lack(self, tmp_path):
        """A write-back adds, per run and tag, only the steps past the highest the files that
        were there hold, and only texts they do not hold; what this sink writes itself does not
        count; the result reads back with each step once, in order."""
        with TensorBoardWriter(tmp_path) as sink:
            for step in range(3):
                sink.scalars("train", {"loss": step}, step, 1.0, "epoch_")
            sink.scalars("train", {"acc": 0.0}, 0, 1.0, "epoch_")  # acc got one epoch only
            sink.text("train", "decisions", "cut", 1, 1.0)
        with TensorBoardWriter(tmp_path) as sink:
            for step in range(5):
                sink.scalars("train", {"loss": step, "acc": step / 10}, step, 2.0, "epoch_",
                             only_missing=True)
                sink.scalars("validation", {"loss": step}, step, 2.0, "epoch_",
                             only_missing=True)
            sink.text("train", "decisions", "cut", 1, 2.0, only_missing=True)  # held already
            sink.text("train", "decisions", "stop", 4, 2.0, only_missing=True)
            sink.scalars("train", {"loss": 5}, 5, 3.0, "epoch_")  # the run going on
        acc = accumulator(tmp_path / "train")
        assert [(e.step, e.value) for e in acc.Scalars("epoch_loss")] == \
            [(s, float(s)) for s in range(6)]
        assert [e.step for e in acc.Scalars("epoch_acc")] == [0, 1, 2, 3, 4]
        assert [(e.step, e.tensor_proto.string_val) for e in acc.Tensors("decisions")] == \
            [(1, [b"cut"]), (4, [b"stop"])]
        assert [e.step for e in accumulator(tmp_path / "validation").Scalars("epoch_loss")] \
            == list(range(5))

    def test_a_write_back_over_damaged_files_writes_it_all(self, tmp_path):
        """Files that hold garbage hold nothing to write back over: every value is written."""
        (tmp_path / "train").mkdir()
        garbage = tmp_path / "train" / "events.out.tfevents.1.host"
        garbage.write_bytes(frame_records([b"\xff" * 20]))
        errors = []
        with TensorBoardWriter(tmp_path, on_error=lambda what, exc: errors.append(what)) as sink:
            sink.scalars("train", {"loss": 1.0}, 0, 1.0, "epoch_", only_missing=True)
        assert errors == []
        garbage.unlink()  # TensorBoard's reader stops at it
        assert [e.step for e in accumulator(tmp_path / "train").Scalars("epoch_loss")] == [0]

    def test_flush_without_sync_writes_through(self, tmp_path, monkeypatch):
        """flush(sync=False) returns once what was queued is in the file, without fsync."""
        synced = []
        monkeypatch.setattr(tbs.os, "fsync", lambda fd: synced.append(fd))
        sink = TensorBoardWriter(tmp_path)
        try:
            sink.scalars("train", {"loss": 1.0}, 0, 1.0)
            assert sink.flush(10, sync=False)
            (path,) = (tmp_path / "train").iterdir()
            assert len(list(iter_event_file(path))) == 2  # the file version, the scalars
            assert synced == []
            assert sink.flush(10)
            assert synced
        finally:
            sink.close()

    def test_write_errors_are_reported_and_writing_goes_on(self, tmp_path):
        """A run directory that cannot be made is reported through on_error; others still work."""
        (tmp_path / "train").write_text("a file where a directory should be")
        errors = []
        with TensorBoardWriter(tmp_path, on_error=lambda what, exc: errors.append(what)) as sink:
            sink.scalars("train", {"loss": 1.0}, 0, 1.0)
            sink.scalars("validation", {"loss": 1.0}, 0, 1.0)
        assert errors == ["write train"]
        assert [e.value for e in accumulator(tmp_path / "validation").Scalars("loss")] == [1.0]

    def test_queue_bound_and_close(self, tmp_path):
        """Beyond max_pending items are dropped and counted; after close nothing is queued."""
        sink = TensorBoardWriter(tmp_path, max_pending=0)
        assert not sink.scalars("train", {"loss": 1.0}, 0, 1.0)
        assert sink.dropped == 1
        assert sink.flush(timeout=10)
        assert sink.close(timeout=10) and sink.close(timeout=10)
        assert not sink.text("train", "x", "y", 0, 1.0)

    def test_training_thread_only_queues(self, tmp_path, monkeypatch):
        """Writing happens on the sink's own thread, never the caller's."""
        threads = set()
        original = tbs._RunFile.write

        def spy(self, records):
            threads.add(threading.current_thread().name)
            return original(self, records)

        monkeypatch.setattr(tbs._RunFile, "write", spy)
        with TensorBoardWriter(tmp_path) as sink:
            sink.scalars("train", {"loss": 1.0}, 0, 1.0)
        assert threads and threading.current_thread().name not in threads

    def test_event_files_begin_with_the_file_version(self, tmp_path):
        """Each file starts with brain.Event:2, so TensorBoard uses restart-aware reading."""
        with TensorBoardWriter(tmp_path) as sink:
            sink.scalars("train", {"loss": 1.0}, 0, 1.0)
        (path,) = (tmp_path / "train").iterdir()
        assert "tfevents" in path.name and os.path.getsize(path) > 0
        first = event_pb2.Event.FromString(next(iter_event_file(path)))
        assert first.file_version == "brain.Event:2"


def test_image_of_constant_weights(tmp_path):
    """A constant weight (zero range) still makes an image rather than dividing by zero."""
    with TensorBoardWriter(tmp_path) as sink:
        sink.image("train", "b/image", np.zeros((1, 5)), 0, 1.0)
    assert accumulator(tmp_path / "train").Images("b/image")[0].width == 5


@pytest.mark.parametrize("values", [[math.nan, math.nan], []])
def test_histogram_without_finite_values_is_skipped(tmp_path, values):
    """A weight with no finite value writes no histogram (TensorFlow would fail the summary)."""
    errors = []
    with TensorBoardWriter(tmp_path, on_error=lambda w, e: errors.append(w)) as sink:
        sink.histogram("train", "w/histogram", np.array(values), 0, 1.0)
        sink.scalars("train", {"x": 1.0}, 0, 1.0)
    assert errors == []
    assert accumulator(tmp_path / "train").Tags()["histograms"] == []


class TestALogDirOthersCanWrite:
    """A resume's truncation and write-back never go through a link planted in the log
    directory: not into another folder's embeddings, not to a link's target instead of an
    event file, not through the names a rewrite's temporary file used to have."""

    def test_links_are_neither_read_rewritten_nor_removed_through(self, tmp_path):
        from sinks.tensorboard import TensorBoardWriter

        log_dir, elsewhere = tmp_path / "tb", tmp_path / "elsewhere"
        victim = elsewhere / "keep" / "precious.txt"
        victim.parent.mkdir(parents=True)
        victim.write_text("not the sink's")
        sink = TensorBoardWriter(log_dir)
        sink.scalars("train", {"loss": 1.0}, step=0, wall_time=1.0)
        sink.scalars("train", {"loss": 0.5}, step=1, wall_time=2.0)
        sink.embeddings({"emb": np.ones((2, 2))}, step=1)
        sink.close()
        (event_file,) = (log_dir / "train").glob("*tfevents*")
        planted = [event_file.with_name(event_file.name + ".tmp"),  # the old fixed names
                   log_dir / ".projector_config.pbtxt.tmp"]
        for link in planted:
            link.symlink_to(victim)
        (log_dir / "embeddings" / "00009").symlink_to(elsewhere)  # a step folder, linked
        (log_dir / "train" / "events.out.tfevents.planted").symlink_to(victim)
        before = event_file.read_bytes()

        sink = TensorBoardWriter(log_dir)
        sink.truncate(lambda run, tag, step: step < 1)  # a resume at step 1
        sink.close()
        assert victim.read_text() == "not the sink's"
        assert all(link.is_symlink() for link in planted)
        assert (elsewhere / "keep").is_dir()
        assert event_file.read_bytes() != before and not event_file.is_symlink()
        assert not (log_dir / "embeddings" / "00001").exists()  # the sink's own, dropped


class TestEventFilesFoundAreNotTrusted:
    """A resume reads the event files it finds a record at a time, checking both checksums as
    TensorBoard does: a planted length never becomes an allocation, a damaged file is reported
    by file and byte and left as it is, and the other files are still rewritten."""

    @staticmethod
    def run_of_four(log_dir):
        with TensorBoardWriter(log_dir) as sink:
            for step in range(4):
                sink.scalars("train", {"loss": step}, step, 1.0, "epoch_")
                sink.scalars("validation", {"loss": step}, step, 1.0, "epoch_")
        return [next((log_dir / run).glob("*tfevents*")) for run in ("train", "validation")]

    @pytest.mark.parametrize("size", [2047, 2048, 5000, (1 << 20) + 17, (3 << 20) + 5])
    def test_long_records_checksum_as_tensorboardx_does(self, monkeypatch, size):
        """The NumPy CRC of a long record (an image) equals the reference, bit for bit."""
        monkeypatch.setattr(tbs, "_NATIVE", None)
        data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference_masked(data)
        assert masked_crc32c_many([data, data[:size // 2]]) == \
            [reference_masked(data), reference_masked(data[:size // 2])]

    def test_a_planted_length_is_damage_not_an_allocation(self, tmp_path):
        """A record whose length claims 2**63 bytes is never read: with a wrong checksum it is
        damage, named by file and byte, after the records before it; with a right one it runs
        past the end of the file, which is what a crash mid-write leaves, and ends the records
        quietly."""
        good = frame_records([b"first", b"second"])
        header = (2 ** 63).to_bytes(8, "little")
        path = tmp_path / "events.out.tfevents.planted"
        path.write_bytes(good + header + b"\0\0\0\0" + b"x" * 64)
        read = []
        with pytest.raises(tbs.EventFileCorruptError) as caught:
            read.extend(iter_event_file(path))
        assert read == [b"first", b"second"]
        assert caught.value.offset == len(good) and caught.value.path == str(path)
        assert caught.value.field == "length_crc"
        assert str(len(good)) in str(caught.value) and str(path) in str(caught.value)
        path.write_bytes(good + header + masked_crc32c(header).to_bytes(4, "little") + b"x" * 64)
        assert list(iter_event_file(path)) == [b"first", b"second"]

    def test_a_length_past_the_limit_is_damage_even_inside_the_file(self, tmp_path):
        """A checked length of more than 256 MiB in a file that long (sparse: no disk) is
        damage, not a read of 256 MiB."""
        header = (300 << 20).to_bytes(8, "little")
        path = tmp_path / "events.out.tfevents.sparse"
        with open(path, "wb") as file:
            file.write(header + masked_crc32c(header).to_bytes(4, "little"))
            file.truncate(320 << 20)
        with pytest.raises(tbs.EventFileCorruptError) as caught:
            list(iter_event_file(path))
        assert caught.value.field == "length" and caught.value.offset == 0

    def test_records_in_a_sparse_file_s_hole_are_damage_not_a_read_of_the_hole(self, tmp_path):
        """A file of valid 8 MiB records of zeros, the zeros a hole: kilobytes on disk, read and
        checksummed whole at every resume (64 MiB records: each flush of the loop waited 30 s,
        and the resumed epochs never reached TensorBoard). A resume reads no more of a file than
        its stored bytes allow: the first record past that is damage, said and the file left as
        it is, the records before it counted. A long record a file stores is still read."""
        from eventbus.outputs import stored_size

        self.run_of_four(tmp_path)
        planted = tmp_path / "train" / "events.out.tfevents.1700000000.host.1.v2"
        zeros = 8 << 20
        head = b"\x1a" + tbs._varint(zeros)  # Event.file_version, of 8 MiB of zeros
        length = (len(head) + zeros).to_bytes(8, "little")
        record_head = length + masked_crc32c(length).to_bytes(4, "little") + head
        data_crc = masked_crc32c(head + bytes(zeros)).to_bytes(4, "little")
        first = frame_records([encode_file_version_event(1.0)])
        with open(planted, "wb") as file:
            file.write(first)
            for _ in range(2):
                file.write(record_head)
                file.seek(zeros, os.SEEK_CUR)  # a hole
                file.write(data_crc)
        if stored_size(planted.stat()) > 1 << 20:
            pytest.skip("this file system stores the zeros: no sparse file to test")
        (tmp_path / "long").mkdir()
        stored = tmp_path / "long" / "events.out.tfevents.1.host.1"
        long_record = b"\x1a" + tbs._varint(6 << 20) + os.urandom(6 << 20)
        stored.write_bytes(frame_records([long_record]))
        was = planted.stat()
        errors = []
        with TensorBoardWriter(tmp_path, on_error=lambda what, exc: errors.append(exc)) as sink:
            sink.truncate(lambda run, tag, step: step < 3)
            sink.scalars("train", {"loss": 3.0}, 3, 2.0, "epoch_", only_missing=True)
        assert [type(e) for e in errors] == [tbs.EventFileCorruptError]
        assert errors[0].field == "stored" and errors[0].path == str(planted)
        assert errors[0].offset == len(first)
        now = planted.stat()
        assert (now.st_ino, now.st_size, now.st_mtime_ns) == \
            (was.st_ino, was.st_size, was.st_mtime_ns)
        assert [e.step for path in sorted((tmp_path / "train").glob("*tfevents*"))
                if path != planted for e in accumulator(path).Scalars("epoch_loss")] \
            == [0, 1, 2, 3]
        assert list(iter_event_file(stored)) == [long_record]

    def test_a_flipped_byte_leaves_the_file_and_the_others_are_truncated(self, tmp_path):
        train, validation = self.run_of_four(tmp_path)
        damaged = bytearray(train.read_bytes())
        damaged[-6] ^= 0x01  # inside the last record's data
        train.write_bytes(bytes(damaged))
        errors = []
        with TensorBoardWriter(tmp_path, on_error=lambda what, exc: errors.append(exc)) as sink:
            sink.truncate(lambda run, tag, step: step < 2)
        assert train.read_bytes() == bytes(damaged)
        assert [type(e) for e in errors] == [tbs.EventFileCorruptError]
        assert errors[0].field == "data_crc" and errors[0].path == str(train)
        assert [e.step for e in accumulator(tmp_path / "validation").Scalars("epoch_loss")] \
            == [0, 1]

    def test_a_torn_last_record_is_still_cut_quietly(self, tmp_path):
        """What a crash mid-write leaves is not damage: the rewrite drops it, nothing is
        reported."""
        train, _ = self.run_of_four(tmp_path)
        whole = train.read_bytes()
        train.write_bytes(whole + frame_records([b"torn"])[:-2])
        errors = []
        with TensorBoardWriter(tmp_path, on_error=lambda what, exc: errors.append(exc)) as sink:
            sink.truncate(lambda run, tag, step: True)
        assert errors == [] and train.read_bytes() == whole

    @pytest.mark.parametrize("event", [
        b"\x12\x03abc",                       # Event.step length-delimited, not a varint
        b"\x2a\x02\x08\x07",                   # a Summary.value that is a varint
        b"\x2a\x04\x0a\x02\x08\x05",           # Summary.Value.tag as a varint
    ], ids=["step", "value", "tag"])
    def test_a_well_framed_record_of_the_wrong_wire_types_stops_no_write_back(
            self, tmp_path, event):
        """A 20-byte file in another run's folder, its checksums right, its fields of the
        wrong wire types: it raised a TypeError that ended every write-back item of the
        resume (epochs the log has never reached TensorBoard). Now such a record is no
        event (it holds nothing to write over), any other fault of one file is reported
        naming it, and the write-back is done."""
        self.run_of_four(tmp_path)
        (tmp_path / "other").mkdir()
        planted = tmp_path / "other" / "events.out.tfevents.0.other"
        planted.write_bytes(frame_records([event]))
        errors = []
        with TensorBoardWriter(tmp_path, on_error=lambda what, exc: errors.append(exc)) as sink:
            for step in (4, 5):
                sink.scalars("train", {"loss": float(step)}, step, 2.0, "epoch_",
                             only_missing=True)
        assert [e.step for e in accumulator(tmp_path / "train").Scalars("epoch_loss")] \
            == [0, 1, 2, 3, 4, 5]
        assert all(str(planted) in str(e) for e in errors)

    def test_a_run_folder_that_is_a_link_gets_no_file_written_through_it(self, tmp_path):
        """train/ replaced by a link to another folder (between a crash and its resume): the
        new event file was made wherever the link pointed. It is refused, and said."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (tmp_path / "tb").mkdir()
        (tmp_path / "tb" / "train").symlink_to(elsewhere, target_is_directory=True)
        errors: list = []
        with TensorBoardWriter(tmp_path / "tb",
                             on_error=lambda what, exc: errors.append(exc)) as sink:
            sink.scalars("train", {"loss": 1.0}, 0, 1000.0, "epoch_")
        assert list(elsewhere.iterdir()) == [] and errors

    def test_a_record_of_millions_of_empty_values_is_damage_not_memory(self, tmp_path):
        """A planted record whose summary holds millions of two-byte values cost a resume 40
        times its size in Python objects for each pass over it. More fields than any writer
        writes make it no event: passed over unread past that, the file left as it is, and
        the write-back done."""
        import tracemalloc

        self.run_of_four(tmp_path)
        (tmp_path / "other").mkdir()
        planted = tmp_path / "other" / "events.out.tfevents.0.other"
        summary = b"\x0a\x00" * 2_000_000  # Summary.value, empty, two million times
        event = b"\x2a" + tbs._varint(len(summary)) + summary  # Event.summary
        planted.write_bytes(frame_records([event]))
        before = planted.read_bytes()
        errors: list = []
        tracemalloc.start()
        with TensorBoardWriter(tmp_path, on_error=lambda what, exc: errors.append(exc)) as sink:
            sink.scalars("train", {"loss": 4.0}, 4, 2.0, "epoch_", only_missing=True)
            sink.flush()
            peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 40 * (1 << 20)
        assert [e.step for e in accumulator(tmp_path / "train").Scalars("epoch_loss")] \
            == [0, 1, 2, 3, 4]
        assert planted.read_bytes() == before
        assert all(str(planted) in str(e) for e in errors)

    def test_a_resumed_file_sorts_after_the_crashed_one_whatever_the_clock_says(
            self, tmp_path, monkeypatch):
        """TensorBoard reads a run's files in name order, and the names carry the time: with
        the clock set back (or another machine's behind), a resumed run's file sorted before
        the crashed one's and its epochs showed first or not at all."""
        train, _ = self.run_of_four(tmp_path)
        monkeypatch.setattr(tbs.time, "time", lambda: 1000.0)  # long before the first file
        with TensorBoardWriter(tmp_path) as sink:
            sink.scalars("train", {"loss": 4.0}, 4, 1000.0, "epoch_")
        names = sorted(p.name for p in (tmp_path / "train").glob("events.out.tfevents.*"))
        assert names[0] == train.name and len(names) == 2
        assert [e.step for e in accumulator(tmp_path / "train").Scalars("epoch_loss")] \
            == [0, 1, 2, 3, 4]

    @pytest.mark.parametrize("name", ["events.out.tfevents.1.\u00b2", "events.out.tfevents."
                                      "\u0661\u0662.3.host", "events.out.tfevents.9" * 3])
    def test_a_name_that_is_no_time_stamp_stops_no_write(self, tmp_path, name):
        """An empty file named with a digit float() refuses ('²': a digit to isdigit()) made
        every write to the run fail; such a name is passed over."""
        (tmp_path / "train").mkdir()
        (tmp_path / "train" / name).write_bytes(b"")
        errors: list = []
        with TensorBoardWriter(tmp_path, on_error=lambda what, exc: errors.append(exc)) as sink:
            sink.scalars("train", {"loss": 1.0}, 0, 1000.0, "epoch_")
        assert errors == []
        assert [e.step for e in accumulator(tmp_path / "train").Scalars("epoch_loss")] == [0]

    def test_a_rewrite_s_temporary_file_left_by_a_kill_is_removed(self, tmp_path):
        """Killed while a resume rewrote an event file: its hidden temporary file holds the
        run's events too, and TensorBoard reads every file named like an event file, so each
        step showed twice. The next resume removes it (only that name: .events.out.tfevents.*)."""
        train, _ = self.run_of_four(tmp_path)
        leftover = train.parent / f".{train.name}.x1y2z3{train.suffix}"
        leftover.write_bytes(train.read_bytes())
        other = train.parent / ".notes"
        other.write_text("the user's")
        with TensorBoardWriter(tmp_path) as sink:
            sink.truncate(lambda run, tag, step: True)
        assert not leftover.exists() and other.read_text() == "the user's"
        assert [e.step for e in accumulator(tmp_path / "train").Scalars("epoch_loss")] \
            == [0, 1, 2, 3]

    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
    def test_a_fifo_and_odd_step_folders_neither_block_nor_stop_a_resume(self, tmp_path):
        self.run_of_four(tmp_path)
        os.mkfifo(tmp_path / "train" / "events.out.tfevents.fifo")
        (tmp_path / "embeddings" / "\u00b2" / "x").mkdir(parents=True)  # isdigit, not int
        (tmp_path / "embeddings" / "00007").write_text("a file named like a step")
        done = threading.Event()

        def resume():
            with TensorBoardWriter(tmp_path) as sink:
                sink.truncate(lambda run, tag, step: step < 1)
                sink.scalars("train", {"loss": 9.0}, 1, 2.0, "epoch_", only_missing=True)
            done.set()

        threading.Thread(target=resume, daemon=True).start()
        assert done.wait(30), "the resume blocked on a FIFO"
        assert (tmp_path / "embeddings" / "00007").read_text() == "a file named like a step"
        assert [e.step for e in accumulator(tmp_path / "validation").Scalars("epoch_loss")] \
            == [0]


class TestEventFilesOfOtherRuns:
    """A log directory may hold several runs' event files (a fresh run adds its own beside
    those there, as Keras does): a resume cuts, and reads back for its write-back, only the
    files whose names carry its run id, and those named by no run id only while no file names
    another run."""

    @staticmethod
    def four_steps(log_dir, run_id=None):
        before = set(log_dir.glob("train/*tfevents*"))
        with TensorBoardWriter(log_dir, run_id=run_id) as sink:
            for step in range(4):
                sink.scalars("train", {"loss": float(step)}, step, 1.0, "epoch_")
        (path,) = set(log_dir.glob("train/*tfevents*")) - before
        return path

    @staticmethod
    def steps(path):
        return [e.step for e in accumulator(path).Scalars("epoch_loss")]

    def test_files_named_by_no_run_are_this_run_s_unless_another_run_is_named(self, tmp_path):
        alone, shared = tmp_path / "alone", tmp_path / "shared"
        unnamed = self.four_steps(alone)
        with TensorBoardWriter(alone, run_id="b") as sink:  # its earlier files, unnamed
            sink.truncate(lambda run, tag, step: step < 2)
        assert self.steps(unnamed) == [0, 1]

        unnamed, run_a = self.four_steps(shared), self.four_steps(shared, run_id="a")
        before = {path: path.read_bytes() for path in (unnamed, run_a)}
        with TensorBoardWriter(shared, run_id="b") as sink:
            sink.truncate(lambda run, tag, step: step < 2)
            sink.scalars("train", {"loss": 2.0}, 2, 2.0, "epoch_", only_missing=True)
        assert {path: path.read_bytes() for path in before} == before
        (run_b,) = set(shared.glob("train/*tfevents*")) - set(before)
        assert self.steps(run_b) == [2]  # neither file's step 3 counted as this run's

    @pytest.mark.parametrize(("run_id", "token"), [
        ("3f2a9c0d", "3f2a9c0d"), ("a/b.c d", "a%2Fb%2Ec%20d"), ("é", "%C3%A9"),
        ("x" * 65, "+" + hashlib.sha256(b"x" * 65).hexdigest()[:32])])
    def test_the_run_id_in_a_name_is_one_part_of_it_that_tensorboard_reads(self, tmp_path,
                                                                          run_id, token):
        path = self.four_steps(tmp_path, run_id=run_id)
        assert path.name.split(".")[-1] == f"run_id={token}"
        assert self.steps(tmp_path / "train") == [0, 1, 2, 3]
