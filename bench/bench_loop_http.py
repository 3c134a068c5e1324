"""The learning loop of ``make bench-loop`` over HTTP, through the ``make run`` stack
(``make bench-loop-http``).

The same simulated market, quotes and per-day table as ``bench.bench_loop``, but every quote
goes to ``POST /score`` and every day's outcomes, with their quote ids, to ``POST /learn`` on the
local API Gateway in front of the built functions' local Lambda containers (``local.stack``, as
``make run`` starts it), and every night's retrain is one RetrainFunction invocation in its own
container (``local.invoke``, as ``make invoke`` does) against the same stores.

The simulated clock, consistently:

* a quote's time is its ``quote_time`` (the scorer prices lead time and weekday from it) and its
  outcome's ``timestamp``; day 1 is ``bench_loop.START``, in the past, so /learn (which refuses
  outcomes from the future) takes every day;
* the nightly retrain runs ``as_of`` the simulated 03:00 (the event's ``detail.as_of``,
  ``pricing.services.retraining.parse_request``): its window, guards, ``trained_at`` and the
  registry's ``deployed_at`` are on the simulated clock; /learn stamps what it stores with the real
  time, which lies after every ``as_of`` and so is ignored by the retrain (the quote time alone
  says what a model saw);
* the scorer's model cache lives in real seconds, so the stack runs with
  ``MODEL_CACHE_TTL_SECONDS=0`` (an ``--env-vars`` file): a night's model prices the next quote.

What differs from the in-process run: quote ids are the service's own random tokens, so which
quotes explore or are held back differs, and the figures with it, by the noise of that draw.
The holdback quotes' model price (for the holdback's cost) is the model's policy computed in this
process from the live model in the stack's stores.

Usage: ``python -m bench.bench_loop_http [--days 12] [--quotes 150] [--seed 1] [--curves a,b]``
Needs the functions' build (``make build``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench import ROOT
from bench.bench_loop import OUT, START, format_report, plot, run_curve, verdicts, write_json

DEFAULT_CURVES = ("budget-hotel", "ski-lodge-shift")
HTTP_TIMEOUT = 60


class Http:
    """``bench_loop``'s services, over HTTP to a running local stack."""

    def __init__(self, api_url: str, function_env: dict, run_dir: Path, build_dir: Path, env_vars: Path):
        from pricing.competitors import CompetitorClient
        from pricing.services.scoring import ScoringService
        from pricing.settings import Settings
        from pricing.storage.stores import Stores

        self.api = api_url.rstrip("/")
        self.run_dir, self.build_dir, self.env_vars = run_dir, build_dir, env_vars
        self.now = START
        self.session = requests.Session()
        settings = Settings.from_env(function_env)
        self.stores = Stores.build(settings)
        # The model's own policy for a held-back quote: no exploration, no holdback, no cache.
        self.pure = ScoringService(
            Settings.from_env({**function_env, "EXPLORATION_RATE": "0", "HOLDBACK_RATE": "0", "MODEL_CACHE_TTL_SECONDS": "0"}),
            self.stores.registry,
            self.stores.artifacts,
            self.stores.experiments,
            CompetitorClient("", "", 0.3),
        )
        self.calls = 0
        self.seconds = 0.0

    def _post(self, path: str, body: dict) -> dict:
        started = time.perf_counter()
        answer = self.session.post(f"{self.api}{path}", json=body, timeout=HTTP_TIMEOUT)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        if answer.status_code != 200:
            raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:500]}")
        return answer.json()

    def configure(self, property_id: str, base_price: float) -> None:
        self.stores.registry.put_property_config(property_id, base_price)

    def score(self, body: dict) -> dict:
        return self._post("/score", body)

    def policy_price(self, body: dict) -> float:
        from pricing.api.schemas import ScoreRequest

        return self.pure.score(ScoreRequest.model_validate(body).to_quote()).recommendation.price

    def learn(self, outcomes: list[dict]) -> dict:
        return self._post("/learn", {"batch": outcomes})

    def retrain(self, property_id: str) -> dict:
        from local.invoke import invoke

        as_of = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {"detail": {"property_ids": [property_id], "force": False, "as_of": as_of}}
        result = invoke(
            "RetrainFunction",
            json.dumps(event).encode(),
            build_dir=self.build_dir,
            run_dir=self.run_dir,
            env_vars_file=self.env_vars,
            echo=False,
        )
        if not result.ok:
            raise SystemExit(f"RetrainFunction failed ({result.outcome}): {result.payload[:500]!r}")
        (r,) = result.json()["results"]
        return r

    def live_version(self, property_id: str) -> str | None:
        return self.stores.registry.get_property_record(property_id).live_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--quotes", type=int, default=150, help="quotes per simulated day")
    parser.add_argument("--held-out", type=int, default=50, help="held-out outcomes per day for the offline metrics")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--curves", default=",".join(DEFAULT_CURVES))
    parser.add_argument("--png", type=Path, default=OUT / "loop-http.png")
    args = parser.parse_args(argv)

    from bench.loop_market import CURVES
    from local.stack import DEFAULT_BUILD_DIR, LocalStack, StackOptions

    logging.basicConfig(level=logging.WARNING)
    curves = [c for c in CURVES if c.name in args.curves.split(",")]
    build_dir = Path(os.environ.get("LOCAL_BUILD_DIR") or DEFAULT_BUILD_DIR)
    if not (build_dir / "template.yaml").is_file():
        print(f"no build in {build_dir}: run make build", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-loop-http-") as tmp:
        run_dir = Path(tmp)
        env_vars = run_dir / "env.json"
        # The scorer's model cache counts real seconds; the simulated night is a few of them.
        env_vars.write_text(json.dumps({"Parameters": {"MODEL_CACHE_TTL_SECONDS": "0"}}))
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "PUSHGATEWAY_URL", "SENTRY_DSN")}
        env.update(
            LOCAL_RUN_DIR=str(run_dir),
            LOCAL_BUILD_DIR=str(build_dir),
            PORT=str(_free_port()),
            LOCAL_EVENT_SOURCES="0",
            LOCAL_METRICS="0",
            ENV_VARS=str(env_vars),
        )
        stack = LocalStack(StackOptions.from_env(env))
        started = time.perf_counter()
        stack.start()
        try:
            # This process reads the stack's stores too (the base prices, the registry), as
            # local.seed does: the functions' endpoint, region and moto's credentials.
            function_env = {**stack.template.globals_environment(), **stack.service_env}
            os.environ.update(function_env)
            os.environ.update(
                {
                    "AWS_REGION": stack.options.region,
                    "AWS_DEFAULT_REGION": stack.options.region,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SESSION_TOKEN": "testing",
                }
            )
            loop = Http(stack.url, function_env, run_dir, build_dir, env_vars)
            print(f"make run stack up at {stack.url} in {time.perf_counter() - started:.0f} s", flush=True)
            runs = []
            for curve in curves:
                loop.now = START
                runs.append(
                    run_curve(
                        curve,
                        days=args.days,
                        quotes_per_day=args.quotes,
                        held_out=args.held_out,
                        seed=args.seed,
                        start=START,
                        services=loop,
                    )
                )
                print(f"  {curve.name}: {args.days} days done", flush=True)
        finally:
            stack.close()
    seconds = time.perf_counter() - started
    text = format_report(runs, seconds)
    print(text)
    print(f"\n{loop.calls} HTTP calls, {1000 * loop.seconds / max(loop.calls, 1):.1f} ms each on average")
    write_json(runs, OUT / "loop-http.json", days=args.days, quotes_per_day=args.quotes, seed=args.seed, via="http")
    plot(runs, args.png)
    print(f"figures: {OUT / 'loop-http.json'}, learning curves: {args.png}")
    return 0 if all(met for _, met, _ in verdicts(runs)) else 1


def _free_port() -> int:
    from local.services import free_port

    return free_port()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
