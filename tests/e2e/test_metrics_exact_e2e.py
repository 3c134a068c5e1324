"""Exact metric totals from many real Lambda containers at once, through a real Pushgateway.

The built ScoreFunction runs in eight local Lambda containers (the real runtime interface
client), invoked concurrently and unevenly, pushing to a real Pushgateway scraped by a real
Prometheus. Every /score must be counted exactly once, in the Pushgateway's sums and in what
Prometheus sees, whatever the interleaving of the containers' pushes -- and after the burst,
silence: no container is invoked again, as Lambda promises no later invocation.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from support.apigw_events import rest_event
from support.local_stack import lambda_containers, moto_resources
from support.promstack import Prometheus, Pushgateway, free_port

pytestmark = pytest.mark.e2e

CONTAINERS = 8
ARRIVAL_SECONDS = 20  # after the last answer, every count is in the Pushgateway and Prometheus
SCORE = {
    "entity": {"userId": "user-1", "propertyId": "prop-exact"},
    "stay_date": "2026-12-24",
    "quote_time": "2026-11-26T12:00:00Z",
    "inventory": {"capacity": 50, "remaining": 10},
    "market": {"comp_price_p10": 90.0, "comp_price_p50": 120.0, "comp_price_p90": 150.0},
}


def invocations_for(index: int) -> int:
    return 15 + 3 * index  # uneven on purpose: 15 to 36 per container, 204 in all


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_totals_are_exact_across_eight_concurrent_lambda_containers(tmp_path):
    expected = sum(invocations_for(i) for i in range(CONTAINERS))
    assert expected >= 200
    with moto_resources() as aws, Pushgateway() as pgw, Prometheus(pgw) as prom:
        env = {"AWS_ENDPOINT_URL": aws.endpoint_url, "PUSHGATEWAY_URL": pgw.url}
        with lambda_containers("ScoreFunction", CONTAINERS, env=env, log_dir=tmp_path) as containers:

            def run(index: int) -> list[int]:
                statuses = []
                for _ in range(invocations_for(index)):
                    result = containers.invoke(rest_event("POST", "/score", SCORE), index=index)
                    assert result.ok, result.payload[:300]
                    statuses.append(result.json()["statusCode"])
                return statuses

            with ThreadPoolExecutor(CONTAINERS) as pool:
                statuses = [s for batch in pool.map(run, range(CONTAINERS)) for s in batch]
            last_answer = time.monotonic()
            assert statuses == [200] * expected
            # Silence from here on: nothing invokes a container again.

            def pushed(name: str, **labels: str) -> float:
                return pgw.sum(name, job="pricing-score", **labels)

            wait_until(
                lambda: pushed("pricing_requests_total", endpoint="/score", status_code="200") == expected,
                ARRIVAL_SECONDS,
                "the Pushgateway's /score total never reached the requests sent",
            )
            assert pushed("pricing_api_latency_seconds_count", endpoint="/score") == expected
            assert pushed("pricing_api_latency_seconds_bucket", endpoint="/score", le="+Inf") == expected
            assert sum(pushed("pricing_score_latency_seconds_count", pricing_method=m) for m in ("ml_elasticity", "rule_based")) == expected
            assert len(pgw.instances("pricing-score")) == CONTAINERS

            remaining = ARRIVAL_SECONDS - (time.monotonic() - last_answer)
            prom.wait_for_value('sum(pricing_requests_total{job="pricing-score",endpoint="/score"})', expected, timeout=max(remaining, 0.1))
            prom.wait_for_value(
                'sum(pricing_api_latency_seconds_count{job="pricing-score",endpoint="/score"})',
                expected,
                timeout=max(ARRIVAL_SECONDS - (time.monotonic() - last_answer), 0.1),
            )
            # What increase()/rate() can see: every series starts from the zero Prometheus stores
            # at its created timestamp, so max - min over the run is the whole count, the first
            # pushes included. (increase() itself extrapolates to the window's edges.)
            selector = 'pricing_requests_total{job="pricing-score",endpoint="/score"}[10m]'
            prom.wait_for_value(
                f"sum(max_over_time({selector}) - min_over_time({selector}))",
                expected,
                timeout=max(ARRIVAL_SECONDS - (time.monotonic() - last_answer), 0.1),
            )
            print(f"all {expected} /score counts in Prometheus {time.monotonic() - last_answer:.1f} s after the last answer")


def test_learn_outcome_counts_are_exact_across_eight_concurrent_lambda_containers(tmp_path):
    stamp = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    batches_per_container, per_batch = 4, 25
    expected = CONTAINERS * batches_per_container * per_batch

    def batch(index: int, b: int) -> dict:
        return {
            "batch": [
                {
                    "property_id": f"exact-{(index + i) % 3}",
                    "timestamp": stamp,
                    "quoted_price": 90.0 + i,
                    "accepted": i % 2 == 0,
                    "quote_id": f"q-{index}-{b}-{i}",
                }
                for i in range(per_batch)
            ]
        }

    with moto_resources() as aws, Pushgateway() as pgw, Prometheus(pgw) as prom:
        env = {"AWS_ENDPOINT_URL": aws.endpoint_url, "PUSHGATEWAY_URL": pgw.url}
        with lambda_containers("IngestFunction", CONTAINERS, env=env, log_dir=tmp_path) as containers:

            def run(index: int) -> int:
                stored = 0
                for b in range(batches_per_container):
                    result = containers.invoke(rest_event("POST", "/learn", batch(index, b)), index=index)
                    assert result.ok, result.payload[:300]
                    stored += json.loads(result.json()["body"])["processed"]
                return stored

            with ThreadPoolExecutor(CONTAINERS) as pool:
                stored = sum(pool.map(run, range(CONTAINERS)))
            last_answer = time.monotonic()
            assert stored == expected

            def left() -> float:
                return max(ARRIVAL_SECONDS - (time.monotonic() - last_answer), 0.1)

            wait_until(
                lambda: pgw.sum("pricing_outcomes_ingested_total", job="pricing-ingest") == expected,
                left(),
                "the Pushgateway's ingested total never reached the outcomes stored",
            )
            prom.wait_for_value('sum(pricing_outcomes_ingested_total{job="pricing-ingest"})', expected, timeout=left())
            selector = 'pricing_outcomes_ingested_total{job="pricing-ingest"}[10m]'
            prom.wait_for_value(f"sum(max_over_time({selector}) - min_over_time({selector}))", expected, timeout=left())
            requests = 'pricing_requests_total{job="pricing-ingest",endpoint="/learn",status_code="200"}'
            prom.wait_for_value(
                f"sum(max_over_time({requests}[10m]) - min_over_time({requests}[10m]))", CONTAINERS * batches_per_container, timeout=left()
            )


def test_a_retired_container_flushes_what_the_pushgateway_missed_within_the_shutdown_budget(tmp_path):
    """The Pushgateway is down through a container's whole life and back just before Lambda
    retires it: every count reaches it with the SIGTERM flush, inside the budget, not killed."""
    invocations = 7
    port = free_port()
    with moto_resources() as aws:
        env = {"AWS_ENDPOINT_URL": aws.endpoint_url, "PUSHGATEWAY_URL": f"http://127.0.0.1:{port}"}
        with lambda_containers("ScoreFunction", 1, env=env, log_dir=tmp_path) as containers:
            for _ in range(invocations):
                result = containers.invoke(rest_event("POST", "/score", SCORE), index=0)
                assert result.ok and result.json()["statusCode"] == 200
            with Pushgateway(port=port) as pgw:
                assert pgw.sum("pricing_requests_total", job="pricing-score") == 0
                report = containers.containers[0].retire()
                assert report.sigterm and not report.killed and report.runtime_status == 0, report
                assert report.duration_ms < report.budget_ms
                assert pgw.sum("pricing_requests_total", job="pricing-score", endpoint="/score", status_code="200") == invocations
                # The failed pushes themselves are counted, and reach the gateway too.
                assert pgw.sum("pricing_metrics_push_failures_total", job="pricing-score", reason="connection") == invocations
