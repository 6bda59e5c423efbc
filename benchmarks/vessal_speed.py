"""VeSSAL streaming speed: aljax ``volume_stream`` against a faithful per-point loop.

Baseline: the ``active_learn`` package's ``streaming_sampler`` procedure written in NumPy
(float32): per point, ``uᵀA⁻¹u``, the running covariance ``Σ̂ ← i/(i+1) Σ̂ + uuᵀ/(i+1)``, the
normaliser ``tr(Σ̂ @ A⁻¹)`` as a d × d matrix product (O(d³) per point), and on a keep the
Woodbury update ``A⁻¹ − A⁻¹u (1 + uᵀA⁻¹u)⁻¹ uᵀA⁻¹`` evaluated left to right as the package does.
aljax: ``aljax.volume_stream`` on ``FisherFactors`` (rank 1), compile timed separately.

    python benchmarks/vessal_speed.py [--classes 10 --dim 64 --loop-n 2000 --n 100000
                                       --big-dim 512 --big-n 20000 --keep 0.01 --repeats 3
                                       --big-repeats 1 --fixed-n 20000 --fixed-big-n 8192]

At d = 5,120 the work per point is two d × d matrix products (``X A⁻¹`` and ``XᵀX``, about
2·10⁸ flops a point) plus one ``S Wᵀ`` matrix-vector product per keep, so the default big stream
is kept short.

Fixed covariance (``covariance=`` / ``precompute_covariance=True``): the dense kernel against
the span-of-kept-points kernel, forced through the private driver on the same stream, key and
``Σ̂`` (``covariance_of`` the stream, the mean ``UᵀU``, whose one-pass construction is timed on
its own), at
d = C·dim and d = C·big-dim; the picks of the two are compared.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import aljax
from aljax._vessal import _rows, _stream, covariance_of

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import median_seconds as median_time  # noqa: E402


def per_point_loop(rows, k, uniforms, cov_inv_scaling=100.0):
    """The package's procedure, one point at a time (``rows``: (N, d) float32)."""
    n, d = rows.shape
    covariance = np.zeros((d, d), np.float32)
    covariance_inv = cov_inv_scaling * np.eye(d, dtype=np.float32)
    inds = []
    for i in range(n):
        u = rows[i].reshape(-1, 1)
        norm = abs((u.T @ covariance_inv @ u).item())
        ideal_rate = (k - len(inds)) / (n - i)
        covariance = (i / (i + 1)) * covariance + (1 / (i + 1)) * (u @ u.T)
        zeta = ideal_rate / np.trace(covariance @ covariance_inv)
        if uniforms[i] < abs(zeta) * norm:
            inds.append(i)
            inner_inv = np.linalg.inv(np.eye(1, dtype=np.float32) + u.T @ covariance_inv @ u)
            covariance_inv = covariance_inv - covariance_inv @ u @ inner_inv @ u.T @ covariance_inv
    return inds


def fisher_stream(key, n, classes, dim):
    kp, kh = jax.random.split(key)
    probs = jax.nn.softmax(2 * jax.random.normal(kp, (n, classes)), axis=-1)
    return aljax.FisherFactors(probs, jax.random.normal(kh, (n, dim)))


def time_aljax(emb, k, repeats):
    start = time.perf_counter()
    aljax.volume_stream(emb, k, key=0).block_until_ready()
    first = time.perf_counter() - start
    run = median_time(lambda: aljax.volume_stream(emb, k, key=0).block_until_ready(), repeats)
    return max(first - run, 0.0), run


def time_fixed(emb, k, covariance, span, repeats):
    """(compile s, median run s, picks) of the private driver with the kernel forced."""
    def select():
        return _stream.run(jax.random.key(0), _rows.array_blocks(emb, emb.n), d=emb.dim, rank=1,
                           dtype=jnp.float32, budget=k, rate=None, total=emb.n, lamb=0.01,
                           covariance=covariance, span=span).block_until_ready()

    start = time.perf_counter()
    picks = select()
    first = time.perf_counter() - start
    run = median_time(select, repeats)
    return max(first - run, 0.0), run, np.asarray(picks)


def fixed_covariance(args, dim, n, repeats):
    emb = fisher_stream(jax.random.key(2), n, args.classes, dim)
    d, k = args.classes * dim, max(1, int(args.keep * n))
    start = time.perf_counter()
    covariance = covariance_of(emb, None, 1).block_until_ready()
    pass_s = time.perf_counter() - start
    print(f"d = {d}, stream {n:,}, k = {k:,}, fixed covariance (its pass: {n / pass_s:,.0f} points/s, "
          f"load average {os.getloadavg()[0]:.1f}):")
    results = {}
    for span in (True, False):
        compile_s, run, picks = time_fixed(emb, k, covariance, span, repeats)
        results[span] = (run, picks)
        print(f"  {'span ' if span else 'dense'} kernel {n / run:,.0f} points/s ({run:.2f} s; compile "
              f"{compile_s:.1f} s; load average {os.getloadavg()[0]:.1f})")
    same = np.array_equal(results[True][1], results[False][1])
    print(f"  span / dense: {results[False][0] / results[True][0]:.1f}x; same picks: {same}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64, help="penultimate width D for d = C·D (640)")
    parser.add_argument("--loop-n", type=int, default=2000, help="stream length for the per-point loop")
    parser.add_argument("--n", type=int, default=100_000, help="stream length for aljax at d = C·dim")
    parser.add_argument("--big-dim", type=int, default=512, help="D for the large case (d = 5,120)")
    parser.add_argument("--big-n", type=int, default=20_000, help="stream length at d = C·big-dim (0: skip)")
    parser.add_argument("--keep", type=float, default=0.01, help="budget as a fraction of the stream")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-repeats", type=int, default=1, help="timed runs at d = C·big-dim")
    parser.add_argument("--fixed-n", type=int, default=20_000,
                        help="stream length, fixed covariance at d = C·dim (0: skip)")
    parser.add_argument("--fixed-big-n", type=int, default=8192,
                        help="stream length, fixed covariance at d = C·big-dim (0: skip)")
    parser.add_argument("--only-fixed", action="store_true", help="run the fixed-covariance comparison only")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"internal chunk {_rows.CHUNK}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    d = args.classes * args.dim
    for dim, n in ((args.dim, args.fixed_n), (args.big_dim, args.fixed_big_n)):
        if n > 0:
            fixed_covariance(args, dim, n, args.repeats if dim == args.dim else args.big_repeats)
    if args.only_fixed:
        return

    # Same stream, same budget: the per-point loop against aljax.
    emb = fisher_stream(jax.random.key(0), args.loop_n, args.classes, args.dim)
    k = max(1, int(args.keep * args.loop_n))
    rows = np.asarray(_rows.dense_rows(emb, 1, jnp.float32)[:, 0])
    uniforms = np.random.default_rng(0).uniform(size=args.loop_n)
    loop = median_time(lambda: per_point_loop(rows, k, uniforms), 1)
    compile_s, fast = time_aljax(emb, k, args.repeats)
    print(f"d = {d}, stream {args.loop_n}, k = {k}: per-point loop {args.loop_n / loop:,.0f} points/s, "
          f"aljax {args.loop_n / fast:,.0f} points/s (compile {compile_s:.1f} s) -> {loop / fast:,.0f}x")

    for dim, n, repeats in ((args.dim, args.n, args.repeats), (args.big_dim, args.big_n, args.big_repeats)):
        if n <= 0:
            continue
        emb = fisher_stream(jax.random.key(1), n, args.classes, dim)
        k = max(1, int(args.keep * n))
        compile_s, fast = time_aljax(emb, k, repeats)
        print(f"d = {args.classes * dim}, stream {n:,}, k = {k:,}: aljax {n / fast:,.0f} points/s "
              f"({fast:.2f} s; compile {compile_s:.1f} s; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
