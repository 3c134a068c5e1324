"""ScoreFunction registers the model and experiment routes on the first request that may need one.

A container that only prices and answers /health never builds them (FastAPI's work per route is
some 10 ms of a cold start); the first request for any other path finds every route, its metrics
under the route's template, and /openapi.json lists the whole contract. Each test imports the app
afresh, as a new container does, whatever this process served before.
"""

from __future__ import annotations

import importlib
import sys

import pytest

from support.apigw_events import invoke, rest_event

QUOTE = {
    "entity": {"userId": "user-1", "propertyId": "prop-1"},
    "stay_date": "2026-12-24",
    "quote_time": "2026-11-26T12:00:00Z",
    "inventory": {"capacity": 50, "remaining": 10},
}
SCORING_PATHS = {"/openapi.json", "/score", "/health"}
# ScoreFunction's routes in the wire contract (spec/API.md), as its OpenAPI paths name them.
CONTRACT = {
    ("post", "/score"),
    ("get", "/health"),
    ("get", "/"),
    ("get", "/model/info"),
    ("get", "/model/list"),
    ("get", "/model/registry"),
    ("get", "/model/metrics/{property_id}"),
    ("post", "/ab/experiments"),
    ("get", "/ab/experiments"),
    ("get", "/ab/experiments/{experiment_id}/results"),
    ("post", "/ab/experiments/{experiment_id}/stop"),
}


@pytest.fixture
def score_app(monkeypatch):
    import pricing.api

    monkeypatch.delitem(sys.modules, "pricing.api.score_app", raising=False)
    monkeypatch.delattr(pricing.api, "score_app", raising=False)
    return importlib.import_module("pricing.api.score_app")


def route_paths(app) -> set[str]:
    return {route.path for route in app.routes}


def listed(handler) -> set[tuple[str, str]]:
    status, _, schema = invoke(handler, rest_event("GET", "/openapi.json"))
    assert status == 200, schema
    return {(method, path) for path, operations in schema["paths"].items() for method in operations}


def test_pricing_and_health_never_register_the_other_routes(score_app):
    for _ in range(2):
        assert invoke(score_app.handler, rest_event("POST", "/score", QUOTE))[0] == 200
        assert invoke(score_app.handler, rest_event("GET", "/health"))[0] == 200
    assert route_paths(score_app.app) == SCORING_PATHS


def test_the_first_other_request_finds_its_route_and_its_metrics_name_it(score_app):
    from pricing.observability.metrics import REGISTRY

    invoke(score_app.handler, rest_event("POST", "/score", QUOTE))
    labels = {"method": "GET", "endpoint": "/model/list", "status_code": "503"}  # no store reachable here
    before = REGISTRY.get_sample_value("pricing_requests_total", labels) or 0.0
    status, _, body = invoke(score_app.handler, rest_event("GET", "/model/list"))
    assert status == 503, body
    assert REGISTRY.get_sample_value("pricing_requests_total", labels) == before + 1
    assert [route.path for route in score_app.app.routes][:3] == ["/openapi.json", "/score", "/health"]  # /score found first
    assert listed(score_app.handler) == CONTRACT


def test_a_first_openapi_json_lists_the_whole_contract(score_app):
    built_before = score_app.app.openapi()  # as the fuzz tests build it: no request yet
    assert set(built_before["paths"]) == {"/score", "/health"}
    assert listed(score_app.handler) == CONTRACT


def test_an_unknown_path_registers_them_too(score_app):
    status, headers, _ = invoke(score_app.handler, rest_event("GET", "/nope"))
    assert status == 404 and headers.get("x-request-id")
    assert route_paths(score_app.app) > SCORING_PATHS
