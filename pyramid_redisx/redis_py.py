"""The guard on redis-py: a tested version, and every internal we use in the shape we expect.

pyramid_redisx replaces private methods of redis-py (``Redis._execute_command``, the
pipelines' ``_execute_transaction``/``_execute_pipeline``, the Cluster client's loops, the
same in ``redis.asyncio``) and reads private attributes (a pool's ``_lock``, a
connection's ``_sock``). A minor release of redis-py may rename or reshape any of them.
``check`` runs once per app, from ``includeme``: on a redis-py outside the tested range,
or one whose internals differ from ``INTERNALS``, the app does not start, with one
message naming the installed version, the tested range, what differs and the fix; never
an ``AttributeError`` in a request, never a silently different behaviour.

``INTERNALS`` lists every such internal, one row each: where it is, what we expect of it
and who uses it. Tests read the package's code and fail when it uses an underscore
attribute of redis-py, or overrides a method of redis-py, that has no row here.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import re
from typing import Any

import redis

from .errors import RedisPyUnsupported

log = logging.getLogger("pyramid_redisx")

# The redis-py versions `make test-matrix` proves (pyproject.toml says the same; a test
# checks it): from TESTED_FROM up to, not including, TESTED_BELOW.
TESTED_FROM = (8, 1)
TESTED_BELOW = (8, 3)
RANGE = ">=8.1,<8.3"
PIN = f'pip install "redis{RANGE}"'
SETTING = "redis.allow_redis_py"
ENVIRON = "PYRAMID_REDISX_ALLOW_REDIS_PY"  # the setting's default, as Pyramid's PYRAMID_*

# What a row expects of its object:
PARAMS = "params"  # a callable whose parameters (after self) are exactly these names
ACCEPTS = "accepts"  # a callable that takes these keyword names (or **kwargs)
ATTR = "attr"  # exists: a method, property, class attribute or module-level name
SELF = "self"  # an instance attribute that the class's redis-py source assigns (self.X =)

# (where, expects, names, who uses it)
INTERNALS: tuple[tuple[str, str, str, str], ...] = (
    # -- standalone client and pipeline (client.py): accounting, write-safe retries
    ("redis.client.Redis._execute_command", PARAMS, "*args **options", "client.py replaces it"),
    ("redis.client.Redis._send_command_parse_response", PARAMS, "conn command_name *args **options", "client.py calls it"),
    ("redis.client.Redis.parse_response", PARAMS, "connection command_name **options", "client.py"),
    ("redis.client.Redis._single_connection_client", SELF, "", "client.py"),
    ("redis.client.Redis.single_connection_lock", SELF, "", "client.py"),
    ("redis.client.Redis.connection", SELF, "", "client.py"),
    ("redis.client.Redis.response_callbacks", SELF, "", "client.py"),
    ("redis.client.Redis.pipeline", PARAMS, "transaction shard_hint", "client.py overrides it"),
    ("redis.client.Redis.pubsub", PARAMS, "**kwargs", "client.py overrides it"),
    ("redis.client.Redis.monitor", PARAMS, "", "client.py overrides it"),
    ("redis.client.Redis.client", PARAMS, "", "client.py overrides it"),
    ("redis.client.Redis.set_response_callback", PARAMS, "command callback", "client.py overrides it"),
    ("redis.client.Pipeline.__init__", PARAMS, "connection_pool response_callbacks transaction shard_hint", "client.py"),
    ("redis.client.Pipeline.execute", PARAMS, "raise_on_error", "client.py overrides it"),
    ("redis.client.Pipeline.reset", PARAMS, "", "client.py overrides it"),
    ("redis.client.Pipeline.immediate_execute_command", PARAMS, "*args **options", "client.py overrides it"),
    ("redis.client.Pipeline._execute_transaction", PARAMS, "connection commands raise_on_error", "client.py replaces it"),
    ("redis.client.Pipeline._execute_pipeline", PARAMS, "connection commands raise_on_error", "client.py replaces it"),
    ("redis.client.Pipeline.command_stack", SELF, "", "client.py"),
    ("redis.client.Pipeline.scripts", SELF, "", "client.py"),
    ("redis.client.Pipeline.watching", SELF, "", "client.py"),
    ("redis.client.Pipeline.explicit_transaction", SELF, "", "client.py"),
    ("redis.client.Monitor.__init__", PARAMS, "connection_pool", "client.py"),
    ("redis.client.Monitor.__exit__", PARAMS, "*args", "client.py overrides it"),
    ("redis.client.Monitor.connection", SELF, "", "client.py"),
    ("redis.client.Monitor.next_command", PARAMS, "", "client.py overrides it"),
    ("redis.client.PubSub.execute_command", PARAMS, "*args", "client.py overrides it"),
    ("redis.client.PubSub.__init__", ACCEPTS, "connection_pool event_dispatcher", "client.py"),
    ("redis.client.PubSub._execute", PARAMS, "conn command *args **kwargs", "pubsub.py overrides it"),
    ("redis.client.Redis._event_dispatcher", SELF, "", "client.py"),
    ("redis.client.PubSub.parse_response", PARAMS, "block timeout", "client.py overrides it"),
    ("redis.client.CaseInsensitiveDict", ATTR, "", "client.py"),
    ("redis.client.record_operation_duration", ACCEPTS, "command_name duration_seconds server_address server_port db_namespace", "client.py"),
    ("redis.client.record_error_count", ACCEPTS, "server_address server_port network_peer_address network_peer_port error_type retry_attempts is_internal", "client.py"),
    ("redis.commands.READ_COMMANDS", ATTR, "", "retries.py: what may be sent again"),
    ("redis.observability.recorder.is_enabled", PARAMS, "", "client.py, pools.py"),
    ("redis.exceptions.ConnectionError.__init__", PARAMS, "*args status_code", "errors.py overrides it (RedisCircuitOpen)"),
    # -- pools (pools.py): lean checkout, figures, waits
    ("redis.connection.ConnectionPool.get_connection", ATTR, "", "pools.py overrides it"),
    ("redis.connection.ConnectionPool.release", PARAMS, "connection", "pools.py overrides it"),
    ("redis.connection.ConnectionPool.make_connection", PARAMS, "", "pools.py overrides it"),
    ("redis.connection.ConnectionPool.reset", PARAMS, "", "pools.py overrides it"),
    ("redis.connection.ConnectionPool.get_connection_count", PARAMS, "", "pools.py overrides it"),
    ("redis.connection.ConnectionPool.disconnect", PARAMS, "inuse_connections", "sentinel.py overrides it"),
    ("redis.connection.ConnectionPool.owns_connection", PARAMS, "connection", "sentinel.py"),
    ("redis.connection.ConnectionPool._checkpid", PARAMS, "", "pools.py"),
    ("redis.connection.ConnectionPool._lock", SELF, "", "pools.py"),
    ("redis.connection.ConnectionPool._available_connections", SELF, "", "pools.py"),
    ("redis.connection.ConnectionPool._in_use_connections", SELF, "", "pools.py"),
    ("redis.connection.ConnectionPool.pid", SELF, "", "pools.py"),
    ("redis.connection.ConnectionPool.__init__", ACCEPTS, "max_connections connection_class", "pools.py"),
    ("redis.connection.ConnectionPool.connection_class", SELF, "", "client_cache.py: the listener's connection, like the pool's"),
    ("redis.connection.ConnectionPool.connection_kwargs", ATTR, "", "client_cache.py: the listener's connection, like the pool's"),
    ("redis.connection.BlockingConnectionPool.get_connection", ATTR, "", "pools.py overrides it"),
    ("redis.connection.BlockingConnectionPool.__init__", ACCEPTS, "max_connections timeout queue_class", "pools.py"),
    ("redis.connection.BlockingConnectionPool.release", PARAMS, "connection", "pools.py overrides it"),
    ("redis.connection.BlockingConnectionPool.pool", SELF, "", "pools.py: the queue of free connections"),
    ("redis.connection.BlockingConnectionPool.queue_class", SELF, "", "cluster.py"),
    ("redis.connection.BlockingConnectionPool.timeout", SELF, "", "pools.py"),
    ("redis.connection.BlockingConnectionPool._connections", SELF, "", "pools.py, sentinel.py"),
    ("redis.connection.BlockingConnectionPool._lock", SELF, "", "pools.py, sentinel.py"),
    # -- connections (pools.py, client.py, cluster.py, health.py, sentinel.py)
    ("redis.connection.AbstractConnection.is_connected", ATTR, "", "pools.py, client.py"),
    ("redis.connection.AbstractConnection.can_read", PARAMS, "timeout", "pools.py, client_cache.py"),
    ("redis.connection.AbstractConnection.connect", PARAMS, "", "pools.py, client.py, client_cache.py"),
    ("redis.connection.AbstractConnection.connect_check_health", ACCEPTS, "check_health", "cluster.py"),
    ("redis.connection.AbstractConnection.check_health", PARAMS, "", "client.py, cluster.py"),
    ("redis.connection.AbstractConnection.send_command", PARAMS, "*args **kwargs", "client.py, client_cache.py"),
    ("redis.connection.AbstractConnection.send_packed_command", PARAMS, "command check_health", "cluster.py overrides it"),
    ("redis.connection.AbstractConnection.read_response", ACCEPTS, "disable_decoding timeout", "cluster.py overrides it, queue.py, client_cache.py"),
    ("redis.connection.AbstractConnection.disconnect", PARAMS, "*args **kwargs", "cluster.py overrides it"),
    ("redis.connection.AbstractConnection.register_connect_callback", PARAMS, "callback", "client.py: a WATCH lost on reconnect"),
    ("redis.connection.AbstractConnection.deregister_connect_callback", PARAMS, "callback", "client.py"),
    ("redis.connection.AbstractConnection._sock", SELF, "", "cluster.py, health.py, sentinel.py, client_cache.py"),
    ("redis.connection.AbstractConnection._connect", PARAMS, "", "retries.py: connects_only knows the bare connect by this name"),
    ("redis.asyncio.connection.AbstractConnection._connect", PARAMS, "", "retries.py: connects_only (asyncio)"),
    ("redis.connection.AbstractConnection.pid", SELF, "", "pools.py"),
    ("redis.connection.AbstractConnection.retry", SELF, "", "client.py"),
    ("redis.connection.AbstractConnection.health_check_interval", SELF, "", "client.py"),
    ("redis.connection.AbstractConnection.next_health_check", SELF, "", "client.py"),
    # -- retries (pools.py, sentinel.py)
    ("redis.retry.Retry.__init__", ACCEPTS, "backoff retries supported_errors", "pools.py"),
    ("redis.retry.Retry.call_with_retry", PARAMS, "do fail is_retryable with_failure_count", "retries.py replaces it"),
    ("redis.retry.Retry.get_retries", PARAMS, "", "cluster.py"),
    ("redis.retry.Retry._backoff", SELF, "", "retries.py, sentinel.py"),
    ("redis.retry.Retry._retries", SELF, "", "retries.py"),
    ("redis.retry.Retry._supported_errors", SELF, "", "retries.py"),
    ("redis.backoff.ExponentialWithJitterBackoff.__init__", PARAMS, "cap base", "pools.py"),
    ("redis.backoff.AbstractBackoff.compute", PARAMS, "failures", "sentinel.py overrides it"),
    ("redis.backoff.AbstractBackoff.reset", PARAMS, "", "sentinel.py overrides it"),
    ("redis.maint_notifications.MaintNotificationsConfig.__init__", ACCEPTS, "enabled", "pools.py turns them off"),
    # -- Sentinel (sentinel.py)
    ("redis.sentinel.Sentinel.__init__", ACCEPTS, "sentinels sentinel_kwargs", "sentinel.py"),
    ("redis.sentinel.Sentinel.discover_master", PARAMS, "service_name", "sentinel.py overrides it"),
    ("redis.sentinel.Sentinel.discover_slaves", PARAMS, "service_name", "sentinel.py"),
    ("redis.sentinel.Sentinel.check_master_state", PARAMS, "state service_name", "sentinel.py"),
    ("redis.sentinel.Sentinel.sentinels", SELF, "", "sentinel.py"),
    ("redis.sentinel.Sentinel.close", ATTR, "", "sentinel.py"),
    ("redis.commands.sentinel.SentinelCommands.sentinel_masters", PARAMS, "", "sentinel.py"),
    ("redis.sentinel.SentinelConnectionPool.__init__", ACCEPTS, "service_name sentinel_manager is_master", "sentinel.py"),
    ("redis.sentinel.SentinelConnectionPool.proxy", SELF, "", "sentinel.py"),
    ("redis.sentinel.SentinelConnectionPoolProxy.master_address", SELF, "", "sentinel.py"),
    ("redis.sentinel.SentinelConnectionPoolProxy.get_master_address", PARAMS, "", "sentinel.py: it calls the pool's disconnect(inuse_connections=False) when the master moved"),
    ("redis.sentinel.SentinelManagedConnection", ATTR, "", "sentinel.py"),
    ("redis.sentinel.SentinelManagedSSLConnection", ATTR, "", "sentinel.py"),
    # -- Cluster (cluster.py): accounting, write-safe loops
    ("redis.cluster.RedisCluster.__init__", ACCEPTS, "url startup_nodes connection_pool_class retry require_full_coverage load_balancing_strategy", "cluster.py"),
    ("redis.cluster.RedisCluster._execute_command", PARAMS, "target_node *args **kwargs", "cluster.py replaces it"),
    ("redis.cluster.RedisCluster.execute_command", PARAMS, "*args **kwargs", "cluster.py overrides it"),
    ("redis.cluster.RedisCluster.pipeline", PARAMS, "transaction shard_hint", "cluster.py overrides it"),
    ("redis.cluster.RedisCluster.__del__", PARAMS, "", "cluster.py overrides it"),
    ("redis.cluster.RedisCluster.get_nodes", PARAMS, "", "cluster.py"),
    ("redis.cluster.RedisCluster.disconnect_connection_pools", PARAMS, "", "cluster.py"),
    ("redis.cluster.RedisCluster.ERRORS_ALLOW_RETRY", ATTR, "", "cluster.py"),
    ("redis.cluster.ClusterNode.redis_connection", SELF, "", "cluster.py"),
    ("redis.cluster.ClusterPipeline.execute", PARAMS, "raise_on_error", "cluster.py overrides it"),
    ("redis.cluster.ClusterPipeline.execute_command", PARAMS, "*args **kwargs", "cluster.py overrides it"),
    ("redis.cluster.RedisCluster.close", PARAMS, "", "cluster.py overrides it (pipelines)"),
    ("redis.cluster.ClusterPipeline._execution_strategy", SELF, "", "cluster.py"),
    ("redis.cluster.ClusterPipeline.parent_execute_command", SELF, "", "cluster.py replaces it"),
    ("redis.cluster.PipelineStrategy.send_cluster_commands", PARAMS, "stack raise_on_error allow_redirections", "cluster.py replaces it"),
    ("redis.cluster.PipelineStrategy._send_cluster_commands", PARAMS, "stack raise_on_error allow_redirections", "cluster.py"),
    ("redis.cluster.PipelineStrategy._pipe", SELF, "", "cluster.py"),
    ("redis.cluster.PipelineStrategy.command_queue", ATTR, "", "cluster.py"),
    ("redis.cluster.TransactionStrategy._execute_transaction", PARAMS, "stack raise_on_error", "cluster.py overrides it"),
    ("redis.cluster.TransactionStrategy._transaction_connection", SELF, "", "cluster.py"),
    ("redis.cluster.LoadBalancingStrategy", ATTR, "", "cluster.py"),
    # -- asyncio (aio.py): the same rules
    ("redis.asyncio.client.Redis.from_pool", PARAMS, "connection_pool", "aio.py"),
    ("redis.asyncio.client.Redis._send_command_parse_response", PARAMS, "conn command_name *args **options", "aio.py overrides it"),
    ("redis.asyncio.client.Redis.pipeline", PARAMS, "transaction shard_hint", "aio.py overrides it"),
    ("redis.asyncio.client.Redis.pubsub", PARAMS, "**kwargs", "aio.py overrides it"),
    ("redis.asyncio.client.Redis._event_dispatcher", SELF, "", "aio.py"),
    ("redis.asyncio.client.PubSub.__init__", ACCEPTS, "connection_pool event_dispatcher", "aio.py"),
    ("redis.asyncio.client.PubSub._execute", PARAMS, "conn command *args **kwargs", "pubsub.py overrides it"),
    ("redis.asyncio.client.Pipeline.__init__", PARAMS, "connection_pool response_callbacks transaction shard_hint", "aio.py"),
    ("redis.asyncio.client.Pipeline._execute_transaction", PARAMS, "connection commands raise_on_error", "aio.py overrides it"),
    ("redis.asyncio.client.Pipeline._execute_pipeline", PARAMS, "connection commands raise_on_error", "aio.py overrides it"),
    ("redis.asyncio.retry.Retry.call_with_retry", PARAMS, "do fail is_retryable with_failure_count", "aio.py overrides it"),
    ("redis.asyncio.connection.AbstractConnection.is_connected", ATTR, "", "aio.py"),
    ("redis.asyncio.connection.AbstractConnection.connect", PARAMS, "", "aio.py"),
    ("redis.asyncio.connection.AbstractConnection.connect_check_health", ACCEPTS, "check_health", "aio.py"),
    ("redis.asyncio.connection.AbstractConnection.check_health", PARAMS, "", "aio.py"),
    ("redis.asyncio.connection.AbstractConnection.send_packed_command", PARAMS, "command check_health", "aio.py overrides it"),
    ("redis.asyncio.connection.AbstractConnection.read_response", ATTR, "", "aio.py overrides it"),
    ("redis.asyncio.connection.AbstractConnection.disconnect", ATTR, "", "aio.py overrides it"),
    ("redis.asyncio.cluster.RedisCluster._execute_command", PARAMS, "target_node *args **kwargs", "aio.py overrides it"),
    ("redis.asyncio.cluster.RedisCluster.pipeline", PARAMS, "transaction shard_hint", "aio.py overrides it"),
    ("redis.asyncio.cluster.RedisCluster.execute_command", PARAMS, "*args **kwargs", "aio.py overrides it (the breaker's gate)"),
    ("redis.asyncio.cluster.RedisCluster.initialize", ATTR, "", "aio.py"),
    ("redis.asyncio.cluster.RedisCluster.aclose", ATTR, "", "aio.py"),
    ("redis.asyncio.cluster.RedisCluster._initialize", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.RedisCluster.retry", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.RedisCluster.nodes_manager", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.RedisCluster.ERRORS_ALLOW_RETRY", ATTR, "", "aio.py"),
    ("redis.asyncio.cluster.NodesManager.connection_kwargs", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.NodesManager.startup_nodes", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.ClusterNode.connection_class", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.ClusterPipeline._execution_strategy", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.ClusterPipeline.cluster_client", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.PipelineStrategy.execute", PARAMS, "raise_on_error allow_redirections", "aio.py replaces it"),
    ("redis.asyncio.cluster.PipelineStrategy._execute", PARAMS, "client stack raise_on_error allow_redirections", "aio.py"),
    ("redis.asyncio.cluster.PipelineStrategy._command_queue", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.PipelineStrategy._pipe", SELF, "", "aio.py"),
    ("redis.asyncio.cluster.TransactionStrategy._execute_transaction", PARAMS, "stack raise_on_error", "aio.py overrides it"),
    ("redis.asyncio.cluster.TransactionStrategy.execute", PARAMS, "raise_on_error allow_redirections", "aio.py overrides it (the breaker's gate)"),
    ("redis.asyncio.sentinel.Sentinel.master_for", ACCEPTS, "service_name redis_class", "aio.py"),
)  # fmt: skip


def version() -> str:
    return str(getattr(redis, "__version__", "unknown"))


def _numbers(text: str) -> tuple[int, ...]:
    """(8, 2, 0) for "8.2.0", (8, 3, 0) for "8.3.0b1": the leading numbers."""
    numbers = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(numbers)


def tested(installed: str) -> bool:
    return TESTED_FROM <= _numbers(installed) < TESTED_BELOW


def allows(allowed: str | None, installed: str) -> bool:
    """``redis.allow_redis_py = 8.3`` allows 8.3.x; ``8.3.0`` allows 8.3.0 only."""
    if not allowed:
        return False
    wanted = _numbers(allowed)
    return bool(wanted) and _numbers(installed)[: len(wanted)] == wanted


def _resolve(path: str) -> Any:
    """The object at a dotted path: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))  # optional: may be gone
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ImportError(path)


def _parameters(function: Any) -> list[str]:
    names = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            names.append(f"*{parameter.name}")
        elif parameter.kind is parameter.VAR_KEYWORD:
            names.append(f"**{parameter.name}")
        else:
            names.append(parameter.name)
    if names and names[0] in ("self", "cls"):
        del names[0]
    return names


_CLASS = re.compile(r"^class (\w+)", re.M)
_TOP_LEVEL = re.compile(r"^[^\s#)]", re.M)  # a line at column 0: the class has ended


@functools.cache
def _classes_in(filename: str) -> dict[str, str]:
    """Source of each top-level class of a redis-py file, by name, read once per file
    (``inspect.getsource`` and ``ast`` take seconds over redis-py's command mixins)."""
    with open(filename, encoding="utf-8") as file:
        text = file.read()
    found: dict[str, str] = {}
    for match in _CLASS.finditer(text):
        end = _TOP_LEVEL.search(text, text.index("\n", match.end()) + 1)
        found.setdefault(match.group(1), text[match.start() : end.start() if end else None])
    return found


def _source(cls: type) -> str:
    """The source of ``cls`` and its redis-py bases ("" where it cannot be read)."""
    texts = []
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != "redis":
            continue
        try:
            filename = inspect.getsourcefile(klass)
            if filename:
                texts.append(_classes_in(filename).get(klass.__name__, ""))
        except (OSError, TypeError):
            continue
    return "\n".join(texts)


def _problem(path: str, expects: str, names: str) -> str | None:
    """What is wrong with one row on the installed redis-py, or None."""
    owner_path, _, attribute = path.rpartition(".")
    if expects == SELF:
        try:
            owner = _resolve(owner_path)
        except (ImportError, AttributeError):
            return f"{owner_path} is missing"
        source = _source(owner)
        if source and not re.search(rf"\bself\.{attribute}\s*(:[^=\n]*)?=(?!=)", source):
            return f"{path} (an instance attribute) is no longer set by {owner_path}"
        return None
    try:
        found = _resolve(path)
    except (ImportError, AttributeError):
        return f"{path} is missing"
    if expects == ATTR:
        return None
    found = inspect.unwrap(found)
    if not str(getattr(found, "__module__", "")).startswith("redis"):
        # Replaced by instrumentation that keeps no __wrapped__ (Sentry patches
        # Pipeline.execute with an (*args, **kwargs) function): the shape is the wrapper's.
        return None
    try:
        have = _parameters(found)
    except (TypeError, ValueError):
        return f"{path} is not a function"
    want = names.split()
    if expects == PARAMS and have != want:
        return f"{path} takes ({', '.join(have)}), expected ({', '.join(want)})"
    if expects == ACCEPTS and not any(name.startswith("**") for name in have):
        missing = [name for name in want if name not in have]
        if missing:
            return f"{path} no longer takes {', '.join(missing)}"
    return None


@functools.cache
def problems() -> tuple[str, ...]:
    """Every row of ``INTERNALS`` that the installed redis-py does not match (cached:
    the installed redis-py does not change under a running process)."""
    found = (_problem(path, expects, names) for path, expects, names, _ in INTERNALS)
    return tuple(problem for problem in found if problem is not None)


def check(allowed: str | None = None) -> None:
    """Refuse to start on a redis-py we were not tested with or whose internals differ.

    ``allowed``: the ``redis.allow_redis_py`` setting (else the ``PYRAMID_REDISX_ALLOW_REDIS_PY``
    environment variable): a version outside the tested range to run on anyway, still
    only if every internal matches. Raises ``RedisPyUnsupported``.
    """
    installed = version()
    allowed = allowed or os.environ.get(ENVIRON) or None
    wrong = problems()
    if wrong:
        raise RedisPyUnsupported(
            f"pyramid_redisx cannot run on redis-py {installed}: it replaces or reads redis-py "
            f"internals that this version does not have as expected: {'; '.join(wrong)}. "
            f"Tested: redis-py {RANGE}. Fix: {PIN} (no setting overrides this)."
        )
    if tested(installed):
        return
    if allows(allowed, installed):
        log.warning(
            "redis-py %s is outside the range pyramid_redisx was tested with (%s); running "
            "anyway as %s = %s says (its internals match what pyramid_redisx expects)",
            installed, RANGE, SETTING, allowed,
        )  # fmt: skip
        return
    hatch = ".".join(str(n) for n in _numbers(installed)[:2]) or installed
    given = f" ({SETTING} = {allowed} allows {allowed} only)" if allowed else ""
    raise RedisPyUnsupported(
        f"pyramid_redisx is tested with redis-py {RANGE}, and redis-py {installed} is "
        f"installed{given}. Fix: {PIN}; or, to run on {installed} untested (its internals "
        f"match what pyramid_redisx expects), set {SETTING} = {hatch}."
    )
