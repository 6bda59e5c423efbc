"""Stochastic batch acquisition (Kirsch et al., TMLR 2023): ``k`` distinct points drawn without
replacement with probabilities from their acquisition scores, in place of the top ``k``.

The draw is Gumbel-top-k: add independent Gumbel(0, 1) noise to each point's log-weight and take
the ``k`` largest. The result follows the Plackett–Luce law, i.e. sequential sampling without
replacement: the first pick is ``i`` with probability ``w_i / Σ_j w_j``, the next among the rest
in proportion to their weights, and so on (Yellott 1977; Kool, van Hoof & Welling, ICML 2019).
One elementwise pass and one ``lax.top_k``, with no host round trip; on a score vector sharded
over devices, the top-k runs per device first (``shard_map``), so only ``k`` candidates per device
cross.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from . import _validate
from ._sharding import RowLayout, auto_axes, row_layout

MODES = ("power", "softmax", "softrank")
# The draw of the BALD front doors, whose `key` also drives the MC passes
# (``jax.random.split(key, mc_samples)``): a key of its own, ``fold_in(key, BALD_DRAW)``.
BALD_DRAW = 0xBA1D


def check_mode(fn: str, arg: str, mode, *, allow_none: bool = False):
    """``mode`` (``stochastic`` in the front doors) is one of :data:`MODES` (or None)."""
    if mode is None and allow_none:
        return None
    expected = ("None, " if allow_none else "") + ", ".join(map(repr, MODES))
    if not isinstance(mode, str):
        raise TypeError(_validate.message(fn, arg, f"one of {expected}", f"{type(mode).__name__} {mode!r}"))
    if mode not in MODES:
        raise ValueError(_validate.message(fn, arg, f"one of {expected}", repr(mode)))
    return mode


def check_options(fn: str, stochastic, beta) -> tuple[str | None, float]:
    """The ``stochastic`` / ``beta`` keywords of a front door (``beta`` is checked even when
    ``stochastic`` is None, so that a typo fails now rather than the day it is switched on)."""
    return check_mode(fn, "stochastic", stochastic, allow_none=True), _validate.check_positive(fn, "beta", beta)


def _log_weights(scores: jax.Array, beta, mode: str) -> jax.Array:
    """``log w`` up to a constant, shifted so that the largest is 0 (no overflow):
    power ``β log s``, softmax ``β s``, softrank ``−β log rank``. ``−inf`` is a zero weight."""
    if mode == "power":
        log_max = jnp.log(jnp.maximum(jnp.max(scores), jnp.finfo(scores.dtype).tiny))
        return jnp.where(scores > 0, beta * (jnp.log(jnp.where(scores > 0, scores, 1.0)) - log_max), -jnp.inf)
    if mode == "softmax":
        return beta * (scores - jnp.max(scores))
    # softrank: rank 1 = the highest score; equal scores ranked by index, as scores.top_k orders them.
    n = scores.shape[0]
    order = jax.lax.top_k(jnp.where(scores == 0, jnp.zeros_like(scores), scores), n)[1]
    rank = jnp.zeros(n, scores.dtype).at[order].set(jnp.arange(1, n + 1, dtype=scores.dtype))
    return -beta * jnp.log(rank)


def _top_k(values: jax.Array, k: int, layout: RowLayout | None) -> jax.Array:
    """The indices of ``lax.top_k(values, k)``; on a vector sharded in ``layout.shards`` blocks,
    the top ``k`` of each block on its own device (``shard_map``), then the top ``k`` of those
    candidates: only ``shards·k`` numbers cross devices, where XLA would all-gather the vector.
    The same indices, ties included (to the lowest index: the blocks are in index order, and so
    are equal values within a block's top ``k``)."""
    if layout is None:
        return jax.lax.top_k(values, k)[1]
    size = values.shape[0] // layout.shards
    rows = PartitionSpec(layout.axes)

    def block(v):
        best, where = jax.lax.top_k(v, min(k, size))
        return best, where + jax.lax.axis_index(layout.axes) * size

    best, where = jax.shard_map(block, mesh=layout.mesh, in_specs=rows, out_specs=(rows, rows))(values)
    return where[jax.lax.top_k(best, k)[1]]


@functools.partial(jax.jit, static_argnames=("k", "mode", "layout"))
def gumbel_top_k(key: jax.Array, scores: jax.Array, beta, *, k: int, mode: str,
                 layout: RowLayout | None = None) -> jax.Array:
    """Gumbel-top-k on valid input (finite scores, non-negative for ``"power"``, ``beta > 0``);
    ``layout``: how ``scores`` is sharded, if it is (the top-k then runs per block first).

    Points of zero weight (a zero score under ``"power"``, or a weight that underflows to 0) come
    after every positive one, in a uniformly random order: a second ``top_k`` on the noise
    alone, whose picks fill the places the positive weights cannot."""
    dtype = jnp.result_type(scores.dtype, jnp.float32)
    scores = scores.astype(dtype)
    log_w = _log_weights(scores, jnp.asarray(beta, dtype), mode)
    noise = jax.random.gumbel(key, scores.shape, dtype)
    if layout is not None:
        noise = jax.lax.with_sharding_constraint(noise, layout.sharding(1))
    drawable = log_w > -jnp.inf
    first = _top_k(jnp.where(drawable, log_w + noise, -jnp.inf), k, layout)
    fill = _top_k(jnp.where(drawable, -jnp.inf, noise), k, layout)
    count = jnp.sum(drawable, dtype=jnp.int32)
    place = jnp.arange(k, dtype=jnp.int32)
    return jnp.where(place < count, first, fill[jnp.clip(place - count, 0, k - 1)]).astype(jnp.int32)


def draw_acquisition(key: jax.Array, scores: jax.Array, k: int, mode: str, beta,
                     layout: RowLayout | None = None) -> jax.Array:
    """The front doors' draw on the library's own scores (non-negative by construction): rounding
    noise below 0 counts as 0 under ``"power"``. Traceable (called inside jitted selections);
    ``layout``: the pool's, when it is sharded."""
    if mode == "power":
        scores = jnp.maximum(scores, 0.0)
    return gumbel_top_k(key, scores, beta, k=k, mode=mode, layout=layout)


@jax.jit
def _negatives(scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.sum(scores < 0), jnp.min(scores)


def stochastic_top_k(key, scores, k: int, *, mode: str = "power", beta: float = 1.0) -> jax.Array:
    """Stochastic batch acquisition: ``k`` distinct indices drawn without replacement with
    probabilities set by the scores, in place of the ``k`` largest.

    Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, "Stochastic batch
    acquisition: a simple baseline for deep active learning", TMLR 2023. Top-``k`` of an
    acquisition score fills a large batch with near-duplicates (neighbours share a score); drawing
    the batch in proportion to the scores spends part of it on points that top-``k`` would skip,
    at no extra cost. Weights per ``mode``:

    * ``"power"``: ``w_i = s_i**β``, for scores ``≥ 0`` (PowerBALD, PowerMargin, ...). A zero
      score has weight 0: it is never drawn while a positive one is left. If fewer than ``k``
      scores are positive, all of them are drawn first (in the law below) and the remaining places
      are filled uniformly at random from the zero-score points (never a duplicate, never an
      error), as :func:`aljax.kmeans_pp` fills once every distance is 0.
    * ``"softmax"``: ``w_i = exp(β s_i)``, for scores of any sign.
    * ``"softrank"``: ``w_i = rank_i**(−β)``, rank 1 the highest score (equal scores ranked by
      index, as :func:`aljax.scores.top_k` orders them): only the order of the scores matters.

    The first pick is ``i`` with probability ``w_i / Σ_j w_j``; each next pick is drawn among the
    points not yet picked, in proportion to their weights (the Plackett–Luce law). It is computed
    in one jitted pass by Gumbel-top-k: the ``k`` largest of ``log w_i + G_i`` with ``G_i``
    independent Gumbel(0, 1) noise. ``β`` sets the temperature: ``β → ∞`` approaches the
    deterministic top ``k``, ``β → 0`` uniform sampling; the paper uses ``β = 1``. A weight that
    underflows to 0 in floating point counts as a zero weight. Scores in half precision are
    drawn in float32.

    The arguments come in the order of ``jax.random``'s samplers: the key first (unlike the
    selectors' keyword ``key=``). The same key gives the same picks, with or without ``jax.jit``.
    A score vector sharded along its axis (a ``NamedSharding``) stays sharded under ``"power"``
    and ``"softmax"``: each device perturbs its own scores and takes their top ``k``; only those
    candidates (``k`` per device) cross devices, and the picks equal those on one device.
    ``"softrank"`` ranks the whole vector (a sort, which XLA gathers onto each device).

    Args:
      key: int seed or ``jax.random`` key.
      scores: ``(n,)`` floating acquisition scores, larger = more worth labeling; finite, and
        ``>= 0`` for ``mode="power"`` (checked on the values, except under tracing).
      k: number of points, a Python int in ``[1, n]``.
      mode: ``"power"``, ``"softmax"`` or ``"softrank"`` (see above).
      beta: the inverse temperature ``β``, a finite number ``> 0``.

    Returns:
      ``(k,)`` int32 unique indices into ``scores``, in draw order.

    Example:
      >>> import jax.numpy as jnp, aljax
      >>> s = jnp.array([0.2, 0.9, 0.0, 0.5, 0.7])
      >>> picks = aljax.stochastic_top_k(0, s, 3)                  # power, beta = 1
      >>> 2 in picks.tolist()                                      # a zero score, 4 positive ones
      False
      >>> bool((picks == aljax.stochastic_top_k(0, s, 3)).all())  # same key, same picks
      True
      >>> aljax.stochastic_top_k(1, s, 3, mode="softrank", beta=50.0).tolist()  # nearly top-k
      [1, 4, 3]
    """
    fn = "stochastic_top_k"
    key = _validate.as_key(fn, key)
    _validate.check_scores_1d(fn, scores)
    k = _validate.check_k(fn, k, scores.shape[0])
    mode = check_mode(fn, "mode", mode)
    beta = _validate.check_positive(fn, "beta", beta)
    _validate.check_finite(fn, "the values of argument `scores`", scores)
    if mode == "power" and _validate.is_concrete(scores):
        negatives, smallest = _negatives(scores)
        if int(negatives):
            raise ValueError(_validate.message(
                fn, "scores", "non-negative for mode='power' (the weights are scores**beta; mode='softmax' or "
                "'softrank' take scores of any sign)", f"{int(negatives)} negative value(s), the smallest "
                f"{float(smallest):.6g}"))
    scores = auto_axes(jnp.asarray(scores))
    return gumbel_top_k(key, scores, beta, k=k, mode=mode, layout=row_layout(fn, "scores", scores))
