"""MessageQueue against a real server: a producer view, consumer threads."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import pytest
import redis

from pyramid_redisx import get_redis
from pyramid_redisx.queue import MessageQueue, QueueEmpty, QueueFull


def produce(request: Any) -> str:
    MessageQueue(get_redis(request), "jobs").put(request.params["m"])
    return "queued"


class Consumer(threading.Thread):
    """Takes ``count`` messages from ``queue`` (each ``get`` waiting up to ``timeout``)."""

    def __init__(self, queue: MessageQueue, count: int = 1, timeout: float = 30) -> None:
        super().__init__(daemon=True)
        self.queue, self.count, self.timeout = queue, count, timeout
        self.got: list[bytes] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(self.count):
                self.got.append(self.queue.get(timeout=self.timeout))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_fifo_bytes_and_close(make_app: Any) -> None:
    app = make_app(decode_responses="true")  # get() still returns bytes
    client = get_redis(app.app.registry)
    queue = MessageQueue(client, "q")
    queue.put("one")
    queue.put(b"two")
    assert len(queue) == 2
    assert [queue.get(timeout=1), queue.get(timeout=1)] == [b"one", b"two"]
    queue.put("left")
    queue.close()
    assert client.exists("q") == 0


def test_get_on_empty_queue_raises_within_its_timeout(make_app: Any) -> None:
    queue = MessageQueue(get_redis(make_app().app.registry), "empty")
    started = time.monotonic()
    with pytest.raises(QueueEmpty, match=re.escape("queue 'empty': no message within 0.3 s")):
        queue.get(timeout=0.3)
    assert 0.25 < time.monotonic() - started < 0.9


@pytest.mark.slow
def test_blocking_get_outlasts_the_socket_timeout(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """get(timeout=30) on a client with socket_timeout 2 s; other commands keep 2 s."""
    app = make_app({"/produce": produce}, socket_timeout="2", clients="queue",
                   **{"queue.max_connections": "4"})  # fmt: skip
    worker_client = get_redis(app.app.registry, "queue")
    consumer = Consumer(MessageQueue(worker_client, "jobs"), timeout=30)
    consumer.start()
    time.sleep(2.6)  # longer than the socket timeout: a plain BLPOP would have failed
    caplog.set_level(logging.DEBUG, logger="pyramid_redisx.stats")
    assert app.get("/produce", {"m": "hello"}).text == "queued"
    consumer.join(5)
    assert consumer.error is None and consumer.got == [b"hello"]
    lines = [r for r in caplog.records if r.name == "pyramid_redisx.stats"]
    assert [(r.redis_client, r.redis_commands) for r in lines] == [("default", 1)]  # type: ignore[attr-defined]
    # The connection that waited is back in the pool with the pool's own timeout.
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        worker_client.execute_command("DEBUG", "SLEEP", "3")
    assert time.monotonic() - started < 2.8


def test_blocked_consumers_on_their_own_client_never_starve_views(make_app: Any) -> None:
    app = make_app({"/produce": produce}, max_connections="2", pool_timeout="0.3",
                   clients="queue", **{"queue.max_connections": "3"})  # fmt: skip
    queue = MessageQueue(get_redis(app.app.registry, "queue"), "jobs")
    consumers = [Consumer(queue, count=2, timeout=10) for _ in range(3)]
    for consumer in consumers:
        consumer.start()
    time.sleep(0.2)  # all three consumers are blocked, holding every queue connection
    for number in range(6):
        assert app.get("/produce", {"m": str(number)}).status_int == 200
    for consumer in consumers:
        consumer.join(5)
        assert consumer.error is None
    assert sorted(m for c in consumers for m in c.got) == [str(n).encode() for n in range(6)]


def test_consumers_on_the_views_client_do_starve_them(make_app: Any, redis_url: str) -> None:
    """Why consumers need a named client: on the views' pool, views wait and fail."""
    app = make_app({"/produce": produce}, max_connections="2", pool_timeout="0.3")
    queue = MessageQueue(get_redis(app.app.registry), "other")
    consumers = [Consumer(queue, count=1, timeout=3) for _ in range(2)]
    for consumer in consumers:
        consumer.start()
    time.sleep(0.2)
    with pytest.raises(redis.ConnectionError, match=re.escape("no free connection within 0.3 s")):
        app.get("/produce", {"m": "x"})
    with redis.Redis.from_url(redis_url) as outside:  # the app's pool has nothing free
        outside.rpush("other", "x", "y")
    for consumer in consumers:
        consumer.join(5)
        assert consumer.error is None and len(consumer.got) == 1


def test_bounded_queue_waits_for_room(make_app: Any) -> None:
    client = get_redis(make_app().app.registry)
    queue = MessageQueue(client, "bounded", max_length=2)
    queue.put("a")
    queue.put("b")
    started = time.monotonic()
    with pytest.raises(
        QueueFull, match=re.escape("queue 'bounded' still full (2 messages) after 0.2 s")
    ):
        queue.put("c", timeout=0.2)
    assert time.monotonic() - started >= 0.2
    threading.Timer(0.2, queue.get, kwargs={"timeout": 1}).start()
    queue.put("c", timeout=3)  # room made by the consumer
    assert client.lrange("bounded", 0, -1) == [b"b", b"c"]


def test_get_without_a_timeout_waits_as_long_as_it_takes(make_app: Any) -> None:
    """``get()`` (no timeout) outlasts a second: BLPOP's 0 is "forever"."""
    client = get_redis(make_app().app.registry)
    queue = MessageQueue(client, "later")
    threading.Timer(1.3, queue.put, args=("late",)).start()
    started = time.monotonic()
    assert queue.get() == b"late"
    assert time.monotonic() - started >= 1.2


def test_get_on_a_stalled_server_fails_within_its_wait_and_the_socket_timeout(
    make_app: Any, redis_server_factory: Any
) -> None:
    """The server stops answering: ``get(timeout=0.2)`` gives up after its wait plus the
    connection's socket timeout (0.3 s), as any command does."""
    server = redis_server_factory()
    app = make_app(url=server.url, socket_timeout="0.3", retries="0")
    queue = MessageQueue(get_redis(app.app.registry), "q")
    queue.put("warm")
    assert queue.get(timeout=1) == b"warm"  # a pooled connection that answered
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            queue.get(timeout=0.2)
        assert 0.45 <= time.monotonic() - started < 2.0
    finally:
        server.resume()


def test_max_length_one_and_below(make_app: Any) -> None:
    client = get_redis(make_app().app.registry)
    with pytest.raises(ValueError, match=re.escape("max_length must be at least 1, not 0")):
        MessageQueue(client, "none", max_length=0)
    queue = MessageQueue(client, "one", max_length=1)
    queue.put("a")
    with pytest.raises(QueueFull):
        queue.put("b", timeout=0.1)
    assert client.lrange("one", 0, -1) == [b"a"]
