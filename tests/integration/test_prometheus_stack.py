"""The pinned Prometheus stack: the binaries every test, `make run` and bench start are the pins.

- each binary ``local.prometheus_stack`` resolves reports the upstream version of its package's
  pin in observability/stack/versions (and the install's stamp records exactly those pins);
- ``install.sh --check`` agrees that nothing is left to do;
- Prometheus knows ``--enable-feature=created-timestamp-zero-ingestion`` (an unknown feature
  would only be logged, and the zeros silently missing);
- created timestamps end to end: a counter pushed in protobuf with its created timestamp keeps
  it in the Pushgateway, and Prometheus, scraping it in protobuf, stores a zero at that time
  first, so the series' first count is an increase (over text it would be its first sample).

Skips without the pinned stack, or fails when CI=true.
"""

from __future__ import annotations

import struct
import subprocess
import time
import urllib.request

import pytest

from local import prometheus_stack
from support.promstack import Prometheus, Pushgateway, free_port, require_binary

pytestmark = pytest.mark.services

PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "promtool",
    "prometheus-pushgateway": "prometheus-pushgateway",
    "pushgateway": "prometheus-pushgateway",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}


def test_the_pins_are_debians_created_timestamp_versions():
    pins = prometheus_stack.pinned_versions()
    assert set(pins) == {"prometheus", "promtool", "prometheus-pushgateway", "prometheus-alertmanager", "victoria-metrics"}
    assert pins["prometheus"] == pins["promtool"]  # one source package
    assert prometheus_stack.upstream_version(pins["prometheus"]).startswith("3.5.")
    assert prometheus_stack.upstream_version(pins["prometheus-pushgateway"]).startswith("1.11.")


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_each_binary_reports_its_pinned_version(name):
    path = require_binary(name)
    assert path.startswith(str(prometheus_stack.bin_dir())), path  # never one from PATH
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    pinned = prometheus_stack.pinned_versions()[PACKAGES[name]]
    first_line = (done.stdout + done.stderr).splitlines()[0]
    assert prometheus_stack.reported_version(first_line) == prometheus_stack.upstream_version(pinned), first_line
    assert f"revision: {pinned})" in first_line  # the Debian build of exactly that version


def test_the_install_is_the_pinned_one_and_a_rerun_has_nothing_to_do():
    require_binary("prometheus")
    pinned = prometheus_stack.pinned_versions()
    assert prometheus_stack.installed_versions() == pinned
    started = time.monotonic()
    done = subprocess.run([str(prometheus_stack.INSTALL_SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 5


def test_prometheus_enables_created_timestamp_zero_ingestion(tmp_path):
    binary = require_binary("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s}\nscrape_configs: []\n")
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{free_port()}",
                "--log.level=info",
                *prometheus_stack.PROMETHEUS_FLAGS,
            ],
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and "Server is ready" not in text:
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.2)
            text = log_path.read_text()
    finally:
        process.terminate()
        process.wait(10)
    assert "Server is ready" in text, text[-2000:]
    assert "created timestamp zero ingestion enabled" in text.lower(), text[-2000:]
    assert "unknown option for --enable-feature" not in text.lower(), text[-2000:]


# ------------------------------------------------------------------ created timestamps, by hand


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # a length-delimited field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _counter_family(name: str, value: float, created: float, labels: dict[str, str]) -> bytes:
    """One io.prometheus.client.MetricFamily (a counter with its created timestamp), delimited."""
    seconds = int(created)
    timestamp = _varint(1 << 3) + _varint(seconds) + _varint(2 << 3) + _varint(int((created - seconds) * 1e9))
    counter = _varint(1 << 3 | 1) + struct.pack("<d", value) + _field(3, timestamp)
    metric = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in labels.items())
    metric += _field(3, counter)
    family = _field(1, name.encode()) + _field(2, b"created timestamp check") + _varint(3 << 3) + _varint(0)
    family += _field(4, metric)
    return _varint(len(family)) + family


def test_a_protobuf_push_keeps_its_created_timestamp_and_prometheus_starts_the_series_at_zero():
    with Pushgateway() as pgw, Prometheus(pgw) as prom:
        body = _counter_family("stack_created_check_total", 5.0, time.time() - 2, {"check": "ct"})
        request = urllib.request.Request(
            f"{pgw.url}/metrics/job/stack-check/instance/one",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            # Unchecked (as every Pushgateway of the project runs): accepted, applied a moment later.
            assert response.status == 202
        prom.wait_for_value('max_over_time(stack_created_check_total{check="ct"}[1m])', 5.0)
        # The zero at the created timestamp: the first pushed count is an increase.
        assert prom.value('min_over_time(stack_created_check_total{check="ct"}[1m])') == 0.0
