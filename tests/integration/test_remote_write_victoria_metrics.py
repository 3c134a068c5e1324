"""Long-term storage: Prometheus remote-writes what it scrapes to VictoriaMetrics (the pinned
stack's Debian ``victoria-metrics``, loopback), with observability/prometheus.yml's
``remote_write`` pointed at a local instance.

A container's push (the project's pusher) reaches the Pushgateway, Prometheus scrapes it, and
the same sample, with the container's labels and Prometheus' external labels, is then found
by querying VictoriaMetrics' own API. Skips without the binary (it is pinned for amd64 only),
fails when CI=true.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from local import prometheus_stack
from pricing.observability.metrics import PricingMetrics
from pricing.observability.push import MetricsPusher
from pricing.settings import Settings
from support.obs_stack import OBSERVABILITY, Service, free_port
from support.promstack import Pushgateway

pytestmark = pytest.mark.services


def require_victoria_metrics() -> str:
    why = prometheus_stack.problem(prometheus_stack.VICTORIA_METRICS)
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why + " and CI=true")
        pytest.skip(why)
    return prometheus_stack.require(prometheus_stack.VICTORIA_METRICS)


def vm_query(url: str, expr: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=5) as r:
        return json.loads(r.read())["data"]["result"]


def test_a_pushed_sample_reaches_victoria_metrics_through_prometheus_remote_write(tmp_path):
    vm_binary = require_victoria_metrics()
    vm_port, prom_port = free_port(), free_port()
    vm_url = f"http://127.0.0.1:{vm_port}"
    vm = Service(
        "VictoriaMetrics",
        [
            vm_binary,
            f"-httpListenAddr=127.0.0.1:{vm_port}",
            f"-storageDataPath={tmp_path / 'vm-data'}",
            "-retentionPeriod=1d",
            "-search.latencyOffset=0s",
            "-loggerLevel=WARN",
        ],
        f"{vm_url}/health",
        tmp_path / "victoria-metrics.log",
    )
    with Pushgateway() as pgw:
        config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
        config.pop("alerting")
        config["rule_files"] = []
        config["global"].update(scrape_interval="1s", evaluation_interval="1s", external_labels={"replica": "a"})
        assert config["remote_write"][0]["url"].endswith("/api/v1/write")  # the project's, re-pointed:
        config["remote_write"][0]["url"] = f"{vm_url}/api/v1/write"
        config["remote_write"][0]["queue_config"]["batch_send_deadline"] = "1s"
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [pgw.address if job["job_name"] == "pushgateway" else f"127.0.0.1:{prom_port}"]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        prometheus = Service(
            "Prometheus",
            [
                prometheus_stack.require(prometheus_stack.PROMETHEUS),
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
                *prometheus_stack.PROMETHEUS_FLAGS,
            ],
            f"http://127.0.0.1:{prom_port}/-/ready",
            tmp_path / "prometheus.log",
        )
        started = []
        try:
            started.append(vm.start())
            started.append(prometheus.start())
            metrics = PricingMetrics()
            pusher = MetricsPusher(
                metrics, Settings(pushgateway_url=pgw.url, function_name="score"), instance="remote-write-check", wait_for_answers=True
            )
            for _ in range(7):
                metrics.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
            assert pusher.push().ok
            pusher.close()
            expr = 'pricing_requests_total{instance="remote-write-check",endpoint="/score",status_code="200"}'
            deadline = time.monotonic() + 60
            found: list[dict] = []
            while time.monotonic() < deadline and not found:
                found = vm_query(vm_url, expr)
                time.sleep(0.5)
            assert found, f"never reached VictoriaMetrics; its log: {vm.log_tail()}; Prometheus: {prometheus.log_tail()}"
            [series] = found
            assert float(series["value"][1]) == 7
            labels = series["metric"]
            assert labels["job"] == "pricing-score" and labels["environment"] == "development"
            assert labels["replica"] == "a"  # the pair's copies stay apart until deduplicated
        finally:
            for service in reversed(started):
                service.stop()
