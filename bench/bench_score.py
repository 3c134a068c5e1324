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
from typing import Callable

from bench.report import Figure, Target
from bench.stack import BENCH_PROPERTY, AwsStack, pushgateway, pushgateway_available, score_body
from bench.stats import interleaved, median, paired_ratios, percentile
from support.apigw_events import FakeContext, rest_event

WARM_TARGET = Target("ratio", "<=", 2.0)
PUSH_TARGET = Target("value", "<=", 1.0)  # milliseconds of p50 overhead
PUSH_SIZE_TARGET = Target("ratio", "<=", 1.5)

SCORE_ENV = {
    "PUSHGATEWAY_URL": "",  # push off: figure 2 turns it on explicitly
    "SENTRY_DSN": "",
    "ENVIRONMENT": "bench",
    "AWS_LAMBDA_FUNCTION_NAME": "pricing-score-bench",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "POWERTOOLS_SERVICE_NAME": "pricing",
    "POWERTOOLS_LOG_LEVEL": "INFO",
}


def load_score_handler(stack: AwsStack):
    """Import ScoreFunction's handler with the function's environment pointed at ``stack``.

    Settings are read once at import, so this must run before anything else imports the app.
    Raises RuntimeError when the warm path would not price by the deployed model.
    """
    os.environ.update(stack.env())
    os.environ.update(SCORE_ENV)
    from pricing.settings import get_settings

    get_settings.cache_clear()
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
        figures.append(Figure(
            key=f"warm_score_p{q}", title=f"1. warm /score p{q}", unit="ms",
            value=median(full), baseline=median(floor), baseline_name="floor",
            ratio=median(paired_ratios(full, floor)), target=target, runs=rounds,
            note=(f"full handler path (event, Mangum, FastAPI, pricing by model, metrics; push off) "
                  f"vs bare FastAPI+Mangum returning a constant quote; {rounds} interleaved blocks "
                  f"of {block} invocations") if q == 50 else "",
        ))
    return figures


def push_overhead(handler: Callable, rounds: int = 9, block: int = 200) -> list[Figure]:
    """Figure 2: the same invocation with the push to a real Pushgateway on and off.

    Both sides call the undecorated handler and then ``push_invocation_metrics`` exactly as the
    ``pushes_metrics`` decorator does; only the settings given to the push differ.
    """
    if not pushgateway_available():
        return [Figure.waiting("push_overhead_p50", "2. push overhead p50",
                               "prometheus-pushgateway is not installed", PUSH_TARGET)]
    from pricing.observability.push import last_push_stats, push_invocation_metrics
    from pricing.settings import get_settings

    inner = handler.__wrapped__
    context = FakeContext()
    body = score_body()
    off = get_settings()
    with pushgateway() as gateway:
        on = dataclasses.replace(off, pushgateway_url=gateway.url)

        def invocation(settings):
            def call(event):
                try:
                    return inner(event, context)
                finally:
                    push_invocation_metrics(request_id=event["requestContext"]["requestId"],
                                            settings=settings, function="score")
            return call

        variants = {
            "push": lambda: time_block(invocation(on), body, block),
            "no push": lambda: time_block(invocation(off), body, block),
        }
        for call in variants.values():
            call()
        runs = interleaved(variants, rounds)
        stats = last_push_stats()
        if not stats["ok"]:
            raise RuntimeError(f"the last push failed: {stats}")
    figures = []
    for q, target in ((50, PUSH_TARGET), (99, None)):
        pushed = [percentile(ts, q) * 1000 for ts in runs["push"]]
        plain = [percentile(ts, q) * 1000 for ts in runs["no push"]]
        overhead = [a - b for a, b in zip(pushed, plain)]
        figures.append(Figure(
            key=f"push_overhead_p{q}", title=f"2. push overhead p{q}", unit="ms",
            value=median(overhead), baseline=median(plain), baseline_name="push off",
            ratio=median(paired_ratios(pushed, plain)), target=target, runs=rounds,
            note=(f"value = p50(push on) - p50(push off) per block, to a real Pushgateway over one "
                  f"kept-alive connection; {stats['requests']} requests, {stats['bytes']} bytes in the "
                  f"last push") if q == 50 else "",
        ))
    return figures


def _serve(metrics, property_id: str) -> None:
    """The metric calls one /score priced by a model makes (see ScoringService.score)."""
    metrics.track_cache_hit()
    metrics.track_model_prediction(property_id=property_id, model_type="conversion", duration=0.0004)
    metrics.track_score_request(pricing_method="ml_elasticity", duration=0.002)
    metrics.track_request(method="POST", endpoint="/score", status_code=200, duration=0.003)


def push_size(properties: int = 5_000, repeats: int = 3) -> list[Figure]:
    """Figure 7: bytes of one invocation's push after 1 and after ``properties`` distinct properties.

    A fresh container (registry and pusher of its own) serves one property per invocation and
    pushes after each, as the decorator does; the push after the first and after the last are
    compared. Repeated with fresh containers; the median is reported.
    """
    key, title = "push_bytes", f"7. push bytes after {properties:,} properties"
    if not pushgateway_available():
        return [Figure.waiting(key, title, "prometheus-pushgateway is not installed", PUSH_SIZE_TARGET)]
    from pricing.observability.metrics import PricingMetrics
    from pricing.observability.push import MetricsPusher
    from pricing.settings import get_settings

    firsts, lasts, requests = [], [], []
    with pushgateway() as gateway:
        settings = dataclasses.replace(get_settings(), pushgateway_url=gateway.url)
        for r in range(repeats):
            metrics = PricingMetrics(max_property_labels=settings.metrics_max_property_labels)
            pusher = MetricsPusher(metrics, settings, function="score", instance=f"bench-size-{r}")
            try:
                for i in range(properties):
                    _serve(metrics, f"bench-p{i:05d}")
                    stats = pusher.push()
                    if not stats.ok:
                        raise RuntimeError(f"push {i} failed: {stats}")
                    if i == 0:
                        firsts.append(stats.bytes)
                lasts.append(stats.bytes)
                requests.append(stats.requests)
            finally:
                pusher.close()
    return [Figure(
        key=key, title=title, unit="B", value=median(lasts), baseline=median(firsts),
        baseline_name="after 1", ratio=median(paired_ratios(lasts, firsts)), target=PUSH_SIZE_TARGET,
        runs=repeats,
        note=(f"one push per invocation, one property per invocation; property labels capped at "
              f"{settings.metrics_max_property_labels} per container (later ones count as __other__); "
              f"{median(requests):.0f} requests in the last push"),
    )]
