"""Property: any batch of any JSON values through POST /learn and the real storage (moto's server)
is answered 200, every item stored or refused with a documented reason, and the counts add up.

Per example, through IngestFunction's handler (API Gateway event in, proxy response out):

* no 5xx, and no 4xx either (the envelope is always a valid 1-8 item batch);
* ``processed + duplicates + invalid`` is the batch size; every refusal names its index once,
  with a reason of the documented set;
* every item not refused is one the domain accepts, and its key is in the table afterwards;
  ``processed`` is exactly the number of those keys that were not in the table before;
* ``pricing_outcomes_ingested_total`` rises by ``processed``.

After the run, the table holds exactly the sum of ``processed``. ``make test`` runs a bounded,
derandomised number of examples; ``make test-property`` a long random run
(``PROPERTY_EXAMPLES``, default 2,000), printing how many examples and items were tried.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings

from pricing.domain.outcomes import INVALID_REASONS, STORE_REASONS, Outcome, validate_outcome
from pricing.observability import metrics
from pricing.storage.aws import AwsClients
from pricing.storage.outcomes import OUTCOME_LISTING_KEY, OutcomeStore
from support.apigw_events import invoke, rest_event
from support.moto_stack import aws, moto_server  # noqa: F401 - fixtures
from support.outcome_strategies import batches, to_json

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "2000" if LONG else "40"))
REASONS = {*INVALID_REASONS, *STORE_REASONS}


def ingested_total() -> float:
    return metrics.METRICS.sample_total("pricing_outcomes_ingested_total")


def stored_keys(ddb, table: str, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for property_id, key in keys:
        item = ddb.get_item(TableName=table, Key={"property_id": {"S": property_id}, "outcome_key": {"S": key}}, ConsistentRead=True).get(
            "Item"
        )
        if item:
            found.add((property_id, key))
    return found


def test_any_batch_is_stored_or_refused_item_by_item_and_the_counts_add_up(aws, monkeypatch, capsys):  # noqa: F811
    from pricing.api import ingest_app
    from pricing.services.ingestion import IngestionService

    monkeypatch.setattr(ingest_app, "service", IngestionService(OutcomeStore(AwsClients(), aws.settings().outcomes_table)))
    ddb = aws.client("dynamodb")
    table = aws.names["OutcomesTable"]
    tally = Counter()
    reasons: Counter = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )
    @given(batch=batches)
    def one_batch(batch):
        text = '{"batch":[' + ",".join(to_json(item) for item in batch) + "]}"
        parsed = json.loads(text)["batch"]  # what the service reads (1e999 -> inf, long literals -> doubles)
        now = datetime.now(UTC)
        accepted = {i: validate_outcome(item, now) for i, item in enumerate(parsed)}
        keys = {(o.property_id, o.key) for o in accepted.values() if isinstance(o, Outcome)}
        before_keys = stored_keys(ddb, table, keys)
        before_metric = ingested_total()

        status, _, body = invoke(ingest_app.handler, rest_event("POST", "/learn", text))

        tally["examples"] += 1
        tally["items"] += len(batch)
        if status >= 500:
            tally["5xx"] += 1
        assert status == 200, (status, body)
        assert body["processed"] + body["duplicates"] + body["invalid"] == len(batch), body
        indexes = [e["index"] for e in body["errors"]]
        assert indexes == sorted(set(indexes)) and len(indexes) == body["invalid"], body
        assert {e["reason"] for e in body["errors"]} <= REASONS, body
        refused = set(indexes)
        if os.environ.get("PROPERTY_DEBUG"):
            with open(os.environ["PROPERTY_DEBUG"], "a") as f:
                mine = {i: getattr(r, "reason", "ok") for i, r in accepted.items()}
                f.write(json.dumps({"text": text, "body": body, "mine": mine}) + "\n")
        for i, result in accepted.items():
            if i not in refused:
                assert isinstance(result, Outcome), (i, result)
        kept = {(o.property_id, o.key) for i, o in accepted.items() if i not in refused}
        assert stored_keys(ddb, table, kept) == kept
        assert body["processed"] == len(kept - before_keys), (body, len(kept), len(before_keys))
        assert ingested_total() - before_metric == body["processed"]
        tally["stored"] += body["processed"]
        tally["duplicates"] += body["duplicates"]
        reasons.update(e["reason"] for e in body["errors"])

    one_batch()

    items = ddb.scan(TableName=table, Select="ALL_ATTRIBUTES")
    scanned, kwargs = [], {"TableName": table}
    while True:
        resp = ddb.scan(**kwargs)
        scanned += [i for i in resp["Items"] if i["outcome_key"]["S"] != OUTCOME_LISTING_KEY]
        if "LastEvaluatedKey" not in resp:
            break
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    del items
    with capsys.disabled():
        print(
            f"\n/learn property run: {tally['examples']} examples, {tally['items']} items, "
            f"{tally['stored']} stored, {tally['duplicates']} duplicates, 5xx: {tally['5xx']}, "
            f"table: {len(scanned)} outcomes; refused by reason: {dict(sorted(reasons.items()))}"
        )
    assert tally["5xx"] == 0
    assert len(scanned) == tally["stored"]
