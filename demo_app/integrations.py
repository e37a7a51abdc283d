"""The demo's integrations: sessions, the HTTP cache and the queue, on the app's pools.

    config.include("demo_app.integrations")   # after pyramid_redisx

Routes, under ``/integrations``:

- ``/integrations``             what each client's pool holds against ``CLIENT LIST``;
- ``/integrations/name``        "remember my name" (pyramid_session_redis);
- ``/integrations/http-cache``  fetches ``/integrations/origin`` from this very app through
                                requests-cache on Redis, showing hit or miss;
- ``/integrations/queue``       a form that enqueues; ``/integrations/queue/drain`` drains.

Sessions get ``pyramid_redisx.sessions.client_callable`` and, when the ini has none, a
secret made at startup (sessions then end with the process: fine for a demo).
"""

from __future__ import annotations

import secrets
from html import escape
from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response

from demo_app.layout import render
from pyramid_redisx.http_cache import http_cache_session
from pyramid_redisx.pools import pool_figures
from pyramid_redisx.queue import MessageQueue, QueueEmpty
from pyramid_redisx.request import client_set

QUEUE = "demo:queue"
ORIGIN_HITS = "demo:origin-hits"
HTTP_CACHE_NAMESPACE = "demo:http_cache"
HTTP_CACHE_SECONDS = 10


def includeme(config: Configurator) -> None:
    """Session factory on the app's pool, then the routes and views listed above."""
    settings = config.get_settings()
    settings.setdefault(
        "redis.sessions.redis_client_callable", "pyramid_redisx.sessions.client_callable"
    )
    settings.setdefault("redis.sessions.secret", secrets.token_hex(32))
    config.include("pyramid_session_redis")
    for name, path, view in (
        ("integrations", "/integrations", overview),
        ("integrations.name", "/integrations/name", remember_name),
        ("integrations.http_cache", "/integrations/http-cache", http_cache_page),
        ("integrations.origin", "/integrations/origin", origin),
        ("integrations.queue", "/integrations/queue", queue_page),
        ("integrations.drain", "/integrations/queue/drain", drain),
    ):
        config.add_route(name, path)
        config.add_view(view, route_name=name)


def connection_counts(registry: Any) -> dict[str, dict[str, int]]:
    """Per client: connections ``CLIENT LIST`` shows on its database, and its pool's.

    Equal numbers mean nothing but the client's pool talks to that database: sessions,
    the HTTP cache and the queue opened no pool of their own. (Clients are told apart by
    database, so give each its own ``db`` for this to be exact.)
    """
    clients = client_set(registry)
    counts = {}
    for name, pool in clients.pools().items():
        listed = clients.client(name).client_list("normal")  # asked on one of its connections
        db = clients.options[name].db
        figures = pool_figures(pool)
        counts[name] = {
            "client_list": sum(1 for entry in listed if int(entry["db"]) == db),
            "pool": figures.in_use + figures.idle,
        }
    return counts


# The integration pages, for the line of links at the top of each.
PAGES = (
    ("Overview", "integrations"),
    ("Sessions", "integrations.name"),
    ("HTTP cache", "integrations.http_cache"),
    ("Message queue", "integrations.queue"),
)


def page(request: Any, title: str, lede: str, body: str) -> Response:
    """An integration page in the demo's layout, with links to the others."""
    links = " · ".join(
        f'<a href="{escape(request.route_path(name))}"'
        f"{' class=here' if request.matched_route and request.matched_route.name == name else ''}>"
        f"{escape(label)}</a>"
        for label, name in PAGES
    )
    return render(
        request,
        title,
        f'<p class="how" id="integration-pages">Integrations: {links}</p>'
        f'<h1>{escape(title)}</h1><p class="lede">{lede}</p>{body}',
    )


def overview(request: Any) -> Response:
    rows = "".join(
        f'<tr><td>{escape(name)}</td><td class="n">{c["client_list"]}</td>'
        f'<td class="n">{c["pool"]}</td></tr>'
        for name, c in connection_counts(request.registry).items()
    )
    return page(
        request,
        "Integrations on one pool per client",
        "Sessions, the HTTP cache and the queue take their connections from the app's "
        "clients: no pool of their own.",
        '<div class="grid"><section class="card" id="integration-list"><h2>Try them</h2><ul>'
        f'<li><a href="{request.route_path("integrations.name")}">Sessions</a>: remember my '
        "name (pyramid_session_redis)</li>"
        f'<li><a href="{request.route_path("integrations.http_cache")}">HTTP cache</a>: '
        "requests-cache on Redis, a miss then hits</li>"
        f'<li><a href="{request.route_path("integrations.queue")}">Message queue</a>: '
        "enqueue, then drain</li></ul></section>"
        '<section class="card" id="client-list"><h2>Connections</h2>'
        '<table><thead><tr><th>client</th><th class="n">CLIENT LIST connections</th>'
        f'<th class="n">its pool</th></tr></thead><tbody>{rows}</tbody></table>'
        '<p class="how">The same number, or one more (the health view keeps a connection '
        "of its own): nothing but the client's pool talks to its database.</p>"
        "</section></div>",
    )


def remember_name(request: Any) -> Response:
    if request.method == "POST":
        request.session["name"] = request.POST.get("name", "")[:100]
        return HTTPSeeOther(request.route_url("integrations.name"))
    name = request.session.get("name")
    greeting = f"Hello, {escape(name)}!" if name else "I don't know your name yet."
    return page(
        request,
        "Sessions",
        "pyramid_session_redis, its connection from <code>pyramid_redisx.sessions."
        "client_callable</code>: the request's own client.",
        f"<section class='card'><p class='greeting'>{greeting}</p><form method='post'>"
        "<input name='name' placeholder='your name'> <button>Remember me</button></form>"
        "</section>",
    )


def origin(request: Any) -> Response:
    """The "remote" page the HTTP cache fetches: counts how often it is really served."""
    hits = request.redis.incr(ORIGIN_HITS)
    return Response(f"origin response number {hits}", content_type="text/plain")


def http_cache_page(request: Any) -> Response:
    with http_cache_session(
        request, namespace=HTTP_CACHE_NAMESPACE, expire_after=HTTP_CACHE_SECONDS
    ) as session:
        fetched = session.get(request.route_url("integrations.origin"), timeout=5)
    state = "hit" if fetched.from_cache else "miss"
    return page(
        request,
        "HTTP cache",
        "requests-cache with <code>http_cache_session(request)</code>: responses kept in "
        "Redis, on the app's pool.",
        f"<section class='card'><p>Fetched <code>/integrations/origin</code>: "
        f"<strong class='state'>{state}</strong> (cached for {HTTP_CACHE_SECONDS} s)</p>"
        f"<p>Its body: <code class='body'>{escape(fetched.text)}</code></p></section>",
    )


def queue_page(request: Any) -> Response:
    queue = MessageQueue(request.redis, QUEUE, max_length=100)
    if request.method == "POST":
        queue.put(request.POST.get("message", "")[:200], timeout=1)
        return HTTPSeeOther(request.route_url("integrations.queue"))
    return page(
        request,
        "Message queue",
        "<code>MessageQueue(request.redis, name)</code>: RPUSH to enqueue, BLPOP to take.",
        f"<section class='card'><p><span class='length'>{len(queue)}</span> messages "
        f"waiting. <a href='{request.route_path('integrations.drain')}'>drain them</a></p>"
        "<form method='post'><input name='message'> <button>Enqueue</button></form></section>",
    )


def drain(request: Any) -> Response:
    """Takes every waiting message. A worker would block in ``get`` on a client of its
    own (see docs/integrations.rst); a view only waits a few milliseconds."""
    queue = MessageQueue(request.redis, QUEUE)
    messages = []
    try:
        while len(messages) < 1000:
            messages.append(queue.get(timeout=0.01).decode("utf-8", "replace"))
    except QueueEmpty:
        pass
    items = "".join(f"<li>{escape(m)}</li>" for m in messages) or "<li>(empty)</li>"
    return page(
        request,
        "Drained",
        "Every message that was waiting, oldest first.",
        f"<section class='card'><ol class='drained'>{items}</ol></section>",
    )
