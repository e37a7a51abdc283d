"""request.redis_tm with the real pyramid_tm and transaction packages."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from pyramid.config import Configurator

from pyramid_redisx import get_redis
from pyramid_redisx.tm import RedisTransactionError, get_redis_tm

PASSWORD_LIKE = "value-that-must-not-show-7731"


def with_tm(config: Configurator) -> None:
    config.include("pyramid_tm")


class Recorder:
    """A second data manager (as a database would be): records how the transaction ended."""

    def __init__(self, manager: Any) -> None:
        self.transaction_manager = manager
        self.events: list[str] = []

    def sortKey(self) -> str:
        return "recorder"

    def abort(self, txn: Any) -> None:
        self.events.append("abort")

    def tpc_begin(self, txn: Any) -> None:
        self.events.append("begin")

    def commit(self, txn: Any) -> None:
        pass

    def tpc_vote(self, txn: Any) -> None:
        self.events.append("vote")

    def tpc_finish(self, txn: Any) -> None:
        self.events.append("finish")

    def tpc_abort(self, txn: Any) -> None:
        self.events.append("tpc_abort")


def test_commit_sends_one_multi_exec(make_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    seen: dict[str, Any] = {}

    def view(request: Any) -> str:
        request.redis_tm.set("a", "1")
        request.redis_tm.incr("n")
        seen["during"] = get_redis(request.registry).exists("a", "n")  # not sent yet
        return "ok"

    app = make_app({"/": view}, with_tm)
    caplog.set_level(logging.DEBUG, logger="pyramid_redisx.stats")
    app.get("/")
    client = get_redis(app.app.registry)
    assert seen["during"] == 0
    assert client.mget("a", "n") == [b"1", b"1"]
    lines = [r for r in caplog.records if r.name == "pyramid_redisx.stats"]
    assert [(r.redis_commands, r.redis_slowest.split(":")[0]) for r in lines] == [(2, "MULTI")]  # type: ignore[attr-defined]


def test_abort_by_a_raising_view_drops_the_commands(make_app: Any) -> None:
    def view(request: Any) -> str:
        request.redis_tm.set("a", "1")
        raise ValueError("view failed")

    app = make_app({"/": view}, with_tm)
    with pytest.raises(ValueError, match="view failed"):
        app.get("/")
    assert get_redis(app.app.registry).exists("a") == 0
    assert app.get("/nothing", status=404)  # the app still serves (nothing left held)


def test_a_refused_exec_aborts_the_transaction(make_app: Any) -> None:
    recorders: list[Recorder] = []

    def view(request: Any) -> str:
        recorder = Recorder(request.tm)
        request.tm.get().join(recorder)
        recorders.append(recorder)
        request.redis_tm.set("a", PASSWORD_LIKE)
        request.redis_tm.execute_command("SET", "only-a-key")  # wrong arity: EXECABORT
        return "ok"

    app = make_app({"/": view}, with_tm)
    with pytest.raises(RedisTransactionError) as raised:
        app.get("/")
    message = str(raised.value)
    assert message.startswith(
        "request.redis_tm (client 'default'): MULTI/EXEC of 2 commands failed, the "
        "transaction is aborted; Redis refused the transaction, nothing was applied: "
        "command #2: ResponseError: wrong number of arguments"
    ), message
    assert PASSWORD_LIKE not in message and raised.value.__cause__ is None
    # The other data manager voted first (EXEC runs last), then was aborted.
    assert recorders[0].events[:3] == ["begin", "vote", "tpc_abort"]
    assert "finish" not in recorders[0].events
    assert get_redis(app.app.registry).exists("a") == 0


def test_a_failing_command_in_exec_is_reported(make_app: Any) -> None:
    def view(request: Any) -> str:
        request.redis_tm.set("a", "1")
        request.redis_tm.lpush("a", PASSWORD_LIKE)  # WRONGTYPE at EXEC time
        return "ok"

    app = make_app({"/": view}, with_tm)
    with pytest.raises(RedisTransactionError) as raised:
        app.get("/")
    message = str(raised.value)
    assert re.search(
        r"aborted; Redis applied the other commands \(it has no rollback\): "
        r"command #2: ResponseError: WRONGTYPE",
        message,
    ), message
    assert PASSWORD_LIKE not in message


def test_without_pyramid_tm_a_clear_error(make_app: Any) -> None:
    def view(request: Any) -> str:
        request.redis_tm.set("a", "1")
        return "sent"

    app = make_app({"/": view, "/repr": lambda request: repr(request.redis_tm)})
    with pytest.raises(RuntimeError, match=re.escape("request.redis_tm needs pyramid_tm")):
        app.get("/")
    assert app.get("/repr").text == "<request.redis_tm: needs pyramid_tm>"  # says so too


def test_savepoint_rollback_drops_later_commands(make_app: Any) -> None:
    def view(request: Any) -> str:
        request.redis_tm.set("kept", "1")
        savepoint = request.tm.savepoint()
        request.redis_tm.set("dropped", "1")
        savepoint.rollback()
        return "ok"

    app = make_app({"/": view}, with_tm)
    app.get("/")
    assert get_redis(app.app.registry).exists("kept", "dropped") == 1


def test_redis_tm_after_an_explicit_commit_joins_the_next_transaction(make_app: Any) -> None:
    """A view that commits early (``request.tm.commit()`` then ``begin()``, as
    pyramid_tm's docs show) and queues more: the later commands go out at the next
    commit, not dropped (found by tests/test_ownership_oracle.py)."""

    def view(request: Any) -> str:
        request.redis_tm.set("first", "1")
        request.tm.commit()
        request.tm.begin()
        request.redis_tm.set("second", "2")
        return "ok"

    app = make_app({"/": view}, with_tm)
    assert app.get("/").text == "ok"
    assert get_redis(app.app.registry).mget("first", "second") == [b"1", b"2"]


def test_a_named_clients_transaction_pipeline(make_app: Any, redis_url: str) -> None:
    """``get_redis_tm(request, "cache")``: the cache client's MULTI/EXEC (its database),
    committed with the request; without pyramid_tm, the same clear error as
    ``request.redis_tm``."""

    def view(request: Any) -> str:
        get_redis_tm(request, "cache").set("named", "1")
        return "ok"

    cache_url = redis_url.rsplit("/", 1)[0] + "/3"
    app = make_app({"/": view}, with_tm, clients="cache", **{"cache.url": cache_url})
    assert app.get("/").text == "ok"
    assert get_redis(app.app.registry, "cache").get("named") == b"1"
    assert get_redis(app.app.registry).get("named") is None  # not the default's database
    bare = make_app({"/": view}, clients="cache", **{"cache.url": cache_url})
    with pytest.raises(RuntimeError, match=re.escape("request.redis_tm needs pyramid_tm")):
        bare.get("/")
