"""The protobuf push body, decoded by the protobuf package against client_model's schema."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from pricing.observability.exposition import encode_families
from tests.support import promproto


@pytest.fixture(scope="module")
def pb():
    return promproto.metrics_pb2()


def decode(pb, body: bytes) -> list:
    return promproto.families(body)


def labels(metric) -> dict[str, str]:
    return {pair.name: pair.value for pair in metric.label}


def test_counters_carry_their_value_and_created_timestamp(pb):
    registry = CollectorRegistry()
    c = Counter("jobs", "Jobs done", ("kind",), registry=registry)
    c.labels("a").inc(3)
    c.labels("b")
    (family,) = decode(pb, encode_families(registry.collect()))
    assert (family.name, family.help, family.type) == ("jobs_total", "Jobs done", pb.COUNTER)
    by_kind = {labels(m)["kind"]: m.counter for m in family.metric}
    assert by_kind["a"].value == 3 and by_kind["b"].value == 0
    created = {s.labels["kind"]: s.value for s in c.collect()[0].samples if s.name == "jobs_created"}
    for kind, counter in by_kind.items():
        stamp = counter.created_timestamp.seconds + counter.created_timestamp.nanos / 1e9
        assert stamp == pytest.approx(created[kind], abs=1e-6)
        assert counter.HasField("created_timestamp")


def test_histograms_carry_cumulative_buckets_count_sum_and_created_timestamp(pb):
    registry = CollectorRegistry()
    h = Histogram("latency_seconds", "Latency", ("route",), buckets=(0.1, 1.0, 2.5), registry=registry)
    for value in (0.05, 0.5, 0.7, 3.0):
        h.labels("/score").observe(value)
    h.labels("/health")
    (family,) = decode(pb, encode_families(registry.collect()))
    assert (family.name, family.type) == ("latency_seconds", pb.HISTOGRAM)
    by_route = {labels(m)["route"]: m.histogram for m in family.metric}
    score = by_route["/score"]
    assert score.sample_count == 4 and score.sample_sum == pytest.approx(4.25)
    # +Inf is implied by sample_count, as Prometheus' own clients leave it out.
    assert [(b.upper_bound, b.cumulative_count) for b in score.bucket] == [(0.1, 1), (1.0, 3), (2.5, 3)]
    assert score.HasField("created_timestamp") and score.created_timestamp.seconds > 1_600_000_000
    assert by_route["/health"].sample_count == 0
    assert set(labels(family.metric[0])) == {"route"}  # no "le" on the series


def test_gauges_infos_and_unlabelled_families(pb):
    registry = CollectorRegistry()
    Gauge("in_flight", "In flight", registry=registry).set(-2.5)
    Info("build", "Build", registry=registry).info({"version": "1.2", "env": "ünïcode ✓ 𝔘"})
    Counter("never", "Nothing yet", ("x",), registry=registry)  # no child: no family sent
    families = {f.name: f for f in decode(pb, encode_families(registry.collect()))}
    assert set(families) == {"in_flight", "build_info"}
    assert families["in_flight"].type == pb.GAUGE and families["in_flight"].metric[0].gauge.value == -2.5
    info = families["build_info"]
    assert info.type == pb.GAUGE and info.metric[0].gauge.value == 1
    assert labels(info.metric[0]) == {"version": "1.2", "env": "ünïcode ✓ 𝔘"}


@pytest.mark.parametrize("value", [0.0, 1.0, 127.0, 128.0, 2.0**53, 1e300, math.inf, 5e-324])
def test_values_at_their_limits_survive_the_round_trip(pb, value):
    registry = CollectorRegistry()
    Gauge("g", "g", registry=registry).set(value)
    h = Histogram("h", "h", buckets=(1.0,), registry=registry)
    for _ in range(int(min(value, 300))):
        h.observe(0.5)
    families = {f.name: f for f in decode(pb, encode_families(registry.collect()))}
    assert families["g"].metric[0].gauge.value == value
    assert families["h"].metric[0].histogram.sample_count == int(min(value, 300))


def test_the_service_families_decode_completely(pb):
    from pricing.observability.metrics import FAMILIES, PricingMetrics

    m = PricingMetrics()
    m.preinitialise("score")
    m.track_request("POST", "/score", 200, 0.05)
    m.track_outcomes("p-1", 3, 1, "missing_field")
    m.track_model_prediction("p-1", "conversion", 0.002)
    m.set_service_info("1.0", "test", "pricing-score")
    base = {f.name for f in decode(pb, encode_families(m.collect(None)))}
    group = {f.name for f in decode(pb, encode_families(m.collect("p-1")))}
    assert "pricing_requests_total" in base and "pricing_service_info" in base
    assert group == {"pricing_outcomes_ingested_total", "pricing_outcomes_invalid_total", "pricing_model_prediction_seconds"}
    assert base | group <= {f.name for f in FAMILIES}
