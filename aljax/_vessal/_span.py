"""The span kernel: the procedure with a fixed ``Σ̂``, in the span of the kept rows.

With few kept rows relative to ``d``, ``A⁻¹`` need not be formed: for the kept rows ``U``
(``m × d``, labeled rows first), ``A⁻¹ = λ⁻¹(I − Uᵀ(λI + UUᵀ)⁻¹U)``, so a score needs ``U u``
(``O(m(C + D))`` per row from the factors ``a ⊗ h``) and an ``m × m`` whitening (``O(m²)``), and
``tr(Σ̂A⁻¹) = λ⁻¹(tr Σ̂ − tr((λI + UUᵀ)⁻¹ U Σ̂ Uᵀ))`` is kept by bordering ``U Σ̂ Uᵀ`` on each
keep: one ``Σ̂ u`` product (``d²``) per keep, none per point.

Only a fixed covariance allows this: with the running one, bordering ``U S Uᵀ`` on a keep of
``u`` needs ``S u`` for the ``S`` of that moment, the sum over every point so far: either ``S``
itself, accumulated at ``d²`` per point (the very cost this kernel avoids; the dense kernel pays
it as one BLAS-3 ``XᵀX`` per chunk), or ``Σ_i (u_i·u) u_i`` over all past points (``O(N·d)`` per
keep).

Memory: the kept rows' factors plus two ``cap × cap`` matrices, with ``cap = (n_L + k)·r`` rows
preallocated for a budget ``k``; with ``rate`` it starts at ``n_L·r +`` :data:`START` rows and
doubles when full (the chunk resumes at the point that did not fit), and past
:data:`MAX_ROWS` ``· d`` rows it hands over to the dense kernel (:func:`to_dense`) for the rest
of the stream. Both kernels run the same procedure on the same draws: the picks agree up to
float rounding (tested).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._linalg import HIGHEST, mm, sym
from ._dense import DenseState
from ._rows import factor_rows
from ._rule import first_keep, target_rate

# The span kernel runs when the covariance is fixed, d ≥ MIN_D and the kept and labeled rows (r
# per point) are at most MAX_ROWS · d. Its cost per point grows with the kept rows m (O(m(C + D)
# + m²)) where the dense kernel's is O(d²); near m = d/2 the two are alike, and below d = MIN_D
# the dense kernel's BLAS-3 products are cheap enough that the span kernel's extra per-keep work
# does not pay (benchmarks/vessal_speed.py measures both).
MIN_D = 640
MAX_ROWS = 0.5
START = 256  # rows allocated at first with a rate (then doubled, up to MAX_ROWS · d)


def plan(d: int, rank: int, budget: int | None, n_labeled: int, span: bool | None) -> int | None:
    """Rows to allocate for the span kernel at the start, or ``None`` for the dense kernel.

    Auto (``span=None``): the span kernel when ``d ≥ MIN_D`` and the rows it must hold (labeled
    and kept, ``r`` per point: ``(n_L + k)·r`` with a budget, ``n_L·r + START`` to start with a
    rate) are at most ``MAX_ROWS · d``; ``True``/``False`` force it."""
    rows = n_labeled * rank + (budget * rank if budget is not None else START)
    if span is None:
        span = d >= MIN_D and rows <= MAX_ROWS * d
    return rows if span else None


class SpanState(NamedTuple):
    """The stream's state between calls of the span kernel.

    Attributes:
      ua, uh: the kept rows ``U`` (``m`` of them) as factors, ``(cap, C')`` and ``(cap, D')``,
        zero beyond ``m``.
      linv: ``L⁻¹``, ``(cap, cap)``, for a square root ``L`` of ``K = λI + UUᵀ`` (``LLᵀ = K``,
        block lower triangular).
      white: ``R = L⁻¹ (U Σ̂ Uᵀ) L⁻ᵀ``, ``(cap, cap)``.
      m: rows in ``U``.
      pos: global position of the next chunk's first point.
      kept: points kept so far.
      picks: ``(budget,)`` kept positions in stream order (budget form; ``None`` with a rate).

    Rows beyond ``m`` are zero, so ``K`` is ``λI`` there, ``L⁻¹`` is ``λ^{-1/2} I`` and ``R`` is
    0: the padding is exact and nothing is masked.
    """

    ua: jax.Array
    uh: jax.Array
    linv: jax.Array
    white: jax.Array
    m: jax.Array
    pos: jax.Array
    kept: jax.Array
    picks: jax.Array | None


class _Chunk(NamedTuple):
    """What one kernel call reads and never changes."""

    xa: jax.Array  # (size·r, C') row factors, zero beyond n_valid
    xh: jax.Array  # (size·r, D')
    uniforms: jax.Array
    n_valid: jax.Array
    target: jax.Array  # N (budget form) or the rate
    cov: jax.Array  # Σ̂
    cov_trace: jax.Array
    lamb: jax.Array
    entry: SpanState  # the state at the start of the call
    rank: int
    budget: int | None

    @property
    def size(self) -> int:
        return self.xa.shape[0] // self.rank


class _Carry(NamedTuple):
    """The loop state within a chunk: the span state's matrices, and per point of the chunk
    ``Z_i = L⁻¹ U X_iᵀ`` and ``M_i = X_i A⁻¹ X_iᵀ``."""

    ua: jax.Array
    uh: jax.Array
    linv: jax.Array
    white: jax.Array
    m: jax.Array
    z: jax.Array  # (cap, size·r), zero from row m on
    m_all: jax.Array  # (size, r, r)
    kept: jax.Array
    mask: jax.Array
    j: jax.Array
    found: jax.Array
    picks: jax.Array | None


def small_inverse_cholesky(s) -> jax.Array:
    """``G = L⁻¹`` for the lower Cholesky factor ``L`` of a small symmetric positive-definite
    ``r × r`` matrix (so ``GᵀG = s⁻¹``), by ``2r`` unrolled vector steps: no LAPACK call (inside
    a loop, a LAPACK call can cost more than the loop body while its thread pool wakes up)."""
    r = s.shape[0]
    chol = jnp.zeros_like(s)
    for k in range(r):  # column k: s[:, k] − L L[k]ᵀ (L[k, k:] is still 0)
        col = s[:, k] - mm(chol, chol[k])
        chol = chol.at[:, k].set(jnp.where(jnp.arange(r) >= k, col / jnp.sqrt(col[k]), 0))
    inv = jnp.zeros_like(s)
    eye = jnp.eye(r, dtype=s.dtype)
    for i in range(r):  # row i of L G = I (G[i:] is still 0)
        inv = inv.at[i].set((eye[i] - mm(chol[i], inv)) / chol[i, i])
    return inv


def small_abs_det(m) -> jax.Array:
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


def _outer_rows(a, h) -> jax.Array:
    """``(n, C'·D')`` rows ``a ⊗ h`` of factor rows (class-major)."""
    return (a[:, :, None] * h[:, None, :]).reshape(a.shape[0], -1)


def _cross(ua, uh, xa, xh) -> jax.Array:
    """``U Xᵀ`` for factored rows: ``(a_s ⊗ h_s)·(a_t ⊗ h_t) = (a_s·a_t)(h_s·h_t)``, i.e.
    ``(Uₐ Xₐᵀ) ∘ (U_h X_hᵀ)``: ``O(C' + D')`` per pair instead of ``O(C'·D')``."""
    return mm(ua, xa.T) * mm(uh, xh.T)


@functools.partial(jax.jit, static_argnames=("cap", "budget"))
def initial(la, lh, cov, lamb, *, cap: int, budget: int | None) -> SpanState:
    """The state before the stream, the labeled rows ``(la, lh)`` (possibly none) already in
    ``U``: ``L = chol(λI + U_L U_Lᵀ)``, kept as ``L⁻¹``, and ``R = L⁻¹ U_L Σ̂ U_Lᵀ L⁻ᵀ``, padded
    to ``cap`` rows (``λ^{-1/2} I`` and 0)."""
    dtype = cov.dtype
    m_l = la.shape[0]
    linv = jnp.eye(cap, dtype=dtype) / jnp.sqrt(jnp.asarray(lamb, dtype))
    white = jnp.zeros((cap, cap), dtype)
    if m_l:
        chol = jnp.linalg.cholesky(lamb * jnp.eye(m_l, dtype=dtype) + sym(_cross(la, lh, la, lh)))
        linv_l = jax.scipy.linalg.solve_triangular(chol, jnp.eye(m_l, dtype=dtype), lower=True)
        u = _outer_rows(la, lh)
        white_l = mm(linv_l, mm(mm(mm(u, cov), u.T), linv_l.T))
        linv = linv.at[:m_l, :m_l].set(linv_l)
        white = white.at[:m_l, :m_l].set(sym(white_l))
    return SpanState(ua=jnp.zeros((cap, la.shape[1]), dtype).at[:m_l].set(la),
                     uh=jnp.zeros((cap, lh.shape[1]), dtype).at[:m_l].set(lh),
                     linv=linv, white=white, m=jnp.int32(m_l), pos=jnp.int32(0), kept=jnp.int32(0),
                     picks=None if budget is None else jnp.zeros((budget,), jnp.int32))


@functools.partial(jax.jit, static_argnames=("cap",))
def grow(state: SpanState, lamb, *, cap: int) -> SpanState:
    """The same state with room for ``cap`` rows (zero rows: ``λ^{-1/2} I`` in ``L⁻¹``, 0 in ``R``)."""
    old = state.linv.shape[0]
    dtype = state.linv.dtype
    linv = jnp.eye(cap, dtype=dtype) / jnp.sqrt(jnp.asarray(lamb, dtype))
    return state._replace(ua=jnp.zeros((cap, state.ua.shape[1]), dtype).at[:old].set(state.ua),
                          uh=jnp.zeros((cap, state.uh.shape[1]), dtype).at[:old].set(state.uh),
                          linv=linv.at[:old, :old].set(state.linv),
                          white=jnp.zeros((cap, cap), dtype).at[:old, :old].set(state.white))


@jax.jit
def to_dense(state: SpanState, cov, lamb) -> DenseState:
    """The dense kernel's state (fixed covariance) for the same ``A``:
    ``A⁻¹ = λ⁻¹(I − Uᵀ K⁻¹ U) = λ⁻¹(I − QᵀQ)`` with ``Q = L⁻¹U``."""
    q = mm(state.linv, _outer_rows(state.ua, state.uh))
    dtype = q.dtype
    ainv = (jnp.eye(q.shape[1], dtype=dtype) - mm(q.T, q)) / jnp.asarray(lamb, dtype)
    return DenseState(ainv=sym(ainv), cov=jnp.copy(cov.astype(dtype)), count=jnp.int32(0), pos=state.pos,
                      kept=state.kept, picks=state.picks)


@functools.partial(jax.jit, static_argnames=("rank", "budget"), donate_argnums=(0,))
def chunk(state: SpanState, emb_chunk, uniforms, n_valid, target, start, cov, cov_trace, lamb, *, rank: int,
          budget: int | None) -> tuple[SpanState, jax.Array, jax.Array]:
    """The procedure over the points ``start … n_valid − 1`` of one chunk, with a fixed ``Σ̂``, in
    the span of the kept rows.

    With ``A = λI + UᵀU``, ``A⁻¹ = λ⁻¹(I − Uᵀ K⁻¹ U)``, so for a point's rows ``X_i``
    (``r × d``) and ``Z_i = L⁻¹ U X_iᵀ``:

    * ``M_i = X_i A⁻¹ X_iᵀ = λ⁻¹ (X_i X_iᵀ − Z_iᵀ Z_i)``, ``U X_iᵀ`` from the factors in
      ``O(m (C' + D'))`` per row and ``Z_i`` in ``O(m²)`` (one matrix product per chunk);
    * ``tr(Σ̂ A⁻¹) = λ⁻¹ (tr Σ̂ − tr(K⁻¹ U Σ̂ Uᵀ)) = λ⁻¹ (tr Σ̂ − tr R)``.

    A keep of point ``j`` appends its ``r`` rows to ``U`` and borders ``L``, ``R`` and every
    ``Z_i`` (:func:`_keep_point`). No LAPACK call runs inside the loop (see
    :func:`small_inverse_cholesky`).

    Stops at the first keep that would not fit in ``cap`` rows: returns ``(state, mask, stop)``
    with ``stop`` the chunk position to resume from (``n_valid`` when the chunk is done; ``pos``
    advances only then).
    """
    dtype = state.linv.dtype
    xa, xh = factor_rows(emb_chunk, rank, dtype)
    size = xa.shape[0] // rank
    xa = jnp.where((jnp.arange(size * rank) // rank < n_valid)[:, None], xa, 0)
    ch = _Chunk(xa=xa, xh=xh, uniforms=uniforms.astype(dtype), n_valid=n_valid, target=target,
                cov=cov.astype(dtype), cov_trace=cov_trace, lamb=jnp.asarray(lamb, dtype), entry=state, rank=rank,
                budget=budget)
    z, m_all = _chunk_scores(ch)
    carry = _Carry(ua=state.ua, uh=state.uh, linv=state.linv, white=state.white, m=state.m, z=z, m_all=m_all,
                   kept=state.kept, mask=jnp.zeros(size, bool), j=jnp.asarray(start, jnp.int32),
                   found=jnp.asarray(False), picks=state.picks)
    carry = _find_next_keep(ch, carry)
    cap = state.linv.shape[0]
    carry = jax.lax.while_loop(lambda c: c.found & (c.m + rank <= cap),
                               lambda c: _find_next_keep(ch, _keep_point(ch, c)), carry)
    stop = jnp.where(carry.found, carry.j, n_valid).astype(jnp.int32)
    new = SpanState(ua=carry.ua, uh=carry.uh, linv=carry.linv, white=carry.white, m=carry.m,
                    pos=state.pos + jnp.where(stop == n_valid, n_valid, 0), kept=carry.kept, picks=carry.picks)
    return new, carry.mask, stop


def _chunk_scores(ch: _Chunk) -> tuple[jax.Array, jax.Array]:
    """``Z = L⁻¹ U Xᵀ`` ``(cap, size·r)`` and ``M_i = λ⁻¹ (X_i X_iᵀ − Z_iᵀ Z_i)`` ``(size, r, r)``
    under the state at the start of the call."""
    state, size, rank = ch.entry, ch.size, ch.rank
    xa3, xh3 = ch.xa.reshape(size, rank, -1), ch.xh.reshape(size, rank, -1)
    gram = (jnp.einsum("isc,itc->ist", xa3, xa3, precision=HIGHEST)
            * jnp.einsum("isd,itd->ist", xh3, xh3, precision=HIGHEST))  # X_i X_iᵀ, (size, r, r)
    z = mm(state.linv, _cross(state.ua, state.uh, ch.xa, ch.xh))  # (cap, size·r)
    z3 = z.reshape(-1, size, rank)
    return z, (gram - jnp.einsum("kis,kit->ist", z3, z3, precision=HIGHEST)) / ch.lamb


def _find_next_keep(ch: _Chunk, c: _Carry) -> _Carry:
    """The first point from ``c.j`` on that the draws keep under the current ``A`` (``n_valid``
    and ``found = False`` when there is none)."""
    positions = jnp.arange(ch.size)
    scores = small_abs_det(sym(c.m_all))
    active = (positions >= c.j) & (positions < ch.n_valid)
    normaliser = (ch.cov_trace - jnp.trace(c.white)) / ch.lamb  # tr(Σ̂ A⁻¹)
    rate = target_rate(ch.budget, c.kept, ch.target, ch.entry.pos, positions, ch.xa.dtype)
    found, j = first_keep(scores, normaliser, rate, ch.uniforms, active, ch.n_valid)
    return c._replace(j=j, found=found)


def _keep_point(ch: _Chunk, c: _Carry) -> _Carry:
    """Keep point ``j = c.j``: append its rows ``X_j`` to ``U`` and border ``L⁻¹``, ``R`` and ``Z``.

    ``L``'s new rows are ``[Z_jᵀ, S]`` with ``SSᵀ = λ(I + M_j)`` (the Schur complement
    ``λI + X_j X_jᵀ − Z_jᵀ Z_j``), so ``L⁻¹`` gains the rows ``[−G Z_jᵀ L⁻¹, G]``, ``G = S⁻¹``
    (``O(m² r)``)."""
    j, m, rank = c.j, c.m, ch.rank
    m_j = sym(c.m_all[j])
    a_j = jax.lax.dynamic_slice_in_dim(ch.xa, j * rank, rank)  # (r, C')
    h_j = jax.lax.dynamic_slice_in_dim(ch.xh, j * rank, rank)  # (r, D')
    z_j = jax.lax.dynamic_slice_in_dim(c.z, j * rank, rank, axis=1)  # (cap, r), zero from row m on
    g = small_inverse_cholesky(ch.lamb * (jnp.eye(rank, dtype=m_j.dtype) + m_j))  # G = S⁻¹
    z_new, m_all = _new_z_rows(ch, c, a_j, h_j, z_j, g)
    ua = jax.lax.dynamic_update_slice_in_dim(c.ua, a_j, m, 0)
    uh = jax.lax.dynamic_update_slice_in_dim(c.uh, h_j, m, 0)
    white = _border_white(ch, c, ua, uh, a_j, h_j, z_j, g)
    # Border L⁻¹: row block m is [−G Z_jᵀ L⁻¹, G] (Z_jᵀ L⁻¹ is zero from column m on).
    linv = jax.lax.dynamic_update_slice(c.linv, -mm(g, mm(z_j.T, c.linv)), (m, jnp.int32(0)))
    linv = jax.lax.dynamic_update_slice(linv, g, (m, m))
    picks = c.picks if ch.budget is None else c.picks.at[c.kept].set(ch.entry.pos + j)
    return c._replace(ua=ua, uh=uh, linv=linv, white=white, m=m + rank, m_all=m_all,
                      z=jax.lax.dynamic_update_slice_in_dim(c.z, z_new, m, 0), kept=c.kept + 1,
                      mask=c.mask.at[j].set(True), j=j + 1, picks=picks)


def _new_z_rows(ch: _Chunk, c: _Carry, a_j, h_j, z_j, g) -> tuple[jax.Array, jax.Array]:
    """Every point's new rows of ``Z``, ``G (X_j Xᵀ − Z_jᵀ Z)`` ``(r, size·r)``, and its ``M_i``
    less their outer product: ``O(m r²)`` per point and keep."""
    size, rank = ch.size, ch.rank
    cross = (mm(ch.xa, a_j.T) * mm(ch.xh, h_j.T)).T  # X_j Xᵀ, from the untransposed rows
    z_new = mm(g, cross - mm(z_j.T, c.z))
    z_new3 = z_new.reshape(rank, size, rank)
    return z_new, c.m_all - jnp.einsum("kis,kit->ist", z_new3, z_new3, precision=HIGHEST) / ch.lamb


def _border_white(ch: _Chunk, c: _Carry, ua, uh, a_j, h_j, z_j, g) -> jax.Array:
    """``R`` bordered for the keep, with the old ``L⁻¹``: for ``V = L⁻¹ U Σ̂ X_jᵀ``,
    ``R₁₂ = (V − R Z_j) Gᵀ`` and ``R₂₂ = G (X_j Σ̂ X_jᵀ − Z_jᵀV − VᵀZ_j + Z_jᵀ R Z_j) Gᵀ``. The one
    ``O(d²)`` product of a keep is ``Σ̂ X_jᵀ``; ``ua``/``uh`` already hold ``X_j`` at row ``m``."""
    m, rank = c.m, ch.rank
    cap = c.linv.shape[0]
    y = mm(ch.cov, _outer_rows(a_j, h_j).T).T.reshape(rank, ua.shape[1], uh.shape[1])  # (Σ̂ X_jᵀ)ᵀ
    p_all = jnp.einsum("std,td->ts", jnp.einsum("tc,scd->std", ua, y, precision=HIGHEST), uh,
                       precision=HIGHEST)  # U' Σ̂ X_jᵀ, (cap, r)
    p12 = jnp.where((jnp.arange(cap) < m)[:, None], p_all, 0)
    p22 = jax.lax.dynamic_slice_in_dim(p_all, m, rank)
    v = mm(c.linv, p12)
    r_z = mm(c.white, z_j)
    s22 = p22 - mm(z_j.T, v) - mm(v.T, z_j) + mm(z_j.T, r_z)
    r12 = mm(v - r_z, g.T)  # (cap, r), zero from row m on
    r22 = mm(g, mm(s22, g.T))
    zero = jnp.int32(0)
    white = jax.lax.dynamic_update_slice(c.white, r12, (zero, m))
    white = jax.lax.dynamic_update_slice(white, r12.T, (m, zero))
    return jax.lax.dynamic_update_slice(white, sym(r22), (m, m))
