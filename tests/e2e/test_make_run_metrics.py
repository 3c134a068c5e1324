"""``make run`` as a new user starts it: the demo's traffic counted exactly, ``make invoke``'s
too, and a handful of requests followed by quiet minutes raise no alert.

Runs ``python -m local.run`` (what ``make run`` runs once built) on free ports with its demo
seeding, the pinned Prometheus stack and the project's rules, then reads what Prometheus holds.
Nothing is invoked again to get counts out.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
import requests

from local.services import free_port
from support.local_stack import PROJECT_ROOT, built_artifacts, require_function_build
from support.promstack import require_binary

pytestmark = pytest.mark.e2e

EVENTS = PROJECT_ROOT / "events"
QUIET_SECONDS = 180
ARRIVAL_SECONDS = 30


def query(prometheus: str, expr: str) -> float | None:
    result = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


def wait_for(prometheus: str, expr: str, expected: float, seconds: float) -> float | None:
    deadline = time.monotonic() + seconds
    while True:
        seen = query(prometheus, expr)
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "PUSHGATEWAY_URL", "SENTRY_DSN", "BACKEND_API_URL")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    require_binary("prometheus")
    build_dir = built_artifacts()
    for function in ("ScoreFunction", "IngestFunction", "RetrainFunction"):
        require_function_build(build_dir, function)
    run_dir = tmp_path_factory.mktemp("make-run")
    port = free_port()
    env = clean_env(
        PORT=str(port),
        LOCAL_BUILD_DIR=str(build_dir),
        LOCAL_RUN_DIR=str(run_dir),
        LOCAL_PUSHGATEWAY_PORT=str(free_port()),
        LOCAL_PROMETHEUS_PORT=str(free_port()),
        LOCAL_CONTAINER_LOGS="0",
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "local.run"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in runner.stdout:
            lines.append(line)
            if line.startswith("Ready"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(300), "".join(lines)[-3000:]
        ready_at = time.monotonic()
        addresses = dict(re.findall(r"^\s+(API|Pushgateway|Prometheus)\s+(\S+)", "".join(lines), re.M))
        stored = sum(int(n) for n in re.findall(r"outcomes stored\s+(\d+)", "".join(lines)))
        deployed = len(re.findall(r"retrain deployed", "".join(lines)))
        yield {
            "api": addresses["API"],
            "prometheus": addresses["Prometheus"],
            "pushgateway": addresses["Pushgateway"],
            "ready_at": ready_at,
            "stored": stored,
            "deployed": deployed,
            "run_dir": run_dir,
            "build_dir": build_dir,
        }
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=60)


def test_the_demo_seedings_outcomes_and_retrains_are_all_in_prometheus_within_30_s(make_run):
    prom = make_run["prometheus"]
    assert make_run["stored"] == 9000 and make_run["deployed"] == 3
    left = ARRIVAL_SECONDS - (time.monotonic() - make_run["ready_at"])
    assert wait_for(prom, "sum(pricing_outcomes_ingested_total)", make_run["stored"], left) == make_run["stored"]
    left = ARRIVAL_SECONDS - (time.monotonic() - make_run["ready_at"])
    assert wait_for(prom, 'sum(pricing_retraining_total{status="deployed"})', 3, max(left, 0.1)) == 3
    window = "[15m]"
    ingested = f"pricing_outcomes_ingested_total{window}"
    assert query(prom, f"sum(max_over_time({ingested}) - min_over_time({ingested}))") == make_run["stored"]


def retrains_in_pushgateway(pushgateway: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{pushgateway}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "pricing_retraining"
        for sample in family.samples
        if sample.name == "pricing_retraining_total"
    )


def test_a_retrain_through_make_invoke_is_counted_while_make_run_is_up(make_run):
    prom, pushgateway = make_run["prometheus"], make_run["pushgateway"]
    before = retrains_in_pushgateway(pushgateway)
    invoked = subprocess.run(
        [sys.executable, "-m", "local.invoke", "RetrainFunction", str(EVENTS / "retrain.json")],
        cwd=PROJECT_ROOT,
        env=clean_env(LOCAL_BUILD_DIR=str(make_run["build_dir"]), LOCAL_RUN_DIR=str(make_run["run_dir"])),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert invoked.returncode == 0, invoked.stderr[-2000:]
    assert json.loads(invoked.stdout)["results"][0]["status"] in ("deployed", "rejected", "skipped")
    # In the Pushgateway when the invoke returns: the push is written before the handler returns.
    assert retrains_in_pushgateway(pushgateway) == before + 1
    # In Prometheus at its next scrape (every 15 s in make run): two intervals and a margin.
    assert wait_for(prom, "sum(pricing_retraining_total)", before + 1, 35) == before + 1
    retrains = "pricing_retraining_total[15m]"
    assert query(prom, f"sum(max_over_time({retrains}) - min_over_time({retrains}))") == before + 1


def test_four_requests_and_three_quiet_minutes_raise_no_alert(make_run):
    api, prom = make_run["api"], make_run["prometheus"]
    quote = {
        "entity": {"userId": "new-user", "propertyId": "demo-hotel-1"},
        "stay_date": "2026-12-24",
        "quote_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inventory": {"capacity": 50, "remaining": 10},
    }
    statuses = [requests.post(f"{api}/score", json=quote, timeout=60).status_code for _ in range(3)]
    statuses.append(requests.get(f"{api}/health", timeout=60).status_code)
    assert statuses == [200, 200, 200, 200]
    start = time.time()
    time.sleep(QUIET_SECONDS)
    # Any alert pending or firing at any evaluation since the stack started shows in ALERTS.
    seconds = int(time.time() - start) + int(time.monotonic() - make_run["ready_at"]) + 120
    alerts = requests.get(f"{prom}/api/v1/query", params={"query": f"max_over_time(ALERTS[{seconds}s])"}, timeout=10).json()["data"][
        "result"
    ]
    assert alerts == [], [a["metric"] for a in alerts]
    rules = requests.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert sum(len(g["rules"]) for g in rules) > 30  # the project's rules are loaded and evaluated
