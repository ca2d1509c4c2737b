"""sinks.http: HttpSender and HttpRecordSink against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import Bus, RunWarning, SinkFailureWarning
from eventbus.errors import ConfigError
from eventbus.records import decode_nonfinite
from eventbus.testing import RecordingWriter, same
from sinks.http import DeliveryError, HttpRecordSink, HttpSender, redact_url

from hypothesis_profiles import FILES, examples

TOKEN = "s3cr3t-token-value"


def records_of(collector) -> list[dict]:
    """Every record a collector received, decoded from the JSON Lines bodies."""
    lines = [line for _, _, body in collector.requests for line in body.splitlines()]
    return [decode_nonfinite(orjson.loads(line)) for line in lines]


def short_run(bus, losses):
    bus.train_begin({"epochs": len(losses)})
    for epoch, loss in enumerate(losses):
        bus.epoch_begin(epoch)
        for b in range(3):
            bus.batch_begin(b)
            bus.batch_end(b, {"loss": loss})
        bus.epoch_end(epoch, {"loss": loss})
    bus.train_end()


def undelivered():
    """The warning record the sink reports once records failed to go out: a test of a collector
    that fails expects it."""
    return pytest.warns(RunWarning, match=r"http sink: \d+ record\(s\) undelivered so far")


def fast(**kwargs):
    return dict({"timeout": 1.0, "retries": 2, "backoff": 0.01, "flush_timeout": 5.0,
                 "linger": 0.05}, **kwargs)


class TestRecordSink:
    @examples(FILES, function_fixture=True)  # a loopback server and HTTP per example
    @given(losses=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1,
                           max_size=4),
           batch_size=st.integers(1, 20))
    def test_collector_receives_every_record(self, server, losses, batch_size):
        """Property: the collector receives exactly the records the log holds, in order."""
        collector = server()
        memory = RecordingWriter()
        sink = HttpRecordSink(collector.url + "/records", batch_size=batch_size, **fast())
        bus = Bus([], log=[memory, sink])
        short_run(bus, losses)
        bus.close()
        received = records_of(collector)
        assert same(received, [dict(r) for r in memory.records])
        assert [r["seq"] for r in received] == sorted(r["seq"] for r in received)
        assert all(len(body.splitlines()) <= batch_size for _, _, body in collector.requests)
        path, headers, _ = collector.requests[0]
        assert path == "/records" and headers["Content-Type"] == "application/x-ndjson"

    def test_the_bodies_are_the_lines_of_a_log(self, server, tmp_path):
        """Byte for byte the lines a .jsonl log of the run holds: a string that spells NaN is
        escaped as the log escapes it, so a collector reading with the log's reader gets it
        back a string."""
        from eventbus import read_log
        from eventbus.records import Warning as WarningRecord

        collector = server()
        sink = HttpRecordSink(collector.url + "/records", **fast())
        details = {"note": "NaN", "escaped": "~Infinity", "real": float("nan")}
        with pytest.warns(RunWarning, match="spelled"), \
                Bus([], log=[tmp_path / "run.jsonl", sink], run_id="spelled") as bus:
            bus.record(WarningRecord(message="spelled", details=details))
            bus.record(WarningRecord(message="spelled", details={"note": "NaN"}))
        sent = b"".join(body for _, _, body in collector.requests)
        assert sent == (tmp_path / "run.jsonl").read_bytes()
        warnings = [r for r in read_log(tmp_path / "run.jsonl") if r.kind == "warning"]
        assert [w.details["note"] for w in warnings] == ["NaN", "NaN"]
        assert warnings[0].details["escaped"] == "~Infinity"

    def test_headers_are_sent(self, server):
        """Custom headers reach the server with every request."""
        collector = server()
        sink = HttpRecordSink(collector.url, headers={"Authorization": f"Bearer {TOKEN}"},
                              **fast())
        bus = Bus([], log=[sink])
        short_run(bus, [0.5])
        bus.close()
        assert all(h["Authorization"] == f"Bearer {TOKEN}" for _, h, _ in collector.requests)

    def test_write_does_not_wait_for_a_slow_server(self, server):
        """Writes (and flush, which hands records to the sender) return while the server has
        answered nothing; everything is delivered once it answers."""
        collector = server(hold=True)  # answers nothing until released
        sink = HttpRecordSink(collector.url, batch_size=1000, **fast(timeout=30.0))
        start = time.perf_counter()
        for seq in range(2000):
            sink.write({"seq": seq, "kind": "batch_end"})
            if seq % 100 == 0:
                sink.flush()
        # A write that waited for an answer would have waited the whole 30 s timeout.
        assert time.perf_counter() - start < 10
        collector.release.set()
        sink.close()
        assert sink.stats.sent == 2000

    def test_retries_after_5xx(self, server):
        """Two 500 answers, then success: everything is delivered, retries are counted."""
        collector = server(fail_first=2)
        sink = HttpRecordSink(collector.url, batch_size=1000, **fast(retries=3))
        bus = Bus([], log=[sink])
        short_run(bus, [0.5])
        bus.close()
        assert sink.stats.undelivered == 0 and sink.stats.retries >= 2

    def test_server_error_is_recorded_and_raised_at_close(self, server):
        """A collector answering 500: sink_failed in the log, DeliveryError at close, no token."""
        collector = server(status=500)
        memory = RecordingWriter()
        sink = HttpRecordSink(collector.url + f"/r?token={TOKEN}",
                              headers={"Authorization": TOKEN}, **fast(retries=1))
        bus = Bus([], log=[memory, sink])
        with pytest.warns(SinkFailureWarning, match="not delivered"), undelivered():
            short_run(bus, [0.5, 0.4])
            bus.epoch_begin(2)  # the next event records what the sender reported
            bus.close()
        failed = [r for r in memory.records if r["kind"] == "sink_failed"]
        assert failed and failed[0]["sink"] == "http" and "HTTP 500" in failed[0]["message"]
        warnings = [r for r in memory.records if r["kind"] == "warning"]
        assert warnings and warnings[0]["details"]["failed"] > 0
        assert TOKEN not in orjson.dumps(memory.records).decode()
        assert TOKEN not in str(bus.failures)
        assert len(collector.requests) <= 2 * 2  # bounded: 2 tries per request

    def test_userinfo_token_is_not_recorded(self, down_url):
        """A token passed as the URL's user name (https://<token>@host/) is in no record, no
        failure and no repr of the sink."""
        url = down_url("/records").replace("http://", f"http://{TOKEN}@") + f"?k={TOKEN}"
        sink = HttpRecordSink(url, **fast(retries=0))
        memory = RecordingWriter()
        bus = Bus([], log=[memory, sink])
        with pytest.warns(SinkFailureWarning), undelivered():
            short_run(bus, [0.5])
            bus.close()
        assert any(r["kind"] == "sink_failed" for r in memory.records)
        assert TOKEN not in orjson.dumps(memory.records).decode()
        assert TOKEN not in str(bus.failures) and TOKEN not in repr(sink)

    def test_server_down(self, down_url):
        """Connection refused: training goes on, the loss is counted and raised at close."""
        sink = HttpRecordSink(down_url("/records"), **fast(retries=1))
        memory = RecordingWriter()
        bus = Bus([], log=[memory, sink])
        with pytest.warns(SinkFailureWarning, match="ConnectionError"), undelivered():
            short_run(bus, [0.5])
            bus.close()
        assert sink.stats.sent == 0
        assert sink.stats.undelivered == len(memory.records)
        assert any(r["kind"] == "sink_failed" for r in memory.records)

    def test_a_redirecting_collector_gets_no_record_delivered(self, server):
        """A collector answering 307 to another host: the records are counted as undelivered,
        close raises, and the other host sees no request."""
        elsewhere = server()
        collector = server(status=307, location=elsewhere.url + "/records")
        memory = RecordingWriter()
        sink = HttpRecordSink(collector.url, headers={"Authorization": TOKEN}, **fast())
        bus = Bus([], log=[memory, sink])
        with pytest.warns(SinkFailureWarning, match="not delivered"), undelivered():
            short_run(bus, [0.5])
            bus.close()
        assert elsewhere.requests == []
        assert sink.stats.sent == 0 and sink.stats.failed == len(memory.records)
        assert sink.stats.retries == 0

    def test_timeout_on_a_slow_server(self, server):
        """A server slower than the timeout: the request times out, is retried, then fails."""
        collector = server(delay=0.5)
        sink = HttpRecordSink(collector.url, **fast(timeout=0.1, retries=1))
        sink.write({"seq": 1})
        with pytest.raises(DeliveryError, match="1 of 1 record"), \
                pytest.warns(UserWarning, match="ReadTimeout"):
            sink.close()
        assert sink.stats.failed == 1 and sink.stats.requests == 2

    def test_bounded_buffer_counts_drops(self, server):
        """Beyond max_pending, records are dropped and counted, and close says so."""
        collector = server()
        sink = HttpRecordSink(collector.url, max_pending=3, **fast(linger=60.0))
        for seq in range(10):
            sink.write({"seq": seq})
        with pytest.raises(DeliveryError, match="7 dropped"):
            sink.close()
        assert [r["seq"] for r in records_of(collector)] == [0, 1, 2]

    def test_close_gives_up_at_the_deadline(self, server):
        """With a server that does not answer by the deadline, close returns then, not when a
        request times out, and counts the rest."""
        collector = server(hold=True)  # answers nothing until the test is over
        sink = HttpRecordSink(collector.url, batch_size=1,
                              **fast(timeout=30.0, flush_timeout=0.2))
        for seq in range(5):
            sink.write({"seq": seq})
        sink.flush()
        start = time.perf_counter()
        with pytest.raises(DeliveryError, match="still pending"):
            sink.close()
        # Waiting for the request rather than the 0.2 s deadline would take the 30 s timeout.
        assert time.perf_counter() - start < 10
        assert sink.stats.sent == 0 and sink.stats.abandoned == 5


class TestRecordSinkConfig:
    @pytest.mark.parametrize(("kwargs", "field"), [
        ({"timeout": "5"}, "timeout"), ({"timeout": float("inf")}, "timeout"),
        ({"flush_timeout": "x"}, "flush_timeout"), ({"flush_timeout": -1}, "flush_timeout"),
        ({"flush_timeout": float("inf")}, "flush_timeout"),
        ({"batch_size": True}, "batch_size"), ({"batch_size": 2.0}, "batch_size"),
        ({"max_pending": 0}, "max_pending"), ({"retries": 1.5}, "retries"),
        ({"backoff": -0.1}, "backoff"), ({"max_backoff": -1}, "max_backoff"),
        ({"linger": "1"}, "linger"), ({"linger": -1}, "linger"),
        ({"linger": float("nan")}, "linger"), ({"headers": {"X-Token": 5}}, "headers"),
        ({"headers": {"X-Token": "a\r\nX-Evil: 1"}}, "headers"),
        ({"headers": {"Bad Name": "v"}}, "headers"), ({"headers": "Authorization"}, "headers"),
    ])
    def test_every_parameter_is_checked(self, kwargs, field):
        """Each bad parameter is a ConfigError naming the field (a string timeout used to be a
        TypeError, and the others were accepted), and no thread is started."""
        before = set(threading.enumerate())  # a thread an earlier test left may end meanwhile
        with pytest.raises(ConfigError) as info:
            HttpRecordSink("http://127.0.0.1:9/records", **kwargs)
        assert info.value.field == field and field in str(info.value)
        assert set(threading.enumerate()) - before == set()

    def test_a_header_value_is_never_shown(self):
        """A header value with a line break is refused without echoing the value (a token)."""
        with pytest.raises(ConfigError) as info:
            HttpRecordSink("http://127.0.0.1:9/", headers={"X-Token": f"{TOKEN}\n"})
        assert TOKEN not in str(info.value)


class TestIdle:
    @pytest.mark.parametrize("linger", [0, 0.0001])
    def test_an_idle_sender_costs_no_cpu(self, server, linger):
        """With linger=0 (or tiny), the sender thread sleeps while nothing is pending: the
        process uses almost no CPU over half a second idle (it used to spin a core)."""
        collector = server()
        sink = HttpRecordSink(collector.url, **fast(linger=linger))
        time.sleep(0.1)
        start = time.process_time()
        time.sleep(0.5)
        used = time.process_time() - start
        sink.write({"seq": 1})
        sink.flush()  # still delivered promptly
        deadline = time.monotonic() + 5.0
        while not collector.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        sink.close()
        assert used < 0.1, f"{used:.3f} s of CPU in 0.5 s idle"
        assert [r["seq"] for r in records_of(collector)] == [1]

    def test_linger_batches_what_arrives_together(self, server):
        """A lazy sender still gathers items for `linger` seconds into one request."""
        collector = server()
        sender = HttpSender(collector.url, encode=lambda items: b"".join(items), eager=False,
                            batch_size=100, linger=0.2)
        for seq in range(5):
            sender.put(orjson.dumps({"seq": seq}) + b"\n")
        time.sleep(0.6)
        assert len(collector.requests) == 1 and len(records_of(collector)) == 5
        sender.close(5.0)


class TestSender:
    def test_4xx_is_not_retried(self, server):
        """A 400 answer will not change on a retry: one request, counted as failed."""
        collector = server(status=400)
        failures = []
        sender = HttpSender(collector.url, encode=lambda items: items[0], retries=3,
                            backoff=0.01, on_failure=lambda *a: failures.append(a))
        sender.put(b"{}")
        stats = sender.close(5.0)
        assert (stats.failed, stats.requests, len(collector.requests)) == (1, 1, 1)
        assert failures[0][0] == "HTTPError" and "HTTP 400" in failures[0][1]

    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    def test_a_redirect_is_a_failed_delivery(self, server, status):
        """A 3xx answer pointing at another host is not followed: that host receives nothing
        (no body, no header), the item counts as failed, and it is not retried."""
        elsewhere = server()
        collector = server(status=status, location=elsewhere.url + "/stolen")
        failures = []
        sender = HttpSender(collector.url, encode=lambda items: items[0], retries=3,
                            backoff=0.01, headers={"X-Api-Key": TOKEN},
                            on_failure=lambda *a: failures.append(a))
        sender.put(b'{"secret": 1}')
        stats = sender.close(5.0)
        assert elsewhere.requests == []
        assert (stats.sent, stats.failed, stats.requests) == (0, 1, 1)
        assert failures[0][0] == "HTTPError" and f"HTTP {status}" in failures[0][1]

    def test_an_outage_is_reported_once(self, down_url):
        """Failures in a row are reported once (the first), and all of them counted."""
        failures = []
        sender = HttpSender(down_url("/records"), encode=lambda items: items[0], retries=0,
                            on_failure=lambda *a: failures.append(a))
        for _ in range(3):
            sender.put(b"{}")
        stats = sender.close(5.0)
        assert stats.failed == 3 and len(failures) == 1

    def test_flush_waits_for_delivery(self, server):
        """flush returns True once everything is delivered."""
        collector = server(delay=0.05)
        sender = HttpSender(collector.url, encode=lambda items: b"".join(items), batch_size=2)
        for _ in range(4):
            sender.put(b"x")
        assert sender.flush(5.0) and sender.pending == 0
        assert sender.close(5.0).sent == 4

    def test_repr_has_no_secrets(self):
        """Neither the query string nor headers show in the sender's repr."""
        sender = HttpSender(f"http://127.0.0.1:9/x?key={TOKEN}", encode=bytes,
                            headers={"X-Token": TOKEN})
        assert TOKEN not in repr(sender)
        sender.close(1.0)

    @pytest.mark.parametrize(("kwargs", "field"), [
        ({"url": "ftp://127.0.0.1/"}, "url"), ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"), ({"retries": -1}, "retries"),
        ({"timeout": 0}, "timeout"), ({"timeout": "5"}, "timeout"),
        ({"max_backoff": -1}, "max_backoff"), ({"backoff": float("nan")}, "backoff"),
        ({"eager": "no"}, "eager"), ({"linger": -0.5}, "linger"),
        ({"encode": None}, "encode"), ({"on_failure": 5}, "on_failure"),
        ({"content_type": ""}, "content_type"), ({"headers": [("a", "b")]}, "headers")])
    def test_bad_configuration(self, kwargs, field):
        """Bad settings are refused, naming the field, before a thread starts."""
        options = {"url": "http://127.0.0.1:9/", "encode": bytes, **kwargs}
        before = set(threading.enumerate())  # an earlier test's thread may end meanwhile
        with pytest.raises(ConfigError) as info:
            HttpSender(options.pop("url"), **options)
        assert info.value.field == field and field in str(info.value)
        assert set(threading.enumerate()) - before == set()


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pw@127.0.0.1:8080/p?token=abc&x=1", "http://***@127.0.0.1:8080/p?token=***&x=***"),
    ("https://127.0.0.1/publish/epoch/end/", "https://127.0.0.1/publish/epoch/end/"),
    (f"https://{TOKEN}@127.0.0.1/", "https://***@127.0.0.1/"),
    (f"http://127.0.0.1/p?{TOKEN}&a=1#frag={TOKEN}", "http://127.0.0.1/p?***&a=***"),
    (f"/publish?token={TOKEN}", "/publish?token=***"),
    ("http://[::1]:9000/p", "http://[::1]:9000/p"),
    ("http://127.0.0.1:99999999/", "<unparseable URL>"),
])
def test_redact_url(url, shown):
    """Userinfo (user name included: it may be a token), query values, query items without a
    value and the fragment are masked; the rest of the URL is kept for diagnosis."""
    assert redact_url(url) == shown
    assert TOKEN not in redact_url(url)
