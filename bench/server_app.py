"""The apps bench/bench_server.py serves: one variant per process, under waitress.

    BENCH_VARIANT=redisx BENCH_REDIS_URL=redis://127.0.0.1:6379/0 \\
        BENCH_PORT=8080 BENCH_THREADS=8 python bench/server_app.py

Every app is a Pyramid ``Configurator`` app with one route ``/`` and one view, plus an
exception view that turns any redis-py error into a 503 whose body is the exception's
class and message. ``make_app()`` (no arguments) reads the same variables, so
``waitress-serve --call server_app:make_app`` works too.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import redis
import waitress
from pyramid.config import Configurator
from pyramid.events import NewResponse
from pyramid.response import Response

KEY = "bench:key"
VALUE = b"v" * 32
HELLO = b"hello"
SLEPT = b"slept"
SLEEP_SECONDS = "0.002"  # DEBUG SLEEP in the pool-pressure view: holds its connection
PRESSURE_MAX_CONNECTIONS = 8

# Built once per process by make_app (bare: the client; websauna: only the pool).
BARE: redis.Redis | None = None
POOL: redis.BlockingConnectionPool | None = None


# ----------------------------------------------------------------------------- views
def bare_view(request: Any) -> Response:
    return Response(body=BARE.get(KEY))  # type: ignore[union-attr]


def redisx_view(request: Any) -> Response:
    return Response(body=request.redis.get(KEY))


def websauna_view(request: Any) -> Response:
    # websauna's get_redis(): a new client around the shared pool on every call
    client = redis.Redis(connection_pool=POOL)
    return Response(body=client.get(KEY))


def no_redis_view(request: Any) -> Response:
    return Response(body=HELLO)


def sleep_view(request: Any) -> Response:
    request.redis.execute_command("DEBUG", "SLEEP", SLEEP_SECONDS)
    return Response(body=SLEPT)


def redis_error_view(exc: Exception, request: Any) -> Response:
    body = f"{type(exc).__name__}: {exc}".encode()
    return Response(status=503, body=body, content_type="text/plain")


# ----------------------------------------------------------------------------- apps
def blocking_pool(url: str, max_connections: int = 32) -> redis.BlockingConnectionPool:
    """The pool of the baseline (and of websauna), as the NOTES recommend."""
    parts = urlsplit(url)
    return redis.BlockingConnectionPool(
        host=parts.hostname,
        port=parts.port,
        max_connections=max_connections,
        timeout=5,
        socket_timeout=2,
        socket_connect_timeout=2,
    )


def redisx_settings(variant: str, url: str) -> dict[str, str] | None:
    """The settings to include pyramid_redisx with, or None for no include."""
    pressure = {"redis.url": url, "redis.max_connections": str(PRESSURE_MAX_CONNECTIONS)}
    return {
        "redisx": {"redis.url": url},
        "redisx_cached": {"redis.url": url, "redis.client_cache": "true"},
        "contention_redisx": pressure,
        "redisx_per_command": {"redis.url": url, "redis.request_connection": "false"},
        "pressure_blocking": pressure,
        "pressure_nonblocking": {**pressure, "redis.blocking": "false"},
    }.get(variant)


VIEWS = {
    "bare": bare_view,
    "bare_extras": bare_view,
    "redisx": redisx_view,
    "redisx_cached": redisx_view,
    "websauna": websauna_view,
    "contention_bare": bare_view,
    "contention_redisx": redisx_view,
    "redisx_per_command": redisx_view,
    "no_redis": no_redis_view,
    "pressure_blocking": sleep_view,
    "pressure_nonblocking": sleep_view,
}


def make_app(variant: str | None = None, url: str | None = None) -> Any:
    """The WSGI app of ``variant`` (default ``$BENCH_VARIANT``) on ``url``."""
    global BARE, POOL
    variant = variant or os.environ["BENCH_VARIANT"]
    url = url or os.environ["BENCH_REDIS_URL"]
    if variant not in VIEWS:
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VIEWS)}")
    if variant in ("bare", "bare_extras"):
        BARE = redis.Redis(connection_pool=blocking_pool(url))
    elif variant == "contention_bare":
        BARE = redis.Redis(connection_pool=blocking_pool(url, PRESSURE_MAX_CONNECTIONS))
    elif variant == "websauna":
        POOL = blocking_pool(url)
    settings = redisx_settings(variant, url)
    with Configurator(settings=dict(settings or {})) as config:
        if settings is not None:
            config.include("pyramid_redisx")
        if variant in ("bare_extras", "contention_bare"):
            # Pyramid's fixed cost of any request property + NewResponse subscriber (what
            # the include adds to an app that has none: pyramid_tm's request.tm has one).
            config.add_request_method(lambda request: object(), "dummy", reify=True)
            config.add_subscriber(lambda event: None, NewResponse)
        config.add_route("bench", "/")
        config.add_view(VIEWS[variant], route_name="bench")
        config.add_view(redis_error_view, context=redis.RedisError)
    return config.make_wsgi_app()


def main() -> None:
    waitress.serve(
        make_app(),
        host="127.0.0.1",
        port=int(os.environ["BENCH_PORT"]),
        threads=int(os.environ.get("BENCH_THREADS", "8")),
    )


if __name__ == "__main__":
    main()
