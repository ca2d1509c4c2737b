"""sinks.tensorboard without tensorboardX: every hand-encoded record against the protobuf
classes of tensorboardX and TensorBoard, the wire-format reader, and vector values."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2 as tb_event_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboardX import summary as tbx_summary
from tensorboardX.proto import event_pb2

from sinks.tensorboard import (
    TensorBoardWriter,
    encode_histogram_event,
    encode_hparams_end_event,
    encode_hparams_start_event,
    encode_image_event,
    encode_scalar_event,
    encode_text_event,
    flat_scalars,
    parse_event,
)

ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
finite = st.floats(-1e6, 1e6, allow_nan=False)


def accumulator(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance=ALL)
    acc.Reload()
    return acc


class TestEncodings:
    @given(values=st.lists(finite, min_size=1, max_size=60), step=st.integers(0, 2**40))
    def test_histogram_is_tensorboardx_summary_histogram(self, values, step):
        """A hand-encoded histogram parses as the Event tensorboardX's summary.histogram
        builds, bucket for bucket."""
        array = np.array(values)
        mine = event_pb2.Event.FromString(encode_histogram_event(2.5, step, "w/h", array))
        ref = event_pb2.Event(wall_time=2.5, step=step,
                              summary=tbx_summary.histogram("w/h", array, bins=30))
        assert mine == ref

    @given(pixels=st.integers(1, 6).flatmap(lambda h: st.integers(1, 6).flatmap(
        lambda w: st.lists(st.integers(0, 255), min_size=h * w, max_size=h * w).map(
            lambda v: np.array(v, np.uint8).reshape(h, w)))))
    def test_image_is_a_grey_png_of_the_pixels(self, pixels):
        """A hand-encoded image is a Summary.Image whose PNG decodes (PIL) to the pixels."""
        event = event_pb2.Event.FromString(encode_image_event(1.0, 3, "w/image", pixels))
        image = event.summary.value[0].image
        assert (image.height, image.width, image.colorspace) == (*pixels.shape, 1)
        decoded = np.array(Image.open(io.BytesIO(image.encoded_image_string)))
        assert np.array_equal(decoded, pixels)

    @given(hparams=st.dictionaries(st.text(min_size=1, max_size=8),
                                   st.one_of(st.booleans(), st.integers(-10**6, 10**6), finite,
                                             st.text(max_size=10)), max_size=6),
           start=st.floats(0, 2e9))
    def test_hparams_session_start_is_tensorboards(self, hparams, start):
        """The session start parses as TensorBoard's own hparams_pb builds it: same tag, same
        null tensor, same plugin, same SessionStartInfo (group name aside: ours is the run
        id)."""
        ref = hparams_summary.hparams_pb(hparams, trial_id="t", start_time_secs=start).value[0]
        event = tb_event_pb2.Event.FromString(encode_hparams_start_event(1.0, hparams, "run-1",
                                                                          start))
        mine = event.summary.value[0]
        assert (mine.tag, mine.tensor, mine.metadata.plugin_data.plugin_name) == \
            (ref.tag, ref.tensor, ref.metadata.plugin_data.plugin_name)
        ours = hparams_metadata.parse_session_start_info_plugin_data(
            mine.metadata.plugin_data.content)
        theirs = hparams_metadata.parse_session_start_info_plugin_data(
            ref.metadata.plugin_data.content)
        assert ours.group_name == "run-1"
        theirs.group_name = "run-1"
        assert ours == theirs

    def test_hparams_session_end(self):
        event = tb_event_pb2.Event.FromString(encode_hparams_end_event(1.0, 9.5))
        info = hparams_metadata.parse_session_end_info_plugin_data(
            event.summary.value[0].metadata.plugin_data.content)
        assert (info.status, info.end_time_secs) == (1, 9.5)  # STATUS_SUCCESS

    @given(values=st.dictionaries(st.text(min_size=1, max_size=5),
                                  st.one_of(finite, st.lists(finite, max_size=4)), max_size=5),
           step=st.integers(0, 2**40))
    def test_vector_values_are_one_scalar_per_element(self, values, step):
        """A list value is written as key/0, key/1, ...: the event equals the one written for
        the values spread out by hand."""
        spread = {}
        for key, value in values.items():
            if isinstance(value, list):
                spread.update({f"{key}/{i}": v for i, v in enumerate(value)})
            else:
                spread[key] = value
        assert flat_scalars(values) == spread
        assert encode_scalar_event(1.0, step, values, "epoch_") == \
            encode_scalar_event(1.0, step, spread, "epoch_")

    @given(step=st.integers(0, 2**62), tag=st.text(min_size=1, max_size=10),
           text=st.text(max_size=30))
    def test_the_reader_reads_what_was_written(self, step, tag, text):
        """parse_event gives back the step, tags and texts of encoded events."""
        got_step, values, _ = parse_event(encode_text_event(1.0, step, tag, text))
        assert (got_step, [(t, x) for t, x, _ in values]) == (step, [(tag, text)])
        got_step, values, _ = parse_event(encode_scalar_event(1.0, step, {"a": 1.0, "b": 2.0}))
        assert (got_step, [(t, x) for t, x, _ in values]) == (step, [("a", None), ("b", None)])

    def test_the_reader_refuses_what_is_no_message(self):
        with pytest.raises(ValueError):
            parse_event(b"\x0a\xff\xff")


def test_vector_metrics_read_back_by_tensorboard(tmp_path):
    """Fed a record with a list value (as the bus passes vector metrics on), the files hold
    f1/0, f1/1, f1/2 at the step, read back by TensorBoard's own reader; a write-back of the
    same values after that finds them there and writes nothing twice."""
    with TensorBoardWriter(tmp_path) as sink:
        sink.scalars("train", {"loss": 0.5, "f1": [0.25, float("nan"), 1.0]}, 3, 1.0, "epoch_")
    with TensorBoardWriter(tmp_path) as sink:
        sink.scalars("train", {"loss": 0.5, "f1": [0.25, float("nan"), 1.0]}, 3, 2.0, "epoch_",
                     only_missing=True)
    acc = accumulator(tmp_path / "train")
    assert sorted(acc.Tags()["scalars"]) == ["epoch_f1/0", "epoch_f1/1", "epoch_f1/2",
                                             "epoch_loss"]
    assert [(e.step, e.value) for e in acc.Scalars("epoch_f1/0")] == [(3, 0.25)]
    assert np.isnan(acc.Scalars("epoch_f1/1")[0].value)


def test_importing_and_writing_loads_neither_tensorboardx_nor_torch(tmp_path):
    """Every kind of record, written and read back on a resume, without tensorboardX's package
    (which imports torch)."""
    code = f"""
import sys
import numpy as np
from sinks.tensorboard import TensorBoardWriter
with TensorBoardWriter({str(tmp_path)!r}) as sink:
    sink.scalars("train", {{"loss": 0.5}}, 0, 1.0)
    sink.text("train", "t", "x", 0, 1.0)
    sink.histogram("train", "w/histogram", np.arange(5.0), 0, 1.0)
    sink.image("train", "w/image", np.ones((2, 2)), 0, 1.0)
    sink.hparams(".", {{"a": 1}}, "g", 1.0, 1.0)
with TensorBoardWriter({str(tmp_path)!r}) as sink:
    sink.truncate(lambda run, tag, step: tag != "t")
    sink.scalars("train", {{"loss": 0.5}}, 0, 1.0, only_missing=True)
print(sorted(m for m in ("torch", "tensorboardX", "tensorflow") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    acc = accumulator(tmp_path / "train")
    assert acc.Tags()["tensors"] == [] and acc.Histograms("w/histogram")[0].step == 0
