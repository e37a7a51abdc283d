"""The demo app and its runner, without a browser (tests/test_demo_browser.py has one)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import webtest
from pyramid.exceptions import ConfigurationError
from pyramid.paster import get_app

from pyramid_redisx.testing import free_port
from tests.demo_ini import demo_ini

ROOT = Path(__file__).resolve().parent.parent
needs_integrations = pytest.mark.skipif(
    int(importlib.metadata.version("pyramid").split(".")[0]) < 2,
    reason="the demo's integrations (pyramid_session_redis) need Pyramid 2",
)


@pytest.fixture
def demo_app(redis_server_factory: Any, tmp_path: Path) -> Any:
    """development.ini's app on a server of its own (so a test may stop it)."""
    server = redis_server_factory()
    app = webtest.TestApp(get_app(str(demo_ini(tmp_path, server.port))))
    app.extra_environ["REMOTE_ADDR"] = "127.0.0.1"  # the toolbar watches loopback only
    return app, server


def test_home_explains_itself_and_links_health_and_panel(demo_app: Any) -> None:
    app, _ = demo_app
    page = app.get("/")
    assert page.headers["Server-Timing"].startswith("redis;dur=")
    assert 'id="visit-count">1<' in page.text
    assert 'href="/health/redis"' in page.text
    assert 'id="open-redis-panel" href="/toolbar/redis/' in page.text
    assert "performance.getEntriesByType" in page.text  # shows the Server-Timing figure
    assert 'id="visit-count">2<' in app.get("/").text


def test_panel_link_opens_the_toolbar_on_the_redis_tab(demo_app: Any) -> None:
    app, _ = demo_app
    response = app.get("/toolbar/redis/abc123", status=302)
    assert response.location.endswith("/_debug_toolbar/abc123")
    assert "pdtb_sticky_panel_selected=pDebugPanel-redis; Path=/" in response.headers["Set-Cookie"]


def test_report_is_computed_then_cached(demo_app: Any) -> None:
    app, _ = demo_app
    assert 'data-cache="miss"' in app.get("/report").text
    assert 'data-cache="hit"' in app.get("/report").text


def test_redis_down_is_a_503_page_that_says_what_to_do(demo_app: Any) -> None:
    app, server = demo_app
    app.get("/")
    server.stop()
    page = app.get("/", status=503)
    assert "<h1>Redis is not reachable</h1>" in page.text
    assert "Connection refused" in page.text and "make demo" in page.text
    assert "Traceback" not in page.text
    assert page.headers["Retry-After"] == "5"
    assert app.get("/report", status=503).text.count("Redis is not reachable") >= 1
    assert app.get("/health/redis", status=503).json["status"] == "down"


def test_runner_says_why_its_redis_did_not_start(tmp_path: Path) -> None:
    """A server binary that exits at once without a word: the message says so, and why."""
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "-m", "demo_app.run", str(demo_ini(tmp_path, free_port()))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_SERVER": str(fake)},
    )
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("demo: redis server on port "), result.stderr
    assert f"did not start: {fake} exited with code 3 without printing anything" in message
    assert "(hint: check the binary works" in message and "$REDIS_SERVER" in message


def test_a_server_that_never_answers_is_reported_and_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A binary that runs but never listens: the message says so, and the process is gone."""
    from pyramid_redisx.testing import RedisServer

    fake = tmp_path / "silent-server"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("REDIS_SERVER", str(fake))
    server = RedisServer()
    try:
        with pytest.raises(RuntimeError) as raised:
            server.start(timeout=1)
    finally:
        server.cleanup()
    message = str(raised.value)
    assert f"did not start: {fake} was still not answering PING after 1 s" in message
    assert "without printing anything" in message and "another program may hold the port" in message
    assert server.process is None  # stopped, not left running


def test_favicon_answers_with_or_without_redis(demo_app: Any) -> None:
    app, server = demo_app
    for _ in range(2):
        icon = app.get("/favicon.ico")
        assert icon.content_type == "image/svg+xml" and icon.body.startswith(b"<svg")
        server.stop()
    assert '<link rel="icon" href="/favicon.ico"' in app.get("/", status=503).text


def test_a_redis_port_after_the_file_name_is_refused(tmp_path: Path) -> None:
    """PasteDeploy keeps [DEFAULT] redis_port over ``redis_port=...`` on the command line:
    the demo says so instead of silently using the file's port."""
    ini = str(demo_ini(tmp_path, 6399))
    with pytest.raises(ConfigurationError) as raised:
        get_app(ini, options={"redis_port": "6379"})
    assert str(raised.value) == (
        "redis_port=6379 after the ini file's name is not used: the file's [DEFAULT] sets "
        "redis_port, which PasteDeploy keeps (redis.url is redis://127.0.0.1:6399/0). "
        "Change redis_port in the file instead."
    )


@needs_integrations
def test_integration_pages_share_the_site_layout(demo_app: Any) -> None:
    app, _ = demo_app  # (the HTTP cache page fetches from its own server: browser test)
    home_nav = re.search(r"<nav>(.*?)</nav>", app.get("/").text, re.S)
    assert home_nav and "/integrations" in home_nav.group(1)
    for path, title in (
        ("/integrations", "Integrations on one pool per client"),
        ("/integrations/name", "Sessions"),
        ("/integrations/queue", "Message queue"),
        ("/integrations/queue/drain", "Drained"),
    ):
        page = app.get(path).text
        assert f"<title>{title} · pyramid_redisx demo</title>" in page, path
        assert f"<nav>{home_nav.group(1)}</nav>".replace(" class=here", "") == re.sub(
            r" class=here",
            "",
            re.search(r"<nav>.*?</nav>", page, re.S).group(0),  # type: ignore[union-attr]
        ), path
        assert '<a href="/integrations" class=here>Integrations</a>' in page, path
        assert 'id="integration-pages"' in page and "<style>" in page, path


@needs_integrations
def test_a_session_write_with_redis_down_gives_the_503_page(demo_app: Any) -> None:
    """pyramid_session_redis writes the session in a response callback, after the view:
    with Redis down that raised past the exception views (waitress: a bare 500). The
    demo's execution policy hands it to the 503 view."""
    app, server = demo_app
    server.stop()
    page = app.post("/integrations/name", {"name": "Ada"}, status=503)
    assert "<h1>Redis is not reachable</h1>" in page.text and "Connection refused" in page.text
    assert page.headers["Retry-After"] == "5"
