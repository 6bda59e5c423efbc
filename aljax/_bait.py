"""BAIT: Fisher greedy forward/backward selection, and the ``bait()`` front door.

Ash et al., "Gone fishing: neural active learning with Fisher embeddings", NeurIPS 2021.

Every pool point ``i`` contributes ``r`` rows ``X_i`` (``r × d``) with ``X_iᵀX_i`` its last-layer
Fisher. BAIT greedily picks the batch ``S`` minimising ``tr((λI + F_L' + Σ_{i∈S} X_iᵀX_i)⁻¹ F)``.

The fast path (this module) never builds the ``n × r × d`` tensor or a per-point ``d × d``
product. It keeps ``A = M⁻¹`` (``d × d``) and, per point, the ``r × r`` blocks

    G_i = X_i A X_iᵀ,        H_i = X_i A F A X_iᵀ,

so the gain of adding (``σ = +1``) or removing (``σ = −1``) point ``i`` is
``tr(H_i (I + σ G_i)⁻¹)``. After the Woodbury update ``A' = A − σ U K Uᵀ`` (``U = A X_pᵀ``,
``K = (I + σ G_p)⁻¹``) both blocks change by rank-``r`` corrections that need only ``X_i U`` and
``X_i A F U`` — for factored rows ``X_i = S_i ⊗ h_iᵀ`` one ``(n × D) @ (D × 2·C·r)`` product per
step. A step costs ``O(n r C D + n r³ + r d²)`` instead of the reference's ``O(n r d²)``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from . import _sharding, _validate
from ._badge import _bucket, _pad_tree
from ._embeddings import logits_and_features, softmax
from ._types import FisherFactors

_HIGHEST = jax.lax.Precision.HIGHEST
# Chunks of the pool axis are sized so that one chunk's largest temporary holds about this many
# numbers: small enough to stay in cache, large enough for efficient matmuls.
_CHUNK_ELEMENTS = 1 << 21
_UNROLL_MAX_RANK = 16
_SYMMETRIC_MIN_DIM = 256
# Woodbury updates of A = M⁻¹ are collected over this many steps and applied by one matmul.
_LAZY_STEPS = 8
# Points per chunk are rounded up to a multiple of this (16 float32 = one AVX-512 vector).
_ALIGN = 16
# Rebuild the per-point blocks exactly once the rounding of their accumulated corrections,
# eps·Σ‖ΔH_i‖, reaches this fraction of the largest gain (see ``_refresh``). Tuned on float32 vs
# float64 runs with λ ≪ ‖X_i‖²: 1e-4 already let one test case drift.
_REFRESH_TOL = 1e-5


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HIGHEST)


def _bmm(x, y):
    """Batched matmul with the batch axis last: ``(a, j, n) @ (j, c, n) -> (a, c, n)``, unrolled
    over ``j`` so that XLA emits one fused elementwise loop over contiguous batch vectors."""
    out = x[:, 0, None, :] * y[0][None]
    for j in range(1, x.shape[1]):
        out = out + x[:, j, None, :] * y[j][None]
    return out


def _bt(x):
    """Swap the two leading axes of a batch-last stack of matrices."""
    return x.transpose(1, 0, 2)


# ---------------------------------------------------------------------------------------------
# Rows in chunked layout. Two kinds:
#   Kronecker rows  X_i = S_i ⊗ h_iᵀ:  s (nc, r, C, b), ht (nc, D, b)   (columns class-major: c·D + e)
#   dense rows      X_i:               x (nc, b, r, d)
# The pool axis is split into nc chunks of b points, the last one padded with zero rows.


def _symmetric_blocks(d: int) -> bool:
    """Exploit symmetry block by block (half the flops of the one-time Fisher sum and quadratic
    forms) only where it pays for the longer compilation."""
    return d >= _SYMMETRIC_MIN_DIM


def _pad_chunks(x, n_pad):
    pad = [(0, n_pad - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, pad)


def _chunk_kron(s, h, b):
    n, r, c = s.shape
    nc = -(-n // b)
    s = _pad_chunks(s, nc * b).reshape(nc, b, r, c).transpose(0, 2, 3, 1)
    ht = _pad_chunks(h, nc * b).reshape(nc, b, h.shape[1]).transpose(0, 2, 1)
    return {"s": s, "ht": ht}


def _chunk_dense(x, b):
    n, r, d = x.shape
    nc = -(-n // b)
    return {"x": _pad_chunks(x, nc * b).reshape(nc, b, r, d)}


def _apply(rows, v):
    """``X_i V`` for every point of one chunk: ``v (d, m)`` -> ``(r, m, b)``."""
    if "s" in rows:
        s, ht = rows["s"], rows["ht"]
        c, dim = s.shape[1], ht.shape[0]
        m = v.shape[1]
        # T[c, j, n] = Σ_e V[c·D + e, j] h_n[e];  (X_n V)[a, j] = Σ_c S_n[a, c] T[c, j, n].
        t = _mm(v.reshape(c, dim, m).transpose(0, 2, 1).reshape(c * m, dim), ht).reshape(c, m, -1)
        return _bmm(s, t)
    x = rows["x"]
    bsz, r, d = x.shape
    return _mm(x.reshape(bsz * r, d), v).reshape(bsz, r, -1).transpose(1, 2, 0)


def _quad(rows, mat, symmetric=False):
    """``X_i B X_iᵀ`` for every point of one chunk, ``B`` symmetric ``(d, d)`` -> ``(r, r, b)``.
    ``symmetric``: compute only the upper class blocks (half the work, longer to compile)."""
    if "s" in rows:
        s, ht = rows["s"], rows["ht"]
        c, dim = s.shape[1], ht.shape[0]
        # Q[c, c', n] = h_nᵀ B[c-block, c'-block] h_n, upper blocks only (B is symmetric).
        if not symmetric:
            # Q[c, c', n] = Σ_{e,f} h_n[e] B[(c, e), (c', f)] h_n[f], every block.
            t = _mm(mat.reshape(c, dim, c * dim).transpose(0, 2, 1).reshape(c * c * dim, dim), ht)
            q = jnp.sum(t.reshape(c, c, dim, -1) * ht[None, None], axis=2)
            return jnp.einsum("acn,cdn,bdn->abn", s, q, s, precision=_HIGHEST)
        q = [[None] * c for _ in range(c)]
        for ci in range(c):
            # Σ_e B[(cj, f), (ci, e)] h_n[e] for cj >= ci, then · h_n[f] summed over f.
            t = _mm(mat[ci * dim:(ci + 1) * dim, ci * dim:].T, ht).reshape(c - ci, dim, -1)
            blocks = jnp.sum(t * ht[None], axis=1)
            for cj in range(ci, c):
                q[ci][cj] = q[cj][ci] = blocks[cj - ci]
        q = jnp.stack([jnp.stack(row) for row in q])                        # (C, C, b)
        return jnp.einsum("acn,cdn,bdn->abn", s, q, s, precision=_HIGHEST)  # S Q Sᵀ
    x = rows["x"]
    bsz, r, d = x.shape
    xb = _mm(x.reshape(bsz * r, d), mat).reshape(bsz, r, d)
    return jnp.einsum("nae,nbe->abn", xb, x, precision=_HIGHEST)


def _row(rows, i):
    """``X_i`` as an ``(r, d)`` array."""
    nc, b = _counts(rows)
    ci, pi = i // b, i % b
    if "s" in rows:
        s = rows["s"][ci, :, :, pi]
        h = rows["ht"][ci, :, pi]
        return (s[:, :, None] * h[None, None, :]).reshape(s.shape[0], -1)
    return rows["x"][ci, pi]


def _gather(rows, idx):
    """The rows of points ``idx`` as one chunk of ``len(idx)`` points."""
    nc, b = _counts(rows)
    ci, pi = idx // b, idx % b
    if "s" in rows:
        return {"s": rows["s"][ci, :, :, pi].transpose(1, 2, 0)[None],
                "ht": rows["ht"][ci, :, pi].T[None]}
    return {"x": rows["x"][ci, pi][None]}


def _counts(rows):
    if "s" in rows:
        return rows["s"].shape[0], rows["s"].shape[3]
    return rows["x"].shape[0], rows["x"].shape[1]


# ---------------------------------------------------------------------------------------------
# Fisher sums without per-point outer products.


def _gram_kron(w, z, h, b, dtype, symmetric=False):
    """``Σ_i (diag w_i − z_i z_iᵀ) ⊗ h_i h_iᵀ`` as ``blockdiag_c(Hᵀ diag(w_c) H) − ZᵀZ`` with rows
    ``Z_i = z_i ⊗ h_i`` (``z`` may be None: then no ``ZᵀZ`` term). Accumulated over chunks of ``b``
    points; ``ZᵀZ`` only in its upper block triangle (``Hᵀ diag(z_c z_c') H`` for ``c' ≥ c``)."""
    n, c = w.shape
    dim = h.shape[1]
    nc = -(-n // b)
    ht = _pad_chunks(h.astype(dtype), nc * b).reshape(nc, b, dim)
    wt = _pad_chunks(w.astype(dtype), nc * b).reshape(nc, b, c)
    zt = None if z is None else _pad_chunks(z.astype(dtype), nc * b).reshape(nc, b, c)

    def body(j, acc):
        diag, upper = acc
        hj = ht[j]
        diag = diag + jnp.einsum("nc,nd,ne->cde", wt[j], hj, hj, precision=_HIGHEST)
        if zt is not None:
            zh = zt[j][:, :, None] * hj[:, None, :]                        # (b, C, D)
            if symmetric:
                upper = [u + _mm(zh[:, ci].T, zh[:, ci:].reshape(b, -1)) for ci, u in enumerate(upper)]
            else:
                upper = upper + _mm(zh.reshape(b, -1).T, zh.reshape(b, -1))
        return diag, upper

    if zt is None:
        upper = []
    elif symmetric:
        upper = [jnp.zeros((dim, (c - ci) * dim), dtype) for ci in range(c)]
    else:
        upper = jnp.zeros((c * dim, c * dim), dtype)
    diag, upper = jax.lax.fori_loop(0, nc, body, (jnp.zeros((c, dim, dim), dtype), upper))
    eye = jnp.eye(c, dtype=dtype)
    gram = (eye[:, None, :, None] * diag[:, :, None, :]).reshape(c * dim, c * dim)
    if zt is None:
        return gram
    if not symmetric:
        return gram - upper
    zz = jnp.concatenate([jnp.pad(u, ((0, 0), (ci * dim, 0))) for ci, u in enumerate(upper)])
    on_diagonal = jnp.kron(eye, jnp.ones((dim, dim), dtype))
    return gram - (zz + zz.T - on_diagonal * zz)


def _gram_dense(x, b, dtype):
    """``Σ_i X_iᵀX_i`` accumulated over chunks of ``b`` points."""
    n, r, d = x.shape
    nc = -(-n // b)
    xt = _pad_chunks(x.astype(dtype), nc * b).reshape(nc, b * r, d)
    return jax.lax.fori_loop(0, nc, lambda j, acc: acc + _mm(xt[j].T, xt[j]), jnp.zeros((d, d), dtype))


# ---------------------------------------------------------------------------------------------
# Small symmetric positive definite systems, batched on the last axis.


def _spd_inverse(a, unroll):
    """Inverse of SPD ``a (r, r, n)`` (batch last) by Gauss–Jordan without pivoting (stable for
    SPD: every pivot is a Schur complement, hence positive). ``unroll``: unrolled Python loop (the
    fastest code, for the hot forward loop) or ``lax.fori_loop`` (quick to compile)."""
    r = a.shape[0]
    if r > _UNROLL_MAX_RANK:
        return jnp.moveaxis(jnp.linalg.inv(jnp.moveaxis(a, -1, 0)), 0, -1)
    if unroll:
        for k in range(r):
            piv = a[k, k]
            row = (a[k] / piv).at[k].set(1 / piv)
            col = a[:, k]
            a = a - col[:, None, :] * row[None, :, :]
            a = a.at[:, k].set(-col / piv).at[k].set(row)
        return a
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


def _gains(g, h, sign, unroll=False):
    """``tr(H (I + σG)⁻¹)`` per point: ``g, h (r, r, b)`` -> ``(b,)``."""
    r = g.shape[0]
    eye = jnp.eye(r, dtype=g.dtype)[:, :, None]
    inv = _spd_inverse(eye + sign * g, unroll)
    return jnp.sum(inv * h, axis=(0, 1))


def _pack(blocks):
    """Symmetric ``(r, r, b)`` blocks -> their upper triangles as ``r`` rows ``(r − i, b)``
    (entry ``(i, j)``, ``j >= i``, at ``[i][j − i]``). Kept as separate arrays: the per-step
    corrections then run as a few fused passes, where one stacked array cost a pass per entry."""
    r = blocks.shape[0]
    return [blocks[i, i:] for i in range(r)]


def _unpack(packed, r):
    """Inverse of :func:`_pack` -> ``(r, r, b)``."""
    return jnp.stack([jnp.stack([packed[min(i, j)][abs(j - i)] for j in range(r)]) for i in range(r)])


def _gains_cholesky(g, h, r):
    """``tr(H (I + G)⁻¹)`` per point (the forward gain) for small ``r``, from packed blocks
    ``g, h`` (:func:`_pack`) -> ``(b,)``: unrolled Cholesky ``I + G = L Lᵀ``, ``W = L⁻¹``, then
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


def _forward_gains(g, h, r):
    """The forward gains ``tr(H (I + G)⁻¹)`` of the forward steps' blocks: packed
    (:func:`_pack`) when ``r <= _UNROLL_MAX_RANK`` (:func:`_gains_cholesky`), else ``(r, r, ...)``."""
    if r <= _UNROLL_MAX_RANK:
        return _gains_cholesky(g, h, r)
    return _gains(g, h, 1.0)


def _sym(m):
    return 0.5 * (m + m.T)


# ---------------------------------------------------------------------------------------------
# The kernel.


def _prepare(emb, b, dtype):
    """Chunked rows (for the blocks) and the inputs of the Fisher sum of one embedding."""
    if isinstance(emb, _KronRows):
        rows = _chunk_kron(emb.s.astype(dtype), emb.h.astype(dtype), b)
        symmetric = _symmetric_blocks(emb.s.shape[2] * emb.h.shape[1])
        return rows, functools.partial(_gram_kron, emb.w, emb.z, emb.h, b, dtype, symmetric)
    rows = _chunk_dense(emb.astype(dtype), b)
    return rows, functools.partial(_gram_dense, emb, b, dtype)


def _scale_rows(rows, scale):
    if "s" in rows:
        return {"s": rows["s"] * scale, "ht": rows["ht"]}
    return {"x": rows["x"] * scale}


def _n_points(emb):
    return emb.s.shape[0] if isinstance(emb, _KronRows) else emb.shape[0]


def _initial_g(rows, a0, lamb, has_labeled):
    if has_labeled:
        return jax.lax.map(lambda r: _quad(r, a0, _symmetric_blocks(a0.shape[0])), rows)
    if "s" in rows:  # A₀ = I/λ:  G_i = S_i S_iᵀ ‖h_i‖² / λ
        s, ht = rows["s"], rows["ht"]
        ss = jnp.einsum("kacn,kbcn->kabn", s, s, precision=_HIGHEST)
        return ss * (jnp.sum(ht * ht, axis=1) / lamb)[:, None, None, :]
    x = rows["x"]
    return jnp.einsum("knae,knbe->kabn", x, x, precision=_HIGHEST) / lamb


def _woodbury_directions(a, fisher, xp, sign, pending=None):
    """For the picked rows ``X_p``: ``U L``, ``Z̃`` (see ``_update_chunk``) and the new ``A``.

    ``pending (d, m)``: ``A`` is held as ``a − σ P Pᵀ`` (see :func:`_lazy_loop`); then the
    products with ``A`` take the low-rank term apart, and the second result is ``U L`` (the
    columns to append to ``P``) instead of the new ``A``."""
    def times_a(x):
        ax = _mm(a, x)
        return ax if pending is None else ax - sign * _mm(pending, _mm(pending.T, x))

    u = times_a(xp.T)                                  # U = A X_pᵀ            (d, r)
    fu = _mm(fisher, u)
    z = times_a(fu)                                    # Z = A F A X_pᵀ        (d, r)
    g_p = _sym(_mm(xp, u))                             # G_p = X_p A X_pᵀ
    h_p = _sym(_mm(u.T, fu))                           # H_p = X_p A F A X_pᵀ
    r = g_p.shape[0]
    # K = (I + σG_p)⁻¹ = L Lᵀ with L = R⁻ᵀ, R = chol(I + σG_p).
    eye = jnp.eye(r, dtype=a.dtype)
    chol = jnp.linalg.cholesky(eye + sign * g_p)
    l_fac = jax.scipy.linalg.solve_triangular(chol, eye, lower=True).T   # L = R⁻ᵀ, r × r
    ul, zl = _mm(u, l_fac), _mm(z, l_fac)
    h_tilde = _sym(_mm(_mm(l_fac.T, h_p), l_fac))                        # Lᵀ H_p L
    z_tilde = zl - 0.5 * sign * _mm(ul, h_tilde)
    directions = jnp.concatenate([ul, z_tilde], axis=1)
    return directions, (_downdate(a, ul, sign) if pending is None else ul)


def _lazy_loop(n_steps, step, state, sign):
    """``lax.fori_loop(0, n_steps, step, state)`` for a ``state`` that starts with ``(a, pending)``,
    ``A = a − σ P Pᵀ``, ``P`` the ``(d, _LAZY_STEPS·r)`` pending columns (zeros where unused):
    each step appends its ``U L`` at columns ``(t mod _LAZY_STEPS)·r`` (see ``_append``), and
    after every ``_LAZY_STEPS`` steps one matmul folds ``P`` into ``a``. A step then reads ``A``
    twice instead of four times (its update was a read-modify-write pass over ``d × d``): in a
    step that is memory-bound, that is most of the ``O(d²)`` cost. Returns the state with
    ``pending`` folded in (zeros)."""
    def flush(state):
        a, pending = state[0], state[1]
        return (a - sign * _mm(pending, pending.T), jnp.zeros_like(pending)) + tuple(state[2:])

    def block(j, state):
        stop = jnp.minimum((j + 1) * _LAZY_STEPS, n_steps)
        return flush(jax.lax.fori_loop(j * _LAZY_STEPS, stop, step, state))

    return jax.lax.fori_loop(0, -(-n_steps // _LAZY_STEPS), block, state)


def _append(pending, t, ul):
    """Columns ``U L`` of step ``t`` into the pending block (see :func:`_lazy_loop`)."""
    return jax.lax.dynamic_update_slice(pending, ul, (0, (t % _LAZY_STEPS) * ul.shape[1]))


def _effective_a(a, pending, sign):
    """``A = a − σ P Pᵀ`` as a function (evaluated only where needed, e.g. for a rebuild)."""
    return lambda: a - sign * _mm(pending, pending.T)


def _downdate(a, ul, sign):
    """``A' = A − σ (U L)(U L)ᵀ``, without the separate symmetrisation pass: entries ``(i, j)`` and
    ``(j, i)`` of the product are the same ``r`` products summed in the same order, so ``A`` stays
    symmetric (exactly, on the CPU backend; to rounding in any case, which nothing amplifies:
    every use of ``A`` either reads one triangle or symmetrises)."""
    return a - sign * _mm(ul, ul.T)


def _update_chunk(rows, g, h, directions, sign):
    """Rank-r corrections of one chunk's blocks, then its gains under the new ``A``.

    With ``W̃ = X_i U L`` and ``Q̃ = X_i Z̃``, ``Z̃ = Z L − (σ/2) U L (Lᵀ H_p L)``:
        G_i' = G_i − σ W̃ W̃ᵀ,       H_i' = H_i − σ (W̃ Q̃ᵀ + Q̃ W̃ᵀ).
    """
    return _correct(_apply(rows, directions), g, h, sign)


def _correct(wq, g, h, sign):
    """The corrections of :func:`_update_chunk` from ``X_i [U L, Z̃]`` (``wq (r, 2r, b)``)."""
    r = g.shape[0]
    w, q = wq[:, :r], wq[:, r:]
    # Row a of W Wᵀ (and of W Qᵀ) as Σ_j W[a, j] W[:, j]: one fused pass, no transposed operand.
    g = g - sign * jnp.stack([sum(w[a, j][None] * w[:, j] for j in range(r)) for a in range(r)])
    wq_t = jnp.stack([sum(w[a, j][None] * q[:, j] for j in range(r)) for a in range(r)])
    dh = wq_t + _bt(wq_t)
    h = h - sign * dh
    return g, h, _block_norm(dh)


def _flat_rows(rows, probs=None, scale=1.0):
    """The rows with the chunk axis merged into the point axis, for the forward steps: Kronecker
    ``s (r, C, nc·b)`` and ``ht (D, nc·b)`` (a copy, made once), dense ``x (nc·b, r, d)`` (a view).
    ``probs (n, C)``: the rows are ``scale · S_i ⊗ h_iᵀ`` with the softmax factor ``S_i`` (see
    :class:`_KronRows`), kept as ``p`` and ``scale·√p`` ``(C, nc·b)`` instead of ``s``."""
    if "s" in rows:
        s, ht = rows["s"], rows["ht"]
        flat = {"ht": ht.transpose(1, 0, 2).reshape(ht.shape[1], -1)}
        if probs is None:
            return dict(flat, s=s.transpose(1, 2, 0, 3).reshape(s.shape[1], s.shape[2], -1))
        p = _pad_chunks(probs.astype(s.dtype), flat["ht"].shape[1]).T
        return dict(flat, p=p, sqp=jnp.sqrt(p) * scale)
    x = rows["x"]
    return {"x": x.reshape(-1, x.shape[2], x.shape[3])}


def _update_flat(flat, g, h, directions, sign):
    """:func:`_update_chunk` on the whole pool at once (``flat`` from :func:`_flat_rows`; blocks
    ``g, h`` packed (:func:`_pack`, rows of ``nc·b`` points) when ``r <= _UNROLL_MAX_RANK``, else ``(r, r, nc·b)``):
    ``X_i [U L, Z̃]`` for every point comes from one large matmul, on CPU much faster than a batch
    of per-chunk ones, and no per-step transposes between layouts."""
    m = directions.shape[1]
    if "ht" in flat:
        ht = flat["ht"]
        dim = ht.shape[0]
        c = directions.shape[0] // dim
        t = _mm(directions.reshape(c, dim, m).transpose(0, 2, 1).reshape(c * m, dim), ht)  # (C·m, nc·b)
        t = t.reshape(c, m, -1)
        if "p" in flat:  # S T = scale·diag(√p)(T − 1 pᵀT)
            p = flat["p"]
            mean = p[0, None] * t[0]
            for ci in range(1, c):
                mean = mean + p[ci, None] * t[ci]
            # (Computed once: fused into the product below, XLA would redo it for every row a.)
            mean = jax.lax.optimization_barrier(mean)
            wq = flat["sqp"][:, None, :] * (t - mean[None])
        else:
            wq = _bmm(flat["s"], t)
    else:
        x = flat["x"]
        wq = _mm(x.reshape(-1, x.shape[2]), directions).reshape(x.shape[0], x.shape[1], m).transpose(1, 2, 0)
    if wq.shape[0] <= _UNROLL_MAX_RANK:
        return _correct_packed(wq, g, h, sign)
    return _correct(wq, g, h, sign)


def _correct_packed(wq, g, h, sign):
    """:func:`_correct` on packed blocks (:func:`_pack`): only the distinct entries, row ``i`` of
    ``W Wᵀ`` and of ``W Qᵀ + Q Wᵀ`` from column ``i`` on, each row one fused pass."""
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


def _block_norm(x):
    """Frobenius norm of each ``(r, r)`` block of a batch-last stack ``(r, r, b)`` -> ``(b,)``."""
    return jnp.sqrt(jnp.sum(x * x, axis=(0, 1)))


def _chunk_norms(x):
    """``_block_norm`` of chunked blocks ``(nc, r, r, b)`` -> ``(nc, b)``."""
    return jnp.sqrt(jnp.sum(x * x, axis=(1, 2)))


def _refresh(rows, a, fisher, g, h, drift, excluded, symmetric, gains_fn, shards=None, gains=None,
             layout=lambda blocks: blocks):
    """Recompute ``G_i = X_i A X_iᵀ`` and ``H_i = X_i A F A X_iᵀ`` exactly from ``A`` when the
    rank-``r`` corrections may have cancelled away too much precision.

    ``drift_i`` is the sum of the sizes ``‖ΔH_i‖`` of the corrections since the last exact
    computation; their rounding moves the gain ``tr(H_i (I ± G_i)⁻¹)`` by about ``eps·drift_i``
    (``‖(I + G_i)⁻¹‖ ≤ 1``). When λ is small against ``‖X_i‖²``, or once the picks span most of
    the ``d`` columns, the corrections cancel ``H`` by many orders of magnitude and the gains lose
    their ranking: measured in float32, picks left float64's after ~15 steps. So: rebuild both
    blocks (and the gains) once ``eps·max drift > _REFRESH_TOL·max |gain|`` over the live points
    (float64: practically never). ``A`` itself stays accurate (relative error ~1e-6 in float32 in
    the same runs), so the rebuilt blocks are too. A rebuild costs two ``_quad`` passes
    (``O(n·d²)``) plus ``A F A``; well-conditioned runs need none, ill-conditioned ones a few.
    ``gains_fn(g, h)``: the gains (or costs) of chunked blocks; returns ``g, h, drift, gains``.
    Chunked layout: ``rows`` as ``_counts`` sees them, ``g, h (nc, r, r, b)``, ``drift,
    excluded (nc, b)``; ``layout`` maps rebuilt chunked blocks to the layout of ``g, h``. With ``shards``, the maxima are over every shard (one ``pmax``), so all
    devices rebuild together."""
    a_now = a if callable(a) else (lambda: a)   # ``a``: ``A``, or a function returning it
    eps = jnp.finfo(drift.dtype).eps
    if gains is None:  # (``gains``: the caller's, already ``gains_fn(g, h)``)
        gains = gains_fn(g, h)
    scale = jnp.max(jnp.where(excluded, 0, jnp.abs(gains)))
    worst = jnp.max(jnp.where(excluded, 0, drift))
    if shards is not None:
        scale, worst = jax.lax.pmax(jnp.stack([scale, worst]), shards.axes)
    stale = eps * worst > _REFRESH_TOL * scale

    def exact(_):
        a = a_now()
        b_mat = _sym(_mm(_mm(a, fisher), a))
        g_new = jax.lax.map(lambda rc: _quad(rc, a, symmetric), rows)
        h_new = jax.lax.map(lambda rc: _quad(rc, b_mat, symmetric), rows)
        g_new, h_new = layout(g_new), layout(h_new)
        return g_new, h_new, jnp.zeros_like(drift), gains_fn(g_new, h_new)

    return jax.lax.cond(stale, exact, lambda _: (g, h, drift, gains), None)


def _forward_backward(pool, labeled, lamb, k, n_forward, chunk, shards=None, n_valid=None, n_lab_valid=None):
    """The whole selection. ``shards`` (a :class:`_Shards`): the body of a ``shard_map`` over the
    example axis; ``pool`` (and ``labeled`` when ``shards.labeled_sharded``) is then this device's
    block, and the only cross-device traffic is ``psum`` of the ``d × d`` Fisher sums, per step a
    gather of each shard's best ``(gain, index)``, a ``psum`` of the picked point's factors and a
    ``pmax`` for ``_refresh``, and, before the backward pass (replicated), a ``psum`` of the
    ``n_forward`` picked points' rows and blocks. ``n_valid``, ``n_lab_valid`` (traced, one device):
    only that many leading rows of ``pool`` / ``labeled`` are points, the rest zero padding to a
    size bucket (see :func:`_plan`); padding adds nothing to ``F`` and is never picked."""
    dtype = jnp.result_type(jnp.float32, *jax.tree_util.tree_leaves((pool, labeled)))
    count = 1 if shards is None else shards.count
    # ``labeled`` may come as its Fisher sum already (a ``_LabeledGram``, one device, see _plan).
    n_local = _n_points(pool) if n_valid is None else n_valid
    n = n_local * count
    if labeled is None:
        n_lab = 0
    elif n_lab_valid is not None:
        n_lab = n_lab_valid
    else:
        n_lab = _n_points(labeled) * (count if shards and shards.labeled_sharded else 1)
    lamb = jnp.asarray(lamb, dtype)

    rows, gram_pool = _prepare(pool, chunk, dtype)
    gram = gram_pool()
    if shards is not None:
        gram = jax.lax.psum(gram, shards.axes)
    if isinstance(labeled, _LabeledGram):
        gram_l = labeled.matrix
        gram = gram + gram_l
    elif labeled is not None:
        _, gram_lab = _prepare(labeled, chunk, dtype)
        gram_l = gram_lab()
        if shards is not None and shards.labeled_sharded:
            gram_l = jax.lax.psum(gram_l, shards.axes)
        gram = gram + gram_l
    d = gram.shape[0]
    fisher = _sym(gram / (n + n_lab))                  # F: mean Fisher over pool ∪ labeled
    eye = jnp.eye(d, dtype=dtype)
    if labeled is not None:
        # M₀ = λI + F_L n_L/(n_L + k) = λI + Σ_L X_jᵀX_j / (n_L + k)
        m0 = lamb * eye + _sym(gram_l) / (n_lab + k)
        a = _sym(jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(m0), True), eye))
        b_mat = _sym(_mm(_mm(a, fisher), a))
    else:
        a = eye / lamb
        b_mat = fisher / (lamb * lamb)
    # Candidate rows scaled by √(k / (n_L + k)) (reference parity).
    scale = jnp.sqrt(jnp.asarray(k / (n_lab + k), dtype))   # n_lab may be traced
    rows = _scale_rows(rows, scale)
    g = _initial_g(rows, a, lamb, labeled is not None)
    h = jax.lax.map(lambda r: _quad(r, b_mat, _symmetric_blocks(d)), rows)
    nc, b = _counts(rows)
    valid = (jnp.arange(nc * b) < n_local).reshape(nc, b)

    symmetric = _symmetric_blocks(d)

    # The forward steps keep the blocks with the chunk axis merged into the point axis, and for
    # small r only their upper triangles: each step is then one matmul and a few fused passes.
    r = g.shape[1]
    softmax = isinstance(pool, _KronRows) and pool.softmax
    flat = _flat_rows(rows, pool.w if softmax else None, scale)

    packed = r <= _UNROLL_MAX_RANK  # then only the upper triangles: (r(r+1)/2, nc·b)

    def to_flat(blocks):
        blocks = blocks.transpose(1, 2, 0, 3).reshape(r, r, -1)
        return _pack(blocks) if packed else blocks

    def to_chunks(blocks):
        blocks = _unpack(blocks, r) if packed else blocks
        return blocks.reshape(r, r, nc, b).transpose(2, 0, 1, 3)

    def gains_fn(g, h):
        return _forward_gains(g, h, r).reshape(nc, b)

    def forward(t, state):
        a, pending, g, h, drift, gains, taken, picks = state
        g, h, drift, gains = _refresh(rows, _effective_a(a, pending, 1.0), fisher, g, h, drift, taken, symmetric,
                                      gains_fn, shards, gains, to_flat)
        p_local = jnp.argmax(jnp.where(taken, -jnp.inf, gains).reshape(-1)).astype(jnp.int32)
        if shards is None:
            p, mine, xp = p_local, True, _row(rows, p_local)
        else:
            p, mine, xp = _pick_across_shards(rows, gains, taken, p_local, shards, n_local)
        directions, ul = _woodbury_directions(a, fisher, xp, 1.0, pending)
        pending = _append(pending, t, ul)
        g, h, dh = _update_flat(flat, g, h, directions, 1.0)
        # (An exhausted shard's argmax may be a taken point: never un-take it.)
        taken = taken.reshape(-1).at[p_local].set(mine | taken.reshape(-1)[p_local]).reshape(nc, b)
        # The next step's gains, here where XLA can fuse them with the update of the blocks.
        return a, pending, g, h, drift + dh.reshape(nc, b), gains_fn(g, h), taken, picks.at[t].set(p)

    g, h = to_flat(g), to_flat(h)
    pending = jnp.zeros((d, _LAZY_STEPS * r), dtype)
    state = (a, pending, g, h, jnp.zeros((nc, b), dtype), gains_fn(g, h), ~valid, jnp.zeros(n_forward, jnp.int32))
    a, _, g, h, drift, _, _, picks = _lazy_loop(n_forward, forward, state, 1.0)
    g, h = to_chunks(g), to_chunks(h)
    if n_forward == k:
        return picks

    # Backward: the picked points only, as one chunk of n_forward points.
    if shards is None:
        sub, g_sub, h_sub, drift_sub = _picked(rows, g, h, drift, picks)
    else:
        # Every device takes the picks it holds (zeros elsewhere); one psum replicates them, and
        # the backward pass runs on every device alike.
        local = picks - jax.lax.axis_index(shards.axes) * n_local
        mine = (local >= 0) & (local < n_local)
        parts = _picked(rows, g, h, drift, jnp.clip(local, 0, n_local - 1))
        parts = jax.tree_util.tree_map(lambda x: jnp.where(mine.reshape((1,) * (x.ndim - 1) + (-1,)), x, 0), parts)
        sub, g_sub, h_sub, drift_sub = jax.lax.psum(parts, shards.axes)
    if "x" in sub:
        sub = {"x": sub["x"].transpose(0, 3, 1, 2)}
    sub_chunk = {key: v[0] for key, v in sub.items()}

    def backward(t, state):
        a, pending, g, h, drift, removed = state
        g, h, drift, cost = _refresh(sub, _effective_a(a, pending, -1.0), fisher, g[None], h[None], drift[None], removed[None], symmetric,
                                     jax.vmap(lambda gc, hc: _gains(gc, hc, -1.0)))
        # Removing j changes the objective by + tr(H_j (I − G_j)⁻¹) ≥ 0: drop the cheapest.
        g, h, drift, cost = g[0], h[0], drift[0], cost[0]
        # In exact arithmetic I − G_j is positive definite and the cost positive; when rounding
        # breaks that, removing j would uncover a direction almost only j spans: keep it.
        # (The largest finite number, not inf, so that a removed point is never chosen again.)
        cost = jnp.where((cost >= 0) & jnp.isfinite(cost), cost, jnp.finfo(cost.dtype).max)
        q = jnp.argmin(jnp.where(removed, jnp.inf, cost)).astype(jnp.int32)
        directions, ul = _woodbury_directions(a, fisher, _row(sub, q), -1.0, pending)
        pending = _append(pending, t, ul)
        g, h, dh = _update_chunk(sub_chunk, g, h, directions, -1.0)
        return a, pending, g, h, drift + dh, removed.at[q].set(True)

    state = (a, jnp.zeros((d, _LAZY_STEPS * r), dtype), g_sub, h_sub, drift_sub, jnp.zeros(n_forward, bool))
    removed = _lazy_loop(n_forward - k, backward, state, -1.0)[-1]
    return picks[jnp.nonzero(~removed, size=k)[0]]


_kernel = jax.jit(_forward_backward, static_argnames=("k", "n_forward", "chunk"))


def _picked(rows, g, h, drift, idx):
    """Rows, blocks and drift of points ``idx``, each with the point axis last (rows as one chunk
    of ``len(idx)`` points: ``s (1, r, C, m)``, ``ht (1, D, m)`` or ``x (1, m, r, d)``)."""
    nc, b = _counts(rows)
    ci, pi = idx // b, idx % b
    sub = _gather(rows, idx)
    if "x" in sub:  # dense rows keep the point axis second: move it last for the masking, and back
        sub = {"x": sub["x"].transpose(0, 2, 3, 1)}
    return sub, g[ci, :, :, pi].transpose(1, 2, 0), h[ci, :, :, pi].transpose(1, 2, 0), drift[ci, pi]


class _Shards(NamedTuple):
    """The example axis inside ``shard_map``: mesh axes ``axes`` cut it into ``count`` blocks;
    ``labeled_sharded``: the labeled embedding is cut the same way (else it is replicated)."""

    axes: Any
    count: int
    labeled_sharded: bool


def _pick_across_shards(rows, gains, taken, p_local, shards, n_local):
    """The global argmax and the picked point's rows.

    Each shard offers its best unpicked point; one all-gather of the ``(gain, index)`` pairs picks
    the winner (ties: the lowest shard, i.e. the lowest pool index, as on one device); the winner's
    rows reach every device through one ``psum`` of its factors (``r·C + D`` numbers for
    Kronecker rows, ``r·d`` for dense ones) — never of the pool.
    Returns ``(global index, whether this shard holds it, X_p (r, d))``."""
    best = jnp.where(taken, -jnp.inf, gains).reshape(-1)[p_local]
    bests = jax.lax.all_gather(best, shards.axes)
    owners = jax.lax.all_gather(p_local, shards.axes)
    winner = jnp.argmax(bests).astype(jnp.int32)
    p = winner * n_local + owners[winner]
    mine = jax.lax.axis_index(shards.axes) == winner
    nc, b = _counts(rows)
    ci, pi = p_local // b, p_local % b
    if "s" in rows:
        s_p = jnp.where(mine, rows["s"][ci, :, :, pi], 0)
        h_p = jnp.where(mine, rows["ht"][ci, :, pi], 0)
        s_p, h_p = jax.lax.psum((s_p, h_p), shards.axes)
        xp = (s_p[:, :, None] * h_p[None, None, :]).reshape(s_p.shape[0], -1)
    else:
        xp = jax.lax.psum(jnp.where(mine, rows["x"][ci, pi], 0), shards.axes)
    return p, mine, xp


@functools.partial(jax.jit, static_argnames=("k", "n_forward", "chunk", "layout", "labeled_sharded"))
def _sharded_kernel(pool, labeled, lamb, *, k, n_forward, chunk, layout, labeled_sharded):
    """:func:`_forward_backward` under ``shard_map`` over the pool's example axis (``layout``, a
    :class:`~aljax._sharding.RowLayout`): per-point state never leaves its device."""
    shards = _Shards(layout.axes, layout.shards, labeled_sharded)
    rows_spec = PartitionSpec(layout.axes)
    labeled_spec = rows_spec if labeled_sharded else PartitionSpec()

    def body(pool, labeled, lamb):
        return _forward_backward(pool, labeled, lamb, k, n_forward, chunk, shards)

    # check_vma=False: the loops carry per-shard and replicated state side by side, and the picks
    # returned are replicated by construction (computed from all-gathered / psum-med values only).
    return jax.shard_map(body, mesh=layout.mesh, in_specs=(rows_spec, labeled_spec, PartitionSpec()),
                         out_specs=PartitionSpec(), check_vma=False)(pool, labeled, lamb)


@jax.tree_util.register_pytree_node_class
class _KronRows:
    """Per-point rows ``X_i = S_i ⊗ h_iᵀ`` with ``S_iᵀS_i = diag(w_i) − z_i z_iᵀ`` (``z`` may be
    None): ``s (n, r, C)``, ``h (n, D)``, ``w (n, C)``, ``z (n, C)``. ``softmax`` (static): ``S_i``
    is the softmax factor ``diag(√p_i)(I − 1 p_iᵀ)`` with ``p = w = z``, which the forward steps
    apply in ``O(C)`` per column instead of as a ``C × C`` matrix."""

    def __init__(self, s, h, w, z, softmax=False):
        self.s, self.h, self.w, self.z, self.softmax = s, h, w, z, softmax

    def tree_flatten(self):
        return (self.s, self.h, self.w, self.z), self.softmax

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, softmax=aux)


@jax.jit
def _from_fisher_factors(emb: FisherFactors) -> _KronRows:
    # S from p in the compute dtype (at least float32): the forward steps rebuild S from p there,
    # and a bfloat16 S would disagree with them.
    dtype = jnp.result_type(jnp.float32, emb.probs.dtype, emb.h.dtype)
    emb = FisherFactors(emb.probs.astype(dtype), emb.h)
    return _KronRows(emb.s_factor(), emb.h, emb.probs, emb.probs, softmax=True)


@functools.partial(jax.jit, static_argnames="problem_type")
def _rows_from_outputs(outputs, h, problem_type) -> _KronRows:
    if problem_type == "classification":
        return _from_fisher_factors(FisherFactors(softmax(outputs), h))
    # Gaussian head: the Fisher is h hᵀ per output, i.e. S_i = I_m, one row e_j ⊗ h_i per output j.
    m = 1 if outputs.ndim == 1 else outputs.shape[1]
    n = outputs.shape[0]
    dtype = jnp.result_type(outputs.dtype, h.dtype)
    s = jnp.broadcast_to(jnp.eye(m, dtype=dtype), (n, m, m))
    return _KronRows(s, h, jnp.ones((n, m), dtype), None)


def _chunk_size(n: int, d: int, rows_per_point: int) -> int:
    """Points per chunk: the largest temporary (``b·d`` numbers, ``b·r·d`` for dense rows) stays
    near ``_CHUNK_ELEMENTS``; chunks are balanced, then rounded up to a multiple of ``_ALIGN``, so
    that padding is at most ``nc·_ALIGN`` points."""
    widest = max(1, _CHUNK_ELEMENTS // max(1, d * rows_per_point))
    b_max = int(min(max(widest, 8), 4096))
    nc = -(-n // b_max)
    b = -(-n // nc)
    # A multiple of the SIMD width: the per-point blocks live in (r, r, nc·b) arrays whose rows
    # then start aligned, which lets XLA vectorise the elementwise passes over them (an odd b
    # made the fused gain computation ~7× slower on AVX-512).
    return b if b < _ALIGN else -(-b // _ALIGN) * _ALIGN


def _check_oversample(fn: str, oversample: Any) -> float:
    if isinstance(oversample, bool) or not isinstance(oversample, (int, float, np.integer, np.floating)):
        raise TypeError(_validate.message(fn, "oversample", "a real number >= 1",
                                          f"{type(oversample).__name__} {oversample!r}"))
    if not np.isfinite(oversample) or oversample < 1:
        raise ValueError(_validate.message(fn, "oversample", "a finite number >= 1", oversample))
    return float(oversample)


def _n_forward(k: int, oversample: float, n: int) -> int:
    # ⌈oversample·k⌉, insensitive to float noise such as 1.1·10 = 11.000000000000002.
    return min(int(math.ceil(round(oversample * k, 9))), n)


def _check_probs_sum(fn: str, arg: str, probs) -> None:
    """Rows of ``probs`` must sum to 1: the Fisher sum (block diagonal minus ``ZᵀZ``) and the null
    vector ``√p`` of ``S_i`` rely on it, and unnormalised rows silently give other picks. Checked on
    concrete inputs only, to ``max(1e-3, 4·eps)`` (float32 softmax outputs pass)."""
    if probs.shape[0] == 0 or not _validate.is_concrete(probs):
        return
    dtype = jnp.result_type(probs)
    tol = max(1e-3, 4 * float(jnp.finfo(dtype).eps)) if jnp.issubdtype(dtype, jnp.floating) else 1e-3
    err = np.abs(np.asarray(jnp.sum(probs, axis=1), np.float64) - 1)
    if err.max() > tol:
        i = int(err.argmax())
        raise ValueError(_validate.message(
            fn, arg, f"FisherFactors whose probabilities sum to 1 in every row (within {tol:g})",
            f"row {i} summing to {float(np.sum(np.asarray(probs[i], np.float64))):.6g}"))


def _as_rows(fn: str, arg: str, emb, like=None):
    """Validated internal rows from a FisherFactors or a dense ``(n, r, d)`` array."""
    if isinstance(emb, FisherFactors):
        if like is not None and not isinstance(like, FisherFactors):
            raise TypeError(_validate.message(fn, arg, "the type of `pool_emb` (a dense (n, r, d) array)",
                                              "a FisherFactors"))
        if like is not None and (emb.probs.shape[1], emb.h.shape[1]) != (like.probs.shape[1], like.h.shape[1]):
            raise ValueError(_validate.message(
                fn, arg, f"FisherFactors with C = {like.probs.shape[1]} classes and D = {like.h.shape[1]} "
                "features, like `pool_emb`", f"C = {emb.probs.shape[1]} and D = {emb.h.shape[1]}"))
        _validate.check_finite(fn, f"`{arg}` values", emb.probs, emb.h)
        if _validate.is_concrete(emb.probs) and bool(jnp.any(emb.probs < 0)):
            raise ValueError(_validate.message(fn, arg, "FisherFactors with probabilities >= 0",
                                               "negative probabilities"))
        _check_probs_sum(fn, arg, emb.probs)
        return _from_fisher_factors(emb)
    if like is not None and isinstance(like, FisherFactors):
        raise TypeError(_validate.message(fn, arg, "the type of `pool_emb` (FisherFactors)", type(emb).__name__))
    shape, dtype = getattr(emb, "shape", None), getattr(emb, "dtype", None)
    if shape is None:
        raise TypeError(_validate.message(fn, arg, "FisherFactors or an (n, r, d) array", type(emb).__name__))
    if len(shape) != 3:
        raise ValueError(_validate.message(fn, arg, "FisherFactors or a 3-D array (n, r, d)", f"shape {tuple(shape)}"))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(_validate.message(fn, arg, "a floating array", f"dtype {dtype}"))
    if like is not None and tuple(shape[1:]) != tuple(like.shape[1:]):
        raise ValueError(_validate.message(fn, arg, f"rows of shape (r, d) = {tuple(like.shape[1:])} like `pool_emb`",
                                           f"{tuple(shape[1:])}"))
    if shape[1] == 0 or shape[2] == 0:
        raise ValueError(_validate.message(fn, arg, "at least one row and one column per point",
                                           f"shape {tuple(shape)}"))
    emb = jnp.asarray(emb)
    _validate.check_finite(fn, f"`{arg}` values", emb)
    return emb


def _rows_chunk(rows, n_local: int) -> int:
    """:func:`_chunk_size` for ``n_local`` points of ``rows`` (Kronecker-factored or dense)."""
    if isinstance(rows, _KronRows):
        return _chunk_size(n_local, rows.s.shape[2] * rows.h.shape[1], 1)
    return _chunk_size(n_local, rows.shape[2], rows.shape[1])


def _plan(fn, rows, labeled_rows, k, lamb, oversample, layout=None, labeled_layout=None, labeled_arg="labeled_emb"):
    """``(kernel, args, static kwargs)`` of one selection: the one-device kernel, or, for a pool
    sharded along its example axis (``layout``, from :func:`aljax._sharding.row_layout` of the
    user's input), the ``shard_map`` kernel with the rows placed on the pool's layout (a no-op when
    they are there already) and the labeled rows sharded like the pool or replicated."""
    n = _n_points(rows)
    if labeled_rows is not None and _n_points(labeled_rows) == 0:
        labeled_rows, labeled_layout = None, None
    n_forward = _n_forward(k, oversample, n)
    if layout is None and _validate.is_concrete(rows, labeled_rows):
        # One device: zero-pad the pool and the labeled rows to size buckets (small pools to a
        # power of two, larger ones by at most 1/8: ``_pool_bucket``), so that an active-learning
        # loop, whose pool shrinks and labeled set grows every round, compiles once per bucket
        # instead of once per round; the real counts go in traced.
        # The labeled rows enter only through their Fisher sum: computed first (one small
        # compilation per labeled bucket), the kernel's shapes do not depend on their number.
        n_lab = 0 if labeled_rows is None else _n_points(labeled_rows)
        dtype = jnp.result_type(jnp.float32, *jax.tree_util.tree_leaves((rows, labeled_rows)))
        size = _pool_bucket(rows, n)
        rows = rows if size == n else _pad_tree(rows, size=size)
        b = _rows_chunk(rows, size)
        if labeled_rows is not None:
            labeled_rows = _labeled_gram(_pad_labeled(labeled_rows, n_lab), chunk=b, dtype=dtype)
        return _kernel, (rows, labeled_rows, lamb), dict(
            k=k, n_forward=n_forward, chunk=b, n_valid=jnp.int32(n),
            n_lab_valid=None if labeled_rows is None else jnp.int32(n_lab))
    shards = 1 if layout is None else layout.shards
    if layout is not None and n % shards:  # JAX builds no such array; kept for a clear message
        raise ValueError(_validate.message(fn, "pool", f"a pool size divisible by its {shards} shards "
                                           f"({layout.describe()})", f"{n} examples"))
    static = dict(k=k, n_forward=n_forward, chunk=_rows_chunk(rows, n // shards))
    if layout is None:
        return _kernel, (rows, labeled_rows, lamb), static
    labeled_sharded = labeled_layout is not None
    if labeled_sharded and labeled_layout != layout:
        raise ValueError(_validate.message(
            fn, labeled_arg, f"unsharded, replicated, or sharded like the pool ({layout.describe()})",
            f"labeled examples {labeled_layout.describe()}"))
    rows = _place(rows, layout.sharding)
    if labeled_rows is not None:
        replicated = NamedSharding(layout.mesh, PartitionSpec())
        labeled_rows = _place(labeled_rows, layout.sharding if labeled_sharded else lambda ndim: replicated)
    return _sharded_kernel, (rows, labeled_rows, lamb), dict(static, layout=layout, labeled_sharded=labeled_sharded)


@jax.tree_util.register_pytree_node_class
class _LabeledGram:
    """The labeled points' Fisher sum ``Σ_L X_jᵀX_j`` (``d × d``), computed before the selection
    kernel, whose shapes then do not depend on how many points are labeled."""

    def __init__(self, matrix):
        self.matrix = matrix

    def tree_flatten(self):
        return (self.matrix,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


# Pools whose (padded) rows take at most this many bytes are zero-padded to the next power of
# two instead of a 1/8 size bucket. There the kernel's run time hardly depends on n while its
# compilation is long (digits MLP, C = 10, D = 128, CPU: ~9 s to compile; 0.33 s to run at 512
# points, 0.49 s at 2,048, 0.61 s at 4,096, 1.0 s at 8,192), so a pool shrinking by k a round
# is better off padded up to 2x and recompiled once per halving than recompiled every n/16 points.
_POW2_MAX_BYTES = 1 << 22


def _pool_bucket(rows, n: int) -> int:
    """Rows the pool is padded to: the next power of two for pools up to ``_POW2_MAX_BYTES``
    (padded), :func:`_bucket` ``(n)`` above."""
    pow2 = 1 << max(n - 1, 0).bit_length()
    row_bytes = sum(x.dtype.itemsize * x.size for x in jax.tree_util.tree_leaves(rows)) / max(n, 1)
    return pow2 if row_bytes * pow2 <= _POW2_MAX_BYTES else _bucket(n)


def _pad_labeled(labeled_rows, n_lab: int):
    """Labeled rows zero-padded (zero rows add nothing to the Fisher sum) to a multiple of 256
    below 2,048 rows, to a size bucket above: a labeled set that grows by a few points per round
    compiles :func:`_labeled_gram` once per 256 points, not once per round."""
    return _pad_tree(labeled_rows, size=-(-n_lab // 256) * 256 if n_lab < 2048 else _bucket(n_lab))


@functools.partial(jax.jit, static_argnames=("chunk", "dtype"))
def _labeled_gram(labeled, *, chunk: int, dtype) -> _LabeledGram:
    return _LabeledGram(_prepare(labeled, chunk, dtype)[1]())


def _place(tree, sharding_of):
    """Every leaf laid out as ``sharding_of(ndim)`` (a no-op where it is already): ``device_put``
    on arrays, ``reshard`` on values traced with an explicitly sharded type."""
    def put(x):
        if isinstance(x, jax.core.Tracer):
            return jax.sharding.reshard(x, sharding_of(x.ndim))
        return jax.device_put(x, sharding_of(x.ndim))
    return jax.tree_util.tree_map(put, tree)


def _layouts(fn, pool_arg, pool, labeled_arg, labeled):
    """The example-axis layouts of the pool and labeled embeddings (concrete or traced with
    Explicit mesh axes; see :mod:`aljax._sharding`)."""
    def layout_of(arg, tree):
        if tree is None:
            return None
        return _sharding.row_layout(fn, arg, tree) or _sharding.traced_row_layout(fn, arg, tree)
    return layout_of(pool_arg, pool), layout_of(labeled_arg, labeled)


def _select(fn, rows, labeled_rows, k, lamb, oversample, layout=None, labeled_layout=None, labeled_arg="labeled_emb"):
    kernel, args, static = _plan(fn, rows, labeled_rows, k, lamb, oversample, layout, labeled_layout, labeled_arg)
    return kernel(*args, **static)


def fisher_greedy(pool_emb, k: int, *, labeled_emb=None, lamb: float = 1.0, oversample: float = 2.0) -> jax.Array:
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
    ``M⁻¹`` (``O(n·d²)``, a few times per run), so float32 follows float64; in the backward pass
    a point whose ``I − X M⁻¹ Xᵀ`` rounds to indefinite is kept. Memory is
    ``O(d² + n·r²)`` beyond the input (plus, for the forward steps, one copy of the features laid
    out as a single ``(D, n)`` matrix, so that each step is one large matmul). Everything from building ``F`` to the last pick runs in one
    ``jax.jit`` with ``lax.fori_loop``.

    On one device the pool is zero-padded to a size bucket (at most 1/8 more rows; its real size
    goes in traced) and the labeled points enter as their Fisher sum, computed first: an
    active-learning loop, whose pool shrinks and labeled set grows every round, compiles the
    selection once per pool bucket. The padding is never picked and changes no pick.

    Several devices: a pool whose leaves are sharded along the example axis with one
    ``NamedSharding(mesh, P(axes))`` runs under ``jax.shard_map``: each device builds its part of
    ``F`` (one ``psum`` of the ``d × d`` sums) and keeps its points' rows and blocks; per step the
    devices exchange only each shard's best ``(gain, index)`` (two all-gathers of one number per
    device), the picked point's factors (``r·C + D`` numbers; ``r·d`` for dense rows) and two maxima
    for the refresh test; the backward pass runs replicated on the ``⌈oversample·k⌉`` picks. The
    labeled embedding may be sharded the same way, replicated, or on one device (then copied to
    every device). The picks are those of one device, except where summing ``F`` in another order
    flips a near-tie between gains (relative gap ~1e-6 in float32). The pool size must be
    divisible by the number of shards (JAX builds no other sharded array); leaves sharded
    differently raise a ``ValueError``. Under a caller's ``jax.jit``, a mesh with Explicit axes
    is seen and used the same way; with Auto axes XLA partitions the one-device kernel itself.

    Args:
      pool_emb: the candidates: :class:`~aljax.FisherFactors` ``(probs (n, C), h (n, D))``, rows
        ``X_i = S_i ⊗ h_iᵀ`` with ``S_i = diag(√p_i)(I − 1p_iᵀ)`` (class-major columns, ``d = C·D``),
        or a dense ``(n, r, d)`` floating array of ``r`` rows per point.
      k: number of points to select, a Python int in ``[1, n]``.
      labeled_emb: the labeled points, of the same kind and trailing shape as ``pool_emb``, or
        None (an embedding with 0 points is the same as None).
      lamb: the damping ``λ > 0``.
      oversample: forward steps per selected point, ``>= 1`` (1: forward only).

    Returns:
      ``(k,)`` int32 indices into the pool, unique, in pick order (the backward pass only removes).
      Float32 inputs are computed in float32 with ``precision=HIGHEST`` matmuls; float64 inputs
      (with ``jax_enable_x64``) in float64. NaN/Inf checks run only on concrete inputs.

    Example:
      >>> import jax, aljax
      >>> probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (100, 3)))
      >>> h = jax.random.normal(jax.random.key(1), (100, 8))
      >>> aljax.fisher_greedy(aljax.FisherFactors(probs, h), 5).shape
      (5,)
    """
    fn = "fisher_greedy"
    layout, labeled_layout = _layouts(fn, "pool_emb", pool_emb, "labeled_emb", labeled_emb)
    rows = _as_rows(fn, "pool_emb", pool_emb)
    labeled_rows = None if labeled_emb is None else _as_rows(fn, "labeled_emb", labeled_emb, like=pool_emb)
    k = _validate.check_k(fn, k, _n_points(rows))
    lamb = _validate.check_positive(fn, "lamb", lamb)
    oversample = _check_oversample(fn, oversample)
    return _select(fn, rows, labeled_rows, k, lamb, oversample, layout, labeled_layout)


def _check_labeled_like_pool(fn: str, labeled, pool) -> int:
    """The number of labeled examples; their structure and trailing shapes must match the pool's."""
    pool_leaves, pool_tree = jax.tree_util.tree_flatten(pool)
    lab_leaves, lab_tree = jax.tree_util.tree_flatten(labeled)
    if lab_tree != pool_tree:
        raise ValueError(_validate.message(fn, "labeled", f"inputs with the pool's structure {pool_tree}",
                                           f"{lab_tree}"))
    sizes = set()
    for lab, ref in zip(lab_leaves, pool_leaves):
        shape = getattr(lab, "shape", None)
        if shape is None:
            raise TypeError(_validate.message(fn, "labeled", "an array or a pytree of arrays", type(lab).__name__))
        if len(shape) == 0 or tuple(shape[1:]) != tuple(ref.shape[1:]):
            raise ValueError(_validate.message(fn, "labeled", f"inputs of trailing shape {tuple(ref.shape[1:])} "
                                               "like the pool's", f"shape {tuple(shape)}"))
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise ValueError(_validate.message(fn, "labeled", "arrays sharing the leading (example) axis",
                                           f"leading sizes {sorted(sizes)}"))
    return sizes.pop()


def bait(params, apply_fn: Callable, pool, k: int, *, labeled=None, lamb: float = 1.0, oversample: float = 2.0,
         batch_size: int = 1024, features_fn: Callable | None = None, problem_type: str = "classification",
         key=None) -> jax.Array:
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
      labeled: the labeled inputs (same structure and trailing shapes as ``pool``) or None.
      lamb: the damping ``λ > 0``.
      oversample: forward steps per selected point, ``>= 1``.
      batch_size: rows per forward chunk.
      features_fn: optional ``features_fn(params, x) -> (batch, D)`` penultimate features.
      problem_type: ``"classification"`` or ``"regression"``.
      key: accepted for a uniform strategy signature and ignored (BAIT is deterministic).

    Returns:
      ``(k,)`` int32 indices into ``pool``, unique, in pick order.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jnp.ones((4, 16)) / 4, jnp.arange(48.0).reshape(16, 3) / 48
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> pool = jax.random.normal(jax.random.key(1), (200, 4))
      >>> aljax.bait((W1, W2), apply_fn, pool, k=10, labeled=pool[:5]).shape
      (10,)
    """
    fn = "bait"
    _validate.check_params(fn, params)
    k = _validate.check_k_for_pool(fn, k, pool)
    like, pool = _validate.peek_batches(fn, pool)
    lamb = _validate.check_positive(fn, "lamb", lamb)
    oversample = _check_oversample(fn, oversample)
    if problem_type not in ("classification", "regression"):
        raise ValueError(_validate.message(fn, "problem_type", "'classification' or 'regression'", repr(problem_type)))
    if key is not None:
        _validate.as_key(fn, key)
    n_lab = 0 if labeled is None else _check_labeled_like_pool(fn, labeled, like)
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
    layout, labeled_layout = _layouts(fn, "pool", h, "labeled", None if labeled_rows is None else labeled_rows.h)
    return _select(fn, rows, labeled_rows, k, lamb, oversample, layout, labeled_layout, labeled_arg="labeled")
