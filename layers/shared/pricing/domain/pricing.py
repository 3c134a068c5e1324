"""One quote in, one recommendation out: the pricing decision, pure and deterministic.

The service layer gathers the inputs (the assignment, the live model if any, the property's
base price, competitor prices, a quote id); this module decides the price. Every path ends in
``Guardrails``, so no recommendation can leave the caller's bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pricing.domain import holdback
from pricing.domain.conversion_model import ConversionModel, ModelFeatures
from pricing.domain.experiments import Assignment
from pricing.domain.exploration import NOT_EXPLORED, Exploration, explore, tag_quote_id
from pricing.domain.guardrails import Guardrails, round_price
from pricing.domain.optimiser import Optimum, optimise
from pricing.domain.quote import Quote
from pricing.domain.rules import rule_based_price

ML, RULES = "ml_elasticity", "rule_based"
GRID_POINTS = 101
RULE_GRID_SPREAD = 0.2  # rule-based candidates span +-20% around the rule price
RULE_GRID_POINTS = 9
RULE_BAND = 0.10
# Rule-based pickup: share of the still-unsold rooms expected to sell by the stay date.
RULE_PICKUP_FAR, RULE_PICKUP_NEAR = 0.6, 0.3


@dataclass(frozen=True)
class Recommendation:
    price: float
    price_grid: tuple[float, ...]
    conf_band: tuple[float, float]
    occ_now: float
    occ_end_bucket: float
    reasons: tuple[str, ...]
    pricing_method: str
    assignment: Assignment
    quote_id: str
    clamped: bool
    model_version: str | None = None
    conversion_prob: float | None = None
    exploration: Exploration = NOT_EXPLORED
    holdback: bool = False

    def to_response(self, competitor_data: dict[str, Any] | None) -> dict[str, Any]:
        expected = {"occ_now": round(self.occ_now, 4), "occ_end_bucket": round(self.occ_end_bucket, 4)}
        if self.conversion_prob is not None:
            expected["conversion_prob"] = round(self.conversion_prob, 6)
            expected["revenue"] = round(self.price * self.conversion_prob, 2)
        return {
            "price": self.price,
            "price_grid": list(self.price_grid),
            "conf_band": {"lower": self.conf_band[0], "upper": self.conf_band[1]},
            "expected": expected,
            "reasons": list(self.reasons),
            "safety": {
                "pricing_method": self.pricing_method,
                "ab_variant": self.assignment.variant,
                "experiment_id": self.assignment.experiment_id,
                "model_version": self.model_version,
                "quote_id": self.quote_id,
                "competitor_data": competitor_data,
                "clamped": self.clamped,
                "exploration": self.exploration.as_dict(),
                "holdback": self.holdback,
            },
        }


def market_price(quote: Quote) -> float | None:
    """The competitor median the quote is priced against (None: none given, or not to be used)."""
    comp = quote.competitors
    if comp is None or comp.p50 is None or not quote.toggles.use_competitors:
        return None
    return comp.p50


def model_features(quote: Quote) -> ModelFeatures:
    return ModelFeatures(
        lead_days=quote.lead_days,
        occupancy=min(quote.occupancy, 1.0),
        weekend=quote.weekday in (4, 5),
        refundable=quote.refundable,
        los=quote.los,
        market_price=market_price(quote),
    )


def _strategy_price(model: ConversionModel, features: ModelFeatures, opt: Optimum, quote: Quote) -> tuple[float, list[str]]:
    """The price the caller's strategy picks from the near-optimal band (prices within 3% of the
    best expected revenue, all inside the guardrails): ``aggressive`` chases rate (the band's
    highest price, at or above the optimum), ``conservative`` protects occupancy (its lowest, at
    or below). The revenue given up is at most 3%, and said."""
    best = opt.best
    if not (quote.toggles.aggressive or quote.toggles.conservative):
        return best.price, []
    name, price = ("aggressive", opt.band[1]) if quote.toggles.aggressive else ("conservative", opt.band[0])
    aim = "chases rate" if name == "aggressive" else "protects occupancy"
    if price == best.price:
        return price, [
            f"Strategy {name} ({aim}): the revenue optimum {price:.2f} is already the band's "
            f"{'highest' if name == 'aggressive' else 'lowest'} price"
        ]
    prob = model.probability(price, features)
    return price, [
        f"Strategy {name} ({aim}): {price:.2f} instead of the optimum {best.price:.2f}, "
        f"P(book)={prob:.3f}, expected revenue {price * prob:.2f} (within 3% of the best)"
    ]


def _seasonality_reason(model: ConversionModel, quote: Quote) -> list[str]:
    # The conversion model has no season feature: what a season does to demand it learns through
    # lead time, weekday and the market price. Saying so beats silently ignoring the toggle.
    if not quote.toggles.apply_seasonality:
        return [f"apply_seasonality is false: no effect on model {model.version}, which has no season feature"]
    if quote.season:
        return [
            f"Season {quote.season} not applied: model {model.version} has no season feature "
            "(apply_seasonality changes only rule-based prices)"
        ]
    return []


def _market_reason(model: ConversionModel, quote: Quote, features: ModelFeatures) -> list[str]:
    if not model.market_aware:
        toggle = " (use_competitors has no effect)" if not quote.toggles.use_competitors else ""
        return ["Model is market-blind (artifact v1): competitor prices do not move its price" + toggle]
    if model.uses_market(features):
        return []
    why = "use_competitors is false" if not quote.toggles.use_competitors else "no competitor data for this quote"
    return [f"Priced against the model's typical market level {model.anchor(features):.2f}: {why}"]


def _band(guardrails: Guardrails, price: float, lo: float, hi: float) -> tuple[float, float]:
    lower = min(price, guardrails.enforce(lo)[0])
    upper = max(price, guardrails.enforce(hi)[0])
    return lower, upper


def _competitor_reason(quote: Quote) -> list[str]:
    comp = quote.competitors
    if comp is None or comp.p50 is None or not quote.toggles.use_competitors:
        return []
    return [f"Competitor median {comp.p50:.2f} ({comp.source})"]


def recommend(
    quote: Quote,
    *,
    quote_id: str,
    assignment: Assignment,
    model: ConversionModel | None,
    configured_base: float | None = None,
    fallback_reason: str | None = None,
    exploration_rate: float = 0.0,
    holdback_rate: float = 0.0,
    exploration_direction: int = 0,
) -> Recommendation:
    """Price ``quote``: with ``model`` when ML pricing is wanted and the model is usable, else by rules.

    ML is wanted when the caller allows it (``toggles.use_ml``) and the assignment does not put
    the unit in the rule-based arm. ``fallback_reason`` says why no model was given (store down,
    no model yet), and is reported when ML was wanted.

    ``exploration_rate`` is the share of quotes priced at a neighbour of the policy's price
    (``pricing.domain.exploration``); only when ML is wanted -- a caller forcing rules, or the
    control arm of an experiment, gets the rule price itself. The quote id then carries the
    exploration tag, and ``safety.exploration`` says what was done. ``exploration_direction``
    keeps a rules price's exploration on one side of it (``exploration.direction_of``); a
    model's optimum is explored on both.

    ``holdback_rate`` is the share of the quotes the model would price that rules price instead,
    unexplored (``pricing.domain.holdback``): the quote id carries the holdback tag and
    ``safety.holdback`` is true.
    """
    guardrails = Guardrails(quote.min_price, quote.max_price, quote.allowed_price_grid)
    wants_ml = quote.toggles.use_ml and assignment.method != RULES
    reasons: list[str] = []
    if not quote.toggles.use_ml:
        reasons.append("ML pricing disabled by toggles.use_ml")
    elif assignment.method == RULES:
        reasons.append(f"Experiment {assignment.experiment_id}: control arm uses rule-based pricing")

    rate = exploration_rate if wants_ml else 0.0
    held = wants_ml and model is not None and holdback.held_back(quote_id, holdback_rate)
    if held and model is not None:
        reasons.append(f"Holdback: priced by rules to measure live model {model.version} against them ({holdback_rate:.0%} of quotes)")
        quote_id, rate, model = holdback.tag_quote_id(quote_id), 0.0, None
    if wants_ml and model is not None:
        features = model_features(quote)
        lo, hi = model.trusted_prices(features)
        grid = guardrails.candidate_grid(lo, hi, GRID_POINTS) if model.price_slope(features) < 0 else ()
        if grid:
            opt = optimise(model, features, grid)
            # Without guardrails the unconstrained grid is this very grid: priced once, not twice.
            unbounded = Guardrails()
            free = opt if guardrails == unbounded else optimise(model, features, unbounded.candidate_grid(lo, hi, GRID_POINTS))
            best = opt.best
            clamped = not guardrails.admits(free.best.price)
            target, strategy_reasons = _strategy_price(model, features, opt, quote)
            price, exploration = explore(target, guardrails, rate, quote_id)
            prob = best.conversion_prob if price == best.price else model.probability(price, features)
            occ_end = min(1.0, quote.occupancy + prob * quote.remaining / quote.capacity)
            reasons += [
                f"ML elasticity model {model.version}: P(book)={best.conversion_prob:.3f} at "
                f"{best.price:.2f}, expected revenue {best.revenue:.2f}",
                f"Evaluated {opt.evaluated} candidate prices from {grid[0]:.2f} to {grid[-1]:.2f}",
                *_competitor_reason(quote),
                *_market_reason(model, quote, features),
                *strategy_reasons,
                *_seasonality_reason(model, quote),
            ]
            if clamped:
                reasons.append(f"Unconstrained optimum {free.best.price:.2f} moved inside the guardrails")
            if exploration.explored:
                reasons.append(_exploration_reason(exploration, price, prob * price - best.revenue))
            return Recommendation(
                price=price,
                price_grid=grid,
                conf_band=_band(guardrails, best.price, *opt.band),
                occ_now=quote.occupancy,
                occ_end_bucket=occ_end,
                reasons=tuple(reasons),
                pricing_method=ML,
                assignment=assignment,
                quote_id=tag_quote_id(quote_id, exploration) if rate > 0 else quote_id,
                clamped=clamped,
                model_version=model.version,
                conversion_prob=prob,
                exploration=exploration,
            )
        if model.price_slope(model_features(quote)) >= 0:
            fallback_reason = "the model's demand does not fall with price for this quote"
        else:
            fallback_reason = "the model's trusted price range lies outside the guardrails"

    if wants_ml and not held:
        reasons.append(f"Fell back to rule-based pricing: {fallback_reason or 'no model available'}")
    rule = rule_based_price(quote, configured_base)
    price, clamped = guardrails.enforce(rule.price)
    reasons += [*rule.reasons, *_competitor_reason(quote)]
    if clamped:
        reasons.append(f"Rule price {rule.price:.2f} moved to {price:.2f} by the guardrails")
    rule_price = price
    price, exploration = explore(rule_price, guardrails, rate, quote_id, exploration_direction)
    if exploration.explored:
        reasons.append(_exploration_reason(exploration, price, None))
    spread = RULE_GRID_SPREAD * rule_price
    grid = tuple(sorted({price, *guardrails.candidate_grid(rule_price - spread, rule_price + spread, RULE_GRID_POINTS)}))
    pickup = RULE_PICKUP_NEAR if quote.lead_days < 14 else RULE_PICKUP_FAR
    occ_end = min(1.0, quote.occupancy + pickup * quote.remaining / quote.capacity)
    return Recommendation(
        price=price,
        price_grid=grid,
        conf_band=_band(guardrails, price, round_price(rule_price * (1 - RULE_BAND)), round_price(rule_price * (1 + RULE_BAND))),
        occ_now=quote.occupancy,
        occ_end_bucket=occ_end,
        reasons=tuple(reasons),
        pricing_method=RULES,
        assignment=assignment,
        quote_id=tag_quote_id(quote_id, exploration) if rate > 0 else quote_id,
        clamped=clamped,
        exploration=exploration,
        holdback=held,
    )


def _exploration_reason(e: Exploration, price: float, revenue_change: float | None) -> str:
    cost = "" if revenue_change is None else f", expected revenue {revenue_change:+.2f} by the model"
    side = {-1: ", below rules: where the last refused model would price", 1: ", above rules: where the last refused model would price"}
    return (
        f"Exploring: quoted {price:.2f} instead of {e.policy_price:.2f} "
        f"(arm {e.arm:+d}, probability {e.propensity:.4f}{cost}{side.get(e.direction, '')})"
    )
