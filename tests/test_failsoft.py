"""Fail-soft caches and the outage's visibility (stats line, health view, toolbar, check),
on real servers that are stopped or blackholed."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dogpile.cache import make_region
from pyramid.config import Configurator
from requests_cache import CachedSession

from pyramid_redisx import RedisCircuitOpen, fail_soft, get_redis
from pyramid_redisx.breaker import OPEN, breaker_of
from pyramid_redisx.cli import main as cli_main
from pyramid_redisx.dogpile_cache import region_arguments
from pyramid_redisx.failsoft import soft_failures
from pyramid_redisx.health import HEALTH_TIMEOUT
from pyramid_redisx.http_cache import http_cache_backend
from tests.reliability.blackhole import Blackhole
from tests.test_http_cache import Origin
from tests.test_stats import LINE

FAST = {
    "socket_timeout": "0.3",
    "socket_connect_timeout": "0.3",
    "retries": "1",
    "startup_check": "false",
    "breaker_failures": "2",
    "breaker_cooldown": "30",
}


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    try:
        yield server
    finally:
        server.close()


def open_circuit(app: Any, name: str = "default") -> None:
    client = get_redis(app.app.registry, name)
    for _ in range(10):
        if breaker_of(client.connection_pool).state == OPEN:
            return
        with contextlib.suppress(redis.RedisError):
            client.get("k")
    raise AssertionError("the circuit did not open")


# ------------------------------------------------------------------ fail_soft()
def test_fail_soft_gives_the_default_and_counts_it(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()

    def view(request: Any) -> str:
        cache = fail_soft(request.redis)
        page = cache.get("page")
        if page is None:
            page = b"rendered"
            cache.set("page", page, ex=60)
        pipe = cache.pipeline()
        pipe.incr("views")
        pipe.get("page")
        return f"{page.decode()} {pipe.execute()!r} {cache.failures}"

    app = make_app({"/": view}, url=server.url, **FAST)
    caplog.set_level(logging.DEBUG, logger="pyramid_redisx.stats")
    assert app.get("/").text == "rendered [1, b'rendered'] 0"
    healthy = [r.getMessage() for r in caplog.records if r.name == "pyramid_redisx.stats"]
    assert LINE.match(healthy[-1]), healthy  # the healthy line ends where the contract does
    server.stop()
    caplog.clear()
    assert app.get("/").text == "rendered None 3"  # get, set and the pipeline: each a default
    assert app.get("/").text == "rendered None 3"
    records = [r for r in caplog.records if r.name == "pyramid_redisx.stats"]
    assert records[-1].getMessage().endswith(" circuit=open soft_failures=3")
    assert LINE.match(records[-1].getMessage().rsplit(" circuit=", 1)[0])
    assert records[-1].redis_circuit == "open"  # type: ignore[attr-defined]
    assert records[-1].redis_soft_failures == 3  # type: ignore[attr-defined]
    assert soft_failures(get_redis(app.app.registry).connection_pool) == 6


def test_fail_soft_raises_what_is_not_an_outage(make_app: Any, redis_url: str) -> None:
    def view(request: Any) -> str:
        request.redis.lpush("list", "x")
        return repr(fail_soft(request.redis).get("list"))  # WRONGTYPE: a bug, not an outage

    app = make_app({"/": view}, **FAST)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        app.get("/")


# ------------------------------------------------------------------ integrations
def test_http_cache_is_a_miss_while_redis_is_down(
    make_app: Any, redis_server_factory: Any, origin: Origin
) -> None:
    server = redis_server_factory()
    registry = make_app(url=server.url, **FAST, fail_soft="true").app.registry
    session = CachedSession(backend=http_cache_backend(registry))
    assert session.get(origin.url).text == "hit 1"
    assert session.get(origin.url).from_cache  # type: ignore[attr-defined]
    server.stop()
    for hit in (2, 3, 4):  # the origin answers; nothing is stored, nothing raises
        response = session.get(origin.url)
        assert response.text == f"hit {hit}" and not response.from_cache  # type: ignore[attr-defined]
    assert breaker_of(get_redis(registry).connection_pool).state == OPEN
    assert soft_failures(get_redis(registry).connection_pool) >= 6  # reads and writes


def test_http_cache_without_fail_soft_still_raises(
    make_app: Any, redis_server_factory: Any, origin: Origin
) -> None:
    server = redis_server_factory()
    registry = make_app(url=server.url, **FAST).app.registry
    session = CachedSession(backend=http_cache_backend(registry))
    server.stop()
    with pytest.raises(redis.ConnectionError):
        session.get(origin.url)


@pytest.mark.parametrize("distributed_lock", [False, True])
def test_dogpile_region_computes_and_serves_while_redis_is_down(
    make_app: Any, redis_server_factory: Any, distributed_lock: bool
) -> None:
    server = redis_server_factory()
    calls: list[int] = []
    region = make_region()

    def setup(config: Configurator) -> None:
        region.configure("pyramid_redisx", expiration_time=300, arguments=region_arguments(
            config.registry, "cache", distributed_lock=distributed_lock, thread_local_lock=False))  # fmt: skip

    def view(request: Any) -> str:
        return str(region.get_or_create("answer", lambda: calls.append(1) or 42))

    app = make_app({"/": view}, setup, clients="cache", url=server.url, **FAST,
                   **{"cache.fail_soft": "true"})  # fmt: skip
    assert [app.get("/").text for _ in range(2)] == ["42", "42"]
    assert calls == [1]
    server.stop()
    assert [app.get("/").text for _ in range(3)] == ["42"] * 3  # computed each time
    assert calls == [1, 1, 1, 1]
    cache_pool = get_redis(app.app.registry, "cache").connection_pool
    assert soft_failures(cache_pool) >= 3 and breaker_of(cache_pool).state == OPEN


def test_sessions_never_fail_soft(make_app: Any, redis_server_factory: Any) -> None:
    """The session client fails fast with the circuit, fail_soft or not: a session lost
    silently is data loss. The session packages call our client_callable; its client is
    the plain one."""
    from pyramid_redisx.sessions import client_callable

    server = redis_server_factory()
    captured: list[Any] = []

    def view(request: Any) -> str:
        client = client_callable(request)
        captured.append(client)
        return repr(client.get("session:x"))

    app = make_app({"/": view}, url=server.url, **FAST, fail_soft="true")
    assert app.get("/").text == "None"
    server.stop()
    open_circuit(app)
    with pytest.raises(RedisCircuitOpen):
        app.get("/")


# ------------------------------------------------------------------ visibility
def test_health_view_says_circuit_open_within_its_timeout(make_app: Any, redis_server: Any) -> None:
    proxy = Blackhole(("127.0.0.1", redis_server.port)).start()
    try:
        app = make_app(url=f"redis://{proxy.address}/0", health_route="/health", **FAST)
        body = app.get("/health").json
        assert body["clients"]["default"]["circuit"] == "closed"
        assert body["clients"]["default"]["soft_failures"] == 0
        proxy.blackhole()
        open_circuit(app)
        started = time.perf_counter()
        response = app.get("/health", status=503)
        elapsed = time.perf_counter() - started
        entry = response.json["clients"]["default"]
        assert entry["circuit"] == "open" and not entry["ok"]
        assert entry["error"].startswith("timeout")
        assert elapsed < HEALTH_TIMEOUT + 0.5, elapsed
    finally:
        proxy.close()


def test_toolbar_panel_shows_the_open_circuit(make_app: Any, redis_server_factory: Any) -> None:
    from pyramid_redisx.debugtoolbar import render, summarize
    from pyramid_redisx.usage import TRACE, USAGES

    server = redis_server_factory()
    summaries: list[Any] = []

    def view(request: Any) -> str:
        request.__dict__[TRACE] = True
        value = fail_soft(request.redis).get("k")
        summaries.append(summarize(list(request.__dict__[USAGES])))
        return repr(value)

    app = make_app({"/": view}, url=server.url, **FAST)
    server.stop()
    open_circuit(app)
    assert app.get("/").text == "None"
    html = render(summaries[-1])
    assert '<td class="redisx-circuit">open</td><td>1</td>' in html


def test_check_command_shows_the_breaker_settings(
    tmp_path: Path, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = tmp_path / "app.ini"
    ini.write_text(
        f"[app:main]\nuse = call:demo_app:main\nredis.url = {redis_server.url}\n"
        "redis.clients = cache\nredis.cache.breaker_cooldown = 3 seconds\n"
        "redis.cache.fail_soft = true\nredis.cache.breaker_failures = 10\n"
    )
    out = _Out()
    assert cli_main(["check", str(ini)], out) == 0
    default, cache = out.text.splitlines()
    assert default.endswith("breaker_failures=5 breaker_cooldown=1s"), default
    assert cache.endswith("breaker_failures=10 breaker_cooldown=3s fail_soft=true"), cache


class _Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_open_circuit_warnings_are_per_state_change_not_per_request(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()
    app = make_app({"/": lambda request: repr(fail_soft(request.redis).get("k"))},
                   url=server.url, **FAST)  # fmt: skip
    caplog.set_level(logging.DEBUG)
    server.stop()
    for _ in range(200):
        assert app.get("/").text == "None"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["pyramid_redisx.breaker"], [
        r.getMessage() for r in warnings
    ]
    assert re.search(r"circuit open: 2 failures in a row", warnings[0].getMessage())
    assert json.dumps(warnings[0].getMessage())  # one line, plain text


def test_fail_soft_with_a_default_keeps_arguments_and_the_last_error(
    make_app: Any, redis_server_factory: Any
) -> None:
    """A default of the app's choosing, for commands and a pipeline's ``execute()``;
    keyword arguments reach Redis (``ex``: a TTL on the server); ``last_error`` says what
    was swallowed, for the app's own log."""
    server = redis_server_factory()
    seen: list[Any] = []

    def view(request: Any) -> str:
        cache = fail_soft(request.redis, default="fallback")
        cache.set("k", "v", ex=60)
        pipe = cache.pipeline()
        pipe.get("k")
        seen.append(cache.last_error)
        return f"{cache.get('k')!r} {pipe.execute()!r}"

    app = make_app({"/": view}, url=server.url, **FAST)
    assert app.get("/").text == "b'v' [b'v']"
    assert 0 < server.client().ttl("k") <= 60
    assert seen == [None]
    server.stop()
    assert app.get("/").text == "'fallback' 'fallback'"
    assert isinstance(seen[-1], redis.ConnectionError | RedisCircuitOpen), seen
