"""Demo data for ``make run``: three properties that price with their own conversion model at once.

    python -m local.seed            # run by ``make run`` once the stack is up

For each demo property: its base price goes into the registry (``CONFIG``), simulated booking
outcomes at explored prices (``pricing.domain.simulator``) go through ``POST /learn`` on the
running local API (``LOCAL_API_URL``; in-process when the API is not reachable), and one
RetrainFunction invocation in a local Lambda container (``local.invoke``, as ``make invoke``
does, against ``make run``'s stores and Pushgateway) retrains them all; without ``make run`` up,
RetrainFunction's handler runs in this process instead. Through the functions, the seeding's
outcomes and retrains are counted in the metrics like any other traffic. After that,
``/score`` for these properties answers ``pricing_method: ml_elasticity`` with the deployed
``model_version``.

Re-running is harmless: the simulated quote ids repeat, so ``/learn`` stores nothing twice, and
the retrain finds no drift and no new data against the deployed model and skips.

Environment: what the functions get (``AWS_ENDPOINT_URL``, ``ARTIFACTS_BUCKET``,
``OUTCOMES_TABLE``, ``REGISTRY_TABLE``, ...) plus ``LOCAL_API_URL``; ``SEED_OUTCOMES`` outcomes
per property (default 3000); ``SEED_SUMMARY_FILE``, where the per-property summaries are
written as JSON (``make run`` prints them in its banner; the seeding's own output goes to
``.run/logs/seed.log``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

from local.lambda_context import FakeContext
from pricing.domain.simulator import CURVES, DemandCurve, simulate_outcomes

#: Demo property id -> the simulated market it sells into (see simulator.CURVES).
DEMO_PROPERTIES: dict[str, str] = {
    "demo-hotel-1": "city-hotel",
    "demo-hotel-2": "beach-resort",
    "demo-loft-1": "city-loft",
}
#: The base price each demo property is configured with, when not its market's own level: a model
#: is only deployed when it earns more than the property's rules, and on the loft's market rules
#: from the curve's own base are within a percent or two of the optimum.
DEMO_BASE_PRICES: dict[str, float] = {"demo-loft-1": 125.0}
DEFAULT_OUTCOMES = 3000
LEARN_BATCH = 1000


def _Context() -> FakeContext:
    return FakeContext("pricing-retrain-local-seed", remaining_ms=900_000, memory_mb=2048)


def _post_learn(api_url: str, batch: list[dict]) -> dict:
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/learn",
        data=json.dumps({"batch": batch}).encode(),
        headers={"Content-Type": "application/json", "X-Request-ID": f"seed-{time.time_ns()}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # the local API
        return json.loads(response.read())


def learn(outcomes: list[dict], api_url: str | None, stores=None) -> tuple[int, int, str]:
    """Send ``outcomes`` to /learn (or, without ``api_url``, store them through ``stores``);
    returns (stored, duplicates, how)."""
    stored = duplicates = 0
    how = "POST /learn" if api_url else "in-process"
    for i in range(0, len(outcomes), LEARN_BATCH):
        batch = outcomes[i : i + LEARN_BATCH]
        answer = None
        if how == "POST /learn":
            try:
                answer = _post_learn(api_url, batch)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                print(f"  /learn at {api_url} not usable ({exc}); storing in-process", file=sys.stderr)
                how = "in-process"
        if answer is None:
            from pricing.services.ingestion import IngestionService
            from pricing.settings import Settings
            from pricing.storage.stores import Stores

            stores = stores or Stores.build(Settings.from_env())
            answer = IngestionService(stores.outcomes).ingest(batch).to_response()
        if answer.get("invalid"):
            raise RuntimeError(f"/learn refused simulated outcomes: {answer['errors'][:3]}")
        stored += answer["processed"]
        duplicates += answer["duplicates"]
    return stored, duplicates, how


def retrain(property_ids: list[str], api_url: str | None) -> list[dict]:
    """Retrain ``property_ids``: in a RetrainFunction container when ``make run`` is up, else
    with its handler in this process. Returns the per-property results."""
    event = {"detail": {"property_ids": property_ids, "force": False}}
    if api_url:
        from pathlib import Path

        from local.invoke import invoke
        from local.stack import DEFAULT_BUILD_DIR, DEFAULT_RUN_DIR

        # The build and run directories make run was given (LOCAL_BUILD_DIR, LOCAL_RUN_DIR).
        result = invoke(
            "RetrainFunction",
            json.dumps(event).encode(),
            echo=False,
            build_dir=Path(os.environ.get("LOCAL_BUILD_DIR") or DEFAULT_BUILD_DIR),
            run_dir=Path(os.environ.get("LOCAL_RUN_DIR") or DEFAULT_RUN_DIR),
        )
        if result.ok:
            return result.json()["results"]
        print(f"  RetrainFunction failed ({result.outcome}): {result.payload[:300]!r}", file=sys.stderr)
        return []
    from pricing.api import retrain_app

    return retrain_app.handler(event, _Context())["results"]


def seed(n_outcomes: int = DEFAULT_OUTCOMES, api_url: str | None = None, stores=None) -> list[dict]:
    """Seed every demo property (through ``stores``, a ``pricing.storage.stores.Stores``; default:
    the environment's); returns one summary per property."""
    from pricing.settings import Settings
    from pricing.storage.stores import Stores

    stores = stores or Stores.build(Settings.from_env())
    curves: dict[str, DemandCurve] = {c.name: c for c in CURVES}
    now = datetime.now(UTC)
    learned = {}
    for property_id, curve_name in DEMO_PROPERTIES.items():
        curve = curves[curve_name]
        base_price = DEMO_BASE_PRICES.get(property_id, curve.base_price)
        stores.registry.put_property_config(property_id, base_price)
        outcomes = simulate_outcomes(curve, n_outcomes, seed=2026, now=now, property_id=property_id)
        learned[property_id] = learn(outcomes, api_url, stores)
    results = {r["property_id"]: r for r in retrain(list(DEMO_PROPERTIES), api_url)}
    summaries = []
    for property_id, curve_name in DEMO_PROPERTIES.items():
        stored, duplicates, how = learned[property_id]
        result = results.get(property_id, {"status": "failed", "reason": "no result"})
        live = stores.registry.get_property_record(property_id).live_version
        summaries.append(
            {
                "property_id": property_id,
                "curve": curve_name,
                "base_price": DEMO_BASE_PRICES.get(property_id, curves[curve_name].base_price),
                "stored": stored,
                "duplicates": duplicates,
                "via": how,
                "retrain": result["status"],
                "reason": result["reason"],
                "live_version": live,
            }
        )
    return summaries


def main() -> int:
    n = int(os.environ.get("SEED_OUTCOMES") or DEFAULT_OUTCOMES)
    api_url = os.environ.get("LOCAL_API_URL") or None
    print(f"Seeding demo properties ({n} simulated outcomes each) ...", flush=True)
    started = time.perf_counter()
    summaries = seed(n, api_url)
    for s in summaries:
        print(
            f"  {s['property_id']:<13} base {s['base_price']:>6.2f}  outcomes stored {s['stored']:>5} "
            f"(+{s['duplicates']} already there, {s['via']})  retrain {s['retrain']}  "
            f"live model {s['live_version'] or 'none'}",
            flush=True,
        )
    if os.environ.get("SEED_SUMMARY_FILE"):
        with open(os.environ["SEED_SUMMARY_FILE"], "w", encoding="utf-8") as out:
            json.dump(summaries, out)
    missing = [s["property_id"] for s in summaries if not s["live_version"]]
    print(
        f"Demo data ready in {time.perf_counter() - started:.1f} s: /score for {', '.join(DEMO_PROPERTIES)} prices with ml_elasticity.",
        flush=True,
    )
    if missing:
        print(f"No live model for {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
