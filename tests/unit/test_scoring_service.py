"""The scoring use case with in-memory stand-ins for storage and the backend (no AWS, no network)."""

from __future__ import annotations

from datetime import date

import pytest

from pricing.api.schemas import ScoreRequest, quote_response
from pricing.competitors import Fetch
from pricing.domain.conversion_model import ConversionModel
from pricing.domain.quote import CompetitorSnapshot
from pricing.services.scoring import FAILURE_BACKOFF_SECONDS, PropertyCache, PropertyState, ScoringService
from pricing.settings import Settings
from pricing.storage import StorageUnavailable
from pricing.storage.registry import PropertyRecord

MODEL = ConversionModel("p1", "v000007", {"intercept": 4.0, "price_ratio": -4.0}, 100.0, (50.0, 250.0))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeStorage:
    """The registry, the artifact store and the experiment store in one (passed as each)."""

    def __init__(self):
        self.records = {"p1": PropertyRecord("p1", 120.0, "v000007", "models/p1/v000007.json")}
        self.artifacts = {"models/p1/v000007.json": MODEL.to_artifact()}
        self.experiments = []
        self.down = False
        self.reads = 0

    def get_property_record(self, property_id):
        self.reads += 1
        if self.down:
            raise StorageUnavailable("dynamodb down")
        return self.records.get(property_id, PropertyRecord(property_id))

    def load_artifact(self, key):
        if self.down:
            raise StorageUnavailable("s3 down")
        return self.artifacts[key]

    def list_experiments(self):
        if self.down:
            raise StorageUnavailable("dynamodb down")
        return self.experiments


class FakeCompetitors:
    enabled = True

    def __init__(self, fetch=None):
        self.calls = []
        self.result = fetch or Fetch(CompetitorSnapshot(80.0, 110.0, 140.0, 12, "scraper", 60.0), "success")

    def fetch(self, property_id, night, request_id=None):
        self.calls.append((property_id, night, request_id))
        return self.result


def request(property_id="p1", **overrides) -> ScoreRequest:
    body = {
        "entity": {"userId": "user-1", "propertyId": property_id},
        "stay_date": "2026-12-24",
        "quote_time": "2026-11-26T12:00:00Z",
        "inventory": {"capacity": 50, "remaining": 10},
    }
    body.update(overrides)
    return ScoreRequest.model_validate(body)


def score(service: ScoringService, req: ScoreRequest, request_id: str | None = None, **kw) -> dict:
    """The service's price for ``req``, as the API answers it."""
    return quote_response(*service.score(req.to_quote(), request_id, **kw))


@pytest.fixture
def world():
    clock, storage, comps = Clock(), FakeStorage(), FakeCompetitors()
    service = ScoringService(Settings(model_cache_ttl_seconds=300), storage, storage, storage, comps, clock=clock, new_token=lambda: "tok")
    return service, storage, comps, clock


def test_live_model_prices_with_ml_and_is_cached(world):
    service, storage, _, _ = world
    first = score(service, request())
    second = score(service, request())
    assert first["safety"]["pricing_method"] == "ml_elasticity"
    assert first["safety"]["model_version"] == "v000007"
    assert storage.reads == 1 and second["price"] == first["price"]


def test_new_model_is_picked_up_after_the_cache_ttl(world):
    service, storage, _, clock = world
    score(service, request())
    newer = ConversionModel("p1", "v000008", {"intercept": 5.0, "price_ratio": -3.0}, 100.0, (50.0, 250.0))
    storage.records["p1"] = PropertyRecord("p1", 120.0, "v000008", "k8")
    storage.artifacts["k8"] = newer.to_artifact()
    assert score(service, request())["safety"]["model_version"] == "v000007"
    clock.now += 301
    assert score(service, request())["safety"]["model_version"] == "v000008"


def test_the_cache_keeps_no_model_only_for_the_negative_ttl_and_a_model_for_the_full_ttl():
    clock = Clock()
    cache = PropertyCache(300, clock, negative_ttl_seconds=15)
    cache.put("absent", PropertyState(None, 120.0, "no model deployed for this property"))
    cache.put("live", PropertyState(MODEL, 120.0))
    clock.now += 14.9
    assert cache.get("absent") is not None and cache.get("live") is not None
    clock.now += 0.2
    assert cache.get("absent") is None  # looked up again after 15 s
    clock.now += 300 - 15.1 - 0.1
    assert cache.get("live") is not None
    clock.now += 0.2
    assert cache.get("live") is None


def test_the_negative_ttl_never_outlives_the_model_ttl_and_an_explicit_ttl_wins():
    clock = Clock()
    cache = PropertyCache(10, clock, negative_ttl_seconds=60)
    assert cache.negative_ttl_seconds == 10
    cache.put("down", PropertyState(None, None, "model store unavailable"), ttl=5)
    clock.now += 5.1
    assert cache.get("down") is None
    assert PropertyCache(300, clock).negative_ttl_seconds == 300  # unset: one TTL for both


def test_a_first_model_is_picked_up_after_the_negative_ttl_not_the_model_ttl(world):
    service, storage, _, clock = world
    assert service.cache.negative_ttl_seconds == 15
    out = score(service, request("p2"))
    assert out["safety"]["pricing_method"] == "rule_based"
    assert any("no model deployed" in r for r in out["reasons"])
    storage.records["p2"] = PropertyRecord("p2", 120.0, "v000001", "k1")
    storage.artifacts["k1"] = ConversionModel("p2", "v000001", {"intercept": 4.0, "price_ratio": -4.0}, 100.0, (50.0, 250.0)).to_artifact()
    clock.now += 10
    assert score(service, request("p2"))["safety"]["pricing_method"] == "rule_based"  # still cached
    clock.now += 6
    assert score(service, request("p2"))["safety"]["model_version"] == "v000001"


def test_the_negative_ttl_is_a_setting():
    assert Settings.from_env({}).model_cache_negative_ttl_seconds == 15
    assert Settings.from_env({"MODEL_CACHE_NEGATIVE_TTL_SECONDS": "2"}).model_cache_negative_ttl_seconds == 2


def test_store_down_falls_back_to_rules_and_backs_off(world):
    service, storage, _, clock = world
    storage.down = True
    out = score(service, request())
    assert out["safety"]["pricing_method"] == "rule_based"
    assert any("model store unavailable" in r for r in out["reasons"])
    score(service, request())
    assert storage.reads == 1  # not hammered while down
    storage.down = False
    clock.now += FAILURE_BACKOFF_SECONDS + 1
    assert score(service, request())["safety"]["pricing_method"] == "ml_elasticity"


def test_corrupt_artifact_falls_back_to_rules(world):
    service, storage, _, _ = world
    storage.artifacts["models/p1/v000007.json"] = {"format": "conversion-logit/v1", "coefficients": "garbage"}
    out = score(service, request())
    assert out["safety"]["pricing_method"] == "rule_based"
    assert any("unusable" in r for r in out["reasons"])


def test_competitors_come_from_the_request_first_then_the_backend(world):
    service, _, comps, _ = world
    given = score(service, request(market={"comp_price_p50": 99.0}))
    assert given["safety"]["competitor_data"]["source"] == "request" and comps.calls == []
    fetched = score(service, request(), request_id="rid-1")
    assert fetched["safety"]["competitor_data"] == {
        "p10": 80.0,
        "p50": 110.0,
        "p90": 140.0,
        "count": 12,
        "source": "scraper",
        "staleness_seconds": 60.0,
    }
    assert comps.calls == [("p1", date(2026, 12, 24), "rid-1")]
    score(service, request(toggles={"use_competitors": False}))
    assert len(comps.calls) == 1


def test_failing_backend_never_fails_the_quote(world):
    service, _, comps, _ = world
    comps.result = Fetch(None, "timeout")
    out = score(service, request(property_id="unknown-prop"))
    assert out["safety"]["competitor_data"] is None and out["price"] > 0


def test_experiment_assignment_drives_the_method_and_quote_id(world):
    service, storage, _, _ = world
    storage.experiments = [{"experiment_id": "exp-all-control", "treatment_share": 0.0}]
    out = score(service, request())
    assert out["safety"]["pricing_method"] == "rule_based"
    assert out["safety"]["ab_variant"] == "control"
    assert out["safety"]["quote_id"] == "tok~exp-all-control~control"


def test_health_reports_whether_a_model_is_loaded(world):
    service, _, _, _ = world
    assert service.health()["model_loaded"] is False
    score(service, request())
    assert service.health()["model_loaded"] is True


def test_the_synthetic_canary_joins_no_experiment_and_records_no_score_latency(world):
    from pricing.observability.metrics import REGISTRY

    service, storage, _, _ = world
    storage.experiments = [{"experiment_id": "exp-all", "treatment_share": 0.5}]

    def counted():
        assignments = sum(
            REGISTRY.get_sample_value("pricing_ab_assignments_total", {"experiment_id": "exp-all", "variant": v}) or 0
            for v in ("control", "treatment")
        )
        latencies = sum(
            REGISTRY.get_sample_value("pricing_score_latency_seconds_count", {"pricing_method": m}) or 0
            for m in ("ml_elasticity", "rule_based")
        )
        return assignments, latencies

    before = counted()
    out = score(service, request(), synthetic=True)
    assert out["safety"]["experiment_id"] is None and out["price"] > 0
    assert counted() == before
    score(service, request())
    assert counted() == (before[0] + 1, before[1] + 1)


def test_the_holdback_share_follows_the_guards_decision_on_the_live_record():
    # The guard's decision reaches the scorer on the LIVE record it reads anyway: no extra read.
    storage, tokens = FakeStorage(), iter(range(10**9))
    storage.records["p1"] = PropertyRecord(
        "p1", 120.0, "v000007", "models/p1/v000007.json", "2026-11-01T00:00:00Z", "maintenance", "2026-11-08T00:00:00Z"
    )
    storage.records["p2"] = PropertyRecord("p2", 120.0, "v000007", "models/p1/v000007.json", "2026-11-20T00:00:00Z")
    service = ScoringService(
        Settings(model_cache_ttl_seconds=300),
        storage,
        storage,
        storage,
        FakeCompetitors(),
        clock=Clock(),
        new_token=lambda: f"t{next(tokens)}",
    )
    n = 4000
    shares = {p: sum(score(service, request(p))["safety"]["holdback"] for _ in range(n)) / n for p in ("p1", "p2")}
    assert 0.005 < shares["p1"] < 0.016, shares  # maintenance: HOLDBACK_MAINTENANCE_RATE, 1%
    assert 0.04 < shares["p2"] < 0.06, shares  # a model not yet shown to beat rules: HOLDBACK_RATE, 5%
    assert storage.reads == 2
