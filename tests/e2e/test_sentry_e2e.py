"""Sentry and request tracing end to end: the sam-built functions in local Lambda containers.

The ScoreFunction and IngestFunction build outputs run under the real runtime interface client
(``python -m awslambdaric``), so the SDK's AWS Lambda integration wraps the handler exactly as in
Lambda and flushes after every invocation; requests go over HTTP through the local API Gateway,
with an API key and an Authorization header, and envelopes go over HTTP to a ``SentryReceiver``.

Storage is moto for the ScoreFunction and a port that refuses every connection for the
IngestFunction (an ``--env-vars`` section of its own), so ``/learn`` meets an unreachable outcome
store while ``/score`` works normally.

The in-process variant, a hand-wired app under the bootstrap, is tests/integration/test_sentry_lambda.py.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from local.apigw import build_event
from local.template import ApiRoute
from support.local_stack import PROJECT_ROOT, built_artifacts, local_api, require_function_build
from support.sentry_receiver import SentryReceiver

pytestmark = pytest.mark.e2e

API_KEY = "e2e-caller-api-key-4c7e1a9b3d"
BEARER_TOKEN = "e2e-caller-bearer-8f2d6b0a5e"
CREDENTIALS = {"X-API-Key": API_KEY, "Authorization": f"Bearer {BEARER_TOKEN}"}

EVENTS = PROJECT_ROOT / "events"
SCORE_BODY = json.loads(json.loads((EVENTS / "score.json").read_text())["body"])
LEARN_BODY = json.loads(json.loads((EVENTS / "learn.json").read_text())["body"])
LEARN_PROPERTY = "demo-hotel-1"  # the property of every outcome in events/learn.json
SCORE_USER, SCORE_PROPERTY = SCORE_BODY["entity"]["userId"], SCORE_BODY["entity"]["propertyId"]
TIMED_SCORES = 4
TIMED_LEARNS = 2
REFUSED_MESSAGE = "outcome store unavailable; batch refused"  # the ingest app's warning before its 503
HTTP_TIMEOUT = 60


@pytest.fixture(scope="module")
def refusing_port() -> Iterator[int]:
    """A port that refuses every connection at once: bound, never listening, held for the module
    (so nothing else can take it meanwhile)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture(scope="module")
def env_vars_file(tmp_path_factory, refusing_port) -> Path:
    """An ``--env-vars`` file sending only the IngestFunction's storage calls to the refusing port."""
    path = tmp_path_factory.mktemp("sentry-e2e") / "env.json"
    path.write_text(json.dumps({"IngestFunction": {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{refusing_port}"}}))
    return path


def call(stack, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[requests.Response, float]:
    """One request over HTTP with the caller's credentials; returns the response and its seconds
    (the wall-clock time it arrived is ``response.arrived_at``)."""
    started = time.perf_counter()
    response = requests.request(method, f"{stack.url}{path}", json=body, headers={**CREDENTIALS, **(headers or {})}, timeout=HTTP_TIMEOUT)
    response.arrived_at = time.time()  # type: ignore[attr-defined]
    return response, time.perf_counter() - started


def run_plan(stack) -> dict[str, Any]:
    """The same requests against any stack: warm-ups without envelopes first (a health check on
    the score container, a 422 on the ingest container), then timed scores and failing learns."""
    out: dict[str, Any] = {}
    out["health"], _ = call(stack, "GET", "/health", headers={"X-Request-ID": "e2e-health-1"})
    out["invalid"], _ = call(stack, "POST", "/learn", {"batch": []}, headers={"X-Request-ID": "e2e-invalid-1"})
    out["scores"] = [call(stack, "POST", "/score", SCORE_BODY, headers={"X-Request-ID": f"e2e-score-{i}"}) for i in range(TIMED_SCORES)]
    # No X-Request-ID: the id is API Gateway's request id, learned from the response.
    out["learns"] = [call(stack, "POST", "/learn", LEARN_BODY) for _ in range(TIMED_LEARNS)]
    return out


def invoke_unknown_path(stack) -> dict[str, Any]:
    """GET /nope straight into a ScoreFunction container: API Gateway (and the local one) answers
    an unknown path itself, so only a direct invocation shows what the function does with it."""
    route = ApiRoute(function="ScoreFunction", method="GET", path="/nope")
    headers = [("Host", stack.url.split("//")[1]), ("X-Request-ID", "e2e-404-1"), *CREDENTIALS.items()]
    event = build_event(
        method="GET", raw_path="/nope", headers=headers, body=b"", route=route, path_parameters=None, stage=stack.template.api_stage()
    )
    result = stack.pools["ScoreFunction"].invoke(event)
    assert result.ok, result.payload[:500]
    return result.json()


def function_logs(stack, logical_id: str) -> list[str]:
    lines: list[str] = []
    for path in sorted(stack.log_dir.glob(f"{logical_id}-*.log")):
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines


def log_records(lines: list[str]) -> list[dict[str, Any]]:
    """The Powertools JSON lines of a container log."""
    return [r for r in (json.loads(line) for line in lines if line.startswith("{")) if "level" in r]


def learn_tails(plan: dict[str, Any], lines: list[str]) -> list[float]:
    """Seconds from each failing learn's "batch refused" log line to its response reaching the
    client: the answer, the Lambda integration's flush and the way back, without the storage
    retries before it, whose jittered backoff varies by seconds from one request to the next."""
    refused = {
        r["correlation_id"]: datetime.strptime(r["timestamp"], "%Y-%m-%d %H:%M:%S,%f%z").timestamp()
        for r in log_records(lines)
        if r.get("message") == REFUSED_MESSAGE
    }
    return [response.arrived_at - refused[response.headers["X-Request-ID"]] for response, _ in plan["learns"]]


def tagged(items: list[dict], request_id: str) -> list[dict]:
    return [i for i in items if (i.get("tags") or {}).get("request_id") == request_id]


def require_functions() -> Path:
    build_dir = built_artifacts()
    require_function_build(build_dir, "ScoreFunction")
    require_function_build(build_dir, "IngestFunction")
    return build_dir


def reporting_to(receiver: SentryReceiver, build_dir, env_vars_file, run_dir):
    """The local API, one container per function, sending every event and transaction to ``receiver``."""
    return local_api(
        build_dir=build_dir,
        env={"SENTRY_DSN": receiver.dsn, "SENTRY_TRACES_SAMPLE_RATE": "1.0"},
        env_vars_file=env_vars_file,
        max_containers=1,
        require_api_key=API_KEY,
        run_dir=run_dir,
    )


# --- Sentry answering --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def answered(env_vars_file, tmp_path_factory):
    build_dir = require_functions()
    with SentryReceiver() as receiver, reporting_to(receiver, build_dir, env_vars_file, tmp_path_factory.mktemp("answered")) as stack:
        plan = run_plan(stack)
        plan["not_found"] = invoke_unknown_path(stack)
        # Each invocation flushed before answering; the wait covers only the receiver's thread.
        receiver.wait_for(lambda r: len(r.events) >= TIMED_LEARNS and len(r.transactions) >= TIMED_SCORES + TIMED_LEARNS, timeout=10)
        time.sleep(0.3)  # a straggler would arrive now, so "no event" below means something
        ingest_name = stack.pools["IngestFunction"].function.name
    # Read after the stack stopped: the containers' log files are complete and closed.
    return {"plan": plan, "receiver": receiver, "ingest_logs": function_logs(stack, "IngestFunction"), "ingest_name": ingest_name}


def test_learn_with_storage_unreachable_is_a_503_and_exactly_one_tagged_event(answered):
    receiver = answered["receiver"]
    for response, _ in answered["plan"]["learns"]:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"].isdigit()
        request_id = response.headers["X-Request-ID"]
        assert request_id == response.headers["x-amzn-RequestId"]  # API Gateway's id, none given
        events = tagged(receiver.events, request_id)
        assert len(events) == 1, [e.get("tags") for e in receiver.events]
        tags = events[0]["tags"]
        assert (tags["endpoint"], tags["method"], tags["property_id"]) == ("/learn", "POST", LEARN_PROPERTY)
        assert events[0]["level"] == "error"
    # One event per failure, nothing else: no duplicate from logging, Mangum or the integration.
    assert len(receiver.events) == TIMED_LEARNS


def test_the_error_event_comes_through_the_lambda_integration(answered):
    receiver = answered["receiver"]
    event = receiver.events[0]
    # The integration's event processor adds the invocation's Lambda context: it wrapped the handler.
    assert event["extra"]["lambda"]["function_name"] == answered["ingest_name"]
    # Under Mangum its function.aws transaction is dropped: the http.server one stands for the request.
    assert {t["contexts"]["trace"]["op"] for t in receiver.transactions} == {"http.server"}


def test_a_422_a_404_and_the_health_check_send_nothing(answered):
    plan, receiver = answered["plan"], answered["receiver"]
    assert plan["health"].status_code == 200
    assert plan["invalid"].status_code == 422
    assert plan["not_found"]["statusCode"] == 404
    for request_id in ("e2e-health-1", "e2e-invalid-1", "e2e-404-1"):
        assert tagged(receiver.events, request_id) == []
        assert tagged(receiver.transactions, request_id) == []
    # Nothing untagged slipped through either: every item belongs to a timed score or learn.
    expected = {f"e2e-score-{i}" for i in range(TIMED_SCORES)}
    expected |= {r.headers["X-Request-ID"] for r, _ in plan["learns"]}
    assert {(i.get("tags") or {}).get("request_id") for i in receiver.events + receiver.transactions} == expected


def test_a_successful_score_is_exactly_one_tagged_transaction(answered):
    plan, receiver = answered["plan"], answered["receiver"]
    for i, (response, _) in enumerate(plan["scores"]):
        assert response.status_code == 200, response.text
        request_id = f"e2e-score-{i}"
        assert response.headers["X-Request-ID"] == request_id
        transactions = tagged(receiver.transactions, request_id)
        assert len(transactions) == 1
        transaction = transactions[0]
        assert transaction["transaction"] == "/score"
        assert transaction["contexts"]["trace"]["op"] == "http.server"
        tags = transaction["tags"]
        assert (tags["user_id"], tags["property_id"]) == (SCORE_USER, SCORE_PROPERTY)
        assert (tags["endpoint"], tags["method"]) == ("/score", "POST")
        assert tagged(receiver.events, request_id) == []


def test_no_api_key_or_authorization_header_leaves_in_any_envelope(answered):
    receiver = answered["receiver"]
    raw = receiver.raw
    assert raw and receiver.rejected == []
    # The headers did reach the SDK (the events carry the request), and left without values.
    headers = {k.lower(): v for k, v in receiver.events[0]["request"]["headers"].items()}
    assert "x-api-key" in headers and "authorization" in headers
    assert API_KEY.encode() not in raw
    assert BEARER_TOKEN.encode() not in raw
    assert f"Bearer {BEARER_TOKEN}".encode() not in raw


def test_the_log_lines_of_the_failing_request_carry_its_id(answered):
    request_id = answered["plan"]["learns"][0][0].headers["X-Request-ID"]
    lines = answered["ingest_logs"]
    # Split the container log into invocations at the platform's START/END lines.
    invocations: list[list[str]] = []
    for line in lines:
        if line.startswith("START RequestId:"):
            invocations.append([])
        elif line.startswith("END RequestId:"):
            continue
        elif invocations:
            invocations[-1].append(line)
    records_of = [[json.loads(line) for line in block if line.startswith("{")] for block in invocations]
    mine = [records for records in records_of if any(r.get("correlation_id") == request_id for r in records)]
    assert len(mine) == 1, "\n".join(lines[-40:])
    records = [r for r in mine[0] if "level" in r]  # Powertools' JSON lines
    assert REFUSED_MESSAGE in {r.get("message") for r in records}
    assert all(r.get("correlation_id") == request_id for r in records), records


# --- Sentry accepting connections but never answering --------------------------------------------


@pytest.fixture(scope="module")
def black_holed(env_vars_file, answered, tmp_path_factory):
    # After `answered` (whose timings are the normal ones), which has stopped its stack by now.
    build_dir = require_functions()
    run_dir = tmp_path_factory.mktemp("black-holed")
    with SentryReceiver(answer=False) as blackhole, reporting_to(blackhole, build_dir, env_vars_file, run_dir) as stack:
        plan = run_plan(stack)
    return {"plan": plan, "logs": {fn: function_logs(stack, fn) for fn in ("ScoreFunction", "IngestFunction")}}


def _figures(name: str, normal: list[float], slowed: list[float]) -> tuple[float, float, float]:
    baseline = statistics.median(normal)
    first, later = slowed[0] - baseline, max(slowed[1:]) - baseline
    print(
        f"{name}: normal {', '.join(f'{s:.3f}' for s in normal)} s (median {baseline:.3f}); "
        f"Sentry never answering {', '.join(f'{s:.3f}' for s in slowed)} s; "
        f"extra: first {first:+.3f} s, later at most {later:+.3f} s"
    )
    return baseline, first, later


@pytest.mark.parametrize(("key", "status", "function"), [("scores", 200, "ScoreFunction"), ("learns", 503, "IngestFunction")])
def test_a_sentry_that_never_answers_costs_only_a_bounded_flush(answered, black_holed, key, status, function):
    from pricing.observability.sentry import FLUSH_TIMEOUT_SECONDS

    slowed_plan = black_holed["plan"]
    assert slowed_plan["health"].status_code == 200 and slowed_plan["invalid"].status_code == 422
    assert [r.status_code for r, _ in slowed_plan[key]] == [status] * len(slowed_plan[key])
    if key == "scores":  # the whole request: a warm score takes a steady few tens of milliseconds
        normal = [s for _, s in answered["plan"][key]]
        slowed = [s for _, s in slowed_plan[key]]
    else:  # only what follows the storage retries (see learn_tails)
        normal = learn_tails(answered["plan"], answered["ingest_logs"])
        slowed = learn_tails(slowed_plan, black_holed["logs"][function])
    _, first, later = _figures(key, normal, slowed)
    # The first flush waits out its timeout (1 s); then the container stops waiting for Sentry.
    # Unbounded, each invocation would wait the SDK's 30 s send timeout. Generous margins: the
    # machine is shared, and these bounds only have to tell "bounded" from "not".
    assert first < FLUSH_TIMEOUT_SECONDS + 2.0
    assert later < 2.0
    # Deterministic evidence of the cool-down: exactly one flush of the container timed out.
    logs = "\n".join(black_holed["logs"][function])
    assert logs.count("Sentry flush timed out") == 1, logs[-3000:]
