"""A loopback TCP proxy in front of a real server, for tests that cut, reset or stall a
connection at a chosen moment (the how-we-work rule: real servers, a small proxy that
drops or resets is fair).

``LoopbackProxy`` accepts on a free loopback port and opens one upstream connection per
client; each direction is pumped by a thread running ``client_to_server`` and
``server_to_client``, which relay bytes unchanged. A test's proxy overrides the one that
misbehaves (``tests.ownership_helpers.CuttingProxy``, ``tests.test_write_safety``'s
reset, ``tests.test_diagnostics``' slow handshake). ``close`` ends every connection and
joins the threads. Not a mock of Redis: the server behind it is real.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any


class LoopbackProxy:
    replies_pumped = True  # False: ``client_to_server`` relays the replies itself

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.sockets += [client, upstream]
            self._start(self._pump, self.client_to_server, client, upstream)
            if self.replies_pumped:
                self._start(self._pump, self.server_to_client, upstream, client)

    @staticmethod
    def _pump(direction: Callable[..., None], source: socket.socket, sink: socket.socket) -> None:
        try:
            direction(source, sink)
        except OSError:
            pass  # the other side or ``close`` ended the connection
        finally:
            close_sockets(source, sink)

    def client_to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        relay(client, upstream)

    def server_to_client(self, upstream: socket.socket, client: socket.socket) -> None:
        relay(upstream, client)

    def close(self) -> None:
        # A thread blocked in accept() is not woken by close() on Linux: shutdown() is
        # what wakes it (EINVAL), else each close waited out the 5 s join below.
        close_sockets(self.listener)
        with self.lock:
            sockets, threads = list(self.sockets), list(self.threads)
        close_sockets(*sockets)
        for thread in threads:
            thread.join(5)


def relay(source: socket.socket, sink: socket.socket) -> None:
    while data := source.recv(65536):
        sink.sendall(data)


def close_sockets(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
