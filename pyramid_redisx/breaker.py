"""The circuit breaker: one per pool, per process, so an outage costs milliseconds.

Without it every request pays the whole worst case of a command (timeouts and retry
pauses) for as long as Redis is unreachable, and under load every server thread waits
on Redis at once. With it, once ``breaker_failures`` calls in a row failed to reach the
server, the circuit is **open**: commands raise ``RedisCircuitOpen`` at once, without
touching the network. After ``breaker_cooldown`` it is **half-open**: the next call
(one thread or asyncio task at a time; the others still fail at once) is the probe,
sent once without retries. Its success closes the circuit, its failure opens it for
another cooldown.

Why consecutive failures, not a rate over a window: a closed circuit then costs one
attribute read per call (``dirty`` is false while no failure is counted; a success
clears it), where a rate needs every success counted; and a run of failures is what an
outage looks like, while a sporadic failure among successes never opens the circuit.

What counts is only a failure to reach the server: a refused or timed-out connect, a
reset or lost connection, a read timeout, ``CommandMayHaveBeenApplied`` (its connection
was lost). Error replies never count, including those redis-py types as connection
errors (``-LOADING``, ``-WRONGPASS``/``-NOAUTH``, "max number of clients reached": each
carries its reply's code) and a demoted Sentinel master's READONLY: the server answered. A busy pool (``PoolExhausted``) does not count either.

A pool's connections share the breaker (each gets a deep copy of the pool's retry
policy; the breaker copies as itself), and clients with equal options share a pool, so
"per client" means per distinct option set. A forked child starts with every breaker
closed, as it starts with fresh pools. The gate runs in the retry policy (``retries``:
every connect, command and pipeline goes through it) and at checkout (``pools``); a
Sentinel failover closes the circuit (``sentinel``), and a Cluster client has one
breaker for all its nodes (``cluster``). The asyncio clients of ``get_async_redis`` pass
the same gate with the very breaker of the sync pool of the same name (``aio``): one
circuit per client name and process, whichever kind of client saw the outage.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Hashable
from threading import get_ident
from time import monotonic
from typing import Any

import redis.exceptions
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    MaxConnectionsError,
    RedisClusterException,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import PoolExhausted, RedisCircuitOpen, is_error_reply
from .settings import RedisOptions

log = logging.getLogger("pyramid_redisx.breaker")

CLOSED, OPEN, HALF_OPEN, OFF = "closed", "open", "half-open", "off"


NOT_THE_SERVER = (RedisCircuitOpen, PoolExhausted, MaxConnectionsError)


def is_reply(error: BaseException) -> bool:
    """A connection error that is in fact the server's answer (it is reachable): the
    same rule as the write-safe one (``errors.is_error_reply``)."""
    return isinstance(error, RedisConnectionError) and is_error_reply(error)


# Read timeouts, and (redis-py >= 8.2) a Cluster topology refresh that reached no node.
_CLUSTER_UNREACHABLE = getattr(redis.exceptions, "RedisClusterUnreachableError", None)
TIMEOUTS: tuple[type[Exception], ...] = (
    (RedisTimeoutError, _CLUSTER_UNREACHABLE) if _CLUSTER_UNREACHABLE else (RedisTimeoutError,)
)


def unreachable(error: BaseException) -> bool:
    """True for a failure to reach the server: what counts toward opening the circuit."""
    if isinstance(error, TIMEOUTS):
        return True
    if isinstance(error, RedisClusterException) and error.__cause__ is not None:
        # redis-py 8.1's "Redis Cluster cannot be connected" (8.2 raises
        # RedisClusterUnreachableError): a topology refresh that reached no node, raised
        # from the last node's own error
        return unreachable(error.__cause__)
    return (
        isinstance(error, RedisConnectionError)
        and not isinstance(error, NOT_THE_SERVER)
        and not is_reply(error)
    )


def unavailable(error: BaseException) -> bool:
    """True when Redis could not be used just now: unreachable, the circuit open, no free
    connection, or a server that answered it cannot serve yet (``-LOADING``, max clients,
    a demoted master). What fail-soft callers swallow; authentication errors are not (a
    wrong password is a mistake to see, not an outage to ride out)."""
    if unreachable(error) or isinstance(error, NOT_THE_SERVER):
        return True
    return is_reply(error) and not isinstance(error, AuthenticationError | AuthorizationError)


class NoBreaker:
    """The breaker of a client with ``breaker_failures = 0``, and of the startup check,
    the health probes and the Cluster's node connections: never open, counts nothing."""

    dirty = False
    state = OFF
    opened = 0

    def enter(self, me: Hashable = None) -> bool:
        return False

    def check(self) -> None:
        return None

    def failed(self, error: BaseException, probe: bool = False, me: Hashable = None) -> None:
        return None

    def succeeded(self, probe: bool = False, me: Hashable = None) -> None:
        return None

    def connected_only(self, probe: bool = False, me: Hashable = None) -> None:
        return None

    def failover(self, where: str) -> None:
        return None

    def attach(self, pool: Any) -> None:
        """Called by the pool (or ``ClusterPools``) this breaker guards."""

    def __deepcopy__(self, memo: Any) -> NoBreaker:
        return self


NO_BREAKER = NoBreaker()
_BREAKERS: weakref.WeakSet[Breaker] = weakref.WeakSet()


class Breaker(NoBreaker):
    """One circuit (see the module docstring). ``dirty`` is the only attribute the hot
    path reads: false while the circuit is closed and no failure is counted."""

    def __init__(self, failures: int, cooldown: float, where: str) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.where = where  # the redacted URL, or the Sentinel service / cluster seeds
        self.owner: Callable[[], Any] = lambda: None  # weak reference to the pool
        self._fresh()
        _BREAKERS.add(self)

    def _fresh(self) -> None:
        self._lock = threading.Lock()
        self.dirty = False
        self.state = CLOSED
        self.failures = 0  # in a row, while closed
        self.opened_at = 0.0  # monotonic: when it last opened (or re-opened)
        self.since = 0.0  # monotonic: when this outage began (the first open)
        self.last_error = ""
        self.prober: Hashable = None  # who runs the half-open probe: a thread or a task
        self.probes = 0  # probes that failed during this outage
        self.opened = 0  # outages seen by this process

    def __deepcopy__(self, memo: Any) -> Breaker:
        return self  # a pool's connections share their pool's breaker

    def attach(self, pool: Any) -> None:
        self.owner = weakref.ref(pool)  # for the client names in messages

    @property
    def names(self) -> tuple[str, ...]:
        """The clients sharing the pool (equal options share one)."""
        return tuple(getattr(self.owner(), "client_names", ())) or ("?",)

    @property
    def client(self) -> str:
        return ",".join(self.names)  # as in the log lines: client=default,cache

    # -------------------------------------------------------------- the gate
    # ``me`` says who calls: the thread (``get_ident()``, the default) for sync clients,
    # the asyncio task for the async ones (``aio``): every task of an event loop runs on
    # one thread, so a thread identity would let them all pass as "inside the probe".
    def enter(self, me: Hashable = None) -> bool:
        """Before a call that may touch the network, when ``dirty``. Raises
        ``RedisCircuitOpen`` while open; True when this call is the half-open probe (its
        caller reports the outcome with ``probe=True``)."""
        if me is None:
            me = get_ident()
        with self._lock:
            if self.state == CLOSED or self.prober == me:  # closed, or inside the probe
                return False
            if (
                self.state == OPEN
                and self.prober is None
                and monotonic() >= self.opened_at + self.cooldown
            ):
                self.state = HALF_OPEN
                self.prober = me
                log.info("redis client=%s circuit half-open: one request probes %s",
                         self.client, self.where)  # fmt: skip
                return True
            raise self.error()

    def check(self) -> None:
        """At checkout (sync pools only: asyncio pools have no gate there), when
        ``dirty``: raise while open and cooling down, or while another thread probes.
        No lock: the probe itself is decided by ``enter``."""
        state = self.state
        if state == CLOSED or self.prober == get_ident():
            return
        if state == OPEN and monotonic() >= self.opened_at + self.cooldown:
            return  # the probe is due: the call after the checkout may be it
        raise self.error()

    def error(self) -> RedisCircuitOpen:
        now = monotonic()
        next_probe = max(0.0, self.opened_at + self.cooldown - now)
        if self.state == HALF_OPEN:
            next_probe = 0.0
        return RedisCircuitOpen(
            ", ".join(repr(name) for name in self.names),
            self.where,
            self.last_error or "?",
            now - self.since,
            next_probe,
        )

    # -------------------------------------------------------------- outcomes
    def failed(self, error: BaseException, probe: bool = False, me: Hashable = None) -> None:
        """A call failed with ``error`` (counted once, and only if it is a failure to
        reach the server). ``probe``: the call was the half-open probe."""
        if me is None:
            me = get_ident()
        if probe and self.prober == me:
            with self._lock:
                if self.prober != me:
                    pass  # closed meanwhile by another thread's success
                elif unreachable(error):
                    self.last_error = describe(error)
                    self.probes += 1
                    self._open(monotonic())
                elif is_reply(error) or isinstance(error, ResponseError):
                    self._close("the probe got an answer")
                else:  # neither: let the next call probe at once
                    self.state, self.prober, self.opened_at = OPEN, None, 0.0
            return
        if not unreachable(error) or getattr(error, "_redisx_counted", False):
            return
        if self.prober == me:
            return  # a call inside the probe: the probe's own outcome decides
        error._redisx_counted = True  # type: ignore[attr-defined]  # nested retries re-raise it
        with self._lock:
            self.last_error = describe(error)
            if self.state != CLOSED:
                return
            self.failures += 1
            self.dirty = True
            if self.failures >= self.threshold:
                self._open(monotonic())

    def succeeded(self, probe: bool = False, me: Hashable = None) -> None:
        """A call succeeded, when ``dirty``: the server is reachable."""
        if me is None:
            me = get_ident()
        if self.prober == me and not probe:
            return  # inside the probe (its connect): the probe's own outcome decides
        with self._lock:
            if self.state == CLOSED:
                self.failures = 0
                self.dirty = False
            else:
                self._close("a request succeeded" if not probe else "the probe succeeded")

    def connected_only(self, probe: bool = False, me: Hashable = None) -> None:
        """A bare socket connect succeeded (``retries.connects_only``): no success, as a
        proxy or load balancer in front of a dead server accepts too; only an answer is.
        A probe that was only that hands the probe to the next call."""
        if not probe:
            return
        if me is None:
            me = get_ident()
        with self._lock:
            if self.prober == me:
                self.state, self.prober, self.opened_at = OPEN, None, 0.0

    def failover(self, where: str) -> None:
        """Sentinel moved the service to a new master: close the circuit now."""
        with self._lock:
            if self.state != CLOSED:
                self._close(f"the service moved to {where}")
            self.failures = 0
            self.dirty = False

    # -------------------------------------------------------------- transitions (locked)
    def _open(self, now: float) -> None:
        first = self.state == CLOSED
        self.state = OPEN
        self.dirty = True
        self.opened_at = now
        self.prober = None
        if first:
            self.since = now
            self.opened += 1
            self.probes = 0
            log.warning(
                "redis client=%s circuit open: %d failures in a row to reach %s (last: %s); "
                "commands fail at once with RedisCircuitOpen, one probe every %g s",
                self.client, self.failures, self.where, self.last_error, self.cooldown,
            )  # fmt: skip
        else:
            log.info("redis client=%s circuit open again: the probe failed (%s); next probe in %g s",
                     self.client, self.last_error, self.cooldown)  # fmt: skip

    def _close(self, why: str) -> None:
        outage = monotonic() - self.since
        self.state = CLOSED
        self.dirty = False
        self.failures = 0
        self.prober = None
        log.warning(
            "redis client=%s circuit closed: %s; it was open for %.2f s (%d probes failed)",
            self.client, why, outage, self.probes,
        )  # fmt: skip


def describe(error: BaseException) -> str:
    """The last failure, as shown: redis-py's message names host:port, never a password."""
    text = str(error) or "-"
    return f"{type(error).__name__}: {text}"


def where(options: RedisOptions) -> str:
    """Where a client's server is, safe to log."""
    if options.kind == "sentinel":
        return f"Sentinel service {options.sentinel_service!r}"
    if options.kind == "cluster":
        return f"cluster via {options.host}:{options.port}"
    return options.url


def new_breaker(options: RedisOptions) -> NoBreaker:
    """The breaker of a pool built for ``options`` (``NO_BREAKER`` when turned off)."""
    if not options.breaker_failures:
        return NO_BREAKER
    return Breaker(options.breaker_failures, options.breaker_cooldown, where(options))


def guarded(breaker: NoBreaker, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` through ``breaker``'s gate: for clients whose calls do not
    go through our retry policy (the Cluster client's own loops)."""
    probe = breaker.dirty and breaker.enter()
    try:
        result = call(*args, **kwargs)
    except BaseException as error:
        breaker.failed(error, probe)
        raise
    if breaker.dirty:
        breaker.succeeded(probe)
    return result


def breaker_of(pool: Any) -> NoBreaker:
    """The breaker of a pool (ours, or the Cluster's ``ClusterPools``)."""
    return getattr(pool, "breaker", NO_BREAKER)  # type: ignore[no-any-return]


def _after_fork_in_child() -> None:
    """A forked child starts with every circuit closed, as it starts with fresh pools:
    its parent's outage (and lock) is not its own."""
    for breaker in list(_BREAKERS):
        breaker._fresh()


os.register_at_fork(after_in_child=_after_fork_in_child)
