"""The simulated market of the closed-loop benchmark: properties whose true demand is known.

Each ``MarketCurve`` gives the true probability that a guest books a quote at ``price``, given
the competitor median ``market`` at that moment, the lead time, the weekday, the occupancy and
the length of stay. Demand depends on the price *relative to the market* (``r = price /
market``), as real hotel demand does, in one of three shapes:

* ``logistic``: ``sigmoid(a + (b + c*lead/30 + k*weekend) * r + d*lead/30 + e*occ + g*weekend)``
  -- exactly the form of the conversion model (v2), so a model can represent it;
* ``log``: the same with ``log(r)`` in place of ``r`` (constant elasticity): outside the form;
* ``kink``: guests compare with the market median and drop sharply above it:
  ``... + b*r - kink_slope * max(0, r - kink_at)`` -- outside the form.

Days count from 1. A curve may shift from ``shift_day`` on (a competitor opens: demand drops and grows more price
sensitive), which the loop must notice and recover from.

The market itself moves quote by quote: the competitor median follows a log-AR(1) around the
property's market level, plus a weekend premium; quotes arrive with a lead time, an occupancy
that rises as the stay approaches, and a length of stay.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from pricing.domain.conversion_model import sigmoid

CAPACITY = 100
MARKET_RHO = 0.97
MARKET_SIGMA = 0.035
WEEKEND_MARKET_PREMIUM = 1.12


@dataclass(frozen=True)
class Demand:
    intercept: float
    price: float  # per unit of r (or log r)
    price_x_lead: float = 0.0
    price_x_weekend: float = 0.0
    lead: float = 0.0
    occupancy: float = 0.0
    weekend: float = 0.0
    los: float = 0.0
    shape: str = "logistic"  # "logistic", "log", "kink"
    kink_at: float = 1.05
    kink_slope: float = 0.0

    def probability(self, price: float, market: float, lead_days: float, weekend: bool, occupancy: float, los: int) -> float:
        r = price / market
        x = math.log(r) if self.shape == "log" else r
        lead = min(lead_days, 365.0) / 30.0
        w = 1.0 if weekend else 0.0
        z = (
            self.intercept
            + (self.price + self.price_x_lead * lead + self.price_x_weekend * w) * x
            + self.lead * lead
            + self.occupancy * occupancy
            + self.weekend * w
            + self.los * (min(los, 30) - 1) / 7.0
        )
        if self.shape == "kink":
            z -= self.kink_slope * max(0.0, r - self.kink_at)
        return sigmoid(z)


@dataclass(frozen=True)
class MarketCurve:
    name: str
    market_level: float  # typical competitor median
    base_price: float  # the property's configured base price (what its rules start from)
    demand: Demand
    shift_day: int | None = None
    shifted: Demand | None = None

    @property
    def representable(self) -> bool:
        shapes = {self.demand.shape} | ({self.shifted.shape} if self.shifted else set())
        return shapes == {"logistic"}

    def demand_on(self, day: int) -> Demand:
        if self.shift_day is not None and self.shifted is not None and day >= self.shift_day:
            return self.shifted
        return self.demand


def _shifted(d: Demand) -> Demand:
    # A competitor opens next door: fewer guests book at any price, and they compare harder.
    return replace(d, intercept=d.intercept - 0.9, price=d.price * 1.35)


_SKI = Demand(intercept=4.4, price=-4.2, price_x_lead=0.5, lead=-0.35, occupancy=1.6, weekend=0.6)

#: Five properties unlike each other; the first three are of the model's own form.
CURVES: tuple[MarketCurve, ...] = (
    # A budget hotel whose guests are very price sensitive: its rules (base 95 in a market at 80)
    # price it above what they accept. The property of the issue.
    MarketCurve("budget-hotel", 80.0, 95.0, Demand(intercept=5.0, price=-6.5, price_x_lead=0.9, lead=-0.6, occupancy=0.9, weekend=0.3)),
    # A premium resort with loyal, inelastic guests: its rules underprice it.
    MarketCurve(
        "premium-resort",
        220.0,
        180.0,
        Demand(intercept=2.4, price=-2.0, price_x_lead=0.15, price_x_weekend=0.2, lead=-0.2, occupancy=1.2, weekend=0.5),
    ),
    # A ski lodge whose demand shifts halfway through (a competitor opens: day 7 is the first day);
    # its rules (base 185 in a market at 150) overprice it, so a model is live when the shift hits.
    MarketCurve("ski-lodge-shift", 150.0, 185.0, _SKI, shift_day=7, shifted=_shifted(_SKI)),
    # A city loft with constant-elasticity demand (logistic in log price): outside the form.
    MarketCurve("city-loft-log", 110.0, 165.0, Demand(intercept=0.3, price=-3.2, lead=-0.25, occupancy=1.0, weekend=0.4, shape="log")),
    # A business hotel whose guests compare with the market median and drop sharply above it.
    MarketCurve(
        "business-kink",
        140.0,
        150.0,
        Demand(intercept=3.0, price=-2.4, lead=-0.3, occupancy=1.0, weekend=-0.3, shape="kink", kink_at=1.02, kink_slope=7.0),
    ),
)


@dataclass(frozen=True)
class MarketQuote:
    """One request for a price, as the market sends it."""

    quote_time: datetime
    stay_date: date
    remaining: int
    los: int
    market: float  # competitor median at this moment

    @property
    def lead_days(self) -> int:
        return (self.stay_date - self.quote_time.date()).days

    @property
    def occupancy(self) -> float:
        return (CAPACITY - self.remaining) / CAPACITY

    @property
    def weekend(self) -> bool:
        return self.stay_date.weekday() in (4, 5)

    @property
    def bounds(self) -> tuple[float, float]:
        return round(0.4 * self.market, 2), round(3.0 * self.market, 2)


class Market:
    """The quote stream of one property: the competitor median moves quote by quote."""

    def __init__(self, curve: MarketCurve, seed: int):
        self.curve = curve
        self.rng = random.Random(f"{curve.name}:{seed}")
        self._log_deviation = 0.0

    def quote(self, quote_time: datetime) -> MarketQuote:
        rng = self.rng
        self._log_deviation = MARKET_RHO * self._log_deviation + rng.gauss(0.0, MARKET_SIGMA)
        lead = min(int(rng.expovariate(1 / 21.0)), 180)
        stay = quote_time.date() + timedelta(days=lead)
        occupancy = min(0.97, max(0.0, 0.85 - 0.006 * lead + rng.gauss(0.0, 0.18)))
        weekend = stay.weekday() in (4, 5)
        market = self.curve.market_level * math.exp(self._log_deviation) * (WEEKEND_MARKET_PREMIUM if weekend else 1.0)
        return MarketQuote(quote_time, stay, CAPACITY - round(occupancy * CAPACITY), rng.choice((1, 1, 1, 2, 2, 3, 4)), round(market, 2))

    def probability(self, q: MarketQuote, price: float, day: int) -> float:
        return self.curve.demand_on(day).probability(price, q.market, q.lead_days, q.weekend, q.occupancy, q.los)

    def oracle_price(self, q: MarketQuote, day: int, points: int = 400) -> float:
        """The revenue-maximising price inside the quote's bounds, on a fine grid."""
        lo, hi = q.bounds
        step = (hi - lo) / (points - 1)
        return max((lo + i * step for i in range(points)), key=lambda p: p * self.probability(q, p, day))
