"""requests-cache on pyramid_redisx's pool: ``http_cache_session`` and ``http_cache_backend``.

    with http_cache_session(request, namespace="weather") as session:
        reply = session.get(url)

The backend stores responses in Redis under ``<namespace>:<key>`` through the client
``name`` (bound to the request when given one, so its commands count for the request).
Options come from the ``redis.http_cache.*`` settings, then from the arguments:

* ``expire_after``: how long a response stays fresh: seconds, a span (``5 minutes``,
  ``2 hours``, ``7 days``) or ``never``. A session's setting, not the backend's:
  ``http_cache_session`` gives it to the session it makes unless told otherwise
  (``expire_after=-1`` included); a ``CachedSession`` built by hand reads it from
  ``backend.expire_after`` if asked (requests-cache's own default, -1, cannot be told
  apart from an explicit -1, so it is never overridden behind the session's back);
* ``ttl``: let Redis delete expired responses (requests-cache's default: true);
* ``ttl_offset``: how long Redis keeps them after they expire (for revalidation).

With ``redis.<name>.fail_soft = true`` an unreachable Redis (or an open circuit) is a
cache miss: the origin is called, its response served and not stored; each such call
is counted (``failsoft.py``).

Cache lifetimes are not waits: they accept up to a year, where the client's timeouts stop
at a day. The settings are checked by ``config.include("pyramid_redisx")`` with every
other ``redis.*`` key. Needs the ``http-cache`` extra (requests-cache).
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
LONGEST = (365 * 86_400.0, "365 days")  # a cache lifetime past a year is a typo
SPANS = "30 seconds, 5 minutes, 2 hours, 7 days, 2 weeks"
_lifetime = duration(limit=LONGEST, words=f"seconds or a span ({SPANS}) or never")
_offset = duration(limit=LONGEST, words=f"seconds or a span ({SPANS})")


def _expire_after(value: object) -> float:
    if isinstance(value, str) and value.strip().lower() in ("never", "-1"):
        return NEVER
    if value == NEVER and not isinstance(value, bool):
        return NEVER
    try:
        return _lifetime(value)
    except ValueError as exc:
        if "at most" in str(exc):  # "10 years" most likely means never
            raise ValueError(f"{exc}, or never") from None
        raise


def _whole_seconds(value: object) -> int:
    return math.ceil(_offset(value))  # Redis TTLs are whole seconds


_CONVERTERS = {"expire_after": _expire_after, "ttl": to_bool, "ttl_offset": _whole_seconds}


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
    try:
        return _CONVERTERS[option](value)
    except (ValueError, TypeError) as exc:
        accepted = str(exc) if isinstance(exc, ValueError) else "expected text or a number"
        raise RedisSettingsError(key, value, accepted) from None


def http_cache_backend(
    request_or_registry: Any,
    name: str = DEFAULT_CLIENT,
    namespace: str = "http_cache",
    **options: Any,
) -> Any:
    """A requests-cache ``RedisCache`` on client ``name``'s pool, keys under ``namespace``.

    ``options``: ``expire_after``, ``ttl``, ``ttl_offset`` (over the settings), and any
    other ``RedisCache`` argument (``serializer``...), passed on as is. The expiry is kept
    as ``backend.expire_after`` (``None`` when neither says): ``CachedSession`` does not
    read it by itself; ``http_cache_session`` passes it on.
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
    backend = _redis_cache()(namespace, connection=client, **merged)
    backend.expire_after = expire_after
    if client_set(registry).options[name].fail_soft:
        backend.soft_client = client
    backend.redisx_registry = registry
    return backend


_NOT_GIVEN: Any = object()


def http_cache_session(
    request_or_registry: Any,
    name: str = DEFAULT_CLIENT,
    namespace: str = "http_cache",
    expire_after: Any = _NOT_GIVEN,
    **session_options: Any,
) -> Any:
    """A requests-cache ``CachedSession`` on ``http_cache_backend(request_or_registry,
    name, namespace)``, with the configured ``redis.http_cache.expire_after`` unless
    ``expire_after`` is given (``-1`` or ``"never"``: never expires, whatever the
    settings say). ``session_options`` go to ``CachedSession``. Close it (``with``)."""
    backend = http_cache_backend(request_or_registry, name, namespace)
    if expire_after is _NOT_GIVEN:
        expire_after = NEVER if backend.expire_after is None else backend.expire_after
    else:
        expire_after = _convert("expire_after", "expire_after", expire_after)
    from requests_cache import CachedSession  # optional: the http-cache extra

    return CachedSession(backend=backend, expire_after=expire_after, **session_options)


@functools.cache
def _redis_cache() -> type:
    try:
        from requests_cache.backends.redis import RedisCache  # optional: the http-cache extra
    except ImportError:
        raise ImportError(
            "http_cache_backend needs requests-cache: pip install 'pyramid_redisx[http-cache]'"
        ) from None

    class RedisxHttpCache(RedisCache):  # type: ignore[misc]
        """``RedisCache`` that reports its lookups to the telemetry (when on) and, on a
        client with ``fail_soft``, takes an unreachable Redis as a miss (failsoft.py).

        It does not touch the session's settings: ``CachedSession``'s default expiry
        (-1) cannot be told apart from an explicit -1 (``http_cache_session`` applies the
        configured one instead).
        """

        expire_after: float | None = None  # the configured one, for a session built by hand
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

    return RedisxHttpCache
