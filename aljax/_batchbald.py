"""BatchBALD (Kirsch, van Amersfoort & Gal, NeurIPS 2019): greedy maximisation of the mutual
information between the labels of a whole batch and the model's weights.

The selector :func:`mutual_information_greedy` reads ``(S, n, C)`` class probabilities of ``S``
weight samples (MC dropout passes with the *same* masks for every pool point, or an ensemble);
the front door :func:`batch_bald` produces them from a stochastic ``apply_fn(params, x, key)``.

The score of a candidate ``i`` given the batch ``B`` so far is

    a(B ∪ {i}) = H(y_B, y_i) − Σ_{j ∈ B ∪ {i}} E_w H(y_j | w),

with the joint over the weight samples, ``p(y_B, y_i) = (1/S) Σ_s p_s(y_B) p_s(y_i)``. A buffer
``Q (S, M)`` holds ``p_s(ŷ_m)`` for ``M`` configurations ``ŷ_m`` of ``y_B``; the joints of every
candidate with every configuration are one matrix product ``Qᵀ P`` (``P (S, n·C)``), chunked
over the pool, and the joint entropy is a weighted sum of ``−x log x`` over it:

* exact, while ``C^|B| <= configurations``: all ``C^|B|`` configurations, weights 1;
* sampled beyond (the paper's estimator): ``M = S·⌊configurations/S⌋`` configurations drawn
  from ``p(y_B)`` (``M/S`` from each weight sample, a stratified draw), each new batch point's
  label drawn given the configuration's weight sample, and
  ``H ≈ (1/M) Σ_m Σ_c p(ŷ_m, c)/p(ŷ_m) · (−log p(ŷ_m, c))``, unbiased for the joint entropy of
  the ``S`` weight samples, with a standard error ∝ ``1/√M``.

Each column of the sampled buffer is rescaled to a maximum of 1 (its log scale kept apart), so
that products over long batches do not underflow.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from . import _progress, _validate
from ._baselines import open_stochastic_pool, row_passes
from ._embeddings import cached
from ._linalg import HIGHEST
from ._padding import bucket_rows

# Floats of the candidate pass's ``(M, rows·C)`` joint block: the chunk of pool rows per matrix
# product is ``max(1, CHUNK_ELEMENTS // (M·C))`` (64 MiB in float32).
CHUNK_ELEMENTS = 2**24
DEFAULT_CONFIGURATIONS = 10_000


class _Plan:
    """The static shape of one run: ``exact`` greedy steps on exact joints, then sampled ones."""

    def __init__(self, n: int, mc_samples: int, n_classes: int, k: int, configurations: int):
        # The largest batch whose configurations all fit: C^t <= configurations.
        t, size = 0, 1
        while size * n_classes <= configurations:
            t, size = t + 1, size * n_classes
        self.exact = min(k, t + 1)             # steps 0..t see a batch of at most t points
        self.sampled_columns = mc_samples * (configurations // mc_samples)
        widest = size if k <= t + 1 else max(size, self.sampled_columns)
        self.chunk = max(1, min(n, CHUNK_ELEMENTS // (widest * n_classes)))


def _conditional_entropy(probs_t: jax.Array) -> jax.Array:
    """``E_s H(y_i | w_s)`` per row of ``probs_t (n, S, C)``."""
    safe = jnp.where(probs_t > 0, probs_t, 1.0)
    return -jnp.mean(jnp.sum(probs_t * jnp.log(safe), axis=-1), axis=-1)


def _joint_entropies(chunks: jax.Array, buffer: jax.Array, weights: jax.Array) -> jax.Array:
    """``Σ_m weights_m Σ_c −x log x`` with ``x[m, i, c] = (1/S) Σ_s buffer[s, m] P[i, s, c]``, for
    every row ``i`` of ``chunks (n_chunks, rows, S, C)``: one ``(M, rows·C)`` block at a time."""
    n_samples = buffer.shape[0]

    def one(chunk):
        rows, _, n_classes = chunk.shape
        flat = jnp.transpose(chunk, (1, 0, 2)).reshape(n_samples, rows * n_classes)
        joint = jnp.matmul(buffer.T, flat, precision=HIGHEST) / n_samples
        nats = -joint * jnp.log(jnp.where(joint > 0, joint, 1.0))
        return jnp.matmul(weights, nats, precision=HIGHEST).reshape(rows, n_classes).sum(axis=1)

    return jax.lax.map(one, chunks).reshape(-1)


def _add_exact(buffer: jax.Array, point: jax.Array) -> jax.Array:
    """All configurations of the batch and a new point: ``(S, M)`` and ``(S, C)`` -> ``(S, M·C)``."""
    return (buffer[:, :, None] * point[:, None, :]).reshape(buffer.shape[0], -1)


def _add_sampled(state, point: jax.Array, key: jax.Array):
    """Extend each sampled configuration with a label of the new point drawn under its own weight
    sample (column ``m`` belongs to sample ``m mod S``); rescale each column to a maximum of 1."""
    buffer, log_scale = state
    n_samples, columns = buffer.shape
    owner = jnp.arange(columns) % n_samples
    labels = jax.random.categorical(key, jnp.log(point[owner]), axis=-1)
    buffer = buffer * point[:, labels]
    top = jnp.max(buffer, axis=0)
    return buffer / top, log_scale + jnp.log(top)


def _sampled_weights(state) -> tuple[jax.Array, jax.Array]:
    """Column weights ``1/(M·q̃_m)`` and the constant ``mean_m(−log r_m)`` of the estimator."""
    buffer, log_scale = state
    return 1.0 / (buffer.shape[1] * jnp.mean(buffer, axis=0)), -jnp.mean(log_scale)


def _chunked(probs_t: jax.Array, chunk: int) -> jax.Array:
    """``(n, S, C)`` -> ``(n_chunks, chunk, S, C)``, padded with uniform rows (never picked)."""
    n, n_samples, n_classes = probs_t.shape
    pad = -n % chunk
    filler = jnp.full((pad, n_samples, n_classes), 1.0 / n_classes, probs_t.dtype)
    return jnp.concatenate([probs_t, filler]).reshape(-1, chunk, n_samples, n_classes)


def greedy(probs_t, key: jax.Array, *, k: int, configurations: int) -> jax.Array:
    """BatchBALD's greedy on ``probs_t (n, S, C)`` (valid input assumed): an unsharded concrete
    ``probs_t`` is zero-padded to a size bucket first (the padding is never picked), so that the
    rounds of a loop, whose pool shrinks, compile the greedy once per bucket."""
    probs_t, n_valid = bucket_rows(probs_t, probs_t.shape[0])
    return _greedy(probs_t, key, n_valid, k=k, configurations=configurations)


@functools.partial(jax.jit, static_argnames=("k", "configurations"))
def _greedy(probs_t: jax.Array, key: jax.Array, n_valid=None, *, k: int, configurations: int) -> jax.Array:
    """:func:`greedy`; rows from ``n_valid`` on (traced; None: none) are padding."""
    n, n_samples, n_classes = probs_t.shape
    dtype = jnp.result_type(jnp.float32, probs_t.dtype)
    probs_t = probs_t.astype(dtype)
    plan = _Plan(n, n_samples, n_classes, k, configurations)
    chunks = _chunked(probs_t, plan.chunk)
    penalty = _conditional_entropy(probs_t)
    if n_valid is not None:
        penalty = jnp.where(jnp.arange(n) < n_valid, penalty, jnp.inf)
    penalty = jnp.concatenate([penalty, jnp.full(chunks.shape[0] * plan.chunk - n, jnp.inf, dtype)])

    def pick(entropies, chosen):
        # The constant parts of the score (the batch's own conditional entropies) do not move the
        # argmax; chosen and padding rows are out; ties go to the lowest index.
        score = jnp.where(chosen, -jnp.inf, entropies - penalty)
        return jnp.argmax(score).astype(jnp.int32)

    picks = jnp.zeros(k, jnp.int32)
    chosen = penalty == jnp.inf
    buffer = jnp.ones((n_samples, 1), dtype)
    for t in range(plan.exact):   # the exact phase: at most ⌊log_C(configurations)⌋ + 1 steps
        i = pick(_joint_entropies(chunks, buffer, jnp.ones(buffer.shape[1], dtype)), chosen)
        picks, chosen = picks.at[t].set(i), chosen.at[i].set(True)
        if t + 1 < plan.exact:
            buffer = _add_exact(buffer, probs_t[i])
    if plan.exact == k:
        return picks

    def add(t, i, state):   # batch point t (pool row i): its label drawn with fold_in(key, t)
        return _add_sampled(state, probs_t[i], jax.random.fold_in(key, t))

    state = (jnp.ones((n_samples, plan.sampled_columns), dtype), jnp.zeros(plan.sampled_columns, dtype))
    state = jax.lax.fori_loop(0, plan.exact, lambda t, state: add(t, picks[t], state), state)

    def step(t, carry):
        picks, chosen, state = carry
        weights, _ = _sampled_weights(state)
        i = pick(_joint_entropies(chunks, state[0], weights), chosen)
        return picks.at[t].set(i), chosen.at[i].set(True), add(t, i, state)

    return jax.lax.fori_loop(plan.exact, k, step, (picks, chosen, state))[0]


@functools.partial(jax.jit, static_argnames=("configurations",))
def _joint_entropy_with(probs_t: jax.Array, batch: jax.Array, key: jax.Array, *, configurations: int) -> jax.Array:
    """``H(y_batch, y_i)`` for every row ``i`` of ``probs_t (n, S, C)``, estimated as the greedy
    does at a batch of this size (exact or sampled with the same rule). For tests and docs."""
    n, n_samples, n_classes = probs_t.shape
    size = batch.shape[0]
    plan = _Plan(n, n_samples, n_classes, size + 1, configurations)
    chunks = _chunked(probs_t, plan.chunk)
    if size < plan.exact:
        buffer = jnp.ones((n_samples, 1), probs_t.dtype)
        for j in range(size):
            buffer = _add_exact(buffer, probs_t[batch[j]])
        return _joint_entropies(chunks, buffer, jnp.ones(buffer.shape[1], probs_t.dtype))[:n]
    state = (jnp.ones((n_samples, plan.sampled_columns), probs_t.dtype), jnp.zeros(plan.sampled_columns, probs_t.dtype))
    for j in range(size):
        state = _add_sampled(state, probs_t[batch[j]], jax.random.fold_in(key, j))
    weights, constant = _sampled_weights(state)
    return _joint_entropies(chunks, state[0], weights)[:n] + constant


def _check_configurations(fn: str, configurations, mc_samples: int) -> int:
    return _validate.check_int(fn, "configurations", configurations, low=mc_samples)


def _check_probs(fn: str, probs) -> None:
    """``(S, n, C)`` floating probabilities: S >= 2, n >= 1, C >= 2, finite, >= 0, rows summing to 1
    (the values are checked when concrete)."""
    shape, dtype = getattr(probs, "shape", None), getattr(probs, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(_validate.message(fn, "embedding", "an (mc_samples, n, C) array of probabilities",
                                          type(probs).__name__))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(_validate.message(fn, "embedding", "a floating array of probabilities", f"dtype {dtype}"))
    if len(shape) != 3:
        raise ValueError(_validate.message(fn, "embedding", "a 3-D (mc_samples, n, C) array of probabilities",
                                           f"shape {tuple(shape)}"))
    if shape[0] < 2:
        raise ValueError(_validate.message(fn, "embedding", "at least 2 weight samples (mc_samples >= 2) along "
                                           "axis 0", f"shape {tuple(shape)}"))
    if shape[1] == 0:
        raise ValueError(_validate.message(fn, "embedding", "a non-empty pool", "an empty pool (0 examples)"))
    if shape[2] < 2:
        raise ValueError(_validate.message(fn, "embedding", "at least 2 classes along axis 2", f"shape {tuple(shape)}"))
    if not _validate.is_concrete(probs):
        return
    _validate.check_finite(fn, "the probabilities (`embedding`)", probs)
    low, err = (float(v) for v in _probs_summary(probs))
    if low < 0:
        raise ValueError(_validate.message(fn, "embedding", "probabilities >= 0", f"a value of {low:.3g}"))
    tol = 1e-3 if jnp.finfo(dtype).bits <= 32 else 1e-9
    if err > tol:
        raise ValueError(_validate.message(fn, "embedding", f"probabilities summing to 1 over axis 2 (to {tol:g})",
                                           f"a row whose sum is off by {err:.3g}"))


@jax.jit
def _probs_summary(probs):
    return jnp.min(probs), jnp.max(jnp.abs(jnp.sum(probs, axis=-1) - 1))


def mutual_information_greedy(embedding, k: int, *, key=0, configurations: int = DEFAULT_CONFIGURATIONS) -> jax.Array:
    """BatchBALD's greedy on class probabilities of weight samples (Kirsch, van Amersfoort & Gal,
    "BatchBALD: efficient and diverse batch acquisition for deep Bayesian active learning",
    NeurIPS 2019).

    Pick after pick, the point that maximises the mutual information between the labels of the
    batch so far plus that point and the weights, ``H(y_B, y_i) − Σ_{j ∈ B ∪ {i}} E_w H(y_j|w)``,
    with the joint entropy over the ``S`` weight samples of ``embedding``. The first pick is
    BALD's top point. One jitted computation; each step scores every candidate at once, as one
    matrix product per chunk of the pool.

    The joint entropy is exact while the batch's configurations fit, ``C^|B| <= configurations``;
    beyond, it is the paper's estimate from ``S·⌊configurations/S⌋`` configurations of ``y_B``
    sampled from the model (unbiased, standard error ∝ ``1/√configurations``), drawn with
    ``key``: each point's label is drawn once, when it joins the batch. Memory: the
    configuration buffer holds ``S × configurations`` floats and never grows past it (past the
    bound the estimate takes over); the candidate pass works on blocks of at most
    ``max(2**24, C·M)`` floats (a chunk of pool rows times the ``M <= configurations`` columns
    times ``C``). Time per pick:
    ``O(n·S·M·C)``. The exact steps (at most ``⌊log_C(configurations)⌋ + 1``) are unrolled
    when compiling.

    Args:
      embedding: ``(S, n, C)`` class probabilities: ``embedding[s, i]`` is point ``i``'s
        predictive distribution under weight sample ``s`` (``S >= 2`` samples, the same
        samples for every point, e.g. MC dropout with one mask per pass shared by all points,
        or an ensemble's members).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the sampled configurations (unused while the
        estimate is exact).
      configurations: the bound on joint configurations, a Python int ``>= S`` (default 10,000,
        as in the authors' code): exact joint entropies up to that many, sampled ones beyond.

    Returns:
      ``(k,)`` int32 unique indices into the pool, in greedy order (ties to the lowest index).

    Example:
      >>> import jax, aljax
      >>> probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 30, 4)) * 2)
      >>> aljax.mutual_information_greedy(probs, 5).shape
      (5,)
    """
    fn = "mutual_information_greedy"
    key = _validate.as_key(fn, key)
    _check_probs(fn, embedding)
    n_samples, n, _ = embedding.shape
    k = _validate.check_k(fn, k, n)
    configurations = _check_configurations(fn, configurations, n_samples)
    return greedy(jnp.swapaxes(jnp.asarray(embedding), 0, 1), key, k=k, configurations=configurations)


def _consistent_passes(apply_fn: Callable, params, x, keys) -> jax.Array:
    """The ``(batch, S, C)`` probabilities of pass ``s``: ``apply_fn`` on each row alone with the
    key ``keys[s]``, the same for every row: one draw of the dropout masks (a weight sample)
    shared by the whole pool, whatever the chunking."""
    rows = jnp.zeros(jax.tree_util.tree_leaves(x)[0].shape[0], jnp.int32)   # every row folds in 0
    logits = row_passes(apply_fn, params, x, rows, keys)
    return jnp.swapaxes(jax.nn.softmax(logits.astype(jnp.result_type(jnp.float32, logits.dtype)), axis=-1), 0, 1)


def batch_bald(params, apply_fn: Callable, pool, k: int, *, key=0, batch_size: int = 256,
               problem_type: str = "classification", mc_samples: int = 20,
               configurations: int = DEFAULT_CONFIGURATIONS, progress: bool | None = None) -> jax.Array:
    """BatchBALD with MC dropout: the batch of ``k`` points whose labels jointly carry the most
    information about the weights (Kirsch, van Amersfoort & Gal, NeurIPS 2019).

    ``mc_samples`` stochastic passes give ``(mc_samples, n, C)`` probabilities and
    :func:`mutual_information_greedy` picks the batch. Unlike :func:`aljax.bald`, the passes must
    be *consistent*: pass ``s`` is one weight sample for the whole pool, so every row runs
    ``apply_fn(params, x[i:i+1], keys[s])`` with the same key ``keys[s]`` (``keys`` from
    ``jax.random.split(key, mc_samples)``, folded with 0): the same dropout masks for every
    point, whatever ``batch_size``. (Independent masks per point would make the joint over points
    the product of their marginals and BatchBALD would collapse to top-k BALD.) The first pick is
    :func:`aljax.bald`'s top point under these masks.

    ``apply_fn`` must be stochastic in its key (checked on the first chunk before the pool is
    scored, as :func:`aljax.bald` does). Memory: the ``(mc_samples, n, C)`` probabilities, plus the
    greedy's bounded buffers (see :func:`mutual_information_greedy`).

    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x, key) -> logits (batch, C)`` with dropout (or any other
        randomness) active.
      pool: ``(n, ...)`` array or pytree of arrays, processed in chunks, or an iterable of
        batches of such arrays (read once).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the MC passes and the sampled configurations.
      batch_size: rows per forward chunk.
      problem_type: ``"classification"`` only (accepted for a uniform signature).
      mc_samples: number of stochastic passes, a Python int ``>= 2``.
      configurations: the joint-configuration bound, a Python int ``>= mc_samples`` (see
        :func:`mutual_information_greedy`).
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, in greedy order.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W = jax.random.normal(jax.random.key(0), (8, 3))
      >>> def apply_fn(W, x, key):   # dropout on the inputs
      ...     keep = jax.random.bernoulli(key, 0.5, x.shape)
      ...     return (x * keep / 0.5) @ W
      >>> pool = jax.random.normal(jax.random.key(1), (64, 8))
      >>> aljax.batch_bald(W, apply_fn, pool, 5, key=0, mc_samples=10).shape
      (5,)
    """
    with _progress.scope("batch_bald", progress):
        fn = "batch_bald"
        _validate.check_params(fn, params)
        _validate.check_problem_type(fn, problem_type, "batch_bald")
        key = _validate.as_key(fn, key)
        k = _validate.check_k_for_pool(fn, k, pool)
        batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
        mc_samples = _validate.check_int(fn, "mc_samples", mc_samples, low=2)
        configurations = _check_configurations(fn, configurations, mc_samples)
        pass_key, draw_key = jax.random.split(key)
        keys = jax.random.split(pass_key, mc_samples)
        run = open_stochastic_pool(fn, "BatchBALD", params, apply_fn, pool, batch_size, keys)
        passes = cached("batch_bald", apply_fn,
                        lambda: jax.jit(lambda p, chunk, kk: _consistent_passes(apply_fn, p, chunk[0], kk)))
        probs_t, n = run(lambda chunk: passes(params, chunk, keys))
        k = _validate.check_k(fn, k, n)
        _validate.check_finite(fn, "the MC probabilities", probs_t)
        with _progress.waiting("selecting", k, unit="pick") as bar:
            return bar.wait(greedy(probs_t, draw_key, k=k, configurations=configurations))

