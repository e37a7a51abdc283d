"""What ``pyramid-redisx check`` and ``info`` print, line for line, run in this process
(the subprocess tests in test_health_cli.py show the same through the console script)."""

from __future__ import annotations

import io
import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyramid_redisx import cli
from pyramid_redisx.settings import DEFAULT_CLIENT_CACHE_COMMANDS


def write_ini(tmp_path: Path, body: str) -> str:
    path = tmp_path / "app.ini"
    path.write_text("[app:main]\nuse = call:demo_app:main\n" + textwrap.dedent(body))
    return str(path)


def test_check_prints_a_line_per_client_and_fails_when_one_is_down(
    tmp_path: Path, redis_server: Any, redis_server_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = redis_server_factory()
    dead.stop()
    down = f"redis://127.0.0.1:{dead.port}"
    path = write_ini(tmp_path, f"""
        redis.url = redis://127.0.0.1:{redis_server.port}/0
        redis.clients = down off soft
        redis.blocking = false
        redis.down.url = {down}/2
        redis.off.url = {down}/3
        redis.off.breaker_failures = 0
        redis.soft.url = {down}/4
        redis.soft.fail_soft = true
        redis.zzz = 1
        """)  # fmt: skip
    handlers = list(logging.getLogger("pyramid_redisx").handlers)
    out = io.StringIO()
    assert cli.main(["check", path], out) == 1  # one down is enough
    captured = capsys.readouterr()
    assert captured.out == ""  # all on the stream given
    assert captured.err == (
        "pyramid-redisx: warning: unknown setting redis.zzz ignored (not a pyramid_redisx key)\n"
    )
    assert logging.getLogger("pyramid_redisx").handlers == handlers  # its stderr handler went
    refused = (
        f"connection refused: Error 111 connecting to 127.0.0.1:{dead.port}. Connection refused."
    )
    expected = [
        rf"default  ok    redis://127\.0\.0\.1:{redis_server.port}/0  role=master "
        r"version=redis/\d+\.\d+\.\d+ latency_ms=\d+\.\d\d  max_connections=32 blocking=false "
        r"pool_timeout=5s socket_timeout=2s socket_connect_timeout=2s retries=3 "
        r"breaker_failures=5 breaker_cooldown=1s",
        re.escape(f"down     DOWN  {down}/2  {refused}  breaker_failures=5 breaker_cooldown=1s"),
        re.escape(f"off      DOWN  {down}/3  {refused}  circuit=off"),
        re.escape(f"soft     DOWN  {down}/4  {refused}  breaker_failures=5 breaker_cooldown=1s "
                  "fail_soft=true"),
    ]  # fmt: skip
    lines = out.getvalue().splitlines()
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_check_passes_when_all_answer_and_prints_to_stdout_by_default(
    tmp_path: Path, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_ini(tmp_path, f"redis.url = redis://127.0.0.1:{redis_server.port}/0\n")
    assert cli.main(["check", path]) == 0
    assert capsys.readouterr().out.startswith(
        f"default  ok    redis://127.0.0.1:{redis_server.port}/0  "
    )


def test_info_prints_each_client_as_the_ini_would_write_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A section per client, ``key = value`` lines, a blank line after each; unset
    values, booleans, lists and host:port pairs written as in the ini; no connection."""
    path = write_ini(tmp_path, """
        redis.url = redis://:s3cr3t-pw@localhost/1
        redis.sentinels = 127.0.0.1:26379, [::1]:26380
        redis.sentinel_service = mymaster
        redis.clients = cache
        redis.cache.url = redis://127.0.0.1:1/2
        redis.cache.client_cache = true
        redis.cache.client_cache_commands = GET HGET
        """)  # fmt: skip
    out = io.StringIO()
    assert cli.main(["info", path], out) == 0
    assert capsys.readouterr().out == ""  # all on the stream given
    text = out.getvalue()
    assert "s3cr3t" not in text
    sections = text.split("\n\n")
    assert sections[-1] == ""  # each section ends with a blank line
    default, cache = (section.splitlines() for section in sections[:-1])
    assert (default[0], cache[0]) == ("[default]", "[cache]")
    shown = {name: dict(line.split(" = ", 1) for line in lines[1:])
             for name, lines in (("default", default), ("cache", cache))}  # fmt: skip
    assert shown["default"]["sentinels"] == "127.0.0.1:26379 [::1]:26380"
    assert shown["default"]["password"] == "***" and shown["default"]["username"] == "(unset)"
    assert shown["default"]["kind"] == "sentinel" and shown["default"]["blocking"] == "true"
    assert shown["cache"]["client_cache_commands"] == "GET HGET"
    assert shown["default"]["client_cache_commands"] == " ".join(DEFAULT_CLIENT_CACHE_COMMANDS)
    assert (shown["cache"]["client_cache"], shown["cache"]["db"]) == ("true", "2")


def test_a_missing_variable_names_the_command_and_an_example_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_ini(tmp_path, "redis.url = redis://%(redis_host)s:6379/0\n")
    assert cli.main(["info", path]) == 2
    assert capsys.readouterr().err == (
        f"pyramid-redisx: {path}: [app:main] redis.url uses %(redis_host)s, which is not set: "
        f"pass it after the file name, e.g. pyramid-redisx info {path} redis_host=<value>\n"
    )


def test_a_default_section_with_a_repeated_key_still_shields_its_variables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[DEFAULT] read leniently (a key written twice, as PasteDeploy allows): a variable
    it sets is still refused after the file name."""
    path = tmp_path / "app.ini"
    path.write_text("[DEFAULT]\nredis_port = 6379\nredis_port = 6380\n\n[app:main]\n"
                    "use = call:demo_app:main\nredis.url = redis://h:%(redis_port)s/0\n")  # fmt: skip
    assert cli.main(["check", str(path), "redis_port=1"]) == 2
    assert "redis_port is set in [DEFAULT]" in capsys.readouterr().err


def test_help_names_the_program_the_commands_and_each_argument(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal
    assert text.startswith("usage: pyramid-redisx [-h] {check,info} config_uri [name=value ...] ")
    for said in (cli.DESCRIPTION, "config_uri ini file, optionally file.ini#section",
                 "name=value ini interpolation variables, as for pserve (e.g. redis_port=6379); "
                 "not one the file's [DEFAULT] sets (pserve would ignore it)"):  # fmt: skip
        assert said in text, said
    with pytest.raises(SystemExit) as wrong:
        cli.main(["chek", "app.ini"])
    assert wrong.value.code == 2
    assert "argument command: invalid choice: 'chek' (choose from 'check', 'info')" in (
        capsys.readouterr().err
    )


def test_variables_after_the_file_name_are_passed_as_pserve_passes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_ini(tmp_path, "redis.url = redis://h:%(redis_port)s/0\n"
                               "redis.client_name = %(app_name)s\n")  # fmt: skip
    assert cli.main(["info", path, "redis_port=6390", "app_name=shop=1"]) == 0
    text = capsys.readouterr().out
    assert "port = 6390\n" in text and "client_name = shop=1\n" in text  # split at the first =
    for bad, number in (("redis_port", 1), ("=6390", 2)):
        args = ["info", path, "redis_port=6390", bad] if number == 2 else ["info", path, bad]
        assert cli.main(args) == 2
        assert capsys.readouterr().err == (
            f"pyramid-redisx: variable {number} after the file name is not name=value\n"
        )


def test_a_section_named_after_the_file_still_shields_default_variables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "app.ini"
    path.write_text("[DEFAULT]\nredis_port = 6379\n\n[app:shop]\nuse = call:demo_app:main\n"
                    "redis.url = redis://h:%(redis_port)s/0\n")  # fmt: skip
    assert cli.main(["check", f"{path}#shop", "redis_port=1"]) == 2
    assert capsys.readouterr().err.startswith(
        f"pyramid-redisx: {path}: redis_port is set in [DEFAULT]"
    )


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("just words\nredis.url = redis://h/0\nmore words\n",
         "{path}: line 3, 5 is not 'key = value'"),
        ("[app:main]\nredis.url = redis://h/0\n",
         "{path}: DuplicateSectionError (line 3)"),
        ("redis.password = 50%off\n",
         "{path}: [app:main] redis.password holds a % that is not %(name)s: write %% for a "
         "literal % (a percent-encoded password: %%23 for %23)"),
    ],
)  # fmt: skip
def test_an_ini_that_cannot_be_read_is_one_line_naming_file_and_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, said: str
) -> None:
    path = write_ini(tmp_path, body)
    assert cli.main(["check", path]) == 2
    assert capsys.readouterr().err == f"pyramid-redisx: {said.format(path=path)}\n"


def test_check_of_a_sentinel_client_lists_the_master_up_then_down(
    tmp_path: Path, redis_server_factory: Any, sentinel_for: Any
) -> None:
    master = redis_server_factory()
    port = sentinel_for(master.port)
    path = write_ini(tmp_path, f"""
        redis.url = redis://nowhere.invalid:1/0
        redis.sentinels = 127.0.0.1:{port}
        redis.sentinel_service = mymaster
        redis.startup_check_timeout = 0.5
        """)  # fmt: skip
    head = rf"default  (ok  |DOWN)  Sentinel service 'mymaster' \(master\) via 127\.0\.0\.1:{port}"
    outputs = []
    for expected in (0, 1):
        out = io.StringIO()
        assert cli.main(["check", path], out) == expected
        outputs.append(out.getvalue().splitlines())
        master.stop()
    up, down = outputs
    assert len(up) == 2 and re.match(head + "  max_connections=32 ", up[0]), up
    assert re.fullmatch(rf"           ok    127\.0\.0\.1:{master.port}  role=master "
                        r"latency_ms=\d+\.\d\d", up[1]), up  # fmt: skip
    refused = (
        f"connection refused: Error 111 connecting to 127.0.0.1:{master.port}. Connection refused."
    )
    assert len(down) == 2 and re.match(
        head.replace("(ok  |DOWN)", "DOWN") + "  " + re.escape(refused), down[0]
    ), down
    # a node that is down has no role and no latency to show: only why
    assert down[1] == f"           DOWN  127.0.0.1:{master.port}  {refused}"


def test_the_apps_other_includes_are_not_run(
    tmp_path: Path, redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pyramid.includes`` (the app's own add-ons, here one that is not installed on the
    machine that runs the check) are not the add-on's business: left out."""
    path = write_ini(tmp_path, f"redis.url = redis://127.0.0.1:{redis_server.port}/0\n"
                               "pyramid.includes = not_installed_anywhere\n")  # fmt: skip
    assert cli.main(["check", path]) == 0
    assert capsys.readouterr().err == ""
