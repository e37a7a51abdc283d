"""``includeme`` and the ``add_redis_client`` directive: Pyramid configuration only."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pyramid.events import ApplicationCreated, NewResponse
from pyramid.exceptions import ConfigurationConflictError

from .client import STATE, ClientSet, client_set
from .errors import RedisSettingsError
from .health import health_view
from .http_cache import parse_http_cache_settings
from .redis_py import check as check_redis_py
from .request import RequestAttributes, on_new_response
from .sessions import check_sessions_client
from .settings import (
    DEFAULT_CLIENT,
    PREFIX,
    check_client_name,
    check_keys,
    parse_app,
    parse_client,
)
from .startup import on_application_created
from .telemetry import register as register_telemetry
from .tm import request_redis_tm

log = logging.getLogger("pyramid_redisx")

INTROSPECTION_CATEGORY = "redis clients"
_DECLARED = "pyramid_redisx_declared"  # registry attribute: {name: where declared}


def _redis_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in settings.items() if key.startswith(PREFIX)}


def includeme(config: Any) -> None:
    """Set up pyramid_redisx on ``config``.

    - parses the ``redis.*`` settings now (a bad value raises ``RedisSettingsError``
      from ``config.include``), and again at commit if they changed meanwhile;
    - checks the installed redis-py: a version outside the tested range (unless
      ``redis.allow_redis_py`` names it) or one whose internals differ from what the
      add-on replaces raises ``RedisPyUnsupported`` from ``config.include``;
    - declares the ``default`` client and those named in ``redis.clients``: one
      connection pool per distinct option set, kept on the registry, no connection
      opened yet;
    - adds the ``config.add_redis_client(name, **options)`` directive;
    - adds the reified ``request.redis`` property (the ``default`` client) and
      ``request.redis_tm`` (a pipeline sent as MULTI/EXEC when pyramid_tm commits);
    - subscribes to ``NewResponse`` (per-request stats line, Server-Timing, releasing
      connections a request kept) and to ``ApplicationCreated`` (the startup check);
    - adds a tween that does the ``NewResponse`` work for a request whose view raised
      past every exception view (no response, so no ``NewResponse``);
    - with ``redis.health_route``, a JSON health view at that path;
    - with ``redis.tracing``, ``redis.metrics`` or ``redis.metrics_route``, telemetry
      (``pyramid_redisx.telemetry``): spans, metrics, a Prometheus view at that path;
    - warns about unknown ``redis.*`` keys and rejects near misses of known ones;
      checks the HTTP cache's ``redis.http_cache.*`` too (requests-cache not needed).
    """
    registry = config.registry
    if getattr(registry, _DECLARED, None) is not None:
        return  # included twice: once is enough
    settings = config.get_settings() or {}
    app = parse_app(settings)
    check_keys(settings, app.clients, top_level_only=True)
    parse_http_cache_settings(settings)
    check_redis_py(app.allow_redis_py)  # a tested redis-py whose internals match, or no app
    setattr(registry, _DECLARED, {})
    setattr(registry, STATE, ClientSet(app))

    config.add_directive("add_redis_client", add_redis_client)
    # request.redis, and request.redis_tm: a pipeline sent as MULTI/EXEC when pyramid_tm
    # commits (nothing runs until a view reads it). See RequestAttributes for their form.
    attributes = RequestAttributes(client_set(registry), request_redis_tm)
    attributes.register(config)
    config.add_subscriber(attributes.on_application_created, ApplicationCreated)
    config.add_subscriber(on_new_response, NewResponse)
    config.add_tween("pyramid_redisx.request.redis_tween_factory")
    config.add_subscriber(on_application_created, ApplicationCreated)

    for name in (DEFAULT_CLIENT, *app.clients):
        _declare(config, name, None, f"{PREFIX}clients in the settings" if name != DEFAULT_CLIENT
                 else "config.include('pyramid_redisx')")  # fmt: skip
    if app.health_route:
        config.add_route("pyramid_redisx.health", app.health_route)
        config.add_view(health_view, route_name="pyramid_redisx.health", renderer="json")
    if app.telemetry:
        register_telemetry(config, client_set(registry), _prometheus(app))
    snapshot = _redis_settings(settings)
    config.action(None, _finish_configuration, args=(config, snapshot), order=1)


def _prometheus(app: Any) -> Any:
    """The Prometheus module, when ``redis.metrics_route`` asks for it."""
    if app.metrics_route is None:
        return None
    try:
        from . import prometheus  # optional: the prometheus extra
    except ImportError:
        return None  # register_telemetry names the missing extra
    return prometheus


def add_redis_client(config: Any, name: str, **options: Any) -> None:
    """Directive: declare client ``name`` in code.

    ``options`` take the ini key names without prefix, as Python values or ini strings;
    keys not given fall back to ``redis.<name>.<key>``, then ``redis.<key>``, then the
    defaults. Declaring a name twice (here or in ``redis.clients``) is a conflict.
    """
    _declare(config, name, options, _where(config))


def _where(config: Any) -> str:
    try:
        return str(config.action_info).strip() or "config.add_redis_client"
    except Exception:  # noqa: BLE001 - only used to describe a conflict
        return "config.add_redis_client"


def _declare(config: Any, name: str, overrides: dict[str, Any] | None, where: str) -> None:
    registry = config.registry
    declared: dict[str, str] = getattr(registry, _DECLARED)
    discriminator = ("pyramid_redisx.client", name)
    if name in declared:
        raise ConfigurationConflictError({discriminator: [declared[name], where]})
    if name != DEFAULT_CLIENT:
        check_client_name(
            name, f"add_redis_client({name!r})" if overrides is not None else PREFIX + "clients"
        )
    options = parse_client(name, config.get_settings() or {}, overrides)
    declared[name] = where

    def add() -> None:
        # Parsed again at commit: settings may have been added since the include.
        parsed = parse_client(name, registry.settings or {}, overrides)
        client_set(registry).add(name, parsed)
        introspectable["options"] = parsed.redacted()

    introspectable = config.introspectable(INTROSPECTION_CATEGORY, name, name, "redis client")
    introspectable["options"] = options.redacted()
    config.action(discriminator, add, introspectables=(introspectable,))


def _finish_configuration(config: Any, snapshot: dict[str, Any]) -> None:
    """After every client is declared: app-wide keys as they are now, unknown keys."""
    registry = config.registry
    settings = registry.settings or {}
    clients = client_set(registry)
    if _redis_settings(settings) != snapshot:
        clients.app = parse_app(settings)
        parse_http_cache_settings(settings)
    if clients.app.sessions_client not in clients.options:
        raise RedisSettingsError(
            PREFIX + "sessions_client", clients.app.sessions_client,
            f"no client named {clients.app.sessions_client!r}; declared: {', '.join(clients.options)}",
        )  # fmt: skip
    name = clients.app.sessions_client
    check_sessions_client(settings, name, clients.options[name])
    names = [other for other in getattr(registry, _DECLARED) if other != DEFAULT_CLIENT]
    for warning in check_keys(settings, names):
        log.warning(warning)
