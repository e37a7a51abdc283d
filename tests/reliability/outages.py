"""The outage driver of ``test_outages.py`` and ``bench/bench_outages.py``.

One run: a real Redis (behind the black-hole proxy for that outage), the outage app
(``outage_app.py``) served by waitress (8 threads) or gunicorn (2 workers x 4 threads,
gthread, no ``--preload``) in its own process, and two loads from outside it:

* ``wrk`` (closed loop, ``WRK_CONNECTIONS`` keep-alive connections) on ``/free``, the
  view that never touches Redis: requests per second while healthy, then during the
  outage;
* an open-loop client (``OpenLoop``, one asyncio thread) sending ``/plain``, ``/soft``
  and ``/write/<n>`` at fixed rates whatever happens, recording each request's start,
  end, status and body: latencies through the outage, the first success after Redis is
  back, and which writes were acknowledged.

The outage: ``kill`` (SIGKILL, restarted on the same port with its append-only file, so
what it acknowledged survives), ``stop`` (SIGSTOP then SIGCONT) or ``blackhole`` (the
proxy accepts and never answers, then heals). Everything started is stopped by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyramid_redisx.testing import RedisServer, free_port

from .blackhole import start_process as start_blackhole

ROOT = Path(__file__).resolve().parents[2]
WRK_CONNECTIONS = 1
# requests per second, each (``free`` too: its latency over time, for the plot)
RATES = {"plain": 50.0, "soft": 50.0, "write": 25.0, "free": 20.0}
COOLDOWN = 1.0
# worst_case_seconds of outage_app.SETTINGS (pool_timeout 2 + 0.5 + 0.5 + 3 pauses of
# at most 16 ms): the documented bound of one command.
WORST_CASE = 2 + 0.5 + 0.5 + 3 * 0.016


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


# ------------------------------------------------------------------ the app server
class AppServer:
    """The outage app in its own process group: waitress or gunicorn."""

    def __init__(
        self, kind: str, url: str, breaker: bool, log: Path, cpus: set[int] | None = None
    ) -> None:
        self.kind = kind
        self.port = free_port()
        self.log = log
        env = dict(os.environ, OUTAGE_URL=url, OUTAGE_BREAKER="5" if breaker else "0",
                   OUTAGE_COOLDOWN=str(COOLDOWN), PYTHONPATH=str(ROOT))  # fmt: skip
        if kind == "waitress":
            command = [sys.executable, "-m", "waitress", "--threads=8", f"--port={self.port}",
                       "--host=127.0.0.1", "--connection-limit=500",
                       "--call", "tests.reliability.outage_app:make_app"]  # fmt: skip
        else:
            command = [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class",
                       "gthread", "--threads", "4", "--bind", f"127.0.0.1:{self.port}",
                       "--timeout", "60", "--graceful-timeout", "2", "--log-level", "warning",
                       "--chdir", str(ROOT), "tests.reliability.outage_app:make_app()"]  # fmt: skip
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )  # fmt: skip

    def wait_serving(self, timeout: float = 30.0) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited:\n{self.output()}")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                connection.request("GET", "/plain")
                if connection.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                connection.close()
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not serve within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


# ------------------------------------------------------------------ open-loop client
@dataclass(frozen=True)
class Record:
    path: str
    started: float  # monotonic, this process
    ended: float
    status: int | None  # None: no response (client timeout, connection error)
    body: str

    @property
    def ms(self) -> float:
        return (self.ended - self.started) * 1000


class OpenLoop:
    """Sends each path at its rate from one asyncio thread, whatever the answers: a
    request that hangs holds one connection, never the schedule (at most ``cap`` in
    flight per path; beyond that a request is skipped and counted)."""

    def __init__(self, port: int, rates: dict[str, float], timeout: float, cap: int = 200):
        self.port, self.rates, self.timeout, self.cap = port, rates, timeout, cap
        self.records: list[Record] = []
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="open-loop", daemon=True)  # fmt: skip
        self._writes = 0

    def start(self) -> OpenLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> list[Record]:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the open-loop client did not stop"
        return sorted(self.records, key=lambda r: r.started)

    async def _main(self) -> None:
        tasks = [asyncio.create_task(self._path(path, rate)) for path, rate in self.rates.items()]
        await asyncio.gather(*tasks)

    async def _path(self, path: str, rate: float) -> None:
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        inflight: set[asyncio.Task[None]] = set()
        period = 1.0 / rate
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            n += 1
            await asyncio.sleep(max(0.0, start + n * period - time.monotonic()))
            if len(inflight) >= self.cap:
                self.skipped += 1
                continue
            target = path
            if path == "write":
                self._writes += 1
                target = f"write/{self._writes}"
            task = asyncio.create_task(self._one(f"/{target}", idle))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=self.timeout + 1)
        for _, writer in idle:
            writer.close()

    async def _one(self, path: str, idle: list[Any]) -> None:
        started = time.monotonic()
        status: int | None = None
        body = ""
        connection = idle.pop() if idle else None
        reused = connection is not None
        try:
            while True:
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", self.port)
                reader, writer = connection
                writer.write(f"GET {path} HTTP/1.1\r\nHost: outage\r\n\r\n".encode())
                try:
                    status, body, keep = await asyncio.wait_for(_response(reader), self.timeout)
                    break
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    # A keep-alive connection the server closed while idle (gunicorn's
                    # keepalive): nothing was read, so send again on a new one, as
                    # browsers do.
                    stale = reused and not getattr(exc, "partial", b"")
                    writer.close()
                    connection, reused = None, False
                    if not stale:
                        raise
            if keep:
                idle.append(connection)
            else:
                writer.close()
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
            body = f"client: {type(exc).__name__}"
            if connection is not None:
                connection[1].close()
        self.records.append(Record(path, started, time.monotonic(), status, body))


async def _response(reader: asyncio.StreamReader) -> tuple[int, str, bool]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length = int(re.search(r"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    body = (await reader.readexactly(length)).decode("utf-8", "replace")
    keep = not re.search(r"(?im)^connection:\s*close", head)
    return status, body, keep


# ------------------------------------------------------------------ wrk
def wrk(port: int, path: str, seconds: float) -> dict[str, Any]:
    """``wrk`` on ``path`` for ``seconds``: requests, req/s, latency percentiles."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
         "--latency", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    percentiles = {
        f"p{p}_ms": _ms(m.group(1), m.group(2))
        for p in (50, 99)
        if (m := re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M))
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    return {"rps": rps, "requests": requests, **percentiles,
            "non_2xx": int(errors.group(1)) if errors else 0,
            "timeouts": int(timeouts.group(1)) if timeouts else 0}  # fmt: skip


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# ------------------------------------------------------------------ one run
@dataclass
class OutageRun:
    outage: str
    server: str
    breaker: bool
    records: list[Record]
    marks: dict[str, float]
    free_healthy: dict[str, Any]
    free_outage: dict[str, Any]
    writes_on_server: dict[int, int]
    skipped: int
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def pinned() -> tuple[set[int], set[int]] | None:
    """(the load's CPUs, the app server's CPUs) for ``pin=True``: the last CPU this
    process may use serves the app, the others run the load (wrk, the open-loop client,
    Redis and this process), as if the load came from another machine. None with one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return set(cpus[:-1]), {cpus[-1]}


def run_outage(
    outage: str, server_kind: str, breaker: bool, workdir: Path, *,
    healthy: float = 3.0, down: float = 10.0, after: float = 3.0, pin: bool = False,
) -> OutageRun:  # fmt: skip
    """One outage of ``down`` seconds between ``healthy`` and ``after`` seconds of load.
    ``pin``: the app server on a CPU of its own (``pinned``), the load on the others."""
    split = pinned() if pin else None
    before = os.sched_getaffinity(0)
    if split:  # this thread's children and threads inherit it: Redis, wrk, the client
        os.sched_setaffinity(0, split[0])
    try:
        return _run_outage(outage, server_kind, breaker, workdir, healthy, down, after,
                           split[1] if split else None)  # fmt: skip
    finally:
        os.sched_setaffinity(0, before)


def _run_outage(
    outage: str, server_kind: str, breaker: bool, workdir: Path,
    healthy: float, down: float, after: float, server_cpus: set[int] | None,
) -> OutageRun:  # fmt: skip
    redis_server = RedisServer(None, None, "--appendonly", "yes", "--appendfsync", "always")
    redis_server.start()
    proxy = None
    app = None
    load = None
    try:
        url = redis_server.url
        if outage == "blackhole":
            proxy, port = start_blackhole(f"127.0.0.1:{redis_server.port}")
            url = f"redis://127.0.0.1:{port}/0"
        app = AppServer(server_kind, url, breaker, workdir / f"{server_kind}-{outage}.log",
                        server_cpus)  # fmt: skip
        app.wait_serving()
        with redis_server.client() as admin:
            admin.set("page", "cached")
        load = OpenLoop(app.port, RATES, timeout=WORST_CASE + 10).start()
        time.sleep(1.0)  # warm up: every thread and connection made
        marks = {"start": time.monotonic()}
        free_before = wrk(app.port, "/free", healthy)
        marks["outage"] = time.monotonic()
        if outage == "kill":
            redis_server.stop()
        elif outage == "stop":
            redis_server.pause()
        else:
            assert proxy is not None
            proxy.send_signal(signal.SIGUSR1)
        free_outage: dict[str, Any] = {}
        wrk_thread = threading.Thread(
            target=lambda: free_outage.update(wrk(app.port, "/free", down)), daemon=True
        )
        wrk_thread.start()
        time.sleep(down)
        marks["restoring"] = time.monotonic()
        if outage == "kill":
            redis_server.start()
        elif outage == "stop":
            redis_server.resume()
        else:
            proxy.send_signal(signal.SIGUSR2)  # type: ignore[union-attr]
        marks["back"] = time.monotonic()
        wrk_thread.join(30)
        time.sleep(min(after, 1.5))  # every process recovered (a probe per cooldown)
        marks["healthy_again"] = time.monotonic()
        free_after = wrk(app.port, "/free", healthy)
        time.sleep(max(0.0, after - 1.5 - healthy))
        marks["end"] = time.monotonic()
        # healthy: before and after the outage, as the machine's own load drifts
        free_healthy = {
            "rps": round((free_before["rps"] + free_after["rps"]) / 2, 2),
            "before": free_before, "after": free_after,
        }  # fmt: skip
        records = load.stop()
        load = None
        with redis_server.client() as admin:
            writes = {int(k): int(v) for k, v in admin.hgetall("writes").items()}
        return OutageRun(outage, server_kind, breaker, records, marks, free_healthy,
                         free_outage, writes, 0, app.output())  # fmt: skip
    finally:
        if load is not None:
            load.stop()
        if app is not None:
            app.stop()
        if proxy is not None:
            proxy.terminate()
            proxy.wait(5)
        redis_server.cleanup()


# ------------------------------------------------------------------ the figures
def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def figures(run: OutageRun) -> dict[str, Any]:
    """The issue's targets, measured: see docs/outages.rst."""
    marks = run.marks
    outage, back = marks["outage"], marks["back"]
    # "While the circuit is open": the requests the open circuit answered (RedisCircuitOpen
    # in the body), once no request from before it opened still holds a server thread
    # (those wait out their timeout: the detection, reported apart). Half-open probes are
    # reported apart too: each waits up to socket_timeout, by design.
    opened = min((r.ended for r in run.records if "RedisCircuitOpen" in r.body), default=None)
    redis_views = [r for r in run.records if not r.path.startswith("/free")]
    if opened is not None:
        drained = max(
            [r.ended for r in redis_views if outage <= r.started < opened], default=opened
        )
        in_window = [r for r in redis_views if drained <= r.started and r.ended <= back
                     and "RedisCircuitOpen" in r.body]  # fmt: skip
        probes = [r for r in redis_views if drained <= r.started and r.ended <= back
                  and "RedisCircuitOpen" not in r.body]  # fmt: skip
    else:  # no breaker: every request during the outage, after the first failure
        drained = min((r.started for r in redis_views if r.started >= outage and r.status != 200
                       and "hit" not in r.body), default=outage)  # fmt: skip
        in_window = [r for r in redis_views if drained <= r.started and r.ended <= back]
        probes = []

    def latencies(prefix: str) -> dict[str, Any]:
        return _spread([r.ms for r in in_window if r.path.startswith(prefix)])

    plain_after = [
        r for r in run.records if r.path == "/plain" and r.started >= back and r.status == 200
    ]
    first_success = (plain_after[0].ended - back) if plain_after else None
    acknowledged = {int(r.path.rsplit("/", 1)[1]) for r in run.records
                    if r.path.startswith("/write/") and r.status == 200}  # fmt: skip
    return {
        "outage": run.outage,
        "server": run.server,
        "breaker": run.breaker,
        "down_s": round(marks["restoring"] - outage, 2),
        "restore_s": round(back - marks["restoring"], 3),
        "opened_after_s": _round(opened - outage if opened is not None else None, 3),
        "detection_s": round(drained - outage, 3),
        "probes": {"n": len(probes), "max_ms": _round(max((r.ms for r in probes), default=None))},
        "free_rps_healthy": run.free_healthy["rps"],
        "free_rps_outage": run.free_outage.get("rps"),
        "free_ratio": round(run.free_outage.get("rps", 0) / run.free_healthy["rps"], 3),
        "free_p99_ms_outage": run.free_outage.get("p99_ms"),  # wrk's (closed loop)
        "free_open_loop_outage": _spread(
            [r.ms for r in run.records if r.path == "/free" and outage <= r.started < back]
        ),
        "free_timeouts_outage": run.free_outage.get("timeouts"),
        "plain_open": latencies("/plain"),
        "soft_open": latencies("/soft"),
        "soft_open_ok": all(r.status == 200 for r in in_window if r.path == "/soft"),
        "first_success_after_back_s": _round(first_success, 3),
        "max_request_s": round(max((r.ms for r in redis_views), default=0) / 1000, 3),
        "no_response": sum(r.status is None for r in run.records),
        "writes_acknowledged": len(acknowledged),
        "writes_applied_twice": sorted(k for k, v in run.writes_on_server.items() if v > 1),
        "writes_acknowledged_lost": sorted(acknowledged - set(run.writes_on_server)),
        "statuses": _statuses(run.records),
    }


def _spread(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_ms": _round(percentile(values, 50)),
            "p99_ms": _round(percentile(values, 99)), "max_ms": _round(max(values, default=None))}  # fmt: skip


def _statuses(records: list[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        key = f"{r.path.split('/')[1]} {r.status} {r.body if r.status != 200 else ''}".strip()
        counts[key] = counts.get(key, 0) + 1
    return counts


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def timeline(run: OutageRun, bucket: float = 0.25) -> dict[str, list[Any]]:
    """Per ``bucket`` seconds from the outage: the p99 latency of each Redis view (ms)."""
    outage = run.marks["outage"]
    series: dict[str, list[Any]] = {"t": []}
    start, end = run.marks["start"] - outage, run.marks["end"] - outage
    t = start
    while t < end:
        series["t"].append(round(t, 3))
        for prefix in ("/plain", "/soft", "/write", "/free"):
            values = [r.ms for r in run.records
                      if r.path.startswith(prefix) and t <= r.started - outage < t + bucket]  # fmt: skip
            series.setdefault(prefix, []).append(_round(percentile(values, 99)))
        t += bucket
    return series
