"""The README's quick start, as a newcomer runs it: from an empty directory.

The sequence is read from README.md, from the fenced blocks after a
``<!-- quickstart: ... -->`` comment: ``run`` blocks are typed into one shell session
(their ``cd`` carries over), ``file`` blocks are saved under the name in their first
line, the ``serve`` block is started and left running, and each line of the ``try``
block is run from another shell, its output compared with the comment on that line.
The ``text`` blocks the README shows after ``serve`` and ``try`` must match the server's
console.

Three things differ from a newcomer's machine, and only these: the package is installed
from a wheel of this checkout (built once per session) instead of PyPI; Redis is a
throwaway server on a free port instead of ``localhost:6379``; the web server listens on a
free port instead of 6543 (a demo may hold it). Everything else, ``pip install`` of the
dependencies from the package index included (pip's cache keeps it fast), runs as written.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pyramid_redisx.testing import free_port
from tests.demo_ini import ROOT

pytestmark = [pytest.mark.packaging, pytest.mark.slow, pytest.mark.timeout(600)]

README = (ROOT / "README.md").read_text()
STEP = re.compile(r"<!-- quickstart: (\w+) -->\n```\w*\n(.*?)```", re.S)
SHOWN = re.compile(r"```text\n(.*?)```", re.S)


def steps() -> list[tuple[str, str]]:
    return STEP.findall(README)


def test_the_readme_marks_a_complete_sequence() -> None:
    found = steps()
    kinds = [kind for kind, _ in found]
    assert kinds[0] == "run" and kinds.count("serve") == 1 and kinds[-1] == "try", kinds
    files = [body.splitlines()[0] for kind, body in found if kind == "file"]
    assert files == ["# myapp/__init__.py", "# myapp/views.py", "# development.ini"], files
    ini = next(body for kind, body in found if body.startswith("# development.ini"))
    for section in ("[app:main]", "[server:main]", "[loggers]", "[logger_pyramid_redisx]"):
        assert section in ini, section


def shown_after(kind: str) -> list[str]:
    """The lines of the first ``text`` block after the ``kind`` step."""
    start = README.index(f"<!-- quickstart: {kind} -->")
    found = SHOWN.search(README, start)
    assert found, kind
    return found.group(1).strip().splitlines()


def as_pattern(line: str) -> re.Pattern[str]:
    """A shown console line as a pattern: its figures (times, ports) may differ."""
    parts = re.split(r"(\d+(?:\.\d+)?)", line)
    return re.compile("".join(r"[\d.]+" if i % 2 else re.escape(p) for i, p in enumerate(parts)))


def test_the_quick_start_from_an_empty_directory(
    tmp_path: Path, built_wheel: Path, redis_server_factory: Any
) -> None:
    redis_port, web_port = redis_server_factory().port, free_port()
    replace = {
        '"pyramid_redisx[hiredis]"': f'"pyramid_redisx[hiredis] @ {built_wheel.as_uri()}"',
        "localhost:6379": f"localhost:{redis_port}",
        "6543": str(web_port),
    }

    def ours(text: str) -> str:
        for old, new in replace.items():
            text = text.replace(old, new)
        return text

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(  # the machine's python3, not this test's venv
        part for part in env["PATH"].split(os.pathsep) if not part.startswith(str(ROOT))
    )
    here = tmp_path / "empty"
    here.mkdir()
    server = None
    try:
        for kind, body in steps():
            if kind == "run":  # one terminal: its cd carries over to the next step
                result = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", ours(body) + "\npwd"],
                    cwd=here, env=env, capture_output=True, text=True, timeout=400,
                )  # fmt: skip
                assert result.returncode == 0, f"{body}\n{result.stdout}\n{result.stderr}"
                here = Path(result.stdout.strip().splitlines()[-1])
            elif kind == "file":
                name = body.splitlines()[0].removeprefix("# ").strip()
                (here / name).write_text(ours(body))
            elif kind == "serve":
                log = (tmp_path / "server.log").open("w")
                server = subprocess.Popen(
                    ["bash", "-c", ours(body).strip()],
                    cwd=here, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
                _wait_for(web_port, server, tmp_path / "server.log")
            elif kind == "try":
                for line in ours(body).strip().splitlines():
                    command, _, expected = line.partition("#")
                    result = subprocess.run(
                        ["bash", "-c", command], cwd=here, env=env,
                        capture_output=True, text=True, timeout=30,
                    )  # fmt: skip
                    assert result.stdout.strip() == expected.strip(), (line, result.stderr)
    finally:
        if server is not None:
            with contextlib.suppress(ProcessLookupError):  # the session this test started
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    console = (tmp_path / "server.log").read_text()
    for line in (*shown_after("serve"), *shown_after("try")):
        assert as_pattern(line).search(console), f"not on the console: {line}\n{console}"
    assert f"reachable at redis://localhost:{redis_port}/0" in console, console
    assert console.count("[pyramid_redisx.stats] redis client=default commands=1 ") == 2, console


def _wait_for(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    """Until the server accepts connections (no request: the visits must start at 1)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert server.poll() is None, f"pserve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"pserve never listened:\n{log.read_text()}"
            time.sleep(0.2)
