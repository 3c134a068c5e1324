"""Render the pricing dashboard's panels from a running Prometheus into one PNG.

Grafana is not packaged for Debian, so where it is missing this is how a person looks at the
service: the same ``grafana_dashboard.json`` is read, every panel's queries run against
Prometheus' HTTP API over the last N minutes, and matplotlib draws the panels in the
dashboard's order with their titles, units and alert thresholds. The dashboard's template
variables are filled in as Grafana would ("All" is the regex ``.*``).

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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

HERE = Path(__file__).resolve().parent
DEFAULT_DASHBOARD = HERE / "grafana_dashboard.json"
DEFAULT_STATE_FILE = HERE.parent / ".run" / "state.json"
DEFAULT_OUTPUT = HERE.parent / ".run" / "dashboard-snapshot.png"
DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"
#: Points per series: enough for a readable line, few enough for a quick query.
MAX_POINTS = 240
MAX_LEGEND_ENTRIES = 8

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

    @property
    def has_data(self) -> bool:
        return any(s.values for s in self.series)


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
    return [(expand(t["expr"], variables), t.get("legendFormat", ""))
            for t in panel.get("targets", []) if t.get("expr") and not t.get("hide")]


def default_variables(dashboard: Mapping, environment: str | None = None,
                      property_id: str | None = None) -> dict[str, str]:
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


def _thresholds(panel: Mapping) -> list[float]:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    return [float(s["value"]) for s in steps if s.get("value") is not None]


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


def query_range(base_url: str, expr: str, start: float, end: float, step: float,
                timeout: float = 10.0) -> list[tuple[dict, list[float], list[float]]]:
    """``(labels, times, values)`` per series of a range query.

    Raises ``PrometheusUnavailable`` when Prometheus cannot be reached and ``ValueError`` with
    Prometheus' message when it rejects the query.
    """
    params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                     "step": f"{step:g}"})
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


def collect(base_url: str, dashboard: Mapping, start: float, end: float, step: float,
            variables: Mapping[str, str], timeout: float = 10.0) -> list[Panel]:
    """Every panel of ``dashboard`` with its queries' data over ``[start, end]``.

    A rejected query is recorded on its panel; Prometheus unreachable raises
    ``PrometheusUnavailable``.
    """
    panels = []
    for spec in dashboard["panels"]:
        panel = Panel(title=spec.get("title", ""), kind=spec.get("type", "timeseries"),
                      unit=spec.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
                      thresholds=_thresholds(spec))
        for expr, fmt in panel_queries(spec, variables):
            try:
                for labels, times, values in query_range(base_url, expr, start, end, step, timeout):
                    panel.series.append(Series(legend(fmt, labels), times, values))
            except ValueError as exc:
                panel.errors.append(str(exc))
        panels.append(panel)
    return panels


# ------------------------------------------------------------------------------------ rendering


def _scale(unit: str, peak: float) -> tuple[float, str]:
    """A factor and axis label that show ``unit`` readably for values up to ``peak``."""
    if unit == "s":
        if peak < 1:
            return 1000.0, "ms"
        if peak >= 7200:
            return 1 / 3600.0, "hours"
        return 1.0, "seconds"
    if unit == "percentunit":
        return 100.0, "%"
    return 1.0, {"reqps": "req/s", "short": ""}.get(unit, unit)


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


def _format_stat(value: float, unit: str) -> str:
    if unit == "dtdurations":
        return format_duration(value)
    factor, label = _scale(unit, abs(value))
    return f"{value * factor:.3g} {label}".strip()


def render(panels: Sequence[Panel], output: Path, heading: str, subheading: str = "",
           columns: int = 3) -> Path:
    """Draw ``panels`` in a grid (dashboard order) and write the PNG to ``output``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel.title, fontsize=11, fontweight="bold", loc="left")
        ax.tick_params(labelsize=8)
        if panel.errors and not panel.has_data:
            ax.text(0.5, 0.5, "query error:\n" + "\n".join(e[:90] for e in panel.errors[:2]),
                    ha="center", va="center", color="firebrick", fontsize=8, wrap=True,
                    transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([])
            continue
        if not panel.has_data:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", color="grey", fontsize=14,
                    transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([])
            continue
        if panel.kind == "stat":
            last = next(s.values[-1] for s in panel.series if s.values)
            ax.text(0.5, 0.55, _format_stat(last, panel.unit), ha="center", va="center",
                    fontsize=30, color="seagreen", transform=ax.transAxes)
            ax.text(0.5, 0.2, panel.series[0].label, ha="center", va="center", fontsize=9,
                    color="grey", transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([])
            continue
        finite = [abs(v) for s in panel.series for v in s.values if math.isfinite(v)]
        peak = max(finite, default=0.0)
        factor, axis_label = _scale(panel.unit, peak)
        for series in panel.series:
            when = [datetime.fromtimestamp(t, tz=timezone.utc) for t in series.times]
            ax.plot(when, [v * factor for v in series.values], linewidth=1.2, label=series.label)
        # An alert threshold far above the data would squash the lines flat: draw those that
        # are within reach of what is plotted.
        for threshold in panel.thresholds:
            if peak and threshold <= 3 * peak:
                ax.axhline(threshold * factor, color="firebrick", linestyle="--", linewidth=0.9)
        ax.set_ylabel(axis_label, fontsize=8)
        # Flat series (e.g. staleness in hours) would otherwise be labelled as an offset like "1e-5+2".
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        span = max((s.times[-1] - s.times[0] for s in panel.series if s.times), default=0)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if span < 900 else "%H:%M",
                                                          tz=timezone.utc))
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if len(handles) > MAX_LEGEND_ENTRIES:
            handles = handles[:MAX_LEGEND_ENTRIES]
            labels = labels[:MAX_LEGEND_ENTRIES - 1] + [f"+{len(panel.series) - MAX_LEGEND_ENTRIES + 1} more"]
        ax.legend(handles, labels, fontsize=7, loc="upper left", framealpha=0.6)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    height = 3.6 * rows
    fig.suptitle(heading, fontsize=16, fontweight="bold", x=0.01, y=1 - 0.15 / height, ha="left")
    if subheading:
        fig.text(0.01, 1 - 0.55 / height, subheading, fontsize=10, ha="left", va="top")
    # Fixed margins: tight_layout measures every label of every axis and takes longer than
    # drawing the whole figure.
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.3 / height, top=1 - 1.0 / height,
                        wspace=0.18, hspace=0.45)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=90)
    plt.close(fig)
    return output


# ----------------------------------------------------------------------------------------- CLI


def resolve_prometheus_url(given: str | None, environ: Mapping[str, str] = os.environ,
                           state_file: Path = DEFAULT_STATE_FILE) -> str:
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
    parser.add_argument("prometheus_url", nargs="?", help=f"default: $PROMETHEUS_URL, the running "
                        f"`make run`, or {DEFAULT_PROMETHEUS_URL}")
    parser.add_argument("--minutes", type=float, default=60.0, help="time range ending now (default 60)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write")
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD)
    parser.add_argument("--environment", help='regex for $environment (default: all, ".*")')
    parser.add_argument("--property-id", help='regex for $property_id (default: all, ".*")')
    parser.add_argument("--step", type=float, help="query resolution in seconds (default: range/240)")
    parser.add_argument("--require-data", action="store_true",
                        help="exit 1 if any panel returned no data")
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

    stamp = datetime.fromtimestamp(end, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    heading = f"{dashboard.get('title', 'Dashboard')}: last {args.minutes:g} min to {stamp}"
    filters = ", ".join(f"{k}={v}" for k, v in sorted(variables.items()))
    subheading = f"{url}   ({filters})   firing alerts: {', '.join(alerts) if alerts else 'none'}"
    render(panels, args.output, heading, subheading)

    with_data = sum(p.has_data for p in panels)
    for number, panel in enumerate(panels, 1):
        state = f"{len(panel.series)} series" if panel.has_data else "no data"
        if panel.errors:
            state += f"; error: {panel.errors[0]}"
        print(f"{number:2d}. {panel.title}: {state}")
    print(f"{with_data}/{len(panels)} panels with data -> {args.output}")
    return 1 if args.require_data and with_data < len(panels) else 0


if __name__ == "__main__":
    sys.exit(main())
