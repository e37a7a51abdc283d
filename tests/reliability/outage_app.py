"""The app of the outage tests and bench, configured from the environment.

    python -m waitress --threads=8 --port=P --call tests.reliability.outage_app:make_app
    python -m gunicorn -w 2 -k gthread --threads 4 'tests.reliability.outage_app:make_app()'

Views: ``/free`` never touches Redis; ``/plain`` reads through ``request.redis`` (503
from the exception view when that fails); ``/soft`` reads through
``fail_soft(request.redis)`` (200 always; "miss <error>" when Redis failed); ``/write/<id>`` does ``HINCRBY writes <id> 1`` (200 = acknowledged);
``/whoami`` gives the worker's pid. A 503's body names the exception class.

Environment: ``OUTAGE_URL`` (Redis), ``OUTAGE_BREAKER`` (``0`` turns the breaker off),
``OUTAGE_COOLDOWN`` (seconds, default 1) and the short timeouts of ``SETTINGS``.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_redisx import fail_soft

# The timeouts the tests and the bench use (docs/outages.rst: tuning): a stalled server
# holds a request 0.5 s per try, and one retry after a refused connect.
SETTINGS = {
    "redis.socket_timeout": "0.5",
    "redis.socket_connect_timeout": "0.5",
    "redis.retries": "1",
    "redis.pool_timeout": "2",
    "redis.max_connections": "8",
    "redis.startup_check_timeout": "1",
}


def free(request: Any) -> Response:
    return Response("free")


def plain(request: Any) -> Response:
    return Response(repr(request.redis.get("page")))


def soft(request: Any) -> Response:
    cache = fail_soft(request.redis)
    cached = cache.get("page")
    if cached is not None:
        return Response("hit")
    return Response(f"miss {type(cache.last_error).__name__}")


def write(request: Any) -> Response:
    return Response(str(request.redis.hincrby("writes", request.matchdict["id"], 1)))


def whoami(request: Any) -> Response:
    return Response(str(os.getpid()))


def unavailable(exc: BaseException, request: Any) -> Response:
    return Response(type(exc).__name__, status=503)


def make_app(**overrides: Any) -> Any:
    settings = dict(SETTINGS)
    settings["redis.url"] = os.environ["OUTAGE_URL"]
    settings["redis.breaker_failures"] = os.environ.get("OUTAGE_BREAKER", "5")
    settings["redis.breaker_cooldown"] = os.environ.get("OUTAGE_COOLDOWN", "1")
    settings.update(overrides)
    config = Configurator(settings=settings)
    config.include("pyramid_redisx")
    for name, view in (("free", free), ("plain", plain), ("soft", soft), ("whoami", whoami)):
        config.add_route(name, f"/{name}")
        config.add_view(view, route_name=name)
    config.add_route("write", "/write/{id}")
    config.add_view(write, route_name="write")
    config.add_exception_view(unavailable, context=redis.RedisError)
    return config.make_wsgi_app()
