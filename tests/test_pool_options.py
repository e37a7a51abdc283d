"""Each connection option reaches the pool's connections, seen on a real server.

A one-line bug that drops an option on its way from settings to the pool (issue 13,
"blind spots") must fail here: each test looks at what the server or the reply shows.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from pyramid_redisx import get_redis
from pyramid_redisx.pools import worst_case_seconds
from pyramid_redisx.request import client_set
from pyramid_redisx.settings import parse_client
from pyramid_redisx.testing import TLSFiles
from tests.conftest import build_app


def app_client(settings: dict[str, str]) -> tuple[Any, Any]:
    app = build_app(settings)
    return app, get_redis(app.app.registry)


@pytest.fixture
def apps() -> Any:
    made: list[Any] = []

    def make(**settings: str) -> Any:
        app, client = app_client({f"redis.{k}": v for k, v in settings.items()})
        made.append(app)
        return client

    yield make
    for app in made:
        client_set(app.app.registry).close()


def test_unix_socket_url_with_keepalive_default(redis_server_factory: Any, apps: Any) -> None:
    server = redis_server_factory(unix_socket=True)
    client = apps(url=server.unix_url)  # socket_keepalive is true by default: TCP only
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert "U" in client.client_info()["flags"]  # the server sees a unix-socket client


@pytest.mark.parametrize(("setting", "expected"), [(None, 1), ("true", 1), ("false", 0)])
def test_socket_keepalive_reaches_the_socket(
    redis_url: str, apps: Any, setting: str | None, expected: int
) -> None:
    client = apps(url=redis_url, **({"socket_keepalive": setting} if setting else {}))
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        sock = connection._sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == expected
    finally:
        pool.release(connection)


def test_decode_responses(redis_url: str, apps: Any) -> None:
    assert apps(url=redis_url).echo("x") == b"x"
    assert apps(url=redis_url, decode_responses="true").echo("x") == "x"


def test_client_name(redis_url: str, apps: Any) -> None:
    client = apps(url=redis_url, client_name="app-web-1")
    assert client.client_info()["name"] == "app-web-1"


@pytest.mark.parametrize("resp", ["2", "3"])
def test_protocol(resp: str, redis_url: str, apps: Any) -> None:
    assert str(apps(url=redis_url, protocol=resp).client_info()["resp"]) == resp


def test_ssl_options_reach_the_connection(
    redis_server_factory: Any, tls_files: TLSFiles, apps: Any
) -> None:
    server = redis_server_factory(tls=tls_files, tls_auth_clients="yes")
    url = f"rediss://localhost:{server.port}/0"
    full = {"url": url, "ssl_ca_certs": tls_files.ca, "ssl_certfile": tls_files.client_cert,
            "ssl_keyfile": tls_files.client_key, "ssl_cert_reqs": "required",
            "ssl_check_hostname": "true", "startup_check": "false"}  # fmt: skip
    assert apps(**full).ping() is True  # CA, client certificate and key all used
    without_cert = {k: v for k, v in full.items() if k not in ("ssl_certfile", "ssl_keyfile")}
    with pytest.raises(redis.ConnectionError):
        apps(**without_cert).ping()  # the server requires a client certificate
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        apps(**{**full, "ssl_ca_certs": tls_files.client_cert}).ping()  # not our CA
    # not checking the server certificate: no CA needed at all
    unchecked = {k: v for k, v in full.items() if k != "ssl_ca_certs"}
    assert apps(**{**unchecked, "ssl_cert_reqs": "none", "ssl_check_hostname": "false"}).ping()


def test_ssl_check_hostname(redis_server_factory: Any, tmp_path: Any, apps: Any) -> None:
    files = TLSFiles.make(tmp_path, hosts=("localhost",))  # not valid for 127.0.0.1
    server = redis_server_factory(tls=files)
    settings = {"url": f"rediss://127.0.0.1:{server.port}/0", "ssl_ca_certs": files.ca,
                "startup_check": "false"}  # fmt: skip
    with pytest.raises(redis.ConnectionError, match=r"IP address mismatch|doesn't match"):
        apps(**settings, ssl_check_hostname="true").ping()
    assert apps(**settings, ssl_check_hostname="false").ping() is True


def test_health_check_interval_pings_an_idle_connection(
    redis_server_factory: Any, apps: Any
) -> None:
    server = redis_server_factory()
    client = apps(url=server.url, health_check_interval="0.2", startup_check="false")

    def pings() -> int:
        with server.client() as admin:
            return int(admin.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))

    client.get("k")
    before = pings()
    client.get("k")  # used again at once: no PING
    assert pings() == before
    time.sleep(0.3)
    client.get("k")  # idle longer than the interval: PINGed before use
    assert pings() == before + 1


# ------------------------------------------------------------------ the worst case
def documented_worst_case(r: int, cap: float, wait: float, read: float, connect: float,
                          retry_on_timeout: bool) -> float:  # fmt: skip
    """docs/retries.rst, "How long one command can hold a request", as written there."""
    pauses = sum(min(cap, 0.008 * 2**k) for k in range(1, r + 1))
    if not retry_on_timeout:
        return wait + read + connect + (r + 2) * pauses
    return wait + (r + 1) * (read + (r + 1) * connect + pauses) + pauses


def test_worst_case_of_the_defaults_is_the_documented_figure() -> None:
    # "Defaults: 5 + 2 + 2 + 5 * 0.112 = about 9.6 s (4.6 s when a connection is free)"
    assert worst_case_seconds(parse_client("default", {})) == pytest.approx(9.56)
    free = parse_client("default", {"redis.blocking": "false"})
    assert worst_case_seconds(free) == pytest.approx(4.56)


seconds = st.sampled_from([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0])


@given(r=st.integers(0, 20), cap=st.sampled_from([0.0, 0.01, 0.03, 0.25, 1.0]), wait=seconds,
       read=seconds, connect=seconds, blocking=st.booleans(), retry_on_timeout=st.booleans())  # fmt: skip
def test_worst_case_is_the_documented_formula(
    r: int, cap: float, wait: float, read: float, connect: float, blocking: bool,
    retry_on_timeout: bool,
) -> None:  # fmt: skip
    options = parse_client("default", {
        "redis.retries": str(r), "redis.retry_backoff_cap": str(cap),
        "redis.pool_timeout": str(wait), "redis.socket_timeout": str(read),
        "redis.socket_connect_timeout": str(connect), "redis.blocking": str(blocking),
        "redis.retry_on_timeout": str(retry_on_timeout),
    })  # fmt: skip
    expected = documented_worst_case(
        r, cap, wait if blocking else 0.0, read, connect, retry_on_timeout
    )
    assert worst_case_seconds(options) == pytest.approx(expected)
