"""Request integration: ``request.redis``, ``get_redis`` and the end of a request.

A request that never touches Redis pays one dict lookup in the ``NewResponse``
subscriber and one frame in the tween. A request that does gets one bound client per
client name it uses (``get_redis(request, name)``; ``request.redis`` is the
``default`` one), a ``Usage`` per client at its first use, and one stats line per client
it ran commands on, written by the ``NewResponse`` subscriber, or by the tween when the
view raised past every exception view. Connections a request keeps (its own
connection, WATCH pipelines, pubsubs, monitors still alive) are given back there too,
and by a finished callback registered when the first one is kept, which runs even for
requests that see neither (scripts, an explicit ``pyramid.tweens``).

The request's ``__dict__`` is read once and passed along: on a request with request
properties each attribute lookup walks the MRO of a class Pyramid made for that request
alone (~0.3 µs each). ``RequestAttributes`` keeps an app without other request
properties from getting such a class at all.
"""

from __future__ import annotations

from threading import get_ident
from typing import Any

from pyramid.config.factories import _RequestExtensions
from pyramid.interfaces import IRequestExtensions
from pyramid.registry import Registry
from pyramid.util import InstancePropertyHelper

from .client import STATE, AccountedRedis, ClientSet, client_set
from .settings import DEFAULT_CLIENT
from .stats import WAIT_WARNING, report, server_timing
from .usage import BOUND, ENDED, IN_TWEEN, USAGES

__all__ = ["client_set", "get_redis"]  # client_set: where tests and apps have long found it


def get_redis(request_or_registry: Any, name: str = DEFAULT_CLIENT) -> AccountedRedis:
    """The client ``name``: for a request, the one bound to it (``request.redis`` for
    ``default``, the very same object); for a registry, the process-wide client
    (scripts, pshell, workers), which does no per-request accounting.
    """
    if isinstance(request_or_registry, Registry):
        return client_set(request_or_registry).client(name)
    return _bound(request_or_registry, name)


class RedisAttribute:
    """``request.redis`` as a request property: a descriptor on the request's class,
    read when a view uses it. Its value is the request's copy of the ``default`` client
    (one small object and its ``Usage``, no connection), kept in the request's
    ``__dict__`` as ``reify`` would."""

    eager = True  # the view reads it to use it: the copy's Usage now

    def __init__(self, clients: ClientSet) -> None:
        self.clients = clients

    def __get__(self, request: Any, owner: Any = None) -> Any:
        if request is None:
            return self
        state = request.__dict__
        bound = state.get(BOUND)
        if bound is None:
            client = self.clients.bind(DEFAULT_CLIENT, request, state if self.eager else None)
            state[BOUND] = {DEFAULT_CLIENT: client}
        else:  # get_redis(request) came first
            client = bound.get(DEFAULT_CLIENT) or _bound(request, DEFAULT_CLIENT)
        state["redis"] = client
        return client


class RedisMethod(RedisAttribute):
    """``request.redis`` as a request method whose binding is the client: Pyramid binds
    it for every request, so the copy's ``Usage`` waits for its first use."""

    eager = False


NEEDS_PYRAMID_TM = (
    "request.redis_tm needs pyramid_tm: add config.include('pyramid_tm') "
    "(or pyramid_tm to pyramid.includes)"
)


class _WithoutPyramidTm:
    """``request.redis_tm`` of an app without pyramid_tm: any use says what is missing."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(NEEDS_PYRAMID_TM)

    def __repr__(self) -> str:
        return "<request.redis_tm: needs pyramid_tm>"


class _WithoutPyramidTmAttribute:
    value = _WithoutPyramidTm()

    def __get__(self, request: Any, owner: Any = None) -> Any:
        return self.value


class RequestAttributes:
    """``request.redis`` and ``request.redis_tm``, registered with Pyramid.

    Both start as request properties that keep their value (``request.redis`` a
    ``RedisAttribute``, ``request.redis_tm`` a plain property). Pyramid makes a class per request
    as soon as an app has one request property (~15 µs in process; a fifth to a third of a
    small app's throughput under waitress, bench/README.md), but binds request *methods* as plain
    attributes. So once the app is made (``ApplicationCreated``, when no configuration
    can follow), if ours are its only properties, ``request.redis`` becomes a method
    whose binding is the client (``RedisMethod``) and ``request.redis_tm``, which
    then cannot work (pyramid_tm adds ``request.tm``, a property), one whose binding
    says so. With another property the class is made anyway and ours stay properties,
    which cost nothing until read.
    """

    def __init__(self, clients: ClientSet, redis_tm: Any) -> None:
        """``redis_tm``: the body of ``request.redis_tm`` (``tm.request_redis_tm``, given by
        ``config``: the integration sits above this module)."""
        self.redis = RedisAttribute(clients)
        # not reified: each read checks that the pipeline has joined the current
        # transaction (a view may commit early and begin another; tm.get_redis_tm)
        self.redis_tm = InstancePropertyHelper.make_property(redis_tm, "redis_tm")[1]
        self.methods = {"redis": RedisMethod(clients), "redis_tm": _WithoutPyramidTmAttribute()}

    def register(self, config: Any) -> None:
        """Two actions with the discriminators ``config.add_request_method`` uses, so
        that an app's own ``request.redis`` conflicts with or overrides ours as usual."""
        for name, prop in (("redis", self.redis), ("redis_tm", self.redis_tm)):
            introspectable = config.introspectable(
                "request extensions", name, f"pyramid_redisx: request.{name}", "request property"
            )
            introspectable["callable"] = prop
            introspectable["property"] = True
            introspectable["reify"] = name == "redis"
            config.action(
                ("request extensions", name),
                self._add,
                args=(config.registry, name, prop),
                introspectables=(introspectable,),
            )

    @staticmethod
    def _add(registry: Any, name: str, prop: Any) -> None:
        extensions = registry.queryUtility(IRequestExtensions)
        if extensions is None:
            extensions = _RequestExtensions()
            registry.registerUtility(extensions, IRequestExtensions)
        extensions.descriptors[name] = prop

    def on_application_created(self, event: Any) -> None:
        """Turn ours into methods when they are the app's only request properties."""
        extensions = event.app.registry.queryUtility(IRequestExtensions)
        if extensions is None:
            return
        descriptors = extensions.descriptors
        ours_only = (
            len(descriptors) == 2
            and descriptors.get("redis") is self.redis
            and descriptors.get("redis_tm") is self.redis_tm
        )
        if ours_only:
            for name, method in self.methods.items():
                del descriptors[name]
                extensions.methods[name] = method


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
    usages = state[USAGES]
    state[USAGES] = ENDED
    timing = False
    for usage in usages:
        usage.thread = None  # later commands (a streamed body) take one each
        if usage.commands or usage.cache_hits:  # (hits: the client cache answered)
            # before the release: in_use counts the request's connection; with the line
            # off, only a pool that may be saturated or a wait can have something to say
            if usage.stats or usage.pool.may_be_saturated or usage.waited >= WAIT_WARNING:
                report(usage)
            timing = usage.server_timing
        if usage.held is not None:
            usage.finish()
        elif usage.connection is not None:  # usage.finish(), in short: the common case
            connection, usage.connection = usage.connection, None
            usage.pool.release(connection)
        if usage.observer is not None:  # telemetry: None when off
            usage.observer.request_done(usage)
    if timing and response is not None:
        header = server_timing(usages)
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
    if state.get(USAGES):
        _finish(state, event.response)
    elif BOUND in state:  # request.redis read, nothing sent: a later use keeps nothing
        state[USAGES] = ENDED


def redis_tween_factory(handler: Any, registry: Any) -> Any:
    """Tween: when the view raised past every exception view (so no ``NewResponse``
    will come), release and report the request's Redis work before re-raising."""

    def redis_tween(request: Any) -> Any:
        state = request.__dict__
        # The request's thread, which alone may use its connection (usage.Usage); also
        # says no finished callback is needed: NewResponse or this tween end the request.
        state[IN_TWEEN] = get_ident()
        try:
            return handler(request)
        except BaseException:
            if state.get(USAGES):
                _finish(state, None)
            elif BOUND in state:
                state[USAGES] = ENDED
            raise

    return redis_tween
