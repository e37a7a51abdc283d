"""Scenario drivers shared by several tests (scenario 6 re-runs 1 and 5 with a password).

Each driver builds a real app, serves it with waitress, drives it with a threaded HTTP
client, breaks the Redis server in the middle (SIGKILL + restart, SIGSTOP + SIGCONT)
and returns what happened; the tests make the assertions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pyramid_redisx.pools import pool_figures, worst_case_seconds
from pyramid_redisx.request import client_set
from tests.conftest import build_app

from .harness import Admin, ErrorView, LiveServer, Load, Outcome

# Short timeouts so that a dead or stalled server costs a request well under 3 s.
SHORT_TIMEOUTS = {
    "redis.socket_timeout": "0.5",
    "redis.socket_connect_timeout": "0.5",
    "redis.retries": "1",
    "redis.pool_timeout": "1",
    "redis.max_connections": "8",
    "redis.startup_check_timeout": "1",
}
# The longest one request may be held with SHORT_TIMEOUTS, worked out by hand from the
# documented formula (retry_on_timeout false): pool_timeout 1 + socket_timeout 0.5 +
# socket_connect_timeout 0.5 + (retries + 2) = 3 backoff pauses of at most 2 × 8 ms.
SHORT_TIMEOUTS_BOUND = 1 + 0.5 + 0.5 + 3 * 0.016


@dataclass
class Run:
    """What one scenario run produced."""

    outcomes: list[Outcome]
    options: Any  # the default client's RedisOptions
    bound: float  # worst_case_seconds(options)
    errors: ErrorView
    seconds: float  # wall time of the load
    marks: dict[str, float] = field(default_factory=dict)  # monotonic times of events
    in_use_after: int = -1
    server_connections_after: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _app(settings: dict[str, Any], views: dict[str, Any]) -> tuple[Any, ErrorView]:
    """The Pyramid app (WSGI callable) and its 503 exception view."""
    errors = ErrorView()
    app = build_app(settings, views, errors.include).app
    return app, errors


def reprs(clients: Any) -> list[str]:
    """Everything about the clients that could be printed: for the secrets scenario."""
    shown = []
    for name, options in clients.options.items():
        client = clients.client(name)
        shown += [repr(client), str(client), repr(client.connection_pool), repr(options),
                  str(options.redacted()), options.url]  # fmt: skip
        pool = client.connection_pool  # its connections (private lists: repr only)
        for connection in getattr(pool, "_connections", None) or pool._available_connections:
            shown.append(repr(connection))
    return shown


def incr_view(request: Any) -> str:
    return str(request.redis.incr("hits"))


def kill_and_restart_under_load(
    server: Any, settings: dict[str, Any], *, threads: int = 8, per_thread: int = 500
) -> Run:
    """Scenario 1: ``threads`` × ``per_thread`` requests doing INCR through waitress (8
    threads); SIGKILL the server after a third of them, restart it on the same port
    after half of them.

    The restart begins at half, not later, so that many requests still start after it
    when restarting takes long: while the server is down and starting, requests fail
    fast and use up the budget (a CI run saw 0.43 s of restart eat ~400 requests when it
    began at two thirds, leaving 925 of the 1000 the test then asked for)."""
    total = threads * per_thread
    app, errors = _app(settings, {"/incr": incr_view})
    clients = client_set(app.registry)
    options = clients.options["default"]
    bound = worst_case_seconds(options)
    marks: dict[str, float] = {}
    live = LiveServer(app, threads=8)
    load = Load(live.port, lambda index: "/incr", threads=threads, per_thread=per_thread,
                timeout=bound + 5)  # fmt: skip
    admin = None
    try:
        marks["start"] = time.monotonic()
        load.start()
        assert load.wait_for(total // 3, timeout=120), f"only {load.done} requests done"
        marks["killing"] = time.monotonic()
        server.stop()  # SIGKILL, reaped: from here on the old server answers nothing
        marks["killed"] = time.monotonic()
        marks["done_at_kill"] = load.done
        assert load.wait_for(total // 2, timeout=120), f"only {load.done} requests done"
        marks["restarting"] = time.monotonic()
        server.start()  # same port, empty keyspace; returns once it answers PING
        marks["restarted"] = time.monotonic()
        marks["done_at_restart"] = load.done
        outcomes = load.join(timeout=180)
        marks["end"] = time.monotonic()
    finally:
        load.abandon()
        live.close()
    try:
        admin = Admin(server)
        run = Run(outcomes, options, bound, errors, marks["end"] - marks["start"], marks)
        run.in_use_after = pool_figures(clients.pools()["default"]).in_use
        run.extra["reprs"] = reprs(clients)
        run.server_connections_after = admin.connections()
        run.extra["hits_on_new_server"] = int(admin.client.get("hits") or 0)
        return run
    finally:
        if admin is not None:
            admin.close()
        clients.close()


def pause_under_load(
    server: Any,
    settings: dict[str, Any],
    *,
    threads: int = 4,
    pause_seconds: float = 1.6,
    requests_after: int = 40,
) -> Run:
    """Scenario 5: ``threads`` clients send INCRs (path ``/incr/<n>``); SIGSTOP the
    server for ``pause_seconds``, SIGCONT it, go on until ``requests_after`` requests
    started after the resume have completed."""
    app, errors = _app(settings, {"/incr/{n}": incr_view})
    clients = client_set(app.registry)
    options = clients.options["default"]
    marks: dict[str, float] = {}
    live = LiveServer(app, threads=8)
    load = Load(live.port, lambda index: f"/incr/{index}", threads=threads, per_thread=100_000,
                timeout=worst_case_seconds(options) + 5)  # fmt: skip
    try:
        marks["start"] = time.monotonic()
        load.start()
        assert load.wait_for(30, timeout=60), f"only {load.done} requests before the pause"
        server.pause()
        marks["paused"] = time.monotonic()
        try:
            time.sleep(pause_seconds)
        finally:
            server.resume()
        marks["resumed"] = time.monotonic()
        resumed = marks["resumed"]
        after_ok = load.wait_until(
            lambda outcomes: sum(o.started >= resumed for o in outcomes) >= requests_after,
            timeout=60,
        )
        load.stop.set()
        outcomes = load.join(timeout=60)
        marks["end"] = time.monotonic()
        assert after_ok, f"only {sum(o.started >= resumed for o in outcomes)} requests after resume"
    finally:
        load.abandon()
        live.close()
    try:
        run = Run(outcomes, options, worst_case_seconds(options), errors,
                  marks["end"] - marks["start"], marks)  # fmt: skip
        run.in_use_after = pool_figures(clients.pools()["default"]).in_use
        run.extra["reprs"] = reprs(clients)
        return run
    finally:
        clients.close()
