"""requests-cache through http_cache_session and http_cache_backend against a local HTTP server that counts hits."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationExecutionError
from requests_cache import CachedSession

from pyramid_redisx import RedisSettingsError, get_redis
from pyramid_redisx.http_cache import http_cache_backend, http_cache_session


class Origin:
    """An HTTP server on a free loopback port; ``hits`` counts the requests it served."""

    def __init__(self) -> None:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.hits += 1
                body = f"hit {origin.hits}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.hits = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/data"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    try:
        yield server
    finally:
        server.close()


def test_second_call_is_served_from_redis(make_app: Any, origin: Origin) -> None:
    registry = make_app().app.registry
    with CachedSession(backend=http_cache_backend(registry)) as session:
        first = session.get(origin.url)
        second = session.get(origin.url)
    assert (first.text, second.text) == ("hit 1", "hit 1")
    assert (first.from_cache, second.from_cache) == (False, True)
    assert origin.hits == 1
    client = get_redis(registry)
    assert any(key.startswith(b"http_cache:") for key in client.keys("*"))
    assert client.ping()  # closing the session left the app's client working


def test_commands_count_for_the_request(make_app: Any, origin: Origin, caplog: Any) -> None:
    def view(request: Any) -> str:
        with CachedSession(backend=http_cache_backend(request)) as session:
            return str(session.get(origin.url).from_cache)

    app = make_app({"/": view})
    caplog.set_level(logging.DEBUG, logger="pyramid_redisx.stats")
    assert app.get("/").text == "False"
    assert app.get("/").text == "True"
    lines = [r for r in caplog.records if r.name == "pyramid_redisx.stats"]
    assert len(lines) == 2 and all(r.redis_commands >= 1 for r in lines)  # type: ignore[attr-defined]


def _key_ttl(registry: Any) -> int:
    client = get_redis(registry)
    (key,) = [k for k in client.keys("http_cache:*") if k != b"http_cache:redirects"]
    return int(client.ttl(key))


def test_expiry_from_settings(make_app: Any, origin: Origin) -> None:
    registry = make_app(
        **{"http_cache.expire_after": "1", "http_cache.ttl_offset": "1"}
    ).app.registry
    with http_cache_session(registry) as session:
        session.get(origin.url)
        assert session.get(origin.url).from_cache
        assert 0 < _key_ttl(registry) <= 2  # expire_after + ttl_offset: Redis drops it too
        time.sleep(1.1)
        again = session.get(origin.url)
    assert (again.from_cache, again.text, origin.hits) == (False, "hit 2", 2)


def test_arguments_win_over_settings(make_app: Any, origin: Origin) -> None:
    registry = make_app(**{"http_cache.expire_after": "never"}).app.registry
    backend = http_cache_backend(registry, expire_after="1", ttl="false")
    assert backend.expire_after == 1
    with CachedSession(backend=backend, expire_after=backend.expire_after) as session:
        session.get(origin.url)
        assert _key_ttl(registry) == -1  # ttl false: no Redis expiry
        time.sleep(1.1)
        assert not session.get(origin.url).from_cache
    assert origin.hits == 2


@pytest.mark.parametrize("never", [-1, "never", "-1"])
def test_an_explicit_never_wins_over_the_settings(
    make_app: Any, origin: Origin, never: object
) -> None:
    """``expire_after=-1`` given to the session is kept, though the ini says 1 second."""
    registry = make_app(**{"http_cache.expire_after": "1"}).app.registry
    with http_cache_session(registry, expire_after=never) as session:
        assert session.settings.expire_after == -1
        session.get(origin.url)
        assert _key_ttl(registry) == -1  # no expiry: Redis keeps it for good
        time.sleep(1.1)
        assert session.get(origin.url).from_cache
    assert origin.hits == 1


def test_a_session_built_by_hand_keeps_its_own_expiry(make_app: Any, origin: Origin) -> None:
    """requests-cache's default (-1) cannot be told apart from an explicit -1: the backend
    never rewrites the session's expiry; it offers the configured one as an attribute."""
    registry = make_app(**{"http_cache.expire_after": "1"}).app.registry
    backend = http_cache_backend(registry)
    assert backend.expire_after == 1
    for session in (
        CachedSession(backend=backend),
        CachedSession(backend=backend, expire_after=-1),
    ):
        with session:
            assert session.settings.expire_after == -1
    assert http_cache_backend(make_app().app.registry).expire_after is None


def test_long_lifetimes_are_accepted(make_app: Any, origin: Origin) -> None:
    """A week's ttl_offset and a two-day expiry, as requests-cache accepts them."""
    registry = make_app(**{"http_cache.ttl_offset": "604800"}).app.registry
    with http_cache_session(registry, expire_after=timedelta(days=2)) as session:
        assert session.settings.expire_after == 2 * 86400
        session.get(origin.url)
    assert 2 * 86400 + 604800 - 5 <= _key_ttl(registry) <= 2 * 86400 + 604800


def test_namespaces_keep_apps_apart_and_clear_only_their_own(make_app: Any, origin: Origin) -> None:
    registry = make_app().app.registry
    client = get_redis(registry)
    client.set("unrelated", "kept")
    one = CachedSession(backend=http_cache_backend(registry, namespace="app1"))
    two = CachedSession(backend=http_cache_backend(registry, namespace="app2"))
    assert one.get(origin.url).text == "hit 1"
    assert two.get(origin.url).text == "hit 2"  # not served from app1's cache
    assert one.get(origin.url).from_cache and two.get(origin.url).from_cache
    one.cache.clear()
    assert client.keys("app1:*") == []
    assert client.keys("app2:*") and client.get("unrelated") == b"kept"
    assert not one.get(origin.url).from_cache and two.get(origin.url).from_cache
    one.close()
    two.close()


def test_bad_values_and_decoding_client(make_app: Any) -> None:
    registry = make_app().app.registry
    with pytest.raises(RedisSettingsError, match=re.escape("expire_after = 'soon' is not valid")):
        http_cache_backend(registry, expire_after="soon")
    with pytest.raises(RedisSettingsError, match=re.escape("expire_after = 'soon' is not valid")):
        http_cache_session(registry, expire_after="soon")
    registry = make_app(decode_responses="true").app.registry
    with pytest.raises(ValueError, match="decodes responses"):
        http_cache_backend(registry)


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("expire_after", "soon", "seconds or a span (30 seconds, 5 minutes, 2 hours, 7 days, 2 weeks) or never"),
        ("expire_after", "400 days", "at most 31536000 seconds (365 days), or never"),
        ("ttl_offset", "-5", "expected a duration: seconds or a span (30 seconds"),
        ("ttl", "sometimes", "expected a boolean"),
        ("expire", "1", "not an HTTP cache option; known: expire_after, ttl, ttl_offset"),
    ],
)  # fmt: skip
def test_bad_settings_stop_the_app_at_startup(
    key: str, value: str, said: str, redis_url: str
) -> None:
    """Refused by config.include, and at commit when set after the include."""
    full = f"redis.http_cache.{key}"
    with pytest.raises(RedisSettingsError) as raised:
        Configurator(settings={"redis.url": redis_url, full: value}).include("pyramid_redisx")
    assert str(raised.value).startswith(f"{full} = {value!r} is not valid: ")
    assert said in str(raised.value)
    assert raised.value.key == full
    config = Configurator(settings={"redis.url": redis_url})
    config.include("pyramid_redisx")
    config.get_settings()[full] = value
    with pytest.raises(ConfigurationExecutionError) as late:
        config.commit()
    assert isinstance(late.value.evalue, RedisSettingsError) and said in str(late.value.evalue)
