"""The revenue judgement of a candidate (pricing.domain.policy_evaluation) and the rollback
pointer's format (pricing.services.retraining), with no AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from pricing.domain.conversion_model import ARTIFACT_FORMAT_V2, ConversionModel
from pricing.domain.exploration import Exploration, tag_quote_id
from pricing.domain.outcomes import Outcome
from pricing.domain.policy_evaluation import calibration, compare_revenue, miscalibrated, rules_policy
from pricing.domain.training import coefficient_vector, outcome_features
from pricing.services.retraining import ROLLBACK_PREFIX, rollback_since

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
# A candidate convinced demand barely falls with price: it wants prices far above the logged ones.
GREEDY = ConversionModel(
    "p",
    "c",
    {"intercept": 3.0, "price_ratio": -1.2},
    100.0,
    (50.0, 400.0),
    format=ARTIFACT_FORMAT_V2,
    market_reference=100.0,
    ratio_range=(0.5, 3.0),
)


def logged(i: int, arm: int, booked: bool, price: float = 100.0) -> Outcome:
    propensity = 0.9 if arm == 0 else 0.025
    quote_id = tag_quote_id(f"q{i}", Exploration(0.1, arm, propensity, 100.0, 4))
    return Outcome(
        "p",
        NOW - timedelta(hours=i),
        price * 1.08**arm,
        booked,
        quote_id=quote_id,
        stay_date=(NOW + timedelta(days=10)).date(),
        comp_p50=100.0,
        context={"occupancy": 0.5},
    )


def test_logged_exploration_vetoes_a_candidate_the_bookings_contradict():
    # At the policy's price half the quotes book; at +17% (the arm the candidate lands on) none do.
    holdout = [logged(i, 0, i % 2 == 0) for i in range(300)] + [logged(1000 + i, 2, False) for i in range(30)]
    w = coefficient_vector(GREEDY)
    result = compare_revenue(GREEDY, w, np.eye(len(w)) * 1e-4, holdout, lambda o, f: 100.0, outcome_features)
    assert result.lift > 0  # the candidate's own model is sure it earns more ...
    assert result.ips_matched == 30
    assert result.ips_upper < 0 and result.ips_says_worse  # ... the logged bookings say it does not


def test_without_exploration_tags_there_is_no_ips_verdict():
    holdout = [Outcome("p", NOW - timedelta(hours=i), 100.0, i % 2 == 0, quote_id=f"plain-{i}", comp_p50=100.0) for i in range(50)]
    w = coefficient_vector(GREEDY)
    result = compare_revenue(GREEDY, w, np.eye(len(w)) * 1e-4, holdout, rules_policy(100.0), outcome_features)
    assert result.ips_lift is None and not result.ips_says_worse
    assert result.n == 50


def test_calibration_needs_both_a_clear_and_a_material_miss():
    assert calibration(np.full(1000, 0.5), np.ones(1000))[1] == 1.0
    assert not miscalibrated(3.9, 0.5) and not miscalibrated(10.0, 0.1) and miscalibrated(4.5, -0.2)


def test_a_rollback_pointer_names_the_onset_it_learns_from():
    assert rollback_since(ROLLBACK_PREFIX + "20261123T000000Z") == "2026-11-23T00:00:00.000000Z"
    assert rollback_since("20261123T030000Z-1a2b3c4d") is None
    assert rollback_since(ROLLBACK_PREFIX + "garbage") is None and rollback_since(None) is None
