"""The documentation site's structure, checked without building it (``bash docs/build`` builds it).

Every public name has a reference entry, every page is reachable from the table of contents, the
build treats warnings as errors, and CI builds the site. The build itself (docs/_ext/
aljax_coverage.py and Sphinx's nitpicky mode) repeats the first check with the real objects and
adds the docstrings and cross-references.
"""

import importlib
import importlib.util
import inspect
import os
import pathlib
import re
import sys

import pytest

import aljax

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
SOURCE_SUFFIXES = (".md", ".rst", ".ipynb")
NOT_PAGES = ("_build", "_ext", "_static", "_templates")   # folders of docs/ that hold no pages
PUBLIC_MODULES = ("aljax", "aljax.scores", "aljax.stopping", "aljax.torch_adapter")


def _public_module(name):
    if name == "aljax.torch_adapter":
        pytest.importorskip("torch")
    return importlib.import_module(name)


# ---------------------------------------------------------------- the API reference


def _reference_text():
    pages = sorted(p for p in REFERENCE.rglob("*") if p.suffix in (".md", ".rst"))
    assert pages, "docs/reference/ has no page"
    return "\n".join(p.read_text() for p in pages)


_AUTO = re.compile(r"(?:\.\. |```\{)(auto\w+)(?:::|\})\s+([\w.]+)")


def _documented():
    """{qualified name: directive} for every autodoc directive of the reference, and every
    name of an ``automodule`` with ``:members:`` (autodoc takes those from the module's
    ``__all__``)."""
    text = _reference_text()
    out = {name: directive for directive, name in _AUTO.findall(text)}
    for match in re.finditer(r"(?:\.\. automodule::|```\{automodule\})\s+([\w.]+)\n((?:[ \t]*:[^\n]*\n)*)", text):
        module, options = match.groups()
        if ":members:" in options:
            for name in getattr(importlib.import_module(module), "__all__", ()):
                out.setdefault(f"{module}.{name}", "automodule :members:")
    return out


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_a_reference_page(module_name):
    module = _public_module(module_name)
    documented = _documented()
    missing = [f"{module_name}.{name}" for name in module.__all__ if f"{module_name}.{name}" not in documented]
    assert not missing, f"no autodoc entry under docs/reference/ for {missing}"


def test_reference_documents_nothing_that_is_not_public():
    """An entry for a name that is no longer public (renamed, removed) is caught here too."""
    has_torch = importlib.util.find_spec("torch") is not None
    public = set(PUBLIC_MODULES)
    for module_name in PUBLIC_MODULES:
        if module_name == "aljax.torch_adapter" and not has_torch:
            continue
        public |= {f"{module_name}.{name}" for name in importlib.import_module(module_name).__all__}
    stale = [name for name in _documented() if name not in public
             and (has_torch or not name.startswith("aljax.torch_adapter."))]
    assert not stale, f"docs/reference/ documents names that are not public: {stale}"


def test_reference_follows_the_groups_of_aljax_init():
    """Each group of aljax/__init__.py (its ``# Group`` comments) is one reference page; the
    modules it re-exports (``scores``, ``stopping``) have pages of their own."""
    init = (ROOT / "aljax" / "__init__.py").read_text().split("__version__")[0]
    groups = re.findall(r"^# (\S.*)\n((?:.+\n)+)", init, re.M)
    assert len(groups) >= 5, "aljax/__init__.py lost its group comments"
    for group, block in groups:
        names = [n for n in re.findall(r" as (\w+)$", block, re.M) if not inspect.ismodule(getattr(aljax, n))]
        pages = {_page_of(f"aljax.{name}") for name in names}
        assert len(pages) == 1 and None not in pages, \
            f"the group {group!r} of aljax/__init__.py is not one reference page: {pages}"


def _page_of(qualified):
    for page in sorted(REFERENCE.rglob("*")):
        if page.suffix in (".md", ".rst") and re.search(rf"(?:::|\}})\s+{re.escape(qualified)}\s*$",
                                                         page.read_text(), re.M):
            return page.name
    return None


def test_signature_table_is_in_the_reference():
    assert "../api" in (REFERENCE / "index.md").read_text().split("{toctree}")[1], \
        "docs/reference/index.md's toctree does not list the signature table (docs/api.md)"


# ---------------------------------------------------------------- every page reachable


def _pages():
    """Document names (paths relative to docs/, no suffix) of every source page."""
    pages = set()
    for path in DOCS.rglob("*"):
        rel = path.relative_to(DOCS)
        if path.suffix in SOURCE_SUFFIXES and not rel.parts[0] in NOT_PAGES \
                and ".ipynb_checkpoints" not in rel.parts:
            pages.add(str(rel.with_suffix("")).replace(os.sep, "/"))
    return pages


def _toctree_entries(page):
    """Document names that ``page``'s toctrees list (MyST fences and reStructuredText)."""
    path = next(DOCS.joinpath(page + suffix) for suffix in SOURCE_SUFFIXES
                if DOCS.joinpath(page + suffix).exists())
    if path.suffix == ".ipynb":
        return [], False
    text = path.read_text()
    bodies = re.findall(r"^(`{3,}|:{3,})\{toctree\}[^\n]*\n(.*?)^\1", text, re.S | re.M)
    bodies = [body for _, body in bodies]
    bodies += [m.group(1) for m in re.finditer(r"^\.\. toctree::[^\n]*\n((?:[ \t]+[^\n]*\n|\n)*)", text, re.M)]
    entries, globbed = [], False
    for body in bodies:
        globbed |= ":glob:" in body
        for line in body.splitlines():
            line = line.strip()
            if not line or line.startswith(":"):
                continue
            target = re.search(r"<([^>]+)>$", line)
            entry = target.group(1) if target else line
            if entry.startswith(("http://", "https://")) or entry == "self":
                continue
            base = pathlib.PurePosixPath(page).parent
            entries.append(os.path.normpath(str(base / entry)).replace(os.sep, "/").lstrip("/"))
    return entries, globbed


def test_every_page_is_reachable_from_a_toctree():
    pages = _pages()
    assert "index" in pages
    seen, todo = {"index"}, ["index"]
    while todo:
        page = todo.pop()
        entries, globbed = _toctree_entries(page)
        for entry in entries:
            matches = ({p for p in pages if pathlib.PurePosixPath(p).match(entry)} if globbed and "*" in entry
                       else {entry})
            for target in matches:
                assert target in pages, f"docs/{page}'s toctree lists {target}, which is not a page"
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
    unreachable = sorted(pages - seen)
    assert not unreachable, f"pages that no toctree reaches from docs/index: {unreachable}"


# ---------------------------------------------------------------- the build and CI


def test_docs_build_is_executable_and_treats_warnings_as_errors():
    build = DOCS / "build"
    assert os.access(build, os.X_OK), "docs/build is not executable"
    command = next(line for line in build.read_text().splitlines() if "sphinx" in line and not line.startswith("#"))
    for flag in ("-W", "-n", "--keep-going"):
        assert re.search(rf"(^|\s){flag}(\s|$)", command), f"docs/build's Sphinx call lacks {flag}: {command}"
    assert "pip" not in build.read_text().split("set -euo pipefail")[1], "docs/build installs nothing"


def test_conf_is_nitpicky_and_checks_coverage():
    conf = (DOCS / "conf.py").read_text()
    assert re.search(r"^nitpicky = True$", conf, re.M)
    assert '"aljax_coverage"' in conf and (DOCS / "_ext" / "aljax_coverage.py").exists()
    assert "intersphinx" not in conf.split("nitpick_ignore")[0].split("extensions")[1].split("]")[0], \
        "the build must not download inventories"
    modules = re.search(r"^aljax_public_modules = (\[.*\])$", conf, re.M)
    assert modules and set(eval(modules.group(1))) == set(PUBLIC_MODULES)


def _coverage_extension():
    pytest.importorskip("sphinx")  # in the test extra, so CI runs these; skipped where it is absent
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        return importlib.import_module("aljax_coverage")
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def test_coverage_extension_lists_every_public_name():
    names = dict(_coverage_extension().public_names("aljax"))
    assert set(f"aljax.{n}" for n in aljax.__all__) <= set(names)
    assert "aljax.LabelPool.label" in names and "aljax.Factored.to_dense" in names
    assert "aljax.Factored.tree_flatten" not in names


def test_coverage_extension_warns_on_undocumented_names(monkeypatch):
    """Without a Sphinx build: a fake module with one name of each fault, a fake environment."""
    import types

    coverage = _coverage_extension()
    module = types.ModuleType("fake_public")
    module.__all__ = ["documented", "no_docstring", "not_in_reference", "elsewhere"]
    for name in module.__all__:
        exec(f"def {name}():\n    {'pass' if name == 'no_docstring' else repr('Doc.')}", vars(module))
    monkeypatch.setitem(sys.modules, "fake_public", module)
    entry = types.SimpleNamespace
    objects = {"fake_public.documented": entry(docname="reference/a"),
               "fake_public.no_docstring": entry(docname="reference/a"),
               "fake_public.elsewhere": entry(docname="guide/b")}
    env = types.SimpleNamespace(get_domain=lambda name: types.SimpleNamespace(objects=objects))
    config = types.SimpleNamespace(aljax_public_modules=["fake_public", "no_such_module"],
                                   aljax_reference_dir="reference")
    warnings = []
    monkeypatch.setattr(coverage.logger, "warning", lambda message, **kwargs: warnings.append(message))
    coverage.check_coverage(types.SimpleNamespace(config=config), env)
    text = "\n".join(warnings)
    assert len(warnings) == 4, text
    assert "fake_public.no_docstring has no docstring" in text
    assert "fake_public.not_in_reference is not documented" in text
    assert "fake_public.elsewhere is documented in guide/b, outside" in text
    assert "cannot import no_such_module" in text
    assert "fake_public.documented " not in text


def test_ci_builds_the_docs_after_the_tests():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    tests = next(i for i, line in enumerate(lines) if "pytest" in line and not line.startswith("#"))
    install = next(i for i, line in enumerate(lines) if '".[docs]"' in line and not line.startswith("#"))
    build = next(i for i, line in enumerate(lines) if line.strip().startswith("bash docs/build"))
    assert tests < install < build, ".ci/run must run the tests, install the docs extra, then build the docs"
    assert '"torch==2.13.0"' in lines[install]


def test_docs_extra_exists():
    pyproject = (ROOT / "pyproject.toml").read_text()
    extra = re.search(r"^docs = \[(.*?)\]", pyproject, re.S | re.M)
    assert extra, "pyproject.toml has no docs extra"
    for package in ("sphinx", "myst-nb", "furo"):
        assert f'"{package}' in extra.group(1), f"the docs extra lacks {package}"


# ---------------------------------------------------------------- README links


def test_readme_relative_links_exist():
    """The README is not part of the site, so Sphinx does not check its links."""
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def _github_slug(heading):
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_anchors_exist():
    """The headline figures link to sections of benchmarks/RESULTS.md: a renamed section breaks
    the link silently on GitHub, so check the anchors here."""
    text = (ROOT / "README.md").read_text()
    for target, anchor in re.findall(r"\]\(([^)#\s]+\.md)#([^)\s]+)\)", text):
        headings = re.findall(r"^#+ (.*)$", (ROOT / target).read_text(), re.M)
        assert anchor in {_github_slug(h) for h in headings}, \
            f"README.md links to {target}#{anchor}, a section that {target} does not have"


@pytest.mark.parametrize("text, is_type", [
    ("jax.Array", True), ("dict[str, float]", True), ("int | None", True), ("list of int", True),
    (":class:`~aljax.Factored`", True), ("str or os.PathLike", True),
    ("int32 indices into the stream", False), ("A JSON-serialisable dict", False),
    ("``(n − n_labeled,)`` dataset indices still in the pool, ascending", False),
])
def test_coverage_extension_tells_a_type_from_prose(text, is_type):
    """napoleon turns the text before a Returns section's first colon into a type; the extension
    warns when that text is prose (the page would show a sentence as the return type)."""
    assert _coverage_extension().looks_like_a_type(text) is is_type
