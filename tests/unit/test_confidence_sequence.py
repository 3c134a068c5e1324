"""Anytime-valid bounds of a mean by betting (pricing.domain.confidence_sequence): numpy, no AWS."""

from __future__ import annotations

import random

import pytest

from pricing.domain.confidence_sequence import lower_bound, upper_bound


def revenues(rng: random.Random, n: int, prices: list[float], rate: float) -> list[float]:
    return [p if rng.random() < rate else 0.0 for p in (rng.choice(prices) for _ in range(n))]


@pytest.mark.parametrize("rate", [0.05, 0.4])
def test_the_bounds_cover_the_mean_at_every_sample_size_together(rate):
    # The bound on all n values is the running intersection over every prefix, so a miss there
    # is a miss on some prefix: under alpha = 5% it happens in at most about 5% of sequences.
    rng = random.Random(int(rate * 100))
    prices = [80.0, 100.0, 120.0]
    mean = rate * sum(prices) / len(prices)
    runs = 400
    low = sum(lower_bound(revenues(rng, 150, prices, rate), 120.0, 0.05) > mean for _ in range(runs))
    high = sum(upper_bound(revenues(rng, 150, prices, rate), 120.0, 0.05, horizon=30) < mean for _ in range(runs))
    assert low / runs <= 0.05 and high / runs <= 0.05


def test_no_value_bounds_nothing_and_one_value_little():
    assert lower_bound([], 100.0, 0.05) == 0.0 and upper_bound([], 100.0, 0.05) == 100.0
    assert lower_bound([100.0], 100.0, 0.05) < 50.0 and upper_bound([0.0], 100.0, 0.05) > 50.0
    assert lower_bound([10.0] * 5, 0.0, 0.05) == 0.0  # no scale: no bound


def test_no_booking_gives_a_zero_lower_bound_and_an_upper_bound_that_shrinks():
    assert lower_bound([0.0] * 200, 100.0, 0.05) == 0.0
    uppers = [upper_bound([0.0] * n, 100.0, 0.04, horizon=30) for n in (10, 20, 40, 80)]
    assert uppers == sorted(uppers, reverse=True) and uppers[-1] < 10.0
    # Close to the exact bound for no booking in 20 (1 - 0.04^(1/20) = 14.9% of the scale).
    assert 14.9 < uppers[1] < 22.0


def test_all_values_at_one_price():
    lo, hi = lower_bound([90.0] * 30, 90.0, 0.05), upper_bound([90.0] * 30, 90.0, 0.05)
    assert 0.0 < lo < 90.0 and hi == pytest.approx(90.0)
    # Values above the scale are clipped to it, never counted beyond it.
    assert lower_bound([200.0] * 30, 90.0, 0.05) == pytest.approx(lo)


def test_the_bounds_narrow_with_more_values_and_a_horizon_narrows_them_there():
    rng = random.Random(3)
    values = revenues(rng, 800, [100.0], 0.5)
    assert lower_bound(values[:100], 100.0, 0.05) < lower_bound(values, 100.0, 0.05) < 50.0
    assert upper_bound(values[:100], 100.0, 0.05) > upper_bound(values, 100.0, 0.05) > 50.0
    # Bets tuned to a horizon narrow there sooner than bets spread over every sample size.
    few = ([100.0] + [0.0] * 6) * 5  # a holdback's 5 bookings in 35 quotes
    assert upper_bound(few, 100.0, 0.04, horizon=30) < upper_bound(few, 100.0, 0.04) - 2.0
    assert lower_bound(values[:500], 100.0, 0.01, horizon=500) > lower_bound(values[:500], 100.0, 0.01) + 2.0
