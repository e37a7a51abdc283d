"""Shared fixtures: real servers (from pyramid_redisx.testing) and app builders."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import webtest
from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_redisx.request import client_set
from pyramid_redisx.testing import free_port, server_binary

pytest_plugins = ["pyramid_redisx.testing"]

View = Callable[[Any], Any]


def build_app(
    settings: dict[str, Any],
    views: dict[str, View] | None = None,
    setup: Callable[[Configurator], None] | None = None,
) -> webtest.TestApp:
    """A Pyramid app with pyramid_redisx and one route per ``views`` item.

    A view may return a Response or a str (sent as the body).
    """
    config = Configurator(settings=dict(settings))
    config.include("pyramid_redisx")
    if setup:
        setup(config)
    for index, (path, view) in enumerate((views or {}).items()):

        def wrapped(request: Any, view: View = view) -> Any:
            result = view(request)
            return result if isinstance(result, Response) else Response(str(result))

        config.add_route(f"r{index}", path)
        config.add_view(wrapped, route_name=f"r{index}")
    app = config.make_wsgi_app()
    return webtest.TestApp(app)


def close_script(env: Any) -> None:
    """``closer()`` of ``pyramid.scripting.prepare()``, then the request's finished
    callbacks, which Pyramid 2's closer runs and Pyramid 1.10's leaves to the script."""
    env["closer"]()
    request = env["request"]
    if request.finished_callbacks:
        request._process_finished_callbacks()


def pools_of(testapp: webtest.TestApp) -> dict[str, Any]:
    return client_set(testapp.app.registry).pools()


@pytest.fixture
def make_app(redis_url: str) -> Iterator[Callable[..., webtest.TestApp]]:
    """``make_app(views, **settings)`` against the session server; pools closed after."""
    apps: list[webtest.TestApp] = []

    def make(
        views: dict[str, View] | None = None,
        setup: Callable[[Configurator], None] | None = None,
        **settings: Any,
    ) -> webtest.TestApp:
        settings = {f"redis.{key}" if not key.startswith("redis.") else key: value
                    for key, value in settings.items()}  # fmt: skip
        settings.setdefault("redis.url", redis_url)
        app = build_app(settings, views, setup)
        apps.append(app)
        return app

    yield make
    for app in apps:
        client_set(app.app.registry).close()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger at DEBUG and above."""
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture(scope="session")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The docs built once per session as `make docs` builds them (warnings are errors)."""
    sphinx_build = pytest.importorskip("sphinx.cmd.build")
    out = tmp_path_factory.mktemp("docs-html")
    warnings = out / "warnings.txt"
    docs = Path(__file__).resolve().parent.parent / "docs"
    status = sphinx_build.build_main(
        ["-q", "-W", "--keep-going", "-b", "html", "-w", str(warnings), str(docs), str(out)]
    )
    assert status == 0, warnings.read_text()
    yield out


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's wheel, built once per session from this checkout (``python -m build``)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("dist")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(root)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("pyramid_redisx-*.whl")
    return wheel


@pytest.fixture
def sentinel_for(tmp_path: Any) -> Iterator[Any]:
    """``sentinel_for(master_port, password=None)`` → port of a Sentinel watching it as
    ``mymaster`` (that asks its clients for ``password``)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(master_port: int, password: str | None = None) -> int:
        port = free_port()
        conf = tmp_path / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
            + (f"requirepass {password}\n" if password else "")
        )
        log = open(tmp_path / f"sentinel-{port}.log", "wb")  # noqa: SIM115 - closed below
        started.append(
            subprocess.Popen([server_binary(), str(conf), "--sentinel"], stdout=log, stderr=log)
        )
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=port, socket_timeout=0.5, password=password) as sentinel:
                    if sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"):
                        return port
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / f"sentinel-{port}.log").read_text()
            time.sleep(0.05)

    try:
        yield start
    finally:
        for process in started:
            process.kill()
            process.wait(10)
