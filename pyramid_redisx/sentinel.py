"""Sentinel: redis-py's own Sentinel pool with our pool hooks, and a ``+switch-master`` listener.

The pool is redis-py's ``SentinelConnectionPool`` (it asks the Sentinels for the
master's address on every connect, and turns a READONLY reply from a demoted master
into a connection error that drops the connection) combined with our watched
blocking or plain pool, so the stats line, warnings and ``get_connection_count``
work unchanged. The client's retry policy (``retries``, ``retry_backoff_cap``)
retries ``MasterNotFoundError`` (an election in progress) and that READONLY error:
neither can have changed data.

What redis-py lacks: it learns of a failover only when a command fails. A demoted
master that is still alive keeps answering reads from idle connections (stale data),
and a write fails once before the pool moves. The ``SwitchListener`` (one daemon
thread per process, started at the first checkout, so a ``--preload`` parent that
only configured the app runs none; restarted in a forked child at its first checkout)
subscribes to ``+switch-master`` on every Sentinel and moves the pool as soon as one
announces the new master: idle connections are closed, busy ones are dropped when
given back, and the pool's circuit closes (``breaker.py``: the new master has not
failed). ``redis.sentinel_listener = false`` turns it off.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import select
import threading
import time
import weakref
from typing import Any

import redis
from redis.backoff import AbstractBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from .diagnose import classify, diagnose
from .errors import RedisUnavailable
from .pools import WatchedBlockingPool, WatchedPool, connection_kwargs
from .probe import Probe, ping
from .settings import RedisOptions

log = logging.getLogger("pyramid_redisx.sentinel")

THREAD_NAME = "pyramid_redisx-sentinel-listener"
_SEEN_LOCK = threading.Lock()  # guards _SentinelPool._master_seen (a moment's hold)
CHANNEL = "+switch-master"
POLL = 0.5  # seconds: longest the listener sleeps before noticing it should stop
RECONNECT_PAUSE = 1.0  # seconds between tries to reach a Sentinel that is down
_TLS_KEYS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


def describe(options: RedisOptions) -> str:
    """Where a Sentinel client points, safe to log: service, role and Sentinels."""
    sentinels = ", ".join(f"{host}:{port}" for host, port in options.sentinels or ())
    return (
        f"Sentinel service {options.sentinel_service!r} ({options.sentinel_role}) via {sentinels}"
    )


def sentinel_kwargs(options: RedisOptions, timeout: float | None = None) -> dict[str, Any]:
    """Connection arguments for the Sentinels themselves: no retry (the next one is asked)."""
    kwargs: dict[str, Any] = {
        "password": options.sentinel_password,
        "socket_timeout": timeout or options.socket_timeout,
        "socket_connect_timeout": timeout or options.socket_connect_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if options.scheme == "rediss":
        kwargs["ssl"] = True
        kwargs.update(
            {key: getattr(options, key) for key in _TLS_KEYS if getattr(options, key) is not None}
        )
    return kwargs


class NewestSentinel(Sentinel):
    """redis-py's ``Sentinel``, except that the master is the one with the newest
    ``config-epoch`` among the Sentinels that answer, not the first answer.

    During a failover the leader announces the new master a second or two before the
    other Sentinels learn it; redis-py's first answer may still be the old master, alive
    but no longer the master, and writes sent there until it is demoted are lost. The
    leader itself, until it has reconfigured the replicas, names the old master with the
    new epoch and the flag ``failover_in_progress``: at equal epochs a Sentinel that has
    finished wins (else a request's reconnect moved the pool back to the old master
    right after the announcement moved it forward).
    Costs one round trip per Sentinel per new connection (a reconnect, not a command).
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        best: tuple[tuple[int, bool], tuple[str, int]] | None = None
        errors = []
        for sentinel in self.sentinels:
            try:
                masters: Any = sentinel.sentinel_masters()  # as redis-py reads it
                state = masters.get(service_name)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            if state and self.check_master_state(state, service_name):
                rank = (int(state.get("config-epoch", 0)), not _failing_over(state))
                if best is None or rank > best[0]:
                    best = (rank, (state["ip"], int(state["port"])))
        if best is None:
            detail = f" : {', '.join(errors)}" if errors else ""
            raise MasterNotFoundError(f"No master found for {service_name!r}{detail}")
        return best[1]


def _failing_over(state: dict[str, Any]) -> bool:
    flags = state.get("flags", ())  # "a,b" over RESP2, a set over RESP3
    return "failover_in_progress" in (flags.split(",") if isinstance(flags, str) else flags)


def manager(options: RedisOptions, timeout: float | None = None) -> Sentinel:
    """The ``Sentinel`` for ``options`` (opens no connection)."""
    return NewestSentinel(
        list(options.sentinels or ()), sentinel_kwargs=sentinel_kwargs(options, timeout)
    )


class _SentinelPool:
    """Mixin for our watched pools over ``SentinelConnectionPool``: listener and switches."""

    service_name: str
    is_master: bool
    proxy: Any
    sentinel_addresses: frozenset[tuple[str, int]] = frozenset()
    listener_kwargs: dict[str, Any] | None = None
    listen = False
    _listening_pid: int | None = None
    failovers = 0  # master changes seen (telemetry): announced, or found at a connect
    failover_callbacks: tuple[Any, ...] = ()  # called at each (the client cache flushes)
    _master_seen: tuple[str, int] | None = None  # kept through reset(), unlike the proxy's

    def _saw_master(self, address: tuple[str, int]) -> None:
        """The master is at ``address``: a change is a failover, counted once whichever
        saw it first (the listener's thread, or a request's connection reconnecting)."""
        with _SEEN_LOCK:
            before, self._master_seen = self._master_seen, address
        if before is not None and address != before:
            self.failovers += 1
            for callback in self.failover_callbacks:
                callback()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.listen and self._listening_pid != os.getpid():
            self._listening_pid = os.getpid()
            LISTENER.watch(self)
        return super().get_connection(*args, **kwargs)  # type: ignore[misc]

    def switch_master(self, address: tuple[str, int]) -> None:
        """Sentinel announced ``address`` as the master: move there now."""
        if self.is_master:
            self.proxy.master_address = address  # disconnect() below counts the move
        # Idle connections reconnect (asking the Sentinels) at their next use; busy ones
        # no longer match the master's address and are dropped when given back.
        self.disconnect(inuse_connections=False)

    def release(self, connection: Any) -> None:
        owned = self.owns_connection(connection)  # type: ignore[attr-defined]
        super().release(connection)  # type: ignore[misc]
        if not owned and isinstance(self, redis.BlockingConnectionPool):
            # redis-py's blocking pool frees the slot but keeps counting the connection.
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)

    def disconnect(self, inuse_connections: bool = True) -> None:
        if inuse_connections:  # closing the pool (ClientSet.close): stop listening for it
            self._listening_pid = None
            LISTENER.unwatch(self)
        else:  # the master moved (switch_master, or redis-py's proxy saw a new address
            # at a connection's connect: its get_master_address calls this): a new
            # server, so the circuit closes (breaker.py)
            address = getattr(self.proxy, "master_address", None) if self.is_master else None
            if address is not None:
                self._saw_master(address)
            self.breaker.failover(f"{address[0]}:{address[1]}" if address else "a new master")  # type: ignore[attr-defined]
        super().disconnect(inuse_connections)  # type: ignore[misc]


class SentinelBlockingPool(_SentinelPool, WatchedBlockingPool, SentinelConnectionPool):
    """Blocking pool (``redis.blocking = true``) for a Sentinel-managed service."""


class SentinelPool(_SentinelPool, WatchedPool, SentinelConnectionPool):
    """Plain pool (``redis.blocking = false``) for a Sentinel-managed service."""


def build_pool(options: RedisOptions) -> Any:
    """Pool builder for kind ``sentinel``: the service's master or, with
    ``sentinel_role = replica``, its replicas (round robin, the master as fallback)."""
    kwargs = connection_kwargs(options)
    del kwargs["host"], kwargs["port"]  # the Sentinels say where the server is
    kwargs["connection_class"] = (
        SentinelManagedSSLConnection if options.scheme == "rediss" else SentinelManagedConnection
    )
    common = {
        "warn_ratio": options.pool_warn_ratio,
        "max_connections": options.max_connections,
        "service_name": options.sentinel_service,
        "sentinel_manager": manager(options),
        "is_master": options.sentinel_role == "master",
        **kwargs,
    }
    pool: _SentinelPool
    if options.blocking:
        pool = SentinelBlockingPool(timeout=options.pool_timeout, **common)
    else:
        pool = SentinelPool(**common)
    pool.sentinel_addresses = frozenset(options.sentinels or ())
    pool.listen = options.sentinel_listener
    pool.listener_kwargs = sentinel_kwargs(options)
    if options.sentinel_listener:
        retry = kwargs["retry"]  # each connection gets this Retry (or a copy of it)
        retry._backoff = SwitchAwareBackoff(retry._backoff)
    return pool


class SwitchAwareBackoff(AbstractBackoff):
    """The client's backoff, except that a pause between two tries ends as soon as the
    listener hears of a new master, so a retry does not sleep through the switch.

    redis-py sleeps for what ``compute`` returns; this waits here and returns 0.
    """

    def __init__(self, inner: AbstractBackoff) -> None:
        self.inner = inner

    def reset(self) -> None:
        self.inner.reset()

    def compute(self, failures: int) -> float:
        LISTENER.wait_for_switch(self.inner.compute(failures))
        return 0.0


class SwitchListener:
    """One thread per process following ``+switch-master`` on the Sentinels of every
    watched pool; it runs while at least one pool is watched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._switched = threading.Condition()
        self._switches = 0

    def wait_for_switch(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a switch is announced meanwhile."""
        if seconds <= 0:
            return
        with self._switched:
            seen = self._switches
            self._switched.wait_for(lambda: self._switches != seen, seconds)

    def watch(self, pool: Any) -> None:
        with self._lock:
            self._pools.add(pool)
            if self._thread is None or not self._thread.is_alive() or self._stop.is_set():
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name=THREAD_NAME, daemon=True
                )
                self._thread.start()

    def unwatch(self, pool: Any) -> None:
        with self._lock:
            self._pools.discard(pool)
            if not self._pools:
                self._stop.set()

    def stop(self, timeout: float = 2 * POLL) -> None:
        """Stop the thread (at exit, in tests) and wait for it to close its connections."""
        with self._lock:
            self._pools = weakref.WeakSet()
            self._stop.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's thread does not exist here; its sockets are
        the parent's and stay untouched (left unreferenced, never shut down)."""
        self._lock = threading.Lock()
        self._pools = weakref.WeakSet()
        self._thread = None
        self._stop = threading.Event()
        self._switched = threading.Condition()

    def _wanted(self) -> dict[tuple[str, int], dict[str, Any]]:
        with self._lock:
            pools = list(self._pools)
        wanted: dict[tuple[str, int], dict[str, Any]] = {}
        for pool in pools:
            for address in pool.sentinel_addresses:
                wanted.setdefault(address, pool.listener_kwargs)
        return wanted

    def _run(self, stop: threading.Event) -> None:
        subscriptions: dict[tuple[str, int], Any] = {}
        next_try: dict[tuple[str, int], float] = {}
        try:
            while not stop.is_set():
                wanted = self._wanted()
                if not wanted:
                    return
                for address in set(subscriptions) - set(wanted):
                    _close(subscriptions.pop(address))
                for address, kwargs in wanted.items():
                    if address not in subscriptions and time.monotonic() >= next_try.get(
                        address, 0
                    ):
                        try:
                            subscriptions[address] = _subscribe(address, kwargs)
                        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                            next_try[address] = time.monotonic() + RECONNECT_PAUSE
                            log.debug(
                                "cannot subscribe to %s on Sentinel %s:%d: %s",
                                CHANNEL,
                                *address,
                                exc,
                            )
                sockets = {
                    ps.connection._sock: address
                    for address, ps in subscriptions.items()
                    if ps.connection is not None and ps.connection._sock is not None
                }
                if sockets:
                    # A socket closed meanwhile: its read below fails and it is redone.
                    with contextlib.suppress(OSError, ValueError):
                        select.select(list(sockets), [], [], POLL)
                else:
                    stop.wait(POLL)
                for address, ps in list(subscriptions.items()):
                    try:
                        while (message := ps.get_message(timeout=0)) is not None:
                            if message.get("type") == "message":
                                self._announce(address, message["data"])
                    except (RedisConnectionError, RedisTimeoutError, OSError):
                        _close(subscriptions.pop(address))
                        next_try[address] = time.monotonic() + RECONNECT_PAUSE
        except Exception:  # the listener must never take the process down
            log.exception("Sentinel listener stopped by an unexpected error")
        finally:
            for ps in subscriptions.values():
                _close(ps)

    def _announce(self, sentinel: tuple[str, int], data: Any) -> None:
        """``<service> <old ip> <old port> <new ip> <new port>`` from one Sentinel."""
        text = data.decode() if isinstance(data, bytes) else str(data)
        parts = text.split()
        if len(parts) != 5 or not parts[4].isdigit():
            return
        service, old, new = parts[0], f"{parts[1]}:{parts[2]}", (parts[3], int(parts[4]))
        with self._lock:
            pools = [
                p
                for p in self._pools
                if p.service_name == service and sentinel in p.sentinel_addresses
            ]
        moved = False
        for pool in pools:
            if pool.is_master and pool.proxy.master_address == new:
                continue  # already moved (every Sentinel announces the same switch)
            pool.switch_master(new)
            moved = True
            log.warning(
                "redis client=%s Sentinel %s:%d announced %s: service %r moved from %s to %s:%d",
                ", ".join(getattr(pool, "client_names", ())) or "?", *sentinel, CHANNEL,
                service, old, *new,
            )  # fmt: skip
        if moved:  # end the retry pauses of threads waiting for a master
            with self._switched:
                self._switches += 1
                self._switched.notify_all()


def _subscribe(address: tuple[str, int], kwargs: dict[str, Any]) -> Any:
    client = redis.Redis(address[0], address[1], health_check_interval=0, **kwargs)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    return pubsub


def _close(pubsub: Any) -> None:
    with contextlib.suppress(Exception):  # a broken connection is dropped anyway
        pubsub.close()


LISTENER = SwitchListener()
os.register_at_fork(after_in_child=LISTENER.forget_after_fork)
atexit.register(LISTENER.stop)


def resolve(
    options: RedisOptions, timeout: float, sentinel: Sentinel | None = None
) -> RedisOptions:
    """``options`` pointing at the server the Sentinels name now (the master, or a live
    replica for ``sentinel_role = replica``, the master if none): the startup check,
    health view and ``check`` command then PING it like a standalone server.

    ``sentinel``: a kept manager (the health view's); without one, a new one is closed
    after use. Raises ``MasterNotFoundError`` (a ``ConnectionError``) when no Sentinel
    names one.
    """
    own = sentinel is None
    asked = sentinel or manager(options, timeout)
    try:
        service = options.sentinel_service
        assert service is not None  # parse_client requires it with redis.sentinels
        replicas = [] if options.sentinel_role == "master" else asked.discover_slaves(service)
        # (host, port): typed loosely by redis-py 8.2, a str and an int in practice
        address: tuple[Any, Any] = replicas[0] if replicas else asked.discover_master(service)
    finally:
        if own:
            asked.close()
    host, port = address
    return dataclasses.replace(options, host=str(host), port=int(port), sentinels=None)


def check(name: str, options: RedisOptions) -> float:
    """Startup check: a Sentinel names the server, and it answers PING."""
    try:
        server = resolve(options, options.startup_check_timeout)
    except Exception as exc:
        cause = "no master" if isinstance(exc, MasterNotFoundError) else classify(exc)
        raise RedisUnavailable(name, describe(options), cause, str(exc)) from exc
    try:
        seconds = ping(server)
    except Exception as exc:
        cause, detail = diagnose(exc, server, options.startup_check_timeout)
        raise RedisUnavailable(name, f"{server.url} ({describe(options)})", cause, detail) from exc
    return seconds


def health_probe(probes: Any, options: RedisOptions, timeout: float) -> Probe:
    """Health view and ``check``: probe the server the Sentinels name now (``probes``:
    the health view's ``HealthProbes``, which keeps connections between calls)."""
    managers = getattr(probes, "sentinel_managers", None)
    if managers is None:  # kept beside the health view's probe connections (fork-aware pools)
        managers = probes.sentinel_managers = {}
    if options not in managers:
        managers[options] = manager(options, timeout)
    try:
        server = resolve(options, timeout, managers[options])
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return Probe(False, 0.0, "", "", f"no master: {exc}", nodes={})
    result: Probe = probes.probe(server)
    node = {"ok": result.ok, "role": result.role, "latency_ms": result.latency_ms}
    if not result.ok:
        node["error"] = result.error
    return dataclasses.replace(result, nodes={f"{server.host}:{server.port}": node})
