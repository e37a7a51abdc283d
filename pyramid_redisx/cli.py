"""``pyramid-redisx check|info <ini>``: for deploy scripts and container health checks.

Reads only the ini's settings (``[app:main]`` unless ``file.ini#name``) and configures
pyramid_redisx from them exactly as the app does (``config.include`` and commit, so the
same keys, values and pool kinds are refused), without opening a connection or building
the app. ``check`` then PINGs every client with its startup-check timeout; ``info``
prints what the ini really means, per client, redacted. Clients declared in code with
``config.add_redis_client`` are not in the ini: not shown.
"""

from __future__ import annotations

import argparse
import configparser
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.paster import get_appsettings

from . import topology
from .client import client_set
from .health import HealthProbes
from .probe import new_connection, probe
from .settings import RedisOptions

DESCRIPTION = (
    "check: PING every Redis client the ini declares (exit 0 when all answer, 1 when one "
    "is down or a setting is refused, 2 when the ini cannot be read). info: print each "
    "client's options as parsed, passwords hidden."
)


class IniError(Exception):
    """The ini cannot be read; the message is one line and never holds a value."""


def read_settings(
    config_uri: str, variables: Sequence[str], command: str = "check"
) -> dict[str, Any]:
    options: dict[str, str] = {}
    for number, item in enumerate(variables, 1):
        name, sep, value = item.partition("=")
        if not sep or not name:  # not echoed: it may be a secret typed without its name
            raise IniError(f"variable {number} after the file name is not name=value")
        options[name] = value
    path = config_uri.partition("#")[0]
    shadowed = sorted(set(options) & _file_defaults(path))
    if shadowed:  # pserve would ignore them: checking their values would check another app
        raise IniError(
            f"{path}: {shadowed[0]} is set in [DEFAULT], and pserve keeps that value over "
            f"{shadowed[0]}=... after the file name (PasteDeploy): change it in the file"
        )
    try:
        return dict(get_appsettings(config_uri, options=options))
    except configparser.InterpolationMissingOptionError as exc:
        raise IniError(
            f"{path}: [{exc.section}] {exc.option} uses %({exc.reference})s, which is not set: "
            f"pass it after the file name, e.g. pyramid-redisx {command} {config_uri} "
            f"{exc.reference}={_example(exc.reference)}"
        ) from None
    except configparser.InterpolationError as exc:
        raise IniError(
            f"{path}: [{exc.section}] {exc.option} holds a % that is not %(name)s: "
            "write %% for a literal % (a percent-encoded password: %%23 for %23)"
        ) from None
    except configparser.ParsingError as exc:
        lines = ", ".join(str(line) for line, _ in exc.errors)
        raise IniError(f"{path}: line {lines} is not 'key = value'") from None
    except configparser.Error as exc:
        raise IniError(
            f"{path}: {type(exc).__name__} (line {getattr(exc, 'lineno', '?')})"
        ) from None
    except (OSError, LookupError) as exc:
        raise IniError(f"cannot read {config_uri}: {exc}") from None


def _example(variable: str) -> str:
    return "<port>" if variable.endswith("port") else "<value>"


def _file_defaults(path: str) -> set[str]:
    """Names the file's own [DEFAULT] section sets ('' when it cannot be read: the
    settings reader reports that)."""
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # as PasteDeploy: case kept
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeError):
        return set()
    return set(parser.defaults())


def configure(settings: dict[str, Any]) -> dict[str, RedisOptions]:
    """Include pyramid_redisx and commit, as the app does; its WARNINGs go to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pyramid-redisx: warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("pyramid_redisx")
    logger.addHandler(handler)
    settings = {k: v for k, v in settings.items() if k != "pyramid.includes"}  # ours alone
    try:
        config = Configurator(settings=settings)
        config.include("pyramid_redisx")
        config.commit()
    finally:
        logger.removeHandler(handler)
    clients = client_set(config.registry)
    clients.close()  # nothing was opened; the pools are not used here
    return dict(clients.options)


def _pool_settings(options: RedisOptions) -> str:
    return (
        f"max_connections={options.max_connections} blocking={str(options.blocking).lower()} "
        f"pool_timeout={options.pool_timeout:g}s socket_timeout={options.socket_timeout:g}s "
        f"socket_connect_timeout={options.socket_connect_timeout:g}s retries={options.retries} "
        f"{_breaker(options)}"
    )


def _breaker(options: RedisOptions) -> str:
    """The circuit breaker's settings. A circuit lives in each app process and this command
    is a new process: it shows what the app's circuits do, not their state (the health
    view reports that, per process)."""
    if not options.breaker_failures:
        return "circuit=off"
    soft = " fail_soft=true" if options.fail_soft else ""
    return (
        f"breaker_failures={options.breaker_failures} "
        f"breaker_cooldown={options.breaker_cooldown:g}s{soft}"
    )


def check(clients: dict[str, RedisOptions], out: TextIO) -> int:
    failed = 0
    width = max(len(name) for name in clients)
    for name, options in clients.items():
        if options.kind != "standalone":  # Sentinel/Cluster: a line per node
            failed += _check_topology(name, width, options, out)
            continue
        connection = new_connection(options, options.startup_check_timeout)
        try:
            result = probe(connection, options, version=True)
        finally:
            connection.disconnect()
        if result.ok:
            print(
                f"{name:<{width}}  ok    {options.url}  role={result.role} "
                f"version={result.version.replace(' ', '/')} latency_ms={result.latency_ms:.2f}  "
                f"{_pool_settings(options)}",
                file=out,
            )
        else:
            failed += 1
            print(f"{name:<{width}}  DOWN  {options.url}  {result.error}  {_breaker(options)}",
                  file=out)  # fmt: skip
    return 1 if failed else 0


def _check_topology(name: str, width: int, options: RedisOptions, out: TextIO) -> int:
    result = topology.health_probe(HealthProbes(), options, options.startup_check_timeout)
    where = topology.describe(options)
    status = f"ok    {where}" if result.ok else f"DOWN  {where}  {result.error}"
    print(f"{name:<{width}}  {status}  {_pool_settings(options)}", file=out)
    for node, entry in (result.nodes or {}).items():
        if entry["ok"]:
            print(f"{'':<{width}}    ok    {node}  role={entry['role']} "
                  f"latency_ms={entry['latency_ms']:.2f}", file=out)  # fmt: skip
        else:  # no role or latency to show: only why
            print(f"{'':<{width}}    DOWN  {node}  {entry.get('error', '')}", file=out)
    return 0 if result.ok else 1


def info(clients: dict[str, RedisOptions], out: TextIO) -> int:
    for name, options in clients.items():
        print(f"[{name}]", file=out)
        for key, value in options.redacted().items():
            print(f"{key} = {_show(value)}", file=out)
        print(file=out)
    return 0


def _show(value: Any) -> str:
    """A value as the ini would write it: lists space-separated, host:port pairs."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return " ".join(_show_item(item) for item in value)
    return str(value)


def _show_item(item: Any) -> str:
    if isinstance(item, tuple):  # (host, port): an IPv6 host in brackets
        host, port = item
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(item)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="pyramid-redisx", description=DESCRIPTION)
    parser.add_argument("command", choices=["check", "info"])
    parser.add_argument("config_uri", help="ini file, optionally file.ini#section")
    parser.add_argument(
        "variables", nargs="*", metavar="name=value",
        help="ini interpolation variables, as for pserve (e.g. redis_port=6379); "
        "not one the file's [DEFAULT] sets (pserve would ignore it)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        clients = configure(read_settings(args.config_uri, args.variables, args.command))
    except IniError as exc:
        print(f"pyramid-redisx: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:  # ours, or Pyramid's wrapper of ours (commit)
        print(f"pyramid-redisx: {getattr(exc, 'evalue', exc)}", file=sys.stderr)
        return 1
    return check(clients, out) if args.command == "check" else info(clients, out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
