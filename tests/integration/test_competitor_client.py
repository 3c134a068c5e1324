"""The competitor-backend client against a real HTTP server on loopback: every failure is bounded."""

from __future__ import annotations

import time
from datetime import date

import pytest

from pricing.competitors import CompetitorClient
from support.faults import COMPETITOR_ANSWER, CompetitorBackend

NIGHT = date(2026, 12, 24)


@pytest.fixture
def backend():
    with CompetitorBackend() as b:
        yield b


def client(url, **kw):
    return CompetitorClient(url, "secret-key-123", timeout=0.3, **kw)


def test_success_parses_the_snapshot_and_sends_key_and_request_id(backend):
    fetch = client(backend.url).fetch("prop/1", NIGHT, request_id="rid-9")
    assert fetch.status == "success"
    snap, data = fetch.snapshot, COMPETITOR_ANSWER["data"]
    assert (snap.p10, snap.p50, snap.p90, snap.count, snap.source) == (
        data["priceP10"],
        data["priceP50"],
        data["priceP90"],
        data["competitorCount"],
        data["source"],
    )
    assert snap.staleness_seconds > 0
    path, headers = backend.requests[0].target, backend.requests[0].headers
    assert path == "/api/competitor-data/prop%2F1/2026-12-24"
    assert headers["X-API-Key"] == "secret-key-123" and headers["X-Request-ID"] == "rid-9"


@pytest.mark.parametrize(
    "mode,status", [("not_found", "not_found"), ("error", "error"), ("garbage", "error"), ("huge", "error"), ("hang", "timeout")]
)
def test_failures_are_reported_not_raised_and_bounded(backend, mode, status):
    backend.mode = mode
    started = time.monotonic()
    fetch = client(backend.url).fetch("p1", NIGHT)
    assert (fetch.snapshot, fetch.status) == (None, status)
    assert time.monotonic() - started < 1.5


def test_unreachable_backend_is_an_error():
    fetch = client("http://127.0.0.1:9").fetch("p1", NIGHT)
    assert fetch.status == "error"


def test_answers_are_cached_and_failures_are_not_retried_at_once(backend):
    now = [0.0]
    c = client(backend.url, ttl_seconds=300, failure_ttl_seconds=30, clock=lambda: now[0])
    assert not c.fetch("p1", NIGHT).cached
    assert c.fetch("p1", NIGHT).cached and len(backend.requests) == 1
    backend.mode = "error"
    assert c.fetch("p2", NIGHT).status == "error"
    assert c.fetch("p2", NIGHT).cached and len(backend.requests) == 2
    now[0] = 31.0
    backend.mode = "ok"
    assert c.fetch("p2", NIGHT).status == "success" and len(backend.requests) == 3
