"""The startup check: PING every client once when the app is made, fail fast and clearly.

It opens its own connection (not the pool's) with ``startup_check_timeout`` for
connect and read and no retry, so a dead server costs at most that long per client
instead of the pool's full retry budget; it only reads (PING), so it passes against
replicas and read-only ACL users; and it closes the connection, so a parent process
that forks workers afterwards holds no socket.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from importlib import import_module
from time import perf_counter
from typing import Any

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from .errors import RedisUnavailable
from .pools import connection_kwargs
from .settings import RedisOptions
from .workers import mark_checked, replaces_a_worker

log = logging.getLogger("pyramid_redisx")

# Longest look for a TLS server behind a closed plain connection: keeps a failed check
# within startup_check_timeout + 1 s (a TLS handshake on a working link takes ms).
TLS_SNIFF_TIMEOUT = 0.5

_AUTH_REPLIES = ("NOAUTH", "WRONGPASS", "INVALID PASSWORD", "INVALID USERNAME")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> str:
    """A short, stable name for why a connection attempt failed."""
    chain = _chain(exc)
    message = " ".join(str(e) for e in chain).upper()
    if any(isinstance(e, NoPermissionError) for e in chain):  # redis-py strips "NOPERM"
        return "permission denied"
    if any(isinstance(e, (RedisTimeoutError, socket.timeout, TimeoutError)) for e in chain):
        return "timeout"  # before TLS: a handshake that timed out is a timeout
    if any(isinstance(e, (AuthenticationError, AuthorizationError)) for e in chain) or (
        isinstance(exc, ResponseError) and any(word in message for word in _AUTH_REPLIES)
    ):
        return "authentication failed"
    if any(isinstance(e, ssl.SSLError) for e in chain) or "SSL" in message:
        return "TLS error"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "name resolution"
    codes = {getattr(e, "errno", None) for e in chain} | {
        e.args[0] for e in chain if e.args and isinstance(e.args[0], int)
    }
    if errno.ECONNREFUSED in codes or "CONNECTION REFUSED" in message:
        return "connection refused"
    if codes & {socket.EAI_NONAME, socket.EAI_AGAIN, getattr(socket, "EAI_NODATA", -5)}:
        return "name resolution"
    if isinstance(exc, ResponseError) and "NOPERM" in message:
        return "permission denied"
    if "CLOSED BY SERVER" in message or errno.ECONNRESET in codes:
        return "connection closed by server"
    return "error"


def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """True when ``host:port`` completes a TLS handshake (certificate not checked)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except (OSError, ValueError):
        return False


def diagnose(exc: BaseException, options: RedisOptions, timeout: float) -> tuple[str, str]:
    """(cause, detail) of a failed connection, with a hint where the cause is a known mistake."""
    cause, detail = classify(exc), str(exc)
    if (
        cause == "connection closed by server"
        and options.scheme == "redis"
        and options.host
        and options.port
        and speaks_tls(options.host, options.port, min(timeout, TLS_SNIFF_TIMEOUT))
    ):
        return "server expects TLS", f"use rediss:// instead of redis://; {detail}"
    handshake = any("HANDSHAKE" in str(e).upper() for e in _chain(exc))
    if cause == "timeout" and options.scheme == "rediss" and handshake:
        detail += "; no TLS handshake answer: if the server does not speak TLS, use redis://"
    return cause, detail


def ping(options: RedisOptions) -> tuple[float, Any]:
    """PING once on a fresh connection; return (seconds of the PING alone, reply)."""
    kwargs = connection_kwargs(options, for_check=True)
    connection = kwargs.pop("connection_class")(**kwargs)
    try:
        connection.connect()  # connect, TLS handshake, AUTH, HELLO: not part of the latency
        started = perf_counter()
        connection.send_command("PING")
        reply = connection.read_response()
        return perf_counter() - started, reply
    finally:
        connection.disconnect()


def check_client(name: str, options: RedisOptions) -> float:
    """PING client ``name``; raise ``RedisUnavailable`` (no password in it) on failure."""
    if options.kind != "standalone":  # pyramid_redisx.sentinel / pyramid_redisx.cluster
        return import_module(f"pyramid_redisx.{options.kind}").check(name, options)  # type: ignore[no-any-return]
    try:
        seconds, _ = ping(options)
    except Exception as exc:  # every failure is reported, classified
        cause, detail = diagnose(exc, options, options.startup_check_timeout)
        raise RedisUnavailable(name, options.url, cause, detail) from exc
    return seconds


def check_all(clients: dict[str, RedisOptions]) -> None:
    """Check each distinct option set once, in declaration order, per its mode.

    A failure is logged as one ERROR line before it is raised: pserve and gunicorn print
    a long traceback whose last line is the cause; the log line is the first thing read.
    A worker that replaces another of the same pre-fork master goes on instead, with a
    WARNING (``workers.py``).
    """
    checked: set[RedisOptions] = set()
    for name, options in clients.items():
        if options.startup_check == "false" or options in checked:
            continue
        checked.add(options)
        try:
            seconds = check_client(name, options)
        except RedisUnavailable as exc:
            if options.startup_check == "warn":
                log.warning("startup check failed, going on (startup_check = warn): %s", exc)
                continue
            if replaces_a_worker(options):  # workers.py: not a first deployment
                log.warning(
                    "startup check failed in a worker that replaces another (an earlier "
                    "worker of this master passed it), going on: the circuit breaker and "
                    "the health view carry the outage: %s", exc,
                )  # fmt: skip
                continue
            log.error("startup check failed: %s", exc)
            raise
        mark_checked(options)
        log.info(
            "redis client=%s reachable at %s (PING %.2f ms)", name, options.url, seconds * 1000
        )


def on_application_created(event: Any) -> None:
    """``ApplicationCreated`` subscriber: runs during ``config.make_wsgi_app()``."""
    from .request import client_set

    check_all(client_set(event.app.registry).options)
