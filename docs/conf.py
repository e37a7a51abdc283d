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
exclude_patterns = ["_build"]
root_doc = "index"
html_theme = "alabaster"
html_title = f"pyramid_redisx {release}"
html_theme_options = {
    "description": "Redis in the Pyramid request lifecycle",
    "fixed_sidebar": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures say enough; "Any" everywhere is noise
nitpicky = False
smartquotes = False  # messages and keys are shown exactly as the package writes them
