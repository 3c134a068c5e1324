"""The observability stack for real: Pushgateway -> Prometheus -> Alertmanager -> webhook.

The stack is ``support.obs_stack.observability_stack``: the pinned Pushgateway, Prometheus and
Alertmanager (``make setup``) on free 127.0.0.1 ports with the project's own configuration and
rules (intervals and ``for`` durations cut to seconds), and a webhook receiver standing in for
PagerDuty and Slack.

The stack test (``SyntheticWorkload``) pushes what the functions push, as they push it: one
push group per Lambda container (``job="pricing-<function>"``, ``instance=<container>``) plus
one sub-group per property (``property_id`` in the grouping key), every series first pushed at
zero, then cumulative counts once a second. Its traffic is slow on /score (every request
~450 ms) and floods /learn with invalid outcomes (40%), and is healthy otherwise. Expected:
CriticalScoreLatency and the critical /score latency budget burn page PagerDuty,
HighInvalidOutcomesRate reaches Slack, SlowScoreLatency is inhibited, nothing else fires, and
every dashboard panel's query returns data.

The same stack under traffic through the service itself, in local Lambda:
tests/e2e/test_observability_workload.py.

Skips without the pinned stack, or fails when CI=true.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator

import pytest

from support.obs_stack import (
    ENVIRONMENT,
    Stack,
    notifying_alertmanager,
    observability_stack,
    panels_without_data,
    render_dashboard,
)

# The links' defaults (observability/prometheus_alerts.yml): no external labels set here.
RUNBOOKS = "https://github.com/example-org/pricing-service/blob/main/observability/runbooks.md"
DASHBOARD = "http://localhost:3000/d/pricing-service"

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with observability_stack(tmp_path_factory.mktemp("observability-stack")) as started:
        yield started


# ------------------------------------------------------------------------ synthetic workload


API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.08, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
PREDICTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
RETRAINING_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


class Container:
    """One Lambda container's cumulative metrics, rendered per push group as the service does."""

    def __init__(self, function: str, instance: str):
        self.job, self.instance = f"pricing-{function}", instance
        # group (property_id or None) -> name -> labels tuple -> value / histogram state
        self.counters: dict = defaultdict(lambda: defaultdict(dict))
        self.gauges: dict = defaultdict(lambda: defaultdict(dict))
        self.histograms: dict = defaultdict(lambda: defaultdict(dict))

    def inc(self, name: str, by: float = 0, property_id: str | None = None, **labels: str) -> None:
        key = tuple(labels.items())
        series = self.counters[property_id][name]
        series[key] = series.get(key, 0.0) + by

    def set(self, name: str, value: float, property_id: str | None = None, **labels: str) -> None:
        self.gauges[property_id][name][tuple(labels.items())] = value

    def observe(self, name: str, value: float, buckets: tuple, times: int = 1, property_id: str | None = None, **labels: str) -> None:
        key = tuple(labels.items())
        state = self.histograms[property_id][name].setdefault(
            key, {"buckets": buckets, "counts": [0] * len(buckets), "sum": 0.0, "count": 0}
        )
        for i, edge in enumerate(buckets):
            if value <= edge:
                state["counts"][i] += times
        state["sum"] += value * times
        state["count"] += times

    def exposition(self, group: str | None) -> str:
        lines = []
        for name, series in self.counters[group].items():
            lines.append(f"# TYPE {name} counter")
            lines += [f"{name}{{{_labels(dict(k))}}} {v:g}" for k, v in series.items()]
        for name, series in self.gauges[group].items():
            lines.append(f"# TYPE {name} gauge")
            lines += [f"{name}{{{_labels(dict(k))}}} {v:.17g}" for k, v in series.items()]
        for name, series in self.histograms[group].items():
            lines.append(f"# TYPE {name} histogram")
            for key, state in series.items():
                labels = dict(key)
                for edge, count in zip(state["buckets"], state["counts"]):
                    lines.append(f"{name}_bucket{{{_labels({**labels, 'le': f'{edge:g}'})}}} {count}")
                lines.append(f"{name}_bucket{{{_labels({**labels, 'le': '+Inf'})}}} {state['count']}")
                lines.append(f"{name}_sum{{{_labels(labels)}}} {state['sum']:g}")
                lines.append(f"{name}_count{{{_labels(labels)}}} {state['count']}")
        return "\n".join(lines) + "\n"

    def push(self, pushgateway_url: str) -> None:
        """PUT every group: the container is the only writer of its groups."""
        groups = set(self.counters) | set(self.gauges) | set(self.histograms)
        for group in groups:
            path = f"/metrics/job/{self.job}/instance/{self.instance}"
            if group is not None:
                path += f"/property_id/{group}"
            request = urllib.request.Request(pushgateway_url + path, method="PUT", data=self.exposition(group).encode())
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status in (200, 202), path


class SyntheticWorkload:
    """Slow /score and an invalid-outcome flood on /learn; healthy in every other respect."""

    PROPERTIES = ("hotel-alpine", "flat-harbour")
    EXPERIMENT = "exp-ml-vs-rules"

    def __init__(self):
        self.scores = [Container("score", "score-a1"), Container("score", "score-b2")]
        self.ingest = Container("ingest", "ingest-c3")
        self.retrain = Container("retrain", "retrain-d4")
        self.started = time.time()

    @property
    def containers(self) -> list[Container]:
        return [*self.scores, self.ingest, self.retrain]

    def step(self, n: int) -> None:
        """Round ``n``: 0 announces every series at zero (as the service does), then traffic."""
        k = 0 if n == 0 else 1
        now = time.time()
        for i, c in enumerate(self.scores):
            c.inc("pricing_requests_total", 20 * k, method="POST", endpoint="/score", status_code="200")
            c.inc("pricing_requests_total", 1 * k, method="GET", endpoint="/health", status_code="200")
            c.observe("pricing_api_latency_seconds", 0.45, API_BUCKETS, 20 * k, method="POST", endpoint="/score", status_code="200")
            c.observe("pricing_api_latency_seconds", 0.004, API_BUCKETS, 1 * k, method="GET", endpoint="/health", status_code="200")
            c.observe("pricing_score_latency_seconds", 0.45, API_BUCKETS, 14 * k, pricing_method="ml_elasticity")
            c.observe("pricing_score_latency_seconds", 0.42, API_BUCKETS, 6 * k, pricing_method="rule_based")
            c.inc("pricing_errors_total", 1 * k, endpoint="/score", error_type="CompetitorTimeout")
            c.inc("pricing_model_cache_hits_total", 18 * k)
            c.inc("pricing_model_cache_misses_total", 2 * k)
            c.inc("pricing_ab_assignments_total", 10 * k, experiment_id=self.EXPERIMENT, variant="ml")
            c.inc("pricing_ab_assignments_total", 10 * k, experiment_id=self.EXPERIMENT, variant="rules")
            c.inc("pricing_metrics_push_failures_total", 0, reason="timeout")
            c.set("pricing_active_requests", 1, endpoint="/score")
            c.set("pricing_models_loaded", 2)
            c.set("pricing_uptime_seconds", 300 + 120 * i + (now - self.started))
            c.set("pricing_container_memory_bytes", 180e6 + 10e6 * i)
            c.set("pricing_container_memory_limit_bytes", 1024 * 2**20)
            c.set("pricing_service_info", 1, version="1.4.0", environment=ENVIRONMENT, service="pricing-score")
            for prop in self.PROPERTIES:
                c.observe("pricing_model_prediction_seconds", 0.004, PREDICTION_BUCKETS, 10 * k, property_id=prop, model_type="conversion")
                c.inc("pricing_competitor_fetches_total", 9 * k, property_id=prop, status="success")
                c.inc("pricing_competitor_fetches_total", 1 * k, property_id=prop, status="timeout")
                c.set("pricing_competitor_staleness_seconds", 3600 + 60 * i, property_id=prop)
        # The scheduled synthetic /health check succeeds every round.
        self.scores[0].set("pricing_synthetic_check_timestamp_seconds", now)

        c = self.ingest
        c.inc("pricing_requests_total", 2 * k, method="POST", endpoint="/learn", status_code="200")
        c.observe("pricing_api_latency_seconds", 0.08, API_BUCKETS, 2 * k, method="POST", endpoint="/learn", status_code="200")
        for prop in self.PROPERTIES:
            c.inc("pricing_outcomes_ingested_total", 30 * k, property_id=prop)
            c.inc("pricing_outcomes_invalid_total", 20 * k, property_id=prop, reason="non_positive_price")
        for variant, accepted in (("ml", 3), ("rules", 2)):
            c.inc("pricing_ab_outcomes_total", accepted * k, experiment_id=self.EXPERIMENT, variant=variant, accepted="true")
            c.inc("pricing_ab_outcomes_total", (10 - accepted) * k, experiment_id=self.EXPERIMENT, variant=variant, accepted="false")
        c.set("pricing_service_info", 1, version="1.4.0", environment=ENVIRONMENT, service="pricing-ingest")
        c.set("pricing_container_memory_bytes", 150e6)
        c.set("pricing_container_memory_limit_bytes", 512 * 2**20)

        c = self.retrain
        for i, prop in enumerate(self.PROPERTIES):
            c.inc("pricing_retraining_total", 1 * k, property_id=prop, model_type="conversion", status="deployed" if i == 0 else "rejected")
            c.inc("pricing_retraining_total", 0, property_id=prop, model_type="conversion", status="failed")
            c.observe(
                "pricing_retraining_duration_seconds", 95.0 + 30 * i, RETRAINING_BUCKETS, 1 * k, property_id=prop, model_type="conversion"
            )
            c.inc("pricing_drift_detected_total", 1 if n == 2 else 0, property_id=prop, trigger_retrain="true")
        c.set("pricing_container_memory_bytes", 400e6)
        c.set("pricing_container_memory_limit_bytes", 2048 * 2**20)

    def run(self, pushgateway_url: str, rounds: int = 6, interval: float = 1.0) -> None:
        for n in range(rounds):
            self.step(n)
            for container in self.containers:
                container.push(pushgateway_url)
            time.sleep(interval)


@pytest.fixture(scope="module")
def synthetic_traffic(stack) -> SyntheticWorkload:
    workload = SyntheticWorkload()
    workload.run(stack.pushgateway_url)
    # Recording rules and alerts need a couple of evaluations over the last samples.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not stack.query("environment_property_id_reason:pricing_outcomes_invalid:rate5m > 0"):
        time.sleep(0.25)
    return workload


# ------------------------------------------------------------------------------------- tests


def test_pushed_series_keep_container_labels_and_get_the_environment(stack, synthetic_traffic):
    groups = stack.query("count by (job, instance, environment) (push_time_seconds)")
    seen = {(g["metric"]["job"], g["metric"]["instance"], g["metric"]["environment"]) for g in groups}
    expected = {(c.job, c.instance, ENVIRONMENT) for c in synthetic_traffic.containers}
    assert expected <= seen  # honor_labels kept job/instance; the scrape added environment
    [total] = stack.query('sum(pricing_requests_total{endpoint="/score"})')
    assert float(total["value"][1]) == 2 * 20 * 5  # exact over containers: 2 x 20 x 5 rounds


def test_invalid_outcome_flood_fires_and_reaches_slack_through_alertmanager(stack, synthetic_traffic):
    alert = stack.wait_for_notification("slack-warning", "HighInvalidOutcomesRate")
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["environment"] == ENVIRONMENT
    assert alert["annotations"]["runbook_url"] == RUNBOOKS + "#highinvalidoutcomesrate"
    assert alert["annotations"]["dashboard_url"] == f"{DASHBOARD}?var-environment={ENVIRONMENT}"
    assert alert["annotations"]["summary"] == "40% of received outcomes are invalid, above 10% (development)"


def test_slow_score_pages_pagerduty_and_its_warning_is_inhibited(stack, synthetic_traffic):
    critical = stack.wait_for_notification("pagerduty-critical", "CriticalScoreLatency")
    assert critical["labels"]["family"] == "score_latency"
    stack.wait_for_notification("pagerduty-critical", "ScoreLatencyErrorBudgetBurn")

    # SlowScoreLatency fires in Prometheus, reaches Alertmanager, and is held back there.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "SlowScoreLatency" not in stack.firing():
        time.sleep(0.25)
    assert stack.firing().get("SlowScoreLatency") == {"warning"}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not stack.am_alerts("SlowScoreLatency"):
        time.sleep(0.25)
    [held] = stack.am_alerts("SlowScoreLatency")
    assert held["status"]["state"] == "suppressed" and held["status"]["inhibitedBy"]
    time.sleep(3)  # several group intervals: had it been sendable, it would have been sent
    delivered = {a["labels"]["alertname"] for r in stack.webhook.received for a in stack.webhook.alerts(r)}
    assert "SlowScoreLatency" not in delivered
    warnings_delivered = {(a["labels"]["alertname"], a["labels"].get("long_window")) for a in stack.webhook.alerts("slack-warning")}
    assert not {w for w in warnings_delivered if w[0] == "ScoreLatencyErrorBudgetBurn"}


def test_slack_and_pagerduty_notifications_carry_absolute_runbook_and_dashboard_links(stack, synthetic_traffic, tmp_path):
    """The alerts Prometheus sent (annotations rendered by Prometheus from the rules), through an
    Alertmanager running observability/alertmanager.yml's own Slack and PagerDuty templates."""
    warning = stack.wait_for_notification("slack-warning", "HighInvalidOutcomesRate")
    critical = stack.wait_for_notification("pagerduty-critical", "CriticalScoreLatency")
    with notifying_alertmanager(tmp_path) as (am_url, sent):
        body = json.dumps(
            [{"labels": a["labels"], "annotations": a["annotations"], "startsAt": a["startsAt"]} for a in (warning, critical)]
        ).encode()
        request = urllib.request.Request(f"{am_url}/api/v2/alerts", data=body, method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (sent.received.get("slack-api") and sent.received.get("pagerduty-api")):
            time.sleep(0.2)
        [slack] = sent.received["slack-api"]
        [pagerduty] = sent.received["pagerduty-api"]
    text = slack["attachments"][0]["text"]
    assert f"Runbook: {RUNBOOKS}#highinvalidoutcomesrate" in text, text
    assert f"Dashboard: {DASHBOARD}?var-environment={ENVIRONMENT}" in text, text
    links = {link["text"]: link["href"] for link in pagerduty["links"]}
    assert links == {
        "Runbook: CriticalScoreLatency": f"{RUNBOOKS}#criticalscorelatency",
        "Dashboard: pricing service": f"{DASHBOARD}?var-environment={ENVIRONMENT}",
    }, links
    details = pagerduty["payload"]["custom_details"]
    assert details["runbook"] == f"{RUNBOOKS}#criticalscorelatency"
    assert details["dashboard"] == f"{DASHBOARD}?var-environment={ENVIRONMENT}"
    for url in [*links.values(), details["runbook"], details["dashboard"]]:
        assert urllib.parse.urlsplit(url).scheme in ("http", "https") and urllib.parse.urlsplit(url).netloc, url


def test_healthy_parts_of_the_workload_raise_no_alert(stack, synthetic_traffic):
    stack.wait_for_notification("slack-warning", "HighInvalidOutcomesRate")
    expected = {"CriticalScoreLatency", "SlowScoreLatency", "HighInvalidOutcomesRate", "ScoreLatencyErrorBudgetBurn"}
    assert set(stack.firing()) <= expected, stack.firing()


def test_every_dashboard_panel_returns_data(stack, synthetic_traffic):
    assert panels_without_data(stack.prometheus_url, environment=ENVIRONMENT) == {}
    # The property variable narrows per-property panels to one property, and still finds data.
    assert panels_without_data(stack.prometheus_url, ENVIRONMENT, SyntheticWorkload.PROPERTIES[1]) == {}


def test_dashboard_snapshot_from_the_running_prometheus(stack, synthetic_traffic, tmp_path, capsys):
    output = tmp_path / "dashboard.png"
    code = render_dashboard.main(
        [stack.prometheus_url, "--minutes", "2", "--output", str(output), "--environment", ENVIRONMENT, "--require-data"]
    )
    assert code == 0, capsys.readouterr().out
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "18/18 panels with data" in capsys.readouterr().out
