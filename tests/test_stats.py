"""The per-request line, pool warnings, slow commands and Server-Timing."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from pyramid.response import Response

from pyramid_redisx import get_redis, stats
from pyramid_redisx import usage as usage_module
from pyramid_redisx.usage import KEY_SHOWN

LINE = re.compile(
    r"^redis client=(?P<client>\S+) commands=(?P<commands>\d+) time_ms=(?P<time>[\d.]+) "
    r"slowest=(?P<slowest>[A-Z_]+):(?P<slowest_ms>[\d.]+) in_use=(?P<in_use>\d+) "
    r"idle=(?P<idle>\d+) max=(?P<max>\d+) waited_ms=(?P<waited>[\d.]+)$"
)


def stats_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pyramid_redisx.stats"]


def test_one_line_per_used_client_in_the_contract_format(make_app: Any, all_logs: Any) -> None:
    def view(request: Any) -> str:
        request.redis.set("k", "v")
        request.redis.get("k")
        request.redis.get("k")
        get_redis(request, "cache").ping()
        get_redis(request, "idle")  # bound but never used: no line
        return "ok"

    make_app({"/": view}, clients="cache idle", **{"cache.max_connections": "9"}).get("/")
    records = stats_records(all_logs)
    assert [r.redis_client for r in records] == ["default", "cache"]  # type: ignore[attr-defined]
    default = LINE.match(records[0].getMessage())
    assert default, records[0].getMessage()
    assert default["client"] == "default" and default["commands"] == "3"
    assert default["slowest"] in ("SET", "GET")
    # Written while the request still holds its connection (request_connection).
    assert (default["in_use"], default["idle"], default["max"], default["waited"]) == (
        "1",
        "0",
        "32",
        "0",
    )
    assert records[0].levelno == logging.DEBUG
    cache = records[1]
    assert cache.redis_commands == 1 and cache.redis_max == 9  # type: ignore[attr-defined]
    assert cache.redis_slowest.startswith("PING:")  # type: ignore[attr-defined]
    for record in records:
        for name in ("redis_client", "redis_commands", "redis_time_ms", "redis_slowest",
                     "redis_in_use", "redis_idle", "redis_max", "redis_waited_ms"):  # fmt: skip
            assert hasattr(record, name)
        assert record.redis_time_ms > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("transaction", "name"), [(True, "MULTI"), (False, "PIPELINE")])
def test_pipeline_counts_each_command_in_one_entry(
    make_app: Any, all_logs: Any, transaction: bool, name: str
) -> None:
    def view(request: Any) -> str:
        pipe = request.redis.pipeline(transaction=transaction)
        for i in range(20):
            pipe.set(f"k{i}", i)
        pipe.execute()
        return "ok"

    make_app({"/": view}).get("/")
    (record,) = stats_records(all_logs)
    assert record.redis_commands == 20  # type: ignore[attr-defined]
    assert record.redis_slowest.startswith(f"{name}:")  # type: ignore[attr-defined]
    # one round trip on loopback: its time, not a second more
    assert 0 < record.redis_time_ms < 500  # type: ignore[attr-defined]


def test_no_line_for_a_request_without_redis(make_app: Any, all_logs: Any) -> None:
    make_app({"/": lambda request: "plain", "/bound": lambda request: repr(request.redis)}).get("/")
    assert stats_records(all_logs) == []


def test_line_off_by_setting_and_by_level(make_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    views = {"/": lambda request: request.redis.ping()}
    caplog.set_level(logging.DEBUG)
    make_app(views, stats="false").get("/")
    assert stats_records(caplog) == []
    caplog.set_level(logging.INFO, logger="pyramid_redisx.stats")
    make_app(views).get("/")  # level DEBUG, logger at INFO: nothing built
    assert stats_records(caplog) == []
    make_app(views, stats_level="warning").get("/")
    (record,) = stats_records(caplog)
    assert record.levelno == logging.WARNING


def test_line_also_for_a_view_that_raised(make_app: Any, all_logs: Any) -> None:
    def view(request: Any) -> str:
        request.redis.incr("n")
        raise RuntimeError("boom")

    app = make_app({"/": view})
    with pytest.raises(RuntimeError):
        app.get("/")
    (record,) = stats_records(all_logs)
    assert record.redis_commands == 1  # type: ignore[attr-defined]
    assert record.redis_in_use == 1  # type: ignore[attr-defined]  # its own, released after


def test_one_line_when_an_exception_view_renders_the_error(make_app: Any, all_logs: Any) -> None:
    """The exception view's response gets NewResponse: one line, the tween stays out."""

    def view(request: Any) -> str:
        request.redis.incr("n")
        raise RuntimeError("boom")

    def error_view(exc: Any, request: Any) -> Response:
        request.redis.incr("errors")
        return Response("sorry", status=503)

    def setup(config: Any) -> None:
        config.add_exception_view(error_view, RuntimeError)

    app = make_app({"/": view}, setup=setup, server_timing="true")
    response = app.get("/", status=503)
    (record,) = stats_records(all_logs)
    assert record.redis_commands == 2  # type: ignore[attr-defined]
    assert 'desc="2 commands"' in response.headers["Server-Timing"]


def test_saturation_and_wait_warnings(make_app: Any, all_logs: Any) -> None:
    barrier = threading.Barrier(4)

    def view(request: Any) -> str:
        barrier.wait(5)
        request.redis.execute_command("DEBUG", "SLEEP", "0.05")
        return "ok"

    app = make_app({"/": view}, max_connections="2", pool_warn_ratio="0.5")
    threads = [threading.Thread(target=app.get, args=("/",)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    warnings = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.pool"]
    assert any("waited" in w and "for a free connection" in w for w in warnings), warnings
    waited = [r.redis_waited_ms for r in stats_records(all_logs)]  # type: ignore[attr-defined]
    assert max(waited) >= 40  # two of four requests waited for a 50 ms command


@contextlib.contextmanager
def half_full_pool(make_app: Any) -> Iterator[tuple[Any, Any]]:
    """An app on 4 connections warning at 2, while another "request" holds two."""
    app = make_app(
        {"/": lambda request: request.redis.ping()}, max_connections="4", pool_warn_ratio="0.5"
    )
    pool = get_redis(app.app.registry).connection_pool
    held = [pool.get_connection() for _ in range(2)]
    try:
        yield app, pool
    finally:
        for connection in held:
            pool.release(connection)


def test_saturation_warning_from_in_use_ratio(make_app: Any, all_logs: Any) -> None:
    with half_full_pool(make_app) as (app, _pool):
        app.get("/")
    warnings = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.pool"]
    assert warnings == [
        "redis client=default pool nearly full: in_use=3 idle=0 max=4 (pool_warn_ratio 0.5)"
    ]


def test_saturation_warning_as_soon_as_in_use_reaches_the_share(
    make_app: Any, all_logs: Any
) -> None:
    """``pool_warn_ratio`` 0.5 of 4 connections: the request whose own connection is the
    second in use is warned about (in use *reaches* the share), the first is not; with
    the stats line off too, where only the pool's note that it grew that far (no figures
    read per request) brings the check on."""
    app = make_app(
        {"/": lambda request: request.redis.ping()}, max_connections="4", pool_warn_ratio="0.5",
        stats="false",
    )  # fmt: skip
    pool = get_redis(app.app.registry).connection_pool
    app.get("/")  # one connection made, and in use by the request alone: no warning
    held = pool.get_connection()  # the request's connection, given back: now the other's
    try:
        app.get("/")  # a second one made: 2 in use
    finally:
        pool.release(held)
    warnings = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.pool"]
    assert warnings == [
        "redis client=default pool nearly full: in_use=2 idle=0 max=4 (pool_warn_ratio 0.5)"
    ]


def test_pool_warnings_at_most_once_a_second_with_a_count(make_app: Any, all_logs: Any) -> None:
    with half_full_pool(make_app) as (app, pool):
        for _ in range(5):
            app.get("/")
        last, count = pool.warned["full"]
        pool.warned["full"] = (last - 1.0, count)  # as if a second had gone by
        app.get("/")
    warnings = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.pool"]
    assert warnings == [
        "redis client=default pool nearly full: in_use=3 idle=0 max=4 (pool_warn_ratio 0.5)",
        "redis client=default pool nearly full: in_use=3 idle=0 max=4 (pool_warn_ratio 0.5)"
        "; 4 more like this in the last 1 s not logged",
    ]


def test_slow_command_warning_names_command_key_client_and_path(
    make_app: Any, all_logs: Any
) -> None:
    def view(request: Any) -> str:
        request.redis.get("fast-key")
        request.redis.blpop(["empty-list"], timeout=0.3)  # blocks 300 ms on the server
        request.redis.set("a-key", "secret-value")
        return "ok"

    # 150 ms: far above a GET (with its connect) even on a loaded machine, below the BLPOP
    make_app({"/page": view}, slow_command="150ms").get("/page")
    slow = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.slow"]
    assert len(slow) == 1, slow
    assert slow[0].startswith("redis client=default slow command BLPOP key=empty-list took ")
    assert "path=/page" in slow[0] and "secret-value" not in slow[0]
    assert " ms (slow_command 150.00 ms) path=/page" in slow[0], slow[0]


def test_server_timing_header_exact_and_merged(make_app: Any) -> None:
    def view(request: Any) -> Response:
        request.redis.set("a", 1)
        request.redis.get("a")
        response = Response("ok")
        response.headers["Server-Timing"] = "db;dur=1.5"
        return response

    app = make_app({"/": view, "/none": lambda request: "none"}, server_timing="true")
    header = app.get("/").headers["Server-Timing"]
    match = re.fullmatch(r'db;dur=1\.5, redis;dur=(\d+\.\d\d);desc="2 commands"', header)
    assert match, header
    assert "Server-Timing" not in app.get("/none").headers
    off = make_app({"/": view})
    assert off.get("/").headers["Server-Timing"] == "db;dur=1.5"


@pytest.mark.parametrize("request_connection", ["true", "false"])
def test_time_excludes_the_wait_for_a_connection(
    make_app: Any, all_logs: Any, request_connection: str
) -> None:
    """A 0.2 s BLPOP after a 0.3 s wait for the only connection: time_ms and the slow
    warning say 0.2 s (they said 0.5 s), waited_ms 0.3 s, and the wait warning shows
    the connection the request held (in_use=1, not the 0 left after it gave it back)."""

    def view(request: Any) -> str:
        request.redis.blpop(["empty-list"], timeout=0.2)
        return "ok"

    app = make_app({"/": view}, max_connections="1", slow_command="0.1",
                   request_connection=request_connection)  # fmt: skip
    pool = get_redis(app.app.registry).connection_pool
    other = pool.get_connection()
    threading.Timer(0.3, pool.release, args=(other,)).start()
    app.get("/")
    (record,) = stats_records(all_logs)
    assert 190 <= record.redis_time_ms < 450, record.getMessage()  # 500+ with the wait  # type: ignore[attr-defined]
    assert record.redis_waited_ms >= 280, record.getMessage()  # type: ignore[attr-defined]
    (slow,) = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.slow"]
    took = float(re.search(r"took ([\d.]+) ms", slow)[1])  # type: ignore[index]
    assert 190 <= took < 450, slow
    (waited,) = [r.getMessage() for r in all_logs.records if "request waited" in r.getMessage()]
    assert re.fullmatch(
        r"redis client=default request waited \d+\.\d ms for a free connection "
        r"\(in_use=1 max=1\)",
        waited,
    ), waited


def test_each_of_two_requests_that_waited_reports_its_own_wait(
    make_app: Any, all_logs: Any
) -> None:
    """Two requests in a row on one thread, each waiting for the only connection (0.3 s,
    then 0.15 s): each line's waited_ms is that request's own wait, the second's too."""
    app = make_app({"/": lambda request: request.redis.ping()}, max_connections="1")
    pool = get_redis(app.app.registry).connection_pool
    for delay in (0.3, 0.15):
        other = pool.get_connection()
        threading.Timer(delay, pool.release, args=(other,)).start()
        app.get("/")
    first, second = stats_records(all_logs)
    assert first.redis_waited_ms >= 280, first.getMessage()  # type: ignore[attr-defined]
    assert second.redis_waited_ms >= 130, second.getMessage()  # type: ignore[attr-defined]


def test_slowest_is_the_slowest_command_not_the_total(make_app: Any, all_logs: Any) -> None:
    """Two BLPOPs on an empty list, 0.1 s and 0.25 s: ``slowest`` is the second alone,
    ``time_ms`` both (a ``slowest`` equal to the total tells an operator nothing)."""

    def view(request: Any) -> str:
        request.redis.blpop(["empty-list"], timeout=0.1)
        request.redis.blpop(["empty-list"], timeout=0.25)
        return "ok"

    make_app({"/": view}).get("/")
    (record,) = stats_records(all_logs)
    line = LINE.match(record.getMessage())
    assert line, record.getMessage()
    assert line["slowest"] == "BLPOP"
    slowest, total = float(line["slowest_ms"]), float(line["time"])
    assert slowest >= 240 and total >= slowest + 90, record.getMessage()
    assert record.redis_slowest == f"BLPOP:{line['slowest_ms']}"  # type: ignore[attr-defined]


def test_pool_warnings_are_logged_with_the_stats_line_off(make_app: Any, all_logs: Any) -> None:
    """``redis.stats = false`` turns off the per-request line, not the pool's WARNINGs:
    a request that found the pool half full, and one that waited 0.3 s for the only
    connection, are still reported on ``pyramid_redisx.pool``."""
    full = make_app({"/": lambda request: request.redis.ping()}, stats="false",
                    max_connections="4", pool_warn_ratio="0.5")  # fmt: skip
    pool = get_redis(full.app.registry).connection_pool
    held = [pool.get_connection() for _ in range(2)]
    try:
        full.get("/")
    finally:
        for connection in held:
            pool.release(connection)
    waiting = make_app({"/": lambda request: request.redis.ping()}, stats="false",
                       max_connections="1")  # fmt: skip
    pool = get_redis(waiting.app.registry).connection_pool
    other = pool.get_connection()
    release = threading.Timer(0.3, pool.release, args=(other,))
    release.start()
    try:
        waiting.get("/")
    finally:
        release.join()
    warnings = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.pool"]
    assert stats_records(all_logs) == []
    assert warnings[0] == (
        "redis client=default pool nearly full: in_use=3 idle=0 max=4 (pool_warn_ratio 0.5)"
    )
    assert len(warnings) == 3, warnings  # the second pool was full too (1 of 1 in use)
    assert re.fullmatch(
        r"redis client=default request waited \d+\.\d ms for a free connection "
        r"\(in_use=1 max=1\)",
        warnings[2],
    ), warnings


def test_server_timing_counts_every_client_of_the_request(make_app: Any) -> None:
    """Three commands on ``default`` and one on ``cache``: one entry for the four."""

    def view(request: Any) -> str:
        request.redis.set("a", 1)
        request.redis.get("a")
        request.redis.get("a")
        get_redis(request, "cache").ping()
        return "ok"

    app = make_app({"/": view}, clients="cache", server_timing="true")
    header = app.get("/").headers["Server-Timing"]
    assert re.fullmatch(r'redis;dur=\d+\.\d\d;desc="4 commands"', header), header


def test_commands_of_client_and_its_pipelines_are_the_requests(
    make_app: Any, all_logs: Any
) -> None:
    """``request.redis.client()`` is the request's too: its commands and its pipeline's
    are counted in the request's line, and its pipeline runs on its own connection (the
    request's connection stays idle for the request's next command)."""

    def view(request: Any) -> str:
        own = request.redis.client_id()
        with request.redis.client() as single:
            single.set("k", "v")
            ids = single.pipeline(transaction=False).client_id().get("k").execute()
            single_id = single.client_id()
        return f"{len({own, single_id, ids[0]})} {ids[1]!r}"

    assert make_app({"/": view}).get("/").text == "3 b'v'"
    (record,) = stats_records(all_logs)
    assert record.redis_commands == 5  # type: ignore[attr-defined]


def test_a_watching_pipelines_commands_in_the_line_and_the_slow_warning(
    make_app: Any, all_logs: Any
) -> None:
    """A WATCH pipeline's immediate commands (WATCH, a BLPOP while watching) count like
    the request's own: each in ``commands``, the BLPOP ``slowest`` with its own time
    (not the total, not a clock reading), and in the slow-command warning with its key."""

    def view(request: Any) -> str:
        pipe = request.redis.pipeline()
        pipe.watch("w-key")
        pipe.blpop(["empty-list"], timeout=0.25)
        pipe.multi()
        pipe.set("w-key", "secret-value")
        pipe.execute()
        return "ok"

    make_app({"/watch": view}, slow_command="150ms").get("/watch")
    (record,) = stats_records(all_logs)
    line = LINE.match(record.getMessage())
    assert line, record.getMessage()
    assert line["commands"] == "3"  # WATCH, BLPOP, the transaction's SET
    assert line["slowest"] == "BLPOP"
    slowest, total = float(line["slowest_ms"]), float(line["time"])
    assert 240 <= slowest <= total < 1000, record.getMessage()
    slow = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.slow"]
    assert len(slow) == 1, slow
    assert slow[0].startswith("redis client=default slow command BLPOP key=empty-list took ")
    assert "path=/watch" in slow[0] and "secret-value" not in slow[0]


def test_a_slow_pipeline_is_one_slow_warning_without_a_key(make_app: Any, all_logs: Any) -> None:
    """A pipeline is one round trip: one slow-command warning named PIPELINE, with no key
    (its commands name many), and its time in the line. (A BLPOP inside MULTI does not
    block: the transaction's name is pinned by the test above.)"""
    name = "PIPELINE"

    def view(request: Any) -> str:
        pipe = request.redis.pipeline(transaction=False)
        pipe.set("p-key", "secret-value")
        pipe.blpop(["empty-list"], timeout=0.25)
        pipe.execute()
        return "ok"

    make_app({"/pipe": view}, slow_command="150ms").get("/pipe")
    slow = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.slow"]
    assert len(slow) == 1, slow
    assert slow[0].startswith(f"redis client=default slow command {name} key=- took ")
    assert "path=/pipe" in slow[0] and "secret-value" not in slow[0]
    (record,) = stats_records(all_logs)
    assert record.redis_commands == 2  # type: ignore[attr-defined]
    assert 240 <= record.redis_time_ms < 1000  # type: ignore[attr-defined]


def test_the_records_fields_and_server_timing_say_what_the_lines_say(
    make_app: Any, all_logs: Any
) -> None:
    """A 0.15 s BLPOP after a 0.2 s wait, and a PING on a second client: each record's
    ``redis_time_ms`` / ``redis_waited_ms`` are the line's figures (milliseconds, three
    decimals), the wait warning says the same wait, and Server-Timing's ``dur`` is the
    two lines' times added up."""

    def view(request: Any) -> str:
        request.redis.blpop(["empty-list"], timeout=0.15)
        get_redis(request, "cache").ping()
        return "ok"

    app = make_app(
        {"/": view},
        clients="cache",
        max_connections="1",
        server_timing="true",
        **{"cache.max_connections": "2"},
    )  # fmt: skip  (a pool of its own)
    pool = get_redis(app.app.registry).connection_pool
    other = pool.get_connection()
    threading.Timer(0.2, pool.release, args=(other,)).start()
    header = app.get("/").headers["Server-Timing"]
    records = stats_records(all_logs)
    total = 0.0
    for record in records:
        line = LINE.match(record.getMessage())
        assert line, record.getMessage()
        for field, figure in (("redis_time_ms", "time"), ("redis_waited_ms", "waited")):
            value = getattr(record, field)
            assert type(value) is float and round(value, 3) == value, (field, value)
            # the line rounds to two decimals (1.145 may print as 1.14): half a hundredth
            assert abs(value - float(line[figure])) <= 0.0051, (field, value, line[figure])
        total += record.redis_time_ms  # type: ignore[attr-defined]
    default = records[0]
    # where the record says it comes from (%(pathname)s, %(funcName)s in a log format)
    assert (default.pathname, default.lineno, default.funcName) == (stats.__file__, 0, "report")
    assert 140 <= default.redis_time_ms < 400 and default.redis_waited_ms >= 180  # type: ignore[attr-defined]
    (waited,) = [r.getMessage() for r in all_logs.records if "request waited" in r.getMessage()]
    said = float(re.search(r"waited ([\d.]+) ms", waited)[1])  # type: ignore[index]
    # one decimal: half a tenth, and a float's last digit (200.5 - 200.45 is 0.05000000000001)
    assert abs(said - default.redis_waited_ms) <= 0.0501, (waited, default.redis_waited_ms)  # type: ignore[attr-defined]
    dur = float(re.fullmatch(r'redis;dur=([\d.]+);desc="2 commands"', header)[1])  # type: ignore[index]
    assert abs(dur - total) <= 0.01 * len(records), (header, total)


def test_wait_warnings_at_most_once_a_second_with_a_count(make_app: Any, all_logs: Any) -> None:
    """Four requests that each waited for the only connection: the first warns, the next
    two are held back, and the one after the second has passed says how many were."""
    app = make_app({"/": lambda request: request.redis.ping()}, max_connections="1")
    pool = get_redis(app.app.registry).connection_pool
    for number in range(4):
        if number == 3:
            last, count = pool.warned["waited"]
            pool.warned["waited"] = (last - 1.0, count)  # as if a second had gone by
        other = pool.get_connection()
        threading.Timer(0.05, pool.release, args=(other,)).start()
        app.get("/")
    warnings = [r.getMessage() for r in all_logs.records if "request waited" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert not warnings[0].endswith("not logged"), warnings
    assert warnings[1].endswith("; 2 more like this in the last 1 s not logged"), warnings


def test_slow_command_warnings_name_commands_and_keys_as_one_token_each(
    make_app: Any, all_logs: Any
) -> None:
    """Every command with ``slow_command = 0.000001`` (each is slow): a lower-case or two-word
    name as one upper-case token, a bytes key decoded (an invalid byte replaced), a long
    key cut at 64 characters, no key for a command without one or for AUTH; the
    threshold and the time in milliseconds."""
    long_key = "k" * 70

    def view(request: Any) -> str:
        request.redis.execute_command("get", b"bytes-\xffkey")
        request.redis.execute_command("CLIENT ID")
        request.redis.get(long_key)
        request.redis.get(long_key[:64])
        request.redis.ping()
        with contextlib.suppress(Exception):
            request.redis.execute_command("AUTH", "not-the-password-xyz")
        return "ok"

    app = make_app({"/page": view}, slow_command="0.000001")
    app.get("/page?x=1", extra_environ={"SCRIPT_NAME": "/mounted"})  # an app under a prefix
    slow = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.slow"]
    pattern = re.compile(
        r"redis client=default slow command (\S+) key=(\S+) took ([\d.]+) ms "
        r"\(slow_command 0.00 ms\) path=/mounted/page"
    )
    seen = []
    for message in slow:
        match = pattern.fullmatch(message)
        assert match, message
        seen.append((match[1], match[2]))
        assert float(match[3]) < 5000
    assert seen == [
        ("GET", "bytes-\ufffdkey"), ("CLIENT_ID", "-"), ("GET", "k" * 64 + "…"),
        ("GET", "k" * 64), ("PING", "-"), ("AUTH", "-"),
    ], seen  # fmt: skip
    assert not [m for m in slow if "not-the-password" in m]


def test_slow_command_warning_path_under_a_prefix_and_keys_as_shown(
    make_app: Any, all_logs: Any
) -> None:
    """The path as the client asked it (``SCRIPT_NAME`` + ``PATH_INFO``, an app mounted
    under a prefix); a key's bytes shown as text (undecodable bytes replaced), and a long
    key cut."""
    long_key = "k" * (KEY_SHOWN + 10)

    def view(request: Any) -> str:
        request.redis.blpop([b"\xffbin"], timeout=0.2)
        request.redis.blpop([long_key], timeout=0.2)
        return "ok"

    app = make_app({"/page": view}, slow_command="100ms")
    app.get("/page", extra_environ={"SCRIPT_NAME": "/shop"})
    slow = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.slow"]
    assert len(slow) == 2, slow
    assert slow[0].startswith("redis client=default slow command BLPOP key=\ufffdbin took ")
    assert slow[1].startswith(
        f"redis client=default slow command BLPOP key={'k' * KEY_SHOWN}… took "
    )
    assert all(line.endswith(" ms (slow_command 100.00 ms) path=/shop/page") for line in slow)


def test_command_names_are_one_upper_case_token_however_they_are_given(
    make_app: Any, all_logs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name given as bytes, in any case, or as two words (redis-py splits ``"CLIENT
    INFO"``) shows as one upper-case token, as the stats line and slow warnings grep.
    (The names' cache is emptied first: names seen earlier in the process are not
    worked out again, and a mutation run's forked test runs inherit them.)"""
    monkeypatch.setattr(usage_module, "_NAMES", {})

    def as_bytes(request: Any) -> str:
        return repr(request.redis.execute_command(b"Echo", "hi"))

    def two_words(request: Any) -> str:
        return repr(request.redis.execute_command("client info"))

    app = make_app({"/bytes": as_bytes, "/words": two_words})
    shown = {}
    for path in ("/bytes", "/words"):
        all_logs.clear()
        app.get(path)
        (line,) = [r for r in all_logs.records if r.name == "pyramid_redisx.stats"]
        shown[path] = line.redis_slowest.split(":")[0]  # type: ignore[attr-defined]
    assert shown == {"/bytes": "ECHO", "/words": "CLIENT_INFO"}


def test_slow_warnings_never_show_the_argument_of_auth_hello_or_migrate(
    make_app: Any, all_logs: Any
) -> None:
    """Their first argument is a password, a protocol version or a host, not a key:
    ``key=-`` (a threshold of one microsecond makes every command slow)."""

    def view(request: Any) -> str:
        request.redis.execute_command("HELLO", "3")
        with pytest.raises(redis.RedisError):
            request.redis.execute_command("AUTH", "not-the-password")
        request.redis.execute_command("MIGRATE", "127.0.0.1", "1", "k", "0", "10")  # NOKEY
        request.redis.get("shown-key")
        return "ok"

    make_app({"/": view}, slow_command="0.000001").get("/")
    slow = [r.getMessage() for r in all_logs.records if r.name == "pyramid_redisx.slow"]
    keys = [re.search(r"slow command (\S+) key=(\S+) ", line).groups() for line in slow]  # type: ignore[union-attr]
    assert keys == [("HELLO", "-"), ("AUTH", "-"), ("MIGRATE", "-"), ("GET", "shown-key")]
    assert "not-the-password" not in "".join(slow)
