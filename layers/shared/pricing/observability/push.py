"""Pushing the container's metrics to a Prometheus Pushgateway at the end of every invocation.

Lambda has no long-running process to scrape, so each invocation pushes. How, and why so:

**One writer per group.** A push replaces what its group held, so two containers pushing
cumulative counters into one group overwrite each other: the total is wrong and ``rate()``
sees fake resets. Every container therefore owns its groups: ``job="pricing-<function>"``,
``instance=<random id drawn at cold start>``. Its counters are cumulative for its life and only
ever grow; the fleet's total is ``sum()`` over groups and is exact however many containers run
at once, because nothing else ever writes a container's groups. (Stable leased slot identities
would keep fewer series but need a lease store with compare-and-set on the invocation path, and a
slot taken over by a new container has to adopt its predecessor's totals without double counting;
a random id needs no coordination and cannot collide in practice: 64 random bits.)

**PUT, not POST.** The container is the only writer and always sends the group's complete
current state, so replacing the whole group is exactly right, and it also drops a family a
group no longer carries. POST would replace only the families sent and keep the rest, which
buys nothing here.

**Bounded push size.** Families labelled by ``property_id`` would make a container's registry,
and so a whole-registry push, grow with every property it has served. Their series go instead to
one sub-group per property, ``{job, instance, property_id}``; the per-property label moves into
the grouping key, so Prometheus sees exactly the same series. An invocation pushes the base group
(the fixed-size families) and only the sub-groups of properties it touched, so its size does not
depend on how many properties the container served before. ``property_id`` itself is capped per
container (``METRICS_MAX_PROPERTY_LABELS``; later ones count as ``__other__``).

**No lingering gauges.** The Pushgateway never forgets a group, and a dead container cannot
delete its own (Lambda gives the function no shutdown hook). ``prune_stale_groups`` runs from a
scheduled invocation and deletes every ``pricing-*`` group whose last push is older than
``PUSHGATEWAY_GROUP_TTL_SECONDS``, going by the push times the Pushgateway itself records in
``/api/v1/metrics``. A frozen but living container whose groups were pruned simply recreates them
with its next push: its counters carry on from their previous values (no reset), and range
functions skip the gap. Dashboards and alerts read gauges as ``sum``/``max`` over the groups that
are left, which are the live containers' (and those dead for less than the TTL).

**First increments are not lost.** A counter's first sample is invisible to ``increase()``:
a series first seen at 5 has no earlier 0, so those 5 never count, and with per-container groups
every new container starts new series (measured here: about 4 % of the requests lost to
``increase()`` under container churn). So every counter and histogram series is pushed at zero
first, and with its value only from the first push at least ``METRICS_NEW_SERIES_HOLD_SECONDS``
later (set it above the scrape interval): Prometheus has scraped the zero by then and counts
everything after it. This covers a new container (all its series), a property's first event in a
container, a first error type. Label sets known in advance (the function's routes and statuses,
pricing methods, push failure reasons) are created at zero at cold start, so they are announced
with the first push and never wait again. A group still holding counts back is pushed again by a
later invocation even if it does not touch it (the base group always; a few property groups per
push). The price: a container never invoked after its hold ends takes the held counts with it
-- counts that without the hold would have reached the Pushgateway's raw sums but, being a new
series' first samples, never ``increase()``/``rate()``, which is what dashboards and alerts read.
``METRICS_NEW_SERIES_HOLD_SECONDS=0`` turns the hold off. A zero counts as announced only once the
Pushgateway has accepted its push (2xx), dated from when the push was written: the Pushgateway
stores a push as it receives it, milliseconds later, well inside the margin the hold keeps above
the scrape interval.

**The invocation does not wait for the Pushgateway.** By default the Pushgateway checks every
push for consistency against everything it holds before it answers, which costs it most of a
millisecond per group even when it holds little, and more as it holds more; waiting for that,
once per group, was most of what a push cost the invocation (measured here: about 1.5 of 1.8 ms
for the base group and one property group). The container's pusher therefore
writes its requests (one per group, back to back on the kept-alive HTTP/1.1 connection;
HTTP/1.1 servers, the Pushgateway's Go server among them, answer such pipelined requests one by
one, in order) and returns; the next push reads the answers, which have long arrived by then,
without blocking. Why that is safe:

- every push carries the group's complete, cumulative state (PUT), so a push whose fate is not
  yet known needs no bookkeeping beyond "which groups did it carry": if it turns out to have
  failed, those groups are simply pushed again with their newer values, and nothing between the
  two pushes is lost -- the same reasoning that already lets a failed push wait for a later one;
- everything that must only happen after the Pushgateway has accepted a push happens when its
  answer is read: a held series counts as announced, a group stops being pending, the back-off
  ends. A failure found there is counted in ``pricing_metrics_push_failures_total{reason}`` and
  logged with the request id of the invocation that *sent* the push (the one the failure belongs
  to), one failure per push, as before;
- once ``send`` has returned, the request is the kernel's business: a frozen process does not
  hold it back. A push is a few kB, inside TCP's initial congestion window, so it normally
  leaves the machine within the ``send`` call itself;
- at most one push is in flight. A push finding the previous one still unanswered does not wait
  and does not send: it is folded into a later one. Its groups are owed from then on, and the
  next push written carries their newer totals (cumulative values fold any number of
  invocations into one push; owed groups beyond the invocation's own go a few per push, so a
  push stays small). A container invoked faster than the Pushgateway answers thus sends fewer
  pushes instead of queueing them in front of a Pushgateway that is already the slower side;
- a push unanswered for ``PUSHGATEWAY_TIMEOUT_SECONDS`` is a timeout: the connection is closed
  (an answer arriving later can no longer be mistaken for a newer push's), the failure counted,
  its groups pushed again after the back-off. Nothing ever blocks on the answers, so a
  Pushgateway that accepts connections but never answers costs an invocation nothing but the
  ``send``, and is tried once per back-off period.

What is lost in the worst case: the counts recorded since a container's last *written* push, if
the container is never invoked again -- the invocations whose push was folded because the
previous one was unanswered, plus the last push if it failed. That needs a container invoked
faster than the Pushgateway answers and then retired; a failed push was lost the same way when
every push waited for its answer. (Should an execution environment be paused before its kernel
has sent all of a push, the rest goes when it resumes, or is lost with it like a folded push.)
``MetricsPusher(deferred=False)`` waits for the answers within the timeout instead, for callers
that read the Pushgateway right after pushing (tests, scripts).

**Never in the way.** One persistent keep-alive connection per container (a new connection per
push costs several times the push itself), checked for a close by the other side before each
push (a connection can die while the container is frozen) and reopened then; a reused connection
that closes without answering is not a failure: its groups go with the next push on a new
connection. Writing a push (and opening the connection) gets ``PUSHGATEWAY_TIMEOUT_SECONDS``.
Any failure is counted in ``pricing_metrics_push_failures_total{reason}``, logged with the request
id, and swallowed. After a timeout the container skips pushes for a growing back-off (1 s up to
30 s), so a Pushgateway that stopped answering is tried once per back-off period.

**Rendering.** Each series' sample names and labels are rendered once and kept; a push reads the
values, and re-renders a series' text only when its values changed since the last push.

Environment (through ``pricing.settings``): ``PUSHGATEWAY_URL`` (empty: no push),
``PUSHGATEWAY_TIMEOUT_SECONDS``, ``PUSHGATEWAY_USERNAME``/``PUSHGATEWAY_PASSWORD`` (basic auth) or
``PUSHGATEWAY_BEARER_TOKEN``, ``PUSHGATEWAY_GROUP_TTL_SECONDS``, ``METRICS_NEW_SERIES_HOLD_SECONDS``,
``AWS_LAMBDA_FUNCTION_NAME``, ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``.

Example::

    from pricing.observability.push import pushes_metrics

    @pushes_metrics
    def handler(event, context):
        ...
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import select
import socket
import threading
import time
import uuid
from itertools import accumulate
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple
from urllib.parse import quote, urlsplit

from prometheus_client.utils import floatToGoString
from prometheus_client.values import MutexValue

from pricing.observability import metrics as metrics_module
from pricing.observability.metrics import PricingMetrics, Series
from pricing.settings import Settings, get_settings

logger = logging.getLogger("pricing.observability.push")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: At most this many pending (held) property groups are re-pushed by an invocation that did not
#: touch them: enough to drain a retrain batch over a few invocations, small enough to stay cheap.
MAX_PENDING_GROUPS_PER_PUSH = 4
#: Time the scheduled pruning may take to list and delete groups (it is off the request path).
PRUNE_TIMEOUT_SECONDS = 10.0
BACKOFF_START_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
# An answer whose head is larger than this is not the Pushgateway's: the connection is dropped.
_MAX_HEAD_BYTES = 64 * 1024
_READ_BYTES = 64 * 1024

# A container's identity: drawn once per process, i.e. once per Lambda execution environment.
_INSTANCE = uuid.uuid4().hex[:16]


def container_instance() -> str:
    """The ``instance`` label of this container's groups."""
    return _INSTANCE


def function_short_name(function_name: str) -> str:
    """``score``/``ingest``/``retrain`` from a deployed function name such as ``pricing-ScoreFunction-1A2B``."""
    lowered = function_name.lower()
    for short, words in (("score", ("score",)), ("ingest", ("ingest", "learn")), ("retrain", ("retrain",))):
        if any(w in lowered for w in words):
            return short
    return re.sub(r"[^a-z0-9_.-]+", "-", lowered).strip("-")[:40] or "local"


class PushError(Exception):
    """One push request failed; ``reason`` is a ``pricing_metrics_push_failures_total`` label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class PushStats:
    """What one push sent: for the bench and for tests.

    ``folded``: nothing was sent because the previous push was still unanswered; the next push
    carries this invocation's counts (see the module doc).
    """

    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0
    ok: bool = True
    groups_left: int = 0
    folded: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "bytes": self.bytes, "seconds": self.seconds,
                "ok": self.ok, "groups_left": self.groups_left, "folded": self.folded}


def _grouping_path(labels: Iterable[tuple[str, str]]) -> str:
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


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# ---------------------------------------------------------------------- the wire


class _Answer(NamedTuple):
    status: int
    body: bytes
    close: bool  # the server closes the connection after this answer


_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})[^\r\n]*\r\n")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)[ \t]*\r\n", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
_CONNECTION = re.compile(rb"\r\nconnection:([^\r\n]*)", re.IGNORECASE)
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]+)[^\r\n]*\r\n")


def _parse_answer(buf: bytearray, eof: bool) -> tuple[_Answer, int] | None:
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
    head = bytes(buf[status_line.end() - 2:end + 4])  # "\r\n" + header lines + "\r\n\r\n"
    connection = _CONNECTION.search(head)
    connection_value = connection.group(1).lower() if connection else b""
    close = b"close" in connection_value or (status_line.group(1) == b"0" and b"keep-alive" not in connection_value)
    start = end + 4
    if status < 200 or status in (204, 304):
        return _Answer(status, b"", close), start
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
                if buf[pos:pos + 2] == b"\r\n":
                    return _Answer(status, bytes(body), close), pos + 2
                trailers_end = buf.find(b"\r\n\r\n", pos)
                return None if trailers_end < 0 else (_Answer(status, bytes(body), close), trailers_end + 4)
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            pos += size + 2
    length = _CONTENT_LENGTH.search(head)
    if length is not None:
        stop = start + int(length.group(1))
        if len(buf) < stop:
            return None
        return _Answer(status, bytes(buf[start:stop]), close), stop
    if not eof:  # no length: the body runs to the end of the connection
        return None
    return _Answer(status, bytes(buf[start:]), True), len(buf)


# Readable, or the other side has shut down its end (Linux tells both in one poll()).
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_READ_EVENTS = select.POLLIN | _POLLRDHUP
_CLOSED_EVENTS = select.POLLHUP | select.POLLERR | _POLLRDHUP


class _Connection:
    """One keep-alive HTTP/1.1 connection to the Pushgateway, with requests in flight.

    ``send`` writes requests back to back without waiting; ``poll`` takes the answers that have
    arrived, in request order, waiting only if asked to; ``request`` is one request waited for
    (pruning). ``closed`` turns true when the other side closed the connection or broke the
    protocol: no further answer will come, and the next ``send`` needs ``close()`` first.

    The socket is non-blocking once open, and one ``poll()`` tells whether anything arrived or
    the other side closed: a push that finds its predecessor's answers waiting makes three system
    calls (poll, read, write), which on a small VM is much of what the push costs.
    """

    def __init__(self, settings: Settings) -> None:
        parts = urlsplit(settings.pushgateway_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"PUSHGATEWAY_URL must be an http(s) URL, got {settings.pushgateway_url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self.headers = {"Content-Type": CONTENT_TYPE}
        if settings.pushgateway_bearer_token:
            self.headers["Authorization"] = f"Bearer {settings.pushgateway_bearer_token}"
        elif settings.pushgateway_username:
            token = base64.b64encode(f"{settings.pushgateway_username}:{settings.pushgateway_password}".encode())
            self.headers["Authorization"] = f"Basic {token.decode()}"
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
            while data:
                try:
                    data = data[self._sock.send(data):]
                except self._would_block:  # the send buffer is full: wait for room, within the deadline
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not select.select([], [self._sock], [], remaining)[1]:
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
        tls_buffered = self.https and self._sock.pending()
        events = 0 if tls_buffered else sum(ev for _, ev in self._poller.poll(timeout_ms))
        if not (tls_buffered or events):
            return True
        # Read on until the socket is empty when more may be buffered (TLS), or when the other
        # side is gone (so that its end is seen now, not by the next push).
        drain = self.https or not _POLLRDHUP or bool(events & _CLOSED_EVENTS)
        while True:
            try:
                data = self._sock.recv(_READ_BYTES)
            except self._would_block:
                return True
            except (OSError, ValueError):
                return False
            if not data:
                return False
            self._buf += data
            if not drain and len(data) < _READ_BYTES:
                return True

    def poll(self, wait_until: float | None = None) -> list[_Answer]:
        """The answers that have arrived, oldest first. Never blocks without ``wait_until``
        (monotonic); with it, waits until every request sent is answered or the time has come.

        Also notices, with nothing in flight, that the other side closed an idle connection.
        """
        answers: list[_Answer] = []
        if self._sock is None or self.closed:
            return answers
        timeout_ms = 0
        while True:
            open_ = self._receive(timeout_ms)
            while self._buf:
                try:
                    parsed = _parse_answer(self._buf, eof=not open_)
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


class _AnswersAtOnce:
    """A transport with only ``request()`` (each request answered before the next is sent, as
    a test's recorder or a bench's byte counter) behind the ``send``/``poll`` interface."""

    connected = True
    closed = False
    answers_at_once = True

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._answers: list[_Answer] = []

    def send(self, requests: list[tuple[str, str, bytes | None]], deadline: float) -> bool:
        for method, path, body in requests:
            status, data = self.transport.request(method, path, body, deadline)
            self._answers.append(_Answer(status, data, False))
        return False

    def poll(self, wait_until: float | None = None) -> list[_Answer]:
        answers, self._answers = self._answers, []
        return answers

    def close(self) -> None:
        self._answers = []
        self.transport.close()


# ---------------------------------------------------------------------- rendering


def _samples(child: Any) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    # _created: creation times are needed by no query here, and were a third of the bytes.
    return [(suffix, tuple(labels.items()), value)
            for suffix, labels, value, *_ in child._samples() if suffix != "_created"]  # noqa: SLF001


def _sample_prefix(name: str, labels: Iterable[tuple[str, object]]) -> str:
    text = ",".join(f'{n}="{_escape_label(str(v))}"' for n, v in labels)
    return f"{name}{{{text}}} " if text else f"{name} "


def _value_reader(kind: str, child: Any) -> Callable[[], tuple[float, ...]] | None:
    """Reads a child's sample values straight from its value cells, in ``_samples()`` order:
    a tuple of floats, at a fraction of the cost of building the samples. None when the child
    is not the plain single-process kind this knows.

    A cell is a float behind a lock that only serialises writers; reading the float is atomic
    (one attribute load), so the reader takes no lock: a histogram read while being observed may
    show one observation in some buckets but not yet in others, as ``_samples()`` may too.
    """
    if "_child_samples" in vars(child):  # e.g. a gauge bound to a function
        return None
    try:
        if kind in ("counter", "gauge"):
            cell = child._value  # noqa: SLF001
            if type(cell) is not MutexValue:
                return None
            return lambda: (cell._value,)  # noqa: SLF001
        if kind == "histogram":
            cells = tuple(child._buckets)  # noqa: SLF001
            total = child._sum if child._upper_bounds[0] >= 0 else None  # noqa: SLF001
            if any(type(c) is not MutexValue for c in (*cells, *([total] if total else []))):
                return None

            def read() -> tuple[float, ...]:
                out = list(accumulate([c._value for c in cells]))  # noqa: SLF001
                out.append(out[-1])  # _count
                if total is not None:
                    out.append(total._value)  # noqa: SLF001
                return tuple(out)

            return read
    except (AttributeError, IndexError):
        return None
    return None


class _SeriesText:
    """One series' sample lines: names and labels rendered once, values on change only."""

    __slots__ = ("_child", "_name", "_own", "_prefixes", "_read", "_values", "_text", "zero")

    def __init__(self, series: Series) -> None:
        fam = series.family
        self._child = series.child
        self._name = fam.metric._name  # noqa: SLF001 - sample names are the wrapper's name + suffix
        self._own = [(n, v) for n, v in zip(fam.labelnames, series.labelvalues) if n != "property_id"]
        samples = _samples(series.child)
        self._prefixes = tuple(_sample_prefix(self._name + suffix, self._own + list(labels))
                               for suffix, labels, _ in samples)
        read = _value_reader(fam.kind, series.child)
        # Trust the shortcut only if it reads what the library itself reports (else: a changed
        # library, or a value moving right now; either way the general path is right).
        if read is None or read() != tuple(value for *_, value in samples):
            read = None
        self._read = read
        self._values: tuple | None = None
        self._text = ""
        self.zero = "".join(prefix + "0.0\n" for prefix in self._prefixes)

    def _current(self) -> tuple:
        return self._read() if self._read is not None else tuple(_samples(self._child))

    def has_counts(self) -> bool:
        values = self._current()
        return any(values) if self._read is not None else any(value for *_, value in values)

    def text(self) -> str:
        values = self._current()
        if values != self._values:
            self._values = values
            if self._read is not None:
                self._text = "".join(f"{prefix}{floatToGoString(value)}\n"
                                     for prefix, value in zip(self._prefixes, values))
            else:  # labels may change too (an info's)
                self._text = "".join(f"{_sample_prefix(self._name + suffix, self._own + list(labels))}"
                                     f"{floatToGoString(value)}\n" for suffix, labels, value in values)
        return self._text


# ---------------------------------------------------------------------- pushing


class _Rendered(NamedTuple):
    """A group as one push carried it, and what its acceptance settles."""

    group: str | None
    announce: list[tuple]
    publish: list[tuple]
    pending_at: float | None


@dataclass
class _Flight:
    """A push written to the connection whose answers have not all been read yet."""

    sent_at: float
    request_id: str | None
    fresh: bool  # written on a connection opened for it
    groups: list[_Rendered]
    answered: int = 0
    failure: PushError | None = None
    retouched: set[str] = field(default_factory=set)  # property groups recorded into since


# What settling the push in flight found.
_IDLE, _WAITING, _ACCEPTED, _FAILED, _UNANSWERED = "idle", "waiting", "accepted", "failed", "unanswered"


class MetricsPusher:
    """Pushes one container's ``PricingMetrics`` to its own Pushgateway groups (see module doc).

    ``deferred``: write each push and read its answers at the next push (the container's pusher);
    otherwise each push waits for its answers within ``PUSHGATEWAY_TIMEOUT_SECONDS``, for callers
    that read the Pushgateway right after. ``clock`` is monotonic seconds; tests pass a fake one
    to step over the new-series hold and the answer timeout.
    """

    def __init__(self, metrics: PricingMetrics, settings: Settings, function: str | None = None,
                 instance: str | None = None, clock: Callable[[], float] = time.monotonic,
                 deferred: bool = False) -> None:
        self.metrics = metrics
        self.settings = settings
        self.function = function or function_short_name(settings.function_name)
        self.job = f"pricing-{self.function}"
        self.instance = instance or _INSTANCE
        self.clock = clock
        self.deferred = deferred
        self.hold = settings.metrics_new_series_hold_seconds
        self.stats = PushStats()
        #: Pushes folded into a later one because the previous push was still unanswered.
        self.folded = 0
        self._lock = threading.Lock()
        self._conn: Any = _Connection(settings) if settings.pushgateway_url else None
        self._adapter: _AnswersAtOnce | None = None
        metrics.preinitialise(self.function)
        if not metrics.service_info._value:  # noqa: SLF001 - unset unless the app set it
            metrics.set_service_info(settings.release, settings.environment, self.job)
        self._announced: dict[tuple, float] = {}
        self._published: set[tuple] = set()
        # Property group -> earliest useful re-push time. A group is also owed from the moment
        # a push carries it until the Pushgateway has accepted that push.
        self._pending: dict[str, float] = {}
        self._flight: _Flight | None = None
        self._texts: dict[tuple, _SeriesText] = {}
        self._headers: dict[str, str] = {}
        self._backoff_until = 0.0
        self._backoff = 0.0

    # ------------------------------------------------------------------ rendering

    def _header(self, fam) -> str:
        header = self._headers.get(fam.name)
        if header is None:
            kind = "gauge" if fam.kind == "info" else fam.kind
            doc = fam.documentation.replace("\\", "\\\\").replace("\n", "\\n")
            header = self._headers[fam.name] = f"# HELP {fam.name} {doc}\n# TYPE {fam.name} {kind}\n"
        return header

    def render(self, group: str | None, now: float) -> tuple[bytes, list[tuple], list[tuple], float | None]:
        """The text body of one group, the series it announces and publishes, and when to re-push.

        A series held at zero that has counts of its own makes the group pending: the returned
        time is when its hold ends (None: nothing held back).
        """
        parts: list[str] = []
        announce: list[tuple] = []
        publish: list[tuple] = []
        pending_at: float | None = None
        family = None
        hold = self.hold
        texts = self._texts
        for series in self.metrics.series(group):
            fam = series.family
            if fam is not family:
                family = fam
                parts.append(self._header(fam))
            key = (group, fam.name, series.labelvalues)
            text = texts.get(key)
            if text is None:
                text = texts[key] = _SeriesText(series)
            if hold > 0 and fam.cumulative and key not in self._published:
                since = self._announced.get(key)
                if since is not None and now - since >= hold:
                    publish.append(key)
                else:
                    if since is None:
                        announce.append(key)
                    parts.append(text.zero)
                    if text.has_counts():
                        ready = (now if since is None else since) + hold
                        pending_at = ready if pending_at is None else max(pending_at, ready)
                    continue
            parts.append(text.text())
        return "".join(parts).encode(), announce, publish, pending_at

    def _path(self, group: str | None) -> str:
        labels = [("job", self.job), ("instance", self.instance)]
        if group is not None:
            labels.append(("property_id", group))
        return _grouping_path(labels)

    # ------------------------------------------------------------------ pushing

    def push(self, request_id: str | None = None) -> PushStats:
        """Push the base group and the groups due now; never raises."""
        with self._lock:
            try:
                return self._push(request_id)
            except Exception:  # noqa: BLE001 - a metrics bug must not fail an invocation
                logger.exception("metrics push failed unexpectedly (request_id=%s)", request_id,
                                 extra={"request_id": request_id})
                # Start clean: the groups are still owed (pending) and a later push sends them;
                # answers still on their way must not be matched to a later push.
                self._flight = None
                try:
                    if self._conn is not None:
                        self._conn.close()
                except Exception:  # noqa: BLE001
                    pass
                self.stats = PushStats(ok=False)
                return self.stats

    def _transport(self) -> Any:
        conn = self._conn
        if conn is None or hasattr(conn, "send"):
            return conn
        if self._adapter is None or self._adapter.transport is not conn:
            self._adapter = _AnswersAtOnce(conn)
        return self._adapter

    def _push(self, request_id: str | None) -> PushStats:
        start = self.clock()
        stats = PushStats()
        conn = self._transport()
        if conn is None:
            self.metrics.drain_touched_properties()
            self.stats = stats
            return stats
        waiting = self._settle(conn, start) == _WAITING
        if start < self._backoff_until:
            self._defer(self.metrics.drain_touched_properties(), start)
            self.metrics.count_push_failure("backoff")
            stats.ok = False
            self.stats = stats
            return stats
        if waiting:
            # Folded into a later push: this invocation's groups are owed from now on, and
            # their totals, cumulative, go with the next push that is written.
            touched = self.metrics.drain_touched_properties()
            self._defer(touched, start)
            self._flight.retouched |= touched
            self.folded += 1
            stats.folded = True
            return stats
        touched = self.metrics.drain_touched_properties()
        self.metrics.update_container_gauges(self.settings.function_memory_mb * 1024 * 1024)
        # Owed longest first, so that none waits behind groups owed again and again.
        due = sorted((at, p) for p, at in self._pending.items() if at <= start and p not in touched)
        groups: list[str | None] = [None, *sorted(touched), *(p for _, p in due[:MAX_PENDING_GROUPS_PER_PUSH])]
        self._defer(groups, start)  # owed until accepted, whatever happens to this push
        now = self.clock()
        carried: list[_Rendered] = []
        requests: list[tuple[str, str, bytes]] = []
        for group in groups:
            body, announce, publish, pending_at = self.render(group, now)
            carried.append(_Rendered(group, announce, publish, pending_at))
            requests.append(("PUT", self._path(group), body))
        deadline = time.monotonic() + self.settings.pushgateway_timeout_seconds
        try:
            fresh = conn.send(requests, deadline)
        except PushError as exc:
            conn.close()
            self._failed(exc, request_id, start)
            stats.ok = False
            stats.groups_left = len(groups)
            stats.seconds = self.clock() - start
            self.stats = stats
            return stats
        stats.requests = len(requests)
        stats.bytes = sum(len(body) for _, _, body in requests)
        self._flight = _Flight(self.clock(), request_id, fresh, carried)
        outcome = _WAITING
        if not self.deferred or getattr(conn, "answers_at_once", False):
            outcome = self._settle(conn, self.clock(), wait_until=None if self.deferred else deadline)
        if outcome in (_FAILED, _UNANSWERED):
            stats.ok = False
            stats.groups_left = sum(1 for g in groups if g is None or g in self._pending)
        stats.seconds = self.clock() - start
        self.stats = stats
        return stats

    def _settle(self, conn: Any, now: float, wait_until: float | None = None) -> str:
        """Read the answers to the push in flight, and settle it if they are all in or if it is
        given up: accepted groups commit their announcements, failures are counted against the
        request that sent them. Never blocks unless ``wait_until`` (monotonic) is given.
        """
        flight = self._flight
        if flight is None:
            if conn.connected:  # did the other side close the kept-alive connection meanwhile?
                conn.poll()
                if conn.closed or getattr(conn, "unanswered", 0):
                    conn.close()
            return _IDLE
        for answer in conn.poll(wait_until):
            if flight.answered == len(flight.groups):
                break
            carried = flight.groups[flight.answered]
            flight.answered += 1
            if answer.status < 300:
                self._accepted(carried, flight.sent_at, flight.retouched)
            elif flight.failure is None:
                kind = "http_4xx" if answer.status < 500 else "http_5xx"
                detail = answer.body[:200].decode(errors="replace")
                flight.failure = PushError(kind, f"HTTP {answer.status}: {detail}")
        missing = len(flight.groups) - flight.answered
        failure = flight.failure
        if not missing:
            outcome = _FAILED if failure else _ACCEPTED
        elif conn.closed:
            # Closed without answering everything. On a kept-alive connection that is the other
            # side having given up on it while we were away: the groups go with the next push,
            # on a new connection. On a connection opened for this push, it is a failure.
            if failure is None and flight.fresh:
                failure = PushError("connection", "closed without answering")
            outcome = _FAILED if failure else _UNANSWERED
        elif wait_until is not None or now - flight.sent_at >= self.settings.pushgateway_timeout_seconds:
            failure = PushError("timeout", f"{missing} of {len(flight.groups)} requests unanswered "
                                           f"after {self.settings.pushgateway_timeout_seconds:g} s")
            outcome = _FAILED
            conn.close()  # an answer arriving late must not be read as a later push's
        else:
            return _WAITING
        self._flight = None
        if conn.closed:
            conn.close()
        if failure is not None:
            self._failed(failure, flight.request_id, now)
        elif outcome == _ACCEPTED:
            self._backoff = 0.0
        return outcome

    def _accepted(self, carried: _Rendered, sent_at: float, retouched: set[str]) -> None:
        # Dated from the write: the Pushgateway stores a push as it receives it.
        for key in carried.announce:
            self._announced[key] = sent_at
        for key in carried.publish:
            self._published.add(key)
            self._announced.pop(key, None)
        # A group recorded into after this push was written stays owed: it has newer counts.
        if carried.group is not None and carried.group not in retouched:
            if carried.pending_at is None:
                self._pending.pop(carried.group, None)
            else:
                self._pending[carried.group] = carried.pending_at

    def _defer(self, groups: Iterable[str | None], now: float) -> None:
        for group in groups:
            if group is not None:
                self._pending[group] = min(self._pending.get(group, now), now)

    def _failed(self, exc: PushError, request_id: str | None, now: float) -> None:
        self.metrics.count_push_failure(exc.reason)
        if exc.reason == "timeout":
            # A hung gateway is then tried once per back-off period, not by every invocation.
            self._backoff = min(BACKOFF_MAX_SECONDS, self._backoff * 2 or BACKOFF_START_SECONDS)
            self._backoff_until = now + self._backoff
        logger.warning("metrics push to the Pushgateway failed (%s); request_id=%s", exc, request_id,
                       extra={"request_id": request_id, "reason": exc.reason})

    @property
    def awaiting_answer(self) -> bool:
        """A push has been written and its answers not all read yet."""
        return self._flight is not None

    def close(self) -> None:
        self._flight = None
        if self._conn is not None:
            self._conn.close()


# ---------------------------------------------------------------------- the container's pusher

_pusher: MetricsPusher | None = None
_pusher_lock = threading.Lock()


def _pusher_for(settings: Settings, function: str | None) -> MetricsPusher:
    global _pusher
    with _pusher_lock:
        if _pusher is None or _pusher.settings != settings or (function and function != _pusher.function):
            if _pusher is not None:
                _pusher.close()
            _pusher = MetricsPusher(metrics_module.METRICS, settings, function, deferred=True)
        return _pusher


def _current_request_id() -> str | None:
    try:
        from pricing.observability.context import current_request_id
    except Exception:  # noqa: BLE001 - the logging context is optional here
        return None
    return current_request_id()


def push_invocation_metrics(request_id: str | None = None, settings: Settings | None = None,
                            function: str | None = None) -> None:
    """Push this container's metrics; call once at the end of every invocation. Never raises.

    ``function`` is the short name in ``job="pricing-<function>"`` (default: derived from
    ``AWS_LAMBDA_FUNCTION_NAME``). Safe to call mid-invocation too, e.g. after each property of a
    long retraining batch. The push is written, not waited for: its answers are read by the next
    call (see the module doc). Environment: see the module docstring.
    """
    try:
        settings = settings or get_settings()
        if not settings.pushgateway_url:
            metrics_module.METRICS.drain_touched_properties()
            return
        _pusher_for(settings, function).push(request_id or _current_request_id())
    except Exception:  # noqa: BLE001 - metrics must never fail an invocation
        logger.exception("metrics push failed unexpectedly (request_id=%s)", request_id)


def last_push_stats() -> dict[str, Any]:
    """Requests, bytes and seconds of this container's last push that was not folded, how many
    pushes were folded into a later one so far, and whether a push awaits its answers."""
    if _pusher is None:
        return {**PushStats().as_dict(), "folded_pushes": 0, "awaiting_answer": False}
    return {**_pusher.stats.as_dict(), "folded_pushes": _pusher.folded, "awaiting_answer": _pusher.awaiting_answer}


def _invocation_request_id(event: Any, context: Any) -> str | None:
    if isinstance(event, dict):
        headers = event.get("headers") or {}
        if isinstance(headers, dict):
            for name, value in headers.items():
                if isinstance(name, str) and name.lower() == "x-request-id" and value:
                    return str(value)
        rc = event.get("requestContext")
        if isinstance(rc, dict) and rc.get("requestId"):
            return str(rc["requestId"])
    return getattr(context, "aws_request_id", None)


def pushes_metrics(handler: Callable | None = None, *, function: str | None = None):
    """Decorate a Lambda ``handler(event, context)`` to push metrics after it returns or raises.

    Usable bare (``@pushes_metrics``) or with the job's short name
    (``@pushes_metrics(function="score")``). The handler's result or exception is passed on
    unchanged; the push never raises.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(event, context):
            try:
                return fn(event, context)
            finally:
                push_invocation_metrics(request_id=_current_request_id() or _invocation_request_id(event, context),
                                        function=function)

        return wrapper

    return decorate(handler) if handler is not None else decorate


# ---------------------------------------------------------------------- pruning dead groups


def prune_stale_groups(settings: Settings | None = None, now: float | None = None) -> int:
    """Delete every ``pricing-*`` group not pushed for ``PUSHGATEWAY_GROUP_TTL_SECONDS``.

    Run from a scheduled invocation (a dead container cannot delete its own groups). Age is the
    Pushgateway's own last push (or failed push) time of the group against ``now`` (Unix seconds,
    default: the clock). Returns the number of groups deleted. Never raises: failures are logged
    and counted with ``reason="prune"``.
    """
    settings = settings or get_settings()
    if not settings.pushgateway_url:
        return 0
    now = time.time() if now is None else now
    deleted = 0
    conn: _Connection | None = None
    try:
        conn = _Connection(settings)
        status, body = conn.request("GET", "/api/v1/metrics", None, time.monotonic() + PRUNE_TIMEOUT_SECONDS)
        if status != 200:
            raise PushError("prune", f"listing groups: HTTP {status}")
        for group in json.loads(body).get("data", []):
            labels: dict[str, str] = group.get("labels", {})
            job = labels.get("job", "")
            if not job.startswith("pricing-"):
                continue  # not ours: other pushers' groups are their business
            if now - _last_push_time(group) <= settings.pushgateway_group_ttl_seconds:
                continue
            path = _grouping_path([("job", job), *sorted((k, v) for k, v in labels.items() if k != "job")])
            status, _ = conn.request("DELETE", path, None, time.monotonic() + PRUNE_TIMEOUT_SECONDS)
            if status >= 300:
                raise PushError("prune", f"deleting {path}: HTTP {status}")
            deleted += 1
    except Exception as exc:  # noqa: BLE001 - a hygiene job failing must not take anything down
        metrics_module.METRICS.count_push_failure("prune")
        logger.warning("pruning stale Pushgateway groups failed after %d deletions: %r", deleted, exc)
    finally:
        if conn is not None:
            conn.close()
    if deleted:
        logger.info("pruned %d stale Pushgateway groups", deleted)
    return deleted


def _last_push_time(group: dict) -> float:
    latest = 0.0
    for name in ("push_time_seconds", "push_failure_time_seconds"):
        for metric in (group.get(name) or {}).get("metrics", []):
            try:
                latest = max(latest, float(metric.get("value", 0)))
            except (TypeError, ValueError):
                continue
    return latest
