"""BAIT selection: aljax's structured fast path against the dense reference procedure.

The reference is the published algorithm as the authors' code runs it (Ash et al., NeurIPS 2021,
``bait_sampling.py``): it materialises the ``n × C × C·D`` Fisher rows and, per greedy step,
forms ``X M⁻¹ Xᵀ`` and ``X M⁻¹ F M⁻¹ Xᵀ`` for every candidate (4 products of ``n·C·d²``
multiply-adds; here in float32 NumPy, in chunks of the pool to bound memory, with the products
as single large matmuls — generous to the reference).

    python benchmarks/bait_speed.py                 # n = 1,000 and 2,000 (reference run whole),
                                                    # 5,000 and 10,000 (reference: 3 forward steps)
    python benchmarks/bait_speed.py --big           # also n=50,000, D=512 (aljax only; minutes)
    python benchmarks/bait_speed.py --heads         # also transformer heads, D=768, C=2 and 10 (minutes)
    python benchmarks/bait_speed.py --problem 2000,64,20,full --json /tmp/b.json
    python benchmarks/bait_speed.py --problem 1000,32,10,full --small 1000,32,10,50   # quick

Before the sizes, the everyday call (``--small N,D,K,LABELED``, default 1,000, 32, 10, 50 labeled,
float64; ``--small none`` skips it): in fresh Python processes, ``import aljax`` plus the first
``fisher_greedy`` call (compilation included), then the same with JAX's persistent compilation
cache filled by an earlier process; and the warm selection against the dense reference with the
labeled set, in float64, picks compared.

Reported: per-step and total seconds, compilation separately, medians of ``--repeats`` runs,
ratios against the reference measured in the same run (extrapolated from its measured per-step
cost where marked). Results go to ``--json`` (default ``benchmarks/results/bait_speed-<backend>.json``,
with the run's provenance, see ``_provenance.py``) and a plot of the speed-ups beside it (``.png``);
``benchmarks/report.py`` turns the JSON into RESULTS.md's table. The numbers depend on the machine
and on its load: the JSON records the load average around each size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import aljax
from aljax._bait import _kernel, _plan, _rows

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _provenance  # noqa: E402
import _timing  # noqa: E402


def make_problem(n, c, dim, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)).astype(np.float32) * 2
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    h = np.abs(rng.normal(size=(n, dim))).astype(np.float32) / np.sqrt(dim)
    return probs, h


def reference_rows(probs, h):
    """``V_i = S_i ⊗ h_iᵀ`` materialised, ``(n, C, C·D)`` float32 (what the reference code holds)."""
    n, c = probs.shape
    s = np.sqrt(probs)[:, :, None] * (np.eye(c, dtype=np.float32)[None] - probs[:, None, :])
    return (s[:, :, :, None] * h[:, None, None, :]).reshape(n, c, -1)


class Reference:
    """The dense reference procedure, one greedy step at a time (float32 like the original, or
    float64); with a labeled set, ``M₀ = λI + F_L n_L/(n_L + k)``, ``F`` over pool ∪ labeled and the
    candidate rows scaled by √(k/(n_L + k)), as in the authors' code."""

    def __init__(self, probs, h, k, lamb=1.0, chunk=1000, labeled=None, dtype=np.float32):
        self.x = reference_rows(probs, h).astype(dtype)
        lab = np.zeros((0,) + self.x.shape[1:], dtype) if labeled is None else reference_rows(*labeled).astype(dtype)
        n, r, d = self.x.shape
        n_lab = len(lab)
        fisher_lab = np.zeros((d, d), dtype)
        for start in range(0, n_lab, chunk):
            xc = lab[start:start + chunk].reshape(-1, d)
            fisher_lab += xc.T @ xc
        self.fisher = fisher_lab.copy()
        for start in range(0, n, chunk):
            xc = self.x[start:start + chunk].reshape(-1, d)
            self.fisher += xc.T @ xc
        self.fisher /= n + n_lab
        m0 = lamb * np.eye(d, dtype=dtype) + fisher_lab / (n_lab + k)
        self.inv = np.linalg.inv(m0).astype(dtype)
        self.x *= np.sqrt(k / (n_lab + k)).astype(dtype)
        self.picks, self.k, self.chunk, self.dtype = [], k, chunk, dtype

    def _trace_est(self, x, sign):
        n, r, d = x.shape
        out = np.empty(n, self.dtype)
        eye = np.eye(r, dtype=self.dtype)
        for start in range(0, n, self.chunk):
            xc = x[start:start + self.chunk]
            flat = xc.reshape(-1, d)
            xm = (flat @ self.inv).reshape(len(xc), r, d)
            inner = np.linalg.inv(sign * eye + xm @ xc.transpose(0, 2, 1))
            xmf = (((flat @ self.inv) @ self.fisher) @ self.inv).reshape(len(xc), r, d)
            out[start:start + self.chunk] = np.einsum("nab,nba->n", xmf @ xc.transpose(0, 2, 1), inner)
        return out

    def _woodbury(self, xp, sign):
        r = xp.shape[0]
        inner = np.linalg.inv(sign * np.eye(r, dtype=self.dtype) + xp @ self.inv @ xp.T)
        self.inv = self.inv - self.inv @ xp.T @ inner @ xp @ self.inv

    def forward_step(self):
        est = self._trace_est(self.x, 1.0)
        est[self.picks] = -np.inf
        p = int(np.argmax(est))
        self.picks.append(p)
        self._woodbury(self.x[p], 1.0)

    def backward_step(self):
        est = self._trace_est(self.x[self.picks], -1.0)
        drop = int(np.argmin(-est))
        self._woodbury(self.x[self.picks[drop]], -1.0)
        del self.picks[drop]


def time_reference(probs, h, k, steps, labeled=None, dtype=np.float32, with_setup=False):
    """Per-step seconds of the reference: full run when ``steps`` is None, else that many steps
    (``total``: the greedy steps, and with ``with_setup`` the rows, ``F`` and ``M₀⁻¹`` too)."""
    t0 = time.perf_counter()
    ref = Reference(probs, h, k, labeled=labeled, dtype=dtype)
    if not with_setup:
        t0 = time.perf_counter()
    n_fwd = 2 * k if steps is None else steps
    fwd = []
    for _ in range(n_fwd):
        s = time.perf_counter()
        ref.forward_step()
        fwd.append(time.perf_counter() - s)
    bwd = []
    if steps is None:
        while len(ref.picks) > k:
            s = time.perf_counter()
            ref.backward_step()
            bwd.append(time.perf_counter() - s)
    return dict(step=float(np.median(fwd)), total=time.perf_counter() - t0 if steps is None else None,
                backward=float(np.sum(bwd)), picks=list(ref.picks))


def time_aljax(probs, h, k, repeats):
    rows = _rows.from_fisher_factors(aljax.FisherFactors(jnp.asarray(probs), jnp.asarray(h)))
    n, d = probs.shape[0], probs.shape[1] * h.shape[1]
    chunk = _plan.chunk_size(n, d, 1)
    out = {}
    for label, kk, nf in (("setup", 1, 1), ("full", k, min(2 * k, n))):
        s = time.perf_counter()
        compiled = _kernel.kernel.lower(rows, None, 1.0, k=kk, n_forward=nf, chunk=chunk).compile()
        out[f"compile_{label}"] = time.perf_counter() - s
        times = []
        for _ in range(repeats):
            s = time.perf_counter()
            picks = compiled(rows, None, 1.0).block_until_ready()
            times.append(time.perf_counter() - s)
        out[label] = float(np.median(times))
        out[f"picks_{label}"] = np.asarray(picks).tolist()
    # Per greedy step: everything after the one-time setup (F, A₀, the initial blocks, 1 step),
    # spread over the 2k forward + k backward steps.
    out["step"] = (out["full"] - out["setup"]) / max(1, min(2 * k, n) - 1 + k)
    return out


# (ml_dtypes, which `import jax` loads first, is timed apart: version 0.7.0 registers its NumPy
# loops for longer than the rest of `import aljax` takes; docs/performance.md.)
COLD_CALL = """
import json, sys, time
t0 = time.perf_counter()
import ml_dtypes
ml_dtypes_s = time.perf_counter() - t0
import jax
jax.config.update("jax_enable_x64", True)
if len(sys.argv) > 2:
    jax.config.update("jax_compilation_cache_dir", sys.argv[2])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
import numpy as np
import aljax
imported = time.perf_counter() - t0
data = np.load(sys.argv[1])
k = int(data["k"])
pool = aljax.FisherFactors(data["probs"], data["h"])
labeled = aljax.FisherFactors(data["lab_probs"], data["lab_h"]) if len(data["lab_h"]) else None
t1 = time.perf_counter()
picks = aljax.fisher_greedy(pool, k, labeled=labeled).block_until_ready()
first = time.perf_counter() - t1
print(json.dumps(dict(import_s=imported, ml_dtypes_s=ml_dtypes_s, ml_dtypes=ml_dtypes.__version__,
                      first_call_s=first, total_s=time.perf_counter() - t0, picks=np.asarray(picks).tolist())))
"""


def cold_call(path, cache_dir=None):
    """``import aljax`` and the first ``fisher_greedy`` call on the problem in ``path``, timed in a
    fresh Python process (with JAX's persistent compilation cache at ``cache_dir``, if given)."""
    import subprocess

    cmd = [sys.executable, "-c", COLD_CALL, str(path)] + ([str(cache_dir)] if cache_dir else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_small(n, dim, k, n_lab, classes, repeats):
    """The everyday call: cold (fresh processes, without and with the persistent compilation cache)
    and warm, in float64 with ``n_lab`` labeled points, against the dense reference; a JSON-ready
    dict."""
    import tempfile

    probs, h = make_problem(n + n_lab, classes, dim, seed=1)
    probs, h = probs.astype(np.float64), h.astype(np.float64)
    probs /= probs.sum(1, keepdims=True)
    pool, lab = (probs[:n], h[:n]), (probs[n:], h[n:])
    entry = dict(n=n, classes=classes, dim=dim, d=classes * dim, k=k, labeled=n_lab, oversample=2.0,
                 dtype="float64", load_before=_timing.loadavg())
    print(f"\n== everyday call: n={n:,}, C={classes}, D={dim}, k={k}, {n_lab} labeled, float64 ==", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "problem.npz"
        np.savez(path, probs=pool[0], h=pool[1], lab_probs=lab[0], lab_h=lab[1], k=k)
        colds = [cold_call(path) for _ in range(repeats)]
        cache = Path(tmp) / "jax-cache"
        fill = cold_call(path, cache)
        cached = [cold_call(path, cache) for _ in range(repeats)]
    median = lambda runs, key: float(np.median([r[key] for r in runs]))  # noqa: E731
    entry["cold"] = dict(repeats=repeats, import_s=median(colds, "import_s"), first_call_s=median(colds, "first_call_s"),
                         total_s=median(colds, "total_s"), ml_dtypes_s=median(colds, "ml_dtypes_s"),
                         ml_dtypes=colds[0]["ml_dtypes"])
    entry["cold_cached"] = dict(repeats=repeats, fill_total_s=fill["total_s"], import_s=median(cached, "import_s"),
                                first_call_s=median(cached, "first_call_s"), total_s=median(cached, "total_s"))
    print(f"cold call (fresh process): import {entry['cold']['import_s']:.2f} s (of which ml_dtypes "
          f"{entry['cold']['ml_dtypes']} {entry['cold']['ml_dtypes_s']:.2f} s) + first call "
          f"{entry['cold']['first_call_s']:.2f} s = {entry['cold']['total_s']:.2f} s; with the persistent cache "
          f"filled: {entry['cold_cached']['total_s']:.2f} s (first call {entry['cold_cached']['first_call_s']:.2f} s)",
          flush=True)
    with jax.enable_x64(True):
        emb = aljax.FisherFactors(jnp.asarray(pool[0]), jnp.asarray(pool[1]))
        lab_emb = aljax.FisherFactors(jnp.asarray(lab[0]), jnp.asarray(lab[1])) if n_lab else None
        call = lambda: aljax.fisher_greedy(emb, k, labeled=lab_emb)  # noqa: E731
        timing = _timing.measure(call, repeats=max(repeats, 5))
        picks = np.asarray(call()).tolist()
    ref_runs = [time_reference(*pool, k, None, labeled=lab if n_lab else None, dtype=np.float64,
                               with_setup=True)
                for _ in range(repeats)]
    ref_total = float(np.median([r["total"] for r in ref_runs]))
    entry["aljax"] = dict(warm_s=timing["median_s"], first_s=timing["first_s"])
    entry["reference"] = dict(total_s=ref_total, repeats=repeats)
    entry["same_picks"] = picks == ref_runs[0]["picks"]
    entry["speedup_warm"] = ref_total / timing["median_s"]
    entry["speedup_cold"] = ref_total / entry["cold"]["total_s"]
    entry["load_after"] = _timing.loadavg()
    print(f"warm: {timing['median_s'] * 1e3:.1f} ms; dense reference (float64, whole run) {ref_total:.2f} s: "
          f"{entry['speedup_warm']:,.0f}× warm, {entry['speedup_cold']:.1f}× cold; same picks: {entry['same_picks']}",
          flush=True)
    return entry


# Transformer heads (--heads): n, C, D, k, warm calls. Each measured in a fresh process (first
# call, warm calls, peak memory), beside the rate of a jitted 2048 × 2048 float32 matmul in that
# process. The n = 50,000 head takes minutes a call: one warm call.
HEADS = [(10_000, 2, 768, 100, 2), (10_000, 10, 768, 100, 2), (50_000, 10, 768, 100, 1)]

HEAD_CALL = """
import json, resource, sys, time
import jax, jax.numpy as jnp, numpy as np
import aljax
n, c, dim, k = map(int, sys.argv[1:5])
rng = np.random.default_rng(0)
logits = rng.normal(size=(n, c)).astype(np.float32) * 2
probs = np.exp(logits - logits.max(1, keepdims=True)); probs /= probs.sum(1, keepdims=True)
h = np.abs(rng.normal(size=(n, dim))).astype(np.float32) / np.sqrt(dim)
emb = aljax.FisherFactors(jnp.asarray(probs), jnp.asarray(h))
a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
mm = jax.jit(lambda x: x @ x)
mm(a).block_until_ready()
rates = []
for _ in range(5):
    t = time.perf_counter(); mm(a).block_until_ready(); rates.append(2 * 2048 ** 3 / (time.perf_counter() - t))
t = time.perf_counter(); aljax.fisher_greedy(emb, k).block_until_ready(); first = time.perf_counter() - t
warm = []
for _ in range(int(sys.argv[5])):
    t = time.perf_counter(); picks = aljax.fisher_greedy(emb, k).block_until_ready(); warm.append(time.perf_counter() - t)
# VmHWM: this process's own high-water mark (ru_maxrss of a forked child starts at its parent's).
peak = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(json.dumps(dict(first_s=first, warm_s=sorted(warm)[len(warm) // 2], warm_all_s=warm,
                      matmul_flops=sorted(rates)[len(rates) // 2],
                      peak_rss_bytes=peak[0] if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      picks=np.asarray(picks).tolist())))
"""


def run_head(n, classes, dim, k, repeats):
    """A transformer head (``--heads``) in a fresh process: first call (compilation included), warm
    calls, peak memory, and the floor the issue states: a step applies a rank-C correction to every
    point's C × C block, about ``2·n·C²·D`` flops, over ``⌈2k⌉ + k`` steps, at the measured matmul
    rate; a JSON-ready dict."""
    import subprocess

    print(f"\n== transformer head: n={n:,}, C={classes}, D={dim}, k={k}, float32 (fresh process) ==", flush=True)
    entry = dict(n=n, classes=classes, dim=dim, d=classes * dim, k=k, oversample=2.0, load_before=_timing.loadavg())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", HEAD_CALL, str(n), str(classes), str(dim), str(k), str(repeats)],
                         check=True, capture_output=True, text=True, env=env)
    entry.update(json.loads(out.stdout.strip().splitlines()[-1]))
    steps = min(2 * k, n) + k
    entry["floor_flops"] = 2 * n * classes ** 2 * dim * steps
    entry["floor_s"] = entry["floor_flops"] / entry["matmul_flops"]
    entry["load_after"] = _timing.loadavg()
    print(f"first call {entry['first_s']:.1f} s, warm {entry['warm_s']:.1f} s (median of {repeats}), peak "
          f"{entry['peak_rss_bytes'] / 2**30:.2f} GiB; matmul {entry['matmul_flops'] / 1e9:.0f} GFLOP/s, floor "
          f"{entry['floor_s']:.2f} s: warm = {entry['warm_s'] / entry['floor_s']:.0f}× the floor, first = "
          f"{entry['first_s'] / entry['warm_s']:.1f}× warm", flush=True)
    return entry


DEFAULT_PROBLEMS = [(1000, 32, 10, "full"), (2000, 64, 20, "full"), (5000, 128, 50, "steps"),
                    (10000, 128, 100, "steps")]
LARGE = (50000, 512, 100, "extrapolate")


def run_problem(n, dim, k, mode, classes, repeats, reference_steps, cost_per_nd2):
    """One problem size: aljax's selection, the reference (whole run, some steps, or extrapolated
    from ``cost_per_nd2`` seconds per n·d²), and the ratios; a JSON-ready dict."""
    probs, h = make_problem(n, classes, dim)
    d = classes * dim
    entry = dict(n=n, classes=classes, dim=dim, d=d, k=k, oversample=2.0, reference_mode=mode,
                 load_before=_timing.loadavg())
    print(f"\n== n={n:,}, C={classes}, D={dim} (d={d:,}), k={k}, oversample=2 ==", flush=True)
    fast = time_aljax(probs, h, k, repeats)
    entry["aljax"] = dict(repeats=repeats, compile_s=fast["compile_full"], compile_setup_s=fast["compile_setup"],
                          setup_s=fast["setup"], total_s=fast["full"], step_s=fast["step"])
    print(f"aljax: compile {fast['compile_full']:.2f} s; selection {fast['full']:.3f} s "
          f"(setup {fast['setup']:.3f} s, then {fast['step'] * 1e3:.2f} ms per step); median of {repeats}", flush=True)
    if mode == "full":
        ref = time_reference(probs, h, k, None)
        ref_step, ref_total = ref["step"], ref["total"]
        entry["same_picks"] = ref["picks"] == fast["picks_full"]
        entry["reference"] = dict(step_s=ref_step, total_s=ref_total, total_measured=True,
                                  steps_measured=2 * k + (2 * k - k), backward_s=ref["backward"])
        print(f"reference: {ref_step:.3f} s per forward step, total {ref_total:.1f} s (measured); "
              f"same picks: {entry['same_picks']}", flush=True)
    else:
        if mode == "steps":
            ref = time_reference(probs, h, k, reference_steps)
            ref_step = ref["step"]
            how = f"median of {reference_steps} forward steps measured"
            entry["reference"] = dict(step_s=ref_step, steps_measured=reference_steps)
        else:
            ref_step = cost_per_nd2 * n * d * d if cost_per_nd2 else float("nan")
            how = ("extrapolated from the largest measured size's per-step cost ∝ n·d² (the reference needs "
                   f"{n * classes * d * 4 / 2**30:.1f} GiB for V alone)")
            entry["reference"] = dict(step_s=ref_step, steps_measured=0, extrapolated_from_s_per_nd2=cost_per_nd2)
        # Forward 2k steps at the full pool; the backward steps (over 2k points) are negligible.
        ref_total = 2 * k * ref_step
        entry["reference"].update(total_s=ref_total, total_measured=False)
        print(f"reference: {ref_step:.2f} s per forward step ({how}); total ≈ {ref_total:,.0f} s "
              f"(2k forward steps, extrapolated)", flush=True)
    entry["speedup_total"] = ref_total / fast["full"]
    entry["speedup_step"] = (ref_total / (2 * k)) / fast["step"] if mode != "full" else ref_step / fast["step"]
    entry["load_after"] = _timing.loadavg()
    print(f"speed-up: {entry['speedup_total']:,.0f}× total; {entry['speedup_step']:,.0f}× per step", flush=True)
    return entry, (ref_step / (n * d * d) if mode != "extrapolate" else None)


def plot(data, path):
    """Speed-up of aljax over the dense procedure by problem size (total and per step), from the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = data["results"]
    labels = [f"n={e['n']:,}\nD={e['dim']}, k={e['k']}" for e in entries]
    x = np.arange(len(entries))
    fig, ax = plt.subplots(figsize=(7, 4))
    for offset, key, name in ((-0.2, "speedup_total", "whole selection"), (0.2, "speedup_step", "per greedy step")):
        values = [e[key] for e in entries]
        bars = ax.bar(x + offset, values, 0.4, label=name)
        for bar, e, v in zip(bars, entries, values):
            how = {"full": "", "steps": "*", "extrapolate": "**"}[e["reference_mode"]]
            ax.annotate(f"{v:,.0f}×{how}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                        fontsize=8)
    ax.set_yscale("log")
    top = max(max(e["speedup_total"], e["speedup_step"]) for e in entries)
    ax.set_ylim(1, top * 3)                          # bars start at 1× (no gain); room for the labels
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("speed-up over the dense procedure")
    env = data["provenance"]
    ax.set_title(f"BAIT: aljax vs the dense reference (C = {entries[0]['classes']}, float32; "
                 f"{env.get('backend')}, {env.get('cpu_count')} CPUs)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.text(0.01, 0.01, "reference timed over the whole run; * over its first forward steps, total extrapolated "
             "to 2k steps; ** extrapolated ∝ n·d²", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--problem", type=str, action="append", metavar="N,D,K,MODE",
                        help="a problem size and how the reference is timed (full: whole run; steps: "
                             "--reference-steps forward steps; extrapolate: not run); repeatable; default "
                             + "; ".join(",".join(map(str, p)) for p in DEFAULT_PROBLEMS))
    parser.add_argument("--big", action="store_true",
                        help="also n=50,000, D=512, k=100 (aljax only, reference extrapolated; minutes)")
    parser.add_argument("--reference-steps", type=int, default=3,
                        help="reference forward steps measured where MODE is steps (then extrapolated to 2k)")
    parser.add_argument("--small", type=str, default="1000,32,10,50", metavar="N,D,K,LABELED",
                        help="the everyday call measured cold (fresh processes) and warm against the dense "
                             "reference, float64 with LABELED labeled points; 'none' skips it")
    parser.add_argument("--heads", action="store_true",
                        help="also the transformer heads (D=768, k=100: n=10,000 with C=2 and 10, n=50,000 with "
                             "C=10) in fresh processes: "
                             "first call, warm, peak memory, against the flop floor at the measured matmul rate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/bait_speed-<backend>.json)")
    args = parser.parse_args(argv)
    problems = DEFAULT_PROBLEMS if not args.problem else []
    for text in args.problem or []:
        *numbers, mode = text.split(",")
        if len(numbers) != 3 or mode not in ("full", "steps", "extrapolate"):
            parser.error(f"--problem: expected N,D,K,MODE with MODE full, steps or extrapolate, got {text!r}")
        problems.append((*map(int, numbers), mode))
    if args.big:
        problems.append(LARGE)
    provenance = _provenance.collect([sys.argv[0], *argv])
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), {os.cpu_count()} CPU cores, "
          f"jax {jax.__version__}, float32, load average {_timing.loadavg()}", flush=True)
    small = None
    if args.small != "none":
        numbers = args.small.split(",")
        if len(numbers) != 4:
            parser.error(f"--small: expected N,D,K,LABELED or none, got {args.small!r}")
        small = run_small(*map(int, numbers), args.classes, args.repeats)
    results, cost = [], None
    for n, dim, k, mode in problems:
        entry, measured_cost = run_problem(n, dim, k, mode, args.classes, args.repeats if mode != "extrapolate" else 1,
                                           args.reference_steps, cost)
        cost = measured_cost or cost
        results.append(entry)
    heads = [run_head(*head) for head in HEADS] if args.heads else None
    data = {"provenance": provenance, "benchmark": "bait_speed", "results": results}
    if small is not None:
        data["small"] = small
    if heads is not None:
        data["heads"] = heads
    path = args.json or HERE / "results" / f"bait_speed-{provenance['backend']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    png = path.with_suffix(".png")
    plot(data, png)
    print(f"\nwrote {path} and {png}")


if __name__ == "__main__":
    main()
