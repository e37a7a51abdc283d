"""Plumbing for the reliability tests: a real WSGI server (waitress) in a thread, a
threaded HTTP client that times every request, a 503 exception view that keeps every
exception's full text, and a view of the Redis server's own connection list.

Nothing here is mocked: the app is a real Pyramid app with pyramid_redisx, served by
waitress on a loopback port, talking to a real server from ``pyramid_redisx.testing``.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import waitress
from pyramid.response import Response
from waitress import wasyncore


# ------------------------------------------------------------------ WSGI server
class LiveServer:
    """``app`` served by waitress (``threads`` worker threads) on a free loopback port.

    ``close()`` stops the loop from inside the loop thread (a trigger thunk), so no
    other thread mutates waitress's socket map while it polls, then stops the workers.
    """

    def __init__(self, app: Any, threads: int) -> None:
        self.server: Any = waitress.create_server(
            app, host="127.0.0.1", port=0, threads=threads, connection_limit=200
        )
        self.port = int(self.server.effective_port)
        self.thread = threading.Thread(target=self.server.run, name="waitress-loop", daemon=True)
        self.thread.start()

    def close(self, timeout: float = 10.0) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(OSError):  # trigger closed: the loop is ending anyway
                self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
            self.thread.join(timeout)
        if self.thread.is_alive():  # last resort; the loop thread is a daemon
            wasyncore.close_all(self.server._map)
            self.thread.join(timeout)
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout)
        assert not self.thread.is_alive(), "waitress loop thread did not stop"

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ------------------------------------------------------------------ HTTP client
@dataclass(frozen=True)
class Outcome:
    """One HTTP request as the client saw it (monotonic clock)."""

    index: int
    path: str
    started: float
    ended: float
    status: int | None  # None: no HTTP response at all (client timeout, reset)
    body: str
    error: str | None = None

    @property
    def elapsed(self) -> float:
        return self.ended - self.started


class Load:
    """``threads`` client threads, each sending up to ``per_thread`` GET requests on its
    own keep-alive ``http.client`` connection (reopened after any error), each request
    bounded by ``timeout`` seconds. ``path(index)`` names the ``index``-th request.
    """

    def __init__(
        self,
        port: int,
        path: Callable[[int], str],
        *,
        threads: int,
        per_thread: int,
        timeout: float,
    ) -> None:
        self.port = port
        self.path = path
        self.per_thread = per_thread
        self.timeout = timeout
        self.stop = threading.Event()
        self._outcomes: list[Outcome] = []
        self._changed = threading.Condition()
        self._indexes = itertools.count()
        self._crashes: list[str] = []
        self._threads = [
            threading.Thread(target=self._client, name=f"load-{n}", daemon=True)
            for n in range(threads)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def _client(self) -> None:
        try:
            self._requests()
        except BaseException:  # a bug in the client itself: report it, do not hide it
            self._crashes.append(traceback.format_exc())
            raise
        finally:
            with self._changed:
                self._changed.notify_all()

    def _requests(self) -> None:
        connection: http.client.HTTPConnection | None = None
        for _ in range(self.per_thread):
            if self.stop.is_set():
                break
            index = next(self._indexes)
            path = self.path(index)
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout
                )
            status: int | None = None
            body = ""
            error = None
            started = time.monotonic()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read().decode("utf-8", "replace")
                status = response.status
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
                connection.close()
                connection = None
            ended = time.monotonic()
            with self._changed:
                self._outcomes.append(Outcome(index, path, started, ended, status, body, error))
                self._changed.notify_all()
        if connection is not None:
            connection.close()

    @property
    def done(self) -> int:
        return len(self._outcomes)

    def snapshot(self) -> list[Outcome]:
        with self._changed:
            return list(self._outcomes)

    def wait_until(self, condition: Callable[[list[Outcome]], bool], timeout: float) -> bool:
        """Wait until ``condition(outcomes so far)`` holds (False on timeout or if every
        client thread has ended first)."""

        def ready() -> bool:
            finished = not any(thread.is_alive() for thread in self._threads)
            return finished or condition(self._outcomes)

        with self._changed:
            self._changed.wait_for(ready, timeout)
            return condition(self._outcomes)

    def wait_for(self, count: int, timeout: float) -> bool:
        return self.wait_until(lambda outcomes: len(outcomes) >= count, timeout)

    def join(self, timeout: float) -> list[Outcome]:
        """Every outcome, by index; fails if a client thread is still running (a hang)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        self.stop.set()
        assert not self._crashes, self._crashes[0]
        assert not alive, f"client threads still running after {timeout} s (a hang?): {alive}"
        return sorted(self.snapshot(), key=lambda outcome: outcome.index)

    def abandon(self, timeout: float = 30.0) -> None:
        """Stop sending and wait (bounded) for the threads: for ``finally`` blocks."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))


# ------------------------------------------------------------------ app side
class ErrorView:
    """Exception view turning ``redis.RedisError`` into a clean 503 whose body names the
    error; keeps the full text of every exception (chained causes included)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, exc: BaseException, request: Any) -> Response:
        text = "".join(traceback.format_exception(exc))
        with self.lock:
            self.texts.append(text)
        return Response(
            f"redis unavailable: {type(exc).__name__}: {exc}", status=503, content_type="text/plain"
        )

    def include(self, config: Any) -> None:
        config.add_exception_view(self, context=redis.RedisError)


# ------------------------------------------------------------------ server side
class Admin:
    """One connection to the Redis server, to read its connection list from outside."""

    def __init__(self, server: Any) -> None:
        self.client = server.client(single_connection_client=True)
        self.id = int(self.client.client_id())

    def connections(self) -> list[dict[str, Any]]:
        """``CLIENT LIST`` without this admin connection."""
        return [c for c in self.client.client_list() if int(c["id"]) != self.id]

    def close(self) -> None:
        self.client.close()


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    """Counts by status and latency figures, for ``-s`` output and ``record_property``."""
    by_status: dict[str, int] = {}
    for outcome in outcomes:
        key = str(outcome.status) if outcome.status is not None else "no-response"
        by_status[key] = by_status.get(key, 0) + 1
    latencies = sorted(outcome.elapsed for outcome in outcomes)
    return {
        "requests": len(outcomes),
        "by_status": by_status,
        "max_latency_s": round(latencies[-1], 3) if latencies else None,
        "p50_latency_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "p99_latency_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)
        if latencies
        else None,
    }
