"""RemoteMonitor: POST each epoch's logs to a server, as Keras does, without blocking training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from eventbus import Plugin, Sink
from eventbus.checks import require_headers
from eventbus.errors import ConfigError
from eventbus.records import SinkFailed, encode_nonfinite
from eventbus.records import Warning as WarningRecord
from eventbus.run import Run

from .monitor import require_bool, require_int, require_real

__all__ = ["RemoteMonitor"]


def _json(payload: dict[str, Any]) -> bytes:
    # Non-finite values spelled "NaN", "Infinity", "-Infinity", as in event logs: JSON has no
    # NaN, and a diverging loss is exactly what a monitor should be told about.
    return orjson.dumps(encode_nonfinite(payload))


class RemoteMonitor(Plugin, Sink):
    """Send ``{"epoch": epoch, **logs}`` to ``root + path`` at every epoch end (the epoch wins
    over a metric named ``epoch``).

    As Keras: an HTTP POST whose form field ``field`` holds the payload as JSON, or with
    ``send_as_json=True`` a JSON body; ``headers`` go with every request. Unlike Keras, the
    request is made on a background thread (the training thread only queues it), with a
    ``timeout`` (to connect and per read; the whole request is cut at ``2 * timeout``, so a
    server answering a byte at a time cannot hold it), ``retries`` with exponential
    ``backoff`` on connection errors, timeouts and 5xx answers, and at ``train_end`` a wait of
    at most ``flush_timeout`` seconds for what is still queued. Only the answer's status is
    read, never a body beyond 4 KiB, so an endless answer costs no memory. Payloads that could
    not be delivered are counted and recorded (``sink_failed``); the headers, which may hold
    tokens, are never recorded.
    """

    side_effects = True
    takes = frozenset({"epoch_end", "train_end"})

    def __init__(self, root: str = "http://localhost:9000", path: str = "/publish/epoch/end/",
                 field: str = "data", headers: Mapping[str, str] | None = None,
                 send_as_json: bool = False, *, timeout: float = 5.0, retries: int = 3,
                 backoff: float = 0.25, max_pending: int = 1000, flush_timeout: float = 10.0):
        name = type(self).name
        if not isinstance(root, str) or not root.startswith(("http://", "https://")):
            raise ConfigError(f"{name}: root must be an http:// or https:// URL; got "
                              f"{type(root).__name__}", plugin=name, field="root")
        for field_name, value in (("path", path), ("field", field)):
            if not isinstance(value, str) or (field_name == "field" and not value):
                raise ConfigError(f"{name}: {field_name} must be a str"
                                  f"{' (non-empty)' if field_name == 'field' else ''}; got "
                                  f"{type(value).__name__} {value!r}", plugin=name,
                                  field=field_name)
        self.root = root
        self.path = path
        self.field = field
        self.headers = require_headers(headers, "headers", name)
        self.send_as_json = require_bool(send_as_json, "send_as_json", name)
        # Checked here, not by the HTTP sender built at the first epoch: a bad value must stop
        # the run before it starts, not become a sink failure at its first epoch end.
        self.timeout = require_real(timeout, "timeout", name)
        if self.timeout <= 0:
            raise ConfigError(f"{name}: timeout must be > 0 seconds; got {self.timeout}",
                              plugin=name, field="timeout")
        self.retries = require_int(retries, "retries", name, minimum=0)
        self.backoff = require_real(backoff, "backoff", name, minimum=0.0)
        self.max_pending = require_int(max_pending, "max_pending", name, minimum=1)
        self.flush_timeout = require_real(flush_timeout, "flush_timeout", name, minimum=0.0)
        self._run: Run | None = None
        self._label = self.name
        self._sender: Any = None
        self._dropped_reported = 0

    @property
    def url(self) -> str:
        return self.root + self.path

    def get_config(self) -> dict[str, Any]:
        from sinks.http import redact_url

        config = super().get_config()
        # The log header is read by people and tools: no tokens in it. A token may sit in the
        # root's userinfo or query, in the path's query, or in any header value.
        config["headers"] = {name: "<redacted>" for name in self.headers}
        config["root"] = redact_url(self.root)
        config["path"] = redact_url(self.path)
        return config

    def _get(self) -> Any:
        if self._sender is None:
            from sinks.http import HttpSender

            run, label = self._run, self._label
            first = [True]

            def on_failure(error: str, message: str, n: int) -> None:
                if run is None:
                    return
                # report() is safe from the sender thread; both are recorded at the next event.
                run.report(SinkFailed(sink=label, event="epoch_end", error=error,
                                      message=message))
                if first[0]:
                    # Seen when it happens (a RunWarning), not only in close()'s summary.
                    first[0] = False
                    run.report(WarningRecord(
                        source=label, message=f"{message}; training goes on, "
                        "and every payload not delivered is counted when the run closes",
                        details={"error": error}))

            content_type = "application/json" if self.send_as_json else \
                "application/x-www-form-urlencoded"
            self._sender = HttpSender(
                self.url, encode=lambda items: items[0], content_type=content_type,
                max_pending=self.max_pending, headers=self.headers, timeout=self.timeout,
                retries=self.retries, backoff=self.backoff, eager=True,
                on_failure=on_failure, name=label)
        return self._sender

    def payload(self, epoch: int, logs: Mapping[str, float]) -> bytes:
        """The request body for one epoch. The event's epoch wins over a metric named "epoch"
        (Keras lets the metric overwrite it, and the server then files the payload under a
        made-up epoch)."""
        data = _json({"epoch": epoch, **{k: v for k, v in logs.items() if k != "epoch"}})
        if self.send_as_json:
            return data
        return urlencode({self.field: data.decode()}).encode()

    # --- the sink ------------------------------------------------------------------------------

    def open(self, run: Run) -> None:
        self._run = run
        self._label = run.label(self)

    def write(self, record: dict[str, Any]) -> Any:
        if record["kind"] == "train_end":
            return self._train_end()
        epoch = record["epoch"]
        sender = self._get()
        if sender.put(self.payload(epoch, record["logs"])):
            return None
        dropped = sender.stats.dropped
        if self._dropped_reported:
            return None
        self._dropped_reported = dropped
        return WarningRecord(message=f"RemoteMonitor: epoch {epoch} not sent: "
                             f"{sender.pending} payloads are still waiting for "
                             f"{_host(self.url)}", details={"dropped": dropped})

    def _train_end(self) -> Any:
        sender = self._sender
        if sender is None or sender.flush(self.flush_timeout):
            return None
        return WarningRecord(message=f"RemoteMonitor: {sender.pending} payload(s) still "
                             f"unsent {self.flush_timeout}s after train_end",
                             details=sender.stats.as_dict())

    def close(self) -> Any:
        sender, self._sender = self._sender, None
        if sender is None:
            return None
        stats = sender.close(self.flush_timeout)
        if not stats.undelivered:
            return None
        return SinkFailed(sink=self._label, event="close", error="DeliveryError",
                          message=f"{stats.undelivered} of {stats.undelivered + stats.sent} "
                                  f"epoch payload(s) not delivered to {_host(self.url)}: "
                                  f"{stats.describe()}")


def _host(url: str) -> str:
    from sinks.http import redact_url

    return redact_url(url)
