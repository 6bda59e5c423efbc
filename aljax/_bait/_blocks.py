"""The per-point ``r × r`` blocks ``G_i = X_i A X_iᵀ`` and ``H_i = X_i A F A X_iᵀ``: gains, and
their rank-``r`` corrections after a Woodbury step.

Blocks are stacked with the point axis last, ``(r, r, b)``, so that every operation below is an
elementwise pass over contiguous ``(b,)`` vectors that XLA fuses; for small ``r`` the forward
steps keep only their upper triangles (:func:`pack`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._linalg import HIGHEST

# Up to this rank the small SPD algebra is unrolled into elementwise passes over the point axis;
# above it, a batched ``jnp.linalg`` call does the same work with a shorter compilation.
UNROLL_MAX_RANK = 16
# The forward steps use the unrolled forms (:func:`gains_cholesky`, :func:`correct_packed`: one
# fused pass over the blocks each) only for pools of at least this many points (per device): their
# large fused code dominates the compilation, and below this size the quick-to-compile forms
# (:func:`gains`: a ``fori_loop`` over the pivots; :func:`correct`: batched matmuls) lose less in
# the whole selection than the compilation they save (docs/algorithms/bait.md, "Compilation").
UNROLL_MIN_POINTS = 4096
# The loop-form gains run over blocks of this many points (see :func:`gains`).
GAINS_BLOCK = 128


def spd_inverse(a):
    """Inverse of SPD ``a (r, r, n)`` (batch last) by Gauss–Jordan without pivoting (stable for
    SPD: every pivot is a Schur complement, hence positive), as a ``lax.fori_loop`` over the
    pivots (quick to compile)."""
    r = a.shape[0]
    if r > UNROLL_MAX_RANK:
        return jnp.moveaxis(jnp.linalg.inv(jnp.moveaxis(a, -1, 0)), 0, -1)
    is_k = jnp.arange(r)

    def eliminate(k, a):
        row = jax.lax.dynamic_index_in_dim(a, k, 0, keepdims=False)
        col = jax.lax.dynamic_index_in_dim(a, k, 1, keepdims=False)
        piv = jax.lax.dynamic_index_in_dim(row, k, 0, keepdims=False)
        row = jnp.where((is_k == k)[:, None], 1 / piv, row / piv)
        a = a - col[:, None, :] * row[None, :, :]
        a = jnp.where((is_k == k)[None, :, None], (-col / piv)[:, None, :], a)
        return jnp.where((is_k == k)[:, None, None], row[None], a)

    return jax.lax.fori_loop(0, r, eliminate, a)


def gains(g, h, sign):
    """``tr(H (I + σG)⁻¹)`` per point: ``g, h (r, r, b)`` -> ``(b,)``. Over ``GAINS_BLOCK``
    points at a time when ``b`` divides into such blocks: each pivot of :func:`spd_inverse` is a
    pass over the whole stack, and a block's stack stays in cache for all ``r`` of them."""
    r, _, b = g.shape
    block = GAINS_BLOCK
    if r > UNROLL_MAX_RANK or b <= block or b % block:
        return _gains(g, h, sign)

    def one(c, out):
        gc, hc = (jax.lax.dynamic_slice_in_dim(x, c * block, block, axis=2) for x in (g, h))
        return jax.lax.dynamic_update_slice_in_dim(out, _gains(gc, hc, sign), c * block, axis=0)

    return jax.lax.fori_loop(0, b // block, one, jnp.zeros(b, g.dtype))


def _gains(g, h, sign):
    r = g.shape[0]
    eye = jnp.eye(r, dtype=g.dtype)[:, :, None]
    return jnp.sum(spd_inverse(eye + sign * g) * h, axis=(0, 1))


def pack(blocks):
    """Symmetric ``(r, r, b)`` blocks -> their upper triangles as ``r`` rows ``(r − i, b)``
    (entry ``(i, j)``, ``j >= i``, at ``[i][j − i]``). Kept as separate arrays: the per-step
    corrections then run as a few fused passes, where one stacked array cost a pass per entry."""
    r = blocks.shape[0]
    return [blocks[i, i:] for i in range(r)]


def unpack(packed, r):
    """Inverse of :func:`pack` -> ``(r, r, b)``: the rows concatenated, then one gather of the
    ``r²`` entries (an ``r × r`` stack of slices compiled to a kernel per entry)."""
    starts = [i * r - i * (i - 1) // 2 for i in range(r)]       # row i's offset in the concatenation
    index = [starts[min(i, j)] + abs(j - i) for i in range(r) for j in range(r)]
    flat = jnp.concatenate(packed, axis=0)
    return jnp.take(flat, jnp.asarray(index), axis=0).reshape(r, r, -1)


def gains_cholesky(g, h, r):
    """``tr(H (I + G)⁻¹)`` per point (the forward gain) for small ``r``, from packed blocks
    ``g, h`` (:func:`pack`) -> ``(b,)``: unrolled Cholesky ``I + G = L Lᵀ``, ``W = L⁻¹``, then
    ``Σ_k (W H Wᵀ)_kk`` over the distinct entries. Every operation acts on ``(b,)`` vectors, so
    XLA fuses the whole computation into one pass over the blocks (about ``r³/2`` multiply-adds
    per point, against ``r³`` and ``r`` passes for Gauss–Jordan)."""
    def entry(x, i, j):
        return x[min(i, j)][abs(j - i)]

    def dot(terms, like):
        return sum(terms, jnp.zeros_like(like))

    low = [[None] * r for _ in range(r)]
    inv_diag = [None] * r
    for j in range(r):
        pivot = 1 + entry(g, j, j) - dot((low[j][k] * low[j][k] for k in range(j)), g[0][0])
        low[j][j] = jnp.sqrt(pivot)
        inv_diag[j] = 1 / low[j][j]
        for i in range(j + 1, r):
            low[i][j] = (entry(g, i, j) - dot((low[i][k] * low[j][k] for k in range(j)), g[0][0])) * inv_diag[j]
    inv = [[None] * r for _ in range(r)]          # W = L⁻¹, lower triangular
    for j in range(r):
        inv[j][j] = inv_diag[j]
        for i in range(j + 1, r):
            inv[i][j] = -dot((low[i][k] * inv[k][j] for k in range(j, i)), g[0][0]) * inv_diag[i]
    out = jnp.zeros_like(g[0][0])
    for kk in range(r):
        for a_ in range(kk + 1):
            out = out + inv[kk][a_] * inv[kk][a_] * entry(h, a_, a_)
            for b_ in range(a_ + 1, kk + 1):
                out = out + 2 * inv[kk][a_] * inv[kk][b_] * entry(h, a_, b_)
    return out


def forward_gains(g, h, r):
    """The forward gains ``tr(H (I + G)⁻¹)`` of the forward steps' blocks: packed (:func:`pack`)
    when ``r <= UNROLL_MAX_RANK`` (:func:`gains_cholesky`), else ``(r, r, ...)``."""
    if r <= UNROLL_MAX_RANK:
        return gains_cholesky(g, h, r)
    return gains(g, h, 1.0)


def kept_if_broken(cost):
    """Removal costs with those that rounding broke set to the largest finite number: in exact
    arithmetic I − G_j is positive definite and the cost positive; when rounding breaks that,
    removing j would uncover a direction almost only j spans, so j is kept. (The largest finite
    number, not inf, so that a removed point, at inf, is never chosen again.)"""
    return jnp.where((cost >= 0) & jnp.isfinite(cost), cost, jnp.finfo(cost.dtype).max)


def block_norm(x):
    """Frobenius norm of each ``(r, r)`` block of a batch-last stack ``(r, r, b)`` -> ``(b,)``."""
    return jnp.sqrt(jnp.sum(x * x, axis=(0, 1)))


def correct(wq, g, h, sign):
    """The blocks after a Woodbury step, from ``X_i [U L, Z̃]`` (``wq (b, r, 2r)``, points first;
    see :func:`aljax._bait._kernel.woodbury_directions`): with ``W̃ = X_i U L`` and ``Q̃ = X_i Z̃``,

        G_i' = G_i − σ W̃ W̃ᵀ,       H_i' = H_i − σ (W̃ Q̃ᵀ + Q̃ W̃ᵀ).

    Returns ``G', H'`` and the size ``‖ΔH_i‖`` of the correction (``(b,)``). Two batched matmuls
    over the leading point axis: a tenth of the compilation of the unrolled form
    (:func:`correct_packed`, for large pools), and within about a third of its speed. (Fed
    points-last, XLA transposed ``wq`` for the products and fused the product that makes ``wq``
    into each transpose, several times the whole correction's cost.)"""
    r = g.shape[0]
    w, q = wq[:, :, :r], wq[:, :, r:]
    ww = jnp.einsum("naj,ncj->acn", w, w, precision=HIGHEST)
    wq_t = jnp.einsum("naj,ncj->acn", w, q, precision=HIGHEST)
    dh = wq_t + wq_t.transpose(1, 0, 2)
    return g - sign * ww, h - sign * dh, block_norm(dh)


def correct_packed(wq, g, h, sign):
    """:func:`correct` on packed blocks (:func:`pack`), from ``wq (r, 2r, b)`` (points last): only
    the distinct entries, row ``i`` of ``W Wᵀ`` and of ``W Qᵀ + Q Wᵀ`` from column ``i`` on, each
    row one fused pass."""
    r = wq.shape[0]
    w, q = wq[:, :r], wq[:, r:]
    g_out, h_out, norm2 = [], [], 0
    for i in range(r):
        ww = sum(w[i, l][None] * w[i:, l] for l in range(r))
        dh = sum(w[i, l][None] * q[i:, l] + q[i, l][None] * w[i:, l] for l in range(r))
        g_out.append(g[i] - sign * ww)
        h_out.append(h[i] - sign * dh)
        weight = jnp.asarray([1.0] + [2.0] * (r - i - 1), dh.dtype)[:, None]  # off-diagonal twice
        norm2 = norm2 + jnp.sum(weight * dh * dh, axis=0)
    return g_out, h_out, jnp.sqrt(norm2)
