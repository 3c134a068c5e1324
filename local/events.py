"""The template's non-HTTP event sources, run against local pools.

- ``Schedule`` events with a ``rate(...)`` expression fire every period (first after one period,
  as EventBridge does), with the event's ``Input`` when it has one, else an EventBridge
  "Scheduled Event". ``cron(...)`` schedules (the nightly retrain) do not fire locally: invoke
  them by hand with ``make invoke``.
- ``SQS`` events poll their queue on the local AWS endpoint and invoke the function with batches
  of records, deleting what succeeded; with ``ReportBatchItemFailures`` the listed
  ``batchItemFailures`` stay on the queue, and a function error leaves the whole batch for its
  visibility timeout and the queue's redrive policy -- the semantics of a Lambda event source
  mapping.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from local.pool import FunctionPool
from local.services import aws_client
from local.template import ACCOUNT_ID, SamTemplate

log = logging.getLogger("local.events")

_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between firings of a ``rate(...)`` expression; None for ``cron(...)``."""
    m = _RATE.fullmatch(expression.strip())
    if not m:
        return None
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2).rstrip("s")]


def scheduled_event(rule_arn: str, region: str, now: float | None = None) -> dict[str, Any]:
    """The event EventBridge sends a scheduled rule's target when the rule has no ``Input``."""
    now = time.time() if now is None else now
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def sqs_event(messages: list[dict], queue_arn: str, region: str) -> dict[str, Any]:
    """The event a Lambda SQS event source mapping sends for a batch of received messages."""
    records = []
    for message in messages:
        attributes = {name: str(value) for name, value in (message.get("Attributes") or {}).items()}
        message_attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": value.get("StringListValues", []),
                "binaryListValues": value.get("BinaryListValues", []),
                "dataType": value.get("DataType"),
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        }
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message.get("Body", ""),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": message.get("MD5OfBody"),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


class EventSources:
    """Timers and pollers for every Schedule and SQS event of the template's functions."""

    def __init__(self, template: SamTemplate, pools: Mapping[str, FunctionPool], endpoint_url: str, region: str) -> None:
        self.template = template
        self.pools = pools
        self.endpoint_url = endpoint_url
        self.region = region
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> EventSources:
        for logical_id in self.template.function_ids():
            events = (self.template.resources[logical_id].get("Properties") or {}).get("Events") or {}
            for name, event in events.items():
                props = self.template.resolve(event.get("Properties") or {})
                if event.get("Type") == "Schedule" and props.get("Enabled", True) is not False:
                    period = rate_seconds(str(props.get("Schedule", "")))
                    if period is None:
                        log.info("%s.%s: %s does not fire locally (use make invoke)", logical_id, name, props.get("Schedule"))
                        continue
                    self._spawn(self._schedule, logical_id, name, period, props.get("Input"))
                elif event.get("Type") == "SQS":
                    self._spawn(self._poll_queue, logical_id, name, props)
        return self

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"event-{args[0]}-{args[1]}")
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _schedule(self, logical_id: str, name: str, period: float, event_input: Any) -> None:
        rule_arn = f"arn:aws:events:{self.region}:{ACCOUNT_ID}:rule/{logical_id}{name}"
        while not self._stop.wait(period):
            event = (
                json.loads(event_input)
                if isinstance(event_input, str)
                else (event_input if event_input is not None else scheduled_event(rule_arn, self.region))
            )
            try:
                result = self.pools[logical_id].invoke(event)
                log.info(
                    "schedule %s.%s -> %s container %s: %s",
                    logical_id,
                    name,
                    logical_id,
                    result.container_id,
                    "ok" if result.ok else result.payload[:300].decode("utf-8", "replace"),
                )
            except Exception as exc:  # noqa: BLE001 - a failing schedule must not stop the next firing
                log.error("schedule %s.%s failed: %s", logical_id, name, exc)

    def _poll_queue(self, logical_id: str, name: str, props: Mapping[str, Any]) -> None:
        queue_arn = str(props["Queue"])
        queue_name = queue_arn.rsplit(":", 1)[-1]
        batch_size = min(int(props.get("BatchSize", 10)), 10)
        partial = "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or [])
        sqs = aws_client("sqs", self.endpoint_url, self.region)
        try:
            queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        except Exception as exc:  # noqa: BLE001 - no queue, no poller; the emulator runs on
            log.warning("%s.%s: queue %s not found on %s (%s); not polling", logical_id, name, queue_name, self.endpoint_url, exc)
            return
        while not self._stop.is_set():
            try:
                received = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=batch_size,
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception as exc:  # noqa: BLE001 - the poller outlives a flaky local queue
                log.warning("%s.%s: receive from %s failed: %s", logical_id, name, queue_name, exc)
                self._stop.wait(5)
                continue
            if received:
                self._deliver(sqs, queue_url, queue_arn, logical_id, received, partial)

    def _deliver(self, sqs: Any, queue_url: str, queue_arn: str, logical_id: str, messages: list[dict], partial: bool) -> None:
        try:
            result = self.pools[logical_id].invoke(sqs_event(messages, queue_arn, self.region))
        except Exception as exc:  # noqa: BLE001 - logged; the messages stay on the queue
            log.error("%s: SQS batch of %d not delivered: %s", logical_id, len(messages), exc)
            return
        if not result.ok:
            log.warning(
                "%s: SQS batch of %d failed on container %s; messages return after the visibility timeout",
                logical_id,
                len(messages),
                result.container_id,
            )
            return
        failed: set[str] = set()
        if partial:
            body = result.json()
            if isinstance(body, dict):
                failed = {str(item.get("itemIdentifier")) for item in body.get("batchItemFailures") or []}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=queue_url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
            )
        log.info(
            "%s: SQS batch of %d on container %s, %d deleted, %d left for retry",
            logical_id,
            len(messages),
            result.container_id,
            len(done),
            len(messages) - len(done),
        )
