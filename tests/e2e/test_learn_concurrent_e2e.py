"""Eight Lambda containers of the built IngestFunction receive the same /learn batch at once.

Each container is the real runtime interface client over the ``sam build`` output, storing into
moto's server and pushing to a real Pushgateway. The answers' ``processed`` summed over the
eight, the outcomes in the table and ``pricing_outcomes_ingested_total`` summed over the
containers' groups must all be the batch size: every outcome written once and counted once,
whoever won its conditional write.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from support.apigw_events import rest_event
from support.local_stack import lambda_containers, moto_resources
from support.moto_stack import outcomes_in_table
from support.promstack import Pushgateway

pytestmark = pytest.mark.e2e

CONTAINERS = 8
# Moto's one server takes a few hundred conditional writes a second, and in the worst race all
# eight containers write every outcome: 300 each stays well inside the function's 20 s budget.
OUTCOMES = 300
PROPERTY = "e2e-concurrent"
NOW = datetime.now(UTC).replace(microsecond=0)


def test_eight_containers_sent_one_batch_at_once_store_and_count_each_outcome_once(tmp_path, capsys):
    batch = [
        {
            "property_id": PROPERTY,
            "timestamp": (NOW - timedelta(minutes=i + 1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quoted_price": 100.0 + i % 40,
            "accepted": i % 4 == 0,
            "quote_id": f"e2e-conc-{i:04d}",
        }
        for i in range(OUTCOMES)
    ]
    event = rest_event("POST", "/learn", {"batch": batch})
    with moto_resources() as aws, Pushgateway() as pgw:
        env = {"AWS_ENDPOINT_URL": aws.endpoint_url, "PUSHGATEWAY_URL": pgw.url}
        with lambda_containers("IngestFunction", CONTAINERS, env=env, log_dir=tmp_path) as containers:
            # Warm every container first, so the batch reaches all eight at the same moment.
            for index in range(CONTAINERS):
                assert containers.invoke(rest_event("POST", "/learn", {"batch": [{}]}), index=index).ok
            start = threading.Barrier(CONTAINERS)
            answers: list[dict | None] = [None] * CONTAINERS

            def send(index: int) -> None:
                start.wait()
                result = containers.invoke(event, index=index)
                assert result.ok, result.payload[:300]
                answers[index] = result.json()

            threads = [threading.Thread(target=send, args=(i,)) for i in range(CONTAINERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)

            assert all(a is not None and a["statusCode"] == 200 for a in answers), [
                a and (a["statusCode"], a["body"][:200]) for a in answers
            ]
            bodies = [json.loads(a["body"]) for a in answers]
            processed = [b["processed"] for b in bodies]

            def pushed() -> float:
                return pgw.sum("pricing_outcomes_ingested_total", job="pricing-ingest")

            deadline = time.monotonic() + 20
            while pushed() != OUTCOMES and time.monotonic() < deadline:
                time.sleep(0.2)
            stored = outcomes_in_table(aws)
            with capsys.disabled():
                print(
                    f"\n{CONTAINERS} Lambda containers, one {OUTCOMES}-outcome batch at once: processed {processed} "
                    f"(sum {sum(processed)}), items in the table {stored}, Pushgateway total {pushed():.0f}"
                )
            assert all(b["processed"] + b["duplicates"] == OUTCOMES and b["invalid"] == 0 for b in bodies)
            assert sum(processed) == stored == pushed() == OUTCOMES
