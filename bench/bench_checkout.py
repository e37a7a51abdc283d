"""Checkouts under thread contention: the readiness check's cost, measured.

    python bench/bench_checkout.py [--seconds S] [--rounds N] [--threads T]

T threads (default 8, waitress's count in bench_server.py) each loop: take a
connection from a pool, GET a key, give it back; one process, real server. Variants,
interleaved in a new random order each round: redis-py's ``BlockingConnectionPool``;
pyramid_redisx's pool (which, as redis-py's, checks each connection it lends: unread
data, closed by the server); the same pool without that check (not shipped: what the
check costs); a connection kept per thread (no pool: the lower bound). Reports operations per second
and the process's CPU time per operation (medians of rounds) and voluntary context
switches per operation: each system call that releases the GIL while other threads
wait for it is a thread switch.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from pyramid_redisx.pools import build_pool
from pyramid_redisx.settings import parse_client
from pyramid_redisx.testing import RedisServer

KEY = "bench:key"


def pooled(pool: Any) -> Callable[[threading.local], None]:
    def op(local: threading.local) -> None:
        connection = pool.get_connection()
        connection.send_command("GET", KEY)
        connection.read_response()
        pool.release(connection)

    return op


def per_thread(port: int) -> Callable[[threading.local], None]:
    def op(local: threading.local) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = redis.Connection(host="127.0.0.1", port=port)
        connection.send_command("GET", KEY)
        connection.read_response()

    return op


def run(op: Callable[[threading.local], None], threads: int, seconds: float) -> tuple[float, ...]:
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def work(index: int) -> None:
        local = threading.local()
        while time.monotonic() < stop:
            op(local)
            counts[index] += 1

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    done = sum(counts)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return done / wall, cpu / done * 1e6, (after.ru_nvcsw - before.ru_nvcsw) / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        with server.client() as client:
            client.set(KEY, b"v" * 32)
        options = parse_client("default", {"redis.url": server.url})
        ours = build_pool(options)
        unchecked = build_pool(options)
        make_connection = unchecked.make_connection

        def make_unchecked() -> Any:  # connections whose readiness check says "ready"
            connection = make_connection()
            connection.can_read = lambda *args, **kwargs: False
            return connection

        unchecked.make_connection = make_unchecked
        bare = redis.BlockingConnectionPool(
            host="127.0.0.1", port=server.port, max_connections=32, timeout=5
        )
        variants = {
            "redis-py BlockingConnectionPool": pooled(bare),
            "pyramid_redisx pool": pooled(ours),
            "pyramid_redisx pool without the check": pooled(unchecked),
            "a connection kept per thread": per_thread(server.port),
        }
        results: dict[str, list[tuple[float, ...]]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name in random.sample(list(variants), len(variants)):
                results[name].append(run(variants[name], args.threads, args.seconds))
        for pool in (ours, unchecked, bare):
            pool.disconnect()
    finally:
        server.cleanup()
    print(f"{args.threads} threads, {args.rounds} rounds of {args.seconds:g} s; medians of rounds")
    print(f"{'':<44}{'ops/s':>9}{'CPU µs/op':>11}{'switches/op':>13}")
    for name, rows in results.items():
        ops, cpu, switches = (statistics.median(row[i] for row in rows) for i in range(3))
        print(f"{name:<44}{ops:>9.0f}{cpu:>11.1f}{switches:>13.2f}")


if __name__ == "__main__":
    main()
