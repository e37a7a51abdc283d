"""Request integration: ``request.redis``, ``get_redis`` and the end of a request.

A request that never touches Redis pays one dict lookup in the ``NewResponse``
subscriber. A request that does gets one bound client per client name it uses
(``get_redis(request, name)``; ``request.redis`` is the ``default`` one), a finished
callback that gives back any connection it kept even if the view raised, and one
stats line per client it ran commands on.
"""

from __future__ import annotations

from typing import Any

from pyramid.registry import Registry

from .client import AccountedRedis, ClientSet
from .settings import DEFAULT_CLIENT
from .stats import report, server_timing

STATE = "pyramid_redisx_clients"  # registry attribute holding the ClientSet
BOUND = "_pyramid_redisx_bound"  # request.__dict__ key: {name: bound client}


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
    request = request_or_registry
    bound = request.__dict__.get(BOUND)
    if bound is None:
        bound = request.__dict__[BOUND] = {}
        request.add_finished_callback(_request_finished)
    client = bound.get(name)
    if client is None:
        client = bound[name] = client_set(request.registry).bind(name, request)
    return client  # type: ignore[no-any-return]


def request_redis(request: Any) -> AccountedRedis:
    """Body of the reified ``request.redis`` property."""
    return get_redis(request)


def _finish(request: Any, response: Any) -> None:
    """Release, report and time the request's Redis work; once per request."""
    bound = request.__dict__.pop(BOUND, None)
    if not bound:
        return
    for client in bound.values():
        usage = client._redisx_usage
        if usage.closers is not None:
            usage.release()
        if usage.commands:
            report(usage)
    if response is not None and client_set(request.registry).app.server_timing:
        timing = server_timing(client._redisx_usage for client in bound.values())
        if timing:
            add_server_timing(response, timing)


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
    if BOUND in event.request.__dict__:
        _finish(event.request, event.response)


def _request_finished(request: Any) -> None:
    """Finished callback: runs even when the view raised and no response was made."""
    _finish(request, None)
