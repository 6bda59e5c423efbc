"""The backward pass of wide heads in the space of the forward picks' rows.

Stack the ``p`` forward picks' rows into ``X_S`` (``m × d``, ``m = p·r``). Every removal cost
``tr(H_j (I − G_j)⁻¹)`` reads the diagonal blocks of ``K = X_S A X_Sᵀ`` and
``L = X_S A F A X_Sᵀ``, and removing pick ``q`` (``A' = A + U_q W U_qᵀ``, ``U = A X_Sᵀ``,
``W = (I − K_qq)⁻¹``) changes them by terms of rank ``r`` built from their own column blocks:

    K' = K + K_q W K_qᵀ,
    L' = L + L_q W K_qᵀ + K_q W L_qᵀ + K_q W L_qq W K_qᵀ.

So once ``K`` and ``L`` are formed (two ``d × d`` by ``d × m`` products and two ``m × m``
ones), a step costs ``O(m²r)`` instead of the kernel's three products of the ``d × d`` matrices
``A`` and ``F`` with ``d × r`` blocks, which on a wide head are memory-bound reads of the whole
matrices. ``A`` itself is kept as ``a + P Pᵀ`` (``P``: each step's ``U_q W^½``, ``d × r``), so
that ``K`` and ``L`` can be recomputed exactly when the float32 drift guard fires (as
:func:`aljax._bait._kernel.refresh`) from ``U = U₀ + P (Pᵀ X_Sᵀ)``, ``U₀ = a X_Sᵀ``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._linalg import HIGHEST, inverse_factor, mm, sym
from ._blocks import block_norm, gains, kept_if_broken


def worth_it(n_picks: int, r: int, d: int) -> bool:
    """Whether the backward pass runs here: forming ``K``, ``L`` (``≈ 4·m·d²`` flops) costs less
    than the kernel's backward steps (``≈ 6·d²·r`` each, ``p/2`` of them at ``oversample = 2``)
    when ``2m <= d``; and a step's ``m × m`` reads are then a quarter of its three ``d × d`` ones."""
    return 2 * n_picks * r <= d


class _State(NamedTuple):
    pending: jax.Array    # P (d, n_remove·r): A = a + P Pᵀ
    k: jax.Array          # K = X_S A X_Sᵀ (m, m)
    l: jax.Array          # L = X_S A F A X_Sᵀ (m, m)
    drift: jax.Array      # Σ‖ΔH_j‖ since K, L were last exact (p,)
    removed: jax.Array    # (p,) bool


def _diagonal_blocks(mat, p, r):
    """The ``r × r`` diagonal blocks of ``mat (p·r, p·r)`` as ``(r, r, p)`` (points last)."""
    idx = jnp.arange(p)
    return mat.reshape(p, r, p, r)[idx, :, idx, :].transpose(1, 2, 0)


def exact(xs, u, fisher):
    """``K = X_S U`` and ``L = Uᵀ F U`` from ``U = A X_Sᵀ`` (``xs`` ``X_S (m, d)``). (``L`` as
    ``(Uᵀ F) U``: XLA:CPU ran ``Uᵀ F`` with the narrow operand first better than ``F U``.)"""
    return sym(mm(xs, u)), sym(mm(mm(u.T, fisher), u))


def current_u(s: _State, u0, xs):
    """``U = A X_Sᵀ = U₀ + P (Pᵀ X_Sᵀ)``."""
    return u0 + mm(s.pending, mm(s.pending.T, xs.T))


def remove(s: _State, q, t, u0, xs, r: int) -> _State:
    """``s`` after removing pick ``q`` at step ``t`` (``u0``: ``U₀ = a X_Sᵀ``; ``xs``: ``X_S``,
    ``r`` rows per pick): the rank-``r`` updates of ``K`` and ``L`` (module docstring), written as
    one product each, the drift of the diagonal blocks of ``L``, ``U_q W^½`` appended to ``P``, and
    ``q`` marked removed."""
    p = s.removed.shape[0]
    kq = jax.lax.dynamic_slice_in_dim(s.k, q * r, r, axis=1)                       # (m, r)
    lq = jax.lax.dynamic_slice_in_dim(s.l, q * r, r, axis=1)
    w_half = inverse_factor(jnp.eye(r, dtype=s.k.dtype) - jax.lax.dynamic_slice_in_dim(kq, q * r, r, axis=0))
    w = mm(w_half, w_half.T)
    lqq = jax.lax.dynamic_slice_in_dim(lq, q * r, r, axis=0)
    kw = mm(kq, w)
    # ΔL = L_q W K_qᵀ + K_q W L_qᵀ + K_q W L_qq W K_qᵀ = [L_q W, K_q W] [K_q, L_q + K_q W L_qq]ᵀ
    left = jnp.concatenate([mm(lq, w), kw], axis=1)
    right = jnp.concatenate([kq, lq + mm(kw, lqq)], axis=1)
    dl_blocks = jnp.einsum("pai,pbi->abp", left.reshape(p, r, 2 * r), right.reshape(p, r, 2 * r),
                           precision=HIGHEST)
    xq = jax.lax.dynamic_slice_in_dim(xs, q * r, r, axis=0)                        # (r, d)
    uq = jax.lax.dynamic_slice_in_dim(u0, q * r, r, axis=1) + mm(s.pending, mm(s.pending.T, xq.T))
    pending = jax.lax.dynamic_update_slice_in_dim(s.pending, mm(uq, w_half), t * r, axis=1)
    return _State(pending, s.k + mm(kw, kq.T), s.l + mm(left, right.T), s.drift + block_norm(dl_blocks),
                  s.removed.at[q].set(True))


def start(x, times_a, fisher, n_remove: int):
    """``U₀ = a X_Sᵀ``, ``X_S`` and the exact state of the picks' rows ``x (p, r, d)`` under
    ``A = a`` (nothing removed, room for ``n_remove`` removals in ``P``); ``times_a(v) = a v``."""
    p, r, d = x.shape
    xs = x.reshape(p * r, d)
    u0 = times_a(xs.T)
    state = _State(jnp.zeros((d, n_remove * r), fisher.dtype), *exact(xs, u0, fisher), jnp.zeros(p, fisher.dtype),
                   jnp.zeros(p, bool))
    return u0, xs, state


def backward(x, times_a, fisher, n_remove: int, tol: float):
    """Remove ``n_remove`` of the picks whose rows are ``x (p, r, d)`` (in pick order), from
    ``A`` after the forward pass (``times_a(v) = A v``) and ``F``: each step removes the live pick of least
    removal cost (the earliest on a tie; a pick whose ``I − G_j`` rounds to indefinite is kept,
    :func:`aljax._bait._blocks.kept_if_broken`). ``tol``: the drift guard's tolerance (as in
    :func:`aljax._bait._kernel.refresh`: ``K`` and ``L`` recomputed from ``U``). Returns the
    ``(p,)`` mask of removed picks."""
    p, r, d = x.shape
    eps = jnp.finfo(fisher.dtype).eps
    u0, xs, state = start(x, times_a, fisher, n_remove)

    def costs(k, l):
        return gains(_diagonal_blocks(k, p, r), _diagonal_blocks(l, p, r), -1.0)

    def step(t, s: _State) -> _State:
        cost = costs(s.k, s.l)
        scale = jnp.max(jnp.where(s.removed, 0, jnp.abs(cost)))
        stale = eps * jnp.max(jnp.where(s.removed, 0, s.drift)) > tol * scale

        def rebuilt(_):
            k, l = exact(xs, current_u(s, u0, xs), fisher)
            return s._replace(k=k, l=l, drift=jnp.zeros_like(s.drift)), costs(k, l)

        s, cost = jax.lax.cond(stale, rebuilt, lambda _: (s, cost), None)
        return remove(s, jnp.argmin(jnp.where(s.removed, jnp.inf, kept_if_broken(cost))), t, u0, xs, r)

    return jax.lax.fori_loop(0, n_remove, step, state).removed
