"""Parsed options → one connection pool per distinct option set, and its figures.

This module knows nothing of Sentinel or Cluster: their modules build on these pools,
and ``topology`` chooses the builder from the parsed options. Pools are redis-py's own
``BlockingConnectionPool`` / ``ConnectionPool``; the only additions are three hooks
that cost nothing on the common path:

* waiting for a free connection is timed in the blocking pool's queue, only when the
  queue was empty (the slow path), per thread, so a request can report its own wait;
* the pool notes when it has grown to ``pool_warn_ratio`` of ``max_connections``, so
  the end-of-request saturation check reads the public figures only then;
* ``get_connection_count()`` answers what redis-py's does at a fifth of the cost.

Pools are fork-aware (redis-py resets a pool inherited by a child process on first
use), so an app built before ``fork()`` never shares a socket with its children.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from queue import Empty, Full, LifoQueue
from time import perf_counter
from typing import Any, NamedTuple

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig
from redis.observability.recorder import is_enabled as observability_enabled
from redis.retry import Retry

from .breaker import NO_BREAKER, NoBreaker
from .errors import PoolExhausted as PoolExhausted  # public here too (moved to errors)
from .retries import retry_pauses, retry_policy
from .settings import RedisOptions


class _WaitLog(threading.local):
    """Seconds each thread spent waiting for a free connection (monotonic total), and
    the connections in use right after its last wait (for the "request waited" WARNING,
    which is written when the request may already have given its connection back)."""

    total = 0.0
    in_use = 0


class NoQueue:
    """Stands for the queue of a pool that never waits (``redis.blocking = false``)."""

    waiting = 0
    waits = 0


class _TimedLifoQueue(LifoQueue):  # type: ignore[type-arg]
    """The blocking pool's queue; times a ``get`` only when it has to block, and counts
    the threads blocked in it (``waiting``): a request that keeps a connection gives it
    back after its command while others wait (client.py)."""

    waiting = 0
    waits = 0  # gets that had to wait, ever: a request compares it before reading its own

    def __init__(self, wait_log: _WaitLog, note_wait: Any, maxsize: int) -> None:
        super().__init__(maxsize)
        self._wait_log = wait_log
        self._note_wait = note_wait

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        # The common case, a free connection (or a placeholder), in one locked pop:
        # ``Queue.get`` costs ~2 µs more, mostly in waking ``put`` callers, and the
        # pool never blocks in ``put``.
        with self.mutex:
            queue = self.queue
            if queue:
                return queue.pop()
        if not block:
            raise Empty
        started = perf_counter()
        with self.mutex:
            self.waiting += 1
        try:
            return super().get(True, timeout)
        finally:
            with self.mutex:
                self.waiting -= 1
                self.waits += 1
            self._wait_log.total += perf_counter() - started
            self._note_wait()

    def put_nowait(self, item: Any) -> None:
        # What the pool gives back with: wakes a waiting ``get`` only when one waits
        # (``waiting`` is counted under the same lock, and ``Queue.get`` looks at the
        # queue before it waits, so no wake-up is lost).
        with self.mutex:
            queue = self.queue
            if len(queue) >= self.maxsize:
                raise Full
            queue.append(item)
            if self.waiting:
                self.not_empty.notify()


class _WatchedPool:
    """Mixin: remember when the pool grew near ``max_connections``; own a wait log."""

    max_connections: int
    warn_at: int
    may_be_saturated: bool
    wait_log: _WaitLog
    breaker: NoBreaker = NO_BREAKER

    def _watch(self, warn_ratio: float) -> None:
        self.warned: dict[str, tuple[float, int]] = {}  # stats: when each WARNING last went
        # breaker: the circuit of this pool's connections (their retry policy's), if any
        self.breaker = getattr(self.connection_kwargs.get("retry"), "breaker", NO_BREAKER)  # type: ignore[attr-defined]
        self.breaker.attach(self)
        self.warn_at = max(1, math.ceil(self.max_connections * warn_ratio))
        self.may_be_saturated = False
        self._grown = 0

    def make_connection(self) -> Any:
        connection = super().make_connection()  # type: ignore[misc]
        self._grown += 1
        if self._grown >= self.warn_at:
            self.may_be_saturated = True
        return connection

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self._grown = 0
        self.may_be_saturated = False
        # A new queue (redis-py resets a pool in a child process after fork()): the
        # requests' Usage classes watch the queue that threads now wait in.
        for usage_class in getattr(self, "usage_classes", ()):
            usage_class.queue = getattr(self, "pool", NoQueue)

    _count_attributes: tuple[dict[str, Any], dict[str, Any]] | None = None

    def get_connection_count(self) -> list[tuple[int, dict[str, Any]]]:
        """redis-py's public figures, same values and attributes, at a fifth of the cost.

        redis-py's version rebuilds the same attribute dicts (they depend only on the
        pool) and copies the pool's connection collections on each call; the stats line
        calls it once per request. Here redis-py's own code builds the dicts once and
        the counts are read the way redis-py's ``reset`` reads them (a test compares the
        two on both pool classes, idle and busy).
        """
        attributes = self._count_attributes
        if attributes is None:
            figures = super().get_connection_count()  # type: ignore[misc]
            attributes = self._count_attributes = (dict(figures[0][1]), dict(figures[1][1]))
        idle, in_use = self._idle_and_in_use()
        return [(idle, dict(attributes[0])), (in_use, dict(attributes[1]))]

    def _idle_and_in_use(self) -> tuple[int, int]:
        raise NotImplementedError


class WatchedBlockingPool(_WatchedPool, redis.BlockingConnectionPool):
    """redis-py's ``BlockingConnectionPool`` with a lean lend and give-back.

    Measured inside requests, redis-py's ``get_connection`` + ``release`` cost ~24 µs of
    CPU (bench/README.md), a fifth of a one-GET request: besides the queue, each goes
    through ``connect()``'s retry wrapper on a connected socket and four calls that
    record OpenTelemetry pool metrics. These do the same checks (fork, placeholders,
    connect, a socket with unread data or closed by the server is reconnected, foreign
    connections are not put back) and skip the wrapper; when redis-py's own
    observability is enabled as the pool is built, redis-py's methods run instead,
    metrics included. Maintenance notifications (the one other thing redis-py's
    versions handle) are off in our pools (``connection_kwargs``).
    """

    client_names: tuple[str, ...] = ()  # set by ClientSet.add: who shares this pool

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.breaker.dirty:
            self.breaker.check()  # breaker: no checkout while the circuit is open
        try:
            if self.observed:
                return super().get_connection(*args, **kwargs)
            if self.pid != os.getpid():
                self._checkpid()
            try:
                connection = self.pool.get(True, self.timeout)
            except Empty:
                raise RedisConnectionError("No connection available.") from None
        except RedisConnectionError as exc:
            if str(exc) != "No connection available.":
                raise
            names = ", ".join(self.client_names) or "?"
            raise PoolExhausted(
                f"redis client {names}: no free connection within {self.timeout:g} s "
                f"(max_connections {self.max_connections}, all in use)"
            ) from exc
        if connection is None:
            connection = self.make_connection()
        try:
            if not connection.is_connected:
                connection.connect()  # a failure here is raised, as by redis-py
            else:
                try:
                    if connection.can_read():  # unread data, or closed by the server
                        raise RedisConnectionError("Connection has data")
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    connection.disconnect()
                    connection.connect()
                    if connection.can_read():
                        raise RedisConnectionError("Connection not ready") from None
        except BaseException:
            self.release(connection)
            raise
        return connection

    def _note_wait(self) -> None:
        """Called by the queue after a ``get`` that had to wait: the connections in use
        then, for the "request waited" WARNING."""
        self.wait_log.in_use = self._idle_and_in_use()[1]

    def release(self, connection: Any) -> None:
        if self.observed:
            return super().release(connection)  # type: ignore[no-any-return]
        # No os.getpid() here (a system call, ~0.2 µs): a connection of this process
        # given back to a pool that a fork left behind goes to the old queue, which the
        # next get_connection (it checks the pid) replaces, without using it.
        if connection.pid != self.pid:  # made before a fork: never reused here
            connection.disconnect()
            self.pool.put_nowait(None)
            return
        try:  # noqa: SIM105 - suppress() costs a context manager on every release
            self.pool.put_nowait(connection)
        except Full:
            pass  # given back twice: redis-py drops it silently too

    def _idle_and_in_use(self) -> tuple[int, int]:
        # Idle connections wait in the queue, among None placeholders; every connection
        # made is in _connections (redis-py's own figures, as its reset() counts them).
        with self._lock:
            queue = self.pool.queue
            idle = len(queue) - queue.count(None)
            return idle, len(self._connections) - idle

    def __init__(self, *, warn_ratio: float, **kwargs: Any) -> None:
        self.wait_log = _WaitLog()
        self.observed = observability_enabled()
        kwargs["queue_class"] = functools.partial(_TimedLifoQueue, self.wait_log, self._note_wait)
        self._grown = 0
        self.warn_at = 1
        self.may_be_saturated = False
        super().__init__(**kwargs)
        self._watch(warn_ratio)


class WatchedPool(_WatchedPool, redis.ConnectionPool):
    def _idle_and_in_use(self) -> tuple[int, int]:
        with self._lock:
            return len(self._available_connections), len(self._in_use_connections)

    def __init__(self, *, warn_ratio: float, **kwargs: Any) -> None:
        self.wait_log = _WaitLog()  # never waits: fails with "Too many connections"
        self._grown = 0
        self.warn_at = 1
        self.may_be_saturated = False
        super().__init__(**kwargs)
        self._watch(warn_ratio)


class PoolFigures(NamedTuple):
    in_use: int
    idle: int
    max: int


def pool_figures(pool: Any) -> PoolFigures:
    """In-use and idle connections from redis-py's public ``get_connection_count()``."""
    in_use = idle = 0
    for count, attributes in pool.get_connection_count():
        state = attributes.get("db.client.connection.state")
        if state == "used":
            in_use = count
        elif state == "idle":
            idle = count
    return PoolFigures(in_use, idle, pool.max_connections)


def connection_kwargs(options: RedisOptions, *, for_check: bool = False) -> dict[str, Any]:
    """redis-py connection arguments for the transport in ``options`` (and only those).

    ``for_check`` gives the startup check's variant: its own short timeouts, no retry.
    """
    kwargs: dict[str, Any] = {
        "db": options.db,
        "username": options.username,
        "password": options.password,
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.socket_connect_timeout,
        "retry": retry_policy(options),
        "health_check_interval": options.health_check_interval,
        "decode_responses": options.decode_responses,
        "client_name": options.client_name,
        # Maintenance notifications (Redis Enterprise) add a handshake read to every
        # connect; off, so the worst-case time of a command is the documented formula.
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    if options.protocol is not None:
        kwargs["protocol"] = options.protocol
    if options.scheme == "unix":
        kwargs["path"] = options.path
        kwargs["connection_class"] = redis.UnixDomainSocketConnection
    else:
        kwargs["host"] = options.host
        kwargs["port"] = options.port
        kwargs["socket_keepalive"] = options.socket_keepalive
        kwargs["connection_class"] = redis.Connection
    if options.scheme == "rediss":
        kwargs["connection_class"] = redis.SSLConnection
        for name in (
            "ssl_ca_certs",
            "ssl_certfile",
            "ssl_keyfile",
            "ssl_cert_reqs",
            "ssl_check_hostname",
        ):
            value = getattr(options, name)
            if value is not None:
                kwargs[name] = value
    if for_check:
        kwargs["socket_timeout"] = kwargs["socket_connect_timeout"] = options.startup_check_timeout
        kwargs["retry"] = Retry(ExponentialWithJitterBackoff(), 0)
        kwargs["health_check_interval"] = 0
    return kwargs


def build_pool(options: RedisOptions) -> Any:
    """A new standalone pool for ``options`` (Sentinel and Cluster pools are built by
    their modules; ``topology`` chooses). Opens no connection."""
    kwargs = connection_kwargs(options)
    if options.blocking:
        return WatchedBlockingPool(
            warn_ratio=options.pool_warn_ratio,
            max_connections=options.max_connections,
            timeout=options.pool_timeout,
            **kwargs,
        )
    return WatchedPool(
        warn_ratio=options.pool_warn_ratio, max_connections=options.max_connections, **kwargs
    )


def worst_case_seconds(options: RedisOptions) -> float:
    """Upper bound on how long one command can hold a request (documented in README).

    redis-py retries a command after a connection error, and each retry reconnects
    with its own retries, so pauses can nest. With ``retry_on_timeout`` false (the
    default) a timeout is never retried: at most one read timeout and one connect
    timeout. With it true, every attempt may time out on reading and on connecting.
    """
    r, pauses = options.retries, retry_pauses(options)
    wait = options.pool_timeout if options.blocking else 0.0
    if not options.retry_on_timeout:
        return wait + options.socket_timeout + options.socket_connect_timeout + (r + 2) * pauses
    per_attempt = options.socket_timeout + (r + 1) * options.socket_connect_timeout + pauses
    return wait + (r + 1) * per_attempt + pauses
