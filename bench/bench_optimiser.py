"""Figure 4: prices the optimiser evaluates per second on a 200-point grid.

The baseline is the least a logistic model can cost in Python: ``1 / (1 + exp(-(a + b p)))``
over the same 200 prices, nothing else. The ratio says how much of that rate the real
optimiser keeps while computing the full feature row, the revenue, the tie-break and the band.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from bench.report import Figure
from bench.stack import BENCH_MODEL
from bench.stats import interleaved, median, paired_ratios
from pricing.domain.conversion_model import ModelFeatures
from pricing.domain.optimiser import optimise

GRID_POINTS = 200


def grid(points: int = GRID_POINTS) -> list[float]:
    lo, hi = BENCH_MODEL.trusted_range
    step = (hi - lo) / (points - 1)
    return [round(lo + i * step, 2) for i in range(points)]


def rate(fn: Callable[[], object], prices_per_call: int, seconds: float = 0.2) -> float:
    """Prices per second of ``fn`` over about ``seconds`` of calls."""
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls * prices_per_call / elapsed


def optimiser_rate(rounds: int = 9) -> list[Figure]:
    prices = grid()
    features = ModelFeatures(lead_days=28, occupancy=0.8, weekend=False, refundable=False, los=2)
    a, b = BENCH_MODEL.coefficients["intercept"], BENCH_MODEL.coefficients["price_ratio"] / BENCH_MODEL.reference_price
    exp = math.exp

    def bare() -> list[float]:
        return [1.0 / (1.0 + exp(-(a + b * p))) for p in prices]

    variants = {
        "optimise": lambda: rate(lambda: optimise(BENCH_MODEL, features, prices), len(prices)),
        "bare logistic": lambda: rate(bare, len(prices)),
    }
    for run in variants.values():
        run()
    runs = interleaved(variants, rounds)
    return [
        Figure(
            key="optimiser_rate",
            title=f"4. optimiser, {GRID_POINTS}-point grid",
            unit="prices/s",
            value=median(runs["optimise"]),
            baseline=median(runs["bare logistic"]),
            baseline_name="bare logistic",
            ratio=median(paired_ratios(runs["optimise"], runs["bare logistic"])),
            runs=rounds,
            note=(
                "optimise(): model probability, revenue, tie-break and 97% band per grid; the baseline "
                "is a bare sigmoid(a + b*price) list comprehension over the same prices"
            ),
        )
    ]
