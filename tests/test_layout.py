"""The package's layout: layers import downwards only, no import cycle, no oversized module, and
``import aljax`` pulls in no framework the user did not ask for.

The layer order is the one written at the top of ``aljax/__init__.py``.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aljax"

# Lowest first; a module may import modules of its own layer or of earlier layers only.
LAYERS = [
    ["_validate", "_progress", "_compile"],
    ["_types", "_padding", "_linalg", "_sharding", "_pool", "_hosts"],
    ["_dense_head", "_embeddings", "_scores", "scores", "_stochastic", "stopping"],
    ["_badge", "_bait", "_vessal", "_baselines", "_batchbald", "_kmeans", "_coldstart", "_hac", "_clustermargin"],
    ["_strategies"],
    ["torch_adapter"],
    ["sampler"],
    ["_labelpool", "_simulate", "_plot"],
    ["__init__"],
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}
MAX_LINES = 700


def _modules() -> dict[str, pathlib.Path]:
    """``aljax.x.y`` -> its file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The aljax modules an ``from ... import ...`` statement refers to."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    if not base.startswith("aljax"):
        return []
    names = [f"{base}.{alias.name}" for alias in node.names]
    # `from . import x` imports the submodule x, not the package's own __init__ again.
    return names if node.module is None else [base] + names


def _imports(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """Every aljax module each module imports, at top level or inside a function."""
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                candidates = _resolve(name, path.name == "__init__.py", node)
            else:
                continue
            targets |= {c for c in candidates if c in modules and c != name}
        graph[name] = targets
    return graph


def _component(module: str) -> str:
    """The top-level part of aljax a module belongs to (``aljax._bait._kernel`` -> ``_bait``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_is_assigned_a_layer():
    missing = sorted({_component(m) for m in _modules()} - set(LAYER_OF))
    assert not missing, f"add {missing} to LAYERS here and to the list in aljax/__init__.py"


def test_no_module_imports_a_higher_layer():
    modules = _modules()
    upward = []
    for name, targets in _imports(modules).items():
        here = LAYER_OF[_component(name)]
        for target in targets:
            if LAYER_OF[_component(target)] > here and _component(target) != _component(name):
                upward.append(f"{name} imports {target}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = _imports(_modules())
    # A package's __init__ importing its own submodules is how a package exposes them; a cycle
    # through it is still a cycle (a submodule importing the package back).
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # The package root re-exports everything and nothing imports it: importing a submodule by
    # `from . import x` in __init__ is not a cycle unless x imports the root back.
    assert not cycles, "\n".join(cycles)


def test_no_module_imports_private_names_of_another_part():
    """Helpers shared between modules are named without an underscore (the modules themselves
    are private); underscore names stay inside their module, or inside one package."""
    modules = _modules()
    found = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            targets = _resolve(name, path.name == "__init__.py", node)
            if node.module is None or not targets or targets[0] not in modules:
                continue  # `from . import _module` imports a module, not a private name
            source = targets[0]
            if _component(source) == _component(name):
                continue
            found += [f"{name} imports {alias.name} from {source}" for alias in node.names
                      if alias.name.startswith("_") and f"{source}.{alias.name}" not in modules]
    assert not found, "\n".join(found)


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The AST walk sees function-level imports and relative imports from subpackages."""
    source = "def f():\n    from .. import sampler\n    return sampler\n"
    tree = ast.parse(source)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert "aljax.sampler" in _resolve("aljax._bait._kernel", False, node)
    node = ast.parse("from ._rows import x").body[0]
    assert _resolve("aljax._bait", True, node)[0] == "aljax._bait._rows"
    node = ast.parse("from . import _validate").body[0]
    assert _resolve("aljax._badge", False, node) == ["aljax._validate"]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_over_the_line_limit(name):
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by job (limit {MAX_LINES})"


def test_import_aljax_imports_no_framework():
    code = ("import sys, aljax, aljax.sampler, aljax.scores, aljax.stopping; "
            "heavy = [m for m in ('torch', 'transformers', 'flax', 'optax', 'matplotlib', 'tqdm', 'sklearn') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
