"""The README's commands stay true (the docstring examples run in tests/test_api.py)."""

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
