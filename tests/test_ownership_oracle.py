"""redis-py as the oracle of ``request.redis`` (issue 24): a ``hypothesis.stateful``
machine runs the same random program twice and compares every step and the end state.

- **ours**: ``request.redis`` inside real requests of a Pyramid app (with pyramid_tm, for
  ``request.redis_tm``). One view runs the steps it is sent, one by one, in the request's
  own thread (the WSGI call, made through webtest in a runner thread); ``end_request``
  lets the view return, and the next step starts a new request.
- **theirs**: a plain module-global ``redis.Redis`` on a ``BlockingConnectionPool`` with the
  same timeouts, retry count and backoff (``tests.ownership_helpers.plain_client``).

Each runs against its own real server, so a kill or a concurrent write hits both alike.
Steps: GET/SET/INCR/DEL on three keys; up to three pipelines open at once, with and
without WATCH, their steps interleaved (watch, read, multi, queue, execute, reset, and
dropping one in a reference cycle); ``transaction()``; ``client()`` and its pipeline;
``redis_tm``, committed by ``request.tm.commit()`` in the view or at the request's end; commands, pipelines and transactions in a helper thread (joined); threads
that outlive their request (a BLPOP, a WATCH transaction finished later); another
client's write to a key; ``CLIENT KILL TYPE normal SKIPME yes``; the garbage collector run
in another thread while the view reads. Every step's result (value or exception class)
and, at the end, every key's value must match.

Intended differences, mirrored on the plain side or kept out (each also in a comment
below): the end of a request resets the pipelines its view left open (plain redis-py
keeps them until they are collected), and a kill never lands while a BLPOP is in flight
(redis-py sends a BLPOP again after a lost connection; the add-on never re-sends a
command that can change data).

By default it runs ``RUNS``: 100 programs of every kind of step, then shorter runs of
programs made of the few kinds each defect needs. ``OWNERSHIP_ORACLE_EXAMPLES`` makes it one
run of that many programs; ``OWNERSHIP_ORACLE_SHRINK=0`` reports a failing program as found
instead of shrinking it (minutes); ``OWNERSHIP_ORACLE_FEATURES`` (comma-separated, default all)
restricts the step kinds, to aim at one defect: command, pipeline, watch, transaction,
client, tm, thread, background, write, kill, gc.
"""

from __future__ import annotations

import gc
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import webtest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_redisx.request import client_set
from pyramid_redisx.testing import RedisServer
from tests.ownership_helpers import app_settings, attempt, frozen_heap, outcome, plain_client

STEPS = 30  # steps per program at most
ALL_FEATURES = "command pipeline watch transaction client tm thread background write kill gc errors"
# The runs of the test command: every kind of step together, then programs made of the few
# kinds each defect of issue 24 needs (a defect put back alone was found by these in the
# number of programs docs/guide/usage.rst gives; among all kinds it can hide for hundreds).
RUNS: dict[str, tuple[str, int]] = {
    "all": (ALL_FEATURES, 100),
    "watch": ("pipeline watch write command", 50),  # 1: two WATCHes, MULTI/EXEC inside one
    "watch-transaction": ("pipeline watch transaction write command", 50),
    "watch-client": ("client pipeline watch write command", 40),  # 1: client()'s pipeline
    "watch-tm": ("tm pipeline watch write command", 40),  # 1: redis_tm committed inside
    "kill": ("pipeline watch kill write command", 50),  # 2, 7: reconnects, idle closes
    "threads": ("background thread watch write command", 50),  # 3, 4: threads
    "gc": ("pipeline watch gc command", 40),  # 5: a collected WATCH pipeline
    # error replies: a key made a list, then read or incremented as a string (WRONGTYPE),
    # in commands, pipelines and transactions, with and without ``raise_on_error``
    "errors": ("pipeline transaction client command errors", 40),
}
if os.environ.get("OWNERSHIP_ORACLE_FEATURES") or os.environ.get("OWNERSHIP_ORACLE_EXAMPLES"):
    RUNS = {  # one run, as the environment says
        "env": (
            os.environ.get("OWNERSHIP_ORACLE_FEATURES") or ALL_FEATURES,
            int(os.environ.get("OWNERSHIP_ORACLE_EXAMPLES", "100")),
        )
    }
KEYS = ("a", "b", "c")
MAX_PIPES = 3
QUEUE_KEY = "q"  # the background BLPOP's list, kept apart from KEYS
BLPOP_TIMEOUT = 1.5  # seconds; under the 2 s socket timeout
STEP_TIMEOUT = 10.0  # a step that takes longer is a hang: the example fails
# Shrinking a failure replays it many times (minutes when steps wait on timeouts):
# OWNERSHIP_ORACLE_SHRINK=0 reports the first failing program as found.
SHRINK = os.environ.get("OWNERSHIP_ORACLE_SHRINK", "1") != "0"


def enabled(*features: str) -> Callable[[Any], bool]:
    return lambda machine: all(feature in machine.features for feature in features)


# ---------------------------------------------------------------- the two sides


class Ctx:
    """What a step runs against. Subclasses say where ``redis`` and ``redis_tm`` come
    from; ``pipes`` are the open pipelines of the current request, by handle."""

    def __init__(self) -> None:
        self.pipes: dict[int, Any] = {}

    @property
    def redis(self) -> Any:
        raise NotImplementedError

    @property
    def redis_tm(self) -> Any:
        raise NotImplementedError


class RequestCtx(Ctx):
    """``request.redis``, read where the step (or its thread) runs: a thread handed the
    request reads it itself, as a view handing ``request`` to a thread does."""

    def __init__(self, request: Any) -> None:
        super().__init__()
        self.request = request

    @property
    def redis(self) -> Any:
        return self.request.redis

    @property
    def redis_tm(self) -> Any:
        return self.request.redis_tm


class PlainCtx(Ctx):
    """The module-global plain client; ``redis_tm`` is a transaction pipeline executed
    at the end of the "request", as pyramid_tm's commit does."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__()
        self.client = client
        self.tm: Any = None
        # Pipelines the program dropped in a cycle: reset at the "request's" end if still
        # alive, as the add-on does with whatever a view left open (intended difference:
        # plain redis-py keeps them until the garbage collector runs).
        self.dropped: list[weakref.ref[Any]] = []

    @property
    def redis(self) -> Any:
        return self.client

    @property
    def redis_tm(self) -> Any:
        if self.tm is None:
            self.tm = self.client.pipeline(transaction=True)
        return self.tm


Step = Callable[[Ctx], Any]
END = object()


class Side:
    """One run of the program: the servers it talks to, and its background threads."""

    name = ""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.admin = server.client()
        self.background: dict[str, dict[str, Any]] = {}

    def run(self, step: Step) -> Any:
        raise NotImplementedError

    def end_request(self) -> Any:
        raise NotImplementedError

    def state(self) -> dict[bytes, Any]:
        """Every key's value (strings and the BLPOP list)."""
        found: dict[bytes, Any] = {}
        for key in sorted(self.admin.keys("*")):
            kind = self.admin.type(key)
            found[key] = self.admin.lrange(key, 0, -1) if kind == b"list" else self.admin.get(key)
        return found


class AppSide(Side):
    """Steps inside real requests: a runner thread makes the WSGI call; the view takes
    steps from the request's inbox and answers on its outbox until told to end."""

    name = "request.redis"

    def __init__(self, server: RedisServer, app: webtest.TestApp) -> None:
        super().__init__(server)
        self.app = app
        self.current: dict[str, Any] | None = None

    @staticmethod
    def view(request: Any) -> Response:
        inbox, outbox = request.environ["oracle.inbox"], request.environ["oracle.outbox"]
        ctx = RequestCtx(request)
        while True:
            step = inbox.get()
            if step is END:
                return Response("ended")
            outbox.put(attempt(lambda step=step: step(ctx)))

    def _start(self) -> dict[str, Any]:
        current: dict[str, Any] = {"inbox": queue.Queue(), "outbox": queue.Queue()}
        environ = {"oracle.inbox": current["inbox"], "oracle.outbox": current["outbox"]}

        def call() -> None:
            try:
                self.app.get("/run", extra_environ=environ)
                current["result"] = "ok"
            except Exception as exc:  # noqa: BLE001 - compared (pyramid_tm's commit failed)
                current["result"] = f"failed: {type(exc).__name__}"

        current["thread"] = threading.Thread(target=call, name="oracle-request", daemon=True)
        current["thread"].start()
        return current

    def run(self, step: Step) -> Any:
        if self.current is None:
            self.current = self._start()
        if not self.current["thread"].is_alive():
            return "the request ended by itself"
        self.current["inbox"].put(step)
        try:
            return self.current["outbox"].get(timeout=STEP_TIMEOUT)
        except queue.Empty:
            return "hung"

    def end_request(self) -> Any:
        current, self.current = self.current, None
        if current is None:
            return "no request"
        current["inbox"].put(END)
        current["thread"].join(STEP_TIMEOUT)
        return "ok" if current.get("result") == "ok" else "failed"


class PlainSide(Side):
    name = "redis-py"

    def __init__(self, server: RedisServer, client: redis.Redis) -> None:
        super().__init__(server)
        self.client = client
        self.ctx = PlainCtx(client)

    def run(self, step: Step) -> Any:
        return attempt(lambda: step(self.ctx))

    def end_request(self) -> Any:
        ctx = self.ctx
        result = "ok"
        if ctx.tm is not None:  # pyramid_tm commits before the request's end resets
            if isinstance(attempt(ctx.tm.execute), str):
                result = "failed"
            ctx.tm = None
        for pipe in ctx.pipes.values():
            pipe.reset()
        for dropped in ctx.dropped:
            pipe = dropped()
            if pipe is not None:
                pipe.reset()
        self.ctx = PlainCtx(self.client)
        return result


# ---------------------------------------------------------------- steps (run on both sides)


def write(client: Any, op: str, key: str, value: int) -> Any:
    if op == "LPUSH":  # a list where the other steps expect a string: WRONGTYPE replies
        return client.lpush(key, value)
    if op == "GET":
        return client.get(key)
    if op == "SET":
        return client.set(key, value)
    if op == "INCR":
        return client.incr(key)
    return client.delete(key)


def increment(key: str) -> Callable[[Any], None]:
    """A ``transaction()`` body: read the key under WATCH, then write it + 1."""

    def body(pipe: Any) -> None:
        value = pipe.get(key)
        pipe.multi()
        pipe.set(key, int(value or 0) + 1)

    return body


def execute(pipe: Any) -> Any:
    """``pipe.execute()``: a watching pipeline without MULTI and with nothing queued sends
    nothing, and returns ``[]`` on both sides even when its connection died meanwhile."""
    return attempt(pipe.execute)


def in_thread(ctx: Ctx, work: Callable[[Any], Any]) -> Any:
    """Run ``work(ctx.redis)`` in a new thread that reads ``ctx.redis`` itself; joined."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(attempt(lambda: work(ctx.redis))))
    thread.start()
    thread.join(STEP_TIMEOUT)
    return result[0] if result else "hung"


THREAD_WORK: dict[str, Callable[[str], Callable[[Any], Any]]] = {
    "command": lambda key: lambda r: r.incr(key),
    "pipeline": lambda key: lambda r: r.pipeline(transaction=False).incr(key).get(key).execute(),
    "multi": lambda key: lambda r: r.pipeline().incr(key).get(key).execute(),
    "transaction": lambda key: lambda r: r.transaction(increment(key), key),
}


def blocked_on_blpop(admin: redis.Redis) -> bool:
    return any(client.get("cmd") == "blpop" for client in admin.client_list())


# ---------------------------------------------------------------- the machine


class OwnershipMachine(RuleBasedStateMachine):
    """Each rule runs one step on both sides and compares the outcomes."""

    programs = 0  # programs begun in this process: the failure message says which

    def __init__(self, ours: Side, theirs: Side, features: frozenset[str]) -> None:
        self.features = features  # before super().__init__: preconditions read it
        super().__init__()
        OwnershipMachine.programs += 1
        self.program = OwnershipMachine.programs
        self.failed = False
        self.ours, self.theirs = ours, theirs
        self.handles: list[int] = []  # open pipelines of the current request
        self.next_handle = 0
        self.dropped = 0
        self.tm_queued = False
        self.background: set[str] = set()

    def sides(self) -> tuple[Side, Side]:
        return self.ours, self.theirs

    def both(self, what: str, step: Step) -> Any:
        ours = self.ours.run(step)
        theirs = self.theirs.run(step)
        self.compare(what, ours, theirs)
        return ours

    def both_sided(self, what: str, step: Callable[[Ctx, Side], Any]) -> Any:
        """``both`` for a step that needs its side (its server, its background threads)."""
        ours = self.ours.run(lambda ctx: step(ctx, self.ours))
        theirs = self.theirs.run(lambda ctx: step(ctx, self.theirs))
        self.compare(what, ours, theirs)
        return ours

    def compare(self, what: str, ours: Any, theirs: Any) -> None:
        if ours != theirs:
            self.failed = True
            raise AssertionError(
                f"{what}: request.redis gave {ours!r}, redis-py {theirs!r} "
                f"(program {self.program} of this run)"
            )

    @initialize()
    def clean(self) -> None:
        for side in self.sides():
            side.admin.flushall()

    # -- plain commands

    @precondition(enabled("command"))
    @rule(
        op=st.sampled_from(["GET", "SET", "INCR", "DEL"]),
        key=st.sampled_from(KEYS),
        value=st.integers(0, 9),
    )
    def command(self, op: str, key: str, value: int) -> None:
        self.both(f"{op} {key}", lambda ctx: write(ctx.redis, op, key, value))

    # -- pipelines, several open at once

    @precondition(lambda self: enabled("pipeline")(self) and len(self.handles) < MAX_PIPES)
    @rule(transaction=st.booleans())
    def open_pipeline(self, transaction: bool) -> None:
        handle = self.next_handle
        self.next_handle += 1
        self.handles.append(handle)

        def step(ctx: Ctx) -> Any:
            ctx.pipes[handle] = ctx.redis.pipeline(transaction=transaction)
            return handle

        self.both(f"pipe{handle} = pipeline(transaction={transaction})", step)

    def pipe(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(self.handles), label="pipeline")

    def on_pipe(self, data: st.DataObject, what: str, action: Callable[[Any], Any]) -> None:
        handle = self.pipe(data)
        self.both(f"pipe{handle}.{what}", lambda ctx: action(ctx.pipes[handle]))

    @precondition(lambda self: enabled("pipeline", "watch")(self) and bool(self.handles))
    @rule(data=st.data(), key=st.sampled_from(KEYS))
    def pipe_watch(self, data: st.DataObject, key: str) -> None:
        self.on_pipe(data, f"watch({key!r})", lambda pipe: pipe.watch(key))

    @precondition(lambda self: enabled("pipeline")(self) and bool(self.handles))
    @rule(data=st.data(), key=st.sampled_from(KEYS))
    def pipe_read(self, data: st.DataObject, key: str) -> None:
        # immediate while watching (before MULTI), else queued
        self.on_pipe(data, f"get({key!r})", lambda pipe: pipe.get(key))

    @precondition(lambda self: enabled("pipeline")(self) and bool(self.handles))
    @rule(data=st.data())
    def pipe_multi(self, data: st.DataObject) -> None:
        self.on_pipe(data, "multi()", lambda pipe: pipe.multi())

    @precondition(lambda self: enabled("pipeline")(self) and bool(self.handles))
    @rule(
        data=st.data(),
        op=st.sampled_from(["SET", "INCR", "DEL"]),
        key=st.sampled_from(KEYS),
        value=st.integers(0, 9),
    )
    def pipe_queue(self, data: st.DataObject, op: str, key: str, value: int) -> None:
        self.on_pipe(data, f"{op.lower()}({key!r})", lambda pipe: write(pipe, op, key, value))

    @precondition(lambda self: enabled("pipeline")(self) and bool(self.handles))
    @rule(data=st.data())
    def pipe_execute(self, data: st.DataObject) -> None:
        self.on_pipe(data, "execute()", execute)

    @precondition(lambda self: enabled("pipeline", "errors")(self) and bool(self.handles))
    @rule(data=st.data())
    def pipe_execute_keeping_errors(self, data: st.DataObject) -> None:
        self.on_pipe(
            data, "execute(raise_on_error=False)", lambda p: p.execute(raise_on_error=False)
        )

    @precondition(enabled("errors"))
    @rule(key=st.sampled_from(KEYS), value=st.integers(0, 9))
    def list_push(self, key: str, value: int) -> None:
        self.both(f"LPUSH {key}", lambda ctx: write(ctx.redis, "LPUSH", key, value))

    @precondition(lambda self: enabled("pipeline", "errors")(self) and bool(self.handles))
    @rule(data=st.data(), key=st.sampled_from(KEYS), value=st.integers(0, 9))
    def pipe_list_push(self, data: st.DataObject, key: str, value: int) -> None:
        self.on_pipe(data, f"lpush({key!r})", lambda pipe: write(pipe, "LPUSH", key, value))

    @precondition(lambda self: enabled("pipeline")(self) and bool(self.handles))
    @rule(data=st.data())
    def pipe_reset(self, data: st.DataObject) -> None:
        self.on_pipe(data, "reset()", lambda pipe: pipe.reset())

    @precondition(
        lambda self: enabled("pipeline", "gc")(self) and bool(self.handles) and self.dropped < 3
    )
    @rule(data=st.data())
    def pipe_drop_in_cycle(self, data: st.DataObject) -> None:
        """Drop a pipeline in a reference cycle (``except E as exc: error = exc`` makes
        one): only the garbage collector frees it, in whatever thread it runs."""
        handle = self.pipe(data)
        self.handles.remove(handle)
        self.dropped += 1

        def step(ctx: Ctx) -> Any:
            pipe = ctx.pipes.pop(handle)
            pipe.cycle = pipe
            if isinstance(ctx, PlainCtx):  # the add-on's request end resets it if alive
                ctx.dropped.append(weakref.ref(pipe))
            return None

        self.both(f"drop pipe{handle} in a cycle", step)

    @precondition(enabled("gc"))
    @rule()
    def collect_while_reading(self) -> None:
        """The garbage collector runs once in another thread (finalizing what was dropped
        in a cycle) while the view reads the keys again and again: each key must read one
        value all along."""

        def step(ctx: Ctx) -> Any:
            done = threading.Event()

            def collector() -> None:
                try:
                    gc.collect()
                finally:
                    done.set()

            seen: dict[str, set[Any]] = {key: set() for key in KEYS}
            thread = threading.Thread(target=collector)
            thread.start()
            try:
                while True:  # at least one round, then until the collection is over
                    for key in KEYS:
                        seen[key].add(attempt(lambda key=key: ctx.redis.get(key)))
                    if done.is_set():
                        break
            finally:
                thread.join()
            return {key: sorted(values, key=repr) for key, values in seen.items()}

        self.both("GETs while gc runs in another thread", step)

    # -- transactions, client(), redis_tm

    @precondition(enabled("transaction"))
    @rule(key=st.sampled_from(KEYS))
    def transaction(self, key: str) -> None:
        self.both(
            f"transaction(+1 on {key})", lambda ctx: ctx.redis.transaction(increment(key), key)
        )

    @precondition(enabled("client"))
    @rule(key=st.sampled_from(KEYS))
    def client_and_pipeline(self, key: str) -> None:
        def step(ctx: Ctx) -> Any:
            with ctx.redis.client() as single:
                return single.incr(key), single.pipeline().incr(key).get(key).execute()

        self.both(f"client(): incr {key}, pipeline incr+get", step)

    # After an explicit commit, request.redis_tm joins the new transaction: what it
    # queues goes out at the next commit (the plain side starts a new pipeline).
    @precondition(enabled("tm"))
    @rule(op=st.sampled_from(["SET", "INCR"]), key=st.sampled_from(KEYS), value=st.integers(0, 9))
    def redis_tm(self, op: str, key: str, value: int) -> None:
        self.tm_queued = True
        self.both(
            f"redis_tm.{op.lower()}({key!r})", lambda ctx: write(ctx.redis_tm, op, key, value)
        )

    @precondition(lambda self: enabled("tm")(self) and self.tm_queued)
    @rule()
    def tm_commit(self) -> None:
        """pyramid_tm's commit in the middle of the view (``request.tm.commit()`` then
        ``begin()``): the queued redis_tm commands go out as one MULTI/EXEC."""
        self.tm_queued = False

        def step(ctx: Ctx) -> Any:
            if isinstance(ctx, RequestCtx):
                try:
                    ctx.request.tm.commit()
                except Exception:
                    # as a view that handles a failed commit (an error reply in the
                    # MULTI/EXEC) and goes on: a fresh transaction, as the plain side's
                    # new pipeline (else pyramid_tm fails the request at its end)
                    ctx.request.tm.abort()
                    raise
                finally:
                    ctx.request.tm.begin()
            else:
                assert isinstance(ctx, PlainCtx)
                tm, ctx.tm = ctx.tm, None
                tm.execute()
            return "committed"

        self.both(
            "request.tm.commit()",
            lambda ctx: "committed" if attempt(lambda: step(ctx)) == "committed" else "failed",
        )

    # -- threads

    @precondition(enabled("thread"))
    @rule(kind=st.sampled_from(sorted(THREAD_WORK)), key=st.sampled_from(KEYS))
    def helper_thread(self, kind: str, key: str) -> None:
        work = THREAD_WORK[kind](key)
        self.both(f"in a thread (joined): {kind} on {key}", lambda ctx: in_thread(ctx, work))

    @precondition(lambda self: enabled("background")(self) and "blpop" not in self.background)
    @rule()
    def background_blpop(self) -> None:
        """A thread handed the request runs a BLPOP that may outlive the request."""
        self.background.add("blpop")

        def step(ctx: Ctx, side: Side) -> Any:
            record: dict[str, Any] = {}

            def worker() -> None:
                record["result"] = attempt(
                    lambda: ctx.redis.blpop([QUEUE_KEY], timeout=BLPOP_TIMEOUT)
                )

            record["thread"] = threading.Thread(target=worker, daemon=True)
            record["thread"].start()
            side.background["blpop"] = record
            deadline = time.monotonic() + 5
            while not blocked_on_blpop(side.admin) and time.monotonic() < deadline:
                time.sleep(0.005)
            return "started"

        self.both_sided("a thread starts BLPOP", step)

    @precondition(lambda self: "blpop" in self.background)
    @rule()
    def background_blpop_ends(self) -> None:
        self.background.discard("blpop")
        results = []
        for side in self.sides():
            side.admin.rpush(QUEUE_KEY, "pushed")
            record = side.background.pop("blpop")
            record["thread"].join(STEP_TIMEOUT)
            result = record.get("result", "hung")
            # Popped, or timed out first (a slow step): either is right; drain the list.
            if result in ((QUEUE_KEY.encode(), b"pushed"), None):
                result = "popped or timed out"
            side.admin.delete(QUEUE_KEY)
            results.append(result)
        self.compare("the thread's BLPOP", *results)

    @precondition(lambda self: enabled("background", "watch")(self) and "tx" not in self.background)
    @rule(key=st.sampled_from(KEYS), queued=st.booleans())
    def background_transaction(self, key: str, queued: bool) -> None:
        """A thread handed the request WATCHes ``key`` (and, if ``queued``, runs MULTI and
        queues an INCR) and waits; ``background_transaction_ends`` lets it EXEC."""
        self.background.add("tx")

        def step(ctx: Ctx, side: Side) -> Any:
            record: dict[str, Any] = {"go": threading.Event()}
            ready = threading.Event()

            def worker() -> None:
                try:
                    pipe = ctx.redis.pipeline()
                    record["watch"] = attempt(lambda: pipe.watch(key))
                    if queued:
                        pipe.multi()
                        pipe.incr(key)
                    ready.set()
                    record["go"].wait(STEP_TIMEOUT)
                    if not queued:
                        pipe.multi()
                        pipe.incr(key)
                    record["result"] = attempt(pipe.execute)
                finally:
                    ready.set()

            record["thread"] = threading.Thread(target=worker, daemon=True)
            record["thread"].start()
            side.background["tx"] = record
            ready.wait(STEP_TIMEOUT)
            return record.get("watch")

        self.both_sided(f"a thread: watch {key}{', multi, incr' if queued else ''}", step)

    @precondition(lambda self: "tx" in self.background)
    @rule()
    def background_transaction_ends(self) -> None:
        self.background.discard("tx")
        results = []
        for side in self.sides():
            record = side.background.pop("tx")
            record["go"].set()
            record["thread"].join(STEP_TIMEOUT)
            results.append(record.get("result", "hung"))
        self.compare("the thread's EXEC", *results)

    # -- the world outside the request

    @precondition(enabled("write"))
    @rule(key=st.sampled_from(KEYS), value=st.integers(0, 9))
    def concurrent_write(self, key: str, value: int) -> None:
        """Another client writes a key (between two steps of the request)."""
        for side in self.sides():
            side.admin.set(key, value)

    # A kill while a BLPOP is in flight is left out: redis-py sends the BLPOP again on a
    # new connection; the add-on does not re-send a command that can change data
    # (docs: write safety). Both are right; the list's content would differ.
    @precondition(lambda self: enabled("kill")(self) and "blpop" not in self.background)
    @rule()
    def kill_connections(self) -> None:
        """``CLIENT KILL TYPE normal SKIPME yes``: the server drops every connection."""
        for side in self.sides():
            side.admin.client_kill_filter(_type="normal", skipme=True)
        time.sleep(0.02)  # the FINs reach the clients' sockets

    @rule()
    def end_request(self) -> None:
        self.handles.clear()
        self.dropped = 0
        self.tm_queued = False
        ours, theirs = self.ours.end_request(), self.theirs.end_request()
        if ours != "no request":  # else nothing ran in it: nothing to compare
            self.compare("end of request (pyramid_tm's commit)", ours, theirs)

    def teardown(self) -> None:
        """Let background threads finish, end the request, compare every key. After a
        failed step only the clean-up runs: that failure is the one reported."""
        already_failed = self.failed
        errors: list[AssertionError] = []
        finishing = [
            *([self.background_blpop_ends] if "blpop" in self.background else []),
            *([self.background_transaction_ends] if "tx" in self.background else []),
            self.end_request,
        ]
        for finish in finishing:
            try:
                finish()
            except AssertionError as error:
                errors.append(error)
        for side in self.sides():  # what a failed comparison left behind
            for record in side.background.values():
                record.get("go", threading.Event()).set()
                side.admin.rpush(QUEUE_KEY, "pushed")
                record["thread"].join(STEP_TIMEOUT)
            side.background.clear()
        gc.collect()
        if already_failed:
            return
        if errors:
            raise errors[0]
        self.compare("every key at the end", self.ours.state(), self.theirs.state())


def with_tm(config: Configurator) -> None:
    config.include("pyramid_tm")
    config.add_route("run", "/run")
    config.add_view(AppSide.view, route_name="run")


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    """The programs' ``gc.collect()`` scan only what they made (``frozen_heap``)."""
    with frozen_heap():
        yield


@pytest.fixture
def oracle_sides(redis_server_factory: Any) -> Iterator[tuple[AppSide, PlainSide]]:
    """Two servers: one for the app, one for plain redis-py."""
    ours_server, theirs_server = redis_server_factory(), redis_server_factory()
    config = Configurator(
        settings={
            f"redis.{key}": value
            for key, value in app_settings(max_connections="32", url=ours_server.url).items()
        }
    )
    config.include("pyramid_redisx")
    with_tm(config)
    app = webtest.TestApp(config.make_wsgi_app())
    plain = plain_client(theirs_server.url, max_connections=32)
    ours, theirs = AppSide(ours_server, app), PlainSide(theirs_server, plain)
    try:
        yield ours, theirs
    finally:
        ours.end_request()
        client_set(app.app.registry).close()
        plain.connection_pool.disconnect()
        for side in (ours, theirs):
            side.admin.close()


@pytest.mark.slow
@pytest.mark.timeout(900)  # shrinking a failure takes minutes
@pytest.mark.parametrize("run", sorted(RUNS))
def test_request_redis_behaves_as_redis_py(
    oracle_sides: tuple[AppSide, PlainSide], run: str
) -> None:
    ours, theirs = oracle_sides
    kinds, examples = RUNS[run]
    features = frozenset(kinds.replace(",", " ").split())
    run_state_machine_as_test(
        lambda: OwnershipMachine(ours, theirs, features),
        settings=settings(
            max_examples=examples,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,  # no replay between runs: each run's count of examples is honest
            phases=[
                Phase.explicit,
                Phase.reuse,
                Phase.generate,
                *([Phase.shrink] if SHRINK else []),
            ],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.slow
def test_the_machine_is_deterministic(redis_server_factory: Any) -> None:
    """Plain redis-py against plain redis-py (two servers): the machine itself finds no
    difference, so every difference it reports is the add-on's."""
    sides = []
    for _ in range(2):
        server = redis_server_factory()
        sides.append(PlainSide(server, plain_client(server.url, max_connections=32)))
    try:
        run_state_machine_as_test(
            lambda: OwnershipMachine(*sides, frozenset(ALL_FEATURES.split())),
            settings=settings(
                max_examples=int(os.environ.get("OWNERSHIP_ORACLE_SELF_EXAMPLES", "15")),
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        for side in sides:
            side.client.connection_pool.disconnect()
            side.admin.close()


def test_outcome_compares_values_and_errors() -> None:
    """The comparison itself: values as values, errors by class, pipelines as queued."""
    assert outcome([b"1", redis.WatchError("x")]) == (b"1", "WatchError")
    assert attempt(lambda: 1 / 0) == "ZeroDivisionError"
