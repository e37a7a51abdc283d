"""``pyramid_redisx.testing.RedisServer`` beyond plain TCP: TLS, unix socket, ACL users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyramid_redisx.servers import RedisServer, free_cluster_ports, server_binaries
from pyramid_redisx.testing import TLSFiles

NO_RETRY = Retry(NoBackoff(), 0)  # redis-py retries 10 times by default


def test_tls_server_answers_tls_only(redis_server_factory: Any, tls_files: TLSFiles) -> None:
    server = redis_server_factory(tls=tls_files)
    assert server.url == f"rediss://127.0.0.1:{server.port}/0"
    with server.client() as client:
        assert client.ping() is True
    with (
        redis.Redis(port=server.port, socket_timeout=1, retry=NO_RETRY) as plain,
        pytest.raises(redis.ConnectionError),
    ):
        plain.ping()  # plain TCP is off


def test_tls_client_certificates_required(redis_server_factory: Any, tls_files: TLSFiles) -> None:
    server = redis_server_factory(tls=tls_files, tls_auth_clients="yes")
    with server.client() as client:
        assert client.ping() is True
    no_cert = redis.Redis(
        port=server.port, ssl=True, ssl_ca_certs=tls_files.ca, socket_timeout=2, retry=NO_RETRY
    )
    with no_cert, pytest.raises(redis.ConnectionError):
        no_cert.ping()


def test_unix_socket_and_acl_user(redis_server_factory: Any) -> None:
    server = redis_server_factory(unix_socket=True)
    with redis.Redis.from_url(server.unix_url) as client:
        assert client.ping() is True
        assert "U" in client.client_info()["flags"]  # the server sees a unix-socket client
    url = server.add_user("ro", "ro-pw", "+@read", "+ping")
    with redis.Redis.from_url(url) as reader:
        assert reader.ping() is True
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.set("k", "v")


@pytest.mark.parametrize("kind", sorted(server_binaries()))
def test_an_attached_server_restarts_on_its_own_binary(kind: str) -> None:
    """A shared topology's node is attached in another process (the mutation run's
    children); a test that killed it heals it there: it must start again, on the binary
    it was started with (a Valkey node stays Valkey)."""
    binary = server_binaries()[kind]
    server = RedisServer(None, "pw", binary=binary).start()
    attached = RedisServer.attach(server.describe())
    try:
        attached.stop()
        assert server.process is not None
        assert server.process.wait(5) == -9  # the attached side killed it
        attached.start()
        with attached.client() as client:
            assert client.ping() is True
            name = "valkey" if "valkey_version" in client.info("server") else "redis"
        assert name == kind
        assert attached.binary == binary
    finally:
        attached.stop()  # the restarted process is the attached side's (its pid file)
        attached.shared = False
        attached.cleanup()
        server.cleanup()


def test_cluster_ports_stay_below_the_kernels_outgoing_ports() -> None:
    """A cluster node's port, and its bus port (+10000), are chosen below the range the
    kernel gives outgoing connections: a client connecting elsewhere cannot take one
    between its choice and the server's bind (CI saw ``Address already in use``)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_cluster_ports(60)
    assert len(set(ports)) == 60
    assert all(port > 1024 and port + 10000 < low for port in ports), ports
