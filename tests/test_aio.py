"""get_async_redis: redis.asyncio clients from the parsed options, against real servers."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from pyramid_redisx.aio import (
    async_pool_kwargs,
    build_async_client,
    close_async_redis,
    get_async_redis,
)
from pyramid_redisx.request import client_set, get_redis
from pyramid_redisx.settings import parse_client
from pyramid_redisx.testing import server_binary


def test_one_client_per_loop_closed_cleanly(make_app: Any, redis_client_list: Any) -> None:
    registry = make_app(client_name="asyncapp").app.registry

    async def use() -> Any:
        client = get_async_redis(registry)
        assert get_async_redis(registry) is client  # one per loop
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        assert {c["name"] for c in redis_client_list()} >= {"asyncapp"}
        await close_async_redis(registry)
        return client

    first = asyncio.run(use())
    second = asyncio.run(use())
    assert first is not second  # a new loop, a new client
    assert [c for c in redis_client_list() if c["name"] == "asyncapp"] == []  # all closed


def test_options_carried_over(redis_server_factory: Any, make_app: Any) -> None:
    server = redis_server_factory("pw-async-99")
    url = f"redis://:pw-async-99@127.0.0.1:{server.port}/4"
    # socket_timeout 1: the BLPOP below (0.4 s) must answer within it on a loaded machine
    registry = make_app(url=url, decode_responses="true", socket_timeout="1",
                        max_connections="1", pool_timeout="0.2").app.registry  # fmt: skip

    async def use() -> None:
        client = get_async_redis(registry)
        pool = client.connection_pool
        assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
        assert pool.max_connections == 1
        await client.set("k", "v")
        assert await client.get("k") == "v"  # decode_responses
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await client.execute_command("DEBUG", "SLEEP", "2")
        assert time.monotonic() - started < 1.7  # socket_timeout 1, not the 2 s sleep
        await asyncio.sleep(1.1)  # the server finishes its sleep
        blocker = asyncio.create_task(client.blpop(["nothing"], timeout=0.4))
        await asyncio.sleep(0.05)
        with pytest.raises(redis.ConnectionError):  # the one connection is busy
            await client.get("k")
        await blocker
        await close_async_redis(registry)

    asyncio.run(use())
    with server.client(db=4) as check:
        assert check.get("k") == b"v"  # db 4 of the password-protected server


def test_tls_and_unix_arguments() -> None:
    options = parse_client(
        "default", {"redis.url": "rediss://h:6380/1", "redis.ssl_cert_reqs": "none"}
    )
    kwargs = async_pool_kwargs(options)
    assert kwargs["connection_class"] is redis.asyncio.SSLConnection
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["ssl_cert_reqs"]) == (
        "h",
        6380,
        1,
        "none",
    )
    unix = async_pool_kwargs(parse_client("default", {"redis.url": "unix:///tmp/r.sock"}))
    assert unix["connection_class"] is redis.asyncio.UnixDomainSocketConnection
    assert "socket_keepalive" not in unix and unix["path"] == "/tmp/r.sock"


def test_outside_a_loop_and_unknown_client(make_app: Any) -> None:
    registry = make_app().app.registry
    with pytest.raises(RuntimeError) as raised:
        get_async_redis(registry)
    assert str(raised.value) == (
        "get_async_redis must be called inside a running event loop: "
        "its client belongs to that loop"
    )

    async def unknown() -> None:
        get_async_redis(registry, "nope")

    with pytest.raises(LookupError, match="no Redis client named 'nope'"):
        asyncio.run(unknown())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_builds_its_own_client(make_app: Any) -> None:
    registry = make_app().app.registry
    loop = asyncio.new_event_loop()
    try:
        parent = loop.run_until_complete(_ping(registry))
        pid = os.fork()
        if pid == 0:  # the child: same loop object, same registry
            code = 1
            try:
                child = loop.run_until_complete(_ping(registry))
                code = 0 if child is not parent else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert loop.run_until_complete(_ping(registry)) is parent  # parent's still works
        loop.run_until_complete(close_async_redis_in(registry))
    finally:
        loop.close()
    client_set(registry).close()


async def _ping(registry: Any) -> Any:
    client = get_async_redis(registry)
    assert await client.ping()
    return client


async def close_async_redis_in(registry: Any) -> None:
    await close_async_redis(registry)


def test_sentinel_master_through_the_sentinels(
    redis_server_factory: Any, sentinel_for: Any, redis_client_list: Any
) -> None:
    master = redis_server_factory("pw-sentinel-master")
    sentinel_port = sentinel_for(master.port)
    options = parse_client(
        "default",
        {
            # host and port here are not used: the Sentinels name the master
            "redis.url": "redis://:pw-sentinel-master@nowhere.invalid:1/5",
            "redis.sentinels": f"127.0.0.1:{sentinel_port}",
            "redis.sentinel_service": "mymaster",
            "redis.client_name": "async-sentinel",
        },
    )

    async def use() -> None:
        client = build_async_client(options)
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        await client.aclose()
        for sentinel in client.pyramid_redisx_sentinels:
            await sentinel.aclose()

    asyncio.run(use())
    with master.client(db=5) as check:
        assert check.get("k") == b"v"
        names = [c["name"] for c in check.client_list("normal")]
    assert "async-sentinel" not in names  # closed


def cli_binary() -> str:
    """redis-cli or valkey-cli: on PATH, or beside the server binary."""
    for name in ("redis-cli", "valkey-cli"):
        found = shutil.which(name) or str(Path(server_binary()).with_name(name))
        if Path(found).exists():
            return found
    pytest.fail("no redis-cli or valkey-cli to create a cluster with")


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(100):
        port = random.randrange(20000, 30000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    pytest.fail("no free port pair for a cluster node")


def test_cluster_client_from_any_node(redis_server_factory: Any) -> None:
    nodes = [
        redis_server_factory(
            None, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
            port=cluster_port(),
        )
        for _ in range(3)
    ]  # fmt: skip
    addresses = [f"127.0.0.1:{node.port}" for node in nodes]
    subprocess.run(
        [cli_binary(), "--cluster", "create", *addresses, "--cluster-yes"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not all(
        n.client().execute_command("CLUSTER INFO")["cluster_state"] == "ok" for n in nodes
    ):
        assert time.monotonic() < deadline, "the cluster did not come up"
        time.sleep(0.1)
    options = parse_client(
        "default",
        {"redis.url": f"redis://{addresses[1]}/0", "redis.cluster": "true",
         "redis.client_name": "async-cluster", "redis.decode_responses": "true"},
    )  # fmt: skip

    async def use() -> None:
        client = build_async_client(options)
        assert isinstance(client, redis.asyncio.RedisCluster)
        for number in range(20):  # keys over every node's slots
            await client.set(f"key{number}", str(number))
        assert await client.get("key7") == "7"
        await client.aclose()

    asyncio.run(use())
    per_node = [n.client().dbsize() for n in nodes]
    assert sum(per_node) == 20 and all(per_node)  # spread over the three masters


def test_tls_with_client_certificate(
    redis_server_factory: Any, tls_files: Any, make_app: Any
) -> None:
    server = redis_server_factory(tls=tls_files, tls_auth_clients="yes")
    full = {"url": f"rediss://localhost:{server.port}/0", "ssl_ca_certs": tls_files.ca,
            "ssl_certfile": tls_files.client_cert, "ssl_keyfile": tls_files.client_key,
            "ssl_cert_reqs": "required", "ssl_check_hostname": "true"}  # fmt: skip
    registry = make_app(**full).app.registry
    without_cert = {k: v for k, v in full.items() if k not in ("ssl_certfile", "ssl_keyfile")}
    refused = make_app(**without_cert, startup_check="false").app.registry

    async def use() -> None:
        assert await get_async_redis(registry).ping()  # CA, certificate and key all used
        with pytest.raises(redis.ConnectionError):
            await get_async_redis(refused).ping()  # the server requires a certificate
        await close_async_redis(registry)
        await close_async_redis(refused)

    asyncio.run(use())


def _names(client_list: Any, name: str) -> int:
    return sum(1 for c in client_list() if c["name"] == name)


def test_asyncio_run_ending_closes_the_loops_clients(make_app: Any, redis_client_list: Any) -> None:
    """No ``close_async_redis``: the clients close as ``asyncio.run`` shuts the loop down
    (its async generators), and the loop is then free for the garbage collector."""
    registry = make_app(client_name="async-run-end").app.registry
    loops: list[weakref.ref[Any]] = []

    async def use() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await get_async_redis(registry).set("k", "v")
        assert _names(redis_client_list, "async-run-end") == 1

    for _ in range(3):
        asyncio.run(use())
        assert _names(redis_client_list, "async-run-end") == 0  # closed with its loop
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]  # nothing keeps a loop alive


def test_a_loop_closed_by_hand_is_forgotten_at_the_next_loop(
    make_app: Any, redis_client_list: Any
) -> None:
    """``loop.close()`` without shutting down its async generators: its clients cannot be
    closed on it; the next loop's first call forgets it, and with it its clients and
    their sockets, without a warning about a generator or a coroutine left unfinished."""
    registry = make_app(client_name="async-by-hand").app.registry
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_ping(registry))
    assert _names(redis_client_list, "async-by-hand") == 1
    loop.close()  # by hand: no shutdown_asyncgens()
    closed = weakref.ref(loop)
    del loop
    unraisable: list[Any] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(_ping(registry))  # another loop: forgets the closed one
            gc.collect()
    finally:
        sys.unraisablehook = hook
    # its sockets go with its clients (a ResourceWarning each: nothing could close them)
    assert [str(w.message) for w in caught if w.category is not ResourceWarning] == []
    assert [repr(u.exc_value) for u in unraisable] == []
    # a ResourceWarning's record holds its source, the connection, and through it the loop:
    # the test's own reference (without hiredis, redis-py's parser keeps the loop's reader)
    del caught[:], unraisable[:]
    gc.collect()
    assert closed() is None
    wait_until(lambda: _names(redis_client_list, "async-by-hand") == 0)


def wait_until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.02)


def test_sentinel_clients_close_their_sentinel_connections(
    redis_server_factory: Any, sentinel_for: Any, make_app: Any
) -> None:
    """``close_async_redis`` of a Sentinel app closes the connections to the Sentinels too
    (redis-py's ``Sentinel`` keeps its own clients of them)."""
    master = redis_server_factory()
    port = sentinel_for(master.port)
    registry = make_app(url="redis://nowhere.invalid:1/0", sentinels=f"127.0.0.1:{port}",
                        sentinel_service="mymaster").app.registry  # fmt: skip

    def at_the_sentinel() -> int:
        with redis.Redis(port=port) as sentinel:
            me = sentinel.client_id()
            return sum(1 for c in sentinel.client_list() if int(c["id"]) != me)

    before = at_the_sentinel()

    async def use() -> None:
        await get_async_redis(registry).set("k", "v")
        assert at_the_sentinel() > before  # it asked a Sentinel where the master is
        await close_async_redis(registry)
        assert at_the_sentinel() == before

    asyncio.run(use())
    assert master.client().get("k") == b"v"


def test_a_sentinel_that_asks_for_a_password_gets_it_from_the_async_client_too(
    redis_server_factory: Any, sentinel_for: Any, make_app: Any
) -> None:
    """``redis.sentinel_password`` goes to the Sentinels from the asyncio client as from
    the sync one; the master, which asks for none, gets none."""
    master = redis_server_factory()
    port = sentinel_for(master.port, password="s3ntinel-pw")
    registry = make_app(url="redis://nowhere.invalid:1/0", sentinels=f"127.0.0.1:{port}",
                        sentinel_service="mymaster", sentinel_password="s3ntinel-pw").app.registry  # fmt: skip
    assert get_redis(registry).set("sync", "1")

    async def use() -> Any:
        try:
            await get_async_redis(registry).set("async", "1")
            return await get_async_redis(registry).get("sync")
        finally:
            await close_async_redis(registry)

    assert asyncio.run(use()) == b"1"
    assert master.client().get("async") == b"1"


@pytest.mark.parametrize("transaction", [False, True], ids=["pipeline", "multi"])
def test_an_async_pipelines_refused_connect_is_retried(
    redis_server_factory: Any, make_app: Any, transaction: bool
) -> None:
    """The asyncio client's first connection of a write pipeline is refused for ~0.3 s:
    that is before anything was sent, so it is retried and applied once."""
    server = redis_server_factory()
    registry = make_app(url=server.url, retries="20", retry_backoff_cap="0.1").app.registry
    server.stop()
    restart = threading.Timer(0.3, server.start)

    async def use() -> Any:
        restart.start()
        pipe = get_async_redis(registry).pipeline(transaction=transaction)
        pipe.set("k", "v").incr("n")
        try:
            return await pipe.execute()
        finally:
            await close_async_redis(registry)

    try:
        assert asyncio.run(use()) == [True, 1]
    finally:
        restart.join()
    assert server.client().get("n") == b"1"


def test_an_async_client_of_a_non_blocking_pool(make_app: Any) -> None:
    """``redis.blocking = false``: redis-py's plain pool, which fails at once when full."""
    registry = make_app(blocking="false", max_connections="1").app.registry

    async def use() -> None:
        client = get_async_redis(registry)
        assert type(client.connection_pool) is redis.asyncio.ConnectionPool
        blocker = asyncio.create_task(client.blpop(["nothing"], timeout=0.3))
        await asyncio.sleep(0.05)
        with pytest.raises(redis.ConnectionError, match="Too many connections"):
            await client.get("k")
        await blocker
        await close_async_redis(registry)

    asyncio.run(use())


def _ours_and_redis_pys(registry: Any, plain: Any, steps: Any) -> tuple[Any, Any]:
    """``steps(client)`` through ``get_async_redis(registry)``, then through ``plain()``
    (redis-py's own asyncio client), each in an ``asyncio.run`` of its own."""

    async def ours() -> Any:
        try:
            return await steps(get_async_redis(registry))
        finally:
            await close_async_redis(registry)

    async def theirs() -> Any:
        client = plain()
        try:
            return await steps(client)
        finally:
            await client.aclose()

    return asyncio.run(ours()), asyncio.run(theirs())


def test_async_commands_pipelines_and_pubsub_as_redis_pys_own(
    redis_server: Any, make_app: Any
) -> None:
    """redis-py's asyncio client as the oracle, the same steps both ways: a reply parsed
    with the command's options (ZRANGE ``withscores``), a pipeline transactional by
    default (one MULTI), a pubsub's own options (``ignore_subscribe_messages``)."""
    registry = make_app().app.registry

    def multis() -> int:
        with redis_server.client() as admin:
            return int(admin.info("commandstats").get("cmdstat_multi", {}).get("calls", 0))

    async def steps(client: Any) -> list[Any]:
        found: list[Any] = []
        await client.delete("scores", "n")
        await client.zadd("scores", {"a": 1.5, "b": 2})
        found.append(await client.zrange("scores", 0, -1, withscores=True))
        before = multis()
        async with client.pipeline() as pipe:
            found.append(await pipe.incr("n").incr("n").execute())
        found.append(multis() - before)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe("news")
        await client.publish("news", "hello")
        message = None
        for _ in range(50):
            message = await pubsub.get_message(timeout=0.1)
            if message is not None:
                break
        found.append(message and (message["type"], message["data"]))
        await pubsub.aclose()
        return found

    found, theirs = _ours_and_redis_pys(
        registry, lambda: redis.asyncio.Redis.from_url(redis_server.url), steps
    )
    assert found == theirs
    assert found[1:] == [[1, 2], 1, ("message", b"hello")]


def test_async_loading_reply_keeps_its_type_as_redis_pys_own(
    redis_server_factory: Any, make_app: Any
) -> None:
    """A SET and a MULTI/EXEC answered ``-LOADING`` (``BusyLoadingError``, a
    ``ConnectionError`` redis-py raises for an error reply) while the server reloads:
    the server refused them, so they raise it as it is, never "may have been applied";
    word for word as redis-py's own asyncio client with no retries."""
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff

    server = redis_server_factory()
    with server.client() as admin:
        admin.config_set("key-load-delay", "100")  # 100 µs a key: about a second
        admin.config_set("loading-process-events-interval-bytes", "1024")
        admin.execute_command("DEBUG", "POPULATE", "10000", "populated")
    registry = make_app(url=server.url, retries="0").app.registry

    async def steps(client: Any) -> list[Any]:
        await client.get("warm")  # a connection open before the reload
        reloader = threading.Thread(
            target=lambda: redis.Redis(port=server.port, socket_timeout=60).execute_command(
                "DEBUG", "RELOAD"
            )
        )
        reloader.start()
        with server.client() as admin:
            deadline = time.monotonic() + 5
            while admin.info("persistence")["loading"] != 1:
                assert time.monotonic() < deadline, "the reload never started"
                time.sleep(0.005)
        found: list[Any] = []
        for call in (lambda: client.set("k", "during"),
                     lambda: client.pipeline().set("k", "during").incr("n").execute()):  # fmt: skip
            try:
                found.append(await call())
            except redis.RedisError as error:
                found.append((type(error).__name__, str(error)))
        await asyncio.to_thread(reloader.join, 60)
        found.append(await client.set("k", "after"))
        return found

    found, theirs = _ours_and_redis_pys(
        registry,
        lambda: redis.asyncio.Redis.from_url(server.url, retry=AsyncRetry(NoBackoff(), 0)),
        steps,
    )
    assert [f[0] if isinstance(f, tuple) else f for f in found] == [
        "BusyLoadingError", "BusyLoadingError", True
    ]  # fmt: skip
    assert found == theirs
