"""The app of the Prometheus test under gunicorn: ``tests.reliability.prometheus_app:make_app()``.

Reads the Redis URL from ``$REDISX_GUNICORN_URL``; ``/work`` runs a few commands (and
sleeps a little, so that a worker's requests overlap and its pool grows past one
connection), ``/metrics`` is the add-on's Prometheus endpoint.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pyramid.config import Configurator
from pyramid.response import Response

CLIENT_NAME = "promtest"


def work(request: Any) -> Response:
    request.redis.incr("prom:hits")
    time.sleep(0.002)
    request.redis.get("prom:hits")
    return Response(json_body={"pid": os.getpid()})


def make_app() -> Any:
    settings = {
        "redis.url": os.environ["REDISX_GUNICORN_URL"],
        "redis.client_name": CLIENT_NAME,  # how the test finds the app's connections
        "redis.max_connections": "8",
        "redis.metrics_route": "/metrics",
    }
    config = Configurator(settings=settings)
    config.include("pyramid_redisx")
    config.add_route("work", "/work")
    config.add_view(work, route_name="work")
    config.add_route("whoami", "/whoami")  # what the harness polls until gunicorn serves
    config.add_view(lambda request: Response(json_body={"pid": os.getpid()}), route_name="whoami")
    return config.make_wsgi_app()
