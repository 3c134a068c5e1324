"""Request ids and the structured logger every module of the service logs through.

One id follows a request everywhere: the ``X-Request-ID`` response header, every log line of the
request (Powertools' ``correlation_id`` key), the Sentry tags, and the header sent on to the
competitor-data backend. The caller may choose it (``X-Request-ID``), but only within a length and
character set that cannot break a log line, a header or a Sentry search; otherwise API Gateway's
own request id is used, and without either a fresh one is made.

``POWERTOOLS_SERVICE_NAME`` (through ``pricing.settings``) names the service in every log line:
the app module passes it to ``set_service_name``. ``POWERTOOLS_LOG_LEVEL`` is read by Powertools.

Example::

    >>> rid = resolve_request_id("caller-123", "apigw-id")
    >>> rid
    'caller-123'
    >>> bind_request_id(rid)
    >>> current_request_id()
    'caller-123'
"""

from __future__ import annotations

import contextvars
import re
import uuid

from aws_lambda_powertools import Logger

from pricing.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128

# The same alphabet as property ids: safe inside a header, a JSON log line and a Sentry tag query
# without quoting, so a caller cannot inject newlines, quotes or a megabyte of text through it.
_SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")

# Named explicitly so Powertools does not read the environment itself; the app module renames it.
logger = Logger(service=Settings.service_name)


def set_service_name(name: str) -> None:
    """The ``service`` key of every later log line (the app module's ``settings.service_name``)."""
    logger.append_keys(service=name)


# A contextvar rather than a module global: ASGI middleware and the route run in different tasks
# (and sync routes in a worker thread), all of which inherit a copy of the request's context.
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("pricing_request_id", default=None)


def is_sane_request_id(value: str | None) -> bool:
    """True when ``value`` is 1–128 characters of ``[A-Za-z0-9._:-]``."""
    return isinstance(value, str) and _SANE_REQUEST_ID.fullmatch(value) is not None


def resolve_request_id(header_value: str | None, fallback: str | None) -> str:
    """The id this request is known by.

    The caller's ``X-Request-ID`` when it is sane, else ``fallback`` (API Gateway's
    ``requestContext.requestId``) when that is sane, else a new uuid4 in hex. An insane caller id
    is replaced, not truncated or cleaned: a mangled id would match nothing the caller logged.
    """
    if is_sane_request_id(header_value):
        return header_value  # type: ignore[return-value]
    if is_sane_request_id(fallback):
        return fallback  # type: ignore[return-value]
    return uuid.uuid4().hex


def bind_request_id(request_id: str) -> None:
    """Make ``request_id`` the current request's id: every later log line carries it as
    ``correlation_id`` and ``current_request_id()`` returns it.

    The logger key is process-wide, which is right for Lambda (one request per container at a
    time); the next request's ``bind_request_id`` replaces it.
    """
    _request_id.set(request_id)
    logger.set_correlation_id(request_id)


def current_request_id() -> str | None:
    """The id bound by ``bind_request_id`` in this request's context, or None outside a request."""
    return _request_id.get()


def invocation_request_id(event: object, lambda_context: object = None) -> str:
    """The id one invocation is known by, read from its event: for an API Gateway request, the
    caller's ``X-Request-ID`` or the gateway's own id (``resolve_request_id``); for an
    EventBridge event, its ``id``; otherwise the Lambda request id (a new id without a context).

    The HTTP apps' middleware resolves the same id from the ASGI scope; this is for code that only
    has the event: the metrics push and the retrain function. (Powertools' ``correlation_id_path``
    cannot stand in: its JMESPath picks one value, sane or not, and sets only the log key.)
    """
    if isinstance(event, dict):
        headers = event.get("headers")
        caller = (
            next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == "x-request-id"), None)
            if isinstance(headers, dict)
            else None
        )
        gateway = api_gateway_request_id(event)
        if caller is not None or gateway is not None:
            return resolve_request_id(caller, gateway)
        if "detail-type" in event and is_sane_request_id(event.get("id")):
            return event["id"]
    return resolve_request_id(None, getattr(lambda_context, "aws_request_id", None))


def api_gateway_request_id(event: object) -> str | None:
    """``requestContext.requestId`` of an API Gateway proxy event (Mangum exposes the event as the
    ASGI scope's ``"aws.event"``), or None for any other shape."""
    if not isinstance(event, dict):
        return None
    request_context = event.get("requestContext")
    if not isinstance(request_context, dict):
        return None
    value = request_context.get("requestId")
    return value if isinstance(value, str) else None
