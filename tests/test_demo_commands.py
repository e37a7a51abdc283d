"""The commands the docs show for the demo's ``development.ini``, run as written.

``pshell``, ``pyramid-redisx check`` and ``pserve`` on ``development.ini`` take no
arguments: the ini names its Redis port (``[DEFAULT] redis_port = 6399``). Each ``$``
line of docs/demo.rst and docs/guide/usage.rst that names the file is run as it is, in a
folder holding development.ini with only that port changed to a throwaway server's
(tests/demo_ini.py), and the ``>>>`` lines of a pshell session are fed to it: the outputs
the page shows must come back.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from pyramid_redisx.testing import free_port
from tests.demo_ini import ROOT, SHIPPED, demo_ini

PAGES = [ROOT / "docs" / "demo.rst", ROOT / "docs" / "guide" / "usage.rst"]
BIN = Path(sys.executable).parent
COMMANDS = {
    ".venv/bin/pshell development.ini",
    ".venv/bin/pyramid-redisx check development.ini",
    ".venv/bin/pserve development.ini",
}


def shown() -> list[tuple[str, str, list[str]]]:
    """(page, command, the lines shown under it until the next command or block end)."""
    found: list[tuple[str, str, list[str]]] = []
    for page in PAGES:
        current: list[str] | None = None
        for line in page.read_text().splitlines():
            text = line.strip()
            if text.startswith("$ "):
                current = None
                if "development.ini" in text:
                    current = []
                    found.append((page.name, text[2:], current))
            elif current is not None:
                if not line.startswith("   ") and text:  # the block ended
                    current = None
                elif text:
                    current.append(text)
    return found


def test_the_docs_show_the_commands_without_arguments() -> None:
    commands = shown()
    assert {command for _, command, _ in commands} == COMMANDS, commands
    header = [line[1:].strip() for line in SHIPPED.read_text().splitlines()[:20]]
    assert set(header) >= COMMANDS, header  # development.ini says the same


def run(command: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    tool, *args = command.split()
    return subprocess.run(
        [str(BIN / Path(tool).name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


@pytest.fixture
def folder(tmp_path: Path, redis_server: Any, redis_url: str) -> Path:  # flushed
    demo_ini(tmp_path, redis_server.port, web_port=free_port())
    return tmp_path


@pytest.mark.parametrize(
    ("page", "command", "lines"),
    [entry for entry in shown() if "pshell" in entry[1]],
    ids=lambda value: value if isinstance(value, str) and value.endswith(".rst") else "",
)
def test_pshell_as_shown(
    page: str, command: str, lines: list[str], folder: Path, redis_url: str
) -> None:
    seed = redis.Redis.from_url(redis_url)
    seed.mset({"visits": 2, "demo:visits": 3})  # what the pages' outputs assume
    seed.close()
    typed = [line[4:] for line in lines if line.startswith(">>> ")]
    expected = [line for line in lines if not line.startswith(">>>")]
    assert typed and expected, lines
    result = run(command, folder, input="\n".join(typed) + "\n")
    assert result.returncode == 0, result.stderr
    # each reply follows the prompts of the lines before it (>>> >>> True)
    replies = [re.sub(r"^(>>> ?)+", "", line).strip() for line in result.stdout.splitlines()]
    replies = [reply for reply in replies if reply]
    assert replies == expected, (result.stdout, result.stderr)


def test_check_as_shown(folder: Path, redis_server: Any) -> None:
    (_, command, lines), *_ = [entry for entry in shown() if "check" in entry[1]]
    result = run(command, folder)
    assert result.returncode == 0, result.stdout + result.stderr
    got = result.stdout.splitlines()
    assert len(got) == len(lines), got
    for line, shown_line in zip(got, lines, strict=True):
        prefix = shown_line.removesuffix("...").rstrip().replace("6399", str(redis_server.port))
        assert line.startswith(prefix), (line, shown_line)


def test_pserve_as_shown(folder: Path) -> None:
    (command,) = {command for _, command, _ in shown() if "pserve" in command}
    listen = re.search(r"listen = 127\.0\.0\.1:(\d+)", (folder / "development.ini").read_text())
    assert listen
    tool, *args = command.split()
    server = subprocess.Popen(
        [str(BIN / Path(tool).name), *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{listen.group(1)}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "pserve never answered"
                time.sleep(0.2)
        assert 'id="visit-count">1<' in page
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert "redis client=default reachable at" in output, output
