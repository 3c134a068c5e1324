"""Dependencies failing for real, under the handlers: S3 and DynamoDB (a moto server behind a proxy
that hangs, slows, throttles, errors or resets), the competitor backend, corrupt model artifacts.

What must hold whatever fails:

* /score answers 200, by rules when the model cannot be had, and says so in ``reasons``; a failing
  store is asked once per quote, not retried on the latency path;
* /learn answers 503 with Retry-After and acknowledges nothing it did not store; the same batch
  retried after the store heals stores every outcome exactly once;
* a retrain that fails half-way leaves the registry's LIVE pointer on a loadable model.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pricing.competitors import CompetitorClient
from pricing.domain.conversion_model import ConversionModel
from pricing.domain.simulator import CURVES, simulate_outcomes
from pricing.observability.metrics import METRICS
from pricing.services.ingestion import IngestionService
from pricing.services.retraining import RetrainingService, artifact_key
from pricing.services.scoring import ScoringService
from pricing.storage.aws import from_wire
from pricing.storage.outcomes import OUTCOME_LISTING_KEY
from pricing.storage.registry import LIVE_RECORD
from pricing.storage.stores import Stores
from support.apigw_events import invoke, rest_event
from support.faults import CompetitorBackend, FaultProxy, impatient
from support.moto_stack import aws, moto_server  # noqa: F401 - fixtures

NOW = datetime.now(UTC).replace(microsecond=0)
PROPERTY = "hotel-faults"
MODEL = ConversionModel(PROPERTY, "v-live", {"intercept": 4.0, "price_ratio": -4.0}, 100.0, (50.0, 250.0))
FELL_BACK = "Fell back to rule-based pricing"


def quote(property_id: str = PROPERTY, **extra) -> dict:
    return {
        "entity": {"userId": "u-1", "propertyId": property_id},
        "stay_date": (NOW.date() + timedelta(days=21)).isoformat(),
        "quote_time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inventory": {"capacity": 40, "remaining": 12},
        **extra,
    }


def seed_live_model(stores: Stores, property_id: str = PROPERTY, artifact: bytes | dict | None = None, version: str = "v-live") -> str:
    """Registry CONFIG (base price 130) and LIVE pointing at ``artifact`` (default: a usable model)."""
    stores.registry.put_property_config(property_id, 130.0)
    key = artifact_key(property_id, version)
    if isinstance(artifact, bytes):
        stores.artifacts.put_bytes(key, artifact)
    else:
        stores.artifacts.put_artifact(key, artifact if artifact is not None else MODEL.to_artifact())
    stores.registry.swap_live_model(property_id, version, key, expected_version=None, deployed_at=NOW.isoformat())
    return key


@pytest.fixture
def proxy(aws, monkeypatch):  # noqa: F811
    """A fault proxy in front of the test's moto server; functions' AWS calls go through it."""
    direct = Stores.build(aws.settings())  # straight to moto, for seeding and checking
    for service in ("dynamodb", "s3"):
        direct.aws.client(service)  # bound to moto's endpoint now, before it points at the proxy
    with FaultProxy(aws.endpoint_url, delay=2.0) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
        p.aws, p.direct = aws, direct
        yield p


@pytest.fixture
def score(proxy, monkeypatch):
    """POST /score through ScoreFunction's handler, its service's stores behind the proxy."""
    from pricing.api import score_app
    from score_handler import handler

    def install(competitors: CompetitorClient | None = None) -> ScoringService:
        stores = Stores.build(proxy.aws.settings(), latency_critical=True)
        service = ScoringService(
            proxy.aws.settings(), stores.registry, stores.artifacts, stores.experiments, competitors or CompetitorClient("", "", 0.3)
        )
        monkeypatch.setattr(score_app, "service", service)
        return service

    install()

    def post(body: dict) -> dict:
        status, _, out = invoke(handler, rest_event("POST", "/score", body))
        assert status == 200, out
        return out

    post.install = install
    return post


def test_with_healthy_stores_the_live_model_prices(proxy, score):
    seed_live_model(proxy.direct)
    out = score(quote())
    assert out["safety"]["pricing_method"] == "ml_elasticity" and out["safety"]["model_version"] == "v-live"


def test_dynamodb_failing_prices_by_rules_and_says_so(proxy, score):
    # One property per fault: a property whose store read failed is not asked again for a while.
    for mode in ("hang", "throttle", "reset", "error"):
        property_id = f"ddb-{mode}"
        seed_live_model(proxy.direct, property_id)
        proxy.set("dynamodb", mode)
        out = score(quote(property_id))
        assert out["safety"]["pricing_method"] == "rule_based", mode
        assert any(FELL_BACK in r and "model store unavailable" in r for r in out["reasons"]), (mode, out["reasons"])
        assert out["price"] >= 0.01


def test_s3_failing_prices_by_rules_from_the_configured_base(proxy, score):
    for mode in ("slow", "error"):
        property_id = f"s3-{mode}"
        seed_live_model(proxy.direct, property_id)
        proxy.set("s3", mode)
        out = score(quote(property_id))
        assert out["safety"]["pricing_method"] == "rule_based", mode
        assert any("model store unavailable" in r for r in out["reasons"]), (mode, out["reasons"])
        assert any("130.00" in r for r in out["reasons"]), out["reasons"]  # the registry still answered


def test_a_failing_store_is_asked_once_per_quote_not_retried(proxy, score):
    # The latency path has a fallback: a retry would only add botocore's back-off (up to 1 s).
    proxy.set("dynamodb", "error")
    score(quote(property_id="once-a"))
    reads = [t for s, t, _ in proxy.log if t == "BatchGetItem"]
    assert reads == ["BatchGetItem"], proxy.log


def test_after_a_store_failure_the_property_is_not_asked_again_at_once(proxy, score):
    proxy.set("dynamodb", "error")
    for _ in range(5):
        score(quote(property_id="backoff-a"))
    assert [t for _, t, _ in proxy.log].count("BatchGetItem") == 1


CORRUPT_ARTIFACTS = {
    "not-json": b"\x00\x01 definitely not json",
    "unknown-format": b'{"format": "conversion-logit/v9", "coefficients": {}}',
    "demand-rises-with-price": json.dumps({**MODEL.to_artifact(), "coefficients": {"intercept": 4.0, "price_ratio": 4.0}}).encode(),
    "nan-coefficient": json.dumps(MODEL.to_artifact()).replace("4.0", "NaN", 1).encode(),
    "unknown-feature": json.dumps({**MODEL.to_artifact(), "coefficients": {"intercept": 1, "moon_phase": -2}}).encode(),
    "truncated": json.dumps(MODEL.to_artifact()).encode()[:60],
}


def test_a_corrupt_or_incompatible_artifact_prices_by_rules(proxy, score):
    for name, artifact in CORRUPT_ARTIFACTS.items():
        seed_live_model(proxy.direct, f"corrupt-{name}", artifact=artifact)
        out = score(quote(f"corrupt-{name}"))
        assert out["safety"]["pricing_method"] == "rule_based", name
        assert any(FELL_BACK in r and "unusable" in r for r in out["reasons"]), (name, out["reasons"])


def test_a_live_pointer_to_a_missing_artifact_prices_by_rules(proxy, score):
    proxy.direct.registry.put_property_config(PROPERTY, 130.0)
    proxy.direct.registry.swap_live_model(PROPERTY, "v-gone", "models/hotel-faults/v-gone.json", None, NOW.isoformat())
    out = score(quote())
    assert out["safety"]["pricing_method"] == "rule_based"
    assert any(FELL_BACK in r for r in out["reasons"]), out["reasons"]


def competitor_fetches(status: str) -> float:
    return METRICS.sample_total("pricing_competitor_fetches_total", status=status)


def test_a_failing_competitor_backend_never_fails_the_quote(proxy, score):
    for mode, status in (("error", "error"), ("hang", "timeout"), ("garbage", "error"), ("huge", "error"), ("not_found", "not_found")):
        with CompetitorBackend(mode) as backend:
            score.install(CompetitorClient(backend.url, "backend-key", timeout=0.3))
            before = competitor_fetches(status)
            out = score(quote(property_id=f"comp-{mode}"))
            assert out["safety"]["competitor_data"] is None, mode
            assert out["price"] >= 0.01
            assert competitor_fetches(status) == before + 1, mode
            assert backend.requests and backend.requests[0].header("X-API-Key") == "backend-key"


def test_everything_down_at_once_still_prices(proxy, score):
    seed_live_model(proxy.direct)
    for service in ("dynamodb", "s3"):
        proxy.set(service, "hang")
    with CompetitorBackend("hang") as backend:
        score.install(CompetitorClient(backend.url, "k", timeout=0.3))
        out = score(quote())
    assert out["safety"]["pricing_method"] == "rule_based" and out["safety"]["competitor_data"] is None


# ---------------------------------------------------------------------------------------------- /learn


def outcomes(n: int, prefix: str = "f") -> list[dict]:
    return [
        {
            "property_id": f"learn-{i % 3}",
            "timestamp": (NOW - timedelta(minutes=i + 1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quoted_price": 100.0 + i % 50,
            "accepted": i % 4 == 0,
            "quote_id": f"{prefix}-{i:05d}",
        }
        for i in range(n)
    ]


def stored(proxy) -> list[str]:
    ddb = proxy.aws.client("dynamodb")
    keys, kwargs = [], {"TableName": proxy.aws.names["OutcomesTable"]}
    while True:
        page = ddb.scan(**kwargs)
        keys += [i["outcome_key"]["S"] for i in page["Items"] if i["outcome_key"]["S"] != OUTCOME_LISTING_KEY]
        if "LastEvaluatedKey" not in page:
            return keys
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def ingested_counted() -> float:
    return METRICS.sample_total("pricing_outcomes_ingested_total")


@pytest.fixture
def learn(proxy, monkeypatch):
    from ingest_handler import handler
    from pricing.api import ingest_app

    monkeypatch.setattr(ingest_app, "service", IngestionService(impatient(Stores.build(proxy.aws.settings())).outcomes))

    def post(batch: list[dict]) -> tuple[int, dict, dict]:
        return invoke(handler, rest_event("POST", "/learn", {"batch": batch}))

    return post


@pytest.mark.parametrize("fault", ["throttle", "reset"])
def test_learn_with_dynamodb_failing_is_a_503_then_the_retry_stores_each_outcome_once(proxy, learn, fault):
    batch = outcomes(120, prefix=fault)
    counted_before = ingested_counted()
    proxy.set("dynamodb", fault)
    status, headers, out = learn(batch)
    assert status == 503, out
    assert headers.get("retry-after") and "nothing from this batch is acknowledged" in out["detail"]
    assert ingested_counted() == counted_before  # nothing claimed

    proxy.set("dynamodb", None)
    status, _, out = learn(batch)
    assert status == 200 and out["processed"] + out["duplicates"] == 120 and out["invalid"] == 0, out
    keys = stored(proxy)
    assert sorted(keys) == sorted(f"q:{o['quote_id']}" for o in batch)  # all there, none twice
    assert ingested_counted() == counted_before + out["processed"]

    status, _, again = learn(batch)  # a third delivery changes nothing
    assert status == 200 and again["processed"] == 0 and again["duplicates"] == 120
    assert len(stored(proxy)) == 120 and ingested_counted() == counted_before + out["processed"]


def test_learn_failing_half_way_through_the_writes_loses_and_doubles_nothing(proxy, learn):
    # The first writes succeed, then the table starts failing: part of the batch is stored when
    # the caller is told 503. Its retry must store the rest and count each outcome once.
    batch = outcomes(200, prefix="half")
    writes = {"n": 0}

    def rule(service, target, n):
        if target == "PutItem":  # one conditional write per outcome
            writes["n"] += 1
            return "error" if writes["n"] > 60 else None
        return None

    proxy.rule = rule
    counted_before = ingested_counted()
    status, _, out = learn(batch)
    assert status == 503, out
    partly = len(stored(proxy))
    assert 0 < partly < 200
    # The 503 claims nothing, but the metric counts what was written (it is stored).
    assert ingested_counted() - counted_before == partly

    proxy.rule = None
    status, _, out = learn(batch)
    assert status == 200, out
    assert (out["processed"], out["duplicates"]) == (200 - partly, partly)
    assert sorted(stored(proxy)) == sorted(f"q:{o['quote_id']}" for o in batch)
    # Counted once each: what the failed attempt wrote, and what the retry stored.
    assert ingested_counted() - counted_before == 200


# -------------------------------------------------------------------------------------------- retrain


def live_pointer(proxy, property_id: str) -> dict | None:
    item = (
        proxy.aws.client("dynamodb")
        .get_item(TableName=proxy.aws.names["ModelRegistryTable"], Key={"property_id": {"S": property_id}, "record": {"S": LIVE_RECORD}})
        .get("Item")
    )
    return None if item is None else from_wire(item)


def assert_registry_valid(proxy, property_id: str) -> ConversionModel | None:
    pointer = live_pointer(proxy, property_id)
    if pointer is None:
        return None
    model = ConversionModel.from_artifact(proxy.direct.artifacts.load_artifact(pointer["artifact_key"]))
    assert model.version == pointer["version"]
    return model


@pytest.mark.parametrize(
    "service,target,mode",
    [
        ("s3", "PUT", "error"),  # the candidate's artifact cannot be written
        ("dynamodb", "PutItem", "throttle"),  # neither its record nor the LIVE swap
        ("dynamodb", "UpdateItem", "error"),  # the swap happened, the status update did not
        ("dynamodb", "Query", "reset"),  # outcomes cannot be read
    ],
)
def test_a_retrain_failing_at_any_step_leaves_the_registry_valid_and_a_rerun_deploys(proxy, service, target, mode):
    curve = CURVES[0]
    IngestionService(proxy.direct.outcomes).ingest(simulate_outcomes(curve, 300, seed=3, now=NOW, property_id=PROPERTY))
    # A poor incumbent (demand barely reacting to price): any fitted candidate beats it.
    poor = ConversionModel(PROPERTY, "v-poor", {"intercept": 0.0, "price_ratio": -0.05}, 100.0, (50.0, 250.0))
    seed_live_model(proxy.direct, artifact=poor.to_artifact(), version="v-poor")
    stores = impatient(Stores.build(proxy.aws.settings()))
    retrain = RetrainingService(proxy.aws.settings(), stores.registry, stores.artifacts, stores.outcomes, stores.queue)

    proxy.rule = lambda s, t, n: mode if s == service and t.startswith(target) else None
    (failed,), _ = retrain.run([PROPERTY], force=True)
    assert failed.status == "failed" and failed.transient, failed.as_dict()
    model = assert_registry_valid(proxy, PROPERTY)
    assert model is not None  # the incumbent (or, if the swap landed, the new model) still serves

    proxy.rule = None
    (again,), _ = retrain.run([PROPERTY], force=True)
    model = assert_registry_valid(proxy, PROPERTY)
    assert again.status in ("deployed", "rejected"), again.as_dict()
    if again.status == "deployed":
        assert model.version == again.version


def test_extreme_but_valid_prices_in_the_outcomes_never_deploy_an_unusable_model(proxy):
    curve = CURVES[0]
    batch = simulate_outcomes(curve, 600, seed=5, now=NOW, property_id=PROPERTY)
    for i, price in enumerate((1e9, 1e-2, 5e8, 0.02)):
        batch.append({**batch[i], "quote_id": f"extreme-{i}", "quoted_price": price})
    result = IngestionService(proxy.direct.outcomes).ingest(batch)
    assert result.invalid == 0
    direct = proxy.direct
    retrain = RetrainingService(proxy.aws.settings(), direct.registry, direct.artifacts, direct.outcomes, direct.queue)
    retrain.retrain_property(PROPERTY, force=True)
    model = assert_registry_valid(proxy, PROPERTY)
    if model is not None:
        assert all(abs(c) < 1e6 for c in model.coefficients.values())
