"""requests-cache on pyramid_redisx's pool: ``http_cache_backend``.

    from requests_cache import CachedSession
    session = CachedSession(backend=http_cache_backend(request))

The backend stores responses in Redis under ``<namespace>:<key>`` through the client
``name`` (bound to the request when given one, so its commands count for the request).
Options come from the ``redis.http_cache.*`` settings, then from the arguments:

* ``expire_after``: seconds, a span (``5 minutes``) or ``never``; becomes the session's
  expiry unless the session was given one itself;
* ``ttl``: let Redis delete expired responses (requests-cache's default: true);
* ``ttl_offset``: how long Redis keeps them after they expire (for revalidation).

With ``redis.<name>.fail_soft = true`` an unreachable Redis (or an open circuit) is a
cache miss: the origin is called, its response served and not stored; each such call
is counted (``failsoft.py``).

Needs the ``http-cache`` extra (requests-cache).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from pyramid.registry import Registry

from .errors import RedisSettingsError
from .failsoft import soft_call
from .request import client_set, get_redis
from .settings import DEFAULT_CLIENT, duration, to_bool
from .telemetry import cache_lookup

SETTINGS_PREFIX = "redis.http_cache."
NEVER = -1  # requests-cache's NEVER_EXPIRE


def _expire_after(value: object) -> float:
    if isinstance(value, str) and value.strip().lower() in ("never", "-1"):
        return NEVER
    if value == NEVER:
        return NEVER
    return duration()(value)


def _whole_seconds(value: object) -> int:
    return math.ceil(duration()(value))  # Redis TTLs are whole seconds


_CONVERTERS = {
    "expire_after": (_expire_after, "seconds, a span (5 minutes) or never"),
    "ttl": (to_bool, "true or false"),
    "ttl_offset": (_whole_seconds, "seconds or a span (1 hour)"),
}


def parse_http_cache_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``redis.http_cache.*`` settings, converted (``RedisSettingsError`` if bad)."""
    parsed: dict[str, Any] = {}
    for key, value in settings.items():
        if not key.startswith(SETTINGS_PREFIX):
            continue
        option = key[len(SETTINGS_PREFIX) :]
        if option not in _CONVERTERS:
            raise RedisSettingsError(
                key, value, f"not an HTTP cache option; known: {', '.join(_CONVERTERS)}"
            )
        parsed[option] = _convert(key, option, value)
    return parsed


def _convert(key: str, option: str, value: object) -> Any:
    convert, accepted = _CONVERTERS[option]
    try:
        return convert(value)
    except (ValueError, TypeError, RedisSettingsError):
        raise RedisSettingsError(key, value, accepted) from None


def http_cache_backend(
    request_or_registry: Any,
    name: str = DEFAULT_CLIENT,
    namespace: str = "http_cache",
    **options: Any,
) -> Any:
    """A requests-cache ``RedisCache`` on client ``name``'s pool, keys under ``namespace``.

    ``options``: ``expire_after``, ``ttl``, ``ttl_offset`` (over the settings), and any
    other ``RedisCache`` argument (``serializer``...), passed on as is.
    """
    registry = (
        request_or_registry
        if isinstance(request_or_registry, Registry)
        else request_or_registry.registry
    )
    client = get_redis(request_or_registry, name)
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ValueError(
            f"redis client {name!r} decodes responses (decode_responses = true); the HTTP "
            "cache stores pickled bytes: give it a client with decode_responses = false"
        )
    merged = parse_http_cache_settings(registry.settings or {})
    for option, value in options.items():
        merged[option] = _convert(option, option, value) if option in _CONVERTERS else value
    expire_after = merged.pop("expire_after", None)
    backend = _backend_class()(namespace, connection=client, **merged)
    backend.default_expire_after = expire_after
    if client_set(registry).options[name].fail_soft:
        backend.soft_client = client
    backend.redisx_registry = registry
    return backend


@functools.cache
def _backend_class() -> type:
    try:
        from requests_cache.backends.redis import RedisCache  # optional: the http-cache extra
    except ImportError:
        raise ImportError(
            "http_cache_backend needs requests-cache: pip install 'pyramid_redisx[http-cache]'"
        ) from None

    class RedisxHttpCache(RedisCache):  # type: ignore[misc]
        """``RedisCache`` that gives the session its configured expiry.

        ``CachedSession`` replaces the backend's settings with its own on creation: the
        configured ``expire_after`` is applied then, unless the session set one.
        """

        default_expire_after: float | None = None
        _redisx_settings: Any = None
        soft_client: Any = None  # the client, when it fails soft
        redisx_registry: Any = None

        def get_response(self, key: str, default: Any = None) -> Any:
            if self.soft_client is None:
                response = super().get_response(key, default)
            else:
                response = soft_call(self.soft_client, super().get_response, default, key, default)
            # telemetry, when on: a hit is a stored response, not the caller's default
            cache_lookup(self.redisx_registry, "http_cache", response is not default)
            return response

        def save_response(self, *args: Any, **kwargs: Any) -> None:
            if self.soft_client is None:
                return super().save_response(*args, **kwargs)  # type: ignore[no-any-return]
            return soft_call(self.soft_client, super().save_response, None, *args, **kwargs)  # type: ignore[no-any-return]

        def delete(self, *args: Any, **kwargs: Any) -> None:
            if self.soft_client is None:
                return super().delete(*args, **kwargs)  # type: ignore[no-any-return]
            return soft_call(self.soft_client, super().delete, None, *args, **kwargs)  # type: ignore[no-any-return]

        @property
        def _settings(self) -> Any:
            return self._redisx_settings

        @_settings.setter
        def _settings(self, value: Any) -> None:
            if self.default_expire_after is not None and value.expire_after in (None, NEVER):
                value.expire_after = self.default_expire_after
            self._redisx_settings = value

    return RedisxHttpCache
