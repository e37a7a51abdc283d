"""request.redis, get_redis, named clients and pool sharing, against a real server."""

from __future__ import annotations

import gc
import logging
import re
import sys
import threading
import time
from typing import Any

import pytest
import redis
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationConflictError, ConfigurationExecutionError
from pyramid.request import Request

from pyramid_redisx import RedisSettingsError, get_redis
from pyramid_redisx.pools import PoolFigures, pool_figures
from pyramid_redisx.request import client_set
from tests.conftest import pools_of


def _client_count(server_client: redis.Redis) -> int:
    return len(server_client.client_list())


def test_request_redis_is_reified_and_get_redis_returns_it(make_app: Any) -> None:
    seen: dict[str, Any] = {}

    def view(request: Any) -> str:
        seen["first"] = request.redis
        seen["second"] = request.redis
        seen["get_redis"] = get_redis(request)
        seen["registry"] = get_redis(request.registry)
        return "ok"

    make_app({"/": view}).get("/")
    assert seen["first"] is seen["second"] is seen["get_redis"]
    assert isinstance(seen["first"], redis.Redis)
    # the process-wide client is a different object on the same pool
    assert seen["registry"] is not seen["first"]
    assert seen["registry"].connection_pool is seen["first"].connection_pool


def test_request_redis_opens_no_connection_by_itself(make_app: Any, redis_server: Any) -> None:
    app = make_app({"/": lambda request: repr(type(request.redis))})
    with redis_server.client() as admin:
        before = _client_count(admin)
        app.get("/")
        app.get("/")
        assert _client_count(admin) == before
    figures = pool_figures(pools_of(app)["default"])
    assert (figures.in_use, figures.idle) == (0, 0)


def test_counter_and_connection_reuse(make_app: Any, redis_server: Any) -> None:
    app = make_app({"/": lambda request: request.redis.incr("hits")})
    assert [app.get("/").text for _ in range(5)] == ["1", "2", "3", "4", "5"]
    figures = pool_figures(pools_of(app)["default"])
    assert (figures.in_use, figures.idle, figures.max) == (0, 1, 32)


def test_named_clients_fall_back_and_use_their_own_db(make_app: Any, redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]

    def view(request: Any) -> str:
        request.redis.set("where", "default")
        get_redis(request, "cache").set("where", "cache")
        return "ok"

    app = make_app(
        {"/": view}, clients="cache queue", max_connections="7", **{"cache.url": f"{base}/3"}
    )
    app.get("/")
    clients = client_set(app.app.registry)
    assert clients.options["cache"].db == 3
    assert clients.options["cache"].max_connections == 7  # from redis.max_connections
    assert clients.options["queue"].db == 0
    with redis.Redis.from_url(f"{base}/3") as db3, redis.Redis.from_url(f"{base}/0") as db0:
        assert db3.get("where") == b"cache"
        assert db0.get("where") == b"default"


def test_identical_options_share_a_pool_different_never(make_app: Any) -> None:
    app = make_app(
        clients="same other slow",
        **{"other.max_connections": "5", "slow.socket_timeout": "30 seconds"},
    )
    pools = pools_of(app)
    assert pools["same"] is pools["default"]
    assert pools["other"] is not pools["default"]
    assert pools["slow"] is not pools["default"]
    # same URL, different options: never shared
    assert pools["slow"].connection_kwargs["socket_timeout"] == 30.0


def test_unknown_client_name_is_a_clear_error(make_app: Any) -> None:
    errors: list[str] = []

    def view(request: Any) -> str:
        try:
            get_redis(request, "nope")
        except LookupError as exc:
            errors.append(str(exc))
        return "ok"

    make_app({"/": view}).get("/")
    make_app({"/": view}, clients="cache jobs").get("/")
    assert errors == [
        "no Redis client named 'nope'; declared: default",
        "no Redis client named 'nope'; declared: default, cache, jobs",
    ]


def test_get_redis_without_include_says_what_to_do() -> None:
    config = Configurator()
    with pytest.raises(RuntimeError, match=r'config.include\("pyramid_redisx"\)'):
        get_redis(config.registry)
    request = Request.blank("/")  # a request's path: the same error, not AttributeError
    request.registry = config.registry
    for name in ("default", "jobs"):
        with pytest.raises(RuntimeError, match=r'config.include\("pyramid_redisx"\)'):
            get_redis(request, name)


def test_directive_declares_a_client_with_python_values(make_app: Any) -> None:
    def setup(config: Configurator) -> None:
        config.add_redis_client("jobs", max_connections=3, socket_timeout="250ms", blocking=False)

    app = make_app({"/": lambda request: get_redis(request, "jobs").ping()}, setup=setup)
    assert app.get("/").text == "True"
    options = client_set(app.app.registry).options["jobs"]
    assert (options.max_connections, options.socket_timeout, options.blocking) == (3, 0.25, False)
    assert type(pools_of(app)["jobs"]).__mro__[1] is not redis.BlockingConnectionPool
    assert not isinstance(pools_of(app)["jobs"], redis.BlockingConnectionPool)
    introspector = app.app.registry.introspector
    shown = introspector.get("redis clients", "jobs")
    assert shown["options"]["max_connections"] == 3


def test_directive_conflicts_with_ini_client(redis_url: str) -> None:
    config = Configurator(settings={"redis.url": redis_url, "redis.clients": "cache"})
    config.include("pyramid_redisx")
    with pytest.raises(ConfigurationConflictError) as raised:
        config.add_redis_client("cache", max_connections=2)
    said = str(raised.value).splitlines()
    assert said[1:3] == [
        "  For: ('pyramid_redisx.client', 'cache')",
        "    redis.clients in the settings",
    ]
    assert said[3].startswith("    Line ") and "test_request.py" in said[3]  # the directive's call


def test_directive_twice_is_a_conflict(redis_url: str) -> None:
    config = Configurator(settings={"redis.url": redis_url})
    config.include("pyramid_redisx")
    config.add_redis_client("jobs")
    with pytest.raises(ConfigurationConflictError) as raised:
        config.add_redis_client("jobs", max_connections=2)
    said = str(raised.value).splitlines()
    assert said[1] == "  For: ('pyramid_redisx.client', 'jobs')"
    assert len(re.findall(r"Line \d+ of file \S*test_request\.py", str(raised.value))) == 2
    with pytest.raises(ConfigurationConflictError) as raised:
        config.add_redis_client("default")
    said = str(raised.value).splitlines()
    assert said[1:3] == [
        "  For: ('pyramid_redisx.client', 'default')",
        "    config.include('pyramid_redisx')",
    ]


def test_blocking_pool_waits_under_a_burst(make_app: Any) -> None:
    """32 threads on 4 connections: every request succeeds, none 'Too many connections'."""
    app = make_app({"/": lambda request: request.redis.execute_command("DEBUG", "SLEEP", "0.005")
                    and request.redis.incr("n")}, max_connections="4")  # fmt: skip
    failures: list[BaseException] = []

    def worker() -> None:
        for _ in range(5):
            try:
                app.get("/")
            except BaseException as exc:  # noqa: BLE001 - collected and asserted
                failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with redis.Redis.from_url(app.app.registry.settings["redis.url"]) as admin:
        assert int(admin.get("n")) == 160
    figures = pool_figures(pools_of(app)["default"])
    assert figures.in_use == 0 and figures.idle <= 4


@pytest.mark.parametrize("blocking", ["true", "false"])
def test_connection_count_is_redis_pys_own(make_app: Any, blocking: str) -> None:
    """Our pools answer get_connection_count() faster; the answer is redis-py's, idle,
    busy and after a fork-style reset, for both pool classes."""
    app = make_app(blocking=blocking, max_connections="5")
    pool = pools_of(app)["default"]
    base = type(pool).__mro__[2]  # redis-py's class, after ours and the mixin
    assert base in (redis.BlockingConnectionPool, redis.ConnectionPool)

    def both() -> tuple[Any, Any]:
        return pool.get_connection_count(), base.get_connection_count(pool)

    ours, theirs = both()
    assert ours == theirs and [n for n, _ in ours] == [0, 0]
    held = [pool.get_connection() for _ in range(4)]
    pool.release(held.pop())
    ours, theirs = both()
    assert ours == theirs and [n for n, _ in ours] == [1, 3]
    assert pool_figures(pool) == PoolFigures(in_use=3, idle=1, max=5)
    ours[0][1]["mutated"] = True  # a caller may change what it got: not our copy
    assert pool.get_connection_count() == base.get_connection_count(pool)
    for connection in held:
        pool.release(connection)
    assert both()[0] == both()[1] and [n for n, _ in both()[0]] == [4, 0]
    pool.reset()
    assert both()[0] == both()[1] and [n for n, _ in both()[0]] == [0, 0]


def test_non_blocking_pool_fails_fast_when_full(make_app: Any) -> None:
    """redis.blocking = false gives redis-py's plain pool: 'Too many connections'."""
    app = make_app(blocking="false", max_connections="1")
    pool = pools_of(app)["default"]
    assert not isinstance(pool, redis.BlockingConnectionPool)
    held = pool.get_connection()
    try:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.MaxConnectionsError):
            get_redis(app.app.registry).ping()
        assert time.monotonic() - started < 0.5
    finally:
        pool.release(held)


def test_blocking_pool_timeout_is_a_clear_error(make_app: Any) -> None:
    app = make_app(max_connections="1", pool_timeout="200ms")
    pool = pools_of(app)["default"]
    assert isinstance(pool, redis.BlockingConnectionPool)
    held = pool.get_connection()
    try:
        started = time.monotonic()
        message = (
            "redis client default: no free connection within 0.2 s (max_connections 1, all in use)"
        )
        with pytest.raises(redis.ConnectionError, match=re.escape(message)):
            get_redis(app.app.registry).ping()
        assert 0.15 < time.monotonic() - started < 1.0
    finally:
        pool.release(held)


def test_a_shared_pool_timeout_names_every_client_on_it(make_app: Any) -> None:
    """Two clients with equal options share one pool: its timeout names both."""
    app = make_app(
        clients="other", max_connections="1", pool_timeout="200ms",
        **{"other.max_connections": "1", "other.pool_timeout": "200ms"},
    )  # fmt: skip
    pools = pools_of(app)
    assert pools["default"] is pools["other"]
    held = pools["other"].get_connection()
    try:
        message = "redis client default, other: no free connection within 0.2 s"
        with pytest.raises(redis.ConnectionError, match=re.escape(message)):
            get_redis(app.app.registry, "other").ping()
    finally:
        pools["other"].release(held)


def test_instrumentation_on_redis_execute_command_sees_each_command_once(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What opentelemetry-instrumentation-redis does: wrap Redis.execute_command."""
    seen: list[Any] = []
    original = redis.Redis.execute_command

    def wrapper(self: Any, *args: Any, **options: Any) -> Any:
        seen.append(args[0])
        return original(self, *args, **options)

    app = make_app({"/": lambda request: request.redis.set("a", 1) and request.redis.get("a")})
    monkeypatch.setattr(redis.Redis, "execute_command", wrapper)
    assert app.get("/").text == "b'1'"
    assert seen == ["SET", "GET"]


def test_repr_names_the_client_class_and_its_pool(make_app: Any) -> None:
    """``repr(request.redis)``: the client's class and its pool (whose repr shows host,
    port and db, never a password), as redis-py's shows them."""

    def view(request: Any) -> str:
        client = request.redis
        expected = f"<{type(client).__name__}({client.connection_pool!r})>"
        return str(repr(client) == expected and "port=" in repr(client))

    assert make_app({"/": view}, password="s3cret-pw").get("/").text == "True"


def test_get_redis_before_the_commit_says_when_clients_exist(redis_url: str) -> None:
    """Asked for while the app is being configured, the client does not exist yet: the
    error says when it will (at the commit), not that nothing was declared."""
    config = Configurator(settings={"redis.url": redis_url})
    config.include("pyramid_redisx")
    with pytest.raises(LookupError) as info:
        get_redis(config.registry)
    assert str(info.value) == (
        "no Redis client named 'default' yet: clients are made when the configuration "
        "is committed (config.commit() or make_wsgi_app())"
    )
    config.commit()
    assert get_redis(config.registry).ping() is True
    client_set(config.registry).close()


def test_request_copies_are_collected_without_an_error(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's copy of the client gives back what it holds when collected
    (``__del__``); a copy that ran nothing, or whose request ended normally, raises
    nothing there (an error in ``__del__`` is only printed, as "Exception ignored")."""
    raised: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    app = make_app({"/read": lambda request: repr(request.redis),
                    "/get": lambda request: str(request.redis.get("k"))})  # fmt: skip
    for path in ("/read", "/get", "/read"):
        app.get(path)
    gc.collect()
    assert [str(u.exc_value) for u in raised] == []


def test_a_monitor_that_found_no_server_raises_once(
    make_app: Any, redis_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``monitor()`` on a stopped server raises the connection error to the caller, and
    the half-made monitor, when collected, raises nothing more."""
    raised: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    server = redis_server_factory()

    def view(request: Any) -> str:
        try:
            request.redis.monitor()
        except redis.ConnectionError as error:
            return type(error).__name__
        return "no error"

    app = make_app({"/": view}, url=server.url, retries="0", startup_check="false")
    server.stop()
    assert app.get("/").text == "ConnectionError"
    gc.collect()
    assert [str(u.exc_value) for u in raised] == []


def test_a_copy_that_outlives_its_collected_request_still_answers(make_app: Any) -> None:
    """``request.redis`` kept after its request ended and was collected (a background
    job's reference): its commands still answer, each on a pool connection given back."""
    kept: list[Any] = []

    def view(request: Any) -> str:
        kept.append(request.redis)
        return "ok"

    app = make_app({"/": view})
    app.get("/")
    gc.collect()
    client = kept[0]
    assert client.set("k", "v") is True
    assert client.get("k") == b"v"
    assert pool_figures(get_redis(app.app.registry).connection_pool).in_use == 0


def test_a_copy_used_after_its_request_ended_keeps_no_connection(make_app: Any) -> None:
    """``request.redis`` used by the view, kept with its request past the response (a
    background job holding both), and used again, then a client the request had not
    used: each later command takes a pool connection and gives it back; the ended
    request holds none."""
    kept: list[Any] = []

    def view(request: Any) -> str:
        request.redis.get("k")
        kept.append((request, request.redis))
        return "ok"

    app = make_app({"/": view}, clients="cache", **{"cache.max_connections": "9"})
    app.get("/")
    request, client = kept[0]
    assert client.set("k", "v") is True
    assert client.get("k") == b"v"
    cache = get_redis(request, "cache")  # a client the request had not used
    assert cache.set("c", "v") is True
    assert cache.get("c") == b"v"
    for pool in pools_of(app).values():
        assert pool_figures(pool).in_use == 0


def test_a_pipeline_left_watching_is_given_back_at_the_requests_end(make_app: Any) -> None:
    """A WATCH pipeline the view left open, still referenced after the request with the
    request itself (a job holding both), is reset at the request's end: its connection
    is back in the pool."""
    kept: list[Any] = []

    def view(request: Any) -> str:
        pipe = request.redis.pipeline()
        pipe.watch("k")
        kept.append((request, pipe))
        return "ok"

    app = make_app({"/": view})
    app.get("/")
    assert pool_figures(get_redis(app.app.registry).connection_pool).in_use == 0
    assert kept[0][1].connection is None


def test_no_server_timing_for_a_request_that_sent_nothing(make_app: Any) -> None:
    """With ``redis.server_timing`` on, a view that reads ``request.redis`` (here a
    property: the app has another) and sends nothing gets no Server-Timing header."""

    def other(config: Configurator) -> None:
        config.add_request_method(lambda request: "other", "other", reify=True)

    app = make_app({"/": lambda request: repr(request.redis)}, other, server_timing="true")
    assert "Server-Timing" not in app.get("/").headers


def test_a_pipeline_kept_past_its_request_never_uses_a_pooled_connection(
    make_app: Any,
) -> None:
    """A pipeline the view ran (on the request's connection) and kept past the request:
    used again later, it takes a connection of its own, never the request's old one,
    which is back in the pool and may be anyone's by then (here held by the test)."""
    kept: list[Any] = []

    def view(request: Any) -> str:
        pipe = request.redis.pipeline(transaction=False)
        pipe.set("k", "v").execute()
        kept.append((request, pipe))
        return "ok"

    app = make_app({"/": view})
    app.get("/")
    pool = get_redis(app.app.registry).connection_pool
    held = pool.get_connection()  # the request's old connection (the only idle one)
    try:
        held.send_command("CLIENT", "ID")
        held_id = held.read_response()
        (pipe_id,) = kept[0][1].client_id().execute()
        assert pipe_id != held_id
    finally:
        pool.release(held)


def test_a_copy_of_a_request_whose_view_raised_keeps_no_connection(make_app: Any) -> None:
    """A view that read ``request.redis``, sent nothing and raised past every exception
    view (our tween ends such requests): the copy, kept with its request and used later,
    takes a pool connection per command and gives it back."""
    kept: list[Any] = []

    def view(request: Any) -> str:
        kept.append((request, request.redis))
        raise RuntimeError("the view failed")

    app = make_app({"/": view})
    with pytest.raises(RuntimeError, match="the view failed"):
        app.get("/")
    _, client = kept[0]
    assert client.set("k", "v") is True
    assert client.get("k") == b"v"
    assert pool_figures(get_redis(app.app.registry).connection_pool).in_use == 0


def test_a_directive_client_as_introspection_and_the_settings_see_it(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its introspectable (title, type, options) shows the options parsed at commit
    (a setting added after the include counts); keys of its own in the settings are no
    unknown keys; a bad name names the directive call."""
    config = Configurator(settings={"redis.url": redis_url})
    config.include("pyramid_redisx")
    config.add_redis_client("jobs", max_connections=3)
    config.add_settings({"redis.jobs.socket_timeout": "250ms", "redis.sessions_client": "jobs"})
    caplog.set_level(logging.WARNING, logger="pyramid_redisx")
    config.commit()
    try:
        shown = config.registry.introspector.get("redis clients", "jobs")
        assert (shown.title, shown.type_name) == ("jobs", "redis client")
        assert (shown["options"]["max_connections"], shown["options"]["socket_timeout"]) == (
            3,
            0.25,
        )
        assert not [r for r in caplog.records if "unknown" in r.getMessage()]
        assert client_set(config.registry).app.sessions_client == "jobs"  # read at commit
    finally:
        client_set(config.registry).close()
    bad = Configurator(settings={"redis.url": redis_url})
    bad.include("pyramid_redisx")
    with pytest.raises(RedisSettingsError) as raised:
        bad.add_redis_client("9jobs")
    assert str(raised.value).startswith("add_redis_client('9jobs') = '9jobs' is not valid: ")
    typo = Configurator(settings={"redis.url": redis_url, "redis.jobs.sokcet_timeout": "1"})
    typo.include("pyramid_redisx")
    typo.add_redis_client("jobs")
    with pytest.raises(ConfigurationExecutionError) as refused:
        typo.commit()  # a key of the directive's client, misspelt: refused, not ignored
    assert str(refused.value.evalue) == (
        "redis.jobs.sokcet_timeout = '1' is not valid: unknown client setting "
        "(did you mean 'redis.jobs.socket_timeout'?)"
    )
    client_set(typo.registry).close()


def test_a_sessions_client_that_is_not_declared_lists_those_that_are(redis_url: str) -> None:
    config = Configurator(settings={"redis.url": redis_url, "redis.clients": "cache jobs",
                                    "redis.sessions_client": "nope"})  # fmt: skip
    config.include("pyramid_redisx")
    with pytest.raises(ConfigurationExecutionError) as raised:
        config.commit()
    assert str(raised.value.evalue) == (
        "redis.sessions_client = 'nope' is not valid: no client named 'nope'; "
        "declared: default, cache, jobs"
    )
    client_set(config.registry).close()
