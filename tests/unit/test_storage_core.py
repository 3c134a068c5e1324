"""The storage core without AWS: botocore's errors as the stores' own, and DynamoDB's types."""

from __future__ import annotations

from decimal import Decimal

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError, ReadTimeoutError

from pricing.storage import ConditionFailed, StorageUnavailable, StoreRefused
from pricing.storage.aws import _translate, from_wire, to_wire


def client_error(code: str, **extra) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, **extra}, "PutItem")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("ConditionalCheckFailedException"), ConditionFailed),
        (client_error("NoSuchKey"), KeyError),
        (client_error("ValidationException"), StoreRefused),
        (ParamValidationError(report="ExclusiveStartKey: not a map"), StoreRefused),
        (client_error("ProvisionedThroughputExceededException"), StorageUnavailable),
        (client_error("InternalServerError"), StorageUnavailable),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1/"), StorageUnavailable),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1/"), StorageUnavailable),
    ],
)
def test_every_botocore_failure_is_one_of_the_stores_errors(error, expected):
    translated = _translate(error, "dynamodb", "put_item", key="k")
    assert type(translated) is expected
    # A refusal is unavailability to a caller that knows only that (scoring falls back on both).
    assert isinstance(translated, StorageUnavailable) == (expected in (StoreRefused, StorageUnavailable))


def test_a_lost_condition_carries_the_stored_item_when_asked_for():
    item = {"write_id": {"S": "w1"}}
    translated = _translate(client_error("ConditionalCheckFailedException", Item=item), "dynamodb", "put_item")
    assert isinstance(translated, ConditionFailed) and translated.item == item


def test_plain_values_round_trip_through_dynamodbs_wire_form():
    record = {
        "price": 0.1,
        "count": 3,
        "ok": True,
        "name": "p",
        "gone": None,
        "nested": {"x": 1.5, "y": None},
        "bands": [80.0, 110.5],
        "pair": (1, 2),
    }
    wire = to_wire(record)
    assert wire["price"] == {"N": "0.1"}  # the double's shortest repr, as pricing.domain.limits checks
    assert "gone" not in wire and wire["nested"] == {"M": {"x": {"N": "1.5"}}}
    back = from_wire(wire)
    assert back == {"price": 0.1, "count": 3, "ok": True, "name": "p", "nested": {"x": 1.5}, "bands": [80.0, 110.5], "pair": [1, 2]}
    assert type(back["count"]) is int and not any(isinstance(v, Decimal) for v in back.values())


def test_what_dynamodb_cannot_hold_raises_before_any_call():
    with pytest.raises((ArithmeticError, TypeError, ValueError)):
        to_wire({"x": float("nan")})
    with pytest.raises((ArithmeticError, TypeError, ValueError)):
        to_wire({"x": object()})
