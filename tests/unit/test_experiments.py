"""A/B assignment and readouts: deterministic, balanced, and cautious with small samples."""

from __future__ import annotations

import pytest

from pricing.domain.experiments import (
    CONTROL,
    NO_EXPERIMENT,
    TREATMENT,
    Assignment,
    Experiment,
    assign,
    attribution_of,
    experiment_from_record,
    quote_id_for,
    sample_ratio_mismatch_p_value,
    two_proportion_z_test,
)


def test_assignment_is_stable_and_close_to_the_designed_split():
    exp = Experiment("exp-1", treatment_share=0.3)
    variants = [assign([exp], "p1", f"user-{i}").variant for i in range(20_000)]
    assert variants == [assign([exp], "p1", f"user-{i}").variant for i in range(20_000)]
    share = variants.count(TREATMENT) / len(variants)
    assert share == pytest.approx(0.3, abs=0.015)
    assert sample_ratio_mismatch_p_value(variants.count(CONTROL), variants.count(TREATMENT), 0.3) > 0.001


def test_only_covering_active_experiments_assign():
    scoped = Experiment("exp-1", property_ids=frozenset({"p2"}))
    stopped = Experiment("exp-0", active=False)
    assert assign([scoped, stopped], "p1", "u").variant == NO_EXPERIMENT
    assert assign([scoped, stopped], "p2", "u").experiment_id == "exp-1"


def test_property_unit_keeps_a_property_in_one_arm_for_every_user():
    exp = Experiment("exp-1", unit="property")
    assert len({assign([exp], "p9", f"u{i}").variant for i in range(50)}) == 1


def test_quote_ids_carry_and_return_their_attribution():
    a = Assignment("exp-1", TREATMENT)
    assert attribution_of(quote_id_for("abc", a)) == a
    assert attribution_of(quote_id_for("abc", Assignment(None, NO_EXPERIMENT))) is None
    assert attribution_of("x~exp~bogus") is None and attribution_of(None) is None


def test_z_test_refuses_small_samples_and_detects_a_real_difference():
    assert two_proportion_z_test(5, 50, 9, 50) is None
    res = two_proportion_z_test(100, 1000, 150, 1000)
    assert res.z > 0 and res.p_value < 0.01
    same = two_proportion_z_test(100, 1000, 101, 1000)
    assert same.p_value > 0.5


def test_sample_ratio_mismatch_flags_a_broken_split():
    assert sample_ratio_mismatch_p_value(600, 400) < 0.001
    assert sample_ratio_mismatch_p_value(10, 20) is None


def test_experiment_records_are_validated():
    assert experiment_from_record({"experiment_id": "e", "property_ids": ["p1"]}).covers("p1")
    for bad in ({"experiment_id": "e", "treatment_share": 2}, {"experiment_id": "a~b"}, {}):
        with pytest.raises((ValueError, KeyError)):
            experiment_from_record(bad)
