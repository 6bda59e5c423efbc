"""The README's commands and the docs' examples stay true."""

import doctest
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


MODULES = ["aljax._badge", "aljax._embeddings", "aljax._types", "aljax._bait", "aljax._vessal", "aljax.sampler",
           "aljax._baselines", "aljax.scores", "aljax._labelpool", "aljax._simulate", "aljax._plot",
           "aljax.torch_adapter"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name == "aljax.torch_adapter":
        pytest.importorskip("torch")
    if name == "aljax._plot":
        pytest.importorskip("matplotlib")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no runnable examples"
    assert result.failed == 0
