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
RUN_DOCS = ("README.md", "docs/guide.md")
README_MAX_BYTES = 8000

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


@pytest.mark.parametrize("pattern, what", [
    (r"\d\s?ms\b", "a time in milliseconds"),
    (r"\d(\.\d+)?\s?s\b(?!\w)", "a time in seconds"),
    (r"×", "a speed-up or size product (×)"),
    (r"\b(19|20)\d\d-\d\d", "a date"),
    (r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", "a commit hash"),
    (r"(?i)\bbefore\b.*\bafter\b", "a before/after comparison"),
])
def test_readme_holds_no_measurements(pattern, what):
    """Timings, dates, hashes and before/after belong in benchmarks/RESULTS.md (issue 17)."""
    for number, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        assert not re.search(pattern, line), f"README.md line {number} holds {what}: {line!r}"


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
    """Every ```python block of the page runs, in order, in one namespace per page (so later
    blocks use what earlier ones defined), from an empty working directory. A block whose first
    line is ``# not run`` is left out; one that needs an optional package that is not installed
    is skipped, together with the later blocks that use the names it defines."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc_blocks__"}
    unavailable, skipped, ran = set(), [], 0
    for start, source in _python_blocks(doc):
        if source.lstrip().startswith(NOT_RUN):
            continue
        tree = ast.parse(source, filename=doc)
        ast.increment_lineno(tree, start - 1)     # tracebacks point at the page's own lines
        missing = sorted(m for m in _imported_modules(tree) & OPTIONAL_MODULES
                         if importlib.util.find_spec(m) is None)
        needs = sorted(_names(tree, ast.Load) & unavailable)
        if missing or needs:
            unavailable |= _bound_names(tree)
            skipped.append(f"line {start}: needs {', '.join(missing or needs)}")
            continue
        exec(compile(tree, str(ROOT / doc), "exec"), namespace)
        ran += 1
    assert ran or skipped, f"{doc} has no ```python block"
    if skipped:
        pytest.skip(f"{doc}: {ran} blocks ran; skipped " + "; ".join(skipped))
