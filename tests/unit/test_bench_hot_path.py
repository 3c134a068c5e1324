"""The /score hot path was made cheaper without changing a single bit of its results.

``ConversionModel.probabilities``, ``optimise`` and ``Guardrails.candidate_grid`` are checked
here against the plain definitions they replaced (one ``probability`` per candidate, ``max`` over
Candidate objects, ``enforce`` on every grid point), over seeded random models, quotes, bounds and
grids: equal floats, not approximately equal ones.
"""

from __future__ import annotations

import math
import random

import pytest

from pricing.domain.conversion_model import FEATURE_NAMES, ConversionModel, ModelFeatures
from pricing.domain.guardrails import Guardrails
from pricing.domain.optimiser import BAND_REVENUE_SHARE, Candidate, evaluate, optimise


def reference_optimum(model, features, prices):
    candidates = [Candidate(p, model.probability(p, features)) for p in prices]
    best = max(candidates, key=lambda c: (c.revenue, -c.price))
    near = [c.price for c in candidates if c.revenue >= BAND_REVENUE_SHARE * best.revenue]
    return best, (min(near), max(near)), len(candidates)


def random_case(rng: random.Random):
    coefficients = {name: rng.uniform(-4, 4) for name in FEATURE_NAMES if rng.random() < 0.9}
    coefficients["price_ratio"] = -rng.uniform(0.01, 6)
    reference = rng.uniform(20, 900)
    model = ConversionModel("p", "v", coefficients, reference, (reference * 0.5, reference * 2))
    features = ModelFeatures(
        lead_days=rng.choice([0, 1, 30, 400, rng.uniform(0, 800)]),
        occupancy=rng.uniform(0, 1),
        weekend=rng.random() < 0.5,
        refundable=rng.random() < 0.5,
        los=rng.randint(1, 40),
    )
    n = rng.choice([1, 2, 9, 101, 200])
    prices = sorted(round(rng.uniform(reference * 0.3, reference * 3), 2) for _ in range(n))
    if n > 2 and rng.random() < 0.3:
        prices[1] = prices[0]  # duplicate prices: the tie must resolve the same way
    return model, features, prices


@pytest.mark.parametrize("seed", range(20))
def test_grid_probabilities_equal_one_by_one_probabilities(seed):
    rng = random.Random(seed)
    for _ in range(50):
        model, features, prices = random_case(rng)
        assert model.probabilities(prices, features) == [model.probability(p, features) for p in prices]


@pytest.mark.parametrize("seed", range(20))
def test_optimise_equals_the_plain_definition(seed):
    rng = random.Random(1000 + seed)
    for _ in range(50):
        model, features, prices = random_case(rng)
        got = optimise(model, features, prices)
        best, band, evaluated = reference_optimum(model, features, prices)
        assert (got.best, got.band, got.evaluated) == (best, band, evaluated)


def test_revenue_ties_go_to_the_lower_price():
    flat = ConversionModel("p", "v", {"intercept": 0.0, "price_ratio": -1e-300}, 100.0, (50.0, 200.0))
    features = ModelFeatures(lead_days=10, occupancy=0.5)
    # Equal revenue cannot be built from a real model; equal prices can, and the first one wins.
    got = optimise(flat, features, [100.0, 100.0, 90.0])
    assert got.best == reference_optimum(flat, features, [100.0, 100.0, 90.0])[0]
    assert evaluate(flat, features, [100.0])[0] == Candidate(100.0, flat.probability(100.0, features))


@pytest.mark.parametrize("seed", range(10))
def test_candidate_grid_equals_enforcing_every_point(seed):
    rng = random.Random(2000 + seed)
    for _ in range(100):
        lo = rng.choice([0.0001, 0.004, rng.uniform(0, 50), rng.uniform(50, 500)])
        hi = lo + rng.choice([0.0, 0.003, rng.uniform(0, 10), rng.uniform(10, 1000)])
        lo_bound = rng.choice([None, None, rng.uniform(0, 600)])
        hi_bound = rng.choice([None, None, (lo_bound or 0) + rng.uniform(0.01, 600)])
        guardrails = Guardrails(lo_bound, hi_bound)
        points = rng.choice([1, 2, 9, 101, 200])
        lo2 = lo if lo_bound is None else max(lo, lo_bound)
        hi2 = hi if hi_bound is None else min(hi, hi_bound)
        if lo2 > hi2:
            expected = ()
        elif points <= 1 or math.isclose(lo2, hi2):
            expected = (guardrails.enforce(lo2)[0],)
        else:
            step = (hi2 - lo2) / (points - 1)
            expected = tuple(sorted({guardrails.enforce(lo2 + i * step)[0] for i in range(points)}))
        assert guardrails.candidate_grid(lo, hi, points) == expected
