"""``make load``: a bounded load test of the local deployment, loopback only.

    python -m bench.load [--requests 3000] [--duration 120] [--clients 16] [--learn-share 0.25]
                         [--containers 4] [--batch 10]

Starts the same local deployment as ``make run`` (``local.stack.LocalStack``: the built functions
in local Lambda containers, moto, a Pushgateway and Prometheus) on free loopback ports, seeds a few
properties with a live conversion model, then sends a fixed number of requests -- or fewer if the
duration runs out first -- from ``--clients`` concurrent keep-alive clients, mixing POST /score
(over a set of properties, some with a model, some without) and POST /learn (batches of new,
valid outcomes with unique quote ids). It passes only when:

* no answer is a 5xx (a 429 would mean the local concurrency limit, reported apart);
* the metrics the containers pushed add up, in the Pushgateway (and in Prometheus when it runs),
  to exactly the requests sent per route and the outcomes stored;
* every container's resident memory (``VmRSS`` of its process, sampled every 0.5 s) is flat after
  warm-up: it grows by no more than ``--rss-growth-mib`` (default 8 MiB) from the end of warm-up
  (the first ``--warmup`` share of requests) to the end of the run.

Prints throughput and latency percentiles per route, the status counts, the metric totals and
each container's memory; exits 1 when a check fails.

Metrics: the stack runs with a 2 s push timeout (16 clients on two cores can starve a push of the
default 0.25 s). After the last request every container is retired as Lambda retires one
(SIGTERM: its last answers are read and anything still owed is pushed) before the totals are read.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import requests  # after bench's path set-up, like the other benches

from bench import ROOT
from bench.stack import BENCH_MODEL, patched_environ
from bench.stats import percentile
from local.stack import DEFAULT_BUILD_DIR, LocalStack, StackOptions

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MODEL_PROPERTIES = [f"load-model-{i}" for i in range(5)]
RULE_PROPERTIES = [f"load-rules-{i}" for i in range(15)]
MIB = 1024 * 1024


@dataclass
class Sent:
    route: str
    status: int
    seconds: float
    finished: float
    outcomes: int = 0
    stored: int = 0


@dataclass
class Plan:
    """The fixed list of requests, drawn from a seeded generator: every run sends the same mix."""

    items: list[tuple[str, dict]] = field(default_factory=list)

    @classmethod
    def build(cls, n: int, learn_share: float, batch: int, seed: int = 20261126) -> Plan:
        rng = random.Random(seed)
        now = datetime.now(UTC).replace(microsecond=0)
        run = uuid.UUID(int=rng.getrandbits(128)).hex[:8]
        plan = cls()
        for i in range(n):
            prop = rng.choice(MODEL_PROPERTIES + RULE_PROPERTIES)
            if rng.random() < learn_share:
                outcomes = [
                    {
                        "property_id": prop,
                        "timestamp": (now - timedelta(minutes=rng.randint(1, 60 * 24 * 30))).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "quoted_price": round(rng.uniform(60, 260), 2),
                        "accepted": rng.random() < 0.3,
                        "quote_id": f"load-{run}-{i}-{j}",
                    }
                    for j in range(batch)
                ]
                plan.items.append(("/learn", {"batch": outcomes}))
            else:
                plan.items.append(
                    (
                        "/score",
                        {
                            "entity": {"userId": f"user-{rng.randint(1, 500)}", "propertyId": prop},
                            "stay_date": (now.date() + timedelta(days=rng.randint(0, 180))).isoformat(),
                            "quote_time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "inventory": {"capacity": 40, "remaining": rng.randint(0, 40)},
                            "market": {"comp_price_p50": round(rng.uniform(80, 200), 2)} if rng.random() < 0.5 else None,
                            "toggles": {"use_competitors": True},
                        },
                    )
                )
        return plan


class MemorySampler:
    """VmRSS of every container process of the stack, every ``interval`` seconds."""

    def __init__(self, stack: LocalStack, interval: float = 0.5) -> None:
        self.stack = stack
        self.interval = interval
        self.samples: dict[str, list[tuple[float, int]]] = defaultdict(list)  # container -> (t, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    @staticmethod
    def rss(pid: int) -> int | None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
        return None

    def sample_once(self) -> None:
        now = time.monotonic()
        for key, pool in self.stack.pools.items():
            for container in pool.containers():
                if container.pid and container.alive:
                    value = self.rss(container.pid)
                    if value:
                        self.samples[f"{key}/{container.id}"].append((now, value))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_once()

    def start(self) -> MemorySampler:
        self.sample_once()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample_once()


def start_stack(args: argparse.Namespace, run_dir: Path) -> LocalStack:
    env_vars = run_dir / "load-env.json"
    env_vars.write_text(
        json.dumps(
            {
                "Parameters": {
                    "PUSHGATEWAY_TIMEOUT_SECONDS": "2",
                    "POWERTOOLS_LOG_LEVEL": "WARNING",
                }
            }
        )
    )
    options = StackOptions(
        build_dir=Path(args.build_dir),
        run_dir=run_dir,
        host="127.0.0.1",
        port=0,
        max_containers=args.containers,
        metrics=True,
        pushgateway_port=0,
        prometheus_port=0,
        event_sources=False,
        env_vars_file=env_vars,
        host_env={},
        state_file=None,
    )
    return LocalStack(options).start()


def seed_models(stack: LocalStack) -> None:
    """A live model for MODEL_PROPERTIES and a base price for every property, straight into moto."""
    from pricing.settings import Settings
    from pricing.storage.stores import Stores

    env = {**stack.template.globals_environment(), "AWS_ENDPOINT_URL": stack.aws_endpoint_url}
    aws = {
        "AWS_ENDPOINT_URL": stack.aws_endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": stack.options.region,
        "AWS_DEFAULT_REGION": stack.options.region,
    }
    with patched_environ(aws):
        stores = Stores.build(Settings.from_env(env))
        for prop in MODEL_PROPERTIES + RULE_PROPERTIES:
            stores.registry.put_property_config(prop, 125.0)
        for prop in MODEL_PROPERTIES:
            key = f"models/{prop}/load-v1.json"
            artifact = {**BENCH_MODEL.to_artifact(), "property_id": prop, "version": "load-v1"}
            stores.artifacts.put_artifact(key, artifact)
            stores.registry.swap_live_model(prop, "load-v1", key, expected_version=None, deployed_at=datetime.now(UTC).isoformat())


def drive(url: str, plan: Plan, clients: int, duration: float) -> tuple[list[Sent], float, float]:
    """Send the plan from ``clients`` threads until it is done or ``duration`` has passed.

    Returns the answers, the monotonic time sending started, and the seconds it took.
    """
    results: list[Sent] = []
    lock = threading.Lock()
    next_index = iter(range(len(plan.items)))
    started = time.monotonic()
    deadline = started + duration

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            route, body = plan.items[index]
            t0 = time.monotonic()
            try:
                response = session.post(url + route, json=body, timeout=60)
                status, answer = response.status_code, response.text
            except requests.RequestException as exc:
                status, answer = 599, repr(exc)  # the connection itself failed: a server error
            t1 = time.monotonic()
            sent = Sent(route, status, t1 - t0, t1 - started, outcomes=len(body.get("batch", ())))
            if route == "/learn" and status == 200:
                sent.stored = json.loads(answer).get("processed", 0)
            with lock:
                results.append(sent)
        session.close()

    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, started, time.monotonic() - started


def retire_containers(stack: LocalStack) -> None:
    """Retire every container as Lambda does: SIGTERM, the metrics flush, then the kill."""
    for pool in stack.pools.values():
        for container in pool.containers():
            container.retire()


def pushgateway_totals(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    totals: Counter = Counter()
    text = requests.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if not labels.get("job", "").startswith("pricing-"):
                continue
            if sample.name == "pricing_requests_total" and labels.get("method") == "POST":
                totals[labels.get("endpoint", "")] += sample.value
            elif sample.name == "pricing_outcomes_ingested_total":
                totals["outcomes"] += sample.value
            elif sample.name == "pricing_metrics_push_failures_total":
                totals["push_failures"] += sample.value
    return dict(totals)


def prometheus_total(url: str, expr: str) -> float | None:
    try:
        answer = requests.get(url + "/api/v1/query", params={"query": expr}, timeout=10).json()
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0
    except (requests.RequestException, ValueError, KeyError, IndexError):
        return None


def memory_report(samples: dict[str, list[tuple[float, int]]], warm_at: float, limit: int) -> list[dict]:
    """Per container: RSS at the end of warm-up (or its first sample after), at the end, growth."""
    rows = []
    for name, series in sorted(samples.items()):
        after = [v for t, v in series if t >= warm_at]
        if len(after) < 3:
            rows.append({"container": name, "samples": len(series), "flat": True, "note": "too short-lived to judge"})
            continue
        start = sorted(after[:3])[1]
        end = sorted(after[-3:])[1]
        growth = end - start
        rows.append(
            {
                "container": name,
                "samples": len(series),
                "warm_mib": start / MIB,
                "end_mib": end / MIB,
                "peak_mib": max(v for _, v in series) / MIB,
                "growth_mib": growth / MIB,
                "flat": growth <= limit,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests to send (default 3000)")
    parser.add_argument("--duration", type=float, default=120.0, help="stop sending after this many seconds")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--learn-share", type=float, default=0.25, help="share of /learn requests (default 0.25)")
    parser.add_argument("--batch", type=int, default=10, help="outcomes per /learn request (default 10)")
    parser.add_argument("--containers", type=int, default=4, help="containers per function (default 4)")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of requests that is warm-up")
    parser.add_argument("--rss-growth-mib", type=float, default=8.0, help="allowed RSS growth after warm-up")
    parser.add_argument("--build-dir", default=str(DEFAULT_BUILD_DIR))
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be positive")

    run_dir = Path(tempfile.mkdtemp(prefix="load-", dir=ROOT / ".run" if (ROOT / ".run").is_dir() else None))
    print(f"starting the local stack (logs in {run_dir / 'logs'})", file=sys.stderr)
    stack = start_stack(args, run_dir)
    failures: list[str] = []
    try:
        url = stack.url
        if urlsplit(url).hostname not in LOOPBACK:
            raise SystemExit(f"refusing to load {url}: loopback only")
        if not stack.pushgateway_url:
            failures.append("no Pushgateway (`make setup` installs the pinned stack): metric totals not checked")
        seed_models(stack)
        plan = Plan.build(args.requests, args.learn_share, args.batch)
        before = pushgateway_totals(stack.pushgateway_url) if stack.pushgateway_url else {}

        sampler = MemorySampler(stack).start()
        results, started, elapsed = drive(url, plan, args.clients, args.duration)
        sampler.stop()

        by_route: dict[str, list[Sent]] = defaultdict(list)
        for sent in results:
            by_route[sent.route].append(sent)
        statuses = Counter((s.route, s.status) for s in results)
        server_errors = sum(n for (_, status), n in statuses.items() if status >= 500)
        print(
            f"\n{len(results)} of {len(plan.items)} requests in {elapsed:.1f} s from {args.clients} clients "
            f"({len(results) / elapsed:.1f} req/s), {args.containers} containers per function"
        )
        print(f"{'route':<8} {'n':>6} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for route in ("/score", "/learn"):
            rows = by_route.get(route, [])
            if not rows:
                continue
            ms = [s.seconds * 1000 for s in rows]
            print(
                f"{route:<8} {len(rows):>6} {len(rows) / elapsed:>7.1f} {percentile(ms, 50):>8.1f} "
                f"{percentile(ms, 90):>8.1f} {percentile(ms, 99):>8.1f} {max(ms):>8.1f}"
            )
        print("statuses: " + ", ".join(f"{route} {status}: {n}" for (route, status), n in sorted(statuses.items())))
        if server_errors:
            failures.append(f"{server_errors} answers were 5xx")
        if len(results) < len(plan.items):
            print(f"(the duration ran out: {len(plan.items) - len(results)} requests not sent)")

        sent_score = len(by_route.get("/score", []))
        sent_learn = len(by_route.get("/learn", []))
        stored = sum(s.stored for s in by_route.get("/learn", []))
        if stack.pushgateway_url:
            expected = {"/score": sent_score, "/learn": sent_learn, "outcomes": stored}
            got: dict[str, float] = {}
            retire_containers(stack)
            deadline = time.monotonic() + 20
            while True:
                after = pushgateway_totals(stack.pushgateway_url)
                got = {k: after.get(k, 0) - before.get(k, 0) for k in expected}
                if got == expected or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            push_failures = after.get("push_failures", 0) - before.get("push_failures", 0)
            print(
                f"Pushgateway totals: sent /score {sent_score}, counted {got['/score']:.0f}; sent /learn "
                f"{sent_learn}, counted {got['/learn']:.0f}; outcomes stored {stored}, counted "
                f"{got['outcomes']:.0f}; push failures {push_failures:.0f}"
            )
            if got != expected:
                failures.append(f"Pushgateway totals {got} differ from what was sent {expected}")
            if stack.prometheus is not None:
                expr = 'sum(pricing_requests_total{method="POST",endpoint="/score"})'
                seen = None
                for _ in range(30):
                    seen = prometheus_total(stack.prometheus.url, expr)
                    if seen is not None and seen >= before.get("/score", 0) + sent_score:
                        break
                    time.sleep(1)
                print(f"Prometheus: {expr} = {seen}")
                if seen != before.get("/score", 0) + sent_score:
                    failures.append(f"Prometheus counted {seen} /score requests, {sent_score} were sent")

        warm_count = max(1, int(len(results) * args.warmup))
        warm_at = started + sorted(s.finished for s in results)[warm_count - 1]
        rows = memory_report(sampler.samples, warm_at, int(args.rss_growth_mib * MIB))
        print(f"\nmemory (VmRSS) per container, warm = after the first {warm_count} requests:")
        for row in rows:
            if "note" in row:
                print(f"  {row['container']:<28} {row['note']}")
                continue
            print(
                f"  {row['container']:<28} warm {row['warm_mib']:6.1f} MiB  end {row['end_mib']:6.1f} MiB  "
                f"peak {row['peak_mib']:6.1f} MiB  growth {row['growth_mib']:+5.1f} MiB  "
                f"{'flat' if row['flat'] else 'GROWING'}"
            )
        growing = [r["container"] for r in rows if not r["flat"]]
        if growing:
            failures.append(f"memory grew by more than {args.rss_growth_mib} MiB after warm-up in {growing}")
    finally:
        stack.close()
    if failures:
        print(f"\nFAILED (logs kept in {run_dir / 'logs'}):\n  " + "\n  ".join(failures))
        return 1
    shutil.rmtree(run_dir, ignore_errors=True)
    print("\nOK: zero 5xx, metric totals equal to requests sent, memory flat after warm-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
