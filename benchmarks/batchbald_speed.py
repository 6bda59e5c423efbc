"""BatchBALD selection: aljax's jitted greedy against the per-candidate Python loops of the
libraries that ship BatchBALD.

Both references follow the authors' own implementation (BlackHC/batchbald_redux,
``get_batchbald_batch`` with ``DynamicJointEntropy``), written anew here:

* ``torch-loop`` (batchbald_redux, and DISTIL's copy of it): float64 torch on the CPU; per greedy
  step, one ``(M, S) @ (S, C)`` matmul per candidate in a Python loop, then ``Σ −p log p``;
  exact joint configurations while ``C^|B| <= M``, beyond it ``M`` configurations re-sampled
  from the whole batch at every step (``M/S`` per weight sample) with the importance weights.
* ``numpy-loop`` (scikit-activeml's ``batch_bald``, a NumPy port of the same code): the same
  loop in float64 NumPy.

aljax runs :func:`aljax.mutual_information_greedy` (float32, one jitted computation, every
candidate scored by one matrix product per chunk of the pool). The exact steps pick the same
points in all three (checked and reported); the sampled steps draw different configurations, so
their picks may differ. Timings only; the references' cost does not depend on the data.

    python benchmarks/batchbald_speed.py      # n = 500, 2,000 (bound 10,000); 2,000, 10,000 (bound 1,000); k = 10
    python benchmarks/batchbald_speed.py --sizes 500,10 --repeats 1 --json /tmp/b.json
    python benchmarks/batchbald_speed.py --sizes 20000,20 --references none     # aljax alone (GPU)

Reported: seconds per selection (median of ``--repeats`` warm runs for aljax, its compilation
apart; one run of each reference, whose Python loop has nothing to warm up beyond its first
step), ratios against each reference measured in the same run, and the load average. Results go
to ``--json`` (default ``benchmarks/results/batchbald_speed-<backend>.json``) with the run's
provenance (``_provenance.py``).
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _provenance  # noqa: E402
import _timing  # noqa: E402

SAMPLES, CLASSES, CONFIGURATIONS = 20, 10, 10_000


def make_probs(n: int, samples: int = SAMPLES, classes: int = CLASSES, seed: int = 0) -> np.ndarray:
    """``(S, n, C)`` probabilities of a model whose weight samples disagree (a shared mean logit per
    point plus a per-sample perturbation), float32."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(1, n, classes)) * 2 + rng.normal(size=(samples, n, classes))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return (probs / probs.sum(-1, keepdims=True)).astype(np.float32)


class LoopReference:
    """BatchBALD as the libraries run it: a Python loop over candidates per greedy step.

    ``xp`` is ``numpy`` or ``torch``; arrays are float64, laid out ``(n, S, C)`` as theirs are."""

    def __init__(self, xp, probs: np.ndarray, configurations: int, seed: int = 0):
        self.xp, self.torch = xp, xp.__name__ == "torch"
        probs_t = np.swapaxes(probs, 0, 1).astype(np.float64)
        self.probs = xp.from_numpy(probs_t.copy()) if self.torch else probs_t
        self.configurations = configurations
        self.rng = np.random.default_rng(seed)

    def _arr(self, x):
        return self.xp.from_numpy(x) if self.torch else x

    def _np(self, x):
        return x.numpy() if self.torch else x

    def conditional_entropy(self):
        p = self.probs
        log = self.xp.log(self.xp.clamp(p, min=1e-300) if self.torch else np.clip(p, 1e-300, None))
        return self._np(-(p * log).sum(axis=(1, 2)) / p.shape[1])

    def exact_joint(self, batch):
        """``(M, S)``: ``p_s(y_B)`` for all ``C^|B|`` configurations (an outer product per point)."""
        n_samples = self.probs.shape[1]
        joint = self._arr(np.ones((n_samples, 1)))
        for j in batch:
            joint = (joint[:, :, None] * self.probs[j][:, None, :]).reshape(n_samples, -1)
        return joint.T

    def sampled_joint(self, batch):
        """``(M, S)``: ``p_s(ŷ_m)`` for ``M/S`` configurations drawn under each weight sample."""
        probs = self._np(self.probs)[batch]                       # (|B|, S, C)
        n_samples, classes = probs.shape[1:]
        per = self.configurations // n_samples
        joint = np.ones((n_samples, n_samples * per))
        for point in probs:   # labels of this point: `per` draws under each weight sample
            cum = point.cumsum(-1)
            draws = self.rng.random((n_samples, per, 1))
            labels = np.minimum((draws > cum[:, None, :]).sum(-1), classes - 1)   # (S, per)
            joint = joint * point[:, labels.ravel()]
        return self._arr(joint.T)                                  # (S·per, S)

    def joint_entropies(self, joint_m_s, sampled: bool):
        """Per candidate, in a Python loop: ``(M, S) @ (S, C)`` then ``Σ −p log p`` (weighted)."""
        n, n_samples, _ = self.probs.shape
        out = np.empty(n)
        q = joint_m_s.mean(1)[:, None] if sampled else None
        for i in range(n):
            p = (joint_m_s @ self.probs[i]) / n_samples
            nats = -self.xp.log(p) * p
            out[i] = float((nats / q).sum() / joint_m_s.shape[0]) if sampled else float(nats.sum())
        return out

    def select(self, k: int) -> list[int]:
        cond = self.conditional_entropy()
        classes = self.probs.shape[2]
        picks = []
        for t in range(k):
            sampled = classes ** t > self.configurations
            joint = self.sampled_joint(picks) if sampled else self.exact_joint(picks)
            scores = self.joint_entropies(joint, sampled) - cond - cond[picks].sum()
            scores[picks] = -np.inf
            picks.append(int(np.argmax(scores)))
        return picks


def run_size(n: int, k: int, repeats: int, configurations: int, references: list[str], torch_threads: int) -> dict:
    probs = make_probs(n)
    probs_j = jnp.asarray(probs)
    exact_steps = min(k, int(np.floor(np.log(configurations) / np.log(CLASSES) + 1e-9)) + 1)
    timing = _timing.measure(lambda: aljax.mutual_information_greedy(probs_j, k, key=0,
                                                                     configurations=configurations), repeats)
    picks = aljax.mutual_information_greedy(probs_j, k, key=0, configurations=configurations).tolist()
    entry = {"n": n, "k": k, "mc_samples": SAMPLES, "classes": CLASSES, "configurations": configurations,
             "exact_steps": exact_steps, "aljax": {**timing, "picks": picks}, "torch_threads": torch_threads,
             "load_before": _timing.loadavg()}
    print(f"n={n} k={k}: aljax {timing['median_s']:.3f} s (compile {timing['compile_s']:.2f} s)", flush=True)
    refs = []
    if "numpy-loop" in references:
        refs.append(("numpy-loop", np))
    if "torch-loop" in references:
        import torch
        torch.set_num_threads(torch_threads)
        refs.append(("torch-loop", torch))
    for name, xp in refs:
        ref = LoopReference(xp, probs, configurations)
        start = time.perf_counter()
        ref_picks = ref.select(k)
        seconds = time.perf_counter() - start
        same = picks[:exact_steps] == ref_picks[:exact_steps]
        entry[name] = {"seconds": seconds, "picks": ref_picks, "exact_picks_equal": same,
                       "speedup": seconds / timing["median_s"]}
        print(f"  {name}: {seconds:.2f} s ({seconds / timing['median_s']:.0f}x aljax); exact-phase picks "
              f"{'equal' if same else 'DIFFER'}", flush=True)
    entry["load_after"] = _timing.loadavg()
    return entry


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="*", default=["500,10", "2000,10", "2000,10,1000", "10000,10,1000"],
                        help="N,K or N,K,CONFIGURATIONS (default --configurations)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configurations", type=int, default=CONFIGURATIONS)
    parser.add_argument("--references", default="numpy-loop,torch-loop",
                        help="comma-separated: numpy-loop, torch-loop; 'none' times aljax alone")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch's intra-op threads (1: no spinning threads on a shared machine)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    provenance = _provenance.collect([sys.argv[0], *argv])
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), {os.cpu_count()} CPU cores, "
          f"jax {jax.__version__}, S={SAMPLES}, C={CLASSES}, configurations={args.configurations}, "
          f"load average {_timing.loadavg()}", flush=True)
    results = []
    for text in args.sizes:
        n, k, *bound = map(int, text.split(","))
        configurations = bound[0] if bound else args.configurations
        results.append(run_size(n, k, args.repeats, configurations, args.references.split(","), args.torch_threads))
    data = {"provenance": provenance, "benchmark": "batchbald_speed", "results": results}
    path = args.json or HERE / "results" / f"batchbald_speed-{provenance['backend']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
