"""The app of bench/telemetry_outage.py, served by gunicorn: ``bench.telemetry_app:make_app()``.

``/work`` runs two commands; ``/metrics`` is the add-on's Prometheus endpoint. Short
timeouts, so that a stalled Redis shows as errors and waits within seconds.
"""

from __future__ import annotations

import os
from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPServiceUnavailable
from pyramid.response import Response
from redis.exceptions import RedisError


def work(request: Any) -> Response:
    try:
        request.redis.incr("bench:hits")
        request.redis.get("bench:hits")
    except RedisError:
        return HTTPServiceUnavailable()
    return Response(b"ok")


def make_app() -> Any:
    settings = {
        "redis.url": os.environ["REDISX_BENCH_URL"],
        "redis.max_connections": "4",  # fewer than the 8 threads: waits show
        "redis.socket_timeout": "0.5",
        "redis.socket_connect_timeout": "0.5",
        "redis.pool_timeout": "1",
        "redis.retries": "1",
        "redis.stats": "false",
        "redis.pool_warn_ratio": "1",
        "redis.metrics_route": "/metrics",
    }
    config = Configurator(settings=settings)
    config.include("pyramid_redisx")
    config.add_route("work", "/work")
    config.add_view(work, route_name="work")
    return config.make_wsgi_app()
