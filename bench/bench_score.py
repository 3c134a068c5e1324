"""Figures 1, 2 and 7: warm /score against the framework floor, the cost of the metrics push, and
the size of one push after many properties.

The score handler is imported once, in this process, against the bench's moto stack with the
bench model deployed, exactly as a warm container holds it: the first request loads the model
and every measured request finds it in the cache. Each variant runs in blocks of invocations,
the blocks interleaved, and each figure is the median over blocks.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from bench.report import Figure, Target
from bench.stack import AwsStack, pushgateway, pushgateway_available, score_body
from bench.stats import interleaved, median, paired_ratios, percentile
from support.apigw_events import FakeContext, rest_event

WARM_TARGET = Target("ratio", "<=", 2.0)
PUSH_TARGET = Target("value", "<=", 0.5)  # milliseconds of p50 overhead, every push written
PUSH_SIZE_TARGET = Target("ratio", "<=", 1.5)

SCORE_ENV = {
    "PUSHGATEWAY_URL": "",  # push off: figure 2 turns it on explicitly
    "SENTRY_DSN": "",
    "ENVIRONMENT": "bench",
    "AWS_LAMBDA_FUNCTION_NAME": "pricing-score-bench",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "POWERTOOLS_SERVICE_NAME": "pricing",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    # The warm figure is the model's path: with the default holdback one quote in twenty is
    # priced by rules, and the check below would refuse a run whose first quote was one of them.
    "HOLDBACK_RATE": "0",
}


def load_score_handler(stack: AwsStack):
    """Import ScoreFunction's handler with the function's environment pointed at ``stack``.

    Settings are read once at import, so this must run before anything else imports the app.
    Raises RuntimeError when the warm path would not price by the deployed model.
    """
    os.environ.update(stack.env())
    os.environ.update(SCORE_ENV)
    import score_handler

    status, body = invoke_once(score_handler.handler, score_body())
    method = (body.get("safety") or {}).get("pricing_method") if isinstance(body, dict) else None
    if status != 200 or method != "ml_elasticity":
        raise RuntimeError(f"warm /score does not price by the bench model: {status} {str(body)[:300]}")
    return score_handler.handler


def invoke_once(handler: Callable, body: dict) -> tuple[int, dict]:
    import json

    result = handler(rest_event("POST", "/score", body), FakeContext())
    return result["statusCode"], json.loads(result["body"])


def time_block(call: Callable[[dict], object], body: dict, n: int) -> list[float]:
    """Seconds per call of ``call(event)`` over ``n`` fresh events (built before the clock starts)."""
    events = [rest_event("POST", "/score", body) for _ in range(n)]
    times = []
    clock = time.perf_counter
    for event in events:
        started = clock()
        call(event)
        times.append(clock() - started)
    return times


def warm_score(handler: Callable, rounds: int = 9, block: int = 250) -> list[Figure]:
    """Figure 1: p50 and p99 of the full handler against the floor, per block, interleaved."""
    from bench import floor_handler

    body, context = score_body(), FakeContext()
    variants = {
        "score": lambda: time_block(lambda e: handler(e, context), body, block),
        "floor": lambda: time_block(lambda e: floor_handler.handler(e, context), body, block),
    }
    for call in variants.values():  # warm both (first-request lazy work on either side)
        call()
    runs = interleaved(variants, rounds)
    figures = []
    for q, target in ((50, WARM_TARGET), (99, None)):
        full = [percentile(ts, q) * 1000 for ts in runs["score"]]
        floor = [percentile(ts, q) * 1000 for ts in runs["floor"]]
        figures.append(
            Figure(
                key=f"warm_score_p{q}",
                title=f"1. warm /score p{q}",
                unit="ms",
                value=median(full),
                baseline=median(floor),
                baseline_name="floor",
                ratio=median(paired_ratios(full, floor)),
                target=target,
                runs=rounds,
                note=(
                    f"full handler path (event, Mangum, FastAPI, pricing by model, metrics; push off) "
                    f"vs bare FastAPI+Mangum returning a constant quote; {rounds} interleaved blocks "
                    f"of {block} invocations"
                )
                if q == 50
                else "",
            )
        )
    return figures


UNCHECKED = "--push.disable-consistency-check"


def push_overhead(handler: Callable, rounds: int = 9, block: int = 200, *, checked: bool = False) -> list[Figure]:
    """Figure 2: the same invocation with the push to a real Pushgateway on and off.

    Both sides call the undecorated handler and then ``push_invocation_metrics`` exactly as the
    ``pushes_metrics`` decorator does; only the settings given to the push differ. The target
    applies to the Pushgateway as production runs it (``--push.disable-consistency-check``, see
    README "Deploy"), and only if every push was written and none failed: a push skipped or
    refused would make the overhead look small. ``checked`` runs the Pushgateway with its
    default consistency check instead, whose cost per push grows with all it holds
    (informative, no target).
    """
    key = "push_overhead_checked" if checked else "push_overhead"
    suffix = " (gateway checked)" if checked else ""
    if not pushgateway_available():
        return [
            Figure.waiting(
                f"{key}_p50",
                f"2. push overhead p50{suffix}",
                "the pinned prometheus-pushgateway is not installed (make setup)",
                None if checked else PUSH_TARGET,
            )
        ]
    from pricing.api import score_app
    from pricing.observability.metrics import METRICS, PUSH_FAILURE_REASONS
    from pricing.observability.push import last_push_stats, push_invocation_metrics

    inner = handler.__wrapped__
    context = FakeContext()
    body = score_body()
    off = score_app.settings  # the container's own: push off

    def failures() -> float:
        return sum(
            METRICS.get_sample_value("pricing_metrics_push_failures_total", {"reason": r}) or 0
            for r in PUSH_FAILURE_REASONS
            if r != "prune"
        )

    with pushgateway([] if checked else [UNCHECKED]) as gateway:
        on = dataclasses.replace(off, pushgateway_url=gateway.url)

        def invocation(settings):
            def call(event):
                try:
                    return inner(event, context)
                finally:
                    push_invocation_metrics(request_id=event["requestContext"]["requestId"], settings=settings, function="score")

            return call

        variants = {
            "push": lambda: time_block(invocation(on), body, block),
            "no push": lambda: time_block(invocation(off), body, block),
        }
        for call in variants.values():
            call()
        before, failed_before = last_push_stats(), failures()
        runs = interleaved(variants, rounds)
        stats = last_push_stats()
        written = stats["pushes"] - before["pushes"]
        unwritten = stats["unwritten"] - before["unwritten"]
        failed = failures() - failed_before
    every = written == rounds * block and not unwritten and not failed
    figures = []
    for q, target in ((50, None if checked else PUSH_TARGET), (99, None)):
        if checked and q == 99:
            continue
        pushed = [percentile(ts, q) * 1000 for ts in runs["push"]]
        plain = [percentile(ts, q) * 1000 for ts in runs["no push"]]
        overhead = [a - b for a, b in zip(pushed, plain)]
        note = ""
        if q == 50:
            note = (
                f"value = p{q}(push on) - p{q}(push off) per block, back to back; pushes written "
                f"{written} of {rounds * block}, not written {unwritten}, failed {failed:.0f}; "
                f"{stats['requests']} PUTs, {stats['bytes']} bytes per push over one kept-alive connection"
            )
            note += "; Pushgateway with its default consistency check" if checked else "; Pushgateway run with " + UNCHECKED
        value = median(overhead)
        if target is not None and not every:
            value = float("inf")  # a skipped or failed push is no measurement of the overhead
        figures.append(
            Figure(
                key=f"{key}_p{q}",
                title=f"2. push overhead p{q}{suffix}",
                unit="ms",
                value=value,
                baseline=median(plain),
                baseline_name="push off",
                ratio=median(paired_ratios(pushed, plain)),
                target=target,
                runs=rounds,
                note=note,
            )
        )
    return figures


def push_size() -> list[Figure]:
    """Figure 7: bytes of one invocation's push after 1 and after 5,000 distinct properties.

    Measured by ``bench.bench_metrics.bytes_after`` (``make bench-metrics``), with this
    container's property cap, pushing to a real Pushgateway. The byte counts are deterministic:
    one run.
    """
    from bench import bench_metrics
    from pricing.settings import Settings

    key, title = "push_bytes", f"7. push bytes after {bench_metrics.PROPERTIES:,} properties"
    if not pushgateway_available():
        return [Figure.waiting(key, title, "the pinned prometheus-pushgateway is not installed (make setup)", PUSH_SIZE_TARGET)]
    cap = Settings.from_env().metrics_max_property_labels
    with pushgateway() as gateway:
        first, largest, labels, seconds = bench_metrics.bytes_after(gateway.url, cap, send=True)
    return [
        Figure(
            key=key,
            title=title,
            unit="B",
            value=largest,
            baseline=first,
            baseline_name="after 1",
            ratio=largest / first,
            target=PUSH_SIZE_TARGET,
            runs=1,
            note=(
                f"bench_metrics.bytes_after: one push per invocation, the largest push after {bench_metrics.PROPERTIES:,} "
                f"properties vs the first; {labels} property labels kept (cap {cap}, the rest count as __other__); "
                f"push p50 then {seconds * 1000:.2f} ms"
            ),
        )
    ]
