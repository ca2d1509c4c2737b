"""Core speed: the per-batch cost of the bus, against baselines measured in this process.

Run: ``python benchmarks/bench_core.py`` (``--quick`` for a smaller run). Prints a table of
microseconds per call and ratios; nothing here is a pass/fail test. Baselines:

- floor: hand-written dispatch with the same subscribers: build the record dict, call pre-bound
  functions, orjson, write through a 1 MiB buffer. What any bus must at least do.
- naive: a validated pydantic model per event, a pluggy hook call, model_dump then orjson.
- keras: Keras 3's CallbackList with the same number of callbacks and no recording (when keras
  is installed).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pluggy

from eventbus import Bus, Plugin, hookimpl, hookspecs
from eventbus.jsonl import JsonlWriter, iter_jsonl_dicts
from eventbus.records import BatchEnd

LOGS = {"loss": 0.6931, "acc": 0.5}


class Noop(Plugin):
    """A subscriber that does nothing: what the bus itself costs per subscriber."""

    @hookimpl
    def on_batch_end(self, event):
        pass


class Counter(Plugin):
    """A subscriber doing what a cheap real one does: read a metric."""

    def __init__(self):
        self.total = 0.0

    @hookimpl
    def on_batch_end(self, event):
        self.total += event.logs["loss"]


class _Event:
    """The cheapest object with attributes: what a hand-written bus would hand subscribers."""


def own_hook(plugin: object, hook: str):
    """``plugin``'s own implementation of ``hook``, bound: what a hand-written bus calls. Found
    on its class by pluggy's marker (a plugin is also a Keras callback, whose ``on_batch_end``
    is Keras's entry), without ``dir()`` on the instance, which would slow its reads; a
    plugin without one gets a no-op."""
    for klass in type(plugin).__mro__:
        for name in vars(klass):
            fn = getattr(klass, name, None)
            opts = getattr(fn, "eventbus_impl", None)
            if opts is not None and (opts.get("specname") or name) == hook:
                return fn.__get__(plugin, type(plugin))
    return lambda event: None


def floor(subscribers: list, path: str, hook: str = "on_batch_end"):
    """Hand-written dispatch to the same subscribers: record dict, a bare attribute object,
    pre-bound methods, orjson, a 1 MiB buffered file. No checks, no recording of decisions."""
    calls = [own_hook(plugin, hook) for plugin in subscribers]  # the bound hooks, as the bus
    out = open(path, "wb", buffering=1 << 20)  # noqa: SIM115
    dumps = orjson.dumps
    now = time.time
    new = object.__new__
    setattr_ = object.__setattr__

    def run(n: int) -> None:
        for i in range(n):
            record = {"v": 1, "run_id": "r", "seq": i, "kind": "batch_end", "time": now(),
                      "epoch": 0, "batch": i, "step": i, "logs": dict(LOGS)}
            event = new(_Event)
            setattr_(event, "__dict__", record)
            for call in calls:
                call(event)
            out.write(dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    return run, out.close


def naive(n_subs: int, path: str):
    pm = pluggy.PluginManager("eventbus")
    pm.add_hookspecs(hookspecs)
    for _ in range(n_subs):
        pm.register(Counter())
    hook = pm.hook.on_batch_end
    out = open(path, "wb", buffering=1 << 20)  # noqa: SIM115

    def run(n: int) -> None:
        for i in range(n):
            event = BatchEnd(run_id="r", seq=i, time=time.time(), epoch=0, batch=i, step=i,
                             logs=LOGS)
            hook(event=event)
            out.write(orjson.dumps(event.model_dump(), option=orjson.OPT_APPEND_NEWLINE))

    return run, out.close


def ours(plugins: list, path: str | None):
    bus = Bus(plugins, log=path, learning_rate=0.01)
    bus.train_begin({"epochs": 1})
    bus.epoch_begin(0)

    def run(n: int) -> None:
        batch_end = bus.batch_end
        for i in range(n):
            batch_end(i, LOGS)

    return run, bus.close


def keras_callbacklist(n_subs: int, *, noop: bool = False):
    os.environ.setdefault("KERAS_BACKEND", "torch")  # the numpy backend needs jax
    try:
        import keras
    except Exception:  # not installed, or no usable backend
        return None

    class KerasCounter(keras.callbacks.Callback):
        total = 0.0

        def on_train_batch_end(self, batch, logs=None):
            self.total += logs["loss"]

    class KerasNoop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    kind = KerasNoop if noop else KerasCounter
    cbs = keras.callbacks.CallbackList([kind() for _ in range(n_subs)],
                                       add_history=False, add_progbar=False)

    def run(n: int) -> None:
        end = cbs.on_train_batch_end
        for i in range(n):
            end(i, LOGS)

    return run


def keras_builtins(tmp: Path):
    """Keras's own callbacks with the same roles, in a CallbackList (no recording).

    Keras's TensorBoard needs TensorFlow, which is not a dependency here, so it is left out
    (one callback fewer for Keras). Returns None when keras cannot be used.
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception:  # not installed, or no usable backend
        return None
    cb = keras.callbacks
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    callbacks = [
        cb.EarlyStopping(monitor="val_loss"), cb.ReduceLROnPlateau(monitor="val_loss"),
        cb.ModelCheckpoint(str(tmp / "k.weights.h5"), save_weights_only=True),
        cb.CSVLogger(str(tmp / "k.csv")), cb.History(), cb.TerminateOnNaN(),
        cb.LambdaCallback(on_batch_end=lambda batch, logs: None),
        cb.LearningRateScheduler(lambda epoch, lr: lr), cb.RemoteMonitor(root="http://127.0.0.1:9"),
        cb.BackupAndRestore(str(tmp / "k-backup")), cb.ProgbarLogger(),
    ]
    cbs = cb.CallbackList(callbacks, add_history=False, add_progbar=False, model=model,
                          verbose=0, epochs=1, steps=10**9)
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)

    def run(n: int) -> None:
        end = cbs.on_train_batch_end
        for i in range(n):
            end(i, LOGS)

    return run, len(callbacks)


def builtin_plugins(tmp: Path) -> list:
    """One of every built-in plugin that exists, configured to stay quiet."""
    import plugins as builtins

    made = []
    factories = {
        "BaseLogger": lambda c: c(), "History": lambda c: c(),
        "TerminateOnNaN": lambda c: c(), "EarlyStopping": lambda c: c(monitor="val_loss"),
        "ReduceLROnPlateau": lambda c: c(monitor="val_loss"),
        "LearningRateScheduler": lambda c: c(lambda epoch, lr: lr),
        "ModelCheckpoint": lambda c: c(str(tmp / "ckpt.h5"), save_freq=10**9),
        "CSVLogger": lambda c: c(str(tmp / "log.csv")),
        "TensorBoard": lambda c: c(log_dir=str(tmp / "tb"), update_freq=100),
        "ProgbarLogger": lambda c: c(verbose=0),
        "LambdaCallback": lambda c: c(on_batch_end=lambda batch, logs: None),
        "RemoteMonitor": lambda c: c(root="http://127.0.0.1:9"),
        "BackupAndRestore": lambda c: c(str(tmp / "backup")),
    }
    missing = []
    for name, make in factories.items():
        try:
            made.append(make(getattr(builtins, name)))
        except (ImportError, AttributeError):
            missing.append(name)
    return made, missing


def subscribers(bus_plugins: list, kind: str = "batch_end") -> int:
    """How many of the plugins get each record of ``kind`` (by a hook or as a sink)."""
    bus = Bus(bus_plugins)
    n = len(bus.subscribers(kind))
    bus.close()
    return n


def interleaved(runs: dict[str, object], chunk: int, rounds: int) -> dict[str, float]:
    """Microseconds per call of each run: the best chunk over rounds that alternate the runs.

    This machine's speed drifts by tens of percent from minute to minute; timing every
    configuration in each round makes the ratios compare like with like.
    """
    best = dict.fromkeys(runs, float("inf"))
    for run in runs.values():
        run(1000)  # warm up
    for _ in range(rounds):
        for label, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            run(chunk)
            best[label] = min(best[label], (time.perf_counter() - start) / chunk * 1e6)
    return best


def log_throughput(records: list[dict], tmp: Path, rounds: int = 3) -> dict[str, float]:
    """Records per second of each way of writing and reading a log of ``records``."""
    from eventbus import read_log
    from eventbus.parquet import ParquetWriter

    header = {"v": 1, "run_id": "r", "seq": 0, "kind": "header", "time": 0.0, "created": "",
              "library": "", "plugins": [], "meta": {}}
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    path = tmp / "big.jsonl"

    def floor_write() -> int:  # the same bytes with nothing but orjson and a buffered file
        with open(tmp / "floor-big.jsonl", "wb", buffering=1 << 20) as out:
            for record in records:
                out.write(dumps(record, option=option))
        return len(records)

    def jsonl_write() -> int:
        with JsonlWriter(path) as writer:
            writer.write(header)
            for record in records:
                writer.write(record)
        return len(records)

    def jsonl_bus_path() -> int:
        # The bus's path for batch records whose metrics it has checked: one encoding, the
        # line buffer's own extend, a size check every 64 records.
        with JsonlWriter(tmp / "big-finite.jsonl") as writer:
            buffer, limit = writer.line_buffer, writer.buffer_bytes
            append = buffer.extend
            for seq, record in enumerate(records):
                append(dumps(record, option=option))
                if not seq & 63 and len(buffer) >= limit:
                    writer.flush()
        return len(records)

    def floor_read() -> int:
        with open(tmp / "floor-big.jsonl", "rb", buffering=1 << 20) as source:
            loads = orjson.loads
            return sum(1 for line in source if loads(line))

    def parquet(method: str):
        def run() -> int:
            with ParquetWriter(tmp / f"big-{method}.parquet") as writer:
                write = getattr(writer, method)
                for record in records:
                    write(record)
            return len(records)
        return run

    runs = {
        "floor write": floor_write, "jsonl write": jsonl_write, "jsonl bus path": jsonl_bus_path,
        "floor read": floor_read,
        "jsonl read": lambda: sum(1 for _ in iter_jsonl_dicts(path)),
        "typed read": lambda: sum(1 for _ in read_log(path)),
        "parquet write": parquet("write"),
    }
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for label, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            count = run()
            best[label] = max(best[label], count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    chunk, rounds = (4_000, 8) if args.quick else (20_000, 20)
    big = 200_000 if args.quick else 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="eventbus-bench-"))
    runs: dict[str, object] = {}
    closers = []

    def add(label: str, setup) -> str:
        run, close = setup
        runs[label] = run
        closers.append(close)
        return label

    subs = 12
    floor12 = add(f"floor, {subs} subscribers, JSONL",
              floor([Counter() for _ in range(subs)], str(tmp / "floor.jsonl")))
    naive12 = add(f"naive stack, {subs} subscribers, JSONL", naive(subs, str(tmp / "naive.jsonl")))
    bus12 = add(f"bus, {subs} subscribers, JSONL",
              ours([Counter() for _ in range(subs)], str(tmp / "bus12.jsonl")))
    keras12 = None
    keras_run = keras_callbacklist(subs)
    if keras_run is not None:
        keras12 = f"keras CallbackList, {subs} callbacks, no recording"
        runs[keras12] = keras_run
    noop_bus = add(f"bus, {subs} no-op subscribers, JSONL",
                   ours([Noop() for _ in range(subs)], str(tmp / "noop.jsonl")))
    noop_keras = None
    keras_noop = keras_callbacklist(subs, noop=True)
    if keras_noop is not None:
        noop_keras = f"keras CallbackList, {subs} no-op callbacks, no recording"
        runs[noop_keras] = keras_noop
    made, missing = builtin_plugins(tmp)
    n_all = subscribers(made) if made else 0
    bus_all = add(f"bus, every built-in plugin ({len(made)}; {n_all} on batch_end), JSONL",
             ours(made, str(tmp / "builtins.jsonl")))
    floor_all = add(f"floor, the same {n_all} plugins called directly, JSONL",
             floor(builtin_plugins(tmp / "floor-builtins")[0], str(tmp / "floorb.jsonl")))
    keras_all = bus_same = None
    keras_b = keras_builtins(tmp)
    if keras_b is not None:
        run_kb, n_kb = keras_b
        keras_all = f"keras CallbackList, Keras's {n_kb} built-in callbacks, no recording"
        runs[keras_all] = run_kb
        # The same callbacks on the bus: Keras 3 has no BaseLogger, and its TensorBoard needs
        # TensorFlow, so both are left out here too.
        same_set = [p for p in builtin_plugins(tmp / "same")[0]
                    if type(p).__name__ not in ("BaseLogger", "TensorBoard")]
        bus_same = add(f"bus, the same {len(same_set)} callbacks as Keras's, JSONL",
                       ours(same_set, str(tmp / "same.jsonl")))
    idle_label = add("bus, batch_begin nobody subscribes to, no log", ours([], None))
    best = interleaved(runs, chunk, rounds)
    for close in closers:
        close()
    rows = [(label, us, "") for label, us in best.items()]
    f12, n12, o12 = best[floor12], best[naive12], best[bus12]
    ob, fb, idle = best[bus_all], best[floor_all], best[idle_label]
    k12 = best[keras12] if keras12 else None
    kb = best[keras_all] if keras_all else None
    ok = best[bus_same] if bus_same else None
    n = chunk

    print(f"\nper-call cost (best of {rounds} interleaved rounds of {n:,} calls each)\n")
    width = max(len(r[0]) for r in rows)
    for label, us, _ in rows:
        print(f"  {label:<{width}}  {us:7.3f} µs")
    print("\nratios")
    print(f"  bus / floor, {subs} subscribers:             {o12 / f12:5.2f}x  "
          "(target <= 2.0x, goal 1.3x)")
    print(f"  naive / bus, {subs} subscribers:             {n12 / o12:5.2f}x  (target >= 3x)")
    print(f"  bus with every built-in / floor ({n_all} subs): {ob / fb:5.2f}x")
    if k12 is not None:
        print(f"  keras CallbackList / bus, {subs} subscribers: {k12 / o12:5.2f}x  (target > 1x)")
        if noop_keras is not None:
            print(f"  keras / bus, {subs} no-op subscribers:         "
                  f"{best[noop_keras] / best[noop_bus]:5.2f}x  (target > 1x)")
        if kb is not None and ok is not None:
            print(f"  keras built-ins / bus, same callbacks:       {kb / ok:5.2f}x  "
                  "(target > 1x)")
    else:
        print("  keras is not installed: the CallbackList comparison was not run")
    print(f"  unsubscribed batch event, no log:            {idle:5.3f} µs (target <= 0.2 µs)")
    if missing:
        print(f"  built-in plugins not available yet: {', '.join(missing)}")

    # Log throughput: each measurement in each of three rounds, the best kept, as above.
    # As the bus makes them: fields in records.BATCH_FIELDS order.
    # seq from 1: the header is 0, and a log's seqs strictly increase (the reader checks).
    records = [{"v": 1, "run_id": "r", "seq": i + 1, "kind": "batch_end", "time": 1.0 + i,
                "logs": {"loss": 1.0 / (i + 1), "acc": 0.5}, "epoch": 0, "batch": i, "step": i}
               for i in range(big)]
    throughput = log_throughput(records, tmp)
    floor_write, jsonl_write, finite_write = (throughput[k] for k in (
        "floor write", "jsonl write", "jsonl bus path"))
    floor_read, jsonl_read, typed_read = (throughput[k] for k in (
        "floor read", "jsonl read", "typed read"))
    parquet_write = throughput["parquet write"]
    print(f"\nlog throughput ({big:,} batch_end records; M records/s)\n")
    print(f"  floor: orjson.dumps into a buffered file     {floor_write / 1e6:5.2f}")
    print(f"  JSON Lines write (JsonlWriter)               {jsonl_write / 1e6:5.2f}  "
          f"({floor_write / jsonl_write:.2f}x the floor's time; target >= 1 M/s)")
    print(f"  JSON Lines write, the bus's path             {finite_write / 1e6:5.2f}  "
          f"({floor_write / finite_write:.2f}x the floor's time)")
    print(f"  floor: orjson.loads per line                 {floor_read / 1e6:5.2f}")
    print(f"  JSON Lines read, dicts (iter_jsonl_dicts)    {jsonl_read / 1e6:5.2f}  "
          f"({floor_read / jsonl_read:.2f}x the floor's time; target >= 1 M/s)")
    print(f"  JSON Lines read, typed records (read_log)    {typed_read / 1e6:5.2f}")
    print(f"  Parquet write (ParquetWriter, with close)    {parquet_write / 1e6:5.2f}  "
          "(target >= 1 M/s)")

    code = ("import sys, eventbus; print([m for m in ('pyarrow', 'tensorboardX', 'requests', "
            "'h5py') if m in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    print(f"\n`import eventbus` loads of pyarrow, tensorboardX, requests, h5py: {loaded}")


if __name__ == "__main__":
    main()
