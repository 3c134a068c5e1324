"""Sentry through the real Lambda bootstrap, with the real SDK and HTTP transport, in this process.

Each test is one warm Lambda container (the ``container`` fixture): awslambdaric's bootstrap is
importable as ``bootstrap`` before Sentry is initialised, so the AWS Lambda integration patches it
exactly as in a Lambda runtime; Sentry is initialised the way the app modules do it
(``init_from_settings``) against a local ``SentryReceiver``; the API is the service's own
``create_app`` (request middleware, error handlers) with a few routes under Mangum; events go
through ``bootstrap.handle_event_request``. Only the native runtime-API client underneath is
replaced, by one that records what would have been posted back to Lambda. After each test the
client is closed and the SDK's scopes and the module's per-container memory are reset, so the
next test starts from a cold container.

The end-to-end variant (the sam-built functions under the local Lambda runner) lives in tests/e2e.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sentry_sdk
import sentry_sdk.integrations
from pydantic import BaseModel

from pricing.observability import sentry
from pricing.settings import Settings
from support.sentry_receiver import SentryReceiver

#: The Lambda integration raises its timeout warning in a thread of its own, which pytest reports
#: as an unhandled thread exception: expected wherever the slow request runs.
TIMEOUT_WARNING_THREAD = pytest.mark.filterwarnings(
    "ignore:(?s)Exception in thread.*ServerlessTimeoutWarning:pytest.PytestUnhandledThreadExceptionWarning"
)

CALLER_API_KEY = "caller-api-key-7f3c9a1e5b4d"
CALLER_BEARER = "caller-bearer-5d2e8c4b9a7f"
BACKEND_API_KEY = "backend-key-2b8d4f6a1c9e"
PUSHGATEWAY_PASSWORD = "pgw-password-8e1f3a5c7b"
SECRETS = (CALLER_API_KEY, CALLER_BEARER, BACKEND_API_KEY, PUSHGATEWAY_PASSWORD)
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:pricing-score"
#: What the Lambda runtime sets in a container (awslambdaric's context reads some of it).
LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "pricing-score",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/pricing-score",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/26/[$LATEST]0123456789abcdef",
    "AWS_REGION": "eu-west-1",
}


# =============================================================================== the container


class Entity(BaseModel):
    userId: str  # the wire name
    propertyId: str


class Quote(BaseModel):
    entity: Entity


class Outcome(BaseModel):
    property_id: str


class Batch(BaseModel):
    batch: list[Outcome]


class StoreUnavailable(RuntimeError):
    pass


class RecordingRuntime:
    """The native runtime-API client's two calls that answer an invocation, recorded."""

    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    def post_invocation_result(self, invoke_id, data, content_type, invocation_id=None):
        self.posted.append({"invoke_id": invoke_id, "result": json.loads(data)})

    def post_error(self, invoke_id, error_data, xray_fault, invocation_id=None):
        self.posted.append({"invoke_id": invoke_id, "error": json.loads(error_data)})


def build_api(settings: Settings) -> Any:
    """The service's own app factory (request middleware, error handlers) with routes that fail
    the ways the service's can, under Mangum."""
    from fastapi import HTTPException, Request
    from fastapi.responses import JSONResponse
    from mangum import Mangum

    from pricing.api.common import create_app
    from pricing.observability.context import current_request_id, logger

    app = create_app(title="sentry test", settings=settings)

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        sentry.capture_error(exc)
        logger.error("storage unavailable", extra={"error": str(exc)})
        return JSONResponse({"detail": "storage unavailable"}, status_code=503)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/score")
    def score(quote: Quote) -> dict:
        property_id = quote.entity.propertyId
        sentry.set_request_context(current_request_id() or "", user_id=quote.entity.userId, property_id=property_id)
        logger.info("scoring", extra={"property_id": property_id})
        if property_id == "prop-crash":
            # Locals that a careless handler might hold: they travel with the stack trace.
            backend_headers = {"X-API-Key": settings.backend_api_key}  # noqa: F841
            raise RuntimeError("model evaluation failed")
        if property_id == "prop-slow":
            time.sleep(0.9)  # past the timeout warning, which fires 1.5 s before the deadline
        if property_id == "prop-fallback":
            sentry.report_once("model-store", StoreUnavailable("model store timed out"), property_id=property_id)
        return {"price": 123.45}

    @app.post("/learn")
    def learn(batch: Batch) -> dict:
        sentry.set_request_context(current_request_id() or "", property_id=batch.batch[0].property_id)
        try:
            raise StoreUnavailable("outcomes table unreachable")
        except StoreUnavailable as exc:
            # As the ingest app does it: a 5xx HTTPException, reported by the FastAPI integration.
            raise HTTPException(status_code=503, detail="outcome store unavailable") from exc

    @app.post("/learn-handled")
    def learn_handled(batch: Batch) -> dict:
        sentry.set_request_context(current_request_id() or "", property_id=batch.batch[0].property_id)
        raise StoreUnavailable("outcomes table unreachable")  # answered by store_down, above

    return Mangum(app, lifespan="off")


def retrain_handler(event: dict, context: Any) -> dict:
    """Wired like the retrain function: the EventBridge event id is the request id, the property
    being trained is tagged, the scheduled run checks in with the cron monitor."""
    from pricing.observability.context import bind_request_id, invocation_request_id, logger

    request_id = invocation_request_id(event, context)
    bind_request_id(request_id)
    sentry.set_request_context(request_id, additional_tags={"endpoint": "retrain", "method": "schedule"})
    trained = []
    with sentry.retrain_monitor():
        for property_id in event["detail"]["properties"]:
            sentry.set_request_context(request_id, property_id=property_id)
            logger.info("training", extra={"property_id": property_id})
            if property_id == "prop-broken":
                raise RuntimeError("training failed")
            trained.append(property_id)
    return {"trained": trained}


class Container:
    """One warm Lambda container: its handlers, the runtime that records their answers, the
    Sentry receiver its events go to, and its log lines."""

    def __init__(
        self, bootstrap: Any, runtime: RecordingRuntime, receiver: SentryReceiver, logs: io.StringIO, handlers: dict[str, Callable]
    ) -> None:
        self.bootstrap, self.runtime, self.receiver, self._logs, self.handlers = bootstrap, runtime, receiver, logs, handlers
        self.client = bootstrap.LambdaRuntimeClient("127.0.0.1:9")  # never dialled: the native client is replaced

    def invoke(self, handler: str, event: dict, timeout_ms: int = 30_000) -> dict:
        """One invocation through the bootstrap; what it posted back, and how long it took."""
        started = time.perf_counter()
        self.bootstrap.handle_event_request(
            self.client,
            self.handlers[handler],
            uuid.uuid4().hex,
            json.dumps(event).encode(),
            "application/json",
            None,
            None,
            FUNCTION_ARN,
            int(time.time() * 1000) + timeout_ms,
            None,
            self.bootstrap.StandardLogSink(),
        )
        return {"seconds": time.perf_counter() - started, **self.runtime.posted[-1]}

    def run(self, plan: list[dict]) -> dict[str, dict]:
        return {step["name"]: self.invoke(step["handler"], step["event"], step.get("timeout_ms", 30_000)) for step in plan}

    def settle(self, predicate: Callable[[SentryReceiver], Any]) -> None:
        """Every invocation flushed before returning; the wait only covers the receiver's own
        thread, and the pause after it lets any unexpected straggler arrive, so that "no event"
        means something."""
        self.receiver.wait_for(predicate, timeout=10)
        time.sleep(0.2)

    @property
    def logs(self) -> str:
        return self._logs.getvalue()


def _lambda_bootstrap(monkeypatch) -> Any:
    """awslambdaric's bootstrap as the module the Sentry integration patches, with a recording
    runtime client under it."""
    import awslambdaric.bootstrap as bootstrap
    import awslambdaric.lambda_runtime_client as lrc

    monkeypatch.setattr(lrc, "runtime_client", RecordingRuntime())
    monkeypatch.setitem(sys.modules, "bootstrap", bootstrap)  # where the integration looks first
    if getattr(bootstrap.handle_event_request, "__name__", "") != "sentry_handle_event_request":
        # The SDK sets an integration up once per process; an earlier init in this process (a unit
        # test's, with no bootstrap importable) counts as done although it patched nothing.
        sentry_sdk.integrations._processed_integrations.discard("aws_lambda")
        sentry_sdk.integrations._installed_integrations.discard("aws_lambda")
    return bootstrap


def _reset_sentry() -> None:
    """Back to an uninitialised SDK: the client flushed and closed, every scope emptied."""
    sentry_sdk.get_client().close(timeout=sentry.FLUSH_TIMEOUT_SECONDS)
    for scope in (sentry_sdk.get_global_scope(), sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()):
        scope.clear()
        scope.set_client(None)


@pytest.fixture
def container(monkeypatch) -> Any:
    """``container(answer=True, traces="1.0")``: a fresh container whose Sentry sends to a local
    receiver (``answer=False``: one that never answers)."""
    from pricing.observability.context import logger, set_service_name

    with contextlib.ExitStack() as stack:

        def start(*, answer: bool = True, traces: str = "1.0") -> Container:
            for name, value in LAMBDA_ENV.items():
                monkeypatch.setenv(name, value)
            bootstrap = _lambda_bootstrap(monkeypatch)
            monkeypatch.setattr(sentry, "_state", sentry._State())  # what a container remembers
            receiver = stack.enter_context(SentryReceiver(answer=answer))
            settings = Settings.from_env(
                {
                    "SENTRY_DSN": receiver.dsn,
                    "SENTRY_TRACES_SAMPLE_RATE": traces,
                    "ENVIRONMENT": "test",
                    "RELEASE": "pricing@test",
                    "POWERTOOLS_SERVICE_NAME": "pricing-score",
                    "BACKEND_API_KEY": BACKEND_API_KEY,
                    "PUSHGATEWAY_PASSWORD": PUSHGATEWAY_PASSWORD,
                    **LAMBDA_ENV,
                }
            )
            # As the app modules do at import.
            set_service_name(settings.service_name)
            assert sentry.init_from_settings(settings)
            stack.callback(_reset_sentry)
            logs = io.StringIO()
            log_handler = logging.StreamHandler(logs)
            log_handler.setFormatter(logger.registered_formatter)
            logger.addHandler(log_handler)
            stack.callback(logger.removeHandler, log_handler)
            return Container(
                bootstrap,
                sys.modules["awslambdaric.lambda_runtime_client"].runtime_client,
                receiver,
                logs,
                {"api": build_api(settings), "retrain": retrain_handler},
            )

        yield start


# =============================================================================== events


def api_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, gateway_id: str | None = None) -> dict:
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


def tagged(items: list[dict], request_id: str) -> list[dict]:
    return [i for i in items if (i.get("tags") or {}).get("request_id") == request_id]


def response_headers(outcome: dict) -> dict[str, str]:
    result = outcome["result"]
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    for k, values in (result.get("multiValueHeaders") or {}).items():
        headers.setdefault(k.lower(), values[0])
    return headers


def step(name: str, event: dict, **extra: Any) -> dict:
    return {"name": name, "handler": "api", "event": event, **extra}


CRASH = step("crash", api_event("POST", "/score", quote("prop-crash"), {"X-Request-ID": "req-crash-1"}))
STORE_DOWN = step("store_down", api_event("POST", "/learn", {"batch": [{"property_id": "prop-learn"}]}, {"X-Request-ID": "req-learn-1"}))
STORE_DOWN_HANDLED = step(
    "store_down_handled", api_event("POST", "/learn-handled", {"batch": [{"property_id": "prop-learn"}]}, {"X-Request-ID": "req-learn-2"})
)
INVALID = step("invalid", api_event("POST", "/score", {"entity": {}}, {"X-Request-ID": "req-invalid-1"}))
NOT_FOUND = step("not_found", api_event("GET", "/nope", None, {"X-Request-ID": "req-404-1"}))
HEALTH = step("health", api_event("GET", "/health", None, {"X-Request-ID": "req-health-1"}))
OK = step("ok", api_event("POST", "/score", quote("prop-ok"), {"X-Request-ID": "req-ok-1"}))
INSANE_ID = step(
    "insane_id", api_event("POST", "/score", quote("prop-ok"), {"X-Request-ID": "bad id\nwith newline"}, gateway_id="gw-id-0001")
)
FALLBACK_1 = step("fallback_1", api_event("POST", "/score", quote("prop-fallback"), {"X-Request-ID": "req-fallback-1"}))
FALLBACK_2 = step("fallback_2", api_event("POST", "/score", quote("prop-fallback"), {"X-Request-ID": "req-fallback-2"}))
SLOW = step("slow", api_event("POST", "/score", quote("prop-slow"), {"X-Request-ID": "req-slow-1"}), timeout_ms=2000)
#: Eleven requests, of which 404, 422 and /health are filtered: eight transactions, five events
#: (crash, two store failures, one fallback warning, the timeout warning).
API_PLAN = [CRASH, STORE_DOWN, STORE_DOWN_HANDLED, INVALID, NOT_FOUND, HEALTH, OK, INSANE_ID, FALLBACK_1, FALLBACK_2, SLOW]


# =============================================================================== the API container


def test_an_unhandled_error_is_one_event_tagged_with_the_request(container):
    c = container()
    outcomes = c.run([CRASH])
    c.settle(lambda r: r.events)
    assert outcomes["crash"]["result"]["statusCode"] == 500
    assert response_headers(outcomes["crash"])["x-request-id"] == "req-crash-1"
    events = tagged(c.receiver.events, "req-crash-1")
    assert len(events) == 1
    tags = events[0]["tags"]
    assert tags["endpoint"] == "/score" and tags["method"] == "POST"
    assert tags["property_id"] == "prop-crash" and tags["user_id"] == "user-123"
    assert events[0]["exception"]["values"][-1]["type"] == "RuntimeError"
    assert events[0]["environment"] == "test" and events[0]["release"] == "pricing@test"


@pytest.mark.parametrize(
    ("plan_step", "request_id", "endpoint"),
    [(STORE_DOWN, "req-learn-1", "/learn"), (STORE_DOWN_HANDLED, "req-learn-2", "/learn-handled")],
)
def test_a_storage_failure_answered_with_503_is_one_event(container, plan_step, request_id, endpoint):
    # Either way of answering 503: raising HTTPException(503), or an exception handler that
    # reports with capture_error.
    c = container()
    outcome = c.run([plan_step])[plan_step["name"]]
    c.settle(lambda r: r.events)
    assert outcome["result"]["statusCode"] == 503
    assert response_headers(outcome)["x-request-id"] == request_id
    events = tagged(c.receiver.events, request_id)
    assert len(events) == 1
    assert events[0]["tags"]["endpoint"] == endpoint
    assert events[0]["tags"]["method"] == "POST"
    assert events[0]["tags"]["property_id"] == "prop-learn"


def test_validation_errors_404s_and_health_checks_send_nothing(container):
    c = container()
    outcomes = c.run([INVALID, NOT_FOUND, HEALTH, OK])  # the last one shows the transport works
    c.settle(lambda r: tagged(r.transactions, "req-ok-1"))
    assert outcomes["invalid"]["result"]["statusCode"] == 422
    assert outcomes["not_found"]["result"]["statusCode"] == 404
    assert outcomes["health"]["result"]["statusCode"] == 200
    assert len(tagged(c.receiver.transactions, "req-ok-1")) == 1
    for request_id in ("req-invalid-1", "req-404-1", "req-health-1"):
        assert tagged(c.receiver.events, request_id) == []
        assert tagged(c.receiver.transactions, request_id) == []


def test_a_successful_request_is_exactly_one_tagged_transaction(container):
    c = container()
    outcomes = c.run([OK])
    c.settle(lambda r: r.transactions)
    assert outcomes["ok"]["result"]["statusCode"] == 200
    transactions = tagged(c.receiver.transactions, "req-ok-1")
    assert len(transactions) == 1
    transaction = transactions[0]
    assert transaction["contexts"]["trace"]["op"] == "http.server"
    assert transaction["transaction"] == "/score"
    assert transaction["tags"]["property_id"] == "prop-ok"
    assert transaction["tags"]["user_id"] == "user-123"
    assert transaction["tags"]["endpoint"] == "/score" and transaction["tags"]["method"] == "POST"
    assert tagged(c.receiver.events, "req-ok-1") == []


@TIMEOUT_WARNING_THREAD
def test_the_lambda_integration_was_active_and_its_duplicate_transaction_dropped(container):
    c = container()
    c.run(API_PLAN)
    c.settle(lambda r: len(r.events) >= 5 and len(r.transactions) >= 8)
    # Proof the integration wrapped the handler: its event processor adds the Lambda context.
    crash = tagged(c.receiver.events, "req-crash-1")[0]
    assert crash["extra"]["lambda"]["function_name"] == "pricing-score"
    assert all(t["contexts"]["trace"]["op"] != "function.aws" for t in c.receiver.transactions)
    assert len(c.receiver.transactions) == 8


@TIMEOUT_WARNING_THREAD
def test_the_timeout_warning_is_one_event_tagged_with_the_request(container):
    c = container()
    outcomes = c.run([SLOW])
    c.settle(lambda r: r.events)
    assert outcomes["slow"]["result"]["statusCode"] == 200  # warned, not timed out
    events = tagged(c.receiver.events, "req-slow-1")
    assert [e["exception"]["values"][-1]["type"] for e in events] == ["ServerlessTimeoutWarning"]
    tags = events[0]["tags"]
    assert tags["property_id"] == "prop-slow" and tags["endpoint"] == "/score" and tags["method"] == "POST"


def test_an_insane_caller_request_id_is_replaced_by_the_gateway_id(container):
    c = container()
    outcomes = c.run([INSANE_ID])
    c.settle(lambda r: r.transactions)
    assert response_headers(outcomes["insane_id"])["x-request-id"] == "gw-id-0001"
    assert len(tagged(c.receiver.transactions, "gw-id-0001")) == 1


def test_a_handled_fallback_is_reported_once_per_container(container):
    c = container()
    outcomes = c.run([FALLBACK_1, FALLBACK_2])
    c.settle(lambda r: r.events)
    assert outcomes["fallback_1"]["result"]["statusCode"] == 200
    assert outcomes["fallback_2"]["result"]["statusCode"] == 200
    warnings = [e for e in c.receiver.events if (e.get("tags") or {}).get("cause") == "model-store"]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["tags"]["request_id"] == "req-fallback-1"
    assert warnings[0]["tags"]["property_id"] == "prop-fallback"


@TIMEOUT_WARNING_THREAD
def test_no_credential_or_secret_leaves_the_process(container):
    c = container()
    c.run(API_PLAN)
    c.settle(lambda r: len(r.events) >= 5 and len(r.transactions) >= 8)
    raw = c.receiver.raw
    assert raw, "nothing received"
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
    assert b"Bearer " + CALLER_BEARER[:8].encode() not in raw
    assert c.receiver.rejected == []


def test_the_log_lines_of_the_failing_request_carry_its_id(container):
    c = container()
    c.run([OK, CRASH])
    records = [json.loads(line) for line in c.logs.splitlines() if line.startswith("{")]
    failing = [r for r in records if r.get("correlation_id") == "req-crash-1"]
    messages = {r.get("message") for r in failing}
    assert {"scoring", "unhandled error"} <= messages
    assert all(r.get("service") == "pricing-score" for r in failing)


# =============================================================================== the retrain container

RETRAIN_PLAN = [
    {"name": "good", "handler": "retrain", "event": scheduled_event("evt-good-1", ["prop-a", "prop-b"])},
    {"name": "broken", "handler": "retrain", "event": scheduled_event("evt-broken-1", ["prop-a", "prop-broken"])},
]


@pytest.fixture
def retrain_run(container):
    c = container()
    outcomes = c.run(RETRAIN_PLAN)
    c.settle(lambda r: len(r.check_ins) >= 4 and r.events)
    return outcomes, c.receiver


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


# =============================================================================== an unreachable Sentry


def test_a_sentry_that_never_answers_costs_only_a_bounded_flush(container):
    c = container(answer=False)
    plan = [
        step("crash", api_event("POST", "/score", quote("prop-crash"))),
        *(step(f"ok{i}", api_event("POST", "/score", quote("prop-ok"))) for i in range(4)),
        step("crash_again", api_event("POST", "/score", quote("prop-crash"))),
    ]
    outcomes = list(c.run(plan).values())
    assert [o["result"]["statusCode"] for o in outcomes] == [500, 200, 200, 200, 200, 500]
    # Unbounded, each invocation would wait out the SDK's 30 s send timeout; bounded but without
    # the cool-down, each would wait the flush timeout (6 s in all). The container pays one
    # flush timeout; the margin absorbs a slow, shared CI machine.
    assert sum(o["seconds"] for o in outcomes) < sentry.FLUSH_TIMEOUT_SECONDS + 3.0, outcomes
    assert c.logs.count("Sentry flush timed out") == 1
