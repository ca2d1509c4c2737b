"""sinks.http and RemoteMonitor against servers on 127.0.0.1 that never end their answer: an
endless body, one byte every 0.2 s (in the body, or in the status line), a huge Content-Length
followed by nothing, a redirect with an endless body. Only the status counts, each request has a
deadline of twice its timeout, and close() cuts the request in flight: the training thread never
waits on such a server, and the process never holds more than a few KiB of its answer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
import requests  # noqa: F401 - loaded before memory is traced: importing it is not growth

from eventbus import Bus, RunWarning, SinkFailureWarning
from eventbus.testing import RecordingWriter
from plugins import RemoteMonitor
from sinks.http import DeliveryError, HttpRecordSink, HttpSender

#: Python memory the sender may hold while a server streams at it: a request, an answer's
#: headers, requests' own objects. Reading the body of an endless answer would pass it in ms.
MEMORY_BOUND = 4 << 20
BLOCK = b"x" * (64 << 10)


class HostileServer:
    """A raw HTTP server on 127.0.0.1: reads each request, then lets ``answer(conn, server)``
    write what it likes. Counts connections and the bytes it managed to send, and sets
    ``cut_off`` when the client closed a connection while it was still sending."""

    def __init__(self, answer: Callable[[socket.socket, HostileServer], None]):
        self.answer = answer
        self.connections = 0
        self.sent = 0
        self.answered = threading.Event()
        self.heads: list[bytes] = []  # each request's head, as sent
        self.cut_off = threading.Event()
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                header, _, body = head.partition(b"\r\n\r\n")
                self.heads.append(header)
                length = next((int(line.split(b":")[1]) for line in header.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.answered.set()
                self.answer(conn, self)
            except OSError:  # the client closed the connection: what these tests wait for
                self.cut_off.set()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def endless(status: bytes = b"200 OK", extra: bytes = b"") -> Callable:
    """A status, no Content-Length, then a body that never ends (until the client leaves)."""
    def answer(conn: socket.socket, server: HostileServer) -> None:
        server.send(conn, b"HTTP/1.1 " + status + b"\r\n" + extra + b"\r\n")
        while not server.stop.is_set():
            server.send(conn, BLOCK)
    return answer


def drip(head: bytes, body: bytes = b"") -> Callable:
    """``head`` at once, then ``body`` (for ever if empty: "x") one byte every 0.2 s."""
    def answer(conn: socket.socket, server: HostileServer) -> None:
        server.send(conn, head)
        data = iter(body) if body else iter(lambda: ord("x"), None)
        for byte in data:
            if server.stop.wait(0.2):
                return
            server.send(conn, bytes([byte]))
    return answer


def huge_length(conn: socket.socket, server: HostileServer) -> None:
    """A petabyte announced, a few bytes sent, then silence on an open connection."""
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000\r\n\r\nabc")
    server.stop.wait(10.0)


@pytest.fixture
def hostile() -> Iterator[Callable[[Callable], HostileServer]]:
    """Make hostile servers (``hostile(endless())``); all stopped afterwards."""
    made: list[HostileServer] = []

    def make(answer: Callable) -> HostileServer:
        made.append(HostileServer(answer))
        return made[-1]

    yield make
    for server in made:
        server.close()


@contextlib.contextmanager
def memory_peak() -> Iterator[list[int]]:
    """The peak of Python memory allocated inside the block, by every thread: ``[peak]``."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = [0]
    try:
        yield result
    finally:
        result[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def sender(url: str, **kwargs) -> tuple[HttpSender, list[tuple]]:
    failures: list[tuple] = []
    options = {"encode": lambda items: items[0], "retries": 0, "backoff": 0.01, **kwargs}
    return HttpSender(url, on_failure=lambda *a: failures.append(a), **options), failures


def wait_until(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


class TestSender:
    def test_an_endless_body_is_not_read(self, hostile):
        """A 200 whose body never ends is delivered when its status arrives; the connection is
        closed unread, and the memory held stays under a few MiB while the server streams."""
        server = hostile(endless())
        with memory_peak() as peak:
            http, failures = sender(server.url, timeout=1.0)
            start = time.monotonic()
            assert http.put(b"{}")
            assert http.flush(5.0)
            flushed = time.monotonic() - start
            assert server.cut_off.wait(2.0)
            time.sleep(0.5)  # a thread still downloading would grow by ~1 GB/s meanwhile
            stats = http.close(5.0)
        assert flushed < 1.0
        assert (stats.sent, stats.failed, stats.requests) == (1, 0, 1) and failures == []
        assert peak[0] < MEMORY_BOUND, f"{peak[0] >> 20} MiB"
        assert server.sent < 64 << 20  # what socket buffers take before the client closes

    def test_a_dripping_body_is_not_waited_for(self, hostile):
        """A 200 whose chunked body comes one byte every 0.2 s is delivered at its status."""
        server = hostile(drip(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                              b"1\r\nx\r\n" * 100))
        http, failures = sender(server.url, timeout=1.0)
        start = time.monotonic()
        http.put(b"{}")
        assert http.flush(5.0) and time.monotonic() - start < 1.0
        assert http.close(1.0).sent == 1 and failures == []
        assert server.cut_off.wait(2.0)

    def test_a_dripping_status_line_meets_the_deadline(self, hostile):
        """A status line sent one byte every 0.2 s never trips the 0.5 s per-read timeout, but
        the request is cut at its deadline (2 x timeout): a Timeout, retried, then failed."""
        server = hostile(drip(b"", b"HTTP/1.1 200 OK\r\n" * 10))
        http, failures = sender(server.url, timeout=0.5, retries=1)
        start = time.monotonic()
        http.put(b"{}")
        assert http.flush(5.0)
        took = time.monotonic() - start
        stats = http.close(1.0)
        assert 1.9 < took < 3.5, took  # two requests of 1 s each, then given up
        assert (stats.sent, stats.failed, stats.requests, stats.retries) == (0, 1, 2, 1)
        assert failures[0][0] == "Timeout" and "1 s request deadline" in failures[0][1]
        assert server.connections == 2

    def test_a_huge_content_length_is_not_read(self, hostile):
        """A 200 announcing a petabyte and then sending nothing is delivered at once; the
        connection is closed unread rather than waited on for the rest."""
        server = hostile(huge_length)
        http, failures = sender(server.url, timeout=5.0)
        start = time.monotonic()
        http.put(b"{}")
        assert http.flush(5.0) and time.monotonic() - start < 1.0
        assert http.close(1.0).sent == 1 and failures == []

    def test_a_redirect_with_an_endless_body_is_not_read(self, hostile):
        """A 307 with a Location and an endless body is a failed delivery at its status: the
        body is not read (requests would read all of it to prepare the redirect)."""
        elsewhere = hostile(endless())
        server = hostile(endless(b"307 Temporary Redirect",
                                 f"Location: {elsewhere.url}/stolen\r\n".encode()))
        with memory_peak() as peak:
            http, failures = sender(server.url, timeout=1.0, retries=2)
            http.put(b"{}")
            assert http.flush(5.0)
            assert server.cut_off.wait(2.0)
            stats = http.close(1.0)
        assert (stats.sent, stats.failed, stats.requests) == (0, 1, 1)
        assert failures[0][0] == "HTTPError" and "HTTP 307" in failures[0][1]
        assert elsewhere.connections == 0
        assert peak[0] < MEMORY_BOUND, f"{peak[0] >> 20} MiB"

    def test_close_cuts_the_request_in_flight(self, hostile):
        """close() gives up at its deadline although the request's own deadline (10 s) is far
        off: the request is cut, counted as abandoned, and the thread ends at once."""
        server = hostile(drip(b""))  # a status line that never ends
        http, failures = sender(server.url, timeout=5.0)
        http.put(b"{}")
        assert server.answered.wait(2.0)
        start = time.monotonic()
        stats = http.close(0.3)
        assert time.monotonic() - start < 0.6
        assert (stats.sent, stats.failed, stats.abandoned) == (0, 0, 1) and failures == []
        assert wait_until(lambda: not http._thread.is_alive(), 1.0)
        assert server.cut_off.wait(2.0)
        assert http.stats.abandoned == 1 and http.stats.failed == 0  # no count after close


    def test_a_cookie_a_server_sets_is_never_kept_nor_sent_back(self, hostile):
        """Every Set-Cookie was kept for the run and sent with every later request: a server
        setting 100 cookies of 64 KiB an answer grew the process by megabytes a request."""
        def cookies(conn: socket.socket, server: HostileServer) -> None:
            jar = b"".join(b"Set-Cookie: c%d=%s; Path=/\r\n" % (i, b"x" * 4000)
                           for i in range(20))
            server.send(conn, b"HTTP/1.1 200 OK\r\n" + jar +
                        b"Content-Length: 0\r\nConnection: close\r\n\r\n")

        server = hostile(cookies)
        post, failures = sender(server.url)
        for n in range(4):
            post.put(b"payload %d" % n)
        post.close(timeout=10)
        assert failures == [] and len(server.heads) == 4
        assert not any(b"cookie:" in head.lower() for head in server.heads)


class TestRecordSink:
    def test_endless_body(self, hostile):
        """Records posted to a collector that answers 200 with an endless body are delivered;
        sync and close return at once and hold no more than a few MiB."""
        server = hostile(endless())
        with memory_peak() as peak:
            sink = HttpRecordSink(server.url + "/records", timeout=1.0, retries=0, linger=0.0,
                                  flush_timeout=3.0)
            start = time.monotonic()
            for seq in range(5):
                sink.write({"seq": seq, "kind": "batch_end"})
            sink.sync()
            sink.close()
            took = time.monotonic() - start
            time.sleep(0.3)
        assert took < 1.5 and sink.stats.sent == 5 and sink.stats.undelivered == 0
        assert peak[0] < MEMORY_BOUND, f"{peak[0] >> 20} MiB"

    def test_dripping_status_line(self, hostile):
        """A collector that drips its status line: the batch fails as a Timeout at the request
        deadline, close raises DeliveryError naming it, and nothing waits longer."""
        server = hostile(drip(b""))
        sink = HttpRecordSink(server.url, timeout=0.25, retries=0, linger=0.0,
                              flush_timeout=3.0)
        sink.write({"seq": 1})
        start = time.monotonic()
        with pytest.raises(DeliveryError, match="1 of 1 record"), \
                pytest.warns(UserWarning, match="Timeout .* 0.5 s request deadline"):
            sink.close()
        assert time.monotonic() - start < 1.5
        assert sink.stats.failed == 1


class TestRemoteMonitor:
    def test_endless_body(self, hostile):
        """Epochs posted to a server answering 200 with an endless body are delivered: no
        failure, train_end and close return at once, memory stays under a few MiB."""
        server = hostile(endless())
        memory = RecordingWriter()
        with memory_peak() as peak:
            bus = Bus([RemoteMonitor(server.url, timeout=1.0, retries=0, flush_timeout=3.0)],
                      log=[memory])
            start = time.monotonic()
            bus.train_begin({"epochs": 3})
            for epoch in range(3):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0})
            bus.train_end()
            bus.close()
            took = time.monotonic() - start
            time.sleep(0.3)
        assert took < 1.5 and server.connections == 3
        assert bus.failures == []
        assert not [r for r in memory.records if r["kind"] in ("sink_failed", "warning")]
        assert peak[0] < MEMORY_BOUND, f"{peak[0] >> 20} MiB"

    def test_dripping_status_line(self, hostile):
        """A server dripping its status line: the epoch is recorded as not delivered (a
        Timeout, once, as it happens, then counted at close) within the deadline."""
        server = hostile(drip(b""))
        memory = RecordingWriter()
        bus = Bus([RemoteMonitor(server.url, timeout=0.25, retries=0, flush_timeout=3.0)],
                  log=[memory])
        start = time.monotonic()
        with pytest.warns(SinkFailureWarning, match="1 of 1 epoch payload"), \
                pytest.warns(RunWarning, match="RemoteMonitor: Timeout posting to .* deadline"):
            bus.train_begin({"epochs": 1})
            bus.epoch_begin(0)
            bus.epoch_end(0, {"loss": 1.0})
            assert time.monotonic() - start < 0.5  # the training thread only queued it
            bus.train_end()
            bus.close()
        assert time.monotonic() - start < 1.5
        failed = [r for r in memory.records if r["kind"] == "sink_failed"]
        assert failed and failed[0]["error"] == "Timeout"
