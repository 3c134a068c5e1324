"""The template's non-HTTP event sources under ``make run``: SQS batches and rate() schedules."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from local.events import EventSources, rate_seconds, scheduled_event, sqs_event
from local.pool import FunctionPool
from local.services import MotoServer, aws_client, create_resources
from local.template import SamTemplate

TEMPLATE = """
    Transform: AWS::Serverless-2016-10-31
    Resources:
      Worker:
        Type: AWS::Serverless::Function
        Properties:
          Handler: app.handler
          Runtime: python3.11
          CodeUri: Worker
          Timeout: 5
          Environment:
            Variables:
              SEEN_DIR: __SEEN__
          Events:
            Batches:
              Type: SQS
              Properties:
                Queue: !GetAtt Jobs.Arn
                BatchSize: 10
                FunctionResponseTypes: [ReportBatchItemFailures]
            Nightly:
              Type: Schedule
              Properties:
                Schedule: cron(0 3 * * ? *)
      Jobs:
        Type: AWS::SQS::Queue
        Properties:
          QueueName: local-jobs
          VisibilityTimeout: 600
"""

HANDLER = """
    import json
    import os
    import uuid

    def handler(event, context):
        failures = []
        for record in event["Records"]:
            with open(os.path.join(os.environ["SEEN_DIR"], uuid.uuid4().hex), "w") as f:
                json.dump(record, f)
            if record["body"] == "fail":
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}
"""


@pytest.mark.services
def test_sqs_batches_reach_the_function_and_only_successes_are_deleted(tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    build = tmp_path / "build"
    (build / "Worker").mkdir(parents=True)
    (build / "template.yaml").write_text(textwrap.dedent(TEMPLATE).replace("__SEEN__", str(seen)))
    (build / "Worker" / "app.py").write_text(textwrap.dedent(HANDLER))
    with MotoServer() as moto:
        template = SamTemplate(build / "template.yaml", endpoint_url=moto.url)
        create_resources(template.local_resources(), moto.url)
        pool = FunctionPool(template.function("Worker", build), {"AWS_ENDPOINT_URL": moto.url}, log_dir=tmp_path)
        sources = EventSources(template, {"Worker": pool}, moto.url, "us-east-1").start()
        try:
            sqs = aws_client("sqs", moto.url)
            queue_url = sqs.get_queue_url(QueueName="local-jobs")["QueueUrl"]
            for body in ("ok", "fail"):
                sqs.send_message(QueueUrl=queue_url, MessageBody=body)
            deadline = time.monotonic() + 30
            attributes: dict = {}
            while time.monotonic() < deadline:
                attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
                if len(list(seen.iterdir())) >= 2 and attributes["ApproximateNumberOfMessagesNotVisible"] == "1":
                    break
                time.sleep(0.1)
        finally:
            sources.close()
            pool.close()
    records = [json.loads(p.read_text()) for p in seen.iterdir()]
    assert sorted(r["body"] for r in records) == ["fail", "ok"]
    record = records[0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:local-jobs"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    # "ok" was deleted; "fail" is in flight until its visibility timeout, as with Lambda.
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_rate_expressions_and_scheduled_event_shape():
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(2 hours)") == 7200
    assert rate_seconds("cron(0 3 * * ? *)") is None
    event = scheduled_event("arn:aws:events:us-east-1:123456789012:rule/r", "us-east-1", now=0)
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["time"] == "1970-01-01T00:00:00Z" and event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/r"]


def test_sqs_event_shape():
    message = {
        "MessageId": "m1",
        "ReceiptHandle": "r1",
        "Body": "{}",
        "MD5OfBody": "x",
        "Attributes": {"ApproximateReceiveCount": 2},
        "MessageAttributes": {"kind": {"StringValue": "batch", "DataType": "String"}},
    }
    record = sqs_event([message], "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")["Records"][0]
    assert record["messageId"] == "m1" and record["receiptHandle"] == "r1" and record["body"] == "{}"
    assert record["attributes"] == {"ApproximateReceiveCount": "2"}
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "batch",
        "binaryValue": None,
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
