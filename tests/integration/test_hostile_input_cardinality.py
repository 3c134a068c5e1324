"""A flood of random property ids cannot blow up a container's metrics or the Pushgateway.

``property_id`` is the only label a caller controls. Each container keeps at most
``METRICS_MAX_PROPERTY_LABELS`` distinct values; every later property is counted under
``property_id="__other__"``, so events keep their count and lose only their attribution. Here the
real handlers serve floods of never-seen properties (scoring fetches competitor prices for each,
ingestion counts each one's invalid outcomes) and the container's registry, the push size and the
Pushgateway's group count are measured before and after.
"""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime, timedelta

import pytest

from pricing.competitors import CompetitorClient
from pricing.observability import metrics
from pricing.observability.metrics import METRICS, OTHER_PROPERTY, UNKNOWN_PROPERTY
from pricing.observability.push import MetricsPusher
from pricing.services.scoring import ScoringService
from pricing.settings import Settings
from pricing.storage.registry import PropertyRecord
from support.apigw_events import invoke, rest_event
from support.faults import CompetitorBackend
from support.promstack import Pushgateway

NOW = datetime.now(UTC).replace(microsecond=0)
RNG = random.Random(7)


def random_property_id() -> str:
    alphabet = string.ascii_letters + string.digits + "_.:-"
    return "flood-" + "".join(RNG.choice(alphabet) for _ in range(RNG.randint(8, 100)))


def quote(property_id: str) -> dict:
    # No market prices in the request: scoring asks the competitor backend for this property.
    return {
        "entity": {"userId": "flooder", "propertyId": property_id},
        "stay_date": (NOW.date() + timedelta(days=20)).isoformat(),
        "quote_time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inventory": {"capacity": 20, "remaining": 7},
    }


def collected():
    """Every family of the container: the base group's and each property group's."""
    yield from METRICS.collect(None)
    for group in METRICS.groups():
        yield from METRICS.collect(group)


def property_labels() -> set[str]:
    return set(METRICS.groups())


def series_count() -> int:
    return sum(len(m.samples) for m in collected())


def fetches_counted() -> float:
    return sum(
        s.value
        for m in collected()
        if m.name == "pricing_competitor_fetches"
        for s in m.samples
        if s.name == "pricing_competitor_fetches_total"
    )


class NoModels:
    """A registry that knows no property: every flooded id is new to it, as in production."""

    def get_property_record(self, property_id: str) -> PropertyRecord:
        return PropertyRecord(property_id)

    def list_experiments(self) -> list:
        return []


@pytest.fixture(scope="module")
def score_handler():
    from pricing.api import score_app
    from score_handler import handler

    with CompetitorBackend("not_found") as backend:
        original = score_app.service
        score_app.service = ScoringService(
            Settings(), NoModels(), NoModels(), NoModels(), CompetitorClient(backend.url, "backend-key", timeout=1.0)
        )
        try:
            yield handler
        finally:
            score_app.service = original


def flood_score(handler, n: int) -> None:
    for _ in range(n):
        status, _, out = invoke(handler, rest_event("POST", "/score", quote(random_property_id())))
        assert status == 200, out  # an unknown property is still priced
        assert out["price"] >= 0.01 and out["safety"]["pricing_method"] == "rule_based"
        assert any("no model deployed" in r for r in out["reasons"]), out["reasons"]


def test_a_flood_of_properties_is_priced_and_stops_adding_series_at_the_cap(score_handler):
    cap = metrics.METRICS._max_property_labels  # the container's configured cap
    fetched_before = fetches_counted()
    flood_score(score_handler, cap + 50)  # whatever earlier tests used, the cap is reached now
    labels = property_labels() - {OTHER_PROPERTY, UNKNOWN_PROPERTY}
    assert len(labels) <= cap
    assert OTHER_PROPERTY in property_labels()
    series_at_cap = series_count()

    flood_score(score_handler, 400)  # all new properties: not one new series
    assert series_count() == series_at_cap
    assert property_labels() - {OTHER_PROPERTY, UNKNOWN_PROPERTY} == labels
    # Nothing lost: every fetch is counted, under its property or under __other__.
    assert fetches_counted() - fetched_before == cap + 50 + 400


def test_a_batch_of_ten_thousand_properties_adds_at_most_the_cap():
    # Invalid outcomes are counted per property even though nothing is stored: no store needed.
    from ingest_handler import handler

    batch = [
        {"property_id": random_property_id(), "timestamp": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), "quoted_price": -1.0, "accepted": True}
        for _ in range(10_000)
    ]
    cap = metrics.METRICS._max_property_labels
    status, _, out = invoke(handler, rest_event("POST", "/learn", {"batch": batch}))
    assert status == 200 and out["invalid"] == 10_000, out
    assert len(property_labels() - {OTHER_PROPERTY, UNKNOWN_PROPERTY}) <= cap
    invalid = sum(
        s.value
        for m in collected()
        if m.name == "pricing_outcomes_invalid"
        for s in m.samples
        if s.name == "pricing_outcomes_invalid_total" and s.labels["reason"] == "non_positive_price"
    )
    assert invalid >= 10_000


def test_the_pushgateway_holds_at_most_cap_plus_two_groups_and_each_push_stays_small():
    cap = 20
    m = metrics.PricingMetrics(max_property_labels=cap)
    with Pushgateway() as pgw:
        settings = Settings(pushgateway_url=pgw.url, pushgateway_timeout_seconds=5.0, function_name="pricing-score-flood")
        pusher = MetricsPusher(m, settings, function="score", instance="flood", wait_for_answers=True)
        sizes = []
        for i in range(300):  # one invocation per new property, as a flood arrives
            m.track_competitor_fetch(property_id=random_property_id(), status="not_found")
            m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
            stats = pusher.push(f"flood-{i}")
            assert stats.ok
            sizes.append(stats.bytes)
        groups = [g for g in pgw.groups() if g["labels"].get("instance") == "flood"]
        assert len(groups) <= cap + 2  # the base group, one per property label, and __other__
        pushed_properties = {g["labels"].get("property_id") for g in groups} - {None}
        assert OTHER_PROPERTY in pushed_properties and len(pushed_properties) <= cap + 1
        # Past the cap a push is the base group and the __other__ group, whatever came before.
        assert max(sizes[cap + 5 :]) <= min(sizes[cap + 5 :]) * 1.2
        assert pgw.sum("pricing_competitor_fetches_total", instance="flood") == 300
        pusher.close()
