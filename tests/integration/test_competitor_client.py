"""The competitor-backend client against a real HTTP server on loopback: every failure is bounded."""

from __future__ import annotations

import json
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pricing.competitors import CompetitorClient

NIGHT = date(2026, 12, 24)
GOOD = {
    "success": True,
    "data": {"priceP10": 90, "priceP50": 120.5, "priceP90": 150, "competitorCount": 7, "source": "scraper",
             "updatedAt": "2026-01-01T00:00:00Z"},
}


class Backend:
    """A stand-in competitor backend whose behaviour each test sets."""

    def __init__(self):
        self.mode = "ok"
        self.requests: list[tuple[str, dict]] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                backend.requests.append((self.path, dict(self.headers)))
                if backend.mode == "hang":
                    time.sleep(2)
                    return
                status, body = {
                    "ok": (200, json.dumps(GOOD).encode()),
                    "missing": (404, b'{"success": false}'),
                    "error": (500, b"boom"),
                    "garbage": (200, b"{not json"),
                    "nonsense": (200, json.dumps({"success": True, "data": {"priceP50": -3}}).encode()),
                }[backend.mode]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend():
    b = Backend()
    yield b
    b.close()


def client(url, **kw):
    return CompetitorClient(url, "secret-key-123", timeout=0.3, **kw)


def test_success_parses_the_snapshot_and_sends_key_and_request_id(backend):
    fetch = client(backend.url).fetch("prop/1", NIGHT, request_id="rid-9")
    assert fetch.status == "success"
    snap = fetch.snapshot
    assert (snap.p10, snap.p50, snap.p90, snap.count, snap.source) == (90.0, 120.5, 150.0, 7, "scraper")
    assert snap.staleness_seconds > 0
    path, headers = backend.requests[0]
    assert path == "/api/competitor-data/prop%2F1/2026-12-24"
    assert headers["X-API-Key"] == "secret-key-123" and headers["X-Request-ID"] == "rid-9"


@pytest.mark.parametrize("mode,status", [("missing", "not_found"), ("error", "error"), ("garbage", "error"),
                                         ("nonsense", "error"), ("hang", "timeout")])
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
