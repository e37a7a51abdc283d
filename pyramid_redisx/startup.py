"""The startup check: PING every client once when the app is made, fail fast and clearly.

It opens its own connection (not the pool's) with ``startup_check_timeout`` for
connect and read and no retry, so a dead server costs at most that long per client
instead of the pool's full retry budget; it only reads (PING), so it passes against
replicas and read-only ACL users; and it closes the connection, so a parent process
that forks workers afterwards holds no socket.
"""

from __future__ import annotations

import logging
from typing import Any

from . import topology
from .client import client_set
from .errors import RedisUnavailable
from .settings import RedisOptions
from .workers import mark_checked, replaces_a_worker

log = logging.getLogger("pyramid_redisx")


def check_all(clients: dict[str, RedisOptions]) -> None:
    """Check each distinct option set once, in declaration order, per its mode.

    A failure is logged as one ERROR line before it is raised: pserve and gunicorn print
    a long traceback whose last line is the cause; the log line is the first thing read.
    A worker that replaces another of the same pre-fork master goes on instead, with a
    WARNING (``workers.py``).
    """
    checked: set[RedisOptions] = set()
    for name, options in clients.items():
        if options.startup_check == "false" or options in checked:
            continue
        checked.add(options)
        try:
            seconds = topology.check(name, options)
        except RedisUnavailable as exc:
            if options.startup_check == "warn":
                log.warning("startup check failed, going on (startup_check = warn): %s", exc)
                continue
            if replaces_a_worker(options):  # workers.py: not a first deployment
                log.warning(
                    "startup check failed in a worker that replaces another (an earlier "
                    "worker of this master passed it), going on: the circuit breaker and "
                    "the health view carry the outage: %s", exc,
                )  # fmt: skip
                continue
            log.error("startup check failed: %s", exc)
            raise
        mark_checked(options)
        log.info(
            "redis client=%s reachable at %s (PING %.2f ms)", name, options.url, seconds * 1000
        )


def on_application_created(event: Any) -> None:
    """``ApplicationCreated`` subscriber: runs during ``config.make_wsgi_app()``."""
    check_all(client_set(event.app.registry).options)
