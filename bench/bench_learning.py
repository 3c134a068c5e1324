"""Figures 5 and 6: the learning loop's throughput.

5. **Ingest**: outcomes validated and stored per second for one 10,000-outcome ``POST /learn``,
   through IngestFunction's handler (event, Mangum, FastAPI, item-by-item validation, the
   duplicate check and the batch writes to DynamoDB on moto), against the storage writes
   alone for as many already-validated outcomes. Every run sends outcomes never seen before.
6. **Retrain**: seconds to retrain one property on 1,000, 10,000 and 100,000 outcomes
   (``RetrainingService.retrain_property``: parse, drift, fit, judge on the holdout, write),
   each against the 1,000-outcome time. The outcomes are served from memory: moto's query
   re-reads the whole partition for every page, so reading 100,000 outcomes from it would
   measure moto (minutes), not the retrain; the note gives the moto read time of 5,000.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from bench.report import Figure
from bench.stack import AwsStack
from bench.stats import interleaved, median, paired_ratios
from support.apigw_events import FakeContext, rest_event

INGEST_BATCH = 10_000
INGEST_PROPERTIES = 10
RETRAIN_SIZES = (1_000, 10_000, 100_000)


def simulated_batch(tag: str, n: int, properties: int = 1) -> list[dict]:
    """``n`` fresh /learn outcomes spread over ``properties`` simulated properties."""
    from pricing.domain.simulator import CURVES, simulate_outcomes

    now = datetime.now(UTC)
    per = n // properties
    batch: list[dict] = []
    for k in range(properties):
        curve = CURVES[k % len(CURVES)]
        batch += simulate_outcomes(curve, per, seed=k, now=now, property_id=f"bench-{tag}-{k}")
    for i, outcome in enumerate(batch):
        outcome["quote_id"] = f"{tag}-{i}"  # never seen before: nothing is skipped as a duplicate
    return batch


def stored_records(batch: list[dict]) -> list[dict]:
    """What /learn would store for ``batch`` (validated outside any clock)."""
    from pricing.domain.outcomes import check_batch

    checked = check_batch(batch, datetime.now(UTC))
    if checked.invalid:
        raise RuntimeError(f"simulated outcomes refused: {checked.invalid[:3]}")
    return [o.to_record() for _, o in checked.outcomes]


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"r{self.n}-{time.time_ns() % 10**9}"


def ingest_rate(stack: AwsStack, rounds: int = 3) -> list[Figure]:
    """Figure 5. Needs ``os.environ`` pointed at ``stack`` (``load_score_handler`` did that)."""
    try:
        from ingest_handler import handler
    except ImportError as exc:
        return [Figure.waiting("ingest_rate", "5. ingest, 10,000-outcome batch", f"no ingest handler: {exc}")]
    from pricing.storage import outcomes as outcome_store

    outcomes = stack.stores().outcomes
    tags = _Counter()
    # Every new outcome is one conditional PutItem, and moto's server takes a few hundred a second:
    # the deadlines are widened so the figure measures the rate, not a 503.
    outcome_store.OUTCOME_IO_BUDGET_SECONDS = 600.0

    def full() -> float:
        body = {"batch": simulated_batch(tags.next(), INGEST_BATCH, INGEST_PROPERTIES)}
        event = rest_event("POST", "/learn", body)
        started = time.perf_counter()
        result = handler(event, FakeContext(remaining_ms=600_000))
        seconds = time.perf_counter() - started
        answer = json.loads(result["body"])
        if result["statusCode"] != 200 or answer.get("processed") != INGEST_BATCH:
            raise RuntimeError(f"/learn did not store the batch: {result['statusCode']} {str(answer)[:300]}")
        return INGEST_BATCH / seconds

    def store_only() -> float:
        records = stored_records(simulated_batch(tags.next(), INGEST_BATCH, INGEST_PROPERTIES))
        started = time.perf_counter()
        outcomes.put_new_outcomes(records, write_id=tags.next())
        return len(records) / (time.perf_counter() - started)

    runs = interleaved({"ingest": full, "store": store_only}, rounds)
    return [
        Figure(
            key="ingest_rate",
            title="5. ingest, 10,000-outcome batch",
            unit="outcomes/s",
            value=median(runs["ingest"]),
            baseline=median(runs["store"]),
            baseline_name="writes alone",
            ratio=median(paired_ratios(runs["ingest"], runs["store"])),
            runs=rounds,
            note=(
                f"POST /learn through the handler, {INGEST_PROPERTIES} properties per batch, DynamoDB on moto "
                "(so absolute rates are moto's); baseline: OutcomeStore.put_new_outcomes (one conditional write each) "
                "of as many validated outcomes"
            ),
        )
    ]


class MemoryStore:
    """The storage calls a retrain makes, on dicts: outcomes as ``read_outcomes`` returns them."""

    def __init__(self, outcomes: dict[str, list[dict]]) -> None:
        self.outcomes = outcomes
        self.artifacts: dict[str, Any] = {}
        self.records: dict[tuple[str, str], dict] = {}

    def get_property_record(self, property_id: str):
        from pricing.storage.registry import PropertyRecord

        live = self.records.get((property_id, "LIVE"), {})
        return PropertyRecord(property_id, None, live.get("version"), live.get("artifact_key"))

    def load_artifact(self, key: str) -> Any:
        return json.loads(json.dumps(self.artifacts[key]))

    def read_outcomes(self, property_id: str, since: str, limit: int | None = None) -> list[dict]:
        return [dict(r) for r in self.outcomes.get(property_id, []) if r["timestamp"] >= since]

    def put_artifact(self, key: str, document: dict) -> None:
        self.artifacts[key] = json.loads(json.dumps(document))

    def put_model_record(self, property_id: str, version: str, record: dict) -> None:
        self.records[(property_id, f"MODEL#{version}")] = dict(record)

    def swap_live_model(self, property_id, version, artifact_key, expected_version, deployed_at) -> None:
        self.records[(property_id, "LIVE")] = {"version": version, "artifact_key": artifact_key}

    def set_model_status(self, property_id: str, version: str, status: str, reason: str) -> None:
        self.records[(property_id, f"MODEL#{version}")].update(status=status, reason=reason)


def retrain_scaling(stack: AwsStack, repeats: dict[int, int] | None = None) -> list[Figure]:
    """Figure 6."""
    try:
        from pricing.services.retraining import RetrainingService
    except ImportError as exc:
        reason = f"pricing.services.retraining is not there yet: {exc}"
        return [Figure.waiting(f"retrain_{n}", f"6. retrain, {n:,} outcomes", reason) for n in RETRAIN_SIZES]
    from pricing.settings import Settings

    repeats = repeats or {1_000: 5, 10_000: 3, 100_000: 1}
    seconds: dict[int, list[float]] = {}
    outcome_counts: dict[int, int] = {}
    for n in RETRAIN_SIZES:
        for r in range(repeats[n]):
            property_id = f"bench-retrain-{n}-{r}"
            records = [{**rec, "property_id": property_id} for rec in stored_records(simulated_batch(property_id, n))]
            store = MemoryStore({property_id: records})
            service = RetrainingService(Settings.from_env(), store, store, store, store)
            started = time.perf_counter()
            result = service.retrain_property(property_id, force=True)
            seconds.setdefault(n, []).append(time.perf_counter() - started)
            if result.status not in ("deployed", "rejected"):
                raise RuntimeError(f"retrain of {n} outcomes did not fit a model: {result.status} {result.reason}")
            outcome_counts[n] = result.outcomes
    moto_read = _moto_read_seconds(stack, 5_000)
    base = median(seconds[RETRAIN_SIZES[0]])
    figures = []
    for n in RETRAIN_SIZES:
        value = median(seconds[n])
        first = n == RETRAIN_SIZES[0]
        figures.append(
            Figure(
                key=f"retrain_{n}",
                title=f"6. retrain, {n:,} outcomes",
                unit="s/property",
                value=value,
                baseline=None if first else base,
                baseline_name="" if first else "1,000 outcomes",
                ratio=None if first else value / base,
                runs=repeats[n],
                note=(
                    f"RetrainingService.retrain_property(force=True) on outcomes served from memory; linear growth "
                    f"would be 10x and 100x; reading 5,000 outcomes from moto alone takes {moto_read:.1f} s"
                )
                if first
                else "",
            )
        )
    return figures


def _moto_read_seconds(stack: AwsStack, n: int) -> float:
    outcomes = stack.stores().outcomes
    property_id = f"bench-read-{time.time_ns() % 10**9}"
    outcomes.write_outcomes([{**r, "property_id": property_id} for r in stored_records(simulated_batch(property_id, n))])
    started = time.perf_counter()
    outcomes.read_outcomes(property_id, "2000-01-01T00:00:00Z")
    return time.perf_counter() - started
