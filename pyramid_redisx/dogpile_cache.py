"""dogpile.cache on pyramid_redisx's clients: the ``pyramid_redisx`` backend.

    from dogpile.cache import make_region
    from pyramid_redisx.dogpile_cache import region_arguments

    region = make_region().configure(
        "pyramid_redisx", expiration_time=300, arguments=region_arguments(config.registry, "cache")
    )

It is dogpile's own ``dogpile.cache.redis`` backend (same serialization, locks and
``redis_expiration_time``) whose client is the app's client ``name``: inside a request
the one bound to that request, so the region's commands count in the request's stats
line and debug panel; elsewhere (scripts, workers) the process-wide client. The
connection (URL, password, TLS, timeouts, pool) comes from the ``redis.*`` settings, so
dogpile's connection arguments (``url``, ``host``, ``connection_pool``...) are refused.

With ``redis.<name>.fail_soft = true`` an unreachable Redis (or an open circuit) is a
miss: reads give ``NO_VALUE`` (the creator runs and its value is served), writes and
deletes are skipped, and a distributed lock that cannot be taken is not waited for (the
value is computed here); each such call is counted (``failsoft.py``).

Needs the ``dogpile`` extra. The backend name is registered as a ``dogpile.cache``
entry point and again when this module is imported.
"""

from __future__ import annotations

from typing import Any

from dogpile.cache import register_backend
from dogpile.cache.api import NO_VALUE
from dogpile.cache.backends.redis import RedisBackend
from pyramid.threadlocal import get_current_request

from .breaker import unavailable
from .failsoft import note_soft_failure, soft_call
from .request import client_set, get_redis
from .settings import DEFAULT_CLIENT
from .telemetry import cache_lookup

BACKEND = "pyramid_redisx"
_CONNECTION_ARGUMENTS = (
    "url", "host", "port", "db", "username", "password", "socket_timeout",
    "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options", "ssl",
    "connection_kwargs", "connection_pool",
)  # fmt: skip


def region_arguments(registry: Any, name: str = DEFAULT_CLIENT, **options: Any) -> dict[str, Any]:
    """``arguments`` for ``region.configure("pyramid_redisx", ...)``: the app's registry,
    the client name, and any option of dogpile's Redis backend (``redis_expiration_time``,
    ``distributed_lock``, ``lock_timeout``...)."""
    return {"registry": registry, "client": name, **options}


class RedisxBackend(RedisBackend):  # type: ignore[misc]
    """dogpile's Redis backend on the app's client (see the module docstring)."""

    def __init__(self, arguments: dict[str, Any]) -> None:
        arguments = dict(arguments)
        registry = arguments.pop("registry", None)
        if registry is None:
            raise ValueError(
                "the pyramid_redisx dogpile.cache backend needs the app's registry: "
                "arguments=region_arguments(config.registry, name)"
            )
        given = sorted(set(arguments) & set(_CONNECTION_ARGUMENTS))
        if given:
            raise ValueError(
                f"the pyramid_redisx dogpile.cache backend takes its connection from the "
                f"redis.* settings; remove {', '.join(given)} from the region's arguments"
            )
        self.registry = registry
        self.client_name = arguments.pop("client", DEFAULT_CLIENT)
        self._process_client: Any = None
        super().__init__(arguments)

    def _create_client(self) -> None:
        """No client of its own: ``writer_client`` is looked up at each use."""

    @property
    def writer_client(self) -> Any:  # type: ignore[override]
        client = self._process_client or self._resolve()
        request = get_current_request()
        if request is not None and getattr(request, "registry", None) is self.registry:
            return get_redis(request, self.client_name)
        return client

    def _resolve(self) -> Any:
        """The process-wide client, at first use: the app's clients exist only once
        its configuration is committed, usually after the region was configured."""
        client = get_redis(self.registry, self.client_name)
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                f"redis client {self.client_name!r} decodes responses (decode_responses "
                "= true); dogpile.cache stores pickled bytes: use a client with "
                "decode_responses = false"
            )
        self.fail_soft = client_set(self.registry).options[self.client_name].fail_soft
        self._process_client = client
        return client

    @property
    def reader_client(self) -> Any:  # type: ignore[override]
        return self.writer_client

    # fail_soft: the same operations, a miss (or nothing) when Redis cannot be used now
    fail_soft = False

    def _soft(self, call: Any, default: Any, *args: Any) -> Any:
        if self._process_client is None:
            self._resolve()
        if not self.fail_soft:
            return call(*args)
        return soft_call(self.writer_client, call, default, *args)

    def get_serialized(self, key: Any) -> Any:
        value = self._soft(super().get_serialized, NO_VALUE, key)
        cache_lookup(self.registry, "dogpile", value is not NO_VALUE)  # telemetry, when on
        return value

    def get_serialized_multi(self, keys: Any) -> Any:
        values = self._soft(super().get_serialized_multi, [NO_VALUE] * len(keys), keys)
        for value in values:
            cache_lookup(self.registry, "dogpile", value is not NO_VALUE)  # telemetry, when on
        return values

    def set_serialized(self, key: Any, value: Any) -> None:
        self._soft(super().set_serialized, None, key, value)

    def set_serialized_multi(self, mapping: Any) -> None:
        self._soft(super().set_serialized_multi, None, mapping)

    def delete(self, key: Any) -> None:
        self._soft(super().delete, None, key)

    def delete_multi(self, keys: Any) -> None:
        self._soft(super().delete_multi, None, keys)

    def get_mutex(self, key: Any) -> Any:
        mutex = super().get_mutex(key)
        if mutex is None or not self.fail_soft:
            return mutex
        return _SoftMutex(self.writer_client, mutex)


class _SoftMutex:
    """dogpile's Redis lock, for a fail-soft client: a lock Redis cannot take is not waited
    for (the caller computes the value itself), and its release is then skipped."""

    def __init__(self, client: Any, mutex: Any) -> None:
        self.client, self.mutex, self.soft = client, mutex, False

    def acquire(self, wait: bool = True) -> Any:
        self.soft = False
        try:
            return self.mutex.acquire(wait)
        except Exception as error:
            if not unavailable(error):
                raise
            note_soft_failure(self.client)
            self.soft = True
            return True

    def release(self) -> Any:
        if self.soft:
            self.soft = False
            return None
        return soft_call(self.client, self.mutex.release, None)

    def locked(self) -> bool:
        return bool(soft_call(self.client, self.mutex.locked, False))


register_backend(BACKEND, __name__, "RedisxBackend")
