"""Cluster-Margin (Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan, Rostamizadeh & Kumar, "Batch
active learning at scale", NeurIPS 2021): margin sampling made diverse by a clustering of the
pool computed once.

Each round takes the ``margin_multiple·k`` points of smallest margin, groups them by cluster and
fills the batch round-robin, one point per cluster per turn, from the smallest cluster (counted
among those candidates) up; within a cluster the points come in a random order drawn from
``key``, as in the paper. The clustering (:mod:`aljax._hac`) is a value computed once
(:func:`cluster_pool` on a model's penultimate features, or :func:`aljax.hac_clustering` on any
features) and passed to every round.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _progress, _scores, _validate
from ._baselines import pool_logits
from ._padding import bucket_rows
from ._embeddings import logits_and_features
from ._hac import MAX_EXACT, N_CENTRES, Clustering, check_fingerprint, check_sizes, check_threshold, \
    cluster_features, row_hashes

MARGIN_MULTIPLE = 10.0
# The front door's clustering key is this fold of the user's key (the round-robin uses the key
# itself, so that the front door and the selector pick alike for the same key).
_CLUSTER_KEY = 0xC1A5


def check_margin_multiple(fn: str, margin_multiple: Any) -> float:
    if isinstance(margin_multiple, bool) or not isinstance(margin_multiple, numbers.Real):
        raise TypeError(_validate.message(fn, "margin_multiple", "a real number >= 1",
                                          f"{type(margin_multiple).__name__} {margin_multiple!r}"))
    if not (np.isfinite(margin_multiple) and margin_multiple >= 1):
        raise ValueError(_validate.message(fn, "margin_multiple", "a finite number >= 1", margin_multiple))
    return float(margin_multiple)


def check_clustering(fn: str, clustering: Any, n: int | None) -> Clustering:
    if not isinstance(clustering, Clustering):
        raise TypeError(_validate.message(fn, "clustering", "an aljax.Clustering (from aljax.cluster_pool or "
                                          "aljax.hac_clustering)", type(clustering).__name__))
    n_c = clustering.labels.shape[0]
    if n is not None and n_c != n:
        raise ValueError(f"aljax.{fn}: argument `clustering` was computed on a pool of {n_c} points, but the pool "
                         f"has {n}: pass the clustering of this pool (restrict a clustering of a larger pool to the "
                         "rows still unlabeled with `clustering.take(rows)`).")
    return clustering


def candidates_for(k: int, margin_multiple: float, n: int) -> int:
    """``min(n, ⌈margin_multiple·k⌉)``: the number of lowest-margin candidates."""
    return min(n, max(k, math.ceil(margin_multiple * k - 1e-9)))


def round_robin_kernel(key: jax.Array, logits, labels, k: int, n_candidates: int) -> jax.Array:
    """:func:`_round_robin` on concrete unsharded logits and labels zero-padded to a size bucket
    (the padding never a candidate), so that a loop's rounds, whose pool shrinks, compile it once
    per bucket; else as they are."""
    (logits, labels), n_valid = bucket_rows((logits, labels), logits.shape[0])
    return _round_robin(key, logits, labels, n_valid, k=k, n_candidates=n_candidates)


@functools.partial(jax.jit, static_argnames=("k", "n_candidates"))
def _round_robin(key: jax.Array, logits: jax.Array, labels: jax.Array, n_valid, *, k: int,
                 n_candidates: int) -> jax.Array:
    """The candidates (lowest margin first, ties to the lowest index) ordered by turn: turn ``t``
    takes the ``t``-th point (in the random order ``permutation(key, n_candidates)``) of every
    cluster that has one, smallest cluster first (size among the candidates; equal sizes by
    cluster id); the first ``k``. Rows from ``n_valid`` on (traced; None: none) are padding."""
    n = logits.shape[0]
    score = _scores.margin(logits)
    if n_valid is not None:
        score = jnp.where(jnp.arange(n) < n_valid, score, -jnp.inf)
    candidates = _scores.top_k(score, n_candidates)
    cluster = labels[candidates]
    order_in_cluster = jax.random.permutation(key, n_candidates)
    size = jnp.zeros(n, jnp.int32).at[cluster].add(1)[cluster]
    by_cluster = jnp.lexsort((order_in_cluster, cluster))
    sorted_cluster = cluster[by_cluster]
    start = jnp.searchsorted(sorted_cluster, sorted_cluster, side="left")
    turn = jnp.zeros(n_candidates, jnp.int32).at[by_cluster].set(jnp.arange(n_candidates, dtype=jnp.int32) - start)
    picks = jnp.lexsort((cluster, size, turn))[:k]
    return candidates[picks].astype(jnp.int32)


def _check_logits(fn: str, logits) -> None:
    _validate.check_floating_2d(fn, "embedding", logits)
    if logits.shape[0] == 0:
        raise ValueError(_validate.message(fn, "embedding", "a non-empty pool", "an empty pool (0 examples)"))
    if logits.shape[1] < 2:
        raise ValueError(_validate.message(fn, "embedding", "logits (n, C) with C >= 2 classes (a margin needs two)",
                                           f"shape {tuple(logits.shape)}"))


def margin_round_robin(embedding, k: int, *, key=0, clustering: Clustering | None = None,
                       margin_multiple: float = MARGIN_MULTIPLE) -> jax.Array:
    """Cluster-Margin's selection on a model's logits and a clustering of the pool (Citovsky et
    al., "Batch active learning at scale", NeurIPS 2021).

    The ``⌈margin_multiple·k⌉`` points of smallest margin ``p₍₁₎ − p₍₂₎`` (capped at ``n``; ties
    to the lowest index, as :func:`aljax.margin`) are grouped by their cluster; the batch is
    filled round-robin, one point of each cluster per turn, from the cluster with the fewest
    candidates up (equal counts: the lower cluster id first). Within a cluster the points come in
    a random order: candidate ``i`` (in margin order) has rank ``jax.random.permutation(key,
    n_candidates)[i]``. With ``margin_multiple=1`` the batch is the ``k`` lowest margins.

    Args:
      embedding: ``(n, C)`` floating logits of the pool, ``C >= 2``.
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the order within clusters.
      clustering: the :class:`aljax.Clustering` of these ``n`` points, required (``None`` is
        refused with a ``TypeError``; only its size can be checked here;
        :func:`aljax.cluster_margin` also checks its fingerprint against the pool).
      margin_multiple: candidates per pick, a finite number ``>= 1`` (default 10).

    Returns:
      ``(k,)`` int32 unique indices into ``embedding``, in pick order (turn by turn).

    Example:
      >>> import jax.numpy as jnp, aljax
      >>> feats = jnp.array([[0.0], [0.1], [0.2], [5.0], [5.1]])
      >>> clustering = aljax.hac_clustering(feats, threshold=1.0)   # {0, 1, 2} and {3, 4}
      >>> logits = jnp.array([[0.0, 0.1], [0.0, 0.2], [0.0, 0.3], [0.0, 0.4], [0.0, 3.0]])
      >>> aljax.margin_round_robin(logits, 2, clustering=clustering, margin_multiple=1.0).tolist()
      [0, 1]
      >>> first, second = aljax.margin_round_robin(logits, 2, clustering=clustering, margin_multiple=2.0).tolist()
      >>> first, second in (0, 1, 2)   # candidates 0-3: point 3 is alone in its cluster
      (3, True)
    """
    fn = "margin_round_robin"
    key = _validate.as_key(fn, key)
    _check_logits(fn, embedding)
    n = embedding.shape[0]
    k = _validate.check_k(fn, k, n)
    margin_multiple = check_margin_multiple(fn, margin_multiple)
    _validate.check_finite(fn, "argument `embedding` (the logits)", embedding)
    clustering = check_clustering(fn, clustering, n)
    return round_robin_kernel(key, jnp.asarray(embedding), clustering.labels, k, candidates_for(k, margin_multiple, n))


# ---------------------------------------------------------------------------------------------
# Front doors.


def _hashing(fn: str, pool, hashes: list):
    """The batches of an iterable pool, unchanged, their row hashes appended to ``hashes``."""
    for batch in pool:
        hashes.append(row_hashes(batch) if _validate.pool_size(fn, batch, allow_empty=True) else
                      jnp.zeros((0, 2), jnp.uint32))
        yield batch


def _clustering_options(fn: str, threshold, max_exact, n_centres) -> tuple[float, int, int]:
    if threshold is None:
        raise ValueError(_validate.message(fn, "threshold", "a finite distance > 0 (or pass `clustering=`)", None))
    return (check_threshold(fn, threshold), *check_sizes(fn, max_exact, n_centres))


def cluster_pool(params, apply_fn: Callable, pool, *, threshold: float, key=0, batch_size: int = 256,
                 features_fn: Callable | None = None, problem_type: str = "classification",
                 max_exact: int = MAX_EXACT, n_centres: int = N_CENTRES, progress: bool | None = None) -> Clustering:
    """Cluster-Margin's clustering of a pool, computed once: average-linkage agglomerative
    clustering of the model's penultimate features cut at ``threshold`` (exact up to
    ``max_exact`` points, two-level beyond; see :func:`aljax.hac_clustering`), fingerprinted
    with a 64-bit hash of every row of ``pool`` so that :func:`aljax.cluster_margin` refuses it
    with another pool.

    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x) -> logits (batch, C)``.
      pool: ``(n, ...)`` array or pytree of arrays, or an iterable of batches (read once).
      threshold: the distance cut, a finite number ``> 0``, on the scale of the features.
      key: int seed or ``jax.random`` key of the two-level scheme (unused by the exact path).
      batch_size: rows per forward chunk.
      features_fn: optional ``features_fn(params, x) -> (batch, D)``.
      problem_type: ``"classification"`` or ``"regression"`` (only the features are read).
      max_exact: the largest pool clustered exactly, an int ``>= 2``.
      n_centres: the two-level scheme's centres, an int ``>= 2`` (at most ``max_exact`` when
        the pool has more than ``max_exact`` points).
      progress: progress bars: ``None`` (default) shows them when stderr is a terminal, once
        the work has run for two seconds; ``True`` always (needs tqdm); ``False`` never.

    Returns:
      An :class:`aljax.Clustering` of the ``n`` points.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jax.random.normal(jax.random.key(0), (4, 16)), jnp.ones((16, 3))
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> pool = jax.random.normal(jax.random.key(1), (100, 4))
      >>> clustering = aljax.cluster_pool((W1, W2), apply_fn, pool, threshold=3.0)
      >>> clustering.labels.shape
      (100,)
    """
    with _progress.scope("cluster_pool", progress):
        fn = "cluster_pool"
        _validate.check_params(fn, params)
        _validate.check_problem_type(fn, problem_type)
        key = _validate.as_key(fn, key)
        threshold, max_exact, n_centres = _clustering_options(fn, threshold, max_exact, n_centres)
        if not _validate.is_batch_iterable(pool):
            _validate.pool_size(fn, pool)
        return _cluster(fn, params, apply_fn, pool, key, batch_size, features_fn, problem_type, threshold,
                        max_exact, n_centres)[0]


def _cluster(fn, params, apply_fn, pool, key, batch_size, features_fn, problem_type, threshold, max_exact,
             n_centres) -> tuple[Clustering, jax.Array]:
    """The clustering of the pool and the logits of the same forward pass."""
    hashes: list = []
    iterable = _validate.is_batch_iterable(pool)
    source = _hashing(fn, pool, hashes) if iterable else pool
    logits, h = logits_and_features(params, apply_fn, source, batch_size=batch_size, features_fn=features_fn,
                                    fn_name=fn, problem_type=problem_type)
    hashes = jnp.concatenate(hashes) if iterable else row_hashes(pool)
    labels, n_clusters = cluster_features(fn, key, h, threshold, max_exact, n_centres)
    return Clustering(labels, n_clusters, hashes), logits


def cluster_margin(params, apply_fn: Callable, pool, k: int, *, key=0, batch_size: int = 256,
                   features_fn: Callable | None = None, problem_type: str = "classification",
                   clustering: Clustering | None = None, threshold: float | None = None,
                   margin_multiple: float = MARGIN_MULTIPLE, max_exact: int = MAX_EXACT,
                   n_centres: int = N_CENTRES, progress: bool | None = None) -> jax.Array:
    """Cluster-Margin: the lowest-margin points, spread over a clustering of the pool (Citovsky
    et al., "Batch active learning at scale", NeurIPS 2021).

    The ``⌈margin_multiple·k⌉`` points of smallest margin are grouped by cluster and the batch
    is filled round-robin from the smallest cluster up, a random point of each cluster per turn
    (:func:`aljax.margin_round_robin`). The clustering is computed once and passed to every
    round: make it with :func:`aljax.cluster_pool` (average-linkage HAC of the penultimate
    features at a distance ``threshold``), pass it as ``clustering=``, and restrict it with
    ``clustering.take(rows)`` when the pool shrinks to its unlabeled rows. It is checked against
    ``pool`` before the forward pass (after it, for an iterable pool): same number of points and
    the same hash of every row, else ``ValueError``. Without ``clustering``, ``threshold`` is
    required and the pool is clustered in this call (with ``jax.random.fold_in(key, 0xC1A5)``
    for the two-level scheme) — once per call, so pass the clustering in a loop.

    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x) -> logits (batch, C)``.
      pool: ``(n, ...)`` array or pytree of arrays, or an iterable of batches (read once).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the order within clusters.
      batch_size: rows per forward chunk.
      features_fn: optional ``features_fn(params, x) -> (batch, D)`` (read only to cluster).
      problem_type: ``"classification"`` only (the margin needs class probabilities).
      clustering: the :class:`aljax.Clustering` of ``pool``, or ``None`` to compute it here.
      threshold: the distance cut when ``clustering`` is ``None`` (else it must be ``None``).
      margin_multiple: candidates per pick, a finite number ``>= 1`` (default 10).
      max_exact, n_centres: the clustering's sizes when it is computed here
        (:func:`aljax.hac_clustering`).
      progress: progress bars: ``None`` (default) shows them when stderr is a terminal, once
        the work has run for two seconds; ``True`` always (needs tqdm); ``False`` never.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, in pick order.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jax.random.normal(jax.random.key(0), (4, 16)), jax.random.normal(jax.random.key(2), (16, 3))
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> pool = jax.random.normal(jax.random.key(1), (100, 4))
      >>> clustering = aljax.cluster_pool((W1, W2), apply_fn, pool, threshold=3.0)
      >>> aljax.cluster_margin((W1, W2), apply_fn, pool, 5, clustering=clustering, key=1).shape
      (5,)
    """
    with _progress.scope("cluster_margin", progress):
        fn = "cluster_margin"
        _validate.check_params(fn, params)
        _validate.check_problem_type(fn, problem_type, fn)
        key = _validate.as_key(fn, key)
        k = _validate.check_k_for_pool(fn, k, pool)
        batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
        margin_multiple = check_margin_multiple(fn, margin_multiple)
        iterable = _validate.is_batch_iterable(pool)
        n = None if iterable else _validate.pool_size(fn, pool)
        if clustering is None:
            threshold, max_exact, n_centres = _clustering_options(fn, threshold, max_exact, n_centres)
            clustering, logits = _cluster(fn, params, apply_fn, pool, jax.random.fold_in(key, _CLUSTER_KEY),
                                          batch_size, features_fn, problem_type, threshold, max_exact, n_centres)
            n = logits.shape[0]
        else:
            if threshold is not None:
                raise ValueError(_validate.message(fn, "threshold", "None when `clustering` is given (the threshold "
                                                   "was fixed when the clustering was computed)", threshold))
            check_clustering(fn, clustering, n)
            hashes: list = []
            if not iterable:
                check_fingerprint(fn, "pool", clustering, row_hashes(pool))
            logits = pool_logits(fn, params, apply_fn, _hashing(fn, pool, hashes) if iterable else pool, None,
                                 batch_size)
            n = logits.shape[0]
            if iterable:
                check_fingerprint(fn, "pool", clustering, jnp.concatenate(hashes))
        k = _validate.check_k(fn, k, n)
        return round_robin_kernel(key, logits, clustering.labels, k, candidates_for(k, margin_multiple, n))
