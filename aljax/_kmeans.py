"""Blocks of rows on one device or sharded along the example axis, and k-means on them: the
building blocks of the cold-start selectors (:mod:`aljax._coldstart`).

Distances come in blocks of rows (matrix products), reduced as they come; a pool sharded along
its rows (a ``NamedSharding``) stays where it is: passes over rows run under ``jax.shard_map``
on each device's rows, pairwise ones hand each device's block on around the devices
(:class:`Ring`). The parts may end in zero padding to a size bucket (:class:`Rows`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from ._linalg import HIGHEST
from ._sharding import take_row

# Distance blocks hold about this many entries (rows × columns): 2^24 float32 = 64 MiB.
_BLOCK_ENTRIES = 1 << 24
# Lloyd's iterations: at most this many, stopping earlier as scikit-learn's KMeans does (no
# assignment changed, or the centres moved by at most _KMEANS_TOL × the mean feature variance).
_KMEANS_MAX_ITER = 100
_KMEANS_TOL = 1e-4


def rows_per_block(rows: int, cols: int) -> int:
    """Rows per distance block against ``cols`` columns (at least 8, at most all rows)."""
    return max(1, min(rows, max(8, _BLOCK_ENTRIES // max(cols, 1))))


def sqdist(a, b, sq_a, sq_b):
    """``‖a_i − b_j‖²`` as ``‖a‖² + ‖b‖² − 2 a·b``; cancellation noise below ``16·eps`` of the
    scale counts as 0 (so a point is at distance exactly 0 from itself and its duplicates)."""
    cross = jnp.matmul(a, b.T, precision=HIGHEST, preferred_element_type=a.dtype)
    scale = sq_a[:, None] + sq_b[None, :]
    d = scale - 2 * cross
    return jnp.where(d <= 16 * jnp.finfo(a.dtype).eps * scale, 0.0, d)


def sqnorms(x):
    return jnp.sum(x * x, axis=1)


def map_row_blocks(fn, block: int, *rows):
    """``fn(row_index, *blocks)`` over blocks of ``block`` rows of the arrays ``rows`` (one leading
    length ``n``, zero-padded to a multiple), outputs concatenated along the rows and cut back to
    ``n``. ``row_index`` past ``n`` marks padding."""
    n = rows[0].shape[0]
    nb = -(-n // block)

    def split(a):
        return jnp.pad(a, [(0, nb * block - n)] + [(0, 0)] * (a.ndim - 1)).reshape(nb, block, *a.shape[1:])

    index = jnp.arange(nb * block, dtype=jnp.int32).reshape(nb, block)
    out = jax.lax.map(lambda blk: fn(*blk), (index, *map(split, rows)))
    return jax.tree_util.tree_map(lambda o: o.reshape(nb * block, *o.shape[2:])[:n], out)


# ---------------------------------------------------------------------------------------------
# The pool's rows on one device, or sharded along the example axis.


class Ring(NamedTuple):
    """The devices that hold the pool's row blocks, inside ``jax.shard_map`` over mesh axes
    ``axes`` (``count`` blocks); ``count`` 1 is one device and no collectives. Pairwise passes
    (degrees, nearest neighbours) hand each block on to the next device, so a device holds its
    own rows and one visiting block at a time, never the pool."""

    axes: Any = None
    count: int = 1

    def offset(self, rows: int):
        """Index in the pool of this device's first row (``rows`` per device)."""
        return 0 if self.count == 1 else jax.lax.axis_index(self.axes).astype(jnp.int32) * rows

    def psum(self, x):
        return x if self.count == 1 else jax.lax.psum(x, self.axes)

    def pmin(self, x):
        return x if self.count == 1 else jax.lax.pmin(x, self.axes)

    def visit(self, step, acc, block):
        """``acc = step(acc, visiting)`` with every device's ``block`` visiting in turn, this
        device's own first; after ``t`` hand-ons a device holds the block of the device ``t`` before it."""
        acc = step(acc, block)
        if self.count == 1:
            return acc
        perm = [(i, (i + 1) % self.count) for i in range(self.count)]

        def hand_on(_, state):
            acc, block = state
            block = jax.lax.ppermute(block, self.axes, perm)
            return step(acc, block), block

        return jax.lax.fori_loop(1, self.count, hand_on, (acc, block))[0]


def on_rows(layout, body, rows: tuple, replicated: tuple = (), out_rows=True):
    """``body(ring, *rows, *replicated)`` on every device's block of ``rows`` (arrays sharded
    along the example axis as ``layout``, a :class:`aljax._sharding.RowLayout`), ``replicated``
    whole on every device; outputs sharded along the rows (``out_rows``, a bool or a tuple of them,
    one per output) or replicated. With ``layout`` None, ``body`` runs as it is on one device."""
    if layout is None:
        return body(Ring(), *rows, *replicated)
    spec = PartitionSpec(layout.axes)
    out = jax.tree_util.tree_map(lambda r: spec if r else PartitionSpec(), out_rows)
    ring = Ring(layout.axes, layout.shards)
    # check_vma=False: replicated outputs are psum-med or computed from replicated inputs only.
    return jax.shard_map(lambda *args: body(ring, *args), mesh=layout.mesh,
                         in_specs=(spec,) * len(rows) + (PartitionSpec(),) * len(replicated),
                         out_specs=out, check_vma=False)(*rows, *replicated)


# ---------------------------------------------------------------------------------------------
# k-means: k-means++ seeding, then Lloyd's iterations, over the pool's rows and (optionally)
# labeled rows after them; the pool may be sharded (``layout``), the labeled rows are replicated.


def _row_of(parts, sq, i):
    """Row ``i`` of the parts stacked (and its squared norm), without stacking them: the pool's
    row by :func:`aljax._sharding.take_row` (a sharded pool is not gathered)."""
    row, norm, start = None, None, 0
    for part, s in zip(parts, sq):
        j = jnp.clip(i - start, 0, part.shape[0] - 1)
        r, q = take_row(part, j), take_row(s, j)
        row = r if row is None else jnp.where(i >= start, r, row)
        norm = q if norm is None else jnp.where(i >= start, q, norm)
        start += part.shape[0]
    return row, norm


class Rows(NamedTuple):
    """Which rows of the parts stacked are points, and their index among the points (the pool's
    first, then the labeled set's): the parts may end in zero padding to a size bucket (``counts``:
    the points of each part, traced; None: no padding)."""

    valid: jax.Array      # (rows,) bool
    index: jax.Array      # (rows,) int32
    total: Any            # number of points
    padded: bool

    @classmethod
    def of(cls, parts, counts=None):
        sizes = [p.shape[0] for p in parts]
        valid, index, before = [], [], 0
        for size, count in zip(sizes, sizes if counts is None else counts):
            rows = jnp.arange(size, dtype=jnp.int32)
            valid.append(rows < count)
            index.append(before + rows)
            before = before + count
        return cls(jnp.concatenate(valid), jnp.concatenate(index), before, counts is not None)

    def split(self, parts):
        """:attr:`valid` per part, or None per part without padding."""
        out, start = [], 0
        for p in parts:
            out.append(self.valid[start:start + p.shape[0]] if self.padded else None)
            start += p.shape[0]
        return out


def _points(p, valid, value=0):
    """``p`` with its padding rows (``valid`` False; None: none) set to ``value``."""
    return p if valid is None else jnp.where(valid[:, None], p, value)


def row_gumbel(key, index, dtype):
    """Gumbel noise for each row, number ``index`` (each < ``len(index)``) of one draw: with JAX's
    partitionable Threefry (``jax_threefry_partitionable``, the default) the ``i``-th number of a
    draw does not depend on the draw's length, so neither padding nor sharding changes a point's
    noise. (With it off, padded and unpadded rows draw differently, each a valid draw.)"""
    return jax.random.gumbel(key, index.shape, dtype)[index]


def kmeans_pp_init(key, parts, c: int, rows: Rows, active=None):
    """``c`` centres by k-means++ seeding (Arthur & Vassilvitskii 2007) over the points of
    ``parts`` stacked (``rows``): the first uniformly at random, each next one drawn with
    probability ∝ its squared distance to the nearest centre so far (the Gumbel-max draw, the
    noise per point from its index, :func:`row_gumbel`); when every distance is 0 (fewer distinct
    points than centres), uniformly from the rest. Only the first ``active`` centres (traced; None:
    all ``c``) are seeded, the others left at 0."""
    sq = [sqnorms(p) for p in parts]
    position = jnp.arange(rows.valid.shape[0])

    def dist_to(i):
        row, norm = _row_of(parts, sq, i)
        return jnp.concatenate([sqdist(p, row[None], s, norm[None])[:, 0] for p, s in zip(parts, sq)])

    first_key, key = jax.random.split(key)
    first = jax.random.randint(first_key, (), 0, rows.total)
    first = jnp.argmax(rows.valid & (rows.index == first))
    centres = jnp.zeros((c, parts[0].shape[1]), parts[0].dtype).at[0].set(_row_of(parts, sq, first)[0])

    def step(t, state):
        centres, dist, chosen = state
        out = chosen | ~rows.valid
        w = jnp.where(out, 0.0, dist)
        logits = jnp.where(jnp.any(w > 0), jnp.log(w), jnp.where(out, -jnp.inf, 0.0))
        i = jnp.argmax(logits + row_gumbel(jax.random.fold_in(key, t), rows.index, logits.dtype))
        return centres.at[t].set(_row_of(parts, sq, i)[0]), jnp.minimum(dist, dist_to(i)), chosen | (position == i)

    end = c if active is None else active
    return jax.lax.fori_loop(1, end, step, (centres, dist_to(first), position == first))[0]


def _assign_body(_, x, centres, bias):
    sq_c = sqnorms(centres) + bias

    def block(_, rows):
        cross = jnp.matmul(rows, centres.T, precision=HIGHEST, preferred_element_type=rows.dtype)
        return jnp.argmin(sq_c[None, :] - 2 * cross, axis=1).astype(jnp.int32)

    return map_row_blocks(block, rows_per_block(x.shape[0], centres.shape[0]), x)


def _sums_body(ring, x, assign, c):
    """Per cluster, the sum and the number of this device's rows, summed over the devices."""
    return ring.psum((jax.ops.segment_sum(x, assign, c), jax.ops.segment_sum(jnp.ones_like(assign), assign, c)))


def _lloyd(parts, centres, max_iter: int, layout, rows: Rows | None = None, active=None):
    """:func:`lloyd` over the rows of ``parts`` (the pool, sharded as ``layout``, then optionally
    labeled rows): ``(centres, assignment of each part)``. With ``rows`` (:class:`Rows`), rows
    that are padding are assigned ``c`` (no cluster) and weigh nothing; with ``active`` (traced),
    only the first ``active`` centres take rows."""
    c = centres.shape[0]
    rows = Rows.of(parts) if rows is None else rows
    masks = rows.split(parts)
    total = rows.total
    mean = sum(jnp.sum(_points(p, v), axis=0) for p, v in zip(parts, masks)) / total
    tol = _KMEANS_TOL * jnp.mean(sum(jnp.sum(_points(p - mean, v) ** 2, axis=0) for p, v in zip(parts, masks)) / total)
    lay = (layout,) + (None,) * (len(parts) - 1)
    bias = jnp.zeros(c, centres.dtype) if active is None else jnp.where(jnp.arange(c) < active, 0, jnp.inf)

    def assign(centres):
        out = [on_rows(lo, _assign_body, (p,), (centres, bias)) for p, lo in zip(parts, lay)]
        return tuple(a if v is None else jnp.where(v, a, c) for a, v in zip(out, masks))

    def update(state):
        centres, labels, it, _ = state
        sums, counts = map(sum, zip(*(on_rows(lo, functools.partial(_sums_body, c=c), (p, a), out_rows=False)
                                      for p, a, lo in zip(parts, labels, lay))))
        new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None].astype(sums.dtype), centres)
        new_labels = assign(new)
        same = functools.reduce(jnp.logical_and, [jnp.all(a == b) for a, b in zip(new_labels, labels)])
        return new, new_labels, it + 1, same | (jnp.sum((new - centres) ** 2) <= tol)

    state = jax.lax.while_loop(lambda s: (s[2] < max_iter) & ~s[3], update, (centres, assign(centres), 0, False))
    return state[0], state[1]


def lloyd(x, centres, max_iter: int = _KMEANS_MAX_ITER):
    """Lloyd's iterations from ``centres``: ``(centres, assignment)``, the assignment the nearest
    centre of each row (lowest index on ties). Each iteration moves every centre to the mean of
    its rows (an empty cluster keeps its centre) and reassigns; it stops when no assignment
    changes, when the centres moved by at most ``_KMEANS_TOL`` × the mean feature variance
    (summed squared shift, scikit-learn's rule), or after ``max_iter`` iterations."""
    centres, (assign,) = _lloyd((x,), centres, max_iter, None)
    return centres, assign


def kmeans_of_parts(key, parts, c: int, layout=None, counts=None, active=None):
    """k-means++ seeding then Lloyd's iterations over the points of ``parts`` stacked (``counts``:
    the points of each part, the rest padding; ``active``: the clusters used of the ``c``, both
    traced, None: all): ``(centres, assignment of each part)``, padding assigned ``c``."""
    rows = Rows.of(parts, counts)
    return _lloyd(parts, kmeans_pp_init(key, parts, c, rows, active), _KMEANS_MAX_ITER, layout, rows, active)


def kmeans(key, x, c: int):
    """k-means++ seeding then :func:`lloyd`: ``(centres, assignment)``."""
    centres, (assign,) = kmeans_of_parts(key, (x,), c)
    return centres, assign


def centred(x, labeled, counts=None):
    """Pool and labeled rows shifted by the pool's mean (distances are unchanged; a large common
    offset would otherwise swamp them in ``‖a‖² + ‖b‖² − 2 a·b``), in float32 or wider. With
    ``counts`` (the points of each, traced; the rest zero padding, which every pass masks), the
    mean of the pool's points."""
    dtype = jnp.result_type(jnp.float32, x.dtype)
    x = x.astype(dtype)
    mean = jnp.mean(x, axis=0) if counts is None else jnp.sum(x, axis=0) / counts[0]
    return x - mean, None if labeled is None else labeled.astype(dtype) - mean
