"""The baselines every active learning comparison needs: random, least confidence, margin,
entropy, BALD (MC dropout) and core-set (k-center greedy).

Each front door takes ``(params, apply_fn, pool, k, *, key=0, batch_size=256, ...)`` and returns
``k`` unique int32 indices into ``pool``. The score-based ones break ties by the lowest index;
their score-level forms on logits live in :mod:`aljax.scores`.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from . import _progress, _scores, _stochastic, _validate
from ._embeddings import cached, check_outputs, logits_and_features, output_shape
from ._linalg import HIGHEST
from ._padding import BUCKET_MAX_BYTES, nbytes, pad_to_bucket, pad_tree
from ._pool import open_pool
from ._sharding import auto_axes, row_layout, take_row

def pool_logits(fn: str, params, apply_fn: Callable, pool, k: int | None, batch_size: int) -> jax.Array:
    """``apply_fn`` over the pool in chunks, with shape checks on one chunk first; ``k`` (unless
    None) is checked against the pool size once it is known (after the pass, for an iterable);
    the logits are checked finite."""
    if not callable(apply_fn):
        raise TypeError(_validate.message(fn, "apply_fn", "a callable apply_fn(params, x)", type(apply_fn).__name__))
    forward = cached("logits", apply_fn, lambda: jax.jit(apply_fn))
    first, _, run = open_pool(fn, pool, batch_size)
    check_outputs(fn, output_shape(fn, forward, params, first), "classification")
    logits, n = run(lambda chunk: forward(params, chunk))
    if k is not None:
        _validate.check_k(fn, k, n)
    _validate.check_finite(fn, "the model's outputs (logits) on argument `pool`", logits)
    return logits


def _check_common(fn: str, pool, k, key, batch_size) -> tuple[int, jax.Array, int]:
    key = _validate.as_key(fn, key)
    k = _validate.check_k_for_pool(fn, k, pool)
    batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
    return k, key, batch_size


# ---------------------------------------------------------------------------------------------
# Random.


@functools.partial(jax.jit, static_argnames=("n", "k"))
def random_kernel(key: jax.Array, n: int, k: int) -> jax.Array:
    return jax.random.permutation(key, n)[:k].astype(jnp.int32)


def random_sample(params, apply_fn: Callable | None, pool, k: int, *, key=0, batch_size: int = 256,
                  problem_type: str = "classification", progress: bool | None = None) -> jax.Array:
    """Uniform random sampling without replacement: the baseline every strategy must beat.

    ``params`` and ``apply_fn`` are accepted (and ignored) so that every selector has the same
    signature.

    Args:
      params: ignored.
      apply_fn: ignored (may be ``None``).
      pool: ``(n, ...)`` array or pytree of arrays, or an iterable of batches (only the size is
        read).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key (default 0: two calls without a key use the same
        randomness; in a loop pass a fresh key each round).
      batch_size: ignored (accepted for a uniform signature).
      problem_type: ``"classification"`` or ``"regression"``: checked, otherwise ignored (accepted
        so that strategies can be swapped without changing the call).
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, uniformly at random.

    Example:
      >>> import jax.numpy as jnp, aljax
      >>> aljax.random_sample(None, None, jnp.zeros((10, 3)), 4, key=0).shape
      (4,)
    """
    with _progress.scope("random_sample", progress):
        fn = "random_sample"
        _validate.check_problem_type(fn, problem_type)
        k, key, _ = _check_common(fn, pool, k, key, batch_size)
        if _validate.is_batch_iterable(pool):
            n = sum(_validate.pool_size(fn, batch, allow_empty=True) for batch in _validate.checked_batches(fn, pool))
            if n == 0:
                raise ValueError(_validate.message(fn, "pool", "a non-empty pool (array or iterable of batches)",
                                                   "an iterable that yielded no examples"))
        else:
            n = _validate.pool_size(fn, pool)
        return random_kernel(key, n, _validate.check_k(fn, k, n))


# ---------------------------------------------------------------------------------------------
# Uncertainty scores on the model's logits.


@functools.partial(jax.jit, static_argnames=("score", "k", "mode", "layout"))
def _draw_by_score(key: jax.Array, logits: jax.Array, beta, score: Callable, k: int, mode: str,
                   layout) -> jax.Array:
    return _stochastic.draw_acquisition(key, score(logits), k, mode, beta, layout)


def _uncertainty(fn: str, score: Callable, params, apply_fn, pool, k, key, batch_size, problem_type,
                 progress, stochastic, beta) -> jax.Array:
    with _progress.scope(fn, progress):
        _validate.check_params(fn, params)
        _validate.check_problem_type(fn, problem_type, fn)
        k, key, batch_size = _check_common(fn, pool, k, key, batch_size)
        stochastic, beta = _stochastic.check_options(fn, stochastic, beta)
        logits = pool_logits(fn, params, apply_fn, pool, k, batch_size)
        if stochastic is None:
            return _scores.select(logits, score, k)
        logits = auto_axes(logits)
        return _draw_by_score(key, logits, beta, score, k, stochastic, row_layout(fn, "pool", logits))


_SELECTOR_ARGS = """
    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x) -> logits (batch, C)`` (a Flax ``model.apply``, an
        Equinox or plain function).
      pool: ``(n, ...)`` array or pytree of arrays, run through ``apply_fn`` in chunks, or an
        iterable of batches of such arrays (read once).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the draw with ``stochastic``; ignored without it
        (the top ``k`` are deterministic).
      batch_size: rows per forward chunk.
      problem_type: ``"classification"`` only (accepted for a uniform signature: the score needs
        class probabilities).
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.
      stochastic: ``None`` (default) for the top ``k``; ``"power"``, ``"softmax"`` or
        ``"softrank"`` to draw the batch without replacement with weights ``score**beta``,
        ``exp(beta·score)`` or ``rank**(−beta)`` (Kirsch et al., TMLR 2023): the picks equal
        ``aljax.stochastic_top_k(key, score, k, mode=stochastic, beta=beta)`` on the score
        above, which is ``>= 0`` and larger for the more uncertain points.
      beta: the draw's inverse temperature, a finite number ``> 0`` (checked even without
        ``stochastic``).

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, highest score first and ties broken by the
      lowest index (in draw order with ``stochastic``).
"""


def least_confidence(params, apply_fn: Callable, pool, k: int, *, key=0, batch_size: int = 256,
                     problem_type: str = "classification", progress: bool | None = None,
                     stochastic: str | None = None, beta: float = 1.0) -> jax.Array:
    return _uncertainty("least_confidence", _scores.least_confidence, params, apply_fn, pool, k, key, batch_size,
                        problem_type, progress, stochastic, beta)


def margin(params, apply_fn: Callable, pool, k: int, *, key=0, batch_size: int = 256,
           problem_type: str = "classification", progress: bool | None = None,
           stochastic: str | None = None, beta: float = 1.0) -> jax.Array:
    return _uncertainty("margin", _scores.margin, params, apply_fn, pool, k, key, batch_size,
                        problem_type, progress, stochastic, beta)


def entropy(params, apply_fn: Callable, pool, k: int, *, key=0, batch_size: int = 256,
            problem_type: str = "classification", progress: bool | None = None,
            stochastic: str | None = None, beta: float = 1.0) -> jax.Array:
    return _uncertainty("entropy", _scores.entropy, params, apply_fn, pool, k, key, batch_size,
                        problem_type, progress, stochastic, beta)


least_confidence.__doc__ = """Least-confidence sampling: the ``k`` points whose top predicted
    probability is lowest, score ``1 − max_c p_c`` (Settles, "Active learning literature
    survey", 2009; :func:`aljax.scores.least_confidence`).
""" + _SELECTOR_ARGS + """
    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W = jax.random.normal(jax.random.key(0), (4, 3))
      >>> pool = jax.random.normal(jax.random.key(1), (50, 4))
      >>> aljax.least_confidence(W, lambda W, x: x @ W, pool, 5).shape
      (5,)
"""
margin.__doc__ = """Margin sampling: the ``k`` points with the smallest gap between the two most
    likely classes, score ``1 − (p₍₁₎ − p₍₂₎)`` (Scheffer et al., "Active hidden Markov models
    for information extraction", 2001; :func:`aljax.scores.margin`). The score is one minus the
    margin, in ``[0, 1]``, so that a small margin is a large score: with ``stochastic="power"``
    the weights are ``(1 − (p₍₁₎ − p₍₂₎))**beta`` (a point whose top class has probability 1
    has weight 0).
""" + _SELECTOR_ARGS + """
    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W = jax.random.normal(jax.random.key(0), (4, 3))
      >>> pool = jax.random.normal(jax.random.key(1), (50, 4))
      >>> aljax.margin(W, lambda W, x: x @ W, pool, 5).shape
      (5,)
"""
entropy.__doc__ = """Entropy sampling: the ``k`` points of largest predictive entropy
    ``−Σ_c p_c log p_c`` (Settles 2009; :func:`aljax.scores.entropy`).
""" + _SELECTOR_ARGS + """
    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W = jax.random.normal(jax.random.key(0), (4, 3))
      >>> pool = jax.random.normal(jax.random.key(1), (50, 4))
      >>> aljax.entropy(W, lambda W, x: x @ W, pool, 5).shape
      (5,)
"""


# ---------------------------------------------------------------------------------------------
# BALD with MC dropout.


def row_passes(apply_fn: Callable, params, x, rows, keys) -> jax.Array:
    """The ``(S, batch, C)`` logits of MC pass ``s`` of row ``i``: ``apply_fn`` on that row alone with
    the key ``fold_in(keys[s], i)``, ``i`` its index in the pool. Each row's randomness depends on
    its own index only, never on which chunk it falls in, so the picks do not depend on
    ``batch_size`` (one key per chunk would give rows ``j`` and ``j + batch_size`` the same masks)."""

    def one_row(x_i, i):
        row_keys = jax.vmap(lambda kk: jax.random.fold_in(kk, i))(keys)
        return jax.vmap(lambda kk: apply_fn(params, jax.tree_util.tree_map(lambda v: v[None], x_i), kk)[0])(row_keys)

    return jnp.swapaxes(jax.vmap(one_row)(x, rows), 0, 1)


def _bald_chunk_fn(apply_fn: Callable) -> Callable:
    def parts(params, chunk, keys):
        x, rows = chunk
        return _scores.bald_parts(row_passes(apply_fn, params, x, rows, keys))

    return jax.jit(parts)


def with_row_index(fn: str, pool):
    """The pool as ``(pool, rows)`` with each example's index in the pool alongside it (laid out
    like the pool; counted along the stream for an iterable of batches)."""
    if _validate.is_batch_iterable(pool):
        def batches():
            start = 0
            for batch in _validate.checked_batches(fn, pool):
                size = _validate.pool_size(fn, batch, allow_empty=True)
                yield batch, jnp.arange(start, start + size, dtype=jnp.int32)
                start += size

        return batches()
    n = _validate.pool_size(fn, pool)
    rows = jnp.arange(n, dtype=jnp.int32)
    layout = row_layout(fn, "pool", pool)
    if layout is not None:
        rows = jax.device_put(rows, layout.sharding(1))
    return pool, rows


def open_stochastic_pool(fn: str, method: str, params, apply_fn, pool, batch_size: int, keys) -> Callable:
    """The pool of an MC front door (BALD, BatchBALD), opened with each row's index
    (:func:`with_row_index`): ``apply_fn`` checked to be a callable ``apply_fn(params, x, key)``
    returning classification logits and, on concrete inputs, to give different logits for
    ``keys[0]`` and ``keys[1]`` (a deterministic model has zero mutual information). Returns the
    pool's ``run`` (:func:`aljax._pool.open_pool`)."""
    if not callable(apply_fn):
        raise TypeError(_validate.message(fn, "apply_fn", "a callable apply_fn(params, x, key)",
                                          type(apply_fn).__name__))
    (first, _), _, run = open_pool(fn, with_row_index(fn, pool), batch_size)
    try:
        out = jax.eval_shape(lambda p, x, kk: apply_fn(p, x, kk), params, first, keys[0])
    except TypeError as err:
        raise TypeError(_validate.message(fn, "apply_fn", "a stochastic apply_fn(params, x, key) (e.g. MC dropout)",
                                          f"a function that cannot be called that way ({err})")) from None
    check_outputs(fn, out, "classification")
    if _validate.is_concrete(params, first):
        forward = cached("bald_probe", apply_fn, lambda: jax.jit(apply_fn))
        a, b = forward(params, first, keys[0]), forward(params, first, keys[1])
        if bool(jnp.all(a == b)):
            raise ValueError(_validate.message(
                fn, "apply_fn", f"stochastic in its key (e.g. dropout active) for {method}",
                "the same logits for two different keys; a deterministic model has zero mutual information"))
    return run


def bald(params, apply_fn: Callable, pool, k: int, *, key=0, batch_size: int = 256,
         problem_type: str = "classification", mc_samples: int = 20, progress: bool | None = None,
         stochastic: str | None = None, beta: float = 1.0) -> jax.Array:
    """BALD: the ``k`` points of largest mutual information between the label and the weights,
    estimated with Monte Carlo dropout.

    Houlsby, Huszár, Ghahramani & Lengyel, "Bayesian active learning for classification and
    preference learning", 2011; Gal, Islam & Ghahramani, "Deep Bayesian active learning with
    image data", ICML 2017. The score is ``H(mean_s p_s) − mean_s H(p_s)`` over ``mc_samples``
    stochastic passes (:func:`aljax.scores.bald`); the top ``k`` are returned (top-k BALD, not
    BatchBALD).

    ``apply_fn`` must be stochastic in its key: it is checked on the first chunk, with two
    different keys, before the pool is scored (skipped when the pool is being traced). Pass ``s``
    of row ``i`` runs ``apply_fn(params, x[i:i+1], fold_in(keys[s], i))`` with ``keys =
    jax.random.split(key, mc_samples)``: every row has its own masks, a function of ``key`` and
    its index only, so the picks do not depend on ``batch_size`` or on how an iterable pool is
    batched. (``apply_fn`` is vmapped over the rows of a chunk, one row per call.)

    With ``stochastic`` the batch is drawn rather than taken from the top (PowerBALD with
    ``"power"``: Kirsch et al., "Stochastic batch acquisition", TMLR 2023): the picks equal
    ``aljax.stochastic_top_k(jax.random.fold_in(key, 0xBA1D), scores, k, mode=stochastic,
    beta=beta)`` on the BALD scores, a key apart from the MC passes' (which are the same as
    without ``stochastic``).

    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x, key) -> logits (batch, C)`` with dropout (or any other
        randomness) active, e.g. ``lambda p, x, key: model.apply(p, x, deterministic=False,
        rngs={"dropout": key})``.
      pool: ``(n, ...)`` array or pytree of arrays, processed in chunks, or an iterable of
        batches of such arrays (read once).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key for the MC samples (default 0: two calls without a key
        use the same masks; in a loop pass a fresh key each round).
      batch_size: rows per forward chunk.
      problem_type: ``"classification"`` only (accepted for a uniform signature).
      mc_samples: number of stochastic passes, a Python int ``>= 2``.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.
      stochastic: ``None`` (default) for the top ``k``; ``"power"``, ``"softmax"`` or
        ``"softrank"`` to draw the batch without replacement with weights ``score**beta``,
        ``exp(beta·score)`` or ``rank**(−beta)`` (see :func:`aljax.stochastic_top_k`; BALD
        scores are ``>= 0``, 0 where the passes agree).
      beta: the draw's inverse temperature, a finite number ``> 0`` (checked even without
        ``stochastic``).

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, highest score first and ties broken by the
      lowest index (in draw order with ``stochastic``).

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W = jax.random.normal(jax.random.key(0), (8, 3))
      >>> def apply_fn(W, x, key):   # dropout on the inputs
      ...     keep = jax.random.bernoulli(key, 0.5, x.shape)
      ...     return (x * keep / 0.5) @ W
      >>> pool = jax.random.normal(jax.random.key(1), (64, 8))
      >>> aljax.bald(W, apply_fn, pool, 5, key=0, mc_samples=10).shape
      (5,)
    """
    with _progress.scope("bald", progress):
        fn = "bald"
        _validate.check_params(fn, params)
        _validate.check_problem_type(fn, problem_type, fn)
        k, key, batch_size = _check_common(fn, pool, k, key, batch_size)
        mc_samples = _validate.check_int(fn, "mc_samples", mc_samples, low=2)
        stochastic, beta = _stochastic.check_options(fn, stochastic, beta)
        keys = jax.random.split(key, mc_samples)
        run = open_stochastic_pool(fn, "BALD", params, apply_fn, pool, batch_size, keys)
        parts_fn = cached("bald", apply_fn, lambda: _bald_chunk_fn(apply_fn))
        (mean_probs, mean_entropy), n = run(lambda chunk: parts_fn(params, chunk, keys))
        _validate.check_k(fn, k, n)
        _validate.check_finite(fn, "the MC-averaged probabilities and entropies", mean_probs, mean_entropy)
        if stochastic is None:
            return _select_bald(mean_probs, mean_entropy, k)
        mean_probs, mean_entropy = auto_axes((mean_probs, mean_entropy))
        return _draw_bald(jax.random.fold_in(key, _stochastic.BALD_DRAW), mean_probs, mean_entropy, beta, k,
                          stochastic, row_layout(fn, "pool", mean_probs))


@functools.partial(jax.jit, static_argnames="k")
def _select_bald(mean_probs, mean_entropy, k: int) -> jax.Array:
    return _scores.top_k(_scores.bald_from_parts(mean_probs, mean_entropy), k)


@functools.partial(jax.jit, static_argnames=("k", "mode", "layout"))
def _draw_bald(key, mean_probs, mean_entropy, beta, k: int, mode: str, layout) -> jax.Array:
    return _stochastic.draw_acquisition(key, _scores.bald_from_parts(mean_probs, mean_entropy), k, mode, beta,
                                        layout)


# ---------------------------------------------------------------------------------------------
# Core-set: k-center greedy on penultimate features.

_LABELED_BLOCK = 256


def _min_sqdist_to_set(features: jax.Array, others: jax.Array, dtype, m_valid) -> jax.Array:
    """``min_j ||f_i − o_j||²`` for every row i, over blocks of the first ``m_valid`` rows of
    ``others``: memory O(n·block).

    Per block: ``||f||² + ||o||² − 2 f·o``, clipped at 0 (cancellation)."""
    m, dim = others.shape
    block = min(_LABELED_BLOCK, m)
    pad = (-m) % block
    others = jnp.concatenate([others, jnp.zeros((pad, dim), others.dtype)]).reshape(-1, block, dim)
    valid = (jnp.arange(m + pad) < m_valid).reshape(-1, block)
    sq_f = jnp.sum(features * features, axis=1)

    def step(best, blk):
        rows, ok = blk
        sq_o = jnp.sum(rows * rows, axis=1)
        cross = jnp.matmul(features, rows.T, precision=HIGHEST, preferred_element_type=dtype)
        d = jnp.maximum(sq_f[:, None] + sq_o[None, :] - 2 * cross, 0.0)
        d = jnp.where(ok[None, :], d, jnp.inf)
        return jnp.minimum(best, jnp.min(d, axis=1)), None

    init = jnp.full(features.shape[0], jnp.inf, dtype)
    return jax.lax.scan(step, init, (others, valid))[0]


def _k_center_greedy(features: jax.Array, labeled: jax.Array | None, k: int) -> jax.Array:
    """:func:`_k_center_greedy_padded` on the features (and labeled features) zero-padded to size
    buckets when they are concrete, on one device and small enough, so that an active-learning
    loop whose pool shrinks (and labeled set grows) every round compiles the greedy once per
    bucket, not once per round. Padded rows are never picked and never centres."""
    features = _validate.on_device(features)
    labeled = None if labeled is None else _validate.on_device(labeled)
    n, m = features.shape[0], None if labeled is None else labeled.shape[0]
    arrays = [features] + ([] if labeled is None else [labeled])
    if _validate.is_concrete(*arrays) and all(len(x.sharding.device_set) == 1 for x in arrays) and \
            nbytes(arrays) <= BUCKET_MAX_BYTES:
        features = pad_to_bucket(features, n)
        if labeled is not None:  # to a multiple of the distance pass's block: free, and few sizes
            labeled = pad_tree(labeled, size=m + -m % _LABELED_BLOCK)
    with _progress.waiting("selecting", k, unit="pick") as bar:
        return bar.wait(_k_center_greedy_padded(features, labeled, jnp.int32(n), None if m is None else jnp.int32(m),
                                                k=k))


@functools.partial(jax.jit, static_argnames="k")
def _k_center_greedy_padded(features: jax.Array, labeled: jax.Array | None, n_valid, m_valid, *,
                            k: int) -> jax.Array:
    """k-center greedy over the first ``n_valid`` rows of ``features``, the first ``m_valid`` rows
    of ``labeled`` as initial centres; rows past them are padding (zeros)."""
    dtype = jnp.result_type(jnp.float32, features.dtype)
    features = features.astype(dtype)
    n = features.shape[0]

    rows = jnp.arange(n, dtype=jnp.int32)
    real = rows < n_valid
    # Of the features as given: the first centre (padding below every real row's norm).
    norms = jnp.where(real, jnp.sum(features * features, axis=1), -1.0)
    # Distances do not change under a translation: centre on the pool's mean, so that a large common
    # offset cannot swamp them in the expansion below (cancellation). Padded rows are zeros.
    mean = jnp.sum(features, axis=0) / n_valid.astype(dtype)
    features = features - mean
    if labeled is not None:
        labeled = labeled.astype(dtype) - mean
    sq = jnp.sum(features * features, axis=1)
    rtol = 16 * jnp.finfo(dtype).eps

    # Sharding-friendly (features sharded along rows, labeled replicated): distances stay local;
    # per step only a partial argmax per device and the picked row (take_row) cross devices.
    # ||f_j − f_i||² = ||f_j||² + ||f_i||² − 2 f_j·f_i: one matrix-vector product per step (XLA
    # streams a matvec far better than the fused difference of squares); cancellation noise below
    # rtol·scale counts as 0, so duplicates stay at distance 0.
    def sqdist_to(i):
        centre = take_row(features, i)
        sq_i = jnp.sum(centre * centre)
        d = sq + sq_i - 2 * jnp.matmul(features, centre, precision=HIGHEST, preferred_element_type=dtype)
        return jnp.where(d <= rtol * (sq + sq_i), 0.0, d).astype(dtype)

    picks = jnp.zeros(k, jnp.int32)
    chosen = ~real  # padding: never eligible
    if labeled is None:
        # No labeled set: the first centre is the point of largest feature norm (deterministic).
        first = jnp.argmax(norms).astype(jnp.int32)
        picks, chosen, dist, start = picks.at[0].set(first), chosen | (rows == first), sqdist_to(first), 1
    else:
        dist, start = _min_sqdist_to_set(features, labeled.astype(dtype), dtype, m_valid), 0

    def step(t, state):
        dist, chosen, picks = state
        # The farthest unchosen point from every centre so far; argmax takes the lowest index on ties.
        i = jnp.argmax(jnp.where(chosen, -jnp.inf, dist)).astype(jnp.int32)
        return jnp.minimum(dist, sqdist_to(i)), chosen | (rows == i), picks.at[t].set(i)

    return jax.lax.fori_loop(start, k, step, (dist, chosen, picks))[2]


def k_center_greedy(embedding, k: int, *, key=0, labeled=None) -> jax.Array:
    """k-center greedy (Sener & Savarese, "Active learning for convolutional neural networks: a
    core-set approach", ICLR 2018) on feature vectors.

    Each pick is the point farthest (Euclidean) from its nearest centre so far, where the centres
    are the labeled points and the picks made so far. With no labeled set the first centre is the
    point of largest feature norm. Ties go to the lowest index. Memory is O(n) in the pool (the
    distance to the labeled set is built over blocks of 256 labeled rows; no ``n × n`` matrix).
    If more points are requested than there are distinct ones, the remaining picks are the
    lowest-index unchosen points (distance 0): never a duplicate.

    Several devices: ``embedding`` sharded along its rows (a ``NamedSharding``) keeps the
    distances on the device that holds each row (``labeled`` may be replicated); per
    step only one partial argmax per device and the picked row cross devices. Same picks as on
    one device.

    Args:
      embedding: ``(n, D)`` floating features of the pool.
      k: number of points, a Python int in ``[1, n]``.
      key: accepted and ignored (the greedy is deterministic).
      labeled: optional ``(m, D)`` features of the labeled set (the initial centres).

    Returns:
      ``(k,)`` int32 unique indices into ``features``, in greedy order.

    Example:
      >>> import jax.numpy as jnp, aljax
      >>> feats = jnp.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [0.0, 3.0]])
      >>> aljax.k_center_greedy(feats, 2).tolist()
      [2, 3]
    """
    fn = "k_center_greedy"
    _validate.as_key(fn, key)
    _validate.check_floating_2d(fn, "embedding", embedding)
    if embedding.shape[0] == 0:
        raise ValueError(_validate.message(fn, "embedding", "a non-empty pool", "an empty pool (0 examples)"))
    k = _validate.check_k(fn, k, embedding.shape[0])
    if labeled is not None:
        _validate.check_floating_2d(fn, "labeled", labeled)
        if labeled.shape[1] != embedding.shape[1]:
            raise ValueError(_validate.message(fn, "labeled", f"{embedding.shape[1]} columns like `embedding`",
                                               f"shape {tuple(labeled.shape)}"))
        if labeled.shape[0] == 0:
            labeled = None
    _validate.check_finite(fn, "the embedding", embedding, *([] if labeled is None else [labeled]))
    return _k_center_greedy(auto_axes(_validate.on_device(embedding)),
                            None if labeled is None else auto_axes(_validate.on_device(labeled)),
                            k)


def coreset(params, apply_fn: Callable, pool, k: int, *, key=0, labeled=None, batch_size: int = 256,
            features_fn: Callable | None = None, problem_type: str = "classification",
            progress: bool | None = None) -> jax.Array:
    """Core-set selection: k-center greedy on the penultimate features, conditioned on the
    labeled set (Sener & Savarese, "Active learning for convolutional neural networks: a
    core-set approach", ICLR 2018).

    The features are the input of the model's last dense layer (found by tracing ``apply_fn``, or
    given by ``features_fn``); see :func:`k_center_greedy` for the greedy rule, the first centre
    without a labeled set, ties and memory.

    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x) -> logits (batch, C)``.
      pool: ``(n, ...)`` array or pytree of arrays (the unlabeled candidates), or an iterable of
        batches of such arrays (read once). Leaves sharded along ``n`` run data-parallel and the
        greedy stays sharded (see :func:`k_center_greedy`).
      k: number of points, a Python int in ``[1, n]``.
      key: accepted and ignored (the selection is deterministic).
      labeled: optional labeled *inputs* ``(m, ...)`` (same structure as ``pool``, not indices);
        the greedy starts from their features as centres.
      batch_size: rows per forward chunk.
      features_fn: optional ``features_fn(params, x) -> (batch, D)``.
      problem_type: ``"classification"`` (logits ``(batch, C)``) or ``"regression"`` (outputs
        ``(batch,)`` or ``(batch, m)``); the greedy reads only the features either way.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, in greedy order.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jax.random.normal(jax.random.key(0), (4, 16)), jnp.ones((16, 3))
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> pool = jax.random.normal(jax.random.key(1), (100, 4))
      >>> aljax.coreset((W1, W2), apply_fn, pool, 5, labeled=pool[:10]).shape
      (5,)
    """
    with _progress.scope("coreset", progress):
        fn = "coreset"
        _validate.check_params(fn, params)
        _validate.check_problem_type(fn, problem_type)
        k, _, batch_size = _check_common(fn, pool, k, key, batch_size)
        like, pool = _validate.peek_batches(fn, pool)
        if labeled is not None:
            leaves = jax.tree_util.tree_leaves(labeled)
            if leaves and all(getattr(leaf, "shape", (1,))[:1] == (0,) for leaf in leaves):
                labeled = None
        if labeled is not None:  # checked before the pool is read
            _validate.check_labeled_like_pool(fn, labeled, like)
        _, features = logits_and_features(params, apply_fn, pool, batch_size=batch_size, features_fn=features_fn,
                                          fn_name=fn, problem_type=problem_type)
        k = _validate.check_k(fn, k, features.shape[0])
        labeled_features = None
        if labeled is not None:
            _, labeled_features = logits_and_features(params, apply_fn, labeled, batch_size=batch_size,
                                                      features_fn=features_fn, fn_name=fn, problem_type=problem_type)
        return _k_center_greedy(features, labeled_features, k)
