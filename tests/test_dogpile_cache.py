"""A dogpile.cache region on the app's client, with the real dogpile.cache."""

from __future__ import annotations

import logging
import pickle
from typing import Any

import pytest
from dogpile.cache import make_region
from pyramid.config import Configurator

from pyramid_redisx import get_redis
from pyramid_redisx.dogpile_cache import region_arguments


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
