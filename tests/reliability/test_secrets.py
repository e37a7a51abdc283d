"""Scenario 6: the password never shows, whatever breaks.

With the password in the URL, then from ``env:VAR``: run scenario 1 (server killed and
restarted under load) and scenario 5 (server stalled under load), then rotate the
server's password (authentication fails: at startup and per request, health view
included) and take the server away (startup check refused). Every log record (message
and attributes), every exception's full text with its causes, every response body and
header, every repr of the clients and pools is searched for the password.
"""

from __future__ import annotations

import json
import logging
import secrets
import traceback
from typing import Any

import pytest

from pyramid_redisx import RedisUnavailable
from pyramid_redisx.request import client_set
from tests.conftest import build_app

from .harness import ErrorView
from .scenarios import SHORT_TIMEOUTS, incr_view, kill_and_restart_under_load, pause_under_load


def credentials(via: str, port: int, password: str, monkeypatch: Any) -> dict[str, str]:
    if via == "url":
        return {"redis.url": f"redis://:{password}@127.0.0.1:{port}/0"}
    monkeypatch.setenv("REDISX_RELIABILITY_PASSWORD", password)
    return {"redis.url": f"redis://127.0.0.1:{port}/0",
            "redis.password": "env:REDISX_RELIABILITY_PASSWORD"}  # fmt: skip


def exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


def startup_failure(settings: dict[str, Any]) -> RedisUnavailable:
    with pytest.raises(RedisUnavailable) as excinfo:
        build_app(settings)
    return excinfo.value


@pytest.mark.slow
@pytest.mark.parametrize("via", ["url", "env"])
def test_password_never_appears_across_failure_scenarios(
    via: str,
    redis_server_factory: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: Any,
    record_property: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Pw-" + secrets.token_hex(12)
    server = redis_server_factory(password)
    settings = {**credentials(via, server.port, password, monkeypatch), **SHORT_TIMEOUTS}
    said: list[str] = []  # everything the app, the add-on and the libraries produced

    # Scenario 1, smaller: SIGKILL + restart (same password) under load.
    killed = kill_and_restart_under_load(server, settings, threads=4, per_thread=150)
    # Scenario 5, smaller: SIGSTOP + SIGCONT under load, slow-command warnings on.
    stalled = pause_under_load(
        server, {**settings, "redis.slow_command": "100 milliseconds"},
        threads=4, pause_seconds=1.1, requests_after=20,
    )  # fmt: skip
    for run in (killed, stalled):
        said += run.errors.texts + run.extra["reprs"]
        said += [f"{o.status} {o.body} {o.error}" for o in run.outcomes]

    # The server comes back with another password: authentication fails.
    server.stop()
    rotated = redis_server_factory("Other-" + secrets.token_hex(8), port=server.port)
    auth_failure = startup_failure(settings)
    errors = ErrorView()
    app = build_app({**settings, "redis.startup_check": "warn", "redis.health_route": "/health"},
                    {"/incr": incr_view}, errors.include)  # fmt: skip
    responses = [app.get("/incr", expect_errors=True) for _ in range(5)]
    responses.append(app.get("/health", expect_errors=True))
    said += [repr(app.app.registry.introspector.get("redis clients", "default")["options"])]
    client_set(app.app.registry).close()
    said += errors.texts + [f"{r.status} {r.headers!r} {r.text}" for r in responses]
    # ... and goes away: connection refused.
    rotated.stop()
    refused = startup_failure(settings)
    said += [exception_text(auth_failure), exception_text(refused)]

    for record in caplog.records:
        said += [record.getMessage(), repr(record.__dict__)]
        if record.exc_info:
            said.append("".join(traceback.format_exception(*record.exc_info)))
    everything = "\n".join(said)
    figures = {
        "via": via,
        "log_records": len(caplog.records),
        "exception_texts": len(killed.errors.texts) + len(stalled.errors.texts) + len(errors.texts),
        "scenario1": {k: sum(o.status == k for o in killed.outcomes) for k in (200, 503)},
        "scenario5": {k: sum(o.status == k for o in stalled.outcomes) for k in (200, 503)},
        "characters_searched": len(everything),
    }
    print("\nscenario 6 (secrets):", json.dumps(figures))
    for key, value in figures.items():
        record_property(f"secrets_{via}_{key}", value)

    # What was searched covers every failure kind (the search can find what it looks for).
    assert sum(o.status == 503 for o in killed.outcomes) > 0
    assert sum(o.status == 503 for o in stalled.outcomes) > 0
    assert auth_failure.cause == "authentication failed" and refused.cause == "connection refused"
    assert f"redis://:***@127.0.0.1:{server.port}/0" in str(refused)  # present, and masked
    assert [r.status_int for r in responses] == [503] * 6
    assert all("AuthenticationError" in r.text for r in responses[:5])
    assert '"status": "down"' in responses[5].text or '"status":"down"' in responses[5].text
    for kind in ("ConnectionError", "TimeoutError", "AuthenticationError"):
        assert kind in everything, kind
    assert len(caplog.records) > 100
    # The password itself, nowhere.
    assert password not in everything, [
        text[max(0, text.index(password) - 300) : text.index(password) + 100]
        for text in said
        if password in text
    ][:3]
    assert password.encode().hex() not in everything  # not even as hex
