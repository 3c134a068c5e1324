"""Eight simultaneous senders of one /learn batch against moto's server: the counts stay honest.

Each sender is its own ``IngestionService`` over its own ``OutcomeStore`` (its own boto3
clients), as eight Lambda containers would be, started together behind a barrier. Every one of them finds the
batch's keys absent in its first read, so all of them race to write every outcome: only the
conditional writes can tell who stored what.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from pricing.observability import metrics
from pricing.services.ingestion import IngestionService
from pricing.storage import outcomes as outcome_store
from pricing.storage.stores import Stores
from support.moto_stack import aws, moto_server, outcomes_in_table  # noqa: F401 - fixtures

SENDERS = 8
OUTCOMES = 1000
PROPERTY = "concurrent-prop"
NOW = datetime.now(UTC).replace(microsecond=0)


def ingested_counted() -> float:
    label = metrics.METRICS.property_label(PROPERTY)
    return metrics.METRICS.get_sample_value("pricing_outcomes_ingested_total", {"property_id": label}) or 0.0


def test_eight_simultaneous_senders_of_one_batch_store_and_count_each_outcome_once(aws, monkeypatch, capsys):  # noqa: F811
    # Moto's server takes a few hundred conditional writes a second here, and all eight senders
    # write every outcome at once: the stores' deadline is widened (DynamoDB is far faster).
    monkeypatch.setattr(outcome_store, "OUTCOME_IO_BUDGET_SECONDS", 300.0)
    batch = [
        {
            "property_id": PROPERTY,
            "timestamp": (NOW - timedelta(minutes=i + 1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quoted_price": 100.0 + i % 50,
            "accepted": i % 3 == 0,
            "quote_id": f"conc-{i:04d}",
        }
        for i in range(OUTCOMES)
    ]
    services = [IngestionService(Stores.build(aws.settings()).outcomes) for _ in range(SENDERS)]
    start = threading.Barrier(SENDERS)
    answers: list[dict | None] = [None] * SENDERS
    failures: list[BaseException] = []
    before = ingested_counted()

    def send(n: int) -> None:
        try:
            start.wait()
            answers[n] = services[n].ingest(batch).to_response()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)

    assert not failures, failures
    processed = [a["processed"] for a in answers]
    duplicates = [a["duplicates"] for a in answers]
    stored = outcomes_in_table(aws)
    increase = ingested_counted() - before
    with capsys.disabled():
        print(
            f"\n{SENDERS} concurrent senders of {OUTCOMES} outcomes: processed {processed} (sum {sum(processed)}), "
            f"duplicates sum {sum(duplicates)}, items in the table {stored}, metric increase {increase:.0f}"
        )
    assert all(a["invalid"] == 0 for a in answers)
    assert all(p + d == OUTCOMES for p, d in zip(processed, duplicates))
    assert sum(processed) == stored == increase == OUTCOMES
    assert sum(duplicates) == (SENDERS - 1) * OUTCOMES
