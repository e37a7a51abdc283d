"""Scenario 5: the Redis server stalls (SIGSTOP) while requests run, then resumes.

Requests fail by socket_timeout (a clean 503 naming TimeoutError, after about
socket_timeout), each still gets its stats line, each timed-out command gets a
slow-command WARNING, and after SIGCONT the next requests succeed.

This is the per-command path with the circuit breaker off (``redis.breaker_failures =
0``, a supported setting): with it, the default, requests fail at once after five
timeouts and recover within breaker_cooldown (test_outages.py).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

from .harness import summary
from .scenarios import SHORT_TIMEOUTS, SHORT_TIMEOUTS_BOUND, pause_under_load

SETTINGS = {
    **SHORT_TIMEOUTS,
    "redis.slow_command": "100 milliseconds",
    "redis.breaker_failures": "0",
}
MARGIN = 0.5  # seconds over socket_timeout a failed request may take (HTTP, GIL, 2 cores)


@pytest.mark.slow
def test_stalled_server_fails_requests_by_socket_timeout_then_recovers(
    redis_server_factory: Any, caplog: pytest.LogCaptureFixture, record_property: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    server = redis_server_factory()
    run = pause_under_load(server, {"redis.url": server.url, **SETTINGS}, threads=4)
    outcomes, marks = run.outcomes, run.marks
    timeout = run.options.socket_timeout
    failed = [o for o in outcomes if o.status != 200]
    stats = [r for r in caplog.records if r.name == "pyramid_redisx.stats"]
    slow = [r for r in caplog.records if r.name == "pyramid_redisx.slow"]
    slow_stats = [r for r in stats if r.redis_time_ms >= timeout * 1000 * 0.9]

    figures = summary(outcomes)
    figures.update(seconds=round(run.seconds, 2),
                   paused_s=round(marks["resumed"] - marks["paused"], 2),
                   failed_latency_s=[round(min(o.elapsed for o in failed), 3),
                                     round(max(o.elapsed for o in failed), 3)] if failed else None,
                   ok_after_resume=sum(o.started >= marks["resumed"] for o in outcomes),
                   stats_lines=len(stats), stats_lines_over_timeout=len(slow_stats),
                   slow_warnings=len(slow))  # fmt: skip
    print("\nscenario 5 (SIGSTOP under load):", json.dumps(figures))
    for key, value in figures.items():
        record_property(f"stalled_{key}", value)

    assert [o for o in outcomes if o.status not in (200, 503)] == []
    assert len(failed) >= 4, "the stall failed fewer requests than there are client threads"
    # Failures are read timeouts of requests that ran into the stall, after ~socket_timeout.
    assert all(
        o.body.startswith("redis unavailable: TimeoutError: Timeout reading") for o in failed
    ), {o.body for o in failed}
    assert all(marks["paused"] - timeout <= o.started <= marks["resumed"] for o in failed)
    assert all(timeout * 0.9 <= o.elapsed <= timeout + MARGIN for o in failed), [
        round(o.elapsed, 3) for o in failed
    ]
    assert max(o.elapsed for o in outcomes) <= SHORT_TIMEOUTS_BOUND + 1.0
    # After SIGCONT every new request succeeds.
    after = [o for o in outcomes if o.started >= marks["resumed"]]
    assert len(after) >= 40 and all(o.status == 200 for o in after), [
        o for o in after if o.status != 200
    ]
    # Every request, failed or not, has its stats line; the timed-out ones show the wait.
    assert len(stats) == len(outcomes)
    assert all(r.redis_commands == 1 for r in stats)
    assert len(failed) <= len(slow_stats) <= len(failed) + 4  # + those in flight at SIGCONT
    # A slow-command WARNING for each timed-out command, naming the command and the path.
    # (redis-py sends incr() as INCRBY.)
    warned = {r.getMessage().rsplit("path=", 1)[1] for r in slow}
    assert all(r.levelno == logging.WARNING for r in slow)
    assert all(
        re.match(r"redis client=default slow command INCRBY key=hits took (\d+\.\d+) ms "
                 r"\(slow_command 100\.00 ms\) path=/incr/\d+$", r.getMessage())
        for r in slow
    ), [r.getMessage() for r in slow]  # fmt: skip
    took = [float(r.getMessage().split(" took ")[1].split(" ms")[0]) for r in slow]
    assert sum(ms >= timeout * 1000 * 0.9 for ms in took) >= len(failed)
    assert {o.path for o in failed} <= warned, {o.path for o in failed} - warned
    assert run.in_use_after == 0
