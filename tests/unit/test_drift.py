"""Drift detection (pricing.domain.drift): PSI over fixed bins, performance drift, sample minimum."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pricing.domain.drift import (
    MIN_DRIFT_SAMPLE,
    PSI_MODERATE,
    PSI_SIGNIFICANT,
    bin_shares,
    measure_drift,
    psi,
    psi_level,
)
from pricing.domain.outcomes import validate_outcome
from pricing.domain.simulator import CURVES, simulate_outcomes
from pricing.domain.training import train_and_judge

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
CITY = CURVES[0]


def outcomes_of(curve, n, seed, **kwargs):
    return [validate_outcome(o, NOW) for o in simulate_outcomes(curve, n, seed=seed, now=NOW, **kwargs)]


@pytest.fixture(scope="module")
def live_model():
    """A model trained on an older period where the property was at most half full."""
    old = [validate_outcome(o, NOW) for o in simulate_outcomes(CITY, 2000, seed=1, now=NOW - timedelta(days=100), occupancy=(0.0, 0.5))]
    return train_and_judge(old, None, property_id="p", version="v1", trained_at="t").candidate


def test_psi_values_and_levels():
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    assert psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.1 * np.log(1.2) + 0.1 * np.log(1.25))
    assert psi([1.0, 0.0], [0.0, 1.0]) > 10  # empty bins are floored, not infinite
    assert (psi_level(0.05), psi_level(PSI_MODERATE), psi_level(PSI_SIGNIFICANT)) == ("stable", "moderate", "significant")
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1.0])


def test_bins_are_closed_on_the_right():
    assert bin_shares(np.array([0.0, 0.5, 0.51, 1.0, 2.0]), [0.5, 1.0]) == [0.4, 0.4, 0.2]


def test_recent_data_like_the_training_data_shows_no_drift(live_model):
    recent = outcomes_of(CITY, 1000, seed=2, occupancy=(0.0, 0.5))
    report = measure_drift(live_model, recent)
    assert not report.detected
    assert report.max_psi < PSI_MODERATE
    assert not report.performance_drift


def test_a_shifted_feature_is_significant_drift(live_model):
    recent = outcomes_of(CITY, 1000, seed=2, occupancy=(0.6, 1.0))
    report = measure_drift(live_model, recent)
    assert report.detected
    assert report.drifted_features == ["occupancy"]
    assert report.psi["occupancy"] >= PSI_SIGNIFICANT
    assert report.as_dict()["psi_levels"]["occupancy"] == "significant"
    assert any("occupancy" in reason for reason in report.reasons())


def test_changed_demand_with_the_same_features_is_performance_drift(live_model):
    moved = replace(CITY, intercept=3.5, price_effect=-2.0)  # guests book far more often
    report = measure_drift(live_model, outcomes_of(moved, 1000, seed=3, occupancy=(0.0, 0.5)))
    assert report.max_psi < PSI_SIGNIFICANT
    assert report.performance_drift and report.detected
    assert report.recent_log_loss > report.training_log_loss


def test_a_small_recent_sample_concludes_nothing(live_model):
    recent = outcomes_of(CITY, MIN_DRIFT_SAMPLE - 1, seed=2, occupancy=(0.9, 1.0))
    report = measure_drift(live_model, recent)
    assert report.insufficient_sample and not report.detected
    assert report.psi == {}


def test_an_artifact_without_reference_bins_measures_performance_only(live_model):
    bare = replace(live_model, training={"holdout_log_loss": live_model.training["holdout_log_loss"]})
    report = measure_drift(bare, outcomes_of(CITY, 500, seed=4))
    assert report.psi == {} and report.recent_log_loss is not None
