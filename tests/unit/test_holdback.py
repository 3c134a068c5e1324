"""The rules holdback: which quotes rules price while a model is live, how they are tagged, and
the realised-revenue statistic the nightly guard decides on."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date

import pytest

from pricing.domain import holdback
from pricing.domain.conversion_model import ConversionModel
from pricing.domain.experiments import Assignment
from pricing.domain.exploration import parse_quote_id
from pricing.domain.holdback import MIN_HOLDBACK_BOOKINGS, MIN_HOLDBACK_QUOTES, compare_arms, held_back, is_holdback
from pricing.domain.pricing import ML, RULES, recommend
from pricing.domain.quote import CompetitorSnapshot, Quote, Toggles
from pricing.settings import ConfigurationError, Settings

MODEL = ConversionModel.from_artifact({
    "format": "conversion-logit/v2", "property_id": "p", "version": "v-live", "reference_price": 100.0,
    "price_range": [60.0, 200.0], "market_reference": 100.0, "ratio_range": [0.6, 1.6],
    "coefficients": {"intercept": 3.0, "price_ratio": -3.5},
})


def quote() -> Quote:
    return Quote(user_id="u", property_id="p", stay_date=date(2026, 12, 20), quote_date=date(2026, 12, 1),
                 capacity=100, remaining=40, competitors=CompetitorSnapshot(90.0, 100.0, 120.0))


def priced(quote_id: str, rate: float, model=MODEL):
    return recommend(quote(), quote_id=quote_id, assignment=Assignment(None, "none"), model=model,
                     configured_base=150.0, exploration_rate=0.1, holdback_rate=rate)


def test_the_share_held_back_is_the_rate_and_stable_per_quote():
    ids = [f"q-{i}" for i in range(20_000)]
    share = sum(held_back(i, 0.05) for i in ids) / len(ids)
    assert 0.045 < share < 0.055
    assert [held_back(i, 0.05) for i in ids[:200]] == [held_back(i, 0.05) for i in ids[:200]]
    assert not any(held_back(i, 0.0) for i in ids)
    assert sum(held_back(i, 0.9) for i in ids) / len(ids) < 0.21  # capped at MAX_RATE


def test_a_held_back_quote_is_priced_by_rules_unexplored_and_tagged():
    ids = [f"tok{i}~exp-1~treatment" for i in range(400)]
    held = [i for i in ids if held_back(i, 0.05)]
    assert held
    r = priced(held[0], 0.05)
    rules = priced(held[0], 0.0, model=None)  # what rules alone quote for it (exploration aside)
    assert r.pricing_method == RULES and r.holdback
    assert r.quote_id.startswith(held[0].partition("~")[0] + ".hb~") and r.quote_id.endswith("~exp-1~treatment")
    assert is_holdback(r.quote_id) and parse_quote_id(r.quote_id) is None  # never read as the model's policy
    assert not r.exploration.explored
    assert r.price == (rules.exploration.policy_price or rules.price)
    assert any("Holdback" in reason for reason in r.reasons)
    assert r.to_response(None)["safety"]["holdback"] is True

    kept = next(i for i in ids if not held_back(i, 0.05))
    m = priced(kept, 0.05)
    assert m.pricing_method == ML and not m.holdback and not is_holdback(m.quote_id)
    assert m.to_response(None)["safety"]["holdback"] is False


def test_no_holdback_without_a_model_or_when_rules_are_asked_for():
    held = next(f"q{i}" for i in range(1000) if held_back(f"q{i}", 0.2))
    assert not priced(held, 0.2, model=None).holdback  # rules price anyway: nothing to hold back
    forced = recommend(replace(quote(), toggles=Toggles(use_ml=False)), quote_id=held,
                       assignment=Assignment(None, "none"), model=MODEL, holdback_rate=0.2)
    assert not forced.holdback and not is_holdback(forced.quote_id)


def test_the_holdback_share_is_a_setting_with_a_per_property_off_switch():
    s = Settings.from_env({"HOLDBACK_RATE": "0.1", "HOLDBACK_DISABLED_PROPERTIES": "a, b"})
    assert s.holdback_rate_for("c") == 0.1 and s.holdback_rate_for("a") == 0.0
    assert Settings.from_env({}).holdback_rate_for("c") == holdback.DEFAULT_RATE
    with pytest.raises(ConfigurationError):
        Settings.from_env({"HOLDBACK_RATE": "0.5"})


def arm(rng: random.Random, n: int, price: float, p: float) -> list[float]:
    return [price if rng.random() < p else 0.0 for _ in range(n)]


def test_a_model_earning_clearly_less_than_the_holdback_loses():
    rng = random.Random(1)
    c = compare_arms(arm(rng, 1000, 150.0, 0.10), arm(rng, 60, 100.0, 0.45))  # 15 against 45 per quote
    assert c.enough and c.model_loses
    assert c.difference == pytest.approx(c.model_mean - c.holdback_mean)
    assert c.upper < 0 and -0.8 < c.relative < -0.5
    assert c.as_dict()["model_loses"] is True


def test_a_model_earning_as_much_or_more_does_not_lose():
    rng = random.Random(2)
    assert not compare_arms(arm(rng, 1000, 100.0, 0.45), arm(rng, 60, 100.0, 0.45)).model_loses
    better = compare_arms(arm(rng, 1000, 120.0, 0.45), arm(rng, 60, 100.0, 0.45))
    assert better.difference > 0 and not better.model_loses


def test_too_few_holdback_quotes_or_bookings_decide_nothing():
    rng = random.Random(3)
    few = compare_arms(arm(rng, 1000, 150.0, 0.05), arm(rng, MIN_HOLDBACK_QUOTES - 1, 100.0, 0.6))
    assert not few.enough and not few.model_loses
    # Enough quotes, too few bookings among them: revenue per quote is too lumpy to trust.
    rare = compare_arms([0.0] * 1000, [100.0] * (MIN_HOLDBACK_BOOKINGS - 1) + [0.0] * 200)
    assert not rare.enough and not rare.model_loses
    assert compare_arms([], []).upper == float("inf")


def test_the_guard_is_calibrated_a_model_as_good_as_rules_rarely_loses():
    # One-sided 95%: under no difference, about 5% of checks (or fewer) call the model worse.
    rng = random.Random(4)
    losses = sum(compare_arms(arm(rng, 800, 100.0, 0.4), arm(rng, 80, 100.0, 0.4)).model_loses for _ in range(400))
    assert losses / 400 < 0.09
