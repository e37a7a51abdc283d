"""The demo's page shell: one layout, header and navigation for every page it serves.

``render(request, title, body)`` wraps a page's body (cards, tables) in it. The navigation
lists the pages whose routes exist, so ``demo_app.integrations`` included on its own (its
tests) gets the same shell. ``/favicon.ico`` is a small SVG, served without Redis.
"""

from __future__ import annotations

from html import escape
from importlib.metadata import version
from typing import Any

from pyramid.interfaces import IRoutesMapper
from pyramid.response import Response

from pyramid_redisx.request import client_set

STYLE = """
:root { --ink: #1d2433; --muted: #5b6478; --line: #dde2ec; --accent: #b3261e;
        --soft: #f6f7fb; --ok: #1f7a3f; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--ink); background: var(--soft); }
header { background: var(--ink); color: #fff; padding: .8rem 1.5rem; display: flex;
         align-items: baseline; gap: 1.5rem; flex-wrap: wrap; }
header strong { font-size: 1.1rem; }
header nav { display: flex; gap: 1.2rem; flex-wrap: wrap; }
header a { color: #cfd6e6; text-decoration: none; }
header a:hover, header a.here { color: #fff; text-decoration: underline; }
main { max-width: 980px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: .2rem 0 .4rem; }
.lede { color: var(--muted); margin-top: 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr));
        gap: 1rem; margin: 1rem 0; }
section.card + section.card { margin-top: 1rem; }
.grid section.card + section.card { margin-top: 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px;
        padding: 1rem 1.2rem; }
.card h2 { font-size: 1rem; margin: 0 0 .4rem; text-transform: uppercase;
           letter-spacing: .04em; color: var(--muted); }
.big { font-size: 2rem; font-weight: 700; margin: .2rem 0; }
.big small { font-size: 1rem; font-weight: 400; color: var(--muted); }
.how { color: var(--muted); font-size: .9rem; margin: .4rem 0 0; }
code { background: var(--soft); padding: .05rem .3rem; border-radius: 4px; font-size: .88em;
       overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid var(--line); }
td.n, th.n { text-align: right; }
.button { display: inline-block; background: var(--accent); color: #fff; padding: .5rem .9rem;
          border-radius: 6px; text-decoration: none; font-weight: 600; margin: .3rem 0; }
.button:hover { filter: brightness(1.1); }
ol.try li { margin: .3rem 0; }
.down { border-left: 6px solid var(--accent); }
.ok { color: var(--ok); font-weight: 600; }
footer { color: var(--muted); font-size: .85rem; padding: 1rem 1.5rem 2rem; text-align: center; }
"""

LAYOUT = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title} · pyramid_redisx demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/favicon.ico" type="image/svg+xml">
<style>{style}</style></head>
<body>
<header><strong>pyramid_redisx demo</strong>
<nav>{nav}</nav></header>
<main>
{body}
</main>
<footer>pyramid_redisx {version} · every request that used Redis writes one
<code>pyramid_redisx.stats</code> line on the console · documentation: <code>docs/</code>
(<code>make docs</code>)</footer>
</body>
</html>
"""

# (label, route name) of the header's links, in order; a route the app lacks is left out.
NAV = (
    ("Home", "home"),
    ("Cached report", "report"),
    ("Integrations", "integrations"),
)

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="7" fill="#b3261e"/>'
    '<text x="16" y="23" font-family="sans-serif" font-size="20" font-weight="700" '
    'fill="#fff" text-anchor="middle">R</text></svg>'
)


def nav_links(request: Any) -> list[tuple[str, str]]:
    mapper = request.registry.queryUtility(IRoutesMapper)
    links = [
        (label, request.route_path(name))
        for label, name in NAV
        if mapper is not None and mapper.get_route(name) is not None
    ]
    health = client_set(request.registry).app.health_route
    if health:
        links.append(("Health JSON", health))
    if mapper is not None and mapper.get_route("api_stats") is not None:
        links.append(("Stats JSON", request.route_path("api_stats")))
    return links


def render(request: Any, title: str, body: str, status: int = 200) -> Response:
    here = request.path
    nav = " ".join(
        f'<a href="{escape(path)}"{" class=here" if _here(path, here) else ""}>{escape(label)}</a>'
        for label, path in nav_links(request)
    )
    html = LAYOUT.format(
        title=escape(title), style=STYLE, nav=nav, body=body, version=version("pyramid_redisx")
    )
    return Response(html, status=status, content_type="text/html", charset="utf-8")


def _here(path: str, current: str) -> bool:
    """The link of this page, or of the section it is in (/integrations/...)."""
    return current == path or (path not in ("/", "") and current.startswith(path + "/"))


def favicon(request: Any) -> Response:
    response = Response(FAVICON, content_type="image/svg+xml", charset="utf-8")
    response.cache_control.max_age = 86400
    return response
