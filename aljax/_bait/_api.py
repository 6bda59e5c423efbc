"""BAIT's public functions: :func:`fisher_greedy` (the selector) and :func:`bait` (the front door)."""

from __future__ import annotations

from typing import Callable

import jax

from .. import _progress, _validate
from .._embeddings import logits_and_features
from ._plan import as_rows, select
from ._rows import host_rows_from_outputs, n_points, rows_from_outputs
from ._sharded import layouts


def fisher_greedy(embedding, k: int, *, key=0, labeled=None, lamb: float = 1.0, damping: str = "absolute",
                  oversample: float = 2.0) -> jax.Array:
    """BAIT's selector: greedy forward/backward minimisation of ``tr((λI + F_S)⁻¹ F)``.

    Ash et al., "Gone fishing: neural active learning with Fisher embeddings", NeurIPS 2021.
    Point ``i`` contributes rows ``X_i`` (``r × d``) whose ``X_iᵀX_i`` is its Fisher. With ``n_L``
    labeled points, the procedure (weighting as in the authors' reference code) is:

    * ``F`` = mean of ``X_iᵀX_i`` over pool ∪ labeled (the target curvature);
    * ``M₀ = λI + F_L·n_L/(n_L + k)``, ``F_L`` the labeled mean (so ``M₀ = λI`` without labels);
    * candidate rows are scaled by ``√(k/(n_L + k))``, so that a full batch weighs like ``k`` of
      the ``n_L + k`` points the next model will be trained on;
    * forward: ``⌈oversample·k⌉`` greedy steps (at most the pool size), each adding the unpicked
      point with the largest ``tr(X M⁻¹ F M⁻¹ Xᵀ (I + X M⁻¹ Xᵀ)⁻¹)`` — the decrease of
      ``tr(M⁻¹F)`` — then ``M ← M + XᵀX``;
    * backward: while more than ``k`` remain, remove the point whose removal increases
      ``tr(M⁻¹F)`` least, ``tr(X M⁻¹ F M⁻¹ Xᵀ (I − X M⁻¹ Xᵀ)⁻¹)``.

    ``FisherFactors`` probabilities must sum to 1 in every row (checked on concrete inputs).

    Ties go to the lowest pool index (forward) or the earliest pick (backward); a pool with zero
    Fisher therefore yields indices ``n_f − k, …, n_f − 1`` (``n_f = ⌈oversample·k⌉``: the forward
    pass takes ``0, …, n_f − 1``, the backward pass drops the earliest), its first ``k`` when
    ``oversample = 1``.

    The computation never forms ``X`` for the pool: it keeps ``A = M⁻¹`` and per-point ``r × r``
    blocks ``X_i A X_iᵀ`` and ``X_i A F A X_iᵀ``, updated by rank-``r`` corrections after each
    Woodbury step; ``F`` is built as a block diagonal minus ``ZᵀZ``. A step costs
    ``O(n·r·C·D + n·r³ + r·d²)`` for :class:`~aljax.FisherFactors` (``d = C·D``) and
    ``O(n·r²·d + r·d²)`` for dense rows, against ``O(n·r·d²)`` for the reference. When the
    corrections have cancelled the blocks by enough to threaten the ranking (λ small against the
    Fisher, or picks that span most of the ``d`` columns), the blocks are rebuilt exactly from
    ``M⁻¹`` (``O(n·d²)``), so float32 follows float64; in the backward pass a point whose
    ``I − X M⁻¹ Xᵀ`` rounds to indefinite is kept. Memory is ``O(d² + n·r²)`` beyond the input
    (plus, for the forward steps, one copy of the features laid out as a single ``(D, n)`` matrix,
    so that each step is one large matmul). Everything from building ``F`` to the last pick runs
    in one ``jax.jit`` with ``lax.fori_loop``.

    On one device the pool is zero-padded to a size bucket (its real size goes in traced) and the
    labeled points enter as their Fisher sum, computed first: an active-learning loop, whose pool
    shrinks and labeled set grows every round, compiles the selection once per pool bucket. The
    padding is never picked and changes no pick.

    Several devices: a pool whose leaves are sharded along the example axis with one
    ``NamedSharding(mesh, P(axes))`` runs under ``jax.shard_map``: each device builds its part of
    ``F`` and keeps its points' rows and blocks; per step the devices exchange only each shard's
    best ``(gain, index)``, the picked point's factors (``r·C + D`` numbers; ``r·d`` for dense rows)
    and two maxima for the refresh test; the backward pass runs replicated on the
    ``⌈oversample·k⌉`` picks. ``labeled`` may be sharded the same way, replicated, or on one device
    (then copied to every device). The picks are those of one device, except where summing ``F``
    in another order flips a near-tie between gains (within float rounding). The pool size must
    be divisible by the number of shards (JAX builds no other sharded array); leaves sharded
    differently raise a ``ValueError``. Under a caller's ``jax.jit``, a mesh with Explicit axes is
    seen and used the same way; with Auto axes XLA partitions the one-device kernel itself.

    Args:
      embedding: the candidates: :class:`~aljax.FisherFactors` ``(probs (n, C), h (n, D))``, rows
        ``X_i = S_i ⊗ h_iᵀ`` with ``S_i = diag(√p_i)(I − 1p_iᵀ)`` (class-major columns,
        ``d = C·D``), or a dense ``(n, r, d)`` floating array of ``r`` rows per point.
      k: number of points to select, a Python int in ``[1, n]``.
      key: an int seed or a ``jax.random`` key, accepted and ignored: BAIT is deterministic, and
        takes the key so that strategies can be swapped without changing the call.
      labeled: the labeled points' embedding, of the same kind and trailing shape as
        ``embedding`` (``(n_L, C)``/``(n_L, D)`` factors or ``(n_L, r, d)`` rows), or None (an
        embedding with 0 points is the same as None).
      lamb: the damping ``λ > 0``, in the units of ``damping``.
      damping: ``"absolute"``: ``λ`` is used as given, in the units of the Fisher (the authors'
        code; the same ``λ`` damps a head with small features strongly and one with large
        features weakly); ``"relative"``: the damping is ``λ·tr(F)/d``, ``λ`` times the mean
        diagonal of ``F`` (the mean Fisher over pool ∪ labeled), so that rescaling the features
        changes no pick (a Fisher of zero trace falls back to ``λ``).
      oversample: forward steps per selected point, ``>= 1`` (1: forward only).

    Returns:
      ``(k,)`` int32 indices into the pool, unique, in pick order (the backward pass only removes).
      Float32 inputs are computed in float32 with ``precision=HIGHEST`` matmuls; float64 inputs
      (with ``jax_enable_x64``) in float64. NaN/Inf checks run only on concrete inputs.

    Example:
      >>> import jax, aljax
      >>> probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (100, 3)))
      >>> h = jax.random.normal(jax.random.key(1), (100, 8))
      >>> emb = aljax.FisherFactors(probs, h)
      >>> aljax.fisher_greedy(emb[10:], 5, labeled=emb[:10]).shape
      (5,)
    """
    fn = "fisher_greedy"
    _validate.check_key(fn, key)
    layout, labeled_layout = layouts(fn, "embedding", embedding, "labeled", labeled)
    rows = as_rows(fn, "embedding", embedding)
    labeled_rows = None if labeled is None else as_rows(fn, "labeled", labeled, like=embedding)
    k = _validate.check_k(fn, k, n_points(rows))
    lamb = _validate.check_positive(fn, "lamb", lamb)
    damping = _validate.check_damping(fn, damping)
    oversample = _validate.check_oversample(fn, oversample)
    return select(fn, rows, labeled_rows, k, lamb, oversample, layout, labeled_layout, damping=damping)


def bait(params, apply_fn: Callable, pool, k: int, *, key=0, labeled=None, batch_size: int = 256,
         features_fn: Callable | None = None, problem_type: str = "classification", lamb: float = 1.0,
         damping: str = "absolute", oversample: float = 2.0, progress: bool | None = None) -> jax.Array:
    """BAIT: Fisher-embedding batch selection (forward greedy, then backward pruning).

    Ash et al., "Gone fishing: neural active learning with Fisher embeddings", NeurIPS 2021.
    Each example is embedded by the Fisher information of the model's last dense layer (no bias):
    for classification ``(diag p − p pᵀ) ⊗ h hᵀ`` with ``p = softmax(logits)`` (see
    :class:`~aljax.FisherFactors`); for regression (a Gaussian head with ``m`` outputs)
    ``I_m ⊗ h hᵀ``, i.e. ``h hᵀ`` per output. The batch then minimises
    ``tr((λI + F_S)⁻¹ F)`` by :func:`~aljax.fisher_greedy`, whose docstring lists the weighting
    (``F`` over pool ∪ labeled, ``M₀ = λI + F_L n_L/(n_L + k)``, candidates scaled by
    ``√(k/(n_L + k))``, ``⌈oversample·k⌉`` forward steps, backward pruning to ``k``).

    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x)`` returning logits ``(batch, C)`` for classification, or
        ``(batch,)`` / ``(batch, m)`` outputs for regression. Its last operation must be a dense
        layer unless ``features_fn`` is given.
      pool: ``(n, ...)`` array or pytree of arrays: the unlabeled candidates; or an iterable of
        batches of such arrays (read once; only the compact embedding is kept).
      k: number of points to select, a Python int in ``[1, n]``.
      key: an int seed or a ``jax.random`` key, accepted and ignored: BAIT is deterministic, and
        takes the key so that strategies can be swapped without changing the call.
      labeled: the labeled inputs ``(n_L, ...)``, with the structure and trailing shapes of
        ``pool``, or None.
      batch_size: rows per forward chunk of the model.
      features_fn: optional ``features_fn(params, x) -> (batch, D)`` penultimate features.
      problem_type: ``"classification"`` or ``"regression"``.
      lamb: the damping ``λ > 0``, in the units of ``damping``.
      damping: ``"absolute"`` (``λ`` as given, the authors') or ``"relative"`` (``λ·tr(F)/d``,
        independent of the features' scale); see :func:`~aljax.fisher_greedy`.
      oversample: forward steps per selected point, ``>= 1``.
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
      >>> aljax.bait((W1, W2), apply_fn, pool, 10, labeled=pool[:5]).shape
      (10,)
    """
    with _progress.scope("bait", progress):
        fn = "bait"
        _validate.check_params(fn, params)
        k = _validate.check_k_for_pool(fn, k, pool)
        like, pool = _validate.peek_batches(fn, pool)
        lamb = _validate.check_positive(fn, "lamb", lamb)
        damping = _validate.check_damping(fn, damping)
        oversample = _validate.check_oversample(fn, oversample)
        _validate.check_problem_type(fn, problem_type)
        _validate.check_key(fn, key)
        n_lab = 0 if labeled is None else _validate.check_labeled_like_pool(fn, labeled, like)
        outputs, h = logits_and_features(params, apply_fn, pool, batch_size=batch_size, features_fn=features_fn,
                                         fn_name=fn, problem_type=problem_type)
        k = _validate.check_k(fn, k, h.shape[0])
        rows = _rows_from_outputs(outputs, h, problem_type)
        labeled_rows = None
        if n_lab > 0:
            lab_out, lab_h = logits_and_features(params, apply_fn, labeled, batch_size=batch_size,
                                                 features_fn=features_fn, fn_name=fn, problem_type=problem_type)
            labeled_rows = _rows_from_outputs(lab_out, lab_h, problem_type)
        # The embedding pass returns the features sharded like a sharded pool: select on that layout.
        layout, labeled_layout = layouts(fn, "pool", h, "labeled", None if labeled_rows is None else labeled_rows.h)
        return select(fn, rows, labeled_rows, k, lamb, oversample, layout, labeled_layout, pool_arg="pool",
                      damping=damping)


def _rows_from_outputs(outputs, h, problem_type):
    """:func:`aljax._bait._rows.rows_from_outputs`, in NumPy for small outputs on the host or one CPU
    device (no compilation per pool size)."""
    host = _validate.on_host(outputs, h)
    return (host_rows_from_outputs if host else rows_from_outputs)(outputs, h, problem_type)
