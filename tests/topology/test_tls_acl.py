"""Sentinel and Cluster over TLS (CA, client certificates, host name checked) with ACL users."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import NoPermissionError

from pyramid_redisx import close_async_redis, get_async_redis, get_redis
from pyramid_redisx.testing import RedisClusterSet, SentinelSet, TLSFiles

from .conftest import client_names_on

PASSWORD = "tls-data-pw"


def tls_settings(files: TLSFiles) -> dict[str, str]:
    return {
        "redis.ssl_ca_certs": files.ca,
        "redis.ssl_certfile": files.client_cert,
        "redis.ssl_keyfile": files.client_key,
        "redis.ssl_check_hostname": "true",  # the certificates name 127.0.0.1
        "redis.socket_timeout": "1",
    }


@pytest.fixture(scope="module")
def tls_sentinel_set(tls_files: TLSFiles) -> Iterator[SentinelSet]:
    topology = SentinelSet(password=PASSWORD, tls=tls_files).start()
    try:
        for server in topology.data:  # ACL users are per server: declare them on each
            server.add_user("app", "app-pw", "+@all")
            server.add_user("reader", "reader-pw", "+@read", "+ping")
        yield topology
    finally:
        topology.cleanup()


@pytest.fixture(scope="module")
def tls_cluster_set(tls_files: TLSFiles) -> Iterator[RedisClusterSet]:
    topology = RedisClusterSet(password=PASSWORD, tls=tls_files).start()
    try:
        for node in topology.nodes:
            node.add_user("app", "app-pw", "+@all")
        yield topology
    finally:
        topology.cleanup()


def test_sentinel_over_tls_with_acl_users(
    tls_sentinel_set: SentinelSet, tls_files: TLSFiles, apps: Any
) -> None:
    settings = {
        **tls_settings(tls_files),
        "redis.url": "rediss://app:app-pw@localhost/0",  # user in the URL
        "redis.sentinels": tls_sentinel_set.sentinels_setting,
        "redis.sentinel_service": tls_sentinel_set.service,
        "redis.client_name": "tls-writer",
        "redis.clients": "reader",
        "redis.reader.sentinel_role": "replica",
        "redis.reader.username": "reader",  # user in separate keys
        "redis.reader.password": "reader-pw",
        "redis.reader.client_name": "",  # a read-only user may not CLIENT SETNAME
        "redis.health_route": "/health",
    }

    def write_then_read(request: Any) -> str:
        request.redis.set("k", "v")
        request.redis.wait(2, 1000)
        reader = get_redis(request, "reader")
        with pytest.raises(NoPermissionError):
            reader.set("k", "nope")  # a read-only user
        return str(reader.get("k"), "ascii")

    app = apps(settings, {"/": write_then_read})
    assert app.get("/").text == "v"
    master = tls_sentinel_set.master()
    assert "tls-writer" in client_names_on(master)
    health = app.get("/health").json
    assert health["status"] == "ok"
    assert health["clients"]["default"]["role"] == "master"

    def subscribed() -> bool:  # the listener, over TLS
        with tls_sentinel_set.sentinel_client() as sentinel:
            return any(int(c.get("sub", 0)) for c in sentinel.client_list())

    deadline = time.monotonic() + 2
    while not subscribed() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert subscribed()
    assert PASSWORD not in app.get("/health").text and "app-pw" not in app.get("/health").text

    async def use_async() -> Any:  # the asyncio client: the same Sentinels, TLS and user
        try:
            client = get_async_redis(app.app.registry)
            await client.set("async-k", "v2")
            return await client.get("async-k")
        finally:
            await close_async_redis(app.app.registry)

    assert asyncio.run(use_async()) == b"v2"
    assert master.client().get("async-k") == b"v2"


def test_cluster_over_tls_with_an_acl_user(
    tls_cluster_set: RedisClusterSet, tls_files: TLSFiles, apps: Any
) -> None:
    settings = {
        **tls_settings(tls_files),
        "redis.url": f"rediss://127.0.0.1:{tls_cluster_set.nodes[0].port}",
        "redis.username": "app",
        "redis.password": "app-pw",
        "redis.cluster": "true",
        "redis.health_route": "/health",
    }
    keys = [f"tls:{n}" for n in range(9)]
    app = apps(settings, {"/": lambda r: str(sum(bool(r.redis.set(k, k)) for k in keys))})
    assert app.get("/").text == "9"
    body = app.get("/health").json["clients"]["default"]
    assert body["ok"] and len(body["nodes"]) == 6
    with tls_cluster_set.masters()[0].client() as client:
        users = client.execute_command("CLIENT", "LIST")
    assert b"user=app" in users

    async def use_async() -> list[Any]:  # the asyncio Cluster client: TLS too
        try:
            client = get_async_redis(app.app.registry)
            return [await client.get(k) for k in keys]
        finally:
            await close_async_redis(app.app.registry)

    assert asyncio.run(use_async()) == [k.encode() for k in keys]


def test_tls_without_the_ca_is_refused_at_startup(
    tls_cluster_set: RedisClusterSet, apps: Any
) -> None:
    from pyramid_redisx import RedisUnavailable

    settings = {
        "redis.url": f"rediss://127.0.0.1:{tls_cluster_set.nodes[0].port}",
        "redis.password": PASSWORD,
        "redis.cluster": "true",
        "redis.startup_check_timeout": "0.5",
    }
    # redis-py reads the slot map while the app is configured: Pyramid wraps what that
    # raises in its ConfigurationExecutionError, as for a settings error.
    with pytest.raises(Exception, match="TLS error") as caught:
        apps(settings)
    error = getattr(caught.value, "evalue", caught.value)
    assert isinstance(error, RedisUnavailable)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert PASSWORD not in str(caught.value)
