"""The exceptions users catch: a bad setting, Redis not answering at startup, a redis-py
the add-on was not tested with, a command that may have been applied although its
connection failed, and an open circuit.

The first three are ``pyramid.exceptions.ConfigurationError`` subclasses, so an app that
fails to configure reports them the way Pyramid reports any other configuration problem.
"""

from __future__ import annotations

from pyramid.exceptions import ConfigurationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class RedisSettingsError(ConfigurationError):
    """A ``redis.*`` setting (or a directive option) has a value we cannot use.

    ``key`` is the full settings key (``redis.cache.max_connections``), ``value`` the
    offending value as shown to users (passwords already redacted; None when a required
    key is missing) and ``accepted`` a short description of what would have been accepted.
    """

    def __init__(self, key: str, value: object, accepted: str) -> None:
        self.key = key
        self.value = value  # None: the key is missing
        self.accepted = accepted
        if value is None:
            super().__init__(f"{key} is not set: {accepted}")
        else:
            super().__init__(f"{key} = {value!r} is not valid: {accepted}")

    def __str__(self) -> str:
        return str(self.args[0])


class RedisUnavailable(ConfigurationError):
    """The startup check could not PING a client's server.

    ``client`` is the client name, ``url`` the redacted URL, ``cause`` one of
    ``connection refused``, ``timeout``, ``authentication failed``, ``permission
    denied``, ``TLS error``, ``server expects TLS``, ``name resolution``, ``connection
    closed by server``, ``error``; ``detail`` redis-py's own message (host:port only),
    after a hint when the cause is a known mistake (``use rediss://``). Sentinel adds the
    cause ``no master`` and Cluster ``cluster state``; ``url`` then names the Sentinel
    service or the cluster node (docs/topologies.rst).
    """

    def __init__(self, client: str, url: str, cause: str, detail: str) -> None:
        self.client = client
        self.url = url
        self.cause = cause
        self.detail = detail
        super().__init__(f"Redis client {client!r} at {url} is unavailable: {cause} ({detail})")

    def __str__(self) -> str:
        return str(self.args[0])


class RedisPyUnsupported(ConfigurationError):
    """The installed redis-py is outside the tested range, or one of the redis-py
    internals pyramid_redisx replaces or reads is missing or has another shape
    (``pyramid_redisx.redis_py``). The message names the installed version, the tested
    range, what differs and the fix (a pin, or ``redis.allow_redis_py``)."""


class CommandMayHaveBeenApplied(RedisConnectionError):
    """The connection failed after a command that can change data was sent.

    The server may have run it, so it is not sent again (a retry could apply it twice);
    ``redis.retry_writes = true`` retries it anyway. A ``redis.ConnectionError``, so
    code that handles connection errors handles this one too.
    """


class TimeoutNotRetried(RedisTimeoutError):
    """A command's reply did not come within ``socket_timeout`` after it was sent.

    Raised by the Cluster client, whose redis-py loop would otherwise send the command
    again (a stalled server may still run the first try): only
    ``redis.retry_on_timeout = true`` retries it. A ``redis.TimeoutError``.
    """


class PoolExhausted(RedisConnectionError):
    """No free connection within ``pool_timeout``: names the client, not just the pool.

    A ``redis.ConnectionError`` raised by the pool, not by the server: it never trips the
    circuit breaker (a busy pool is not an unreachable server).
    """


class RedisCircuitOpen(RedisConnectionError):
    """The client's circuit is open: Redis failed to answer ``breaker_failures`` times in a
    row, so commands fail at once, without touching the network, until a probe succeeds.

    A ``redis.ConnectionError``, so code that handles connection errors handles this one
    too. ``client`` names the client(s) sharing the pool, ``url`` is redacted, ``cause``
    is the last failure (redis-py's message: host and port only), ``open_seconds`` how long
    the circuit has been open and ``next_probe_seconds`` when one request may try again
    (0: a probe is running or due).
    """

    def __init__(
        self, client: str, url: str, cause: str, open_seconds: float, next_probe_seconds: float
    ) -> None:
        self.client = client
        self.url = url
        self.cause = cause
        self.open_seconds = open_seconds
        self.next_probe_seconds = next_probe_seconds
        probe = (
            f"next probe in {next_probe_seconds:.2f} s"
            if next_probe_seconds > 0
            else "a probe is running"
        )
        super().__init__(
            f"redis client {client} at {url}: circuit open for {open_seconds:.2f} s, "
            f"commands fail at once ({probe}); last failure: {cause}"
        )

    def __str__(self) -> str:
        return str(self.args[0])


# redis-py's Sentinel connection turns a demoted master's READONLY reply into this
# ConnectionError (and drops the connection): an answer too, though it carries no code.
DEMOTED_MASTER = "The previous master is now a slave"


def is_error_reply(error: BaseException) -> bool:
    """True when ``error`` is the server's answer, not a lost connection.

    redis-py types some error *replies* as ``ConnectionError`` subclasses (``-LOADING``:
    ``BusyLoadingError``; ``-WRONGPASS``, ``-NOAUTH``: ``AuthenticationError``; ``-ERR max
    number of clients reached``), and its Sentinel connection a demoted master's
    ``-READONLY``. The server answered and ran nothing: the write-safe rule does not apply,
    the error keeps its type, and the circuit breaker does not count it. redis-py gives
    every error it parses from a reply its code (``status_code``); an error of the socket
    has none.
    """
    return getattr(error, "status_code", None) is not None or (
        isinstance(error, RedisConnectionError) and str(error) == DEMOTED_MASTER
    )
