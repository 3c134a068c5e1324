"""Booking outcomes (DynamoDB, keys ``(property_id, outcome_key)``): one item per outcome, keyed
for idempotency, written by ingestion, read by retraining and the outcome and experiment routes.

Besides outcomes the table holds one listing item per property (key ``#listing``, which no outcome
key can be: those start with ``q:`` or ``h:``). Only listing items carry ``listing_shard``, so the
index over it (``PropertiesWithOutcomes``) is sparse: the scheduled retrain lists 10,000
properties by querying it, instead of scanning every outcome ever stored. Sharding keeps any one
index partition from taking every listing write. ``ExperimentOutcomes (experiment_id, variant)``
is sparse too: only outcomes attributed to an A/B experiment carry ``experiment_id``.

A /learn batch of 10,000 new outcomes is 100 BatchGetItem calls (which of them are stored
already) and 10,000 conditional PutItem calls, one per new outcome: only a conditional write says
whether *this* request stored the item or a concurrent one did, and BatchWriteItem takes no
conditions. (TransactWriteItems would take 100 at a time, at twice the write cost, and fail
together on any one duplicate.) They run on thread pools, so the batch finishes in a few seconds,
well inside API Gateway's 29 s. Keys left unprocessed under throttling are retried until a
deadline, after which the whole call fails: the caller must never acknowledge an unstored outcome.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pricing.storage.aws import BATCH_GET_LIMIT, BATCH_WRITE_LIMIT, POOL_CONNECTIONS, AwsClients, Item, Table, from_wire, to_wire
from pricing.storage.errors import ConditionFailed, StorageUnavailable, StoreRefused

logger = logging.getLogger("pricing.storage")

OUTCOME_IO_WORKERS = 8
#: Outcomes are written one conditional PutItem each (see ``put_new_outcomes``): more calls in
#: flight than batch calls, as many as the clients pool connections.
OUTCOME_PUT_WORKERS = POOL_CONNECTIONS
OUTCOME_IO_BUDGET_SECONDS = 20.0  # leaves a 29 s API Gateway request time to answer 503
OUTCOME_READ_PAGE = 1000

OUTCOME_LISTING_KEY = "#listing"
OUTCOME_PROPERTIES_INDEX = "PropertiesWithOutcomes"
OUTCOME_EXPERIMENTS_INDEX = "ExperimentOutcomes"
LISTING_SHARDS = 16

#: What became of one outcome given to ``put_new_outcomes``.
STORED, DUPLICATE, REFUSED = "stored", "duplicate", "refused"


def listing_shard(property_id: str) -> str:
    return f"{int.from_bytes(hashlib.sha256(property_id.encode()).digest()[:4], 'big') % LISTING_SHARDS:02d}"


class OutcomeWriteInterrupted(StorageUnavailable):
    """The store failed part-way through ``put_new_outcomes``; ``statuses`` says, per record,
    what is known: ``STORED``/``DUPLICATE``/``REFUSED``, or None where the write did not finish."""

    def __init__(self, message: str, statuses: list[str | None]):
        super().__init__(message)
        self.statuses = statuses


def _deadline(budget_seconds: float | None) -> float:
    # The module's budget read at call time, so a test against a slow local store can widen it.
    return time.monotonic() + (OUTCOME_IO_BUDGET_SECONDS if budget_seconds is None else budget_seconds)


def _pool(workers: int = OUTCOME_IO_WORKERS) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outcome-io")


def _listing_items(property_ids: Iterable[str], now: str) -> list[Item]:
    return [
        {"property_id": p, "outcome_key": OUTCOME_LISTING_KEY, "listing_shard": listing_shard(p), "last_ingested_at": now}
        for p in sorted(set(property_ids))
    ]


class OutcomeStore:
    """``clock`` stamps what is stored (``ingested_at``), as the services' clocks stamp the rest."""

    def __init__(self, aws: AwsClients, table: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.table = Table(aws, table)
        self._clock = clock

    def _now(self) -> str:
        # Microseconds: retraining compares this with a model's training time to tell which
        # outcomes the model has not seen.
        return self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # -- ingestion ----------------------------------------------------------------------------

    def existing_outcome_keys(
        self,
        keys: list[tuple[str, str]],
        *,
        budget_seconds: float | None = None,
    ) -> set[tuple[str, str]]:
        """Which ``(property_id, outcome_key)`` pairs are already stored.

        Only a first sort: the conditional writes of ``put_new_outcomes`` decide. A chunk of keys
        the store refuses to look up (a key it cannot hold) counts as not stored.
        Raises ``StorageUnavailable`` when the table cannot be read in ``budget_seconds``.
        """
        deadline = _deadline(budget_seconds)
        chunks = [keys[i : i + BATCH_GET_LIMIT] for i in range(0, len(keys), BATCH_GET_LIMIT)]

        def fetch(chunk: list[tuple[str, str]]) -> set[tuple[str, str]]:
            try:
                items = self.table.batch_get(
                    [{"property_id": p, "outcome_key": k} for p, k in chunk], deadline, ProjectionExpression="property_id, outcome_key"
                )
            except StoreRefused:
                return set()
            return {(i["property_id"], i["outcome_key"]) for i in items}

        if len(chunks) <= 1:
            return set().union(*map(fetch, chunks))
        with _pool() as pool:
            return set().union(*pool.map(fetch, chunks))

    def put_new_outcomes(self, records: list[Item], *, write_id: str, budget_seconds: float | None = None) -> list[str]:
        """Store each outcome record (with ``property_id`` and ``outcome_key``) unless its key is
        stored already; return, per record, ``STORED`` (this call wrote it), ``DUPLICATE`` (it
        was there: an earlier or a concurrent request wrote it) or ``REFUSED`` (the store cannot
        hold it: a limit validation missed; logged, never retried).

        Each record is one ``attribute_not_exists`` PutItem, so of concurrent writers of one key
        exactly one is told it stored it. ``write_id`` (unique per request) is stored with the
        item: when botocore retries a write the store had already applied, the conditional
        failure returns the item, and our own ``write_id`` in it means stored, not duplicate.
        The properties are marked as having outcomes first (listing items), so every stored
        outcome is listed for retraining.

        Raises ``OutcomeWriteInterrupted`` (a ``StorageUnavailable``) when the store fails or the
        budget runs out, with what was settled so far: the caller claims nothing, but may count
        what was written.
        """
        deadline, now = _deadline(budget_seconds), self._now()
        statuses: list[str | None] = [None] * len(records)
        if not records:
            return []
        try:
            self.table.batch_put(_listing_items((r["property_id"] for r in records), now), deadline)
        except StorageUnavailable as exc:
            raise OutcomeWriteInterrupted(str(exc), statuses) from exc
        aws, table = self.table.aws, self.table.name

        def put(index: int) -> None:
            if time.monotonic() > deadline:
                raise StorageUnavailable("dynamodb.put_item: outcome writes unfinished at the deadline")
            try:
                item = to_wire({**records[index], "ingested_at": now, "write_id": write_id})
            except (ArithmeticError, TypeError, ValueError):  # decimal's Overflow, Underflow, Inexact...
                logger.error("outcome not representable in DynamoDB: refused", extra={"index": index})
                statuses[index] = REFUSED
                return
            try:
                aws.call(
                    "dynamodb",
                    "put_item",
                    TableName=table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(outcome_key)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                statuses[index] = STORED
            except ConditionFailed as exc:
                statuses[index] = STORED if exc.item.get("write_id", {}).get("S") == write_id else DUPLICATE
            except StoreRefused as exc:
                logger.error("outcome refused by the store", extra={"index": index, "error": str(exc)})
                statuses[index] = REFUSED

        failure: BaseException | None = None
        with _pool(min(OUTCOME_PUT_WORKERS, len(records))) as pool:
            futures = [pool.submit(put, i) for i in range(len(records))]
            for future in futures:
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None and failure is None:
                    failure = error
                    pool.shutdown(wait=True, cancel_futures=True)  # not-started writes are dropped
        if failure is not None:
            if not isinstance(failure, StorageUnavailable):
                raise failure
            raise OutcomeWriteInterrupted(str(failure), statuses) from failure
        return statuses  # type: ignore[return-value]  # every record settled

    def write_outcomes(self, records: list[Item], *, budget_seconds: float | None = None) -> None:
        """Bulk-load outcome records (each with ``property_id`` and ``outcome_key``) by plain,
        unconditional puts, and mark each property as having outcomes (benchmarks and seeding:
        ingestion uses ``put_new_outcomes``, which knows which writes were its own).

        Repeating this call after a failure stores the same items again, never a second copy.
        Raises ``StorageUnavailable``.
        """
        deadline, now = _deadline(budget_seconds), self._now()
        items = [{**r, "ingested_at": now} for r in records] + _listing_items((r["property_id"] for r in records), now)
        chunks = [items[i : i + BATCH_WRITE_LIMIT] for i in range(0, len(items), BATCH_WRITE_LIMIT)]
        if len(chunks) <= 1:
            self.table.batch_put(items, deadline)
            return
        with _pool() as pool:
            list(pool.map(lambda chunk: self.table.batch_put(chunk, deadline), chunks))  # list(): re-raise here

    # -- retraining ---------------------------------------------------------------------------

    def list_outcome_properties(self) -> list[str]:
        """Every property that has ever sent outcomes, from the sparse listing index (sorted)."""
        found: set[str] = set()
        for shard in range(LISTING_SHARDS):
            found.update(
                item["property_id"]
                for item in self.table.query(
                    IndexName=OUTCOME_PROPERTIES_INDEX,
                    KeyConditionExpression="listing_shard = :s",
                    values={":s": f"{shard:02d}"},
                    ProjectionExpression="property_id",
                )
            )
        return sorted(found)

    def read_outcomes(self, property_id: str, since: str, limit: int | None = None) -> list[Item]:
        """The property's outcome records with ``timestamp >= since`` (UTC ISO text), any order.

        Read in pages of ``OUTCOME_READ_PAGE`` items rather than DynamoDB's 1 MB default, so no
        single call comes near the client's read timeout, even on a slow or local endpoint.
        ``limit`` stops reading once that many are read (the last page is kept whole).
        """
        records: list[Item] = []
        for page in self.table.aws.pages(
            "dynamodb",
            "query",
            page_size=OUTCOME_READ_PAGE,
            TableName=self.table.name,
            KeyConditionExpression="property_id = :p",
            FilterExpression="#ts >= :since",
            ExpressionAttributeNames={"#ts": "timestamp"},
            ExpressionAttributeValues=to_wire({":p": property_id, ":since": since}),
        ):
            records += [from_wire(i) for i in page.get("Items", [])]
            if limit is not None and len(records) >= limit:
                break
        return records

    # -- the outcome and experiment routes ----------------------------------------------------

    def experiment_outcomes(self, experiment_id: str) -> Iterator[Item]:
        """Every outcome attributed to the experiment (``variant``, ``accepted``, prices), page
        by page from the sparse ``ExperimentOutcomes`` index. Yields as it reads, so the caller
        can tally without holding them. The index is eventually consistent: an outcome stored a
        moment ago may come a moment later."""
        return self.table.query(
            IndexName=OUTCOME_EXPERIMENTS_INDEX, KeyConditionExpression="experiment_id = :e", values={":e": experiment_id}
        )

    def outcome_properties_page(self, limit: int, cursor: dict[str, Any] | None = None) -> tuple[list[str], dict[str, Any] | None]:
        """Up to ``limit`` property ids with outcomes, and the cursor to the rest (None: done).

        The listing index is sharded (``LISTING_SHARDS``): the cursor names the shard and the
        key within it. A cursor this did not hand out raises ``StoreRefused``."""
        shard, start = (cursor or {}).get("s", 0), (cursor or {}).get("k")
        if not (isinstance(shard, int) and 0 <= shard < LISTING_SHARDS) or not (start is None or isinstance(start, dict)):
            raise StoreRefused("outcomes: not a cursor of this list")
        found: list[str] = []
        while shard < LISTING_SHARDS and len(found) < limit:
            items, start = self.table.page(
                "query",
                limit - len(found),
                start,
                IndexName=OUTCOME_PROPERTIES_INDEX,
                KeyConditionExpression="listing_shard = :s",
                values={":s": f"{shard:02d}"},
                ProjectionExpression="property_id, outcome_key, listing_shard",
            )
            found += [item["property_id"] for item in items]
            if start is None:
                shard += 1
        if shard >= LISTING_SHARDS:
            return found, None
        return found, {"s": shard, "k": start} if start else {"s": shard}

    def has_outcome_listing(self, property_id: str) -> bool:
        key = {"property_id": property_id, "outcome_key": OUTCOME_LISTING_KEY}
        return self.table.get(key, ProjectionExpression="property_id") is not None

    def outcome_stats_pages(self, property_id: str, max_items: int) -> Iterator[Item]:
        """The property's outcomes with only the attributes statistics need, up to ``max_items``."""
        read = 0
        # Outcome keys start "q:" or "h:": two key ranges, never the "#listing" item.
        for prefix in ("h:", "q:"):
            if read >= max_items:
                return
            for item in self.table.query(
                page_size=OUTCOME_READ_PAGE,
                max_items=max_items - read,
                KeyConditionExpression="property_id = :p AND begins_with(outcome_key, :o)",
                ProjectionExpression="#ts, accepted, quoted_price, final_price, comp_p10, comp_p50, comp_p90, context",
                ExpressionAttributeNames={"#ts": "timestamp"},
                values={":p": property_id, ":o": prefix},
            ):
                read += 1
                yield item
