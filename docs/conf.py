"""Sphinx configuration: `make docs` builds docs/_build/html with warnings as errors."""

from __future__ import annotations

import sys
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))  # redisx_settings, redisx_architecture: generated pages
sys.path.insert(0, str(HERE.parent))  # pyramid_redisx from the checkout, whatever is installed

project = "pyramid_redisx"
author = "The pyramid_redisx authors"
copyright = "2026, The pyramid_redisx authors"
release = _version("pyramid_redisx")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",  # CHANGELOG.md, included as it is
    "redisx_settings",
    "redisx_architecture",  # the layers, drawn and checked from the code
]
source_suffix = {".rst": "restructuredtext"}
myst_heading_anchors = 3
# mutation-report.md is generated and included by mutation_report.rst, not a page of its own
exclude_patterns = ["_build", "mutation-report.md"]
root_doc = "index"
html_theme = "alabaster"
html_title = f"pyramid_redisx {release}"
html_theme_options = {
    "description": "Redis in the Pyramid request lifecycle",
    "fixed_sidebar": True,
    # 940 px by default: the settings table and code blocks need more (see _static/custom.css)
    "page_width": "1180px",
    "body_max_width": "none",  # basic.css caps the text column at 800 px otherwise
}
html_static_path = ["_static"]  # custom.css, which alabaster's layout links by that name
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures say enough; "Any" everywhere is noise
nitpicky = False
smartquotes = False  # messages and keys are shown exactly as the package writes them
