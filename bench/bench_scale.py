"""The metrics path at fleet scale: Pushgateway, Prometheus, rules and pruning, before and after.

For each fleet size (``--sizes``, containers; each holds a base group and one property group,
as a /score container does) the bench fills the pinned stack (``.tools/prometheus-stack``) with
the project's own push bodies (rendered by ``MetricsPusher`` from a /score invocation's
metrics, protobuf with created timestamps), then measures, in two layouts:

* **before**: one Pushgateway with its default consistency check (as docker-compose used to run
  it), the rules as they were (``bench/baseline/``: burn-rate windows of 5 m to 3 d read from
  every container's raw series), pruning by listing the whole Pushgateway;
* **after**: ``--shards`` Pushgateways without the consistency check, each container on the one
  its instance id hashes to (``choose_pushgateway``), Prometheus scraping all of them with the
  project's ``observability/prometheus.yml`` and rule files, pruning from one Prometheus query.

Phases, in order: fill (every group pushed once) and wait until Prometheus has scraped them all
(the "first scrape" figure: every series new, the cost a shard pays once for a new fleet);
then the steady window (``--steady-seconds``): the live half of the fleet pushing at
``--push-rate`` while Prometheus scrapes and evaluates every 15 s, which gives push p50/p99
(a push = one invocation's two PUTs, pipelined on a kept-alive connection as the container
writes them, timed from its scheduled start until both are answered) and, over the same
window from Prometheus' own series, ``scrape_duration_seconds`` per Pushgateway (largest and
median), rule evaluation per cycle (``prometheus_rule_group_last_duration_seconds`` summed
over the groups: median and largest reading) and missed iterations; then the closed-loop
maximum pushes/s (every pusher pushing again as soon as answered, ``--push-seconds``), kept out
of the steady window because it saturates the machine the stack runs on; then the
Pushgateway's GET /metrics (text, median of 3) and the prune of the dead half. For the single
Pushgateway the pushes are measured with and without its check (the same groups: filled
unchecked, then restarted checked from its persistence file).

Prometheus runs at the production 15 s scrape and evaluation interval. Its data are minutes
old, so the "before" rule cost is a floor: in production its 1 d and 3 d windows hold up to
17,280 samples a series, and the cost grows with them; the "after" rules read raw series over
5 m only.

Run: ``make bench-scale`` (``SIZES=50,500`` for a quick run; ``SHARDS=``, ``PUSHERS=``,
``PUSH_SECONDS=``, ``STEADY_SECONDS=``). CPU heavy at 10,000 containers (about 800,000 series in Prometheus).
To compare a Prometheus setting or release on the after layout: ``--prometheus-flag=...``
(repeatable) and ``--prometheus-binary=PATH``; each steady window also reports the CPU
Prometheus and the Pushgateways used (cores) and the slowest rules of the last evaluation, which
say where the time goes when the wall times are inflated by a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers" / "shared"), str(ROOT)]

import yaml  # noqa: E402

from local import prometheus_stack  # noqa: E402
from local.services import ManagedProcess, free_port  # noqa: E402
from pricing.observability.exposition import CONTENT_TYPE  # noqa: E402
from pricing.observability.metrics import PricingMetrics  # noqa: E402
from pricing.observability.push import MetricsPusher, choose_pushgateway, prune_stale_groups  # noqa: E402
from pricing.observability.wire import Connection, grouping_path  # noqa: E402
from pricing.settings import Settings  # noqa: E402

OBSERVABILITY = ROOT / "observability"
BASELINE = ROOT / "bench" / "baseline"
RUN_DIR = ROOT / ".run" / "bench-scale"
JOB = "pricing-score"
PROPERTIES = 200  # the property ids the fleet's property groups are spread over
TTL = 900
#: Shards of the "after" layout when not given: one Pushgateway per 1,250 containers keeps each
#: scrape at about 2,500 groups (bench/RESULTS.md: at 10,000 containers half the scrape time of
#: one per 2,500).
CONTAINERS_PER_SHARD = 1250

# Targets of issue 13, at 10,000 containers.
TARGET_PUSH_P99_MS = 50.0
TARGET_SCRAPE_S = 5.0
TARGET_RULES_S = 5.0
TARGET_PRUNE_S = 10.0


def invocation(m: PricingMetrics, prop: str) -> None:
    """What one /score invocation records: the request middleware (pricing/api/common.py) and
    ScoringService.score (pricing/services/scoring.py), in their order."""
    with m.track_active_request("/score"):
        m.track_cache_hit()
        m.set_models_loaded(12)
        m.track_competitor_fetch(property_id=prop, status="success", staleness_seconds=3600)
        m.track_ab_assignment(experiment_id="exp-1", variant="treatment")
        m.track_model_prediction(property_id=prop, model_type="conversion", duration=0.0021)
        m.track_exploration(pricing_method="ml_elasticity", explored=False)
        m.track_score_request(pricing_method="ml_elasticity", duration=0.0153)
    m.track_request(method="POST", endpoint="/score", status_code=200, duration=0.0187)


class _Capture:
    """A transport that keeps the requests a push would send."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []

    def request(self, method, path, body, deadline):
        self.requests.append((method, path, body))
        return 200, b""

    def close(self):
        pass


def push_bodies() -> tuple[bytes, bytes]:
    """The base group's and the property group's body of a /score container's push."""
    capture = _Capture()
    m = PricingMetrics()
    pusher = MetricsPusher(m, Settings(pushgateway_url="http://unused", function_name="score"), instance="bench", transport=capture)
    invocation(m, "prop-0")
    pusher.push()
    (_, base_path, base), (_, prop_path, prop) = capture.requests
    assert "property_id" not in base_path and "property_id" in prop_path
    return base, prop


@dataclass
class Container:
    instance: str
    property_id: str
    shard: str = ""

    def requests(self, base: bytes, prop: bytes) -> list[tuple[str, str, bytes]]:
        labels = [("job", JOB), ("instance", self.instance)]
        return [("PUT", grouping_path(labels), base), ("PUT", grouping_path([*labels, ("property_id", self.property_id)]), prop)]


def fleet(size: int, shards: list[str], seed: int = 13) -> list[Container]:
    rnd = random.Random(seed)
    out = []
    for i in range(size):
        instance = f"{rnd.getrandbits(64):016x}"
        out.append(Container(instance, f"prop-{i % PROPERTIES}", choose_pushgateway(instance, shards)))
    return out


# ------------------------------------------------------------------------------ processes


def http_get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _process(name: str, argv: list[str], ready_url: str, log: Path, ready_timeout: float) -> ManagedProcess:
    # Up to a minute to stop: a checked Pushgateway writes its whole persistence file at SIGTERM.
    proc = ManagedProcess(argv, ready_url, log_path=log, ready_timeout=ready_timeout, stop_timeout=60.0)
    proc.name = name
    return proc


def pushgateway(work: Path, port: int, checked: bool, persistence: Path | None = None, ready_timeout: float = 120.0) -> ManagedProcess:
    args = [
        prometheus_stack.require(prometheus_stack.PUSHGATEWAY),
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={persistence or ''}",
        "--log.level=warn",
    ]
    if persistence:
        args.append("--persistence.interval=24h")  # written at shutdown, not while measuring
    if not checked:
        args += list(prometheus_stack.PUSHGATEWAY_FLAGS)
    return _process(f"Pushgateway :{port}", args, f"http://127.0.0.1:{port}/-/ready", work / f"pushgateway-{port}.log", ready_timeout)


def prometheus(
    work: Path, port: int, shards: list[str], rule_files: list[Path], extra_flags: tuple[str, ...] = (), binary: str = ""
) -> ManagedProcess:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    config.pop("alerting", None)
    config.pop("remote_write", None)
    config["rule_files"] = [str(p) for p in rule_files]
    for job in config["scrape_configs"]:
        if job["job_name"] == "pushgateway":
            job["static_configs"] = [{"targets": [urllib.parse.urlsplit(u).netloc for u in shards]}]
        else:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    data = work / "prometheus-data"
    shutil.rmtree(data, ignore_errors=True)
    return _process(
        "Prometheus",
        [
            binary or prometheus_stack.require(prometheus_stack.PROMETHEUS),
            f"--config.file={path}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *prometheus_stack.PROMETHEUS_FLAGS,
            *extra_flags,
        ],
        f"http://127.0.0.1:{port}/-/ready",
        work / "prometheus.log",
        120.0,
    )


# ------------------------------------------------------------------------------ measuring


def fill(containers: list[Container], base: bytes, prop: bytes, threads: int = 8) -> float:
    """Every container's two groups pushed once (pipelined in batches); seconds taken."""
    start = time.perf_counter()
    errors: list[str] = []

    def work(part: list[Container]) -> None:
        conns: dict[str, Connection] = {}
        by_shard: dict[str, list] = {}
        for c in part:
            by_shard.setdefault(c.shard, []).extend(c.requests(base, prop))
        for shard, requests in by_shard.items():
            conn = conns.setdefault(shard, Connection(shard, {"Content-Type": CONTENT_TYPE}))
            for i in range(0, len(requests), 100):
                batch = requests[i : i + 100]
                conn.send(batch, time.monotonic() + 600)
                answers = conn.poll(time.monotonic() + 600)
                bad = [a.status for a in answers if a.status >= 300]
                if len(answers) != len(batch) or bad:
                    errors.append(f"{shard}: {len(answers)}/{len(batch)} answered, statuses {bad[:3]}")
                    return
        for conn in conns.values():
            conn.close()

    parts = [containers[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=work, args=(p,)) for p in parts]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError("fill failed: " + "; ".join(errors[:3]))
    return time.perf_counter() - start


@dataclass
class PushResult:
    latencies: list[float] = field(default_factory=list)
    unfinished: int = 0
    failed: int = 0
    seconds: float = 0.0
    in_window: int = 0  # answered before the window closed

    def pct(self, q: float) -> float:
        """Quantile in seconds; inf when it falls among the pushes still unanswered at the cut-off."""
        values = sorted(self.latencies) + [float("inf")] * self.unfinished
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    @property
    def rate(self) -> float:
        return self.in_window / self.seconds if self.seconds else 0.0


def push_load(
    containers: list[Container], base: bytes, prop: bytes, pushers: int, seconds: float, rate: float | None = None, grace: float = 30.0
) -> PushResult:
    """``pushers`` concurrent pushers, each pushing its own containers (one writer per group),
    one push in flight each, for ``seconds``.

    ``rate`` (pushes/s over all pushers): the pushes are scheduled at that rate, round robin, and
    each one's time runs from its scheduled start, so a push that waits for its busy pusher
    counts its wait (no coordinated omission). None: closed loop, every pusher pushes again as
    soon as its last push is answered (the maximum rate). A push unanswered ``grace`` seconds
    after the window is counted unfinished. One thread with non-blocking sockets drives them all
    (the project's ``wire.Connection``), so the client's own cost stays out of the figures as far
    as one Python thread can keep it out.
    """
    import select

    result = PushResult()
    owned = [containers[i::pushers] for i in range(pushers) if containers[i::pushers]]
    n = len(owned)
    conns = [dict() for _ in range(n)]  # pusher -> shard -> Connection
    queue: list[list[float]] = [[] for _ in range(n)]  # scheduled starts waiting for the pusher
    busy: list[tuple | None] = [None] * n  # (scheduled, conn, answers so far)
    turn = [0] * n
    poller = select.poll()
    fd_owner: dict[int, int] = {}
    start = time.monotonic()
    window_end, hard_end = start + seconds, start + seconds + grace
    slot = 0

    def begin(p: int, scheduled: float) -> None:
        c = owned[p][turn[p] % len(owned[p])]
        turn[p] += 1
        conn = conns[p].get(c.shard)
        if conn is None:
            conn = conns[p][c.shard] = Connection(c.shard, {"Content-Type": CONTENT_TYPE})
        fresh = conn.send(c.requests(base, prop), hard_end)
        if fresh:
            fd = conn._sock.fileno()
            fd_owner[fd] = p
            poller.register(fd, select.POLLIN)
        busy[p] = (scheduled, conn, 0)

    while True:
        now = time.monotonic()
        if now >= hard_end:
            break
        if now < window_end:
            if rate:
                while start + slot / rate <= now:
                    queue[slot % n].append(start + slot / rate)
                    slot += 1
            else:
                for p in range(n):
                    if busy[p] is None and not queue[p]:
                        queue[p].append(now)
        for p in range(n):
            if busy[p] is None and queue[p]:
                try:
                    begin(p, queue[p].pop(0))
                except Exception:  # noqa: BLE001 - counted
                    result.failed += 1
        if now >= window_end and all(b is None for b in busy):
            break
        wait = (start + slot / rate - now) if rate and now < window_end else 0.005
        for fd, _ in poller.poll(max(0, min(wait, 0.005)) * 1000):
            p = fd_owner.get(fd)
            if p is None or busy[p] is None:
                continue
            scheduled, conn, got = busy[p]
            answers = conn.poll()
            got += len(answers)
            if any(a.status >= 300 for a in answers):
                result.failed += 1
            if conn.closed and got < 2:
                result.failed += 1
                busy[p] = None
                continue
            if got >= 2:
                done = time.monotonic()
                result.latencies.append(done - scheduled)
                result.in_window += done <= window_end
                busy[p] = None
            else:
                busy[p] = (scheduled, conn, got)
    result.unfinished = sum(1 for b in busy if b is not None) + sum(len(q) for q in queue)
    result.seconds = seconds
    for shards in conns:
        for conn in shards.values():
            conn.close()
    return result


def get_metrics_seconds(shard: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        http_get(shard + "/metrics", timeout=120)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def prom_query(prom: str, expr: str) -> list[dict]:
    body = http_get(f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=60)
    return json.loads(body)["data"]["result"]


def prom_self(prom: str) -> dict[str, list[tuple[dict, float]]]:
    """Prometheus' own /metrics, the few families read here."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        "prometheus_tsdb_head_series",
        "prometheus_rule_group_last_duration_seconds",
        "prometheus_rule_group_iterations_missed_total",
        "prometheus_rule_group_iterations_total",
    }
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(http_get(prom + "/metrics").decode()):
        for s in family.samples:
            if s.name in wanted:
                out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def wait_for_prometheus(prom: str, groups: int, timeout: float) -> dict:
    """Until every group is scraped and every rule group evaluated twice since; the cost figures."""
    deadline = time.monotonic() + timeout
    seen_all_at = None
    iterations0: dict[str, float] = {}
    cycles: list[float] = []
    while time.monotonic() < deadline:
        time.sleep(3)
        try:
            got = prom_query(prom, f'count(push_time_seconds{{job="{JOB}"}})')
            count = int(float(got[0]["value"][1])) if got else 0
            stats = prom_self(prom)
        except OSError:
            continue
        iters = {labels["rule_group"]: v for labels, v in stats.get("prometheus_rule_group_iterations_total", [])}
        cycle = sum(v for _, v in stats.get("prometheus_rule_group_last_duration_seconds", []))
        if seen_all_at is None and count >= groups:
            seen_all_at = time.monotonic()
            iterations0 = iters
        if seen_all_at is not None:
            cycles.append(cycle)
            if iters and all(iters[g] - iterations0.get(g, 0) >= 2 for g in iters):
                break
    stats = prom_self(prom)
    scrape = {
        r["metric"]["instance"]: float(r["value"][1])
        for r in prom_query(prom, 'max_over_time(scrape_duration_seconds{job="pushgateway"}[2m])')
    }
    up = {r["metric"]["instance"]: float(r["value"][1]) for r in prom_query(prom, 'min_over_time(up{job="pushgateway"}[2m])')}
    durations = {labels["rule_group"].split(";")[-1]: v for labels, v in stats["prometheus_rule_group_last_duration_seconds"]}
    return {
        "scraped_all": seen_all_at is not None,
        "scrape_seconds": scrape,
        "up": up,
        "head_series": stats["prometheus_tsdb_head_series"][0][1],
        # Each reading: the sum of every group's last evaluation time; median and largest of the
        # readings taken once every group was scraped (one every 3 s).
        "rules_cycle_seconds": statistics.median(cycles) if cycles else sum(durations.values()),
        "rules_cycle_max_seconds": max(cycles) if cycles else sum(durations.values()),
        "rule_groups": durations,
        "missed_iterations": sum(v for _, v in stats.get("prometheus_rule_group_iterations_missed_total", [])),
    }


def steady_figures(prom: str, seconds: float) -> dict:
    """Scrape and rule cost over the last ``seconds``, from Prometheus' own series: every scrape
    of each shard (largest and median) and every reading of the rule groups' summed last
    evaluation time (one a scrape of Prometheus itself, 15 s)."""
    window = f"{int(seconds)}s"
    scrapes = {
        r["metric"]["instance"]: float(r["value"][1])
        for r in prom_query(prom, f'max_over_time(scrape_duration_seconds{{job="pushgateway"}}[{window}])')
    }
    medians = {
        r["metric"]["instance"]: float(r["value"][1])
        for r in prom_query(prom, f'quantile_over_time(0.5, scrape_duration_seconds{{job="pushgateway"}}[{window}])')
    }
    up = {r["metric"]["instance"]: float(r["value"][1]) for r in prom_query(prom, f'min_over_time(up{{job="pushgateway"}}[{window}])')}
    cycle = f"sum(prometheus_rule_group_last_duration_seconds)[{window}:15s]"

    def scalar(expr: str) -> float:
        got = prom_query(prom, expr)
        return float(got[0]["value"][1]) if got else float("nan")

    missed = scalar(f"sum(increase(prometheus_rule_group_iterations_missed_total[{window}]))")
    # CPU is what scrapes and rules cost whatever else runs on the machine; the wall times
    # above also count waiting for a core.
    cpu = scalar(f'rate(process_cpu_seconds_total{{job="prometheus"}}[{window}])')
    pg_cpu = scalar(f'sum(rate(process_cpu_seconds_total{{job="pushgateway"}}[{window}]))')

    stats = prom_self(prom)
    rules = json.loads(http_get(f"{prom}/api/v1/rules", timeout=60))["data"]["groups"]
    slowest = sorted(((r["evaluationTime"], f"{g['name']}/{r['name']}") for g in rules for r in g["rules"]), reverse=True)[:12]
    return {
        "slowest_rules": [[name, seconds] for seconds, name in slowest],
        "prometheus_cpu_cores": cpu,
        "pushgateway_cpu_cores": pg_cpu,
        "head_series": stats["prometheus_tsdb_head_series"][0][1],
        "rule_groups": {labels["rule_group"].split(";")[-1]: v for labels, v in stats["prometheus_rule_group_last_duration_seconds"]},
        "scrape_seconds": scrapes,
        "scrape_median_seconds": medians,
        "up": up,
        "rules_cycle_seconds": scalar(f"quantile_over_time(0.5, {cycle})"),
        "rules_cycle_max_seconds": scalar(f"max_over_time({cycle})"),
        # Absent until a group has missed one. An absent rule or scrape reading stays NaN, which
        # no target check passes.
        "missed_iterations": missed if missed == missed else 0.0,
    }


def refill_live(containers: list[Container], base: bytes, prop: bytes) -> float:
    """Half the fleet (every other container) pushes again, the other half stays dead: the time
    between the two, the cut the pruner's TTL is measured against."""
    cut = time.time()
    time.sleep(0.05)
    fill(containers[::2], base, prop)
    return cut


def prune_dead(prom: str | None, containers: list[Container], cut: float, settings: Settings) -> dict:
    """Prune with ``now = cut + TTL``: exactly the dead half's groups must go, the live half stay.

    With Prometheus (``prom``) the pruner reads push times from it, so the live half's new push
    times must be scraped first (as in production, where a group pushed within the last scrape
    interval after a TTL of silence is the one case the pruner takes for dead; see
    docs/metrics.md)."""
    live = containers[::2]
    if prom:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            got = prom_query(prom, f'count(push_time_seconds{{job="{JOB}"}} > {cut:.3f})')
            if got and int(float(got[0]["value"][1])) >= 2 * len(live):
                break
            time.sleep(1)
    t0 = time.perf_counter()
    pruned = prune_stale_groups(settings, now=cut + settings.pushgateway_group_ttl_seconds)
    seconds = time.perf_counter() - t0
    try:
        left = sum(pricing_groups(s) for s in sorted({c.shard for c in containers}))
    except OSError:  # a checked Pushgateway of 20,000 groups may not even list them in 120 s
        left = -1
    return {
        "pruned": pruned,
        "dead_groups": 2 * (len(containers) - len(live)),
        "prune_seconds": seconds,
        "left_after_prune": left,
        "live_groups": 2 * len(live),
    }


def pricing_groups(shard: str) -> int:
    body = json.loads(http_get(shard + "/api/v1/metrics", timeout=120))
    return sum(1 for g in body["data"] if g["labels"].get("job", "").startswith("pricing-"))


# ------------------------------------------------------------------------------ the layouts


def niced_push_load(*args, niceness: int = 19, **kwargs) -> PushResult:
    """``push_load`` in a child process at the lowest CPU priority.

    In production the pushers are Lambda containers on other machines; here they share two cores
    with the Pushgateways and Prometheus, and one Python thread pushing 500 times a second would
    otherwise take CPU from the scrapes and rule evaluations being measured. At the lowest priority
    it gets what they leave, and any wait for CPU counts in the push latency."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def child() -> None:
        os.nice(niceness)
        results.put(push_load(*args, **kwargs))

    proc = ctx.Process(target=child)
    proc.start()
    try:
        result = results.get()
    finally:
        proc.join()
    return result


def steady(prom: str, live: list[Container], base: bytes, prop: bytes, args, key: str) -> dict:
    """The production case: the live half pushing at the paced rate for ``--steady-seconds``
    while Prometheus scrapes and evaluates as every 15 s; push latency and, over the same
    window, the scrape and rule figures. The closed-loop maximum comes after, outside it."""
    result = niced_push_load(live, base, prop, args.pushers, args.steady_seconds, args.push_rate)
    out = {"push_" + key: result, **steady_figures(prom, args.steady_seconds)}
    if args.steady_seconds >= 600:
        # Head chunks fill for up to 30 minutes and every raw read decodes its chunk from the
        # start: the window's last 5 minutes are the cost with fuller chunks.
        out["late"] = steady_figures(prom, 300)
    return out


def run_before(size: int, args, base: bytes, prop: bytes) -> dict:
    work = RUN_DIR / f"before-{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    port = free_port()
    shard = f"http://127.0.0.1:{port}"
    containers = fleet(size, [shard])
    persistence = work / "pushgateway.state"
    out: dict = {"layout": "before", "containers": size, "groups": 2 * size, "shards": 1}
    # The same groups behind both: filled unchecked, then restarted checked from its file.
    pg = pushgateway(work, port, checked=False, persistence=persistence).start()
    try:
        out["fill_seconds"] = fill(containers, base, prop)
        # Only the live half pushes from here on: the dead half's groups wait for the pruner.
        live = containers[::2]
        out["push_unchecked"] = push_load(live, base, prop, args.pushers, args.push_seconds, args.push_rate)
        out["max_unchecked"] = push_load(live, base, prop, args.pushers, args.push_seconds)
        cut = refill_live(containers, base, prop)
    finally:
        pg.stop()
    pg = pushgateway(work, port, checked=True, persistence=persistence, ready_timeout=300).start()
    prom_port = free_port()
    prom = prometheus(work, prom_port, [shard], [BASELINE / "prometheus_recording_rules.yml", BASELINE / "prometheus_alerts.yml"])
    try:
        if pricing_groups(shard) != 2 * size:
            raise RuntimeError("the checked Pushgateway did not load every group from its file")
        prom.start()
        prom_url = f"http://127.0.0.1:{prom_port}"
        out["first"] = wait_for_prometheus(prom_url, 2 * size, args.wait_timeout)
        out.update(steady(prom_url, live, base, prop, args, "checked"))
        out["max_checked"] = push_load(live, base, prop, args.pushers, args.push_seconds)
        out["get_metrics_seconds"] = {shard: get_metrics_seconds(shard)}
        out.update(prune_dead(None, containers, cut, Settings(pushgateway_url=shard, pushgateway_group_ttl_seconds=TTL)))
    finally:
        prom.stop()
        pg.stop()
    return out


def run_after(size: int, args, base: bytes, prop: bytes) -> dict:
    work = RUN_DIR / f"after-{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n_shards = args.shards or max(1, -(-size // CONTAINERS_PER_SHARD))
    ports = [free_port() for _ in range(n_shards)]
    shards = [f"http://127.0.0.1:{p}" for p in ports]
    containers = fleet(size, shards)
    out: dict = {
        "layout": "after",
        "containers": size,
        "groups": 2 * size,
        "shards": n_shards,
        "per_shard_containers": {s: sum(c.shard == s for c in containers) for s in shards},
    }
    pgs = [pushgateway(work, p, checked=False) for p in ports]
    prom_port = free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    prom = prometheus(
        work,
        prom_port,
        shards,
        [OBSERVABILITY / "prometheus_recording_rules.yml", OBSERVABILITY / "prometheus_alerts.yml"],
        tuple(args.prometheus_flag),
        args.prometheus_binary,
    )
    try:
        for pg in pgs:
            pg.start()
        prom.start()
        out["fill_seconds"] = fill(containers, base, prop)
        live = containers[::2]
        out["first"] = wait_for_prometheus(prom_url, 2 * size, args.wait_timeout)
        out.update(steady(prom_url, live, base, prop, args, "unchecked"))
        out["max_unchecked"] = push_load(live, base, prop, args.pushers, args.push_seconds)
        cut = refill_live(containers, base, prop)
        out["get_metrics_seconds"] = {s: get_metrics_seconds(s) for s in shards}
        out.update(
            prune_dead(
                prom_url,
                containers,
                cut,
                Settings(pushgateway_urls=tuple(shards), prometheus_url=prom_url, pushgateway_group_ttl_seconds=TTL),
            )
        )
    finally:
        prom.stop()
        for pg in pgs:
            pg.stop()
    return out


# ------------------------------------------------------------------------------ report


def ms(seconds: float) -> str:
    if seconds != seconds:
        return "-"
    if seconds == float("inf"):
        return "unanswered"
    return f"{seconds * 1e3:.1f}"


def row(r: dict) -> list[str]:
    pushes = []
    for key in ("checked", "unchecked"):
        p: PushResult | None = r.get("push_" + key)
        top: PushResult | None = r.get("max_" + key)
        if p is None:
            pushes.append(("-", "-", "-"))
        else:
            late = f" ({p.unfinished:,} unanswered)" if p.unfinished else ""
            pushes.append((ms(p.pct(0.5)), ms(p.pct(0.99)) + late, f"{top.rate:,.1f}"))
    get = max(r["get_metrics_seconds"].values())
    scrape = max(r["scrape_seconds"].values()) if r["scrape_seconds"] else float("nan")
    median = max(r.get("scrape_median_seconds", {}).values(), default=float("nan"))
    first = max(r["first"]["scrape_seconds"].values(), default=float("nan")) if "first" in r else float("nan")
    down = sum(1 for v in r["up"].values() if v < 1)
    return [
        f"{r['layout']} ({r['shards']} PG)",
        f"{r['groups']:,} ({r['containers']:,})",
        f"{pushes[0][0]} / {pushes[0][1]}",
        f"{pushes[1][0]} / {pushes[1][1]}",
        f"{pushes[0][2]} / {pushes[1][2]}",
        f"{get:.2f} s",
        (f"{scrape:.2f} s (median {median:.2f})" if scrape == scrape else "none ended in the window")
        + (f" ({down} failed)" if down else ""),
        f"{first:.2f} s",
        f"{r['head_series']:,.0f}",
        f"{r['rules_cycle_seconds']:.2f} s (max {r.get('rules_cycle_max_seconds', 0):.2f}, "
        f"largest group {max(r['rule_groups'].values()):.2f})"
        + (f", {r['missed_iterations']:.0f} missed" if r["missed_iterations"] else ""),
        f"{r['prune_seconds']:.2f} s ({r['pruned']:,} of {r['dead_groups']:,} dead"
        + (f"; {r['left_after_prune'] - r['live_groups']:+,} left vs live" if r["left_after_prune"] != r["live_groups"] else "")
        + ")",
    ]


HEADER = [
    "layout",
    "groups (containers)",
    "push p50 / p99 ms at the paced rate, checked",
    "same, unchecked",
    "pushes/s checked / unchecked",
    "PG GET /metrics",
    "scrape, slowest shard: max (median) over the steady window",
    "first scrape (every series new)",
    "head series",
    "rules per cycle, median (max; largest group) s",
    "prune the dead half",
]


def table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    return "\n".join(lines)


def verdict(results: list[dict]) -> list[str]:
    out = []
    for r in results:
        if r["layout"] != "after" or r["containers"] < 10_000:
            continue
        p99 = r["push_unchecked"].pct(0.99) * 1e3
        scrape = max(r["scrape_seconds"].values())
        checks = [
            ("push p99 <= 50 ms", p99 <= TARGET_PUSH_P99_MS, f"{p99:.1f} ms"),
            ("scrape of each shard <= 5 s", scrape <= TARGET_SCRAPE_S, f"{scrape:.2f} s"),
            ("rules per cycle <= 5 s", r["rules_cycle_seconds"] <= TARGET_RULES_S, f"{r['rules_cycle_seconds']:.2f} s"),
            (
                f"prune of {r['dead_groups']:,} dead groups <= 10 s, live ones kept",
                r["prune_seconds"] <= TARGET_PRUNE_S and r["pruned"] == r["dead_groups"] and r["left_after_prune"] == r["live_groups"],
                f"{r['prune_seconds']:.2f} s",
            ),
        ]
        for name, ok, value in checks:
            out.append(f"  {r['containers']:,} containers: {name}: {value} {'met' if ok else 'MISSED'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,500,2500,10000", help="containers, comma separated")
    parser.add_argument(
        "--shards", type=int, default=0, help=f"Pushgateways of the after layout (default: one per {CONTAINERS_PER_SHARD:,} containers)"
    )
    parser.add_argument("--pushers", type=int, default=64)
    parser.add_argument("--push-seconds", type=float, default=10.0, help="seconds of the closed-loop maximum")
    parser.add_argument(
        "--steady-seconds", type=float, default=60.0, help="seconds of paced pushes the latency, scrape and rule figures are taken over"
    )
    parser.add_argument("--push-rate", type=float, default=500.0, help="pushes/s offered by all pushers together for the latency figures")
    parser.add_argument("--wait-timeout", type=float, default=240.0)
    parser.add_argument("--layouts", default="before,after")
    parser.add_argument("--prometheus-binary", default="", help="another Prometheus for the after layout, to compare a version")
    parser.add_argument(
        "--prometheus-flag", action="append", default=[], help="an extra flag for the after layout's Prometheus (repeatable)"
    )
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    layouts = args.layouts.split(",")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    base, prop = push_bodies()
    print(f"push bodies: base group {len(base):,} B, property group {len(prop):,} B (protobuf, created timestamps)")
    results = []
    for size in sizes:
        for layout in layouts:
            started = time.monotonic()
            r = (run_before if layout == "before" else run_after)(size, args, base, prop)
            results.append(r)
            print(f"{layout} {size:,} containers done in {time.monotonic() - started:.0f} s: " + " | ".join(row(r)[2:]), flush=True)
            (RUN_DIR / "results.json").write_text(
                json.dumps(
                    [
                        {
                            k: (
                                v.__dict__ | {"p50": v.pct(0.5), "p99": v.pct(0.99), "rate": v.rate, "latencies": len(v.latencies)}
                                if isinstance(v, PushResult)
                                else v
                            )
                            for k, v in x.items()
                        }
                        for x in results
                    ],
                    indent=1,
                    default=str,
                )
            )
    print(
        f"\nMetrics path at scale: {args.pushers} concurrent pushers for {args.push_seconds:g} s, latency at "
        f"{args.push_rate:g} pushes/s offered (2 PUTs each), max pushes/s closed loop; after = "
        f"{args.shards or f'one per {CONTAINERS_PER_SHARD:,} containers'} unchecked shards, "
        "recorded burn-rate windows, pruning from Prometheus; 15 s scrape and evaluation\n"
    )
    print(table(results))
    print(
        f"\nnproc {os.cpu_count()}, load average at start {load_start[0]:.1f} / {load_start[1]:.1f} / {load_start[2]:.1f}, "
        f"at end {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min); one run per figure"
    )
    for r in results:
        if "late" in r:
            late = r["late"]
            print(
                f"\n{r['layout']} {r['containers']:,} containers, the steady window's last 5 minutes: slowest scrape "
                f"{max(late['scrape_seconds'].values(), default=float('nan')):.2f} s, rules per cycle median "
                f"{late['rules_cycle_seconds']:.2f} s (max {late['rules_cycle_max_seconds']:.2f}), "
                f"{late['missed_iterations']:.0f} evaluations missed"
            )
    lines = verdict(results)
    if lines:
        print("\nTargets at 10,000 containers (after):")
        print("\n".join(lines))
    return 1 if any(line.endswith("MISSED") for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
