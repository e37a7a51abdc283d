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
from dataclasses import dataclass
from importlib import import_module
from time import perf_counter
from typing import Any

from redis.exceptions import NoPermissionError

from .breaker import breaker_of
from .failsoft import soft_failures
from .pools import connection_kwargs, pool_figures
from .settings import RedisOptions
from .startup import diagnose

HEALTH_TIMEOUT = 1.0  # seconds, at most: a health check answers quickly or says down


@dataclass(frozen=True)
class Probe:
    ok: bool
    latency_ms: float
    role: str
    version: str
    error: str
    nodes: dict[str, Any] | None = None  # Sentinel/Cluster: per node, by host:port


def new_connection(options: RedisOptions, timeout: float) -> Any:
    """A lone connection for ``options`` with ``timeout`` for connect and reply, no retry."""
    kwargs = connection_kwargs(options, for_check=True)
    kwargs["socket_timeout"] = kwargs["socket_connect_timeout"] = timeout
    return kwargs.pop("connection_class")(**kwargs)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _ask(connection: Any, *args: str) -> Any:
    """One command's reply, or None when the user may not run it (a read-only ACL user)."""
    connection.send_command(*args)
    try:
        return connection.read_response()
    except NoPermissionError:
        return None


def probe(connection: Any, options: RedisOptions, *, version: bool = False) -> Probe:
    """Connect (untimed), PING (timed), then ROLE (and INFO server if ``version``).

    ROLE and INFO are refused to a user allowed only ``+@read +ping``: that user is
    healthy, its role and version shown as ``unknown``.
    """
    try:
        connection.connect()  # no-op when connected; connect and TLS are not latency
        started = perf_counter()
        connection.send_command("PING")
        connection.read_response()
        latency = (perf_counter() - started) * 1000
        role_reply = _ask(connection, "ROLE")
        role = _text(role_reply[0]) if role_reply else "unknown"
        server = ""
        if version:
            info = _ask(connection, "INFO", "server")
            if info is None:
                server = "unknown"
            else:
                text = _text(info)
                fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                name = fields.get("server_name", "redis")
                server = (
                    f"{name} {fields.get(f'{name}_version') or fields.get('redis_version', '?')}"
                )
        return Probe(True, round(latency, 3), role, server, "")
    except Exception as exc:  # noqa: BLE001 - every failure is reported, classified
        connection.disconnect()
        cause, detail = diagnose(exc, options, options.startup_check_timeout)
        return Probe(False, 0.0, "", "", f"{cause}: {detail}")


class HealthProbes:
    """One kept connection per distinct option set, per process (fork-aware)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[RedisOptions, Any] = {}
        self._pid = os.getpid()

    def probe(self, options: RedisOptions) -> Probe:
        timeout = min(options.startup_check_timeout, HEALTH_TIMEOUT)
        if options.kind != "standalone":  # pyramid_redisx.sentinel / pyramid_redisx.cluster
            topology = import_module(f"pyramid_redisx.{options.kind}")
            result: Probe = topology.health_probe(self, options, timeout)
            return result
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
        if not result.ok:
            entry["error"] = result.error
            body["status"] = "down"
        body["clients"][name] = entry
    return body["status"] == "ok", body


def health_view(request: Any) -> dict[str, Any]:
    """``redis.health_route``: 200 when every client answers, 503 otherwise."""
    from .request import client_set

    registry = request.registry
    probes = getattr(registry, "pyramid_redisx_health", None)
    if probes is None:
        probes = registry.pyramid_redisx_health = HealthProbes()
    ok, body = health(client_set(registry), probes)
    request.response.status_int = 200 if ok else 503
    request.response.headers["Cache-Control"] = "no-store"
    return body
