"""``make demo-traffic``: light, realistic mixed traffic on a running ``make run``, for the dashboard.

    BACKEND_API_URL=http://127.0.0.1:8089 make run     # terminal 1: the service, told where the backend is
    make demo-traffic                                   # terminal 2: 22 minutes of traffic (MINUTES=)
    make dashboard-snapshot                             # then: the dashboard of that run

What it sends, about three requests a second:

* ``POST /score`` for the three demo properties (with a model) and five walk-in properties
  (rules), many guests, nights 1-120 days ahead; two in five carry the market, the others make
  the service ask the competitor backend; one in fifty is invalid (a 422);
* an A/B experiment ``demo-ml-vs-rules`` (half the guests priced by rules) from the start;
* a stand-in competitor backend on ``--backend-port`` (8089): ``demo-hotel-1`` answers,
  ``demo-hotel-2`` fails one request in three (500), ``demo-loft-1`` answers late one in four
  (past the 300 ms timeout), others are unknown (404), and minutes 8-11 it is down for everyone;
* every 30 s ``POST /learn`` with the outcomes of those quotes, booked with the probability of
  the property's simulated market (``pricing.domain.simulator``), plus a few invalid outcomes
  and a retried batch (duplicates);
* from minute 12, ``demo-hotel-2``'s guests behave like a ski lodge's (drift), and
  RetrainFunction runs for the demo properties every 5 minutes (``local.invoke``, as ``make
  invoke`` does), so retrains deploy, skip, and see drift.

Deterministic for a given ``--seed``; stops early on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

# The layer's package (the simulator, storage) from the source tree, as the seeding gets it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "shared"))

from local.stack import DEFAULT_RUN_DIR, running_state, template_for
from local.template import DEFAULT_REGION, SamTemplate

DEMO = {"demo-hotel-1": "city-hotel", "demo-hotel-2": "beach-resort", "demo-loft-1": "city-loft"}
WALK_INS = [f"walk-in-{i}" for i in range(1, 6)]
EXPERIMENT = {"experiment_id": "demo-ml-vs-rules", "treatment_share": 0.5, "active": True}
OUTAGE_MINUTES = (8.0, 11.0)
DRIFT_FROM_MINUTE = 12.0
RETRAIN_EVERY_SECONDS = 300.0
LEARN_EVERY_SECONDS = 30.0


class CompetitorBackend:
    """spec/API.md's competitor-data backend, with the failures of the module doc."""

    def __init__(self, port: int, started: float) -> None:
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # http.server's naming
                parts = self.path.strip("/").split("/")
                if len(parts) != 4 or parts[:2] != ["api", "competitor-data"]:
                    return self._answer(404, {"success": False})
                property_id = parts[2]
                with backend.lock:
                    n = backend.counts[property_id] = backend.counts.get(property_id, 0) + 1
                minute = (time.monotonic() - started) / 60
                if OUTAGE_MINUTES[0] <= minute < OUTAGE_MINUTES[1]:
                    return self._answer(503, {"success": False, "error": "maintenance"})
                if property_id not in DEMO:
                    return self._answer(404, {"success": False})
                if property_id == "demo-hotel-2" and n % 3 == 0:
                    return self._answer(500, {"success": False, "error": "upstream unavailable"})
                if property_id == "demo-loft-1" and n % 4 == 0:
                    time.sleep(0.6)  # past the client's 300 ms: a timeout
                level = {"demo-hotel-1": 120.0, "demo-hotel-2": 210.0, "demo-loft-1": 95.0}[property_id]
                # Scraped between 10 minutes and 6 hours ago.
                updated = datetime.now(UTC) - timedelta(minutes=10 + (n * 37) % 350)
                self._answer(
                    200,
                    {
                        "success": True,
                        "data": {
                            "priceP10": round(level * 0.8, 2),
                            "priceP50": level,
                            "priceP90": round(level * 1.3, 2),
                            "competitorCount": 5 + n % 7,
                            "source": "demo-backend",
                            "updatedAt": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        },
                    },
                )

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def post(url: str, body: object, timeout: float = 30.0) -> tuple[int, dict | None]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # local API
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Traffic:
    def __init__(self, state: dict, rng: random.Random, minutes: float) -> None:
        from pricing.domain.simulator import CURVES

        self.api = state["api_url"].rstrip("/")
        self.state = state
        self.rng = rng
        self.minutes = minutes
        self.curves = {c.name: c for c in CURVES}
        self.pending: list[dict] = []
        self.last_batch: list[dict] = []
        self.sent: dict[str, int] = {}
        self.started = time.monotonic()

    def minute(self) -> float:
        return (time.monotonic() - self.started) / 60

    def count(self, what: str) -> None:
        self.sent[what] = self.sent.get(what, 0) + 1

    def score_one(self) -> None:
        rng = self.rng
        property_id = rng.choice(list(DEMO) * 3 + WALK_INS)
        now = datetime.now(UTC)
        lead = rng.randint(1, 120)
        capacity = rng.choice([20, 40, 80])
        remaining = rng.randint(1, capacity)
        body = {
            "entity": {"userId": f"guest-{rng.randint(1, 400)}", "propertyId": property_id},
            "stay_date": (now + timedelta(days=lead)).date().isoformat(),
            "quote_time": now.isoformat(),
            "product": {"type": "standard", "refundable": rng.random() < 0.4, "los": rng.randint(1, 5)},
            "inventory": {"capacity": capacity, "remaining": remaining, "overbook_limit": 0},
        }
        if rng.random() < 0.4:
            level = {"demo-hotel-1": 120.0, "demo-hotel-2": 210.0, "demo-loft-1": 95.0}.get(property_id, 110.0)
            level *= rng.uniform(0.85, 1.15)
            body["market"] = {
                "comp_price_p10": round(level * 0.8, 2),
                "comp_price_p50": round(level, 2),
                "comp_price_p90": round(level * 1.3, 2),
            }
        if rng.random() < 0.02:
            body["inventory"] = {"capacity": 5, "remaining": 9}  # invalid: a 422
        status, answer = post(f"{self.api}/score", body)
        self.count(f"score {status}")
        if status == 200 and answer:
            self.pending.append(
                {"property_id": property_id, "answer": answer, "lead": lead, "occupancy": 1 - remaining / capacity, "at": now}
            )

    def booked(self, quote: dict) -> bool:
        curve_name = DEMO.get(quote["property_id"], "city-hotel")
        if quote["property_id"] == "demo-hotel-2" and self.minute() >= DRIFT_FROM_MINUTE:
            curve_name = "ski-lodge"  # the market moved
        curve = self.curves[curve_name]
        weekend = (quote["at"] + timedelta(days=quote["lead"])).weekday() >= 4
        features = SimpleNamespace(lead_days=float(quote["lead"]), occupancy=quote["occupancy"], weekend=weekend)
        return self.rng.random() < curve.probability(quote["answer"]["price"], features)

    def learn(self) -> None:
        quotes, self.pending = self.pending, []
        batch = [
            {
                "property_id": q["property_id"],
                "timestamp": utc(datetime.now(UTC)),
                "quoted_price": q["answer"]["price"],
                "accepted": self.booked(q),
                "quote_id": q["answer"]["safety"]["quote_id"],
                "stay_date": (q["at"] + timedelta(days=q["lead"])).date().isoformat(),
                "context": {"occupancy": round(q["occupancy"], 3)},
            }
            for q in quotes
        ]
        if batch:
            batch.append({**batch[0], "quote_id": f"bad-{time.time_ns()}", "quoted_price": -1})
            status, _ = post(f"{self.api}/learn", {"batch": batch})
            self.count(f"learn {status}")
        if self.last_batch and self.rng.random() < 0.5:
            status, _ = post(f"{self.api}/learn", {"batch": self.last_batch[:10]})  # a caller's retry
            self.count(f"learn-retry {status}")
        self.last_batch = batch

    def drift_history(self) -> None:
        """The moved market's recent outcomes for demo-hotel-2, so the next retrain sees drift."""
        from pricing.domain.simulator import simulate_outcomes

        moved = simulate_outcomes(
            self.curves["ski-lodge"],
            400,
            seed=self.rng.randint(0, 10**6),
            now=datetime.now(UTC),
            property_id="demo-hotel-2",
            history_days=0.2,
        )
        status, _ = post(f"{self.api}/learn", {"batch": moved})
        self.count(f"learn-drift {status}")

    def retrain(self) -> None:
        from local.invoke import invoke

        event = {"detail": {"property_ids": list(DEMO), "force": False}}
        result = invoke("RetrainFunction", json.dumps(event).encode(), echo=False, build_dir=Path(self.state["build_dir"]))
        outcome = "ok" if result.ok else result.outcome
        summary = result.json().get("summary") if result.ok else None
        print(f"  minute {self.minute():5.1f}: retrain {outcome} {summary}", flush=True)
        self.count("retrain")


def put_experiment(state: dict, region: str) -> None:
    import os
    from unittest import mock

    from pricing.settings import Settings
    from pricing.storage.aws import AwsClients
    from pricing.storage.experiments import ExperimentStore

    template = SamTemplate(template_for(Path(state["build_dir"])), region=region, endpoint_url=state["aws_endpoint_url"])
    env = {**template.globals_environment(), "AWS_ENDPOINT_URL": state["aws_endpoint_url"]}
    credentials = {
        "AWS_ENDPOINT_URL": state["aws_endpoint_url"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    with mock.patch.dict(os.environ, credentials):
        ExperimentStore(AwsClients(), Settings.from_env(env).experiments_table).put_experiment(EXPERIMENT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo_traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=22.0)
    parser.add_argument("--rate", type=float, default=3.0, help="/score requests per second")
    parser.add_argument("--backend-port", type=int, default=8089)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args(argv)

    state = running_state(DEFAULT_RUN_DIR / "state.json")
    if not state:
        print(
            f"demo-traffic: make run is not up (start it first: BACKEND_API_URL=http://127.0.0.1:{args.backend_port} make run)",
            file=sys.stderr,
        )
        return 2
    backend_url = f"http://127.0.0.1:{args.backend_port}"
    if state.get("backend_api_url", "").rstrip("/") != backend_url:
        print(
            f"demo-traffic: make run was not given BACKEND_API_URL={backend_url}: the competitor "
            "panels will stay empty (restart it with that variable for them)",
            file=sys.stderr,
        )
    started = time.monotonic()
    backend = CompetitorBackend(args.backend_port, started)
    put_experiment(state, DEFAULT_REGION)
    traffic = Traffic(state, random.Random(args.seed), args.minutes)
    traffic.started = started
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(
        f"demo-traffic: {args.minutes:.0f} minutes on {state['api_url']}, backend {backend_url}, experiment {EXPERIMENT['experiment_id']}",
        flush=True,
    )
    next_learn = started + LEARN_EVERY_SECONDS
    next_retrain = started + 60.0
    drifted = False
    try:
        while not stop.is_set() and traffic.minute() < args.minutes:
            tick = time.monotonic()
            for _ in range(max(1, round(traffic.rng.expovariate(1 / args.rate)))):
                traffic.score_one()
            if tick >= next_learn:
                traffic.learn()
                next_learn += LEARN_EVERY_SECONDS
            if not drifted and traffic.minute() >= DRIFT_FROM_MINUTE:
                traffic.drift_history()
                drifted = True
            if tick >= next_retrain:
                traffic.retrain()
                next_retrain += RETRAIN_EVERY_SECONDS
            if int(traffic.minute() * 60) % 60 == 0:
                print(f"  minute {traffic.minute():5.1f}: {dict(sorted(traffic.sent.items()))}", flush=True)
            stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))
        traffic.learn()
    finally:
        backend.close()
    print(f"demo-traffic: done after {traffic.minute():.1f} minutes: {dict(sorted(traffic.sent.items()))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
