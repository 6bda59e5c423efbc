"""Time and peak memory of the cold start selectors (TypiClust, ProbCover) on a large pool.

    python benchmarks/coldstart.py --n 100000 --d 128 --k 100 --method probcover --delta 0.6
    python benchmarks/coldstart.py --n 100000 --d 128 --k 100 --method probcover --n-classes 10
    python benchmarks/coldstart.py --n 100000 --d 128 --k 100 --method typiclust

The pool: L2-normalised Gaussian blobs (``--n-classes`` of them, 10 by default; the papers work on
normalised self-supervised features). One process per run, so that the peak resident memory
(``ru_maxrss``) is that of the run alone; the first call (compilation included) and a second one
(compiled) are timed, each with ``jax.block_until_ready``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

import aljax


def _pool(n: int, d: int, classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    x = centres[rng.integers(0, classes, n)] + 0.8 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--method", choices=["typiclust", "probcover"], default="probcover")
    parser.add_argument("--delta", type=float, default=None, help="ProbCover's δ; default: the purity rule")
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="calls timed (the first compiles)")
    args = parser.parse_args()

    emb = jnp.asarray(_pool(args.n, args.d, args.n_classes))
    if args.method == "typiclust":
        call = lambda: aljax.typiclust(emb, args.k, key=0)  # noqa: E731
    elif args.delta is None:
        call = lambda: aljax.probcover(emb, args.k, key=0, n_classes=args.n_classes)  # noqa: E731
    else:
        call = lambda: aljax.probcover(emb, args.k, key=0, delta=args.delta)  # noqa: E731
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        picks = jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "method": args.method, "n": args.n, "d": args.d, "k": args.k, "delta": args.delta,
        "n_classes": args.n_classes, "device": str(jax.devices()[0]), "cpus": os.cpu_count(),
        "first_call_s": round(times[0], 2), "compiled_s": [round(t, 2) for t in times[1:]],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_avg": os.getloadavg(), "unique_picks": int(len(set(np.asarray(picks).tolist()))),
    }))


if __name__ == "__main__":
    main()
