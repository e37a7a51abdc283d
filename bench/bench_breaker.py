"""Benchmark: what the circuit breaker costs a healthy request, per command.

    python bench/bench_breaker.py [--rounds N] [--block N] [--json PATH]

"Without the breaker" is the code before it (issue 27): the retry loop and the checkout
of pools.py at a8d4e07, copied below (``PreBreakerRetry``, ``PreBreakerPool``) and put
in place of ours on one app's pool. Two measurements, each interleaved (the variants
take turns in blocks, in a new random order each round; medians):

* the gates alone: ``call_with_retry`` of a no-op (the gate every command, pipeline and
  connect passes), ours against the loop before it; the two lines the checkout gained,
  alone, against none; and a whole checkout + give-back of a connected connection, ours
  against the one before it (a system call each: its noise hides the two lines);
* whole requests, in process, on one Redis server: one GET, ten GETs, a pipeline of ten
  GETs, and ten GETs on the process-wide client, the app with the breaker (the default)
  against the same app with the pre-breaker code: the same difference, within the noise
  of a round trip.

Times are the thread's CPU time (``time.thread_time_ns``): the machine runs other jobs,
and wall-clock time there measures the scheduler more than the code (a no-op call read
170–420 ns on one machine within a minute); CPU time leaves out the time the thread was
not running, and the round trip to Redis, neither of which the breaker changes.

Target (issue 27): <= 1 us per command.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from io import BytesIO
from pathlib import Path
from queue import Empty
from time import thread_time_ns
from typing import Any

from pyramid.config import Configurator
from pyramid.response import Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyramid_redisx import get_redis
from pyramid_redisx.breaker import Breaker
from pyramid_redisx.errors import PoolExhausted
from pyramid_redisx.pools import WatchedBlockingPool
from pyramid_redisx.request import client_set
from pyramid_redisx.retries import WriteSafeRetry, retryable
from pyramid_redisx.testing import RedisServer

HERE = Path(__file__).resolve().parent
KEY = "bench:key"


def one(request: Any) -> Response:
    return Response(body=request.redis.get(KEY))


def ten(request: Any) -> Response:
    redis = request.redis
    for _ in range(9):
        redis.get(KEY)
    return Response(body=redis.get(KEY))


def pipeline(request: Any) -> Response:
    pipe = request.redis.pipeline(transaction=False)
    for _ in range(10):
        pipe.get(KEY)
    return Response(body=pipe.execute()[-1])


# ----------------------------------------------------------- the code before the breaker
class PreBreakerRetry(WriteSafeRetry):
    """``WriteSafeRetry.call_with_retry`` as in pools.py at a8d4e07 (before issue 27)."""

    def call_with_retry(
        self, do: Any, fail: Any, is_retryable: Any = None, with_failure_count: bool = False
    ) -> Any:
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if not retryable(error) or (is_retryable is not None and not is_retryable(error)):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                if self._retries >= 0 and failures > self._retries:
                    raise error
                if failures == 1:
                    self._backoff.reset()
                pause = self._backoff.compute(failures)
                if pause > 0:
                    time.sleep(pause)


class PreBreakerPool(WatchedBlockingPool):
    """``WatchedBlockingPool.get_connection`` as at a8d4e07: no gate at checkout."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if self.observed:
                return super().get_connection(*args, **kwargs)
            if self.pid != os.getpid():
                self._checkpid()
            try:
                connection = self.pool.get(True, self.timeout)
            except Empty:
                raise RedisConnectionError("No connection available.") from None
        except RedisConnectionError as exc:
            if str(exc) != "No connection available.":
                raise
            raise PoolExhausted("no free connection") from exc
        if connection is None:
            connection = self.make_connection()
        try:
            if not connection.is_connected:
                connection.connect()
            else:
                try:
                    if connection.can_read():
                        raise RedisConnectionError("Connection has data")
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    connection.disconnect()
                    connection.connect()
                    if connection.can_read():
                        raise RedisConnectionError("Connection not ready") from None
        except BaseException:
            self.release(connection)
            raise
        return connection


def without_breaker(app: Any) -> None:
    """Put the pre-breaker code in place on ``app``'s pool, before it made a connection."""
    pool = get_redis(app.registry).connection_pool
    ours = pool.connection_kwargs["retry"]
    pool.connection_kwargs["retry"] = PreBreakerRetry(
        backoff=ours._backoff, retries=ours._retries, supported_errors=ours._supported_errors
    )
    pool.__class__ = PreBreakerPool


def make_app(url: str, breaker: bool) -> Any:
    config = Configurator(settings={
        "redis.url": url, "redis.stats": "false",
    })  # fmt: skip
    config.include("pyramid_redisx")
    for name, view in (("one", one), ("ten", ten), ("pipeline", pipeline)):
        config.add_route(name, f"/{name}")
        config.add_view(view, route_name=name)
    app = config.make_wsgi_app()
    if not breaker:
        without_breaker(app)
    return app


def environ(path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "bench", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http", "wsgi.input": BytesIO(), "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }  # fmt: skip


def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    assert status.startswith("200"), status


def workload(app: Any, kind: str) -> Any:
    """A callable running one unit of ``kind`` on ``app`` (a request, or ten GETs)."""
    if kind == "client_ten":
        client = get_redis(app.registry)

        def call() -> None:
            for _ in range(10):
                client.get(KEY)

        return call
    base = environ(f"/{kind}")

    def request() -> None:
        for _ in app(dict(base, **{"wsgi.input": BytesIO()}), start_response):
            pass

    return request


COMMANDS = {"one": 1, "ten": 10, "pipeline": 1, "client_ten": 10}  # gates per unit


def gates(server: RedisServer, rounds: int, calls: int = 20_000) -> dict[str, Any]:
    """ns per gate: ``call_with_retry`` of a no-op, and a checkout + give-back."""
    on_retry = WriteSafeRetry(**_retry_arguments())
    on_retry.breaker = Breaker(5, 1.0, "bench")
    pre_retry = PreBreakerRetry(**_retry_arguments())
    pools = {}
    for name, kind in (("on", WatchedBlockingPool), ("pre", PreBreakerPool)):
        pool = kind(warn_ratio=0.8, host="127.0.0.1", port=server.port, max_connections=4)
        pool.release(pool.get_connection())  # one connected connection, reused
        pools[name] = pool
    assert pools["on"].breaker is not None

    def noop() -> None:
        return None

    def fail(error: Any) -> None:
        return None

    def retry_loop(retry: Any) -> Any:
        def run() -> None:
            call = retry.call_with_retry
            for _ in range(calls):
                call(noop, fail)

        return run

    def checkout_loop(pool: Any) -> Any:
        def run() -> None:
            get, give = pool.get_connection, pool.release
            for _ in range(calls // 10):
                give(get())

        return run

    def gate_loop(statement: Any) -> Any:
        def run() -> None:
            pool = pools["on"]
            for _ in range(calls):
                statement(pool)

        return run

    def checkout_gate(self: Any) -> None:  # the two lines the checkout gained, alone
        if self.breaker.dirty:
            self.breaker.check()

    def no_gate(self: Any) -> None:
        return None

    units = {("retry", "on"): retry_loop(on_retry), ("retry", "pre"): retry_loop(pre_retry),
             ("checkout", "on"): checkout_loop(pools["on"]),
             ("checkout", "pre"): checkout_loop(pools["pre"]),
             ("checkout_lines", "on"): gate_loop(checkout_gate),
             ("checkout_lines", "pre"): gate_loop(no_gate)}  # fmt: skip
    per: dict[tuple[str, str], list[float]] = {unit: [] for unit in units}
    order = list(units)
    gc.disable()
    for _ in range(rounds):
        random.shuffle(order)
        for unit in order:
            run = units[unit]
            run()  # warm
            started = thread_time_ns()
            run()
            n = calls // 10 if unit[0] == "checkout" else calls
            per[unit].append((thread_time_ns() - started) / n)
    gc.enable()
    for pool in pools.values():
        pool.disconnect()
    result = {}
    for gate in ("retry", "checkout_lines", "checkout"):
        on, pre = statistics.median(per[(gate, "on")]), statistics.median(per[(gate, "pre")])
        diffs = [a - b for a, b in zip(per[(gate, "on")], per[(gate, "pre")], strict=True)]
        result[gate] = {"on_ns": round(on, 1), "pre_ns": round(pre, 1),
                        "cost_ns": round(on - pre, 1),
                        "cost_ns_paired_median": round(statistics.median(diffs), 1)}  # fmt: skip
        print(f"gate {gate:<9} ours {on:8.1f} ns  before {pre:8.1f} ns  cost {on - pre:+.1f} ns "
              f"(paired median {statistics.median(diffs):+.1f} ns)")  # fmt: skip
    return result


def open_circuit(server: RedisServer, rounds: int) -> dict[str, Any]:
    """CPU per request of a one-GET view answered by the open circuit (an exception view
    turns ``RedisCircuitOpen`` into a 503), beside the same view answered by Redis: what
    a request costs the server while Redis is down, without the machine's other jobs."""

    def unavailable(exc: BaseException, request: Any) -> Response:
        return Response(type(exc).__name__, status=503)

    def build(url: str) -> Any:
        config = Configurator(settings={"redis.url": url, "redis.stats": "false",
                                        "redis.startup_check": "false",
                                        "redis.breaker_cooldown": "1 minute"})  # fmt: skip
        config.include("pyramid_redisx")
        config.add_route("one", "/one")
        config.add_view(one, route_name="one")
        config.add_exception_view(unavailable, context=RedisError)
        return config.make_wsgi_app()

    dead = RedisServer().start()
    dead.stop()
    apps = {"open": build(dead.url), "healthy": build(server.url)}
    statuses: list[str] = []

    def respond(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def run(app: Any) -> None:
        for _ in app(environ("/one"), respond):
            pass

    for _ in range(10):  # open the circuit (5 failures in a row to reach the dead port)
        run(apps["open"])
    assert statuses[-1].startswith("503"), statuses[-1]
    per: dict[str, list[int]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name in random.sample(list(apps), len(apps)):
            for _ in range(25):
                started = thread_time_ns()
                run(apps[name])
                per[name].append(thread_time_ns() - started)
    for app in apps.values():
        client_set(app.registry).close()
    dead.cleanup()
    result = {name: round(statistics.median(times) / 1000, 1) for name, times in per.items()}
    print(f"a one-GET request answered by the open circuit: {result['open']} us CPU "
          f"(answered by Redis: {result['healthy']} us)")  # fmt: skip
    return result


def _retry_arguments() -> dict[str, Any]:
    from redis.backoff import ExponentialWithJitterBackoff

    return {"backoff": ExponentialWithJitterBackoff(cap=0.25, base=0.008), "retries": 3,
            "supported_errors": (RedisConnectionError,)}  # fmt: skip


def table(results: dict[str, Any]) -> str:
    """The figures as an RST table (docs/outages.rst includes it)."""
    names = {"retry": "the gate of every command, pipeline and connect (a no-op call)",
             "checkout_lines": "the gate of every checkout (its two lines, alone)",
             "checkout": "a whole checkout + give-back of a connected connection",
             "one": "request, one GET", "ten": "request, ten GETs",
             "pipeline": "request, a pipeline of ten GETs",
             "client_ten": "ten GETs on the process-wide client"}  # fmt: skip
    lines = [".. Generated by bench/bench_breaker.py (bench/results_breaker.json).", "",
             ".. list-table::", "   :header-rows: 1", "",
             "   * - what", "     - with the breaker", "     - the code before it",
             "     - cost per command"]  # fmt: skip
    for gate, figures in results["gates"].items():
        lines += [f"   * - {names[gate]}", f"     - {figures['on_ns']} ns",
                  f"     - {figures['pre_ns']} ns",
                  f"     - {figures['cost_ns_paired_median']:+} ns (paired median)"]  # fmt: skip
    for kind, figures in results["kinds"].items():
        lines += [f"   * - {names[kind]}", f"     - {figures['on_us']} µs",
                  f"     - {figures['off_us']} µs",
                  f"     - {figures['per_gate_us_paired_median']:+} µs (paired median; "
                  f"IQR {figures['per_gate_us_paired_iqr'][0]:+} .. "
                  f"{figures['per_gate_us_paired_iqr'][1]:+})"]  # fmt: skip
    lines += ["   * - a one-GET request answered by the open circuit (a 503 from an exception view)",
              f"     - {results['open']['open']} µs", "     - ",
              f"     - (answered by Redis: {results['open']['healthy']} µs)"]  # fmt: skip
    lines += ["", f"{results['rounds']} rounds of blocks of {results['block']} requests; the "
              "request figures vary by tens of µs from round to round (a round trip to Redis), "
              "so the gates' figures are the measure of the cost.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--block", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=str(HERE / "results_breaker.json"))
    parser.add_argument("--table", default=str(HERE / "breaker_table.rst"))
    args = parser.parse_args(argv)
    server = RedisServer().start()
    apps = {}
    try:
        with server.client() as admin:
            admin.set(KEY, b"v" * 32)
        results: dict[str, Any] = {"rounds": args.rounds, "block": args.block}
        results["gates"] = gates(server, max(10, args.rounds // 5))
        results["open"] = open_circuit(server, max(10, args.rounds // 5))
        apps = {on: make_app(server.url, on) for on in (True, False)}
        samples: dict[tuple[str, bool], list[int]] = {}
        rounds: dict[tuple[str, bool], list[float]] = {}
        units = [(kind, on) for kind in COMMANDS for on in (True, False)]
        calls = {unit: workload(apps[unit[1]], unit[0]) for unit in units}
        gc.disable()
        for _ in range(args.rounds):
            random.shuffle(units)
            for unit in units:
                call = calls[unit]
                for _ in range(args.warmup):
                    call()
                times = []
                for _ in range(args.block):
                    started = thread_time_ns()
                    call()
                    times.append(thread_time_ns() - started)
                samples.setdefault(unit, []).extend(times)
                rounds.setdefault(unit, []).append(statistics.median(times))
            gc.collect()
        gc.enable()
        results["kinds"] = {}
        for kind, commands in COMMANDS.items():
            on = statistics.median(samples[(kind, True)]) / 1000
            off = statistics.median(samples[(kind, False)]) / 1000
            diffs = [(a - b) / 1000 / commands for a, b in
                     zip(rounds[(kind, True)], rounds[(kind, False)], strict=True)]  # fmt: skip
            quartiles = statistics.quantiles(diffs, n=4)
            results["kinds"][kind] = {
                "on_us": round(on, 2), "off_us": round(off, 2), "gates": commands,
                "per_gate_us": round((on - off) / commands, 3),
                "per_gate_us_paired_median": round(statistics.median(diffs), 3),
                "per_gate_us_paired_iqr": [round(quartiles[0], 3), round(quartiles[2], 3)],
            }  # fmt: skip
            print(f"{kind:<11} ours {on:8.2f} us  before {off:8.2f} us  per command "
                  f"{(on - off) / commands:+.3f} us (paired median {statistics.median(diffs):+.3f},"
                  f" IQR {quartiles[0]:+.3f}..{quartiles[2]:+.3f})")  # fmt: skip
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        Path(args.table).write_text(table(results))
        return 0
    finally:
        for app in apps.values():
            client_set(app.registry).close()
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
