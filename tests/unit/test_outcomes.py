"""Outcome validation, idempotency keys and features (pricing.domain.outcomes): pure, no AWS."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from pricing.domain.outcomes import (
    DEFAULT_LEAD_DAYS,
    DEFAULT_OCCUPANCY,
    INVALID_REASONS,
    Invalid,
    Outcome,
    check_batch,
    validate_outcome,
)
from pricing.domain.pricing import model_features
from pricing.domain.quote import Quote

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def item(**fields) -> dict:
    base = {"property_id": "prop-1", "timestamp": "2026-11-26T10:00:00Z", "quoted_price": 120.0, "accepted": True}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([1, 2], "not_an_object"),
        ("outcome", "not_an_object"),
        (item(property_id=None), "missing_field"),
        (item(timestamp=None), "missing_field"),
        (item(quoted_price=None), "missing_field"),
        (item(accepted=None), "missing_field"),
        (item(accepted="true"), "invalid_type"),
        (item(accepted=1), "invalid_type"),
        (item(quoted_price="120"), "invalid_type"),
        (item(quoted_price=True), "invalid_type"),
        (item(property_id=42), "invalid_type"),
        (item(context=["season"]), "invalid_type"),
        (item(stay_date=20261201), "invalid_type"),
        (item(property_id=""), "invalid_property_id"),
        (item(property_id="p" * 129), "invalid_property_id"),
        (item(property_id="prop 1"), "invalid_property_id"),
        (item(timestamp="2026-11-26"), "invalid_timestamp"),
        (item(timestamp="2026-11-26T10:00:00"), "invalid_timestamp"),  # no time zone
        (item(timestamp="2026-13-26T10:00:00Z"), "invalid_timestamp"),
        (item(timestamp="yesterday"), "invalid_timestamp"),
        (item(timestamp="2026-11-26T12:05:01Z"), "future_timestamp"),
        (item(timestamp="2024-11-25T12:00:00Z"), "too_old"),
        (item(quoted_price=float("inf")), "non_finite_number"),
        (item(final_price=float("-inf")), "non_finite_number"),
        (item(quoted_price=0), "non_positive_price"),
        (item(quoted_price=-5.0), "non_positive_price"),
        (item(final_price=0.0), "non_positive_price"),
        (item(comp_p50=-1), "non_positive_price"),
        (item(time_to_book=-0.5), "negative_time_to_book"),
        (item(stay_date="2026-02-30"), "invalid_date"),
        (item(stay_date="2026-12-1"), "invalid_date"),
        (item(stay_date="2026-11-25"), "invalid_lead_time"),
        (item(stay_date="2028-12-01"), "invalid_lead_time"),
        (item(quote_id=""), "invalid_quote_id"),
        (item(quote_id="q" * 257), "invalid_quote_id"),
        (item(quote_id="line\nbreak"), "invalid_quote_id"),
        (item(quote_id="\ud800"), "invalid_quote_id"),
        (item(variant=""), "invalid_attribution"),
        (item(experiment_id="e" * 300), "invalid_attribution"),
        (item(context={"occupancy": 2.5}), "invalid_context"),
        (item(context={"occupancy": "high"}), "invalid_context"),
        (item(context={"day_of_week": 7}), "invalid_context"),
        (item(context={"los": 0}), "invalid_context"),
        (item(context={"refundable": "yes"}), "invalid_context"),
        (item(context={"lead_days": -3}), "invalid_context"),
        (item(context={"weather": {"temp": float("nan")}}), "non_finite_number"),
        (item(context={"notes": "x" * 5000}), "context_too_large"),
    ],
)
def test_each_invalid_item_gets_its_documented_reason(raw, reason):
    result = validate_outcome(raw, NOW)
    assert isinstance(result, Invalid)
    assert result.reason == reason
    assert reason in INVALID_REASONS


def test_the_first_failing_check_decides_the_reason():
    assert validate_outcome(item(property_id="bad id", quoted_price=-1), NOW).reason == "invalid_property_id"
    assert validate_outcome(item(accepted="x", quoted_price="y"), NOW).reason == "invalid_type"


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-26T10:00:00Z",
        "2026-11-26t10:00:00z",
        "2026-11-26 10:00:00Z",
        "2026-11-26T10:00:00.123Z",
        "2026-11-26T10:00:00.123456789Z",  # RFC 3339 allows more digits than Python parses
        "2026-11-26T11:00:00+01:00",
        "2026-11-26T05:00:00-05:00",
        "2026-11-26T12:04:59Z",  # within the 5-minute skew
        "2024-11-27T12:00:00Z",  # just under two years
    ],
)
def test_valid_timestamps(stamp):
    assert isinstance(validate_outcome(item(timestamp=stamp), NOW), Outcome)


def test_a_valid_outcome_keeps_every_field():
    o = validate_outcome(
        item(
            quote_id="tok~exp-1~control",
            final_price=110.0,
            time_to_book=3.5,
            stay_date="2026-12-24",
            comp_p10=90,
            comp_p50=100,
            comp_p90=130,
            context={"occupancy": 0.75, "season": "Winter"},
        ),
        NOW,
    )
    assert isinstance(o, Outcome)
    assert (o.quoted_price, o.final_price, o.time_to_book, o.stay_date) == (120.0, 110.0, 3.5, date(2026, 12, 24))
    assert (o.comp_p10, o.comp_p50, o.comp_p90) == (90.0, 100.0, 130.0)
    assert (o.experiment_id, o.variant) == ("exp-1", "control")
    assert o.lead_days == 28


def test_attribution_from_the_quote_id_wins_over_the_callers_fields():
    o = validate_outcome(item(quote_id="tok~exp-9~treatment", experiment_id="other", variant="control"), NOW)
    assert (o.experiment_id, o.variant) == ("exp-9", "treatment")
    plain = validate_outcome(item(quote_id="tok", experiment_id="exp-2", variant="control"), NOW)
    assert (plain.experiment_id, plain.variant) == ("exp-2", "control")


def test_key_is_the_quote_id_when_present_else_a_content_hash():
    with_id = validate_outcome(item(quote_id="abc"), NOW)
    assert with_id.key == "q:abc"
    a = validate_outcome(item(), NOW)
    b = validate_outcome(item(timestamp="2026-11-26T11:00:00+01:00"), NOW)  # the same instant
    c = validate_outcome(item(accepted=False), NOW)
    assert a.key.startswith("h:") and a.key == b.key
    assert a.key != c.key


def test_record_round_trip():
    o = validate_outcome(item(quote_id="q1", stay_date="2026-12-01", time_to_book=0, context={"occupancy": 0.4, "x": [1, "é"]}), NOW)
    record = o.to_record()
    assert record["outcome_key"] == "q:q1"
    assert record["timestamp"] == "2026-11-26T10:00:00.000000Z"
    assert json.loads(record["context"]) == {"occupancy": 0.4, "x": [1, "é"]}
    assert "final_price" not in record  # absent stays absent
    back = Outcome.from_record(record)
    assert back == o and back.key == o.key


def test_features_match_what_the_scorer_derives_from_the_same_quote():
    o = validate_outcome(item(stay_date="2026-12-25", context={"occupancy": 0.7, "los": 3, "refundable": True}), NOW)
    quote = Quote(
        user_id="u",
        property_id="prop-1",
        stay_date=date(2026, 12, 25),
        quote_date=date(2026, 11, 26),
        capacity=10,
        remaining=3,
        refundable=True,
        los=3,
    )
    assert o.features() == model_features(quote)


def test_missing_features_get_fixed_defaults_and_day_of_week_overrides_the_stay_date():
    bare = validate_outcome(item(), NOW).features()
    assert (bare.lead_days, bare.occupancy, bare.weekend, bare.refundable, bare.los) == (
        DEFAULT_LEAD_DAYS,
        DEFAULT_OCCUPANCY,
        False,
        False,
        1,
    )
    friday_stay = validate_outcome(item(stay_date="2026-11-27"), NOW).features()
    assert friday_stay.weekend is True
    said_monday = validate_outcome(item(stay_date="2026-11-27", context={"day_of_week": 0}), NOW).features()
    assert said_monday.weekend is False
    overbooked = validate_outcome(item(context={"occupancy": 1.2, "lead_days": 45}), NOW).features()
    assert (overbooked.occupancy, overbooked.lead_days) == (1.0, 45.0)


def test_check_batch_keeps_the_first_of_each_key_and_reports_the_rest():
    batch = [
        item(quote_id="a"),
        item(quote_id="a", accepted=False),  # same quote: duplicate
        item(quote_id="a", property_id="prop-2"),  # same quote id, other property: distinct
        item(),
        item(),  # same content, no quote id: duplicate
        item(quoted_price=-1),
        "junk",
    ]
    checked = check_batch(batch, NOW)
    assert [i for i, _ in checked.outcomes] == [0, 2, 3]
    assert checked.in_batch_duplicates == (1, 4)
    assert [(i, why.reason, pid) for i, why, pid in checked.invalid] == [(5, "non_positive_price", "prop-1"), (6, "not_an_object", None)]


def test_unreadable_property_ids_are_not_reported_as_property_labels():
    checked = check_batch([item(property_id="bad id!", quoted_price=-1)], NOW)
    assert checked.invalid[0][2] is None


def test_future_boundary_is_five_minutes():
    assert isinstance(validate_outcome(item(timestamp=(NOW + timedelta(minutes=5)).isoformat()), NOW), Outcome)


# --- issue 12: every outcome validation lets through is storable ------------------------------

HUGE_INT = int("9" * 400)  # parses from JSON as an int; no double holds it


@pytest.mark.parametrize("name", ["quoted_price", "final_price", "comp_p10", "comp_p50", "comp_p90", "time_to_book"])
@pytest.mark.parametrize(
    "value", [1e200, 1e308, 1.7976931348623157e308, 10**127, 10**300, HUGE_INT, 5e-324, 1e-131, 9.999999999999999e-131]
)
def test_a_number_storage_cannot_hold_is_refused_as_out_of_range_not_raised(name, value):
    result = validate_outcome(item(**{name: value}), NOW)
    assert isinstance(result, Invalid), result
    assert (result.reason, result.field) == ("number_out_of_range", name)


@pytest.mark.parametrize("name", ["quoted_price", "final_price", "comp_p50"])
def test_prices_above_the_service_wide_cap_are_out_of_range(name):
    assert validate_outcome(item(**{name: 1e10}), NOW).__class__ is Outcome
    assert validate_outcome(item(**{name: 10_000_000_001}), NOW).reason == "number_out_of_range"


@pytest.mark.parametrize(
    "value,stored", [(1e-130, 1e-130), (9.999999999999998e125, 9.999999999999998e125), (0, 0.0), (-0.0, 0.0), (10**30, 1e30), (3, 3.0)]
)
def test_time_to_book_at_the_edges_of_the_store_range_is_kept_as_a_double(value, stored):
    o = validate_outcome(item(time_to_book=value), NOW)
    assert isinstance(o, Outcome) and o.time_to_book == stored and type(o.time_to_book) is float
    assert repr(o.time_to_book) != "-0.0"


def test_a_long_literal_is_rounded_to_a_double_once_so_its_key_is_that_of_the_double():
    long_literal = json.loads('{"p": 120.00000000000000000000000000000000000000000001}')["p"]
    assert validate_outcome(item(quoted_price=long_literal), NOW).key == validate_outcome(item(), NOW).key


def test_a_quote_id_over_the_key_byte_limit_is_id_too_long():
    four_byte = "\U0001f600"
    assert validate_outcome(item(quote_id=four_byte * 256), NOW).reason == "id_too_long"  # 1,024 bytes
    fits = validate_outcome(item(quote_id="€€" + four_byte * 254), NOW)  # 256 characters, 1,022 bytes: the key is 1,024
    assert isinstance(fits, Outcome) and len(fits.key.encode()) == 1024


@pytest.mark.parametrize("pid", [".", "..", "...", "." * 128])
def test_a_property_id_of_dots_is_not_a_safe_key_part(pid):
    assert validate_outcome(item(property_id=pid), NOW).reason == "invalid_property_id"


@pytest.mark.parametrize("pid", [".hidden", "a..b", "v1.2", "..x", "x.."])
def test_property_ids_with_dots_among_other_characters_stay_valid(pid):
    assert isinstance(validate_outcome(item(property_id=pid), NOW), Outcome)


@pytest.mark.parametrize("stamp", ["２０２６-11-26T10:00:00Z", "2026-11-26T10:00:00.١٢٣Z"])
def test_digits_of_other_scripts_are_not_timestamps(stamp):
    assert validate_outcome(item(timestamp=stamp), NOW).reason == "invalid_timestamp"


def test_reasons_are_documented_in_the_readme_in_the_order_they_are_checked():
    from pathlib import Path

    from pricing.domain.outcomes import STORE_REASONS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = [
        line.split("`")[1]
        for line in readme.splitlines()
        if line.startswith("| `") and line.split("`")[1] in {*INVALID_REASONS, *STORE_REASONS}
    ]
    assert documented == [*INVALID_REASONS, *STORE_REASONS]


def test_the_largest_outcome_validation_admits_fits_the_store_item_limit():
    """Every field at its bound: the stored item stays under MAX_OUTCOME_ITEM_BYTES."""
    from pricing.domain.limits import MAX_OUTCOME_ITEM_BYTES
    from pricing.domain.outcomes import MAX_CONTEXT_BYTES

    four_byte = "\U0001f600"
    raw = item(
        property_id="p" * 128,
        quote_id="€€" + four_byte * 254,
        experiment_id=four_byte * 256,
        variant=four_byte * 256,
        final_price=1.2345678901234567e9,
        time_to_book=1.2345678901234567e125,
        comp_p10=1.2345678901234567e9,
        comp_p50=1.2345678901234567e9,
        comp_p90=1.2345678901234567e9,
        stay_date="2026-12-24",
        context={"notes": "x" * (MAX_CONTEXT_BYTES - 20)},
    )
    o = validate_outcome(raw, NOW)
    assert isinstance(o, Outcome), o
    record = {**o.to_record(), "ingested_at": "2026-11-26T12:00:00.000000Z", "write_id": "0" * 32}
    # DynamoDB's item size: attribute names plus values (UTF-8 strings, numbers ~ digits/2 + 1).
    size = sum(len(k.encode()) + (len(str(v).encode()) if not isinstance(v, bool) else 1) for k, v in record.items())
    assert size < MAX_OUTCOME_ITEM_BYTES


def test_domain_limits_doctests():
    import doctest

    from pricing.domain import limits, outcomes

    for module in (limits, outcomes):
        assert doctest.testmod(module).failed == 0
