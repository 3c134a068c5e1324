"""Pricing quality of the whole learning loop on simulated demand curves (``make bench-pricing``).

For each curve of ``pricing.domain.simulator.CURVES`` (a property whose true booking probability
is known), against a moto server holding the template's tables and bucket:

1. the property's base price is configured (registry ``CONFIG``);
2. simulated outcomes at explored prices go through IngestFunction's handler as API Gateway
   ``POST /learn`` events, in batches;
3. RetrainFunction's handler retrains the property (a manual invoke naming it);
4. ScoreFunction's scoring service prices fresh quotes with the deployed model (``use_ml``) and
   with rules (``use_ml: false``), plus held-out outcomes for the offline metrics.

Each price is worth what it earns under the true curve (``price * P_true(book | price)``); the
report sets ML and rule-based pricing against the oracle that knows the curve, with Airbnb's
offline metrics (Ye et al., KDD 2018). Exits non-zero when fewer than three curves reach 95% of
the oracle's revenue. The figures are also written to ``bench/out/pricing.json``.

Usage: ``python -m bench.bench_pricing [--outcomes N] [--quotes N] [--held-out N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime

from bench import ROOT  # puts the layer, tests/ and local/ on sys.path
from bench.stack import AwsStack

REQUIRED_SHARE = 0.95
REQUIRED_CURVES = 3
LEARN_BATCH = 2000
OUT = ROOT / "bench" / "out" / "pricing.json"


def _Context(function_name: str):
    from local.lambda_context import FakeContext

    return FakeContext(function_name, remaining_ms=900_000, memory_mb=1024)


def _learn_event(batch: list[dict]) -> dict:
    from local.apigw import build_event
    from local.template import ApiRoute

    return build_event(
        method="POST",
        raw_path="/learn",
        headers=[("Content-Type", "application/json")],
        body=json.dumps({"batch": batch}).encode(),
        route=ApiRoute("IngestFunction", "POST", "/learn"),
        path_parameters=None,
        stage="bench",
    )


def _score_request(quote, use_ml: bool):
    from pricing.api.schemas import ScoreRequest

    return ScoreRequest.model_validate(
        {
            "entity": {"userId": "bench", "propertyId": quote.property_id},
            "stay_date": quote.stay_date.isoformat(),
            "quote_time": f"{quote.quote_date.isoformat()}T12:00:00Z",
            "inventory": {"capacity": quote.capacity, "remaining": quote.remaining},
            "toggles": {"use_competitors": False, "use_ml": use_ml},
        }
    )


def run(n_outcomes: int, n_quotes: int, n_held_out: int) -> int:
    # Imported here: the handler modules read their settings from the environment at import.
    from pricing.api import ingest_app, retrain_app
    from pricing.api.schemas import quote_response
    from pricing.competitors import CompetitorClient
    from pricing.domain.simulator import CURVES, assess_policies, format_report, simulate_outcomes
    from pricing.services.scoring import ScoringService
    from pricing.storage.stores import Stores

    settings = ingest_app.settings
    stores = Stores.build(settings)
    scoring = ScoringService(settings, stores.registry, stores.artifacts, stores.experiments, CompetitorClient("", "", 0.3))
    now = datetime.now(UTC)
    reports, timings = [], {}

    for curve in CURVES:
        property_id = f"bench-{curve.name}"
        stores.registry.put_property_config(property_id, curve.base_price)
        outcomes = simulate_outcomes(curve, n_outcomes, seed=1, now=now, property_id=property_id)

        started = time.perf_counter()
        for i in range(0, len(outcomes), LEARN_BATCH):
            response = ingest_app.handler(_learn_event(outcomes[i : i + LEARN_BATCH]), _Context("ingest"))
            body = json.loads(response["body"])
            if response["statusCode"] != 200 or body["invalid"]:
                raise SystemExit(f"/learn refused the simulation: {response['statusCode']} {body}")
        learn_seconds = time.perf_counter() - started

        started = time.perf_counter()
        answer = retrain_app.handler({"property_ids": [property_id], "force": True}, _Context("retrain"))
        retrain_seconds = time.perf_counter() - started
        (result,) = answer["results"]
        if result["status"] != "deployed":
            print(f"{curve.name}: retrain {result['status']}: {result['reason']}", file=sys.stderr)

        latencies: list[float] = []

        def through_scoring(use_ml: bool, expect: str, latencies=latencies, curve=curve):
            def price(quote) -> float:
                t0 = time.perf_counter()
                response = quote_response(*scoring.score(_score_request(quote, use_ml).to_quote(), "bench"))
                latencies.append(time.perf_counter() - t0)
                if response["safety"]["pricing_method"] != expect:
                    raise SystemExit(f"{curve.name}: /score answered {response['safety']['pricing_method']}")
                return response["price"]

            return price

        policies = {"rule_based": through_scoring(False, "rule_based")}
        if result["status"] == "deployed":
            policies = {"ml_elasticity": through_scoring(True, "ml_elasticity"), **policies}
        report = assess_policies(
            curve,
            policies,
            training_outcomes=n_outcomes,
            model_version=result["version"],
            property_id=property_id,
            now=now,
            n_quotes=n_quotes,
            n_held_out=n_held_out,
        )
        reports.append(report)
        timings[curve.name] = {
            "learn_seconds": round(learn_seconds, 2),
            "learn_outcomes_per_second": round(n_outcomes / learn_seconds),
            "retrain_seconds": round(retrain_seconds, 2),
            "retrain_status": result["status"],
            "retrain_reason": result["reason"],
            "score_ms_median": round(1000 * statistics.median(latencies), 2),
        }

    print(format_report(reports))
    print()
    print(
        f"Per curve: {n_outcomes} outcomes through /learn (batches of {LEARN_BATCH}), one retrain, "
        f"{n_quotes} quotes and {n_held_out} held-out outcomes through the scoring service (moto, in-process)."
    )
    for name, t in timings.items():
        print(
            f"  {name:<14} learn {t['learn_seconds']:>5.2f} s ({t['learn_outcomes_per_second']}/s)   "
            f"retrain {t['retrain_seconds']:>5.2f} s ({t['retrain_status']})   score p50 {t['score_ms_median']:.2f} ms"
        )
    passed = [r.curve.name for r in reports if any(p.policy == "ml_elasticity" and p.revenue_share >= REQUIRED_SHARE for p in r.policies)]
    verdict = "PASS" if len(passed) >= REQUIRED_CURVES else "FAIL"
    print(
        f"\n{verdict}: ML pricing earns >= {REQUIRED_SHARE:.0%} of the oracle on {len(passed)} of {len(reports)} "
        f"curves ({', '.join(passed) or 'none'}); {REQUIRED_CURVES} required."
    )

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "measured_at": now.isoformat(),
                "outcomes_per_curve": n_outcomes,
                "curves": [
                    {
                        "curve": r.curve.name,
                        "log_price": r.curve.log_price,
                        "model_version": r.model_version,
                        "policies": [p.as_dict() for p in r.policies],
                        **timings[r.curve.name],
                    }
                    for r in reports
                ],
                "verdict": verdict,
            },
            indent=2,
        )
    )
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=4000, help="simulated outcomes per curve")
    parser.add_argument("--quotes", type=int, default=400, help="fresh quotes scored per curve")
    parser.add_argument("--held-out", type=int, default=2000, help="held-out outcomes for the offline metrics")
    args = parser.parse_args(argv)
    for name in ("PUSHGATEWAY_URL", "SENTRY_DSN"):
        os.environ.pop(name, None)  # a benchmark of pricing, not of the metrics or error pipeline
    with AwsStack() as stack, stack.use():
        return run(args.outcomes, args.quotes, args.held_out)


if __name__ == "__main__":
    sys.exit(main())
