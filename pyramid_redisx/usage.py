"""What one request did with one client (``Usage``), and where it is noted on the request.

A ``Usage`` counts a request's commands and their time, keeps the request's own
connection (``request_connection``) and what else the request holds (pipelines,
pubsubs, monitors, ``client()``), and gives it all back when the request ends. Slow
commands are reported here, where their time is measured. The clients (``client``,
``cluster``) record on it; the end of the request (``request``) and the reports
(``stats``, the toolbar panel) read it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from threading import get_ident
from typing import Any
from weakref import ref

from pyramid.threadlocal import get_current_request

from .pools import NoQueue
from .settings import RedisOptions

slow_log = logging.getLogger("pyramid_redisx.slow")
KEY_SHOWN = 64  # characters of a key shown in a slow-command warning

# request.__dict__ key a debug panel sets (before the view runs) to get every command.
TRACE = "pyramid_redisx_trace"
BOUND = "_pyramid_redisx_bound"  # request.__dict__ key: {name: bound client}
# request.__dict__ key: the Usage of each bound client that was used, in order; set to
# ENDED by the end of the request (later usages then keep no connection).
USAGES = "_pyramid_redisx_usages"
ENDED: tuple[Any, ...] = ()
IN_TWEEN = "_pyramid_redisx_tween"  # request.__dict__ key: our tween runs this request
# ``inner`` of a trace entry for a read the client cache answered (no round trip).
CACHE_HIT: list[Any] = []


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


class Usage:
    """What one request did with one client. Attributes are read by ``stats``.

    Holds the request's WSGI environ (for the path in slow-command warnings) and a weak
    reference to the request, not the request: a bound client lives in
    ``request.__dict__`` and must not make a cycle. The counters start as class
    attributes, so a new ``Usage`` (one per request and client) sets only a few.

    ``connection`` is the request's own connection (``request_connection``), used only
    by ``thread``, the thread that handles the request (fixed when the request starts,
    by the tween, never by the first caller): another thread's commands take one from
    the pool each, so two threads never share a socket. ``thread`` is None when the
    request keeps no connection (the setting is off, the request has ended, or its
    first use came from another thread than the one running it).
    """

    commands = 0
    seconds = 0.0
    slowest_name: Any = None
    slowest_seconds = 0.0
    connection: Any = None
    thread: int | None = None
    # Weak references to what may hold a connection of its own at the end of the
    # request (WATCH pipelines, pubsubs, monitors, client()): what the view dropped is
    # given back by redis-py's __del__ as without the add-on; the rest by ``finish``.
    held: list[Any] | None = None
    callback_set = False
    request_ref: Callable[[], Any] | None = None
    # Every command in order, only when a debug panel asked for it (see TRACE).
    trace: list[tuple[Any, tuple[Any, ...], float, list[Any] | None]] | None = None
    # Set once per client on a subclass (``ClientSet.add``): a Usage sets only 2–4.
    name: str
    options: RedisOptions
    pool: Any
    keep_connection = False  # options.request_connection
    queue: Any = NoQueue  # the blocking pool's queue: ``waiting`` threads
    watch = False  # True when each command needs more than counting (trace, slow)
    server_timing = False
    stats = True  # options.stats: the line may be written
    observer: Any = None  # telemetry.Observer of this client; None when telemetry is off
    cache: Any = None  # client_cache.ClientCache of this client; None when the cache is off
    cache_hits = 0  # reads the client cache answered (client_cache.CachedUsage)
    cache_misses = 0  # reads it could have answered but sent to the server

    def __init__(self, environ: Any, request: Any, in_tween: int | None) -> None:
        """``in_tween``: the thread our tween runs the request in, or None without it."""
        self.environ = environ
        self.waits_start = self.queue.waits
        self.wait_start = self.pool.wait_log.total
        if self.keep_connection:
            self.thread = in_tween or request_thread(request)
        if not in_tween:  # a script's request: the finished callback will need it
            self.request_ref = ref(request) if request is not None else None
        else:
            self.callback_set = True  # NewResponse or our tween finish this request

    @property
    def slow_threshold(self) -> float | None:
        return self.options.slow_command

    def checkout(self) -> Any:
        """The request's connection, from the pool at its first command."""
        connection = self.connection
        if connection is None:
            if not self.callback_set:
                self._finish_callback()
            connection = self.connection = self.pool.get_connection()
        return connection

    def give_back(self) -> None:
        """Other threads wait for a connection: return the request's after its command
        (its next command checks one out again). Nothing else uses it between two of the
        request's commands (a WATCH pipeline takes it over), so under contention a
        request holds a connection no longer than redis-py would."""
        connection = self.connection
        if connection is not None:
            self.connection = None
            self.pool.release(connection)

    def record(
        self,
        name: Any,
        seconds: float,
        args: tuple[Any, ...] = (),
        count: int = 1,
        inner: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """One round trip: a command, or a pipeline of ``count`` commands (``inner``)."""
        self.commands += count
        self.seconds += seconds
        if seconds > self.slowest_seconds:
            self.slowest_seconds = seconds
            self.slowest_name = name
        if self.watch:
            self.watch_command(name, seconds, args, inner)

    def watch_command(
        self, name: Any, seconds: float, args: tuple[Any, ...], inner: list[Any] | None
    ) -> None:
        """The rarer per-command work: the debug panel's trace, slow-command warnings."""
        if self.trace is not None:
            self.trace.append((name, args, seconds, inner))
        if self.slow_threshold is not None and seconds > self.slow_threshold:
            warn_slow_command(self, name, args, seconds)

    def hold(self, thing: Any) -> None:
        """Close ``thing`` (by its ``close``) at the end of the request if still alive and
        not used by another thread since (its ``_redisx_thread``, noted as it is used)."""
        if thing._redisx_thread is None:
            thing._redisx_thread = get_ident()
        if self.held is None:
            self.held = []
            self._finish_callback()
        held = self.held
        if len(held) >= 64:  # drop the references to what is gone (long-running views)
            held[:] = [item for item in held if item() is not None]
        held.append(ref(thing))

    def _finish_callback(self) -> None:
        """A finished callback on the request, registered once, when the request first
        holds something, unless our tween runs this request: then ``NewResponse`` or the
        tween give everything back (~10 µs saved per request, measured in requests).
        Requests made by scripts (``prepare()``) and apps whose explicit
        ``pyramid.tweens`` leave ours out get the callback, which runs even when the
        view raised and no response was made."""
        if not self.callback_set:
            self.callback_set = True
            request = self.request_ref() if self.request_ref is not None else None
            if request is not None:
                request.add_finished_callback(release_request)

    def finish(self) -> None:
        """Give back every connection the request kept (idempotent): close what is still
        alive and was last used by this thread (a WATCH pipeline: UNWATCH on its own
        connection), then return the request's own connection. What another thread used
        last is that thread's: it gives it back itself (``reset``, ``close``, or redis-py's
        ``__del__`` when dropped). Later commands take one per command."""
        self.thread = None
        held, self.held = self.held, None
        me = get_ident()
        for item in held or ():
            thing = item()
            if thing is not None and thing._redisx_thread == me:
                with contextlib.suppress(Exception):
                    thing.close()
        connection, self.connection = self.connection, None
        if connection is not None:
            self.pool.release(connection)

    @property
    def waited(self) -> float:
        """Seconds this request's thread waited for a free connection of this pool."""
        queue = self.queue
        if queue.waits == self.waits_start and queue is not NoQueue:
            return 0.0  # nobody waited in this pool's queue: no thread-local read
        # (NoQueue: a non-blocking pool, or a cluster's node pools sharing one wait log)
        return float(self.pool.wait_log.total - self.wait_start)


def request_thread(request: Any) -> int | None:
    """The thread of a request that runs outside our tween (a script's ``prepare()``, an
    explicit ``pyramid.tweens``): this one, if ``request`` is its current request (Pyramid
    makes it so in the thread that runs it, never in a thread the request is handed to);
    else None, and the request keeps no connection."""
    if request is not None and get_current_request() is request:
        return get_ident()
    return None


def release_request(request: Any) -> None:
    """Finished callback: give back the connections the request's clients still hold."""
    for usage in request.__dict__.get(USAGES) or ():
        usage.finish()


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
