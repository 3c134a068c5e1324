"""A local stand-in for Sentry's ingestion endpoint, for tests that run the real SDK and transport.

It accepts ``POST /api/<project>/envelope/`` (gzip, deflate, brotli when installed, or plain),
splits each envelope into its items and keeps them for assertions. It also keeps every decoded
body verbatim, so a test can search the bytes that actually left the process for a secret.

``SentryReceiver(answer=False)`` accepts connections and never answers, to show that an
unreachable Sentry costs an invocation only a bounded flush.

Example::

    with SentryReceiver() as receiver:
        sentry_sdk.init(dsn=receiver.dsn)
        sentry_sdk.capture_message("hello")
        sentry_sdk.flush()
        assert receiver.wait_for(lambda r: r.events)
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from support.stub_http import Reply, Request, StubServer

try:  # the SDK compresses with brotli when the module is importable
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

PUBLIC_KEY = "0123456789abcdef0123456789abcdef"


@dataclass
class Item:
    """One envelope item: its header (``type`` is the item type) and its payload."""

    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Envelope:
    """One received envelope: the project from the URL, its header, its items, the decoded body
    and the Content-Encoding it came with."""

    project: str
    headers: dict[str, Any]
    items: list[Item] = field(default_factory=list)
    raw: bytes = b""
    content_encoding: str = ""


def parse_envelope(body: bytes, project: str = "") -> Envelope:
    """Split a decoded envelope body into header and items (newline-delimited; an item header's
    ``length``, when present, gives its payload's exact size, which may contain newlines)."""
    first, _, rest = body.partition(b"\n")
    envelope = Envelope(project=project, headers=json.loads(first) if first.strip() else {}, raw=body)
    position = 0
    while position < len(rest):
        end = rest.find(b"\n", position)
        header_line = rest[position:] if end < 0 else rest[position:end]
        position = len(rest) if end < 0 else end + 1
        if not header_line.strip():
            continue
        item_headers = json.loads(header_line)
        length = item_headers.get("length")
        if length is not None:
            payload = rest[position : position + int(length)]
            position += int(length)
            if rest[position : position + 1] == b"\n":
                position += 1
        else:
            end = rest.find(b"\n", position)
            payload = rest[position:] if end < 0 else rest[position:end]
            position = len(rest) if end < 0 else end + 1
        envelope.items.append(Item(headers=item_headers, payload=payload))
    return envelope


def _decode(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br" and brotli is not None:
        return brotli.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class SentryReceiver:
    """Sentry's envelope endpoint on a free 127.0.0.1 port (a ``StubServer`` that parses what it
    records), or with ``answer=False`` a socket that accepts and never answers."""

    def __init__(self, *, answer: bool = True, project: str = "42") -> None:
        self.answer = answer
        self.project = project
        self.envelopes: list[Envelope] = []
        self.rejected: list[str] = []
        self._lock = threading.Lock()
        self._server: StubServer | None = None
        self._silent: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SentryReceiver:
        if self.answer:
            self._server = StubServer(self._reply).start()
            self.port = self._server.port
            return self
        self._silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._silent.bind(("127.0.0.1", 0))
        self._silent.listen(64)
        self._silent.settimeout(0.2)
        self.port = self._silent.getsockname()[1]
        self._thread = threading.Thread(target=self._hold_connections, name="sentry-blackhole", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        if self._silent is not None:
            self._silent.close()

    def __enter__(self) -> SentryReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self.port}/{self.project}"

    # ------------------------------------------------------------------ what arrived

    def items(self, item_type: str | None = None) -> list[Item]:
        with self._lock:
            return [i for e in self.envelopes for i in e.items if item_type is None or i.type == item_type]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Error and message events."""
        return [i.json() for i in self.items("event")]

    @property
    def transactions(self) -> list[dict[str, Any]]:
        return [i.json() for i in self.items("transaction")]

    @property
    def check_ins(self) -> list[dict[str, Any]]:
        return [i.json() for i in self.items("check_in")]

    @property
    def raw(self) -> bytes:
        """Every decoded envelope body received so far, concatenated."""
        with self._lock:
            return b"\n".join(e.raw for e in self.envelopes)

    def clear(self) -> None:
        with self._lock:
            self.envelopes.clear()

    def wait_for(self, predicate: Callable[[SentryReceiver], Any], timeout: float = 10.0) -> Any:
        """Poll until ``predicate(self)`` is truthy (returning it) or ``timeout`` passes (returning
        its last, falsy value): the SDK sends from a background thread."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self)
            if result or time.monotonic() >= deadline:
                return result
            time.sleep(0.02)

    # ------------------------------------------------------------------ serving

    def _record(self, path: str, encoding: str, body: bytes) -> int:
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) != 3 or parts[0] != "api" or parts[2] != "envelope":
            self.rejected.append(f"path {path}")
            return 404
        try:
            envelope = parse_envelope(_decode(body, encoding), project=parts[1])
            envelope.content_encoding = encoding
        except Exception as exc:  # noqa: BLE001 - a malformed envelope is a test failure, kept for the report
            self.rejected.append(f"{type(exc).__name__}: {exc}")
            return 400
        with self._lock:
            self.envelopes.append(envelope)
        return 200

    def _reply(self, request: Request) -> Reply:
        status = self._record(request.target, request.header("Content-Encoding") or "", request.body)
        answer = b'{"id":"00000000000000000000000000000000"}' if status == 200 else b"{}"
        return Reply(status, answer, {"Content-Type": "application/json"})

    def _hold_connections(self) -> None:
        # Accept and keep every connection open without reading or answering: the client's send
        # blocks until its own timeout, as with a Sentry behind a black-holing network.
        assert self._silent is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._silent.accept()
            except (TimeoutError, OSError):
                continue
            self._held.append(conn)
