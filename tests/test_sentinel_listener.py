"""``sentinel.SwitchListener`` of one's own (the process's ``LISTENER`` is made at import,
where no mutant of its ``__init__`` runs): its ``stop()`` does not wait for a Sentinel
that stalls. The rest of its life is in tests/topology/test_sentinel.py."""

from __future__ import annotations

import socket
import time
from typing import Any

from pyramid_redisx.request import get_redis
from pyramid_redisx.sentinel import POLL, SwitchListener


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
