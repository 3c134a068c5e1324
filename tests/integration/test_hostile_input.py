"""Hostile requests to /score and /learn through the real handlers (API Gateway event -> Mangum -> app).

Every case is a 4xx whose message names the problem, never a 5xx, and is counted once in
``pricing_errors_total{endpoint, error_type}`` of the container's registry. Item-level problems in a
/learn batch are the contract's exception: the batch is answered 200 and each bad item is reported
by index and reason and counted in ``pricing_outcomes_invalid_total{reason}``.

No store is reachable here (the suite points AWS at a refusing port): none of these requests may
need one, and a request that tried would show up as a 503, which fails the test.
"""

from __future__ import annotations

import base64
import copy
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from pricing.observability.metrics import METRICS, REGISTRY
from support.apigw_events import invoke, rest_event

NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date()

QUOTE = {
    "entity": {"userId": "user-123", "propertyId": "prop-456"},
    "stay_date": (TODAY + timedelta(days=30)).isoformat(),
    "quote_time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "product": {"type": "standard", "refundable": False, "los": 2},
    "inventory": {"capacity": 50, "remaining": 10, "overbook_limit": 0},
    "market": {"comp_price_p10": 90.0, "comp_price_p50": 120.0, "comp_price_p90": 150.0},
    "context": {"season": "Winter", "day_of_week": 3, "weather": {}},
    "toggles": {"use_ml": True, "use_competitors": True},
}

SIX_MB = 6 * 1024 * 1024


def outcome(**fields) -> dict:
    base = {
        "property_id": "prop-1",
        "timestamp": (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quoted_price": 120.0,
        "accepted": True,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def quote_with(path: str, value) -> dict:
    """QUOTE with the field at dotted ``path`` set to ``value`` (``...`` deletes it)."""
    body = copy.deepcopy(QUOTE)
    node = body
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return body


def raw_quote(replace: str, by: str) -> str:
    text = json.dumps(QUOTE)
    assert replace in text, replace
    return text.replace(replace, by, 1)


def nested(depth: int) -> str:
    return '{"weather": ' * depth + "{}" + "}" * depth


# --------------------------------------------------------------------------------------------- helpers


def errors_counted(endpoint: str, error_type: str) -> float:
    return REGISTRY.get_sample_value("pricing_errors_total", {"endpoint": endpoint, "error_type": error_type}) or 0.0


def requests_counted(endpoint: str, status: int) -> float:
    labels = {"method": "POST", "endpoint": endpoint, "status_code": str(status)}
    return REGISTRY.get_sample_value("pricing_requests_total", labels) or 0.0


def post(handler, path: str, body, headers: dict | None = None, *, base64_body: bytes | None = None):
    event = rest_event("POST", path, body)
    if headers is not None:
        # Replace, not add to, the default Content-Type: some cases send none or another one.
        event["headers"] = dict(headers)
        event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    if base64_body is not None:
        event["body"] = base64.b64encode(base64_body).decode()
        event["isBase64Encoded"] = True
    return invoke(handler, event)


def messages(body) -> str:
    """Every location and message of an error body, as one searchable string."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    return " | ".join(".".join(map(str, d.get("loc", []))) + ": " + str(d.get("msg", "")) for d in detail or [])


@pytest.fixture(scope="module")
def score_handler():
    from score_handler import handler

    return handler


@pytest.fixture(scope="module")
def ingest_handler():
    from ingest_handler import handler

    return handler


def assert_refused(handler, endpoint, body, headers, status, error_type, needle, *, base64_body=None):
    errors_before = errors_counted(endpoint, error_type)
    requests_before = requests_counted(endpoint, status)
    got, out_headers, out = post(handler, endpoint, body, headers, base64_body=base64_body)
    assert got == status, out
    assert out_headers.get("x-request-id"), "every answer carries a request id"
    assert needle.lower() in messages(out).lower(), messages(out)
    # The offending input is not echoed back (it may be megabytes, or personal data).
    assert len(json.dumps(out)) < 2_000
    assert errors_counted(endpoint, error_type) == errors_before + 1
    assert requests_counted(endpoint, status) == requests_before + 1


JSON = {"Content-Type": "application/json"}

# (id, body, headers, status, error_type, needle in the message)
SCORE_CASES = [
    ("not-json", "price my room please", JSON, 422, "invalid_json", "invalid JSON"),
    ("truncated-json", json.dumps(QUOTE)[:-5], JSON, 422, "invalid_json", "invalid JSON"),
    ("empty-body", "", JSON, 422, "validation", "body"),
    ("json-array", "[1, 2, 3]", JSON, 422, "validation", "body"),
    ("json-string", '"hello"', JSON, 422, "validation", "body"),
    ("text-plain", json.dumps(QUOTE), {"Content-Type": "text/plain"}, 422, "unsupported_media_type", "Content-Type"),
    (
        "form-encoded",
        "entity=x&stay_date=y",
        {"Content-Type": "application/x-www-form-urlencoded"},
        422,
        "unsupported_media_type",
        "Content-Type",
    ),
    ("xml", "<quote/>", {"Content-Type": "application/xml"}, 422, "unsupported_media_type", "Content-Type"),
    ("capacity-as-string", quote_with("inventory.capacity", "50"), JSON, 422, "validation", "capacity"),
    ("capacity-as-float", quote_with("inventory.capacity", 50.5), JSON, 422, "validation", "capacity"),
    ("entity-as-list", quote_with("entity", ["user-123", "prop-456"]), JSON, 422, "validation", "entity"),
    ("stay-date-as-number", quote_with("stay_date", 20261224), JSON, 422, "validation", "stay_date"),
    ("toggle-as-int", quote_with("toggles.use_ml", 1), JSON, 422, "validation", "use_ml"),
    ("price-as-string", quote_with("market.comp_price_p50", "120"), JSON, 422, "validation", "comp_price_p50"),
    ("price-as-bool", quote_with("costs", {"min_price": True}), JSON, 422, "validation", "min_price"),
    ("nan", raw_quote('"comp_price_p50": 120.0', '"comp_price_p50": NaN'), JSON, 422, "invalid_json", "NaN"),
    ("infinity", raw_quote('"comp_price_p90": 150.0', '"comp_price_p90": Infinity'), JSON, 422, "invalid_json", "Infinity"),
    ("minus-infinity", raw_quote('"comp_price_p10": 90.0', '"comp_price_p10": -Infinity'), JSON, 422, "invalid_json", "Infinity"),
    ("1e309", raw_quote('"comp_price_p90": 150.0', '"comp_price_p90": 1e309'), JSON, 422, "validation", "comp_price_p90"),
    ("grid-1e309", raw_quote('"toggles"', '"allowed_price_grid": [100, 1e309], "toggles"'), JSON, 422, "validation", "allowed_price_grid"),
    ("negative-price", quote_with("market.comp_price_p50", -120.0), JSON, 422, "validation", "comp_price_p50"),
    ("zero-price", quote_with("costs", {"min_price": 0}), JSON, 422, "validation", "min_price"),
    ("zero-in-grid", quote_with("allowed_price_grid", [0, 100.0]), JSON, 422, "validation", "allowed_price_grid"),
    ("negative-max", quote_with("costs", {"max_price": -1}), JSON, 422, "validation", "max_price"),
    ("sub-cent-price", quote_with("market", {"comp_price_p50": 1e-300}), JSON, 422, "validation", "comp_price_p50"),
    ("sub-cent-bounds", quote_with("costs", {"min_price": 0.011, "max_price": 0.019}), JSON, 422, "validation", "costs"),
    ("overflowing-price", quote_with("market", {"comp_price_p50": 1.7e308}), JSON, 422, "validation", "comp_price_p50"),
    ("overflowing-min", quote_with("costs", {"min_price": 1e300}), JSON, 422, "validation", "min_price"),
    ("overflowing-grid", quote_with("allowed_price_grid", [1.79e308]), JSON, 422, "validation", "allowed_price_grid"),
    ("impossible-date", quote_with("stay_date", "2026-02-30"), JSON, 422, "validation", "stay_date"),
    ("european-date", quote_with("stay_date", "24/12/2026"), JSON, 422, "validation", "stay_date"),
    ("five-digit-year", quote_with("stay_date", "99999-01-01"), JSON, 422, "validation", "stay_date"),
    ("year-zero", quote_with("stay_date", "0000-01-01"), JSON, 422, "validation", "stay_date"),
    ("stay-far-future", quote_with("stay_date", "9999-12-31"), JSON, 422, "validation", "stay_date"),
    ("stay-before-quote", quote_with("stay_date", (TODAY - timedelta(days=1)).isoformat()), JSON, 422, "validation", "stay_date"),
    ("quote-time-garbage", quote_with("quote_time", "yesterday at noon"), JSON, 422, "validation", "quote_time"),
    ("quote-time-hour-25", quote_with("quote_time", "2026-11-26T25:00:00Z"), JSON, 422, "validation", "quote_time"),
    ("quote-time-naive", quote_with("quote_time", NOW.strftime("%Y-%m-%dT%H:%M:%S")), JSON, 422, "validation", "quote_time"),
    ("quote-time-year-9999", quote_with("quote_time", "9999-12-31T23:59:59-23:59"), JSON, 422, "validation", "stay_date"),
    ("deep-nesting", raw_quote('"weather": {}', '"weather": ' + nested(40)), JSON, 422, "invalid_json", "nesting"),
    ("very-deep-nesting", raw_quote('"weather": {}', '"weather": ' + "[" * 200_000 + "]" * 200_000), JSON, 422, "invalid_json", "nesting"),
    ("6mb-body", raw_quote('"weather": {}', '"weather": {"pad": "' + "x" * SIX_MB + '"}'), JSON, 413, "payload_too_large", "exceeds"),
    ("6mb-declared", json.dumps(QUOTE), {**JSON, "Content-Length": str(SIX_MB + 1)}, 413, "payload_too_large", "exceeds"),
    ("nul-in-property-id", quote_with("entity.propertyId", "prop\x00456"), JSON, 422, "validation", "propertyId"),
    ("newline-in-property-id", quote_with("entity.propertyId", "prop-456\n"), JSON, 422, "validation", "propertyId"),
    ("escape-in-user-id", quote_with("entity.userId", "user\x1b[2J"), JSON, 422, "validation", "userId"),
    ("nul-in-user-id", quote_with("entity.userId", "\x00"), JSON, 422, "validation", "userId"),
    ("long-property-id", quote_with("entity.propertyId", "p" * 129), JSON, 422, "validation", "propertyId"),
    ("huge-user-id", quote_with("entity.userId", "u" * 1_000_000), JSON, 422, "validation", "userId"),
    ("empty-user-id", quote_with("entity.userId", ""), JSON, 422, "validation", "userId"),
    ("duplicate-key", raw_quote('"stay_date"', '"stay_date": "2026-12-25", "stay_date"'), JSON, 422, "invalid_json", "duplicate key"),
    ("nested-duplicate-key", raw_quote('"capacity": 50', '"capacity": 50, "capacity": 5'), JSON, 422, "invalid_json", "duplicate key"),
    ("huge-integer", raw_quote('"capacity": 50', '"capacity": ' + "9" * 5000), JSON, 422, "invalid_json", "invalid JSON"),
    ("lone-surrogate", raw_quote('"user-123"', '"user-\\ud800"'), JSON, 422, "validation", "userId"),
]


@pytest.mark.parametrize("body,headers,status,error_type,needle", [c[1:] for c in SCORE_CASES], ids=[c[0] for c in SCORE_CASES])
def test_hostile_score_request_is_a_counted_4xx_naming_the_problem(score_handler, body, headers, status, error_type, needle):
    assert_refused(score_handler, "/score", body, headers, status, error_type, needle)


def test_a_body_that_is_not_utf8_is_a_422(score_handler):
    assert_refused(score_handler, "/score", None, JSON, 422, "invalid_json", "UTF-8", base64_body=b'{"entity": "\xff\xfe"}')


def test_json_with_a_charset_and_odd_case_is_still_json(score_handler):
    status, _, out = post(score_handler, "/score", QUOTE, {"content-type": "Application/JSON; charset=UTF-8"})
    assert status == 200, out
    status, _, out = post(score_handler, "/score", QUOTE, {"Content-Type": "application/vnd.pricing+json"})
    assert status == 200, out


def test_a_request_without_content_type_is_read_as_json(score_handler):
    # FastAPI's own rule, which callers of the old service rely on: no Content-Type means JSON.
    status, _, out = post(score_handler, "/score", QUOTE, {})
    assert status == 200, out


def test_the_wrong_method_is_a_counted_405(score_handler):
    before = errors_counted("/score", "method_not_allowed")
    status, _, out = invoke(score_handler, rest_event("GET", "/score"))
    assert status == 405 and "not allowed" in messages(out).lower()
    assert errors_counted("/score", "method_not_allowed") == before + 1


def test_prices_at_the_edges_of_the_accepted_range_are_priced_in_cents(score_handler):
    for market in ({"comp_price_p50": 0.01}, {"comp_price_p50": 1e9}):
        status, _, out = post(score_handler, "/score", quote_with("market", market), JSON)
        assert status == 200, out
        prices = [out["price"], *out["price_grid"], out["conf_band"]["lower"], out["conf_band"]["upper"]]
        assert all(isinstance(p, float) and p >= 0.01 and p == round(p, 2) for p in prices), out


# ------------------------------------------------------------------------------------------------ /learn

BATCH = {"batch": [outcome(quote_id="hostile-0")]}

LEARN_CASES = [
    ("not-json", "outcomes!", JSON, 422, "invalid_json", "invalid JSON"),
    ("text-plain", json.dumps(BATCH), {"Content-Type": "text/plain"}, 422, "unsupported_media_type", "Content-Type"),
    ("no-batch", '{"outcomes": []}', JSON, 422, "validation", "batch"),
    ("batch-not-a-list", '{"batch": {"property_id": "prop-1"}}', JSON, 422, "validation", "batch"),
    ("batch-null", '{"batch": null}', JSON, 422, "validation", "batch"),
    ("empty-batch", '{"batch": []}', JSON, 422, "validation", "batch"),
    ("10001-outcomes", {"batch": [outcome(quote_id=f"q{i}") for i in range(10_001)]}, JSON, 422, "validation", "batch"),
    ("nan", json.dumps(BATCH).replace("120.0", "NaN"), JSON, 422, "invalid_json", "NaN"),
    ("infinity", json.dumps(BATCH).replace("120.0", "-Infinity"), JSON, 422, "invalid_json", "Infinity"),
    (
        "duplicate-key",
        json.dumps(BATCH).replace('"accepted": true', '"accepted": true, "accepted": false'),
        JSON,
        422,
        "invalid_json",
        "duplicate key",
    ),
    (
        "deep-nesting",
        json.dumps({"batch": [outcome(context={})]}).replace('"context": {}', '"context": ' + nested(40)),
        JSON,
        422,
        "invalid_json",
        "nesting",
    ),
    (
        "6mb-body",
        {"batch": [outcome(quote_id=f"q{i}", context={"pad": "x" * 700}) for i in range(8_000)]},
        JSON,
        413,
        "payload_too_large",
        "exceeds",
    ),
]


@pytest.mark.parametrize("body,headers,status,error_type,needle", [c[1:] for c in LEARN_CASES], ids=[c[0] for c in LEARN_CASES])
def test_hostile_learn_request_is_a_counted_4xx_naming_the_problem(ingest_handler, body, headers, status, error_type, needle):
    assert_refused(ingest_handler, "/learn", body, headers, status, error_type, needle)


# Items the batch refuses one by one: (id, item, reason). Nothing here is valid, so nothing is stored
# and no store is needed; each is reported by index and counted under its reason.
LEARN_ITEM_CASES = [
    ("negative-price", outcome(quoted_price=-120.0), "non_positive_price"),
    ("zero-price", outcome(quoted_price=0), "non_positive_price"),
    ("zero-final-price", outcome(final_price=0.0), "non_positive_price"),
    ("1e309-price", "RAW:1e309", "non_finite_number"),
    ("price-as-string", outcome(quoted_price="120"), "invalid_type"),
    ("accepted-as-string", outcome(accepted="true"), "invalid_type"),
    ("accepted-as-int", outcome(accepted=1), "invalid_type"),
    ("timestamp-garbage", outcome(timestamp="last tuesday"), "invalid_timestamp"),
    ("timestamp-naive", outcome(timestamp=NOW.strftime("%Y-%m-%dT%H:%M:%S")), "invalid_timestamp"),
    ("timestamp-month-13", outcome(timestamp="2026-13-01T00:00:00Z"), "invalid_timestamp"),
    ("timestamp-future", outcome(timestamp=(NOW + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")), "future_timestamp"),
    ("timestamp-year-1", outcome(timestamp="0001-01-01T00:00:00Z"), "too_old"),
    ("stay-date-impossible", outcome(stay_date="2026-02-30"), "invalid_date"),
    ("property-id-with-nul", outcome(property_id="prop\x001"), "invalid_property_id"),
    ("property-id-too-long", outcome(property_id="p" * 129), "invalid_property_id"),
    ("property-id-as-list", outcome(property_id=["prop-1"]), "invalid_type"),
    ("property-id-as-object", outcome(property_id={"id": "prop-1"}), "invalid_type"),
    ("quote-id-with-control", outcome(quote_id="q\x1b[2J"), "invalid_quote_id"),
    ("quote-id-huge", outcome(quote_id="q" * 100_000), "invalid_quote_id"),
    ("item-not-an-object", [1, 2, 3], "not_an_object"),
    ("missing-price", outcome(quoted_price=None), "missing_field"),
]


def invalid_counted(reason: str) -> float:
    """``pricing_outcomes_invalid_total`` for ``reason``, over every property label."""
    return METRICS.sample_total("pricing_outcomes_invalid_total", reason=reason)


def test_hostile_outcomes_are_refused_one_by_one_and_counted_by_reason(ingest_handler):
    items = [case[1] for case in LEARN_ITEM_CASES]
    text = json.dumps({"batch": ["__RAW__" if i == "RAW:1e309" else i for i in items]})
    text = text.replace('"__RAW__"', json.dumps(outcome()).replace("120.0", "1e309"))
    expected = Counter(case[2] for case in LEARN_ITEM_CASES)
    before = {reason: invalid_counted(reason) for reason in expected}
    status, _, out = post(ingest_handler, "/learn", text, JSON)
    assert status == 200, out
    assert out["processed"] == 0 and out["invalid"] == len(items)
    assert [e["index"] for e in out["errors"]] == list(range(len(items)))
    got = {LEARN_ITEM_CASES[e["index"]][0]: e["reason"] for e in out["errors"]}
    assert got == {case[0]: case[2] for case in LEARN_ITEM_CASES}
    assert len(json.dumps(out)) < 10_000  # reasons, not the items, come back
    assert {reason: invalid_counted(reason) - before[reason] for reason in expected} == dict(expected)


def test_credentials_a_caller_sends_never_reach_metric_labels_or_the_answer(score_handler):
    secret = "caller-key-7d1e9a3b5c"
    headers = {**JSON, "X-API-Key": secret, "Authorization": f"Bearer {secret}", "Cookie": f"session={secret}"}
    status, out_headers, out = post(score_handler, "/score", quote_with("entity.userId", "u\x00" + secret), headers)
    assert status == 422 and secret not in json.dumps(out) and secret not in json.dumps(out_headers)
    status, _, _ = post(score_handler, "/score", QUOTE, headers)
    assert status == 200
    labels = {v for group in (None, *METRICS.groups()) for m in METRICS.collect(group) for s in m.samples for v in s.labels.values()} | set(
        METRICS.groups()
    )
    assert not any(secret in v for v in labels)


def test_hostile_requests_never_crash_or_restart_a_lambda_container(tmp_path):
    """The worst of the table through the built functions in real local Lambda containers."""
    from local.apigw import build_event
    from local.template import ApiRoute
    from support.local_stack import lambda_containers

    def event(function: str, path: str, body: bytes, content_type: str = "application/json") -> dict:
        return build_event(
            method="POST",
            raw_path=path,
            headers=[("Content-Type", content_type)],
            body=body,
            route=ApiRoute(function, "POST", path),
            path_parameters=None,
            stage="dev",
        )

    quote = json.dumps(QUOTE)
    cases = {
        "ScoreFunction": [
            (quote.replace('"weather": {}', '"weather": ' + "[" * 200_000 + "]" * 200_000), 422),
            (quote.replace('"comp_price_p50": 120.0', '"comp_price_p50": NaN'), 422),
            (quote.replace('"capacity": 50', '"capacity": ' + "9" * 5000), 422),
            (quote.replace('"user-123"', '"user-\\u0000"'), 422),
            ("\xff\xfe not utf-8", 422),
            (quote.replace('"prop-456"', '"' + "p" * 5_000_000 + '"'), 422),
        ],
        "IngestFunction": [
            (json.dumps({"batch": [outcome(property_id=["list"]), outcome(property_id={"o": 1})]}), 200),
            (json.dumps({"batch": [outcome(quote_id=f"q{i}") for i in range(10_001)]}), 422),
            ('{"batch": [' + "[" * 100_000 + "]" * 100_000 + "]}", 422),
        ],
    }
    for function, bodies in cases.items():
        path = "/score" if function == "ScoreFunction" else "/learn"
        # No request here may need a store; were one asked, it would meet a refusing port, never AWS.
        refusing = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
        with lambda_containers(function, env=refusing, log_dir=tmp_path) as containers:
            container = containers.containers[0]
            for i, (body, status) in enumerate(bodies, start=1):
                raw = body.encode("latin-1") if body.startswith("\xff") else body.encode()
                result = containers.invoke(event(function, path, raw))
                assert result.ok and result.outcome == "response", (function, i, result.payload[:300])
                assert result.json()["statusCode"] == status, (function, i, result.json()["body"][:300])
                assert (container.alive and container.invocations == i and not result.cold_start) or i == 1


# ------------------------------------------------------------------------------------- issue 12

MARKER = "zq7Xmarker"  # a string no error message could contain by itself

ECHO_CASES = [
    ("content-type", "/score", json.dumps(QUOTE), {"Content-Type": f"text/{MARKER}; charset={MARKER}"}),
    ("learn-content-type", "/learn", json.dumps(BATCH), {"Content-Type": f"application/x-{MARKER}"}),
    ("duplicate-key", "/score", raw_quote('"stay_date"', f'"{MARKER}": 1, "{MARKER}": 2, "stay_date"'), JSON),
    (
        "learn-duplicate-key",
        "/learn",
        json.dumps(BATCH).replace('"accepted": true', f'"accepted": true, "{MARKER}": 1, "{MARKER}": 2'),
        JSON,
    ),
    ("bad-escape", "/score", raw_quote('"user-123"', f'"user\\\\{MARKER[0]}\\{MARKER}"'), JSON),
    ("bad-literal", "/score", raw_quote('"capacity": 50', f'"capacity": {MARKER}'), JSON),
    ("bad-value", "/score", quote_with("entity.userId", "\x00" + MARKER), JSON),
    ("bad-date", "/score", quote_with("stay_date", MARKER), JSON),
    ("bad-toggle", "/score", quote_with("toggles.use_ml", MARKER), JSON),
    ("weather-key-nan", "/score", raw_quote('"weather": {}', f'"weather": {{"{MARKER}": NaN}}'), JSON),
    ("deep-under-key", "/score", raw_quote('"weather": {}', f'"weather": {{"{MARKER}": ' + nested(40) + "}"), JSON),
    ("not-utf8-content-type", "/learn", json.dumps(BATCH), {"Content-Type": f"{MARKER}/\u00e9"}),
    ("bad-batch", "/learn", json.dumps({"batch": MARKER}), JSON),
]


@pytest.mark.parametrize("path,body,headers", [c[1:] for c in ECHO_CASES], ids=[c[0] for c in ECHO_CASES])
def test_error_bodies_never_contain_request_bytes(score_handler, ingest_handler, path, body, headers):
    handler = score_handler if path == "/score" else ingest_handler
    status, out_headers, out = post(handler, path, body, headers)
    assert 400 <= status < 500, out
    assert MARKER.lower() not in json.dumps(out).lower(), out
    assert MARKER.lower() not in json.dumps(out_headers).lower()


def test_a_rules_price_from_competitor_prices_at_the_cap_stays_within_it(score_handler):
    market = {"comp_price_p10": 1e10, "comp_price_p50": 1e10, "comp_price_p90": 1e10}
    body = quote_with("market", market)
    body["toggles"] = {"use_ml": False, "aggressive": True}
    body["product"]["refundable"] = True
    status, _, out = post(score_handler, "/score", body, JSON)
    assert status == 200, out
    prices = [out["price"], *out["price_grid"], out["conf_band"]["lower"], out["conf_band"]["upper"]]
    assert out["price"] == 1e10 and out["safety"]["clamped"] is True
    assert all(0.01 <= p <= 1e10 for p in prices), prices


@pytest.mark.parametrize("pid", [".", "..", "..."])
def test_a_property_id_of_dots_is_a_422(score_handler, pid):
    assert_refused(score_handler, "/score", quote_with("entity.propertyId", pid), JSON, 422, "validation", "propertyId")


def test_property_ids_with_dots_among_other_characters_are_priced(score_handler):
    status, _, out = post(score_handler, "/score", quote_with("entity.propertyId", "hotel.v2..b"), JSON)
    assert status == 200, out
