"""``redis.*`` settings → frozen options, by one table and pure functions.

Every key is a row of ``CLIENT_SETTINGS`` or ``APP_SETTINGS``: (name, converter,
default, what it means). Converters take an ini string *or* a Python value (the
``add_redis_client`` directive) and raise ``ValueError(<what is accepted>)``; the
parser turns that into a ``RedisSettingsError`` naming the full key. Nothing here
talks to Redis or keeps state: settings in, options (or an error) out.

Precedence for one option of client ``<name>`` (``default`` reads plain ``redis.<key>``),
first found wins:

* the client has its own URL (``redis.<name>.url``, the directive's ``url``, or it is
  ``default``): a query argument of that URL (as in redis-py's ``from_url``), the
  directive's keyword argument or ``redis.<name>.<key>``, ``redis.<key>``, the default;
* it inherits ``redis.url``: its own key, the URL's query argument, ``redis.<key>``,
  the default — so a client's own ``socket_timeout`` is never overridden by an app URL.

Credentials (``username``, ``password``): a separate key beats the URL's userinfo and
query at the same level; so ``redis.<name>.password`` > the client's own URL >
``redis.password`` > an inherited URL's credentials (which then match ``default``'s).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from .errors import RedisSettingsError
from .redact import MASK, SECRET_KEYS, USERINFO_BREAKERS, looks_secret, redact_value

log = logging.getLogger("pyramid_redisx")

PREFIX = "redis."
DEFAULT_CLIENT = "default"
# Sub-namespaces owned by other packages (pyramid_session_redis, the HTTP cache).
FOREIGN_NAMESPACES = ("sessions", "http_cache")


# ---------------------------------------------------------------- converters
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})
_BOOL_WORDS = "true/false, yes/no, on/off, 1/0 (any case)"


def to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"expected a boolean: {_BOOL_WORDS}")


_UNITS = {
    "ms": 0.001, "msec": 0.001, "msecs": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}  # fmt: skip
_SPAN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.I)
_DURATION_WORDS = "seconds (0.2) or a span (200 milliseconds, 3 seconds, 250ms)"


def _seconds(value: object, words: str = _DURATION_WORDS) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration: {words}")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _SPAN.match(value)
        if match:
            unit = match.group(2).lower() or "s"
            if unit in _UNITS:
                return float(match.group(1)) * _UNITS[unit]
    raise ValueError(f"expected a duration: {words}")


# Longest duration accepted by default: the socket layer refuses timeouts past ~9.2e9 s
# (OverflowError at the first request), and no Redis wait should come near a day. Keys
# that are not waits (an HTTP cache's expiry) pass a longer ``limit``.
MAX_SECONDS = 86_400.0


@dataclass(frozen=True)
class duration:  # a converter, called like the functions beside it
    """A converter to seconds. ``limit`` is (the longest accepted, in seconds, as a span in
    words); ``words`` says what is accepted, and every example it gives must convert.

    The converters with parameters are frozen dataclasses rather than closures: the table
    builds them at import, and the check in ``__call__`` then runs at each conversion,
    where ``make mutation`` can put its bugs in (docs/mutation.rst)."""

    minimum: float = 0.0
    allow_zero: bool = field(default=True, kw_only=True)
    limit: tuple[float, str] = field(default=(MAX_SECONDS, "one day"), kw_only=True)
    words: str = field(default=_DURATION_WORDS, kw_only=True)

    def __call__(self, value: object) -> float:
        seconds = _seconds(value, self.words)
        if seconds < self.minimum or (seconds == 0 and not self.allow_zero) or seconds != seconds:
            more = "greater than 0" if not self.allow_zero else f"at least {self.minimum:g}"
            raise ValueError(f"expected a duration {more}: {self.words}")
        longest, longest_words = self.limit
        if seconds > longest:
            raise ValueError(
                f"expected a duration of at most {longest:.0f} seconds ({longest_words})"
            )
        return seconds


@dataclass(frozen=True)
class optional:  # a converter, called like the functions beside it
    """An empty string (or None) means unset; anything else goes to ``convert``."""

    convert: Callable[[object], Any]

    def __call__(self, value: object) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return self.convert(value)


@dataclass(frozen=True)
class integer:  # a converter, called like the functions beside it
    """A whole number from ``low`` to ``high``."""

    low: int
    high: int

    def __call__(self, value: object) -> int:
        expected = f"expected a whole number from {self.low} to {self.high}"
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(expected)
        try:
            number: int = int(value.strip() if isinstance(value, str) else value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ValueError(expected) from None
        if not self.low <= number <= self.high:
            raise ValueError(expected)
        return number


def ratio(value: object) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0 < number <= 1:
        raise ValueError("expected a fraction greater than 0 and at most 1 (e.g. 0.8)")
    return number


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}


def log_level(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().lower() in _LEVELS:
        return _LEVELS[value.strip().lower()]
    raise ValueError("expected a logging level: debug, info, warning, error or critical")


def startup_check_mode(value: object) -> str:
    if isinstance(value, str) and value.strip().lower() == "warn":
        return "warn"
    try:
        return "true" if to_bool(value) else "false"
    except ValueError:
        raise ValueError(f"expected true, false or warn ({_BOOL_WORDS})") from None


def protocol(value: object) -> int:
    if str(value).strip() in ("2", "3") and not isinstance(value, bool):
        return int(str(value).strip())
    raise ValueError("expected 2 or 3 (RESP version)")


def text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text")
    return value.strip()


def version(value: object) -> str:
    """A redis-py version for ``redis.allow_redis_py``: ``8.3`` (any 8.3.x) or ``8.3.0``."""
    if isinstance(value, str) and re.fullmatch(r"\d+\.\d+(\.\d+)?", value.strip()):
        return value.strip()
    raise ValueError("expected a redis-py version: 8.3 (any 8.3.x) or 8.3.0")


def client_name(value: object) -> str:
    name = text(value)
    if not name or any(ch.isspace() for ch in name):
        raise ValueError("expected a name without spaces (CLIENT SETNAME rejects them)")
    return name


def secret(value: object) -> str:
    """A password, or ``env:VARNAME`` to read it from the environment."""
    if not isinstance(value, str):
        raise ValueError("expected text or env:VARNAME")
    if value.startswith("env:"):
        variable = value[4:].strip()
        if not variable:
            raise ValueError("expected env:VARNAME with a variable name")
        if variable not in os.environ:
            raise ValueError(f"environment variable {variable} is not set")
        return os.environ[variable]
    return value


def existing_file(value: object) -> str:
    path = text(value)
    if not os.path.isfile(path):
        raise ValueError(f"expected the path of an existing file; {path!r} is not one")
    return path


def cert_reqs(value: object) -> str:
    word = text(value).lower()
    if word not in ("none", "optional", "required"):
        raise ValueError("expected none, optional or required")
    return word


def host_port_list(value: object) -> tuple[tuple[str, int], ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    accepted = "expected host:port pairs separated by spaces or commas"
    result = []
    for item in items:
        host, sep, port = str(item).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(accepted)
        result.append((host.strip("[]"), int(port)))
    if not result:
        raise ValueError(accepted)
    return tuple(result)


def sentinel_role(value: object) -> str:
    word = text(value).lower()
    if word not in ("master", "replica"):
        raise ValueError("expected master or replica")
    return word


BALANCING = ("round_robin", "round_robin_replicas", "random", "random_replica")


def balancing(value: object) -> str:
    word = text(value).lower()
    if word not in BALANCING:
        raise ValueError(f"expected one of {', '.join(BALANCING)}")
    return word


STATEMENT_LEVELS = ("keys", "command", "none")


def statement_level(value: object) -> str:
    word = text(value).lower()
    if word not in STATEMENT_LEVELS:
        raise ValueError(
            "expected keys (command names and first keys), command (names only) or none"
        )
    return word


def url(value: object) -> str:
    """Validate a Redis URL; it is taken apart by ``split_url``."""
    if not isinstance(value, str):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    split_url(value)
    return value.strip()


def names(value: object) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    return tuple(str(item) for item in items)


_SIZE_UNITS = {
    "": 1, "b": 1, "byte": 1, "bytes": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([a-z]*)\s*$", re.I)


def byte_size(low: int, high: int) -> Callable[[object], int]:
    """A size in bytes: ``1048576``, ``512 KB``, ``64MB``, ``1 GiB`` (units of 1024)."""
    words = (
        f"a size from {low} bytes to {high // 1024**3} GB: bytes (1048576) or 512 KB, 64 MB, 1 GB"
    )

    def convert(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            match = _SIZE.match(value) if isinstance(value, str) else None
            if match is None or match.group(2).lower() not in _SIZE_UNITS:
                raise ValueError(f"expected {words}")
            number = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
        if not low <= number <= high:
            raise ValueError(f"expected {words}")
        return number

    convert.shows_bytes = True  # type: ignore[attr-defined]  # docs: default in MB
    return convert


# Read commands the client cache can serve (docs/client_cache.rst), and which of their
# arguments are the keys they read: the first one, or every one (MGET, EXISTS). Each
# reply depends only on the keys' values and the arguments (never on the clock or chance:
# TTL, SRANDMEMBER are not here), and redis-py parses it without per-call options.
CLIENT_CACHE_COMMANDS: dict[str, str] = {
    **dict.fromkeys(("MGET", "EXISTS"), "all"),
    **dict.fromkeys(
        """GET GETRANGE STRLEN GETBIT BITCOUNT HGET HMGET HGETALL HEXISTS HLEN HKEYS HVALS
        HSTRLEN SMEMBERS SISMEMBER SMISMEMBER SCARD ZSCORE ZMSCORE ZCARD LRANGE LLEN LINDEX
        TYPE""".split(),  # noqa: SIM905 - words read better as words
        "first",
    ),
}
DEFAULT_CLIENT_CACHE_COMMANDS = tuple(
    """GET MGET EXISTS STRLEN HGET HMGET HGETALL HEXISTS HLEN SMEMBERS SISMEMBER SCARD
    ZSCORE ZCARD LRANGE LLEN LINDEX""".split()  # noqa: SIM905
)


def cache_commands(value: object) -> tuple[str, ...]:
    accepted = "expected read command names from: " + " ".join(sorted(CLIENT_CACHE_COMMANDS))
    try:
        chosen = tuple(dict.fromkeys(name.upper() for name in names(value)))
    except (TypeError, AttributeError):
        raise ValueError(accepted) from None
    if not chosen:
        raise ValueError(accepted)
    for name in chosen:
        if name not in CLIENT_CACHE_COMMANDS:
            raise ValueError(f"{accepted}; {name!r} is not one")
    return chosen


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class Setting:
    name: str
    convert: Callable[[object], Any]
    default: Any
    doc: str


DEFAULT_URL = "redis://localhost:6379/0"

CLIENT_SETTINGS: tuple[Setting, ...] = (
    Setting("url", url, DEFAULT_URL, "redis://, rediss:// (TLS) or unix:// URL; query arguments win over separate keys"),
    Setting("max_connections", integer(1, 100_000), 32, "connections per process, per pool"),
    Setting("blocking", to_bool, True, "wait for a free connection instead of failing with 'Too many connections'"),
    Setting("pool_timeout", duration(), 5.0, "longest wait for a free connection (blocking pool)"),
    Setting("socket_connect_timeout", duration(allow_zero=False), 2.0, "longest wait to open a connection"),
    Setting("socket_timeout", duration(allow_zero=False), 2.0, "longest wait for a reply, per attempt"),
    Setting("socket_keepalive", to_bool, True, "TCP keepalive (ignored for unix://)"),
    Setting("health_check_interval", duration(), 30.0, "PING a connection idle this long before use (0 = off)"),
    Setting("retries", integer(0, 20), 3, "retries after a connection error, exponential backoff with jitter"),
    Setting("retry_on_timeout", to_bool, False, "also retry after a read timeout (may apply a command twice)"),
    Setting("retry_writes", to_bool, False, "also retry a command that may change data after the connection failed once it was sent (may apply it twice)"),
    Setting("request_connection", to_bool, True, "a request keeps the connection of its first command until it ends (needs max_connections >= server threads)"),
    Setting("retry_backoff_cap", duration(), 0.25, "longest pause between two tries"),
    Setting("decode_responses", to_bool, False, "return str instead of bytes"),
    Setting("client_name", optional(client_name), None, "CLIENT SETNAME on each connection (off: proxies reject it)"),
    Setting("username", optional(text), None, "ACL user; overrides the URL's"),
    Setting("password", optional(secret), None, "password or env:VARNAME; overrides the URL's"),
    Setting("ssl_ca_certs", optional(existing_file), None, "CA bundle for rediss://"),
    Setting("ssl_certfile", optional(existing_file), None, "client certificate for rediss://"),
    Setting("ssl_keyfile", optional(existing_file), None, "client key for rediss://"),
    Setting("ssl_cert_reqs", optional(cert_reqs), None, "none, optional or required (redis-py: required)"),
    Setting("ssl_check_hostname", optional(to_bool), None, "check the server certificate's host name (redis-py's default)"),
    Setting("protocol", optional(protocol), None, "RESP version 2 or 3 (redis-py's default)"),
    Setting("startup_check", startup_check_mode, "true", "PING at startup: true (fail), warn (log and go on) or false"),
    Setting("startup_check_timeout", duration(allow_zero=False), 2.0, "time allowed for the startup PING"),
    Setting("stats", to_bool, True, "per-request line on the pyramid_redisx.stats logger"),
    Setting("stats_level", log_level, logging.DEBUG, "level of that line"),
    Setting("pool_warn_ratio", ratio, 0.8, "WARNING when in-use connections reach this share of max_connections"),
    Setting("slow_command", optional(duration(allow_zero=False)), None, "WARNING for each command slower than this"),
    Setting("sentinels", optional(host_port_list), None, "Sentinel host:port list"),
    Setting("sentinel_service", optional(text), None, "Sentinel master name"),
    Setting("sentinel_password", optional(secret), None, "password of the Sentinels (env:VARNAME allowed)"),
    Setting("cluster", to_bool, False, "Redis Cluster (redis.url names any node)"),
    Setting("sentinel_role", sentinel_role, "master", "Sentinel: master (reads and writes) or replica (reads from a replica of the service)"),
    Setting("sentinel_listener", to_bool, True, "Sentinel: follow the Sentinels' +switch-master announcements (one thread per process)"),
    Setting("cluster_nodes", optional(host_port_list), None, "Cluster: further seed nodes (host:port list) besides redis.url's"),
    Setting("load_balancing_strategy", optional(balancing), None, "Cluster reads: round_robin, round_robin_replicas, random or random_replica (unset: masters only)"),
    Setting("require_full_coverage", to_bool, True, "Cluster: refuse to start unless every hash slot is served"),
    Setting("breaker_failures", integer(0, 10_000), 5, "failures to reach the server in a row that open the circuit: commands then fail at once with RedisCircuitOpen (0 = no breaker)"),
    Setting("breaker_cooldown", duration(allow_zero=False), 1.0, "how long the circuit stays open before one request probes the server"),
    Setting("fail_soft", to_bool, False, "the HTTP cache and dogpile.cache on this client treat an unreachable Redis (or an open circuit) as a miss and skip the write; sessions never do"),
    Setting("client_cache", to_bool, False, "serve repeated reads from this process's memory, kept fresh by the server's invalidations (CLIENT TRACKING); standalone and Sentinel masters"),
    Setting("client_cache_max_keys", integer(1, 10_000_000), 10_000, "client cache: most replies kept (the least recently used go first)"),
    Setting("client_cache_max_bytes", byte_size(1024, 64 * 1024**3), 64 * 1024**2, "client cache: most memory the replies kept may take (estimated)"),
    Setting("client_cache_ttl", optional(duration(allow_zero=False)), None, "client cache: forget a reply this long after it was read, invalidated or not (a safety net; unset: never)"),
    Setting("client_cache_commands", cache_commands, DEFAULT_CLIENT_CACHE_COMMANDS, "client cache: the read commands it serves (others always go to the server)"),
)  # fmt: skip

APP_SETTINGS: tuple[Setting, ...] = (
    Setting("clients", names, (), "names of further clients, e.g. 'cache queue'"),
    Setting("server_timing", to_bool, False, "add a Server-Timing header to responses of requests that used Redis"),
    Setting("health_route", optional(text), None, "path of a JSON health view (off when unset)"),
    Setting("sessions_client", client_name, DEFAULT_CLIENT, "client used by the session integration"),
    Setting("tracing", to_bool, False, "OpenTelemetry: a span per command and pipeline under the request's span, or our attributes on opentelemetry-instrumentation-redis's spans (otel extra)"),
    Setting("tracing_statement", statement_level, "keys", "what a span's db.query.text shows: keys (command names and first keys), command (names only) or none (no statement)"),
    Setting("metrics", to_bool, False, "OpenTelemetry metrics through the app's meter provider (otel extra)"),
    Setting("metrics_route", optional(text), None, "path of a Prometheus exposition of the add-on's metrics (prometheus extra; off when unset)"),
    Setting("allow_redis_py", optional(version), None, "run on this redis-py version although it is outside the tested range, e.g. 8.3 (its internals are still checked); default: $PYRAMID_REDISX_ALLOW_REDIS_PY"),
)  # fmt: skip

CLIENT_KEYS = {s.name: s for s in CLIENT_SETTINGS}
APP_KEYS = {s.name: s for s in APP_SETTINGS}
# URL query arguments we accept: any client option but the URL itself, plus db.
QUERY_KEYS = (set(CLIENT_KEYS) - {"url"}) | {"db"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


# ---------------------------------------------------------------- options
@dataclass(frozen=True)
class RedisOptions:
    """Everything one client needs, parsed. Equal options share one pool."""

    scheme: str
    host: str | None
    port: int | None
    path: str | None
    db: int
    username: str | None
    password: str | None = field(repr=False)
    max_connections: int
    blocking: bool
    pool_timeout: float
    socket_connect_timeout: float
    socket_timeout: float
    socket_keepalive: bool
    health_check_interval: float
    retries: int
    retry_on_timeout: bool
    retry_writes: bool
    request_connection: bool
    retry_backoff_cap: float
    decode_responses: bool
    client_name: str | None
    ssl_ca_certs: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_cert_reqs: str | None
    ssl_check_hostname: bool | None
    protocol: int | None
    startup_check: str
    startup_check_timeout: float
    stats: bool
    stats_level: int
    pool_warn_ratio: float
    slow_command: float | None
    sentinels: tuple[tuple[str, int], ...] | None
    sentinel_service: str | None
    sentinel_password: str | None = field(repr=False)
    cluster: bool
    sentinel_role: str
    sentinel_listener: bool
    cluster_nodes: tuple[tuple[str, int], ...] | None
    load_balancing_strategy: str | None
    require_full_coverage: bool
    breaker_failures: int
    breaker_cooldown: float
    fail_soft: bool
    client_cache: bool
    client_cache_max_keys: int
    client_cache_max_bytes: int
    client_cache_ttl: float | None
    client_cache_commands: tuple[str, ...]

    @property
    def kind(self) -> str:
        """Which pool this needs: ``standalone``, ``sentinel`` or ``cluster``."""
        if self.cluster:
            return "cluster"
        return "sentinel" if self.sentinels else "standalone"

    @property
    def url(self) -> str:
        """The URL in force, password replaced by ***: safe to log."""
        user = self.username or ""
        auth = f"{user}:***@" if self.password else (f"{user}@" if user else "")
        if self.scheme == "unix":
            return f"unix://{auth}{self.path}?db={self.db}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.scheme}://{auth}{host}:{self.port}/{self.db}"

    def redacted(self) -> dict[str, Any]:
        """The options as a dict safe to print (``pyramid-redisx info``, introspection)."""
        shown = {f.name: redact_value(f.name, getattr(self, f.name)) for f in fields(self)}
        shown["url"] = self.url
        shown["kind"] = self.kind
        shown["stats_level"] = logging.getLevelName(self.stats_level).lower()
        return shown


@dataclass(frozen=True)
class AppOptions:
    clients: tuple[str, ...]
    server_timing: bool
    health_route: str | None
    sessions_client: str
    tracing: bool = False
    tracing_statement: str = "keys"
    metrics: bool = False
    metrics_route: str | None = None
    allow_redis_py: str | None = None

    @property
    def telemetry(self) -> bool:
        """Any of tracing, OpenTelemetry metrics or the Prometheus endpoint is on."""
        return self.tracing or self.metrics or self.metrics_route is not None


# ---------------------------------------------------------------- parsing
ENCODE_HINT = (
    "percent-encode # ? / @ % in the user name and password (e.g. # as %23, ? as %3F, "
    "/ as %2F, @ as %40, % as %25)"
)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _urlsplit(value: str) -> tuple[SplitResult, int | None] | None:
    """``urlsplit`` and its port, or None: its errors quote the netloc, password included."""
    try:
        parts = urlsplit(value)
        return parts, parts.port
    except ValueError:
        return None


def split_url(value: str) -> dict[str, Any]:
    """Take a Redis URL apart; ``ValueError`` says what is wrong (never the password)."""
    accepted = "expected a redis://, rediss:// or unix:// URL"
    value = value.strip()
    rest = value.partition("://")[2]
    userinfo = rest.rpartition("@")[0] if not rest.startswith("/") else ""
    if any(ch in userinfo for ch in USERINFO_BREAKERS) or _BAD_PERCENT.search(userinfo):
        raise ValueError(f"the URL cannot be parsed: {ENCODE_HINT}")
    split = _urlsplit(value)
    if split is None:
        raise ValueError(
            f"{accepted} with a port from 1 to 65535"
            + (f" (if the password holds special characters, {ENCODE_HINT})" if userinfo else "")
        )
    parts, port = split
    if parts.fragment:
        raise ValueError(f"a Redis URL has no #fragment: {ENCODE_HINT}")
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(accepted)
    query: dict[str, str] = {}
    after_secret: set[str] = set()  # arguments that may be the tail of a password
    for key, item in parse_qsl(parts.query, keep_blank_values=True):
        follows_secret = any(looks_secret(name) for name in query)
        if follows_secret:
            after_secret.add(key)
        if key not in QUERY_KEYS:
            if follows_secret:  # the key may be part of the password: not named
                raise ValueError(
                    "unknown URL query argument after a password: percent-encode & # + = "
                    "in a password given as a query argument (e.g. & as %26)"
                )
            raise ValueError(
                f"unknown URL query argument {key!r}; accepted: {', '.join(sorted(QUERY_KEYS))}"
            )
        query[key] = unquote(item)
    result: dict[str, Any] = {
        "scheme": scheme,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "query": query,
        "after_secret": after_secret,
        "host": None,
        "port": None,
        "path": None,
        "db": None,
    }
    if scheme == "unix":
        if not parts.path:
            raise ValueError("expected unix:///path/to/redis.sock")
        result["path"] = unquote(parts.path)
    else:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"{accepted} with a port from 1 to 65535")
        result["host"] = unquote(parts.hostname) if parts.hostname else "localhost"
        result["port"] = port or 6379
        db_path = parts.path.strip("/")
        if db_path:
            if not db_path.isdigit():
                raise ValueError(f"{accepted}; the path must be a database number (/0)")
            result["db"] = int(db_path)
    return result


def _fail(key: str, option: str, value: object, accepted: str) -> RedisSettingsError:
    return RedisSettingsError(key, redact_value(option, value), accepted)


def client_key(name: str, option: str) -> str:
    return f"{PREFIX}{option}" if name == DEFAULT_CLIENT else f"{PREFIX}{name}.{option}"


def parse_client(
    name: str,
    settings: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> RedisOptions:
    """Parse the options of client ``name`` (see the module docstring for precedence)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(CLIENT_KEYS))
    if unknown:
        bad = unknown[0]
        raise _fail(
            f"add_redis_client({name!r}, {bad}=...)", bad, overrides[bad],
            "unknown option" + _hint(bad, CLIENT_KEYS) + "; accepted: " + ", ".join(CLIENT_KEYS),
        )  # fmt: skip

    def found(option: str, level: str) -> tuple[str, Any, bool] | None:
        """(key shown in errors, raw value, needs converting) at one level, if set there.

        Levels: O the client's own key (directive argument, ``redis.<name>.<key>``),
        U the URL in force (query argument; userinfo for credentials), A the app-wide
        ``redis.<key>`` (named clients only).
        """
        if level == "O":
            if option in overrides:
                return f"add_redis_client({name!r}, {option}=...)", overrides[option], True
            if client_key(name, option) in settings:
                return client_key(name, option), settings[client_key(name, option)], True
        elif level == "U":
            if option in parts["query"]:
                return f"{url_key} (query argument {option!r})", parts["query"][option], True
            if option in ("username", "password") and parts[option] is not None:
                return url_key, parts[option], False  # userinfo: taken as written
        elif name != DEFAULT_CLIENT and PREFIX + option in settings:
            return PREFIX + option, settings[PREFIX + option], True
        return None

    sources: dict[str, str] = {}  # option -> the key it was read from (for errors)

    def value(option: str, order: str) -> Any:
        """The option from the first level in ``order`` that sets it, else the default."""
        for level in order:
            hit = found(option, level)
            if hit is not None:
                key, raw, needs_converting = hit
                sources[option] = key
                if not needs_converting:
                    return raw
                try:
                    return CLIENT_KEYS[option].convert(raw)
                except ValueError as exc:
                    if level == "U" and option in parts["after_secret"]:
                        raise _fail(key, "password", raw, AFTER_SECRET) from None
                    raise _fail(key, option, raw, str(exc)) from None
        return CLIENT_KEYS[option].default

    # The URL comes from the client's own level or the app's (never from itself).
    url_key = next(
        (hit[0] for hit in (found("url", "O"), found("url", "A")) if hit), client_key(name, "url")
    )
    url_in_force = value("url", "OA")
    parts = split_url(url_in_force)
    _check_legacy_keys(name, settings, parts, url_in_force)

    # A URL's arguments win over separate keys of its own level, and a separate
    # credential key wins over the URL's (DESIGN); a client's own keys beat the
    # arguments of a URL it merely inherits.
    own_url = url_key != PREFIX + "url" or name == DEFAULT_CLIENT
    values: dict[str, Any] = {}
    for option in CLIENT_KEYS:
        if option == "url":
            continue
        credential = option in ("username", "password")
        order = ("OUA" if credential else "UOA") if own_url else ("OAU" if credential else "OUA")
        values[option] = value(option, order)

    db = parts["db"] or 0
    if "db" in parts["query"]:
        hidden = "db" in parts["after_secret"]
        db = convert_db(f"{url_key} (query argument 'db')", parts["query"]["db"], hidden)
    options = RedisOptions(
        scheme=parts["scheme"], host=parts["host"], port=parts["port"], path=parts["path"],
        db=db, **values,
    )  # fmt: skip
    _check_combination(name, options)
    _check_tls_keys(name, options, sources)
    return options


# Keys of the older pyramid_redis package and of many tutorials: redis.url replaces them.
LEGACY_KEYS = ("host", "port", "db", "unix_socket_path")


def _check_legacy_keys(
    name: str, settings: Mapping[str, Any], parts: dict[str, Any], url_in_force: str
) -> None:
    """``redis.host`` & co. would silently mean localhost:6379/0: show the URL to write."""
    given = {
        k: settings[client_key(name, k)] for k in LEGACY_KEYS if client_key(name, k) in settings
    }
    if not given:
        return
    auth = ""
    if parts["username"] or parts["password"]:
        auth = (parts["username"] or "") + (":***" if parts["password"] else "") + "@"
    db = str(given.get("db", parts["db"] or 0)).strip()
    if not db.isdigit():
        db = "<database number>"  # never suggest a URL that is refused in turn
    if "unix_socket_path" in given:
        suggested = f"unix://{auth}{str(given['unix_socket_path']).strip()}?db={db}"
    else:
        host = str(given.get("host", parts["host"] or "localhost")).strip()
        port = str(given.get("port", parts["port"] or 6379)).strip()
        suggested = f"redis://{auth}{host}:{port}/{db}"
    first = sorted(given)[0]
    raise RedisSettingsError(
        client_key(name, first), redact_value("url", str(given[first])),
        f"not a pyramid_redisx key, redis.url says where Redis is "
        f"(the URL in force is {redact_value('url', url_in_force)}): "
        f"write {client_key(name, 'url')} = {suggested}",
    )  # fmt: skip


TLS_KEYS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


def _check_tls_keys(name: str, options: RedisOptions, sources: Mapping[str, str]) -> None:
    """TLS options that would be ignored, or that redis-py rejects only at connect time."""
    for option in TLS_KEYS:
        if getattr(options, option) is not None and options.scheme != "rediss":
            raise RedisSettingsError(
                sources.get(option, option), getattr(options, option),
                f"TLS options need a rediss:// URL (the URL in force is {options.url}): "
                "use rediss:// or remove the key",
            )  # fmt: skip
    if options.ssl_keyfile and not options.ssl_certfile:
        raise RedisSettingsError(
            sources.get("ssl_keyfile", "ssl_keyfile"), options.ssl_keyfile,
            f"a client key needs its certificate: set {client_key(name, 'ssl_certfile')} too",
        )  # fmt: skip


def convert_db(key: str, value: object, hidden: bool = False) -> int:
    try:
        return integer(0, 100_000)(value)
    except ValueError as exc:
        if hidden:
            raise RedisSettingsError(key, MASK, AFTER_SECRET) from None
        raise RedisSettingsError(key, value, str(exc)) from None


# A bad query argument after ``password=`` may be the tail of a password cut by ``&``.
AFTER_SECRET = (
    "value hidden: it follows a password in the URL, and an unencoded & in the password "
    "would have cut it there: percent-encode & as %26"
)


def _check_combination(name: str, options: RedisOptions) -> None:
    """Keys that are each valid but do not go together."""
    if options.cluster and options.sentinels:
        raise RedisSettingsError(
            client_key(name, "cluster"), "true",
            f"cannot be combined with {client_key(name, 'sentinels')}: choose Cluster or Sentinel",
        )  # fmt: skip
    if options.sentinels and not options.sentinel_service:
        raise RedisSettingsError(
            client_key(name, "sentinel_service"), None,
            f"required with {client_key(name, 'sentinels')}: the master name to ask the Sentinels for",
        )  # fmt: skip
    if options.cluster and options.db != 0:
        raise RedisSettingsError(
            client_key(name, "url"), options.url,
            "Redis Cluster has only database 0: end the URL with /0 or nothing",
        )  # fmt: skip
    if options.client_cache and options.kind == "cluster":
        raise RedisSettingsError(
            client_key(name, "client_cache"), "true",
            f"cannot be combined with {client_key(name, 'cluster')}: a node sends "
            "invalidations only to a connection of its own, and the client cache keeps one "
            "per server (use it on a standalone or Sentinel client)",
        )  # fmt: skip
    if options.client_cache and options.sentinels and options.sentinel_role != "master":
        raise RedisSettingsError(
            client_key(name, "client_cache"), "true",
            f"cannot be combined with {client_key(name, 'sentinel_role')} = "
            f"{options.sentinel_role}: its connections go to several replicas, and a server "
            "sends invalidations only to a connection of its own (use it on the master)",
        )  # fmt: skip
    if options.scheme == "unix" and options.kind != "standalone":
        raise RedisSettingsError(
            client_key(name, "url"), options.url,
            f"a unix:// URL cannot be used with {options.kind}: use redis:// or rediss://",
        )  # fmt: skip


def parse_app(settings: Mapping[str, Any]) -> AppOptions:
    """The app-wide keys: client names, Server-Timing, health route, sessions client."""
    values: dict[str, Any] = {}
    for setting in APP_SETTINGS:
        key = PREFIX + setting.name
        if key not in settings:
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.convert(settings[key])
        except ValueError as exc:
            raise RedisSettingsError(key, settings[key], str(exc)) from None
    seen: set[str] = set()
    for client in values["clients"]:
        check_client_name(client, PREFIX + "clients")
        if client in seen:
            raise RedisSettingsError(PREFIX + "clients", settings[PREFIX + "clients"],
                                     f"client {client!r} is named twice")  # fmt: skip
        seen.add(client)
    for key in ("health_route", "metrics_route"):
        route = values[key]
        if route is not None and not route.startswith("/"):
            raise RedisSettingsError(PREFIX + key, route, "expected a path starting with /")
    return AppOptions(**values)


def check_client_name(client: str, key: str) -> None:
    accepted = "expected names of letters, digits, _ and - (not starting with a digit)"
    if not _NAME.match(client):
        raise RedisSettingsError(key, client, accepted)
    if client == DEFAULT_CLIENT:
        raise RedisSettingsError(
            key, client, "'default' is always declared: configure it with redis.<key>"
        )
    if client in FOREIGN_NAMESPACES:
        raise RedisSettingsError(
            key, client, f"{client!r} is reserved: redis.{client}.* belongs to another package"
        )
    if client in CLIENT_KEYS or client in APP_KEYS:
        raise RedisSettingsError(
            key, client, f"{client!r} is the name of a setting; choose another client name"
        )


def _hint(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(
    settings: Mapping[str, Any], client_names: Iterable[str], *, top_level_only: bool = False
) -> list[str]:
    """Raise on a near miss of a known key; return warnings for the other unknown keys.

    ``client_names`` are the declared clients (ini and directive) besides ``default``.
    ``top_level_only`` checks what can be judged before directives have run: keys of
    the app and of ``client_names``, not ``redis.<other>.<key>``.
    """
    clients = set(client_names)
    known = set(CLIENT_KEYS) | set(APP_KEYS)
    warnings = []
    for key in sorted(k for k in settings if k.startswith(PREFIX)):
        rest = key[len(PREFIX) :]
        head, dot, tail = rest.partition(".")
        if head in FOREIGN_NAMESPACES and dot:
            continue
        if not dot:
            if rest in known:
                continue
            hint = _hint(rest, known).replace("'", f"'{PREFIX}", 1)
            if hint:
                raise RedisSettingsError(
                    key, redact_value(rest, settings[key]), "unknown setting" + hint
                )
            warnings.append(f"unknown setting {key} ignored (not a pyramid_redisx key)")
            continue
        if head in clients:
            if tail in CLIENT_KEYS:
                continue
            hint = _hint(tail, CLIENT_KEYS)
            if hint:
                raise RedisSettingsError(key, redact_value(tail, settings[key]),
                                         "unknown client setting" + hint.replace("'", f"'redis.{head}.", 1))  # fmt: skip
            warnings.append(f"unknown setting {key} ignored (not a pyramid_redisx client key)")
            continue
        if top_level_only:
            continue
        if tail in CLIENT_KEYS:
            near = _hint(head, clients)
            if near:
                raise RedisSettingsError(key, redact_value(tail, settings[key]),
                                         f"no client named {head!r}{near}")  # fmt: skip
            warnings.append(
                f"setting {key} ignored: no client {head!r} is declared "
                f"(add it to {PREFIX}clients or use config.add_redis_client)"
            )
            continue
        warnings.append(f"unknown setting {key} ignored (not a pyramid_redisx key)")
    return warnings


assert set(CLIENT_KEYS) >= SECRET_KEYS
