"""Production telemetry: OpenTelemetry spans and metrics, and the figures behind the
Prometheus endpoint (``prometheus.py``).

Off by default. ``redis.tracing``, ``redis.metrics`` or ``redis.metrics_route`` make
``includeme`` call ``register``, which, once every client is declared, gives each client
an ``Observer``. The clients call it at the end of each command and pipeline and the
request integration at the end of each request: the hooks in ``client.py``,
``cluster.py`` and ``request.py`` read one attribute (``_redisx_observer``,
``Usage.observer``) that is None while telemetry is off.

Spans: when ``opentelemetry-instrumentation-redis`` is instrumenting (its wrapper sits
on redis-py's ``execute_command`` / ``execute``, which our clients call), its span is
the span of the command: the observer, running inside it, adds the client name and the
wait for a pool connection. Otherwise the observer makes the span itself, after the
command, with the command's start and end times and the current span (the request's)
as parent: one call per command, no context switch.

Metrics go to "sinks": OpenTelemetry instruments (``OTelMetrics``, one set per process)
and the app's Prometheus metrics (``prometheus.PrometheusMetrics``). Pool figures are
read from the pools' public ``get_connection_count()``.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Iterable, Iterator
from time import perf_counter, time_ns
from typing import Any

import redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import AuthenticationError, BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.observability.recorder import is_enabled

from .client import ClientSet
from .cluster import REDIRECTIONS
from .errors import CommandMayHaveBeenApplied, RedisSettingsError
from .pools import NoQueue, PoolExhausted, pool_figures
from .settings import PREFIX, AppOptions
from .usage import command_name

STATE = "pyramid_redisx_telemetry"  # registry attribute: the app's Telemetry

# Attribute names: OpenTelemetry's database semantic conventions, and two of our own.
DB_SYSTEM_NAME = "db.system.name"
DB_SYSTEM = "db.system"  # the older name, still what many backends key service maps on
DB_OPERATION = "db.operation.name"
DB_NAMESPACE = "db.namespace"
DB_QUERY = "db.query.text"
DB_BATCH_SIZE = "db.operation.batch.size"
DB_STATUS = "db.response.status_code"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
POOL_NAME = "db.client.connection.pool.name"
STATE_ATTRIBUTE = "db.client.connection.state"
CLIENT_NAME = "pyramid_redisx.client.name"
WAIT_TIME = "pyramid_redisx.connection.wait_time"  # seconds waited for a pool connection
ERROR_KIND = "pyramid_redisx.error.kind"

# Histogram buckets (seconds; commands): a loopback GET is ~0.1 ms, a timeout seconds.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip
WAIT_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMANDS_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

KEY_SHOWN = 64  # characters of a key shown in a statement

# The client cache's figures (client_cache.ClientCache.figures), per pool: counters...
CACHE_COUNTERS = (
    ("hits", "{read}", "Reads the client cache answered from process memory"),
    ("misses", "{read}", "Reads the client cache could serve but sent to the server"),
    ("invalidations", "{entry}", "Cached replies dropped because their keys changed"),
    ("flushes", "{flush}", "Times the client cache forgot everything (lost invalidations, failover)"),
    ("evictions", "{entry}", "Cached replies dropped to stay within the memory bounds"),
)  # fmt: skip
# ... and gauges.
CACHE_GAUGES = (
    ("entries", "{entry}", "Replies the client cache keeps"),
    ("bytes", "By", "Memory the kept replies take (estimated)"),
)


# ---------------------------------------------------------------- errors by kind
def error_kind(error: BaseException) -> str:
    """``may_have_been_applied``, ``timeout``, ``pool_exhausted``, ``connection``,
    ``error_reply`` or ``other``: what an operator acts on differently."""
    if isinstance(error, CommandMayHaveBeenApplied):
        return "may_have_been_applied"
    if isinstance(error, RedisTimeoutError):
        return "timeout"
    if isinstance(error, PoolExhausted):
        return "pool_exhausted"
    # -LOADING, -NOAUTH, -WRONGPASS: redis-py types these replies as connection errors,
    # but the server answered and the connection is fine.
    if isinstance(error, BusyLoadingError | AuthenticationError | ResponseError):
        return "error_reply"
    if isinstance(error, RedisConnectionError):
        return "connection"
    return "other"


def _status_code(error: BaseException) -> str | None:
    """The error reply's prefix (``WRONGTYPE``, ``ERR``), as semantic conventions ask;
    in a pipeline's, after redis-py's "Command # n (...) of pipeline caused error: "."""
    if not isinstance(error, ResponseError):
        return None
    text = str(error)
    if text.startswith("Command # "):
        text = text.partition(" caused error: ")[2]
    word = text.split(" ", 1)[0]
    return word if word.isupper() and word.isalpha() else "ERR"


# ---------------------------------------------------------------- statements
# Commands that take arguments but whose first argument is not a key: a password (AUTH,
# HELLO), a value (ECHO, PUBLISH's message), a script, a number or a pattern.
# Their arguments are all shown as ``?``. tests/test_telemetry.py checks this set against
# the server's COMMAND table (first key position), so a command is listed iff its first
# argument is not a key.
NO_KEY_FIRST = frozenset(
    """AUTH HELLO ECHO PING SELECT SWAPDB PUBLISH SUBSCRIBE PSUBSCRIBE UNSUBSCRIBE
    PUNSUBSCRIBE EVAL EVALSHA EVAL_RO EVALSHA_RO FCALL FCALL_RO MIGRATE WAIT WAITAOF
    FAILOVER REPLICAOF SLAVEOF SHUTDOWN BITOP XREAD XREADGROUP ZUNION ZINTER ZDIFF LMPOP
    BLMPOP ZMPOP BZMPOP SINTERCARD ZINTERCARD SCAN KEYS INFO FLUSHALL FLUSHDB BGSAVE
    LOLWUT PSYNC REPLCONF QUIT PFDEBUG""".split()  # noqa: SIM905 - words read better as words
)
# Commands whose first argument is a subcommand: shown as part of the name.
CONTAINERS = frozenset(
    """ACL CLIENT CLUSTER COMMAND CONFIG DEBUG FUNCTION LATENCY MEMORY MODULE OBJECT PUBSUB
    SCRIPT SLOWLOG XINFO XGROUP SENTINEL""".split()  # noqa: SIM905
)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    return text if len(text) <= KEY_SHOWN else text[:KEY_SHOWN] + "…"


def statement(args: tuple[Any, ...], level: str) -> str | None:
    """A command as ``db.query.text``, never showing a value: ``keys``: its name, its
    first argument if that is a key, ``?`` for each other argument (``SET user:1 ?``);
    ``command``: its name and ``?`` (as opentelemetry-instrumentation-redis shows it);
    ``none``: None."""
    if level == "none" or not args:
        return None
    name = command_name(args[0]).replace("_", " ")
    shown = [name]
    rest = args[1:]
    if level == "keys" and rest:
        head = name.partition(" ")[0]
        if head in CONTAINERS:
            if " " not in name:  # the subcommand is the next argument
                sub = _text(rest[0])
                shown.append(sub.upper() if sub.isalpha() and len(sub) <= 20 else "?")
                rest = rest[1:]
        elif " " not in name and name not in NO_KEY_FIRST:
            shown.append(_text(rest[0]))
            rest = rest[1:]
    shown.extend("?" * len(rest))
    return " ".join(shown)


def pipeline_statement(stack: Iterable[Any], level: str) -> str | None:
    if level == "none":
        return None
    return "\n".join(statement(args, level) or "" for args in stack)


# ---------------------------------------------------------------- instrumentations
def instrumented(owner: type, method: str) -> bool:
    """True while opentelemetry-instrumentation-redis wraps ``owner.method`` (a wrapt
    wrapper whose wrapper function is the instrumentation's): its spans are then the
    commands' spans, and ours would be duplicates."""
    wrapper = getattr(owner.__dict__.get(method), "_self_wrapper", None)
    module = getattr(wrapper, "__module__", None) or ""
    return module.startswith("opentelemetry.instrumentation.redis")


def _current_span() -> Any:
    from opentelemetry import trace  # optional: the otel extra, only with tracing on

    return trace.get_current_span()


# ---------------------------------------------------------------- pools
def pool_name(pool: Any) -> str:
    """The clients sharing ``pool`` (clients with equal options share one)."""
    return ",".join(getattr(pool, "client_names", ())) or "?"


def pending(pool: Any) -> int:
    """Threads waiting for a free connection of ``pool`` (node pools summed)."""
    node_pools = getattr(pool, "node_pools", None)
    pools = node_pools() if node_pools is not None else (pool,)
    return sum(getattr(p, "pool", NoQueue).waiting for p in pools)


def pool_state(pool: Any) -> tuple[int, int, int, int]:
    """(in use, idle, max, threads waiting) from the pool's public figures."""
    in_use, idle, most = pool_figures(pool)
    return in_use, idle, most, pending(pool)


# ---------------------------------------------------------------- the observer
class Observer:
    """Telemetry of one client: spans and metrics of its commands, pipelines, requests.

    ``sinks`` record metrics (``command``, ``request``); ``tracer`` is None without
    tracing. ``owners`` are the redis-py classes whose ``execute_command`` and
    ``execute`` the instrumentation would wrap for this client's kind.
    """

    def __init__(
        self, name: str, options: Any, pool: Any, tracer: Any, level: str, sinks: tuple[Any, ...]
    ) -> None:
        self.name = name
        self.pool = pool
        self.pool_name = pool_name(pool)
        self.tracer = tracer
        self.level = level
        self.sinks = sinks
        cluster = options.kind == "cluster"
        self.command_owner = RedisCluster if cluster else _redis_class()
        self.pipeline_owner = ClusterPipeline if cluster else Pipeline
        self.static = {
            DB_SYSTEM_NAME: "redis",
            DB_SYSTEM: "redis",
            DB_NAMESPACE: str(options.db),
            CLIENT_NAME: name,
        }

    # commands ----------------------------------------------------------------
    def command(
        self,
        conn: Any,
        name: Any,
        args: tuple[Any, ...],
        started: float,
        waited: float,
        error: BaseException | None,
        inside: bool = True,
    ) -> None:
        """After a command that started at ``started`` (``perf_counter``), ``waited``
        seconds of which for a pool connection. ``inside``: called within the
        instrumentation's span, if any (the standalone client)."""
        seconds = perf_counter() - started
        op = command_name(name)
        for sink in self.sinks:
            sink.command(self.name, op, seconds - waited, error)
        if self.tracer is None:
            return
        if instrumented(self.command_owner, "execute_command"):
            if inside:
                self.enrich(waited)
            return
        self._span(op, statement(args, self.level), seconds, waited, error, conn, 0)

    def enrich_command(self, waited: float) -> None:
        """Inside a Cluster node command: our attributes on the instrumentation's span."""
        if self.tracer is not None and instrumented(self.command_owner, "execute_command"):
            self.enrich(waited)

    def enrich(self, waited: float) -> None:
        """Our attributes on the instrumentation's span (the current one)."""
        span = _current_span()
        if span.is_recording():
            span.set_attribute(CLIENT_NAME, self.name)
            span.set_attribute(WAIT_TIME, waited)

    # pipelines ---------------------------------------------------------------
    def pipeline(
        self,
        stack: list[Any],
        transaction: bool,
        started: float,
        waited: float,
        error: BaseException | None,
        conn: Any,
    ) -> None:
        """After a pipeline (or MULTI/EXEC) of the commands ``stack`` (their args)."""
        seconds = perf_counter() - started
        op = "MULTI" if transaction else "PIPELINE"
        for sink in self.sinks:
            sink.command(self.name, op, seconds - waited, error)
        if self.tracer is None or instrumented(self.pipeline_owner, "execute"):
            return
        self._span(
            op, pipeline_statement(stack, self.level), seconds, waited, error, conn, len(stack)
        )

    def enrich_pipeline(self, waited: float) -> None:
        """Inside a pipeline's send: our attributes on the instrumentation's span."""
        if self.tracer is not None and instrumented(self.pipeline_owner, "execute"):
            self.enrich(waited)

    # spans -------------------------------------------------------------------
    def _span(
        self,
        op: str,
        query: str | None,
        seconds: float,
        waited: float,
        error: BaseException | None,
        conn: Any,
        batch: int,
    ) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode  # optional: otel extra

        end = time_ns()
        attributes = {**self.static, DB_OPERATION: op, WAIT_TIME: waited}
        if query is not None:
            attributes[DB_QUERY] = query
        if batch:
            attributes[DB_BATCH_SIZE] = batch
        if conn is not None:
            path = getattr(conn, "path", None)
            if path:
                attributes[SERVER_ADDRESS] = path
            else:
                attributes[SERVER_ADDRESS] = conn.host
                attributes[SERVER_PORT] = conn.port
        if error is not None:
            attributes[ERROR_TYPE] = _qualified(error)
            code = _status_code(error)
            if code is not None:
                attributes[DB_STATUS] = code
        span = self.tracer.start_span(
            op,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=end - int(seconds * 1e9),
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end(end_time=end)

    # requests ----------------------------------------------------------------
    def request_done(self, usage: Any) -> None:
        """At the end of a request that used this client (connections given back)."""
        for sink in self.sinks:
            sink.request(self, usage.commands, usage.waited)


def _qualified(error: BaseException) -> str:
    cls = type(error)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _redis_class() -> type:
    return redis.Redis


# ---------------------------------------------------------------- OpenTelemetry metrics
class OTelMetrics:
    """The OpenTelemetry instruments, one set per process (the meter provider's own
    instruments are per process too); the pools of every live app are observed.

    With redis-py's own observability on (``redis.observability``), redis-py records
    ``db.client.operation.duration``, ``db.client.connection.count`` and
    ``db.client.connection.wait_time`` for our clients itself: ours are then not
    recorded, so nothing is counted twice.
    """

    def __init__(self) -> None:
        from opentelemetry import metrics  # optional: the otel extra

        self.apps: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        self.by_redis_py = is_enabled()
        meter = metrics.get_meter("pyramid_redisx")
        self.duration = meter.create_histogram(
            "db.client.operation.duration", unit="s",
            description="Duration of Redis commands and pipelines (the wait for a pool connection excluded)",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )  # fmt: skip
        self.errors = meter.create_counter(
            "pyramid_redisx.errors", unit="{error}",
            description="Failed commands and pipelines by kind (connection, timeout, may_have_been_applied, pool_exhausted, error_reply, other)",
        )  # fmt: skip
        self.wait = meter.create_histogram(
            "db.client.connection.wait_time", unit="s",
            description="Time a request waited for a free pool connection",
            explicit_bucket_boundaries_advisory=list(WAIT_BUCKETS),
        )  # fmt: skip
        self.commands = meter.create_histogram(
            "pyramid_redisx.request.commands", unit="{command}",
            description="Redis commands a request ran, per client",
            explicit_bucket_boundaries_advisory=list(COMMANDS_BUCKETS),
        )  # fmt: skip
        self.cache = meter.create_counter(
            "pyramid_redisx.cache.lookups", unit="{lookup}",
            description="HTTP cache and dogpile.cache lookups by result (hit, miss)",
        )  # fmt: skip
        if not self.by_redis_py:
            meter.create_observable_up_down_counter(
                "db.client.connection.count", [self._counts], unit="{connection}",
                description="Connections of the pool by state (used, idle)",
            )  # fmt: skip
        meter.create_observable_up_down_counter(
            "db.client.connection.max", [self._max], unit="{connection}",
            description="Most connections the pool may open",
        )  # fmt: skip
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests", [self._pending], unit="{request}",
            description="Threads waiting for a free pool connection",
        )  # fmt: skip
        meter.create_observable_counter(
            "pyramid_redisx.sentinel.failovers", [self._failovers], unit="{failover}",
            description="Master changes a Sentinel client has seen",
        )  # fmt: skip
        meter.create_observable_counter(
            "pyramid_redisx.cluster.redirections", [self._redirections], unit="{redirection}",
            description="MOVED and ASK replies received from Cluster nodes",
        )  # fmt: skip
        for name, unit, description in CACHE_COUNTERS:
            meter.create_observable_counter(
                f"pyramid_redisx.client_cache.{name}", [self._cache_figure(name)], unit=unit,
                description=description,
            )  # fmt: skip
        for name, unit, description in CACHE_GAUGES:
            meter.create_observable_up_down_counter(
                f"pyramid_redisx.client_cache.{name}", [self._cache_figure(name)], unit=unit,
                description=description,
            )  # fmt: skip
        self._attributes: dict[tuple[str, str], dict[str, str]] = {}

    def command(self, client: str, op: str, seconds: float, error: BaseException | None) -> None:
        attributes = self._attributes.get((client, op))
        if attributes is None:
            attributes = {DB_SYSTEM_NAME: "redis", DB_OPERATION: op, CLIENT_NAME: client}
            if len(self._attributes) < 10_000:
                self._attributes[(client, op)] = attributes
        if error is None:
            if not self.by_redis_py:
                self.duration.record(seconds, attributes)
            return
        kind = error_kind(error)
        failed = {**attributes, ERROR_TYPE: _qualified(error)}
        if not self.by_redis_py:
            self.duration.record(seconds, failed)
        self.errors.add(1, {CLIENT_NAME: client, ERROR_KIND: kind, ERROR_TYPE: failed[ERROR_TYPE]})

    def request(self, observer: Observer, commands: int, waited: float) -> None:
        if not commands:
            return
        self.commands.record(commands, {CLIENT_NAME: observer.name})
        if not self.by_redis_py:
            self.wait.record(waited, {POOL_NAME: observer.pool_name})

    def cache_lookup(self, cache: str, hit: bool) -> None:
        self.cache.add(1, {"pyramid_redisx.cache.name": cache,
                           "pyramid_redisx.cache.result": "hit" if hit else "miss"})  # fmt: skip

    # observable instruments: the pools of the live apps
    def _pools(self) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        for app in list(self.apps):
            for pool in app.pools():
                if id(pool) not in seen:
                    seen.add(id(pool))
                    yield pool_name(pool), pool

    def _counts(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation  # optional: the otel extra

        for name, pool in self._pools():
            in_use, idle, _ = pool_figures(pool)
            yield Observation(in_use, {POOL_NAME: name, STATE_ATTRIBUTE: "used"})
            yield Observation(idle, {POOL_NAME: name, STATE_ATTRIBUTE: "idle"})

    def _max(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation  # optional: the otel extra

        for name, pool in self._pools():
            yield Observation(pool.max_connections, {POOL_NAME: name})

    def _pending(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation  # optional: the otel extra

        for name, pool in self._pools():
            yield Observation(pending(pool), {POOL_NAME: name})

    def _failovers(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation  # optional: the otel extra

        for name, pool in self._pools():
            if hasattr(pool, "failovers"):
                yield Observation(pool.failovers, {POOL_NAME: name})

    def _cache_figure(self, name: str) -> Any:
        def observe(options: Any) -> Iterator[Any]:
            from opentelemetry.metrics import Observation  # optional: the otel extra

            for pool_label, pool in self._pools():
                cache = getattr(pool, "client_cache", None)
                if cache is not None:
                    yield Observation(cache.figures()[name], {POOL_NAME: pool_label})

        return observe

    def _redirections(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation  # optional: the otel extra

        for kind in ("moved", "ask"):
            yield Observation(REDIRECTIONS[kind], {"pyramid_redisx.redirection.kind": kind})


_OTEL: list[OTelMetrics] = []


def otel_metrics() -> OTelMetrics:
    """The process's OpenTelemetry instruments, made at first use."""
    if not _OTEL:
        _OTEL.append(OTelMetrics())
    return _OTEL[0]


# ---------------------------------------------------------------- the app's telemetry
class Telemetry:
    """One app's telemetry: its sinks, its tracer, an observer per client."""

    def __init__(self, app: AppOptions, clients: ClientSet, prometheus: Any = None) -> None:
        self.app = app
        self.clients = weakref.ref(clients)
        self.sinks: list[Any] = []
        self.tracer: Any = None
        self.prometheus: Any = None
        if app.tracing:
            from opentelemetry import trace  # optional: the otel extra

            self.tracer = trace.get_tracer("pyramid_redisx")
        if app.metrics:
            otel = otel_metrics()
            otel.apps.add(self)
            self.sinks.append(otel)
        if app.metrics_route is not None and prometheus is not None:
            self.prometheus = prometheus.PrometheusMetrics(self)
            self.sinks.append(self.prometheus)

    def pools(self) -> list[Any]:
        clients = self.clients()
        if clients is None:
            return []
        distinct: dict[int, Any] = {}
        for pool in clients.pools().values():
            distinct.setdefault(id(pool), pool)
        return list(distinct.values())

    def attach(self) -> None:
        """An observer for every declared client (after the configuration's commit)."""
        clients = self.clients()
        if clients is None:
            return
        sinks = tuple(self.sinks)
        for name, options in clients.options.items():
            pool = clients.clients[name].connection_pool
            observer = Observer(name, options, pool, self.tracer, self.app.tracing_statement, sinks)
            clients.observe(name, observer)

    def cache_lookup(self, cache: str, hit: bool) -> None:
        for sink in self.sinks:
            sink.cache_lookup(cache, hit)


def cache_lookup(registry: Any, cache: str, hit: bool) -> None:
    """A lookup of the HTTP cache or dogpile integration (cheap when telemetry is off)."""
    telemetry = getattr(registry, STATE, None)
    if telemetry is not None:
        telemetry.cache_lookup(cache, hit)


def _require(module: str, key: str, extra: str) -> None:
    try:
        importlib.import_module(module)  # optional: only to say which extra is missing
    except ImportError:
        raise RedisSettingsError(
            PREFIX + key, "on", f"needs the {extra} extra: pip install 'pyramid_redisx[{extra}]'"
        ) from None


def register(config: Any, clients: ClientSet, prometheus: Any = None) -> None:
    """Called by ``includeme`` when any telemetry setting is on: the observers are made
    after every client is declared (an action ordered after the clients').
    ``prometheus``: the ``pyramid_redisx.prometheus`` module, when
    ``redis.metrics_route`` is set (it sits above this module, and needs its extra)."""
    app = clients.app
    if app.tracing:
        _require("opentelemetry.trace", "tracing", "otel")
    if app.metrics:
        _require("opentelemetry.metrics", "metrics", "otel")
    if app.metrics_route is not None:
        _require("prometheus_client", "metrics_route", "prometheus")

    def attach() -> None:
        app_now = clients.app  # settings may have changed until the commit
        if not app_now.telemetry:
            return
        telemetry = Telemetry(app_now, clients, prometheus)
        setattr(config.registry, STATE, telemetry)
        telemetry.attach()

    config.action(None, attach, order=2)
    if app.metrics_route is not None and prometheus is not None:
        config.add_route("pyramid_redisx.metrics", app.metrics_route)
        config.add_view(prometheus.metrics_view, route_name="pyramid_redisx.metrics")
