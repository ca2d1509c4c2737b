"""HTTP delivery that never blocks the training loop.

:class:`HttpSender` posts from one background thread: the training thread only appends to a
bounded buffer. Requests have a timeout; connection errors, timeouts and 5xx/429 answers are
retried with exponential backoff; other 4xx answers are not (sending the same body again will not
help). No redirect is followed: a 3xx answer is a failed delivery, not retried, so neither the
body nor the headers ever reach a host other than the one configured. ``flush(timeout)`` waits
for delivery up to a deadline, ``close(timeout)`` too, then gives up on what is left.

The server is not trusted to end its answer. Only the status counts: a body is read only when
it declares at most 4 KiB (so that the connection can be used again); otherwise the connection
is closed unread. Each request has a deadline of ``2 * timeout`` for all of it (connect, send,
status and headers); past it, or when ``close`` gives up, a watchdog thread shuts the request's
socket down, so a server sending a byte at a time holds the sender no longer than that, and an
endless body costs no memory.

Nothing is dropped silently: :class:`DeliveryStats` counts what was sent, failed, dropped
(buffer full) and abandoned (still pending at the deadline), and the owner records the
undelivered as ``sink_failed`` or ``warning``.

Headers (which may carry tokens) and the query values and userinfo of a URL never appear in a
message: errors name the URL through :func:`redact_url` only.

:class:`HttpRecordSink` streams every record of a run to a collector, in batches, as JSON Lines
(the bytes a ``.jsonl`` log holds); it is a record writer: ``Bus(log=["run.jsonl", sink])``.
:class:`plugins.RemoteMonitor` posts one payload per epoch through an :class:`HttpSender`.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from eventbus import Sink
from eventbus.checks import require_bool, require_headers, require_int, require_real
from eventbus.errors import ConfigError, DeliveryError
from eventbus.jsonl import encode_line
from eventbus.records import SinkFailed
from eventbus.records import Warning as WarningRecord
from eventbus.run import Run

__all__ = ["DeliveryError", "DeliveryStats", "HttpRecordSink", "HttpSender", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` without its userinfo and query values, fit for logs, headers and messages.

    The user name and password become ``***`` (a token is often passed as the user name:
    ``https://<token>@host/``), each query value becomes ``***`` (a query item without ``=``,
    which may itself be a token, as a whole), and the fragment is dropped; scheme, host, port,
    path and the query's parameter names are kept for diagnosis. Works on a bare path with a
    query too (``/publish?token=...``).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if "@" in parts.netloc:
        netloc = f"***@{netloc}"
    query = "&".join(f"{pair.split('=', 1)[0]}=***" if "=" in pair else "***"
                     for pair in parts.query.split("&") if pair) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass
class DeliveryStats:
    """What happened to the items given to a sender. Counts are of items, not requests."""

    sent: int = 0
    #: Given up on: retries exhausted, or an answer retrying cannot fix (4xx).
    failed: int = 0
    #: Refused because the buffer was full (or the sender closed).
    dropped: int = 0
    #: Still waiting, or in flight, when close's deadline passed.
    abandoned: int = 0
    #: HTTP requests made, retries included.
    requests: int = 0
    retries: int = 0

    @property
    def undelivered(self) -> int:
        return self.failed + self.dropped + self.abandoned

    def describe(self) -> str:
        parts = [f"{self.failed} failed after retries or refused"] if self.failed else []
        if self.dropped:
            parts.append(f"{self.dropped} dropped because the buffer was full")
        if self.abandoned:
            parts.append(f"{self.abandoned} still pending at the deadline")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped,
                "abandoned": self.abandoned, "requests": self.requests, "retries": self.retries}


#: Called from the sender thread as ``on_failure(error, message, items)``: the first failure
#: after a success (so an outage is reported once, not once per item).
FailureCallback = Callable[[str, str, int], None]
_RETRY_STATUS = frozenset({408, 429})
#: An answer's body is read only when it declares at most this many bytes (to reuse the
#: connection); nothing uses it, and a longer one is left unread on a closed connection.
_BODY_LIMIT = 4096
#: A request's deadline, for all of it, is this many times ``timeout``: requests' timeout is
#: per connect and per read, which a server sending a byte at a time never reaches.
_DEADLINE_FACTOR = 2
#: The watch of the sender thread running on this thread, for the connections it opens.
_local = threading.local()


class _Watch:
    """The deadline of the request in flight on one sender's thread, and a thread enforcing it.

    Past the deadline, or at once on :meth:`cut_now`, the request's socket is shut down: a
    blocked connect, send or read then returns at once, whatever the server does. A shutdown,
    not a close, so the descriptor is not reused while the sender thread still holds it.
    """

    def __init__(self, name: str):
        self._cond = threading.Condition(threading.Lock())
        self._deadline: float | None = None  # None: no request in flight
        self._conn: Any = None
        self._cut = False
        self._idle = True
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-watchdog", daemon=True)
        self._thread.start()

    def arm(self, seconds: float) -> None:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._conn = None
            self._cut = False
            if self._idle:  # else it wakes at the previous deadline, sooner than this one
                self._cond.notify()

    def disarm(self) -> bool:
        """End the request's watch; True when the request was cut."""
        with self._cond:
            self._deadline = None
            self._conn = None
            return self._cut

    def attach(self, conn: Any) -> None:
        """``conn`` carries the request now; shut it down at once if the deadline is past."""
        with self._cond:
            if self._deadline is not None:
                self._conn = conn
                if self._cut:
                    _shut_down(conn)

    def cut_now(self) -> None:
        with self._cond:
            if self._deadline is not None:
                self._cut = True
                _shut_down(self._conn)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                left = None if self._deadline is None else self._deadline - time.monotonic()
                if left is not None and left > 0:
                    self._cond.wait(left)
                    continue
                if left is not None and not self._cut:
                    self._cut = True
                    _shut_down(self._conn)
                # Nothing to time until the next request: no timed wait, no CPU while idle.
                self._idle = True
                self._cond.wait()
                self._idle = False


def _shut_down(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    # The plain socket's shutdown, even under TLS: SSLSocket's own would drop its SSL state
    # under the thread reading it. A TLS-in-TLS transport keeps its socket in `.socket`.
    if sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:  # already closed or not yet connected: nothing left to cut
            pass


class _WatchedConnection:
    """Mixed into urllib3's connection classes: tells the watch of the sender thread which
    connection carries its request, when it connects and when a request starts on it."""

    def connect(self) -> None:
        watch = getattr(_local, "watch", None)
        if watch is not None:
            watch.attach(self)
        super().connect()  # type: ignore[misc]
        if watch is not None:
            watch.attach(self)  # the deadline may have passed while connecting

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_local, "watch", None)
        if watch is not None:
            watch.attach(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


@functools.cache
def _watched_pool(pool_cls: type) -> type:
    conn_cls = pool_cls.ConnectionCls  # type: ignore[attr-defined]
    if issubclass(conn_cls, _WatchedConnection):
        return pool_cls
    watched = type(f"Watched{conn_cls.__name__}", (_WatchedConnection, conn_cls), {})
    return type(f"Watched{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": watched})


def _watch_pools(manager: Any) -> Any:
    manager.pool_classes_by_scheme = {scheme: _watched_pool(cls) for scheme, cls
                                      in manager.pool_classes_by_scheme.items()}
    return manager


@functools.cache
def _session_class() -> type:
    """A requests ``Session`` whose connections the sender's watch can cut, and that never
    prepares a redirect. Built on first use: requests is imported lazily."""
    import http.cookiejar

    import requests
    from requests.adapters import HTTPAdapter

    class WatchedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            _watch_pools(self.poolmanager)

        def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
            return _watch_pools(super().proxy_manager_for(*args, **kwargs))

    class Session(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self.mount("https://", WatchedAdapter())
            self.mount("http://", WatchedAdapter())
            # No cookie is kept or sent back: a server's Set-Cookie headers, kept for the run
            # and sent with every later request, grew the process by megabytes a request.
            self.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

        def get_redirect_target(self, resp: Any) -> None:
            # Even with allow_redirects=False, requests prepares the next request of a 3xx
            # with a Location, and reads the whole body first (an endless one, for ever).
            return None

    return Session


class HttpSender:
    """POST items to ``url`` from a background thread, through a bounded buffer.

    Parameters
    ----------
    encode:
        Turns a list of up to ``batch_size`` items into a request body.
    content_type:
        The body's media type.
    batch_size:
        Items per request at most. The thread sends as soon as it is woken: by ``put`` when
        ``eager`` or when a full batch waits, by :meth:`kick`, or every ``linger`` seconds.
    max_pending:
        Items the buffer holds at most; ``put`` beyond that drops the item and counts it.
    headers:
        Sent with every request; never logged.
    timeout:
        Seconds for connecting and for each read. The whole request (connect, send, status
        and headers) has a deadline of ``2 * timeout``, past which its connection is cut.
    retries, backoff, max_backoff:
        A failed request is tried again up to ``retries`` times, waiting ``backoff``,
        ``2 * backoff``, ... seconds (at most ``max_backoff``) in between.
    """

    def __init__(self, url: str, *, encode: Callable[[list[Any]], bytes],
                 content_type: str = "application/json", batch_size: int = 1,
                 max_pending: int = 1000, headers: Mapping[str, str] | None = None,
                 timeout: float = 5.0, retries: int = 3, backoff: float = 0.25,
                 max_backoff: float = 4.0, eager: bool = True, linger: float | None = 1.0,
                 on_failure: FailureCallback | None = None, name: str = "http"):
        # Every parameter is checked before the thread starts, each error naming its field:
        # a bad value must stop the run at construction, not fail every request later.
        if not isinstance(name, str) or not name:
            raise ConfigError(f"HttpSender: name must be a non-empty str; got {name!r}",
                              plugin="HttpSender", field="name")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name}: url must start with http:// or https://; got "
                              f"{redact_url(str(url))!r}", plugin=name, field="url")
        if not callable(encode):
            raise ConfigError(f"{name}: encode must be callable; got {type(encode).__name__}",
                              plugin=name, field="encode")
        if not isinstance(content_type, str) or not content_type:
            raise ConfigError(f"{name}: content_type must be a non-empty str; got "
                              f"{content_type!r}", plugin=name, field="content_type")
        batch_size = require_int(batch_size, "batch_size", name, minimum=1)
        max_pending = require_int(max_pending, "max_pending", name, minimum=1)
        headers = require_headers(headers, "headers", name)
        timeout = require_real(timeout, "timeout", name)
        if timeout <= 0:
            raise ConfigError(f"{name}: timeout must be > 0 seconds; got {timeout}",
                              plugin=name, field="timeout")
        retries = require_int(retries, "retries", name, minimum=0)
        backoff = require_real(backoff, "backoff", name, minimum=0.0)
        max_backoff = require_real(max_backoff, "max_backoff", name, minimum=0.0)
        eager = require_bool(eager, "eager", name)
        if linger is not None:
            linger = require_real(linger, "linger", name, minimum=0.0)
        if on_failure is not None and not callable(on_failure):
            raise ConfigError(f"{name}: on_failure must be callable or None; got "
                              f"{type(on_failure).__name__}", plugin=name, field="on_failure")
        import requests

        self.url = url
        self.name = name
        self.stats = DeliveryStats()
        self._requests = requests
        self._encode = encode
        self._headers = {"Content-Type": content_type, **headers}
        self._batch = batch_size
        self._max = max_pending
        self._timeout = timeout
        self._deadline = _DEADLINE_FACTOR * timeout
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._eager = eager
        self._linger = linger
        self._on_failure = on_failure
        self._pending: deque[Any] = deque()
        self._in_flight = 0
        self._healthy = True
        #: Set by kick and flush: send what is pending without waiting for `linger`.
        self._urgent = False
        self._closing = False
        self._closed = False
        self._abort = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._watch = _Watch(name)
        self._thread = threading.Thread(target=self._run, name=f"{name}-sender", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:  # never the headers
        return f"HttpSender({redact_url(self.url)!r}, pending={len(self._pending)})"

    # --- the training thread's side ----------------------------------------------------------

    def put(self, item: Any) -> bool:
        """Queue ``item``; never blocks. False (and counted as dropped) when the buffer is full."""
        pending = self._pending
        if self._closing or len(pending) >= self._max:
            self.stats.dropped += 1
            return False
        pending.append(item)
        # Eager: send now. Otherwise wake the thread for the first item (it then gives the
        # batch `linger` seconds to fill) and for a full batch.
        if self._eager or len(pending) == 1 or len(pending) >= self._batch:
            self._wake.set()
        return True

    def kick(self) -> None:
        """Send what is pending now rather than after ``linger``."""
        self._urgent = True
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending) + self._in_flight

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued is delivered or given up on; False at the deadline."""
        self._urgent = True
        self._wake.set()
        with self._progress:
            return self._progress.wait_for(lambda: not self.pending, timeout)

    def close(self, timeout: float | None) -> DeliveryStats:
        """Deliver what is pending until ``timeout`` seconds pass, then give up on the rest."""
        if not self._closed:
            self._closed = True
            self._closing = True
            self._wake.set()
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._abort.set()
                self._wake.set()
                # The request in flight is cut: the thread stops reading from the server now.
                self._watch.cut_now()
                # Whatever is still queued or in flight now counts as abandoned; the thread
                # leaves the counts alone from here on.
                with self._progress:
                    self.stats.abandoned += len(self._pending) + self._in_flight
                    self._pending.clear()
                    self._in_flight = 0
        return self.stats

    # --- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        _local.watch = self._watch
        session = _session_class()()
        try:
            while not self._abort.is_set():
                if self._eager or not self._pending:
                    # Nothing to time: sleep until put, kick, flush or close wakes the thread.
                    # An empty buffer never gets a timed wait, so an idle sender costs no CPU
                    # whatever `linger` is (with linger=0 the old timed wait spun a core).
                    self._wake.wait()
                    self._wake.clear()
                    if not (self._eager or self._urgent or self._closing
                            or len(self._pending) >= self._batch):
                        continue  # the first item: give the batch `linger` to fill
                else:
                    # A full batch, kick, flush or close cuts the wait short.
                    self._wake.wait(self._linger)
                    self._wake.clear()
                self._urgent = False
                while self._pending and not self._abort.is_set():
                    with self._progress:
                        batch = [self._pending.popleft()
                                 for _ in range(min(self._batch, len(self._pending)))]
                        self._in_flight = len(batch)
                    self._deliver(session, batch)
                    with self._progress:
                        if not self._abort.is_set():
                            self._in_flight = 0
                        self._progress.notify_all()
                if self._closing and not self._pending:
                    return
        finally:
            session.close()
            self._watch.stop()
            with self._progress:
                self._progress.notify_all()

    def _deliver(self, session: Any, batch: list[Any]) -> None:
        n = len(batch)
        requests = self._requests
        try:
            body = self._encode(batch)
        except Exception as exc:  # a value the encoder cannot take: retrying will not help
            self._count_failure(type(exc).__name__, f"cannot encode {n} item(s): {exc}", n)
            return
        attempt = 0
        while True:
            self.stats.requests += 1
            self._watch.arm(self._deadline)
            try:
                status = self._post(session, body)
            except Exception as exc:
                cut = self._watch.disarm()
                if not cut and not isinstance(exc, requests.RequestException):
                    raise
                if cut:  # whatever the exception, it comes from the shut-down socket
                    error = "Timeout"
                    message = (f"Timeout posting to {redact_url(self.url)}: no answer within "
                               f"the {self._deadline:g} s request deadline")
                    retry = True
                else:
                    error = type(exc).__name__
                    message = f"{error} posting to {redact_url(self.url)}"
                    retry = isinstance(exc, (requests.ConnectionError, requests.Timeout))
            else:
                self._watch.disarm()
                if 200 <= status < 300:
                    if not self._abort.is_set():
                        self.stats.sent += n
                    self._healthy = True
                    return
                error = "HTTPError"
                message = f"HTTP {status} from {redact_url(self.url)}"
                if 300 <= status < 400:
                    message += " (a redirect: not followed, the payload is not delivered)"
                retry = status >= 500 or status in _RETRY_STATUS
            if not retry or attempt >= self._retries:
                self._count_failure(error, message + (f" (after {attempt} retries)"
                                                      if attempt else ""), n)
                return
            delay = min(self._max_backoff, self._backoff * 2 ** attempt)
            attempt += 1
            self.stats.retries += 1
            if self._abort.wait(delay):
                return  # close's deadline passed: counted as abandoned there

    def _post(self, session: Any, body: bytes) -> int:
        """POST ``body``; the answer's status. Runs under the watch's deadline."""
        # No redirect is followed: a 307/308 would carry the body and the headers (a token) to
        # whatever host the server names, a 301/302/303 would become a bodiless GET that looks
        # delivered. stream=True: requests returns after the headers, the body is ours to read.
        response = session.post(self.url, data=body, headers=self._headers,
                                timeout=self._timeout, allow_redirects=False, stream=True)
        try:
            # Only the status counts. A short body is read, so that the connection goes back
            # to the pool; a long, endless or unannounced one is never read: close() below
            # closes the connection instead.
            length = response.headers.get("Content-Length", "")
            if response.status_code in (204, 304) or (
                    length.isascii() and length.isdigit() and len(length) <= 5
                    and int(length) <= _BODY_LIMIT
                    and "Transfer-Encoding" not in response.headers):
                try:
                    response.raw.read(_BODY_LIMIT, decode_content=False)
                except Exception:  # noqa: S110 - the status is in; the connection is closed
                    pass
            return response.status_code
        finally:
            response.close()

    def _count_failure(self, error: str, message: str, n: int) -> None:
        if self._abort.is_set():
            return
        self.stats.failed += n
        if self._healthy and self._on_failure is not None:
            try:
                self._on_failure(error, message, n)
            except Exception:  # noqa: S110 - reporting must not kill the sender
                pass
        self._healthy = False


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join([encode_line(r) for r in records])  # the lines a .jsonl log holds


class HttpRecordSink(Sink):
    """Stream every record of a run to a collector: a record writer for ``Bus(log=[...])``.

    Each request is a POST of up to ``batch_size`` records as JSON Lines
    (``application/x-ndjson``), the same lines a ``.jsonl`` log holds; records are in ``seq``
    order and a retried batch may arrive twice, so a collector keys them on ``(run_id, seq)``.
    ``write`` only keeps the record; ``flush`` (the bus flushes at every epoch end and decision,
    after its event logs) hands what it kept to the sender's thread, which posts it at once.
    So the collector never gets a record before the logs have written it: after a kill or a
    Ctrl-C, a resume numbers its records on from the log's last one, and a record sent ahead
    of the log would share its ``(run_id, seq)`` with another. ``sync`` (at ``train_end``)
    waits up to ``flush_timeout`` seconds for delivery, and ``close`` waits as long again, then
    gives up on the rest and raises :class:`DeliveryError` naming what was lost, which the bus
    records among its failures.

    Given to a bus (``Bus(log=[...])``), it is opened with the run, so delivery failures are
    recorded in the log as they happen (``sink_failed``), and at ``train_end`` a ``warning``
    with the counts; on its own, they are Python warnings.
    """

    name = "http"
    #: Flushed after the event logs, and only while none is behind (a full disk): what the
    #: collector has is never ahead of the log a resume reads.
    follows_logs = True

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 batch_size: int = 1000, max_pending: int = 100_000, timeout: float = 5.0,
                 retries: int = 3, backoff: float = 0.25, max_backoff: float = 4.0,
                 linger: float = 1.0, flush_timeout: float = 10.0):
        # Checked here, before the sender (and its thread) exists; the sender checks the rest.
        self.flush_timeout = require_real(flush_timeout, "flush_timeout", self.name, minimum=0.0)
        linger = require_real(linger, "linger", self.name, minimum=0.0)
        self.url = url
        self.flush_timeout = flush_timeout
        self._run: Run | None = None
        self._reported = DeliveryStats()
        #: Records written since the last flush: not in every log yet, so not to be sent.
        self._unflushed: list[dict[str, Any]] = []
        self._max_pending = max_pending
        self._sender = HttpSender(url, encode=_jsonl, content_type="application/x-ndjson",
                                  batch_size=batch_size, max_pending=max_pending,
                                  headers=headers, timeout=timeout, retries=retries,
                                  backoff=backoff, max_backoff=max_backoff, eager=False,
                                  linger=linger, on_failure=self._failed, name="http")

    def __repr__(self) -> str:
        return f"HttpRecordSink({redact_url(self.url)!r})"

    @property
    def stats(self) -> DeliveryStats:
        return self._sender.stats

    def open(self, run: Run) -> None:
        """Record delivery failures in ``run`` (through ``run.report``, safe from any thread)."""
        self._run = run

    def _failed(self, error: str, message: str, n: int) -> None:
        if self._run is not None:
            self._run.report(SinkFailed(sink=self.name, event="write", error=error,
                                        message=f"{message}; {n} record(s) not delivered"))
        else:
            warnings.warn(f"http sink: {message}; {n} record(s) not delivered", stacklevel=2)

    # --- the sink contract ----------------------------------------------------------------------

    def write(self, record: dict[str, Any]) -> None:
        # The record is kept, not copied: the bus never changes a record once written. Kept
        # and queued together hold max_pending at most, as the sender's buffer alone did.
        if len(self._unflushed) + self._sender.pending >= self._max_pending:
            self._sender.stats.dropped += 1
            return
        self._unflushed.append(record)

    def flush(self) -> None:
        """Hand the records written since the last flush to the sender, which posts them now.
        The bus calls it once its event logs have written them (``follows_logs``)."""
        if not self._unflushed:
            return
        records, self._unflushed = self._unflushed, []
        put = self._sender.put
        for record in records:
            put(record)
        self._sender.kick()  # they waited for the flush already, not `linger` more

    def forget_unflushed(self) -> None:
        """Drop what the logs have not written: an interrupt cut its way to them, or a log
        could not write it. A resume numbers its records on from the log's last one; it sends
        the collector the run so far again, from the log."""
        self._unflushed.clear()

    def sync(self) -> None:
        self.flush()
        delivered = self._sender.flush(self.flush_timeout)
        stats = self._sender.stats
        new = stats.undelivered - self._reported.undelivered
        if self._run is not None and (new or not delivered):
            self._run.report(WarningRecord(
                source=self.name,
                message=f"http sink: {stats.undelivered} record(s) undelivered so far "
                        f"({stats.describe() or 'none'}); {self._sender.pending} pending after "
                        f"{self.flush_timeout}s", details=stats.as_dict()))
        self._reported = DeliveryStats(**stats.as_dict())

    def close(self) -> None:
        # The bus closes it after the logs (and forgets what a log could not write first).
        self.flush()
        stats = self._sender.close(self.flush_timeout)
        if stats.undelivered:
            raise DeliveryError(f"http sink: {stats.undelivered} of "
                                f"{stats.undelivered + stats.sent} record(s) not delivered to "
                                f"{redact_url(self.url)}: {stats.describe()}")

    def __enter__(self) -> HttpRecordSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

