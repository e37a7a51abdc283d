"""The per-request line, pool warnings, slow-command warnings and Server-Timing.

Formatting is pure (``stats_line``, ``server_timing``); ``report`` decides what to log
for one client at the end of a request and reads the pool's figures (~0.5 µs, public
API) only when a line will be written or the pool may be saturated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from time import monotonic
from typing import TYPE_CHECKING, Any

from .breaker import CLOSED, OFF, breaker_of
from .pools import PoolFigures, pool_figures

if TYPE_CHECKING:
    from .client import Usage

stats_log = logging.getLogger("pyramid_redisx.stats")
pool_log = logging.getLogger("pyramid_redisx.pool")
slow_log = logging.getLogger("pyramid_redisx.slow")

WAIT_WARNING = 0.010  # seconds waited for a free connection that deserve a WARNING
WARN_EVERY = 1.0  # seconds: at most one pool WARNING of each kind per pool this often
KEY_SHOWN = 64  # characters of a key shown in a slow-command warning


_NAMES: dict[Any, str] = {}  # command name → token, for the few names an app uses


def command_name(name: Any) -> str:
    """``GET``, ``CLIENT_LIST``: a command name as one greppable token."""
    token = _NAMES.get(name)
    if token is None:
        token = _command_name(name)
        if len(_NAMES) < 1000 and isinstance(name, str | bytes | None):
            _NAMES[name] = token
    return token


def _command_name(name: Any) -> str:
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    return str(name).upper().replace(" ", "_") if name is not None else "-"


def _ms(seconds: float) -> str:
    return "0" if seconds <= 0 else f"{seconds * 1000:.2f}"


LINE = "redis client=%s commands=%d time_ms=%s slowest=%s in_use=%d idle=%d max=%d waited_ms=%s"


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
    args = (usage.name, usage.commands, _ms(seconds), slowest, in_use, idle, most, _ms(waited))
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
        line = LINE
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


def _key(args: tuple[Any, ...]) -> str:
    """First argument of a command (its key, usually), truncated; never a credential."""
    if len(args) < 2 or command_name(args[0]) in ("AUTH", "HELLO", "MIGRATE"):
        return "-"
    key = args[1]
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    key = str(key)
    return key if len(key) <= KEY_SHOWN else key[:KEY_SHOWN] + "…"


def warn_slow_command(usage: Usage, name: Any, args: tuple[Any, ...], seconds: float) -> None:
    environ = usage.environ or {}
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") or "-"
    slow_log.warning(
        "redis client=%s slow command %s key=%s took %.2f ms (slow_command %.2f ms) path=%s",
        usage.name, command_name(name), _key(args), seconds * 1000,
        (usage.slow_threshold or 0) * 1000, path,
    )  # fmt: skip


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
