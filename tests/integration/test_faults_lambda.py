"""Faults around the built functions in real local Lambda containers (awslambdaric, Runtime API).

Every dependency that can be unreachable is: S3/DynamoDB, the competitor backend, the Pushgateway
and Sentry all accept connections and never answer. The container must keep answering within
its deadline, and keep living (no timeout kill, no crash) for the next invocation.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from local.apigw import build_event
from local.stack import template_for
from local.template import ApiRoute, SamTemplate
from support.faults import CompetitorBackend
from support.local_stack import built_artifacts, lambda_containers, require_function_build
from support.promstack import SilentServer

NOW = datetime.now(UTC).replace(microsecond=0)


def api_event(function: str, path: str, body: dict) -> dict:
    return build_event(
        method="POST",
        raw_path=path,
        headers=[("Content-Type", "application/json")],
        body=json.dumps(body).encode(),
        route=ApiRoute(function, "POST", path),
        path_parameters=None,
        stage="dev",
    )


def function_with_timeout(logical_id: str, seconds: int):
    build_dir = built_artifacts()
    require_function_build(build_dir, logical_id)
    function = SamTemplate(template_for(build_dir), region="us-east-1").function(logical_id, build_dir)
    return dataclasses.replace(function, timeout=seconds)


@pytest.fixture
def unreachable():
    """Four servers that accept connections and never answer."""
    with SilentServer() as aws, SilentServer() as pushgateway, SilentServer() as sentry, CompetitorBackend("hang") as backend:
        yield {
            "AWS_ENDPOINT_URL": aws.url,
            "PUSHGATEWAY_URL": pushgateway.url,
            "SENTRY_DSN": f"http://0123456789abcdef0123456789abcdef@127.0.0.1:{sentry.port}/1",
            "BACKEND_API_URL": backend.url,
        }


def test_score_answers_by_rules_within_its_deadline_with_every_dependency_hung(unreachable, tmp_path):
    # A 5 s timeout instead of the template's 10 s: the work a quote can wait for is bounded well
    # inside even that (stores ~0.8 s each, backend 0.3 s, push 0.25 s, Sentry flush bounded).
    function = function_with_timeout("ScoreFunction", 5)
    quote = {
        "entity": {"userId": "u-1", "propertyId": "hung-1"},
        "stay_date": (NOW.date() + timedelta(days=12)).isoformat(),
        "quote_time": NOW.isoformat(),
        "inventory": {"capacity": 30, "remaining": 11},
    }
    with lambda_containers(function, env=unreachable, log_dir=tmp_path) as containers:
        for i in range(3):  # cold, then warm: the same container keeps answering
            result = containers.invoke(
                api_event("ScoreFunction", "/score", {**quote, "entity": {"userId": "u-1", "propertyId": f"hung-{i}"}})
            )
            assert result.outcome == "response" and result.ok, result.payload[:300]
            response = result.json()
            assert response["statusCode"] == 200, response
            answer = json.loads(response["body"])
            assert answer["safety"]["pricing_method"] == "rule_based"
            assert answer["safety"]["competitor_data"] is None
            assert any("model store unavailable" in r for r in answer["reasons"])
        assert containers.containers[0].alive and containers.containers[0].invocations == 3


def test_learn_near_its_deadline_refuses_with_503_instead_of_being_killed(unreachable, tmp_path):
    # With the store hung, the durable client's own retries would outlast this 4 s timeout: the
    # function must answer 503 before Lambda kills it (which the caller would see as a 502/504).
    function = function_with_timeout("IngestFunction", 4)
    batch = [
        {
            "property_id": "hung-1",
            "timestamp": (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quoted_price": 120.0,
            "accepted": True,
            "quote_id": f"deadline-{i}",
        }
        for i in range(30)
    ]
    with lambda_containers(function, env=unreachable, log_dir=tmp_path) as containers:
        for _ in range(2):
            result = containers.invoke(api_event("IngestFunction", "/learn", {"batch": batch}))
            assert result.outcome == "response", (result.outcome, result.payload[:300])
            response = result.json()
            assert response["statusCode"] == 503, response
            headers = {k.lower(): v for k, v in response["headers"].items()}
            assert headers.get("retry-after")
            assert "nothing from this batch is acknowledged" in json.loads(response["body"])["detail"]
        assert containers.containers[0].alive
