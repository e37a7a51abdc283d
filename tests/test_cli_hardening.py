"""``pyramid-redisx check|info``: the app's validation, one-line ini errors, help text."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyramid_redisx import cli
from tests.demo_ini import demo_ini

ROOT = Path(__file__).resolve().parent.parent


def ini(tmp_path: Path, body: str) -> str:
    path = tmp_path / "app.ini"
    path.write_text("[app:main]\nuse = call:demo_app:main\n" + textwrap.dedent(body))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("redis.max_conection = 4", "did you mean 'redis.max_connections'?"),
        ("redis.cluster = true\nredis.url = redis://h/3", "Redis Cluster has only database 0"),
        ("redis.sentinels = 127.0.0.1:26379", "required with redis.sentinels"),
        ("redis.socket_timeout = 99999999999", "redis.socket_timeout = "),
        ("redis.host = cache.internal", "write redis.url = redis://cache.internal:"),
        ("redis.sessions_client = nope", "no client named 'nope'"),
        ("redis.url = redis://h/0\nredis.ssl_cert_reqs = none", "rediss://"),
    ],
)
def test_check_refuses_what_the_app_refuses(
    body: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    if "redis.url" not in body:
        body += f"\nredis.url = {redis_url}"
    code, out, err = run(capsys, "check", ini(tmp_path, body))
    assert code == 1, out + err
    assert said in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_check_warns_about_unknown_keys_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    code, _out, err = run(capsys, "check", ini(tmp_path, f"redis.url = {redis_url}\nredis.zzz = 1"))
    assert code == 0, err
    assert "unknown setting redis.zzz ignored" in err


def test_a_missing_variable_is_named_with_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ini(tmp_path, "redis.url = redis://127.0.0.1:%(redis_port)s/0\n")
    code, _out, err = run(capsys, "check", path)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line == (
        f"pyramid-redisx: {path}: [app:main] redis.url uses %(redis_port)s, which is not "
        f"set: pass it after the file name, e.g. pyramid-redisx check {path} redis_port=<port>"
    )


def test_demo_ini_needs_no_variable(
    capsys: pytest.CaptureFixture[str], redis_server: Any, tmp_path: Path
) -> None:
    """development.ini as shipped says its port in [DEFAULT] (6399, the demo's Redis):
    ``check development.ini`` works as written; here on the test server's port."""
    code, out, err = run(capsys, "check", str(demo_ini(tmp_path, redis_server.port)))
    assert code == 0, out + err
    assert out.count(" ok ") == 2 and f"127.0.0.1:{redis_server.port}/1" in out


def test_a_variable_the_file_sets_in_default_is_refused(
    capsys: pytest.CaptureFixture[str], redis_server: Any, tmp_path: Path
) -> None:
    """pserve keeps [DEFAULT]'s value over ``redis_port=...`` (PasteDeploy): checking the
    argument's port would check an app pserve does not run."""
    path = str(demo_ini(tmp_path, redis_server.port))
    code, out, err = run(capsys, "check", path, "redis_port=6379")
    assert (code, out) == (2, "")
    (line,) = err.strip().splitlines()
    assert line == (
        f"pyramid-redisx: {path}: redis_port is set in [DEFAULT], and pserve keeps that "
        "value over redis_port=... after the file name (PasteDeploy): change it in the file"
    )


def test_stray_percent_names_file_and_key_not_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ini(tmp_path, "redis.password = Ab%cd-Secret\n")
    code, _out, err = run(capsys, "check", path)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert path in line and "redis.password" in line and "%%" in line
    assert "Secret" not in err and "cd-" not in err


def test_help_is_plain_text_with_optional_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text
    assert "[name=value ...]" in text.splitlines()[0] + text.splitlines()[1]


def test_info_shows_the_level_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    code, out, _err = run(capsys, "info", ini(tmp_path, f"redis.url = {redis_url}"))
    assert code == 0
    assert "stats_level = debug\n" in out
