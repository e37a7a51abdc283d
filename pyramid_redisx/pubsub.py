"""PubSub on the add-on's clients: a subscription the server dropped raises, never resumes
silently.

redis-py's ``PubSub`` reads and sends through its connection's retry policy; its failure
callback reconnects and subscribes again. With the policy our pools give every connection
(``redis.retries``, 3 by default) a subscription cut by the server (a restart, ``CLIENT
KILL``, a network cut) came back without a sign, and what was published in between was
lost without anyone knowing. redis-py's default policy (no retry) raises
``ConnectionError`` instead, after one try to reconnect and re-subscribe. These pubsubs,
sync and asyncio, do the same while subscribed: the caller learns that messages may have
been missed, and the next ``get_message``/``listen`` call goes on with the subscription
already renewed (its confirmation comes first). Before the first subscription nothing can
be lost, and the client's retries apply as to any command.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio.client
import redis.asyncio.retry
import redis.client
import redis.retry
from redis.backoff import NoBackoff


class _WithoutRetry:
    """A connection as ``PubSub._execute`` sees it, with redis-py's default policy (no
    retry: one failure callback, which reconnects and re-subscribes, then the error);
    everything else is the connection's own."""

    __slots__ = ("_connection", "retry")

    def __init__(self, connection: Any, retry: Any) -> None:
        self._connection = connection
        self.retry = retry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


_SYNC = redis.retry.Retry(NoBackoff(), 0)  # what redis.Connection takes without retry=
_ASYNC = redis.asyncio.retry.Retry(NoBackoff(), 0)


class SubscribedPubSub(redis.client.PubSub):
    """``redis.client.PubSub`` whose subscriptions are not resumed behind the caller's back."""

    def _execute(self, conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        if self.subscribed:
            conn = _WithoutRetry(conn, _SYNC)
        return super()._execute(conn, command, *args, **kwargs)


class SubscribedAsyncPubSub(redis.asyncio.client.PubSub):
    """``redis.asyncio.client.PubSub`` with the same rule."""

    async def _execute(self, conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        if self.subscribed:
            conn = _WithoutRetry(conn, _ASYNC)
        return await super()._execute(conn, command, *args, **kwargs)
