"""Clients: one process-wide client per name, and a cheap per-request copy that counts.

Constructing a ``redis.Redis`` costs ~100 µs (it copies a large response-callback
table), so each named client is built once per process (``ClientSet.add``). A request
gets a *copy* of that client's attributes (~1 µs) carrying a ``Usage`` that records
the request's commands, and closes whatever the request left holding a connection
(pipelines in WATCH mode, pubsubs, monitors) when the request ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from time import perf_counter
from typing import Any
from weakref import ref

import redis
from redis.client import Pipeline

from .pools import build_pool
from .settings import DEFAULT_CLIENT, AppOptions, RedisOptions

# request.__dict__ key a debug panel sets (before the view runs) to get every command.
TRACE = "pyramid_redisx_trace"
BOUND = "_pyramid_redisx_bound"  # request.__dict__ key: {name: bound client}


class Usage:
    """What one request did with one client. Attributes are read by ``stats``.

    Holds the request's WSGI environ (for the path in slow-command warnings) and a weak
    reference to the request, not the request: a bound client lives in
    ``request.__dict__`` and must not make a cycle. The counters start as class
    attributes, so a new ``Usage`` (one per request and client) sets only six.
    """

    commands = 0
    seconds = 0.0
    slowest_name: Any = None
    slowest_seconds = 0.0
    closers: list[Callable[[], Any]] | None = None
    # Every command in order, only when a debug panel asked for it (see TRACE).
    trace: list[tuple[Any, tuple[Any, ...], float, list[Any] | None]] | None = None

    def __init__(
        self, name: str, options: RedisOptions, pool: Any, environ: Any, request_ref: Any
    ) -> None:
        self.name = name
        self.options = options
        self.pool = pool
        self.environ = environ
        self.request_ref: Callable[[], Any] = request_ref
        self.wait_start = pool.wait_log.total
        # True when each command needs more than counting (trace or slow threshold).
        self.watch = options.slow_command is not None

    @property
    def slow_threshold(self) -> float | None:
        return self.options.slow_command

    def record(
        self,
        name: Any,
        seconds: float,
        args: tuple[Any, ...] = (),
        count: int = 1,
        inner: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """One round trip: a command, or a pipeline of ``count`` commands (``inner``)."""
        self.commands += count
        self.seconds += seconds
        if seconds > self.slowest_seconds:
            self.slowest_seconds = seconds
            self.slowest_name = name
        if self.watch:
            self.watch_command(name, seconds, args, inner)

    def watch_command(
        self, name: Any, seconds: float, args: tuple[Any, ...], inner: list[Any] | None
    ) -> None:
        """The rarer per-command work: the debug panel's trace, slow-command warnings."""
        if self.trace is not None:
            self.trace.append((name, args, seconds, inner))
        if self.slow_threshold is not None and seconds > self.slow_threshold:
            from .stats import warn_slow_command

            warn_slow_command(self, name, args, seconds)

    def hold(self, closer: Callable[[], Any]) -> None:
        """Remember how to give back a connection the request may keep.

        The first one also registers a finished callback on the request, which runs
        even when the view raised and no response was made (and for requests made by
        scripts, which see no ``NewResponse``).
        """
        if self.closers is None:
            self.closers = []
            request = self.request_ref()
            if request is not None:
                request.add_finished_callback(release_request)
        self.closers.append(closer)

    def release(self) -> None:
        """Give back every connection the request kept (idempotent)."""
        closers, self.closers = self.closers, None
        for close in closers or ():
            with contextlib.suppress(Exception):  # a broken connection is dropped
                close()

    @property
    def waited(self) -> float:
        return float(self.pool.wait_log.total - self.wait_start)


class AccountedPipeline(Pipeline):
    """A pipeline that records its round trip (all its commands) on the request."""

    _redisx_usage: Usage | None = None

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        usage = self._redisx_usage
        count = len(self.command_stack)
        if usage is None or not count:
            return super().execute(raise_on_error)
        inner = [args for args, _ in self.command_stack] if usage.trace is not None else None
        started = perf_counter()
        try:
            return super().execute(raise_on_error)
        finally:
            name = "MULTI" if self.transaction else "PIPELINE"  # type: ignore[truthy-function]
            usage.record(name, perf_counter() - started, (), count, inner)

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        usage = self._redisx_usage
        if usage is None:
            return super().immediate_execute_command(*args, **options)
        started = perf_counter()
        try:
            return super().immediate_execute_command(*args, **options)
        finally:
            usage.record(args[0], perf_counter() - started, args)


_Redis = redis.Redis


class AccountedRedis(redis.Redis):
    """``redis.Redis`` that records each command on the request it is bound to.

    The process-wide instance has no usage and behaves exactly like ``redis.Redis``.
    ``super().execute_command`` is called (not ``_execute_command``) so that
    instrumentation wrapping ``Redis.execute_command`` (OpenTelemetry) still runs.
    """

    _redisx_usage: Usage | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        # Looked up on redis.Redis at each call, so instrumentation that wraps
        # Redis.execute_command (OpenTelemetry) still runs; the accounting is inlined
        # (it runs for every command): about 0.1 µs.
        usage = self._redisx_usage
        if usage is None:
            return _Redis.execute_command(self, *args, **options)
        started = perf_counter()
        try:
            return _Redis.execute_command(self, *args, **options)
        finally:
            seconds = perf_counter() - started
            usage.commands += 1
            usage.seconds += seconds
            if seconds > usage.slowest_seconds:
                usage.slowest_seconds = seconds
                usage.slowest_name = args[0]
            if usage.watch:
                usage.watch_command(args[0], seconds, args, None)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> AccountedPipeline:
        pipe = AccountedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        usage = self._redisx_usage
        if usage is not None:
            pipe._redisx_usage = usage
            usage.hold(pipe.reset)
        return pipe

    def pubsub(self, **kwargs: Any) -> Any:
        pubsub = super().pubsub(**kwargs)
        if self._redisx_usage is not None:
            self._redisx_usage.hold(pubsub.close)
        return pubsub

    def monitor(self) -> Any:
        monitor = super().monitor()
        if self._redisx_usage is not None:
            self._redisx_usage.hold(lambda: monitor.__exit__(None, None, None))
        return monitor

    def client(self) -> Any:
        single = super().client()
        if self._redisx_usage is not None:
            self._redisx_usage.hold(single.close)
        return single

    def __repr__(self) -> str:
        # redis-py's repr shows the pool, whose repr redacts the password.
        return f"<{type(self).__name__}({self.connection_pool!r})>"


def release_request(request: Any) -> None:
    """Finished callback: give back the connections the request's clients still hold."""
    for client in (request.__dict__.get(BOUND) or {}).values():
        client._redisx_usage.release()


class ClientSet:
    """The clients of one app (kept on the registry): options, pools, clients by name."""

    def __init__(self, app: AppOptions) -> None:
        self.app = app
        self.options: dict[str, RedisOptions] = {}
        self.clients: dict[str, AccountedRedis] = {}
        self._pools: dict[RedisOptions, Any] = {}
        self._bound_classes: dict[str, type[AccountedRedis]] = {}  # of per-request copies

    def add(self, name: str, options: RedisOptions) -> None:
        """Declare client ``name``; equal options share one pool, others never do."""
        pool = self._pools.get(options)
        if pool is None:
            pool = self._pools[options] = build_pool(options)
        self.options[name] = options
        make_client = getattr(pool, "make_client", None)  # Cluster: pyramid_redisx.cluster
        client = make_client(name) if make_client else AccountedRedis(connection_pool=pool)
        self.clients[name] = client
        # Per-request copies share the process-wide client's attributes through a class
        # made for this client: a copy is then one object with one attribute (the usage).
        self._bound_classes[name] = type(
            f"{type(client).__name__}[{name}]", (type(client),), dict(vars(client))
        )
        pool.client_names = (*getattr(pool, "client_names", ()), name)

    def client(self, name: str = DEFAULT_CLIENT) -> AccountedRedis:
        try:
            return self.clients[name]
        except KeyError:
            raise LookupError(
                f"no Redis client named {name!r}; declared: {', '.join(self.clients) or 'none'}"
            ) from None

    def bind(self, name: str, request: Any, state: dict[str, Any]) -> AccountedRedis:
        """A copy of client ``name`` that records on ``request`` (< 1 µs, no connection).

        ``state`` is ``request.__dict__``: read once by the caller, because every
        attribute lookup on a Pyramid request with request methods walks the MRO of a
        class made for that request alone (~0.3 µs each).
        """
        try:
            bound_class = self._bound_classes[name]
        except KeyError:
            self.client(name)  # raises the LookupError that names the declared clients
            raise
        bound = object.__new__(bound_class)
        usage = Usage(
            name,
            self.options[name],
            self.clients[name].connection_pool,
            state.get("environ"),
            ref(request),
        )
        if TRACE in state:
            usage.trace = []
            usage.watch = True
        bound._redisx_usage = usage
        return bound

    def pools(self) -> dict[str, Any]:
        """Pool of each client, by client name."""
        return {name: client.connection_pool for name, client in self.clients.items()}

    def close(self) -> None:
        """Disconnect every pool (tests, scripts that are done)."""
        for pool in self._pools.values():
            pool.disconnect()
