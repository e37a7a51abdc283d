"""Fail-soft: a cache Redis cannot serve just now is a miss, not an error page.

    from pyramid_redisx import fail_soft

    cache = fail_soft(request.redis)           # or fail_soft(get_redis(request, "cache"))
    page = cache.get(key)                       # None while Redis is unreachable or the circuit is open
    if page is None:
        page = render()
        cache.set(key, page, ex=60)             # skipped (None) while Redis is down

``fail_soft(client, default)`` wraps any client (or pipeline): each command returns
``default`` instead of raising when Redis cannot be used just now (unreachable, the
circuit open, no free connection, still loading; ``breaker.unavailable``), and every such
soft failure is counted: on the request (``soft_failures=`` in its stats line) and on the
pool (the health view and the toolbar). Anything else (an error reply such as WRONGTYPE,
an authentication error, a bug) is raised as usual. The HTTP cache and dogpile.cache
backends use ``soft_call`` when their client has ``redis.<name>.fail_soft = true``;
sessions never do (a session lost silently is data loss).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from redis.client import Pipeline
from redis.cluster import ClusterPipeline

from .breaker import unavailable

_LOCK = threading.Lock()


def note_soft_failure(client: Any) -> None:
    """Count one soft failure of ``client``: on its request, if it is bound to one, and
    on its pool (process total)."""
    usage = getattr(client, "_redisx_usage", None)  # a request's copy makes it now
    if usage is not None:
        usage.soft_failures = getattr(usage, "soft_failures", 0) + 1
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        with _LOCK:
            pool.soft_failures = getattr(pool, "soft_failures", 0) + 1


def soft_failures(pool: Any) -> int:
    """Soft failures of ``pool``'s clients in this process."""
    return int(getattr(pool, "soft_failures", 0))


def soft_call(
    client: Any, call: Callable[..., Any], default: Any, *args: Any, **kwargs: Any
) -> Any:
    """``call(*args, **kwargs)``, or ``default`` (counted) when Redis cannot be used now."""
    try:
        return call(*args, **kwargs)
    except Exception as error:
        if not unavailable(error):
            raise
        note_soft_failure(client)
        return default


class SoftClient:
    """A client (or pipeline) whose commands return a default instead of raising while
    Redis cannot be used; ``failures`` counts those of this wrapper (and of the
    pipelines it made), ``last_error`` is the last error it swallowed."""

    def __init__(self, client: Any, default: Any = None, parent: SoftClient | None = None) -> None:
        self._client = client
        self._default = default
        self._root: SoftClient = parent._root if parent is not None else self
        self.failures = 0  # of this wrapper and of the pipelines it made
        self.last_error: Exception | None = None  # the last one swallowed, for logs

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = attribute(*args, **kwargs)
            except Exception as error:
                if not unavailable(error):
                    raise
                self._root.failures += 1
                self._root.last_error = error
                note_soft_failure(self._client)
                return self._default
            if isinstance(result, Pipeline | ClusterPipeline):  # its execute() is soft too
                return SoftClient(result, self._default, self)
            return result

        return call

    def __repr__(self) -> str:
        return f"<fail_soft({self._client!r})>"


def fail_soft(client: Any, default: Any = None) -> SoftClient:
    """``client`` whose commands return ``default`` while Redis cannot be used (counted)."""
    return SoftClient(client, default)
