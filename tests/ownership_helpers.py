"""Helpers of the connection-ownership tests (issue 24): plain redis-py built like the
add-on's pool, outcomes that compare, and a loopback proxy that cuts a connection.

The plain client is the oracle: ``redis.Redis`` on a ``BlockingConnectionPool`` with
the same timeouts, retry count, backoff and health-check interval as the app, so a
scenario run both ways must give the same outcome.
"""

from __future__ import annotations

import contextlib
import gc
import socket
from collections.abc import Callable, Iterator
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from tests.loopback_proxy import LoopbackProxy

# The app's settings in these tests, and the same figures for the plain client.
SOCKET_TIMEOUT = 2.0
RETRIES = 3
BACKOFF_CAP = 0.25
BACKOFF_BASE = 0.008  # pyramid_redisx.pools.RETRY_BACKOFF_BASE, redis-py's own base


def app_settings(**overrides: Any) -> dict[str, str]:
    """``redis.*`` settings (without the prefix) of an app under test."""
    settings = {
        "socket_timeout": str(SOCKET_TIMEOUT),
        "retries": str(RETRIES),
        "retry_backoff_cap": str(BACKOFF_CAP),
        "health_check_interval": "0",  # kills must be found by the code under test
        "max_connections": "8",
        "pool_timeout": "5",
    }
    settings.update({key: str(value) for key, value in overrides.items()})
    return settings


def plain_client(
    url: str,
    *,
    retries: int = RETRIES,
    socket_timeout: float = SOCKET_TIMEOUT,
    max_connections: int = 8,
    **kwargs: Any,
) -> redis.Redis:
    """Plain redis-py configured as ``app_settings`` configures the app's pool."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2,
        health_check_interval=0,
        retry=Retry(
            ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE),
            retries,
            supported_errors=(redis.ConnectionError,),  # retry_on_timeout = false
        ),
        **kwargs,
    )
    return redis.Redis(connection_pool=pool)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Everything alive now out of the collector's reach (``gc.freeze``): a test's
    ``gc.collect()`` then scans only what the test made (milliseconds, not 0.2 s, in a
    pytest process), so a collector thread does not hold the GIL for long."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def outcome(value: Any) -> Any:
    """A result as compared between the two runs: exceptions by class name, pipelines
    (a queued command's return) as ``"queued"``, lists as tuples."""
    if isinstance(value, BaseException):
        return type(value).__name__
    if isinstance(value, redis.client.Pipeline):
        return "queued"
    if isinstance(value, list | tuple):
        return tuple(outcome(item) for item in value)
    return value


def attempt(call: Callable[[], Any]) -> Any:
    """``outcome`` of ``call()``, or the class name of what it raised."""
    try:
        return outcome(call())
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        return type(exc).__name__


class CuttingProxy(LoopbackProxy):
    """A loopback TCP proxy in front of a real server: bytes go through unchanged,
    except that once armed (``cut_next(b"GET")``) the next command of that name is not
    forwarded and both sides of its connection are closed. The client has then sent
    the command and gets no reply: a connection lost after sending, deterministically.

    Only the client's side is parsed (redis-py sends every command as a RESP array of
    bulk strings); replies are relayed as bytes.
    """

    def __init__(self, upstream_port: int) -> None:
        self.cut: bytes | None = None
        self.cuts = 0
        super().__init__(upstream_port)

    def cut_next(self, command: bytes) -> None:
        with self.lock:
            self.cut = command.upper()

    def client_to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        while data := client.recv(65536):
            buffer += data
            while (parsed := _one_command(buffer)) is not None:
                name, end = parsed
                with self.lock:
                    cut = self.cut is not None and name.upper() == self.cut
                    if cut:
                        self.cut = None
                        self.cuts += 1
                if cut:
                    return  # not forwarded: the pump closes both sides
                upstream.sendall(buffer[:end])
                buffer = buffer[end:]


def _one_command(buffer: bytes) -> tuple[bytes, int] | None:
    """(name, end) of the first complete RESP command in ``buffer``, None if partial."""
    if not buffer:
        return None
    if not buffer.startswith(b"*"):  # not redis-py (a stray client): drop it
        raise OSError(f"not a RESP array: {buffer[:20]!r}")
    line_end = buffer.find(b"\r\n")
    if line_end < 0:
        return None
    count = int(buffer[1:line_end])
    position = line_end + 2
    name = b""
    for index in range(count):
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        length = int(buffer[position + 1 : line_end])
        start = line_end + 2
        if len(buffer) < start + length + 2:
            return None
        if index == 0:
            name = buffer[start : start + length]
        position = start + length + 2
    return name, position
