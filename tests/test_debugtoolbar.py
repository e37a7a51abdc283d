"""The pyramid_debugtoolbar Redis panel, with the real toolbar, through webtest."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import webtest

from pyramid_redisx import RedisUnavailable
from pyramid_redisx.debugtoolbar import ARG_SHOWN, shown_arguments
from pyramid_redisx.redact import MASK
from pyramid_redisx.request import client_set
from tests.conftest import build_app

PASSWORD = "Tb-s3cret-pw-7781"
LONG = "long-value:" + "0123456789" * 30  # well over ARG_SHOWN characters
PAGE = "<html><body>{}</body></html>"


@pytest.fixture
def toolbar_app() -> Iterator[Callable[..., webtest.TestApp]]:
    """``toolbar_app(url, views, **settings)``: an app with the toolbar and the Redis panel."""
    apps: list[webtest.TestApp] = []

    def make(
        url: str,
        views: dict[str, Any],
        setup: Callable[[Any], None] | None = None,
        **settings: Any,
    ) -> webtest.TestApp:
        settings = {
            "redis.url": url,
            "pyramid.includes": "pyramid_debugtoolbar",
            "debugtoolbar.includes": "pyramid_redisx.debugtoolbar",
            "debugtoolbar.intercept_redirects": "false",
            **settings,
        }
        app = build_app(settings, views, setup)
        app.extra_environ["REMOTE_ADDR"] = "127.0.0.1"  # webtest sets none; the toolbar needs one
        apps.append(app)
        return app

    yield make
    for app in apps:
        client_set(app.app.registry).close()


def toolbar_page(app: webtest.TestApp, path: str) -> str:
    """GET ``path``, then the toolbar page of that request (from the injected button)."""
    response = app.get(path)
    found = re.search(r'href="http://localhost(/_debug_toolbar/[0-9a-f]+)"', response.text)
    assert found, response.text
    return str(app.get(found.group(1)).text)


def redis_panel(page: str) -> str:
    """The Redis panel's content in the toolbar page."""
    assert 'id="pDebugPanel-redis"' in page  # the tab
    content = page.split('id="pDebugPanel-redis-content"', 1)[1]
    found = re.search(r'<div class="redisx-panel">(.*?)</div>', content, re.S)
    assert found, content
    return found.group(1)


ROW = re.compile(
    r"<td>(\d+)</td><td>([^<]*)</td><td><code>([^<]*)</code></td><td>([^<]*)</td>"
    r"<td>(.*?)</td><td>([\d.]+)</td><td>(yes|no)</td></tr>",
    re.S,
)


def rows(panel: str) -> list[dict[str, Any]]:
    """One dict per entry of the command table."""
    found = []
    for chunk in panel.split('<tr class="redisx-command">')[1:]:
        match = ROW.match(chunk)
        assert match, chunk
        number, client, name, key, args, ms, pipelined = match.groups()
        inner = re.findall(r"<li><code>([^<]*)</code> ([^<]*) <code>([^<]*)</code></li>", args)
        found.append(
            {"number": int(number), "client": client, "name": name, "key": key,
             "args": re.sub(r"<ol.*</ol>", "", args, flags=re.S), "ms": float(ms),
             "pipelined": pipelined == "yes", "inner": inner}
        )  # fmt: skip
    return found


def test_panel_lists_the_commands_redacted_with_pools(
    toolbar_app: Any, redis_server_factory: Any
) -> None:
    server = redis_server_factory(PASSWORD)

    def view(request: Any) -> str:
        r = request.redis
        r.get("greeting")
        r.set("blob", LONG)
        pipe = r.pipeline(transaction=False)
        pipe.incr("hits").lpush("seen", "a").expire("hits", 60)
        pipe.execute()
        with r.pipeline() as tx:
            tx.hset("user:1", "password", PASSWORD).hget("user:1", "name").execute()
        r.execute_command("AUTH", PASSWORD)
        r.config_set("requirepass", PASSWORD)  # same password: a CONFIG SET of a secret
        return PAGE.format("used redis")

    def plain(request: Any) -> str:
        return PAGE.format("no redis")

    app = toolbar_app(server.url, {"/": view, "/plain": plain}, **{"redis.max_connections": "7"})
    page = toolbar_page(app, "/")
    panel = redis_panel(page)

    entries = rows(panel)
    assert [e["name"] for e in entries] == ["GET", "SET", "PIPELINE", "MULTI", "AUTH", "CONFIG_SET"]
    assert [e["number"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert {e["client"] for e in entries} == {"default"}
    get, set_, pipeline, transaction, auth, config_set = entries
    assert (get["key"], get["pipelined"], get["inner"]) == ("greeting", False, [])
    # the written value: cut to ARG_SHOWN characters, never whole
    assert set_["key"] == "blob"
    assert set_["args"] == LONG[:ARG_SHOWN] + "…"
    # a pipeline and a transaction: one entry each, their commands inside, in order
    assert pipeline["pipelined"] and transaction["pipelined"]
    assert pipeline["inner"] == [
        ("INCRBY", "hits", "1"),
        ("LPUSH", "seen", "a"),
        ("EXPIRE", "hits", "60"),
    ]
    assert transaction["inner"] == [
        ("HSET", "user:1", f"password {MASK}"),
        ("HGET", "user:1", "name"),
    ]
    # credentials
    assert (auth["key"], auth["args"]) == ("-", MASK)
    assert (config_set["key"], config_set["args"]) == ("requirepass", MASK)
    assert all(e["ms"] >= 0 for e in entries)

    # totals (a pipeline counts its commands), slowest, the tab's subtitle
    assert re.search(r"9 commands in 6 round trips, [\d.]+ ms; slowest: [A-Z_]+ [\d.]+ ms", panel)
    assert re.search(r">9 · [\d.]+ms</span>", page)

    # pool figures: the request still holds its connection (request_connection) while
    # the toolbar renders, before NewResponse gives it back
    pool = re.search(
        r"<tr><td>default</td><td>(\d+)</td><td>[\d.]+</td><td>(\d+)</td><td>(\d+)</td>"
        r"<td>(\d+)</td><td>([\d.]+)</td>"
        r'<td class="redisx-circuit">([a-z-]+)</td><td>(\d+)</td></tr>',
        panel,
    )
    assert pool, panel
    assert pool.groups() == ("9", "1", "0", "7", "0.00", "closed", "0")

    # never the password, never the whole value: not in the panel, nor elsewhere on the
    # toolbar page (its Settings panel shows redis.url, redacted)
    assert PASSWORD not in page
    assert LONG not in page
    assert "redis.url" in page and f":{MASK}@127.0.0.1:{server.port}" in page

    # a request that did not use Redis: the panel is there, and says so
    quiet = toolbar_page(app, "/plain")
    assert "No Redis commands in this request." in redis_panel(quiet)
    assert "redisx-command" not in quiet
    assert PASSWORD not in quiet


def test_panel_follows_named_clients(toolbar_app: Any, redis_url: str) -> None:
    def view(request: Any) -> str:
        from pyramid_redisx import get_redis

        get_redis(request, "cache").set("k", "v")
        request.redis.incr("n")
        return PAGE.format("ok")

    app = toolbar_app(
        redis_url,
        {"/": view},
        **{"redis.clients": "cache", "redis.cache.url": redis_url.replace("/0", "/1")},
    )
    panel = redis_panel(toolbar_page(app, "/"))
    assert [(e["client"], e["name"], e["key"]) for e in rows(panel)] == [
        ("cache", "SET", "k"),
        ("default", "INCRBY", "n"),
    ]
    assert "<tr><td>cache</td><td>1</td>" in panel
    assert "<tr><td>default</td><td>1</td>" in panel


@pytest.mark.parametrize(
    ("name", "args", "shown"),
    [
        ("AUTH", ("user", PASSWORD), [MASK, MASK]),
        ("HELLO", ("3", "AUTH", "user", PASSWORD), [MASK] * 4),
        ("MIGRATE", ("h", "6379", "", "0", "5", "AUTH", PASSWORD), [MASK] * 7),
        ("CONFIG_SET", ("masterauth", PASSWORD, "maxmemory", "1mb"),
         ["masterauth", MASK, "maxmemory", "1mb"]),
        ("ACL_SETUSER", ("alice", "on", f">{PASSWORD}", "~*"), ["alice", "on", MASK, "~*"]),
        ("SET", (b"k", b"\xff" + b"v" * 500), ["k", "\ufffd" + "v" * (ARG_SHOWN - 1) + "…"]),
        ("RPUSH", ("l", *range(12)), ["l", *map(str, range(9)), "… 3 more"]),
    ],
)  # fmt: skip
def test_shown_arguments(name: str, args: tuple[Any, ...], shown: list[str]) -> None:
    assert shown_arguments(name, args) == shown


HASH = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"


@pytest.mark.parametrize(
    "rule", [f">{PASSWORD}", f"<{PASSWORD}", f"#{HASH}", f"!{HASH}"]
)  # add/remove a password, add/remove a password hash
def test_every_acl_password_rule_is_masked(rule: str) -> None:
    shown = shown_arguments("ACL_SETUSER", ("alice", "on", rule, "~*", "+@all"))
    assert shown == ["alice", "on", MASK, "~*", "+@all"]


def test_a_password_holding_at_signs_is_hidden_whole(
    toolbar_app: Any, redis_server_factory: Any
) -> None:
    """``Sekrit@Pw`` unencoded in ``redis.url``: the userinfo runs to the last ``@``, so
    the toolbar's settings show ``redis://:***@127.0.0.1:…``, never ``:***@Pw@…``; and a
    startup error for that URL names it the same way."""
    password = "Sekrit@Pw"
    server = redis_server_factory(password)
    url = f"redis://:{password}@127.0.0.1:{server.port}/0"
    app = toolbar_app(url, {"/": lambda request: PAGE.format(request.redis.incr("n"))})
    page = toolbar_page(app, "/")
    assert f"redis://:{MASK}@127.0.0.1:{server.port}/0" in page
    assert "Sekrit" not in page and "Pw@" not in page
    server.stop()
    with pytest.raises(RedisUnavailable) as caught:
        build_app({"redis.url": url})
    message = str(caught.value)
    assert message.startswith(
        f"Redis client 'default' at redis://:{MASK}@127.0.0.1:{server.port}/0 is unavailable: "
    ), message
    assert "Sekrit" not in message and "Pw@" not in message


def another_request_property(config: Any) -> None:
    """``request.redis`` then stays a property, bound as the view reads it."""
    config.add_request_method(lambda request: "other", "other", reify=True)


@pytest.mark.parametrize("setup", [None, another_request_property], ids=["method", "property"])
def test_panel_shows_reads_answered_by_the_client_cache(
    toolbar_app: Any, redis_url: str, setup: Any
) -> None:
    def view(request: Any) -> str:
        for _ in range(3):
            request.redis.get("cached")
        request.redis.set("other", "v")
        return PAGE.format("ok")

    app = toolbar_app(redis_url, {"/": view}, setup, **{"redis.client_cache": "true"})
    cache = client_set(app.app.registry).caches["default"]
    app.get("/")  # starts the cache's listener
    deadline = time.monotonic() + 5
    while cache.listener_id is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    app.get("/")  # keeps GET cached
    panel = redis_panel(toolbar_page(app, "/"))
    assert "1 command in 1 round trip" in panel  # the SET; "other" is not "cached"
    assert "; 3 reads from the client cache" in panel
    cached = re.findall(r"<td><code>GET</code></td><td>cached</td><td></td><td>cache</td>", panel)
    assert len(cached) == 3
    table = panel.split('class="table table-condensed redisx-client-cache"', 1)[1]
    cells = re.findall(r"<td>([^<]*)</td>", table.split("<tbody>", 1)[1])
    assert cells[:3] == ["default", "3", "0"]  # this request: 3 hits, no miss
    assert cells[-1] == "yes"  # listening
