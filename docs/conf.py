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
    "aljax_coverage",         # docs/_ext: every public name has a docstring and a reference entry
]

exclude_patterns = ["_build", "build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}
master_doc = "index"

# Markdown and notebooks
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"          # outputs come from this build, never from a saved notebook
if os.environ.get("DOCS_EXECUTE", "1") == "0":
    # A quick local check of the pages' text and cross-references (`DOCS_EXECUTE=0 bash
    # docs/build`): tutorials are not run, so their cells have no language to highlight.
    # CI never sets it.
    nb_execution_mode = "off"
    suppress_warnings = ["myst-nb.lexer"]
nb_execution_raise_on_error = True   # a failing cell fails the build
nb_execution_timeout = 900
nb_merge_streams = True

# API reference
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
python_maximum_signature_line_length = 90   # long signatures: one parameter per line
toc_object_entries_show_parents = "hide"    # the page's contents list badge(), not aljax.badge()
nitpicky = True

# docs/_ext/aljax_coverage.py: these modules' __all__ must be documented under docs/reference/.
aljax_public_modules = ["aljax", "aljax.scores", "aljax.stopping", "aljax.torch_adapter"]
aljax_reference_dir = "reference"

# Types from other projects, named by the type hints that autodoc renders. The build downloads
# nothing (no intersphinx inventories: it must work offline and in CI without network), so these
# cannot resolve; every other cross-reference must. Add a name here only for a type that is not
# aljax's own. jax.Array is defined in jaxlib, and autodoc names it by its defining module.
nitpick_ignore = [
    ("py:class", "jax.Array"),
    ("py:class", "jax.jaxlib._jax.Array"),
    ("py:class", "numpy.ndarray"),
    ("py:class", "os.PathLike"),
]

html_theme = "furo"
html_title = f"aljax {release}"

# The copy button leaves out the prompts of the docstring examples and shell lines.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
