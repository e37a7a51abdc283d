"""The built docs in a 1280 px browser window: nothing runs off the right edge.

Every page of the Sphinx build is opened in headless Chromium; the page itself, and every
table, table cell and code block in the text, must be no wider than the space it has
(``scrollWidth <= clientWidth``): a cut-off settings table or error message is a page a
reader cannot use. Screenshots of the pages people read first go to
``artifacts/screenshots/docs/`` (git-ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser import ROOT, WIDTH, chromium, screenshot_folder, shot

pytestmark = [pytest.mark.browser, pytest.mark.docs]

DOCS = ROOT / "docs"

# Elements whose content is wider than their box, as (what, content width, box width).
TOO_WIDE = """
const found = [];
const page = document.documentElement;
if (page.scrollWidth > page.clientWidth) {
  found.push(["the page", page.scrollWidth, page.clientWidth]);
}
for (const el of document.querySelectorAll("div.body table, div.body td, div.body th, div.body pre")) {
  if (el.scrollWidth > el.clientWidth + 1) {
    const text = (el.textContent || "").trim().split("\\n")[0].slice(0, 70);
    found.push([el.tagName.toLowerCase() + ": " + text, el.scrollWidth, el.clientWidth]);
  }
}
return found;
"""
SHOWN = ("index", "guide/quickstart", "guide/settings", "guide/usage", "integrations",
         "reference/troubleshooting", "retries")  # fmt: skip


def _pages(built: Path) -> list[Path]:
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    return sorted(
        page
        for page in built.rglob("*.html")
        if page.name not in skip and not {"_static", "_sources"} & set(page.parts)
    )


def test_every_page_fits_a_1280px_window(built_docs: Path, tmp_path: Path) -> None:
    folder = screenshot_folder("docs")
    overflowing: dict[str, Any] = {}
    with chromium(tmp_path) as browser:
        assert browser.execute_script("return window.innerWidth") == WIDTH
        pages = _pages(built_docs)
        sources = [*DOCS.glob("*.rst"), *DOCS.glob("*/*.rst")]
        assert len(pages) == len(sources), pages  # every page of the docs, once
        for page in pages:
            browser.get(page.as_uri())
            name = page.relative_to(built_docs).with_suffix("").as_posix()
            found = browser.execute_script(TOO_WIDE)
            if found:
                overflowing[name] = found
            if name in SHOWN:
                shot(browser, folder, name.replace("/", "-"))

        # The check sees an overflow when there is one: without the docs' stylesheet the
        # messages at the end of the retries page run past their code blocks.
        browser.get((built_docs / "retries.html").as_uri())
        browser.execute_script(
            "document.querySelector('link[href$=\"custom.css\"]').disabled = true"
        )
        assert browser.execute_script(TOO_WIDE), "the check found nothing without custom.css"
    assert not overflowing, "wider than a 1280 px window:\n" + "\n".join(
        f"  {name}: {found}" for name, found in overflowing.items()
    )
