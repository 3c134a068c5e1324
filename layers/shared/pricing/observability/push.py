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
``METRICS_NEW_SERIES_HOLD_SECONDS=0`` turns the hold off.

**Never in the way.** One persistent keep-alive connection per container (a new connection per
push costs several times the push itself), reconnecting once when a reused connection turns out
to be dead. One push, all groups included, gets ``PUSHGATEWAY_TIMEOUT_SECONDS`` in total; groups
left over are pushed by a later invocation (values are cumulative, nothing is lost by waiting).
Any failure is counted in ``pricing_metrics_push_failures_total{reason}``, logged with the request
id, and swallowed. After a timeout the container skips pushes for a growing back-off (1 s up to
30 s), so a hung Pushgateway costs one timeout per back-off period, not one per invocation.

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
import http.client
import json
import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlsplit

from prometheus_client.utils import floatToGoString

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
# A request left with less time than this is not started: it could only time out.
_MIN_REQUEST_SECONDS = 0.002

# Errors meaning "the kept-alive connection was closed by the other side while we were frozen":
# the request never reached the Pushgateway, so one retry on a fresh connection is safe.
_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                            ConnectionAbortedError, http.client.CannotSendRequest)

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
    """What the last push sent: for the bench and for tests."""

    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0
    ok: bool = True
    groups_left: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "bytes": self.bytes, "seconds": self.seconds,
                "ok": self.ok, "groups_left": self.groups_left}


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


class _Connection:
    """One keep-alive HTTP(S) connection to the Pushgateway with a per-request deadline."""

    def __init__(self, settings: Settings) -> None:
        parts = urlsplit(settings.pushgateway_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"PUSHGATEWAY_URL must be an http(s) URL, got {settings.pushgateway_url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Content-Type": CONTENT_TYPE}
        if settings.pushgateway_bearer_token:
            self.headers["Authorization"] = f"Bearer {settings.pushgateway_bearer_token}"
        elif settings.pushgateway_username:
            token = base64.b64encode(f"{settings.pushgateway_username}:{settings.pushgateway_password}".encode())
            self.headers["Authorization"] = f"Basic {token.decode()}"
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None, deadline: float) -> tuple[int, bytes]:
        """Send one request, reusing the connection; raises ``PushError``."""
        reused = self._conn is not None
        try:
            return self._attempt(method, path, body, deadline)
        except _STALE_CONNECTION_ERRORS as exc:
            self.close()
            if not reused or deadline - time.monotonic() < _MIN_REQUEST_SECONDS:
                raise PushError("connection", repr(exc)) from None
        except (socket.timeout, TimeoutError) as exc:
            self.close()
            raise PushError("timeout", repr(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise PushError("connection", repr(exc)) from None
        try:  # the kept-alive connection had died while the container was frozen
            return self._attempt(method, path, body, deadline)
        except (socket.timeout, TimeoutError) as exc:
            self.close()
            raise PushError("timeout", repr(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise PushError("connection", repr(exc)) from None

    def _attempt(self, method: str, path: str, body: bytes | None, deadline: float) -> tuple[int, bytes]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("push deadline passed")
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=remaining)
            self._conn.connect()
        else:
            self._conn.sock.settimeout(remaining)
        self._conn.request(method, self.prefix + path, body=body, headers=self.headers)
        self._conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        response = self._conn.getresponse()
        data = response.read()
        if response.will_close:
            self.close()
        return response.status, data


class MetricsPusher:
    """Pushes one container's ``PricingMetrics`` to its own Pushgateway groups (see module doc).

    ``clock`` is monotonic seconds; tests pass a fake one to step over the new-series hold.
    """

    def __init__(self, metrics: PricingMetrics, settings: Settings, function: str | None = None,
                 instance: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.settings = settings
        self.function = function or function_short_name(settings.function_name)
        self.job = f"pricing-{self.function}"
        self.instance = instance or _INSTANCE
        self.clock = clock
        self.hold = settings.metrics_new_series_hold_seconds
        self.stats = PushStats()
        self._lock = threading.Lock()
        self._conn = _Connection(settings) if settings.pushgateway_url else None
        metrics.preinitialise(self.function)
        if not metrics.service_info._value:  # noqa: SLF001 - unset unless the app set it
            metrics.set_service_info(settings.release, settings.environment, self.job)
        self._announced: dict[tuple, float] = {}
        self._published: set[tuple] = set()
        self._pending: dict[str, float] = {}  # property group -> earliest useful re-push time
        self._backoff_until = 0.0
        self._backoff = 0.0

    # ------------------------------------------------------------------ rendering

    @staticmethod
    def _key(group: str | None, series: Series) -> tuple:
        return (group, series.family.name, series.labelvalues)

    def render(self, group: str | None, now: float) -> tuple[bytes, list[tuple], list[tuple], float | None]:
        """The text body of one group, the series it announces and publishes, and when to re-push.

        A series held at zero that has counts of its own makes the group pending: the returned
        time is when its hold ends (None: nothing held back).
        """
        lines: list[str] = []
        announce: list[tuple] = []
        publish: list[tuple] = []
        pending_at: float | None = None
        family = None
        for series in self.metrics.series(group):
            fam = series.family
            if fam is not family:
                family = fam
                kind = "gauge" if fam.kind == "info" else fam.kind
                doc = fam.documentation.replace("\\", "\\\\").replace("\n", "\\n")
                lines.append(f"# HELP {fam.name} {doc}\n# TYPE {fam.name} {kind}\n")
            zero = False
            if fam.cumulative and self.hold > 0:
                key = self._key(group, series)
                if key not in self._published:
                    since = self._announced.get(key)
                    if since is not None and now - since >= self.hold:
                        publish.append(key)
                    else:
                        zero = True
                        if since is None:
                            announce.append(key)
            own = [(n, v) for n, v in zip(fam.labelnames, series.labelvalues) if n != "property_id"]
            base_name = fam.metric._name  # noqa: SLF001 - sample names are the wrapper's name + suffix
            for suffix, sample_labels, value, *_ in series.child._samples():  # noqa: SLF001
                if suffix == "_created":
                    continue  # creation times: not needed by any query, and a third of the bytes
                if zero and value:
                    value = 0.0
                    since = self._announced.get(self._key(group, series), now)
                    ready = since + self.hold
                    pending_at = ready if pending_at is None else max(pending_at, ready)
                labels = own + list(sample_labels.items())
                label_text = ",".join(f'{n}="{_escape_label(str(v))}"' for n, v in labels)
                name = base_name + suffix
                lines.append(f"{name}{{{label_text}}} {floatToGoString(value)}\n" if labels
                             else f"{name} {floatToGoString(value)}\n")
        return "".join(lines).encode(), announce, publish, pending_at

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
                self.stats = PushStats(ok=False)
                return self.stats

    def _push(self, request_id: str | None) -> PushStats:
        start = self.clock()
        stats = PushStats()
        self.stats = stats
        touched = self.metrics.drain_touched_properties()
        if self._conn is None:
            return stats
        if start < self._backoff_until:
            self._defer(touched, start)
            self.metrics.count_push_failure("backoff")
            stats.ok = False
            return stats
        self.metrics.update_container_gauges(self.settings.function_memory_mb * 1024 * 1024)
        due = sorted(p for p, at in self._pending.items() if at <= start and p not in touched)
        groups: list[str | None] = [None, *sorted(touched), *due[:MAX_PENDING_GROUPS_PER_PUSH]]
        deadline = time.monotonic() + self.settings.pushgateway_timeout_seconds
        for i, group in enumerate(groups):
            if deadline - time.monotonic() < _MIN_REQUEST_SECONDS:
                self._defer([g for g in groups[i:] if g is not None], start)
                stats.groups_left = len(groups) - i
                break
            now = self.clock()
            body, announce, publish, pending_at = self.render(group, now)
            try:
                status, answer = self._conn.request("PUT", self._path(group), body, deadline)
                if status >= 300:
                    kind = "http_4xx" if status < 500 else "http_5xx"
                    raise PushError(kind, f"HTTP {status}: {answer[:200].decode(errors='replace')}")
            except PushError as exc:
                self._failed(exc, request_id, start)
                self._defer([g for g in groups[i:] if g is not None], start)
                stats.ok = False
                stats.groups_left = len(groups) - i
                break
            stats.requests += 1
            stats.bytes += len(body)
            done = self.clock()
            for key in announce:
                self._announced[key] = done
            for key in publish:
                self._published.add(key)
                self._announced.pop(key, None)
            if group is not None:
                if pending_at is None:
                    self._pending.pop(group, None)
                else:
                    self._pending[group] = pending_at
        else:
            self._backoff = 0.0
        stats.seconds = self.clock() - start
        return stats

    def _defer(self, groups: Iterable[str | None], now: float) -> None:
        for group in groups:
            if group is not None:
                self._pending[group] = min(self._pending.get(group, now), now)

    def _failed(self, exc: PushError, request_id: str | None, now: float) -> None:
        self.metrics.count_push_failure(exc.reason)
        if exc.reason == "timeout":
            # A hung gateway would otherwise cost every invocation the full timeout.
            self._backoff = min(BACKOFF_MAX_SECONDS, self._backoff * 2 or BACKOFF_START_SECONDS)
            self._backoff_until = now + self._backoff
        logger.warning("metrics push to the Pushgateway failed (%s); request_id=%s", exc, request_id,
                       extra={"request_id": request_id, "reason": exc.reason})

    def close(self) -> None:
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
            _pusher = MetricsPusher(metrics_module.METRICS, settings, function)
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
    long retraining batch. Environment: see the module docstring.
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
    """Requests, bytes and seconds of this container's last push."""
    return _pusher.stats.as_dict() if _pusher is not None else PushStats().as_dict()


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
