"""The JSON health view and the pyramid-redisx console script, against real servers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis

from pyramid_redisx.health import close_probes
from pyramid_redisx.pools import pool_figures
from pyramid_redisx.request import client_set
from tests.conftest import build_app, pools_of

PASSWORD = "Health-Pw-777"


def test_health_ok_down_and_back(redis_server_factory: Any, redis_url: str) -> None:
    server = redis_server_factory(PASSWORD)
    settings = {
        "redis.url": redis_url,
        "redis.health_route": "/health/redis",
        "redis.clients": "cache",
        "redis.cache.url": f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
        "redis.cache.max_connections": "5",
    }
    app = build_app(settings)
    ok = app.get("/health/redis")
    assert ok.status_int == 200 and ok.headers["Cache-Control"] == "no-store"
    assert ok.json["status"] == "ok"
    cache = ok.json["clients"]["cache"]
    assert cache["ok"] is True and cache["role"] == "master" and cache["latency_ms"] > 0
    assert cache["pool"] == {"in_use": 0, "idle": 0, "max": 5}
    assert (cache["circuit"], cache["soft_failures"]) == ("closed", 0)
    assert sorted(cache) == ["circuit", "latency_ms", "ok", "pool", "role", "soft_failures"]

    server.stop()
    started = time.monotonic()
    down = app.get("/health/redis", status=503)
    assert time.monotonic() - started < 1.5  # short timeout, no retry budget
    assert down.json["status"] == "down"
    assert down.json["clients"]["default"]["ok"] is True
    failing = down.json["clients"]["cache"]
    assert failing["ok"] is False and failing["error"].startswith("connection refused: ")
    assert PASSWORD not in down.text and PASSWORD not in ok.text

    assert sorted(failing) == ["circuit", "error", "latency_ms", "ok", "pool", "role",
                               "soft_failures"]  # fmt: skip

    server.start()
    assert app.get("/health/redis").json["status"] == "ok"  # no app rebuild
    with server.client() as admin:  # the server's password, as started

        def probes_connected() -> int:
            return sum(1 for c in admin.client_list() if c["id"] != str(admin.client_id()))

        assert probes_connected() == 1  # the health view's own connection
        close_probes(app.app.registry)
        deadline = time.monotonic() + 5
        while probes_connected():
            assert time.monotonic() < deadline, "the probe's connection stayed open"
            time.sleep(0.01)
    client_set(app.app.registry).close()


def test_health_reuses_one_connection_and_never_takes_from_the_pool(
    make_app: Any, redis_server: Any
) -> None:
    app = make_app(health_route="/health", max_connections="2")
    pool = pools_of(app)["default"]
    held = [pool.get_connection() for _ in range(2)]  # the app's pool is exhausted
    try:
        with redis_server.client() as admin:
            app.get("/health")
            before = admin.info("stats")["total_connections_received"]
            results = []
            threads = [
                threading.Thread(target=lambda: results.append(app.get("/health").json["status"]))
                for _ in range(20)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            after = admin.info("stats")["total_connections_received"]
        assert results == ["ok"] * 20  # answered although the pool had nothing free
        assert after - before == 0  # 20 checks, not one new connection
        assert pool_figures(pool).in_use == 2
    finally:
        for connection in held:
            pool.release(connection)
        close_probes(app.app.registry)


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyramid_redisx.cli", *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _ini(tmp_path: Path, body: str) -> str:
    path = tmp_path / "app.ini"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_cli_check_and_info(tmp_path: Path, redis_server: Any, redis_server_factory: Any) -> None:
    dead = redis_server_factory()
    ini = _ini(tmp_path, f"""
        [app:main]
        use = call:demo_app:main
        redis.url = redis://:{PASSWORD}@127.0.0.1:%(port)s/0
        redis.clients = cache
        redis.cache.url = redis://127.0.0.1:{dead.port}/2
        redis.cache.password = env:CLI_TEST_PW
        redis.max_connections = 12
        """)  # fmt: skip
    with redis_server.client() as admin:
        admin.config_set("requirepass", PASSWORD)
        try:
            env = {"CLI_TEST_PW": "other-secret-pw"}
            dead.stop()
            failed = _run_cli("check", ini, f"port={redis_server.port}", env=env)
            dead.start()
            passed = _run_cli("check", ini, f"port={redis_server.port}", env=env)
        finally:
            with redis.Redis(port=redis_server.port, password=PASSWORD) as authed:
                authed.config_set("requirepass", "")
    assert failed.returncode == 1, failed.stderr
    lines = failed.stdout.splitlines()
    assert lines[0].startswith(
        f"default  ok    redis://:***@127.0.0.1:{redis_server.port}/0  role=master version="
    )
    assert "max_connections=12 blocking=true" in lines[0]
    assert lines[1].startswith(
        f"cache    DOWN  redis://:***@127.0.0.1:{dead.port}/2  connection refused"
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.count(" ok ") == 2

    shown = _run_cli("info", ini, f"port={redis_server.port}", env=env)
    assert shown.returncode == 0
    assert "[default]\n" in shown.stdout and "[cache]\n" in shown.stdout
    assert "max_connections = 12" in shown.stdout and "db = 2" in shown.stdout
    for result in (failed, passed, shown):
        assert PASSWORD not in result.stdout + result.stderr
        assert "other-secret-pw" not in result.stdout + result.stderr


def test_cli_bad_settings_exit_1_with_the_key(tmp_path: Path) -> None:
    ini = _ini(tmp_path, """
        [app:main]
        use = call:demo_app:main
        redis.max_connections = lots
        """)  # fmt: skip
    result = _run_cli("check", ini)
    assert result.returncode == 1
    assert "redis.max_connections = 'lots' is not valid" in result.stderr
    assert "Traceback" not in result.stderr


def test_pshell_has_request_redis_and_get_redis(tmp_path: Path, redis_url: str) -> None:
    ini = _ini(tmp_path, f"""
        [app:main]
        use = call:demo_app:main
        pyramid.includes = pyramid_redisx
        redis.url = {redis_url}
        redis.clients = cache
        """)  # fmt: skip
    script = (
        "from pyramid_redisx import get_redis\n"
        'print("got", request.redis.incr("pshell"), get_redis(registry, "cache").incr("pshell"))\n'
    )
    command = [str(Path(sys.executable).parent / "pshell"), ini]
    if version("pyramid").startswith("1."):
        # Pyramid 1.10's pshell loads every shell entry point through pkg_resources, which
        # fails on today's setuptools; bootstrap() gives pshell's request and registry.
        script = (
            f"from pyramid.paster import bootstrap\nenv = bootstrap({ini!r})\n"
            "request, registry = env['request'], env['registry']\n" + script
        )
        command = [sys.executable, "-"]
    result = subprocess.run(command, input=script, capture_output=True, text=True, timeout=30)
    assert "got 1 2" in result.stdout, result.stdout + result.stderr


def test_health_on_a_stalled_server_answers_after_one_timeout(redis_server_factory: Any) -> None:
    """The kept probe connection's server stops answering (SIGSTOP): the view says down
    after one probe timeout (1 s), not two. A probe that failed otherwise on a kept
    connection (a server that dropped it) is tried once more; one that timed out is not."""
    server = redis_server_factory()
    app = build_app({"redis.url": server.url, "redis.health_route": "/health"})
    try:
        assert app.get("/health").json["status"] == "ok"  # the probe connection is kept
        server.pause()
        try:
            started = time.monotonic()
            down = app.get("/health", status=503)
            took = time.monotonic() - started
        finally:
            server.resume()
        assert down.json["clients"]["default"]["error"].startswith("timeout: ")
        assert 0.95 <= took < 1.7, took  # 2.0 s when the probe is tried again
        assert app.get("/health").json["status"] == "ok"
    finally:
        close_probes(app.app.registry)
        client_set(app.app.registry).close()


def test_health_shows_the_client_cache_only_when_on(make_app: Any) -> None:
    def view(request: Any) -> str:
        return str(request.redis.get("k"))

    plain = make_app({"/": view}, health_route="/health")
    assert "client_cache" not in plain.get("/health").json["clients"]["default"]
    app = make_app({"/": view}, health_route="/health", client_cache="true")
    cache = client_set(app.app.registry).caches["default"]
    app.get("/")
    deadline = time.monotonic() + 5
    while cache.listener_id is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(3):
        app.get("/")
    figures = app.get("/health").json["clients"]["default"]["client_cache"]
    assert figures["listening"] is True
    assert figures["entries"] == 1 and figures["hits"] >= 2 and figures["bytes"] > 0
    assert set(figures) == {"listening", "entries", "bytes", "hits", "misses",
                            "invalidations", "flushes", "evictions"}  # fmt: skip


def test_health_of_a_sentinel_client_names_the_master_node_and_its_state(
    redis_server_factory: Any, sentinel_for: Any, make_app: Any
) -> None:
    """Up: the master the Sentinel names, as a node. Master down (the Sentinel still
    names it: its down-after is 30 s): that node's error. A service the Sentinel does
    not know: no master, no node."""
    master = redis_server_factory()
    port = sentinel_for(master.port)
    app = make_app(url="redis://nowhere.invalid:1/0", sentinels=f"127.0.0.1:{port}",
                   sentinel_service="mymaster", health_route="/health", clients="lost",
                   **{"lost.sentinel_service": "nosuch", "lost.startup_check": "false"})  # fmt: skip
    body = app.get("/health", status=503).json
    node = f"127.0.0.1:{master.port}"
    up = body["clients"]["default"]
    assert (up["ok"], up["role"], list(up["nodes"])) == (True, "master", [node])
    assert up["nodes"][node]["ok"] is True and up["nodes"][node]["role"] == "master"
    assert sorted(up["nodes"][node]) == ["latency_ms", "ok", "role"]
    lost = body["clients"]["lost"]
    assert (lost["ok"], lost["latency_ms"], lost["role"], lost["nodes"]) == (False, 0.0, "", {})
    assert lost["error"].startswith("no master: ")
    assert "nosuch" in lost["error"]
    master.stop()
    down = app.get("/health", status=503).json["clients"]["default"]
    assert down["ok"] is False and list(down["nodes"]) == [node]
    assert down["nodes"][node]["ok"] is False
    assert down["nodes"][node]["error"] == down["error"]
    assert down["error"].startswith("connection refused: ")
    close_probes(app.app.registry)


def test_health_of_a_sentinel_client_keeps_one_sentinel_connection(
    redis_server_factory: Any, sentinel_for: Any, make_app: Any
) -> None:
    """The health view asks the Sentinel where the master is on a connection it keeps:
    three more calls open no connection to the Sentinel."""
    master = redis_server_factory()
    port = sentinel_for(master.port)
    app = make_app(url="redis://nowhere.invalid:1/0", sentinels=f"127.0.0.1:{port}",
                   sentinel_service="mymaster", health_route="/health")  # fmt: skip

    def received() -> int:  # (this connection counts itself)
        with redis.Redis(port=port, socket_timeout=2) as sentinel:
            return int(sentinel.info("stats")["total_connections_received"])

    try:
        assert app.get("/health").json["clients"]["default"]["ok"] is True
        before = received()
        for _ in range(3):
            assert app.get("/health").json["clients"]["default"]["ok"] is True
        assert received() - before == 1
    finally:
        close_probes(app.app.registry)


def test_health_of_a_sentinel_client_answers_within_its_timeout_when_sentinels_stall(
    make_app: Any,
) -> None:
    """The only Sentinel accepts connections and never answers: the health view gives up
    after its own timeout (at most 1 s: ``startup_check_timeout`` 0.5 here), not the
    client's ``socket_timeout`` (5 s)."""
    import socket

    stalled = socket.create_server(("127.0.0.1", 0))  # never accept()s: the kernel does
    port = stalled.getsockname()[1]
    app = make_app(url="redis://nowhere.invalid:1/0", sentinels=f"127.0.0.1:{port}",
                   sentinel_service="mymaster", health_route="/health", socket_timeout="5",
                   socket_connect_timeout="5", startup_check="false",
                   startup_check_timeout="0.5")  # fmt: skip
    try:
        started = time.monotonic()
        body = app.get("/health", status=503).json["clients"]["default"]
        took = time.monotonic() - started
        assert body["ok"] is False and body["error"].startswith("no master: ")
        assert took < 2.5, took
    finally:
        close_probes(app.app.registry)
        stalled.close()
