"""The circuit breaker follows the topology: a Sentinel failover closes it at once; a
Cluster client has one circuit, which opens when the cluster is unreachable from here."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from pyramid_redisx import RedisCircuitOpen, get_async_redis, get_redis
from pyramid_redisx.aio import close_async_redis
from pyramid_redisx.breaker import CLOSED, OPEN, TIMEOUTS, breaker_of
from pyramid_redisx.testing import FailoverWriter, RedisClusterSet, SentinelSet

from .conftest import SWITCH_LAG_BOUND, cluster_settings, sentinel_settings


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
    """Every node stalled (SIGSTOP), under the cluster's node timeout: the client's
    commands time out, the circuit opens and the other calls fail at once (a probe per
    cooldown tries the cluster); once the nodes run again, a probe closes it.

    One failure takes longer on redis-py 8.1 than on 8.2: a topology refresh that reaches
    no node tries every node in turn and raises ``RedisClusterException`` from the last
    node's timeout (8.2 raises ``RedisClusterUnreachableError``). The bounds follow from
    that worst case, so the test holds on both."""
    timeout, cooldown, failures = 0.3, 0.5, 2
    settings = cluster_settings(
        cluster_set, socket_timeout=str(timeout), socket_connect_timeout=str(timeout),
        breaker_failures=str(failures), breaker_cooldown=str(cooldown),
    )  # fmt: skip
    app = apps(settings, {"/w": lambda r: r.redis.incr("cluster:n")})
    client = get_redis(app.app.registry)
    breaker = breaker_of(client.connection_pool)
    assert breaker is not breaker_of(None) and breaker.state == CLOSED
    assert app.get("/w").status_int == 200
    one_failure = (len(cluster_set.nodes) + 1) * timeout  # every node, in turn, at worst
    writer = FailoverWriter(lambda: app.get("/w")).start()
    try:
        for node in cluster_set.nodes:
            node.pause()
        stalled = time.monotonic()
        try:
            deadline = stalled + failures * one_failure + 1.0
            while breaker.state != OPEN and time.monotonic() < deadline:
                time.sleep(0.01)
            opened = time.monotonic()
            assert breaker.state == OPEN, writer.failures[-3:]
            time.sleep(2 * cooldown)  # open through two cooldowns
        finally:
            for node in cluster_set.nodes:
                node.resume()
        resumed = time.monotonic()
        recovered = writer.first_success_after(resumed, 10)
    finally:
        writer.stop()
    during = [text for moment, text in writer.failures if opened + 0.05 < moment < resumed]
    probes = [text for text in during if "RedisCircuitOpen" not in text]
    assert during and len(probes) <= 3, during[-5:]  # at most one probe per cooldown
    # The first success: the first probe after the cooldown, unless one still in flight
    # when the nodes resumed times out first.
    assert recovered is not None and recovered - resumed <= cooldown + one_failure + 0.4, (
        writer.failures[-3:]
    )
    assert breaker.state == CLOSED


# ------------------------------------------------------------------ asyncio clients
FAILURES: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, *TIMEOUTS)


def _async_until_open(registry: Any, command: Any, deadline: float) -> list[str]:
    """Run ``command(client)`` in a loop on the async client until it raises
    RedisCircuitOpen (or ``deadline`` passes): the outcomes, by exception name."""

    async def main() -> list[str]:
        client = get_async_redis(registry)
        seen: list[str] = []
        try:
            while time.monotonic() < deadline:
                try:
                    await command(client)
                    seen.append("ok")
                # 8.2: RedisClusterUnreachableError; 8.1: RedisClusterException ("Redis
                # Cluster cannot be connected"), neither a RedisError
                except FAILURES as error:
                    seen.append(type(error).__name__)
                    if isinstance(error, RedisCircuitOpen):
                        break
        finally:
            await close_async_redis(registry)
        return seen

    return asyncio.run(main())


def test_the_async_sentinel_client_opens_the_sync_clients_circuit(
    sentinel_set: SentinelSet, apps: Any
) -> None:
    """The master killed: the async client's writes fail (refused) until the circuit of
    the client's name opens; then they fail at once with RedisCircuitOpen."""
    app = apps(sentinel_settings(sentinel_set, breaker_failures="2", breaker_cooldown="30"))
    breaker = breaker_of(get_redis(app.app.registry).connection_pool)
    sentinel_set.master().stop()  # SIGKILL
    seen = _async_until_open(app.app.registry, lambda c: c.incr("n"), time.monotonic() + 5)
    assert seen[-1] == "RedisCircuitOpen", seen
    assert breaker.opened == 1 and breaker.state == OPEN


def test_the_async_cluster_client_opens_the_sync_clients_circuit(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """Every node stalled: the async Cluster client's commands time out until the
    circuit opens, then fail at once; once the nodes run again, a probe closes it."""
    timeout, cooldown = 0.3, 0.5
    settings = cluster_settings(
        cluster_set, socket_timeout=str(timeout), socket_connect_timeout=str(timeout),
        breaker_failures="2", breaker_cooldown=str(cooldown),
    )  # fmt: skip
    app = apps(settings)
    registry = app.app.registry
    breaker = breaker_of(get_redis(registry).connection_pool)
    assert _async_until_open(registry, lambda c: c.set("k", "v"), time.monotonic() + 5)[0] == "ok"
    for node in cluster_set.nodes:
        node.pause()
    try:
        deadline = time.monotonic() + 2 * (len(cluster_set.nodes) + 1) * timeout + 2
        seen = _async_until_open(registry, lambda c: c.get("k"), deadline)
        assert seen[-1] == "RedisCircuitOpen" and breaker.state == OPEN, seen
    finally:
        for node in cluster_set.nodes:
            node.resume()
    time.sleep(cooldown + 0.05)
    seen = _async_until_open(registry, lambda c: c.get("k"), time.monotonic() + 0.5)
    assert seen[0] == "ok" and breaker.state == CLOSED, seen
