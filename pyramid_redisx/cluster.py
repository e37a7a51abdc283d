"""Redis Cluster: redis-py's ``RedisCluster`` with our per-node pools and accounting.

* Every node gets one of our watched pools (``max_connections`` is per node), all
  sharing one wait log, so a request's wait is known whichever node it waited for.
* ``ClusterPools`` sums the node pools' figures: it is what the stats line, the pool
  warnings and the health view read as the client's pool (``in_use``/``idle``/``max``
  are totals over the nodes).
* ``AccountedCluster`` is a ``RedisCluster`` that records each command, and each
  pipeline as one round trip of its commands, on the request it is bound to, exactly
  like ``AccountedRedis``.
* The checks ask a seed node for ``CLUSTER NODES`` and then PING every master and read
  its ``cluster_state``, naming the node that fails.

redis-py's ``RedisCluster`` reads the slot map in its constructor, so the cluster must
be reachable when the app is configured; the sockets it opened then are closed at
once, so a process that forks workers afterwards shares none.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from collections import Counter
from threading import get_ident
from time import perf_counter
from typing import Any

import redis.cluster
from redis.cluster import (
    ClusterNode,
    ClusterPipeline,
    LoadBalancingStrategy,
    PipelineStrategy,
    RedisCluster,
    TransactionStrategy,
)
from redis.connection import Connection
from redis.exceptions import AskError, MovedError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .breaker import NO_BREAKER, NoBreaker, guarded
from .diagnose import classify, diagnose
from .errors import (
    CommandMayHaveBeenApplied,
    RedisUnavailable,
    TimeoutNotRetried,
    is_error_reply,
)
from .pools import (
    WatchedBlockingPool,
    WatchedPool,
    _TimedLifoQueue,
    _WaitLog,
    connection_kwargs,
)
from .probe import Probe, new_connection, probe
from .retries import may_have_been_applied, reads_only, retry_policy
from .settings import RedisOptions
from .usage import Usage

_IDLE = "idle"
_USED = "used"


# ---------------------------------------------------------------- write safety
# redis-py's cluster client sends a command again after a connection error or a timeout
# by its own loops, not through the connection's retry policy: a command, a pipeline's
# failed commands one by one (all of a node's, once one of its replies failed), then the
# whole pipeline. Node connections mark an error with the stage it happened in, so that
# those loops apply the standalone clients' rule (docs/retries.rst): what may have run
# is sent again only if it reads (or ``retry_writes``), after a timeout only with
# ``retry_on_timeout``.
SENDING = "sending"
READING = "reading"
_SENT_ERRORS = (RedisConnectionError, RedisTimeoutError)
# A pipeline command's result before a node answered it: None on redis-py 8.1, a sentinel
# on 8.2 (where None is a nil reply, an answer).
_UNANSWERED = getattr(redis.cluster, "_UNANSWERED", None)
# MOVED and ASK replies received by this process's node connections (sync and asyncio),
# for telemetry: redis-py follows them inside its loops, where nothing else sees them.
REDIRECTIONS: Counter[str] = Counter()


class _StageMarking(Connection):
    """A node connection whose errors say whether a command was being sent or its reply
    read (``redisx_stage``); errors while connecting or health-checking carry none."""

    _redisx_awaiting = False  # a command went out; its replies may not all be read

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not check_health:  # the health check's own PING
            super().send_packed_command(command, check_health=False)
            return
        self._redisx_awaiting = False
        if not self._sock:
            self.connect_check_health(check_health=False)
        self.check_health()
        try:
            super().send_packed_command(command, check_health=False)
        except _SENT_ERRORS as error:
            error.redisx_stage = SENDING  # type: ignore[union-attr]
            raise
        self._redisx_awaiting = True

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        awaiting = self._redisx_awaiting  # (redis-py disconnects before it raises)
        try:
            return super().read_response(*args, **kwargs)
        except _SENT_ERRORS as error:
            if awaiting and not is_error_reply(error):  # a reply is no lost connection
                error.redisx_stage = READING  # type: ignore[union-attr]
            raise
        except (MovedError, AskError) as error:
            count_redirection(error)  # telemetry
            raise

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self._redisx_awaiting = False  # a reconnect's handshake is not a command
        super().disconnect(*args, **kwargs)


def count_redirection(error: Exception) -> None:
    # (redis-py's MovedError is a subclass of its AskError)
    REDIRECTIONS["moved" if isinstance(error, MovedError) else "ask"] += 1


@functools.cache
def marking(mixin: type, connection_class: type) -> type:
    """``connection_class`` (``Connection``, ``SSLConnection``, their asyncio twins)
    with ``mixin`` (``_StageMarking`` or its asyncio twin): one class per pair."""
    return type(f"Marking{connection_class.__name__}", (mixin, connection_class), {})


def _instead_of_sending_again(
    client: Any, names: list[Any], error: Exception, what: str = "pipeline"
) -> Exception | None:
    """The error to raise instead of ``error`` (it came after ``names`` were sent) so
    that redis-py does not send them again; None when sending again is safe, or when
    ``error`` is already one that is never sent again."""
    if isinstance(error, CommandMayHaveBeenApplied | TimeoutNotRetried):
        return None
    if isinstance(error, RedisTimeoutError):
        return None if client._redisx_retry_on_timeout else TimeoutNotRetried(str(error))
    if client._redisx_retry_writes or all(reads_only(name) for name in names):
        return None
    if what == "pipeline" and len(names) == 1:
        return may_have_been_applied(str(names[0]), error)
    return may_have_been_applied(f"{what} of {len(names)} commands with writes", error)


def after_send(
    client: Any, names: list[Any], error: Exception, what: str = "pipeline", *, reply: bool
) -> Exception | None:
    """``_instead_of_sending_again`` for an error marked by a node connection: of a
    command whose reply failed (``reply``: one that failed while being sent was not run,
    a partial command never is), or of a pipeline or MULTI/EXEC sent in part or whole.
    A timeout, marked or not (a stalled node's handshake), follows ``retry_on_timeout``
    as with a standalone server."""
    stage = getattr(error, "redisx_stage", None)
    if not isinstance(error, RedisTimeoutError) and (stage is None or (reply and stage != READING)):
        return None
    return _instead_of_sending_again(client, names, error, what)


def pipeline_not_sent_again(client: Any, stack: Any, error: Exception) -> Exception | None:
    """What to raise instead of sending a whole pipeline again after ``error`` (``error``
    itself, or ``CommandMayHaveBeenApplied`` / ``TimeoutNotRetried``), or None when
    sending it again is safe: nothing of it went out, or it only reads. It went out if
    an error was marked while it was sent or read, or if a command has a reply or an
    error of its own (redis-py stores a node's send and read errors in its commands)."""
    if isinstance(error, CommandMayHaveBeenApplied | TimeoutNotRetried):
        return error
    if isinstance(error, RedisTimeoutError):  # sent or not, as with a standalone server
        return _instead_of_sending_again(client, [], error)
    if not getattr(error, "redisx_stage", None) and all(c.result is _UNANSWERED for c in stack):
        return None
    instead = _instead_of_sending_again(client, [c.args[0] for c in stack], error)
    if instead is None or isinstance(error, _SENT_ERRORS):
        return instead
    return error  # CLUSTERDOWN, a slot not covered: raised as it is


def _execute_command(self: Any, target_node: Any, *args: Any, **kwargs: Any) -> Any:
    """``RedisCluster._execute_command``; an error once the command was sent is raised
    as one redis-py's loop does not retry, unless sending it again is safe."""
    observer = self._redisx_observer  # telemetry: None when off
    if observer is not None:
        waited = self._redisx_wait_log.total
    try:
        return RedisCluster._execute_command(self, target_node, *args, **kwargs)
    except _SENT_ERRORS as error:
        instead = after_send(self, [args[0]], error, reply=True)
        if instead is None:
            raise
        raise instead from error
    finally:
        if observer is not None:  # inside the instrumentation's span, if any
            observer.enrich_command(self._redisx_wait_log.total - waited)


class _WriteSafePipelineStrategy(PipelineStrategy):
    """redis-py's pipeline strategy, except that a pipeline of which anything was sent
    is sent again whole only if that is safe (redis-py retries any pipeline)."""

    def send_cluster_commands(
        self, stack: Any, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> Any:
        if not stack:
            return []
        retries = self._pipe.retry.get_retries()
        try:
            while True:
                try:
                    return self._send_cluster_commands(
                        stack, raise_on_error=raise_on_error, allow_redirections=allow_redirections
                    )
                except RedisCluster.ERRORS_ALLOW_RETRY as error:
                    instead = pipeline_not_sent_again(self._pipe, stack, error)
                    if retries <= 0 or instead is error:
                        raise
                    if instead is not None:
                        raise instead from error
                    retries -= 1
        finally:
            _enrich(self._pipe)


class _WriteSafeTransactionStrategy(TransactionStrategy):
    """redis-py's MULTI/EXEC strategy; a connection error or timeout once MULTI was sent
    is raised as one the retry policy does not retry, unless retrying is safe."""

    def _execute_transaction(self, stack: Any, raise_on_error: bool) -> Any:
        try:
            return super()._execute_transaction(stack, raise_on_error)
        except _SENT_ERRORS as error:
            names = [c.args[0] for c in stack]
            instead = after_send(self._pipe, names, error, "MULTI/EXEC", reply=False)
            if instead is None:
                raise
            if self._transaction_connection is not None:
                self._transaction_connection.disconnect()
            raise instead from error
        finally:
            _enrich(self._pipe)


def _enrich(pipe: Any) -> None:
    """Telemetry, inside the instrumentation's span of a pipeline: our attributes."""
    observer = getattr(pipe, "_redisx_observer", None)
    if observer is not None:
        observer.enrich_pipeline(pipe._redisx_wait_log.total - pipe._redisx_wait_start)


def _node_pool(options: RedisOptions, wait_log: _WaitLog, **kwargs: Any) -> Any:
    """One node's pool; redis-py passes the node's address and connection arguments."""
    kwargs.pop("max_connections", None)
    kwargs["connection_class"] = marking(_StageMarking, kwargs.get("connection_class", Connection))
    kwargs["health_check_interval"] = options.health_check_interval  # RedisCluster drops it
    if options.blocking:
        pool = WatchedBlockingPool(
            warn_ratio=options.pool_warn_ratio,
            max_connections=options.max_connections,
            timeout=options.pool_timeout,
            **kwargs,
        )
        pool.queue_class = functools.partial(_TimedLifoQueue, wait_log, pool._note_wait)
        pool.wait_log = wait_log
        pool.reset()  # a new queue that logs waits in the shared wait log
        return pool
    plain = WatchedPool(
        warn_ratio=options.pool_warn_ratio, max_connections=options.max_connections, **kwargs
    )
    plain.wait_log = wait_log
    return plain


class ClusterPools:
    """The node pools of one cluster client, seen as one pool (figures summed)."""

    breaker: NoBreaker = NO_BREAKER  # the client's circuit, set by build_client

    def __init__(self, options: RedisOptions) -> None:
        self.options = options
        self.wait_log = _WaitLog()
        self.warned: dict[str, tuple[float, int]] = {}
        self.client_names: tuple[str, ...] = ()
        self.client: AccountedCluster | None = None

    def node_pools(self) -> list[Any]:
        if self.client is None:
            return []
        return [
            node.redis_connection.connection_pool
            for node in self.client.get_nodes()
            if node.redis_connection
        ]

    @property
    def max_connections(self) -> int:
        """Per-node ``max_connections`` times the nodes known (a pool each, made on demand)."""
        nodes = len(self.client.get_nodes()) if self.client is not None else 0
        return self.options.max_connections * max(1, nodes)

    @property
    def warn_at(self) -> int:
        return max(1, math.ceil(self.max_connections * self.options.pool_warn_ratio))

    @property
    def may_be_saturated(self) -> bool:
        return any(pool.may_be_saturated for pool in self.node_pools())

    def get_connection_count(self) -> list[tuple[int, dict[str, Any]]]:
        idle = in_use = 0
        for pool in self.node_pools():
            node_idle, node_in_use = pool._idle_and_in_use()
            idle += node_idle
            in_use += node_in_use
        state = "db.client.connection.state"
        return [(idle, {state: _IDLE}), (in_use, {state: _USED})]

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.disconnect_connection_pools()

    def make_client(self, name: str) -> AccountedCluster:
        """The process-wide client (``ClientSet.add`` calls this instead of building one).

        redis-py reads the slot map here: a cluster that cannot be read is reported like
        a failed startup check, naming the seeds.
        """
        if self.client is None:
            try:
                self.client = build_client(self.options, self)
            except Exception as exc:
                cause, detail = diagnose(exc, self.options, self.options.startup_check_timeout)
                raise RedisUnavailable(name, _seeds(self.options), cause, detail) from exc
        return self.client

    def __repr__(self) -> str:
        return f"<ClusterPools({self.options.url}, max_connections={self.options.max_connections} per node)>"


class AccountedClusterPipeline(ClusterPipeline):
    """A cluster pipeline that records its commands as one round trip on the request,
    and never sends again what may have run (``_WriteSafe*Strategy``, ``_send_again``)."""

    _redisx_usage: Usage | None = None
    _redisx_wait_log: _WaitLog  # the client's, set with ``_redisx_usage``
    _redisx_thread: int | None = None  # the thread that used it last (Usage.finish)
    _redisx_retry_writes = False
    _redisx_retry_on_timeout = False
    _redisx_observer: Any = None  # telemetry: None when off
    _redisx_wait_start = 0.0
    _execute_command = _execute_command

    def _send_again(self, *args: Any, **options: Any) -> Any:
        """redis-py's resend, one by one, of a pipeline's commands that failed (MOVED,
        ASK, TRYAGAIN, a connection error or a timeout): not of one that may have run."""
        for command in self._execution_strategy.command_queue:
            error = command.result
            if command.args == args and isinstance(error, _SENT_ERRORS):
                instead = after_send(self, [args[0]], error, reply=False)  # a pipeline
                if instead is not None:
                    raise instead from error
                break
        return RedisCluster.execute_command(self, *args, **options)

    _redisx_breaker: NoBreaker = NO_BREAKER  # the client's circuit (breaker.py)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self._redisx_thread = get_ident()  # queued, or WATCH and what it reads
        return super().execute_command(*args, **kwargs)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        usage = self._redisx_usage
        count = len(self)
        if usage is None or not count:
            return guarded(self._redisx_breaker, super().execute, raise_on_error)  # type: ignore[no-any-return]
        inner = (
            [c.args for c in self._execution_strategy.command_queue]
            if usage.trace is not None
            else None
        )
        self._redisx_thread = get_ident()
        wait_log = self._redisx_wait_log
        waited = self._redisx_wait_start = wait_log.total
        observer = self._redisx_observer  # telemetry: None when off
        stack = [c.args for c in self._execution_strategy.command_queue] if observer else []
        started = perf_counter()
        failed = None
        try:
            return guarded(self._redisx_breaker, super().execute, raise_on_error)  # type: ignore[no-any-return]
        except Exception as error:
            failed = error
            raise
        finally:
            transaction = isinstance(self._execution_strategy, TransactionStrategy)
            name = "MULTI" if transaction else "PIPELINE"
            seconds = perf_counter() - started - (wait_log.total - waited)
            usage.record(name, seconds, (), count, inner)
            if observer is not None:
                observer.pipeline(
                    stack, transaction, started, wait_log.total - waited, failed, None
                )

    def close(self) -> None:
        """At the end of a request: reset (UNWATCH). Never redis-py's inherited
        ``RedisCluster.close``, which closes the nodes shared with the app's client."""
        self.reset()


class AccountedCluster(RedisCluster):
    """``RedisCluster`` that records each command on the request it is bound to."""

    _redisx_usage: Usage | None = None
    _redisx_retry_writes = False
    _redisx_retry_on_timeout = False
    _redisx_observer: Any = None  # telemetry: None when off
    connection_pool: ClusterPools
    _execute_command = _execute_command

    @property
    def _redisx_wait_log(self) -> _WaitLog:
        return self.connection_pool.wait_log

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        usage = self._redisx_usage
        # One circuit for the client (breaker.py); none while redis-py's constructor runs.
        breaker = getattr(getattr(self, "connection_pool", None), "breaker", NO_BREAKER)
        if usage is None:
            return guarded(breaker, RedisCluster.execute_command, self, *args, **kwargs)
        # The wait for a node's connection is not Redis time (it is ``waited_ms``).
        wait_log = self.connection_pool.wait_log
        waited = wait_log.total
        started = perf_counter()
        failed = None
        try:
            return guarded(breaker, RedisCluster.execute_command, self, *args, **kwargs)
        except Exception as error:
            failed = error
            raise
        finally:
            wait = wait_log.total - waited
            usage.record(args[0], perf_counter() - started - wait, args)
            if self._redisx_observer is not None:  # telemetry (after any span of its)
                self._redisx_observer.command(
                    None, args[0], args, started, wait, failed, inside=False
                )

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        # redis-py builds the pipeline from a dozen of the client's internals; taking its
        # objects and giving them our classes keeps that construction redis-py's.
        pipe.__class__ = AccountedClusterPipeline
        strategy = pipe._execution_strategy
        strategy.__class__ = (
            _WriteSafeTransactionStrategy
            if isinstance(strategy, TransactionStrategy)
            else _WriteSafePipelineStrategy
        )
        pipe.parent_execute_command = pipe._send_again
        pipe._redisx_retry_writes = self._redisx_retry_writes
        pipe._redisx_retry_on_timeout = self._redisx_retry_on_timeout
        pipe._redisx_breaker = self.connection_pool.breaker
        usage = self._redisx_usage
        if usage is not None:
            pipe._redisx_usage = usage
            pipe._redisx_wait_log = self.connection_pool.wait_log
            pipe._redisx_observer = self._redisx_observer  # telemetry
            usage.hold(pipe)  # weakly: a dropped pipeline resets itself in __del__
        return pipe

    def __del__(self) -> None:
        # A per-request copy shares the process-wide client's nodes: only that one closes them.
        if self._redisx_usage is None:
            super().__del__()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}({self.connection_pool!r})>"


def build_pools(options: RedisOptions) -> ClusterPools:
    """Pool builder for kind ``cluster``: the client is made by ``ClientSet.add``."""
    return ClusterPools(options)


def build_client(options: RedisOptions, pools: ClusterPools) -> AccountedCluster:
    """The ``RedisCluster`` for ``options``: seeds from ``redis.url`` and ``cluster_nodes``."""
    kwargs = connection_kwargs(options)
    for key in ("db", "retry", "host", "port", "connection_class", "health_check_interval"):
        kwargs.pop(key, None)
    scheme = "rediss" if options.scheme == "rediss" else "redis"
    host = f"[{options.host}]" if options.host and ":" in options.host else options.host
    strategy = options.load_balancing_strategy
    client = AccountedCluster(
        url=f"{scheme}://{host}:{options.port}",  # no credentials: they are keyword arguments
        startup_nodes=[ClusterNode(h, p) for h, p in options.cluster_nodes or ()],
        connection_pool_class=functools.partial(_node_pool, options, pools.wait_log),
        retry=retry_policy(options),
        require_full_coverage=options.require_full_coverage,
        load_balancing_strategy=LoadBalancingStrategy(strategy) if strategy else None,
        **kwargs,
    )
    client.connection_pool = pools
    # One circuit for the whole client, gated around redis-py's cluster loops (which
    # route around a failed master once the cluster fails over): it opens when the
    # client's commands fail in a row, i.e. when the cluster is unreachable from here.
    pools.breaker = client.retry.breaker  # type: ignore[attr-defined]
    pools.breaker.attach(pools)
    client._redisx_retry_on_timeout = options.retry_on_timeout
    client.disconnect_connection_pools()  # no socket kept from configuration time
    return client


# ---------------------------------------------------------------- checks
class ProbeConnections:
    """Connections of the checks: new and closed after use (startup check, ``check``), or
    kept per node and reused while the node answers (the health view: no new connection
    per call). Forked processes start afresh; ``lock`` serialises users of kept ones."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.lock = threading.Lock()
        self._kept: dict[RedisOptions, Any] = {}
        self._pid = os.getpid()

    def get(self, options: RedisOptions, timeout: float) -> tuple[Any, bool]:
        """(a connection to ``options``' node, whether it was kept from an earlier call)."""
        if not self.keep:
            return new_connection(options, timeout), False
        if self._pid != os.getpid():  # never reuse the parent's sockets
            self._kept, self._pid = {}, os.getpid()
        connection = self._kept.get(options)  # per node and per client's options
        if connection is None:
            connection = self._kept[options] = new_connection(options, timeout)
        return connection, connection._sock is not None

    def done(self, connection: Any, ok: bool) -> None:
        if not (self.keep and ok):
            connection.disconnect()


def _ask(connection: Any, *command: str) -> str:
    connection.connect()  # no-op when connected
    connection.send_command(*command)
    reply = connection.read_response()
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _nodes(
    options: RedisOptions, timeout: float, connections: ProbeConnections
) -> list[tuple[str, int, str, str]]:
    """(host, port, role, flags) of every node, from the first seed that answers."""
    seeds = [(options.host or "localhost", options.port or 6379), *(options.cluster_nodes or ())]
    error: Exception | None = None
    for host, port in seeds:
        connection, reused = connections.get(
            dataclasses.replace(options, host=host, port=port), timeout
        )
        try:
            text = _ask(connection, "CLUSTER", "NODES")
        except Exception as exc:  # noqa: BLE001 - the next seed may answer
            connection.disconnect()
            if reused:  # a kept connection the node dropped: once more, afresh
                try:
                    text = _ask(connection, "CLUSTER", "NODES")
                except Exception as again:  # noqa: BLE001
                    connection.disconnect()
                    error = again
                    continue
            else:
                error = exc
                continue
        connections.done(connection, True)
        nodes = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            address = fields[1].split("@")[0]
            node_host, _, node_port = address.rpartition(":")
            flags = fields[2]
            role = "master" if "master" in flags.split(",") else "replica"
            nodes.append((node_host or host, int(node_port), role, flags))
        return nodes
    assert error is not None
    raise error


def _probe_node(connection: Any, options: RedisOptions) -> tuple[Probe, str]:
    """(PING/ROLE probe, ``cluster_state``) of one node."""
    result = probe(connection, options)
    if not result.ok:
        return result, ""
    try:
        text = _ask(connection, "CLUSTER", "INFO")
    except Exception as exc:  # noqa: BLE001 - reported as the node's error
        connection.disconnect()
        return Probe(False, 0.0, "", "", f"error: {exc}"), ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return result, fields.get("cluster_state", "").strip()


def probe_nodes(
    options: RedisOptions, timeout: float, connections: ProbeConnections | None = None
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """(every master answers with ``cluster_state:ok``, per-node detail by ``host:port``).

    A replica that is down is reported but does not make the client down: writes and
    (with the default strategy) reads still work.
    """
    connections = connections or ProbeConnections(keep=False)
    nodes = _nodes(options, timeout, connections)
    ok = True
    detail: dict[str, dict[str, Any]] = {}
    for host, port, role, flags in sorted(nodes, key=lambda n: (n[2] != "master", n[1])):
        node_options = dataclasses.replace(options, host=host, port=port, cluster=False)
        connection, reused = connections.get(node_options, timeout)
        result, state = _probe_node(connection, node_options)
        if not result.ok and reused and not result.error.startswith("timeout"):
            result, state = _probe_node(connection, node_options)  # a dropped kept one
        connections.done(connection, result.ok)
        entry: dict[str, Any] = {
            "ok": result.ok and state == "ok",
            "role": result.role or role,
            "latency_ms": result.latency_ms,
        }
        if not result.ok:
            entry["error"] = result.error
        elif state != "ok":
            entry["error"] = f"cluster state: cluster_state:{state or '?'} (expected ok)"
        if "fail" in flags and result.ok:
            entry["flags"] = flags
        detail[f"{host}:{port}"] = entry
        if role == "master" and not entry["ok"]:
            ok = False
    return ok, detail


def first_failure(detail: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    """(node, error) of the first master that failed, for messages."""
    for node, entry in detail.items():
        if entry["role"] == "master" and not entry["ok"]:
            return node, entry["error"]
    return None


def _seeds(options: RedisOptions) -> str:
    seeds = [
        f"{options.host}:{options.port}",
        *(f"{h}:{p}" for h, p in options.cluster_nodes or ()),
    ]
    return "cluster via " + ", ".join(seeds)


def check(name: str, options: RedisOptions) -> float:
    """Startup check: every master answers PING and reports ``cluster_state:ok``."""
    started = perf_counter()
    try:
        _, detail = probe_nodes(options, options.startup_check_timeout)
    except Exception as exc:
        raise RedisUnavailable(name, _seeds(options), classify(exc), str(exc)) from exc
    failure = first_failure(detail)
    if failure is not None:
        node, error = failure
        cause, _, text = error.partition(": ")
        raise RedisUnavailable(name, f"cluster node {node}", cause, text or error)
    return perf_counter() - started


def health_probe(probes: Any, options: RedisOptions, timeout: float) -> Probe:
    """Health view and ``check``: every node, ok when every master is."""
    connections = getattr(probes, "cluster_connections", None)
    if connections is None:  # kept beside the health view's own probe connections
        connections = probes.cluster_connections = ProbeConnections(keep=True)
    try:
        with connections.lock:
            ok, detail = probe_nodes(options, timeout, connections)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return Probe(False, 0.0, "", "", f"{classify(exc)}: {exc}", nodes={})
    failure = first_failure(detail)
    error = f"cluster node {failure[0]}: {failure[1]}" if failure else ""
    latency = max((e["latency_ms"] for e in detail.values() if e["role"] == "master"), default=0.0)
    return Probe(ok, latency, "cluster", "", error, nodes=detail)


def describe(options: RedisOptions) -> str:
    """Where a cluster client points, safe to log: its seed nodes."""
    return _seeds(options)
