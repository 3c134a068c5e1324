"""All access to AWS: S3 for model artifacts, DynamoDB for outcomes, the registry and experiments.

Nothing above this module imports boto3. Every failure to reach a store surfaces as
``StorageUnavailable`` so callers decide between falling back (scoring) and refusing to
acknowledge (ingestion) without knowing botocore's exception zoo.

boto3 honours ``AWS_ENDPOINT_URL``, so local runs point the same code at moto's server.

Tables (keys as in template.yaml):

* registry ``(property_id, record)``: ``record = "CONFIG"`` holds the property's base price;
  ``"LIVE"`` points at the deployed model version; ``"MODEL#<version>"`` keeps every version.
* experiments ``(experiment_id)``.
* outcomes ``(property_id, outcome_key)``: one item per outcome, keyed for idempotency.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

from pricing.settings import Settings

CONFIG_RECORD, LIVE_RECORD, MODEL_RECORD_PREFIX = "CONFIG", "LIVE", "MODEL#"


class StorageUnavailable(RuntimeError):
    """A store could not be reached, timed out, throttled us, or answered with an error."""


class ConditionFailed(RuntimeError):
    """A conditional write lost a race: the item was not in the expected state."""


@dataclass(frozen=True)
class PropertyRecord:
    """What scoring needs to know about a property from the registry."""

    property_id: str
    base_price: float | None = None
    live_version: str | None = None
    artifact_key: str | None = None


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

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._serializer = None
        self._deserializer = None

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

                    config = Config(
                        connect_timeout=1,
                        read_timeout=3,
                        retries={"max_attempts": 3, "mode": "standard"},
                        tcp_keepalive=True,
                    )
                    client = boto3.session.Session().client(service, config=config)
                    self._clients[service] = client
        return client

    def _call(self, service: str, operation: str, **kwargs) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client(service), operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise ConditionFailed(str(exc)) from exc
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise KeyError(kwargs.get("Key")) from exc
            raise StorageUnavailable(f"{service}.{operation}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"{service}.{operation}: {type(exc).__name__}") from exc

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
        )

    def load_artifact(self, key: str) -> Any:
        """The JSON document stored at ``key``; ValueError when it is not JSON."""
        body = self._call("s3", "get_object", Bucket=self.settings.artifacts_bucket, Key=key)["Body"].read()
        return json.loads(body)

    def list_experiments(self) -> list[dict]:
        items: list[dict] = []
        kwargs: dict[str, Any] = {"TableName": self.settings.experiments_table}
        while True:
            resp = self._call("dynamodb", "scan", **kwargs)
            items += [self._de(i) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return items
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
