"""Pure unit tests of the ``redis.*`` settings parser (no Redis server involved).

The expected values come from /work/shared/DESIGN.md ("Settings", "Keys that are not
ours", "Never"), not from the tables in ``pyramid_redisx.settings``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pyramid_redisx import RedisSettingsError
from pyramid_redisx.settings import (
    APP_SETTINGS,
    CLIENT_SETTINGS,
    AppOptions,
    RedisOptions,
    check_keys,
    parse_app,
    parse_client,
    split_url,
)

SECRET = "hunter2-Sup3rSecret"
EXISTING_FILE = __file__


def error_of(settings: dict[str, Any], name: str = "default", **kw: Any) -> RedisSettingsError:
    with pytest.raises(RedisSettingsError) as info:
        parse_client(name, settings, kw or None)
    return info.value


def parse_all(settings: dict[str, Any]) -> dict[str, RedisOptions]:
    """What includeme parses: the app keys, the default client, each declared client."""
    app = parse_app(settings)
    result = {"default": parse_client("default", settings)}
    for name in app.clients:
        result[name] = parse_client(name, settings)
    return result


# ------------------------------------------------------------------ 1. defaults
def test_defaults_of_bare_settings_match_design() -> None:
    o = parse_client("default", {})
    assert (o.scheme, o.host, o.port, o.db, o.path) == ("redis", "localhost", 6379, 0, None)
    assert o.url == "redis://localhost:6379/0"
    assert o.username is None
    assert o.password is None
    assert o.max_connections == 32
    assert o.blocking is True
    assert o.pool_timeout == 5.0
    assert o.socket_connect_timeout == 2.0
    assert o.socket_timeout == 2.0
    assert o.socket_keepalive is True
    assert o.health_check_interval == 30.0
    assert o.retries == 3
    assert o.retry_on_timeout is False
    assert o.retry_backoff_cap == 0.25
    assert o.decode_responses is False
    assert o.client_name is None
    assert o.startup_check == "true"
    assert o.startup_check_timeout == 2.0
    assert o.stats is True
    assert o.stats_level == logging.DEBUG
    assert o.pool_warn_ratio == 0.8
    assert o.slow_command is None
    assert o.cluster is False
    assert o.sentinels is None
    assert o.sentinel_service is None
    assert o.sentinel_password is None
    assert o.kind == "standalone"
    # TLS and RESP: redis-py's own defaults, i.e. nothing passed.
    assert o.ssl_ca_certs is None
    assert o.ssl_certfile is None
    assert o.ssl_keyfile is None
    assert o.ssl_cert_reqs is None
    assert o.ssl_check_hostname is None
    assert o.protocol is None


def test_app_defaults() -> None:
    assert parse_app({}) == AppOptions(
        clients=(), server_timing=False, health_route=None, sessions_client="default"
    )


def test_non_redis_keys_are_ignored() -> None:
    settings = {"pyramid.reload_templates": "true", "sqlalchemy.url": "sqlite://"}
    assert parse_client("default", settings) == parse_client("default", {})
    assert check_keys(settings, []) == []


def test_tables_cover_every_design_key() -> None:
    client = {s.name for s in CLIENT_SETTINGS}
    app = {s.name for s in APP_SETTINGS}
    assert client >= {
        "url", "max_connections", "blocking", "pool_timeout", "socket_connect_timeout",
        "socket_timeout", "socket_keepalive", "health_check_interval", "retries",
        "retry_on_timeout", "retry_backoff_cap", "decode_responses", "client_name",
        "username", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
        "ssl_cert_reqs", "ssl_check_hostname", "protocol", "startup_check",
        "startup_check_timeout", "stats", "stats_level", "pool_warn_ratio", "slow_command",
        "sentinels", "sentinel_service", "sentinel_password", "cluster",
    }  # fmt: skip
    assert app >= {"clients", "server_timing", "health_route"}
    assert not client & {"clients", "server_timing", "health_route"}


# ------------------------------------------------------------------ 2. durations
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0.2", 0.2),
        ("3", 3.0),
        (" 1.5 ", 1.5),
        (".5", 0.5),
        ("200 milliseconds", 0.2),
        ("1 millisecond", 0.001),
        ("3 seconds", 3.0),
        ("1 second", 1.0),
        ("250ms", 0.25),
        ("250 ms", 0.25),
        ("1.5s", 1.5),
        ("2 sec", 2.0),
        ("2 minutes", 120.0),
        ("1min", 60.0),
        ("3 SECONDS", 3.0),
        (timedelta(milliseconds=1500), 1.5),
        (timedelta(minutes=1), 60.0),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    o = parse_client("default", {"redis.socket_timeout": value})
    assert o.socket_timeout == pytest.approx(seconds)
    assert isinstance(o.socket_timeout, float)
    # The same converter serves every duration key and the directive.
    assert parse_client("x", {}, {"pool_timeout": value}).pool_timeout == pytest.approx(seconds)


@pytest.mark.parametrize(
    "key",
    ["pool_timeout", "socket_connect_timeout", "socket_timeout", "health_check_interval",
     "retry_backoff_cap", "startup_check_timeout", "slow_command", "breaker_cooldown"],
)  # fmt: skip
def test_every_duration_key_accepts_spans(key: str) -> None:
    assert getattr(parse_client("default", {f"redis.{key}": "250ms"}), key) == 0.25


@pytest.mark.parametrize("key", ["pool_timeout", "health_check_interval", "retry_backoff_cap"])
def test_zero_allowed_where_it_means_off(key: str) -> None:
    assert getattr(parse_client("default", {f"redis.{key}": "0"}), key) == 0.0


def test_slow_command_unset_when_empty() -> None:
    assert parse_client("default", {"redis.slow_command": ""}).slow_command is None
    assert parse_client("default", {"redis.slow_command": "100ms"}).slow_command == 0.1


# ------------------------------------------------------------------ 3. booleans
BOOL_KEYS = [
    "blocking", "socket_keepalive", "retry_on_timeout", "decode_responses", "stats",
    "cluster", "ssl_check_hostname", "sentinel_listener", "require_full_coverage",
    "fail_soft",
    "client_cache",
]  # fmt: skip
TRUE_WORDS = [
    "true",
    "True",
    "TRUE",
    "t",
    "yes",
    "Yes",
    "YES",
    "y",
    "on",
    "ON",
    "On",
    "1",
    " true ",
]
FALSE_WORDS = ["false", "False", "FALSE", "f", "no", "No", "NO", "n", "off", "OFF", "Off", "0"]


@pytest.mark.parametrize("key", BOOL_KEYS)
@pytest.mark.parametrize("word", TRUE_WORDS)
def test_true_words(key: str, word: str) -> None:
    settings = {f"redis.{key}": word, "redis.url": "rediss://h/0"}  # ssl_* need rediss://
    assert getattr(parse_client("default", settings), key) is True


@pytest.mark.parametrize("key", BOOL_KEYS)
@pytest.mark.parametrize("word", FALSE_WORDS)
def test_false_words(key: str, word: str) -> None:
    settings = {f"redis.{key}": word, "redis.url": "rediss://h/0"}  # ssl_* need rediss://
    assert getattr(parse_client("default", settings), key) is False


@pytest.mark.parametrize("key", BOOL_KEYS)
@pytest.mark.parametrize("value", [True, False, 1, 0])
def test_python_booleans(key: str, value: object) -> None:
    assert getattr(parse_client("x", {}, {key: value, "url": "rediss://h/0"}), key) is bool(value)


@pytest.mark.parametrize("key", BOOL_KEYS)
@pytest.mark.parametrize("word", ["ture", "flase", "yess", "2", "enabled"])
def test_bad_boolean_words_name_the_key(key: str, word: str) -> None:
    err = error_of({f"redis.{key}": word})
    assert err.key == f"redis.{key}"
    assert err.value == word
    assert str(err).startswith(f"redis.{key} = {word!r} is not valid: ")
    assert "true/false" in str(err)


def test_server_timing_boolean() -> None:
    assert parse_app({"redis.server_timing": "Yes"}).server_timing is True
    with pytest.raises(RedisSettingsError) as info:
        parse_app({"redis.server_timing": "ture"})
    assert info.value.key == "redis.server_timing"


@pytest.mark.parametrize(
    ("word", "mode"),
    [("true", "true"), ("Yes", "true"), ("1", "true"), ("off", "false"), ("False", "false"),
     ("warn", "warn"), ("WARN", "warn"), (True, "true"), (False, "false")],
)  # fmt: skip
def test_startup_check_modes(word: object, mode: str) -> None:
    assert parse_client("x", {}, {"startup_check": word}).startup_check == mode


@pytest.mark.parametrize(
    ("word", "level"),
    [("debug", 10), ("INFO", 20), ("warning", 30), ("warn", 30), ("error", 40),
     ("critical", 50), (logging.INFO, logging.INFO)],
)  # fmt: skip
def test_stats_level(word: object, level: int) -> None:
    assert parse_client("x", {}, {"stats_level": word}).stats_level == level


# ------------------------------------------------------------------ 4. env: passwords
def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRX_TEST_PW", SECRET)
    o = parse_client("default", {"redis.password": "env:PRX_TEST_PW"})
    assert o.password == SECRET
    assert SECRET not in repr(o)
    assert SECRET not in o.url


def test_sentinel_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRX_TEST_SPW", SECRET)
    settings = {"redis.sentinel_password": "env:PRX_TEST_SPW"}
    assert parse_client("default", settings).sentinel_password == SECRET


@pytest.mark.parametrize(
    ("key", "name"),
    [("redis.password", "default"), ("redis.cache.password", "cache"),
     ("redis.sentinel_password", "default")],
)  # fmt: skip
def test_unset_environment_variable(monkeypatch: pytest.MonkeyPatch, key: str, name: str) -> None:
    monkeypatch.delenv("PRX_TEST_MISSING", raising=False)
    err = error_of({"redis.clients": "cache", key: "env:PRX_TEST_MISSING"}, name)
    assert err.key == key
    message = str(err)
    assert message.startswith(key + " = ")
    assert "PRX_TEST_MISSING" in message
    assert "not set" in message
    assert "env:" not in message  # the value is shown redacted


def test_unset_variable_message_never_shows_other_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRX_TEST_MISSING", raising=False)
    err = error_of(
        {"redis.url": f"redis://:{SECRET}@h/0", "redis.sentinel_password": "env:PRX_TEST_MISSING"}
    )
    assert err.key == "redis.sentinel_password"
    assert SECRET not in str(err)


def test_plain_password_is_used_as_is() -> None:
    assert parse_client("default", {"redis.password": SECRET}).password == SECRET


# ------------------------------------------------------------------ 5. URL
def test_rediss_url() -> None:
    o = parse_client("default", {"redis.url": "rediss://cache.example.com:6380/2"})
    assert (o.scheme, o.host, o.port, o.db) == ("rediss", "cache.example.com", 6380, 2)
    assert o.url == "rediss://cache.example.com:6380/2"


def test_unix_url() -> None:
    o = parse_client("default", {"redis.url": "unix:///run/redis/redis.sock?db=3"})
    assert (o.scheme, o.path, o.db, o.host, o.port) == (
        "unix",
        "/run/redis/redis.sock",
        3,
        None,
        None,
    )
    assert o.url == "unix:///run/redis/redis.sock?db=3"
    assert o.kind == "standalone"


def test_unix_url_without_db() -> None:
    o = parse_client("default", {"redis.url": "unix:///tmp/redis.sock"})
    assert (o.path, o.db) == ("/tmp/redis.sock", 0)


def test_ipv6_host() -> None:
    o = parse_client("default", {"redis.url": "redis://[::1]:6380/4"})
    assert (o.host, o.port, o.db) == ("::1", 6380, 4)
    assert o.url == "redis://[::1]:6380/4"


def test_host_without_port_or_db() -> None:
    o = parse_client("default", {"redis.url": "redis://example.org"})
    assert (o.host, o.port, o.db) == ("example.org", 6379, 0)


@pytest.mark.parametrize(
    ("url", "db"),
    [("redis://h/7", 7), ("redis://h:6379/15", 15), ("redis://h/?db=5", 5), ("redis://h?db=6", 6),
     ("redis://h/1?db=2", 2), ("redis://h/", 0), ("redis://h/0", 0)],
)  # fmt: skip
def test_db_from_path_and_query(url: str, db: int) -> None:
    assert parse_client("default", {"redis.url": url}).db == db


def test_userinfo_credentials_percent_encoded() -> None:
    o = parse_client("default", {"redis.url": "redis://app%40svc:p%40ss%3Aw%2Frd@h:6379/0"})
    assert o.username == "app@svc"
    assert o.password == "p@ss:w/rd"
    assert "p@ss" not in o.url and "ss%3A" not in o.url
    assert o.url == "redis://app@svc:***@h:6379/0"


def test_password_only_userinfo() -> None:
    o = parse_client("default", {"redis.url": f"redis://:{SECRET}@h/0"})
    assert (o.username, o.password) == (None, SECRET)
    assert o.url == "redis://:***@h:6379/0"


def test_credentials_from_query() -> None:
    o = parse_client("default", {"redis.url": f"redis://h/0?username=bob&password={SECRET}"})
    assert (o.username, o.password) == ("bob", SECRET)


def test_query_arguments_win_over_separate_keys() -> None:
    settings = {
        "redis.url": "redis://h/0?socket_timeout=5&max_connections=7&decode_responses=yes",
        "redis.socket_timeout": "1",
        "redis.max_connections": "50",
        "redis.decode_responses": "no",
    }
    o = parse_client("default", settings)
    assert o.socket_timeout == 5.0
    assert o.max_connections == 7
    assert o.decode_responses is True


def test_query_arguments_use_the_same_converters() -> None:
    o = parse_client(
        "default", {"redis.url": "rediss://h/0?socket_timeout=250ms&ssl_cert_reqs=none"}
    )
    assert o.socket_timeout == 0.25
    assert o.ssl_cert_reqs == "none"


def test_separate_credentials_override_url() -> None:
    settings = {
        "redis.url": "redis://urluser:urlpw@h/0",
        "redis.username": "keyuser",
        "redis.password": SECRET,
    }
    o = parse_client("default", settings)
    assert (o.username, o.password) == ("keyuser", SECRET)


def test_separate_credentials_override_url_query_credentials() -> None:
    settings = {"redis.url": "redis://h/0?username=u&password=urlpw", "redis.password": SECRET}
    o = parse_client("default", settings)
    assert o.password == SECRET
    assert o.username == "u"


def test_named_client_credentials_precedence() -> None:
    base = {"redis.clients": "cache", "redis.password": "app-wide-pw", "redis.username": "appuser"}
    # the client's own key wins over its URL
    own = {**base, "redis.cache.url": "redis://u:urlpw@c/0", "redis.cache.password": SECRET}
    assert parse_client("cache", own).password == SECRET
    # the client's own URL wins over the app-wide key
    url = {**base, "redis.cache.url": "redis://u:urlpw@c/0"}
    assert (parse_client("cache", url).username, parse_client("cache", url).password) == (
        "u",
        "urlpw",
    )
    # no credentials in the client's own URL: the app-wide key
    bare = {**base, "redis.cache.url": "redis://c/0"}
    o = parse_client("cache", bare)
    assert (o.username, o.password) == ("appuser", "app-wide-pw")


def test_named_client_inheriting_app_url_and_password_matches_default() -> None:
    """redis.cache.url and redis.cache.password are both unset: both fall back to the
    app-wide keys, where redis.password overrides the URL's credentials (DESIGN: keys
    fall back to redis.<key>; redis.password overrides the URL). So ``cache`` must
    authenticate exactly like ``default``."""
    settings = {
        "redis.clients": "cache",
        "redis.url": "redis://olduser:old-url-pw@h/0",
        "redis.username": "newuser",
        "redis.password": SECRET,
    }
    default = parse_client("default", settings)
    cache = parse_client("cache", settings)
    assert (default.username, default.password) == ("newuser", SECRET)
    assert (cache.username, cache.password) == ("newuser", SECRET)
    assert cache == default


def test_split_url_parts() -> None:
    parts = split_url("rediss://u:p%2Fw@example.org:6380/3?socket_timeout=1")
    assert parts == {
        "scheme": "rediss", "username": "u", "password": "p/w", "query": {"socket_timeout": "1"},
        "after_secret": set(),
        "host": "example.org", "port": 6380, "path": None, "db": 3,
    }  # fmt: skip


@pytest.mark.parametrize(
    "url",
    ["http://h/0", "redis://h:99999/0", "redis://h:abc/0", "redis://h/x", "redis://h/0?foo=1",
     "unix://", "redis://h:0/0"],
)  # fmt: skip
def test_split_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        split_url(url)


# ------------------------------------------------------------------ 6. named clients
@pytest.mark.parametrize(
    "clients", ["cache queue", "cache, queue", "cache,queue", " cache\n queue "]
)
def test_clients_list(clients: str) -> None:
    assert parse_app({"redis.clients": clients}).clients == ("cache", "queue")


def test_named_client_fallback_chain() -> None:
    settings = {
        "redis.clients": "cache queue",
        "redis.url": "redis://main:6379/0",
        "redis.cache.url": "redis://cachehost:6380/1",
        "redis.cache.max_connections": "5",
        "redis.max_connections": "10",
        "redis.queue.socket_timeout": "30 seconds",
    }
    clients = parse_all(settings)
    cache, queue, default = clients["cache"], clients["queue"], clients["default"]
    assert (cache.host, cache.port, cache.db) == ("cachehost", 6380, 1)
    assert (queue.host, queue.port, queue.db) == ("main", 6379, 0)
    assert cache.max_connections == 5  # redis.cache.<key>
    assert queue.max_connections == 10  # redis.<key>
    assert default.max_connections == 10
    assert queue.socket_timeout == 30.0
    assert cache.socket_timeout == 2.0  # the default
    assert default.socket_timeout == 2.0  # default never reads redis.<name>.*
    assert cache.pool_timeout == default.pool_timeout == 5.0


def test_named_client_with_nothing_set_equals_default() -> None:
    settings = {"redis.clients": "cache", "redis.url": "redis://h/0", "redis.retries": "5"}
    assert parse_client("cache", settings) == parse_client("default", settings)


def test_named_client_errors_name_the_key_that_was_read() -> None:
    err = error_of({"redis.clients": "cache", "redis.cache.max_connections": "lots"}, "cache")
    assert err.key == "redis.cache.max_connections"
    # falling back to the app-wide key: the app-wide key is the one to fix
    err = error_of({"redis.clients": "cache", "redis.retries": "x"}, "cache")
    assert err.key == "redis.retries"


@pytest.mark.parametrize(
    ("clients", "fragment"),
    [
        ("cache cache", "twice"),
        ("cache, queue, cache", "twice"),
        ("default", "default"),
        ("sessions", "reserved"),
        ("http_cache", "reserved"),
        ("url", "name of a setting"),
        ("max_connections", "name of a setting"),
        ("clients", "name of a setting"),
        ("health_route", "name of a setting"),
        ("ca$he", "letters"),
        ("1cache", "letters"),
        ("cache.hot", "letters"),
        ("ca/che", "letters"),
    ],
)
def test_parse_app_rejects_client_names(clients: str, fragment: str) -> None:
    with pytest.raises(RedisSettingsError) as info:
        parse_app({"redis.clients": clients})
    assert info.value.key == "redis.clients"
    assert str(info.value).startswith("redis.clients = ")
    assert fragment in str(info.value)


@pytest.mark.parametrize("name", ["cache", "Cache_2", "queue-blocking", "_x"])
def test_parse_app_accepts_client_names(name: str) -> None:
    assert parse_app({"redis.clients": name}).clients == (name,)


def test_health_route() -> None:
    assert parse_app({"redis.health_route": "/_health/redis"}).health_route == "/_health/redis"
    assert parse_app({"redis.health_route": ""}).health_route is None


# ------------------------------------------------------------------ 7. directive overrides
def test_directive_overrides() -> None:
    o = parse_client("x", {}, {"max_connections": 10, "socket_timeout": "250ms", "blocking": False})
    assert o.max_connections == 10
    assert o.socket_timeout == 0.25
    assert o.blocking is False
    assert o.pool_timeout == 5.0  # everything else: defaults


def test_directive_overrides_win_over_settings() -> None:
    settings = {"redis.x.max_connections": "5", "redis.max_connections": "6"}
    assert parse_client("x", settings, {"max_connections": "7"}).max_connections == 7
    assert parse_client("x", settings).max_connections == 5


def test_directive_python_values() -> None:
    o = parse_client(
        "x",
        {},
        {
            "url": "redis://h:6380/2",
            "socket_connect_timeout": timedelta(milliseconds=100),
            "retries": 0,
            "pool_warn_ratio": 0.5,
            "stats_level": logging.INFO,
            "protocol": 3,
            "sentinels": ["s1:26379", "s2:26380"],
            "sentinel_service": "mymaster",
        },
    )
    assert (o.host, o.port, o.db) == ("h", 6380, 2)
    assert o.socket_connect_timeout == 0.1
    assert o.retries == 0
    assert o.pool_warn_ratio == 0.5
    assert o.stats_level == logging.INFO
    assert o.protocol == 3
    assert o.sentinels == (("s1", 26379), ("s2", 26380))
    assert o.kind == "sentinel"


def test_directive_unknown_option_has_hint() -> None:
    err = error_of({}, "x", max_conections=10)
    assert "max_conections" in err.key
    assert "did you mean 'max_connections'" in str(err)


def test_directive_unknown_option_without_near_miss() -> None:
    err = error_of({}, "x", colour="blue")
    assert "colour" in err.key
    assert "unknown option" in str(err)
    assert "did you mean" not in str(err)


def test_directive_bad_value_names_the_option() -> None:
    err = error_of({}, "x", socket_timeout="soon")
    assert "x" in err.key and "socket_timeout" in err.key
    assert err.value == "soon"


def test_directive_float_for_integer_is_rejected_like_the_ini_string() -> None:
    """Same converters for ini strings and Python values: "10.5" is refused, so 10.5
    must be too (not silently truncated to 10)."""
    assert error_of({"redis.max_connections": "10.5"}).key == "redis.max_connections"
    with pytest.raises(RedisSettingsError):
        parse_client("x", {}, {"max_connections": 10.5})


# ------------------------------------------------------------------ 8. identity
def test_same_settings_give_equal_hashable_options() -> None:
    settings = {
        "redis.url": "redis://u:pw@h:6380/1?socket_timeout=1",
        "redis.max_connections": "8",
        "redis.sentinels": "a:26379, b:26379",
        "redis.sentinel_service": "m",
    }
    a, b = parse_client("default", settings), parse_client("default", dict(settings))
    assert a == b
    assert a is not b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.max_connections = 9  # type: ignore[misc]


def test_ini_strings_and_python_values_give_equal_options() -> None:
    ini = parse_client("x", {"redis.x.socket_timeout": "250ms", "redis.x.blocking": "false",
                             "redis.x.max_connections": "10"})  # fmt: skip
    py = parse_client("x", {}, {"socket_timeout": 0.25, "blocking": False, "max_connections": 10})
    assert ini == py
    assert hash(ini) == hash(py)


# (setting key, a value different from the default); base settings for each case
CHANGES: list[tuple[str, object]] = [
    ("url", "redis://otherhost:6379/0"),
    ("url", "redis://localhost:6380/0"),
    ("url", "redis://localhost:6379/1"),
    ("url", "rediss://localhost:6379/0"),
    ("url", "unix:///tmp/redis.sock"),
    ("url", "redis://user@localhost:6379/0"),
    ("max_connections", "33"),
    ("blocking", "false"),
    ("pool_timeout", "6"),
    ("socket_connect_timeout", "3"),
    ("socket_timeout", "3"),
    ("socket_keepalive", "false"),
    ("health_check_interval", "0"),
    ("retries", "2"),
    ("retry_on_timeout", "true"),
    ("retry_writes", "true"),
    ("request_connection", "false"),
    ("retry_backoff_cap", "1"),
    ("decode_responses", "true"),
    ("client_name", "web"),
    ("username", "bob"),
    ("password", SECRET),
    ("ssl_ca_certs", EXISTING_FILE),
    ("ssl_certfile", EXISTING_FILE),
    ("ssl_keyfile", EXISTING_FILE),
    ("ssl_cert_reqs", "none"),
    ("ssl_check_hostname", "false"),
    ("protocol", "3"),
    ("startup_check", "warn"),
    ("startup_check_timeout", "5"),
    ("stats", "false"),
    ("stats_level", "info"),
    ("pool_warn_ratio", "0.9"),
    ("slow_command", "100ms"),
    ("sentinels", "s1:26379"),
    ("sentinel_service", "other"),
    ("sentinel_password", SECRET),
    ("cluster", "true"),
    ("sentinel_role", "replica"),
    ("sentinel_listener", "false"),
    ("cluster_nodes", "n1:7000 n2:7001"),
    ("load_balancing_strategy", "round_robin_replicas"),
    ("require_full_coverage", "false"),
    ("breaker_failures", "0"),
    ("breaker_cooldown", "5s"),
    ("fail_soft", "true"),
    ("client_cache", "true"),
    ("client_cache_max_keys", "500"),
    ("client_cache_max_bytes", "1 MB"),
    ("client_cache_ttl", "30 seconds"),
    ("client_cache_commands", "GET HGETALL"),
]
IDENTITY_BASE = {"redis.sentinel_service": "mymaster"}


@pytest.mark.parametrize(("key", "value"), CHANGES, ids=[f"{k}={v}" for k, v in CHANGES])
def test_any_single_change_gives_unequal_options(key: str, value: object) -> None:
    settings = dict(IDENTITY_BASE)
    if key.startswith("ssl_"):  # TLS keys need a rediss:// URL, a client key its certificate
        settings["redis.url"] = "rediss://localhost:6379/0"
        if key == "ssl_keyfile":
            settings["redis.ssl_certfile"] = __file__
    base = parse_client("default", settings)
    changed = parse_client("default", {**settings, f"redis.{key}": value})
    assert changed != base
    assert len({base, changed}) == 2


def test_identity_cases_cover_every_option() -> None:
    assert {key for key, _ in CHANGES} == {s.name for s in CLIENT_SETTINGS}


def test_same_options_from_different_spellings_are_equal() -> None:
    a = parse_client("default", {"redis.url": "redis://h:6379/0", "redis.socket_timeout": "2"})
    b = parse_client("default", {"redis.url": "redis://h/0?socket_timeout=2000ms"})
    assert a == b


# ------------------------------------------------------------------ 9. redaction
@pytest.mark.parametrize(
    "settings",
    [
        {"redis.url": f"redis://:{SECRET}@h:6379/0"},
        {"redis.url": f"redis://user:{SECRET}@h:6379/0"},
        {"redis.url": f"rediss://h:6379/0?password={SECRET}"},
        {"redis.url": f"unix://:{SECRET}@/tmp/redis.sock"},
        {"redis.password": SECRET},
        {"redis.sentinels": "s:26379", "redis.sentinel_service": "m",
         "redis.sentinel_password": SECRET},
    ],
)  # fmt: skip
def test_options_never_show_the_password(settings: dict[str, str]) -> None:
    o = parse_client("default", settings)
    assert SECRET in (o.password, o.sentinel_password)  # it is there to be used...
    assert SECRET not in repr(o)  # ...but never shown
    assert SECRET not in str(o)
    assert SECRET not in o.url
    shown = o.redacted()
    assert SECRET not in repr(shown)
    assert shown["url"] == o.url
    assert shown["kind"] == o.kind
    if o.password:
        assert shown["password"] == "***"
        assert ":***@" in o.url
    if o.sentinel_password:
        assert shown["sentinel_password"] == "***"


def test_redacted_without_password() -> None:
    shown = parse_client("default", {}).redacted()
    assert shown["password"] is None
    assert shown["url"] == "redis://localhost:6379/0"
    assert shown["max_connections"] == 32
    assert shown["kind"] == "standalone"


@pytest.mark.parametrize(
    "url",
    [f"redis://:{SECRET}@h:99999/0", f"redis://u:{SECRET}@h/x", f"http://u:{SECRET}@h/0",
     f"redis://h/0?password={SECRET}&bogus=1"],
)  # fmt: skip
def test_invalid_url_with_password_is_shown_redacted(url: str) -> None:
    err = error_of({"redis.url": url})
    assert err.key == "redis.url"
    assert SECRET not in str(err)
    assert SECRET not in repr(err.value)
    assert "***" in str(err)
    assert isinstance(err.value, str) and "***" in err.value


# ------------------------------------------------------------------ 10. check_keys
def test_check_keys_known_keys_pass() -> None:
    settings = {
        "redis.url": "redis://h/0",
        "redis.max_connections": "4",
        "redis.clients": "cache",
        "redis.cache.url": "redis://c/0",
        "redis.server_timing": "true",
        "redis.health_route": "/h",
        "redis.sessions_client": "cache",
        "other.key": "x",
    }
    assert check_keys(settings, ["cache"]) == []


def test_check_keys_near_miss_raises() -> None:
    with pytest.raises(RedisSettingsError) as info:
        check_keys({"redis.max_conection": "10"}, [])
    assert info.value.key == "redis.max_conection"
    assert "did you mean" in str(info.value)
    assert "max_connections" in str(info.value)


def test_check_keys_near_miss_for_declared_client_raises() -> None:
    with pytest.raises(RedisSettingsError) as info:
        check_keys({"redis.cache.max_conection": "10"}, ["cache"])
    assert info.value.key == "redis.cache.max_conection"
    assert "did you mean" in str(info.value)
    assert "redis.cache.max_connections" in str(info.value)


def test_check_keys_near_miss_of_client_name_raises() -> None:
    with pytest.raises(RedisSettingsError) as info:
        check_keys({"redis.cahce.url": "redis://h/0"}, ["cache"])
    assert info.value.key == "redis.cahce.url"
    assert "did you mean 'cache'" in str(info.value)


def test_check_keys_unrelated_unknown_key_warns() -> None:
    warnings = check_keys({"redis.something_else_entirely": "x"}, [])
    assert len(warnings) == 1
    assert "redis.something_else_entirely" in warnings[0]


def test_check_keys_unknown_key_of_declared_client_warns() -> None:
    warnings = check_keys({"redis.cache.something_else_entirely": "x"}, ["cache"])
    assert len(warnings) == 1
    assert "redis.cache.something_else_entirely" in warnings[0]


@pytest.mark.parametrize(
    "key",
    ["redis.sessions.secret", "redis.sessions.url", "redis.sessions.max_conection",
     "redis.sessions.redis_client_callable", "redis.http_cache.expire_after",
     "redis.http_cache.url", "redis.http_cache.max_conection"],
)  # fmt: skip
def test_check_keys_skips_foreign_namespaces(key: str) -> None:
    assert check_keys({key: "x"}, []) == []
    assert check_keys({key: "x"}, ["cache"], top_level_only=True) == []


def test_foreign_namespaces_do_not_affect_parsing() -> None:
    settings = {"redis.sessions.url": "redis://sessions/5", "redis.http_cache.max_connections": "1"}
    assert parse_client("default", settings) == parse_client("default", {})
    assert parse_app(settings).clients == ()


def test_check_keys_undeclared_client_warns_about_clients() -> None:
    warnings = check_keys({"redis.queue.url": "redis://h/0"}, ["cache"])
    assert len(warnings) == 1
    assert "redis.queue.url" in warnings[0]
    assert "redis.clients" in warnings[0]


def test_check_keys_top_level_only_defers_undeclared_clients() -> None:
    assert check_keys({"redis.queue.url": "redis://h/0"}, [], top_level_only=True) == []
    with pytest.raises(RedisSettingsError):
        check_keys({"redis.max_conection": "1", "redis.queue.url": "x"}, [], top_level_only=True)


def test_check_keys_app_keys_are_not_client_keys() -> None:
    """clients, server_timing and health_route are app-wide only."""
    warnings = check_keys({"redis.cache.server_timing": "true"}, ["cache"])
    assert len(warnings) == 1
    assert "redis.cache.server_timing" in warnings[0]


@pytest.mark.parametrize("key", ["redis.pasword", "redis.passwrd", "redis.sentinel_pasword"])
def test_check_keys_near_miss_of_a_password_key_never_shows_the_value(key: str) -> None:
    with pytest.raises(RedisSettingsError) as info:
        check_keys({key: SECRET}, [])
    assert info.value.key == key
    assert "did you mean" in str(info.value)
    assert SECRET not in str(info.value)


def test_check_keys_near_miss_of_client_password_never_shows_the_value() -> None:
    with pytest.raises(RedisSettingsError) as info:
        check_keys({"redis.cache.pasword": SECRET}, ["cache"])
    assert SECRET not in str(info.value)


def test_directive_near_miss_of_password_never_shows_the_value() -> None:
    err = error_of({}, "x", pasword=SECRET)
    assert "did you mean 'password'" in str(err)
    assert SECRET not in str(err)


# ------------------------------------------------------------------ 11. bad settings table
U = f"redis://:{SECRET}@h:6379/0"  # a URL with a password, for redaction checks
THIS_FILE = str(Path(__file__).resolve())  # an existing file, for the TLS keys
BAD_SETTINGS: list[tuple[dict[str, Any], str, str]] = [
    ({"redis.max_connections": "many"}, "redis.max_connections", "whole number"),
    ({"redis.max_connections": "0"}, "redis.max_connections", "whole number"),
    ({"redis.max_connections": "-5"}, "redis.max_connections", "whole number"),
    ({"redis.max_connections": "10.5"}, "redis.max_connections", "whole number"),
    ({"redis.socket_timeout": "soon"}, "redis.socket_timeout", "duration"),
    ({"redis.socket_timeout": "-1"}, "redis.socket_timeout", "duration"),
    ({"redis.pool_timeout": "-1"}, "redis.pool_timeout", "duration"),
    ({"redis.pool_timeout": "5 parsecs"}, "redis.pool_timeout", "duration"),
    ({"redis.health_check_interval": "soon"}, "redis.health_check_interval", "duration"),
    ({"redis.retry_backoff_cap": "5 parsecs"}, "redis.retry_backoff_cap", "duration"),
    ({"redis.slow_command": "0"}, "redis.slow_command", "greater than 0"),
    ({"redis.socket_timeout": "0"}, "redis.socket_timeout", "greater than 0"),
    ({"redis.socket_connect_timeout": "0ms"}, "redis.socket_connect_timeout", "greater than 0"),
    ({"redis.startup_check_timeout": "0"}, "redis.startup_check_timeout", "greater than 0"),
    ({"redis.retries": "-1"}, "redis.retries", "whole number"),
    ({"redis.retries": "1000"}, "redis.retries", "whole number"),
    ({"redis.retries": "x"}, "redis.retries", "whole number"),
    ({"redis.pool_warn_ratio": "0"}, "redis.pool_warn_ratio", "fraction"),
    ({"redis.pool_warn_ratio": "1.5"}, "redis.pool_warn_ratio", "fraction"),
    ({"redis.pool_warn_ratio": "most"}, "redis.pool_warn_ratio", "fraction"),
    ({"redis.stats_level": "loud"}, "redis.stats_level", "logging level"),
    ({"redis.protocol": "4"}, "redis.protocol", "2 or 3"),
    ({"redis.startup_check": "maybe"}, "redis.startup_check", "warn"),
    ({"redis.blocking": "ture"}, "redis.blocking", "true/false"),
    ({"redis.socket_keepalive": "yup"}, "redis.socket_keepalive", "true/false"),
    ({"redis.retry_on_timeout": "nope"}, "redis.retry_on_timeout", "true/false"),
    ({"redis.decode_responses": "utf8"}, "redis.decode_responses", "true/false"),
    ({"redis.stats": "verbose"}, "redis.stats", "true/false"),
    ({"redis.cluster": "yes please"}, "redis.cluster", "true/false"),
    ({"redis.ssl_check_hostname": "strict"}, "redis.ssl_check_hostname", "true/false"),
    ({"redis.server_timing": "ture"}, "redis.server_timing", "true/false"),
    ({"redis.url": "http://localhost:6379/0"}, "redis.url", "redis://"),
    ({"redis.url": "redis://h:99999"}, "redis.url", "port"),
    ({"redis.url": "redis://h:abc"}, "redis.url", "port"),
    ({"redis.url": "redis://h/x"}, "redis.url", "database number"),
    ({"redis.url": "redis://h/0?colour=blue"}, "redis.url", "unknown URL query argument 'colour'"),
    ({"redis.url": "redis://h/0?db=x"}, "redis.url (query argument 'db')", "whole number"),
    ({"redis.ssl_ca_certs": "/nonexistent/ca.pem"}, "redis.ssl_ca_certs", "existing file"),
    ({"redis.ssl_certfile": "/nonexistent/c.pem"}, "redis.ssl_certfile", "existing file"),
    ({"redis.ssl_cert_reqs": "sometimes"}, "redis.ssl_cert_reqs", "none, optional or required"),
    ({"redis.sentinels": "nohostport", "redis.sentinel_service": "m"}, "redis.sentinels", "host:port"),
    ({"redis.sentinels": "h:0", "redis.sentinel_service": "m"}, "redis.sentinels", "host:port"),
    ({"redis.cluster": "true", "redis.sentinels": "s:26379", "redis.sentinel_service": "m"},
     "redis.cluster", "redis.sentinels"),
    ({"redis.sentinels": "s:26379"}, "redis.sentinel_service", "required"),
    ({"redis.url": "unix:///tmp/redis.sock", "redis.cluster": "true"}, "redis.url", "unix://"),
    ({"redis.client_name": "my app"}, "redis.client_name", "without spaces"),
    ({"redis.health_route": "health"}, "redis.health_route", "starting with /"),
    ({"redis.clients": "cache", "redis.cache.retries": "lots"}, "redis.cache.retries", "whole number"),
    ({"redis.clients": "cache", "redis.cache.url": "http://c/0"}, "redis.cache.url", "redis://"),
    ({"redis.clients": "cache", "redis.cache.sentinels": "s:1"}, "redis.cache.sentinel_service",
     "required"),
    # URLs with a password: the password never shows
    ({"redis.url": U + "?socket_timeout=soon"}, "redis.url (query argument 'socket_timeout')",
     "duration"),
    ({"redis.url": f"redis://:{SECRET}@h:99999/0"}, "redis.url", "port"),
    ({"redis.url": f"unix://:{SECRET}@/tmp/redis.sock", "redis.cluster": "1"}, "redis.url",
     "unix://"),
    ({"redis.url": U, "redis.max_connections": "0"}, "redis.max_connections", "whole number"),
    ({"redis.url": U + "?max_connections=0"}, "redis.url (query argument 'max_connections')",
     "whole number"),
    ({"redis.password": SECRET, "redis.retries": "x"}, "redis.retries", "whole number"),
    ({"redis.url": f"redis://h/0?pasword={SECRET}"}, "redis.url", "pasword"),
    # combinations, TLS keys, old keys, client names: each refusal's own words
    ({"redis.url": "redis://h/3", "redis.cluster": "true"}, "redis.url", "only database 0"),
    ({"redis.clients": "cache", "redis.cache.url": "redis://h/3", "redis.cache.cluster": "true"},
     "redis.cache.url", "only database 0"),
    ({"redis.url": "unix:///tmp/r.sock", "redis.sentinels": "h:1", "redis.sentinel_service": "m"},
     "redis.url", "unix://"),
    ({"redis.ssl_ca_certs": THIS_FILE}, "redis.ssl_ca_certs", "rediss://"),
    ({"redis.clients": "cache", "redis.cache.ssl_certfile": THIS_FILE}, "redis.cache.ssl_certfile",
     "rediss://"),
    ({"redis.url": "rediss://h/0", "redis.ssl_keyfile": THIS_FILE}, "redis.ssl_keyfile",
     "certificate"),
    ({"redis.clients": "cache", "redis.url": "rediss://h/0", "redis.cache.ssl_keyfile": THIS_FILE},
     "redis.cache.ssl_keyfile", "redis.cache.ssl_certfile"),
    ({"redis.load_balancing_strategy": "nearest"}, "redis.load_balancing_strategy", "one of"),
    ({"redis.sentinel_role": "slave", "redis.sentinels": "h:1", "redis.sentinel_service": "m"},
     "redis.sentinel_role", "master or replica"),
    ({"redis.socket_timeout": "2d"}, "redis.socket_timeout", "at most"),
    ({"redis.socket_timeout": "nan"}, "redis.socket_timeout", "duration"),
    ({"redis.db": "x"}, "redis.db", "<database number>"),
    ({"redis.url": f"redis://u:{SECRET}@h/0", "redis.host": "cache.internal", "redis.db": "4"},
     "redis.db", "redis://u:***@cache.internal:6379/4"),
    ({"redis.clients": "default"}, "redis.clients", "always declared"),
    ({"redis.clients": "9x"}, "redis.clients", "letters, digits"),
    ({"redis.clients": "url"}, "redis.clients", "name of a setting"),
    ({"redis.clients": "cache cache"}, "redis.clients", "named twice"),
    ({"redis.clients": "sessions"}, "redis.clients", "reserved"),
]  # fmt: skip
MESSAGES = Path(__file__).with_name("settings_messages.txt")


@pytest.mark.parametrize(
    ("settings", "key", "fragment"),
    BAD_SETTINGS,
    ids=[f"{i}-{row[1]}" for i, row in enumerate(BAD_SETTINGS)],
)
def test_bad_settings(settings: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(RedisSettingsError) as info:
        parse_all(settings)
    err = info.value
    message = str(err)
    assert err.key == key
    assert fragment in message
    if err.value is None:  # a required key that is missing
        assert message == f"{err.key} is not set: {err.accepted}"
    else:
        assert message == f"{err.key} = {err.value!r} is not valid: {err.accepted}"
    assert SECRET not in message
    assert SECRET not in repr(err.value)
    assert SECRET not in repr(err.args)


def test_bad_settings_table_is_big_enough() -> None:
    assert len(BAD_SETTINGS) >= 30


def test_each_refusal_says_exactly_what_was_reviewed() -> None:
    """Every message of the table, word for word, against tests/settings_messages.txt:
    a change of wording shows in review as a change of that file (regenerate it with
    ``REGENERATE=1 pytest -k reviewed`` and read the diff)."""
    said = []
    for settings, _key, _fragment in BAD_SETTINGS:
        with pytest.raises(RedisSettingsError) as info:
            parse_all(settings)
        said.append(str(info.value).replace(THIS_FILE, "<this file>"))
    text = "\n".join(said) + "\n"
    if os.environ.get("REGENERATE"):
        MESSAGES.write_text(text)
    assert text.splitlines() == MESSAGES.read_text().splitlines()


def test_error_is_a_configuration_error() -> None:
    from pyramid.exceptions import ConfigurationError

    err = error_of({"redis.retries": "x"})
    assert isinstance(err, ConfigurationError)
    assert (err.key, err.value) == ("redis.retries", "x")
    assert "whole number from 0 to 20" in err.accepted


# ------------------------------------------------------------------ client cache
def test_client_cache_is_off_by_default_with_documented_bounds() -> None:
    options = parse_client("default", {})
    assert options.client_cache is False
    assert (options.client_cache_max_keys, options.client_cache_max_bytes) == (10_000, 64 << 20)
    assert options.client_cache_ttl is None
    assert options.client_cache_commands[:3] == ("GET", "MGET", "EXISTS")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1048576", 1 << 20), ("512 KB", 512 << 10), ("64MB", 64 << 20), ("1 GiB", 1 << 30),
     ("2048 bytes", 2048), (4096, 4096), ("1.5 MB", 3 << 19)],
)  # fmt: skip
def test_client_cache_max_bytes_accepts_sizes(text: object, expected: int) -> None:
    settings = {"redis.client_cache_max_bytes": text}
    assert parse_client("default", settings).client_cache_max_bytes == expected


@pytest.mark.parametrize("text", ["12 parsecs", "-1", "10", "MB", "100 GB", True, 2.5])
def test_client_cache_max_bytes_refuses_the_rest(text: object) -> None:
    with pytest.raises(RedisSettingsError) as caught:
        parse_client("default", {"redis.client_cache_max_bytes": text})
    message = str(caught.value)
    assert message.startswith("redis.client_cache_max_bytes = ")
    assert "a size from 1024 bytes to 64 GB" in message


def test_client_cache_commands_are_read_commands_the_cache_knows() -> None:
    parsed = parse_client("cache", {"redis.clients": "cache",
                                    "redis.cache.client_cache_commands": "get, hgetall HGETALL"})  # fmt: skip
    assert parsed.client_cache_commands == ("GET", "HGETALL")
    with pytest.raises(RedisSettingsError) as caught:
        parse_client("cache", {"redis.cache.client_cache_commands": "GET SET"})
    message = str(caught.value)
    assert message.startswith("redis.cache.client_cache_commands = 'GET SET' is not valid")
    assert "expected read command names from: BITCOUNT EXISTS GET" in message
    assert message.endswith("'SET' is not one")
    with pytest.raises(RedisSettingsError, match="client_cache_commands"):
        parse_client("default", {"redis.client_cache_commands": " "})


def test_client_cache_refused_with_cluster_and_a_replica_role() -> None:
    with pytest.raises(RedisSettingsError) as caught:
        parse_client("cache", {"redis.cache.client_cache": "on", "redis.cache.cluster": "true"})
    message = str(caught.value)
    assert message.startswith("redis.cache.client_cache = 'true' is not valid")
    assert "cannot be combined with redis.cache.cluster" in message
    replica = {"redis.client_cache": "yes", "redis.sentinels": "s:26379",
               "redis.sentinel_service": "m", "redis.sentinel_role": "replica"}  # fmt: skip
    with pytest.raises(RedisSettingsError, match=r"redis\.sentinel_role = replica"):
        parse_client("default", replica)
    master = parse_client("default", {**replica, "redis.sentinel_role": "master"})
    assert master.client_cache and master.kind == "sentinel"
