"""What each push sends, and when, decided without a network (the transport is a recorder)."""

from __future__ import annotations

import base64
import logging

import pytest

from pricing.observability import push
from pricing.observability.metrics import PricingMetrics
from pricing.observability.push import MetricsPusher, PushError, _Connection, _grouping_path, function_short_name
from pricing.settings import Settings


class RecordingConnection:
    """Stands in for the keep-alive connection: records requests, answers 200 or raises."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.fail_with: PushError | None = None

    def request(self, method, path, body, deadline):
        if self.fail_with is not None:
            raise self.fail_with
        self.requests.append((method, path, body))
        return 200, b""

    def close(self):
        pass

    def bodies(self) -> dict[str, str]:
        return {path: body.decode() for _, path, body in self.requests}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_pusher(clock, hold=30.0, cap=200, **settings):
    m = PricingMetrics(max_property_labels=cap)
    s = Settings(pushgateway_url="http://127.0.0.1:9", function_name="pricing-ScoreFunction-AB12",
                 metrics_new_series_hold_seconds=hold, **settings)
    p = MetricsPusher(m, s, instance="c0ffee", clock=clock)
    p._conn = RecordingConnection()  # noqa: SLF001
    return m, p


def line_value(body: str, prefix: str) -> float:
    """The value of the one sample line starting with ``prefix`` (name and labels)."""
    found = [ln for ln in body.splitlines() if ln.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return float(found[0].rsplit(" ", 1)[1])


BASE = "/metrics/job/pricing-score/instance/c0ffee"


def test_job_is_the_functions_short_name_and_instance_the_container():
    assert function_short_name("pricing-ScoreFunction-1A2B3C") == "score"
    assert function_short_name("pricing-IngestFunction-X") == "ingest"
    assert function_short_name("learn") == "ingest"
    assert function_short_name("pricing-RetrainFunction-X") == "retrain"
    assert function_short_name("Some Other/Fn") == "some-other-fn"
    assert len(push.container_instance()) == 16


def test_grouping_path_encodes_values_a_path_cannot_carry():
    assert _grouping_path([("job", "pricing-score"), ("property_id", "a b")]) == "/metrics/job/pricing-score/property_id/a%20b"
    encoded = base64.urlsafe_b64encode(b"a/b").decode()
    assert _grouping_path([("property_id", "a/b")]) == f"/metrics/property_id@base64/{encoded}"
    assert _grouping_path([("property_id", "")]) == "/metrics/property_id@base64/="


def test_each_invocation_puts_the_base_group_and_the_touched_property_groups_only(clock):
    m, p = make_pusher(clock)
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
    m.track_model_prediction(property_id="prop-1", model_type="conversion", duration=0.002)
    p.push("req-1")
    assert [(meth, path) for meth, path, _ in p._conn.requests] == [  # noqa: SLF001
        ("PUT", BASE), ("PUT", BASE + "/property_id/prop-1")]
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
    p._conn.requests.clear()  # noqa: SLF001
    p.push("req-2")
    assert [path for _, path, _ in p._conn.requests] == [BASE]  # noqa: SLF001


def test_property_id_lives_in_the_grouping_key_not_in_the_body(clock):
    m, p = make_pusher(clock)
    m.track_model_prediction(property_id="prop-1", model_type="conversion", duration=0.002)
    p.push()
    body = p._conn.bodies()[BASE + "/property_id/prop-1"]  # noqa: SLF001
    assert "property_id" not in body
    assert '# TYPE pricing_model_prediction_seconds histogram' in body
    assert "pricing_model_prediction_seconds_bucket{model_type=\"conversion\",le=\"0.1\"}" in body
    assert "pricing_model_prediction_seconds" not in p._conn.bodies()[BASE]  # noqa: SLF001


def test_no_created_timestamps_are_pushed(clock):
    m, p = make_pusher(clock)
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
    p.push()
    assert "_created" not in p._conn.bodies()[BASE]  # noqa: SLF001


def test_a_new_container_pushes_its_counters_at_zero_first_and_their_values_after_the_hold(clock):
    m, p = make_pusher(clock, hold=30)
    ok = 'pricing_requests_total{method="POST",endpoint="/score",status_code="200"}'
    failed = 'pricing_requests_total{method="POST",endpoint="/score",status_code="500"}'
    latency = 'pricing_api_latency_seconds_count{method="POST",endpoint="/score",status_code="200"}'
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
    p.push()
    body = p._conn.bodies()[BASE]  # noqa: SLF001
    assert (line_value(body, ok), line_value(body, latency), line_value(body, failed)) == (0, 0, 0)
    assert line_value(body, "pricing_uptime_seconds") >= 0  # gauges are not held
    clock.now += 30
    m.track_request(method="POST", endpoint="/score", status_code=500, duration=0.01)
    p.push()
    body = p._conn.bodies()[BASE]  # noqa: SLF001
    # The 500 series was created at cold start, so it was announced with the first push too.
    assert (line_value(body, ok), line_value(body, latency), line_value(body, failed)) == (1, 1, 1)


def test_a_late_born_series_is_pushed_at_zero_until_the_hold_has_passed(clock):
    m, p = make_pusher(clock, hold=30)
    m.track_error(endpoint="/score", error_type="StorageUnavailable")
    p.push()
    series = 'pricing_errors_total{endpoint="/score",error_type="StorageUnavailable"}'
    assert line_value(p._conn.bodies()[BASE], series) == 0  # noqa: SLF001
    clock.now += 10
    p.push()
    assert line_value(p._conn.bodies()[BASE], series) == 0  # noqa: SLF001
    clock.now += 25
    p.push()
    assert line_value(p._conn.bodies()[BASE], series) == 1  # noqa: SLF001


def test_a_held_property_group_is_pushed_again_by_a_later_invocation_that_does_not_touch_it(clock):
    m, p = make_pusher(clock, hold=30)
    m.track_drift(property_id="prop-9", trigger_retrain=True)
    p.push()
    group = BASE + "/property_id/prop-9"
    drift = 'pricing_drift_detected_total{trigger_retrain="true"}'
    assert line_value(p._conn.bodies()[group], drift) == 0  # noqa: SLF001
    clock.now += 5  # before the hold ends: nothing to gain from pushing it again
    p._conn.requests.clear()  # noqa: SLF001
    p.push()
    assert group not in p._conn.bodies()  # noqa: SLF001
    clock.now += 30
    p.push()
    assert line_value(p._conn.bodies()[group], drift) == 1  # noqa: SLF001
    clock.now += 30
    p._conn.requests.clear()  # noqa: SLF001
    p.push()  # published: no longer pending
    assert group not in p._conn.bodies()  # noqa: SLF001


def test_hold_zero_publishes_every_series_at_once(clock):
    m, p = make_pusher(clock, hold=0)
    m.track_drift(property_id="prop-9", trigger_retrain=True)
    p.push()
    body = p._conn.bodies()[BASE + "/property_id/prop-9"]  # noqa: SLF001
    assert line_value(body, 'pricing_drift_detected_total{trigger_retrain="true"}') == 1


def test_gauges_are_never_held(clock):
    m, p = make_pusher(clock, hold=30)
    m.track_competitor_fetch(property_id="p", status="success", staleness_seconds=120)
    p.push()
    body = p._conn.bodies()[BASE + "/property_id/p"]  # noqa: SLF001
    assert line_value(body, "pricing_competitor_staleness_seconds") == 120


def test_push_size_does_not_grow_with_the_properties_served(clock):
    m, p = make_pusher(clock, cap=10_000)

    def invocation(prop: str) -> int:
        m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
        m.track_model_prediction(property_id=prop, model_type="conversion", duration=0.002)
        m.track_competitor_fetch(property_id=prop, status="success", staleness_seconds=5)
        return p.push().bytes

    after_one = invocation("prop-0")
    for i in range(1, 2000):
        invocation(f"prop-{i}")
    after_many = invocation("prop-2000")
    assert after_many / after_one <= 1.5


def test_a_failed_push_is_counted_logged_with_the_request_id_and_swallowed(clock, caplog):
    m, p = make_pusher(clock, hold=0)
    p._conn.fail_with = PushError("connection", "refused")  # noqa: SLF001
    m.track_model_prediction(property_id="prop-1", model_type="conversion", duration=0.002)
    with caplog.at_level(logging.WARNING, logger="pricing.observability.push"):
        stats = p.push("req-42")
    assert not stats.ok
    assert m.registry.get_sample_value("pricing_metrics_push_failures_total", {"reason": "connection"}) == 1
    assert any("req-42" in r.getMessage() and getattr(r, "request_id", None) == "req-42" for r in caplog.records)
    p._conn.fail_with = None  # noqa: SLF001
    p.push("req-43")  # the untouched property group is pushed once the gateway is back
    assert BASE + "/property_id/prop-1" in p._conn.bodies()  # noqa: SLF001
    assert line_value(p._conn.bodies()[BASE], 'pricing_metrics_push_failures_total{reason="connection"}') == 1  # noqa: SLF001


def test_after_a_timeout_pushes_back_off_instead_of_paying_the_timeout_each_time(clock):
    m, p = make_pusher(clock)
    p._conn.fail_with = PushError("timeout", "read timed out")  # noqa: SLF001
    p.push()
    p._conn.fail_with = None  # noqa: SLF001
    clock.now += 0.5
    p.push()
    assert p._conn.requests == []  # noqa: SLF001
    assert m.registry.get_sample_value("pricing_metrics_push_failures_total", {"reason": "backoff"}) == 1
    clock.now += 1
    p.push()
    assert [path for _, path, _ in p._conn.requests] == [BASE]  # noqa: SLF001


def test_an_unexpected_error_inside_push_never_reaches_the_invocation(clock):
    m, p = make_pusher(clock)
    p._conn.request = lambda *a: 1 / 0  # noqa: SLF001
    assert p.push("req").ok is False


def test_authorization_header_from_settings():
    basic = _Connection(Settings(pushgateway_url="http://pg:9091", pushgateway_username="u", pushgateway_password="p"))
    assert basic.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    bearer = _Connection(Settings(pushgateway_url="https://pg/prefix/", pushgateway_bearer_token="t0k"))
    assert bearer.headers["Authorization"] == "Bearer t0k"
    assert (bearer.https, bearer.port, bearer.prefix) == (True, 443, "/prefix")


def test_without_a_pushgateway_url_nothing_is_pushed(monkeypatch):
    calls = []
    monkeypatch.setattr(push, "_pusher_for", lambda *a: calls.append(a))
    push.push_invocation_metrics("req", settings=Settings(pushgateway_url=""))
    assert calls == []


def test_decorator_pushes_after_the_handler_returns_or_raises_with_the_request_id(monkeypatch):
    pushed = []
    monkeypatch.setattr(push, "push_invocation_metrics", lambda request_id=None, **kw: pushed.append(request_id))
    monkeypatch.setattr(push, "_current_request_id", lambda: None)  # no request bound by middleware

    @push.pushes_metrics
    def ok(event, context):
        return {"statusCode": 200}

    @push.pushes_metrics(function="ingest")
    def boom(event, context):
        raise ValueError("handler bug")

    class Context:
        aws_request_id = "lambda-req"

    assert ok({"requestContext": {"requestId": "apigw-req"}}, Context()) == {"statusCode": 200}
    with pytest.raises(ValueError):
        boom({"headers": {"X-Request-ID": "caller-req"}}, Context())
    ok({}, Context())
    assert pushed == ["apigw-req", "caller-req", "lambda-req"]


def test_every_pushed_body_is_valid_text_format_with_one_type_per_family(clock):
    from prometheus_client.parser import text_string_to_metric_families

    m, p = make_pusher(clock, hold=0)
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
    m.track_retraining(property_id='odd "id"\\n', model_type="conversion", status="failed", duration=2.0)
    m.track_competitor_fetch(property_id="p", status="success", staleness_seconds=1.5)
    m.set_service_info(version="1", environment="test", service="pricing-score")
    p.push()
    # The parser names a counter family without its _total; an info family is pushed as a gauge.
    expected = {(f.name.removesuffix("_total") if f.kind == "counter" else f.name):
                ("gauge" if f.kind == "info" else f.kind) for f in m.families}
    for body in p._conn.bodies().values():  # noqa: SLF001
        families = list(text_string_to_metric_families(body))
        assert families
        for family in families:
            assert expected[family.name] == family.type, family.name


# ---------------------------------------------------------------------- the container's pusher:
# pushes written, answers read by the next push


class PipelinedConnection:
    """Stands in for the kept-alive connection as the container's pusher uses it: requests are
    written and answered when the test says so (``answer``), or never; ``hang_up`` is the other
    side closing the connection."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.writes = 0
        self.released: list[push._Answer] = []
        self.unanswered = 0
        self.connected = False
        self.closed = False
        self.opened = 0
        self.waits: list[float | None] = []  # what each poll was allowed to wait until

    def send(self, requests, deadline):
        fresh = not self.connected
        self.opened += fresh
        self.connected = True
        self.requests += requests
        self.writes += 1
        self.unanswered += len(requests)
        return fresh

    def answer(self, *statuses: int) -> None:
        self.released += [push._Answer(status, b"refused" if status >= 300 else b"", False) for status in statuses]

    def poll(self, wait_until=None):
        self.waits.append(wait_until)
        if self.closed:
            return []
        n = min(len(self.released), self.unanswered)
        answers, self.released = self.released[:n], self.released[n:]
        self.unanswered -= n
        return answers

    def hang_up(self) -> None:
        self.closed = True

    def close(self):
        self.connected = self.closed = False
        self.released, self.unanswered = [], 0

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def bodies(self) -> dict[str, str]:
        return {path: body.decode() for _, path, body in self.requests}


def make_container_pusher(clock, hold=0.0, **settings):
    m = PricingMetrics(max_property_labels=200)
    s = Settings(pushgateway_url="http://127.0.0.1:9", function_name="pricing-ScoreFunction-AB12",
                 metrics_new_series_hold_seconds=hold, pushgateway_timeout_seconds=0.25, **settings)
    p = MetricsPusher(m, s, instance="c0ffee", clock=clock, deferred=True)
    conn = PipelinedConnection()
    p._conn = conn  # noqa: SLF001
    return m, p, conn


def score(m: PricingMetrics, prop: str | None = None) -> None:
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
    if prop is not None:
        m.track_model_prediction(property_id=prop, model_type="conversion", duration=0.002)


def failures(m: PricingMetrics, reason: str) -> float:
    return m.registry.get_sample_value("pricing_metrics_push_failures_total", {"reason": reason})


REQUESTS_OK = 'pricing_requests_total{method="POST",endpoint="/score",status_code="200"}'


def test_the_container_pusher_writes_its_push_and_reads_the_answers_at_the_next_push(clock):
    m, p, conn = make_container_pusher(clock)
    score(m, "prop-1")
    stats = p.push("req-1")
    assert (stats.ok, stats.requests, stats.folded) == (True, 2, False)
    assert conn.paths() == [BASE, BASE + "/property_id/prop-1"]
    assert p.awaiting_answer
    conn.answer(200, 200)
    clock.now += 1
    score(m)
    p.push("req-2")
    assert conn.paths()[2:] == [BASE]  # prop-1 was accepted: not owed any more
    assert conn.waits and all(w is None for w in conn.waits)  # never waited for an answer
    assert failures(m, "timeout") == failures(m, "http_4xx") == 0


def test_a_refused_push_is_counted_by_the_next_push_logged_with_the_request_id_that_sent_it(clock, caplog):
    m, p, conn = make_container_pusher(clock)
    score(m, "prop-1")
    p.push("req-1")
    conn.answer(200, 400)  # the property group is refused
    clock.now += 1
    score(m)
    with caplog.at_level(logging.WARNING, logger="pricing.observability.push"):
        p.push("req-2")
    assert failures(m, "http_4xx") == 1
    [record] = [r for r in caplog.records if "HTTP 400" in r.getMessage()]
    assert record.request_id == "req-1" and "req-1" in record.getMessage()
    # The refused group is owed: req-2's push carries it though req-2 did not touch it.
    assert conn.paths()[2:] == [BASE, BASE + "/property_id/prop-1"]
    conn.answer(200, 200)
    clock.now += 1
    p.push("req-3")
    assert failures(m, "http_4xx") == 1  # one failure per push, counted once
    assert conn.paths()[4:] == [BASE]


def test_a_push_finding_its_predecessor_unanswered_is_folded_into_the_next_written_one(clock):
    m, p, conn = make_container_pusher(clock)
    score(m, "prop-1")
    p.push("req-1")
    clock.now += 0.01
    score(m, "prop-1")
    score(m, "prop-2")
    folded = p.push("req-2")  # req-1's answers have not arrived
    assert folded.folded and folded.ok and folded.requests == 0
    assert conn.writes == 1 and p.folded == 1
    conn.answer(200, 200)
    clock.now += 0.01
    score(m)
    p.push("req-3")
    # prop-1 was recorded into after req-1's push was written: accepting that push does not
    # settle it. Both groups req-2 touched go with req-3's push, with the newest totals.
    assert conn.writes == 2
    assert sorted(conn.paths()[2:]) == [BASE, BASE + "/property_id/prop-1", BASE + "/property_id/prop-2"]
    assert line_value(conn.bodies()[BASE], REQUESTS_OK) == 4
    prediction_count = 'pricing_model_prediction_seconds_count{model_type="conversion"}'
    assert line_value(conn.bodies()[BASE + "/property_id/prop-1"], prediction_count) == 2


def test_a_gateway_that_accepts_but_never_answers_costs_no_wait_and_is_tried_once_per_backoff_period(clock):
    m, p, conn = make_container_pusher(clock)
    outcomes = []
    for _ in range(700):  # 70 s of ten invocations a second
        score(m, "prop-1")
        stats = p.push()
        outcomes.append(stats)
        clock.now += 0.1
    assert all(w is None for w in conn.waits)  # no invocation ever waited for an answer
    writes = conn.writes
    # Written, then overdue after the timeout, then the back-off: 1, 2, 4, 8, 16, 30, 30 s.
    assert writes == 7
    assert failures(m, "timeout") == writes - p.awaiting_answer
    # Every push is accounted for: written (then timed out, or the last one still out),
    # skipped for the back-off, or folded while one was out.
    assert writes + failures(m, "backoff") + p.folded == len(outcomes)
    assert conn.opened == writes  # each attempt on a new connection: a late answer is never misread


def test_a_zero_counts_as_announced_only_once_a_push_carrying_it_was_accepted(clock):
    m, p, conn = make_container_pusher(clock, hold=30)
    score(m)
    p.push("req-1")
    assert line_value(conn.bodies()[BASE], REQUESTS_OK) == 0
    conn.answer(503)  # the zero never reached the Pushgateway
    clock.now += 31
    p.push("req-2")
    assert failures(m, "http_5xx") == 1
    assert line_value(conn.bodies()[BASE], REQUESTS_OK) == 0  # still held: announced now
    conn.answer(200)
    clock.now += 31
    p.push("req-3")
    assert line_value(conn.bodies()[BASE], REQUESTS_OK) == 1


def test_a_kept_alive_connection_closed_unanswered_is_reopened_without_a_failure_but_a_new_one_is_not(clock, caplog):
    m, p, conn = make_container_pusher(clock)
    score(m)
    p.push("req-1")  # opens the connection
    conn.answer(200)
    clock.now += 1
    score(m, "prop-1")
    p.push("req-2")  # on the kept-alive connection
    conn.hang_up()  # e.g. the other side gave up on it while the container was frozen
    clock.now += 1
    p.push("req-3")
    assert sum(failures(m, r) for r in ("connection", "timeout")) == 0
    assert conn.opened == 2
    assert conn.paths()[3:] == [BASE, BASE + "/property_id/prop-1"]  # req-2's groups go again
    conn.hang_up()  # and now a connection opened for the push closes without answering
    clock.now += 1
    with caplog.at_level(logging.WARNING, logger="pricing.observability.push"):
        p.push("req-4")
    assert failures(m, "connection") == 1
    assert any(getattr(r, "request_id", None) == "req-3" for r in caplog.records)


def test_a_pusher_that_waits_gives_the_answers_the_timeout(clock):
    m = PricingMetrics()
    s = Settings(pushgateway_url="http://127.0.0.1:9", function_name="score",
                 metrics_new_series_hold_seconds=0, pushgateway_timeout_seconds=0.25)
    p = MetricsPusher(m, s, instance="c0ffee", clock=clock)
    p._conn = conn = PipelinedConnection()  # noqa: SLF001
    score(m)
    stats = p.push("req-1")  # never answered
    assert not stats.ok and failures(m, "timeout") == 1
    assert conn.waits[-1] is not None  # it waited, up to the deadline
    assert not p.awaiting_answer


def test_last_push_stats_say_how_many_pushes_were_folded_and_whether_one_awaits_answers(monkeypatch, clock):
    m, p, conn = make_container_pusher(clock)
    monkeypatch.setattr(push, "_pusher", p)
    score(m)
    p.push()
    p.push()
    stats = push.last_push_stats()
    assert (stats["requests"], stats["folded_pushes"], stats["awaiting_answer"]) == (1, 1, True)


# ---------------------------------------------------------------------- the wire


def answers_of(data: bytes, eof: bool = False) -> list[tuple[int, bytes, bool]]:
    buf = bytearray(data)
    found = []
    while (parsed := push._parse_answer(buf, eof)) is not None:
        answer, used = parsed
        del buf[:used]
        found.append(tuple(answer))
    return found


OK = b"HTTP/1.1 200 OK\r\nDate: Thu, 26 Nov 2026 23:37:00 GMT\r\nContent-Length: 0\r\n\r\n"


def test_pipelined_answers_are_taken_in_order_however_the_bytes_arrive():
    refused = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nnope\n"
    stream = OK + refused + OK
    assert answers_of(stream) == [(200, b"", False), (400, b"nope\n", False), (200, b"", False)]
    buf, seen = bytearray(), []
    for byte in stream:  # one byte at a time: an answer is taken only once complete
        buf.append(byte)
        while (parsed := push._parse_answer(buf, False)) is not None:
            seen.append(parsed[0].status)
            del buf[:parsed[1]]
    assert seen == [200, 400, 200] and not buf


def test_answer_bodies_by_length_by_chunks_or_to_the_end_and_the_closing_ones():
    chunked = (b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\nbad \r\n6;x=1\r\nthings\r\n0\r\n\r\n")
    assert answers_of(chunked + OK) == [(500, b"bad things", False), (200, b"", False)]
    assert answers_of(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)[1] == (200, b"", False)
    closing = b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert answers_of(closing) == [(401, b"", True)]
    unsized = b"HTTP/1.0 200 OK\r\n\r\nall of it"
    assert answers_of(unsized) == []  # runs to the end of the connection...
    assert answers_of(unsized, eof=True) == [(200, b"all of it", True)]  # ...which has come
    with pytest.raises(ValueError):
        answers_of(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_a_real_socket_gets_pipelined_answers_without_blocking_and_notices_the_other_side_closing():
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = bytearray()

    def gateway() -> None:  # reads two requests, answers both in one write, then hangs up
        peer, _ = listener.accept()
        with peer:
            while received.count(b"x_total 1\n") < 2:
                received.extend(peer.recv(65536))
            peer.sendall(OK + OK)
            peer.recv(1)  # until the client has read the answers and asks for nothing more

    server = threading.Thread(target=gateway, daemon=True)
    server.start()
    conn = _Connection(Settings(pushgateway_url=f"http://127.0.0.1:{port}/gw", pushgateway_username="u",
                                pushgateway_password="p"))
    try:
        import time as clock_module

        deadline = clock_module.monotonic() + 10
        assert conn.send([("PUT", "/metrics/job/a", b"x_total 1\n"), ("PUT", "/metrics/job/b", b"x_total 1\n")],
                         deadline) is True
        answers = []
        while len(answers) < 2 and clock_module.monotonic() < deadline:
            answers += conn.poll()  # never blocks: empty until the answers are in
        assert [a.status for a in answers] == [200, 200] and conn.unanswered == 0
        head = bytes(received).split(b"\r\n\r\n")[0].decode()
        assert head.startswith("PUT /gw/metrics/job/a HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{port}" in head and "Authorization: Basic" in head
        conn.close()
        server.join(10)
        assert not conn.connected
    finally:
        conn.close()
        listener.close()


def test_an_idle_kept_alive_connection_closed_by_the_other_side_is_noticed_before_the_next_push():
    import socket
    import threading
    import time as clock_module

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def gateway() -> None:  # answers one request, then closes the connection
        peer, _ = listener.accept()
        with peer:
            data = b""
            while b"\r\n\r\n" not in data:
                data += peer.recv(65536)
            peer.sendall(OK)

    server = threading.Thread(target=gateway, daemon=True)
    server.start()
    conn = _Connection(Settings(pushgateway_url=f"http://127.0.0.1:{port}"))
    try:
        deadline = clock_module.monotonic() + 10
        conn.send([("PUT", "/metrics/job/a", b"")], deadline)
        assert [a.status for a in conn.poll(wait_until=deadline)] == [200]
        server.join(10)
        while not conn.closed and clock_module.monotonic() < deadline:
            conn.poll()  # nothing in flight: only looks whether the other side is gone
        assert conn.closed
    finally:
        conn.close()
        listener.close()
