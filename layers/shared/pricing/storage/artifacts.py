"""Model artifacts in S3: one JSON document per key."""

from __future__ import annotations

import json
from typing import Any

from pricing.storage.aws import AwsClients


class ArtifactStore:
    def __init__(self, aws: AwsClients, bucket: str):
        self.aws = aws
        self.bucket = bucket

    def load_artifact(self, key: str) -> Any:
        """The JSON document stored at ``key``; KeyError when there is none, ValueError when it is
        not JSON, ``StorageUnavailable`` when S3 cannot be read."""
        return json.loads(self.aws.call("s3", "get_object", Bucket=self.bucket, Key=key)["Body"].read())

    def put_artifact(self, key: str, document: dict[str, Any]) -> None:
        self.put_bytes(key, json.dumps(document, separators=(",", ":"), sort_keys=True).encode())

    def put_bytes(self, key: str, body: bytes) -> None:
        """``body`` stored at ``key`` as it is (what a corrupt artifact looks like, for tests)."""
        self.aws.call("s3", "put_object", Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
