"""The market-aware conversion model (artifact v2) and exploration inside the guardrails."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from pricing.domain.conversion_model import (
    ARTIFACT_FORMAT_V2,
    ConversionModel,
    ModelFeatures,
    ModelFormatError,
)
from pricing.domain.experiments import CONTROL, NO_EXPERIMENT, Assignment
from pricing.domain.exploration import (
    BOTH,
    DOWN,
    MAX_RATE,
    UP,
    direction_of,
    explore,
    neighbours,
    next_direction,
    parse_quote_id,
    tag_quote_id,
)
from pricing.domain.guardrails import Guardrails
from pricing.domain.pricing import ML, RULES, recommend
from pricing.domain.quote import CompetitorSnapshot, Quote, Toggles
from pricing.settings import Settings

NONE = Assignment(None, NO_EXPERIMENT)

# Demand falls with price relative to the market; far from the stay, guests are less sensitive.
V2 = ConversionModel(
    "p1",
    "v2-1",
    {"intercept": 5.0, "price_ratio": -6.0, "price_x_lead": 0.8, "lead_scaled": -0.5, "occupancy": 0.9, "no_market": -0.2},
    reference_price=100.0,
    price_range=(40.0, 400.0),
    format=ARTIFACT_FORMAT_V2,
    market_reference=110.0,
    ratio_range=(0.4, 1.6),
    training={"lead_scaled_max": 4.0},
)


def quote(p50: float | None = 120.0, use_competitors: bool = True, **overrides) -> Quote:
    base = dict(
        user_id="u1",
        property_id="p1",
        stay_date=date(2026, 12, 16),
        quote_date=date(2026, 11, 26),
        capacity=50,
        remaining=25,
        toggles=Toggles(use_competitors=use_competitors),
        competitors=None if p50 is None else CompetitorSnapshot(p50 * 0.8, p50, p50 * 1.2),
    )
    base.update(overrides)
    return Quote(**base)


# -- the market-aware model --------------------------------------------------------------------


def test_the_price_follows_the_competitor_median():
    prices = [recommend(quote(p50), quote_id="q", assignment=NONE, model=V2).price for p50 in (50.0, 120.0, 300.0)]
    assert prices[0] < prices[1] < prices[2]
    assert prices[2] / prices[0] == pytest.approx(300 / 50, rel=0.05)  # the same ratio to the market


def test_without_competitor_data_the_model_says_what_it_priced_against():
    rec = recommend(quote(None), quote_id="q", assignment=NONE, model=V2)
    assert rec.pricing_method == ML
    assert any("typical market level 110.00: no competitor data" in r for r in rec.reasons)


def test_use_competitors_false_ignores_the_market():
    off = recommend(quote(300.0, use_competitors=False), quote_id="q", assignment=NONE, model=V2)
    none = recommend(quote(None), quote_id="q", assignment=NONE, model=V2)
    assert off.price == none.price
    assert any("use_competitors is false" in r for r in off.reasons)


def test_elasticity_changes_with_lead_time():
    near, far = ModelFeatures(lead_days=1, occupancy=0.5, market_price=100.0), ModelFeatures(90, 0.5, market_price=100.0)
    assert V2.price_slope(near) < V2.price_slope(far) < 0
    assert V2.demand_falls_with_price


def test_a_v2_artifact_round_trips_and_a_v1_artifact_still_loads_market_blind():
    assert ConversionModel.from_artifact(V2.to_artifact()) == V2
    v1 = ConversionModel.from_artifact(
        {
            "format": "conversion-logit/v1",
            "property_id": "p1",
            "version": "old",
            "reference_price": 100.0,
            "price_range": [50.0, 200.0],
            "coefficients": {"intercept": 4.0, "price_ratio": -4.0},
        }
    )
    assert not v1.market_aware
    prices = {recommend(quote(p50), quote_id="q", assignment=NONE, model=v1).price for p50 in (50.0, 300.0)}
    assert len(prices) == 1  # an old model prices as it always did
    assert any("market-blind" in r for r in recommend(quote(), quote_id="q", assignment=NONE, model=v1).reasons)


def test_demand_rising_with_price_for_some_quotes_is_refused():
    rising_far_out = {**V2.to_artifact(), "coefficients": {**V2.coefficients, "price_x_lead": 2.0}}
    with pytest.raises(ModelFormatError, match="does not fall with price"):
        ConversionModel.from_artifact(rising_far_out)
    with pytest.raises(ModelFormatError):
        ConversionModel.from_artifact({**V2.to_artifact(), "market_reference": -1})


# -- exploration -------------------------------------------------------------------------------


def test_exploration_rate_and_propensities_are_what_the_quote_says():
    arms = Counter()
    for i in range(4000):
        rec = recommend(quote(), quote_id=f"q{i}", assignment=NONE, model=V2, exploration_rate=0.1)
        e = rec.exploration
        arms[e.arm] += 1
        assert rec.price == (e.policy_price if not e.explored else rec.price)
        assert e.propensity == pytest.approx(0.9 if e.arm == 0 else 0.1 / 4)
        assert parse_quote_id(rec.quote_id).arm == e.arm  # the quote id carries it to /learn
        assert rec.to_response(None)["safety"]["exploration"]["explored"] == e.explored
    assert 0.08 < 1 - arms[0] / 4000 < 0.12
    assert set(arms) == {-2, -1, 0, 1, 2}


def test_exploration_never_leaves_min_max_or_the_allowed_grid():
    bounded = quote(min_price=100.0, max_price=110.0)
    grid = (90.0, 95.0, 100.0, 105.0, 250.0)
    gridded = quote(allowed_price_grid=grid, max_price=200.0)
    for i in range(500):
        for q, check in ((bounded, lambda p: 100.0 <= p <= 110.0), (gridded, lambda p: p in grid and p <= 200.0)):
            for model in (V2, None):
                rec = recommend(q, quote_id=f"q{i}", assignment=NONE, model=model, exploration_rate=MAX_RATE, configured_base=100.0)
                assert check(rec.price), (rec.price, rec.exploration)


def test_a_neighbour_clamped_by_the_guardrails_is_not_an_arm():
    assert [arm for arm, _ in neighbours(100.0, Guardrails(max_price=105.0))] == [-2, -1]
    assert explore(100.0, Guardrails(100.0, 100.0), 0.2, "q")[1].propensity == 1.0  # nowhere to go


def test_no_exploration_when_rules_are_forced_switched_off_or_in_the_control_arm():
    for kwargs in ({"assignment": Assignment("exp-1", CONTROL)}, {"assignment": NONE, "exploration_rate": 0.0}):
        kwargs.setdefault("exploration_rate", 0.25)
        for i in range(200):
            assert not recommend(quote(), quote_id=f"q{i}", model=V2, **kwargs).exploration.explored
    forced = quote(toggles=Toggles(use_ml=False))
    assert all(
        not recommend(forced, quote_id=f"q{i}", assignment=NONE, model=V2, exploration_rate=0.25).exploration.explored for i in range(200)
    )
    settings = Settings(exploration_rate=0.1, exploration_disabled_properties=frozenset({"p1"}))
    assert settings.exploration_rate_for("p1") == 0.0 and settings.exploration_rate_for("p2") == 0.1
    env = Settings.from_env({"EXPLORATION_RATE": "0.05", "EXPLORATION_DISABLED_PROPERTIES": "a, b"})
    assert env.exploration_rate == 0.05 and env.exploration_disabled_properties == {"a", "b"}


def test_rules_explore_too_when_a_property_has_no_model_yet():
    explored = [
        recommend(quote(), quote_id=f"q{i}", assignment=NONE, model=None, exploration_rate=0.1, configured_base=100.0) for i in range(300)
    ]
    assert all(r.pricing_method == RULES for r in explored)
    assert any(r.exploration.explored for r in explored)


def test_the_exploration_tag_keeps_experiment_attribution():
    from pricing.domain.experiments import attribution_of

    rec = recommend(quote(), quote_id="tok~exp-1~treatment", assignment=Assignment("exp-1", "treatment"), model=V2, exploration_rate=0.1)
    assert attribution_of(rec.quote_id) == Assignment("exp-1", "treatment")
    assert parse_quote_id(rec.quote_id) is not None
    assert parse_quote_id("0f5d9a493f5a49b69dd4efc925220695") is None  # an old quote id
    assert tag_quote_id("a~b~control", explore(100.0, Guardrails(), 0.0, "a")[1]).startswith("a.x0p1~b~")


# -- directed while rules price ------------------------------------------------------------------


def test_a_direction_keeps_the_neighbours_on_its_side_and_the_propensities_exact():
    assert [arm for arm, _ in neighbours(100.0, Guardrails(), DOWN)] == [-2, -1]
    assert [arm for arm, _ in neighbours(100.0, Guardrails(), UP)] == [1, 2]
    assert [arm for arm, _ in neighbours(100.0, Guardrails(max_price=105.0), UP)] == []  # clamped: no arm
    grid = (80.0, 90.0, 100.0, 110.0, 120.0)
    assert [p for _, p in neighbours(100.0, Guardrails(allowed_prices=grid), DOWN)] == [80.0, 90.0]
    arms = Counter()
    for i in range(4000):
        rec = recommend(
            quote(), quote_id=f"q{i}", assignment=NONE, model=None, exploration_rate=0.1, configured_base=100.0, exploration_direction=DOWN
        )
        e = rec.exploration
        arms[e.arm] += 1
        assert e.propensity == pytest.approx(0.9 if e.arm == 0 else 0.1 / 2)
        assert rec.price <= e.policy_price
        assert parse_quote_id(rec.quote_id).propensity == pytest.approx(e.propensity)
        assert rec.to_response(None)["safety"]["exploration"]["direction"] == "down"
    assert set(arms) == {-2, -1, 0} and 0.08 < 1 - arms[0] / 4000 < 0.12
    explored = next(
        r
        for i in range(400)
        if (
            r := recommend(
                quote(),
                quote_id=f"q{i}",
                assignment=NONE,
                model=None,
                exploration_rate=0.1,
                configured_base=100.0,
                exploration_direction=UP,
            )
        ).exploration.explored
    )
    assert explored.price > explored.exploration.policy_price
    assert "above rules" in explored.reasons[-1]


def test_a_model_explores_both_sides_of_its_optimum_whatever_the_direction():
    arms = {
        recommend(quote(), quote_id=f"q{i}", assignment=NONE, model=V2, exploration_rate=0.2, exploration_direction=DOWN).exploration.arm
        for i in range(1000)
    }
    assert arms == {-2, -1, 0, 1, 2}


def test_the_direction_is_where_most_of_a_candidates_prices_lie():
    assert direction_of([90, 95, 99, 101], [100] * 4) == BOTH  # 2 of 4 below by more than 1%: not enough
    assert direction_of([90, 95, 98, 120], [100] * 4) == DOWN  # 3 of 4
    assert direction_of([110, 120, 130, 80], [100] * 4) == UP
    assert direction_of([90, 95, 110, 120], [100] * 4) == BOTH
    assert direction_of([99.5, 100.5, 100, 100], [100] * 4) == BOTH  # within 1%: neither side
    assert direction_of([], []) == BOTH
    assert Settings().exploration_directed and not Settings.from_env({"EXPLORATION_DIRECTED": "false"}).exploration_directed
    with pytest.raises(ValueError):
        Settings.from_env({"EXPLORATION_DIRECTED": "sometimes"})


def test_a_candidate_without_a_side_keeps_the_direction_and_one_with_the_other_side_turns_it():
    assert next_direction(BOTH, DOWN) == DOWN
    assert next_direction(UP, DOWN) == UP
    assert next_direction(DOWN, BOTH) == DOWN
    assert next_direction(BOTH, BOTH) == BOTH
