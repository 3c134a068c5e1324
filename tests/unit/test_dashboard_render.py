"""observability/render_dashboard.py (``make dashboard-snapshot``) against a stand-in Prometheus.

The stand-in is a real HTTP server on 127.0.0.1 speaking Prometheus' query API, so the script's
HTTP, variable filling, error handling and drawing run for real; what it answers is decided per
test. The same script is run against a real Prometheus in
tests/integration/test_observability_stack.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

from support.stub_http import Reply, Request, StubServer

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("render_dashboard", ROOT / "observability" / "render_dashboard.py")
render_dashboard = importlib.util.module_from_spec(_spec)
sys.modules["render_dashboard"] = render_dashboard
_spec.loader.exec_module(render_dashboard)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


#: Prometheus's /api/v1/alerts answer: one alert firing, one pending.
ALERTS = {
    "status": "success",
    "data": {
        "alerts": [
            {"state": "firing", "labels": {"alertname": "HighInvalidOutcomesRate"}},
            {"state": "pending", "labels": {"alertname": "SlowScoreLatency"}},
        ]
    },
}


class FakePrometheus(StubServer):
    """Answers /api/v1/query_range from ``answer(query) -> (status, body)``; ``queries`` are the
    parameters of each range query it was sent."""

    def __init__(self, answer):
        super().__init__(self._route)
        self._answer_query = answer

    def _route(self, request: Request) -> Reply:
        if request.path == "/api/v1/query_range":
            return Reply(*self._answer_query(request.query["query"]))
        if request.path == "/api/v1/alerts":
            return Reply(200, ALERTS)
        return Reply(404, {"status": "error", "error": "not found"})

    @property
    def queries(self) -> list[dict]:
        return [r.query for r in self.requests_to("/api/v1/query_range")]


def matrix(*series):
    now = time.time()
    return 200, {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": labels, "values": [[now - 60 * (5 - i), str(value * (1 + i / 10))] for i in range(6)]}
                for labels, value in series
            ],
        },
    }


def some_data(query):
    return matrix(
        ({"endpoint": "/score", "status_code": "200", "property_id": "p1"}, 0.05),
        ({"endpoint": "/learn", "status_code": "422", "property_id": "p2"}, 0.5),
    )


def test_snapshot_queries_every_panel_with_variables_filled_and_writes_a_png(tmp_path, capsys):
    output = tmp_path / "snapshot.png"
    with FakePrometheus(some_data) as prom:
        code = render_dashboard.main([prom.url, "--minutes", "5", "--output", str(output), "--require-data"])
    assert code == 0
    assert output.read_bytes()[:8] == PNG_MAGIC
    assert output.stat().st_size > 50_000  # 18 drawn panels, not an empty canvas

    dashboard = json.loads((ROOT / "observability" / "grafana_dashboard.json").read_text())
    expected = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(prom.queries) == len(expected)
    for sent, template in zip(prom.queries, expected):
        assert "$" not in sent["query"], sent["query"]
        assert sent["query"] == template.replace("$environment", ".*").replace("$property_id", ".*")
        assert float(sent["end"]) - float(sent["start"]) == pytest.approx(300, abs=1)
    out = capsys.readouterr().out
    assert "18/18 panels with data" in out
    assert " 2. /score Latency (p50, p95, p99): 6 series" in out  # 3 quantiles x 2 fake series


def test_variables_can_be_narrowed_to_one_environment_and_property():
    dashboard = render_dashboard.load_dashboard()
    variables = render_dashboard.default_variables(dashboard, environment="production", property_id="p1")
    with FakePrometheus(some_data) as prom:
        panels = render_dashboard.collect(prom.url, dashboard, time.time() - 60, time.time(), 1, variables)
    assert all(p.has_data for p in panels)
    assert all('environment=~"production"' in q["query"] for q in prom.queries)
    assert any('property_id=~"p1"' in q["query"] for q in prom.queries)


def test_panels_without_data_or_with_a_rejected_query_are_reported_not_fatal(tmp_path):
    def answer(query):
        if "histogram_quantile" in query:
            return 400, {"status": "error", "errorType": "bad_data", "error": "parse error: unexpected"}
        if "pricing_ab_" in query:
            return matrix()
        return some_data(query)

    dashboard = render_dashboard.load_dashboard()
    variables = render_dashboard.default_variables(dashboard)
    with FakePrometheus(answer) as prom:
        panels = render_dashboard.collect(prom.url, dashboard, time.time() - 300, time.time(), 15, variables)
        code = render_dashboard.main([prom.url, "--output", str(tmp_path / "x.png"), "--require-data"])
    by_title = {p.title: p for p in panels}
    assert by_title["/score Latency (p50, p95, p99)"].errors == ["parse error: unexpected"] * 3
    assert not by_title["A/B Test Assignments"].has_data and not by_title["A/B Test Assignments"].errors
    assert by_title["API Request Rate"].has_data
    assert code == 1  # --require-data: some panels are empty
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG_MAGIC  # drawn anyway


def test_prometheus_unreachable_exits_1_without_a_picture(tmp_path, capsys):
    with FakePrometheus(some_data) as prom:
        url = prom.url  # a port that is closed once the server is gone
    code = render_dashboard.main([url, "--output", str(tmp_path / "x.png")])
    assert code == 1
    assert not (tmp_path / "x.png").exists()
    assert "Prometheus not reachable" in capsys.readouterr().err


def test_prometheus_url_from_argument_environment_running_stack_or_default(tmp_path):
    resolve = render_dashboard.resolve_prometheus_url
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"prometheus_url": "http://127.0.0.1:19090"}))
    assert resolve("http://given:1", {"PROMETHEUS_URL": "http://env:2"}, state) == "http://given:1"
    assert resolve(None, {"PROMETHEUS_URL": "http://env:2"}, state) == "http://env:2"
    assert resolve(None, {}, state) == "http://127.0.0.1:19090"
    assert resolve(None, {}, tmp_path / "missing.json") == "http://127.0.0.1:9090"


def test_legend_expand_and_duration_formatting():
    assert render_dashboard.legend("{{model_type}} {{property_id}}", {"model_type": "conversion"}) == "conversion"
    assert render_dashboard.legend("", {"b": "2", "a": "1"}) == '{a="1", b="2"}'
    assert (
        render_dashboard.expand('x{a=~"${environment}", b=~"$property_id", c="$keep"}', {"environment": "e", "property_id": "p"})
        == 'x{a=~"e", b=~"p", c="$keep"}'
    )
    assert render_dashboard.format_duration(93784) == "1d 2h 3m"
    assert render_dashboard.format_duration(42) == "42s"


def test_a_quantile_of_nothing_is_no_data_and_empty_panels_say_why(tmp_path, capsys):
    def answer(query):
        if "pricing_retraining_duration_seconds" in query:  # histogram_quantile over no retrain: NaN
            now = time.time()
            return 200, {
                "status": "success",
                "data": {
                    "resultType": "matrix",
                    "result": [{"metric": {"model_type": "conversion"}, "values": [[now - 60, "NaN"], [now, "NaN"]]}],
                },
            }
        if "pricing_ab_" in query:
            return matrix()
        return some_data(query)

    with FakePrometheus(answer) as prom:
        code = render_dashboard.main([prom.url, "--minutes", "60", "--output", str(tmp_path / "x.png")])
    out = capsys.readouterr().out
    assert code == 0
    assert "13. Retraining Duration (p95): no data (no retrain finished" in out
    assert "15. A/B Test Assignments: no data (no experiment running" in out
    assert "16. A/B Test Conversion Rate: no data" in out
    assert "15/18 panels with data" in out


def test_the_time_range_is_the_datas_and_a_long_legend_states_its_top_n():
    panel = render_dashboard.Panel(
        "p",
        "timeseries",
        "reqps",
        [],
        series=[render_dashboard.Series(f"s{i}", [100.0 + i, 200.0, 300.0], [float(i), float(i), float("nan")]) for i in range(9)],
    )
    assert render_dashboard.data_range([panel]) == (100.0, 200.0)  # the NaN at 300 is not data
    entries, left_out = render_dashboard._legend_entries(panel)
    assert [s.label for s, _ in entries] == ["s8", "s7", "s6", "s5", "s4", "s3"] and left_out == 3
    assert render_dashboard.format_value(0.0834, "s") == "83.4ms"
    assert render_dashboard.format_value(0.42, "percentunit") == "42%"
    assert render_dashboard.format_value(2.5, "suffix: errors/s") == "2.5 errors/s"
    assert render_dashboard.format_value(7200, "s") == "2 hours"


def test_panels_keep_their_grid_position_units_and_threshold_colours():
    dashboard = render_dashboard.load_dashboard()
    with FakePrometheus(some_data) as prom:
        panels = render_dashboard.collect(
            prom.url, dashboard, time.time() - 60, time.time(), 15, render_dashboard.default_variables(dashboard)
        )
    by_title = {p.title: p for p in panels}
    latency = by_title["/score Latency (p50, p95, p99)"]
    assert latency.grid == (8, 0, 8, 8) and latency.unit == "s"
    assert latency.steps == [(None, "green"), (0.08, "orange"), (0.2, "red")] and latency.thresholds == [0.08, 0.2]
    assert by_title["API Request Rate"].thresholds == []  # thresholds style off: nothing drawn
    assert by_title["Service Uptime"].kind == "stat" and by_title["Model Retraining Events"].bars
