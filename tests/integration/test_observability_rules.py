"""The alert and recording rules (observability/prometheus_*.yml) against promtool and the spec.

- ``promtool check rules`` is clean and ``promtool test rules observability/tests/*.yml`` passes;
- every alert of spec/OBSERVABILITY.md exists with its severity, threshold and duration;
- every alert has a promtool case that fires and one, just under its threshold or its
  duration, that does not;
- every alert has summary, description and a runbook_url that resolves to a section of
  observability/runbooks.md saying what it means, what to check and how to fix it;
- the expressions aggregate as Lambda's per-container push groups need.

promtool is the pinned stack's (``make setup``, ``local.prometheus_stack``); without it these
tests skip, or fail when CI=true.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from support.promstack import require_binary

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
ALERTS = OBSERVABILITY / "prometheus_alerts.yml"
RECORDING = OBSERVABILITY / "prometheus_recording_rules.yml"
RULE_TESTS = sorted((OBSERVABILITY / "tests").glob("*.yml"))
RUNBOOKS = OBSERVABILITY / "runbooks.md"

# spec/OBSERVABILITY.md, "Alert Rules": name -> (severity, comparison in the rule, `for`).
SPEC_ALERTS = {
    "CriticalScoreLatency": ("critical", "> 0.08", "5m"),
    "HighErrorRate": ("critical", "> 0.1", "5m"),
    "ServiceDown": ("critical", "> 180", "1m"),  # redefined: synthetic check older than 3 min
    "NoModelsLoaded": ("critical", "== 0", "5m"),
    "RetrainingFailures": ("critical", "> 0", "5m"),
    "HighAPILatency": ("warning", "> 1", "5m"),
    "SlowScoreLatency": ("warning", "> 0.2", "5m"),
    "IncreasedErrorRate": ("warning", "> 0.05", "10m"),
    "SlowModelPrediction": ("warning", "> 0.1", "5m"),
    "LowModelCacheHitRate": ("warning", "< 0.7", "10m"),
    "HighInvalidOutcomesRate": ("warning", "> 0.1", "10m"),
    "LongRetrainingDuration": ("warning", "> 1800", "5m"),
    "FrequentDriftDetection": ("warning", "> 0.1", "10m"),
    "ABTestImbalance": ("warning", "> 0.2", "30m"),
    "LowABTestConversionRate": ("warning", "< 0.05", "1h"),
    "CompetitorDataFetchFailures": ("warning", "> 0.1", "10m"),
    "StaleCompetitorData": ("warning", "> 86400", "1h"),
    "HighActiveRequests": ("warning", "> 100", "5m"),  # redefined: Little's law
    "HighMemoryUsage": ("warning", "> 0.9", "10m"),  # redefined: share of the function's memory
}
REDEFINED_FOR_LAMBDA = ("ServiceDown", "HighMemoryUsage", "HighActiveRequests")
# Gauges: read only from push groups that pushed recently (a dead container's last value
# must not look current).
GAUGES = ("pricing_models_loaded", "pricing_competitor_staleness_seconds",
          "pricing_container_memory_bytes", "pricing_active_requests")
LIVE_FILTER = "and on (job, instance) (push_time_seconds > time() - 600)"


def promtool() -> str:
    return require_binary("promtool")


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def flat(expr: str) -> str:
    return re.sub(r"\s+", " ", expr).strip()


# ------------------------------------------------------------------------------------ promtool


def test_promtool_check_rules_is_clean():
    done = subprocess.run([promtool(), "check", "rules", str(RECORDING), str(ALERTS)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == 2


def test_promtool_rule_tests_pass():
    assert len(RULE_TESTS) >= 5
    done = subprocess.run([promtool(), "test", "rules", *map(str, RULE_TESTS)],
                          capture_output=True, text=True, timeout=120, cwd=OBSERVABILITY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS), done.stdout


def test_every_alert_has_a_firing_case_and_a_not_firing_case():
    firing, quiet = set(), set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


# ------------------------------------------------------------------------------ against the spec


def test_every_spec_alert_with_its_severity_threshold_and_duration():
    rules = {}
    for rule in alert_rules():
        rules.setdefault(rule["alert"], rule)  # the SLO alerts have several rules per name
    assert set(SPEC_ALERTS) <= set(rules)
    for name, (severity, comparison, duration) in SPEC_ALERTS.items():
        rule = rules[name]
        assert rule["labels"]["severity"] == severity, name
        assert rule.get("for") == duration, name
        assert re.search(re.escape(comparison) + r"(?![\d.])", flat(rule["expr"])), f"{name}: {comparison}"


def test_every_alert_has_severity_family_and_annotations():
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert re.fullmatch(r"[a-z_]+", rule["labels"]["family"]), rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        assert len(annotations["description"]) > 60, rule["alert"]


def runbook_sections() -> dict[str, str]:
    text = RUNBOOKS.read_text()
    parts = re.split(r"^## (\w+)\s*$", text, flags=re.M)
    return {parts[i].lower(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_alert_links_to_its_runbook_section():
    sections = runbook_sections()
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url == f"observability/runbooks.md#{rule['alert'].lower()}", rule["alert"]
        body = sections.get(rule["alert"].lower())
        assert body, f"no runbook section for {rule['alert']}"
        assert "**Meaning" in body and "First checks" in body and ("Fixes" in body or "fixes" in body), rule["alert"]


def test_lambda_redefinitions_are_stated_in_annotations_and_runbooks():
    sections = runbook_sections()
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in REDEFINED_FOR_LAMBDA:
        assert "Serverless definition" in rules[name]["annotations"]["description"], name
        assert "redefined for Lambda" in sections[name.lower()], name
    service_down = flat(rules["ServiceDown"]["expr"])
    assert "pricing_synthetic_check_timestamp_seconds" in service_down
    assert 'up{job="pushgateway"}) == 0' in service_down
    assert "pricing_container_memory_limit_bytes" in rules["HighMemoryUsage"]["expr"]


# ------------------------------------------------------------------------------- aggregation


def all_expressions() -> list[tuple[str, str]]:
    out = [(rule["alert"], flat(rule["expr"])) for rule in alert_rules()]
    for group in yaml.safe_load(RECORDING.read_text())["groups"]:
        out += [(rule["record"], flat(rule["expr"])) for rule in group["rules"]]
    return out


def test_histogram_quantiles_sum_5m_bucket_rates_by_le():
    seen = 0
    for name, expr in all_expressions():
        for call in re.finditer(r"histogram_quantile\(", expr):
            seen += 1
            assert re.match(r"\s*0\.\d+,\s*sum by \(le(, \w+)*\) \(rate\(\w+_bucket\[5m\]\)\)\s*\)",
                            expr[call.end():]), f"{name}: {expr}"
    assert seen == 5  # CriticalScoreLatency, SlowScoreLatency, HighAPILatency, SlowModelPrediction, LongRetrainingDuration


def test_counters_are_rated_per_container_before_summing():
    # sum(rate(x)) is right across containers; rate(sum(x)) would see every retired container
    # as a counter reset.
    for name, expr in all_expressions():
        assert not re.search(r"\b(rate|increase)\(\s*sum\b", expr), name


def test_gauges_only_from_live_push_groups():
    for rule in alert_rules():
        expr = flat(rule["expr"])
        for gauge in GAUGES:
            if re.search(rf"\b{gauge}\b", expr):
                assert LIVE_FILTER in expr, f"{rule['alert']} reads {gauge} from dead groups too"


def test_every_aggregation_keeps_the_environment():
    for name, expr in all_expressions():
        for clause in re.findall(r"\b(?:sum|max|min|count) by \(([^)]*)\)", expr):
            assert "environment" in clause, f"{name}: by ({clause})"


def test_slo_burn_rate_alerts_pair_long_and_short_windows():
    expected = {("1h", "5m", "14.4", "critical"), ("6h", "30m", "6", "critical"),
                ("1d", "2h", "3", "warning"), ("3d", "6h", "1", "warning")}
    for name, slo, budget in (("ScoreAvailabilityErrorBudgetBurn", "availability", "0.001"),
                              ("ScoreLatencyErrorBudgetBurn", "latency", "0.01")):
        found = set()
        for rule in (r for r in alert_rules() if r["alert"] == name):
            labels = rule["labels"]
            long_w, short_w = labels["long_window"], labels["short_window"]
            factor = re.search(r"> \(([\d.]+) \* " + re.escape(budget) + r"\)", rule["expr"]).group(1)
            for window in (long_w, short_w):
                assert f"environment:pricing_score_{slo}_errors:ratio_rate{window} > ({factor} * {budget})" in flat(rule["expr"])
            assert labels["family"] == f"score_{slo}_slo"
            found.add((long_w, short_w, factor, labels["severity"]))
        assert found == expected, name
