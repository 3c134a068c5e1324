"""Two real Pushgateway shards behind one Prometheus (the pinned stack, loopback).

Containers configured with ``PUSHGATEWAY_URLS`` push all their groups to the shard their
instance id hashes to (``choose_pushgateway``); Prometheus scrapes both in the one job
``pushgateway``, so every sum over groups is the fleet's, exactly as with one gateway; pruning
asks Prometheus for the stale groups and deletes each on its own shard.
"""

from __future__ import annotations

import time

import pytest

from pricing.observability.metrics import PricingMetrics
from pricing.observability.push import MetricsPusher, choose_pushgateway, prune_stale_groups
from pricing.settings import Settings
from support.promstack import Prometheus, Pushgateway, SyntheticContainer

pytestmark = pytest.mark.services


def instance_on(shard: str, shards: tuple[str, ...], prefix: str) -> str:
    """An instance id that hashes to ``shard``, so that both shards surely hold containers."""
    return next(f"{prefix}-{i}" for i in range(1000) if choose_pushgateway(f"{prefix}-{i}", shards) == shard)


def test_each_container_lives_on_its_hashed_shard_and_prometheus_sums_the_fleet_over_both():
    with Pushgateway() as pg0, Pushgateway() as pg1, Prometheus([pg0, pg1]) as prom:
        shards = (pg0.url, pg1.url)
        env = {"PUSHGATEWAY_URLS": ",".join(shards)}
        processes = [SyntheticContainer(env) for _ in range(3)]
        settings = Settings(pushgateway_urls=shards, function_name="score", pushgateway_group_ttl_seconds=5)
        # In-process containers with chosen ids: one on each shard whatever the processes drew.
        pushers = [
            MetricsPusher(PricingMetrics(), settings, instance=instance_on(s, shards, "fixed"), wait_for_answers=True) for s in shards
        ]
        try:
            for n, c in enumerate(processes, start=1):
                c.invoke([f"prop-{i}" for i in range(n)])
            for pusher in pushers:
                for _ in range(4):
                    pusher.metrics.track_request(method="POST", endpoint="/score", status_code=200, duration=0.01)
                assert pusher.push().ok
            total = 1 + 2 + 3 + 4 * len(pushers)

            where = {pg.url: pg.instances() for pg in (pg0, pg1)}
            everyone = [c.instance for c in processes] + [p.instance for p in pushers]
            for instance in everyone:  # one writer per group, on exactly one shard
                home = choose_pushgateway(instance, shards)
                assert instance in where[home]
                assert all(instance not in held for url, held in where.items() if url != home)
            assert all(where.values())

            assert prom.wait_for_value("sum(pricing_requests_total)", total) == total
            assert prom.value('count(up{job="pushgateway"} == 1)') == 2

            # Every group is dead a minute from now: one Prometheus query finds them, and each is
            # deleted on its own shard.
            prune = Settings(pushgateway_urls=shards, prometheus_url=prom.url, pushgateway_group_ttl_seconds=5)
            groups = sum(len([g for g in pg.groups() if g["labels"].get("job", "").startswith("pricing-")]) for pg in (pg0, pg1))
            assert prune_stale_groups(prune) == 0  # none silent for the TTL yet
            assert prune_stale_groups(prune, now=time.time() + 60) == groups
            assert pg0.instances() == set() and pg1.instances() == set()
        finally:
            for c in processes:
                c.close()
            for p in pushers:
                p.close()
