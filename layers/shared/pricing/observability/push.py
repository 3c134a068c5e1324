"""Pushing the container's metrics to a Prometheus Pushgateway from every invocation.

Each container owns its groups (``job="pricing-<function>"``, ``instance=<id drawn at cold
start>``, one sub-group per property) and PUTs their cumulative state in the protobuf format;
the push is written before the handler returns and its answers are read by the next push; a
group whose push failed is owed and carried again; SIGTERM flushes what is still owed within
:data:`SHUTDOWN_FLUSH_SECONDS`; with several Pushgateways (``PUSHGATEWAY_URLS``) a container
pushes to the one :func:`choose_pushgateway` picks. Why, with the measurements: docs/metrics.md.

Configuration: the ``PUSHGATEWAY_*`` settings, ``PROMETHEUS_URL`` (pruning) and the Lambda
function name, memory and runtime API (``pricing.settings``, passed in by the app module)::

    @pushes_metrics(settings=settings, function="score")
    def handler(event, context): ...
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pricing.observability import metrics as metrics_module
from pricing.observability.exposition import CONTENT_TYPE, family_message, metric_messages
from pricing.observability.metrics import PricingMetrics
from pricing.observability.wire import AnswersAtOnce, Connection, PushError, authorization, grouping_path
from pricing.settings import Settings

logger = logging.getLogger("pricing.observability.push")

#: Owed property groups an invocation carries besides its own: enough to catch up after an
#: outage within a few invocations, few enough to keep every push small.
MAX_OWED_GROUPS_PER_PUSH = 8
#: Time the shutdown flush may take: well inside the runtime's share of Lambda's shutdown phase.
SHUTDOWN_FLUSH_SECONDS = 0.3
#: Time the scheduled pruning may take to list and delete groups (it is off the request path).
PRUNE_TIMEOUT_SECONDS = 10.0
BACKOFF_START_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0

# A container's identity: drawn once per process, i.e. once per Lambda execution environment.
_INSTANCE = uuid.uuid4().hex[:16]

__all__ = [
    "MetricsPusher",
    "PushError",
    "PushStats",
    "choose_pushgateway",
    "container_instance",
    "flush_metrics",
    "function_short_name",
    "last_push_stats",
    "prune_stale_groups",
    "push_invocation_metrics",
    "pushes_metrics",
]


def container_instance() -> str:
    """The ``instance`` label of this container's groups."""
    return _INSTANCE


def choose_pushgateway(instance: str, urls: tuple[str, ...] | list[str]) -> str:
    """The shard of ``urls`` that holds every group of container ``instance``.

    Rendezvous hashing on the shard's position: the choice depends only on the instance id and
    the number of shards (not on their addresses, which differ between networks), and adding a
    shard at the end moves only the containers the new one wins, about 1/N of them.
    """
    if not urls:
        raise ValueError("no Pushgateway configured")
    if len(urls) == 1:
        return urls[0]

    def weight(index: int) -> bytes:
        return hashlib.blake2b(f"{index}:{instance}".encode(), digest_size=8).digest()

    return urls[max(range(len(urls)), key=weight)]


def function_short_name(function_name: str) -> str:
    """``score``/``ingest``/``retrain`` from a deployed function name such as ``pricing-ScoreFunction-1A2B``."""
    lowered = function_name.lower()
    for short, words in (("score", ("score",)), ("ingest", ("ingest", "learn")), ("retrain", ("retrain",))):
        if any(w in lowered for w in words):
            return short
    return re.sub(r"[^a-z0-9_.-]+", "-", lowered).strip("-")[:40] or "local"


@dataclass
class PushStats:
    """What one push sent: for the bench and for tests.

    ``ok`` is False when the push could not be written (or, waiting for answers, was refused);
    ``groups_left`` counts the groups still owed after it.
    """

    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0
    ok: bool = True
    groups_left: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "bytes": self.bytes, "seconds": self.seconds, "ok": self.ok, "groups_left": self.groups_left}


@dataclass
class _Flight:
    """A push written to the connection whose answers have not all been read yet."""

    seq: int
    sent_at: float
    request_id: str | None
    fresh: bool  # written on a connection opened for it
    groups: list[str | None]
    answered: int = 0
    failure: PushError | None = None


class MetricsPusher:
    """Pushes one container's ``PricingMetrics`` to its own Pushgateway groups (see module doc).

    ``wait_for_answers``: each push waits for its answers within ``PUSHGATEWAY_TIMEOUT_SECONDS``,
    for callers that read the Pushgateway right after pushing (scripts, benches); the container's
    pusher reads them at the next push instead. ``clock`` is monotonic seconds (tests pass a
    fake one to step over timeouts and back-offs).
    """

    def __init__(
        self,
        metrics: PricingMetrics,
        settings: Settings,
        function: str | None = None,
        instance: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait_for_answers: bool = False,
        transport: Any = None,
    ) -> None:
        self.metrics = metrics
        self.settings = settings
        self.function = function or function_short_name(settings.function_name)
        self.job = f"pricing-{self.function}"
        self.instance = instance or _INSTANCE
        self.clock = clock
        self.wait_for_answers = wait_for_answers
        self.stats = PushStats()
        #: Pushes written, and pushes that wrote nothing (no URL, back-off, write failure).
        self.pushes = 0
        self.unwritten = 0
        self._lock = threading.Lock()
        #: The Pushgateway this container's groups live on (None: pushes are off).
        self.url = choose_pushgateway(self.instance, settings.pushgateways) if settings.pushgateways else None
        if transport is None and self.url:
            headers = {
                "Content-Type": CONTENT_TYPE,
                **authorization(settings.pushgateway_username, settings.pushgateway_password, settings.pushgateway_bearer_token),
            }
            transport = Connection(self.url, headers)
        elif transport is not None and not hasattr(transport, "send"):
            transport = AnswersAtOnce(transport)
        self._conn: Any = transport
        metrics.preinitialise(self.function)
        if not metrics.has_service_info:
            metrics.set_service_info(settings.release, settings.environment, self.job)
        self._bodies: dict[tuple[str | None, str], bytes] = {}  # (group, family) -> MetricFamily
        self._series_bodies: dict[tuple, list[bytes]] = {}  # (group, family, values) -> Metric messages
        self._owed: dict[str | None, float] = {}  # group -> since when its latest state is owed
        self._inflight: dict[str | None, int] = {}  # group -> the latest unsettled push carrying it
        self._flights: deque[_Flight] = deque()
        self._seq = 0
        self._backoff_until = 0.0
        self._backoff = 0.0
        self._failures = 0
        self._answered_at = float("-inf")

    # ------------------------------------------------------------------ rendering

    def render(self, group: str | None) -> bytes:
        """The protobuf body of one group. Only series changed since the last render are
        collected and encoded again; unchanged families are reused whole."""
        parts = []
        families, series_cache = self._bodies, self._series_bodies
        for family in self.metrics.group_families(group):
            body = families.get((group, family.name))
            if body is None:
                messages = []
                for labels, child in self.metrics.family_series(group, family):
                    key = (group, family.name, tuple(labels.values()))
                    encoded = series_cache.get(key)
                    if encoded is None:
                        encoded = series_cache[key] = [m for collected in child.collect() for m in metric_messages(collected, labels)]
                    messages += encoded
                body = families[(group, family.name)] = family_message(family.name, family.documentation, family.kind, messages)
            parts.append(body)
        return b"".join(parts)

    def _take_changes(self, now: float) -> set[str | None]:
        """Forget what changed series rendered to; the changed groups (``None``: the base group)
        are owed from now until a push carrying them is accepted."""
        changes = self.metrics.drain_changes()
        for group, keys in changes.items():
            for name, values in keys:
                self._bodies.pop((group, name), None)
                self._series_bodies.pop((group, name, values), None)
            self._owed.setdefault(group, now)
        return set(changes)

    def _path(self, group: str | None) -> str:
        labels = [("job", self.job), ("instance", self.instance)]
        if group is not None:
            labels.append(("property_id", group))
        return grouping_path(labels)

    # ------------------------------------------------------------------ pushing

    def push(self, request_id: str | None = None) -> PushStats:
        """Write the base group, the changed property groups and a few owed ones; never raises."""
        with self._lock:
            try:
                return self._push(request_id, everything_owed=False)
            except Exception:  # a metrics bug must not fail an invocation
                logger.exception("metrics push failed unexpectedly (request_id=%s)", request_id, extra={"request_id": request_id})
                self._lose_flights(self.clock())
                self.stats = PushStats(ok=False)
                return self.stats

    def flush(self, budget_seconds: float = SHUTDOWN_FLUSH_SECONDS) -> PushStats:
        """Read the answers still owed, then push whatever the Pushgateway does not hold yet,
        waiting for the answers; all within ``budget_seconds``. For the container's last moments
        (SIGTERM). Never raises."""
        with self._lock:
            try:
                if self._conn is None:
                    return self.stats
                deadline = time.monotonic() + budget_seconds
                self._settle(self.clock(), wait_until=deadline)
                now = self.clock()
                changed = self._take_changes(now)
                if not (changed or self._owed):
                    return self.stats
                self._backoff_until = 0.0
                return self._push(None, everything_owed=True, deadline=deadline)
            except Exception:
                logger.exception("metrics flush failed unexpectedly")
                return PushStats(ok=False)

    def _push(self, request_id: str | None, everything_owed: bool, deadline: float | None = None) -> PushStats:
        start = self.clock()
        stats = PushStats()
        conn = self._conn
        if conn is None:
            self.metrics.drain_changes()
            self.unwritten += 1
            self.stats = stats
            return stats
        self._settle(start)
        if start < self._backoff_until:
            self._take_changes(start)
            self.metrics.count_push_failure("backoff")
            self.unwritten += 1
            stats.ok = False
            stats.groups_left = len(self._owed)
            self.stats = stats
            return stats
        if not everything_owed:
            self.metrics.update_container_gauges(self.settings.function_memory_mb * 1024 * 1024)
        changed = {g for g in self._take_changes(start) if g is not None}
        # Owed longest first, so that none waits behind groups owed again and again.
        owed = sorted((since, g) for g, since in self._owed.items() if g is not None and g not in changed)
        extra = [g for _, g in (owed if everything_owed else owed[:MAX_OWED_GROUPS_PER_PUSH])]
        groups: list[str | None] = [None, *sorted(changed), *extra]
        requests = [("PUT", self._path(g), self.render(g)) for g in groups]
        if deadline is None:
            deadline = time.monotonic() + self.settings.pushgateway_timeout_seconds
        try:
            fresh = conn.send(requests, deadline)
        except PushError as exc:
            conn.close()
            self._lose_flights(start)
            self._failed(exc, request_id, start)
            self.unwritten += 1
            stats.ok = False
            stats.groups_left = len(groups)
            stats.seconds = self.clock() - start
            self.stats = stats
            return stats
        self._seq += 1
        for g in groups:
            self._owed.pop(g, None)
            self._inflight[g] = self._seq
        self._flights.append(_Flight(self._seq, self.clock(), request_id, fresh, groups))
        self.pushes += 1
        stats.requests = len(requests)
        stats.bytes = sum(len(body) for _, _, body in requests)
        if self.wait_for_answers or everything_owed or getattr(conn, "answers_at_once", False):
            failures_before = self._failures
            self._settle(self.clock(), wait_until=deadline)
            stats.ok = self._failures == failures_before and not self._flights
        stats.groups_left = len(self._owed)
        stats.seconds = self.clock() - start
        self.stats = stats
        return stats

    # ------------------------------------------------------------------ answers

    def _settle(self, now: float, wait_until: float | None = None) -> None:
        """Read the answers that have arrived (waiting until ``wait_until``, monotonic, if given)
        and settle the pushes they complete; give up once the Pushgateway has answered nothing
        for the timeout."""
        conn = self._conn
        if not self._flights:
            if conn.connected:  # did the other side close the kept-alive connection meanwhile?
                conn.poll()
                if conn.closed or getattr(conn, "unanswered", 0):
                    conn.close()
            return
        for answer in conn.poll(wait_until):
            self._answered_at = now
            flight = self._flights[0]
            group = flight.groups[flight.answered]
            flight.answered += 1
            if answer.status < 300:
                if self._inflight.get(group) == flight.seq:
                    del self._inflight[group]
            else:
                self._owe(group, flight.seq, now)
                if flight.failure is None:
                    kind = "http_4xx" if answer.status < 500 else "http_5xx"
                    detail = answer.body[:200].decode(errors="replace")
                    flight.failure = PushError(kind, f"HTTP {answer.status}: {detail}")
            if flight.answered == len(flight.groups):
                self._flights.popleft()
                if flight.failure is not None:
                    self._failed(flight.failure, flight.request_id, now)
                else:
                    self._backoff = 0.0
                if not self._flights:
                    break
        if not self._flights:
            if conn.closed:
                conn.close()
            return
        oldest = self._flights[0]
        if conn.closed:
            # Closed with answers owed. On a kept-alive connection that is the other side having
            # given up on it while the container was frozen: the groups simply go again with
            # the next push, on a new connection. On a connection opened for the push, it failed.
            failure = oldest.failure or (PushError("connection", "closed without answering") if oldest.fresh else None)
        elif wait_until is not None or now - max(oldest.sent_at, self._answered_at) >= self.settings.pushgateway_timeout_seconds:
            # Silent for the timeout: a gateway that is behind but answering is not timed out.
            unanswered = sum(len(f.groups) - f.answered for f in self._flights)
            failure = PushError("timeout", f"{unanswered} requests unanswered after {self.settings.pushgateway_timeout_seconds:g} s")
        else:
            return
        request_id = oldest.request_id
        self._lose_flights(now)
        if failure is not None:
            self._failed(failure, request_id, now)

    def _owe(self, group: str | None, seq: int, now: float) -> None:
        # Only if no later push carries the group: a later one holds newer totals anyway.
        if self._inflight.get(group) == seq:
            del self._inflight[group]
            self._owed.setdefault(group, now)

    def _lose_flights(self, now: float) -> None:
        """Every unanswered request is lost (the connection is closed): its groups are owed."""
        for flight in self._flights:
            for group in flight.groups[flight.answered :]:
                self._owe(group, flight.seq, now)
        self._flights.clear()
        if self._conn is not None:
            self._conn.close()

    def _failed(self, exc: PushError, request_id: str | None, now: float) -> None:
        self._failures += 1
        self.metrics.count_push_failure(exc.reason)
        if exc.reason == "timeout":
            # A hung gateway is then tried once per back-off period, not by every invocation.
            self._backoff = min(BACKOFF_MAX_SECONDS, self._backoff * 2 or BACKOFF_START_SECONDS)
            self._backoff_until = now + self._backoff
        logger.warning(
            "metrics push to the Pushgateway failed (%s); request_id=%s",
            exc,
            request_id,
            extra={"request_id": request_id, "reason": exc.reason},
        )

    @property
    def in_flight(self) -> int:
        """Pushes written whose answers have not all been read yet."""
        return len(self._flights)

    @property
    def owed_groups(self) -> int:
        return len(self._owed)

    def close(self) -> None:
        self._flights.clear()
        if self._conn is not None:
            self._conn.close()


# ---------------------------------------------------------------------- the container's pusher

_pusher: MetricsPusher | None = None
_pusher_lock = threading.Lock()
_sigterm_installed = False


def _pusher_for(settings: Settings, function: str | None) -> MetricsPusher:
    global _pusher
    with _pusher_lock:
        if _pusher is None or _pusher.settings != settings or (function and function != _pusher.function):
            if _pusher is not None:
                _pusher.close()
            _pusher = MetricsPusher(metrics_module.METRICS, settings, function)
            if settings.lambda_runtime_api:
                _install_sigterm_flush()
        return _pusher


def flush_metrics(budget_seconds: float = SHUTDOWN_FLUSH_SECONDS) -> None:
    """Push what this container's Pushgateway groups still lack, waiting for the answers."""
    if _pusher is not None:
        _pusher.flush(budget_seconds)


def _install_sigterm_flush() -> None:
    """On SIGTERM (Lambda retiring the container), flush the metrics, then exit.

    Not a plain Python signal handler: on python3.11 the runtime client waits for its next
    event inside a C call, and Python runs signal handlers only when that call returns, which
    it never does at shutdown. The signal's byte reaches a wakeup pipe at once, though, and a
    thread waiting on that pipe flushes and ends the process within the shutdown budget.
    """
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the thread does the work
        signal.set_wakeup_fd(write_end)
    except (ValueError, OSError):  # not the main thread of the main interpreter
        return
    _sigterm_installed = True

    def wait_for_sigterm() -> None:
        while True:
            received = os.read(read_end, 64)
            if not received or signal.SIGTERM in received:
                break
        flush_metrics()
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=wait_for_sigterm, name="metrics-sigterm-flush", daemon=True).start()


def _current_request_id() -> str | None:
    try:
        from pricing.observability.context import current_request_id
    except Exception:  # noqa: BLE001 - the logging context is optional here
        return None
    return current_request_id()


def push_invocation_metrics(request_id: str | None = None, *, settings: Settings, function: str | None = None) -> None:
    """Push this container's metrics; call once at the end of every invocation. Never raises.

    ``function`` is the short name in ``job="pricing-<function>"`` (default: derived from
    ``AWS_LAMBDA_FUNCTION_NAME``). Safe to call mid-invocation too, e.g. after each property of a
    long retraining batch. The push is written before this returns; its answers are read by the
    next call (or the shutdown flush).
    """
    try:
        if not settings.pushgateways:
            metrics_module.METRICS.drain_changes()
            return
        _pusher_for(settings, function).push(request_id or _current_request_id())
    except Exception:  # metrics must never fail an invocation
        logger.exception("metrics push failed unexpectedly (request_id=%s)", request_id)


def last_push_stats() -> dict[str, Any]:
    """This container's last push (requests, bytes, seconds), pushes written and not written,
    pushes awaiting their answers and groups owed."""
    p = _pusher
    if p is None:
        return {**PushStats().as_dict(), "pushes": 0, "unwritten": 0, "in_flight": 0, "owed_groups": 0}
    return {**p.stats.as_dict(), "pushes": p.pushes, "unwritten": p.unwritten, "in_flight": p.in_flight, "owed_groups": p.owed_groups}


def _invocation_request_id(event: Any, context: Any) -> str | None:
    try:
        from pricing.observability.context import invocation_request_id
    except Exception:  # noqa: BLE001 - the logging context is optional here
        return getattr(context, "aws_request_id", None)
    return invocation_request_id(event, context)


def pushes_metrics(*, settings: Settings, function: str | None = None) -> Callable[[Callable], Callable]:
    """Decorate a Lambda ``handler(event, context)`` to push metrics after it returns or raises.

    ``@pushes_metrics(settings=settings, function="score")``: the container's settings and the
    job's short name. The handler's result or exception is passed on unchanged; the push never
    raises.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(event, context):
            try:
                return fn(event, context)
            finally:
                push_invocation_metrics(
                    request_id=_current_request_id() or _invocation_request_id(event, context), settings=settings, function=function
                )

        return wrapper

    return decorate


# ---------------------------------------------------------------------- pruning dead groups

#: The grouping labels of the project's groups (``MetricsPusher._path``): a stale group's
#: ``push_time_seconds`` series in Prometheus carries them, and they name the group to delete.
GROUPING_LABELS = ("job", "instance", "property_id")
#: Deletions written back to back before their answers are read.
PRUNE_PIPELINE = 200


def prune_stale_groups(settings: Settings, now: float | None = None) -> int:
    """Delete every ``pricing-*`` group not pushed for ``PUSHGATEWAY_GROUP_TTL_SECONDS``.

    Run from a scheduled invocation (a dead container cannot delete its own groups). Age is the
    Pushgateway's own last push (or failed push) time of the group against ``now`` (Unix
    seconds, default: the clock). With ``PROMETHEUS_URL`` the stale groups come from one query
    to Prometheus (``push_time_seconds`` older than the TTL): its answer holds only the dead groups, where
    listing a Pushgateway returns every group's every series (at 20,000 groups the listing
    alone took longer than :data:`PRUNE_TIMEOUT_SECONDS`). Without it each Pushgateway is
    listed. Each group is deleted on the shard :func:`choose_pushgateway` gives its instance,
    the deletions pipelined on one connection per shard. Returns the number of groups deleted.
    Never raises: failures are logged and counted with ``reason="prune"``.
    """
    if not settings.pushgateways:
        return 0
    now = time.time() if now is None else now
    deadline = time.monotonic() + PRUNE_TIMEOUT_SECONDS
    deleted = 0
    conns: dict[str, Connection] = {}
    headers = authorization(settings.pushgateway_username, settings.pushgateway_password, settings.pushgateway_bearer_token)
    try:
        if settings.prometheus_url:
            stale = _stale_groups_from_prometheus(settings, now, deadline)
        else:
            stale = []
            for url in settings.pushgateways:
                conns[url] = Connection(url, headers)
                stale += [(url, labels) for labels in _stale_groups_listed(conns[url], settings, now, deadline)]
        by_shard: dict[str, list[str]] = {}
        for url, labels in stale:
            path = grouping_path([("job", labels["job"]), *sorted((k, v) for k, v in labels.items() if k != "job")])
            by_shard.setdefault(url, []).append(path)
        for url in by_shard:
            conns.setdefault(url, Connection(url, headers))
        # The shards delete side by side: each is its own process.
        done: dict[str, int] = {}
        errors: list[BaseException] = []

        def delete_on(url: str) -> None:
            try:
                done[url] = _delete_groups(conns[url], url, by_shard[url], deadline, done)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others
                errors.append(exc)

        threads = [threading.Thread(target=delete_on, args=(url,)) for url in by_shard]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deleted = sum(done.values())
        if errors:
            raise errors[0]
    except Exception as exc:  # noqa: BLE001 - a hygiene job failing must not take anything down
        metrics_module.METRICS.count_push_failure("prune")
        logger.warning("pruning stale Pushgateway groups failed after %d deletions: %r", deleted, exc)
    finally:
        for conn in conns.values():
            conn.close()
    if deleted:
        logger.info("pruned %d stale Pushgateway groups", deleted)
    return deleted


def _delete_groups(conn: Connection, url: str, paths: list[str], deadline: float, done: dict[str, int]) -> int:
    """DELETE each group path on one shard, :data:`PRUNE_PIPELINE` at a time; the count deleted."""
    deleted = 0
    for start in range(0, len(paths), PRUNE_PIPELINE):
        batch = paths[start : start + PRUNE_PIPELINE]
        conn.send([("DELETE", path, None) for path in batch], deadline)
        answers: list = []
        while len(answers) < len(batch):
            got = conn.poll(deadline)
            if not got:
                raise PushError("prune", f"{len(batch) - len(answers)} deletions on {url} unanswered")
            answers += got
        for path, answer in zip(batch, answers):
            if answer.status >= 300:
                raise PushError("prune", f"deleting {path} on {url}: HTTP {answer.status}")
            deleted += 1
            done[url] = deleted  # what a failure still reports as done
    return deleted


def _stale_groups_from_prometheus(settings: Settings, now: float, deadline: float) -> list[tuple[str, dict[str, str]]]:
    """(shard, grouping labels) of every ``pricing-*`` group Prometheus last saw pushed before the
    TTL, and whose last failed push (if any) is older too, as the listing judges a group."""
    cut = now - settings.pushgateway_group_ttl_seconds
    selector = '{job=~"pricing-.+"}'
    query = (
        f"push_time_seconds{selector} < {cut:.3f} unless on ({', '.join(GROUPING_LABELS)}) push_failure_time_seconds{selector} >= {cut:.3f}"
    )
    conn = Connection(settings.prometheus_url, {})
    try:
        # Evaluated at Prometheus' present (a later ``now`` would find no sample within the
        # lookback); ``now`` only sets the threshold.
        status, body = conn.request("GET", "/api/v1/query?" + urllib.parse.urlencode({"query": query}), None, deadline)
    finally:
        conn.close()
    if status != 200:
        raise PushError("prune", f"querying Prometheus: HTTP {status}")
    groups = []
    for series in json.loads(body)["data"]["result"]:
        labels = {k: v for k, v in series["metric"].items() if k in GROUPING_LABELS}
        if labels.get("job", "").startswith("pricing-") and labels.get("instance"):
            groups.append((choose_pushgateway(labels["instance"], settings.pushgateways), labels))
    return groups


def _stale_groups_listed(conn: Connection, settings: Settings, now: float, deadline: float) -> list[dict[str, str]]:
    """Grouping labels of every ``pricing-*`` group of one Pushgateway silent for the TTL."""
    status, body = conn.request("GET", "/api/v1/metrics", None, deadline)
    if status != 200:
        raise PushError("prune", f"listing groups: HTTP {status}")
    stale = []
    for group in json.loads(body).get("data", []):
        labels: dict[str, str] = group.get("labels", {})
        if not labels.get("job", "").startswith("pricing-"):
            continue  # not ours: other pushers' groups are their business
        if now - _last_push_time(group) > settings.pushgateway_group_ttl_seconds:
            stale.append(labels)
    return stale


def _last_push_time(group: dict) -> float:
    latest = 0.0
    for name in ("push_time_seconds", "push_failure_time_seconds"):
        for metric in (group.get(name) or {}).get("metrics", []):
            try:
                latest = max(latest, float(metric.get("value", 0)))
            except (TypeError, ValueError):
                continue
    return latest
