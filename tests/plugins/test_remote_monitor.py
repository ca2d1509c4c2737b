"""plugins.RemoteMonitor against a real HTTP server on 127.0.0.1: normal, 500, slow, down."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import parse_qs

import orjson
import pytest

from eventbus import Bus, RunWarning, SinkFailureWarning, read_header
from eventbus.errors import ConfigError
from eventbus.testing import RecordingWriter
from plugins import RemoteMonitor

TOKEN = "tok-9f8e7d6c5b4a"


def strict_json(text: str | bytes):
    """Standard JSON only: a bare NaN or Infinity is an error."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def fit(bus, losses):
    bus.train_begin({"epochs": len(losses)})
    for epoch, loss in enumerate(losses):
        bus.epoch_begin(epoch)
        bus.epoch_end(epoch, {"loss": loss, "val_loss": loss * 2})
    bus.train_end()


def quick(**kwargs):
    return dict({"timeout": 1.0, "retries": 1, "backoff": 0.01, "flush_timeout": 5.0},
                **kwargs)


class TestRequests:
    def test_form_field_holding_json(self, server):
        """Keras's request: POST root + path, form field `data` = JSON {"epoch": e, **logs}."""
        collector = server()
        bus = Bus([RemoteMonitor(collector.url, **quick())], learning_rate=0.1)
        fit(bus, [0.5, 0.25])
        bus.close()
        assert [p for p, _, _ in collector.requests] == ["/publish/epoch/end/"] * 2
        path, headers, body = collector.requests[1]
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        payload = strict_json(parse_qs(body.decode())["data"][0])
        # As Keras's: the rate is in the logs only with a plugin that sets it.
        assert payload == {"epoch": 1, "loss": 0.25, "val_loss": 0.5}

    def test_json_body_custom_path_field_headers(self, server):
        """send_as_json posts a JSON body; path and headers are used as given."""
        collector = server()
        monitor = RemoteMonitor(collector.url, path="/runs/7", field="ignored",
                                headers={"Authorization": TOKEN}, send_as_json=True, **quick())
        bus = Bus([monitor])
        fit(bus, [0.5])
        bus.close()
        ((path, headers, body),) = collector.requests
        assert path == "/runs/7" and headers["Authorization"] == TOKEN
        assert headers["Content-Type"] == "application/json"
        assert strict_json(body) == {"epoch": 0, "loss": 0.5, "val_loss": 1.0}

    def test_the_epoch_wins_over_a_metric_named_epoch(self, server):
        """A metric called "epoch" does not overwrite the payload's epoch (Keras's would)."""
        collector = server()
        bus = Bus([RemoteMonitor(collector.url, send_as_json=True, **quick())])
        bus.train_begin()
        for epoch in range(2):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"epoch": 99.0, "loss": 0.5})
        bus.train_end()
        bus.close()
        assert [strict_json(body) for _, _, body in collector.requests] == [
            {"epoch": 0, "loss": 0.5}, {"epoch": 1, "loss": 0.5}]

    def test_nan_is_valid_json(self, server):
        """A NaN loss is sent as the string "NaN" (Keras's payload would not be JSON)."""
        collector = server()
        bus = Bus([RemoteMonitor(collector.url, send_as_json=True, **quick())])
        fit(bus, [float("nan")])
        bus.close()
        assert strict_json(collector.requests[0][2])["loss"] == "NaN"

    def test_form_field_with_nan(self, server):
        """The form field's JSON is standard JSON too."""
        collector = server()
        bus = Bus([RemoteMonitor(collector.url, **quick())])
        fit(bus, [float("inf")])
        bus.close()
        payload = strict_json(parse_qs(collector.requests[0][2].decode())["data"][0])
        assert payload["loss"] == "Infinity"


class TestFaults:
    def test_server_error_is_recorded_not_raised(self, server):
        """A server answering 500: training finishes, sink_failed is in the log, no token."""
        collector = server(status=500)
        writer = RecordingWriter()
        monitor = RemoteMonitor(collector.url, headers={"X-Api-Key": TOKEN}, **quick())
        bus = Bus([monitor], log=writer)
        with pytest.warns(SinkFailureWarning, match="HTTP 500"), \
                pytest.warns(RunWarning, match="RemoteMonitor: HTTP 500 .* training goes on"):
            fit(bus, [0.5, 0.4, 0.3])
            bus.close()
        kinds = [r["kind"] for r in writer.records]
        assert kinds.count("epoch_end") == 3 and "train_end" in kinds
        failed = [r for r in writer.records if r["kind"] == "sink_failed"]
        assert failed[0]["sink"] == "RemoteMonitor" and "HTTP 500" in failed[0]["message"]
        summary = failed[-1]
        assert summary["event"] == "close" and "3 of 3" in summary["message"]
        assert TOKEN not in orjson.dumps(writer.records).decode()
        assert writer.records[0]["plugins"][0]["params"]["headers"] == {
            "X-Api-Key": "<redacted>"}
        assert len(collector.requests) == 3 * 2  # one retry each: bounded

    def test_server_down(self, down_url):
        """Nothing listening: connection errors are retried, counted and recorded."""
        writer = RecordingWriter()
        bus = Bus([RemoteMonitor(down_url(), **quick())], log=writer)
        with pytest.warns(SinkFailureWarning, match="ConnectionError"), \
                pytest.warns(RunWarning, match="ConnectionError"):
            fit(bus, [0.5, 0.4])
            bus.close()
        failed = [r for r in writer.records if r["kind"] == "sink_failed"]
        assert failed[0]["error"] == "ConnectionError"
        assert "2 of 2" in failed[-1]["message"] and "failed" in failed[-1]["message"]

    def test_first_failure_is_shown_when_it_happens(self, down_url):
        """The first undelivered epoch is a RunWarning at the next event, during training, not
        only in close()'s summary; an outage warns once, however many epochs it lasts."""
        writer = RecordingWriter()
        monitor = RemoteMonitor(down_url(), **quick(retries=0))
        bus = Bus([monitor], log=writer)
        bus.train_begin({"epochs": 3})
        bus.epoch_begin(0)
        bus.epoch_end(0, {"loss": 1.0})
        monitor._sender.flush(5.0)  # the delivery was tried (and failed) on the sender thread
        with pytest.warns(RunWarning, match="RemoteMonitor: ConnectionError posting to "
                                            "http://127.0.0.1:.*training goes on") as shown:
            bus.epoch_begin(1)
        assert len(shown) == 1
        bus.epoch_end(1, {"loss": 1.0})
        monitor._sender.flush(5.0)
        bus.epoch_begin(2)  # the second failure of the outage: recorded, not warned again
        bus.epoch_end(2, {"loss": 1.0})
        with pytest.warns(SinkFailureWarning, match="3 of 3"):
            bus.train_end()
            bus.close()
        kinds = [r["kind"] for r in writer.records]
        first = kinds.index("warning")
        assert kinds[first - 1] == "sink_failed" and kinds.index("epoch_begin") < first
        assert kinds.count("warning") == 1

    def test_slow_server_does_not_slow_training(self, server):
        """While the server answers nothing, epoch_end returns; train_end waits for delivery."""
        collector = server(hold=True)  # answers nothing until released
        bus = Bus([RemoteMonitor(collector.url, **quick(timeout=30.0))])
        bus.train_begin()
        start = time.perf_counter()
        for epoch in range(3):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": 1.0})
        # An epoch_end that waited for an answer would have waited the whole 30 s timeout.
        assert time.perf_counter() - start < 10
        collector.release.set()
        bus.train_end()
        assert len(collector.requests) == 3
        bus.close()

    def test_flush_deadline_at_train_end(self, server):
        """A server that does not answer by flush_timeout: train_end returns at the deadline
        (not when a request times out), and warns."""
        collector = server(hold=True)  # answers nothing until the test is over
        writer = RecordingWriter()
        bus = Bus([RemoteMonitor(collector.url, **quick(timeout=30.0, flush_timeout=0.2))],
                  log=writer)
        bus.train_begin()
        for epoch in range(3):
            bus.epoch_begin(epoch)
            bus.epoch_end(epoch, {"loss": 1.0})
        start = time.perf_counter()
        with pytest.warns(RunWarning, match=r"3 payload\(s\) still unsent 0\.2s after train_end"):
            bus.train_end()
        with pytest.warns(SinkFailureWarning, match="still pending"):
            bus.close()
        # Waiting for a request rather than the 0.2 s deadline would take the 30 s timeout.
        assert time.perf_counter() - start < 10
        warning = next(r for r in writer.records if r["kind"] == "warning")
        assert "unsent" in warning["message"]

    def test_full_queue_is_one_warning(self, server):
        """Beyond max_pending, epochs are dropped: one warning record, all counted at close."""
        collector = server(hold=True)  # nothing delivered during the run: the queue fills
        writer = RecordingWriter()
        bus = Bus([RemoteMonitor(collector.url, max_pending=1,
                                 **quick(timeout=30.0, flush_timeout=10.0))], log=writer)
        with pytest.warns(SinkFailureWarning, match="dropped"), \
                pytest.warns(RunWarning, match="RemoteMonitor: epoch .* not sent") as shown:
            bus.train_begin({"epochs": 5})
            for epoch in range(5):
                bus.epoch_begin(epoch)
                bus.epoch_end(epoch, {"loss": 1.0, "val_loss": 2.0})
            collector.release.set()  # before train_end, which waits for what is still queued
            bus.train_end()
            bus.close()
        warnings = [r for r in writer.records if r["kind"] == "warning"]
        assert len(warnings) == 1 and warnings[0]["details"]["dropped"] >= 1
        assert len([w for w in shown if w.category is RunWarning]) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(server, status):
    """A server answering with a redirect to another host: nothing reaches that host (not the
    payload, not the X-Api-Key header), and the epoch counts as not delivered, not retried."""
    elsewhere = server()
    collector = server(status=status, location=elsewhere.url + "/stolen")
    writer = RecordingWriter()
    monitor = RemoteMonitor(collector.url, headers={"X-Api-Key": TOKEN}, send_as_json=True,
                            **quick(retries=2))
    bus = Bus([monitor], log=writer)
    with pytest.warns(SinkFailureWarning, match=f"HTTP {status}"), \
            pytest.warns(RunWarning, match=f"HTTP {status}"):
        fit(bus, [0.5, 0.4])
        bus.close()
    assert elsewhere.requests == []
    assert len(collector.requests) == 2  # one request per epoch: a redirect is not retried
    failed = [r for r in writer.records if r["kind"] == "sink_failed"]
    assert f"HTTP {status}" in failed[0]["message"] and "redirect" in failed[0]["message"]
    assert "2 of 2" in failed[-1]["message"] and "failed" in failed[-1]["message"]


def test_log_header_holds_no_secret(tmp_path, down_url):
    """The header of a real log keeps no token: not in the root's userinfo or query, not in the
    path's query or fragment, not in a header value; host, port, path and parameter names stay
    for diagnosis."""
    user, password = "user-tok-1a2b3c", "pw-tok-4d5e6f"
    base = down_url()
    root = base.replace("http://", f"http://{user}:{password}@") + f"?key={TOKEN}"
    monitor = RemoteMonitor(root, path=f"/publish?token={TOKEN}&{TOKEN}#{TOKEN}",
                            headers={"X-Api-Key": TOKEN, "Authorization": f"Bearer {TOKEN}"},
                            **quick(retries=0))
    log = tmp_path / "run.jsonl"
    bus = Bus([monitor], log=str(log))
    # Nothing listens: the epoch is not delivered.
    with pytest.warns(SinkFailureWarning), pytest.warns(RunWarning):
        fit(bus, [0.5])
        bus.close()
    header = read_header(str(log))
    params = header.plugins[0].params
    assert params["root"] == base.replace("http://", "http://***@") + "?key=***"
    assert params["path"] == "/publish?token=***&***"
    assert params["headers"] == {"X-Api-Key": "<redacted>", "Authorization": "<redacted>"}
    text = log.read_text()
    for secret in (TOKEN, user, password):
        assert secret not in text


@pytest.mark.parametrize("headers", [{"X-Api-Key": "a\r\nX-Evil: 1"}, {"Bad Name": "v"},
                                     {"X-Api-Key": 5}, ["X-Api-Key"]])
def test_bad_headers_are_refused(headers):
    """Header names must be tokens, values str without line breaks: a ConfigError naming the
    field when the plugin is built, not a failed request at the first epoch end."""
    with pytest.raises(ConfigError) as info:
        RemoteMonitor("http://127.0.0.1:9", headers=headers)
    assert (info.value.plugin, info.value.field) == ("RemoteMonitor", "headers")


def test_bad_root():
    """A root that is not an http(s) URL is refused at construction."""
    with pytest.raises(ConfigError, match="root"):
        RemoteMonitor("localhost:9000")


def test_no_thread_without_epochs():
    """A monitor that never saw an epoch starts no thread and sends nothing."""
    before = set(threading.enumerate())  # an earlier test's thread may end meanwhile
    bus = Bus([RemoteMonitor("http://127.0.0.1:9")])
    assert set(threading.enumerate()) - before == set()
    bus.close()
