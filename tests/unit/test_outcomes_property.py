"""Property: validation never raises, and whatever it accepts DynamoDB can hold exactly as written.

Pure and fast, so it runs many more examples than the integration property test: each drawn item
(any JSON value, numbers at the float and DynamoDB limits, text of every plane) either is refused
with a documented reason or becomes an ``Outcome`` whose stored item boto3's own serializer takes
(the DynamoDB number context: 38 digits, no overflow, underflow or rounding), whose numbers lie in
DynamoDB's range and whose keys keep to its byte limits.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import HealthCheck, given, settings

from pricing.domain.limits import (
    DYNAMODB_MAX_MAGNITUDE,
    DYNAMODB_MIN_MAGNITUDE,
    MAX_OUTCOME_ITEM_BYTES,
    MAX_PARTITION_KEY_BYTES,
    MAX_SORT_KEY_BYTES,
)
from pricing.domain.outcomes import INVALID_REASONS, Invalid, Outcome, validate_outcome
from pricing.storage.aws import to_wire
from support.outcome_strategies import items, to_json

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "2000" if LONG else "40")) * 10


def _numbers(wire):
    if isinstance(wire, dict):
        for kind, value in wire.items():
            if kind == "N":
                yield Decimal(value)
            elif kind == "M":
                for v in value.values():
                    yield from _numbers(v)
            elif kind == "L":
                for v in value:
                    yield from _numbers(v)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(item=items)
def test_validation_never_raises_and_what_it_accepts_is_storable(item):
    parsed = json.loads(to_json(item))
    result = validate_outcome(parsed, datetime.now(UTC))
    if isinstance(result, Invalid):
        assert result.reason in INVALID_REASONS
        return
    assert isinstance(result, Outcome)
    record = {**result.to_record(), "ingested_at": "2026-11-26T12:00:00.000000Z", "write_id": "0" * 32}
    wire = to_wire(record)  # raises on what DynamoDB refuses
    for number in _numbers({"M": wire}):
        assert number == 0 or DYNAMODB_MIN_MAGNITUDE <= abs(number) < DYNAMODB_MAX_MAGNITUDE, number
        assert len(number.as_tuple().digits) <= 38
    assert len(record["property_id"].encode()) <= MAX_PARTITION_KEY_BYTES
    assert len(record["outcome_key"].encode()) <= MAX_SORT_KEY_BYTES
    assert len(json.dumps(wire, ensure_ascii=False).encode("utf-8", "surrogatepass")) < MAX_OUTCOME_ITEM_BYTES
    back = Outcome.from_record(record)
    assert back.key == result.key
