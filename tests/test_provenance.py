"""Results say which code made them: benchmarks/_provenance.py and benchmarks/report.py on a
synthetic result in a throwaway git repository (no JAX work, no benchmark is run)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _provenance  # noqa: E402
import report  # noqa: E402

KERNEL = '''"""A fake selector."""


def pick(scores, k):
    """The k largest."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
'''


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def commit(repo, message):
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    """A git repository with a fake aljax/ package and two commits (the second outside aljax/)."""
    root = tmp_path / "repo"
    (root / "aljax").mkdir(parents=True)
    (root / "aljax" / "__init__.py").write_text('__version__ = "9.9"\n')
    (root / "aljax" / "_kernel.py").write_text(KERNEL)
    (root / ".gitignore").write_text("__pycache__/\n")
    git(root, "init", "-q")
    commit(root, "first")
    (root / "notes.txt").write_text("not code\n")
    commit(root, "second, outside aljax/")
    return root


def synthetic_result(repo, prov):
    """A tiny learning-curve JSON as benchmarks/learning_curves.py writes it, in the repo's results/."""
    results = repo / "results"
    results.mkdir(exist_ok=True)
    runs = {s: [{"seed": 0, "labels": [10, 20], "metrics": [0.5, m]}] for s, m in (("random", 0.6), ("margin", 0.7))}
    data = {"settings": {"pool": 100, "test": 50, "classes": 2, "hidden": [8], "initial": 10, "rounds": 1,
                         "per_round": 10, "seeds": [0], "lr": 0.01, "weight_decay": 0.0, "steps": 5, "batch": 4},
            "provenance": prov, "provenance_by_strategy": {"random": prov, "margin": prov},
            "seconds_per_run": {"random": 1.0, "margin": 2.0},
            "relative_auc": {"random": {"mean": 1.0, "std": 0.0, "per_seed": [1.0]},
                             "margin": {"mean": 1.05, "std": 0.0, "per_seed": [1.05]}},
            "runs": runs}
    (results / "digits.json").write_text(json.dumps(data))
    return results


def render(repo, results):
    md = repo / "RESULTS.md"
    md.write_text("# Results\n\nhand-written text\n\n<!-- GENERATED:BEGIN learning_curves -->\nold\n"
                  "<!-- GENERATED:END learning_curves -->\n\nmore hand-written text\n")
    report.write(["learning_curves"], md, results, repo)
    return md.read_text()


def test_every_provenance_field_is_recorded(repo):
    argv = ["benchmarks/some_bench.py", "--n", "10", "--label", "two words"]
    prov = _provenance.collect(argv, root=repo)
    assert prov["commit"] == git(repo, "rev-parse", "HEAD") and len(prov["commit"]) == 40
    assert prov["aljax_dirty"] is False and prov["aljax_dirty_files"] == {}
    assert set(prov["versions"]) >= {"python", "aljax", "jax", "jaxlib", "numpy", "torch"}
    assert prov["versions"]["numpy"]
    for key in ("backend", "device_kinds", "device_count", "cpu_count", "platform", "utc"):
        assert key in prov
    assert prov["utc"].endswith("+00:00")
    assert prov["command"] == "python benchmarks/some_bench.py --n 10 --label 'two words'"
    assert prov["argv"] == argv
    json.dumps(prov)                                           # it goes into a JSON file as is


def test_uncommitted_aljax_changes_are_recorded_by_file(repo):
    (repo / "aljax" / "_kernel.py").write_text(KERNEL + "\nX = 1\n")
    (repo / "aljax" / "_new.py").write_text("Y = 2\n")
    (repo / "notes.txt").write_text("changed, but not aljax/\n")
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "bench.py").write_text("N = 10\n")
    prov = _provenance.collect(["x.py"], root=repo)
    assert list(prov["benchmarks_dirty_files"]) == ["benchmarks/bench.py"]
    assert "uncommitted changes to `benchmarks/bench.py`" in _provenance.summary(prov)
    assert prov["aljax_dirty"] is True
    assert sorted(prov["aljax_dirty_files"]) == ["aljax/_kernel.py", "aljax/_new.py"]
    blob = git(repo, "hash-object", "aljax/_kernel.py")
    assert prov["aljax_dirty_files"]["aljax/_kernel.py"] == blob


def test_report_prints_the_provenance_above_the_table_and_keeps_the_hand_written_text(repo):
    prov = _provenance.collect(["benchmarks/learning_curves.py", "--datasets", "digits"], root=repo)
    text = render(repo, synthetic_result(repo, prov))
    assert "hand-written text" in text and "more hand-written text" in text and "\nold\n" not in text
    section = text.split("<!-- GENERATED:BEGIN learning_curves -->")[1]
    made_by = section.index("Made by")
    assert made_by < section.index("| strategy |")
    line = section[made_by:].splitlines()[0]
    for piece in (prov["commit"], "python benchmarks/learning_curves.py --datasets digits", prov["utc"],
                  f"numpy {prov['versions']['numpy']}", f"{prov['cpu_count']} CPUs", prov["platform"]):
        assert piece in line, piece
    assert "Current" in section and "**Stale**" not in section


def test_a_table_is_stale_naming_the_file_when_aljax_changed(repo):
    prov = _provenance.collect(["bench.py"], root=repo)
    (repo / "aljax" / "_kernel.py").write_text(KERNEL.replace("-scores[i]", "scores[i]"))
    commit(repo, "change the selector")
    check = _provenance.staleness(prov, repo)
    assert check["stale"] and not check["unknown"] and check["changed"] == ["aljax/_kernel.py"]
    assert check["uncommitted"] == []
    text = render(repo, synthetic_result(repo, prov))
    assert "**Stale**" in text and "`aljax/_kernel.py`" in text


def test_uncommitted_changes_in_the_checkout_make_a_table_stale_too(repo):
    prov = _provenance.collect(["bench.py"], root=repo)
    (repo / "aljax" / "_extra.py").write_text("Z = 3\n")       # untracked, not committed
    check = _provenance.staleness(prov, repo)
    assert check["stale"] and check["changed"] == ["aljax/_extra.py"] == check["uncommitted"]
    assert "(uncommitted)" in _provenance.verdict(check)


def test_a_table_is_not_stale_when_only_files_outside_aljax_changed(repo):
    prov = _provenance.collect(["bench.py"], root=repo)
    (repo / "notes.txt").write_text("more notes\n")
    commit(repo, "outside aljax/")
    check = _provenance.staleness(prov, repo)
    assert not check["stale"] and not check["unknown"] and check["changed"] == []
    assert "Current" in render(repo, synthetic_result(repo, prov))


def test_docstring_comment_and_layout_changes_do_not_make_a_table_stale(repo):
    prov = _provenance.collect(["bench.py"], root=repo)
    edited = (KERNEL.replace('"""The k largest."""', '"""The k largest scores, in order.\n\n    More words."""')
              .replace('"""A fake selector."""', '"""A fake selector, documented better."""')
              .replace("    return", "    # a comment\n    return"))
    (repo / "aljax" / "_kernel.py").write_text(edited)
    commit(repo, "docs only")
    check = _provenance.staleness(prov, repo)
    assert not check["stale"] and check["doc_only"] == ["aljax/_kernel.py"]
    text = render(repo, synthetic_result(repo, prov))
    assert "**Stale**" not in text and "docstrings, comments or layout only" in text
    # Removing a function's docstring entirely is documentation too; a changed string constant is code.
    (repo / "aljax" / "_kernel.py").write_text(KERNEL.replace('    """The k largest."""\n', ""))
    assert not _provenance.staleness(prov, repo)["stale"]
    (repo / "aljax" / "_kernel.py").write_text(KERNEL + '\nNAME = "a string that is not a docstring"\n')
    assert _provenance.staleness(prov, repo)["changed"] == ["aljax/_kernel.py"]


def test_a_result_made_with_uncommitted_changes_is_current_only_while_the_checkout_has_them(repo):
    (repo / "aljax" / "_kernel.py").write_text(KERNEL + "\nX = 1\n")
    prov = _provenance.collect(["bench.py"], root=repo)
    assert not _provenance.staleness(prov, repo)["stale"]
    commit(repo, "the same change, committed")
    assert not _provenance.staleness(prov, repo)["stale"]
    (repo / "aljax" / "_kernel.py").write_text(KERNEL + "\nX = 2\n")
    assert _provenance.staleness(prov, repo)["changed"] == ["aljax/_kernel.py"]


def test_a_result_without_provenance_is_reported_as_unknown_and_stale(repo):
    results = synthetic_result(repo, None)
    data = json.loads((results / "digits.json").read_text())
    for key in ("provenance", "provenance_by_strategy"):
        del data[key]
    data.update(device="cpu:0", jax="0.4.0")                   # what older files recorded
    (results / "digits.json").write_text(json.dumps(data))
    text = render(repo, results)
    assert "Provenance unknown: stale" in text and "jax 0.4.0" in text
    unknown_commit = {"commit": "0" * 40}
    assert _provenance.staleness(unknown_commit, repo)["unknown"]


def test_rows_made_by_different_runs_get_one_provenance_line_each(repo):
    old = _provenance.collect(["bench.py", "--first"], root=repo)
    (repo / "aljax" / "_kernel.py").write_text(KERNEL + "\nX = 1\n")
    commit(repo, "change")
    new = _provenance.collect(["bench.py", "--second"], root=repo)
    results = synthetic_result(repo, new)
    data = json.loads((results / "digits.json").read_text())
    data["provenance_by_strategy"]["random"] = old
    (results / "digits.json").write_text(json.dumps(data))
    section = render(repo, results)
    assert "Rows random: Made by `python bench.py --first`" in section
    assert "Rows margin: Made by `python bench.py --second`" in section
    assert section.count("**Stale**") == 1


def test_every_section_of_results_md_renders_from_the_saved_json(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n")
    report.write(None, md, ROOT / "benchmarks" / "results", ROOT)
    text = md.read_text()
    for name in report.SECTIONS:
        section = text.split(f"<!-- GENERATED:BEGIN {name} -->")[1].split(f"<!-- GENERATED:END {name} -->")[0]
        assert "Stale marks checked against aljax/ as of" in section
        assert "Made by" in section or "Not run" in section, name


def test_outside_a_git_checkout_nothing_fails_and_the_result_counts_as_unknown(tmp_path):
    (tmp_path / "aljax").mkdir()
    (tmp_path / "aljax" / "__init__.py").write_text("")
    prov = _provenance.collect(["bench.py"], root=tmp_path)
    assert prov["commit"] is None and prov["aljax_dirty_files"] == {}
    check = _provenance.staleness(prov, tmp_path)
    assert check["stale"] and check["unknown"]
