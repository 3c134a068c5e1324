"""Per-invocation pushes against the real Pushgateway and Prometheus (the pinned stack, loopback).

Each "container" is a separate Python process with its own registry that pushes at the end of
every invocation, as a warm Lambda execution environment does (see ``support.promstack``). Its
pushes are written, not waited for (the next push reads the answers), so what the Pushgateway
holds is read once it has applied the last pushes (``applied``). No test invokes a container
again to get its counts out: a burst followed by silence is what Lambda traffic looks like.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pricing.observability.push import prune_stale_groups
from pricing.settings import Settings
from support.promstack import Prometheus, Pushgateway, SilentServer, SyntheticContainer, free_port

pytestmark = pytest.mark.services


def containers(n: int, env: dict) -> list[SyntheticContainer]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: SyntheticContainer(env), range(n)))


def invoke_all(fleet: list[SyntheticContainer], per_container: int, pause: float = 0.0) -> int:
    """Invoke every container ``per_container`` times, all containers at once; returns the count."""

    def run(c: SyntheticContainer) -> int:
        c.invoke([f"prop-{i % 7}" for i in range(per_container)], pause=pause)
        return per_container

    with ThreadPoolExecutor(len(fleet)) as pool:
        return sum(pool.map(run, fleet))


def applied(read, expected: float, timeout: float = 10.0) -> float:
    """``read()`` once it equals ``expected`` (or its last value after ``timeout`` seconds): an
    invocation returns as soon as its push is written, the Pushgateway applies it a moment later."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def push_outcomes(container: SyntheticContainer) -> dict[str, int]:
    """Every push of the container, by what became of it: failure reasons, or still awaiting its
    answers (the last ones, read by a next invocation or the shutdown flush)."""
    stats = container.stats()
    outcomes = {reason: int(n) for reason, n in stats["push_failures"].items()}
    outcomes["awaiting"] = int(stats["last_push"]["in_flight"])
    outcomes["unwritten"] = int(stats["last_push"]["unwritten"])
    return outcomes


def close_all(fleet: list[SyntheticContainer]) -> None:
    with ThreadPoolExecutor(max(len(fleet), 1)) as pool:
        list(pool.map(lambda c: c.close(), fleet))


def test_totals_are_exact_across_concurrent_containers_in_the_pushgateway_and_prometheus():
    with Pushgateway() as pgw, Prometheus(pgw, scrape_interval="1s") as prom:
        fleet = containers(8, {"PUSHGATEWAY_URL": pgw.url})
        try:
            n = invoke_all(fleet, 15) + invoke_all(fleet[:5], 7)
            assert n == 155
            # Then silence: each container's last push already carries its totals.
            assert applied(lambda: pgw.sum("pricing_requests_total", endpoint="/score", status_code="200"), n) == n
            assert pgw.sum("pricing_api_latency_seconds_count", endpoint="/score") == n
            assert pgw.sum("pricing_score_latency_seconds_count") == n
            assert len(pgw.instances()) == 8
            prom.wait_for_value('sum(pricing_requests_total{job="pricing-score"})', n)
            prom.wait_for_value("sum(pricing_api_latency_seconds_count)", n)
            prom.wait_for_value('sum by (le) (pricing_api_latency_seconds_bucket{le="+Inf"})', n)
            # Created timestamps: every series starts from a stored zero, first pushes included.
            prom.wait_for_value(
                'sum(max_over_time(pricing_requests_total{job="pricing-score"}[5m])'
                ' - min_over_time(pricing_requests_total{job="pricing-score"}[5m]))',
                n,
            )
            # honor_labels: the containers' own job/instance survive the scrape.
            assert prom.value('count(count by (instance) (pricing_requests_total{job="pricing-score"}))') == 8
        finally:
            close_all(fleet)


def test_increase_stays_within_one_percent_as_containers_are_retired_and_started():
    env: dict = {}
    with Pushgateway() as pgw, Prometheus(pgw, scrape_interval="1s") as prom:
        env["PUSHGATEWAY_URL"] = pgw.url
        started = time.time()
        time.sleep(2)  # the window starts before any container exists
        live = containers(6, env)
        retired: list[SyntheticContainer] = []
        true_count = 0
        try:
            for wave in range(3):
                true_count += invoke_all(live, 30, pause=0.1)  # ~3 s of steady traffic
                if wave < 2:  # half the fleet goes away, fresh containers replace it
                    close_all(live[:3])
                    retired += live[:3]
                    live = live[3:] + containers(3, env)
            time.sleep(3)  # a few more scrapes of the final values
            # Evaluated at the last scrape: increase() extrapolates a window's ragged ends, and
            # "the run" ends with the last sample Prometheus has.
            last_scrape = prom.value('timestamp(up{job="pushgateway"})')
            window = int(last_scrape - started) + 1
            assert applied(lambda: pgw.sum("pricing_requests_total"), true_count) == true_count
            measured = prom.value(f"sum(increase(pricing_requests_total[{window}s]))", at=last_scrape)
            assert measured is not None
            assert abs(measured - true_count) <= 0.01 * true_count, (measured, true_count)
        finally:
            close_all(live)


def test_gauges_of_dead_containers_disappear_within_the_ttl_while_live_ones_stay():
    ttl = 5
    with Pushgateway() as pgw, Prometheus(pgw) as prom:
        settings = Settings(pushgateway_url=pgw.url, pushgateway_group_ttl_seconds=ttl)
        fleet = containers(3, {"PUSHGATEWAY_URL": pgw.url})
        live, dead = fleet[0], fleet[1:]
        try:
            invoke_all(fleet, 2)
            close_all(dead)
            prom.wait_for_value("count(pricing_models_loaded)", 3)
            assert prune_stale_groups(settings) == 0  # not yet silent for the TTL
            deadline = time.monotonic() + ttl + 1.5
            while time.monotonic() < deadline:  # the live container keeps being invoked
                live.invoke(["prop-1"])
                time.sleep(0.5)
            pruned = prune_stale_groups(settings)
            assert pruned >= 2  # each dead container's base group and its property groups
            assert pgw.instances() == {live.instance}
            prom.wait_for_value("count(pricing_models_loaded)", 1, timeout=10)
            assert prom.value("count(pricing_uptime_seconds)") == 1
        finally:
            close_all(fleet)


def test_a_stopped_pushgateway_costs_invocations_only_the_metrics_until_it_is_back():
    port = free_port()
    timeout = 0.2
    env = {"PUSHGATEWAY_URL": f"http://127.0.0.1:{port}", "PUSHGATEWAY_TIMEOUT_SECONDS": str(timeout)}
    with SyntheticContainer(env) as container:
        elapsed = container.invoke([f"prop-{i}" for i in range(10)])
        assert max(elapsed) < timeout + 1.0  # bounded (loose: the machine is shared)
        assert container.stats()["push_failures"]["connection"] == 10
        # Each failure is logged with the invocation's request id.
        assert any("req-prop-3-3" in line and "Pushgateway" in line for line in container.log)
        with Pushgateway(port=port) as pgw:  # the gateway comes back on the same address
            container.invoke(["prop-1"])
            # Cumulative pushes: the invocations made during the outage are not lost.
            assert applied(lambda: pgw.sum("pricing_requests_total"), 11) == 11
            assert pgw.sum("pricing_metrics_push_failures_total", reason="connection") == 10


def test_a_hung_pushgateway_slows_each_invocation_by_at_most_the_timeout():
    timeout = 0.2
    with SilentServer() as hung:
        env = {"PUSHGATEWAY_URL": hung.url, "PUSHGATEWAY_TIMEOUT_SECONDS": str(timeout)}
        with SyntheticContainer(env) as container:
            # Invocations further apart than the timeout: each push finds its predecessor's
            # answers overdue, which is how a hung Pushgateway shows.
            elapsed = container.invoke([f"prop-{i}" for i in range(6)], pause=timeout + 0.05)
            assert len(elapsed) == 6  # every invocation returned
            assert max(elapsed) < timeout + 1.0  # bounded (loose: the machine is shared)
            outcomes = push_outcomes(container)
            assert outcomes["timeout"] >= 1
            # After a timeout the container backs off instead of trying every time; every push
            # is a timeout, skipped for the back-off, or the last one, still awaiting answers.
            assert outcomes["timeout"] + outcomes["backoff"] + outcomes["awaiting"] == 6
            # Nothing waits for the answers that never come.
            assert sum(elapsed) < 6 * timeout


def test_a_basic_auth_pushgateway_accepts_the_configured_credentials_only():
    with Pushgateway(basic_auth={"pusher": "s3cret"}) as pgw:
        good = {"PUSHGATEWAY_URL": pgw.url, "PUSHGATEWAY_USERNAME": "pusher", "PUSHGATEWAY_PASSWORD": "s3cret"}
        bad = dict(good, PUSHGATEWAY_PASSWORD="wrong")
        with SyntheticContainer(good) as ok, SyntheticContainer(bad) as refused:
            # A pause between invocations: each push finds its predecessor's answers in.
            ok.invoke(["prop-1", "prop-2", "prop-3"], pause=0.2)
            refused.invoke(["prop-1", "prop-2"], pause=0.2)
            assert applied(lambda: pgw.sum("pricing_requests_total"), 3) == 3
            assert pgw.instances() == {ok.instance}
            # The refusal of a push is counted when the next invocation reads it, and logged
            # with the request id of the invocation that sent the push.
            outcomes = push_outcomes(refused)
            assert outcomes["http_4xx"] == 1 and outcomes["awaiting"] == 1
            assert any("req-prop-1-0" in line and "HTTP 401" in line for line in refused.log)
            refused.invoke(["prop-3"], pause=0.2)
            assert push_outcomes(refused)["http_4xx"] == 2
        settings = Settings(
            pushgateway_url=pgw.url, pushgateway_username="pusher", pushgateway_password="s3cret", pushgateway_group_ttl_seconds=5
        )
        assert prune_stale_groups(settings, now=time.time() + 60) == 4  # base + 3 property groups
        assert pgw.instances() == set()


def test_a_restarted_pushgateway_gets_the_full_totals_back_over_a_fresh_connection():
    env: dict = {}
    with Pushgateway() as pgw:
        env["PUSHGATEWAY_URL"] = pgw.url
        with SyntheticContainer(env) as container:
            container.invoke(["prop-1", "prop-2"], pause=0.2)
            pgw.restart()  # its memory is gone, and so is the container's kept-alive connection
            container.invoke(["prop-3"])
            # The dead connection is noticed before the push and replaced, which is not a failure...
            assert sum(container.stats()["push_failures"].values()) == 0
            # ...and cumulative values restore everything the restart dropped.
            assert applied(lambda: pgw.sum("pricing_requests_total"), 3) == 3
