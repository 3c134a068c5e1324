"""Request ids: which id a request gets, and how it reaches the logs."""

import asyncio
import contextvars
import io
import json
import re

import pytest

from pricing.observability.context import (
    api_gateway_request_id,
    bind_request_id,
    current_request_id,
    invocation_request_id,
    is_sane_request_id,
    logger,
    resolve_request_id,
)

UUID_HEX = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "caller_id",
    ["abc", "req-123", "A.b:c_d-9", "x" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e"],
)
def test_a_sane_caller_id_is_kept(caller_id):
    assert resolve_request_id(caller_id, "gateway-id") == caller_id


@pytest.mark.parametrize(
    "caller_id",
    [None, "", "x" * 129, "has space", "new\nline", 'quo"te', "semi;colon", "ünïcode", "a/b", "<script>"],
)
def test_an_insane_or_missing_caller_id_falls_back_to_the_gateway_id(caller_id):
    assert resolve_request_id(caller_id, "gw-0001") == "gw-0001"


@pytest.mark.parametrize("gateway_id", [None, "", "bad gateway id"])
def test_without_a_usable_id_a_new_one_is_made(gateway_id):
    first = resolve_request_id(None, gateway_id)
    second = resolve_request_id("bad id", gateway_id)
    assert UUID_HEX.fullmatch(first) and UUID_HEX.fullmatch(second)
    assert first != second


def test_sanity_is_length_and_charset():
    assert is_sane_request_id("a")
    assert not is_sane_request_id(123)  # type: ignore[arg-type]
    assert not is_sane_request_id("a\x00")


def test_the_gateway_id_is_read_from_a_proxy_event():
    assert api_gateway_request_id({"requestContext": {"requestId": "c6af9ac6-7b61"}}) == "c6af9ac6-7b61"
    assert api_gateway_request_id({"requestContext": {}}) is None
    assert api_gateway_request_id({"requestContext": "nope"}) is None
    assert api_gateway_request_id({"id": "eventbridge"}) is None
    assert api_gateway_request_id(None) is None


def test_a_bound_id_is_current_and_in_every_log_line():
    buffer = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(buffer)
    try:
        contextvars.copy_context().run(_bind_and_log, "req-log-1")
    finally:
        handler.setStream(previous)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["first", "second"]
    assert all(line["correlation_id"] == "req-log-1" for line in lines)


def _bind_and_log(request_id):
    bind_request_id(request_id)
    assert current_request_id() == request_id
    logger.info("first")
    logger.warning("second")


def test_concurrent_requests_each_see_their_own_id():
    async def request(request_id):
        bind_request_id(request_id)
        await asyncio.sleep(0)  # let the other request bind its id in between
        return current_request_id()

    async def both():
        return await asyncio.gather(request("req-a"), request("req-b"))

    # A loop of its own, not asyncio.run(): that unsets the main thread's event loop, which the
    # Mangum adapters of apps imported earlier in the same test process still use.
    loop = asyncio.new_event_loop()
    try:
        assert contextvars.copy_context().run(loop.run_until_complete, both()) == ["req-a", "req-b"]
    finally:
        loop.close()


def test_outside_a_request_there_is_no_current_id():
    assert contextvars.Context().run(current_request_id) is None


class _Context:
    aws_request_id = "8f3e2c1a-lambda"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"headers": {"x-request-id": "caller-1"}, "requestContext": {"requestId": "gw-1"}}, "caller-1"),
        ({"headers": {"X-Request-ID": "bad id\n"}, "requestContext": {"requestId": "gw-1"}}, "gw-1"),
        ({"headers": None, "requestContext": {"requestId": "gw-1"}}, "gw-1"),
        ({"headers": {"X-Request-ID": "caller-2"}}, "caller-2"),
        ({"id": "evt-1", "detail-type": "Scheduled Event", "source": "aws.events"}, "evt-1"),
        ({"id": "no detail-type: not an EventBridge event"}, "8f3e2c1a-lambda"),
        ({"Records": [{"messageId": "m-1"}]}, "8f3e2c1a-lambda"),
        ("not a dict", "8f3e2c1a-lambda"),
    ],
)
def test_an_invocation_is_known_by_the_id_its_event_carries(event, expected):
    assert invocation_request_id(event, _Context()) == expected


def test_an_invocation_without_any_id_gets_a_new_one():
    first, second = invocation_request_id({}), invocation_request_id({})
    assert first != second and len(first) == 32
