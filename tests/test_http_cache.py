"""requests-cache through http_cache_backend against a local HTTP server that counts hits."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from requests_cache import CachedSession

from pyramid_redisx import RedisSettingsError, get_redis
from pyramid_redisx.http_cache import http_cache_backend


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


def test_expiry_from_settings(make_app: Any, origin: Origin) -> None:
    registry = make_app(
        **{"http_cache.expire_after": "1", "http_cache.ttl_offset": "1"}
    ).app.registry
    client = get_redis(registry)
    with CachedSession(backend=http_cache_backend(registry)) as session:
        session.get(origin.url)
        assert session.get(origin.url).from_cache
        (key,) = [k for k in client.keys("http_cache:*") if k != b"http_cache:redirects"]
        assert 0 < client.ttl(key) <= 2  # expire_after + ttl_offset: Redis drops it too
        time.sleep(1.1)
        again = session.get(origin.url)
    assert (again.from_cache, again.text, origin.hits) == (False, "hit 2", 2)


def test_arguments_win_over_settings(make_app: Any, origin: Origin) -> None:
    registry = make_app(**{"http_cache.expire_after": "never"}).app.registry
    backend = http_cache_backend(registry, expire_after="1", ttl="false")
    with CachedSession(backend=backend) as session:
        session.get(origin.url)
        (key,) = [k for k in get_redis(registry).keys("http_cache:*") if b"redirects" not in k]
        assert get_redis(registry).ttl(key) == -1  # ttl false: no Redis expiry
        time.sleep(1.1)
        assert not session.get(origin.url).from_cache
    assert origin.hits == 2


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


def test_bad_setting_and_decoding_client(make_app: Any) -> None:
    registry = make_app(**{"http_cache.expire_after": "soon"}).app.registry
    with pytest.raises(
        RedisSettingsError, match=re.escape("redis.http_cache.expire_after = 'soon'")
    ):
        http_cache_backend(registry)
    registry = make_app(**{"http_cache.expire": "1"}).app.registry
    with pytest.raises(RedisSettingsError, match="not an HTTP cache option"):
        http_cache_backend(registry)
    registry = make_app(decode_responses="true").app.registry
    with pytest.raises(ValueError, match="decodes responses"):
        http_cache_backend(registry)
