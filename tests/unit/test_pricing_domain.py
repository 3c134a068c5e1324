"""The pricing domain: rules, guardrails, the optimiser and the whole decision, with no AWS."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import pytest

from pricing.domain.conversion_model import ConversionModel, ModelFeatures, ModelFormatError, sigmoid
from pricing.domain.experiments import NO_EXPERIMENT, Assignment
from pricing.domain.guardrails import Guardrails
from pricing.domain.optimiser import optimise
from pricing.domain.pricing import ML, RULES, model_features, recommend
from pricing.domain.quote import CompetitorSnapshot, Quote, Toggles
from pricing.domain.rules import DEFAULT_BASE_PRICE, rule_based_price

NONE = Assignment(None, NO_EXPERIMENT)


def make_quote(**overrides) -> Quote:
    base = dict(
        user_id="u1",
        property_id="p1",
        stay_date=date(2026, 12, 16),  # a Wednesday
        quote_date=date(2026, 11, 26),
        capacity=50,
        remaining=25,
    )
    base.update(overrides)
    return Quote(**base)


def make_model(a: float = 4.0, b: float = -4.0, lo: float = 50.0, hi: float = 250.0, **extra) -> ConversionModel:
    coefficients = {"intercept": a, "price_ratio": b, **extra}
    return ConversionModel("p1", "v000001", coefficients, reference_price=100.0, price_range=(lo, hi))


# -- rules ------------------------------------------------------------------------------------


def test_given_no_base_or_competitors_when_priced_by_rules_then_default_base_is_used():
    rule = rule_based_price(make_quote(remaining=25))  # half full, 20 days out, midweek
    assert rule.base == DEFAULT_BASE_PRICE
    assert rule.price == pytest.approx(DEFAULT_BASE_PRICE * 1.05)


def test_scarcity_raises_the_rule_price():
    empty, full = rule_based_price(make_quote(remaining=50)), rule_based_price(make_quote(remaining=1))
    assert full.price > empty.price


def test_competitor_median_is_the_base_without_a_configured_price():
    comp = CompetitorSnapshot(90.0, 120.0, 150.0)
    assert rule_based_price(make_quote(competitors=comp)).base == 120.0
    ignored = make_quote(competitors=comp, toggles=Toggles(use_competitors=False))
    assert rule_based_price(ignored).base == DEFAULT_BASE_PRICE


def test_weekend_season_refundable_and_strategy_move_the_price_the_documented_way():
    plain = rule_based_price(make_quote()).price
    assert rule_based_price(make_quote(day_of_week=5)).price == pytest.approx(plain * 1.10)
    assert rule_based_price(make_quote(season="Summer")).price == pytest.approx(plain * 1.15)
    no_season = make_quote(season="Summer", toggles=Toggles(apply_seasonality=False))
    assert rule_based_price(no_season).price == pytest.approx(plain)
    assert rule_based_price(make_quote(refundable=True)).price > plain
    assert rule_based_price(make_quote(toggles=Toggles(aggressive=True))).price > plain
    assert rule_based_price(make_quote(toggles=Toggles(conservative=True))).price < plain
    assert rule_based_price(make_quote(los=7)).price < plain


def test_last_minute_discount_for_empty_and_premium_for_full():
    near = dict(stay_date=date(2026, 11, 27), day_of_week=2)  # compare like with like: midweek
    assert rule_based_price(make_quote(remaining=45, **near)).price < rule_based_price(make_quote(remaining=45, day_of_week=2)).price
    full_near = rule_based_price(make_quote(remaining=2, **near)).price
    assert full_near > rule_based_price(make_quote(remaining=2, day_of_week=2)).price


# -- guardrails -------------------------------------------------------------------------------


def test_enforce_clamps_to_bounds_and_rounds_inside_them():
    g = Guardrails(min_price=80.005, max_price=120.0)
    assert g.enforce(50.0) == (80.01, True)
    assert g.enforce(500.0) == (120.0, True)
    assert g.enforce(99.999) == (100.0, False)


def test_enforce_snaps_to_the_nearest_allowed_price_within_bounds():
    g = Guardrails(min_price=90.0, allowed_prices=(79.0, 99.0, 129.0, 149.0))
    assert g.enforce(80.0) == (99.0, True)
    assert g.enforce(140.0) == (149.0, True)
    assert g.candidate_grid(1.0, 1000.0, 50) == (99.0, 129.0, 149.0)


def test_guardrails_with_no_admissible_price_are_refused():
    with pytest.raises(ValueError):
        Guardrails(min_price=200.0, allowed_prices=(100.0,))
    with pytest.raises(ValueError):
        Guardrails(min_price=200.0, max_price=100.0)


# -- optimiser --------------------------------------------------------------------------------


def true_revenue_argmax(a: float, b: float, prices) -> float:
    return max(prices, key=lambda p: p * sigmoid(a + b * p / 100.0))


@pytest.mark.parametrize("a,b", [(4.0, -4.0), (2.0, -1.5), (6.0, -5.0), (0.5, -0.8)])
def test_optimiser_picks_the_true_revenue_maximising_grid_point(a, b):
    model = make_model(a, b)
    grid = Guardrails().candidate_grid(50.0, 250.0, 201)
    opt = optimise(model, ModelFeatures(lead_days=0, occupancy=0.0), grid)
    assert opt.best.price == true_revenue_argmax(a, b, grid)
    assert opt.band[0] <= opt.best.price <= opt.band[1]


def test_optimiser_matches_the_analytic_optimum_of_a_logistic_curve():
    # For P = sigmoid(a + b p/100) revenue peaks where 1 + (b p/100)(1 - P) = 0; solve by bisection.
    a, b = 4.0, -4.0
    lo, hi = 1.0, 500.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 1 + (b * mid / 100) * (1 - sigmoid(a + b * mid / 100)) > 0:
            lo = mid
        else:
            hi = mid
    grid = Guardrails().candidate_grid(50.0, 250.0, 2001)
    best = optimise(make_model(a, b), ModelFeatures(lead_days=0, occupancy=0.0), grid).best.price
    assert best == pytest.approx(lo, abs=0.1)


# -- the whole decision -----------------------------------------------------------------------


def test_ml_price_respects_min_and_max_and_reports_clamping():
    model = make_model()
    free = recommend(make_quote(), quote_id="q", assignment=NONE, model=model)
    assert free.pricing_method == ML and not free.clamped
    capped = recommend(make_quote(max_price=free.price - 10), quote_id="q", assignment=NONE, model=model)
    assert capped.price <= free.price - 10 and capped.clamped
    floored = recommend(make_quote(min_price=free.price + 10), quote_id="q", assignment=NONE, model=model)
    assert floored.price >= free.price + 10 and floored.clamped


def test_ml_price_is_a_member_of_the_allowed_grid():
    grid = (59.0, 79.0, 99.0, 119.0, 139.0, 159.0)
    rec = recommend(make_quote(allowed_price_grid=grid), quote_id="q", assignment=NONE, model=make_model())
    assert rec.price in grid and rec.price_grid == grid
    assert rec.conf_band[0] <= rec.price <= rec.conf_band[1]
    assert math.isclose(rec.to_response(None)["expected"]["revenue"], round(rec.price * rec.conversion_prob, 2))


def test_rule_price_is_a_member_of_the_allowed_grid_and_inside_bounds():
    grid = (59.0, 79.0, 99.0, 300.0)
    rec = recommend(make_quote(allowed_price_grid=grid, max_price=200.0), quote_id="q", assignment=NONE, model=None)
    assert rec.pricing_method == RULES and rec.price in grid and rec.price <= 200.0


def test_no_model_falls_back_to_rules_and_says_why():
    rec = recommend(make_quote(), quote_id="q", assignment=NONE, model=None, fallback_reason="model store unavailable")
    assert rec.pricing_method == RULES
    assert any("model store unavailable" in r for r in rec.reasons)


def test_use_ml_false_and_control_arm_force_rules():
    model = make_model()
    off = recommend(make_quote(toggles=Toggles(use_ml=False)), quote_id="q", assignment=NONE, model=model)
    control = recommend(make_quote(), quote_id="q", assignment=Assignment("exp1", "control"), model=model)
    treatment = recommend(make_quote(), quote_id="q", assignment=Assignment("exp1", "treatment"), model=model)
    assert (off.pricing_method, control.pricing_method, treatment.pricing_method) == (RULES, RULES, ML)
    assert control.to_response(None)["safety"]["experiment_id"] == "exp1"


def test_model_range_outside_guardrails_falls_back_to_rules():
    rec = recommend(make_quote(min_price=1000.0), quote_id="q", assignment=NONE, model=make_model(hi=250.0))
    assert rec.pricing_method == RULES and rec.price >= 1000.0
    assert any("outside the guardrails" in r for r in rec.reasons)


def test_features_reflect_the_quote():
    f = model_features(make_quote(day_of_week=4, refundable=True, los=3, remaining=10))
    assert f == ModelFeatures(lead_days=20, occupancy=0.8, weekend=True, refundable=True, los=3)
    assert replace(f, weekend=False) != f


# -- the artifact -----------------------------------------------------------------------------


def test_artifact_round_trips_and_rejects_corruption():
    model = make_model(lead_scaled=0.3)
    assert ConversionModel.from_artifact(model.to_artifact()) == model
    bad = model.to_artifact()
    for corrupt in (
        {**bad, "format": "other/v9"},
        {**bad, "coefficients": {"intercept": 1.0, "price_ratio": float("nan")}},
        {**bad, "coefficients": {"intercept": 1.0, "price_ratio": 0.5}},
        {**bad, "coefficients": {"bogus": 1.0, "price_ratio": -1.0}},
        {**bad, "reference_price": -3},
        {k: v for k, v in bad.items() if k != "price_range"},
        ["not", "an", "object"],
    ):
        with pytest.raises(ModelFormatError):
            ConversionModel.from_artifact(corrupt)


# -- the service-wide cap (issue 12) ------------------------------------------------------------

from pricing.domain.guardrails import MAX_PRICE, MIN_PRICE  # noqa: E402


def _all_prices(rec) -> list[float]:
    return [rec.price, *rec.price_grid, *rec.conf_band]


def test_a_rule_price_from_competitor_prices_at_the_cap_stays_at_the_cap():
    """Competitor prices of 1e10 and no caller bounds once gave 19365885000.0."""
    comp = CompetitorSnapshot(p10=MAX_PRICE, p50=MAX_PRICE, p90=MAX_PRICE, source="request")
    quote = make_quote(
        competitors=comp, remaining=0, stay_date=date(2026, 11, 27), season="Summer", refundable=True, toggles=Toggles(aggressive=True)
    )
    rec = recommend(quote, quote_id="q", assignment=NONE, model=None)
    assert rec.pricing_method == RULES
    assert rec.price == MAX_PRICE and rec.clamped
    assert all(MIN_PRICE <= p <= MAX_PRICE for p in _all_prices(rec)), _all_prices(rec)


def test_a_configured_base_beyond_the_cap_is_priced_at_the_cap():
    rec = recommend(make_quote(), quote_id="q", assignment=NONE, model=None, configured_base=1e12)
    assert rec.price == MAX_PRICE and all(p <= MAX_PRICE for p in _all_prices(rec))


def test_a_model_trusted_beyond_the_cap_prices_inside_it():
    model = make_model(a=4.0, b=-0.5, lo=5e9, hi=5e10)
    rec = recommend(make_quote(), quote_id="q", assignment=NONE, model=model)
    assert rec.pricing_method == ML
    assert all(MIN_PRICE <= p <= MAX_PRICE for p in _all_prices(rec)), _all_prices(rec)


@pytest.mark.parametrize("price", [1.5e10, 1e300, float("inf")])
def test_enforce_never_returns_a_price_above_the_cap(price):
    assert Guardrails().enforce(price)[0] == MAX_PRICE
    assert Guardrails(min_price=1.0).enforce(price)[0] == MAX_PRICE
