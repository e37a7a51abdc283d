"""Sessions on pyramid_redisx's pool: the ``client_callable`` both session packages take.

    redis.sessions.redis_client_callable = pyramid_redisx.sessions.client_callable  # pyramid_session_redis (Pyramid 2)
    redis.sessions.client_callable = pyramid_redisx.sessions.client_callable        # pyramid_redis_sessions (Pyramid 1.10)

Both packages call it once per request as ``callable(request, **redis_options)``. It
returns the request's own client (the one ``get_redis(request, name)`` gives), so the
session's commands go through the app's pool and show in the per-request stats line and
the debug toolbar's Redis panel. The client is ``redis.sessions_client`` (default
``default``); the packages' own connection keys (``redis.sessions.url``, ``host``,
``password``...) are then not used, and a WARNING says so once.

Both packages read back what they wrote as bytes: a pickle by default, and
pyramid_session_redis hashes the stored value whatever the serializer. A client with
``decode_responses = true`` hands them ``str`` instead (every request after the first with
that cookie raised ``UnicodeDecodeError``, or ``TypeError`` with a JSON serializer), so
``check_sessions_client`` refuses it at startup.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .client import client_set
from .errors import RedisSettingsError
from .request import get_redis
from .settings import RedisOptions, client_key

log = logging.getLogger("pyramid_redisx.sessions")

# The hook's key in pyramid_session_redis (Pyramid 2) and pyramid_redis_sessions (1.10).
HOOK_KEYS = ("redis.sessions.redis_client_callable", "redis.sessions.client_callable")
HOOK_NAMES = ("pyramid_redisx.sessions.client_callable", "pyramid_redisx.sessions:client_callable")
# Connection keys of the session packages that our callable makes them ignore.
_IGNORED = ("url", "host", "port", "db", "password", "unix_socket_path", "connection_pool")
_WARNED = "pyramid_redisx_sessions_warned"  # registry attribute: warned once


def client_callable(request: Any, **redis_options: Any) -> Any:
    """The client named by ``redis.sessions_client``, bound to ``request``.

    ``redis_options`` (the session package's own connection options) are ignored: the
    connection comes from pyramid_redisx's settings for that client.
    """
    registry = request.registry
    name = client_set(registry).app.sessions_client
    if not getattr(registry, _WARNED, False):
        setattr(registry, _WARNED, True)
        _warn_ignored(registry.settings or {}, name)
    return get_redis(request, name)


def _warn_ignored(settings: Any, name: str) -> None:
    keys = [
        key
        for key in settings
        if key.startswith("redis.sessions.")
        and key.removeprefix("redis.sessions.").removeprefix("redis_") in _IGNORED
    ]
    if keys:
        log.warning(
            "%s ignored: sessions use pyramid_redisx's client %r (redis.sessions_client)",
            ", ".join(sorted(keys)),
            name,
        )


def check_sessions_client(settings: Mapping[str, Any], name: str, options: RedisOptions) -> None:
    """At commit: sessions on our hook need a client that returns bytes.

    ``RedisSettingsError`` naming the sessions client's ``decode_responses`` key when that
    client decodes responses (whatever serializer the session package was given).
    """
    hook = next((key for key in HOOK_KEYS if _is_our_hook(settings.get(key))), None)
    if hook is None or not options.decode_responses:
        return
    raise RedisSettingsError(
        client_key(name, "decode_responses"), "true",
        f"sessions ({hook}) read back what they stored as bytes, which a client that "
        "decodes responses turns into str: give them a client with decode_responses = false "
        "(declare one with the same URL and name it in redis.sessions_client)",
    )  # fmt: skip


def _is_our_hook(value: Any) -> bool:
    return value is client_callable or (isinstance(value, str) and value.strip() in HOOK_NAMES)
