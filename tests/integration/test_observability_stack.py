"""The observability stack for real: Pushgateway -> Prometheus -> Alertmanager -> webhook.

Fixtures start Debian's ``prometheus-pushgateway``, ``prometheus`` and
``prometheus-alertmanager`` on free 127.0.0.1 ports, plus a webhook receiver in this process,
with the project's own files: Prometheus runs ``observability/prometheus.yml`` and both rule
files, Alertmanager runs ``observability/alertmanager.yml``'s routing tree and inhibition rules.
Only what a test machine needs is changed: addresses, 1 s scrape and evaluation intervals,
alert ``for`` durations cut to seconds (criticals 1 s, warnings 5 s, so a critical is always
there before the warnings it inhibits), Alertmanager's group timers cut to a second, and each
receiver's PagerDuty/Slack config replaced by a webhook to ``/<receiver name>`` so the test sees
which receiver the routing chose. Expressions and thresholds are untouched.

The stack test (``SyntheticWorkload``) pushes what the functions push, as they push it: one
push group per Lambda container (``job="pricing-<function>"``, ``instance=<container>``) plus
one sub-group per property (``property_id`` in the grouping key), every series first pushed at
zero, then cumulative counts once a second. Its traffic is slow on /score (every request
~450 ms) and floods /learn with invalid outcomes (40%), and is healthy otherwise. Expected:
CriticalScoreLatency and the critical /score latency budget burn page PagerDuty,
HighInvalidOutcomesRate reaches Slack, SlowScoreLatency is inhibited, nothing else fires, and
every dashboard panel's query returns data.

A workload through the service itself can reuse the ``stack`` fixture: point the local Lambda
functions' ``PUSHGATEWAY_URL`` at ``stack.pushgateway_url``, drive traffic, then use
``stack.wait_for_notification`` and ``panels_without_data``.

Every service serves under a random route prefix (``/t<hex>/...``): on a shared machine a
process of another test may still push to, or post alerts at, a port this test now uses, and
such strays must get a 404 instead of mixing into the sums this test checks. For the same
reason the Pushgateway keeps its groups in memory only.

Skips without the Debian packages, or fails when CI=true.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
import yaml

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
BINARIES = {"prometheus-pushgateway": "prometheus-pushgateway", "prometheus": "prometheus",
            "prometheus-alertmanager": "prometheus-alertmanager"}
ENVIRONMENT = "development"  # what observability/prometheus.yml attaches to every series

_spec = importlib.util.spec_from_file_location("render_dashboard", OBSERVABILITY / "render_dashboard.py")
render_dashboard = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("render_dashboard", render_dashboard)
_spec.loader.exec_module(render_dashboard)


# ------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, data: bytes | None = None, method: str = "GET", timeout: float = 5.0):
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


class Service:
    """A child process on 127.0.0.1, ready when ``ready_url`` answers 200; stopped by pid."""

    def __init__(self, name: str, args: list[str], ready_url: str, log_path: Path):
        self.name, self.args, self.ready_url, self.log_path = name, args, ready_url, log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Service":
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class WebhookReceiver:
    """Alertmanager's webhook notifications, kept by path (= receiver name)."""

    def __init__(self, prefix: str):
        self.received: dict[str, list[dict]] = defaultdict(list)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.startswith(prefix + "/"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.received[self.path[len(prefix):].strip("/")].append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{prefix}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, receiver: str) -> list[dict]:
        """Every alert delivered to ``receiver``, in delivery order."""
        with self.lock:
            return [alert for note in self.received.get(receiver, []) for alert in note["alerts"]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    pushgateway_url: str
    prometheus_url: str
    alertmanager_url: str
    webhook: WebhookReceiver
    services: list[Service] = field(default_factory=list)

    def wait_for_notification(self, receiver: str, alertname: str, timeout: float = 60.0) -> dict:
        """The first firing ``alertname`` the webhook got for ``receiver`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for alert in self.webhook.alerts(receiver):
                if alert["labels"].get("alertname") == alertname and alert["status"] == "firing":
                    return alert
            time.sleep(0.25)
        raise AssertionError(f"{alertname} never reached {receiver}; webhook got "
                             f"{ {r: [a['labels']['alertname'] for a in self.webhook.alerts(r)] for r in self.webhook.received} }; "
                             f"Prometheus alerts: {self.firing()}")

    def firing(self) -> dict[str, set[str]]:
        """alertname -> severities firing in Prometheus now."""
        out: dict[str, set[str]] = defaultdict(set)
        for alert in http_json(f"{self.prometheus_url}/api/v1/alerts")["data"]["alerts"]:
            if alert["state"] == "firing":
                out[alert["labels"]["alertname"]].add(alert["labels"].get("severity", ""))
        return dict(out)

    def query(self, expr: str) -> list[dict]:
        url = f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        return http_json(url)["data"]["result"]

    def am_alerts(self, alertname: str) -> list[dict]:
        url = f"{self.alertmanager_url}/api/v2/alerts?{urllib.parse.urlencode({'filter': f'alertname={alertname}'})}"
        return http_json(url)


def require_binaries() -> None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        message = f"not installed: {', '.join(missing)} (apt-get install {' '.join(BINARIES.values())})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " and CI=true")
        pytest.skip(message)


def test_rules(tmp: Path) -> list[str]:
    """The project's rule files with alert durations cut to seconds (nothing else changed)."""
    paths = [str(OBSERVABILITY / "prometheus_recording_rules.yml")]
    rules = yaml.safe_load((OBSERVABILITY / "prometheus_alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "1s" if rule["labels"]["severity"] == "critical" else "5s"
    path = tmp / "prometheus_alerts.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return paths + [str(path)]


test_rules.__test__ = False  # a helper, not a test


def prometheus_config(tmp: Path, port: int, pushgateway: str, alertmanager: str, prefix: str) -> Path:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["alerting"]["alertmanagers"][0].update(static_configs=[{"targets": [alertmanager]}],
                                                  path_prefix=prefix)
    config["rule_files"] = test_rules(tmp)
    targets = {"pushgateway": pushgateway, "prometheus": f"127.0.0.1:{port}"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        if job["job_name"] == "pushgateway":
            job["metrics_path"] = f"{prefix}/metrics"
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def alertmanager_config(tmp: Path, webhook_url: str) -> Path:
    config = yaml.safe_load((OBSERVABILITY / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": f"{webhook_url}/{r['name']}", "send_resolved": True}]}
        for r in config["receivers"]]
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def push_synthetic_check(pushgateway_url: str) -> None:
    """What the scheduled synthetic /health invocation pushes each minute (ServiceDown's signal).

    A deployed stack always has it; the tests here are shorter than its 3-minute limit.
    """
    body = (f"# TYPE pricing_synthetic_check_timestamp_seconds gauge\n"
            f"pricing_synthetic_check_timestamp_seconds {time.time():.3f}\n").encode()
    request = urllib.request.Request(f"{pushgateway_url}/metrics/job/pricing-score/instance/synthetic-check",
                                     data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=5):
        pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    require_binaries()
    tmp = tmp_path_factory.mktemp("observability-stack")
    prefix = f"/t{secrets.token_hex(6)}"
    webhook = WebhookReceiver(prefix)
    pg_port, prom_port, am_port = free_port(), free_port(), free_port()
    pushgateway_url = f"http://127.0.0.1:{pg_port}{prefix}"
    services = [
        Service("Pushgateway", ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{pg_port}",
                                f"--web.route-prefix={prefix}",
                                # Debian's build defaults to a shared file in /var/lib/prometheus:
                                # every Pushgateway started without this loads everyone's groups.
                                "--persistence.file=", "--log.level=warn"],
                f"{pushgateway_url}/-/ready", tmp / "pushgateway.log"),
        Service("Alertmanager", ["prometheus-alertmanager",
                                 f"--config.file={alertmanager_config(tmp, webhook.url)}",
                                 f"--storage.path={tmp / 'alertmanager-data'}",
                                 f"--web.listen-address=127.0.0.1:{am_port}",
                                 f"--web.route-prefix={prefix}",
                                 "--cluster.listen-address=", "--log.level=warn"],
                f"http://127.0.0.1:{am_port}{prefix}/-/ready", tmp / "alertmanager.log"),
        Service("Prometheus", ["prometheus",
                               f"--config.file={prometheus_config(tmp, prom_port, f'127.0.0.1:{pg_port}', f'127.0.0.1:{am_port}', prefix)}",
                               f"--storage.tsdb.path={tmp / 'prometheus-data'}",
                               f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                f"http://127.0.0.1:{prom_port}/-/ready", tmp / "prometheus.log"),
    ]
    started = []
    try:
        started.append(services[0].start())
        push_synthetic_check(pushgateway_url)
        for service in services[1:]:
            started.append(service.start())
        stack = Stack(pushgateway_url, f"http://127.0.0.1:{prom_port}",
                      f"http://127.0.0.1:{am_port}{prefix}", webhook, started)
        # Prometheus hands new targets to its scrapers after a few seconds: wait for the first
        # scrape, so every push from now on is seen.
        deadline = time.monotonic() + 30
        while not stack.query('up{job="pushgateway"} == 1'):
            if time.monotonic() > deadline:
                raise RuntimeError("Prometheus never scraped the Pushgateway:\n" + started[-1].log_tail())
            time.sleep(0.2)
        yield stack
    finally:
        for service in reversed(started):
            service.stop()
        webhook.close()


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

    def observe(self, name: str, value: float, buckets: tuple, times: int = 1,
                property_id: str | None = None, **labels: str) -> None:
        key = tuple(labels.items())
        state = self.histograms[property_id][name].setdefault(
            key, {"buckets": buckets, "counts": [0] * len(buckets), "sum": 0.0, "count": 0})
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
            request = urllib.request.Request(pushgateway_url + path, method="PUT",
                                             data=self.exposition(group).encode())
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
            c.observe("pricing_api_latency_seconds", 0.45, API_BUCKETS, 20 * k,
                      method="POST", endpoint="/score", status_code="200")
            c.observe("pricing_api_latency_seconds", 0.004, API_BUCKETS, 1 * k,
                      method="GET", endpoint="/health", status_code="200")
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
                c.observe("pricing_model_prediction_seconds", 0.004, PREDICTION_BUCKETS, 10 * k,
                          property_id=prop, model_type="conversion")
                c.inc("pricing_competitor_fetches_total", 9 * k, property_id=prop, status="success")
                c.inc("pricing_competitor_fetches_total", 1 * k, property_id=prop, status="timeout")
                c.set("pricing_competitor_staleness_seconds", 3600 + 60 * i, property_id=prop)
        # The scheduled synthetic /health check succeeds every round.
        self.scores[0].set("pricing_synthetic_check_timestamp_seconds", now)

        c = self.ingest
        c.inc("pricing_requests_total", 2 * k, method="POST", endpoint="/learn", status_code="200")
        c.observe("pricing_api_latency_seconds", 0.08, API_BUCKETS, 2 * k,
                  method="POST", endpoint="/learn", status_code="200")
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
            c.inc("pricing_retraining_total", 1 * k, property_id=prop, model_type="conversion",
                  status="deployed" if i == 0 else "rejected")
            c.inc("pricing_retraining_total", 0, property_id=prop, model_type="conversion", status="failed")
            c.observe("pricing_retraining_duration_seconds", 95.0 + 30 * i, RETRAINING_BUCKETS, 1 * k,
                      property_id=prop, model_type="conversion")
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
    while time.monotonic() < deadline and not stack.query(
            'environment_property_id_reason:pricing_outcomes_invalid:rate5m > 0'):
        time.sleep(0.25)
    return workload


def panels_without_data(prometheus_url: str, environment: str = ".*", property_id: str = ".*") -> dict[str, str]:
    """Dashboard panels whose queries return nothing (title -> why) over the last 2 minutes."""
    dashboard = render_dashboard.load_dashboard()
    variables = render_dashboard.default_variables(dashboard, environment, property_id)
    end = time.time()
    panels = render_dashboard.collect(prometheus_url, dashboard, end - 120, end, 1, variables)
    return {p.title: "; ".join(p.errors) or "no data" for p in panels
            if not p.has_data or not any(math.isfinite(v) for s in p.series for v in s.values)}


# ------------------------------------------------------------------------------------- tests


def test_pushed_series_keep_container_labels_and_get_the_environment(stack, synthetic_traffic):
    groups = stack.query('count by (job, instance, environment) (push_time_seconds)')
    seen = {(g["metric"]["job"], g["metric"]["instance"], g["metric"]["environment"]) for g in groups}
    expected = {(c.job, c.instance, ENVIRONMENT) for c in synthetic_traffic.containers}
    assert expected <= seen  # honor_labels kept job/instance; the scrape added environment
    [total] = stack.query('sum(pricing_requests_total{endpoint="/score"})')
    assert float(total["value"][1]) == 2 * 20 * 5  # exact over containers: 2 x 20 x 5 rounds


def test_invalid_outcome_flood_fires_and_reaches_slack_through_alertmanager(stack, synthetic_traffic):
    alert = stack.wait_for_notification("slack-warning", "HighInvalidOutcomesRate")
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["environment"] == ENVIRONMENT
    assert alert["annotations"]["runbook_url"] == "observability/runbooks.md#highinvalidoutcomesrate"
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
    warnings_delivered = {(a["labels"]["alertname"], a["labels"].get("long_window"))
                          for a in stack.webhook.alerts("slack-warning")}
    assert not {w for w in warnings_delivered if w[0] == "ScoreLatencyErrorBudgetBurn"}


def test_healthy_parts_of_the_workload_raise_no_alert(stack, synthetic_traffic):
    stack.wait_for_notification("slack-warning", "HighInvalidOutcomesRate")
    expected = {"CriticalScoreLatency", "SlowScoreLatency", "HighInvalidOutcomesRate",
                "ScoreLatencyErrorBudgetBurn"}
    assert set(stack.firing()) <= expected, stack.firing()


def test_every_dashboard_panel_returns_data(stack, synthetic_traffic):
    assert panels_without_data(stack.prometheus_url, environment=ENVIRONMENT) == {}
    # The property variable narrows per-property panels to one property, and still finds data.
    assert panels_without_data(stack.prometheus_url, ENVIRONMENT, SyntheticWorkload.PROPERTIES[1]) == {}


def test_dashboard_snapshot_from_the_running_prometheus(stack, synthetic_traffic, tmp_path, capsys):
    output = tmp_path / "dashboard.png"
    code = render_dashboard.main([stack.prometheus_url, "--minutes", "2", "--output", str(output),
                                  "--environment", ENVIRONMENT, "--require-data"])
    assert code == 0, capsys.readouterr().out
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "18/18 panels with data" in capsys.readouterr().out
