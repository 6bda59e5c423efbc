"""Which code made a result: recorded with every benchmark JSON, checked when a report is written.

Every benchmark script calls :func:`collect` once per run and stores what it returns under the
key ``"provenance"`` of its results JSON (per entry where a file merges runs made at different
times). It holds:

* ``commit``: the full hash of the checkout's ``HEAD``; ``aljax_dirty`` and ``aljax_dirty_files``
  (path -> git blob hash of the file as it was run, ``None`` for a deleted file): aljax/'s
  uncommitted changes at the time, untracked files included; ``benchmarks_dirty_files`` likewise
  for the benchmark scripts (recorded so that a run of an edited script can be told apart; not
  part of the stale check);
* ``versions``: python, aljax, jax, jaxlib, numpy and torch: a module's ``__version__`` where the
  script has imported it, else ``importlib.metadata`` (nothing is imported to read a version, so
  torch is never imported for this; ``None`` where a package is not installed);
* ``backend``, ``device_kinds``, ``device_count``: read from JAX only when the script has imported
  it (nothing here initialises a backend otherwise; ``shrinking_pool.py``, whose parent process
  does not import JAX, fills them in from its child processes);
* ``cpu_count``, ``platform``, ``machine``, ``utc`` (ISO 8601 date-time) and ``command`` (the
  exact command line, ``argv`` too).

:func:`staleness` compares the aljax/ that made a result with the aljax/ of the checkout now
(``HEAD`` plus its uncommitted changes, i.e. the working tree): ``git diff --name-only <commit>``
over aljax/, untracked files, and the files that were uncommitted at run time (compared by their
recorded blob hash). **A change counts only when it can change what runs**: each changed ``.py``
file is parsed and its AST compared with docstrings removed, so edits to docstrings, comments
or formatting do not make a result stale; any other change to a ``.py`` file does, and so does
any change to a non-Python file, a file added or removed, or a file that does not parse. A
result without provenance, or whose commit is not in this repository, is "provenance unknown"
and counted stale.

:func:`describe` renders both as the Markdown lines printed above each table of RESULTS.md.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "aljax"
VERSIONED = ("aljax", "jax", "jaxlib", "numpy", "torch")
SCHEMA = 1


# ---------------------------------------------------------------------------------------------
# git


def _git(root: Path, *args: str, check: bool = True) -> str | None:
    """stdout of ``git <args>`` in ``root``; None when git fails and ``check`` is False."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=check)
    except (OSError, subprocess.CalledProcessError):
        if check:
            raise
        return None
    return done.stdout if done.returncode == 0 else None


def _git_bytes(root: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True)
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def head_commit(root: Path = ROOT) -> str | None:
    out = _git(root, "rev-parse", "--verify", "HEAD", check=False)
    return out.strip() if out else None


def blob_hash(path: Path) -> str:
    """git's blob hash of a file's bytes (what ``git hash-object`` prints), without running git."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def uncommitted_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, str | None]:
    """The package's files that differ from HEAD in the working tree (modified, added, deleted or
    untracked; ignored files are not), each with the blob hash of its current bytes (None: deleted)."""
    paths = set()
    for args in (("diff", "--name-only", "HEAD", "--", f"{package}/"),
                 ("ls-files", "--others", "--exclude-standard", "--", f"{package}/")):
        out = _git(root, *args, check=False)
        if out is None and head_commit(root) is None:           # no commit yet: everything is new
            out = _git(root, "ls-files", "--others", "--cached", "--exclude-standard", "--", f"{package}/",
                       check=False)
        paths.update(line for line in (out or "").splitlines() if line)
    return {p: (blob_hash(root / p) if (root / p).is_file() else None) for p in sorted(paths)}


# ---------------------------------------------------------------------------------------------
# Recording


def _version(name: str) -> str | None:
    """The version of the module the process runs where it is imported (an editable install's
    metadata can lag behind its ``__version__``), else the installed distribution's."""
    module = sys.modules.get(name)
    if getattr(module, "__version__", None):
        return str(module.__version__)
    if name == PACKAGE:  # not imported by this process (a parent of the timed children): the checkout's
        match = re.search(r'^__version__ = "([^"]+)"', (ROOT / PACKAGE / "__init__.py").read_text(), re.M)
        if match:
            return match.group(1)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _devices() -> dict:
    """Backend and devices, from JAX only if the caller has imported it."""
    jax = sys.modules.get("jax")
    if jax is None:
        return {"backend": None, "device_kinds": None, "device_count": None}
    devices = jax.devices()
    return {"backend": jax.default_backend(),
            "device_kinds": sorted({d.device_kind for d in devices}),
            "device_count": len(devices)}


def command_line(argv: list[str] | None = None, root: Path = ROOT) -> str:
    """``python <script relative to the repository> <args>``, quoted for a shell."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        script = Path(argv[0])
        try:
            argv[0] = str(script.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return shlex.join(["python", *argv])


def collect(argv: list[str] | None = None, root: Path = ROOT) -> dict:
    """The provenance of a run made now: see the module's docstring for the fields.

    ``argv`` is the full command line (``sys.argv`` by default, script first)."""
    argv = list(sys.argv if argv is None else argv)
    dirty = uncommitted_files(root)
    return {
        "schema": SCHEMA,
        "commit": head_commit(root),
        "aljax_dirty": bool(dirty),
        "aljax_dirty_files": dirty,
        # Recorded, not checked: the benchmark scripts' own uncommitted changes (a reference
        # procedure or a problem size edited before a run).
        "benchmarks_dirty_files": uncommitted_files(root, "benchmarks"),
        "versions": {"python": platform.python_version(), **{name: _version(name) for name in VERSIONED}},
        **_devices(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(argv, root),
        "argv": argv,
    }


# ---------------------------------------------------------------------------------------------
# Checking


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_of(source: bytes | None) -> str | None:
    """What a Python file runs, for comparison: its AST without docstrings (comments and layout
    are not in an AST). None for a missing file; the raw bytes' repr for one that does not parse."""
    if source is None:
        return None
    try:
        return ast.dump(_strip_docstrings(ast.parse(source)))
    except (SyntaxError, ValueError):
        return "unparsable:" + hashlib.sha1(source).hexdigest()


def same_code(path: str, old: bytes | None, new: bytes | None) -> bool:
    """Whether two versions of ``path`` run the same code (see the module docstring)."""
    if old == new:
        return True
    if old is None or new is None or not path.endswith(".py"):
        return False
    return code_of(old) == code_of(new)


def _commit_exists(root: Path, commit: str) -> bool:
    return _git(root, "cat-file", "-e", f"{commit}^{{commit}}", check=False) is not None


def staleness(prov: dict | None, root: Path = ROOT, package: str = PACKAGE) -> dict:
    """Whether the package that made a result differs from the checkout's now.

    Returns ``{"stale": bool, "unknown": bool, "reason": str, "changed": [paths], "doc_only":
    [paths], "uncommitted": [paths]}``: ``changed`` are the files whose code differs (sorted),
    ``doc_only`` the files that differ only in docstrings, comments or layout (not counted),
    ``uncommitted`` the changed files that differ between HEAD and the working tree now."""
    out = {"stale": True, "unknown": True, "changed": [], "doc_only": [], "uncommitted": []}
    commit = (prov or {}).get("commit")
    if not prov:
        return {**out, "reason": "provenance unknown"}
    if not commit or not _commit_exists(root, commit):
        return {**out, "reason": f"provenance unknown (commit {commit or 'not recorded'} is not in this repository)"}
    ran_dirty = prov.get("aljax_dirty_files") or {}
    now_dirty = uncommitted_files(root, package)
    committed = _git(root, "diff", "--name-only", commit, "--", f"{package}/", check=False) or ""
    candidates = set(committed.splitlines()) | set(ran_dirty) | set(now_dirty)
    changed, doc_only = [], []
    for path in sorted(p for p in candidates if p):
        if path in ran_dirty:
            blob = ran_dirty[path]
            old = None if blob is None else _git_bytes(root, "cat-file", "blob", blob)
            if blob is not None and old is None:
                # The uncommitted bytes that ran are not in this repository: compare hashes only.
                now_path = root / path
                if not (now_path.is_file() and blob_hash(now_path) == blob):
                    changed.append(path)
                continue
        else:
            old = _git_bytes(root, "show", f"{commit}:{path}")
        new_path = root / path
        new = new_path.read_bytes() if new_path.is_file() else None
        if old == new:
            continue
        (doc_only if same_code(path, old, new) else changed).append(path)
    uncommitted = [p for p in changed if p in now_dirty]
    if changed:
        reason = f"{package}/ differs from the code that made it"
    elif ran_dirty:
        reason = f"made with uncommitted {package}/ changes, which the checkout now has"
    else:
        reason = f"{package}/ is the same as at its commit"
    return {"stale": bool(changed), "unknown": False, "reason": reason, "changed": changed,
            "doc_only": doc_only, "uncommitted": uncommitted}


# ---------------------------------------------------------------------------------------------
# Rendering


def _code(text) -> str:
    return f"`{text}`"


def summary(prov: dict | None, legacy: dict | None = None) -> str:
    """One Markdown line: how and where a result was made. ``legacy``: what an old JSON recorded
    without provenance (keys such as ``device``, ``platform``, ``jax``, ``cpu_count``)."""
    if not prov:
        known = ", ".join(f"{key} {value}" for key, value in (legacy or {}).items() if value not in (None, ""))
        return "Made by: not recorded" + (f" (the file records only: {known})" if known else "") + "."
    versions = prov.get("versions") or {}
    dirty = prov.get("aljax_dirty_files") or {}
    state = ("aljax/ clean" if not dirty else
             "aljax/ with uncommitted changes to " + ", ".join(_code(p) for p in dirty))
    scripts = prov.get("benchmarks_dirty_files") or {}
    if scripts:
        state += "; uncommitted changes to " + ", ".join(_code(p) for p in scripts)
    kinds = ", ".join(prov.get("device_kinds") or []) or "?"
    devices = f"{prov.get('backend') or '?'} backend, {prov.get('device_count') or '?'} × {kinds}"
    vers = ", ".join(f"{name} {versions.get(name) or '—'}" for name in ("aljax", "jax", "jaxlib", "numpy", "torch",
                                                                        "python"))
    return (f"Made by {_code(prov.get('command') or '?')} at commit {_code(prov.get('commit') or '?')} "
            f"({state}), {prov.get('utc') or '?'}; {vers}; {devices}; {prov.get('cpu_count') or '?'} CPUs, "
            f"{prov.get('platform') or '?'}.")


def verdict(check: dict) -> str:
    """One Markdown line: stale or not, and why."""
    if check["unknown"]:
        return (f"**Provenance unknown: stale** — {check['reason']}: nothing says which code made this "
                "table, so it is counted as made by other code than today's.")
    doc = (" (differences in docstrings, comments or layout only, not counted: "
           + ", ".join(_code(p) for p in check["doc_only"]) + ")") if check["doc_only"] else ""
    if check["stale"]:
        files = ", ".join(_code(p) + (" (uncommitted)" if p in check["uncommitted"] else "")
                          for p in check["changed"])
        return f"**Stale** — {check['reason']}: {files}{doc}."
    return f"Current — {check['reason']}{doc}."


def describe(prov: dict | None, root: Path = ROOT, legacy: dict | None = None, label: str | None = None) -> list[str]:
    """The Markdown lines printed above a table: what made it and whether it is stale."""
    head = f"{label}: " if label else ""
    return [f"{head}{summary(prov, legacy)}", "", verdict(staleness(prov, root)), ""]


def describe_groups(groups: list[tuple[str, dict | None]], root: Path = ROOT, legacy: dict | None = None) -> list[str]:
    """Like :func:`describe` for a table whose rows were made by different runs: ``groups`` is a
    list of (row labels, provenance); one group is printed without a label."""
    merged: dict[str, tuple[list[str], dict | None]] = {}
    for label, prov in groups:
        key = repr(sorted((prov or {}).items(), key=lambda kv: kv[0])) if prov else "none"
        merged.setdefault(key, ([], prov))[0].append(label)
    if len(merged) == 1:
        return describe(next(iter(merged.values()))[1], root, legacy)
    lines = []
    for labels, prov in merged.values():
        lines += describe(prov, root, legacy, label="Rows " + ", ".join(labels))
    return lines


def check_header(root: Path = ROOT, package: str = PACKAGE) -> str:
    """What the stale marks were checked against: aljax/ as of the last commit that changed it (not
    HEAD, so that committing the regenerated page does not date it), plus uncommitted changes."""
    dirty = uncommitted_files(root, package)
    last = (_git(root, "log", "-1", "--format=%H", "HEAD", "--", f"{package}/", check=False) or "").strip()
    return (f"Stale marks checked against {package}/ as of {_code(last or '?')} (its last commit)"
            + (" plus uncommitted changes to " + ", ".join(_code(p) for p in dirty) if dirty else "")
            + " when this section was generated (docstring-, comment- and layout-only changes are not counted).")


def replace_section(text: str, name: str, lines: list[str]) -> str:
    """``text`` with the lines between ``<!-- GENERATED:BEGIN name -->`` and ``<!-- GENERATED:END
    name -->`` replaced (the markers are appended at the end when absent)."""
    begin, end = f"<!-- GENERATED:BEGIN {name} -->", f"<!-- GENERATED:END {name} -->"
    body = "\n".join(lines).rstrip("\n") + "\n"
    if begin not in text:
        return text.rstrip("\n") + f"\n\n{begin}\n{body}{end}\n"
    head, rest = text.split(begin, 1)
    if end not in rest:
        raise ValueError(f"RESULTS.md: {begin} without {end}")
    return head + begin + "\n" + body + end + rest.split(end, 1)[1]
