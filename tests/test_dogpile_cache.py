"""A dogpile.cache region on the app's client, with the real dogpile.cache."""

from __future__ import annotations

import logging
import pickle
import threading
import time
from typing import Any

import pytest
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE
from pyramid.config import Configurator

from pyramid_redisx import get_redis
from pyramid_redisx.dogpile_cache import region_arguments
from pyramid_redisx.failsoft import soft_failures
from tests.test_failsoft import FAST
from tests.test_telemetry import sample, scrape


def test_cached_values_land_on_our_server_and_count_for_the_request(
    make_app: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    region = make_region()

    def setup(config: Configurator) -> None:
        # Configured in main(), before the app's clients exist (they do at commit).
        region.configure(
            "pyramid_redisx",
            expiration_time=300,
            arguments=region_arguments(config.registry, "cache", redis_expiration_time=600),
        )

    def view(request: Any) -> str:
        return str(region.get_or_create("answer", lambda: calls.append(1) or 42))

    cache_url = redis_url.rsplit("/", 1)[0] + "/2"
    app = make_app({"/": view}, setup, clients="cache", **{"cache.url": cache_url})
    caplog.set_level(logging.DEBUG, logger="pyramid_redisx.stats")
    assert app.get("/").text == "42"
    assert app.get("/").text == "42"
    assert calls == [1]  # computed once, then read from Redis
    cache = get_redis(app.app.registry, "cache")
    assert cache.keys("*") == [b"answer"] and get_redis(app.app.registry).dbsize() == 0
    assert 500 < cache.ttl("answer") <= 600  # redis_expiration_time
    metadata, pickled = cache.get("answer").split(b"|", 1)  # dogpile's own format
    assert pickle.loads(pickled) == 42 and b"ct" in metadata
    lines = [r for r in caplog.records if r.name == "pyramid_redisx.stats"]
    counted = [(r.redis_client, r.redis_commands) for r in lines]  # type: ignore[attr-defined]
    assert counted[0][0] == "cache" and counted[0][1] >= 2  # GET, then SETEX
    assert counted[1] == ("cache", 1)  # GET only

    # Outside a request (a script), the process-wide client is used.
    assert region.get("answer") == 42


def test_distributed_lock_through_our_client(make_app: Any) -> None:
    app = make_app()
    region = make_region().configure(
        "pyramid_redisx",
        arguments=region_arguments(
            app.app.registry, distributed_lock=True, thread_local_lock=False, lock_timeout=5
        ),
    )
    assert region.get_or_create("k", lambda: "v") == "v"
    assert get_redis(app.app.registry).exists("k") == 1


def test_connection_arguments_are_refused(make_app: Any) -> None:
    registry = make_app().app.registry
    with pytest.raises(ValueError, match="remove url from the region's arguments"):
        make_region().configure(
            "pyramid_redisx", arguments={**region_arguments(registry), "url": "redis://x"}
        )
    with pytest.raises(ValueError, match="needs the app's registry"):
        make_region().configure("pyramid_redisx", arguments={})


def test_a_region_of_one_app_used_in_another_apps_request_stays_on_its_own_app(
    make_app: Any, redis_url: str
) -> None:
    """App A's region (client ``cache``, database 2) used inside a request of app B,
    whose ``cache`` client is database 3: the value lands in A's database, since the
    region belongs to A; only a request of A itself makes it use the request's client."""
    base = redis_url.rsplit("/", 1)[0]
    region = make_region()

    def setup_a(config: Configurator) -> None:
        region.configure("pyramid_redisx", arguments=region_arguments(config.registry, "cache"))

    app_a = make_app(setup=setup_a, clients="cache", **{"cache.url": f"{base}/2"})
    app_b = make_app(
        {"/": lambda request: str(region.get_or_create("shared", lambda: "from-b"))},
        clients="cache", **{"cache.url": f"{base}/3"},
    )  # fmt: skip
    assert app_b.get("/").text == "from-b"
    assert get_redis(app_a.app.registry, "cache").keys("*") == [b"shared"]
    assert get_redis(app_b.app.registry, "cache").dbsize() == 0


def test_misconfigured_regions_are_told_exactly_what_to_change(make_app: Any) -> None:
    registry = make_app(clients="text", **{"text.decode_responses": "true"}).app.registry
    with pytest.raises(ValueError) as missing:
        make_region().configure("pyramid_redisx", arguments={})
    assert str(missing.value) == (
        "the pyramid_redisx dogpile.cache backend needs the app's registry: "
        "arguments=region_arguments(config.registry, name)"
    )
    with pytest.raises(ValueError) as given:
        make_region().configure("pyramid_redisx", arguments={
            **region_arguments(registry), "url": "redis://x", "host": "x"})  # fmt: skip
    assert str(given.value) == (
        "the pyramid_redisx dogpile.cache backend takes its connection from the redis.* "
        "settings; remove host, url from the region's arguments"
    )
    region = make_region().configure("pyramid_redisx", arguments=region_arguments(registry, "text"))
    with pytest.raises(ValueError) as decoding:
        region.get("k")  # the client is looked up at first use
    assert str(decoding.value) == (
        "redis client 'text' decodes responses (decode_responses = true); dogpile.cache "
        "stores pickled bytes: use a client with decode_responses = false"
    )


def test_a_region_without_a_client_name_uses_the_default_client(
    make_app: Any, redis_url: str
) -> None:
    base = redis_url.rsplit("/", 1)[0]
    registry = make_app(clients="cache", **{"cache.url": f"{base}/2"}).app.registry
    region = make_region().configure("pyramid_redisx", arguments={"registry": registry})
    region.set("where", "here")
    assert get_redis(registry).keys("*") == [b"where"]
    assert get_redis(registry, "cache").dbsize() == 0


@pytest.mark.parametrize("soft", [False, True])
def test_multi_key_operations_reach_the_server(make_app: Any, soft: bool) -> None:
    """get/set/delete of several keys go to Redis as dogpile's own backend sends them,
    fail-soft or not, while Redis is up."""
    registry = make_app(fail_soft=str(soft).lower()).app.registry
    region = make_region().configure("pyramid_redisx", arguments=region_arguments(registry))
    server = get_redis(registry)
    region.set_multi({"a": 1, "b": 2, "c": 3})
    assert sorted(server.keys("*")) == [b"a", b"b", b"c"]
    assert region.get_multi(["a", "b", "x"]) == [1, 2, NO_VALUE]
    region.delete("a")
    assert sorted(server.keys("*")) == [b"b", b"c"]
    region.delete_multi(["b", "c"])
    assert server.dbsize() == 0


def test_every_operation_is_a_counted_miss_while_redis_is_down(
    make_app: Any, redis_server_factory: Any
) -> None:
    server = redis_server_factory()
    registry = make_app(url=server.url, fail_soft="true", **FAST).app.registry
    region = make_region().configure("pyramid_redisx", arguments=region_arguments(registry))
    pool = get_redis(registry).connection_pool
    server.stop()
    assert region.get("a") is NO_VALUE
    assert region.get_multi(["a", "b"]) == [NO_VALUE, NO_VALUE]
    region.set("a", 1)
    region.set_multi({"a": 1, "b": 2})
    region.delete("a")
    region.delete_multi(["a", "b"])
    assert soft_failures(pool) == 6  # one per call, none raised


def test_the_distributed_lock_of_a_fail_soft_region(
    make_app: Any, redis_server_factory: Any
) -> None:
    """Up, the lock is dogpile's Redis lock (its key on the server while held); down, it
    is taken at once without Redis (counted), reads as not locked, and its release is
    skipped (not counted again)."""
    server = redis_server_factory()
    registry = make_app(url=server.url, fail_soft="true", **FAST).app.registry
    region = make_region().configure("pyramid_redisx", arguments=region_arguments(
        registry, distributed_lock=True, thread_local_lock=False, lock_timeout=5))  # fmt: skip
    client, pool = get_redis(registry), get_redis(registry).connection_pool
    mutex = region.backend.get_mutex("k")
    assert mutex.acquire(True) is True and mutex.locked() is True
    assert client.exists("_lockk") == 1
    mutex.release()
    assert client.exists("_lockk") == 0 and mutex.locked() is False
    other = region.backend.get_mutex("k")
    assert other.acquire(True) is True
    assert mutex.acquire(False) is False  # held by the other: no soft answer while Redis is up
    other.release()
    assert soft_failures(pool) == 0
    server.stop()
    assert mutex.acquire(True) is True
    assert soft_failures(pool) == 1
    assert mutex.locked() is False
    assert soft_failures(pool) == 2
    assert mutex.release() is None
    assert soft_failures(pool) == 2  # the release of a lock never taken: skipped
    assert mutex.acquire(True) is True and soft_failures(pool) == 3


def test_a_fail_soft_lock_after_an_outage_is_redis_lock_again(
    make_app: Any, redis_server_factory: Any
) -> None:
    """A lock taken without Redis during an outage does not make the next one, with
    Redis back, skip its release (the lock key would stay until its timeout); a release
    that cannot reach Redis is a counted soft failure; acquire() waits by default, as
    dogpile expects of its lock."""
    server = redis_server_factory()
    settings = {**FAST, "breaker_failures": "0"}  # no circuit: Redis is used as it comes back
    registry = make_app(url=server.url, fail_soft="true", **settings).app.registry
    region = make_region().configure("pyramid_redisx", arguments=region_arguments(
        registry, distributed_lock=True, thread_local_lock=False, lock_timeout=30))  # fmt: skip
    client, pool = get_redis(registry), get_redis(registry).connection_pool
    mutex, other = region.backend.get_mutex("k"), region.backend.get_mutex("k")
    assert other.acquire() is True
    released = threading.Timer(0.3, other.release)
    released.start()
    started = time.monotonic()
    assert mutex.acquire() is True  # waited for the other holder
    assert time.monotonic() - started >= 0.25
    released.join()
    mutex.release()
    assert client.exists("_lockk") == 0
    server.stop()
    assert mutex.acquire() is True and soft_failures(pool) == 1  # taken without Redis
    server.start()
    assert mutex.acquire() is True and client.exists("_lockk") == 1  # Redis's lock again
    mutex.release()
    assert client.exists("_lockk") == 0  # released, not skipped
    assert mutex.acquire() is True
    server.stop()
    assert mutex.release() is None and soft_failures(pool) == 2  # could not reach Redis


def test_lookups_while_redis_is_down_are_misses_in_the_metrics(
    make_app: Any, redis_server_factory: Any
) -> None:
    server = redis_server_factory()
    app = make_app(url=server.url, fail_soft="true", metrics_route="/metrics", **FAST)
    region = make_region().configure("pyramid_redisx", arguments=region_arguments(app.app.registry))
    region.set("a", 1)
    assert region.get("a") == 1
    server.stop()
    assert region.get("a") is NO_VALUE
    assert region.get_multi(["a", "b"]) == [NO_VALUE, NO_VALUE]
    families = scrape(app)
    hits = sample(families, "pyramid_redisx_cache_lookups_total", pyramid_redisx_cache_result="hit")
    misses = sample(
        families, "pyramid_redisx_cache_lookups_total", pyramid_redisx_cache_result="miss"
    )
    assert (hits, misses) == (1, 3)
