"""One owner per connection (issue 24), one test per defect, against real servers.

Most tests run the same scenario twice: inside a real request through ``request.redis``,
and with plain redis-py on a ``BlockingConnectionPool`` configured alike
(``tests.ownership_helpers.plain_client``), and assert that both give the outcome
redis-py gives. The rule tested (docs/ will state it): a connection has one owner at a
time — the request's plain commands and non-WATCH pipelines in the request's thread
(fixed when the request starts), or one WATCH pipeline from WATCH to its reset, or one
thread, or one pubsub, monitor or ``client()``.

=====================================================  =========================================
test                                                   defect (issue 24) / behaviour (issue 25)
=====================================================  =========================================
test_d1_first_exec_keeps_second_watch                  24.1 two WATCH pipelines: lost update
test_d1_change_to_second_key_keeps_first_exec          24.1 two WATCH pipelines: spurious abort
test_d1_three_watching_pipelines_three_connections     24.1 three WATCHes, one connection
test_d1_multi_exec_inside_watch_block[*]               24.1 pipeline / dogpile set_multi /
                                                       redis_tm commit / client()'s pipeline
test_rule_client_and_its_pipeline_own_their_connection 24.1 client() does not escape
test_rule_a_watching_pipeline_takes_the_request_..    25: only in the request's thread
test_d2_kill_while_watching_raises_watch_error[*]      24.2 CLIENT KILL, then nothing/GET/SET
test_d2_kill_while_watching_then_immediate_command[*]  24.2 CLIENT KILL, then the pipeline's
                                                       GET/SET/DEL/WATCH before MULTI
test_d2_caught_blpop_timeout_while_watching            24.2 BLPOP past socket_timeout
test_d3_thread_reply_never_reaches_next_request[*]     24.3 thread's BLPOP, next request's GET
test_rule_request_thread_fixed_at_request_start        24.3 the first caller does not own it
test_d4_end_of_request_keeps_thread_transaction[*]     24.4 reset between WATCH and MULTI /
                                                       after the queued writes
test_d5_collected_watch_pipeline_shifts_no_reply       24.5 GC finalizer in another thread
test_d6_loading_reply_keeps_its_type                   24.6 -LOADING (DEBUG RELOAD, real server)
test_d6_wrong_auth_keeps_its_type[*]                   24.6 AUTH wrong (no password / password)
test_d7_write_after_idle_kill_goes_on_fresh_conn[*]    24.7 SET/INCR/MULTI; request_connection
                                                       on and off (off: the switch stays)
test_d8_asyncio_run_per_request_leaves_no_connection   24.8 100 x asyncio.run
test_i25_watch_connection_not_lent_to_waiting_request  25: WATCH connection given to a waiter
test_i25_script_request_gives_back_at_closer           25: prepare() keeps its connection
test_i25_monitor_connection_disconnected_before_reuse  25: MONITOR connection back in the pool
test_i25_worker_thread_pipelines_own_their_socket      25: a thread's pipelines, request socket
test_i25_reset_of_watching_pipeline_unwatches          25: reset() without UNWATCH
test_i25_lower_case_read_is_retried[*]                 25: execute_command("get") as a write
=====================================================  =========================================
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio
from dogpile.cache import make_region
from pyramid.config import Configurator
from pyramid.scripting import prepare

from pyramid_redisx import get_redis
from pyramid_redisx.aio import get_async_redis
from pyramid_redisx.dogpile_cache import region_arguments
from pyramid_redisx.pools import pool_figures
from pyramid_redisx.testing import RedisServer
from tests.ownership_helpers import (
    CuttingProxy,
    app_settings,
    attempt,
    frozen_heap,
    outcome,
    plain_client,
)


@dataclass
class Ctx:
    """What a scenario runs against: ``redis`` is ``request.redis`` inside a request, or
    the plain client; ``admin`` is another client of the same server (concurrent
    writes, CLIENT KILL)."""

    redis: Any
    admin: redis.Redis
    request: Any = None  # None: plain redis-py
    extra: dict[str, Any] = field(default_factory=dict)


Scenario = Callable[[Ctx], Any]


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as client:
        yield client


@pytest.fixture
def both(make_app: Any, redis_url: str, admin: redis.Redis) -> Iterator[Any]:
    """``both(scenario, setup=None, plain=None, ours_extra=None, theirs_extra=None,
    server_admin=None, **settings)`` → (outcome through ``request.redis`` in a request of
    an app with ``app_settings(**settings)``, outcome with plain redis-py configured alike,
    or ``plain``). The keyspace is flushed before each run."""
    plains: list[redis.Redis] = []

    def run(
        scenario: Scenario,
        setup: Callable[[Configurator], None] | None = None,
        plain: redis.Redis | None = None,
        ours_extra: Callable[[Any], dict[str, Any]] | None = None,
        theirs_extra: dict[str, Any] | None = None,
        server_admin: redis.Redis | None = None,
        **settings: Any,
    ) -> tuple[Any, Any]:
        server = server_admin or admin
        got: list[Any] = []

        def view(request: Any) -> str:
            extra = ours_extra(request) if ours_extra else {}
            got.append(scenario(Ctx(request.redis, server, request, extra)))
            return "done"

        app = make_app({"/run": view}, setup, **app_settings(**settings))
        server.flushdb()
        app.get("/run")
        if plain is None:
            plain = plain_client(
                redis_url,
                retries=int(settings.get("retries", 3)),
                socket_timeout=float(settings.get("socket_timeout", 2)),
                max_connections=int(settings.get("max_connections", 8)),
            )
            plains.append(plain)
        server.flushdb()
        theirs = scenario(Ctx(plain, server, None, theirs_extra or {}))
        return got[0], theirs

    yield run
    for plain in plains:
        plain.connection_pool.disconnect()


def with_tm(config: Configurator) -> None:
    config.include("pyramid_tm")


def kill(admin: redis.Redis, client_id: int) -> None:
    """CLIENT KILL one connection, and let the server's FIN reach the client's socket."""
    assert admin.client_kill_filter(_id=client_id) == 1
    time.sleep(0.05)


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


# ---------------------------------------------------------------- 1. a WATCH cleared by other work


def first_exec_then_second(ctx: Ctx) -> Any:
    r, admin = ctx.redis, ctx.admin
    first, second = r.pipeline(), r.pipeline()
    first.watch("a")
    second.watch("b")
    first.multi()
    first.set("a", "first")
    done = attempt(first.execute)
    admin.set("b", "concurrent")  # after the first EXEC: the second's WATCH must see it
    second.multi()
    second.set("b", "second")
    return done, attempt(second.execute), admin.mget("a", "b")


def test_d1_first_exec_keeps_second_watch(both: Any) -> None:
    """The first pipeline's EXEC must not clear the second's WATCH: the second then
    commits over a concurrent change (a lost update) where redis-py raises."""
    ours, theirs = both(first_exec_then_second)
    expected = ((True,), "WatchError", [b"first", b"concurrent"])
    assert theirs == expected
    assert ours == expected


def change_second_then_exec_first(ctx: Ctx) -> Any:
    r, admin = ctx.redis, ctx.admin
    first, second = r.pipeline(), r.pipeline()
    first.watch("a")
    second.watch("b")
    admin.set("b", "concurrent")  # the second's key: the first's transaction is fine
    first.multi()
    first.set("a", "first")
    done = attempt(first.execute)
    second.multi()
    second.set("b", "second")
    return done, attempt(second.execute), admin.mget("a", "b")


def test_d1_change_to_second_key_keeps_first_exec(both: Any) -> None:
    """A change to the second pipeline's key must not abort the first."""
    ours, theirs = both(change_second_then_exec_first)
    expected = ((True,), "WatchError", [b"first", b"concurrent"])
    assert theirs == expected
    assert ours == expected


def three_watching_pipelines(ctx: Ctx) -> Any:
    r = ctx.redis
    r.get("warm")  # the request's connection exists before the WATCHes
    pipes = [r.pipeline() for _ in range(3)]
    ids = []
    for index, pipe in enumerate(pipes):
        pipe.watch(f"k{index}")
        ids.append(pipe.client_id())  # immediate while watching: the pipeline's connection
    ids.append(r.client_id())  # a plain command meanwhile
    for pipe in pipes:
        pipe.reset()
    return len(set(ids))


def test_d1_three_watching_pipelines_three_connections(both: Any) -> None:
    """Three open WATCH pipelines hold three connections, and the request's plain
    commands meanwhile a fourth, as with redis-py (one shared connection: one WATCH
    state for all)."""
    ours, theirs = both(three_watching_pipelines)
    assert theirs == 4
    assert ours == 4


def _inner_pipeline(ctx: Ctx) -> Any:
    return ctx.redis.pipeline().incr("other").execute()


def _inner_dogpile(ctx: Ctx) -> Any:
    return ctx.extra["region"].set_multi({"x": 1, "y": 2})


def _inner_redis_tm(ctx: Ctx) -> Any:
    if ctx.request is None:  # what request.redis_tm does at commit: one MULTI/EXEC
        return ctx.redis.pipeline(transaction=True).incr("other").execute()
    ctx.request.redis_tm.incr("other")
    ctx.request.tm.commit()
    ctx.request.tm.begin()  # pyramid_tm's manager is explicit: its tween commits this one
    return None


def _inner_client_pipeline(ctx: Ctx) -> Any:
    with ctx.redis.client() as single:
        return single.pipeline().incr("other").execute()


INNER = {
    "pipeline": _inner_pipeline,
    "dogpile-set-multi": _inner_dogpile,
    "redis-tm-commit": _inner_redis_tm,
    "client-pipeline": _inner_client_pipeline,
}


@pytest.mark.parametrize("inner", list(INNER))
def test_d1_multi_exec_inside_watch_block(both: Any, inner: str, redis_url: str) -> None:
    """Any MULTI/EXEC run while a WATCH pipeline is open — an ordinary transaction
    pipeline, a dogpile.cache region's ``set_multi`` (its Redis backend pipelines
    SETEX), ``request.redis_tm`` committed, ``client()``'s pipeline — must leave the
    WATCH in force: the watching transaction aborts on a concurrent change."""
    ours_region = make_region()
    plain = plain_client(redis_url)
    theirs_region = make_region().configure(
        "dogpile.cache.redis",
        arguments={"connection_pool": plain.connection_pool, "redis_expiration_time": 60},
    )

    def setup(config: Configurator) -> None:
        with_tm(config)
        ours_region.configure(
            "pyramid_redisx",
            arguments=region_arguments(config.registry, redis_expiration_time=60),
        )

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        watching = r.pipeline()
        watching.watch("a")
        before = watching.get("a")
        INNER[inner](ctx)
        admin.set("a", "concurrent")
        watching.multi()
        watching.set("a", "mine")
        return before, attempt(watching.execute), admin.get("a")

    try:
        ours, theirs = both(
            scenario,
            setup,
            plain=plain,
            ours_extra=lambda request: {"region": ours_region},
            theirs_extra={"region": theirs_region},
        )
    finally:
        plain.connection_pool.disconnect()
    expected = (None, "WatchError", b"concurrent")
    assert theirs == expected
    assert ours == expected


def test_rule_client_and_its_pipeline_own_their_connection(make_app: Any) -> None:
    """``client()``'s commands and its pipelines never run on the request's connection
    (plain redis-py has no request connection: nothing to compare with)."""

    def view(request: Any) -> str:
        r = request.redis
        own = r.client_id()
        with r.client() as single:
            (piped,) = single.pipeline(transaction=False).client_id().execute()
            direct = single.client_id()
        return repr((piped != own, direct != own))

    assert make_app({"/": view}, **app_settings()).get("/").text == "(True, True)"


def test_rule_a_watching_pipeline_takes_the_request_connection_in_its_thread_only(
    make_app: Any,
) -> None:
    """A pipeline that starts watching in the request's thread takes the request's
    connection over (one connection while it watches, as the ownership rule says); one
    in another thread gets its own, and a ``client()``'s pipeline never takes it."""

    def view(request: Any) -> str:
        r = request.redis
        pool = get_redis(request.registry).connection_pool
        own = r.client_id()
        elsewhere: list[int] = []

        def worker() -> None:
            pipe = r.pipeline()
            pipe.watch("k")
            elsewhere.append(pipe.client_id())
            pipe.reset()

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        with r.client() as single:
            single_pipe = single.pipeline()
            single_pipe.watch("k")
            from_client = single_pipe.client_id()
            single_pipe.reset()
        pipe = r.pipeline()
        pipe.watch("k")
        taken = pipe.client_id()
        in_use = pool_figures(pool)[0]
        r.get("k")  # the request's next command: a connection of its own again
        pipe.reset()
        return repr((elsewhere[0] != own, from_client != own, taken == own, in_use))

    app = make_app({"/": view}, **app_settings())
    assert app.get("/").text == "(True, True, True, 1)"


# ---------------------------------------------------------------- 2. a WATCH lost on reconnect

BETWEEN: dict[str, Callable[[Any], Any]] = {
    "nothing": lambda r: None,
    "get": lambda r: r.get("z"),  # a read: retried on a fresh connection
    "set": lambda r: r.set("z", "1"),  # a write
}


@pytest.mark.parametrize("between", list(BETWEEN))
def test_d2_kill_while_watching_raises_watch_error(both: Any, between: str) -> None:
    """The server drops a watching pipeline's connection; whatever the request runs next,
    the pipeline's EXEC raises ``WatchError`` (redis-py: "A ConnectionError occurred
    while watching"), never commits over a concurrent change."""

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        watching = r.pipeline()
        watching.watch("a")
        kill(admin, watching.client_id())
        meanwhile = attempt(lambda: BETWEEN[between](r))
        admin.set("a", "concurrent")
        watching.multi()
        watching.set("a", "mine")
        return meanwhile, attempt(watching.execute), admin.get("a")

    ours, theirs = both(scenario)
    meanwhile = {"nothing": None, "get": None, "set": True}[between]
    expected = (meanwhile, "WatchError", b"concurrent")
    assert theirs == expected
    assert ours == expected


IMMEDIATE: dict[str, Callable[[Any], Any]] = {
    "get": lambda pipe: pipe.get("c"),
    "set": lambda pipe: pipe.set("c", "1"),
    "delete": lambda pipe: pipe.delete("c"),
    "watch": lambda pipe: pipe.watch("c"),
}


@pytest.mark.parametrize("command", list(IMMEDIATE))
def test_d2_kill_while_watching_then_immediate_command(both: Any, command: str) -> None:
    """Before MULTI a watching pipeline runs its commands at once, on its own connection.
    The server closed that connection while it idled: the next command (a read or a
    write, which never reached a live server) raises ``WatchError`` as redis-py does,
    never ``CommandMayHaveBeenApplied``, and the key is untouched. Found by the oracle
    (tests/test_ownership_oracle.py) on the first fix."""

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        admin.set("c", "before")
        watching = r.pipeline()
        watching.watch("a")
        kill(admin, watching.client_id())
        return attempt(lambda: IMMEDIATE[command](watching)), admin.get("c")

    ours, theirs = both(scenario)
    assert theirs == ("WatchError", b"before")
    assert ours == ("WatchError", b"before")


def test_d2_caught_blpop_timeout_while_watching(both: Any) -> None:
    """A BLPOP that outlives ``socket_timeout`` (caught by the view) closes the
    connection it ran on; it must not be the watching pipeline's, nor silently replace
    it: the transaction still sees the concurrent change."""

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        watching = r.pipeline()
        watching.watch("a")
        blocked = attempt(lambda: r.blpop(["q"], timeout=2))  # socket_timeout is 0.5 s
        admin.set("a", "concurrent")
        watching.multi()
        watching.set("a", "mine")
        return blocked, attempt(watching.execute), admin.get("a")

    ours, theirs = both(scenario, socket_timeout="0.5")
    expected = ("TimeoutError", "WatchError", b"concurrent")
    assert theirs == expected
    assert ours == expected


# ---------------------------------------------------------------- 3. threads and the request's end


def _blocked_on_blpop(admin: redis.Redis) -> bool:
    return any(client.get("cmd") == "blpop" for client in admin.client_list())


@pytest.mark.parametrize("app_shape", ["plain-app", "with-pyramid_tm"])
def test_d3_thread_reply_never_reaches_next_request(
    make_app: Any, redis_url: str, admin: redis.Redis, app_shape: str
) -> None:
    """A view hands ``request.redis`` to a thread whose BLPOP is the request's first
    command, and returns while the BLPOP waits. The next request's GET must get its own
    value, and the thread its BLPOP's (with only our request properties
    ``request.redis`` is a method whose Usage starts at first use: in the thread)."""
    thread_result: dict[str, Any] = {}
    threads: list[threading.Thread] = []

    def start_blpop(client: Any) -> None:
        def worker() -> None:
            thread_result["blpop"] = attempt(lambda: client.blpop(["q"], timeout=1.5))

        thread = threading.Thread(target=worker)
        threads.append(thread)
        thread.start()
        assert wait_for(lambda: _blocked_on_blpop(admin))

    def scenario(first: Callable[[], Any], second: Callable[[], Any]) -> Any:
        thread_result.clear()
        threads.clear()
        admin.flushdb()
        admin.set("secret", "s3cret")
        first()
        pusher = threading.Timer(0.3, lambda: admin.rpush("q", "thread-reply"))
        pusher.start()
        try:
            got = second()
        finally:
            pusher.join()
            for thread in threads:
                thread.join(5)
        return got, thread_result.get("blpop")

    setup = with_tm if app_shape == "with-pyramid_tm" else None
    app = make_app(
        {
            "/start": lambda request: start_blpop(request.redis) or "started",
            "/get": lambda request: repr(attempt(lambda: request.redis.get("secret"))),
        },
        setup,
        **app_settings(),
    )
    ours = scenario(lambda: app.get("/start"), lambda: app.get("/get").text)
    plain = plain_client(redis_url)
    try:
        theirs = scenario(
            lambda: start_blpop(plain), lambda: repr(attempt(lambda: plain.get("secret")))
        )
    finally:
        plain.connection_pool.disconnect()
    expected = ("b's3cret'", (b"q", b"thread-reply"))
    assert theirs == expected
    assert ours == expected


def test_rule_request_thread_fixed_at_request_start(make_app: Any) -> None:
    """The request's thread is the one running the router, not the first caller: after a
    thread ran the request's first command, the view's own ten GETs still share one
    connection (the pool lends two connections in all, not one per GET)."""
    lent = [0]

    def view(request: Any) -> str:
        client = request.redis
        thread = threading.Thread(target=lambda: client.get("k"))
        thread.start()
        thread.join()
        for _ in range(10):
            client.get("k")
        return "ok"

    app = make_app({"/": view}, **app_settings())
    pool = get_redis(app.app.registry).connection_pool
    lend = pool.get_connection

    def counting(*args: Any, **kwargs: Any) -> Any:
        lent[0] += 1
        return lend(*args, **kwargs)

    pool.get_connection = counting
    try:
        assert app.get("/").text == "ok"
    finally:
        del pool.get_connection
    assert lent[0] <= 2
    assert pool_figures(pool).in_use == 0


@pytest.mark.parametrize(
    ("stage", "concurrent", "expected"),
    [
        ("watched", True, ("WatchError", b"concurrent")),  # reset between WATCH and MULTI
        ("queued", False, ((True,), b"thread")),  # reset after the queued writes
    ],
)
def test_d4_end_of_request_keeps_thread_transaction(
    make_app: Any,
    redis_url: str,
    admin: redis.Redis,
    stage: str,
    concurrent: bool,
    expected: Any,
) -> None:
    """A thread's WATCH transaction outlives the request that started it: the end of the
    request must not reset it (an UNWATCH between WATCH and MULTI lets ``execute()``
    commit over a concurrent change; a reset after the queued writes makes it return
    ``[]`` having written nothing)."""
    state: dict[str, Any] = {}

    def start(client: Any) -> None:
        watched, go = threading.Event(), threading.Event()
        state.update(go=go)

        def worker() -> None:
            pipe = client.pipeline()
            pipe.watch("a")
            if stage == "queued":
                pipe.multi()
                pipe.set("a", "thread")
            watched.set()
            go.wait(5)
            if stage == "watched":
                pipe.multi()
                pipe.set("a", "thread")
            state["result"] = attempt(pipe.execute)

        client.set("a", "0")
        thread = state["thread"] = threading.Thread(target=worker)
        thread.start()
        assert watched.wait(5)

    def scenario(run_start: Callable[[], Any]) -> Any:
        admin.flushdb()
        run_start()  # in a request: the request ends here, the thread goes on
        if concurrent:
            admin.set("a", "concurrent")
        state["go"].set()
        state["thread"].join(5)
        return state["result"], admin.get("a")

    app = make_app({"/": lambda request: start(request.redis) or "started"}, **app_settings())
    ours = scenario(lambda: app.get("/"))
    plain = plain_client(redis_url)
    try:
        theirs = scenario(lambda: start(plain))
    finally:
        plain.connection_pool.disconnect()
    assert theirs == expected
    assert ours == expected


# ---------------------------------------------------------------- 5. finalizers


def test_d5_collected_watch_pipeline_shifts_no_reply(both: Any) -> None:
    """WATCH pipelines dropped in a reference cycle (as ``except E as exc: error = exc``
    makes) are finalized by the garbage collector in another thread, while the view
    runs its commands: every GET still gets its own value."""

    def scenario(ctx: Ctx) -> Any:
        r = ctx.redis
        stop = threading.Event()

        def collector() -> None:
            while not stop.is_set():
                gc.collect()

        thread = threading.Thread(target=collector)
        thread.start()
        wrong = []
        try:
            for index in range(300):
                pipe = r.pipeline()
                watched = attempt(lambda pipe=pipe, key=f"w{index}": pipe.watch(key))
                pipe.cycle = pipe  # type: ignore[attr-defined]  # garbage only gc frees
                del pipe
                value = f"v{index}".encode()
                written = attempt(lambda index=index: r.set(f"k{index}", f"v{index}"))
                read = attempt(lambda index=index: r.get(f"k{index}"))
                if (watched, written, read) != (True, True, value):
                    wrong.append((index, watched, written, read))
        finally:
            stop.set()
            thread.join()
            gc.collect()
        return wrong[:5], len(wrong)

    with frozen_heap():
        ours, theirs = both(scenario, max_connections="64")
    assert theirs == ([], 0)
    assert ours == ([], 0)


# ---------------------------------------------------------------- 6. error replies


@pytest.fixture
def loading_server(redis_server_factory: Any) -> RedisServer:
    """A server whose ``DEBUG RELOAD`` of 10,000 keys loads for about a second (100 µs
    a key: ``key-load-delay``), answering other clients ``-LOADING`` meanwhile."""
    server: RedisServer = redis_server_factory()
    with server.client() as client:
        client.config_set("key-load-delay", "100")
        client.config_set("loading-process-events-interval-bytes", "1024")
    return server


def test_d6_loading_reply_keeps_its_type(both: Any, loading_server: RedisServer) -> None:
    """A SET and a MULTI/EXEC answered ``-LOADING`` raise ``BusyLoadingError`` (the
    server refused them), never ``CommandMayHaveBeenApplied``; once loaded, the next
    command works. ``retries = 0``: redis-py retries this error class."""
    reloader = redis.Redis(port=loading_server.port, socket_timeout=60)

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        admin.execute_command("DEBUG", "POPULATE", "10000", "populated")
        r.get("warm")  # an open connection, as in a request that already ran a command
        thread = threading.Thread(target=lambda: reloader.execute_command("DEBUG", "RELOAD"))
        thread.start()
        assert wait_for(lambda: admin.info("persistence")["loading"] == 1)
        refused = attempt(lambda: r.set("k", "during"))
        transaction = attempt(lambda: r.pipeline().set("k", "during").incr("n").execute())
        thread.join(60)
        return refused, transaction, attempt(lambda: r.set("k", "after")), admin.mget("k", "n")

    plain = plain_client(loading_server.url, retries=0)
    try:
        with loading_server.client() as server_admin:
            ours, theirs = both(
                scenario, plain=plain, server_admin=server_admin, url=loading_server.url,
                retries="0",
            )  # fmt: skip
    finally:
        plain.connection_pool.disconnect()
        reloader.close()
    expected = ("BusyLoadingError", "BusyLoadingError", True, [b"after", None])
    assert theirs == expected
    assert ours == expected


@pytest.mark.parametrize("password", [None, "ownership-pw-4471"], ids=["no-password", "password"])
def test_d6_wrong_auth_keeps_its_type(
    both: Any, redis_server_factory: Any, password: str | None
) -> None:
    """``AUTH`` with a wrong password raises ``AuthenticationError`` (``-WRONGPASS``, or
    "no password is set"), never ``CommandMayHaveBeenApplied``; the next command works."""
    server: RedisServer = redis_server_factory(password)

    def scenario(ctx: Ctx) -> Any:
        r = ctx.redis
        r.set("k", "v")
        return attempt(lambda: r.auth("not-the-password")), attempt(lambda: r.get("k"))

    plain = plain_client(server.url)
    try:
        with server.client() as server_admin:
            ours, theirs = both(scenario, plain=plain, server_admin=server_admin, url=server.url)
    finally:
        plain.connection_pool.disconnect()
    expected = ("AuthenticationError", b"v")
    assert theirs == expected
    assert ours == expected


# ---------------------------------------------------------------- 7. closed while idle

WRITES: dict[str, Callable[[Any], Any]] = {
    "set": lambda r: r.set("k", "v"),
    "incr": lambda r: r.incr("n"),
    "multi-exec": lambda r: r.pipeline().set("k", "v").incr("n").execute(),
}


@pytest.mark.parametrize("retries", ["0", "3"])
@pytest.mark.parametrize("request_connection", ["true", "false"])
@pytest.mark.parametrize("write", list(WRITES))
def test_d7_write_after_idle_kill_goes_on_fresh_conn(
    both: Any, write: str, request_connection: str, retries: str
) -> None:
    """The server closed the connection between two commands of a request (CLIENT
    KILL): the write goes on a fresh connection and is applied once, as redis-py's pool
    checkout does (with 0 retries too), and as the add-on with
    ``request_connection = false`` does."""

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        kill(admin, r.client_id())
        return attempt(lambda: WRITES[write](r)), admin.mget("k", "n")

    ours, theirs = both(scenario, request_connection=request_connection, retries=retries)
    expected = {
        "set": (True, [b"v", None]),
        "incr": (1, [None, b"1"]),
        "multi-exec": ((True, 1), [b"v", b"1"]),
    }[write]
    assert theirs == expected
    assert ours == expected


# ---------------------------------------------------------------- 8. asyncio per request


def _named(admin: redis.Redis, name: str) -> int:
    return sum(client.get("name") == name for client in admin.client_list())


def test_d8_asyncio_run_per_request_leaves_no_connection(
    make_app: Any, redis_url: str, admin: redis.Redis
) -> None:
    """A hundred requests each doing ``asyncio.run(...)`` with ``get_async_redis`` and
    not closing it leave no server connection behind once their loops are closed (and
    collected), as plain ``redis.asyncio`` clients made in each loop do."""

    def view(request: Any) -> str:
        async def use() -> Any:
            return await get_async_redis(request.registry).incr("ours")

        return str(asyncio.run(use()))

    app = make_app({"/": view}, **app_settings(client_name="own-d8-ours"))
    for _ in range(100):
        app.get("/")

    async def plain_use() -> Any:
        client = redis.asyncio.Redis.from_url(redis_url, client_name="own-d8-plain")
        return await client.incr("theirs")

    for _ in range(100):
        asyncio.run(plain_use())
    gc.collect()
    theirs_gone = wait_for(lambda: _named(admin, "own-d8-plain") == 0)
    ours_gone = wait_for(lambda: gc.collect() is not None and _named(admin, "own-d8-ours") == 0)
    assert admin.mget("ours", "theirs") == [b"100", b"100"]
    assert theirs_gone, _named(admin, "own-d8-plain")
    assert ours_gone, f"{_named(admin, 'own-d8-ours')} connections left by 100 requests"


# ---------------------------------------------------------------- issue 25: the request connection


def test_i25_watch_connection_not_lent_to_waiting_request(
    make_app: Any, admin: redis.Redis
) -> None:
    """Request A holds a WATCH pipeline and runs a plain command while request B waits
    for a connection: A may give B a connection, never the watching one. B's MULTI/EXEC
    then leaves A's WATCH in force (A's transaction sees the concurrent change)."""
    a_ready, a_go, b_done = threading.Event(), threading.Event(), threading.Event()
    found: dict[str, Any] = {}

    def view_a(request: Any) -> str:
        r = request.redis
        watching = r.pipeline()
        watching.watch("a")
        found["watch_id"] = watching.client_id()
        r.get("x")
        a_ready.set()
        a_go.wait(10)
        r.get("x")  # B waits: the request may give back its own connection now
        b_done.wait(1)  # B runs, if it got a connection
        admin.set("a", "concurrent")
        watching.multi()
        watching.set("a", "A")
        found["a"] = attempt(watching.execute)
        found["b_ran_during_watch"] = b_done.is_set()
        return "a"

    def view_b(request: Any) -> str:
        found["b_id"], _ = request.redis.pipeline().client_id().incr("b").execute()
        b_done.set()
        return "b"

    app = make_app({"/a": view_a, "/b": view_b}, **app_settings(pool_timeout="10"))
    pool = get_redis(app.app.registry).connection_pool
    thread_a = threading.Thread(target=lambda: app.get("/a"))
    thread_a.start()
    held: list[Any] = []
    thread_b = threading.Thread(target=lambda: app.get("/b"))
    try:
        assert a_ready.wait(10)
        figures = pool_figures(pool)
        held = [pool.get_connection() for _ in range(figures.max - figures.in_use)]
        thread_b.start()
        assert wait_for(lambda: pool.pool.waiting)  # B waits for a connection
        a_go.set()
        thread_a.join(15)
    finally:
        a_go.set()
        for connection in held:
            pool.release(connection)
        thread_a.join(15)
        if thread_b.is_alive() or thread_b.ident:
            thread_b.join(15)
    assert found["a"] == "WatchError"
    assert admin.get("a") == b"concurrent"
    assert admin.get("b") == b"1"
    if found["b_ran_during_watch"]:
        assert found["b_id"] != found["watch_id"]
    assert pool_figures(pool).in_use == 0


@pytest.mark.parametrize("client_cache", ["false", "true"])
def test_i25_script_request_gives_back_at_closer(make_app: Any, client_cache: str) -> None:
    """A script's request (``pyramid.scripting.prepare``) gives every connection back at
    ``closer()``: its own and a WATCH pipeline's it still references; with the client
    cache too (whose copies start their accounting at the first command)."""
    app = make_app(**app_settings(client_cache=client_cache))
    pool = get_redis(app.app.registry).connection_pool
    env = prepare(registry=app.app.registry)
    r = env["request"].redis
    r.set("k", "v")
    watching = r.pipeline()
    watching.watch("k")
    assert pool_figures(pool).in_use >= 1
    env["closer"]()  # Pyramid 2 runs the request's finished callbacks here
    if env["request"].finished_callbacks:  # Pyramid 1.10's closer does not: the script does
        env["request"]._process_finished_callbacks()
    assert pool_figures(pool).in_use == 0
    assert watching is not None  # kept alive until here: its __del__ gave nothing back


@pytest.mark.parametrize("how", ["with-block", "left-open"])
def test_i25_monitor_connection_disconnected_before_reuse(
    both: Any, make_app: Any, redis_url: str, how: str
) -> None:
    """A connection used for MONITOR is disconnected before it goes back to the pool:
    the next request's commands on the pool's only connection work."""
    kept: list[Any] = []

    def monitor(r: Any) -> None:
        if how == "with-block":
            with r.monitor() as mon:
                kept.append(mon)
        else:
            mon = r.monitor()
            mon.__enter__()  # MONITOR sent; the view returns without closing it
            kept.append(mon)

    app = make_app(
        {
            "/monitor": lambda request: monitor(request.redis) or "ok",
            "/use": lambda request: repr(
                (
                    attempt(lambda: request.redis.set("k", "v")),
                    attempt(lambda: request.redis.get("k")),
                )
            ),
        },
        **app_settings(max_connections="1"),
    )
    app.get("/monitor")
    ours = app.get("/use").text
    plain = plain_client(redis_url, max_connections=1)
    try:
        monitor(plain)
        if how == "left-open":
            kept[-1].__exit__()  # what a request's end does with what the view left open
        theirs = repr((attempt(lambda: plain.set("k", "v")), attempt(lambda: plain.get("k"))))
    finally:
        plain.connection_pool.disconnect()
    assert theirs == repr((True, b"v"))
    assert ours == repr((True, b"v"))


@pytest.mark.parametrize("transaction", [False, True])
def test_i25_worker_thread_pipelines_own_their_socket(both: Any, transaction: bool) -> None:
    """A worker thread's pipelines never use the request's socket: 300 pipelines in the
    thread and 300 GETs in the view at once each get their own replies."""

    def scenario(ctx: Ctx) -> Any:
        r = ctx.redis
        r.set("main", "m")
        r.set("worker", "w")
        main_id = r.client_id()
        seen: dict[str, Any] = {}

        def worker() -> None:
            replies = set()
            for _ in range(300):
                pipe = r.pipeline(transaction=transaction)
                replies.add(outcome(pipe.get("worker").execute()))
            seen["worker"] = replies
            (seen["worker_id"],) = r.pipeline(transaction=transaction).client_id().execute()

        thread = threading.Thread(target=worker)
        thread.start()
        mine = {attempt(lambda: r.get("main")) for _ in range(300)}
        thread.join()
        return mine, seen.get("worker"), seen.get("worker_id") != main_id

    ours, theirs = both(scenario)
    assert theirs[:2] == ({b"m"}, {(b"w",)})  # plain redis-py: the ids may repeat
    assert ours == ({b"m"}, {(b"w",)}, True)  # the request's connection is the view's


def test_i25_reset_of_watching_pipeline_unwatches(both: Any) -> None:
    """``reset()`` of a watching pipeline sends UNWATCH: a later MULTI/EXEC on that
    connection (the pool's only one) commits though the watched key changed."""

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        watching = r.pipeline()
        watching.watch("a")
        watching.reset()
        admin.set("a", "concurrent")
        return attempt(lambda: r.pipeline().set("b", "1").execute()), admin.get("b")

    ours, theirs = both(scenario, max_connections="1")
    assert theirs == ((True,), b"1")
    assert ours == ((True,), b"1")


@pytest.fixture
def cutting_proxy(redis_server: RedisServer) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(redis_server.port)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("name", ["get", "GET", "Get"])
def test_i25_lower_case_read_is_retried(both: Any, cutting_proxy: CuttingProxy, name: str) -> None:
    """A read named in any case is retried after its connection was lost once sent: the
    proxy cuts the connection on receiving it; the value comes back, no
    ``CommandMayHaveBeenApplied``."""
    url = f"redis://127.0.0.1:{cutting_proxy.port}/0"

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        admin.set("k", "v")
        r.ping()
        cutting_proxy.cut_next(b"GET")
        return attempt(lambda: r.execute_command(name, "k"))

    plain = plain_client(url)
    try:
        ours, theirs = both(scenario, plain=plain, url=url)
    finally:
        plain.connection_pool.disconnect()
    assert cutting_proxy.cuts == 2
    assert theirs == b"v"
    assert ours == b"v"


@pytest.mark.parametrize("command", list(IMMEDIATE))
def test_d2_the_lost_watch_says_what_happened(
    make_app: Any, admin: redis.Redis, command: str
) -> None:
    """The ``WatchError`` of a watching pipeline whose connection the server closed says
    why (docs/reference/troubleshooting.rst lists both): a write finds the connection
    closed before it is sent, reconnects and says so; a read is sent, fails, and redis-py
    says so in its words."""

    def view(request: Any) -> str:
        watching = request.redis.pipeline()
        watching.watch("a")
        kill(admin, watching.client_id())
        try:
            IMMEDIATE[command](watching)
        except redis.WatchError as error:
            return str(error)
        finally:
            watching.reset()
        return "no error"

    assert make_app({"/": view}).get("/").text == (
        "A ConnectionError occurred while watching one or more keys"
        if command in ("get", "watch")
        else "The connection was lost and reconnected while watching one or more keys"
    )


@pytest.mark.parametrize("op", ["get", "set"])
@pytest.mark.parametrize("single", [False, True], ids=["request", "client()"])
def test_a_connection_closed_while_idle_is_replaced_without_retries(
    both: Any, op: str, single: bool
) -> None:
    """With ``redis.retries = 0``, the server closes the connection the request holds
    while it idles: the next command, a read or a write, runs on a new connection and
    answers, as plain redis-py's does (its pool checks a connection before lending it).
    A ``client()`` holds its connection as redis-py's does: a read fails there as in
    redis-py; a write is never sent on a connection known to be closed (redis-py sends
    it and fails)."""

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        admin.set("k", "v")

        def steps(client: Any) -> Any:
            kill(admin, client.client_id())
            return attempt(lambda: client.get("k") if op == "get" else client.set("k", "w"))

        if single:
            with r.client() as one:
                return steps(one), admin.get("k")
        return steps(r), admin.get("k")

    ours, theirs = both(scenario, retries="0")
    answered = (b"v", b"v") if op == "get" else (True, b"w")
    failed = ("ConnectionError", b"v")
    assert theirs == (failed if single else answered)
    assert ours == (failed if single and op == "get" else answered)


@pytest.mark.parametrize("queued", ["commands", "multi", "watch"])
def test_reset_forgets_what_was_queued(both: Any, queued: str) -> None:
    """``reset()`` before ``execute()`` drops what the pipeline held (queued commands, a
    MULTI, a WATCH): the next ``execute()`` sends nothing, as redis-py's. (While
    watching, before MULTI, the SET runs at once, as in redis-py.)"""

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        admin.set("k", "before")
        pipe = r.pipeline(transaction=queued == "multi")
        if queued == "watch":
            pipe.watch("k")
        elif queued == "multi":
            pipe.multi()
        pipe.set("k", "queued")
        pipe.reset()
        return attempt(pipe.execute), admin.get("k")

    ours, theirs = both(scenario)
    assert theirs == ((), b"queued" if queued == "watch" else b"before")
    assert ours == theirs


def test_a_reset_watch_leaves_no_trap_on_its_connection(both: Any) -> None:
    """A WATCH pipeline reset gives its connection back; when that connection is later
    reconnected for someone else (here a ``client()``, after the server closed it), that
    user's command answers: the pipeline's lost-WATCH check went with its reset."""

    def scenario(ctx: Ctx) -> Any:
        r, admin = ctx.redis, ctx.admin
        admin.set("k", "v")
        pipe = r.pipeline()
        pipe.watch("k")
        watched = pipe.client_id()
        pipe.reset()
        kill(admin, watched)
        with r.client() as one:
            return attempt(lambda: one.set("k", "w")), admin.get("k")

    ours, theirs = both(scenario)
    assert theirs == (True, b"w")
    assert ours == theirs


@pytest.mark.parametrize("client", ["request", "process"])
def test_a_watch_with_decode_responses_behaves_as_redis_py(
    both: Any, redis_url: str, client: str
) -> None:
    """A WATCH pipeline of ``request.redis``, and of ``get_redis(registry)`` (no request
    accounting: scripts, workers), with ``decode_responses``: a DUMP while watching comes
    back as bytes (its NEVER_DECODE option reaches redis-py), a read answers, a change by
    another client aborts the transaction and a second try commits; as redis-py does."""

    def scenario(ctx: Ctx) -> Any:
        r = ctx.redis
        if ctx.request is not None and client == "process":
            r = get_redis(ctx.request.registry)
        admin = ctx.admin
        admin.set("blob", b"\xff\xfe\x80")  # not UTF-8: decoding it would fail
        admin.set("k", "v")
        pipe = r.pipeline()
        pipe.watch("k", "blob")
        dumped = attempt(lambda: pipe.dump("blob"))
        seen = attempt(lambda: pipe.get("k"))
        admin.set("k", "theirs")
        pipe.multi()
        pipe.set("k", "mine")
        lost = attempt(pipe.execute)
        pipe.watch("k")
        pipe.multi()
        pipe.set("k", "mine")
        done = attempt(pipe.execute)
        pipe.reset()
        return type(dumped).__name__, seen, lost, done, admin.get("k")

    ours, theirs = both(
        scenario, decode_responses="true", plain=plain_client(redis_url, decode_responses=True)
    )
    assert theirs == ("bytes", "v", "WatchError", (True,), b"mine")
    assert ours == theirs
