"""The circuit breaker on real servers: a server killed, stalled, or behind a black hole.

Each test breaks a real server (or the loopback proxy in front of it) and asserts what a
view sees: how fast it fails, with which error and message, what the server (or the
proxy) saw, what was logged, and that the app recovers by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis._parsers.base import BaseParser

from pyramid_redisx import RedisCircuitOpen, get_redis
from pyramid_redisx.breaker import CLOSED, OPEN, breaker_of, is_reply, unreachable
from pyramid_redisx.errors import CommandMayHaveBeenApplied, PoolExhausted
from tests.loopback_proxy import LoopbackProxy, close_sockets, relay
from tests.reliability.blackhole import Blackhole

FAST = {
    "socket_timeout": "0.3",
    "socket_connect_timeout": "0.3",
    "retries": "1",
    "startup_check": "false",
    "max_connections": "16",
}
SECRET = "br34ker-s3cret"


@pytest.fixture
def proxy(redis_server: Any) -> Iterator[Blackhole]:
    hole = Blackhole(("127.0.0.1", redis_server.port)).start()
    try:
        yield hole
    finally:
        hole.close()


def get_view(request: Any) -> str:
    return repr(request.redis.get("k"))


def call(app: Any, path: str = "/") -> tuple[float, str]:
    """(seconds, outcome): the body, or the name of the exception the view raised."""
    started = time.perf_counter()
    try:
        outcome = app.get(path).text
    except redis.RedisError as error:
        outcome = type(error).__name__
    return time.perf_counter() - started, outcome


def breaker(app: Any) -> Any:
    return breaker_of(get_redis(app.app.registry).connection_pool)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pyramid_redisx.breaker" and r.levelno >= logging.WARNING
    ]


# ------------------------------------------------------------------ what counts
@pytest.mark.parametrize(
    "reply",
    [
        f"{code} {message}".strip()
        for code, entry in BaseParser.EXCEPTION_CLASSES.items()
        for message in (entry if isinstance(entry, dict) else {"3999 127.0.0.1:6381": None})
    ],
)
def test_no_error_reply_counts_as_unreachable(reply: str) -> None:
    """Every reply redis-py knows, including those it types as ConnectionError
    (LOADING, WRONGPASS, NOAUTH, max number of clients reached), parsed by redis-py."""
    error = BaseParser.parse_error(reply)
    assert not unreachable(error), (reply, type(error))
    if isinstance(error, redis.ConnectionError):
        assert is_reply(error)


def test_what_counts() -> None:
    assert unreachable(redis.ConnectionError("Error 111 connecting to h:1. Connection refused."))
    assert unreachable(redis.TimeoutError("Timeout reading from socket"))
    assert unreachable(CommandMayHaveBeenApplied("INCR may have been applied: ..."))
    assert not unreachable(RedisCircuitOpen("'default'", "redis://h:1/0", "-", 1.0, 0.5))
    assert not unreachable(PoolExhausted("redis client default: no free connection"))
    assert not unreachable(redis.ConnectionError("The previous master is now a slave"))
    assert not unreachable(redis.ResponseError("WRONGTYPE Operation against a key"))
    assert not unreachable(ValueError("not redis"))
    # redis-py 8.1: a Cluster topology refresh that reached no node (8.2 raises
    # RedisClusterUnreachableError), raised from the last node's own error
    refresh = redis.RedisClusterException("Redis Cluster cannot be connected. Please ...")
    refresh.__cause__ = redis.TimeoutError("Timeout reading from socket")
    assert unreachable(refresh)
    assert not unreachable(redis.RedisClusterException("startup_nodes could not agree"))


def test_error_replies_of_a_live_server_never_open_it(
    make_app: Any, redis_server_factory: Any
) -> None:
    """WRONGTYPE, a wrong password (AuthenticationError, a ConnectionError) and "max
    number of clients reached" (also a ConnectionError), each far more often than
    breaker_failures: the circuit stays closed."""
    server = redis_server_factory()

    def wrongtype(request: Any) -> str:
        request.redis.lpush("list", "x")
        return repr(request.redis.get("list"))

    app = make_app({"/": wrongtype}, url=server.url, breaker_failures="2", **FAST)
    for _ in range(6):
        assert call(app)[1] == "ResponseError"
    assert breaker(app).state == CLOSED

    with server.client() as admin:
        admin.config_set("requirepass", SECRET)
        try:
            wrong = make_app({"/": get_view}, url=f"redis://:nope@127.0.0.1:{server.port}/0",
                             breaker_failures="2", **FAST)  # fmt: skip
            for _ in range(6):
                assert call(wrong)[1] == "AuthenticationError"
            assert breaker(wrong).state == CLOSED
        finally:
            with redis.Redis(port=server.port, password=SECRET) as authed:
                authed.config_set("requirepass", "")

    with server.client(single_connection_client=True) as admin:
        admin.ping()  # this connection is the one client allowed
        admin.config_set("maxclients", "1")
        try:
            full = make_app({"/": get_view}, url=server.url, breaker_failures="2", **FAST)
            outcomes = {call(full)[1] for _ in range(6)}
            assert breaker(full).state == CLOSED, outcomes
            assert outcomes <= {"MaxClientsReachedError", "ConnectionError"}
        finally:
            admin.config_set("maxclients", "10000")


# ------------------------------------------------------------------ open
def test_opens_after_failures_in_a_row_then_fails_at_once_without_the_network(
    make_app: Any, proxy: Blackhole, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyramid_redisx")
    app = make_app({"/": get_view}, url=f"redis://{proxy.address}/0", breaker_failures="3",
                   breaker_cooldown="30", **FAST)  # fmt: skip
    assert call(app)[1] == "None"
    proxy.blackhole()
    failures = [call(app) for _ in range(3)]
    assert [outcome for _, outcome in failures] == ["TimeoutError"] * 3
    assert all(0.25 < seconds < 1.5 for seconds, _ in failures), failures
    assert breaker(app).state == OPEN
    accepted = proxy.accepted
    fast = sorted(call(app) for _ in range(50))
    assert {outcome for _, outcome in fast} == {"RedisCircuitOpen"}
    # median, and slowest: below socket_timeout (0.3 s), so no call waited on the network
    # (a loaded 2-core machine stalls a process for 100 ms now and then)
    assert fast[25][0] < 0.005 and fast[-1][0] < 0.25, fast[-3:]
    assert proxy.accepted == accepted  # no connection was even attempted
    assert len(warnings_of(caplog)) == 1
    assert "circuit open: 3 failures in a row" in warnings_of(caplog)[0]


def test_the_error_names_client_url_cause_and_times_never_the_password(
    make_app: Any, redis_server_factory: Any
) -> None:
    dead = redis_server_factory()
    dead.stop()
    app = make_app({"/": get_view}, clients="cache",
                   url=f"redis://:{SECRET}@127.0.0.1:{dead.port}/0",
                   breaker_failures="2", breaker_cooldown="30", **FAST)  # fmt: skip
    client = get_redis(app.app.registry)
    for _ in range(2):
        with pytest.raises(redis.ConnectionError, match="Connection refused"):
            client.get("k")
    with pytest.raises(RedisCircuitOpen) as raised:
        client.get("k")
    error = raised.value
    text = str(error)
    assert isinstance(error, redis.ConnectionError)  # existing except clauses keep working
    assert error.client == "'default', 'cache'"  # equal options: one pool, one circuit
    assert f"redis://:***@127.0.0.1:{dead.port}/0" in text
    assert "Connection refused" in error.cause and error.cause in text
    assert 0 <= error.open_seconds < 5 and 29 < error.next_probe_seconds <= 30
    assert "circuit open for" in text and "next probe in" in text
    shown = "".join(traceback.format_exception(error)) + repr(error)
    assert SECRET not in shown


def test_a_retry_loop_stops_as_soon_as_the_circuit_opens(
    make_app: Any, redis_server_factory: Any
) -> None:
    """retries 12 with pauses up to 0.25 s would hold the command ~2.5 s against a
    refused port; the circuit opens (other requests failing) after ~0.2 s: it stops."""
    dead = redis_server_factory()
    dead.stop()
    app = make_app(url=dead.url, retries="12", retry_backoff_cap="0.25",
                   startup_check="false", breaker_failures="2", breaker_cooldown="30")  # fmt: skip
    client = get_redis(app.app.registry)
    seen: list[Any] = []

    def command() -> None:
        started = time.perf_counter()
        try:
            client.get("k")
        except redis.RedisError as error:
            seen.append((time.perf_counter() - started, error))

    thread = threading.Thread(target=command)
    thread.start()
    time.sleep(0.2)
    opened_at = time.perf_counter()
    for _ in range(2):  # what two other requests' failures would report
        breaker(app).failed(redis.ConnectionError("Error 111 connecting. Connection refused."))
    assert breaker(app).state == OPEN
    thread.join(10)
    ((seconds, error),) = seen
    assert type(error) is redis.ConnectionError  # its own failure, not RedisCircuitOpen
    assert time.perf_counter() - opened_at < 0.5 and seconds < 1.0, seconds


# ------------------------------------------------------------------ half-open
def test_half_open_lets_one_probe_through_at_a_time(make_app: Any, proxy: Blackhole) -> None:
    app = make_app({"/": get_view}, url=f"redis://{proxy.address}/0", breaker_failures="2",
                   breaker_cooldown="0.4", **FAST)  # fmt: skip
    assert call(app)[1] == "None"
    proxy.blackhole()
    while breaker(app).state != OPEN:
        call(app)
    time.sleep(0.45)
    accepted = proxy.accepted
    barrier = threading.Barrier(8)
    outcomes: list[tuple[float, str]] = []

    def one() -> None:
        barrier.wait()
        outcomes.append(call(app))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    probes = [o for o in outcomes if o[1] != "RedisCircuitOpen"]
    assert len(probes) == 1 and probes[0][1] == "TimeoutError", outcomes
    assert probes[0][0] >= 0.25  # it waited socket_timeout: the only one that did
    assert all(seconds < 0.25 for seconds, outcome in outcomes if outcome == "RedisCircuitOpen")
    assert proxy.accepted - accepted <= 1  # the probe's connection, nothing else
    assert breaker(app).state == OPEN  # the probe failed: open for another cooldown

    proxy.heal()
    time.sleep(0.45)
    assert call(app)[1] == "None"  # the probe: it succeeds and closes the circuit
    assert breaker(app).state == CLOSED
    assert {call(app)[1] for _ in range(5)} == {"None"}


def test_recovers_by_itself_after_a_restart_within_the_cooldown(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()
    app = make_app({"/": get_view}, url=server.url, breaker_failures="3",
                   breaker_cooldown="0.5", **FAST)  # fmt: skip
    caplog.set_level(logging.INFO, logger="pyramid_redisx")
    assert call(app)[1] == "None"
    server.stop()
    outcomes = [call(app) for _ in range(100)]
    assert [o for _, o in outcomes[3:]] == ["RedisCircuitOpen"] * 97
    time.sleep(1.2)  # two probes fail meanwhile (or none: no request came)
    server.start()
    back = time.perf_counter()
    while call(app)[1] != "None":
        time.sleep(0.005)
        assert time.perf_counter() - back < 5, "no recovery"
    recovered = time.perf_counter() - back
    assert recovered <= 0.5 + 0.1 + 0.2, recovered  # cooldown + 100 ms, + a loaded machine
    assert breaker(app).state == CLOSED
    warnings = warnings_of(caplog)
    assert len(warnings) == 2, warnings  # one per state change: open, then closed
    assert "circuit open" in warnings[0] and "circuit closed" in warnings[1]


def test_a_forked_child_starts_closed(make_app: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory()
    app = make_app({"/": get_view}, url=server.url, breaker_failures="2",
                   breaker_cooldown="30", **FAST)  # fmt: skip
    server.stop()
    while breaker(app).state != OPEN:
        call(app)
    server.start()
    assert call(app)[1] == "RedisCircuitOpen"  # the parent's circuit: open for 30 s
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.write(write_end, f"{breaker(app).state} {call(app)[1]}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        reported = pipe.read()
    os.waitpid(pid, 0)
    assert reported == "closed None"
    assert call(app)[1] == "RedisCircuitOpen"  # the parent's is its own


def test_off_when_breaker_failures_is_zero(make_app: Any, redis_server_factory: Any) -> None:
    dead = redis_server_factory()
    dead.stop()
    app = make_app({"/": get_view}, url=dead.url, breaker_failures="0", **FAST)
    assert {call(app)[1] for _ in range(10)} == {"ConnectionError"}
    assert breaker(app).state == "off"


class DeadBehindProxy:
    """A proxy in front of a dead Redis, as a load balancer or a TLS terminator is: it
    accepts each TCP connection, then closes it (the handshake's reply never comes).
    ``heal(port)`` makes it forward to a live server instead."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self.upstream: int | None = None
        self.proxies: list[LoopbackProxy] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.upstream is None:
                client.close()
                continue
            forward = LoopbackProxy(self.upstream)  # one relay per connection: simple
            self.proxies.append(forward)
            threading.Thread(target=_splice, args=(client, forward.port), daemon=True).start()

    def close(self) -> None:
        close_sockets(self.listener)  # wakes the accept() thread (close() alone does not)
        for forward in self.proxies:
            forward.close()


def _splice(client: socket.socket, port: int) -> None:
    upstream = socket.create_connection(("127.0.0.1", port))
    threading.Thread(target=relay, args=(upstream, client), daemon=True).start()
    with contextlib.suppress(OSError):
        relay(client, upstream)


@pytest.fixture
def dead_behind_proxy() -> Iterator[DeadBehindProxy]:
    proxy = DeadBehindProxy()
    yield proxy
    proxy.close()


@pytest.mark.parametrize("retries", ["0", "1", "3"])
def test_opens_behind_a_proxy_whose_server_is_down(
    make_app: Any, dead_behind_proxy: DeadBehindProxy, retries: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The TCP connect succeeds, the handshake fails. Only an answer from the server is
    a success: a bare connect that succeeded (redis-py gates it apart when it reconnects
    inside a command, e.g. for the health check's PING) used to clear the count, so with
    retries the circuit never opened (stuck at 1 failure)."""
    caplog.set_level(logging.INFO, logger="pyramid_redisx")
    app = make_app({"/": get_view}, url=f"redis://127.0.0.1:{dead_behind_proxy.port}/0",
                   breaker_failures="3", breaker_cooldown="30",
                   **{**FAST, "retries": retries})  # fmt: skip
    # Three failures open it: three calls without retries, fewer with them (a retry's
    # reconnect is a call of its own, as for a refused connect).
    outcomes = [call(app)[1] for _ in range(3)]
    failed = outcomes.count("ConnectionError")
    assert outcomes == ["ConnectionError"] * failed + ["RedisCircuitOpen"] * (3 - failed)
    assert failed >= 1 and breaker(app).state == OPEN, (outcomes, breaker(app).failures)
    accepted = dead_behind_proxy.accepted
    fast = sorted(call(app) for _ in range(20))
    assert {outcome for _, outcome in fast} == {"RedisCircuitOpen"}
    assert fast[10][0] < 0.005, fast[-3:]
    assert dead_behind_proxy.accepted == accepted  # no connection attempted while open
    assert len(warnings_of(caplog)) == 1
    assert "circuit open: 3 failures in a row" in warnings_of(caplog)[0]


def test_a_probe_that_only_connects_does_not_close_the_circuit(
    make_app: Any, dead_behind_proxy: DeadBehindProxy, redis_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Half-open behind that proxy: each probe's connect succeeds and its handshake
    fails, so the circuit opens again and never closes until the server answers."""
    caplog.set_level(logging.INFO, logger="pyramid_redisx")
    app = make_app({"/": get_view}, url=f"redis://127.0.0.1:{dead_behind_proxy.port}/0",
                   breaker_failures="2", breaker_cooldown="0.3", **FAST)  # fmt: skip
    outcomes = [call(app)[1] for _ in range(2)]
    assert breaker(app).state == OPEN, (outcomes, breaker(app).failures)
    for _ in range(3):  # three cooldowns, three probes: each fails, none closes it
        time.sleep(0.35)
        assert call(app)[1] == "ConnectionError"  # the probe
        assert breaker(app).state == OPEN
        assert call(app)[1] == "RedisCircuitOpen"
    assert not [w for w in warnings_of(caplog) if "circuit closed" in w], warnings_of(caplog)
    dead_behind_proxy.upstream = redis_server.port  # the server behind it is back
    time.sleep(0.35)
    assert call(app)[1] == "None"  # the probe reaches the server: closed
    assert breaker(app).state == CLOSED


# ------------------------------------------------------------------ what an operator reads
def test_the_log_tells_each_state_change_with_its_cause_and_figures(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Open (WARNING), half-open and open again (INFO), closed (WARNING), word for word:
    the client, where its server is, the last failure, the cooldown, how long the outage
    lasted and how many probes failed; and RedisCircuitOpen's figures meanwhile."""
    server = redis_server_factory()
    app = make_app(url=server.url, breaker_failures="2", breaker_cooldown="0.3", **FAST)
    client, circuit = get_redis(app.app.registry), breaker(app)
    caplog.set_level(logging.INFO, logger="pyramid_redisx.breaker")
    assert client.get("k") is None
    server.stop()
    refused = rf"ConnectionError: Error 111 connecting to 127\.0\.0\.1:{server.port}\. Connection refused\."
    where = re.escape(server.url)
    for _ in range(2):
        with pytest.raises(redis.ConnectionError):
            client.get("k")
    started = time.monotonic()
    assert (circuit.state, circuit.opened, circuit.probes) == (OPEN, 1, 0)
    with pytest.raises(RedisCircuitOpen) as raised:
        client.get("k")
    assert re.fullmatch(refused, raised.value.cause)
    assert 0 <= raised.value.open_seconds < 0.3 and 0 < raised.value.next_probe_seconds <= 0.3
    time.sleep(0.35)
    with pytest.raises(redis.ConnectionError) as probe:
        client.get("k")  # the probe: refused
    assert not isinstance(probe.value, RedisCircuitOpen)
    assert (circuit.state, circuit.opened, circuit.probes) == (OPEN, 1, 1)
    with pytest.raises(RedisCircuitOpen) as raised:
        client.get("k")
    assert raised.value.open_seconds >= 0.35  # since the outage began, not the last probe
    assert 0.2 < raised.value.next_probe_seconds <= 0.3
    server.start()
    time.sleep(0.35)
    assert client.get("k") is None  # the probe: answered
    outage = time.monotonic() - started
    assert (circuit.state, circuit.opened, circuit.dirty) == (CLOSED, 1, False)
    lines = [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == "pyramid_redisx.breaker"
    ]
    expected = [
        ("WARNING", rf"redis client=default circuit open: 2 failures in a row to reach {where} "
                    rf"\(last: {refused}\); commands fail at once with RedisCircuitOpen, one "
                    r"probe every 0\.3 s"),
        ("INFO", rf"redis client=default circuit half-open: one request probes {where}"),
        ("INFO", rf"redis client=default circuit open again: the probe failed \({refused}\); "
                 r"next probe in 0\.3 s"),
        ("INFO", rf"redis client=default circuit half-open: one request probes {where}"),
        ("WARNING", r"redis client=default circuit closed: the probe succeeded; it was open "
                    r"for (\d+\.\d\d) s \(1 probes failed\)"),
    ]  # fmt: skip
    assert [level for level, _ in lines] == [level for level, _ in expected], lines
    for (_, line), (_, pattern) in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    lasted = float(re.fullmatch(expected[-1][1], lines[-1][1]).group(1))  # type: ignore[union-attr]
    assert 0.7 <= lasted <= outage + 0.01


def test_each_outage_counts_its_own_probes_and_time(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()
    app = make_app(url=server.url, breaker_failures="2", breaker_cooldown="0.2", **FAST)
    client, circuit = get_redis(app.app.registry), breaker(app)
    caplog.set_level(logging.INFO, logger="pyramid_redisx.breaker")
    for outage in (1, 2):
        server.stop()
        while circuit.state != OPEN:
            with contextlib.suppress(redis.ConnectionError):
                client.get("k")
        time.sleep(0.25)
        with pytest.raises(redis.ConnectionError):
            client.get("k")  # a probe that fails
        server.start()
        time.sleep(0.25)
        assert client.get("k") is None  # the probe: answered
        assert (circuit.state, circuit.opened, circuit.dirty) == (CLOSED, outage, False)
    closed = [r.getMessage() for r in caplog.records if "circuit closed" in r.getMessage()]
    assert len(closed) == 2
    for line in closed:  # one probe failed in each, and each lasted about 0.5 s
        assert re.fullmatch(r"redis client=default circuit closed: the probe succeeded; "
                            r"it was open for (0\.[4-9]\d|1\.\d\d) s \(1 probes failed\)", line), line  # fmt: skip


def test_a_probe_answered_with_an_error_reply_closes_with_that_reason(
    make_app: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe's own command got an error reply (``-LOADING`` as a restarting server
    sends it): the server is reachable, the circuit closes and says why. (The probe's
    reply is given to the app's breaker as the retry policy would: a server that answers
    the handshake and then ``-LOADING`` needs a dataset minutes long to load.)"""
    server = redis_server_factory()
    server.stop()
    app = make_app(url=server.url, breaker_failures="1", breaker_cooldown="0.05", **FAST)
    circuit = breaker(app)
    caplog.set_level(logging.INFO, logger="pyramid_redisx.breaker")
    with pytest.raises(redis.ConnectionError):
        get_redis(app.app.registry).get("k")
    assert circuit.state == OPEN
    time.sleep(0.06)
    assert circuit.enter() is True  # this thread is the probe
    circuit.failed(BaseParser.parse_error("LOADING Redis is loading the dataset in memory"), True)
    assert (circuit.state, circuit.dirty, circuit.prober) == (CLOSED, False, None)
    assert re.fullmatch(r"redis client=default circuit closed: the probe got an answer; it was "
                        r"open for 0\.\d\d s \(0 probes failed\)", warnings_of(caplog)[-1])  # fmt: skip
