"""Connections come back whatever the view did; dead, stalled and forked servers."""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import webtest
from pyramid.interfaces import ITweens
from pyramid.scripting import prepare

from pyramid_redisx import get_redis
from pyramid_redisx.pools import pool_figures, worst_case_seconds
from pyramid_redisx.request import client_set
from tests.conftest import build_app, pools_of


def in_use(app: webtest.TestApp) -> int:
    return pool_figures(pools_of(app)["default"]).in_use


# ------------------------------------------------------------------- leaks
def test_view_that_raised_returns_its_connection(make_app: Any) -> None:
    def view(request: Any) -> str:
        request.redis.incr("n")
        raise ValueError("boom")

    app = make_app({"/": view})
    for _ in range(3):
        with pytest.raises(ValueError):
            app.get("/")
    assert in_use(app) == 0


# What a view leaves alive at the end of the request, kept alive by the test: only the
# add-on's cleanup can give its connection back (CPython's refcounting would return a
# dropped object's connection by itself, and the test would pass without the code).
kept: list[Any] = []


@pytest.fixture(autouse=True)
def _forget_kept() -> Iterator[None]:
    yield
    kept.clear()


@pytest.mark.parametrize("request_connection", ["true", "false"])
def test_abandoned_watch_pipeline_is_released(make_app: Any, request_connection: str) -> None:
    def view(request: Any) -> str:
        pipe = request.redis.pipeline()
        pipe.watch("k")  # immediate mode: this pipeline now holds a connection
        pipe.get("k")
        kept.append(pipe)
        return str(pool_figures(request.redis.connection_pool).in_use)

    app = make_app({"/": view}, max_connections="2", request_connection=request_connection)
    assert [app.get("/").text for _ in range(4)] == ["1"] * 4  # held during, back after
    assert in_use(app) == 0
    assert [(pipe.connection, pipe.watching) for pipe in kept] == [(None, False)] * 4


def test_open_pubsub_is_closed_at_request_end(make_app: Any, redis_server: Any) -> None:
    def view(request: Any) -> str:
        pubsub = request.redis.pubsub()
        pubsub.subscribe("news")
        pubsub.get_message(timeout=1)
        kept.append(pubsub)
        return "subscribed"

    app = make_app({"/": view})
    with redis_server.client() as admin:
        app.get("/")
        app.get("/")
        assert admin.client_list(_type="pubsub") == []
    assert in_use(app) == 0
    assert [pubsub.connection for pubsub in kept] == [None, None]


def test_monitor_and_single_connection_client_are_released(make_app: Any) -> None:
    def view(request: Any) -> str:
        kept.append(request.redis.monitor())
        single = request.redis.client()
        single.ping()
        kept.append(single)
        return "ok"

    app = make_app({"/": view})
    app.get("/")
    assert in_use(app) == 0
    assert [thing.connection for thing in kept] == [None, None]


def test_closed_monitor_is_not_released_twice(make_app: Any) -> None:
    """Monitor.__exit__ is not idempotent in redis-py: releasing it again at the end of
    the request made two later checkouts share one connection and lose a WATCH."""

    def view(request: Any) -> str:
        with request.redis.monitor() as monitor:
            request.redis.get("k")
            seen = [monitor.next_command()["command"]]  # HELLO, CLIENT SETINFO first
            while not seen[-1].startswith("GET") and len(seen) < 5:
                seen.append(monitor.next_command()["command"])
            assert seen[-1].startswith("GET"), seen
        return "ok"

    app = make_app({"/": view})
    client = get_redis(app.app.registry)
    # Another request holds a connection meanwhile: the pool's queue then has room for
    # a second release (when it is full of placeholders, redis-py drops it silently).
    other = client.connection_pool.get_connection()
    app.get("/")
    client.connection_pool.release(other)
    first = client.connection_pool.get_connection()
    second = client.connection_pool.get_connection()
    assert first is not second
    client.connection_pool.release(first)
    client.connection_pool.release(second)
    # Two concurrent WATCH transactions on the same key: the second to commit must fail.
    client.set("k", "0")
    one, two = client.pipeline(), client.pipeline()
    one.watch("k")
    two.watch("k")
    two.multi()
    two.set("k", "two")
    two.execute()
    one.multi()
    one.set("k", "one")
    with pytest.raises(redis.WatchError):
        one.execute()
    assert client.get("k") == b"two"


def test_dropped_watch_pipelines_are_released_by_redis_py(make_app: Any) -> None:
    """40 WATCH pipelines made and dropped in one view, on 32 connections."""

    def view(request: Any) -> str:
        for _ in range(40):
            pipe = request.redis.pipeline()
            pipe.watch("k")
            del pipe
        return str(pool_figures(request.redis.connection_pool).in_use)

    app = make_app({"/": view}, request_connection="false", pool_timeout="0.5")
    assert app.get("/").text == "0"
    assert in_use(app) == 0


def test_executed_pipelines_are_not_kept_alive(make_app: Any) -> None:
    def view(request: Any) -> str:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(20_000):
                pipe = request.redis.pipeline()
                pipe.get("k")
                pipe.execute()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        return str(grown)

    assert int(make_app({"/": view}).get("/").text) < 1_000_000  # ~10 MB when kept


def test_client_commands_are_counted(make_app: Any, all_logs: Any) -> None:
    def view(request: Any) -> str:
        request.redis.get("k")
        with request.redis.client() as single:
            single.ping()
            single.get("k")
        return "ok"

    make_app({"/": view}).get("/")
    (record,) = [r for r in all_logs.records if r.name == "pyramid_redisx.stats"]
    assert record.redis_commands == 3  # type: ignore[attr-defined]


def test_set_response_callback_is_per_request(make_app: Any, redis_server: Any) -> None:
    def custom(request: Any) -> str:
        request.redis.set_response_callback("GET", lambda response, **options: b"custom")
        return request.redis.get("k").decode()

    app = make_app({"/custom": custom, "/plain": lambda request: request.redis.get("k").decode()})
    get_redis(app.app.registry).set("k", "v")
    assert app.get("/custom").text == "custom"
    assert app.get("/plain").text == "v"
    assert get_redis(app.app.registry).get("k") == b"v"


def test_held_connections_released_without_the_tween(redis_server: Any) -> None:
    """An explicit pyramid.tweens list leaves our tween out: a view that raised with a
    pubsub and a WATCH pipeline open still gives both back (the finished callback)."""

    def view(request: Any) -> str:
        pubsub = request.redis.pubsub()
        pubsub.subscribe("news")
        pipe = request.redis.pipeline()
        pipe.watch("k")
        kept.extend((pubsub, pipe))
        raise KeyError("raised")

    settings = {"redis.url": redis_server.url,
                "pyramid.tweens": "pyramid.tweens.excview_tween_factory"}  # fmt: skip
    app = build_app(settings, {"/": view})
    try:
        tweens = app.app.registry.queryUtility(ITweens)
        assert [name for name, _ in tweens.explicit] == ["pyramid.tweens.excview_tween_factory"]
        for _ in range(3):
            with pytest.raises(KeyError):
                app.get("/")
        assert in_use(app) == 0
        with redis_server.client() as admin:
            assert admin.client_list(_type="pubsub") == []
    finally:
        client_set(app.app.registry).close()


def test_script_request_gives_back_held_connections_when_closed(make_app: Any) -> None:
    """A request made by a script (pshell, prepare()) sees no tween and no NewResponse."""
    app = make_app()
    env = prepare(registry=app.app.registry)
    try:
        client = get_redis(env["request"])
        pubsub = client.pubsub()
        pubsub.subscribe("news")
        client.get("k")  # the request's own connection
        assert in_use(app) == 2
    finally:
        env["closer"]()  # Pyramid 2 runs the request's finished callbacks here
    request = env["request"]
    if request.finished_callbacks:  # Pyramid 1.10's closer does not: the script does
        request._process_finished_callbacks()
    assert in_use(app) == 0


def test_many_mixed_requests_leave_nothing_in_use(make_app: Any, redis_server: Any) -> None:
    def leaky(request: Any) -> str:
        kind = request.params["kind"]
        if kind == "pipe":
            request.redis.pipeline().watch("x")
        elif kind == "pubsub":
            request.redis.pubsub().subscribe("c")
        elif kind == "raise":
            request.redis.get("x")
            raise KeyError("raised")
        else:
            request.redis.get("x")
        return kind

    app = make_app({"/": leaky}, max_connections="4")
    with redis_server.client() as admin:
        others = {client["id"] for client in admin.client_list()}  # of earlier tests
    for i in range(400):
        kind = ("pipe", "pubsub", "raise", "get")[i % 4]
        if kind == "raise":
            with pytest.raises(KeyError):
                app.get("/", params={"kind": kind})
        else:
            app.get("/", params={"kind": kind})
    assert in_use(app) == 0
    with redis_server.client() as admin:
        ours = [client for client in admin.client_list() if client["id"] not in others]
        assert len(ours) <= 4 + 1  # the pool's connections + this one


# ------------------------------------------------------------- dead server
FAST = {
    "redis.socket_timeout": "0.3",
    "redis.socket_connect_timeout": "0.3",
    "redis.retries": "1",
    "redis.retry_backoff_cap": "0.05",
    "redis.startup_check_timeout": "0.5",
}


def incr_view(request: Any) -> str:
    return str(request.redis.incr("n"))


def timed_get(app: webtest.TestApp) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        app.get("/")
        error = None
    except redis.RedisError as exc:
        error = exc
    return time.monotonic() - started, error


@pytest.mark.slow
def test_server_killed_then_restarted_on_the_same_port(redis_server_factory: Any) -> None:
    server = redis_server_factory()
    app = build_app({"redis.url": server.url, **FAST}, {"/": incr_view})
    # by hand from FAST (retries 1): 0.3 read + 0.3 connect + 3 pauses of 16 ms; no pool wait
    bound = 0.3 + 0.3 + 3 * 0.016
    assert app.get("/").text == "1"
    server.stop()
    for _ in range(3):
        elapsed, error = timed_get(app)
        assert isinstance(error, redis.ConnectionError), error
        assert elapsed < bound, (elapsed, bound)
    server.start()  # same port, empty keyspace
    assert app.get("/").text == "1"  # no app rebuild needed
    assert in_use(app) == 0


@pytest.mark.slow
def test_stalled_server_times_out_then_recovers(redis_server_factory: Any) -> None:
    server = redis_server_factory()
    app = build_app({"redis.url": server.url, **FAST}, {"/": incr_view})
    assert app.get("/").text == "1"
    server.pause()
    try:
        elapsed, error = timed_get(app)
        assert isinstance(error, redis.TimeoutError), error
        assert 0.25 < elapsed < 0.3 + 0.3 + 0.5  # socket_timeout (+ one reconnect), no retry
    finally:
        server.resume()
    assert app.get("/").text in ("2", "3")  # INCR may or may not have landed before the stall
    assert in_use(app) == 0


# Bounds worked out by hand from FAST with retries 2 (socket and connect timeouts 0.3 s,
# backoff pauses of 16 and 32 ms, so 0.048 s per retried call), the pool wait excluded:
# - no timeout retry: one read timeout + one connect timeout + 4 × 0.048 = 0.792 s;
# - timeout retries: 3 attempts × (0.3 read + 3 × 0.3 connect + 0.048) + 0.048 = 3.792 s.
@pytest.mark.slow
@pytest.mark.parametrize(("retry_on_timeout", "bound"), [("false", 0.792), ("true", 3.792)])
def test_worst_case_formula_holds(
    silent_listener: int, retry_on_timeout: str, bound: float
) -> None:
    settings = {
        "redis.url": f"redis://127.0.0.1:{silent_listener}/0",
        "redis.startup_check": "false",
        **FAST,
        "redis.retries": "2",
        "redis.retry_on_timeout": retry_on_timeout,
    }
    app = build_app(settings, {"/": incr_view})
    options = client_set(app.app.registry).options["default"]
    elapsed, error = timed_get(app)
    assert isinstance(error, redis.TimeoutError), error
    print(f"elapsed {elapsed:.2f}s, bound {bound:.3f}s")
    assert options.socket_timeout * 0.9 < elapsed <= bound
    assert worst_case_seconds(options) - options.pool_timeout == pytest.approx(
        bound
    )  # the docs' formula


# ------------------------------------------------------------------- fork
def _fork_reporting(work: Callable[[], set[int]]) -> tuple[int, int]:
    """Fork; the child runs ``work`` and writes the connection ids it returns to a pipe,
    then exits. Returns the child's pid and the pipe's read end."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.write(write_end, ",".join(map(str, sorted(work()))).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    return pid, read_end


def _reported_ids(pid: int, read_end: int) -> set[int]:
    """The ids a child of ``_fork_reporting`` wrote; waits for it to exit."""
    with os.fdopen(read_end) as pipe:
        ids = {int(x) for x in pipe.read().split(",") if x}
    os.waitpid(pid, 0)
    return ids


@pytest.mark.parametrize("blocking", ["true", "false"])
def test_forked_children_never_share_the_parents_socket(make_app: Any, blocking: str) -> None:
    """gunicorn --preload: the app is built (and used) in the parent, then forked; with
    the blocking pool and redis-py's plain one (``redis.blocking = false``)."""
    app = make_app({"/": lambda request: request.redis.client_id()}, blocking=blocking)
    parent_id = int(app.get("/").text)
    # each child uses the inherited app and reports its connection ids
    children = [_fork_reporting(lambda: {int(app.get("/").text) for _ in range(20)})
                for _ in range(2)]  # fmt: skip
    child_ids = [_reported_ids(*child) for child in children]
    assert all(len(ids) == 1 for ids in child_ids), child_ids  # each child reuses its own
    first, second = (ids.pop() for ids in child_ids)
    assert len({parent_id, first, second}) == 3
    assert int(app.get("/").text) == parent_id  # the parent's connection is untouched
    assert get_redis(app.app.registry).ping()


def test_a_parents_connection_given_back_in_a_child_is_never_used_there(make_app: Any) -> None:
    """The child's first pool call gives back a connection the parent had checked out
    (a pipeline or pubsub dropped in the child does that): ``release`` reads no pid
    (a system call), so it lands in the queue the fork left behind, which the child's
    first checkout replaces. The child talks on a socket of its own; the parent's
    connection still works in the parent."""
    app = make_app({"/": lambda request: request.redis.client_id()})
    pool = get_redis(app.app.registry).connection_pool
    held = pool.get_connection()
    held.send_command("CLIENT", "ID")
    parent_id = held.read_response()

    def in_child() -> set[int]:
        pool.release(held)
        return {int(app.get("/").text) for _ in range(5)}

    child_ids = _reported_ids(*_fork_reporting(in_child))
    assert len(child_ids) == 1 and parent_id not in child_ids, (parent_id, child_ids)
    held.send_command("CLIENT", "ID")
    assert held.read_response() == parent_id  # the child never wrote on it
    pool.release(held)
    assert int(app.get("/").text) == parent_id
