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


# -- experiments as a product: dates, the readout -----------------------------------------------

from datetime import UTC, datetime, timedelta  # noqa: E402

from pricing.domain.experiments import MIN_OUTCOMES_PER_ARM, ArmTally, parse_instant, readout, welch_z_test  # noqa: E402


def tally(n: int, bookings: int, price: float = 100.0) -> ArmTally:
    arm = ArmTally()
    for i in range(n):
        arm.add(i < bookings, price)
    return arm


def test_an_experiment_assigns_only_between_its_dates_and_while_active():
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    record = {"experiment_id": "e1", "start_date": "2026-12-01", "end_date": "2026-12-01T13:00:00Z"}
    running = experiment_from_record(record)
    assert running.running_at(now) and not running.running_at(now + timedelta(hours=1))
    assert not running.running_at(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    assert not experiment_from_record({**record, "active": False}).running_at(now)
    assert experiment_from_record({"experiment_id": "open"}).running_at(now)  # no dates: until stopped
    assert parse_instant("2026-12-01T12:00:00+02:00") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError):
        experiment_from_record({**record, "end_date": "next tuesday"})


def test_arm_tallies_give_conversion_adr_and_revenue_per_quote():
    arm = ArmTally()
    for accepted, paid in ((True, 100.0), (True, 140.0), (False, 90.0), (False, 95.0)):
        arm.add(accepted, paid)
    assert arm.count == 4 and arm.bookings == 2
    assert arm.conversion_rate == 0.5 and arm.adr == 120.0 and arm.revpar == 60.0
    # revenue per quote is 100, 140, 0, 0: its sample variance
    assert arm.revenue_variance == pytest.approx(sum((x - 60.0) ** 2 for x in (100, 140, 0, 0)) / 3)


def test_the_readout_says_not_enough_data_below_the_minimum():
    small = readout("e1", tally(MIN_OUTCOMES_PER_ARM - 1, 30), tally(500, 200), 0.5)
    assert small["status"].startswith("not enough data")
    assert small["significance"]["conversion_pvalue"] is None and small["significance"]["revpar_pvalue"] is None
    assert small["significance"]["is_significant"] is False
    assert small["ml"]["count"] == 500 and small["rule_based"]["count"] == MIN_OUTCOMES_PER_ARM - 1


def test_the_readout_finds_a_real_lift_and_no_lift_where_there_is_none():
    real = readout("e1", tally(2000, 400), tally(2000, 500), 0.5)
    assert real["status"] == "ok" and real["significance"]["is_significant"] is True
    assert real["significance"]["conversion_pvalue"] < 0.001 and real["significance"]["revpar_pvalue"] < 0.001
    assert real["lift"]["conversion_rate"] == 25.0 and real["lift"]["revpar"] == 25.0 and real["lift"]["adr"] == 0.0
    assert real["sample_ratio"]["mismatch"] is False and real["sample_ratio"]["observed_ml_share"] == 0.5
    null = readout("e1", tally(2000, 400), tally(2000, 404), 0.5)
    assert null["significance"]["conversion_pvalue"] > 0.5 and null["significance"]["is_significant"] is False


def test_the_readout_flags_a_split_that_is_not_the_configured_one():
    skewed = readout("e1", tally(1000, 200), tally(1300, 260), 0.5)
    assert skewed["sample_ratio"]["mismatch"] is True and skewed["sample_ratio"]["pvalue"] < 0.001
    assert skewed["status"].startswith("sample ratio mismatch") and skewed["significance"]["is_significant"] is False
    # The same counts are no mismatch when the configured split is 1300/2300 ML.
    assert readout("e1", tally(1000, 200), tally(1300, 260), 1300 / 2300)["sample_ratio"]["mismatch"] is False


def test_welch_test_on_equal_means_is_not_significant():
    assert welch_z_test(10.0, 4.0, 200, 10.0, 9.0, 300) == 1.0
    assert welch_z_test(10.0, 0.0, 200, 10.0, 0.0, 300) == 1.0
