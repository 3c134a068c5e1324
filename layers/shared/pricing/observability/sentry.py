"""Sentry for the three functions: errors, one transaction per request, cron check-ins.

``init_from_settings(settings)`` runs once per container, in the app module at import, so the
AWS Lambda integration can wrap the handler before the first invocation. Without ``SENTRY_DSN``
nothing is initialised and every function here is a cheap no-op.

One event per failure, one transaction per request (the ASGI one under Mangum), no events for
health checks, 404s and 422s, events scrubbed of credentials and the configured secrets, at
most one request to Sentry per invocation, and a bounded flush that backs off during an
outage. Why each: docs/metrics.md ("Errors beside the metrics: Sentry").

Environment (through ``pricing.settings``): ``SENTRY_DSN``, ``ENVIRONMENT``, ``RELEASE``,
``SENTRY_TRACES_SAMPLE_RATE``; the secrets that must never leave in an event are
``BACKEND_API_KEY``, ``PUSHGATEWAY_PASSWORD`` and ``PUSHGATEWAY_BEARER_TOKEN``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sentry_sdk
from sentry_sdk.crons import monitor
from sentry_sdk.integrations.aws_lambda import AwsLambdaIntegration
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
from sentry_sdk.transport import HttpTransport

from pricing.observability.context import current_request_id, logger

if TYPE_CHECKING:
    from sentry_sdk._types import MonitorConfig

    from pricing.settings import Settings

FLUSH_TIMEOUT_SECONDS = 1.0
SEND_TIMEOUT_SECONDS = 2  # whole seconds: the SDK declares its transport's TIMEOUT an int
FLUSH_COOLDOWN_SECONDS = 60.0

RETRAIN_MONITOR_SLUG = "pricing-retrain"

HEALTH_ENDPOINTS = frozenset({"/health"})
# Client errors: the request was wrong, the service was not. 404 (unknown route) and 422
# (validation) are the ones the API produces; the others never reach Sentry in the first place.
IGNORED_STATUS_CODES = frozenset({404, 422})
IGNORED_EXCEPTIONS = frozenset({"RequestValidationError"})  # by name: retrain never imports FastAPI

FILTERED = "[Filtered]"
# The secrets' own names, the credentials' usual header and variable names; keys are compared
# lower-cased, and headers appear both as ``x-api-key`` and as ``x_api_key`` (WSGI style).
DENYLIST = [
    *DEFAULT_DENYLIST,
    "x-api-key",
    "api-key",
    "apikey",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "backend_api_key",
    "pushgateway_password",
    "pushgateway_bearer_token",
    "bearer_token",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
]
SENSITIVE_HEADERS = frozenset(
    {"x-api-key", "api-key", "authorization", "proxy-authorization", "cookie", "set-cookie", "x-amz-security-token"}
)
# Headers whose values help debugging and cannot hold a credential; every other header value goes.
KEPT_HEADERS = frozenset({"content-type", "content-length", "accept", "x-request-id"})
MIN_SECRET_LENGTH = 4  # shorter "secrets" would blank out ordinary words all over the event

# "Bearer <token>" in any case; "Basic <base64>" only when the token looks like base64 (a digit,
# +, /, = or mixed case), so that prose such as "basic configuration" survives.
_CREDENTIAL = re.compile(r"\b([Bb]earer|BEARER)\s+([A-Za-z0-9._~+/=-]{8,})|\b(Basic)\s+([A-Za-z0-9+/]{8,}={0,2})")


class _BoundedHttpTransport(HttpTransport):
    """The SDK's HTTP transport with a short socket timeout and a flush that backs off.

    The socket timeout (the SDK's default is 30 s) bounds how long the transport's one worker
    thread stays stuck on a Sentry that accepts and never answers, so the events queued behind it
    are not lost to the queue filling up. The flush timeout bounds what one invocation waits; but
    during a Sentry outage every invocation would wait that long, a second added to every quote.
    So once a flush runs out of time, the flushes of the next ``FLUSH_COOLDOWN_SECONDS`` do not
    wait: events still queue and go out while the container runs, and the outage costs one slow
    invocation per container per cool-down instead of all of them.
    """

    TIMEOUT = SEND_TIMEOUT_SECONDS

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self._no_wait_until = 0.0

    def flush(self, timeout: float, callback: Callable[[int, float], None] | None = None) -> None:
        started = time.monotonic()
        if started < self._no_wait_until:
            return
        super().flush(timeout, callback)
        # The worker reports no outcome; a flush that used (nearly) all its time did not finish.
        if timeout > 0 and time.monotonic() - started >= 0.9 * timeout:
            logger.warning("Sentry flush timed out: not waiting for Sentry for a while", extra={"cooldown_seconds": FLUSH_COOLDOWN_SECONDS})
            self._no_wait_until = time.monotonic() + FLUSH_COOLDOWN_SECONDS


class _State:
    """What one container remembers between invocations."""

    def __init__(self) -> None:
        self.enabled = False
        self.secrets: tuple[str, ...] = ()
        self.reported_causes: set[str] = set()
        self.lock = threading.Lock()
        # The tags of the request in progress (Lambda runs one at a time per container), for the
        # events raised outside its scope: see _add_request_tags.
        self.request_tags: dict[str, str] = {}


_state = _State()


# --------------------------------------------------------------------------- initialisation


def init_sentry(
    dsn: str | None,
    environment: str,
    release: str,
    traces_sample_rate: float = 0.1,
    *,
    secrets: Iterable[str] = (),
    server_name: str | None = None,
) -> bool:
    """Initialise the Sentry SDK for this process; returns whether Sentry is now on.

    ``dsn`` empty or None: Sentry stays off, silently. A DSN the SDK cannot parse is logged and
    leaves Sentry off too, rather than failing the container's start over a typo. ``secrets`` are
    values removed from every event wherever they appear.
    """
    _state.secrets = tuple(sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True))
    if not dsn:
        _state.enabled = False
        return False
    try:
        sentry_sdk.init(
            dsn=dsn,
            environment=environment,
            release=release,
            server_name=server_name,
            traces_sample_rate=traces_sample_rate,
            traces_sampler=_traces_sampler(traces_sample_rate),
            integrations=_integrations(),
            # Probing every integration the SDK knows costs ~0.1 s of cold start; ours are listed.
            auto_enabling_integrations=False,
            send_default_pii=False,
            # Stack locals hold the ASGI scope with the caller's headers, and whatever secret a
            # frame had in hand: no event carries them.
            include_local_variables=False,
            max_request_body_size="never",
            event_scrubber=EventScrubber(denylist=list(DENYLIST), recursive=True),
            # The SDK types events as TypedDicts; ours read and rewrite them as the plain dicts they are.
            before_send=before_send,  # type: ignore[arg-type]
            before_send_transaction=before_send_transaction,  # type: ignore[arg-type]
            in_app_include=["pricing"],
            # Release-health sessions and client reports would each add an envelope to nearly
            # every invocation's flush; errors per release are visible from the events themselves.
            auto_session_tracking=False,
            send_client_reports=False,
            shutdown_timeout=FLUSH_TIMEOUT_SECONDS,
            transport=_BoundedHttpTransport,
        )
    except Exception as exc:  # noqa: BLE001 - BadDsn and friends: Sentry off is never fatal
        logger.error("Sentry disabled: cannot initialise", extra={"error": f"{type(exc).__name__}: {exc}"})
        _state.enabled = False
        return False
    _state.enabled = True
    return True


def _integrations() -> list[Any]:
    server_errors = {*range(500, 600)}
    integrations: list[Any] = [
        AwsLambdaIntegration(timeout_warning=True),
        StarletteIntegration(transaction_style="url", failed_request_status_codes=server_errors),
        FastApiIntegration(transaction_style="url", failed_request_status_codes=server_errors),
        LoggingIntegration(level=logging.INFO, event_level=None),
    ]
    try:  # S3/DynamoDB calls as spans; boto3 is in the Lambda runtime, maybe not elsewhere
        from sentry_sdk.integrations.boto3 import Boto3Integration
    except Exception:  # noqa: BLE001 - DidNotEnable (no boto3): run without the spans
        pass
    else:
        integrations.append(Boto3Integration())
    return integrations


def _traces_sampler(rate: float) -> Callable[[dict[str, Any]], float]:
    """Sample at ``rate``, except what must never become a transaction: the Lambda integration's
    ``function.aws`` one for an API Gateway invocation (the ASGI one stands for the request) and
    health checks. A caller's explicit sampling decision (``sentry-trace``) is honoured."""

    def sampler(context: dict[str, Any]) -> float:
        transaction = context.get("transaction_context") or {}
        aws_event = context.get("aws_event")
        if transaction.get("op") == "function.aws" and isinstance(aws_event, dict) and "httpMethod" in aws_event:
            return 0.0
        asgi_scope = context.get("asgi_scope")
        if isinstance(asgi_scope, dict) and asgi_scope.get("path") in HEALTH_ENDPOINTS:
            return 0.0
        parent_sampled = context.get("parent_sampled")
        return float(parent_sampled) if parent_sampled is not None else rate

    return sampler


def init_from_settings(settings: Settings) -> bool:
    """``init_sentry`` with the container's configuration; call once, at handler-module import."""
    return init_sentry(
        settings.sentry_dsn,
        settings.environment,
        settings.release,
        settings.sentry_traces_sample_rate,
        secrets=(settings.backend_api_key, settings.pushgateway_password, settings.pushgateway_bearer_token),
        server_name=settings.function_name,
    )


def is_enabled() -> bool:
    """True once ``init_sentry`` has turned Sentry on in this process."""
    return _state.enabled


def flush(timeout: float = FLUSH_TIMEOUT_SECONDS) -> None:
    """Send what is queued, waiting at most ``timeout`` seconds (the Lambda integration already
    does this after each invocation; this is for code running outside it)."""
    if _state.enabled:
        sentry_sdk.flush(timeout=timeout)


# --------------------------------------------------------------------------- request context


def set_request_context(
    request_id: str | None,
    user_id: str | None = None,
    property_id: str | None = None,
    additional_tags: Mapping[str, Any] | None = None,
) -> None:
    """Tag every event and transaction of the current request.

    Tags go on the request's isolation scope (forked per request by the ASGI integration and per
    invocation by the Lambda one), so they cannot leak into the next request. A None argument
    leaves an existing tag alone: the middleware tags ``endpoint``/``method`` first, the route adds
    ``user_id``/``property_id`` once it has parsed the body.
    """
    tags: dict[str, str] = {}
    if request_id is not None:
        tags["request_id"] = request_id
    if user_id is not None:
        tags["user_id"] = user_id
    if property_id is not None:
        tags["property_id"] = property_id
    for key, value in (additional_tags or {}).items():
        if value is not None:
            tags[key] = str(value)
    sentry_sdk.set_tags(tags)
    if request_id is not None and _state.request_tags.get("request_id") != request_id:
        _state.request_tags = {}
    _state.request_tags.update(tags)


@contextmanager
def start_transaction(name: str, op: str) -> Iterator[Any]:
    """Time a piece of work as a transaction, or as a span of the running one.

    Inside a request the ASGI integration's transaction is already running; a second transaction
    there would break "one transaction per request", so the work becomes its child span instead.
    """
    if sentry_sdk.get_current_span() is not None:
        with sentry_sdk.start_span(op=op, name=name) as span:
            yield span
    else:
        with sentry_sdk.start_transaction(name=name, op=op) as transaction:
            yield transaction


def capture_error(error: BaseException, **tags: Any) -> str | None:
    """Report an exception that the app itself turned into a 5xx response (an exception handler
    answering 503 when storage is unreachable), which no integration sees; returns the event id.

    Unhandled exceptions need no call: the FastAPI integration reports them. Reporting the same
    exception object twice still yields one event (the SDK's dedupe).
    """
    if not _state.enabled:
        return None
    with sentry_sdk.new_scope() as scope:
        for key, value in tags.items():
            if value is not None:
                scope.set_tag(key, str(value))
        return sentry_sdk.capture_exception(error)


def report_once(cause: str, error: BaseException | str, **tags: Any) -> bool:
    """Report a handled but notable problem (the model store failing, so rule-based pricing is
    used) once per container and ``cause``; returns whether this call sent it.

    Per request it would be thousands of identical events during one outage; once per container
    still shows when it started, how many containers saw it, and the first stack trace. The event
    is a warning, tagged ``cause`` plus ``tags``, and grouped by cause.
    """
    if not _state.enabled:
        return False
    with _state.lock:
        if cause in _state.reported_causes:
            return False
        _state.reported_causes.add(cause)
    with sentry_sdk.new_scope() as scope:
        scope.set_level("warning")
        scope.set_tag("cause", cause)
        for key, value in tags.items():
            if value is not None:
                scope.set_tag(key, str(value))
        scope.fingerprint = ["report-once", cause]
        if isinstance(error, BaseException):
            sentry_sdk.capture_exception(error)
        else:
            sentry_sdk.capture_message(error, level="warning")
    return True


# --------------------------------------------------------------------------- cron monitor

#: RetrainFunction's schedule in template.yaml, ``cron(0 3 * * ? *)`` (EventBridge, UTC), as the
#: crontab Sentry reads (tests/unit/test_sentry_config.py checks that the two agree). Sent with
#: every check-in, so Sentry creates or updates the monitor and knows when a run is missed
#: (margin) or hung (runtime: a Lambda never runs beyond 15 minutes).
RETRAIN_MONITOR_CONFIG: MonitorConfig = {
    "schedule": {"type": "crontab", "value": "0 3 * * *"},
    "timezone": "UTC",
    "checkin_margin": 10,
    "max_runtime": 15,
    "failure_issue_threshold": 1,
    "recovery_threshold": 1,
}


def retrain_monitor(slug: str = RETRAIN_MONITOR_SLUG) -> monitor:
    """Report one scheduled retrain run to a Sentry cron monitor (the SDK's ``crons.monitor``):
    ``in_progress`` on entry, ``ok`` or ``error`` with the duration on exit; exceptions propagate
    unchanged. A no-op without Sentry."""
    return monitor(monitor_slug=slug, monitor_config=RETRAIN_MONITOR_CONFIG)


# --------------------------------------------------------------------------- filtering


def _endpoint_of(event: Mapping[str, Any]) -> str | None:
    tags = event.get("tags")
    if isinstance(tags, Mapping) and tags.get("endpoint"):
        return str(tags["endpoint"])
    request = event.get("request")
    if isinstance(request, Mapping) and isinstance(request.get("url"), str):
        path = urlsplit(request["url"]).path
        if path:
            return path
    transaction = event.get("transaction")
    return transaction if isinstance(transaction, str) else None


def _status_of(event: Mapping[str, Any]) -> int | None:
    contexts = event.get("contexts")
    if isinstance(contexts, Mapping):
        response = contexts.get("response")
        if isinstance(response, Mapping) and isinstance(response.get("status_code"), int):
            return response["status_code"]
        trace = contexts.get("trace")
        if isinstance(trace, Mapping) and isinstance(trace.get("data"), Mapping):
            status = trace["data"].get("http.response.status_code")
            if isinstance(status, int):
                return status
    return None


def _is_ignored_exception(hint: Mapping[str, Any]) -> bool:
    exc_info = hint.get("exc_info")
    exc = exc_info[1] if exc_info else None
    if exc is None:
        return False
    if any(cls.__name__ in IGNORED_EXCEPTIONS for cls in type(exc).__mro__):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and status in IGNORED_STATUS_CODES


def _is_timeout_warning(event: Mapping[str, Any]) -> bool:
    values = (event.get("exception") or {}).get("values") or []
    return any(isinstance(v, Mapping) and v.get("type") == "ServerlessTimeoutWarning" for v in values)


def _add_request_tags(event: dict[str, Any]) -> None:
    """Tag events captured outside the request's scope.

    The Lambda integration's timeout warning is raised from its own thread in the invocation's
    scope, not the request's (the ASGI integration forks one per request), so it would arrive
    untagged: it gets the tags of the request in progress. Any other untagged event gets at least
    the request id of its context, which ties it to its log lines.
    """
    tags = event.setdefault("tags", {})
    if not isinstance(tags, dict):
        return
    if _is_timeout_warning(event):
        for key, value in _state.request_tags.items():
            tags.setdefault(key, value)
    request_id = current_request_id()
    if request_id:
        tags.setdefault("request_id", request_id)


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Drop health-check, 404 and validation errors; scrub what is left (check-ins pass as they are)."""
    if event.get("type") == "check_in":
        return event
    if _is_ignored_exception(hint):
        return None
    if _endpoint_of(event) in HEALTH_ENDPOINTS or _status_of(event) in IGNORED_STATUS_CODES:
        return None
    _add_request_tags(event)
    return scrub_event(event)


def before_send_transaction(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Keep one transaction per request (see docs/metrics.md); drop health checks, 404s and
    422s; scrub the rest."""
    trace = (event.get("contexts") or {}).get("trace") or {}
    request = event.get("request") or {}
    if trace.get("op") == "function.aws" and isinstance(request, Mapping) and request.get("method"):
        return None
    if _endpoint_of(event) in HEALTH_ENDPOINTS or _status_of(event) in IGNORED_STATUS_CODES:
        return None
    _add_request_tags(event)
    return scrub_event(event)


# --------------------------------------------------------------------------- scrubbing


def _unquote(value: str) -> str:
    # Serialized bytes look like "b'abc'"; strings inside reprs keep their quotes.
    if len(value) >= 3 and value[0] == "b" and value[1] in "'\"" and value[-1] == value[1]:
        return value[2:-1]
    if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
        return value[1:-1]
    return value


def _is_sensitive_name(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    normalised = _unquote(name).lower()
    return normalised in SENSITIVE_HEADERS or normalised.replace("_", "-") in SENSITIVE_HEADERS


def _collect_sensitive_values(node: Any, found: set[str]) -> None:
    """Values of sensitive headers wherever the event still has them: ``{name: value}`` mappings
    and ``[name, value]`` pairs (the ASGI scope's header list in stack locals)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Mapping):
            for key, value in current.items():
                if _is_sensitive_name(key) and isinstance(value, str):
                    found.add(_unquote(value))
                stack.append(value)
        elif isinstance(current, list):
            if len(current) == 2 and _is_sensitive_name(current[0]) and isinstance(current[1], str):
                found.add(_unquote(current[1]))
            stack.extend(current)


def _filter_credential(match: re.Match[str]) -> str:
    if match.group(1):
        return f"{match.group(1)} {FILTERED}"
    token = match.group(4)
    looks_encoded = re.search(r"[0-9+/=]", token) or (token != token.lower() and token != token.upper())
    return f"Basic {FILTERED}" if looks_encoded else match.group(0)


def _scrub_string(value: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in value:
            value = value.replace(secret, FILTERED)
    return _CREDENTIAL.sub(_filter_credential, value)


def _scrub_node(node: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(node, str):
        return _scrub_string(node, secrets)
    if isinstance(node, dict):
        return {(_scrub_string(k, secrets) if isinstance(k, str) else k): _scrub_node(v, secrets) for k, v in node.items()}
    if isinstance(node, list):
        return [_scrub_node(v, secrets) for v in node]
    return node


def scrub_event(event: dict[str, Any]) -> dict[str, Any]:
    """Remove credentials and configured secrets from an event (already serialized by the SDK).

    Request headers keep only ``KEPT_HEADERS`` values; every string anywhere loses the configured
    secrets, any value a sensitive header was seen with, and ``Bearer``/``Basic`` credentials.
    """
    request = event.get("request")
    if isinstance(request, dict):
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {name: (value if str(name).lower() in KEPT_HEADERS else FILTERED) for name, value in headers.items()}
        request.pop("cookies", None)
        request.pop("data", None)
    found: set[str] = set()
    _collect_sensitive_values(event, found)
    found.discard(FILTERED)
    secrets = tuple(sorted({*_state.secrets, *(v for v in found if len(v) >= MIN_SECRET_LENGTH)}, key=len, reverse=True))
    return _scrub_node(event, secrets)
