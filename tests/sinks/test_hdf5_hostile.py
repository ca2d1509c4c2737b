"""load_checkpoint on checkpoints built to attack the loader: each is a real HDF5 file, written
with h5py, that reads another file, follows a link out of /weights, declares more than it
stores, holds something that is not a numeric array, or is not a file at all. Every one is a
CheckpointError naming the file and the dataset, and nothing foreign comes back."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import orjson
import pytest

from eventbus import CheckpointError, EventBusError
from sinks.hdf5 import MAX_EXPANSION, load_checkpoint, write_checkpoint

ROOT = os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                       os.environ.get("PYTHONPATH", "")])
#: The bytes of a file the loader must never hand back: each hostile checkpoint points at them.
SECRET = b"TOP-SECRET-" * 8


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A readable file that is not a checkpoint; its bytes must never come back as weights."""
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def other(tmp_path: Path) -> Path:
    """Another HDF5 file, holding SECRET as a dataset, for links and virtual datasets."""
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as file:
        file["secret"] = np.frombuffer(SECRET, dtype=np.uint8)
    return path


def hostile(tmp_path: Path, build: Callable[[h5py.Group], str | None]) -> Path:
    """A real checkpoint with one weight, then ``build(weights_group)`` adds something; the
    name it returns is added to the names attribute, so the file is consistent but for it."""
    path = tmp_path / "hostile.h5"
    write_checkpoint(path, {"w": np.ones(3)}, metadata={"epoch": 1})
    with h5py.File(path, "a") as file:
        group = file["weights"]
        added = build(group)
        if added is not None:
            names = orjson.loads(group.attrs["names"])
            group.attrs["names"] = orjson.dumps([*names, added]).decode()
    return path


def refused(path: Path, dataset: str | None = None, match: str | None = None
            ) -> CheckpointError:
    """load_checkpoint refuses ``path`` with a CheckpointError naming it (and the dataset)."""
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    error = info.value
    assert isinstance(error, EventBusError) and isinstance(error, ValueError)
    assert error.path == str(path) and str(path) in str(error)
    if dataset is not None:
        assert error.dataset == dataset and dataset in str(error)
    assert SECRET[:10] not in str(error).encode()
    return error


@contextlib.contextmanager
def memory_cap(extra: int = 1 << 30) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``extra`` while the block runs,
    so a loader that believed a huge declared shape fails with MemoryError instead of taking the
    machine's memory (Linux only; elsewhere the cap is skipped)."""
    if not sys.platform.startswith("linux"):
        yield
        return
    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class TestOtherFiles:
    def test_external_storage_is_refused(self, tmp_path: Path, secret: Path) -> None:
        """A dataset whose values HDF5 reads from another file (external storage) would hand
        back that file's bytes; it is refused before anything is read."""
        def build(group: h5py.Group) -> str:
            group.create_dataset("leak", shape=(len(SECRET),), dtype="u1",
                                 external=[(str(secret), 0, len(SECRET))])
            return "leak"

        path = hostile(tmp_path, build)
        with h5py.File(path, "r") as file:  # the attack is real: h5py alone returns the secret
            assert file["weights/leak"][()].tobytes() == SECRET
        refused(path, "/weights/leak", "external files")

    def test_external_link_is_not_followed(self, tmp_path: Path, other: Path) -> None:
        """An external link in /weights to another file's dataset is refused, not followed."""
        def build(group: h5py.Group) -> str:
            group["leak"] = h5py.ExternalLink(str(other), "/secret")
            return "leak"

        refused(hostile(tmp_path, build), "/weights/leak", "external link")

    def test_external_link_as_the_weights_group(self, tmp_path: Path, other: Path) -> None:
        """/weights itself an external link: refused too."""
        path = tmp_path / "ext.h5"
        with h5py.File(other, "a") as file:
            group = file.create_group("weights")
            group["w"] = np.frombuffer(SECRET, dtype=np.uint8)
            group.attrs["names"] = '["w"]'
        write_checkpoint(path, {"w": np.ones(1)})
        with h5py.File(path, "a") as file:
            del file["weights"]
            file["weights"] = h5py.ExternalLink(str(other), "/weights")
        refused(path, "/weights", "external link")

    def test_soft_link_out_of_weights_is_not_followed(self, tmp_path: Path) -> None:
        """A soft link in /weights to a dataset elsewhere in the file is refused."""
        def build(group: h5py.Group) -> str:
            group.file["elsewhere"] = np.frombuffer(SECRET, dtype=np.uint8)
            group["leak"] = h5py.SoftLink("/elsewhere")
            return "leak"

        refused(hostile(tmp_path, build), "/weights/leak", "soft link")

    def test_virtual_dataset_is_refused(self, tmp_path: Path, other: Path) -> None:
        """A virtual dataset mapping another file's dataset is refused."""
        def build(group: h5py.Group) -> str:
            layout = h5py.VirtualLayout(shape=(len(SECRET),), dtype="u1")
            layout[:] = h5py.VirtualSource(str(other), "secret", shape=(len(SECRET),))
            group.create_virtual_dataset("leak", layout)
            return "leak"

        path = hostile(tmp_path, build)
        with h5py.File(path, "r") as file:
            assert file["weights/leak"][()].tobytes() == SECRET
        refused(path, "/weights/leak", "virtual dataset")


class TestDeclaredSizes:
    def test_a_huge_declared_shape_is_refused_before_allocating(self, tmp_path: Path) -> None:
        """2**40 float64 declared, chunked, nothing written: 8 TiB asked of a file of a few KB.
        Refused from the header; the memory cap turns a loader that believed it into a failure
        rather than an exhausted machine."""
        def build(group: h5py.Group) -> str:
            group.create_dataset("huge", shape=(2 ** 40,), dtype="f8", chunks=(1024,))
            return "huge"

        path = hostile(tmp_path, build)
        assert path.stat().st_size < 1 << 16
        with memory_cap():
            refused(path, "/weights/huge", "stores only 0 of its")

    def test_unwritten_contiguous_data_is_refused(self, tmp_path: Path) -> None:
        """A contiguous dataset never written (only its fill value): 64 MiB of nothing."""
        def build(group: h5py.Group) -> str:
            group.create_dataset("fill", shape=(1 << 23,), dtype="f8")
            return "fill"

        refused(hostile(tmp_path, build), "/weights/fill", r"stores 0 bytes")

    def test_partly_written_chunks_are_refused(self, tmp_path: Path) -> None:
        """A compressed dataset with only one of its chunks stored is refused."""
        def build(group: h5py.Group) -> str:
            dataset = group.create_dataset("part", shape=(1 << 20,), dtype="f8",
                                           chunks=(1 << 14,), compression="gzip")
            dataset[:10] = 1.0
            return "part"

        refused(hostile(tmp_path, build), "/weights/part", "stores only 1 of its 64 chunks")

    def test_compression_within_the_bound_loads(self, tmp_path: Path) -> None:
        """Legitimate compression shrinks data: 8 MB of zeros stored in about 8 KB (gzip at
        ~1000:1, near deflate's ceiling) still loads."""
        path = tmp_path / "zeros.h5"
        write_checkpoint(path, {"w": np.ones(3)})
        with h5py.File(path, "a") as file:
            group = file["weights"]
            group.create_dataset("zeros", data=np.zeros(1 << 20), chunks=(1 << 17,),
                                 compression="gzip", compression_opts=9)
            group.attrs["names"] = '["w", "zeros"]'
            stored = group["zeros"].id.get_storage_size()
        assert (1 << 23) / stored > 900  # near deflate's ceiling, under MAX_EXPANSION
        assert MAX_EXPANSION > 1032
        checkpoint = load_checkpoint(path)
        assert checkpoint.weights["zeros"].shape == (1 << 20,)
        assert not checkpoint.weights["zeros"].any()

    def test_chunks_larger_than_the_dataset_are_refused(self, tmp_path: Path) -> None:
        """A one-element dataset with 64 MiB chunks: reading it would allocate the chunk."""
        def build(group: h5py.Group) -> str:
            dataset = group.create_dataset("big_chunk", shape=(1,), maxshape=(None,),
                                           dtype="f8", chunks=(1 << 23,))
            dataset[0] = 1.0
            return "big_chunk"

        refused(hostile(tmp_path, build), "/weights/big_chunk", "larger than the dataset")


class TestFilters:
    def test_a_filter_hdf5_would_load_as_a_plugin_is_refused(self, tmp_path: Path) -> None:
        """A dataset whose pipeline names filter 32004 (LZ4, not built into HDF5): HDF5 would
        search its plugin path for a library to load; the loader refuses it unread."""
        def build(group: h5py.Group) -> str:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_chunk((4,))
            dcpl.set_filter(32004, h5py.h5z.FLAG_OPTIONAL, ())
            space = h5py.h5s.create_simple((4,))
            h5py.Dataset(h5py.h5d.create(group.id, b"plug", h5py.h5t.NATIVE_DOUBLE, space,
                                         dcpl=dcpl))[...] = np.ones(4)
            return "plug"

        refused(hostile(tmp_path, build), "/weights/plug", "filter 32004")

    @pytest.mark.parametrize("pipeline", [
        (h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_DEFLATE),
        (h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE),
        (h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_SHUFFLE),
        (h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SCALEOFFSET),
    ], ids=["deflate twice", "deflate, shuffle, deflate", "shuffle twice",
            "deflate and scale-offset"])
    def test_a_pipeline_that_expands_twice_is_refused_before_decoding(self, tmp_path: Path,
                                                                      pipeline) -> None:
        """HDF5 decodes a chunk through every filter before it compares the result with the
        chunk's size: deflate(deflate(1 GiB of zeros)) is 1.8 KB in a 12 KB file and was
        decoded in full (a gigabyte, in the child and again in this process). Each expanding
        filter alone stays within MAX_EXPANSION; two multiply, so two are refused unread."""
        import zlib

        def build(group: h5py.Group) -> str:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_chunk((4,))
            for code in pipeline:
                options = (9,) if code == h5py.h5z.FILTER_DEFLATE else \
                    (0, 0) if code == h5py.h5z.FILTER_SCALEOFFSET else ()
                dcpl.set_filter(code, h5py.h5z.FLAG_OPTIONAL, options)
            space = h5py.h5s.create_simple((4,))
            dataset = h5py.h5d.create(group.id, b"bomb", h5py.h5t.NATIVE_FLOAT, space, dcpl)
            inner = zlib.compress(bytes(1 << 20), 9)  # a megabyte inside, for the test's time
            dataset.write_direct_chunk((0,), zlib.compress(inner, 9), 0)
            return "bomb"

        refused(hostile(tmp_path, build), "/weights/bomb", "more than one that expands")


class TestNotNumbers:
    @pytest.mark.parametrize(("kind", "make"), [
        ("vlen str", lambda g: g.create_dataset("x", data=["a", "b"],
                                                dtype=h5py.string_dtype())),
        ("vlen int", lambda g: g.create_dataset("x", shape=(1,),
                                                dtype=h5py.vlen_dtype(np.int32))),
        ("compound", lambda g: g.create_dataset(
            "x", data=np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]))),
        ("object reference", lambda g: g.create_dataset("x", data=[g["w"].ref],
                                                        dtype=h5py.ref_dtype)),
        ("region reference", lambda g: g.create_dataset("x", data=[g["w"].regionref[0:1]],
                                                        dtype=h5py.regionref_dtype)),
        ("opaque", lambda g: g.create_dataset("x", data=np.void(b"abcd"))),
        ("array", lambda g: g.create_dataset("x", shape=(2,), dtype=np.dtype(("f4", (3,))))),
        ("empty dataspace", lambda g: g.create_dataset("x", data=h5py.Empty("f4"))),
    ])
    def test_non_numeric_datasets_are_refused(self, tmp_path: Path, kind: str,
                                              make: Callable[[h5py.Group], Any]) -> None:
        """Only bool, int, uint, float and complex arrays come back as weights."""
        def build(group: h5py.Group) -> str:
            make(group)
            return "x"

        error = refused(hostile(tmp_path, build), "/weights/x")
        assert "numeric" in str(error) or "no shape" in str(error)

    def test_numeric_kinds_load(self, tmp_path: Path) -> None:
        """bool, int, uint, float (half to double) and complex round-trip."""
        weights = {"b": np.array([True, False]), "i": np.arange(3, dtype=np.int16),
                   "u": np.arange(3, dtype=np.uint64), "h": np.ones(2, dtype=np.float16),
                   "c": np.array([1 + 2j], dtype=np.complex128)}
        write_checkpoint(tmp_path / "ok.h5", weights)
        loaded = load_checkpoint(tmp_path / "ok.h5").weights
        for name, array in weights.items():
            assert loaded[name].dtype == array.dtype
            np.testing.assert_array_equal(loaded[name], array)


class TestStructure:
    def test_a_second_link_to_one_dataset_is_refused(self, tmp_path: Path) -> None:
        """Two names for one dataset (a hard link) is not a checkpoint this module writes."""
        def build(group: h5py.Group) -> str:
            group["again"] = group["w"]
            return "again"

        refused(hostile(tmp_path, build), None, "second link")

    def test_a_cycle_is_refused(self, tmp_path: Path) -> None:
        """A group hard-linked into itself ends the walk with an error, not a recursion."""
        def build(group: h5py.Group) -> None:
            group["loop"] = group

        refused(hostile(tmp_path, build), "/weights/loop", "second link")

    def test_unlisted_dataset_is_refused(self, tmp_path: Path) -> None:
        """A dataset the names attribute does not list is refused."""
        def build(group: h5py.Group) -> None:
            group["extra"] = np.ones(2)

        refused(hostile(tmp_path, build), "/weights/@names", r"not listed: \['extra'\]")

    @pytest.mark.parametrize(("names", "match"), [
        ('["w", "gone"]', "listed but absent"), ('["w", "w"]', "once"), ("[1]", "once"),
        ('{"w": 1}', "JSON dict"), ("not json", "not JSON")])
    def test_bad_names_attribute(self, tmp_path: Path, names: str, match: str) -> None:
        """names must be a JSON list of str, each dataset present listed once."""
        path = hostile(tmp_path, lambda g: None)
        with h5py.File(path, "a") as file:
            file["weights"].attrs["names"] = names
        refused(path, "/weights/@names", match)

    @pytest.mark.parametrize(("attr", "value", "match"), [
        ("metadata", "[1, 2]", "JSON list; expected a JSON object"),
        ("metadata", '"text"', "JSON str"),
        ("metadata", np.arange(3), "shape"),
        ("model_config", "[]", "JSON list"),
        ("model_config", "{", "not JSON"),
        ("format", np.array([b"a", b"b"]), "shape"),
        ("format", 7, "expected a string"),
        ("format_version", "one", "expected an integer"),
    ])
    def test_bad_root_attributes(self, tmp_path: Path, attr: str, value: Any,
                                 match: str) -> None:
        """metadata and model_config are JSON objects; format and format_version are a string
        and an integer: anything else is a CheckpointError, not an AttributeError later."""
        path = hostile(tmp_path, lambda g: None)
        with h5py.File(path, "a") as file:
            file.attrs[attr] = value
        refused(path, f"/@{attr}", match)

    def test_a_huge_fixed_length_attribute_is_refused(self, tmp_path: Path) -> None:
        """A fixed-length string attribute of 2 MiB (over the 1 MiB bound) is refused unread."""
        path = tmp_path / "big-attr.h5"
        with h5py.File(path, "w", libver="latest") as file:  # dense storage for big attributes
            file.attrs["format"] = "eventbus-checkpoint"
            file.attrs["format_version"] = 1
            file.create_group("weights").attrs["names"] = "[]"
            kind = h5py.h5t.C_S1.copy()
            kind.set_size(1 << 21)
            h5py.h5a.create(file.id, b"metadata", kind, h5py.h5s.create(h5py.h5s.SCALAR))
        refused(path, "/@metadata", "declares 2097152 bytes")

    def test_deeply_nested_metadata(self, tmp_path: Path) -> None:
        """Metadata nested past what the JSON reader takes is refused, not a RecursionError."""
        path = hostile(tmp_path, lambda g: None)
        with h5py.File(path, "a") as file:
            file.attrs["metadata"] = '{"a":' * 2000 + "1" + "}" * 2000
        refused(path, "/@metadata")

    def test_weights_must_be_a_group(self, tmp_path: Path) -> None:
        """/weights a dataset instead of a group is refused."""
        path = hostile(tmp_path, lambda g: None)
        with h5py.File(path, "a") as file:
            del file["weights"]
            file["weights"] = np.ones(3)
        refused(path, "/weights", "expected a group")


class TestNotAFile:
    def test_fifo_does_not_hang(self, tmp_path: Path) -> None:
        """A FIFO at the path is refused at once; opening it for reading would wait forever for
        a writer (inside h5py, holding the interpreter: so the load runs in a child process,
        killed if it is not done in time)."""
        fifo = tmp_path / "ckpt.h5"
        os.mkfifo(fifo)
        code = ("import sys\n"
                "from eventbus import CheckpointError\n"
                "from sinks.hdf5 import load_checkpoint\n"
                "try:\n"
                "    load_checkpoint(sys.argv[1])\n"
                "except CheckpointError as exc:\n"
                "    print('refused:', exc.path, '|', exc)\n")
        try:
            done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True,
                                  text=True, timeout=20, env={**os.environ,
                                                              "PYTHONPATH": ROOT})
        except subprocess.TimeoutExpired:
            pytest.fail("load_checkpoint hung on a FIFO")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"refused: {fifo} |") and "FIFO" in done.stdout

    def test_directory_is_refused(self, tmp_path: Path) -> None:
        """A directory at the path is a CheckpointError naming it."""
        refused(tmp_path, None, "is a directory")

    def test_symlink_to_a_checkpoint_is_read(self, tmp_path: Path) -> None:
        """A symbolic link at the path is the user's choice of file: it is followed, and the
        file it names is checked like any other."""
        write_checkpoint(tmp_path / "real.h5", {"w": np.ones(2)})
        (tmp_path / "link.h5").symlink_to(tmp_path / "real.h5")
        np.testing.assert_array_equal(load_checkpoint(tmp_path / "link.h5").weights["w"],
                                      np.ones(2))


class TestTheModelsBound:
    """load_checkpoint(expect=expected_of(model)): a checkpoint read for a model is checked
    against the model's weights (names, shapes, dtype kinds) and what a checkpoint of it can
    hold, from what the file declares, before any value is read, in the checking child and
    in this process. Without it, a few hundred KB of gzip zeros declaring hundreds of MiB
    were decoded twice before the model could refuse the array."""

    @pytest.fixture(autouse=True)
    def no_value_is_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Reading a dataset's values fails the load (in the forked child too), so a refusal
        that says why the file does not fit was made before anything was read."""
        import sinks.hdf5

        def read(*_: Any) -> Any:
            raise RuntimeError("a value was read")

        monkeypatch.setattr(sinks.hdf5, "_read", read)

    @staticmethod
    def gzip_zeros(group: h5py.Group, name: str, n: int) -> None:
        dataset = group.create_dataset(name, shape=(n,), dtype="f8", chunks=(1 << 20,),
                                       compression="gzip", compression_opts=9)
        for start in range(0, n, 1 << 20):
            dataset[start:start + (1 << 20)] = 0.0

    def expect(self, **weights: Any) -> Any:
        from eventbus import NumpyModel
        from sinks.hdf5 import expected_of

        return expected_of(NumpyModel(weights))

    def test_a_weight_of_another_shape_is_refused_unread(self, tmp_path: Path) -> None:
        path = tmp_path / "c.h5"
        write_checkpoint(path, {"w": np.ones(2)})
        with h5py.File(path, "a") as file:
            del file["weights/w"]
            self.gzip_zeros(file["weights"], "w", 4 << 20)  # 32 MiB declared
        assert path.stat().st_size < 1 << 20
        with pytest.raises(CheckpointError, match=r"/weights/w: does not fit the model: has "
                           r"shape \(4194304,\), the model's is \(2,\)") as info:
            load_checkpoint(path, expect=self.expect(w=np.zeros(2)))
        assert info.value.misfit and info.value.dataset == "/weights/w"

    @pytest.mark.parametrize(("weights", "match"), [
        ({"v": np.zeros(2)}, r"/weights/w: does not fit the model: is no weight of the model"),
        ({"w": np.zeros(2), "b": np.zeros(1)},
         r"/weights/b: does not fit the model: is missing"),
        ({"w": np.zeros(2, dtype=np.int64)},
         r"/weights/w: does not fit the model: has dtype float64, the model's is of kind 'i'"),
    ])
    def test_names_and_dtype_kinds_are_the_models(self, tmp_path: Path, weights: dict[str, Any],
                                                  match: str) -> None:
        path = tmp_path / "c.h5"
        write_checkpoint(path, {"w": np.ones(2)})
        with pytest.raises(CheckpointError, match=match) as info:
            load_checkpoint(path, expect=self.expect(**weights))
        assert info.value.misfit

    def test_an_optimizer_state_beyond_what_the_model_can_hold_is_refused_unread(
            self, tmp_path: Path) -> None:
        """The weights fit; the optimizer's state declares 80 MiB, more than a checkpoint of
        a model of 16 bytes of weights can hold (8 times them and 64 MiB)."""
        path = tmp_path / "c.h5"
        write_checkpoint(path, {"w": np.ones(2)}, optimizer={"0000": np.zeros(1)})
        with h5py.File(path, "a") as file:
            del file["optimizer/0000"]
            self.gzip_zeros(file["optimizer"], "0000", 10 << 20)
        with pytest.raises(CheckpointError, match=r"declare 83,886,096 bytes, more than a "
                           r"checkpoint of this model can hold \(67,108,992\)") as info:
            load_checkpoint(path, expect=self.expect(w=np.zeros(2)))
        assert info.value.misfit

    def test_a_checkpoint_that_fits_loads(self, tmp_path: Path, monkeypatch) -> None:
        """As before, once the model's bound is met: also through the names an adapter reads
        weights by (Keras's variable paths, an earlier eventbus's keys), or by position."""
        from sinks.hdf5 import Expected

        monkeypatch.undo()  # values are read here
        path = tmp_path / "c.h5"
        write_checkpoint(path, {"dense/kernel": np.ones((2, 3)), "dense/bias": np.ones(3)})
        keys = (("0.dense/kernel", (2, 3), "f"), ("0.dense/bias", (3,), "f"))
        for aliases in ((("dense/kernel", "0.dense/kernel"), ("dense/bias", "0.dense/bias")),
                        (("seq/dense/kernel", "0.dense/kernel"),)):
            loaded = load_checkpoint(path, expect=Expected(keys, 1 << 20, aliases))
            assert loaded.weights["dense/bias"].tolist() == [1.0] * 3
        with pytest.raises(CheckpointError, match="the model's is \\(3, 2\\)"):
            load_checkpoint(path, expect=Expected(
                (("0.dense/kernel", (3, 2), "f"), ("0.dense/bias", (3,), "f")), 1 << 20,
                (("x", "0.dense/kernel"),)))

    def test_a_frameworks_file_declaring_more_than_the_model_can_hold_is_refused(
            self, tmp_path: Path) -> None:
        """The walk of a framework's HDF5 file (Keras's .weights.h5) in the child adds up what
        its datasets declare against what a checkpoint of the model can hold."""
        from sinks.hdf5 import _walk_isolated

        path = tmp_path / "ck.weights.h5"
        with h5py.File(path, "w") as file:
            self.gzip_zeros(file.create_group("layers/dense/vars"), "0", 4 << 20)
        with open(path, "rb") as handle:
            assert _walk_isolated(handle, str(path), most=32 << 20) is None
            with pytest.raises(CheckpointError, match=r"/layers/dense/vars/0: brings what the "
                               r"datasets declare to 33,554,432 bytes") as info:
                _walk_isolated(handle, str(path), most=(32 << 20) - 1)
        assert info.value.misfit
