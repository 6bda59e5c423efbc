"""k-means++ seeding (dense or factored) and the BADGE front door."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from . import _progress, _validate
from ._embeddings import factored_embedding, logits_and_features
from ._padding import BUCKET_MAX_BYTES, nbytes, pad_to_bucket
from ._sharding import auto_axes, row_layout, take_row
from ._types import Factored, check_pair

_HIGHEST = jax.lax.Precision.HIGHEST


def _compute_dtype(emb) -> jnp.dtype:
    leaves = jax.tree_util.tree_leaves(emb)
    return jnp.result_type(jnp.float32, *[leaf.dtype for leaf in leaves])


def _sqnorms(emb, dtype) -> jax.Array:
    if isinstance(emb, Factored):
        a, h = emb.a.astype(dtype), emb.h.astype(dtype)
        return jnp.sum(a * a, axis=1) * jnp.sum(h * h, axis=1)
    x = emb.astype(dtype)
    return jnp.sum(x * x, axis=1)


def _inner_with_row(emb, i, dtype) -> jax.Array:
    """``<g_j, g_i>`` for every row j. Factored: ``(a_j·a_i)(h_j·h_i)``, O(n(C + D))."""
    if isinstance(emb, Factored):
        aa = jnp.matmul(emb.a, take_row(emb.a, i), precision=_HIGHEST, preferred_element_type=dtype)
        hh = jnp.matmul(emb.h, take_row(emb.h, i), precision=_HIGHEST, preferred_element_type=dtype)
        return aa * hh
    return jnp.matmul(emb, take_row(emb, i), precision=_HIGHEST, preferred_element_type=dtype)


def _mix32(x: jax.Array) -> jax.Array:
    """A bijective 32-bit integer hash (xor-shift-multiply, the "lowbias32" constants of C.
    Wellons' hash-prospector): every output bit depends on every input bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x21F0AAAD)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x735A2D97)
    return x ^ (x >> 15)


def _exponentials(words: jax.Array, n: int, dtype) -> jax.Array:
    """``n`` independent ``Exp(1)`` variates for one step, row ``j``'s a pure function of ``j`` and
    the step's two random words (``words``: ``(2,)`` uint32 drawn from the user's key).

    A counter-based generator: ``bits_j = mix(mix(j ^ w0) + w1)``, bijective in ``j`` for a given
    step. It costs a few integer operations per row, fused into the pass that reads the distances
    (threefry's 20 rounds per row would dominate the step); and it depends only on the global row
    index, so the draws are the same however the rows are split across devices.
    ``E = −log(1 − v)`` with ``v = (bits + ½)·2⁻³²``: the small variates, which decide the race,
    have a resolution of 2⁻³² (a float32 uniform's 2⁻²³ grid would tie rows at the smallest values
    when n is large: the least of 10⁶ variates is ~10⁻⁶, only ~8 grid steps). ``log(1 − v)`` is
    Kahan's ``log1p``: ``log(w)·v/(1 − w)`` with ``w = fl(1 − v)``, which divides out the rounding
    of ``1 − v`` and stays within 4 ulps of the exact value (3 for ``jnp.log1p``, tested), and
    vectorises where XLA:CPU's ``log1p`` does not.
    """
    bits = _mix32(_mix32(jnp.arange(n, dtype=jnp.uint32) ^ words[0]) + words[1])
    return _neg_log1p_neg(jnp.minimum((bits.astype(dtype) + 0.5) * (2.0 ** -32), 1.0 - 2.0 ** -24))


def _neg_log1p_neg(v: jax.Array) -> jax.Array:
    """``−log(1 − v)`` for ``v`` in ``(0, 1)``, by Kahan's ``log1p`` (see :func:`_exponentials`)."""
    w = 1.0 - v
    return jnp.where(w == 1.0, v, -jnp.log(w) * (v / (1.0 - w)))


def _first_argmax(x: jax.Array) -> jax.Array:
    """``jnp.argmax`` (first index of the maximum, no NaN in ``x``) as two plain reductions, a max
    and a min, which XLA vectorises and fuses (its variadic value-index reduction does not)."""
    rows = jnp.arange(x.shape[0], dtype=jnp.int32)
    return jnp.min(jnp.where(x == jnp.max(x), rows, x.shape[0])).astype(jnp.int32)


def _d2_sample(words: jax.Array, weights: jax.Array, eligible: jax.Array) -> jax.Array:
    """One index drawn with probability ``w_j / Σ w`` (weights ≥ 0, 0 where not ``eligible``);
    uniformly among the ``eligible`` rows when every weight is 0.

    An exponential race: ``argmax_j w_j / E_j`` with one ``E_j ~ Exp(1)`` per row (see
    :func:`_exponentials`), whose winner is ``j`` with probability ``w_j / Σ w`` (the Gumbel-max
    trick without its second logarithm). Rows of weight 0 score ``−E_j`` and so never beat a
    positive weight; when all weights are 0 the largest ``−E_j``, a uniform pick, wins. Each score
    is computed row by row and the winner found by exact reductions, so the pick is the same
    however the rows are split across devices (a cumulative sum, the inverse-CDF alternative, is
    not: its rounding depends on the split); only partial maxima cross devices. Weights are
    divided by their maximum first, so no positive weight underflows to a zero ratio.
    """
    exponential = _exponentials(words, weights.shape[0], weights.dtype)
    score = jnp.where(weights > 0, (weights / jnp.max(weights)) / exponential, -exponential)
    return _first_argmax(jnp.where(eligible, score, -jnp.inf))


# Pruning skips a row only when its bound beats its distance by this fraction of the two squared
# norms: far above float32 rounding (~1e-5 of that scale for D in the thousands), so the skipped
# rows are exactly those whose computed distance would not have lowered the minimum.
_PRUNE_MARGIN = 1e-3


def _gather_capacities(n: int) -> list[int]:
    """Row counts the pruned step can gather, ascending: multiples of n/32 up to n/4 (a fine
    ladder: a gather reads its whole capacity, needed or not)."""
    return sorted({max(1, m * n // 32) for m in (1, 2, 3, 4, 5, 6, 8)})


def _slots(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each true row's position among the true rows (the largest int32, never a slot, for a false
    row) and their count.

    The position is the number of true rows before it, counted in two levels: the mask packed
    into 32-bit words (row ``j`` is bit ``j mod 32`` of word ``j // 32``), a running count of the
    words' set bits (``lax.associative_scan`` over n/32 words), plus the set bits below row ``j``
    in its own word. Exact in int32, and it scans n/32 words instead of n rows (a running count
    over every row, or ``jnp.nonzero``, reads the whole mask serially)."""
    n = mask.shape[0]
    words = -(-n // 32)
    bits = jnp.pad(mask, (0, 32 * words - n)).reshape(words, 32).astype(jnp.uint32)
    shifts = jnp.arange(32, dtype=jnp.uint32)
    packed = jnp.sum(bits << shifts, axis=1, dtype=jnp.uint32)  # distinct bits: the sum is an or
    per_word = jax.lax.population_count(packed).astype(jnp.int32)
    through = jax.lax.associative_scan(jnp.add, per_word)
    below = jax.lax.population_count(packed[:, None] & ((jnp.uint32(1) << shifts) - 1)).astype(jnp.int32)
    slot = ((through - per_word)[:, None] + below).reshape(-1)[:n]
    return jnp.where(mask, slot, jnp.iinfo(jnp.int32).max), through[-1]


def _compact(slot: jax.Array, capacity: int) -> jax.Array:
    """``jnp.nonzero(mask, size=capacity, fill_value=0)[0]`` from ``slot, _ = _slots(mask)``, for a
    mask with at most ``capacity`` true entries: their indices in order, then zeros."""
    n = slot.shape[0]
    return jnp.zeros(capacity, jnp.int32).at[slot].set(jnp.arange(n, dtype=jnp.int32), mode="drop")


def _pruned_min(emb: Factored, sq, hnorm, dist, i, dtype, sqdist, nonneg):
    """``min(dist, ‖g_j − g_i‖²)`` for every row j of a factored embedding, reading ``h_j`` only for
    the rows whose distance could decrease.

    Cauchy–Schwarz on the h factor: ``|(a_j·a_i)(h_j·h_i)| ≤ |a_j·a_i|‖h_j‖‖h_i‖``, so
    ``‖g_j − g_i‖² ≥ ‖g_j‖² + ‖g_i‖² − 2|a_j·a_i|‖h_j‖‖h_i‖``, a bound that costs ``C`` numbers per
    row instead of ``C + D``. When every feature is ``≥ 0`` (``nonneg``, a traced bool: ReLU
    features), ``h_j·h_i ∈ [0, ‖h_j‖‖h_i‖]`` and ``|a_j·a_i|`` tightens to ``max(a_j·a_i, 0)``: a
    row whose ``a`` points away from ``a_i`` is then never closer than ``‖g_j‖² + ‖g_i‖²`` (30%
    fewer rows to read on the benchmark's ReLU features). Rows whose bound is not above their
    current distance (plus a margin, ``_PRUNE_MARGIN``) are compacted and their exact distances
    computed from a gather of their ``h`` rows; the capacity of the gather is chosen per step from
    :func:`_gather_capacities`, and above n/4 rows the step falls back to the full pass. The
    result equals the full pass's.
    """
    n = sq.shape[0]
    a_i, h_i = take_row(emb.a, i), take_row(emb.h, i)
    aa = jnp.matmul(emb.a, a_i, precision=_HIGHEST, preferred_element_type=dtype)
    sq_i = take_row(sq, i)
    weight = jnp.where(nonneg, jnp.maximum(aa, 0), jnp.abs(aa))
    bound = sq + sq_i - 2 * weight * hnorm * take_row(hnorm, i)
    slot, count = _slots(bound - dist < _PRUNE_MARGIN * (sq + sq_i))

    def gathered(capacity):
        def update():
            rows = _compact(slot, capacity)  # padding repeats row 0: harmless
            hh = jnp.matmul(emb.h[rows], h_i, precision=_HIGHEST, preferred_element_type=dtype)
            return dist.at[rows].min(sqdist(sq[rows], sq_i, aa[rows] * hh))
        return update

    def full():
        hh = jnp.matmul(emb.h, h_i, precision=_HIGHEST, preferred_element_type=dtype)
        return jnp.minimum(dist, sqdist(sq, sq_i, aa * hh))

    capacities = _gather_capacities(n)
    branch = jnp.sum(count > jnp.asarray(capacities))
    return jax.lax.switch(branch, [gathered(c) for c in capacities] + [full])


@functools.partial(jax.jit, static_argnames=("k", "prune"))
def _kmeans_pp(key: jax.Array, emb, k: int, prune: bool = False, n_valid=None) -> jax.Array:
    # ``n_valid`` (traced): only the first ``n_valid`` rows are points, the rest zero padding (see
    # :func:`_select`); the padding is never eligible and never changes a real row's draw.
    # Sharding-friendly: every O(n) array stays laid out like the embedding's rows; per step only
    # the picked row (take_row: one all-reduce of C + D numbers) and the race's partial maxima
    # (two scalar reductions: the largest weight, then the largest score) cross devices.
    dtype = _compute_dtype(emb)
    sq = _sqnorms(emb, dtype)
    n = sq.shape[0]
    rows = jnp.arange(n, dtype=jnp.int32)
    rtol = 16 * jnp.finfo(dtype).eps

    def sqdist(sq_j, sq_i, inner):
        # ||g_j - g_i||² = ||g_j||² + ||g_i||² - 2<g_j, g_i>; cancellation noise below rtol·scale is 0.
        d = sq_j + sq_i - 2 * inner
        return jnp.where(d <= rtol * (sq_j + sq_i), 0.0, d).astype(dtype)

    def sqdist_to(i):
        return sqdist(sq, take_row(sq, i), _inner_with_row(emb, i, dtype))

    if prune:
        hnorm = jnp.sqrt(jnp.sum(jnp.square(emb.h.astype(dtype)), axis=1))
        nonneg = jnp.min(emb.h) >= 0

        def update(dist, i):
            return _pruned_min(emb, sq, hnorm, dist, i, dtype, sqdist, nonneg)
    else:
        def update(dist, i):
            return jnp.minimum(dist, sqdist_to(i))

    first = jnp.argmax(sq).astype(jnp.int32)
    picks = jnp.zeros(k, jnp.int32).at[0].set(first)
    words = jax.random.bits(key, (k, 2), jnp.uint32)

    def step(t, state):
        dist, chosen, picks = state
        # All remaining distances 0 (more requested than distinct points): uniform over the rest.
        i = _d2_sample(words[t], jnp.where(chosen, 0.0, dist), ~chosen)
        return update(dist, i), chosen | (rows == i), picks.at[t].set(i)

    padding = jnp.zeros(n, bool) if n_valid is None else rows >= n_valid
    _, _, picks = jax.lax.fori_loop(1, k, step, (sqdist_to(first), (rows == first) | padding, picks))
    return picks


def _select(key, emb, k: int, prune: bool, sharded: bool) -> jax.Array:
    """:func:`_kmeans_pp` on ``emb``, zero-padded to a size bucket (:func:`aljax._padding.bucket`) when it is concrete, on one
    device and small enough. The picks are those without the padding: the padded rows start out
    chosen (never eligible, weight 0) and come after every real row, whose race variates depend on
    its own index only."""
    n = jax.tree_util.tree_leaves(emb)[0].shape[0]
    if not sharded and nbytes(emb) <= BUCKET_MAX_BYTES and _validate.is_concrete(emb):
        emb = pad_to_bucket(emb, n)
    with _progress.waiting("selecting", k, unit="pick") as bar:
        return bar.wait(_kmeans_pp(key, emb, k, prune=prune and not sharded, n_valid=jnp.int32(n)))


def kmeans_pp(embedding, k: int, *, key=0, prune: bool = False) -> jax.Array:
    """k-means++ seeding: ``k`` diverse, large-norm rows of an embedding.

    The first pick is the row of largest norm (the reference implementation's rule); each next
    pick is drawn with probability proportional to its squared distance to the nearest pick so far
    (D² sampling), distances updated with ``min``. On a :class:`~aljax.Factored` embedding the
    distances come from the factors, ``‖g_i − g_j‖² = ‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² −
    2(a_i·a_j)(h_i·h_j)``, so a step reads ``n(C + D)`` numbers, never ``n·C·D``.

    When every remaining distance is 0 (more points requested than distinct rows, or a fully
    confident model), the rest are drawn uniformly from the unpicked rows: the result never holds
    a duplicate or a NaN. Distances below ``16·eps`` of their scale count as 0.

    Each draw is an exponential race, ``argmax_j w_j / E_j`` with one ``Exp(1)`` variate per row
    from a counter-based hash of the row index and two random words per step drawn from ``key``,
    so the picks do not depend on how the rows are split across devices. Several devices: pass
    the embedding (both factors of a ``Factored``) sharded along its rows with one
    ``NamedSharding``, e.g. ``jax.device_put(emb, NamedSharding(mesh, P("data")))``; every
    device updates the distances of its own rows, and per step only the picked row (``C + D``
    numbers) and a few partial maxima per device cross devices. The picks are the same as
    on one device for the same key.

    The selection loop is compiled per ``(rows, k)``; on one device, a small embedding (at most
    ``aljax._padding.BUCKET_MAX_BYTES``) is zero-padded to a size bucket (at most 1/8 more rows) first, so that a pool that
    shrinks from round to round reuses one compilation. The padding is never picked and changes
    no pick.

    Args:
      embedding: ``(n, d)`` floating array or :class:`~aljax.Factored`. Storage may be bfloat16;
        distances accumulate in float32 (float64 under x64 with float64 inputs). May be sharded
        along ``n``; factors laid out differently raise a ``ValueError``.
      k: number of picks, a Python int in ``[1, n]``.
      prune: exact pruning for a :class:`~aljax.Factored` embedding on one device. Each step
        first bounds every row's new distance from its ``a`` factor and norms alone
        (Cauchy–Schwarz, ``C`` numbers per row) and reads ``h`` only for the rows the bound
        cannot rule out, gathered. Same picks as without it; faster when few rows need ``h``
        (the rows of other predicted classes usually do not). A sharded embedding ignores it (the
        full pass is already split across devices).
      key: int seed or ``jax.random`` key (default 0: two calls without a key use the same
        randomness; pass a fresh key each round). The same key gives the same picks, with or
        without an outer ``jax.jit``, on one device or sharded.

    Returns:
      ``(k,)`` int32 indices in pick order.

    Example:
      >>> import jax, aljax
      >>> emb = jax.random.normal(jax.random.key(0), (100, 8))
      >>> aljax.kmeans_pp(emb, 5, key=0).shape
      (5,)
    """
    fn = "kmeans_pp"
    key = _validate.as_key(fn, key)
    if isinstance(embedding, Factored):  # again: a tree_map or tree_unflatten skips the constructor's check
        check_pair(fn, "embedding.a", "embedding.h", embedding.a, embedding.h)
    else:
        _validate.check_floating_2d(fn, "embedding", embedding)
        embedding = jnp.asarray(embedding)
    k = _validate.check_k(fn, k, embedding.shape[0] if not isinstance(embedding, Factored) else embedding.n)
    _validate.check_finite(fn, "the embedding values", *jax.tree_util.tree_leaves(embedding))
    prune = _check_prune(fn, prune, isinstance(embedding, Factored))
    layout = row_layout(fn, "embedding", embedding)
    return _select(key, auto_axes(embedding), k, prune, sharded=layout is not None)


def _check_prune(fn: str, prune, factored: bool) -> bool:
    if _validate.check_bool(fn, "prune", prune) and not factored:
        raise ValueError(_validate.message(fn, "prune", "False for a dense embedding or regression (the bound "
                                           "needs the factors of a Factored)", "True"))
    return prune


def badge(params, apply_fn: Callable, pool, k: int, *, key=0, batch_size: int = 256,
          features_fn: Callable | None = None, problem_type: str = "classification",
          prune: bool = False, progress: bool | None = None) -> jax.Array:
    """BADGE: k-means++ seeding over last-layer gradient embeddings.

    Ash et al., "Deep batch active learning by diverse, uncertain gradient lower bounds", ICLR
    2020. Each pool point is embedded as the gradient of the cross-entropy at its predicted label
    with respect to the last dense kernel (kept factored, see :class:`~aljax.Factored`); k-means++
    seeding then favours points that are uncertain (large gradient) and diverse (far apart).

    Regression (``problem_type="regression"``): the squared loss's gradient at the hallucinated
    label, which for regression is the prediction itself, is zero, so the paper's embedding
    carries nothing. aljax then runs k-means++ on the penultimate features ``h``: the embedding
    ``a ⊗ h`` with the same ``‖a‖`` for every point, i.e. diversity without the uncertainty term.

    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x) -> logits (batch, C)`` (regression: outputs ``(batch,)`` or
        ``(batch, m)``): a Flax ``model.apply``, an Equinox or plain function. Its last operation
        must be a dense layer ``h @ W + b`` unless ``features_fn`` is given.
      pool: ``(n, ...)`` array or pytree of arrays, processed in chunks of ``batch_size``; or an
        iterable of batches of such arrays (read once, only the factored embedding ``n × (C + D)``
        is kept: pools larger than memory). Leaves sharded along ``n`` (one ``NamedSharding``
        for all) run data-parallel, ``batch_size`` rows per device per forward chunk, and the
        selection stays sharded (see :func:`kmeans_pp`); the picks equal the one-device picks.
      k: number of points to select, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key (default 0: two calls without a key use the same
        randomness; in a loop pass a fresh key each round).
      batch_size: rows per forward chunk (per device for a sharded pool).
      features_fn: optional ``features_fn(params, x) -> (batch, D)`` penultimate features.
      problem_type: ``"classification"`` or ``"regression"`` (see above).
      prune: exact pruning of the k-means++ steps (same picks; see :func:`kmeans_pp`);
        classification only.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      ``(k,)`` int32 indices into ``pool``, unique, in pick order.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jnp.ones((4, 16)) / 4, jnp.arange(48.0).reshape(16, 3) / 48
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> pool = jax.random.normal(jax.random.key(1), (200, 4))
      >>> aljax.badge((W1, W2), apply_fn, pool, 10, key=0).shape
      (10,)
    """
    with _progress.scope("badge", progress):
        fn = "badge"
        _validate.check_params(fn, params)
        key = _validate.as_key(fn, key)
        k = _validate.check_k_for_pool(fn, k, pool)
        regression = _validate.check_problem_type(fn, problem_type) == "regression"
        prune = _check_prune(fn, prune, factored=not regression)
        if regression:
            _, emb = logits_and_features(params, apply_fn, pool, batch_size=batch_size, features_fn=features_fn,
                                         fn_name=fn, problem_type=problem_type)
            k = _validate.check_k(fn, k, emb.shape[0])
        else:
            emb = factored_embedding(params, apply_fn, pool, batch_size=batch_size, features_fn=features_fn,
                                     fn_name=fn)
            k = _validate.check_k(fn, k, emb.n)
        return _select(key, emb, k, prune, sharded=row_layout(fn, "pool", emb) is not None)
