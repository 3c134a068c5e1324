"""Render the pricing dashboard's panels from a running Prometheus into one PNG.

Grafana is not packaged for Debian, so where it is missing this is how a person looks at the
service: the same ``grafana_dashboard.json`` is read, every panel's queries run against
Prometheus' HTTP API over the last N minutes, and matplotlib draws the panels as Grafana lays
them out: its dark theme, each panel at its ``gridPos`` (24 columns), its title, a legend under
the plot with every series (or the top ones by peak, saying how many are left out), values in
the panel's unit, its threshold steps as dashed lines in their colours (those off the plotted
range named in the corner), and stat panels as a big value over a sparkline. The heading gives
the time range the data covers, not the one asked for; a panel without data says why. The
dashboard's template variables are filled in as Grafana would ("All" is the regex ``.*``).

Usage::

    python observability/render_dashboard.py [PROMETHEUS_URL] [--minutes 60]
        [--output .run/dashboard-snapshot.png] [--environment REGEX] [--property-id REGEX]

``PROMETHEUS_URL`` defaults to ``$PROMETHEUS_URL``, else the Prometheus of a running
``make run`` (its ``.run/state.json``), else http://127.0.0.1:9090. Exit status 0 when the
picture was written (panels without data say "no data"), 1 when Prometheus could not be
reached, 2 on bad arguments; with ``--require-data`` also 1 if any panel has no data.

Example::

    >>> expand('rate(x{environment=~"$environment"}[5m])', {"environment": ".*"})
    'rate(x{environment=~".*"}[5m])'
    >>> legend("{{endpoint}} {{status_code}}", {"endpoint": "/score", "status_code": "200"})
    '/score 200'
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DASHBOARD = HERE / "grafana_dashboard.json"
DEFAULT_STATE_FILE = HERE.parent / ".run" / "state.json"
DEFAULT_OUTPUT = HERE.parent / ".run" / "dashboard-snapshot.png"
DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"
#: Points per series: enough for a readable line, few enough for a quick query.
MAX_POINTS = 240
#: Legend entries shown under a plot; more series are shown as the top ones by peak value.
MAX_LEGEND_ENTRIES = 6

#: Why a panel can be empty on a healthy service, by title (shown in the panel).
NO_DATA_REASONS = {
    "A/B Test Assignments": "no experiment running (no active record in the experiments table)",
    "A/B Test Conversion Rate": "no outcome of an experiment's quotes reached /learn in the last hour",
    "Competitor Data Fetch Success Rate": "no competitor backend called (BACKEND_API_URL unset, or every quote brought its market)",
    "Competitor Data Staleness": "no competitor prices fetched from the backend",
    "Invalid Outcomes": "no invalid outcome received",
    "Error Rate": "no error counted (every request so far was valid and answered)",
    "Drift Detection Events": "no drift detected in the last hour",
    "Model Retraining Events": "no retrain ran in the last hour",
    "Retraining Duration (p95)": "no retrain finished within 5 minutes of any point",
    "Model Prediction Latency (p95)": "no quote priced by a model",
    "Models Loaded": "no score container pushed in the last 10 minutes",
    "Service Uptime": "no container pushed in the last 10 minutes",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class PrometheusUnavailable(RuntimeError):
    """Prometheus did not answer at all (as opposed to rejecting one query)."""


@dataclass
class Series:
    """One line of a panel: its legend and its (unix time, value) points."""

    label: str
    times: list[float]
    values: list[float]


@dataclass
class Panel:
    """A dashboard panel with the data its queries returned."""

    title: str
    kind: str  # "timeseries" or "stat"
    unit: str
    thresholds: list[float]
    series: list[Series] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: (x, y, w, h) in Grafana's grid units (24 columns).
    grid: tuple[int, int, int, int] = (0, 0, 8, 8)
    #: Threshold steps (value, colour), the base step first with value None.
    steps: list[tuple[float | None, str]] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    bars: bool = False

    @property
    def has_data(self) -> bool:
        """A finite value somewhere: a quantile of nothing is all NaN, which is no data."""
        return any(math.isfinite(v) for s in self.series for v in s.values)


# ------------------------------------------------------------------------- dashboard and queries


def load_dashboard(path: Path = DEFAULT_DASHBOARD) -> dict:
    """The dashboard JSON; panels inside rows are flattened in order."""
    dashboard = json.loads(Path(path).read_text())
    flat = []
    for panel in dashboard.get("panels", []):
        flat.append(panel)
        flat.extend(panel.get("panels", []) if panel.get("type") == "row" else [])
    dashboard["panels"] = [p for p in flat if p.get("type") != "row"]
    return dashboard


def expand(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with Grafana's ``$name``/``${name}`` replaced by ``variables[name]``.

    Unknown names are left alone, so PromQL that contains a literal ``$`` stays intact.
    """

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return _VARIABLE.sub(replace, expr)


def legend(fmt: str, labels: Mapping[str, str]) -> str:
    """Grafana's ``{{label}}`` legend format applied to a series' labels."""
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), fmt).strip() or "value"


def panel_queries(panel: Mapping, variables: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(expr, legendFormat)`` for every visible target of ``panel``, variables expanded."""
    return [
        (expand(t["expr"], variables), t.get("legendFormat", "")) for t in panel.get("targets", []) if t.get("expr") and not t.get("hide")
    ]


def default_variables(dashboard: Mapping, environment: str | None = None, property_id: str | None = None) -> dict[str, str]:
    """Values for the dashboard's variables: given ones, else each variable's "All" value."""
    values: dict[str, str] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            values[var["name"]] = var.get("allValue") or ".*"
    if environment is not None:
        values["environment"] = environment
    if property_id is not None:
        values["property_id"] = property_id
    return values


def _steps(panel: Mapping) -> list[tuple[float | None, str]]:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    return [(None if s.get("value") is None else float(s["value"]), s.get("color", "green")) for s in steps]


def _thresholds(panel: Mapping) -> list[float]:
    """The threshold values a timeseries panel draws (none when its thresholds style is off)."""
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    if panel.get("type") == "timeseries" and defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") == "off":
        return []
    return [v for v, _ in _steps(panel) if v is not None]


# ------------------------------------------------------------------------------------ Prometheus


def _get_json(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # operator-given URL
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        # Prometheus answers a bad query with 400 and a JSON error body.
        try:
            return json.loads(exc.read())
        except ValueError:
            return {"status": "error", "error": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusUnavailable(f"{url.split('/api/')[0]}: {exc}") from exc


def query_range(
    base_url: str, expr: str, start: float, end: float, step: float, timeout: float = 10.0
) -> list[tuple[dict, list[float], list[float]]]:
    """``(labels, times, values)`` per series of a range query.

    Raises ``PrometheusUnavailable`` when Prometheus cannot be reached and ``ValueError`` with
    Prometheus' message when it rejects the query.
    """
    params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    body = _get_json(f"{base_url.rstrip('/')}/api/v1/query_range?{params}", timeout)
    if body.get("status") != "success":
        raise ValueError(body.get("error") or "query failed")
    out = []
    for result in body["data"]["result"]:
        times = [float(t) for t, _ in result["values"]]
        values = [float(v) for _, v in result["values"]]
        out.append((result["metric"], times, values))
    return out


def firing_alerts(base_url: str, timeout: float = 5.0) -> list[str]:
    """Names of the alerts Prometheus has firing now, sorted, with their count if > 1."""
    body = _get_json(f"{base_url.rstrip('/')}/api/v1/alerts", timeout)
    names: dict[str, int] = {}
    for alert in body.get("data", {}).get("alerts", []):
        if alert.get("state") == "firing":
            name = alert.get("labels", {}).get("alertname", "?")
            names[name] = names.get(name, 0) + 1
    return [f"{n} x{c}" if c > 1 else n for n, c in sorted(names.items())]


def collect(
    base_url: str, dashboard: Mapping, start: float, end: float, step: float, variables: Mapping[str, str], timeout: float = 10.0
) -> list[Panel]:
    """Every panel of ``dashboard`` with its queries' data over ``[start, end]``.

    A rejected query is recorded on its panel; Prometheus unreachable raises
    ``PrometheusUnavailable``.
    """
    panels = []
    for spec in dashboard["panels"]:
        defaults = spec.get("fieldConfig", {}).get("defaults", {})
        grid = spec.get("gridPos", {})
        panel = Panel(
            title=spec.get("title", ""),
            kind=spec.get("type", "timeseries"),
            unit=defaults.get("unit", ""),
            thresholds=_thresholds(spec),
            grid=(grid.get("x", 0), grid.get("y", 0), grid.get("w", 8), grid.get("h", 8)),
            steps=_steps(spec),
            minimum=defaults.get("min"),
            maximum=defaults.get("max"),
            bars=defaults.get("custom", {}).get("drawStyle") == "bars",
        )
        for expr, fmt in panel_queries(spec, variables):
            try:
                for labels, times, values in query_range(base_url, expr, start, end, step, timeout):
                    panel.series.append(Series(legend(fmt, labels), times, values))
            except ValueError as exc:
                panel.errors.append(str(exc))
        panels.append(panel)
    return panels


# ------------------------------------------------------------------------------------ rendering


#: Grafana's dark theme (10.x).
THEME = {"canvas": "#111217", "panel": "#181b1f", "border": "#2c3235", "text": "#ccccdc", "weak": "#8e8e9a", "grid": "#2a2d33"}
#: Grafana's classic palette, in order.
PALETTE = [
    "#7eb26d",
    "#eab839",
    "#6ed0e0",
    "#ef843c",
    "#e24d42",
    "#1f78c1",
    "#ba43a9",
    "#705da0",
    "#508642",
    "#cca300",
    "#447ebc",
    "#c15c17",
    "#890f02",
    "#0a437c",
    "#6d1f62",
    "#584477",
]
#: Grafana's named colours the dashboard uses.
NAMED_COLORS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a", "blue": "#5794f2", "purple": "#b877d9"}
#: Grafana's layout: a grid unit is 1/24 of the width wide and 30 px (+8 px gap) high.
GRID_COLUMNS, ROW_PX, GAP_PX, WIDTH_PX = 24, 30, 8, 1800


def _color(name: str) -> str:
    return NAMED_COLORS.get(name, name)


def _scale(unit: str, peak: float) -> tuple[float, str]:
    """A factor and axis label that show ``unit`` readably for values up to ``peak``."""
    if unit == "s":
        if peak < 1:
            return 1000.0, "ms"
        if peak >= 2 * 86400:
            return 1 / 86400.0, "days"
        if peak >= 7200:
            return 1 / 3600.0, "hours"
        if peak >= 600:
            return 1 / 60.0, "min"
        return 1.0, "s"
    if unit == "percentunit":
        return 100.0, "%"
    if unit.startswith("suffix:"):
        return 1.0, unit.split(":", 1)[1].strip()
    return 1.0, {"reqps": "req/s", "short": "", "none": ""}.get(unit, unit)


def format_duration(seconds: float) -> str:
    """``93784`` -> ``'1d 2h 3m'``, as Grafana's dtdurations unit shows it."""
    if not math.isfinite(seconds):
        return "n/a"
    seconds = int(seconds)
    parts = []
    for size, name in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            parts.append(f"{seconds // size}{name}")
            seconds %= size
    return " ".join(parts) if parts else f"{seconds}s"


def _number(value: float) -> str:
    """A tick or legend number: at most 3 significant digits, no exponent for everyday sizes."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_value(value: float, unit: str) -> str:
    """``value`` in the panel's unit, as a legend or stat shows it."""
    if unit == "dtdurations":
        return format_duration(value)
    factor, label = _scale(unit, abs(value))
    text = _number(value * factor)
    return f"{text}{label}" if label in ("%", "ms", "s") else f"{text} {label}".strip()


def _format_stat(value: float, unit: str) -> str:
    return format_value(value, unit)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _no_data_text(panel: Panel) -> str:
    if panel.errors:
        return "query error: " + panel.errors[0][:120]
    return "No data: " + NO_DATA_REASONS.get(panel.title, "no series matched this panel's queries")


def data_range(panels: Sequence[Panel]) -> tuple[float, float] | None:
    """First and last timestamp with a finite value across every panel, or None."""
    stamps = [t for p in panels for s in p.series for t, v in zip(s.times, s.values) if math.isfinite(v)]
    return (min(stamps), max(stamps)) if stamps else None


def _legend_entries(panel: Panel) -> tuple[list[tuple[Series, str]], int]:
    """(series, colour) to list under the plot, the top ones by peak when there are too many,
    and how many were left out."""
    colored = [(s, PALETTE[i % len(PALETTE)]) for i, s in enumerate(panel.series) if _finite(s.values)]
    if len(colored) <= MAX_LEGEND_ENTRIES:
        return colored, 0
    top = sorted(colored, key=lambda sc: max(_finite(sc[0].values)), reverse=True)[:MAX_LEGEND_ENTRIES]
    return top, len(colored) - len(top)


def _draw_frame(fig, rect, panel: Panel):
    """The panel's box and title; returns the figure coordinates inside it."""
    from matplotlib.patches import FancyBboxPatch

    left, bottom, width, height = rect
    fig.patches.append(
        FancyBboxPatch(
            (left, bottom),
            width,
            height,
            boxstyle="round,pad=0,rounding_size=0.002",
            transform=fig.transFigure,
            facecolor=THEME["panel"],
            edgecolor=THEME["border"],
            linewidth=0.8,
            zorder=-10,
        )
    )
    fig.text(left + 0.006, bottom + height - 0.006, panel.title, color=THEME["text"], fontsize=10.5, fontweight="bold", ha="left", va="top")
    return rect


def _draw_stat(fig, rect, panel: Panel) -> None:
    left, bottom, width, height = rect
    points = [(t, v) for s in panel.series for t, v in zip(s.times, s.values) if math.isfinite(v)]
    points.sort()
    last = points[-1][1]
    color = THEME["text"]
    for value, name in panel.steps:  # Grafana colours a stat by the highest step it reaches
        if value is None or last >= value:
            color = _color(name)
    spark = fig.add_axes([left + 0.004, bottom + 0.006, width - 0.008, height * 0.45])
    spark.fill_between([t for t, _ in points], [v for _, v in points], color=color, alpha=0.18, linewidth=0)
    spark.plot([t for t, _ in points], [v for _, v in points], color=color, linewidth=1.2)
    spark.set_axis_off()
    spark.set_ylim(bottom=0)
    fig.text(
        left + width / 2,
        bottom + height * 0.56,
        format_value(last, panel.unit),
        color=color,
        fontsize=34,
        fontweight="bold",
        ha="center",
        va="center",
    )
    fig.text(left + width / 2, bottom + height * 0.8, panel.series[0].label, color=THEME["weak"], fontsize=9, ha="center", va="center")


def _draw_timeseries(fig, rect, panel: Panel, x_range: tuple[float, float]) -> None:
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    left, bottom, width, height = rect
    from matplotlib.patches import Rectangle

    entries, left_out = _legend_entries(panel)
    legend_lines = math.ceil(len(entries) / (2 if len(entries) > 3 else 1)) + (1 if left_out else 0)
    legend_h = 0.0115 * legend_lines + 0.006
    ax = fig.add_axes([left + 0.042, bottom + legend_h + 0.022, width - 0.05, height - legend_h - 0.05])
    ax.set_facecolor(THEME["panel"])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(colors=THEME["weak"], labelsize=7.5, length=0)
    ax.grid(True, color=THEME["grid"], linewidth=0.7)
    ax.set_axisbelow(True)

    finite = [v for s in panel.series for v in _finite(s.values)]
    peak = max((abs(v) for v in finite), default=0.0)
    factor, axis_label = _scale(panel.unit, peak)
    stacked_bottom: dict[float, float] = {}
    span = x_range[1] - x_range[0]
    for series, color in entries:
        times = [datetime.fromtimestamp(t, tz=UTC) for t in series.times]
        values = [v * factor if math.isfinite(v) else float("nan") for v in series.values]
        if panel.bars:
            gaps = sorted(b - a for a, b in zip(series.times, series.times[1:]) if b > a)
            width_days = (gaps[len(gaps) // 2] if gaps else span / MAX_POINTS) / 86400 * 0.8
            bases = [stacked_bottom.get(t, 0.0) for t in series.times]
            ax.bar(times, [0 if math.isnan(v) else v for v in values], width=width_days, bottom=bases, color=color, alpha=0.75, linewidth=0)
            for t, b, v in zip(series.times, bases, values):
                stacked_bottom[t] = b + (0 if math.isnan(v) else v)
        else:
            ax.plot(times, values, color=color, linewidth=1.3)
            ax.fill_between(times, values, color=color, alpha=0.08, linewidth=0)
    top = max(stacked_bottom.values(), default=peak * factor) if panel.bars else peak * factor
    low = min((v * factor for v in finite), default=0.0)
    y_min = panel.minimum * factor if panel.minimum is not None else min(0.0, low)
    y_max = panel.maximum * factor if panel.maximum is not None else (top * 1.15 if top > 0 else 1.0)
    if y_max <= y_min:
        y_max = y_min + 1.0
    ax.set_ylim(y_min, y_max)
    off_range = []
    for value, name in panel.steps:
        if value is None or value not in panel.thresholds:
            continue
        if y_min <= value * factor <= y_max:
            ax.axhline(value * factor, color=_color(name), linestyle=(0, (6, 4)), linewidth=1.0)
        else:
            off_range.append(f"{format_value(value, panel.unit)}")
    if off_range:
        ax.text(
            0.995,
            0.97,
            "threshold " + ", ".join(off_range) + " above",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            color=THEME["weak"],
        )
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    unit_suffix = axis_label if axis_label in ("%", "ms", "s", "min", "hours", "days") else ""
    ax.yaxis.set_major_formatter(
        FuncFormatter(lambda v, _: f"{_number(v)}{unit_suffix and ' ' + unit_suffix}" if unit_suffix not in ("%",) else f"{_number(v)}%")
    )
    if axis_label and not unit_suffix:
        ax.set_ylabel(axis_label, fontsize=7.5, color=THEME["weak"], labelpad=2)
    ax.set_xlim(datetime.fromtimestamp(x_range[0], tz=UTC), datetime.fromtimestamp(x_range[1], tz=UTC))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=6, tz=UTC))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))

    line_h = 0.0115
    columns = 2 if len(entries) > 3 else 1
    column_w = (width - 0.008) / columns
    for i, (series, color) in enumerate(entries):
        row, col = divmod(i, columns)
        x0, y = left + 0.008 + col * column_w, bottom + legend_h + 0.002 - (row + 1) * line_h
        values = _finite(series.values)
        fig.patches.append(Rectangle((x0, y + 0.0035), 0.009, 0.0028, transform=fig.transFigure, color=color))
        stats = (
            f"max {format_value(max(values), panel.unit)}"
            if columns == 2
            else f"last {format_value(values[-1], panel.unit)}  max {format_value(max(values), panel.unit)}"
        )
        label = series.label if len(series.label) <= (25 if columns == 2 else 60) else series.label[:24] + "…"
        fig.text(x0 + 0.013, y + 0.005, label, color=THEME["text"], fontsize=7.5 if columns == 1 else 7, va="center")
        fig.text(x0 + column_w - 0.008, y + 0.005, stats, color=THEME["weak"], fontsize=7, va="center", ha="right")
    if left_out:
        y = bottom + legend_h + 0.002 - (math.ceil(len(entries) / columns) + 1) * line_h
        fig.text(
            left + 0.008,
            y + 0.005,
            f"top {len(entries)} of {len(entries) + left_out} series by peak shown ({left_out} more)",
            color=THEME["weak"],
            fontsize=7,
            va="center",
            style="italic",
        )


def render(
    panels: Sequence[Panel], output: Path, heading: str, subheading: str = "", columns: int = 3, x_range: tuple[float, float] | None = None
) -> Path:
    """Draw ``panels`` at their grid positions, Grafana-style, and write the PNG to ``output``.

    ``x_range`` is the time axis shared by every panel (default: the data's own range).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    grid_rows = max((p.grid[1] + p.grid[3] for p in panels), default=8)
    header_px = 70
    height_px = header_px + grid_rows * (ROW_PX + GAP_PX * 0.25) + GAP_PX
    dpi = 100
    fig = plt.figure(figsize=(WIDTH_PX / dpi, height_px / dpi), dpi=dpi, facecolor=THEME["canvas"])
    x_range = x_range or data_range(panels) or (time.time() - 3600, time.time())
    if x_range[1] - x_range[0] < 60:
        x_range = (x_range[1] - 60, x_range[1])
    unit_w = (1 - GAP_PX / WIDTH_PX) / GRID_COLUMNS
    unit_h = (height_px - header_px - GAP_PX) / height_px / grid_rows
    gap_w, gap_h = GAP_PX / WIDTH_PX, GAP_PX / height_px
    for panel in panels:
        x, y, w, h = panel.grid
        rect = (gap_w + x * unit_w, 1 - header_px / height_px - (y + h) * unit_h, w * unit_w - gap_w, h * unit_h - gap_h)
        _draw_frame(fig, rect, panel)
        if not panel.has_data:
            import textwrap

            # About 6.5 px per character at 9 pt: wrap to the panel's width.
            chars = max(20, int(rect[2] * WIDTH_PX / 6.5) - 4)
            fig.text(
                rect[0] + rect[2] / 2,
                rect[1] + rect[3] / 2,
                "\n".join(textwrap.wrap(_no_data_text(panel), chars)),
                color=THEME["weak"],
                fontsize=9,
                ha="center",
                va="center",
                linespacing=1.5,
            )
        elif panel.kind == "stat":
            _draw_stat(fig, rect, panel)
        else:
            _draw_timeseries(fig, rect, panel, x_range)
    fig.text(gap_w, 1 - 12 / height_px, heading, color=THEME["text"], fontsize=15, fontweight="bold", ha="left", va="top")
    if subheading:
        fig.text(gap_w, 1 - 42 / height_px, subheading, color=THEME["weak"], fontsize=9, ha="left", va="top")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=dpi, facecolor=THEME["canvas"])
    plt.close(fig)
    return output


# ----------------------------------------------------------------------------------------- CLI


def _clock(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, tz=UTC).strftime("%H:%M")


def resolve_prometheus_url(given: str | None, environ: Mapping[str, str] = os.environ, state_file: Path = DEFAULT_STATE_FILE) -> str:
    """The URL given, else ``$PROMETHEUS_URL``, else a running ``make run``'s, else the default."""
    if given:
        return given
    if environ.get("PROMETHEUS_URL"):
        return environ["PROMETHEUS_URL"]
    try:
        url = json.loads(Path(state_file).read_text()).get("prometheus_url")
        if url:
            return url
    except (OSError, ValueError, AttributeError):
        pass
    return DEFAULT_PROMETHEUS_URL


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prometheus_url", nargs="?", help=f"default: $PROMETHEUS_URL, the running `make run`, or {DEFAULT_PROMETHEUS_URL}")
    parser.add_argument("--minutes", type=float, default=60.0, help="time range ending now (default 60)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write")
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD)
    parser.add_argument("--environment", help='regex for $environment (default: all, ".*")')
    parser.add_argument("--property-id", help='regex for $property_id (default: all, ".*")')
    parser.add_argument("--step", type=float, help="query resolution in seconds (default: range/240)")
    parser.add_argument("--require-data", action="store_true", help="exit 1 if any panel returned no data")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")

    url = resolve_prometheus_url(args.prometheus_url)
    dashboard = load_dashboard(args.dashboard)
    variables = default_variables(dashboard, args.environment, args.property_id)
    end = time.time()
    start = end - args.minutes * 60
    step = args.step or max(1.0, math.ceil(args.minutes * 60 / MAX_POINTS))
    try:
        panels = collect(url, dashboard, start, end, step, variables)
        alerts = firing_alerts(url)
    except PrometheusUnavailable as exc:
        print(f"render_dashboard: Prometheus not reachable: {exc}", file=sys.stderr)
        return 1

    # The range the data covers, not the one asked for: a 3-minute run is not "the last hour".
    covered = data_range(panels)
    if covered:
        first, last = covered
        day = datetime.fromtimestamp(last, tz=UTC).strftime("%Y-%m-%d")
        span = f"{_clock(first)} to {_clock(last)} UTC {day} ({(last - first) / 60:.0f} min of data"
        span += f", of the {args.minutes:g} min asked)" if last - first < args.minutes * 60 - 2 * step else ")"
    else:
        span = f"no data in the last {args.minutes:g} min"
    heading = f"{dashboard.get('title', 'Dashboard')}: {span}"
    filters = ", ".join(f"{k}={v}" for k, v in sorted(variables.items()))
    subheading = f"Prometheus {url}   ({filters}, step {step:g} s)   firing alerts: {', '.join(alerts) if alerts else 'none'}"
    render(panels, args.output, heading, subheading, x_range=(covered[0], end) if covered else (start, end))

    with_data = sum(p.has_data for p in panels)
    for number, panel in enumerate(panels, 1):
        state = f"{len(panel.series)} series" if panel.has_data else f"no data ({_no_data_text(panel)[9:]})"
        if panel.errors:
            state += f"; error: {panel.errors[0]}"
        print(f"{number:2d}. {panel.title}: {state}")
    print(f"{with_data}/{len(panels)} panels with data -> {args.output}")
    return 1 if args.require_data and with_data < len(panels) else 0


if __name__ == "__main__":
    sys.exit(main())
