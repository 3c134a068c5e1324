"""A moto server holding the template's own bucket, tables and queues, for integration tests.

The server and the resources come from ``local.services``/``local.template`` -- the same code
``make run`` uses -- so the tables tests write to have the deployed key schemas and indexes.

``moto_server`` (session) starts one server per test process; ``aws`` (function) resets it and
creates the resources afresh, points ``AWS_ENDPOINT_URL`` at it and returns an ``AwsStack``
with the resource names and a ``Settings`` for them. A server that cannot start is a skip, or a
failure when ``CI=true``.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from local.services import MotoServer, ServiceError, aws_client, create_resources  # noqa: E402
from local.template import SamTemplate  # noqa: E402
from pricing.settings import Settings  # noqa: E402

REGION = "us-east-1"


@dataclass
class AwsStack:
    endpoint_url: str
    names: dict[str, str]
    queue_urls: dict[str, str] = field(default_factory=dict)

    def settings(self, **overrides) -> Settings:
        values = dict(
            # As the suite's environment says (tests/conftest.py: off unless a test turns it on).
            holdback_rate=float(os.environ.get("HOLDBACK_RATE") or 0.0),
            artifacts_bucket=self.names["ArtifactsBucket"],
            outcomes_table=self.names["OutcomesTable"],
            registry_table=self.names["ModelRegistryTable"],
            experiments_table=self.names["ExperimentsTable"],
        )
        values.update(overrides)
        return Settings(**values)

    def env(self) -> dict[str, str]:
        """The environment variables a function would get for these resources."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "ARTIFACTS_BUCKET": self.names["ArtifactsBucket"],
            "OUTCOMES_TABLE": self.names["OutcomesTable"],
            "REGISTRY_TABLE": self.names["ModelRegistryTable"],
            "EXPERIMENTS_TABLE": self.names["ExperimentsTable"],
        }

    def client(self, service: str):
        return aws_client(service, self.endpoint_url, REGION)


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"moto server required in CI: {reason}")
    pytest.skip(f"moto server unavailable: {reason}")


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer()
    try:
        server.start()
    except (ServiceError, OSError) as exc:
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch) -> AwsStack:
    """Fresh template resources on the session's moto server; ``AWS_ENDPOINT_URL`` points there."""
    request = urllib.request.Request(f"{moto_server.url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()  # our own local server
    template = SamTemplate(PROJECT_ROOT / "template.yaml", region=REGION, endpoint_url=moto_server.url)
    resources = template.local_resources()
    create_resources(resources, moto_server.url, REGION)
    names = {r.logical_id: r.name for r in resources}
    sqs = aws_client("sqs", moto_server.url, REGION)
    queue_urls = {r.logical_id: sqs.get_queue_url(QueueName=r.name)["QueueUrl"] for r in resources if r.type == "AWS::SQS::Queue"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    return AwsStack(moto_server.url, names, queue_urls)


def outcomes_in_table(aws) -> int:
    """Outcome items in the outcomes table (the per-property listing items left out); ``aws`` is
    any stack with ``client()`` and ``names`` (this module's ``aws``, ``local_stack.moto_resources``)."""
    from pricing.storage.outcomes import OUTCOME_LISTING_KEY

    ddb = aws.client("dynamodb")
    count, kwargs = 0, {"TableName": aws.names["OutcomesTable"]}
    while True:
        resp = ddb.scan(**kwargs)
        count += sum(1 for i in resp["Items"] if i["outcome_key"]["S"] != OUTCOME_LISTING_KEY)
        if "LastEvaluatedKey" not in resp:
            return count
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
