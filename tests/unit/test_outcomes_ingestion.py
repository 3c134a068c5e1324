"""The /learn use case (pricing.services.ingestion) with an in-memory store: what is stored,
what is reported, and that nothing is counted unless the store took the whole batch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pricing.observability import metrics
from pricing.services.ingestion import IngestionService
from pricing.storage import StorageUnavailable
from pricing.storage.outcomes import DUPLICATE, STORED

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


class MemoryOutcomes:
    """The two storage methods ingestion uses, over a dict; ``down`` makes both fail."""

    def __init__(self):
        self.items: dict[tuple[str, str], dict] = {}
        self.down = False

    def existing_outcome_keys(self, keys):
        if self.down:
            raise StorageUnavailable("down")
        return {k for k in keys if k in self.items}

    def put_new_outcomes(self, records, *, write_id):
        """Conditional puts: a key stored already is a duplicate, as DynamoDB's condition says."""
        if self.down:
            raise StorageUnavailable("down")
        statuses = []
        for r in records:
            key = (r["property_id"], r["outcome_key"])
            if key in self.items:
                statuses.append(DUPLICATE)
            else:
                self.items[key] = {**r, "write_id": write_id}
                statuses.append(STORED)
        return statuses


def sample(name: str, **labels) -> float:
    # The container's label cap may already be spent by earlier tests in this process: read the
    # series the property is actually counted under.
    if labels.get("property_id") not in (None, metrics.UNKNOWN_PROPERTY):
        labels["property_id"] = metrics.METRICS.property_label(labels["property_id"])
    return metrics.METRICS.get_sample_value(name, labels) or 0.0


def outcome(i: int, **fields) -> dict:
    base = {
        "property_id": "ing-prop",
        "timestamp": "2026-11-26T10:00:00Z",
        "quoted_price": 100.0 + i,
        "accepted": i % 2 == 0,
        "quote_id": f"q{i}",
    }
    base.update(fields)
    return base


@pytest.fixture
def store():
    return MemoryOutcomes()


def test_response_shape_and_counts(store):
    service = IngestionService(store, clock=lambda: NOW)
    batch = [outcome(1), outcome(2), outcome(1), outcome(3, quoted_price=-1), 7]

    response = service.ingest(batch).to_response()

    assert response == {
        "success": True,
        "processed": 2,
        "message": "Stored 2 outcomes; 1 duplicate already stored; 2 invalid (non_positive_price: 1, not_an_object: 1)",
        "invalid": 2,
        "duplicates": 1,
        "errors": [{"index": 3, "reason": "non_positive_price"}, {"index": 4, "reason": "not_an_object"}],
    }
    assert sorted(k for _, k in store.items) == ["q:q1", "q:q2"]


def test_metrics_count_stored_invalid_and_attributed_outcomes_once(store):
    service = IngestionService(store, clock=lambda: NOW)
    before = {
        "stored": sample("pricing_outcomes_ingested_total", property_id="ing-metrics"),
        "invalid": sample("pricing_outcomes_invalid_total", property_id="ing-metrics", reason="too_old"),
        "unknown": sample("pricing_outcomes_invalid_total", property_id="unknown", reason="invalid_property_id"),
        "booked": sample("pricing_ab_outcomes_total", experiment_id="exp-m", variant="treatment", accepted="true"),
    }
    batch = [
        outcome(0, property_id="ing-metrics", quote_id="t0~exp-m~treatment"),
        outcome(1, property_id="ing-metrics", quote_id="t1~exp-m~treatment", accepted=True),
        outcome(2, property_id="ing-metrics", timestamp="2020-01-01T00:00:00Z"),
        outcome(3, property_id="no such id!"),
    ]

    service.ingest(batch)
    service.ingest(batch)  # the retry stores nothing new and counts nothing new

    assert sample("pricing_outcomes_ingested_total", property_id="ing-metrics") - before["stored"] == 2
    # Invalid items are counted per request that reported them (both answers listed them).
    assert sample("pricing_outcomes_invalid_total", property_id="ing-metrics", reason="too_old") - before["invalid"] == 2
    assert sample("pricing_outcomes_invalid_total", property_id="unknown", reason="invalid_property_id") - before["unknown"] == 2
    assert sample("pricing_ab_outcomes_total", experiment_id="exp-m", variant="treatment", accepted="true") - before["booked"] == 2


def test_a_store_failure_raises_and_counts_nothing(store):
    service = IngestionService(store, clock=lambda: NOW)
    before = sample("pricing_outcomes_ingested_total", property_id="ing-down")
    store.down = True

    with pytest.raises(StorageUnavailable):
        service.ingest([outcome(1, property_id="ing-down")])

    assert sample("pricing_outcomes_ingested_total", property_id="ing-down") == before
    assert store.items == {}
