"""One process of the several-hosts checks, spawned by tests/test_multihost.py.

    python tests/_multihost_worker.py MODE PROCESS_ID PROCESSES PORT OUT.json

``MODE`` is ``picks`` (every selector and front door on a pool spread over the processes, next to
the same call on one device holding the whole pool) or ``failures`` (bad inputs: every process
must raise the same error). With ``PROCESSES > 1`` the process joins ``jax.distributed`` on
``localhost:PORT`` (gloo collectives on CPU); with ``PROCESSES == 1`` it runs alone on all its
devices. The device count comes from ``XLA_FLAGS`` in the environment (set by the test before
JAX starts). Every process builds the same data from fixed seeds and passes only its own rows,
process-major, to :func:`aljax.global_pool`. Results go to ``OUT.json``: ``{check: {...}}``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import sys
import time
import traceback

os.environ.setdefault("JAX_PLATFORMS", "cpu")
MODE, PID, PROCESSES, PORT, OUT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
# A hang in a collective prints where every thread is, then exits (the test kills it later anyway).
faulthandler.dump_traceback_later(float(os.environ.get("ALJAX_WORKER_TIMEOUT", "170")), exit=True)

import jax  # noqa: E402

if PROCESSES > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{PORT}", num_processes=PROCESSES, process_id=PID)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aljax  # noqa: E402
from models import MODEL_KINDS  # noqa: E402

ONLY = [name for name in os.environ.get("ALJAX_WORKER_ONLY", "").split(",") if name]
N = 128          # rows of the small pools: 32 per device on 4 devices
N_STREAM = 1200  # VeSSAL's stream: its first internal chunk (1024 points) spans both processes
C = 4


def part(x, pid=PID, processes=PROCESSES):
    """This process's rows of a full array (process-major blocks)."""
    n = x.shape[0] // processes
    return x[pid * n:(pid + 1) * n]


def spread(tree):
    """The full pool as a global pool: every process hands over only its own rows."""
    return aljax.global_pool(jax.tree_util.tree_map(part, tree))


def fetch(picks):
    """The picks on this process, after checking they are replicated on all its devices."""
    assert picks.sharding.is_fully_replicated, picks.sharding
    shards = [np.asarray(s.data) for s in picks.addressable_shards]
    assert all(np.array_equal(s, shards[0]) for s in shards), shards
    return shards[0].tolist()


def data():
    rng = np.random.default_rng(0)
    probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(N + 10, C)) * 2, jnp.float32))
    h = rng.normal(size=(N + 10, 6)).astype(np.float32)
    fisher = aljax.FisherFactors(np.asarray(probs[:N]), h[:N])
    fisher_labeled = aljax.FisherFactors(np.asarray(probs[N:]), h[N:])
    factored = aljax.Factored(rng.normal(size=(N, C)).astype(np.float32), rng.normal(size=(N, 6)).astype(np.float32))
    centres = rng.normal(size=(5, 7)) * 3
    feats = (centres[rng.integers(0, 5, N)] + rng.normal(size=(N, 7))).astype(np.float32)
    labeled_feats = rng.normal(size=(12, 7)).astype(np.float32)
    pool = rng.normal(size=(N, 6)).astype(np.float32)
    stream = rng.normal(size=(N_STREAM, 6)).astype(np.float32)
    scores = rng.uniform(size=N).astype(np.float32)
    return locals()


def checks(d, params, apply_fn, mc_apply):
    """name -> (call on the global pool, call on one device holding the whole pool)."""
    fa, fi, ft, po = d["factored"], d["fisher"], d["feats"], d["pool"]
    dense_rows = np.asarray(jnp.stack([fa.to_dense(), fa.to_dense()[:, ::-1]], axis=1))

    def both(f, *arrays):
        return lambda: f(*[spread(x) for x in arrays]), lambda: f(*arrays)

    out = {
        "kmeans_pp_factored": both(lambda e: aljax.kmeans_pp(e, 12, key=1), fa),
        "kmeans_pp_dense": both(lambda e: aljax.kmeans_pp(e, 12, key=2), np.asarray(fa.to_dense())),
        "k_center_greedy": both(lambda e: aljax.k_center_greedy(e, 12), ft),
        "k_center_greedy_labeled": both(lambda e: aljax.k_center_greedy(e, 12, labeled=d["labeled_feats"]), ft),
        "fisher_greedy": both(lambda e: aljax.fisher_greedy(e, 8), fi),
        "fisher_greedy_labeled": both(lambda e: aljax.fisher_greedy(e, 8, labeled=d["fisher_labeled"]), fi),
        "fisher_greedy_dense_rows": both(lambda e: aljax.fisher_greedy(e, 6, lamb=0.5), dense_rows),
        "volume_stream_dense": both(lambda e: aljax.volume_stream(e, 10, key=3), ft),
        "volume_stream_fisher_rank2": both(lambda e: aljax.volume_stream(e, 10, key=4, rank=2), fi),
        "volume_stream_rate": both(lambda e: aljax.volume_stream(e, rate=0.1, key=5), ft),
        "typiclust": both(lambda e: aljax.typiclust(e, 6, key=1), ft),
        "probcover": both(lambda e: aljax.probcover(e, 6, key=1, delta=3.0), ft),
        "stochastic_top_k": both(lambda s: aljax.stochastic_top_k(jax.random.key(7), s, 10), d["scores"]),
        "vessal_stream": both(lambda p: aljax.vessal(params, apply_fn, p, 20, key=6, batch_size=64), d["stream"]),
        "bald": both(lambda p: aljax.bald(params, mc_apply, p, 8, key=2, batch_size=16, mc_samples=4), po),
        "batch_bald": both(lambda p: aljax.batch_bald(params, mc_apply, p, 4, key=2, batch_size=16, mc_samples=4), po),
        "margin_round_robin": both(lambda lg, f: aljax.margin_round_robin(
            lg, 8, key=2, clustering=aljax.hac_clustering(f, threshold=3.0)), np.log(np.asarray(fi.probs)), ft),
        "cluster_margin": both(lambda p: aljax.cluster_margin(params, apply_fn, p, 8, key=3, batch_size=16,
                                                              threshold=2.0), po),
    }
    for name in ("badge", "bait", "coreset", "margin", "entropy", "least_confidence", "random_sample", "vessal"):
        out[name] = both(lambda p, name=name: getattr(aljax, name)(params, apply_fn, p, 10, key=3, batch_size=16), po)
    out["bait_labeled"] = both(
        lambda p: aljax.bait(params, apply_fn, p, 10, labeled=d["stream"][:20], batch_size=16), po)
    out["coreset_labeled"] = both(lambda p: aljax.coreset(params, apply_fn, p, 10, labeled=d["stream"][:20]), po)
    for strategy in ("badge", "bait", "margin"):
        out[f"sampler_{strategy}"] = both(
            lambda p, s=strategy: jnp.asarray(aljax.ActiveSampler("classification", (params, apply_fn), 10,
                                                                  strategy=s, batch_size=16).select(p)), po)
    return out


def run_picks():
    d = data()
    params, apply_fn, *_ = MODEL_KINDS["linen_mlp"](jax.random.key(0))

    def mc_apply(p, x, key):   # MC dropout on the inputs
        return apply_fn(p, x * jax.random.bernoulli(key, 0.8, x.shape) / 0.8)

    every = checks(d, params, apply_fn, mc_apply)
    unknown = set(ONLY) - set(every)
    assert not unknown, f"no such checks: {sorted(unknown)}"
    results = {"_checks": sorted(every)}
    for name, (on_global, on_one_device) in every.items():
        if ONLY and name not in ONLY:
            continue
        start = time.perf_counter()
        try:
            got = on_global()
            results[name] = {"global": fetch(got), "seconds": round(time.perf_counter() - start, 2)}
            if PROCESSES == 1:   # the one-device reference: computed once, by the one-process run
                results[name]["one_device"] = np.asarray(on_one_device()).tolist()
        except Exception:
            results[name] = {"error": traceback.format_exc()[-2000:]}
    # A pool given per process as an iterable of batches, embedded batch by batch on this process.
    try:
        mine = part(d["pool"])
        batches = (mine[i:i + 10] for i in range(0, len(mine), 10))   # uneven batches: 10, 10, 10, 2
        emb = aljax.global_pool(batches, map_fn=lambda x: aljax.last_layer_embedding(params, apply_fn, x))
        ref = aljax.last_layer_embedding(params, apply_fn, d["pool"])
        np.testing.assert_allclose(np.concatenate([np.asarray(s.data) for s in emb.h.addressable_shards]),
                                   np.asarray(part(ref.h)), rtol=1e-5, atol=1e-6)
        picks = aljax.kmeans_pp(emb, 12, key=1)
        results["global_pool_batches_kmeans_pp"] = {"global": fetch(picks)}
        if PROCESSES == 1:
            ref_picks = aljax.kmeans_pp(ref, 12, key=1)
            results["global_pool_batches_kmeans_pp"]["one_device"] = np.asarray(ref_picks).tolist()
        process, local = aljax.local_indices(picks, emb)
        picks = np.asarray(fetch(picks))
        for p in range(PROCESSES):   # every process's rows, as the global pool holds them
            np.testing.assert_array_equal(part(d["pool"], p)[local[process == p]], d["pool"][picks[process == p]])
        results["local_indices"] = {"process": process.tolist(), "local": local.tolist(),
                                    "expected_process": (picks // (N // PROCESSES)).tolist(),
                                    "expected_local": (picks % (N // PROCESSES)).tolist()}
    except Exception:
        results["global_pool_batches_kmeans_pp"] = {"error": traceback.format_exc()[-2000:]}
    results["collectives"] = kernel_collectives(d)
    return results


COLLECTIVE = re.compile(r"=\s*(\([^)]*\)|\S+)\s+(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)"
                        r"(-start)?\(")


def kernel_collectives(d):
    """``{kernel: [(op, elements), ...]}``: the collectives XLA compiled into BADGE's selection
    kernel on the global pool (none may move pool-sized arrays: the work stays on the shards)."""
    emb = spread(d["factored"])
    out = {}
    for name, emb in (("kmeans_pp factored", emb), ("kmeans_pp dense", spread(np.asarray(d["factored"].to_dense())))):
        hlo = aljax._badge._kmeans_pp.lower(jax.random.key(0), emb, 12).compile().as_text()
        out[name] = [(m.group(2), max((int(np.prod([int(x) for x in s.split(",") if x]))
                                       for s in re.findall(r"\[([\d,]*)\]", m.group(1))), default=1))
                     for m in COLLECTIVE.finditer(hlo)]
    return out


def run_failures():
    d = data()
    params, apply_fn, *_ = MODEL_KINDS["linen_mlp"](jax.random.key(0))
    nan_feats, nan_pool, nan_fisher = d["feats"].copy(), d["pool"].copy(), d["fisher"]
    last = N - 3   # a row of the last process only
    nan_feats[last, 2] = np.nan
    nan_pool[last, 0] = np.inf
    nan_fisher = aljax.FisherFactors(nan_fisher.probs, nan_fisher.h.copy())
    nan_fisher.h[last, 1] = np.nan
    cases = {
        "nan_kmeans_pp": lambda: aljax.kmeans_pp(spread(nan_feats), 5),
        "nan_k_center_greedy": lambda: aljax.k_center_greedy(spread(nan_feats), 5),
        "nan_fisher_greedy": lambda: aljax.fisher_greedy(spread(nan_fisher), 5),
        "nan_volume_stream": lambda: aljax.volume_stream(spread(nan_feats), 5),
        "nan_badge": lambda: aljax.badge(params, apply_fn, spread(nan_pool), 5),
        "k_too_large_kmeans_pp": lambda: aljax.kmeans_pp(spread(d["feats"]), N + 1),
        "k_too_large_fisher_greedy": lambda: aljax.fisher_greedy(spread(d["fisher"]), N + 1),
        "k_too_large_badge": lambda: aljax.badge(params, apply_fn, spread(d["pool"]), N + 1),
        "k_too_large_vessal": lambda: aljax.vessal(params, apply_fn, spread(d["pool"]), N + 1),
        "uneven_local_sizes": lambda: aljax.global_pool(d["feats"][:30] if PID == 0 else d["feats"][:34]),
        "local_size_not_divisible": lambda: aljax.global_pool(d["feats"][:31]),
        "parts_differ": lambda: aljax.global_pool(d["feats"][:32, : 6 + PID]),
        "one_process_has_no_batches": lambda: aljax.global_pool(
            iter([]) if PID == PROCESSES - 1 else iter([part(d["feats"])])),
        "still_in_step": lambda: aljax.kmeans_pp(spread(d["feats"]), 5, key=1),
    }
    results = {}
    for name, case in cases.items():
        try:
            out = case()
            results[name] = "ok: " + str(fetch(out))
        except Exception as error:   # noqa: BLE001 - reported, compared across processes
            results[name] = f"{type(error).__name__}: {error}"
    return results


if __name__ == "__main__":
    results = run_picks() if MODE == "picks" else run_failures()
    results["_devices"] = {"processes": jax.process_count(), "devices": jax.device_count(),
                           "local_devices": jax.local_device_count()}
    with open(OUT, "w") as f:
        json.dump(results, f)
    faulthandler.cancel_dump_traceback_later()
    if PROCESSES > 1:
        jax.distributed.shutdown()
