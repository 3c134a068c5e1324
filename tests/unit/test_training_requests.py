"""The retrain function's pure helpers: event parsing, version names, storable figures."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from pricing.domain.outcomes import validate_outcome
from pricing.services.retraining import (
    InvalidRetrainEvent,
    PropertyResult,
    RetrainRequest,
    _storable,
    new_version,
    parse_request,
    summarise,
)

NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({}, RetrainRequest(None, False)),
        ({"detail": {"force": False}}, RetrainRequest(None, False)),  # the daily schedule's input
        ({"detail": {}, "detail-type": "Scheduled Event", "source": "aws.events"}, RetrainRequest(None, False)),
        ({"detail": {"property_ids": ["a", "b", "a"], "force": True}}, RetrainRequest(("a", "b"), True)),
        ({"property_ids": ["demo-hotel-1"]}, RetrainRequest(("demo-hotel-1",), False)),
        ({"property_ids": []}, RetrainRequest((), False)),
    ],
)
def test_events_that_parse(event, expected):
    assert parse_request(event) == expected


@pytest.mark.parametrize(
    "event",
    [[], "retrain", {"force": "true"}, {"property_ids": "a"}, {"property_ids": ["ok", "bad id"]}, {"detail": {"property_ids": [1]}}],
)
def test_events_that_do_not(event):
    with pytest.raises(InvalidRetrainEvent):
        parse_request(event)


def test_versions_sort_by_time_and_differ_by_data():
    outcomes = [validate_outcome({"property_id": "p", "timestamp": "2026-11-25T10:00:00Z", "quoted_price": 100.0, "accepted": True}, NOW)]
    v1 = new_version(NOW, "p", outcomes)
    v2 = new_version(NOW.replace(hour=4), "p", outcomes)
    assert v1.startswith("20261126T030000Z-") and v1 < v2
    assert new_version(NOW, "q", outcomes) != v1


def test_storable_figures_are_plain_and_finite():
    assert _storable({"a": math.inf, "b": [1.5, math.nan], "c": (True, None), "d": NOW}) == {
        "a": None,
        "b": [1.5, None],
        "c": [True, None],
        "d": str(NOW),
    }


def test_summary_counts_every_status():
    results = [PropertyResult("a", "deployed", ""), PropertyResult("b", "failed", ""), PropertyResult("c", "deployed", "")]
    assert summarise(results) == {"deployed": 2, "rejected": 0, "skipped": 0, "failed": 1}


@pytest.mark.parametrize("pid", [".", "..", "..."])
def test_a_property_id_of_dots_never_names_a_retrain_or_an_artifact(pid):
    from pricing.services.retraining import InvalidRetrainEvent, artifact_key, parse_request

    with pytest.raises(InvalidRetrainEvent):
        parse_request({"property_ids": [pid]})
    with pytest.raises(ValueError):
        artifact_key(pid, "20261126T030000Z-1a2b3c4d")
    assert artifact_key("a..b", "v1") == "models/a..b/v1.json"
