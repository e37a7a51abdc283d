"""The startup check: fail fast at make_wsgi_app(), with a classified cause."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from typing import Any

import pytest
from pyramid.config import Configurator

from pyramid_redisx import RedisUnavailable
from pyramid_redisx.testing import free_port
from tests.test_workers import folder as folder  # a fixture: a private marker folder


def make(settings: dict[str, str]) -> Any:
    config = Configurator(settings=settings)
    config.include("pyramid_redisx")  # parsing only: no connection yet
    return config.make_wsgi_app()


def check_fails(settings: dict[str, str], cause: str, bound: float) -> RedisUnavailable:
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as info:
        make(settings)
    elapsed = time.monotonic() - started
    assert info.value.cause == cause, str(info.value)
    assert elapsed < bound, f"startup check took {elapsed:.2f}s (bound {bound}s)"
    return info.value


def test_refused_names_client_url_and_cause() -> None:
    port = free_port()
    error = check_fails(
        {"redis.url": f"redis://:hunter2-pw@127.0.0.1:{port}/2"}, "connection refused", 1.0
    )
    assert error.client == "default"
    assert error.url == f"redis://:***@127.0.0.1:{port}/2"
    # the attributes an app reads to report it its own way (docs: RedisUnavailable)
    assert error.detail == f"Error 111 connecting to 127.0.0.1:{port}. Connection refused."
    assert str(error).startswith(
        f"Redis client 'default' at redis://:***@127.0.0.1:{port}/2 is unavailable: connection refused"
    )
    assert "hunter2-pw" not in str(error) and "hunter2-pw" not in repr(error)


def test_named_client_is_checked_and_named(redis_url: str) -> None:
    port = free_port()
    error = check_fails(
        {"redis.url": redis_url, "redis.clients": "cache", "redis.cache.url": f"redis://127.0.0.1:{port}/0"},
        "connection refused", 1.0,
    )  # fmt: skip
    assert error.client == "cache"


def test_timeout_within_startup_check_timeout_plus_margin(silent_listener: int) -> None:
    settings = {
        "redis.url": f"redis://127.0.0.1:{silent_listener}/0",
        "redis.startup_check_timeout": "0.5",
    }
    started = time.monotonic()
    error = check_fails(settings, "timeout", 0.5 + 1.0)
    assert time.monotonic() - started >= 0.45  # it did wait for the answer
    assert "TLS" not in str(error)  # a plain URL: no TLS hint


def test_the_check_tries_once() -> None:
    """No retry (docs/retries.rst: the startup check uses none): against a server that
    closes every connection at once, the check connects once, and once more only to
    look for a TLS server behind it (the hint of its message)."""
    accepted: list[float] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)

        def serve() -> None:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                accepted.append(time.monotonic())
                connection.close()

        threading.Thread(target=serve, daemon=True).start()
        port = listener.getsockname()[1]
        check_fails(
            {"redis.url": f"redis://127.0.0.1:{port}/0"}, "connection closed by server", 1.5
        )
    assert len(accepted) == 2


def test_auth_failures(redis_server_factory: Any) -> None:
    server = redis_server_factory("right-pw-1")
    url = f"redis://127.0.0.1:{server.port}/0"
    wrong = check_fails(
        {"redis.url": url, "redis.password": "wrong-pw-2"}, "authentication failed", 1.0
    )
    assert "wrong-pw-2" not in str(wrong) and "right-pw-1" not in str(wrong)
    check_fails({"redis.url": url}, "authentication failed", 1.0)  # NOAUTH
    make({"redis.url": url, "redis.password": "right-pw-1"})


def test_name_resolution() -> None:
    check_fails({"redis.url": "redis://no-such-host.invalid:6379/0"}, "name resolution", 5.0)


def test_tls_against_a_plain_server(redis_url: str) -> None:
    settings = {
        "redis.url": redis_url.replace("redis://", "rediss://"),
        "redis.startup_check_timeout": "0.5",
    }
    error = check_fails(settings, "timeout", 1.5)  # was "TLS error (Timeout…)"
    assert str(error).endswith(
        ": timeout (Timeout connecting to server; no TLS handshake answer: if the server "
        "does not speak TLS, use redis://)"
    ), str(error)


def test_read_only_replica_and_read_only_user_pass(
    redis_server: Any, redis_server_factory: Any
) -> None:
    replica = redis_server_factory(None, "--replicaof", "127.0.0.1", str(redis_server.port))
    make({"redis.url": replica.url})
    with redis_server.client() as admin:
        admin.acl_setuser("reader", enabled=True, passwords=["+reader-pw"], keys=["*"],
                          commands=["+@read", "+ping"])  # fmt: skip
        try:
            make({"redis.url": f"redis://reader:reader-pw@127.0.0.1:{redis_server.port}/0"})
        finally:
            admin.acl_deluser("reader")


def test_warn_logs_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyramid_redisx")
    port = free_port()
    app = make({"redis.url": f"redis://127.0.0.1:{port}/0", "redis.startup_check": "warn"})
    assert app is not None
    (record,) = [r for r in caplog.records if r.name == "pyramid_redisx"]
    assert record.getMessage().startswith(
        "startup check failed, going on (startup_check = warn): Redis client 'default' at "
    ), record.getMessage()
    assert "connection refused" in record.getMessage()


def test_false_skips_the_check(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    started = time.monotonic()
    make({"redis.url": f"redis://127.0.0.1:{port}/0", "redis.startup_check": "false"})
    assert time.monotonic() - started < 0.5
    assert not [r for r in caplog.records if r.name.startswith("pyramid_redisx")]


def test_include_alone_does_not_connect() -> None:
    """The check belongs to make_wsgi_app (ApplicationCreated), not to the include."""
    config = Configurator(settings={"redis.url": f"redis://127.0.0.1:{free_port()}/0"})
    config.include("pyramid_redisx")
    config.commit()
    with pytest.raises(RedisUnavailable):
        config.make_wsgi_app()


def test_a_passed_check_logs_the_pings_own_time(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The INFO line says how long the PING alone took (connect and handshake apart)."""
    caplog.set_level(logging.INFO, logger="pyramid_redisx")
    make({"redis.url": redis_url})
    (line,) = [r.getMessage() for r in caplog.records if "reachable at" in r.getMessage()]
    took = float(
        re.fullmatch(r"redis client=default reachable at \S+ \(PING ([\d.]+) ms\)", line)[1]
    )  # type: ignore[index]
    assert 0 < took < 1000, line


@pytest.mark.parametrize("first", ["not checked", "warn", "same options"])
def test_a_client_passed_over_does_not_end_the_check(
    redis_url: str, first: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients in declaration order: one not checked (``startup_check = false``), one that
    only warns, or one with the same options as a client already checked, is passed
    over, and the next client is still checked: here its server is down."""
    caplog.set_level(logging.INFO, logger="pyramid_redisx")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = {"redis.url": redis_url, "redis.clients": "a b"}
    if first == "not checked":
        settings |= {"redis.a.url": dead, "redis.a.startup_check": "false"}
    elif first == "warn":
        settings |= {"redis.a.url": dead, "redis.a.startup_check": "warn"}
    settings["redis.b.url"] = dead
    error = check_fails(settings, "connection refused", 2.0)
    assert error.client == "b"
    reachable = [r.getMessage() for r in caplog.records if "reachable at" in r.getMessage()]
    assert [line.split()[1] for line in reachable] == ["client=default"]  # "a" once, as default


def _in_a_fork(settings: dict[str, str]) -> tuple[int, str]:
    """Make the app in a forked child of this process (a worker of this "master"):
    (exit code, what it logged). 0: made; 3: RedisUnavailable."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read)
            handler = logging.StreamHandler(os.fdopen(write, "w"))
            logging.getLogger("pyramid_redisx").addHandler(handler)
            logging.getLogger("pyramid_redisx").setLevel(logging.INFO)
            try:
                make(settings)
                code = 0
            except RedisUnavailable:
                code = 3
            handler.flush()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as output:
        said = output.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), said


def test_a_worker_that_replaces_another_goes_on_with_a_warning(
    redis_server_factory: Any, folder: Any
) -> None:
    """A worker of this "master" passed the check; the next one, booted while the server
    is down, comes up and says why in one WARNING with the cause."""
    server = redis_server_factory()
    settings = {"redis.url": server.url}
    make(settings)  # here too: mutmut records only this process's calls (the test's map)
    assert _in_a_fork(settings)[0] == 0
    server.stop()
    code, said = _in_a_fork(settings)
    assert code == 0, said
    assert said.startswith(
        "startup check failed in a worker that replaces another (an earlier worker of this "
        "master passed it), going on: the circuit breaker and the health view carry the "
        "outage: Redis client 'default' at redis://127.0.0.1:"
    ), said
    assert "connection refused" in said
