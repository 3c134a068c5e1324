"""POST /learn through IngestFunction's handler (API Gateway event in, proxy response out) against
a moto server holding the template's outcomes table."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from local.apigw import build_event
from local.lambda_context import FakeContext
from local.template import ApiRoute
from pricing.domain.outcomes import INVALID_REASONS
from pricing.services.ingestion import IngestionService
from pricing.storage import StorageUnavailable
from pricing.storage import outcomes as outcome_store
from pricing.storage.aws import AwsClients
from pricing.storage.outcomes import OUTCOME_LISTING_KEY
from pricing.storage.stores import Stores
from support.moto_stack import aws, moto_server  # noqa: F401 - fixtures; puts local/ on the path

ROUTE = ApiRoute("IngestFunction", "POST", "/learn")
NOW = datetime.now(UTC).replace(microsecond=0)


#: What an ingest invocation has left (API Gateway's 29 s); a test may widen it.
REMAINING_MS = {"ms": 29_000}


def LambdaContext() -> FakeContext:
    return FakeContext("pricing-ingest-dev", remaining_ms=REMAINING_MS["ms"], memory_mb=1024)


def ts(delta: timedelta = timedelta(0)) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def outcome(i: int, **fields) -> dict:
    base = {
        "property_id": "prop-1",
        "timestamp": ts(-timedelta(hours=i + 1)),
        "quoted_price": 100.0 + i,
        "accepted": i % 3 == 0,
        "quote_id": f"q{i:05d}",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


# One item per invalid reason, each failing exactly that check.
INVALID_EXAMPLES = {
    "not_an_object": ["not", "an", "object"],
    "missing_field": outcome(0, quoted_price=None, quote_id="x-missing"),
    "invalid_type": outcome(0, accepted="true", quote_id="x-type"),
    "invalid_property_id": outcome(0, property_id="bad id!", quote_id="x-pid"),
    "invalid_timestamp": outcome(0, timestamp="26/11/2026 12:00", quote_id="x-ts"),
    "future_timestamp": outcome(0, timestamp=ts(timedelta(hours=1)), quote_id="x-future"),
    "too_old": outcome(0, timestamp=ts(-timedelta(days=800)), quote_id="x-old"),
    "non_finite_number": "NON_FINITE",  # spliced into the raw JSON below: 1e999 parses as inf
    "non_positive_price": outcome(0, quoted_price=0, quote_id="x-zero"),
    "negative_time_to_book": outcome(0, time_to_book=-1, quote_id="x-ttb"),
    "number_out_of_range": outcome(0, quoted_price=1e200, quote_id="x-range"),
    "invalid_date": outcome(0, stay_date="2026-02-30", quote_id="x-date"),
    "invalid_lead_time": outcome(0, stay_date=(NOW - timedelta(days=10)).date().isoformat(), quote_id="x-lead"),
    "invalid_quote_id": outcome(0, quote_id=""),
    "id_too_long": outcome(0, quote_id="\U0001f600" * 256),
    "invalid_attribution": outcome(0, variant="", quote_id="x-attr"),
    "invalid_context": outcome(0, context={"occupancy": 7}, quote_id="x-ctx"),
    "context_too_large": outcome(0, context={"notes": "x" * 5000}, quote_id="x-big"),
}


def body_with(items: list) -> bytes:
    text = json.dumps({"batch": [i if i != "NON_FINITE" else {"__nf__": 1} for i in items]})
    nf = json.dumps(outcome(0, quote_id="x-inf")).replace('"quoted_price": 100.0', '"quoted_price": 1e999')
    return text.replace('{"__nf__": 1}', nf).encode()


@pytest.fixture
def ingest(aws, monkeypatch):  # noqa: F811
    from pricing.api import ingest_app

    stores = Stores.build(aws.settings())
    monkeypatch.setattr(ingest_app, "service", IngestionService(stores.outcomes))

    def post(body, headers=()) -> tuple[int, dict, dict]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        event = build_event(
            method="POST",
            raw_path="/learn",
            headers=[("Content-Type", "application/json"), *headers],
            body=raw,
            route=ROUTE,
            path_parameters=None,
            stage="dev",
        )
        response = ingest_app.handler(event, LambdaContext())
        headers_out = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        return response["statusCode"], json.loads(response["body"]), headers_out

    post.stores = stores
    post.aws = aws
    post.app_module = ingest_app
    return post


def stored_outcomes(aws, property_id: str | None = None) -> list[dict]:  # noqa: F811
    ddb = aws.client("dynamodb")
    items, kwargs = [], {"TableName": aws.names["OutcomesTable"]}
    while True:
        resp = ddb.scan(**kwargs)
        items += resp["Items"]
        if "LastEvaluatedKey" not in resp:
            break
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    return [
        i for i in items if i["outcome_key"]["S"] != OUTCOME_LISTING_KEY and (property_id is None or i["property_id"]["S"] == property_id)
    ]


def ingested_counted(property_id: str) -> float:
    from pricing.observability import metrics

    label = metrics.METRICS.property_label(property_id)
    return metrics.METRICS.get_sample_value("pricing_outcomes_ingested_total", {"property_id": label}) or 0.0


def test_learn_counts_valid_invalid_each_reason_and_duplicates(ingest):
    valid = [outcome(i) for i in range(10)]
    no_quote_id = outcome(20, quote_id=None)
    batch = [*valid, valid[3], no_quote_id, dict(no_quote_id), *INVALID_EXAMPLES.values()]

    status, body, headers = ingest(body_with(batch), headers=[("X-Request-ID", "learn-test-1")])

    assert status == 200, body
    assert headers["x-request-id"] == "learn-test-1"
    assert body["success"] is True
    assert body["processed"] == 11  # ten with quote ids and one keyed by content hash
    assert body["duplicates"] == 2  # valid[3] and the hash twin, inside the one batch
    assert body["invalid"] == len(INVALID_EXAMPLES)
    first_invalid = 13
    assert body["errors"] == [{"index": first_invalid + n, "reason": reason} for n, reason in enumerate(INVALID_EXAMPLES)]
    assert set(INVALID_EXAMPLES) <= set(INVALID_REASONS)
    assert len(stored_outcomes(ingest.aws)) == 11


def test_the_same_batch_twice_stores_each_outcome_once(ingest):
    batch = [outcome(i) for i in range(60)] + [outcome(99, quote_id=None)]

    first = ingest({"batch": batch})
    second = ingest({"batch": batch})

    assert first[0] == second[0] == 200
    assert (first[1]["processed"], first[1]["duplicates"]) == (61, 0)
    assert (second[1]["processed"], second[1]["duplicates"]) == (0, 61)
    assert len(stored_outcomes(ingest.aws)) == 61


def test_outcome_resent_with_same_quote_id_is_a_duplicate_and_the_first_is_kept(ingest):
    ingest({"batch": [outcome(1, accepted=False)]})
    status, body, _ = ingest({"batch": [outcome(1, accepted=True, quoted_price=180.0)]})

    assert status == 200 and (body["processed"], body["duplicates"]) == (0, 1)
    (item,) = stored_outcomes(ingest.aws)
    assert item["accepted"] == {"BOOL": False}


def test_ab_attribution_is_stored_from_the_quote_id(ingest):
    batch = [
        outcome(1, quote_id="tok1~exp-7~treatment", experiment_id="wrong", variant="control"),
        outcome(2, quote_id="tok2~exp-7~control"),
        outcome(3, quote_id="plain-token", experiment_id="exp-8", variant="treatment"),
    ]
    assert ingest({"batch": batch})[0] == 200
    items = {i["quote_id"]["S"]: i for i in stored_outcomes(ingest.aws)}
    assert (items["tok1~exp-7~treatment"]["experiment_id"]["S"], items["tok1~exp-7~treatment"]["variant"]["S"]) == ("exp-7", "treatment")
    assert items["tok2~exp-7~control"]["variant"]["S"] == "control"
    assert items["plain-token"]["experiment_id"]["S"] == "exp-8"


def test_properties_with_outcomes_are_listed_for_retraining(ingest):
    ingest({"batch": [outcome(1), outcome(2, property_id="prop-2"), outcome(3, property_id="prop-3")]})
    assert ingest.stores.outcomes.list_outcome_properties() == ["prop-1", "prop-2", "prop-3"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"batch": "nope"}', b'{"outcomes": []}', b'{"batch": []}', b"[1, 2]", b'{"batch": [NaN]}'],
)
def test_a_request_without_a_batch_list_is_a_422(ingest, body):
    status, payload, _ = ingest(body)
    assert status == 422
    assert isinstance(payload["detail"], list) and payload["detail"]


def test_more_than_ten_thousand_outcomes_is_a_422(ingest):
    status, _, _ = ingest({"batch": [{}] * 10_001})
    assert status == 422


def test_store_down_is_a_503_with_retry_after_and_claims_nothing(ingest):
    # The table vanishing makes DynamoDB refuse every call, as an outage or a lost grant would.
    ingest.aws.client("dynamodb").delete_table(TableName=ingest.aws.names["OutcomesTable"])

    status, body, headers = ingest({"batch": [outcome(i) for i in range(5)]})

    assert status == 503
    assert headers["retry-after"] == "5"
    assert "processed" not in body and "success" not in body


def test_store_failing_mid_batch_loses_nothing_when_the_batch_is_retried(ingest, monkeypatch):
    batch = [outcome(i) for i in range(300)]  # 300 conditional PutItem calls
    stores = ingest.stores
    real_call = AwsClients.call
    writes = {"n": 0}
    counted_before = ingested_counted("prop-1")

    def flaky_call(self, service, operation, **kwargs):
        if operation == "put_item":
            writes["n"] += 1
            if 100 <= writes["n"] < 110:
                raise StorageUnavailable("dynamodb.put_item: ServiceUnavailable")
        return real_call(self, service, operation, **kwargs)

    monkeypatch.setattr(AwsClients, "call", flaky_call)
    status, _, headers = ingest({"batch": batch})
    assert status == 503 and headers["retry-after"] == "5"
    partially = len(stored_outcomes(ingest.aws))
    assert 0 < partially < 300

    monkeypatch.setattr(AwsClients, "call", real_call)  # the store recovers
    status, body, _ = ingest({"batch": batch})

    assert status == 200
    assert body["processed"] + body["duplicates"] == 300
    assert body["duplicates"] == partially
    assert len(stored_outcomes(ingest.aws)) == 300
    assert stores.outcomes.list_outcome_properties() == ["prop-1"]
    # What the failed attempt wrote is in the metric though its answer claimed none of it.
    assert ingested_counted("prop-1") - counted_before == 300


def test_unprocessed_items_are_retried_until_stored(ingest, monkeypatch):
    real_call = AwsClients.call
    throttled = {"n": 0, "gets": 0}

    def throttling_call(self, service, operation, **kwargs):
        if operation == "batch_write_item" and throttled["n"] < 3:
            throttled["n"] += 1
            request = kwargs["RequestItems"]
            ((table, writes),) = request.items()
            # Outcomes are conditional PutItems; the batch write is the properties' listing.
            done = real_call(self, service, operation, RequestItems={table: writes[:1]})
            return {**done, "UnprocessedItems": {table: writes[1:]}} if writes[1:] else done
        if operation == "batch_get_item" and throttled["gets"] == 0:
            throttled["gets"] += 1
            ((table, spec),) = kwargs["RequestItems"].items()
            done = real_call(self, service, operation, RequestItems={table: {**spec, "Keys": spec["Keys"][:3]}})
            return {**done, "UnprocessedKeys": {table: {**spec, "Keys": spec["Keys"][3:]}}}
        return real_call(self, service, operation, **kwargs)

    monkeypatch.setattr(AwsClients, "call", throttling_call)
    status, body, _ = ingest({"batch": [outcome(i, property_id=f"prop-{i % 4}") for i in range(40)]})

    assert status == 200 and body["processed"] == 40
    assert (throttled["n"], throttled["gets"]) == (3, 1)
    assert len(stored_outcomes(ingest.aws)) == 40
    assert ingest.stores.outcomes.list_outcome_properties() == ["prop-0", "prop-1", "prop-2", "prop-3"]


def test_ten_thousand_outcomes_in_one_batch(ingest, capsys, monkeypatch):
    # Each new outcome is one conditional PutItem: moto's server takes a few hundred a second on
    # this machine (DynamoDB takes thousands from one Lambda), so the deadlines are widened here.
    monkeypatch.setattr(outcome_store, "OUTCOME_IO_BUDGET_SECONDS", 240.0)
    monkeypatch.setitem(REMAINING_MS, "ms", 300_000)
    batch = [outcome(i % 5000, quote_id=f"big-{i}", property_id=f"prop-{i % 7}") for i in range(10_000)]

    started = time.perf_counter()
    status, body, _ = ingest({"batch": batch})
    elapsed = time.perf_counter() - started

    assert status == 200
    assert (body["processed"], body["invalid"], body["duplicates"]) == (10_000, 0, 0)
    assert len(stored_outcomes(ingest.aws)) == 10_000
    with capsys.disabled():
        print(f"\n/learn with 10,000 outcomes against moto: {elapsed:.2f} s")


# --- issue 12: one bad item never refuses the batch; only an unavailable store is a 503 ----------


def raw_number_batch(numbers: dict[str, str]) -> bytes:
    """A batch of two valid outcomes around one item per (field, JSON number literal)."""
    items, literals = [outcome(1, quote_id="ok-1")], []
    for n, (case, literal) in enumerate(numbers.items()):
        field, _ = case.split(":", 1)
        item = outcome(n + 10, quote_id=f"num-{n}")
        item[field] = f"__LITERAL_{n}__"
        items.append(item)
        literals.append(literal)
    items.append(outcome(2, quote_id="ok-2"))
    text = json.dumps({"batch": items})
    for n, literal in enumerate(literals):
        text = text.replace(f'"__LITERAL_{n}__"', literal)
    return text.encode()


EXTREME_NUMBERS = {
    f"{field}:{name}": literal
    for field in ("quoted_price", "final_price", "time_to_book", "comp_p10", "comp_p50", "comp_p90")
    for name, literal in (
        ("1e200", "1e200"),
        ("1e308", "1e308"),
        ("int-128-digits", "9" * 128),
        ("int-400-digits", "1" + "0" * 399),
        ("5e-324", "5e-324"),
        ("1e-131", "1e-131"),
    )
}


def test_extreme_numbers_refuse_their_item_and_the_rest_of_the_batch_is_stored(ingest):
    status, body, _ = ingest(raw_number_batch(EXTREME_NUMBERS))

    assert status == 200, body
    assert body["processed"] == 2 and body["invalid"] == len(EXTREME_NUMBERS)
    assert {e["reason"] for e in body["errors"]} == {"number_out_of_range"}
    assert [e["index"] for e in body["errors"]] == list(range(1, len(EXTREME_NUMBERS) + 1))
    assert sorted(i["quote_id"]["S"] for i in stored_outcomes(ingest.aws)) == ["ok-1", "ok-2"]


def test_numbers_at_the_edges_of_the_store_range_are_stored_as_sent(ingest):
    edges = {
        "time_to_book:min": "1e-130",
        "time_to_book:max": "9.999999999999998e125",
        "time_to_book:zero": "0",
        "time_to_book:minus-zero": "-0.0",
        "quoted_price:cap": "1e10",
        "quoted_price:long-literal": "120.000000000000000000000000000000000000000000000001",
        "final_price:long-integer": "1234567890",
        "comp_p50:tiny": "1e-130",
    }
    status, body, _ = ingest(raw_number_batch(edges))

    assert status == 200, body
    assert (body["processed"], body["invalid"]) == (len(edges) + 2, 0), body
    items = {i["quote_id"]["S"]: i for i in stored_outcomes(ingest.aws)}
    assert items["num-0"]["time_to_book"] == {"N": "1E-130"}
    assert items["num-3"]["time_to_book"] == {"N": "0.0"}  # -0.0 is kept as 0.0


def test_a_quote_id_over_the_key_limit_and_an_underflowing_price_are_refused_not_retried(ingest):
    batch = [outcome(1), outcome(2, quote_id="\U0001f600" * 256), "RAW", outcome(3)]
    text = json.dumps({"batch": batch}).replace('"RAW"', json.dumps(outcome(4)).replace("104.0", "1e-131"))

    for attempt in range(2):  # the same answer every time: nothing to retry
        status, body, _ = ingest(text.encode())
        assert status == 200, body
        assert body["errors"] == [{"index": 1, "reason": "id_too_long"}, {"index": 2, "reason": "number_out_of_range"}]
        assert (body["processed"], body["duplicates"]) == ((2, 0) if attempt == 0 else (0, 2))
    assert len(stored_outcomes(ingest.aws)) == 2


def test_an_item_the_store_refuses_is_reported_unstorable_and_the_rest_is_stored(ingest, monkeypatch):
    from pricing.storage import StoreRefused

    real_call = AwsClients.call

    def refusing_call(self, service, operation, **kwargs):
        if operation == "put_item" and kwargs["Item"]["outcome_key"]["S"] == "q:q00002":
            raise StoreRefused("dynamodb.put_item: ValidationException")
        return real_call(self, service, operation, **kwargs)

    monkeypatch.setattr(AwsClients, "call", refusing_call)
    status, body, _ = ingest({"batch": [outcome(i) for i in range(5)]})

    assert status == 200, body
    assert body["errors"] == [{"index": 2, "reason": "unstorable"}]
    assert (body["processed"], body["invalid"]) == (4, 1)
    assert len(stored_outcomes(ingest.aws)) == 4


def test_property_id_of_dots_is_refused_and_never_becomes_a_key(ingest):
    status, body, _ = ingest({"batch": [outcome(1, property_id=".."), outcome(2, property_id="."), outcome(3)]})
    assert status == 200
    assert body["errors"] == [{"index": 0, "reason": "invalid_property_id"}, {"index": 1, "reason": "invalid_property_id"}]
    assert {i["property_id"]["S"] for i in stored_outcomes(ingest.aws)} == {"prop-1"}
