"""prometheus.yml, alertmanager.yml and docker-compose.yml of observability/.

- ``amtool check-config`` and ``promtool check config`` are clean;
- the routing tree sends critical alerts to PagerDuty and warnings to Slack (asked of amtool's
  own router), grouped by alertname and severity, with warnings inhibited by a critical of the
  same family;
- no secret is committed: every credential is read from a file;
- Prometheus scrapes the Pushgateway as the Lambda containers need (honor_labels, environment).

amtool and promtool are the pinned stack's (``make setup``, ``local.prometheus_stack``); without
them the tests that run them skip, or fail when CI=true.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from local import prometheus_stack
from support.promstack import require_binary

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
ALERTMANAGER = OBSERVABILITY / "alertmanager.yml"
PROMETHEUS = OBSERVABILITY / "prometheus.yml"
COMPOSE = OBSERVABILITY / "docker-compose.yml"


def tool(name: str) -> str:
    return require_binary(name)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=OBSERVABILITY)


# ---------------------------------------------------------------------------------- Alertmanager


def test_amtool_check_config_is_clean():
    done = run(tool("amtool"), "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "1 inhibit rules" in done.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=CriticalScoreLatency", "family=score_latency"], "pagerduty-critical"),
        (["severity=critical", "alertname=ServiceDown", "cause=pushgateway_down"], "pagerduty-critical"),
        (["severity=warning", "alertname=HighInvalidOutcomesRate"], "slack-warning"),
        (["alertname=SomethingWithoutSeverity"], "slack-warning"),
    ],
)
def test_routes_critical_to_pagerduty_and_warning_to_slack(labels, receiver):
    done = run(tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver


def test_grouping_and_inhibition_of_warnings_by_a_critical_of_their_family():
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert config["route"]["group_by"] == ["alertname", "severity"]
    [rule] = config["inhibit_rules"]
    assert rule["source_matchers"] == ['severity="critical"', 'family=~".+"']
    assert rule["target_matchers"] == ['severity="warning"']
    assert rule["equal"] == ["family", "environment"]
    # The rules give families to inhibit within: every critical has warning siblings or is alone.
    alerts = [r for g in yaml.safe_load((OBSERVABILITY / "prometheus_alerts.yml").read_text())["groups"] for r in g["rules"]]
    families = {(r["labels"]["family"], r["labels"]["severity"]) for r in alerts}
    assert ("score_latency", "warning") in families and ("score_latency", "critical") in families
    assert ("errors", "warning") in families and ("errors", "critical") in families


def test_no_secret_is_committed():
    text = ALERTMANAGER.read_text()
    config = yaml.safe_load(text)
    assert config["global"]["slack_api_url_file"].startswith("/etc/alertmanager/secrets/")
    for receiver in config["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            assert "routing_key" not in pd and "service_key" not in pd
            assert pd["routing_key_file"].startswith("/etc/alertmanager/secrets/")
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack
    assert not re.search(r"hooks\.slack\.com|events\.pagerduty\.com/.+key|\b[0-9a-f]{32}\b", text)
    # docker-compose mounts the secrets directory; git keeps nothing in it but its .gitignore.
    assert (OBSERVABILITY / "secrets" / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]
    tracked = subprocess.run(["git", "ls-files", "observability/secrets"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    assert tracked in ([], ["observability/secrets/.gitignore"])


# ------------------------------------------------------------------------------------ Prometheus


def test_promtool_check_config_is_clean():
    done = run(tool("promtool"), "check", "config", str(PROMETHEUS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 2 rule files found" in done.stdout


def test_prometheus_scrapes_the_pushgateway_with_honor_labels_and_an_environment():
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    pushgateway = jobs["pushgateway"]  # ServiceDown reads up{job="pushgateway"}
    assert pushgateway["honor_labels"] is True
    assert pushgateway["static_configs"] == [{"targets": ["pushgateway:9091"]}]
    assert pushgateway["relabel_configs"] == [{"target_label": "environment", "replacement": "development"}]
    # Created timestamps travel only in protobuf: asked for first, text formats as the fallback.
    assert pushgateway["scrape_protocols"] == ["PrometheusProto", "OpenMetricsText1.0.0", "PrometheusText0.0.4"]
    assert config["rule_files"] == ["prometheus_recording_rules.yml", "prometheus_alerts.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


# -------------------------------------------------------------------------------- docker-compose


def test_docker_compose_runs_the_five_services_with_the_files_of_this_folder():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"pushgateway", "prometheus", "alertmanager", "grafana", "victoriametrics"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (OBSERVABILITY / source).exists() or source == "./secrets", f"{name}: {source}"
    # Prometheus finds its rule files next to prometheus.yml, as rule_files names them.
    mounts = services["prometheus"]["volumes"]
    for rule_file in yaml.safe_load(PROMETHEUS.read_text())["rule_files"]:
        assert f"./{rule_file}:/etc/prometheus/{rule_file}:ro" in mounts
    assert "./secrets:/etc/alertmanager/secrets:ro" in services["alertmanager"]["volumes"]
    # Hostnames in prometheus.yml are the compose service names.
    assert services["pushgateway"]["ports"] == ["9091:9091"]
    assert services["alertmanager"]["ports"] == ["9093:9093"]
    remote_write = yaml.safe_load(PROMETHEUS.read_text())["remote_write"]
    assert [w["url"] for w in remote_write] == ["http://victoriametrics:8428/api/v1/write"]
    assert services["victoriametrics"]["ports"] == ["8428:8428"]


def test_every_pushgateway_runs_without_the_consistency_check():
    """docker-compose, `make run`, the tests: the flag of local/prometheus_stack.py (docs/metrics.md)."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert prometheus_stack.PUSHGATEWAY_FLAGS == ("--push.disable-consistency-check",)
    assert list(prometheus_stack.PUSHGATEWAY_FLAGS) == services["pushgateway"]["command"]


def test_docker_compose_runs_the_pinned_versions_with_created_timestamps():
    """The images are the upstream versions of observability/stack/versions' packages."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    pins = prometheus_stack.pinned_versions()
    for service, package in (
        ("prometheus", "prometheus"),
        ("pushgateway", "prometheus-pushgateway"),
        ("alertmanager", "prometheus-alertmanager"),
    ):
        upstream = re.match(r"\d+\.\d+\.\d+", prometheus_stack.upstream_version(pins[package])).group(0)
        assert services[service]["image"] == f"prom/{service}:v{upstream}", service
    assert "--enable-feature=created-timestamp-zero-ingestion" in services["prometheus"]["command"]
    vm = re.match(r"\d+\.\d+\.\d+", prometheus_stack.upstream_version(pins["victoria-metrics"])).group(0)
    assert services["victoriametrics"]["image"] == f"victoriametrics/victoria-metrics:v{vm}"
