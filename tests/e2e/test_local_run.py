"""End to end through the built artifacts: ``make invoke`` with every event, and ``make run``.

Everything runs the ``sam build`` output in local Lambda containers (awslambdaric against the
Runtime API emulator) with moto for S3, DynamoDB and SQS.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from local.services import free_port
from support.local_stack import PROJECT_ROOT, built_artifacts, local_api, require_function_build, unavailable
from support.stub_http import Reply, StubServer

pytestmark = pytest.mark.e2e

EVENTS = PROJECT_ROOT / "events"
EVENT_FUNCTIONS = {
    "score.json": "ScoreFunction",
    "health.json": "ScoreFunction",
    "synthetic_health.json": "ScoreFunction",
    "learn.json": "IngestFunction",
    "retrain.json": "RetrainFunction",
}
# The replaced service's other routes: run in one warm container per function (below), not one
# `make invoke` each, which would start a stack per event.
ROUTE_EVENT_FUNCTIONS = {
    **{
        name: "ScoreFunction"
        for name in (
            "root.json",
            "model_info.json",
            "model_list.json",
            "model_registry.json",
            "model_metrics.json",
            "experiments_list.json",
            "experiment_create.json",
            "experiment_results.json",
            "experiment_stop.json",
        )
    },
    "outcome_properties.json": "IngestFunction",
    "outcome_stats.json": "IngestFunction",
}
SCORE_EXAMPLE = json.loads(json.loads((EVENTS / "score.json").read_text())["body"])


def test_every_event_file_has_a_function_and_is_in_the_readme():
    events = sorted(p.name for p in EVENTS.glob("*.json") if not p.name.startswith("env."))
    assert events == sorted({**EVENT_FUNCTIONS, **ROUTE_EVENT_FUNCTIONS})
    readme = (PROJECT_ROOT / "README.md").read_text()
    for name, function in {**EVENT_FUNCTIONS, **ROUTE_EVENT_FUNCTIONS}.items():
        assert f"make invoke FN={function} EVENT=events/{name}" in readme, name
    assert "ENV_VARS=events/env.example.json" in readme


def test_the_env_vars_example_is_in_sam_local_invokes_format():
    from local.environment import load_env_vars

    sections = load_env_vars(EVENTS / "env.example.json")
    assert "Parameters" in sections and set(sections) - {"Parameters"} <= set(EVENT_FUNCTIONS.values())


@pytest.mark.parametrize("function", ["ScoreFunction", "IngestFunction"])
def test_every_route_event_is_answered_without_a_server_error(function):
    from support.local_stack import lambda_containers, moto_resources

    names = sorted(n for n, f in ROUTE_EVENT_FUNCTIONS.items() if f == function)
    with moto_resources() as aws, lambda_containers(function, env=aws.env()) as containers:
        for name in names:
            result = containers.invoke(json.loads((EVENTS / name).read_text()))
            assert not result.function_error, (name, result.payload[:500])
            answer = json.loads(result.payload)
            # An empty store: 200 for lists and creation, 404 for the demo property and experiment.
            assert answer["statusCode"] in (200, 404), (name, answer)
            assert answer["statusCode"] == 200 or json.loads(answer["body"])["detail"], (name, answer)


def test_the_built_retrain_function_answers_an_sqs_batch_with_its_failed_messages():
    """Powertools' batch processor inside the sam-built layer, on the Lambda runtime's packages."""
    from support.local_stack import lambda_containers, moto_resources

    def record(message_id: str, body: str) -> dict:
        return {
            "messageId": message_id,
            "receiptHandle": f"rh-{message_id}",
            "body": body,
            "attributes": {},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "awsRegion": "us-east-1",
        }

    batch = {
        "Records": [
            record("m-malformed", "{not json"),
            record("m-ok", json.dumps({"property_ids": ["no-outcomes-yet"], "force": False})),
            record("m-bad-ids", json.dumps({"property_ids": ["not ok!"]})),
        ]
    }
    with moto_resources() as aws, lambda_containers("RetrainFunction", env=aws.env()) as containers:
        result = containers.invoke(batch)
    assert not result.function_error, result.payload[:500]
    assert json.loads(result.payload) == {"batchItemFailures": [{"itemIdentifier": "m-malformed"}, {"itemIdentifier": "m-bad-ids"}]}


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without the suite's refusing AWS endpoint."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "PUSHGATEWAY_URL", "SENTRY_DSN", "BACKEND_API_URL")}
    env.update(extra)
    return env


@pytest.mark.parametrize("event_file", sorted(EVENT_FUNCTIONS))
def test_make_invoke_with_every_event_is_not_a_server_error(event_file, tmp_path):
    build_dir = built_artifacts()
    function = EVENT_FUNCTIONS[event_file]
    require_function_build(build_dir, function)
    # What `make invoke FN=... EVENT=...` runs once the build is up to date.
    done = subprocess.run(
        [sys.executable, "-m", "local.invoke", function, str(EVENTS / event_file)],
        cwd=PROJECT_ROOT,
        env=clean_env(LOCAL_BUILD_DIR=str(build_dir), LOCAL_RUN_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    if "httpMethod" in json.loads((EVENTS / event_file).read_text()):  # an API Gateway proxy event
        assert result["statusCode"] < 500, result
    else:
        assert not (isinstance(result, dict) and "errorType" in result), result


def test_make_invoke_target_prints_only_the_result(tmp_path):
    built_artifacts()
    if os.environ.get("LOCAL_BUILD_DIR"):
        pytest.skip("LOCAL_BUILD_DIR points elsewhere: make's own build is not the one under test")
    if subprocess.run(["make", "-q", "build"], cwd=PROJECT_ROOT, capture_output=True).returncode != 0:
        unavailable("`make build` is not up to date (run `make setup build` first)")
    done = subprocess.run(
        ["make", "-s", "invoke", "FN=ScoreFunction", "EVENT=events/health.json"],
        cwd=PROJECT_ROOT,
        env=clean_env(LOCAL_RUN_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["statusCode"] == 200 and json.loads(result["body"])["status"] == "healthy"


# --- the running API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack():
    build_dir = built_artifacts()
    require_function_build(build_dir, "ScoreFunction")
    require_function_build(build_dir, "IngestFunction")
    with local_api(build_dir=build_dir, max_containers=8) as running:
        yield running


def test_score_example_over_http(stack):
    response = requests.post(f"{stack.url}/score", json=SCORE_EXAMPLE, headers={"X-Request-ID": "e2e-req-1"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == "e2e-req-1"
    quote = response.json()
    for name in ("price", "price_grid", "conf_band", "expected", "reasons", "safety"):
        assert name in quote
    generated = requests.post(f"{stack.url}/score", json=SCORE_EXAMPLE, timeout=60)
    assert generated.status_code == 200 and generated.headers.get("X-Request-ID")


def test_score_guardrails_and_validation_over_http(stack):
    grid = [99.0, 119.0, 139.0, 159.0]
    body = {**SCORE_EXAMPLE, "costs": {"min_price": 100.0, "max_price": 150.0}, "allowed_price_grid": grid}
    quote = requests.post(f"{stack.url}/score", json=body, timeout=60).json()
    assert 100.0 <= quote["price"] <= 150.0 and quote["price"] in grid
    missing = {k: v for k, v in SCORE_EXAMPLE.items() if k != "entity"}
    invalid = requests.post(f"{stack.url}/score", json=missing, timeout=60)
    assert invalid.status_code == 422
    assert any("entity" in [str(part) for part in error["loc"]] for error in invalid.json()["detail"])


def test_health_and_learn_over_http(stack):
    health = requests.get(f"{stack.url}/health", timeout=60)
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    batch = json.loads(json.loads((EVENTS / "learn.json").read_text())["body"])
    learned = requests.post(f"{stack.url}/learn", json=batch, timeout=60)
    assert learned.status_code == 200, learned.text
    assert learned.json()["success"] is True


def test_concurrent_clients_are_served_by_several_containers(stack, caplog):
    caplog.set_level(logging.INFO, logger="local.api")

    def client(_: int) -> list[int]:
        with requests.Session() as session:
            return [session.post(f"{stack.url}/score", json=SCORE_EXAMPLE, timeout=120).status_code for _ in range(4)]

    with ThreadPoolExecutor(8) as executor:
        statuses = [s for batch in executor.map(client, range(8)) for s in batch]
    assert statuses == [200] * 32
    served = [r.getMessage() for r in caplog.records if "POST /score" in r.getMessage()]
    containers = {message.split("served by container ")[1].split()[0] for message in served}
    assert len(served) == 32 and len(containers) > 1
    assert stack.pools["ScoreFunction"].size <= 8


#: The competitor-data backend's answer in test_variables_given_to_run_reach_the_functions.
BACKEND_ANSWER = {
    "success": True,
    "data": {
        "priceP10": 80.0,
        "priceP50": 100.0,
        "priceP90": 130.0,
        "competitorCount": 7,
        "source": "e2e-backend",
        "updatedAt": "2026-11-26T11:00:00Z",
    },
}


def test_variables_given_to_run_reach_the_functions():
    """BACKEND_API_URL/BACKEND_API_KEY given to `make run` are what the function calls."""
    build_dir = built_artifacts()
    require_function_build(build_dir, "ScoreFunction")
    with StubServer(Reply(200, BACKEND_ANSWER)) as backend:
        env = {"BACKEND_API_URL": backend.url, "BACKEND_API_KEY": "e2e-key"}
        with local_api(build_dir=build_dir, env=env, max_containers=1) as running:
            body = {k: v for k, v in SCORE_EXAMPLE.items() if k != "market"}
            quote = requests.post(f"{running.url}/score", json=body, timeout=60).json()
    property_id = SCORE_EXAMPLE["entity"]["propertyId"]
    seen = [(r.target, r.header("X-API-Key")) for r in backend.requests]
    assert (f"/api/competitor-data/{property_id}/2026-12-24", "e2e-key") in seen
    assert quote["safety"]["competitor_data"]["source"] == "e2e-backend"


def test_sentry_dsn_given_to_run_reaches_the_functions():
    """SENTRY_DSN (and the sample rate) given to `make run`: the containers report to that Sentry."""
    from support.sentry_receiver import SentryReceiver

    build_dir = built_artifacts()
    require_function_build(build_dir, "ScoreFunction")
    with SentryReceiver() as receiver:
        env = {"SENTRY_DSN": receiver.dsn, "SENTRY_TRACES_SAMPLE_RATE": "1.0"}
        with local_api(build_dir=build_dir, env=env, max_containers=1) as running:
            response = requests.post(f"{running.url}/score", json=SCORE_EXAMPLE, headers={"X-Request-ID": "e2e-sentry-1"}, timeout=60)
            assert response.status_code == 200
            assert receiver.wait_for(lambda r: r.transactions, timeout=30)


# --- make run as a process ---------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_make_run_serves_prints_its_addresses_and_stops_cleanly(tmp_path):
    build_dir = built_artifacts()
    require_function_build(build_dir, "ScoreFunction")
    port = free_port()
    env = clean_env(
        PORT=str(port),
        LOCAL_BUILD_DIR=str(build_dir),
        LOCAL_RUN_DIR=str(tmp_path),
        LOCAL_PUSHGATEWAY_PORT=str(free_port()),
        LOCAL_PROMETHEUS_PORT=str(free_port()),
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "local.run"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        addresses = {}
        for line in runner.stdout:  # the address table ends with the log directory
            m = re.match(r"\s+(API|AWS endpoint|Pushgateway|Prometheus|Logs)\s+(\S+)", line)
            if m:
                addresses[m.group(1)] = m.group(2)
            if m and m.group(1) == "Logs":
                break
        assert addresses["API"] == f"http://127.0.0.1:{port}"
        assert addresses["AWS endpoint"].startswith("http://127.0.0.1:")
        state = json.loads((tmp_path / "state.json").read_text())
        assert state["pid"] == runner.pid and state["api_url"] == addresses["API"]

        health = requests.get(f"{addresses['API']}/health", timeout=60)
        assert health.status_code == 200
        # make invoke while make run is up uses make run's services.
        invoked = subprocess.run(
            [sys.executable, "-m", "local.invoke", "ScoreFunction", str(EVENTS / "health.json")],
            cwd=PROJECT_ROOT,
            env=clean_env(LOCAL_BUILD_DIR=str(build_dir), LOCAL_RUN_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert invoked.returncode == 0 and json.loads(invoked.stdout)["statusCode"] == 200
        assert "using the services of make run" in invoked.stderr
        if "Pushgateway" in addresses:
            # PUSHGATEWAY_URL reached the functions: the invocations pushed their metrics.
            deadline = time.monotonic() + 20
            groups: list = []
            while not groups and time.monotonic() < deadline:
                groups = requests.get(f"{addresses['Pushgateway']}/api/v1/metrics", timeout=10).json()["data"]
                time.sleep(0.2)
            assert groups
        children = _children(runner.pid)
        assert children  # moto, the Pushgateway, Prometheus, the containers
    finally:
        runner.send_signal(signal.SIGTERM)
        code = runner.wait(timeout=60)
    assert code == 0
    assert not (tmp_path / "state.json").exists()
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in children)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
