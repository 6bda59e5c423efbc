"""Regenerate the generated sections of benchmarks/RESULTS.md from the results JSON.

    python benchmarks/report.py                      # every section
    python benchmarks/report.py learning_curves      # only the named sections
    python benchmarks/report.py --plots              # also redraw the plots from the JSON

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
                   "rotten": "Rotten Tomatoes (MiniLM embeddings), MLP head",
                   "fashion_large": "Fashion-MNIST, batches of 1,000, MLP with dropout",
                   "fashion_full": "Fashion-MNIST, all 60,000 as the pool, batches of 1,000, MLP with dropout",
                   "digits_bald": "scikit-learn digits, batches of 10, MLP with dropout"}
DAMPING_DATASETS = ("digits", "fashion", "rotten")    # the settings BAIT's two damping modes ran on
# The papers' claims, as paired differences of AUC / random (issue 20): Cluster-Margin against margin
# and BADGE at batches of 1,000; PowerBALD against BatchBALD, BADGE and top-k BALD.
CLAIMS = {"fashion_large": [("cluster_margin", "margin"), ("cluster_margin", "badge"),
                            ("cluster_margin_m2", "margin"), ("cluster_margin_m2", "badge"),
                            ("powerbald", "badge"), ("powerbald", "bald")],
          "fashion_full": [("cluster_margin", "margin"), ("cluster_margin", "badge")],
          "digits_bald": [("powerbald", "batchbald"), ("powerbald", "badge"), ("powerbald", "bald"),
                          ("batchbald", "badge")]}


def claim_lines(name: str, rel: dict) -> list[str]:
    """``a − b`` of AUC / random for each pair of :data:`CLAIMS` run on this dataset, paired by
    seed: mean ± standard error, and the seeds on which ``a`` is at least ``b``."""
    rows = []
    for a, b in CLAIMS.get(name, []):
        if a not in rel or b not in rel:
            continue
        other = dict(zip(rel[b]["seeds"], rel[b]["per_seed"]))
        diffs = [v - other[seed] for seed, v in zip(rel[a]["seeds"], rel[a]["per_seed"]) if seed in other]
        if not diffs:
            continue
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        rows.append(f"| {a} − {b} | {statistics.fmean(diffs):+.4f} ± {_fmt(se, '.4f')} | "
                    f"{sum(d >= 0 for d in diffs)}/{len(diffs)} |")
    if not rows:
        return []
    return ["Paired by seed, AUC / random of one strategy minus another's:", "",
            "| difference | mean ± s.e. | seeds ≥ 0 |", "|---|---|---|", *rows, ""]


def _median_select(runs: list[dict]) -> float | None:
    """Median wall time of one selection call over every round of every seed (the first seed's
    rounds compile, each pool size once; the median is a warm call where there are several seeds)."""
    times = [t for r in runs for t in r.get("select_seconds", [])]
    return statistics.median(times) if times else None


def _select_cell(seconds: float | None) -> str:
    """Three decimals below 0.1 s (a top-k call on a small pool takes milliseconds), else two."""
    return _fmt(seconds, ".3f" if seconds is not None and seconds < 0.1 else ".2f")


def _clustering_lines(runs: dict) -> list[str]:
    """What Cluster-Margin's once-per-run clustering came to, per strategy that records one."""
    lines = []
    for strat, rs in runs.items():
        recs = [r for r in rs if "n_clusters" in r]
        if not recs:
            continue
        med = lambda key: statistics.median(r[key] for r in recs)  # noqa: E731
        lines += [f"`{strat}`'s clustering (once per run, on the first round's model; medians over {len(recs)} "
                  f"runs): threshold {med('cluster_threshold'):.3g}, {med('n_clusters'):g} clusters, the largest "
                  f"{med('largest_cluster'):g} points, {med('singleton_clusters'):g} singletons; "
                  f"{med('cluster_seconds'):.1f} s to compute (part of the first round's selection time).", ""]
    return lines


def learning_curve_lines(name: str, data: dict, root: Path) -> list[str]:
    s, rel, runs = data["settings"], data.get("relative_auc", {}), data["runs"]
    by_strategy = data.get("provenance_by_strategy") or {}
    groups = [(strat, by_strategy.get(strat, data.get("provenance"))) for strat in runs]
    dropout = f" with dropout {s['dropout']} (on in training and in BALD's passes, off otherwise)" \
        if s.get("dropout") else ""
    lines = [f"### {LEARNING_CURVES.get(name, name)}", "",
             f"Pool {s['pool']}, test {s['test']}, {s['classes']} classes; MLP hidden {s['hidden']}{dropout}; "
             f"labels {s['initial']} + {s['rounds']} × {s['per_round']} = "
             f"{s['initial'] + s['rounds'] * s['per_round']}; seeds {s['seeds'][0]}–{s['seeds'][-1]} "
             "(fewer where the table says so); training from "
             f"scratch each round: AdamW lr {s['lr']}, weight decay {s['weight_decay']}, {s['steps']} steps "
             f"of batch {s['batch']}.", ""]
    lines += _provenance.describe_groups(groups, root, legacy=_legacy(data))
    lines += ["| strategy | AUC / random (mean ± std) | seeds above random | first acc. | final acc. "
              "| s per run | selection s / round (median) |", "|---|---|---|---|---|---|---|"]
    for strat, rs in runs.items():
        r = rel.get(strat)
        auc = f"{r['mean']:.4f} ± {r['std']:.4f}" if r else "—"
        wins = f"{sum(v > 1 for v in r['per_seed'])}/{len(r['per_seed'])}" if r and strat != "random" else "—"
        first = statistics.fmean(x["metrics"][0] for x in rs)
        finals = [x["metrics"][-1] for x in rs]
        final, sd = statistics.fmean(finals), statistics.pstdev(finals)
        secs = data.get("seconds_per_run", {}).get(strat)
        lines.append(f"| {strat} | {auc} | {wins} | {first:.4f} | {final:.4f} ± {sd:.4f} | {_fmt(secs, '.1f')} "
                     f"| {_select_cell(_median_select(rs))} |")
    lines += [""] + claim_lines(name, rel) + _clustering_lines(runs) + [f"![{name}](results/{name}.png)", ""]
    return lines


def _per_dataset(results: Path, root: Path, render) -> list[str]:
    """``render(name, data, root)`` for each learning-curve dataset's JSON, a note where it is missing."""
    lines = []
    for name in LEARNING_CURVES:
        data = _load(results / f"{name}.json")
        if data is None:
            lines += [f"### {LEARNING_CURVES[name]}", "", "Not run (data package missing or not run yet).", ""]
        else:
            lines += render(name, data, root)
    return lines


def section_learning_curves(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    return _per_dataset(results, root, learning_curve_lines)


def damping_lines(name: str, data: dict, root: Path) -> list[str]:
    """BAIT's two damping modes on one dataset: ``bait_absolute`` (or, where it was not re-run,
    ``bait``, the same code path) against ``bait_relative``, paired by seed."""
    rel = data.get("relative_auc", {})
    absolute = "bait_absolute" if "bait_absolute" in rel else "bait"
    if absolute not in rel or "bait_relative" not in rel:
        return [f"| {LEARNING_CURVES.get(name, name)} | not run | | | | |"]
    a, r = rel[absolute], rel["bait_relative"]
    pairs = dict(zip(a["seeds"], a["per_seed"]))
    diffs = [v - pairs[seed] for seed, v in zip(r["seeds"], r["per_seed"]) if seed in pairs]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    wins = sum(d >= 0 for d in diffs)
    return [f"| {LEARNING_CURVES.get(name, name)} (`{absolute}`) | {a['mean']:.4f} ± {a['std']:.4f} | "
            f"{r['mean']:.4f} ± {r['std']:.4f} | {statistics.fmean(diffs):+.4f} ± {se:.4f} | "
            f"{wins}/{len(diffs)} | {_same_picks(data['runs'], 'bait', 'bait_absolute')} |"]


def _same_picks(runs: dict, first: str, second: str) -> str:
    """On how many seeds two strategies' runs picked the same points in every round (both run)."""
    by_seed = {r["seed"]: r["selected"] for r in runs.get(first, ())}
    pairs = [(by_seed[r["seed"]], r["selected"]) for r in runs.get(second, ()) if r["seed"] in by_seed]
    return f"{sum(x == y for x, y in pairs)}/{len(pairs)}" if pairs else "—"


def section_bait_damping(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    lines = ["BAIT's damping, λ = 1 in both modes: `damping=\"absolute\"` (λ as given, the authors') against "
             "`damping=\"relative\"` (λ·tr(F)/d), learning-curve AUC / random from the learning-curve runs "
             "above (same settings, seeds and provenance; `bait` is the absolute mode where `bait_absolute` "
             "was not re-run: the same code path; the last column: on how many seeds `bait` and `bait_absolute`, "
             "run at different commits, picked the same points in every round, where both were run; a float32 "
             "near-tie decided differently in one round sends the later rounds apart).", "",
             "| dataset | absolute | relative | relative − absolute (mean ± s.e.) | seeds relative ≥ absolute "
             "| seeds `bait` = `bait_absolute` |",
             "|---|---|---|---|---|---|"]
    made = []
    for name in DAMPING_DATASETS:
        data = _load(results / f"{name}.json")
        lines += [f"| {LEARNING_CURVES[name]} | not run | | | | |"] if data is None else damping_lines(name, data, root)
        if data is not None and "bait_relative" in data.get("runs", {}):
            by_strategy = data.get("provenance_by_strategy") or {}
            groups = [(s, by_strategy.get(s, data.get("provenance"))) for s in ("bait", "bait_absolute", "bait_relative")
                      if s in data["runs"]]
            made += [f"{LEARNING_CURVES[name]}:", ""] + _provenance.describe_groups(groups, root, legacy=_legacy(data))
    return lines + [""] + made


# ---------------------------------------------------------------------------------------------
# Stopping criteria, from the learning-curve runs (simulate's `stopping` record)

STOPPING_CRITERIA = {"stabilizing_predictions": "stabilizing predictions", "average_kappa": "average κ",
                     "overall_uncertainty": "overall uncertainty", "max_confidence": "max-confidence"}


def stopping_cell(records: list[dict], criterion: str) -> str:
    """``median labels at stop · median accuracy left on the table (k/n seeds stopped)``, over the
    seeds on which the criterion stopped; "never" when it stopped on none."""
    stops = [r["criteria"][criterion] for r in records if r["criteria"][criterion]["labels"] is not None]
    finals = [r["final_metric"] for r in records if r["criteria"][criterion]["labels"] is not None]
    if not stops:
        return f"never (0/{len(records)})"
    labels = statistics.median(s["labels"] for s in stops)
    left = statistics.median(final - s["metric"] for s, final in zip(stops, finals))
    return f"{labels:g} · {left:+.4f} ({len(stops)}/{len(records)})"


def stopping_lines(name: str, data: dict, root: Path) -> list[str]:
    s, runs = data["settings"], data["runs"]
    recorded = {strat: [r["stopping"] for r in rs if r.get("stopping")] for strat, rs in runs.items()}
    recorded = {strat: recs for strat, recs in recorded.items() if recs}
    lines = [f"### {LEARNING_CURVES.get(name, name)}", ""]
    if not recorded:
        return lines + ["Not run with a stop set yet: these runs predate it (run "
                        "`python benchmarks/learning_curves.py` again).", ""]
    by_strategy = data.get("provenance_by_strategy") or {}
    groups = [(strat, by_strategy.get(strat, data.get("provenance"))) for strat in recorded]
    sizes = sorted({rec["stop_set_size"] for recs in recorded.values() for rec in recs})
    final = s["initial"] + s["rounds"] * s["per_round"]
    lines += [f"Stop set: {', '.join(map(str, sizes))} held-out test inputs (no label read); labels "
              f"{s['initial']} + {s['rounds']} × {s['per_round']} = {final}.", ""]
    lines += _provenance.describe_groups(groups, root, legacy=_legacy(data))
    lines += ["| strategy | " + " | ".join(STOPPING_CRITERIA.values()) + " | last κ | last mean / max entropy "
              "| final acc. |", "|---|" + "---|" * len(STOPPING_CRITERIA) + "---|---|---|"]
    for strat, recs in recorded.items():
        cells = [stopping_cell(recs, c) for c in STOPPING_CRITERIA]
        kappa = statistics.median(rec["kappas"][-1] for rec in recs if rec["kappas"]) \
            if any(rec["kappas"] for rec in recs) else None
        mean_h = statistics.median(rec["mean_entropy"][-1] for rec in recs)
        max_h = statistics.median(rec["max_entropy"][-1] for rec in recs)
        finals = statistics.fmean(rec["final_metric"] for rec in recs)
        lines.append(f"| {strat} | " + " | ".join(cells) + f" | {_fmt(kappa, '.3f')} | {mean_h:.3f} / {max_h:.3f} "
                     f"| {finals:.4f} |")
    return lines + [""] + stopping_threshold_lines(data)


# Looser thresholds, replayed from the per-round values simulate recorded (the window is 3).
KAPPA_THRESHOLDS = (0.99, 0.97, 0.95, 0.9)
ENTROPY_THRESHOLDS = (0.01, 0.1, 0.2, 0.3)


def first_stop(values: list[float], passes, window: int = 1) -> int | None:
    """The first round at which the mean of the last ``window`` values passes, or None. For κ
    (``window`` > 1) value i compares rounds i and i + 1, so the stop is at round i + 1."""
    offset = 1 if window > 1 else 0
    for end in range(window, len(values) + 1):
        if passes(sum(values[end - window:end]) / window):
            return end - 1 + offset
    return None


def _threshold_cell(runs: list[dict], rounds_of) -> str:
    stops = [(run, rounds_of(run["stopping"])) for run in runs]
    stopped = [(run, r) for run, r in stops if r is not None]
    if not stopped:
        return f"never (0/{len(runs)})"
    labels = statistics.median(run["labels"][r] for run, r in stopped)
    left = statistics.median(run["stopping"]["final_metric"] - run["metrics"][r] for run, r in stopped)
    return f"{labels:g} · {left:+.4f} ({len(stopped)}/{len(runs)})"


def stopping_threshold_lines(data: dict) -> list[str]:
    """Every strategy's runs pooled: where the average-κ rule and overall uncertainty would stop at
    looser thresholds than the papers', replayed from the recorded per-round κ's and entropies."""
    runs = [r for rs in data["runs"].values() for r in rs if r.get("stopping") and "labels" in r and "metrics" in r]
    if not runs:
        return []
    lines = ["Looser thresholds, every strategy's runs pooled (replayed from the recorded per-round κ's and "
             "entropies): median labels at the stop · median accuracy left on the table (runs stopped / runs).", "",
             "| average κ over 3 ≥ | stop | overall uncertainty < (nats) | stop |", "|---|---|---|---|"]
    for kappa, entropy in zip(KAPPA_THRESHOLDS, ENTROPY_THRESHOLDS):
        k_cell = _threshold_cell(runs, lambda rec, t=kappa: first_stop(rec["kappas"], lambda v: v >= t, 3))
        h_cell = _threshold_cell(runs, lambda rec, t=entropy: first_stop(rec["mean_entropy"], lambda v: v < t))
        lines.append(f"| {kappa} | {k_cell} | {entropy} | {h_cell} |")
    return lines + [""]


def section_stopping(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    return _per_dataset(results, root, stopping_lines)


# ---------------------------------------------------------------------------------------------
# Speed benchmarks: one JSON per backend, benchmarks/results/<name>-<backend>.json


def _per_backend(results: Path, name: str) -> list[tuple[str, Path]]:
    """(backend, path) of every ``<name>-<backend>.json`` in ``results``."""
    return [(path.stem[len(name) + 1:], path) for path in sorted(results.glob(f"{name}-*.json"))
            if "-" not in path.stem[len(name) + 1:]]


def _load_avg(entry: dict) -> str:
    before, after = entry.get("load_before"), entry.get("load_after")
    if not before:
        return "—"
    return f"{before[0]:.1f}" + (f" → {after[0]:.1f}" if after else "")


def _image(results: Path, png: Path, alt: str) -> list[str]:
    return [f"![{alt}](results/{png.name})", ""] if png.exists() else []


def _each_backend(results: Path, name: str, script: str, render) -> list[str]:
    found = _per_backend(results, name)
    if not found:
        return _not_run(script, results / f"{name}-<backend>.json")
    lines = []
    for backend, path in found:
        lines += [f"#### {backend} backend (`results/{path.name}`)", ""]
        lines += render(json.loads(path.read_text()), path)
    return lines


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 100 else f"{value:,.0f} s"


def section_throughput(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    def render(data, path):
        entries = data.get("results", [])
        groups = [(f"{e['size']} `{e['algorithm']}`", e.get("provenance")) for e in entries]
        lines = _provenance.describe_groups(groups, root, legacy=_legacy(data)) if entries else []
        lines += ["| size | algorithm | n | D | k | median | compile | throughput | vs memory floor | peak memory "
                  "| load |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        names = {"badge": "`badge` (end to end)", "fisher_greedy": "`fisher_greedy` (BAIT)",
                 "volume_stream": "`volume_stream` (VeSSAL)", "k_center_greedy": "`k_center_greedy` (core-set)",
                 "margin": "`margin` (end to end)", "typiclust": "`typiclust`",
                 "probcover": "`probcover` (δ given)", "probcover_purity": "`probcover` (δ by purity)"}
        for e in entries:
            if "points_per_s" in e:
                rate = f"{e['points_per_s']:,.0f} points/s"
            else:
                rate = f"{e['ms_per_' + e['per']]:.2f} ms/{e['per']}"
            floor = (f"{e['floor_ratio']:.2f}× ({e['floor_ms_per_step']:.2f} ms/step at "
                     f"{e['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s)" if "floor_ratio" in e else "")
            peak = e.get("peak_rss_bytes")
            peak = "—" if peak is None else f"{peak / 2**30:.2f} GiB" + ("" if e.get("peak_rss_reset") else " (process)")
            lines.append(f"| {e['size']} | {names.get(e['algorithm'], '`' + e['algorithm'] + '`')} | {e['n']:,} | "
                         f"{e['dim']} | {_fmt(e.get('k'), ',')} | {e['median_s']:.3f} s | {e['compile_s']:.1f} s | "
                         f"{rate} | {floor} | {peak} | {_load_avg(e)} |")
        lines.append("")
        huge = data.get("huge")
        if huge:
            gb = 1e9
            lines += [f"**{huge['n']:,}-point BADGE, pool never held** (`--huge`; C = 10, D = 512, k = {huge['k']:,}, "
                      f"batches of {huge['batch']:,}; the dense n·C·D embedding alone would need "
                      f"{huge['dense_embedding_bytes'] / gb:.1f} GB):", ""]
            modes = [m for m in ("split", "badge") if m in huge]
            lines += _provenance.describe_groups([(m, huge[m].get("provenance")) for m in modes], root,
                                                 legacy=_legacy(data))
            lines += ["| part | time | peak resident memory | load |", "|---|---|---|---|"]
            if "split" in huge:
                r = huge["split"]
                lines += [f"| embedding pass (`last_layer_embedding` over the stream) | {r['embedding_s']:.1f} s "
                          f"({r['n'] / r['embedding_s']:,.0f} points/s) | {r['peak_rss_after_embedding_bytes'] / gb:.2f} GB "
                          f"after the pass | {_load_avg(r)} |",
                          f"| selection (`kmeans_pp` on the `Factored`, compiled ahead in {r['selection_compile_s']:.1f} s) "
                          f"| {r['selection_s']:.1f} s ({r['selection_s'] / r['k'] * 1e3:.0f} ms/step; "
                          f"{r['floor_ratio']:.2f}× the floor of {r['floor_ms_per_step']:.0f} ms/step at "
                          f"{r['bandwidth_bytes_per_s'] / gb:.1f} GB/s) | {r['peak_rss_bytes'] / gb:.2f} GB | |",
                          f"| total | {r['total_s']:.1f} s | | |"]
            if "badge" in huge:
                r = huge["badge"]
                lines.append(f"| `aljax.badge` end to end, one cold call (separate child) | {r['badge_s']:.1f} s | "
                             f"{r['peak_rss_bytes'] / gb:.2f} GB | {_load_avg(r)} |")
            if "end_to_end_same_picks" in huge:
                lines += ["", f"`aljax.badge` end to end picks the same points as the embedding pass followed by "
                              f"`kmeans_pp`: {huge['end_to_end_same_picks']}."]
            lines.append("")
        lines += _image(results, path.with_name(path.stem + "-floor.png"), "throughput against the memory floor")
        return lines

    return _each_backend(results, "throughput", "throughput.py", render)


def section_throughput_processes(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    """``throughput.py --processes N``: each case on the global pool of N processes against one
    process's part alone, and one all-reduce of the bytes a step exchanges."""
    paths = sorted(results.glob("throughput-*-processes*.json"))
    if not paths:
        return _not_run("throughput.py --processes 2", results / "throughput-cpu-processes2.json")
    lines = []
    for path in paths:
        data = _load(path)
        env = data.get("environment", {})
        lines += [f"**{env.get('backend', '?')}: {env.get('processes', '?')} processes, {env.get('devices', '?')} "
                  f"devices ({env.get('local_devices', '?')} per process)** (`{path.name}`)", ""]
        lines += _provenance.describe(data.get("provenance"), root, legacy=_legacy(data))
        lines += ["| algorithm | n | D | k | global pool (all processes) | one process's part alone | bytes a step "
                  "exchanges | one all-reduce of them | load |", "|---|---|---|---|---|---|---|---|---|"]
        for e in data.get("results", []):
            if "global_ms_per_step" in e:
                glob, loc = f"{e['global_ms_per_step']:.1f} ms/step", f"{e['local_ms_per_step']:.1f} ms/step"
            else:
                glob = f"{e['n'] / e['global_median_s']:,.0f} points/s"
                loc = f"{e['n'] / e['local_median_s'] / e['processes']:,.0f} points/s"
            comm = (f"{e['step_bytes']} B", f"{e['allreduce_s'] * 1e3:.1f} ms") if "step_bytes" in e else ("—", "—")
            load = f"{e['load'][0]:.1f}" if e.get("load") else "—"   # 1-minute load average when measured
            lines.append(f"| `{e['algorithm']}` | {e['n']:,} | {e['dim']} | {e['k']} | {glob} | {loc} | {comm[0]} | "
                         f"{comm[1]} | {load} |")
        lines.append("")
    return lines


def _bait_everyday_call(e: dict | None) -> list[str]:
    """The ``small`` entry of bait_speed's JSON (absent in older files): the cold call in fresh
    processes, without and with the persistent compilation cache, and the warm call against the
    dense reference."""
    if not e:
        return []
    cold, cached, a, r = e["cold"], e["cold_cached"], e["aljax"], e["reference"]
    ml_dtypes = (f", of which `import ml_dtypes` ({cold['ml_dtypes']}, loaded by jax) {cold['ml_dtypes_s']:.2f} s"
                 if "ml_dtypes_s" in cold else "")
    return [f"Everyday call (n = {e['n']:,}, D = {e['dim']}, k = {e['k']}, {e['labeled']} labeled, {e['dtype']}): "
            f"cold, in a fresh process, {cold['total_s']:.2f} s (import {cold['import_s']:.2f} s{ml_dtypes} + "
            f"first call {cold['first_call_s']:.2f} s); with JAX's persistent compilation cache filled by an earlier process "
            f"{cached['total_s']:.2f} s (first call {cached['first_call_s']:.2f} s); warm {a['warm_s'] * 1e3:.1f} ms. "
            f"The dense reference (NumPy, same precision and labeled set, whole run) {r['total_s']:.2f} s: "
            f"{e['speedup_warm']:,.0f}× warm, {e['speedup_cold']:.1f}× cold; same picks: {e['same_picks']}; "
            f"load {_load_avg(e)}.", ""]


def _warm_calls(entry) -> str:
    calls = len(entry.get("warm_all_s", ()))
    return " (one call)" if calls == 1 else (f" (median of {calls})" if calls else "")


def head_fisher_flops(n: int, classes: int, dim: int) -> int:
    """Flops of a head's Fisher sum as aljax forms it: on the sum-zero columns, the upper class blocks
    ``Hᵀ diag(s) H`` of ``2·n·D²`` flops each, ``C(C − 1)/2`` of them (one for ``C = 2``, one row per
    point). The issue's floor leaves it out; the step floor plus this is the floor of a selection that
    forms ``F``."""
    blocks = 1 if classes == 2 else classes * (classes - 1) // 2
    return 2 * n * dim * dim * blocks


def _bait_heads(heads: list | None) -> list[str]:
    """The ``heads`` entries of bait_speed's JSON (``--heads``; absent in older files): transformer
    heads in fresh processes against the flop floor at the matmul rate measured beside them, and
    against that floor plus the Fisher sum's flops (:func:`head_fisher_flops`)."""
    if not heads:
        return []
    lines = ["Transformer heads (`--heads`; float32, no labeled set, each in a fresh process; floor = 2·n·C²·D "
             "flops per step × (2k + k) steps at the rate of a 2048² float32 matmul measured in the same process; "
             "\"+ F\": that floor plus the Fisher sum's C(C − 1)/2 class blocks of 2·n·D² flops, one for C = 2, "
             "at the same rate):",
             "", "| n | C | D | k | first call | warm | peak memory | matmul rate | floor | warm / floor | "
             "floor + F | warm / (floor + F) | first / warm | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in heads:
        def sec(x):
            return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"

        with_f = e["floor_s"] + head_fisher_flops(e["n"], e["classes"], e["dim"]) / e["matmul_flops"]
        lines.append(f"| {e['n']:,} | {e['classes']} | {e['dim']} | {e['k']} | {sec(e['first_s'])} | "
                     f"{sec(e['warm_s'])}{_warm_calls(e)} | {e['peak_rss_bytes'] / 2**30:.2f} GiB | "
                     f"{e['matmul_flops'] / 1e9:.0f} GFLOP/s | {sec(e['floor_s'])} | {e['warm_s'] / e['floor_s']:.0f}× | "
                     f"{sec(with_f)} | {e['warm_s'] / with_f:.1f}× | {e['first_s'] / e['warm_s']:.1f}× | {_load_avg(e)} |")
    return lines + [""]


def section_bait_speed(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    def render(data, path):
        lines = _provenance.describe(data.get("provenance"), root, legacy=_legacy(data))
        lines += ["| n | D | k | aljax: selection (setup + per step) | compile | reference (dense, NumPy): per forward "
                  "step, total | speed-up, total | per step | load |", "|---|---|---|---|---|---|---|---|---|"]
        for e in data["results"]:
            a, r = e["aljax"], e["reference"]
            if e["reference_mode"] == "full":
                ref = (f"{r['step_s']:.3f} s, {_seconds(r['total_s'])} (whole run measured; same picks: "
                       f"{e.get('same_picks')})")
            elif e["reference_mode"] == "steps":
                ref = f"{r['step_s']:.2f} s ({r['steps_measured']} steps measured), ≈ {_seconds(r['total_s'])} (2k steps)"
            else:
                ref = f"≈ {r['step_s']:,.0f} s (extrapolated ∝ n·d²), ≈ {_seconds(r['total_s'])}"
            lines.append(f"| {e['n']:,} | {e['dim']} | {e['k']} | {a['total_s']:.3f} s ({a['setup_s']:.3f} s + "
                         f"{a['step_s'] * 1e3:.2f} ms/step) | {a['compile_s']:.1f} s | {ref} | "
                         f"{e['speedup_total']:,.0f}× | {e['speedup_step']:,.0f}× | {_load_avg(e)} |")
        lines.append("")
        lines += _bait_everyday_call(data.get("small"))
        lines += _bait_heads(data.get("heads"))
        return lines + _image(results, path.with_suffix(".png"), "BAIT speed-up over the dense procedure")

    return _each_backend(results, "bait_speed", "bait_speed.py", render)


def section_vessal_speed(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    def render(data, path):
        lines = _provenance.describe(data.get("provenance"), root, legacy=_legacy(data))
        if data.get("loop"):
            lines += ["Per-point loop (the `active_learn` procedure in NumPy) against `aljax.volume_stream` on the "
                      "same stream and budget:", "",
                      "| d = C·D | stream | k | per-point loop | aljax (median) | compile | speed-up | best of each: "
                      "loop, aljax, speed-up | load |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for e in data["loop"]:
                loop = e["loop"]
                how = "" if not loop["extrapolated"] else f" (timed over {loop['points_timed']:,} points)"
                best = (f"{loop['best_points_per_s']:,.1f}, {e['aljax']['best_points_per_s']:,.0f} points/s, "
                        f"{e['speedup_best']:,.0f}×" if "speedup_best" in e else "—")
                lines.append(f"| {e['d']:,} | {e['n']:,} | {e['k']} | {loop['points_per_s']:,.1f} points/s{how} | "
                             f"{e['aljax']['points_per_s']:,.0f} points/s | {e['aljax']['compile_s']:.1f} s | "
                             f"{e['speedup']:,.0f}× | {best} | {_load_avg(e)} |")
            lines.append("")
        if data.get("stream"):
            lines += ["`aljax.volume_stream` on longer streams (running covariance, the default):", "",
                      "| d = C·D | stream | k | points/s | median | compile | load |", "|---|---|---|---|---|---|---|"]
            for e in data["stream"]:
                lines.append(f"| {e['d']:,} | {e['n']:,} | {e['k']:,} | {e['points_per_s']:,.0f} | {e['median_s']:.2f} s | "
                             f"{e['compile_s']:.1f} s | {_load_avg(e)} |")
            lines.append("")
        if data.get("fixed"):
            lines += ["Fixed covariance (`covariance=` / `precompute_covariance=True`): the dense kernel against the "
                      "span-of-kept-points kernel, same stream, key and Σ̂:", "",
                      "| d = C·D | stream | k | dense kernel | span kernel | span / dense | same picks | Σ̂ pass | load |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for e in data["fixed"]:
                lines.append(f"| {e['d']:,} | {e['n']:,} | {e['k']:,} | {e['dense']['points_per_s']:,.0f} points/s | "
                             f"{e['span']['points_per_s']:,.0f} points/s | {e['span_speedup']:.1f}× | {e['same_picks']} | "
                             f"{e['covariance_pass_points_per_s']:,.0f} points/s | {_load_avg(e)} |")
            lines.append("")
        return lines + _image(results, path.with_suffix(".png"), "VeSSAL speed-up over the per-point loop")

    return _each_backend(results, "vessal_speed", "vessal_speed.py", render)


def section_badge_speed(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    def render(data, path):
        lines = _provenance.describe(data.get("provenance"), root, legacy=_legacy(data))
        lines += [f"n = {data['n']:,}, C = {data['classes']}, D = {data['dim']}, k = {data['k']:,}; medians of "
                  f"{data['repeats']}; memory floor {data['floor_ms_per_step']:.2f} ms/step "
                  f"({data['floor_bytes'] / 2**20:.0f} MiB of float32 factors at "
                  f"{data['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, this run); load {_load_avg(data)}; "
                  f"`prune=True` picks the same points: {data['prune_same_picks']}.", "",
                  "| implementation | total | per step | × floor | speed-up over (b) | over (a) |",
                  "|---|---|---|---|---|---|"]
        names = {"numpy factored": "(b) factored NumPy, per-step CPU sampling",
                 "numpy dense": "(a) dense n × C·D, NumPy"}
        for name, e in data["implementations"].items():
            how = f" ({e['steps_timed']} steps timed, scaled to k)" if "steps_timed" in e else ""
            speed = e.get("speedup", {})
            lines.append(f"| {names.get(name, name)}{how} | {_seconds(e['total_s'])} | {e['ms_per_step']:,.2f} ms | "
                         f"{_fmt(e.get('floor_ratio'), '.2f')} | {_fmt(speed.get('numpy factored'), '.1f')} | "
                         f"{_fmt(speed.get('numpy dense'), ',.0f')} |")
        return lines + [""]

    return _each_backend(results, "badge_speed", "badge_speed.py", render)


def section_adapter_overhead(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    def render(data, path):
        lines = _provenance.describe(data.get("provenance"), root, legacy=_legacy(data))
        lines += [f"Batch {data['batch_size']}, torch {data['torch_threads']} thread(s), "
                  f"{'steady' if data['steady_malloc'] else 'default'} malloc, medians of {data['repeats']} interleaved "
                  f"rounds; load {_load_avg(data)}.", "",
                  "| model | forward | adapter | ratio | paired | page faults (forward / adapter) | first call | h write |",
                  "|---|---|---|---|---|---|---|---|"]
        for e in data["results"]:
            lines.append(f"| {e['model']} | {e['forward_ms']:.1f} ms | {e['adapter_ms']:.1f} ms | {e['ratio']:.3f} | "
                         f"{e['paired']:.3f} | {e['forward_faults']:.0f} / {e['adapter_faults']:.0f} | "
                         f"{e['first_call_ms']:.0f} ms | {e['h_write_ms']:.1f} ms |")
        return lines + [""]

    return _each_backend(results, "adapter_overhead", "adapter_overhead.py", render)


def section_shrinking_pool(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    def render(data, path):
        lines = _provenance.describe(data.get("provenance"), root, legacy=_legacy(data))
        lines += [f"digits, MLP 64-128-10, a pool of {data['pool_size'] - data['k']:,} shrinking and a labeled set "
                  f"growing by {data['k']} per round, {data['rounds']} rounds, one fresh process per strategy; "
                  f"load {_load_avg(data)}.", "",
                  "| strategy | first call (compiles) | later rounds, total | median later round |", "|---|---|---|---|"]
        for e in data["results"]:
            lines.append(f"| `{e['strategy']}` | {e['first_s'] * 1e3:,.0f} ms | {e['later_total_s']:.2f} s | "
                         f"{e['later_median_s'] * 1e3:,.0f} ms |")
        return lines + [""]

    return _each_backend(results, "shrinking_pool", "shrinking_pool.py", render)


def section_progress_overhead(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    path = results / "progress-overhead.json"
    data = _load(path)
    if data is None:
        return _not_run("progress_overhead.py", path)
    s = data["settings"]
    lines = [f"#### `results/{path.name}`", ""]
    lines += _provenance.describe(data.get("provenance"), root, legacy=_legacy(data))
    lines += [f"Front doors with `progress=False` against the same calls at `{data['baseline']}` (before the bars), "
              f"n = {s['n']:,}, k = {s['k']}, {s['calls']} warm calls per process, {s['repeats']} alternating "
              f"pairs of processes; the bookkeeping alone (a scope, a bar, its updates) costs "
              f"{data['bookkeeping_seconds_per_call'] * 1e6:.1f} µs per call.", "",
              "| front door | paired ratio, median (range) | call time, progress off | bookkeeping / call |",
              "|---|---|---|---|"]
    for name, ratio in data["ratio_off_vs_baseline"].items():
        runs = ratio["runs"]
        lines.append(f"| `{name}` | {ratio['median']:.3f} ({min(runs):.2f}–{max(runs):.2f}) | "
                     f"{data['call_seconds_off'][name] * 1e3:.2f} ms | "
                     f"{data['bookkeeping_fraction_of_call'][name] * 100:.2f}% |")
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# Cold start vs model-based by labels per class (benchmarks/cold_start_switch.py) and the
# flagship scenario (benchmarks/flagship.py)

DATASET_NAMES = {"rotten": "Rotten Tomatoes (MiniLM)", "digits": "digits (PCA-32)", "fashion": "Fashion-MNIST (PCA-64)"}


AUTO_THRESHOLDS = (0, 2, 5, 10, 25, 50)
# The width D of the features cold_start_switch.py hands the head, for rows recorded before it
# wrote `dim` (cold_start_switch.CONFIG: MiniLM's 384; the PCA widths).
SWITCH_DIMS = {"rotten": 384, "digits": 32, "fashion": 64}


def section_cold_start_switch(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    path = results / "cold_start_switch.json"
    data = _load(path)
    if data is None:
        return _not_run("cold_start_switch.py", path)
    runs = data["runs"]
    rows = [r for run in runs for r in run["rows"]]
    strategies = [s for s in data["strategies"] if s != "random"]
    groups = [(", ".join(sorted({f"{r['dataset']} ×{r['k'] // r['labeled']}" for r in run["rows"]})),
               run.get("provenance")) for run in runs]
    lines = _provenance.describe_groups(groups, root)
    lines += ["Accuracy after the round minus random's (the mean of three draws), mean over seeds, and the "
              "seeds on which the strategy beats random (best in bold):", "",
              "| dataset | k | labels per class: before → after | random | " + " | ".join(strategies) + " |",
              "|---|---|---|---|" + "---|" * len(strategies)]
    keys = sorted({(r["dataset"], r["k"] // r["labeled"], r["per_class"]) for r in rows},
                  key=lambda key: (list(DATASET_NAMES).index(key[0]) if key[0] in DATASET_NAMES else 9, key[1], key[2]))
    for name, ratio, p in keys:
        group = [r for r in rows if (r["dataset"], r["k"] // r["labeled"], r["per_class"]) == (name, ratio, p)]
        rnd = statistics.mean(r["accuracy"]["random"] for r in group)
        best = max(strategies, key=lambda s: statistics.mean(r["accuracy"][s] for r in group))
        cells = []
        for s in strategies:
            gain = statistics.mean(r["accuracy"][s] - r["accuracy"]["random"] for r in group)
            wins = sum(r["accuracy"][s] > r["accuracy"]["random"] for r in group)
            cell = f"{gain:+.3f} ({wins}/{len(group)})"
            cells.append(f"**{cell}**" if s == best else cell)
        lines.append(f"| {DATASET_NAMES.get(name, name)} | {ratio}·L | {p} → {p * (1 + ratio)} | {rnd:.3f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Rules for `strategy=\"auto\"`, on every cell above: TypiClust while at most *t* labels per "
              "class are labeled before the round (last row: or at most as many labels as the head has "
              "input features, D = 384, 32, 64), BADGE after; the mean gain over random and the cells "
              "(dataset × level × seed) where it beats random:", "",
              "| t (labels per class) | mean gain over random | beats random |", "|---|---|---|"]
    def rule(name, cold):
        gains = [r["accuracy"]["typiclust" if cold(r) else "badge"] - r["accuracy"]["random"] for r in rows]
        lines.append(f"| {name} | {statistics.mean(gains):+.4f} | {sum(g > 0 for g in gains)} of {len(gains)} |")

    for t in AUTO_THRESHOLDS:
        # labeled = per_class · C, so "labeled <= t·C" is "per_class <= t".
        rule(str(t), lambda r: r["per_class"] <= t)
    # auto's rule (aljax.sampler.auto_strategy): labeled <= max(5·C, D).
    rule("5, or at most D labels (`\"auto\"`)",
         lambda r: r["labeled"] <= max(5 * r["labeled"] // r["per_class"], r.get("dim", SWITCH_DIMS.get(r["dataset"], 0))))
    return lines + [""]


def _flagship_gain(rows: list[dict], s: str) -> str:
    """A strategy's gain over the labeled few across the seeds, mean ± std (the example's own)."""
    gains = [r[s] - r["before"] for r in rows]
    sd = statistics.pstdev(gains) if len(gains) > 1 else 0.0
    return f"{statistics.mean(gains):+.3f} ± {sd:.3f}"


def _flagship_summary(rows: list[dict], strategies: list[str]) -> list[str]:
    """Per strategy over the seeds: gain over the labeled few (mean ± std), the paired difference
    from random's mean (mean ± its standard error) and the seeds that beat random's mean."""
    lines = ["| strategy | gain, mean ± std | minus random's, mean ± s.e. | beats random's mean |", "|---|---|---|---|"]
    for s in ["random", *strategies]:
        diffs = [r[s] - r["random"] for r in rows]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        chosen = sorted({r.get("chosen", {}).get(s, s) for r in rows} - {s})
        name = f"`{s}`" + (f" (ran {', '.join(chosen)})" if chosen else "")
        lines.append(f"| {name} | {_flagship_gain(rows, s)} | "
                     + ("—" if s == "random" else f"{statistics.mean(diffs):+.4f} ± {se:.4f}") + " | "
                     + ("—" if s == "random" else f"{sum(d > 0 for d in diffs)} of {len(rows)}") + " |")
    return lines


def section_flagship(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    path = results / "flagship.json"
    data = _load(path)
    if data is None:
        return _not_run("flagship.py", path)
    rows, strategies = data["rows"], data["strategies"]
    lines = _provenance.describe(data.get("provenance"), root)
    setup = data["setup"]
    lines += [f"{setup['labeled']} labeled → {setup['labeled'] + setup['budget']}: accuracy gained by "
              f"{setup['budget']} picks from {setup['pool']:,} raw strings, per seed (random: the mean of "
              f"{setup['random_draws']} draws); test set of {setup['test']:,}.", "",
              "| seed | before | random | " + " | ".join(f"`{s}`" for s in strategies) + " |",
              "|---|---|---|" + "---|" * len(strategies)]
    for r in rows:
        cells = [f"{r[s] - r['before']:+.3f}" + (f" ({r['chosen'][s]})" if r.get("chosen", {}).get(s, s) != s else "")
                 for s in strategies]
        lines.append(f"| {r['seed']} | {r['before']:.3f} | {r['random'] - r['before']:+.3f} | " + " | ".join(cells) + " |")
    lines.append(f"| mean ± std | | {_flagship_gain(rows, 'random')} | "
                 + " | ".join(_flagship_gain(rows, s) for s in strategies) + " |")
    lines.append("| beats random's mean | | | " + " | ".join(
        f"{sum(r[s] > r['random'] for r in rows)} of {len(rows)}" for s in strategies) + " |")
    frozen = _load(results / "flagship_frozen.json")
    if frozen is not None:
        lines += ["", f"**More seeds** (`--frozen`: the sampler on the sentence embeddings computed once, the "
                  f"head's weights in JAX; the same picks as on the strings up to float rounding): "
                  f"{len(frozen['rows'])} seeds.", ""]
        lines += _provenance.describe(frozen.get("provenance"), root)
        lines += _flagship_summary(frozen["rows"], frozen["strategies"])
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# Cold start quality (benchmarks/coldstart_quality.py)

COLDSTART_DATASETS = {"rotten": "Rotten Tomatoes (MiniLM sentence embeddings)", "digits": "scikit-learn digits",
                      "fashion": "Fashion-MNIST"}
COLDSTART_METHODS = {"random": "random", "kmeans_pp": "`kmeans_pp`", "typiclust": "`typiclust`",
                     "probcover_purity": "`probcover`, purity δ", "probcover_coverage": "`probcover`, coverage δ"}


def _mean_std(values) -> str:
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def coldstart_quality_lines(name: str, data: dict, root: Path) -> list[str]:
    s, runs = data["settings"], data["runs"]
    budgets = [b for b in s["budgets"] if any(r["budget"] == b for r in runs)]
    methods = [m for m in s["methods"] if any(r["method"] == m for r in runs)]
    cell = {(r["method"], r["budget"], r["seed"]): r for r in runs}
    lines = [f"### {COLDSTART_DATASETS.get(name, name)}", "",
             f"Pool {s['pool']:,}, test {s['test']:,}, {s['classes']} classes; embedding: {s['features']}, "
             f"L2-normalised; head: {s['head']}; seeds {s['seeds'][0]}–{s['seeds'][-1]}; "
             f"wall time of the run {data['seconds'] / 60:.0f} min, load {data['load_before'][0]:.1f} → "
             f"{data['load_after'][0]:.1f}.", ""]
    lines += _provenance.describe(data.get("provenance"), root)
    lines += ["Test accuracy, mean ± std over seeds (in brackets: the seeds on which the method beats random, "
              "strictly, on the same seed):", "",
              "| method | " + " | ".join(f"{b} / class (k = {b * s['classes']})" for b in budgets) + " |",
              "|---|" + "---|" * len(budgets)]
    for m in methods:
        row = []
        for b in budgets:
            mine = [r for r in runs if r["method"] == m and r["budget"] == b]
            text = _mean_std(r["accuracy"] for r in mine)
            if m != "random":
                paired = [(r, cell.get(("random", b, r["seed"]))) for r in mine]
                paired = [(r, base) for r, base in paired if base is not None]
                text += f" ({sum(r['accuracy'] > base['accuracy'] for r, base in paired)}/{len(paired)})"
            row.append(text)
        lines.append(f"| {COLDSTART_METHODS.get(m, m)} | " + " | ".join(row) + " |")
    lines += ["", f"Classes covered by the picks (mean over seeds, of {s['classes']}); for ProbCover, δ and the "
              "fraction of the pool within δ of a pick (mean over seeds); median selection time (s; the "
              "first call of each k compiles):", "",
              "| method | " + " | ".join(f"{b} / class" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for m in methods:
        row = []
        for b in budgets:
            mine = [r for r in runs if r["method"] == m and r["budget"] == b]
            text = f"{statistics.fmean(r['classes_covered'] for r in mine):.1f} cl."
            if "delta" in mine[0]:
                text += (f", δ {statistics.fmean(r['delta'] for r in mine):.2f}, covers "
                         f"{statistics.fmean(r['coverage'] for r in mine):.0%}")
            text += f", {statistics.median(r['select_s'] for r in mine):.2f} s"
            row.append(text)
        lines.append(f"| {COLDSTART_METHODS.get(m, m)} | " + " | ".join(row) + " |")
    return lines + [""]


def section_coldstart_quality(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    path = results / "coldstart_quality.json"
    data = _load(path)
    if data is None:
        return _not_run("coldstart_quality.py", path)
    lines = []
    for name in COLDSTART_DATASETS:
        if name in data["datasets"]:
            lines += coldstart_quality_lines(name, data["datasets"][name], root)
        else:
            lines += [f"### {COLDSTART_DATASETS[name]}", "", "Not run (data package missing or not run yet).", ""]
    return lines


def section_batchbald_speed(results: Path = RESULTS, root: Path = _provenance.ROOT) -> list[str]:
    def render(data, path):
        lines = _provenance.describe(data.get("provenance"), root, legacy=_legacy(data))
        lines += ["| n | k | S, C, configurations (exact steps) | aljax (median) | compile | numpy-loop | torch-loop "
                  "| speed-up over numpy, torch | exact-phase picks equal | load |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for e in data["results"]:
            refs = [e.get(name) for name in ("numpy-loop", "torch-loop")]
            same = ", ".join(str(r["exact_picks_equal"]) for r in refs if r)
            lines.append(f"| {e['n']:,} | {e['k']} | {e['mc_samples']}, {e['classes']}, {e['configurations']:,} "
                         f"({e['exact_steps']}) | {_seconds(e['aljax']['median_s'])} | {e['aljax']['compile_s']:.1f} s | "
                         + " | ".join(_seconds(r["seconds"]) if r else "—" for r in refs) + " | "
                         + ", ".join(f"{r['speedup']:,.0f}×" if r else "—" for r in refs)
                         + f" | {same} | {_load_avg(e)} |")
        return lines + [""]

    return _each_backend(results, "batchbald_speed", "batchbald_speed.py", render)


SECTIONS = {"learning_curves": section_learning_curves, "bait_damping": section_bait_damping,
            "stopping": section_stopping,
            "coldstart_quality": section_coldstart_quality, "cold_start_switch": section_cold_start_switch,
            "flagship": section_flagship, "throughput": section_throughput,
            "throughput_processes": section_throughput_processes,
            "bait_speed": section_bait_speed, "vessal_speed": section_vessal_speed,
            "badge_speed": section_badge_speed, "adapter_overhead": section_adapter_overhead,
            "shrinking_pool": section_shrinking_pool, "progress_overhead": section_progress_overhead,
            "batchbald_speed": section_batchbald_speed}


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


PLOTS = {"throughput": ("throughput", "plot_floor", "-floor.png"), "bait_speed": ("bait_speed", "plot", ".png"),
         "vessal_speed": ("vessal_speed", "plot", ".png")}


def redraw_plots(results: Path = RESULTS) -> list[Path]:
    """Redraw every benchmark plot from its JSON with the script's own plotting function (this
    imports the scripts, hence JAX and aljax; nothing is run)."""
    import importlib

    drawn = []
    for name, (module, function, suffix) in PLOTS.items():
        for _, path in _per_backend(results, name):
            png = path.with_name(path.stem + suffix)
            draw = getattr(importlib.import_module(module), function)
            if draw(json.loads(path.read_text()), png) is not False:
                drawn.append(png)
    return drawn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", help=f"default: all of {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=RESULTS_MD)
    parser.add_argument("--plots", action="store_true",
                        help="also redraw the plots from the JSON (imports the benchmark scripts, so JAX)")
    args = parser.parse_args(argv)
    if args.plots:
        for png in redraw_plots():
            print(f"drew {png}")
    print(f"wrote {write(args.sections, args.out)}")


if __name__ == "__main__":
    main()
