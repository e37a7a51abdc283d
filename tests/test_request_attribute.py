"""``request.redis`` without Pyramid's per-request class, and what it keeps.

Pyramid makes a class per request for any request property; with ``request.redis`` the
app's only one, the add-on binds it as a request method instead (``RequestAttributes``).
These tests pin what a user sees either way: the same object as ``get_redis``, once per
request, a user's own ``request.redis`` winning as with any Pyramid request method, and
no cyclic garbage per request (which Pyramid's per-request class made).
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationConflictError
from pyramid.interfaces import IRequestExtensions
from pyramid.request import Request
from pyramid.response import Response
from pyramid.scripting import prepare

from pyramid_redisx import get_redis
from pyramid_redisx.request import client_set


def _describe(request: Any) -> str:
    first = request.redis
    return ",".join(
        [
            type(request).__name__,
            str(type(request) is Request),
            str(first is request.redis),
            str(first is get_redis(request)),
            str(first.incr("n") >= 1),
        ]
    )


def test_only_property_no_per_request_class(make_app: Any) -> None:
    app = make_app({"/": _describe})
    assert app.get("/").text == "Request,True,True,True,True"


def test_with_another_property_the_same_behaviour(make_app: Any) -> None:
    def setup(config: Configurator) -> None:
        config.add_request_method(lambda request: 42, "answer", reify=True)

    app = make_app({"/": lambda request: _describe(request) + f",{request.answer}"}, setup)
    # Pyramid's per-request class (made for "answer"), ours a property on it
    assert app.get("/").text == "Request,False,True,True,True,42"


def test_get_redis_first_then_request_redis(make_app: Any) -> None:
    def view(request: Any) -> str:
        client = get_redis(request)
        return str(client is request.redis and client is get_redis(request))

    def setup(config: Configurator) -> None:
        config.add_request_method(lambda request: 1, "other", reify=True)

    assert make_app({"/": view}).get("/").text == "True"
    assert make_app({"/": view}, setup).get("/").text == "True"


def test_a_named_client_first_then_request_redis(make_app: Any) -> None:
    """``get_redis(request, "jobs")`` before ``request.redis``: the default client is
    still bound, once, and is ``get_redis(request)``; in both forms of the attribute."""

    def view(request: Any) -> str:
        jobs = get_redis(request, "jobs")
        jobs.set("from-jobs", "1")
        client = request.redis
        return ",".join(
            [
                type(client).__name__,
                str(client is get_redis(request) and client is request.redis),
                str(client is not jobs),
                str(client.get("from-jobs")),
            ]
        )

    def declare(config: Configurator) -> None:
        config.add_redis_client("jobs")

    def declare_and_add(config: Configurator) -> None:
        declare(config)
        config.add_request_method(lambda request: 1, "other", reify=True)

    for setup in (declare, declare_and_add):
        text = make_app({"/": view}, setup).get("/").text
        assert text.split(",")[1:] == ["True", "True", "b'1'"], text
        assert text.split(",")[0] != "NoneType", text


@pytest.mark.parametrize("before", [False, True], ids=["after-include", "before-include"])
def test_an_apps_own_request_redis_wins(redis_url: str, before: bool) -> None:
    """As with any request method an include adds: the app's own overrides it, whether
    added before or after the include (Pyramid's conflict resolution by discriminator,
    not the order the actions run in)."""
    config = Configurator(settings={"redis.url": redis_url})
    if before:
        config.add_request_method(lambda request: "mine", "redis", reify=True)
    config.include("pyramid_redisx")
    if not before:
        config.add_request_method(lambda request: "mine", "redis", reify=True)
    config.add_route("r", "/")
    config.add_view(lambda request: Response(str(request.redis)), route_name="r")
    app = config.make_wsgi_app()
    try:
        request = Request.blank("/")
        assert request.get_response(app).text == "mine"
    finally:
        client_set(app.registry).close()


def test_two_includes_adding_request_redis_conflict(redis_url: str) -> None:
    """Another add-on's ``request.redis`` beside ours is a configuration conflict, as
    between any two Pyramid add-ons, not a silent winner."""

    def other_addon(config: Configurator) -> None:
        config.add_request_method(lambda request: "theirs", "redis", reify=True)

    config = Configurator(settings={"redis.url": redis_url})
    config.include("pyramid_redisx")
    config.include(other_addon)
    with pytest.raises(ConfigurationConflictError, match="request extensions"):
        config.commit()


def test_introspection_lists_them_as_pyramid_lists_its_own(redis_url: str) -> None:
    """The introspector (the debug toolbar's, ``pyramid.interfaces.IIntrospector``) shows
    ``request.redis`` and ``request.redis_tm`` as ``config.add_request_method`` shows a
    request property: the oracle is Pyramid's own entry for one."""
    plain = Configurator()
    plain.add_request_method(lambda request: 1, "mine", reify=True)
    plain.commit()
    oracle = plain.registry.introspector.get("request extensions", "mine")
    config = Configurator(settings={"redis.url": redis_url})
    config.include("pyramid_redisx")
    config.commit()
    try:
        for name, reify in (("redis", True), ("redis_tm", False)):
            ours = config.registry.introspector.get("request extensions", name)
            assert ours is not None, name
            assert (ours.category_name, ours.type_name) == (oracle.category_name, oracle.type_name)
            assert (ours.discriminator, oracle.discriminator) == (name, "mine")
            assert ours.title == f"pyramid_redisx: request.{name}"
            assert sorted(ours) == sorted(oracle) == ["callable", "property", "reify"]
            assert ours["property"] is True and ours["reify"] is reify
            descriptor = config.registry.getUtility(IRequestExtensions).descriptors[name]
            assert ours["callable"] is descriptor
    finally:
        client_set(config.registry).close()


def test_scripts_get_request_redis_without_make_wsgi_app(redis_url: str) -> None:
    """No ApplicationCreated (no make_wsgi_app): the property form serves scripts."""
    config = Configurator(settings={"redis.url": redis_url})
    config.include("pyramid_redisx")
    config.commit()
    env = prepare(registry=config.registry)
    try:
        request = env["request"]
        assert request.redis is get_redis(request)
        assert request.redis.ping() is True
    finally:
        env["closer"]()
        client_set(config.registry).close()


def test_requests_make_no_cyclic_garbage(make_app: Any) -> None:
    """Pyramid's per-request class is cyclic garbage on every request (its MRO refers
    to it): with request.redis the app's only property there is none, for views that
    use Redis and views that do not. (Only what comes from requests is counted: other
    tests' threads may leave garbage of their own meanwhile.)"""
    app = make_app({"/use": lambda request: request.redis.get("k") or "none",
                    "/not": lambda request: "ok"})  # fmt: skip
    for path in ("/use", "/not"):
        app.get(path)  # warm: routes, caches
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to look at it
    try:
        for _ in range(50):
            app.get("/use")
            app.get("/not")
        gc.collect()
        from_requests = [
            thing
            for thing in gc.garbage
            if isinstance(thing, Request)
            or (isinstance(thing, type) and issubclass(thing, Request))
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert from_requests == []


def test_pool_wakes_a_waiting_request_at_once(make_app: Any) -> None:
    """The pool's queue wakes a waiting checkout only when one waits: it must still be
    woken by the release, not by its pool_timeout."""
    held = threading.Event()
    release = threading.Event()

    def holder(request: Any) -> str:
        request.redis.ping()  # the request's connection, kept to its end
        held.set()
        release.wait(5)
        return "held"

    def waiter(request: Any) -> str:
        started = time.monotonic()
        request.redis.ping()
        return f"{time.monotonic() - started:.3f}"

    app = make_app({"/hold": holder, "/wait": waiter}, max_connections=1, pool_timeout=5)
    results: dict[str, str] = {}
    thread = threading.Thread(target=lambda: results.update(hold=app.get("/hold").text))
    thread.start()
    assert held.wait(5)
    timer = threading.Timer(0.2, release.set)
    timer.start()
    waited = float(app.get("/wait").text)
    thread.join(5)
    assert results["hold"] == "held"
    assert 0.15 <= waited < 1.0, waited


@pytest.mark.parametrize("fail", [False, True])
def test_pipeline_moves_the_health_check_deadline_once(make_app: Any, fail: bool) -> None:
    """After a pipeline, redis-py's health-check interval is back on the connection and
    its deadline is one interval after the last reply, error or not."""

    def view(request: Any) -> str:
        pipe = request.redis.pipeline(transaction=False)
        for index in range(5):
            pipe.set(f"k{index}", "v")
        if fail:
            pipe.incr("k0")  # "v" is not an integer: an error reply among the replies
        pipe.execute(raise_on_error=False)
        connection = request.redis._redisx_usage.connection
        left = connection.next_health_check - time.monotonic()
        return f"{connection.health_check_interval} {left:.1f}"

    app = make_app({"/": view}, health_check_interval=30)
    interval, left = app.get("/").text.split()
    assert float(interval) == 30
    assert 29.0 <= float(left) <= 30.0
