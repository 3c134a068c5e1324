"""Reading protobuf push bodies in tests: client_model's schema compiled with protoc, and the
samples of a body as ``{(sample name, frozenset of labels): value}``, like the text format's."""

from __future__ import annotations

import functools
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO = Path(__file__).resolve().parent / "proto" / "metrics.proto"


@functools.lru_cache(maxsize=1)
def metrics_pb2():
    """``metrics_pb2`` compiled from tests/support/proto/metrics.proto (grpcio-tools' protoc)."""
    import grpc_tools

    out = tempfile.mkdtemp(prefix="metrics-pb2-")
    include = Path(grpc_tools.__file__).parent / "_proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}", f"-I{include}", f"--python_out={out}", str(PROTO)], check=True
    )
    sys.path.insert(0, out)
    try:
        return importlib.import_module("metrics_pb2")
    finally:
        sys.path.remove(out)


def families(body: bytes) -> list:
    """The ``MetricFamily`` messages of a varint-delimited body."""
    from google.protobuf.internal.decoder import _DecodeVarint32

    pb = metrics_pb2()
    found, pos = [], 0
    while pos < len(body):
        size, pos = _DecodeVarint32(body, pos)
        family = pb.MetricFamily()
        family.ParseFromString(body[pos : pos + size])
        pos += size
        found.append(family)
    return found


def _float_text(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


def samples(body: bytes) -> dict[tuple[str, frozenset], float]:
    """Every sample of a body, named as the text format names them; counters' and histograms'
    created timestamps as ``<name>_created`` (Unix seconds)."""
    pb = metrics_pb2()
    out: dict[tuple[str, frozenset], float] = {}
    for family in families(body):
        for metric in family.metric:
            labels = {p.name: p.value for p in metric.label}
            key = frozenset(labels.items())
            if family.type == pb.COUNTER:
                out[(family.name, key)] = metric.counter.value
                if metric.counter.HasField("created_timestamp"):
                    ts = metric.counter.created_timestamp
                    out[(family.name.removesuffix("_total") + "_created", key)] = ts.seconds + ts.nanos / 1e9
            elif family.type == pb.HISTOGRAM:
                h = metric.histogram
                out[(family.name + "_count", key)] = h.sample_count
                out[(family.name + "_sum", key)] = h.sample_sum
                for bucket in h.bucket:
                    le = frozenset({**labels, "le": _float_text(bucket.upper_bound)}.items())
                    out[(family.name + "_bucket", le)] = bucket.cumulative_count
                out[(family.name + "_bucket", frozenset({**labels, "le": "+Inf"}.items()))] = h.sample_count
                if h.HasField("created_timestamp"):
                    ts = h.created_timestamp
                    out[(family.name + "_created", key)] = ts.seconds + ts.nanos / 1e9
            elif family.type == pb.GAUGE:
                out[(family.name, key)] = metric.gauge.value
            else:
                out[(family.name, key)] = metric.untyped.value
    return out


def value(body: bytes, name: str, **labels: object) -> float | None:
    return samples(body).get((name, frozenset((k, str(v)) for k, v in labels.items())))
