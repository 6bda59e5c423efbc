"""Cold start: which points to label first, before any classifier exists, from the embeddings of
a pretrained encoder (a sentence encoder, a self-supervised image model).

* :func:`typiclust` (Hacohen, Dekel & Weinshall, ICML 2022): k-means into ``|labeled| + k``
  clusters; from the uncovered clusters, largest first, the most typical point of each.
* :func:`probcover` (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): greedy maximum coverage
  of the δ-ball graph, δ chosen by the paper's purity rule when not given.

Both are selectors on arrays, ``(embedding, k, *, key=0, labeled=None, ...)``, and never build an
``n × n`` matrix: distances come in blocks of rows (matrix products), reduced as they come.

A pool sharded along its rows (a ``NamedSharding``) stays where it is: the passes over rows
(assignments, cluster sums, the labeled set) run under ``jax.shard_map`` on each device's rows,
the pairwise ones (typicality, degrees, the purity rule) hand each device's block of rows on
around the devices (:class:`_Ring`), and the steps of the k-means++ seeding and the coverage
greedy move single rows (:func:`aljax._sharding.take_row`). What crosses devices is rows, blocks
of rows, per-cluster sums and vectors of one number per point, never the pool as a whole.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from . import _validate
from ._linalg import HIGHEST
from ._sharding import auto_axes, row_layout, take_row

# Distance blocks hold about this many entries (rows × columns): 2^24 float32 = 64 MiB.
_BLOCK_ENTRIES = 1 << 24
# Rows of the newly covered set processed together in a ProbCover step.
_COVER_BLOCK = 256
# Lloyd's iterations: at most this many, stopping earlier as scikit-learn's KMeans does (no
# assignment changed, or the centres moved by at most _KMEANS_TOL × the mean feature variance).
_KMEANS_MAX_ITER = 100
_KMEANS_TOL = 1e-4
# TypiClust: clusters of at most this many points are used last (the authors' code drops them).
_MIN_CLUSTER_SIZE = 5


def _row_block(rows: int, cols: int) -> int:
    """Rows per distance block against ``cols`` columns (at least 8, at most all rows)."""
    return max(1, min(rows, max(8, _BLOCK_ENTRIES // max(cols, 1))))


def _sqdist(a, b, sq_a, sq_b):
    """``‖a_i − b_j‖²`` as ``‖a‖² + ‖b‖² − 2 a·b``; cancellation noise below ``16·eps`` of the
    scale counts as 0 (so a point is at distance exactly 0 from itself and its duplicates)."""
    cross = jnp.matmul(a, b.T, precision=HIGHEST, preferred_element_type=a.dtype)
    scale = sq_a[:, None] + sq_b[None, :]
    d = scale - 2 * cross
    return jnp.where(d <= 16 * jnp.finfo(a.dtype).eps * scale, 0.0, d)


def _sqnorms(x):
    return jnp.sum(x * x, axis=1)


def _map_row_blocks(fn, block: int, *rows):
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


class _Ring(NamedTuple):
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


def _on_rows(layout, body, rows: tuple, replicated: tuple = (), out_rows=True):
    """``body(ring, *rows, *replicated)`` on every device's block of ``rows`` (arrays sharded
    along the example axis as ``layout``, a :class:`aljax._sharding.RowLayout`), ``replicated``
    whole on every device; outputs sharded along the rows (``out_rows``, a bool or a tuple of them,
    one per output) or replicated. With ``layout`` None, ``body`` runs as it is on one device."""
    if layout is None:
        return body(_Ring(), *rows, *replicated)
    spec = PartitionSpec(layout.axes)
    out = jax.tree_util.tree_map(lambda r: spec if r else PartitionSpec(), out_rows)
    ring = _Ring(layout.axes, layout.shards)
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


def _kmeans_pp_init(key, parts, c: int):
    """``c`` centres by k-means++ seeding (Arthur & Vassilvitskii 2007) over the rows of ``parts``
    stacked: the first uniformly at random, each next one drawn with probability ∝ its squared
    distance to the nearest centre so far; when every distance is 0 (fewer distinct points than
    ``c``), uniformly from the rest."""
    sq = [_sqnorms(p) for p in parts]
    total = sum(p.shape[0] for p in parts)
    rows = jnp.arange(total)

    def dist_to(i):
        row, norm = _row_of(parts, sq, i)
        return jnp.concatenate([_sqdist(p, row[None], s, norm[None])[:, 0] for p, s in zip(parts, sq)])

    first_key, key = jax.random.split(key)
    first = jax.random.randint(first_key, (), 0, total)
    centres = jnp.zeros((c, parts[0].shape[1]), parts[0].dtype).at[0].set(_row_of(parts, sq, first)[0])

    def step(t, state):
        centres, dist, chosen = state
        w = jnp.where(chosen, 0.0, dist)
        logits = jnp.where(jnp.any(w > 0), jnp.log(w), jnp.where(chosen, -jnp.inf, 0.0))
        i = jax.random.categorical(jax.random.fold_in(key, t), logits)
        return centres.at[t].set(_row_of(parts, sq, i)[0]), jnp.minimum(dist, dist_to(i)), chosen | (rows == i)

    return jax.lax.fori_loop(1, c, step, (centres, dist_to(first), rows == first))[0]


def _assign_body(_, x, centres):
    sq_c = _sqnorms(centres)

    def block(_, rows):
        cross = jnp.matmul(rows, centres.T, precision=HIGHEST, preferred_element_type=rows.dtype)
        return jnp.argmin(sq_c[None, :] - 2 * cross, axis=1).astype(jnp.int32)

    return _map_row_blocks(block, _row_block(x.shape[0], centres.shape[0]), x)


def _sums_body(ring, x, assign, c):
    """Per cluster, the sum and the number of this device's rows, summed over the devices."""
    return ring.psum((jax.ops.segment_sum(x, assign, c), jax.ops.segment_sum(jnp.ones_like(assign), assign, c)))


def _lloyd(parts, centres, max_iter: int, layout):
    """:func:`lloyd` over the rows of ``parts`` (the pool, sharded as ``layout``, then optionally
    labeled rows): ``(centres, assignment of each part)``."""
    c = centres.shape[0]
    total = sum(p.shape[0] for p in parts)
    mean = sum(jnp.sum(p, axis=0) for p in parts) / total
    tol = _KMEANS_TOL * jnp.mean(sum(jnp.sum((p - mean) ** 2, axis=0) for p in parts) / total)
    lay = (layout,) + (None,) * (len(parts) - 1)

    def assign(centres):
        return tuple(_on_rows(lo, _assign_body, (p,), (centres,)) for p, lo in zip(parts, lay))

    def update(state):
        centres, labels, it, _ = state
        sums, counts = map(sum, zip(*(_on_rows(lo, functools.partial(_sums_body, c=c), (p, a), out_rows=False)
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


def _kmeans(key, parts, c: int, layout=None):
    """k-means++ seeding then Lloyd's iterations over the rows of ``parts`` stacked:
    ``(centres, assignment of each part)``."""
    return _lloyd(parts, _kmeans_pp_init(key, parts, c), _KMEANS_MAX_ITER, layout)


def kmeans(key, x, c: int):
    """k-means++ seeding then :func:`lloyd`: ``(centres, assignment)``."""
    centres, (assign,) = _kmeans(key, (x,), c)
    return centres, assign


def _centred(x, labeled):
    """Pool and labeled rows shifted by the pool's mean (distances are unchanged; a large common
    offset would otherwise swamp them in ``‖a‖² + ‖b‖² − 2 a·b``), in float32 or wider."""
    dtype = jnp.result_type(jnp.float32, x.dtype)
    x = x.astype(dtype)
    mean = jnp.mean(x, axis=0)
    return x - mean, None if labeled is None else labeled.astype(dtype) - mean


# ---------------------------------------------------------------------------------------------
# TypiClust.


def _typicality_body(ring, x, assign, size, *, k: int):
    """:func:`cluster_typicality` of this device's rows (``size``: the pool rows of each row's
    cluster), the other devices' blocks visiting in turn.

    Every block is sorted by cluster, so that a block of rows needs only the column blocks that
    hold its clusters: the work is ``Σ_c size_c² · d``, not ``n² · d``."""
    n_local = x.shape[0]
    perm = jnp.lexsort((jnp.arange(n_local), assign))
    xs, cs = x[perm], assign[perm]
    index = ring.offset(n_local) + perm.astype(jnp.int32)          # in the pool
    block = max(8, min(n_local, 512))
    nb = -(-n_local // block)

    def pad(a, value=0):
        return jnp.pad(a, [(0, nb * block - n_local)] + [(0, 0)] * (a.ndim - 1), constant_values=value)

    own = (cs, pad(xs), pad(cs, -1), pad(_sqnorms(xs)), pad(index, -1))

    def visit(best, cols):
        c_sorted, c_x, c_c, c_sq, c_index = cols

        def row_block(args):
            b, best = args
            start = b * block
            rows, rc, rsq, ridx = (jax.lax.dynamic_slice_in_dim(a, start, block) for a in own[1:])
            first_c, last_c = cs[start], cs[jnp.minimum(start + block, n_local) - 1]
            lo = jnp.searchsorted(c_sorted, first_c, side="left") // block
            hi = -(-jnp.searchsorted(c_sorted, last_c, side="right") // block)

            def body(j, best):
                cols, cc, csq, cidx = (jax.lax.dynamic_slice_in_dim(a, j * block, block)
                                       for a in (c_x, c_c, c_sq, c_index))
                ok = (rc[:, None] == cc[None, :]) & (ridx[:, None] != cidx[None, :])
                dist = jnp.where(ok, jnp.sqrt(_sqdist(rows, cols, rsq, csq)), jnp.inf)
                return -jax.lax.top_k(-jnp.concatenate([best, dist], axis=1), k)[0]

            return jax.lax.fori_loop(lo, hi, body, best)

        return jax.lax.map(row_block, (jnp.arange(nb), best))

    nearest = ring.visit(visit, jnp.full((nb, block, k), jnp.inf, x.dtype), own)
    nearest = nearest.reshape(nb * block, k)[:n_local]             # ascending
    used = jnp.minimum(k, size[perm] // 2)
    mask = jnp.arange(k)[None, :] < used[:, None]
    mean = jnp.sum(jnp.where(mask, nearest, 0.0), axis=1) / jnp.maximum(used, 1)
    return jnp.zeros(n_local, x.dtype).at[perm].set(jnp.where(used > 0, 1 / mean, 0.0))


def cluster_typicality(x, assign, n_neighbors: int, *, size=None, layout=None):
    """Typicality of every row within its cluster: ``1 / mean ‖x − x'‖`` over its ``K`` nearest
    neighbours of the same cluster (itself excluded), ``K = min(n_neighbors, size // 2)`` with
    ``size`` the number of rows of the cluster (the authors' code); ``inf`` at mean distance 0, and
    0 in a cluster of one row (its only candidate anyway). ``size``: that number for every row
    (counted here when not given); ``layout``: how ``x`` is sharded along its rows (None: not)."""
    if size is None:
        ordered = jnp.sort(assign)
        size = jnp.searchsorted(ordered, assign, side="right") - jnp.searchsorted(ordered, assign, side="left")
    body = functools.partial(_typicality_body, k=min(n_neighbors, x.shape[0] - 1))
    return _on_rows(layout, body, (x, assign, size))


def typiclust_order(assign_pool, assign_labeled, typicality, c: int):
    """The pool's rows in TypiClust's pick order. Clusters are ranked by their number of labeled
    rows (fewest first), then size (labeled rows included; largest first), then id; rows are
    ranked within their cluster by typicality (highest first, then lowest index). The order takes
    the most typical row of every cluster in cluster rank, then the second most typical of every
    cluster, and so on (the authors' cluster order; unlike their loop, typicality is not recomputed
    after a pick); clusters of at most ``_MIN_CLUSTER_SIZE`` rows
    come after all the others."""
    n = assign_pool.shape[0]
    size = jnp.bincount(assign_pool, length=c)
    n_lab = jnp.zeros(c, jnp.int32) if assign_labeled is None else jnp.bincount(assign_labeled, length=c)
    size = size + n_lab
    cluster_rank = jnp.zeros(c, jnp.int32).at[jnp.lexsort((jnp.arange(c), -size, n_lab))].set(
        jnp.arange(c, dtype=jnp.int32))
    rows = jnp.arange(n)
    by_cluster = jnp.lexsort((rows, -typicality, assign_pool))
    sorted_c = assign_pool[by_cluster]
    rank_sorted = jnp.arange(n) - jnp.searchsorted(sorted_c, sorted_c, side="left")
    rank = jnp.zeros(n, jnp.int32).at[by_cluster].set(rank_sorted.astype(jnp.int32))
    small = size[assign_pool] <= _MIN_CLUSTER_SIZE
    return jnp.lexsort((cluster_rank[assign_pool], rank, small)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("k", "n_neighbors", "layout"))
def _typiclust_kernel(key, x, labeled, *, k: int, n_neighbors: int, layout=None):
    x, labeled = _centred(x, labeled)
    parts = (x,) if labeled is None else (x, labeled)
    c = sum(p.shape[0] for p in parts[1:]) + k
    _, assign = _kmeans(key, parts, c, layout)
    size = jnp.bincount(assign[0], length=c)[assign[0]]
    typicality = cluster_typicality(x, assign[0], n_neighbors, size=size, layout=layout)
    return typiclust_order(assign[0], None if labeled is None else assign[1], typicality, c)[:k]


# ---------------------------------------------------------------------------------------------
# ProbCover.


def _against(rows, labels, cols, col_labels):
    """Per row, the squared distance to the nearest column of another label (``inf``: none)."""
    csq = _sqnorms(cols)

    def block(_, r, rsq, rlab):
        d2 = _sqdist(r, cols, rsq, csq)
        return jnp.min(jnp.where(rlab[:, None] != col_labels[None, :], d2, jnp.inf), axis=1)

    return _map_row_blocks(block, _row_block(rows.shape[0], cols.shape[0]), rows, _sqnorms(rows), labels)


def _nearest_other_body(ring, x, labels, *labeled):
    """:func:`_against` the whole pool (its blocks visiting in turn) and the labeled rows, for this
    device's rows; with labeled rows ``(rows, labels)``, for them too (replicated)."""
    r2 = ring.visit(lambda acc, cols: jnp.minimum(acc, _against(x, labels, *cols)),
                    jnp.full(x.shape[0], jnp.inf, x.dtype), (x, labels))
    if not labeled:
        return r2
    r2_labeled = jnp.minimum(ring.pmin(_against(*labeled, x, labels)), _against(*labeled, *labeled))
    return jnp.minimum(r2, _against(x, labels, *labeled)), r2_labeled


def purity_delta(x, pseudo_labels, purity, labeled=(), layout=None):
    """The largest δ whose balls ``{x' : ‖x − x'‖ < δ}`` are pure (one pseudo-label) for at least a
    fraction ``purity`` of the rows, exactly: a ball is pure iff δ ≤ ``r(x)``, the distance from x to
    the nearest row of another pseudo-label, so the purity of δ is the fraction of ``r ≥ δ``, and
    the largest δ with purity ≥ α is the ``⌈α·n⌉``-th largest ``r`` (``inf`` with one label).
    ``labeled``: optional ``(rows, pseudo-labels)`` counted with the rows of ``x`` (sharded as
    ``layout``, None: not sharded)."""
    if labeled:
        r2, r2_labeled = _on_rows(layout, _nearest_other_body, (x, pseudo_labels), tuple(labeled), (True, False))
        r2 = jnp.concatenate([r2, r2_labeled])
    else:
        r2 = _on_rows(layout, _nearest_other_body, (x, pseudo_labels))
    n = r2.shape[0]
    need = jnp.ceil(purity * n - 1e-9).astype(jnp.int32)      # rows whose ball must be pure
    return jnp.sqrt(jnp.sort(r2)[n - jnp.clip(need, 1, n)])


def _near_labeled_body(_, x, labeled, d2max):
    """Whether each row lies within δ of a labeled row."""
    sq_l = _sqnorms(labeled)
    return _map_row_blocks(lambda _, r, rsq: jnp.any(_sqdist(r, labeled, rsq, sq_l) < d2max, axis=1),
                           _row_block(x.shape[0], labeled.shape[0]), x, _sqnorms(x))


def _degree_body(ring, x, uncovered, d2max):
    """Per row, the uncovered rows of the pool (its blocks visiting in turn) within δ."""
    def visit(degree, cols):
        c_x, c_uncovered = cols
        csq = _sqnorms(c_x)

        def block(_, r, rsq, deg):
            inside = (_sqdist(r, c_x, rsq, csq) < d2max) & c_uncovered[None, :]
            return deg + jnp.sum(inside, axis=1, dtype=jnp.int32)

        return _map_row_blocks(block, _row_block(x.shape[0], c_x.shape[0]), x, _sqnorms(x), degree)

    return ring.visit(visit, jnp.zeros(x.shape[0], jnp.int32), (x, uncovered))


def _drop_body(ring, x, degree, ids, d2max):
    """``degree`` less, per row, the rows ``ids`` (pool indices, past the pool: none) within δ;
    the devices that hold those rows hand them to all (one psum of ``len(ids)`` rows)."""
    n_local = x.shape[0]
    local = ids - ring.offset(n_local)
    mine = (local >= 0) & (local < n_local)
    pts = ring.psum(jnp.where(mine[:, None], x[jnp.clip(local, 0, n_local - 1)], 0))
    inside = (_sqdist(x, pts, _sqnorms(x), _sqnorms(pts)) < d2max) & (ids < n_local * ring.count)[None, :]
    return degree - jnp.sum(inside, axis=1, dtype=jnp.int32)


def _probcover_greedy(key, x, labeled, delta, k: int, layout=None):
    """Greedy maximum coverage of the δ-balls (``j`` covers ``i`` iff ``‖x_i − x_j‖ < δ``): each
    step picks the row whose ball holds the most uncovered rows (lowest index on ties) and marks
    them covered. Degrees (uncovered rows per ball) are built once and then decremented by the
    balls of the newly covered rows only, ``_COVER_BLOCK`` of them per matrix product, so the
    whole run costs about two ``n × n`` distance passes however large ``k`` is."""
    n = x.shape[0]
    d2max = jnp.asarray(delta, x.dtype) ** 2
    sq = _sqnorms(x)
    rows = jnp.arange(n, dtype=jnp.int32)
    uncovered = jnp.ones(n, bool)
    if labeled is not None:
        uncovered = ~_on_rows(layout, _near_labeled_body, (x,), (labeled, d2max))
    degree = _on_rows(layout, _degree_body, (x, uncovered), (d2max,))
    block = min(_COVER_BLOCK, n)

    def step(t, state):
        degree, uncovered, picked, picks = state
        best = jnp.where(picked, -1, degree)
        j = jnp.argmax(best).astype(jnp.int32)
        # Every row covered: the remaining picks are uniform among the unpicked rows.
        noise = jax.random.uniform(jax.random.fold_in(key, t), (n,))
        j = jnp.where(take_row(best, j) > 0, j, jnp.argmax(jnp.where(picked, -1.0, noise)).astype(jnp.int32))
        new = uncovered & (_sqdist(x, take_row(x, j)[None], sq, take_row(sq, j)[None])[:, 0] < d2max)
        count = jnp.sum(new)
        index = jnp.nonzero(new, size=n, fill_value=n)[0]
        index = jnp.pad(index, (0, block), constant_values=n)

        def drop(b, degree):
            ids = jax.lax.dynamic_slice_in_dim(index, b * block, block)
            return _on_rows(layout, _drop_body, (x, degree), (ids, d2max))

        degree = jax.lax.fori_loop(0, -(-count // block), drop, degree)
        return degree, uncovered & ~new, picked | (rows == j), picks.at[t].set(j)

    state = (degree, uncovered, jnp.zeros(n, bool), jnp.zeros(k, jnp.int32))
    return jax.lax.fori_loop(0, k, step, state)[3]


@functools.partial(jax.jit, static_argnames=("k", "n_classes", "layout"))
def _probcover_kernel(key, x, labeled, delta, purity, *, k: int, n_classes: int | None, layout=None):
    x, labeled = _centred(x, labeled)
    cluster_key, fill_key = jax.random.split(key)
    if n_classes is not None:
        _, pseudo = _kmeans(cluster_key, (x,) if labeled is None else (x, labeled), n_classes, layout)
        delta = purity_delta(x, pseudo[0], purity, () if labeled is None else (labeled, pseudo[1]), layout)
    return _probcover_greedy(fill_key, x, labeled, delta, k, layout), delta


# ---------------------------------------------------------------------------------------------
# Public selectors.


def _check_embeddings(fn: str, embedding, k, key, labeled):
    """``(key, embedding, k, labeled)`` checked: a non-empty ``(n, d)`` floating embedding, ``k``
    in ``[1, n]``, a labeled set of the same width (``None`` when it has no rows), finite values."""
    key = _validate.as_key(fn, key)
    _validate.check_floating_2d(fn, "embedding", embedding)
    if embedding.shape[0] == 0:
        raise ValueError(_validate.message(fn, "embedding", "a non-empty pool", "an empty pool (0 examples)"))
    k = _validate.check_k(fn, k, embedding.shape[0])
    if labeled is not None:
        _validate.check_floating_2d(fn, "labeled", labeled)
        if labeled.shape[1] != embedding.shape[1]:
            raise ValueError(_validate.message(fn, "labeled", f"{embedding.shape[1]} columns like `embedding`",
                                               f"shape {tuple(labeled.shape)}"))
        labeled = None if labeled.shape[0] == 0 else jnp.asarray(labeled)
    embedding = jnp.asarray(embedding)
    _validate.check_finite_each(fn, [("the values of argument `embedding`", embedding)] +
                                ([] if labeled is None else [("the values of argument `labeled`", labeled)]))
    return key, embedding, k, labeled


def _placed(fn: str, embedding, labeled):
    """``(embedding, labeled, layout)``: the embedding moved off Explicit mesh axes (the kernels
    leave the partitioning of their light steps to XLA) and its row layout (None: not sharded);
    with a layout, the labeled rows replicated on its mesh (the kernels read them whole)."""
    embedding, labeled = auto_axes(embedding), auto_axes(labeled)
    layout = row_layout(fn, "embedding", embedding)
    if layout is not None and labeled is not None and not isinstance(labeled, jax.core.Tracer):
        labeled = jax.device_put(labeled, NamedSharding(layout.mesh, PartitionSpec()))
    return embedding, labeled, layout


def typiclust(embedding, k: int, *, key=0, labeled=None, n_neighbors: int = 20) -> jax.Array:
    """TypiClust: the most typical point of each of the largest clusters that hold no labeled
    point (Hacohen, Dekel & Weinshall, "Active learning on a budget: opposite strategies suit high
    and low budgets", ICML 2022).

    For the first labels, before a classifier exists: on the embeddings of a pretrained encoder
    (the papers use L2-normalised self-supervised features; normalise yours the same way if the
    encoder does not). The steps:

    1. k-means on the pool and the labeled set together into ``|labeled| + k`` clusters:
       k-means++ seeding (from ``key``), then Lloyd's iterations until no assignment changes or
       the centres move by at most ``1e-4`` × the mean feature variance (scikit-learn's rule), at
       most 100 iterations. (The authors' code caps the clusters at 500 and uses mini-batch
       k-means above 50; here the paper's count, full Lloyd.)
    2. Clusters ranked by their number of labeled points, fewest first, then by size (labeled
       points included), largest first: the uncovered clusters, largest first, lead.
    3. Typicality within the cluster, as in the authors' code: ``1 / mean ‖x − x'‖`` over the
       ``K = min(n_neighbors, size // 2)`` nearest pool points of the same cluster (the point
       itself excluded; ``size`` its pool points). The paper writes the mean over the ``K``
       nearest neighbours; the authors' code (faiss ``IndexFlatL2``) averages squared distances,
       here Euclidean ones as in the paper.
    4. The picks: the most typical point of each cluster in rank order. With ``|labeled| + k``
       clusters at least ``k`` hold no labeled point unless some are empty (fewer distinct points
       than clusters) or tiny; clusters of at most 5 points come last (the authors' code drops
       them). When fewer than ``k`` clusters can give a point, the picks go on round robin in the
       authors' cluster order: the most typical point of each covered cluster (rank order), then
       the second most typical point of every cluster, and so on. Unlike the authors' loop,
       typicality is not recomputed among a cluster's remaining points after a pick (a
       deviation that changes only picks past the first pass). So there are always ``k`` unique
       picks.

    Memory is O((n + m)·(K + d) + block): distances come in blocks of rows; the neighbours are
    searched within clusters only (rows sorted by cluster), ``Σ_c size_c² · d`` work.

    Several devices: ``embedding`` sharded along its rows (a ``NamedSharding``; Explicit mesh
    axes too) stays on its devices: each device assigns its own rows and adds them into the
    cluster sums (one all-reduce of ``clusters × d`` per Lloyd iteration), and the neighbour
    search hands each device's block of rows on around the devices (each device holds its rows and
    one visiting block). The seeding moves one row per centre. Same picks as on one device.

    Args:
      embedding: ``(n, d)`` floating embedding of the pool.
      k: number of picks, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key for the k-means++ seeding (default 0: two calls
        without a key give the same picks; pass a fresh key each round).
      labeled: optional ``(m, d)`` embedding of the labeled set (clustered with the pool; its
        clusters are covered).
      n_neighbors: ``K``, the typicality neighbourhood (20 in the paper), a Python int in
        ``[1, n − 1]``.

    Returns:
      ``(k,)`` int32 unique indices into ``embedding``, in pick order.

    Example:
      >>> import jax, aljax
      >>> emb = jax.random.normal(jax.random.key(0), (200, 8))
      >>> aljax.typiclust(emb, 5, key=0).shape
      (5,)
    """
    fn = "typiclust"
    key, embedding, k, labeled = _check_embeddings(fn, embedding, k, key, labeled)
    n = embedding.shape[0]
    if n < 2:
        raise ValueError(_validate.message(fn, "embedding", "at least 2 points (typicality needs a neighbour)",
                                           f"{n} point"))
    n_neighbors = _validate.check_int(fn, "n_neighbors", n_neighbors, low=1)
    if n_neighbors > n - 1:
        raise ValueError(_validate.message(fn, "n_neighbors", f"at most n − 1 = {n - 1}: the pool has {n} points "
                                           "and a point is not its own neighbour", n_neighbors))
    embedding, labeled, layout = _placed(fn, embedding, labeled)
    return _typiclust_kernel(key, embedding, labeled, k=k, n_neighbors=n_neighbors, layout=layout)


def _check_delta(fn: str, delta, purity, n_classes, n_total: int):
    if delta is not None:
        delta = _validate.check_positive(fn, "delta", delta)
        if n_classes is not None:
            raise ValueError(_validate.message(fn, "n_classes", "None when `delta` is given (it only sets the "
                                               "pseudo-labels of the purity rule)", n_classes))
    if isinstance(purity, bool) or not isinstance(purity, numbers.Real):
        raise TypeError(_validate.message(fn, "purity", "a float in (0, 1]", f"{type(purity).__name__} {purity!r}"))
    if not 0 < purity <= 1:
        raise ValueError(_validate.message(fn, "purity", "a float in (0, 1]", purity))
    if delta is None:
        if n_classes is None:
            raise ValueError(_validate.message(
                fn, "n_classes", "the number of classes when `delta` is None (the purity rule clusters into as many "
                "k-means pseudo-labels); or give `delta`", None))
        n_classes = _validate.check_int(fn, "n_classes", n_classes, low=2, high=n_total)
    return delta, float(purity), n_classes


def probcover(embedding, k: int, *, key=0, labeled=None, delta=None, purity: float = 0.95,
              n_classes: int | None = None) -> jax.Array:
    """ProbCover: greedy maximum coverage of δ-balls around the points (Yehuda, Dekel, Hacohen &
    Weinshall, "Active learning through a covering lens", NeurIPS 2022).

    For the first labels, before a classifier exists: on the embeddings of a pretrained encoder
    (the papers use L2-normalised self-supervised features, where δ lies in ``(0, 2)``). Point
    ``j`` covers ``i`` when ``‖x_i − x_j‖ < δ`` (strictly, as in the authors' code). Points within
    δ of a labeled point start covered. Each step picks the pool point whose ball holds the most
    uncovered points (lowest index on ties) and marks them covered. Once every point is covered,
    the remaining picks are drawn uniformly (from ``key``) among the unpicked points, so there are
    always ``k`` unique picks.

    δ, when not given, by the paper's purity rule: k-means (k-means++ seeding from ``key``, then
    Lloyd's iterations as in :func:`typiclust`) on the pool and labeled set into ``n_classes``
    clusters, the paper's pseudo-labels (as many clusters as classes); a ball is pure when all
    its points share a pseudo-label; δ is the largest value whose balls are pure around at least
    a fraction ``purity`` of the points (α = 0.95 in the paper). Purity falls as δ grows, and a
    ball around ``x`` is pure exactly while δ ≤ the distance from ``x`` to the nearest point of
    another pseudo-label, so that largest δ is found exactly from those distances (the paper
    scans a grid of δ; this is its limit).

    Cost: the ball sizes are built once (an ``n × n`` pass in blocks of rows, never held) and then
    maintained incrementally: a pick's newly covered points are subtracted from the balls that
    hold them, 256 of them per matrix product, so all ``k`` steps together cost about one more
    ``n × n`` pass; the purity rule adds one more. Memory is O(n·d) plus a 64 MiB block.

    Several devices: ``embedding`` sharded along its rows (a ``NamedSharding``; Explicit mesh
    axes too) stays on its devices: the ball sizes and the purity rule's distances hand each
    device's block of rows on around the devices (each device holds its rows and one visiting
    block), and a step moves the picked row and the newly covered rows (256 at a time), with
    one number per point for the coverage. Same picks as on one device.

    Args:
      embedding: ``(n, d)`` floating embedding of the pool.
      k: number of picks, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key (the k-means++ seeding of the purity rule; the uniform
        picks once all is covered). Default 0: pass a fresh key each round.
      labeled: optional ``(m, d)`` embedding of the labeled set (their balls start covered).
      delta: the ball radius, a finite number > 0; ``None`` (default) chooses it by the purity
        rule, which then needs ``n_classes``.
      purity: α of the purity rule, a float in ``(0, 1]`` (0.95 in the paper).
      n_classes: number of k-means pseudo-labels for the purity rule (the number of classes),
        a Python int in ``[2, n + m]``; required when ``delta`` is None, refused when it is given.

    Returns:
      ``(k,)`` int32 unique indices into ``embedding``, in pick order.

    Example:
      >>> import jax, aljax
      >>> emb = jax.random.normal(jax.random.key(0), (200, 8))
      >>> aljax.probcover(emb, 5, delta=2.0).shape
      (5,)
      >>> aljax.probcover(emb, 5, n_classes=4, key=0).shape
      (5,)
    """
    fn = "probcover"
    key, embedding, k, labeled = _check_embeddings(fn, embedding, k, key, labeled)
    n_total = embedding.shape[0] + (0 if labeled is None else labeled.shape[0])
    delta, purity, n_classes = _check_delta(fn, delta, purity, n_classes, n_total)
    embedding, labeled, layout = _placed(fn, embedding, labeled)
    picks, _ = _probcover_kernel(key, embedding, labeled, jnp.float32(0.0) if delta is None else delta, purity,
                                 k=k, n_classes=n_classes, layout=layout)
    return picks
