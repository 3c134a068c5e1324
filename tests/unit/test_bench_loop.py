"""A tiny closed loop through the real scoring, ingestion and retraining services (``make
bench-loop`` runs the full one): the loop starts on rules, deploys a first model only when it wins,
and never earns less than rules by more than its exploration cost."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.bench_loop import format_report, run_curve, verdicts
from bench.loop_market import CURVES

START = datetime(2026, 11, 17, tzinfo=UTC)  # fixed: the stays' weekdays move demand


def test_a_short_loop_starts_on_rules_and_a_model_that_wins_takes_over():
    budget = CURVES[0]  # the property: rules overprice it badly
    run = run_curve(budget, days=4, quotes_per_day=120, held_out=20, seed=3, start=START)

    assert [d.day for d in run.days] == [1, 2, 3, 4]
    assert run.days[0].ml_share == 0.0  # day 1: no model yet, rules price
    assert run.days[0].retrain == "skipped"  # 120 outcomes: below the first deploy's minimum
    deployed = [d.day for d in run.days if d.retrain == "deployed"]
    assert deployed, [d.retrain_reason for d in run.days]
    after = run.days[deployed[0]]  # the day after the first deploy
    assert after.ml_share + after.holdback_share == 1.0 and after.loop > after.rules + 0.2
    assert after.holdback_share < 0.15  # the rules holdback: about 5% of the quotes
    for d in run.days:
        assert d.within_exploration_cost, d
        assert 0.0 < d.explored_share < 0.3
        assert 0.0 <= d.pdr <= 1.0 and 0.0 <= d.pir <= 1.0 and d.regret >= 0.0
    text = format_report([run], 1.0)
    assert "budget-hotel" in text and "PASS" in text
    assert all(met for what, met, _ in verdicts([run]) if "exploration cost" in what)


def test_after_a_demand_shift_a_model_of_the_new_market_prices_from_the_second_night():
    ski = next(c for c in CURVES if c.shift_day is not None)
    run = run_curve(ski, days=10, quotes_per_day=160, held_out=10, seed=2, start=START)

    shift = ski.shift_day
    night = {d.day: d for d in run.days}
    assert night[shift].rolled_back, night[shift].retrain_reason  # the first shifted night: back to rules
    # The next night a model of the new market, learning from the onset with the prior of the
    # market before it, goes live -- it had to beat rules like any first model.
    assert night[shift + 1].retrain == "deployed" and night[shift + 1].retrain_reason.startswith("first model")
    assert night[shift + 2].ml_share > 0.8
    assert run.days[-1].policy > 0.95 and run.days[-1].loop > run.days[-1].rules + 0.3
    assert all(d.within_exploration_cost for d in run.days)
