"""Scenario 3: 10,000 requests that do everything a view can do wrong, and no leak.

In process (webtest) for speed. Views run plain commands, raise, abandon WATCH
pipelines, leave pubsubs subscribed and a MONITOR running, keep a single-connection
client, hit a ResponseError and time out (BLPOP on a client whose socket_timeout is
shorter than the server-side block). After every request no connection is in use; the
server never sees more connections than the pools may hold.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from pyramid_redisx import get_redis
from pyramid_redisx.pools import pool_figures
from pyramid_redisx.request import client_set
from tests.conftest import build_app

from .harness import Admin, ErrorView

REQUESTS = 10_000
# One cycle of 40 requests; 1 in 40 times out (20 ms each), 1 in 10 opens a pubsub.
KINDS = (
    ["get"] * 10 + ["incr"] * 8 + ["pipeline"] * 3 + ["watch"] * 4 + ["watch_raise"] * 2
    + ["pubsub"] * 3 + ["psubscribe"] + ["raise"] * 3 + ["response_error"] * 2
    + ["timeout"] + ["monitor"] + ["single"] + ["both"]
)  # fmt: skip
EXPECTED = {"watch_raise": KeyError, "raise": KeyError,
            "response_error": "ResponseError", "timeout": "TimeoutError"}  # fmt: skip
MAX = {"default": 4, "cache": 2, "slow": 2}  # max_connections per client


def leaky(request: Any) -> str:
    kind = request.matchdict["kind"]
    r = request.redis
    if kind == "get":
        r.get("k")
    elif kind == "incr":
        r.incr("n")
    elif kind == "pipeline":
        pipe = r.pipeline()
        pipe.incr("n").get("n")
        pipe.execute()
    elif kind == "watch":  # WATCH puts the pipeline in immediate mode: it holds a connection
        pipe = r.pipeline()
        pipe.watch("n")
        pipe.get("n")
    elif kind == "watch_raise":
        pipe = r.pipeline()
        pipe.watch("n")
        pipe.multi()
        pipe.incr("n")
        raise KeyError("raised while a WATCH pipeline held a connection")
    elif kind == "pubsub":
        pubsub = r.pubsub()
        pubsub.subscribe("news")
        pubsub.get_message(timeout=1)  # the subscribe confirmation
    elif kind == "psubscribe":
        r.pubsub().psubscribe("news.*")
    elif kind == "raise":
        r.get("k")
        raise KeyError("raised after a command")
    elif kind == "response_error":
        r.hset("h", "f", "v")
        r.incr("h")  # WRONGTYPE
    elif kind == "timeout":  # server blocks 1 s, the client gives up after 20 ms
        get_redis(request, "slow").blpop(["never"], timeout=1)
    elif kind == "monitor":
        r.monitor().__enter__()  # MONITOR mode, never exited
    elif kind == "single":
        r.client().ping()  # a single-connection client, never closed
    elif kind == "both":
        r.get("k")
        get_redis(request, "cache").set("c", "1")
    return kind


@pytest.mark.slow
def test_ten_thousand_misbehaving_requests_leak_nothing(
    redis_server_factory: Any, record_property: Any
) -> None:
    server = redis_server_factory()
    settings = {
        "redis.url": server.url,
        "redis.max_connections": str(MAX["default"]),
        "redis.pool_timeout": "1",  # a leak would exhaust the pool: fail in 1 s, not 5
        "redis.clients": "cache slow",
        "redis.cache.max_connections": str(MAX["cache"]),
        "redis.slow.max_connections": str(MAX["slow"]),
        "redis.slow.socket_timeout": "0.02",
    }
    errors = ErrorView()
    app = build_app(settings, {"/leak/{kind}": leaky}, errors.include)
    clients = client_set(app.app.registry)
    pools = clients.pools()
    admin = Admin(server)
    unexpected: list[tuple[int, str, str]] = []
    kept: list[tuple[int, str, dict[str, int]]] = []  # requests after which a connection was in use
    server_counts: list[int] = []
    kinds_seen: Counter[str] = Counter()
    started = time.monotonic()
    try:
        for index in range(REQUESTS):
            kind = KINDS[index % len(KINDS)]
            expected = EXPECTED.get(kind)
            try:
                response = app.get(f"/leak/{kind}", expect_errors=True)
                got = f"{response.status_int} {response.text}"
                if expected is None:
                    ok = got == f"200 {kind}"
                else:
                    ok = got.startswith(f"503 redis unavailable: {expected}")
            except KeyError as exc:
                got, ok = f"raised {exc!r}", expected is KeyError
            if not ok:
                unexpected.append((index, kind, got))
            kinds_seen[kind] += 1
            in_use = {name: pool_figures(pool).in_use for name, pool in pools.items()}
            if any(in_use.values()):
                kept.append((index, kind, in_use))
            if index % 50 == 49:
                server_counts.append(len(admin.connections()))
        seconds = time.monotonic() - started
        # The server has dropped every pubsub, monitor and blocked (timed-out) client.
        deadline = time.monotonic() + 3
        while True:
            left = admin.connections()
            leftover = [
                c for c in left if "P" in c["flags"] or "O" in c["flags"] or "b" in c["flags"]
            ]
            if not leftover or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        blocked = admin.client.info("clients")["blocked_clients"]
    finally:
        admin.close()
        clients.close()

    figures = {
        "requests": REQUESTS,
        "seconds": round(seconds, 2),
        "requests_per_s": round(REQUESTS / seconds),
        "by_kind": dict(kinds_seen),
        "server_connections_max": max(server_counts),
        "server_connections_end": len(left),
        "pool_figures_end": {n: pool_figures(p)._asdict() for n, p in pools.items()},
    }
    print("\nscenario 3 (leaks):", json.dumps(figures))
    for key, value in figures.items():
        record_property(f"leaks_{key}", value)

    assert unexpected == [], unexpected[:5]
    assert sum(kinds_seen.values()) == REQUESTS
    assert kept == [], kept[:5]  # no connection in use after any request
    assert all(pool_figures(pool).in_use == 0 for pool in pools.values())
    bound = sum(MAX.values())  # the three pools' connections (the admin is excluded)
    assert max(server_counts) <= bound, server_counts
    assert len(left) <= bound, left
    assert leftover == [] and blocked == 0, (leftover, blocked)
    assert all(isinstance(text, str) and text for text in errors.texts)
    assert len(errors.texts) == REQUESTS // len(KINDS) * 3  # response_error ×2 + timeout
