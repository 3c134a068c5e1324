"""API Gateway REST (payload 1.0) proxy events for invoking the functions' handlers directly."""

from __future__ import annotations

import json
from typing import Any

from local.lambda_context import FakeContext

__all__ = ["FakeContext", "invoke", "rest_event"]


def rest_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict:
    """The event API Gateway sends for ``method path``; ``body`` is JSON-encoded unless bytes/str.

    Built by the local API Gateway's own builder (``local.apigw.build_event``), so a handler
    invoked directly sees exactly what it sees behind ``make run``.
    """
    from local.apigw import build_event
    from local.template import ApiRoute

    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    raw = body.encode() if isinstance(body, str) else (body or b"")
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return build_event(
        method=method,
        raw_path=path,
        headers=list(hdrs.items()),
        body=raw,
        route=ApiRoute("direct", method, path.split("?", 1)[0]),
        path_parameters=None,
        stage="dev",
    )


def invoke(handler, event: dict) -> tuple[int, dict, Any]:
    """Call a proxy handler; returns (status, lower-cased headers, parsed JSON body or text)."""
    result = handler(event, FakeContext())
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    for k, vs in (result.get("multiValueHeaders") or {}).items():
        headers.setdefault(k.lower(), vs[-1])
    try:
        body = json.loads(result.get("body") or "null")
    except ValueError:
        body = result.get("body")
    return result["statusCode"], headers, body
