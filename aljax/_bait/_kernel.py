"""The selection kernel: Fisher sums, then forward greedy additions and backward removals.

It keeps ``A = M⁻¹`` (``d × d``) and, per point, the ``r × r`` blocks ``G_i = X_i A X_iᵀ`` and
``H_i = X_i A F A X_iᵀ`` (:mod:`._blocks`), so that the gain of adding (``σ = +1``) or removing
(``σ = −1``) point ``i`` is ``tr(H_i (I + σ G_i)⁻¹)``. After the Woodbury update
``A' = A − σ U K Uᵀ`` (``U = A X_pᵀ``, ``K = (I + σ G_p)⁻¹``) both blocks change by rank-``r``
corrections that need only ``X_i U`` and ``X_i A F U``: for Kronecker rows one
``(n × D) @ (D × 2·C·r)`` product per step. ``A`` itself is updated lazily (:mod:`._lazy`).

:func:`forward_backward` runs on one device, or as the body of a ``shard_map`` over the pool's
example axis; what differs (the reductions across devices, and which device holds the picked
point) is behind a topology object: :data:`LOCAL` here, :class:`aljax._bait._sharded.Shards` there.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import _compile
from .._linalg import HIGHEST, mm, spd_inverse, sym
from . import _picks_space
from ._blocks import (UNROLL_MAX_RANK, UNROLL_MIN_POINTS, correct, correct_packed, forward_gains, gains,
                      kept_if_broken, pack, unpack)
from ._blocks import gains as _blocks_gains
from ._lazy import LAZY_STEPS, LazyA, append, lazy_loop, woodbury_directions
from ._rows import (DenseChunks, KronChunks, KronRows, LabeledGram, apply, apply_flat, counts, dense, flat_rows,
                    gather, n_points, picked, prepare, quad_chunks, quad_gram, quad_gram_cheaper, reduce_columns,
                    reduce_rows, row, scale_rows, softmax_basis, symmetric_blocks)

# Pools on one device whose forward steps use the loop forms run both passes in one loop, whose
# body is traced and compiled once (about half the kernel's compilation), when the backward
# removals over the whole pool (instead of over the forward picks only) cost at most this many
# point-steps: removals × padded pool points.
ONE_LOOP_MAX_WORK = 1 << 14
# Softmax rows with at least this many classes and columns run on the sum-zero columns (see
# aljax._bait._rows.softmax_basis): the same blocks and picks, a d × d state (1 − 1/C)² the size.
# Below the width, where the d × d work is small, it measured a few percent slower (the flat rows'
# extra product per step), so narrow heads keep all C·D columns. (Two classes run as one row per
# point before the kernel: aljax._bait._rows.binary_rows.)
REDUCE_MIN_CLASSES = 3
REDUCE_MIN_DIM = 1024
# Rebuild the per-point blocks exactly once the rounding of their accumulated corrections,
# eps·Σ‖ΔH_i‖, reaches this fraction of the largest gain (see ``refresh``). Set against float64
# runs with λ ≪ ‖X_i‖² (the ill-conditioned cases of tests/test_bait.py), where a looser
# tolerance let float32 picks drift from float64's.
REFRESH_TOL = 1e-5
# On one device, from this many points on, the forward steps rebuild exactly only the blocks that
# can still decide the pick (see ``refresh_window``): the ``WINDOW`` points of highest gain
# plus error bound, whenever a stale one among them could overtake the best. Gains are trusted to
# ``ARGMAX_MARGIN·eps·drift_i``: the drift tracks only the H corrections, and on small
# ill-conditioned float32 problems a margin of 10 (above the 8.3 measured on a transformer head)
# left float64's picks 2.5 times as often as whole rebuilds, 1,000 as often. (A whole rebuild,
# O(n·d²) plus A F A, cost a transformer head more than a third of its call; smaller pools
# rebuild whole, at the cost of a few steps.)
WINDOW = 16
ARGMAX_MARGIN = 1000.0
WINDOW_MIN_POINTS = 4096


class _Local:
    """The topology of a selection on one device: the whole pool is here, and every reduction
    over devices is the identity. :class:`aljax._bait._sharded.Shards` has the same methods."""

    count = 1                 # blocks of the example axis
    labeled_sharded = False   # whether the labeled rows are cut like the pool

    def psum(self, x):
        return x

    def psum_labeled(self, x):
        return x

    def pmax(self, x):
        return x

    def pick(self, rows, gains, taken, p_local, n_local):
        """``(pool index, whether this device holds it, X_p (r, d))`` of this device's best point."""
        return p_local, True, row(rows, p_local)

    def picked(self, rows, g, h, drift, picks, n_local):
        """Rows, blocks and drift of the forward picks, for the backward pass (see :func:`picked`)."""
        return picked(rows, g, h, drift, picks)


LOCAL = _Local()


# ---------------------------------------------------------------------------------------------
# Block updates after a step, and exact rebuilds.


def update_chunk(rows, g, h, directions, sign):
    """The blocks of one chunk after a Woodbury step (:func:`aljax._bait._blocks.correct`)."""
    return correct(apply(rows, directions), g, h, sign)


def update_flat(flat, g, h, directions, sign):
    """:func:`update_chunk` on the whole pool at once (``flat`` from
    :func:`aljax._bait._rows.flat_rows`; blocks ``g, h`` packed (:func:`aljax._bait._blocks.pack`:
    a list of rows of ``nc·b`` points; see :class:`_FlatBlocks`) or ``(r, r, nc·b)``)."""
    if isinstance(g, list):
        return correct_packed(apply_flat(flat, directions), g, h, sign)
    return correct(apply_flat(flat, directions, batch_first=True), g, h, sign)


def exact_blocks(x, times_a, fisher):
    """``G_i = X_i A X_iᵀ`` and ``H_i = X_i A F A X_iᵀ`` (``(r, r, m)`` each) of a few points from
    their dense rows ``x (m, r, d)``: ``U = A X_Sᵀ`` (``times_a``: the product with ``A``, e.g.
    :meth:`LazyA.times`), ``F U``, and the diagonal blocks of ``X_S U`` and ``Uᵀ F U``;
    ``4·m·r·d²`` flops, no ``A F A`` (``4d³``)."""
    m, r, d = x.shape
    u = times_a(x.reshape(m * r, d).T)                                   # (d, m·r)
    fu = mm(fisher, u)
    u, fu = u.reshape(d, m, r), fu.reshape(d, m, r)
    g = jnp.einsum("mae,emb->abm", x, u, precision=HIGHEST)
    h = jnp.einsum("ema,emb->abm", u, fu, precision=HIGHEST)
    return 0.5 * (g + g.transpose(1, 0, 2)), 0.5 * (h + h.transpose(1, 0, 2))


def _few_points(rows) -> bool:
    """Whether :func:`exact_blocks` rebuilds ``rows`` (one chunk of ``m`` points) for less than the
    quadratic forms with ``A`` and ``A F A`` (``4·m·d²`` flops for Kronecker rows, ``4·m·r·d²``
    for dense ones, plus ``4d³``): the backward pass's picks."""
    nc, m = counts(rows)
    if nc != 1:
        return False
    r = rows.s.shape[1] if isinstance(rows, KronChunks) else rows.x.shape[2]
    d = rows.s.shape[2] * rows.ht.shape[1] if isinstance(rows, KronChunks) else rows.x.shape[3]
    return isinstance(rows, DenseChunks) or m * (r - 1) < d


def rebuild(rows, a, fisher, drift, gains_fn, layout=lambda blocks: blocks):
    """Every block exactly from ``A`` (a :class:`LazyA`): see :func:`refresh`. Returns ``g, h``
    in ``layout``, zero drift, and ``gains_fn`` of the new blocks."""
    if _few_points(rows):
        g_new, h_new = exact_blocks(dense(rows), a.times, fisher)
        g_new, h_new = layout(g_new[None]), layout(h_new[None])
        return g_new, h_new, jnp.zeros_like(drift), gains_fn(g_new, h_new)
    a = a.full()
    d = fisher.shape[0]
    # Wide Kronecker rows: quadratic forms over half the class blocks (_rows.quad_chunks: half the
    # flops of their O(n·d²), which dominates a selection that rebuilds even once).
    upper = symmetric_blocks(d) and isinstance(rows, KronChunks)
    # (A F A whole: computing its upper blocks apart saved a quarter of its flops but cost a
    # gigabyte of temporaries at d = 7,680, each block product packing its operands at once.)
    b_mat = mm(mm(a, fisher), a)
    b_mat = b_mat if upper else sym(b_mat)
    g_new, h_new = quad_chunks(rows, a, upper), quad_chunks(rows, b_mat, upper)
    g_new, h_new = layout(g_new), layout(h_new)
    return g_new, h_new, jnp.zeros_like(drift), gains_fn(g_new, h_new)


def refresh(rows, a, fisher, g, h, drift, excluded, gains_fn, shards=LOCAL, gains=None,
            layout=lambda blocks: blocks):
    """Recompute ``G_i = X_i A X_iᵀ`` and ``H_i = X_i A F A X_iᵀ`` exactly from ``A`` when the
    rank-``r`` corrections may have cancelled away too much precision.

    ``drift_i`` is the sum of the sizes ``‖ΔH_i‖`` of the corrections since the last exact
    computation; their rounding moves the gain ``tr(H_i (I ± G_i)⁻¹)`` by about ``eps·drift_i``
    (``‖(I + G_i)⁻¹‖ ≤ 1``). When λ is small against ``‖X_i‖²``, or once the picks span most of
    the ``d`` columns, the corrections cancel ``H`` by many orders of magnitude and float32 gains
    lose their ranking. So: rebuild both blocks (and the gains) once
    ``eps·max drift > REFRESH_TOL·max |gain|`` over the live points (float64: practically never).
    ``A`` itself stays accurate (it is updated, not cancelled), so the rebuilt blocks are too. A
    rebuild costs two ``quad`` passes (``O(n·d²)``) plus ``A F A``, or for a few points (the
    backward pass) :func:`exact_blocks`; well-conditioned runs need none, ill-conditioned ones a
    few. (Large pools on one device rebuild only the blocks near the best: :func:`refresh_window`.)

    The rebuild uses the one-matmul form of :func:`aljax._bait._rows.quad` below
    ``SYMMETRIC_MIN_DIM`` columns: it is traced twice (forward and backward) and rarely runs, so
    there a short compilation is worth more than halved flops; from there on, half the class
    blocks (one rebuild of a ``d = 7,680`` head costs more than all its steps).

    ``a``: ``A`` as a :class:`LazyA`. ``gains_fn(g, h)``: the gains (or costs) of chunked
    blocks; ``gains``: the caller's, already ``gains_fn(g, h)``. Chunked layout: ``rows`` as
    :func:`aljax._bait._rows.counts` sees them, ``g, h (nc, r, r, b)``, ``drift, excluded
    (nc, b)``; ``layout`` maps rebuilt chunked blocks to the layout of ``g, h``. The maxima are
    over every shard, so that all devices rebuild together. Returns ``g, h, drift, gains``."""
    eps = jnp.finfo(drift.dtype).eps
    if gains is None:
        gains = gains_fn(g, h)
    scale = jnp.max(jnp.where(excluded, 0, jnp.abs(gains)))
    worst = jnp.max(jnp.where(excluded, 0, drift))
    scale, worst = shards.pmax(jnp.stack([scale, worst]))
    stale = eps * worst > REFRESH_TOL * scale
    return jax.lax.cond(stale, lambda _: rebuild(rows, a, fisher, drift, gains_fn, layout),
                        lambda _: (g, h, drift, gains), None)


def _contested(gains, drift, excluded):
    """For the forward argmax over flat ``gains, drift, excluded (N,)``: each point's upper bound
    ``gain_i + ARGMAX_MARGIN·eps·drift_i`` (``-inf`` if excluded), and whether a stale point
    (``eps·drift_i > REFRESH_TOL·max |gain|``, as in :func:`refresh`) could overtake the best or be
    overtaken by another: its bound reaches the best's lower bound, with at least two points there."""
    eps = jnp.finfo(drift.dtype).eps
    live = jnp.where(excluded, -jnp.inf, gains)
    err = ARGMAX_MARGIN * eps * drift
    best = jnp.argmax(live)
    upper = live + err
    near = upper >= live[best] - err[best]
    stale = ~excluded & (eps * drift > REFRESH_TOL * jnp.max(jnp.where(excluded, 0, jnp.abs(gains))))
    return upper, jnp.any(near & stale) & (jnp.sum(near) >= 2), jnp.any(stale)


def refresh_window(rows, a, fisher, g, h, drift, excluded, gains, layout):
    """:func:`refresh` for the forward steps of a large pool on one device: only the blocks that
    can decide this step's pick are rebuilt. A point whose gain, within its error bound, cannot
    reach the best's cannot be picked, however stale. So when a stale point could
    (:func:`_contested`), the ``WINDOW`` points of highest upper bound are recomputed by
    :func:`exact_blocks` (their drift reset); if a stale point outside them could still decide the
    pick, every block is rebuilt (:func:`rebuild`). Stale points far from the best keep their
    drift until they come near it; so do the picks, whose blocks the backward pass then rebuilds
    (see :func:`_backward`).

    ``rows`` chunked, ``g, h`` in the flat ``layout`` (:class:`_FlatBlocks`), ``drift, excluded,
    gains (nc, b)``; ``a`` a :class:`LazyA`. Returns ``g, h, drift, gains`` and whether
    :func:`refresh` would have rebuilt every block here."""
    flat = lambda v: v.reshape(-1)  # noqa: E731
    upper, fire, any_stale = _contested(flat(gains), flat(drift), flat(excluded))

    def window(_):
        idx = jax.lax.top_k(upper, min(WINDOW, upper.shape[0]))[1]
        g_s, h_s = exact_blocks(dense(gather(rows, idx)), a.times, fisher)
        g_w, h_w = layout.scatter(g, idx, g_s), layout.scatter(h, idx, h_s)
        drift_w = flat(drift).at[idx].set(0).reshape(drift.shape)
        # (The window's gains alone, in the loop form: a second copy of the unrolled gains of
        # every block would lengthen the compilation by seconds.)
        gains_w = flat(gains).at[idx].set(_blocks_gains(g_s, h_s, 1.0)).reshape(gains.shape)
        again = _contested(flat(gains_w), flat(drift_w), flat(excluded))[1]
        return jax.lax.cond(again, lambda _: rebuild(rows, a, fisher, drift, layout.rare_gains, layout.to_flat),
                            lambda _: (g_w, h_w, drift_w, gains_w), None)

    return jax.lax.cond(fire, window, lambda _: (g, h, drift, gains), None) + (any_stale,)


# ---------------------------------------------------------------------------------------------
# Setup: F, A₀ and the initial blocks.


class _Start(NamedTuple):
    """Where the greedy passes start (from :func:`_setup`)."""

    rows: Any            # candidate rows, chunked, scaled by √(k/(n_L + k))
    scale: jax.Array     # that scale
    fisher: jax.Array    # F (d, d): the mean Fisher over pool ∪ labeled
    a: jax.Array         # A₀ = M₀⁻¹ (d, d)
    g: jax.Array         # G_i = X_i A₀ X_iᵀ (nc, r, r, b)
    h: jax.Array         # H_i = X_i A₀ F A₀ X_iᵀ (nc, r, r, b)
    valid: jax.Array     # (nc, b): real points, not padding
    n_local: Any         # real points on this device
    basis: Any           # None, or Q: the rows are S_iQ ⊗ h_iᵀ on the sum-zero columns
    a_eye: bool          # A₀ = I/λ (no labeled set)


def _point_counts(pool, labeled, shards, n_valid, n_lab_valid):
    """Points on this device, in the pool and labeled (traced where the rows are padded)."""
    n_local = n_points(pool) if n_valid is None else n_valid
    if labeled is None:
        n_lab = 0
    elif n_lab_valid is not None:
        n_lab = n_lab_valid
    else:
        n_lab = n_points(labeled) * (shards.count if shards.labeled_sharded else 1)
    return n_local, n_local * shards.count, n_lab


def _fisher_sums(pool_gram, labeled, chunk, dtype, shards, basis):
    """``Σ X_iᵀX_i`` over the pool and labeled points, and over the labeled ones (None without); with
    ``basis``, on the sum-zero columns (:func:`aljax._bait._rows.reduce_columns`)."""
    gram = shards.psum(pool_gram(basis=basis))
    if labeled is None:
        return gram, None
    if isinstance(labeled, LabeledGram):
        gram_lab = labeled.matrix if basis is None else reduce_columns(labeled.matrix, basis)
    else:
        gram_lab = shards.psum_labeled(prepare(labeled, chunk, dtype)[1](basis=basis))
    return gram + gram_lab, gram_lab


def initial_inverse(gram_lab, lamb, n_lab, k):
    """``A₀ = M₀⁻¹`` with ``M₀ = λI + F_L n_L/(n_L + k) = λI + Σ_L X_jᵀX_j/(n_L + k)``."""
    eye = jnp.eye(gram_lab.shape[0], dtype=gram_lab.dtype)
    return spd_inverse(lamb * eye + sym(gram_lab) / (n_lab + k))


def _initial_inverse(labeled, gram_lab, fisher, lamb, n_lab, k):
    """``A₀`` (:func:`initial_inverse`, or as the plan computed it) and ``A₀ F A₀``."""
    if gram_lab is None:
        eye = jnp.eye(fisher.shape[0], dtype=fisher.dtype)
        return eye / lamb, fisher / (lamb * lamb)
    given = labeled.inverse if isinstance(labeled, LabeledGram) else None
    a = initial_inverse(gram_lab, lamb, n_lab, k) if given is None else given
    return a, sym(mm(mm(a, fisher), a))


def _initial_g(rows, a, lamb, has_labeled):
    if has_labeled:
        return quad_chunks(rows, a, symmetric_blocks(a.shape[0]))
    if isinstance(rows, KronChunks):  # A₀ = I/λ:  G_i = S_i S_iᵀ ‖h_i‖² / λ
        ss = jnp.einsum("kacn,kbcn->kabn", rows.s, rows.s, precision=HIGHEST)
        return ss * (jnp.sum(rows.ht * rows.ht, axis=1) / lamb)[:, None, None, :]
    return jnp.einsum("knae,knbe->kabn", rows.x, rows.x, precision=HIGHEST) / lamb


def _setup(pool, labeled, lamb, k, chunk, dtype, shards, n_valid, n_lab_valid) -> _Start:
    n_local, n, n_lab = _point_counts(pool, labeled, shards, n_valid, n_lab_valid)
    lamb = jnp.asarray(lamb, dtype)
    rows, pool_gram = prepare(pool, chunk, dtype)
    q = None
    c = pool.s.shape[2] if isinstance(pool, KronRows) else 0
    if c >= REDUCE_MIN_CLASSES and pool.softmax and c * pool.h.shape[1] >= REDUCE_MIN_DIM:
        # On the sum-zero columns only (softmax_basis): same blocks, a smaller d × d state.
        q = softmax_basis(c, dtype)
    gram, gram_lab = _fisher_sums(pool_gram, labeled, chunk, dtype, shards, q)
    fisher = sym(gram / (n + n_lab))
    # Candidate rows scaled by √(k / (n_L + k)) (reference parity).
    scale = jnp.sqrt(jnp.asarray(k / (n_lab + k), dtype))   # n_lab may be traced
    full_rows = rows = scale_rows(rows, scale)
    if q is not None:
        rows = reduce_rows(rows, q)
        if isinstance(labeled, LabeledGram):
            labeled = LabeledGram(gram_lab, None if labeled.inverse is None
                                  else sym(reduce_columns(labeled.inverse, q)))
    a, b_mat = _initial_inverse(labeled, gram_lab, fisher, lamb, n_lab, k)
    g = _initial_g(rows, a, lamb, gram_lab is not None)
    nc, b = counts(rows)
    if (gram_lab is None and shards is LOCAL and isinstance(pool, KronRows)
            and quad_gram_cheaper(nc * b, *pool.s.shape[2:], pool.h.shape[1])):
        # A₀ F A₀ = F/λ²: the quadratic forms of F from the features' products, without F.
        h = quad_gram(full_rows, pool.w, pool.z) / ((n + n_lab) * lamb * lamb)
    else:
        h = quad_chunks(rows, b_mat, symmetric_blocks(fisher.shape[0]))
    valid = (jnp.arange(nc * b) < n_local).reshape(nc, b)
    return _Start(rows, scale, fisher, a, g, h, valid, n_local, q, gram_lab is None)


# ---------------------------------------------------------------------------------------------
# Forward: greedy additions over the whole pool.


class _FlatBlocks(NamedTuple):
    """The forward steps' layout of the blocks: the chunk axis merged into the point axis, and for
    small ``r`` and large pools only the upper triangles (:func:`aljax._bait._blocks.pack`) with
    the unrolled algebra; each step is then one matmul and a few fused passes. Small pools keep
    ``(r, r, nc·b)`` blocks and the loop forms (see ``UNROLL_MIN_POINTS``)."""

    r: int
    nc: int
    b: int

    @property
    def packed(self) -> bool:
        return self.r <= UNROLL_MAX_RANK and self.nc * self.b >= UNROLL_MIN_POINTS

    def to_flat(self, blocks):
        blocks = blocks.transpose(1, 2, 0, 3).reshape(self.r, self.r, -1)
        return pack(blocks) if self.packed else blocks

    def to_chunks(self, blocks):
        blocks = unpack(blocks, self.r) if self.packed else blocks
        return blocks.reshape(self.r, self.r, self.nc, self.b).transpose(2, 0, 1, 3)

    def gains(self, g, h):
        out = forward_gains(g, h, self.r) if self.packed else gains(g, h, 1.0)
        return out.reshape(self.nc, self.b)

    def rare_gains(self, g, h):
        """:meth:`gains` in the loop form, for what runs once or rarely (the start, a rebuild of every
        block): the unrolled form, one large fusion where it is traced, lengthened the compilation by
        seconds for each copy, for a few milliseconds saved once."""
        g, h = (unpack(g, self.r), unpack(h, self.r)) if self.packed else (g, h)
        return gains(g, h, 1.0).reshape(self.nc, self.b)

    def scatter(self, blocks, idx, new):
        """``blocks`` with those of points ``idx (m,)`` (flat indices) set to ``new (r, r, m)``."""
        if self.packed:
            return [row_i.at[:, idx].set(new[i, i:]) for i, row_i in enumerate(blocks)]
        return blocks.at[:, :, idx].set(new)


class _Forward(NamedTuple):
    """What the forward steps read and never change."""

    rows: Any             # chunked rows: exact rebuilds and the picked point's rows
    flat: Any             # the same rows, flat: the per-step corrections
    fisher: jax.Array
    layout: _FlatBlocks
    shards: Any
    n_local: Any
    window: bool          # rebuild near the best only (refresh_window), not every block


class _ForwardState(NamedTuple):
    a: jax.Array          # A = a − P Pᵀ (see lazy_loop); a scalar for a·I (implicit_a)
    pending: jax.Array    # P (d, LAZY_STEPS·r), or (d, n_forward·r) never folded in (implicit_a)
    pending_t: Any        # None, or Pᵀ (implicit_a: see LazyA)
    ul: Any               # None, or the last step's U L, not yet in P (implicit_a: see _with_ul)
    g: Any                # G_i, flat layout
    h: Any                # H_i, flat layout
    drift: jax.Array      # Σ‖ΔH_i‖ since the last exact rebuild (nc, b)
    gains: jax.Array      # this step's gains (nc, b)
    taken: jax.Array      # picked, or padding (nc, b)
    picks: jax.Array      # (n_forward,) int32
    stale: jax.Array      # some block was stale (refresh_window): the picks' are rebuilt backward


def _with_ul(state: _ForwardState, t) -> _ForwardState:
    """:func:`implicit_a`'s ``P`` and ``Pᵀ`` with step ``t``'s ``U L`` (``state.ul``), appended at the start
    of the next step, before anything reads them: appended after the reads, in the step that made it,
    they were copied whole every step for XLA to update them in place."""
    return state._replace(pending=append(state.pending, t, state.ul),
                          pending_t=append(state.pending_t, t, state.ul, transposed=True))


def _forward_step(ctx: _Forward, t, state: _ForwardState) -> _ForwardState:
    """Step ``t``: rebuild the blocks if stale, add the best unpicked point, correct every block."""
    nc, b = ctx.layout.nc, ctx.layout.b
    state = state if state.ul is None else _with_ul(state, t - 1)   # (at t = 0, zeros)
    a = LazyA(state.a, state.pending, 1.0, state.pending_t)
    if ctx.window:
        g, h, drift, step_gains, stale = refresh_window(ctx.rows, a, ctx.fisher, state.g, state.h, state.drift,
                                                        state.taken, state.gains, ctx.layout)
    else:
        g, h, drift, step_gains = refresh(ctx.rows, a, ctx.fisher, state.g, state.h, state.drift, state.taken,
                                          ctx.layout.rare_gains, ctx.shards, state.gains, ctx.layout.to_flat)
        stale = False
    p_local = jnp.argmax(jnp.where(state.taken, -jnp.inf, step_gains).reshape(-1)).astype(jnp.int32)
    p, mine, xp = ctx.shards.pick(ctx.rows, step_gains, state.taken, p_local, ctx.n_local)
    directions, ul = woodbury_directions(state.a, ctx.fisher, xp, 1.0, state.pending, state.pending_t)
    g, h, dh = update_flat(ctx.flat, g, h, directions, 1.0)
    # (An exhausted shard's argmax may be a taken point: never un-take it.)
    taken = state.taken.reshape(-1)
    taken = taken.at[p_local].set(mine | taken[p_local]).reshape(nc, b)
    pending, ul = (append(state.pending, t, ul), None) if state.ul is None else (state.pending, ul)
    # The next step's gains, here where XLA can fuse them with the update of the blocks.
    return _ForwardState(state.a, pending, state.pending_t, ul, g, h, drift + dh.reshape(nc, b),
                         ctx.layout.gains(g, h), taken, state.picks.at[t].set(p), state.stale | stale)


def _flat_setup(start: _Start, pool):
    """What the loops over the whole pool share: ``nc, b`` (chunks, points per chunk), ``r, d``,
    the dtype, the blocks' :class:`_FlatBlocks` layout and the flat rows
    (:func:`aljax._bait._rows.flat_rows`)."""
    nc, b = counts(start.rows)
    r, d = start.g.shape[1], start.fisher.shape[0]
    layout = _FlatBlocks(r, nc, b)
    softmax = isinstance(pool, KronRows) and pool.softmax
    flat = flat_rows(start.rows, pool.w if softmax else None, start.scale, start.basis)
    return nc, b, r, d, start.fisher.dtype, layout, flat


def implicit_a(start: _Start, shards, n_forward, r, d) -> bool:
    """Whether the forward pass keeps ``A = I/λ − P Pᵀ`` unformed (every step's ``U L`` in ``P``): without
    a labeled set ``A₀ = I/λ``, and where the backward pass runs in the picks' space (``2·n_forward·r <= d``:
    a wide head) ``P`` is at most half of ``A``. A step's products with ``A`` (memory-bound reads of the whole
    matrix there) then read ``P``, and :func:`lazy_loop` folds nothing in (``d² × LAZY_STEPS·r`` each)."""
    return start.a_eye and shards is LOCAL and _picks_space.worth_it(n_forward, r, d)


def _forward(start: _Start, pool, n_forward, shards):
    """``n_forward`` greedy additions: ``A`` (a :class:`LazyA` if :func:`implicit_a`), chunked blocks, drift, picks."""
    nc, b, r, d, dtype, layout, flat = _flat_setup(start, pool)
    window = shards is LOCAL and nc * b >= WINDOW_MIN_POINTS
    ctx = _Forward(start.rows, flat, start.fisher, layout, shards, start.n_local, window)
    g, h = layout.to_flat(start.g), layout.to_flat(start.h)
    implicit = implicit_a(start, shards, n_forward, r, d)
    a0, width = (start.a[0, 0], n_forward * r) if implicit else (start.a, LAZY_STEPS * r)
    pending_t, ul = (jnp.zeros((width, d), dtype), jnp.zeros((d, r), dtype)) if implicit else (None, None)
    state = _ForwardState(a0, jnp.zeros((d, width), dtype), pending_t, ul, g, h, jnp.zeros((nc, b), dtype),
                          layout.rare_gains(g, h), ~start.valid, jnp.zeros(n_forward, jnp.int32), jnp.asarray(False))
    end = lazy_loop(n_forward, functools.partial(_forward_step, ctx), state, 1.0, flush_every=not implicit)
    end = _with_ul(end, n_forward - 1) if implicit else end
    a = LazyA(end.a, end.pending, 1.0, end.pending_t) if implicit else end.a
    return (a, layout.to_chunks(end.g), layout.to_chunks(end.h), end.drift, end.picks,
            end.stale if ctx.window else None)


# ---------------------------------------------------------------------------------------------
# Backward: removals among the forward picks, replicated on every device.


class _Backward(NamedTuple):
    """What the backward steps read and never change."""

    rows: Any             # the picked points' rows as one chunk (leading axis 1)
    chunk: Any            # the same without the leading axis
    fisher: jax.Array


class _BackwardState(NamedTuple):
    a: jax.Array          # A = a + P Pᵀ (see lazy_loop)
    pending: jax.Array    # P (d, LAZY_STEPS·r)
    g: jax.Array          # G_j (r, r, n_forward)
    h: jax.Array          # H_j (r, r, n_forward)
    drift: jax.Array      # (n_forward,)
    removed: jax.Array    # (n_forward,) bool


def _removal_costs(g, h):
    return jax.vmap(lambda gc, hc: gains(gc, hc, -1.0))(g, h)


def _backward_step(ctx: _Backward, t, state: _BackwardState) -> _BackwardState:
    """Step ``t``: rebuild the blocks if stale, drop the pick whose removal raises ``tr(M⁻¹F)``
    least, ``tr(H_j (I − G_j)⁻¹) ≥ 0``, and downdate ``A`` and the blocks by it."""
    g, h, drift, cost = refresh(ctx.rows, LazyA(state.a, state.pending, -1.0), ctx.fisher, state.g[None],
                                state.h[None], state.drift[None], state.removed[None], _removal_costs)
    g, h, drift, cost = g[0], h[0], drift[0], cost[0]
    cost = kept_if_broken(cost)
    q = jnp.argmin(jnp.where(state.removed, jnp.inf, cost)).astype(jnp.int32)
    directions, ul = woodbury_directions(state.a, ctx.fisher, row(ctx.rows, q), -1.0, state.pending)
    g, h, dh = update_chunk(ctx.chunk, g, h, directions, -1.0)
    return _BackwardState(state.a, append(state.pending, t, ul), g, h, drift + dh, state.removed.at[q].set(True))


def _backward(start: _Start, a, g, h, drift, picks, k, shards, stale=None):
    """Remove ``len(picks) − k`` of the forward picks; the rest, in pick order. ``stale``: the
    forward pass left stale blocks (:func:`refresh_window`); the picks' are then rebuilt first.
    (A removal cost ``tr(H_j (I − G_j)⁻¹)`` amplifies the blocks' rounding, and near-ties between
    costs are common: from drifted blocks, float32 removals left float64's.)"""
    sub, g_sub, h_sub, drift_sub = shards.picked(start.rows, g, h, drift, picks, start.n_local)
    d = start.fisher.shape[0]
    n_forward, r = picks.shape[0], g_sub.shape[0]
    if _picks_space.worth_it(n_forward, r, d):   # wide heads (restarts from exact blocks itself)
        times_a = a.times if isinstance(a, LazyA) else functools.partial(mm, a)
        removed = _picks_space.backward(dense(sub), times_a, start.fisher, n_forward - k, REFRESH_TOL)
        return picks[jnp.nonzero(~removed, size=k)[0]]
    if stale is not None:  # (exact_blocks: quick to compile, and the picks are few)
        g_sub, h_sub, drift_sub = jax.lax.cond(
            stale, lambda _: exact_blocks(dense(sub), functools.partial(mm, a), start.fisher)
            + (jnp.zeros_like(drift_sub),), lambda _: (g_sub, h_sub, drift_sub), None)
    ctx = _Backward(sub, jax.tree_util.tree_map(lambda v: v[0], sub), start.fisher)
    state = _BackwardState(a, jnp.zeros((d, LAZY_STEPS * r), a.dtype), g_sub, h_sub, drift_sub,
                           jnp.zeros(n_forward, bool))
    removed = lazy_loop(n_forward - k, functools.partial(_backward_step, ctx), state, -1.0).removed
    return picks[jnp.nonzero(~removed, size=k)[0]]


# ---------------------------------------------------------------------------------------------
# Both passes in one loop (small pools on one device).


class _OneLoopState(NamedTuple):
    a: jax.Array          # A = a − σ P Pᵀ (see lazy_loop), σ the sign of the pass
    pending: jax.Array    # P (d, LAZY_STEPS·r)
    g: jax.Array          # G_i (r, r, nc·b)
    h: jax.Array          # H_i (r, r, nc·b)
    drift: jax.Array      # (nc, b)
    taken: jax.Array      # picked forward, or padding (nc, b)
    removed: jax.Array    # removed backward (nc, b)
    picks: jax.Array      # (n_forward,) int32


def _one_loop_scores(g, h, sign, nc, b):
    """``tr(H_i (I + σG_i)⁻¹)``: the gains forward (``σ = 1``), the removal costs backward."""
    return gains(g, h, sign).reshape(nc, b)


def _one_loop(start: _Start, pool, n_forward, k):
    """:func:`_forward` then :func:`_backward` as one ``fori_loop`` over blocks of ``LAZY_STEPS``
    steps whose sign (``+1`` adding, ``−1`` removing) is traced: the step is compiled once. The
    backward steps correct the blocks of the whole pool, not of the forward picks only (the
    picks' blocks get the same arithmetic), and choose among the picks in pick order, as
    :func:`_backward_step` does. One device, loop forms (:class:`_FlatBlocks` not packed)."""
    nc, b, r, d, dtype, layout, flat = _flat_setup(start, pool)
    n_back = n_forward - k
    blocks_forward = -(-n_forward // LAZY_STEPS)

    def step(sign, forward, t, state):
        picked_live = ~state.removed.reshape(-1)[state.picks]
        eligible = jnp.where(forward, ~state.taken, state.taken & start.valid & ~state.removed)
        # (This step's scores, computed here rather than by the step before and again at the switch
        # from adding to removing, where they change sign: each traced copy of the loop form is
        # more kernels for XLA to compile.)
        score = _one_loop_scores(state.g, state.h, sign, nc, b)
        g, h, drift, score = refresh(start.rows, LazyA(state.a, state.pending, sign), start.fisher, state.g,
                                     state.h, state.drift, ~eligible,
                                     lambda g_, h_: _one_loop_scores(g_, h_, sign, nc, b), gains=score,
                                     layout=layout.to_flat)
        flat_score = score.reshape(-1)
        p_forward = jnp.argmax(jnp.where(eligible.reshape(-1), flat_score, -jnp.inf))
        cost = kept_if_broken(flat_score[state.picks])
        p_backward = state.picks[jnp.argmin(jnp.where(picked_live, cost, jnp.inf))]
        p = jnp.where(forward, p_forward, p_backward).astype(jnp.int32)
        directions, ul = woodbury_directions(state.a, start.fisher, row(start.rows, p), sign, state.pending)
        g, h, dh = update_flat(flat, g, h, directions, sign)
        mark = lambda m: m.reshape(-1).at[p].set(True).reshape(nc, b)  # noqa: E731
        return _OneLoopState(
            state.a, append(state.pending, t, ul), g, h, drift + dh.reshape(nc, b),
            jnp.where(forward, mark(state.taken), state.taken), jnp.where(forward, state.removed, mark(state.removed)),
            jnp.where(forward, state.picks.at[jnp.minimum(t, n_forward - 1)].set(p), state.picks))

    def block(j, state):
        forward = j < blocks_forward
        sign = jnp.where(forward, 1, -1).astype(dtype)
        lo = jnp.where(forward, j, j - blocks_forward) * LAZY_STEPS
        hi = jnp.minimum(lo + LAZY_STEPS, jnp.where(forward, n_forward, n_back))
        state = jax.lax.fori_loop(lo, hi, functools.partial(step, sign, forward), state)
        return state._replace(a=state.a - sign * mm(state.pending, state.pending.T),
                              pending=jnp.zeros_like(state.pending))

    g, h = layout.to_flat(start.g), layout.to_flat(start.h)
    state = _OneLoopState(start.a, jnp.zeros((d, LAZY_STEPS * r), dtype), g, h, jnp.zeros((nc, b), dtype),
                          ~start.valid, jnp.zeros((nc, b), bool), jnp.zeros(n_forward, jnp.int32))
    end = jax.lax.fori_loop(0, blocks_forward + -(-n_back // LAZY_STEPS), block, state)
    return end.picks[jnp.nonzero(~end.removed.reshape(-1)[end.picks], size=k)[0]]


def one_loop(shards, r, nc, b, n_forward, k) -> bool:
    """Whether :func:`forward_backward` runs :func:`_one_loop` (see ``ONE_LOOP_MAX_WORK``)."""
    return (shards is LOCAL and n_forward > k and not _FlatBlocks(r, nc, b).packed
            and (n_forward - k) * nc * b <= ONE_LOOP_MAX_WORK)


def forward_backward(pool, labeled, lamb, k, n_forward, chunk, shards=LOCAL, n_valid=None, n_lab_valid=None):
    """The whole selection: ``k`` int32 pool indices in pick order.

    ``pool``, ``labeled``: :class:`aljax._bait._rows.KronRows` or dense ``(n, r, d)`` rows
    (``labeled`` also None, or a :class:`aljax._bait._rows.LabeledGram`); ``chunk``: points per
    chunk of the pool axis. ``shards``: :data:`LOCAL`, or a
    :class:`aljax._bait._sharded.Shards` when this is the body of a ``shard_map`` over the example
    axis; ``pool`` (and ``labeled`` when ``shards.labeled_sharded``) is then this device's block.
    ``n_valid``, ``n_lab_valid`` (traced, one device): only that many leading rows of ``pool`` /
    ``labeled`` are points, the rest zero padding to a size bucket (see
    :func:`aljax._bait._plan.plan`); padding adds nothing to ``F`` and is never picked."""
    dtype = jnp.result_type(jnp.float32, *jax.tree_util.tree_leaves((pool, labeled)))
    start = _setup(pool, labeled, lamb, k, chunk, dtype, shards, n_valid, n_lab_valid)
    if one_loop(shards, start.g.shape[1], *counts(start.rows), n_forward, k):
        return _one_loop(start, pool, n_forward, k)
    a, g, h, drift, picks, stale = _forward(start, pool, n_forward, shards)
    if n_forward == k:
        return picks
    return _backward(start, a, g, h, drift, picks, k, shards, stale)


kernel = jax.jit(forward_backward, static_argnames=("k", "n_forward", "chunk"))
# Its twin for small pools on a CPU, compiled with XLA options that shorten the compilation of the
# loop forms' many small fusions (the unrolled forms of large pools run better without them).
quick_kernel = _compile.quick_jit(forward_backward, static_argnames=("k", "n_forward", "chunk"))
