"""Fitting and judging conversion models: L2-regularised logistic regression by Newton's method.

Pure numpy and deterministic (the same outcomes give the same coefficients, bit for bit). The
design matrix is built with ``conversion_model.design_row``, the function the scorer evaluates;
the price feature is the price relative to the market (artifact v2), trusted on the 1st..99th
percentile of those ratios; outcomes are weighted by recency once the data allow
(``recency_weights``); the newest 20% judge the candidate, in revenue (``policy_evaluation``).
Why each: docs/pricing-loop.md ("A demand model that sees the market").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pricing.domain.conversion_model import ARTIFACT_FORMAT_V2, FEATURE_NAMES, PRICE_FEATURES, ConversionModel, ModelFeatures
from pricing.domain.outcomes import Outcome
from pricing.domain.policy_evaluation import RevenueComparison, compare_revenue, model_policy, rules_policy

FloatArray = NDArray[np.float64]

L2_PENALTY = 1.0
MAX_NEWTON_STEPS = 50
NEWTON_TOLERANCE = 1e-9
HOLDOUT_SHARE = 0.2
PRICE_RANGE_PERCENTILES = (1.0, 99.0)
#: Predictions are clipped away from 0 and 1 so one confident miss cannot make log loss infinite.
PROBABILITY_FLOOR = 1e-6
#: Features whose distribution drift detection watches: every design column but the intercept and
#: the price terms. The prices are ours -- a new model quoting lower prices moves the price
#: feature's distribution by design, which says nothing about the market.
DRIFT_FEATURES = tuple(name for name in FEATURE_NAMES[1:] if name not in PRICE_FEATURES)
REFERENCE_QUANTILES = tuple(q / 10 for q in range(1, 10))  # deciles: 10 bins per feature
#: Recency weighting: each outcome weighs 0.5 ** (age / half-life). The half-life is the shortest
#: of these (days) that still leaves an effective sample of ``MIN_EFFECTIVE_SAMPLE`` outcomes
#: (Kish: (sum w)^2 / sum w^2); with less data than that, nothing is down-weighted. A market moves,
#: so old bookings should count less -- but never so much less that the fit becomes noise.
HALF_LIVES_DAYS = (3.0, 5.0, 7.0, 10.0, 14.0, 21.0, 30.0, 45.0, 60.0, 90.0)
MIN_EFFECTIVE_SAMPLE = 3000


class TrainingError(ValueError):
    """The outcomes cannot produce a model (no outcomes, one class only, a non-finite fit)."""


@dataclass(frozen=True)
class Evaluation:
    """How well a model's probabilities match what happened, on one set of outcomes."""

    n: int
    positives: int
    log_loss: float
    brier: float
    mean_predicted: float

    @property
    def observed_rate(self) -> float:
        return self.positives / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "positives": self.positives,
            "log_loss": round(self.log_loss, 6),
            "brier": round(self.brier, 6),
            "mean_predicted": round(self.mean_predicted, 6),
            "observed_rate": round(self.observed_rate, 6),
        }


def time_ordered(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Oldest first; ties by key, so the order (and the split) never depends on read order."""
    return sorted(outcomes, key=lambda o: (o.timestamp_utc, o.key))


def split_holdout(outcomes: Sequence[Outcome], share: float = HOLDOUT_SHARE) -> tuple[list[Outcome], list[Outcome]]:
    """(older part for fitting, newest ``share`` for judging), in time order."""
    ordered = time_ordered(outcomes)
    cut = len(ordered) - max(1, round(len(ordered) * share))
    return ordered[:cut], ordered[cut:]


def outcome_features(o: Outcome) -> ModelFeatures:
    """The model inputs of an outcome's quote, with the competitor median it was quoted against."""
    return replace(o.features(), market_price=o.comp_p50)


def design_matrix(outcomes: Sequence[Outcome], model: ConversionModel) -> FloatArray:
    """Each outcome's ``design_row`` at its quoted price, measured the way ``model`` measures it."""
    rows = [model.row(o.quoted_price, outcome_features(o)) for o in outcomes]
    return np.asarray(rows, dtype=float).reshape(len(rows), len(FEATURE_NAMES))


def labels(outcomes: Sequence[Outcome]) -> FloatArray:
    return np.fromiter((1.0 if o.accepted else 0.0 for o in outcomes), dtype=float, count=len(outcomes))


def _sigmoid(z: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free and exact enough for fitting


@dataclass(frozen=True)
class Fit:
    """Penalised maximum-likelihood coefficients and the Hessian of the penalised negative
    log-likelihood there: its inverse is the Laplace approximation of the posterior covariance."""

    w: FloatArray
    hessian: FloatArray

    def covariance(self) -> FloatArray:
        return np.linalg.inv(self.hessian).astype(np.float64, copy=False)  # already float64: no copy


@dataclass(frozen=True)
class Prior:
    """A Gaussian prior on the coefficients, ``N(mean, precision^-1)``: what an earlier market
    taught about the *shape* of demand, for a model that must relearn after that market moved
    (see ``prior_from``). ``ratio_range`` is the price-to-market range that market was seen at."""

    mean: FloatArray
    precision: FloatArray
    outcomes: float  # how many outcomes the prior is worth
    ratio_range: tuple[float, float]
    since: str  # the model it informs learns from outcomes quoted from then on

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcomes": round(self.outcomes, 1),
            "since": self.since,
            "ratio_range": [round(r, 4) for r in self.ratio_range],
            "mean": {name: round(float(c), 6) for name, c in zip(FEATURE_NAMES, self.mean)},
        }


def fit_weighted(
    x: FloatArray,
    y: FloatArray,
    weights: FloatArray | None = None,
    l2: float = L2_PENALTY,
    prior: Prior | None = None,
    centre: FloatArray | None = None,
) -> Fit:
    """Coefficients maximising ``sum(weight * log-likelihood) - l2/2 * |w[1:] - m[1:]|^2
    - 1/2 (w - m)' P (w - m)`` (column 0 = intercept; ``m``, ``P`` the prior's mean and precision,
    else ``m`` = ``centre`` and ``P`` = 0, else both zero), by Newton's method on the penalised log-likelihood, which is strictly
    concave for ``l2 > 0``, so the optimum is unique and reached in a handful of steps.

    Raises ``TrainingError`` when there are no rows or the iteration does not stay finite.
    """
    n, k = x.shape
    if n == 0:
        raise TrainingError("no outcomes to fit")
    weights = np.ones(n) if weights is None else weights
    penalty = np.full(k, l2)
    penalty[0] = 0.0
    # A tiny ridge on the intercept too, only so a one-class sample still has a finite Newton step.
    penalty_hessian = np.diag(penalty + 1e-9)
    centre = prior.mean if prior is not None else (np.zeros(k) if centre is None else np.asarray(centre, dtype=float))
    if prior is not None:
        penalty_hessian = penalty_hessian + prior.precision
    w = centre.copy()
    hessian = penalty_hessian
    for _ in range(MAX_NEWTON_STEPS):
        p = _sigmoid(x @ w)
        gradient = x.T @ (weights * (y - p)) - penalty * (w - centre)
        if prior is not None:
            gradient = gradient - prior.precision @ (w - centre)
        hessian = (x * (weights * p * (1 - p))[:, None]).T @ x + penalty_hessian
        step = np.linalg.solve(hessian, gradient)
        w = w + step
        if not np.all(np.isfinite(w)):
            raise TrainingError("the fit diverged")
        if float(np.max(np.abs(step))) < NEWTON_TOLERANCE:
            break
    p = _sigmoid(x @ w)
    hessian = (x * (weights * p * (1 - p))[:, None]).T @ x + penalty_hessian
    return Fit(w, hessian)


def fit_logistic(x: FloatArray, y: FloatArray, l2: float = L2_PENALTY) -> FloatArray:
    """``fit_weighted`` with every outcome weighing one: the coefficients only."""
    return fit_weighted(x, y, None, l2).w


def log_losses(p: FloatArray, y: FloatArray) -> FloatArray:
    """Each outcome's log loss under predictions ``p`` (clipped, so always finite)."""
    clipped = np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    losses: FloatArray = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    return losses


def evaluate_probabilities(p: FloatArray, y: FloatArray) -> Evaluation:
    if len(y) == 0:
        raise TrainingError("nothing to evaluate on")
    return Evaluation(
        n=len(y),
        positives=int(y.sum()),
        log_loss=float(np.mean(log_losses(p, y))),
        brier=float(np.mean((p - y) ** 2)),
        mean_predicted=float(np.mean(p)),
    )


def coefficient_vector(model: ConversionModel) -> FloatArray:
    return np.array([model.coefficients.get(name, 0.0) for name in FEATURE_NAMES])


def predict(model: ConversionModel, outcomes: Sequence[Outcome]) -> FloatArray:
    """The model's P(book) for each outcome's quote, vectorised over ``design_row``."""
    return _sigmoid(design_matrix(outcomes, model) @ coefficient_vector(model))


def evaluate(model: ConversionModel, outcomes: Sequence[Outcome]) -> Evaluation:
    return evaluate_probabilities(predict(model, outcomes), labels(outcomes))


def reference_bins(x: FloatArray) -> dict[str, Any]:
    """Fixed decile bins of each drift feature over the training rows, and each bin's share.

    Bins are ``(-inf, e0], (e0, e1], ..., (ek, inf)`` with edges at the training deciles (equal
    deciles collapse into one edge, so a binary feature gets the bins <=0, (0, 1], >1).
    """
    reference = {}
    for column, name in enumerate(FEATURE_NAMES):
        if name not in DRIFT_FEATURES:
            continue
        values = x[:, column]
        edges = np.unique(np.quantile(values, REFERENCE_QUANTILES))
        counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
        reference[name] = {
            "edges": [float(e) for e in edges],
            "proportions": [float(c) / len(values) for c in counts],
        }
    return reference


def price_range(outcomes: Sequence[Outcome]) -> tuple[float, float]:
    prices = np.array([o.quoted_price for o in outcomes])
    lo, hi = np.percentile(prices, PRICE_RANGE_PERCENTILES)
    return float(lo), float(hi)


def _age_days(outcomes: Sequence[Outcome]) -> FloatArray:
    stamps = np.array([o.timestamp.timestamp() for o in outcomes])
    ages: FloatArray = (stamps.max() - stamps) / 86400.0
    return ages


def effective_sample(weights: FloatArray) -> float:
    """Kish's effective sample size of weighted outcomes."""
    return float(weights.sum() ** 2 / np.sum(weights**2)) if len(weights) else 0.0


def recency_weights(outcomes: Sequence[Outcome], half_life_days: float | None = None) -> tuple[FloatArray, float | None]:
    """Each outcome's weight and the half-life used (None: no decay; see ``HALF_LIVES_DAYS``)."""
    age = _age_days(outcomes)
    if half_life_days is not None:
        return 0.5 ** (age / half_life_days), half_life_days
    for half_life in HALF_LIVES_DAYS:
        weights = 0.5 ** (age / half_life)
        if effective_sample(weights) >= MIN_EFFECTIVE_SAMPLE:
            return weights, half_life
    return np.ones(len(outcomes)), None


def _scale(ordered: Sequence[Outcome]) -> ConversionModel:
    """An empty v2 model carrying only the price scale of ``ordered``: the design's measure."""
    reference_price = float(np.median([o.quoted_price for o in ordered]))
    markets = [o.comp_p50 for o in ordered if o.comp_p50 is not None]
    market_reference = float(np.median(markets)) if markets else reference_price
    return ConversionModel(
        property_id="",
        version="",
        coefficients={},
        reference_price=reference_price,
        price_range=(reference_price, reference_price),
        format=ARTIFACT_FORMAT_V2,
        market_reference=market_reference,
    )


def fit_conversion_model(
    outcomes: Sequence[Outcome],
    *,
    property_id: str,
    version: str,
    trained_at: str,
    l2: float = L2_PENALTY,
    half_life_days: float | None = None,
    extra_training: Mapping[str, Any] | None = None,
    prior: Prior | None = None,
    centre: ConversionModel | None = None,
) -> tuple[ConversionModel, Fit]:
    """``train_conversion_model`` with the fit itself (coefficients and Hessian) alongside."""
    if not outcomes:
        raise TrainingError("no outcomes to fit")
    ordered = time_ordered(outcomes)
    scale = _scale(ordered)
    x = design_matrix(ordered, scale)
    y = labels(ordered)
    weights, half_life = recency_weights(ordered, half_life_days)
    fit = fit_weighted(x, y, weights, l2, prior, ridge_centre(centre) if prior is None else None)
    fitted = evaluate_probabilities(_sigmoid(x @ fit.w), y)
    ratios = x[:, FEATURE_NAMES.index("price_ratio")]
    r_lo, r_hi = np.percentile(ratios, PRICE_RANGE_PERCENTILES)
    if prior is not None:
        # The prior knows the shape of demand where the earlier market was quoted; the new data
        # re-estimate its level there (the intercept is free), so those ratios are trusted too.
        r_lo, r_hi = min(r_lo, prior.ratio_range[0]), max(r_hi, prior.ratio_range[1])
    lead = x[:, FEATURE_NAMES.index("lead_scaled")]
    training = {
        "n": len(ordered),
        "positives": int(y.sum()),
        "data_start": ordered[0].timestamp_utc,
        "data_end": ordered[-1].timestamp_utc,
        "log_loss": round(fitted.log_loss, 6),
        "l2": l2,
        "half_life_days": half_life,
        "effective_sample": round(effective_sample(weights), 1),
        "with_market": int(sum(1 for o in ordered if o.comp_p50 is not None)),
        "lead_scaled_max": float(np.percentile(lead, 99.0)),
        "reference": reference_bins(x),
        **({"prior": prior.as_dict()} if prior is not None else {}),
        **({"ridge_centre": centre.version} if centre is not None and prior is None and centre.market_aware else {}),
        **dict(extra_training or {}),
    }
    model = ConversionModel(
        property_id=property_id,
        version=version,
        coefficients={name: float(c) for name, c in zip(FEATURE_NAMES, fit.w)},
        reference_price=scale.reference_price,
        price_range=price_range(ordered),
        trained_at=trained_at,
        training=training,
        format=ARTIFACT_FORMAT_V2,
        market_reference=scale.market_reference,
        ratio_range=(float(r_lo), float(r_hi)),
    )
    return model, fit


#: What a prior from an earlier market weighs, in outcomes: as much as the least a model may be
#: fitted on (``MIN_OUTCOMES``), so it carries a first fit of the new market and is outweighed
#: by the new data within a day or two of quotes.
PRIOR_OUTCOMES = 200.0


def prior_from(outcomes: Sequence[Outcome], since: str, *, outcomes_worth: float = PRIOR_OUTCOMES, l2: float = L2_PENALTY) -> Prior | None:
    """A prior for relearning after a demand shift, from the outcomes quoted before it.

    The earlier market's fit (recency-weighted, as any fit) and its Laplace posterior ``N(w,
    H^-1)`` -- a power prior: that posterior tempered to weigh ``outcomes_worth`` outcomes (its
    precision scaled by ``outcomes_worth / effective sample``), so old data inform but cannot
    outvote the new market. The intercept is left free (the marginal of the other coefficients
    is kept): a shift moves the level of demand first, and the new data estimate it at once;
    what the old data know and a few hundred new outcomes do not is the shape -- how demand
    falls with price at prices the new market has not been quoted at yet, how it varies with
    lead time, weekday and occupancy. Elasticity can move too: its prior is as wide as
    ``outcomes_worth`` outcomes make it. ``since`` (the shift's onset, ``Outcome.timestamp_utc``
    form) is recorded in the model's training, so its later refits keep learning from then on.

    None when the outcomes cannot be fitted (too few: see ``insufficient_data``).
    """
    if insufficient_data(outcomes):
        return None
    ordered = time_ordered(outcomes)
    scale = _scale(ordered)
    x = design_matrix(ordered, scale)
    weights, _ = recency_weights(ordered)
    try:
        fit = fit_weighted(x, labels(ordered), weights, l2)
        marginal = np.linalg.inv(fit.covariance()[1:, 1:])
    except (TrainingError, np.linalg.LinAlgError):
        return None
    precision = np.zeros_like(fit.hessian)
    precision[1:, 1:] = marginal * (outcomes_worth / max(effective_sample(weights), 1.0))
    ratios = x[:, FEATURE_NAMES.index("price_ratio")]
    r_lo, r_hi = np.percentile(ratios, PRICE_RANGE_PERCENTILES)
    return Prior(fit.w, precision, outcomes_worth, (float(r_lo), float(r_hi)), since)


def train_conversion_model(
    outcomes: Sequence[Outcome],
    *,
    property_id: str,
    version: str,
    trained_at: str,
    l2: float = L2_PENALTY,
    half_life_days: float | None = None,
    extra_training: Mapping[str, Any] | None = None,
    prior: Prior | None = None,
    centre: ConversionModel | None = None,
) -> ConversionModel:
    """Fit a market-aware (v2) conversion model to ``outcomes`` and record what drift detection
    needs about them.

    The artifact's ``training`` field keeps: sample size and positives, the time span, the
    in-sample log loss, the recency half-life, and the reference bins of every feature
    (``reference_bins``).

    Raises ``TrainingError`` (no outcomes, a non-finite fit). The caller decides whether a model
    whose demand does not fall with price may be used (``ConversionModel.demand_falls_with_price``);
    such a model is returned, not refused, so the refusal can be recorded with its coefficient.
    """
    model, _ = fit_conversion_model(
        outcomes,
        property_id=property_id,
        version=version,
        trained_at=trained_at,
        l2=l2,
        half_life_days=half_life_days,
        extra_training=extra_training,
        prior=prior,
        centre=centre,
    )
    return model


def ridge_centre(model: ConversionModel | None) -> FloatArray | None:
    """The coefficients a refit's L2 penalty pulls towards: the live model's (v2 only), not zero.

    Towards zero, the penalty flattens the price slope -- "price does not matter" -- and a flatter
    model prices higher; the cross-fitted referees share the same penalty, so the judgement cannot
    see the bias and a refit was judged +16% over its incumbent while earning 4% less
    (docs/pricing-loop.md, "A refit's penalty pulls towards the live model")."""
    if model is None or not model.market_aware:
        return None
    return coefficient_vector(model)


# -- judging a candidate ----------------------------------------------------------------------

#: Below these a fit is mostly noise: refuse to train (status "skipped").
MIN_OUTCOMES = 200
MIN_POSITIVES = 20
MIN_NEGATIVES = 20
#: A candidate must beat the incumbent's holdout log loss by this share to replace it, so two fits
#: of practically the same data do not churn versions (and caches) every night.
MIN_RELATIVE_IMPROVEMENT = 0.001
#: The posterior's 5th percentile of the revenue lift must exceed this: a margin for what a
#: model-based bound cannot see (a demand curve outside the model's form).
MIN_LIFT_LOWER_BOUND = 0.01
#: A candidate replacing a live model must promise at least this relative revenue lift.
MIN_REVENUE_LIFT = 0.005
#: ... and the improvement must be significant: a one-sided paired z-test on the per-outcome
#: log-loss differences at the 5% level. On a small holdout a worse model wins by luck often.
SIGNIFICANCE_Z = 1.645


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two models' log losses on the same holdout outcomes."""

    mean_improvement: float  # mean of (other's loss - candidate's loss); > 0: candidate better
    z: float

    @property
    def significant(self) -> bool:
        return self.mean_improvement > 0 and self.z >= SIGNIFICANCE_Z

    def as_dict(self) -> dict[str, Any]:
        # An infinite z (every paired difference equal) is reported as None: JSON has no infinity.
        return {
            "mean_log_loss_improvement": round(self.mean_improvement, 6),
            "z": round(self.z, 3) if math.isfinite(self.z) else None,
        }


def compare(candidate_losses: FloatArray, other_losses: FloatArray) -> Comparison:
    """Paired z statistic of the candidate's per-outcome improvement over another model."""
    d = other_losses - candidate_losses
    mean = float(np.mean(d))
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
    if sd == 0.0:
        return Comparison(mean, math.inf if mean > 0 else 0.0)
    return Comparison(mean, mean / (sd / math.sqrt(len(d))))


def insufficient_data(outcomes: Sequence[Outcome]) -> str | None:
    """Why ``outcomes`` are too few to train on, or None when they suffice."""
    positives = sum(1 for o in outcomes if o.accepted)
    negatives = len(outcomes) - positives
    if len(outcomes) < MIN_OUTCOMES:
        return f"{len(outcomes)} outcomes, at least {MIN_OUTCOMES} needed"
    if positives < MIN_POSITIVES:
        return f"{positives} bookings, at least {MIN_POSITIVES} needed"
    if negatives < MIN_NEGATIVES:
        return f"{negatives} unbooked quotes, at least {MIN_NEGATIVES} needed"
    return None


@dataclass(frozen=True)
class Judgement:
    """A candidate model and whether it should replace what prices now, with the figures that say so."""

    deploy: bool
    reason: str
    candidate: ConversionModel
    candidate_holdout: Evaluation
    baseline_holdout: Evaluation
    incumbent_holdout: Evaluation | None
    versus_baseline: Comparison
    versus_incumbent: Comparison | None
    revenue: RevenueComparison | None = None

    def figures(self) -> dict[str, Any]:
        return {
            "candidate": {
                **self.candidate_holdout.as_dict(),
                "price_coefficient": round(self.candidate.price_coefficient, 6),
                "max_price_slope": round(self.candidate.max_price_slope, 6),
            },
            "incumbent": None if self.incumbent_holdout is None else self.incumbent_holdout.as_dict(),
            "baseline": self.baseline_holdout.as_dict(),
            "versus_baseline": self.versus_baseline.as_dict(),
            "versus_incumbent": None if self.versus_incumbent is None else self.versus_incumbent.as_dict(),
            "revenue": None if self.revenue is None else self.revenue.as_dict(),
        }


def train_and_judge(
    outcomes: Sequence[Outcome],
    incumbent: ConversionModel | None,
    *,
    property_id: str,
    version: str,
    trained_at: str,
    l2: float = L2_PENALTY,
    base_price: float | None = None,
    half_life_days: float | None = None,
    against_rules: bool = False,
    prior: Prior | None = None,
) -> Judgement:
    """Fit on the older 80%, judge on the newest 20% in revenue terms, refit on everything if it wins.

    The candidate replaces what prices the property now -- the live model ``incumbent``, or
    rule-based pricing from ``base_price`` when there is none -- only when, on the held-out
    quotes (``policy_evaluation.compare_revenue``):

    * its expected revenue beats the incumbent policy's at the 5th percentile of its posterior
      (for a live model, by at least ``MIN_REVENUE_LIFT`` at the point estimate too, so two fits
      of practically the same data do not churn versions and caches every night);
    * its predicted bookings at the quoted prices match the bookings that happened;
    * the logged exploration (inverse-propensity weighted) does not say it earns less.

    A candidate whose booking probability does not fall with price, for some lead time, weekday
    or occupancy, is refused outright (it would push prices to the ceiling). The log-loss figures
    against the base rate and the incumbent are still computed and reported, not decided on.

    The model returned for deployment is refitted on the whole window, so the newest fifth of the
    data -- the most relevant to tomorrow's prices -- is not thrown away. ``half_life_days``
    overrides the recency weighting (a shorter memory after demand drift). ``against_rules``
    judges the candidate against rules even with a live model (one that already lost to them).
    ``prior`` (``prior_from``) carries what an earlier market taught into every fit here -- the
    trial, the cross-fitting halves and the final model -- so a model of a market that just moved
    can be judged, and win, on a few hundred outcomes; the judgement itself is unchanged.

    Raises ``TrainingError`` when the outcomes cannot be fitted at all.
    """
    # A refit of a live model is pulled towards it rather than towards zero (``ridge_centre``);
    # a first model, and a replacement of one that lost to rules, are not.
    centre = incumbent if incumbent is not None and not against_rules else None
    # Every fit here -- the trial, the final model, the cross-fitting halves -- is made alike.
    fit = partial(
        fit_conversion_model,
        property_id=property_id,
        version=version,
        trained_at=trained_at,
        l2=l2,
        half_life_days=half_life_days,
        prior=prior,
        centre=centre,
    )
    fit_part, holdout = split_holdout(outcomes)
    trial, trial_fit = fit(fit_part)
    y = labels(holdout)
    candidate_p = predict(trial, holdout)
    candidate_losses = log_losses(candidate_p, y)
    baseline_p = np.full(len(y), float(labels(fit_part).mean()))
    versus_baseline = compare(candidate_losses, log_losses(baseline_p, y))
    candidate_holdout = evaluate_probabilities(candidate_p, y)
    baseline_holdout = evaluate_probabilities(baseline_p, y)
    incumbent_holdout = versus_incumbent = None
    if incumbent is not None:
        incumbent_p = predict(incumbent, holdout)
        incumbent_holdout = evaluate_probabilities(incumbent_p, y)
        versus_incumbent = compare(candidate_losses, log_losses(incumbent_p, y))

    final, _ = fit(
        outcomes,
        extra_training={
            "holdout_log_loss": round(candidate_holdout.log_loss, 6),
            "holdout_n": candidate_holdout.n,
            "baseline_log_loss": round(baseline_holdout.log_loss, 6),
        },
    )

    def judged(deploy: bool, reason: str, revenue: RevenueComparison | None = None) -> Judgement:
        return Judgement(
            deploy,
            reason,
            final,
            candidate_holdout,
            baseline_holdout,
            incumbent_holdout,
            versus_baseline,
            versus_incumbent,
            revenue,
        )

    if not trial.demand_falls_with_price or not final.demand_falls_with_price:
        slope = max(trial.max_price_slope, final.max_price_slope)
        return judged(False, f"demand does not fall with price (price slope {slope:+.4f} >= 0 for some quotes)")

    if incumbent is None or against_rules:
        policy, theirs, needed = rules_policy(base_price), "rule-based pricing", 0.0
    else:
        policy, theirs, needed = model_policy(incumbent, base_price), f"incumbent {incumbent.version}", MIN_REVENUE_LIFT
    # Cross-fitting: the older part split in two interleaved halves; each half's model sets prices
    # that the other half's model judges.
    halves = [fit_part[0::2], fit_part[1::2]]
    fitted = [fit(h) for h in halves]
    folds = [
        (fitted[0][0], fitted[1][0], fitted[1][1].w, fitted[1][1].covariance()),
        (fitted[1][0], fitted[0][0], fitted[0][1].w, fitted[0][1].covariance()),
    ]
    revenue = compare_revenue(
        trial,
        trial_fit.w,
        trial_fit.covariance(),
        holdout,
        policy,
        outcome_features,
        seed=int.from_bytes(property_id.encode()[:4].ljust(4, b"\0"), "big"),
        folds=folds,
    )
    ours = (
        f"expected revenue {revenue.lift:+.1%} (95% lower bound {revenue.lift_lower:+.1%}) against {theirs} on {revenue.n} held-out quotes"
    )
    if not revenue.calibrated:
        return judged(
            False,
            f"not better than {theirs}: predicted bookings off by z={revenue.calibration_z:+.2f} "
            f"({revenue.calibration_error:+.1%}) on the held-out quotes; {ours}",
            revenue,
        )
    if revenue.ips_says_worse:
        return judged(
            False,
            f"not better than {theirs}: the logged exploration says it earns less "
            f"(IPS {revenue.ips_lift:+.1%}, upper bound {revenue.ips_upper:+.1%}); {ours}",
            revenue,
        )
    if not (revenue.lift_lower > MIN_LIFT_LOWER_BOUND and revenue.lift >= needed):
        return judged(False, f"not better than {theirs} in revenue: {ours}", revenue)
    prefix = (
        "first model: "
        if incumbent is None
        else (f"replaces {incumbent.version}, which earns less than rules after drift: " if against_rules else "")
    )
    return judged(True, f"{prefix}{ours}", revenue)
