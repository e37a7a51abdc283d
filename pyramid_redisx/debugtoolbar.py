"""The pyramid_debugtoolbar "Redis" panel: ``debugtoolbar.includes = pyramid_redisx.debugtoolbar``.

The panel asks for the per-command trace (``client.TRACE``) when the toolbar creates it,
before the view runs, so requests the toolbar does not watch pay nothing. At the end of
the request it copies what each client did into plain data (the toolbar keeps panels in
its history long after the request is gone) and renders it on demand as HTML built here,
escaped, without a template.

Nothing secret may reach the page: arguments of AUTH, HELLO and MIGRATE, an argument that
follows a secret-looking token (``CONFIG SET requirepass …``, ``HSET u password …``) and
ACL password rules are shown as ``***``; every argument is cut to ``ARG_SHOWN`` characters
and at most ``ARGS_SHOWN`` of them are shown. The toolbar's own Settings panel is replaced
by one that redacts ``redis.*`` settings (``redis.url`` may carry the password).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

# untyped, and only installed with the toolbar
from pyramid_debugtoolbar.panels import DebugPanel  # type: ignore[import-untyped,import-not-found]
from pyramid_debugtoolbar.panels.settings import (  # type: ignore[import-untyped,import-not-found]
    SettingsDebugPanel,
)

from .breaker import breaker_of
from .pools import pool_figures
from .redact import MASK, looks_secret, redact_value
from .usage import CACHE_HIT, TRACE, USAGES, Usage, command_name

ARG_SHOWN = 60  # characters of one argument shown
ARGS_SHOWN = 10  # arguments of one command shown
MASK_ALL = frozenset({"AUTH", "HELLO", "MIGRATE"})  # commands whose arguments all hide
ACL_PASSWORD_RULE = (">", "<", "#", "!")  # ACL SETUSER rules that carry a password or hash


def _text(arg: Any) -> str:
    """An argument as at most ``ARG_SHOWN`` characters; only a prefix of bytes is decoded."""
    if isinstance(arg, bytes | bytearray | memoryview):
        head = bytes(arg[: ARG_SHOWN * 4])  # >= ARG_SHOWN characters once decoded
        text, longer = head.decode("utf-8", "replace"), len(arg) > len(head)
    else:
        text, longer = str(arg), False
    return text[:ARG_SHOWN] + "…" if longer or len(text) > ARG_SHOWN else text


def shown_arguments(name: str, args: tuple[Any, ...]) -> list[str]:
    """The arguments after the command name, truncated and redacted, as displayed."""
    if name in MASK_ALL:
        return [MASK] * len(args)
    shown: list[str] = []
    previous_secret = looks_secret(name)  # a command named like a secret hides its key
    for arg in args[:ARGS_SHOWN]:
        text = _text(arg)
        hide = previous_secret or (name.startswith("ACL") and text.startswith(ACL_PASSWORD_RULE))
        shown.append(MASK if hide else text)
        previous_secret = looks_secret(text)
    if len(args) > ARGS_SHOWN:
        shown.append(f"… {len(args) - ARGS_SHOWN} more")
    return shown


@dataclass
class Command:
    """One command as shown: name, key (first argument) and the other arguments."""

    name: str
    key: str
    args: list[str]

    @classmethod
    def from_args(cls, args: tuple[Any, ...]) -> Command:
        name = command_name(args[0]) if args else "-"
        shown = shown_arguments(name, args[1:])
        if not shown or name in MASK_ALL:
            return cls(name, "-", shown)
        return cls(name, shown[0], shown[1:])


@dataclass
class Entry:
    """One round trip: a command, or a pipeline/transaction with its ``inner`` commands."""

    client: str
    command: Command
    ms: float
    inner: list[Command] | None = None
    cached: bool = False  # answered by the client cache (no round trip)


@dataclass
class ClientFigures:
    name: str
    commands: int
    ms: float
    in_use: int
    idle: int
    max: int
    waited_ms: float
    untraced: bool = False  # commands ran before the toolbar asked for the trace
    circuit: str = "closed"  # the pool's circuit at the end of the request (breaker.py)
    soft_failures: int = 0  # this request's fail-soft calls that got a default
    cache: dict[str, Any] | None = None  # client cache: this request's and the process's


@dataclass
class Summary:
    entries: list[Entry] = field(default_factory=list)
    clients: list[ClientFigures] = field(default_factory=list)
    commands: int = 0
    ms: float = 0.0
    slowest: Entry | None = None


def summarize(usages: list[Usage]) -> Summary:
    """What the request did, client by client (each in order; clients in first-use order)."""
    summary = Summary()
    for usage in usages:
        if not (usage.commands or usage.cache_hits):
            continue
        for name, args, seconds, inner in usage.trace or ():
            command = Command.from_args(args) if args else Command(command_name(name), "-", [])
            entry = Entry(usage.name, command, seconds * 1000)
            if inner is CACHE_HIT:
                entry.cached = True
            elif inner is not None:
                entry.inner = [Command.from_args(inner_args) for inner_args in inner]
                command.args = [_count(len(inner), "command")]
            summary.entries.append(entry)
            if not entry.cached and (summary.slowest is None or entry.ms > summary.slowest.ms):
                summary.slowest = entry
        pool = pool_figures(usage.pool)
        figures = (pool.in_use, pool.idle, pool.max, usage.waited * 1000, usage.trace is None)
        outage = (breaker_of(usage.pool).state, getattr(usage, "soft_failures", 0))
        client = ClientFigures(usage.name, usage.commands, usage.seconds * 1000, *figures, *outage)
        if usage.cache is not None:
            client.cache = {
                "request_hits": usage.cache_hits,
                "request_misses": usage.cache_misses,
                **usage.cache.figures(),
            }
        summary.clients.append(client)
        summary.commands += usage.commands
        summary.ms += usage.seconds * 1000
    return summary


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


def _command_html(command: Command) -> str:
    args = " ".join(escape(arg) for arg in command.args)
    return f"<code>{escape(command.name)}</code> {escape(command.key)} <code>{args}</code>"


# The toolbar floats its tabs in rows: with its eight panels and ours, a 1280 px window
# put the Redis tab alone on a second row. Every panel's content is on the toolbar page
# (hidden until its tab is chosen), so this style keeps the tabs in one row, a little
# tighter, whichever tab is shown; a window too narrow for them scrolls the row.
TABS_IN_ONE_ROW = (
    "<style>.pDebugPanels .nav-tabs{display:flex;flex-wrap:nowrap;overflow-x:auto;"
    "overflow-y:hidden}.pDebugPanels .nav-tabs>li{flex:none}"
    ".pDebugPanels .nav-tabs>li>a{padding-left:6px;padding-right:6px}</style>"
)


def render(summary: Summary) -> str:
    """The panel's HTML; every value is escaped."""
    return f'{TABS_IN_ONE_ROW}<div class="redisx-panel">{_body(summary)}</div>'


def _body(summary: Summary) -> str:
    if not summary.commands and not summary.entries and not summary.clients:
        return "<p>No Redis commands in this request.</p>"
    slowest = summary.slowest
    trips = sum(1 for entry in summary.entries if not entry.cached)
    hits = sum(client.cache["request_hits"] for client in summary.clients if client.cache)
    parts = [
        f"<p>{_count(summary.commands, 'command')} in {_count(trips, 'round trip')}, "
        f"{summary.ms:.2f} ms"
        + (
            f"; slowest: {escape(slowest.command.name)} {slowest.ms:.2f} ms"
            f" ({escape(slowest.client)})"
            if slowest
            else ""
        )
        + (f"; {_count(hits, 'read')} from the client cache" if hits else "")
        + ".</p>",
        '<table class="table table-striped table-condensed redisx-commands"><thead><tr>'
        "<th>#</th><th>Client</th><th>Command</th><th>Key</th><th>Arguments</th>"
        "<th>ms</th><th>Pipelined</th></tr></thead><tbody>",
    ]
    for number, entry in enumerate(summary.entries, 1):
        command = entry.command
        args = " ".join(escape(arg) for arg in command.args)
        if entry.inner is not None:
            items = "".join(f"<li>{_command_html(inner)}</li>" for inner in entry.inner)
            args += f'<ol class="redisx-inner">{items}</ol>'
        parts.append(
            f'<tr class="redisx-command"><td>{number}</td><td>{escape(entry.client)}</td>'
            f"<td><code>{escape(command.name)}</code></td><td>{escape(command.key)}</td>"
            f"<td>{args}</td><td>{'cache' if entry.cached else f'{entry.ms:.2f}'}</td>"
            f"<td>{'yes' if entry.inner is not None else 'no'}</td></tr>"
        )
    parts.append(
        "</tbody></table><h4>Pools</h4>"
        '<table class="table table-condensed redisx-pools"><thead><tr><th>Client</th>'
        "<th>Commands</th><th>ms</th><th>In use</th><th>Idle</th><th>Max</th>"
        "<th>Waited (ms)</th><th>Circuit</th><th>Soft failures</th></tr></thead><tbody>"
    )
    for client in summary.clients:
        note = " (some ran before the toolbar; not listed)" if client.untraced else ""
        parts.append(
            f"<tr><td>{escape(client.name)}{note}</td><td>{client.commands}</td>"
            f"<td>{client.ms:.2f}</td><td>{client.in_use}</td><td>{client.idle}</td>"
            f"<td>{client.max}</td><td>{client.waited_ms:.2f}</td>"
            f'<td class="redisx-circuit">{escape(client.circuit)}</td>'
            f"<td>{client.soft_failures}</td></tr>"
        )
    parts.append("</tbody></table>")
    cached = [client for client in summary.clients if client.cache is not None]
    if cached:
        parts.append(
            "<h4>Client cache</h4>"
            '<table class="table table-condensed redisx-client-cache"><thead><tr>'
            "<th>Client</th><th>Hits (request)</th><th>Misses (request)</th>"
            "<th>Entries</th><th>Bytes</th><th>Hits</th><th>Misses</th>"
            "<th>Invalidations</th><th>Flushes</th><th>Listening</th></tr></thead><tbody>"
        )
        for client in cached:
            c = client.cache or {}
            parts.append(
                f"<tr><td>{escape(client.name)}</td><td>{c['request_hits']}</td>"
                f"<td>{c['request_misses']}</td><td>{c['entries']}</td><td>{c['bytes']}</td>"
                f"<td>{c['hits']}</td><td>{c['misses']}</td><td>{c['invalidations']}</td>"
                f"<td>{c['flushes']}</td><td>{'yes' if c['listening'] else 'no'}</td></tr>"
            )
        parts.append("</tbody></table>")
    return "".join(parts)


class RedisPanel(DebugPanel):
    """Every Redis command of the request, totals, slowest and the pools' figures."""

    name = "redis"
    title = nav_title = "Redis"
    has_content = True

    def __init__(self, request: Any) -> None:
        # Before the view binds any client: bound clients then keep a trace.
        request.__dict__[TRACE] = True
        self.request: Any = request
        self.summary = Summary()

    def process_response(self, response: Any) -> None:
        request, self.request = self.request, None  # the history must not keep the request
        self.summary = summarize(list(request.__dict__.get(USAGES) or ()))
        if self.summary.commands:
            # short, as the toolbar's own ("28.09ms"): the tab has to fit its row
            self.nav_subtitle = f"{self.summary.commands} · {self.summary.ms:.1f}ms"
            if any(c.circuit in ("open", "half-open") for c in self.summary.clients):
                self.nav_subtitle += " · circuit open"

    def render_content(self, request: Any) -> str:
        return render(self.summary)


def redact_setting(key: str, value: Any) -> Any:
    """A ``redis.*`` setting as it may be shown (``redis.url``, ``redis.x.password``)."""
    if not key.startswith("redis."):
        return value
    return redact_value(key.rsplit(".", 1)[-1], value)


class RedactedSettingsPanel(SettingsDebugPanel):
    """The toolbar's Settings panel, with Redis passwords masked."""

    def __init__(self, request: Any) -> None:
        super().__init__(request)
        settings = request.registry.settings
        self.data["settings"] = [
            (key, repr(redact_setting(key, settings[key])) if key in settings else value)
            for key, value in self.data["settings"]
        ]


def includeme(config: Any) -> None:
    """Run by the toolbar's app for ``debugtoolbar.includes``."""
    config.add_debugtoolbar_panel(RedisPanel)
    config.add_debugtoolbar_panel(RedactedSettingsPanel, is_global=True)
