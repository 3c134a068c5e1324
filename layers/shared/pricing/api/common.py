"""What every HTTP function shares: request ids, strict JSON, body limits, errors, metrics.

The request middleware is plain ASGI rather than Starlette's ``BaseHTTPMiddleware`` because it
must see (and may refuse) the raw body before FastAPI parses it, and must stamp ``X-Request-ID``
on every response it lets through.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from pricing import __version__
from pricing.observability import metrics
from pricing.observability.context import (
    api_gateway_request_id,
    bind_request_id,
    current_request_id,
    logger,
    resolve_request_id,
)
from pricing.observability.sentry import set_request_context
from pricing.settings import Settings

UNMATCHED_ENDPOINT = "unmatched"  # every unknown path shares one label value
MAX_JSON_DEPTH = 32


class InvalidJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise InvalidJSON(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            # The key itself is not named: an error body never carries request bytes.
            raise InvalidJSON("duplicate key in a JSON object")
        obj[key] = value
    return obj


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def parse_strict_json(body: bytes) -> Any:
    """JSON as RFC 8259 has it: no NaN/Infinity, no duplicate keys, no absurd nesting.

    Python's parser accepts all three by default; each would let a malformed request reach the
    model as something it is not (a NaN price, a silently overwritten field).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJSON("body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except InvalidJSON:
        raise  # NaN/Infinity or a duplicate key, from the hooks
    except RecursionError:
        raise InvalidJSON(f"nesting deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        # The parser's message up to any quoted part: "Invalid \\escape: 'x'" would echo the body.
        raise InvalidJSON(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg.split(':')[0]}") from None
    except ValueError:
        # Not a JSONDecodeError: an integer literal beyond Python's digit limit (CVE-2020-10735).
        raise InvalidJSON(f"invalid JSON: an integer literal of more than {sys.get_int_max_str_digits()} digits") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidJSON(f"nesting deeper than {MAX_JSON_DEPTH} levels")
    return value


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, any case, any parameters; a
    missing Content-Type counts as JSON (the old service read such bodies as JSON)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def error_body(loc: list, msg: str, type_: str) -> dict:
    return {"detail": [{"loc": loc, "msg": msg, "type": type_}]}


def endpoint_of(app: FastAPI, scope: MutableMapping[str, Any]) -> str:
    """The route template serving this request: a bounded label, unlike the raw path."""
    partial = None
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path", UNMATCHED_ENDPOINT)
        if match == Match.PARTIAL and partial is None:
            partial = route  # the path exists, the method does not: a 405 of that route
    return getattr(partial, "path", UNMATCHED_ENDPOINT) if partial is not None else UNMATCHED_ENDPOINT


class RequestMiddleware:
    """Request id, body size limit, strict JSON, and the request's metrics, for every request."""

    def __init__(self, app: Callable, *, fastapi_app: FastAPI, settings: Settings):
        self.app = app
        self.fastapi_app = fastapi_app
        self.settings = settings

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = resolve_request_id(headers.get("x-request-id"), api_gateway_request_id(scope.get("aws.event")))
        bind_request_id(request_id)
        method, endpoint = scope["method"], endpoint_of(self.fastapi_app, scope)
        set_request_context(request_id, additional_tags={"endpoint": endpoint, "method": method})
        status = {"code": 500}

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [h for h in message["headers"] if h[0].lower() != b"x-request-id"]
                message["headers"].append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            with metrics.track_active_request(endpoint):
                refusal, replay = await self._read_body(scope, receive, headers)
                if refusal is not None:
                    code, body, error_type = refusal
                    metrics.track_error(endpoint=endpoint, error_type=error_type)
                    await JSONResponse(body, status_code=code)(scope, replay, send_with_id)
                else:
                    await self.app(scope, replay, send_with_id)
        except Exception:
            metrics.track_error(endpoint=endpoint, error_type="internal")
            raise
        finally:
            metrics.track_request(method=method, endpoint=endpoint, status_code=status["code"], duration=time.perf_counter() - started)

    async def _read_body(
        self, scope: dict, receive: Callable, headers: dict
    ) -> tuple[tuple[int, dict, str] | None, Callable[[], Awaitable[dict]]]:
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length", "")
        too_large = (413, error_body(["body"], f"request body exceeds {limit} bytes", "payload_too_large"), "payload_too_large")
        if declared.isdigit() and int(declared) > limit:
            return too_large, receive
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large, receive
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if body and scope["method"] in ("POST", "PUT", "PATCH"):
            content_type = headers.get("content-type")
            if not is_json_media_type(content_type):
                # Still the contract's 422 and error shape, but naming the header: without this
                # the caller reads "Input should be a valid dictionary" about a valid JSON body.
                # The header's value is not repeated back: no request bytes in an error body.
                msg = "Content-Type must be application/json"
                refusal = (422, error_body(["header", "content-type"], msg, "content_type"), "unsupported_media_type")
                return refusal, receive
            try:
                parse_strict_json(body)
            except InvalidJSON as exc:
                return (422, error_body(["body"], str(exc), "json_invalid"), "invalid_json"), receive
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay


class RoutesOnDemand:
    """ASGI: ``app``, with the routes ``add(app)`` registers added on the first request that is not
    one of ``eager`` (method, path): then, once, before that request is dispatched.

    FastAPI builds each route's dependant and response model as the route is registered; a
    container that only ever serves the ``eager`` routes never pays for the others. As they are
    added before dispatch, the middleware's route lookup, the 404 and 405 answers and /openapi.json
    see every route, in the order of registration.
    """

    def __init__(self, app: FastAPI, add: Callable[[FastAPI], None], *, eager: Collection[tuple[str, str]]):
        self.app = app
        self._add = add
        self._eager = frozenset(eager)
        self._lock = threading.Lock()
        self._added = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._added and scope["type"] != "lifespan" and (scope.get("method"), scope.get("path")) not in self._eager:
            self.add_routes()
        await self.app(scope, receive, send)

    def add_routes(self) -> None:
        """Register the routes now, if that was not done already."""
        with self._lock:
            if not self._added:
                self._add(self.app)
                self._added = True


def _summarise(errors: Sequence[Any]) -> list[dict]:
    """Pydantic's errors without the request's bytes: no ``input``, ``ctx`` or ``url``, and only
    locations of the schema's own making (a free-form object's keys are the caller's, and would
    come back in ``loc``: such a key is replaced by ``"*"``)."""
    return [{"loc": [_schema_loc(part) for part in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]


def _schema_loc(part: Any) -> Any:
    if isinstance(part, int) or (isinstance(part, str) and part.isidentifier() and len(part) <= 64 and part.isascii()):
        return part
    return "*"


def create_app(*, title: str, settings: Settings) -> FastAPI:
    """A FastAPI app with the service's middleware and error handling; routes are added by the caller."""
    # strict_content_type=False: a body without Content-Type is read as JSON, as the old service
    # did; any other non-JSON type is refused by the middleware with a message naming it.
    app = FastAPI(title=title, version=__version__, docs_url=None, redoc_url=None, strict_content_type=False)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.track_error(endpoint=endpoint_of(app, request.scope), error_type="validation")
        return JSONResponse({"detail": _summarise(exc.errors())}, status_code=422)

    # Starlette's class, not FastAPI's subclass: routing raises the former for 404 and 405.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        metrics.track_error(endpoint=endpoint_of(app, request.scope), error_type=error_type)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # Runs in Starlette's outermost middleware, outside ours: stamp the request id here too.
        request_id = current_request_id()
        logger.exception("unhandled error", extra={"endpoint": request.url.path})
        return JSONResponse(
            {"detail": "internal error", "request_id": request_id},
            status_code=500,
            headers={"X-Request-ID": request_id or ""},
        )

    app.add_middleware(RequestMiddleware, fastapi_app=app, settings=settings)
    return app
