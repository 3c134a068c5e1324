"""The read and experiment routes' services against moto's copy of the template's tables: pages
that add up to the whole list, the readout counting exactly the attributed outcomes; and, through
ScoreFunction's handler with no store reachable, a 503 (never a 500) with the request's metrics
under the route template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pricing.domain.experiments import CONTROL, TREATMENT, Assignment, quote_id_for
from pricing.services.catalog import BadParameter, ModelCatalog, NotFound, OutcomeCatalog, encode_token
from pricing.services.experiment_admin import ExperimentAdmin, ExperimentRequest
from pricing.services.ingestion import IngestionService
from pricing.storage.stores import Stores
from support.apigw_events import invoke, rest_event
from support.moto_stack import aws, moto_server  # noqa: F401 - fixtures; puts local/ on the path

NOW = datetime.now(UTC).replace(microsecond=0)


def catalog(stores: Stores) -> ModelCatalog:
    return ModelCatalog(stores.registry, stores.artifacts, service="pricing-service", version="test", loaded=dict)


def test_model_versions_page_newest_first_and_the_pages_add_up(aws):  # noqa: F811 - the aws fixture
    stores = Stores.build(aws.settings())
    versions = [f"2026110{i}T000000Z-abcdef0{i}" for i in range(1, 6)]
    for v in versions:
        stores.registry.put_model_record(
            "p1", v, {"artifact_key": f"models/p1/{v}.json", "status": "rejected", "created_at": v, "outcomes": 10}
        )
    stores.registry.swap_live_model("p1", versions[2], f"models/p1/{versions[2]}.json", None, NOW.isoformat())
    seen, token = [], None
    for _ in range(10):
        page = catalog(stores).model_list("p1", 2, token)
        assert page["count"] <= 2
        seen += page["models"]
        token = page["next_token"]
        if token is None:
            break
    assert [m["version"] for m in seen] == versions[::-1]
    assert [m["is_live"] for m in seen] == [v == versions[2] for v in versions[::-1]]
    with pytest.raises(NotFound):
        catalog(stores).model_list("no-such-property", 2, None)
    # A token of another list is refused by the store: a bad parameter, not a 500.
    other = catalog(stores).model_list("p1", 1, None)["next_token"]
    with pytest.raises(BadParameter):
        catalog(stores).model_list(None, 5, other)
    # ... and so is a token of another property's list, which DynamoDB itself would accept.
    stores.registry.put_model_record("p2", versions[0], {"status": "rejected", "created_at": versions[0]})
    with pytest.raises(BadParameter):
        catalog(stores).model_list("p2", 5, other)


def test_forged_page_tokens_are_bad_parameters_not_errors(aws):  # noqa: F811 - the aws fixture
    stores = Stores.build(aws.settings())
    admin = ExperimentAdmin(stores.experiments, stores.outcomes)
    for forged in ({"experiment_id": "x"}, {"property_id": {"S": "p"}}, {"experiment_id": {"S": "e"}, "extra": {"S": "x"}}):
        with pytest.raises(BadParameter):
            admin.list(False, 5, encode_token(forged))
    for forged in ({"s": "03"}, {"s": 99}, {"s": 1, "k": "not-a-key"}, {"s": 1, "k": {"property_id": 7}}):
        with pytest.raises(BadParameter):
            OutcomeCatalog(stores.outcomes).properties(5, encode_token(forged))
    with pytest.raises(BadParameter):
        catalog(stores).model_list(None, 5, encode_token({"property_id": {"S": "p"}, "record": {"N": "1"}}))


def test_outcome_properties_page_across_the_listing_shards(aws):  # noqa: F811 - the aws fixture
    stores = Stores.build(aws.settings())
    ingestion = IngestionService(stores.outcomes)
    ids = [f"prop-{i:02d}" for i in range(37)]
    ingestion.ingest([{"property_id": p, "timestamp": NOW.isoformat(), "quoted_price": 100.0, "accepted": True} for p in ids])
    seen, token, pages = [], None, 0
    while True:
        page = OutcomeCatalog(stores.outcomes).properties(5, token)
        pages += 1
        assert page["count"] <= 5
        seen += page["properties"]
        token = page["next_token"]
        if token is None:
            break
    assert sorted(seen) == ids and len(seen) == len(set(seen)) and pages >= 8


def test_the_readout_counts_exactly_the_attributed_outcomes(aws):  # noqa: F811 - the aws fixture
    stores = Stores.build(aws.settings())
    admin = ExperimentAdmin(stores.experiments, stores.outcomes)
    eid = admin.create(ExperimentRequest(name="ml-vs-rules", ml_traffic_percentage=50))["experiment_id"]
    other = admin.create(ExperimentRequest(name="other"))["experiment_id"]
    batch, expected = [], {CONTROL: [0, 0, 0.0], TREATMENT: [0, 0, 0.0]}
    for i in range(480):
        variant = TREATMENT if i % 2 else CONTROL
        booked = (i % 5 == 0) if variant == CONTROL else (i % 3 == 0)
        price = 100.0 if variant == CONTROL else 110.0
        expected[variant][0] += 1
        expected[variant][1] += booked
        expected[variant][2] += price if booked else 0.0
        batch.append(
            {
                "property_id": f"p{i % 4}",
                "timestamp": (NOW - timedelta(minutes=i)).isoformat(),
                "quoted_price": price,
                "accepted": booked,
                "quote_id": quote_id_for(f"t{i:04d}", Assignment(eid, variant)),
            }
        )
    # Noise the readout must not count: another experiment's, and unattributed outcomes.
    batch += [
        {
            "property_id": "p0",
            "timestamp": NOW.isoformat(),
            "quoted_price": 50.0,
            "accepted": True,
            "quote_id": quote_id_for(f"o{i}", Assignment(other, TREATMENT)),
        }
        for i in range(7)
    ]
    batch += [{"property_id": "p0", "timestamp": NOW.isoformat(), "quoted_price": 60.0 + i, "accepted": True} for i in range(5)]
    assert IngestionService(stores.outcomes).ingest(batch).processed == len(batch)

    results = admin.results(eid)["results"]
    for arm, variant in (("ml", TREATMENT), ("rule_based", CONTROL)):
        count, bookings, revenue = expected[variant]
        assert results[arm]["count"] == count and results[arm]["bookings"] == bookings
        assert results[arm]["revpar"] == pytest.approx(revenue / count, abs=1e-4)
    assert results["status"] == "ok" and results["sample_ratio"]["mismatch"] is False
    assert 0 <= results["significance"]["conversion_pvalue"] <= 1 and results["significance"]["revpar_pvalue"] is not None
    assert admin.results(other)["results"]["ml"]["count"] == 7

    assert admin.stop(eid)["success"] and admin.list(True, None, None)["count"] == 1
    with pytest.raises(NotFound):
        admin.stop("exp-nothing")


def test_stats_of_a_property(aws):  # noqa: F811 - the aws fixture
    stores = Stores.build(aws.settings())
    IngestionService(stores.outcomes).ingest(
        [
            {
                "property_id": "s1",
                "timestamp": (NOW - timedelta(days=d)).isoformat(),
                "quoted_price": 100.0 + d,
                "accepted": d == 0,
                "final_price": 90.0 if d == 0 else None,
                "comp_p50": 120.0 if d < 2 else None,
                "quote_id": f"s1-{d}" if d % 2 else None,
            }
            for d in range(4)
        ]
    )
    stats = OutcomeCatalog(stores.outcomes).stats("s1")["stats"]
    assert stats["total_records"] == 4 and stats["complete"] and stats["acceptance_rate"] == 0.25
    assert stats["avg_quoted_price"] == 101.5 and stats["avg_final_price"] == 90.0
    assert stats["data_quality"] == {"missing_final_price": 3, "missing_comp_bands": 2, "missing_context": 4}
    with pytest.raises(NotFound):
        OutcomeCatalog(stores.outcomes).stats("s2")


# -- through the handler, with no store reachable (the suite's refusing AWS endpoint) --------------


@pytest.fixture(scope="module")
def handler():
    from score_handler import handler

    return handler


@pytest.mark.parametrize(
    "method, path", [("GET", "/model/metrics/p1"), ("POST", "/ab/experiments?name=x"), ("GET", "/ab/experiments/e1/results")]
)
def test_a_store_that_cannot_be_reached_is_a_503_with_metrics_under_the_route(handler, method, path):
    from pricing.observability.metrics import REGISTRY

    route, _, query = path.partition("?")
    event = rest_event(method, route, None, {"X-Request-ID": "ops-503"})
    if query:
        event["queryStringParameters"] = dict(p.split("=") for p in query.split("&"))
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in event["queryStringParameters"].items()}
    template = {
        "/model/metrics/p1": "/model/metrics/{property_id}",
        "/ab/experiments/e1/results": "/ab/experiments/{experiment_id}/results",
    }.get(route, route)
    labels = {"method": method, "endpoint": template, "status_code": "503"}
    before = REGISTRY.get_sample_value("pricing_requests_total", labels) or 0.0
    status, headers, body = invoke(handler, event)
    assert status == 503, body
    assert headers["retry-after"] == "5" and headers["x-request-id"] == "ops-503"
    assert REGISTRY.get_sample_value("pricing_requests_total", labels) == before + 1
