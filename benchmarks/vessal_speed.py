"""VeSSAL streaming speed: aljax ``volume_stream`` against a faithful per-point loop.

Baseline: the ``active_learn`` package's ``streaming_sampler`` procedure written in NumPy
(float32): per point, ``uᵀA⁻¹u``, the running covariance ``Σ̂ ← i/(i+1) Σ̂ + uuᵀ/(i+1)``, the
normaliser ``tr(Σ̂ @ A⁻¹)`` as a d × d matrix product (O(d³) per point), and on a keep the
Woodbury update ``A⁻¹ − A⁻¹u (1 + uᵀA⁻¹u)⁻¹ uᵀA⁻¹`` evaluated left to right as the package does.
aljax: ``aljax.volume_stream`` on ``FisherFactors`` (rank 1), compile timed separately.

    python benchmarks/vessal_speed.py [--classes 10 --dim 64 --loop-dims 16,32,64,128 --loop-n 10000
                                       --loop-seconds 40 --n 100000 --big-dim 512 --big-n 20000
                                       --keep 0.01 --repeats 3 --big-repeats 1 --fixed-n 20000
                                       --fixed-big-n 8192 --json PATH]

The per-point loop and aljax run on the same stream and budget at each d = C·D of ``--loop-dims``;
where the loop would take longer than ``--loop-seconds`` it is timed over the stream's first points
and extrapolated (its cost per point is flat: the O(d³) trace dominates; the JSON says where).
Results go to ``--json`` (default ``benchmarks/results/vessal_speed-<backend>.json``, with the
run's provenance) and a plot of the speed-ups by d beside it (``.png``); ``benchmarks/report.py``
turns the JSON into RESULTS.md's tables.

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
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import aljax
from aljax._vessal import _rows, _stream, covariance_of

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _provenance  # noqa: E402
import _timing  # noqa: E402
from _timing import median_seconds as median_time  # noqa: E402


def per_point_loop(rows, k, uniforms, cov_inv_scaling=100.0, max_seconds=None, stamps=None):
    """The package's procedure, one point at a time (``rows``: (N, d) float32). With
    ``max_seconds``, stops after the first point that ends past it; returns the picks and the
    number of points processed. ``stamps``, a list, receives the clock before each point."""
    n, d = rows.shape
    covariance = np.zeros((d, d), np.float32)
    covariance_inv = cov_inv_scaling * np.eye(d, dtype=np.float32)
    inds = []
    start = time.perf_counter()
    for i in range(n):
        now = time.perf_counter()
        if stamps is not None:
            stamps.append(now)
        if max_seconds is not None and i and now - start > max_seconds:
            return inds, i
        u = rows[i].reshape(-1, 1)
        norm = abs((u.T @ covariance_inv @ u).item())
        ideal_rate = (k - len(inds)) / (n - i)
        covariance = (i / (i + 1)) * covariance + (1 / (i + 1)) * (u @ u.T)
        zeta = ideal_rate / np.trace(covariance @ covariance_inv)
        if uniforms[i] < abs(zeta) * norm:
            inds.append(i)
            inner_inv = np.linalg.inv(np.eye(1, dtype=np.float32) + u.T @ covariance_inv @ u)
            covariance_inv = covariance_inv - covariance_inv @ u @ inner_inv @ u.T @ covariance_inv
    return inds, n


def fisher_stream(key, n, classes, dim):
    kp, kh = jax.random.split(key)
    probs = jax.nn.softmax(2 * jax.random.normal(kp, (n, classes)), axis=-1)
    return aljax.FisherFactors(probs, jax.random.normal(kh, (n, dim)))


def time_aljax(emb, k, repeats, runs=None):
    """(compile s, median s) of ``volume_stream``; ``runs``, a list, receives every timed run."""
    start = time.perf_counter()
    aljax.volume_stream(emb, k, key=0).block_until_ready()
    first = time.perf_counter() - start
    times = [] if runs is None else runs
    for _ in range(repeats):
        start = time.perf_counter()
        aljax.volume_stream(emb, k, key=0).block_until_ready()
        times.append(time.perf_counter() - start)
    run = float(np.median(times))
    return max(first - run, 0.0), run


def best_window_rate(stamps, window_s=1.0):
    """Points per second in the loop's fastest stretch of at least ``window_s`` (consecutive
    stretches; on a shared machine, the least contended one); None when the loop ran shorter."""
    best, begin = None, 0
    for i in range(1, len(stamps)):
        if stamps[i] - stamps[begin] >= window_s:
            rate = (i - begin) / (stamps[i] - stamps[begin])
            best = rate if best is None else max(best, rate)
            begin = i
    return best


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
          f"load average {_timing.loadavg()[0]:.1f}):", flush=True)
    entry = dict(classes=args.classes, dim=dim, d=d, n=n, k=k, repeats=repeats,
                 covariance_pass_points_per_s=n / pass_s, load_before=_timing.loadavg())
    picks = {}
    for span in (True, False):
        compile_s, run, picks[span] = time_fixed(emb, k, covariance, span, repeats)
        name = "span" if span else "dense"
        entry[name] = dict(compile_s=compile_s, median_s=run, points_per_s=n / run)
        print(f"  {name:<5} kernel {n / run:,.0f} points/s ({run:.2f} s; compile {compile_s:.1f} s; "
              f"load average {_timing.loadavg()[0]:.1f})", flush=True)
    entry["same_picks"] = bool(np.array_equal(picks[True], picks[False]))
    entry["span_speedup"] = entry["dense"]["median_s"] / entry["span"]["median_s"]
    entry["load_after"] = _timing.loadavg()
    print(f"  span / dense: {entry['span_speedup']:.1f}x; same picks: {entry['same_picks']}", flush=True)
    return entry


def loop_comparison(args, dim):
    """The per-point loop against aljax on the same stream and budget at d = C·dim."""
    n, d = args.loop_n, args.classes * dim
    emb = fisher_stream(jax.random.key(0), n, args.classes, dim)
    k = max(1, int(args.keep * n))
    rows = np.asarray(_rows.dense_rows(emb, 1, jnp.float32)[:, 0])
    uniforms = np.random.default_rng(0).uniform(size=n)
    load_before = _timing.loadavg()
    stamps = []
    start = time.perf_counter()
    _, done = per_point_loop(rows, k, uniforms, max_seconds=args.loop_seconds, stamps=stamps)
    loop_timed = time.perf_counter() - start
    loop_s = loop_timed * n / done                   # per-point cost is flat: the trace dominates
    runs = []
    compile_s, fast = time_aljax(emb, k, args.repeats, runs)
    # On a shared machine both sides also get a least-contended figure: the loop's fastest
    # one-second stretch, aljax's fastest run.
    best_loop = best_window_rate(stamps) or n / loop_s
    entry = dict(classes=args.classes, dim=dim, d=d, n=n, k=k, repeats=args.repeats,
                 loop=dict(points_timed=done, seconds_timed=loop_timed, total_s=loop_s, points_per_s=n / loop_s,
                           best_points_per_s=best_loop, extrapolated=done < n),
                 aljax=dict(compile_s=compile_s, median_s=fast, points_per_s=n / fast, runs_s=runs,
                            best_points_per_s=n / min(runs)),
                 speedup=loop_s / fast, speedup_best=(n / min(runs)) / best_loop,
                 load_before=load_before, load_after=_timing.loadavg())
    how = "" if done == n else f" (timed over its first {done:,} points)"
    print(f"d = {d}, stream {n:,}, k = {k}: per-point loop {n / loop_s:,.1f} points/s{how}, "
          f"aljax {n / fast:,.0f} points/s (compile {compile_s:.1f} s) -> {entry['speedup']:,.0f}x; best of each: "
          f"{best_loop:,.1f} and {n / min(runs):,.0f} points/s -> {entry['speedup_best']:,.0f}x", flush=True)
    return entry


def stream_throughput(args, dim, n, repeats):
    emb = fisher_stream(jax.random.key(1), n, args.classes, dim)
    k = max(1, int(args.keep * n))
    load_before = _timing.loadavg()
    compile_s, fast = time_aljax(emb, k, repeats)
    print(f"d = {args.classes * dim}, stream {n:,}, k = {k:,}: aljax {n / fast:,.0f} points/s "
          f"({fast:.2f} s; compile {compile_s:.1f} s; load average {_timing.loadavg()[0]:.1f})", flush=True)
    return dict(classes=args.classes, dim=dim, d=args.classes * dim, n=n, k=k, repeats=repeats, compile_s=compile_s,
                median_s=fast, points_per_s=n / fast, load_before=load_before, load_after=_timing.loadavg())


def plot(data, path):
    """Points per second of the per-point loop and of aljax, and the speed-up, by d (from the JSON).
    False (nothing drawn) when the JSON has no loop comparison."""
    if not data.get("loop"):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = sorted(data["loop"], key=lambda e: e["d"])
    d = [e["d"] for e in entries]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.loglog(d, [e["loop"]["points_per_s"] for e in entries], "o-", label="per-point loop (active_learn)")
    left.loglog(d, [e["aljax"]["points_per_s"] for e in entries], "s-", label="aljax volume_stream")
    left.set_xticks(d, [str(x) for x in d])
    left.minorticks_off()
    left.set_xlabel("d = C·D")
    left.set_ylabel("points / s")
    left.legend(fontsize=8)
    left.set_title(f"stream of {entries[0]['n']:,} points, k = {entries[0]['k']}", fontsize=9)
    x = np.arange(len(entries))
    series = [("speedup", "medians (loop: its whole timed span)")]
    if all("speedup_best" in e for e in entries):
        series.append(("speedup_best", "best of each (least contended)"))
    width = 0.8 / len(series)
    for j, (key, name) in enumerate(series):
        offset = (j - (len(series) - 1) / 2) * width
        bars = right.bar(x + offset, [e[key] for e in entries], width, label=name)
        for bar, e in zip(bars, entries):
            right.annotate(f"{e[key]:,.0f}×" + ("*" if e["loop"]["extrapolated"] else ""),
                           (bar.get_x() + bar.get_width() / 2, e[key]), ha="center", va="bottom", fontsize=7)
    right.set_xticks(x, [str(v) for v in d])
    right.set_yscale("log")
    right.set_ylim(1, max(e[key] for e in entries for key, _ in series) * 4)   # bars start at 1× (no gain)
    right.legend(fontsize=7, loc="upper left")
    right.set_xlabel("d = C·D")
    right.set_ylabel("speed-up over the per-point loop")
    prov = data["provenance"]
    right.set_title(f"VeSSAL ({prov.get('backend')}, {prov.get('cpu_count')} CPUs)", fontsize=9)
    if any(e["loop"]["extrapolated"] for e in entries):
        fig.text(0.01, 0.01, "* loop timed over the first points of the stream, extrapolated to all of it",
                 fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64, help="penultimate width D for d = C·D (640)")
    parser.add_argument("--loop-dims", default="16,32,64,128",
                        help="D values (d = C·D) at which the per-point loop and aljax are compared")
    parser.add_argument("--loop-n", type=int, default=10_000,
                        help="stream length for the per-point loop against aljax")
    parser.add_argument("--loop-seconds", type=float, default=40.0,
                        help="time the loop over at most about this long, then extrapolate to the stream")
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
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/vessal_speed-<backend>.json)")
    args = parser.parse_args(argv)
    provenance = _provenance.collect([sys.argv[0], *argv])
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"internal chunk {_rows.CHUNK}, {os.cpu_count()} CPUs, load average {_timing.loadavg()[0]:.1f}", flush=True)
    data = {"provenance": provenance, "benchmark": "vessal_speed", "chunk": _rows.CHUNK, "keep": args.keep,
            "fixed": [], "loop": [], "stream": []}
    for dim, n in ((args.dim, args.fixed_n), (args.big_dim, args.fixed_big_n)):
        if n > 0:
            data["fixed"].append(fixed_covariance(args, dim, n, args.repeats if dim == args.dim else args.big_repeats))
    if not args.only_fixed:
        for dim in (int(x) for x in args.loop_dims.split(",") if x):
            data["loop"].append(loop_comparison(args, dim))
        for dim, n, repeats in ((args.dim, args.n, args.repeats), (args.big_dim, args.big_n, args.big_repeats)):
            if n > 0:
                data["stream"].append(stream_throughput(args, dim, n, repeats))
    path = args.json or HERE / "results" / f"vessal_speed-{provenance['backend']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    written = [path]
    if plot(data, path.with_suffix(".png")) is not False:
        written.append(path.with_suffix(".png"))
    print("\nwrote " + " and ".join(map(str, written)))


if __name__ == "__main__":
    main()
