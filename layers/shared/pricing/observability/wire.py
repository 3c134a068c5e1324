"""HTTP/1.1 to the Pushgateway: one kept-alive connection with pipelined requests.

A push writes its requests back to back and returns; the answers are read later, without
blocking, in request order (HTTP/1.1 servers, the Pushgateway's among them, answer pipelined
requests one by one). Why the pusher works that way is in ``docs/metrics.md``.

Example::

    conn = Connection("http://127.0.0.1:9091", {"Content-Type": "text/plain"})
    conn.send([("PUT", "/metrics/job/j", b"x 1\n")], time.monotonic() + 0.25)
    answers = conn.poll(wait_until=time.monotonic() + 0.25)
"""

from __future__ import annotations

import base64
import re
import select
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

# An answer whose head is larger than this is not the Pushgateway's: the connection is dropped.
_MAX_HEAD_BYTES = 64 * 1024
_READ_BYTES = 64 * 1024


class PushError(Exception):
    """One push request failed; ``reason`` is a ``pricing_metrics_push_failures_total`` label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def grouping_path(labels: Iterable[tuple[str, str]]) -> str:
    """``/metrics/job/<job>/<name>/<value>...``, base64-encoding values a path cannot carry."""
    parts = ["/metrics"]
    for name, value in labels:
        if value == "":
            parts += [f"{name}@base64", "="]
        elif "/" in value:
            parts += [f"{name}@base64", base64.urlsafe_b64encode(value.encode()).decode()]
        else:
            parts += [name, quote(value, safe="")]
    return "/".join(parts)


class Answer(NamedTuple):
    status: int
    body: bytes
    close: bool  # the server closes the connection after this answer


_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})[^\r\n]*\r\n")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)[ \t]*\r\n", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
_CONNECTION = re.compile(rb"\r\nconnection:([^\r\n]*)", re.IGNORECASE)
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]+)[^\r\n]*\r\n")


def parse_answer(buf: bytearray, eof: bool) -> tuple[Answer, int] | None:
    """The first complete HTTP/1.x answer in ``buf`` and the bytes it takes, or None if incomplete.

    ``eof``: nothing more will arrive (an answer without a length runs to the end). Raises
    ValueError for anything that is not an HTTP/1.x answer.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > _MAX_HEAD_BYTES:
            raise ValueError("answer head too large")
        return None
    status_line = _STATUS_LINE.match(buf)
    if status_line is None or status_line.end() > end + 2:
        raise ValueError(f"not an HTTP/1.x answer: {bytes(buf[:80])!r}")
    status = int(status_line.group(2))
    head = bytes(buf[status_line.end() - 2 : end + 4])  # "\r\n" + header lines + "\r\n\r\n"
    connection = _CONNECTION.search(head)
    connection_value = connection.group(1).lower() if connection else b""
    close = b"close" in connection_value or (status_line.group(1) == b"0" and b"keep-alive" not in connection_value)
    start = end + 4
    if status < 200 or status in (204, 304):
        return Answer(status, b"", close), start
    if _CHUNKED.search(head):
        body = bytearray()
        pos = start
        while True:
            size_line = _CHUNK_SIZE.match(buf, pos)
            if size_line is None:
                if buf.find(b"\r\n", pos) >= 0:
                    raise ValueError("malformed chunk size")
                return None
            size = int(size_line.group(1), 16)
            pos = size_line.end()
            if size == 0:  # then trailer lines, up to an empty one
                if buf[pos : pos + 2] == b"\r\n":
                    return Answer(status, bytes(body), close), pos + 2
                trailers_end = buf.find(b"\r\n\r\n", pos)
                return None if trailers_end < 0 else (Answer(status, bytes(body), close), trailers_end + 4)
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos : pos + size]
            pos += size + 2
    length = _CONTENT_LENGTH.search(head)
    if length is not None:
        stop = start + int(length.group(1))
        if len(buf) < stop:
            return None
        return Answer(status, bytes(buf[start:stop]), close), stop
    if not eof:  # no length: the body runs to the end of the connection
        return None
    return Answer(status, bytes(buf[start:]), True), len(buf)


# Readable, or the other side has shut down its end (Linux tells both in one poll()).
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_READ_EVENTS = select.POLLIN | _POLLRDHUP
_CLOSED_EVENTS = select.POLLHUP | select.POLLERR | _POLLRDHUP


class Connection:
    """One keep-alive HTTP/1.1 connection to the Pushgateway, with requests in flight;
    ``headers`` go with every request (content type, authorization).

    ``send`` writes requests back to back without waiting; ``poll`` takes the answers that have
    arrived, in request order, waiting only if asked to; ``request`` is one request waited for
    (pruning). ``closed`` turns true when the other side closed the connection or broke the
    protocol: no further answer will come, and the next ``send`` needs ``close()`` first.

    The socket is non-blocking once open, and one ``poll()`` tells whether anything arrived or
    the other side closed: a push that finds its predecessor's answers waiting makes three system
    calls (poll, read, write), which on a small VM is much of what the push costs.
    """

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"PUSHGATEWAY_URL must be an http(s) URL, got {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self.headers = dict(headers)
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != (443 if self.https else 80):
            host += f":{self.port}"
        fixed = {"Host": host, "User-Agent": "pricing-metrics-push", **self.headers}
        self._fixed_headers = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._fixed_headers.encode("latin-1")  # a credential a header cannot carry fails here, once
        self._would_block: tuple[type[BaseException], ...] = (BlockingIOError,)
        if self.https:
            import ssl  # only an https Pushgateway pays for the import

            self._would_block = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
        self._sock: socket.socket | None = None
        self._poller: Any = None
        self._buf = bytearray()
        self.unanswered = 0
        self.closed = False

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._poller = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self._buf.clear()
        self.unanswered = 0
        self.closed = False

    def _open(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("push deadline passed before connecting")
        sock = socket.create_connection((self.host, self.port), timeout=remaining)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.https:
                import ssl

                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(0.0)
        except BaseException:
            sock.close()
            raise
        self._poller = select.poll()
        self._poller.register(sock.fileno(), _READ_EVENTS)
        self._sock = sock

    def encode(self, method: str, path: str, body: bytes | None) -> bytes:
        body = body or b""
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n{self._fixed_headers}Content-Length: {len(body)}\r\n\r\n"
        return head.encode("latin-1") + body

    def send(self, requests: list[tuple[str, str, bytes | None]], deadline: float) -> bool:
        """Write ``requests`` back to back, opening the connection if needed, without waiting
        for answers. Returns True if the connection is new.

        Raises ``PushError``: "timeout" when connecting or writing outlasts ``deadline``
        (monotonic), "connection" for any other failure; the connection is closed then.
        """
        fresh = self._sock is None
        data = memoryview(b"".join(self.encode(*request) for request in requests))
        try:
            if fresh:
                self._open(deadline)
            sock = self._sock
            assert sock is not None  # opened just above, or kept open since the last push
            while data:
                try:
                    data = data[sock.send(data) :]
                except self._would_block:  # the send buffer is full: wait for room, within the deadline
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not select.select([], [sock], [], remaining)[1]:
                        raise TimeoutError("push deadline passed while writing") from None
        except TimeoutError as exc:  # socket.timeout is TimeoutError
            self.close()
            raise PushError("timeout", repr(exc)) from None
        except (OSError, ValueError) as exc:  # ssl's errors are among these
            self.close()
            raise PushError("connection", repr(exc)) from None
        self.unanswered += len(requests)
        return fresh

    def _receive(self, timeout_ms: int) -> bool:
        """Read what has arrived, waiting up to ``timeout_ms`` for something; False at the end
        of the connection (closed by the other side, reset)."""
        sock = self._sock
        assert sock is not None  # only called while connected
        tls_buffered = self.https and sock.pending()  # type: ignore[attr-defined]  # an SSLSocket when https
        events = 0 if tls_buffered else sum(ev for _, ev in self._poller.poll(timeout_ms))
        if not (tls_buffered or events):
            return True
        # Read on until the socket is empty when more may be buffered (TLS), or when the other
        # side is gone (so that its end is seen now, not by the next push).
        drain = self.https or not _POLLRDHUP or bool(events & _CLOSED_EVENTS)
        while True:
            try:
                data = sock.recv(_READ_BYTES)
            except self._would_block:
                return True
            except (OSError, ValueError):
                return False
            if not data:
                return False
            self._buf += data
            if not drain and len(data) < _READ_BYTES:
                return True

    def poll(self, wait_until: float | None = None) -> list[Answer]:
        """The answers that have arrived, oldest first. Never blocks without ``wait_until``
        (monotonic); with it, waits until every request sent is answered or the time has come.

        Also notices, with nothing in flight, that the other side closed an idle connection.
        """
        answers: list[Answer] = []
        if self._sock is None or self.closed:
            return answers
        timeout_ms = 0
        while True:
            open_ = self._receive(timeout_ms)
            while self._buf:
                try:
                    parsed = parse_answer(self._buf, eof=not open_)
                except ValueError:
                    self.closed = True
                    return answers
                if parsed is None:
                    break
                answer, used = parsed
                del self._buf[:used]
                if answer.status < 200:
                    continue  # informational: the real answer follows
                if not self.unanswered:  # an answer to nothing: out of step, trust nothing more
                    self.closed = True
                    return answers
                self.unanswered -= 1
                answers.append(answer)
                if answer.close:
                    self.closed = True
                    return answers
            if not open_:
                self.closed = True
                return answers
            if wait_until is None or not self.unanswered:
                return answers
            remaining = wait_until - time.monotonic()
            if remaining <= 0:
                return answers
            timeout_ms = max(1, int(remaining * 1000))

    def request(self, method: str, path: str, body: bytes | None, deadline: float) -> tuple[int, bytes]:
        """Send one request and wait for its answer until ``deadline``; raises ``PushError``.

        A kept-alive connection found closed by the other side is replaced once: the request
        never reached the Pushgateway.
        """
        if self.unanswered:
            self.close()  # answers still owed to earlier requests: start clean
        for _ in range(2):
            self.poll()
            if self.closed:
                self.close()
            fresh = self.send([(method, path, body)], deadline)
            answers = self.poll(wait_until=deadline)
            closed = self.closed
            if answers:
                if closed:
                    self.close()
                return answers[0].status, answers[0].body
            self.close()
            if not closed:
                raise PushError("timeout", f"{method} not answered within the deadline")
            if fresh:
                break
        raise PushError("connection", f"{method}: connection closed without an answer")


class AnswersAtOnce:
    """A transport with only ``request()`` (each request answered before the next is sent, as
    a test's recorder or a bench's byte counter) behind the ``send``/``poll`` interface."""

    connected = True
    closed = False
    answers_at_once = True

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._answers: list[Answer] = []

    def send(self, requests: list[tuple[str, str, bytes | None]], deadline: float) -> bool:
        for method, path, body in requests:
            status, data = self.transport.request(method, path, body, deadline)
            self._answers.append(Answer(status, data, False))
        return False

    def poll(self, wait_until: float | None = None) -> list[Answer]:
        answers, self._answers = self._answers, []
        return answers

    def close(self) -> None:
        self._answers = []
        self.transport.close()


def authorization(username: str = "", password: str = "", bearer_token: str = "") -> dict[str, str]:
    """The ``Authorization`` header of a secured Pushgateway (empty: none)."""
    if bearer_token:
        return {"Authorization": f"Bearer {bearer_token}"}
    if username:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    return {}
