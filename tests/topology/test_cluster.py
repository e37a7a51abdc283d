"""Redis Cluster against a real 6-node cluster (3 masters, 1 replica each, node timeout 2 s)."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from pyramid_redisx import RedisUnavailable, get_redis
from pyramid_redisx.cli import main as cli_main
from pyramid_redisx.request import client_set
from pyramid_redisx.testing import FailoverWriter, RedisClusterSet, cluster_state

from .conftest import cluster_settings

# Killed master → first successful write: cluster-node-timeout (2 s) for the replicas to
# call it failed, an election, then redis-py's slot-map refresh; measured ~3–4 s here.
FAILOVER_BOUND = 8.0
KEYS = [f"key:{n}" for n in range(12)]  # spread over the three masters' slots


def _node_with_key(topology: RedisClusterSet, key: str) -> Any:
    with topology.nodes[0].client() as client:
        slot = client.execute_command("CLUSTER KEYSLOT", key)
    for node in topology.masters():
        with node.client() as client:
            if client.execute_command("CLUSTER COUNTKEYSINSLOT", slot) or any(
                start <= slot <= end for start, end in _slots_of(client)
            ):
                return node
    raise AssertionError(f"no master serves slot {slot}")


def _slots_of(client: Any) -> list[tuple[int, int]]:
    myself = client.execute_command("CLUSTER MYID").decode()
    ranges = []
    for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
        if primary[2].decode() == myself:
            ranges.append((start, end))
    return ranges


def _getcalls(node: Any) -> int:
    with node.client() as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def test_request_redis_is_a_cluster_client_writing_to_every_master(
    cluster_set: RedisClusterSet, apps: Any, stats_records: Any
) -> None:
    def view(request: Any) -> str:
        for key in KEYS:
            request.redis.set(key, key)
        return type(request.redis).__mro__[1].__name__

    app = apps(cluster_settings(cluster_set, max_connections="4"), {"/w": view})
    assert app.get("/w").text == "AccountedCluster"
    assert isinstance(get_redis(app.app.registry), RedisCluster)
    for key in KEYS[:4]:
        with _node_with_key(cluster_set, key).client() as client:
            assert client.get(key) == key.encode()  # on the master that owns its slot
    line = [r for r in stats_records.records if r.name == "pyramid_redisx.stats"][-1]
    assert line.redis_commands == len(KEYS)
    nodes = get_redis(app.app.registry).get_nodes()
    assert len(nodes) >= 3
    assert line.redis_max == 4 * len(nodes)  # per node, summed over the nodes known
    assert line.redis_idle >= 3 and line.redis_in_use == 0  # one pool per master used


def test_pipeline_counts_every_command_in_one_round_trip(
    cluster_set: RedisClusterSet, apps: Any, stats_records: Any
) -> None:
    def view(request: Any) -> str:
        pipe = request.redis.pipeline()
        for key in KEYS[:5]:
            pipe.set(key, "1")
        return str(sum(pipe.execute()))

    app = apps(cluster_settings(cluster_set), {"/p": view})
    assert app.get("/p").text == "5"
    line = [r for r in stats_records.records if r.name == "pyramid_redisx.stats"][-1]
    assert line.redis_commands == 5
    assert line.redis_slowest.startswith("PIPELINE:")


def test_replica_reads_with_a_load_balancing_strategy(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    settings = cluster_settings(cluster_set, load_balancing_strategy="round_robin_replicas")
    app = apps(settings, {"/r": lambda r: str(sum(r.redis.get(k) is None for k in KEYS))})
    replicas = [n for n in cluster_set.nodes if n not in cluster_set.masters()]
    before = sum(_getcalls(n) for n in replicas)
    assert app.get("/r").text == str(len(KEYS))
    assert sum(_getcalls(n) for n in replicas) - before == len(KEYS)  # all answered by replicas


def test_startup_check_names_the_master_that_does_not_answer(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    stalled = cluster_set.masters()[1]
    stalled.pause()
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as caught:
            apps(cluster_settings(cluster_set, url=cluster_set.masters()[0].url,
                                  startup_check_timeout="0.3"))  # fmt: skip
        assert time.monotonic() - started < 1.9  # before the cluster marks it failed
    finally:
        stalled.resume()
    message = str(caught.value)
    assert f"cluster node 127.0.0.1:{stalled.port}" in message and "timeout" in message
    assert cluster_set.password not in message  # type: ignore[operator]


def test_health_view_and_check_report_every_node(
    cluster_set: RedisClusterSet, apps: Any, tmp_path: Path
) -> None:
    app = apps(cluster_settings(cluster_set, health_route="/health"))
    body = app.get("/health").json
    entry = body["clients"]["default"]
    assert body["status"] == "ok" and entry["ok"] and entry["role"] == "cluster"
    assert set(entry["pool"]) == {"in_use", "idle", "max"}
    assert len(entry["nodes"]) == 6
    roles = sorted(node["role"] for node in entry["nodes"].values())
    assert roles == ["master"] * 3 + ["slave"] * 3

    def connections_made() -> int:
        with cluster_set.nodes[0].client() as client:
            return int(client.info("stats")["total_connections_received"])

    before = connections_made()
    assert app.get("/health").json["status"] == "ok"
    assert connections_made() == before + 1  # the health view kept its own; +1 is ours

    ini = tmp_path / "app.ini"
    ini.write_text(
        "[app:main]\nuse = call:demo_app:main\n"
        f"redis.url = {cluster_set.url}\nredis.cluster = true\n"
        f"redis.cluster_nodes = 127.0.0.1:{cluster_set.nodes[1].port}\n"
    )
    out = io.StringIO()
    assert cli_main(["check", str(ini)], out) == 0
    text = out.getvalue()
    seeds = f"127.0.0.1:{cluster_set.nodes[0].port}, 127.0.0.1:{cluster_set.nodes[1].port}"
    assert text.startswith(f"default  ok    cluster via {seeds}  max_connections="), text
    assert text.count("role=master") == 3 and text.count("role=slave") == 3
    assert cluster_set.password not in text  # type: ignore[operator]


def test_sigkill_master_writes_resume_within_bound(cluster_set: RedisClusterSet, apps: Any) -> None:
    app = apps(cluster_settings(cluster_set), {"/w": lambda r: r.redis.incr("failover")})
    victim = _node_with_key(cluster_set, "failover")
    writer = FailoverWriter(lambda: app.get("/w")).start()
    try:
        victim.stop()  # SIGKILL, reaped: gone when it returns
        killed = time.monotonic()
        recovered = writer.first_success_after(killed, 20)
    finally:
        writer.stop()
    assert recovered is not None, writer.failures[-3:]
    assert recovered - killed <= FAILOVER_BOUND
    assert client_set(app.app.registry).options["default"].cluster


def test_a_request_that_waited_for_a_node_connection_says_so(
    cluster_set: RedisClusterSet, apps: Any, stats_records: Any
) -> None:
    """One connection per node: request B waits while A holds the node's connection
    (a blocking command); B's line reports the wait and a "request waited" WARNING
    names it. The node pools share one wait log (their Usage watches no queue). The wait
    is not Redis time: B's ``time_ms`` leaves it out, as a standalone client's does, for
    a command and for a pipeline."""
    import threading

    def hold(request: Any) -> str:
        request.redis.execute_command("BLPOP", KEYS[0], 0.4)  # holds the node's connection
        return "held"

    def get(request: Any) -> str:
        return str(request.redis.get(KEYS[0]))

    def pipe(request: Any) -> str:
        return str(request.redis.pipeline(transaction=False).get(KEYS[0]).execute())

    app = apps(cluster_settings(cluster_set, max_connections="1", pool_timeout="5"),
               {"/hold": hold, "/get": get, "/pipe": pipe})  # fmt: skip
    app.get("/get")  # the slot map and the node's pool
    for path, first, answer in (("/get", "GET", "None"), ("/pipe", "PIPELINE", "[None]")):
        holder = threading.Thread(target=lambda: app.get("/hold"))
        holder.start()
        time.sleep(0.1)
        assert app.get(path).text == answer
        holder.join(5)
        lines = [r for r in stats_records.records
                 if r.name == "pyramid_redisx.stats" and r.redis_slowest.startswith(first)]  # fmt: skip
        assert lines[-1].redis_waited_ms >= 150, lines[-1].getMessage()
        assert lines[-1].redis_time_ms < 100, lines[-1].getMessage()
    assert any("request waited" in r.getMessage() for r in stats_records.records)


def test_a_node_port_taken_after_it_was_chosen_is_chosen_again() -> None:
    """Something (another test's server, an outgoing connection) binds a node's port
    between its choice and the node's start: the cluster starts on another port."""
    topology = RedisClusterSet()
    taken = socket.socket()
    taken.bind(("127.0.0.1", topology.nodes[2].port))  # as an outgoing connection's port
    chosen = topology.nodes[2].port
    try:
        topology.start()
        assert topology.nodes[2].port != chosen
        with topology.nodes[0].client() as client:
            assert cluster_state(client) == "ok"
        assert sorted(n["port"] for n in topology.cluster_nodes()) == sorted(
            n.port for n in topology.nodes
        )
    finally:
        taken.close()
        topology.cleanup()


def test_health_view_names_the_first_node_down_and_the_slowest_master(
    cluster_set: RedisClusterSet, apps: Any
) -> None:
    """A master down (just now: its replica is not promoted yet): the client is down, its
    error names the first master down and why, its latency is the slowest master's
    (the dead one's 0). The seed node down too: no node, no latency, and why."""
    app = apps(cluster_settings(cluster_set, health_route="/health"))
    master = next(m for m in cluster_set.masters() if m is not cluster_set.nodes[0])  # not the seed
    master.stop()
    entry = app.get("/health", status=503).json["clients"]["default"]
    where = f"127.0.0.1:{master.port}"
    assert entry["ok"] is False and entry["nodes"][where]["ok"] is False
    assert entry["error"] == f"cluster node {where}: {entry['nodes'][where]['error']}"
    assert entry["error"].startswith(f"cluster node {where}: connection refused: ")
    masters = [n["latency_ms"] for n in entry["nodes"].values() if n["role"] == "master"]
    assert len(masters) == 3 and entry["latency_ms"] == max(masters) > 0

    cluster_set.nodes[0].stop()  # the seed too: no node to ask for the others
    lost = app.get("/health", status=503).json["clients"]["default"]
    assert (lost["ok"], lost["latency_ms"], lost["role"], lost["nodes"]) == (False, 0.0, "", {})
    assert lost["error"].startswith("connection refused: "), lost["error"]
