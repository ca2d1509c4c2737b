"""What a slow HTTP destination costs the training loop.

    python benchmarks/bench_http.py [--epochs 10] [--batches 200] [--work-ms 1] [--delay-ms 100]

A server on 127.0.0.1, in its own process, takes ``--delay-ms`` per request. The same loop (a
fixed amount of NumPy work per batch, calibrated to about ``--work-ms``) runs with no HTTP at
all and with a RemoteMonitor posting every epoch plus an HttpRecordSink streaming every record
to that server, ``--repeat`` times each, alternating; the best time of each is kept. The
loop's time is measured up to ``train_end`` (excluded); the time train_end then waits for
delivery is reported apart. Exits 1 if the loop is more than 5% slower with HTTP than without.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core for the loop, as a fair baseline

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventbus import Bus  # noqa: E402
from plugins import RemoteMonitor  # noqa: E402
from sinks.http import HttpRecordSink  # noqa: E402


class _Handler(BaseHTTPRequestHandler):
    delay = 0.1
    protocol_version = "HTTP/1.1"  # keep-alive, as production servers do

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.delay)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _serve(delay: float, ports: Any) -> None:
    _Handler.delay = delay
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ports.put(server.server_address[1])
    server.serve_forever()


def serve(delay: float) -> tuple[multiprocessing.Process, int]:
    """The slow server, in its own process as a real one would be (its CPU is not the loop's)."""
    ports: Any = multiprocessing.Queue()
    process = multiprocessing.Process(target=_serve, args=(delay, ports), daemon=True)
    process.start()
    return process, ports.get(timeout=30)


def step(a: np.ndarray, n: int) -> np.ndarray:
    """The model's work for one batch: a fixed amount of NumPy arithmetic."""
    for _ in range(n):
        a = np.tanh(a @ a.T / 64.0)
    return a


def calibrate(seconds: float) -> int:
    """How many iterations of step() take about ``seconds`` on this machine."""
    a = np.random.default_rng(0).standard_normal((64, 64))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.5:
        a = step(a, 10)
        n += 10
    return max(1, round(n * seconds / (time.perf_counter() - start)))


def loop(bus: Bus, epochs: int, batches: int, work: int) -> float:
    a = np.random.default_rng(0).standard_normal((64, 64))
    start = time.perf_counter()
    bus.train_begin({"epochs": epochs, "steps": batches})
    for epoch in range(epochs):
        bus.epoch_begin(epoch)
        for batch in range(batches):
            bus.batch_begin(batch)
            a = step(a, work)  # a fixed amount: contention shows up as time
            bus.batch_end(batch, {"loss": float(a[0, 0]), "size": 32.0})
        bus.epoch_end(epoch, {"loss": float(a[0, 1]), "val_loss": float(a[1, 1])})
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--work-ms", type=float, default=1.0)
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    work = calibrate(args.work_ms / 1000)
    server, port = serve(args.delay_ms / 1000)
    root = f"http://127.0.0.1:{port}"
    try:
        times = {}
        for name in ("none", "http") * args.repeat:
            if name.startswith("none"):
                bus = Bus([])
                sink = None
            else:
                sink = HttpRecordSink(root + "/records", flush_timeout=30.0)
                bus = Bus([RemoteMonitor(root, flush_timeout=30.0)], log=[sink])
            elapsed = loop(bus, args.epochs, args.batches, work)
            times[name] = min(times.get(name, elapsed), elapsed)
            start = time.perf_counter()
            bus.train_end()
            bus.close()
            if sink is not None:
                print(f"http: {sink.stats.sent} records in {sink.stats.requests} requests; "
                      f"train_end + close waited {time.perf_counter() - start:.3f}s for "
                      f"delivery; undelivered {sink.stats.undelivered}")
    finally:
        server.terminate()
        server.join()
    # Best of the repetitions each: the machine's own noise is not the sink's cost.
    base = times["none"]
    overhead = times["http"] / base - 1
    steps = args.epochs * args.batches
    print(f"loop without HTTP: {base:.3f}s ({steps / base:.0f} batches/s)")
    print(f"loop with a {args.delay_ms:.0f} ms server: {times['http']:.3f}s "
          f"({steps / times['http']:.0f} batches/s)")
    print(f"throughput cost: {overhead * 100:.2f}% (limit 5%)")
    return 0 if overhead < 0.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
