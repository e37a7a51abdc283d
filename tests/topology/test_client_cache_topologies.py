"""The client cache on a Sentinel-managed master (a failover flushes it and its listener
follows the master) and refused on a Cluster (a settings error at include)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pyramid.config import Configurator

from pyramid_redisx import RedisSettingsError
from pyramid_redisx.request import client_set
from pyramid_redisx.testing import RedisClusterSet, SentinelSet

from .conftest import cluster_settings, sentinel_settings

NAME = "cache-sentinel"


def _get(request: Any) -> str:
    value = request.redis.get("k")
    return value.decode() if value is not None else "None"


def _listeners_on(server: Any) -> list[dict[str, Any]]:
    with server.client() as client:
        return [
            c for c in client.client_list() if c.get("name") == NAME and c["cmd"] == "subscribe"
        ]


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def test_a_failover_flushes_and_the_listener_follows_the_master(
    sentinel_set: SentinelSet, apps: Any
) -> None:
    settings = sentinel_settings(sentinel_set, client_cache="true", client_name=NAME)
    app = apps(settings, {"/get": _get})
    cache = client_set(app.app.registry).caches["default"]
    old = sentinel_set.master()
    with old.client() as client:
        client.set("k", "before")
    app.get("/get")
    _wait(lambda: cache.listener_id is not None, 5, "the listener")
    assert app.get("/get").text == "before"
    assert app.get("/get").text == "before" and cache.hits >= 1
    assert len(_listeners_on(old)) == 1
    flushes = cache.flushes
    watcher = sentinel_set.watch_switch()
    with sentinel_set.sentinel_client() as sentinel:
        sentinel.sentinel_failover(sentinel_set.service)  # the old master stays up
    assert watcher.wait(15) is not None
    _wait(lambda: cache.flushes > flushes, 5, "the flush")
    _wait(lambda: sentinel_set.master().port != old.port, 10, "the Sentinels to agree")
    new = sentinel_set.master()
    # A write straight to the new master: the app sees it (nothing kept from the old one).
    with new.client() as client:
        client.set("k", "after")
    deadline = time.monotonic() + 5
    while app.get("/get").text != "after":
        assert time.monotonic() < deadline, "the app kept serving the old master's value"
    _wait(lambda: len(_listeners_on(new)) == 1, 5, "the listener on the new master")
    assert _listeners_on(old) == []
    app.get("/get")
    assert app.get("/get").text == "after"  # cached again, from the new master
    with new.client() as client:
        client.set("k", "later")
    deadline = time.monotonic() + 5
    while app.get("/get").text != "later":
        assert time.monotonic() < deadline, "an invalidation from the new master was missed"


def test_refused_on_a_cluster_at_include(cluster_set: RedisClusterSet) -> None:
    config = Configurator(settings=cluster_settings(cluster_set, client_cache="true"))
    with pytest.raises(RedisSettingsError) as caught:
        config.include("pyramid_redisx")
    assert str(caught.value).startswith("redis.client_cache = 'true' is not valid")
    assert "redis.cluster" in str(caught.value)
