"""Exact metric totals from many real Lambda containers at once, through a real Pushgateway.

The built ScoreFunction runs in eight local Lambda containers (the real runtime interface
client), invoked concurrently and unevenly, pushing to a real Pushgateway scraped by a real
Prometheus. Every /score must be counted exactly once, in the Pushgateway's sums and in what
Prometheus sees, whatever the interleaving of the containers' pushes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.apigw_events import rest_event
from support.local_stack import lambda_containers, moto_resources
from support.promstack import Prometheus, Pushgateway

pytestmark = pytest.mark.e2e

CONTAINERS = 8
HOLD_SECONDS = 2.0  # above the 1 s scrape interval, so Prometheus sees every series' zero first
SCORE = {
    "entity": {"userId": "user-1", "propertyId": "prop-exact"},
    "stay_date": "2026-12-24",
    "quote_time": "2026-11-26T12:00:00Z",
    "inventory": {"capacity": 50, "remaining": 10},
    "market": {"comp_price_p10": 90.0, "comp_price_p50": 120.0, "comp_price_p90": 150.0},
}


def invocations_for(index: int) -> int:
    return 12 + 3 * index  # uneven on purpose: 12 to 33 per container


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_totals_are_exact_across_eight_concurrent_lambda_containers(tmp_path):
    expected = sum(invocations_for(i) for i in range(CONTAINERS))
    with moto_resources() as aws, Pushgateway() as pgw, Prometheus(pgw) as prom:
        env = {
            "AWS_ENDPOINT_URL": aws.endpoint_url,
            "PUSHGATEWAY_URL": pgw.url,
            "METRICS_NEW_SERIES_HOLD_SECONDS": str(HOLD_SECONDS),
        }
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
            assert statuses == [200] * expected

            # Counts held back for new series, or in a push still awaiting its answer, leave with
            # each container's next invocation, as they would in Lambda.
            time.sleep(HOLD_SECONDS + 0.5)
            for index in range(CONTAINERS):
                assert containers.invoke(rest_event("GET", "/health"), index=index).ok

            def pushed(name: str, **labels: str) -> float:
                return pgw.sum(name, job="pricing-score", **labels)

            wait_until(
                lambda: pushed("pricing_requests_total", endpoint="/score", status_code="200") == expected,
                20, "the Pushgateway's /score total never reached the requests sent",
            )
            assert pushed("pricing_api_latency_seconds_count", endpoint="/score") == expected
            assert pushed("pricing_api_latency_seconds_bucket", endpoint="/score", le="+Inf") == expected
            assert sum(pushed("pricing_score_latency_seconds_count", pricing_method=m)
                       for m in ("ml_elasticity", "rule_based")) == expected
            assert len(pgw.instances("pricing-score")) == CONTAINERS

            prom.wait_for_value('sum(pricing_requests_total{job="pricing-score",endpoint="/score"})', expected)
            prom.wait_for_value(
                'sum(pricing_api_latency_seconds_count{job="pricing-score",endpoint="/score"})', expected)
            # What increase()/rate() can see: every container's series was scraped at zero before
            # it counted, so max - min over the run is the whole count. (increase() itself
            # extrapolates to the window's edges, so it is only approximately the count.)
            selector = 'pricing_requests_total{job="pricing-score",endpoint="/score"}[10m]'
            seen = prom.value(f"sum(max_over_time({selector}) - min_over_time({selector}))")
            assert seen == expected
