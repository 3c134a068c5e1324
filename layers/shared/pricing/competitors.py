"""The competitor-data backend: competitor price quantiles for a property and night.

``GET {BACKEND_API_URL}/api/competitor-data/{propertyId}/{YYYY-MM-DD}`` with ``X-API-Key``.
A slow or failing backend must never fail a quote, so every call is bounded by a short timeout,
answers are cached per (property, night), and a failing backend is not asked again for the same
night for a short while (so an outage does not add the timeout to every request).
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pricing.domain.guardrails import MAX_PRICE, MIN_PRICE
from pricing.domain.quote import CompetitorSnapshot

SUCCESS, NOT_FOUND, ERROR, TIMEOUT = "success", "not_found", "error", "timeout"


@dataclass(frozen=True)
class Fetch:
    snapshot: CompetitorSnapshot | None
    status: str  # one of the constants above: the label of pricing_competitor_fetches_total
    cached: bool = False


def _positive(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    # The request's bounds: a backend answering 1e308 must not overflow the price to infinity.
    return value if math.isfinite(value) and MIN_PRICE <= value <= MAX_PRICE else None


def parse_payload(payload: object, now: datetime) -> CompetitorSnapshot | None:
    """The snapshot in a backend answer, or None when the answer is not usable."""
    if not isinstance(payload, dict) or payload.get("success") is not True or not isinstance(payload.get("data"), dict):
        return None
    data = payload["data"]
    p10, p50, p90 = (_positive(data.get(k)) for k in ("priceP10", "priceP50", "priceP90"))
    if p50 is None or (p10 is not None and p10 > p50) or (p90 is not None and p90 < p50):
        return None
    staleness = None
    updated = data.get("updatedAt")
    if isinstance(updated, str):
        try:
            ts = datetime.fromisoformat(updated.replace("Z", "+00:00"))
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            staleness = max(0.0, (now - ts).total_seconds())
        except ValueError:
            pass
    count = data.get("competitorCount")
    return CompetitorSnapshot(
        p10=p10,
        p50=p50,
        p90=p90,
        count=count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None,
        source=str(data.get("source") or "backend")[:64],
        staleness_seconds=staleness,
    )


class CompetitorClient:
    """Fetches and caches competitor snapshots. Thread-safe; one per container."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float,
        ttl_seconds: float = 300.0,
        failure_ttl_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.ttl_seconds = ttl_seconds
        self.failure_ttl_seconds = failure_ttl_seconds
        self._clock = clock
        self._cache: dict[tuple[str, date], tuple[float, Fetch]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    def fetch(self, property_id: str, night: date, request_id: str | None = None) -> Fetch:
        key = (property_id, night)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > now:
            return Fetch(hit[1].snapshot, hit[1].status, cached=True)
        result = self._request(property_id, night, request_id)
        ttl = self.ttl_seconds if result.status in (SUCCESS, NOT_FOUND) else self.failure_ttl_seconds
        with self._lock:
            if len(self._cache) > 10_000:  # a container serving many properties must stay bounded
                self._cache.clear()
            self._cache[key] = (now + ttl, result)
        return result

    def _request(self, property_id: str, night: date, request_id: str | None) -> Fetch:
        url = urllib.parse.urlsplit(self.base_url)
        path = f"{url.path}/api/competitor-data/{urllib.parse.quote(property_id, safe='')}/{night.isoformat()}"
        conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        headers = {"X-API-Key": self._api_key, "Accept": "application/json"}
        if request_id:
            headers["X-Request-ID"] = request_id
        conn = conn_cls(url.netloc, timeout=self.timeout)
        deadline = time.monotonic() + self.timeout
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            # The socket timeout bounds each read; the deadline bounds a trickling body.
            body = resp.read(1_000_000)
            if time.monotonic() > deadline:
                return Fetch(None, TIMEOUT)
        except TimeoutError:
            return Fetch(None, TIMEOUT)
        except (OSError, http.client.HTTPException):
            return Fetch(None, ERROR)
        finally:
            conn.close()
        if resp.status == 404:
            return Fetch(None, NOT_FOUND)
        if resp.status != 200:
            return Fetch(None, ERROR)
        try:
            snapshot = parse_payload(json.loads(body), datetime.now(UTC))
        except ValueError:
            snapshot = None
        # A malformed answer is the backend failing, not an absence of data.
        return Fetch(snapshot, SUCCESS) if snapshot else Fetch(None, ERROR)
