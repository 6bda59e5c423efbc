"""The candidates' Fisher rows: their layouts, products with them, and Fisher sums.

Point ``i`` contributes ``r`` rows ``X_i`` (``r × d``) whose ``X_iᵀX_i`` is its last-layer Fisher.
Two kinds of rows:

* Kronecker rows ``X_i = S_i ⊗ h_iᵀ`` (:class:`KronRows`): an ``r × C`` factor ``S_i`` and the
  ``D`` penultimate features ``h_i``; columns class-major (``c·D + e``, ``d = C·D``);
* dense rows: an ``(n, r, d)`` array.

The loops see the pool axis split into ``nc`` chunks of ``b`` points, the last one padded with zero
rows (:class:`KronChunks`, :class:`DenseChunks`), and never the ``n × r × d`` tensor of Kronecker
rows: every product goes through the factors.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate
from .._embeddings import softmax
from .._linalg import HIGHEST, mm
from .._types import FisherFactors

# From this width ``d`` on, symmetric products are computed block by block over the upper
# triangle only: half the flops of the Fisher sum and the quadratic forms, but a compilation
# several times longer (C unrolled products instead of one), which smaller problems do not win back.
SYMMETRIC_MIN_DIM = 1024


def symmetric_blocks(d: int) -> bool:
    """Whether products with symmetric ``d × d`` matrices use only their upper blocks."""
    return d >= SYMMETRIC_MIN_DIM


@jax.tree_util.register_pytree_node_class
class KronRows:
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


@jax.tree_util.register_pytree_node_class
class LabeledGram:
    """The labeled points' Fisher sum ``Σ_L X_jᵀX_j`` (``d × d``), computed before the selection
    kernel, whose shapes then do not depend on how many points are labeled; and, where the plan
    computed it too, ``inverse``: ``A₀ = M₀⁻¹`` (else None)."""

    def __init__(self, matrix, inverse=None):
        self.matrix, self.inverse = matrix, inverse

    def tree_flatten(self):
        return (self.matrix, self.inverse), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


class KronChunks(NamedTuple):
    """Kronecker rows in chunks, the point axis last so that per-point work runs over contiguous
    vectors (one chunk, as ``lax.map`` hands it over, drops the leading ``nc``)."""

    s: jax.Array   # (nc, r, C, b)
    ht: jax.Array  # (nc, D, b)


class DenseChunks(NamedTuple):
    """Dense rows in chunks (one chunk drops the leading ``nc``)."""

    x: jax.Array   # (nc, b, r, d)


Chunks = Union[KronChunks, DenseChunks]


class FlatKron(NamedTuple):
    """Kronecker rows with the chunk axis merged into the point axis (see :func:`flat_rows`)."""

    s: jax.Array   # (r, C, nc·b)
    ht: jax.Array  # (D, nc·b)


class FlatSoftmax(NamedTuple):
    """Rows ``scale · S_i ⊗ h_iᵀ`` with the softmax factor ``S_i``, kept as ``p`` and ``scale·√p``;
    with ``basis`` ``Q``, the rows on the sum-zero columns ``scale · S_iQ ⊗ h_iᵀ``
    (:func:`softmax_basis`), applied as ``S_i`` to ``(Q ⊗ I) V``."""

    ht: jax.Array   # (D, nc·b)
    p: jax.Array    # (C, nc·b)
    sqp: jax.Array  # (C, nc·b)
    basis: Union[jax.Array, None] = None   # Q (C, C − 1), or None


class FlatDense(NamedTuple):
    """Dense rows with the chunk axis merged into the point axis."""

    x: jax.Array   # (nc·b, r, d)


# ---------------------------------------------------------------------------------------------
# Rows from embeddings and model outputs.


@jax.jit
def from_fisher_factors(emb: FisherFactors) -> KronRows:
    # S from p in the compute dtype (at least float32): the forward steps rebuild S from p there,
    # and a bfloat16 S would disagree with them.
    dtype = jnp.result_type(jnp.float32, emb.probs.dtype, emb.h.dtype)
    emb = FisherFactors(emb.probs.astype(dtype), emb.h)
    return KronRows(emb.s_factor(), emb.h, emb.probs, emb.probs, softmax=True)


def host_fisher_rows(emb: FisherFactors) -> KronRows:
    """:func:`from_fisher_factors` in NumPy, for small concrete inputs on the host or one CPU device
    (:func:`aljax._validate.on_host`): bit for bit the jitted rows (elementwise IEEE operations),
    without the compilation per pool size that the jitted function costs."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(jnp.float32, emb.probs.dtype, emb.h.dtype))
    p = np.asarray(emb.probs).astype(dtype)
    s = np.sqrt(p)[:, :, None] * (np.eye(p.shape[1], dtype=dtype)[None] - p[:, None, :])

    def put(x):
        return x if isinstance(x, jax.Array) else _validate.host_put(x, emb.probs, emb.h)

    p = put(p)
    return KronRows(put(s), put(emb.h), p, p, softmax=True)


@jax.jit
def binary_rows(rows: KronRows) -> KronRows:
    """Two-class softmax rows (:func:`from_fisher_factors`) as one row per point on ``D`` columns.

    For ``C = 2``, ``X_iᵀX_i = 2p_0p_1·uuᵀ ⊗ h_ih_iᵀ`` with the unit ``u = (e_0 − e_1)/√2``. In the
    orthonormal basis ``(u, (e_0 + e_1)/√2) ⊗ I_D`` every row, the labeled and pool Fisher sums,
    hence ``M − λI`` and ``F``, live in the first ``D`` columns, and ``M = λI``, ``F = 0`` on the
    others: ``tr(M⁻¹F)`` and every gain (a function of ``X_iᵀX_i``) are those of the rows
    ``√(2p_0p_1)·h_iᵀ``, with ``r = 1`` and ``d = D`` (a quarter of the ``d × d`` work, half the
    features' products per step, ``1 × 1`` blocks). Same picks up to rounding."""
    w = 2 * rows.w[:, 0] * rows.w[:, 1]
    return KronRows(jnp.sqrt(w)[:, None, None], rows.h, w[:, None], None)


def host_binary_rows(rows: KronRows) -> KronRows:
    """:func:`binary_rows` in NumPy, for small concrete rows (:func:`aljax._validate.on_host`): bit
    for bit the jitted rows (elementwise IEEE operations), without a compilation per pool size."""
    p = np.asarray(rows.w)
    w = 2 * p[:, 0] * p[:, 1]
    return KronRows(_validate.host_put(np.sqrt(w)[:, None, None], rows.w, rows.h), rows.h,
                    _validate.host_put(w[:, None], rows.w, rows.h), None)


def host_gram(emb) -> np.ndarray:
    """``Σ_i X_iᵀX_i`` (:func:`prepare`'s Fisher sum) in NumPy, in float64, for small concrete rows
    (:func:`aljax._validate.on_host`): :class:`KronRows` as ``blockdiag_c(Hᵀ diag(w_c) H) − ZᵀZ``
    (see :func:`gram_kron`), dense ``(n, r, d)`` rows as one product."""
    if not isinstance(emb, KronRows):
        x = np.asarray(emb, np.float64)
        x = x.reshape(-1, x.shape[2])
        return x.T @ x
    h, w = np.asarray(emb.h, np.float64), np.asarray(emb.w, np.float64)
    c, dim = w.shape[1], h.shape[1]
    gram = np.zeros((c, dim, c, dim))
    for ci in range(c):
        gram[ci, :, ci] = (h * w[:, ci:ci + 1]).T @ h
    gram = gram.reshape(c * dim, c * dim)
    if emb.z is None:
        return gram
    zh = (np.asarray(emb.z, np.float64)[:, :, None] * h[:, None, :]).reshape(h.shape[0], -1)
    return gram - zh.T @ zh


def softmax_basis(c: int, dtype):
    """An orthonormal basis of the sum-zero vectors of ``R^C`` (the Helmert contrasts), ``(C, C−1)``.

    Softmax rows annihilate ``1 ⊗ R^D`` (``S_i 1 = 0``): with ``E = Q ⊗ I_D`` every row, Fisher sum,
    ``M − λI`` and ``F`` live in the ``(C−1)·D`` columns of ``E``, and ``M = λI``, ``F = 0`` on the
    others. So BAIT runs on the rows ``X_i E = S_iQ ⊗ h_iᵀ``, ``EᵀFE`` and ``EᵀA₀E``: its per-point
    blocks are the same (``S_iQQᵀ = S_i``) and its ``d × d`` state and work shrink by ``(1 − 1/C)²``
    (:func:`reduce_columns`, :func:`reduce_rows`)."""
    q = np.zeros((c, c - 1))
    for j in range(1, c):
        q[:j, j - 1] = 1 / np.sqrt(j * (j + 1))
        q[j, j - 1] = -j / np.sqrt(j * (j + 1))
    return jnp.asarray(q, dtype)


def reduce_columns(m, q):
    """``EᵀME`` for ``E = Q ⊗ I_D`` (:func:`softmax_basis`): ``(C·D, C·D)`` -> ``((C−1)·D, (C−1)·D)``."""
    c, cr = q.shape
    dim = m.shape[0] // c
    out = jnp.einsum("ca,cedf,db->aebf", q, m.reshape(c, dim, c, dim), q, precision=HIGHEST)
    return out.reshape(cr * dim, cr * dim)


def reduce_rows(rows: KronChunks, q) -> KronChunks:
    """Chunked Kronecker rows times ``E = Q ⊗ I_D``: ``S_i -> S_iQ``."""
    return KronChunks(jnp.einsum("krcb,ca->krab", rows.s, q, precision=HIGHEST), rows.ht)


def host_rows_from_outputs(outputs, h, problem_type) -> KronRows:
    """:func:`rows_from_outputs` in NumPy, for small concrete outputs and features on the host or
    one CPU device (:func:`aljax._validate.on_host`): no compilation per pool size. ``S`` is built
    from ``p`` as the jitted rows build theirs (:func:`host_fisher_rows`); ``p`` may differ from the
    jitted softmax's in the last bit (:func:`aljax._embeddings.softmax`)."""
    if problem_type == "classification":
        return host_fisher_rows(FisherFactors(softmax(outputs), h))
    m = 1 if outputs.ndim == 1 else outputs.shape[1]
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(outputs.dtype, h.dtype))
    n = outputs.shape[0]
    return KronRows(_validate.host_put(np.repeat(np.eye(m, dtype=dtype)[None], n, 0), outputs, h), h,
                    _validate.host_put(np.ones((n, m), dtype), outputs, h), None)


def is_binary(rows) -> bool:
    """Whether ``rows`` are two-class softmax rows (see :func:`binary_rows`)."""
    return isinstance(rows, KronRows) and rows.softmax and rows.s.shape[2] == 2


@functools.partial(jax.jit, static_argnames="problem_type")
def rows_from_outputs(outputs, h, problem_type) -> KronRows:
    if problem_type == "classification":
        return from_fisher_factors(FisherFactors(softmax(outputs), h))
    # Gaussian head: the Fisher is h hᵀ per output, i.e. S_i = I_m, one row e_j ⊗ h_i per output j.
    m = 1 if outputs.ndim == 1 else outputs.shape[1]
    n = outputs.shape[0]
    dtype = jnp.result_type(outputs.dtype, h.dtype)
    s = jnp.broadcast_to(jnp.eye(m, dtype=dtype), (n, m, m))
    return KronRows(s, h, jnp.ones((n, m), dtype), None)


@jax.jit
def fisher_trace(rows) -> jax.Array:
    """``Σ_i tr(X_iᵀX_i) = Σ_i ‖X_i‖²_F`` over the points of :class:`KronRows` (``‖S_i‖²_F·‖h_i‖²``)
    or dense ``(n, r, d)`` rows, in the compute dtype (at least float32)."""
    if isinstance(rows, KronRows):
        dtype = jnp.result_type(jnp.float32, rows.s.dtype, rows.h.dtype)
        s2 = jnp.sum(jnp.square(rows.s.astype(dtype)), axis=(1, 2))
        return jnp.sum(s2 * jnp.sum(jnp.square(rows.h.astype(dtype)), axis=1))
    return jnp.sum(jnp.square(rows.astype(jnp.result_type(jnp.float32, rows.dtype))))


def host_fisher_trace(rows) -> float:
    """:func:`fisher_trace` in NumPy (float64), for small concrete rows on the host or one CPU
    device (:func:`aljax._validate.on_host`): no compilation per pool size."""
    if isinstance(rows, KronRows):
        s2 = np.sum(np.square(np.asarray(rows.s, np.float64)), axis=(1, 2))
        return float(s2 @ np.sum(np.square(np.asarray(rows.h, np.float64)), axis=1))
    return float(np.sum(np.square(np.asarray(rows, np.float64))))


def n_cols(rows) -> int:
    """``d``, the columns of every point's rows (``C·D`` for :class:`KronRows`)."""
    return rows.s.shape[2] * rows.h.shape[1] if isinstance(rows, KronRows) else rows.shape[2]


def n_points(emb) -> int:
    """Points in :class:`KronRows` or dense ``(n, r, d)`` rows."""
    return emb.s.shape[0] if isinstance(emb, KronRows) else emb.shape[0]


# ---------------------------------------------------------------------------------------------
# Chunked layouts.


def _pad_rows(x, n_pad):
    pad = [(0, n_pad - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, pad)


def chunk_kron(s, h, b) -> KronChunks:
    n, r, c = s.shape
    nc = -(-n // b)
    s = _pad_rows(s, nc * b).reshape(nc, b, r, c).transpose(0, 2, 3, 1)
    ht = _pad_rows(h, nc * b).reshape(nc, b, h.shape[1]).transpose(0, 2, 1)
    return KronChunks(s, ht)


def chunk_dense(x, b) -> DenseChunks:
    n, r, d = x.shape
    nc = -(-n // b)
    return DenseChunks(_pad_rows(x, nc * b).reshape(nc, b, r, d))


def counts(rows: Chunks) -> tuple[int, int]:
    """``(nc, b)``: chunks, and points per chunk."""
    if isinstance(rows, KronChunks):
        return rows.s.shape[0], rows.s.shape[3]
    return rows.x.shape[0], rows.x.shape[1]


def scale_rows(rows: Chunks, scale) -> Chunks:
    if isinstance(rows, KronChunks):
        return KronChunks(rows.s * scale, rows.ht)
    return DenseChunks(rows.x * scale)


def row(rows: Chunks, i):
    """``X_i`` as an ``(r, d)`` array."""
    return dense(gather(rows, jnp.reshape(i, (1,))))[0]


def gather(rows: Chunks, idx) -> Chunks:
    """The rows of points ``idx`` as one chunk of ``len(idx)`` points."""
    nc, b = counts(rows)
    ci, pi = idx // b, idx % b
    if isinstance(rows, KronChunks):
        return KronChunks(rows.s[ci, :, :, pi].transpose(1, 2, 0)[None], rows.ht[ci, :, pi].T[None])
    return DenseChunks(rows.x[ci, pi][None])


def dense(chunk: Chunks) -> jax.Array:
    """The rows of one chunk of ``m`` points (:func:`gather`: leading axis 1) as ``(m, r, d)``."""
    if isinstance(chunk, KronChunks):
        s, ht = chunk.s[0], chunk.ht[0]                                   # (r, C, m), (D, m)
        return (s.transpose(2, 0, 1)[:, :, :, None] * ht.T[:, None, None, :]).reshape(ht.shape[1], s.shape[0], -1)
    return chunk.x[0]


def picked(rows: Chunks, g, h, drift, idx):
    """Rows (as one chunk, :func:`gather`), blocks ``g, h (r, r, m)`` and drift ``(m,)`` of points
    ``idx``, from chunked rows, blocks ``(nc, r, r, b)`` and drift ``(nc, b)``."""
    nc, b = counts(rows)
    ci, pi = idx // b, idx % b
    return gather(rows, idx), g[ci, :, :, pi].transpose(1, 2, 0), h[ci, :, :, pi].transpose(1, 2, 0), drift[ci, pi]


def mask_points(chunk: Chunks, keep) -> Chunks:
    """One chunk (:func:`gather`) with the rows of the points not in ``keep (m,)`` set to zero."""
    if isinstance(chunk, KronChunks):
        return KronChunks(jnp.where(keep, chunk.s, 0), jnp.where(keep, chunk.ht, 0))
    return DenseChunks(jnp.where(keep[:, None, None], chunk.x, 0))


def flat_rows(rows: Chunks, probs=None, scale=1.0, basis=None):
    """The rows with the chunk axis merged into the point axis, for the forward steps: a copy,
    made once, for Kronecker rows (:class:`FlatKron`, or :class:`FlatSoftmax` when ``probs (n, C)``
    is given: the rows are ``scale · S_i ⊗ h_iᵀ`` with the softmax factor ``S_i``); a view for
    dense ones."""
    if isinstance(rows, KronChunks):
        s, ht = rows.s, rows.ht
        ht = ht.transpose(1, 0, 2).reshape(ht.shape[1], -1)
        if probs is None:
            return FlatKron(s.transpose(1, 2, 0, 3).reshape(s.shape[1], s.shape[2], -1), ht)
        p = _pad_rows(probs.astype(s.dtype), ht.shape[1]).T
        return FlatSoftmax(ht, p, jnp.sqrt(p) * scale, basis)
    x = rows.x
    return FlatDense(x.reshape(-1, x.shape[2], x.shape[3]))


# ---------------------------------------------------------------------------------------------
# Products with the rows.


def bmm(x, y):
    """Batched matmul with the batch axis last: ``(a, j, n) @ (j, c, n) -> (a, c, n)``, unrolled
    over ``j`` so that XLA emits one fused elementwise loop over contiguous batch vectors."""
    out = x[:, 0, None, :] * y[0][None]
    for j in range(1, x.shape[1]):
        out = out + x[:, j, None, :] * y[j][None]
    return out


def apply(rows: Chunks, v):
    """``X_i V`` for every point of one chunk, points first (as :func:`aljax._bait._blocks.correct`
    takes it): ``v (d, m)`` -> ``(b, r, m)``."""
    if isinstance(rows, KronChunks):
        s, ht = rows.s, rows.ht
        c, dim = s.shape[1], ht.shape[0]
        m = v.shape[1]
        # T[c, j, n] = Σ_e V[c·D + e, j] h_n[e];  (X_n V)[a, j] = Σ_c S_n[a, c] T[c, j, n].
        t = mm(v.reshape(c, dim, m).transpose(0, 2, 1).reshape(c * m, dim), ht).reshape(c, m, -1)
        return bmm(s, t).transpose(2, 0, 1)
    x = rows.x
    bsz, r, d = x.shape
    return mm(x.reshape(bsz * r, d), v).reshape(bsz, r, -1)


def apply_flat(flat, v, batch_first=False):
    """``X_i V`` for every point of the whole pool (``flat`` from :func:`flat_rows`): ``v (d, m)``
    -> ``(r, m, nc·b)``, or ``(nc·b, r, m)`` with ``batch_first`` (the layout of a batched
    matmul over the points: :func:`aljax._bait._blocks.correct`). One large matmul rather than a
    batch of per-chunk ones, and no per-step transposes between layouts."""
    m = v.shape[1]
    if isinstance(flat, FlatDense):
        x = flat.x
        out = mm(x.reshape(-1, x.shape[2]), v).reshape(x.shape[0], x.shape[1], m)
        return out if batch_first else out.transpose(1, 2, 0)
    ht = flat.ht
    dim = ht.shape[0]
    if isinstance(flat, FlatSoftmax) and flat.basis is not None:
        # (Q ⊗ I) V, O(C²D) per column: then S_i in O(C) per column and point, not S_iQ in O(C²).
        q = flat.basis
        v = jnp.einsum("ca,aem->cem", q, v.reshape(q.shape[1], dim, m), precision=HIGHEST).reshape(-1, m)
    c = v.shape[0] // dim
    vt = v.reshape(c, dim, m).transpose(0, 2, 1).reshape(c * m, dim)
    if batch_first:
        t = jnp.matmul(ht.T, vt.T, precision=HIGHEST).reshape(-1, c, m)        # (nc·b, C, m)
        if isinstance(flat, FlatKron):
            return jnp.einsum("acn,ncj->naj", flat.s, t, precision=HIGHEST)
        # S T = scale·diag(√p)(T − 1 pᵀT), per point
        mean = jnp.einsum("cn,ncj->nj", flat.p, t, precision=HIGHEST)
        return flat.sqp.T[:, :, None] * (t - mean[:, None, :])
    t = mm(vt, ht).reshape(c, m, -1)                                           # (C, m, nc·b)
    if isinstance(flat, FlatKron):
        return bmm(flat.s, t)
    # S T = scale·diag(√p)(T − 1 pᵀT)
    # pᵀT in a loop over the classes, so that XLA computes it once. (Written as one expression it was
    # fused into the product below and redone for every row a; as a reduction, it was fused into the
    # pool product's YNN fusion, which ran it worse still; XLA:CPU drops optimization barriers.)
    p = flat.p
    at = functools.partial(jax.lax.dynamic_index_in_dim, axis=0, keepdims=False)
    mean = jax.lax.fori_loop(1, c, lambda ci, acc: acc + at(p, ci)[None] * at(t, ci), p[0, None] * t[0])
    return flat.sqp[:, None, :] * (t - mean[None])


def quad(rows: Chunks, mat, symmetric=False):
    """``X_i B X_iᵀ`` for every point of one chunk, ``B`` symmetric ``(d, d)`` -> ``(r, r, b)``.
    ``symmetric``: compute only half of the class blocks (half the work), from ``mat``'s upper
    blocks only (see :func:`quad_chunks`)."""
    if isinstance(rows, KronChunks) and symmetric:
        return quad_chunks(jax.tree_util.tree_map(lambda v: v[None], rows), mat, True)[0]
    if isinstance(rows, DenseChunks):
        x = rows.x
        bsz, r, d = x.shape
        xb = mm(x.reshape(bsz * r, d), mat).reshape(bsz, r, d)
        return jnp.einsum("nae,nbe->abn", xb, x, precision=HIGHEST)
    s, ht = rows.s, rows.ht
    c, dim = s.shape[1], ht.shape[0]
    h_rows = ht.T                                                       # (b, D)
    # Q[c, c', n] = Σ_{e,f} h_n[e] B[(c, e), (c', f)] h_n[f], every block: points first, the
    # sum over f a batched matrix-vector product (as a sum of a broadcast product, XLA
    # materialised h broadcast to (C, C, D, b)).
    t = mm(h_rows, mat.reshape(c, dim, c, dim).transpose(1, 0, 2, 3).reshape(dim, c * c * dim))
    q = jnp.einsum("nkf,nf->kn", t.reshape(-1, c * c, dim), h_rows, precision=HIGHEST).reshape(c, c, -1)
    return jnp.einsum("acn,cdn,bdn->abn", s, q, s, precision=HIGHEST)


def quad_chunks(rows: Chunks, mat, symmetric=False):
    """:func:`quad` for every chunk -> ``(nc, r, r, b)``. ``symmetric`` (Kronecker rows): only half
    of the class blocks ``Q[c, c'] = h_iᵀ B[c-block, c'-block] h_i``, by rows: class row ``c`` takes
    the blocks ``c' = c, c + 1, …, c + ⌊C/2⌋`` (mod ``C``), ``C(⌊C/2⌋ + 1)`` blocks in all (the
    upper triangle's ``C(C + 1)/2`` for odd ``C``). Every row is then as wide, so the rows run as
    one loop: written out, a kernel per class row and entry made XLA's compilation seconds
    longer. Only ``B``'s upper blocks are read: past the diagonal, block ``(c', c)`` stands for
    ``(c, c')`` (``hᵀMh = hᵀMᵀh``)."""
    if not (symmetric and isinstance(rows, KronChunks)):
        return jax.lax.map(lambda chunk: quad(chunk, mat, symmetric), rows)
    s, ht = rows.s, rows.ht
    nc, c, b = s.shape[0], s.shape[2], s.shape[3]
    dim = ht.shape[1]
    half = c // 2 + 1

    blocks = mat.reshape(c, dim, c, dim)

    def class_row(ci, out):
        cj = (ci + jnp.arange(half)) % c
        block_row = blocks[jnp.minimum(ci, cj), :, jnp.maximum(ci, cj), :]             # (half, D, D)
        block_row = block_row.transpose(1, 0, 2).reshape(dim, half * dim)

        def chunk(ht_k):
            h_rows = ht_k.T                                             # (b, D)
            t = mm(h_rows, block_row).reshape(b, half, dim)
            return jnp.sum(t * h_rows[:, None, :], axis=2).T            # (half, b)

        return jax.lax.dynamic_update_index_in_dim(out, jax.lax.map(chunk, ht), ci, axis=1)

    out = jax.lax.fori_loop(0, c, class_row, jnp.zeros((nc, c, half, b), mat.dtype))
    # Q[a, a'] from row a (offset (a' − a) mod C) or, past half the classes, from row a'.
    index = [a * half + (a2 - a) % c if (a2 - a) % c < half else a2 * half + (a - a2) % c
             for a in range(c) for a2 in range(c)]
    q = jnp.take(out.reshape(nc, c * half, b), jnp.asarray(index), axis=1).reshape(nc, c, c, b)
    return jnp.einsum("kacn,kcdn,kbdn->kabn", s, q, s, precision=HIGHEST)  # S Q Sᵀ


def quad_gram(rows: KronChunks, w, z):
    """``X_i G X_iᵀ`` for every point of ``rows`` (chunked blocks ``(nc, r, r, b)``), ``G`` the
    Fisher sum of those same rows (:func:`gram_kron` of ``w, z`` and the rows' ``h``), without
    ``G``: ``h_iᵀ G_cc' h_i = δ_cc' Σ_j w_jc (h_i·h_j)² − Σ_j z_jc z_jc' (h_i·h_j)²``, one
    ``(b × D) @ (D × n)`` product of features per chunk (``2n²D`` flops in all, against
    ``n·C²·D²`` for :func:`quad` with ``G``: fewer while ``n`` is below about ``C²D/2``). ``w, z``
    ``(n, C)`` with ``n`` at most the rows' padded points (zero rows past ``n``)."""
    nc, b = counts(rows)
    dim, c = rows.ht.shape[1], rows.s.shape[2]
    dtype = rows.ht.dtype
    h_all = rows.ht.transpose(1, 0, 2).reshape(dim, nc * b)             # (D, N), zero padding
    cols = [_pad_rows(w.astype(dtype), nc * b)]
    if z is not None:
        z = _pad_rows(z.astype(dtype), nc * b)
        cols.append((z[:, :, None] * z[:, None, :]).reshape(nc * b, c * c))
    v = jnp.concatenate(cols, axis=1)                                   # (N, C [+ C²])
    eye = jnp.eye(c, dtype=dtype)

    def one(chunk):
        s, ht = chunk
        kv = mm(jnp.square(mm(ht.T, h_all)), v)                         # (b, C [+ C²])
        q = eye[:, :, None] * kv[:, :c].T[None]                         # (C, C, b)
        if z is not None:
            q = q - kv[:, c:].T.reshape(c, c, -1)
        return jnp.einsum("acn,cdn,bdn->abn", s, q, s, precision=HIGHEST)

    return jax.lax.map(one, rows)


def quad_gram_cheaper(n: int, c: int, dim: int) -> bool:
    """Whether :func:`quad_gram` (``n²(D + C²)`` multiply-adds) costs less than :func:`quad` with
    the Fisher sum over the upper class blocks (``n·C(C+1)/2·D²``)."""
    return n * (dim + c + c * c) < c * (c + 1) // 2 * dim * dim


# ---------------------------------------------------------------------------------------------
# Fisher sums without per-point outer products.


# gram_kron's upper form takes chunks of at least GRAM_MIN_POINTS points where the caller's are smaller (up to
# GRAM_CHUNKS times theirs, which bounds its temporaries): each chunk's products are added to the d × d sum, a pass
# over it, and that form has more of them per chunk. Where the caller's chunks are that large already, larger ones
# were slower.
GRAM_CHUNKS = 4
GRAM_MIN_POINTS = 1024


def gram_kron(w, z, h, b, dtype, symmetric=False, basis=None):
    """``Σ_i (diag w_i − z_i z_iᵀ) ⊗ h_i h_iᵀ`` (``z`` may be None: no rank-one term), accumulated
    over chunks of ``b`` points, without per-point outer products; with ``basis`` ``Q``
    (:func:`softmax_basis`), on the sum-zero columns: ``EᵀGE`` (:func:`reduce_columns`) directly.

    Its class blocks are ``Hᵀ diag(s_cc') H`` with ``s_i = Qᵀ(diag w_i − z_i z_iᵀ)Q`` (``Q = I``
    without a basis). With ``symmetric`` or a basis, only the upper class blocks ``c' ≥ c`` are
    computed, one ``(D × b) @ (b × (C − c)·D)`` product per class row and chunk, and mirrored: at
    ``C = 10``, 45 blocks on the sum-zero columns against 55 (and the 10 diagonal ones apart) on all
    ``C`` of them, and no ``EᵀGE`` pass. Otherwise ``blockdiag_c(Hᵀ diag(w_c) H) − ZᵀZ`` with rows
    ``Z_i = z_i ⊗ h_i`` (without ``z``, the diagonal blocks only): two products, a short
    compilation for narrow heads. (The upper form in chunks of ``b`` points or more: ``GRAM_MIN_POINTS``.)"""
    n, c = w.shape
    dim = h.shape[1]
    if basis is not None or (symmetric and z is not None):
        nc = -(-n // min(GRAM_CHUNKS * b, max(b, GRAM_MIN_POINTS)))
        b = -(-n // nc)
        return _gram_upper(w, z, None if basis is None else basis.astype(dtype), h, nc, b, dtype)
    nc = -(-n // b)
    ht = _pad_rows(h.astype(dtype), nc * b).reshape(nc, b, dim)
    wt = _pad_rows(w.astype(dtype), nc * b).reshape(nc, b, c)
    zt = None if z is None else _pad_rows(z.astype(dtype), nc * b).reshape(nc, b, c)

    def body(j, acc):
        diag, zz = acc
        hj = ht[j]
        diag = diag + jnp.einsum("nc,nd,ne->cde", wt[j], hj, hj, precision=HIGHEST)
        if zt is not None:
            zh = (zt[j][:, :, None] * hj[:, None, :]).reshape(b, -1)       # (b, C·D)
            zz = zz + mm(zh.T, zh)
        return diag, zz

    zz = None if zt is None else jnp.zeros((c * dim, c * dim), dtype)
    diag, zz = jax.lax.fori_loop(0, nc, body, (jnp.zeros((c, dim, dim), dtype), zz))
    eye = jnp.eye(c, dtype=dtype)
    gram = (eye[:, None, :, None] * diag[:, :, None, :]).reshape(c * dim, c * dim)
    return gram if zt is None else gram - zz


def _class_weights(w, z, basis):
    """The points' ``Qᵀ(diag w_i − z_i z_iᵀ)Q`` (``Q = I`` if ``basis`` is None): ``(b, c, c)`` for
    ``w, z (b, C)``."""
    if basis is None:
        s = jax.vmap(jnp.diag)(w)
        zq = z
    else:
        s = jnp.einsum("nc,ca,cb->nab", w, basis, basis, precision=HIGHEST)
        zq = None if z is None else mm(z, basis)
    return s if zq is None else s - zq[:, :, None] * zq[:, None, :]


def _gram_upper(w, z, basis, h, nc, b, dtype):
    """``Σ_i s_i ⊗ h_i h_iᵀ`` with ``s_i`` :func:`_class_weights` (formed a chunk of ``b`` points at
    a time: ``(n, C, C)`` at once would be ``C/D`` times the rows' size): the upper class blocks,
    then mirrored."""
    dim = h.shape[1]
    c = w.shape[1] if basis is None else basis.shape[1]
    chunked = [None if v is None else _pad_rows(v.astype(dtype), nc * b).reshape(nc, b, -1) for v in (w, z, h)]
    wt, zt, ht = chunked

    def body(j, upper):
        hj, sj = ht[j], _class_weights(wt[j], None if zt is None else zt[j], basis)
        return [u + mm(hj.T, (sj[:, ci, ci:, None] * hj[:, None, :]).reshape(b, -1)) for ci, u in enumerate(upper)]

    upper = jax.lax.fori_loop(0, nc, body, [jnp.zeros((dim, (c - ci) * dim), dtype) for ci in range(c)])
    upper = jnp.concatenate([jnp.pad(u, ((0, 0), (ci * dim, 0))) for ci, u in enumerate(upper)])
    on_diagonal = jnp.kron(jnp.eye(c, dtype=dtype), jnp.ones((dim, dim), dtype))
    return upper + upper.T - on_diagonal * upper


def gram_dense(x, b, dtype, basis=None):
    """``Σ_i X_iᵀX_i`` accumulated over chunks of ``b`` points (with ``basis``, then
    :func:`reduce_columns`)."""
    n, r, d = x.shape
    nc = -(-n // b)
    xt = _pad_rows(x.astype(dtype), nc * b).reshape(nc, b * r, d)
    gram = jax.lax.fori_loop(0, nc, lambda j, acc: acc + mm(xt[j].T, xt[j]), jnp.zeros((d, d), dtype))
    return gram if basis is None else reduce_columns(gram, basis)


def prepare(emb, b, dtype):
    """Chunked rows (for the blocks) and, as a function of an optional ``basis`` (:func:`gram_kron`),
    the Fisher sum of one embedding."""
    if isinstance(emb, KronRows):
        rows = chunk_kron(emb.s.astype(dtype), emb.h.astype(dtype), b)
        symmetric = symmetric_blocks(emb.s.shape[2] * emb.h.shape[1])
        return rows, functools.partial(gram_kron, emb.w, emb.z, emb.h, b, dtype, symmetric)
    rows = chunk_dense(emb.astype(dtype), b)
    return rows, functools.partial(gram_dense, emb, b, dtype)
