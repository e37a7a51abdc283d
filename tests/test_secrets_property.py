"""Property: whatever the password in ``redis.url``, no output shows it or a part of it.

Each generated password holds one of the characters that break URL parsing (``# ? / @
%`` and ``:``), between markers, so a fragment cut at that character would carry a
marker. Every output path is searched: settings errors and startup failures with their
chained causes, log records, reprs of options, clients and pools, the health JSON, and
``pyramid-redisx check`` / ``info`` output, for the password written raw and
percent-encoded, in the user info or as a query argument.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import webtest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyramid.config import Configurator

from pyramid_redisx import RedisSettingsError, RedisUnavailable, cli
from pyramid_redisx.request import client_set
from pyramid_redisx.testing import free_port

SPECIALS = "#?/@%:&=+"
MARKERS = ("Mk1q", "Mk2w", "Mk3e", "Mk4r")  # around the special character: any cut shows one
_chars = st.characters(blacklist_categories=("C", "Z"), blacklist_characters="\x85") | st.just(" ")


@st.composite
def passwords(draw: Any, special: str) -> str:
    """Arbitrary printable text around ``special`` (more special characters may follow)."""
    left, right = draw(st.text(_chars, max_size=8)), draw(st.text(_chars, max_size=8))
    a, b, c, d = MARKERS
    return f"{a}{left}{b}{special}{c}{right}{d}"


def chain_text(exc: BaseException) -> str:
    """The error as printed, and every cause and context, printed or not."""
    parts, current, seen = ["".join(traceback.format_exception(exc))], exc, set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.text += [record.getMessage(), repr(record.__dict__)]
        if record.exc_info and record.exc_info[1]:
            self.text.append(chain_text(record.exc_info[1]))


def assert_hidden(password: str, said: str) -> None:
    assert password not in said
    for marker in MARKERS:
        assert marker not in said, f"{marker} of the password shown in:\n{said}"


def app_outputs(url: str) -> list[str]:
    """Build the app (refused port): the settings error or the startup failure, then the
    health JSON and reprs of an app built without the startup check."""
    said: list[str] = []
    try:
        Configurator(settings={"redis.url": url}).include("pyramid_redisx")
    except RedisSettingsError as exc:
        return [chain_text(exc)]
    config = Configurator(settings={"redis.url": url})
    config.include("pyramid_redisx")
    try:
        config.make_wsgi_app()
        raise AssertionError("the startup check passed against a closed port")
    except RedisUnavailable as exc:
        said.append(chain_text(exc))
    settings_ = {"redis.url": url, "redis.startup_check": "false", "redis.health_route": "/h"}
    config = Configurator(settings=settings_)
    config.include("pyramid_redisx")
    app = webtest.TestApp(config.make_wsgi_app())
    said.append(app.get("/h", status=503).text)
    clients = client_set(app.app.registry)
    try:
        for name, options in clients.options.items():
            said += [repr(options), options.url, str(options.redacted())]
            client = clients.client(name)
            said += [repr(client), repr(client.connection_pool)]
    finally:
        clients.close()
    return said


def cli_outputs(ini_value: str) -> list[str]:
    said = []
    with tempfile.TemporaryDirectory() as folder:
        ini = Path(folder) / "app.ini"
        ini.write_text(f"[app:main]\nuse = egg:pyramid_redisx#demo\nredis.url = {ini_value}\n")
        for command in ("check", "info"):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    code = cli.main([command, str(ini)], out=out)
                except BaseException as exc:  # noqa: BLE001 - a traceback is output too
                    said.append(chain_text(exc))
                    code = -1
            said += [out.getvalue(), err.getvalue(), str(code)]
    return said


@pytest.mark.parametrize("special", SPECIALS)  # each one forced in
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    encoded=st.booleans(),
    where=st.sampled_from(["userinfo", "query", "query+"]),
)
def test_no_output_shows_the_password(
    special: str, data: st.DataObject, encoded: bool, where: str
) -> None:
    password = data.draw(passwords(special), label="password")
    written = quote(password, safe="") if encoded else password
    address = f"127.0.0.1:{free_port()}"
    url = {
        "userinfo": f"redis://app:{written}@{address}/0",
        "query": f"redis://{address}/0?password={written}",
        "query+": f"redis://{address}/0?password={written}&socket_timeout=1",
    }[where]
    records = Records()
    logger = logging.getLogger()
    old_level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        said = app_outputs(url)
        said += cli_outputs(url)  # as typed in an ini (a raw % is an interpolation error)
        said += cli_outputs(url.replace("%", "%%"))  # as escaped for the ini
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    assert_hidden(password, "\n".join(said + records.text))
