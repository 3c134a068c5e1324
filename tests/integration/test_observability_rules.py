"""The alert and recording rules (observability/prometheus_*.yml) against promtool and the spec.

- ``promtool check rules`` is clean and ``promtool test rules observability/tests/*.yml`` passes;
- every alert of spec/OBSERVABILITY.md exists with its severity, threshold and duration;
- every alert has a promtool case that fires and one, just under its threshold or its
  duration, that does not;
- every alert has summary, description and a runbook_url that resolves to a section of
  observability/runbooks.md saying what it means, what to check and how to fix it;
- the expressions aggregate as Lambda's per-container push groups need;
- every alert on a ratio, a quantile or a burn rate needs a minimum number of events in its
  window (prometheus_alerts.yml, "Minimum traffic"), and observability/runbooks.md lists them;
- every histogram ``le`` literal (rules, rule tests, dashboard) is a bucket edge of the service's
  histograms, written as Prometheus stores it from a protobuf scrape (``le="1.0"``, not ``"1"``).

promtool is the pinned stack's (``make setup``, ``local.prometheus_stack``); without it these
tests skip, or fail when CI=true.
"""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import yaml

from support.promstack import require_binary

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "observability"
ALERTS = OBSERVABILITY / "prometheus_alerts.yml"
RECORDING = OBSERVABILITY / "prometheus_recording_rules.yml"
RULE_TESTS = sorted((OBSERVABILITY / "tests").glob("*.yml"))
RUNBOOKS = OBSERVABILITY / "runbooks.md"
README = OBSERVABILITY / "README.md"
DASHBOARD = OBSERVABILITY / "grafana_dashboard.json"
METRICS = ROOT / "layers" / "shared" / "pricing" / "observability" / "metrics.py"

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
GAUGES = ("pricing_models_loaded", "pricing_competitor_staleness_seconds", "pricing_container_memory_bytes", "pricing_active_requests")
LIVE_FILTER = "and on (job, instance) environment_job_instance:push_time_seconds:live"

# Minimum events in the window before an alert on a ratio or a quantile may fire:
# max(100, ceil(2 / t)), t the bad share at the threshold; LongRetrainingDuration is the one
# exception (retrains are few). Burn rates: per long window, below.
MINIMUM_EVENTS = {
    "CriticalScoreLatency": 100,
    "SlowScoreLatency": 100,
    "HighAPILatency": 100,
    "SlowModelPrediction": 100,
    "LongRetrainingDuration": 20,
    "LowModelCacheHitRate": 100,
    "HighInvalidOutcomesRate": 100,
    "ABTestImbalance": 100,
    "LowABTestConversionRate": 100,
    "MetricsPushFailures": 200,
}
SLO_BUDGETS = {"availability": "0.001", "latency": "0.01"}
SLO_EVENTS = {
    "availability": "environment:pricing_score_requests:increase",
    "latency": "environment:pricing_score_latency_seconds_count:increase",
}
# Built from the recorded 2-minute sums over the window (prometheus_recording_rules.yml).
SLO_EVENT_EXPRS = {
    "availability": "round(sum_over_time(environment:pricing_score_requests:rate2m[{w1}])"
    " * scalar(pricing_slo:evaluation_interval:seconds))",
    "latency": "round(sum_over_time(environment:pricing_score_latency_seconds_count:rate2m[{w1}])"
    " * scalar(pricing_slo:evaluation_interval:seconds))",
}
RECORDED_WINDOW = {"1h": "1h", "6h": "6h", "1d": "1d", "3d": "3d"}
# Which bucket tuple of metrics.py each histogram uses.
HISTOGRAM_BUCKETS = {
    "pricing_api_latency_seconds": "API_LATENCY_BUCKETS",
    "pricing_score_latency_seconds": "API_LATENCY_BUCKETS",
    "pricing_model_prediction_seconds": "MODEL_PREDICTION_BUCKETS",
    "pricing_retraining_duration_seconds": "RETRAINING_BUCKETS",
}


def promtool() -> str:
    return require_binary("promtool")


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def flat(expr: str) -> str:
    return re.sub(r"\s+", " ", expr).strip()


# ------------------------------------------------------------------------------------ promtool


def test_promtool_check_rules_is_clean():
    done = subprocess.run([promtool(), "check", "rules", str(RECORDING), str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == 2


def test_promtool_rule_tests_pass():
    assert len(RULE_TESTS) >= 5
    done = subprocess.run(
        [promtool(), "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True, timeout=120, cwd=OBSERVABILITY
    )
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
        assert {"summary", "description", "runbook_url", "dashboard_url"} <= set(annotations), rule["alert"]
        assert len(annotations["description"]) > 60, rule["alert"]


def runbook_sections() -> dict[str, str]:
    text = RUNBOOKS.read_text()
    parts = re.split(r"^## (\w+)\s*$", text, flags=re.M)
    return {parts[i].lower(): parts[i + 1] for i in range(1, len(parts), 2)}


#: The links' defaults when Prometheus has no ``runbook_base_url``/``dashboard_url`` external label.
RUNBOOK_BASE_URL = "https://github.com/example-org/pricing-service/blob/main/observability/runbooks.md"
DASHBOARD_URL = "http://localhost:3000/d/pricing-service"


def test_every_alert_links_to_its_runbook_section_and_the_dashboard_with_absolute_urls():
    sections = runbook_sections()
    dashboard_uid = json.loads(DASHBOARD.read_text())["uid"]
    assert DASHBOARD_URL.endswith(f"/d/{dashboard_uid}")
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url == ('{{ or $externalLabels.runbook_base_url "' + RUNBOOK_BASE_URL + '" }}#' + rule["alert"].lower()), rule["alert"]
        assert rule["annotations"]["dashboard_url"] == (
            '{{ or $externalLabels.dashboard_url "' + DASHBOARD_URL + '" }}{{ with $labels.environment }}?var-environment={{ . }}{{ end }}'
        ), rule["alert"]
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
            # Raw bucket rates, or the dashboard's recorded 5-minute sums of them (by le and more).
            rest = expr[call.end() :]
            assert re.match(r"\s*0\.\d+,\s*sum by \(le(, \w+)*\) \(rate\(\w+_bucket\[5m\]\)\)\s*\)", rest) or re.match(
                r"\s*0\.\d+,\s*sum by \(le(, \w+)*\) \(environment\w*_le:\w+_bucket:rate5m\)\s*\)", rest
            ), f"{name}: {expr}"
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
    expected = {
        ("1h", "5m", "14.4", "critical"),
        ("6h", "30m", "6", "critical"),
        ("1d", "2h", "3", "warning"),
        ("3d", "6h", "1", "warning"),
    }
    for name, slo, budget in (
        ("ScoreAvailabilityErrorBudgetBurn", "availability", "0.001"),
        ("ScoreLatencyErrorBudgetBurn", "latency", "0.01"),
    ):
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


# ------------------------------------------------------------------------- minimum traffic


def burn_minimum(factor: str, budget: str) -> int:
    """max(100, ceil(2 / (factor x budget))): two bad events alone never cross the burn rate."""
    return max(100, math.ceil(Fraction(2) / (Fraction(factor) * Fraction(budget))))


def minimum_clause(expr: str) -> tuple[str, str, int] | None:
    """The trailing `and on (labels) <events> >= N` of an expression: (labels, events, N)."""
    found = re.search(r"\band on \(([^)]*)\) ((?:(?!\band on\b).)+) >= (\d+)$", flat(expr))
    return (found.group(1), found.group(2), int(found.group(3))) if found else None


def is_event_ratio_or_quantile(rule: dict) -> bool:
    expr = flat(rule["expr"])
    rated = re.search(r"\b(rate|increase)\(|:rate5m\b", expr) is not None
    return "histogram_quantile(" in expr or ":ratio_rate" in expr or (" / " in expr and rated)


def test_every_ratio_quantile_and_burn_rate_alert_needs_a_minimum_of_events():
    gated = set()
    for rule in alert_rules():
        name, expr = rule["alert"], flat(rule["expr"])
        if not is_event_ratio_or_quantile(rule):
            assert minimum_clause(rule["expr"]) is None or name in MINIMUM_EVENTS, name
            continue
        gated.add(name)
        clause = minimum_clause(rule["expr"])
        assert clause, f"{name} can fire on a handful of events: {expr}"
        labels, events, minimum = clause
        if name.endswith("ErrorBudgetBurn"):
            continue  # per window: test_burn_rate_minimums_per_long_window
        assert minimum == MINIMUM_EVENTS[name], name
        # Counted over the alert's own labels and window, from counters (or a histogram's _count).
        by = re.search(r"by \(([^)]*)\)", expr).group(1).replace("le, ", "")
        assert set(labels.split(", ")) == set(by.split(", ")), f"{name}: on ({labels}) vs by ({by})"
        # Counted from a raw counter's increase over the alert's one window, or from the
        # dashboard group's 5-minute record of it times 300 s (the per-container series are read
        # once a cycle, by the dashboard group: bench/RESULTS.md "Metrics path at scale").
        windows = set(re.findall(r"\[(\w+)\]", expr))
        recorded = re.findall(r"\b(\w+:\w+:rate5m)\b", events)
        if recorded:
            scaled = re.findall(r":rate5m(?:\{[^}]*\})?\) \* 300\b|:rate5m\[25m\]\)\) \* 1800\b", events)
            assert len(scaled) == len(recorded), f"{name}: a recorded rate not turned into events: {events}"
            assert set(recorded) <= set(re.findall(r"\b(\w+:\w+:rate5m)\b", expr.split(" and on (")[0])), f"{name}: {events}"
        else:
            assert len(windows) == 1 and "increase(" in events, f"{name}: {events}"
        quantile = re.search(r"\((\w+_le:\w+)_bucket:rate5m\)", expr)
        if quantile:
            # a histogram's count is its +Inf bucket
            assert f'{quantile.group(1)}_bucket:rate5m{{le="+Inf"}}' in events, name
    # Exactly the alerts the policy names (and every burn-rate alert) are gated.
    assert gated == set(MINIMUM_EVENTS) | {"ScoreAvailabilityErrorBudgetBurn", "ScoreLatencyErrorBudgetBurn"}


def test_burn_rate_minimums_per_long_window():
    records = {}
    for group in yaml.safe_load(RECORDING.read_text())["groups"]:
        records.update({rule["record"]: flat(rule["expr"]) for rule in group["rules"]})
    seen = 0
    for rule in alert_rules():
        if not rule["alert"].endswith("ErrorBudgetBurn"):
            continue
        slo = "availability" if "Availability" in rule["alert"] else "latency"
        long_w = rule["labels"]["long_window"]
        factor = re.search(r"> \(([\d.]+) \* ", rule["expr"]).group(1)
        minimum = burn_minimum(factor, SLO_BUDGETS[slo])
        labels, events, n = minimum_clause(rule["expr"])
        assert (labels, events, n) == ("environment", f"{SLO_EVENTS[slo]}{long_w}", minimum), rule["alert"]
        assert records[events] == SLO_EVENT_EXPRS[slo].replace("{w1}", RECORDED_WINDOW[long_w])
        assert f"at least {minimum} " in rule["annotations"]["description"], rule["alert"]
        seen += 1
    assert seen == 8
    assert [burn_minimum(f, "0.001") for f in ("14.4", "6", "3", "1")] == [139, 334, 667, 2000]
    assert [burn_minimum(f, "0.01") for f in ("14.4", "6", "3", "1")] == [100, 100, 100, 200]


def test_minimums_are_documented_in_the_runbooks_and_the_readme():
    runbooks, readme = RUNBOOKS.read_text(), README.read_text()
    for name, minimum in MINIMUM_EVENTS.items():
        row = re.search(rf"^\| \[?{name}\]?[^|]*\|([^\n]*)$", runbooks, flags=re.M)
        assert row and re.search(rf"\b{minimum}\b", row.group(1)), f"runbooks.md: no minimum row for {name}"
    for budget in SLO_BUDGETS.values():
        for factor in ("14.4", "6", "3", "1"):
            assert str(burn_minimum(factor, budget)) in runbooks
    assert "Minimum traffic" in readme and "max(100, ceil(2 / t))" in readme


def test_low_traffic_rule_tests_cover_every_gated_alert():
    low_traffic = yaml.safe_load((OBSERVABILITY / "tests" / "low_traffic_alerts.yml").read_text())
    firing, quiet = set(), set()
    for test in low_traffic["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    changed = set(MINIMUM_EVENTS) - {"ABTestImbalance", "LowABTestConversionRate"}  # gated before
    slo = {"ScoreAvailabilityErrorBudgetBurn", "ScoreLatencyErrorBudgetBurn"}
    assert changed | slo <= firing  # each with a real-traffic twin that fires
    assert changed | slo <= quiet | firing


# ----------------------------------------------------------------------- histogram le labels


def go_float(value: float) -> str:
    """Go's fmt.Sprint of a float64: the shortest digits, %e below 1e-4 and from 1e6."""
    digits = Decimal(repr(value))
    exponent = digits.adjusted()
    if -4 <= exponent < 6:
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    mantissa = str(digits.scaleb(-exponent).normalize())
    return f"{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


def protobuf_le(value: float) -> str:
    """The `le` Prometheus 2.x stores for a bucket scraped in protobuf: formatOpenMetricsFloat
    (model/textparse/protobufparse.go), fmt.Sprint plus ".0" when it has neither "." nor "e".
    The text format keeps the exposition's own string (the Pushgateway writes "1", "1800")."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = go_float(value)
    return text if ("." in text or "e" in text) else text + ".0"


def test_protobuf_le_formatting():
    assert [protobuf_le(v) for v in (1.0, 2.0, 10.0, 1800.0, 0.2, 2.5, 0.0005, math.inf)] == [
        "1.0",
        "2.0",
        "10.0",
        "1800.0",
        "0.2",
        "2.5",
        "0.0005",
        "+Inf",
    ]
    assert [protobuf_le(v) for v in (1e6, 5e-05, 1.5e7)] == ["1e+06", "5e-05", "1.5e+07"]


def bucket_edges() -> dict[str, tuple[float, ...]]:
    """The *_BUCKETS tuples of metrics.py, read without importing it."""
    found = {}
    for node in ast.parse(METRICS.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.endswith("_BUCKETS")
        ):
            found[node.targets[0].id] = tuple(float(v) for v in ast.literal_eval(node.value))
    return {metric: found[const] for metric, const in HISTOGRAM_BUCKETS.items()}


def le_literals() -> list[tuple[str, str, str]]:
    """(where, metric, le) for every le literal of the rules, the rule tests and the dashboard."""
    texts = [
        (
            path.name,
            "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")),
        )  # comments may quote text-format forms
        for path in (RECORDING, ALERTS, *RULE_TESTS)
    ]
    texts += [
        (f"{DASHBOARD.name}: {target.get('refId', '?')}", target["expr"])
        for panel in json.loads(DASHBOARD.read_text()).get("panels", [])
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    out = []
    for where, text in texts:
        # a bucket series or a recorded bucket rate (environment_le:<metric>_bucket:rate5m)
        attributed = re.findall(r"(?:\w*:)?(\w+)_bucket(?::\w+)?\{[^}]*\ble\s*=~?\s*\"([^\"]*)\"", text)
        assert len(attributed) == len(re.findall(r"\ble\s*=~?\s*\"", text)), f"{where}: an le literal without its _bucket metric"
        out += [(where, metric, le) for metric, le in attributed]
    return out


def test_every_le_literal_is_a_bucket_edge_in_protobuf_scrape_form():
    edges = bucket_edges()
    literals = le_literals()
    assert len(literals) > 50  # the rule tests' histograms, the rules' le="0.2"
    for where, metric, le in literals:
        value = float(le)
        assert le == protobuf_le(value), f'{where}: {metric} le="{le}" is scraped as le="{protobuf_le(value)}"'
        assert metric in edges, f"{where}: {metric} is not a histogram of metrics.py"
        assert math.isinf(value) or value in edges[metric], f'{where}: {metric} has no bucket le="{le}"'


def test_per_container_series_are_read_once_a_cycle_by_the_dashboard_group():
    # Rule evaluation at fleet scale is the number of per-container series read a cycle
    # (bench/RESULTS.md "Metrics path at scale"): a family the dashboard group rates over 5
    # minutes is read by no other rule over a window; the SLO group's own reads are 2-minute.
    groups = {group["name"]: group["rules"] for group in yaml.safe_load(RECORDING.read_text())["groups"]}
    rated = {
        family
        for rule in groups["pricing-dashboard"]
        for family in re.findall(r"\brate\((pricing_\w+?)(?:_total|_bucket|_sum|_count)?[\[{]", flat(rule["expr"]))
    }
    assert {"pricing_requests", "pricing_score_latency_seconds", "pricing_ab_assignments", "pricing_model_cache_hits"} <= rated
    others = [(rule["alert"], flat(rule["expr"])) for rule in alert_rules()]
    others += [(rule["record"], flat(rule["expr"])) for name, rules in groups.items() if name != "pricing-dashboard" for rule in rules]
    read = re.compile(r"\b(?:rate|increase)\((pricing_\w+?)(?:_total|_bucket|_sum|_count)?(?:\{[^}]*\})?\[(\w+)\]")
    for name, expr in others:
        for family, window in read.findall(expr):
            if name.startswith("environment:pricing_score_") and name.endswith(":rate2m"):
                assert window == "2m", name
            else:
                assert family not in rated, f"{name} reads every container's {family} again over {window}"
