"""prometheus_client's collected metrics in the Prometheus protobuf exposition format.

The body is a sequence of varint-delimited ``io.prometheus.client.MetricFamily`` messages
(client_model's ``metrics.proto``), the format a Pushgateway accepts under :data:`CONTENT_TYPE`.
It is used instead of the text format because only protobuf carries a counter's or histogram's
*created timestamp*, which lets Prometheus count a series' first pushed value (see
``docs/metrics.md``). The text format's ``_created`` lines do not do that.

Only the messages and fields the service emits are encoded: counters and classic histograms
with their created timestamps, gauges, and info metrics as gauges. The encoder is written out
here rather than taken from the ``protobuf`` package, whose import alone costs every cold start
about 26 ms (``docs/metrics.md``); its output is checked against that package in the tests.

Example::

    >>> from prometheus_client import CollectorRegistry, Counter
    >>> registry = CollectorRegistry()
    >>> Counter("jobs", "Jobs done", registry=registry).inc()
    >>> body = encode_families(registry.collect())
    >>> body[1:3], b"jobs_total" in body
    (b'\\n\\n', True)
"""

from __future__ import annotations

import math
import struct
from typing import Iterable

from prometheus_client.metrics_core import Metric

CONTENT_TYPE = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"

# MetricType enum values.
_COUNTER, _GAUGE, _UNTYPED, _HISTOGRAM = 0, 1, 3, 4
_pack_double = struct.Struct("<d").pack


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL_VARINTS[n]
    if n < 0:  # int64 fields: two's complement over ten bytes
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [bytes([n]) for n in range(128)]


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string_field(number: int, text: str) -> bytes:
    return _bytes_field(number, text.encode("utf-8"))


def _double_field(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + _pack_double(value)


def _uint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


_created_cache: dict[float, bytes] = {}


def _created(seconds: float) -> bytes:
    """A created timestamp field's payload; a series' creation time never changes."""
    encoded = _created_cache.get(seconds)
    if encoded is None:
        encoded = _timestamp(seconds)
        if len(_created_cache) < 100_000:
            _created_cache[seconds] = encoded
    return encoded


def _timestamp(seconds: float) -> bytes:
    """A ``google.protobuf.Timestamp``."""
    whole = math.floor(seconds)
    nanos = min(int(round((seconds - whole) * 1e9)), 999_999_999)
    return _uint_field(1, whole) + (_uint_field(2, nanos) if nanos else b"")


_label_cache: dict[tuple, bytes] = {}
_bound_cache: dict[float, bytes] = {}


def _labels(labels: dict[str, str]) -> bytes:
    key = tuple(labels.items())
    encoded = _label_cache.get(key)
    if encoded is None:
        encoded = b"".join(_bytes_field(1, _string_field(1, name) + _string_field(2, value))
                           for name, value in key)
        if len(_label_cache) < 100_000:  # label sets are bounded by the metrics' own caps
            _label_cache[key] = encoded
    return encoded


def _bucket(bound: float, count: float) -> bytes:
    """A ``Bucket`` field of a ``Histogram``: its upper bound's bytes are the same every time."""
    tail = _bound_cache.get(bound)
    if tail is None:
        tail = _bound_cache[bound] = _double_field(2, bound)
    payload = b"\x08" + _varint(int(count)) + tail
    return b"\x1a" + _varint(len(payload)) + payload


def _metric_counter(labels: dict[str, str], value: float, created: float | None) -> bytes:
    body = _double_field(1, value)
    if created is not None:
        body += _bytes_field(3, _created(created))
    return _labels(labels) + _bytes_field(3, body)


def _metric_gauge(labels: dict[str, str], value: float) -> bytes:
    return _labels(labels) + _bytes_field(2, _double_field(1, value))


def _metric_untyped(labels: dict[str, str], value: float) -> bytes:
    return _labels(labels) + _bytes_field(5, _double_field(1, value))


def _metric_histogram(labels: dict[str, str], series: dict) -> bytes:
    # +Inf is implied by sample_count, as Prometheus' own clients encode it.
    body = b"".join([_uint_field(1, int(series.get("count", 0))), _double_field(2, series.get("sum", 0.0)),
                     *[_bucket(bound, count) for bound, count in series["buckets"] if bound != math.inf]])
    if series.get("created") is not None:
        body += _bytes_field(15, _created(series["created"]))
    return _labels(labels) + _bytes_field(7, body)


def _family(metric: Metric) -> bytes | None:
    name, kind = metric.name, metric.type
    metrics: list[bytes] = []
    if kind == "counter":
        # Each series' value, then its _created sample.
        counters: list[list] = []
        for s in metric.samples:
            if s.name.endswith("_created"):
                if counters:
                    counters[-1][2] = s.value
            else:
                counters.append([s.labels, s.value, None])
        metrics = [_metric_counter(labels, value, created) for labels, value, created in counters]
        name, type_ = name + "_total", _COUNTER
    elif kind == "histogram":
        # prometheus_client yields each series' samples together: buckets, then _count, _sum and
        # _created; a bucket after a non-bucket starts the next series.
        series: list[tuple[dict, dict]] = []
        entry: dict | None = None
        labels: dict = {}
        for s in metric.samples:
            suffix = s.name[len(name):]
            if suffix == "_bucket":
                if entry is None or "count" in entry or "sum" in entry:
                    entry = {"buckets": []}
                    labels = {k: v for k, v in s.labels.items() if k != "le"}
                    series.append((labels, entry))
                le = s.labels["le"]
                entry["buckets"].append((math.inf if le == "+Inf" else float(le), s.value))
            elif entry is not None and suffix in ("_count", "_sum", "_created"):
                entry[suffix[1:]] = s.value
        metrics = [_metric_histogram(labels, entry) for labels, entry in series]
        type_ = _HISTOGRAM
    elif kind in ("gauge", "info", "stateset"):
        if kind == "info":
            name += "_info"
        metrics = [_metric_gauge(s.labels, s.value) for s in metric.samples]
        type_ = _GAUGE
    else:
        metrics = [_metric_untyped(s.labels, s.value) for s in metric.samples]
        type_ = _UNTYPED
    if not metrics:
        return None
    body = _string_field(1, name) + _string_field(2, metric.documentation) + _uint_field(3, type_)
    body += b"".join(_bytes_field(4, m) for m in metrics)
    return _varint(len(body)) + body


def encode_families(metrics: Iterable[Metric]) -> bytes:
    """The delimited protobuf body of ``metrics`` (as ``CollectorRegistry.collect()`` yields them)."""
    return b"".join(encoded for metric in metrics if (encoded := _family(metric)) is not None)
