"""Extreme but finite numbers at the domain's edges: no free rooms, no infinite prices."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pricing.api.common import InvalidJSON, is_json_media_type, parse_strict_json
from pricing.competitors import parse_payload
from pricing.domain.guardrails import MAX_PRICE, MIN_PRICE, Guardrails


@pytest.mark.parametrize("price", [0.0, 1e-300, 0.004, 0.005, -5.0])
def test_rounding_never_yields_a_price_below_one_cent(price):
    assert Guardrails().enforce(price)[0] == MIN_PRICE


def test_a_tiny_rule_price_inside_bounds_given_in_cents_stays_in_them():
    assert Guardrails(min_price=0.01, max_price=0.02).enforce(1e-9)[0] == 0.01


@pytest.mark.parametrize("p50", [1e308, 1.7e308, MAX_PRICE * 10, 1e-300, 0.001])
def test_a_backend_answer_outside_the_price_range_is_not_used(p50):
    payload = {"success": True, "data": {"priceP50": p50, "competitorCount": 3}}
    assert parse_payload(payload, datetime.now(UTC)) is None


def test_a_backend_answer_at_the_edges_of_the_range_is_used():
    payload = {"success": True, "data": {"priceP10": MIN_PRICE, "priceP50": MAX_PRICE, "priceP90": MAX_PRICE}}
    assert parse_payload(payload, datetime.now(UTC)).p50 == MAX_PRICE


def test_an_integer_beyond_the_digit_limit_is_invalid_json_not_a_crash():
    with pytest.raises(InvalidJSON, match="invalid JSON"):
        parse_strict_json(b'{"capacity": ' + b"9" * 5000 + b"}")


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, True),
        ("", True),
        ("application/json", True),
        ("Application/JSON; charset=UTF-8", True),
        ("application/problem+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("text/json+", False),
        ("application/jsonp", False),
    ],
)
def test_json_media_types(value, expected):
    assert is_json_media_type(value) is expected
