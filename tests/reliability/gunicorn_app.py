"""A tiny app for the gunicorn test: ``gunicorn --preload 'tests.reliability.gunicorn_app:make_app()'``.

Reads the Redis URL from ``$REDISX_GUNICORN_URL``. With ``$REDISX_GUNICORN_WARM=1`` the
factory also runs a command in the master before gunicorn forks (an app that warms a
cache at import), so the workers inherit a pool holding a connected socket.
"""

from __future__ import annotations

import os
from typing import Any

from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_redisx import get_redis

# CLIENT ID of the connection the master used before the fork (None when cold).
MASTER_CLIENT_ID: int | None = None


def whoami(request: Any) -> Response:
    return Response(
        json_body={
            "pid": os.getpid(),
            "client_id": request.redis.client_id(),
            "master_client_id": MASTER_CLIENT_ID,
        }
    )


def make_app() -> Any:
    global MASTER_CLIENT_ID
    settings = {
        "redis.url": os.environ["REDISX_GUNICORN_URL"],
        "redis.max_connections": "4",
        "redis.socket_timeout": "2",
    }
    config = Configurator(settings=settings)
    config.include("pyramid_redisx")
    config.add_route("whoami", "/whoami")
    config.add_view(whoami, route_name="whoami")
    app = config.make_wsgi_app()
    if os.environ.get("REDISX_GUNICORN_WARM") == "1":
        MASTER_CLIENT_ID = int(get_redis(app.registry).client_id())
    return app
