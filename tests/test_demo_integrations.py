"""The demo's integrations (demo_app.integrations) served by waitress against a real server."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pyramid.config import Configurator
from webtest.http import StopableWSGIServer

from demo_app.integrations import connection_counts
from pyramid_redisx.request import client_set

pytestmark = pytest.mark.skipif(
    int(importlib.metadata.version("pyramid").split(".")[0]) < 2,
    reason="the demo's sessions use pyramid_session_redis (Pyramid 2): runs in the Pyramid 2 env",
)


@pytest.fixture
def demo(redis_server_factory: Any) -> Iterator[tuple[str, Any]]:
    url = redis_server_factory().url  # its own server: CLIENT LIST shows this app alone
    settings = {
        "redis.url": url,
        "redis.clients": "cache",
        "redis.cache.url": url.rsplit("/", 1)[0] + "/1",
        "redis.cache.decode_responses": "true",
    }
    config = Configurator(settings=settings)
    config.include("pyramid_redisx")
    config.include("demo_app.integrations")
    app = config.make_wsgi_app()
    server = StopableWSGIServer.create(app, threads=4)  # the cache page fetches from itself
    try:
        yield server.application_url.rstrip("/"), app.registry
    finally:
        server.shutdown()
        client_set(app.registry).close()


def text_of(html: str, css_class: str) -> str:
    found = re.search(rf"class='{css_class}'>([^<]*)<", html)
    assert found, html
    return found.group(1)


def test_demo_integrations_share_one_pool_per_client(demo: tuple[str, Any]) -> None:
    base, registry = demo
    browser = requests.Session()

    browser.post(f"{base}/integrations/name", data={"name": "Ada <3"})
    assert text_of(browser.get(f"{base}/integrations/name").text, "greeting") == "Hello, Ada &lt;3!"

    first = browser.get(f"{base}/integrations/http-cache").text
    second = browser.get(f"{base}/integrations/http-cache").text
    assert (text_of(first, "state"), text_of(second, "state")) == ("miss", "hit")
    assert text_of(second, "body") == "origin response number 1"

    for message in ("one", "two"):
        browser.post(f"{base}/integrations/queue", data={"message": message})
    assert text_of(browser.get(f"{base}/integrations/queue").text, "length") == "2"
    drained = browser.get(f"{base}/integrations/queue/drain").text
    assert re.findall(r"<li>([^<]*)</li>", drained) == ["one", "two"]

    assert browser.get(f"{base}/integrations").status_code == 200
    counts = connection_counts(registry)
    # Every connection CLIENT LIST shows on each client's database is one of its pool's.
    assert counts["default"]["client_list"] == counts["default"]["pool"] >= 1
    assert counts["cache"]["client_list"] == counts["cache"]["pool"] >= 1
    print("CLIENT LIST with every integration used:", counts)
