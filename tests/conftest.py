"""Fixtures shared across the test tree: a real HTTP server on 127.0.0.1 and no proxies; and the
Hypothesis profile (see hypothesis_profiles.py), loaded here before any test module is imported."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import hypothesis_profiles

hypothesis_profiles.load()


class LoopbackServer:
    """An HTTP server on 127.0.0.1 that keeps every request it gets and answers ``status`` (500
    for the first ``fail_first`` requests) after ``delay`` seconds, with a ``Location`` header
    when ``location`` is given (to answer with a redirect).

    ``hold=True``: it answers nothing until ``release`` is set (by the test, or at the latest
    when it is closed). A test of what must not wait for the server then need not race a delay:
    code that waited would wait for as long as the client's timeout, whatever the machine's load.
    """

    def __init__(self, status: int = 200, delay: float = 0.0, fail_first: int = 0,
                 hold: bool = False, location: str | None = None):
        self.status, self.delay, self.fail_first = status, delay, fail_first
        self.location = location
        #: (path, headers, body) of every request, whatever its method, in arrival order.
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        #: The method of each request, in the same order.
        self.methods: list[str] = []
        self.lock = threading.Lock()
        #: Set: requests are answered (at once unless ``hold``).
        self.release = threading.Event()
        if not hold:
            self.release.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.requests.append((self.path, dict(self.headers), body))
                    outer.methods.append(self.command)
                    n = len(outer.requests)
                outer.release.wait()
                time.sleep(outer.delay)
                self.send_response(500 if n <= outer.fail_first else outer.status)
                if outer.location is not None:
                    self.send_header("Location", outer.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            # A redirected request may arrive with another method: every one is kept.
            do_GET = do_PUT = do_HEAD = do_DELETE = do_PATCH = do_POST  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


#: The sockets refused_url keeps bound, never listening: the port stays this process's, so
#: another test worker's server cannot take it and answer.
_UNANSWERED: list[socket.socket] = []


def refused_url(path: str = "") -> str:
    """A 127.0.0.1 URL nothing listens on: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _UNANSWERED.append(sock)
    return f"http://127.0.0.1:{sock.getsockname()[1]}{path}"


@pytest.fixture
def server():
    """Make loopback servers (``server(status=500, delay=0.5)``, ``server(hold=True)``); all
    closed afterwards."""
    made: list[LoopbackServer] = []

    def make(**kwargs) -> LoopbackServer:
        made.append(LoopbackServer(**kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def down_url():
    """A URL on 127.0.0.1 where nothing listens."""
    return refused_url


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 go straight there, whatever proxy the environment names."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs, a disk that really fills (ENOSPC); skipped where mounting one is not
    allowed (it needs root)."""
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def leave_room(root, room: int) -> None:
    """Fill the disk at ``root`` but for ``room`` bytes (a file of that size, written before
    the rest is taken, then removed: free space as a disk that fills has it)."""
    import os

    spare = os.path.join(root, "spare")
    with open(spare, "wb") as file:
        file.write(b"x" * room)
    fd = os.open(os.path.join(root, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (4096, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                pass
    finally:
        os.close(fd)
    os.unlink(spare)
