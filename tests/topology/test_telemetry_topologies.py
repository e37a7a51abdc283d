"""Telemetry on Cluster and Sentinel clients (issue 28): one span per command and
pipeline, with or without opentelemetry-instrumentation-redis; Cluster redirections and
Sentinel failovers counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.instrumentation.redis import RedisInstrumentor

from pyramid_redisx import close_async_redis, get_async_redis, get_redis
from pyramid_redisx.testing import RedisClusterSet, SentinelSet
from tests.telemetry_support import Otel, otel
from tests.test_telemetry import sample, scrape

from .conftest import cluster_settings, sentinel_settings

KEYS = [f"key:{n}" for n in range(6)]  # over the three masters' slots


@pytest.fixture
def instrumentor() -> Iterator[Any]:
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=otel().tracer_provider)
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


def cluster_view(request: Any) -> str:
    for key in KEYS:
        request.redis.set(key, "secret-value")
    pipe = request.redis.pipeline()
    for key in KEYS:
        pipe.get(key)
    pipe.execute()
    return "ok"


def check_cluster_spans(telemetry: Otel, app: Any, names: list[str], scope: str) -> None:
    telemetry.exporter.clear()
    with telemetry.tracer.start_as_current_span("request") as request_span:
        app.get("/")
    spans = telemetry.redis_spans()
    assert [s.name for s in spans] == names
    assert {s.instrumentation_scope.name for s in spans} == {scope}
    for span in spans:
        assert span.parent.span_id == request_span.get_span_context().span_id
        assert span.attributes["pyramid_redisx.client.name"] == "default"
        assert "secret" not in str(dict(span.attributes))


def test_cluster_commands_and_pipelines_are_one_span_each(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    telemetry = otel()
    app = apps(cluster_settings(cluster_set, tracing="true"), {"/": cluster_view})
    check_cluster_spans(telemetry, app, ["SET"] * len(KEYS) + ["PIPELINE"], "pyramid_redisx")


def test_cluster_instrumentation_spans_appear_once_with_our_attributes(
    cluster_set: RedisClusterSet, apps: Any, instrumentor: Any
) -> None:
    telemetry = otel()
    app = apps(cluster_settings(cluster_set, tracing="true"), {"/": cluster_view})
    names = ["SET"] * len(KEYS) + [" ".join(["GET"] * len(KEYS))]
    check_cluster_spans(telemetry, app, names, "opentelemetry.instrumentation.redis")


def test_cluster_redirections_are_counted(cluster_set: RedisClusterSet, apps: Any) -> None:
    """In the OpenTelemetry metrics and on the Prometheus endpoint, each exactly once
    however often it is scraped."""
    telemetry = otel()
    app = apps(cluster_settings(cluster_set, metrics="true", metrics_route="/metrics"),
               {"/": cluster_view})  # fmt: skip
    app.get("/")
    client = get_redis(app.app.registry)
    manager = client.nodes_manager
    slot = client.keyslot(KEYS[0])
    right = manager.slots_cache[slot][0]
    wrong = next(n for n in manager.nodes_cache.values() if n.name != right.name
                 and n.server_type == "primary")  # fmt: skip
    before = telemetry.value("pyramid_redisx.cluster.redirections",
                             pyramid_redisx__redirection__kind="moved")  # fmt: skip
    scraped = redirections(app)
    manager.slots_cache[slot] = [wrong]  # a stale map: the wrong master answers MOVED
    assert get_redis(app.app.registry).get(KEYS[0]) == b"secret-value"
    after = telemetry.value("pyramid_redisx.cluster.redirections",
                            pyramid_redisx__redirection__kind="moved")  # fmt: skip
    assert after - before == 1

    # the asyncio Cluster client's redirections count the same way
    async def stale_async() -> Any:
        aclient = get_async_redis(app.app.registry)
        try:
            await aclient.initialize()
            amanager = aclient.nodes_manager
            aright = amanager.slots_cache[slot][0]
            awrong = next(n for n in amanager.nodes_cache.values() if n.name != aright.name
                          and n.server_type == "primary")  # fmt: skip
            amanager.slots_cache[slot] = [awrong]
            return await aclient.get(KEYS[0])
        finally:
            await close_async_redis(app.app.registry)

    assert asyncio.run(stale_async()) == b"secret-value"
    assert telemetry.value("pyramid_redisx.cluster.redirections",
                           pyramid_redisx__redirection__kind="moved") - after == 1  # fmt: skip
    for _ in range(2):  # counted once, however often scraped
        now = redirections(app)
        moved = now["moved"] - scraped.get("moved", 0)
        asked = now.get("ask", 0) - scraped.get("ask", 0)
        assert (moved, asked) == (2, 0)  # one by each client


def redirections(app: Any) -> dict[str, float]:
    families = scrape(app)
    return {s.labels["pyramid_redisx_redirection_kind"]: s.value
            for s in families.get("pyramid_redisx_cluster_redirections", ())
            if s.name.endswith("_total")}  # fmt: skip


def test_sentinel_failover_is_counted(sentinel_set: SentinelSet, apps: Any) -> None:
    telemetry = otel()
    app = apps(sentinel_settings(sentinel_set, metrics="true", tracing="true",
                                 metrics_route="/metrics"),
               {"/": lambda request: request.redis.set("k", "v")})  # fmt: skip
    app.get("/")
    spans = telemetry.redis_spans()
    assert [s.name for s in spans] == ["SET"]
    master = sentinel_set.master()
    assert (spans[0].attributes["server.address"], spans[0].attributes["server.port"]) == (
        "127.0.0.1", master.port)  # the master the Sentinels named, not the URL's host  # fmt: skip
    pool_name = {"db__client__connection__pool__name": "default"}
    before = telemetry.value("pyramid_redisx.sentinel.failovers", **pool_name)
    prometheus_before = sample(scrape(app), "pyramid_redisx_sentinel_failovers_total",
                               db_client_connection_pool_name="default")  # fmt: skip
    watcher = sentinel_set.watch_switch()
    with sentinel_set.sentinel_client() as sentinel:
        sentinel.sentinel_failover(sentinel_set.service)
    assert watcher.wait(15) is not None
    # The pool's own listener hears the same announcement on its own thread: a moment
    # later under load (a fresh-clone CI run read 0 right after the watcher's).
    deadline = time.monotonic() + 10
    while telemetry.value("pyramid_redisx.sentinel.failovers", **pool_name) == before:
        assert time.monotonic() < deadline, "the failover was never counted"
        time.sleep(0.01)
    app.get("/")  # its connect finds the new master too: still counted once
    assert telemetry.value("pyramid_redisx.sentinel.failovers", **pool_name) - before == 1
    data = telemetry.reader.get_metrics_data()
    (failovers,) = [m for r in data.resource_metrics for sc in r.scope_metrics
                    for m in sc.metrics if m.name == "pyramid_redisx.sentinel.failovers"]  # fmt: skip
    assert (failovers.unit, failovers.description) == (
        "{failover}",
        "Master changes a Sentinel client has seen",
    )
    assert failovers.data.is_monotonic
    for _ in range(2):  # and on the Prometheus endpoint, however often scraped
        assert sample(scrape(app), "pyramid_redisx_sentinel_failovers_total",
                      db_client_connection_pool_name="default") - prometheus_before == 1  # fmt: skip
