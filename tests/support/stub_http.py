"""One stub HTTP server for every test and bench that needs a service to answer over HTTP.

``StubServer`` listens on a free 127.0.0.1 port in a background thread, records every request
and answers it with a ``Reply``: a fixed one, or whatever a responder function returns for the
request. A reply may wait before answering (``delay``), or wait and then hang up unanswered
(``drop``): a slow or a hung service. Leaving the ``with`` block releases every waiting answer.

Example::

    with StubServer(Reply(200, {"ok": True})) as stub:
        requests.get(f"{stub.url}/health")
        assert stub.requests[0].path == "/health"
        stub.reply = lambda request: Reply(404) if request.path != "/health" else Reply(200, "up")
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Request:
    """One request as the stub received it."""

    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query))

    def header(self, name: str) -> str | None:
        """A header's value by its name in any case."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """What the stub answers: ``body`` as bytes, text (``text/plain``) or JSON (a dict or list),
    after ``delay`` seconds; with ``drop`` nothing is answered and the connection is closed."""

    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


Responder = Callable[[Request], Reply]
Answer = Reply | Responder


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up on a slow or dropped answer is what such a test is about


class StubServer:
    """An HTTP server on a free 127.0.0.1 port answering every request with ``reply`` (a ``Reply``
    or a function of the ``Request``); ``requests`` lists what arrived, in order."""

    def __init__(self, reply: Answer | None = None) -> None:
        self.reply: Answer = reply if reply is not None else Reply()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"stub-http-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_to(self, path: str | None = None) -> list[Request]:
        """The requests so far (to ``path`` only, when given)."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
        reply = self.reply
        return reply if isinstance(reply, Reply) else reply(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the service's clients expect
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = stub._answer(Request(self.command, self.path, dict(self.headers.items()), body))
                if reply.delay:
                    stub._release.wait(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                data, content_type = reply.encoded()
                self.send_response(reply.status)
                headers = {"Content-Type": content_type, **reply.headers, "Content-Length": str(len(data))}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve

            def log_message(self, *args: Any) -> None:  # keep test output clean
                return

        return Handler
