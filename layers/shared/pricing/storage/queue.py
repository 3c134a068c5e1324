"""SQS: the retrain fan-out's messages."""

from __future__ import annotations

import json
from typing import Any

from pricing.storage.aws import AwsClients
from pricing.storage.errors import StorageUnavailable

SQS_BATCH_LIMIT = 10  # SendMessageBatch's maximum


class MessageQueue:
    def __init__(self, aws: AwsClients):
        self.aws = aws

    def enqueue_messages(self, queue_url: str, bodies: list[dict[str, Any]]) -> None:
        """Send JSON messages to an SQS queue, ten per call; raises ``StorageUnavailable`` when
        any message is still refused after one retry."""
        entries = [{"Id": str(i), "MessageBody": json.dumps(b, separators=(",", ":"))} for i, b in enumerate(bodies)]
        for start in range(0, len(entries), SQS_BATCH_LIMIT):
            pending = entries[start : start + SQS_BATCH_LIMIT]
            for _ in range(2):
                response = self.aws.call("sqs", "send_message_batch", QueueUrl=queue_url, Entries=pending)
                failed = {f["Id"] for f in response.get("Failed", [])}
                pending = [e for e in pending if e["Id"] in failed]
                if not pending:
                    break
            if pending:
                raise StorageUnavailable(f"sqs.send_message_batch: {len(pending)} messages refused")
