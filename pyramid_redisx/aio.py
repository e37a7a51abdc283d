"""``get_async_redis``: a ``redis.asyncio`` client built from the same parsed options.

    async def handler(registry):
        client = get_async_redis(registry, "default")
        await client.incr("hits")
    ...
    await close_async_redis(registry)   # before the event loop ends (e.g. ASGI shutdown)

asyncio connections belong to the event loop that opened them, so there is one client
(and one pool) per event loop and client name, built on first use in that loop from the
client's parsed options: URL, credentials, db, TLS, timeouts, retries, pool size and
blocking, ``decode_responses``, ``client_name``, RESP protocol.

Fork: redis-py's asyncio pools do not check the process id as its sync pools do. Here
the clients are kept per process: in a child (gunicorn worker, multiprocessing) the
first call builds new ones and never touches the parent's connections.

Sentinel (``redis.sentinels``): a client of the master that the Sentinels name, through
``redis.asyncio.sentinel``. Cluster (``redis.cluster``): ``redis.asyncio.RedisCluster``
from the node in ``redis.url``, ``max_connections`` per node. Neither pool waits when
full (redis-py's asyncio Sentinel and Cluster pools have no blocking variant). Every
client follows the write-safe retry rule of the sync ones (docs/retries.rst).
"""

from __future__ import annotations

import asyncio
import os
from asyncio import current_task
from typing import Any

import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from .breaker import CLOSED, NO_BREAKER, NoBreaker, breaker_of
from .client import client_set
from .cluster import (
    READING,
    SENDING,
    after_send,
    count_redirection,
    marking,
    pipeline_not_sent_again,
)
from .errors import is_error_reply
from .pools import connection_kwargs
from .pubsub import SubscribedAsyncPubSub
from .retries import (
    connects_only,
    may_have_been_applied,
    pipeline_may_have_been_applied,
    pipeline_sent_again,
    reads_only,
    retry_arguments,
    retryable,
)
from .sentinel import sentinel_kwargs
from .settings import DEFAULT_CLIENT, RedisOptions

_STATE = "pyramid_redisx_async"  # registry attribute: _AsyncClients


class _AsyncClients:
    """The async clients of one registry in one process, by event loop and name.

    A client's connections refer to their loop, so a loop can never be a weak key here:
    each loop's clients are closed when the loop shuts down instead. ``asyncio.run`` (and
    every runner that calls ``loop.shutdown_asyncgens()``) closes the async generators
    the loop has seen; one per loop waits for that to close the loop's clients. A loop
    closed without it (by hand) is forgotten at the next call from another loop, and its
    clients' sockets go with them.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.by_loop: dict[Any, dict[str, Any]] = {}
        self.closers: dict[Any, Any] = {}  # loop → its async generator (close_at_shutdown)

    def clients_of(self, loop: Any) -> dict[str, Any]:
        clients = self.by_loop.get(loop)
        if clients is None:
            self.forget_closed_loops()
            clients = self.by_loop[loop] = {}
            self.close_at_shutdown(loop)
        return clients

    def close_at_shutdown(self, loop: Any) -> None:
        """Close ``loop``'s clients when it shuts down its async generators."""

        async def closer() -> Any:
            try:
                yield
            finally:
                self.closers.pop(loop, None)
                # Never in a forked child (the garbage collector finalizes a copy of this
                # generator there): closing the parent's clients would unregister their
                # sockets from the event loop's epoll, which parent and child share.
                if os.getpid() == self.pid and not loop.is_closed():
                    await _close_all(self.by_loop.pop(loop, {}))

        agen = self.closers[loop] = closer()

        async def start() -> None:  # the loop's asyncgen hooks see it from its first step
            await agen.__anext__()

        loop.create_task(start())

    def forget_closed_loops(self) -> None:
        for loop in [loop for loop in self.by_loop if loop.is_closed()]:
            del self.by_loop[loop]
            # Its closer goes unfinished: asyncio's finalizer of an async generator does
            # nothing for a closed loop (BaseEventLoop._asyncgen_finalizer_hook).
            self.closers.pop(loop, None)


async def _close_all(clients: dict[str, Any]) -> None:
    for client in clients.values():
        await client.aclose()
        for sentinel in getattr(client, "pyramid_redisx_sentinels", ()):
            await sentinel.aclose()


class WriteSafeAsyncRetry(Retry):
    """The asyncio ``Retry`` that, as the sync one (``retries.WriteSafeRetry``), never
    retries a command that may have been applied (``CommandMayHaveBeenApplied``), and is
    the circuit breaker's gate (``breaker``, the sync pool's of the same client name):
    every connect, command and pipeline of a standalone or Sentinel client passes here."""

    breaker: NoBreaker = NO_BREAKER  # shared by each connection's (deep) copy

    async def call_with_retry(
        self, do: Any, fail: Any, is_retryable: Any = None, with_failure_count: bool = False
    ) -> Any:
        # redis-py's asyncio loop (redis.asyncio.retry.Retry.call_with_retry, 8.1 and
        # 8.2), written out as the sync WriteSafeRetry does, with the breaker's steps;
        # the half-open probe belongs to this task (an event loop's tasks share a thread).
        breaker = self.breaker
        me = current_task()
        probe = breaker.dirty and breaker.enter(me)  # breaker: RedisCircuitOpen while open
        failures = 0
        while True:
            try:
                result = await do()
            except self._supported_errors as error:
                if (
                    probe  # breaker: the half-open probe is tried once
                    or not retryable(error)
                    or (is_retryable is not None and not is_retryable(error))
                ):
                    breaker.failed(error, probe, me)  # breaker: counts failures to reach
                    raise
                failures += 1
                if with_failure_count:
                    await fail(error, failures)
                else:
                    await fail(error)
                if (self._retries >= 0 and failures > self._retries) or (
                    breaker.dirty and breaker.state != CLOSED  # breaker: open, or probing
                ):
                    breaker.failed(error, me=me)  # breaker: and stops retrying once open
                    raise error
                if failures == 1:
                    self._backoff.reset()
                pause = self._backoff.compute(failures)
                if pause > 0:
                    await asyncio.sleep(pause)
            except BaseException as error:
                breaker.failed(error, probe, me)  # breaker: a timeout not retried counts too
                raise
            else:
                if breaker.dirty:  # breaker: closes, or clears the count
                    if connects_only(do):
                        breaker.connected_only(probe, me)  # not yet an answer
                    else:
                        breaker.succeeded(probe, me)
                return result


def async_retry(options: RedisOptions, breaker: NoBreaker = NO_BREAKER) -> Retry:
    """The sync pools' policy: connection errors; timeouts only if asked; no write twice;
    gated by ``breaker``."""
    policy = WriteSafeAsyncRetry(**retry_arguments(options))
    policy.breaker = breaker
    return policy


async def _guarded(breaker: NoBreaker, call: Any, *args: Any, **kwargs: Any) -> Any:
    """``await call(*args, **kwargs)`` through ``breaker``'s gate (``breaker.guarded``'s
    asyncio twin): for the Cluster client's own loops, which its node connections' retry
    policy (redis-py's, no retries) never gates."""
    me = current_task()
    probe = breaker.dirty and breaker.enter(me)
    try:
        result = await call(*args, **kwargs)
    except BaseException as error:
        breaker.failed(error, probe, me)
        raise
    if breaker.dirty:
        breaker.succeeded(probe, me)
    return result


async def _connected(connection: Any) -> None:
    """Connect first: an error there is before anything was sent (retried as usual)."""
    if not connection.is_connected:
        await connection.connect()


class WriteSafeAsyncPipeline(redis.asyncio.client.Pipeline):
    """A pipeline or MULTI/EXEC with a write is not sent again after the connection failed
    once it was sent: ``CommandMayHaveBeenApplied`` instead (``retry_writes`` opts out)."""

    redisx_retry_writes = False

    async def _execute_transaction(
        self, connection: Any, commands: Any, raise_on_error: Any
    ) -> Any:
        run = super()._execute_transaction
        return await self._send_safely(run, "a MULTI/EXEC transaction", connection, commands, raise_on_error)  # fmt: skip

    async def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: Any) -> Any:
        run = super()._execute_pipeline
        return await self._send_safely(run, "a pipeline", connection, commands, raise_on_error)

    async def _send_safely(
        self, run: Any, what: str, connection: Any, commands: Any, raise_on_error: Any
    ) -> Any:
        await _connected(connection)
        try:
            return await run(connection, commands, raise_on_error)
        except RedisConnectionError as exc:
            if pipeline_sent_again(self.redisx_retry_writes, exc, commands):
                raise
            await connection.disconnect()
            raise pipeline_may_have_been_applied(what, commands, exc) from exc


class WriteSafeAsyncRedis(redis.asyncio.Redis):
    """``redis.asyncio.Redis`` with the sync clients' write-safe retry rule."""

    redisx_retry_writes = False

    async def _send_command_parse_response(
        self, conn: Any, command_name: Any, *args: Any, **options: Any
    ) -> Any:
        await _connected(conn)
        try:
            return await super()._send_command_parse_response(conn, command_name, *args, **options)
        except RedisConnectionError as exc:
            if self.redisx_retry_writes or is_error_reply(exc) or reads_only(command_name):
                raise
            await conn.disconnect()
            raise may_have_been_applied(str(command_name), exc) from exc

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = WriteSafeAsyncPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.redisx_retry_writes = self.redisx_retry_writes
        return pipe

    def pubsub(self, **kwargs: Any) -> Any:
        """A pubsub that raises when the server drops its subscription (pubsub.py)."""
        return SubscribedAsyncPubSub(
            self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs
        )


# ------------------------------------------------ Cluster: the write-safe retry rule
# As the sync Cluster client (cluster.py): node connections mark an error with the stage
# it happened in, and redis-py's loops send again only what cannot have run or only reads.
_SENT_ERRORS = (RedisConnectionError, redis.TimeoutError)


class _AsyncStageMarking(redis.asyncio.Connection):
    """An asyncio node connection whose errors say whether a command was being sent or
    its reply read (``redisx_stage``); errors while connecting or health-checking carry
    none."""

    _redisx_awaiting = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not check_health:  # the health check's own PING
            await super().send_packed_command(command, check_health=False)
            return
        self._redisx_awaiting = False
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        await self.check_health()
        try:
            await super().send_packed_command(command, check_health=False)
        except _SENT_ERRORS as error:
            error.redisx_stage = SENDING  # type: ignore[union-attr]
            raise
        self._redisx_awaiting = True

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        awaiting = self._redisx_awaiting  # (redis-py disconnects before it raises)
        try:
            return await super().read_response(*args, **kwargs)
        except _SENT_ERRORS as error:
            if awaiting and not is_error_reply(error):  # a reply is no lost connection
                error.redisx_stage = READING  # type: ignore[union-attr]
            raise
        except (redis.exceptions.MovedError, redis.exceptions.AskError) as error:
            count_redirection(error)  # telemetry
            raise

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self._redisx_awaiting = False
        await super().disconnect(*args, **kwargs)


class _WriteSafeAsyncPipelineStrategy(redis.asyncio.cluster.PipelineStrategy):
    """redis-py's loop, except that a pipeline of which anything was sent is sent again
    only if that is safe (redis-py sends its failed commands again)."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        breaker = getattr(self._pipe.cluster_client, "_redisx_breaker", NO_BREAKER)
        return await _guarded(breaker, self._execute_safely, raise_on_error, allow_redirections)

    async def _execute_safely(self, raise_on_error: bool, allow_redirections: bool) -> Any:
        stack = self._command_queue
        if not stack:
            return []
        client = self._pipe.cluster_client
        try:
            retries = client.retry.get_retries()
            while True:
                try:
                    if client._initialize:
                        await client.initialize()
                    return await self._execute(
                        client, stack, raise_on_error=raise_on_error,
                        allow_redirections=allow_redirections,
                    )  # fmt: skip
                except redis.asyncio.cluster.RedisCluster.ERRORS_ALLOW_RETRY as error:
                    instead = pipeline_not_sent_again(client, stack, error)
                    if retries <= 0 or instead is error:
                        raise
                    if instead is not None:
                        raise instead from error
                    retries -= 1
                    await client.aclose()
                    await asyncio.sleep(0.25)
        finally:
            await self.reset()


class _WriteSafeAsyncTransactionStrategy(redis.asyncio.cluster.TransactionStrategy):
    """redis-py's MULTI/EXEC; once sent, not run again unless every command reads."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        breaker = getattr(self._pipe.cluster_client, "_redisx_breaker", NO_BREAKER)
        run = super().execute
        return await _guarded(breaker, run, raise_on_error, allow_redirections)

    async def _execute_transaction(self, stack: Any, raise_on_error: bool) -> Any:
        try:
            return await super()._execute_transaction(stack, raise_on_error)
        except _SENT_ERRORS as error:
            names = [c.args[0] for c in stack]
            client = self._pipe.cluster_client
            instead = after_send(client, names, error, "MULTI/EXEC", reply=False)
            if instead is None:
                raise
            raise instead from error


class WriteSafeAsyncCluster(redis.asyncio.RedisCluster):
    """``redis.asyncio.RedisCluster`` with the sync clients' write-safe retry rule."""

    _redisx_retry_writes = False
    _redisx_retry_on_timeout = False
    _redisx_breaker: NoBreaker = NO_BREAKER  # the sync client's circuit (breaker.py)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # One circuit for the client, around redis-py's loop (as the sync AccountedCluster)
        run = super().execute_command
        return await _guarded(self._redisx_breaker, run, *args, **kwargs)

    async def _execute_command(self, target_node: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._execute_command(target_node, *args, **kwargs)
        except _SENT_ERRORS as error:
            instead = after_send(self, [args[0]], error, reply=True)
            if instead is None:
                raise
            raise instead from error

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        strategy = pipe._execution_strategy
        strategy.__class__ = (
            _WriteSafeAsyncTransactionStrategy
            if isinstance(strategy, redis.asyncio.cluster.TransactionStrategy)
            else _WriteSafeAsyncPipelineStrategy
        )
        return pipe


_ASYNC_CONNECTIONS = {
    redis.Connection: redis.asyncio.Connection,
    redis.UnixDomainSocketConnection: redis.asyncio.UnixDomainSocketConnection,
    redis.SSLConnection: redis.asyncio.SSLConnection,
}


def async_pool_kwargs(options: RedisOptions, breaker: NoBreaker = NO_BREAKER) -> dict[str, Any]:
    """Arguments of a ``redis.asyncio`` pool for ``options`` (pure: tested without a server):
    the sync pools' connection arguments, with the asyncio connection class and retry
    (gated by ``breaker``)."""
    kwargs = connection_kwargs(options)
    kwargs["connection_class"] = _ASYNC_CONNECTIONS[kwargs["connection_class"]]
    kwargs["retry"] = async_retry(options, breaker)
    kwargs["max_connections"] = options.max_connections
    if options.blocking:
        kwargs["timeout"] = options.pool_timeout
    return kwargs


def build_async_client(options: RedisOptions, breaker: NoBreaker = NO_BREAKER) -> Any:
    """A new ``redis.asyncio.Redis`` owning a new pool, its calls gated by ``breaker``
    (``get_async_redis`` passes the sync client's). Opens no connection."""
    kwargs = async_pool_kwargs(options, breaker)
    if options.kind == "sentinel":
        return _sentinel_master(options, kwargs)
    if options.kind == "cluster":
        return _cluster(kwargs, options, breaker)
    pool_class = (
        redis.asyncio.BlockingConnectionPool if options.blocking else redis.asyncio.ConnectionPool
    )
    client: Any = WriteSafeAsyncRedis.from_pool(pool_class(**kwargs))
    client.redisx_retry_writes = options.retry_writes
    return client


def _cluster(kwargs: dict[str, Any], options: RedisOptions, breaker: NoBreaker) -> Any:
    # RedisCluster makes its own per-node pools and picks the (SSL) connection class,
    # which then marks its errors (write safety); no db but 0 (the settings say so).
    for name in ("connection_class", "timeout", "db"):
        kwargs.pop(name, None)
    client = WriteSafeAsyncCluster(ssl=options.scheme == "rediss", **kwargs)
    client._redisx_retry_writes = options.retry_writes
    client._redisx_retry_on_timeout = options.retry_on_timeout
    # redis-py gives node connections a retry policy of its own (no retries): the gate is
    # around the client's loops (execute_command, the pipelines' execute) instead, and in
    # the client's policy, which a MULTI/EXEC's WATCH and retries copy.
    client._redisx_breaker = breaker
    manager = client.nodes_manager
    marked = marking(_AsyncStageMarking, manager.connection_kwargs["connection_class"])
    manager.connection_kwargs["connection_class"] = marked
    for node in manager.startup_nodes.values():
        node.connection_class = marked
    return client


def _sentinel_master(options: RedisOptions, kwargs: dict[str, Any]) -> Any:
    # The Sentinels say where the master is: no host/port of our own; their pool class
    # picks the (SSL) connection class; it never blocks.
    for name in ("host", "port", "connection_class", "timeout"):
        kwargs.pop(name, None)
    if options.scheme == "rediss":
        kwargs["ssl"] = True
    # The Sentinels as the sync client reaches them (TLS with rediss://, its password, no
    # retry: the next one is asked), with asyncio's Retry.
    for_sentinels = {**sentinel_kwargs(options), "retry": Retry(NoBackoff(), 0)}
    assert options.sentinels is not None and options.sentinel_service is not None
    sentinel = Sentinel(list(options.sentinels), sentinel_kwargs=for_sentinels, **kwargs)
    client = sentinel.master_for(options.sentinel_service, redis_class=WriteSafeAsyncRedis)
    client.redisx_retry_writes = options.retry_writes
    client.pyramid_redisx_sentinels = sentinel.sentinels  # closed with the client
    return client


def get_async_redis(registry: Any, name: str = DEFAULT_CLIENT) -> Any:
    """The ``redis.asyncio`` client ``name`` of the running event loop (built once)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "get_async_redis must be called inside a running event loop: "
            "its client belongs to that loop"
        ) from None
    clients = _state(registry).clients_of(loop)
    client = clients.get(name)
    if client is None:
        options = client_set(registry).options.get(name)
        if options is None:
            client_set(registry).client(name)  # the LookupError naming the declared clients
        assert options is not None
        # one circuit per client name and process: the sync client's (breaker.py)
        breaker = breaker_of(client_set(registry).pools().get(name))
        client = clients[name] = build_async_client(options, breaker)
    return client


async def close_async_redis(registry: Any) -> None:
    """Close the running loop's clients of ``registry`` and their connections (the loop's
    shutdown does it too, under ``asyncio.run``)."""
    await _close_all(_state(registry).by_loop.pop(asyncio.get_running_loop(), {}))


def _state(registry: Any) -> _AsyncClients:
    state: _AsyncClients | None = getattr(registry, _STATE, None)
    if state is None or state.pid != os.getpid():
        # First use, or first use in a forked child: never reuse the parent's clients.
        state = _AsyncClients()
        setattr(registry, _STATE, state)
    return state
