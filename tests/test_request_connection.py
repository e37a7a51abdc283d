"""redis.request_connection: a request keeps the connection of its first command until it
ends. Everything else must stay true; each test runs against the session server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import webtest
from pyramid.response import Response

import pyramid_redisx.client as client_module
from pyramid_redisx import get_redis
from pyramid_redisx.pools import pool_figures
from pyramid_redisx.request import client_set
from tests.conftest import close_script, pools_of


def in_use(app: Any) -> int:
    return pool_figures(get_redis(app.app.registry).connection_pool).in_use


@pytest.fixture
def checkouts() -> Iterator[Any]:
    """``count(app)`` → how many times the app's pool lent a connection (instance hook)."""
    hooked: list[Any] = []

    def hook(app: Any) -> list[int]:
        pool = get_redis(app.app.registry).connection_pool
        counter = [0]
        lend = pool.get_connection

        def counting(*args: Any, **kwargs: Any) -> Any:
            counter[0] += 1
            return lend(*args, **kwargs)

        pool.get_connection = counting
        hooked.append(pool)
        return counter

    yield hook
    for pool in hooked:
        del pool.get_connection


def busy_view(request: Any) -> str:
    for _ in range(10):
        request.redis.get("k")
    pipe = request.redis.pipeline()
    pipe.incr("n").get("n")
    pipe.execute()
    return str(pool_figures(request.redis.connection_pool).in_use)


@pytest.mark.parametrize(("setting", "expected"), [("true", 1), ("false", 11)])
def test_one_checkout_per_request(
    make_app: Any, checkouts: Any, setting: str, expected: int
) -> None:
    app = make_app({"/": busy_view}, request_connection=setting)
    counter = checkouts(app)
    assert app.get("/").text == ("1" if setting == "true" else "0")
    assert counter[0] == expected
    assert in_use(app) == 0


def test_commands_and_pipelines_share_it_pubsub_client_monitor_do_not(
    make_app: Any, redis_server: Any
) -> None:
    def view(request: Any) -> str:
        ids = {request.redis.client_id() for _ in range(3)}
        pipe = request.redis.pipeline(transaction=False)
        pipe.client_id()
        ids.update(pipe.execute())
        (own,) = ids  # one connection for the commands and the pipeline
        pubsub = request.redis.pubsub()
        pubsub.subscribe("c")
        with redis_server.client() as admin:
            (subscriber,) = admin.client_list(_type="pubsub")
        with request.redis.client() as single:
            single_id = single.client_id()
        monitor = request.redis.monitor()
        during = pool_figures(request.redis.connection_pool).in_use
        pubsub.close()
        monitor.close()
        assert len({own, int(subscriber["id"]), single_id}) == 3
        return str(during)  # the request's, the pubsub's and the monitor's

    assert make_app({"/": view}).get("/").text == "3"


def test_response_callbacks_hold(make_app: Any) -> None:
    def view(request: Any) -> str:
        request.redis.hset("h", mapping={"a": "1"})
        assert request.redis.hgetall("h") == {"a": "1"}  # decoded, a dict: callbacks ran
        assert request.redis.exists("h") == 1
        assert request.redis.set("s", "x") is True
        pipe = request.redis.pipeline()
        pipe.hgetall("h").exists("h")
        assert pipe.execute() == [{"a": "1"}, 1]
        request.redis.set_response_callback("GET", lambda response, **options: "custom")
        assert request.redis.get("s") == "custom"
        return "ok"

    app = make_app({"/": view}, decode_responses="true")
    assert app.get("/").text == "ok"
    assert get_redis(app.app.registry).get("s") == "x"  # the process-wide client: untouched


def test_instrumentation_wrapping_execute_command_sees_every_command(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What opentelemetry-instrumentation-redis does: wrap Redis.execute_command (and
    Pipeline.execute) on the class, after the app was built."""
    seen: list[Any] = []
    command, execute = redis.Redis.execute_command, redis.client.Pipeline.execute

    def traced_command(self: Any, *args: Any, **options: Any) -> Any:
        seen.append(args[0])
        return command(self, *args, **options)

    def traced_execute(self: Any, *args: Any, **options: Any) -> Any:
        seen.append("PIPELINE")
        return execute(self, *args, **options)

    def view(request: Any) -> str:
        request.redis.set("k", "v")
        request.redis.get("k")
        request.redis.pipeline().incr("n").execute()
        get_redis(request.registry).get("k")
        return "ok"

    app = make_app({"/": view})
    monkeypatch.setattr(redis.Redis, "execute_command", traced_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", traced_execute)
    app.get("/")
    assert seen == ["SET", "GET", "PIPELINE", "GET"]


class _ProxyLikeWrapt:
    """A callable object standing for redis-py's ``Pipeline.execute``, as wrapt's
    FunctionWrapper (OpenTelemetry, ddtrace) does: it forwards ``__module__`` and
    ``__qualname__``, so only its type tells it from the function."""

    def __init__(self, wrapped: Any, seen: list[Any]) -> None:
        self.__wrapped__ = wrapped
        self.__module__ = wrapped.__module__
        self.__qualname__ = wrapped.__qualname__
        self.seen = seen

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return lambda *args, **kwargs: self(instance, *args, **kwargs)

    def __call__(self, pipe: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(len(pipe.command_stack))
        return self.__wrapped__(pipe, *args, **kwargs)


def test_pipelines_run_through_a_wrapper_installed_before_the_app(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Auto-instrumentation wraps ``Pipeline.execute`` before the app (and this add-on)
    is imported; a pipeline still runs through the wrapper, and through redis-py's
    execute again once the wrapper is gone (found unwrapped again: as in a process whose
    first pipeline ran under the wrapper)."""
    seen: list[Any] = []
    original = redis.client.Pipeline.execute
    client_module._plain_execute[0] = None  # a cache: what a fresh process starts with
    monkeypatch.setattr(redis.client.Pipeline, "execute", _ProxyLikeWrapt(original, seen))

    def view(request: Any) -> str:
        return str(request.redis.pipeline().incr("n").incr("n").execute())

    app = make_app({"/": view})
    assert app.get("/").text == "[1, 2]"
    assert seen == [2]
    monkeypatch.undo()
    assert app.get("/").text == "[3, 4]"
    assert seen == [2]


@pytest.mark.parametrize("observed", [False, True])
def test_redis_py_metrics_only_when_its_observability_is_on(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, observed: bool
) -> None:
    """A request's commands and pipelines skip redis-py's metrics calls (~2 µs each with
    metrics off) unless redis-py's observability was on when the client was built: then
    each command, pipeline and error is recorded as ``redis.Redis`` records it."""
    calls: list[str] = []
    record = redis.client.record_operation_duration
    record_error = redis.client.record_error_count

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("command_name", "?"))
        return record(*args, **kwargs)

    def counting_errors(*args: Any, **kwargs: Any) -> Any:
        calls.append(type(kwargs["error_type"]).__name__)
        return record_error(*args, **kwargs)

    monkeypatch.setattr(redis.client, "record_operation_duration", counting)
    monkeypatch.setattr(redis.client, "record_error_count", counting_errors)
    monkeypatch.setattr("pyramid_redisx.client.observability_enabled", lambda: observed)

    def view(request: Any) -> str:
        pipe = request.redis.pipeline(transaction=False)
        pipe.set("a", "1").get("a")
        result = pipe.execute()
        result.append(request.redis.get("a"))
        with pytest.raises(redis.ResponseError):
            request.redis.hget("a", "field")  # WRONGTYPE
        return str(result)

    app = make_app({"/": view}, stats="true")
    assert app.get("/").text == "[True, b'1', b'1']"
    assert calls == (["PIPELINE", "GET", "ResponseError"] if observed else [])
    assert in_use(app) == 0


def test_pool_metrics_of_redis_py_when_its_observability_is_on_as_the_pool_is_built(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Then the pool lends and takes back through redis-py's own methods, which record
    each connection's state change (made and used, then idle), and the connection does
    go back: none in use after the request, the next request reuses it."""
    states: list[tuple[str, int]] = []
    record = redis.connection.record_connection_count

    def counting(*args: Any, **kwargs: Any) -> Any:
        states.append((kwargs["connection_state"].name, kwargs["counter"]))
        return record(*args, **kwargs)

    monkeypatch.setattr(redis.connection, "record_connection_count", counting)
    monkeypatch.setattr("pyramid_redisx.pools.observability_enabled", lambda: True)
    app = make_app({"/": lambda request: request.redis.incr("n")})
    pool = get_redis(app.app.registry).connection_pool
    assert app.get("/").text == "1"
    assert app.get("/").text == "2"
    assert pool_figures(pool)[:2] == (0, 1)  # none in use, one idle: made once, reused
    assert ("USED", 1) in states and ("IDLE", 1) in states


def test_idle_held_connection_is_health_checked(make_app: Any, redis_server: Any) -> None:
    """Killed by the server while the request idled past health_check_interval: the
    health-check PING fails before the INCR is sent, so the INCR is sent on a fresh
    connection and applied once, without an error."""

    def view(request: Any) -> str:
        first = request.redis.client_id()
        with redis_server.client() as admin:
            admin.client_kill_filter(_id=first)
        time.sleep(0.3)
        value = request.redis.incr("n")
        return f"{value} {request.redis.client_id() != first}"

    app = make_app({"/": view}, health_check_interval="0.2")
    assert app.get("/").text == "1 True"
    assert in_use(app) == 0


def test_connection_broken_mid_request_is_replaced(make_app: Any, redis_server: Any) -> None:
    def view(request: Any) -> str:
        first = request.redis.client_id()
        with redis_server.client() as admin:
            admin.client_kill_filter(_id=first)
        assert request.redis.get("k") is None  # a read: retried on a fresh connection
        second = request.redis.client_id()
        with redis_server.client() as admin:
            admin.client_kill_filter(_id=second)
        # A write is not sent on a socket the server closed while it sat idle (issue 24):
        # found before sending, it goes on a fresh connection, as the pool's checkout does.
        assert request.redis.incr("n") == 1
        third = request.redis.client_id()
        assert len({first, second, third}) == 3
        return str(request.redis.incr("n"))

    app = make_app({"/": view}, health_check_interval="0")
    assert app.get("/").text == "2"  # each INCR applied once
    assert in_use(app) == 0


def test_threads_of_one_request_never_share_a_socket(make_app: Any, redis_server: Any) -> None:
    def view(request: Any) -> str:
        request.redis.set("main", "m")
        request.redis.set("worker", "w")
        main_id = request.redis.client_id()
        results: dict[str, Any] = {}

        def worker() -> None:
            results["worker"] = {request.redis.get("worker") for _ in range(300)}
            results["worker_id"] = request.redis.client_id()

        thread = threading.Thread(target=worker)
        thread.start()
        mine = {request.redis.get("main") for _ in range(300)}
        thread.join()
        assert mine == {b"m"} and results["worker"] == {b"w"}
        assert results["worker_id"] != main_id
        assert request.redis.client_id() == main_id
        return "ok"

    app = make_app({"/": view})
    assert app.get("/").text == "ok"
    assert in_use(app) == 0


@pytest.mark.parametrize("setting", ["true", "false"])
def test_a_request_that_raises_releases_its_connection(make_app: Any, setting: str) -> None:
    def view(request: Any) -> str:
        request.redis.get("k")
        request.redis.pipeline().watch("k")
        raise ValueError("boom")

    app = make_app({"/": view}, request_connection=setting)
    for _ in range(3):
        with pytest.raises(ValueError):
            app.get("/")
    assert in_use(app) == 0


def test_no_deadlock_with_as_many_connections_as_threads(make_app: Any) -> None:
    """Each request holds a connection and also runs a pipeline and a WATCH transaction:
    on their own connections they would need two each and wait on each other."""

    def view(request: Any) -> str:
        request.redis.incr("n")
        request.redis.pipeline().get("n").incr("m").execute()
        request.redis.transaction(lambda pipe: pipe.multi() or pipe.incr("t"), "t")
        return "ok"

    app = make_app({"/": view}, max_connections="2", pool_timeout="1")
    failures: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(20):
                app.get("/")
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert get_redis(app.app.registry).get("t") == b"40"
    assert in_use(app) == 0


def test_commands_after_the_response_take_one_each(make_app: Any) -> None:
    """A streamed body runs after NewResponse: its commands are not left holding one."""

    def view(request: Any) -> Response:
        request.redis.set("k", "v")

        def body() -> Iterator[bytes]:
            yield request.redis.get("k")
            yield str(pool_figures(request.redis.connection_pool).in_use).encode()

        return Response(app_iter=body())

    app = make_app({"/": view})
    assert app.get("/").body == b"v0"
    assert in_use(app) == 0


@pytest.mark.parametrize("reset", [False, True], ids=["pool", "pool-reset-as-after-fork"])
def test_connection_given_back_after_a_command_while_others_wait(
    make_app: Any, reset: bool
) -> None:
    """Contention: on one connection, request A runs a command while request B waits for
    one; A gives its connection back after that command, so B runs before A ends. Also
    after the pool was reset, as redis-py does in a child process after ``fork()``
    (a new queue: the requests must watch that one)."""
    b_done = threading.Event()

    def view_a(request: Any) -> str:
        request.redis.get("k")
        queue = request.redis.connection_pool.pool
        deadline = time.monotonic() + 5
        while not queue.waiting and time.monotonic() < deadline:
            time.sleep(0.005)  # until B is blocked in the pool
        request.redis.get("k")  # B waits: given back after this command
        return "B ran first" if b_done.wait(5) else "B still waiting"

    def view_b(request: Any) -> str:
        request.redis.get("k")
        b_done.set()
        return "b"

    app = make_app({"/a": view_a, "/b": view_b}, max_connections="1", pool_timeout="10")
    if reset:
        for pool in pools_of(app).values():
            pool.reset()
    result: dict[str, str] = {}
    thread_a = threading.Thread(target=lambda: result.update(a=app.get("/a").text))
    thread_a.start()
    time.sleep(0.2)  # A holds the connection
    assert app.get("/b").text == "b"
    thread_a.join()
    assert result["a"] == "B ran first"
    assert in_use(app) == 0


def test_connection_given_back_when_a_subscriber_before_ours_raised(redis_url: str) -> None:
    """A NewResponse subscriber that runs before ours raises: neither NewResponse nor
    our tween finish the request, and no finished callback was registered (our tween
    ran it). The request's Usage gives the connection back when it is collected."""
    import gc

    from pyramid.config import Configurator
    from pyramid.events import NewResponse

    def boom(event: Any) -> None:
        raise RuntimeError("subscriber failed")

    config = Configurator(settings={"redis.url": redis_url})
    config.add_subscriber(boom, NewResponse)  # before the include: runs first
    config.include("pyramid_redisx")
    config.add_route("r", "/")
    config.add_view(lambda request: Response(request.redis.get("k") or b"-"), route_name="r")
    app = webtest.TestApp(config.make_wsgi_app())
    try:
        for _ in range(3):
            with pytest.raises(RuntimeError):
                app.get("/")
        gc.collect()
        assert in_use(app) == 0
    finally:
        client_set(app.app.registry).close()


def test_redis_py_pool_methods_when_its_observability_is_on(make_app: Any) -> None:
    """With redis-py's own observability enabled when the pool was built, its
    get_connection/release run (metrics included); the app behaves the same."""
    app = make_app({"/": busy_view})
    pool = get_redis(app.app.registry).connection_pool
    pool.observed = True
    assert app.get("/").text == "1"
    assert in_use(app) == 0
    assert pool_figures(pool).idle == 1


def test_a_connection_the_server_closed_in_the_pool_is_replaced_before_a_write(
    make_app: Any, redis_server: Any
) -> None:
    """The server closes a pooled connection (CLIENT KILL, as a restart or its idle
    ``timeout`` would); a later request's INCR goes out on a fresh connection, applied
    once, with no ``CommandMayHaveBeenApplied``: the checkout's readiness check found
    the closed socket (the health check is off here: 0). Fails when the check is
    skipped."""
    app = make_app(
        {"/id": lambda request: request.redis.client_id(),
         "/incr": lambda request: request.redis.incr("n")},
        health_check_interval="0",
    )  # fmt: skip
    first = int(app.get("/id").text)
    with redis_server.client() as admin:
        admin.client_kill_filter(_id=first)
    time.sleep(0.05)  # the server's FIN reaches the client's socket
    assert app.get("/incr").text == "1"
    assert int(app.get("/id").text) != first
    with redis_server.client() as admin:
        assert admin.get("n") == b"1"


def pipeline_with_an_error(client: Any, transaction: Any, keep_errors: bool | None) -> Any:
    """SET, LPUSH on the string (WRONGTYPE), GET: what ``execute`` gives or raises.
    ``transaction="watch"``: a MULTI/EXEC after WATCH (redis-py's own execute runs it)."""
    client.delete("pe")
    pipe = client.pipeline(transaction=bool(transaction))
    if transaction == "watch":
        pipe.watch("pe")
        pipe.multi()
    pipe.set("pe", "1").lpush("pe", "x").get("pe")
    try:
        if keep_errors is None:
            return pipe.execute()  # the default: raise the first error reply
        return pipe.execute(raise_on_error=not keep_errors)
    except redis.ResponseError as error:
        return f"raised {error}"


@pytest.mark.parametrize("keep_errors", [None, False, True])
@pytest.mark.parametrize("transaction", [True, False, "watch"])
@pytest.mark.parametrize("client", ["request", "process"])
def test_a_pipeline_error_reply_is_raised_or_returned_as_redis_py_does(
    make_app: Any, redis_url: str, transaction: Any, keep_errors: bool | None, client: str
) -> None:
    """redis-py as the oracle: the same pipeline with an error reply in the middle, run by
    ``request.redis`` in a request (or the process-wide ``get_redis(registry)``) and by a
    plain client, gives the same outcome (raised by default and with
    ``raise_on_error=True``, in place with ``False``)."""

    def ours_of(request: Any) -> Any:
        return request.redis if client == "request" else get_redis(request.registry)

    def shown(result: Any) -> str:
        if isinstance(result, list):
            return repr([type(r).__name__ if isinstance(r, Exception) else r for r in result])
        return str(result)

    app = make_app({"/": lambda request: shown(
        pipeline_with_an_error(ours_of(request), transaction, keep_errors)
    )})  # fmt: skip
    ours = app.get("/").text
    with redis.Redis.from_url(redis_url) as plain:
        theirs = shown(pipeline_with_an_error(plain, transaction, keep_errors))
    assert ours == theirs
    if keep_errors:
        assert ours == "[True, 'ResponseError', b'1']"
    else:
        assert ours.startswith("raised Command # 2 (LPUSH pe x)") and "WRONGTYPE" in ours
    assert in_use(app) == 0


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_redis_py_metrics_of_a_command_are_recorded_as_redis_py_records_them(
    make_app: Any,
    redis_url: str,
    redis_server_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    """redis-py as the oracle: with its observability on, a GET and a failing HGET
    (WRONGTYPE) through ``request.redis`` reach redis-py's metric calls with the
    arguments plain ``redis.Redis`` passes (the duration aside: timed, not equal), over
    TCP and over a unix socket (whose connections have no host or port)."""
    if transport == "unix":
        redis_url = redis_server_factory(unix_socket=True).unix_url
    seen: list[tuple[str, dict[str, Any]]] = []

    def keep(kind: str) -> Any:
        def record(**kwargs: Any) -> None:
            kwargs = dict(kwargs)
            seconds = kwargs.pop("duration_seconds", None)
            assert (seconds is None) == (kind == "error")  # a duration has its seconds
            assert seconds is None or 0 < seconds < 1
            if "error_type" in kwargs:
                kwargs["error_type"] = type(kwargs["error_type"]).__name__
            seen.append((kind, kwargs))

        return record

    monkeypatch.setattr(redis.client, "record_operation_duration", keep("duration"))
    monkeypatch.setattr(redis.client, "record_error_count", keep("error"))
    monkeypatch.setattr("pyramid_redisx.client.observability_enabled", lambda: True)

    def steps(client: Any) -> None:
        client.set("h", "x")
        seen.clear()
        client.get("h")
        with pytest.raises(redis.ResponseError):
            client.hget("h", "field")

    app = make_app({"/": lambda request: str(steps(request.redis))}, url=redis_url)
    app.get("/")
    ours = list(seen)
    with redis.Redis.from_url(redis_url) as plain:
        steps(plain)
    theirs = list(seen)
    assert [kind for kind, _ in ours] == ["duration", "error"]
    assert ours == theirs


def test_a_client_kept_past_the_request_gives_its_connection_back_at_the_end(
    make_app: Any,
) -> None:
    """A ``client()`` the view used and did not close (kept alive, here in a list) gives
    its connection back when the request ends, as the request's own connection does."""
    kept: list[Any] = []

    def view(request: Any) -> str:
        kept.append(request.redis.client())
        kept[-1].ping()
        return str(in_use(app))

    app = make_app({"/": view})
    assert app.get("/").text == "1"  # the client()'s (the request sent nothing itself)
    assert in_use(app) == 0
    assert kept[0].ping() is True  # still usable after: it takes a connection again


def test_request_redis_kept_past_the_request_takes_a_connection_per_command(
    make_app: Any,
) -> None:
    """``request.redis`` kept after its request ended (with the request itself, as a
    background job might) still works, one connection per command, none kept: the
    request's end already gave back what it held."""
    kept: list[Any] = []

    def view(request: Any) -> str:
        kept.append((request, request.redis))
        return "ok"

    app = make_app({"/": view})
    app.get("/")
    _, late = kept[0]
    assert late.set("late", "1") is True
    assert late.get("late") == b"1"
    assert in_use(app) == 0


@pytest.mark.parametrize("sent", [False, True], ids=["read-only", "used"])
def test_a_scripts_request_redis_used_after_closer_keeps_no_connection(
    make_app: Any, sent: bool
) -> None:
    """``pyramid.scripting.prepare()``: ``request.redis`` used after ``closer()`` (read
    before it, with or without a command) takes one connection per command."""
    from pyramid.scripting import prepare

    app = make_app({})
    env = prepare(registry=app.app.registry)
    late = env["request"].redis
    if sent:
        late.ping()
    close_script(env)
    assert in_use(app) == 0
    assert late.set("late", "1") is True
    assert in_use(app) == 0


@pytest.mark.parametrize("transaction", [True, False])
def test_a_pipeline_first_takes_the_request_connection_for_what_follows(
    make_app: Any, checkouts: Any, transaction: bool
) -> None:
    """A pipeline run before any command takes the request's connection, and the request's
    later commands use that same connection: one checkout for the request."""

    def view(request: Any) -> str:
        (first,) = request.redis.pipeline(transaction=transaction).client_id().execute()
        return str(first == request.redis.client_id())

    app = make_app({"/": view})
    counted = checkouts(app)
    assert app.get("/").text == "True"
    assert counted == [1]
    assert in_use(app) == 0


def test_what_a_long_view_still_holds_is_given_back_after_it_dropped_many_others(
    make_app: Any, redis_server: Any
) -> None:
    """A view subscribes, keeps the subscription past the request, then watches and
    drops 100 pipelines (the request forgets the dropped ones as it goes): at the end the
    subscription's connection is still closed, and every connection is back."""
    kept: list[Any] = []

    def view(request: Any) -> str:
        pubsub = request.redis.pubsub()
        pubsub.subscribe("kept-channel")
        kept.append(pubsub)
        for _ in range(100):
            pipe = request.redis.pipeline()
            pipe.watch("k")
            pipe.reset()
        return "ok"

    app = make_app({"/": view})
    assert app.get("/").text == "ok"
    with redis_server.client() as direct:
        assert direct.pubsub_numsub("kept-channel") == [(b"kept-channel", 0)]
    assert in_use(app) == 0
