"""The client cache: repeated reads served from this process's memory, kept fresh by
the server's invalidations (``CLIENT TRACKING``); ``redis.client_cache`` turns it on.

One ``ClientCache`` per pool (per distinct option set) per process. Its listener, a
daemon thread started at the first cached read (and again in a forked child), keeps one
connection of its own subscribed to ``__redis__:invalidate`` (RESP2). A pooled
connection is armed with ``CLIENT TRACKING ON REDIRECT <listener id>`` by the party that
owns it, just before its first cached read, and again after any reconnect or a new
listener: the server then tells the listener about every later change to a key that
connection read, whichever connection read it.

What the protocol leaves to the client, and where it is handled here:

* a read whose invalidation overtakes its reply (they travel on two sockets): each read
  marks its keys *pending* before it is sent; an invalidation unmarks them; the reply is
  kept only if its marks survived (``begin``/``store``);
* the server tracks keys per connection, and forgets them when that connection closes:
  the entries a connection read are dropped when it closes or reconnects, found at its
  next use or by the listener, which polls the armed sockets for a hang-up every
  ``TICK`` (``Origin``);
* losing the listener's connection flushes everything, and connections armed for it are
  armed again for the next one before they serve a cached read;
* a Sentinel failover flushes everything (the pool calls ``failed_over``);
* a write sent by this process drops the keys it names as soon as it is answered (read
  your own writes), without waiting for the server's message.

redis-py's own cache (``redis.cache``, ``cache_config``) needs Redis >= 7.4 (no Valkey)
and RESP3 on every connection; its classes are not used here: docs/client_cache.rst says
what they lacked. The hot path (a hit): a clock read, two dict lookups, no lock.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from time import monotonic
from typing import Any, cast

from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .retries import reads_only
from .settings import CLIENT_CACHE_COMMANDS, RedisOptions
from .usage import CACHE_HIT, TRACE, Usage

log = logging.getLogger("pyramid_redisx.client_cache")

CHANNEL = b"__redis__:invalidate"
THREAD_NAME = "pyramid_redisx-client-cache"
TICK = 0.1  # seconds: the listener checks the armed connections (and its stop) this often
HEARTBEAT = 1.0  # seconds of silence before the listener PINGs its connection
RECONNECT_PAUSES = (0.05, 0.1, 0.25, 0.5, 1.0)  # between tries to reconnect the listener
EVICT_TO = 0.98  # a full cache evicts down to this share of its bounds
QUIET_FOR = 0.001  # seconds a quiet poll of the listener's socket is trusted (unheard)
ENTRY_OVERHEAD = 360  # bytes an entry costs besides its reply (measured: bench/README.md)
FLUSHING_COMMANDS = frozenset(("FLUSHALL", "FLUSHDB", "SWAPDB", "SELECT"))  # not by key
_SELECT = ("SELECT", "select", b"SELECT", b"select")
_POLL_CLOSED = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


def _key_bytes(value: Any) -> bytes | None:
    """A key as the server names it (redis-py's encoding: UTF-8), or None if unusual."""
    kind = type(value)
    if kind is bytes:
        return value  # type: ignore[no-any-return]
    if kind is str:
        try:
            return value.encode()  # type: ignore[no-any-return]
        except UnicodeEncodeError:
            return None
    if kind is int:
        return str(value).encode()
    if kind is float:
        return repr(value).encode()
    if kind is memoryview or kind is bytearray:
        return bytes(value)
    return None


def _plain(args: tuple[Any, ...]) -> bool:
    """Arguments a cache key may hold: str, bytes and int (never bool or float, which
    compare equal to ints but are sent differently)."""
    for arg in args:
        kind = type(arg)
        if kind is not str and kind is not bytes and kind is not int:
            return False
    return True


def _size(value: Any) -> int:
    """Bytes a reply takes in memory, estimated (exact enough to bound the cache)."""
    kind = type(value)
    if kind is bytes or kind is str:
        return 40 + len(value)
    if kind is list or kind is set or kind is tuple:
        return 64 + sum(8 + _size(item) for item in value)
    if kind is dict:
        return 100 + sum(24 + _size(k) + _size(v) for k, v in value.items())
    return 32  # None, int, float


class _Pollers(threading.local):
    """Each thread's poll object for the listener's socket (``ClientCache.unheard``)."""

    sock: Any = None
    poller: Any = None


class Entry:
    """One cached reply: the parsed value (copied on each hit when mutable)."""

    __slots__ = ("copy", "expires", "keys", "numeric", "origin", "plain", "size", "used", "value")

    def __init__(
        self,
        value: Any,
        keys: tuple[bytes, ...],
        size: int,
        numeric: bool,
        origin: Origin,
        expires: float | None,
    ) -> None:
        kind = type(value)
        self.copy = kind if kind is list or kind is dict or kind is set else None
        self.value = value if self.copy is None else self.copy(value)  # the caller's is its own
        self.keys = keys
        self.size = size
        self.numeric = numeric  # its arguments hold ints: a hit checks the types
        self.origin = origin
        self.expires = expires
        self.plain = not numeric and expires is None  # a hit needs no further check
        self.used = False  # read since the eviction hand last passed (second chance)

    def usable(self, args: tuple[Any, ...]) -> bool:
        """For a hit: not expired (``client_cache_ttl``), and ints in ``args`` are ints."""
        if self.expires is not None and self.expires <= monotonic():
            return False
        return not self.numeric or _plain(args)


class Origin:
    """One socket of one pooled connection, armed for one listener: the entries read
    through it lose their invalidations when it closes (found by ``entry.origin``)."""

    __slots__ = ("__weakref__", "connection", "listener_id", "sock")

    def __init__(self, connection: Any, listener_id: int) -> None:
        self.connection = weakref.ref(connection)
        self.sock = connection._sock
        self.listener_id = listener_id

    def closed(self, poller: Any = None) -> bool:
        """True when the server may have forgotten this connection's tracked keys: it was
        dropped, closed or reconnected here, or the server hung up (a poll, no read)."""
        connection = self.connection()
        sock = self.sock
        if connection is None or connection._sock is not sock or sock.fileno() == -1:
            return True
        if poller is None:
            return False
        try:
            poller.register(sock, _POLL_CLOSED)
            closed = bool(poller.poll(0))
            poller.unregister(sock)
        except (OSError, ValueError):
            return True
        return closed


class ClientCache:
    """The cached replies of one pool's clients in this process, and their listener."""

    def __init__(self, options: RedisOptions, pool: Any) -> None:
        self.pool = pool
        self.served = frozenset(options.client_cache_commands)
        self.spec = {name: CLIENT_CACHE_COMMANDS[name] for name in self.served}
        self.max_keys = options.client_cache_max_keys
        self.max_bytes = options.client_cache_max_bytes
        self.ttl = options.client_cache_ttl
        self.heartbeat_timeout = options.socket_timeout
        # Figures (process-wide, since start): read by stats, health, toolbar, telemetry.
        self.hits = self.misses = self.invalidations = self.flushes = self.evictions = 0
        self._reset_state()
        self.closed = False
        pool.client_cache = self  # telemetry finds it by the pool
        failover_callbacks = getattr(pool, "failover_callbacks", None)
        if failover_callbacks is not None:  # a Sentinel pool (sentinel.py)
            pool.failover_callbacks = (*failover_callbacks, self.failed_over)
        CACHES.add(self)

    def _reset_state(self) -> None:
        """Empty, not listening, no thread: at start and in a forked child."""
        self.lock = threading.Lock()
        self.entries: OrderedDict[tuple[Any, ...], Entry] = OrderedDict()
        self.by_key: dict[bytes, Any] = {}  # key -> the entry's args, or a set of them
        self.pending: dict[bytes, object] = {}  # key -> the token of the read in flight
        self.origins: dict[int, Origin] = {}  # id(origin) -> origin, armed for the listener
        self.bytes = 0
        self.longest_key = 0  # a write's argument longer than this names no cached key
        self.listener_id: int | None = None  # the listener's CLIENT ID while it listens
        self.listener_sock: Any = None
        self.draining = False  # the listener is reading what the server sent
        self.quiet_until = 0.0  # the listener's socket was found quiet this recently
        self.pollers = _Pollers()
        self.epoch = 0  # failovers seen: a listener connected before one is not used
        self.refused: str | None = None  # why the server refused tracking (cache off)
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.lost_logged = False

    @property
    def names(self) -> str:
        return ", ".join(getattr(self.pool, "client_names", ())) or "?"

    # ------------------------------------------------------------ entries
    def begin(self, keys: tuple[bytes, ...]) -> object:
        """Mark ``keys`` as read by a command about to be sent; returns its token. No
        lock: each mark is one dict store, and a mark lost to a concurrent reader's or
        unmarked by anyone only makes a read not kept (``store`` checks under the lock)."""
        token = object()
        pending = self.pending
        for key in keys:
            pending[key] = token
        return token

    def abandon(self, keys: tuple[bytes, ...], token: object) -> None:
        """The read failed: unmark its keys (another reader's mark may go too: that read
        is then not kept, never wrongly kept)."""
        pending = self.pending
        for key in keys:
            if pending.get(key) is token:
                pending.pop(key, None)

    def store(
        self,
        args: tuple[Any, ...],
        keys: tuple[bytes, ...],
        token: object,
        value: Any,
        origin: Origin,
        numeric: bool,
    ) -> bool:
        """Keep ``value`` for ``args`` if no invalidation of its keys came while it was in
        flight and its connection (``origin``, on the same socket: the caller checked) is
        still armed for the current listener."""
        kind = type(value)
        size = ENTRY_OVERHEAD + (40 + len(value) if kind is bytes or kind is str else _size(value))
        for key in keys:
            size += len(key)
        with self.lock:
            pending = self.pending
            fresh = True
            for key in keys:
                if pending.pop(key, None) is not token:
                    fresh = False
            if (
                not fresh
                or origin.listener_id != self.listener_id
                or id(origin) not in self.origins
                or size > self.max_bytes
            ):
                return False
            entries = self.entries
            old = entries.pop(args, None)
            if old is not None:
                self._unindex(args, old)
            expires = None if self.ttl is None else monotonic() + self.ttl
            entries[args] = Entry(value, keys, size, numeric, origin, expires)
            by_key = self.by_key
            for key in keys:
                holders = by_key.get(key)
                if holders is None:
                    by_key[key] = args
                    if len(key) > self.longest_key:
                        self.longest_key = len(key)
                elif type(holders) is set:
                    holders.add(args)
                elif holders != args:
                    by_key[key] = {holders, args}
            self.bytes += size
            if len(entries) > self.max_keys or self.bytes > self.max_bytes:
                self._evict()
            return True

    def _unindex(self, args: tuple[Any, ...], entry: Entry) -> None:
        """Forget ``entry`` (already out of ``entries``) in the key index. Lock held."""
        self.bytes -= entry.size
        by_key = self.by_key
        for key in entry.keys:
            holders = by_key.get(key)
            if holders is None:
                continue
            if type(holders) is set:
                holders.discard(args)
                if len(holders) == 1:
                    by_key[key] = next(iter(holders))
                elif not holders:
                    del by_key[key]
            elif holders == args:
                del by_key[key]

    def _evict(self) -> None:
        """Second chance (CLOCK): the oldest entry goes, unless read since the hand last
        passed it; then it goes to the back. Approximates LRU without a lock on hits.
        Down to ``EVICT_TO`` of the bounds at once: a full cache does not evict at every
        store."""
        entries = self.entries
        keys_to = int(self.max_keys * EVICT_TO)
        bytes_to = self.max_bytes * EVICT_TO
        popitem, unindex = entries.popitem, self._unindex
        evicted = 0
        for _ in range(2 * len(entries) + 1):
            if len(entries) <= keys_to and self.bytes <= bytes_to:
                break
            args, entry = popitem(last=False)
            if entry.used:
                entry.used = False
                entries[args] = entry
            else:
                unindex(args, entry)
                evicted += 1
        self.evictions += evicted

    def _drop_key(self, key: bytes) -> int:
        """Forget every entry that read ``key`` and any read of it in flight. Lock held."""
        self.pending.pop(key, None)
        holders = self.by_key.get(key)
        if holders is None:
            return 0
        dropped = 0
        for args in list(holders) if type(holders) is set else (holders,):
            entry = self.entries.pop(args, None)
            if entry is not None:
                self._unindex(args, entry)
                dropped += 1
        return dropped

    def invalidate(self, keys: Any) -> None:
        """The server says ``keys`` changed (None: everything, as after FLUSHALL)."""
        if keys is None:
            self.flush()
            return
        with self.lock:
            dropped = 0
            for key in keys:
                dropped += self._drop_key(key)
            self.invalidations += dropped

    def wrote(self, args: tuple[Any, ...]) -> None:
        """This process sent a write (answered, or lost after it was sent): drop what it
        names now, before its caller reads again. Every argument is taken as a key that
        may be cached (a value that happens to name a cached key drops it too)."""
        if not (self.entries or self.pending):
            return
        name = args[0]
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(name, str) and name.upper() in FLUSHING_COMMANDS:
            self.flush()
            return
        longest = self.longest_key
        keys = []
        for arg in args[1:]:
            kind = type(arg)
            if (kind is bytes or kind is str) and len(arg) > longest:
                continue  # longer than any cached key (a value): no hash of it
            key = _key_bytes(arg)
            if key is not None:
                keys.append(key)
        if keys:
            with self.lock:
                dropped = 0
                for key in keys:
                    dropped += self._drop_key(key)
                self.invalidations += dropped

    def wrote_commands(self, commands: Any) -> None:
        """A pipeline or MULTI/EXEC was sent: ``wrote`` for each command that writes."""
        if not (self.entries or self.pending):
            return
        for args, _ in commands:
            if not reads_only(args[0]):
                self.wrote(args)

    def flush(self) -> None:
        """Forget every entry and every read in flight."""
        with self.lock:
            self.entries.clear()
            self.by_key.clear()
            self.pending.clear()
            self.bytes = 0
            self.flushes += 1

    def clear(self) -> None:
        """Forget every entry (the replies' parsing changed: set_response_callback)."""
        self.flush()

    def _drop_origin(self, origin: Origin) -> None:
        """``origin``'s connection closed: the server no longer tracks what it read."""
        with self.lock:
            self.origins.pop(id(origin), None)
            # A walk of every entry: connections close rarely, entries are read often.
            entries = self.entries
            gone = [args for args, entry in entries.items() if entry.origin is origin]
            for args in gone:
                self._unindex(args, entries.pop(args))
            self.invalidations += len(gone)

    # ------------------------------------------------------------ connections
    def arm(self, connection: Any, listener_id: int) -> Origin | None:
        """Run ``CLIENT TRACKING ON REDIRECT <listener_id>`` on ``connection`` (its owner
        is sending a cached read on it): the origin of the entries it will read, or None
        when it cannot be armed now (the read is then not cached)."""
        if connection.__dict__.get("_redisx_selected"):
            return None  # SELECT ran on it: its replies may come from another database
        previous = connection.__dict__.get("_redisx_tracking")
        if previous is not None and id(previous) in self.origins:
            self._drop_origin(previous)  # reconnected, or armed for an older listener
        if self.socket_unread():
            return None  # the listener may be gone: wait until it has read its socket
        if connection._sock is None:
            connection.connect()  # an error here is retried like the read's own connect
        connection.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", listener_id)
        try:
            connection.read_response()
        except ResponseError as exc:
            self.arm_refused(exc, listener_id)
            return None
        origin = Origin(connection, listener_id)
        connection._redisx_tracking = origin
        with self.lock:
            if self.listener_id != listener_id:
                return None  # a new listener meanwhile: armed for nothing
            self.origins[id(origin)] = origin
        return origin

    def unheard(self) -> bool:
        """True when the server sent the listener something it has not applied yet (an
        invalidation, or the end of its connection), or there is no listener: a kept
        reply may be stale then. One ``poll`` of the listener's socket, which only looks
        (the listener alone reads it), at most once per ``QUIET_FOR`` per process: a
        reply is not served once the server's message saying it changed has been on this
        machine for ``QUIET_FOR``, however late the listener thread runs."""
        if self.listener_sock is None or self.draining:
            return True
        now = monotonic()
        if now < self.quiet_until:
            return False
        if self.socket_unread():
            return True
        self.quiet_until = now + QUIET_FOR  # nothing had arrived by ``now``
        return False

    def socket_unread(self) -> bool:
        """The poll behind ``unheard``, without its window."""
        sock = self.listener_sock
        if sock is None or self.draining:
            return True
        pollers = self.pollers
        if pollers.sock is not sock:  # one poll object per thread (they are not shared)
            poller = select.poll()
            poller.register(sock, select.POLLIN | _POLL_CLOSED)
            pollers.poller, pollers.sock = poller, sock
        try:
            return bool(pollers.poller.poll(0))
        except (OSError, ValueError):
            return True

    def arm_refused(self, error: ResponseError, listener_id: int) -> None:
        text = str(error)
        if "does not exist" in text:  # the listener is gone: it will be replaced
            self.lost(listener_id, "the server no longer knows the invalidation connection")
            return
        self.refuse(text)

    def refuse(self, why: str) -> None:
        """The server refuses tracking (NOPERM, an old server): off for good, said once."""
        if self.refused is None:
            self.refused = why
            log.warning(
                "redis client=%s client cache off: the server refused invalidations (%s); "
                "reads go to the server",
                self.names, why,
            )  # fmt: skip
        self.stop.set()
        self.lost(None, None)

    def check_origins(self) -> None:
        """Listener, every tick: drop the entries of armed connections that closed."""
        origins = list(self.origins.values())
        if not origins:
            return
        poller = select.poll()
        for origin in origins:
            if origin.closed(poller):
                self._drop_origin(origin)

    # ------------------------------------------------------------ the listener
    def listening(self, listener_id: int, sock: Any, epoch: int) -> bool:
        """The listener is subscribed as ``listener_id``: cache from now on."""
        with self.lock:
            if epoch != self.epoch or self.closed:
                return False
            self.entries.clear()
            self.by_key.clear()
            self.pending.clear()
            self.origins.clear()
            self.bytes = 0
            self.listener_id = listener_id
            self.listener_sock = sock
            self.draining = False
            self.quiet_until = 0.0
        if self.lost_logged:
            self.lost_logged = False
            log.info("redis client=%s client cache: invalidation connection back", self.names)
        return True

    def lost(self, listener_id: int | None, why: str | None) -> None:
        """The listener's connection is gone (or unusable): stop caching, flush."""
        with self.lock:
            if listener_id is not None and listener_id != self.listener_id:
                return  # already replaced
            self.listener_id = None
            self.listener_sock = None
            self.origins.clear()
        self.flush()
        if why is not None and not self.lost_logged:
            self.lost_logged = True
            log.warning(
                "redis client=%s client cache flushed: %s; reads go to the server until "
                "the invalidation connection is back",
                self.names, why,
            )  # fmt: skip

    def failed_over(self) -> None:
        """The Sentinel pool moved to a new master: the entries came from the old one."""
        with self.lock:
            self.epoch += 1
            listener_id = self.listener_id
        self.lost(listener_id, "a Sentinel failover")

    def ensure_listening(self) -> None:
        """Start the listener thread (first cached read of this process)."""
        if self.thread is not None or self.closed or self.refused is not None:
            return
        with self.lock:
            if self.thread is not None:
                return
            self.stop = threading.Event()
            self.thread = threading.Thread(
                target=_listen, args=(weakref.ref(self), self.stop), name=THREAD_NAME, daemon=True
            )
        self.thread.start()

    def listener_connection(self) -> Any:
        """A connection like the pool's, in RESP2 (invalidations as pubsub messages),
        undecoded, without retry or health check: the listener reconnects itself."""
        kwargs = dict(self.pool.connection_kwargs)
        kwargs.update(
            protocol=2, decode_responses=False, health_check_interval=0, retry=Retry(NoBackoff(), 0)
        )
        return self.pool.connection_class(**kwargs)

    def close(self, timeout: float = 2 * TICK) -> None:
        """Stop the listener and forget everything (the app's pools are closing)."""
        self.closed = True
        self.stop.set()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.lost(None, None)

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's entries, connections and thread are not ours."""
        self._reset_state()

    def figures(self) -> dict[str, Any]:
        """The cache's state, for the health view, the toolbar and telemetry."""
        return {
            "listening": self.listener_id is not None,
            "entries": len(self.entries),
            "bytes": self.bytes,
            "hits": self.hits,
            "misses": self.misses,
            "invalidations": self.invalidations,
            "flushes": self.flushes,
            "evictions": self.evictions,
        }


def _listen(cache_ref: Callable[[], ClientCache | None], stop: threading.Event) -> None:
    """The listener thread of one cache: (re)connect, subscribe, apply invalidations."""
    failures = 0
    while not stop.is_set():
        cache = cache_ref()
        if cache is None:
            return
        connection = cache.listener_connection()
        listener_id = None
        try:
            epoch = cache.epoch
            connection.connect()
            try:
                connection.send_command("CLIENT", "ID")
                listener_id = int(connection.read_response())
                connection.send_command("SUBSCRIBE", CHANNEL)
                connection.read_response()
            except ResponseError as exc:  # NOPERM (ACL), an old server: off, said once
                cache.refuse(str(exc))
                return
            if not cache.listening(listener_id, connection._sock, epoch):
                continue  # a failover while connecting: connect again
            failures = 0
            del cache  # only the weak reference while waiting
            _serve(cache_ref, connection, listener_id, stop, epoch)
        except (RedisConnectionError, RedisTimeoutError, ResponseError, OSError) as exc:
            cache = cache_ref()
            if cache is not None:
                why = f"the invalidation connection failed ({type(exc).__name__}: {exc})"
                cache.lost(listener_id, why)
            failures += 1
        except Exception:  # the listener must never take the process down
            log.exception("client cache listener stopped by an unexpected error")
            cache = cache_ref()
            if cache is not None:
                cache.lost(listener_id, None)
            return
        finally:
            with contextlib.suppress(Exception):
                connection.disconnect()
            cache = None
        stop.wait(RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)] if failures else 0)


class _Moved(RedisConnectionError):
    """A failover happened: the listener reconnects to the new master."""


def _serve(
    cache_ref: Callable[[], ClientCache | None],
    connection: Any,
    listener_id: int,
    stop: threading.Event,
    epoch: int,
) -> None:
    """Read invalidations until stopped or the connection fails (raises then)."""
    heard = monotonic()
    pinged: float | None = None
    waiter = select.poll()  # waits without reading: ``unheard`` sees the data meanwhile
    waiter.register(connection._sock, select.POLLIN | _POLL_CLOSED)
    while not stop.is_set():
        ready = waiter.poll(TICK * 1000)
        cache = cache_ref()
        if cache is None or cache.listener_id != listener_id:
            return  # gone, closed or replaced
        if ready:
            # Set before the first byte is taken off the socket; cleared only when all
            # that came is applied (a failure leaves it set until ``lost`` flushes).
            cache.draining = True
            while connection.can_read(timeout=0):
                message = connection.read_response()
                kind = message[0] if isinstance(message, list) and message else None
                if kind == b"message" and message[1] == CHANNEL:
                    cache.invalidate(message[2])
                elif kind == b"pong":
                    pinged = None
            cache.draining = False
            heard = monotonic()
        if cache.epoch != epoch:
            raise _Moved("a Sentinel failover")
        cache.check_origins()
        now = monotonic()
        if pinged is not None and now - pinged > cache.heartbeat_timeout:
            raise RedisTimeoutError(f"no answer to PING within {cache.heartbeat_timeout:g} s")
        if pinged is None and now - heard >= HEARTBEAT:
            connection.send_command("PING")
            pinged = now
        del cache


# ---------------------------------------------------------------- the client's hooks
def execute_command(client: Any, *args: Any, **options: Any) -> Any:
    """``_execute_command`` of a client with a cache (``client.CachedRedis``): a read the
    cache serves returns its kept reply (no connection, no round trip); anything else
    goes on as without the cache (``send`` below sees it on its connection)."""
    cache = client._redisx_cache
    if (
        cache is None
        or args[0] not in client._redisx_served
        or (options and (len(options) != 1 or "keys" not in options))
    ):
        return client._redisx_uncached(*args, **options)
    # First whether the server said anything not yet applied, then the lookup: an entry
    # found after that check outlived every message that had arrived by then. (The
    # check's common case inline: a quiet poll of the listener's socket is trusted for
    # QUIET_FOR; ``unheard`` polls again.)
    entry = None
    if not (
        cache.draining
        or cache.listener_sock is None
        or (monotonic() >= cache.quiet_until and cache.unheard())
    ):
        try:  # noqa: SIM105 - suppress() costs a context manager on every hit
            entry = cache.entries.get(args)
        except TypeError:  # an unhashable argument: never cached
            pass
    if entry is not None and (entry.plain or entry.usable(args)):
        entry.used = True
        cache.hits += 1  # CPython runs += on an attribute without a thread switch
        # A request's copy has its Usage once it sent a command (or is traced): a hit
        # makes none (client.CachedStartUsage); the first command takes these over.
        state = client.__dict__
        hits = state.get("_redisx_hits")
        if hits is not None:  # a copy without its Usage yet, not traced: count here
            state["_redisx_hits"] = hits + 1
        else:
            _count_hit(client, state, args)
        return entry.value if entry.copy is None else entry.copy(entry.value)
    cache.misses += 1
    usage = client._redisx_usage
    if usage is not None:
        usage.cache_misses += 1
    if cache.listener_id is None:
        cache.ensure_listening()
    return client._redisx_uncached(*args, **options)


def _count_hit(client: Any, state: dict[str, Any], args: tuple[Any, ...]) -> None:
    """A hit on a client whose hits are not counted on the copy (``_redisx_hits``): on
    its Usage, or (a request's first hit through a lazily bound copy) on the copy from
    now on, unless the toolbar traces the request: then its Usage starts now."""
    usage = state.get("_redisx_usage")
    if usage is None:
        if not client._redisx_copy:
            return  # the process-wide client: counted on the cache only
        request = client._redisx_request()
        if request is None or TRACE not in request.__dict__:
            state["_redisx_hits"] = 1
            return
        usage = client._redisx_usage  # the toolbar lists every read: started now
    usage.cache_hits += 1
    if usage.trace is not None:  # the toolbar's list of commands
        usage.trace.append((args[0], args, 0.0, CACHE_HIT))


def send(
    client: Any, conn: Any, command_name: Any, args: tuple[Any, ...], options: dict[str, Any]
) -> Any:
    """``_redisx_send`` of a client with a cache: one command on ``conn`` (its owner's
    thread). A read the cache serves is sent on an armed connection and its reply kept;
    a write drops what it names once answered."""
    name = command_name
    cache = client._redisx_cache
    plain = client._redisx_plain_send  # client._send_safely
    if cache is None:
        return plain(client, conn, name, args, options)
    spec = cache.spec.get(name) if name in client._redisx_served else None
    if spec is None:  # not a read the cache serves (or this client's replies are its own)
        if reads_only(name):
            return plain(client, conn, name, args, options)
        try:
            return plain(client, conn, name, args, options)
        finally:
            cache.wrote(args)
            if name in _SELECT:  # this connection reads another database now: never armed
                conn._redisx_selected = True  # again (redis-py selects its own on reconnect)
                conn._redisx_tracking = None
    listener_id = cache.listener_id
    if (
        listener_id is None
        or (options and (len(options) != 1 or "keys" not in options))
        or len(args) < 2
    ):
        return plain(client, conn, name, args, options)
    numeric = False  # the arguments: str, bytes and int only (``_plain``), in one pass
    for arg in args:
        kind = type(arg)
        if kind is int:
            numeric = True
        elif kind is not str and kind is not bytes:
            return plain(client, conn, name, args, options)
    # The keys as the server names them (redis-py's encoding: UTF-8); None for a str
    # that cannot be sent (redis-py raises on sending it).
    if spec == "first":
        key = args[1]
        named: tuple[bytes | None, ...] = (key if type(key) is bytes else _key_bytes(key),)
    else:
        named = tuple([_key_bytes(arg) for arg in args[1:]])
    if None in named:
        return plain(client, conn, name, args, options)
    keys = cast(tuple[bytes, ...], named)
    origin = conn.__dict__.get("_redisx_tracking")
    sock = conn._sock
    if (
        sock is None
        or origin is None
        or origin.sock is not sock
        or origin.listener_id != listener_id
    ):
        origin = cache.arm(conn, listener_id)
        if origin is None:
            return plain(client, conn, name, args, options)
        sock = conn._sock
    token = cache.begin(keys)
    try:
        value = plain(client, conn, name, args, options)
    except BaseException:
        cache.abandon(keys, token)
        raise
    if conn._sock is sock:  # not reconnected meanwhile (a health check may reconnect)
        cache.store(args, keys, token, value, origin, numeric)
    else:
        cache.abandon(keys, token)
    return value


class CachedUsage(Usage):
    """A request's ``Usage`` of a client with a cache: hits and misses counted, and the
    process's invalidations while the request ran (``stats``)."""

    cache: Any = None  # the ClientCache, set per client (client.ClientSet.add)

    def __init__(self, environ: Any, request: Any, in_tween: int | None) -> None:
        super().__init__(environ, request, in_tween)
        self.cache_mark = self.cache.invalidations + self.cache.flushes

    @property
    def cache_invalidations(self) -> int:
        """Entries the process dropped since this request started, and flushes."""
        return int(self.cache.invalidations + self.cache.flushes - self.cache_mark)


CACHES: weakref.WeakSet[ClientCache] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for cache in list(CACHES):
        cache.forget_after_fork()


def _stop_all() -> None:
    for cache in list(CACHES):
        cache.stop.set()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_stop_all)
