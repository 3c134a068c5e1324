"""The Grafana dashboard (observability/grafana_dashboard.json) and its provisioning.

Checks what Grafana itself would need (import inputs, template variables, annotations, a
layout without overlaps) and what the spec fixes (18 panels, in order, with its titles), then
that every query is PromQL Prometheus accepts: each one, variables filled in as Grafana would,
goes through ``promtool check rules`` as a recording rule.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
DASHBOARD = OBSERVABILITY / "grafana_dashboard.json"

# spec/OBSERVABILITY.md, "Grafana - Visualization", in its order.
SPEC_PANEL_TITLES = [
    "API Request Rate",
    "/score Latency (p50, p95, p99)",
    "Error Rate",
    "Active Requests",
    "Service Uptime",
    "API Latency by Route (p95)",
    "Model Prediction Latency (p95)",
    "Model Cache Hit Rate",
    "Models Loaded",
    "Outcomes Ingested (rate)",
    "Invalid Outcomes",
    "Model Retraining Events",
    "Retraining Duration (p95)",
    "Drift Detection Events",
    "A/B Test Assignments",
    "A/B Test Conversion Rate",
    "Competitor Data Fetch Success Rate",
    "Competitor Data Staleness",
]

# Metric families of the spec plus the self-metrics the alerts use, as exposed.
KNOWN_METRICS = {
    "pricing_api_latency_seconds",
    "pricing_score_latency_seconds",
    "pricing_requests_total",
    "pricing_active_requests",
    "pricing_errors_total",
    "pricing_model_prediction_seconds",
    "pricing_model_cache_hits_total",
    "pricing_model_cache_misses_total",
    "pricing_models_loaded",
    "pricing_outcomes_ingested_total",
    "pricing_outcomes_invalid_total",
    "pricing_retraining_duration_seconds",
    "pricing_retraining_total",
    "pricing_drift_detected_total",
    "pricing_ab_assignments_total",
    "pricing_ab_outcomes_total",
    "pricing_competitor_fetches_total",
    "pricing_competitor_staleness_seconds",
    "pricing_service_info",
    "pricing_uptime_seconds",
    "pricing_metrics_push_failures_total",
    "pricing_synthetic_check_timestamp_seconds",
    "pricing_container_memory_bytes",
    "pricing_container_memory_limit_bytes",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Families labelled by property_id (their recorded aggregates keep the label).
PER_PROPERTY_METRICS = (
    "model_prediction_seconds",
    "outcomes_ingested",
    "outcomes_invalid",
    "retraining_duration_seconds",
    "retraining_total",
    "drift_detected",
    "competitor_fetches",
    "competitor_staleness",
)
# What Grafana substitutes for "All" and for the datasource.
ALL = {"environment": ".*", "property_id": ".*"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(dashboard: dict):
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel, target


def fill(expr: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: ALL.get(m.group(1), m.group(0)), expr)


def recorded_series() -> set[str]:
    rules = yaml.safe_load((OBSERVABILITY / "prometheus_recording_rules.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def all_expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression of the dashboard, variables filled in."""
    out = [(f"panel {p['id']} {p['title']!r} target {t['refId']}", fill(t["expr"])) for p, t in targets(dashboard)]
    for ann in dashboard["annotations"]["list"]:
        if ann.get("expr"):
            out.append((f"annotation {ann['name']!r}", fill(ann["expr"])))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["definition"])
            assert inner, f"variable {var['name']}: not label_values(<selector>, <label>)"
            out.append((f"variable {var['name']}", fill(inner.group(1))))
    return out


# ------------------------------------------------------------------------------------ structure


def test_panels_are_the_specs_eighteen_in_order(dashboard):
    assert [p["title"] for p in dashboard["panels"]] == SPEC_PANEL_TITLES


def test_panel_ids_unique_and_layout_has_no_overlap(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    cells = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
    # Grafana lays panels out by position: reading order must be the spec's order.
    order = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    assert [p["title"] for p in order] == SPEC_PANEL_TITLES


def test_importable_with_a_datasource_input(dashboard):
    inputs = dashboard["__inputs"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in inputs] == [("DS_PROMETHEUS", "datasource", "prometheus")]
    assert dashboard["id"] is None and dashboard["uid"]
    # Import replaces ${DS_PROMETHEUS}; provisioning does not, so panels go through the
    # datasource variable, whose current value import sets and provisioning re-resolves.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    for panel, target in targets(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_template_variables_environment_and_property(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "environment", "property_id"]
    for name in ("environment", "property_id"):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"]["uid"] == "${datasource}"
        assert var["includeAll"] and var["allValue"] == ".*" and var["multi"]
        assert var["query"]["query"] == var["definition"]
    # The property list follows the chosen environment.
    assert "$environment" in variables["property_id"]["definition"]


def test_every_query_filters_by_environment_and_per_property_panels_by_property(dashboard):
    for panel, target in targets(dashboard):
        expr = target["expr"]
        for selector in re.findall(r"\b[a-z_:]+\{[^}]*\}", expr):
            assert 'environment=~"$environment"' in selector, f"{panel['title']}: {selector}"
        if any(m in expr for m in PER_PROPERTY_METRICS):
            assert 'property_id=~"$property_id"' in expr, panel["title"]


def test_deployment_annotations(dashboard):
    annotations = {a["name"]: a for a in dashboard["annotations"]["list"]}
    ci = annotations["Deployments (CI)"]
    assert ci["enable"] and set(ci["target"]["tags"]) == {"pricing", "deployment"}
    seen = annotations["Deployments (new version seen)"]
    assert seen["enable"] and seen["datasource"]["uid"] == "${datasource}"
    assert "pricing_service_info" in seen["expr"] and "{{version}}" in seen["titleFormat"]


def test_histogram_quantiles_sum_buckets_by_le(dashboard):
    for where, expr in all_expressions(dashboard):
        for call in re.finditer(r"histogram_quantile\(", expr):
            rest = expr[call.end() :]
            assert re.match(r"\s*0?\.\d+,\s*sum by \(le\b", rest), f"{where}: {expr}"


def test_queries_name_known_metrics_and_existing_recording_rules(dashboard):
    recorded = recorded_series()
    for where, expr in all_expressions(dashboard):
        rule_names = re.findall(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", expr)
        for name in rule_names:
            assert name in recorded, f"{where}: {name} is not recorded"
        raw = re.sub(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b", "", expr)
        for name in set(re.findall(r"\bpricing_[a-z_]+\b", raw)):
            base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
            assert name in KNOWN_METRICS or base in KNOWN_METRICS, f"{where}: unknown metric {name}"


def test_every_query_is_valid_promql(dashboard, tmp_path):
    """promtool parses each expression as a recording rule; none may be rejected."""
    from support.promstack import require_binary

    promtool = require_binary("promtool")  # the pinned stack's (make setup)
    expressions = all_expressions(dashboard)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}:check", "expr": expr} for i, (_, expr) in enumerate(expressions)],
            }
        ]
    }
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in done.stdout
    assert len(expressions) >= 18 + 3  # every panel, the annotation, the two variables


# ----------------------------------------------------------------------------------- provisioning


def test_grafana_provisioning_datasource_and_dashboard_provider():
    provisioning = OBSERVABILITY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [ds] = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and ds["isDefault"]

    providers = yaml.safe_load((provisioning / "dashboards" / "pricing.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    # docker-compose.yml mounts the dashboard where the provider looks for it.
    compose = yaml.safe_load((OBSERVABILITY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana_dashboard.json:{provider['options']['path']}/grafana_dashboard.json:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


# ------------------------------------------------------------------------------- dashboard as code


def load_builder():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("dashboard_build", OBSERVABILITY / "dashboard" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("dashboard_build", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_committed_json_is_what_the_code_generates():
    assert DASHBOARD.read_text() == load_builder().render(), (
        "observability/grafana_dashboard.json differs from observability/dashboard/build.py: run make dashboard"
    )


def test_every_panel_has_a_unit_and_alert_thresholds_are_drawn(dashboard):
    for panel in dashboard["panels"]:
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit") not in (None, "", "short", "none"), panel["title"]
        steps = defaults["thresholds"]["steps"]
        if panel["type"] == "timeseries":
            drawn = defaults["custom"]["thresholdsStyle"]["mode"] != "off"
            assert drawn == (len(steps) > 1), panel["title"]
    by_title = {p["title"]: p["fieldConfig"]["defaults"]["thresholds"]["steps"] for p in dashboard["panels"]}
    # The values the alerts fire at (prometheus_alerts.yml).
    assert [s["value"] for s in by_title["/score Latency (p50, p95, p99)"]][1:] == [0.08, 0.2]
    assert [s["value"] for s in by_title["Error Rate"]][1:] == [0.05, 0.1]
    assert [s["value"] for s in by_title["Model Cache Hit Rate"]][1:] == [0.7]
    assert [s["value"] for s in by_title["Competitor Data Staleness"]][1:] == [86400]


def test_the_dashboard_sdk_is_a_build_dependency_only():
    for folder in ("layers", "functions"):
        for source in (ROOT / folder).rglob("*.py"):
            if ".aws-sam" in source.parts or "site-packages" in source.parts:
                continue
            assert "grafana_foundation_sdk" not in source.read_text(errors="replace"), source
    for requirements in [ROOT / "layers/shared/requirements.txt", *ROOT.glob("functions/*/requirements.txt")]:
        assert "grafana" not in requirements.read_text(), requirements
    pins = [line for line in (ROOT / "requirements-dev.txt").read_text().splitlines() if line.startswith("grafana-foundation-sdk==")]
    assert len(pins) == 1 and pins[0] in (ROOT / "constraints.txt").read_text().splitlines()
