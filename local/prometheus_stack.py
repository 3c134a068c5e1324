"""Where the Prometheus stack's binaries are: the one place that answers it.

``observability/stack/install.sh`` (``make setup``) installs the pinned packages of
``observability/stack/versions`` (Debian 13's Pushgateway 1.11, Alertmanager and amtool; Debian forky's
Prometheus 3.5 and promtool) into ``.tools/prometheus-stack/`` (``PROMETHEUS_STACK_DIR`` moves it,
for the script and for this module alike). Tests, ``make run`` and the benches take their
binaries from its ``bin/`` and from nowhere else.

There is no fallback to ``PATH``, in CI or outside it: a ``prometheus`` on ``PATH`` is Debian 12's
2.42 (or whatever else a machine has), which has neither created-timestamp ingestion nor
protobuf scraping of created timestamps, so a test on it would fail, or worse pass, for reasons
of that machine. A missing (or stale) stack says how to install the pinned one instead.

Also here: the flags every Prometheus of the project runs with and the scrape protocols of its
Pushgateway job, so tests, ``make run`` and the benches start it alike.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS_FILE = ROOT / "observability" / "stack" / "versions"
INSTALL_SCRIPT = ROOT / "observability" / "stack" / "install.sh"
INSTALL_HINT = "run `make setup` (observability/stack/install.sh) to install the pinned Prometheus stack"

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
PUSHGATEWAY = "prometheus-pushgateway"
ALERTMANAGER = "prometheus-alertmanager"
AMTOOL = "amtool"
BINARIES = (PROMETHEUS, PROMTOOL, PUSHGATEWAY, ALERTMANAGER, AMTOOL)
# Long-term storage (remote write); pinned for amd64 only, so not among BINARIES.
VICTORIA_METRICS = "victoria-metrics"
# The Debian package each binary comes from (pinned in VERSIONS_FILE).
PACKAGE_OF = {
    PROMETHEUS: "prometheus",
    PROMTOOL: "promtool",
    PUSHGATEWAY: "prometheus-pushgateway",
    ALERTMANAGER: "prometheus-alertmanager",
    AMTOOL: "prometheus-alertmanager",
    "pushgateway": "prometheus-pushgateway",
    "alertmanager": "prometheus-alertmanager",
    VICTORIA_METRICS: "victoria-metrics",
}

# Debian's Alertmanager reads its default notification templates from this compiled-in path and
# loads no configuration without them; install.sh puts the pinned package's copies there.
ALERTMANAGER_TEMPLATES = tuple(Path("/usr/share/prometheus/alertmanager") / t for t in ("default.tmpl", "email.tmpl"))

# A counter's created timestamp lets Prometheus put a zero at the series' start
# (created-timestamp-zero-ingestion), so increase()/rate() see a new series' first counts.
PROMETHEUS_FLAGS = ("--enable-feature=created-timestamp-zero-ingestion",)
# Every Pushgateway of the project runs without its consistency check: the check re-validates
# everything the gateway holds on every push, so a push's cost grows with the fleet (p99 107 ms
# at 1,000 groups, 906 ms at 5,000; bench/RESULTS.md "Metrics path at scale"). What it guards
# against cannot happen here: every group is rendered by the same PricingMetrics definitions
# (one type and help per family) and holds only its own grouping key's series, so no push can
# contradict another group (docs/metrics.md).
PUSHGATEWAY_FLAGS = ("--push.disable-consistency-check",)
# Created timestamps travel only in the protobuf exposition: protobuf first, text as fallback.
PUSHGATEWAY_SCRAPE_PROTOCOLS = ("PrometheusProto", "OpenMetricsText1.0.0", "PrometheusText0.0.4")


class StackMissing(RuntimeError):
    """A binary of the pinned stack is not installed (or the installed stack is not the pinned one)."""


def stack_dir() -> Path:
    return Path(os.environ.get("PROMETHEUS_STACK_DIR") or ROOT / ".tools" / "prometheus-stack")


def bin_dir() -> Path:
    return stack_dir() / "bin"


def pinned_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """package -> pinned Debian version (the same for every architecture)."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 4 and not line.lstrip().startswith("#"):
            pins[fields[0]] = fields[1]
    return pins


def upstream_version(debian_version: str) -> str:
    """``2.53.3+ds1-2`` -> ``2.53.3+ds1`` (no epoch, no Debian revision): what ``--version`` says."""
    version = debian_version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def installed_versions() -> dict[str, str] | None:
    """package -> Debian version from the install's stamp; None when it was never installed."""
    stamp = stack_dir() / ".installed"
    if not stamp.is_file():
        return None
    installed = {}
    for line in stamp.read_text().splitlines():
        fields = line.split()
        if len(fields) == 4:
            installed[fields[0]] = fields[1]
    return installed


def problem(name: str) -> str | None:
    """Why ``name`` cannot be used (not installed, not the pinned version), or None."""
    path = bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        return f"{name} is not installed in {bin_dir()}: {INSTALL_HINT}"
    installed = installed_versions() or {}
    package = PACKAGE_OF.get(name)
    if package:
        pinned = pinned_versions().get(package)
        if pinned and installed.get(package) != pinned:
            return f"{name} in {bin_dir()} is {package} {installed.get(package, '(unknown)')}, the pin is {pinned}: {INSTALL_HINT}"
    if package == "prometheus-alertmanager" and name != AMTOOL:
        missing = [str(t) for t in ALERTMANAGER_TEMPLATES if not t.is_file()]
        if missing:
            return f"{name} cannot load a configuration without {', '.join(missing)}: {INSTALL_HINT}"
    return None


def find(name: str) -> str | None:
    """The path of the pinned stack's ``name``, or None when it is missing or not the pinned one."""
    return None if problem(name) else str(bin_dir() / name)


def require(name: str) -> str:
    """The path of the pinned stack's ``name``; :class:`StackMissing` saying how to install it."""
    why = problem(name)
    if why:
        raise StackMissing(why)
    return str(bin_dir() / name)


def available(*names: str) -> bool:
    return all(find(name) for name in (names or BINARIES))


_VERSION_LINE = re.compile(r"version (\S+)")


def reported_version(output: str) -> str | None:
    """The version in a ``--version`` answer (``prometheus, version 2.53.3+ds1 (branch: ...``)."""
    match = _VERSION_LINE.search(output)
    return match.group(1) if match else None
