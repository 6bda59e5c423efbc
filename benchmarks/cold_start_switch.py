"""When does a cold start method stop paying? The measurement behind ``ActiveSampler(strategy="auto")``.

    python benchmarks/cold_start_switch.py                         # every dataset, 5 seeds
    python benchmarks/cold_start_switch.py --datasets rotten --seeds 2 --levels 1,5

One acquisition round, as a user of ``ActiveSampler`` meets it: ``L = p·C`` labels drawn
uniformly at random (``p`` per class on average), a linear head (multinomial logistic
regression, scikit-learn, inverse regularisation strength 10)
trained on them, then ``k = r·L`` more picked from the pool (``r = 1``: the labeled set doubles;
``r = 5``: 20 → 120 as in the flagship example) by TypiClust (the labeled set extended, no model),
by the model-based strategies on the head (BADGE, margin, VeSSAL, as ``ActiveSampler`` runs them
on the head's input features) and at random (the mean of three draws); the head is retrained on
the ``L + k`` labels and scored on a held-out test set. Per dataset, level ``p``, ratio ``r`` and
seed the JSON records every strategy's test accuracy; the report gives each strategy's mean gain
over random and its wins over random's mean.

Features: Rotten Tomatoes = all-MiniLM-L6-v2 sentence embeddings (the cache of
``learning_curves.py``); digits and Fashion-MNIST = PCA of the pixels (no pretrained image
encoder is available offline: weak features, unlike the self-supervised ones of the papers).
Writes ``benchmarks/results/cold_start_switch.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _provenance  # noqa: E402
import learning_curves as lc  # noqa: E402

STRATEGIES = ("typiclust", "badge", "margin", "vessal")
CONFIG = {"rotten": {"pool_size": 3000, "test_size": 2000, "pca": None},
          "digits": {"pool_size": 1297, "test_size": 500, "pca": 32},
          "fashion": {"pool_size": 4000, "test_size": 2000, "pca": 64}}


def load(name: str):
    cfg = CONFIG[name]
    x_pool, y_pool, x_test, y_test, classes = lc.LOADERS[name](cfg)
    if cfg["pca"]:
        mean = x_pool.mean(0)
        _, _, vt = np.linalg.svd(x_pool - mean, full_matrices=False)
        proj = vt[: cfg["pca"]].T
        x_pool, x_test = (x_pool - mean) @ proj, (x_test - mean) @ proj
        scale = x_pool.std()
        x_pool, x_test = x_pool / scale, x_test / scale
    return (np.asarray(x_pool, np.float32), np.asarray(y_pool), np.asarray(x_test, np.float32),
            np.asarray(y_test), classes)


def fit(x, y, classes):
    """Logistic regression on the labeled set -> (W (D, C), b (C,)) of C logits."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    W, b = np.zeros((x.shape[1], classes), np.float32), np.full(classes, -1e3, np.float32)
    if len(present) == 1:
        b[present[0]] = 0.0
        return W, b
    model = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
    if len(present) == 2:  # one decision function: logits (0, w·x + b) for the two classes present
        W[:, present[1]], b[present[1]] = model.coef_[0], model.intercept_[0]
        b[present[0]] = 0.0
    else:
        W[:, present], b[present] = model.coef_.T, model.intercept_
    return W, b


def accuracy(W, b, x, y) -> float:
    return float(np.mean(np.argmax(x @ W + b, 1) == y))


def select(strategy, W, b, x_pool, unlabeled, labeled, k, seed):
    import jax.numpy as jnp

    import aljax

    pool, lab = jnp.asarray(x_pool[unlabeled]), jnp.asarray(x_pool[labeled])
    if strategy == "typiclust":
        return np.asarray(aljax.typiclust(pool, k, key=seed, labeled=lab))
    model = ((jnp.asarray(W), jnp.asarray(b)), lambda p, x: x @ p[0] + p[1])
    sampler = aljax.ActiveSampler("classification", model, k, labeled_data=lab, strategy=strategy, key=seed,
                                  features_fn=lambda p, x: x, progress=False)
    return sampler.select(pool)


def run(name: str, levels, seeds, ratios=(1,)) -> list[dict]:
    x_pool, y_pool, x_test, y_test, classes = load(name)
    rows = []
    for ratio, p in [(r, p) for r in ratios for p in levels]:
        L = p * classes
        k = ratio * L
        if L + k > len(x_pool) // 2:
            continue
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(x_pool))
            labeled, unlabeled = order[:L], np.sort(order[L:])
            W, b = fit(x_pool[labeled], y_pool[labeled], classes)
            row = {"dataset": name, "per_class": p, "labeled": L, "k": k, "seed": seed, "dim": int(x_pool.shape[1]),
                   "before": accuracy(W, b, x_test, y_test), "accuracy": {}, "seconds": {}}
            draws = []
            for _ in range(3):
                extra = rng.choice(unlabeled, k, replace=False)
                idx = np.r_[labeled, extra]
                draws.append(accuracy(*fit(x_pool[idx], y_pool[idx], classes), x_test, y_test))
            row["accuracy"]["random"] = float(np.mean(draws))
            for strategy in STRATEGIES:
                start = time.perf_counter()
                picks = select(strategy, W, b, x_pool, unlabeled, labeled, k, seed)
                row["seconds"][strategy] = time.perf_counter() - start
                idx = np.r_[labeled, unlabeled[picks]]
                row["accuracy"][strategy] = accuracy(*fit(x_pool[idx], y_pool[idx], classes), x_test, y_test)
            rows.append(row)
            print(f"{name} p={p} k={k} seed={seed} " + " ".join(f"{s}={a:.3f}" for s, a in row["accuracy"].items()),
                  flush=True)
    return rows


def _ratio(row: dict) -> int:
    return row["k"] // row["labeled"]


def write(out: Path, provenance: dict, rows: list[dict]) -> None:
    """Merge a run into ``out``: its rows replace those of earlier runs for the same (dataset,
    ratio); every run keeps its own provenance."""
    done = {(r["dataset"], _ratio(r)) for r in rows}
    runs = json.loads(out.read_text())["runs"] if out.exists() else []
    for run_ in runs:
        run_["rows"] = [r for r in run_["rows"] if (r["dataset"], _ratio(r)) not in done]
    runs = [r for r in runs if r["rows"]] + [{"provenance": provenance, "rows": rows}]
    out.write_text(json.dumps({"strategies": ["random", *STRATEGIES], "runs": runs}, indent=1) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="rotten,digits,fashion")
    parser.add_argument("--levels", default="1,2,5,10,25,50", help="labels per class before the round")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--ratios", default="1,5", help="picks per round as multiples of the labeled set")
    parser.add_argument("--out", default=str(HERE / "results" / "cold_start_switch.json"))
    args = parser.parse_args(argv)
    levels = [int(v) for v in args.levels.split(",")]
    provenance = _provenance.collect()
    ratios = [int(r) for r in args.ratios.split(",")]
    rows = []
    for name in args.datasets.split(","):
        try:
            rows += run(name, levels, args.seeds, ratios)
        except lc.SkipDataset as err:
            print(f"skipping {name}: {err}")
    write(Path(args.out), provenance, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
