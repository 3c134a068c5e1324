"""The /learn use case: check a batch of booking outcomes item by item and store the valid ones once.

Contract (spec/API.md): valid outcomes are stored, invalid ones are counted under a reason and
reported by index, duplicates are stored once and counted. What this module adds:

* **Nothing acknowledged that was not stored.** The batch is stored as a whole before anything is
  reported; if the store fails, ``StorageUnavailable`` propagates (the app answers 503 with
  ``Retry-After``) and no count is claimed. Writes are puts of deterministic items, so the
  caller's retry stores the rest and reports what the failed attempt had already stored as
  duplicates -- never a second copy.
* **Duplicates found before writing.** One BatchGetItem pass finds which keys are stored already;
  only new items are written. Two concurrent requests carrying the same new quote id can both
  miss it and both write: the item is then written twice with the same key, still one outcome.
* **A/B attribution** comes from the quote id (``experiment_id``/``variant`` in the stored
  record), so conversion per variant can be read from the table; the live counter
  ``pricing_ab_outcomes_total`` counts newly stored attributed outcomes only, so a retried batch
  does not count a booking twice.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from pricing.domain.experiments import CONTROL, TREATMENT
from pricing.domain.outcomes import check_batch
from pricing.observability import metrics
from pricing.observability.context import logger
from pricing.storage import Storage

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

    ``storage`` needs ``existing_outcome_keys(keys)`` and ``write_outcomes(records)`` (see
    ``pricing.storage.Storage``); both raise ``StorageUnavailable``, which ``ingest`` lets through.
    """

    def __init__(self, storage: Storage, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.storage = storage
        self._clock = clock

    def ingest(self, batch: list[Any]) -> IngestResult:
        """Store the batch's valid, new outcomes; raises ``StorageUnavailable`` (nothing claimed)."""
        checked = check_batch(batch, self._clock())
        keys = [(o.property_id, o.key) for _, o in checked.outcomes]
        existing = self.storage.existing_outcome_keys(keys) if keys else set()
        new = [o for _, o in checked.outcomes if (o.property_id, o.key) not in existing]
        if new:
            self.storage.write_outcomes([o.to_record() for o in new])

        # Only now, with everything stored, is anything counted.
        stored_by_property = Counter(o.property_id for o in new)
        invalid_by_reason = Counter(why.reason for _, why, _ in checked.invalid)
        invalid_by_property = Counter((pid or metrics.UNKNOWN_PROPERTY, why.reason) for _, why, pid in checked.invalid)
        for property_id, count in stored_by_property.items():
            metrics.track_outcomes(property_id=property_id, count=count)
        for (property_id, reason), count in invalid_by_property.items():
            metrics.track_invalid_outcome(property_id=property_id, reason=reason, count=count)
        for o in new:
            if o.variant in (CONTROL, TREATMENT) and o.experiment_id and _METRIC_EXPERIMENT_ID.fullmatch(o.experiment_id):
                metrics.track_ab_outcome(experiment_id=o.experiment_id, variant=o.variant, accepted=o.accepted)

        duplicates = len(checked.in_batch_duplicates) + len(checked.outcomes) - len(new)
        result = IngestResult(
            processed=len(new),
            invalid=len(checked.invalid),
            duplicates=duplicates,
            # Exactly {"index", "reason"}: the contract's shape, which callers already parse.
            errors=[{"index": index, "reason": why.reason} for index, why, _ in checked.invalid],
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
                "properties": len(stored_by_property),
            },
        )
        return result
