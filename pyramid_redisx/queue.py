"""A message queue on a Redis list (after baseplate's ``MessageQueue``).

Producers ``put`` (RPUSH) from views; consumers ``get`` (BLPOP) in workers. A blocking
``get`` holds one connection of the client's pool for as long as it waits, so give
consumers a client of their own (``redis.clients = queue`` with, for instance,
``redis.queue.max_connections = 4``): its pool is separate from the one views use, and
a blocked consumer can never leave a view waiting for a connection.

The wait may be longer than the client's ``socket_timeout`` (2 s by default): ``get``
reads its one reply with a read timeout that covers the wait, on that connection and
for that reply only; every other command keeps the pool's timeout.
"""

from __future__ import annotations

import time
from typing import Any

# Atomic "push unless full" for bounded queues: 1 if pushed, 0 if full.
_PUSH_BOUNDED = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""
_FULL_POLL = 0.05  # seconds between tries of a put on a full bounded queue


class QueueEmpty(Exception):
    """``get`` found no message within its timeout."""


class QueueFull(Exception):
    """``put`` found a bounded queue full for its whole timeout."""


class MessageQueue:
    """A FIFO of byte messages in the Redis list ``name``.

    ``max_length`` bounds the queue: ``put`` then waits (up to its timeout) for room.
    ``client`` is any client of the app (``get_redis(registry, "queue")`` in a worker,
    ``get_redis(request)`` in a view, where ``put`` is counted for the request).
    """

    def __init__(self, client: Any, name: str, max_length: int | None = None) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {max_length!r}")
        self.client = client
        self.name = name
        self.max_length = max_length

    def put(self, message: bytes | str, timeout: float | None = None) -> None:
        """Append ``message``. On a full bounded queue, wait up to ``timeout`` seconds
        for room (``None``: as long as it takes), then raise ``QueueFull``."""
        if self.max_length is None:
            self.client.rpush(self.name, message)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.client.eval(_PUSH_BOUNDED, 1, self.name, message, self.max_length):
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueFull(
                    f"queue {self.name!r} still full ({self.max_length} messages) "
                    f"after {timeout:g} s"
                )
            time.sleep(_FULL_POLL)

    def get(self, timeout: float | None = None) -> bytes:
        """The oldest message, waiting up to ``timeout`` seconds (``None``: forever) for
        one; ``QueueEmpty`` when none came. Always bytes, whatever ``decode_responses``."""
        wait = 0 if timeout is None else max(timeout, 0.001)
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command("BLPOP", self.name, wait)
            # The server answers when the wait is over: give the read that long, plus
            # the connection's own timeout for the answer to arrive. None: no limit.
            margin = connection.socket_timeout or 0
            reply = connection.read_response(
                disable_decoding=True, timeout=None if timeout is None else wait + margin
            )
        finally:
            pool.release(connection)
        if reply is None:
            raise QueueEmpty(f"queue {self.name!r}: no message within {timeout:g} s")
        return bytes(reply[1])

    def close(self) -> None:
        """Delete the queue and the messages still in it."""
        self.client.delete(self.name)

    def __len__(self) -> int:
        return int(self.client.llen(self.name))
