"""Every Prometheus metric of the service, defined once, in a registry of its own.

The families, names, types and labels are those of ``spec/OBSERVABILITY.md`` plus the few
self-metrics the alert rules need (push failures, synthetic check, container memory). They live
in a dedicated :class:`~prometheus_client.CollectorRegistry`, never the library's global one, so
nothing a dependency registers there is pushed with them.

Callers record through the helper functions (``track_request``, ``track_outcomes``, ...), which go
to one module-level :class:`PricingMetrics`. Tests build their own ``PricingMetrics`` instead.

Example::

    >>> m = PricingMetrics(max_property_labels=2)
    >>> m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.012)
    >>> m.requests_total.labels("POST", "/score", "200")._value.get()
    1.0
    >>> [m.property_label(p) for p in ("a", "b", "c")]
    ['a', 'b', '__other__']

Label cardinality: ``property_id`` is the only open-ended label. Each container keeps at most
``METRICS_MAX_PROPERTY_LABELS`` distinct values (through ``pricing.settings``); later properties
are counted under ``property_id="__other__"`` so no event is lost, only its attribution.

Environment: ``METRICS_MAX_PROPERTY_LABELS`` (read once through ``pricing.settings``).
"""

from __future__ import annotations

import resource
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Mapping, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from pricing.settings import get_settings

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

# The routes each function serves, with the statuses API.md allows, so the first 4xx/5xx of a
# container is an increment from an already visible zero rather than a brand-new series.
FUNCTION_ROUTES: Mapping[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "score": (("POST", "/score", ("200", "413", "422", "500")), ("GET", "/health", ("200", "500"))),
    "ingest": (("POST", "/learn", ("200", "413", "422", "500")),),
    "retrain": (),
}


class Series(NamedTuple):
    """One labelled child of a family, as the pusher sees it."""

    family: "Family"
    labelvalues: tuple[str, ...]
    child: object


class Family(NamedTuple):
    """A metric family with what the pusher needs to render it in the text format."""

    metric: object
    name: str  # the exposed family name (``..._total`` for counters)
    kind: str  # counter, gauge, histogram (info is rendered as a gauge)
    documentation: str
    labelnames: tuple[str, ...]

    @property
    def per_property(self) -> bool:
        return "property_id" in self.labelnames

    @property
    def cumulative(self) -> bool:
        """Counters and histograms: their first sample is invisible to increase()/rate()."""
        return self.kind in ("counter", "histogram")


class PricingMetrics:
    """The service's metric families in one dedicated registry, with the spec's helpers.

    Thread-safe: the FastAPI apps run sync routes in worker threads.
    """

    def __init__(self, max_property_labels: int = 200) -> None:
        if max_property_labels < 1:
            raise ValueError("max_property_labels must be at least 1")
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # --- API ---
        self.api_latency = Histogram(
            "pricing_api_latency_seconds", "API request latency in seconds",
            ("method", "endpoint", "status_code"), buckets=API_LATENCY_BUCKETS, registry=r)
        self.score_latency = Histogram(
            "pricing_score_latency_seconds", "/score endpoint latency in seconds",
            ("pricing_method",), buckets=API_LATENCY_BUCKETS, registry=r)
        self.requests_total = Counter(
            "pricing_requests_total", "Total requests", ("method", "endpoint", "status_code"), registry=r)
        self.active_requests = Gauge(
            "pricing_active_requests", "Active concurrent requests", ("endpoint",), registry=r)
        self.errors_total = Counter(
            "pricing_errors_total", "Total errors", ("endpoint", "error_type"), registry=r)
        # --- ML model ---
        self.model_prediction_seconds = Histogram(
            "pricing_model_prediction_seconds", "Model prediction latency in seconds",
            ("property_id", "model_type"), buckets=MODEL_PREDICTION_BUCKETS, registry=r)
        self.model_cache_hits = Counter("pricing_model_cache_hits_total", "Model cache hits", registry=r)
        self.model_cache_misses = Counter("pricing_model_cache_misses_total", "Model cache misses", registry=r)
        self.models_loaded = Gauge("pricing_models_loaded", "Number of models loaded", registry=r)
        # --- learning loop ---
        self.outcomes_ingested = Counter(
            "pricing_outcomes_ingested_total", "Outcomes ingested", ("property_id",), registry=r)
        self.outcomes_invalid = Counter(
            "pricing_outcomes_invalid_total", "Invalid outcomes", ("property_id", "reason"), registry=r)
        self.retraining_duration = Histogram(
            "pricing_retraining_duration_seconds", "Retraining duration in seconds",
            ("property_id", "model_type"), buckets=RETRAINING_BUCKETS, registry=r)
        self.retraining_total = Counter(
            "pricing_retraining_total", "Retraining events", ("property_id", "model_type", "status"), registry=r)
        self.drift_detected = Counter(
            "pricing_drift_detected_total", "Drift detections", ("property_id", "trigger_retrain"), registry=r)
        self.exploration_quotes = Counter(
            "pricing_exploration_quotes_total", "Quotes by pricing method, explored (priced at a neighbour of the optimum) or not",
            ("pricing_method", "explored"), registry=r)
        self.model_rollbacks = Counter(
            "pricing_model_rollbacks_total", "Live models rolled back to rule-based pricing",
            ("property_id",), registry=r)
        # --- A/B testing ---
        self.ab_assignments = Counter(
            "pricing_ab_assignments_total", "A/B test assignments", ("experiment_id", "variant"), registry=r)
        self.ab_outcomes = Counter(
            "pricing_ab_outcomes_total", "A/B test outcomes", ("experiment_id", "variant", "accepted"), registry=r)
        # --- competitor data ---
        self.competitor_fetches = Counter(
            "pricing_competitor_fetches_total", "Competitor data fetches", ("property_id", "status"), registry=r)
        self.competitor_staleness = Gauge(
            "pricing_competitor_staleness_seconds", "Competitor data staleness in seconds",
            ("property_id",), registry=r)
        # --- system ---
        self.service_info = Info("pricing_service", "Service information", registry=r)
        self.uptime_seconds = Gauge("pricing_uptime_seconds", "Container uptime in seconds", registry=r)
        # --- self-metrics for Lambda semantics of the alerts (no long-running target to scrape) ---
        self.push_failures = Counter(
            "pricing_metrics_push_failures_total", "Metric pushes to the Pushgateway that failed",
            ("reason",), registry=r)
        self.synthetic_check_timestamp = Gauge(
            "pricing_synthetic_check_timestamp_seconds",
            "Unix time of the last successful scheduled synthetic health check", registry=r)
        self.container_memory_bytes = Gauge(
            "pricing_container_memory_bytes", "Peak resident memory of the container (max RSS)", registry=r)
        self.container_memory_limit_bytes = Gauge(
            "pricing_container_memory_limit_bytes", "Memory configured for the function", registry=r)

        self.families: tuple[Family, ...] = tuple(self._describe())
        self._by_metric = {id(f.metric): f for f in self.families}
        self._lock = threading.Lock()
        self._max_property_labels = max_property_labels
        self._property_labels: set[str] = set()
        # Every child ever created, per property label (None: not per-property), in creation
        # order. The pusher renders one property's group from here without walking the registry.
        self._series: dict[str | None, dict[tuple[int, tuple[str, ...]], Series]] = {None: {}}
        self._touched: set[str] = set()
        self._started = time.monotonic()
        for fam in self.families:
            if not fam.labelnames:
                self._series[None][(id(fam.metric), ())] = Series(fam, (), fam.metric)
        for reason in PUSH_FAILURE_REASONS:
            self._child(self.push_failures, reason=reason)

    def _describe(self) -> Iterator[Family]:
        for metric in (
            self.api_latency, self.score_latency, self.requests_total, self.active_requests,
            self.errors_total, self.model_prediction_seconds, self.model_cache_hits,
            self.model_cache_misses, self.models_loaded, self.outcomes_ingested, self.outcomes_invalid,
            self.retraining_duration, self.retraining_total, self.drift_detected, self.exploration_quotes,
            self.model_rollbacks, self.ab_assignments,
            self.ab_outcomes, self.competitor_fetches, self.competitor_staleness, self.service_info,
            self.uptime_seconds, self.push_failures, self.synthetic_check_timestamp,
            self.container_memory_bytes, self.container_memory_limit_bytes,
        ):
            kind = metric._type  # noqa: SLF001 - the wrapper's declared type
            name = metric._name + {"counter": "_total", "info": "_info"}.get(kind, "")  # noqa: SLF001
            yield Family(metric, name, kind, metric._documentation, tuple(metric._labelnames))  # noqa: SLF001

    # ------------------------------------------------------------------ labels and children

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

    def _child(self, metric, **labels: object):
        """The labelled child, registered for the pusher; ``property_id`` must already be mapped."""
        fam = self._by_metric[id(metric)]
        values = tuple(str(labels[n]) for n in fam.labelnames)
        prop = labels["property_id"] if fam.per_property else None
        key = (id(metric), values)
        with self._lock:
            known = self._series.setdefault(prop, {}).get(key)
            if prop is not None:
                self._touched.add(prop)
        if known is not None:
            return known.child
        child = metric.labels(*values)
        with self._lock:
            self._series[prop].setdefault(key, Series(fam, values, child))
        return child

    def _property_children(self, metric, property_id: object, **labels: object):
        return self._child(metric, property_id=self.property_label(property_id), **labels)

    def series(self, property_label: str | None) -> list[Series]:
        """Children of the base group (``None``) or of one property's group, in family order."""
        with self._lock:
            found = list(self._series.get(property_label, {}).values())
        order = {id(f.metric): i for i, f in enumerate(self.families)}
        found.sort(key=lambda s: order[id(s.family.metric)])
        return found

    def property_labels(self) -> list[str]:
        """Every property label that has series in this container."""
        with self._lock:
            return [p for p in self._series if p is not None]

    def drain_touched_properties(self) -> set[str]:
        """Property labels recorded since the last call (the pusher pushes only those groups)."""
        with self._lock:
            touched, self._touched = self._touched, set()
        return touched

    def preinitialise(self, function: str) -> None:
        """Create at zero every finite label set ``function`` can emit.

        A series that first appears with value 1 has no earlier sample, so ``increase()`` never
        sees that 1. Created at zero and announced with the container's first push, a later first
        error or first 413 is an ordinary increment, with no hold of its own to wait out.
        """
        for method, endpoint, statuses in FUNCTION_ROUTES.get(function, ()):
            self._child(self.active_requests, endpoint=endpoint)
            # Latency only for the success path: a histogram series is ~16 samples on every push,
            # and an error's latency is not what an alert counts (its request is).
            self._child(self.api_latency, method=method, endpoint=endpoint, status_code=statuses[0])
            for status in statuses:
                self._child(self.requests_total, method=method, endpoint=endpoint, status_code=status)
        if function == "score":
            for pricing_method in PRICING_METHODS:
                self._child(self.score_latency, pricing_method=pricing_method)

    # ------------------------------------------------------------------ the spec's helpers

    def track_request(self, method: str, endpoint: str, status_code: int | str, duration: float) -> None:
        """One API request: ``pricing_requests_total`` and ``pricing_api_latency_seconds``."""
        labels = {"method": method, "endpoint": endpoint, "status_code": status_code}
        self._child(self.requests_total, **labels).inc()
        self._child(self.api_latency, **labels).observe(duration)

    def track_rollback(self, property_id: str) -> None:
        self._property_children(self.model_rollbacks, property_id).inc()

    def track_exploration(self, pricing_method: str, explored: bool) -> None:
        """One customer quote; both ``explored`` series start together, so the share is readable."""
        for flag in (False, True):
            self._child(self.exploration_quotes, pricing_method=pricing_method, explored=_flag(flag))
        self._child(self.exploration_quotes, pricing_method=pricing_method, explored=_flag(explored)).inc()

    def track_score_request(self, pricing_method: str, duration: float) -> None:
        self._child(self.score_latency, pricing_method=pricing_method).observe(duration)

    def track_outcomes(self, property_id: str, count: int, invalid_count: int = 0,
                       reason: str = "invalid") -> None:
        """``count`` outcomes stored and ``invalid_count`` rejected (all for one ``reason``)."""
        ingested = self._property_children(self.outcomes_ingested, property_id)
        if count:
            ingested.inc(count)
        if invalid_count:
            self.track_invalid_outcome(property_id, reason, invalid_count)

    def track_invalid_outcome(self, property_id: str, reason: str, count: int = 1) -> None:
        """``count`` outcomes rejected for ``reason`` (a short validation code, not free text)."""
        label = self.property_label(property_id)
        self._child(self.outcomes_ingested, property_id=label)  # the ratio's denominator exists
        self._child(self.outcomes_invalid, property_id=label, reason=reason).inc(count)

    def track_model_prediction(self, property_id: str, model_type: str, duration: float) -> None:
        self._property_children(self.model_prediction_seconds, property_id, model_type=model_type).observe(duration)

    def track_retraining(self, property_id: str, model_type: str, status: str, duration: float) -> None:
        """One retraining run; every status of the property starts at zero with the first run."""
        label = self.property_label(property_id)
        for known in RETRAINING_STATUSES:
            self._child(self.retraining_total, property_id=label, model_type=model_type, status=known)
        self._child(self.retraining_total, property_id=label, model_type=model_type, status=status).inc()
        self._child(self.retraining_duration, property_id=label, model_type=model_type).observe(duration)

    def track_drift(self, property_id: str, trigger_retrain: bool) -> None:
        label = self.property_label(property_id)
        for flag in ("true", "false"):
            self._child(self.drift_detected, property_id=label, trigger_retrain=flag)
        self._child(self.drift_detected, property_id=label, trigger_retrain=_flag(trigger_retrain)).inc()

    @contextmanager
    def track_latency(self, histogram, labels: Mapping[str, object] | None = None) -> Iterator[dict]:
        """Observe the block's duration in ``histogram`` under ``labels``.

        Yields a copy of the labels the block may complete (e.g. ``status_code`` once known);
        a label still missing at the end is recorded as ``"unknown"``. ``property_id`` goes
        through the per-container cap.
        """
        fam = self._by_metric[id(histogram)]
        bound = dict(labels or {})
        start = time.perf_counter()
        try:
            yield bound
        finally:
            duration = time.perf_counter() - start
            values = {n: bound.get(n, "unknown") for n in fam.labelnames}
            if fam.per_property:
                values["property_id"] = self.property_label(values["property_id"])
            self._child(histogram, **values).observe(duration)

    def track_ab_assignment(self, experiment_id: str, variant: str) -> None:
        self._child(self.ab_assignments, experiment_id=experiment_id, variant=variant).inc()

    def track_ab_outcome(self, experiment_id: str, variant: str, accepted: bool) -> None:
        for flag in ("true", "false"):
            self._child(self.ab_outcomes, experiment_id=experiment_id, variant=variant, accepted=flag)
        self._child(self.ab_outcomes, experiment_id=experiment_id, variant=variant, accepted=_flag(accepted)).inc()

    def track_competitor_fetch(self, property_id: str, status: str, staleness_seconds: float | None = None) -> None:
        """One competitor-data fetch; ``status`` one of ``COMPETITOR_FETCH_STATUSES``."""
        label = self.property_label(property_id)
        for known in COMPETITOR_FETCH_STATUSES:
            self._child(self.competitor_fetches, property_id=label, status=known)
        self._child(self.competitor_fetches, property_id=label, status=status).inc()
        if staleness_seconds is not None:
            self._child(self.competitor_staleness, property_id=label).set(staleness_seconds)

    def track_error(self, endpoint: str, error_type: str) -> None:
        self._child(self.errors_total, endpoint=endpoint, error_type=error_type).inc()

    def track_cache_hit(self) -> None:
        self.model_cache_hits.inc()

    def track_cache_miss(self) -> None:
        self.model_cache_misses.inc()

    def set_models_loaded(self, count: int) -> None:
        self.models_loaded.set(count)

    @contextmanager
    def track_active_request(self, endpoint: str) -> Iterator[None]:
        gauge = self._child(self.active_requests, endpoint=endpoint)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def set_service_info(self, version: str, environment: str, service: str) -> None:
        self.service_info.info({"version": str(version), "environment": str(environment), "service": str(service)})

    def mark_synthetic_check(self, timestamp: float | None = None) -> None:
        """Record a successful scheduled synthetic health check (ServiceDown watches its age)."""
        self.synthetic_check_timestamp.set(time.time() if timestamp is None else timestamp)

    def count_push_failure(self, reason: str) -> None:
        self._child(self.push_failures, reason=reason).inc()

    def update_container_gauges(self, memory_limit_bytes: int = 0) -> None:
        """Refresh uptime and memory just before a push (gauges describe the moment of the push)."""
        self.uptime_seconds.set(time.monotonic() - self._started)
        # Linux reports ru_maxrss in KiB. Peak, not current, RSS: the OOM kill happens at the peak.
        self.container_memory_bytes.set(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        if memory_limit_bytes > 0:
            self.container_memory_limit_bytes.set(memory_limit_bytes)


def _flag(value: bool) -> str:
    return "true" if value else "false"


# ---------------------------------------------------------------------- the container's metrics

METRICS = PricingMetrics(max_property_labels=get_settings().metrics_max_property_labels)
REGISTRY = METRICS.registry

# The family objects under the names the spec's examples use, e.g.
# ``with track_latency(api_latency, {"method": "POST", "endpoint": "/score"}): ...``
api_latency = METRICS.api_latency
score_latency = METRICS.score_latency
requests_total = METRICS.requests_total
active_requests = METRICS.active_requests
errors_total = METRICS.errors_total
model_prediction_seconds = METRICS.model_prediction_seconds
model_cache_hits = METRICS.model_cache_hits
model_cache_misses = METRICS.model_cache_misses
models_loaded = METRICS.models_loaded
outcomes_ingested = METRICS.outcomes_ingested
outcomes_invalid = METRICS.outcomes_invalid
retraining_duration = METRICS.retraining_duration
retraining_total = METRICS.retraining_total
drift_detected = METRICS.drift_detected
exploration_quotes = METRICS.exploration_quotes
model_rollbacks = METRICS.model_rollbacks
ab_assignments = METRICS.ab_assignments
ab_outcomes = METRICS.ab_outcomes
competitor_fetches = METRICS.competitor_fetches
competitor_staleness = METRICS.competitor_staleness
service_info = METRICS.service_info
uptime_seconds = METRICS.uptime_seconds
push_failures = METRICS.push_failures
synthetic_check_timestamp = METRICS.synthetic_check_timestamp
container_memory_bytes = METRICS.container_memory_bytes
container_memory_limit_bytes = METRICS.container_memory_limit_bytes

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
