"""Misbehaving dependencies on 127.0.0.1, for fault-injection tests and the load bench.

- ``CompetitorBackend``: the competitor-data backend, answering as ``mode`` says (``ok``,
  ``not_found``, ``error`` (500), ``hang``, ``garbage`` (200 with broken JSON), ``huge`` (200 with
  an absurd price)); it records every request's path and headers.
- ``FaultProxy``: sits between boto3 and a moto server (``AWS_ENDPOINT_URL`` points at the proxy)
  and, per AWS service, passes requests through or injects a fault: ``hang`` (accept, never
  answer), ``slow`` (answer after ``delay`` seconds), ``throttle`` (the service's own throttling
  error), ``error`` (500), ``reset`` (close the connection without answering). ``rule`` may decide
  per request, e.g. to fail from the n-th write on.

Everything is a context manager and stops its threads on exit.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from support.stub_http import Reply, StubServer

COMPETITOR_ANSWER = {
    "success": True,
    "data": {
        "priceP10": 95.0,
        "priceP50": 118.0,
        "priceP90": 160.0,
        "competitorCount": 9,
        "source": "scraper",
        "updatedAt": "2026-01-01T00:00:00Z",
    },
}


#: What the backend answers in each mode ("hang": nothing, until the test ends).
COMPETITOR_MODES = {
    "ok": Reply(200, COMPETITOR_ANSWER),
    "not_found": Reply(404, {"success": False}),
    "error": Reply(500, "internal error", {"Content-Type": "application/json"}),
    "garbage": Reply(200, b'{"success": true, "data": {"priceP50": 1', {"Content-Type": "application/json"}),
    "huge": Reply(200, {"success": True, "data": {"priceP50": 1.7e308}}),
    "hang": Reply(delay=30, drop=True),
}


class CompetitorBackend(StubServer):
    """A stand-in competitor-data backend (``GET /api/competitor-data/{property}/{night}``)
    answering as ``mode`` says; ``requests`` records each request."""

    def __init__(self, mode: str = "ok") -> None:
        super().__init__(lambda request: COMPETITOR_MODES[self.mode])
        self.mode = mode


def aws_service_of(headers: dict[str, str], path: str) -> str:
    """Which AWS service a boto3 request is for: ``dynamodb``, ``secretsmanager``, ``sqs`` or ``s3``."""
    target = headers.get("x-amz-target", "")
    if target.startswith("DynamoDB_"):
        return "dynamodb"
    if target.startswith("secretsmanager."):
        return "secretsmanager"
    if target.startswith("AmazonSQS.") or "Action=" in path:
        return "sqs"
    return "s3"


_THROTTLED = {
    "dynamodb": (
        400,
        "application/x-amz-json-1.0",
        json.dumps(
            {
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "The level of configured provisioned throughput for the table was exceeded",
            }
        ),
    ),
    "secretsmanager": (400, "application/x-amz-json-1.1", json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})),
    "sqs": (400, "application/x-amz-json-1.0", json.dumps({"__type": "com.amazonaws.sqs#ThrottlingException", "message": "Rate exceeded"})),
    "s3": (503, "application/xml", "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"),
}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up on a hung answer are the point of these servers


class FaultProxy:
    """An HTTP proxy in front of a moto server that injects faults per AWS service.

    ``faults`` maps a service (see ``aws_service_of``) to a mode; services not named pass through.
    ``rule(service, target, n)`` -- ``target`` the DynamoDB/Secrets Manager operation or the S3
    method and path, ``n`` the 1-based count of requests to that service -- may return a mode for
    one request, overriding ``faults`` (None: use ``faults``).
    """

    def __init__(
        self,
        upstream: str,
        faults: dict[str, str] | None = None,
        *,
        delay: float = 2.0,
        rule: Callable[[str, str, int], str | None] | None = None,
    ) -> None:
        self.upstream = urlsplit(upstream)
        self.faults = dict(faults or {})
        self.delay = delay
        self.rule = rule
        self.counts: dict[str, int] = {}
        self.log: list[tuple[str, str, str]] = []  # (service, target, mode)
        self._lock = threading.Lock()
        self._release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy._handle(self, headers, body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def set(self, service: str, mode: str | None) -> None:
        """Inject ``mode`` into every later request to ``service`` (None or "pass": heal it)."""
        with self._lock:
            if mode in (None, "pass"):
                self.faults.pop(service, None)
            else:
                self.faults[service] = mode

    def _handle(self, handler: BaseHTTPRequestHandler, headers: dict[str, str], body: bytes) -> None:
        service = aws_service_of(headers, handler.path)
        target = headers.get("x-amz-target", "").split(".")[-1] or f"{handler.command} {handler.path.split('?')[0]}"
        with self._lock:
            n = self.counts[service] = self.counts.get(service, 0) + 1
            mode = self.faults.get(service, "pass")
        if self.rule is not None:
            mode = self.rule(service, target, n) or mode
        with self._lock:
            self.log.append((service, target, mode))
        if mode == "hang":
            self._release.wait(60)
            handler.close_connection = True
            return
        if mode == "reset":
            handler.close_connection = True
            try:
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            return
        if mode == "slow":
            if self._release.wait(self.delay):
                return
            mode = "pass"
        if mode == "throttle":
            self._reply(handler, *_THROTTLED[service])
            return
        if mode == "error":
            self._reply(handler, 500, "application/json", '{"__type": "InternalServerError", "message": "injected"}')
            return
        self._forward(handler, headers, body)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, content_type: str, text: str) -> None:
        data = text.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _forward(self, handler: BaseHTTPRequestHandler, headers: dict[str, str], body: bytes) -> None:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            skip = {"host", "content-length", "connection", "transfer-encoding"}
            conn.request(handler.command, handler.path, body=body, headers={k: v for k, v in headers.items() if k not in skip})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        handler.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05):
    """``predicate()``'s first truthy value, polling until ``timeout``; raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def impatient(stores, attempts: int = 2):
    """``stores`` (a ``pricing.storage.stores.Stores``) with AWS clients that give up after ``attempts``.

    For fault tests only: production's five attempts with botocore's jittered back-off make each
    injected failure cost several seconds, and what is under test is what the service does once
    the store has given up, not botocore's retry schedule. Clients are made for the current
    ``AWS_ENDPOINT_URL``.
    """
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": attempts, "mode": "standard"})
    session = boto3.session.Session()
    for service in ("dynamodb", "s3", "sqs"):
        stores.aws._clients[service] = session.client(service, config=config)  # test seam
    return stores
