"""An emulator of the Lambda Runtime API and Extensions API, one per local container, on 127.0.0.1.

The runtime client long-polls ``invocation/next`` and posts a response, an error or an init
error; extensions register and long-poll ``event/next``, answered SHUTDOWN when the container
shuts down (``INVOKE`` events, the Telemetry and Logs APIs are not emulated). One emulator per
container because the client's paths carry no container identity; HTTP/1.1 with
``Content-Length`` on every response because the client is libcurl. docs/local-lambda.md.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_PREFIX = "/2018-06-01/runtime"
EXTENSION_PREFIX = "/2020-01-01/extension"
EXTENSION_EVENTS = ("INVOKE", "SHUTDOWN")


@dataclass
class Extension:
    """One registered external extension and where it is in its life cycle."""

    name: str
    events: tuple[str, ...]
    identifier: str = field(default_factory=lambda: str(uuid.uuid4()))
    registered_at: float = field(default_factory=time.monotonic)
    ready: threading.Event = field(default_factory=threading.Event)  # has called event/next
    shutdown_sent: bool = False
    error: dict | None = None


def new_trace_id() -> str:
    """An X-Ray trace header value, shaped like the ones Lambda passes to the runtime."""
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


@dataclass
class Invocation:
    """One event on its way through a container, and how it ended.

    ``outcome`` is ``"response"`` (the handler returned), ``"error"`` (it raised), or set by the
    container for ``"timeout"``, ``"init_error"`` and ``"exit"`` (the runtime process died).
    """

    payload: bytes
    timeout: float
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    trace_id: str = field(default_factory=new_trace_id)
    client_context: str | None = None
    received_at: float = 0.0
    started_at: float | None = None
    deadline: float | None = None
    finished_at: float | None = None
    outcome: str | None = None
    result: bytes = b""
    error_type: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def finish(self, outcome: str, result: bytes, error_type: str | None = None) -> bool:
        """Record the end of the invocation once; later reports (after a timeout) are ignored."""
        with _FINISH_LOCK:
            if self.done.is_set():
                return False
            self.outcome, self.result, self.error_type = outcome, result, error_type
            self.finished_at = time.monotonic()
            self.done.set()
            return True


_FINISH_LOCK = threading.Lock()


class RuntimeApi:
    """The Runtime API of one container.

    Args:
        function_arn: sent as ``Lambda-Runtime-Invoked-Function-Arn``.
        on_init_error: called with the error document when the runtime reports an init failure.
        on_start: called with each invocation as the runtime takes it (its START).
        handler: the function's handler, as the Extensions API's register answer names it.

    ``submit()`` queues an invocation for the runtime's next long poll; the HTTP handlers record
    the response or error on the ``Invocation``, which the caller waits on.
    """

    def __init__(
        self,
        function_arn: str,
        on_init_error: Callable[[dict], None] | None = None,
        on_start: Callable[[Invocation], None] | None = None,
        handler: str = "",
    ) -> None:
        self.function_arn = function_arn
        self.handler = handler
        self.on_init_error = on_init_error
        self.on_start = on_start
        self.init_error: dict | None = None
        self._pending: queue.Queue[Invocation] = queue.Queue()
        #: Runtime polls for the next invocation now open (the runtime is waiting for work).
        self.polls = 0
        self._active: dict[str, Invocation] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._extensions: dict[str, Extension] = {}
        self._shutdown: dict | None = None  # the SHUTDOWN event, once the container shuts down
        self._events = threading.Condition(self._lock)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"runtime-api-{self.port}", daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def address(self) -> str:
        """The value of ``AWS_LAMBDA_RUNTIME_API`` for the container."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> RuntimeApi:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with self._events:
            self._events.notify_all()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def submit(self, invocation: Invocation) -> None:
        invocation.received_at = time.monotonic()
        self._pending.put(invocation)

    @property
    def extensions(self) -> list[Extension]:
        """The extensions registered so far, in registration order."""
        with self._lock:
            return list(self._extensions.values())

    def shutdown(self, reason: str, deadline_ms: int) -> None:
        """Answer every extension's ``event/next`` with a SHUTDOWN event (and any later one).

        ``reason`` is Lambda's ``shutdownReason`` (``spindown``, ``timeout``, ``failure``);
        ``deadline_ms`` the wall-clock time, in ms since the epoch, at which everything left
        is killed.
        """
        with self._events:
            if self._shutdown is None:
                self._shutdown = {"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms}
            self._events.notify_all()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown is not None

    # --- called from the HTTP handler threads --------------------------------------------------

    def register_extension(self, name: str, events: list[str]) -> Extension:
        extension = Extension(name=name, events=tuple(events))
        with self._lock:
            self._extensions[extension.identifier] = extension
        return extension

    def next_extension_event(self, identifier: str) -> dict | None:
        """Block until the extension's next event (None when the API is closing).

        Raises:
            KeyError: no extension registered with ``identifier``.
        """
        with self._events:
            extension = self._extensions[identifier]
            extension.ready.set()
            while not self._closed.is_set():
                if self._shutdown is not None and "SHUTDOWN" in extension.events:
                    extension.shutdown_sent = True
                    return dict(self._shutdown)
                self._events.wait(0.5)
        return None

    def report_extension_error(self, identifier: str, kind: str, body: bytes, error_type: str | None) -> bool:
        with self._lock:
            extension = self._extensions.get(identifier)
        if extension is None:
            return False
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            document = {"errorMessage": body.decode("utf-8", "replace")}
        extension.error = {"phase": kind, "errorType": error_type or document.get("errorType"), **document}
        return True

    def next_invocation(self) -> Invocation | None:
        """Block until an invocation is queued (None when the API is closing).

        A container shutting down queues nothing more: the poll stays open until the runtime
        exits or is killed.
        """
        with self._lock:
            self.polls += 1
        try:
            return self._next_invocation()
        finally:
            with self._lock:
                self.polls -= 1

    def _next_invocation(self) -> Invocation | None:
        while not self._closed.is_set():
            if self._shutdown is not None:
                self._closed.wait(0.2)
                continue
            try:
                invocation = self._pending.get(timeout=0.2)
            except queue.Empty:
                continue
            if invocation.done.is_set():  # gave up waiting before the runtime asked for it
                continue
            invocation.started_at = time.monotonic()
            invocation.deadline = invocation.started_at + invocation.timeout
            with self._lock:
                self._active[invocation.request_id] = invocation
            if self.on_start:
                self.on_start(invocation)
            return invocation
        return None

    def complete(self, request_id: str, outcome: str, body: bytes, error_type: str | None) -> bool:
        with self._lock:
            invocation = self._active.pop(request_id, None)
        if invocation is None:
            return False
        invocation.finish(outcome, body, error_type)
        return True

    def report_init_error(self, body: bytes, error_type: str | None) -> None:
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            document = {"errorMessage": body.decode("utf-8", "replace")}
        if error_type and "errorType" not in document:
            document["errorType"] = error_type
        self.init_error = document
        if self.on_init_error:
            self.on_init_error(document)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: RuntimeApi

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A killed container (timeout, shutdown) drops its keep-alive connection mid-poll.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm and the client's
    # delayed ACK every warm invocation would wait ~40 ms for nothing.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the base class's name
        pass  # the container logs invocations itself; per-poll access lines are noise

    def _send(self, status: int, document: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(document).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if raw is None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return read_chunked(self.rfile)
        return b""

    def do_GET(self) -> None:  # http.server's naming
        api = self.server.api
        if self.path == f"{EXTENSION_PREFIX}/event/next":
            self._extension_next()
            return
        if self.path != f"{API_PREFIX}/invocation/next":
            self._send(404, {"errorType": "NotFound", "errorMessage": f"no route {self.path}"})
            return
        invocation = api.next_invocation()
        if invocation is None:  # shutting down: the runtime is about to be stopped anyway
            self._send(500, {"errorType": "Runtime.Shutdown", "errorMessage": "container stopping"})
            return
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000 + invocation.timeout * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
            "Lambda-Runtime-Trace-Id": invocation.trace_id,
            "Content-Type": "application/json",
        }
        if invocation.client_context:
            headers["Lambda-Runtime-Client-Context"] = invocation.client_context
        self._send(200, None, headers, raw=invocation.payload)

    def _extension_next(self) -> None:
        identifier = self.headers.get("Lambda-Extension-Identifier") or ""
        try:
            event = self.server.api.next_extension_event(identifier)
        except KeyError:
            self._send(
                403, {"errorType": "Extension.UnknownExtensionIdentifier", "errorMessage": "unknown or missing Lambda-Extension-Identifier"}
            )
            return
        if event is None:
            self._send(500, {"errorType": "Extension.Shutdown", "errorMessage": "container stopping"})
            return
        self._send(200, event, {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())})

    def _extension_post(self, body: bytes) -> None:
        api = self.server.api
        path = self.path[len(EXTENSION_PREFIX) :]
        if path == "/register":
            name = self.headers.get("Lambda-Extension-Name") or ""
            try:
                events = json.loads(body or b"{}").get("events") or []
            except (ValueError, AttributeError):
                events = None
            if not name or not isinstance(events, list) or any(e not in EXTENSION_EVENTS for e in events):
                self._send(
                    400,
                    {
                        "errorType": "InvalidRequest",
                        "errorMessage": f"needs a Lambda-Extension-Name header and events from {list(EXTENSION_EVENTS)}",
                    },
                )
                return
            extension = api.register_extension(name, events)
            self._send(
                200,
                {"functionName": api.function_arn.rsplit(":", 1)[-1], "functionVersion": "$LATEST", "handler": api.handler},
                {"Lambda-Extension-Identifier": extension.identifier},
            )
            return
        if path in ("/init/error", "/exit/error"):
            identifier = self.headers.get("Lambda-Extension-Identifier") or ""
            error_type = self.headers.get("Lambda-Extension-Function-Error-Type")
            if api.report_extension_error(identifier, path.split("/")[1], body, error_type):
                self._send(202, {"status": "OK"})
            else:
                self._send(
                    403,
                    {"errorType": "Extension.UnknownExtensionIdentifier", "errorMessage": "unknown or missing Lambda-Extension-Identifier"},
                )
            return
        self._send(404, {"errorType": "NotFound", "errorMessage": f"no route {self.path}"})

    def do_POST(self) -> None:
        api = self.server.api
        body = self._body()
        if self.path.startswith(EXTENSION_PREFIX + "/"):
            self._extension_post(body)
            return
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
        if self.path == f"{API_PREFIX}/init/error":
            api.report_init_error(body, error_type)
            self._send(202, {"status": "OK"})
            return
        parts = self.path[len(API_PREFIX) :].strip("/").split("/")
        if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            outcome = "response" if parts[2] == "response" else "error"
            if api.complete(parts[1], outcome, body, error_type):
                self._send(202, {"status": "OK"})
            else:
                self._send(400, {"errorType": "InvalidRequestID", "errorMessage": f"no running invocation {parts[1]}"})
            return
        self._send(404, {"errorType": "NotFound", "errorMessage": f"no route {self.path}"})


def read_chunked(stream: Any, limit: int | None = None) -> bytes:
    """Read a ``Transfer-Encoding: chunked`` body (http.server does not decode it).

    Raises:
        ValueError: the body exceeds ``limit`` bytes or is malformed.
    """
    data = bytearray()
    while True:
        line = stream.readline(1024).strip()
        size = int(line.split(b";", 1)[0] or b"0", 16)
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(data)
        if limit is not None and len(data) + size > limit:
            raise ValueError("body too large")
        data += stream.read(size)
        stream.readline(8)  # the CRLF closing the chunk
