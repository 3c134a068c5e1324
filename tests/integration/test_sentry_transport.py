"""The Sentry setup with the real SDK and HTTP transport, outside Lambda, in this process.

Each test is one container: the ``container`` fixture initialises Sentry the way an app module
does (``init_from_settings``) against a local receiver, and shuts the client down afterwards, so
the next test starts from a process without Sentry.
"""

import logging
import time

import pytest
import sentry_sdk

from pricing.observability import sentry
from pricing.settings import Settings
from support.sentry_receiver import SentryReceiver, parse_envelope

BACKEND_API_KEY = "backend-key-4e6a8c0b2d"
PUSHGATEWAY_TOKEN = "pgw-token-1a3c5e7f9b"
CALLER_KEY = "caller-key-6d4b2f0e8a"


@pytest.fixture
def container(monkeypatch):
    """``start(dsn, **settings)``: Sentry initialised as an app module does; returns whether it is on."""
    monkeypatch.setattr(sentry, "_state", sentry._State())  # what one container remembers

    def start(dsn: str, **fields) -> bool:
        settings = Settings(
            sentry_dsn=dsn,
            environment="test",
            release="pricing@test",
            backend_api_key=BACKEND_API_KEY,
            pushgateway_bearer_token=PUSHGATEWAY_TOKEN,
            **fields,
        )
        return sentry.init_from_settings(settings)

    # Fresh scopes: tags and breadcrumbs left by earlier in-process requests are not this container's.
    with sentry_sdk.isolation_scope() as isolation, sentry_sdk.new_scope() as current:
        isolation.clear()
        current.clear()
        try:
            yield start
        finally:
            sentry_sdk.get_client().close(timeout=2)
            sentry_sdk.get_global_scope().set_client(None)  # the process is without Sentry again


@pytest.fixture
def receiver():
    with SentryReceiver() as r:
        yield r


def test_without_a_dsn_nothing_is_initialised_and_nothing_is_said(container, capsys):
    assert container("") is False
    assert not sentry_sdk.get_client().is_active()
    sentry.set_request_context("req-1", property_id="p")
    assert sentry.report_once("model-store", RuntimeError("down")) is False
    with sentry.retrain_monitor():
        pass
    assert capsys.readouterr() == ("", "")


def test_an_unparsable_dsn_disables_sentry_instead_of_failing_the_container(container, caplog):
    with caplog.at_level(logging.ERROR, logger="pricing"):
        assert container("not a dsn") is False
    assert not sentry.is_enabled()
    assert "Sentry disabled" in caplog.text  # the error log line


def test_report_once_sends_one_event_per_cause(container, receiver):
    container(receiver.dsn)
    results = [
        sentry.report_once("model-store", RuntimeError("store down 1"), property_id="p1"),
        sentry.report_once("model-store", RuntimeError("store down 2"), property_id="p2"),
        sentry.report_once("competitor-backend", "backend answered 502"),
        sentry.report_once("competitor-backend", "backend answered 503"),
    ]
    assert results == [True, False, True, False], results
    sentry.flush()
    receiver.wait_for(lambda r: len(r.events) >= 2)
    time.sleep(0.1)
    events = {e["tags"]["cause"]: e for e in receiver.events}
    assert sorted(events) == ["competitor-backend", "model-store"]
    assert len(receiver.events) == 2
    assert {e.content_encoding for e in receiver.envelopes} == {"gzip"}  # what real Sentry gets
    assert events["model-store"]["tags"]["property_id"] == "p1"
    assert events["model-store"]["exception"]["values"][-1]["value"] == "store down 1"
    assert events["competitor-backend"]["message"] == "backend answered 502"
    assert all(e["level"] == "warning" for e in events.values())
    assert events["model-store"]["fingerprint"] == ["report-once", "model-store"]


def test_capture_error_twice_for_one_failure_is_one_event(container, receiver):
    container(receiver.dsn)
    error = RuntimeError("outcomes table unreachable")
    with sentry_sdk.isolation_scope():
        sentry.set_request_context("req-503", property_id="p1", additional_tags={"endpoint": "/learn", "method": "POST"})
        sentry.capture_error(error)
        sentry.capture_error(error)  # e.g. the handler and a caller both report it
    sentry.flush()
    receiver.wait_for(lambda r: r.events)
    time.sleep(0.1)
    assert len(receiver.events) == 1
    assert receiver.events[0]["tags"] == {"request_id": "req-503", "property_id": "p1", "endpoint": "/learn", "method": "POST"}


def test_a_transaction_inside_a_running_one_becomes_its_span(container, receiver):
    container(receiver.dsn, sentry_traces_sample_rate=1.0)
    with sentry.start_transaction(name="/score", op="http.server"), sentry.start_transaction(name="optimise", op="function"):
        pass
    sentry.flush()
    receiver.wait_for(lambda r: r.transactions)
    time.sleep(0.1)
    assert [t["transaction"] for t in receiver.transactions] == ["/score"]
    assert [(s["op"], s["description"]) for s in receiver.transactions[0]["spans"]] == [("function", "optimise")]


def test_secrets_and_credentials_never_leave_in_messages_breadcrumbs_or_locals(container, receiver):
    container(receiver.dsn)
    logging.getLogger("pricing.backend").warning("calling backend with key %s", BACKEND_API_KEY)

    def call_backend():
        # A credential no scrubber knows: only leaving stack locals out keeps it in the process.
        note = f"sent on behalf of {CALLER_KEY}"
        headers = {"X-API-Key": BACKEND_API_KEY, "Authorization": f"Bearer {PUSHGATEWAY_TOKEN}"}
        raise ConnectionError(f"backend refused key {BACKEND_API_KEY} ({len(headers)} headers, {len(note)})")

    try:
        call_backend()
    except ConnectionError as exc:
        sentry.capture_error(exc)
    sentry.flush()
    receiver.wait_for(lambda r: r.events)
    raw = receiver.raw
    assert b"calling backend with key" in raw  # the breadcrumb arrived, scrubbed
    assert b"backend refused key" in raw  # the exception arrived, scrubbed
    for secret in (BACKEND_API_KEY, PUSHGATEWAY_TOKEN, CALLER_KEY):
        assert secret.encode() not in raw, secret
    assert sentry_sdk.get_client().options["include_local_variables"] is False


def test_the_receiver_reads_uncompressed_envelopes_too(container, receiver):
    # The SDK sends gzip by default; compression level 0 makes it send plain bytes.
    container("")
    sentry_sdk.init(dsn=receiver.dsn, _experiments={"transport_compression_level": 0})
    sentry_sdk.capture_message("plain")
    sentry_sdk.flush(timeout=2)
    receiver.wait_for(lambda r: r.events)
    assert receiver.events[0]["message"] == "plain"
    assert [e.content_encoding for e in receiver.envelopes] == [""]


def test_parse_envelope_honours_item_lengths_and_trailing_items():
    payload = b'{"a":\n1}'  # a payload with a newline inside: only its length delimits it
    body = b'{"event_id":"e1"}\n' + b'{"type":"attachment","length":%d}\n' % len(payload) + payload + b'\n{"type":"event"}\n{"message":"m"}'
    envelope = parse_envelope(body, project="7")
    assert envelope.headers == {"event_id": "e1"}
    assert [(i.type, i.payload) for i in envelope.items] == [("attachment", payload), ("event", b'{"message":"m"}')]


def test_flush_against_a_sentry_that_never_answers_is_bounded(container):
    from pricing.observability.sentry import FLUSH_TIMEOUT_SECONDS

    with SentryReceiver(answer=False) as blackhole:
        container(blackhole.dsn)
        for i in range(3):
            sentry_sdk.capture_message(f"message {i}")
        started = time.perf_counter()
        sentry.flush()
        first = time.perf_counter() - started
        sentry_sdk.capture_message("after the timeout")
        started = time.perf_counter()
        sentry.flush()
        second = time.perf_counter() - started
    # Bounded by the flush timeout (plus scheduling slack), not by the SDK's 30 s send timeout;
    # and once timed out, the next flush does not wait at all.
    assert first < FLUSH_TIMEOUT_SECONDS + 2.0
    assert second < FLUSH_TIMEOUT_SECONDS / 2
