"""Benchmark: pyramid_redisx under a real waitress server and a concurrent HTTP client.

    python bench/bench_server.py [--seconds S] [--rounds N] [--pressure-requests N]
                                 [--json PATH]

Starts a throwaway Redis server (``pyramid_redisx.testing.RedisServer``) and one waitress
process per app (``bench/server_app.py``; the load generator runs in this process, the
apps in others, so they do not share a GIL). Every app is checked first (200, expected
body). Then, in ``--rounds`` rounds, each in a new random order (the apps of each unit
in ``UNITS`` back to back):

* throughput and latency (waitress 8 threads): 8 client threads, each with one HTTP/1.1
  keep-alive connection, send ``GET /`` as fast as they can for 0.5 s of warm-up and
  ``--seconds`` timed; apps ``bare`` (module-global client, the baseline),
  ``bare_extras`` (the same with one reified request property and one ``NewResponse``
  subscriber: Pyramid's fixed cost of the include's hooks, as in bench_request.py), ``redisx``
  (``request.redis``), ``websauna`` (a client built per call) and ``no_redis`` (the
  HTTP/Pyramid floor). Reported: req/s (median over rounds), p50/p99 latency (all
  samples), errors, req/s relative to ``bare``, CPU of client, app and Redis processes,
  and the target figure: redisx / bare_extras, the median of the per-round ratios
  (``bare``, ``bare_extras`` and ``redisx`` run back to back);
* pool pressure (waitress 32 threads): 32 client threads × ``--pressure-requests``
  requests to a view holding its connection for ``DEBUG SLEEP 0.002``, through
  pyramid_redisx with ``redis.max_connections = 8``, blocking (the default) and not
  (``redis.blocking = false``: "Too many connections", answered as a 503).

Prints a table and writes JSON (default ``bench/results_server.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from importlib import metadata
from pathlib import Path
from typing import Any

import redis
import server_app  # bench/server_app.py: this script's directory is on sys.path

from pyramid_redisx.testing import RedisServer, free_port, server_binary

HERE = Path(__file__).resolve().parent
TOO_MANY = b"Too many connections"
WARMUP_SECONDS = 0.5
PRESSURE_WARMUP_REQUESTS = 5  # per client thread, untimed
READY_TIMEOUT = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class AppSpec:
    name: str
    label: str
    expected: bytes
    server_threads: int
    client_threads: int
    pressure: bool = False


APPS = [
    AppSpec("bare", "module-global client (baseline)", server_app.VALUE, 8, 8),
    AppSpec("bare_extras", "bare + a request property + a subscriber", server_app.VALUE, 8, 8),
    AppSpec("redisx", "request.redis (pyramid_redisx)", server_app.VALUE, 8, 8),
    AppSpec("redisx_cached", "request.redis, client_cache (a hot key)", server_app.VALUE, 8, 8),
    AppSpec("websauna", "redis.Redis(pool) built per call", server_app.VALUE, 8, 8),
    AppSpec("no_redis", "no Redis, plain Pyramid", server_app.HELLO, 8, 8),
    AppSpec("redisx_per_command", "request.redis, request_connection off", server_app.VALUE, 8, 8),
    # Contention: 32 server and client threads on 8 connections, one GET per request.
    AppSpec("contention_bare", "bare + extras, max 8 (baseline)", server_app.VALUE, 32, 32),
    AppSpec("contention_redisx", "request.redis, max 8", server_app.VALUE, 32, 32),
    AppSpec("pressure_blocking", "max 8, blocking pool (default)", server_app.SLEPT, 32, 32, True),
    AppSpec("pressure_nonblocking", "max 8, redis.blocking = false", server_app.SLEPT, 32, 32, True),
]  # fmt: skip


# ----------------------------------------------------------------------------- servers
class AppServer:
    """One waitress process serving one app; started and stopped by this process only."""

    def __init__(self, spec: AppSpec, redis_url: str, log_dir: str) -> None:
        self.spec = spec
        self.port = free_port()
        self.log_path = Path(log_dir) / f"{spec.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.redis_url = redis_url

    def start(self) -> None:
        env = {
            **os.environ,
            "BENCH_VARIANT": self.spec.name,
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_PORT": str(self.port),
            "BENCH_THREADS": str(self.spec.server_threads),
        }
        with open(self.log_path, "ab") as log:  # a file, not a pipe: never fills up
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "server_app.py")],
                env=env, cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise SystemExit(f"{self.spec.name}: server exited\n{self.log_tail()}")
            try:
                get_once(self.port)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.spec.name}: no answer\n{self.log_tail()}") from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process, from /proc."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def count_in_log(self, text: str) -> int:
        return self.log_tail(10**9).count(text)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def get_once(port: int) -> tuple[int, bytes]:
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def sanity_check(servers: list[AppServer]) -> None:
    """Every app answers 200 with the expected body before anything is timed."""
    for server in servers:
        status, body = get_once(server.port)
        if status != 200 or body != server.spec.expected:
            raise SystemExit(
                f"{server.spec.name}: {status} {body[:200]!r}, expected 200 "
                f"{server.spec.expected!r}\n{server.log_tail()}"
            )


# ----------------------------------------------------------------------------- client
@dataclass
class Plan:
    """Duration mode (``seconds``) or fixed count per thread (``count``)."""

    threads: int
    seconds: float | None = None
    count: int | None = None


@dataclass
class ThreadResult:
    latencies: list[float] = field(default_factory=list)  # timed requests, seconds
    ok_latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # timed requests
    warmup_outcomes: Counter[str] = field(default_factory=Counter)


def request(conn: HTTPConnection, expected: bytes) -> str:
    """One GET / on a keep-alive connection: ``ok``, ``too_many`` or ``other``."""
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
    except (OSError, HTTPException):  # refused, reset, timed out, malformed response
        conn.close()  # reopened by the next request
        return "other"
    if response.status == 200 and body == expected:
        return "ok"
    if response.status == 503 and TOO_MANY in body:
        return "too_many"
    return "other"


def worker(
    port: int, expected: bytes, plan: Plan, barrier: threading.Barrier, out: ThreadResult
) -> None:
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        barrier.wait()
        warm_until = time.perf_counter() + WARMUP_SECONDS
        warm_count = PRESSURE_WARMUP_REQUESTS if plan.count is not None else 0
        while warm_count > 0 or (plan.count is None and time.perf_counter() < warm_until):
            out.warmup_outcomes[request(conn, expected)] += 1
            warm_count -= 1
        barrier.wait()  # timed part starts together (the main thread takes its snapshot)
        timed(conn, expected, plan, out)
    finally:
        conn.close()


def timed(conn: HTTPConnection, expected: bytes, plan: Plan, out: ThreadResult) -> None:
    clock = time.perf_counter
    end = clock() + (plan.seconds or 0.0)
    left = plan.count
    while (clock() < end) if left is None else (left > 0):
        started = clock()
        outcome = request(conn, expected)
        latency = clock() - started
        out.latencies.append(latency)
        out.outcomes[outcome] += 1
        if outcome == "ok":
            out.ok_latencies.append(latency)
        if left is not None:
            left -= 1


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (all processes, kernel included), from /proc."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def cpu_snapshot(server: AppServer, client: redis.Redis) -> dict[str, float]:
    return {
        "client": time.process_time(),
        "app": server.cpu_seconds(),
        "redis": redis_cpu_seconds(client),
        "machine": machine_cpu_seconds(),
    }


def run_load(server: AppServer, plan: Plan, redis_client: redis.Redis) -> dict[str, Any]:
    """Load one app as ``plan`` says; the phase's samples, counts, wall time and CPU."""
    results = [ThreadResult() for _ in range(plan.threads)]
    barrier = threading.Barrier(plan.threads + 1)
    threads = [
        threading.Thread(target=worker, args=(server.port, server.spec.expected, plan, barrier, r))
        for r in results
    ]
    for thread in threads:
        thread.start()
    barrier.wait()  # warm-up starts
    barrier.wait()  # timed part starts
    started, before = time.perf_counter(), cpu_snapshot(server, redis_client)
    for thread in threads:
        thread.join()
    wall, after = time.perf_counter() - started, cpu_snapshot(server, redis_client)
    cpu = {key: (after[key] - before[key]) / wall for key in before}  # cores busy
    cpu["other"] = max(0.0, cpu["machine"] - cpu["client"] - cpu["app"] - cpu["redis"])
    return {
        "wall": wall,
        "cpu": cpu,
        "latencies": [x for r in results for x in r.latencies],
        "ok_latencies": [x for r in results for x in r.ok_latencies],
        "outcomes": sum((r.outcomes for r in results), Counter()),
        "warmup_outcomes": sum((r.warmup_outcomes for r in results), Counter()),
    }


# ----------------------------------------------------------------------------- figures
def percentile_ms(samples: list[float], p: int) -> float | None:
    if len(samples) < 2:
        return samples[0] * 1000 if samples else None
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1] * 1000


def cpu_medians(phases: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(p["cpu"][key] for p in phases) for key in phases[0]["cpu"]}


def throughput_summary(phases: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [x for p in phases for x in p["latencies"]]
    outcomes = sum((p["outcomes"] + p["warmup_outcomes"] for p in phases), Counter())
    rps = [sum(p["outcomes"].values()) / p["wall"] for p in phases]
    app_us = [p["cpu"]["app"] / r * 1e6 for p, r in zip(phases, rps, strict=True)]
    return {
        "rps_rounds": rps,
        "rps_median": statistics.median(rps),
        "p50_ms": percentile_ms(samples, 50),
        "p99_ms": percentile_ms(samples, 99),
        "mean_ms": statistics.fmean(samples) * 1000,
        "n": len(samples),
        "errors": sum(outcomes.values()) - outcomes["ok"],  # warm-up included
        "outcomes": dict(outcomes),
        "cpu_cores_busy": cpu_medians(phases),
        "app_cpu_us_per_request": statistics.median(app_us),
    }


def pressure_summary(phases: list[dict[str, Any]], server: AppServer) -> dict[str, Any]:
    outcomes = sum((p["outcomes"] for p in phases), Counter())
    total = sum(outcomes.values())
    ok_latencies = [x for p in phases for x in p["ok_latencies"]]
    latencies = [x for p in phases for x in p["latencies"]]
    return {
        "requests": total,
        "ok": outcomes["ok"],
        "too_many_connections": outcomes["too_many"],
        "other_errors": outcomes["other"],
        "failure_rate": (total - outcomes["ok"]) / total,
        "ok_per_s_rounds": [p["outcomes"]["ok"] / p["wall"] for p in phases],
        "ok_per_s_median": statistics.median(p["outcomes"]["ok"] / p["wall"] for p in phases),
        "responses_per_s_median": statistics.median(
            sum(p["outcomes"].values()) / p["wall"] for p in phases
        ),
        "ok_p50_ms": percentile_ms(ok_latencies, 50),
        "ok_p99_ms": percentile_ms(ok_latencies, 99),
        "all_p50_ms": percentile_ms(latencies, 50),
        "all_p99_ms": percentile_ms(latencies, 99),
        "warmup_outcomes": dict(sum((p["warmup_outcomes"] for p in phases), Counter())),
        "cpu_cores_busy": cpu_medians(phases),
        "server_log_pool_nearly_full_warnings": server.count_in_log("pool nearly full"),
        "server_log_waited_warnings": server.count_in_log("for a free connection"),
    }


def add_ratios(summaries: dict[str, dict[str, Any]]) -> None:
    """Each variant's req/s over its baseline's (bare; contention_bare for the
    contention apps): of the medians, and per round (paired)."""
    for name, summary in summaries.items():
        base = summaries["contention_bare" if name.startswith("contention") else "bare"]
        summary["ratio_to_bare"] = summary["rps_median"] / base["rps_median"]
        paired = [x / b for x, b in zip(summary["rps_rounds"], base["rps_rounds"], strict=True)]
        summary["ratio_to_bare_rounds"] = paired
        # per-round ratios of apps run back to back (contention: the target figure)
        summary["ratio_to_bare_median_of_rounds"] = statistics.median(paired)
    # The baseline under waitress: the bare client in the same app shape as the
    # add-on's (a request property and a NewResponse subscriber), run in the same unit.
    shape = summaries.get("bare_extras")
    for name in ("bare", "redisx", "redisx_cached", "redisx_per_command", "websauna", "no_redis"):
        summary = summaries.get(name)
        if shape is None or summary is None:
            continue
        summary["ratio_to_same_shape"] = summary["rps_median"] / shape["rps_median"]
        paired = [x / b for x, b in zip(summary["rps_rounds"], shape["rps_rounds"], strict=True)]
        summary["ratio_to_same_shape_rounds"] = paired
        summary["ratio_to_same_shape_median_of_rounds"] = statistics.median(paired)


# ----------------------------------------------------------------------------- report
def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(HERE.parent), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine(client: redis.Redis) -> dict[str, Any]:
    info = client.info("server")
    status = git("status", "--porcelain", "pyramid_redisx")  # None: not a git checkout
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "hiredis": version("hiredis"),
        "hiredis_in_use": bool(redis.utils.HIREDIS_AVAILABLE),
        "pyramid": version("pyramid"),
        "waitress": version("waitress"),
        "pyramid_redisx": version("pyramid_redisx"),
        "pyramid_redisx_commit": git("rev-parse", "--short", "HEAD"),
        "pyramid_redisx_tree_modified": None if status is None else bool(status),
        "server": info.get("server_name") or "redis",
        "server_version": info.get("valkey_version") or info.get("redis_version"),
        "server_binary": server_binary(),
        "transport": "TCP loopback 127.0.0.1 (HTTP and Redis)",
        "loadavg_start": os.getloadavg(),
    }


def method(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "rounds": args.rounds,
        "order": "all apps in a new random order each round, those of each unit in UNITS "
        "back to back (which first at random); one server process per app, started once "
        "and kept for the whole run",
        "units": [list(unit) for unit in UNITS],
        "processes": "load generator (this script) | one waitress process per app | Redis",
        "throughput": f"waitress 8 threads; 8 client threads, one HTTP/1.1 keep-alive "
        f"http.client connection each, GET / back to back: {WARMUP_SECONDS} s warm-up, "
        f"{args.seconds} s timed; req/s = timed responses / timed wall time, median over "
        "rounds; p50/p99 over all timed samples of all rounds; errors = any non-200, wrong "
        "body or exception, warm-up included",
        "pressure": f"waitress 32 threads; 32 client threads x {args.pressure_requests} "
        f"timed requests (after {PRESSURE_WARMUP_REQUESTS} untimed each) per round; view "
        f"runs DEBUG SLEEP {server_app.SLEEP_SECONDS} through request.redis, "
        f"redis.max_connections = {server_app.PRESSURE_MAX_CONNECTIONS}; a redis error "
        "becomes a 503 naming the exception; p50/p99 of ok requests",
        "cpu": "cores busy during the timed part (CPU seconds / wall seconds), median over "
        "rounds: client = this process, app = the waitress process, redis = INFO cpu, "
        "machine = /proc/stat busy time of all CPUs, other = machine - the three; "
        "app_cpu_us_per_request = the app process's CPU per timed response, median of rounds",
        "views": "bare, bare_extras, redisx, websauna: one GET of a 32-byte key; no_redis: Response(b'hello')",
    }


def print_throughput(summaries: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nthroughput: waitress 8 threads, 8 keep-alive client threads, {args.seconds:g} s "
        f"timed × {args.rounds} rounds; req/s median of rounds, latency over all samples"
    )
    print(
        f"{'variant':<14}{'what':<42}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
        f"{'/bare':>7}{'  rounds: med min..max':<23}{'cpu: client':>11}{'app':>6}{'redis':>6}{'other':>6}{'app µs/req':>11}"
    )
    for spec in APPS:
        if spec.name not in summaries:
            continue
        s = summaries[spec.name]
        rounds = f"{s['ratio_to_bare_median_of_rounds']:.3f} " + "..".join(
            f"{x:.2f}" for x in (min(s["ratio_to_bare_rounds"]), max(s["ratio_to_bare_rounds"]))
        )
        cpu = s["cpu_cores_busy"]
        print(
            f"{spec.name:<14}{spec.label:<42}{s['rps_median']:>8.0f}{s['p50_ms']:>8.2f}"
            f"{s['p99_ms']:>8.2f}{s['errors']:>7}{s['ratio_to_bare']:>7.3f}  {rounds:<23}"
            f"{cpu['client']:>11.0%}{cpu['app']:>6.0%}{cpu['redis']:>6.0%}"
            f"{cpu['other']:>6.0%}{s['app_cpu_us_per_request']:>11.0f}"
        )
    print(
        "(/bare: ratio of the req/s medians; rounds: the per-round ratios to the baseline run "
        "just before or after,\n their median, least and most)"
    )
    redisx = summaries.get("redisx", {})
    if "ratio_to_same_shape" in redisx:
        per_round = redisx["ratio_to_same_shape_rounds"]
        print(
            "redisx / bare_extras (the bare client in the same app shape, the issue's "
            f"baseline; the target figure): {redisx['ratio_to_same_shape_median_of_rounds']:.3f} "
            f"median of rounds ({min(per_round):.2f}..{max(per_round):.2f}), "
            f"{redisx['ratio_to_same_shape']:.3f} of the medians"
        )
    print(
        "(cpu: cores busy in the timed part, median of rounds; other = the whole machine "
        "less these three\n processes: kernel softirq, and anything else running; "
        "app µs/req: the app process's CPU per request)"
    )


def print_pressure(summaries: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\npool pressure: waitress 32 threads, 32 client threads × {args.pressure_requests} "
        f"requests × {args.rounds} rounds; view: DEBUG SLEEP {server_app.SLEEP_SECONDS} "
        f"through request.redis, max_connections {server_app.PRESSURE_MAX_CONNECTIONS}"
    )
    print(
        f"{'app':<22}{'what':<32}{'ok/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'ok':>7}"
        f"{'503 too many':>13}{'other':>7}{'failed':>8}"
    )
    for spec in APPS:
        if spec.name not in summaries:
            continue
        s = summaries[spec.name]
        print(
            f"{spec.name:<22}{spec.label:<32}{s['ok_per_s_median']:>7.0f}"
            f"{fmt_ms(s['ok_p50_ms']):>8}{fmt_ms(s['ok_p99_ms']):>8}{s['ok']:>7}"
            f"{s['too_many_connections']:>13}{s['other_errors']:>7}{s['failure_rate']:>8.1%}"
        )
    print("(p50/p99: requests answered 200; failed = 503 too many + other, of all timed)")


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per phase")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pressure-requests", type=int, default=100, help="per client thread")
    parser.add_argument("--json", type=Path, default=HERE / "results_server.json")
    parser.add_argument(
        "--apps", default="", help="comma-separated app names to run (default: all)"
    )
    return parser.parse_args(argv)


def plan_for(spec: AppSpec, args: argparse.Namespace) -> Plan:
    if spec.pressure:
        return Plan(spec.client_threads, count=args.pressure_requests)
    return Plan(spec.client_threads, seconds=args.seconds)


# Apps whose ratio is a target run back to back in each round (which one first is
# random): the machine's load moves little between the two, so the per-round ratio
# holds less of it (bench_request.py pairs its variants the same way).
UNITS = (
    ("bare", "bare_extras", "redisx", "redisx_cached"),
    ("contention_bare", "contention_redisx"),
)


def run_rounds(
    servers: list[AppServer], args: argparse.Namespace, redis_client: redis.Redis
) -> tuple[dict[str, list[dict[str, Any]]], list[list[str]]]:
    phases: dict[str, list[dict[str, Any]]] = {s.spec.name: [] for s in servers}
    by_name = {s.spec.name: s for s in servers}
    paired = {name for unit in UNITS for name in unit}
    units = [[by_name[name] for name in unit if name in by_name] for unit in UNITS]
    units += [[s] for s in servers if s.spec.name not in paired]
    orders = []
    for number in range(1, args.rounds + 1):
        random.shuffle(units)
        order = []
        for unit in units:
            order += random.sample(unit, len(unit))
        orders.append([s.spec.name for s in order])
        for server in order:
            phases[server.spec.name].append(run_load(server, plan_for(server.spec, args),
                                                     redis_client))  # fmt: skip
        print(f"round {number}/{args.rounds}: {', '.join(orders[-1])}", flush=True)
    return phases, orders


def start_servers(url: str, log_dir: str, names: str = "") -> list[AppServer]:
    chosen = set(names.split(",")) if names else None
    servers = [AppServer(spec, url, log_dir) for spec in APPS
               if chosen is None or spec.name in chosen]  # fmt: skip
    for server in servers:
        server.start()  # all at once: imports overlap
    for server in servers:
        server.wait_ready()
    return servers


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    redis_server = RedisServer().start()
    servers: list[AppServer] = []
    log_dir = tempfile.mkdtemp(prefix="bench-server-")
    try:
        redis_client = redis_server.client()
        redis_client.set(server_app.KEY, server_app.VALUE)
        about = machine(redis_client)
        servers = start_servers(redis_server.url, log_dir, args.apps)
        sanity_check(servers)
        phases, orders = run_rounds(servers, args, redis_client)
        about["loadavg_end"] = os.getloadavg()
        throughput = {s.spec.name: throughput_summary(phases[s.spec.name])
                      for s in servers if not s.spec.pressure}  # fmt: skip
        add_ratios(throughput)
        pressure = {s.spec.name: pressure_summary(phases[s.spec.name], s)
                    for s in servers if s.spec.pressure}  # fmt: skip
    finally:
        for server in servers:
            server.stop()
        redis_server.cleanup()
        shutil.rmtree(log_dir, ignore_errors=True)
    seconds = time.perf_counter() - began
    print_header(about, seconds)
    print_throughput(throughput, args)
    print_pressure(pressure, args)
    result = {"machine": about, "method": {**method(args), "orders": orders, "seconds": seconds},
              "throughput": throughput, "pressure": pressure}  # fmt: skip
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")


def print_header(about: dict[str, Any], seconds: float) -> None:
    print(
        f"\n{about['nproc']} CPUs ({about['cpu_model']}), Python {about['python']}, "
        f"redis-py {about['redis_py']} (hiredis {about['hiredis']}), Pyramid "
        f"{about['pyramid']}, waitress {about['waitress']}, {about['server']} "
        f"{about['server_version']} on loopback; {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
