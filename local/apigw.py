"""The local API Gateway: HTTP requests in, REST API (payload 1.0) proxy events to Lambda, back out.

The proxy event and response as a deployed REST API with Lambda proxy integrations has them; a
function error, a timeout or a result that is not a proxy response is a 502; bodies over 6 MB
get 413; API keys (and the operator API's own key) are checked before routing, only when asked
for. What it reproduces and where it differs on purpose (404/405 instead of 403, waiting instead
of throttling): docs/local-lambda.md ("The API Gateway in front").
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.container import ContainerError
from local.pool import FunctionPool, Throttled
from local.runtime_api import new_trace_id, read_chunked
from local.template import ACCOUNT_ID, ApiRoute

log = logging.getLogger("local.api")

MAX_REQUEST_BYTES = 6 * 1024 * 1024
OPERATOR_API = "OperatorApi"  # template.yaml's API of the state-changing operator routes
API_ID = "localapi01"

# Hop-by-hop and framing headers are the HTTP server's business, never the function's.
_FRAMING_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}
_CONTENT_LENGTH = re.compile(r"[0-9]{1,20}", re.ASCII)


def content_length(values: Sequence[str]) -> int | None:
    """The body length the ``Content-Length`` header values declare (0 when absent), or None
    when they do not declare one (RFC 9112 6.3: not a decimal number, or differing values).

    >>> content_length([]), content_length(["12"]), content_length(["12", "12"])
    (0, 12, 12)
    >>> [content_length(v) for v in (["-5"], ["-1"], ["+5"], ["1e3"], ["5", "6"], [""], ["\u0663"])]
    [None, None, None, None, None, None, None]
    """
    if not values:
        return 0
    lengths = {v.strip() for v in values}
    if len(lengths) != 1:
        return None
    (text,) = lengths
    return int(text) if _CONTENT_LENGTH.fullmatch(text) else None


class BadProxyResponse(ValueError):
    """The function returned something API Gateway cannot turn into an HTTP response."""


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def build_event(
    *,
    method: str,
    raw_path: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    route: ApiRoute,
    path_parameters: Mapping[str, str] | None,
    stage: str,
    source_ip: str = "127.0.0.1",
    request_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The API Gateway REST proxy event (payload format 1.0) for one HTTP request."""
    now = time.time() if now is None else now
    split = urlsplit(raw_path)
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    query = parse_qsl(split.query, keep_blank_values=True)
    query_single: dict[str, str] = {}
    query_multi: dict[str, list[str]] = {}
    for name, value in query:
        query_single[name] = value
        query_multi.setdefault(name, []).append(value)
    lower = {name.lower(): value for name, value in single.items()}
    try:
        text_body: str | None = body.decode("utf-8") if body else None
        is_base64 = False
    except UnicodeDecodeError:
        text_body, is_base64 = base64.b64encode(body).decode(), True
    request_id = request_id or str(uuid.uuid4())
    return {
        "resource": route.path,
        "path": split.path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": lower.get("host", "127.0.0.1"),
            "domainPrefix": lower.get("host", "127.0.0.1").split(".")[0].split(":")[0],
            "extendedRequestId": base64.b32encode(uuid.uuid4().bytes[:10]).decode().rstrip("="),
            "httpMethod": method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "user": None,
                "userArn": None,
                "apiKey": lower.get("x-api-key"),
                "apiKeyId": None,
                "sourceIp": source_ip,
                "userAgent": lower.get("user-agent"),
            },
            "path": f"/{stage}{split.path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": uuid.uuid5(uuid.NAMESPACE_URL, route.path).hex[:6],
            "resourcePath": route.path,
            "stage": stage,
        },
        "body": text_body,
        "isBase64Encoded": is_base64,
    }


def proxy_response(payload: bytes) -> HttpResponse:
    """Turn a Lambda proxy integration result into the HTTP response API Gateway sends.

    Raises:
        BadProxyResponse: not a JSON object with an integer ``statusCode`` (API Gateway: 502).
    """
    try:
        result = json.loads(payload)
    except ValueError:
        raise BadProxyResponse("result is not JSON") from None
    if not isinstance(result, dict) or "statusCode" not in result:
        raise BadProxyResponse("result has no statusCode")
    try:
        status = int(result["statusCode"])
    except (TypeError, ValueError):
        raise BadProxyResponse(f"statusCode {result['statusCode']!r} is not an integer") from None
    if not 100 <= status <= 599:
        raise BadProxyResponse(f"statusCode {status} is not an HTTP status")
    headers: list[tuple[str, str]] = []
    multi = result.get("multiValueHeaders") or {}
    for name, values in multi.items():
        headers += [(name, str(value)) for value in (values if isinstance(values, list) else [values])]
    named = {name.lower() for name in multi}
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in named:
            headers.append((name, str(value)))
    headers = [(n, v) for n, v in headers if n.lower() not in _FRAMING_HEADERS]
    body = result.get("body")
    if body is None:
        raw = b""
    elif result.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (ValueError, TypeError):
            raise BadProxyResponse("isBase64Encoded body is not base64") from None
    else:
        raw = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
    if not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return HttpResponse(status, headers, raw)


def _json_response(status: int, document: Any, extra: Sequence[tuple[str, str]] = ()) -> HttpResponse:
    return HttpResponse(status, [("Content-Type", "application/json"), *extra], json.dumps(document).encode())


class LocalApi:
    """The HTTP front door: routes from the template, a pool of containers per function.

    Args:
        routes: the template's ``Api`` events (``SamTemplate.api_routes()``).
        pools: a ``FunctionPool`` per function logical id the routes name.
        stage: the REST API stage (``requestContext.stage``).
        host, port: where to listen (port 0: any free port).
        require_api_key: when set, requests without this ``x-api-key`` get 403.
        operator_api_key: the only key the operator API's routes accept (see the module doc).
    """

    def __init__(
        self,
        routes: Sequence[ApiRoute],
        pools: Mapping[str, FunctionPool],
        *,
        stage: str = "Prod",
        host: str = "127.0.0.1",
        port: int = 0,
        require_api_key: str | None = None,
        operator_api_key: str | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        missing = {r.function for r in routes} - set(pools)
        if missing:
            raise ValueError(f"no pool for {', '.join(sorted(missing))}")
        self.routes = list(routes)
        self.pools = dict(pools)
        self.stage = stage
        self.require_api_key = require_api_key or None
        self.operator_api_key = operator_api_key or None
        self.max_request_bytes = max_request_bytes
        self._server = _ApiServer((host, port), _ApiHandler)
        self._server.api = self
        self._thread = Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="local-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalApi:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting requests (the pools are their owner's to close)."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def route(self, method: str, path: str) -> tuple[ApiRoute | None, dict[str, str] | None, list[str]]:
        """The route serving ``method path`` and its path parameters, else the allowed methods."""
        allowed: list[str] = []
        for route in self.routes:
            params = route.match_path(path)
            if params is None:
                continue
            if route.method in ("ANY", method.upper()):
                return route, params, []
            allowed.append(route.method)
        return None, None, allowed

    def key_accepted(self, headers: Sequence[tuple[str, str]], key: str | None = None) -> bool:
        """Exactly one ``x-api-key`` header, holding ``key`` (default the required one; compared
        in constant time)."""
        key = self.require_api_key if key is None else key
        given = [v for n, v in headers if n.lower() == "x-api-key"]
        if len(given) != 1 or key is None:
            return False
        return hmac.compare_digest(given[0].encode("utf-8", "surrogateescape"), key.encode("utf-8", "surrogateescape"))

    def route_key_accepted(self, route: ApiRoute, headers: Sequence[tuple[str, str]]) -> bool:
        """Whether the request's key opens this route's API (always, when no key is asked for)."""
        if route.api == OPERATOR_API:
            if not (self.require_api_key or self.operator_api_key):
                return True
            return self.operator_api_key is not None and self.key_accepted(headers, self.operator_api_key)
        return self.require_api_key is None or self.key_accepted(headers)

    def handle(self, method: str, raw_path: str, headers: Sequence[tuple[str, str]], body: bytes, source_ip: str) -> HttpResponse:
        """One request through routing, the API key check, the function and back."""
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        path = urlsplit(raw_path).path
        if self.require_api_key and not (
            self.key_accepted(headers) or (self.operator_api_key and self.key_accepted(headers, self.operator_api_key))
        ):
            return _json_response(403, {"message": "Forbidden"})
        route, params, allowed = self.route(method, path)
        if route is not None and not self.route_key_accepted(route, headers):
            return _json_response(403, {"message": "Forbidden"})
        if route is None:
            if allowed:
                return _json_response(405, {"message": "Method Not Allowed"}, [("Allow", ", ".join(sorted(set(allowed))))])
            return _json_response(404, {"message": "Not Found"})
        event = build_event(
            method=method,
            raw_path=raw_path,
            headers=headers,
            body=body,
            route=route,
            path_parameters=params,
            stage=self.stage,
            source_ip=source_ip,
            request_id=request_id,
        )
        pool = self.pools[route.function]
        gateway_headers = [("x-amzn-RequestId", request_id), ("X-Amzn-Trace-Id", new_trace_id())]
        try:
            result = pool.invoke(event)
        except Throttled as exc:
            log.warning("%s %s 429 %s", method, path, exc)
            return _json_response(429, {"message": "Too Many Requests"}, gateway_headers)
        except ContainerError as exc:
            log.error("%s %s 502 %s", method, path, exc)
            return _json_response(502, {"message": "Internal server error"}, gateway_headers)
        if result.function_error:
            response = _json_response(502, {"message": "Internal server error"})
            detail = result.payload[:500].decode("utf-8", "replace")
        else:
            try:
                response = proxy_response(result.payload)
                detail = ""
            except BadProxyResponse as exc:
                response = _json_response(502, {"message": "Internal server error"})
                detail = f"malformed Lambda proxy response: {exc}"
        response.headers += gateway_headers
        start = (
            f"cold start, init {result.init_ms:.0f} ms" if result.init_ms is not None else ("cold start" if result.cold_start else "warm")
        )
        log.info(
            "%s %s %d %.1f ms %s served by container %s (%s) request %s%s",
            method,
            path,
            response.status,
            (time.monotonic() - started) * 1000,
            route.function,
            result.container_id,
            start,
            request_id,
            f" -- {detail}" if detail else "",
        )
        return response


class _ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: LocalApi

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (a 413 refused mid-upload, a cancelled curl) are no server error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pricing-local-api"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # LocalApi.handle logs every request with the container that served it

    def _dispatch(self) -> None:
        api = self.server.api
        limit = api.max_request_bytes
        length = content_length(self.headers.get_all("Content-Length") or [])
        if length is None:
            # Unframeable: no body can be read, and the connection cannot be reused.
            self._write(_json_response(400, {"message": "Bad Request"}), close=True)
            return
        if length > limit:
            # Refuse before reading: the body may be huge. The connection cannot be reused.
            self._write(_json_response(413, {"message": "Request Too Long"}), close=True)
            return
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            try:
                body = read_chunked(self.rfile, limit)
            except ValueError:
                self._write(_json_response(413, {"message": "Request Too Long"}), close=True)
                return
        else:
            body = self.rfile.read(length) if length else b""
        response = api.handle(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
        self._write(response)

    def _write(self, response: HttpResponse, close: bool = False) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        body = b"" if self.command == "HEAD" else response.body
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _dispatch
