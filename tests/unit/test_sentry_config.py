"""Sentry's filters, scrubbing and cron monitor configuration as pure functions (no SDK client here;
the SDK itself is exercised against a local receiver in tests/integration/test_sentry_*.py)."""

import sys
from pathlib import Path

import pytest
import sentry_sdk
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from pricing.observability import sentry
from pricing.observability.sentry import (
    FILTERED,
    RETRAIN_MONITOR_CONFIG,
    before_send,
    before_send_transaction,
    scrub_event,
)

CONFIGURED_SECRET = "backend-key-9d8c7b6a"


@pytest.fixture(autouse=True)
def configured_secrets():
    # No DSN: nothing is initialised, only the secrets to scrub are recorded.
    sentry.init_sentry("", "test", "1", secrets=[CONFIGURED_SECRET, "", "abc"])
    yield
    sentry.init_sentry("", "test", "1")


def hint_for(exc):
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - any exception, as the SDK hands it to before_send
        return {"exc_info": sys.exc_info()}


def error_event(**overrides):
    event = {
        "level": "error",
        "exception": {"values": [{"type": "RuntimeError", "value": "boom"}]},
        "tags": {"request_id": "req-1", "endpoint": "/score", "method": "POST"},
        "request": {"url": "https://api.example.com/score", "method": "POST", "headers": {}},
    }
    event.update(overrides)
    return event


def transaction_event(op="http.server", name="/score", status=200, **overrides):
    event = {
        "type": "transaction",
        "transaction": name,
        "contexts": {"trace": {"op": op, "data": {"http.response.status_code": status}}, "response": {"status_code": status}},
        "tags": {"request_id": "req-1", "endpoint": name},
        "request": {"url": f"https://api.example.com{name}", "method": "POST", "headers": {}},
    }
    event.update(overrides)
    return event


# ------------------------------------------------------------------------------ filtering


def test_a_server_error_is_kept():
    assert before_send(error_event(), hint_for(RuntimeError("boom"))) is not None


@pytest.mark.parametrize(
    "exc",
    [RequestValidationError([]), HTTPException(status_code=404), HTTPException(status_code=422)],
)
def test_validation_errors_and_404s_are_dropped(exc):
    assert before_send(error_event(), hint_for(exc)) is None


def test_a_5xx_http_exception_is_kept():
    assert before_send(error_event(), hint_for(HTTPException(status_code=503))) is not None


def test_health_check_errors_are_dropped_whichever_field_names_the_endpoint():
    assert before_send(error_event(tags={"endpoint": "/health"}), {}) is None
    assert before_send(error_event(tags={}, request={"url": "https://x.example/health?deep=1"}), {}) is None
    assert before_send(error_event(tags={}, request={}, transaction="/health"), {}) is None


def test_check_ins_pass_untouched():
    check_in = {"type": "check_in", "monitor_slug": "pricing-retrain", "status": "ok", "tags": {"endpoint": "/health"}}
    assert before_send(dict(check_in), {}) == check_in


def test_the_lambda_transaction_of_an_http_invocation_is_dropped():
    assert before_send_transaction(transaction_event(op="function.aws", name="pricing-score"), {}) is None


def test_the_lambda_transaction_of_a_scheduled_invocation_is_kept():
    event = transaction_event(op="function.aws", name="pricing-retrain", request={"url": "awslambda:///pricing-retrain"})
    del event["contexts"]["response"]
    assert before_send_transaction(event, {}) is not None


def test_the_request_transaction_is_kept():
    assert before_send_transaction(transaction_event(), {}) is not None


@pytest.mark.parametrize(
    "event",
    [
        transaction_event(name="/health"),
        transaction_event(name="unmatched", status=404),
        transaction_event(status=422),
    ],
)
def test_health_404_and_422_transactions_are_dropped(event):
    assert before_send_transaction(event, {}) is None


def test_an_event_outside_the_tagged_scope_still_gets_the_request_id():
    import contextvars

    from pricing.observability.context import bind_request_id

    def capture():
        bind_request_id("req-late")
        return before_send(error_event(tags={}), {})

    assert contextvars.copy_context().run(capture)["tags"]["request_id"] == "req-late"


# ------------------------------------------------------------------------------ scrubbing


def test_header_values_are_removed_except_harmless_ones():
    event = error_event(
        request={
            "headers": {
                "Content-Type": "application/json",
                "X-Request-ID": "req-1",
                "X-API-Key": "caller-key-123456",
                "Authorization": "Bearer tok-abcdef",
                "User-Agent": "booking-backend",
            },
            "cookies": {"session": "s"},
            "data": {"entity": {"userId": "u"}},
        }
    )
    request = scrub_event(event)["request"]
    assert request["headers"] == {
        "Content-Type": "application/json",
        "X-Request-ID": "req-1",
        "X-API-Key": FILTERED,
        "Authorization": FILTERED,
        "User-Agent": FILTERED,
    }
    assert "cookies" not in request and "data" not in request


def test_sensitive_header_values_are_removed_wherever_they_reappear():
    # The ASGI scope's header pairs, as serialized in stack locals, and the same value elsewhere.
    frame_vars = {
        "scope": {"headers": [["b'x-api-key'", "b'caller-key-123456'"], ["b'content-type'", "b'application/json'"]]},
        "message": "'calling with caller-key-123456'",
    }
    event = error_event(exception={"values": [{"stacktrace": {"frames": [{"vars": frame_vars}]}}]})
    text = repr(scrub_event(event))
    assert "caller-key-123456" not in text
    assert "application/json" in text


@pytest.mark.parametrize(
    "text",
    [
        "[(b'authorization', b'Basic dXNlcjpwYXNz'), (b'accept', b'*/*')]",
        'failed with "Authorization": "Bearer eyJhbGciOi.payload.sig"',
        "retrying with bearer eyJhbGciOi.payload.sig",
    ],
)
def test_credentials_inside_reprs_and_messages_are_removed(text):
    scrubbed = scrub_event({"message": text})["message"]
    assert "dXNlcjpwYXNz" not in scrubbed
    assert "eyJhbGciOi" not in scrubbed
    assert FILTERED in scrubbed


@pytest.mark.parametrize(
    "text",
    ["basic rule-based pricing", "Basic configuration applied", "the bearer of bad news", "Bearer short"],
)
def test_ordinary_prose_is_not_mistaken_for_a_credential(text):
    assert scrub_event({"message": text})["message"] == text


def test_configured_secrets_are_removed_from_every_string_and_short_ones_ignored():
    event = {
        "message": f"backend answered 401 for key {CONFIGURED_SECRET}",
        "breadcrumbs": {"values": [{"message": f"GET /api?key={CONFIGURED_SECRET}"}]},
        "extra": {"note": "abc stays: too short to be treated as a secret"},
    }
    scrubbed = scrub_event(event)
    assert CONFIGURED_SECRET not in repr(scrubbed)
    assert scrubbed["extra"]["note"].startswith("abc stays")


def test_user_and_property_ids_are_kept():
    event = error_event(tags={"request_id": "r", "user_id": "user-123", "property_id": "prop-456"})
    assert scrub_event(event)["tags"] == {"request_id": "r", "user_id": "user-123", "property_id": "prop-456"}


def test_our_own_secret_names_are_on_the_deny_list():
    for name in ("x-api-key", "authorization", "backend_api_key", "pushgateway_password", "pushgateway_bearer_token", "cookie"):
        assert name in sentry.DENYLIST
    assert "user_id" not in sentry.DENYLIST and "property_id" not in sentry.DENYLIST


# ------------------------------------------------------------------------------ schedules


def test_the_retrain_monitor_has_the_template_schedule_as_crontab():
    """The monitor's crontab is RetrainFunction's EventBridge schedule: ``cron(m h dom mon dow
    year)`` with ``?`` for "any", crontab's five fields without the year."""
    from local.template import load_template

    template = load_template(Path(__file__).resolve().parents[2] / "template.yaml")
    events = template["Resources"]["RetrainFunction"]["Properties"]["Events"]
    schedules = [e["Properties"]["Schedule"] for e in events.values() if e["Type"] == "Schedule"]
    assert len(schedules) == 1, schedules
    fields = schedules[0].removeprefix("cron(").removesuffix(")").split()
    assert len(fields) == 6 and fields[5] == "*", schedules[0]
    crontab = " ".join("*" if f == "?" else f for f in fields[:5])
    config = RETRAIN_MONITOR_CONFIG
    assert config["schedule"] == {"type": "crontab", "value": crontab}
    assert config["timezone"] == "UTC"  # EventBridge schedules are UTC
    assert config["max_runtime"] == 15 and config["checkin_margin"] > 0


# ------------------------------------------------------------------------------ disabled


def test_without_a_dsn_sentry_stays_off_and_every_helper_is_a_no_op():
    assert sentry.init_sentry(None, "test", "1") is False
    assert not sentry.is_enabled()
    assert not sentry_sdk.get_client().is_active()
    assert sentry.report_once("model-store", RuntimeError("down")) is False
    assert sentry.capture_error(RuntimeError("down")) is None
    with sentry.start_transaction(name="/score", op="http.server"):
        pass
    with sentry.retrain_monitor():
        pass
    with sentry_sdk.isolation_scope():
        sentry.set_request_context("req-1", user_id="u", property_id="p", additional_tags={"endpoint": "/score"})
    sentry.flush()
