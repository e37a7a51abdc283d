"""pyramid_redisx demo: a visit counter, a cached server-info line, pool figures.

``pyramid_redisx`` is included by ``pyramid.includes`` in development.ini, which also
declares a second client, ``cache``. Run it with ``python -m demo_app.run development.ini``.

- ``/``           INCRs a counter on ``request.redis`` and shows each client's pool.
- ``/api/stats``  the same figures as JSON (reads the counter, does not count a visit).
"""

from __future__ import annotations

from html import escape
from typing import Any

from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_redisx import get_redis
from pyramid_redisx.pools import pool_figures
from pyramid_redisx.request import client_set

VISITS_KEY = "demo:visits"
SERVER_INFO_KEY = "demo:server-info"
SERVER_INFO_TTL = 5  # seconds the "server info" line stays in the cache client


def server_info(request: Any) -> tuple[str, bool]:
    """A one-line description of the server, cached for a few seconds on ``cache``.

    Returns (line, came from the cache).
    """
    cache = get_redis(request, "cache")  # decode_responses = true: str, not bytes
    line = cache.get(SERVER_INFO_KEY)
    if line is not None:
        return line, True
    info = request.redis.info("server")
    name = info.get("server_name", "redis")
    version = info.get(f"{name}_version", info.get("redis_version", "?"))
    mode = info.get("server_mode") or info.get("redis_mode", "?")  # Valkey says server_mode
    line = f"{name} {version}, {mode}, up {info.get('uptime_in_seconds', '?')} s"
    cache.setex(SERVER_INFO_KEY, SERVER_INFO_TTL, line)
    return line, False


def client_figures(request: Any) -> dict[str, dict[str, Any]]:
    """URL (password redacted) and pool figures of every declared client."""
    clients = client_set(request.registry)
    result = {}
    for name, pool in clients.pools().items():
        figures = pool_figures(pool)
        result[name] = {
            "url": clients.options[name].url,  # shows *** instead of a password
            "in_use": figures.in_use,
            "idle": figures.idle,
            "max": figures.max,
        }
    return result


def stats(request: Any, visits: int) -> dict[str, Any]:
    line, cached = server_info(request)
    return {
        "visits": visits,
        "server": line,
        "server_cached": cached,
        "clients": client_figures(request),
    }


PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>pyramid_redisx demo</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
td, th {{ padding: .2em .8em; text-align: left; }}
td.n {{ text-align: right; }}
</style></head>
<body>
<h1>pyramid_redisx demo</h1>
<p>This page was visited <strong>{visits}</strong> times
(<code>request.redis.incr({key})</code>).</p>
<p>Server: {server} <small>({source})</small></p>
<h2>Connection pools</h2>
<table>
<tr><th>client</th><th>url</th><th>in use</th><th>idle</th><th>max</th></tr>
{rows}
</table>
<p>The same as JSON: <a href="{api}">{api}</a>.
The console shows one <code>pyramid_redisx.stats</code> line per client per request.</p>
</body>
</html>
"""

ROW = (
    "<tr><td>{name}</td><td><code>{url}</code></td>"
    '<td class="n">{in_use}</td><td class="n">{idle}</td><td class="n">{max}</td></tr>'
)


def home(request: Any) -> Response:
    data = stats(request, request.redis.incr(VISITS_KEY))
    rows = "\n".join(
        ROW.format(
            name=escape(name),
            url=escape(f["url"]),
            in_use=f["in_use"],
            idle=f["idle"],
            max=f["max"],
        )
        for name, f in data["clients"].items()
    )
    source = (
        f"from the cache client, kept {SERVER_INFO_TTL} s"
        if data["server_cached"]
        else "fresh from INFO, now cached"
    )
    html = PAGE.format(
        visits=data["visits"],
        key=escape(repr(VISITS_KEY)),
        server=escape(data["server"]),
        source=escape(source),
        rows=rows,
        api=escape(request.route_path("api_stats")),
    )
    return Response(html, content_type="text/html", charset="utf-8")


def api_stats(request: Any) -> dict[str, Any]:
    return stats(request, int(request.redis.get(VISITS_KEY) or 0))


def main(global_config: dict[str, Any], **settings: Any) -> Any:
    """Paste app factory (``egg:pyramid_redisx#demo``)."""
    with Configurator(settings=settings) as config:
        # pyramid_redisx itself comes from ``pyramid.includes`` in the ini.
        config.add_route("home", "/")
        config.add_route("api_stats", "/api/stats")
        config.add_view(home, route_name="home", request_method="GET")
        config.add_view(api_stats, route_name="api_stats", request_method="GET", renderer="json")
    return config.make_wsgi_app()
