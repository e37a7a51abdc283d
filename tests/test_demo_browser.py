"""The demo, as a person sees it: `python -m demo_app.run` driven in headless Chromium.

Starts the real runner (its own Redis server, waitress) with development.ini on free
ports (tests/demo_ini.py), clicks through the pages and the debug toolbar's Redis panel,
asserts on what is shown (every page in the site's layout, the toolbar's tabs in one
row), then kills the demo's Redis and checks that every page answers the demo's 503 page,
a session write included, and what the runner's console says. Screenshots go to
artifacts/screenshots/demo/ (git-ignored). Browser helpers: tests/browser.py. Runs in the
Pyramid 2 environment only (marker ``browser``): the demo and the browser do not depend
on Pyramid's version.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from demo_app import SERVER_INFO_TTL
from pyramid_redisx.testing import free_port
from tests.browser import WAIT, chromium, screenshot_folder, shot
from tests.demo_ini import demo_ini

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Demo:
    url: str
    process: subprocess.Popen[bytes]
    output: Path
    redis_pid: int

    def console(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_console(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = re.search(pattern, self.console())
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"the runner never printed {pattern!r}:\n{self.console()}")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """The demo runner with development.ini, on a free web port and a free Redis port."""
    web_port = free_port()
    ini = demo_ini(tmp_path, redis_port=free_port(), web_port=web_port)
    output = tmp_path / "runner.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(output, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "demo_app.run", str(ini)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    redis_pid = 0
    try:
        url = f"http://127.0.0.1:{web_port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if _status(url + "/api/stats") == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the demo did not start:\n{output.read_text()}")
            time.sleep(0.2)
        found = re.search(r"demo: Redis server .*, pid (\d+), on 127\.0\.0\.1:", output.read_text())
        assert found, output.read_text()
        redis_pid = int(found.group(1))
        yield Demo(url, process, output, redis_pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # the runner stops waitress, then its Redis
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if redis_pid and _alive(redis_pid):  # the runner died without cleaning up
            os.kill(redis_pid, signal.SIGKILL)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path) as driver:
        yield driver


def _wait(driver: Any, condition: Any, what: str) -> Any:
    """Poll ``condition`` until it holds. While a page is being replaced, chromedriver may
    answer a lookup on the old one with "unknown error: unhandled inspector error: Node with
    given id does not belong to the document" (a plain WebDriverException, not a stale
    element: it failed CI once in ``staleness_of``); such answers mean "not yet"."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, ignored_exceptions=(WebDriverException,)).until(
        condition, message=what
    )


def test_demo_in_a_browser(demo: Demo, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of

    folder = screenshot_folder("demo")

    def _shot(driver: Any, name: str) -> None:
        shot(driver, folder, name)

    def text(css: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)

    def follow(element: Any) -> None:
        """Click, then wait until the browser has left the page (click does not wait for
        a form's POST and redirect: the next lookup could hit the old page)."""
        element.click()
        _wait(browser, staleness_of(element), "the click did not leave the page")
        _wait(
            browser,
            lambda d: d.execute_script("return document.readyState") == "complete",
            "the next page never finished loading",
        )

    def submit(field: str, value: str) -> None:
        browser.find_element(By.NAME, field).send_keys(value)
        follow(browser.find_element(By.TAG_NAME, "button"))

    # Home: the counter, the server line, the pools, this page's Server-Timing figure.
    browser.get(demo.url + "/")
    assert browser.title == "Home · pyramid_redisx demo"
    first = int(text("#visit-count"))
    timing = _wait(
        browser,
        lambda d: re.fullmatch(r"(\d+\.\d\d) ms, (\d+) commands?", text("#server-timing")),
        "the page never showed its Server-Timing figure",
    )
    assert float(timing.group(1)) > 0 and int(timing.group(2)) >= 2  # INCRBY, GET at least
    assert re.search(r"(redis|valkey) \d+\.\d+\.\d+, standalone, pid \d+", text("#server-line"))
    pools = text("#pools table")
    assert "default redis://127.0.0.1:" in pools and "cache redis://127.0.0.1:" in pools
    links = {a.text: a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a")}
    assert links["/health/redis"].endswith("/health/redis")
    _shot(browser, "01-home")

    browser.refresh()
    assert int(text("#visit-count")) == first + 1
    # The server line is cached for SERVER_INFO_TTL s: a page loaded right after one that
    # read it fresh gets it from the cache (tried a few times: a loaded machine is slow).
    deadline = time.monotonic() + 3 * SERVER_INFO_TTL
    while True:
        assert time.monotonic() < deadline, "never saw the server line fresh, then cached"
        browser.refresh()
        if "fresh from INFO" not in text("#server"):
            time.sleep(0.5)
            continue
        fresh_at = time.monotonic()
        browser.refresh()
        if time.monotonic() - fresh_at < SERVER_INFO_TTL - 1:
            assert "from the cache client" in text("#server"), text("#server")
            break

    # The cached report: computed once, then read from the cache.
    follow(browser.find_element(By.LINK_TEXT, "Cached report"))
    assert browser.title == "Cached report · pyramid_redisx demo"
    report = browser.find_element(By.ID, "report")
    assert report.get_attribute("data-cache") == "miss", text("#report-source")
    assert float(text("#report-took").split()[0]) >= 300  # the slow part
    _shot(browser, "02-report-computed")
    browser.refresh()
    assert browser.find_element(By.ID, "report").get_attribute("data-cache") == "hit"
    assert text("#report-source").startswith("read from the cache in one pipeline")
    assert float(text("#report-took").split()[0]) < 300
    _shot(browser, "03-report-cached")

    # One click from the home page into the toolbar's Redis panel, for that very request.
    follow(browser.find_element(By.LINK_TEXT, "Home"))
    visits = text("#visit-count")
    follow(browser.find_element(By.ID, "open-redis-panel"))
    panel = _wait(
        browser,
        lambda d: next(
            (e for e in d.find_elements(By.ID, "pDebugPanel-redis-content") if e.is_displayed()),
            None,
        ),
        "the toolbar did not open on the Redis panel",
    )
    assert "/_debug_toolbar/" in browser.current_url
    shown = panel.text
    assert "INCRBY demo:visits" in shown, shown
    assert "GET demo:server-info" in shown, shown
    assert re.search(r"default \d+ [\d.]+ \d+ \d+ 32 ", shown), shown  # the pools table
    assert visits  # the panel is for the page just seen
    # The toolbar's tabs stay on one row, the Redis tab whole (it wrapped onto a second row).
    tabs = browser.execute_script(
        "const row = document.getElementById('pDebugPanel-redis').parentNode"
        ".getBoundingClientRect();"
        "return [...document.querySelectorAll('.pDebugPanels .nav-tabs > li')]"
        ".filter(li => li.offsetParent !== null).map(li => {"  # the shown tab row only
        "  const box = li.getBoundingClientRect();"
        "  return [li.id, box.top, box.left >= row.left - 1 && box.right <= row.right + 1]; });"
    )
    assert len(tabs) >= 9 and "pDebugPanel-redis" in [tab[0] for tab in tabs], tabs
    assert len({top for _, top, _ in tabs}) == 1, tabs  # one row
    assert all(inside for _, _, inside in tabs), tabs  # none cut off at the right
    _shot(browser, "04-toolbar-redis-panel")

    # The health view, as a probe would see it.
    browser.get(demo.url + "/health/redis")
    assert '"status": "ok"' in browser.find_element(By.TAG_NAME, "body").text
    _shot(browser, "05-health-ok")

    # The integrations' pages (demo_app.integrations), linked from the home page.
    browser.get(demo.url + "/")
    listed = {a.text: a for a in browser.find_elements(By.CSS_SELECTOR, "#integrations a")}
    assert set(listed) == {"Integrations", "Sessions", "HTTP cache", "Message queue"}, listed
    assert "CLIENT LIST" in text("#pools table")
    follow(listed["Sessions"])
    submit("name", "Ada")
    assert text(".greeting") == "Hello, Ada!"
    _shot(browser, "06-integrations-sessions")
    browser.get(demo.url + "/integrations/http-cache")
    assert text(".state") == "miss"
    browser.refresh()
    assert text(".state") == "hit" and text(".body") == "origin response number 1"
    _shot(browser, "07-integrations-http-cache")
    browser.get(demo.url + "/integrations/queue")
    for message in ("first", "second"):
        submit("message", message)
    assert text(".length") == "2"
    _shot(browser, "08-integrations-queue")
    follow(browser.find_element(By.LINK_TEXT, "drain them"))
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, ".drained li")] == [
        "first",
        "second",
    ]
    browser.get(demo.url + "/integrations")
    counts = text("table")
    assert re.search(r"default \d+ \d+", counts) and re.search(r"cache \d+ \d+", counts), counts
    _shot(browser, "09-integrations-client-list")

    # One site: the integration pages have the home page's header and navigation.
    browser.get(demo.url + "/")
    home_nav = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert "Integrations" in home_nav, home_nav
    for path in ("/integrations", "/integrations/name", "/integrations/http-cache",
                 "/integrations/queue"):  # fmt: skip
        browser.get(demo.url + path)
        assert browser.title.endswith(" · pyramid_redisx demo"), path
        assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "header nav a")] == (
            home_nav
        ), path
        here = browser.find_element(By.CSS_SELECTOR, "header nav a.here")
        assert here.text == "Integrations", path
    assert _status(demo.url + "/favicon.ico") == 200

    # Two forms loaded while Redis is up, submitted once it is gone: a fresh session (no
    # cookie: pyramid_session_redis writes it in a response callback, after the view) and
    # the queue.
    browser.delete_all_cookies()
    browser.get(demo.url + "/integrations/name")
    forms = {"name": browser.current_window_handle}
    browser.switch_to.new_window("tab")
    browser.get(demo.url + "/integrations/queue")
    forms["message"] = browser.current_window_handle

    # Kill the demo's own Redis: the runner says so, pages answer 503 and say what to do.
    os.kill(demo.redis_pid, signal.SIGKILL)
    said = demo.wait_for_console(r"demo: the Redis server \(pid (\d+), port \d+\) ([^.]+)\.")
    assert said.group(1) == str(demo.redis_pid)
    assert said.group(2) == "was killed by signal SIGKILL"

    def is_the_503_page(what: str) -> None:
        assert browser.title == "Redis is not reachable · pyramid_redisx demo", what
        assert "Connection refused" in text("#redis-error"), what
        assert "make demo" in text("#redis-down"), what
        assert "Internal Server Error" not in browser.page_source, what
        assert "Traceback" not in browser.page_source, what
        assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "header nav a")] == (
            home_nav
        ), what

    for field, handle in forms.items():
        browser.switch_to.window(handle)
        submit(field, "Grace")
        is_the_503_page(f"the {field} form")
    _shot(browser, "10-redis-down-queue-form")
    browser.switch_to.window(forms["name"])
    _shot(browser, "11-redis-down-session-write")

    # Every page that needs Redis answers the 503 page; the others still work.
    for path in ("/", "/report", "/api/stats", "/integrations", "/integrations/http-cache",
                 "/integrations/queue", "/integrations/queue/drain"):  # fmt: skip
        assert _status(demo.url + path) == 503, path
        browser.get(demo.url + path)
        is_the_503_page(path)
    browser.get(demo.url + "/")
    _shot(browser, "12-redis-down-503")
    # No session cookie: the sessions page reads nothing from Redis and still shows.
    assert _status(demo.url + "/integrations/name") == 200
    assert _status(demo.url + "/favicon.ico") == 200
    assert _status(demo.url + "/health/redis") == 503
    browser.get(demo.url + "/health/redis")
    assert '"status": "down"' in browser.find_element(By.TAG_NAME, "body").text
