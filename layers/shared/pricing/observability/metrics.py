"""Every Prometheus metric of the service, defined once, in registries of its own.

The families of ``spec/OBSERVABILITY.md`` plus the self-metrics the alert rules need, in one
*base* registry and one small registry per ``property_id`` value (the label travels in the
Pushgateway grouping key), never the library's global one; a container keeps at most
``METRICS_MAX_PROPERTY_LABELS`` values, later ones count as ``__other__``. Why: docs/metrics.md.

Example::

    >>> m = PricingMetrics(max_property_labels=2)
    >>> m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.012)
    >>> m.get_sample_value("pricing_requests_total", {"method": "POST", "endpoint": "/score", "status_code": "200"})
    1.0
    >>> [m.property_label(p) for p in ("a", "b", "c")]
    ['a', 'b', '__other__']
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

#: ``property_id`` value that stands for every property beyond the per-container cap.
OTHER_PROPERTY = "__other__"
#: ``property_id`` value for events that name no property.
UNKNOWN_PROPERTY = "unknown"

# Bucket edges are chosen so that every alert threshold is an edge: histogram_quantile
# interpolates inside a bucket, so a threshold that falls mid-bucket is only approximated.
# /score: CriticalScoreLatency 0.08 s, SlowScoreLatency 0.2 s; all routes: HighAPILatency 1 s.
API_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.08, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
# SlowModelPrediction: 0.1 s.
MODEL_PREDICTION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# LongRetrainingDuration: 1800 s.
RETRAINING_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)

#: Values the finite labels take; pre-initialised at zero (see ``preinitialise``).
PRICING_METHODS = ("ml_elasticity", "rule_based")
RETRAINING_STATUSES = ("deployed", "rejected", "skipped", "failed")
COMPETITOR_FETCH_STATUSES = ("success", "not_found", "timeout", "error")
PUSH_FAILURE_REASONS = ("timeout", "connection", "http_4xx", "http_5xx", "backoff", "prune")

# The routes each function serves, with the statuses API.md allows, so that a container's first
# 4xx/5xx is an increment of a series its first push already carried.
FUNCTION_ROUTES: Mapping[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "score": (("POST", "/score", ("200", "413", "422", "500")), ("GET", "/health", ("200", "500"))),
    "ingest": (("POST", "/learn", ("200", "413", "422", "500")),),
    "retrain": (),
}


class Family(NamedTuple):
    """One metric family as the spec names it (``name`` is the exposed one: ``..._total``)."""

    name: str
    kind: str  # counter, gauge, histogram, info
    documentation: str
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def per_property(self) -> bool:
        return "property_id" in self.labelnames

    def build(self, registry: CollectorRegistry, without: tuple[str, ...] = ()):
        """The prometheus_client metric for this family in ``registry``, minus ``without`` labels."""
        labels = tuple(n for n in self.labelnames if n not in without)
        if self.kind == "counter":
            return Counter(self.name.removesuffix("_total"), self.documentation, labels, registry=registry)
        if self.kind == "gauge":
            return Gauge(self.name, self.documentation, labels, registry=registry)
        if self.kind == "histogram":
            return Histogram(self.name, self.documentation, labels, buckets=self.buckets, registry=registry)
        return Info(self.name.removesuffix("_info"), self.documentation, labels, registry=registry)


FAMILIES = (
    # --- API ---
    api_latency := Family(
        "pricing_api_latency_seconds",
        "histogram",
        "API request latency in seconds",
        ("method", "endpoint", "status_code"),
        API_LATENCY_BUCKETS,
    ),
    score_latency := Family(
        "pricing_score_latency_seconds", "histogram", "/score endpoint latency in seconds", ("pricing_method",), API_LATENCY_BUCKETS
    ),
    requests_total := Family("pricing_requests_total", "counter", "Total requests", ("method", "endpoint", "status_code")),
    active_requests := Family("pricing_active_requests", "gauge", "Active concurrent requests", ("endpoint",)),
    errors_total := Family("pricing_errors_total", "counter", "Total errors", ("endpoint", "error_type")),
    # --- ML model ---
    model_prediction_seconds := Family(
        "pricing_model_prediction_seconds",
        "histogram",
        "Model prediction latency in seconds",
        ("property_id", "model_type"),
        MODEL_PREDICTION_BUCKETS,
    ),
    model_cache_hits := Family("pricing_model_cache_hits_total", "counter", "Model cache hits", ()),
    model_cache_misses := Family("pricing_model_cache_misses_total", "counter", "Model cache misses", ()),
    models_loaded := Family("pricing_models_loaded", "gauge", "Number of models loaded", ()),
    # --- learning loop ---
    outcomes_ingested := Family("pricing_outcomes_ingested_total", "counter", "Outcomes ingested", ("property_id",)),
    outcomes_invalid := Family("pricing_outcomes_invalid_total", "counter", "Invalid outcomes", ("property_id", "reason")),
    retraining_duration := Family(
        "pricing_retraining_duration_seconds",
        "histogram",
        "Retraining duration in seconds",
        ("property_id", "model_type"),
        RETRAINING_BUCKETS,
    ),
    retraining_total := Family("pricing_retraining_total", "counter", "Retraining events", ("property_id", "model_type", "status")),
    drift_detected := Family("pricing_drift_detected_total", "counter", "Drift detections", ("property_id", "trigger_retrain")),
    exploration_quotes := Family(
        "pricing_exploration_quotes_total",
        "counter",
        "Quotes by pricing method, explored (priced at a neighbour of the optimum) or not",
        ("pricing_method", "explored"),
    ),
    model_rollbacks := Family(
        "pricing_model_rollbacks_total", "counter", "Live models rolled back to rule-based pricing", ("property_id",)
    ),
    # --- A/B testing ---
    ab_assignments := Family("pricing_ab_assignments_total", "counter", "A/B test assignments", ("experiment_id", "variant")),
    ab_outcomes := Family("pricing_ab_outcomes_total", "counter", "A/B test outcomes", ("experiment_id", "variant", "accepted")),
    # --- competitor data ---
    competitor_fetches := Family("pricing_competitor_fetches_total", "counter", "Competitor data fetches", ("property_id", "status")),
    competitor_staleness := Family(
        "pricing_competitor_staleness_seconds", "gauge", "Competitor data staleness in seconds", ("property_id",)
    ),
    # --- system ---
    service_info := Family("pricing_service_info", "info", "Service information", ()),
    uptime_seconds := Family("pricing_uptime_seconds", "gauge", "Container uptime in seconds", ()),
    # --- self-metrics for the Lambda meaning of the alerts (no long-running target to scrape) ---
    push_failures := Family("pricing_metrics_push_failures_total", "counter", "Metric pushes to the Pushgateway that failed", ("reason",)),
    synthetic_check_timestamp := Family(
        "pricing_synthetic_check_timestamp_seconds", "gauge", "Unix time of the last successful scheduled synthetic health check", ()
    ),
    container_memory_bytes := Family("pricing_container_memory_bytes", "gauge", "Peak resident memory of the container (max RSS)", ()),
    container_memory_limit_bytes := Family("pricing_container_memory_limit_bytes", "gauge", "Memory configured for the function", ()),
)


class _Group:
    """One push group's families: a registry of their own and, per family, its series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics: dict[str, MetricWrapperBase] = {}
        # family name -> label values (without property_id) -> the series' metric object, in
        # creation order: the pusher renders a changed series alone, through its collect().
        self.series: dict[str, dict[tuple[str, ...], MetricWrapperBase]] = {}


class PricingMetrics:
    """The service's metric families with the spec's helpers (``track_request``, ...).

    Thread-safe: the FastAPI apps run sync routes in worker threads. Record only through the
    helpers; read with :meth:`get_sample_value` or :meth:`collect`.
    """

    families = FAMILIES

    def __init__(self, max_property_labels: int = 200) -> None:
        if max_property_labels < 1:
            raise ValueError("max_property_labels must be at least 1")
        self._lock = threading.Lock()
        self._max_property_labels = max_property_labels
        self._property_labels: set[str] = set()
        base = _Group()
        self.registry = base.registry
        self._groups: dict[str | None, _Group] = {None: base}
        self._dirty: set[tuple[str | None, str, tuple[str, ...]]] = set()
        self._gauges: dict[tuple, float] = {}  # the value each gauge series was last set to
        self._started = time.monotonic()
        self._service_info_set = False
        for family in FAMILIES:
            if not family.per_property:
                metric = base.metrics[family.name] = family.build(base.registry)
                # Unlabelled counters exist at zero from the start; a gauge or an info only once
                # set (a synthetic-check time of 0 is not a check that ran in 1970).
                if not family.labelnames and family.kind == "counter":
                    base.series[family.name] = {(): metric}
        for reason in PUSH_FAILURE_REASONS:
            self._child(push_failures, reason=reason)

    def cap_property_labels(self, max_property_labels: int) -> None:
        """Keep at most ``max_property_labels`` distinct ``property_id`` values from now on (the
        app module sets its container's cap at import, before any is recorded)."""
        if max_property_labels < 1:
            raise ValueError("max_property_labels must be at least 1")
        with self._lock:
            self._max_property_labels = max_property_labels

    # ------------------------------------------------------------------ groups and series

    def property_label(self, property_id: object) -> str:
        """The ``property_id`` label value for ``property_id`` in this container.

        The first ``max_property_labels`` distinct properties keep their own id; later ones share
        ``__other__``, so a container's series (and its Prometheus series) stay bounded.
        """
        # "unknown" is reserved (outcomes with no valid id are counted under it): it never takes
        # one of the capped slots, nor is it pushed out to "__other__" once they are spent.
        if property_id is None or property_id in ("", UNKNOWN_PROPERTY):
            return UNKNOWN_PROPERTY
        pid = str(property_id)
        with self._lock:
            if pid in self._property_labels:
                return pid
            if len(self._property_labels) < self._max_property_labels:
                self._property_labels.add(pid)
                return pid
        return OTHER_PROPERTY

    def _series(self, family: Family, labels: Mapping[str, object]):
        """The series' metric object and its key ``(group, family, label values)``; a series
        created here is marked changed. ``property_id``, if the family has it, must be mapped."""
        group = str(labels["property_id"]) if family.per_property else None
        values = tuple(str(labels[n]) for n in family.labelnames if n != "property_id")
        key = (group, family.name, values)
        with self._lock:
            found = self._groups.get(group)
            if found is None:
                found = self._groups[group] = _Group()
            known = found.series.get(family.name)
            child = known.get(values) if known is not None else None
            if child is not None:
                return child, key
            metric = found.metrics.get(family.name)
            if metric is None:
                metric = found.metrics[family.name] = family.build(found.registry, without=("property_id",))
            child = metric.labels(*values) if values else metric
            found.series.setdefault(family.name, {})[values] = child
            self._dirty.add(key)
        return child, key

    def _child(self, family: Family, **labels: object):
        return self._series(family, labels)[0]

    def _changed(self, key: tuple) -> None:
        # Marked after the write, so a push that drains the marks before it collects can never
        # miss a write: a write after the drain marks its series again for the next push.
        with self._lock:
            self._dirty.add(key)

    def _inc(self, family: Family, amount: float = 1, **labels: object) -> None:
        child, key = self._series(family, labels)
        child.inc(amount)
        self._changed(key)

    def _observe(self, family: Family, value: float, **labels: object) -> None:
        child, key = self._series(family, labels)
        child.observe(value)
        self._changed(key)

    def _set(self, family: Family, value: float, **labels: object) -> None:
        child, key = self._series(family, labels)
        # A gauge set to the value it has is no change: the next push need not render it again.
        if self._gauges.get(key) == value:
            return
        child.set(value)
        self._gauges[key] = value
        self._changed(key)

    def groups(self) -> list[str]:
        """Every property label that has a group in this container."""
        with self._lock:
            return [g for g in self._groups if g is not None]

    def group_families(self, group: str | None) -> list[Family]:
        """The families with series in the base group (``None``) or one property's group, in
        the order of :data:`FAMILIES`."""
        with self._lock:
            found = self._groups.get(group)
            present = set(found.series) if found is not None else set()
        return [family for family in FAMILIES if family.name in present]

    def family_series(self, group: str | None, family: Family) -> list[tuple[dict[str, str], MetricWrapperBase]]:
        """One family's series in a group: their labels (without ``property_id``) and the metric
        object whose ``collect()`` yields that series alone."""
        with self._lock:
            found = self._groups.get(group)
            series = list(found.series.get(family.name, {}).items()) if found is not None else []
        names = [n for n in family.labelnames if n != "property_id"]
        return [(dict(zip(names, values)), child) for values, child in series]

    def collect(self, group: str | None = None) -> Iterable[Metric]:
        """The collected families of the base group (``None``) or of one property's group."""
        with self._lock:
            found = self._groups.get(group)
        return found.registry.collect() if found is not None else ()

    def get_sample_value(self, name: str, labels: Mapping[str, object] | None = None) -> float | None:
        """One sample's value (``labels`` may name ``property_id``), or None if it does not exist."""
        wanted = {k: str(v) for k, v in (labels or {}).items()}
        group = wanted.pop("property_id", None)
        with self._lock:
            found = self._groups.get(group)
        return found.registry.get_sample_value(name, wanted) if found is not None else None

    def sample_total(self, name: str, **labels: object) -> float:
        """The sum of every sample called ``name`` whose labels include ``labels``, over all
        groups (``property_id`` matches a property's group)."""
        wanted = {k: str(v) for k, v in labels.items()}
        group_wanted = wanted.pop("property_id", None)
        with self._lock:
            groups = list(self._groups.items())
        total = 0.0
        for group, found in groups:
            if group_wanted is not None and group != group_wanted:
                continue
            for metric in found.registry.collect():
                for sample in metric.samples:
                    if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                        total += sample.value
        return total

    def drain_changes(self) -> dict[str | None, set[tuple[str, tuple[str, ...]]]]:
        """The series recorded into since the last call, as ``(family name, label values)`` by
        group (``None``: the base group)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        changes: dict[str | None, set[tuple[str, tuple[str, ...]]]] = {}
        for group, name, values in dirty:
            changes.setdefault(group, set()).add((name, values))
        return changes

    def preinitialise(self, function: str) -> None:
        """Create at zero the request counters and in-flight gauges ``function`` can emit, so that
        dashboards show a route's 5xx rate as 0 rather than as no data from the first push.

        Nothing needs a zero for ``increase()`` to count it: every series is pushed with its
        created timestamp. Histograms are not pre-created: each series costs every push of its
        family (collected and encoded) about 40 us.
        """
        for _method, endpoint, _statuses in FUNCTION_ROUTES.get(function, ()):
            self._child(active_requests, endpoint=endpoint)
        for method, endpoint, statuses in FUNCTION_ROUTES.get(function, ()):
            for status in statuses:
                self._child(requests_total, method=method, endpoint=endpoint, status_code=status)

    # ------------------------------------------------------------------ the spec's helpers

    def track_request(self, method: str, endpoint: str, status_code: int | str, duration: float) -> None:
        """One API request: ``pricing_requests_total`` and ``pricing_api_latency_seconds``."""
        self._inc(requests_total, method=method, endpoint=endpoint, status_code=status_code)
        self._observe(api_latency, duration, method=method, endpoint=endpoint, status_code=status_code)

    def track_rollback(self, property_id: str) -> None:
        self._inc(model_rollbacks, property_id=self.property_label(property_id))

    def track_exploration(self, pricing_method: str, explored: bool) -> None:
        """One customer quote; both ``explored`` series start together, so the share is readable."""
        for flag in (False, True):
            self._child(exploration_quotes, pricing_method=pricing_method, explored=_flag(flag))
        self._inc(exploration_quotes, pricing_method=pricing_method, explored=_flag(explored))

    def track_score_request(self, pricing_method: str, duration: float) -> None:
        self._observe(score_latency, duration, pricing_method=pricing_method)

    def track_outcomes(self, property_id: str, count: int, invalid_count: int = 0, reason: str = "invalid") -> None:
        """``count`` outcomes stored and ``invalid_count`` rejected (all for one ``reason``)."""
        label = self.property_label(property_id)
        self._child(outcomes_ingested, property_id=label)
        if count:
            self._inc(outcomes_ingested, count, property_id=label)
        if invalid_count:
            self.track_invalid_outcome(property_id, reason, invalid_count)

    def track_invalid_outcome(self, property_id: str, reason: str, count: int = 1) -> None:
        """``count`` outcomes rejected for ``reason`` (a short validation code, not free text)."""
        label = self.property_label(property_id)
        self._child(outcomes_ingested, property_id=label)  # the ratio's denominator exists
        self._inc(outcomes_invalid, count, property_id=label, reason=reason)

    def track_model_prediction(self, property_id: str, model_type: str, duration: float) -> None:
        self._observe(model_prediction_seconds, duration, property_id=self.property_label(property_id), model_type=model_type)

    def track_retraining(self, property_id: str, model_type: str, status: str, duration: float) -> None:
        """One retraining run; every status of the property starts at zero with the first run."""
        label = self.property_label(property_id)
        for known in RETRAINING_STATUSES:
            self._child(retraining_total, property_id=label, model_type=model_type, status=known)
        self._inc(retraining_total, property_id=label, model_type=model_type, status=status)
        self._observe(retraining_duration, duration, property_id=label, model_type=model_type)

    def track_drift(self, property_id: str, trigger_retrain: bool) -> None:
        label = self.property_label(property_id)
        for flag in ("true", "false"):
            self._child(drift_detected, property_id=label, trigger_retrain=flag)
        self._inc(drift_detected, property_id=label, trigger_retrain=_flag(trigger_retrain))

    @contextmanager
    def track_latency(self, histogram: Family, labels: Mapping[str, object] | None = None) -> Iterator[dict]:
        """Observe the block's duration in ``histogram`` under ``labels``.

        Yields a copy of the labels the block may complete (e.g. ``status_code`` once known);
        a label still missing at the end is recorded as ``"unknown"``. ``property_id`` goes
        through the per-container cap.
        """
        bound = dict(labels or {})
        start = time.perf_counter()
        try:
            yield bound
        finally:
            duration = time.perf_counter() - start
            values = {n: bound.get(n, "unknown") for n in histogram.labelnames}
            if histogram.per_property:
                values["property_id"] = self.property_label(values["property_id"])
            self._observe(histogram, duration, **values)

    def track_ab_assignment(self, experiment_id: str, variant: str) -> None:
        self._inc(ab_assignments, experiment_id=experiment_id, variant=variant)

    def track_ab_outcome(self, experiment_id: str, variant: str, accepted: bool) -> None:
        for flag in ("true", "false"):
            self._child(ab_outcomes, experiment_id=experiment_id, variant=variant, accepted=flag)
        self._inc(ab_outcomes, experiment_id=experiment_id, variant=variant, accepted=_flag(accepted))

    def track_competitor_fetch(self, property_id: str, status: str, staleness_seconds: float | None = None) -> None:
        """One competitor-data fetch; ``status`` one of ``COMPETITOR_FETCH_STATUSES``."""
        label = self.property_label(property_id)
        for known in COMPETITOR_FETCH_STATUSES:
            self._child(competitor_fetches, property_id=label, status=known)
        self._inc(competitor_fetches, property_id=label, status=status)
        if staleness_seconds is not None:
            self._set(competitor_staleness, staleness_seconds, property_id=label)

    def track_error(self, endpoint: str, error_type: str) -> None:
        self._inc(errors_total, endpoint=endpoint, error_type=error_type)

    def track_cache_hit(self) -> None:
        self._inc(model_cache_hits)

    def track_cache_miss(self) -> None:
        self._inc(model_cache_misses)

    def set_models_loaded(self, count: int) -> None:
        self._set(models_loaded, count)

    @contextmanager
    def track_active_request(self, endpoint: str) -> Iterator[None]:
        self._inc(active_requests, endpoint=endpoint)
        try:
            yield
        finally:
            self._inc(active_requests, -1, endpoint=endpoint)

    def set_service_info(self, version: str, environment: str, service: str) -> None:
        child, key = self._series(service_info, {})
        child.info({"version": str(version), "environment": str(environment), "service": str(service)})
        self._changed(key)
        self._service_info_set = True

    @property
    def has_service_info(self) -> bool:
        return self._service_info_set

    def mark_synthetic_check(self, timestamp: float | None = None) -> None:
        """Record a successful scheduled synthetic health check (ServiceDown watches its age)."""
        self._set(synthetic_check_timestamp, time.time() if timestamp is None else timestamp)

    def count_push_failure(self, reason: str) -> None:
        self._inc(push_failures, reason=reason)

    def update_container_gauges(self, memory_limit_bytes: int = 0) -> None:
        """Refresh uptime and memory just before a push (gauges describe the moment of the push)."""
        self._set(uptime_seconds, float(int(time.monotonic() - self._started)))  # whole seconds
        # Linux reports ru_maxrss in KiB. Peak, not current, RSS: the OOM kill happens at the peak.
        self._set(container_memory_bytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        if memory_limit_bytes > 0:
            self._set(container_memory_limit_bytes, memory_limit_bytes)


def _flag(value: bool) -> str:
    return "true" if value else "false"


# ---------------------------------------------------------------------- the container's metrics

# Built without configuration: the app module caps its labels (cap_property_labels).
METRICS = PricingMetrics()
REGISTRY = METRICS.registry

track_request = METRICS.track_request
track_score_request = METRICS.track_score_request
track_outcomes = METRICS.track_outcomes
track_invalid_outcome = METRICS.track_invalid_outcome
track_model_prediction = METRICS.track_model_prediction
track_retraining = METRICS.track_retraining
track_drift = METRICS.track_drift
track_exploration = METRICS.track_exploration
track_rollback = METRICS.track_rollback
track_latency = METRICS.track_latency
track_ab_assignment = METRICS.track_ab_assignment
track_ab_outcome = METRICS.track_ab_outcome
track_competitor_fetch = METRICS.track_competitor_fetch
track_error = METRICS.track_error
track_cache_hit = METRICS.track_cache_hit
track_cache_miss = METRICS.track_cache_miss
set_models_loaded = METRICS.set_models_loaded
track_active_request = METRICS.track_active_request
set_service_info = METRICS.set_service_info
mark_synthetic_check = METRICS.mark_synthetic_check
