"""Startup check, health view and ``check``: causes that point the right way (issue 13, 3/6/8)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pyramid_redisx import RedisUnavailable
from pyramid_redisx.diagnose import classify
from pyramid_redisx.health import HealthProbes, close_probes
from pyramid_redisx.request import client_set
from pyramid_redisx.settings import parse_client
from pyramid_redisx.testing import RedisServer, TLSFiles, server_binaries
from tests.conftest import build_app
from tests.loopback_proxy import LoopbackProxy, relay
from tests.test_cli_hardening import ini, run


def startup_error(settings: dict[str, str]) -> RedisUnavailable:
    with pytest.raises(RedisUnavailable) as info:
        build_app(settings)
    return info.value


def test_plain_url_against_a_tls_port_says_use_rediss(
    redis_server_factory: Any, tls_files: TLSFiles
) -> None:
    server = redis_server_factory(tls=tls_files)
    error = startup_error({"redis.url": f"redis://127.0.0.1:{server.port}/0"})
    assert error.cause == "server expects TLS"  # was "connection closed by server"
    assert "use rediss:// instead of redis://" in str(error)


def test_rediss_against_a_hung_server_is_a_timeout(silent_listener: int) -> None:
    settings = {"redis.url": f"rediss://127.0.0.1:{silent_listener}/0",
                "redis.startup_check_timeout": "0.3"}  # fmt: skip
    started = time.monotonic()
    error = startup_error(settings)
    assert time.monotonic() - started < 1.3
    assert error.cause == "timeout"  # was "TLS error (Timeout…)"


def test_startup_failure_logs_one_error_line_first(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = RedisServer().port  # nothing listens there
    with pytest.raises(RedisUnavailable):
        build_app({"redis.url": f"redis://:log-pw-1@127.0.0.1:{port}/0"})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.getMessage()) for r in errors] == [
        ("pyramid_redisx", f"startup check failed: Redis client 'default' at "
         f"redis://:***@127.0.0.1:{port}/0 is unavailable: connection refused "
         f"(Error 111 connecting to 127.0.0.1:{port}. Connection refused.)")
    ]  # fmt: skip


@pytest.fixture
def read_only_url(redis_server: Any) -> Iterator[str]:
    url = redis_server.add_user("ro", "ro-pw", "+@read", "+ping")
    yield url
    with redis_server.client() as admin:
        admin.acl_deluser("ro")


def test_read_only_user_is_healthy(read_only_url: str) -> None:
    app = build_app({"redis.url": read_only_url, "redis.health_route": "/h"})
    try:
        body = app.get("/h").json  # was 503: no permissions to run the 'role' command
        assert body["status"] == "ok"
        assert body["clients"]["default"]["role"] == "unknown"
    finally:
        client_set(app.app.registry).close()
        close_probes(app.app.registry)


def test_read_only_user_passes_check(
    read_only_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "check", ini(tmp_path, f"redis.url = {read_only_url}"))
    assert code == 0, out + err  # was 1
    assert " ok " in out and "role=unknown version=unknown" in out
    assert "ro-pw" not in out + err


def test_no_permission_is_classified(redis_server: Any) -> None:
    url = redis_server.add_user("noping", "np-pw", "+get")
    try:
        error = startup_error({"redis.url": url})
        assert error.cause == "permission denied"  # was "error"
        with redis.Redis.from_url(url) as client, pytest.raises(redis.ResponseError) as info:
            client.ping()
        assert classify(info.value) == "permission denied"
    finally:
        with redis_server.client() as admin:
            admin.acl_deluser("noping")


class SlowConnectProxy(LoopbackProxy):
    """Forwards to ``port``, holding each new connection's first reply back ``delay`` s."""

    def __init__(self, port: int, delay: float) -> None:
        self.delay = delay
        super().__init__(port)

    def server_to_client(self, upstream: socket.socket, client: socket.socket) -> None:
        first = upstream.recv(65536)
        time.sleep(self.delay)  # the connection's handshake (HELLO/SETINFO) is slow
        client.sendall(first)
        relay(upstream, client)


def test_latency_is_a_ping_on_an_established_connection(
    redis_server: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = SlowConnectProxy(redis_server.port, 0.3)
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        app = build_app({"redis.url": url, "redis.health_route": "/h"})
        try:
            latency = app.get("/h").json["clients"]["default"]["latency_ms"]
        finally:
            client_set(app.app.registry).close()
        code, out, _ = run(capsys, "check", ini(tmp_path, f"redis.url = {url}"))
    finally:
        proxy.close()
    assert latency < 100, latency  # was >= 300: the connect was timed too
    assert code == 0
    assert float(out.split("latency_ms=")[1].split()[0]) < 100


def test_checks_do_not_use_the_pool_retry_policy(silent_listener: int) -> None:
    """retries 20 with retry_on_timeout: the pool could wait minutes; the checks do not."""
    settings = {
        "redis.url": f"redis://127.0.0.1:{silent_listener}/0",
        "redis.retries": "20", "redis.retry_on_timeout": "true", "redis.retry_backoff_cap": "1",
        "redis.socket_timeout": "0.4", "redis.socket_connect_timeout": "0.4",
        "redis.startup_check_timeout": "0.4", "redis.health_route": "/h",
    }  # fmt: skip
    started = time.monotonic()
    startup_error(settings)
    assert time.monotonic() - started < 0.4 + 0.5
    app = build_app({**settings, "redis.startup_check": "false"})
    try:
        started = time.monotonic()
        assert app.get("/h", status=503).json["clients"]["default"]["error"].startswith("timeout")
        assert time.monotonic() - started < 0.4 + 0.5
    finally:
        client_set(app.app.registry).close()
        close_probes(app.app.registry)


def test_health_probes_are_fork_aware(redis_server: Any) -> None:
    options = parse_client("default", {"redis.url": redis_server.url})
    probes = HealthProbes()
    assert probes.probe(options).ok  # the parent keeps a probe connection
    with redis_server.client() as admin:
        before = admin.info("stats")["total_connections_received"]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: probe, say whether it made its own connection
            try:
                ok = probes.probe(options).ok
                os.write(write, b"ok" if ok else b"down")
            finally:
                os._exit(0)
        os.close(write)
        said = os.read(read, 16)
        os.waitpid(pid, 0)
        os.close(read)
        after = admin.info("stats")["total_connections_received"]
    probes.close()
    assert said == b"ok"
    assert after - before == 1  # the child opened its own; it never used the parent's socket


def test_health_of_a_unix_socket_client_down_and_back(redis_server_factory: Any) -> None:
    server = redis_server_factory(unix_socket=True)
    app = build_app({"redis.url": server.unix_url, "redis.health_route": "/h"})
    try:
        assert app.get("/h").json["status"] == "ok"
        server.stop()
        down = app.get("/h", status=503).json["clients"]["default"]
        assert down["ok"] is False and down["error"].startswith("connection refused: "), down
        server.start()
        assert app.get("/h").json["status"] == "ok"
    finally:
        client_set(app.app.registry).close()
        close_probes(app.app.registry)


@pytest.mark.parametrize("kind", sorted(server_binaries()))
def test_check_shows_the_servers_role_and_version(
    kind: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check`` names the server as it names itself: Valkey says ``valkey/8.1.x`` (its
    ``redis_version`` is a compatibility figure), Redis ``redis/7.0.x``. Bound to IPv6's
    loopback too (``-::1``: if it exists), as servers bound to ``* -::*`` are: Valkey's
    INFO then holds a line with several colons (``listener0:...,bind=-::1,...``)."""
    server = RedisServer(None, None, "--bind", "127.0.0.1 -::1", binary=server_binaries()[kind])
    server.start()
    try:
        with server.client() as admin:
            info = admin.info("server")
        name = info.get("server_name", "redis")
        expected = f"{name}/{info.get(f'{name}_version') or info['redis_version']}"
        assert expected.startswith(kind)
        code, out, err = run(capsys, "check", ini(tmp_path, f"redis.url = {server.url}"))
        assert code == 0, out + err
        assert f" role=master version={expected} " in out, out
    finally:
        server.cleanup()


def test_health_with_decode_responses(redis_url: str) -> None:
    """``decode_responses``: the probe's replies are text already; the role is read."""
    app = build_app({"redis.url": redis_url, "redis.health_route": "/h",
                     "redis.decode_responses": "true"})  # fmt: skip
    try:
        default = app.get("/h").json["clients"]["default"]
        assert default["role"] == "master"
        assert 0 < default["latency_ms"] < 1000  # the PING's own time, in milliseconds
    finally:
        client_set(app.app.registry).close()
        close_probes(app.app.registry)


def test_health_of_a_dead_server_is_not_retried(redis_server_factory: Any) -> None:
    """The probe has no retry of its own: ``retries = 20`` with pauses up to 0.5 s would
    hold a dead server's health view for seconds; it answers at once."""
    server = redis_server_factory()
    app = build_app({"redis.url": server.url, "redis.health_route": "/h", "redis.retries": "20",
                     "redis.retry_backoff_cap": "0.5", "redis.breaker_failures": "0"})  # fmt: skip
    try:
        server.stop()
        started = time.monotonic()
        body = app.get("/h", status=503).json
        assert time.monotonic() - started < 0.5
        assert body["clients"]["default"]["error"].startswith("connection refused")
    finally:
        client_set(app.app.registry).close()
        close_probes(app.app.registry)


def _raised_from(error: Exception, cause: Exception) -> Exception:
    """``error`` as redis-py raises it inside ``except cause``: chained by context."""
    try:
        try:
            raise cause
        except Exception:  # noqa: BLE001 - the cause is raised only to chain it
            raise error  # noqa: B904 - the implicit chain is what redis-py leaves
    except Exception as raised:  # noqa: BLE001 - any exception: it is the test's input
        return raised


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        # redis-py's words alone (an error whose chain was lost on its way, e.g. a
        # Cluster client's "cannot be connected" that quotes the node's error)
        (redis.ConnectionError("Error 111 connecting to h:1. Connection refused."), "connection refused"),
        (redis.ConnectionError("Connection closed by server."), "connection closed by server"),
        (redis.ConnectionError("Error 1 connecting to h:1. [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)."), "TLS error"),
        (redis.ResponseError("WRONGPASS invalid username-password pair or user is disabled."), "authentication failed"),
        (redis.ResponseError("NOPERM User ro has no permissions to run the 'role' command"), "permission denied"),
        (redis.ResponseError("ERR unknown command 'HELLO'"), "error"),
        (redis.ConnectionError("Error 22 connecting to h:1. Invalid argument."), "error"),
        # what the socket said, under redis-py's own message
        (_raised_from(redis.ConnectionError("Error connecting"), ConnectionRefusedError(errno.ECONNREFUSED, "refused")), "connection refused"),
        (_raised_from(redis.ConnectionError("Error while reading"), ConnectionResetError(errno.ECONNRESET, "reset")), "connection closed by server"),
        (_raised_from(redis.ConnectionError("Error connecting"), ssl.SSLCertVerificationError("certificate verify failed")), "TLS error"),
        (_raised_from(redis.ConnectionError("Error connecting"), socket.gaierror(socket.EAI_NONAME, "Name or service not known")), "name resolution"),
        (_raised_from(redis.ConnectionError("Error connecting"), OSError(errno.ECONNREFUSED, "x")), "connection refused"),
        (redis.ConnectionError(errno.ECONNREFUSED, "refused"), "connection refused"),
    ],
)  # fmt: skip
def test_classify_names_each_cause(error: BaseException, cause: str) -> None:
    assert classify(error) == cause


def test_a_tls_server_that_stalls_after_the_handshake_gets_no_tls_hint(
    redis_server_factory: Any, tls_files: TLSFiles
) -> None:
    """The health view's kept TLS connection times out reading a PING: the handshake
    was done long ago, so no "no TLS handshake answer" hint, only the timeout."""
    server = redis_server_factory(tls=tls_files)
    app = build_app({"redis.url": f"rediss://127.0.0.1:{server.port}/0", "redis.health_route": "/h",
                     "redis.ssl_ca_certs": tls_files.ca, "redis.ssl_check_hostname": "false",
                     "redis.startup_check_timeout": "0.5"})  # fmt: skip
    try:
        assert app.get("/h").json["status"] == "ok"  # the probe's TLS connection is kept
        server.pause()
        try:
            error = app.get("/h", status=503).json["clients"]["default"]["error"]
        finally:
            server.resume()
        assert error == f"timeout: Timeout reading from 127.0.0.1:{server.port}", error
    finally:
        client_set(app.app.registry).close()
        close_probes(app.app.registry)
