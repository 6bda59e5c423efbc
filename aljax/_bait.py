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
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate
from ._embeddings import logits_and_features
from ._types import FisherFactors

_HIGHEST = jax.lax.Precision.HIGHEST
# Chunks of the pool axis are sized so that one chunk's largest temporary holds about this many
# numbers: small enough to stay in cache, large enough for efficient matmuls.
_CHUNK_ELEMENTS = 1 << 21
_UNROLL_MAX_RANK = 16


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


def _quad(rows, mat):
    """``X_i B X_iᵀ`` for every point of one chunk, ``B`` symmetric ``(d, d)`` -> ``(r, r, b)``."""
    if "s" in rows:
        s, ht = rows["s"], rows["ht"]
        c, dim = s.shape[1], ht.shape[0]
        # Q[c, c', n] = h_nᵀ B[c-block, c'-block] h_n, upper blocks only (B is symmetric).
        q = [[None] * c for _ in range(c)]
        for ci in range(c):
            # Σ_e B[(cj, f), (ci, e)] h_n[e] for cj >= ci, then · h_n[f] summed over f.
            t = _mm(mat[ci * dim:(ci + 1) * dim, ci * dim:].T, ht).reshape(c - ci, dim, -1)
            blocks = jnp.sum(t * ht[None], axis=1)
            for cj in range(ci, c):
                q[ci][cj] = q[cj][ci] = blocks[cj - ci]
        q = jnp.stack([jnp.stack(row) for row in q])                        # (C, C, b)
        return _bmm(_bmm(s, q), _bt(s))                                     # (r, r, b) = S Q Sᵀ
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


def _gram_kron(w, z, h, b, dtype):
    """``Σ_i (diag w_i − z_i z_iᵀ) ⊗ h_i h_iᵀ`` as ``blockdiag_c(Hᵀ diag(w_c) H) − ZᵀZ`` with rows
    ``Z_i = z_i ⊗ h_i``, accumulated over chunks of ``b`` points. ``z`` may be None (then 0)."""
    n, c = w.shape
    dim = h.shape[1]
    nc = -(-n // b)
    ht = _pad_chunks(h.astype(dtype), nc * b).reshape(nc, b, dim)
    wt = _pad_chunks(w.astype(dtype), nc * b).reshape(nc, b, c)
    zt = None if z is None else _pad_chunks(z.astype(dtype), nc * b).reshape(nc, b, c)

    def body(j, acc):
        diag, zz = acc
        hj, wj = ht[j], wt[j]
        diag = diag + jnp.einsum("nc,nd,ne->cde", wj, hj, hj, precision=_HIGHEST)
        if zt is not None:
            zh = (zt[j][:, :, None] * hj[:, None, :]).reshape(b, c * dim)
            zz = zz + _mm(zh.T, zh)
        return diag, zz

    zeros_zz = jnp.zeros((c * dim, c * dim) if zt is not None else (), dtype)
    diag, zz = jax.lax.fori_loop(0, nc, body, (jnp.zeros((c, dim, dim), dtype), zeros_zz))
    eye = jnp.eye(c, dtype=dtype)
    block = (eye[:, None, :, None] * diag[:, :, None, :]).reshape(c * dim, c * dim)
    return block - zz if zt is not None else block


def _gram_dense(x, b, dtype):
    """``Σ_i X_iᵀX_i`` accumulated over chunks of ``b`` points."""
    n, r, d = x.shape
    nc = -(-n // b)
    xt = _pad_chunks(x.astype(dtype), nc * b).reshape(nc, b * r, d)
    return jax.lax.fori_loop(0, nc, lambda j, acc: acc + _mm(xt[j].T, xt[j]), jnp.zeros((d, d), dtype))


# ---------------------------------------------------------------------------------------------
# Small symmetric positive definite systems, batched on the last axis.


def _spd_inverse(a):
    """Inverse of SPD ``a (r, r, n)`` (batch last) by Gauss–Jordan without pivoting (stable for
    SPD: every pivot is a Schur complement, hence positive)."""
    r = a.shape[0]
    if r > _UNROLL_MAX_RANK:
        return jnp.moveaxis(jnp.linalg.inv(jnp.moveaxis(a, -1, 0)), 0, -1)
    for k in range(r):
        piv = a[k, k]
        row = (a[k] / piv).at[k].set(1 / piv)
        col = a[:, k]
        a = a - col[:, None, :] * row[None, :, :]
        a = a.at[:, k].set(-col / piv).at[k].set(row)
    return a


def _gains(g, h, sign):
    """``tr(H (I + σG)⁻¹)`` per point: ``g, h (r, r, b)`` -> ``(b,)``."""
    r = g.shape[0]
    eye = jnp.eye(r, dtype=g.dtype)[:, :, None]
    inv = _spd_inverse(eye + sign * g)
    return jnp.sum(inv * h, axis=(0, 1))


def _sym(m):
    return 0.5 * (m + m.T)


# ---------------------------------------------------------------------------------------------
# The kernel.


def _prepare(emb, b, dtype):
    """Chunked rows (for the blocks) and the inputs of the Fisher sum of one embedding."""
    if isinstance(emb, _KronRows):
        rows = _chunk_kron(emb.s.astype(dtype), emb.h.astype(dtype), b)
        return rows, functools.partial(_gram_kron, emb.w, emb.z, emb.h, b, dtype)
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
        return jax.lax.map(lambda r: _quad(r, a0), rows)
    if "s" in rows:  # A₀ = I/λ:  G_i = S_i S_iᵀ ‖h_i‖² / λ
        s, ht = rows["s"], rows["ht"]
        ss = jax.vmap(lambda sc: _bmm(sc, _bt(sc)))(s)
        return ss * (jnp.sum(ht * ht, axis=1) / lamb)[:, None, None, :]
    x = rows["x"]
    return jnp.einsum("knae,knbe->kabn", x, x, precision=_HIGHEST) / lamb


def _woodbury_directions(a, fisher, xp, sign):
    """For the picked rows ``X_p``: ``U L``, ``Z̃`` (see ``_update_chunk``) and the new ``A``."""
    u = _mm(a, xp.T)                                   # U = A X_pᵀ            (d, r)
    fu = _mm(fisher, u)
    z = _mm(a, fu)                                     # Z = A F A X_pᵀ        (d, r)
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
    a = a - sign * _mm(ul, ul.T)                       # A' = A − σ U K Uᵀ
    return jnp.concatenate([ul, z_tilde], axis=1), a


def _update_chunk(rows, g, h, directions, sign):
    """Rank-r corrections of one chunk's blocks, then its gains under the new ``A``.

    With ``W̃ = X_i U L`` and ``Q̃ = X_i Z̃``, ``Z̃ = Z L − (σ/2) U L (Lᵀ H_p L)``:
        G_i' = G_i − σ W̃ W̃ᵀ,       H_i' = H_i − σ (W̃ Q̃ᵀ + Q̃ W̃ᵀ).
    """
    r = g.shape[0]
    wq = _apply(rows, directions)                       # (r, 2r, b)
    w, q = wq[:, :r], wq[:, r:]
    g = g - sign * _bmm(w, _bt(w))
    wq_t = _bmm(w, _bt(q))
    h = h - sign * (wq_t + _bt(wq_t))
    return g, h


def _forward_backward(pool, labeled, lamb, k, n_forward, chunk):
    dtype = jnp.result_type(jnp.float32, *jax.tree_util.tree_leaves((pool, labeled)))
    n = _n_points(pool)
    n_lab = 0 if labeled is None else _n_points(labeled)
    lamb = jnp.asarray(lamb, dtype)

    rows, gram_pool = _prepare(pool, chunk, dtype)
    gram = gram_pool()
    if labeled is not None:
        _, gram_lab = _prepare(labeled, chunk, dtype)
        gram_l = gram_lab()
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
    rows = _scale_rows(rows, jnp.sqrt(jnp.asarray(k / (n_lab + k), dtype)))
    g = _initial_g(rows, a, lamb, labeled is not None)
    h = jax.lax.map(lambda r: _quad(r, b_mat), rows)
    nc, b = _counts(rows)
    valid = (jnp.arange(nc * b) < n).reshape(nc, b)
    gains = jax.vmap(lambda gi, hi: _gains(gi, hi, 1.0))(g, h)

    def forward(t, state):
        a, g, h, gains, taken, picks = state
        p = jnp.argmax(jnp.where(taken, -jnp.inf, gains).reshape(-1)).astype(jnp.int32)
        directions, a = _woodbury_directions(a, fisher, _row(rows, p), 1.0)

        def chunk_step(args):
            r_, g_, h_ = args
            g_, h_ = _update_chunk(r_, g_, h_, directions, 1.0)
            return g_, h_, _gains(g_, h_, 1.0)

        g, h, gains = jax.vmap(chunk_step)((rows, g, h))
        taken = taken.reshape(-1).at[p].set(True).reshape(nc, b)
        return a, g, h, gains, taken, picks.at[t].set(p)

    state = (a, g, h, gains, ~valid, jnp.zeros(n_forward, jnp.int32))
    a, g, h, _, _, picks = jax.lax.fori_loop(0, n_forward, forward, state)
    if n_forward == k:
        return picks

    # Backward: the picked points only, as one chunk of n_forward points.
    sub = _gather(rows, picks)
    sub_chunk = {key: v[0] for key, v in sub.items()}
    ci, pi = picks // b, picks % b
    g_sub = g[ci, :, :, pi].transpose(1, 2, 0)
    h_sub = h[ci, :, :, pi].transpose(1, 2, 0)

    def backward(t, state):
        a, g, h, removed = state
        # Removing j changes the objective by + tr(H_j (I − G_j)⁻¹) ≥ 0: drop the cheapest.
        cost = _gains(g, h, -1.0)
        q = jnp.argmin(jnp.where(removed, jnp.inf, cost)).astype(jnp.int32)
        directions, a = _woodbury_directions(a, fisher, _row(sub, q), -1.0)
        g, h = _update_chunk(sub_chunk, g, h, directions, -1.0)
        return a, g, h, removed.at[q].set(True)

    state = (a, g_sub, h_sub, jnp.zeros(n_forward, bool))
    _, _, _, removed = jax.lax.fori_loop(0, n_forward - k, backward, state)
    return picks[jnp.nonzero(~removed, size=k)[0]]


_kernel = jax.jit(_forward_backward, static_argnames=("k", "n_forward", "chunk"))


@jax.tree_util.register_pytree_node_class
class _KronRows:
    """Per-point rows ``X_i = S_i ⊗ h_iᵀ`` with ``S_iᵀS_i = diag(w_i) − z_i z_iᵀ`` (``z`` may be
    None): ``s (n, r, C)``, ``h (n, D)``, ``w (n, C)``, ``z (n, C)``."""

    def __init__(self, s, h, w, z):
        self.s, self.h, self.w, self.z = s, h, w, z

    def tree_flatten(self):
        return (self.s, self.h, self.w, self.z), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def _from_fisher_factors(emb: FisherFactors) -> _KronRows:
    return _KronRows(emb.s_factor(), emb.h, emb.probs, emb.probs)
