"""The circuit breaker follows the topology: a Sentinel failover closes it at once; a
Cluster client has one circuit, which opens when the cluster is unreachable from here."""

from __future__ import annotations

import time
from typing import Any

from pyramid_redisx import get_redis
from pyramid_redisx.breaker import CLOSED, OPEN, breaker_of
from pyramid_redisx.testing import FailoverWriter, RedisClusterSet, SentinelSet

from .conftest import cluster_settings, sentinel_settings

SWITCH_LAG_BOUND = 0.5  # as in test_sentinel: our first write after Sentinel's switch


def test_a_sentinel_failover_closes_the_circuit(sentinel_set: SentinelSet, apps: Any) -> None:
    """The circuit opens while the killed master is gone; Sentinel's +switch-master closes
    it at once, long before its 30 s cooldown would let a probe through."""
    app = apps(
        sentinel_settings(sentinel_set, breaker_failures="2", breaker_cooldown="30"),
        {"/w": lambda r: r.redis.incr("n")},
    )
    breaker = breaker_of(get_redis(app.app.registry).connection_pool)
    writer = FailoverWriter(lambda: app.get("/w")).start()
    try:
        watcher = sentinel_set.watch_switch()
        sentinel_set.master().stop()  # SIGKILL
        killed = time.monotonic()
        switched = watcher.wait(15)
        recovered = writer.first_success_after(killed, 15)
    finally:
        writer.stop()
    assert switched is not None and recovered is not None, writer.failures[-3:]
    assert any("RedisCircuitOpen" in text for _, text in writer.failures)  # it did open
    assert recovered - switched <= SWITCH_LAG_BOUND
    assert breaker.state == CLOSED


def test_one_circuit_per_cluster_client(cluster_set: RedisClusterSet, apps: Any) -> None:
    """Every node stalled (SIGSTOP) for 2.5 s, under the cluster's node timeout: the
    client's commands time out, the circuit opens and they fail at once; once the nodes
    run again, the first probe after the cooldown closes it."""
    settings = cluster_settings(
        cluster_set, socket_timeout="0.3", socket_connect_timeout="0.3",
        breaker_failures="2", breaker_cooldown="0.5",
    )  # fmt: skip
    app = apps(settings, {"/w": lambda r: r.redis.incr("cluster:n")})
    client = get_redis(app.app.registry)
    breaker = breaker_of(client.connection_pool)
    assert breaker is not breaker_of(None) and breaker.state == CLOSED
    assert app.get("/w").status_int == 200
    writer = FailoverWriter(lambda: app.get("/w")).start()
    try:
        for node in cluster_set.nodes:
            node.pause()
        stalled = time.monotonic()
        try:
            deadline = stalled + 2.5
            while breaker.state != OPEN and time.monotonic() < deadline:
                time.sleep(0.01)
            opened = time.monotonic()
            assert breaker.state == OPEN, writer.failures[-3:]
            time.sleep(max(0.0, deadline - time.monotonic()))
        finally:
            for node in cluster_set.nodes:
                node.resume()
        resumed = time.monotonic()
        recovered = writer.first_success_after(resumed, 10)
    finally:
        writer.stop()
    fast = [text for moment, text in writer.failures if moment > opened + 0.05]
    assert fast and all("RedisCircuitOpen" in text for text in fast[:-1]), fast[-3:]
    assert recovered is not None and recovered - resumed <= 0.5 + 0.1 + 0.4, writer.failures[-3:]
    assert breaker.state == CLOSED
