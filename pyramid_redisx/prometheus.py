"""The Prometheus endpoint (``redis.metrics_route``), built on ``prometheus_client``.

The metrics are those of ``telemetry.py`` under the names OpenTelemetry's Prometheus
exporter would give them (``db.client.operation.duration`` in seconds becomes
``db_client_operation_duration_seconds``), so one dashboard reads either way out.

Worker processes (gunicorn ``-w 4``, with or without ``--preload``): each worker has
its own pools, and a scrape reaches one worker. With ``PROMETHEUS_MULTIPROC_DIR`` set in
the environment the server starts with, ``prometheus_client``'s multiprocess mode keeps
each process's figures in files there, and the endpoint sums them over the processes:
counters and histograms of every process that ran (a restarted worker's counts are not
lost), pool gauges (``livesum``) only of the live ones. Gauges are written by each worker
at the end of each of its requests, every second by a thread of its own (started at its
first request, so that a stalled Redis, which holds every request, shows as it happens)
and by the scraping worker before it answers; the files of a worker that died are
removed at the next scrape (or by ``child_exit``, for gunicorn's hook). Without that variable the figures are the one
process's, right for waitress or any threaded single-process server.

Needs the ``prometheus`` extra.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from pyramid.response import Response

from .cluster import REDIRECTIONS
from .errors import RedisSettingsError
from .telemetry import (
    CACHE_COUNTERS,
    CACHE_GAUGES,
    COMMANDS_BUCKETS,
    DURATION_BUCKETS,
    STATE,
    WAIT_BUCKETS,
    Observer,
    Telemetry,
    error_kind,
    pool_name,
    pool_state,
)

PREFIXES = ("db_client_", "pyramid_redisx_")  # the families the endpoint shows
POOL = "db_client_connection_pool_name"
CLIENT = "pyramid_redisx_client_name"


def multiprocess_dir() -> str | None:
    """The multiprocess directory when ``prometheus_client`` is in that mode (it decides
    when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``)."""
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get(
        "prometheus_multiproc_dir"  # noqa: SIM112 - the older name prometheus_client reads
    )


class PrometheusMetrics:
    """One app's metrics (its own ``CollectorRegistry``), a telemetry sink."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.directory = multiprocess_dir()
        if self.directory is not None and not os.path.isdir(self.directory):
            raise RedisSettingsError(
                "redis.metrics_route", telemetry.app.metrics_route,
                f"PROMETHEUS_MULTIPROC_DIR={self.directory} is not a directory: create it "
                "(empty) before the server starts",
            )  # fmt: skip
        self.registry = CollectorRegistry(auto_describe=True)
        live: dict[str, Any] = {"registry": self.registry, "multiprocess_mode": "livesum"}
        self.connections = Gauge(
            "db_client_connection_count", "Connections of the pool by state (used, idle)",
            [POOL, "db_client_connection_state"], **live,
        )  # fmt: skip
        self.max = Gauge(
            "db_client_connection_max", "Most connections the pool may open", [POOL], **live
        )
        self.pending = Gauge(
            "db_client_connection_pending_requests",
            "Threads waiting for a free pool connection", [POOL], **live,
        )  # fmt: skip
        self.duration = Histogram(
            "db_client_operation_duration_seconds",
            "Duration of Redis commands and pipelines (the wait for a pool connection excluded)",
            ["db_operation_name", CLIENT, "error_type"], buckets=DURATION_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.wait = Histogram(
            "db_client_connection_wait_time_seconds",
            "Time a request waited for a free pool connection", [POOL],
            buckets=WAIT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.commands = Histogram(
            "pyramid_redisx_request_commands", "Redis commands a request ran, per client",
            [CLIENT], buckets=COMMANDS_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "pyramid_redisx_errors", "Failed commands and pipelines by kind",
            [CLIENT, "pyramid_redisx_error_kind", "error_type"], registry=self.registry,
        )  # fmt: skip
        self.failovers = Counter(
            "pyramid_redisx_sentinel_failovers", "Master changes a Sentinel client has seen",
            [POOL], registry=self.registry,
        )  # fmt: skip
        self.redirections = Counter(
            "pyramid_redisx_cluster_redirections", "MOVED and ASK replies from Cluster nodes",
            ["pyramid_redisx_redirection_kind"], registry=self.registry,
        )  # fmt: skip
        self.cache = Counter(
            "pyramid_redisx_cache_lookups", "HTTP cache and dogpile.cache lookups by result",
            ["pyramid_redisx_cache_name", "pyramid_redisx_cache_result"], registry=self.registry,
        )  # fmt: skip
        # The client cache's figures, per pool: counters (their increase since the last
        # write) and gauges, as for the pools.
        self.cache_counters = {
            name: Counter(f"pyramid_redisx_client_cache_{name}", text, [POOL], registry=self.registry)
            for name, _, text in CACHE_COUNTERS
        }  # fmt: skip
        self.cache_gauges = {
            name: Gauge(f"pyramid_redisx_client_cache_{name}", text, [POOL], **live)
            for name, _, text in CACHE_GAUGES
        }
        self._seen_cache: dict[tuple[int, str], int] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        self._seen_failovers: dict[int, int] = {}
        self._seen_redirections: dict[str, int] = {}
        self._refreshing_pid: int | None = None

    # the sink ----------------------------------------------------------------
    def command(self, client: str, op: str, seconds: float, error: BaseException | None) -> None:
        if error is None:
            child = self._durations.get((client, op))
            if child is None:
                child = self.duration.labels(op, client, "")
                if len(self._durations) < 10_000:
                    self._durations[(client, op)] = child
            child.observe(seconds)
            return
        name = type(error).__name__
        self.duration.labels(op, client, name).observe(seconds)
        self.errors.labels(client, error_kind(error), name).inc()

    def request(self, observer: Observer, commands: int, waited: float) -> None:
        if commands:
            self.commands.labels(observer.name).observe(commands)
            self.wait.labels(observer.pool_name).observe(waited)
        self._pool(observer.pool)
        if REDIRECTIONS:
            self._counts()
        if self.directory is not None and self._refreshing_pid != os.getpid():
            self._refreshing_pid = os.getpid()  # the first request of this process
            start_refresher(self)

    def cache_lookup(self, cache: str, hit: bool) -> None:
        self.cache.labels(cache, "hit" if hit else "miss").inc()

    # figures of this process -------------------------------------------------
    def _pool(self, pool: Any) -> None:
        """This process's figures of ``pool``: written where the scrape reads them."""
        in_use, idle, most, waiting = pool_state(pool)
        name = pool_name(pool)
        self.connections.labels(name, "used").set(in_use)
        self.connections.labels(name, "idle").set(idle)
        self.max.labels(name).set(most)
        self.pending.labels(name).set(waiting)
        cache = getattr(pool, "client_cache", None)
        if cache is not None:
            self._cache(name, cache)
        failovers = getattr(pool, "failovers", None)
        if failovers is not None:
            seen = self._seen_failovers.get(id(pool), 0)
            if failovers > seen:
                self.failovers.labels(name).inc(failovers - seen)
                self._seen_failovers[id(pool)] = failovers

    def _cache(self, name: str, cache: Any) -> None:
        figures = cache.figures()
        for figure, counter in self.cache_counters.items():
            seen = self._seen_cache.get((id(cache), figure), 0)
            if figures[figure] > seen:
                counter.labels(name).inc(figures[figure] - seen)
                self._seen_cache[(id(cache), figure)] = figures[figure]
        for figure, gauge in self.cache_gauges.items():
            gauge.labels(name).set(figures[figure])

    def _counts(self) -> None:
        for kind in ("moved", "ask"):
            count = REDIRECTIONS[kind]
            seen = self._seen_redirections.get(kind, 0)
            if count > seen:
                self.redirections.labels(kind).inc(count - seen)
                self._seen_redirections[kind] = count

    def refresh(self) -> None:
        """Every pool of the app and the process's counts (before a scrape)."""
        for pool in self.telemetry.pools():
            self._pool(pool)
        self._counts()

    # the exposition ----------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        """The add-on's metric families: this process's, or every process's."""
        self.refresh()
        if self.directory is None:
            yield from self.registry.collect()
            return
        remove_dead_processes(self.directory)
        for family in multiprocess.MultiProcessCollector(None, self.directory).collect():
            if family.name.startswith(PREFIXES):
                yield family


REFRESH = 1.0  # seconds between two writes of a worker's pool figures


def start_refresher(metrics: PrometheusMetrics) -> None:
    """A daemon thread writing this process's figures every ``REFRESH`` seconds while
    ``metrics`` (its app) lives: requests that hang on a stalled Redis write none."""
    reference = weakref.ref(metrics)

    def run() -> None:
        while True:
            time.sleep(REFRESH)
            metrics = reference()
            if metrics is None:
                return
            with contextlib.suppress(Exception):  # never take the worker down
                metrics.refresh()
            del metrics

    threading.Thread(target=run, name="pyramid_redisx-prometheus", daemon=True).start()


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def remove_dead_processes(directory: str) -> None:
    """``mark_process_dead`` for every process whose live gauges are still on disk but
    that no longer runs (a worker that exited or was killed)."""
    pids = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(os.path.basename(path))
        if match:
            pids.add(int(match.group(1)))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass  # alive, another user's


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (``child_exit = pyramid_redisx.prometheus.child_exit`` in its config
    file, or call it from yours): forget a worker's live gauges as soon as it exits."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(worker.pid, directory)


class AddonCollector:
    """A collector for an app's own ``/metrics`` (``REGISTRY.register(collector(...))``):
    the add-on's families, read from the app's registry at each scrape."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        telemetry = getattr(self.registry, STATE, None)
        if telemetry is not None and telemetry.prometheus is not None:
            yield from telemetry.prometheus.collect()


def collector(registry: Any) -> AddonCollector:
    """The add-on's metrics for your own exposition, in one process: ``registry`` is the
    Pyramid app's (``config.registry``), whose ``redis.metrics_route`` is set (the
    metrics exist then). In multiprocess mode your ``MultiProcessCollector`` already
    reads them from ``PROMETHEUS_MULTIPROC_DIR``: register nothing."""
    return AddonCollector(registry)


class _Families:
    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self.metrics.collect()


def metrics_view(context: Any, request: Any) -> Response:
    """``redis.metrics_route``: the Prometheus text exposition of the add-on's metrics
    (Pyramid's (context, request) form, as ``health.health_view``)."""
    telemetry: Telemetry = getattr(request.registry, STATE)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(telemetry.prometheus))  # type: ignore[arg-type]
    response = Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.cache_control = "no-store"
    return response
