"""The dense kernel: the procedure over one chunk with ``A⁻¹`` held as a ``d × d`` matrix.

It never forms a ``d × d`` product per point: ``tr(S A⁻¹)`` (``S`` the unnormalised covariance
sum) is carried as a scalar, raised by ``tr M_i`` when point ``i`` joins ``S`` and lowered by
``tr(K Wᵀ S W)`` on a keep, and recomputed exactly, as ``Σ S ⊙ A⁻¹``, at the start of every
chunk. Per chunk, ``X A⁻¹`` and ``S += XᵀX`` are one matrix product each (BLAS-3); between
keeps ``A⁻¹`` is fixed, so the scores, the running trace (a cumulative sum) and the keep
probabilities of all the chunk's remaining points are computed at once, and the next keep is
the first point whose draw falls below its probability. The points kept within a chunk enter
through a small Woodbury block; a keep costs one ``O(d²r)`` product, ``S Wᵀ`` for the trace, and
``A⁻¹`` itself is updated once per chunk, in place (the state is donated), with all of the
chunk's keeps at once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._linalg import HIGHEST, mm, sym
from ._rows import dense_rows
from ._rule import first_keep, target_rate

# Keeps held in Woodbury form within a chunk before they are folded into G = X A⁻¹: each point's
# score then costs O(BUFFER²r²) on top of its row of G.
BUFFER = 16
# Keeps per block of the end-of-chunk update of A⁻¹ (one rank-MERGE·r product per block).
MERGE = 64


class DenseState(NamedTuple):
    """The stream's state between chunks.

    Attributes:
      ainv: ``A⁻¹``, ``(d, d)``.
      cov: the covariance sum ``S`` (running covariance) or the fixed ``Σ̂``, ``(d, d)``.
      count: points in ``S`` (labeled included).
      pos: global position of the next chunk's first point.
      kept: points kept so far.
      picks: ``(budget,)`` kept positions in stream order (budget form; ``None`` with a rate).
    """

    ainv: jax.Array
    cov: jax.Array
    count: jax.Array
    pos: jax.Array
    kept: jax.Array
    picks: jax.Array | None


class _Chunk(NamedTuple):
    """What one kernel call reads and never changes: the chunk's rows and the call's options."""

    x: jax.Array  # (size, r, d) rows, zero beyond n_valid
    xf: jax.Array  # (size·r, d) the same rows, flat
    uniforms: jax.Array  # (size,) the draws
    n_valid: jax.Array
    target: jax.Array  # N (budget form) or the rate
    entry: DenseState  # the state at the start of the call
    rank: int
    running: bool
    budget: int | None

    @property
    def size(self) -> int:
        return self.x.shape[0]

    @property
    def width(self) -> int:  # rows held in the Woodbury buffer
        return BUFFER * self.rank


class _Base(NamedTuple):
    """``G = X A_f⁻¹`` (``A_f`` the ``A`` at the last fold) and the blocks ``U_j A_f⁻¹ U_jᵀ``."""

    g: jax.Array  # (size·r, d)
    m0: jax.Array  # (size, r, r)


class _Carry(NamedTuple):
    """The loop state within a chunk."""

    trace: jax.Array  # tr(S A⁻¹) at point j (running) or tr(Σ̂ A⁻¹)
    kept: jax.Array
    mask: jax.Array  # (size,) kept points of the chunk
    j: jax.Array  # the next point to look at (a keep, when found)
    found: jax.Array
    big_l: jax.Array  # L = (I + V A_f⁻¹ Vᵀ)⁻¹, (width, width)
    p: jax.Array  # P = V A_f⁻¹ Xᵀ, (width, size·r)
    slots: jax.Array  # (BUFFER,) chunk positions of the buffered keeps
    m: jax.Array  # buffered keeps
    w: jax.Array  # (stored, r, d) W_j = (A⁻¹U_jᵀ)ᵀ of each keep of the chunk
    k: jax.Array  # (stored, r, r) K_j = (I + M_j)⁻¹ of each keep of the chunk
    picks: jax.Array | None


@functools.partial(jax.jit, static_argnames=("d", "dtype", "budget"))
def initial_state(seed, covariance, lamb, n_labeled, *, d: int, dtype, budget: int | None) -> DenseState:
    """The state before the stream: ``A₀⁻¹ = (λI + S_L)⁻¹`` (Cholesky), the covariance sum ``S_L``
    (or a copy of the fixed ``Σ̂``: the state is donated to the kernel)."""
    eye = jnp.eye(d, dtype=dtype)
    seed = jnp.zeros((d, d), dtype) if seed is None else seed
    ainv = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(lamb * eye + seed), eye)
    return DenseState(ainv=sym(ainv), cov=seed if covariance is None else jnp.copy(covariance.astype(dtype)),
                      count=jnp.asarray(n_labeled, jnp.int32), pos=jnp.int32(0), kept=jnp.int32(0),
                      picks=None if budget is None else jnp.zeros((budget,), jnp.int32))


@functools.partial(jax.jit, static_argnames=("rank", "running", "budget"), donate_argnums=(0,))
def chunk(state: DenseState, emb_chunk, uniforms, n_valid, target, start, *, rank: int, running: bool,
          budget: int | None) -> tuple[DenseState, jax.Array]:
    """Run the procedure over the points ``start … n_valid − 1`` of one chunk (``start > 0`` only
    with a fixed covariance: the span kernel hands over to this one mid-chunk).

    ``target`` is the stream length ``N`` (budget form) or the rate. Returns the new state and
    the chunk's keep mask. ``state`` is donated, so ``A⁻¹`` and ``S`` are updated in place.

    Blocked: ``G = X A_f⁻¹`` for the whole chunk is one matrix product (``A_f`` the ``A`` at the
    last fold, the chunk start at first). The points kept since then, ``V`` (``m·r`` rows, at
    most :data:`BUFFER` points), enter through Woodbury: ``A⁻¹ = A_f⁻¹ − A_f⁻¹Vᵀ L V A_f⁻¹`` with
    ``L = (I + V A_f⁻¹ Vᵀ)⁻¹``, so ``M_j = U_j A_f⁻¹ U_jᵀ − P_jᵀ L P_j`` with
    ``P_j = V A_f⁻¹ U_jᵀ``: ``O(m²r²)`` per point. ``L`` grows by a Schur step on each keep (its
    Schur complement is ``I + M_j``); a full buffer is folded into ``G`` only (``A_f ← A``).

    ``A⁻¹`` itself is touched once per chunk: each keep stores ``W_j = (A⁻¹U_jᵀ)ᵀ`` (under the
    ``A`` of its time) and ``K_j = (I + M_j)⁻¹``, and at the end of the chunk the sequential
    Woodbury steps are applied together, ``A⁻¹ ← A⁻¹ − Σ_j W_jᵀ K_j W_j`` (:func:`_apply_keeps`).
    Per keep the only ``O(d²)`` work is ``S W_jᵀ`` for the trace.
    """
    dtype = state.ainv.dtype
    x = dense_rows(emb_chunk, rank, dtype)
    size, _, d = x.shape
    x = jnp.where((jnp.arange(size) < n_valid)[:, None, None], x, 0)
    ch = _Chunk(x=x, xf=x.reshape(size * rank, d), uniforms=uniforms.astype(dtype), n_valid=n_valid,
                target=target, entry=state, rank=rank, running=running, budget=budget)
    g = mm(ch.xf, state.ainv)
    base = _Base(g, _diag_blocks(ch, g))
    carry = _find_next_keep(ch, base, _start(ch, start))
    # While a keep is pending: fold the buffer into G (nothing to fold the first time: G is
    # unchanged) and keep until the buffer is full again or no keep is left.
    _, carry = jax.lax.while_loop(lambda bc: bc[1].found, lambda bc: _fold_and_fill(ch, *bc), (base, carry))
    return _finish(ch, carry), carry.mask


def _start(ch: _Chunk, start) -> _Carry:
    """The loop state at chunk position ``start``, nothing kept yet in this chunk."""
    dtype, state = ch.x.dtype, ch.entry
    merge = min(MERGE, ch.size)
    stored = -(-ch.size // merge) * merge  # room for every point of the chunk, a whole number of blocks
    return _Carry(trace=jnp.sum(state.cov * state.ainv), kept=state.kept, mask=jnp.zeros(ch.size, bool),
                  j=jnp.asarray(start, jnp.int32), found=jnp.asarray(False),
                  big_l=jnp.zeros((ch.width, ch.width), dtype), p=jnp.zeros((ch.width, ch.size * ch.rank), dtype),
                  slots=jnp.zeros(BUFFER, jnp.int32), m=jnp.int32(0),
                  w=jnp.zeros((stored, ch.rank, ch.x.shape[2]), dtype),
                  k=jnp.zeros((stored, ch.rank, ch.rank), dtype), picks=state.picks)


def _diag_blocks(ch: _Chunk, g) -> jax.Array:
    """``U_j A_f⁻¹ U_jᵀ`` for every point ``j``, ``(size, r, r)``."""
    return jnp.einsum("jad,jbd->jab", g.reshape(ch.size, ch.rank, -1), ch.x, precision=HIGHEST)


def _kept_rows(ch: _Chunk, base: _Base, c: _Carry) -> jax.Array:
    """``A_f⁻¹Vᵀ`` as rows, ``(width, d)``; unused slots hold row 0 (``L`` is 0 there)."""
    rows = (c.slots[:, None] * ch.rank + jnp.arange(ch.rank)[None, :]).reshape(-1)
    return base.g[rows]


def _fold(ch: _Chunk, base: _Base, c: _Carry) -> tuple[_Base, _Carry]:
    """``G = X A⁻¹ = G − Pᵀ L Gᵥ``; then ``A_f ← A`` and the buffer is empty."""
    g = base.g - mm(c.p.T, mm(c.big_l, _kept_rows(ch, base, c)))
    dtype = g.dtype
    c = c._replace(big_l=jnp.zeros((ch.width, ch.width), dtype), p=jnp.zeros((ch.width, ch.size * ch.rank), dtype),
                   slots=jnp.zeros(BUFFER, jnp.int32), m=jnp.int32(0))
    return _Base(g, _diag_blocks(ch, g)), c


def _fold_and_fill(ch: _Chunk, base: _Base, c: _Carry) -> tuple[_Base, _Carry]:
    base, c = _fold(ch, base, c)
    # Keep until the buffer is full or no keep is left. No branches in the loop body, and A⁻¹, S
    # and G are only read there (only small arrays and the stored W rows change).
    c = jax.lax.while_loop(lambda c: c.found & (c.m < BUFFER),
                           lambda c: _find_next_keep(ch, base, _keep_point(ch, base, c)), c)
    return base, c


def _point(ch: _Chunk, base: _Base, c: _Carry):
    """``(A_f⁻¹U_jᵀ)ᵀ``, ``L P_j`` and ``M_j`` of point ``j = c.j`` under the current ``A``."""
    rank = ch.rank
    g_j = jax.lax.dynamic_slice_in_dim(base.g, c.j * rank, rank)  # (r, d)
    p_j = jax.lax.dynamic_slice_in_dim(c.p, c.j * rank, rank, axis=1)  # (width, r)
    l_p = mm(c.big_l, p_j)
    return g_j, l_p, sym(base.m0[c.j] - mm(p_j.T, l_p))


def _keep_point(ch: _Chunk, base: _Base, c: _Carry) -> _Carry:
    """Keep point ``c.j``: the trace, a Schur step on ``L``, ``P``, the stored ``W_j``/``K_j``."""
    j, rank = c.j, ch.rank
    g_j, l_p, m = _point(ch, base, c)
    w = g_j - mm(l_p.T, _kept_rows(ch, base, c))  # (r, d) = (A⁻¹U_jᵀ)ᵀ
    inner = sym(jnp.linalg.inv(jnp.eye(rank, dtype=m.dtype) + m))  # K = (I + M_j)⁻¹
    s_w = mm(w, ch.entry.cov)  # (S₀ W)ᵀ
    if ch.running:  # S also holds this chunk's points up to j
        point_of_row = jnp.arange(ch.size * rank) // rank
        proj = jnp.where((point_of_row <= j)[:, None], mm(ch.xf, w.T), 0)
        s_w = s_w + mm(proj.T, ch.xf)
    trace = c.trace - jnp.trace(mm(inner, mm(s_w, w.T)))  # tr(S A'⁻¹) = tr(S A⁻¹) − tr(K WᵀSW)
    # Schur step: L' = L + z K zᵀ with z = [−L P_j; I] (new slot m).
    z = jax.lax.dynamic_update_slice_in_dim(-l_p, jnp.eye(rank, dtype=m.dtype), c.m * rank, 0)
    big_l = c.big_l + mm(z, mm(inner, z.T))
    p = jax.lax.dynamic_update_slice_in_dim(c.p, mm(ch.xf, g_j.T).T, c.m * rank, 0)
    n = c.kept - ch.entry.kept  # keeps so far in this chunk
    picks = c.picks if ch.budget is None else c.picks.at[c.kept].set(ch.entry.pos + j)
    return c._replace(trace=trace, big_l=sym(big_l), p=p, slots=c.slots.at[c.m].set(j), m=c.m + 1,
                      kept=c.kept + 1, mask=c.mask.at[j].set(True), j=j + 1,
                      w=jax.lax.dynamic_update_index_in_dim(c.w, w, n, 0),
                      k=jax.lax.dynamic_update_index_in_dim(c.k, inner, n, 0), picks=picks)


def _find_next_keep(ch: _Chunk, base: _Base, c: _Carry) -> _Carry:
    """All points from ``c.j`` on, under the current ``A`` at once (``A`` changes only on keeps):
    scores, the running trace (a cumulative sum), keep probabilities; the first keep becomes
    ``c.j`` (``n_valid`` and ``found = False`` when there is none)."""
    size, rank, dtype = ch.size, ch.rank, ch.x.dtype
    positions = jnp.arange(size)
    p_all = c.p.reshape(ch.width, size, rank)
    l_p = jnp.einsum("ab,bjr->ajr", c.big_l, p_all, precision=HIGHEST)
    m_all = sym(base.m0 - jnp.einsum("ajr,ajs->jrs", p_all, l_p, precision=HIGHEST))
    scores = jnp.abs(m_all[:, 0, 0]) if rank == 1 else jnp.abs(jnp.linalg.det(m_all))
    active = (positions >= c.j) & (positions < ch.n_valid)
    if ch.running:
        trace = c.trace + jnp.cumsum(jnp.where(active, jnp.trace(m_all, axis1=1, axis2=2), 0))
        count = (ch.entry.count + positions + 1).astype(dtype)
    else:
        trace = jnp.broadcast_to(c.trace, (size,))
        count = jnp.ones((size,), dtype)
    rate = target_rate(ch.budget, c.kept, ch.target, ch.entry.pos, positions, dtype)
    found, j = first_keep(scores, trace / count, rate, ch.uniforms, active, ch.n_valid)  # trace/count: tr(Σ̂ A⁻¹)
    return c._replace(j=j, found=found, trace=trace[jnp.where(found, j, size - 1)])


def _apply_keeps(ch: _Chunk, c: _Carry) -> jax.Array:
    """``A⁻¹ − Σ_j W_jᵀ K_j W_j`` over the chunk's keeps, in blocks of :data:`MERGE` keeps."""
    merge = min(MERGE, ch.size)
    d = ch.x.shape[2]

    def block(b, ainv):
        w_b = jax.lax.dynamic_slice_in_dim(c.w, b * merge, merge)  # (merge, r, d)
        k_b = jax.lax.dynamic_slice_in_dim(c.k, b * merge, merge)
        kw_b = jnp.einsum("prs,psd->prd", k_b, w_b, precision=HIGHEST)
        return ainv - mm(w_b.reshape(-1, d).T, kw_b.reshape(-1, d))

    n_kept = c.kept - ch.entry.kept
    return jax.lax.fori_loop(0, (n_kept + merge - 1) // merge, block, ch.entry.ainv)


def _finish(ch: _Chunk, c: _Carry) -> DenseState:
    """The state after the chunk: ``A⁻¹`` with the chunk's keeps, ``S`` with its points."""
    state = ch.entry
    new = state._replace(ainv=_apply_keeps(ch, c), kept=c.kept, pos=state.pos + ch.n_valid, picks=c.picks)
    if ch.running:
        # xf made to depend on the loops' result: S is then read by the loops before it is updated,
        # and XLA updates it in place instead of copying it first.
        late = ch.xf + jnp.minimum(c.j, 0).astype(ch.x.dtype)  # + 0 (j ≥ 0), opaque to XLA
        new = new._replace(cov=state.cov + mm(late.T, late), count=state.count + ch.n_valid)
    return new
