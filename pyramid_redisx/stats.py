"""The per-request line, pool warnings and Server-Timing (slow commands: ``usage``).

Formatting is pure (``stats_line``, ``server_timing``); ``report`` decides what to log
for one client at the end of a request and reads the pool's figures (~0.5 µs, public
API) only when a line will be written or the pool may be saturated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from time import monotonic
from typing import Any

from .breaker import CLOSED, OFF, breaker_of
from .pools import PoolFigures, pool_figures
from .usage import Usage, command_name

stats_log = logging.getLogger("pyramid_redisx.stats")
pool_log = logging.getLogger("pyramid_redisx.pool")

WAIT_WARNING = 0.010  # seconds waited for a free connection that deserve a WARNING
WARN_EVERY = 1.0  # seconds: at most one pool WARNING of each kind per pool this often


def _ms(seconds: float) -> str:
    return "0" if seconds <= 0 else f"{seconds * 1000:.2f}"


LINE = "redis client=%s commands=%d time_ms=%s slowest=%s in_use=%d idle=%d max=%d waited_ms=%s"
# Appended for a client with ``client_cache`` on (the line is unchanged otherwise): reads
# the cache answered and those it sent to the server in this request, and the entries the
# process dropped (invalidated, or flushed) while the request ran.
CACHE_LINE = LINE + " cache_hits=%d cache_misses=%d cache_invalidations=%d"


def stats_line(
    usage: Usage, figures: PoolFigures, waited: float
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The line's arguments (for ``LINE``) and the record attributes, for one client."""
    seconds = usage.seconds
    slowest = f"{command_name(usage.slowest_name)}:{_ms(usage.slowest_seconds)}"
    in_use, idle, most = figures
    fields = {
        "redis_client": usage.name,
        "redis_commands": usage.commands,
        "redis_time_ms": round(seconds * 1000, 3),
        "redis_slowest": slowest,
        "redis_in_use": in_use,
        "redis_idle": idle,
        "redis_max": most,
        "redis_waited_ms": round(waited * 1000, 3),
    }
    args: tuple[Any, ...] = (
        usage.name, usage.commands, _ms(seconds), slowest, in_use, idle, most, _ms(waited),
    )  # fmt: skip
    if usage.cache is not None:
        cached = (usage.cache_hits, usage.cache_misses, usage.cache_invalidations)  # type: ignore[attr-defined]
        args += cached
        fields["redis_cache_hits"], fields["redis_cache_misses"] = cached[0], cached[1]
        fields["redis_cache_invalidations"] = cached[2]
    return args, fields


def outage_fields(usage: Usage) -> dict[str, Any]:
    """``circuit`` when the client's circuit is not closed, ``soft_failures`` when the
    request's fail-soft calls got a default instead of an answer (breaker.py, failsoft.py)."""
    fields: dict[str, Any] = {}
    state = breaker_of(usage.pool).state
    if state not in (CLOSED, OFF):
        fields["circuit"] = state
    soft = getattr(usage, "soft_failures", 0)
    if soft:
        fields["soft_failures"] = soft
    return fields


def report(usage: Usage) -> None:
    """Log the line (if enabled) and any pool warning for one client of one request."""
    options = usage.options
    pool = usage.pool
    waited = usage.waited
    write_line = options.stats and stats_log.isEnabledFor(options.stats_level)
    if not (write_line or pool.may_be_saturated or waited >= WAIT_WARNING):
        return
    figures = pool_figures(pool)
    if write_line:
        args, fields = stats_line(usage, figures, waited)
        line = LINE if usage.cache is None else CACHE_LINE
        outage = outage_fields(usage)
        if outage:  # only during an outage: the healthy line stays as documented
            line += "".join(f" {key}=%s" for key in outage)
            args += tuple(outage.values())
            fields.update({f"redis_{key}": value for key, value in outage.items()})
        # makeRecord + handle: what Logger.log does, less the stack walk of findCaller
        # (the caller is always this function) and the per-key checks of ``extra``
        # (these keys are ours and known not to clash): most of a log call's cost.
        record = stats_log.makeRecord(
            stats_log.name, options.stats_level, __file__, 0, line, args, None, "report"
        )
        record.__dict__.update(fields)
        stats_log.handle(record)
    if figures.in_use >= pool.warn_at:
        held = _may_warn(pool, "full")
        if held is not None:
            pool_log.warning(
                "redis client=%s pool nearly full: in_use=%d idle=%d max=%d (pool_warn_ratio %g)%s",
                usage.name, figures.in_use, figures.idle, figures.max, options.pool_warn_ratio,
                _held_back(held),
            )  # fmt: skip
    if waited >= WAIT_WARNING:
        held = _may_warn(pool, "waited")
        if held is not None:
            # In use as the request got its connection: by now it may have given it back.
            in_use = max(figures.in_use, pool.wait_log.in_use)
            pool_log.warning(
                "redis client=%s request waited %.1f ms for a free connection (in_use=%d max=%d)%s",
                usage.name, waited * 1000, in_use, figures.max, _held_back(held),
            )  # fmt: skip


def _may_warn(pool: Any, kind: str) -> int | None:
    """At most one pool WARNING of a kind per pool per ``WARN_EVERY`` seconds: None to
    keep quiet, else how many were held back since the last one (a saturated pool
    would otherwise log once or twice per request)."""
    now = monotonic()
    last, held = pool.warned.get(kind, (-WARN_EVERY, 0))
    if now - last < WARN_EVERY:
        pool.warned[kind] = (last, held + 1)
        return None
    pool.warned[kind] = (now, 0)
    return int(held)


def _held_back(held: int) -> str:
    return f"; {held} more like this in the last {WARN_EVERY:g} s not logged" if held else ""


def server_timing(usages: Iterable[Usage]) -> str | None:
    """``redis;dur=<ms>;desc="<n> commands"`` for the request, or None if it ran none."""
    commands = 0
    seconds = 0.0
    for usage in usages:
        commands += usage.commands
        seconds += usage.seconds
    if not commands:
        return None
    return f'redis;dur={seconds * 1000:.2f};desc="{commands} commands"'
