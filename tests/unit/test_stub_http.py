"""The tests' stub HTTP server (tests/support/stub_http.py): what it records and how it answers."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from support.stub_http import Reply, StubServer


def fetch(url: str, method: str = "GET", path: str = "/", body: bytes | None = None, timeout: float = 5.0):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"X-Request-ID": "rid-1"})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


def test_it_records_each_request_and_answers_with_the_reply():
    with StubServer(Reply(201, {"ok": True})) as stub:
        assert stub.url.startswith("http://127.0.0.1:") and stub.port > 0
        status, content_type, body = fetch(stub.url, "POST", "/learn?dry=1", b'{"a": 1}')
    assert (status, content_type, json.loads(body)) == (201, "application/json", {"ok": True})
    (request,) = stub.requests
    assert (request.method, request.path, request.query, request.json()) == ("POST", "/learn", {"dry": "1"}, {"a": 1})
    assert request.header("x-request-id") == "rid-1" and request.target == "/learn?dry=1"


def test_a_responder_decides_per_request_and_the_reply_can_change():
    with StubServer(lambda r: Reply(200, "up") if r.path == "/health" else Reply(404)) as stub:
        assert fetch(stub.url, path="/health")[::2] == (200, b"up")
        assert fetch(stub.url, path="/nope")[0] == 404
        stub.reply = Reply(503, b"down", {"Content-Type": "text/html"})
        assert fetch(stub.url, path="/health") == (503, "text/html", b"down")
    assert [r.path for r in stub.requests_to("/health")] == ["/health", "/health"]


def test_a_delayed_reply_waits_and_a_dropped_one_never_answers():
    with StubServer(Reply(200, "late", delay=0.3)) as stub:
        started = time.monotonic()
        assert fetch(stub.url)[0] == 200
        assert time.monotonic() - started >= 0.3
        stub.reply = Reply(delay=0.1, drop=True)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            fetch(stub.url)


def test_leaving_the_block_releases_a_hung_answer():
    stub = StubServer(Reply(delay=30, drop=True)).start()
    started = time.monotonic()
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            fetch(stub.url, timeout=10)
        except (http.client.HTTPException, OSError) as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while not stub.requests:
        time.sleep(0.01)
    stub.stop()
    caller.join(10)
    assert not caller.is_alive() and time.monotonic() - started < 5
    assert outcome and not isinstance(outcome[0], TimeoutError)  # hung up on, not timed out
