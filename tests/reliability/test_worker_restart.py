"""A worker restart never takes the service down; a first deployment still fails fast.

Real gunicorn, 2 workers x 4 threads, without ``--preload`` (each worker runs the app's
startup, the startup check included). Before issue 27 a worker booted during an outage
exited with code 3 and the master shut down for good ("Worker failed to boot").
"""

from __future__ import annotations

import http.client
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pyramid_redisx.testing import RedisServer

from .outages import COOLDOWN, AppServer

pytestmark = [pytest.mark.outages, pytest.mark.timeout(120)]


def get(port: int, path: str) -> tuple[int | None, str, float]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(), time.perf_counter() - started
    except (OSError, http.client.HTTPException) as exc:
        return None, type(exc).__name__, time.perf_counter() - started
    finally:
        connection.close()


def workers_of(master: int) -> set[int]:
    """Pids of ``master``'s children, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == master:
                        found.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_a_worker_replaced_during_an_outage_comes_up_and_serves(tmp_path: Path) -> None:
    redis_server = RedisServer().start()
    app = AppServer("gunicorn", redis_server.url, True, tmp_path / "gunicorn.log")
    try:
        app.wait_serving()
        master = app.process.pid
        first = wait_for(
            lambda: len(workers_of(master)) == 2 and workers_of(master), 10, "2 workers"
        )
        redis_server.stop()  # the outage
        victim = min(first)
        os.kill(victim, signal.SIGKILL)  # an OOM kill, a max_requests recycle...
        replacement = wait_for(lambda: (workers_of(master) - first) or None, 30, "a new worker")
        served = wait_for(
            lambda: {get(app.port, "/whoami")[1] for _ in range(20)} >= {str(p) for p in replacement},
            30, "the new worker serving",
        )  # fmt: skip
        assert served
        assert app.process.poll() is None, app.output()  # the master is still there
        assert "startup check failed in a worker that replaces another" in app.output()
        assert "Worker failed to boot" not in app.output()
        # During the outage: Redis-free views answer, Redis views fail fast and clean.
        assert {get(app.port, "/free")[0] for _ in range(20)} == {200}
        plain = [get(app.port, "/plain") for _ in range(40)]
        assert {status for status, _, _ in plain} == {503}, plain
        assert sorted(seconds for *_, seconds in plain)[20] < 0.05, plain  # median: at once
        # Redis back: every worker serves it again within the cooldown, no restart.
        redis_server.start()
        back = time.monotonic()
        wait_for(lambda: get(app.port, "/plain")[0] == 200, COOLDOWN + 5, "a first 200")
        first_200 = time.monotonic() - back
        outcomes = [get(app.port, "/plain") for _ in range(2)]
        time.sleep(COOLDOWN + 0.2)  # the other worker's probe is due too
        outcomes = [get(app.port, "/plain") for _ in range(40)]
        assert {status for status, _, _ in outcomes} == {200}, outcomes
        assert first_200 <= COOLDOWN + 0.5, first_200
        assert app.process.poll() is None
    finally:
        app.stop()
        redis_server.cleanup()


def test_a_first_deployment_with_redis_down_still_fails_fast(tmp_path: Path) -> None:
    redis_server = RedisServer().start()
    redis_server.stop()  # its port: nothing listens
    app = AppServer("gunicorn", redis_server.url, True, tmp_path / "gunicorn.log")
    try:
        started = time.monotonic()
        code = app.process.wait(30)
        assert code != 0 and time.monotonic() - started < 15
        assert "RedisUnavailable" in app.output() and "connection refused" in app.output()
        assert "replaces another" not in app.output()
    finally:
        app.stop()
        redis_server.cleanup()
