"""From validated arguments to one kernel call: the embeddings checked and turned into rows,
chunk sizes, size buckets and padding, and the choice of the one-device or the sharded kernel."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compile, _progress, _validate
from .._linalg import host_spd_inverse, one_blas_thread
from .._padding import bucket, nbytes, pad_tree
from .._types import FisherFactors
from ._blocks import UNROLL_MIN_POINTS
from ._kernel import initial_inverse, kernel, quick_kernel
from ._rows import (KronRows, LabeledGram, binary_rows, fisher_trace, from_fisher_factors,
                    host_binary_rows, host_fisher_rows, host_fisher_trace, host_gram, is_binary, n_cols, n_points,
                    prepare)
from ._sharded import plan_sharded

# Chunks of the pool axis are sized so that one chunk's largest temporary holds about this many
# numbers: small enough to stay in cache, large enough for efficient matmuls.
CHUNK_ELEMENTS = 1 << 21
# Points per chunk are rounded up to a multiple of this (16 float32 = one AVX-512 vector).
ALIGN = 16
# Pools whose (padded) rows take at most this many bytes are zero-padded to the next power of
# two instead of a 1/8 size bucket: there the kernel's run time hardly depends on n while its
# compilation is long, so a pool shrinking by k a round is better off padded up to 2x and
# recompiled once per halving than recompiled every n/16 points.
POW2_MAX_BYTES = 1 << 22


# ---------------------------------------------------------------------------------------------
# Validation of the embedding-level arguments.


@jax.jit
def _prob_stats(probs):
    """Whether a probability is negative, and of the row sums the row farthest from 1, the largest
    and the smallest. Reductions only, so that a pool sharded over several processes is never
    fetched to the host (the results are replicated scalars, the same on every process), and no
    gather (refused on an Explicit-axes mesh)."""
    sums = jnp.sum(probs, axis=1)
    return jnp.any(probs < 0), jnp.argmax(jnp.abs(sums - 1)), jnp.max(sums), jnp.min(sums)


@jax.jit
def _factor_stats(probs, h):
    """Whether ``probs`` and ``h`` are finite, and :func:`_prob_stats`, in one device call: each
    eager reduction would compile apart, a tenth of a second or more each on a first call."""
    return (_validate.all_finite(probs), _validate.all_finite(h), *_prob_stats(probs))


def _host_factor_stats(probs: np.ndarray, h: np.ndarray):
    """:func:`_factor_stats` in NumPy, for small inputs (:func:`aljax._validate.on_host`): it
    compiles nothing. Row sums accumulate in float64."""
    sums = probs.sum(axis=1, dtype=np.float64)
    i = int(np.argmax(np.abs(sums - 1))) if len(sums) else 0
    return (np.isfinite(probs).all(), np.isfinite(h).all(), (probs < 0).any(), i,
            sums.max(initial=-np.inf), sums.min(initial=np.inf))


def _check_factors(fn: str, arg: str, emb: FisherFactors) -> None:
    """Finite values, probabilities ``>= 0``, rows summing to 1: the Fisher sum (block diagonal
    minus ``ZᵀZ``) and the null vector ``√p`` of ``S_i`` rely on the sums, and unnormalised rows
    silently give other picks; to ``max(1e-3, 4·eps)`` (float32 softmax outputs pass). Checked on
    concrete inputs only."""
    probs, h = emb.probs, emb.h
    if not _validate.is_concrete(probs, h) or probs.shape[0] == 0:
        return
    if _validate.on_host(probs, h):
        finite_p, finite_h, *stats = _host_factor_stats(np.asarray(probs), np.asarray(h))
    elif getattr(probs, "sharding", None) == getattr(h, "sharding", None):
        finite_p, finite_h, *stats = _factor_stats(probs, h)
    else:   # differently placed arrays cannot meet in one computation
        finite_p = finite_h = False
        stats = _prob_stats(probs)
    negative, i, high, low = (np.asarray(x) for x in stats)
    if not (bool(finite_p) and bool(finite_h)):  # (recomputed there, to name the array)
        _validate.check_finite(fn, f"`{arg}` values", probs, h)
    if negative:
        raise ValueError(_validate.message(fn, arg, "FisherFactors with probabilities >= 0", "negative probabilities"))
    dtype = jnp.result_type(probs)
    tol = max(1e-3, 4 * float(jnp.finfo(dtype).eps)) if jnp.issubdtype(dtype, jnp.floating) else 1e-3
    # The worst row's sum is the largest or the smallest of the sums, whichever lies farther from 1.
    high, low = float(high), float(low)
    worst = high if abs(high - 1) >= abs(low - 1) else low
    if abs(worst - 1) > tol:
        raise ValueError(_validate.message(
            fn, arg, f"FisherFactors whose probabilities sum to 1 in every row (within {tol:g})",
            f"row {int(i)} summing to {worst:.6g}"))


def _factor_rows(fn: str, arg: str, emb: FisherFactors, like) -> KronRows:
    if like is not None and not isinstance(like, FisherFactors):
        raise TypeError(_validate.message(fn, arg, "the type of `embedding` (a dense (n, r, d) array)",
                                          "a FisherFactors"))
    if like is not None and (emb.probs.shape[1], emb.h.shape[1]) != (like.probs.shape[1], like.h.shape[1]):
        raise ValueError(_validate.message(
            fn, arg, f"FisherFactors with C = {like.probs.shape[1]} classes and D = {like.h.shape[1]} "
            "features, like `embedding`", f"C = {emb.probs.shape[1]} and D = {emb.h.shape[1]}"))
    _check_factors(fn, arg, emb)
    return host_fisher_rows(emb) if _validate.on_host(emb.probs, emb.h) else from_fisher_factors(emb)


def _dense_rows(fn: str, arg: str, emb, like) -> jax.Array:
    if like is not None and isinstance(like, FisherFactors):
        raise TypeError(_validate.message(fn, arg, "the type of `embedding` (FisherFactors)", type(emb).__name__))
    shape, dtype = getattr(emb, "shape", None), getattr(emb, "dtype", None)
    if shape is None:
        raise TypeError(_validate.message(fn, arg, "FisherFactors or an (n, r, d) array", type(emb).__name__))
    if len(shape) != 3:
        raise ValueError(_validate.message(fn, arg, "FisherFactors or a 3-D array (n, r, d)", f"shape {tuple(shape)}"))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(_validate.message(fn, arg, "a floating array", f"dtype {dtype}"))
    if like is not None and tuple(shape[1:]) != tuple(like.shape[1:]):
        raise ValueError(_validate.message(fn, arg, f"rows of shape (r, d) = {tuple(like.shape[1:])} like `embedding`",
                                           f"{tuple(shape[1:])}"))
    if shape[1] == 0 or shape[2] == 0:
        raise ValueError(_validate.message(fn, arg, "at least one row and one column per point",
                                           f"shape {tuple(shape)}"))
    emb = jnp.asarray(emb)
    _validate.check_finite(fn, f"`{arg}` values", emb)
    return emb


def as_rows(fn: str, arg: str, emb, like=None):
    """Validated rows (:class:`KronRows`, or a dense ``(n, r, d)`` array) of a
    :class:`~aljax.FisherFactors` or dense embedding; ``like``: the pool's embedding, whose kind
    and trailing shape ``emb`` must share."""
    if isinstance(emb, FisherFactors):
        return _factor_rows(fn, arg, emb, like)
    return _dense_rows(fn, arg, emb, like)


# ---------------------------------------------------------------------------------------------
# Sizes: forward steps, chunks, buckets.


def n_forward_steps(k: int, oversample: float, n: int) -> int:
    # ⌈oversample·k⌉, insensitive to float noise such as 1.1·10 = 11.000000000000002.
    return min(int(math.ceil(round(oversample * k, 9))), n)


def chunk_size(n: int, d: int, rows_per_point: int) -> int:
    """Points per chunk: the largest temporary (``b·d`` numbers, ``b·r·d`` for dense rows) stays
    near ``CHUNK_ELEMENTS``; chunks are balanced, then rounded up to a multiple of ``ALIGN``, so
    that padding is at most ``nc·ALIGN`` points."""
    widest = max(1, CHUNK_ELEMENTS // max(1, d * rows_per_point))
    b_max = int(min(max(widest, 8), 4096))
    nc = -(-n // b_max)
    b = -(-n // nc)
    # A multiple of the SIMD width: the per-point blocks live in (r, r, nc·b) arrays whose rows
    # then start aligned, which lets XLA vectorise the elementwise passes over them.
    return b if b < ALIGN else -(-b // ALIGN) * ALIGN


def rows_chunk(rows, n_local: int) -> int:
    """:func:`chunk_size` for ``n_local`` points of ``rows`` (Kronecker-factored or dense)."""
    if isinstance(rows, KronRows):
        return chunk_size(n_local, rows.s.shape[2] * rows.h.shape[1], 1)
    return chunk_size(n_local, rows.shape[2], rows.shape[1])


def pool_bucket(rows, n: int) -> int:
    """Rows the pool is padded to: the next power of two for pools up to ``POW2_MAX_BYTES``
    (padded), :func:`aljax._padding.bucket` ``(n)`` above."""
    pow2 = 1 << max(n - 1, 0).bit_length()
    row_bytes = nbytes(rows) / max(n, 1)
    return pow2 if row_bytes * pow2 <= POW2_MAX_BYTES else bucket(n)


def _pad_labeled(labeled_rows, n_lab: int):
    """Labeled rows zero-padded (zero rows add nothing to the Fisher sum) to a multiple of 256
    below 2,048 rows, to a size bucket above: a labeled set that grows by a few points per round
    compiles :func:`_labeled_gram` once per 256 points, not once per round."""
    return pad_tree(labeled_rows, size=-(-n_lab // 256) * 256 if n_lab < 2048 else bucket(n_lab))


@functools.partial(jax.jit, static_argnames=("chunk", "dtype"))
def _labeled_gram(labeled, lamb, n_lab, k, *, chunk: int, dtype) -> LabeledGram:
    """The labeled Fisher sum and ``A₀`` (:func:`aljax._bait._kernel.initial_inverse`). ``A₀``'s
    Cholesky factorisation is a LAPACK call on CPU: inside the kernel, where XLA runs other work
    beside it, LAPACK's threads and XLA's contend for the cores and the call can take a hundred
    times longer than here, on its own."""
    gram = prepare(labeled, chunk, dtype)[1]()
    return LabeledGram(gram, initial_inverse(gram, jnp.asarray(lamb, dtype), n_lab, k))


def _host_labeled_gram(labeled, lamb, n_lab: int, k: int, dtype) -> LabeledGram:
    """:func:`_labeled_gram` in NumPy (float64, rounded to ``dtype``) for small concrete labeled
    rows (:func:`_on_host`): no compilation per labeled-set size, on one BLAS thread
    (:func:`aljax._linalg.one_blas_thread`: the kernel runs next). None where ``M₀`` is not
    numerically positive definite (the jitted function then gives what it gives)."""
    with one_blas_thread():
        gram = host_gram(labeled)
        try:
            inverse = host_spd_inverse(float(lamb) * np.eye(len(gram)) + gram / (n_lab + k))
        except np.linalg.LinAlgError:
            return None
    leaves = jax.tree_util.tree_leaves(labeled)
    return LabeledGram(*(_validate.host_put(x.astype(dtype), *leaves) for x in (gram, inverse)))


def _on_host(*trees) -> bool:
    """Whether every array of ``trees`` (rows, None) is small, concrete and on the host or one CPU
    device (:func:`aljax._validate.on_host`): NumPy then does the small steps around the kernel,
    which compiles nothing per input size."""
    return _validate.on_host(*(x for tree in trees for x in jax.tree_util.tree_leaves(tree)))


# ---------------------------------------------------------------------------------------------
# The plan.


def _plan_one_device(rows, labeled_rows, k, lamb, n, n_forward):
    """Zero-pad the pool to a size bucket (small pools to a power of two, larger ones by at most
    1/8: :func:`pool_bucket`), so that an active-learning loop, whose pool shrinks and labeled set
    grows every round, compiles once per bucket instead of once per round; the real counts go in
    traced. The labeled rows enter only through their Fisher sum: computed first (one small
    compilation per labeled bucket), the kernel's shapes do not depend on their number. Pools
    below ``UNROLL_MIN_POINTS`` on a CPU run the kernel's quick-to-compile twin
    (:mod:`aljax._compile`): a short run, whose compilation is most of a first call."""
    n_lab = 0 if labeled_rows is None else n_points(labeled_rows)
    dtype = jnp.result_type(jnp.float32, *jax.tree_util.tree_leaves((rows, labeled_rows)))
    size = pool_bucket(rows, n)
    rows = rows if size == n else pad_tree(rows, size=size)
    b = rows_chunk(rows, size)
    if labeled_rows is not None:
        host = None
        if _on_host(labeled_rows) and not isinstance(lamb, jax.core.Tracer):
            host = _host_labeled_gram(labeled_rows, lamb, n_lab, k, dtype)
        labeled_rows = host or _labeled_gram(_pad_labeled(labeled_rows, n_lab), lamb, np.int32(n_lab), np.int32(k),
                                             chunk=b, dtype=dtype)
    kernel_fn = kernel
    if size < UNROLL_MIN_POINTS and _compile.on_cpu(rows):  # (loop forms: compilation outweighs the run)
        kernel_fn = functools.partial(_compile.call, quick_kernel, kernel)
    return kernel_fn, (rows, labeled_rows, lamb), dict(
        k=k, n_forward=n_forward, chunk=b, n_valid=np.int32(n),
        n_lab_valid=None if labeled_rows is None else np.int32(n_lab))


def plan(fn, rows, labeled_rows, k, lamb, oversample, layout=None, labeled_layout=None, pool_arg="embedding"):
    """``(kernel, args, static kwargs)`` of one selection: the one-device kernel on padded rows
    (concrete inputs), as it is (traced inputs: under Auto mesh axes XLA partitions it), or, for a
    pool sharded along its example axis (``layout``, from :func:`aljax._sharding.row_layout` of the
    user's input), the ``shard_map`` kernel."""
    n = n_points(rows)
    if labeled_rows is not None and n_points(labeled_rows) == 0:
        labeled_rows, labeled_layout = None, None
    n_forward = n_forward_steps(k, oversample, n)
    if layout is None and _validate.is_concrete(rows, labeled_rows):
        return _plan_one_device(rows, labeled_rows, k, lamb, n, n_forward)
    if layout is None:
        return kernel, (rows, labeled_rows, lamb), dict(k=k, n_forward=n_forward, chunk=rows_chunk(rows, n))
    if n % layout.shards:  # JAX builds no such array; kept for a clear message
        raise ValueError(_validate.message(fn, pool_arg, f"a pool size divisible by its {layout.shards} shards "
                                           f"({layout.describe()})", f"{n} examples"))
    static = dict(k=k, n_forward=n_forward, chunk=rows_chunk(rows, n // layout.shards))
    return plan_sharded(fn, rows, labeled_rows, lamb, layout, labeled_layout, static)


def effective_damping(rows, labeled_rows, lamb: float, damping: str):
    """The ``λ`` of ``λI + F_S``: ``lamb`` itself (``"absolute"``, the authors'), or ``lamb·tr(F)/d``
    (``"relative"``), ``F`` the mean Fisher over pool ∪ labeled, whose trace is the mean of the
    points' ``‖X_i‖²_F``; a Fisher of zero trace (every prediction certain) falls back to ``lamb``.
    Computed on the unpadded rows, before the plan, as one reduction over the (possibly sharded)
    rows: ``A₀`` of a labeled set is factorised before the kernel and needs it."""
    if damping == "absolute":
        return lamb
    both = [x for x in (rows, labeled_rows) if x is not None]
    count = sum(n_points(x) for x in both) * n_cols(rows)
    if _on_host(*both) and not isinstance(lamb, jax.core.Tracer):   # (float64, no compilation)
        mean_diag = sum(host_fisher_trace(x) for x in both) / count
        return float(lamb) * (mean_diag if mean_diag > 0 else 1.0)
    mean_diag = sum(fisher_trace(x) for x in both) / count
    return lamb * jnp.where(mean_diag > 0, mean_diag, 1)


def select(fn, rows, labeled_rows, k, lamb, oversample, layout=None, labeled_layout=None, pool_arg="embedding",
           damping="absolute"):
    """Run the :func:`plan` of one selection: ``(k,)`` int32 indices."""
    lamb = effective_damping(rows, labeled_rows, lamb, damping)
    if is_binary(rows):  # (after the damping: a relative λ is per column of the C·D)
        binary = host_binary_rows if _on_host(rows, labeled_rows) else binary_rows
        rows = binary(rows)
        labeled_rows = None if labeled_rows is None else binary(labeled_rows)
    kernel_fn, args, static = plan(fn, rows, labeled_rows, k, lamb, oversample, layout, labeled_layout, pool_arg)
    with _progress.waiting("selecting", k, unit="pick") as bar:
        return bar.wait(kernel_fn(*args, **static))
