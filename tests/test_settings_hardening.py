"""Settings that used to do something else silently (issue 13, defects 1, 4 and 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyramid.config import Configurator

from pyramid_redisx import RedisSettingsError
from pyramid_redisx.settings import check_keys, parse_client


def include_error(settings: dict[str, Any], commit: bool = False) -> RedisSettingsError:
    with pytest.raises(Exception) as info:  # direct, or wrapped by Pyramid at commit
        config = Configurator(settings=settings)
        config.include("pyramid_redisx")
        if commit:
            config.commit()
    error = getattr(info.value, "evalue", info.value)
    assert isinstance(error, RedisSettingsError), repr(info.value)
    return error


@pytest.mark.parametrize(
    ("settings", "key", "url"),
    [
        ({"redis.host": "cache.internal"}, "redis.host", "redis.url = redis://cache.internal:6379/0"),
        ({"redis.host": "h1", "redis.port": "6380", "redis.db": "3"}, "redis.db",
         "redis.url = redis://h1:6380/3"),
        ({"redis.port": "6390"}, "redis.port", "redis.url = redis://localhost:6390/0"),
        ({"redis.unix_socket_path": "/run/redis.sock", "redis.db": "2"}, "redis.db",
         "redis.url = unix:///run/redis.sock?db=2"),
        ({"redis.url": "redis://:pw-x1@h/0", "redis.port": "7000"}, "redis.port",
         "redis.url = redis://:***@h:7000/0"),
        ({"redis.clients": "cache", "redis.cache.host": "c2"}, "redis.cache.host",
         "redis.cache.url = redis://c2:6379/0"),
    ],
)  # fmt: skip
def test_legacy_keys_are_errors_showing_the_url(
    settings: dict[str, str], key: str, url: str
) -> None:
    error = include_error(settings)
    assert error.key == key
    assert url in str(error)
    assert "pw-x1" not in str(error)


@pytest.mark.parametrize("option", ["ssl_cert_reqs", "ssl_check_hostname", "ssl_ca_certs"])
def test_ssl_keys_need_rediss(option: str, tmp_path: Path) -> None:
    value = {"ssl_cert_reqs": "required", "ssl_check_hostname": "true"}.get(option)
    if value is None:
        (tmp_path / "ca.pem").write_text("x")
        value = str(tmp_path / "ca.pem")
    error = include_error({"redis.url": "redis://h/0", f"redis.{option}": value})
    assert error.key == f"redis.{option}"
    assert "rediss://" in str(error)
    parse_client("default", {"redis.url": "rediss://h/0", f"redis.{option}": value})


def test_ssl_keyfile_without_certfile(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("x")
    error = include_error(
        {"redis.url": "rediss://h/0", "redis.ssl_keyfile": str(tmp_path / "k.pem")}
    )
    assert error.key == "redis.ssl_keyfile"
    assert "redis.ssl_certfile" in str(error)


@pytest.mark.parametrize(
    "key", ["redis.socket_timeout", "redis.socket_connect_timeout", "redis.pool_timeout",
            "redis.health_check_interval", "redis.startup_check_timeout", "redis.slow_command",
            "redis.retry_backoff_cap"],
)  # fmt: skip
def test_durations_have_an_upper_bound(key: str) -> None:
    error = include_error({key: "99999999999"})
    assert error.key == key
    assert "at most 86400 seconds (one day)" in str(error)
    parse_client("default", {key: "86400"})  # one day is accepted


def test_sessions_client_must_be_declared() -> None:
    error = include_error({"redis.sessions_client": "sessionz", "redis.startup_check": "false"},
                          commit=True)  # fmt: skip
    assert error.key == "redis.sessions_client"
    assert "no client named 'sessionz'" in str(error) and "default" in str(error)


def test_sessions_client_declared_by_directive_is_fine() -> None:
    config = Configurator(settings={"redis.sessions_client": "s", "redis.startup_check": "false"})
    config.include("pyramid_redisx")
    config.add_redis_client("s")
    config.commit()


def test_near_miss_hint_names_the_full_key() -> None:
    with pytest.raises(RedisSettingsError) as info:
        check_keys({"redis.max_conection": "10"}, [])
    assert "did you mean 'redis.max_connections'?" in str(info.value)
    with pytest.raises(RedisSettingsError) as info:
        check_keys({"redis.cache.max_conection": "10"}, ["cache"])
    assert "did you mean 'redis.cache.max_connections'?" in str(info.value)


@pytest.mark.parametrize("char", list("#?/"))
def test_unparseable_password_hint_says_percent_encode(char: str) -> None:
    error = include_error({"redis.url": f"redis://app:Tr0ub4dor{char}3@host:6379/0"})
    text = str(error)
    assert "percent-encode # ? / @ %" in text and "%23" in text
    assert "valid port" not in text and "Tr0ub" not in text and "redis://***@host:6379/0" in text


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("password=Ab1&cd-tail", "unknown URL query argument after a password: percent-encode &"),
        ("password=Ab1&db=cd-tail", "= '***' is not valid: value hidden: it follows a password"),
        ("password=Ab1&socket_timeout=cd-tail", "value hidden: it follows a password"),
        ("password=Ab1#cd-tail", "a Redis URL has no #fragment: percent-encode"),
    ],
)
def test_a_password_cut_in_the_query_is_not_shown(query: str, said: str) -> None:
    error = include_error({"redis.url": f"redis://h/0?{query}"})
    assert said in str(error)
    assert "Ab1" not in str(error) and "cd-tail" not in str(error)
