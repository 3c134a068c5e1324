"""The metric families of spec/OBSERVABILITY.md and the helpers that record them (no network)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY as GLOBAL_REGISTRY
from prometheus_client import generate_latest

from pricing.observability import metrics
from pricing.observability.metrics import OTHER_PROPERTY, PricingMetrics

# name -> (type, labels), straight from the spec's tables plus the alerts' self-metrics.
SPEC_FAMILIES = {
    "pricing_api_latency_seconds": ("histogram", ("method", "endpoint", "status_code")),
    "pricing_score_latency_seconds": ("histogram", ("pricing_method",)),
    "pricing_requests_total": ("counter", ("method", "endpoint", "status_code")),
    "pricing_active_requests": ("gauge", ("endpoint",)),
    "pricing_errors_total": ("counter", ("endpoint", "error_type")),
    "pricing_model_prediction_seconds": ("histogram", ("property_id", "model_type")),
    "pricing_model_cache_hits_total": ("counter", ()),
    "pricing_model_cache_misses_total": ("counter", ()),
    "pricing_models_loaded": ("gauge", ()),
    "pricing_outcomes_ingested_total": ("counter", ("property_id",)),
    "pricing_outcomes_invalid_total": ("counter", ("property_id", "reason")),
    "pricing_retraining_duration_seconds": ("histogram", ("property_id", "model_type")),
    "pricing_retraining_total": ("counter", ("property_id", "model_type", "status")),
    "pricing_drift_detected_total": ("counter", ("property_id", "trigger_retrain")),
    "pricing_exploration_quotes_total": ("counter", ("pricing_method", "explored")),
    "pricing_model_rollbacks_total": ("counter", ("property_id",)),
    "pricing_ab_assignments_total": ("counter", ("experiment_id", "variant")),
    "pricing_ab_outcomes_total": ("counter", ("experiment_id", "variant", "accepted")),
    "pricing_competitor_fetches_total": ("counter", ("property_id", "status")),
    "pricing_competitor_staleness_seconds": ("gauge", ("property_id",)),
    "pricing_service_info": ("info", ()),
    "pricing_uptime_seconds": ("gauge", ()),
    "pricing_metrics_push_failures_total": ("counter", ("reason",)),
    "pricing_synthetic_check_timestamp_seconds": ("gauge", ()),
    "pricing_container_memory_bytes": ("gauge", ()),
    "pricing_container_memory_limit_bytes": ("gauge", ()),
}


@pytest.fixture
def m() -> PricingMetrics:
    return PricingMetrics(max_property_labels=3)


def value(m: PricingMetrics, name: str, **labels) -> float | None:
    return m.get_sample_value(name, labels)


def test_every_spec_family_exists_with_its_exact_name_type_and_labels(m):
    families = {f.name: (f.kind, f.labelnames) for f in m.families}
    assert families == SPEC_FAMILIES


def test_the_registry_is_dedicated_not_the_global_one():
    assert metrics.REGISTRY is not GLOBAL_REGISTRY
    assert b"pricing_requests_total" not in generate_latest(GLOBAL_REGISTRY)


@pytest.mark.parametrize(
    "family,thresholds",
    [
        ("api_latency", (0.08, 0.2, 1.0)),
        ("score_latency", (0.08, 0.2, 1.0)),
        ("model_prediction_seconds", (0.1,)),
        ("retraining_duration", (1800.0,)),
    ],
)
def test_alert_thresholds_are_bucket_edges(m, family, thresholds):
    edges = getattr(metrics, family).buckets
    for threshold in thresholds:
        assert threshold in edges


def test_track_request_counts_and_observes_under_the_same_labels(m):
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.07)
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.5)
    labels = dict(method="POST", endpoint="/score", status_code=200)
    assert value(m, "pricing_requests_total", **labels) == 2
    assert value(m, "pricing_api_latency_seconds_count", **labels) == 2
    assert value(m, "pricing_api_latency_seconds_bucket", le="0.08", **labels) == 1


def test_spec_helper_keyword_calls(m):
    m.track_score_request(pricing_method="ml_elasticity", duration=0.018)
    m.track_outcomes(property_id="prop-123", count=100, invalid_count=5)
    m.track_model_prediction(property_id="prop-123", model_type="conversion", duration=0.005)
    m.track_retraining(property_id="prop-123", model_type="conversion", status="deployed", duration=120.5)
    m.track_drift(property_id="prop-123", trigger_retrain=True)
    assert value(m, "pricing_score_latency_seconds_count", pricing_method="ml_elasticity") == 1
    assert value(m, "pricing_outcomes_ingested_total", property_id="prop-123") == 100
    assert value(m, "pricing_outcomes_invalid_total", property_id="prop-123", reason="invalid") == 5
    assert value(m, "pricing_model_prediction_seconds_count", property_id="prop-123", model_type="conversion") == 1
    assert value(m, "pricing_retraining_total", property_id="prop-123", model_type="conversion", status="deployed") == 1
    assert value(m, "pricing_retraining_duration_seconds_sum", property_id="prop-123", model_type="conversion") == 120.5
    assert value(m, "pricing_drift_detected_total", property_id="prop-123", trigger_retrain="true") == 1


def test_sibling_label_sets_start_at_zero_so_a_first_failure_is_an_increment(m):
    m.track_retraining(property_id="p", model_type="conversion", status="deployed", duration=1.0)
    for status in ("rejected", "skipped", "failed"):
        assert value(m, "pricing_retraining_total", property_id="p", model_type="conversion", status=status) == 0
    m.track_drift(property_id="p", trigger_retrain=False)
    assert value(m, "pricing_drift_detected_total", property_id="p", trigger_retrain="true") == 0
    m.track_competitor_fetch(property_id="p", status="success", staleness_seconds=42)
    assert value(m, "pricing_competitor_fetches_total", property_id="p", status="error") == 0
    assert value(m, "pricing_competitor_staleness_seconds", property_id="p") == 42


def test_invalid_outcomes_by_reason(m):
    m.track_invalid_outcome(property_id="p", reason="price_out_of_range", count=3)
    m.track_invalid_outcome(property_id="p", reason="missing_field")
    assert value(m, "pricing_outcomes_invalid_total", property_id="p", reason="price_out_of_range") == 3
    assert value(m, "pricing_outcomes_invalid_total", property_id="p", reason="missing_field") == 1
    assert value(m, "pricing_outcomes_ingested_total", property_id="p") == 0


def test_property_labels_are_capped_per_container_and_overflow_is_still_counted(m):
    for i in range(10):
        m.track_outcomes(property_id=f"prop-{i}", count=1)
    assert sorted(m.groups()) == sorted(["prop-0", "prop-1", "prop-2", OTHER_PROPERTY])
    assert value(m, "pricing_outcomes_ingested_total", property_id=OTHER_PROPERTY) == 7
    m.track_outcomes(property_id="prop-1", count=1)  # a known property keeps its own label
    assert value(m, "pricing_outcomes_ingested_total", property_id="prop-1") == 2


def test_track_latency_observes_the_block_and_lets_it_complete_labels(m):
    with m.track_latency(metrics.api_latency, {"method": "POST", "endpoint": "/score"}) as labels:
        labels["status_code"] = 200
    assert value(m, "pricing_api_latency_seconds_count", method="POST", endpoint="/score", status_code=200) == 1
    with pytest.raises(RuntimeError), m.track_latency(metrics.api_latency, {"method": "GET", "endpoint": "/health"}):
        raise RuntimeError("boom")
    assert value(m, "pricing_api_latency_seconds_count", method="GET", endpoint="/health", status_code="unknown") == 1


def test_track_latency_on_a_per_property_histogram_goes_through_the_cap(m):
    for i in range(5):
        with m.track_latency(metrics.model_prediction_seconds, {"property_id": f"p{i}", "model_type": "conversion"}):
            pass
    assert value(m, "pricing_model_prediction_seconds_count", property_id=OTHER_PROPERTY, model_type="conversion") == 2


def test_ab_competitor_error_cache_and_gauges(m):
    m.track_ab_assignment(experiment_id="exp-1", variant="treatment")
    m.track_ab_outcome(experiment_id="exp-1", variant="treatment", accepted=True)
    m.track_competitor_fetch(property_id="p", status="timeout")
    m.track_error(endpoint="/score", error_type="StorageUnavailable")
    m.track_cache_hit()
    m.track_cache_miss()
    m.set_models_loaded(3)
    assert value(m, "pricing_ab_assignments_total", experiment_id="exp-1", variant="treatment") == 1
    assert value(m, "pricing_ab_outcomes_total", experiment_id="exp-1", variant="treatment", accepted="true") == 1
    assert value(m, "pricing_ab_outcomes_total", experiment_id="exp-1", variant="treatment", accepted="false") == 0
    assert value(m, "pricing_competitor_fetches_total", property_id="p", status="timeout") == 1
    assert value(m, "pricing_competitor_staleness_seconds", property_id="p") is None
    assert value(m, "pricing_errors_total", endpoint="/score", error_type="StorageUnavailable") == 1
    assert value(m, "pricing_model_cache_hits_total") == 1
    assert value(m, "pricing_model_cache_misses_total") == 1
    assert value(m, "pricing_models_loaded") == 3


def test_active_requests_goes_up_during_the_block_and_back_down(m):
    with m.track_active_request("/score"):
        assert value(m, "pricing_active_requests", endpoint="/score") == 1
    assert value(m, "pricing_active_requests", endpoint="/score") == 0


def test_service_info_synthetic_check_and_container_gauges(m):
    m.set_service_info(version="1.2.3", environment="staging", service="pricing-score")
    m.mark_synthetic_check(timestamp=1_700_000_000)
    m.update_container_gauges(memory_limit_bytes=512 * 1024 * 1024)
    assert value(m, "pricing_service_info", version="1.2.3", environment="staging", service="pricing-score") == 1
    assert value(m, "pricing_synthetic_check_timestamp_seconds") == 1_700_000_000
    assert value(m, "pricing_container_memory_limit_bytes") == 512 * 1024 * 1024
    assert value(m, "pricing_container_memory_bytes") > 10 * 1024 * 1024  # a Python process's max RSS
    assert value(m, "pricing_uptime_seconds") >= 0


def test_push_failure_reasons_exist_at_zero_from_the_start(m):
    for reason in ("timeout", "connection", "http_4xx", "http_5xx", "backoff", "prune"):
        assert value(m, "pricing_metrics_push_failures_total", reason=reason) == 0


def test_preinitialise_creates_the_functions_routes_at_zero(m):
    m.preinitialise("score")
    assert value(m, "pricing_requests_total", method="POST", endpoint="/score", status_code=500) == 0
    assert value(m, "pricing_requests_total", method="GET", endpoint="/health", status_code=200) == 0
    assert value(m, "pricing_active_requests", endpoint="/score") == 0
    # Histograms are not pre-created: created timestamps count a late series' first value.
    assert value(m, "pricing_api_latency_seconds_count", method="GET", endpoint="/health", status_code=200) is None
    assert value(m, "pricing_score_latency_seconds_count", pricing_method="rule_based") is None
    assert value(m, "pricing_requests_total", method="POST", endpoint="/learn", status_code=200) is None


def test_module_helpers_record_into_the_module_registry():
    before = metrics.REGISTRY.get_sample_value("pricing_errors_total", {"endpoint": "/learn", "error_type": "UnitTest"}) or 0
    metrics.track_error(endpoint="/learn", error_type="UnitTest")
    after = metrics.REGISTRY.get_sample_value("pricing_errors_total", {"endpoint": "/learn", "error_type": "UnitTest"})
    assert after == before + 1
    with metrics.track_latency(metrics.api_latency, {"method": "POST", "endpoint": "/learn", "status_code": 200}):
        pass
