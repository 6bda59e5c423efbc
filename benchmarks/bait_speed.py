"""BAIT selection: aljax's structured fast path against the dense reference procedure.

The reference is the published algorithm as the authors' code runs it (Ash et al., NeurIPS 2021,
``bait_sampling.py``): it materialises the ``n × C × C·D`` Fisher rows and, per greedy step,
forms ``X M⁻¹ Xᵀ`` and ``X M⁻¹ F M⁻¹ Xᵀ`` for every candidate (4 products of ``n·C·d²``
multiply-adds; here in float32 NumPy, in chunks of the pool to bound memory, with the products
as single large matmuls — generous to the reference).

    python benchmarks/bait_speed.py                 # n = 1,000 and 2,000 (reference run whole),
                                                    # 5,000 and 10,000 (reference: 3 forward steps)
    python benchmarks/bait_speed.py --big           # also n=50,000, D=512 (aljax only; minutes)
    python benchmarks/bait_speed.py --problem 2000,64,20,full --json /tmp/b.json

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
    """The dense reference procedure, one greedy step at a time (float32, like the original)."""

    def __init__(self, probs, h, k, lamb=1.0, chunk=1000):
        self.x = reference_rows(probs, h)
        n, r, d = self.x.shape
        self.fisher = np.zeros((d, d), np.float32)
        for start in range(0, n, chunk):
            xc = self.x[start:start + chunk].reshape(-1, d)
            self.fisher += xc.T @ xc / n
        self.inv = np.eye(d, dtype=np.float32) / lamb          # no labeled set: M₀ = λI
        self.picks, self.k, self.chunk = [], k, chunk          # n_L = 0: rows scaled by √(k/k) = 1

    def _trace_est(self, x, sign):
        n, r, d = x.shape
        out = np.empty(n, np.float32)
        eye = np.eye(r, dtype=np.float32)
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
        inner = np.linalg.inv(sign * np.eye(r, dtype=np.float32) + xp @ self.inv @ xp.T)
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


def time_reference(probs, h, k, steps):
    """Per-step seconds of the reference: full run when ``steps`` is None, else that many steps."""
    ref = Reference(probs, h, k)
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
    results, cost = [], None
    for n, dim, k, mode in problems:
        entry, measured_cost = run_problem(n, dim, k, mode, args.classes, args.repeats if mode != "extrapolate" else 1,
                                           args.reference_steps, cost)
        cost = measured_cost or cost
        results.append(entry)
    data = {"provenance": provenance, "benchmark": "bait_speed", "results": results}
    path = args.json or HERE / "results" / f"bait_speed-{provenance['backend']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    png = path.with_suffix(".png")
    plot(data, png)
    print(f"\nwrote {path} and {png}")


if __name__ == "__main__":
    main()
