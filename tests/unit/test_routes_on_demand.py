"""RoutesOnDemand: routes registered once, on the first request that is not an eager one."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI

from pricing.api.common import RoutesOnDemand


def status_of(app, method: str, path: str) -> int:
    """Serve one request on a loop of this thread's own; returns its status."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(app(scope, receive, send))
    finally:
        loop.close()
    return sent[0]["status"]


def on_demand() -> tuple[RoutesOnDemand, list[str]]:
    app = FastAPI()
    calls: list[str] = []

    @app.get("/fast")
    def fast() -> dict:
        return {}

    def add(app: FastAPI) -> None:
        calls.append(threading.current_thread().name)
        time.sleep(0.05)  # long enough for every other first request to arrive meanwhile

        @app.get("/other")
        def other() -> dict:
            return {}

    return RoutesOnDemand(app, add, eager={("GET", "/fast")}), calls


def test_eager_requests_never_register_the_routes():
    served, calls = on_demand()
    assert [status_of(served, "GET", "/fast") for _ in range(3)] == [200] * 3
    assert calls == []
    assert status_of(served, "POST", "/fast") == 405  # not the eager pair: the routes are registered
    assert len(calls) == 1


def test_concurrent_first_requests_register_them_once_and_all_find_them():
    served, calls = on_demand()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: status_of(served, "GET", "/other"), range(8)))
    assert statuses == [200] * 8
    assert len(calls) == 1 and [r.path for r in served.app.routes].count("/other") == 1
