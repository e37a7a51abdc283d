"""The one place that chooses the topology (standalone, Sentinel, Cluster) from the options.

``RedisOptions.kind`` names it; each kind's module builds its pool(s), checks its
server(s) at startup, probes them for the health view and describes where a client
points, from the layers below (``pools``, ``probe``, ``diagnose``). The client set, the
startup check, the health view and the CLI ask here, never a kind's module directly.
"""

from __future__ import annotations

from typing import Any

from . import cluster, sentinel
from .pools import build_pool as build_standalone_pool
from .probe import Probe, check_server
from .settings import RedisOptions


def build_pool(options: RedisOptions) -> Any:
    """A new pool (or, for Cluster, the node pools seen as one) for ``options``.

    Opens no connection. A Cluster's pools make its client (``make_client``): redis-py's
    ``RedisCluster`` routes each command to a node's pool itself.
    """
    if options.kind == "sentinel":
        return sentinel.build_pool(options)
    if options.kind == "cluster":
        return cluster.build_pools(options)
    return build_standalone_pool(options)


def check(name: str, options: RedisOptions) -> float:
    """The startup check of client ``name``: seconds of its PING, or ``RedisUnavailable``."""
    if options.kind == "sentinel":
        return sentinel.check(name, options)
    if options.kind == "cluster":
        return cluster.check(name, options)
    return check_server(name, options)


def health_probe(probes: Any, options: RedisOptions, timeout: float) -> Probe:
    """Probe a Sentinel or Cluster client (per node); ``probes`` keeps connections between
    calls (the health view's ``HealthProbes``)."""
    module: Any = sentinel if options.kind == "sentinel" else cluster
    result: Probe = module.health_probe(probes, options, timeout)
    return result


def describe(options: RedisOptions) -> str:
    """Where a client points, safe to log (no password)."""
    if options.kind == "sentinel":
        return sentinel.describe(options)
    if options.kind == "cluster":
        return cluster.describe(options)
    return options.url
