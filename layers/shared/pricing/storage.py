"""All access to AWS: S3 for model artifacts, DynamoDB for outcomes, the registry and experiments.

Nothing above this module imports boto3. Every failure to reach a store surfaces as
``StorageUnavailable`` so callers decide between falling back (scoring) and refusing to
acknowledge (ingestion) without knowing botocore's exception zoo.

boto3 honours ``AWS_ENDPOINT_URL``, so local runs point the same code at moto's server.

Tables (keys as in template.yaml):

* registry ``(property_id, record)``: ``record = "CONFIG"`` holds the property's base price;
  ``"LIVE"`` points at the deployed model version; ``"MODEL#<version>"`` keeps every version.
  Index ``RegistryByRecord (record, property_id)``: every LIVE pointer by one Query.
* experiments ``(experiment_id)``.
* outcomes ``(property_id, outcome_key)``: one item per outcome, keyed for idempotency. Sparse
  indexes: ``PropertiesWithOutcomes`` (one listing item per property) and ``ExperimentOutcomes
  (experiment_id, variant)`` (only attributed outcomes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator

from pricing.settings import Settings

logger = logging.getLogger("pricing.storage")

CONFIG_RECORD, LIVE_RECORD, MODEL_RECORD_PREFIX = "CONFIG", "LIVE", "MODEL#"

BATCH_GET_LIMIT, BATCH_WRITE_LIMIT, SQS_BATCH_LIMIT = 100, 25, 10  # the services' per-call maxima
OUTCOME_IO_WORKERS = 8
#: Outcomes are written one conditional PutItem each (see ``put_new_outcomes``): more calls in
#: flight than batch calls, and as many pooled connections (botocore's default pool is 10).
OUTCOME_PUT_WORKERS = 16
OUTCOME_IO_BUDGET_SECONDS = 20.0  # leaves a 29 s API Gateway request time to answer 503
UNPROCESSED_FIRST_DELAY, UNPROCESSED_MAX_DELAY = 0.05, 1.0
OUTCOME_READ_PAGE = 1000

# The outcomes table holds, besides outcomes, one listing item per property (key "#listing",
# which no outcome key can be: those start with "q:" or "h:"). Only listing items carry
# ``listing_shard``, so the index over it is sparse: the scheduled retrain lists 10,000
# properties by querying it, instead of scanning every outcome ever stored. Sharding keeps any
# one index partition from taking every listing write.
OUTCOME_LISTING_KEY = "#listing"
OUTCOME_PROPERTIES_INDEX = "PropertiesWithOutcomes"
#: Sparse too: only outcomes attributed to an A/B experiment carry ``experiment_id``.
OUTCOME_EXPERIMENTS_INDEX = "ExperimentOutcomes"
#: The registry by record kind: ``record = "LIVE"`` lists every property's live pointer.
REGISTRY_RECORDS_INDEX = "RegistryByRecord"
LISTING_SHARDS = 16


def listing_shard(property_id: str) -> str:
    return f"{int.from_bytes(hashlib.sha256(property_id.encode()).digest()[:4], 'big') % LISTING_SHARDS:02d}"


class StorageUnavailable(RuntimeError):
    """A store could not be reached, timed out, throttled us, or answered with an error."""


class StoreRefused(StorageUnavailable):
    """The store refused the request itself (ValidationException: a limit the domain should have
    checked), so an identical retry would fail the same way. A ``StorageUnavailable`` for callers
    that only know that one; ingestion refuses the one item instead of the batch."""


class ConditionFailed(RuntimeError):
    """A conditional write lost a race: the item was not in the expected state.

    ``item``: the item as stored, in DynamoDB's wire form, when the write asked for it.
    """

    def __init__(self, message: str, item: Any = None):
        super().__init__(message)
        self.item = item or {}


#: What became of one outcome given to ``put_new_outcomes``.
STORED, DUPLICATE, REFUSED = "stored", "duplicate", "refused"


class OutcomeWriteInterrupted(StorageUnavailable):
    """The store failed part-way through ``put_new_outcomes``; ``statuses`` says, per record,
    what is known: ``STORED``/``DUPLICATE``/``REFUSED``, or None where the write did not finish."""

    def __init__(self, message: str, statuses: list[str | None]):
        super().__init__(message)
        self.statuses = statuses


@dataclass(frozen=True)
class PropertyRecord:
    """What scoring needs to know about a property from the registry."""

    property_id: str
    base_price: float | None = None
    live_version: str | None = None
    artifact_key: str | None = None
    deployed_at: str | None = None  # when LIVE last changed (UTC, ``...Z``)
    # The holdback guard's decision for this live model (``pricing.domain.holdback``): None or
    # ``full`` until it beats rules, then ``maintenance`` from ``holdback_since``. A deploy
    # rewrites LIVE without them: a new model starts at the full share.
    holdback_mode: str | None = None
    holdback_since: str | None = None


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; the domain works in floats and ints."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_dynamo(v) for v in value]
    return value


class Storage:
    """Typed operations on the service's stores. Clients are created on first use, per container."""

    def __init__(self, settings: Settings, *, latency_critical: bool = False,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        """``latency_critical`` (scoring): fail in well under a second, since a fallback exists;
        otherwise (ingestion, retraining) retry harder, since the alternative is refusing work.
        ``clock`` stamps what is stored (``ingested_at``), as the services' clocks stamp the rest."""
        self.settings = settings
        self.latency_critical = latency_critical
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._session: Any = None
        self._serializer: Any = None
        self._deserializer: Any = None

    # -- plumbing -------------------------------------------------------------------------

    def _client(self, service: str):
        client = self._clients.get(service)
        if client is None:
            with self._lock:
                client = self._clients.get(service)
                if client is None:
                    # Imported lazily: boto3 costs cold-start time a health check need not pay.
                    import boto3
                    from botocore.config import Config

                    timeouts: dict[str, Any]
                    retries: Any  # botocore's _RetryDict
                    if self.latency_critical:
                        timeouts = {"connect_timeout": 0.3, "read_timeout": 0.5}
                        # No retry: botocore backs off up to a second before one, and a
                        # rule-based price now beats a model price a second late. (botocore's
                        # "max_attempts" counts retries, not attempts: 1 would mean one retry.)
                        retries = {"total_max_attempts": 1, "mode": "standard"}
                    else:
                        # Bounded well inside the ingest function's 29 s: a request that cannot
                        # be stored is refused (503) in seconds, never left to time out.
                        timeouts = {"connect_timeout": 0.5, "read_timeout": 3}
                        retries = {"total_max_attempts": 4, "mode": "standard"}
                    config = Config(**timeouts, retries=retries, tcp_keepalive=True,
                                    max_pool_connections=max(OUTCOME_PUT_WORKERS, OUTCOME_IO_WORKERS))
                    if self._session is None:
                        # One session for every client: the second client then reuses the
                        # session's loaded endpoint, partition and service-list data and its
                        # resolved credentials (~25 ms of a cold start's first request).
                        self._session = boto3.session.Session()
                    client = self._session.client(service, config=config)
                    self._clients[service] = client
        return client

    def _call(self, service: str, operation: str, **kwargs) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client(service), operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise ConditionFailed(str(exc), exc.response.get("Item")) from exc
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise KeyError(kwargs.get("Key")) from exc
            if code == "ValidationException":
                raise StoreRefused(f"{service}.{operation}: {code}") from exc
            raise StorageUnavailable(f"{service}.{operation}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"{service}.{operation}: {type(exc).__name__}") from exc

    def _pages(self, operation: str, page_size: int | None = None, **kwargs: Any) -> Iterator[dict]:
        """The pages of a paginated DynamoDB read (botocore's paginator follows LastEvaluatedKey),
        failures translated as ``_call`` does; stop iterating to stop reading. For the reads off
        the request path (retraining): the first paginator costs some 25-30 ms."""
        from botocore.exceptions import BotoCoreError, ClientError

        config = {"PageSize": page_size} if page_size else {}
        pages = self._client("dynamodb").get_paginator(operation).paginate(**kwargs, PaginationConfig=config)
        try:
            yield from pages
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ValidationException":
                raise StoreRefused(f"dynamodb.{operation}: {code}") from exc
            raise StorageUnavailable(f"dynamodb.{operation}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"dynamodb.{operation}: {type(exc).__name__}") from exc

    def _ser(self, item: dict) -> dict:
        if self._serializer is None:
            from boto3.dynamodb.types import TypeSerializer

            self._serializer = TypeSerializer()
        return {k: self._serializer.serialize(v) for k, v in _dynamo(item).items()}

    def _de(self, item: dict) -> dict:
        if self._deserializer is None:
            from boto3.dynamodb.types import TypeDeserializer

            self._deserializer = TypeDeserializer()
        return {k: _plain(self._deserializer.deserialize(v)) for k, v in item.items()}

    # -- registry: read side (scoring) ----------------------------------------------------

    def get_property_record(self, property_id: str) -> PropertyRecord:
        table = self.settings.registry_table
        keys = [{"property_id": {"S": property_id}, "record": {"S": r}} for r in (CONFIG_RECORD, LIVE_RECORD)]
        resp = self._call("dynamodb", "batch_get_item", RequestItems={table: {"Keys": keys}})
        if resp.get("UnprocessedKeys"):
            raise StorageUnavailable("registry read throttled")
        items = {i["record"]: i for i in map(self._de, resp.get("Responses", {}).get(table, []))}
        config, live = items.get(CONFIG_RECORD, {}), items.get(LIVE_RECORD, {})
        base = config.get("base_price")
        return PropertyRecord(
            property_id=property_id,
            base_price=float(base) if base is not None else None,
            live_version=live.get("version"),
            artifact_key=live.get("artifact_key"),
            deployed_at=live.get("deployed_at"),
            holdback_mode=live.get("holdback_mode"),
            holdback_since=live.get("holdback_since"),
        )

    def load_artifact(self, key: str) -> Any:
        """The JSON document stored at ``key``; ValueError when it is not JSON."""
        body = self._call("s3", "get_object", Bucket=self.settings.artifacts_bucket, Key=key)["Body"].read()
        return json.loads(body)

    def list_experiments(self) -> list[dict]:
        # By hand, not with a paginator: this read is on a cold /score's path, and the first
        # paginator costs it 25-30 ms (botocore.paginate, jmespath and the paginator model).
        items: list[dict] = []
        kwargs: dict[str, Any] = {"TableName": self.settings.experiments_table}
        while True:
            resp = self._call("dynamodb", "scan", **kwargs)
            items += [self._de(i) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    # -- read routes: registry, experiments and outcomes, a page at a time ------------------
    #
    # The /model, /ab and /learn/outcomes read routes. Each list is a Query (never a Scan of a
    # table that grows with outcomes or model versions) and comes back a page at a time with
    # DynamoDB's own LastEvaluatedKey as the cursor (``next_key``), which the API hands out as
    # an opaque token: one call's cost is bounded by ``limit`` whatever the table holds.

    def _page(self, kwargs: dict, limit: int, start_key: dict | None, operation: str = "query",
              ) -> tuple[list[dict], dict | None]:
        kwargs = {**kwargs, "Limit": limit}
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        resp = self._call("dynamodb", operation, **kwargs)
        return [self._de(i) for i in resp.get("Items", [])], resp.get("LastEvaluatedKey")

    def model_records_page(self, property_id: str, limit: int, start_key: dict | None = None,
                           ) -> tuple[list[dict], dict | None]:
        """One page of the property's model versions, newest first (versions sort by time)."""
        return self._page({
            "TableName": self.settings.registry_table,
            "KeyConditionExpression": "property_id = :p AND begins_with(#r, :m)",
            "ExpressionAttributeNames": {"#r": "record"},
            "ExpressionAttributeValues": {":p": {"S": property_id}, ":m": {"S": MODEL_RECORD_PREFIX}},
            "ScanIndexForward": False,
        }, limit, start_key)

    def get_model_record(self, property_id: str, version: str) -> dict | None:
        resp = self._call("dynamodb", "get_item", TableName=self.settings.registry_table,
                          Key={"property_id": {"S": property_id}, "record": {"S": MODEL_RECORD_PREFIX + version}})
        return self._de(resp["Item"]) if "Item" in resp else None

    def live_records_page(self, limit: int, start_key: dict | None = None) -> tuple[list[dict], dict | None]:
        """One page of LIVE pointers (every property with a live model or a rollback to rules),
        from the registry's ``RegistryByRecord`` index (keyed by ``record``: no extra attribute to write,
        and items written before the index existed are in it)."""
        return self._page({
            "TableName": self.settings.registry_table,
            "IndexName": REGISTRY_RECORDS_INDEX,
            "KeyConditionExpression": "#r = :live",
            "ExpressionAttributeNames": {"#r": "record"},
            "ExpressionAttributeValues": {":live": {"S": LIVE_RECORD}},
        }, limit, start_key)

    def training_outcomes(self, versions: list[tuple[str, str]]) -> int:
        """How many outcomes the given ``(property_id, version)`` models were trained on, summed
        (BatchGetItem of their records, 100 at a time, only the ``outcomes`` attribute)."""
        table, total = self.settings.registry_table, 0
        deadline = self._deadline(5.0)
        for start in range(0, len(versions), BATCH_GET_LIMIT):
            keys = [{"property_id": {"S": p}, "record": {"S": MODEL_RECORD_PREFIX + v}}
                    for p, v in versions[start:start + BATCH_GET_LIMIT]]
            request = {table: {"Keys": keys, "ProjectionExpression": "outcomes"}}
            for resp in self._retry_unprocessed("batch_get_item", request, "UnprocessedKeys", deadline):
                total += sum(int(self._de(i).get("outcomes") or 0) for i in resp.get("Responses", {}).get(table, []))
        return total

    def experiments_page(self, limit: int, start_key: dict | None = None) -> tuple[list[dict], dict | None]:
        """One page of the experiments table (small: one item per experiment ever created)."""
        return self._page({"TableName": self.settings.experiments_table}, limit, start_key, "scan")

    def get_experiment(self, experiment_id: str) -> dict | None:
        resp = self._call("dynamodb", "get_item", TableName=self.settings.experiments_table,
                          Key={"experiment_id": {"S": experiment_id}}, ConsistentRead=True)
        return self._de(resp["Item"]) if "Item" in resp else None

    def create_experiment(self, experiment: dict) -> None:
        """Store a new experiment; ``ConditionFailed`` when its id exists."""
        self._call("dynamodb", "put_item", TableName=self.settings.experiments_table, Item=self._ser(experiment),
                   ConditionExpression="attribute_not_exists(experiment_id)")

    def stop_experiment(self, experiment_id: str, stopped_at: str) -> None:
        """Mark the experiment inactive; ``ConditionFailed`` when there is no such experiment."""
        self._call(
            "dynamodb", "update_item", TableName=self.settings.experiments_table,
            Key={"experiment_id": {"S": experiment_id}},
            UpdateExpression="SET active = :f, stopped_at = if_not_exists(stopped_at, :t)",
            ConditionExpression="attribute_exists(experiment_id)",
            ExpressionAttributeValues={":f": {"BOOL": False}, ":t": {"S": stopped_at}},
        )

    def experiment_outcomes(self, experiment_id: str) -> Iterable[dict]:
        """Every outcome attributed to the experiment (``variant``, ``accepted``, prices), page
        by page from the outcomes table's sparse ``ExperimentOutcomes`` index: only attributed
        outcomes carry ``experiment_id``. Yields as it reads, so the caller can tally without
        holding them. The index is eventually consistent: an outcome stored a moment ago may
        come a moment later."""
        kwargs: dict[str, Any] = {
            "TableName": self.settings.outcomes_table,
            "IndexName": OUTCOME_EXPERIMENTS_INDEX,
            "KeyConditionExpression": "experiment_id = :e",
            "ExpressionAttributeValues": {":e": {"S": experiment_id}},
        }
        while True:
            resp = self._call("dynamodb", "query", **kwargs)
            yield from (self._de(item) for item in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def outcome_properties_page(self, limit: int, cursor: dict | None = None) -> tuple[list[str], dict | None]:
        """Up to ``limit`` property ids with outcomes, and the cursor to the rest (None: done).

        The listing index is sharded (``LISTING_SHARDS``): the cursor names the shard and the
        key within it."""
        shard, start = (cursor or {}).get("s", 0), (cursor or {}).get("k")
        found: list[str] = []
        while shard < LISTING_SHARDS and len(found) < limit:
            kwargs: dict[str, Any] = {
                "TableName": self.settings.outcomes_table, "IndexName": OUTCOME_PROPERTIES_INDEX,
                "KeyConditionExpression": "listing_shard = :s",
                "ExpressionAttributeValues": {":s": {"S": f"{shard:02d}"}},
                "ProjectionExpression": "property_id, outcome_key, listing_shard", "Limit": limit - len(found),
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = self._call("dynamodb", "query", **kwargs)
            found += [item["property_id"]["S"] for item in resp.get("Items", [])]
            start = resp.get("LastEvaluatedKey")
            if start is None:
                shard += 1
        if shard >= LISTING_SHARDS:
            return found, None
        return found, {"s": shard, "k": start} if start else {"s": shard}

    def has_outcome_listing(self, property_id: str) -> bool:
        resp = self._call("dynamodb", "get_item", TableName=self.settings.outcomes_table,
                          Key={"property_id": {"S": property_id}, "outcome_key": {"S": OUTCOME_LISTING_KEY}},
                          ProjectionExpression="property_id")
        return "Item" in resp

    def outcome_stats_pages(self, property_id: str, max_items: int) -> Iterable[dict]:
        """The property's outcomes with only the attributes statistics need, up to ``max_items``."""
        kwargs: dict[str, Any] = {
            "TableName": self.settings.outcomes_table, "Limit": OUTCOME_READ_PAGE,
            "KeyConditionExpression": "property_id = :p AND begins_with(outcome_key, :o)",
            "ProjectionExpression": "#ts, accepted, quoted_price, final_price, comp_p10, comp_p50, comp_p90, context",
            "ExpressionAttributeNames": {"#ts": "timestamp"},
            "ExpressionAttributeValues": {":p": {"S": property_id}},
        }
        read = 0
        # Outcome keys start "q:" or "h:": two key ranges, never the "#listing" item.
        for prefix in ("h:", "q:"):
            kwargs["ExpressionAttributeValues"] = {":p": {"S": property_id}, ":o": {"S": prefix}}
            kwargs.pop("ExclusiveStartKey", None)
            while read < max_items:
                kwargs["Limit"] = min(OUTCOME_READ_PAGE, max_items - read)
                resp = self._call("dynamodb", "query", **kwargs)
                items = resp.get("Items", [])
                read += len(items)
                yield from (self._de(item) for item in items)
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    # -- registry and experiments: write side (operations, demo seeding, retraining) -------

    def put_property_config(self, property_id: str, base_price: float) -> None:
        item = {"property_id": property_id, "record": CONFIG_RECORD, "base_price": base_price}
        self._call("dynamodb", "put_item", TableName=self.settings.registry_table, Item=self._ser(item))

    def put_experiment(self, experiment: dict) -> None:
        self._call("dynamodb", "put_item", TableName=self.settings.experiments_table, Item=self._ser(experiment))

    def put_artifact(self, key: str, document: dict) -> None:
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        self._call(
            "s3", "put_object", Bucket=self.settings.artifacts_bucket, Key=key, Body=body,
            ContentType="application/json",
        )

    def put_items(self, table: str, items: Iterable[dict]) -> None:
        for item in items:
            self._call("dynamodb", "put_item", TableName=table, Item=self._ser(item))

    # -- outcomes: ingestion (write side) -------------------------------------------------
    #
    # A /learn batch of 10,000 new outcomes is 100 BatchGetItem calls (which of them are stored
    # already) and 10,000 conditional PutItem calls, one per new outcome: only a conditional write
    # says whether *this* request stored the item or a concurrent one did, and BatchWriteItem
    # takes no conditions. (TransactWriteItems would take 100 at a time, at twice the write cost,
    # and fail together on any one duplicate.) They run on thread pools (boto3 clients are
    # thread-safe), so the batch finishes in a few seconds, well inside API Gateway's 29 s.
    # DynamoDB may return part of a batch read unprocessed under throttling: those keys are
    # retried with exponential backoff until a deadline, after which the whole call fails -- the
    # caller must never acknowledge an unstored outcome.

    def _outcome_io_pool(self, workers: int = OUTCOME_IO_WORKERS):
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outcome-io")

    @staticmethod
    def _deadline(budget_seconds: float | None) -> float:
        # The module's budget read at call time, so a test against a slow local store can widen it.
        return time.monotonic() + (OUTCOME_IO_BUDGET_SECONDS if budget_seconds is None else budget_seconds)

    def _retry_unprocessed(self, operation: str, request: dict, leftover_key: str, deadline: float) -> list[dict]:
        """Run a batch operation until DynamoDB has processed all of it; return every response."""
        responses, delay = [], UNPROCESSED_FIRST_DELAY
        while True:
            resp = self._call("dynamodb", operation, **{"RequestItems": request})
            responses.append(resp)
            request = resp.get(leftover_key) or {}
            if not request:
                return responses
            if time.monotonic() + delay > deadline:
                raise StorageUnavailable(f"dynamodb.{operation}: items still unprocessed at the deadline")
            time.sleep(delay * (0.5 + random.random()))  # jitter: retries of parallel calls spread out
            delay = min(delay * 2, UNPROCESSED_MAX_DELAY)

    def existing_outcome_keys(
        self, keys: list[tuple[str, str]], *, budget_seconds: float | None = None
    ) -> set[tuple[str, str]]:
        """Which ``(property_id, outcome_key)`` pairs are already stored.

        Only a first sort: the conditional writes of ``put_new_outcomes`` decide. A chunk of keys
        the store refuses to look up (a key it cannot hold) counts as not stored.
        Raises ``StorageUnavailable`` when the table cannot be read in ``budget_seconds``.
        """
        table = self.settings.outcomes_table
        deadline = self._deadline(budget_seconds)
        chunks = [keys[i : i + BATCH_GET_LIMIT] for i in range(0, len(keys), BATCH_GET_LIMIT)]

        def fetch(chunk: list[tuple[str, str]]) -> set[tuple[str, str]]:
            request = {
                table: {
                    "Keys": [{"property_id": {"S": p}, "outcome_key": {"S": k}} for p, k in chunk],
                    "ProjectionExpression": "property_id, outcome_key",
                }
            }
            found: set[tuple[str, str]] = set()
            try:
                responses = self._retry_unprocessed("batch_get_item", request, "UnprocessedKeys", deadline)
            except StoreRefused:
                return found
            for resp in responses:
                for item in resp.get("Responses", {}).get(table, []):
                    found.add((item["property_id"]["S"], item["outcome_key"]["S"]))
            return found

        if len(chunks) <= 1:
            return set().union(*map(fetch, chunks))
        with self._outcome_io_pool() as pool:
            return set().union(*pool.map(fetch, chunks))

    @staticmethod
    def _listing_items(property_ids: Iterable[str], now: str) -> list[dict]:
        return [
            {
                "property_id": property_id,
                "outcome_key": OUTCOME_LISTING_KEY,
                "listing_shard": listing_shard(property_id),
                "last_ingested_at": now,
            }
            for property_id in sorted(set(property_ids))
        ]

    def put_new_outcomes(
        self, records: list[dict], *, write_id: str, budget_seconds: float | None = None
    ) -> list[str]:
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
        table = self.settings.outcomes_table
        deadline = self._deadline(budget_seconds)
        # Microseconds: retraining compares this with a model's training time to tell which
        # outcomes the model has not seen.
        now = self._clock().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        statuses: list[str | None] = [None] * len(records)
        if not records:
            return []
        listing = self._listing_items((r["property_id"] for r in records), now)
        try:
            self._batch_put(table, listing, deadline)
        except StorageUnavailable as exc:
            raise OutcomeWriteInterrupted(str(exc), statuses) from exc

        def put(index: int) -> None:
            if time.monotonic() > deadline:
                raise StorageUnavailable("dynamodb.put_item: outcome writes unfinished at the deadline")
            try:
                item = self._ser({**records[index], "ingested_at": now, "write_id": write_id})
            except (ArithmeticError, TypeError, ValueError):  # decimal's Overflow, Underflow, Inexact...
                logger.error("outcome not representable in DynamoDB: refused", extra={"index": index})
                statuses[index] = REFUSED
                return
            try:
                self._call(
                    "dynamodb", "put_item", TableName=table, Item=item,
                    ConditionExpression="attribute_not_exists(outcome_key)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                statuses[index] = STORED
            except ConditionFailed as exc:
                mine = exc.item.get("write_id", {}).get("S") == write_id
                statuses[index] = STORED if mine else DUPLICATE
            except StoreRefused as exc:
                logger.error("outcome refused by the store", extra={"index": index, "error": str(exc)})
                statuses[index] = REFUSED

        failure: BaseException | None = None
        with self._outcome_io_pool(min(OUTCOME_PUT_WORKERS, len(records))) as pool:
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

    def _batch_put(self, table: str, items: list[dict], deadline: float) -> None:
        """Plain puts of ``items``, 25 per BatchWriteItem, unprocessed ones retried to ``deadline``."""
        for start in range(0, len(items), BATCH_WRITE_LIMIT):
            request = {table: [{"PutRequest": {"Item": self._ser(item)}} for item in items[start : start + BATCH_WRITE_LIMIT]]}
            self._retry_unprocessed("batch_write_item", request, "UnprocessedItems", deadline)

    def write_outcomes(self, records: list[dict], *, budget_seconds: float | None = None) -> None:
        """Bulk-load outcome records (each with ``property_id`` and ``outcome_key``) by plain,
        unconditional puts, and mark each property as having outcomes (benchmarks and seeding:
        ingestion uses ``put_new_outcomes``, which knows which writes were its own).

        Repeating this call after a failure stores the same items again, never a second copy.
        Raises ``StorageUnavailable``.
        """
        table = self.settings.outcomes_table
        deadline = self._deadline(budget_seconds)
        now = self._clock().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        items = [{**r, "ingested_at": now} for r in records]
        items += self._listing_items((r["property_id"] for r in records), now)
        chunks = [items[i : i + BATCH_WRITE_LIMIT] for i in range(0, len(items), BATCH_WRITE_LIMIT)]

        def put(chunk: list[dict]) -> None:
            request = {table: [{"PutRequest": {"Item": self._ser(item)}} for item in chunk]}
            self._retry_unprocessed("batch_write_item", request, "UnprocessedItems", deadline)

        if len(chunks) <= 1:
            for chunk in chunks:
                put(chunk)
            return
        with self._outcome_io_pool() as pool:
            list(pool.map(put, chunks))  # list(): re-raise the first failure here

    # -- outcomes: retraining (read side) -------------------------------------------------

    def list_outcome_properties(self) -> list[str]:
        """Every property that has ever sent outcomes, from the sparse listing index (sorted)."""
        found: set[str] = set()
        for shard in range(LISTING_SHARDS):
            for page in self._pages(
                "query", TableName=self.settings.outcomes_table, IndexName=OUTCOME_PROPERTIES_INDEX,
                KeyConditionExpression="listing_shard = :s", ExpressionAttributeValues={":s": {"S": f"{shard:02d}"}},
                ProjectionExpression="property_id",
            ):
                found.update(item["property_id"]["S"] for item in page.get("Items", []))
        return sorted(found)

    def read_outcomes(self, property_id: str, since: str, limit: int | None = None) -> list[dict]:
        """The property's outcome records with ``timestamp >= since`` (UTC ISO text), any order.

        Read in pages of ``OUTCOME_READ_PAGE`` items rather than DynamoDB's 1 MB default, so no
        single call comes near the client's read timeout, even on a slow or local endpoint.
        """
        records: list[dict] = []
        for page in self._pages(
            "query", page_size=OUTCOME_READ_PAGE, TableName=self.settings.outcomes_table,
            KeyConditionExpression="property_id = :p", FilterExpression="#ts >= :since",
            ExpressionAttributeNames={"#ts": "timestamp"},
            ExpressionAttributeValues={":p": {"S": property_id}, ":since": {"S": since}},
        ):
            records += [self._de(item) for item in page.get("Items", [])]
            if limit is not None and len(records) >= limit:
                break
        return records

    # -- registry: model versions and the live pointer (retraining) ------------------------

    def put_model_record(self, property_id: str, version: str, record: dict) -> None:
        """Record a model version (metrics, decision, artifact key). Versions are immutable:
        writing an existing version raises ``ConditionFailed``."""
        item = {**record, "property_id": property_id, "record": MODEL_RECORD_PREFIX + version, "version": version}
        self._call(
            "dynamodb", "put_item", TableName=self.settings.registry_table, Item=self._ser(item),
            ConditionExpression="attribute_not_exists(#r)", ExpressionAttributeNames={"#r": "record"},
        )

    def set_model_status(self, property_id: str, version: str, status: str, reason: str) -> None:
        self._call(
            "dynamodb", "update_item", TableName=self.settings.registry_table,
            Key={"property_id": {"S": property_id}, "record": {"S": MODEL_RECORD_PREFIX + version}},
            UpdateExpression="SET #s = :s, reason = :r",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}, ":r": {"S": reason}},
        )

    def list_model_records(self, property_id: str) -> list[dict]:
        pages = self._pages(
            "query", TableName=self.settings.registry_table,
            KeyConditionExpression="property_id = :p AND begins_with(#r, :m)", ExpressionAttributeNames={"#r": "record"},
            ExpressionAttributeValues={":p": {"S": property_id}, ":m": {"S": MODEL_RECORD_PREFIX}},
        )
        return [self._de(item) for page in pages for item in page.get("Items", [])]

    def swap_live_model(
        self, property_id: str, version: str, artifact_key: str | None, expected_version: str | None, deployed_at: str
    ) -> None:
        """Point the property's LIVE record at ``version``, only if it still points at
        ``expected_version`` (None: only if there is no live model yet).

        One conditional write: two concurrent retrains cannot both replace the same incumbent,
        and the pointer only ever names an artifact that was written before it. Raises
        ``ConditionFailed`` when the live model changed since it was read.
        """
        item = {
            "property_id": property_id,
            "record": LIVE_RECORD,
            "version": version,
            "artifact_key": artifact_key,
            "deployed_at": deployed_at,
            "previous_version": expected_version,
        }
        if expected_version is None:
            condition = {"ConditionExpression": "attribute_not_exists(#r)", "ExpressionAttributeNames": {"#r": "record"}}
        else:
            condition = {
                "ConditionExpression": "#v = :expected",
                "ExpressionAttributeNames": {"#v": "version"},
                "ExpressionAttributeValues": {":expected": {"S": expected_version}},
            }
        self._call("dynamodb", "put_item", TableName=self.settings.registry_table, Item=self._ser(item), **condition)

    def set_holdback_mode(self, property_id: str, version: str, mode: str, since: str) -> None:
        """Record the holdback guard's decision on the LIVE pointer, only while it still names
        ``version`` (a model deployed meanwhile starts at the full share). ``ConditionFailed``
        otherwise."""
        self._call(
            "dynamodb", "update_item", TableName=self.settings.registry_table,
            Key={"property_id": {"S": property_id}, "record": {"S": LIVE_RECORD}},
            UpdateExpression="SET holdback_mode = :m, holdback_since = :s",
            ConditionExpression="#v = :v",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":m": {"S": mode}, ":s": {"S": since}, ":v": {"S": version}},
        )

    # -- retrain fan-out ------------------------------------------------------------------

    def enqueue_messages(self, queue_url: str, bodies: list[dict]) -> None:
        """Send JSON messages to an SQS queue, ten per call; raises ``StorageUnavailable`` when
        any message is still refused after one retry."""
        entries = [{"Id": str(i), "MessageBody": json.dumps(b, separators=(",", ":"))} for i, b in enumerate(bodies)]
        for start in range(0, len(entries), SQS_BATCH_LIMIT):
            pending = entries[start : start + SQS_BATCH_LIMIT]
            for _ in range(2):
                resp = self._call("sqs", "send_message_batch", QueueUrl=queue_url, Entries=pending)
                failed = {f["Id"] for f in resp.get("Failed", [])}
                pending = [e for e in pending if e["Id"] in failed]
                if not pending:
                    break
            if pending:
                raise StorageUnavailable(f"sqs.send_message_batch: {len(pending)} messages refused")



# -- secrets ------------------------------------------------------------------------------
#
# Credentials live in Secrets Manager, never in the template or the function's environment: the
# template passes only the secrets' ARNs. They are fetched once per container, by the app module
# as it builds its configuration (``resolve_secrets``), with a short timeout: a cold start must not
# hang on them. A secret that cannot be had leaves its value empty -- the competitor backend or
# the Pushgateway then refuses us, which is counted and alerted on -- rather than failing the
# container: neither credential is needed to price a quote or store an outcome.

SECRET_TIMEOUTS: dict[str, Any] = {"connect_timeout": 1, "read_timeout": 2}


def fetch_secret(arn: str) -> str:
    """The ``SecretString`` of the Secrets Manager secret ``arn``; raises ``StorageUnavailable``."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    config = Config(**SECRET_TIMEOUTS, retries={"total_max_attempts": 2, "mode": "standard"})
    try:
        client = boto3.session.Session().client("secretsmanager", config=config)
        value = client.get_secret_value(SecretId=arn).get("SecretString")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise StorageUnavailable(f"secretsmanager.get_secret_value: {code}") from None
    except BotoCoreError as exc:
        raise StorageUnavailable(f"secretsmanager.get_secret_value: {type(exc).__name__}") from None
    if not isinstance(value, str):
        raise StorageUnavailable("secretsmanager.get_secret_value: the secret has no SecretString")
    return value


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def resolve_secrets(settings: Settings) -> Settings:
    """``settings`` with the credentials its ``*_secret_arn`` fields name, fetched from Secrets Manager.

    ``BACKEND_API_KEY_SECRET_ARN``: the secret is the key itself, or ``{"api_key": "..."}``.
    ``PUSHGATEWAY_CREDENTIALS_SECRET_ARN``: ``{"username": "...", "password": "..."}`` or
    ``{"bearer_token": "..."}``. A value set directly in the environment wins (local runs). Never
    raises: a secret that cannot be fetched or read is logged (by ARN, never by value) and left empty.
    Without an ARN to resolve it returns at once, without importing boto3.
    """
    if not (settings.backend_api_key_secret_arn or settings.pushgateway_credentials_secret_arn):
        return settings
    import dataclasses
    import logging

    log = logging.getLogger("pricing.storage")
    changes: dict[str, Any] = {}
    if settings.backend_api_key_secret_arn and not settings.backend_api_key:
        try:
            text = fetch_secret(settings.backend_api_key_secret_arn)
            doc = _json_object(text)
            key = doc.get("api_key") if doc is not None else text.strip()
            if isinstance(key, str) and key:
                changes["backend_api_key"] = key
            else:
                log.error("secret %s holds no API key", settings.backend_api_key_secret_arn)
        except StorageUnavailable as exc:
            log.error("backend API key secret %s unavailable: %s", settings.backend_api_key_secret_arn, exc)
    pushgateway_given = settings.pushgateway_username or settings.pushgateway_bearer_token
    if settings.pushgateway_credentials_secret_arn and not pushgateway_given:
        try:
            doc = _json_object(fetch_secret(settings.pushgateway_credentials_secret_arn)) or {}
            if isinstance(doc.get("bearer_token"), str) and doc["bearer_token"]:
                changes["pushgateway_bearer_token"] = doc["bearer_token"]
            elif isinstance(doc.get("username"), str) and doc["username"] and isinstance(doc.get("password"), str):
                changes["pushgateway_username"] = doc["username"]
                changes["pushgateway_password"] = doc["password"]
            else:
                log.error("secret %s holds neither username/password nor bearer_token",
                          settings.pushgateway_credentials_secret_arn)
        except StorageUnavailable as exc:
            log.error("Pushgateway credentials secret %s unavailable: %s",
                      settings.pushgateway_credentials_secret_arn, exc)
    return dataclasses.replace(settings, **changes) if changes else settings
