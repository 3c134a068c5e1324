"""The /learn use case: check a batch of booking outcomes item by item and store the valid ones once.

The batch is stored as a whole before anything is reported (a store failure propagates as
``StorageUnavailable``, answered 503, and claims nothing); keys stored already are sorted out by
one BatchGetItem pass, every other outcome is one conditional write, and only the writes that
succeeded count as ``processed`` and in ``pricing_outcomes_ingested_total``; an item the store
still refuses is reported ``unstorable`` instead of failing the batch; A/B attribution comes from
the quote id. The contract and why: README.md ("POST /learn").
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pricing.domain.experiments import CONTROL, TREATMENT
from pricing.domain.outcomes import UNSTORABLE, Invalid, check_batch
from pricing.observability import metrics
from pricing.observability.context import logger
from pricing.storage.outcomes import DUPLICATE, REFUSED, STORED, OutcomeStore, OutcomeWriteInterrupted

# Experiment ids become metric label values: only well-formed ones are counted there (the stored
# record keeps whatever the caller sent).
_METRIC_EXPERIMENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class IngestResult:
    processed: int
    invalid: int
    duplicates: int
    errors: list[dict] = field(default_factory=list)
    invalid_by_reason: dict[str, int] = field(default_factory=dict)

    def to_response(self) -> dict:
        parts = [f"Stored {self.processed} outcome{'s' if self.processed != 1 else ''}"]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate{'s' if self.duplicates != 1 else ''} already stored")
        if self.invalid:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.invalid_by_reason.items()))
            parts.append(f"{self.invalid} invalid ({reasons})")
        return {
            "success": True,
            "processed": self.processed,
            "message": "; ".join(parts),
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "errors": self.errors,
        }


class IngestionService:
    """Checks and stores /learn batches.

    ``outcomes`` needs ``existing_outcome_keys(keys)`` and ``put_new_outcomes(records, write_id=)``
    (see ``pricing.storage.outcomes.OutcomeStore``); both raise ``StorageUnavailable``, which
    ``ingest`` lets through.
    """

    def __init__(self, outcomes: OutcomeStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.outcomes = outcomes
        self._clock = clock

    def ingest(self, batch: list[Any]) -> IngestResult:
        """Store the batch's valid, new outcomes; raises ``StorageUnavailable`` (nothing claimed)."""
        checked = check_batch(batch, self._clock())
        keys = [(o.property_id, o.key) for _, o in checked.outcomes]
        existing = self.outcomes.existing_outcome_keys(keys) if keys else set()
        new = [(i, o) for i, o in checked.outcomes if (o.property_id, o.key) not in existing]
        try:
            statuses = self.outcomes.put_new_outcomes([o.to_record() for _, o in new], write_id=uuid.uuid4().hex)
        except OutcomeWriteInterrupted as exc:
            # Claimed to no one (the answer is a 503), but stored: the metric counts them.
            self._count_stored([o for (_, o), status in zip(new, exc.statuses) if status == STORED])
            raise

        stored = [o for (_, o), status in zip(new, statuses) if status == STORED]
        raced = sum(status == DUPLICATE for status in statuses)
        # (index, why, property id for the label): validation's refusals, then the store's.
        invalid = list(checked.invalid) + [
            (i, Invalid(UNSTORABLE), o.property_id) for (i, o), status in zip(new, statuses) if status == REFUSED
        ]
        invalid.sort(key=lambda entry: entry[0])

        # Only now, with everything stored, is anything counted.
        self._count_stored(stored)
        invalid_by_reason = Counter(why.reason for _, why, _ in invalid)
        invalid_by_property = Counter((pid or metrics.UNKNOWN_PROPERTY, why.reason) for _, why, pid in invalid)
        for (property_id, reason), count in invalid_by_property.items():
            metrics.track_invalid_outcome(property_id=property_id, reason=reason, count=count)

        duplicates = len(checked.in_batch_duplicates) + (len(checked.outcomes) - len(new)) + raced
        result = IngestResult(
            processed=len(stored),
            invalid=len(invalid),
            duplicates=duplicates,
            # Exactly {"index", "reason"}: the contract's shape, which callers already parse.
            errors=[{"index": index, "reason": why.reason} for index, why, _ in invalid],
            invalid_by_reason=dict(invalid_by_reason),
        )
        logger.info(
            "outcomes ingested",
            extra={
                "batch_size": len(batch),
                "stored": result.processed,
                "duplicates": result.duplicates,
                "invalid": result.invalid,
                "invalid_by_reason": result.invalid_by_reason,
                "properties": len({o.property_id for o in stored}),
            },
        )
        return result

    @staticmethod
    def _count_stored(stored: list) -> None:
        for property_id, count in Counter(o.property_id for o in stored).items():
            metrics.track_outcomes(property_id=property_id, count=count)
        for o in stored:
            if o.variant in (CONTROL, TREATMENT) and o.experiment_id and _METRIC_EXPERIMENT_ID.fullmatch(o.experiment_id):
                metrics.track_ab_outcome(experiment_id=o.experiment_id, variant=o.variant, accepted=o.accepted)
