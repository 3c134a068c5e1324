"""The observability stack for tests: Pushgateway -> Prometheus -> Alertmanager -> webhook.

``observability_stack(tmp)`` starts the pinned stack's ``prometheus-pushgateway``, ``prometheus``
and ``prometheus-alertmanager`` (``local.prometheus_stack``: ``.tools/prometheus-stack/bin``,
installed by ``make setup``) on free 127.0.0.1 ports, plus a webhook receiver in this process,
with the project's own files: Prometheus runs ``observability/prometheus.yml`` and both rule
files, Alertmanager runs ``observability/alertmanager.yml``'s routing tree and inhibition rules.
Only what a test machine needs is changed: addresses, 1 s scrape and evaluation intervals,
alert ``for`` durations cut to seconds (criticals 1 s, warnings 5 s, so a critical is always
there before the warnings it inhibits), Alertmanager's group timers cut to a second, and each
receiver's PagerDuty/Slack config replaced by a webhook to ``/<receiver name>`` so the test sees
which receiver the routing chose. Expressions and thresholds are untouched.

Every service serves under a random route prefix (``/t<hex>/...``): on a shared machine a
process of another test may still push to, or post alerts at, a port this test now uses, and
such strays must get a 404 instead of mixing into the sums this test checks. For the same
reason the Pushgateway keeps its groups in memory only.

What a test reads back: ``Stack.wait_for_notification(receiver, alertname)``, ``Stack.firing()``,
``Stack.query(expr)``, ``Stack.am_alerts(alertname)``, and ``panels_without_data(prometheus_url)``
(the dashboard's panels whose queries return nothing). ``render_dashboard`` is
``observability/render_dashboard.py`` loaded as a module.

Used by tests/integration/test_observability_stack.py (a synthetic push workload) and
tests/e2e/test_observability_workload.py (traffic through the service in local Lambda).
Skips without the pinned stack, or fails when CI=true.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from local import prometheus_stack
from support.stub_http import Reply, StubServer

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
BINARIES = (prometheus_stack.PUSHGATEWAY, prometheus_stack.PROMETHEUS, prometheus_stack.ALERTMANAGER)
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

    def start(self, timeout: float = 30.0) -> Service:
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child, closed just below
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
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


class WebhookReceiver(StubServer):
    """Alertmanager's webhook notifications, kept by path (= receiver name)."""

    def __init__(self, prefix: str):
        # "ok" as Slack's webhooks answer (Alertmanager checks a Slack answer's body).
        super().__init__(lambda request: Reply(200, "ok") if request.path.startswith(prefix + "/") else Reply(404))
        self.prefix = prefix
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def received(self) -> dict[str, list[dict]]:
        """Each receiver's notifications, in delivery order."""
        notes: dict[str, list[dict]] = defaultdict(list)
        for request in self.requests_to():
            if request.method == "POST" and request.path.startswith(self.prefix + "/"):
                notes[request.path[len(self.prefix) :].strip("/")].append(request.json())
        return notes

    def alerts(self, receiver: str) -> list[dict]:
        """Every alert delivered to ``receiver``, in delivery order."""
        return [alert for note in self.received.get(receiver, []) for alert in note["alerts"]]

    def close(self):
        self.stop()


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
        raise AssertionError(
            f"{alertname} never reached {receiver}; webhook got "
            f"{ {r: [a['labels']['alertname'] for a in self.webhook.alerts(r)] for r in self.webhook.received} }; "
            f"Prometheus alerts: {self.firing()}"
        )

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


def require_binaries() -> dict[str, str]:
    """name -> path of each binary the stack runs; skips without them, fails when CI=true."""
    problems = [why for why in map(prometheus_stack.problem, BINARIES) if why]
    if problems:
        message = "; ".join(problems)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " and CI=true")
        pytest.skip(message)
    return {name: prometheus_stack.require(name) for name in BINARIES}


def shortened_rules(tmp: Path) -> list[str]:
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


def prometheus_config(tmp: Path, port: int, pushgateway: str, alertmanager: str, prefix: str) -> Path:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config.pop("remote_write", None)  # test_remote_write_victoria_metrics.py has its own
    config["alerting"]["alertmanagers"][0].update(static_configs=[{"targets": [alertmanager]}], path_prefix=prefix)
    config["rule_files"] = shortened_rules(tmp)
    targets = {"pushgateway": pushgateway, "prometheus": f"127.0.0.1:{port}"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        if job["job_name"] == "pushgateway":
            job["metrics_path"] = f"{prefix}/metrics"
            # Created timestamps travel only in protobuf (prometheus.yml says so too).
            job["scrape_protocols"] = list(prometheus_stack.PUSHGATEWAY_SCRAPE_PROTOCOLS)
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def alertmanager_config(tmp: Path, webhook_url: str) -> Path:
    config = yaml.safe_load((OBSERVABILITY / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": f"{webhook_url}/{r['name']}", "send_resolved": True}]} for r in config["receivers"]
    ]
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def notifying_alertmanager_config(tmp: Path, webhook_url: str) -> Path:
    """observability/alertmanager.yml with its Slack and PagerDuty receivers and templates as
    they are, only their endpoints and secrets pointed at ``webhook_url`` (``/slack-api``,
    ``/pagerduty-api``): what a notification says, rendered by Alertmanager itself."""
    config = yaml.safe_load((OBSERVABILITY / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    del config["global"]["slack_api_url_file"]
    config["global"]["slack_api_url"] = f"{webhook_url}/slack-api"
    for receiver in config["receivers"]:
        for pagerduty in receiver.get("pagerduty_configs", []):
            del pagerduty["routing_key_file"]
            pagerduty.update(routing_key="test-routing-key", url=f"{webhook_url}/pagerduty-api")
    path = tmp / "alertmanager-notifying.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.contextmanager
def notifying_alertmanager(tmp: Path) -> Iterator[tuple[str, WebhookReceiver]]:
    """An Alertmanager running the project's receivers (``notifying_alertmanager_config``);
    yields its API URL and the receiver that gets the Slack and PagerDuty requests."""
    binaries = require_binaries()
    prefix = f"/n{secrets.token_hex(6)}"
    webhook = WebhookReceiver(prefix)
    port = free_port()
    service = Service(
        "Alertmanager (notifying)",
        [
            binaries[prometheus_stack.ALERTMANAGER],
            f"--config.file={notifying_alertmanager_config(tmp, webhook.url)}",
            f"--storage.path={tmp / 'alertmanager-notifying-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        f"http://127.0.0.1:{port}/-/ready",
        tmp / "alertmanager-notifying.log",
    )
    try:
        service.start()
        yield f"http://127.0.0.1:{port}", webhook
    finally:
        service.stop()
        webhook.close()


def push_synthetic_check(pushgateway_url: str) -> None:
    """What the scheduled synthetic /health invocation pushes each minute (ServiceDown's signal).

    A deployed stack always has it; the tests here are shorter than its 3-minute limit.
    """
    body = (
        f"# TYPE pricing_synthetic_check_timestamp_seconds gauge\npricing_synthetic_check_timestamp_seconds {time.time():.3f}\n"
    ).encode()
    request = urllib.request.Request(f"{pushgateway_url}/metrics/job/pricing-score/instance/synthetic-check", data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=5):
        pass


@contextlib.contextmanager
def observability_stack(tmp: Path, synthetic_check: bool = True) -> Iterator[Stack]:
    """The whole stack on free ports under ``tmp``; stopped on exit.

    ``synthetic_check``: push one synthetic-check timestamp first, as a deployed stack always has
    (ServiceDown's signal). Off when the workload runs the real synthetic check itself.
    """
    binaries = require_binaries()
    prefix = f"/t{secrets.token_hex(6)}"
    webhook = WebhookReceiver(prefix)
    pg_port, prom_port, am_port = free_port(), free_port(), free_port()
    pushgateway_url = f"http://127.0.0.1:{pg_port}{prefix}"
    services = [
        Service(
            "Pushgateway",
            [
                binaries[prometheus_stack.PUSHGATEWAY],
                f"--web.listen-address=127.0.0.1:{pg_port}",
                f"--web.route-prefix={prefix}",
                # Debian's build defaults to a shared file in /var/lib/prometheus:
                # every Pushgateway started without this loads everyone's groups.
                "--persistence.file=",
                "--log.level=warn",
                *prometheus_stack.PUSHGATEWAY_FLAGS,
            ],
            f"{pushgateway_url}/-/ready",
            tmp / "pushgateway.log",
        ),
        Service(
            "Alertmanager",
            [
                binaries[prometheus_stack.ALERTMANAGER],
                f"--config.file={alertmanager_config(tmp, webhook.url)}",
                f"--storage.path={tmp / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                f"--web.route-prefix={prefix}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            f"http://127.0.0.1:{am_port}{prefix}/-/ready",
            tmp / "alertmanager.log",
        ),
        Service(
            "Prometheus",
            [
                binaries[prometheus_stack.PROMETHEUS],
                f"--config.file={prometheus_config(tmp, prom_port, f'127.0.0.1:{pg_port}', f'127.0.0.1:{am_port}', prefix)}",
                f"--storage.tsdb.path={tmp / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
                *prometheus_stack.PROMETHEUS_FLAGS,
            ],
            f"http://127.0.0.1:{prom_port}/-/ready",
            tmp / "prometheus.log",
        ),
    ]
    started = []
    try:
        started.append(services[0].start())
        if synthetic_check:
            push_synthetic_check(pushgateway_url)
        for service in services[1:]:
            started.append(service.start())
        stack = Stack(pushgateway_url, f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}{prefix}", webhook, started)
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


def panels_without_data(prometheus_url: str, environment: str = ".*", property_id: str = ".*", minutes: float = 2.0) -> dict[str, str]:
    """Dashboard panels whose queries return nothing (title -> why) over the last ``minutes``."""
    dashboard = render_dashboard.load_dashboard()
    variables = render_dashboard.default_variables(dashboard, environment, property_id)
    end = time.time()
    panels = render_dashboard.collect(prometheus_url, dashboard, end - 60 * minutes, end, 1, variables)
    return {
        p.title: "; ".join(p.errors) or "no data"
        for p in panels
        if not p.has_data or not any(math.isfinite(v) for s in p.series for v in s.values)
    }
