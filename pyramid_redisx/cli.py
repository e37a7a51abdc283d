"""``pyramid-redisx check|info <ini>``: for deploy scripts and container health checks.

Reads only the ini's settings (``[app:main]`` unless ``file.ini#name``), never builds the
app: ``check`` PINGs every client with its startup-check timeout and exits 0 when all
answer, 1 otherwise; ``info`` prints what the ini really means, per client, redacted.
Clients declared in code with ``config.add_redis_client`` are not in the ini: not shown.
Extra ``name=value`` arguments are ini interpolation variables, as for ``pserve``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import Any, TextIO

from .errors import RedisSettingsError
from .health import HealthProbes, new_connection, probe
from .settings import DEFAULT_CLIENT, RedisOptions, parse_app, parse_client


def load_clients(config_uri: str, variables: Sequence[str]) -> dict[str, RedisOptions]:
    from pyramid.paster import get_appsettings

    options = dict(item.split("=", 1) for item in variables)
    settings = get_appsettings(config_uri, options=options)
    app = parse_app(settings)
    return {name: parse_client(name, settings) for name in (DEFAULT_CLIENT, *app.clients)}


def _pool_settings(options: RedisOptions) -> str:
    return (
        f"max_connections={options.max_connections} blocking={str(options.blocking).lower()} "
        f"pool_timeout={options.pool_timeout:g}s socket_timeout={options.socket_timeout:g}s "
        f"socket_connect_timeout={options.socket_connect_timeout:g}s retries={options.retries}"
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
            result = probe(connection, version=True)
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
            print(f"{name:<{width}}  DOWN  {options.url}  {result.error}", file=out)
    return 1 if failed else 0


def _check_topology(name: str, width: int, options: RedisOptions, out: TextIO) -> int:
    module = import_module(f"pyramid_redisx.{options.kind}")
    result = module.health_probe(HealthProbes(), options, options.startup_check_timeout)
    where = module.describe(options)
    status = f"ok    {where}" if result.ok else f"DOWN  {where}  {result.error}"
    print(f"{name:<{width}}  {status}  {_pool_settings(options)}", file=out)
    for node, entry in (result.nodes or {}).items():
        state = "ok  " if entry["ok"] else "DOWN"
        error = f"  {entry['error']}" if "error" in entry else ""
        print(f"{'':<{width}}    {state}  {node}  role={entry['role']} "
              f"latency_ms={entry['latency_ms']:.2f}{error}", file=out)  # fmt: skip
    return 0 if result.ok else 1


def info(clients: dict[str, RedisOptions], out: TextIO) -> int:
    for name, options in clients.items():
        print(f"[{name}]", file=out)
        for key, value in options.redacted().items():
            print(f"{key} = {_show(value)}", file=out)
        print(file=out)
    return 0


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="pyramid-redisx", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check", "info"])
    parser.add_argument("config_uri", help="ini file, optionally file.ini#section")
    parser.add_argument("variables", nargs="*", help="name=value ini interpolation variables")
    args = parser.parse_args(argv)
    try:
        clients = load_clients(args.config_uri, args.variables)
    except RedisSettingsError as exc:
        print(f"pyramid-redisx: {exc}", file=sys.stderr)
        return 1
    except (OSError, LookupError, ValueError) as exc:
        print(f"pyramid-redisx: cannot read {args.config_uri}: {exc}", file=sys.stderr)
        return 1
    return check(clients, out) if args.command == "check" else info(clients, out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
