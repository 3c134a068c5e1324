"""The caller's toggles on the ML path: each one changes the price or says why it cannot (no AWS)."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import date, timedelta

import pytest

from pricing.domain.conversion_model import ARTIFACT_FORMAT_V2
from pricing.domain.experiments import NO_EXPERIMENT, Assignment
from pricing.domain.pricing import ML, recommend
from pricing.domain.quote import CompetitorSnapshot, Quote, Toggles
from pricing.domain.simulator import CURVES

NONE = Assignment(None, NO_EXPERIMENT)
MARKET_BLIND = [curve.true_model(f"p-{curve.name}", f"v1-{curve.name}") for curve in CURVES if not curve.log_price]
# The same demand, priced relative to the market (artifact v2, what training writes now): the
# price feature is price / competitor median, else price / the typical market level.
MARKET_AWARE = [
    dataclasses.replace(
        m, version=m.version.replace("v1", "v2"), format=ARTIFACT_FORMAT_V2, market_reference=m.reference_price, ratio_range=(0.6, 1.6)
    )
    for m in MARKET_BLIND
]
MODELS = MARKET_AWARE + MARKET_BLIND


def spread_of_quotes() -> list[Quote]:
    """Lead times, occupancies, markets and guardrails a day's traffic might bring."""
    quotes = []
    for lead, remaining, median, bounds in itertools.product(
        (1, 6, 21, 90), (2, 20, 38), (None, 80.0, 130.0, 220.0), ((None, None), (90.0, 160.0))
    ):
        competitors = None if median is None else CompetitorSnapshot(median * 0.8, median, median * 1.2)
        quotes.append(
            Quote(
                user_id="u",
                property_id="p",
                stay_date=date(2026, 12, 1) + timedelta(days=lead),
                quote_date=date(2026, 12, 1),
                capacity=40,
                remaining=remaining,
                competitors=competitors,
                season="Winter",
                min_price=bounds[0],
                max_price=bounds[1],
            )
        )
    return quotes


def price(quote: Quote, model, **toggles) -> tuple[float, object]:
    result = recommend(quote.__class__(**{**quote.__dict__, "toggles": Toggles(**toggles)}), quote_id="q", assignment=NONE, model=model)
    return result.price, result


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.version)
def test_conservative_at_or_below_plain_at_or_below_aggressive_with_a_strict_gap(model):
    strict = 0
    priced = 0
    for quote in spread_of_quotes():
        plain, plain_result = price(quote, model)
        if plain_result.pricing_method != ML:
            continue  # the model's trusted range misses the guardrails: rules price it
        priced += 1
        low, low_result = price(quote, model, conservative=True)
        high, high_result = price(quote, model, aggressive=True)
        assert low <= plain <= high, (quote, low, plain, high)
        strict += low < plain or plain < high
        for result in (low_result, high_result):
            assert result.pricing_method == ML
            assert result.conf_band[0] <= result.price <= result.conf_band[1]
            if quote.min_price is not None:
                assert quote.min_price <= result.price <= quote.max_price
        assert any("conservative" in r for r in low_result.reasons)
        assert any("aggressive" in r for r in high_result.reasons)
        # Within 3% of the best expected revenue: a strategy, not a giveaway.
        revenue = plain * plain_result.conversion_prob
        assert high * high_result.conversion_prob >= 0.97 * revenue - 1e-9
        assert low * low_result.conversion_prob >= 0.97 * revenue - 1e-9
    assert priced >= 20 and strict >= priced // 2, (priced, strict)


@pytest.mark.parametrize("model", MARKET_AWARE, ids=lambda m: m.version)
def test_use_competitors_changes_what_the_model_is_given_and_seasonality_says_it_has_no_effect(model):
    changed = 0
    for quote in spread_of_quotes():
        if quote.competitors is None:
            continue
        with_market, result = price(quote, model)
        without_market, blind = price(quote, model, use_competitors=False)
        if result.pricing_method != ML or blind.pricing_method != ML:
            continue
        changed += with_market != without_market
        assert any("use_competitors is false" in r for r in blind.reasons), blind.reasons
        no_season, unseasoned = price(quote, model, apply_seasonality=False)
        assert no_season == with_market  # the model has no season feature ...
        assert any("apply_seasonality" in r for r in unseasoned.reasons)  # ... and says so
        assert any("apply_seasonality" in r and "Winter" in r for r in result.reasons)
    assert changed > 0


@pytest.mark.parametrize("model", MARKET_BLIND, ids=lambda m: m.version)
def test_a_market_blind_model_says_use_competitors_has_no_effect(model):
    quote = next(q for q in spread_of_quotes() if q.competitors is not None and q.min_price is None)
    plain, _ = price(quote, model)
    blind, result = price(quote, model, use_competitors=False)
    assert blind == plain and result.pricing_method == ML
    assert any("use_competitors has no effect" in r for r in result.reasons), result.reasons


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.version)
def test_every_set_toggle_is_named_in_the_reasons(model):
    quote = next(q for q in spread_of_quotes() if q.competitors is not None and q.min_price is None)
    for toggles, word in (
        ({"aggressive": True}, "aggressive"),
        ({"conservative": True}, "conservative"),
        ({"use_competitors": False}, "use_competitors"),
        ({"apply_seasonality": False}, "apply_seasonality"),
        ({"use_ml": False}, "use_ml"),
    ):
        _, result = price(quote, model, **toggles)
        assert any(word in r for r in result.reasons), (toggles, result.reasons)
