"""docs/integrations.rst names every HTTP-cache setting and shows the messages we raise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyramid.config import Configurator

from pyramid_redisx.http_cache import _CONVERTERS, parse_http_cache_settings

DOC = (Path(__file__).resolve().parent.parent / "docs" / "integrations.rst").read_text()
FLAT = " ".join(DOC.split())  # the messages are wrapped over lines there


@pytest.mark.parametrize("option", sorted(_CONVERTERS))
def test_http_cache_setting_documented(option: str) -> None:
    assert f"redis.http_cache.{option} =" in DOC


def test_the_documented_http_cache_settings_are_accepted() -> None:
    """The ini lines the page shows, as written, pass the startup check of settings."""
    shown = dict(re.findall(r"^\s*(redis\.http_cache\.\w+) = (.+)$", DOC, re.M))
    assert set(shown) == {f"redis.http_cache.{option}" for option in _CONVERTERS}, shown
    config = Configurator(settings={**shown, "redis.startup_check": "false"})
    config.include("pyramid_redisx")
    config.commit()
    assert parse_http_cache_settings(shown) == {
        option: _CONVERTERS[option](shown[f"redis.http_cache.{option}"]) for option in _CONVERTERS
    }


@pytest.mark.parametrize(
    "text",
    [
        "ignored: sessions use pyramid_redisx's client '<name>' (redis.sessions_client)",
        "request.redis_tm needs pyramid_tm: add config.include('pyramid_tm') "
        "(or pyramid_tm to pyramid.includes)",
        "commands failed, the transaction is aborted; <what>:",
        "queue '<name>': no message within <timeout> s",
        "queue '<name>' still full (<max_length> messages) after <timeout> s",
        "get_async_redis must be called inside a running event loop: its client belongs "
        "to that loop",
        "the HTTP cache stores pickled bytes: give it a client with decode_responses = false",
        "remove <arguments> from the region's arguments",
    ],
)
def test_message_documented(text: str) -> None:
    assert text in FLAT
