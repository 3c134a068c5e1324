"""prometheus_client's collected metrics in the Prometheus protobuf exposition format.

Varint-delimited ``io.prometheus.client.MetricFamily`` messages (:data:`CONTENT_TYPE`), with each
counter's and histogram's created timestamp, which only protobuf carries; encoded here rather
than with the ``protobuf`` package (26 ms of cold start) and checked against it in the tests.
Why: docs/metrics.md ("First pushes count").

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
from collections.abc import Iterable, Mapping

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


_LENGTH_KEYS = [_varint(n << 3 | 2) for n in range(16)]  # wire type 2 of fields 0-15
_DOUBLE_KEYS = [_varint(n << 3 | 1) for n in range(16)]


def _bytes_field(number: int, payload: bytes) -> bytes:
    size = len(payload)
    return _LENGTH_KEYS[number] + (_SMALL_VARINTS[size] if size < 128 else _varint(size)) + payload


def _string_field(number: int, text: str) -> bytes:
    return _bytes_field(number, text.encode("utf-8"))


def _double_field(number: int, value: float) -> bytes:
    return _DOUBLE_KEYS[number] + _pack_double(value)


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
    nanos = min(round((seconds - whole) * 1e9), 999_999_999)
    return _uint_field(1, whole) + (_uint_field(2, nanos) if nanos else b"")


_label_cache: dict[tuple, bytes] = {}


def _labels(labels: Mapping[str, str]) -> bytes:
    if not labels:
        return b""
    key = tuple(labels.items())
    encoded = _label_cache.get(key)
    if encoded is None:
        encoded = b"".join(_bytes_field(1, _string_field(1, name) + _string_field(2, value)) for name, value in key)
        if len(_label_cache) < 100_000:  # label sets are bounded by the metrics' own caps
            _label_cache[key] = encoded
    return encoded


_le_tails: dict[str, bytes | None] = {}


def _bucket(le: str, count: float) -> bytes:
    """A ``Bucket`` field of a ``Histogram`` (empty for +Inf, which ``sample_count`` implies, as
    Prometheus' own clients leave it out); a bound's bytes are the same every time."""
    tail = _le_tails.get(le, b"")
    if tail == b"":
        tail = _le_tails[le] = None if le == "+Inf" else _double_field(2, float(le))
    if tail is None:
        return b""
    payload = b"\x08" + _varint(int(count)) + tail
    return b"\x1a" + _SMALL_VARINTS[len(payload)] + payload


def _metric_counter(labels: bytes, value: float, created: float | None) -> bytes:
    body = _double_field(1, value)
    if created is not None:
        body += _bytes_field(3, _created(created))
    return _bytes_field(4, labels + _bytes_field(3, body))


def _metric_gauge(labels: bytes, value: float) -> bytes:
    return _bytes_field(4, labels + _bytes_field(2, _double_field(1, value)))


def _metric_untyped(labels: bytes, value: float) -> bytes:
    return _bytes_field(4, labels + _bytes_field(5, _double_field(1, value)))


def _metric_histogram(labels: bytes, buckets: list[bytes], count: float, total: float, created: float | None) -> bytes:
    body = b"".join([_uint_field(1, int(count)), _double_field(2, total), *buckets])
    if created is not None:
        body += _bytes_field(15, _created(created))
    return _bytes_field(4, labels + _bytes_field(7, body))


def family_name(metric: Metric) -> str:
    """The name a family is exposed under: counters with ``_total``, infos with ``_info``."""
    return metric.name + {"counter": "_total", "info": "_info"}.get(metric.type, "")


def metric_messages(metric: Metric, labels: Mapping[str, str] | None = None) -> list[bytes]:
    """The ``MetricFamily.metric`` fields of one collected family (a framed ``Metric`` message
    per series), each series' labels preceded by ``labels`` (the series labels of a labelled
    metric's child, whose own samples lack them)."""
    name, kind = metric.name, metric.type
    prefix = _labels(labels) if labels else b""
    if kind == "counter":
        # Each series' value, then its _created sample.
        counters: list[list] = []
        for s in metric.samples:
            if s.name.endswith("_created"):
                if counters:
                    counters[-1][2] = s.value
            else:
                counters.append([prefix + _labels(s.labels), s.value, None])
        return [_metric_counter(*counter) for counter in counters]
    if kind == "histogram":
        # prometheus_client yields each series' samples together: buckets, then _count, _sum and
        # _created; a bucket after those starts the next series.
        out: list[bytes] = []
        current: list | None = None  # [label bytes, buckets, count, sum, created, closed]
        bucket_name, count_name, sum_name = name + "_bucket", name + "_count", name + "_sum"
        for s in metric.samples:
            sample = s.name
            if sample == bucket_name:
                if current is None or current[5]:
                    if current is not None:
                        out.append(_metric_histogram(*current[:5]))
                    own = {k: v for k, v in s.labels.items() if k != "le"}
                    current = [prefix + _labels(own), [], 0, 0.0, None, False]
                current[1].append(_bucket(s.labels["le"], s.value))
            elif current is not None:
                current[5] = True
                if sample == count_name:
                    current[2] = s.value
                elif sample == sum_name:
                    current[3] = s.value
                elif sample.endswith("_created"):
                    current[4] = s.value
        if current is not None:
            out.append(_metric_histogram(*current[:5]))
        return out
    if kind in ("gauge", "info", "stateset"):
        return [_metric_gauge(prefix + _labels(s.labels), s.value) for s in metric.samples]
    return [_metric_untyped(prefix + _labels(s.labels), s.value) for s in metric.samples]


def family_message(name: str, documentation: str, kind: str, messages: Iterable[bytes]) -> bytes:
    """One delimited ``MetricFamily`` of ``messages`` (as :func:`metric_messages` makes them);
    empty when there are none. ``kind`` is prometheus_client's type name."""
    body = b"".join(messages)
    if not body:
        return b""
    head = _heads.get((name, kind))
    if head is None:
        head = _heads[(name, kind)] = _string_field(1, name) + _string_field(2, documentation) + _uint_field(3, _TYPES.get(kind, _UNTYPED))
    return _varint(len(head) + len(body)) + head + body


_heads: dict[tuple[str, str], bytes] = {}


_TYPES = {"counter": _COUNTER, "gauge": _GAUGE, "info": _GAUGE, "stateset": _GAUGE, "histogram": _HISTOGRAM}


def encode_families(metrics: Iterable[Metric]) -> bytes:
    """The delimited protobuf body of ``metrics`` (as ``CollectorRegistry.collect()`` yields them)."""
    return b"".join(family_message(family_name(m), m.documentation, m.type, metric_messages(m)) for m in metrics)
