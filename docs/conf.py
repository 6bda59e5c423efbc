"""Sphinx configuration of the aljax documentation (built by ``bash docs/build``).

Tutorials are MyST notebooks executed at every build (myst-nb), so their outputs are never
pasted. Warnings are errors (``-W -n`` in docs/build): a missing docstring, a broken
cross-reference or a failing notebook cell fails the build.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))

import aljax  # noqa: E402

project = "aljax"
author = "the aljax developers"
copyright = "2026, the aljax developers"
release = version = aljax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_copybutton",
]

exclude_patterns = ["_build", "build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}
master_doc = "index"

# Markdown and notebooks
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"          # outputs come from this build, never from a saved notebook
nb_execution_raise_on_error = True   # a failing cell fails the build
nb_execution_timeout = 900
nb_merge_streams = True

# API reference
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = True

html_theme = "furo"
html_title = f"aljax {release}"
