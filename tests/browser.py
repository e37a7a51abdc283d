"""Headless Chromium for the browser tests (the demo, the built docs), and their screenshots.

Chromium and chromedriver are Debian's (`scripts/system-deps.sh`, run by `make test`,
installs them); Selenium is pointed at /usr/bin/chromedriver so that it never tries to
download a driver or a browser. Screenshots go to ``artifacts/screenshots/<folder>/``
(git-ignored), one folder per test, emptied when that test starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH = 1280  # the window width every page is checked at
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--window-size={WIDTH},1400",
)
WAIT = 15.0  # seconds for anything a page should do


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """Headless Debian Chromium through Debian's chromedriver; quit even on failure."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.access(path, os.X_OK), (
            f"{path} is missing: run `sudo bash scripts/system-deps.sh` "
            "(apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile / 'chromium-profile'}")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    driver.implicitly_wait(5)  # lookups wait for a page that is still loading
    try:
        yield driver
    finally:
        driver.quit()


def screenshot_folder(name: str) -> Path:
    """``artifacts/screenshots/<name>/``, emptied: only this run's pictures in it."""
    folder = SCREENSHOTS / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


def shot(driver: Any, folder: Path, name: str) -> None:
    """A screenshot as tall as the page (so it shows all of it), 1280 px wide."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, max(800, min(int(height) + 40, 4000)))
    driver.save_screenshot(str(folder / f"{name}.png"))
    driver.set_window_size(WIDTH, 1400)
