"""``request.redis_tm``: Redis writes that follow the request's transaction (pyramid_tm).

Commands given to ``request.redis_tm`` are queued, not sent. When pyramid_tm commits the
request's transaction they go to Redis as one MULTI/EXEC; when it aborts (the view
raised, the transaction was doomed, a commit veto) they are dropped. The EXEC runs in the
vote phase, after every other data manager (SQLAlchemy...) has voted, so a failing
database commit drops the Redis writes too; a failed EXEC aborts the whole transaction
with ``RedisTransactionError``. Redis has no rollback: once EXEC has run, an error in a
later phase of another data manager cannot undo it.

The property is registered by ``includeme`` and costs nothing until a view reads it; it
needs ``config.include("pyramid_tm")``. This module imports neither ``transaction`` nor
``pyramid_tm``: the core install does not need them.
"""

from __future__ import annotations

import re
from typing import Any

from redis.exceptions import ExecAbortError, RedisError

from .request import NEEDS_PYRAMID_TM, get_redis
from .settings import DEFAULT_CLIENT

# request.__dict__ key: {client name: (pipeline, the transaction it has joined)}
_PIPELINES = "_pyramid_redisx_tm"
_ANNOTATION = re.compile(r"^Command # (\d+) \(.*?\) of pipeline caused error: ", re.S)


class RedisTransactionError(RedisError):
    """The MULTI/EXEC of ``request.redis_tm`` failed; the transaction was aborted."""


def request_redis_tm(request: Any) -> Any:
    """Body of the ``request.redis_tm`` property (the ``default`` client)."""
    return get_redis_tm(request, DEFAULT_CLIENT)


def get_redis_tm(request: Any, name: str = DEFAULT_CLIENT) -> Any:
    """The transaction-bound pipeline of client ``name`` for ``request`` (one per name).

    It joins the request's current transaction when asked for in it the first time: a
    view that commits early (``request.tm.commit()``, ``request.tm.begin()``) gets the same
    pipeline, joined to the new transaction, so what it queues next goes out at the next
    commit instead of being dropped.
    """
    pipelines = request.__dict__.setdefault(_PIPELINES, {})
    manager = getattr(request, "tm", None)
    if manager is None:
        raise RuntimeError(NEEDS_PYRAMID_TM)
    current = manager.get()
    pipeline, joined = pipelines.get(name, (None, None))
    if pipeline is None:
        pipeline = get_redis(request, name).pipeline(transaction=True)
    if joined is not current:
        current.join(RedisDataManager(pipeline, manager, name))
        pipelines[name] = (pipeline, current)
    return pipeline


class RedisDataManager:
    """A ``transaction`` data manager that sends a queued pipeline as MULTI/EXEC."""

    def __init__(self, pipeline: Any, transaction_manager: Any, name: str) -> None:
        self.pipeline = pipeline
        self.transaction_manager = transaction_manager
        self.name = name

    def sortKey(self) -> str:
        # After every other data manager ("~" sorts after letters; zope.sqlalchemy
        # uses "~sqlalchemy:"): EXEC only once the others have voted.
        return f"~~pyramid_redisx:{self.name}"

    def abort(self, transaction: Any) -> None:
        self.pipeline.reset()

    def tpc_begin(self, transaction: Any) -> None:
        pass

    def commit(self, transaction: Any) -> None:
        pass

    def tpc_vote(self, transaction: Any) -> None:
        count = len(self.pipeline.command_stack)
        if not count:
            return
        try:
            self.pipeline.execute()
        except RedisError as exc:
            raise RedisTransactionError(_describe(self.name, count, exc)) from None

    def tpc_finish(self, transaction: Any) -> None:
        self.pipeline.reset()

    def tpc_abort(self, transaction: Any) -> None:
        self.pipeline.reset()

    def savepoint(self) -> _Savepoint:
        return _Savepoint(self.pipeline)


class _Savepoint:
    """Rolling back drops the commands queued since the savepoint."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.length = len(pipeline.command_stack)

    def rollback(self) -> None:
        del self.pipeline.command_stack[self.length :]


def _describe(name: str, count: int, exc: RedisError) -> str:
    """The error message; command arguments (values) are left out.

    redis-py raises a command's queuing error in place of EXECABORT (the ExecAbortError
    is then its context): Redis ran nothing. Any other error came from EXEC's replies.
    """
    text = str(exc)
    match = _ANNOTATION.match(text)
    number = f"command #{match.group(1)}: " if match else ""
    refused = isinstance(exc, ExecAbortError) or isinstance(exc.__context__, ExecAbortError)
    what = (
        "Redis refused the transaction, nothing was applied"
        if refused
        else "Redis applied the other commands (it has no rollback)"
    )
    return (
        f"request.redis_tm (client {name!r}): MULTI/EXEC of {count} commands failed, "
        f"the transaction is aborted; {what}: {number}{type(exc).__name__}: "
        f"{_ANNOTATION.sub('', text)}"
    )
