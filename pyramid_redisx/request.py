"""Request integration: ``request.redis``, ``get_redis`` and the end of a request.

A request that never touches Redis pays one dict lookup in the ``NewResponse``
subscriber and one frame in the tween. A request that does gets one bound client per
client name it uses (``get_redis(request, name)``; ``request.redis`` is the
``default`` one) and one stats line per client it ran commands on, written by the
``NewResponse`` subscriber, or by the tween when the view raised past every exception
view. Connections a request keeps (its own connection, WATCH pipelines, pubsubs,
monitors still alive) are given back there too, and by a finished callback registered
when the first one is kept, which runs even for requests that see neither (scripts, an
explicit ``pyramid.tweens``).

The request's ``__dict__`` is read once and passed along: on a request with request
methods each attribute lookup walks the MRO of a class Pyramid made for that request
alone (~0.3 µs each), which is most of what a naive version of this costs.
"""

from __future__ import annotations

from typing import Any

from pyramid.registry import Registry

from .client import BOUND, IN_TWEEN, AccountedRedis, ClientSet
from .settings import DEFAULT_CLIENT
from .stats import report, server_timing

STATE = "pyramid_redisx_clients"  # registry attribute holding the ClientSet


def client_set(registry: Any) -> ClientSet:
    """The app's ``ClientSet``; a clear error when the add-on was not included."""
    clients = getattr(registry, STATE, None)
    if clients is None:
        raise RuntimeError(
            "pyramid_redisx is not configured on this registry: "
            'call config.include("pyramid_redisx") (or add it to pyramid.includes)'
        )
    return clients  # type: ignore[no-any-return]


def get_redis(request_or_registry: Any, name: str = DEFAULT_CLIENT) -> AccountedRedis:
    """The client ``name``: for a request, the one bound to it (``request.redis`` for
    ``default``, the very same object); for a registry, the process-wide client
    (scripts, pshell, workers), which does no per-request accounting.
    """
    if isinstance(request_or_registry, Registry):
        return client_set(request_or_registry).client(name)
    return _bound(request_or_registry, name)


def request_redis(request: Any) -> AccountedRedis:
    """Body of the reified ``request.redis`` property."""
    return _bound(request, DEFAULT_CLIENT)


def _bound(request: Any, name: str) -> AccountedRedis:
    state = request.__dict__
    bound = state.get(BOUND)
    if bound is None:
        bound = state[BOUND] = {}
    else:
        client = bound.get(name)
        if client is not None:
            return client  # type: ignore[no-any-return]
    clients = getattr(state.get("registry") or request.registry, STATE, None)
    if clients is None:
        clients = client_set(request.registry)  # raises the "not configured" error
    client = bound[name] = clients.bind(name, request, state)
    return client


def _finish(state: dict[str, Any], response: Any) -> None:
    """Release, report and time the request's Redis work; once per request."""
    bound = state.pop(BOUND, None)
    if not bound:
        return
    timing = False
    for client in bound.values():
        usage = client._redisx_usage
        if usage.commands:
            report(usage)  # before the release: in_use counts the request's connection
            timing = usage.server_timing
        if usage.connection is not None or usage.held is not None:
            usage.finish()
        else:
            usage.thread = None  # later commands (a streamed body) take one each
    if timing and response is not None:
        header = server_timing(client._redisx_usage for client in bound.values())
        if header:
            add_server_timing(response, header)


def add_server_timing(response: Any, timing: str) -> None:
    """Append ``timing`` to the response's Server-Timing header (kept, not replaced)."""
    headerlist = response.headerlist
    for index, (name, value) in enumerate(headerlist):
        if name.lower() == "server-timing":
            headerlist[index] = (name, f"{value}, {timing}")
            return
    headerlist.append(("Server-Timing", timing))


def on_new_response(event: Any) -> None:
    """``NewResponse`` subscriber: release, log the stats lines, add Server-Timing."""
    state = event.request.__dict__
    if BOUND in state:
        _finish(state, event.response)


def redis_tween_factory(handler: Any, registry: Any) -> Any:
    """Tween: when the view raised past every exception view (so no ``NewResponse``
    will come), release and report the request's Redis work before re-raising."""

    def redis_tween(request: Any) -> Any:
        state = request.__dict__
        state[IN_TWEEN] = True  # so no finished callback is needed (client.Usage)
        try:
            return handler(request)
        except BaseException:
            if BOUND in state:
                _finish(state, None)
            raise

    return redis_tween
