"""Property-based fuzzing of /score and /learn from the apps' own OpenAPI schemas (schemathesis).

Schemathesis generates requests that follow the schema (positive) and requests that break it on
purpose (negative); each is sent as an API Gateway proxy event through the function's real handler
(Mangum, the request middleware, the app), as in Lambda. Whatever comes in:

* the answer is never a 5xx;
* a 4xx carries a JSON ``detail`` with a non-empty message for every problem;
* a 200 keeps the contract (a price in cents inside its own grid and band; a /learn tally that
  accounts for every item of the batch).

/learn stores what is valid, so it runs against a moto server with the template's tables.

Examples are bounded and derandomised (same examples every run, well under a minute);
``FUZZ_MAX_EXAMPLES`` raises the count for a deeper run by hand.
"""

from __future__ import annotations

import base64
import json
import math
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from pricing.services.ingestion import IngestionService
from pricing.storage.aws import AwsClients
from pricing.storage.outcomes import OutcomeStore
from support.apigw_events import invoke, rest_event
from support.moto_stack import aws, moto_server  # noqa: F401 - fixtures

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "60"))

FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,  # nothing written into the working tree
    deadline=None,  # a 10,000-item batch legitimately takes a while against moto
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


def event_for(case) -> dict:
    """The API Gateway proxy event of a generated case (JSON bodies encoded, raw bytes as sent)."""
    headers = {"Content-Type": case.media_type or "application/json", **(case.headers or {})}
    body = case.body
    if isinstance(body, (bytes, bytearray)):
        event = rest_event(case.method.upper(), case.formatted_path, None, headers)
        try:
            event["body"] = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            event["body"], event["isBase64Encoded"] = base64.b64encode(bytes(body)).decode(), True
        return event
    text = None if body is None or type(body).__name__ == "NotSet" else json.dumps(body)
    return rest_event(case.method.upper(), case.formatted_path, text, headers)


def check_answer(case, status: int, body) -> None:
    where = f"{case.method} {case.formatted_path} body={str(case.body)[:300]!r}"
    assert status < 500, f"{status} for {where}: {body}"
    if status >= 400:
        assert isinstance(body, dict) and body.get("detail"), f"{status} without detail for {where}: {body}"
        detail = body["detail"]
        if isinstance(detail, list):
            assert all(isinstance(d, dict) and d.get("msg") and "loc" in d for d in detail), body
        else:
            assert isinstance(detail, str) and detail.strip(), body


def check_quote(body: dict) -> None:
    price = body["price"]
    assert isinstance(price, float) and math.isfinite(price) and price >= 0.01, body
    assert price in body["price_grid"] and body["price_grid"] == sorted(body["price_grid"]), body
    assert body["conf_band"]["lower"] <= price <= body["conf_band"]["upper"], body
    assert body["safety"]["pricing_method"] in ("ml_elasticity", "rule_based")


# The apps are imported when a test runs, not when pytest collects this module: importing one
# builds its Mangum adapter, which installs an event loop that a later asyncio.run() elsewhere in
# the suite would close under every handler test.


@pytest.fixture(scope="module")
def score_schema():
    from pricing.api import score_app

    return schemathesis.openapi.from_dict(score_app.app.openapi())


@pytest.fixture(scope="module")
def learn_schema():
    from pricing.api import ingest_app

    return schemathesis.openapi.from_dict(ingest_app.app.openapi())


@pytest.fixture(scope="module")
def score_handler():
    from score_handler import handler

    return handler


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_score_never_answers_5xx_and_every_4xx_says_why(score_handler, score_schema, mode):
    seen: dict[int, int] = {}

    @FUZZ
    @given(case=score_schema["/score"]["POST"].as_strategy(generation_mode=mode))
    def run(case):
        status, _, body = invoke(score_handler, event_for(case))
        seen[status] = seen.get(status, 0) + 1
        check_answer(case, status, body)
        if status == 200:
            check_quote(body)

    run()
    assert sum(seen.values()) >= min(MAX_EXAMPLES, 20), seen
    if mode is GenerationMode.NEGATIVE:
        assert set(seen) <= {413, 422}, seen  # a request that breaks the schema is never priced


def test_health_never_answers_5xx(score_handler, score_schema):
    @FUZZ
    @given(case=score_schema["/health"]["GET"].as_strategy())
    def run(case):
        status, _, body = invoke(score_handler, event_for(case))
        check_answer(case, status, body)
        assert status == 200 and body["status"] == "healthy"

    run()


@pytest.fixture
def learn_handler(aws, monkeypatch):  # noqa: F811
    from pricing.api import ingest_app

    monkeypatch.setattr(ingest_app, "service", IngestionService(OutcomeStore(AwsClients(), aws.settings().outcomes_table)))
    from ingest_handler import handler

    return handler


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_learn_never_answers_5xx_and_accounts_for_every_item(learn_handler, learn_schema, mode):
    seen: dict[int, int] = {}

    @FUZZ
    @given(case=learn_schema["/learn"]["POST"].as_strategy(generation_mode=mode))
    def run(case):
        status, _, body = invoke(learn_handler, event_for(case))
        seen[status] = seen.get(status, 0) + 1
        check_answer(case, status, body)
        if status == 200:
            batch = case.body["batch"]
            assert body["success"] is True
            assert body["processed"] + body["invalid"] + body["duplicates"] == len(batch), body
            assert [e["index"] for e in body["errors"]] == sorted(e["index"] for e in body["errors"])

    run()
    assert sum(seen.values()) >= min(MAX_EXAMPLES, 20), seen
