"""BAIT selection: aljax's structured fast path against the dense reference procedure.

The reference is the published algorithm as the authors' code runs it (Ash et al., NeurIPS 2021,
``bait_sampling.py``): it materialises the ``n × C × C·D`` Fisher rows and, per greedy step,
forms ``X M⁻¹ Xᵀ`` and ``X M⁻¹ F M⁻¹ Xᵀ`` for every candidate (4 products of ``n·C·d²``
multiply-adds; here in float32 NumPy, in chunks of the pool to bound memory, with the products
as single large matmuls — generous to the reference).

    python benchmarks/bait_speed.py                 # n=2,000 (both, full) and n=10,000 (reference: 2 steps)
    python benchmarks/bait_speed.py --big           # also n=50,000, D=512 (aljax only; minutes)

Reported: per-step and total seconds, compilation separately, medians of ``--repeats`` runs,
ratios against the reference measured in the same run (extrapolated from its measured per-step
cost where marked). The numbers depend on the machine and on its load: say which.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import aljax
from aljax._bait import _kernel, _plan, _rows


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--small", type=int, nargs=3, default=[2000, 64, 20], metavar=("N", "D", "K"))
    parser.add_argument("--medium", type=int, nargs=3, default=[10000, 128, 100], metavar=("N", "D", "K"))
    parser.add_argument("--large", type=int, nargs=3, default=[50000, 512, 100], metavar=("N", "D", "K"))
    parser.add_argument("--big", action="store_true", help="also run the large problem (aljax only)")
    parser.add_argument("--reference-steps", type=int, default=2,
                        help="reference steps measured at the medium size (then extrapolated)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), {os.cpu_count()} CPU cores, "
          f"jax {jax.__version__}, float32")
    c = args.classes
    ref_step_cost = None  # seconds per n·d² at the medium size, for extrapolation

    for name, (n, dim, k), ref_mode in (("small", args.small, "full"), ("medium", args.medium, "steps"),
                                        ("large", args.large, "extrapolate")):
        if name == "large" and not args.big:
            continue
        probs, h = make_problem(n, c, dim)
        d = c * dim
        print(f"\n== n={n:,}, C={c}, D={dim} (d={d:,}), k={k}, oversample=2 ==")
        fast = time_aljax(probs, h, k, args.repeats if name != "large" else 1)
        print(f"aljax: compile {fast['compile_full']:.2f} s; selection {fast['full']:.3f} s "
              f"(setup {fast['setup']:.3f} s, then {fast['step'] * 1e3:.2f} ms per step); median of "
              f"{args.repeats if name != 'large' else 1}")
        if ref_mode == "full":
            ref = time_reference(probs, h, k, None)
            ref_total = ref["total"]
            print(f"reference: {ref['step']:.3f} s per forward step, total {ref_total:.1f} s (measured)")
            print(f"same picks: {ref['picks'] == fast['picks_full']} "
                  f"(reference {ref['picks'][:8]}..., aljax {fast['picks_full'][:8]}...)")
        else:
            if ref_mode == "steps":
                ref = time_reference(probs, h, k, args.reference_steps)
                ref_step = ref["step"]
                ref_step_cost = ref_step / (n * d * d)
                how = f"measured over {args.reference_steps} steps"
            else:
                ref_step = ref_step_cost * n * d * d if ref_step_cost else float("nan")
                how = "extrapolated from the medium size's per-step cost ∝ n·d² (the reference needs " \
                      f"{n * c * d * 4 / 2**30:.1f} GiB for V alone)"
            # Forward 2k steps at the full pool; backward steps (over 2k points) are negligible.
            ref_total = 2 * k * ref_step
            print(f"reference: {ref_step:.2f} s per forward step ({how}); total ≈ {ref_total:,.0f} s "
                  f"(2k steps, extrapolated)")
        print(f"speed-up: {ref_total / fast['full']:,.0f}× total; "
              f"{(ref_total / (2 * k)) / fast['step']:,.0f}× per step")


if __name__ == "__main__":
    main()
