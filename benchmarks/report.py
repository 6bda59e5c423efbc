"""Regenerate the generated sections of benchmarks/RESULTS.md from the results JSON.

    python benchmarks/report.py                      # every section
    python benchmarks/report.py learning_curves      # only the named sections

Each section lies between ``<!-- GENERATED:BEGIN <name> -->`` and ``<!-- GENERATED:END <name> -->``
in RESULTS.md; the text around the markers is written by hand. Above every table: the provenance of
the run that made it (command, commit, versions, device, date) and whether it is **stale**, i.e.
whether aljax/ now runs different code from the code that made it (``benchmarks/_provenance.py``
says exactly what counts). Nothing here imports JAX or runs a benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _provenance  # noqa: E402

RESULTS = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"

LEGACY_KEYS = ("device", "platform", "python", "jax", "cpu_count")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _legacy(data: dict) -> dict:
    env = data.get("environment") or {}
    return {key: data.get(key, env.get(key)) for key in LEGACY_KEYS + ("backend", "device_kind", "jaxlib")
            if data.get(key, env.get(key)) is not None}


def _not_run(script: str, path: Path) -> list[str]:
    return [f"Not run yet: `python benchmarks/{script}` writes `{path.relative_to(HERE.parent)}`.", ""]


def _fmt(value, spec: str, missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


# ---------------------------------------------------------------------------------------------
# Learning curves (benchmarks/learning_curves.py)

LEARNING_CURVES = {"digits": "scikit-learn digits, MLP", "fashion": "Fashion-MNIST, MLP",
                   "rotten": "Rotten Tomatoes (MiniLM embeddings), MLP head"}


def learning_curve_lines(name: str, data: dict, root: Path) -> list[str]:
    s, rel, runs = data["settings"], data.get("relative_auc", {}), data["runs"]
    by_strategy = data.get("provenance_by_strategy") or {}
    groups = [(strat, by_strategy.get(strat, data.get("provenance"))) for strat in runs]
    lines = [f"### {LEARNING_CURVES.get(name, name)}", "",
             f"Pool {s['pool']}, test {s['test']}, {s['classes']} classes; MLP hidden {s['hidden']}; "
             f"labels {s['initial']} + {s['rounds']} × {s['per_round']} = "
             f"{s['initial'] + s['rounds'] * s['per_round']}; seeds {s['seeds'][0]}–{s['seeds'][-1]} "
             "(fewer where the table says so); training from "
             f"scratch each round: AdamW lr {s['lr']}, weight decay {s['weight_decay']}, {s['steps']} steps "
             f"of batch {s['batch']}.", ""]
    lines += _provenance.describe_groups(groups, root, legacy=_legacy(data))
    lines += ["| strategy | AUC / random (mean ± std) | seeds above random | first acc. | final acc. "
              "| s per run |", "|---|---|---|---|---|---|"]
    for strat, rs in runs.items():
        r = rel.get(strat)
        auc = f"{r['mean']:.4f} ± {r['std']:.4f}" if r else "—"
        wins = f"{sum(v > 1 for v in r['per_seed'])}/{len(r['per_seed'])}" if r and strat != "random" else "—"
        first = statistics.fmean(x["metrics"][0] for x in rs)
        finals = [x["metrics"][-1] for x in rs]
        final, sd = statistics.fmean(finals), statistics.pstdev(finals)
        secs = data.get("seconds_per_run", {}).get(strat)
        lines.append(f"| {strat} | {auc} | {wins} | {first:.4f} | {final:.4f} ± {sd:.4f} | {_fmt(secs, '.1f')} |")
    lines += ["", f"![{name}](results/{name}.png)", ""]
    return lines


def section_learning_curves(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    lines = []
    for name in LEARNING_CURVES:
        data = _load(results / f"{name}.json")
        if data is None:
            lines += [f"### {LEARNING_CURVES[name]}", "", "Not run (data package missing or not run yet).", ""]
        else:
            lines += learning_curve_lines(name, data, root)
    return lines


# ---------------------------------------------------------------------------------------------

SECTIONS = {"learning_curves": section_learning_curves}


def write(names=None, path: Path = RESULTS_MD, results: Path = RESULTS, root: Path = _provenance.ROOT) -> Path:
    """Rewrite the named generated sections (all by default) of ``path`` from ``results``."""
    names = list(SECTIONS) if not names else list(names)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    for name in names:
        if name not in SECTIONS:
            raise ValueError(f"report: unknown section {name!r}; choose from {sorted(SECTIONS)}")
        lines = [_provenance.check_header(root), ""] + SECTIONS[name](results, root)
        text = _provenance.replace_section(text, name, lines)
    path.write_text(text)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", help=f"default: all of {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=RESULTS_MD)
    args = parser.parse_args(argv)
    print(f"wrote {write(args.sections, args.out)}")


if __name__ == "__main__":
    main()
