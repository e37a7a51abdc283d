"""``get_async_redis`` of Cluster and Sentinel clients, against redis-py as the oracle and
through the client's circuit: what the asyncio subclasses pass on (keyword arguments,
options, redirections), the half-open probe owned by one task, the write rule of an
asyncio Sentinel client with ``retry_writes``, the Sentinels asked without retries."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import RedisClusterException

from pyramid_redisx import CommandMayHaveBeenApplied, RedisCircuitOpen, get_redis
from pyramid_redisx.breaker import CLOSED, OPEN, breaker_of
from pyramid_redisx.testing import RedisClusterSet, SentinelSet

from ..test_breaker import DeadBehindProxy
from .conftest import cluster_settings, sentinel_settings
from .test_cluster import _node_with_key
from .test_cluster_write_safety import KillThenPush, _run_async

SCORES = "{a}scores"
KEY = "{a}key"


def test_async_cluster_commands_pass_keywords_and_options_as_redis_py(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """Keyword arguments (``target_nodes``), a reply's parsing options (``withscores``)
    and a reply read undecoded (DUMP with ``decode_responses``): word for word as
    redis-py's own asyncio Cluster client."""
    app = apps(cluster_settings(cluster_set, decode_responses="true"))
    node = _node_with_key(cluster_set, SCORES)

    async def steps(client: Any) -> list[Any]:
        await client.delete(SCORES, KEY)
        await client.zadd(SCORES, {"a": 1.5, "b": 2})
        await client.set(KEY, "value")
        target = client.get_node(host="127.0.0.1", port=node.port)
        return [
            await client.zrange(SCORES, 0, -1, withscores=True),
            await client.execute_command("DBSIZE", target_nodes=target),
            await client.dump(KEY),
        ]

    ours: list[Any] = []

    async def use(client: Any) -> None:
        ours.append(await steps(client))

    _run_async(app, use)

    async def bare() -> list[Any]:
        client = redis.asyncio.RedisCluster.from_url(
            cluster_set.url, password=cluster_set.password, decode_responses=True
        )
        try:
            return await steps(client)
        finally:
            await client.aclose()

    theirs = asyncio.run(bare())
    assert ours[0] == theirs
    assert ours[0][0] == [["a", 1.5], ["b", 2.0]] or ours[0][0] == [("a", 1.5), ("b", 2.0)]
    assert isinstance(ours[0][2], bytes)  # never decoded


def test_async_cluster_pipeline_refuses_a_shard_hint_as_redis_py(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    app = apps(cluster_settings(cluster_set))
    errors: list[Any] = []

    async def use(client: Any) -> None:
        with pytest.raises(RedisClusterException) as raised:
            client.pipeline(shard_hint="mine")
        errors.append((type(raised.value), str(raised.value)))

    _run_async(app, use)

    async def bare() -> None:
        client = redis.asyncio.RedisCluster.from_url(cluster_set.url)
        try:
            with pytest.raises(RedisClusterException) as raised:
                client.pipeline(shard_hint="mine")
            errors.append((type(raised.value), str(raised.value)))
        finally:
            await client.aclose()

    asyncio.run(bare())
    assert errors[0] == errors[1]


def test_async_cluster_pipeline_follows_a_moved_slot_unless_told_not_to(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The client's slot map names the wrong master for the key: the node answers MOVED.
    A pipeline follows it by default and raises it with ``allow_redirections=False``,
    as redis-py's own asyncio Cluster client does."""
    app = apps(cluster_settings(cluster_set))
    right = _node_with_key(cluster_set, KEY)

    def misdirect(client: Any) -> None:
        slot = client.keyslot(KEY)
        wrong = next(n for n in client.get_primaries() if n.port != right.port)
        client.nodes_manager.slots_cache[slot] = [wrong]

    async def steps(client: Any) -> list[Any]:
        found: list[Any] = []
        await client.set(KEY, "1")
        for allow in (True, False):
            misdirect(client)
            pipe = client.pipeline(transaction=False)
            pipe.get(KEY)
            try:
                found.append(await pipe.execute(allow_redirections=allow))
            except redis.RedisError as error:
                found.append(type(error).__name__)
        return found

    ours: list[Any] = []

    async def use(client: Any) -> None:
        ours.append(await steps(client))

    _run_async(app, use)

    async def bare() -> list[Any]:
        client = redis.asyncio.RedisCluster.from_url(cluster_set.url)
        try:
            return await steps(client)
        finally:
            await client.aclose()

    assert ours[0] == asyncio.run(bare())
    assert ours[0][0] == [b"1"]


def test_async_cluster_half_open_probe_is_one_task_and_its_failure_reopens(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The circuit opened (as other requests' failures open it). After the cooldown, of
    20 gathered tasks one probes and 19 fail at once. A probe that times out (the key's
    master stopped) opens the circuit again; the next one, the node back, closes it."""
    app = apps(cluster_settings(cluster_set, breaker_failures="2", breaker_cooldown="0.3",
                                socket_timeout="0.5", retries="0"))  # fmt: skip
    circuit = breaker_of(get_redis(app.app.registry).connection_pool)
    node = _node_with_key(cluster_set, KEY)
    seen: list[Any] = []

    def open_circuit() -> None:
        for _ in range(2):
            circuit.failed(redis.ConnectionError("Error 111 connecting. Connection refused."))
        assert circuit.state == OPEN

    async def use(client: Any) -> None:
        await client.set(KEY, "0")  # connected: the node connections exist
        open_circuit()
        await asyncio.sleep(0.35)
        results = await asyncio.gather(
            *(client.get(KEY) for _ in range(20)), return_exceptions=True
        )
        seen.append(sorted(type(r).__name__ for r in results))
        seen.append(circuit.state)
        open_circuit()
        await asyncio.sleep(0.35)
        node.pause()
        try:
            with pytest.raises(redis.RedisError) as raised:
                await client.get(KEY)  # the probe: timed out
            seen.append(isinstance(raised.value, RedisCircuitOpen))
            seen.append(circuit.state)
        finally:
            node.resume()
        await asyncio.sleep(0.35)
        seen.append(await client.get(KEY))  # the next probe, answered
        seen.append(circuit.state)

    _run_async(app, use)
    assert seen[0] == ["RedisCircuitOpen"] * 19 + ["bytes"]
    assert seen[1:] == [CLOSED, False, OPEN, b"0", CLOSED]


def test_async_sentinel_client_sends_a_write_again_with_retry_writes(
    sentinel_set: SentinelSet, apps: Any
) -> None:
    """``retry_writes = true`` on an asyncio Sentinel client: a BLPOP whose connection
    dies after it was sent is sent again and takes the value pushed after (the sync
    client's rule; without the setting, ``CommandMayHaveBeenApplied``)."""
    app = apps(sentinel_settings(sentinel_set, retry_writes="true", socket_timeout="5",
                                 client_name="aio-retry-writes"))  # fmt: skip
    master = sentinel_set.master()
    popped: list[Any] = []

    async def use(client: Any) -> None:
        await client.delete("jobs")
        killer = KillThenPush(master, "blpop", ("LPUSH", "jobs", "job-1"))
        popped.append(await client.blpop("jobs", 3))
        killer.join()
        assert killer.sent_again

    _run_async(app, use)
    assert popped == [(b"jobs", b"job-1")] or popped == [[b"jobs", b"job-1"]]


def test_async_sentinel_client_of_a_non_blocking_pool(sentinel_set: SentinelSet, apps: Any) -> None:
    app = apps(sentinel_settings(sentinel_set, blocking="false"))
    answers: list[Any] = []

    async def use(client: Any) -> None:
        await client.set("nb", "1")
        answers.append(await client.get("nb"))

    _run_async(app, use)
    assert answers == [b"1"]


def test_async_sentinel_client_asks_each_sentinel_once(
    sentinel_set: SentinelSet, apps: Any
) -> None:
    """The first Sentinel listed is dead (it accepts and closes): the asyncio client asks
    it once, with no retry, then the next one, which names the master."""
    dead = DeadBehindProxy()  # accepts, then closes: a dead Sentinel behind a balancer
    try:
        settings = sentinel_settings(sentinel_set)
        settings["redis.sentinels"] = f"127.0.0.1:{dead.port} {settings['redis.sentinels']}"
        app = apps(settings)
        answers: list[Any] = []

        async def use(client: Any) -> None:
            await client.set("asked", "1")
            answers.append(await client.get("asked"))

        accepted_before = dead.accepted
        started = time.monotonic()
        _run_async(app, use)
        assert answers == [b"1"]
        assert dead.accepted - accepted_before == 1, dead.accepted
        assert time.monotonic() - started < 5
    finally:
        dead.close()


def test_async_cluster_health_check_that_fails_sent_nothing(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The node closed the client's idle connection; the next INCR's health check (a
    PING, due after ``health_check_interval``) reads nothing back. The INCR was not sent:
    it goes again on a new connection and runs once, never "may have been applied"."""
    app = apps(cluster_settings(cluster_set, health_check_interval="0.2",
                                client_name="aio-health", retries="1"))  # fmt: skip
    node = _node_with_key(cluster_set, KEY)
    answers: list[Any] = []

    async def use(client: Any) -> None:
        await client.delete(KEY)
        answers.append(await client.incr(KEY))
        with node.client(decode_responses=True) as admin:
            ids = [c["id"] for c in admin.client_list() if c["name"] == "aio-health"]
            assert ids
            for found in ids:
                admin.client_kill_filter(_id=found)
        await asyncio.sleep(0.3)
        answers.append(await client.incr(KEY))

    _run_async(app, use)
    assert answers == [1, 2]
    with node.client() as admin:
        assert admin.get(KEY) == b"2"


def test_async_cluster_write_whose_send_failed_part_way(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """A SET of 32 MB to a node whose ``proto-max-bulk-len`` is 1 MB: the node refuses the
    length and closes the connection while the client is still sending. A command cut
    short is never run: it is tried again (and fails again), never "may have been
    applied". The same cut inside MULTI/EXEC: what was sent of the transaction may have
    run as far as anyone can tell, so ``CommandMayHaveBeenApplied``."""
    app = apps(cluster_settings(cluster_set, socket_timeout="5", retries="1"))
    node = _node_with_key(cluster_set, KEY)
    big = b"x" * (32 << 20)
    raised: list[BaseException] = []

    async def use(client: Any) -> None:
        # the transaction first, on a client that has its slot map: redis-py 8.1 queues a
        # transaction's command on a client that must map the slots again by running that
        # in another event loop ("attached to a different loop")
        await client.delete(KEY + "n")
        tx = client.pipeline(transaction=True)
        tx.incr(KEY + "n")
        tx.set(KEY, big)
        with pytest.raises(redis.RedisError) as in_transaction:
            await tx.execute()
        with pytest.raises(redis.RedisError) as alone:
            await client.set(KEY, big)
        raised.extend([alone.value, in_transaction.value])

    with node.client() as admin:
        admin.config_set("proto-max-bulk-len", "1mb")
    try:
        _run_async(app, use)
    finally:
        with node.client() as admin:
            admin.config_set("proto-max-bulk-len", "512mb")
    assert isinstance(raised[0], redis.ConnectionError), raised
    assert not isinstance(raised[0], CommandMayHaveBeenApplied), raised
    assert isinstance(raised[1], CommandMayHaveBeenApplied), raised
    assert "MULTI/EXEC" in str(raised[1]), raised


def test_async_cluster_read_pipeline_to_a_dead_master_is_tried_retries_times(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The key's master is killed: nothing of a read pipeline goes out, so it is tried
    again ``retries`` times, a quarter second apart (redis-py's pause), then raises:
    with ``retries = 3`` that is three pauses, 0.75 s and some, not two or fifteen."""
    app = apps(cluster_settings(cluster_set, retries="3", breaker_failures="0"))
    node = _node_with_key(cluster_set, KEY)
    took: list[float] = []

    async def use(client: Any) -> None:
        await client.set(KEY, "1")
        node.stop()
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            await client.pipeline(transaction=False).get(KEY).execute()
        took.append(time.monotonic() - started)

    _run_async(app, use)
    assert 0.7 <= took[0] < 2.5, took


def test_async_cluster_honours_retry_writes_retry_on_timeout_and_a_non_blocking_pool(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The asyncio Cluster client takes the sync one's write rule settings: with
    ``retry_writes`` a BLPOP whose connection dies after it was sent is sent again and
    takes the value pushed after; with ``retry_on_timeout`` a timed-out BLPOP is tried
    four times (1.6 s and more), not once; ``blocking = false`` builds too."""
    jobs = "{a}jobs"
    node = _node_with_key(cluster_set, jobs)
    popped: list[Any] = []
    took: list[float] = []

    async def pop_after_a_kill(client: Any) -> None:
        await client.delete(jobs)
        killer = KillThenPush(node, "blpop", ("LPUSH", jobs, "job-1"))
        popped.append(await client.blpop(jobs, 3))
        killer.join()
        assert killer.sent_again

    async def pop_until_timeout(client: Any) -> None:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await client.blpop(jobs, 0)
        took.append(time.monotonic() - started)

    _run_async(apps(cluster_settings(cluster_set, retry_writes="true", socket_timeout="5")),
               pop_after_a_kill)  # fmt: skip
    assert popped == [[b"{a}jobs", b"job-1"]] or popped == [(b"{a}jobs", b"job-1")]
    _run_async(apps(cluster_settings(cluster_set, socket_timeout="0.4", retry_on_timeout="true",
                                     blocking="false")), pop_until_timeout)  # fmt: skip
    assert 1.55 <= took[0] <= 10.0, took
