"""A pricing-quality simulator: properties with known demand, to measure how good the prices are.

Each ``DemandCurve`` is a property whose true booking probability is known:

    P(book | price, quote) = sigmoid(a + b * g(price / base) + c * lead_days/30 + d * occupancy + e * weekend)

with ``g`` the identity (logistic in price, the model's own family) or ``log`` (a curve the
linear-in-price model can only approximate). The simulator quotes at *explored* prices (uniform
over 0.5x..2x the base price, as a price experiment would), draws bookings from the true curve,
and emits them as /learn outcomes. Because the truth is known, every pricing policy can be scored
by the revenue it would really earn: ``price * P_true(book | price)``, summed over fresh quotes,
against the oracle that knows the curve.

The report also gives the offline metrics of Airbnb's pricing paper (Ye et al., "Customized
Regression Model for Airbnb Dynamic Pricing", KDD 2018), computed on held-out outcomes:

* price-decrease recall: of the quotes that did not book, the share where the policy suggested
  a lower price than the one quoted;
* price-increase recall: of the quotes that booked, the share where it suggested a higher price;
* booking regret: the median, over booked quotes, of ``max(0, (quoted - suggested) / quoted)``,
  the revenue a suggestion would have given away on a booking that happened anyway.

Everything is seeded: the same arguments give the same outcomes and the same report.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import median
from typing import Any

from pricing.domain.conversion_model import ConversionModel, ModelFeatures, sigmoid
from pricing.domain.experiments import Assignment
from pricing.domain.pricing import model_features, recommend
from pricing.domain.quote import Quote, Toggles

EXPLORATION_RANGE = (0.5, 2.0)  # explored prices, as multiples of the base price
ORACLE_RANGE = (0.3, 3.0)
ORACLE_POINTS = 541
CAPACITY = 100
MAX_LEAD_DAYS = 120
#: Outcomes are spread over this many days before ``now``.
HISTORY_DAYS = 90


@dataclass(frozen=True)
class DemandCurve:
    """A property's true booking probability (see the module docstring for the formula)."""

    name: str
    base_price: float
    intercept: float
    price_effect: float  # per unit of price/base (or of log(price/base)); must be negative
    lead_effect: float  # per 30 days of lead time
    occupancy_effect: float
    weekend_effect: float
    log_price: bool = False

    def probability(self, price: float, features: ModelFeatures) -> float:
        ratio = price / self.base_price
        x = math.log(ratio) if self.log_price else ratio
        z = (
            self.intercept
            + self.price_effect * x
            + self.lead_effect * min(features.lead_days, 365.0) / 30.0
            + self.occupancy_effect * features.occupancy
            + (self.weekend_effect if features.weekend else 0.0)
        )
        return sigmoid(z)

    def revenue(self, price: float, features: ModelFeatures) -> float:
        return price * self.probability(price, features)

    def true_model(self, property_id: str, version: str) -> ConversionModel:
        """The curve itself as a conversion model (only a logistic-in-price curve is one): the
        best incumbent a retrain can ever face."""
        if self.log_price:
            raise ValueError(f"{self.name} is not logistic in price")
        lo, hi = (m * self.base_price for m in EXPLORATION_RANGE)
        return ConversionModel(
            property_id=property_id,
            version=version,
            coefficients={
                "intercept": self.intercept,
                "price_ratio": self.price_effect,
                "lead_scaled": self.lead_effect,
                "occupancy": self.occupancy_effect,
                "weekend": self.weekend_effect,
            },
            reference_price=self.base_price,
            price_range=(lo, hi),
        )

    def oracle_price(self, features: ModelFeatures) -> float:
        """The revenue-maximising price on a fine grid over 0.3x..3x the base price."""
        lo, hi = (m * self.base_price for m in ORACLE_RANGE)
        step = (hi - lo) / (ORACLE_POINTS - 1)
        return max((lo + i * step for i in range(ORACLE_POINTS)), key=lambda p: self.revenue(p, features))


#: Four properties unlike each other: where the optimum lies relative to the base price, how it
#: moves with lead time and occupancy, and whether the truth is in the model's family at all.
CURVES: tuple[DemandCurve, ...] = (
    # A city hotel priced above what its price-sensitive guests accept: the optimum is below base.
    DemandCurve("city-hotel", 120.0, 2.0, -3.2, -0.15, 1.0, 0.3),
    # A beach resort whose demand is strong and inelastic: the optimum is well above base.
    DemandCurve("beach-resort", 200.0, 0.9, -1.1, -0.10, 1.4, 0.5),
    # A ski lodge where occupancy and short lead times swing demand: the optimum moves a lot.
    DemandCurve("ski-lodge", 150.0, 1.4, -2.2, -0.45, 2.4, 0.8),
    # A loft whose demand is logistic in log price: outside the model's family.
    DemandCurve("city-loft", 90.0, -0.4, -2.6, -0.20, 1.2, 0.4, log_price=True),
)


@dataclass(frozen=True)
class SimulatedQuote:
    """One quote of the simulation: when, for which night, how full the property was."""

    quote_time: datetime
    stay_date: date
    remaining: int

    @property
    def occupancy(self) -> float:
        return (CAPACITY - self.remaining) / CAPACITY

    def to_quote(self, property_id: str) -> Quote:
        return Quote(
            user_id="simulator",
            property_id=property_id,
            stay_date=self.stay_date,
            quote_date=self.quote_time.date(),
            capacity=CAPACITY,
            remaining=self.remaining,
            toggles=Toggles(use_competitors=False),
        )


def _random_quote(rng: random.Random, quote_time: datetime, occupancy: tuple[float, float] = (0.0, 1.0)) -> SimulatedQuote:
    lead = rng.randint(0, MAX_LEAD_DAYS)
    sold = rng.randint(round(occupancy[0] * CAPACITY), round(occupancy[1] * CAPACITY))
    return SimulatedQuote(quote_time, quote_time.date() + timedelta(days=lead), CAPACITY - sold)


def features_of(quote: SimulatedQuote, property_id: str = "simulated") -> ModelFeatures:
    return model_features(quote.to_quote(property_id))


def simulate_outcomes(
    curve: DemandCurve,
    n: int,
    *,
    seed: int,
    now: datetime,
    property_id: str | None = None,
    history_days: float = HISTORY_DAYS,
    occupancy: tuple[float, float] = (0.0, 1.0),
) -> list[dict[str, Any]]:
    """``n`` /learn outcomes for ``curve``, quoted at explored prices over the ``history_days``
    before ``now`` (the last ten minutes excepted), with occupancy drawn from ``occupancy``.

    Quote ids are derived from the curve, seed and index, so re-sending a simulation is
    recognised as duplicates by /learn.
    """
    rng = random.Random(f"{curve.name}:{seed}")
    property_id = property_id or curve.name
    start = now - timedelta(days=history_days)
    span = history_days * 86400 - 600
    lo, hi = EXPLORATION_RANGE
    outcomes = []
    for i in range(n):
        # Evenly spread in time (oldest first), so the newest fifth is a true time-ordered holdout.
        quote_time = start + timedelta(seconds=span * i / max(n - 1, 1))
        quote = _random_quote(rng, quote_time.replace(microsecond=0), occupancy)
        price = round(curve.base_price * rng.uniform(lo, hi), 2)
        booked = rng.random() < curve.probability(price, features_of(quote, property_id))
        outcomes.append(
            {
                "property_id": property_id,
                "timestamp": quote.quote_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "quoted_price": price,
                "accepted": booked,
                "quote_id": f"sim-{curve.name}-{seed}-{i}",
                "stay_date": quote.stay_date.isoformat(),
                "context": {"occupancy": quote.occupancy},
            }
        )
    return outcomes


def evaluation_quotes(n: int, *, seed: int, now: datetime) -> list[SimulatedQuote]:
    """Fresh quotes (not in any training data) to score the policies on."""
    rng = random.Random(f"evaluation:{seed}")
    return [_random_quote(rng, now) for _ in range(n)]


Policy = Callable[[Quote], float]


def ml_policy(model: ConversionModel) -> Policy:
    """The service's ML pricing: expected-revenue optimisation of ``model`` within the guardrails."""

    def price(quote: Quote) -> float:
        return recommend(quote, quote_id="sim", assignment=Assignment(None, "none"), model=model).price

    return price


def rule_policy(base_price: float) -> Policy:
    """The service's rule-based pricing from the property's base price."""

    def price(quote: Quote) -> float:
        return recommend(quote, quote_id="sim", assignment=Assignment(None, "none"), model=None, configured_base=base_price).price

    return price


def oracle_policy(curve: DemandCurve) -> Policy:
    return lambda quote: curve.oracle_price(model_features(quote))


@dataclass(frozen=True)
class PolicyQuality:
    """How one pricing policy did on one curve."""

    policy: str
    revenue: float
    oracle_revenue: float
    price_decrease_recall: float
    price_increase_recall: float
    booking_regret: float

    @property
    def revenue_share(self) -> float:
        return self.revenue / self.oracle_revenue if self.oracle_revenue else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "revenue": round(self.revenue, 2),
            "oracle_revenue": round(self.oracle_revenue, 2),
            "revenue_share": round(self.revenue_share, 4),
            "price_decrease_recall": round(self.price_decrease_recall, 4),
            "price_increase_recall": round(self.price_increase_recall, 4),
            "booking_regret": round(self.booking_regret, 4),
        }


def airbnb_offline_metrics(outcomes: Sequence[dict[str, Any]], suggest: Policy, property_id: str) -> tuple[float, float, float]:
    """(price-decrease recall, price-increase recall, booking regret) of ``suggest`` on ``outcomes``."""
    decreases = increases = unbooked = 0
    regrets: list[float] = []
    for o in outcomes:
        ts = datetime.fromisoformat(o["timestamp"].replace("Z", "+00:00"))
        remaining = CAPACITY - round(o["context"]["occupancy"] * CAPACITY)
        quote = SimulatedQuote(ts, date.fromisoformat(o["stay_date"]), remaining).to_quote(property_id)
        suggested, quoted = suggest(quote), o["quoted_price"]
        if o["accepted"]:
            increases += suggested > quoted
            regrets.append(max(0.0, (quoted - suggested) / quoted))
        else:
            unbooked += 1
            decreases += suggested < quoted
    booked = len(regrets)
    return (
        decreases / unbooked if unbooked else 0.0,
        increases / booked if booked else 0.0,
        median(regrets) if regrets else 0.0,
    )


def assess_policy(
    name: str,
    suggest: Policy,
    curve: DemandCurve,
    quotes: Sequence[Quote],
    oracle_revenues: Sequence[float],
    held_out: Sequence[dict[str, Any]],
) -> PolicyQuality:
    """Expected revenue of ``suggest`` under the true curve, against the oracle, plus the offline metrics."""
    revenue = sum(curve.revenue(suggest(quote), model_features(quote)) for quote in quotes)
    property_id = quotes[0].property_id if quotes else "simulated"
    pdr, pir, regret = airbnb_offline_metrics(held_out, suggest, property_id)
    return PolicyQuality(name, revenue, sum(oracle_revenues), pdr, pir, regret)


@dataclass(frozen=True)
class CurveReport:
    curve: DemandCurve
    training_outcomes: int
    model_version: str | None
    policies: tuple[PolicyQuality, ...]

    def policy(self, name: str) -> PolicyQuality:
        return next(p for p in self.policies if p.policy == name)


def assess_policies(
    curve: DemandCurve,
    policies: Mapping[str, Policy],
    *,
    training_outcomes: int,
    model_version: str | None = None,
    property_id: str | None = None,
    seed: int = 7,
    now: datetime | None = None,
    n_quotes: int = 400,
    n_held_out: int = 2000,
) -> CurveReport:
    """Score each named policy, and the oracle, on ``curve``: expected revenue on ``n_quotes``
    fresh quotes and the offline metrics on ``n_held_out`` fresh outcomes."""
    now = now or datetime.now(UTC)
    property_id = property_id or curve.name
    quotes = [q.to_quote(property_id) for q in evaluation_quotes(n_quotes, seed=seed, now=now)]
    # The oracle's revenue per quote is the same yardstick for every policy: computed once.
    oracle_revenues = [curve.revenue(curve.oracle_price(model_features(q)), model_features(q)) for q in quotes]
    held_out = simulate_outcomes(curve, n_held_out, seed=seed + 1_000_003, now=now, property_id=property_id)
    assessed = [
        assess_policy(name, policy, curve, quotes, oracle_revenues, held_out)
        for name, policy in {**policies, "oracle": oracle_policy(curve)}.items()
    ]
    return CurveReport(curve, training_outcomes, model_version, tuple(assessed))


def assess_curve(
    curve: DemandCurve,
    model: ConversionModel | None,
    *,
    training_outcomes: int,
    property_id: str | None = None,
    seed: int = 7,
    now: datetime | None = None,
    n_quotes: int = 400,
    n_held_out: int = 2000,
) -> CurveReport:
    """Score ML pricing with ``model`` (when given), rule-based pricing and the oracle on ``curve``."""
    policies: dict[str, Policy] = {}
    if model is not None:
        policies["ml_elasticity"] = ml_policy(model)
    policies["rule_based"] = rule_policy(curve.base_price)
    return assess_policies(
        curve,
        policies,
        training_outcomes=training_outcomes,
        model_version=model.version if model else None,
        property_id=property_id,
        seed=seed,
        now=now,
        n_quotes=n_quotes,
        n_held_out=n_held_out,
    )


def format_report(reports: Sequence[CurveReport]) -> str:
    """A plain-text table: one block per curve, one line per policy."""
    lines = [
        "Pricing quality on simulated demand curves (expected revenue under the true curve)",
        "",
        f"{'curve':<14}{'policy':<15}{'revenue':>12}{'% oracle':>10}{'PDR':>8}{'PIR':>8}{'regret':>8}",
    ]
    for report in reports:
        family = "log-price" if report.curve.log_price else "logistic"
        for i, p in enumerate(report.policies):
            label = report.curve.name if i == 0 else f"  ({family})" if i == 1 else ""
            lines.append(
                f"{label:<14}{p.policy:<15}{p.revenue:>12.0f}{100 * p.revenue_share:>9.1f}%"
                f"{p.price_decrease_recall:>8.2f}{p.price_increase_recall:>8.2f}{p.booking_regret:>8.3f}"
            )
    lines += [
        "",
        "PDR: price-decrease recall (unbooked quotes where a lower price was suggested); PIR: price-increase",
        "recall (booked quotes where a higher price was suggested); regret: median over booked quotes of",
        "max(0, (quoted - suggested) / quoted). Metrics as defined by Ye et al., KDD 2018.",
    ]
    return "\n".join(lines)
