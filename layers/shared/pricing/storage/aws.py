"""The core every store shares: boto3 clients with one timeout and retry policy, botocore's
errors mapped to ``pricing.storage.errors``, and DynamoDB tables spoken to in plain values.

boto3 and botocore are imported on first use, not with this module: a health check or a
validation error need not pay for them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from pricing.storage.errors import ConditionFailed, StorageUnavailable, StoreRefused

#: Connections per client: as many as the outcome writes run in parallel (botocore's default is 10).
POOL_CONNECTIONS = 16
UNPROCESSED_FIRST_DELAY, UNPROCESSED_MAX_DELAY = 0.05, 1.0
BATCH_GET_LIMIT, BATCH_WRITE_LIMIT = 100, 25  # DynamoDB's per-call maxima

Item = dict[str, Any]
Page = tuple[list[Item], "Item | None"]  # a page of items and the key to the next (None: the last)


def _translate(exc: Exception, service: str, operation: str, key: Any = None) -> Exception:
    """botocore's exception as the stores' own. ``exc`` must be a ClientError or BotoCoreError."""
    from botocore.exceptions import ParamValidationError

    if isinstance(exc, ParamValidationError):  # refused before sending (a forged page cursor): as the store would
        return StoreRefused(f"{service}.{operation}: {type(exc).__name__}")
    response = getattr(exc, "response", None)
    if response is None:  # BotoCoreError: no answer at all (connection, timeout, credentials)
        return StorageUnavailable(f"{service}.{operation}: {type(exc).__name__}")
    code = response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        return ConditionFailed(str(exc), response.get("Item"))
    if code in {"NoSuchKey", "404", "NotFound"}:
        return KeyError(key)
    if code == "ValidationException":
        return StoreRefused(f"{service}.{operation}: {code}")
    return StorageUnavailable(f"{service}.{operation}: {code or exc}")


class AwsClients:
    """One boto3 session and one client per AWS service, made on first use and shared by every
    store built over it (boto3 clients are thread-safe).

    ``latency_critical`` (scoring): fail in well under a second, since a fallback exists;
    otherwise (ingestion, retraining, the read routes) retry harder, since the alternative is
    refusing work.
    """

    def __init__(self, *, latency_critical: bool = False):
        self.latency_critical = latency_critical
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}  # also the fault tests' seam
        self._session: Any = None

    def client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            with self._lock:
                client = self._clients.get(service)
                if client is None:
                    client = self._clients[service] = self._make(service)
        return client

    def _make(self, service: str) -> Any:
        from botocore.config import Config

        if self.latency_critical:
            # No retry: botocore backs off up to a second before one, and a rule-based price now
            # beats a model price a second late. (botocore's "max_attempts" counts retries, not
            # attempts: 1 would mean one retry.)
            config = Config(
                connect_timeout=0.3,
                read_timeout=0.5,
                retries={"total_max_attempts": 1, "mode": "standard"},
                tcp_keepalive=True,
                max_pool_connections=POOL_CONNECTIONS,
            )
        else:
            # Bounded well inside the ingest function's 29 s: a request that cannot be stored is
            # refused (503) in seconds, never left to time out.
            config = Config(
                connect_timeout=0.5,
                read_timeout=3,
                retries={"total_max_attempts": 4, "mode": "standard"},
                tcp_keepalive=True,
                max_pool_connections=POOL_CONNECTIONS,
            )
        return self.session().client(service, config=config)

    def session(self) -> Any:
        """The boto3 session behind every client: the second client then reuses the session's
        loaded endpoint, partition and service-list data and its resolved credentials (~25 ms of a
        cold start's first request)."""
        if self._session is None:
            import boto3

            self._session = boto3.session.Session()
        return self._session

    def call(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One API call; raises ``StorageUnavailable``, ``StoreRefused``, ``ConditionFailed``, or
        ``KeyError`` (an S3 key that is not there)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response: dict[str, Any] = getattr(self.client(service), operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, service, operation, kwargs.get("Key")) from exc
        return response

    def pages(
        self, service: str, operation: str, *, page_size: int | None = None, max_items: int | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """The pages of a paginated read, by botocore's paginator; failures translated as ``call``
        does. Stop iterating to stop reading. Off the request path only: the first paginator
        costs some 25-30 ms (botocore.paginate, jmespath and the paginator model)."""
        from botocore.exceptions import BotoCoreError, ClientError

        config = {k: v for k, v in (("PageSize", page_size), ("MaxItems", max_items)) if v}
        try:
            yield from self.client(service).get_paginator(operation).paginate(**kwargs, PaginationConfig=config)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, service, operation) from exc


# -- DynamoDB's types ----------------------------------------------------------------------------
#
# boto3's TypeSerializer/TypeDeserializer do the wire form; around them, the domain's floats are
# written as their shortest round-tripping decimal (``repr``, which ``pricing.domain.limits`` checks
# fits), None attributes are left out, and numbers come back as int or float, never Decimal.

_codec: tuple[Any, Any] | None = None


def _serdes() -> tuple[Any, Any]:
    global _codec
    if _codec is None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        _codec = (TypeSerializer(), TypeDeserializer())
    return _codec


def _dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_dynamo(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_wire(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain attributes (or expression values) in DynamoDB's wire form. Raises ArithmeticError,
    TypeError or ValueError for what DynamoDB cannot hold (decimal's Overflow, a NaN, an object)."""
    serializer = _serdes()[0]
    return {k: serializer.serialize(v) for k, v in _dynamo(dict(values)).items()}


def from_wire(item: Mapping[str, Any]) -> Item:
    deserializer = _serdes()[1]
    return {k: _plain(deserializer.deserialize(v)) for k, v in item.items()}


class Table:
    """One DynamoDB table, read and written in plain values: keys, items and expression values
    go through ``to_wire``, items come back through ``from_wire``; every call through ``AwsClients``."""

    def __init__(self, aws: AwsClients, name: str):
        self.aws = aws
        self.name = name

    def _call(self, operation: str, values: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        if values:
            kwargs["ExpressionAttributeValues"] = to_wire(values)
        return self.aws.call("dynamodb", operation, TableName=self.name, **kwargs)

    def get(self, key: Mapping[str, Any], **kwargs: Any) -> Item | None:
        response = self._call("get_item", Key=to_wire(key), **kwargs)
        return from_wire(response["Item"]) if "Item" in response else None

    def put(self, item: Mapping[str, Any], *, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self._call("put_item", values, Item=to_wire(item), **kwargs)

    def update(self, key: Mapping[str, Any], *, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self._call("update_item", values, Key=to_wire(key), **kwargs)

    def page(
        self, operation: str, limit: int | None, start_key: Item | None, *, values: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Page:
        """One page of a ``query`` or ``scan``. ``start_key`` is the previous page's next key as
        this returned it (DynamoDB's wire form, which page tokens carry as they are)."""
        if limit:
            kwargs["Limit"] = limit
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        response = self._call(operation, values, **kwargs)
        return [from_wire(i) for i in response.get("Items", [])], response.get("LastEvaluatedKey")

    def scan_all(self) -> list[Item]:
        # Page by page by hand, not with a paginator: the experiments scan is on a cold /score's
        # path, and the first paginator costs it 25-30 ms.
        items, start = self.page("scan", None, None)
        while start:
            more, start = self.page("scan", None, start)
            items += more
        return items

    def query(
        self, *, values: Mapping[str, Any], page_size: int | None = None, max_items: int | None = None, **kwargs: Any
    ) -> Iterator[Item]:
        """Every item of a query, read page by page as the caller iterates (botocore's paginator)."""
        for page in self.aws.pages(
            "dynamodb",
            "query",
            page_size=page_size,
            max_items=max_items,
            TableName=self.name,
            ExpressionAttributeValues=to_wire(values),
            **kwargs,
        ):
            yield from (from_wire(i) for i in page.get("Items", []))

    def batch_get_once(self, keys: Sequence[Mapping[str, Any]], **kwargs: Any) -> list[Item]:
        """The items at ``keys`` (at most 100) by one BatchGetItem; ``StorageUnavailable`` when the
        store left any unprocessed (for a caller with a fallback and no time to retry)."""
        request = {self.name: {"Keys": [to_wire(k) for k in keys], **kwargs}}
        response = self.aws.call("dynamodb", "batch_get_item", RequestItems=request)
        if response.get("UnprocessedKeys"):
            raise StorageUnavailable("dynamodb.batch_get_item: throttled")
        return [from_wire(i) for i in response.get("Responses", {}).get(self.name, [])]

    def batch_get(self, keys: Sequence[Mapping[str, Any]], deadline: float, **kwargs: Any) -> list[Item]:
        """The items at ``keys`` (at most 100), unprocessed keys retried until ``deadline``."""
        request = {self.name: {"Keys": [to_wire(k) for k in keys], **kwargs}}
        return [
            from_wire(i)
            for response in self._until_processed("batch_get_item", request, "UnprocessedKeys", deadline)
            for i in response.get("Responses", {}).get(self.name, [])
        ]

    def batch_put(self, items: Sequence[Mapping[str, Any]], deadline: float) -> None:
        """Plain puts, 25 per BatchWriteItem, unprocessed items retried until ``deadline``."""
        for start in range(0, len(items), BATCH_WRITE_LIMIT):
            request = {self.name: [{"PutRequest": {"Item": to_wire(i)}} for i in items[start : start + BATCH_WRITE_LIMIT]]}
            self._until_processed("batch_write_item", request, "UnprocessedItems", deadline)

    def _until_processed(
        self,
        operation: str,
        request: dict[str, Any],
        leftover_key: str,
        deadline: float,
    ) -> list[dict[str, Any]]:
        """Run a batch operation until DynamoDB has processed all of it; return every response.
        DynamoDB may leave part of a batch unprocessed under throttling: that part is retried with
        exponential backoff until ``deadline``, after which the call fails."""
        responses, delay = [], UNPROCESSED_FIRST_DELAY
        while True:
            response = self.aws.call("dynamodb", operation, RequestItems=request)
            responses.append(response)
            request = response.get(leftover_key) or {}
            if not request:
                return responses
            if time.monotonic() + delay > deadline:
                raise StorageUnavailable(f"dynamodb.{operation}: items still unprocessed at the deadline")
            time.sleep(delay * (0.5 + random.random()))  # jitter: retries of parallel calls spread out
            delay = min(delay * 2, UNPROCESSED_MAX_DELAY)
