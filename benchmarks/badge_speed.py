"""BADGE selector speed: aljax ``kmeans_pp`` on ``Factored`` against two faithful baselines.

(a) dense: the 2020 BADGE code path — materialise the n × C·D gradient embedding and run k-means++
    on it with NumPy, per-step CPU sampling.
(b) factored NumPy: the same seeding from the factors (a, h) with NumPy distances and per-step
    ``rng.choice`` sampling on the CPU (the reference code path today).
aljax: ``aljax.kmeans_pp`` on ``Factored`` (one jitted ``lax.fori_loop``), float32 (with and
    without exact pruning, ``prune=True``) and bfloat16 feature storage.

Also reports the per-step time against the memory floor: bytes of factors read per step divided
by the bandwidth of a jitted streaming reduction measured in the same run.

    python benchmarks/badge_speed.py [--n 50000 --classes 10 --dim 512 --k 1000 --repeats 3 --json PATH]

Results go to ``--json`` (default ``benchmarks/results/badge_speed-<backend>.json``, with the run's
provenance, see ``_provenance.py``); ``benchmarks/report.py`` turns it into RESULTS.md's table.
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
from _timing import loadavg, median_seconds as median_time, streaming_bandwidth  # noqa: E402


def dense_reference(rng, g, k):
    """k-means++ on the materialised (n, C·D) embedding (Ash et al. 2020, `init_centers`)."""
    sq = np.einsum("ij,ij->i", g, g)
    picks = [int(np.argmax(sq))]
    dist = np.maximum(sq + sq[picks[0]] - 2 * g @ g[picks[0]], 0)
    for _ in range(1, k):
        p = np.where(np.isin(np.arange(len(g)), picks), 0, dist)
        i = int(rng.choice(len(g), p=p / p.sum()))
        picks.append(i)
        dist = np.minimum(dist, np.maximum(sq + sq[i] - 2 * g @ g[i], 0))
    return picks


def factored_reference(rng, a, h, k):
    """The same seeding from the factors, NumPy distances, per-step CPU sampling."""
    sq = np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", h, h)
    picks = [int(np.argmax(sq))]
    chosen = np.zeros(len(a), bool)
    chosen[picks[0]] = True
    dist = np.maximum(sq + sq[picks[0]] - 2 * (a @ a[picks[0]]) * (h @ h[picks[0]]), 0)
    for _ in range(1, k):
        p = np.where(chosen, 0, dist)
        i = int(rng.choice(len(a), p=p / p.sum()))
        picks.append(i)
        chosen[i] = True
        dist = np.minimum(dist, np.maximum(sq + sq[i] - 2 * (a @ a[i]) * (h @ h[i]), 0))
    return picks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ref-steps", type=int, default=100,
                        help="steps timed for the NumPy baselines (their total is extrapolated to k)")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/badge_speed-<backend>.json)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    provenance = _provenance.collect([sys.argv[0], *argv])
    n, c, d, k = args.n, args.classes, args.dim, args.k
    out = dict(provenance=provenance, benchmark="badge_speed", n=n, classes=c, dim=d, k=k, repeats=args.repeats,
               load_before=loadavg(), implementations={})
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}); n={n} C={c} D={d} k={k}")

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, c)).astype(np.float32) * 3
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    a = (probs - np.eye(c, dtype=np.float32)[probs.argmax(1)]).astype(np.float32)
    h = np.maximum(rng.normal(size=(n, d)), 0).astype(np.float32)
    emb = aljax.Factored(jnp.asarray(a), jnp.asarray(h))
    emb_bf16 = aljax.Factored(jnp.asarray(a, jnp.bfloat16), jnp.asarray(h, jnp.bfloat16))

    results = {}
    for name, e, prune in (("aljax f32", emb, False), ("aljax f32, prune=True", emb, True),
                           ("aljax bf16 storage", emb_bf16, False)):
        start = time.perf_counter()
        aljax.kmeans_pp(e, k, prune=prune, key=0).block_until_ready()
        first = time.perf_counter() - start
        t = median_time(lambda: aljax.kmeans_pp(e, k, prune=prune, key=1).block_until_ready(), args.repeats)
        results[name] = t
        out["implementations"][name] = dict(total_s=t, ms_per_step=t / k * 1e3, first_call_s=first)
        print(f"{name:>22}: {t:8.3f} s total, {t / k * 1e3:8.3f} ms/step (first call incl. compile {first:.2f} s)")

    steps = min(args.ref_steps, k)
    t = median_time(lambda: factored_reference(np.random.default_rng(1), a, h, steps), args.repeats) * k / steps
    results["numpy factored"] = t
    out["implementations"]["numpy factored"] = dict(total_s=t, ms_per_step=t / k * 1e3, steps_timed=steps)
    print(f"{'(b) numpy factored':>22}: {t:8.3f} s total, {t / k * 1e3:8.3f} ms/step (timed {steps} steps, scaled to k)")

    dense_bytes = n * c * d * 4
    if dense_bytes <= 4 * 2**30:
        g = (a[:, :, None] * h[:, None, :]).reshape(n, c * d)
        dense_steps = min(steps, 20)
        t = median_time(lambda: dense_reference(np.random.default_rng(1), g, dense_steps), 1) * k / dense_steps
        results["numpy dense"] = t
        out["implementations"]["numpy dense"] = dict(total_s=t, ms_per_step=t / k * 1e3, steps_timed=dense_steps,
                                                     dense_bytes=dense_bytes)
        print(f"{'(a) numpy dense':>22}: {t:8.3f} s total, {t / k * 1e3:8.3f} ms/step "
              f"(n×C·D = {dense_bytes / 2**30:.2f} GiB materialised; timed {dense_steps} steps, scaled to k)")
        del g

    floor_bytes = n * (c + d) * 4
    bw = streaming_bandwidth(floor_bytes, args.repeats)["bytes_per_s"]
    floor = floor_bytes / bw
    print(f"\nmemory floor: {floor_bytes / 2**20:.0f} MiB read per step (float32 factors) at {bw / 1e9:.1f} GB/s "
          f"(best of a jitted sum and matvec, this run) = {floor * 1e3:.3f} ms/step")
    for name in ("aljax f32", "aljax f32, prune=True", "aljax bf16 storage"):
        print(f"{name:>22}: {results[name] / k / floor:.2f}× the float32 floor per step")
    for fast in ("aljax f32", "aljax f32, prune=True"):
        for name in ("numpy factored", "numpy dense"):
            if name in results:
                print(f"speed-up of {fast} over {name}: {results[name] / results[fast]:.1f}×")
    same = bool((aljax.kmeans_pp(emb, k, key=1) == aljax.kmeans_pp(emb, k, prune=True, key=1)).all())
    print(f"prune=True picks the same {k} points: {same}")
    for name, entry in out["implementations"].items():
        if name.startswith("aljax"):
            entry["floor_ratio"] = results[name] / k / floor
            entry["speedup"] = {ref: results[ref] / results[name] for ref in ("numpy factored", "numpy dense")
                                if ref in results}
    out.update(floor_bytes=floor_bytes, bandwidth_bytes_per_s=bw, floor_ms_per_step=floor * 1e3,
               prune_same_picks=same, load_after=loadavg())
    path = args.json or HERE / "results" / f"badge_speed-{provenance['backend']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
