"""Why a connection failed, in a short stable name and a message with a hint.

``classify`` names the cause (refused, timeout, authentication failed, TLS error...)
from an exception and its chain; ``diagnose`` adds the hint for known mistakes (a TLS
server behind ``redis://``, a plain server behind ``rediss://``). Used by the startup
check, the health view, the Sentinel and Cluster checks and the CLI, so that each
reports a failure in the same words.
"""

from __future__ import annotations

import errno
import socket
import ssl

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from .settings import RedisOptions

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
