"""pyramid_redisx demo: a small app that shows what the add-on does, and says so.

``pyramid_redisx`` is included by ``pyramid.includes`` in development.ini, which also
declares a second client, ``cache``, turns on ``Server-Timing`` and the health route,
and adds the debug toolbar with its Redis panel. Run it with ``make demo`` (or
``python -m demo_app.run development.ini`` from the repository's root).

- ``/``                      a visit counter, a cached server line, the pools, this page's
                             Server-Timing figure, links into the toolbar and the health view
- ``/report``                a slow computation cached on the ``cache`` client (pipelines)
- ``/toolbar/redis/{id}``    opens the debug toolbar on request ``id`` with the Redis panel
- ``/api/stats``             the home page's figures as JSON
- ``/health/redis``          pyramid_redisx's health view (``redis.health_route``)
- ``/favicon.ico``           the demo's icon (no Redis needed)

When Redis is down, every page answers 503 with a page that says so (an exception view
for redis-py's ``ConnectionError`` and ``TimeoutError``), not a traceback; an execution
policy sends errors raised after the view (the sessions' write) to that view too.
``demo_app.integrations``, when present, adds more pages; the home page links them.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from datetime import UTC, datetime
from html import escape
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import redis
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.httpexceptions import HTTPFound
from pyramid.response import Response

from demo_app.layout import favicon, render
from pyramid_redisx import get_redis
from pyramid_redisx.pools import pool_figures
from pyramid_redisx.request import client_set

log = logging.getLogger(__name__)

VISITS_KEY = "demo:visits"
SERVER_INFO_KEY = "demo:server-info"
SERVER_INFO_TTL = 5  # seconds the "server" line stays in the cache client
REPORT_KEY = "demo:report"
REPORT_TTL = 15  # seconds the report stays cached
REPORT_WORK = 0.3  # seconds the "slow query" behind the report takes
# pyramid_debugtoolbar opens the tab named by this cookie (its "sticky panel").
TOOLBAR_PANEL_COOKIE = "pdtb_sticky_panel_selected"
REDIS_PANEL_ID = "pDebugPanel-redis"  # the Redis panel's tab: pDebugPanel-<panel name>
INTEGRATIONS = "demo_app.integrations"


# ------------------------------------------------------------------ data
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
    version_ = info.get(f"{name}_version", info.get("redis_version", "?"))
    mode = info.get("server_mode") or info.get("redis_mode", "?")  # Valkey says server_mode
    line = (
        f"{name} {version_}, {mode}, pid {info.get('process_id', '?')}, "
        f"up {info.get('uptime_in_seconds', '?')} s"
    )
    cache.set(SERVER_INFO_KEY, line, ex=SERVER_INFO_TTL)
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


# ------------------------------------------------------------------ helpers
def toolbar_link(request: Any, label: str) -> str:
    """A one-click link into the toolbar's Redis panel for this request ('' without it)."""
    request_id = getattr(request, "pdtb_id", None)  # set by the toolbar on requests it watches
    if request_id is None:
        return (
            '<p class="how">The debug toolbar is not watching this request (it only shows '
            "for 127.0.0.1 and ::1 by default).</p>"
        )
    href = request.route_path("open_redis_panel", request_id=request_id)
    return f'<a class="button" id="open-redis-panel" href="{escape(href)}">{escape(label)}</a>'


# The browser's view of this page's Server-Timing header (pyramid_redisx adds
# `redis;dur=<ms>;desc="<n> commands"` when redis.server_timing = true).
SERVER_TIMING_SCRIPT = """<script>
(function () {
  var shown = document.getElementById("server-timing");
  var nav = performance.getEntriesByType("navigation")[0];
  var entries = (nav && nav.serverTiming) || [];
  var redis = entries.filter(function (e) { return e.name === "redis"; })[0];
  shown.textContent = redis
    ? redis.duration.toFixed(2) + " ms, " + redis.description
    : "not received (is redis.server_timing on?)";
  shown.dataset.received = redis ? "yes" : "no";
})();
</script>"""


# ------------------------------------------------------------------ views
def home(request: Any) -> Response:
    data = stats(request, request.redis.incr(VISITS_KEY))
    listed = connection_counts(request)
    rows = "\n".join(
        f"<tr><td>{escape(name)}</td><td><code>{escape(f['url'])}</code></td>"
        f'<td class="n">{f["in_use"]}</td><td class="n">{f["idle"]}</td>'
        f'<td class="n">{f["max"]}</td>'
        + (f'<td class="n">{listed.get(name, "–")}</td>' if listed else "")
        + "</tr>"
        for name, f in data["clients"].items()
    )
    listed_head = '<th class="n">CLIENT LIST</th>' if listed else ""
    listed_note = (
        " <em>CLIENT LIST</em>: the connections the server sees on each client's database. "
        "Compare with in use + idle: sessions, the HTTP cache and the queue open no pool of "
        "their own (the health view keeps one connection more per client)."
        if listed
        else ""
    )
    source = (
        f"from the <code>cache</code> client (kept {SERVER_INFO_TTL} s)"
        if data["server_cached"]
        else "fresh from <code>INFO</code>, now cached for a few seconds"
    )
    health = client_set(request.registry).app.health_route
    health_link = (
        f'<a href="{escape(health)}" id="health-link">{escape(health)}</a> — the health view: '
        "JSON, 200 while every client answers, 503 when one does not; point a readiness "
        "probe at it."
        if health
        else "Set <code>redis.health_route</code> for a health view."
    )
    extra = request.registry.demo_extra_pages
    integrations = (
        '<section class="card" id="integrations"><h2>Integrations</h2><ul>'
        + "".join(
            f'<li><a href="{escape(path)}">{escape(title)}</a>'
            f"{' — ' + escape(about) if about else ''}</li>"
            for title, path, about in extra
        )
        + "</ul></section>"
        if extra
        else ""
    )
    body = f"""
<h1>Redis in a Pyramid app, live</h1>
<p class="lede">This page is a small Pyramid app using <code>pyramid_redisx</code>. Each box
says what it shows and where the code is; reload to see the figures move.</p>
<div class="grid">
<section class="card" id="visits"><h2>Visits</h2>
<p class="big" id="visit-count">{data["visits"]}</p>
<p class="how"><code>request.redis.incr("{VISITS_KEY}")</code>: the <code>default</code> client,
bound to this request, on the process's one connection pool.</p></section>

<section class="card" id="this-request"><h2>This page's Redis time</h2>
<p class="big" id="server-timing">…</p>
<p class="how">From the <code>Server-Timing</code> header pyramid_redisx added to this
response (<code>redis.server_timing = true</code>), as your browser received it
(<code>performance.getEntriesByType("navigation")[0].serverTiming</code>). Your browser's
developer tools show it under Network → Timing.</p></section>

<section class="card" id="server"><h2>Server</h2>
<p id="server-line"><strong>{escape(data["server"])}</strong></p>
<p class="how">{source}: <code>get_redis(request, "cache")</code> is a second client —
database 1, <code>str</code> replies, 8 connections, a 500 ms timeout.</p></section>

<section class="card" id="look-inside"><h2>Look inside</h2>
{toolbar_link(request, "Open the Redis panel for this page")}
<p class="how">The debug toolbar on this very request, Redis tab selected: each command,
its key, how long it took, and the pools.</p>
<p class="how">{health_link}</p></section>
</div>

<section class="card" id="pools"><h2>Connection pools</h2>
<table>
<thead><tr><th>client</th><th>url</th><th class="n">in use</th><th class="n">idle</th>
<th class="n">max</th>{listed_head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
<p class="how">One pool per process per distinct set of options, opened lazily and shared
by every request. The same figures: <a href="{escape(request.route_path("api_stats"))}">
{escape(request.route_path("api_stats"))}</a>.{listed_note}</p></section>
{integrations}
<section class="card" id="try"><h2>Try this</h2>
<ol class="try">
<li>Reload: the counter grows; the server line comes from the cache for {SERVER_INFO_TTL} s.</li>
<li>Open the <a href="{escape(request.route_path("report"))}">cached report</a> twice: computed
once (slow), then read from the cache in a pipeline.</li>
<li>Open the Redis panel: the <code>INCR</code>, <code>GET</code> (and the
<code>INFO</code>/<code>SET</code> when the cache was cold) of this page.</li>
<li>Stop the Redis server (its pid is in the server line) and reload: a 503 page says what
happened; the health view turns 503; the console says the server died.</li>
</ol></section>
{SERVER_TIMING_SCRIPT}
"""
    return render(request, "Home", body)


def compute_report(request: Any) -> dict[str, str]:
    """The "slow query" behind the report: a pause standing for real work, then figures."""
    time.sleep(REPORT_WORK)
    visits = int(request.redis.get(VISITS_KEY) or 0)
    return {
        "visits": str(visits),
        "keys": str(request.redis.dbsize()),
        "computed_at": datetime.now(UTC).strftime("%H:%M:%S UTC"),
    }


def report(request: Any) -> Response:
    cache = get_redis(request, "cache")
    started = time.perf_counter()
    with cache.pipeline(transaction=False) as pipe:  # one round trip for both
        pipe.hgetall(REPORT_KEY).ttl(REPORT_KEY)
        data, ttl = pipe.execute()
    if data:
        source = f"read from the cache in one pipeline; expires in {ttl} s"
        state = "hit"
    else:
        data = compute_report(request)
        with cache.pipeline() as pipe:  # MULTI/EXEC: the hash and its expiry together
            pipe.hset(REPORT_KEY, mapping=data).expire(REPORT_KEY, REPORT_TTL)
            pipe.execute()
        source = f"computed (the slow part takes {REPORT_WORK * 1000:.0f} ms), now cached for {REPORT_TTL} s"
        state = "miss"
    took = (time.perf_counter() - started) * 1000
    body = f"""
<h1>Cached report</h1>
<p class="lede">A slow computation kept on the <code>cache</code> client for {REPORT_TTL} s:
the usual way to spare a database.</p>
<div class="grid">
<section class="card" id="report" data-cache="{state}"><h2>Report</h2>
<table>
<tr><th>visits</th><td class="n">{escape(data["visits"])}</td></tr>
<tr><th>keys in database 0</th><td class="n">{escape(data["keys"])}</td></tr>
<tr><th>computed at</th><td class="n">{escape(data["computed_at"])}</td></tr>
</table></section>
<section class="card" id="report-timing"><h2>This time</h2>
<p class="big" id="report-took">{took:.1f} ms</p>
<p class="how" id="report-source">{escape(source)}.</p>
{toolbar_link(request, "See the pipelines in the Redis panel")}
</section>
</div>
<p class="how">Reload within {REPORT_TTL} s: a cache hit, a fraction of a millisecond.
The code: <code>demo_app/__init__.py</code>, <code>report()</code>.</p>
"""
    return render(request, "Cached report", body)


def open_redis_panel(request: Any) -> Response:
    """To the debug toolbar for request ``request_id``, with its Redis tab selected."""
    request_id = request.matchdict["request_id"]
    response = HTTPFound(request.route_url("debugtoolbar", subpath=(request_id,)))
    response.set_cookie(TOOLBAR_PANEL_COOKIE, REDIS_PANEL_ID, path="/")
    return response


def api_stats(request: Any) -> dict[str, Any]:
    return stats(request, int(request.redis.get(VISITS_KEY) or 0))


def redis_down(exc: Exception, request: Any) -> Response:
    """Exception view: Redis is not reachable. A 503 page that says so, not a traceback."""
    log.warning("%s %s: Redis not reachable: %s", request.method, request.path, exc)
    health = client_set(request.registry).app.health_route
    check = (
        f'<li>The health view says which client and why: <a href="{escape(health)}">'
        f"{escape(health)}</a>.</li>"
        if health
        else ""
    )
    body = f"""
<section class="card down" id="redis-down">
<h1>Redis is not reachable</h1>
<p class="lede">This page needs Redis, and the server did not answer:</p>
<p><code id="redis-error">{escape(type(exc).__name__)}: {escape(str(exc))}</code></p>
<h2>What to do</h2>
<ul>
<li>Running <code>make demo</code>? Its console says whether its Redis server died.
Stop the demo (Ctrl-C) and run <code>make demo</code> again: it starts a new server.</li>
<li>Your own Redis (<code>redis_port</code> in <code>development.ini</code>)? Start it, or
check the port: <code>redis-cli -p &lt;port&gt; ping</code>.</li>
{check}
<li>Then reload this page. Nothing else needs restarting: the connection pool reconnects
by itself.</li>
</ul>
<p class="how">This is the demo's exception view for <code>redis.exceptions.ConnectionError</code>
and <code>TimeoutError</code>, answering 503 Service Unavailable.</p>
</section>
"""
    response = render(request, "Redis is not reachable", body, status=503)
    response.headers["Retry-After"] = "5"
    return response


# ------------------------------------------------------------------ app
# Titles for the pages of demo_app.integrations (its routes, by name); pages that are
# steps of another (the origin the HTTP cache fetches, the queue's drain) are not listed.
INTEGRATION_PAGES = {
    "integrations": ("Integrations", "what each client's pool holds, against CLIENT LIST"),
    "integrations.name": ("Sessions", "remember my name: pyramid_session_redis on the app's pool"),
    "integrations.http_cache": ("HTTP cache", "requests-cache on Redis: a miss, then hits"),
    "integrations.queue": ("Message queue", "enqueue messages, then drain them"),
}
INTEGRATION_STEPS = {"integrations.origin", "integrations.drain"}


def include_integrations(config: Configurator) -> list[tuple[str, str, str]]:
    """Include ``demo_app.integrations`` when it exists; return (title, path, about) of
    its pages: the routes it adds whose pattern has no placeholder."""
    if importlib.util.find_spec(INTEGRATIONS) is None:
        return []
    if int(version("pyramid").split(".")[0]) < 2:  # its sessions: pyramid_session_redis 1.8
        log.warning("demo: %s not included: its sessions need Pyramid 2", INTEGRATIONS)
        return []
    config.commit()
    before = {route.name for route in config.get_routes_mapper().get_routes()}
    try:
        config.include(INTEGRATIONS)
    except ImportError as exc:  # an integration's package is not installed
        log.warning("demo: %s not included: %s (pip install -e '.[demo]')", INTEGRATIONS, exc)
        return []
    config.commit()
    pages = []
    for route in config.get_routes_mapper().get_routes():
        if route.name in before or route.name in INTEGRATION_STEPS:
            continue
        if "{" in route.pattern or "*" in route.pattern:
            continue
        default = (route.name.replace("_", " ").replace(".", ": ").capitalize(), "")
        title, about = INTEGRATION_PAGES.get(route.name, default)
        pages.append((title, route.pattern, about))
    return pages


def connection_counts(request: Any) -> dict[str, int]:
    """Connections ``CLIENT LIST`` shows per client, when demo_app.integrations says."""
    if not request.registry.demo_extra_pages:
        return {}
    module = importlib.import_module(INTEGRATIONS)
    count = getattr(module, "connection_counts", None)
    if count is None:
        return {}
    return {name: int(figures["client_list"]) for name, figures in count(request.registry).items()}


def render_late_errors(environ: dict[str, Any], router: Any) -> Any:
    """Execution policy: an error raised after the view returned also gets the app's
    exception views (the 503 page), not the WSGI server's bare 500.

    Response and finished callbacks run outside the tweens, so exception views do not
    see what they raise: pyramid_session_redis writes the session in one, and with Redis
    down that write raised through to waitress. Pyramid 1.10's default policy did this;
    Pyramid 2's does not (docs/reference/troubleshooting.rst).
    """
    with router.request_context(environ) as request:
        try:
            return router.invoke_request(request)
        except Exception:  # noqa: BLE001 - re-raised when no exception view matches
            return request.invoke_exception_view(reraise=True)


def check_redis_port(global_config: dict[str, Any], settings: dict[str, Any]) -> None:
    """``pserve development.ini redis_port=N`` cannot change a port the file's [DEFAULT]
    sets (PasteDeploy keeps the file's value): refuse it rather than silently use 6399."""
    given = global_config.get("redis_port")
    url = settings.get("redis.url", "")
    if given is None or not url:
        return
    used = urlsplit(url).port
    if str(used) != str(given).strip():
        raise ConfigurationError(
            f"redis_port={given} after the ini file's name is not used: the file's [DEFAULT] "
            f"sets redis_port, which PasteDeploy keeps (redis.url is {url}). Change "
            "redis_port in the file instead."
        )


def main(global_config: dict[str, Any], **settings: Any) -> Any:
    """Paste app factory (development.ini: ``use = call:demo_app:main``)."""
    check_redis_port(global_config, settings)
    with Configurator(settings=settings) as config:
        # pyramid_redisx itself (and the toolbar) come from ``pyramid.includes`` in the ini.
        config.set_execution_policy(render_late_errors)
        config.add_route("home", "/")
        config.add_route("report", "/report")
        config.add_route("api_stats", "/api/stats")
        config.add_route("open_redis_panel", "/toolbar/redis/{request_id}")
        config.add_route("favicon", "/favicon.ico")
        config.add_view(home, route_name="home", request_method="GET")
        config.add_view(report, route_name="report", request_method="GET")
        config.add_view(api_stats, route_name="api_stats", request_method="GET", renderer="json")
        config.add_view(open_redis_panel, route_name="open_redis_panel", request_method="GET")
        config.add_view(favicon, route_name="favicon", request_method="GET")
        for error in (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            config.add_view(redis_down, context=error)
        config.registry.demo_extra_pages = include_integrations(config)
    return config.make_wsgi_app()
