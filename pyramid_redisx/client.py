"""Clients: one process-wide client per name, and a cheap per-request copy that counts.

Constructing a ``redis.Redis`` costs ~100 µs (it copies a large response-callback
table), so each named client is built once per process (``ClientSet.add``). A request
gets a *copy* of that client's attributes (~1 µs) carrying a ``Usage`` that records
the request's commands. With ``request_connection`` (the default) the copy checks a
connection out at its first command and keeps it until the request ends, so a view
that runs N commands pays one checkout; pipelines of the request run on it too.

Commands run through ``_execute_command`` (redis-py's own is replaced, not wrapped),
so instrumentation that wraps ``Redis.execute_command`` (OpenTelemetry) still sees
each one. A connection error after a command that can change data was sent raises
``CommandMayHaveBeenApplied`` instead of sending it again (``retry_writes`` opts out).
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable
from threading import get_ident
from time import monotonic, perf_counter
from types import FunctionType
from typing import Any
from weakref import ref

import redis
from redis.client import CaseInsensitiveDict, Monitor, Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import WatchError
from redis.observability.recorder import is_enabled as observability_enabled

from . import client_cache
from .client_cache import CachedUsage, ClientCache
from .errors import is_error_reply
from .pools import NoQueue
from .pubsub import SubscribedPubSub
from .retries import (
    may_have_been_applied,
    pipeline_may_have_been_applied,
    pipeline_sent_again,
    reads_only,
)
from .settings import DEFAULT_CLIENT, AppOptions, RedisOptions
from .topology import build_pool
from .usage import ENDED, IN_TWEEN, TRACE, USAGES, Usage

STATE = "pyramid_redisx_clients"  # registry attribute holding the ClientSet


def client_set(registry: Any) -> ClientSet:
    """The app's ``ClientSet``; a clear error when the add-on was not included."""
    clients = getattr(registry, STATE, None)
    if clients is None:
        raise RuntimeError(
            "pyramid_redisx is not configured on this registry: "
            'call config.include("pyramid_redisx") (or add it to pyramid.includes)'
        )
    return clients  # type: ignore[no-any-return]


class AccountedPubSub(SubscribedPubSub):
    """A request's ``PubSub``: redis-py's (with pubsub.py's rule for a dropped
    subscription), noting the thread that used it last, so that the end of the request
    closes it only if no other thread has used it since."""

    _redisx_thread: int | None = None

    def execute_command(self, *args: Any) -> Any:
        self._redisx_thread = get_ident()
        return super().execute_command(*args)

    def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        self._redisx_thread = get_ident()
        return super().parse_response(block, timeout)


class OnceMonitor(Monitor):
    """``Monitor`` whose ``__exit__`` gives its connection back once: redis-py's
    releases it again on a second call, and two later checkouts then share it. It is
    disconnected first: a connection that ran MONITOR accepts no other command."""

    _redisx_thread: int | None = None

    def next_command(self) -> Any:
        self._redisx_thread = get_ident()
        return super().next_command()

    def __exit__(self, *args: Any) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.disconnect()
            self.connection_pool.release(connection)

    def close(self) -> None:
        self.__exit__()

    def __del__(self) -> None:  # as Pipeline and PubSub: a dropped monitor gives it back
        with contextlib.suppress(Exception):
            self.__exit__()


_plain_execute: list[Any] = [None]  # redis-py's Pipeline.execute, once seen unwrapped


def _execute_wrapped() -> bool:
    """True when something wrapped or replaced redis-py's ``Pipeline.execute``
    (OpenTelemetry, Sentry, ddtrace), before or after this module was imported: then
    pipelines run through it, for it to see them."""
    execute = Pipeline.execute
    plain = (
        type(execute) is FunctionType  # a wrapt proxy is not, whatever it forwards
        and execute.__module__ == "redis.client"
        and execute.__qualname__ == "Pipeline.execute"
    )
    if plain:
        _plain_execute[0] = execute
    return not plain


def closed_while_idle(connection: Any) -> bool:
    """True when a connected socket has something to read before a command was sent:
    the server closed it (or left unread data) while it sat idle. One ``poll`` of the
    socket, kept on the connection (~0.5 µs); the pool's checkout does the same check."""
    sock = connection._sock
    if sock is None:
        return False  # not connected: the send connects first
    polled = connection.__dict__.get("_redisx_poll")
    if polled is None or polled[0] is not sock:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        polled = connection._redisx_poll = (sock, poller)
    return bool(polled[1].poll(0))


class AccountedPipeline(Pipeline):
    """A pipeline that records its round trip (all its commands) on the request and
    raises ``CommandMayHaveBeenApplied`` instead of sending writes again.

    Ownership (docs/usage.rst, "One owner per connection"): without WATCH, run by the
    request's thread, it runs on the request's connection, which ``reset`` leaves with
    the request (the round trip is over before anything else can use it). A WATCH in the
    request's thread takes the request's connection over (or one from the pool) and keeps
    it, alone, until ``reset`` gives it back to the pool; the request's next command
    takes another. Other threads and ``client()``'s pipelines take one from the pool, as
    redis-py does. A WATCH pipeline whose connection is reconnected raises ``WatchError``.
    """

    _redisx_usage: Usage | None = None
    _redisx_retry_writes = False
    _redisx_observed = False  # redis-py's own metrics (observability) are on
    _redisx_seconds = 0.0
    _redisx_shares = True  # may run on the request's connection (not client()'s)
    _redisx_thread: int | None = None  # the thread that used it last (Usage.finish)
    _redisx_guarded: Any = None  # the watching connection whose reconnect raises
    _redisx_observer: Any = None  # telemetry.Observer; None when telemetry is off
    _redisx_cache: Any = None  # client_cache.ClientCache; None when the cache is off
    _redisx_wait_start = 0.0

    def _redisx_waited(self) -> float:
        """Seconds this pipeline's thread waited for a connection since execute began."""
        usage = self._redisx_usage
        if usage is None:
            return 0.0
        return float(usage.pool.wait_log.total - self._redisx_wait_start)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        usage = self._redisx_usage
        stack = self.command_stack
        count = len(stack)
        if usage is None or not count:
            if count and self._redisx_observer is not None:  # the process-wide client's
                return self._redisx_execute_observed(raise_on_error)
            return super().execute(raise_on_error)
        me = self._redisx_thread = get_ident()
        observer = self._redisx_observer  # telemetry: None when off
        if observer is not None:
            started = perf_counter()
            self._redisx_wait_start = usage.pool.wait_log.total
        failed = None
        if self.connection is None and usage.thread == me and self._redisx_shares:
            # The request's own connection; redis-py's execute runs on it, and reset()
            # leaves it with the request. Other threads: redis-py takes one from the pool.
            self.connection = usage.connection or usage.checkout()
        inner = [args for args, _ in stack] if usage.trace is not None else None
        self._redisx_seconds = 0.0
        try:
            if (
                self._redisx_observed  # redis-py's metrics are on: its execute records them
                or (Pipeline.execute is not _plain_execute[0] and _execute_wrapped())
                or self.scripts
                or self.watching
            ):
                return super().execute(raise_on_error)
            # redis-py's Pipeline.execute less its metrics calls, which cost ~2 µs a
            # pipeline with metrics off (record_operation_duration looks for a
            # collector on every call); the same retry, the same reset.
            if self.transaction or self.explicit_transaction:  # type: ignore[truthy-function]
                run = self._execute_transaction
            else:
                run = self._execute_pipeline
            conn = self.connection
            if conn is None:
                conn = self.connection = self.connection_pool.get_connection()
            try:
                return conn.retry.call_with_retry(  # type: ignore[no-any-return]
                    lambda: run(conn, stack, raise_on_error), lambda error: conn.disconnect()
                )
            finally:
                self.reset()
        except BaseException as error:
            failed = error
            raise
        finally:  # one round trip of ``count`` commands
            name = "MULTI" if self.transaction else "PIPELINE"  # type: ignore[truthy-function]
            usage.record(name, self._redisx_seconds, (), count, inner)
            if observer is not None:  # telemetry: the pipeline's span and metrics
                # the connection it was sent on (a WATCH pipeline's is gone after reset)
                sent_on = self.__dict__.pop("_redisx_sent_on", None) or usage.connection
                observer.pipeline(
                    [args for args, _ in stack], name == "MULTI", started,
                    self._redisx_waited(), failed, sent_on,
                )  # fmt: skip

    def _redisx_execute_observed(self, raise_on_error: bool) -> list[Any]:
        """A pipeline of the process-wide client (scripts, workers: no request to account
        to) with telemetry on: redis-py's execute, with its span and metrics."""
        stack = [args for args, _ in self.command_stack]
        transaction = bool(self.transaction)
        started = perf_counter()
        failed = None
        try:
            return super().execute(raise_on_error)
        except BaseException as error:
            failed = error
            raise
        finally:
            connection = self.__dict__.pop("_redisx_sent_on", None)  # (_redisx_send)
            self._redisx_observer.pipeline(stack, transaction, started, 0.0, failed, connection)

    def reset(self) -> None:  # type: ignore[override]
        connection = self.connection
        if connection is None and not (
            self.command_stack or self.scripts or self.watching or self.explicit_transaction
        ):
            return  # nothing to reset: a pipeline that execute() reset, being collected
        guarded = self._redisx_guarded
        if guarded is not None:  # before redis-py's UNWATCH, which may reconnect (8.1)
            self._redisx_guarded = None
            guarded.deregister_connect_callback(self._redisx_lost_watch)
        usage = self._redisx_usage
        if usage is None or connection is None or connection is not usage.connection:
            # Its own connection (WATCH, another thread, client()): redis-py's reset,
            # UNWATCH on it and back to the pool, whichever thread runs it.
            return super().reset()
        # The request's connection, which only an execute() in the request's thread ran
        # on (never a WATCH): it stays with the request.
        self.connection = None
        super().reset()
        if usage.queue.waiting:
            usage.give_back()

    def _redisx_lost_watch(self, connection: Any) -> None:
        """Connect callback of a watching pipeline's connection: it was reconnected, so
        its WATCHes are gone. Raised as redis-py raises for a connection error while
        watching: the transaction must be retried, never committed unwatched."""
        self.reset()
        raise WatchError("The connection was lost and reconnected while watching one or more keys")

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: Any) -> Any:
        run = super()._execute_transaction
        return self._redisx_send(run, "a MULTI/EXEC transaction", connection, commands, raise_on_error)  # fmt: skip

    def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: Any) -> Any:
        run = super()._execute_pipeline
        return self._redisx_send(run, "a pipeline", connection, commands, raise_on_error)

    def _redisx_send(
        self, run: Any, what: str, connection: Any, commands: Any, raise_on_error: Any
    ) -> Any:
        """redis-py's ``_execute_pipeline`` / ``_execute_transaction`` (``run``), raising
        ``CommandMayHaveBeenApplied`` instead of letting a write be sent again."""
        # Connect and health-check first: an error there is before anything was sent
        # (retried as usual); after it, the server may have run any complete command. A
        # connection the server closed while idle is replaced first (a WATCH pipeline's
        # then raises WatchError: its WATCH went with the old connection).
        if commands and closed_while_idle(connection):
            connection.disconnect()
        if not connection.is_connected:
            connection.connect()
        connection.check_health()
        # redis-py moves the health-check deadline after every reply; moving it once
        # after the last one sets the same deadline (~0.15 µs a reply less).
        interval = connection.health_check_interval
        started = perf_counter()
        observer = self._redisx_observer  # telemetry: None when off
        if observer is not None:
            observer.enrich_pipeline(self._redisx_waited())
            self._redisx_sent_on = connection  # for the span (redis-py's reset forgets it)
        try:
            if interval:
                connection.health_check_interval = 0
            return run(connection, commands, raise_on_error)
        except RedisConnectionError as exc:
            if pipeline_sent_again(self._redisx_retry_writes, exc, commands):
                raise
            connection.disconnect()
            raise pipeline_may_have_been_applied(what, commands, exc) from exc
        finally:
            if interval:
                connection.health_check_interval = interval
                connection.next_health_check = monotonic() + interval
            self._redisx_seconds += perf_counter() - started
            cache = self._redisx_cache  # client cache: None when off
            if cache is not None:  # sent: its writes drop what they name (read your writes)
                cache.wrote_commands(commands)

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        usage = self._redisx_usage
        observer = self._redisx_observer  # telemetry: None when off
        cache = self._redisx_cache  # client cache: None when off
        if usage is None and observer is None and cache is None:
            return super().immediate_execute_command(*args, **options)
        if usage is not None:
            me = self._redisx_thread = get_ident()
            if self.connection is None:
                # WATCH mode from here on: the pipeline owns a connection until reset. In
                # the request's thread it takes the request's over (no second connection
                # while it watches, unless the view runs plain commands meanwhile).
                if usage.thread == me and self._redisx_shares and usage.connection is not None:
                    self.connection, usage.connection = usage.connection, None
                else:
                    self.connection = self.connection_pool.get_connection()
                usage.hold(self)
        started = perf_counter()
        failed = None
        try:
            return super().immediate_execute_command(*args, **options)
        except Exception as error:
            failed = error
            raise
        finally:
            connection = self.connection
            if usage is not None:
                usage.record(args[0], perf_counter() - started, args)
                if self.watching and connection is not None and self._redisx_guarded is None:
                    self._redisx_guarded = connection
                    connection.register_connect_callback(self._redisx_lost_watch)
            if observer is not None:  # telemetry (outside any span of its)
                observer.command(connection, args[0], args, started, 0.0, failed, inside=False)
            if cache is not None and not reads_only(args[0]):  # drops what it names
                cache.wrote(args)

    def _send_command_parse_response(
        self, conn: Any, command_name: Any, *args: Any, **options: Any
    ) -> Any:
        if self.watching and not reads_only(command_name) and closed_while_idle(conn):
            conn.disconnect()  # its WATCH went with it: the reconnect raises WatchError
        if self._redisx_observer is not None:  # ours on the instrumentation's span, if any
            self._redisx_observer.enrich_command(0.0)
        return _send_safely(self, conn, command_name, args, options)


def _send_safely(
    client: Any, conn: Any, command_name: Any, args: tuple[Any, ...], options: dict[str, Any]
) -> Any:
    """Send one command and read its reply. An error while connecting or sending leaves
    the command unapplied (a partial command is never run), so it propagates to be
    retried; one while reading the reply is retried only for a command that reads. An
    error *reply* (``is_error_reply``) is the server's answer: it keeps its type."""
    if command_name in _HIMPORT:  # redis-py's special path: cannot tell sent from unsent
        try:
            return redis.Redis._send_command_parse_response(
                client, conn, command_name, *args, **options
            )
        except RedisConnectionError as exc:
            if client._redisx_retry_writes or is_error_reply(exc):
                raise
            raise may_have_been_applied(str(command_name), exc) from exc
    conn.send_command(*args, **options)
    try:
        return client.parse_response(conn, command_name, **options)
    except RedisConnectionError as exc:
        if (
            client._redisx_retry_writes
            or is_error_reply(exc)
            or reads_only(command_name)
            or getattr(client, "watching", False)  # redis-py's WatchError, as with redis-py
        ):
            raise
        conn.disconnect()
        raise may_have_been_applied(str(command_name), exc) from exc


def _observed(conn: Any, name: Any, seconds: float, error: Exception | None = None) -> None:
    """redis-py's own metrics of a command (``Redis._execute_command`` records them), for
    clients built while its observability was on: looked up in ``redis.client`` at each
    call, as redis-py does, so that what replaces them there sees our commands too."""
    host, port = getattr(conn, "host", None), getattr(conn, "port", None)
    if error is None:
        redis.client.record_operation_duration(  # type: ignore[attr-defined]
            command_name=name, duration_seconds=seconds, server_address=host,
            server_port=port, db_namespace=str(conn.db),
        )  # fmt: skip
    else:
        redis.client.record_error_count(  # type: ignore[attr-defined]
            server_address=host, server_port=port, network_peer_address=host,
            network_peer_port=port, error_type=error, retry_attempts=0, is_internal=False,
        )  # fmt: skip


_HIMPORT = frozenset(("HIMPORT", "HIMPORT SET", b"HIMPORT", b"HIMPORT SET"))


class AccountedRedis(redis.Redis):
    """``redis.Redis`` that records each command on the request it is bound to.

    The process-wide instance has no usage and behaves like ``redis.Redis`` except for
    the write-safe retry rule. ``_execute_command`` is replaced, not
    ``execute_command``, so instrumentation wrapping ``Redis.execute_command``
    (OpenTelemetry) still runs for every command.
    """

    _redisx_usage: Usage | None = None
    _redisx_retry_writes = False
    _redisx_observed = False  # redis-py's own metrics (observability) were on at build
    _redisx_copy = False  # True on the class of per-request copies
    _redisx_observer: Any = None  # telemetry.Observer; None when telemetry is off
    _redisx_request: Callable[[], Any] | None = None  # a lazy copy's request (weak)
    _redisx_shares = True  # its pipelines may use the request's connection (not client()'s)
    _redisx_thread: int | None = None  # client(): the thread that used it last
    _redisx_cache: Any = None  # client_cache.ClientCache (CachedRedis); None when off
    # Sends one command on a connection: ``_send_safely``, or the client cache's ``send``
    # (CachedRedis), which arms the connection for the cache's reads and keeps replies.
    _redisx_send = staticmethod(_send_safely)

    def _execute_command(self, *args: Any, **options: Any) -> Any:
        usage = self._redisx_usage
        pool: Any = self.connection_pool
        conn: Any = self.connection  # set for client(): a single-connection client
        name = args[0]
        lent = locked = False
        wait_log = waited = failed = None
        started = perf_counter()
        try:
            if conn is not None:
                if self._single_connection_client:
                    self.single_connection_lock.acquire()
                    locked = True
                    self._redisx_thread = get_ident()
                if not reads_only(name) and closed_while_idle(conn):
                    conn.disconnect()  # before a write: it goes on a new connection
            elif usage is None:
                conn = pool.get_connection()
                lent = True
            else:
                conn = usage.connection
                if conn is None or usage.thread != get_ident():
                    # A checkout: the wait for a free connection is not Redis time
                    # (connecting is), so it is taken off the command's time below.
                    wait_log = pool.wait_log
                    waited = wait_log.total
                    if usage.thread == get_ident():
                        conn = usage.checkout()
                    else:
                        conn = pool.get_connection()
                        lent = True
                elif closed_while_idle(conn):
                    # The request's connection, idle since its last command, closed by
                    # the server: replaced before anything is sent, as redis-py's pool
                    # checks a connection before lending it (with redis.retries = 0 a
                    # read would fail there; a write is never sent on it).
                    conn.disconnect()
            result = conn.retry.call_with_retry(
                lambda: self._redisx_send(self, conn, name, args, options),
                lambda error: conn.disconnect(),
            )
            if self._redisx_observed:
                _observed(conn, name, perf_counter() - started)
            return result
        except Exception as error:
            if self._redisx_observed and conn is not None:
                _observed(conn, name, perf_counter() - started, error)
            failed = error
            raise
        finally:
            observer = self._redisx_observer  # telemetry: None when off
            if observer is not None:
                wait = wait_log.total - waited if wait_log is not None else 0.0
                observer.command(conn, name, args, started, wait, failed)
            if usage is not None:
                seconds = perf_counter() - started
                if wait_log is not None:
                    seconds -= wait_log.total - waited
                usage.commands += 1
                usage.seconds += seconds
                if seconds > usage.slowest_seconds:
                    usage.slowest_seconds = seconds
                    usage.slowest_name = name
                if usage.watch:
                    usage.watch_command(name, seconds, args, None)
            if lent:
                pool.release(conn)
            elif locked:
                self.single_connection_lock.release()
            elif usage is not None and usage.queue.waiting:
                usage.give_back()

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> AccountedPipeline:
        usage = self._redisx_usage
        pipe = AccountedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        if self._redisx_retry_writes:
            pipe._redisx_retry_writes = True
        if self._redisx_observed:
            pipe._redisx_observed = True
        if self._redisx_cache is not None:  # its writes drop what they name in the cache
            pipe._redisx_cache = self._redisx_cache
        if self._redisx_observer is not None:  # telemetry
            pipe._redisx_observer = self._redisx_observer
        if usage is not None:
            pipe._redisx_usage = usage
            if not self._redisx_shares:
                pipe._redisx_shares = False
        return pipe

    def pubsub(self, **kwargs: Any) -> Any:
        # redis.Redis.pubsub's own call, with a pubsub that raises when the server drops a
        # subscription instead of resuming it silently through the retries (pubsub.py)
        pubsub = SubscribedPubSub(
            self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs
        )
        if self._redisx_usage is not None:
            pubsub.__class__ = AccountedPubSub  # redis-py's object, noting who uses it
            self._redisx_usage.hold(pubsub)
        return pubsub

    def monitor(self) -> Any:
        monitor = OnceMonitor(self.connection_pool)
        if self._redisx_usage is not None:
            self._redisx_usage.hold(monitor)
        return monitor

    def client(self) -> Any:
        """A client on a connection of its own, counted on the request like this one."""
        cls: Any = type(self)
        if self._redisx_copy:  # a per-request copy: its class's base
            cls = cls.__bases__[0]  # (the copy's class keeps no connection at __del__)
        single = cls(connection_pool=self.connection_pool, single_connection_client=True)
        single._redisx_retry_writes = self._redisx_retry_writes
        if self._redisx_cache is not None:  # the client cache serves it, sees its writes
            single._redisx_cache, single._redisx_served = self._redisx_cache, self._redisx_served
        usage = self._redisx_usage
        if usage is not None:
            single._redisx_usage = usage
            single._redisx_shares = False  # its pipelines never use the request's connection
            usage.hold(single)
        return single

    def set_response_callback(self, command: str, callback: Any) -> None:
        """On a request's client, changes that request's callbacks only (a copy of the
        table, ~20 µs, made at the first call); on the process-wide client, every later
        request's, as with plain redis-py."""
        if self._redisx_usage is not None and "response_callbacks" not in vars(self):
            self.response_callbacks = CaseInsensitiveDict(self.response_callbacks)
            if self._redisx_cache is not None:
                # Its replies are its own: none served or kept (its writes still drop
                # what they name).
                self._redisx_served: frozenset[Any] = frozenset()
        elif self._redisx_cache is not None:
            self._redisx_cache.clear()  # every later reply is parsed the new way
        self.response_callbacks[command] = callback

    def __repr__(self) -> str:
        # redis-py's repr shows the pool, whose repr redacts the password.
        return f"<{type(self).__name__}({self.connection_pool!r})>"


class CachedRedis(AccountedRedis):
    """``AccountedRedis`` of a client with ``client_cache``: the reads the cache serves
    are answered from process memory (``client_cache.execute_command``); the others, and
    the misses, run ``AccountedRedis._execute_command`` with the cache's ``send``."""

    _execute_command = client_cache.execute_command  # type: ignore[assignment]
    _redisx_served: frozenset[Any] = frozenset()  # the cache's commands (ClientSet.add)
    _redisx_uncached = AccountedRedis._execute_command
    _redisx_send = staticmethod(client_cache.send)
    _redisx_plain_send = staticmethod(_send_safely)


class StartUsage:
    """``_redisx_usage`` of a per-request copy until its first use: makes the copy's
    ``Usage`` then (so a request that never runs a command pays for none) and notes it
    on the request, whose end gives back what it holds and writes its line."""

    def __init__(self, usage_class: type[Usage]) -> None:
        self.usage_class = usage_class

    def __get__(self, client: Any, owner: Any = None) -> Any:
        if client is None:
            return None
        request = client._redisx_request()
        return self.start(client, request, request.__dict__ if request is not None else {})

    def start(self, client: Any, request: Any, state: dict[str, Any]) -> Usage:
        usage = self.usage_class(state.get("environ"), request, state.get(IN_TWEEN))
        if TRACE in state:
            usage.trace = []
            usage.watch = True
        usages = state.get(USAGES)
        if usages is None:
            state[USAGES] = [usage]
        elif usages is ENDED or request is None:  # after the request's end: none kept
            usage.thread = None
        else:
            usages.append(usage)
        client._redisx_usage = usage  # in the copy's __dict__, found before this
        return usage

    bind = start  # ClientSet.bind: a view is about to use the copy


class CachedStartUsage(StartUsage):
    """``StartUsage`` of a client with ``client_cache``: a copy a view is about to use
    still gets no ``Usage`` (unless the toolbar traces the request), since a read the
    cache answers needs none; the first command makes it, with the hits before it."""

    def start(self, client: Any, request: Any, state: dict[str, Any]) -> Usage:
        usage = super().start(client, request, state)
        usage.cache_hits = client.__dict__.pop("_redisx_hits", 0)
        return usage

    def bind(self, client: Any, request: Any, state: dict[str, Any]) -> Usage | None:  # type: ignore[override]
        if TRACE in state:
            return self.start(client, request, state)
        client._redisx_request = ref(request)
        client._redisx_hits = 0  # hits counted on the copy (client_cache.execute_command)
        return None


def _end_copy(client: Any) -> None:
    """``__del__`` of a per-request copy, which owns neither a connection nor the pool
    (redis-py's ``close`` would find that out at some cost). Safety net for a request
    that ended without NewResponse, tween or finished callback reaching us (a
    NewResponse subscriber that raised before ours): give back what its usage holds."""
    usage = client.__dict__.get("_redisx_usage")
    if usage is not None and (usage.connection is not None or usage.held):
        usage.finish()


class ClientSet:
    """The clients of one app (kept on the registry): options, pools, clients by name."""

    def __init__(self, app: AppOptions) -> None:
        self.app = app
        self.options: dict[str, RedisOptions] = {}
        self.clients: dict[str, AccountedRedis] = {}
        self._pools: dict[RedisOptions, Any] = {}
        self._bound_classes: dict[str, type[AccountedRedis]] = {}  # of per-request copies
        self._starters: dict[str, StartUsage] = {}
        self.caches: dict[str, ClientCache] = {}  # by client name, with client_cache on
        self._caches: dict[RedisOptions, ClientCache] = {}  # one per pool

    def add(self, name: str, options: RedisOptions) -> None:
        """Declare client ``name``; equal options share one pool, others never do."""
        pool = self._pools.get(options)
        if pool is None:
            pool = self._pools[options] = build_pool(options)
        self.options[name] = options
        make_client = getattr(pool, "make_client", None)  # Cluster: pyramid_redisx.cluster
        cache = None
        if options.client_cache:  # settings refuse it with Cluster
            cache = self._caches.get(options)
            if cache is None:
                cache = self._caches[options] = ClientCache(options, pool)
            self.caches[name] = cache
        if make_client:
            client = make_client(name)
        elif cache is not None:
            client = CachedRedis(connection_pool=pool)
            client._redisx_cache = cache
            client._redisx_served = cache.served
        else:
            client = AccountedRedis(connection_pool=pool)
        client._redisx_retry_writes = options.retry_writes
        client._redisx_observed = observability_enabled()
        self.clients[name] = client
        usage_class = type(
            f"Usage[{name}]",
            (Usage if cache is None else CachedUsage,),
            {
                "cache": cache,
                "name": name,
                "options": options,
                "pool": pool,
                # A cluster client routes each command to a node: no request connection.
                "keep_connection": options.request_connection and make_client is None,
                "queue": getattr(pool, "pool", NoQueue),
                "watch": options.slow_command is not None,
                "server_timing": self.app.server_timing,
                "stats": options.stats,
            },
        )
        starter = self._starters[name] = (StartUsage if cache is None else CachedStartUsage)(
            usage_class
        )
        # Per-request copies share the process-wide client's attributes through a class
        # made for this client: a copy is then one object with one attribute (a weak
        # reference to its request), and gets its Usage at its first use.
        self._bound_classes[name] = type(
            f"{type(client).__name__}[{name}]",
            (type(client),),
            {**vars(client), "_redisx_usage": starter, "__del__": _end_copy, "_redisx_copy": True},
        )
        pool.client_names = (*getattr(pool, "client_names", ()), name)
        pool.usage_classes = (*getattr(pool, "usage_classes", ()), usage_class)

    def client(self, name: str = DEFAULT_CLIENT) -> AccountedRedis:
        try:
            return self.clients[name]
        except KeyError:
            if not self.clients:  # asked for during the configuration, before its commit
                raise LookupError(
                    f"no Redis client named {name!r} yet: clients are made when the "
                    "configuration is committed (config.commit() or make_wsgi_app())"
                ) from None
            raise LookupError(
                f"no Redis client named {name!r}; declared: {', '.join(self.clients)}"
            ) from None

    def bind(self, name: str, request: Any, state: dict[str, Any] | None = None) -> AccountedRedis:
        """A copy of client ``name`` for ``request`` (< 1 µs, no connection). With the
        request's ``state`` (its ``__dict__``: a view is about to use the copy) it
        gets its ``Usage`` now, else at its first use."""
        try:
            bound_class = self._bound_classes[name]
        except KeyError:
            self.client(name)  # raises the LookupError that names the declared clients
            raise
        bound = object.__new__(bound_class)
        if state is not None:
            self._starters[name].bind(bound, request, state)
        else:
            bound._redisx_request = ref(request)
        return bound

    def observe(self, name: str, observer: Any) -> None:
        """Telemetry (telemetry.py): ``observer`` sees client ``name``'s commands, on the
        process-wide client, its per-request copies and their requests' ``Usage``."""
        self.clients[name]._redisx_observer = observer
        self._bound_classes[name]._redisx_observer = observer
        self._starters[name].usage_class.observer = observer

    def pools(self) -> dict[str, Any]:
        """Pool of each client, by client name."""
        return {name: client.connection_pool for name, client in self.clients.items()}

    def close(self) -> None:
        """Disconnect every pool (tests, scripts that are done), stop the client caches."""
        for cache in self._caches.values():
            cache.close()
        for pool in self._pools.values():
            pool.disconnect()
