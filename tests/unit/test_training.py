"""Fitting and judging conversion models (pricing.domain.training): numpy only, no AWS."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pricing.domain.conversion_model import FEATURE_NAMES, ConversionModel
from pricing.domain.outcomes import validate_outcome
from pricing.domain.simulator import CURVES, DemandCurve, simulate_outcomes
from pricing.domain.training import (
    DRIFT_FEATURES,
    MIN_OUTCOMES,
    TrainingError,
    compare,
    design_matrix,
    fit_logistic,
    fit_weighted,
    insufficient_data,
    predict,
    split_holdout,
    train_and_judge,
    train_conversion_model,
)

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
CITY, SKI = CURVES[0], CURVES[2]


def outcomes_of(curve: DemandCurve, n: int, seed: int = 1, **kwargs):
    return [validate_outcome(o, NOW) for o in simulate_outcomes(curve, n, seed=seed, now=NOW, **kwargs)]


def test_fit_recovers_a_known_logistic_model():
    rng = np.random.default_rng(5)
    x = np.column_stack([np.ones(20000), rng.uniform(0.5, 2, 20000), rng.uniform(0, 1, 20000)])
    true = np.array([1.5, -2.0, 0.8])
    y = (rng.random(20000) < 1 / (1 + np.exp(-x @ true))).astype(float)

    w = fit_logistic(x, y, l2=1e-6)

    assert np.allclose(w, true, atol=0.12)


def test_fit_is_deterministic_and_a_constant_column_gets_no_weight():
    outcomes = outcomes_of(CITY, 600)  # refundable and los never vary in the simulation
    a = train_conversion_model(outcomes, property_id="p", version="v", trained_at="t")
    b = train_conversion_model(list(reversed(outcomes)), property_id="p", version="v", trained_at="t")
    assert a.coefficients == b.coefficients  # bit for bit, whatever the read order
    assert a.coefficients["refundable"] == pytest.approx(0.0, abs=1e-9)
    assert a.coefficients["los_scaled"] == pytest.approx(0.0, abs=1e-9)


def test_training_learns_the_simulated_curve():
    model = train_conversion_model(outcomes_of(SKI, 6000), property_id="p", version="v", trained_at="t")
    truth = SKI.true_model("p", "truth")
    # Different reference prices: compare the price effect per unit of price.
    assert model.price_coefficient / model.reference_price == pytest.approx(truth.price_coefficient / truth.reference_price, rel=0.15)
    assert model.coefficients["occupancy"] == pytest.approx(SKI.occupancy_effect, rel=0.15)


def test_the_artifact_records_what_drift_and_scoring_need():
    outcomes = outcomes_of(CITY, 400)
    model = train_conversion_model(outcomes, property_id="p", version="v1", trained_at="2026-11-26T12:00:00Z")
    assert model.reference_price == pytest.approx(np.median([o.quoted_price for o in outcomes]))
    lo, hi = model.price_range
    prices = sorted(o.quoted_price for o in outcomes)
    assert prices[0] <= lo < hi <= prices[-1]
    t = model.training
    assert (t["n"], t["positives"]) == (400, sum(o.accepted for o in outcomes))
    assert t["data_start"] < t["data_end"]
    assert set(t["reference"]) == set(DRIFT_FEATURES)  # the price terms are ours, not the market's
    for name in DRIFT_FEATURES:
        bins = t["reference"][name]
        assert len(bins["proportions"]) == len(bins["edges"]) + 1
        assert sum(bins["proportions"]) == pytest.approx(1.0)
    # The artifact round-trips through the scorer's parser.
    assert ConversionModel.from_artifact(model.to_artifact()) == model


def test_vectorised_predictions_equal_the_scorers_probability():
    outcomes = outcomes_of(CITY, 300)
    model = train_conversion_model(outcomes, property_id="p", version="v", trained_at="t")
    p = predict(model, outcomes[:50])
    expected = [model.probability(o.quoted_price, o.features()) for o in outcomes[:50]]
    assert np.allclose(p, expected, rtol=1e-12, atol=1e-15)
    assert design_matrix(outcomes[:3], model).shape == (3, len(FEATURE_NAMES))


def test_holdout_is_the_newest_fifth():
    outcomes = outcomes_of(CITY, 250)
    older, newest = split_holdout(list(reversed(outcomes)))
    assert (len(older), len(newest)) == (200, 50)
    assert max(o.timestamp_utc for o in older) <= min(o.timestamp_utc for o in newest)


def test_minimums():
    assert insufficient_data(outcomes_of(CITY, MIN_OUTCOMES - 1)).startswith(f"{MIN_OUTCOMES - 1} outcomes")
    never_booked = [replace(o, accepted=False) for o in outcomes_of(CITY, 300)]
    assert "bookings" in insufficient_data(never_booked)
    always_booked = [replace(o, accepted=True) for o in outcomes_of(CITY, 300)]
    assert "unbooked" in insufficient_data(always_booked)
    assert insufficient_data(outcomes_of(CITY, 300)) is None
    with pytest.raises(TrainingError):
        train_conversion_model([], property_id="p", version="v", trained_at="t")


def test_first_model_deploys_when_it_beats_rules_in_revenue():
    judgement = train_and_judge(outcomes_of(CITY, 2000), None, property_id="p", version="v", trained_at="t", base_price=CITY.base_price)
    assert judgement.deploy, judgement.reason
    assert judgement.reason.startswith("first model: expected revenue +")
    assert "against rule-based pricing on 400 held-out quotes" in judgement.reason
    revenue = judgement.figures()["revenue"]
    assert 0 < revenue["lift_lower"] < revenue["lift"] < revenue["lift_upper"]
    assert abs(revenue["calibration_error"]) < 0.15
    assert judgement.candidate.training["holdout_n"] == 400
    assert judgement.candidate.training["n"] == 2000  # refitted on the whole window
    figures = judgement.figures()
    assert figures["candidate"]["log_loss"] < figures["baseline"]["log_loss"]
    assert figures["versus_baseline"]["z"] >= 1.645
    assert figures["incumbent"] is None


def test_a_first_model_better_only_on_its_point_estimate_is_not_deployed():
    # 300 outcomes, and rules from a base price near the optimum: the candidate's own estimate says
    # it earns more, but its posterior's 5th percentile does not.
    rejected = [
        train_and_judge(outcomes_of(CITY, 300, seed=seed), None, property_id="p", version="v", trained_at="t", base_price=80.0)
        for seed in (1, 3)
    ]
    for judgement in rejected:
        assert not judgement.deploy
        assert judgement.reason.startswith("not better than rule-based pricing in revenue")
        revenue = judgement.figures()["revenue"]
        assert revenue["lift"] > 0 > revenue["lift_lower"]


def test_demand_rising_with_price_is_rejected():
    perverse = DemandCurve("perverse", 100.0, -2.5, 1.5, 0.0, 0.0, 0.0)
    judgement = train_and_judge(outcomes_of(perverse, 1000), None, property_id="p", version="v", trained_at="t")
    assert not judgement.deploy
    assert judgement.reason.startswith("demand does not fall with price")


def test_the_true_model_is_not_replaced_by_a_fit_of_its_own_data():
    truth = SKI.true_model("p", "truth")
    judgement = train_and_judge(outcomes_of(SKI, 600), truth, property_id="p", version="v", trained_at="t")
    assert not judgement.deploy
    assert "incumbent truth" in judgement.reason


def test_a_refit_is_pulled_towards_the_live_model_not_towards_a_flat_price_slope():
    # Prices that barely vary (a live model's own quotes) hardly identify the slope: a penalty
    # towards zero flattens it -- "price does not matter", which prices higher -- and one towards
    # the live model's slope does not.
    rng = np.random.default_rng(7)
    x = np.column_stack([np.ones(600), rng.uniform(0.9, 1.1, 600)])
    true = np.array([2.0, -2.0])
    y = (rng.random(600) < 1 / (1 + np.exp(-x @ true))).astype(float)
    towards_zero = fit_weighted(x, y, l2=1.0).w
    towards_live = fit_weighted(x, y, l2=1.0, centre=np.array([0.0, -2.0])).w
    assert towards_zero[1] > -1.5 and abs(towards_live[1] + 2.0) < abs(towards_zero[1] + 2.0) / 2, (towards_zero, towards_live)
    # A refit records the model it was pulled towards; a first model and a replacement of a model
    # that lost to rules are pulled towards zero.
    live = train_conversion_model(outcomes_of(SKI, 600, seed=2), property_id="p", version="live", trained_at="t")
    outcomes = outcomes_of(SKI, 600)
    assert train_and_judge(outcomes, live, property_id="p", version="v", trained_at="t").candidate.training["ridge_centre"] == "live"
    for incumbent, against_rules in ((None, False), (live, True)):
        judged = train_and_judge(outcomes, incumbent, property_id="p", version="v", trained_at="t", against_rules=against_rules)
        assert "ridge_centre" not in judged.candidate.training


def test_a_stale_incumbent_is_replaced():
    stale = train_conversion_model(outcomes_of(CITY, 2000, seed=3), property_id="p", version="old", trained_at="t")
    moved = replace(CITY, intercept=1.2, price_effect=-1.6)
    judgement = train_and_judge(outcomes_of(moved, 2000, seed=4), stale, property_id="p", version="new", trained_at="t")
    assert judgement.deploy, judgement.reason
    assert judgement.figures()["versus_incumbent"]["z"] >= 1.645  # reported, no longer decisive
    assert judgement.figures()["revenue"]["lift_lower"] > 0


def test_paired_comparison():
    same = compare(np.array([0.5, 0.6, 0.7]), np.array([0.5, 0.6, 0.7]))
    assert (same.mean_improvement, same.significant) == (0.0, False)
    better = compare(np.full(100, 0.4) + np.linspace(0, 0.01, 100), np.full(100, 0.5))
    assert better.significant and better.z > 10
    worse = compare(np.full(10, 0.6), np.full(10, 0.5))
    assert not worse.significant


def test_outcomes_spread_over_time_are_sorted_before_splitting():
    outcomes = outcomes_of(CITY, 300)
    shuffled = outcomes[::2] + outcomes[1::2]
    assert split_holdout(shuffled) == split_holdout(outcomes)
    assert outcomes[0].timestamp < outcomes[-1].timestamp < NOW - timedelta(minutes=5)


def test_an_infinite_z_is_reported_as_none():
    same_gap = compare(np.full(5, 0.4), np.full(5, 0.5))
    assert same_gap.significant
    assert same_gap.as_dict()["z"] is None


def test_a_prior_from_the_market_before_a_shift_leaves_the_level_free_and_helps_a_small_new_sample():
    from dataclasses import replace as _replace

    from pricing.domain.training import PRIOR_OUTCOMES, fit_conversion_model, labels, log_losses, prior_from

    before = outcomes_of(CITY, 3000, seed=21, history_days=60)
    prior = prior_from(before, "2026-11-26T00:00:00.000000Z")
    assert prior is not None and prior.outcomes == PRIOR_OUTCOMES
    assert not prior.precision[0].any() and not prior.precision[:, 0].any()  # the intercept is free
    assert np.all(np.linalg.eigvalsh(prior.precision[1:, 1:]) > 0)
    assert prior_from(before[:100], "x") is None  # too few to fit

    # The market moves: fewer guests at any price. A day's worth of the new market, then fresh quotes.
    moved = _replace(CITY, name="city-moved", intercept=CITY.intercept - 0.9)
    small, fresh = outcomes_of(moved, 240, seed=22, history_days=2), outcomes_of(moved, 4000, seed=23, history_days=2)
    with_prior, _ = fit_conversion_model(small, property_id="p", version="v", trained_at="t", prior=prior)
    alone, _ = fit_conversion_model(small, property_id="p", version="v", trained_at="t")
    old, _ = fit_conversion_model(before, property_id="p", version="v", trained_at="t")
    loss = {
        name: float(np.mean(log_losses(predict(m, fresh), labels(fresh))))
        for name, m in (("prior", with_prior), ("alone", alone), ("old", old))
    }
    assert loss["prior"] < loss["alone"] and loss["prior"] < loss["old"], loss
    # Its intercept moved with the new market; the artifact records the prior and where it starts.
    assert with_prior.coefficients["intercept"] < old.coefficients["intercept"]
    assert with_prior.training["prior"]["since"] == "2026-11-26T00:00:00.000000Z"
    lo, hi = with_prior.ratio_range
    assert lo <= prior.ratio_range[0] and hi >= prior.ratio_range[1]
