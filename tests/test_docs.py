"""The documentation: README's first screen, the Sphinx docs, the settings reference
generated from the settings table, and a troubleshooting page that lists every message
the package emits."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import pytest

from pyramid_redisx.settings import APP_SETTINGS, CLIENT_SETTINGS
from tests.emitted_messages import emitted_messages, missing_from, normalise

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ALL = [setting.name for setting in (*CLIENT_SETTINGS, *APP_SETTINGS)]
TROUBLESHOOTING = DOCS / "reference" / "troubleshooting.rst"


def readme() -> str:
    return (ROOT / "README.md").read_text()


def first_screen() -> str:
    """What a reader sees before scrolling: up to the tour."""
    text = readme()
    return text[: text.index("## A short tour")]


def test_readme_first_screen_says_what_and_how() -> None:
    screen = first_screen()
    intro = screen.split("\n\n")[1]  # the paragraph under the title
    assert "Pyramid" in intro and "request.redis" in intro, intro
    assert 'pip install "pyramid_redisx[hiredis]"' in screen
    assert 'config.include("pyramid_redisx")' in screen
    assert "redis.url = " in screen
    assert "request.redis.incr(" in screen
    commands = [line.strip() for line in screen.splitlines()]
    assert any(line.startswith("make demo") for line in commands)
    assert any(line.startswith("make test") for line in commands)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_tour_links_exist() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", readme())
    assert len(links) >= 6, links
    for link in links:
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"


def test_index_takes_every_top_level_page_by_glob() -> None:
    """Pages others add (docs/retries.rst, topologies.rst…) need no edit of the index."""
    index = (DOCS / "index.rst").read_text()
    assert re.search(r":glob:\n(?:\s+:[^\n]+\n)*\n\s+\*\n", index), index


@pytest.mark.parametrize("name", ALL)
def test_setting_in_development_ini(name: str) -> None:
    lines = (ROOT / "development.ini").read_text().splitlines()
    assert any(line.lstrip("# ").startswith(f"redis.{name} =") for line in lines)


def test_settings_page_uses_the_generated_tables() -> None:
    page = (DOCS / "guide" / "settings.rst").read_text()
    assert ".. redisx-settings::\n   :scope: client" in page
    assert ".. redisx-settings::\n   :scope: app" in page
    for name in ALL:  # no hand-written second list to keep in sync
        assert f"| ``redis.{name}``" not in page


# ------------------------------------------------------------ the built docs (conftest.built_docs)
def _text(page: str) -> str:
    """The words of an HTML page, tags dropped and entities decoded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


@pytest.mark.docs
def test_settings_reference_shows_every_setting_with_default_and_accepted(
    built_docs: Path,
) -> None:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from redisx_settings import rows
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    page = _text((built_docs / "guide" / "settings.html").read_text())
    expected = list(rows())
    assert [key for key, *_ in expected] == [f"redis.{name}" for name in ALL]
    for key, meaning, default, accepted in expected:
        # one row: key, meaning, default, accepted values, in that order
        row = " ".join(part for part in (key, meaning, default, accepted) if part)
        assert normalise(row) in normalise(page), f"row for {key} not shown as {row!r}"
    assert "a duration: seconds (0.2) or a span" in page  # a converter's own hint


@pytest.mark.docs
def test_feature_and_reference_pages_are_built(built_docs: Path) -> None:
    for page in DOCS.glob("*.rst"):
        assert (built_docs / f"{page.stem}.html").is_file(), page
    index = (built_docs / "index.html").read_text()
    for page in [*DOCS.glob("*.rst"), *DOCS.glob("*/*.rst")]:
        if page.stem != "index":
            name = page.relative_to(DOCS).with_suffix(".html").as_posix()
            assert f'href="{name}"' in index, f"{name} is not in the index's table of contents"
    changelog = _text((built_docs / "reference" / "changelog.html").read_text())
    assert "Unreleased" in changelog


# ------------------------------------------------------------ troubleshooting
def test_every_emitted_message_is_on_the_troubleshooting_page() -> None:
    messages = emitted_messages()
    assert len(messages) > 30, messages  # the extraction found the package's messages
    missing = missing_from(TROUBLESHOOTING.read_text(), messages)
    assert not missing, (
        f"{len(missing)} message(s) the package emits are not on "
        f"{TROUBLESHOOTING.relative_to(ROOT)} (fragments between placeholders, each must "
        "appear; add the message with its cause and fix):\n"
        + "\n".join(f"  {message}" for message in missing)
    )


def test_the_message_check_can_fail() -> None:
    """Drop a message from the page: the check names exactly that one."""
    page = TROUBLESHOOTING.read_text()
    line = "``redis client=<name> slow command <COMMAND> key=<key> took <ms> ms"
    assert line in page
    messages = emitted_messages()
    already = set(missing_from(page, messages))  # reported by the test above, if any
    missing = [
        m
        for m in missing_from(page.replace(line, "``redis client=<name> slow"), messages)
        if m not in already
    ]
    # usage.py: where the slow-command WARNING is written, as the time is measured
    assert [m.where.split(":")[0] for m in missing] == ["usage.py"], missing
    assert "slow command" in str(missing[0])


def test_every_ini_line_in_the_docs_uses_a_real_setting() -> None:
    """``redis.<key> = …`` lines in README, docs and development.ini name keys that exist.

    A deliberately wrong example says so on its line (``# error`` or ``# wrong``).
    """
    client_keys = {s.name for s in CLIENT_SETTINGS}
    app_keys = {s.name for s in APP_SETTINGS}
    foreign = ("sessions", "http_cache")  # redis.sessions.* and redis.http_cache.*: not ours
    pages = [ROOT / "README.md", ROOT / "development.ini", *DOCS.rglob("*.rst")]
    checked = 0
    for page in pages:
        if "_build" in page.parts:
            continue
        for line in page.read_text().splitlines():
            found = re.match(r"\s*(?:#\s*)?redis\.([\w.]+)\s*=", line)
            if not found or re.search(r"#\s*(error|wrong)", line, re.I):
                continue
            checked += 1
            parts = found.group(1).split(".")
            if len(parts) == 1:
                assert parts[0] in client_keys | app_keys, f"{page.name}: {line.strip()}"
            elif parts[0] not in foreign:
                assert len(parts) == 2 and parts[1] in client_keys, f"{page.name}: {line.strip()}"
    assert checked > 50
