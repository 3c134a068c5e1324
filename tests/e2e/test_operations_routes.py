"""The replaced service's other routes over HTTP, through ``make run``'s code and the built artifacts.

One local stack (moto, ScoreFunction and IngestFunction in local Lambda containers) with API keys
on, as in AWS: the pricing callers' key on every route of the pricing API, the operator key alone
on the operator API's POST /ab/... routes. A live model is deployed straight into moto's registry
(as a retrain would leave it), so the model routes have something to show.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from pricing.domain.simulator import CURVES
from pricing.services.retraining import artifact_key
from pricing.storage.stores import Stores
from support.local_stack import built_artifacts, local_api, moto_resources, require_function_build

pytestmark = pytest.mark.e2e

PRICING_KEY, OPERATOR_KEY = "pricing-caller-key", "operator-key"
MODELLED, PLAIN = "ops-hotel-1", "ops-hotel-2"
VERSION = "20261101T000000Z-0ps0ps01"
CACHE_TTL = 0.5  # EXPERIMENTS_CACHE_TTL_SECONDS of the scorer under test


class Api:
    def __init__(self, url: str):
        self.url = url
        self.pricing = requests.Session()
        self.pricing.headers["x-api-key"] = PRICING_KEY
        self.operator = requests.Session()
        self.operator.headers["x-api-key"] = OPERATOR_KEY

    def get(self, path: str, **params) -> requests.Response:
        return self.pricing.get(self.url + path, params=params, timeout=60)

    def ok(self, path: str, **params) -> dict:
        response = self.get(path, **params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        assert response.headers.get("X-Request-ID")
        return response.json()

    def score(self, user: str, property_id: str = MODELLED) -> dict:
        body = {
            "entity": {"userId": user, "propertyId": property_id},
            "stay_date": (datetime.now(UTC).date() + timedelta(days=20)).isoformat(),
            "quote_time": datetime.now(UTC).isoformat(),
            "inventory": {"capacity": 40, "remaining": 20},
            "market": {"comp_price_p10": 90.0, "comp_price_p50": 120.0, "comp_price_p90": 150.0},
        }
        response = self.pricing.post(self.url + "/score", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    def learn(self, batch: list[dict]) -> dict:
        response = self.pricing.post(self.url + "/learn", json={"batch": batch}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    build_dir = built_artifacts()
    for function in ("ScoreFunction", "IngestFunction"):
        require_function_build(build_dir, function)
    run_dir = tmp_path_factory.mktemp("operations")
    env_vars = run_dir / "env.json"
    env_vars.write_text(json.dumps({"ScoreFunction": {"EXPERIMENTS_CACHE_TTL_SECONDS": str(CACHE_TTL), "EXPLORATION_RATE": "0"}}))
    with contextlib.ExitStack() as stack:
        aws = stack.enter_context(moto_resources())
        stores = Stores.build(aws.settings())
        stack.enter_context(pytest.MonkeyPatch.context()).setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
        model = CURVES[0].true_model(MODELLED, VERSION)
        key = artifact_key(MODELLED, VERSION)
        stores.artifacts.put_artifact(key, model.to_artifact())
        stores.registry.put_model_record(
            MODELLED,
            VERSION,
            {
                "artifact_key": key,
                "status": "deployed",
                "outcomes": 1234,
                "created_at": "2026-11-01T00:00:00+00:00",
                "evaluation": {"holdout_log_loss": 0.61},
            },
        )
        stores.registry.swap_live_model(MODELLED, VERSION, key, expected_version=None, deployed_at="2026-11-01T00:00:00+00:00")
        running = stack.enter_context(
            local_api(
                build_dir=build_dir,
                env={"AWS_ENDPOINT_URL": aws.endpoint_url},
                env_vars_file=env_vars,
                max_containers=2,
                run_dir=run_dir,
                require_api_key=PRICING_KEY,
                operator_api_key=OPERATOR_KEY,
            )
        )
        yield Api(running.url)


def test_root_and_health_answer_the_replaced_services_fields(api):
    root = api.ok("/")
    assert set(root) >= {"service", "status", "version", "timestamp"} and root["status"] == "operational"
    health = api.ok("/health")
    assert health["status"] == "healthy" and health["uptime_seconds"] >= 0


def test_model_routes(api):
    info = api.ok("/model/info")
    assert set(info) >= {"model_type", "is_trained", "base_price", "price_range", "historical_data_points", "features"}
    assert info["is_trained"] is True and info["properties_with_model"] == 1
    assert info["historical_data_points"] == 1234 and "price_ratio" in info["features"]
    assert info["price_range"]["min"] < info["price_range"]["max"]

    versions = api.ok("/model/list", property_id=MODELLED)
    assert versions["success"] and versions["count"] == 1 and versions["next_token"] is None
    assert versions["models"][0]["version"] == VERSION and versions["models"][0]["is_live"] is True
    assert {"property_id", "model_type", "version", "timestamp", "metrics"} <= set(versions["models"][0])
    every = api.ok("/model/list")
    assert [m["property_id"] for m in every["models"]] == [MODELLED]

    api.score("warm-the-cache")  # this container now holds the model
    registry = api.ok("/model/registry")["registry"]
    assert registry["total_models"] == 1 and registry["models_by_type"] == {"conversion": 1}
    assert set(registry) >= {"cached_models", "loaded_models"}

    metrics = api.ok(f"/model/metrics/{MODELLED}", model_type="conversion")
    assert metrics["version"] == VERSION and metrics["property_id"] == MODELLED
    assert metrics["num_features"] == len(metrics["feature_importance"]) > 0
    assert metrics["metrics"] == {"holdout_log_loss": 0.61} and metrics["checksum"].startswith("sha256:")
    assert "loaded_at" in metrics

    for path, params in ((f"/model/metrics/{PLAIN}", {}), ("/model/list", {"property_id": PLAIN})):
        missing = api.get(path, **params)
        assert missing.status_code == 404 and PLAIN in missing.json()["detail"]
    for path, params in (
        (f"/model/metrics/{MODELLED}", {"model_type": "revenue"}),
        ("/model/list", {"limit": 0}),
        ("/model/list", {"property_id": MODELLED, "next_token": "!!not-a-token"}),
        ("/model/metrics/bad!id", {}),
    ):
        bad = api.get(path, **params)
        assert bad.status_code == 422, (path, params, bad.status_code, bad.text)
        assert isinstance(bad.json()["detail"], list)


def test_outcome_routes(api):
    now = datetime.now(UTC)
    batch = [
        {
            "property_id": PLAIN,
            "timestamp": (now - timedelta(hours=i)).isoformat(),
            "quoted_price": 100.0 + i,
            "accepted": i % 2 == 0,
            **({"final_price": 95.0} if i % 2 == 0 else {}),
            **({"context": {"occupancy": 0.5}} if i < 3 else {}),
        }
        for i in range(6)
    ]
    assert api.learn(batch)["processed"] == 6
    listed = api.ok("/learn/outcomes/properties")
    assert listed["success"] and PLAIN in listed["properties"] and listed["count"] == len(listed["properties"])
    first = api.ok("/learn/outcomes/properties", limit=1)
    assert first["count"] == 1 and (first["next_token"] is not None or listed["count"] == 1)

    stats = api.ok(f"/learn/outcomes/{PLAIN}/stats")["stats"]
    assert stats["exists"] and stats["total_records"] == 6
    assert stats["acceptance_rate"] == 0.5 and stats["avg_quoted_price"] == 102.5 and stats["avg_final_price"] == 95.0
    assert stats["data_quality"] == {"missing_final_price": 3, "missing_comp_bands": 6, "missing_context": 3}
    assert stats["date_range"]["min"] < stats["date_range"]["max"]
    assert api.get("/learn/outcomes/never-sent/stats").status_code == 404
    assert api.get("/learn/outcomes/properties", limit=501).status_code == 422


def test_operator_routes_refuse_the_pricing_callers_key(api):
    refused = api.pricing.post(f"{api.url}/ab/experiments", params={"name": "x"}, timeout=60)
    assert refused.status_code == 403
    assert api.pricing.post(f"{api.url}/ab/experiments/any/stop", timeout=60).status_code == 403
    assert requests.get(f"{api.url}/model/info", headers={"x-api-key": OPERATOR_KEY}, timeout=60).status_code == 403
    bad = api.operator.post(f"{api.url}/ab/experiments", params={"name": "x", "ml_traffic_percentage": "150"}, timeout=60)
    assert bad.status_code == 422 and any("ml_traffic_percentage" in e["loc"] for e in bad.json()["detail"])
    assert api.operator.post(f"{api.url}/ab/experiments/no-such-experiment/stop", timeout=60).status_code == 404
    assert api.get("/ab/experiments/no-such-experiment/results").status_code == 404


def test_an_experiment_from_creation_to_stop(api):
    created = api.operator.post(
        f"{api.url}/ab/experiments",
        timeout=60,
        params={
            "name": "ml-vs-rules",
            "description": "e2e",
            "ml_traffic_percentage": "50",
            "property_ids": MODELLED,
            "start_date": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        },
    )
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    # The same fields as a JSON body; this one starts tomorrow, so it assigns no one yet.
    later = api.operator.post(
        f"{api.url}/ab/experiments",
        timeout=60,
        json={"name": "later", "start_date": (datetime.now(UTC) + timedelta(days=1)).date().isoformat(), "property_ids": [MODELLED]},
    )
    assert later.status_code == 200, later.text
    listed = api.ok("/ab/experiments", active_only="true")
    assert experiment_id in [e["experiment_id"] for e in listed["experiments"]]
    assert later.json()["experiment_id"] not in [e["experiment_id"] for e in listed["experiments"]]
    view = next(e for e in listed["experiments"] if e["experiment_id"] == experiment_id)
    assert view["ml_traffic_percentage"] == 50 and view["is_active"] and view["randomization_unit"] == "user"
    assert {"name", "description", "start_date", "end_date", "metrics"} <= set(view)

    time.sleep(CACHE_TTL * 2)
    quotes = [api.score(f"guest-{i}") for i in range(40)]
    arms = {q["safety"]["ab_variant"] for q in quotes}
    assert {q["safety"]["experiment_id"] for q in quotes} == {experiment_id} and arms == {"control", "treatment"}
    now = datetime.now(UTC).isoformat()
    expected = {"control": [0, 0], "treatment": [0, 0]}
    batch = []
    for i, quote in enumerate(quotes[:30]):  # outcomes for 30 of the 40 quotes
        booked = i % 3 == 0
        expected[quote["safety"]["ab_variant"]][0] += 1
        expected[quote["safety"]["ab_variant"]][1] += booked
        batch.append(
            {
                "property_id": MODELLED,
                "timestamp": now,
                "quoted_price": quote["price"],
                "accepted": booked,
                "quote_id": quote["safety"]["quote_id"],
            }
        )
    batch.append({"property_id": MODELLED, "timestamp": now, "quoted_price": 99.0, "accepted": True})  # unattributed
    assert api.learn(batch)["processed"] == 31
    assert api.learn(batch)["duplicates"] == 31  # a re-sent batch adds nothing to the readout

    results = api.ok(f"/ab/experiments/{experiment_id}/results")["results"]
    assert results["experiment_id"] == experiment_id
    for arm, variant in (("ml", "treatment"), ("rule_based", "control")):
        assert results[arm]["count"] == expected[variant][0], (arm, results, expected)
        assert results[arm]["bookings"] == expected[variant][1]
        assert set(results[arm]) >= {"count", "conversion_rate", "adr", "revpar"}
    assert set(results["lift"]) == {"conversion_rate", "adr", "revpar"}
    assert results["status"].startswith("not enough data")
    assert results["significance"]["conversion_pvalue"] is None and results["significance"]["is_significant"] is False

    stopped = api.operator.post(f"{api.url}/ab/experiments/{experiment_id}/stop", timeout=60)
    assert stopped.status_code == 200 and stopped.json()["success"] is True
    time.sleep(CACHE_TTL * 2)
    after = [api.score(f"guest-{i}") for i in range(10)]
    assert {q["safety"]["experiment_id"] for q in after} == {None}
    assert {q["safety"]["ab_variant"] for q in after} == {"none"}
    listed = api.ok("/ab/experiments")
    assert next(e for e in listed["experiments"] if e["experiment_id"] == experiment_id)["is_active"] is False
