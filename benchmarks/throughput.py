"""Throughput of every aljax algorithm, from small pools to a 1,000,000-point pool.

One entry point, the same command on CPU, GPU and TPU (no device-specific code path):

    python benchmarks/throughput.py                          # sizes small,medium (minutes on a 2-core CPU)
    python benchmarks/throughput.py --sizes tiny --repeats 1 # seconds: a smoke run
    python benchmarks/throughput.py --sizes large            # n = 1,000,000 selectors: for accelerators
    python benchmarks/throughput.py --sizes '' --huge        # BADGE, 1,000,000 raw inputs streamed (minutes)
    python benchmarks/throughput.py --processes 2 --sizes tiny  # across 2 local processes (jax.distributed)

Cases (C = 10 classes throughout; sizes in ``SIZES``):

* ``last_layer_embedding`` / ``fisher_embedding``: the embedding pass of an MLP
  (in 64 → ReLU D → 10) over an ``(n, 64)`` pool, points/s.
* ``kmeans_pp``: BADGE's selector on :class:`aljax.Factored` ``(n, C) + (n, D)``, ms per step and
  the ratio to the memory-bandwidth floor: each step must read the ``n·(C + D)`` float32 factors
  once, so a step cannot take less than those bytes over the streaming bandwidth of a jitted
  reduction measured in the same run (an H100 reads ≈ 3 TB/s: 1M × 522 float32 ≈ 0.7 ms/step).
* ``badge``: ``aljax.badge(params, apply_fn, pool, k)`` end to end (embedding + selection).
* ``fisher_greedy``: BAIT's selector on :class:`aljax.FisherFactors` (smaller n and D: its
  steps cost ``O(n·C²·D + C·(C·D)²)``).
* ``volume_stream``: VeSSAL over a rank-1 Fisher stream (d = C·D), points/s.
* ``k_center_greedy``: core-set on ``(n, D)`` features, ms per step.
* ``margin``: ``aljax.margin`` front door (forward pass + top-k), points/s.
* ``typiclust``, ``probcover`` (δ = 0.6 given) and ``probcover_purity`` (δ by the purity rule,
  ``n_classes=10``): the cold start selectors on ``(n, D)`` L2-normalised Gaussian blobs (10 of
  them), nothing labeled, points/s (their own n, D, k: 100,000 × 128, k = 100 at ``medium``).
* ``hac_clustering``: Cluster-Margin's clustering (average-linkage HAC at a distance threshold) of
  ``(n, D)`` Gaussian blobs (``CLUSTER_BLOBS`` centres of spread 10, unit noise, threshold 40):
  exact up to 8,192 points, two-level beyond (4,096 k-means++ centres, then HAC over them);
  points/s and peak memory. ``large`` is the 1,000,000 × 128 pool.
* ``cluster_margin``: one Cluster-Margin round on that pool's clustering (computed once, outside
  the timing): :func:`aljax.margin_round_robin` on ``(n, C)`` logits, ``margin_multiple = 10``.

Every timing: JAX's compilation caches cleared, one warm-up call (its extra cost over the median
is reported as ``compile_s``: tracing and compilation), then the median of ``--repeats`` calls,
each wrapped in ``jax.block_until_ready``. Peak resident memory per case (``peak_rss_bytes``): the
process's ``VmHWM`` after the case, reset before it (``/proc/self/clear_refs``) where Linux allows
(``peak_rss_reset``); it includes what the process held before the case (JAX, the other inputs).

``--huge``: BADGE over a 1,000,000-point pool (C = 10, D = 512, k = 1,000) whose raw inputs are
never held: the pool is a generator of seeded ``(8192, 64)`` batches. Runs in child processes so
peak memory (``VmHWM``, and ``ru_maxrss`` of the children) is that of the run alone: one child
times ``last_layer_embedding`` (the embedding pass) and ``kmeans_pp`` (the selection) apart,
a second ``aljax.badge`` end to end (``--huge-end-to-end``).

``--processes P``: the same cases across P processes (``_multiprocess.py``): each case on the
global pool spread over every process's devices and on one process's part alone, per-step
selectors as ms/step both ways, next to the time of one all-reduce of the bytes a step exchanges;
written to ``throughput-<backend>-processes<P>.json``.

Results go to ``benchmarks/results/throughput-<backend>.json`` (merged with the entries of earlier
runs of other sizes; each entry carries the load average around it and the provenance of the run
that made it, see ``_provenance.py``), and the plot of BADGE's step time against the memory floor
to ``throughput-<backend>-floor.png`` beside it. ``benchmarks/report.py`` writes RESULTS.md's
tables from the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _multiprocess  # noqa: E402
import _provenance  # noqa: E402
import _timing  # noqa: E402

import aljax  # noqa: E402

CLASSES = 10
IN_DIM = 64

# Per size: the pool (n, D, k) for the embedding pass, BADGE, core-set and margin; BAIT and VeSSAL
# get their own (n, D, k): their cost grows with (C·D)², so they run at a smaller D.
SIZES = {
    "tiny": dict(n=1_000, dim=32, k=10, bait=(500, 16, 5), vessal=(1_000, 16, 10), coldstart=(1_000, 16, 10),
                 cluster=(1_000, 16, 10)),
    "small": dict(n=10_000, dim=512, k=100, bait=(2_000, 64, 20), vessal=(10_000, 64, 100),
                  coldstart=(10_000, 128, 100), cluster=(10_000, 128, 100)),
    "medium": dict(n=50_000, dim=512, k=500, bait=(10_000, 128, 100), vessal=(50_000, 64, 500),
                   coldstart=(100_000, 128, 100), cluster=(100_000, 128, 1_000)),
    "large": dict(n=1_000_000, dim=512, k=1_000, bait=(50_000, 512, 100), vessal=(1_000_000, 64, 1_000),
                  coldstart=(1_000_000, 128, 100), cluster=(1_000_000, 128, 10_000)),
}
ALGORITHMS = ("last_layer_embedding", "fisher_embedding", "kmeans_pp", "badge", "fisher_greedy",
              "volume_stream", "k_center_greedy", "margin", "typiclust", "probcover", "probcover_purity",
              "hac_clustering", "cluster_margin")
COLDSTART = ("typiclust", "probcover", "probcover_purity")
# The cold start pool: L2-normalised Gaussian blobs (as in benchmarks/coldstart.py), and ProbCover's
# δ when given (on this pool, balls of radius 0.6 hold a few hundred points each at n = 100,000).
BLOBS = 10
PROBCOVER_DELTA = 0.6
MARKER = "THROUGHPUT-CHILD-RESULT "
# Cluster-Margin's pool: Gaussian blobs around this many centres, and the clustering's threshold
# (between-centre distances ≈ 10·√(2D), within-blob ≈ √(2D): 160 and 16 at D = 128).
CLUSTER_BLOBS = 1_000
CLUSTER_THRESHOLD = 40.0


# ---------------------------------------------------------------------------------------------
# Model and data


def apply_fn(params, x):
    """The benchmark's MLP: ``relu(x W1 + b1) W2 + b2``; the penultimate width is ``W1``'s."""
    return jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def make_params(dim: int, seed: int = 0) -> dict:
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {
        "w1": jax.random.normal(k1, (IN_DIM, dim)) / math.sqrt(IN_DIM),
        "b1": 0.1 * jax.random.normal(k2, (dim,)),
        # Logits of standard deviation ≈ 2: a mix of confident and uncertain points.
        "w2": 3.0 * jax.random.normal(k3, (dim, CLASSES)) / math.sqrt(dim),
        "b2": jnp.zeros((CLASSES,)),
    }


def make_pool(n: int, seed: int = 1) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (n, IN_DIM))


def make_factored(n: int, dim: int, seed: int = 2) -> aljax.Factored:
    kl, kh = jax.random.split(jax.random.key(seed))
    logits = 2.0 * jax.random.normal(kl, (n, CLASSES))
    probs = jax.nn.softmax(logits, axis=-1)
    a = probs - jax.nn.one_hot(jnp.argmax(logits, axis=-1), CLASSES)
    return aljax.Factored(a, jax.nn.relu(jax.random.normal(kh, (n, dim))))


def make_fisher(n: int, dim: int, seed: int = 3) -> aljax.FisherFactors:
    kl, kh = jax.random.split(jax.random.key(seed))
    probs = jax.nn.softmax(2.0 * jax.random.normal(kl, (n, CLASSES)), axis=-1)
    return aljax.FisherFactors(probs, jnp.abs(jax.random.normal(kh, (n, dim))) / math.sqrt(dim))


def make_blobs(n: int, dim: int, seed: int = 5) -> jax.Array:
    """``(n, dim)`` L2-normalised points around ``BLOBS`` Gaussian centres (noise 0.8 per coordinate)."""
    kc, ka, kn = jax.random.split(jax.random.key(seed), 3)
    centres = jax.random.normal(kc, (BLOBS, dim))
    x = centres[jax.random.randint(ka, (n,), 0, BLOBS)] + 0.8 * jax.random.normal(kn, (n, dim))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def make_cluster_pool(n: int, dim: int, seed: int = 6) -> jax.Array:
    """``(n, dim)`` points around ``CLUSTER_BLOBS`` centres of spread 10, unit noise (not normalised)."""
    kc, ka, kn = jax.random.split(jax.random.key(seed), 3)
    centres = 10.0 * jax.random.normal(kc, (CLUSTER_BLOBS, dim))
    return centres[jax.random.randint(ka, (n,), 0, CLUSTER_BLOBS)] + jax.random.normal(kn, (n, dim))


def raw_batches(n: int, batch: int, seed: int = 1):
    """The ``--huge`` pool: ``n`` raw ``(·, 64)`` float32 inputs, ``batch`` at a time, from a
    seeded NumPy generator; nothing but the current batch is ever held."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        yield rng.standard_normal((min(batch, n - start), IN_DIM), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# The cases


def _case(algorithm, fn, *, n, dim, k=None, per="point", **extra):
    return dict(algorithm=algorithm, fn=fn, n=n, dim=dim, k=k, per=per, **extra)


def size_cases(cfg: dict, wanted: set[str]):
    """``(algorithm, thunk, description)`` for one size; data is built lazily per algorithm so at
    most one case's inputs are alive at a time."""
    n, dim, k = cfg["n"], cfg["dim"], cfg["k"]
    if wanted & {"last_layer_embedding", "fisher_embedding", "badge", "margin"}:
        params, pool = make_params(dim), make_pool(n)
        if "last_layer_embedding" in wanted:
            yield _case("last_layer_embedding", lambda: aljax.last_layer_embedding(params, apply_fn, pool),
                        n=n, dim=dim)
        if "fisher_embedding" in wanted:
            yield _case("fisher_embedding", lambda: aljax.fisher_embedding(params, apply_fn, pool), n=n, dim=dim)
        if "badge" in wanted:
            yield _case("badge", lambda: aljax.badge(params, apply_fn, pool, k, key=1), n=n, dim=dim, k=k)
        if "margin" in wanted:
            yield _case("margin", lambda: aljax.margin(params, apply_fn, pool, k), n=n, dim=dim, k=k)
        del params, pool
    if wanted & {"kmeans_pp", "k_center_greedy"}:
        emb = make_factored(n, dim)
        if "kmeans_pp" in wanted:
            yield _case("kmeans_pp", lambda: aljax.kmeans_pp(emb, k, key=1), n=n, dim=dim, k=k, per="step",
                        floor_bytes=n * (CLASSES + dim) * 4)
        if "k_center_greedy" in wanted:
            features = emb.h
            yield _case("k_center_greedy", lambda: aljax.k_center_greedy(features, k), n=n, dim=dim, k=k,
                        per="step")
        del emb
    if "fisher_greedy" in wanted:
        nb, db, kb = cfg["bait"]
        fisher = make_fisher(nb, db)
        yield _case("fisher_greedy", lambda: aljax.fisher_greedy(fisher, kb), n=nb, dim=db, k=kb, per="pick")
        del fisher
    if "volume_stream" in wanted:
        nv, dv, kv = cfg["vessal"]
        stream = make_fisher(nv, dv, seed=4)
        yield _case("volume_stream", lambda: aljax.volume_stream(stream, kv, key=2), n=nv, dim=dv, k=kv)
        del stream
    if wanted & set(COLDSTART):
        nc, dc, kc = cfg["coldstart"]
        blobs = make_blobs(nc, dc)
        if "typiclust" in wanted:
            yield _case("typiclust", lambda: aljax.typiclust(blobs, kc, key=3), n=nc, dim=dc, k=kc)
        if "probcover" in wanted:
            yield _case("probcover", lambda: aljax.probcover(blobs, kc, key=3, delta=PROBCOVER_DELTA), n=nc, dim=dc,
                        k=kc, delta=PROBCOVER_DELTA)
        if "probcover_purity" in wanted:
            yield _case("probcover_purity", lambda: aljax.probcover(blobs, kc, key=3, n_classes=BLOBS), n=nc,
                        dim=dc, k=kc, n_classes=BLOBS)
        del blobs
    if wanted & {"hac_clustering", "cluster_margin"}:
        nh, dh, kh = cfg["cluster"]
        feats = make_cluster_pool(nh, dh)
        if "hac_clustering" in wanted:
            yield _case("hac_clustering", lambda: aljax.hac_clustering(feats, threshold=CLUSTER_THRESHOLD, key=4),
                        n=nh, dim=dh, threshold=CLUSTER_THRESHOLD)
        if "cluster_margin" in wanted:
            clustering = aljax.hac_clustering(feats, threshold=CLUSTER_THRESHOLD, key=4)
            logits = 2.0 * jax.random.normal(jax.random.key(7), (nh, CLASSES))
            yield _case("cluster_margin", lambda: aljax.margin_round_robin(logits, kh, key=5, clustering=clustering,
                                                                          margin_multiple=10.0),
                        n=nh, dim=dh, k=kh, clusters=int(clustering.n_clusters))
            del clustering, logits
        del feats


def process_cases(cfg: dict, wanted: set[str]):
    """The cases of ``--processes``: ``call(data)`` runs on a pool laid out by the caller (global
    over every process, or one process's part alone), ``data`` is the whole pool on the host."""
    n, dim, k = cfg["n"], cfg["dim"], cfg["k"]
    params = make_params(dim)
    front = {"last_layer_embedding": lambda p: aljax.last_layer_embedding(params, apply_fn, p),
             "badge": lambda p: aljax.badge(params, apply_fn, p, k, key=1),
             "margin": lambda p: aljax.margin(params, apply_fn, p, k)}
    for name, call in front.items():
        if name in wanted:
            yield dict(algorithm=name, n=n, dim=dim, k=k, call=call, data=np.asarray(make_pool(n)))
    if "kmeans_pp" in wanted:
        yield dict(algorithm="kmeans_pp", n=n, dim=dim, k=k, call=lambda e: aljax.kmeans_pp(e, k, key=1),
                   data=jax.tree_util.tree_map(np.asarray, make_factored(n, dim)))
    if "k_center_greedy" in wanted:
        yield dict(algorithm="k_center_greedy", n=n, dim=dim, k=k, call=lambda f: aljax.k_center_greedy(f, k),
                   data=np.asarray(make_factored(n, dim).h))
    if "fisher_greedy" in wanted:
        nb, db, kb = cfg["bait"]
        yield dict(algorithm="fisher_greedy", n=nb, dim=db, k=kb, call=lambda e: aljax.fisher_greedy(e, kb),
                   data=jax.tree_util.tree_map(np.asarray, make_fisher(nb, db)))
    if "volume_stream" in wanted:
        nv, dv, kv = cfg["vessal"]
        yield dict(algorithm="volume_stream", n=nv, dim=dv, k=kv, call=lambda e: aljax.volume_stream(e, kv, key=2),
                   data=jax.tree_util.tree_map(np.asarray, make_fisher(nv, dv, seed=4)))


def run_size(name: str, cfg: dict, wanted: set[str], repeats: int) -> list[dict]:
    results = []
    bandwidth = None
    for case in size_cases(cfg, wanted):
        fn = case.pop("fn")
        # Every case pays its own compilation (kernels shared between cases, such as the head of
        # both embedding passes or kmeans_pp inside badge, would otherwise compile only once).
        jax.clear_caches()
        load_before = _timing.loadavg()
        peak_reset = _timing.reset_peak_rss()
        timing = _timing.measure(fn, repeats)
        entry = dict(size=name, classes=CLASSES, **case, **timing, repeats=repeats,
                     peak_rss_bytes=_timing.peak_rss_bytes(), peak_rss_reset=peak_reset,
                     load_before=load_before, load_after=_timing.loadavg(),
                     measured_at=datetime.datetime.now().isoformat(timespec="seconds"))
        median = timing["median_s"]
        if case["per"] == "point":
            entry["points_per_s"] = case["n"] / median
        else:
            entry["ms_per_" + case["per"]] = median / case["k"] * 1e3
        if "floor_bytes" in case:
            if bandwidth is None:
                bandwidth = _timing.streaming_bandwidth(case["floor_bytes"], repeats)
            floor_step = case["floor_bytes"] / bandwidth["bytes_per_s"]
            entry.update(bandwidth_bytes_per_s=bandwidth["bytes_per_s"], bandwidth_method=bandwidth["method"],
                         floor_ms_per_step=floor_step * 1e3,
                         floor_ratio=median / case["k"] / floor_step)
        results.append(entry)
        print(format_entry(entry), flush=True)
    return results


def format_entry(e: dict) -> str:
    shape = f"n={e['n']:>9,} D={e['dim']:>4}" + (f" k={e['k']:>5,}" if e.get("k") else " " * 8)
    if "points_per_s" in e:
        rate = f"{e['points_per_s']:>12,.0f} points/s"
    else:
        per = e["per"]
        rate = f"{e['ms_per_' + per]:>9.3f} ms/{per:<5}"
    line = (f"{e['size']:>6} {e['algorithm']:>20} {shape}  median {e['median_s']:9.4f} s  "
            f"compile {e['compile_s']:7.2f} s  {rate}")
    if "floor_ratio" in e:
        line += (f"  floor {e['floor_ms_per_step']:.3f} ms/step at {e['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s"
                 f" → {e['floor_ratio']:.2f}× floor")
    if e.get("peak_rss_bytes"):
        line += f"  peak memory {e['peak_rss_bytes'] / 2**30:.2f} GiB"
    return line


# ---------------------------------------------------------------------------------------------
# The 1,000,000-point run (child processes)


def huge_child(mode: str, n: int, k: int, batch: int, dim: int) -> dict:
    """Run in a child process: BADGE over ``n`` streamed raw inputs; returns the figures."""
    params = make_params(dim)
    device = jax.devices()[0]
    out = dict(mode=mode, n=n, k=k, batch=batch, classes=CLASSES, dim=dim, in_dim=IN_DIM,
               backend=jax.default_backend(), device_kind=device.device_kind, load_before=_timing.loadavg())
    if mode == "split":
        # The embedding pass is compiled on a short stream of the same batch shape, and the
        # selection ahead of time (the public kmeans_pp under jit: same picks, validation of
        # values skipped), so both timings below are steady-state; compilation is reported apart.
        warm, _ = _timing.run_blocked(lambda: aljax.last_layer_embedding(
            params, apply_fn, raw_batches(2 * batch, batch, seed=9), batch_size=batch))
        out["embedding_warmup_s"] = warm
        emb_shape = aljax.Factored(jax.ShapeDtypeStruct((n, CLASSES), jnp.float32),
                                   jax.ShapeDtypeStruct((n, dim), jnp.float32))
        start = time.perf_counter()
        select = jax.jit(lambda e: aljax.kmeans_pp(e, k, key=0)).lower(emb_shape).compile()
        out["selection_compile_s"] = time.perf_counter() - start
        seconds, emb = _timing.run_blocked(
            lambda: aljax.last_layer_embedding(params, apply_fn, raw_batches(n, batch), batch_size=batch))
        out["embedding_s"] = seconds
        out["factored_bytes"] = int(emb.a.nbytes + emb.h.nbytes)
        out["peak_rss_after_embedding_bytes"] = _timing.peak_rss_bytes()
        seconds, picks = _timing.run_blocked(lambda: select(emb))
        out["selection_s"] = seconds
        out["total_s"] = out["embedding_s"] + out["selection_s"]
    else:
        # As a user meets it: one cold call, compilation included.
        seconds, picks = _timing.run_blocked(
            lambda: aljax.badge(params, apply_fn, raw_batches(n, batch), k, key=0, batch_size=batch))
        out["badge_s"] = seconds
    picks = np.asarray(picks)
    out["peak_rss_bytes"] = _timing.peak_rss_bytes()
    out["device_peak_bytes"] = _timing.device_peak_bytes()
    if mode == "split":
        # The floor: each k-means++ step reads the factors once. The bandwidth buffer is allocated
        # after the peak memory above was read (and the embedding freed), so it does not count.
        del emb
        bandwidth = _timing.streaming_bandwidth(out["factored_bytes"])
        floor_step = out["factored_bytes"] / bandwidth["bytes_per_s"]
        out.update(bandwidth_bytes_per_s=bandwidth["bytes_per_s"], bandwidth_method=bandwidth["method"],
                   floor_ms_per_step=floor_step * 1e3, floor_ratio=out["selection_s"] / k / floor_step)
    out["picks_unique"] = int(np.unique(picks).size)
    out["picks_head"] = picks[:10].tolist()
    out["picks_checksum"] = int(picks.astype(np.int64).sum())
    out["load_after"] = _timing.loadavg()
    return out


def run_huge(args) -> dict:
    modes = ["split"] + (["badge"] if args.huge_end_to_end else [])
    dim = 512
    report = {"n": args.huge_n, "k": args.huge_k, "batch": args.huge_batch,
              "dense_embedding_bytes": args.huge_n * CLASSES * dim * 4,
              "measured_at": datetime.datetime.now().isoformat(timespec="seconds")}
    for mode in modes:
        cmd = [sys.executable, os.path.abspath(__file__), "--huge-child", mode, "--huge-n", str(args.huge_n),
               "--huge-k", str(args.huge_k), "--huge-batch", str(args.huge_batch)]
        print(f"\n--huge ({mode}): n={args.huge_n:,} C={CLASSES} D={dim} k={args.huge_k:,}, pool streamed in "
              f"batches of {args.huge_batch:,} (child process; load {_timing.loadavg()})", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"--huge ({mode}) child failed with exit code {proc.returncode}")
        line = next(l for l in proc.stdout.splitlines() if l.startswith(MARKER))
        result = json.loads(line[len(MARKER):])
        result["child_wall_s"] = wall
        # The largest peak resident set of the children waited for so far (for the first child:
        # this one's; it cross-checks the child's own VmHWM).
        result["children_max_rss_bytes"] = _timing.peak_rss_bytes(children=True)
        report[mode] = result
        print(format_huge(mode, result, report["dense_embedding_bytes"]), flush=True)
    if "badge" in report:
        same = report["badge"]["picks_checksum"] == report["split"]["picks_checksum"]
        report["end_to_end_same_picks"] = same
        print(f"badge end to end picks the same points as embedding + kmeans_pp: {same}")
    return report


def format_huge(mode: str, r: dict, dense_bytes: int) -> str:
    gb = 1e9
    lines = []
    if mode == "split":
        lines.append(f"  embedding pass (last_layer_embedding over the stream): {r['embedding_s']:8.1f} s "
                     f"({r['n'] / r['embedding_s']:,.0f} points/s); factored embedding {r['factored_bytes'] / gb:.2f} GB")
        lines.append(f"  selection (kmeans_pp on Factored, k={r['k']:,}):          {r['selection_s']:8.1f} s "
                     f"({r['selection_s'] / r['k'] * 1e3:.1f} ms/step; compiled ahead of time in "
                     f"{r['selection_compile_s']:.2f} s)")
        lines.append(f"  memory floor {r['floor_ms_per_step']:.1f} ms/step ({r['factored_bytes'] / gb:.2f} GB read "
                     f"per step at {r['bandwidth_bytes_per_s'] / gb:.1f} GB/s, {r['bandwidth_method']}, this run) "
                     f"→ {r['floor_ratio']:.2f}× the floor")
        lines.append(f"  total {r['total_s']:.1f} s; peak memory after the embedding "
                     f"{r['peak_rss_after_embedding_bytes'] / gb:.2f} GB")
    else:
        lines.append(f"  aljax.badge end to end (one cold call, compilation included): {r['badge_s']:8.1f} s")
    lines.append(f"  peak resident memory {r['peak_rss_bytes'] / gb:.2f} GB (VmHWM; children's ru_maxrss "
                 f"{r['children_max_rss_bytes'] / gb:.2f} GB); the dense n·C·D embedding alone would need "
                 f"{dense_bytes / gb:.1f} GB; {r['picks_unique']:,} unique picks; load {r['load_before']} → {r['load_after']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def write_json(path: Path, env: dict, argv: list[str], results: list[dict], huge: dict | None,
               provenance: dict | None = None) -> dict:
    """Merge into ``path``: entries of the same (size, algorithm) are replaced, others kept.

    Each new entry (and the ``huge`` figures) carries ``provenance``, the run's (see
    ``_provenance.py``): a merged file holds entries made by different runs, each saying which."""
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
    entries = {(e["size"], e["algorithm"]): e for e in data.get("results", [])}
    if provenance is not None:
        results = [{**e, "provenance": provenance} for e in results]
        if huge is not None:
            huge = {key: ({**value, "provenance": provenance} if key in ("split", "badge") else value)
                    for key, value in huge.items()}
    entries.update({(e["size"], e["algorithm"]): e for e in results})
    order = {name: i for i, name in enumerate(SIZES)}
    merged = sorted(entries.values(), key=lambda e: (order.get(e["size"], len(order)),
                                                     ALGORITHMS.index(e["algorithm"])
                                                     if e["algorithm"] in ALGORITHMS else len(ALGORITHMS)))
    data.update(environment=env, command="python benchmarks/throughput.py " + " ".join(argv), results=merged)
    if provenance is not None:
        data["provenance"] = provenance
    if huge is not None:
        # A run of one child (--huge alone) keeps the other child's figures from an earlier run
        # of the same problem.
        old = data.get("huge", {})
        if all(old.get(key) == huge.get(key) for key in ("n", "k", "batch")):
            huge = {**old, **huge}
        if "split" in huge and "badge" in huge:
            huge["end_to_end_same_picks"] = huge["split"]["picks_checksum"] == huge["badge"]["picks_checksum"]
        data["huge"] = huge
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data


def plot_floor(data: dict, path: Path) -> bool:
    """Time per k-means++ step against the memory floor (the factors' bytes over the bandwidth
    measured in the same run), by bytes read per step; from the JSON. False when it has no floor."""
    points = [e for e in data.get("results", []) if e.get("algorithm") == "kmeans_pp" and "floor_ms_per_step" in e]
    split = (data.get("huge") or {}).get("split")
    if split and "floor_ms_per_step" in split:
        points.append(dict(size=f"streamed {split['n']:,}", n=split["n"], dim=split["dim"], k=split["k"],
                           floor_bytes=split["factored_bytes"], ms_per_step=split["selection_s"] / split["k"] * 1e3,
                           floor_ms_per_step=split["floor_ms_per_step"], floor_ratio=split["floor_ratio"],
                           bandwidth_bytes_per_s=split["bandwidth_bytes_per_s"], provenance=split.get("provenance"),
                           measured_at=data["huge"].get("measured_at")))
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points.sort(key=lambda e: e["floor_bytes"])
    mib = [e["floor_bytes"] / 2**20 for e in points]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.loglog(mib, [e["ms_per_step"] for e in points], "o-", label="aljax kmeans_pp (BADGE), measured")
    ax.loglog(mib, [e["floor_ms_per_step"] for e in points], "k--", marker="_", ms=14,
              label="memory floor: factors' bytes / bandwidth measured in the same run")
    latest = data.get("provenance")
    for x, e in zip(mib, points):
        # A point merged in from a run of another day (or of unknown provenance) says so.
        prov = e.get("provenance") or {}
        date = prov.get("utc") or e.get("measured_at")
        same_day = prov and latest and (prov.get("utc") or "")[:10] == (latest.get("utc") or "")[:10]
        other = "" if same_day else f"\n(run of {date[:10] if date else 'unknown date'}, no provenance)" \
            if not prov else f"\n(run of {date[:10]})"
        streamed = ", streamed" if str(e.get("size", "")).startswith("streamed") else ""
        ax.annotate(f"n={e['n']:,}, D={e['dim']}{streamed}\n{e['floor_ratio']:.2f}× floor\n"
                    f"({e['bandwidth_bytes_per_s'] / 1e9:.0f} GB/s){other}", (x, e["ms_per_step"]),
                    textcoords="offset points", xytext=(6, -30), fontsize=7)
    ax.set_xlabel("bytes read per step: n·(C + D) float32 (MiB)")
    ax.set_ylabel("ms per k-means++ step")
    prov = data.get("provenance") or {}
    env = data.get("environment") or {}
    ax.set_title(f"BADGE selection against the memory floor ({prov.get('backend') or env.get('backend')} backend: "
                 f"{', '.join(prov.get('device_kinds') or [env.get('device_kind', '?')])}; "
                 f"{prov.get('cpu_count') or env.get('cpu_count')} host CPUs)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlim(min(mib) / 3, max(mib) * 6)
    ax.margins(y=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,medium",
                        help=f"comma-separated, from {','.join(SIZES)} ('' for none); default small,medium")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated subset")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case after the warm-up")
    parser.add_argument("--huge", action="store_true", help="also BADGE over 1,000,000 streamed points")
    parser.add_argument("--huge-end-to-end", action="store_true",
                        help="with --huge, also time aljax.badge end to end (a second child, as long again)")
    parser.add_argument("--huge-n", type=int, default=1_000_000)
    parser.add_argument("--huge-k", type=int, default=1_000)
    parser.add_argument("--huge-batch", type=int, default=8_192)
    parser.add_argument("--huge-child", choices=("split", "badge"), help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1,
                        help="run the table across this many processes (jax.distributed; local CPU processes "
                             "unless --distributed): see _multiprocess.py")
    parser.add_argument("--devices-per-process", type=int, default=2, help="CPU devices of each local process")
    parser.add_argument("--distributed", action="store_true",
                        help="with --processes: this is one process of a cluster job (jax.distributed.initialize())")
    parser.add_argument("--process-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/throughput-<backend>.json)")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.algorithms = [a for a in args.algorithms.split(",") if a]
    for s in args.sizes:
        if s not in SIZES:
            parser.error(f"--sizes: expected names from {list(SIZES)}, got {s!r}")
    for a in args.algorithms:
        if a not in ALGORITHMS:
            parser.error(f"--algorithms: expected names from {list(ALGORITHMS)}, got {a!r}")
    if args.repeats < 1:
        parser.error(f"--repeats: expected at least 1, got {args.repeats}")
    if args.processes < 1:
        parser.error(f"--processes: expected at least 1, got {args.processes}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.huge_child:
        result = huge_child(args.huge_child, args.huge_n, args.huge_k, args.huge_batch, dim=512)
        print(MARKER + json.dumps(result), flush=True)
        return
    if args.process_child is not None or (args.processes > 1 and args.distributed):
        _multiprocess.child(args, process_cases, SIZES, CLASSES)
        return
    if args.processes > 1:
        sys.exit(_multiprocess.spawn(argv, args.processes, args.devices_per_process))
    # The --huge children run first, before this process opens the device (on a GPU the first
    # process to open it would otherwise hold most of its memory while a child runs).
    huge = run_huge(args) if args.huge else None
    env = _timing.environment()
    print(f"backend {env['backend']}, {env['device_count']} × {env['device_kind']}, JAX {env['jax']} "
          f"(jaxlib {env['jaxlib']}), Python {env['python']}, {env['cpu_count']} host CPUs, "
          f"load average {env['loadavg']}", flush=True)
    results = []
    for name in args.sizes:
        results += run_size(name, SIZES[name], set(args.algorithms), args.repeats)
    env["peak_rss_bytes"] = _timing.peak_rss_bytes()
    env["device_peak_bytes"] = _timing.device_peak_bytes()
    env["loadavg_end"] = _timing.loadavg()
    out = Path(args.out) if args.out else (Path(__file__).resolve().parent / "results"
                                           / f"throughput-{env['backend']}.json")
    provenance = _provenance.collect([sys.argv[0], *argv])
    data = write_json(out, env, argv, results, huge, provenance)
    png = out.with_name(out.stem + "-floor.png")
    if plot_floor(data, png):
        print(f"\nwrote {out} and {png}")
    else:
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
