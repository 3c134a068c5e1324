"""Sentry through the real Lambda bootstrap, with the real SDK and HTTP transport.

Each scenario runs in its own process, as one warm Lambda container: the process imports the
awslambdaric bootstrap before initialising Sentry (so the AWS Lambda integration patches it exactly
as in a Lambda runtime), builds a FastAPI app wired the way the service wires its own (request
middleware, error handlers) under Mangum, and feeds API Gateway REST (v1) proxy events or
EventBridge events through ``bootstrap.handle_event_request``. Only the native runtime-API client
underneath is replaced, by one that records what would have been posted back to Lambda. Envelopes
go over HTTP to a local ``SentryReceiver``.

The end-to-end variant (the sam-built functions under the local Lambda runner) lives in tests/e2e.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]

CALLER_API_KEY = "caller-api-key-7f3c9a1e5b4d"
CALLER_BEARER = "caller-bearer-5d2e8c4b9a7f"
BACKEND_API_KEY = "backend-key-2b8d4f6a1c9e"
PUSHGATEWAY_PASSWORD = "pgw-password-8e1f3a5c7b"
SECRETS = (CALLER_API_KEY, CALLER_BEARER, BACKEND_API_KEY, PUSHGATEWAY_PASSWORD)
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:pricing-score"


# =============================================================================== container side
# Everything in this section runs inside the subprocess ("the container").


class Entity(BaseModel):
    userId: str  # the wire name
    propertyId: str


class Quote(BaseModel):
    entity: Entity


class Outcome(BaseModel):
    property_id: str


class Batch(BaseModel):
    batch: list[Outcome]


def _install_bootstrap() -> Any:
    """Make awslambdaric's bootstrap the one the Sentry integration finds, with a runtime client
    that records results instead of posting them to a Runtime API."""
    import awslambdaric.bootstrap as bootstrap
    import awslambdaric.lambda_runtime_client as lrc

    class RecordingRuntime:
        def __init__(self) -> None:
            self.posted: list[dict[str, Any]] = []

        def post_invocation_result(self, invoke_id, data, content_type, invocation_id=None):
            self.posted.append({"invoke_id": invoke_id, "result": json.loads(data)})

        def post_error(self, invoke_id, error_data, xray_fault, invocation_id=None):
            self.posted.append({"invoke_id": invoke_id, "error": json.loads(error_data)})

    lrc.runtime_client = RecordingRuntime()
    sys.modules["bootstrap"] = bootstrap  # where the integration looks first
    return bootstrap


def _build_api() -> Any:
    """A small app wired like the service's: pure-ASGI request middleware (request id, Sentry
    tags, X-Request-ID on every response), validation and crash handlers, under Mangum."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from mangum import Mangum

    from pricing.observability.context import (
        api_gateway_request_id,
        bind_request_id,
        current_request_id,
        logger,
        resolve_request_id,
    )
    from pricing.observability.sentry import capture_error, report_once, set_request_context

    class StoreUnavailable(RuntimeError):
        pass

    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": "invalid"}, status_code=422)

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        capture_error(exc)
        logger.error("storage unavailable", extra={"error": str(exc)})
        return JSONResponse({"detail": "storage unavailable"}, status_code=503)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        request_id = current_request_id() or ""
        return JSONResponse({"detail": "internal error"}, status_code=500, headers={"X-Request-ID": request_id})

    @app.get("/health")
    def health() -> dict:
        if os.environ.get("HEALTH_FAILS") == "1":
            raise RuntimeError("health check failed")
        return {"status": "ok"}

    @app.post("/score")
    def score(quote: Quote) -> dict:
        property_id = quote.entity.propertyId
        set_request_context(current_request_id() or "", user_id=quote.entity.userId, property_id=property_id)
        logger.info("scoring", extra={"property_id": property_id})
        if property_id == "prop-crash":
            # Locals that a careless handler might hold: they travel with the stack trace.
            backend_headers = {"X-API-Key": os.environ["BACKEND_API_KEY"]}  # noqa: F841
            raise RuntimeError("model evaluation failed")
        if property_id == "prop-slow":
            time.sleep(0.9)  # past the timeout warning, which fires 1.5 s before the deadline
        if property_id == "prop-fallback":
            report_once("model-store", StoreUnavailable("model store timed out"), property_id=property_id)
        return {"price": 123.45}

    @app.post("/learn")
    def learn(batch: Batch) -> dict:
        property_id = batch.batch[0].property_id
        set_request_context(current_request_id() or "", property_id=property_id)
        try:
            raise StoreUnavailable("outcomes table unreachable")
        except StoreUnavailable as exc:
            # As the ingest app does it: a 5xx HTTPException, reported by the FastAPI integration.
            raise HTTPException(status_code=503, detail="outcome store unavailable") from exc

    @app.post("/learn-handled")
    def learn_handled(batch: Batch) -> dict:
        set_request_context(current_request_id() or "", property_id=batch.batch[0].property_id)
        raise StoreUnavailable("outcomes table unreachable")  # answered by store_down, above

    class RequestMiddleware:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            request_id = resolve_request_id(headers.get("x-request-id"), api_gateway_request_id(scope.get("aws.event")))
            bind_request_id(request_id)
            set_request_context(request_id, additional_tags={"endpoint": scope["path"], "method": scope["method"]})

            async def send_with_id(message: dict) -> None:
                if message["type"] == "http.response.start":
                    kept = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                    message["headers"] = kept + [(b"x-request-id", request_id.encode())]
                await send(message)

            await self.app(scope, receive, send_with_id)

    app.add_middleware(RequestMiddleware)
    return Mangum(app, lifespan="off")


def _retrain_handler(event: dict, context: Any) -> dict:
    """Wired like the retrain function: the EventBridge event id is the request id, the property
    being trained is tagged, the scheduled run checks in with the cron monitor."""
    from pricing.observability.context import bind_request_id, logger
    from pricing.observability.sentry import retrain_monitor, set_request_context

    request_id = event.get("id") or context.aws_request_id
    bind_request_id(request_id)
    set_request_context(request_id, additional_tags={"endpoint": "retrain", "method": "schedule"})
    trained = []
    with retrain_monitor():
        for property_id in event["detail"]["properties"]:
            set_request_context(request_id, property_id=property_id)
            logger.info("training", extra={"property_id": property_id})
            if property_id == "prop-broken":
                raise RuntimeError("training failed")
            trained.append(property_id)
    return {"trained": trained}


def run_container(plan_path: str, out_path: str) -> None:
    """Run the invocations listed in ``plan_path`` in this process and write their outcomes."""
    bootstrap = _install_bootstrap()
    from pricing.observability.sentry import init_from_settings
    from pricing.observability.context import set_service_name
    from pricing.settings import Settings

    settings = Settings.from_env()  # as the app module does at import
    set_service_name(settings.service_name)
    init_from_settings(settings)
    handlers = {"api": _build_api(), "retrain": _retrain_handler}
    runtime = bootstrap.LambdaRuntimeClient("127.0.0.1:9")
    recorder = sys.modules["awslambdaric.lambda_runtime_client"].runtime_client
    outcomes = []
    for step in json.loads(Path(plan_path).read_text()):
        invoke_id = uuid.uuid4().hex
        started = time.perf_counter()
        bootstrap.handle_event_request(
            runtime,
            handlers[step["handler"]],
            invoke_id,
            json.dumps(step["event"]).encode(),
            "application/json",
            None,
            None,
            FUNCTION_ARN,
            int(time.time() * 1000) + step.get("timeout_ms", 30_000),
            None,
            bootstrap.StandardLogSink(),
        )
        elapsed = time.perf_counter() - started
        posted = recorder.posted[-1]
        outcomes.append({"name": step["name"], "seconds": elapsed, **posted})
    Path(out_path).write_text(json.dumps(outcomes))


# =============================================================================== test side


def api_event(
    method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, gateway_id: str | None = None
) -> dict:
    """An API Gateway REST API (payload 1.0) proxy event, as the service receives it."""
    all_headers = {
        "Host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "X-Forwarded-Proto": "https",
        "Content-Type": "application/json",
        "X-API-Key": CALLER_API_KEY,
        "Authorization": f"Bearer {CALLER_BEARER}",
        **(headers or {}),
    }
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "requestId": gateway_id or str(uuid.uuid4()),
            "stage": "prod",
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/prod{path}",
            "accountId": "123456789012",
            "apiId": "abc123",
            "identity": {"sourceIp": "203.0.113.9", "userAgent": "booking-backend/1.0", "apiKey": CALLER_API_KEY},
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def scheduled_event(event_id: str, properties: list[str]) -> dict:
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-26T03:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/pricing-retrain"],
        "detail": {"properties": properties},
    }


def quote(property_id: str) -> dict:
    return {"entity": {"userId": "user-123", "propertyId": property_id}}


def run_in_container(tmp_path: Path, dsn: str, plan: list[dict], *, traces: str = "1.0", extra_env=None) -> tuple[list[dict], str]:
    """Run ``plan`` in a fresh process acting as one Lambda container; returns the outcomes and
    the container's stdout (its log lines)."""
    plan_path, out_path = tmp_path / f"plan-{uuid.uuid4().hex}.json", tmp_path / f"out-{uuid.uuid4().hex}.json"
    plan_path.write_text(json.dumps(plan))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "AWS_", "PUSHGATEWAY_", "BACKEND_"))
    }
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("layers/shared", "tests")),
            "SENTRY_DSN": dsn,
            "SENTRY_TRACES_SAMPLE_RATE": traces,
            "ENVIRONMENT": "test",
            "RELEASE": "pricing@test",
            "POWERTOOLS_SERVICE_NAME": "pricing-score",
            "BACKEND_API_KEY": BACKEND_API_KEY,
            "PUSHGATEWAY_PASSWORD": PUSHGATEWAY_PASSWORD,
            "AWS_LAMBDA_FUNCTION_NAME": "pricing-score",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/pricing-score",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/26/[$LATEST]0123456789abcdef",
            "AWS_REGION": "eu-west-1",
            **(extra_env or {}),
        }
    )
    proc = subprocess.run(
        [sys.executable, __file__, str(plan_path), str(out_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out_path.read_text()), proc.stdout


def tagged(items: list[dict], request_id: str) -> list[dict]:
    return [i for i in items if (i.get("tags") or {}).get("request_id") == request_id]


def response_headers(outcome: dict) -> dict[str, str]:
    result = outcome["result"]
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    for k, values in (result.get("multiValueHeaders") or {}).items():
        headers.setdefault(k.lower(), values[0])
    return headers


# ------------------------------------------------------------------------------- the API container

API_PLAN = [
    {"name": "crash", "handler": "api", "event": api_event("POST", "/score", quote("prop-crash"), {"X-Request-ID": "req-crash-1"})},
    {"name": "store_down", "handler": "api",
     "event": api_event("POST", "/learn", {"batch": [{"property_id": "prop-learn"}]}, {"X-Request-ID": "req-learn-1"})},
    {"name": "store_down_handled", "handler": "api",
     "event": api_event("POST", "/learn-handled", {"batch": [{"property_id": "prop-learn"}]}, {"X-Request-ID": "req-learn-2"})},
    {"name": "invalid", "handler": "api", "event": api_event("POST", "/score", {"entity": {}}, {"X-Request-ID": "req-invalid-1"})},
    {"name": "not_found", "handler": "api", "event": api_event("GET", "/nope", None, {"X-Request-ID": "req-404-1"})},
    {"name": "health", "handler": "api", "event": api_event("GET", "/health", None, {"X-Request-ID": "req-health-1"})},
    {"name": "ok", "handler": "api", "event": api_event("POST", "/score", quote("prop-ok"), {"X-Request-ID": "req-ok-1"})},
    {"name": "insane_id", "handler": "api",
     "event": api_event("POST", "/score", quote("prop-ok"), {"X-Request-ID": "bad id\nwith newline"}, gateway_id="gw-id-0001")},
    {"name": "fallback_1", "handler": "api",
     "event": api_event("POST", "/score", quote("prop-fallback"), {"X-Request-ID": "req-fallback-1"})},
    {"name": "fallback_2", "handler": "api",
     "event": api_event("POST", "/score", quote("prop-fallback"), {"X-Request-ID": "req-fallback-2"})},
    {"name": "slow", "handler": "api", "timeout_ms": 2000,
     "event": api_event("POST", "/score", quote("prop-slow"), {"X-Request-ID": "req-slow-1"})},
]


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    from support.sentry_receiver import SentryReceiver

    with SentryReceiver() as receiver:
        outcomes, logs = run_in_container(tmp_path_factory.mktemp("sentry-api"), receiver.dsn, API_PLAN)
        # Every invocation flushed before returning; the wait only covers the receiver's own thread.
        receiver.wait_for(lambda r: len(r.events) >= 5 and len(r.transactions) >= 8, timeout=10)
        time.sleep(0.2)  # let any unexpected straggler arrive, so "no event" means something
        yield {o["name"]: o for o in outcomes}, receiver, logs


def test_an_unhandled_error_is_one_event_tagged_with_the_request(api_run):
    outcomes, receiver, _ = api_run
    assert outcomes["crash"]["result"]["statusCode"] == 500
    assert response_headers(outcomes["crash"])["x-request-id"] == "req-crash-1"
    events = tagged(receiver.events, "req-crash-1")
    assert len(events) == 1
    tags = events[0]["tags"]
    assert tags["endpoint"] == "/score" and tags["method"] == "POST"
    assert tags["property_id"] == "prop-crash" and tags["user_id"] == "user-123"
    assert events[0]["exception"]["values"][-1]["type"] == "RuntimeError"
    assert events[0]["environment"] == "test" and events[0]["release"] == "pricing@test"


@pytest.mark.parametrize(
    ("name", "request_id", "endpoint"),
    [("store_down", "req-learn-1", "/learn"), ("store_down_handled", "req-learn-2", "/learn-handled")],
)
def test_a_storage_failure_answered_with_503_is_one_event(api_run, name, request_id, endpoint):
    # Either way of answering 503: raising HTTPException(503), or an exception handler that
    # reports with capture_error.
    outcomes, receiver, _ = api_run
    assert outcomes[name]["result"]["statusCode"] == 503
    assert response_headers(outcomes[name])["x-request-id"] == request_id
    events = tagged(receiver.events, request_id)
    assert len(events) == 1
    assert events[0]["tags"]["endpoint"] == endpoint
    assert events[0]["tags"]["method"] == "POST"
    assert events[0]["tags"]["property_id"] == "prop-learn"


def test_validation_errors_404s_and_health_checks_send_nothing(api_run):
    outcomes, receiver, _ = api_run
    assert outcomes["invalid"]["result"]["statusCode"] == 422
    assert outcomes["not_found"]["result"]["statusCode"] == 404
    assert outcomes["health"]["result"]["statusCode"] == 200
    for request_id in ("req-invalid-1", "req-404-1", "req-health-1"):
        assert tagged(receiver.events, request_id) == []
        assert tagged(receiver.transactions, request_id) == []


def test_a_successful_request_is_exactly_one_tagged_transaction(api_run):
    outcomes, receiver, _ = api_run
    assert outcomes["ok"]["result"]["statusCode"] == 200
    transactions = tagged(receiver.transactions, "req-ok-1")
    assert len(transactions) == 1
    transaction = transactions[0]
    assert transaction["contexts"]["trace"]["op"] == "http.server"
    assert transaction["transaction"] == "/score"
    assert transaction["tags"]["property_id"] == "prop-ok"
    assert transaction["tags"]["user_id"] == "user-123"
    assert transaction["tags"]["endpoint"] == "/score" and transaction["tags"]["method"] == "POST"
    assert tagged(receiver.events, "req-ok-1") == []


def test_the_lambda_integration_was_active_and_its_duplicate_transaction_dropped(api_run):
    _, receiver, _ = api_run
    # Proof the integration wrapped the handler: its event processor adds the Lambda context.
    crash = tagged(receiver.events, "req-crash-1")[0]
    assert crash["extra"]["lambda"]["function_name"] == "pricing-score"
    assert all(t["contexts"]["trace"]["op"] != "function.aws" for t in receiver.transactions)
    # Eleven requests, of which 404, 422 and /health are filtered: one transaction for each other.
    assert len(receiver.transactions) == 8


def test_the_timeout_warning_is_one_event_tagged_with_the_request(api_run):
    outcomes, receiver, _ = api_run
    assert outcomes["slow"]["result"]["statusCode"] == 200  # warned, not timed out
    events = tagged(receiver.events, "req-slow-1")
    assert [e["exception"]["values"][-1]["type"] for e in events] == ["ServerlessTimeoutWarning"]
    tags = events[0]["tags"]
    assert tags["property_id"] == "prop-slow" and tags["endpoint"] == "/score" and tags["method"] == "POST"


def test_an_insane_caller_request_id_is_replaced_by_the_gateway_id(api_run):
    outcomes, receiver, _ = api_run
    assert response_headers(outcomes["insane_id"])["x-request-id"] == "gw-id-0001"
    assert len(tagged(receiver.transactions, "gw-id-0001")) == 1


def test_a_handled_fallback_is_reported_once_per_container(api_run):
    outcomes, receiver, _ = api_run
    assert outcomes["fallback_1"]["result"]["statusCode"] == 200
    assert outcomes["fallback_2"]["result"]["statusCode"] == 200
    warnings = [e for e in receiver.events if (e.get("tags") or {}).get("cause") == "model-store"]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["tags"]["request_id"] == "req-fallback-1"
    assert warnings[0]["tags"]["property_id"] == "prop-fallback"


def test_no_credential_or_secret_leaves_the_process(api_run):
    _, receiver, _ = api_run
    raw = receiver.raw
    assert raw, "nothing received"
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
    assert b"Bearer " + CALLER_BEARER[:8].encode() not in raw
    assert receiver.rejected == []


def test_the_log_lines_of_the_failing_request_carry_its_id(api_run):
    _, _, logs = api_run
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    failing = [r for r in records if r.get("correlation_id") == "req-crash-1"]
    messages = {r.get("message") for r in failing}
    assert {"scoring", "unhandled error"} <= messages
    assert all(r.get("service") == "pricing-score" for r in failing)


# ------------------------------------------------------------------------------- the retrain container


@pytest.fixture(scope="module")
def retrain_run(tmp_path_factory):
    from support.sentry_receiver import SentryReceiver

    plan = [
        {"name": "good", "handler": "retrain", "event": scheduled_event("evt-good-1", ["prop-a", "prop-b"])},
        {"name": "broken", "handler": "retrain", "event": scheduled_event("evt-broken-1", ["prop-a", "prop-broken"])},
    ]
    with SentryReceiver() as receiver:
        outcomes, _ = run_in_container(tmp_path_factory.mktemp("sentry-retrain"), receiver.dsn, plan)
        receiver.wait_for(lambda r: len(r.check_ins) >= 4 and r.events, timeout=10)
        time.sleep(0.2)
        yield {o["name"]: o for o in outcomes}, receiver


def test_the_scheduled_retrain_checks_in_ok_and_error(retrain_run):
    outcomes, receiver = retrain_run
    assert outcomes["good"]["result"] == {"trained": ["prop-a", "prop-b"]}
    assert outcomes["broken"]["error"]["errorType"] == "RuntimeError"
    check_ins = receiver.check_ins
    assert [c["status"] for c in check_ins] == ["in_progress", "ok", "in_progress", "error"]
    assert {c["monitor_slug"] for c in check_ins} == {"pricing-retrain"}
    assert check_ins[0]["check_in_id"] == check_ins[1]["check_in_id"] != check_ins[2]["check_in_id"]
    assert check_ins[0]["monitor_config"]["schedule"] == {"type": "crontab", "value": "0 3 * * *"}


def test_a_failed_retrain_is_one_event_tagged_with_the_event_id_and_property(retrain_run):
    _, receiver = retrain_run
    events = tagged(receiver.events, "evt-broken-1")
    assert len(events) == 1
    assert events[0]["tags"]["property_id"] == "prop-broken"
    assert events[0]["exception"]["values"][-1]["value"] == "training failed"


def test_the_retrain_keeps_its_lambda_transaction_tagged(retrain_run):
    _, receiver = retrain_run
    transactions = tagged(receiver.transactions, "evt-good-1")
    assert len(transactions) == 1
    assert transactions[0]["contexts"]["trace"]["op"] == "function.aws"
    assert transactions[0]["tags"]["property_id"] == "prop-b"


# ------------------------------------------------------------------------------- an unreachable Sentry


def test_a_sentry_that_never_answers_costs_only_a_bounded_flush(tmp_path):
    from pricing.observability.sentry import FLUSH_TIMEOUT_SECONDS
    from support.sentry_receiver import SentryReceiver

    plan = [
        {"name": "crash", "handler": "api", "event": api_event("POST", "/score", quote("prop-crash"))},
        *({"name": f"ok{i}", "handler": "api", "event": api_event("POST", "/score", quote("prop-ok"))} for i in range(4)),
        {"name": "crash_again", "handler": "api", "event": api_event("POST", "/score", quote("prop-crash"))},
    ]
    with SentryReceiver(answer=False) as blackhole:
        outcomes, logs = run_in_container(tmp_path, blackhole.dsn, plan)
    assert [o["result"]["statusCode"] for o in outcomes] == [500, 200, 200, 200, 200, 500]
    # Unbounded, each invocation would wait out the SDK's 30 s send timeout; bounded but without
    # the cool-down, each would wait the flush timeout (6 s in all). The container pays one
    # flush timeout; the margin absorbs a slow, shared CI machine.
    assert sum(o["seconds"] for o in outcomes) < FLUSH_TIMEOUT_SECONDS + 3.0, outcomes
    assert logs.count("Sentry flush timed out") == 1


if __name__ == "__main__":
    run_container(sys.argv[1], sys.argv[2])
