"""The stream's rows: the ``r × d`` block ``U_i`` of each point, fixed-size chunks of them, and
the covariance ``Σ̂`` (mean of ``U_iᵀU_i``) computed in one pass."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from .. import _sharding
from .._pool import stream_chunks
from .._linalg import mm
from .._padding import pad_tree
from .._types import Factored, FisherFactors

# Points per kernel call. Fixed, and the stream is cut at multiples of it whatever the caller's
# batches, so the uniform draw of every point (and so every pick) is independent of batching.
CHUNK = 1024


def dense_rows(emb, rank: int, dtype) -> jax.Array:
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
        s_rows, h = fisher_s_rows(emb.probs.astype(dtype), rank), emb.h.astype(dtype)
        return (s_rows[:, :, :, None] * h[:, None, None, :]).reshape(h.shape[0], rank, -1)
    x = emb.astype(dtype)
    return x[:, None, :] if x.ndim == 2 else x


def fisher_s_rows(probs, rank: int) -> jax.Array:
    """``√p_c (e_c − p)`` for the ``rank`` most probable classes ``c`` of each point (ties to the
    lower class index): the class factors of the Fisher rows, ``(n, r, C)``."""
    _, top = jax.lax.top_k(probs, rank)  # (n, r)
    p_top = jnp.take_along_axis(probs, top, axis=1)  # (n, r)
    onehot = jax.nn.one_hot(top, probs.shape[1], dtype=probs.dtype)  # (n, r, C)
    return jnp.sqrt(p_top)[:, :, None] * (onehot - probs[:, None, :])


def factor_rows(emb, rank: int, dtype) -> tuple[jax.Array, jax.Array]:
    """The stream rows of :func:`dense_rows` as factors ``(a, h)``, ``(n·r, C')`` and
    ``(n·r, D')``: row ``t`` of point ``i`` is ``a[i·r + t] ⊗ h[i·r + t]`` (class-major, so
    ``C'·D' = d``). Fisher rows are ``(√p_c (e_c − p)) ⊗ h`` (``h`` repeated for the ``r``
    rows), a :class:`Factored` row is ``a ⊗ h``, and a dense row ``x`` is ``1 ⊗ x`` (``C' = 1``)."""
    if isinstance(emb, Factored):
        return emb.a.astype(dtype), emb.h.astype(dtype)
    if isinstance(emb, FisherFactors):
        s_rows, h = fisher_s_rows(emb.probs.astype(dtype), rank), emb.h.astype(dtype)
        return s_rows.reshape(-1, s_rows.shape[-1]), jnp.repeat(h, rank, axis=0)
    x = emb.astype(dtype)
    x = x.reshape(-1, x.shape[-1])
    return jnp.ones((x.shape[0], 1), dtype), x


def implied_rank(emb, rank: int | None) -> int:
    """The rows per point of ``emb``: ``rank`` (default 1) for :class:`FisherFactors`, 1 for a
    :class:`Factored` or ``(n, d)`` array, ``r`` for an ``(n, r, d)`` array."""
    if isinstance(emb, FisherFactors):
        return 1 if rank is None else rank
    if isinstance(emb, Factored) or emb.ndim == 2:
        return 1
    return emb.shape[1]


def is_embedding(obj) -> bool:
    """An embedding (rather than an iterable of embedding blocks)."""
    return isinstance(obj, (Factored, FisherFactors)) or hasattr(obj, "shape")


def width(emb) -> int:
    """``d``, the width of every stream row of ``emb``."""
    return emb.dim if isinstance(emb, (Factored, FisherFactors)) else emb.shape[-1]


def n_rows(block) -> int:
    return jax.tree_util.tree_leaves(block)[0].shape[0]


def take(block, start, stop):
    return jax.tree_util.tree_map(lambda leaf: leaf[start:stop], block)


def array_blocks(emb, n: int):
    """``emb`` in blocks of :data:`CHUNK` rows (the last one shorter)."""
    for start in range(0, n, CHUNK):
        yield take(emb, start, min(start + CHUNK, n))


def compute_dtype(*embs) -> jnp.dtype:
    """The floating dtype the kernels run in: float32, or wider where an input is."""
    leaves = [leaf for emb in embs if emb is not None for leaf in jax.tree_util.tree_leaves(emb)]
    return jnp.result_type(jnp.float32, *[leaf.dtype for leaf in leaves])


def rechunk(blocks: Iterable, size: int):
    """``(chunk, n_valid)`` with exactly ``size`` rows per chunk (the last zero-padded) from an
    iterable of embedding blocks (arrays, ``Factored`` or ``FisherFactors``) of any sizes."""
    if isinstance(blocks, PaddedChunks) and blocks.size == size:
        return iter(blocks)
    return stream_chunks(blocks, size, pad="zeros")


class PaddedChunks:
    """An embedding's rows as the ``(chunk, n_valid)`` pairs of :func:`rechunk`, made by one
    jitted zero-padding of the whole embedding to a multiple of :data:`CHUNK` rows and slices of
    that at fixed offsets, so that a new pool size compiles one padding (cutting the last block
    and padding it eagerly compiles each of those small ops anew). Iterable more than once."""

    def __init__(self, emb, n: int):
        self.emb, self.n, self.size = emb, n, CHUNK

    def __iter__(self):
        padded = pad_tree(self.emb, size=-(-self.n // self.size) * self.size)
        replicated = _replicated(self.emb)
        for start in range(0, self.n, self.size):
            chunk = take(padded, start, start + self.size)
            yield (chunk if replicated is None else jax.device_put(chunk, replicated)), min(self.size, self.n - start)


def _replicated(emb):
    """For an embedding with a leaf sharded along its rows (over the devices of one process or
    of several), the replicated sharding on that leaf's mesh, else None. The stream is
    sequential: each chunk's rows are gathered to every device (device to device, never through
    a host) and every device runs the same keep decisions on the same values, the one-device
    picks; on a chunk left sharded XLA partitions the kernel's loop, its float rounding changes,
    and so can the picks."""
    for leaf in jax.tree_util.tree_leaves(emb):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(leaf, jax.core.Tracer) or not isinstance(sharding, NamedSharding):
            continue
        if _sharding.row_layout("volume_stream", "embedding", leaf) is not None:
            return NamedSharding(sharding.mesh, PartitionSpec())
    return None


@functools.partial(jax.jit, static_argnames=("rank",))
def _gram_chunk(acc, chunk, n_valid, *, rank: int):
    """``acc + Σ_i U_iᵀU_i`` over the first ``n_valid`` rows of ``chunk``."""
    x = dense_rows(chunk, rank, acc.dtype)
    x = jnp.where((jnp.arange(x.shape[0]) < n_valid)[:, None, None], x, 0)
    xf = x.reshape(-1, x.shape[-1])
    return acc + mm(xf.T, xf)


def gram(blocks, d: int, rank: int, dtype) -> tuple[jax.Array, int]:
    """``(Σ U_iᵀU_i, count)`` over a stream of embedding blocks, in chunks."""
    acc, count = jnp.zeros((d, d), dtype), 0
    for chunk, n_valid in rechunk(blocks, CHUNK):
        acc = _gram_chunk(acc, chunk, jnp.int32(n_valid), rank=rank)
        count += n_valid
    return acc, count


def covariance_of(embedding, labeled=None, rank: int | None = None) -> jax.Array:
    """VeSSAL's precomputed covariance ``Σ̂``: the mean of ``U_iᵀU_i`` over the rows of the pool
    and, when ``labeled`` is given, of the labeled set (what ``covariance=`` of
    :func:`~aljax.volume_stream` takes, and what ``vessal(..., precompute_covariance=True)`` uses).

    The inputs are expected to be valid (the public functions check them).

    Args:
      embedding: the pool's embedding, in any form :func:`~aljax.volume_stream` accepts (``d`` the
        width of its rows), or an iterable of such blocks (one pass over a stream; its first block
        gives ``d`` and the dtype).
      labeled: optional labeled-set embedding of the same kind and width (an embedding, not an
        iterable).
      rank: rows per point for a :class:`~aljax.FisherFactors` (default 1); ``None`` or the rank
        the shape implies for the other kinds.

    Returns:
      ``Σ̂``, a ``(d, d)`` array in the dtype the kernels use for the pool.

    Example:
      >>> import jax.numpy as jnp
      >>> from aljax._vessal import covariance_of
      >>> covariance_of(jnp.eye(4)[:2] * 2).diagonal()
      Array([2., 2., 0., 0.], dtype=float32)
    """
    if is_embedding(embedding):
        first, blocks = embedding, PaddedChunks(embedding, n_rows(embedding))
    else:
        blocks = iter(embedding)
        try:
            first = next(blocks)
        except StopIteration:
            raise ValueError("aljax.covariance_of: the stream of embedding blocks is empty.") from None
        blocks = itertools.chain([first], blocks)
    rank = implied_rank(first, rank)
    d, dtype = width(first), compute_dtype(first)
    total, count = gram(blocks, d, rank, dtype)
    if labeled is not None:
        labeled_total, labeled_count = gram(array_blocks(labeled, n_rows(labeled)), d, rank, dtype)
        total, count = total + labeled_total, count + labeled_count
    return total / count
