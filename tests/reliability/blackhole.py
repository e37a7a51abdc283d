"""A loopback TCP proxy to a real Redis server that can turn into a black hole.

Forwarding, it relays bytes both ways. Blackholed, it accepts new connections and never
answers them, and stops relaying on the open ones (their bytes stay unread): a server
behind a dead link or a full firewall queue, which fails by timeouts only. Healing closes
every stalled connection (as a link that comes back after its peers gave up) and
forwards again. ``accepted`` counts connections accepted, for "no network was touched".

In a thread (``Blackhole(target).start()``) or as a process for load tests
(``python -m tests.reliability.blackhole <target host:port>``: prints its port, SIGUSR1
blackholes, SIGUSR2 heals, SIGTERM stops).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
import threading
from typing import Any


class Blackhole:
    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(256)
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self.holed = False
        self._selector = selectors.DefaultSelector()
        self._peers: dict[socket.socket, socket.socket] = {}  # both directions
        self._held: list[socket.socket] = []  # sockets accepted or stalled while blackholed
        self._wake_r, self._wake_w = socket.socketpair()
        self._commands: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="blackhole", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Blackhole:
        self._thread.start()
        return self

    def blackhole(self) -> None:
        self._command("blackhole")

    def heal(self) -> None:
        self._command("heal")

    def close(self) -> None:
        self._command("stop")
        self._thread.join(5)

    def _command(self, command: str) -> None:
        with self._lock:
            self._commands.append(command)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        self._selector.register(self.listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                for key, _ in self._selector.select(0.5):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._wake_r.recv(4096)
                        with self._lock:
                            commands, self._commands = self._commands, []
                        for command in commands:
                            if command == "stop":
                                return
                            self._apply(command)
                    else:
                        self._relay(key.fileobj)  # type: ignore[arg-type]
        finally:
            for sock in [*self._peers, *self._held, self.listener, self._wake_r, self._wake_w]:
                with contextlib.suppress(OSError):
                    sock.close()
            self._selector.close()

    def _apply(self, command: str) -> None:
        if command == "blackhole" and not self.holed:
            self.holed = True
            for sock in list(self._peers):  # stop relaying: leave their bytes unread
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                self._held.append(sock)
            self._peers.clear()
        elif command == "heal" and self.holed:
            self.holed = False
            for sock in self._held:
                with contextlib.suppress(OSError):
                    sock.close()
            self._held.clear()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        if self.holed:
            self._held.append(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()  # the server is down: as if it refused
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client], self._peers[upstream] = upstream, client
        self._selector.register(client, selectors.EVENT_READ, "relay")
        self._selector.register(upstream, selectors.EVENT_READ, "relay")

    def _relay(self, sock: socket.socket) -> None:
        other = self._peers.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                other.setblocking(True)  # small replies: a short blocking send is fine
                other.sendall(data)
                other.setblocking(False)
                return
        except OSError:
            pass
        self._drop(sock, other)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            self._peers.pop(sock, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()


def main(argv: list[str]) -> None:
    host, _, port = argv[0].rpartition(":")
    proxy = Blackhole((host, int(port)), int(argv[1]) if len(argv) > 1 else 0)
    signal.signal(signal.SIGUSR1, lambda *_: proxy.blackhole())
    signal.signal(signal.SIGUSR2, lambda *_: proxy.heal())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    proxy.start()
    print(proxy.port, flush=True)
    while not stop.wait(0.2):
        if os.getppid() == 1:  # the test runner is gone: do not outlive it
            break
    proxy.close()


if __name__ == "__main__":
    main(sys.argv[1:])


def start_process(target: str) -> tuple[Any, int]:
    """The proxy as a child process (load tests): (Popen, port)."""
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.blackhole", target],
        stdout=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, port
