"""The local API Gateway: HTTP to REST proxy events (payload 1.0) and proxy results back to HTTP.

A tiny echo function behind ``LocalApi`` shows exactly which event a request became and how
each kind of result turns into a response.
"""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
import requests

from local.apigw import BadProxyResponse, LocalApi, proxy_response
from local.pool import FunctionPool
from local.template import ApiRoute
from support.local_stack import handler_function

ECHO = """
    import base64
    import json

    def handler(event, context):
        mode = (event.get("queryStringParameters") or {}).get("mode")
        if mode == "raise":
            raise RuntimeError("asked to fail")
        if mode == "not-a-proxy-result":
            return {"price": 1}
        if mode == "binary":
            return {"statusCode": 200, "headers": {"Content-Type": "image/png"},
                    "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
        if mode == "cookies":
            return {"statusCode": 201, "headers": {"X-Single": "one", "Set-Cookie": "ignored=1"},
                    "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]}, "body": ""}
        return {"statusCode": 200, "headers": {"Content-Type": "application/json", "X-Echo": "yes"},
                "body": json.dumps(event)}
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("echo")
    pool = FunctionPool(handler_function(tmp, ECHO, timeout=5), max_containers=4, log_dir=tmp / "logs")
    routes = [
        ApiRoute("Echo", "POST", "/score"),
        ApiRoute("Echo", "GET", "/health"),
        ApiRoute("Echo", "GET", "/items/{item_id}"),
        ApiRoute("Echo", "ANY", "/files/{proxy+}"),
    ]
    local = LocalApi(routes, {"Echo": pool}, stage="dev").start()
    try:
        yield local
    finally:
        local.close()
        pool.close()


def test_request_becomes_a_rest_proxy_event(api):
    response = requests.post(
        f"{api.url}/score?a=1&b=x&b=y",
        data=b'{"entity": {"userId": "u"}}',
        headers={"Content-Type": "application/json", "X-Request-ID": "req-1"},
        timeout=30,
    )
    assert response.status_code == 200 and response.headers["X-Echo"] == "yes"
    event = response.json()
    assert event["httpMethod"] == "POST" and event["path"] == "/score" and event["resource"] == "/score"
    assert event["body"] == '{"entity": {"userId": "u"}}' and event["isBase64Encoded"] is False
    assert event["headers"]["X-Request-ID"] == "req-1"
    assert event["multiValueHeaders"]["X-Request-ID"] == ["req-1"]
    assert event["queryStringParameters"] == {"a": "1", "b": "y"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1"], "b": ["x", "y"]}
    assert event["pathParameters"] is None
    context = event["requestContext"]
    assert context["stage"] == "dev" and context["resourcePath"] == "/score" and context["path"] == "/dev/score"
    assert context["httpMethod"] == "POST" and context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["requestId"] == response.headers["x-amzn-RequestId"]


def test_every_request_gets_a_new_request_id(api):
    ids = {requests.get(f"{api.url}/health", timeout=30).json()["requestContext"]["requestId"] for _ in range(3)}
    assert len(ids) == 3


def test_repeated_headers_are_kept_in_multi_value_headers(api):
    with socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1])), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nAccept: a/b\r\nAccept: c/d\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    event = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert event["headers"]["Accept"] == "c/d"
    assert event["multiValueHeaders"]["Accept"] == ["a/b", "c/d"]


def test_path_parameters_and_greedy_proxy_paths(api):
    item = requests.get(f"{api.url}/items/prop-456", timeout=30).json()
    assert item["pathParameters"] == {"item_id": "prop-456"} and item["resource"] == "/items/{item_id}"
    files = requests.delete(f"{api.url}/files/a/b/c.txt", timeout=30).json()
    assert files["pathParameters"] == {"proxy": "a/b/c.txt"} and files["httpMethod"] == "DELETE"


def test_binary_request_body_is_base64_encoded(api):
    body = bytes([0xFF, 0xFE, 0x00, 0x81])
    event = requests.post(f"{api.url}/score", data=body, timeout=30).json()
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body


def test_proxy_result_becomes_the_http_response(api):
    binary = requests.get(f"{api.url}/health?mode=binary", timeout=30)
    assert binary.status_code == 200 and binary.headers["Content-Type"] == "image/png"
    assert binary.content == bytes(range(256))
    cookies = requests.get(f"{api.url}/health?mode=cookies", timeout=30)
    assert cookies.status_code == 201 and cookies.headers["X-Single"] == "one"
    assert sorted(cookies.raw.headers.getlist("Set-Cookie")) == ["a=1", "b=2"]


@pytest.mark.parametrize("mode", ["raise", "not-a-proxy-result"])
def test_function_errors_and_malformed_results_are_502(api, mode):
    response = requests.get(f"{api.url}/health?mode={mode}", timeout=30)
    assert response.status_code == 502 and response.json() == {"message": "Internal server error"}


def test_unknown_route_is_404_and_wrong_method_405(api):
    missing = requests.get(f"{api.url}/nothing-here", timeout=30)
    assert missing.status_code == 404 and missing.json() == {"message": "Not Found"}
    wrong = requests.get(f"{api.url}/score", timeout=30)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"


def test_body_over_six_megabytes_is_413_before_any_function_runs(api):
    port = int(api.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # Only the headers are sent: the limit must be enforced without reading the body.
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 6291457\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):  # the server closes the connection after a 413
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 413")
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1]) == {"message": "Request Too Long"}
    at_limit = requests.post(f"{api.url}/score", data=b"x" * (6 * 1024 * 1024 - 4096), timeout=60)
    assert at_limit.status_code == 200


def test_chunked_body_over_the_limit_is_413(tmp_path):
    pool = FunctionPool(handler_function(tmp_path, ECHO), log_dir=tmp_path)
    api = LocalApi([ApiRoute("Echo", "POST", "/score")], {"Echo": pool}, max_request_bytes=1000).start()
    try:
        small = requests.post(f"{api.url}/score", data=iter([b"a" * 100, b"b" * 100]), timeout=30)
        assert small.status_code == 200 and small.json()["body"] == "a" * 100 + "b" * 100
        big = requests.post(f"{api.url}/score", data=iter([b"a" * 800, b"b" * 800]), timeout=30)
        assert big.status_code == 413
    finally:
        api.close()
        pool.close()


def test_api_key_enforced_only_when_required(tmp_path):
    pool = FunctionPool(handler_function(tmp_path, ECHO), log_dir=tmp_path)
    api = LocalApi([ApiRoute("Echo", "GET", "/health")], {"Echo": pool}, require_api_key="s3cret").start()
    try:
        assert requests.get(f"{api.url}/health", timeout=30).status_code == 403
        assert requests.get(f"{api.url}/health", headers={"x-api-key": "wrong"}, timeout=30).status_code == 403
        allowed = requests.get(f"{api.url}/health", headers={"x-api-key": "s3cret"}, timeout=30)
        assert allowed.status_code == 200
        assert allowed.json()["requestContext"]["identity"]["apiKey"] == "s3cret"
    finally:
        api.close()
        pool.close()


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'{"body": "x"}', b'{"statusCode": "abc"}', b'{"statusCode": 200, "body": "!!", "isBase64Encoded": true}'],
)
def test_results_api_gateway_cannot_use_are_rejected(payload):
    with pytest.raises(BadProxyResponse):
        proxy_response(payload)


def test_result_headers_default_to_json_and_drop_framing_headers():
    response = proxy_response(b'{"statusCode": 204, "headers": {"Content-Length": "99", "Connection": "x"}}')
    assert response.status == 204 and response.body == b""
    assert response.headers == [("Content-Type", "application/json")]


def raw_exchange(api: LocalApi, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` as is and read until the server closes the connection (or ``timeout``)."""
    port = int(api.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return raw


@pytest.mark.parametrize("declared", [b"-5", b"-1", b"+5", b"1e3", b"5, 6", b"\xd9\xa3"])
def test_a_content_length_that_frames_nothing_is_a_400_at_once(api, declared):
    started = time.monotonic()
    raw = raw_exchange(
        api, b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + declared + b"\r\n\r\n{}"
    )
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1]) == {"message": "Bad Request"}
    assert time.monotonic() - started < 2.0  # answered, not held until the client gives up


def test_two_differing_content_lengths_are_a_400(api):
    raw = raw_exchange(api, b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]


def test_with_a_key_required_the_key_is_checked_before_routing(tmp_path):
    pool = FunctionPool(handler_function(tmp_path, ECHO), log_dir=tmp_path)
    api = LocalApi([ApiRoute("Echo", "POST", "/score")], {"Echo": pool}, require_api_key="s3cret").start()
    try:
        # Without the key, no route is revealed: unknown path, wrong method and real route alike.
        for method, path in (("GET", "/nothing-here"), ("GET", "/score"), ("POST", "/score"), ("DELETE", "/")):
            assert requests.request(method, f"{api.url}{path}", timeout=30).status_code == 403, (method, path)
        key = {"x-api-key": "s3cret"}
        assert requests.get(f"{api.url}/nothing-here", headers=key, timeout=30).status_code == 404
        assert requests.get(f"{api.url}/score", headers=key, timeout=30).status_code == 405
        assert requests.post(f"{api.url}/score", headers=key, data=b"{}", timeout=30).status_code == 200
        # Two x-api-key headers are refused whatever their order: ambiguous credentials never pass.
        for first, second in ((b"s3cret", b"wrong"), (b"wrong", b"s3cret"), (b"s3cret", b"s3cret")):
            raw = raw_exchange(
                api,
                b"POST /score HTTP/1.1\r\nHost: x\r\nx-api-key: "
                + first
                + b"\r\nX-Api-Key: "
                + second
                + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            )
            assert raw.startswith(b"HTTP/1.1 403"), (first, second, raw[:100])
    finally:
        api.close()
        pool.close()


@pytest.mark.parametrize("pricing_key, operator_key", [("s3cret", "op-key"), ("s3cret", None), (None, "op-key"), (None, None)])
def test_operator_routes_take_only_the_operator_key(tmp_path, pricing_key, operator_key):
    pool = FunctionPool(handler_function(tmp_path, ECHO), log_dir=tmp_path)
    routes = [ApiRoute("Echo", "POST", "/ab/experiments", "OperatorApi"), ApiRoute("Echo", "GET", "/ab/experiments", "PricingApi")]
    api = LocalApi(routes, {"Echo": pool}, require_api_key=pricing_key, operator_api_key=operator_key).start()
    try:

        def status(method: str, key: str | None) -> int:
            headers = {"x-api-key": key} if key else {}
            return requests.request(method, f"{api.url}/ab/experiments", headers=headers, data=b"{}", timeout=30).status_code

        keys_on = bool(pricing_key or operator_key)
        # The operator route: the operator key only; once keys are on, every other key is a 403,
        # and with no operator key configured nobody passes (fail closed).
        assert status("POST", operator_key) == (200 if operator_key or not keys_on else 403)
        assert status("POST", pricing_key) == (403 if keys_on else 200)
        assert status("POST", "wrong") == (403 if keys_on else 200)
        # The pricing API's route: the pricing key only (the operator key is no pricing caller's).
        assert status("GET", pricing_key) == 200
        if pricing_key:
            assert status("GET", operator_key) == 403
    finally:
        api.close()
        pool.close()
