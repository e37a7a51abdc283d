"""The write-safe retry rule on a real 6-node cluster (docs/retries.rst).

redis-py's cluster client sends a command again after a connection error by its own loop,
and a pipeline's failed commands one by one. Here a blocking command is on its way (sent,
waiting for its reply) when the test kills its connection server-side (``CLIENT KILL``);
then it pushes a value. A write sent again would block again and take that value: the
value still on the server shows it was not sent twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

from pyramid_redisx import CommandMayHaveBeenApplied, close_async_redis, get_async_redis
from pyramid_redisx.errors import TimeoutNotRetried
from pyramid_redisx.testing import RedisClusterSet

from .conftest import cluster_settings
from .test_cluster import _node_with_key

JOBS = "{q}jobs"  # one slot for the lists, the counter and the stream
MORE_JOBS = "{q}more-jobs"
COUNTER = "{q}n"
EVENTS = "{q}events"


class KillThenPush:
    """Kills the first connection blocked in ``command`` on ``node`` (a blocking command,
    or any command held by CLIENT PAUSE); waits for the client to send it again (up to
    ``grace`` s), then runs ``push`` on the node."""

    def __init__(self, node: Any, command: str, push: tuple[Any, ...], grace: float = 0.6):
        self.node, self.command, self.push, self.grace = node, command, push, grace
        self.killed = 0
        self.sent_again = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _blocked(self, client: Any) -> list[int]:
        return [
            int(c["id"])
            for c in client.client_list()
            if c.get("cmd") == self.command and "b" in c.get("flags", "")
        ]

    def _run(self) -> None:
        with self.node.client(decode_responses=True) as client:
            deadline = time.monotonic() + 5
            while not (blocked := self._blocked(client)) and time.monotonic() < deadline:
                time.sleep(0.01)
            if not blocked:
                return
            self.killed = client.client_kill_filter(_id=blocked[0])
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline:
                if self._blocked(client):
                    self.sent_again = True
                    break
                time.sleep(0.01)
            time.sleep(0.05)
            client.execute_command(*self.push)

    def join(self) -> None:
        self.thread.join(10)
        assert self.killed == 1, "the command never reached the server"


def _on(node: Any, *command: Any) -> Any:
    with node.client() as client:
        return client.execute_command(*command)


def test_a_write_whose_connection_dies_after_it_was_sent_is_not_sent_again(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    app = apps(cluster_settings(cluster_set), {"/pop": lambda r: r.redis.blpop(JOBS, 3)})
    node = _node_with_key(cluster_set, JOBS)
    killer = KillThenPush(node, "blpop", ("LPUSH", JOBS, "job-1"))
    with pytest.raises(CommandMayHaveBeenApplied, match="BLPOP may have been applied"):
        app.get("/pop")
    killer.join()
    assert not killer.sent_again
    assert _on(node, "LRANGE", JOBS, 0, -1) == [b"job-1"]  # still there: not popped twice


def test_retry_writes_sends_a_write_again_as_redis_py_does(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    settings = cluster_settings(cluster_set, retry_writes="true")
    app = apps(settings, {"/pop": lambda r: r.redis.blpop(JOBS, 3)})
    node = _node_with_key(cluster_set, JOBS)
    killer = KillThenPush(node, "blpop", ("LPUSH", JOBS, "job-1"))
    assert "job-1" in app.get("/pop").text  # the second try took it
    killer.join()
    assert killer.sent_again
    assert _on(node, "LLEN", JOBS) == 0


def test_a_read_whose_connection_dies_is_sent_again(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    def read(request: Any) -> Any:
        return request.redis.xread({EVENTS: "$"}, block=3000)

    app = apps(cluster_settings(cluster_set), {"/read": read})
    node = _node_with_key(cluster_set, EVENTS)
    _on(node, "XADD", EVENTS, "*", "n", "0")  # the stream exists: XREAD $ waits for more
    killer = KillThenPush(node, "xread", ("XADD", EVENTS, "*", "n", "1"))
    assert "{b'n': b'1'}" in app.get("/read").text
    killer.join()
    assert killer.sent_again


def test_a_pipeline_with_a_write_is_not_sent_again_command_by_command(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """redis-py marks every command of the node failed (the INCR whose reply it had read
    too) and sends each again: the counter would read 2 and the job be taken."""

    def pipeline(request: Any) -> Any:
        pipe = request.redis.pipeline(transaction=False)
        pipe.incr(COUNTER)
        pipe.blpop(JOBS, 3)
        return pipe.execute()

    app = apps(cluster_settings(cluster_set), {"/pipe": pipeline})
    node = _node_with_key(cluster_set, JOBS)
    killer = KillThenPush(node, "blpop", ("LPUSH", JOBS, "job-1"))
    with pytest.raises(CommandMayHaveBeenApplied):
        app.get("/pipe")
    killer.join()
    assert not killer.sent_again
    assert _on(node, "GET", COUNTER) == b"1"
    assert _on(node, "LRANGE", JOBS, 0, -1) == [b"job-1"]


def test_a_timed_out_command_is_not_sent_again_without_retry_on_timeout(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """socket_timeout 0.4 s, a BLPOP that waits for ever: one try (redis-py's loop would
    make four, 1.6 s and more); with ``retry_on_timeout`` the four tries again."""
    for retry_on_timeout, least, most in (("false", 0.35, 1.0), ("true", 1.55, 10.0)):
        settings = cluster_settings(
            cluster_set, socket_timeout="0.4", retry_on_timeout=retry_on_timeout
        )
        app = apps(settings, {"/pop": lambda r: r.redis.blpop(JOBS, 0)})
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            app.get("/pop")
        took = time.monotonic() - started
        assert least <= took <= most, (retry_on_timeout, took)


def test_a_node_that_stalls_while_connecting_is_tried_once_without_retry_on_timeout(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The node holding the key is stopped (SIGSTOP) before the client has a connection to
    it: the new connection's handshake times out. As with a standalone server, that is one
    try of 0.3 s (``TimeoutNotRetried``), not redis-py's three (``retries`` 2: 0.9 s),
    for a command and a pipeline, sync and asyncio. (After the failure redis-py reloads
    the slot map, which may ask the stalled node first: up to 0.3 s more.) The control, ``retry_on_timeout``,
    tries three times again (one command: each pause must stay well under the cluster's
    2 s node timeout, or a replica takes over)."""
    node = _node_with_key(cluster_set, JOBS)

    async def get_async(client: Any) -> None:
        await client.get(JOBS)

    async def pipe_async(client: Any) -> None:
        await client.pipeline(transaction=False).get(JOBS).execute()

    def app_with(retry_on_timeout: str) -> Any:
        settings = cluster_settings(cluster_set, socket_timeout="0.3", socket_connect_timeout="0.3",
                                    retries="2", retry_on_timeout=retry_on_timeout)  # fmt: skip
        return apps(settings, {
            "/get": lambda r: r.redis.get(JOBS),
            "/pipe": lambda r: r.redis.pipeline(transaction=False).get(JOBS).execute(),
        })  # fmt: skip

    def stalled(call: Any) -> tuple[float, BaseException]:
        node.pause()
        try:
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError) as raised:
                call()
            return time.monotonic() - started, raised.value
        finally:
            node.resume()

    app = app_with("false")
    for name, call in (
        ("command", lambda: app.get("/get")),
        ("pipeline", lambda: app.get("/pipe")),
        ("asyncio", lambda: _run_async(app, get_async)),
        ("asyncio pipeline", lambda: _run_async(app, pipe_async)),
    ):
        took, error = stalled(call)
        assert 0.25 <= took <= 0.75 and isinstance(error, TimeoutNotRetried), (name, took, error)
    control = app_with("true")
    took, error = stalled(lambda: control.get("/get"))
    assert 0.85 <= took <= 1.5 and not isinstance(error, TimeoutNotRetried), (took, error)


def test_a_transaction_whose_connection_dies_after_exec_was_sent_is_not_sent_again(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The node holds writes (CLIENT PAUSE WRITE) while the test kills the connection
    that sent MULTI/INCR/EXEC (held at the INCR, shown as ``incrby``): redis-py's retry
    would run the transaction once the pause ends (the counter at 1, the view
    answering); here the view gets the error and the transaction never ran."""

    def transaction(request: Any) -> Any:
        pipe = request.redis.pipeline(transaction=True)
        pipe.incr(COUNTER)
        return pipe.execute()

    app = apps(cluster_settings(cluster_set), {"/tx": transaction})
    node = _node_with_key(cluster_set, COUNTER)
    _on(node, "CLIENT", "PAUSE", 1500, "WRITE")
    try:
        killer = KillThenPush(node, "incrby", ("PING",))
        with pytest.raises(
            CommandMayHaveBeenApplied, match="MULTI/EXEC of 1 commands with writes may"
        ):
            app.get("/tx")
        killer.join()
    finally:
        _on(node, "CLIENT", "UNPAUSE")
    time.sleep(0.2)
    assert _on(node, "GET", COUNTER) is None


# ------------------------------------------------ the asyncio client (get_async_redis)
def _run_async(app: Any, use: Any) -> None:
    registry = app.app.registry

    async def run() -> None:
        try:
            await use(get_async_redis(registry))
        finally:
            await close_async_redis(registry)

    asyncio.run(run())


def test_async_cluster_write_pipeline_and_transaction_not_sent_again(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The same three cuts through ``get_async_redis``: a BLPOP, a pipeline INCR + BLPOP
    (redis-py's asyncio loop sends the failed commands again), and a MULTI/EXEC."""
    app = apps(cluster_settings(cluster_set))
    node = _node_with_key(cluster_set, JOBS)

    async def use(client: Any) -> None:
        killer = KillThenPush(node, "blpop", ("LPUSH", JOBS, "job-1"))
        with pytest.raises(CommandMayHaveBeenApplied, match="BLPOP may have been applied"):
            await client.blpop(JOBS, 3)
        killer.join()
        assert not killer.sent_again

        pipe = client.pipeline(transaction=False)
        pipe.incr(COUNTER)
        pipe.blpop(MORE_JOBS, 3)  # (JOBS has job-1 now)
        killer = KillThenPush(node, "blpop", ("LPUSH", MORE_JOBS, "job-2"))
        with pytest.raises(CommandMayHaveBeenApplied):
            await pipe.execute()
        killer.join()
        assert not killer.sent_again
        assert _on(node, "GET", COUNTER) == b"1"

        _on(node, "CLIENT", "PAUSE", 1500, "WRITE")
        try:
            tx = client.pipeline(transaction=True)
            tx.incr(COUNTER)
            killer = KillThenPush(node, "incrby", ("PING",))
            with pytest.raises(CommandMayHaveBeenApplied, match="MULTI/EXEC of 1 commands"):
                await tx.execute()
            killer.join()
        finally:
            _on(node, "CLIENT", "UNPAUSE")

    _run_async(app, use)
    time.sleep(0.2)
    assert _on(node, "GET", COUNTER) == b"1"  # neither the pipeline's nor the MULTI's again
    assert _on(node, "LRANGE", JOBS, 0, -1) == [b"job-1"]
    assert _on(node, "LRANGE", MORE_JOBS, 0, -1) == [b"job-2"]


def test_async_cluster_timeout_and_read_retry(cluster_set: RedisClusterSet, apps: Any) -> None:
    app = apps(cluster_settings(cluster_set, socket_timeout="0.4"))
    node = _node_with_key(cluster_set, EVENTS)
    _on(node, "XADD", EVENTS, "*", "n", "0")

    async def use(client: Any) -> None:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await client.blpop(JOBS, 0)
        assert time.monotonic() - started < 1.0  # one try of 0.4 s, not four

        killer = KillThenPush(node, "xread", ("XADD", EVENTS, "*", "n", "1"))
        reply = await client.xread({EVENTS: "$"}, block=300)  # < socket_timeout
        killer.join()
        assert killer.sent_again and "{b'n': b'1'}" in str(reply)

    _run_async(app, use)


def test_a_node_that_refuses_the_handshake_did_not_run_the_write(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The node holding the key refuses a new connection's handshake: it is at
    ``maxclients`` ("max number of clients + cluster connections reached", which
    redis-py reports as a ResponseError), or it no longer takes the client's password
    (``WRONGPASS``, an ``AuthenticationError``: a ``ConnectionError``, retried as an
    error while connecting is). The INCR was never sent: the view gets the node's
    refusal, never ``CommandMayHaveBeenApplied``; once the node takes the client again
    the INCR runs once."""
    app = apps(cluster_settings(cluster_set, retries="1", retry_backoff_cap="0.01"),
               {"/incr": lambda r: r.redis.incr(COUNTER)})  # fmt: skip
    node = _node_with_key(cluster_set, COUNTER)
    refusals = (
        ("maxclients", lambda admin: admin.info("clients")["connected_clients"], 10000),
        ("requirepass", lambda admin: "another-password", cluster_set.password),
    )
    for setting, refusing, back in refusals:
        with node.client() as admin:
            admin.config_set(setting, refusing(admin))  # (this connection stays in)
            try:
                with pytest.raises(redis.RedisError) as raised:
                    app.get("/incr")
            finally:
                admin.config_set(setting, back)
        assert not isinstance(raised.value, CommandMayHaveBeenApplied), (setting, raised.value)
        assert isinstance(raised.value, redis.ResponseError | redis.AuthenticationError)
        assert _on(node, "GET", COUNTER) is None, setting  # never sent
    assert app.get("/incr").text == "1"


def test_a_node_that_dies_during_the_handshake_did_not_run_the_write(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The node holding the key is stopped (SIGSTOP) before the client connects: the
    kernel accepts the connection and takes the handshake, which waits for a reply; the
    node is then killed, and the handshake's read fails ("Connection closed by server"),
    a connection error that is no error reply. The INCR was never sent: the view gets a
    connection error, never ``CommandMayHaveBeenApplied`` (the fixture restarts the node)."""
    app = apps(cluster_settings(cluster_set, retries="0", socket_timeout="5",
                                socket_connect_timeout="5"),
               {"/incr": lambda r: r.redis.incr(COUNTER)})  # fmt: skip
    node = _node_with_key(cluster_set, COUNTER)
    replies: list[BaseException] = []

    def view() -> None:
        try:
            app.get("/incr")
        except BaseException as exc:  # noqa: BLE001 - the view's error is what is checked
            replies.append(exc)

    node.pause()
    thread = threading.Thread(target=view)
    thread.start()
    try:
        time.sleep(1.0)  # connected and waiting for the handshake's reply (5 s allowed)
    finally:
        node.stop()  # SIGCONT + SIGKILL: its sockets close
    thread.join(30)
    assert len(replies) == 1 and isinstance(replies[0], redis.ConnectionError), replies
    assert not isinstance(replies[0], CommandMayHaveBeenApplied), replies[0]


def test_a_pipeline_write_whose_send_failed_part_way_is_not_sent_again_alone(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """INCR, then a SET of 32 MB, in one pipeline to one node whose
    ``proto-max-bulk-len`` is 1 MB: the node runs the INCR, refuses the SET's length and
    closes the connection while the client is still sending, so the send fails part-way.
    The INCR may have run (it did): it is not sent again on its own (the counter stays at
    1) and the view gets ``CommandMayHaveBeenApplied``."""

    def pipeline(request: Any) -> Any:
        pipe = request.redis.pipeline(transaction=False)
        pipe.incr(COUNTER)
        pipe.set(JOBS, b"x" * (32 << 20))
        return pipe.execute()

    app = apps(cluster_settings(cluster_set, socket_timeout="5"), {"/pipe": pipeline})
    node = _node_with_key(cluster_set, COUNTER)
    _on(node, "CONFIG", "SET", "proto-max-bulk-len", "1mb")
    try:
        with pytest.raises(CommandMayHaveBeenApplied) as raised:
            app.get("/pipe")
    finally:
        _on(node, "CONFIG", "SET", "proto-max-bulk-len", "512mb")
    assert _on(node, "GET", COUNTER) == b"1"  # 2 when the INCR is sent again on its own
    assert _on(node, "EXISTS", JOBS) == 0
    assert "(INCRBY {q}n 1) of pipeline caused error: INCRBY may have been applied: " in str(
        raised.value
    )


def test_a_pipeline_to_a_node_that_refuses_connections_was_not_sent(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The node holding the key is down (SIGKILL: connections refused): nothing of the
    pipeline went out, so it is tried again as a refused command is, and the view gets the
    refusal, never "INCRBY may have been applied" (redis-py 8.2 marks a command not yet
    answered with a sentinel of its own, not None, which read as "answered"). Sync and
    asyncio clients alike."""
    app = apps(cluster_settings(cluster_set, retries="1"),
               {"/pipe": lambda r: r.redis.pipeline(transaction=False).incr(COUNTER).execute()})  # fmt: skip
    node = _node_with_key(cluster_set, COUNTER)
    node.stop()
    errors: list[BaseException] = []
    with pytest.raises(redis.ConnectionError) as raised:
        app.get("/pipe")
    errors.append(raised.value)

    async def pipe_async(client: Any) -> None:
        with pytest.raises(redis.ConnectionError) as raised:
            await client.pipeline(transaction=False).incr(COUNTER).execute()
        errors.append(raised.value)

    _run_async(app, pipe_async)
    for error in errors:
        assert not isinstance(error, CommandMayHaveBeenApplied), error
        assert "onnect" in str(error), error  # refused, or no node to connect to


def test_async_cluster_pipelines_answer_as_the_sync_ones(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """redis-py as the oracle: an error reply raised, or returned in its place with
    ``raise_on_error=False``, in a pipeline and a MULTI/EXEC (one slot), as the sync
    Cluster client does and word for word as redis-py's own asyncio Cluster client."""
    import redis.asyncio

    from pyramid_redisx import get_redis

    app = apps(cluster_settings(cluster_set))

    def shown(outcome: Any) -> Any:
        if isinstance(outcome, Exception):
            return type(outcome).__name__, str(outcome)
        return [shown(r) if isinstance(r, Exception) else r for r in outcome]

    def sync_steps(client: Any) -> list[Any]:
        client.set(EVENTS, "text")
        found = []
        for transaction in (False, True):
            for raise_on_error in (True, False):
                pipe = client.pipeline(transaction=transaction)
                pipe.incr(EVENTS)
                pipe.get(EVENTS)
                try:
                    found.append(shown(pipe.execute(raise_on_error=raise_on_error)))
                except Exception as error:  # noqa: BLE001 - compared
                    found.append(shown(error))
        return found

    async def async_steps(client: Any) -> list[Any]:
        await client.set(EVENTS, "text")
        found = []
        for transaction in (False, True):
            for raise_on_error in (True, False):
                pipe = client.pipeline(transaction=transaction)
                pipe.incr(EVENTS)
                pipe.get(EVENTS)
                try:
                    found.append(shown(await pipe.execute(raise_on_error=raise_on_error)))
                except Exception as error:  # noqa: BLE001 - compared
                    found.append(shown(error))
        return found

    sync = sync_steps(get_redis(app.app.registry))
    answers: list[Any] = []

    async def use(client: Any) -> None:
        answers.append(await async_steps(client))

    _run_async(app, use)
    error = ("ResponseError", "value is not an integer or out of range")
    assert sync[1] == [error, b"text"] and sync[3] == [error, b"text"]
    assert sync[0][0] == "ResponseError" and sync[2][0] == "ResponseError"
    assert [a[0] if isinstance(a, tuple) else a for a in answers[0]] == [
        s[0] if isinstance(s, tuple) else s for s in sync
    ]
    # word for word as redis-py's own asyncio Cluster client (8.1's messages show the
    # reply as a tuple, 8.2's as the sync client's: redis-py's difference, kept)
    plain: list[Any] = []

    async def bare() -> None:
        client = redis.asyncio.RedisCluster.from_url(cluster_set.url)
        try:
            plain.append(await async_steps(client))
        finally:
            await client.aclose()

    asyncio.run(bare())
    assert answers[0] == plain[0]


def connections_received(cluster_set: RedisClusterSet) -> list[int]:
    found = []
    for node in cluster_set.nodes:
        with node.client() as client:
            found.append(int(client.info("stats")["total_connections_received"]))
    return found


def test_async_cluster_pipelines_fail_at_once_while_the_circuit_is_open(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """The asyncio Cluster client's pipelines and transactions pass the client's circuit:
    open (as other requests' failures would open it), they raise RedisCircuitOpen without
    a connection to any node."""
    import redis

    from pyramid_redisx import RedisCircuitOpen, get_redis
    from pyramid_redisx.breaker import OPEN, breaker_of

    app = apps(cluster_settings(cluster_set, breaker_failures="2", breaker_cooldown="30"))
    circuit = breaker_of(get_redis(app.app.registry).connection_pool)
    outcomes: list[str] = []

    async def use(client: Any) -> None:
        assert await client.set(COUNTER, 0)  # connected and healthy
        for _ in range(2):
            circuit.failed(redis.ConnectionError("Error 111 connecting. Connection refused."))
        assert circuit.state == OPEN
        received = connections_received(cluster_set)
        for transaction in (False, True):
            pipe = client.pipeline(transaction=transaction)
            pipe.incr(COUNTER)
            try:
                await pipe.execute()
            except RedisCircuitOpen:
                outcomes.append("RedisCircuitOpen")
        # the only new connection to each node: the one that asked it now
        assert connections_received(cluster_set) == [n + 1 for n in received]

    _run_async(app, use)
    assert outcomes == ["RedisCircuitOpen"] * 2
    assert _on(_node_with_key(cluster_set, COUNTER), "GET", COUNTER) == b"0"
