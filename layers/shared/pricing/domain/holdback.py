"""A rules holdback: a small share of a modelled property's quotes priced by rules, to measure
in realised revenue whether the live model still earns more than what it replaced.

The deploy decision (``policy_evaluation``) judges a model before it prices, through models of
the data; after it prices, the question is answered by the bookings themselves. With
probability ``rate`` a quote that the live model would price is priced by rules instead (no
exploration on it: the holdback is the rules arm as callers would get it). The draw is a stable
hash of the quote id, independent of the exploration draw, and the quote id carries the tag
``.hb`` on its token (before any ``~experiment~variant``), so the outcome sent to /learn with its
quote id says which arm priced it, with no write per quote. A holdback quote carries no
exploration tag, so the off-policy check never mistakes it for the model's policy.

The statistic (``compare_arms``): the realised revenue per quote (price if booked, else 0) of
the model's quotes against the holdback's, since the model went live. Both arms are random
shares of the same quote stream, so the difference of their means is an unbiased estimate of
what the model earns over rules per quote; its standard error is Welch's, ``sqrt(s_m^2/n_m +
s_h^2/n_h)``. The model loses when the one-sided 95% upper bound of the difference is below
zero, on at least ``MIN_HOLDBACK_QUOTES`` holdback quotes with ``MIN_HOLDBACK_BOOKINGS``
bookings among them (revenue per quote is a price or nothing, so the normal approximation needs
that much). At 5% of 160 quotes a day the minimum takes about a week: the holdback catches a
model that prices a property out of its market, not a 2% loss.

>>> held_back("q-1", 0.0), tag_quote_id("abc~exp~ctl"), is_holdback("abc.hb~exp~ctl")
(False, 'abc.hb~exp~ctl', True)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

#: Default share of a modelled property's quotes priced by rules.
DEFAULT_RATE = 0.05
#: Never more than this: every holdback quote forgoes the model's revenue.
MAX_RATE = 0.20
TAG = ".hb"
#: The guard decides on at least this many holdback quotes since the model went live ...
MIN_HOLDBACK_QUOTES = 50
#: ... with at least this many bookings among them.
MIN_HOLDBACK_BOOKINGS = 10
#: One-sided 95%.
HOLDBACK_Z = 1.645


def held_back(quote_id: str, rate: float) -> bool:
    """Whether this quote is priced by rules as the holdback (stable per quote id)."""
    rate = min(max(rate, 0.0), MAX_RATE)
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(b"holdback\x1f" + quote_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def tag_quote_id(quote_id: str) -> str:
    head, sep, rest = quote_id.partition("~")
    return head + TAG + sep + rest


def is_holdback(quote_id: str | None) -> bool:
    return quote_id is not None and quote_id.partition("~")[0].endswith(TAG)


@dataclass(frozen=True)
class ArmComparison:
    """Realised revenue per quote of the model's quotes against the rules holdback's."""

    model_quotes: int
    holdback_quotes: int
    holdback_bookings: int
    model_mean: float
    holdback_mean: float
    difference: float  # model - holdback, per quote
    upper: float  # one-sided 95% upper bound of the difference

    @property
    def enough(self) -> bool:
        return self.holdback_quotes >= MIN_HOLDBACK_QUOTES and self.holdback_bookings >= MIN_HOLDBACK_BOOKINGS

    @property
    def model_loses(self) -> bool:
        return self.enough and self.model_quotes > 1 and self.upper < 0

    @property
    def relative(self) -> float:
        return self.difference / self.holdback_mean if self.holdback_mean > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        def r(x: float) -> float | None:
            return round(x, 4) if math.isfinite(x) else None

        return {"model_quotes": self.model_quotes, "holdback_quotes": self.holdback_quotes,
                "holdback_bookings": self.holdback_bookings, "model_revenue_per_quote": r(self.model_mean),
                "holdback_revenue_per_quote": r(self.holdback_mean), "difference": r(self.difference),
                "upper": r(self.upper), "relative": r(self.relative), "enough": self.enough,
                "model_loses": self.model_loses}


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def compare_arms(model_revenues: Sequence[float], holdback_revenues: Sequence[float]) -> ArmComparison:
    """The model arm against the holdback (see the module docstring); revenues are per quote."""
    m_mean, m_var = _mean_var(model_revenues)
    h_mean, h_var = _mean_var(holdback_revenues)
    n_m, n_h = len(model_revenues), len(holdback_revenues)
    se = math.sqrt((m_var / n_m if n_m else 0.0) + (h_var / n_h if n_h else 0.0))
    difference = m_mean - h_mean
    upper = difference + HOLDBACK_Z * se if n_m and n_h else math.inf
    return ArmComparison(n_m, n_h, sum(1 for r in holdback_revenues if r > 0), m_mean, h_mean, difference, upper)
