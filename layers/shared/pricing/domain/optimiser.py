"""Expected-revenue optimisation over a candidate price grid.

For each candidate price p the expected revenue of the quote is p x P(book | p, features);
the recommendation is the candidate that maximises it. Evaluating a grid (rather than solving
for the optimum) keeps every guardrail exact: only admissible prices are ever candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    return [Candidate(p, prob) for p, prob in zip(prices, model.probabilities(prices, features))]


def optimise(model: ConversionModel, features: ModelFeatures, prices: Sequence[float]) -> Optimum:
    """The revenue-maximising candidate (ties: the lower price) and its near-optimal band.

    The band spans the candidates whose expected revenue is within 3% of the best: prices a
    revenue manager could pick with almost nothing lost.
    """
    if not prices:
        raise ValueError("no candidate prices")
    # The same comparisons as over ``evaluate``'s candidates, on plain lists: this runs for every
    # /score, and building and querying ~100 Candidate objects cost as much as the model itself.
    probabilities = model.probabilities(prices, features)
    revenues = [p * prob for p, prob in zip(prices, probabilities)]
    i = max(range(len(prices)), key=lambda k: (revenues[k], -prices[k]))
    best = Candidate(prices[i], probabilities[i])
    near = [p for p, revenue in zip(prices, revenues) if revenue >= BAND_REVENUE_SHARE * best.revenue]
    return Optimum(best=best, band=(min(near), max(near)), evaluated=len(prices))
