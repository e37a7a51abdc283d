"""The asyncio clients of get_async_redis share the circuit of the sync client of their
name, on real servers: a server killed or behind a black hole, what a command sees (how
fast, which error), what the proxy in front of the server saw, what was logged.

Fixtures and helpers are test_breaker's (the sync circuit): the same proxy, settings,
view and probes of the breaker's state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from pyramid_redisx import RedisCircuitOpen, get_async_redis, get_redis
from pyramid_redisx.aio import close_async_redis
from pyramid_redisx.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from tests.reliability.blackhole import Blackhole
from tests.test_breaker import (
    FAST,
    DeadBehindProxy,
    breaker,
    call,
    get_view,
    warnings_of,
)
from tests.test_breaker import dead_behind_proxy as dead_behind_proxy  # a fixture
from tests.test_breaker import proxy as proxy  # the fixture

Outcome = tuple[float, str]


async def timed(command: Awaitable[Any]) -> Outcome:
    """(seconds, outcome) of an async command: its reply, or the exception's name."""
    started = time.perf_counter()
    try:
        outcome = repr(await command)
    except redis.RedisError as error:
        outcome = type(error).__name__
    return time.perf_counter() - started, outcome


def run(app: Any, use: Callable[[Any], Awaitable[Any]]) -> Any:
    """``use(client)`` with app's async default client, in a new event loop."""
    registry = app.app.registry

    async def main() -> Any:
        try:
            return await use(get_async_redis(registry))
        finally:
            await close_async_redis(registry)

    return asyncio.run(main())


def async_gets(app: Any, count: int) -> list[Outcome]:
    """``count`` GETs one after the other, each timed."""

    async def use(client: Any) -> list[Outcome]:
        return [await timed(client.get("k")) for _ in range(count)]

    return run(app, use)  # type: ignore[no-any-return]


def proxied(make_app: Any, proxy: Blackhole, **settings: Any) -> Any:
    return make_app({"/": get_view}, url=f"redis://{proxy.address}/0", **{**FAST, **settings})


# ------------------------------------------------------------------ open
def test_opens_on_a_killed_server_then_fails_at_once_without_the_network(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed server (connections refused): after breaker_failures failures the next
    commands raise RedisCircuitOpen at once. The server restarted on its port meanwhile
    (the circuit still open for its cooldown) receives no connection from them."""
    caplog.set_level(logging.INFO, logger="pyramid_redisx")
    server = redis_server_factory()
    app = make_app(url=server.url, breaker_failures="3", breaker_cooldown="30", **FAST)
    assert [o for _, o in async_gets(app, 1)] == ["None"]
    server.stop()  # SIGKILL

    async def use(client: Any) -> tuple[list[Outcome], list[Outcome], list[Outcome]]:
        failing = [await timed(client.get("k")) for _ in range(3)]
        fast = [await timed(client.get("k")) for _ in range(50)]
        server.start()  # back on its port, while the circuit is open
        with server.client(single_connection_client=True) as admin:
            received = admin.info("stats")["total_connections_received"]
            after = [await timed(client.get("k")) for _ in range(20)]
            assert admin.info("stats")["total_connections_received"] == received
        return failing, fast, after

    failing, fast, after = run(app, use)
    assert {outcome for _, outcome in failing} == {"ConnectionError"}, failing
    assert breaker(app).state == OPEN
    assert {outcome for _, outcome in fast + after} == {"RedisCircuitOpen"}
    fast.sort()
    # median, and slowest: far below a try's socket_connect_timeout (0.3 s)
    assert fast[25][0] < 0.005 and fast[-1][0] < 0.05, fast[-3:]
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and "circuit open: 3 failures in a row" in warnings[0]


def test_a_refused_probe_reopens_the_circuit_for_a_whole_cooldown(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The server still down when the cooldown ends: one command probes (refused, tried
    once), the circuit opens again, and the commands right after fail at once without
    probing again; the reopening is not logged as a new outage."""
    caplog.set_level(logging.INFO, logger="pyramid_redisx")
    server = redis_server_factory()
    app = make_app(url=server.url, breaker_failures="2", breaker_cooldown="0.3", **FAST)
    assert [o for _, o in async_gets(app, 1)] == ["None"]
    server.stop()  # SIGKILL: connections refused

    async def use(client: Any) -> tuple[Outcome, str, list[Outcome]]:
        while breaker(app).state != OPEN:
            await timed(client.get("k"))
        await asyncio.sleep(0.35)
        probe = await timed(client.get("k"))
        state = breaker(app).state
        return probe, state, [await timed(client.get("k")) for _ in range(5)]

    probe, state, right_after = run(app, use)
    assert probe[1] == "ConnectionError"
    assert state == OPEN
    assert [o for _, o in right_after] == ["RedisCircuitOpen"] * 5
    assert all(s < 0.05 for s, _ in right_after), right_after
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and "circuit open" in warnings[0], warnings


def test_opens_behind_a_black_hole_in_breaker_failures_timeouts(
    make_app: Any, proxy: Blackhole
) -> None:
    """Each failure waits out the socket timeout (0.3 s); once open, a command fails in
    well under it."""
    app = proxied(make_app, proxy, breaker_failures="2", breaker_cooldown="30")
    assert [o for _, o in async_gets(app, 1)] == ["None"]
    proxy.blackhole()
    outcomes = async_gets(app, 4)
    slow, fast = outcomes[:2], outcomes[2:]
    assert [o for _, o in slow] == ["TimeoutError"] * 2 and all(s >= 0.25 for s, _ in slow)
    assert [o for _, o in fast] == ["RedisCircuitOpen"] * 2 and all(s < 0.05 for s, _ in fast)


def test_the_error_is_the_sync_ones(make_app: Any, redis_server_factory: Any) -> None:
    dead = redis_server_factory()
    dead.stop()
    app = make_app({"/": get_view}, url=dead.url, breaker_failures="1", breaker_cooldown="30",
                   **FAST)  # fmt: skip

    async def use(client: Any) -> tuple[RedisCircuitOpen, Any]:
        with pytest.raises(redis.ConnectionError, match=f"connecting to 127.0.0.1:{dead.port}"):
            await client.get("k")
        with pytest.raises(RedisCircuitOpen) as raised:
            await client.get("k")
        return raised.value, get_redis(app.app.registry)

    error, sync = run(app, use)
    with pytest.raises(RedisCircuitOpen) as from_sync:
        sync.get("k")
    assert isinstance(error, redis.ConnectionError)
    assert error.client == from_sync.value.client == "'default'"
    assert f"127.0.0.1:{dead.port}" in str(error) and "Error 111" in error.cause
    assert 29 < error.next_probe_seconds <= 30


def test_off_when_breaker_failures_is_zero(make_app: Any, redis_server_factory: Any) -> None:
    dead = redis_server_factory()
    dead.stop()
    app = make_app(url=dead.url, breaker_failures="0", **FAST)
    assert {o for _, o in async_gets(app, 8)} == {"ConnectionError"}
    assert breaker(app).state == "off"


# ------------------------------------------------------------------ one circuit, two kinds
def test_sync_failures_open_it_for_async_commands(make_app: Any, proxy: Blackhole) -> None:
    app = proxied(make_app, proxy, breaker_failures="2", breaker_cooldown="30")
    assert call(app)[1] == "None"
    proxy.blackhole()
    assert [call(app)[1] for _ in range(2)] == ["TimeoutError"] * 2
    assert breaker(app).state == OPEN
    accepted = proxy.accepted
    outcomes = async_gets(app, 5)
    assert {o for _, o in outcomes} == {"RedisCircuitOpen"}
    assert max(s for s, _ in outcomes) < 0.05, outcomes
    assert proxy.accepted == accepted


def test_async_failures_open_it_for_requests(make_app: Any, proxy: Blackhole) -> None:
    app = proxied(make_app, proxy, breaker_failures="2", breaker_cooldown="30")
    assert call(app)[1] == "None"
    proxy.blackhole()
    assert [o for _, o in async_gets(app, 2)] == ["TimeoutError"] * 2
    assert breaker(app).state == OPEN
    accepted = proxy.accepted
    outcomes = [call(app) for _ in range(5)]  # request.redis, through webtest
    assert {o for _, o in outcomes} == {"RedisCircuitOpen"}
    assert max(s for s, _ in outcomes) < 0.05, outcomes
    assert proxy.accepted == accepted


# ------------------------------------------------------------------ half-open
def test_half_open_lets_one_task_probe_then_closes(
    make_app: Any, proxy: Blackhole, caplog: pytest.LogCaptureFixture
) -> None:
    """20 tasks at once after the cooldown: one probes (and waits out the timeout), 19
    fail at once. Healed: one probe succeeds and closes the circuit, logged once."""
    caplog.set_level(logging.INFO, logger="pyramid_redisx")
    app = proxied(make_app, proxy, breaker_failures="2", breaker_cooldown="0.4",
                  max_connections="32")  # fmt: skip
    proxy.blackhole()

    async def use(client: Any) -> tuple[list[Outcome], int, list[Outcome], list[Outcome]]:
        while breaker(app).state != OPEN:
            await timed(client.get("k"))
        await asyncio.sleep(0.45)
        accepted = proxy.accepted
        held = await asyncio.gather(*(timed(client.get("k")) for _ in range(20)))
        probed = proxy.accepted - accepted
        assert breaker(app).state == OPEN  # the probe failed: open for another cooldown
        proxy.heal()
        for _ in range(5):  # a loaded machine can time a probe's connect out (0.3 s):
            await asyncio.sleep(0.45)  # the next probe comes after another cooldown
            back = await asyncio.gather(*(timed(client.get("k")) for _ in range(20)))
            if breaker(app).state == CLOSED:
                break
        after = [await timed(client.get("k")) for _ in range(5)]
        return held, probed, back, after

    held, probed, back, after = run(app, use)
    probes = [o for o in held if o[1] != "RedisCircuitOpen"]
    assert len(probes) == 1 and probes[0][1] == "TimeoutError", held
    assert probes[0][0] >= 0.25  # it waited socket_timeout: the only one that did
    assert all(s < 0.25 for s, o in held if o == "RedisCircuitOpen"), held
    assert probed <= 1  # the probe's connection, nothing else
    assert sorted(o for _, o in back) == ["None"] + ["RedisCircuitOpen"] * 19
    assert {o for _, o in after} == {"None"}
    assert breaker(app).state == CLOSED
    warnings = warnings_of(caplog)
    assert len(warnings) == 2, warnings  # one per state change: open, then closed
    assert "circuit open" in warnings[0] and "circuit closed: the probe succeeded" in warnings[1]


def test_a_task_and_a_thread_never_probe_at_once(make_app: Any, proxy: Blackhole) -> None:
    """After each cooldown a sync request and an async command start together: one of
    them is the probe (it times out), the other fails at once."""
    app = proxied(make_app, proxy, breaker_failures="1", breaker_cooldown="0.3")
    sync = get_redis(app.app.registry)
    proxy.blackhole()
    for _ in range(3):
        while breaker(app).state != OPEN:
            call(app)
        time.sleep(0.35)
        accepted = proxy.accepted
        barrier = threading.Barrier(2)
        outcomes: list[Outcome] = []

        def from_thread(
            barrier: threading.Barrier = barrier, outcomes: list[Outcome] = outcomes
        ) -> None:
            barrier.wait()
            started = time.perf_counter()
            try:
                outcome = repr(sync.get("k"))
            except redis.RedisError as error:
                outcome = type(error).__name__
            outcomes.append((time.perf_counter() - started, outcome))

        async def from_task(client: Any, barrier: threading.Barrier = barrier) -> Outcome:
            barrier.wait()
            return await timed(client.get("k"))

        thread = threading.Thread(target=from_thread)
        thread.start()
        outcomes.append(run(app, from_task))
        thread.join(5)
        assert sorted(o for _, o in outcomes) == ["RedisCircuitOpen", "TimeoutError"], outcomes
        assert proxy.accepted - accepted <= 1


def test_a_probe_belongs_to_its_task() -> None:
    """The breaker itself: a task in the probe passes (its nested connect), another task
    of the same thread, or the thread's own sync calls, do not."""
    gate = Breaker(1, 0.01, "redis://127.0.0.1:1/0")
    gate.failed(redis.ConnectionError("Error 111 connecting. Connection refused."))
    assert gate.state == OPEN
    time.sleep(0.02)

    async def main() -> None:
        first = asyncio.create_task(asyncio.sleep(0))
        second = asyncio.create_task(asyncio.sleep(0))
        assert gate.enter(first) is True and gate.state == HALF_OPEN
        assert gate.enter(first) is False  # inside its own probe
        for other in (second, None):  # another task; this thread's sync call
            with pytest.raises(RedisCircuitOpen):
                gate.enter(other)
        with pytest.raises(RedisCircuitOpen):  # a sync checkout on the loop's thread
            gate.check()
        gate.succeeded(False, first)  # a nested call's success does not decide
        assert gate.state == HALF_OPEN
        gate.succeeded(True, first)
        assert gate.state == CLOSED and not gate.dirty
        await asyncio.gather(first, second)

    asyncio.run(main())


# ------------------------------------------------------------------ what counts
def test_error_replies_never_count(make_app: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory()
    app = make_app(url=server.url, breaker_failures="2", **FAST)

    async def use(client: Any) -> list[Outcome]:
        await client.lpush("list", "x")
        return [await timed(client.get("list")) for _ in range(6)]

    outcomes = run(app, use)
    assert {o for _, o in outcomes} == {"ResponseError"}  # WRONGTYPE, from the server
    assert breaker(app).state == CLOSED and not breaker(app).dirty


def test_a_success_clears_the_count(make_app: Any, redis_server_factory: Any) -> None:
    """Failures must come in a row: one async failure, then a success, then another
    failure leaves the circuit closed with breaker_failures 2."""
    server = redis_server_factory()
    app = make_app(url=server.url, breaker_failures="2", **FAST)

    async def use(client: Any) -> list[str]:
        seen = []
        for _ in range(3):
            await client.connection_pool.disconnect()
            server.stop()
            seen.append((await timed(client.get("k")))[1])
            server.start()
            seen.append((await timed(client.get("k")))[1])
        return seen

    assert run(app, use) == ["ConnectionError", "None"] * 3
    assert breaker(app).state == CLOSED and not breaker(app).dirty


@pytest.mark.parametrize("retries", ["0", "1", "3"])
def test_opens_behind_a_proxy_whose_server_is_down(
    make_app: Any, dead_behind_proxy: DeadBehindProxy, retries: str
) -> None:
    """As the sync clients (test_breaker): a connect that a proxy accepts is no success
    until the server answers, so retries do not keep the circuit closed."""
    app = make_app(url=f"redis://127.0.0.1:{dead_behind_proxy.port}/0", breaker_failures="3",
                   breaker_cooldown="30", **{**FAST, "retries": retries})  # fmt: skip
    outcomes = [outcome for _, outcome in async_gets(app, 3)]
    failed = outcomes.count("ConnectionError")
    assert outcomes == ["ConnectionError"] * failed + ["RedisCircuitOpen"] * (3 - failed)
    assert failed >= 1 and breaker(app).state == OPEN, (outcomes, breaker(app).failures)
    accepted = dead_behind_proxy.accepted
    assert {outcome for _, outcome in async_gets(app, 10)} == {"RedisCircuitOpen"}
    assert dead_behind_proxy.accepted == accepted
