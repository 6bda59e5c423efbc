"""Lazy Woodbury updates of ``A = M⁻¹`` for BAIT's greedy passes (:mod:`aljax._bait._kernel`).

A step that adds (``σ = +1``) or removes (``σ = −1``) the rows ``X_p`` updates
``A' = A − σ U K Uᵀ`` (``U = A X_pᵀ``, ``K = (I + σ G_p)⁻¹ = L Lᵀ``). Instead of rewriting the
``d × d`` matrix every step, ``A`` is held as ``a − σ P Pᵀ`` with the steps' columns ``U L`` in
``P`` (:class:`LazyA`), folded into ``a`` every ``LAZY_STEPS`` steps (:func:`lazy_loop`) or, for a
wide head without a labeled set, never.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._linalg import inverse_factor, mm, sym

# Woodbury updates of A = M⁻¹ are collected over this many steps and applied by one matmul.
LAZY_STEPS = 8
# A wide step's products with d × d matrices (F U, and A's) have as many columns as the point has rows, and
# XLA:CPU's kernels for such skinny products handle 1 to 4, 8 and 16 columns best: 5 to 15 columns took about as
# long as the next multiple of 8 or longer (d = 6,912). So rows 5 to 15 are padded with zero columns to it.
PAD_COLUMNS = 8
PAD_MIN_DIM = 1024


class LazyA(NamedTuple):
    """``A = a − σ P Pᵀ`` (``pending`` ``P``, ``(d, m)``; see :func:`lazy_loop`), formed only when
    asked: products with it take the low-rank term apart. ``a``: ``(d, d)``, or a scalar for
    ``a·I`` (the forward pass of a wide head without a labeled set:
    :func:`aljax._bait._kernel.implicit_a`).
    ``pending_t``: None, or ``Pᵀ`` kept in its own layout, as the implicit ``A``'s wide ``P`` is:
    XLA:CPU reads a large matrix transposed (``Pᵀ x``) far less efficiently than in its own layout."""

    a: jax.Array
    pending: jax.Array
    sign: Any
    pending_t: Any = None

    def transposed(self):
        """``Pᵀ``: ``pending_t`` where it is kept, else ``pending`` transposed."""
        return self.pending.T if self.pending_t is None else self.pending_t

    def times(self, x):
        """``A x``."""
        base = self.a * x if self.a.ndim == 0 else mm(self.a, x)
        return base - self.sign * mm(self.pending, mm(self.transposed(), x))

    def full(self):
        """``A`` itself (a ``d × d`` pass)."""
        a = self.a * jnp.eye(self.pending.shape[0], dtype=self.pending.dtype) if self.a.ndim == 0 else self.a
        return a - self.sign * mm(self.pending, self.transposed())


def woodbury_directions(a, fisher, xp, sign, pending, pending_t=None):
    """For the picked rows ``X_p``: the directions ``[U L, Z̃]`` of the block corrections
    (:func:`aljax._bait._blocks.correct`) and ``U L``, the columns that update ``A``:
    ``A' = A − σ (U L)(U L)ᵀ``.

    ``A`` is held as ``a − σ P Pᵀ`` (``pending``, ``(d, m)``, and ``pending_t``; see :class:`LazyA`)."""
    times_a = LazyA(a, pending, sign, pending_t).times
    r, d = xp.shape
    pad = (-r) % PAD_COLUMNS if d >= PAD_MIN_DIM and PAD_COLUMNS // 2 < r < 2 * PAD_COLUMNS else 0
    u = times_a(jnp.pad(xp.T, ((0, 0), (0, pad))))     # U = A X_pᵀ            (d, r + pad)
    fu = mm(fisher, u)
    z = times_a(fu)[:, :r]                             # Z = A F A X_pᵀ        (d, r)
    u, fu = u[:, :r], fu[:, :r]
    g_p = sym(mm(xp, u))                               # G_p = X_p A X_pᵀ
    h_p = sym(mm(u.T, fu))                             # H_p = X_p A F A X_pᵀ
    # K = (I + σG_p)⁻¹ = L Lᵀ.
    l_fac = inverse_factor(jnp.eye(r, dtype=a.dtype) + sign * g_p)        # r × r
    ul, zl = mm(u, l_fac), mm(z, l_fac)
    h_tilde = sym(mm(mm(l_fac.T, h_p), l_fac))                           # Lᵀ H_p L
    z_tilde = zl - 0.5 * sign * mm(ul, h_tilde)
    return jnp.concatenate([ul, z_tilde], axis=1), ul


def lazy_loop(n_steps, step, state, sign, flush_every=True):
    """``lax.fori_loop(0, n_steps, step, state)`` for a NamedTuple ``state`` with fields ``a`` and
    ``pending``, ``A = a − σ P Pᵀ``, ``P`` the ``(d, LAZY_STEPS·r)`` pending columns (zeros where
    unused): each step appends its ``U L`` at columns ``(t mod LAZY_STEPS)·r`` (:func:`append`),
    and after every ``LAZY_STEPS`` steps one matmul folds ``P`` into ``a``. A step then reads ``A``
    twice instead of four times (an eager update is a read-modify-write pass over ``d × d``): in a
    step that is memory-bound, that is most of the ``O(d²)`` cost. Returns the state with
    ``pending`` folded in (zeros). ``flush_every=False``: ``P`` has room for every step and is
    never folded in (:func:`aljax._bait._kernel.implicit_a`)."""
    if not flush_every:
        return jax.lax.fori_loop(0, n_steps, step, state)

    def flush(state):
        return state._replace(a=state.a - sign * mm(state.pending, state.pending.T),
                              pending=jnp.zeros_like(state.pending))

    def block(j, state):
        stop = jnp.minimum((j + 1) * LAZY_STEPS, n_steps)
        return flush(jax.lax.fori_loop(j * LAZY_STEPS, stop, step, state))

    return jax.lax.fori_loop(0, -(-n_steps // LAZY_STEPS), block, state)


def append(pending, t, ul, transposed=False):
    """Columns ``U L`` of step ``t`` into block ``t mod LAZY_STEPS`` of ``P`` (:func:`lazy_loop`),
    or block ``t`` where ``P`` has one for every step; ``transposed``: rows ``(U L)ᵀ`` into ``Pᵀ``."""
    r = ul.shape[1]
    if transposed:
        return jax.lax.dynamic_update_slice(pending, ul.T, ((t % (pending.shape[0] // r)) * r, 0))
    return jax.lax.dynamic_update_slice(pending, ul, (0, (t % (pending.shape[1] // r)) * r))
