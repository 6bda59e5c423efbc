"""The public functions: :func:`volume_stream` (the selector on embeddings) and :func:`vessal`
(the front door that embeds a pool and streams it), with their argument checks."""

from __future__ import annotations

import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _progress, _sharding, _validate
from .._embeddings import check_outputs, logits_and_features, output_shape, softmax
from .._pool import open_pool
from .._types import Factored, FisherFactors
from ._rows import PaddedChunks, compute_dtype, covariance_of, n_rows, width
from ._stream import run


def volume_stream(embedding, k: int | None = None, *, key=0, labeled=None, rate: float | None = None,
                  lamb: float = 0.01, rank: int | None = None, covariance=None) -> jax.Array:
    """VeSSAL's streaming volume sampling over embeddings given in stream order.

    Saran, Yousefi, Krishnamurthy, Langford and Ash, "Streaming active learning with deep neural
    networks", ICML 2023. One pass over the rows: each point is kept with probability
    ``min(1, ρ · s / tr(Σ̂ A⁻¹))``, where ``s`` is the volume it would add to the kept set
    (``uᵀA⁻¹u``, or ``|det(U A⁻¹ Uᵀ)|`` at rank ``r``), ``A = λI + Σ_kept UᵀU`` (Woodbury-updated
    on keeps), ``Σ̂`` the running covariance of the stream *including the current point* and
    ``ρ`` the target rate (the docstring of ``aljax._vessal`` gives the exact order of operations). With
    ``k₁, k₂ = split(key)``, the uniform draws of stream positions ``s … s + 1023`` (``s`` a
    multiple of 1024, the internal chunk) are ``uniform(fold_in(k₁, s), (1024,))``: a function of
    the global position only, so the picks do not depend on how the stream is batched.

    Args:
      embedding: the stream, in order: a dense ``(N, d)`` array (rank 1), ``(N, r, d)`` (rank
        ``r``), a :class:`~aljax.Factored` (rank 1, row ``a ⊗ h``, class-major ``c·D + j``) or a
        :class:`~aljax.FisherFactors` restricted to its ``rank`` most probable classes: for each
        such class ``c`` the Fisher row ``√p_c (e_c − p) ⊗ h`` (row ``c`` of
        ``diag(√p)(I − 1pᵀ) ⊗ hᵀ``), laid out in the global class blocks so blocks line up across
        points (the reference code sorts each point's classes by probability, which misaligns them;
        this does not). At rank 1 that is the row of the predicted class ``ŷ``:
        ``√p_ŷ (e_ŷ − p) ⊗ h``.
      k: the budget for this stream, a Python int in ``[1, N]``: the target rate is
        ``(k − kept) / (N − i)`` and exactly ``k`` unique indices are returned; a shortfall at the
        end is filled uniformly (drawn from ``k₂``) from the skipped points. Give exactly one of
        ``k`` and ``rate``.
      key: an int seed or a ``jax.random`` key. The default is 0: two calls without a key use
        the same randomness; in a loop, pass a fresh key each round (``key=round_index``).
      labeled: optional labeled-set embedding of the same kind and width (``(n_L, d)``,
        ``(n_L, r, d)``, ...): ``A`` starts at ``λI + Σ_L UᵀU`` and the running covariance starts
        from the labeled sum and count.
      rate: a float in ``(0, 1]``, the fraction to keep when no budget is fixed: a variable number
        of indices is returned, about ``rate·N`` (not exactly: the keep probability is clipped at 1
        and shrinks as points are kept). Not usable under an outer ``jax.jit`` (variable size).
      lamb: ``λ > 0``, the damping of ``A₀ = λI`` (0.01: the paper's ``A₀⁻¹ = 100·I``).
      rank: for a :class:`~aljax.FisherFactors`, the number of Fisher rows per point, in
        ``[1, C]`` (default 1); for other kinds ``None`` or the rank their shape implies.
      covariance: optional fixed ``(d, d)`` ``Σ̂`` used for every point instead of the running one
        (for example the mean of ``UᵀU`` over the pool's rows, which ``vessal(...,
        precompute_covariance=True)`` computes).

    Returns:
      jax.Array: int32 indices into the stream, ``(k,)``: the kept ones in stream order then any uniform
      fill; or, with ``rate``, the kept ones in stream order.

    Memory is the ``d × d`` state (two matrices) plus one chunk of 1024 rows; the time per point
    is one ``d × d`` matrix-vector product and its share of one ``XᵀX`` per chunk. With a fixed
    ``covariance`` and at most ``d/2`` labeled and kept rows (``d ≥ 640``), the stream runs in the
    span of the kept rows instead: ``O(m(C + D) + m²)`` per point with ``m`` kept rows, one
    ``Σ̂ u`` product per keep, memory ``O(m(C + D) + m²)`` besides ``Σ̂``; the picks are the same
    up to float rounding.

    Example:
      >>> import jax, aljax
      >>> embedding = jax.random.normal(jax.random.key(0), (500, 16))
      >>> aljax.volume_stream(embedding, 20, key=0).shape
      (20,)
    """
    fn = "volume_stream"
    key = _validate.as_key(fn, key)
    embedding, rank, d, n = _check_embedding(fn, "embedding", _sharding.auto_axes(embedding), rank)
    budget, rate = _validate.check_k_or_rate(fn, k, rate, n)
    lamb = _validate.check_positive(fn, "lamb", lamb)
    if labeled is not None:
        labeled = _check_labeled(fn, labeled, embedding, rank, d)
    if covariance is not None:
        covariance = _check_covariance(fn, covariance, d)
    leaves = jax.tree_util.tree_leaves((embedding, labeled, covariance))
    _validate.check_finite(fn, "the embedding values", *leaves)
    if rate is not None and not _validate.is_concrete(*leaves):
        raise TypeError(f"aljax.{fn}: `rate=` returns a data-dependent number of indices, so it cannot run "
                        "under jax.jit; call it outside jit or pass `k=`.")
    return run(key, PaddedChunks(embedding, n), d=d, rank=rank, dtype=compute_dtype(embedding, labeled, covariance),
               budget=budget, rate=rate, total=n if budget is not None else None, lamb=lamb, labeled=labeled,
               covariance=covariance, fn=fn)


def vessal(params, apply_fn: Callable, pool, k: int | None = None, *, key=0, labeled=None, batch_size: int = 256,
           features_fn: Callable | None = None, problem_type: str = "classification", rate: float | None = None,
           rank: int = 1, lamb: float = 0.01, precompute_covariance: bool = False,
           length: int | None = None, progress: bool | None = None) -> jax.Array:
    """VeSSAL: streaming active learning by volume sampling of last-layer Fisher embeddings.

    Saran, Yousefi, Krishnamurthy, Langford and Ash, "Streaming active learning with deep neural
    networks", ICML 2023. The pool is read once, in order, as a stream; each point's last-layer
    Fisher rows are kept with a probability that grows with the volume they add to the kept set,
    tuned so the expected number kept meets the budget ``k`` (or the ``rate``): exactly
    :func:`~aljax.volume_stream` on the pool's embedding, computed chunk by chunk.

    The rows: for classification, ``rank = r`` uses the Fisher rows of the ``r`` most probable
    classes, ``√p_c (e_c − p) ⊗ h``, each in its own class block (class-aligned across points,
    unlike the reference code, which orders each point's blocks by its own probabilities). For
    regression the Fisher of a Gaussian head is ``h hᵀ``, so the row is the penultimate
    features ``h`` itself (rank 1).

    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x) -> outputs``: logits ``(batch, C)`` for classification,
        ``(batch,)`` or ``(batch, m)`` for regression; its last operation must be a dense layer
        unless ``features_fn`` is given.
      pool: ``(N, ...)`` array or pytree of arrays (lists, tuples and dicts are pytrees; processed
        in chunks of ``batch_size``), or an **iterable of batches** of such arrays (a generator,
        an iterator or any other non-container iterable): true streaming, read once, memory
        independent of the stream length (beyond the kept indices and the ``d × d`` state,
        ``d = C·D``). Batches must keep their trailing shape. Picks do not depend on the batch
        boundaries.
      k: the budget, a Python int (``≤ N``); with an iterable pool the stream length must be known:
        pass ``length=`` (``len()`` of a loader counts batches, not examples, so it is not used).
        Exactly one of ``k``/``rate``.
      key: an int seed or a ``jax.random`` key. The default is 0: two calls without a key use
        the same randomness; in a loop, pass a fresh key each round (``key=round_index``).
      labeled: optional labeled inputs ``(n_L, ...)`` (same kind as ``pool``'s examples): ``A``
        starts at ``λI + Σ_L UᵀU`` and the running covariance (sum and count) from the labeled
        set (the full update; the reference code drops a term and inverts the preference).
      batch_size: examples per forward chunk. The picks do not depend on it.
      features_fn: optional ``features_fn(params, x) -> (batch, D)``.
      problem_type: ``"classification"`` or ``"regression"``.
      rate: a float in ``(0, 1]``, the fraction to keep when the stream length is unknown; the
        number returned varies (about ``rate·N``).
      rank: Fisher rows per point, in ``[1, C]`` (classification); 1 for regression.
      lamb: ``λ > 0`` for ``A₀ = λI``.
      precompute_covariance: take a first pass over the pool to compute ``Σ̂`` (the mean of
        ``UᵀU`` over the pool and the labeled set) and use it, fixed, for every point. An iterable pool must then be re-iterable (e.g. an object
        whose ``__iter__`` starts a new pass, such as a data loader; not a generator).
      length: the stream length in examples, for ``k=`` with an iterable pool.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.

    Returns:
      jax.Array: int32 indices into the stream, ``(k,)`` unique (kept in stream order, then a uniform fill
      of any shortfall from the skipped points), or, with ``rate``, the kept ones.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jnp.ones((4, 16)) / 4, jnp.arange(48.0).reshape(16, 3) / 48
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> pool = jax.random.normal(jax.random.key(1), (300, 4))
      >>> aljax.vessal((W1, W2), apply_fn, pool, 10, key=0, labeled=pool[:20]).shape
      (10,)
      >>> aljax.vessal((W1, W2), apply_fn, pool, 10, key=0, problem_type="regression").shape
      (10,)
    """
    with _progress.scope("vessal", progress):
        fn = "vessal"
        key, lamb, batch_size = _check_options(fn, params, key, lamb, batch_size, rank, problem_type,
                                               precompute_covariance)
        regression = problem_type == "regression"

        def embed(batch):
            outputs, h = logits_and_features(params, apply_fn, batch, batch_size=batch_size, features_fn=features_fn,
                                             fn_name=fn, problem_type=problem_type)
            return h if regression else FisherFactors(softmax(outputs), h)

        streaming = _validate.is_batch_iterable(pool)
        if streaming:
            sample, batches, budget, rate, total = _open_iterable(fn, pool, k, rate, length, precompute_covariance)
        else:
            sample, budget, rate, total = _open_array(fn, pool, k, rate, length, batch_size)
        # Checked on a few examples' shapes (jax.eval_shape), before any forward pass.
        _check_model(fn, params, apply_fn, sample, rank, problem_type)
        if labeled is not None and _validate.check_labeled_like_pool(fn, labeled, sample) == 0:
            labeled = None  # an empty labeled set seeds nothing
        labeled_emb = None if labeled is None else embed(labeled)
        if streaming:
            first = embed(sample)
            stream = itertools.chain([first], (embed(batch) for batch in batches))
        else:
            first = embed(pool)
            stream = PaddedChunks(first, n_rows(first))
        d = width(first)
        if labeled_emb is not None and width(labeled_emb) != d:
            raise ValueError(_validate.message(fn, "labeled", f"inputs embedding to width {d} (as `pool`)",
                                               f"width {width(labeled_emb)}"))
        covariance = None
        if precompute_covariance:  # a second pass over an iterable pool
            covariance = covariance_of((embed(batch) for batch in _nonempty_batches(fn, pool)) if streaming else first,
                                       labeled_emb, rank)
        return run(key, stream, d=d, rank=rank, dtype=compute_dtype(first), budget=budget, rate=rate, total=total,
                   lamb=lamb, labeled=labeled_emb, covariance=covariance, fn=fn)


# ---------------------------------------------------------------------------------------------
# Checks of the front door.


def _check_options(fn, params, key, lamb, batch_size, rank, problem_type, precompute_covariance):
    """The options that need no pool: ``(key, lamb, batch_size)``, validated."""
    _validate.check_params(fn, params)
    key = _validate.as_key(fn, key)
    lamb = _validate.check_positive(fn, "lamb", lamb)
    batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
    _validate.check_bool(fn, "precompute_covariance", precompute_covariance)
    _validate.check_rank(fn, rank, _validate.check_problem_type(fn, problem_type, fn))
    return key, lamb, batch_size


def _open_array(fn, pool, k, rate, length, batch_size):
    """An array pool: ``(sample, budget, rate, total)``, ``sample`` its first chunk (as the
    forward pass will see it)."""
    if length is not None:
        raise ValueError(_validate.message(fn, "length", "None for an array pool (its length is known)", length))
    sample, n, _ = open_pool(fn, pool, batch_size)
    budget, rate = _validate.check_k_or_rate(fn, k, rate, n)
    return sample, budget, rate, n if budget is not None else None


def _open_iterable(fn, pool, k, rate, length, precompute_covariance):
    """An iterable pool: ``(sample, batches, budget, rate, total)``, ``sample`` its first
    non-empty batch and ``batches`` the ones after it."""
    if length is not None:
        length = _validate.check_int(fn, "length", length, low=1)
    if k is not None and length is None:
        raise ValueError(_validate.message(
            fn, "length", "the stream length (an int) when `k` is given with an iterable pool "
            "(or pass `rate=` instead of `k`)", "None"))
    budget, rate = _validate.check_k_or_rate(fn, k, rate, length)
    if precompute_covariance and iter(pool) is pool:
        raise ValueError(_validate.message(fn, "pool", "a re-iterable (e.g. a list of batches) with "
                                           "precompute_covariance=True (it takes two passes)",
                                           f"a one-shot iterator ({type(pool).__name__})"))
    batches = _nonempty_batches(fn, pool)
    try:
        sample = next(batches)
    except StopIteration:
        raise ValueError(_validate.message(fn, "pool", "a non-empty stream of batches",
                                           "an iterable that yielded no examples")) from None
    return sample, batches, budget, rate, length if budget is not None else None


def _nonempty_batches(fn, pool):
    """The pool's batches, those with no rows skipped."""
    return (batch for batch in _validate.checked_batches(fn, pool)
            if _validate.pool_size(fn, batch, allow_empty=True))


def _check_model(fn, params, apply_fn, sample, rank, problem_type) -> None:
    """The model's output shape on ``sample`` (abstract: no forward pass), and ``rank ≤ C``."""
    if not callable(apply_fn):
        raise TypeError(_validate.message(fn, "apply_fn", "a callable apply_fn(params, x)", type(apply_fn).__name__))
    out = output_shape(fn, apply_fn, params, sample)
    check_outputs(fn, out, problem_type)
    if problem_type == "classification":
        _validate.check_int(fn, "rank", rank, low=1, high=out.shape[1])


# ---------------------------------------------------------------------------------------------
# Checks of the selector.


def _check_embedding(fn: str, arg: str, emb, rank) -> tuple[Any, int, int, int]:
    """Returns ``(emb, rank, d, n)`` for a validated embedding."""
    if isinstance(emb, (Factored, FisherFactors)):
        if isinstance(emb, Factored):
            if rank not in (None, 1):
                raise ValueError(_validate.message(fn, "rank", "1 (or None) for a Factored embedding", rank))
            rank = 1
        else:
            n_classes = emb.probs.shape[1]
            rank = 1 if rank is None else _validate.check_int(fn, "rank", rank, low=1, high=n_classes)
        return emb, rank, emb.dim, emb.n
    shape, dtype = getattr(emb, "shape", None), getattr(emb, "dtype", None)
    if shape is None:
        raise TypeError(_validate.message(fn, arg, "an array (n, d) / (n, r, d), Factored or FisherFactors",
                                          type(emb).__name__))
    if len(shape) not in (2, 3):
        raise ValueError(_validate.message(fn, arg, "a 2-D (n, d) or 3-D (n, r, d) array", f"shape {tuple(shape)}"))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(_validate.message(fn, arg, "a floating array", f"dtype {dtype}"))
    implied = 1 if len(shape) == 2 else shape[1]
    if rank not in (None, implied):
        raise ValueError(_validate.message(fn, "rank", f"None or {implied} (implied by `{arg}`'s shape)", rank))
    if shape[0] == 0 or shape[-1] == 0 or implied == 0:
        raise ValueError(_validate.message(fn, arg, "a non-empty embedding", f"shape {tuple(shape)}"))
    return jnp.asarray(emb), implied, shape[-1], shape[0]


def _check_labeled(fn, labeled, emb, rank, d):
    if type(labeled) is not type(emb) and not (
            not isinstance(emb, (Factored, FisherFactors)) and hasattr(labeled, "shape")):
        raise TypeError(_validate.message(fn, "labeled", f"the same kind as `embedding` ({type(emb).__name__})",
                                          type(labeled).__name__))
    labeled, l_rank, l_d, _ = _check_embedding(fn, "labeled", labeled,
                                               rank if isinstance(emb, FisherFactors) else None)
    if (l_rank, l_d) != (rank, d):
        raise ValueError(_validate.message(fn, "labeled", f"rows of rank {rank} and width {d} (as `embedding`)",
                                           f"rank {l_rank} and width {l_d}"))
    return labeled


def _check_covariance(fn, covariance, d):
    shape, dtype = getattr(covariance, "shape", None), getattr(covariance, "dtype", None)
    if shape is None or tuple(shape) != (d, d):
        raise ValueError(_validate.message(fn, "covariance", f"a ({d}, {d}) array", f"shape {shape}"))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(_validate.message(fn, "covariance", "a floating array", f"dtype {dtype}"))
    return jnp.asarray(covariance)
