"""``sentinel.SwitchListener`` of one's own (the process's ``LISTENER`` is made at import,
where no mutant of its ``__init__`` runs): its ``stop()`` does not wait for a Sentinel
that stalls; a Sentinel that is down is tried again once a second, each time said at
DEBUG. The rest of its life is in tests/topology/test_sentinel.py."""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Any

import pytest

from pyramid_redisx.request import get_redis
from pyramid_redisx.sentinel import POLL, RECONNECT_PAUSE, SwitchListener

from .test_breaker import DeadBehindProxy


def test_stop_does_not_wait_for_a_stalled_sentinel(make_app: Any) -> None:
    """The listener's thread is stuck subscribing to a Sentinel that accepts and never
    answers (5 s socket timeout): ``stop()`` returns after at most two polls."""
    stalled = socket.create_server(("127.0.0.1", 0))  # never accept()s: the kernel does
    app = make_app(url="redis://nowhere.invalid:1/0",
                   sentinels=f"127.0.0.1:{stalled.getsockname()[1]}",
                   sentinel_service="mymaster", sentinel_listener="false", socket_timeout="5",
                   socket_connect_timeout="5", startup_check="false")  # fmt: skip
    listener = SwitchListener()
    try:
        listener.watch(get_redis(app.app.registry).connection_pool)
        time.sleep(0.3)  # subscribing: waiting for the stalled Sentinel's reply
        started = time.monotonic()
        listener.stop()
        assert time.monotonic() - started < 2 * POLL + 0.5
    finally:
        stalled.close()


def test_a_sentinel_that_is_down_is_tried_again_once_a_second(
    redis_server_factory: Any, sentinel_for: Any, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two Sentinels, the first dead behind a proxy (it accepts, then closes): the
    listener tries it every ``RECONNECT_PAUSE`` (1 s), not at every poll, and says why
    at DEBUG, word for word; the live one is followed meanwhile."""
    master = redis_server_factory()
    live = sentinel_for(master.port)
    dead = DeadBehindProxy()
    app = make_app(url="redis://nowhere.invalid:1/0",
                   sentinels=f"127.0.0.1:{dead.port} 127.0.0.1:{live}",
                   sentinel_service="mymaster", sentinel_listener="false")  # fmt: skip
    listener = SwitchListener()
    caplog.set_level(logging.DEBUG, logger="pyramid_redisx.sentinel")
    try:
        before = dead.accepted
        listener.watch(get_redis(app.app.registry).connection_pool)
        time.sleep(2.6 * RECONNECT_PAUSE)  # tries at 0, 1 and 2 s
        tries = dead.accepted - before
    finally:
        listener.stop()
        dead.close()
    assert 2 <= tries <= 4, tries  # every 0.5 s poll would be 5 or 6
    said = [r.getMessage() for r in caplog.records if "cannot subscribe" in r.getMessage()]
    assert len(said) == tries
    assert all(
        re.fullmatch(rf"cannot subscribe to \+switch-master on Sentinel 127\.0\.0\.1:"
                     rf"{dead.port}: .*onnection.*", message) for message in said
    ), said  # fmt: skip
