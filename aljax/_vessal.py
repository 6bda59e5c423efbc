"""VeSSAL: streaming volume sampling at a labeling rate (one pass) and the vessal() front door.

Saran, Yousefi, Krishnamurthy, Langford and Ash, "Streaming active learning with deep neural
networks", ICML 2023.

The procedure, for the stream points ``i = 0, 1, …`` in order, each a ``r × d`` block ``U_i``
(``r`` rows of dimension ``d``; ``r = 1`` is a single vector ``u_i``):

1. ``M_i = U_i A⁻¹ U_iᵀ`` (``r × r``) and the score ``s_i = |det M_i|`` (``= u_iᵀA⁻¹u_i`` at
   rank 1), with ``A`` the current ``λI + Σ_{kept j} U_jᵀU_j`` (``+ Σ_labeled`` when seeded).
2. The running covariance takes point ``i`` *before* the keep decision (the reference package's
   order): ``Σ̂_i = (S_L + Σ_{j ≤ i} U_jᵀU_j) / (n_L + i + 1)``, ``S_L``/``n_L`` the labeled
   seed (0 without one). With a fixed covariance (``covariance=`` / ``precompute_covariance``)
   ``Σ̂`` never changes.
3. The target rate ``ρ_i = (k − kept_i) / (N − i)`` (budget form) or the user's ``rate``.
4. Keep with probability ``p_i = min(1, ρ_i · s_i / tr(Σ̂_i A⁻¹))`` (``p_i = 0`` when ``s_i = 0``):
   keep iff ``v_i < p_i`` for the uniform draw ``v_i``: the stream is cut into internal chunks of
   ``_CHUNK`` points at fixed positions and chunk ``s`` draws ``uniform(fold_in(stream_key, s·_CHUNK),
   (_CHUNK,))``, so each draw depends on the global stream position only, never on how the caller
   batches the stream.
5. On a keep, ``A⁻¹ ← A⁻¹ − W K Wᵀ`` with ``W = A⁻¹U_iᵀ`` and ``K = (I + M_i)⁻¹`` (Woodbury).

The fast path never forms a ``d × d`` product per point: ``tr(S A⁻¹)`` (``S`` the unnormalised
covariance sum) is carried as a scalar, raised by ``tr M_i`` when point ``i`` joins ``S`` and
lowered by ``tr(K Wᵀ S W)`` on a keep; it is recomputed exactly, as ``Σ S ⊙ A⁻¹``, at the start
of every internal chunk of ``_CHUNK`` points. Per chunk, ``X A⁻¹`` and ``S += XᵀX`` are one
matrix product each (compute-bound BLAS-3, ``2·d²·r`` multiply-adds per point); between keeps
``A⁻¹`` is fixed, so the scores, the running trace (a cumulative sum) and the keep
probabilities of all the chunk's remaining points are computed at once and the next keep is the
first point whose draw falls below its probability; the points kept within a chunk enter
through a small Woodbury block (see :func:`_stream_chunk`). A keep costs one ``O(d²r)``
product, ``S Wᵀ`` for the trace; ``A⁻¹`` itself is updated once per chunk, in place (the chunk
kernel's state is donated), with all of the chunk's keeps at once.

With a fixed covariance (``covariance=`` / ``precompute_covariance=True``) and few kept rows
relative to ``d`` (``m ≤ d/2``, ``d ≥ 640``: :func:`_span_plan`), a second kernel works in the
span of the kept rows ``U`` (``m × d``, labeled rows first) and never forms a ``d × d``
inverse: ``A⁻¹ = λ⁻¹(I − Uᵀ(λI + UUᵀ)⁻¹U)``, so ``s_i`` needs ``U u`` (``O(m(C + D))`` per row
from the factors ``a ⊗ h``) and an ``m × m`` whitening (``O(m²)``), and
``tr(Σ̂A⁻¹) = λ⁻¹(tr Σ̂ − tr((λI + UUᵀ)⁻¹ U Σ̂ Uᵀ))`` is kept by bordering ``U Σ̂ Uᵀ`` on each
keep: one ``Σ̂ u`` product (``d²``) per *keep*, none per point (see :func:`_span_chunk`). The
running covariance keeps the dense kernel: ``S`` changes with every point, so bordering
``U S Uᵀ`` on a keep of ``u`` needs ``S u`` for the ``S`` of that moment, the sum over every
point so far: either ``S`` itself, accumulated at ``d²`` per point (the very cost the span
kernel avoids; the dense kernel pays it as one BLAS-3 ``XᵀX`` per chunk), or ``Σ_i (u_i·u) u_i``
over all past points (``O(N·d)`` per keep). Memory of the span kernel: the kept rows' factors
plus two ``cap × cap`` matrices, with ``cap = (n_L + k)·r`` rows preallocated for a budget ``k``; with
``rate`` it starts at ``n_L·r + 256`` rows and doubles when full (the chunk resumes at the
point that did not fit), and past ``d/2`` rows it hands over to the dense kernel
(``A⁻¹ = λ⁻¹(I − QᵀQ)``, ``Q = L⁻¹U``) for the rest of the stream. Both kernels run the same
procedure on the same draws: the picks agree up to float rounding (tested).
"""

from __future__ import annotations

import functools
import itertools
import numbers
from collections.abc import Iterable
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _sharding, _validate
from ._badge import _pad_tree
from ._embeddings import _stream_chunks, logits_and_features, softmax
from ._types import Factored, FisherFactors

_HIGHEST = jax.lax.Precision.HIGHEST
_CHUNK = 1024  # internal chunk (points per kernel call); fixed, so picks never depend on batching
_BUFFER = 16  # keeps held in Woodbury form within a chunk before they are folded into G = X A⁻¹
_MERGE = 64  # keeps per block of the end-of-chunk update of A⁻¹
# Fixed covariance, d ≥ _SPAN_MIN_D and at most _SPAN_MAX_ROWS·d rows (labeled and kept, r per point):
# the span-of-kept-points kernel. Measured (2-core CPU, same-run ratios): 2.3× the dense kernel at
# d = 640 with 320 rows, 1.1× at 640 rows; 25× at d = 1,280 and 43× at d = 5,120 with 81 rows.
_SPAN_MIN_D = 640
_SPAN_MAX_ROWS = 0.5
_SPAN_START = 256  # rows allocated at first with `rate` (then doubled, up to _SPAN_MAX_ROWS·d)


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HIGHEST)


# ---------------------------------------------------------------------------------------------
# Embedding rows.


def _dense_rows(emb, rank: int, dtype) -> jax.Array:
    """The ``(n, r, d)`` stream rows of an embedding chunk (class-major columns ``c·D + j``).

    * dense ``(n, d)`` → rank 1; dense ``(n, r, d)`` as is;
    * :class:`Factored` → the single row ``a ⊗ h``;
    * :class:`FisherFactors` → for each of the ``r`` most probable classes ``c`` (ties to the lower
      class index) the Fisher row ``V[c] = √p_c (e_c − p) ⊗ h``: row ``c`` of ``S ⊗ hᵀ`` with
      ``S = diag(√p)(I − 1pᵀ)``, in the global class-block layout, so block ``c'`` of every row
      multiplies class ``c'``'s weights for every point (class-aligned).
    """
    if isinstance(emb, Factored):
        a, h = emb.a.astype(dtype), emb.h.astype(dtype)
        return (a[:, :, None] * h[:, None, :]).reshape(a.shape[0], 1, -1)
    if isinstance(emb, FisherFactors):
        s_rows, h = _fisher_s_rows(emb.probs.astype(dtype), rank), emb.h.astype(dtype)
        return (s_rows[:, :, :, None] * h[:, None, None, :]).reshape(h.shape[0], rank, -1)
    x = emb.astype(dtype)
    return x[:, None, :] if x.ndim == 2 else x


def _fisher_s_rows(probs, rank: int) -> jax.Array:
    """``√p_c (e_c − p)`` for the ``rank`` most probable classes ``c`` of each point (ties to the
    lower class index): the class factors of the Fisher rows, ``(n, r, C)``."""
    _, top = jax.lax.top_k(probs, rank)  # (n, r)
    p_top = jnp.take_along_axis(probs, top, axis=1)  # (n, r)
    onehot = jax.nn.one_hot(top, probs.shape[1], dtype=probs.dtype)  # (n, r, C)
    return jnp.sqrt(p_top)[:, :, None] * (onehot - probs[:, None, :])


def _factor_rows(emb, rank: int, dtype) -> tuple[jax.Array, jax.Array]:
    """The stream rows of :func:`_dense_rows` as factors ``(a, h)``, ``(n·r, C')`` and
    ``(n·r, D')``: row ``t`` of point ``i`` is ``a[i·r + t] ⊗ h[i·r + t]`` (class-major, so
    ``C'·D' = d``). Fisher rows are ``(√p_c (e_c − p)) ⊗ h`` (``h`` repeated for the ``r``
    rows), a :class:`Factored` row is ``a ⊗ h``, and a dense row ``x`` is ``1 ⊗ x`` (``C' = 1``)."""
    if isinstance(emb, Factored):
        return emb.a.astype(dtype), emb.h.astype(dtype)
    if isinstance(emb, FisherFactors):
        s_rows, h = _fisher_s_rows(emb.probs.astype(dtype), rank), emb.h.astype(dtype)
        return s_rows.reshape(-1, s_rows.shape[-1]), jnp.repeat(h, rank, axis=0)
    x = emb.astype(dtype)
    x = x.reshape(-1, x.shape[-1])
    return jnp.ones((x.shape[0], 1), dtype), x


# ---------------------------------------------------------------------------------------------
# Kernels.


@functools.partial(jax.jit, static_argnames=("rank",))
def _gram_chunk(acc, chunk, n_valid, *, rank: int):
    """``acc + Σ_i U_iᵀU_i`` over the first ``n_valid`` rows of ``chunk``."""
    x = _dense_rows(chunk, rank, acc.dtype)
    x = jnp.where((jnp.arange(x.shape[0]) < n_valid)[:, None, None], x, 0)
    xf = x.reshape(-1, x.shape[-1])
    return acc + _mm(xf.T, xf)


@functools.partial(jax.jit, static_argnames=("size",))
def _draws(key, start, *, size: int):
    """Uniform draws for the chunk of stream positions ``start … start + size − 1``: chunks start
    at multiples of ``_CHUNK``, so each draw is a function of the global position alone."""
    return jax.random.uniform(jax.random.fold_in(key, start), (size,))


@functools.partial(jax.jit, static_argnames=("rank", "running", "budget"), donate_argnums=(0,))
def _stream_chunk(state, chunk, uniforms, n_valid, target, start, *, rank: int, running: bool,
                  budget: int | None):
    """Run the procedure over the points ``start … n_valid − 1`` of one chunk (``start > 0`` only
    with a fixed covariance: the span path hands over to this kernel mid-chunk).

    ``state``: ``ainv`` (d, d), ``cov`` (d, d) — the covariance sum ``S`` (running) or ``Σ̂``
    (fixed) —, ``count`` (points in ``S``), ``pos`` (global position of the chunk's first point),
    ``kept`` and, in the budget form, ``picks`` ``(budget,)``. ``target`` is the stream length
    ``N`` (budget form) or the rate. Returns the new state and the chunk's keep mask. ``state``
    is donated, so ``A⁻¹`` and ``S`` are updated in place, never copied.

    Blocked: ``G = X A_f⁻¹`` for the whole chunk is one matrix product (``A_f`` the ``A`` at the
    last fold, the chunk start at first). The points kept since then, ``V`` (``m·r`` rows, at
    most ``_BUFFER`` points), enter through Woodbury: ``A⁻¹ = A_f⁻¹ − A_f⁻¹Vᵀ L V A_f⁻¹`` with
    ``L = (I + V A_f⁻¹ Vᵀ)⁻¹``, so ``M_j = U_j A_f⁻¹ U_jᵀ − P_jᵀ L P_j`` with
    ``P_j = V A_f⁻¹ U_jᵀ``: ``O(m²r²)`` per point. ``L`` grows by a Schur step on each keep (its
    Schur complement is ``I + M_j``); a full buffer is folded into ``G`` only (``A_f ← A``).

    ``A⁻¹`` itself is touched once per chunk: each keep stores ``W_j = (A⁻¹U_jᵀ)ᵀ`` (under the
    ``A`` of its time) and ``K_j = (I + M_j)⁻¹``, and at the end of the chunk the sequential
    Woodbury steps are applied together, ``A⁻¹ ← A⁻¹ − Σ_j W_jᵀ K_j W_j``, a few rank-``64·r``
    matrix products. Per keep the only ``O(d²)`` work is ``S W_jᵀ`` for the trace.
    """
    ainv, cov = state["ainv"], state["cov"]
    dtype = ainv.dtype
    x = _dense_rows(chunk, rank, dtype)
    size, _, d = x.shape
    x = jnp.where((jnp.arange(size) < n_valid)[:, None, None], x, 0)
    xf = x.reshape(size * rank, d)
    point_of_row = jnp.arange(size * rank) // rank
    width = _BUFFER * rank
    merge = min(_MERGE, size)  # points per block of the end-of-chunk A⁻¹ update
    stored = -(-size // merge) * merge  # room for every point of the chunk, a whole number of blocks
    eye_r = jnp.eye(rank, dtype=dtype)
    uniforms = uniforms.astype(dtype)

    def diag_blocks(g):  # U_j A_f⁻¹ U_jᵀ for every j, (size, r, r)
        return jnp.einsum("jad,jbd->jab", g.reshape(size, rank, d), x, precision=_HIGHEST)

    def kept_rows(base, c):  # A_f⁻¹Vᵀ as rows, (width, d); unused slots hold row 0 (L is 0 there)
        rows = (c["slots"][:, None] * rank + jnp.arange(rank)[None, :]).reshape(-1)
        return base["g"][rows]

    def fold(base, c):  # G = X A⁻¹ = G − Pᵀ L Gᵥ; then A_f ← A and the buffer is empty
        g = base["g"] - _mm(c["P"].T, _mm(c["L"], kept_rows(base, c)))
        base = {"g": g, "m0": diag_blocks(g)}
        c = dict(c, L=jnp.zeros((width, width), dtype), P=jnp.zeros((width, size * rank), dtype),
                 slots=jnp.zeros(_BUFFER, jnp.int32), m=jnp.int32(0))
        return base, c

    def point(base, j, c):
        """``(A_f⁻¹U_jᵀ)ᵀ``, ``L P_j`` and ``M_j`` of point j under the current A."""
        g_j = jax.lax.dynamic_slice_in_dim(base["g"], j * rank, rank)  # (r, d)
        p_j = jax.lax.dynamic_slice_in_dim(c["P"], j * rank, rank, axis=1)  # (width, r)
        l_p = _mm(c["L"], p_j)
        m = base["m0"][j] - _mm(p_j.T, l_p)
        return g_j, l_p, (m + m.T) / 2

    def keep_point(base, c):
        """Keep point ``c["j"]``: trace, Schur step on ``L``, ``P``, the stored ``W_j``/``K_j``."""
        j = c["j"]
        g_j, l_p, m = point(base, j, c)
        w = g_j - _mm(l_p.T, kept_rows(base, c))  # (r, d) = (A⁻¹U_jᵀ)ᵀ
        inner = jnp.linalg.inv(eye_r + m)  # K = (I + M_j)⁻¹
        inner = (inner + inner.T) / 2
        s_w = _mm(w, cov)  # (S₀ W)ᵀ
        if running:  # S also holds this chunk's points up to j
            proj = jnp.where((point_of_row <= j)[:, None], _mm(xf, w.T), 0)
            s_w = s_w + _mm(proj.T, xf)
        trace = c["trace"] - jnp.trace(_mm(inner, _mm(s_w, w.T)))  # tr(S A'⁻¹) = tr(S A⁻¹) − tr(K WᵀSW)
        # Schur step: L' = L + z K zᵀ with z = [−L P_j; I] (new slot m).
        z = jax.lax.dynamic_update_slice_in_dim(-l_p, eye_r, c["m"] * rank, 0)
        big_l = c["L"] + _mm(z, _mm(inner, z.T))
        p = jax.lax.dynamic_update_slice_in_dim(c["P"], _mm(xf, g_j.T).T, c["m"] * rank, 0)
        n = c["kept"] - state["kept"]  # keeps so far in this chunk
        c = dict(c, trace=trace, L=(big_l + big_l.T) / 2, P=p, slots=c["slots"].at[c["m"]].set(j),
                 m=c["m"] + 1, kept=c["kept"] + 1, mask=c["mask"].at[j].set(True), j=j + 1,
                 w=jax.lax.dynamic_update_index_in_dim(c["w"], w, n, 0),
                 k=jax.lax.dynamic_update_index_in_dim(c["k"], inner, n, 0))
        if budget is not None:
            c["picks"] = c["picks"].at[c["kept"] - 1].set(state["pos"] + j)
        return c

    def find_next_keep(base, c):
        """All points from c["j"] on, under the current A at once (A changes only on keeps):
        scores, the running trace (a cumulative sum), keep probabilities; the first keep becomes
        c["j"] (``n_valid`` and ``found = False`` when there is none)."""
        positions = jnp.arange(size)
        p_all = c["P"].reshape(width, size, rank)
        l_p = jnp.einsum("ab,bjr->ajr", c["L"], p_all, precision=_HIGHEST)
        m_all = base["m0"] - jnp.einsum("ajr,ajs->jrs", p_all, l_p, precision=_HIGHEST)
        m_all = (m_all + jnp.swapaxes(m_all, 1, 2)) / 2
        scores = jnp.abs(m_all[:, 0, 0]) if rank == 1 else jnp.abs(jnp.linalg.det(m_all))
        active = (positions >= c["j"]) & (positions < n_valid)
        if running:
            trace = c["trace"] + jnp.cumsum(jnp.where(active, jnp.trace(m_all, axis1=1, axis2=2), 0))
            count = (state["count"] + positions + 1).astype(dtype)
        else:
            trace = jnp.broadcast_to(c["trace"], (size,))
            count = jnp.ones((size,), dtype)
        if budget is not None:
            rate = (budget - c["kept"]).astype(dtype) / (target - state["pos"] - positions).astype(dtype)
        else:
            rate = jnp.asarray(target, dtype)
        normaliser = trace / count  # tr(Σ̂ A⁻¹)
        ok = (scores > 0) & (normaliser > 0)
        prob = jnp.where(ok, jnp.minimum(1.0, rate * scores / jnp.where(ok, normaliser, 1)), 0.0)
        keeps = active & (uniforms < prob)
        found = jnp.any(keeps)
        j = jnp.where(found, jnp.argmax(keeps), n_valid).astype(jnp.int32)
        return dict(c, j=j, found=found, trace=trace[jnp.where(found, j, size - 1)])

    def fill_buffer(base, c):
        """Keep until the buffer is full or no keep is left; no branches, and A⁻¹, S and G are
        only read here (only small arrays and the stored ``W`` rows change in the loop)."""
        return jax.lax.while_loop(lambda c: c["found"] & (c["m"] < _BUFFER),
                                  lambda c: find_next_keep(base, keep_point(base, c)), c)

    def fold_and_fill(carry):
        base, c = fold(*carry)
        return base, fill_buffer(base, c)

    g = _mm(xf, ainv)
    base = {"g": g, "m0": diag_blocks(g)}
    carry = {"trace": jnp.sum(cov * ainv), "kept": state["kept"], "mask": jnp.zeros(size, bool),
             "j": jnp.asarray(start, jnp.int32), "L": jnp.zeros((width, width), dtype),
             "P": jnp.zeros((width, size * rank), dtype), "slots": jnp.zeros(_BUFFER, jnp.int32),
             "m": jnp.int32(0), "w": jnp.zeros((stored, rank, d), dtype),
             "k": jnp.zeros((stored, rank, rank), dtype)}
    if budget is not None:
        carry["picks"] = state["picks"]
    # While a keep is pending: fold the buffer into G (nothing to fold the first time: G is
    # unchanged) and keep until the buffer is full again or no keep is left.
    carry = find_next_keep(base, carry)
    _, carry = jax.lax.while_loop(lambda bc: bc[1]["found"], fold_and_fill, (base, carry))

    def apply_keeps(b, ainv):  # A⁻¹ − Σ_j W_jᵀ K_j W_j over the block of stored keeps b
        w_b = jax.lax.dynamic_slice_in_dim(carry["w"], b * merge, merge)  # (merge, r, d)
        k_b = jax.lax.dynamic_slice_in_dim(carry["k"], b * merge, merge)
        kw_b = jnp.einsum("prs,psd->prd", k_b, w_b, precision=_HIGHEST)
        return ainv - _mm(w_b.reshape(-1, d).T, kw_b.reshape(-1, d))

    n_kept = carry["kept"] - state["kept"]
    ainv = jax.lax.fori_loop(0, (n_kept + merge - 1) // merge, apply_keeps, ainv)
    new = dict(state, ainv=ainv, kept=carry["kept"], pos=state["pos"] + n_valid)
    if running:
        # xf made to depend on the loops' result: S is then read by the loops before it is updated,
        # and XLA updates it in place instead of copying it first.
        late = xf + jnp.minimum(carry["j"], 0).astype(dtype)  # + 0 (j ≥ 0), opaque to XLA
        new["cov"] = cov + _mm(late.T, late)
        new["count"] = state["count"] + n_valid
    if budget is not None:
        new["picks"] = carry["picks"]
    return new, carry["mask"]


# ---------------------------------------------------------------------------------------------
# The span-of-kept-points kernel (fixed covariance, large d).


def _small_inverse_cholesky(s) -> jax.Array:
    """``G = L⁻¹`` for the lower Cholesky factor ``L`` of a small symmetric positive-definite
    ``r × r`` matrix (so ``GᵀG = s⁻¹``), by ``2r`` unrolled vector steps: no LAPACK call (inside
    a loop, a LAPACK call can cost milliseconds on a busy CPU while its thread pool wakes up)."""
    r = s.shape[0]
    chol = jnp.zeros_like(s)
    for k in range(r):  # column k: s[:, k] − L L[k]ᵀ (L[k, k:] is still 0)
        col = s[:, k] - _mm(chol, chol[k])
        chol = chol.at[:, k].set(jnp.where(jnp.arange(r) >= k, col / jnp.sqrt(col[k]), 0))
    inv = jnp.zeros_like(s)
    eye = jnp.eye(r, dtype=s.dtype)
    for i in range(r):  # row i of L G = I (G[i:] is still 0)
        inv = inv.at[i].set((eye[i] - _mm(chol[i], inv)) / chol[i, i])
    return inv


def _small_abs_det(m) -> jax.Array:
    """``|det m_i|`` for a batch of small ``(r, r)`` matrices ``m`` ``(n, r, r)``, by Gaussian
    elimination without pivoting (they are symmetric positive semi-definite) in ``r`` unrolled
    vector steps; a zero pivot gives 0."""
    r = m.shape[-1]
    det = jnp.ones(m.shape[:-2], m.dtype)
    rows = jnp.arange(r)
    for k in range(r):
        pivot = m[:, k, k]
        det = det * pivot
        factor = jnp.where(rows[None, :] > k, m[:, :, k] / jnp.where(pivot == 0, 1, pivot)[:, None], 0)
        m = m - factor[:, :, None] * m[:, k, None, :]
    return jnp.abs(det)


def _span_dense_rows(a, h) -> jax.Array:
    """``(n, C'·D')`` rows ``a ⊗ h`` of factor rows (class-major)."""
    return (a[:, :, None] * h[:, None, :]).reshape(a.shape[0], -1)


def _span_cross(ua, uh, xa, xh) -> jax.Array:
    """``U Xᵀ`` for factored rows: ``(a_s ⊗ h_s)·(a_t ⊗ h_t) = (a_s·a_t)(h_s·h_t)``, i.e.
    ``(Uₐ Xₐᵀ) ∘ (U_h X_hᵀ)``: ``O(C' + D')`` per pair instead of ``O(C'·D')``."""
    return _mm(ua, xa.T) * _mm(uh, xh.T)


@functools.partial(jax.jit, static_argnames=("rank", "budget"), donate_argnums=(0,))
def _span_chunk(state, chunk, uniforms, n_valid, target, start, cov, cov_trace, lamb, *, rank: int,
                budget: int | None):
    """The procedure over the points ``start … n_valid − 1`` of one chunk, with a fixed ``Σ̂``, in
    the span of the kept rows.

    ``state``: the kept rows ``U`` (``m`` of them, ``m`` in ``state["m"]``) as factors ``ua``
    ``(cap, C')`` and ``uh`` ``(cap, D')`` (zero beyond ``m``), ``linv`` ``L⁻¹`` ``(cap, cap)``
    for a square root ``L`` of ``K = λI + UUᵀ`` (``LLᵀ = K``, block lower triangular), ``white``
    ``R = L⁻¹ (U Σ̂ Uᵀ) L⁻ᵀ`` ``(cap, cap)``, plus ``pos``, ``kept`` and, in the budget form,
    ``picks``. Rows beyond ``m`` are zero, so ``K`` is ``λI`` there, ``L⁻¹`` is ``λ^{-1/2} I`` and
    ``R`` is 0: the padding is exact and nothing is masked. With ``A = λI + UᵀU``,
    ``A⁻¹ = λ⁻¹(I − Uᵀ K⁻¹ U)``, so for a point's rows ``X_i`` (``r × d``) and
    ``Z_i = L⁻¹ U X_iᵀ``:

    * ``M_i = X_i A⁻¹ X_iᵀ = λ⁻¹ (X_i X_iᵀ − Z_iᵀ Z_i)``, ``U X_iᵀ`` from the factors in
      ``O(m (C' + D'))`` per row and ``Z_i`` in ``O(m²)`` (one matrix product per chunk);
    * ``tr(Σ̂ A⁻¹) = λ⁻¹ (tr Σ̂ − tr(K⁻¹ U Σ̂ Uᵀ)) = λ⁻¹ (tr Σ̂ − tr R)``.

    A keep of point ``j`` appends its ``r`` rows to ``U`` and borders ``L``: its new rows are
    ``[Z_jᵀ, S]`` with ``SSᵀ = λ(I + M_j)`` (the Schur complement ``λI + X_j X_jᵀ − Z_jᵀ Z_j``),
    so ``L⁻¹`` gains the rows ``[−G Z_jᵀ L⁻¹, G]``, ``G = S⁻¹`` (``O(m² r)``). Every point of the
    chunk gains ``r`` rows of ``Z``, ``G (X_j Xᵀ − Z_jᵀ Z)``, and its ``M_i`` loses their outer
    product: ``O(m r²)`` per point and keep. ``R`` is bordered likewise with
    ``V = L⁻¹ U Σ̂ X_jᵀ``: ``R₁₂ = (V − R Z_j) Gᵀ`` and
    ``R₂₂ = G (X_j Σ̂ X_jᵀ − Z_jᵀV − VᵀZ_j + Z_jᵀ R Z_j) Gᵀ``; the one ``O(d²)`` product per keep
    is ``Σ̂ X_jᵀ``. No LAPACK call runs inside the loop (see :func:`_small_inverse_cholesky`).

    Stops at the first keep that would not fit in ``cap`` rows: returns ``(state, mask, stop)``
    with ``stop`` the chunk position to resume from (``n_valid`` when the chunk is done; ``pos``
    advances only then).
    """
    ua, uh, linv, white = state["ua"], state["uh"], state["linv"], state["white"]
    dtype = linv.dtype
    cap = linv.shape[0]
    xa, xh = _factor_rows(chunk, rank, dtype)
    size = xa.shape[0] // rank
    positions = jnp.arange(size)
    xa = jnp.where((jnp.arange(size * rank) // rank < n_valid)[:, None], xa, 0)
    lamb = jnp.asarray(lamb, dtype)
    cov = cov.astype(dtype)
    uniforms = uniforms.astype(dtype)
    eye_r = jnp.eye(rank, dtype=dtype)

    xa3, xh3 = xa.reshape(size, rank, -1), xh.reshape(size, rank, -1)
    gram = (jnp.einsum("isc,itc->ist", xa3, xa3, precision=_HIGHEST)
            * jnp.einsum("isd,itd->ist", xh3, xh3, precision=_HIGHEST))  # X_i X_iᵀ, (size, r, r)
    z = _mm(linv, _span_cross(ua, uh, xa, xh))  # (cap, size·r)
    z3 = z.reshape(cap, size, rank)
    m_all = (gram - jnp.einsum("kis,kit->ist", z3, z3, precision=_HIGHEST)) / lamb

    def find_next_keep(c):
        m = (c["M"] + jnp.swapaxes(c["M"], 1, 2)) / 2
        scores = _small_abs_det(m)
        active = (positions >= c["j"]) & (positions < n_valid)
        normaliser = (cov_trace - jnp.trace(c["white"])) / lamb  # tr(Σ̂ A⁻¹)
        if budget is not None:
            rate = (budget - c["kept"]).astype(dtype) / (target - state["pos"] - positions).astype(dtype)
        else:
            rate = jnp.asarray(target, dtype)
        ok = (scores > 0) & (normaliser > 0)
        prob = jnp.where(ok, jnp.minimum(1.0, rate * scores / jnp.where(ok, normaliser, 1)), 0.0)
        keeps = active & (uniforms < prob)
        found = jnp.any(keeps)
        j = jnp.where(found, jnp.argmax(keeps), n_valid).astype(jnp.int32)
        return dict(c, j=j, found=found)

    def keep_point(c):
        j, m = c["j"], c["m"]
        m_j = (c["M"][j] + c["M"][j].T) / 2
        a_j = jax.lax.dynamic_slice_in_dim(xa, j * rank, rank)  # (r, C')
        h_j = jax.lax.dynamic_slice_in_dim(xh, j * rank, rank)  # (r, D')
        z_j = jax.lax.dynamic_slice_in_dim(c["Z"], j * rank, rank, axis=1)  # (cap, r), zero from row m on
        g = _small_inverse_cholesky(lamb * (eye_r + m_j))  # G = S⁻¹
        # New rows of Z for every point: G (X_j Xᵀ − Z_jᵀ Z); each M_i loses their outer product.
        cross = (_mm(xa, a_j.T) * _mm(xh, h_j.T)).T  # X_j Xᵀ, from the untransposed rows
        z_new = _mm(g, cross - _mm(z_j.T, c["Z"]))  # (r, size·r)
        z_new3 = z_new.reshape(rank, size, rank)
        m_all = c["M"] - jnp.einsum("kis,kit->ist", z_new3, z_new3, precision=_HIGHEST) / lamb
        # Border R with the old L⁻¹: V = L⁻¹ U Σ̂ X_jᵀ, then R₁₂ and R₂₂.
        ua = jax.lax.dynamic_update_slice_in_dim(c["ua"], a_j, m, 0)
        uh = jax.lax.dynamic_update_slice_in_dim(c["uh"], h_j, m, 0)
        y = _mm(cov, _span_dense_rows(a_j, h_j).T).T.reshape(rank, ua.shape[1], uh.shape[1])  # (Σ̂ X_jᵀ)ᵀ
        p_all = jnp.einsum("std,td->ts", jnp.einsum("tc,scd->std", ua, y, precision=_HIGHEST), uh,
                           precision=_HIGHEST)  # U' Σ̂ X_jᵀ, (cap, r)
        p12 = jnp.where((jnp.arange(cap) < m)[:, None], p_all, 0)
        p22 = jax.lax.dynamic_slice_in_dim(p_all, m, rank)
        v = _mm(c["linv"], p12)
        r_z = _mm(c["white"], z_j)
        s22 = p22 - _mm(z_j.T, v) - _mm(v.T, z_j) + _mm(z_j.T, r_z)
        r12 = _mm(v - r_z, g.T)  # (cap, r), zero from row m on
        r22 = _mm(g, _mm(s22, g.T))
        zero = jnp.int32(0)
        white = jax.lax.dynamic_update_slice(c["white"], r12, (zero, m))
        white = jax.lax.dynamic_update_slice(white, r12.T, (m, zero))
        white = jax.lax.dynamic_update_slice(white, (r22 + r22.T) / 2, (m, m))
        # Border L⁻¹: row block m is [−G Z_jᵀ L⁻¹, G] (Z_jᵀ L⁻¹ is zero from column m on).
        linv = jax.lax.dynamic_update_slice(c["linv"], -_mm(g, _mm(z_j.T, c["linv"])), (m, zero))
        linv = jax.lax.dynamic_update_slice(linv, g, (m, m))
        c = dict(c, ua=ua, uh=uh, linv=linv, white=white, m=m + rank, M=m_all,
                 Z=jax.lax.dynamic_update_slice_in_dim(c["Z"], z_new, m, 0),
                 kept=c["kept"] + 1, mask=c["mask"].at[j].set(True), j=j + 1)
        if budget is not None:
            c["picks"] = c["picks"].at[c["kept"] - 1].set(state["pos"] + j)
        return c

    carry = {"ua": ua, "uh": uh, "linv": linv, "white": white, "m": state["m"], "Z": z, "M": m_all,
             "kept": state["kept"], "mask": jnp.zeros(size, bool), "j": jnp.asarray(start, jnp.int32)}
    if budget is not None:
        carry["picks"] = state["picks"]
    carry = find_next_keep(carry)
    carry = jax.lax.while_loop(lambda c: c["found"] & (c["m"] + rank <= cap),
                               lambda c: find_next_keep(keep_point(c)), carry)
    stop = jnp.where(carry["found"], carry["j"], n_valid).astype(jnp.int32)
    new = {name: carry[name] for name in ("ua", "uh", "linv", "white", "m", "kept")}
    new["pos"] = state["pos"] + jnp.where(stop == n_valid, n_valid, 0)
    if budget is not None:
        new["picks"] = carry["picks"]
    return new, carry["mask"], stop


@functools.partial(jax.jit, static_argnames=("cap", "budget"))
def _span_initial(la, lh, cov, lamb, *, cap: int, budget: int | None):
    """The span kernel's state before the stream, the labeled rows ``(la, lh)`` (possibly none)
    already in ``U``: ``L = chol(λI + U_L U_Lᵀ)``, kept as ``L⁻¹``, and
    ``R = L⁻¹ U_L Σ̂ U_Lᵀ L⁻ᵀ``, padded to ``cap`` rows (``λ^{-1/2} I`` and 0)."""
    dtype = cov.dtype
    m_l = la.shape[0]
    linv = jnp.eye(cap, dtype=dtype) / jnp.sqrt(jnp.asarray(lamb, dtype))
    white = jnp.zeros((cap, cap), dtype)
    if m_l:
        gram = _span_cross(la, lh, la, lh)
        chol = jnp.linalg.cholesky(lamb * jnp.eye(m_l, dtype=dtype) + (gram + gram.T) / 2)
        linv_l = jax.scipy.linalg.solve_triangular(chol, jnp.eye(m_l, dtype=dtype), lower=True)
        u = _span_dense_rows(la, lh)
        white_l = _mm(linv_l, _mm(_mm(_mm(u, cov), u.T), linv_l.T))
        linv = linv.at[:m_l, :m_l].set(linv_l)
        white = white.at[:m_l, :m_l].set((white_l + white_l.T) / 2)
    state = {"ua": jnp.zeros((cap, la.shape[1]), dtype).at[:m_l].set(la),
             "uh": jnp.zeros((cap, lh.shape[1]), dtype).at[:m_l].set(lh),
             "linv": linv, "white": white, "m": jnp.int32(m_l), "pos": jnp.int32(0), "kept": jnp.int32(0)}
    if budget is not None:
        state["picks"] = jnp.zeros((budget,), jnp.int32)
    return state


@functools.partial(jax.jit, static_argnames=("cap",))
def _span_grow(state, lamb, *, cap: int):
    """The same state with room for ``cap`` rows (zero rows: ``λ^{-1/2} I`` in ``L⁻¹``, 0 in ``R``)."""
    old = state["linv"].shape[0]
    dtype = state["linv"].dtype
    linv = jnp.eye(cap, dtype=dtype) / jnp.sqrt(jnp.asarray(lamb, dtype))
    return dict(state, ua=jnp.zeros((cap, state["ua"].shape[1]), dtype).at[:old].set(state["ua"]),
                uh=jnp.zeros((cap, state["uh"].shape[1]), dtype).at[:old].set(state["uh"]),
                linv=linv.at[:old, :old].set(state["linv"]),
                white=jnp.zeros((cap, cap), dtype).at[:old, :old].set(state["white"]))


@jax.jit
def _span_to_dense(state, cov, lamb):
    """The dense kernel's state (fixed covariance) for the same ``A``:
    ``A⁻¹ = λ⁻¹(I − Uᵀ K⁻¹ U) = λ⁻¹(I − QᵀQ)`` with ``Q = L⁻¹U``."""
    q = _mm(state["linv"], _span_dense_rows(state["ua"], state["uh"]))
    dtype = q.dtype
    ainv = (jnp.eye(q.shape[1], dtype=dtype) - _mm(q.T, q)) / jnp.asarray(lamb, dtype)
    dense = {"ainv": (ainv + ainv.T) / 2, "cov": jnp.copy(cov.astype(dtype)), "count": jnp.int32(0),
             "pos": state["pos"], "kept": state["kept"]}
    if "picks" in state:
        dense["picks"] = state["picks"]
    return dense


@functools.partial(jax.jit, static_argnames=("size", "budget"))
def _fill_chunk(best_scores, best_index, key, picks, kept, start, total, *, size: int, budget: int):
    """Running top-``budget`` of uniform scores over the positions not kept (a uniformly random
    subset in random order), for one chunk of positions ``start … start + size − 1``."""
    positions = start + jnp.arange(size, dtype=jnp.int32)
    scores = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(positions)
    kept_sorted = jnp.sort(jnp.where(jnp.arange(budget) < kept, picks, jnp.iinfo(jnp.int32).max))
    where = jnp.clip(jnp.searchsorted(kept_sorted, positions), 0, budget - 1)
    taken = (kept_sorted[where] == positions) | (positions >= total)
    scores = jnp.where(taken, -1.0, scores)
    all_scores = jnp.concatenate([best_scores, scores])
    all_index = jnp.concatenate([best_index, positions])
    top_scores, top = jax.lax.top_k(all_scores, budget)
    return top_scores, all_index[top]


def _fill(key, picks, kept, total: int, budget: int) -> jax.Array:
    """Complete ``picks[:kept]`` to ``budget`` unique indices, drawn uniformly from the rest."""
    best_scores = jnp.full((budget,), -2.0, jnp.float32)
    best_index = jnp.zeros((budget,), jnp.int32)
    for start in range(0, total, _CHUNK):
        best_scores, best_index = _fill_chunk(best_scores, best_index, key, picks, kept, jnp.int32(start),
                                              jnp.int32(total), size=_CHUNK, budget=budget)
    slot = jnp.arange(budget)
    filler = best_index[jnp.clip(slot - kept, 0, budget - 1)]
    return jnp.where(slot < kept, picks, filler).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# Host driver: fixed-size chunks from any sequence of embedding blocks.


def _rechunk(blocks: Iterable, size: int):
    """``(chunk, n_valid)`` with exactly ``size`` rows per chunk (the last zero-padded) from an
    iterable of embedding blocks (arrays, ``Factored`` or ``FisherFactors``) of any sizes."""
    if isinstance(blocks, _PaddedChunks) and blocks.size == size:
        return iter(blocks)
    return _stream_chunks(blocks, size, pad="zeros")


class _PaddedChunks:
    """An embedding's rows as the ``(chunk, n_valid)`` pairs of :func:`_rechunk`, made by one
    jitted zero-padding of the whole embedding to a multiple of ``_CHUNK`` rows and slices of
    that at fixed offsets: one compilation per pool size (cutting the last block and padding
    it eagerly took eight). Iterable more than once."""

    def __init__(self, emb, n: int):
        self.emb, self.n, self.size = emb, n, _CHUNK

    def __iter__(self):
        padded = _pad_tree(self.emb, size=-(-self.n // _CHUNK) * _CHUNK)
        for start in range(0, self.n, _CHUNK):
            yield _take(padded, start, start + _CHUNK), min(_CHUNK, self.n - start)


def _n_rows(block) -> int:
    return jax.tree_util.tree_leaves(block)[0].shape[0]


def _take(block, start, stop):
    return jax.tree_util.tree_map(lambda leaf: leaf[start:stop], block)


def _array_blocks(emb, n: int):
    for start in range(0, n, _CHUNK):
        yield _take(emb, start, min(start + _CHUNK, n))


def _gram(blocks, d: int, rank: int, dtype):
    """``(Σ U_iᵀU_i, count)`` over a stream of embedding blocks, in chunks."""
    acc, count = jnp.zeros((d, d), dtype), 0
    for chunk, n_valid in _rechunk(blocks, _CHUNK):
        acc = _gram_chunk(acc, chunk, jnp.int32(n_valid), rank=rank)
        count += n_valid
    return acc, count


@functools.partial(jax.jit, static_argnames=("d", "dtype", "budget"))
def _initial_state(seed, covariance, lamb, n_labeled, *, d: int, dtype, budget: int | None):
    """The chunk kernel's state before the stream: ``A₀⁻¹ = (λI + S_L)⁻¹`` (Cholesky), the
    covariance sum ``S_L`` (or a copy of the fixed ``Σ̂``: the state is donated to the kernel)."""
    eye = jnp.eye(d, dtype=dtype)
    seed = jnp.zeros((d, d), dtype) if seed is None else seed
    ainv = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(lamb * eye + seed), eye)
    state = {"ainv": (ainv + ainv.T) / 2, "cov": seed if covariance is None else jnp.copy(covariance.astype(dtype)),
             "count": jnp.asarray(n_labeled, jnp.int32), "pos": jnp.int32(0), "kept": jnp.int32(0)}
    if budget is not None:
        state["picks"] = jnp.zeros((budget,), jnp.int32)
    return state


def _span_plan(d: int, rank: int, budget: int | None, n_labeled: int, span: bool | None) -> int | None:
    """Rows to allocate for the span path at the start, or ``None`` for the dense path.

    Auto (``span=None``): the span path when ``d ≥ _SPAN_MIN_D`` and the rows it must hold
    (labeled and kept, ``r`` per point: ``(n_L + k)·r`` with a budget, ``n_L·r + _SPAN_START``
    to start with a rate) are at most ``_SPAN_MAX_ROWS · d``."""
    rows = n_labeled * rank + (budget * rank if budget is not None else _SPAN_START)
    if span is None:
        span = d >= _SPAN_MIN_D and rows <= _SPAN_MAX_ROWS * d
    return rows if span else None


def _chunks(blocks, stream_key, uniforms, dtype, total: int | None, fn: str):
    """``(chunk, n_valid, seen, draws)`` for each internal chunk, ``seen`` the position of its first
    point; checks the declared stream length."""
    seen = 0
    for chunk, n_valid in _rechunk(blocks, _CHUNK):
        if total is not None and seen + n_valid > total:
            raise ValueError(f"aljax.{fn}: the stream yielded more than its declared length {total}.")
        if uniforms is None:
            draws = _draws(stream_key, jnp.int32(seen), size=_CHUNK)
        else:
            draws = jnp.zeros(_CHUNK, dtype).at[:n_valid].set(jnp.asarray(uniforms[seen:seen + n_valid], dtype))
        yield chunk, n_valid, seen, draws
        seen += n_valid
    if total is not None and seen != total:
        raise ValueError(f"aljax.{fn}: the stream yielded {seen} points but its declared length is {total}.")


def _run(key, blocks, *, d: int, rank: int, dtype, budget: int | None, rate: float | None, total: int | None,
         lamb: float, labeled_blocks=None, covariance=None, uniforms=None, fn: str = "volume_stream",
         span: bool | None = None):
    """The whole procedure over a stream of embedding blocks. Returns int32 indices.

    ``span``: ``None`` picks the kernel (:func:`_span_plan`), ``True``/``False`` force the span /
    dense kernel (the span kernel needs a fixed ``covariance``)."""
    stream_key, fill_key = jax.random.split(key)
    labeled_blocks = None if labeled_blocks is None else list(labeled_blocks)
    n_labeled = sum(_n_rows(block) for block in labeled_blocks) if labeled_blocks else 0
    running = covariance is None
    if running and span:
        raise ValueError(f"aljax.{fn}: the span-of-kept-points kernel needs a fixed covariance.")
    cap = None if running else _span_plan(d, rank, budget, n_labeled, span)
    target = jnp.int32(total) if budget is not None else jnp.asarray(rate, dtype)
    masks, seen, state, dense = [], 0, None, cap is None
    if dense:
        seed, n_labeled = (None, 0) if labeled_blocks is None else _gram(iter(labeled_blocks), d, rank, dtype)
        state = _initial_state(seed, None if covariance is None else jnp.asarray(covariance), lamb, n_labeled,
                               d=d, dtype=jnp.dtype(dtype), budget=budget)
    else:
        cov = jnp.asarray(covariance, dtype)
        cov_trace = jnp.trace(cov)
        limit = int(_SPAN_MAX_ROWS * d)
    for chunk, n_valid, seen, draws in _chunks(blocks, stream_key, uniforms, dtype, total, fn):
        if state is None:  # the span state, its factor widths C', D' taken from the first chunk
            factors = [_factor_rows(block, rank, dtype) for block in labeled_blocks or [_take(chunk, 0, 0)]]
            la, lh = (jnp.concatenate([f[i] for f in factors]) for i in (0, 1))
            state = _span_initial(la, lh, cov, lamb, cap=cap, budget=budget)
        start, n_valid_ = 0, jnp.int32(n_valid)
        while start < n_valid:
            if dense:
                state, mask = _stream_chunk(state, chunk, draws, n_valid_, target, jnp.int32(start), rank=rank,
                                            running=running, budget=budget)
                stop = n_valid
            else:
                state, mask, stop = _span_chunk(state, chunk, draws, n_valid_, target, jnp.int32(start), cov,
                                                cov_trace, lamb, rank=rank, budget=budget)
                # With a budget the rows never run out (k·r are allocated), so there is no host sync.
                stop = n_valid if budget is not None else int(stop)
                if stop < n_valid:  # out of rows: double them, or hand over to the dense kernel
                    if 2 * cap <= limit:
                        cap *= 2
                        state = _span_grow(state, lamb, cap=cap)
                    else:
                        state, dense = _span_to_dense(state, cov, lamb), True
            if budget is None:
                masks.append(np.flatnonzero(np.asarray(mask[start:stop])) + seen + start)
            start = stop
        seen += n_valid
    if budget is None:
        return jnp.asarray(np.concatenate(masks) if masks else np.zeros(0), jnp.int32)
    kept = state["kept"]
    if _validate.is_concrete(kept) and int(kept) == budget:
        return state["picks"]
    return _fill(fill_key, state["picks"], kept, seen, budget)


# ---------------------------------------------------------------------------------------------
# Validation.


def _check_budget_or_rate(fn: str, k, rate, n: int | None):
    if (k is None) == (rate is None):
        raise ValueError(_validate.message(fn, "k", "given exactly when `rate` is not (one of `k` or `rate`)",
                                           f"k={k!r} and rate={rate!r}"))
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(_validate.message(fn, "rate", "a float in (0, 1]", f"{type(rate).__name__} {rate!r}"))
        if not 0 < rate <= 1:
            raise ValueError(_validate.message(fn, "rate", "a float in (0, 1]", rate))
        return None, float(rate)
    if n is None:
        _validate.check_int(fn, "k", k, low=1)
        return int(k), None
    return _validate.check_k(fn, k, n), None


def _check_embedding(fn: str, arg: str, emb, rank):
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


def _compute_dtype(*embs) -> jnp.dtype:
    leaves = [leaf for emb in embs if emb is not None for leaf in jax.tree_util.tree_leaves(emb)]
    return jnp.result_type(jnp.float32, *[leaf.dtype for leaf in leaves])


def volume_stream(key, emb, k: int | None = None, *, rate: float | None = None, labeled_emb=None,
                  lamb: float = 0.01, covariance=None, rank: int | None = None) -> jax.Array:
    """VeSSAL's streaming volume sampling over embeddings given in stream order.

    Saran et al., "Streaming active learning with deep neural networks", ICML 2023. One pass over
    the rows: each point is kept with probability ``min(1, ρ · s / tr(Σ̂ A⁻¹))``, where ``s`` is
    the volume it would add to the kept set (``uᵀA⁻¹u``, or ``|det(U A⁻¹ Uᵀ)|`` at rank ``r``),
    ``A = λI + Σ_kept UᵀU`` (Woodbury-updated on keeps), ``Σ̂`` the running covariance of the
    stream *including the current point* and ``ρ`` the target rate. See the module docstring for
    the exact order of operations. With ``k₁, k₂ = split(key)``, the uniform draws of stream
    positions ``s … s + 1023`` (``s`` a multiple of 1024, the internal chunk) are
    ``uniform(fold_in(k₁, s), (1024,))``: a function of the global position only, so the picks
    do not depend on how the stream is batched.

    Args:
      key: int seed or ``jax.random`` key.
      emb: the stream, in order: a dense ``(N, d)`` array (rank 1), ``(N, r, d)`` (rank ``r``), a
        :class:`~aljax.Factored` (rank 1, row ``a ⊗ h``, class-major ``c·D + j``) or a
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
      rate: a float in ``(0, 1]``, the fraction to keep when no budget is fixed: a variable number
        of indices is returned, about ``rate·N`` (not exactly: the keep probability is clipped at 1
        and shrinks as points are kept). Not usable under an outer ``jax.jit`` (variable size).
      labeled_emb: optional labeled-set embedding of the same kind and width: ``A`` starts at
        ``λI + Σ_L UᵀU`` and the running covariance starts from the labeled sum and count.
      lamb: ``λ > 0``, the damping of ``A₀ = λI`` (0.01: the reference's ``A₀⁻¹ = 100·I``).
      covariance: optional fixed ``(d, d)`` ``Σ̂`` used for every point instead of the running one.
      rank: for a :class:`~aljax.FisherFactors`, the number of Fisher rows per point, in
        ``[1, C]`` (default 1); for other kinds ``None`` or the rank their shape implies.

    Returns:
      int32 indices into the stream: ``(k,)``, the kept ones in stream order then any uniform
      fill; or, with ``rate``, the kept ones in stream order.

    Memory is the ``d × d`` state (two matrices) plus one chunk of ``_CHUNK`` rows; the time per
    point is one ``d × d`` matrix-vector product and its share of one ``XᵀX`` per chunk. With a
    fixed ``covariance`` and at most ``d/2`` labeled and kept rows (``d ≥ 640``), the stream runs
    in the span of the kept rows instead: ``O(m(C + D) + m²)`` per point with ``m`` kept rows,
    one ``Σ̂ u`` product per keep, memory ``O(m(C + D) + m²)`` besides ``Σ̂`` (see the module
    docstring); the picks are the same up to float rounding.

    Example:
      >>> import jax, aljax
      >>> emb = jax.random.normal(jax.random.key(0), (500, 16))
      >>> aljax.volume_stream(0, emb, 20).shape
      (20,)
    """
    fn = "volume_stream"
    key = _validate.as_key(fn, key)
    emb, rank, d, n = _check_embedding(fn, "emb", _sharding.auto_axes(emb), rank)
    budget, rate = _check_budget_or_rate(fn, k, rate, n)
    lamb = _validate.check_positive(fn, "lamb", lamb)
    if labeled_emb is not None:
        labeled_emb = _check_labeled(fn, labeled_emb, emb, rank, d)
    if covariance is not None:
        covariance = _check_covariance(fn, covariance, d)
    leaves = jax.tree_util.tree_leaves((emb, labeled_emb, covariance))
    _validate.check_finite(fn, "the embedding values", *leaves)
    if rate is not None and not _validate.is_concrete(*leaves):
        raise TypeError(f"aljax.{fn}: `rate=` returns a data-dependent number of indices, so it cannot run "
                        "under jax.jit; call it outside jit or pass `k=`.")
    dtype = _compute_dtype(emb, labeled_emb, covariance)
    labeled_blocks = None if labeled_emb is None else _array_blocks(labeled_emb, _n_rows(labeled_emb))
    return _run(key, _PaddedChunks(emb, n), d=d, rank=rank, dtype=dtype, budget=budget, rate=rate,
                total=n if budget is not None else None, lamb=lamb, labeled_blocks=labeled_blocks,
                covariance=covariance, fn=fn)


def _check_labeled(fn, labeled_emb, emb, rank, d):
    if type(labeled_emb) is not type(emb) and not (
            not isinstance(emb, (Factored, FisherFactors)) and hasattr(labeled_emb, "shape")):
        raise TypeError(_validate.message(fn, "labeled_emb", f"the same kind as `emb` ({type(emb).__name__})",
                                          type(labeled_emb).__name__))
    labeled_emb, l_rank, l_d, _ = _check_embedding(fn, "labeled_emb", labeled_emb,
                                                   rank if isinstance(emb, FisherFactors) else None)
    if (l_rank, l_d) != (rank, d):
        raise ValueError(_validate.message(fn, "labeled_emb", f"rows of rank {rank} and width {d} (as `emb`)",
                                           f"rank {l_rank} and width {l_d}"))
    return labeled_emb


def _check_covariance(fn, covariance, d):
    shape, dtype = getattr(covariance, "shape", None), getattr(covariance, "dtype", None)
    if shape is None or tuple(shape) != (d, d):
        raise ValueError(_validate.message(fn, "covariance", f"a ({d}, {d}) array", f"shape {shape}"))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(_validate.message(fn, "covariance", "a floating array", f"dtype {dtype}"))
    return jnp.asarray(covariance)


# ---------------------------------------------------------------------------------------------
# Front door.


def vessal(params, apply_fn: Callable, pool, k: int | None = None, *, rate: float | None = None, key=0,
           rank: int = 1, labeled=None, seed_fisher: bool = False, precompute_covariance: bool = False,
           lamb: float = 0.01, batch_size: int = 1024, features_fn: Callable | None = None,
           length: int | None = None) -> jax.Array:
    """VeSSAL: streaming active learning by volume sampling of Fisher embeddings.

    Saran et al., "Streaming active learning with deep neural networks", ICML 2023. The pool is
    read once, in order, as a stream; each point's last-layer Fisher rows (see
    :func:`~aljax.volume_stream`) are kept with a probability that grows with the volume they add
    to the kept set, tuned so the expected number kept meets the budget ``k`` (or the ``rate``).

    ``rank = r`` uses the Fisher rows of the ``r`` most probable classes, each in its own class
    block (class-aligned across points, unlike the reference code, which orders each point's
    blocks by its own probabilities).

    Args:
      params: model parameters (any pytree).
      apply_fn: ``apply_fn(params, x) -> logits (batch, C)``; its last operation must be a dense
        layer unless ``features_fn`` is given.
      pool: ``(N, ...)`` array or pytree of arrays (lists, tuples and dicts are pytrees; processed
        in chunks of ``batch_size``), or an **iterable of batches** of such arrays (a generator,
        an iterator or any other non-container iterable): true streaming, read once, memory independent of
        the stream length (beyond the kept indices and the ``d × d`` state, ``d = C·D``). Batches
        must keep their trailing shape. Picks do not depend on the batch boundaries.
      k: the budget, a Python int (``≤ N``); with an iterable pool the stream length must be known:
        pass ``length=`` (``len()`` of a loader counts batches, not examples, so it is not used).
        Exactly one of ``k``/``rate``.
      rate: a float in ``(0, 1]``, the fraction to keep when the stream length is unknown; the
        number returned varies (about ``rate·N``).
      key: int seed or ``jax.random`` key.
      rank: Fisher rows per point, in ``[1, C]``.
      labeled: labeled inputs (array or pytree of arrays, same kind as ``pool``'s examples), used
        with ``seed_fisher=True``.
      seed_fisher: start ``A = λI + Σ_L UᵀU`` and the running covariance (sum and count) from the
        labeled set: the full, correct update (the reference drops a term and inverts the
        preference).
      precompute_covariance: take a first pass over the pool to compute ``Σ̂`` (the mean of
        ``UᵀU`` over the pool, and the labeled set with ``seed_fisher``) and use it, fixed, for
        every point. An iterable pool must then be re-iterable (e.g. an object whose ``__iter__``
        starts a new pass, such as a data loader; not a generator).
      lamb: ``λ > 0`` for ``A₀ = λI``.
      batch_size: examples per forward chunk (array pools).
      features_fn: optional ``features_fn(params, x) -> (batch, D)``.
      length: the stream length in examples, for ``k=`` with an iterable pool.

    Returns:
      int32 indices into the stream: ``(k,)`` unique (kept in stream order, then a uniform fill
      of any shortfall from the skipped points), or, with ``rate``, the kept ones.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jnp.ones((4, 16)) / 4, jnp.arange(48.0).reshape(16, 3) / 48
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> pool = jax.random.normal(jax.random.key(1), (300, 4))
      >>> aljax.vessal((W1, W2), apply_fn, pool, k=10, key=0).shape
      (10,)
    """
    fn = "vessal"
    _validate.check_params(fn, params)
    key = _validate.as_key(fn, key)
    lamb = _validate.check_positive(fn, "lamb", lamb)
    batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
    for name, flag in (("seed_fisher", seed_fisher), ("precompute_covariance", precompute_covariance)):
        if not isinstance(flag, bool):
            raise TypeError(_validate.message(fn, name, "a bool", f"{type(flag).__name__} {flag!r}"))
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(_validate.message(fn, "rank", "a Python int", f"{type(rank).__name__} {rank!r}"))
    if labeled is not None and not seed_fisher:
        raise ValueError(_validate.message(fn, "labeled", "used with seed_fisher=True (it seeds A and Σ̂)",
                                           "labeled inputs with seed_fisher=False"))
    if seed_fisher and labeled is None:
        raise ValueError(_validate.message(fn, "labeled", "labeled inputs when seed_fisher=True", "None"))

    def embed(batch):
        logits, h = logits_and_features(params, apply_fn, batch, batch_size=batch_size, features_fn=features_fn,
                                        fn_name=fn)
        return FisherFactors(softmax(logits), h)

    streaming = _validate.is_batch_iterable(pool)
    if streaming:
        if length is not None:
            length = _validate.check_int(fn, "length", length, low=1)
        if k is not None and length is None:
            raise ValueError(_validate.message(
                fn, "length", "the stream length (an int) when `k` is given with an iterable pool "
                "(or pass `rate=` instead of `k`)", "None"))
        budget, rate = _check_budget_or_rate(fn, k, rate, length)
        if precompute_covariance and iter(pool) is pool:
            raise ValueError(_validate.message(fn, "pool", "a re-iterable (e.g. a list of batches) with "
                                               "precompute_covariance=True (it takes two passes)",
                                               f"a one-shot iterator ({type(pool).__name__})"))

        def blocks():
            return (embed(batch) for batch in _validate.checked_batches(fn, pool)
                    if _validate.pool_size(fn, batch, allow_empty=True))  # batches with no rows are skipped

        first_iter = blocks()
        try:
            first = next(first_iter)
        except StopIteration:
            raise ValueError(_validate.message(fn, "pool", "a non-empty stream of batches",
                                               "an iterable that yielded no examples")) from None
        stream = itertools.chain([first], first_iter)
        total = length if budget is not None else None
    else:
        if length is not None:
            raise ValueError(_validate.message(fn, "length", "None for an array pool (its length is known)", length))
        n = _validate.pool_size(fn, pool)
        budget, rate = _check_budget_or_rate(fn, k, rate, n)
        first = embed(pool)
        stream = _PaddedChunks(first, n)
        total = n if budget is not None else None

    _check_embedding(fn, "pool", first, rank)
    dtype = _compute_dtype(first)
    d = first.dim
    labeled_blocks = None
    if labeled is not None:
        labeled_emb = embed(labeled)
        if labeled_emb.dim != d:
            raise ValueError(_validate.message(fn, "labeled", f"inputs embedding to width {d} (as `pool`)",
                                               f"width {labeled_emb.dim}"))
        labeled_blocks = list(_array_blocks(labeled_emb, labeled_emb.n))
    covariance = None
    if precompute_covariance:
        passes = blocks() if streaming else _PaddedChunks(first, first.n)
        cov_sum, count = _gram(passes, d, rank, dtype)
        if labeled_blocks is not None:
            seed_sum, seed_count = _gram(iter(labeled_blocks), d, rank, dtype)
            cov_sum, count = cov_sum + seed_sum, count + seed_count
        covariance = cov_sum / count
    return _run(key, stream, d=d, rank=rank, dtype=dtype, budget=budget, rate=rate, total=total, lamb=lamb,
                labeled_blocks=labeled_blocks, covariance=covariance, fn=fn)
