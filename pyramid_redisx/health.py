"""Health: a probe per distinct client (PING, ROLE, INFO) and the JSON view.

The view keeps one probe connection per distinct option set per process, with a short
timeout and no retry. It does not take a connection from the app's pool: a saturated
pool would make the health check wait ``pool_timeout`` (or fail) although Redis is
fine, and a down server would cost the pool's whole retry budget. It opens no new
connection per call while the server is up, and never holds a pool connection, so a
health check under load cannot leak one (cf. django-health-check #433). Its probe does
not go through the circuit breaker: it answers within its timeout whatever the
circuit's state, which it reports beside the probe (``"circuit"``), with the pool's
soft failures.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from . import topology
from .breaker import breaker_of
from .client import client_set
from .failsoft import soft_failures
from .pools import pool_figures
from .probe import Probe, new_connection, probe
from .settings import RedisOptions

HEALTH_TIMEOUT = 1.0  # seconds, at most: a health check answers quickly or says down


class HealthProbes:
    """One kept connection per distinct option set, per process (fork-aware)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[RedisOptions, Any] = {}
        self._pid = os.getpid()

    def probe(self, options: RedisOptions) -> Probe:
        timeout = min(options.startup_check_timeout, HEALTH_TIMEOUT)
        if options.kind != "standalone":  # a probe per node (Sentinel, Cluster)
            return topology.health_probe(self, options, timeout)
        with self._lock:
            if self._pid != os.getpid():  # forked: never reuse the parent's sockets
                self._connections = {}
                self._pid = os.getpid()
            connection = self._connections.get(options)
            if connection is None:
                connection = self._connections[options] = new_connection(options, timeout)
            reused = connection._sock is not None
            result = probe(connection, options)
            if not result.ok and reused and not result.error.startswith("timeout"):
                result = probe(connection, options)  # a kept connection the server dropped
            return result

    def close(self) -> None:
        """Disconnect the kept probe connections (tests, scripts that are done)."""
        with self._lock:
            connections, self._connections = self._connections, {}
        for connection in connections.values():
            connection.disconnect()


def close_probes(registry: Any) -> None:
    """Disconnect the health view's probe connections of an app, if it made any."""
    probes = getattr(registry, "pyramid_redisx_health", None)
    if probes is not None:
        probes.close()


def health(clients: Any, probes: HealthProbes) -> tuple[bool, dict[str, Any]]:
    """(all up, the JSON body) for every client of a ``ClientSet``."""
    body: dict[str, Any] = {"status": "ok", "clients": {}}
    results: dict[RedisOptions, Probe] = {}
    for name, options in clients.options.items():
        result = results.get(options) or results.setdefault(options, probes.probe(options))
        pool = clients.clients[name].connection_pool
        figures = pool_figures(pool)
        entry: dict[str, Any] = {
            "ok": result.ok,
            "latency_ms": result.latency_ms,
            "role": result.role,
            "pool": {"in_use": figures.in_use, "idle": figures.idle, "max": figures.max},
            # this process's circuit (breaker.py): closed, open, half-open, or off
            "circuit": breaker_of(pool).state,
            "soft_failures": soft_failures(pool),
        }
        if result.nodes is not None:
            entry["nodes"] = result.nodes
        cache = clients.caches.get(name)
        if cache is not None:  # redis.client_cache: its figures in this process
            entry["client_cache"] = cache.figures()
        if not result.ok:
            entry["error"] = result.error
            body["status"] = "down"
        body["clients"][name] = entry
    return body["status"] == "ok", body


def health_view(context: Any, request: Any) -> dict[str, Any]:
    """``redis.health_route``: 200 when every client answers, 503 otherwise. Pyramid's
    (context, request) form: it is then called the same way through any wrapper that
    hides its signature (mutmut's does)."""
    registry = request.registry
    probes = getattr(registry, "pyramid_redisx_health", None)
    if probes is None:
        probes = registry.pyramid_redisx_health = HealthProbes()
    ok, body = health(client_set(registry), probes)
    request.response.status_int = 200 if ok else 503
    request.response.headers["Cache-Control"] = "no-store"
    return body
