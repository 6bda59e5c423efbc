"""A pool-based active learning simulation on labeled data, and learning-curve statistics."""

from __future__ import annotations

import inspect
import numbers
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from . import _progress, _validate, stopping
from ._labelpool import LabelPool

_FORMAT = "aljax.simulate/1"


def _strategy_name(strategy: Callable) -> str:
    return getattr(strategy, "__name__", None) or type(strategy).__name__


def _accepts_labeled(strategy: Callable) -> bool:
    """Whether ``strategy`` takes a ``labeled=`` keyword (the labeled set's inputs, as the front
    doors of docs/api.md do)."""
    try:
        params = inspect.signature(strategy).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("labeled")
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


def _take(tree, idx):
    return jax.tree_util.tree_map(lambda leaf: leaf[idx], tree)


# -- argument checks ----------------------------------------------------------------------------


class _Plan(NamedTuple):
    """The checked arguments of one simulation."""
    n: int
    initial: int
    per_round: int
    rounds: int
    seed: int | None     # the int key, recorded in the result; None for a jax.random key
    key: jax.Array
    name: str


def _check_stop_set(fn: str, stop_set, x, apply_fn) -> None:
    """A stop set has the structure and trailing shapes of ``x``, and needs the model."""
    if apply_fn is None:
        raise ValueError(_validate.message(fn, "stop_set", "None when `apply_fn` is None (the stop set is "
                                           "predicted with apply_fn)", "a stop set"))
    _validate.pool_size(fn, stop_set, arg="stop_set")
    ours, theirs = jax.tree_util.tree_structure(stop_set), jax.tree_util.tree_structure(x)
    if ours != theirs:
        raise ValueError(_validate.message(fn, "stop_set", f"inputs of the same structure as `x` ({theirs})", ours))
    for a, b in zip(jax.tree_util.tree_leaves(stop_set), jax.tree_util.tree_leaves(x)):
        if tuple(a.shape[1:]) != tuple(b.shape[1:]):
            raise ValueError(_validate.message(fn, "stop_set", f"inputs of trailing shape {tuple(b.shape[1:])} like `x`",
                                               f"trailing shape {tuple(a.shape[1:])}"))


def _check_arguments(strategy, train_fn, eval_fn, x, y, apply_fn, initial, per_round, rounds, key,
                     name) -> _Plan:
    fn = "simulate"
    for arg, value in (("strategy", strategy), ("train_fn", train_fn), ("eval_fn", eval_fn)):
        if not callable(value):
            raise TypeError(_validate.message(fn, arg, "a callable", type(value).__name__))
    if apply_fn is not None and not callable(apply_fn):
        raise TypeError(_validate.message(fn, "apply_fn", "a callable apply_fn(params, x) or None",
                                          type(apply_fn).__name__))
    n = _validate.pool_size(fn, x, arg="x")
    n_y = _validate.pool_size(fn, y, arg="y")
    if n_y != n:
        raise ValueError(f"aljax.{fn}: `x` and `y` must have the same number of examples, got {n} and {n_y}.")
    initial = _validate.check_int(fn, "initial", initial, low=1)
    per_round = _validate.check_int(fn, "per_round", per_round, low=1)
    rounds = _validate.check_int(fn, "rounds", rounds, low=0)
    if initial + rounds * per_round > n:
        raise ValueError(
            f"aljax.{fn}: `initial` + `rounds`·`per_round` must be at most the dataset size: "
            f"{initial} + {rounds}·{per_round} = {initial + rounds * per_round} > {n}.")
    seed = int(key) if isinstance(key, numbers.Integral) and not isinstance(key, bool) else None
    key = _validate.as_key(fn, key)
    if name is None:
        name = _strategy_name(strategy)
    if not isinstance(name, str):
        raise TypeError(_validate.message(fn, "name", "a str or None", type(name).__name__))
    return _Plan(n, initial, per_round, rounds, seed, key, name)


def _check_picks(strategy_name: str, picks: Any, k: int, size: int) -> np.ndarray:
    fn = "simulate"
    arr = np.asarray(picks)
    if arr.ndim != 1 or arr.shape[0] != k or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"aljax.{fn}: `strategy` ({strategy_name}) must return {k} integer indices into the "
                         f"unlabeled subset, got {arr.dtype}{list(arr.shape)}.")
    if arr.min() < 0 or arr.max() >= size:
        raise ValueError(f"aljax.{fn}: `strategy` ({strategy_name}) returned an index outside [0, {size}): "
                         f"{arr[(arr < 0) | (arr >= size)][:10].tolist()}.")
    if np.unique(arr).size != k:
        raise ValueError(f"aljax.{fn}: `strategy` ({strategy_name}) returned duplicate indices.")
    return arr


def _stop_set_probs(apply_fn, params, stop_set, batch: int = 1024) -> np.ndarray:
    """Softmax of the model's logits on the stop set, ``(m, C)`` float64, in batches of rows."""
    m = _validate.pool_size("simulate", stop_set, arg="stop_set")
    parts = []
    for start in range(0, m, batch):
        rows = jax.tree_util.tree_map(lambda leaf: leaf[start:start + batch], stop_set)
        parts.append(np.asarray(apply_fn(params, rows)))
    logits = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if logits.ndim != 2 or logits.shape[0] != m or logits.shape[1] < 2 or \
            not np.issubdtype(logits.dtype, np.floating):
        raise ValueError(_validate.message("simulate", "apply_fn", f"floating logits (m, C) with C >= 2 on "
                                           f"the stop set of {m} rows", f"{logits.dtype}{list(logits.shape)}"))
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"aljax.simulate: the logits of `apply_fn` on `stop_set` contain "
                         f"{int(np.sum(~np.isfinite(logits)))} NaN/Inf value(s); they must be finite.")
    logits = logits.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def _stopping_report(probs: list, labels: list, metrics: list) -> dict:
    """Where each criterion of :mod:`aljax.stopping` (defaults) would have stopped, with the
    per-round statistics it reads (so that other thresholds and windows can be tried later)."""
    history = np.stack(probs)
    rounds = stopping.stopping_points(history)
    uncertainty = stopping.entropy(history)
    criteria = {name: {"round": r, "labels": None if r is None else labels[r],
                       "metric": None if r is None else metrics[r]} for name, r in rounds.items()}
    return {"stop_set_size": int(history.shape[1]), "kappas": stopping.kappas(history).tolist(),
            "mean_entropy": uncertainty.mean(axis=1).tolist(), "max_entropy": uncertainty.max(axis=1).tolist(),
            "criteria": criteria, "final_labels": labels[-1], "final_metric": metrics[-1]}


def _check_metric(metric: Any) -> float:
    try:
        return float(metric)
    except (TypeError, ValueError):
        raise TypeError(_validate.message("simulate", "eval_fn", "a function returning a float",
                                          f"{type(metric).__name__}")) from None


# -- one round ----------------------------------------------------------------------------------


def _select(strategy, name, params, apply_fn, x, pool: LabelPool, k: int, key, pass_labeled: bool):
    """Ask ``strategy`` for ``k`` of the unlabeled rows; returns the dataset indices it picked and
    the wall time of the call (waited for)."""
    unlabeled = pool.unlabeled
    extra = {"labeled": _take(x, pool.labeled)} if pass_labeled else {}
    start = time.perf_counter()
    with _progress.scope("simulate", False):  # simulate's own bar counts the rounds
        picks = strategy(params, apply_fn, _take(x, unlabeled), k, key=key, **extra)
    picks = _check_picks(name, jax.block_until_ready(picks), k, unlabeled.size)
    seconds = time.perf_counter() - start
    return pool.from_unlabeled_index(picks), seconds


def _train(train_fn, x, y, pool: LabelPool, key):
    """Train on the labeled rows; returns the params and the wall time (waited for)."""
    start = time.perf_counter()
    labeled = pool.labeled
    params = train_fn(_take(x, labeled), y[labeled], key)
    jax.block_until_ready(params)
    return params, time.perf_counter() - start


# -- progress and report ------------------------------------------------------------------------


def _rounds_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is cosmetic: without tqdm there is none
        return None
    return tqdm(total=total, desc=desc, leave=False)


def _show_round(bar, pool: LabelPool, metric: float) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(labels=pool.num_labeled, metric=f"{metric:.4f}")


class _History(NamedTuple):
    """What the result records, one entry per round (``selected``, ``select_seconds``: per
    acquisition round)."""
    labels: list
    metrics: list
    selected: list
    select_seconds: list
    train_seconds: list


def _report(plan: _Plan, history: _History, pool: LabelPool) -> dict:
    return {"format": _FORMAT, "strategy": plan.name, "seed": plan.seed, "initial": plan.initial,
            "per_round": plan.per_round, "rounds": plan.rounds, "labels": history.labels,
            "metrics": history.metrics, "selected": history.selected,
            "select_seconds": history.select_seconds, "train_seconds": history.train_seconds,
            "pool": pool.to_dict()}


def simulate(strategy: Callable, train_fn: Callable, eval_fn: Callable, x, y, *, apply_fn: Callable | None,
             initial: int, per_round: int, rounds: int, key=0, name: str | None = None,
             pass_labeled: bool | None = None, progress: bool = True, stop_set=None) -> dict:
    """Simulate pool-based active learning on a fully labeled dataset.

    Round 0 labels ``initial`` examples drawn uniformly at random; each of the ``rounds`` later
    rounds trains on the labeled set, asks ``strategy`` for ``per_round`` examples of the
    unlabeled rest, and reveals their labels. After every round's training the model is scored
    with ``eval_fn``. The labeled set is tracked by a :class:`~aljax.LabelPool`.

    Randomness is split so that runs with the same ``key`` and different strategies are paired:
    they share the initial set and the training key of each round (``fold_in(key, round)``), and
    differ only in what the strategy picks. Each acquisition round hands the strategy a fresh key.

    Args:
      strategy: any aljax front door (``aljax.badge``, ``aljax.margin``, ...) or a callable with
        the same signature, called as ``strategy(params, apply_fn, x_unlabeled, k, key=key)``
        and returning ``k`` unique indices into ``x_unlabeled`` (the rows ``x[pool.unlabeled]``,
        ascending dataset order). Extra options: bind them with ``functools.partial``. A
        strategy that takes a ``labeled=`` keyword (``aljax.bait``, ``aljax.coreset``,
        ``aljax.vessal``) also gets the labeled inputs ``x[pool.labeled]`` (see ``pass_labeled``).
      train_fn: ``train_fn(x_labeled, y_labeled, key) -> params``, called every round (train
        from scratch or warm-start: the harness does not care). It gets NumPy arrays.
      eval_fn: ``eval_fn(params) -> float`` (e.g. test accuracy; larger is better for the AUC
        summaries).
      x: ``(n, ...)`` inputs (NumPy or JAX array, or a pytree of them with a leading example axis).
      y: ``(n, ...)`` labels; the same leading size as ``x``.
      apply_fn: the model's ``apply_fn(params, x) -> logits``, handed to ``strategy`` with the
        params ``train_fn`` returned (``train_fn`` returns params only). ``None`` only for
        strategies that ignore the model (``aljax.random_sample``).
      initial: size of the random initial labeled set, an int ``>= 1``.
      per_round: examples labeled per round, an int ``>= 1``.
      rounds: number of acquisition rounds, an int ``>= 0``; ``initial + rounds·per_round`` must
        not exceed ``n``.
      key: int seed or ``jax.random`` key.
      name: the strategy's name in the results (default: its ``__name__``).
      pass_labeled: call ``strategy(..., labeled=x[pool.labeled])``: ``None`` (default) does so
        exactly when ``strategy``'s signature has a ``labeled`` parameter; ``True``/``False``
        force it.
      progress: show a tqdm progress bar (when tqdm is installed).
      stop_set: ``(m, ...)`` unlabeled inputs (like ``x``: same structure and trailing shapes),
        or ``None``. When given, after each round's training the model's softmax on the stop set
        is computed with ``apply_fn``, and the criteria of :mod:`aljax.stopping` are applied to
        the history with their defaults (see ``stopping`` under Returns). Any fixed inputs will
        do, e.g. a random subset of the pool or held-out data: no label is read.

    Returns:
      dict: a JSON-serialisable record of ``strategy``, ``seed`` (the int key, else ``None``), ``initial``,
      ``per_round``, ``rounds``, ``labels`` (``rounds + 1`` label counts), ``metrics`` (the
      ``eval_fn`` values after each round's training), ``selected`` (per acquisition round, the
      dataset indices picked), ``select_seconds`` and ``train_seconds`` (wall time per round) and
      ``pool`` (the final :meth:`LabelPool.to_dict`). With ``stop_set``, also ``stopping``:
      ``stop_set_size``; the per-round statistics the criteria read, ``kappas`` (``rounds``
      values: κ between consecutive rounds' predicted labels), ``mean_entropy`` and
      ``max_entropy`` (``rounds + 1`` values, nats), from which any threshold and window can be
      re-applied without the predictions, which are not stored; ``criteria``: for each criterion
      of :func:`aljax.stopping.stopping_points`, the ``round`` at which it would have stopped,
      the ``labels`` and ``metric`` there (all ``None`` if it never would); ``final_labels``
      and ``final_metric`` (so ``final_metric − metric`` is what stopping there leaves on the
      table).

    Raises:
      TypeError: a callable argument that is not callable, a ``key``, ``name`` or count of the
        wrong type, or an ``eval_fn`` that does not return a number.
      ValueError: ``x`` and ``y`` of different lengths, counts out of range, a strategy that
        returns the wrong number of indices, duplicates or indices out of range, a ``stop_set``
        unlike ``x`` or without ``apply_fn``, or logits on it that are not finite ``(m, C)``.

    Example:
      >>> import functools, jax, jax.numpy as jnp, numpy as np, aljax
      >>> x = np.random.default_rng(0).normal(size=(60, 2)).astype("float32")
      >>> y = (x[:, 0] > 0).astype("int32")
      >>> def train_fn(xl, yl, key):    # least squares on ±1 targets, two "logits"
      ...     w = np.linalg.lstsq(xl, 2.0 * yl - 1, rcond=None)[0]
      ...     return jnp.stack([-w, w], axis=1)
      >>> apply_fn = lambda W, xb: xb @ W
      >>> eval_fn = lambda W: float(np.mean(np.argmax(x @ np.asarray(W), 1) == y))
      >>> res = aljax.simulate(aljax.margin, train_fn, eval_fn, x, y, apply_fn=apply_fn,
      ...                      initial=4, per_round=4, rounds=3, key=0, progress=False)
      >>> res["labels"]
      [4, 8, 12, 16]
      >>> res = aljax.simulate(aljax.margin, train_fn, eval_fn, x, y, apply_fn=apply_fn, initial=4,
      ...                      per_round=4, rounds=3, progress=False, stop_set=x[:20])
      >>> sorted(res["stopping"]["criteria"]["stabilizing_predictions"])
      ['labels', 'metric', 'round']
    """
    plan = _check_arguments(strategy, train_fn, eval_fn, x, y, apply_fn, initial, per_round, rounds, key,
                            name)
    if stop_set is not None:
        _check_stop_set("simulate", stop_set, x, apply_fn)
        stop_set = jax.tree_util.tree_map(np.asarray, stop_set)
    if pass_labeled is None:
        pass_labeled = _accepts_labeled(strategy)
    x_np = jax.tree_util.tree_map(np.asarray, x)
    y_np = np.asarray(y)

    init_key, select_root = jax.random.split(jax.random.fold_in(plan.key, 0x5EED))
    first = np.asarray(jax.random.permutation(init_key, plan.n)[:plan.initial])
    pool = LabelPool(plan.n).label(first)
    history = _History([], [], [], [], [])
    stop_probs = []
    params = None    # round 0 trains before anything is selected
    bar = _rounds_bar(plan.rounds + 1, plan.name, progress)
    try:
        for r in range(plan.rounds + 1):
            if r > 0:
                chosen, seconds = _select(strategy, plan.name, params, apply_fn, x_np, pool, plan.per_round,
                                          jax.random.fold_in(select_root, r), pass_labeled)
                history.select_seconds.append(seconds)
                history.selected.append(chosen.tolist())
                pool = pool.label(chosen)
            params, seconds = _train(train_fn, x_np, y_np, pool, jax.random.fold_in(plan.key, r))
            history.train_seconds.append(seconds)
            metric = _check_metric(eval_fn(params))
            if stop_set is not None:
                stop_probs.append(_stop_set_probs(apply_fn, params, stop_set))
            history.labels.append(pool.num_labeled)
            history.metrics.append(metric)
            _show_round(bar, pool, metric)
    finally:
        if bar is not None:
            bar.close()
    report = _report(plan, history, pool)
    if stop_set is not None:
        report["stopping"] = _stopping_report(stop_probs, history.labels, history.metrics)
    return report


# ---------------------------------------------------------------------------------------------
# Learning-curve statistics.


def check_runs(fn: str, runs: Any, what: str) -> list[dict]:
    if isinstance(runs, Mapping):
        runs = [runs]
    if not isinstance(runs, Sequence) or not runs:
        raise ValueError(_validate.message(fn, what, "a non-empty list of simulate() results", type(runs).__name__))
    for run in runs:
        if not isinstance(run, Mapping) or "labels" not in run or "metrics" not in run:
            raise ValueError(_validate.message(fn, what, "simulate() results (dicts with `labels` and `metrics`)",
                                               repr(run)[:80]))
        if len(run["labels"]) != len(run["metrics"]) or not run["labels"]:
            raise ValueError(_validate.message(fn, what, "results with as many metrics as label counts (>= 1)",
                                               f"{len(run['labels'])} label counts and {len(run['metrics'])} metrics"))
    return list(runs)


def curve_area(run: Mapping) -> float:
    """Normalised area under one learning curve: the trapezoid integral of the metric over the
    label counts divided by their range, i.e. the curve's mean height (the metric itself for a
    single point).

    Args:
      run: a :func:`simulate` result (``labels``, ``metrics``).

    Returns:
      A float in the metric's units.

    Example:
      >>> import aljax
      >>> aljax.curve_area({"labels": [10, 20, 30], "metrics": [0.5, 0.7, 0.8]})
      0.675
    """
    run = check_runs("curve_area", run, "run")[0]
    labels = np.asarray(run["labels"], np.float64)
    metrics = np.asarray(run["metrics"], np.float64)
    if labels.size == 1 or labels[-1] == labels[0]:
        return float(np.mean(metrics))
    area = np.sum((labels[1:] - labels[:-1]) * (metrics[1:] + metrics[:-1]) / 2)
    return float(round(area / (labels[-1] - labels[0]), 12))


def relative_auc(results_by_strategy: Mapping[str, Sequence[Mapping]], *, baseline: str = "random") -> dict:
    """Area under the learning curve relative to a baseline, with its spread over seeds.

    For every strategy and seed, ``curve_area(strategy run) / curve_area(baseline run)`` on the
    same seed (runs are paired by their ``seed`` field when every run has one, else by position),
    then the mean and sample standard deviation over seeds. This is the summary of CDALBench
    (Zhan et al., "A comparative survey of deep active learning", 2022; ratios > 1 beat the
    baseline).

    Args:
      results_by_strategy: ``{strategy name: [simulate() result per seed]}``; must contain
        ``baseline``.
      baseline: the name of the reference strategy.

    Returns:
      ``{name: {"mean", "std", "per_seed", "seeds", "auc_mean"}}``, JSON-serialisable; ``std`` is
      0 for a single seed.

    Example:
      >>> import aljax
      >>> runs = {"random": [{"seed": 0, "labels": [1, 2], "metrics": [0.5, 0.5]}],
      ...         "margin": [{"seed": 0, "labels": [1, 2], "metrics": [0.5, 0.7]}]}
      >>> aljax.relative_auc(runs)["margin"]["mean"]
      1.2
    """
    fn = "relative_auc"
    if not isinstance(results_by_strategy, Mapping) or not results_by_strategy:
        raise ValueError(_validate.message(fn, "results_by_strategy", "a non-empty dict {name: [results]}",
                                           type(results_by_strategy).__name__))
    if baseline not in results_by_strategy:
        raise ValueError(_validate.message(fn, "baseline", f"one of {sorted(results_by_strategy)}", repr(baseline)))
    runs = {name: check_runs(fn, value, f"results_by_strategy[{name!r}]")
            for name, value in results_by_strategy.items()}

    def keyed(rs):
        seeds = [r.get("seed") for r in rs]
        if all(s is not None for s in seeds) and len(set(seeds)) == len(seeds):
            return dict(zip(seeds, rs))
        return dict(enumerate(rs))

    base = keyed(runs[baseline])
    out = {}
    for name, rs in runs.items():
        mine = keyed(rs)
        common = [s for s in mine if s in base]
        if not common:
            raise ValueError(f"aljax.{fn}: strategy {name!r} shares no seed with the baseline {baseline!r}.")
        ratios = [curve_area(mine[s]) / curve_area(base[s]) for s in common]
        areas = [curve_area(mine[s]) for s in common]
        out[name] = {"mean": float(round(np.mean(ratios), 12)),
                     "std": float(np.std(ratios, ddof=1)) if len(ratios) > 1 else 0.0,
                     "per_seed": [float(r) for r in ratios], "seeds": [s if isinstance(s, int) else None
                                                                      for s in common],
                     "auc_mean": float(np.mean(areas))}
    return out


def stack_curves(runs: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(runs[0]["labels"], np.float64)
    rows = []
    for run in runs:
        if not np.array_equal(np.asarray(run["labels"], np.float64), labels):
            raise ValueError("aljax.plot_learning_curves: every run of a strategy must share its label counts.")
        rows.append(np.asarray(run["metrics"], np.float64))
    return labels, np.stack(rows)
