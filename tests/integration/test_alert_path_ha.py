"""The alert path highly available, with the real binaries of the pinned stack (loopback).

A Prometheus pair with identical rules (the project's, durations cut to seconds as in
``support.obs_stack``) scrapes one Pushgateway; each sends every alert to all three
Alertmanagers, which form one gossip cluster (127.0.0.1, free ports) running the project's
routing tree with webhook receivers served by this test. As production runs it
(observability/README.md, "High availability"): the pair differs only in its ``replica``
external label, which ``alert_relabel_configs`` drops, so both send the same alert and the
cluster deduplicates it (the notification log is gossiped; each member waits its position x
``--cluster.peer-timeout`` before sending what no earlier member has sent).

The test fires an alert and sees exactly one notification; kills (SIGKILL) one Alertmanager and
one Prometheus; fires a second alert and sees exactly one notification from the survivors;
restarts both, waits for the cluster to count three members again, fires a third, and sees
exactly one: the killed members came back without re-sending the first two.

Each alert is ServiceDown (cause synthetic_check_stale) of its own environment: a synthetic
check timestamp older than 3 minutes pushed with an ``environment`` label (kept, honor_labels).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from local import prometheus_stack
from support.obs_stack import (
    OBSERVABILITY,
    Service,
    WebhookReceiver,
    alertmanager_config,
    free_port,
    http_json,
    require_binaries,
    shortened_rules,
)

pytestmark = pytest.mark.services

PEER_TIMEOUT = "2s"
QUIET_SECONDS = 6.0  # after a notification: long enough for a duplicate to show (3 x peer timeout)


def push_stale_synthetic_check(pushgateway_url: str, environment: str) -> None:
    body = (
        f"# TYPE pricing_synthetic_check_timestamp_seconds gauge\n"
        f'pricing_synthetic_check_timestamp_seconds{{environment="{environment}"}} {time.time() - 600:.3f}\n'
    ).encode()
    request = urllib.request.Request(
        f"{pushgateway_url}/metrics/job/pricing-score/instance/synthetic-{environment}", data=body, method="PUT"
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


class AlertmanagerCluster:
    """Three Alertmanagers gossiping on 127.0.0.1; member ``i`` can be killed and restarted."""

    def __init__(self, tmp: Path, binary: str, config: Path, prefix: str) -> None:
        self.prefix = prefix
        self.web = [free_port() for _ in range(3)]
        self.gossip = [free_port() for _ in range(3)]
        self.services = []
        for i in range(3):
            peers = [f"--cluster.peer=127.0.0.1:{p}" for j, p in enumerate(self.gossip) if j != i]
            self.services.append(
                Service(
                    f"Alertmanager {i}",
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.path={tmp / f'am-{i}'}",
                        f"--web.listen-address=127.0.0.1:{self.web[i]}",
                        f"--web.route-prefix={prefix}",
                        f"--cluster.listen-address=127.0.0.1:{self.gossip[i]}",
                        f"--cluster.advertise-address=127.0.0.1:{self.gossip[i]}",
                        *peers,
                        f"--cluster.peer-timeout={PEER_TIMEOUT}",
                        "--cluster.gossip-interval=100ms",
                        "--cluster.pushpull-interval=1s",
                        "--cluster.settle-timeout=3s",
                        "--log.level=warn",
                    ],
                    f"http://127.0.0.1:{self.web[i]}{prefix}/-/ready",
                    tmp / f"alertmanager-{i}.log",
                )
            )

    def targets(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.web]

    def members(self, i: int) -> int:
        status = http_json(f"http://127.0.0.1:{self.web[i]}{self.prefix}/api/v2/status")
        return sum(1 for peer in status["cluster"].get("peers") or [])

    def wait_for_members(self, alive: list[int], expected: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(self.members(i) == expected for i in alive):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the cluster never counted {expected} members: {[self.members(i) for i in alive]}")


def prometheus_service(
    tmp: Path, binary: str, replica: str, pushgateway: str, alertmanagers: list[str], prefix: str, rules: list[str]
) -> Service:
    port = free_port()
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", external_labels={"replica": replica})
    config.pop("remote_write", None)
    config["alerting"] = {
        # Both replicas send the same alert: without its replica label the cluster dedupes it.
        "alert_relabel_configs": [{"action": "labeldrop", "regex": "replica"}],
        "alertmanagers": [{"static_configs": [{"targets": alertmanagers}], "path_prefix": prefix}],
    }
    config["rule_files"] = rules
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [pushgateway if job["job_name"] == "pushgateway" else f"127.0.0.1:{port}"]}]
        if job["job_name"] == "pushgateway":
            job["metrics_path"] = f"{prefix}/metrics"
    path = tmp / f"prometheus-{replica}.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return Service(
        f"Prometheus {replica}",
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp / f'prometheus-{replica}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
            *prometheus_stack.PROMETHEUS_FLAGS,
        ],
        f"http://127.0.0.1:{port}/-/ready",
        tmp / f"prometheus-{replica}.log",
    )


def kill(service: Service) -> None:
    """SIGKILL: no shutdown, no last snapshot, no goodbye to the cluster."""
    os.killpg(service.process.pid, signal.SIGKILL)
    service.process.wait(timeout=10)


def notifications(webhook: WebhookReceiver, environment: str) -> list[dict]:
    """Every notification that carried a firing ServiceDown of ``environment``."""
    notes = [n for notes in webhook.received.values() for n in notes]  # a snapshot
    return [
        n
        for n in notes
        if any(
            a["status"] == "firing" and a["labels"].get("alertname") == "ServiceDown" and a["labels"].get("environment") == environment
            for a in n["alerts"]
        )
    ]


def exactly_one(webhook: WebhookReceiver, environment: str, timeout: float = 45.0) -> dict:
    deadline = time.monotonic() + timeout
    while not notifications(webhook, environment):
        if time.monotonic() > deadline:
            raise AssertionError(f"no notification for {environment}; webhook got {json.dumps(dict(webhook.received))[:2000]}")
        time.sleep(0.1)
    time.sleep(QUIET_SECONDS)  # every member has had its turn by now
    got = notifications(webhook, environment)
    assert len(got) == 1, f"{len(got)} notifications for {environment}"
    return got[0]


def test_one_notification_per_alert_while_an_alertmanager_and_a_prometheus_die_and_after_they_return(tmp_path):
    binaries = require_binaries()
    prefix = f"/t{secrets.token_hex(6)}"
    webhook = WebhookReceiver(prefix)
    am_config = alertmanager_config(tmp_path, webhook.url)
    config = yaml.safe_load(am_config.read_text())
    # One group per environment, so that each notification is about one alert.
    config["route"]["group_by"] = ["alertname", "environment"]
    for route in config["route"].get("routes", []):
        route.pop("group_by", None)
    am_config.write_text(yaml.safe_dump(config, sort_keys=False))

    pg_port = free_port()
    pushgateway_url = f"http://127.0.0.1:{pg_port}{prefix}"
    pushgateway = Service(
        "Pushgateway",
        [
            binaries[prometheus_stack.PUSHGATEWAY],
            f"--web.listen-address=127.0.0.1:{pg_port}",
            f"--web.route-prefix={prefix}",
            "--persistence.file=",
            "--log.level=warn",
            *prometheus_stack.PUSHGATEWAY_FLAGS,
        ],
        f"{pushgateway_url}/-/ready",
        tmp_path / "pushgateway.log",
    )
    cluster = AlertmanagerCluster(tmp_path, binaries[prometheus_stack.ALERTMANAGER], am_config, prefix)
    rules = shortened_rules(tmp_path)
    pair = [
        prometheus_service(
            tmp_path, binaries[prometheus_stack.PROMETHEUS], replica, f"127.0.0.1:{pg_port}", cluster.targets(), prefix, rules
        )
        for replica in ("a", "b")
    ]
    started: list[Service] = []
    try:
        started.append(pushgateway.start())
        for service in cluster.services:
            started.append(service.start())
        cluster.wait_for_members([0, 1, 2], 3)
        for service in pair:
            started.append(service.start())

        push_stale_synthetic_check(pushgateway_url, "ha-before")
        first = exactly_one(webhook, "ha-before")
        assert first["alerts"][0]["labels"]["cause"] == "synthetic_check_stale"
        assert "replica" not in first["alerts"][0]["labels"]

        kill(cluster.services[0])
        kill(pair[0])
        push_stale_synthetic_check(pushgateway_url, "ha-degraded")
        exactly_one(webhook, "ha-degraded")
        assert len(notifications(webhook, "ha-before")) == 1

        cluster.services[0].start()
        pair[0].start()
        cluster.wait_for_members([0, 1, 2], 3)
        push_stale_synthetic_check(pushgateway_url, "ha-recovered")
        exactly_one(webhook, "ha-recovered")
        # The returned members sent nothing again: each earlier alert still has one notification.
        assert len(notifications(webhook, "ha-before")) == 1
        assert len(notifications(webhook, "ha-degraded")) == 1
    finally:
        for service in reversed(started):
            service.stop()
        for service in (*cluster.services, *pair):
            service.stop()
        webhook.close()
