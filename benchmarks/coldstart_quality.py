"""Cold start quality: the accuracy of a linear head trained on the first labels each selector picks.

    python benchmarks/coldstart_quality.py                         # every dataset, 10 seeds (≈ 25 min, 2 CPUs)
    python benchmarks/coldstart_quality.py --datasets digits --seeds 2 --budgets 1,2   # a smoke run

For each dataset, budget b ∈ {1, 2, 3, 5, 10} labels per class (k = b·C picks, from nothing:
``labeled=None``) and seed, every method picks k points of the pool from its embedding alone; a
multinomial logistic regression (scikit-learn ``LogisticRegression``, default L2 penalty C = 1,
on the embedding standardised with the *pool's* mean and standard deviation) is trained on the
picks with their true labels and scored on a held-out test set. When the picks hold one class
only, the head predicts that class.

Methods (the seed is each one's ``key``):

* ``random``: k points drawn uniformly (NumPy, seeded).
* ``kmeans_pp``: ``aljax.kmeans_pp(emb, k, key=seed)``, the diversity baseline (its first pick is
  the row of largest norm, then D² sampling).
* ``typiclust``: ``aljax.typiclust(emb, k, key=seed)``.
* ``probcover_purity``: ``aljax.probcover(emb, k, key=seed, n_classes=C)``: δ by the paper's purity
  rule (α = 0.95) on C k-means pseudo-labels. The δ is recorded (the script calls the public
  function's kernel, which also returns it).
* ``probcover_coverage``: ``aljax.probcover(emb, k, key=seed, delta=δ_k)`` with δ_k the 1/k
  quantile of the distances between 200,000 random pairs of pool points (seeded): the radius at
  which a ball holds on average n/k points, so that k disjoint balls would hold the whole pool.
  Not from the paper; a coverage-based choice for when the purity δ is degenerate (too small for k
  balls to cover much of the pool, as on PCA features of digits).

For both ProbCover variants the fraction of the pool within δ of a pick is recorded (coverage).

Datasets and their embeddings (L2-normalised rows, as in the papers):

* ``rotten``: Rotten Tomatoes snippets, all-MiniLM-L6-v2 sentence embeddings (384-d, the cache of
  ``learning_curves.py``), pool 10,000 / test 2,808, 2 classes.
* ``digits``: scikit-learn's 8×8 digits, PCA-32 of the standardised pixels (fit on the pool),
  pool 1,300 / test 497, 10 classes.
* ``fashion``: Fashion-MNIST, PCA-64 of the pixels (fit on the pool), pool 20,000 of the 60,000
  training images / test 10,000, 10 classes.

PCA of pixels is a weak stand-in for an encoder (no pretrained image encoder is available
offline): the papers select on self-supervised features (SimCLR, DINO), where similar images lie
close together; on pixels they often do not.

Recorded per method × budget × seed: accuracy, the picks' class counts (and classes covered), the
selection time (wall, ``block_until_ready``; the first call of each (method, k) compiles). JSON to
``benchmarks/results/coldstart_quality.json``, one entry per dataset with the provenance of the run
that made it (a run of some datasets keeps the others); ``benchmarks/report.py`` writes the table
of RESULTS.md.
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
from aljax import _coldstart, _validate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _provenance  # noqa: E402
import learning_curves  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "coldstart_quality.json"
BUDGETS = (1, 2, 3, 5, 10)
METHODS = ("random", "kmeans_pp", "typiclust", "probcover_purity", "probcover_coverage")
DATASETS = {
    "rotten": dict(pool_size=10_000, test_size=2_808, features="all-MiniLM-L6-v2 sentence embeddings, 384-d"),
    "digits": dict(pool_size=1_300, test_size=497, pca=32, standardise=True,
                   features="PCA-32 of the standardised pixels (fit on the pool)"),
    "fashion": dict(pool_size=20_000, test_size=10_000, pca=64, standardise=False,
                    features="PCA-64 of the pixels (fit on the pool)"),
}
PAIRS = 200_000


# ---------------------------------------------------------------------------------------------
# Data


def _normalise(x):
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _pca(pool, test, dims, standardise):
    mean = pool.mean(axis=0)
    scale = pool.std(axis=0) if standardise else np.ones(pool.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    p, t = (pool - mean) / scale, (test - mean) / scale
    _, _, vt = np.linalg.svd(p, full_matrices=False)
    return p @ vt[:dims].T, t @ vt[:dims].T


def load(name: str, cfg: dict):
    """``(emb_pool, y_pool, emb_test, y_test, classes)``: L2-normalised embeddings."""
    x_pool, y_pool, x_test, y_test, classes = learning_curves.LOADERS[name](cfg)
    x_pool, x_test = np.asarray(x_pool, np.float64), np.asarray(x_test, np.float64)
    if "pca" in cfg:
        x_pool, x_test = _pca(x_pool, x_test, cfg["pca"], cfg["standardise"])
    return _normalise(x_pool), np.asarray(y_pool), _normalise(x_test), np.asarray(y_test), classes


# ---------------------------------------------------------------------------------------------
# Methods: each returns (picks, extra) with extra a dict of what to record.


def coverage_delta(emb, k, seed):
    """The 1/k quantile of the distances between ``PAIRS`` random pairs of distinct pool points."""
    rng = np.random.default_rng(seed)
    n = len(emb)
    i = rng.integers(0, n, PAIRS)
    j = (i + rng.integers(1, n, PAIRS)) % n
    return float(np.quantile(np.linalg.norm(emb[i] - emb[j], axis=1), 1.0 / k))


def coverage(emb, picks, delta):
    """Fraction of the pool within δ (strictly) of a pick."""
    sq = np.sum(emb * emb, axis=1)
    p = emb[picks]
    d2 = sq[:, None] + np.sum(p * p, axis=1)[None, :] - 2 * emb @ p.T
    return float(np.mean(np.any(d2 < delta * delta, axis=1)))


def select(method, emb, emb_j, k, classes, seed):
    if method == "random":
        return np.random.default_rng(seed).choice(len(emb), k, replace=False), {}
    if method == "kmeans_pp":
        return aljax.kmeans_pp(emb_j, k, key=seed), {}
    if method == "typiclust":
        return aljax.typiclust(emb_j, k, key=seed), {}
    if method == "probcover_purity":
        # aljax.probcover(emb, k, key=seed, n_classes=classes) is this kernel call after validation;
        # the kernel also returns the δ it chose.
        picks, delta = _coldstart._probcover_kernel(_validate.as_key("probcover", seed), emb_j, None,
                                                    jnp.float32(0.0), 0.95, k=k, n_classes=classes)
        return picks, {"delta": float(delta)}
    if method == "probcover_coverage":
        delta = coverage_delta(emb, k, seed)
        return aljax.probcover(emb_j, k, key=seed, delta=delta), {"delta": delta}
    raise ValueError(f"unknown method {method!r}")


def linear_head_accuracy(x_train, y_train, x_test, y_test, mean, scale):
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y_train)) == 1:
        return float(np.mean(y_test == y_train[0]))
    head = LogisticRegression(max_iter=2000)
    head.fit((x_train - mean) / scale, y_train)
    return float(head.score((x_test - mean) / scale, y_test))


# ---------------------------------------------------------------------------------------------


def run_dataset(name, args):
    cfg = dict(DATASETS[name])
    if args.pool_size:
        cfg["pool_size"] = args.pool_size
    if args.test_size:
        cfg["test_size"] = args.test_size
    try:
        emb, y, emb_test, y_test, classes = load(name, cfg)
    except learning_curves.SkipDataset as why:
        print(f"[{name}] skipped: {why}", flush=True)
        return None
    emb_j = jnp.asarray(emb)
    mean, scale = emb.mean(axis=0), emb.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    print(f"[{name}] pool {emb.shape}, test {len(emb_test)}, {classes} classes; budgets {args.budgets} per "
          f"class; seeds {args.seeds}; methods {args.methods}", flush=True)
    runs, start = [], time.perf_counter()
    for budget in args.budgets:
        k = budget * classes
        for seed in range(args.seeds):
            for method in args.methods:
                t0 = time.perf_counter()
                picks, extra = select(method, emb, emb_j, k, classes, seed)
                picks = np.asarray(jax.block_until_ready(picks))
                seconds = time.perf_counter() - t0
                assert len(np.unique(picks)) == k, (method, k)
                counts = np.bincount(y[picks], minlength=classes)
                acc = linear_head_accuracy(emb[picks], y[picks], emb_test, y_test, mean, scale)
                if "delta" in extra:
                    extra["coverage"] = coverage(emb, picks, extra["delta"])
                runs.append(dict(method=method, budget=budget, k=k, seed=seed, accuracy=acc,
                                 classes_covered=int(np.sum(counts > 0)), class_counts=counts.tolist(),
                                 select_s=seconds, **extra))
            accs = {r["method"]: r["accuracy"] for r in runs if r["budget"] == budget and r["seed"] == seed}
            print(f"[{name}] b={budget:>2} seed={seed}: " + "  ".join(f"{m} {a:.3f}" for m, a in accs.items())
                  + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    settings = dict(pool=int(len(emb)), test=int(len(emb_test)), classes=int(classes), dim=int(emb.shape[1]),
                    features=cfg["features"], budgets=list(args.budgets), seeds=list(range(args.seeds)),
                    methods=list(args.methods), head="LogisticRegression(C=1, lbfgs) on pool-standardised "
                    "embeddings", pairs_for_coverage_delta=PAIRS)
    return dict(settings=settings, runs=runs, seconds=time.perf_counter() - start,
                load_after=list(os.getloadavg()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="rotten,digits,fashion")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="labels per class")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--pool-size", type=int, default=None, help="override every dataset's pool size")
    parser.add_argument("--test-size", type=int, default=None, help="override every dataset's test size")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(",") if b]
    args.methods = [m for m in args.methods.split(",") if m]
    for m in args.methods:
        if m not in METHODS:
            parser.error(f"--methods: expected names from {list(METHODS)}, got {m!r}")
    print(f"device: {jax.devices()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("datasets", {})
    provenance = _provenance.collect([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    for name in args.datasets.split(","):
        if name not in DATASETS:
            parser.error(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
        load_before = list(os.getloadavg())
        result = run_dataset(name, args)
        if result is None:
            continue
        data["datasets"][name] = {**result, "load_before": load_before, "provenance": provenance}
        data["provenance"] = provenance
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"[{name}] {result['seconds']:.0f} s; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
