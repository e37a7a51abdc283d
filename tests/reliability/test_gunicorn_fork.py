"""Scenario 4: a real gunicorn, ``--preload``, 2 sync workers: no socket is shared.

The app is built in the gunicorn master and forked into the workers. 1000 requests
ask each worker for its pid and its connection's CLIENT ID: every worker has its own
connections (no id seen from two pids), none is the master's, nothing fails (a shared
socket shows as protocol errors or crossed replies), and the server's CLIENT LIST
shows exactly those connections.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyramid_redisx.testing import free_port

from .harness import Admin, Load, summary

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests.reliability importable
APP = "tests.reliability.gunicorn_app:make_app()"
REQUESTS = 1000


class Gunicorn:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until_serving(gunicorn: Gunicorn, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gunicorn.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {gunicorn.process.returncode}:\n{gunicorn.output()}")
        connection = http.client.HTTPConnection("127.0.0.1", gunicorn.port, timeout=2)
        try:
            connection.request("GET", "/whoami")
            if connection.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer within {timeout} s:\n{gunicorn.output()}")


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Any]:
    """``start(server, warm)`` → a serving gunicorn; the whole process group is killed after."""
    started: list[Gunicorn] = []

    def start(server: Any, warm: bool) -> Gunicorn:
        port = free_port()
        env = dict(os.environ, REDISX_GUNICORN_URL=server.url,
                   REDISX_GUNICORN_WARM="1" if warm else "0")  # fmt: skip
        log = tmp_path / "gunicorn.log"
        command = [
            sys.executable, "-m", "gunicorn", "--preload",
            "--workers", "2", "--worker-class", "sync",
            "--bind", f"127.0.0.1:{port}", "--chdir", str(ROOT),
            "--timeout", "30", "--graceful-timeout", "2", "--log-level", "warning",
            APP,
        ]  # fmt: skip
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: master and workers
            )  # fmt: skip
        instance = Gunicorn(process, port, log)
        started.append(instance)
        wait_until_serving(instance)
        return instance

    try:
        yield start
    finally:
        for instance in started:
            stop_group(instance.process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after 5 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    with contextlib.suppress(ProcessLookupError):  # workers too, even if the master is gone
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(5)


@pytest.mark.slow
@pytest.mark.parametrize("warm", [False, True], ids=["cold-master", "warm-master"])
def test_preloaded_gunicorn_workers_never_share_a_connection(
    warm: bool, gunicorn: Any, redis_server_factory: Any, record_property: Any
) -> None:
    server = redis_server_factory()
    instance = gunicorn(server, warm)
    started = time.monotonic()
    load = Load(instance.port, lambda index: "/whoami", threads=4, per_thread=REQUESTS // 4,
                timeout=10)  # fmt: skip
    try:
        outcomes = load.start().join(timeout=120)
    finally:
        load.abandon()
    seconds = time.monotonic() - started
    admin = Admin(server)
    try:
        listed = {int(c["id"]): c for c in admin.connections()}
    finally:
        admin.close()

    ok = [json.loads(o.body) for o in outcomes if o.status == 200]
    ids_by_pid: dict[int, set[int]] = defaultdict(set)
    for reply in ok:
        ids_by_pid[reply["pid"]].add(reply["client_id"])
    master_ids = {reply["master_client_id"] for reply in ok}
    figures = summary(outcomes)
    figures.update(seconds=round(seconds, 2), master_pid=instance.process.pid,
                   ids_by_pid={str(pid): sorted(ids) for pid, ids in ids_by_pid.items()},
                   master_client_ids=sorted(master_ids, key=str),
                   server_client_ids=sorted(listed))  # fmt: skip
    print(f"\nscenario 4 (gunicorn --preload, {'warm' if warm else 'cold'} master):",
          json.dumps(figures))  # fmt: skip
    for key, value in figures.items():
        record_property(f"gunicorn_{key}", value)

    assert len(outcomes) == REQUESTS
    assert [o for o in outcomes if o.status != 200] == []  # no protocol error, no 500
    assert "Traceback" not in instance.output(), instance.output()
    assert len(ids_by_pid) == 2 and instance.process.pid not in ids_by_pid  # both workers served
    pids = list(ids_by_pid)
    assert ids_by_pid[pids[0]].isdisjoint(ids_by_pid[pids[1]])  # no id seen from two pids
    # A sync worker serves one request at a time: it reuses its one connection.
    assert all(len(ids) == 1 for ids in ids_by_pid.values()), ids_by_pid
    worker_ids = ids_by_pid[pids[0]] | ids_by_pid[pids[1]]
    assert len(master_ids) == 1
    (master_id,) = master_ids
    if warm:
        # The master's connection (open at fork time) is never used by a worker, and
        # the master still holds it.
        assert isinstance(master_id, int) and master_id not in worker_ids
        assert set(listed) == worker_ids | {master_id}, (listed, worker_ids, master_id)
    else:
        # The startup check closed its connection: the master held none when it forked.
        assert master_id is None
        assert set(listed) == worker_ids, (listed, worker_ids)
    # Distinct connections on the server side too: one socket (address) per id.
    assert len({c["addr"] for c in listed.values()}) == len(listed)
