"""The breaker's state machine against a model, over random sequences (hypothesis).

Pure: no server. The clock is the breaker module's ``monotonic``, replaced by one the
test moves; "threads" are the ids ``get_ident`` returns, replaced likewise. What it
checks: the circuit opens exactly at ``breaker_failures`` failures to reach in a row and
never on a reply; while open every call is refused; after the cooldown exactly one call
becomes the probe, and the others are refused while it runs; its outcome closes or
re-opens; a success anywhere closes; ``dirty`` is false exactly when closed with no
failure counted.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from redis._parsers.base import BaseParser

from pyramid_redisx import RedisCircuitOpen
from pyramid_redisx import breaker as module
from pyramid_redisx.breaker import CLOSED, HALF_OPEN, OPEN, Breaker

THRESHOLD = 3
COOLDOWN = 1.0
UNREACHABLE = [redis.ConnectionError("Error 111 connecting. Connection refused."),
               redis.TimeoutError("Timeout reading from socket")]  # fmt: skip
# Error replies as redis-py's parser makes them (each carries its reply's code).
REPLIES = [BaseParser.parse_error("LOADING Redis is loading the dataset in memory"),
           BaseParser.parse_error("WRONGPASS invalid username-password pair"),
           BaseParser.parse_error("WRONGTYPE Operation against a key")]  # fmt: skip


class BreakerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0
        self.thread = 1
        module.monotonic = lambda: self.now  # type: ignore[assignment]
        module.get_ident = lambda: self.thread  # type: ignore[assignment]
        self.breaker = Breaker(THRESHOLD, COOLDOWN, "redis://h:1/0")
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.prober: int | None = None
        self.since = 0.0  # when this outage began
        self.probes = 0  # probes failed in this outage
        self.opened = 0  # outages

    def teardown(self) -> None:
        module.monotonic = _MONOTONIC
        module.get_ident = _GET_IDENT

    def _call(self, thread: int) -> bool | None:
        """The gate as the retry policy runs it: None when refused, else ``probe``."""
        self.thread = thread
        if not self.breaker.dirty:
            return False
        try:
            return self.breaker.enter()
        except RedisCircuitOpen as refused:
            self._refused_says(refused)
            return None

    def _refused_says(self, refused: RedisCircuitOpen) -> None:
        """What RedisCircuitOpen tells: how long the outage has lasted, when the next
        probe may run (0 while one runs), the last failure."""
        due = 0.0 if self.state == HALF_OPEN else max(0.0, self.opened_at + COOLDOWN - self.now)
        assert refused.next_probe_seconds == pytest.approx(due)
        assert refused.open_seconds == pytest.approx(self.now - self.since)
        assert refused.cause == self.breaker.last_error != ""

    def _opens(self) -> None:
        if self.state == CLOSED:
            self.since, self.probes, self.opened = self.now, 0, self.opened + 1
        self.state, self.opened_at = OPEN, self.now

    def _expect_gate(self, thread: int) -> bool | None:
        if self.state == CLOSED or self.prober == thread:
            return False
        if self.state == OPEN and self.now >= self.opened_at + COOLDOWN:
            self.state, self.prober = HALF_OPEN, thread
            return True
        return None

    @rule(thread=st.integers(1, 4), error=st.sampled_from(UNREACHABLE + REPLIES))
    def a_call_fails(self, thread: int, error: Exception) -> None:
        expected = self._expect_gate(thread)
        probe = self._call(thread)
        assert probe == expected
        if probe is None:
            return
        # a new exception each time, as raised (a reply keeps its code, as parsed)
        error = type(error)(*error.args, status_code=getattr(error, "status_code", None))
        self.breaker.failed(error, probe)
        unreachable = isinstance(error, redis.TimeoutError) or type(error) is redis.ConnectionError
        if probe:
            self.prober = None
            if unreachable:
                self.probes += 1
                self._opens()
            else:  # a reply: the server answered
                self.state, self.failures = CLOSED, 0
        elif unreachable and self.state == CLOSED:
            self.failures += 1
            if self.failures >= THRESHOLD:
                self._opens()

    @rule(thread=st.integers(1, 4))
    def a_call_succeeds(self, thread: int) -> None:
        expected = self._expect_gate(thread)
        probe = self._call(thread)
        assert probe == expected
        if probe is None:
            return
        if self.breaker.dirty:
            self.breaker.succeeded(probe)
        self.state, self.failures, self.prober = CLOSED, 0, None

    @rule(thread=st.integers(1, 4))
    def a_call_only_connects(self, thread: int) -> None:
        """A bare connect succeeded (a proxy in front of a dead server accepts too): no
        success; a probe that was only that hands the probe on at once."""
        expected = self._expect_gate(thread)
        probe = self._call(thread)
        assert probe == expected
        if probe is None:
            return
        self.breaker.connected_only(probe)
        if probe:
            self.state, self.prober, self.opened_at = OPEN, None, 0.0

    @rule(thread=st.integers(1, 4))
    def a_checkout(self, thread: int) -> None:
        """The pool's gate: refuses while open and cooling down, or while another probes."""
        self.thread = thread
        allowed = (
            self.state == CLOSED
            or self.prober == thread
            or (self.state == OPEN and self.now >= self.opened_at + COOLDOWN)
        )
        try:
            self.breaker.check()
        except RedisCircuitOpen as refused:
            assert not allowed
            self._refused_says(refused)
        else:
            assert allowed

    @rule(seconds=st.floats(0.01, 2.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.state == OPEN)
    @rule()
    def time_reaches_the_probe_exactly(self) -> None:
        self.now = max(self.now, self.opened_at + COOLDOWN)

    @precondition(lambda self: self.state == HALF_OPEN)
    @rule(thread=st.integers(1, 4))
    def others_are_refused_while_the_probe_runs(self, thread: int) -> None:
        if thread == self.prober:
            return
        assert self._call(thread) is None

    @invariant()
    def agrees(self) -> None:
        assert self.breaker.state == self.state
        if self.state == CLOSED:
            assert self.breaker.failures == self.failures
            assert self.breaker.dirty == (self.failures > 0)
        else:
            assert self.breaker.dirty
        assert self.breaker.prober == self.prober
        assert (self.breaker.opened, self.breaker.probes) == (self.opened, self.probes)
        if self.state != CLOSED:
            assert self.breaker.since == self.since


_MONOTONIC = module.monotonic
_GET_IDENT = module.get_ident

TestBreakerModel = BreakerModel.TestCase
TestBreakerModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.fixture(autouse=True)
def _quiet(caplog: Any) -> None:
    caplog.set_level("ERROR", logger="pyramid_redisx.breaker")


# ------------------------------------------------------------------ the pieces, one by one
def test_failover_closes_the_circuit_and_says_where_the_service_went(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = Breaker(2, COOLDOWN, "Sentinel service 'mymaster'")
    for _ in range(2):
        breaker.failed(redis.ConnectionError("Error 111 connecting. Connection refused."))
    assert breaker.state == OPEN
    caplog.set_level("WARNING", logger="pyramid_redisx.breaker")
    breaker.failover("10.0.0.5:6379")
    assert (breaker.state, breaker.failures, breaker.dirty, breaker.prober) == (
        CLOSED,
        0,
        False,
        None,
    )
    (line,) = [r.getMessage() for r in caplog.records if "circuit closed" in r.getMessage()]
    assert line.startswith("redis client=? circuit closed: the service moved to 10.0.0.5:6379; ")
    breaker.failed(redis.ConnectionError("refused"))  # one failure counted while closed
    breaker.failover("10.0.0.6:6379")  # a failover clears it too
    assert (breaker.failures, breaker.dirty) == (0, False)


def test_a_call_that_began_before_the_circuit_opened_and_succeeds_closes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = Breaker(1, COOLDOWN, "redis://h:1/0")
    breaker.failed(redis.ConnectionError("refused"))
    caplog.set_level("WARNING", logger="pyramid_redisx.breaker")
    breaker.succeeded()  # not the probe: a request already past the gate got an answer
    assert breaker.state == CLOSED
    (line,) = [r.getMessage() for r in caplog.records if "circuit closed" in r.getMessage()]
    assert line.startswith("redis client=? circuit closed: a request succeeded; ")


def test_a_probe_that_fails_neither_way_hands_the_probe_on_at_once() -> None:
    """The probe raised something that is neither a failure to reach the server nor a
    reply (a bug in the caller, bad input): nothing is learnt, the next call probes."""
    now = [100.0]
    module.monotonic = lambda: now[0]  # type: ignore[assignment]
    try:
        breaker = Breaker(1, COOLDOWN, "redis://h:1/0")
        breaker.failed(redis.ConnectionError("refused"))
        now[0] += COOLDOWN
        assert breaker.enter() is True
        breaker.failed(ValueError("not Redis's doing"), True)
        assert (breaker.state, breaker.prober) == (OPEN, None)
        assert breaker.enter() is True  # at once: no cooldown
    finally:
        module.monotonic = _MONOTONIC


def test_guarded_calls_through_the_gate() -> None:
    """``guarded`` (the Cluster client's own loops): closed, the call with its arguments;
    open, refused without calling; due, the call is the probe and its outcome counts."""
    now = [100.0]
    module.monotonic = lambda: now[0]  # type: ignore[assignment]
    calls: list[Any] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        if kwargs.get("fail"):
            raise redis.ConnectionError("refused")
        return "answer"

    try:
        breaker = Breaker(1, COOLDOWN, "cluster via h:1")
        assert module.guarded(breaker, call, 1, k="v") == "answer"
        assert calls == [((1,), {"k": "v"})]
        with pytest.raises(redis.ConnectionError):
            module.guarded(breaker, call, fail=True)
        assert breaker.state == OPEN
        with pytest.raises(RedisCircuitOpen):
            module.guarded(breaker, call)
        assert len(calls) == 2  # refused without calling
        now[0] += COOLDOWN
        with pytest.raises(redis.ConnectionError):
            module.guarded(breaker, call, fail=True)  # the probe, refused
        assert (breaker.state, breaker.prober, breaker.probes) == (OPEN, None, 1)
        now[0] += COOLDOWN
        assert module.guarded(breaker, call) == "answer"  # the probe, answered
        assert (breaker.state, breaker.dirty) == (CLOSED, False)
    finally:
        module.monotonic = _MONOTONIC


def test_what_fail_soft_callers_swallow() -> None:
    """Unreachable, the circuit, a busy pool, a server that cannot serve yet: swallowed.
    A wrong password or a refused permission: shown (a mistake, not an outage)."""
    unavailable = module.unavailable
    assert unavailable(redis.ConnectionError("Error 111 connecting. Connection refused."))
    assert unavailable(BaseParser.parse_error("LOADING Redis is loading the dataset in memory"))
    assert not unavailable(BaseParser.parse_error("WRONGPASS invalid username-password pair"))
    assert not unavailable(BaseParser.parse_error("NOPERM this user has no permissions"))
    assert not unavailable(BaseParser.parse_error("WRONGTYPE Operation against a key"))


def test_where_and_describe_say_it_as_the_messages_do() -> None:
    from pyramid_redisx.settings import parse_client

    def where(**settings: str) -> str:
        return module.where(parse_client("default", {f"redis.{k}": v for k, v in settings.items()}))

    assert where(url="redis://:pw@h:7/1") == "redis://:***@h:7/1"
    assert where(sentinels="s:1", sentinel_service="mymaster") == "Sentinel service 'mymaster'"
    assert where(url="redis://c:7000/0", cluster="true") == "cluster via c:7000"
    assert module.describe(redis.ConnectionError()) == "ConnectionError: -"
    assert module.breaker_of(object()).state == "off"  # a pool without one: no circuit
