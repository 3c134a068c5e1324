"""Guardrails: the bounds no recommended price may leave, whoever computed it.

Besides the caller's bounds, every price obeys the service-wide range ``MIN_PRICE``..``MAX_PRICE``:
rule-based pricing multiplies a base of up to ``MAX_PRICE`` (a competitor median, a configured
base) by factors of up to about 1.9, and a model's trusted range may reach beyond it; neither may
quote a price the API would refuse as input.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

#: The smallest price there is: one cent. Rounding must never turn a tiny price into a free room.
MIN_PRICE = 0.01
#: The largest nightly price accepted anywhere (request, backend, configuration). Beyond it a
#: float no longer holds whole cents, and the pricing arithmetic could overflow to infinity.
MAX_PRICE = 1e10


def round_price(price: float) -> float:
    return float(round(price + 0.0, 2))


@dataclass(frozen=True)
class Guardrails:
    """Minimum and maximum price and, optionally, the only prices that may be quoted."""

    min_price: float | None = None
    max_price: float | None = None
    allowed_prices: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError("min_price exceeds max_price")
        if self.allowed_prices is not None and not self.allowed_members():
            raise ValueError("no allowed price lies within min_price..max_price")

    def within_bounds(self, price: float) -> bool:
        return (self.min_price is None or price >= self.min_price) and (self.max_price is None or price <= self.max_price)

    def allowed_members(self) -> tuple[float, ...]:
        """The allowed prices that also respect min/max, ascending and distinct."""
        if self.allowed_prices is None:
            return ()
        return tuple(sorted({p for p in self.allowed_prices if self.within_bounds(p)}))

    def admits(self, price: float) -> bool:
        if not self.within_bounds(price):
            return False
        return self.allowed_prices is None or price in self.allowed_prices

    def enforce(self, price: float) -> tuple[float, bool]:
        """The nearest admissible price to ``price``, rounded to cents, and whether it moved.

        Admissible: within the caller's bounds and the service-wide ``MIN_PRICE``..``MAX_PRICE``.
        """
        if self.allowed_prices is not None:
            members = self.allowed_members()
            # Ties go to the lower price: never charge more than the rule asked for by accident.
            chosen = min(members, key=lambda p: (abs(p - price), p))
            return chosen, not math.isclose(chosen, price, abs_tol=0.005)
        bounded = min(price, MAX_PRICE)
        if self.min_price is not None:
            bounded = max(bounded, self.min_price)
        if self.max_price is not None:
            bounded = min(bounded, self.max_price)
        rounded = min(max(round_price(bounded), MIN_PRICE), MAX_PRICE)
        # Rounding to cents must not step outside a bound given with more decimals.
        if self.min_price is not None and rounded < self.min_price:
            rounded = math.ceil(self.min_price * 100) / 100
        if self.max_price is not None and rounded > self.max_price:
            rounded = math.floor(self.max_price * 100) / 100
        return rounded, not math.isclose(bounded, price, rel_tol=1e-9, abs_tol=0.005)

    def candidate_grid(self, lo: float, hi: float, points: int) -> tuple[float, ...]:
        """Candidate prices over [lo, hi] intersected with the guardrails, ascending.

        With an allowed grid, the candidates are exactly its admissible members (the whole grid,
        not only the part inside [lo, hi]: the caller's grid is the contract). Returns an empty
        tuple when the interval and the bounds do not meet.
        """
        if self.allowed_prices is not None:
            return self.allowed_members()
        hi = min(hi, MAX_PRICE)
        if self.min_price is not None:
            lo = max(lo, self.min_price)
        if self.max_price is not None:
            hi = min(hi, self.max_price)
        if lo > hi:
            return ()
        if points <= 1 or math.isclose(lo, hi):
            return (self.enforce(lo)[0],)
        if self.min_price is None and self.max_price is None:
            return _unbounded_grid(lo, hi, points)
        step = (hi - lo) / (points - 1)
        return tuple(sorted({self.enforce(lo + i * step)[0] for i in range(points)}))


@functools.lru_cache(maxsize=1024)
def _unbounded_grid(lo: float, hi: float, points: int) -> tuple[float, ...]:
    """``candidate_grid`` without bounds: ``enforce`` reduces to rounding to cents.

    Cached: every quote for a property asks for the same grid (its model's trusted range), and
    building it was a third of the pricing work on the /score path.
    """
    step = (hi - lo) / (points - 1)
    return tuple(sorted({min(max(round_price(lo + i * step), MIN_PRICE), MAX_PRICE) for i in range(points)}))
