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
