"""The /score and /health contract through the real handler: API Gateway event -> Mangum -> FastAPI.

No store is reachable here (the suite points AWS at a refusing port), so these tests also prove
that scoring answers by rules, and says so, when storage is down.
"""

from __future__ import annotations

import copy
import json

import pytest

from support.apigw_events import invoke, rest_event

EXAMPLE = {
    "entity": {"userId": "user-123", "propertyId": "prop-456"},
    "stay_date": "2026-12-24",
    "quote_time": "2026-11-26T12:00:00Z",
    "product": {"type": "standard", "refundable": False, "los": 2},
    "inventory": {"capacity": 50, "remaining": 10, "overbook_limit": 0},
    "market": {"comp_price_p10": 90.0, "comp_price_p50": 120.0, "comp_price_p90": 150.0},
    "context": {"season": "Winter", "day_of_week": 3, "weather": {}},
    "toggles": {"aggressive": False, "conservative": False, "use_ml": True, "use_competitors": True, "apply_seasonality": True},
    "allowed_price_grid": None,
}


@pytest.fixture(scope="module")
def handler():
    from score_handler import handler

    return handler


def score(handler, body, headers=None):
    return invoke(handler, rest_event("POST", "/score", body, headers))


def with_(path: str, value):
    body = copy.deepcopy(EXAMPLE)
    node = body
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return body


def test_spec_example_returns_every_field(handler):
    status, headers, body = score(handler, EXAMPLE, {"X-Request-ID": "caller-id-1"})
    assert status == 200, body
    assert headers["x-request-id"] == "caller-id-1"
    assert set(body) == {"price", "price_grid", "conf_band", "expected", "reasons", "safety"}
    assert body["price"] == round(body["price"], 2) and body["price"] > 0
    assert body["price_grid"] == sorted(body["price_grid"]) and body["price"] in body["price_grid"]
    assert body["conf_band"]["lower"] <= body["price"] <= body["conf_band"]["upper"]
    assert {"occ_now", "occ_end_bucket"} <= set(body["expected"])
    assert set(body["safety"]) == {
        "pricing_method",
        "ab_variant",
        "experiment_id",
        "model_version",
        "quote_id",
        "exploration",
        "holdback",
        "competitor_data",
        "clamped",
    }
    assert body["safety"]["pricing_method"] == "rule_based"  # no store reachable: rules, and why
    assert any("Fell back to rule-based" in r for r in body["reasons"])
    assert body["safety"]["competitor_data"]["p50"] == 120.0


def test_request_id_is_generated_from_the_gateway_when_absent_or_insane(handler):
    event = rest_event("POST", "/score", EXAMPLE)
    status, headers, _ = invoke(handler, event)
    assert status == 200 and headers["x-request-id"] == event["requestContext"]["requestId"]
    _, headers, _ = score(handler, EXAMPLE, {"X-Request-ID": "bad id with spaces\n"})
    assert headers["x-request-id"] != "bad id with spaces\n" and " " not in headers["x-request-id"]


def test_guardrails_hold_for_min_max_and_allowed_grid(handler):
    body = with_("costs", {"min_price": 130.0, "max_price": 131.5, "fixed": 12})
    _, _, out = score(handler, body)
    assert 130.0 <= out["price"] <= 131.5
    grid = [99.0, 109.0, 129.0, 149.0]
    _, _, out = score(handler, with_("allowed_price_grid", grid))
    assert out["price"] in grid


@pytest.mark.parametrize(
    "body,field",
    [
        (with_("entity", ...), "entity"),
        (with_("inventory.capacity", 0), "capacity"),
        (with_("inventory.remaining", 60), "inventory"),
        (with_("entity.propertyId", "bad id!"), "propertyId"),
        (with_("stay_date", "2026-13-01"), "stay_date"),
        (with_("stay_date", "2020-01-01"), "stay_date"),
        (with_("quote_time", "2026-11-26T12:00:00"), "quote_time"),
        (with_("market.comp_price_p10", 200.0), "market"),
        (with_("toggles.aggressive", True) | {"toggles": {"aggressive": True, "conservative": True}}, "toggles"),
        (with_("toggles.use_ml", "yes"), "use_ml"),
        (with_("allowed_price_grid", [0.0, 10.0]), "allowed_price_grid"),
        (with_("allowed_price_grid", [1.0] * 501), "allowed_price_grid"),
        (with_("costs", {"min_price": 200.0, "max_price": 100.0}), "costs"),
        (with_("product.los", 0), "los"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(handler, body, field):
    status, headers, out = score(handler, body)
    assert status == 422, out
    assert "x-request-id" in headers
    named = " ".join(".".join(map(str, d["loc"])) + " " + d["msg"] for d in out["detail"])
    assert field in named


@pytest.mark.parametrize(
    "raw,needle",
    [
        ('{"entity": {"userId": "u", "propertyId": "p"}, "entity": {}}', "duplicate key"),
        ('{"x": NaN}', "NaN"),
        ('{"x": Infinity}', "Infinity"),
        ("[" * 100 + "]" * 100, "nesting"),
        ("not json", "invalid JSON"),
    ],
)
def test_malformed_json_is_a_422_saying_why(handler, raw, needle):
    status, _, out = score(handler, raw)
    assert status == 422 and needle in out["detail"][0]["msg"]


def test_number_overflowing_to_infinity_is_rejected_not_priced(handler):
    raw = json.dumps(EXAMPLE).replace('"comp_price_p10": 90.0', '"comp_price_p10": 1e309')
    status, _, out = score(handler, raw)
    assert status == 422 and "comp_price_p10" in json.dumps(out)


def test_oversized_body_is_a_413(handler):
    status, _, out = score(handler, '{"pad": "' + "x" * (6 * 1024 * 1024) + '"}')
    assert status == 413 and "exceeds" in out["detail"][0]["msg"]


def test_unknown_route_is_a_404_with_request_id(handler):
    status, headers, _ = invoke(handler, rest_event("GET", "/nope"))
    assert status == 404 and headers.get("x-request-id")


def test_health_answers_the_contract(handler):
    status, _, body = invoke(handler, rest_event("GET", "/health"))
    assert status == 200
    assert set(body) == {"status", "model_loaded", "timestamp", "version", "uptime_seconds"} and body["status"] == "healthy"
    assert body["uptime_seconds"] >= 0


def test_synthetic_check_prices_a_canary(handler):
    from support.apigw_events import FakeContext

    out = handler({"synthetic": "health"}, FakeContext())
    assert out["status"] == "healthy" and out["price"] > 0
