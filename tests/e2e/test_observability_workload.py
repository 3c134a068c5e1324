"""The observability stack under real traffic: the sam-built functions in local Lambda push to it.

Nothing here is pushed by hand. The ScoreFunction, IngestFunction and RetrainFunction build
outputs run in local Lambda containers behind the local API Gateway, with ``PUSHGATEWAY_URL``
pointing at a real Pushgateway scraped by a real Prometheus (the project's configuration and
rules), which alerts a real Alertmanager (the project's routing), which delivers to a webhook
receiver (``support.obs_stack``). A stand-in competitor-data backend (spec/API.md's contract)
answers some properties, fails others with 500 and knows nothing of the rest.

The workload, in order:

1. the A/B experiment ``exp-ml-vs-rules`` (half the users priced by the model) and the demo
   properties' base prices go into the stores; the scheduled synthetic health check runs on a
   ScoreFunction container (ServiceDown's signal);
2. two demo properties get simulated booking history through ``POST /learn`` (``local.seed``)
   and RetrainFunction deploys a model for each;
3. ``POST /score`` for four properties and many users: with and without market prices (so the
   backend is called, and sometimes fails), two invalid requests (422);
4. ``POST /learn`` with outcomes of those quotes (their quote ids carry the A/B attribution),
   invalid outcomes, and the same outcomes again (duplicates);
5. a shifted market for one property through /learn, and RetrainFunction again: drift detected;
   then silence: no function is invoked again to get its counts out.

Then every dashboard panel's query must return data, Prometheus' sums must equal the traffic
sent, and an invalid-outcome flood through /learn must fire HighInvalidOutcomesRate in
Prometheus and reach the Slack receiver through Alertmanager. The dashboard snapshot
(``observability/render_dashboard.py``) is rendered from that Prometheus at the end; with
``DASHBOARD_EXAMPLE_OUTPUT=<path>`` it is also copied there (observability/dashboard-example.png
comes from ``make demo-traffic``'s longer run instead).

Needs the sam build, moto and the pinned Prometheus stack (``make setup``): skips without them,
fails when CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests

from local.seed import DEMO_PROPERTIES, learn
from pricing.domain.simulator import CURVES, simulate_outcomes
from pricing.settings import Settings
from pricing.storage.stores import Stores
from support.local_stack import PROJECT_ROOT, built_artifacts, local_api, require_function_build
from support.obs_stack import ENVIRONMENT, observability_stack, panels_without_data, render_dashboard
from support.stub_http import Reply, Request, StubServer

pytestmark = pytest.mark.e2e

EVENTS = PROJECT_ROOT / "events"
HTTP_TIMEOUT = 60

EXPERIMENT = {"experiment_id": "exp-ml-vs-rules", "treatment_share": 0.5, "active": True}
BACKEND_API_KEY = "e2e-backend-key-5b1d"
CURVES_BY_NAME = {c.name: c for c in CURVES}
# Properties with a model (seeded history + retrain), and how the backend treats each property.
MODELLED = ("demo-hotel-1", "demo-hotel-2")
SEED_OUTCOMES = 1500  # enough for the retrain to deploy a first model: it must beat rules in revenue
BACKEND_ANSWERS = {"demo-hotel-1": "ok", "demo-hotel-2": "flaky", "demo-loft-1": "down"}  # others: 404
SCORED = ("demo-hotel-1", "demo-hotel-2", "demo-loft-1", "walk-in-7")
SCORES = 24
DRIFTED = "demo-hotel-1"
FLOOD = 600  # invalid outcomes: over a tenth of everything /learn will have received


# --- the competitor-data backend ---------------------------------------------------------------


class CompetitorBackend(StubServer):
    """spec/API.md's competitor-data backend: ``ok`` properties answer, ``flaky`` ones fail every
    other request with a 500, ``down`` ones always fail, unknown ones are a 404."""

    def __init__(self, api_key: str) -> None:
        super().__init__(self._answer_request)
        self.api_key = api_key
        self.answered: list[tuple[str, int]] = []  # (property, HTTP status), in order
        self.lock = threading.Lock()
        self.start()

    def _answer_request(self, request: Request) -> Reply:
        parts = request.path.strip("/").split("/")
        if request.header("X-API-Key") != self.api_key:
            return Reply(401, {"success": False})
        if len(parts) != 4 or parts[:2] != ["api", "competitor-data"]:
            return Reply(404, {"success": False})
        property_id = parts[2]
        mode = BACKEND_ANSWERS.get(property_id)
        with self.lock:
            seen = sum(1 for p, _ in self.answered if p == property_id)
        if mode == "down" or (mode == "flaky" and seen % 2 == 1):
            reply = Reply(500, {"success": False, "error": "upstream unavailable"})
        elif mode is None:
            reply = Reply(404, {"success": False})
        else:
            updated = datetime.now(UTC) - timedelta(hours=2)
            reply = Reply(
                200,
                {
                    "success": True,
                    "data": {
                        "priceP10": 95.0,
                        "priceP50": 125.0,
                        "priceP90": 160.0,
                        "competitorCount": 7,
                        "source": "e2e-backend",
                        "updatedAt": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                },
            )
        with self.lock:
            self.answered.append((property_id, reply.status))
        return reply

    def statuses(self) -> Counter:
        """What the service must have counted: pricing_competitor_fetches_total's status label."""
        names = {200: "success", 404: "not_found"}
        with self.lock:
            return Counter(names.get(status, "error") for _, status in self.answered)

    def close(self) -> None:
        self.stop()


# --- the workload ------------------------------------------------------------------------------


@dataclass
class Traffic:
    """What was sent and answered, to compare with what Prometheus counted."""

    scores: list[requests.Response] = field(default_factory=list)
    learns: list[dict] = field(default_factory=list)
    retrains: list[dict] = field(default_factory=list)
    synthetic: dict | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def learned(self, key: str) -> int:
        return sum(answer[key] for answer in self.learns)


def utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def post(api, path: str, body: Any) -> requests.Response:
    return requests.post(f"{api.url}{path}", json=body, timeout=HTTP_TIMEOUT)


def post_learn(api, batch: list) -> dict:
    response = post(api, "/learn", {"batch": batch})
    assert response.status_code == 200, response.text[:500]
    return response.json()


def invoke(api, function: str, event: Any) -> Any:
    """One event straight into a function's warm pool (as EventBridge would invoke it)."""
    result = api.pools[function].invoke(event)
    assert result.ok, result.payload[:1000]
    return result.json()


def retrain_event(property_ids: list[str]) -> dict:
    """events/retrain.json (the daily schedule's shape) narrowed to ``property_ids``."""
    event = json.loads((EVENTS / "retrain.json").read_text())
    event["detail"] = {"property_ids": property_ids, "force": False}
    return event


def score_body(property_id: str, user_id: str, stay_date: date, with_market: bool) -> dict:
    body = json.loads(json.loads((EVENTS / "score.json").read_text())["body"])
    body["entity"] = {"userId": user_id, "propertyId": property_id}
    # A night of its own per request: the client caches backend answers per property and night.
    body["stay_date"] = stay_date.isoformat()
    body["quote_time"] = utc(datetime.now(UTC))
    if not with_market:
        body.pop("market")
    return body


def seed_stores(api) -> None:
    """Experiment and base prices, written as an operator would (the functions only read them)."""
    env = {**api.template.globals_environment(), "AWS_ENDPOINT_URL": api.aws_endpoint_url}
    stores = Stores.build(Settings.from_env(env))
    # boto3 reads the endpoint from the environment, which the suite points at a refusing port.
    with mock.patch.dict(os.environ, {"AWS_ENDPOINT_URL": api.aws_endpoint_url}):
        stores.experiments.put_experiment(EXPERIMENT)
        for property_id, curve in DEMO_PROPERTIES.items():
            stores.registry.put_property_config(property_id, CURVES_BY_NAME[curve].base_price)


def run_workload(api, backend: CompetitorBackend) -> Traffic:
    traffic = Traffic()
    now = datetime.now(UTC)
    started = time.perf_counter()

    seed_stores(api)
    traffic.synthetic = invoke(api, "ScoreFunction", json.loads((EVENTS / "synthetic_health.json").read_text()))

    # History ending a day ago, so what /learn gets later is "recent" to the deployed models.
    for property_id in MODELLED:
        history = simulate_outcomes(
            CURVES_BY_NAME[DEMO_PROPERTIES[property_id]], SEED_OUTCOMES, seed=2026, now=now - timedelta(days=1), property_id=property_id
        )
        stored, duplicates, how = learn(history, api.url)
        assert (stored, how) == (SEED_OUTCOMES, "POST /learn"), (stored, duplicates, how)
        traffic.learns.append({"processed": stored, "duplicates": duplicates, "invalid": 0})
    traffic.retrains.append(invoke(api, "RetrainFunction", retrain_event(list(MODELLED))))
    traffic.seconds["seed"] = time.perf_counter() - started

    mark = time.perf_counter()
    today = now.date()
    for i in range(SCORES):
        property_id = SCORED[i % len(SCORED)]
        body = score_body(property_id, f"guest-{i}", today + timedelta(days=10 + i), with_market=i % 6 == 5)
        traffic.scores.append(post(api, "/score", body))
    bad = score_body("demo-hotel-1", "guest-bad", today + timedelta(days=3), with_market=True)
    bad["inventory"] = {"capacity": 5, "remaining": 9}
    traffic.scores.append(post(api, "/score", bad))
    traffic.scores.append(post(api, "/score", {"entity": {"userId": "guest-bad"}}))
    traffic.seconds["scores"] = time.perf_counter() - mark

    mark = time.perf_counter()
    quoted = []
    for i, response in enumerate(r for r in traffic.scores if r.status_code == 200):
        answer = response.json()
        quoted.append(
            {
                "property_id": answer_property(response),
                "timestamp": utc(datetime.now(UTC)),
                "quoted_price": answer["price"],
                "accepted": i % 3 == 0,
                "quote_id": answer["safety"]["quote_id"],
            }
        )
    invalid = [
        {**quoted[0], "quote_id": "bad-price-1", "quoted_price": 0},
        {**quoted[1], "quote_id": "bad-time-1", "timestamp": utc(now + timedelta(days=2))},
        {"property_id": "demo-hotel-2", "timestamp": utc(now), "quoted_price": 120.0},
    ]
    traffic.learns.append(post_learn(api, quoted + invalid))
    traffic.learns.append(post_learn(api, quoted[:6]))  # a caller's retry: duplicates only

    # The drifted property's market moved: beach-resort prices for a city hotel, over the last hours.
    moved = simulate_outcomes(CURVES_BY_NAME["beach-resort"], 150, seed=7, now=now, property_id=DRIFTED, history_days=0.25)
    traffic.learns.append(post_learn(api, moved))
    traffic.retrains.append(invoke(api, "RetrainFunction", retrain_event([DRIFTED])))
    traffic.seconds["learn_and_retrain"] = time.perf_counter() - mark

    traffic.seconds["workload"] = time.perf_counter() - started
    return traffic


def answer_property(response: requests.Response) -> str:
    return json.loads(response.request.body)["entity"]["propertyId"]


def wait_for_value(stack, expr: str, expected: float, timeout: float = 20.0) -> float | None:
    """The single value of ``expr`` once it equals ``expected`` (or the last one seen)."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        result = stack.query(expr)
        value = float(result[0]["value"][1]) if len(result) == 1 else None
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def wait_for_panels(stack, timeout: float = 30.0) -> dict[str, str]:
    """Panels still without data once every one has some, or when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        missing = panels_without_data(stack.prometheus_url, environment=ENVIRONMENT)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.5)


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    build_dir = built_artifacts()
    for function in ("ScoreFunction", "IngestFunction", "RetrainFunction"):
        require_function_build(build_dir, function)
    tmp = tmp_path_factory.mktemp("observability-workload")
    env_vars = tmp / "env.json"
    env_vars.write_text(
        json.dumps(
            {
                "Parameters": {
                    # A loaded test machine must not turn a slow push into a skipped one (push back-off).
                    "PUSHGATEWAY_TIMEOUT_SECONDS": "2",
                }
            }
        )
    )
    backend = CompetitorBackend(BACKEND_API_KEY)
    started = time.perf_counter()
    try:
        with observability_stack(tmp, synthetic_check=False) as stack:
            env = {"PUSHGATEWAY_URL": stack.pushgateway_url, "BACKEND_API_URL": backend.url, "BACKEND_API_KEY": BACKEND_API_KEY}
            with local_api(build_dir=build_dir, env=env, env_vars_file=env_vars, max_containers=2, run_dir=tmp / "run") as api:
                traffic = run_workload(api, backend)
                missing = wait_for_panels(stack)
                traffic.seconds["until_panels"] = time.perf_counter() - started
                yield {"stack": stack, "api": api, "backend": backend, "traffic": traffic, "panels_missing": missing, "tmp": tmp}
    finally:
        backend.close()


# --- tests ---------------------------------------------------------------------------------------


def test_every_dashboard_panel_returns_data_from_real_traffic(workload):
    assert workload["panels_missing"] == {}
    # Narrowed to the property that drifted (the only one with drift events), every panel still
    # finds data: the property variable selects the per-property series.
    assert panels_without_data(workload["stack"].prometheus_url, ENVIRONMENT, DRIFTED) == {}


def test_the_workload_did_what_the_panels_show(workload):
    traffic = workload["traffic"]
    statuses = Counter(r.status_code for r in traffic.scores)
    assert statuses == {200: SCORES, 422: 2}
    methods = Counter(r.json()["safety"]["pricing_method"] for r in traffic.scores if r.status_code == 200)
    assert methods["ml_elasticity"] > 0 and methods["rule_based"] > 0, methods
    assert workload["backend"].statuses().keys() == {"success", "error", "not_found"}
    assert traffic.synthetic["status"] == "healthy"
    first, drift = traffic.retrains
    assert [r["status"] for r in first["results"]] == ["deployed", "deployed"], first
    (drifted,) = drift["results"]
    assert drifted["drift"]["detected"], drifted
    assert traffic.learned("invalid") == 3 and traffic.learned("duplicates") == 6


def test_prometheus_sums_equal_the_traffic_sent(workload):
    stack, traffic, backend = workload["stack"], workload["traffic"], workload["backend"]
    scored = sum(1 for r in traffic.scores if r.status_code == 200)
    assert wait_for_value(stack, 'sum(pricing_requests_total{endpoint="/score", status_code="200"})', scored) == scored
    assert wait_for_value(stack, 'sum(pricing_requests_total{endpoint="/score", status_code="422"})', 2) == 2
    for status, count in backend.statuses().items():
        expr = f'sum(pricing_competitor_fetches_total{{status="{status}"}})'
        assert wait_for_value(stack, expr, count) == count, status

    # Every customer quote was assigned a variant; the synthetic canary joins no experiment.
    variants = Counter(r.json()["safety"]["ab_variant"] for r in traffic.scores if r.status_code == 200)
    for variant, count in variants.items():
        expr = f'sum(pricing_ab_assignments_total{{experiment_id="exp-ml-vs-rules", variant="{variant}"}})'
        assert wait_for_value(stack, expr, count) == count, variant
    # Outcomes attributed through their quote ids (newly stored ones only, not the duplicates).
    attributed = scored
    assert wait_for_value(stack, "sum(pricing_ab_outcomes_total)", attributed) == attributed

    stored, invalid = traffic.learned("processed"), traffic.learned("invalid")
    assert wait_for_value(stack, "sum(pricing_outcomes_ingested_total)", stored) == stored
    assert wait_for_value(stack, "sum(pricing_outcomes_invalid_total)", invalid) == invalid
    retrained = Counter(r["status"] for answer in traffic.retrains for r in answer["results"])
    for status, count in retrained.items():
        expr = f'sum(pricing_retraining_total{{status="{status}"}})'
        assert wait_for_value(stack, expr, count) == count, status
    expr = f'sum(pricing_drift_detected_total{{property_id="{DRIFTED}", trigger_retrain="true"}})'
    assert wait_for_value(stack, expr, 1) == 1
    # The real synthetic check's timestamp arrived: ServiceDown has its signal.
    assert "ServiceDown" not in stack.firing()


def test_invalid_outcome_flood_through_learn_fires_and_reaches_slack(workload):
    stack, api = workload["stack"], workload["api"]
    ratio = (
        "sum(rate(pricing_outcomes_invalid_total[5m])) / (sum(rate(pricing_outcomes_ingested_total[5m]))"
        " + sum(rate(pricing_outcomes_invalid_total[5m])))"
    )
    [before] = stack.query(ratio)
    assert float(before["value"][1]) < 0.1  # the workload's own few invalid outcomes stay below it
    assert "HighInvalidOutcomesRate" not in stack.firing()

    started = time.perf_counter()
    now = utc(datetime.now(UTC))
    # The same property and reason as the workload's invalid outcome: an already published
    # series, so each batch's count goes out with the push at the end of its own request.
    for batch in range(3):
        answer = post_learn(
            api,
            [
                {"property_id": "demo-hotel-1", "timestamp": now, "quoted_price": 0, "accepted": False, "quote_id": f"flood-{batch}-{i}"}
                for i in range(FLOOD // 3)
            ],
        )
        assert answer["invalid"] == FLOOD // 3

    alert = stack.wait_for_notification("slack-warning", "HighInvalidOutcomesRate")
    workload["traffic"].seconds["flood_to_webhook"] = time.perf_counter() - started
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["environment"] == ENVIRONMENT
    assert alert["annotations"]["runbook_url"].endswith("/observability/runbooks.md#highinvalidoutcomesrate")
    assert alert["annotations"]["runbook_url"].startswith("https://")
    assert "HighInvalidOutcomesRate" in stack.firing()
    [held] = stack.am_alerts("HighInvalidOutcomesRate")
    assert held["status"]["state"] == "active"


def test_dashboard_snapshot_from_that_prometheus(workload, tmp_path, capsys):
    output = tmp_path / "dashboard.png"
    code = render_dashboard.main(
        [workload["stack"].prometheus_url, "--minutes", "3", "--output", str(output), "--environment", ENVIRONMENT, "--require-data"]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "18/18 panels with data" in printed
    example = os.environ.get("DASHBOARD_EXAMPLE_OUTPUT")
    if example:
        shutil.copyfile(output, Path(example))
    print(f"workload timings (s): { {k: round(v, 1) for k, v in workload['traffic'].seconds.items()} }")
