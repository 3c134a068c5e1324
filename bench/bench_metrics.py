"""Cost of pushing metrics after every invocation, against a real local Pushgateway.

Prints, as a table:

* push overhead per invocation, p50/p99: the same score-like invocation (the metrics one /score
  request records) with the push on and off, and the push alone, back to back and with the
  invocations 5 ms apart, with how many pushes were written (every one must be);
* push bytes per invocation after 1 and after 5,000 distinct properties served by the container,
  with the per-container property cap as configured (200), pushed to the Pushgateway, and with the
  cap raised out of the way (10,000; rendered only, so only the per-property grouping bounds the
  size); the ratio must stay <= 1.5;
* the time per push after those 5,000 properties: by default the Pushgateway checks every push
  for consistency against everything it holds, so its cost grows with the series it holds (the
  reason for the property cap and for pruning dead containers' groups); with
  ``--push.disable-consistency-check`` it stays flat. Both are measured;
* for comparison, the naive way: the whole registry in one group with prometheus_client's
  ``push_to_gateway`` (a new connection per push).

Run with ``make bench-metrics``. Needs the pinned stack's ``prometheus-pushgateway`` (``make setup``).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers" / "shared"), str(ROOT / "tests"), str(ROOT)]

from prometheus_client import push_to_gateway  # noqa: E402

from pricing.observability.metrics import PricingMetrics  # noqa: E402
from pricing.observability.push import MetricsPusher  # noqa: E402
from pricing.settings import Settings  # noqa: E402
from support.promstack import Pushgateway  # noqa: E402

RATIO_LIMIT = 1.5
PROPERTIES = 5_000
TIMED = 2_000


def invocation(m: PricingMetrics, prop: str) -> None:
    """What one /score invocation records."""
    m.track_competitor_fetch(property_id=prop, status="success", staleness_seconds=3600)
    m.track_model_prediction(property_id=prop, model_type="conversion", duration=0.0021)
    m.track_cache_hit()
    m.set_models_loaded(12)
    m.track_score_request(pricing_method="ml_elasticity", duration=0.0153)
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.0187)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def overhead(url: str, pause: float = 0.0) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """p50/p99 of the invocation with the push off and on and of the push alone, and what became
    of the pushes (written, not written, failed), through the container's own kind of pusher:
    each push written before the invocation returns, its answers read by the next one."""
    settings = Settings(pushgateway_url=url, function_name="score")
    m = PricingMetrics()
    pusher = MetricsPusher(m, settings, instance=f"bench-overhead-{int(pause * 1000)}ms")
    off, on, push_only = [], [], []
    for i in range(200):  # warm: connection open, 50 properties known
        invocation(m, f"prop-{i % 50}")
        pusher.push()
    written_before, unwritten_before = pusher.pushes, pusher.unwritten
    for i in range(TIMED):
        prop = f"prop-{i % 50}"
        start = time.perf_counter()
        invocation(m, prop)
        off.append(time.perf_counter() - start)
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        invocation(m, prop)
        mid = time.perf_counter()
        pusher.push(f"req-{i}")
        on.append(time.perf_counter() - start)
        push_only.append(time.perf_counter() - mid)
        if pause:
            time.sleep(pause)
    pusher.flush(5.0)
    failures = sum(
        m.get_sample_value("pricing_metrics_push_failures_total", {"reason": r}) or 0
        for r in ("timeout", "connection", "http_4xx", "http_5xx", "backoff")
    )
    counts = {
        "invocations": TIMED,
        "written": pusher.pushes - written_before - 1,  # - the flush's
        "unwritten": pusher.unwritten - unwritten_before,
        "failed": int(failures),
    }
    pusher.close()
    rows = {
        name: (pct(v, 0.5), pct(v, 0.99))
        for name, v in (("invocation, push off", off), ("invocation, push on", on), ("push alone", push_only))
    }
    return rows, counts


class Rendered:
    """A connection that only counts: the bytes a push would send, without a Pushgateway."""

    def request(self, method, path, body, deadline):
        return 200, b""

    def close(self):
        pass


def bytes_after(url: str, cap: int, send: bool) -> tuple[float, float, int, float]:
    """Bytes of the first push, of the push after 5,000 properties, labels kept, last push p50."""
    settings = Settings(pushgateway_url=url, function_name="score", metrics_max_property_labels=cap)
    m = PricingMetrics(max_property_labels=cap)
    # Waiting for each push's answers: the push times below are the Pushgateway's too.
    pusher = MetricsPusher(m, settings, instance=f"bench-bytes-{cap}", wait_for_answers=True, transport=None if send else Rendered())
    invocation(m, "prop-0")
    first = pusher.push().bytes
    for i in range(1, PROPERTIES - 1):
        invocation(m, f"prop-{i}")
        pusher.push()
    # The 5,000th distinct property; then already-known ones, the usual case.
    invocation(m, f"prop-{PROPERTIES - 1}")
    largest = pusher.push().bytes
    seconds = []
    for i in range(100):
        invocation(m, f"prop-{i}")
        stats = pusher.push()
        assert stats.ok, "push failed"
        largest = max(largest, stats.bytes)
        seconds.append(stats.seconds)
    pusher.close()
    return first, largest, len(m.groups()), statistics.median(seconds)


def naive(url: str) -> tuple[int, int, float]:
    """Whole registry in one group, prometheus_client's push (new connection each time)."""
    from prometheus_client import generate_latest

    m = PricingMetrics(max_property_labels=10_000)
    invocation(m, "prop-0")
    size_one = len(generate_latest(m.registry))
    for i in range(1, PROPERTIES):
        invocation(m, f"prop-{i}")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        push_to_gateway(url.removeprefix("http://"), job="pricing-naive", registry=m.registry, timeout=30)
        times.append(time.perf_counter() - start)
    return size_one, len(generate_latest(m.registry)), statistics.median(times)


UNCHECKED = ["--push.disable-consistency-check"]


PUSH_P50_TARGET_MS = 0.5
PACINGS = (("back to back", 0.0), ("5 ms apart", 0.005))


def main() -> int:
    overheads = {}
    with Pushgateway(checked=True) as pgw:
        for name, pause in PACINGS:
            overheads[(name, "checked")] = overhead(pgw.url, pause)
        capped = bytes_after(pgw.url, 200, send=True)
        uncapped = bytes_after(pgw.url, 10_000, send=False)
    with Pushgateway(extra_args=UNCHECKED) as pgw:
        for name, pause in PACINGS:
            overheads[(name, "unchecked")] = overhead(pgw.url, pause)
        capped_unchecked = bytes_after(pgw.url, 200, send=True)
    with Pushgateway(checked=True) as pgw:
        naive_one, naive_many, naive_time = naive(pgw.url)

    ok = True
    print(
        f"\nPush overhead per invocation ({TIMED} invocations over 50 properties, keep-alive connection,"
        " real Pushgateway; unchecked: run with --push.disable-consistency-check)"
    )
    print(f"  {'':34} {'p50 ms':>8} {'p99 ms':>8} {'push p50':>9} {'written':>8} {'unwritten':>9} {'failed':>7}")
    for (pacing, gateway), (rows, counts) in overheads.items():
        p50 = rows["invocation, push on"][0] - rows["invocation, push off"][0]
        p99 = rows["invocation, push on"][1] - rows["invocation, push off"][1]
        every = counts["written"] == counts["invocations"] and not counts["unwritten"] and not counts["failed"]
        if gateway == "unchecked":  # as production runs it (README "Deploy")
            ok &= p50 * 1e3 <= PUSH_P50_TARGET_MS and every
        print(
            f"  {'added, ' + pacing + ', ' + gateway:34} {p50 * 1e3:8.3f} {p99 * 1e3:8.3f} "
            f"{rows['push alone'][0] * 1e3:9.3f} {counts['written']:8d} {counts['unwritten']:9d} "
            f"{counts['failed']:7d}"
        )
    print(
        f"  target (unchecked, as production runs it): added p50 <= {PUSH_P50_TARGET_MS} ms with every push"
        " written and none failed; checked: informative (back to back, its consistency check cannot answer"
        " pushes as fast as they come, and the timed-out ones are counted)"
    )

    print(f"\nPush bytes per invocation after 1 and after {PROPERTIES:,} distinct properties served")
    print(f"  {'':38} {'after 1':>9} {'after 5k':>9} {'ratio':>7} {'labels':>7} {'push p50 ms':>12}")
    for name, (one, many, labels, seconds) in (
        ("per-property groups, cap 200", capped),
        ("  same, Pushgateway unchecked", capped_unchecked),
        ("per-property groups, cap 10,000 *", uncapped),
    ):
        ratio = many / one
        ok &= ratio <= RATIO_LIMIT
        when = f"{'-':>12}" if name.endswith("*") else f"{seconds * 1e3:12.2f}"
        print(f"  {name:38} {one:9.0f} {many:9.0f} {ratio:7.2f} {labels:7d} {when}")
    print(
        f"  {'naive: whole registry, one group':38} {naive_one:9d} {naive_many:9d} "
        f"{naive_many / naive_one:7.1f} {'-':>7} {naive_time * 1e3:12.1f}"
    )
    print("  * rendered, not sent: 5,000 groups of per-property series make every push slow, because the")
    print("    Pushgateway checks each push against all it holds; the cap keeps that bounded.")
    print(f"\nratio limit {RATIO_LIMIT} and push overhead target: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
