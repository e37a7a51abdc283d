"""A lone connection to one server, outside the pools: PING it and ask its role.

The startup check, the health view, the Sentinel and Cluster checks and the CLI talk to
a server this way: a connection of their own with a short timeout and no retry, so that
a dead server costs at most that timeout (never the pool's retry budget) and a saturated
pool never makes a healthy server look down.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Any

from redis.exceptions import NoPermissionError

from .diagnose import diagnose
from .errors import RedisUnavailable
from .pools import connection_kwargs
from .settings import RedisOptions


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


def ping(options: RedisOptions) -> float:
    """PING once on a fresh connection; return the seconds of the PING alone."""
    kwargs = connection_kwargs(options, for_check=True)
    connection = kwargs.pop("connection_class")(**kwargs)
    try:
        connection.connect()  # connect, TLS handshake, AUTH, HELLO: not part of the latency
        started = perf_counter()
        connection.send_command("PING")
        connection.read_response()
        return perf_counter() - started
    finally:
        connection.disconnect()


def check_server(name: str, options: RedisOptions) -> float:
    """PING a standalone server for client ``name``; raise ``RedisUnavailable`` (no
    password in it) on failure. Returns the seconds of the PING alone."""
    try:
        seconds = ping(options)
    except Exception as exc:  # every failure is reported, classified
        cause, detail = diagnose(exc, options, options.startup_check_timeout)
        raise RedisUnavailable(name, options.url, cause, detail) from exc
    return seconds
