"""Judging a candidate model by the revenue its prices would earn, against what prices now.

On held-out logged quotes (the newest, which the candidate was not fitted on), against the
policy it would replace (rules for a property without a model, else the live model):

1. **Revenue lift** under the candidate's Laplace posterior ``N(w, H^-1)``: the 5th percentile
   (``LIFT_QUANTILE``) of ``sum(c_i P(c_i)) / sum(p0_i P(p0_i)) - 1`` must be above zero;
2. **Calibration**: ``z = (sum y - sum p) / sqrt(sum p(1-p))`` within ``CALIBRATION_Z``, or a miss
   of at most ``CALIBRATION_TOLERANCE`` of the predicted count;
3. **Off-policy check**: inverse-propensity weighting over the exploration arms; a one-sided 95%
   upper bound below zero refuses the candidate whatever its model says.

Why these three and not IPS alone: docs/pricing-loop.md ("A model never replaces what prices
now unless it earns more").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pricing.domain.conversion_model import ConversionModel, ModelFeatures
from pricing.domain.exploration import ARMS, LADDER_STEP, direction_of, parse_quote_id
from pricing.domain.guardrails import Guardrails, round_price
from pricing.domain.optimiser import optimise
from pricing.domain.outcomes import Outcome
from pricing.domain.quote import CompetitorSnapshot, Quote
from pricing.domain.rules import rule_based_price

FloatArray = NDArray[np.float64]

POSTERIOR_DRAWS = 400
LIFT_QUANTILE = 0.05
CALIBRATION_Z = 4.0
#: ... and only a material miss counts: predicted bookings off by more than this share.
CALIBRATION_TOLERANCE = 0.15
IPS_Z = 1.645
#: The IPS check only vetoes on at least this many held-out explored quotes at the candidate's arm.
IPS_MIN_MATCHED = 10
#: At most this many of the newest held-out quotes are priced (bounds a big property's retrain).
MAX_EVALUATED = 3000
GRID_POINTS = 101
_CAPACITY = 100


def quote_of(o: Outcome) -> Quote:
    """The quote an outcome answered, as far as the outcome records it (no guardrails)."""
    f = o.features()
    ctx = o.context
    stay = o.stay_date or (o.timestamp.date() + timedelta(days=int(f.lead_days)))
    season = ctx.get("season")
    dow = ctx.get("day_of_week")
    comp = CompetitorSnapshot(o.comp_p10, o.comp_p50, o.comp_p90) if o.comp_p50 is not None else None
    return Quote(
        user_id="retrain",
        property_id=o.property_id,
        stay_date=stay,
        quote_date=o.timestamp.date(),
        capacity=_CAPACITY,
        remaining=round(_CAPACITY * (1 - min(f.occupancy, 1.0))),
        refundable=f.refundable,
        los=f.los,
        season=season if isinstance(season, str) else None,
        day_of_week=dow if isinstance(dow, int) and not isinstance(dow, bool) else None,
        competitors=comp,
    )


def model_price(model: ConversionModel, features: ModelFeatures) -> float | None:
    """The model's optimum for one quote, as the scorer finds it without guardrails."""
    if model.price_slope(features) >= 0:
        return None
    lo, hi = model.trusted_prices(features)
    grid = Guardrails().candidate_grid(lo, hi, GRID_POINTS)
    return optimise(model, features, grid).best.price if grid else None


def rules_policy(base_price: float | None) -> Callable[[Outcome, ModelFeatures], float]:
    def price(o: Outcome, _: ModelFeatures) -> float:
        return round_price(rule_based_price(quote_of(o), base_price).price)

    return price


def model_policy(model: ConversionModel, base_price: float | None) -> Callable[[Outcome, ModelFeatures], float]:
    fallback = rules_policy(base_price)

    def price(o: Outcome, f: ModelFeatures) -> float:
        p = model_price(model, f)
        return fallback(o, f) if p is None else p

    return price


@dataclass(frozen=True)
class RevenueComparison:
    """A candidate's expected revenue against the incumbent policy's on held-out quotes."""

    n: int
    lift: float  # relative, at the candidate's point estimate
    lift_lower: float  # LIFT_QUANTILE of the posterior
    lift_upper: float
    calibration_z: float
    calibration_error: float  # (observed - predicted) / predicted bookings
    ips_matched: int  # held-out explored quotes at the candidate's projected arm
    ips_lift: float | None  # IPS mean revenue difference per quote, relative to logged revenue
    ips_upper: float | None
    # Where the candidate's prices lie against the incumbent policy's on these quotes
    # (``exploration.direction_of``): what directs exploration while rules keep pricing.
    direction: int = 0

    @property
    def ips_says_worse(self) -> bool:
        return self.ips_upper is not None and self.ips_matched >= IPS_MIN_MATCHED and self.ips_upper < 0

    @property
    def calibrated(self) -> bool:
        return not miscalibrated(self.calibration_z, self.calibration_error)

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else round(x, 6)

        return {
            "n": self.n,
            "lift": r(self.lift),
            "lift_lower": r(self.lift_lower),
            "lift_upper": r(self.lift_upper),
            "calibration_z": r(self.calibration_z),
            "calibration_error": r(self.calibration_error),
            "ips_matched": self.ips_matched,
            "ips_lift": r(self.ips_lift),
            "ips_upper": r(self.ips_upper),
            "direction": self.direction,
        }


def _sigmoid(z: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def calibration(p_hat: FloatArray, y: FloatArray) -> tuple[float, float]:
    """(z, relative error) of observed against predicted bookings: ``z = (sum y - sum p) /
    sqrt(sum p(1-p))``, error ``(sum y - sum p) / sum p``."""
    spread = float(np.sqrt(np.sum(p_hat * (1 - p_hat))))
    total = float(p_hat.sum())
    miss = float(y.sum()) - total
    return (miss / spread if spread > 0 else 0.0), (miss / total if total > 0 else 0.0)


def miscalibrated(z: float, error: float) -> bool:
    """Both statistically clear and material (see ``CALIBRATION_Z``, ``CALIBRATION_TOLERANCE``)."""
    return abs(z) > CALIBRATION_Z and abs(error) > CALIBRATION_TOLERANCE


@dataclass(frozen=True)
class PolicyLift:
    """Relative expected-revenue lift of one price policy over another, under a model's posterior."""

    n: int
    lift: float
    lower: float
    upper: float

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "lift": round(self.lift, 6), "lower": round(self.lower, 6), "upper": round(self.upper, 6)}


def _posterior_lift(
    model: ConversionModel,
    w: FloatArray,
    covariance: FloatArray,
    feats: Sequence[ModelFeatures],
    prices_a: Sequence[float],
    prices_b: Sequence[float],
    seed: int,
) -> tuple[float, FloatArray]:
    xa = np.array([model.row(p, f) for p, f in zip(prices_a, feats)])
    xb = np.array([model.row(p, f) for p, f in zip(prices_b, feats)])
    a, b = np.array(prices_a), np.array(prices_b)
    rng = np.random.default_rng(seed)
    try:
        chol = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        chol = np.diag(np.sqrt(np.clip(np.diag(covariance), 0, None)))
    thetas = w[None, :] + rng.standard_normal((POSTERIOR_DRAWS, len(w))) @ chol.T
    lifts = (a[:, None] * _sigmoid(xa @ thetas.T)).sum(axis=0) / (b[:, None] * _sigmoid(xb @ thetas.T)).sum(axis=0) - 1.0
    point = float((a * _sigmoid(xa @ w)).sum() / (b * _sigmoid(xb @ w)).sum() - 1.0)
    return point, lifts


def policy_lift(
    referee: ConversionModel,
    w: FloatArray,
    covariance: FloatArray,
    quotes: Sequence[Outcome],
    policy_a: Callable[[Outcome, ModelFeatures], float],
    policy_b: Callable[[Outcome, ModelFeatures], float],
    features_of: Callable[[Outcome], ModelFeatures],
    seed: int = 0,
) -> PolicyLift:
    """How much more ``policy_a`` earns than ``policy_b`` on ``quotes``, judged by ``referee``
    (a model fitted to the newest data), with its ``LIFT_QUANTILE`` bounds."""
    quotes = list(quotes)[-MAX_EVALUATED:]
    feats = [features_of(o) for o in quotes]
    a = [policy_a(o, f) for o, f in zip(quotes, feats)]
    b = [policy_b(o, f) for o, f in zip(quotes, feats)]
    if not quotes:
        return PolicyLift(0, 0.0, -math.inf, math.inf)
    point, lifts = _posterior_lift(referee, w, covariance, feats, a, b, seed)
    return PolicyLift(len(quotes), point, float(np.quantile(lifts, LIFT_QUANTILE)), float(np.quantile(lifts, 1 - LIFT_QUANTILE)))


def _nearest_arm(ratio: float) -> int:
    k = round(math.log(ratio) / math.log(1 + LADDER_STEP)) if ratio > 0 else 0
    return max(min(k, max(ARMS)), min(ARMS))


def compare_revenue(
    candidate: ConversionModel,
    w: FloatArray,
    covariance: FloatArray,
    holdout: Sequence[Outcome],
    incumbent_policy: Callable[[Outcome, ModelFeatures], float],
    features_of: Callable[[Outcome], ModelFeatures],
    seed: int = 0,
    folds: Sequence[tuple[ConversionModel, ConversionModel, FloatArray, FloatArray]] = (),
) -> RevenueComparison:
    """The three checks of the module docstring, on ``holdout`` (time-ordered, newest last).

    ``folds`` cross-fit the revenue lift: each is (a model that sets the prices, a referee fitted
    on *other* outcomes, the referee's coefficients and covariance). A model judged by its own
    posterior at its own optimum is judged where it is luckiest -- its optimum is the price its
    errors flatter most -- so the lift is averaged, draw by draw, over folds in which the prices
    and the judge come from disjoint data. Without folds the candidate judges itself.
    """
    evaluated = list(holdout)[-MAX_EVALUATED:]
    feats = [features_of(o) for o in evaluated]
    cand, inc, keep = [], [], []
    for i, (o, f) in enumerate(zip(evaluated, feats)):
        c = model_price(candidate, f)
        if c is None:
            continue
        cand.append(c)
        inc.append(incumbent_policy(o, f))
        keep.append(i)
    if not keep:
        return RevenueComparison(0, 0.0, -math.inf, math.inf, 0.0, 0.0, 0, None, None)
    kept = [feats[i] for i in keep]
    if not folds:
        point, lifts = _posterior_lift(candidate, w, covariance, kept, cand, inc, seed)
    else:
        points, draws = [], []
        for k, (pricer, referee, rw, rcov) in enumerate(folds):
            priced = [model_price(pricer, f) for f in kept]
            prices = [c if p is None else p for p, c in zip(priced, cand)]
            fold_point, fold_lifts = _posterior_lift(referee, rw, rcov, kept, prices, inc, seed + k)
            points.append(fold_point)
            draws.append(fold_lifts)
        point, lifts = float(np.mean(points)), np.mean(draws, axis=0)

    # Calibration at the prices actually quoted.
    xq = np.array([candidate.row(o.quoted_price, f) for o, f in zip(evaluated, feats)])
    p_hat = _sigmoid(xq @ w)
    y = np.array([1.0 if o.accepted else 0.0 for o in evaluated])
    calibration_z, calibration_error = calibration(p_hat, y)

    # Off-policy check on the quotes that carry their propensity.
    diffs, matched, logged_revenue = [], 0, []
    for c, i in zip(cand, keep):
        o = evaluated[i]
        e = parse_quote_id(o.quote_id)
        if e is None:
            continue
        policy_price = e.policy_price if e.explored and e.policy_price else o.quoted_price
        arm = _nearest_arm(c / policy_price)
        r = o.quoted_price if o.accepted else 0.0
        logged_revenue.append(r)
        d = r * ((1.0 if e.arm == arm else 0.0) - (1.0 if e.arm == 0 else 0.0)) / e.propensity
        diffs.append(d)
        matched += e.explored and e.arm == arm
    ips_lift = ips_upper = None
    if len(diffs) > 1 and sum(logged_revenue) > 0:
        scale = sum(logged_revenue) / len(logged_revenue)
        mean = float(np.mean(diffs))
        se = float(np.std(diffs, ddof=1) / math.sqrt(len(diffs)))
        ips_lift, ips_upper = mean / scale, (mean + IPS_Z * se) / scale
    return RevenueComparison(
        n=len(keep),
        lift=point,
        lift_lower=float(np.quantile(lifts, LIFT_QUANTILE)),
        lift_upper=float(np.quantile(lifts, 1 - LIFT_QUANTILE)),
        calibration_z=calibration_z,
        calibration_error=calibration_error,
        ips_matched=matched,
        ips_lift=ips_lift,
        ips_upper=ips_upper,
        direction=direction_of(cand, inc),
    )
