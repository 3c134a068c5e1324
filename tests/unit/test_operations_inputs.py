"""The operator and read routes' inputs, checked without AWS: experiment requests, page tokens."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pricing.services.catalog import BadParameter, decode_token, encode_token, page_size
from pricing.services.experiment_admin import ExperimentRequest


def test_experiment_requests_take_the_replaced_services_fields_as_query_strings():
    request = ExperimentRequest.model_validate(
        {"name": "ml-vs-rules", "ml_traffic_percentage": "30", "start_date": "2026-12-01", "end_date": "2026-12-31T00:00:00Z"}
    )
    assert request.ml_traffic_percentage == 30.0 and request.randomization_unit == "user"
    assert request.start_date == "2026-12-01T00:00:00+00:00" and request.end_date == "2026-12-31T00:00:00+00:00"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"name": ""},
        {"name": "x", "ml_traffic_percentage": "150"},
        {"name": "x", "ml_traffic_percentage": "nan"},
        {"name": "x", "start_date": "soon"},
        {"name": "x", "start_date": "2026-12-02", "end_date": "2026-12-01"},
        {"name": "x", "randomization_unit": "session"},
        {"name": "x", "property_ids": ["ok", "not ok"]},
    ],
)
def test_bad_experiment_requests_are_refused(fields):
    with pytest.raises(ValidationError):
        ExperimentRequest.model_validate(fields)


def test_page_tokens_round_trip_and_forged_ones_are_bad_parameters():
    key = {"property_id": {"S": "p1"}, "record": {"S": "MODEL#v2"}}
    assert decode_token(encode_token(key)) == key and encode_token(None) is None and decode_token(None) is None
    for forged in ("!!", "bm90IGpzb24", "WzEsMl0"):  # not base64, not JSON, not an object
        with pytest.raises(BadParameter):
            decode_token(forged)
    assert page_size(None) == 50
    with pytest.raises(BadParameter):
        page_size(0)
