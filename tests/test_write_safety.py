"""The write-safe retry rule, against a real server behind a loopback proxy that lets the
server run a command and then resets the client's connection before the reply."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

import pyramid_redisx
from pyramid_redisx import CommandMayHaveBeenApplied, get_redis
from pyramid_redisx.breaker import breaker_of
from pyramid_redisx.pools import pool_figures
from pyramid_redisx.request import client_set
from tests.conftest import build_app
from tests.loopback_proxy import LoopbackProxy


class ResetAfterReplyProxy(LoopbackProxy):
    """Forwards TCP to a server; ``arm(b"INCR")`` makes it reset the client connection
    (RST) instead of passing on the reply of the next request whose bytes hold that
    command: the server ran it, the client never hears so."""

    replies_pumped = False  # one request, one reply, in lockstep (below)

    def __init__(self, target_port: int) -> None:
        self.trigger: bytes | None = None
        self.resets = 0
        super().__init__(target_port)

    def arm(self, command: bytes) -> None:
        with self.lock:
            self.trigger = command

    def client_to_server(self, client: socket.socket, server: socket.socket) -> None:
        while data := client.recv(65536):
            with self.lock:
                trigger = self.trigger
                hit = trigger is not None and trigger in data.upper()
                if hit:
                    self.trigger = None
            server.sendall(data)
            reply = server.recv(65536)  # one request, one reply (no pipelining here
            # beyond one packet: redis-py sends a command or a pipeline in one write)
            if hit:
                self.resets += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()  # RST: "Connection reset by peer" on the client
                return
            client.sendall(reply)


@pytest.fixture
def proxy(redis_server: Any, redis_url: str) -> Iterator[ResetAfterReplyProxy]:
    """In front of the session server, flushed for this test (``redis_url``)."""
    proxy = ResetAfterReplyProxy(redis_server.port)
    yield proxy
    proxy.close()


def app_through(proxy: ResetAfterReplyProxy, views: dict[str, Any], **settings: str) -> Any:
    full = {"redis.url": f"redis://127.0.0.1:{proxy.port}/0", "redis.retries": "3",
            **{f"redis.{key}": value for key, value in settings.items()}}  # fmt: skip
    return build_app(full, views)


def counter(redis_server: Any) -> int:
    with redis_server.client() as direct:
        return int(direct.get("n") or 0)


def test_exported() -> None:
    assert pyramid_redisx.CommandMayHaveBeenApplied is CommandMayHaveBeenApplied
    assert issubclass(CommandMayHaveBeenApplied, redis.ConnectionError)


@pytest.mark.parametrize("request_connection", ["true", "false"])
def test_write_reset_after_send_is_applied_once_and_raises(
    proxy: ResetAfterReplyProxy, redis_server: Any, request_connection: str
) -> None:
    app = app_through(proxy, {"/": lambda request: request.redis.incr("n")},
                      request_connection=request_connection)  # fmt: skip
    try:
        assert app.get("/").text == "1"
        proxy.arm(b"INCR")
        with pytest.raises(CommandMayHaveBeenApplied) as caught:
            app.get("/")
        assert proxy.resets == 1
        assert counter(redis_server) == 2  # applied exactly once, not retried
        assert str(caught.value).startswith(
            "INCRBY may have been applied: the connection failed after it was sent ("
        )
        assert str(caught.value).endswith(
            "); not retried, since it can change data (redis.retry_writes = true retries it)"
        )
        assert app.get("/").text == "3"  # the next request gets a fresh connection
        assert pool_figures(get_redis(app.app.registry).connection_pool).in_use == 0
    finally:
        client_set(app.app.registry).close()


@pytest.mark.parametrize(
    ("retry_on_timeout", "counted"), [("false", False), ("true", False), ("false", True)]
)
def test_read_reset_after_send_is_retried_and_answers(
    proxy: ResetAfterReplyProxy, redis_server: Any, retry_on_timeout: str, counted: bool
) -> None:
    """Retried with ``retry_on_timeout`` too (it adds timeouts to what is retried), and
    while other requests' failures are counted with the circuit still closed (retries
    stop only once it is open)."""
    redis_server.client().set("k", "v")
    app = app_through(proxy, {"/": lambda request: request.redis.get("k").decode()},
                      retry_on_timeout=retry_on_timeout, breaker_failures="5")  # fmt: skip
    try:
        if counted:
            app.get("/")  # connected
            circuit = breaker_of(get_redis(app.app.registry).connection_pool)
            circuit.failed(redis.ConnectionError("Error 111 connecting. Connection refused."))
            assert (circuit.state, circuit.failures, circuit.dirty) == ("closed", 1, True)
        proxy.arm(b"GET")
        assert app.get("/").text == "v"
        assert proxy.resets == 1
    finally:
        client_set(app.app.registry).close()


def test_retry_writes_restores_redis_py_behaviour(
    proxy: ResetAfterReplyProxy, redis_server: Any
) -> None:
    app = app_through(proxy, {"/": lambda request: request.redis.incr("n")}, retry_writes="true")
    try:
        proxy.arm(b"INCR")
        assert app.get("/").text == "2"  # answered, but applied twice
        assert proxy.resets == 1
        assert counter(redis_server) == 2
    finally:
        client_set(app.app.registry).close()


@pytest.mark.parametrize(
    ("transaction", "commands", "applies"),
    [(True, ("INCR",), True), (False, ("INCR", "GET"), True), (False, ("GET", "GET"), False)],
)
def test_pipelines_follow_the_rule(
    proxy: ResetAfterReplyProxy, redis_server: Any, transaction: bool, commands: Any,
    applies: bool,
) -> None:  # fmt: skip
    def view(request: Any) -> str:
        pipe = request.redis.pipeline(transaction=transaction)
        for command in commands:
            pipe.incr("n") if command == "INCR" else pipe.get("n")
        return repr(pipe.execute())

    app = app_through(proxy, {"/": view})
    try:
        proxy.arm(commands[0].encode())
        if applies:
            what = "a MULTI/EXEC transaction" if transaction else "a pipeline"
            with pytest.raises(CommandMayHaveBeenApplied) as raised:
                app.get("/")
            message = str(raised.value)  # docs/retries.rst shows it
            assert message.startswith(
                f"{what} of {len(commands)} commands with writes may have been applied: the "
                "connection failed after it was sent (Error while reading from 127.0.0.1:"
            ), message
            assert "Connection reset by peer" in message, message  # the cause
            assert message.endswith("(redis.retry_writes = true retries it)"), message
            assert counter(redis_server) == 1
        else:
            assert app.get("/").text == "[None, None]"
        assert proxy.resets == 1
    finally:
        client_set(app.app.registry).close()


def test_process_wide_client_follows_the_rule_too(
    proxy: ResetAfterReplyProxy, redis_server: Any
) -> None:
    app = app_through(proxy, {})
    client = get_redis(app.app.registry)
    try:
        proxy.arm(b"LPUSH")
        with pytest.raises(CommandMayHaveBeenApplied, match=r"^LPUSH may have been applied"):
            client.lpush("queue", "job")
        with redis_server.client() as direct:
            assert direct.llen("queue") == 1
    finally:
        client_set(app.app.registry).close()


def test_refused_connection_is_still_retried(redis_server_factory: Any) -> None:
    """An error while connecting is before anything was sent: retried, then answered."""
    server = redis_server_factory()
    app = build_app({"redis.url": server.url, "redis.retries": "20",
                     "redis.retry_backoff_cap": "0.1"}, {"/": lambda r: r.redis.incr("n")})  # fmt: skip
    restart = threading.Timer(0.3, server.start)
    try:
        server.stop()
        restart.start()
        started = time.monotonic()
        assert app.get("/").text == "1"  # refused for ~0.3 s, then connected: applied once
        assert time.monotonic() - started >= 0.25
    finally:
        if restart.is_alive():
            restart.join()  # start() must finish before the fixture stops the server
        client_set(app.app.registry).close()


def test_retry_backoff_cap_bounds_each_pause(redis_server_factory: Any) -> None:
    """``retries = 12`` against a refused port: each pause is at most
    ``retry_backoff_cap`` (10 ms), so the command fails in ~0.2 s here (its reconnects
    retry too); redis-py's own cap (0.512 s) would make it seconds."""
    dead = redis_server_factory()
    dead.stop()
    app = build_app({"redis.url": dead.url, "redis.retries": "12",
                     "redis.retry_backoff_cap": "0.01", "redis.breaker_failures": "0",
                     "redis.startup_check": "false"}, {})  # fmt: skip
    client = get_redis(app.app.registry)
    try:
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError, match="refused"):
            client.get("k")
        assert time.monotonic() - started < 1.0  # ~0.2 s here quiet
    finally:
        client_set(app.app.registry).close()


@pytest.mark.parametrize("transaction", [False, True], ids=["pipeline", "multi"])
def test_refused_reconnect_of_a_pipeline_is_still_retried(
    redis_server_factory: Any, transaction: bool
) -> None:
    """The server dies between a request's command and its write pipeline: the
    pipeline's reconnect of the request's connection is refused for ~0.3 s, which is
    before anything was sent, so it is retried and the pipeline applied once (not
    ``CommandMayHaveBeenApplied``)."""
    server = redis_server_factory()
    restart = threading.Timer(0.3, server.start)

    def view(request: Any) -> str:
        request.redis.ping()  # the request's connection
        server.stop()
        restart.start()
        pipe = request.redis.pipeline(transaction=transaction)
        pipe.set("k", "v").incr("n")
        return repr(pipe.execute())

    app = build_app({"redis.url": server.url, "redis.retries": "20",
                     "redis.retry_backoff_cap": "0.1"}, {"/": view})  # fmt: skip
    try:
        assert app.get("/").text == "[True, 1]"
    finally:
        if restart.is_alive():
            restart.join()
        client_set(app.app.registry).close()


@pytest.mark.slow
def test_retry_on_timeout_is_honoured_on_a_stalled_server(redis_server_factory: Any) -> None:
    """A GET on a stalled (SIGSTOPped) server: with retry_on_timeout the client waits one
    more socket_timeout and answers once the server resumes; without, it fails after one."""
    server = redis_server_factory()
    server.client().set("k", "v")
    settings = {"redis.url": server.url, "redis.socket_timeout": "0.4", "redis.retries": "3",
                "redis.retry_backoff_cap": "0.01"}  # fmt: skip
    for retry_on_timeout, expected in (("false", redis.TimeoutError), ("true", "v")):
        app = build_app({**settings, "redis.retry_on_timeout": retry_on_timeout},
                        {"/": lambda request: request.redis.get("k").decode()})  # fmt: skip
        client = get_redis(app.app.registry)
        client.ping()  # connected before the stall
        server.pause()
        resume = threading.Timer(0.6, server.resume)
        resume.start()
        started = time.monotonic()
        try:
            if expected is redis.TimeoutError:
                with pytest.raises(redis.TimeoutError):
                    client.get("k")
                assert 0.35 < time.monotonic() - started < 0.55  # one timeout, no retry
            else:
                assert client.get("k") == b"v"
                assert 0.55 < time.monotonic() - started < 1.5  # timed out once, retried
        finally:
            resume.join()
            client_set(app.app.registry).close()


@pytest.mark.slow
def test_writes_after_a_server_restart_do_not_fail_once_per_stale_connection(
    redis_server_factory: Any,
) -> None:
    """After a restart every pooled connection is dead; the pool's checkout notices the
    closed socket (it is readable at EOF) and reconnects before a write is sent."""
    server = redis_server_factory()
    app = build_app({"redis.url": server.url}, {})
    client = get_redis(app.app.registry)
    pool = client.connection_pool
    try:
        held = [pool.get_connection() for _ in range(4)]
        for connection in held:
            connection.send_command("PING")
            connection.read_response()
            pool.release(connection)
        assert pool_figures(pool).idle == 4
        server.stop()
        server.start()
        assert [client.incr("n") for _ in range(8)] == list(range(1, 9))
    finally:
        client_set(app.app.registry).close()


def test_async_client_applies_a_write_once_and_retries_a_read(
    proxy: ResetAfterReplyProxy, redis_server: Any
) -> None:
    """``get_async_redis`` follows the same rule as the sync clients."""
    import asyncio

    from pyramid_redisx import close_async_redis, get_async_redis

    app = app_through(proxy, {})
    registry = app.app.registry

    async def use() -> None:
        client = get_async_redis(registry)
        assert await client.incr("n") == 1
        proxy.arm(b"INCR")
        with pytest.raises(CommandMayHaveBeenApplied):
            await client.incr("n")
        assert counter(redis_server) == 2  # applied exactly once, not retried
        proxy.arm(b"GET")
        assert await client.get("n") == b"2"  # a read is sent again and answers
        pipe = client.pipeline(transaction=True)
        pipe.incr("n")
        pipe.incr("n")
        proxy.arm(b"EXEC")
        with pytest.raises(CommandMayHaveBeenApplied):
            await pipe.execute()
        assert counter(redis_server) == 4  # the transaction ran once
        assert proxy.resets == 3
        await close_async_redis(registry)

    try:
        asyncio.run(use())
    finally:
        client_set(registry).close()


@pytest.mark.parametrize(("retries", "answers"), [("0", False), ("1", True)])
def test_retries_counts_the_tries_after_the_first(
    proxy: ResetAfterReplyProxy, redis_server: Any, retries: str, answers: bool
) -> None:
    """``redis.retries = 1``: a GET whose connection is reset after it was sent is sent
    once more and answers; with 0 the view gets the connection error."""
    redis_server.client().set("k", "v")
    app = app_through(proxy, {"/": lambda request: request.redis.get("k").decode()},
                      retries=retries)  # fmt: skip
    try:
        proxy.arm(b"GET")
        if answers:
            assert app.get("/").text == "v"
        else:
            with pytest.raises(redis.ConnectionError):
                app.get("/")
        assert proxy.resets == 1
    finally:
        client_set(app.app.registry).close()


@pytest.mark.parametrize(("retries", "answers"), [("0", False), ("1", True)])
def test_async_retries_count_the_tries_after_the_first(
    proxy: ResetAfterReplyProxy, redis_server: Any, retries: str, answers: bool
) -> None:
    """The asyncio client counts ``redis.retries`` as the sync one: with 1, a GET whose
    connection is reset after it was sent is sent once more and answers; with 0 the
    caller gets the connection error."""
    redis_server.client().set("k", "v")
    got: list[Any] = []

    async def use(client: Any) -> None:
        await client.ping()
        proxy.arm(b"GET")
        try:
            got.append(await client.get("k"))
        except redis.ConnectionError as error:
            got.append(type(error).__name__)

    _async_use(app_through(proxy, {}, retries=retries), use)
    assert got == ([b"v"] if answers else ["ConnectionError"])
    assert proxy.resets == 1


@pytest.mark.parametrize("command", ["incr", "get"])
def test_a_watching_transaction_whose_reply_is_lost(
    proxy: ResetAfterReplyProxy, redis_server: Any, command: str
) -> None:
    """WATCH, MULTI, one command, EXEC, and the connection reset after the server ran it.
    redis-py raises ``WatchError`` (its connection error while watching) either way. A
    read-only transaction does the same through ``request.redis`` (not sent again
    unwatched on a new connection). One with a write raises ``CommandMayHaveBeenApplied``
    instead: a WATCH loop answers ``WatchError`` by running the transaction again, though
    the server ran it (docs/retries.rst). Each transaction ran once."""

    def scenario(client: Any) -> str:
        pipe = client.pipeline()
        pipe.watch("n")
        pipe.multi()
        getattr(pipe, command)("n")
        proxy.arm(b"EXEC")
        try:
            pipe.execute()
        except redis.RedisError as error:
            return type(error).__name__
        finally:
            pipe.reset()
        return "no error"

    app = app_through(proxy, {"/": lambda request: scenario(request.redis)})
    ours = app.get("/").text
    client_set(app.app.registry).close()
    with redis.Redis(port=proxy.port) as plain:
        theirs = scenario(plain)
    assert theirs == "WatchError"
    assert ours == ("CommandMayHaveBeenApplied" if command == "incr" else "WatchError")
    assert counter(redis_server) == (2 if command == "incr" else 0)  # each ran once
    assert proxy.resets == 2


def _async_use(app: Any, use: Any) -> None:
    import asyncio

    from pyramid_redisx import close_async_redis, get_async_redis

    registry = app.app.registry

    async def run() -> None:
        try:
            await use(get_async_redis(registry))
        finally:
            await close_async_redis(registry)

    try:
        asyncio.run(run())
    finally:
        client_set(registry).close()


def test_async_pipeline_with_a_read_and_a_write_is_not_sent_again(
    proxy: ResetAfterReplyProxy, redis_server: Any
) -> None:
    """GET + INCR in one asyncio pipeline, the reply lost: one command reads, but not
    all, so it is not sent again (INCR would run twice)."""

    async def use(client: Any) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.get("n")
        pipe.incr("n")
        proxy.arm(b"GET")
        with pytest.raises(CommandMayHaveBeenApplied, match="a pipeline of 2 commands"):
            await pipe.execute()

    _async_use(app_through(proxy, {}), use)
    assert proxy.resets == 1
    assert counter(redis_server) == 1


def test_async_retry_writes_sends_a_transaction_again(
    proxy: ResetAfterReplyProxy, redis_server: Any
) -> None:
    """With ``retry_writes = true`` the asyncio client behaves as redis-py: a MULTI/EXEC
    whose reply was lost is sent again and answers (and ran twice)."""
    results: list[Any] = []

    async def use(client: Any) -> None:
        pipe = client.pipeline(transaction=True)
        pipe.incr("n")
        proxy.arm(b"EXEC")
        results.append(await pipe.execute())

    _async_use(app_through(proxy, {}, retry_writes="true"), use)
    assert proxy.resets == 1
    assert results == [[2]] and counter(redis_server) == 2


def test_async_read_pipeline_whose_reply_is_lost_is_sent_again(
    proxy: ResetAfterReplyProxy, redis_server: Any
) -> None:
    """Two GETs in one asyncio pipeline, the reply lost: it only reads, so it is sent
    again on a new connection and answers (redis-py's own rule for it)."""
    results: list[Any] = []

    async def use(client: Any) -> None:
        await client.set("n", "7")
        pipe = client.pipeline(transaction=False)
        pipe.get("n")
        pipe.get("n")
        proxy.arm(b"GET")
        results.append(await pipe.execute())

    _async_use(app_through(proxy, {}), use)
    assert proxy.resets == 1
    assert results == [[b"7", b"7"]]


def test_async_retry_writes_sends_a_command_again(
    proxy: ResetAfterReplyProxy, redis_server: Any
) -> None:
    """With ``retry_writes = true`` an asyncio INCR whose reply was lost is sent again and
    answers, as redis-py's: it ran twice."""
    results: list[Any] = []

    async def use(client: Any) -> None:
        proxy.arm(b"INCR")
        results.append(await client.incr("n"))

    _async_use(app_through(proxy, {}, retry_writes="true"), use)
    assert proxy.resets == 1
    assert results == [2] and counter(redis_server) == 2


@pytest.mark.parametrize("retry_writes", ["true", "false"])
def test_client_keeps_the_write_rule_of_its_client(
    proxy: ResetAfterReplyProxy, redis_server: Any, retry_writes: str
) -> None:
    """``request.redis.client()`` (one connection, for a sequence of commands) follows
    ``retry_writes`` as the client it came from: an INCR whose reply was lost is sent
    again only when the setting says so."""

    def view(request: Any) -> str:
        with request.redis.client() as single:
            try:
                return str(single.incr("n"))
            except CommandMayHaveBeenApplied:
                return "may have been applied"

    app = app_through(proxy, {"/": view}, retry_writes=retry_writes)
    try:
        proxy.arm(b"INCR")
        expected = "2" if retry_writes == "true" else "may have been applied"
        assert app.get("/").text == expected
        assert counter(redis_server) == (2 if retry_writes == "true" else 1)
    finally:
        client_set(app.app.registry).close()


@pytest.mark.parametrize("transaction", [True, False])
def test_retry_writes_sends_a_pipeline_again(
    proxy: ResetAfterReplyProxy, redis_server: Any, transaction: bool
) -> None:
    """With ``retry_writes = true`` a request's pipeline (or MULTI/EXEC) whose reply was
    lost is sent again, as redis-py does: answered, and applied twice."""

    def view(request: Any) -> str:
        return repr(request.redis.pipeline(transaction=transaction).incr("n").execute())

    app = app_through(proxy, {"/": view}, retry_writes="true")
    try:
        proxy.arm(b"INCR")
        assert app.get("/").text == "[2]"
        assert proxy.resets == 1
        assert counter(redis_server) == 2
    finally:
        client_set(app.app.registry).close()


def test_a_watching_connection_lost_raises_redis_pys_watch_error(
    redis_server: Any, redis_url: str
) -> None:
    """The connection of a WATCH pipeline dies before its next immediate command: the
    same ``WatchError``, with the same message, as plain redis-py's."""
    app = build_app({"redis.url": redis_url}, {})
    plain = redis.Redis.from_url(redis_url)
    messages = []
    try:
        for client in (plain, get_redis(app.app.registry)):
            with client.pipeline() as pipe:
                pipe.watch("k")
                with redis_server.client() as admin:
                    host, port = pipe.connection._sock.getsockname()
                    assert admin.client_kill_filter(addr=f"{host}:{port}") == 1
                with pytest.raises(redis.WatchError) as raised:
                    pipe.get("k")
                messages.append(str(raised.value))
    finally:
        plain.close()
        client_set(app.app.registry).close()
    assert (
        messages[1] == messages[0] == ("A ConnectionError occurred while watching one or more keys")
    )


def test_an_async_read_is_retried_while_other_failures_are_counted(
    proxy: ResetAfterReplyProxy, redis_server: Any
) -> None:
    """As ``test_a_read_is_retried_while_other_failures_are_counted``, for the asyncio
    client, which shares the sync client's circuit."""
    redis_server.client().set("k", "v")
    got: list[Any] = []
    app = app_through(proxy, {}, breaker_failures="5")

    async def use(client: Any) -> None:
        await client.ping()
        circuit = breaker_of(get_redis(app.app.registry).connection_pool)
        circuit.failed(redis.ConnectionError("Error 111 connecting. Connection refused."))
        assert (circuit.state, circuit.failures) == ("closed", 1)
        proxy.arm(b"GET")
        got.append(await client.get("k"))

    _async_use(app, use)
    assert got == [b"v"]
    assert proxy.resets == 1


def test_async_retries_pause_between_tries(redis_server_factory: Any) -> None:
    """``retries = 5`` against a refused port: the asyncio client pauses between its
    tries (up to 16, 32, 64, 128 and 200 ms with jitter), as the sync one does."""
    dead = redis_server_factory()
    dead.stop()
    app = build_app({"redis.url": dead.url, "redis.retries": "5", "redis.retry_backoff_cap": "0.2",
                     "redis.breaker_failures": "0", "redis.startup_check": "false"}, {})  # fmt: skip
    took: list[float] = []

    async def use(client: Any) -> None:
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            await client.get("k")
        took.append(time.monotonic() - started)

    _async_use(app, use)
    assert 0.01 <= took[0] < 3.0, took


def test_an_async_watching_connection_lost_raises_redis_pys_watch_error(
    redis_server: Any, redis_url: str
) -> None:
    """The asyncio pipeline's WATCH connection dies before its next immediate command:
    the same ``WatchError`` and message as plain ``redis.asyncio``'s."""
    app = build_app({"redis.url": redis_url}, {})
    messages: list[str] = []

    async def lose_watch(client: Any) -> None:
        async with client.pipeline() as pipe:
            await pipe.watch("k")
            host, port = pipe.connection._writer.get_extra_info("sockname")
            with redis_server.client() as admin:
                assert admin.client_kill_filter(addr=f"{host}:{port}") == 1
            with pytest.raises(redis.WatchError) as raised:
                await pipe.get("k")
            messages.append(str(raised.value))

    async def plain() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await lose_watch(client)
        finally:
            await client.aclose()

    asyncio.run(plain())
    _async_use(app, lose_watch)
    assert (
        messages[1] == messages[0] == ("A ConnectionError occurred while watching one or more keys")
    )


def test_an_async_read_is_retried_across_refused_reconnects(redis_server_factory: Any) -> None:
    """The server dies under the asyncio client's idle connection and is back ~0.3 s
    later: a read retries through the refused reconnects (each counted by the circuit,
    still closed) and answers."""
    server = redis_server_factory()
    app = build_app({"redis.url": server.url, "redis.retries": "20",
                     "redis.retry_backoff_cap": "0.1", "redis.breaker_failures": "50"}, {})  # fmt: skip
    restart = threading.Timer(0.3, server.start)
    got: list[Any] = []

    async def use(client: Any) -> None:
        await client.ping()
        server.stop()
        restart.start()
        got.append(await client.echo("back"))

    try:
        _async_use(app, use)
    finally:
        if restart.is_alive():
            restart.join()
    assert got == [b"back"]


# ------------------------------------------------------------------ asyncio as the sync client
def _sync_and_async(app: Any, use_sync: Any, use_async: Any) -> tuple[Any, Any]:
    """What the same steps give on the process-wide sync client and the asyncio client:
    the result, or the error's type, message and cause's type."""

    def outcome(run: Any) -> Any:
        try:
            return run()
        except Exception as error:  # noqa: BLE001 - compared, not handled
            return type(error).__name__, str(error), type(error.__cause__).__name__

    sync = outcome(lambda: use_sync(get_redis(app.app.registry)))
    found: list[Any] = []

    async def use(client: Any) -> None:
        async def run() -> Any:
            return await use_async(client)

        try:
            found.append(await run())
        except Exception as error:  # noqa: BLE001 - compared, not handled
            found.append((type(error).__name__, str(error), type(error.__cause__).__name__))

    _async_use(app, use)
    return sync, found[0]


@pytest.mark.parametrize("what", ["command", "pipeline", "transaction"])
def test_async_writes_whose_reply_is_lost_fail_as_the_sync_clients_do(
    proxy: ResetAfterReplyProxy, redis_server: Any, what: str
) -> None:
    """The same error, word for word (what was sent, the cause, the advice), for an INCR,
    a pipeline of GET and INCR and a MULTI/EXEC, each applied once."""

    def steps(client: Any) -> Any:
        if what == "command":
            proxy.arm(b"INCR")
            return client.incr("n")
        pipe = client.pipeline(transaction=what == "transaction")
        pipe.get("n")
        pipe.incr("n")
        proxy.arm(b"INCR")
        return pipe.execute()

    async def async_steps(client: Any) -> Any:
        return await steps(client)

    app = app_through(proxy, {})
    sync, asynchronous = _sync_and_async(app, steps, async_steps)
    assert sync[0] == "CommandMayHaveBeenApplied" and sync == asynchronous
    assert proxy.resets == 2 and counter(redis_server) == 2  # each applied once


@pytest.mark.parametrize("transaction", [False, True])
def test_async_pipelines_raise_an_error_reply_as_redis_pys_own(
    proxy: ResetAfterReplyProxy, redis_server: Any, transaction: bool
) -> None:
    def steps(client: Any) -> Any:
        client.set("s", "text")
        return client.pipeline(transaction=transaction).incr("s").get("s").execute()

    async def async_steps(client: Any) -> Any:
        await client.set("s", "text")
        return await client.pipeline(transaction=transaction).incr("s").get("s").execute()

    sync, asynchronous = _sync_and_async(app_through(proxy, {}), steps, async_steps)
    assert sync[0] == "ResponseError" and "value is not an integer" in sync[1]
    assert asynchronous[0] == sync[0]
    # word for word as redis-py's own asyncio client (8.1's message shows the reply as a
    # tuple, 8.2's as the sync one: redis-py's difference, kept)
    plain: list[Any] = []

    async def bare() -> None:
        async with redis.asyncio.Redis(port=redis_server.port) as client:
            try:
                plain.append(await async_steps(client))
            except Exception as error:  # noqa: BLE001 - compared
                plain.append((type(error).__name__, str(error), type(error.__cause__).__name__))

    asyncio.run(bare())
    assert asynchronous == plain[0]


def test_async_pipelines_that_do_not_raise_answer_as_the_sync_ones(
    proxy: ResetAfterReplyProxy, redis_server: Any
) -> None:
    """``raise_on_error=False``: the error reply in its place among the results, in a
    pipeline and in a MULTI/EXEC, as redis-py's sync pipelines give it."""

    def shown(results: list[Any]) -> list[Any]:
        return [(type(r).__name__, str(r)) if isinstance(r, Exception) else r for r in results]

    def steps(client: Any) -> Any:
        client.set("s", "text")
        answers = []
        for transaction in (False, True):
            pipe = client.pipeline(transaction=transaction)
            pipe.incr("s")
            pipe.get("s")
            answers.append(shown(pipe.execute(raise_on_error=False)))
        return answers

    async def async_steps(client: Any) -> Any:
        await client.set("s", "text")
        answers = []
        for transaction in (False, True):
            pipe = client.pipeline(transaction=transaction)
            pipe.incr("s")
            pipe.get("s")
            answers.append(shown(await pipe.execute(raise_on_error=False)))
        return answers

    sync, asynchronous = _sync_and_async(app_through(proxy, {}), steps, async_steps)
    error = ("ResponseError", "value is not an integer or out of range")
    assert sync == [[error, b"text"], [error, b"text"]] and asynchronous == sync


def test_async_sentinel_client_applies_a_write_once(
    proxy: ResetAfterReplyProxy, redis_server: Any, sentinel_for: Any
) -> None:
    """The asyncio client of a Sentinel app follows the write rule too: the Sentinel
    names the master behind the proxy, whose reset after an INCR makes it "may have been
    applied", applied once; a GET after the same reset is sent again and answers."""
    port = sentinel_for(proxy.port)
    app = build_app({"redis.url": "redis://nowhere.invalid:1/0", "redis.retries": "3",
                     "redis.sentinels": f"127.0.0.1:{port}", "redis.sentinel_service": "mymaster"})  # fmt: skip
    seen: list[Any] = []

    async def use(client: Any) -> None:
        assert await client.incr("n") == 1
        proxy.arm(b"INCR")
        with pytest.raises(CommandMayHaveBeenApplied, match="INCRBY may have been applied"):
            await client.incr("n")
        proxy.arm(b"GET")
        seen.append(await client.get("n"))

    _async_use(app, use)
    assert proxy.resets == 2 and seen == [b"2"] and counter(redis_server) == 2
