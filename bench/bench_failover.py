"""Failover: SIGKILL the master while writes keep going, ours and bare redis-py side by side.

    python bench/bench_failover.py [--rounds N] [--topology sentinel|cluster|both] [--json PATH]

Starts a Sentinel set (1 master, 2 replicas, 3 Sentinels, down-after 1000 ms) and a
6-node cluster (node timeout 2000 ms) from ``pyramid_redisx.testing``. Each round, two
threads write (INCR) at the same time until the master is killed and writes work again:
one through a Pyramid app with pyramid_redisx (built once, never rebuilt, called as a
WSGI app), one through a bare redis-py client with the same socket timeouts
(``Sentinel.master_for`` / ``RedisCluster``). Both keys live on the same master (one
hash tag), so both writers see the same kill. Printed per round: seconds from the
SIGKILL to Sentinel's own ``+switch-master`` (Sentinel only) and to each writer's first
successful write. The topology is healed between rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from typing import Any

from pyramid.config import Configurator
from pyramid.response import Response
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel
from webob import Request

from pyramid_redisx.request import client_set
from pyramid_redisx.testing import FailoverWriter, RedisClusterSet, SentinelSet

SOCKET_TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.5
OURS, BARE = "{failover}:ours", "{failover}:bare"  # one hash tag: one slot, one master


def pyramid_app(settings: dict[str, Any]) -> Any:
    config = Configurator(settings=settings)
    config.include("pyramid_redisx")

    def view(request: Any) -> Response:
        return Response(str(request.redis.incr(OURS)))

    config.add_route("w", "/w")
    config.add_view(view, route_name="w")
    return config.make_wsgi_app()


def writer_through(app: Any) -> FailoverWriter:
    def write() -> None:
        response = Request.blank("/w").get_response(app)
        if response.status_int != 200:
            raise RuntimeError(response.status)

    return FailoverWriter(write)


def one_round(
    kill: Any, ours: FailoverWriter, bare: FailoverWriter, watch: Any
) -> dict[str, float | None]:
    watcher = watch() if watch else None
    kill()  # SIGKILL and reap: the master is gone when this returns
    killed = time.monotonic()
    switched = watcher.wait(20) if watcher else None
    ours_at = ours.first_success_after(killed, 30)
    bare_at = bare.first_success_after(killed, 30)
    return {
        "switch_master_s": None if switched is None else switched - killed,
        "ours_s": None if ours_at is None else ours_at - killed,
        "bare_s": None if bare_at is None else bare_at - killed,
    }


def sentinel_rounds(rounds: int) -> list[dict[str, float | None]]:
    topology = SentinelSet(password="bench-pw").start()
    try:
        settings = {
            "redis.url": "redis://:bench-pw@localhost/0",
            "redis.sentinels": topology.sentinels_setting,
            "redis.sentinel_service": topology.service,
            "redis.socket_timeout": str(SOCKET_TIMEOUT),
            "redis.socket_connect_timeout": str(CONNECT_TIMEOUT),
        }
        app = pyramid_app(settings)
        sentinel = Sentinel(topology.sentinel_addresses, socket_timeout=SOCKET_TIMEOUT,
                            socket_connect_timeout=CONNECT_TIMEOUT)  # fmt: skip
        bare_client = sentinel.master_for(
            topology.service, password="bench-pw", socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
        )  # fmt: skip
        results = []
        for _ in range(rounds):
            topology.heal()
            ours = writer_through(app).start()
            bare = FailoverWriter(lambda: bare_client.incr(BARE)).start()
            try:
                results.append(
                    one_round(lambda: topology.master().stop(), ours, bare, topology.watch_switch)
                )
            finally:
                ours.stop()
                bare.stop()
        client_set(app.registry).close()
        return results
    finally:
        topology.cleanup()


def cluster_rounds(rounds: int) -> list[dict[str, float | None]]:
    topology = RedisClusterSet(password="bench-pw").start()
    try:
        settings = {
            "redis.url": topology.url,
            "redis.cluster": "true",
            "redis.socket_timeout": str(SOCKET_TIMEOUT),
            "redis.socket_connect_timeout": str(CONNECT_TIMEOUT),
        }
        app = pyramid_app(settings)
        bare_client = RedisCluster(
            host="127.0.0.1", port=topology.nodes[0].port, password="bench-pw",
            socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
        )  # fmt: skip
        results = []
        for _ in range(rounds):
            topology.heal()
            ours = writer_through(app).start()
            bare = FailoverWriter(lambda: bare_client.incr(BARE)).start()
            port = bare_client.get_node_from_key(BARE).port
            victim = next(node for node in topology.nodes if node.port == port)
            try:
                results.append(one_round(victim.stop, ours, bare, None))
            finally:
                ours.stop()
                bare.stop()
        client_set(app.registry).close()
        bare_client.close()
        return results
    finally:
        topology.cleanup()


def _show(value: float | None) -> str:
    return "  —  " if value is None else f"{value:5.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--topology", choices=["sentinel", "cluster", "both"], default="both")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    figures: dict[str, list[dict[str, float | None]]] = {}
    if args.topology in ("sentinel", "both"):
        figures["sentinel"] = sentinel_rounds(args.rounds)
    if args.topology in ("cluster", "both"):
        figures["cluster"] = cluster_rounds(args.rounds)
    print("seconds from SIGKILL of the master to ...")
    print(
        f"{'topology':<9} {'round':>5}  {'+switch-master':>14}  {'ours':>5}  {'bare redis-py':>13}"
    )
    for name, rounds in figures.items():
        for index, row in enumerate(rounds, 1):
            print(f"{name:<9} {index:>5}  {_show(row['switch_master_s']):>14}  "
                  f"{_show(row['ours_s']):>5}  {_show(row['bare_s']):>13}")  # fmt: skip
        for key in ("ours_s", "bare_s"):
            values = [row[key] for row in rounds if row[key] is not None]
            if values:
                print(f"{name:<9} median {key[:-2]}: {statistics.median(values):.3f} s")  # type: ignore[type-var]
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
