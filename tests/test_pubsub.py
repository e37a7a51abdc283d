"""PubSub through the add-on's clients when the server drops the subscription.

Modelled on redis-py's own ``test_connection_error_raised_when_connection_dies`` (sync and
asyncio): subscribe, ``CLIENT KILL`` the subscriber's connection, and the next read must
raise ``ConnectionError`` as plain redis-py does, not resume silently through the
client's retries (``redis.retries`` is 3 here, the default) while what was published in
between is lost. The call after the error subscribes again and gets new messages.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis
from pyramid.config import Configurator

from pyramid_redisx import close_async_redis, get_async_redis, get_redis
from pyramid_redisx.request import client_set
from tests.conftest import close_script

WAIT = 2.0


def wait_for_message(pubsub: Any) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message is not None:
            return message
    return None


async def await_message(pubsub: Any) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=0.05)
        if message is not None:
            return message
    return None


def kill_subscribers(admin: redis.Redis) -> int:
    killed = 0
    for client in admin.client_list():
        if client["cmd"] in ("subscribe", "psubscribe"):
            killed += admin.client_kill_filter(_id=client["id"])
    return killed


@pytest.fixture
def registry(redis_url: str) -> Any:
    config = Configurator(settings={"redis.url": redis_url})  # redis.retries: 3
    config.include("pyramid_redisx")
    app = config.make_wsgi_app()
    yield app.registry
    client_set(app.registry).close()


@pytest.fixture
def admin(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def check_sync(pubsub: Any, admin: redis.Redis) -> None:
    pubsub.subscribe("news")
    assert wait_for_message(pubsub)["type"] == "subscribe"
    assert kill_subscribers(admin) == 1
    admin.publish("news", "lost")  # no subscriber any more: nobody gets it
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        wait_for_message(pubsub)
    assert time.monotonic() - started < 1.0  # at once, not after retries and pauses
    # The next call connects and subscribes again; later messages arrive.
    assert wait_for_message(pubsub)["type"] == "subscribe"
    assert admin.publish("news", "after") == 1
    message = wait_for_message(pubsub)
    assert (message["type"], message["data"]) == ("message", b"after")


def test_a_dropped_subscription_raises_on_the_process_wide_client(
    registry: Any, admin: redis.Redis
) -> None:
    client = get_redis(registry)
    assert client.get_retry().get_retries() == 3  # commands are retried...
    pubsub = client.pubsub()
    try:
        check_sync(pubsub, admin)  # ...a subscription is not resumed silently
    finally:
        pubsub.close()


def test_a_dropped_subscription_raises_in_a_request(registry: Any, admin: redis.Redis) -> None:
    from pyramid.scripting import prepare

    env = prepare(registry=registry)
    try:
        pubsub = env["request"].redis.pubsub()
        check_sync(pubsub, admin)
        pubsub.close()
    finally:
        env["closer"]()


def test_commands_on_a_killed_connection_are_still_retried(
    registry: Any, admin: redis.Redis
) -> None:
    """The rule is the subscription's: a plain read on a killed pooled connection is
    sent again on a new one, as before."""
    client = get_redis(registry)
    client.set("k", "v")
    for entry in admin.client_list():
        if entry["cmd"] == "set":
            admin.client_kill_filter(_id=entry["id"])
    assert client.get("k") == b"v"


def test_a_dropped_subscription_raises_on_the_asyncio_client(
    registry: Any, admin: redis.Redis
) -> None:
    async def scenario() -> None:
        client = get_async_redis(registry)
        assert client.get_retry().get_retries() == 3
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe("news")
            assert (await await_message(pubsub))["type"] == "subscribe"
            assert kill_subscribers(admin) == 1
            started = time.monotonic()
            with pytest.raises(redis.ConnectionError):
                await await_message(pubsub)
            assert time.monotonic() - started < 1.0
            assert (await await_message(pubsub))["type"] == "subscribe"
            assert admin.publish("news", "after") == 1
            message = await await_message(pubsub)
            assert (message["type"], message["data"]) == ("message", b"after")
        finally:
            await pubsub.aclose()
            await close_async_redis(registry)

    asyncio.run(scenario())


def test_a_requests_pubsub_takes_redis_py_arguments(registry: Any, admin: redis.Redis) -> None:
    """``request.redis.pubsub(ignore_subscribe_messages=True)`` as redis-py's: the first
    message read is the published one, not the subscription's confirmation."""
    from pyramid.scripting import prepare

    env = prepare(registry=registry)
    try:
        pubsub = env["request"].redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("quiet")
        deadline = time.monotonic() + WAIT
        while admin.publish("quiet", "hello") == 0 and time.monotonic() < deadline:
            pubsub.get_message(timeout=0.05)  # reads (and skips) the confirmation
        message = wait_for_message(pubsub)
        assert (message["type"], message["data"]) == ("message", b"hello")
        pubsub.close()
    finally:
        close_script(env)


@pytest.mark.parametrize("client", ["request", "process"])
def test_get_message_waits_its_timeout_on_a_quiet_channel(
    registry: Any, admin: redis.Redis, client: str
) -> None:
    """``get_message(timeout=0.2)`` on a channel nobody publishes to returns None after
    about 0.2 s, as redis-py's (the timeout reaches redis-py's read), for a request's
    pubsub and the process-wide client's."""
    from pyramid.scripting import prepare

    env = prepare(registry=registry)
    try:
        source = env["request"].redis if client == "request" else get_redis(registry)
        pubsub = source.pubsub()
        pubsub.subscribe("silent")
        assert wait_for_message(pubsub)["type"] == "subscribe"
        got: list[Any] = []

        def read() -> None:
            started = time.monotonic()
            got.append(pubsub.get_message(timeout=0.2))
            got.append(time.monotonic() - started)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(3)
        finished = not reader.is_alive()
        if not finished:  # blocked past its timeout: a message ends the read
            admin.publish("silent", "wake")
            reader.join(3)
        assert finished, "get_message(timeout=0.2) was still waiting after 3 s"
        assert got[0] is None
        assert 0.15 <= got[1] < 1.5, got
        pubsub.close()
    finally:
        close_script(env)


def test_a_pubsub_used_by_another_thread_outlives_the_request(
    registry: Any, admin: redis.Redis
) -> None:
    """A request's pubsub last used by another thread is that thread's: the request's
    end does not close it (it closes only what its own thread used last)."""
    from pyramid.scripting import prepare

    env = prepare(registry=registry)
    pubsub = env["request"].redis.pubsub()
    try:
        worker = threading.Thread(target=pubsub.subscribe, args=("worker",))
        worker.start()
        worker.join()
        close_script(env)  # the request ends
        assert admin.publish("worker", "still there") == 1
        received = []
        reader = threading.Thread(target=lambda: received.extend([
            wait_for_message(pubsub), wait_for_message(pubsub)
        ]))  # fmt: skip
        reader.start()
        reader.join()
        assert [(m["type"], m["data"]) for m in received] == [
            ("subscribe", 1), ("message", b"still there")
        ]  # fmt: skip
    finally:
        pubsub.close()


def test_a_pubsub_the_request_used_last_is_closed_at_its_end(
    registry: Any, admin: redis.Redis
) -> None:
    """A pubsub the view used last and left open is closed when the request ends (the
    server no longer lists a subscriber), whether its last use was a command or a read;
    a blocking read (``parse_response()``, as ``listen()`` makes) waits for the reply."""
    from pyramid.scripting import prepare

    for read in (False, True):
        env = prepare(registry=registry)
        pubsub = env["request"].redis.pubsub()
        pubsub.subscribe("left-open")
        if read:
            assert pubsub.parse_response()[0] == b"subscribe"
            later = threading.Timer(0.2, admin.publish, ("left-open", "later"))
            later.start()
            assert pubsub.parse_response() == [b"message", b"left-open", b"later"]
            later.join()
        deadline = time.monotonic() + WAIT
        while not admin.client_list(_type="pubsub") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(admin.client_list(_type="pubsub")) == 1
        close_script(env)
        deadline = time.monotonic() + WAIT  # the server sees the close a moment later
        while admin.client_list(_type="pubsub") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert admin.client_list(_type="pubsub") == []
