"""The Prometheus endpoint under a real gunicorn with 4 worker processes, with and without
``--preload``, in ``prometheus_client``'s multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

Load on several workers, then a scrape: the pool figures summed over the workers
(in use + idle) are the connections the server lists for the app (``CLIENT LIST``,
by client name), and the commands counted are the commands sent. A worker killed with
SIGKILL (gunicorn starts another) drops out of the pool figures at the next scrape.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyramid_redisx.testing import free_port

from .harness import Admin, Load
from .test_gunicorn_fork import ROOT, Gunicorn, stop_group, wait_until_serving

APP = "tests.reliability.prometheus_app:make_app()"
WORKERS = 4
REQUESTS = 400


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Any]:
    started: list[Gunicorn] = []

    def start(server: Any, preload: bool) -> Gunicorn:
        port = free_port()
        directory = tmp_path / "prometheus"
        directory.mkdir()
        env = dict(os.environ, REDISX_GUNICORN_URL=server.url,
                   PROMETHEUS_MULTIPROC_DIR=str(directory))  # fmt: skip
        log = tmp_path / "gunicorn.log"
        command = [
            sys.executable, "-m", "gunicorn", *(["--preload"] if preload else []),
            "--workers", str(WORKERS), "--worker-class", "gthread", "--threads", "4", "--keep-alive", "0",
            "--bind", f"127.0.0.1:{port}", "--chdir", str(ROOT),
            "--timeout", "30", "--graceful-timeout", "2", "--log-level", "warning", APP,
        ]  # fmt: skip
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        instance = Gunicorn(process, port, log)
        started.append(instance)
        wait_until_serving(instance)
        wait_for_workers(instance)
        return instance

    try:
        yield start
    finally:
        for instance in started:
            stop_group(instance.process)


def wait_for_workers(instance: Gunicorn, timeout: float = 30.0) -> set[int]:
    """Without ``--preload`` each worker imports the app after it forks: the first may
    serve while the others still boot, and the load then reaches one worker only (seen
    under CI's load). Ask ``/whoami`` (no Redis, no metrics) until every worker answered,
    or the timeout passed; the test asserts on what the load then reached."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < WORKERS and time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=5)
        try:
            connection.request("GET", "/whoami")
            seen.add(json.loads(connection.getresponse().read())["pid"])
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
        finally:
            connection.close()
    return seen


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        text = response.read().decode()
    finally:
        connection.close()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))  # fmt: skip


def app_connections(admin: Admin) -> int:
    return sum(1 for c in admin.connections() if c.get("name") == "promtest")


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_pool_figures_across_workers_add_up_to_the_servers_list(
    preload: bool, gunicorn: Any, redis_server_factory: Any
) -> None:
    server = redis_server_factory()
    instance = gunicorn(server, preload)
    load = Load(instance.port, lambda index: "/work", threads=16, per_thread=REQUESTS // 16,
                timeout=10)  # fmt: skip
    try:
        outcomes = load.start().join(timeout=120)
    finally:
        load.abandon()
    pids = {json.loads(o.body)["pid"] for o in outcomes if o.status == 200}
    assert sum(o.status == 200 for o in outcomes) == REQUESTS
    assert len(pids) >= 2, f"the load reached one worker only: {pids}"

    admin = Admin(server)
    try:
        listed = app_connections(admin)
        samples = scrape(instance.port)
        pool = {"db_client_connection_pool_name": "default"}
        used = total(
            samples, "db_client_connection_count", db_client_connection_state="used", **pool
        )
        idle = total(
            samples, "db_client_connection_count", db_client_connection_state="idle", **pool
        )
        print(f"\nworkers that served: {len(pids)}; in use {used:g} + idle {idle:g}; "
              f"CLIENT LIST: {listed}")  # fmt: skip
        assert used == 0
        assert used + idle == listed > 0
        # each live worker's max counts once, from its first request (or scrape) on
        most = total(samples, "db_client_connection_max", **pool)
        assert most % 8 == 0 and 8 * len(pids) <= most <= 8 * WORKERS
        # the commands of every request, whichever worker ran it: INCR and GET each
        for op in ("INCRBY", "GET"):
            count = total(
                samples, "db_client_operation_duration_seconds_count", db_operation_name=op
            )
            assert count == REQUESTS, op
        assert total(samples, "pyramid_redisx_request_commands_count") == REQUESTS

        # a worker dies without a word: its pool's figures leave the sum, its counts stay
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the server has seen the worker go
            samples = scrape(instance.port)
            idle_now = total(samples, "db_client_connection_count", **pool)
            listed_now = app_connections(admin)
            if listed_now < listed and idle_now == listed_now:
                break
            time.sleep(0.2)
        listed_after = app_connections(admin)
        assert total(samples, "db_client_connection_count", **pool) == listed_after < listed
        count = total(
            samples, "db_client_operation_duration_seconds_count", db_operation_name="GET"
        )
        assert count == REQUESTS
    finally:
        admin.close()
