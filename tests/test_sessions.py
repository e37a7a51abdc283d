"""Sessions through pyramid_redisx's pool, with the real session packages.

pyramid_session_redis 1.8 needs Pyramid 2 and pyramid_redis_sessions 1.0.1 imports only
on Pyramid 1.x: ``make test`` runs the first group in its Pyramid 2 environment and the
second in its Pyramid 1.10.8 environment, so each runs in exactly one of them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationExecutionError

from pyramid_redisx import RedisSettingsError
from pyramid_redisx.pools import pool_figures
from pyramid_redisx.request import client_set
from tests.conftest import build_app

PYRAMID_2 = int(importlib.metadata.version("pyramid").split(".")[0]) >= 2
HAS_REDIS_SESSIONS = not PYRAMID_2 and importlib.util.find_spec("pyramid_redis_sessions")

needs_session_redis = pytest.mark.skipif(
    not PYRAMID_2,
    reason="pyramid_session_redis 1.8 needs Pyramid 2: runs in make test's Pyramid 2 env",
)
needs_redis_sessions = pytest.mark.skipif(
    not HAS_REDIS_SESSIONS,
    reason="pyramid_redis_sessions 1.0.1 imports only on Pyramid 1.x: "
    "runs in make test's Pyramid 1.10.8 env",
)

CALLABLE = "pyramid_redisx.sessions.client_callable"


def test_each_session_package_has_its_environment() -> None:
    """The skips above must never hide both groups: on Pyramid 1.x the other package
    has to be there (make test installs it in that environment)."""
    assert PYRAMID_2 or HAS_REDIS_SESSIONS, "pyramid_redis_sessions missing on Pyramid 1.x"


def set_name(request: Any) -> str:
    request.session["name"] = request.params["name"]
    return "ok"


def get_name(request: Any) -> str:
    return str(request.session.get("name", "nobody"))


def boom(request: Any) -> str:
    request.session["other"] = "x"
    raise ValueError("boom")


def page(request: Any) -> str:
    return f"<html><body>{get_name(request)}</body></html>"  # the toolbar needs a body


VIEWS = {"/set": set_name, "/get": get_name, "/boom": boom, "/page": page}


def session_settings(package: str) -> dict[str, Any]:
    key = "redis_client_callable" if package == "pyramid_session_redis" else "client_callable"
    return {
        "redis.client_name": "sessapp",  # every connection of our pool carries this name
        "redis.sessions.secret": "not-a-real-secret",
        f"redis.sessions.{key}": CALLABLE,
    }


def include(package: str) -> Callable[[Configurator], None]:
    def setup(config: Configurator) -> None:
        config.include(package)

    return setup


def client_list_of(server: Any) -> Callable[[], list[dict[str, Any]]]:
    """CLIENT LIST of ``server``'s normal clients, less the connection asking."""

    def client_list() -> list[dict[str, Any]]:
        with server.client() as client:
            me = client.client_id()
            return [c for c in client.client_list("normal") if int(c["id"]) != me]

    return client_list


def check_session_lifecycle(
    app: webtest.TestApp, client_list: Callable[[], list[dict[str, Any]]], caplog: Any
) -> None:
    """Remember a name, survive a raising request, and use one pool only."""
    caplog.set_level(logging.DEBUG, logger="pyramid_redisx.stats")
    app.get("/set", {"name": "Ada"})
    assert app.get("/get").text == "Ada"

    caplog.clear()
    app.get("/get")
    lines = [r for r in caplog.records if r.name == "pyramid_redisx.stats"]
    assert [r.redis_client for r in lines] == ["default"]  # type: ignore[attr-defined]
    assert lines[0].redis_commands >= 1  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="boom"):
        app.get("/boom")
    assert app.get("/get").text == "Ada"  # the session survived the request that raised

    pool = client_set(app.app.registry).pools()["default"]
    figures = pool_figures(pool)
    assert figures.in_use == 0
    connections = client_list()
    assert connections, "the app should hold at least one idle connection"
    # No second pool: every connection on the server is one of our pool's.
    assert {c["name"] for c in connections} == {"sessapp"}
    assert len(connections) == figures.idle


@needs_session_redis
def test_pyramid_session_redis_uses_our_pool(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()  # its own server: CLIENT LIST shows this app alone
    settings = {**session_settings("pyramid_session_redis"), "url": server.url}
    app = make_app(VIEWS, include("pyramid_session_redis"), **settings)
    check_session_lifecycle(app, client_list_of(server), caplog)


@needs_session_redis
def test_pyramid_session_redis_commands_in_debug_panel(redis_settings: dict[str, Any]) -> None:
    from tests.test_debugtoolbar import redis_panel, rows, toolbar_page

    settings = {
        **redis_settings,
        **session_settings("pyramid_session_redis"),
        "pyramid.includes": "pyramid_debugtoolbar",
        "debugtoolbar.includes": "pyramid_redisx.debugtoolbar",
        "debugtoolbar.intercept_redirects": "false",
    }
    app = build_app(settings, VIEWS, include("pyramid_session_redis"))
    app.extra_environ["REMOTE_ADDR"] = "127.0.0.1"
    try:
        app.get("/set", {"name": "Ada"})
        found = rows(redis_panel(toolbar_page(app, "/page")))
        assert any(row["name"] == "GET" for row in found), found
    finally:
        client_set(app.app.registry).close()


@needs_session_redis
def test_ignored_session_connection_keys_warn_once(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {
        **session_settings("pyramid_session_redis"),
        "redis.sessions.redis_url": "redis://elsewhere:1/0",
    }
    app = make_app(VIEWS, include("pyramid_session_redis"), **settings)
    caplog.set_level(logging.WARNING, logger="pyramid_redisx.sessions")
    app.get("/set", {"name": "Ada"})
    app.get("/get")
    warnings = [r.getMessage() for r in caplog.records if r.name == "pyramid_redisx.sessions"]
    assert warnings == [
        "redis.sessions.redis_url ignored: sessions use pyramid_redisx's client 'default' "
        "(redis.sessions_client)"
    ]


@needs_session_redis
def test_sessions_client_names_the_client(
    make_app: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {
        **session_settings("pyramid_session_redis"),
        "redis.clients": "sessions_store",
        "redis.sessions_client": "sessions_store",
        "redis.sessions_store.url": redis_url.rsplit("/", 1)[0] + "/3",
    }
    app = make_app(VIEWS, include("pyramid_session_redis"), **settings)
    caplog.set_level(logging.DEBUG, logger="pyramid_redisx.stats")
    app.get("/set", {"name": "Ada"})
    lines = [r for r in caplog.records if r.name == "pyramid_redisx.stats"]
    assert [r.redis_client for r in lines] == ["sessions_store"]  # type: ignore[attr-defined]
    store = client_set(app.app.registry).client("sessions_store")
    assert store.dbsize() == 1 and client_set(app.app.registry).client().dbsize() == 0


@needs_redis_sessions
def test_pyramid_redis_sessions_uses_our_pool(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()  # its own server: CLIENT LIST shows this app alone
    settings = {**session_settings("pyramid_redis_sessions"), "url": server.url}
    app = make_app(VIEWS, include("pyramid_redis_sessions"), **settings)
    check_session_lifecycle(app, client_list_of(server), caplog)


# ------------------------------------------------------------ decode_responses
PACKAGES = [
    pytest.param("pyramid_session_redis", marks=needs_session_redis),
    pytest.param("pyramid_redis_sessions", marks=needs_redis_sessions),
]


def refusal(settings: dict[str, Any], package: str) -> RedisSettingsError:
    with pytest.raises(ConfigurationExecutionError) as raised:
        build_app(settings, VIEWS, include(package))
    error = raised.value.evalue
    assert isinstance(error, RedisSettingsError), error
    return error


@pytest.mark.parametrize("package", PACKAGES)
def test_a_decoding_client_is_refused_at_startup(package: str, redis_url: str) -> None:
    """Pickled sessions written through a client that decodes responses cannot be read
    back (UnicodeDecodeError on every later request): the app does not start."""
    settings = {**session_settings(package), "redis.url": redis_url}
    error = refusal({**settings, "redis.decode_responses": "true"}, package)
    hook = next(key for key in settings if key.endswith("client_callable"))
    assert error.key == "redis.decode_responses"
    assert str(error) == (
        f"redis.decode_responses = 'true' is not valid: sessions ({hook}) read back what "
        "they stored as bytes, which a client that decodes responses turns into str: give "
        "them a client with decode_responses = false (declare one with the same URL and "
        "name it in redis.sessions_client)"
    )
    named = {
        **settings,
        "redis.clients": "store",
        "redis.sessions_client": "store",
        "redis.store.decode_responses": "yes",
    }
    assert refusal(named, package).key == "redis.store.decode_responses"
    # The fix the message gives: the decoding client stays, sessions use another one.
    app = build_app(
        {**named, "redis.sessions_client": "default", "redis.decode_responses": "false"},
        VIEWS,
        include(package),
    )
    try:
        app.get("/set", {"name": "Ada"})
        assert app.get("/get").text == "Ada"
    finally:
        client_set(app.app.registry).close()


@pytest.mark.parametrize("package", PACKAGES)
def test_a_text_serializer_does_not_make_a_decoding_client_fit(
    package: str, redis_url: str
) -> None:
    """pyramid_session_redis hashes what it reads back (bytes only), so JSON does not
    rescue a decoding client there: the rule is the same for every serializer."""
    settings = {
        **session_settings(package),
        "redis.url": redis_url,
        "redis.decode_responses": "true",
        "redis.sessions.serialize": "json.dumps",
        "redis.sessions.deserialize": "json.loads",
    }
    assert refusal(settings, package).key == "redis.decode_responses"


def test_a_hook_of_another_package_is_not_checked(redis_url: str) -> None:
    """Without our hook the session package has its own connection: not ours to judge."""
    settings = {
        "redis.url": redis_url,
        "redis.decode_responses": "true",
        "redis.sessions.redis_client_callable": "myapp.sessions.client",
    }
    app = build_app(settings, {"/": lambda request: "ok"})
    try:
        assert app.get("/").text == "ok"
    finally:
        client_set(app.app.registry).close()
