"""Expected-revenue optimisation over a candidate price grid.

For each candidate price p the expected revenue of the quote is p x P(book | p, features);
the recommendation is the candidate that maximises it. Evaluating a grid (rather than solving
for the optimum) keeps every guardrail exact: only admissible prices are ever candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pricing.domain.conversion_model import ConversionModel, ModelFeatures

#: Share of the best expected revenue that bounds the confidence band around the price.
BAND_REVENUE_SHARE = 0.97


@dataclass(frozen=True)
class Candidate:
    price: float
    conversion_prob: float

    @property
    def revenue(self) -> float:
        return self.price * self.conversion_prob


@dataclass(frozen=True)
class Optimum:
    best: Candidate
    band: tuple[float, float]
    evaluated: int


def evaluate(model: ConversionModel, features: ModelFeatures, prices: Sequence[float]) -> list[Candidate]:
    return [Candidate(p, model.probability(p, features)) for p in prices]


def optimise(model: ConversionModel, features: ModelFeatures, prices: Sequence[float]) -> Optimum:
    """The revenue-maximising candidate (ties: the lower price) and its near-optimal band.

    The band spans the candidates whose expected revenue is within 3% of the best: prices a
    revenue manager could pick with almost nothing lost.
    """
    if not prices:
        raise ValueError("no candidate prices")
    candidates = evaluate(model, features, prices)
    best = max(candidates, key=lambda c: (c.revenue, -c.price))
    near = [c.price for c in candidates if c.revenue >= BAND_REVENUE_SHARE * best.revenue]
    return Optimum(best=best, band=(min(near), max(near)), evaluated=len(candidates))
