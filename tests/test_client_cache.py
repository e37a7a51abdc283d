"""redis.client_cache: reads answered from process memory, kept fresh by the server's
invalidations (CLIENT TRACKING). Every test runs against Redis 7.0 and Valkey 8.1 (the
servers found here: ``server_binaries``), each started for this module; the server is the
truth: values on it, its ``INFO commandstats``, ``CLIENT LIST`` and ``CLIENT KILL``."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import webtest

from pyramid_redisx import get_redis
from pyramid_redisx.client import AccountedRedis, CachedRedis
from pyramid_redisx.client_cache import TICK, ClientCache
from pyramid_redisx.request import client_set
from pyramid_redisx.servers import RedisServer, server_binaries
from tests.conftest import build_app

BINARIES = server_binaries()
NAME = "cache-test"  # client_name of the app's connections: found in CLIENT LIST
# Longest a read may lag an acknowledged write of another client here (a loaded shared
# machine; the measured figures are in bench/README.md and docs/client_cache.rst).
BOUND = 1.0


@pytest.fixture(scope="module", params=sorted(BINARIES))
def server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A server of each kind (Redis 7.0, Valkey 8.1) for this module."""
    started = RedisServer(binary=BINARIES[request.param]).start()
    try:
        yield started
    finally:
        started.cleanup()


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    if server.process is None or server.process.poll() is not None:
        server.start()
    with server.client() as client:
        client.flushall()
        yield client


@pytest.fixture
def cached_app(server: RedisServer, admin: redis.Redis) -> Iterator[Callable[..., Any]]:
    """``cached_app(views, **settings)``: an app with ``client_cache`` on (unless given),
    its connections named ``NAME``; its client set closed (listener stopped) after."""
    apps: list[webtest.TestApp] = []

    def make(
        views: dict[str, Any] | None = None,
        setup: Callable[[Any], None] | None = None,
        **settings: Any,
    ) -> webtest.TestApp:
        values = {"url": server.url, "client_cache": "true", "client_name": NAME, **settings}
        app = build_app({f"redis.{k}": v for k, v in values.items()}, views or VIEWS, setup)
        apps.append(app)
        return app

    yield make
    for app in apps:
        client_set(app.app.registry).close()


def value_of(result: Any) -> str:
    if isinstance(result, bytes):
        return result.decode()
    return "None" if result is None else str(result)


VIEWS: dict[str, Any] = {
    "/get/{key}": lambda r: value_of(r.redis.get(r.matchdict["key"])),
    "/set/{key}/{value}": lambda r: str(r.redis.set(r.matchdict["key"], r.matchdict["value"])),
    "/hgetall/{key}": lambda r: repr(sorted(r.redis.hgetall(r.matchdict["key"]).items())),
}


def cache_of(app: webtest.TestApp) -> ClientCache:
    return client_set(app.app.registry).caches["default"]


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def listening(app: webtest.TestApp, path: str = "/get/warm") -> ClientCache:
    """Read once (which starts the listener) and wait until the cache listens."""
    app.get(path)
    cache = cache_of(app)
    wait_for(lambda: cache.listener_id is not None, what="the listener")
    return cache


def gets_served(admin: redis.Redis, command: str = "get") -> int:
    """How many times the server ran ``command`` (INFO commandstats)."""
    stats = admin.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def ours(admin: redis.Redis, command: str | None = None) -> list[dict[str, Any]]:
    """The app's connections (CLIENT LIST), optionally those whose last command was
    ``command`` (``subscribe``: the listener)."""
    found = [c for c in admin.client_list() if c.get("name") == NAME]
    return [c for c in found if command is None or c["cmd"] == command]


# ------------------------------------------------------------------ off by default
def test_off_by_default_nothing_changes(
    server: RedisServer, admin: redis.Redis, all_logs: pytest.LogCaptureFixture
) -> None:
    app = build_app(
        {"redis.url": server.url, "redis.client_name": NAME},
        {"/get/{key}": VIEWS["/get/{key}"]},
    )
    try:
        admin.set("k", "1")
        before = gets_served(admin)
        assert [app.get("/get/k").text for _ in range(3)] == ["1"] * 3
        assert gets_served(admin) - before == 3  # every read reached the server
        assert type(get_redis(app.app.registry)) is AccountedRedis
        assert client_set(app.app.registry).caches == {}
        assert ours(admin, "subscribe") == []  # no invalidation connection
        lines = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.stats"]
        assert lines and all("cache_" not in line for line in lines)  # the DESIGN line
    finally:
        client_set(app.app.registry).close()


# ------------------------------------------------------------------ hits and misses
def another_request_property(config: Any) -> None:
    """Another add-on's request property: ``request.redis`` then stays a property
    (``request.RedisAttribute``), whose copy is bound as the view reads it."""
    config.add_request_method(lambda request: "other", "other", reify=True)


@pytest.mark.parametrize("setup", [None, another_request_property], ids=["method", "property"])
def test_a_repeated_read_is_answered_from_memory(
    cached_app: Any, admin: redis.Redis, all_logs: pytest.LogCaptureFixture, setup: Any
) -> None:
    """No round trip for a hit: a request served from the cache alone ran no command and
    writes no stats line (DESIGN: a line per client the request ran a command on); a
    request that also runs one has its hits and misses on its line. Whether
    ``request.redis`` is a request method (the app's only request properties are ours)
    or a property."""

    def mixed(request: Any) -> str:
        first, second = request.redis.get("k"), request.redis.get("k")
        request.redis.incr("n")
        return f"{first!r} {second!r}"

    def fresh(request: Any) -> str:
        first, second = request.redis.get("m"), request.redis.get("m")
        request.redis.incr("n")
        return f"{first!r} {second!r}"

    app = cached_app({**VIEWS, "/mixed": mixed, "/fresh": fresh}, setup)
    assert type(get_redis(app.app.registry)) is CachedRedis
    listening(app)
    admin.set("k", "1")
    assert app.get("/get/k").text == "1"  # a miss: read and kept
    before = gets_served(admin)
    all_logs.clear()
    assert [app.get("/get/k").text for _ in range(5)] == ["1"] * 5
    assert gets_served(admin) == before  # none reached the server
    assert [r for r in all_logs.records if r.name == "pyramid_redisx.stats"] == []
    assert cache_of(app).figures()["hits"] == 5
    assert app.get("/mixed").text == "b'1' b'1'"
    (line,) = [r for r in all_logs.records if r.name == "pyramid_redisx.stats"]
    assert line.getMessage().startswith("redis client=default commands=1 time_ms=")
    assert line.getMessage().endswith("cache_hits=2 cache_misses=0 cache_invalidations=0")
    assert (line.redis_cache_hits, line.redis_cache_misses) == (2, 0)
    assert line.redis_cache_invalidations == 0
    assert gets_served(admin) == before
    all_logs.clear()
    admin.set("m", "2")
    assert app.get("/fresh").text == "b'2' b'2'"  # a miss, then a hit
    (line,) = [r for r in all_logs.records if r.name == "pyramid_redisx.stats"]
    assert line.getMessage().endswith("cache_hits=1 cache_misses=1 cache_invalidations=0")
    fields = (line.redis_cache_hits, line.redis_cache_misses, line.redis_cache_invalidations)
    assert fields == (1, 1, 0)
    (listener,) = ours(admin, "subscribe")  # one invalidation connection, subscribed
    assert "P" in listener["flags"]


def seen_within(app: webtest.TestApp, path: str, expected: str) -> float:
    """Seconds until a read of ``path`` answers ``expected`` (at most ``BOUND``)."""
    started = time.monotonic()
    while app.get(path).text != expected:
        if time.monotonic() - started > BOUND:
            raise AssertionError(f"{path} still not {expected!r} after {BOUND} s")
    return time.monotonic() - started


def test_a_write_from_another_client_is_seen_at_once(cached_app: Any, admin: redis.Redis) -> None:
    """The read after another client's acknowledged SET sees it, whatever the listener
    thread is doing (a hit first checks the listener's socket for unread news): at once,
    or as soon as the server has written its message (it writes the writer's reply first;
    a busy server may run something else in between: docs/client_cache.rst)."""
    app = cached_app()
    listening(app)
    delays = []
    for round_ in range(30):
        admin.set("k", str(round_))
        delays.append(seen_within(app, "/get/k", str(round_)))
        assert app.get("/get/k").text == str(round_)
    assert cache_of(app).figures()["hits"] > 0  # (a read racing the message is not kept)
    assert sorted(delays)[len(delays) // 2] < 0.05  # most at the first read


def test_a_write_of_this_process_is_seen_without_the_servers_message(
    cached_app: Any, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read your own writes: with the server's invalidations ignored, a write through
    the app still drops what it names; a write elsewhere then stays unseen (which shows
    the server's path was really off)."""
    app = cached_app()
    cache = listening(app)
    admin.set("k", "1")
    assert app.get("/get/k").text == "1"
    assert app.get("/get/k").text == "1"  # kept
    heard = threading.Event()
    monkeypatch.setattr(cache, "invalidate", lambda keys: heard.set())
    monkeypatch.setattr(cache, "unheard", lambda: False)
    assert app.get("/set/k/2").text == "True"
    assert app.get("/get/k").text == "2"
    assert app.get("/get/k").text == "2"
    heard.clear()
    admin.set("k", "3")
    assert heard.wait(5)  # the listener read the message (and ignored it)
    deadline = time.monotonic() + 5
    while (cache.draining or cache.socket_unread()) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert app.get("/get/k").text == "2"  # stale: the server's message was ignored


def test_writes_in_pipelines_and_transactions_drop_what_they_name(
    cached_app: Any, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(request: Any) -> str:
        how = request.matchdict["how"]
        if how == "pipeline":
            pipe = request.redis.pipeline(transaction=False)
            pipe.set("a", "p").hset("h", "f", "p")
            pipe.execute()
        elif how == "multi":
            pipe = request.redis.pipeline()
            pipe.set("a", "m").hset("h", "f", "m")
            pipe.execute()
        else:  # a WATCH pipeline's immediate writes, then its transaction
            with request.redis.pipeline() as pipe:
                pipe.watch("other")
                pipe.set("a", "w")  # immediate (watching)
                pipe.multi()
                pipe.hset("h", "f", "w")
                pipe.execute()
        return "ok"

    app = cached_app({**VIEWS, "/write/{how}": write})
    cache = listening(app)
    monkeypatch.setattr(cache, "invalidate", lambda keys: None)
    monkeypatch.setattr(cache, "unheard", lambda: False)
    for how, value in (("pipeline", "p"), ("multi", "m"), ("watch", "w")):
        admin.set("a", "0")
        admin.hset("h", "f", "0")
        cache.flush()
        assert app.get("/get/a").text == "0"
        assert app.get("/hgetall/h").text == "[(b'f', b'0')]"
        assert app.get(f"/write/{how}").text == "ok"
        assert app.get("/get/a").text == value, how
        assert app.get("/hgetall/h").text == f"[(b'f', b'{value}')]", how


def test_a_watching_pipelines_reads_keep_what_is_cached(
    cached_app: Any, admin: redis.Redis
) -> None:
    """A WATCH pipeline's WATCH and reads (sent at once) drop nothing: the next read of
    the key is still a hit."""

    def watch_read(request: Any) -> str:
        with request.redis.pipeline() as pipe:
            pipe.watch("a")
            value = pipe.get("a")
        return str(value)

    app = cached_app({**VIEWS, "/watch-read": watch_read})
    cache = listening(app)
    admin.set("a", "0")
    assert app.get("/get/a").text == "0"  # a miss: kept
    assert app.get("/watch-read").text == "b'0'"
    hits = cache.hits
    assert app.get("/get/a").text == "0"
    assert cache.hits == hits + 1


def test_the_process_wide_clients_watching_writes_drop_what_they_name(
    cached_app: Any, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WATCH pipeline of ``get_redis(registry)`` (a script, a worker) writes at once
    while watching: the key it names is dropped here at once (read your writes), without
    waiting for the server's invalidation (ignored here)."""
    app = cached_app()
    cache = listening(app)
    monkeypatch.setattr(cache, "invalidate", lambda keys: None)
    monkeypatch.setattr(cache, "unheard", lambda: False)
    admin.set("a", "0")
    assert app.get("/get/a").text == "0"  # a miss: kept
    assert app.get("/get/a").text == "0"  # a hit
    with get_redis(app.app.registry).pipeline() as pipe:
        pipe.watch("other")
        pipe.set("a", "w")  # immediate (watching)
    assert app.get("/get/a").text == "w"


def test_a_client_of_its_own_is_served_and_its_writes_drop_what_they_name(
    cached_app: Any, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``client()`` (a connection of its own) answers from the cache too, and its writes
    drop what they name at once, as the request's own do."""

    def own_connection(request: Any) -> str:
        single = request.redis.client()
        try:
            before = single.get("k")
            single.set("k", "from client()")
            return f"{before!r} {request.redis.get('k')!r} {single.get('k')!r}"
        finally:
            single.close()

    app = cached_app({**VIEWS, "/single": own_connection})
    cache = listening(app)
    monkeypatch.setattr(cache, "invalidate", lambda keys: None)  # only local drops count
    monkeypatch.setattr(cache, "unheard", lambda: False)
    admin.set("k", "1")
    assert app.get("/get/k").text == "1"
    before = gets_served(admin)
    assert app.get("/single").text == "b'1' b'from client()' b'from client()'"
    assert gets_served(admin) - before <= 2  # "1" came from memory


def test_a_read_whose_invalidation_arrives_before_its_reply_is_not_kept(
    cached_app: Any, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the reply (the old value) and keeping it, another client writes the key
    and the listener applies the server's message: the old value must not be kept."""
    app = cached_app()
    cache = listening(app)
    admin.set("k", "old")
    store = cache.store
    outcomes: list[bool] = []

    def late_store(*args: Any, **kwargs: Any) -> bool:
        seen = cache.invalidations
        admin.set("k", "new")
        wait_for(lambda: cache.invalidations > seen or not cache.pending, what="the message")
        outcomes.append(store(*args, **kwargs))
        return outcomes[-1]

    monkeypatch.setattr(cache, "store", late_store)
    assert app.get("/get/k").text == "old"  # the reply, read before the write
    monkeypatch.setattr(cache, "store", store)
    assert outcomes == [False]
    assert app.get("/get/k").text == "new"


def test_mutable_replies_are_the_callers_own(cached_app: Any, admin: redis.Redis) -> None:
    def mutate(request: Any) -> str:
        first = request.redis.hgetall("h")
        first[b"x"] = b"added by the view"
        second = request.redis.hgetall("h")
        return repr(sorted(second.items()))

    app = cached_app({**VIEWS, "/mutate": mutate})
    listening(app)
    admin.hset("h", "f", "v")
    for _ in range(3):
        assert app.get("/mutate").text == "[(b'f', b'v')]"
    assert cache_of(app).figures()["hits"] >= 3


def test_arguments_that_compare_equal_but_are_sent_differently(
    cached_app: Any, admin: redis.Redis
) -> None:
    """1, 1.0 and True are equal in Python; redis-py sends "1", "1.0" (and refuses
    True): a reply kept for one is never answered for another."""

    def fields(request: Any) -> str:
        replies = [request.redis.hget("h", 1), request.redis.hget("h", 1.0)]
        replies += [request.redis.hget("h", 1), request.redis.hget("h", 1.0)]
        try:
            request.redis.hget("h", True)
        except redis.DataError:
            replies.append(b"DataError")
        return repr(replies)

    app = cached_app({**VIEWS, "/fields": fields})
    listening(app)
    admin.hset("h", mapping={"1": "int", "1.0": "float"})
    expected = repr([b"int", b"float", b"int", b"float", b"DataError"])
    assert app.get("/fields").text == expected
    assert app.get("/fields").text == expected


def test_a_request_with_its_own_reply_parsing_is_neither_served_nor_kept(
    cached_app: Any, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """set_response_callback on a request's client: its GETs go to the server, parsed
    its way, and are not kept; its writes still drop what they name (read your writes)."""

    def own(request: Any) -> str:
        client = request.redis
        client.set_response_callback("GET", lambda reply, **kw: b"own:" + (reply or b"-"))
        first = client.get("k")
        client.set("k", "written")
        return f"{first!r} {client.get('k')!r}"

    app = cached_app({**VIEWS, "/own": own})
    cache = listening(app)
    monkeypatch.setattr(cache, "invalidate", lambda keys: None)  # only local drops count
    monkeypatch.setattr(cache, "unheard", lambda: False)
    admin.set("k", "1")
    assert app.get("/get/k").text == "1"  # kept, parsed the usual way
    before = gets_served(admin)
    assert app.get("/own").text == "b'own:1' b'own:written'"
    assert gets_served(admin) - before == 2  # both went to the server
    assert app.get("/get/k").text == "written"  # its SET dropped the kept "1"
    assert app.get("/get/k").text == "written"  # and nothing "own:" was kept


@pytest.mark.parametrize("client_cache", ["true", "false"])
def test_the_process_wide_clients_new_reply_parsing_applies_to_every_later_read(
    cached_app: Any, admin: redis.Redis, client_cache: str
) -> None:
    """set_response_callback on ``get_redis(registry)`` (a script's, at startup) changes
    every later read's parsing, as on plain redis-py: with the client cache, what was
    kept parsed the old way is dropped, so the next GET is parsed the new way."""
    app = cached_app(client_cache=client_cache)
    if client_cache == "true":
        listening(app)
    admin.set("k", "1")
    assert app.get("/get/k").text == "1"
    assert app.get("/get/k").text == "1"  # a hit, with the cache
    get_redis(app.app.registry).set_response_callback(
        "GET", lambda reply, **kw: b"new:" + (reply or b"-")
    )
    assert app.get("/get/k").text == "new:1"
    assert get_redis(app.app.registry).get("k") == b"new:1"


def test_a_connection_that_ran_select_keeps_nothing(
    cached_app: Any, admin: redis.Redis, server: RedisServer
) -> None:
    """SELECT through the app moves that pooled connection to another database (as with
    plain redis-py): what it reads from then on is never kept for the others."""

    def select(request: Any) -> str:
        request.redis.execute_command("SELECT", 1)
        return value_of(request.redis.get("k"))

    app = cached_app({**VIEWS, "/select": select})
    cache = listening(app)
    admin.set("k", "db0")
    with server.client(db=1) as other_db:
        other_db.set("k", "db1")
    assert app.get("/get/k").text == "db0"
    assert app.get("/select").text == "db1"
    assert ("GET", "k") not in cache.entries  # SELECT flushed, and db1's reply not kept
    app.get("/get/k")  # the same pooled connection, still on database 1 (as redis-py's)
    assert ("GET", "k") not in cache.entries
    with server.client(db=1) as other_db:
        other_db.flushdb()


def test_flushall_elsewhere_empties_the_cache(cached_app: Any, admin: redis.Redis) -> None:
    app = cached_app()
    cache = listening(app)
    admin.set("k", "1")
    assert app.get("/get/k").text == "1"
    assert app.get("/get/k").text == "1"
    admin.flushall()
    seen_within(app, "/get/k", "None")
    wait_for(lambda: cache.flushes >= 1, what="the flush")


# ------------------------------------------------------------------ bounds
def test_at_most_max_keys_least_recently_used_first(cached_app: Any, admin: redis.Redis) -> None:
    """A full cache evicts down to 98 % of its bounds (5 keys: 4) by second chance: the
    oldest entry goes unless read since the hand last passed it; then it goes to the
    back, and its second chance is spent."""
    app = cached_app(client_cache_max_keys="5")
    cache = listening(app)
    admin.set("warm", "changed")  # listening()'s own read, if kept: out, so the cache
    wait_for(lambda: not cache.entries, what="the warm-up read's invalidation")  # is empty

    def read(*names: str) -> None:
        for name in names:
            admin.set(name, name)
            app.get(f"/get/{name}")

    def kept() -> list[str]:
        return [args[1] for args in cache.entries]

    read("k0", "k1", "k2", "k3", "k4")
    app.get("/get/k0")  # a hit: read since the hand last passed
    read("k5")  # 6 > 5: k0 to the back, k1 and k2 go
    assert (kept(), cache.evictions) == (["k3", "k4", "k5", "k0"], 2)
    read("k6")  # 5: within the bound, nothing goes
    assert (kept(), cache.evictions) == (["k3", "k4", "k5", "k0", "k6"], 2)
    read("k7")
    assert (kept(), cache.evictions) == (["k5", "k0", "k6", "k7"], 4)
    read("k8", "k9")  # k0's second chance is spent: it goes in its turn
    assert (kept(), cache.evictions) == (["k6", "k7", "k8", "k9"], 6)


def test_at_most_max_bytes(cached_app: Any, admin: redis.Redis) -> None:
    app = cached_app(client_cache_max_bytes="4 KB")
    cache = listening(app)
    admin.set("big", "x" * 5000)  # more than the whole bound: never kept
    app.get("/get/big")
    assert ("GET", "big") not in cache.entries
    # each reply: 360 (an entry) + 40 + its bytes + its key's; over the bound, down to
    # 98 % of it (4014): 4 replies of 1,033 bytes (4,132) are over, and 3 are kept
    for i in range(20):
        admin.set(f"k{i}", "y" * 630)
        app.get(f"/get/k{i}")
        assert cache.bytes <= 4096
    assert sorted(args[1] for args in cache.entries) == ["k17", "k18", "k19"]
    assert cache.bytes == sum(e.size for e in cache.entries.values()) == 3 * 1033


def test_ttl_forgets_a_reply_even_without_an_invalidation(
    cached_app: Any, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = cached_app(client_cache_ttl="200ms")
    cache = listening(app)
    heard = threading.Event()
    monkeypatch.setattr(cache, "invalidate", lambda keys: heard.set())  # no message applied
    monkeypatch.setattr(cache, "unheard", lambda: False)
    admin.set("k", "1")
    assert app.get("/get/k").text == "1"
    heard.clear()
    admin.set("k", "2")
    # The listener has read the message and is done with it: a read while it drains
    # goes to the server (CI under load read "2" here).
    assert heard.wait(5)
    deadline = time.monotonic() + 5
    while (cache.draining or cache.socket_unread()) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert app.get("/get/k").text == "1"  # kept (the message was ignored)
    time.sleep(0.25)
    assert app.get("/get/k").text == "2"


def test_only_the_configured_commands_are_served(cached_app: Any, admin: redis.Redis) -> None:
    app = cached_app(client_cache_commands="HGETALL")
    listening(app, "/hgetall/warm")
    admin.set("k", "1")
    admin.hset("h", "f", "v")
    before = gets_served(admin), gets_served(admin, "hgetall")
    for _ in range(3):
        assert app.get("/get/k").text == "1"
        assert app.get("/hgetall/h").text == "[(b'f', b'v')]"
    after = gets_served(admin), gets_served(admin, "hgetall")
    assert after[0] - before[0] == 3  # GET: every time
    assert after[1] - before[1] == 1  # HGETALL: once


# ------------------------------------------------------------------ connections
def test_losing_the_invalidation_connection_flushes_and_rearms(
    cached_app: Any, admin: redis.Redis, all_logs: pytest.LogCaptureFixture
) -> None:
    app = cached_app()
    cache = listening(app)
    admin.set("k", "1")
    app.get("/get/k")
    assert app.get("/get/k").text == "1" and ("GET", "k") in cache.entries
    (listener,) = ours(admin, "subscribe")
    admin.client_kill_filter(_id=listener["id"])
    # Killed: the next read goes to the server, and a write there is seen.
    admin.set("k", "2")
    seen_within(app, "/get/k", "2")
    wait_for(lambda: cache.listener_id not in (None, int(listener["id"])), what="a new listener")
    assert cache.flushes >= 1
    assert any(
        "client cache flushed" in r.getMessage() and r.levelno == logging.WARNING
        for r in all_logs.records
    )
    # The data connection is armed again, for the new listener, at its next cached read.
    app.get("/get/k")
    (data,) = [c for c in ours(admin) if c["cmd"] != "subscribe"]
    assert "t" in data["flags"] and "R" not in data["flags"]  # tracking, redirect valid
    assert app.get("/get/k").text == "2"
    admin.set("k", "3")
    seen_within(app, "/get/k", "3")
    assert wait_for(lambda: any("back" in r.getMessage() for r in all_logs.records))


def test_a_killed_data_connection_loses_its_entries(cached_app: Any, admin: redis.Redis) -> None:
    """The server forgets what a connection read when it closes: nothing it read may be
    served after that, even if the connection sits idle in the pool (never reused)."""
    app = cached_app()
    cache = listening(app)
    admin.set("k", "1")
    app.get("/get/k")
    assert app.get("/get/k").text == "1" and ("GET", "k") in cache.entries
    (data,) = [c for c in ours(admin) if c["cmd"] != "subscribe"]
    admin.client_kill_filter(_id=data["id"])
    wait_for(lambda: not cache.entries, timeout=10 * TICK + 2, what="its entries dropped")
    admin.set("k", "2")
    seen_within(app, "/get/k", "2")


def test_a_reconnected_connection_is_armed_again(cached_app: Any, admin: redis.Redis) -> None:
    def tracking(request: Any) -> str:
        request.redis.get("k")  # a cached read arms the request's connection first
        info = request.redis.execute_command("CLIENT", "TRACKINGINFO")
        flags = [f.decode() for f in info[b"flags"]]
        return f"{','.join(sorted(flags))} {info[b'redirect']}"

    app = cached_app({**VIEWS, "/tracking": tracking})
    cache = listening(app)
    admin.set("k", "1")
    first = app.get("/tracking").text
    assert first == f"on {cache.listener_id}"
    for _ in range(3):
        for client in [c for c in ours(admin) if c["cmd"] != "subscribe"]:
            admin.client_kill_filter(_id=client["id"])
        cache.flush()  # a miss is needed to arm: the kept reply would answer
        assert app.get("/tracking").text == f"on {cache.listener_id}"


@pytest.mark.parametrize(
    "rules",
    [("+@all", "allchannels", "-client|tracking"), ("+@all",)],
    ids=["no CLIENT TRACKING", "no channel for SUBSCRIBE"],
)
def test_a_user_without_tracking_rights_reads_from_the_server_warned_once(
    server: RedisServer,
    admin: redis.Redis,
    all_logs: pytest.LogCaptureFixture,
    rules: tuple[str, ...],
) -> None:
    url = server.add_user("plain", "plain-pw", *rules)
    app = build_app(
        {"redis.url": url, "redis.client_cache": "true"}, {"/get/{key}": VIEWS["/get/{key}"]}
    )
    try:
        admin.set("k", "1")
        cache = cache_of(app)
        for value in ("1", "1", "2", "2", "3"):
            if value != "1":
                admin.set("k", value)
            assert app.get("/get/k").text == value
            time.sleep(0.05)
        wait_for(lambda: cache.refused is not None, what="the refusal")
        assert not cache.entries and cache.thread is not None
        wait_for(lambda: not cache.thread.is_alive(), what="the listener to give up")
        assert app.get("/get/k").text == "3"
        warnings = [r for r in all_logs.records if "client cache off" in r.getMessage()]
        assert len(warnings) == 1 and "plain-pw" not in warnings[0].getMessage()
        assert "NOPERM" in warnings[0].getMessage() or "permission" in warnings[0].getMessage()
    finally:
        client_set(app.app.registry).close()
        admin.acl_deluser("plain")


def test_a_forked_child_keeps_nothing_of_the_parents_cache(
    cached_app: Any, admin: redis.Redis
) -> None:
    """gunicorn --preload: the child starts empty and listens on its own connection."""
    app = cached_app()
    cache = listening(app)
    admin.set("k", "parent")
    app.get("/get/k")
    assert app.get("/get/k").text == "parent"
    parent_listener = cache.listener_id
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reads through its copy of the app
        try:
            report = [str(len(cache.entries))]
            admin_child = redis.Redis(port=admin.connection_pool.connection_kwargs["port"])
            admin_child.set("k", "child")
            report.append(app.get("/get/k").text)
            wait_for(lambda: cache.listener_id is not None, what="the child's listener")
            report.append(str(cache.listener_id != parent_listener))
            app.get("/get/k")
            admin_child.set("k", "child2")  # another client's write: seen within BOUND
            deadline = time.monotonic() + BOUND
            while app.get("/get/k").text != "child2" and time.monotonic() < deadline:
                pass
            report.append(app.get("/get/k").text)
            os.write(write_end, " ".join(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    assert report == "0 child True child2"
    assert cache.listener_id == parent_listener  # the parent's cache is untouched
    assert app.get("/get/k").text == "child2"  # and still sees the child's writes


def test_close_stops_the_listener(cached_app: Any, admin: redis.Redis) -> None:
    app = cached_app()
    cache = listening(app)
    thread = cache.thread
    assert thread is not None and thread.is_alive()
    client_set(app.app.registry).close()
    wait_for(lambda: not thread.is_alive(), what="the listener thread to end")
    assert wait_for(lambda: ours(admin, "subscribe") == [] or True)
    wait_for(lambda: ours(admin, "subscribe") == [], what="the listener's connection closed")


def test_during_an_outage_the_line_has_the_cache_pairs_then_the_outage_pairs(
    redis_server_factory: Any, all_logs: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()

    def view(request: Any) -> str:
        try:
            return value_of(request.redis.get("k"))
        except redis.RedisError as exc:
            return type(exc).__name__

    app = build_app(
        {"redis.url": server.url, "redis.client_cache": "true", "redis.retries": "0",
         "redis.socket_timeout": "0.3", "redis.socket_connect_timeout": "0.3",
         "redis.breaker_failures": "1", "redis.breaker_cooldown": "30 seconds"},
        {"/": view},
    )  # fmt: skip
    try:
        assert app.get("/").text == "None"
        server.stop()
        all_logs.clear()
        for _ in range(3):
            app.get("/")
        lines = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.stats"]
        assert lines and " cache_hits=0 cache_misses=1 cache_invalidations=" in lines[-1]
        assert lines[-1].endswith(" circuit=open"), lines[-1]
    finally:
        client_set(app.app.registry).close()
