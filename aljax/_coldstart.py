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
around the devices (:class:`aljax._kmeans.Ring`), and the steps of the k-means++ seeding and
the coverage greedy move single rows (:func:`aljax._sharding.take_row`). What crosses devices
is rows, blocks of rows, per-cluster sums and vectors of one number per point, never the pool
as a whole.

Small concrete pools on one device (at most ``QUICK_MAX_NUMBERS`` numbers) are zero-padded to a
size bucket, the labeled set to a power of two, their counts traced: the rounds of an
active-learning loop compile each selector once per bucket, not every round.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from . import _compile, _validate
from ._kmeans import (centred, kmeans_of_parts, map_row_blocks, on_rows, row_gumbel, rows_per_block, sqdist,
                      sqnorms)
from ._padding import pad_to_bucket, pad_tree
from ._sharding import auto_axes, row_layout, take_row

# Rows of the newly covered set processed together in a ProbCover step.
_COVER_BLOCK = 256
# TypiClust: clusters of at most this many points are used last (the authors' code drops them).
_MIN_CLUSTER_SIZE = 5
# Pools of at most this many numbers (rows × columns), whose rounds in a loop are mostly
# compilation, are padded to size buckets (one compilation per bucket) and run the kernels'
# quick-to-compile twins on a CPU.
QUICK_MAX_NUMBERS = 1 << 20


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

    own = (cs, pad(xs), pad(cs, -1), pad(sqnorms(xs)), pad(index, -1))

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
                dist = jnp.where(ok, jnp.sqrt(sqdist(rows, cols, rsq, csq)), jnp.inf)
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
    return on_rows(layout, body, (x, assign, size))


def typiclust_order(assign_pool, assign_labeled, typicality, c: int, n_valid=None):
    """The pool's rows in TypiClust's pick order. Clusters are ranked by their number of labeled
    rows (fewest first), then size (labeled rows included; largest first), then id; rows are
    ranked within their cluster by typicality (highest first, then lowest index). The order takes
    the most typical row of every cluster in cluster rank, then the second most typical of every
    cluster, and so on (the authors' cluster order; unlike their loop, typicality is not recomputed
    after a pick); clusters of at most ``_MIN_CLUSTER_SIZE`` rows
    come after all the others, and rows past ``n_valid`` (padding, assigned no cluster) last."""
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
    keys = (cluster_rank[assign_pool], rank, small) + (() if n_valid is None else (rows >= n_valid,))
    return jnp.lexsort(keys).astype(jnp.int32)


def _typiclust(key, x, labeled, counts=None, *, k: int, n_neighbors: int, layout=None):
    """TypiClust's ``k`` picks. ``counts``: None, or the points of ``x`` and ``labeled`` (traced)
    when both are zero-padded to a size bucket (one compilation for the rounds of a loop): then
    ``c`` = the padded labeled rows + ``k`` clusters, of which the first ``|labeled| + k`` take
    points, and padding rows join no cluster and come last."""
    x, labeled = centred(x, labeled, counts)
    parts = (x,) if labeled is None else (x, labeled)
    c = sum(p.shape[0] for p in parts[1:]) + k
    active = None if counts is None else sum(counts[1:]) + k
    _, assign = kmeans_of_parts(key, parts, c, layout, counts, active)
    size = jnp.bincount(assign[0], length=c)[jnp.minimum(assign[0], c - 1)]
    if counts is not None:
        size = jnp.where(assign[0] < c, size, 0)
    typicality = cluster_typicality(x, assign[0], n_neighbors, size=size, layout=layout)
    return typiclust_order(assign[0], None if labeled is None else assign[1], typicality, c,
                           None if counts is None else counts[0])[:k]


_typiclust_kernel = jax.jit(_typiclust, static_argnames=("k", "n_neighbors", "layout"))
_typiclust_quick = _compile.quick_jit(_typiclust, static_argnames=("k", "n_neighbors", "layout"))


# ---------------------------------------------------------------------------------------------
# ProbCover.


def _against(rows, labels, cols, col_labels, col_valid):
    """Per row, the squared distance to the nearest column of another label among the columns
    that are points (``col_valid``) (``inf``: none)."""
    csq = sqnorms(cols)

    def block(_, r, rsq, rlab):
        d2 = sqdist(r, cols, rsq, csq)
        other = (rlab[:, None] != col_labels[None, :]) & col_valid[None, :]
        return jnp.min(jnp.where(other, d2, jnp.inf), axis=1)

    return map_row_blocks(block, rows_per_block(rows.shape[0], cols.shape[0]), rows, sqnorms(rows), labels)


def _nearest_other_body(ring, x, labels, valid, *labeled):
    """:func:`_against` the whole pool (its blocks visiting in turn) and the labeled rows, for this
    device's rows; with labeled rows ``(rows, labels, valid)``, for them too (replicated)."""
    r2 = ring.visit(lambda acc, cols: jnp.minimum(acc, _against(x, labels, *cols)),
                    jnp.full(x.shape[0], jnp.inf, x.dtype), (x, labels, valid))
    if not labeled:
        return r2
    r2_labeled = jnp.minimum(ring.pmin(_against(*labeled[:2], x, labels, valid)), _against(*labeled[:2], *labeled))
    return jnp.minimum(r2, _against(x, labels, *labeled)), r2_labeled


def _valid(x, count):
    """Which rows of ``x`` are points: the first ``count`` (traced; None: all)."""
    rows = jnp.arange(x.shape[0])
    return rows >= 0 if count is None else rows < count


def purity_delta(x, pseudo_labels, purity, labeled=(), layout=None, counts=None):
    """The largest δ whose balls ``{x' : ‖x − x'‖ < δ}`` are pure (one pseudo-label) for at least a
    fraction ``purity`` of the rows, exactly: a ball is pure iff δ ≤ ``r(x)``, the distance from x to
    the nearest row of another pseudo-label, so the purity of δ is the fraction of ``r ≥ δ``, and
    the largest δ with purity ≥ α is the ``⌈α·n⌉``-th largest ``r`` (``inf`` with one label).
    ``labeled``: optional ``(rows, pseudo-labels)`` counted with the rows of ``x`` (sharded as
    ``layout``, None: not sharded). ``counts``: None, or the points of ``x`` and of the labeled
    rows (traced), the rest padding, which counts for nothing."""
    counts = (None, None) if counts is None else tuple(counts) + (None,)
    valid = _valid(x, counts[0])
    if labeled:
        lab_valid = _valid(labeled[0], counts[1])
        r2, r2_labeled = on_rows(layout, _nearest_other_body, (x, pseudo_labels, valid),
                                 tuple(labeled) + (lab_valid,), (True, False))
        r2 = jnp.concatenate([r2, r2_labeled])
        valid = jnp.concatenate([valid, lab_valid])
    else:
        r2 = on_rows(layout, _nearest_other_body, (x, pseudo_labels, valid))
    n = r2.shape[0]
    total = n if counts[0] is None else jnp.sum(valid)
    r2 = jnp.where(valid, r2, -jnp.inf)                      # (padding sorts first)
    need = jnp.ceil(purity * total - 1e-9).astype(jnp.int32)  # rows whose ball must be pure
    return jnp.sqrt(jnp.sort(r2)[n - jnp.clip(need, 1, total)])


def _near_labeled_body(_, x, labeled, d2max, lab_valid):
    """Whether each row lies within δ of a labeled row (one that is a point: ``lab_valid``)."""
    sq_l = sqnorms(labeled)
    return map_row_blocks(lambda _, r, rsq: jnp.any((sqdist(r, labeled, rsq, sq_l) < d2max) & lab_valid[None, :],
                                                    axis=1),
                          rows_per_block(x.shape[0], labeled.shape[0]), x, sqnorms(x))


def _degree_body(ring, x, uncovered, d2max):
    """Per row, the uncovered rows of the pool (its blocks visiting in turn) within δ."""
    def visit(degree, cols):
        c_x, c_uncovered = cols
        csq = sqnorms(c_x)

        def block(_, r, rsq, deg):
            inside = (sqdist(r, c_x, rsq, csq) < d2max) & c_uncovered[None, :]
            return deg + jnp.sum(inside, axis=1, dtype=jnp.int32)

        return map_row_blocks(block, rows_per_block(x.shape[0], c_x.shape[0]), x, sqnorms(x), degree)

    return ring.visit(visit, jnp.zeros(x.shape[0], jnp.int32), (x, uncovered))


def _drop_body(ring, x, degree, ids, d2max):
    """``degree`` less, per row, the rows ``ids`` (pool indices, past the pool: none) within δ;
    the devices that hold those rows hand them to all (one psum of ``len(ids)`` rows)."""
    n_local = x.shape[0]
    local = ids - ring.offset(n_local)
    mine = (local >= 0) & (local < n_local)
    pts = ring.psum(jnp.where(mine[:, None], x[jnp.clip(local, 0, n_local - 1)], 0))
    inside = (sqdist(x, pts, sqnorms(x), sqnorms(pts)) < d2max) & (ids < n_local * ring.count)[None, :]
    return degree - jnp.sum(inside, axis=1, dtype=jnp.int32)


def _probcover_greedy(key, x, labeled, delta, k: int, layout=None, counts=None):
    """Greedy maximum coverage of the δ-balls (``j`` covers ``i`` iff ``‖x_i − x_j‖ < δ``): each
    step picks the row whose ball holds the most uncovered rows (lowest index on ties) and marks
    them covered. Degrees (uncovered rows per ball) are built once and then decremented by the
    balls of the newly covered rows only, ``_COVER_BLOCK`` of them per matrix product, so the
    whole run costs about two ``n × n`` distance passes however large ``k`` is. ``counts``: None,
    or the points of ``x`` and ``labeled`` (traced), the rest padding, never covered nor picked."""
    n = x.shape[0]
    d2max = jnp.asarray(delta, x.dtype) ** 2
    sq = sqnorms(x)
    rows = jnp.arange(n, dtype=jnp.int32)
    counts = (None, None) if counts is None else tuple(counts) + (None,)
    uncovered = _valid(x, counts[0])
    padding = ~uncovered
    if labeled is not None:
        near = on_rows(layout, _near_labeled_body, (x,), (labeled, d2max, _valid(labeled, counts[1])))
        uncovered = uncovered & ~near
    degree = on_rows(layout, _degree_body, (x, uncovered), (d2max,))
    block = min(_COVER_BLOCK, n)

    def step(t, state):
        degree, uncovered, picked, picks = state
        best = jnp.where(picked, -1, degree)
        j = jnp.argmax(best).astype(jnp.int32)
        # Every row covered: the remaining picks are uniform among the unpicked rows (noise per
        # row from its index: the same draw with or without padding or sharding).
        noise = row_gumbel(jax.random.fold_in(key, t), rows, x.dtype)
        j = jnp.where(take_row(best, j) > 0, j, jnp.argmax(jnp.where(picked, -jnp.inf, noise)).astype(jnp.int32))
        new = uncovered & (sqdist(x, take_row(x, j)[None], sq, take_row(sq, j)[None])[:, 0] < d2max)
        count = jnp.sum(new)
        index = jnp.nonzero(new, size=n, fill_value=n)[0]
        index = jnp.pad(index, (0, block), constant_values=n)

        def drop(b, degree):
            ids = jax.lax.dynamic_slice_in_dim(index, b * block, block)
            return on_rows(layout, _drop_body, (x, degree), (ids, d2max))

        degree = jax.lax.fori_loop(0, -(-count // block), drop, degree)
        return degree, uncovered & ~new, picked | (rows == j), picks.at[t].set(j)

    state = (degree, uncovered, padding, jnp.zeros(k, jnp.int32))
    return jax.lax.fori_loop(0, k, step, state)[3]


def _probcover(key, x, labeled, delta, purity, counts=None, *, k: int, n_classes: int | None, layout=None):
    """ProbCover's ``k`` picks and its δ. ``counts``: None, or the points of ``x`` and ``labeled``
    (traced) when both are zero-padded to a size bucket (one compilation for the rounds of a
    loop); padding joins no pseudo-label cluster, counts in no purity and is never picked."""
    x, labeled = centred(x, labeled, counts)
    cluster_key, fill_key = jax.random.split(key)
    if n_classes is not None:
        _, pseudo = kmeans_of_parts(cluster_key, (x,) if labeled is None else (x, labeled), n_classes, layout, counts)
        delta = purity_delta(x, pseudo[0], purity, () if labeled is None else (labeled, pseudo[1]), layout, counts)
    return _probcover_greedy(fill_key, x, labeled, delta, k, layout, counts), delta


_probcover_kernel = jax.jit(_probcover, static_argnames=("k", "n_classes", "layout"))
_probcover_quick = _compile.quick_jit(_probcover, static_argnames=("k", "n_classes", "layout"))


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


def _padded(layout, embedding, labeled):
    """``(embedding, labeled, counts)``: a small concrete pool on one device (at most
    ``QUICK_MAX_NUMBERS``) zero-padded to a size bucket and its labeled set, which grows by ``k``
    a round and in TypiClust sets the number of clusters, to a power of two (at most twice the
    clusters); ``counts`` their rows before (None: not padded). Larger pools are not padded: a
    loop's labeled set outgrows any finer bucket every round, so their rounds would compile
    anyway, and the padding only adds work."""
    if (layout is not None or not _validate.is_concrete(embedding, labeled)
            or embedding.size > QUICK_MAX_NUMBERS):
        return embedding, labeled, None
    counts = (np.int32(embedding.shape[0]),) + (() if labeled is None else (np.int32(labeled.shape[0]),))
    embedding = pad_to_bucket(embedding, embedding.shape[0])
    if labeled is not None:
        labeled = pad_tree(labeled, size=1 << (labeled.shape[0] - 1).bit_length())
    return embedding, labeled, counts


def _run(quick, plain, args, static, counts):
    """A kernel on padded inputs (``counts`` not None) on a CPU as its quick-to-compile twin
    (:mod:`aljax._compile`: a small pool's round in a loop is mostly compilation), else the plain
    kernel."""
    if counts is not None and _compile.on_cpu(args[1]):
        return _compile.call(quick, plain, *args, **static)
    return plain(*args, **static)


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

    Compilation: a concrete pool on one device of at most ``2^20`` numbers is zero-padded to a
    size bucket and the labeled set to a power of two (counts traced, padding in no cluster), so
    the rounds of a loop compile once per bucket; the k-means++ draw gives each point the same
    noise with or without padding or sharding.

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
    embedding, labeled, counts = _padded(layout, embedding, labeled)
    return _run(_typiclust_quick, _typiclust_kernel, (key, embedding, labeled, counts),
                dict(k=k, n_neighbors=n_neighbors, layout=layout), counts)


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
    embedding, labeled, counts = _padded(layout, embedding, labeled)
    args = (key, embedding, labeled, jnp.float32(0.0) if delta is None else delta, purity, counts)
    return _run(_probcover_quick, _probcover_kernel, args, dict(k=k, n_classes=n_classes, layout=layout), counts)[0]
