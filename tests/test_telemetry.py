"""Telemetry (issue 28): spans and metrics through the OpenTelemetry SDK's in-memory
exporter and reader, the Prometheus endpoint in one process, Sentry through a local
transport; a real server throughout. The endpoint under gunicorn's workers is in
tests/reliability/test_prometheus_gunicorn.py, Cluster and Sentinel in tests/topology."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families
from pyramid.exceptions import ConfigurationExecutionError

from pyramid_redisx import RedisSettingsError, get_async_redis, get_redis
from pyramid_redisx.aio import close_async_redis
from pyramid_redisx.request import client_set
from pyramid_redisx.settings import parse_app
from pyramid_redisx.telemetry import CONTAINERS, NO_KEY_FIRST, STATE, error_kind, statement
from tests.telemetry_support import Otel, otel
from tests.test_http_cache import Origin
from tests.test_write_safety import ResetAfterReplyProxy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def telemetry() -> Otel:
    return otel()


@pytest.fixture
def instrumentor() -> Any:
    """opentelemetry-instrumentation-redis, instrumenting for the test only."""
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=otel().tracer_provider)
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


def views(tracer: Any = None) -> dict[str, Any]:
    def commands(request: Any) -> str:
        request.redis.set("t:key", "secret-value")
        return str(request.redis.get("t:key"))

    def pipeline(request: Any) -> str:
        pipe = request.redis.pipeline(transaction=False)
        pipe.set("t:a", "secret-a")
        pipe.incr("t:n")
        pipe.execute()
        return "ok"

    def transaction(request: Any) -> str:
        pipe = request.redis.pipeline()
        pipe.set("t:a", "secret-a")
        pipe.get("t:a")
        pipe.execute()
        return "ok"

    def own_span(request: Any) -> str:
        with tracer.start_as_current_span("view work"):
            request.redis.incr("t:n")
            request.redis.get("t:n")
        return "ok"

    def watch(request: Any, client: Any = None) -> str:
        pipe = (client or request.redis).pipeline()
        pipe.watch("t:w")
        pipe.get("t:w")
        pipe.multi()
        pipe.set("t:w", "secret-w")
        pipe.execute()
        return "ok"

    def process(request: Any) -> str:  # the process-wide client's pipeline (no Usage)
        pipe = get_redis(request.registry).pipeline(transaction=False)
        pipe.set("t:a", "secret-a")
        pipe.incr("t:n")
        pipe.execute()
        return "ok"

    return {"/commands": commands, "/pipeline": pipeline, "/transaction": transaction,
            "/own": own_span, "/watch": watch, "/process": process,
            "/process-watch": lambda request: watch(request, get_redis(request.registry))}  # fmt: skip


# ------------------------------------------------------------------ settings, off
def test_telemetry_is_off_by_default(make_app: Any) -> None:
    app = make_app(views())
    registry = app.app.registry
    assert getattr(registry, STATE, None) is None
    assert get_redis(registry)._redisx_observer is None
    app.get("/commands")
    usage_class = client_set(registry)._starters["default"].usage_class
    assert usage_class.observer is None


def test_bad_telemetry_settings_name_the_key() -> None:
    with pytest.raises(RedisSettingsError, match=r"redis\.tracing.*ture.*boolean"):
        parse_app({"redis.tracing": "ture"})
    with pytest.raises(RedisSettingsError, match=r"redis\.tracing_statement.*values.*keys"):
        parse_app({"redis.tracing_statement": "values"})
    with pytest.raises(RedisSettingsError, match=r"redis\.metrics_route.*starting with /"):
        parse_app({"redis.metrics_route": "metrics"})
    app = parse_app({"redis.metrics": "on", "redis.metrics_route": "/metrics"})
    assert app.metrics and app.metrics_route == "/metrics" and app.telemetry


# ------------------------------------------------------------------ statements
def test_statements_show_names_and_first_keys_only() -> None:
    assert statement(("SET", "user:1", "secret"), "keys") == "SET user:1 ?"
    assert statement((b"GET", b"user:1"), "keys") == "GET user:1"
    assert statement(("MSET", "a", "1", "b", "2"), "keys") == "MSET a ? ? ?"
    assert statement(("AUTH", "user", "pass"), "keys") == "AUTH ? ?"
    assert statement(("HELLO", 3, "AUTH", "user", "pass"), "keys") == "HELLO ? ? ? ?"
    assert statement(("ECHO", "secret"), "keys") == "ECHO ?"
    assert statement(("EVAL", "return 1", 1, "k"), "keys") == "EVAL ? ? ?"
    assert statement(("CONFIG SET", "requirepass", "pw"), "keys") == "CONFIG SET ? ?"
    assert statement(("OBJECT", "ENCODING", "k"), "keys") == "OBJECT ENCODING ?"
    assert statement(("CLIENT", "SETNAME", "x"), "keys") == "CLIENT SETNAME ?"
    assert statement(("SET", "user:1", "secret"), "command") == "SET ? ?"
    assert statement(("SET", "user:1", "secret"), "none") is None
    assert statement(("GET", "k" * 100), "keys") == "GET " + "k" * 64 + "…"


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["SET", "GET", "HSET", "LPUSH", "AUTH", "HELLO", "ECHO", "EVAL",
                          "CONFIG", "ACL", "PUBLISH", "MIGRATE", "ZADD", "XADD", "FOO.BAR"]),
    key=st.text(alphabet="abcdefghij:", min_size=1, max_size=10),
    values=st.lists(st.binary(min_size=1, max_size=20), max_size=6),
    level=st.sampled_from(["keys", "command"]),
)  # fmt: skip
def test_no_value_is_ever_shown(name: str, key: str, values: list[bytes], level: str) -> None:
    """Whatever the arguments, a statement holds the command's name, at most its first
    argument (and only where that is a key, at the ``keys`` level), and ``?``s."""
    marked = [b"V" + value.hex().encode() for value in values]  # recognisable values
    text = statement((name, key, *marked), level)
    assert text is not None
    for value in marked:
        assert value.decode() not in text
    words = text.split(" ")
    assert words[0] == name
    shown = [w for w in words[1:] if w != "?"]
    if level == "command" or name in NO_KEY_FIRST:
        assert shown == []
    elif name in ("CONFIG", "ACL"):
        assert shown in ([], [key.upper()]) or (shown == [key.upper()] and key.isalpha())
    else:
        assert shown == [key]


def test_commands_without_a_first_key_match_the_servers_table(redis_server: Any) -> None:
    """``NO_KEY_FIRST`` is exactly the commands the server says take arguments whose first
    is not a key (first key position other than 1), less those with subcommands."""
    client = redis_server.client()
    table = client.execute_command("COMMAND")
    rows = table.items() if isinstance(table, dict) else [(row[0], row) for row in table]
    not_first: set[str] = set()
    names: set[str] = set()
    for name, row in rows:
        name = (name.decode() if isinstance(name, bytes) else str(name)).upper()
        if isinstance(row, dict):
            arity, first, subcommands = row["arity"], row["first_key_pos"], row.get("subcommands")
        else:
            arity, first, subcommands = row[1], row[3], row[9] if len(row) > 9 else None
        takes_arguments = arity < 0 or arity > 1
        if takes_arguments and first != 1 and not subcommands and name not in CONTAINERS:
            not_first.add(name)
        names.add(name)
    missing = sorted(not_first - NO_KEY_FIRST)
    assert missing == [], f"first argument not a key on this server: {missing}"
    wrongly = sorted(name for name in NO_KEY_FIRST - not_first if name in names)
    assert wrongly == [], f"listed, but the server says their first argument is a key: {wrongly}"


# ------------------------------------------------------------------ our own spans
def test_each_command_and_pipeline_is_one_span_under_the_request_span(
    make_app: Any, telemetry: Otel
) -> None:
    app = make_app(views(telemetry.tracer), tracing="true")
    for path in (
        "/commands",
        "/pipeline",
        "/transaction",
        "/own",
        "/watch",
        "/process",
        "/process-watch",
    ):
        telemetry.exporter.clear()
        with telemetry.tracer.start_as_current_span("request") as request_span:
            app.get(path)
        spans = telemetry.redis_spans()
        expected = {"/commands": ["SET", "GET"], "/pipeline": ["PIPELINE"],
                    "/transaction": ["MULTI"], "/own": ["INCRBY", "GET"],
                    "/watch": ["WATCH", "GET", "MULTI"], "/process": ["PIPELINE"],
                    "/process-watch": ["WATCH", "GET", "MULTI"]}[path]  # fmt: skip
        assert [s.name for s in spans] == expected, path
        parent = request_span.get_span_context().span_id
        if path == "/own":  # the app's own span in the view
            (work,) = [s for s in telemetry.spans() if s.name == "view work"]
            parent = work.context.span_id
        for span in spans:
            assert span.kind is SpanKind.CLIENT
            assert span.parent is not None and span.parent.span_id == parent
            attributes = dict(span.attributes or {})
            assert attributes["db.system.name"] == "redis"
            assert attributes["db.operation.name"] == span.name
            assert attributes["server.address"] == "127.0.0.1"
            assert isinstance(attributes["server.port"], int)
            assert attributes["pyramid_redisx.client.name"] == "default"
            assert 0 <= attributes["pyramid_redisx.connection.wait_time"] < 0.5
            assert "secret" not in str(attributes)
            assert span.status.status_code is StatusCode.UNSET
            assert 0 < span.end_time - span.start_time < 5e9
        assert "pyramid_redisx.client.name" not in (request_span.attributes or {})
    telemetry.exporter.clear()
    app.get("/watch")
    assert [s.attributes["db.query.text"] for s in telemetry.redis_spans()] == [
        "WATCH t:w", "GET t:w", "SET t:w ?"]  # fmt: skip
    telemetry.exporter.clear()
    app.get("/pipeline")
    (span,) = telemetry.redis_spans()
    assert span.attributes["db.query.text"] == "SET t:a ?\nINCRBY t:n ?"
    assert span.attributes["db.operation.batch.size"] == 2


def test_spans_under_opentelemetry_instrumentation_pyramid(make_app: Any, telemetry: Otel) -> None:
    from opentelemetry.instrumentation.pyramid import PyramidInstrumentor

    def setup(config: Any) -> None:
        PyramidInstrumentor().instrument_config(config)

    app = make_app(views(), setup=setup, tracing="true")
    app.get("/commands")
    spans = telemetry.spans()
    (request_span,) = [s for s in spans if s.kind is SpanKind.SERVER]
    redis_spans = telemetry.redis_spans()
    assert [s.name for s in redis_spans] == ["SET", "GET"]
    for span in redis_spans:
        assert span.parent.span_id == request_span.context.span_id
        assert span.context.trace_id == request_span.context.trace_id


@pytest.mark.parametrize("level", ["command", "none"])
def test_statement_level(make_app: Any, telemetry: Otel, level: str) -> None:
    app = make_app(views(), tracing="true", tracing_statement=level)
    app.get("/commands")
    texts = [s.attributes.get("db.query.text") for s in telemetry.redis_spans()]
    assert texts == (["SET ? ?", "GET ?"] if level == "command" else [None, None])


def test_a_failed_command_span_has_the_error(make_app: Any, telemetry: Otel) -> None:
    def wrongtype(request: Any) -> str:
        request.redis.set("t:s", "v")
        try:
            request.redis.lpush("t:s", "x")
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__
        return "no error"

    def watching(request: Any) -> str:  # the same, sent at once by a WATCH pipeline
        request.redis.set("t:s", "v")
        with request.redis.pipeline() as pipe:
            pipe.watch("t:s")
            try:
                pipe.lpush("t:s", "x")
            except Exception as exc:  # noqa: BLE001
                return type(exc).__name__
        return "no error"

    def pipeline(request: Any) -> str:  # the same in a pipeline: its span has the error
        request.redis.set("t:s", "v")
        try:
            request.redis.pipeline(transaction=False).get("t:s").lpush("t:s", "x").execute()
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__
        return "no error"

    def process(request: Any) -> str:  # the process-wide client's pipeline
        client = get_redis(request.registry)
        client.set("t:s", "v")
        try:
            client.pipeline(transaction=False).get("t:s").lpush("t:s", "x").execute()
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__
        return "no error"

    app = make_app({"/": wrongtype, "/watching": watching, "/pipeline": pipeline,
                    "/process": process}, tracing="true")  # fmt: skip
    for path, names in (("/", ["SET", "LPUSH"]), ("/watching", ["SET", "WATCH", "LPUSH"]),
                        ("/pipeline", ["SET", "PIPELINE"]), ("/process", ["SET", "PIPELINE"])):  # fmt: skip
        telemetry.exporter.clear()
        assert app.get(path).text == "ResponseError"
        spans = telemetry.redis_spans()
        assert [s.name for s in spans] == names
        assert all(s.status.status_code is StatusCode.UNSET for s in spans[:-1])
        span = spans[-1]
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "redis.exceptions.ResponseError"
        assert span.attributes["db.response.status_code"] == "WRONGTYPE"


@pytest.mark.parametrize("client", ["process", "request"])
def test_a_pipeline_that_never_reached_the_server(
    make_app: Any, telemetry: Otel, redis_server_factory: Any, client: str
) -> None:
    """Tracing on, the server stopped (after the request's first command, for
    ``request.redis``): the pipeline raises the connection error (nothing was sent) and
    its span says so."""
    server = redis_server_factory()

    def view(request: Any) -> str:
        if client == "request":
            request.redis.ping()  # the request's connection, closed by the stop
            server.stop()
        source = request.redis if client == "request" else get_redis(request.registry)
        try:
            source.pipeline().incr("n").execute()
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__
        return "no error"

    app = make_app({"/": view}, url=server.url, tracing="true", retries="0",
                   startup_check="false")  # fmt: skip
    if client == "process":
        server.stop()
    assert app.get("/").text == "ConnectionError"
    span = telemetry.redis_spans()[-1]
    assert span.name == "MULTI" and span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "redis.exceptions.ConnectionError"
    assert "db.response.status_code" not in span.attributes  # no reply: no code


def test_an_error_reply_without_a_code_of_its_own_is_err(make_app: Any, telemetry: Otel) -> None:
    """``-ERR value is not an integer`` reaches redis-py as "value is not an integer...":
    its code is ERR (the conventions' ``db.response.status_code``), alone or in a
    pipeline, never the message's first word."""

    def view(request: Any) -> str:
        request.redis.set("t:n", "abc")
        for call in (lambda: request.redis.incr("t:n"),
                     lambda: request.redis.pipeline(transaction=False).incr("t:n").execute()):  # fmt: skip
            with pytest.raises(Exception, match="not an integer"):
                call()
        return "ok"

    app = make_app({"/": view}, tracing="true")
    telemetry.exporter.clear()
    app.get("/")
    spans = telemetry.redis_spans()
    assert [s.name for s in spans] == ["SET", "INCRBY", "PIPELINE"]
    assert [s.attributes.get("db.response.status_code") for s in spans] == [None, "ERR", "ERR"]


# ------------------------------------------------------------------ the instrumentation's spans, once
def test_instrumentation_spans_appear_exactly_once_with_our_attributes(
    make_app: Any, telemetry: Otel, instrumentor: Any
) -> None:
    app = make_app(views(telemetry.tracer), tracing="true")
    for path, expected in (("/commands", ["SET", "GET"]), ("/pipeline", ["SET INCRBY"]),
                           ("/transaction", ["SET GET"]), ("/own", ["INCRBY", "GET"]),
                           ("/watch", ["WATCH", "GET", "SET"]),
                           ("/process", ["SET INCRBY"]),
                           ("/process-watch", ["WATCH", "GET", "SET"])):  # fmt: skip
        telemetry.exporter.clear()
        with telemetry.tracer.start_as_current_span("request") as request_span:
            app.get(path)
        spans = telemetry.redis_spans()
        assert [s.name for s in spans] == expected, path
        assert {s.instrumentation_scope.name for s in spans} == {
            "opentelemetry.instrumentation.redis"
        }
        parent = request_span.get_span_context().span_id
        if path == "/own":
            parent = next(s for s in telemetry.spans() if s.name == "view work").context.span_id
        for span in spans:
            assert span.parent.span_id == parent
            assert span.attributes["pyramid_redisx.client.name"] == "default", (path, span.name)
            assert 0 <= span.attributes["pyramid_redisx.connection.wait_time"] < 0.5
        assert "pyramid_redisx.client.name" not in (request_span.attributes or {})


def test_instrumentation_alone_still_sees_every_command(
    make_app: Any, telemetry: Otel, instrumentor: Any
) -> None:
    """Telemetry off: the instrumentation's spans as on plain redis-py, without ours."""
    app = make_app(views())
    app.get("/commands")
    app.get("/pipeline")
    spans = telemetry.redis_spans()
    assert [s.name for s in spans] == ["SET", "GET", "SET INCRBY"]
    assert all("pyramid_redisx.client.name" not in s.attributes for s in spans)


def test_asyncio_client_commands_are_one_instrumentation_span_each(
    make_app: Any, telemetry: Otel, instrumentor: Any
) -> None:
    app = make_app(tracing="true")
    registry = app.app.registry

    async def run() -> None:
        client = get_async_redis(registry)
        with telemetry.tracer.start_as_current_span("task"):
            await client.set("t:async", "secret")
            await client.get("t:async")
            pipe = client.pipeline(transaction=False)
            pipe.incr("t:n")
            pipe.get("t:async")
            await pipe.execute()
        await close_async_redis(registry)

    asyncio.run(run())
    spans = telemetry.redis_spans()
    (task,) = [s for s in telemetry.spans() if s.name == "task"]
    assert [s.name for s in spans] == ["SET", "GET", "INCRBY GET"]
    assert all(s.parent.span_id == task.context.span_id for s in spans)


# ------------------------------------------------------------------ metrics
def test_command_and_request_metrics(make_app: Any, telemetry: Otel) -> None:
    name = "m" + uuid.uuid4().hex[:8]

    def view(request: Any) -> str:
        client = get_redis(request, name)
        for _ in range(3):
            client.get("t:x")
        pipe = client.pipeline()
        pipe.incr("t:n")
        pipe.execute()
        return "ok"

    app = make_app({"/": view}, metrics="true", clients=name, **{f"{name}.max_connections": "7"})
    for _ in range(2):
        app.get("/")
    duration = "db.client.operation.duration"
    assert (
        telemetry.value(duration, pyramid_redisx__client__name=name, db__operation__name="GET") == 6
    )
    assert (
        telemetry.value(duration, pyramid_redisx__client__name=name, db__operation__name="MULTI")
        == 2
    )
    points = [p for a, p in telemetry.points("pyramid_redisx.request.commands")
              if a.get("pyramid_redisx.client.name") == name]  # fmt: skip
    assert (
        len(points) == 1 and points[0].count == 2 and points[0].sum == 8
    )  # 3 GETs + 1 pipeline of 1
    assert (
        telemetry.value("db.client.connection.wait_time", db__client__connection__pool__name=name)
        == 2
    )
    pool = {"db__client__connection__pool__name": name}
    assert (
        telemetry.value("db.client.connection.count", db__client__connection__state="idle", **pool)
        == 1
    )
    assert (
        telemetry.value("db.client.connection.count", db__client__connection__state="used", **pool)
        == 0
    )
    assert telemetry.value("db.client.connection.max", **pool) == 7
    assert telemetry.value("db.client.connection.pending_requests", **pool) == 0


def errors(telemetry: Otel, client: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for attributes, point in telemetry.points("pyramid_redisx.errors"):
        if attributes.get("pyramid_redisx.client.name") == client:
            kind = attributes["pyramid_redisx.error.kind"]
            found[kind] = found.get(kind, 0) + point.value
    return found


def test_errors_by_kind(
    make_app: Any, telemetry: Otel, redis_server: Any, silent_listener: int
) -> None:
    from tests.conftest import build_app

    names = {k: k[:4] + uuid.uuid4().hex[:6] for k in
             ("reply", "refused", "timeout", "applied", "pool")}  # fmt: skip
    proxy = ResetAfterReplyProxy(redis_server.port)
    closed = redis_server.port + 0  # replaced below by a port nobody listens on
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings_ = {
        "redis.url": redis_server.url, "redis.metrics": "true", "redis.startup_check": "false",
        "redis.clients": " ".join(names.values()),
        f"redis.{names['refused']}.url": f"redis://127.0.0.1:{closed}/0",
        f"redis.{names['refused']}.retries": "0",
        f"redis.{names['timeout']}.url": f"redis://127.0.0.1:{silent_listener}/0",
        f"redis.{names['timeout']}.socket_timeout": "0.2",
        f"redis.{names['timeout']}.socket_connect_timeout": "0.2",
        f"redis.{names['timeout']}.retries": "0",
        f"redis.{names['applied']}.url": f"redis://127.0.0.1:{proxy.port}/0",
        f"redis.{names['pool']}.max_connections": "1",
        f"redis.{names['pool']}.pool_timeout": "0.05",
    }  # fmt: skip

    def view(request: Any) -> str:
        kind = request.matchdict["kind"]
        client = get_redis(request, names[kind])
        if kind == "reply":
            client.set("t:s", "v")
            command: Any = lambda: client.lpush("t:s", "x")  # noqa: E731
        elif kind == "applied":
            proxy.arm(b"INCR")
            command = lambda: client.incr("t:n")  # noqa: E731
        else:
            command = lambda: client.get("t:x")  # noqa: E731
        try:
            command()
        except Exception as exc:  # noqa: BLE001
            return error_kind(exc)
        return "none"

    def setup(config: Any) -> None:
        config.add_route("kind", "/{kind}")
        config.add_view(lambda request: __import__("pyramid.response").response.Response(view(request)),
                        route_name="kind")  # fmt: skip

    app = build_app(settings_, None, setup)
    try:
        registry = app.app.registry
        pool = get_redis(registry, names["pool"]).connection_pool
        held = pool.get_connection()  # the only connection: the request waits, then fails
        try:
            results = {kind: app.get(f"/{kind}").text for kind in names}
        finally:
            pool.release(held)
        assert results == {"reply": "error_reply", "refused": "connection", "timeout": "timeout",
                           "applied": "may_have_been_applied", "pool": "pool_exhausted"}  # fmt: skip
        for kind, name in names.items():
            assert errors(telemetry, name) == {results[kind]: 1}, kind
    finally:
        client_set(app.app.registry).close()


@contextlib.contextmanager
def a_thread_waiting(make_app: Any, **settings: str) -> Iterator[tuple[Any, str]]:
    """(app, client name) while a client of one connection has it taken and a thread
    waits for it; the connection is given back and the thread joined after."""
    name = "w" + uuid.uuid4().hex[:8]
    app = make_app(clients=name, **{f"{name}.max_connections": "1"}, **settings)
    pool = get_redis(app.app.registry, name).connection_pool
    held = pool.get_connection()
    waiter = threading.Thread(target=lambda: get_redis(app.app.registry, name).get("t:x"))
    waiter.start()
    try:
        yield app, name
    finally:
        pool.release(held)
        waiter.join(5)


def test_pending_requests_while_a_thread_waits(make_app: Any, telemetry: Otel) -> None:
    with a_thread_waiting(make_app, metrics="true") as (_app, name):
        deadline = time.monotonic() + 5
        seen = 0.0
        while time.monotonic() < deadline and not seen:
            seen = telemetry.value(
                "db.client.connection.pending_requests", db__client__connection__pool__name=name
            )
            time.sleep(0.01)
        assert seen == 1
    assert (
        telemetry.value(
            "db.client.connection.pending_requests", db__client__connection__pool__name=name
        )
        == 0
    )


def test_cache_hits_and_misses(make_app: Any, telemetry: Otel) -> None:
    from dogpile.cache import make_region

    from pyramid_redisx.dogpile_cache import region_arguments

    app = make_app(metrics="true")
    region = make_region().configure("pyramid_redisx", arguments=region_arguments(app.app.registry))
    before = {r: telemetry.value("pyramid_redisx.cache.lookups",
                                 pyramid_redisx__cache__name="dogpile",
                                 pyramid_redisx__cache__result=r) for r in ("hit", "miss")}  # fmt: skip
    key = "t:" + uuid.uuid4().hex
    region.get_or_create(key, lambda: "value")  # miss, then stored
    region.get_or_create(key, lambda: "value")  # hit
    region.get(key)  # hit
    region.get(key)  # hit
    region.get_multi([key, key + ":absent"])  # a hit and a miss, each counted
    after = {r: telemetry.value("pyramid_redisx.cache.lookups",
                                pyramid_redisx__cache__name="dogpile",
                                pyramid_redisx__cache__result=r) for r in ("hit", "miss")}  # fmt: skip
    assert after["hit"] - before["hit"] == 4
    assert after["miss"] - before["miss"] == 3  # dogpile looks again under its lock


@pytest.fixture
def origin() -> Any:
    server = Origin()
    try:
        yield server
    finally:
        server.close()


def test_http_cache_hits_and_misses(make_app: Any, telemetry: Otel, origin: Origin) -> None:
    from requests_cache import CachedSession

    from pyramid_redisx import http_cache_backend

    app = make_app(metrics="true")
    session = CachedSession(
        backend=http_cache_backend(app.app.registry, namespace=uuid.uuid4().hex)
    )

    def lookups() -> list[float]:
        return [telemetry.value("pyramid_redisx.cache.lookups", pyramid_redisx__cache__result=r,
                                pyramid_redisx__cache__name="http_cache") for r in ("hit", "miss")]  # fmt: skip

    before = lookups()
    session.get(origin.url)
    assert session.get(origin.url).from_cache
    after = lookups()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


# ------------------------------------------------------------------ Prometheus, one process
def scrape(app: Any, path: str = "/metrics") -> dict[str, list[Any]]:
    response = app.get(path)
    assert response.content_type == "text/plain"
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = list(family.samples)
    return families


def sample(families: dict[str, list[Any]], name: str, **labels: str) -> float:
    total = 0.0
    for samples in families.values():
        for s in samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_prometheus_endpoint(make_app: Any) -> None:
    def view(request: Any) -> str:
        request.redis.set("t:p", "v")
        request.redis.get("t:p")
        return "ok"

    app = make_app({"/": view}, metrics_route="/metrics")
    for _ in range(3):
        app.get("/")
    families = scrape(app)
    pool = {"db_client_connection_pool_name": "default"}
    assert (
        sample(families, "db_client_connection_count", db_client_connection_state="idle", **pool)
        == 1
    )
    assert (
        sample(families, "db_client_connection_count", db_client_connection_state="used", **pool)
        == 0
    )
    assert sample(families, "db_client_connection_max", **pool) == 32
    assert (
        sample(families, "db_client_operation_duration_seconds_count", db_operation_name="GET") == 3
    )
    assert sample(families, "pyramid_redisx_request_commands_count") == 3
    assert sample(families, "pyramid_redisx_request_commands_sum") == 6
    assert sample(families, "db_client_connection_wait_time_seconds_count", **pool) == 3
    # the endpoint shows the add-on's metrics only, and is not a Redis request itself
    assert all(name.startswith(("db_client_", "pyramid_redisx_")) for name in families)
    assert sample(scrape(app), "pyramid_redisx_request_commands_count") == 3


def test_prometheus_collector_for_the_apps_own_registry(make_app: Any) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pyramid_redisx.prometheus import collector

    app = make_app(views(), metrics_route="/redis-metrics")
    app.get("/commands")
    own = CollectorRegistry()
    own.register(collector(app.app.registry))  # type: ignore[arg-type]
    text = generate_latest(own).decode()
    assert 'db_client_operation_duration_seconds_count{db_operation_name="SET"' in text


def test_prometheus_pool_figures_while_a_request_holds_and_another_waits(make_app: Any) -> None:
    with a_thread_waiting(make_app, metrics_route="/metrics") as (app, name):
        labels = {"db_client_connection_pool_name": name}
        deadline = time.monotonic() + 5
        while not sample(
            families := scrape(app), "db_client_connection_pending_requests", **labels
        ):
            assert time.monotonic() < deadline, "the waiting thread was never shown"
            time.sleep(0.01)
        assert sample(families, "db_client_connection_pending_requests", **labels) == 1
        assert sample(families, "db_client_connection_count", db_client_connection_state="used",
                      **labels) == 1  # fmt: skip
        assert sample(families, "db_client_connection_max", **labels) == 1


def test_the_collector_of_an_app_without_the_endpoint_adds_nothing(make_app: Any) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pyramid_redisx.prometheus import collector

    own = CollectorRegistry()
    own.register(collector(make_app().app.registry))  # type: ignore[arg-type]
    assert generate_latest(own) == b""


PROMETHEUS_FAMILIES = {
    "db_client_connection_count": ("gauge", "Connections of the pool by state (used, idle)", ("db_client_connection_pool_name", "db_client_connection_state")),
    "db_client_connection_max": ("gauge", "Most connections the pool may open", ("db_client_connection_pool_name",)),
    "db_client_connection_pending_requests": ("gauge", "Threads waiting for a free pool connection", ("db_client_connection_pool_name",)),
    "db_client_operation_duration_seconds": ("histogram", "Duration of Redis commands and pipelines (the wait for a pool connection excluded)", ("db_operation_name", "error_type", "pyramid_redisx_client_name")),
    "db_client_connection_wait_time_seconds": ("histogram", "Time a request waited for a free pool connection", ("db_client_connection_pool_name",)),
    "pyramid_redisx_request_commands": ("histogram", "Redis commands a request ran, per client", ("pyramid_redisx_client_name",)),
    "pyramid_redisx_errors": ("counter", "Failed commands and pipelines by kind", ("error_type", "pyramid_redisx_client_name", "pyramid_redisx_error_kind")),
    "pyramid_redisx_sentinel_failovers": ("counter", "Master changes a Sentinel client has seen", ()),
    "pyramid_redisx_cluster_redirections": ("counter", "MOVED and ASK replies from Cluster nodes", ()),
    "pyramid_redisx_cache_lookups": ("counter", "HTTP cache and dogpile.cache lookups by result", ("pyramid_redisx_cache_name", "pyramid_redisx_cache_result")),
    "pyramid_redisx_client_cache_hits": ("counter", "Reads the client cache answered from process memory", ("db_client_connection_pool_name",)),
    "pyramid_redisx_client_cache_misses": ("counter", "Reads the client cache could serve but sent to the server", ("db_client_connection_pool_name",)),
    "pyramid_redisx_client_cache_invalidations": ("counter", "Cached replies dropped because their keys changed", ("db_client_connection_pool_name",)),
    "pyramid_redisx_client_cache_flushes": ("counter", "Times the client cache forgot everything (lost invalidations, failover)", ()),
    "pyramid_redisx_client_cache_evictions": ("counter", "Cached replies dropped to stay within the memory bounds", ()),
    "pyramid_redisx_client_cache_entries": ("gauge", "Replies the client cache keeps", ("db_client_connection_pool_name",)),
    "pyramid_redisx_client_cache_bytes": ("gauge", "Memory the kept replies take (estimated)", ("db_client_connection_pool_name",)),
}  # fmt: skip


def test_prometheus_families_have_the_names_types_help_and_labels_a_dashboard_reads(
    make_app: Any,
) -> None:
    """Every family of the endpoint (name, type, HELP, label names), its buckets, the
    error and lookup labels' values, and the response's headers (a scrape is never
    cached on the way)."""
    from dogpile.cache import make_region
    from prometheus_client import CONTENT_TYPE_LATEST

    from pyramid_redisx.dogpile_cache import region_arguments
    from pyramid_redisx.telemetry import COMMANDS_BUCKETS, DURATION_BUCKETS, WAIT_BUCKETS

    def write(request: Any) -> str:
        request.redis.set("t:p", "v")
        request.redis.lpush("t:l", "x")
        with pytest.raises(Exception, match="WRONGTYPE"):
            request.redis.get("t:l")
        return "ok"

    def read(request: Any) -> str:
        return str([request.redis.get("t:p") for _ in range(3)])

    app = make_app({"/write": write, "/read": read}, metrics_route="/metrics", client_cache="true")
    cache = get_redis(app.app.registry).connection_pool.client_cache
    app.get("/write")
    for _ in range(100):  # until the write's own invalidation is behind the reads
        app.get("/read")
        if cache.figures()["hits"]:
            break
        time.sleep(0.01)
    app.get("/write")  # the cached t:p invalidated
    region = make_region().configure("pyramid_redisx", arguments=region_arguments(app.app.registry))
    region.get("t:absent")
    region.set("t:present", 1)
    region.get("t:present")
    response = app.get("/metrics")
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert response.headers["Cache-Control"] == "no-store"
    seen, buckets, samples = {}, {}, {}
    for family in text_string_to_metric_families(response.text):
        if family.name.endswith("_created"):
            continue  # prometheus_client's own creation times
        labels = tuple(sorted({k for s in family.samples for k in s.labels if k != "le"}))
        seen[family.name] = (family.type, family.documentation, labels)
        bounds = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
        if bounds:
            buckets[family.name] = tuple(sorted(set(bounds)))
        samples[family.name] = family.samples
    # redirections are counted per process: labelled once any test of the session saw one
    kind = ("pyramid_redisx_redirection_kind",)
    if seen["pyramid_redisx_cluster_redirections"][2] == kind:
        seen["pyramid_redisx_cluster_redirections"] = (
            *seen["pyramid_redisx_cluster_redirections"][:2],
            (),
        )
    assert seen == PROMETHEUS_FAMILIES
    inf = (float("inf"),)
    assert buckets == {
        "db_client_operation_duration_seconds": tuple(map(float, DURATION_BUCKETS)) + inf,
        "db_client_connection_wait_time_seconds": tuple(map(float, WAIT_BUCKETS)) + inf,
        "pyramid_redisx_request_commands": tuple(map(float, COMMANDS_BUCKETS)) + inf,
    }
    errors = [
        (s.labels, s.value) for s in samples["pyramid_redisx_errors"] if s.name.endswith("_total")
    ]
    assert errors == [({"pyramid_redisx_client_name": "default",
                        "pyramid_redisx_error_kind": "error_reply",
                        "error_type": "ResponseError"}, 2.0)]  # fmt: skip
    failed = [s for s in samples["db_client_operation_duration_seconds"]
              if s.name.endswith("_count") and s.labels["error_type"]]  # fmt: skip
    assert [(s.labels["db_operation_name"], s.labels["error_type"], s.value) for s in failed] == [
        ("GET", "ResponseError", 2.0)
    ]
    lookups = {(s.labels["pyramid_redisx_cache_name"], s.labels["pyramid_redisx_cache_result"]): s.value
               for s in samples["pyramid_redisx_cache_lookups"] if s.name.endswith("_total")}  # fmt: skip
    assert lookups == {("dogpile", "miss"): 1.0, ("dogpile", "hit"): 1.0}
    for family in ("db_client_operation_duration_seconds", "pyramid_redisx_request_commands"):
        assert {s.labels["pyramid_redisx_client_name"] for s in samples[family]} == {"default"}
    figures = {name: sum(s.value for s in samples[f"pyramid_redisx_client_cache_{name}"]
                         if not s.name.endswith("_created"))
               for name in ("hits", "misses", "invalidations", "flushes", "evictions",
                            "entries", "bytes")}  # fmt: skip
    now = cache.figures()
    assert figures == {name: now[name] for name in figures}
    assert figures["hits"] >= 1 and figures["misses"] >= 1 and figures["invalidations"] >= 1


@pytest.fixture
def multiprocess_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """prometheus_client's multiprocess mode in this process, as a worker would have it
    from ``PROMETHEUS_MULTIPROC_DIR`` at import: metrics made now keep their figures in
    files there (the real mmap files); the mode is restored after the test."""
    from prometheus_client import values

    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    return tmp_path


def used_on_disk(directory: Path) -> float:
    """Connections in use as the files say, read without the endpoint (whose scrape
    writes this process's figures first)."""
    from prometheus_client import multiprocess

    return sum(s.value for family in multiprocess.MultiProcessCollector(None, str(directory)).collect()
               if family.name == "db_client_connection_count" for s in family.samples
               if s.labels.get("db_client_connection_state") == "used")  # fmt: skip


def _a_dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_multiprocess_mode_in_a_worker(make_app: Any, multiprocess_mode: Path) -> None:
    """A worker's pool figures go to its live files at its first request, a thread of
    its own keeps them fresh, and the scrape sums the files; a dead worker's live files
    are removed at the scrape."""
    from pyramid_redisx import prometheus

    app = make_app({"/": lambda request: str(request.redis.incr("t:mp"))}, metrics_route="/metrics")
    assert not [t for t in threading.enumerate() if t.name == "pyramid_redisx-prometheus"]
    for _ in range(3):
        app.get("/")
    (refresher,) = [t for t in threading.enumerate() if t.name == "pyramid_redisx-prometheus"]
    assert refresher.daemon  # never holds the worker's exit
    # the thread writes the figures with no request running (a stalled Redis holds them all)
    pool = get_redis(app.app.registry).connection_pool
    held = pool.get_connection()
    try:
        deadline = time.monotonic() + 5
        while used_on_disk(multiprocess_mode) != 1:
            assert time.monotonic() < deadline, "the refresher never wrote the held connection"
            time.sleep(0.05)
    finally:
        pool.release(held)
    files = sorted(p.name for p in multiprocess_mode.iterdir())
    assert f"gauge_livesum_{os.getpid()}.db" in files and f"histogram_{os.getpid()}.db" in files
    dead = _a_dead_pid()
    (multiprocess_mode / f"gauge_livesum_{dead}.db").write_bytes(b"")
    (multiprocess_mode / f"gauge_liveall_{dead}.db").write_bytes(b"")
    families = scrape(app)
    pool = {"db_client_connection_pool_name": "default"}
    assert (
        sample(families, "db_client_connection_count", db_client_connection_state="idle", **pool)
        == 1
    )
    assert (
        sample(families, "db_client_operation_duration_seconds_count", db_operation_name="INCRBY")
        == 3
    )
    assert not any(name.startswith("process_") or name.startswith("python_") for name in families)
    left = {p.name for p in multiprocess_mode.iterdir()}
    assert f"gauge_livesum_{dead}.db" not in left and f"gauge_liveall_{dead}.db" not in left
    assert f"gauge_livesum_{os.getpid()}.db" in left  # this process's: it runs
    # gunicorn's child_exit hook: a worker's live files go as it exits
    prometheus.child_exit(None, type("Worker", (), {"pid": os.getpid()})())
    assert f"gauge_livesum_{os.getpid()}.db" not in {p.name for p in multiprocess_mode.iterdir()}


def test_multiprocess_directory_is_checked_and_read_from_either_name(
    make_app: Any, multiprocess_mode: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import values

    from pyramid_redisx.prometheus import multiprocess_dir

    assert multiprocess_dir() == str(multiprocess_mode)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    monkeypatch.setenv("prometheus_multiproc_dir", str(multiprocess_mode))
    assert multiprocess_dir() == str(multiprocess_mode)  # the older name prometheus_client reads
    missing = multiprocess_mode / "absent"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    with pytest.raises(ConfigurationExecutionError) as error:
        make_app(metrics_route="/metrics")  # raised as the app's configuration is committed
    assert isinstance(error.value.evalue, RedisSettingsError)
    assert str(error.value.evalue) == (
        f"redis.metrics_route = '/metrics' is not valid: PROMETHEUS_MULTIPROC_DIR={missing} "
        "is not a directory: create it (empty) before the server starts"
    )
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)  # decided at import
    assert multiprocess_dir() is None


# ------------------------------------------------------------------ Sentry
SENTRY_SCRIPT = r"""
import json, sys
import sentry_sdk
from sentry_sdk.transport import Transport
from sentry_sdk.integrations.redis import RedisIntegration
import redis

events = []

class Local(Transport):  # keeps the envelopes: never the network
    def capture_envelope(self, envelope):
        for item in envelope.items:
            if item.type == "transaction":
                events.append(item.payload.json)

sentry_sdk.init(dsn="http://key@127.0.0.1:1/1", transport=Local, traces_sample_rate=1.0,
                integrations=[RedisIntegration()], default_integrations=False)

from tests.conftest import build_app

url = sys.argv[1]
def view(request):
    request.redis.set("s:key", "secret-value")
    request.redis.get("s:key")
    pipe = request.redis.pipeline(transaction=False)
    pipe.set("s:a", "secret-a")
    pipe.incr("s:n")
    pipe.execute()
    return "ok"

plain = redis.Redis.from_url(url)
app = build_app({"redis.url": url, "redis.tracing": sys.argv[2]}, {"/": view})
for label in ("redisx", "plain"):
    with sentry_sdk.start_transaction(name=label):
        if label == "redisx":
            app.get("/")
        else:
            plain.set("s:key", "secret-value")
            plain.get("s:key")
            pipe = plain.pipeline(transaction=False)
            pipe.set("s:a", "secret-a")
            pipe.incr("s:n")
            pipe.execute()
sentry_sdk.flush()
out = {e["transaction"]: [(s["op"], s["description"]) for s in e["spans"] if s["op"].startswith("db")]
       for e in events}
print(json.dumps(out))
"""


@pytest.mark.parametrize("tracing", ["false", "true"])
def test_sentry_sees_request_redis_as_plain_redis_py(redis_url: str, tracing: str) -> None:
    """In a child process (Sentry patches redis-py's classes for good), through a
    transport that keeps the events in memory."""
    result = subprocess.run(
        [sys.executable, "-c", SENTRY_SCRIPT, redis_url, tracing],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SENTRY_DSN": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spans = json.loads(result.stdout.strip().splitlines()[-1])
    assert spans["redisx"] == spans["plain"]
    assert [op for op, _ in spans["plain"]] == ["db.redis", "db.redis", "db.redis"]
    assert "secret" not in json.dumps(spans)


def test_grafana_dashboard_reads_only_metrics_the_endpoint_exposes(make_app: Any) -> None:
    """Every series the committed dashboard queries is one the endpoint can expose."""
    app = make_app(views(), metrics_route="/metrics")
    app.get("/commands")
    exposed: set[str] = set()
    for family in text_string_to_metric_families(app.get("/metrics").text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        exposed |= {family.name + s for s in suffixes.get(family.type, ("",))}
    dashboard = json.loads((ROOT / "docs" / "grafana" / "pyramid_redisx.json").read_text())
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(
                re.findall(r"\b((?:db_client|pyramid_redisx)_[a-z_]+)\{", target["expr"])
            )
            queried |= set(
                re.findall(r"\b((?:db_client|pyramid_redisx)_[a-z_]+)\[", target["expr"])
            )
    assert queried and queried <= exposed, sorted(queried - exposed)


def test_client_cache_figures_in_otel_and_prometheus(make_app: Any, telemetry: Otel) -> None:
    def view(request: Any) -> str:
        return str(request.redis.get("t:cached"))

    app = make_app({"/": view}, metrics="true", metrics_route="/metrics", client_cache="true")
    cache = client_set(app.app.registry).caches["default"]
    app.get("/")
    deadline = time.monotonic() + 5
    while cache.listener_id is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(4):
        app.get("/")
    figures = cache.figures()
    assert figures["hits"] >= 3 and figures["entries"] == 1
    pool = {"db.client.connection.pool.name": "default"}
    otel_hits = sum(p.value for a, p in telemetry.points("pyramid_redisx.client_cache.hits")
                    if a == pool)  # fmt: skip
    assert otel_hits == figures["hits"]
    assert telemetry.value("pyramid_redisx.client_cache.entries") >= 1
    assert telemetry.value("pyramid_redisx.client_cache.bytes") == figures["bytes"]
    families = scrape(app)
    label = {"db_client_connection_pool_name": "default"}
    assert sample(families, "pyramid_redisx_client_cache_hits_total", **label) == figures["hits"]
    assert (
        sample(families, "pyramid_redisx_client_cache_misses_total", **label) == figures["misses"]
    )
    assert sample(families, "pyramid_redisx_client_cache_entries", **label) == 1


# What a dashboard is built on: every instrument's name, kind, unit, description and
# buckets, read through a meter provider of the test's own (the process's instruments
# are made once, at first use: here they are made again for this provider).
INSTRUMENTS = {
    "db.client.operation.duration": ("histogram", "s", "Duration of Redis commands and pipelines (the wait for a pool connection excluded)"),
    "pyramid_redisx.errors": ("counter", "{error}", "Failed commands and pipelines by kind (connection, timeout, may_have_been_applied, pool_exhausted, error_reply, other)"),
    "db.client.connection.wait_time": ("histogram", "s", "Time a request waited for a free pool connection"),
    "pyramid_redisx.request.commands": ("histogram", "{command}", "Redis commands a request ran, per client"),
    "pyramid_redisx.cache.lookups": ("counter", "{lookup}", "HTTP cache and dogpile.cache lookups by result (hit, miss)"),
    "db.client.connection.count": ("gauge", "{connection}", "Connections of the pool by state (used, idle)"),
    "db.client.connection.max": ("gauge", "{connection}", "Most connections the pool may open"),
    "db.client.connection.pending_requests": ("gauge", "{request}", "Threads waiting for a free pool connection"),
    "pyramid_redisx.cluster.redirections": ("counter", "{redirection}", "MOVED and ASK replies received from Cluster nodes"),
    "pyramid_redisx.client_cache.hits": ("counter", "{read}", "Reads the client cache answered from process memory"),
    "pyramid_redisx.client_cache.misses": ("counter", "{read}", "Reads the client cache could serve but sent to the server"),
    "pyramid_redisx.client_cache.invalidations": ("counter", "{entry}", "Cached replies dropped because their keys changed"),
    "pyramid_redisx.client_cache.flushes": ("counter", "{flush}", "Times the client cache forgot everything (lost invalidations, failover)"),
    "pyramid_redisx.client_cache.evictions": ("counter", "{entry}", "Cached replies dropped to stay within the memory bounds"),
    "pyramid_redisx.client_cache.entries": ("gauge", "{entry}", "Replies the client cache keeps"),
    "pyramid_redisx.client_cache.bytes": ("gauge", "By", "Memory the kept replies take (estimated)"),
}  # fmt: skip
BUCKETS = {
    "db.client.operation.duration": (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    "db.client.connection.wait_time": (0.0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    "pyramid_redisx.request.commands": (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
}  # fmt: skip


def test_every_instrument_has_the_name_unit_and_description_the_docs_list(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dogpile.cache import make_region
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, Sum

    from pyramid_redisx import telemetry as telemetry_module
    from pyramid_redisx.dogpile_cache import region_arguments

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(telemetry_module, "_OTEL", [])
    monkeypatch.setattr(metrics, "get_meter", provider.get_meter)

    def view(request: Any) -> str:
        request.redis.set("t:doc", "v")
        request.redis.get("t:doc")
        request.redis.get("t:doc")  # a hit of the client cache
        request.redis.lpush("t:list", "x")
        with pytest.raises(Exception, match="WRONGTYPE"):
            request.redis.get("t:list")
        return "ok"

    app = make_app({"/": view}, metrics="true", client_cache="true")
    app.get("/")
    region = make_region().configure("pyramid_redisx", arguments=region_arguments(app.app.registry))
    region.get("t:absent")
    seen: dict[str, tuple[str, str, str]] = {}
    buckets: dict[str, tuple[float, ...]] = {}
    keys: dict[str, set[tuple[str, ...]]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            assert scope.scope.name == "pyramid_redisx"  # the meter's name
            for metric in scope.metrics:
                points = list(metric.data.data_points)
                assert points, metric.name  # each instrument was recorded or observed
                if isinstance(metric.data, Histogram):
                    kind = "histogram"
                    buckets[metric.name] = tuple(points[0].explicit_bounds)
                elif isinstance(metric.data, Sum):
                    kind = "counter" if metric.data.is_monotonic else "gauge"
                else:
                    kind = type(metric.data).__name__
                seen[metric.name] = (kind, metric.unit, metric.description)
                keys[metric.name] = {tuple(sorted(p.attributes or {})) for p in points}
                if metric.name == "db.client.connection.count":
                    states = {p.attributes["db.client.connection.state"] for p in points}
                    assert states == {"used", "idle"}
                if metric.name == "pyramid_redisx.cluster.redirections":
                    kinds = {p.attributes["pyramid_redisx.redirection.kind"] for p in points}
                    assert kinds == {"moved", "ask"}
    assert seen == INSTRUMENTS  # and Sentinel's failovers, in tests/topology
    assert buckets == BUCKETS
    pool, client = "db.client.connection.pool.name", "pyramid_redisx.client.name"
    operation = ("db.operation.name", "db.system.name", client)
    assert keys == {
        "db.client.operation.duration": {operation, tuple(sorted((*operation, "error.type")))},
        "pyramid_redisx.errors": {("error.type", client, "pyramid_redisx.error.kind")},
        "db.client.connection.wait_time": {(pool,)},
        "pyramid_redisx.request.commands": {(client,)},
        "pyramid_redisx.cache.lookups": {
            ("pyramid_redisx.cache.name", "pyramid_redisx.cache.result")
        },
        "db.client.connection.count": {(pool, "db.client.connection.state")},
        "db.client.connection.max": {(pool,)},
        "db.client.connection.pending_requests": {(pool,)},
        "pyramid_redisx.cluster.redirections": {("pyramid_redisx.redirection.kind",)},
        **{name: {(pool,)} for name in INSTRUMENTS if ".client_cache." in name},
    }
    docs = (ROOT / "docs" / "operations.rst").read_text()
    for name in INSTRUMENTS:
        leaf = "." + name.rsplit(".", 1)[1]
        assert f"``{name}``" in docs or f"``{leaf}``" in docs, name


@pytest.mark.parametrize(
    ("setting", "module", "extra"),
    [("tracing", "opentelemetry.trace", "otel"), ("metrics", "opentelemetry.metrics", "otel"),
     ("metrics_route", "prometheus_client", "prometheus")],
)  # fmt: skip
def test_a_telemetry_setting_without_its_extra_names_the_extra(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, setting: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    value = "/metrics" if setting == "metrics_route" else "true"
    with pytest.raises(RedisSettingsError) as error:
        make_app(**{setting: value})
    assert str(error.value) == (
        f"redis.{setting} = 'on' is not valid: needs the {extra} extra: "
        f"pip install 'pyramid_redisx[{extra}]'"
    )


def test_statements_show_keys_as_text_and_cut_long_ones() -> None:
    from pyramid_redisx.telemetry import KEY_SHOWN, pipeline_statement

    exact = "k" * KEY_SHOWN
    assert statement(("GET", exact), "keys") == f"GET {exact}"  # as long as allowed: whole
    assert statement(("GET", exact + "k"), "keys") == f"GET {exact}…"
    assert statement(("GET", b"\xffkey"), "keys") == "GET \ufffdkey"  # undecodable bytes
    assert statement(("CLIENT", "kill", "x"), "keys") == "CLIENT KILL ?"
    assert statement(("CLIENT", "a" * 21), "keys") == "CLIENT ?"  # no subcommand that long
    assert statement(("CLIENT", "a" * 20), "keys") == f"CLIENT {'A' * 20}"
    assert statement(("OBJECT", "freq2", "k"), "keys") == "OBJECT ? ?"  # not a word
    stack = [("SET", "a", "v"), ("PING",)]
    assert pipeline_statement(stack, "keys") == "SET a ?\nPING"
    assert pipeline_statement(stack, "none") is None


def test_an_error_of_no_known_kind_is_other_with_its_python_name(
    make_app: Any, telemetry: Otel
) -> None:
    """A response callback that raises ``ValueError`` (a builtin): the span's
    ``error.type`` is its bare name and the errors metric counts it as ``other``."""

    def view(request: Any) -> str:
        request.redis.set_response_callback("GET", lambda response, **options: int("x"))
        with pytest.raises(ValueError):
            request.redis.get("t:k")
        return "ok"

    app = make_app({"/": view}, tracing="true", metrics="true")
    telemetry.exporter.clear()
    app.get("/")
    (span,) = [s for s in telemetry.redis_spans() if s.name == "GET"]
    assert span.attributes["error.type"] == "ValueError"
    assert error_kind(ValueError("x")) == "other"
    assert telemetry.value("pyramid_redisx.errors", pyramid_redisx__error__kind="other",
                           error__type="ValueError") >= 1  # fmt: skip
