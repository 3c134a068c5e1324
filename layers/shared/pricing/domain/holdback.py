"""A rules holdback: a small share of a modelled property's quotes priced by rules, to measure
in realised revenue whether the live model still earns more than what it replaced.

A quote is held back with probability ``rate`` by a stable hash of its quote id, and its token
is tagged ``.hb`` so its outcome says which arm priced it. ``compare_arms`` (and, over periods
of constant share, ``compare_strata``) compares the arms' realised revenue per quote: Welch's
standard error, a one-sided 95% bound, at least ``MIN_HOLDBACK_QUOTES`` holdback quotes with
``MIN_HOLDBACK_BOOKINGS`` bookings, for the loss. The win is decided on anytime-valid bounds of
each arm's revenue per quote (``win_lower``, ``win_upper``: ``pricing.domain.holdback_win``, off
the ``/score`` import path). ``holdback_share``/``next_mode`` drop the share to the maintenance
rate once the model wins. Why each choice: docs/pricing-loop.md ("Two guards that roll back a
model that loses").

>>> held_back("q-1", 0.0), tag_quote_id("abc~exp~ctl"), is_holdback("abc.hb~exp~ctl")
(False, 'abc.hb~exp~ctl', True)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
#: Default share once the model has been shown to beat rules.
DEFAULT_MAINTENANCE_RATE = 0.01
FULL, MAINTENANCE = "full", "maintenance"


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
    lower: float = -math.inf  # one-sided 95% lower bound of the difference
    # Anytime-valid bounds of the model arm's revenue per quote (lower) and the holdback's
    # (upper), together at 95% under every nightly look; unset, no win can be shown.
    win_lower: float = 0.0
    win_upper: float = math.inf

    @property
    def enough(self) -> bool:
        return self.holdback_quotes >= MIN_HOLDBACK_QUOTES and self.holdback_bookings >= MIN_HOLDBACK_BOOKINGS

    @property
    def model_loses(self) -> bool:
        return self.enough and self.model_quotes > 1 and self.upper < 0

    @property
    def model_wins(self) -> bool:
        """The model earns more than rules with 95% confidence, however often it was asked:
        the holdback can shrink."""
        return self.model_quotes > 1 and self.win_lower > self.win_upper

    @property
    def relative(self) -> float:
        return self.difference / self.holdback_mean if self.holdback_mean > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        def r(x: float) -> float | None:
            return round(x, 4) if math.isfinite(x) else None

        return {
            "model_quotes": self.model_quotes,
            "holdback_quotes": self.holdback_quotes,
            "holdback_bookings": self.holdback_bookings,
            "model_revenue_per_quote": r(self.model_mean),
            "holdback_revenue_per_quote": r(self.holdback_mean),
            "difference": r(self.difference),
            "upper": r(self.upper),
            "lower": r(self.lower),
            "relative": r(self.relative),
            "enough": self.enough,
            "model_loses": self.model_loses,
            "win_model_lower": r(self.win_lower),
            "win_holdback_upper": r(self.win_upper),
            "model_wins": self.model_wins,
        }


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def compare_arms(model_revenues: Sequence[float], holdback_revenues: Sequence[float]) -> ArmComparison:
    """The model arm against the holdback (see the module docstring); revenues are per quote."""
    return compare_strata([(model_revenues, holdback_revenues)])


def compare_strata(strata: Sequence[tuple[Sequence[float], Sequence[float]]]) -> ArmComparison:
    """The model arm against the holdback over periods of constant holdback share, each given
    as (model revenues, holdback revenues): the per-period differences weighted by the period's
    quotes (the module docstring). A period where either arm has no quote carries no comparison
    and is left out of the weights; one period is the plain Welch comparison."""
    usable = [(m, h) for m, h in strata if m and h]
    total = sum(len(m) + len(h) for m, h in usable)
    difference, var, m_mean, h_mean = 0.0, 0.0, 0.0, 0.0
    for m, h in usable:
        w = (len(m) + len(h)) / total
        mm, mv = _mean_var(m)
        hm, hv = _mean_var(h)
        difference += w * (mm - hm)
        var += w * w * (mv / len(m) + hv / len(h))
        m_mean, h_mean = m_mean + w * mm, h_mean + w * hm
    holdback = [r for _, h in strata for r in h]
    se = math.sqrt(var)
    upper = difference + HOLDBACK_Z * se if usable else math.inf
    lower = difference - HOLDBACK_Z * se if usable else -math.inf
    bookings = sum(1 for r in holdback if r > 0)
    return ArmComparison(sum(len(m) for m, _ in strata), len(holdback), bookings, m_mean, h_mean, difference, upper, lower)


def holdback_share(mode: str | None, full_rate: float, maintenance_rate: float) -> float:
    """The holdback share for a live model in ``mode`` (None: not decided yet, the full rate).
    Never above the full rate: a property whose full share is lower keeps the lower one."""
    return min(maintenance_rate, full_rate) if mode == MAINTENANCE else full_rate


def next_mode(mode: str | None, arms: ArmComparison) -> str:
    """The guard's nightly decision: maintenance once the model beats rules with confidence,
    and so it stays for this model (the maintenance share still rolls back a model that turns
    to losing, through ``model_loses``); a new model starts at ``FULL``."""
    return MAINTENANCE if mode == MAINTENANCE or arms.model_wins else FULL
