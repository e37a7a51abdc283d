"""A password never appears: logs, exceptions (with their causes), reprs, introspection."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError

from pyramid_redisx import RedisSettingsError, RedisUnavailable, get_redis
from pyramid_redisx.request import client_set
from pyramid_redisx.testing import free_port
from tests.conftest import build_app

PASSWORD = "Pw-Sekrit-4242"
WRONG = "Pw-Wrong-9999"


def everything_said(caplog: pytest.LogCaptureFixture, errors: list[BaseException]) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.__dict__))
    for error in errors:
        parts.append("".join(traceback.format_exception(error)))
        parts.append(repr(error))
    return "\n".join(parts)


@pytest.mark.parametrize("via", ["url", "env"])
def test_password_never_shown(
    via: str, redis_server_factory: Any, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    server = redis_server_factory(PASSWORD)
    base = f"127.0.0.1:{server.port}/0"
    if via == "url":
        settings = {"redis.url": f"redis://:{PASSWORD}@{base}"}
    else:
        monkeypatch.setenv("REDISX_TEST_PASSWORD", PASSWORD)
        settings = {"redis.url": f"redis://{base}", "redis.password": "env:REDISX_TEST_PASSWORD"}
    settings.update({"redis.slow_command": "0.001ms", "redis.server_timing": "true",
                     "redis.clients": "cache", "redis.cache.max_connections": "3"})  # fmt: skip
    shown: list[str] = []

    def view(request: Any) -> str:
        request.redis.set("k", PASSWORD)  # a value: never logged either
        request.redis.execute_command("AUTH", PASSWORD)
        get_redis(request, "cache").get("k")
        shown.extend([repr(request.redis), repr(request.redis.connection_pool)])
        return "ok"

    app = build_app(settings, {"/": view})
    response = app.get("/")
    clients = client_set(app.app.registry)
    for options in clients.options.values():
        shown.extend([repr(options), options.url, str(options.redacted())])
    shown.append(str(app.app.registry.introspector.get("redis clients", "default")["options"]))
    shown.append(str(response.headers))

    errors: list[BaseException] = []
    # a wrong password at startup
    for bad in (
        {"redis.url": f"redis://:{WRONG}@{base}"},
        {"redis.url": f"redis://{base}", "redis.password": WRONG},
    ):
        with pytest.raises(RedisUnavailable) as info:
            build_app(bad)
        errors.append(info.value)
    # a refused connection with a password in the URL
    with pytest.raises(RedisUnavailable) as info:
        build_app({"redis.url": f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"})
    errors.append(info.value)
    # settings errors next to a password
    for bad in ({"redis.url": f"redis://:{PASSWORD}@{base}?socket_timeout=soon"},
                {"redis.url": f"redis://:{PASSWORD}@{base}", "redis.max_connections": "x"},
                {"redis.url": f"rediss://:{PASSWORD}@{base}", "redis.ssl_ca_certs": "/no/such/file"},
                {"redis.pasword": PASSWORD}):  # fmt: skip
        with pytest.raises(RedisSettingsError) as settings_info:
            Configurator(settings=bad).include("pyramid_redisx")
        errors.append(settings_info.value)

    said = everything_said(caplog, errors) + "\n".join(shown)
    assert "redis client=default slow command AUTH key=-" in said  # the scenarios ran
    assert "***" in said
    assert PASSWORD not in said
    assert WRONG not in said


HOST = "127.0.0.1:1"  # refused at once: the startup check fails and names the URL


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # userinfo: the user name stays, the password goes; one that cannot be split
        # reliably (/ ? # in it) goes whole; every ':' after the first is the password's
        (f"redis://user:Hunter2-pw@{HOST}/0", f" at redis://user:***@{HOST}/0 is unavailable"),
        (f"redis://user:pa:Hunter2@{HOST}/0", f" at redis://user:***@{HOST}/0 is unavailable"),
        (f"redis://user@{HOST}/0", f" at redis://user@{HOST}/0 is unavailable"),
        (f"redis://:Hunter2//pw@{HOST}/0", f"redis.url = 'redis://***@{HOST}/0' is not valid"),
        (f"redis:user:Hunter2@{HOST}", f"redis.url = 'redis:user:***@{HOST}' is not valid"),
        # query arguments named like a secret: the value and all after it
        (f"redis://user@{HOST}/x?password=Hunter2",
         f"redis.url = 'redis://user@{HOST}/x?password=***' is not valid"),
        *[(f"redis://{HOST}/0?{name}=Hunter2&socket_timeout=soon",
           f"redis.url = 'redis://{HOST}/0?{name}=***' is not valid")
          for name in ("my_pwd", "api_token", "client_secret", "credential", "Auth")],
        # a secret argument before the last '@' (one may hold the other): all hidden
        (f"redis://{HOST}/0?password=Hun@ter2", "redis.url = 'redis://***' is not valid"),
        (f"redis://{HOST}/0?password=@Hunter2", "redis.url = 'redis://***' is not valid"),
    ],
)  # fmt: skip
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    """What an operator reads when the app does not start: the URL as written, less
    every part of the password (a setting's error) or as parsed (the startup check)."""
    with pytest.raises(ConfigurationError) as caught:
        build_app({"redis.url": url})
    error: BaseException = caught.value
    while not isinstance(error, RedisSettingsError | RedisUnavailable) and error.__cause__:
        error = error.__cause__
    message = str(error)
    assert shown in message, message
    assert "Hunter" not in message and "ter2" not in message and "pw@" not in message
