"""The README and the user guide stay true: their commands, their size, and every Python block runs.

The docstring examples run in tests/test_api.py; this file runs the ```python blocks of the
Markdown pages.
"""

import ast
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README_MAX_BYTES = 8000
GUIDE = "docs/guide.md"   # the user guide's first page; its toctree lists the others, in order

# The README's headline figures (one per algorithm) sit between these markers; only there may a
# line hold a speed-up (×), and every line that does links to where it was measured.
HEADLINE_BEGIN, HEADLINE_END = "<!-- headline figures -->", "<!-- end of headline figures -->"
MEASURED_AT = ("benchmarks/RESULTS.md", "docs/")

# A block that imports one of these is skipped when it is not installed (and so is every later
# block of the same page that uses a name such a block defines).
OPTIONAL_MODULES = {"torch", "transformers", "flax", "optax", "equinox", "sklearn", "matplotlib"}
NOT_RUN = "# not run"


def _commands():
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv[^\n]*)\n```", readme)


def test_readme_has_exactly_two_fresh_machine_commands():
    commands = _commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "examples/demo.py" in demo and "pytest" in tests
    for command in commands:
        if "torch" in command:
            assert '"torch==2.13.0"' in command


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci.splitlines()


def test_readme_is_a_short_front_door():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, more than {README_MAX_BYTES}"


def _readme_lines():
    """(line number, line, inside the headline section) for every line of README.md."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert sum(line.strip() == HEADLINE_BEGIN for line in lines) <= 1, "two headline sections"
    inside, out = False, []
    for number, line in enumerate(lines, 1):
        if line.strip() == HEADLINE_BEGIN:
            inside = True
        elif line.strip() == HEADLINE_END:
            inside = False
        out.append((number, line, inside))
    assert not inside, f"README.md opens {HEADLINE_BEGIN} and never closes it"
    return out


@pytest.mark.parametrize("pattern, what", [
    (r"\d\s?ms\b", "a time in milliseconds"),
    (r"\d(\.\d+)?\s?s\b(?!\w)", "a time in seconds"),
    (r"×", "a speed-up or size product (×)"),
    (r"\b(19|20)\d\d-\d\d", "a date"),
    (r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", "a commit hash"),
    (r"(?i)\bbefore\b.*\bafter\b", "a before/after comparison"),
])
def test_readme_holds_no_measurements(pattern, what):
    """Timings, dates, hashes and before/after belong in benchmarks/RESULTS.md (issue 17). The
    one exception: a speed-up (×) in the headline section, on a line that links to where it was
    measured (test_headline_figures_link_to_where_they_were_measured)."""
    for number, line, headline in _readme_lines():
        if headline and what.endswith("(×)"):
            continue
        assert not re.search(pattern, line), f"README.md line {number} holds {what}: {line!r}"


def test_headline_figures_link_to_where_they_were_measured():
    """One headline figure per algorithm, each on its own line with a link to its measurement."""
    headline = [(number, line) for number, line, inside in _readme_lines()
                if inside and line.strip() and line.strip() != HEADLINE_BEGIN]
    assert headline, f"README.md has no headline section ({HEADLINE_BEGIN} ... {HEADLINE_END})"
    for number, line in headline:
        links = re.findall(r"\]\(([^)]+)\)", line)
        assert any(link.startswith(MEASURED_AT) for link in links), \
            f"README.md line {number}, a headline figure, links to none of {MEASURED_AT}: {line!r}"
    text = " ".join(line for _, line in headline)
    for algorithm in ("BADGE", "BAIT", "VeSSAL"):
        assert algorithm in text, f"the headline figures leave out {algorithm}"


def _toctree_pages(doc):
    """The pages of the first {toctree} of ``doc`` (paths relative to ROOT), in order."""
    text = (ROOT / doc).read_text()
    tree = re.search(r"```\{toctree\}\n(.*?)```", text, re.S)
    assert tree, f"{doc} has no toctree"
    base = pathlib.PurePosixPath(doc).parent
    return [str(base / f"{entry.strip()}.md") for entry in tree.group(1).splitlines()
            if entry.strip() and not entry.strip().startswith(":")]


# Each entry runs in one namespace, its pages in order: the guide's pages read like chapters, a
# later page using the model and pool of the first.
RUN_DOCS = {"README.md": ["README.md"], "guide": [GUIDE, *_toctree_pages(GUIDE)]}


def test_every_guide_page_exists():
    for page in RUN_DOCS["guide"]:
        assert (ROOT / page).is_file(), f"{GUIDE}'s toctree lists {page}, which does not exist"


def _python_blocks(doc):
    """(first line number, source) of every ```python block of ``doc``, in order."""
    lines = (ROOT / doc).read_text().splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = number + 1
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines[start - 1:number - 1]) + "\n"))
            start = None
    assert start is None, f"{doc}: a ```python block opened at line {start - 1} is never closed"
    return blocks


def _imported_modules(tree):
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def _names(tree, context):
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, context)}


def _bound_names(tree):
    names = _names(tree, ast.Store)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


# Slow: the blocks compile every selector once (BAIT's kernel alone is most of the README's
# share); CI runs them, the fast tier (-m "not slow") does not.
@pytest.mark.slow
@pytest.mark.parametrize("doc", RUN_DOCS)
def test_python_blocks_run(doc, tmp_path, monkeypatch):
    """Every ```python block of the pages runs, in order, in one namespace per entry of RUN_DOCS
    (so later blocks use what earlier ones defined, across the guide's pages), from an empty
    working directory. A block whose first line is ``# not run`` is left out; one that needs an
    optional package that is not installed is skipped, together with the later blocks that use
    the names it defines."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc_blocks__"}
    unavailable, skipped, ran = set(), [], 0
    for page in RUN_DOCS[doc]:
        for start, source in _python_blocks(page):
            if source.lstrip().startswith(NOT_RUN):
                continue
            tree = ast.parse(source, filename=page)
            ast.increment_lineno(tree, start - 1)     # tracebacks point at the page's own lines
            missing = sorted(m for m in _imported_modules(tree) & OPTIONAL_MODULES
                             if importlib.util.find_spec(m) is None)
            needs = sorted(_names(tree, ast.Load) & unavailable)
            if missing or needs:
                unavailable |= _bound_names(tree)
                skipped.append(f"{page} line {start}: needs {', '.join(missing or needs)}")
                continue
            exec(compile(tree, str(ROOT / page), "exec"), namespace)
            ran += 1
    assert ran or skipped, f"{doc} has no ```python block"
    if skipped:
        pytest.skip(f"{doc}: {ran} blocks ran; skipped " + "; ".join(skipped))
