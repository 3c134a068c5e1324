"""The Grafana dashboard as code: observability/grafana_dashboard.json is written by this module.

    make dashboard                      # regenerate observability/grafana_dashboard.json
    python observability/dashboard/build.py --check   # non-zero when the committed JSON differs

Built with Grafana's own foundation SDK (``grafana-foundation-sdk``, the types Grafana's
dashboard schema is generated from, pinned in requirements-dev.txt at the Grafana 10.4 schema
that docker-compose.yml runs). It is a build-time dependency only: no function or layer imports
it, and the functions read no dashboard.

The panels are the spec's 18 (spec/OBSERVABILITY.md, "Grafana - Visualization"), in its order,
three to a row. Each has a unit on its value axis and, where an alert watches the same series,
its threshold drawn as a dashed line at the alert's value (prometheus_alerts.yml). Heavy
queries read the recording rules of prometheus_recording_rules.yml.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    FieldColorModeId,
    GridPos,
    Threshold,
    ThresholdsMode,
    VariableHide,
    VariableRefresh,
    VariableSort,
)

OUTPUT = Path(__file__).resolve().parents[1] / "grafana_dashboard.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
ENV = 'environment=~"$environment"'
PROP = 'property_id=~"$property_id"'
LIVE = "and on (job, instance) environment_job_instance:push_time_seconds:live"
PANEL_WIDTH, PANEL_HEIGHT, PER_ROW = 8, 8, 3


@dataclass
class Query:
    expr: str
    legend: str


@dataclass
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: list[Query]
    #: (value, color) steps above the base step; drawn as dashed lines when given.
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    base_color: str = "green"
    min: float | None = None
    max: float | None = None
    bars: bool = False
    kind: str = "timeseries"


def q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


def quantile(phi: float, series: str, by: str = "le", extra: str = "") -> str:
    selector = f"{ENV}, {extra}" if extra else ENV
    return f"histogram_quantile({phi}, sum by ({by}) ({series}{{{selector}}}))"


PANELS: list[PanelSpec] = [
    PanelSpec(
        "API Request Rate",
        "Requests per second by endpoint and status code, summed over every container of every function.",
        "reqps",
        [
            q(
                f"sum by (endpoint, status_code) (environment_endpoint_status_code:pricing_requests:rate5m{{{ENV}}})",
                "{{endpoint}} {{status_code}}",
            )
        ],
    ),
    PanelSpec(
        "/score Latency (p50, p95, p99)",
        "POST /score latency quantiles over every score container (5-minute rate of the histogram). "
        "Dashed: CriticalScoreLatency's 80 ms (p95) and SlowScoreLatency's 200 ms (p99).",
        "s",
        [
            q(quantile(p, "environment_le:pricing_score_latency_seconds_bucket:rate5m"), name)
            for p, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
        ],
        thresholds=[(0.08, "orange"), (0.2, "red")],
    ),
    PanelSpec(
        "Error Rate",
        "Errors per second by endpoint and error type (pricing_errors_total). Dashed: IncreasedErrorRate "
        "(0.05/s) and HighErrorRate (0.1/s), over all endpoints.",
        "suffix: errors/s",
        [
            q(
                f"sum by (endpoint, error_type) (environment_endpoint_error_type:pricing_errors:rate5m{{{ENV}}})",
                "{{endpoint}} {{error_type}}",
            )
        ],
        thresholds=[(0.05, "orange"), (0.1, "red")],
    ),
    PanelSpec(
        "Active Requests",
        "Lambda: requests in flight, as the time-average of concurrent requests (latency sum rate, "
        "Little's law), and the active-request gauge at each container's last push. Dashed: "
        "HighActiveRequests (100).",
        "suffix: requests",
        [
            q(f"sum by (endpoint) (environment_endpoint:pricing_api_requests_in_flight:rate5m{{{ENV}}})", "{{endpoint}} in flight"),
            q(f"sum by (endpoint) (environment_endpoint:pricing_active_requests:live{{{ENV}}})", "{{endpoint}} active at last push"),
        ],
        thresholds=[(100, "red")],
    ),
    PanelSpec(
        "Service Uptime",
        "Lambda: age of the oldest live container (pricing_uptime_seconds, containers that pushed in the "
        "last 10 minutes), i.e. how long the function has run without a redeploy or a full recycle.",
        "dtdurations",
        [q(f"max(pricing_uptime_seconds{{{ENV}}} {LIVE})", "oldest live container")],
        kind="stat",
    ),
    PanelSpec(
        "API Latency by Route (p95)",
        "p95 latency of every route (pricing_api_latency_seconds). Dashed: HighAPILatency (1 s).",
        "s",
        [q(quantile(0.95, "environment_endpoint_le:pricing_api_latency_seconds_bucket:rate5m", "le, endpoint"), "{{endpoint}}")],
        thresholds=[(1, "red")],
    ),
    PanelSpec(
        "Model Prediction Latency (p95)",
        "p95 of one model prediction (the candidate grid scored), by model type and property. Dashed: SlowModelPrediction (100 ms).",
        "s",
        [
            q(
                quantile(
                    0.95,
                    "environment_model_type_property_id_le:pricing_model_prediction_seconds_bucket:rate5m",
                    "le, model_type, property_id",
                    PROP,
                ),
                "{{model_type}} {{property_id}}",
            )
        ],
        thresholds=[(0.1, "red")],
    ),
    PanelSpec(
        "Model Cache Hit Rate",
        "Share of /score lookups of a property's model answered by the container's cache. Dashed: LowModelCacheHitRate (below 70%).",
        "percentunit",
        [
            q(
                f"sum(environment:pricing_model_cache_hits:rate5m{{{ENV}}}) / "
                f"(sum(environment:pricing_model_cache_hits:rate5m{{{ENV}}}) + "
                f"sum(environment:pricing_model_cache_misses:rate5m{{{ENV}}}))",
                "hit rate",
            )
        ],
        thresholds=[(0.7, "green")],
        base_color="red",
        min=0,
        max=1,
    ),
    PanelSpec(
        "Models Loaded",
        "Models in the score containers' caches (live containers only): summed over containers, and the "
        "most any one container holds. Dashed: NoModelsLoaded (none at all).",
        "suffix: models",
        [
            q(f'sum(pricing_models_loaded{{job="pricing-score", {ENV}}} {LIVE})', "all live containers"),
            q(f'max(pricing_models_loaded{{job="pricing-score", {ENV}}} {LIVE})', "most in one container"),
        ],
        thresholds=[(1, "green")],
        base_color="red",
        min=0,
    ),
    PanelSpec(
        "Outcomes Ingested (rate)",
        "Booking outcomes stored per second through /learn, by property.",
        "suffix: outcomes/s",
        [q(f"sum by (property_id) (environment_property_id:pricing_outcomes_ingested:rate5m{{{ENV}, {PROP}}})", "{{property_id}}")],
        min=0,
    ),
    PanelSpec(
        "Invalid Outcomes",
        "Outcomes refused per second, by property and reason (HighInvalidOutcomesRate fires above 10% of what /learn receives).",
        "suffix: outcomes/s",
        [
            q(
                f"sum by (property_id, reason) (environment_property_id_reason:pricing_outcomes_invalid:rate5m{{{ENV}, {PROP}}})",
                "{{property_id}} {{reason}}",
            )
        ],
        min=0,
    ),
    PanelSpec(
        "Model Retraining Events",
        "Retrains in the last hour by result (deployed, rejected, skipped, failed); RetrainingFailures fires on any failure.",
        "suffix: retrains/h",
        [q(f"sum by (status) (increase(pricing_retraining_total{{{ENV}, {PROP}}}[1h]))", "{{status}}")],
        bars=True,
        min=0,
    ),
    PanelSpec(
        "Retraining Duration (p95)",
        "p95 duration of one property's retrain, by model type. Dashed: LongRetrainingDuration (30 min).",
        "s",
        [
            q(
                "histogram_quantile(0.95, sum by (le, model_type) "
                f"(rate(pricing_retraining_duration_seconds_bucket{{{ENV}, {PROP}}}[5m])))",
                "{{model_type}}",
            )
        ],
        thresholds=[(1800, "red")],
    ),
    PanelSpec(
        "Drift Detection Events",
        "Drift detections in the last hour, by property and whether they triggered a retrain.",
        "suffix: detections/h",
        [
            q(
                f"sum by (property_id, trigger_retrain) (increase(pricing_drift_detected_total{{{ENV}, {PROP}}}[1h]))",
                "{{property_id}} retrain={{trigger_retrain}}",
            )
        ],
        bars=True,
        min=0,
    ),
    PanelSpec(
        "A/B Test Assignments",
        "Quotes assigned per second to each experiment's variants (ABTestImbalance watches their ratio).",
        "suffix: quotes/s",
        [
            q(
                f"sum by (experiment_id, variant) (environment_experiment_id_variant:pricing_ab_assignments:rate5m{{{ENV}}})",
                "{{experiment_id}} {{variant}}",
            )
        ],
        min=0,
    ),
    PanelSpec(
        "A/B Test Conversion Rate",
        "Share of each variant's outcomes that booked, over the last hour. Dashed: LowABTestConversionRate (5%).",
        "percentunit",
        [
            q(
                f'(sum by (experiment_id, variant) (rate(pricing_ab_outcomes_total{{{ENV}, accepted=~"(?i)true"}}[1h])) '
                f"or 0 * sum by (experiment_id, variant) (rate(pricing_ab_outcomes_total{{{ENV}}}[1h]))) "
                f"/ sum by (experiment_id, variant) (rate(pricing_ab_outcomes_total{{{ENV}}}[1h]))",
                "{{experiment_id}} {{variant}}",
            )
        ],
        thresholds=[(0.05, "green")],
        base_color="red",
        min=0,
    ),
    PanelSpec(
        "Competitor Data Fetch Success Rate",
        "Share of competitor-backend calls that answered (success), over every property "
        "(CompetitorDataFetchFailures fires above 0.1 failed calls/s).",
        "percentunit",
        [
            q(
                f'(sum(environment_property_id_status:pricing_competitor_fetches:rate5m{{{ENV}, {PROP}, status="success"}}) '
                f"or 0 * sum(environment_property_id_status:pricing_competitor_fetches:rate5m{{{ENV}, {PROP}}})) "
                f"/ sum(environment_property_id_status:pricing_competitor_fetches:rate5m{{{ENV}, {PROP}}})",
                "success rate",
            )
        ],
        min=0,
        max=1,
    ),
    PanelSpec(
        "Competitor Data Staleness",
        "Age of the competitor prices last fetched for each property (live containers). Dashed: StaleCompetitorData (24 h).",
        "s",
        [q(f"max by (property_id) (pricing_competitor_staleness_seconds{{{ENV}, {PROP}}} {LIVE})", "{{property_id}}")],
        thresholds=[(86400, "red")],
        min=0,
    ),
]


def _thresholds(spec: PanelSpec) -> db.ThresholdsConfig:
    steps = [Threshold(value=None, color=spec.base_color)] + [Threshold(value=v, color=c) for v, c in spec.thresholds]
    return db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _targets(spec: PanelSpec):
    for i, query in enumerate(spec.queries):
        yield (prometheus.Dataquery().datasource(DATASOURCE).expr(query.expr).legend_format(query.legend).ref_id(chr(ord("A") + i)).range())


def panel(spec: PanelSpec, index: int):
    grid = GridPos(h=PANEL_HEIGHT, w=PANEL_WIDTH, x=(index % PER_ROW) * PANEL_WIDTH, y=(index // PER_ROW) * PANEL_HEIGHT)
    if spec.kind == "stat":
        builder = (
            stat.Panel()
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
            .color_mode(common.BigValueColorMode.VALUE)
            .graph_mode(common.BigValueGraphMode.AREA)
            .text_mode(common.BigValueTextMode.AUTO)
            .justify_mode(common.BigValueJustifyMode.AUTO)
            .orientation(common.VizOrientation.AUTO)
            .color_scheme(db.FieldColor().mode(FieldColorModeId.THRESHOLDS))
        )
    else:
        builder = (
            timeseries.Panel()
            .draw_style(common.GraphDrawStyle.BARS if spec.bars else common.GraphDrawStyle.LINE)
            .line_width(1)
            .fill_opacity(60 if spec.bars else 10)
            .show_points(common.VisibilityMode.NEVER)
            .span_nulls(False)
            .stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL if spec.bars else common.StackingMode.NONE).group("A"))
            .thresholds_style(
                cb.GraphThresholdsStyleConfig().mode(
                    common.GraphThresholdsStyleMode.DASHED if spec.thresholds else common.GraphThresholdsStyleMode.OFF
                )
            )
            .color_scheme(db.FieldColor().mode(FieldColorModeId.PALETTE_CLASSIC))
            .legend(
                cb.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST).placement(common.LegendPlacement.BOTTOM).show_legend(True)
            )
            .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
        )
    builder = (
        builder.id(index + 1)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .grid_pos(grid)
        .unit(spec.unit)
        .thresholds(_thresholds(spec))
    )
    if spec.min is not None:
        builder = builder.min(spec.min)
    if spec.max is not None:
        builder = builder.max(spec.max)
    for target in _targets(spec):
        builder = builder.with_target(target)
    return builder


def _query_variable(name: str, label: str, definition: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .hide(VariableHide.DONT_HIDE)
        .regex("")
        .current({"selected": True, "text": ["All"], "value": ["$__all"]})
    )


PROPERTY_SERIES = "pricing_(model_prediction_seconds_count|outcomes_ingested_total|competitor_fetches_total|retraining_total)"
NEW_VERSION_SEEN = (
    'count by (version) (pricing_service_info{environment=~"$environment"}) unless '
    'count by (version) (pricing_service_info{environment=~"$environment"} offset 10m)'
)


def build() -> dict:
    """The dashboard as Grafana's JSON model, with the import inputs Grafana's export adds."""
    dashboard = (
        db.Dashboard("Pricing Service")
        .uid("pricing-service")
        .description(
            "Pricing service (AWS Lambda, metrics through a Pushgateway): API, model, learning loop, "
            "A/B tests, competitor data. Panels follow spec/OBSERVABILITY.md; heavy queries read the "
            "recording rules of observability/prometheus_recording_rules.yml. Generated by "
            "observability/dashboard/build.py (make dashboard): edit that, not this JSON."
        )
        .tags(["pricing", "lambda"])
        .editable()
        .tooltip(1)
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("utc")
        .fiscal_year_start_month(0)
        .week_start("")
        .version(1)
        .timepicker(db.TimePicker())
        .with_variable(
            db.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .regex("")
            .current({"selected": False, "text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"})
            .hide(VariableHide.DONT_HIDE)
        )
        .with_variable(_query_variable("environment", "Environment", 'label_values(up{job="pushgateway"}, environment)'))
        .with_variable(_query_variable("property_id", "Property", f'label_values({{__name__=~"{PROPERTY_SERIES}", {ENV}}}, property_id)'))
        .annotation(
            db.AnnotationQuery()
            .name("Annotations & Alerts")
            .built_in(1)
            .enable(True)
            .hide(True)
            .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
        )
        .annotation(
            db.AnnotationQuery()
            .name("Deployments (CI)")
            .enable(True)
            .icon_color("#8F3BB8")
            .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .target(db.AnnotationTarget().type("tags").tags(["pricing", "deployment"]).match_any(False).limit(100))
        )
        .annotation(
            db.AnnotationQuery()
            .name("Deployments (new version seen)")
            .enable(True)
            .icon_color("#FF9830")
            .datasource(DATASOURCE)
            .expr(NEW_VERSION_SEEN)
        )
    )
    for i, spec in enumerate(PANELS):
        dashboard = dashboard.with_panel(panel(spec, i))
    model = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    # Prometheus annotation fields outside the schema's common AnnotationQuery: how Grafana's
    # Prometheus data source titles an annotation from the query's labels.
    for annotation in model["annotations"]["list"]:
        if annotation["name"] == "Deployments (new version seen)":
            annotation.update(
                step="1m",
                titleFormat="Deployed {{version}}",
                textFormat="First container of release {{version}} pushed its metrics",
                tagKeys="version",
                useValueForTime=False,
            )
    # The query variables' definition is what Grafana's editor shows and re-parses.
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            variable["definition"] = variable["query"]["query"]
        if variable["type"] == "datasource":
            variable["query"] = "prometheus"
    model["id"] = None
    # Grafana export's envelope (not part of the dashboard schema): import asks for the data source.
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes the pricing service's Pushgateway",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
        ],
        **model,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 when --output differs from the generated JSON")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = args.output.is_file() and args.output.read_text() == text
        print(f"{args.output}: {'up to date' if same else 'differs from observability/dashboard/build.py (make dashboard)'}")
        return 0 if same else 1
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(PANELS)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
