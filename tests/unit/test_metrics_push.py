"""What each push sends, and when, decided without a network (the transport is a stand-in)."""

from __future__ import annotations

import logging

import pytest

from pricing.observability import exposition, push
from pricing.observability.metrics import PricingMetrics
from pricing.observability.push import MetricsPusher, PushError, function_short_name
from pricing.observability.wire import Answer
from pricing.settings import Settings
from tests.support import promproto

BASE = "/metrics/job/pricing-score/instance/c0ffee"
PROP1 = BASE + "/property_id/prop-1"
SCORE_OK = dict(method="POST", endpoint="/score", status_code="200")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


class PipelinedConnection:
    """Stands in for the kept-alive connection: requests are written and answered when the test
    says so (``answer``), or never; ``hang_up`` is the other side closing the connection;
    ``fail_with`` makes the next write fail."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.writes = 0
        self.released: list[Answer] = []
        self.unanswered = 0
        self.connected = False
        self.closed = False
        self.opened = 0
        self.fail_with: PushError | None = None
        self.waits: list[float | None] = []

    def send(self, requests, deadline):
        if self.fail_with is not None:
            raise self.fail_with
        fresh = not self.connected
        self.opened += fresh
        self.connected = True
        self.requests += requests
        self.writes += 1
        self.unanswered += len(requests)
        return fresh

    def answer(self, *statuses: int) -> None:
        self.released += [Answer(status, b"refused" if status >= 300 else b"", False) for status in statuses]

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

    def last(self, path: str) -> bytes:
        return [body for _, p, body in self.requests if p == path][-1]


def make_pusher(clock, cap=200, wait=False, **settings):
    m = PricingMetrics(max_property_labels=cap)
    s = Settings(
        pushgateway_url="http://127.0.0.1:9", function_name="pricing-ScoreFunction-AB12", pushgateway_timeout_seconds=0.25, **settings
    )
    conn = PipelinedConnection()
    p = MetricsPusher(m, s, instance="c0ffee", clock=clock, wait_for_answers=wait, transport=conn)
    return m, p, conn


def score(m: PricingMetrics, prop: str | None = None) -> None:
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
    if prop is not None:
        m.track_model_prediction(property_id=prop, model_type="conversion", duration=0.002)


def failures(m: PricingMetrics, reason: str) -> float:
    return m.get_sample_value("pricing_metrics_push_failures_total", {"reason": reason})


# ---------------------------------------------------------------------- what a push carries


def test_job_is_the_functions_short_name_and_instance_the_container():
    assert function_short_name("pricing-ScoreFunction-1A2B") == "score"
    assert function_short_name("pricing-IngestFunction-X") == "ingest"
    assert function_short_name("pricing-RetrainFunction-X") == "retrain"
    assert function_short_name("") == "local"
    assert len(push.container_instance()) == 16


def test_each_push_puts_the_base_group_and_the_changed_property_groups_only(clock):
    m, p, conn = make_pusher(clock)
    score(m, "prop-1")
    score(m, "prop-2")
    p.push()
    assert conn.paths() == [BASE, PROP1, BASE + "/property_id/prop-2"]
    assert all(method == "PUT" for method, _, _ in conn.requests)
    conn.answer(200, 200, 200)
    score(m, "prop-2")
    p.push()
    assert conn.paths()[3:] == [BASE, BASE + "/property_id/prop-2"]


def test_property_id_lives_in_the_grouping_key_not_in_the_body(clock):
    m, p, conn = make_pusher(clock)
    score(m, "prop-1")
    p.push()
    group = promproto.samples(conn.last(PROP1))
    assert group and all("property_id" not in dict(labels) for _, labels in group)
    assert promproto.value(conn.last(PROP1), "pricing_model_prediction_seconds_count", model_type="conversion") == 1


def test_the_first_push_carries_the_real_counts_with_created_timestamps(clock):
    """No hold: a new container's first push has its values, and every counter and histogram
    series carries its created timestamp, from which Prometheus counts the first value."""
    m, p, conn = make_pusher(clock)
    for _ in range(3):
        score(m, "prop-1")
    p.push()
    base = conn.last(BASE)
    assert promproto.value(base, "pricing_requests_total", **SCORE_OK) == 3
    assert promproto.value(base, "pricing_api_latency_seconds_count", **SCORE_OK) == 3
    created = promproto.value(base, "pricing_requests_created", **SCORE_OK)
    assert created == pytest.approx(
        next(s.value for fam in m.collect() for s in fam.samples if s.name == "pricing_requests_created" and s.labels == SCORE_OK), abs=1e-6
    )
    samples = promproto.samples(base)
    counters = {k for k in samples if k[0].endswith("_total")}
    assert counters and all((name.removesuffix("_total") + "_created", labels) in samples for name, labels in counters)
    assert promproto.value(conn.last(PROP1), "pricing_model_prediction_seconds_created", model_type="conversion")


def test_a_late_born_series_is_pushed_with_its_value_by_the_invocation_that_made_it(clock):
    m, p, conn = make_pusher(clock)
    score(m)
    p.push()
    conn.answer(200)
    m.track_error(endpoint="/score", error_type="StorageUnavailable")
    p.push()
    body = conn.last(BASE)
    assert promproto.value(body, "pricing_errors_total", endpoint="/score", error_type="StorageUnavailable") == 1
    assert promproto.value(body, "pricing_errors_created", endpoint="/score", error_type="StorageUnavailable")


def test_gauges_are_pushed_with_their_latest_values_and_only_once_set(clock):
    m, p, conn = make_pusher(clock)
    p.push()
    assert promproto.value(conn.last(BASE), "pricing_synthetic_check_timestamp_seconds") is None
    assert promproto.value(conn.last(BASE), "pricing_models_loaded") is None
    m.set_models_loaded(2)
    p.push()
    m.set_models_loaded(5)
    p.push()
    assert promproto.value(conn.last(BASE), "pricing_models_loaded") == 5


def test_push_size_does_not_grow_with_the_properties_served(clock):
    m, p, conn = make_pusher(clock, cap=5000)
    score(m, "first")
    p.push()
    conn.answer(*[200] * 2)
    first = sum(len(body) for _, _, body in conn.requests)
    for i in range(3000):
        score(m, f"p-{i}")
    p.push()  # carries them all: they changed
    conn.answer(*[200] * 3001)
    score(m, "last")
    before = len(conn.requests)
    p.push()
    sent = conn.requests[before:]
    assert [path for _, path, _ in sent] == [BASE, BASE + "/property_id/last"]
    assert sum(len(body) for _, _, body in sent) <= first * 1.1


def test_unchanged_families_are_not_encoded_again(clock, monkeypatch):
    m, p, conn = make_pusher(clock)
    score(m)
    p.push()
    encoded = []
    real = exposition.metric_messages
    monkeypatch.setattr(push, "metric_messages", lambda metric, labels: encoded.append(metric.name) or real(metric, labels))
    m.track_cache_hit()
    p.push()
    # the cache-hit counter, and uptime if a whole second has passed: nothing else (a gauge set
    # to the value it had, as the memory gauge mostly is, is no change)
    assert "pricing_model_cache_hits" in encoded
    assert set(encoded) <= {"pricing_model_cache_hits", "pricing_uptime_seconds"}, encoded
    assert promproto.value(conn.last(BASE), "pricing_requests_total", **SCORE_OK) == 1


def test_every_family_is_pushed_with_its_type(clock):
    m, p, conn = make_pusher(clock)
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
    m.track_retraining(property_id="p", model_type="conversion", status="failed", duration=2.0)
    m.track_competitor_fetch(property_id="p", status="success", staleness_seconds=1.5)
    m.set_models_loaded(1)
    m.mark_synthetic_check()
    p.push()
    pb = promproto.metrics_pb2()
    kinds = {"counter": pb.COUNTER, "gauge": pb.GAUGE, "info": pb.GAUGE, "histogram": pb.HISTOGRAM}
    expected = {f.name: kinds[f.kind] for f in m.families}
    seen = 0
    for _, _, body in conn.requests:
        for family in promproto.families(body):
            assert expected[family.name] == family.type, family.name
            seen += 1
    assert seen >= 15


# ---------------------------------------------------------------------- written, answered later


def test_a_push_is_written_at_once_and_its_answers_read_by_the_next_push(clock):
    m, p, conn = make_pusher(clock)
    score(m, "prop-1")
    stats = p.push("req-1")
    assert stats.ok and stats.requests == 2 and conn.writes == 1
    assert p.in_flight == 1 and conn.waits == []  # nothing waited for
    conn.answer(200, 200)
    p.push("req-2")
    assert p.in_flight == 1 and conn.writes == 2  # the first settled, the second written
    assert all(wait is None for wait in conn.waits)


def test_a_push_finding_its_predecessor_unanswered_is_written_all_the_same(clock):
    """Never folded: each invocation's push leaves with it; answers are matched in order."""
    m, p, conn = make_pusher(clock)
    for i in range(5):
        score(m, "prop-1")
        clock.now += 0.005
        p.push(f"req-{i}")
    assert conn.writes == 5 and p.in_flight == 5 and p.unwritten == 0
    assert promproto.value(conn.last(BASE), "pricing_requests_total", **SCORE_OK) == 5
    conn.answer(*[200] * 10)
    p.push("req-5")
    assert p.in_flight == 1 and p.owed_groups == 0 and failures(m, "timeout") == 0


def test_a_refused_push_is_counted_once_logged_with_the_request_that_sent_it_and_its_groups_go_again(clock, caplog):
    m, p, conn = make_pusher(clock)
    score(m, "prop-1")
    p.push("req-sent")
    conn.answer(200, 400)  # base accepted, the property group refused
    with caplog.at_level(logging.WARNING, logger="pricing.observability.push"):
        p.push("req-next")
    assert failures(m, "http_4xx") == 1
    assert any(getattr(r, "request_id", None) == "req-sent" for r in caplog.records)
    assert conn.paths()[-2:] == [BASE, PROP1]  # owed: carried by the next push, untouched as it is


def test_a_failure_of_a_group_a_later_push_already_carried_owes_nothing(clock):
    m, p, conn = make_pusher(clock)
    score(m, "prop-1")
    p.push("a")
    score(m, "prop-1")
    p.push("b")  # carries prop-1 again, with newer totals
    conn.answer(200, 500, 200, 200)
    p.push("c")
    assert failures(m, "http_5xx") == 1
    assert conn.paths()[-1:] == [BASE] and p.owed_groups == 0


def test_a_failed_write_is_counted_logged_and_swallowed_and_the_next_push_carries_its_groups(clock, caplog):
    m, p, conn = make_pusher(clock)
    conn.fail_with = PushError("connection", "refused")
    score(m, "prop-1")
    with caplog.at_level(logging.WARNING, logger="pricing.observability.push"):
        stats = p.push("req-42")
    assert not stats.ok and stats.groups_left >= 1 and p.unwritten == 1
    assert failures(m, "connection") == 1
    assert any(getattr(r, "request_id", None) == "req-42" for r in caplog.records)
    conn.fail_with = None
    p.push("req-43")
    assert conn.paths() == [BASE, PROP1]
    assert promproto.value(conn.last(BASE), "pricing_metrics_push_failures_total", reason="connection") == 1


def test_a_gateway_that_never_answers_costs_no_wait_and_is_tried_once_per_backoff_period(clock):
    m, p, conn = make_pusher(clock)
    score(m, "prop-1")
    p.push("a")
    clock.now += 0.3  # past the 0.25 s timeout, unanswered
    score(m)
    p.push("b")
    assert failures(m, "timeout") == 1
    assert conn.writes == 1  # b fell in the back-off
    assert failures(m, "backoff") == 1
    clock.now += 1.1
    p.push("c")
    assert conn.writes == 2 and conn.paths()[-2:] == [BASE, PROP1]  # what a carried goes again
    assert promproto.value(conn.last(BASE), "pricing_requests_total", **SCORE_OK) == 2
    assert all(wait is None for wait in conn.waits)


def test_a_gateway_that_is_behind_but_answering_is_not_timed_out(clock):
    m, p, conn = make_pusher(clock)
    score(m)
    p.push("a")
    score(m)
    p.push("b")
    clock.now += 0.3  # a is older than the timeout, but its answer comes now
    conn.answer(200)
    p.push("c")
    assert failures(m, "timeout") == 0 and p.in_flight == 2
    clock.now += 0.3  # then nothing more for the timeout: it is
    p.push("d")
    assert failures(m, "timeout") == 1 and p.owed_groups == 1


def test_a_kept_alive_connection_closed_unanswered_is_reopened_without_a_failure_but_a_new_one_is_not(clock):
    m, p, conn = make_pusher(clock)
    score(m)
    p.push("a")
    conn.answer(200)
    p.push("b")  # a settled; b on the kept-alive connection
    conn.hang_up()
    p.push("c")
    assert failures(m, "connection") == 0 and conn.opened == 2
    conn.hang_up()  # c was written on a fresh connection: its close is a failure
    p.push("d")
    assert failures(m, "connection") == 1


def test_an_unexpected_error_inside_push_never_reaches_the_invocation(clock):
    _m, p, conn = make_pusher(clock)
    conn.send = lambda *a: 1 / 0
    assert p.push("req").ok is False


def test_a_pusher_that_waits_gives_the_answers_the_timeout(clock):
    m, p, conn = make_pusher(clock, wait=True)
    conn.answer(200)
    assert p.push().ok and p.in_flight == 0
    assert conn.waits[-1] is not None
    assert not p.push().ok  # unanswered within the timeout
    assert failures(m, "timeout") == 1


# ---------------------------------------------------------------------- shutdown


def test_flush_reads_the_last_answers_and_pushes_what_is_owed_waiting_for_the_answers(clock):
    m, p, conn = make_pusher(clock)
    score(m, "prop-1")
    p.push("last-invocation")
    conn.answer(200, 503, 200, 200)  # the property group refused; the flush's own push accepted
    stats = p.flush(0.3)
    assert failures(m, "http_5xx") == 1
    assert conn.paths()[-2:] == [BASE, PROP1] and stats.ok
    assert p.in_flight == 0 and p.owed_groups == 0
    writes = conn.writes
    p.flush(0.3)  # nothing owed, nothing changed: nothing sent
    assert conn.writes == writes


def test_flush_sends_every_owed_group_at_once(clock):
    m, p, conn = make_pusher(clock)
    conn.fail_with = PushError("connection", "refused")
    for i in range(20):
        score(m, f"p-{i}")
    p.push()
    conn.fail_with = None
    conn.answer(*[200] * 21)
    p.flush(0.3)
    assert len(conn.paths()) == 21 and p.owed_groups == 0


# ---------------------------------------------------------------------- the container's pusher


def test_without_a_pushgateway_url_nothing_is_pushed(monkeypatch):
    calls = []
    monkeypatch.setattr(push, "_pusher_for", lambda *a: calls.append(a))
    push.push_invocation_metrics("req", settings=Settings(pushgateway_url=""))
    assert calls == []


def test_decorator_pushes_after_the_handler_returns_or_raises_with_the_request_id(monkeypatch):
    pushed = []
    monkeypatch.setattr(push, "push_invocation_metrics", lambda request_id=None, **kw: pushed.append(request_id))
    monkeypatch.setattr(push, "_current_request_id", lambda: None)  # no request bound by middleware

    @push.pushes_metrics(settings=Settings())
    def ok(event, context):
        return {"statusCode": 200}

    @push.pushes_metrics(settings=Settings(), function="ingest")
    def boom(event, context):
        raise ValueError("handler bug")

    class Context:
        aws_request_id = "lambda-req"

    assert ok({"requestContext": {"requestId": "apigw-req"}}, Context()) == {"statusCode": 200}
    with pytest.raises(ValueError):
        boom({"headers": {"X-Request-ID": "caller-req"}}, Context())
    ok({}, Context())
    assert pushed == ["apigw-req", "caller-req", "lambda-req"]


def test_last_push_stats_say_what_was_written_and_what_awaits_answers(monkeypatch, clock):
    m, p, _conn = make_pusher(clock)
    monkeypatch.setattr(push, "_pusher", p)
    score(m)
    p.push()
    stats = push.last_push_stats()
    assert stats["pushes"] == 1 and stats["unwritten"] == 0 and stats["in_flight"] == 1
    assert stats["requests"] == 1 and stats["bytes"] > 0


# ---------------------------------------------------------------------- Pushgateway shards


SHARDS = ("http://pg-0:9091", "http://pg-1:9091", "http://pg-2:9091")


def test_a_container_keeps_its_shard_whatever_the_process_or_the_shard_addresses():
    instances = [f"{i:016x}" for i in range(2000)]
    first = [push.choose_pushgateway(i, SHARDS) for i in instances]
    assert first == [push.choose_pushgateway(i, list(SHARDS)) for i in instances]  # stable
    # The choice is by position: the same shards under other addresses get the same containers.
    other = ("https://a.internal", "https://b.internal", "https://c.internal")
    assert [SHARDS.index(s) for s in first] == [other.index(push.choose_pushgateway(i, other)) for i in instances]
    # Spread: each of 3 shards holds about a third (2000 ids: 667 +- 10 %).
    for shard in SHARDS:
        assert 600 <= first.count(shard) <= 733, (shard, first.count(shard))


def test_adding_a_shard_moves_only_the_containers_the_new_one_wins():
    instances = [f"c{i}" for i in range(3000)]
    before = {i: push.choose_pushgateway(i, SHARDS[:2]) for i in instances}
    after = {i: push.choose_pushgateway(i, SHARDS) for i in instances}
    moved = [i for i in instances if before[i] != after[i]]
    assert all(after[i] == SHARDS[2] for i in moved)
    assert 850 <= len(moved) <= 1150  # about a third


def test_a_single_url_is_every_containers_shard_and_none_is_an_error():
    assert push.choose_pushgateway("x", ["http://only"]) == "http://only"
    with pytest.raises(ValueError):
        push.choose_pushgateway("x", [])


def test_pushgateway_urls_are_read_from_a_comma_list_and_win_over_the_single_url():
    s = Settings.from_env({"PUSHGATEWAY_URL": "http://one/", "PUSHGATEWAY_URLS": " http://a/ ,http://b,, "})
    assert s.pushgateways == ("http://a", "http://b")
    assert Settings.from_env({"PUSHGATEWAY_URL": "http://one/"}).pushgateways == ("http://one",)
    assert Settings.from_env({}).pushgateways == ()
    assert Settings.from_env({"PROMETHEUS_URL": "http://prom:9090/"}).prometheus_url == "http://prom:9090"


def test_the_pusher_writes_every_group_of_its_container_to_the_chosen_shard():
    settings = Settings(pushgateway_urls=SHARDS, function_name="score")
    for instance in ("a", "b", "c", "d", "e", "f"):
        pusher = MetricsPusher(PricingMetrics(), settings, instance=instance)
        assert pusher.url == push.choose_pushgateway(instance, SHARDS)
        assert pusher._conn.port == 9091 and pusher._conn.host == pusher.url.split("//")[1].split(":")[0]
        pusher.close()
