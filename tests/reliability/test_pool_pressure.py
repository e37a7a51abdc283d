"""Scenario 2: many more request threads than connections, on a blocking pool.

32 waitress threads and 32 client threads share max_connections = 4: requests wait for
a connection instead of failing, and every INCR lands exactly once. With a pool_timeout
shorter than the work, requests fail with "redis client default: no free connection within
0.05 s ..." (a redis.ConnectionError) after pool_timeout, not later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
import redis

from pyramid_redisx.pools import pool_figures
from pyramid_redisx.request import client_set
from tests.conftest import build_app

from .harness import Admin, ErrorView, LiveServer, Load, summary


def serve(settings: dict[str, Any], views: dict[str, Any]) -> tuple[Any, ErrorView]:
    errors = ErrorView()
    return build_app(settings, views, errors.include).app, errors


@pytest.mark.slow
def test_32_threads_share_4_connections_without_error(
    redis_server_factory: Any, caplog: pytest.LogCaptureFixture, record_property: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="pyramid_redisx")
    server = redis_server_factory()

    def work(request: Any) -> str:
        request.redis.execute_command("DEBUG", "SLEEP", "0.002")  # holds the connection 2 ms
        return str(request.redis.incr("total"))

    settings = {"redis.url": server.url, "redis.max_connections": "4", "redis.blocking": "true",
                "redis.pool_timeout": "2"}  # fmt: skip
    app, errors = serve(settings, {"/work": work})
    pool = client_set(app.registry).pools()["default"]
    admin = Admin(server)
    samples: list[tuple[int, int]] = []  # (pool in_use, server connections) while loaded
    live = LiveServer(app, threads=32)
    load = Load(live.port, lambda index: "/work", threads=32, per_thread=20, timeout=10)
    try:
        started = time.monotonic()
        load.start()
        while load.done < 640 and time.monotonic() - started < 60:
            samples.append((pool_figures(pool).in_use, len(admin.connections())))
            time.sleep(0.02)
        outcomes = load.join(timeout=60)
        seconds = time.monotonic() - started
        total = int(admin.client.get("total") or 0)
        connections_after = admin.connections()
        in_use_after = pool_figures(pool).in_use
    finally:
        load.abandon()
        live.close()
        admin.close()
        client_set(app.registry).close()

    stats = [r for r in caplog.records if r.name == "pyramid_redisx.stats"]
    waited = [r.redis_waited_ms for r in stats if r.redis_waited_ms > 0]
    figures = summary(outcomes)
    figures.update(seconds=round(seconds, 2), incr_total=total,
                   max_in_use_seen=max(s[0] for s in samples),
                   max_server_connections_seen=max(s[1] for s in samples),
                   requests_that_waited=len(waited),
                   max_wait_ms=round(max(waited, default=0), 2))  # fmt: skip
    print("\nscenario 2a (32 threads, 4 connections):", json.dumps(figures))
    for key, value in figures.items():
        record_property(f"pressure_{key}", value)

    assert [o for o in outcomes if o.status != 200] == [], errors.texts[:1]
    assert len(outcomes) == 640 and total == 640
    assert sorted(int(o.body) for o in outcomes) == list(range(1, 641))  # each INCR once
    # The pressure was real (requests queued for a connection) and bounded by the pool.
    assert len(waited) > 0
    assert len(stats) == 640 and max(r.redis_in_use for r in stats) <= 4
    assert max(s[0] for s in samples) <= 4
    assert max(s[1] for s in samples) <= 4
    assert len(connections_after) <= 4
    assert in_use_after == 0


@pytest.mark.slow
def test_pool_timeout_shorter_than_the_work_fails_fast_with_a_clear_error(
    redis_server_factory: Any, record_property: Any
) -> None:
    server = redis_server_factory()
    pool_timeout = 0.05
    failures: list[tuple[str, str, float]] = []  # (error type, message, seconds in the view)
    lock = threading.Lock()

    def hold(request: Any) -> str:
        started = time.perf_counter()
        try:
            request.redis.execute_command("DEBUG", "SLEEP", "0.3")  # a connection for ≥ 0.3 s
        except redis.RedisError as exc:
            with lock:
                failures.append((type(exc).__name__, str(exc), time.perf_counter() - started))
            raise
        return "held"

    # DEBUG SLEEP blocks the whole server, so the holders' sleeps run one after another
    # (and not always fairly: a holder can wait for several others); socket_timeout is
    # far above that so that only the pool can fail here.
    settings = {"redis.url": server.url, "redis.max_connections": "4", "redis.blocking": "true",
                "redis.pool_timeout": str(pool_timeout), "redis.socket_timeout": "10"}  # fmt: skip
    app, _ = serve(settings, {"/hold": hold})
    pool = client_set(app.registry).pools()["default"]
    live = LiveServer(app, threads=12)
    load = Load(live.port, lambda index: "/hold", threads=12, per_thread=3, timeout=20)
    try:
        started = time.monotonic()
        outcomes = load.start().join(timeout=60)
        seconds = time.monotonic() - started
        in_use_after = pool_figures(pool).in_use
    finally:
        load.abandon()
        live.close()
        client_set(app.registry).close()

    failed = [o for o in outcomes if o.status != 200]
    figures = summary(outcomes)
    figures.update(seconds=round(seconds, 2),
                   max_failure_latency_s=round(max((o.elapsed for o in failed), default=0), 3),
                   view_wait_s=[round(min(f[2] for f in failures), 3),
                                round(max(f[2] for f in failures), 3)] if failures else None)  # fmt: skip
    print("\nscenario 2b (pool_timeout 0.05 s < work 0.3 s):", json.dumps(figures))
    for key, value in figures.items():
        record_property(f"pool_timeout_{key}", value)

    assert len(outcomes) == 36
    assert sum(o.status == 200 for o in outcomes) >= 4  # the first four got a connection
    assert failed, "no request had to wait: the scenario did not test anything"
    assert all(o.status == 503 for o in failed), failed
    assert {o.body for o in failed} == {
        "redis unavailable: PoolExhausted: redis client default: no free connection within 0.05 s (max_connections 4, all in use)"
    }
    assert len(failures) == len(failed)
    assert {(kind, message) for kind, message, _ in failures} == {
        (
            "PoolExhausted",
            "redis client default: no free connection within 0.05 s (max_connections 4, all in use)",
        )
    }
    # Waited pool_timeout (not less: it did wait; not much more: no hang) ...
    assert all(pool_timeout * 0.9 <= waited <= pool_timeout + 0.25 for *_, waited in failures), (
        failures
    )
    # ... and the client had its 503 soon after.
    assert max(o.elapsed for o in failed) <= pool_timeout + 1.0
    assert in_use_after == 0
