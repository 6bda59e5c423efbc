"""Cold start: which points to label first, before any classifier exists, from the embeddings of
a pretrained encoder (a sentence encoder, a self-supervised image model).

* :func:`typiclust` (Hacohen, Dekel & Weinshall, ICML 2022): k-means into ``|labeled| + k``
  clusters; from the uncovered clusters, largest first, the most typical point of each.
* :func:`probcover` (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): greedy maximum coverage
  of the δ-ball graph, δ chosen by the paper's purity rule when not given.

Both are selectors on arrays, ``(embedding, k, *, key=0, labeled=None, ...)``, and never build an
``n × n`` matrix: distances come in blocks of rows (matrix products), reduced as they come.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from . import _validate
from ._linalg import HIGHEST

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


def _map_row_blocks(fn, x, block: int):
    """``fn(rows, row_index)`` over blocks of ``block`` rows of ``x`` (zero-padded to a multiple),
    outputs concatenated along the rows and cut back to ``n``. ``row_index`` past ``n`` marks padding."""
    n, d = x.shape
    nb = -(-n // block)
    padded = jnp.pad(x, [(0, nb * block - n), (0, 0)]).reshape(nb, block, d)
    index = jnp.arange(nb * block, dtype=jnp.int32).reshape(nb, block)
    out = jax.lax.map(lambda blk: fn(*blk), (padded, index))
    return jax.tree_util.tree_map(lambda o: o.reshape(nb * block, *o.shape[2:])[:n], out)


# ---------------------------------------------------------------------------------------------
# k-means: k-means++ seeding, then Lloyd's iterations.


def _kmeans_pp_init(key, x, c: int):
    """``c`` centres by k-means++ seeding (Arthur & Vassilvitskii 2007): the first uniformly at
    random, each next one drawn with probability ∝ its squared distance to the nearest centre so
    far; when every distance is 0 (fewer distinct points than ``c``), uniformly from the rest."""
    n = x.shape[0]
    sq = jnp.sum(x * x, axis=1)
    rows = jnp.arange(n)

    def dist_to(i):
        return _sqdist(x, x[i][None], sq, sq[i][None])[:, 0]

    first_key, key = jax.random.split(key)
    first = jax.random.randint(first_key, (), 0, n)
    centres = jnp.zeros((c, x.shape[1]), x.dtype).at[0].set(x[first])

    def step(t, state):
        centres, dist, chosen = state
        w = jnp.where(chosen, 0.0, dist)
        logits = jnp.where(jnp.any(w > 0), jnp.log(w), jnp.where(chosen, -jnp.inf, 0.0))
        i = jax.random.categorical(jax.random.fold_in(key, t), logits)
        return centres.at[t].set(x[i]), jnp.minimum(dist, dist_to(i)), chosen | (rows == i)

    return jax.lax.fori_loop(1, c, step, (centres, dist_to(first), rows == first))[0]


def _assign(x, centres):
    """The nearest centre of every row (lowest index on ties), in blocks of rows."""
    sq_c = jnp.sum(centres * centres, axis=1)

    def block(rows, _):
        cross = jnp.matmul(rows, centres.T, precision=HIGHEST, preferred_element_type=rows.dtype)
        return jnp.argmin(sq_c[None, :] - 2 * cross, axis=1).astype(jnp.int32)

    return _map_row_blocks(block, x, _row_block(x.shape[0], centres.shape[0]))


def lloyd(x, centres, max_iter: int = _KMEANS_MAX_ITER):
    """Lloyd's iterations from ``centres``: ``(centres, assignment)``, the assignment the nearest
    centre of each row. Each iteration moves every centre to the mean of its rows (an empty
    cluster keeps its centre) and reassigns; it stops when no assignment changes, when the
    centres moved by at most ``_KMEANS_TOL`` × the mean feature variance (summed squared shift,
    scikit-learn's rule), or after ``max_iter`` iterations."""
    c = centres.shape[0]
    tol = _KMEANS_TOL * jnp.mean(jnp.var(x, axis=0))

    def update(state):
        centres, assign, it, _ = state
        sums = jax.ops.segment_sum(x, assign, c)
        counts = jax.ops.segment_sum(jnp.ones_like(assign), assign, c)
        new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None].astype(x.dtype), centres)
        new_assign = _assign(x, new)
        done = jnp.all(new_assign == assign) | (jnp.sum((new - centres) ** 2) <= tol)
        return new, new_assign, it + 1, done

    state = (centres, _assign(x, centres), 0, False)
    state = jax.lax.while_loop(lambda s: (s[2] < max_iter) & ~s[3], update, state)
    return state[0], state[1]


def kmeans(key, x, c: int):
    """k-means++ seeding then :func:`lloyd`: ``(centres, assignment)``."""
    return lloyd(x, _kmeans_pp_init(key, x, c))


def _centred(x, labeled):
    """Pool and labeled rows shifted by the pool's mean (distances are unchanged; a large common
    offset would otherwise swamp them in ``‖a‖² + ‖b‖² − 2 a·b``), in float32 or wider."""
    dtype = jnp.result_type(jnp.float32, x.dtype)
    x = x.astype(dtype)
    mean = jnp.mean(x, axis=0)
    return x - mean, None if labeled is None else labeled.astype(dtype) - mean


# ---------------------------------------------------------------------------------------------
# TypiClust.


def cluster_typicality(x, assign, n_neighbors: int):
    """Typicality of every row within its cluster: ``1 / mean ‖x − x'‖`` over its ``K`` nearest
    neighbours of the same cluster (itself excluded), ``K = min(n_neighbors, size // 2)`` with
    ``size`` the number of rows of the cluster (the authors' code); ``inf`` at mean distance 0, and
    0 in a cluster of one row (its only candidate anyway).

    The rows are sorted by cluster, so that a block of rows needs only the column blocks that hold
    its clusters: the work is ``Σ_c size_c² · d``, not ``n² · d``."""
    n, d = x.shape
    perm = jnp.lexsort((jnp.arange(n), assign))
    xs, cs = x[perm], assign[perm]
    sq = jnp.sum(xs * xs, axis=1)
    block = max(8, min(n, 512))
    nb = -(-n // block)
    xs_p = jnp.pad(xs, [(0, nb * block - n), (0, 0)])
    cs_p = jnp.pad(cs, (0, nb * block - n), constant_values=-1)
    sq_p = jnp.pad(sq, (0, nb * block - n))
    k = min(n_neighbors, n - 1)

    def row_block(b):
        start = b * block
        rows = jax.lax.dynamic_slice_in_dim(xs_p, start, block)
        rc = jax.lax.dynamic_slice_in_dim(cs_p, start, block)
        rsq = jax.lax.dynamic_slice_in_dim(sq_p, start, block)
        ridx = start + jnp.arange(block)
        first_c, last_c = cs[start], cs[jnp.minimum(start + block, n) - 1]
        lo = jnp.searchsorted(cs, first_c, side="left") // block
        hi = -(-jnp.searchsorted(cs, last_c, side="right") // block)

        def body(j, best):
            cols = jax.lax.dynamic_slice_in_dim(xs_p, j * block, block)
            cc = jax.lax.dynamic_slice_in_dim(cs_p, j * block, block)
            csq = jax.lax.dynamic_slice_in_dim(sq_p, j * block, block)
            cidx = j * block + jnp.arange(block)
            ok = (rc[:, None] == cc[None, :]) & (ridx[:, None] != cidx[None, :])
            dist = jnp.where(ok, jnp.sqrt(_sqdist(rows, cols, rsq, csq)), jnp.inf)
            return -jax.lax.top_k(-jnp.concatenate([best, dist], axis=1), k)[0]

        return jax.lax.fori_loop(lo, hi, body, jnp.full((block, k), jnp.inf, x.dtype))

    nearest = jax.lax.map(row_block, jnp.arange(nb)).reshape(nb * block, k)[:n]   # ascending
    size = jnp.searchsorted(cs, cs, side="right") - jnp.searchsorted(cs, cs, side="left")
    used = jnp.minimum(k, size // 2)
    mask = jnp.arange(k)[None, :] < used[:, None]
    mean = jnp.sum(jnp.where(mask, nearest, 0.0), axis=1) / jnp.maximum(used, 1)
    typ_sorted = jnp.where(used > 0, 1 / mean, 0.0)
    return jnp.zeros(n, x.dtype).at[perm].set(typ_sorted)


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


@functools.partial(jax.jit, static_argnames=("k", "n_neighbors"))
def _typiclust_kernel(key, x, labeled, *, k: int, n_neighbors: int):
    x, labeled = _centred(x, labeled)
    n = x.shape[0]
    both = x if labeled is None else jnp.concatenate([x, labeled])
    c = both.shape[0] - n + k
    _, assign = kmeans(key, both, c)
    typicality = cluster_typicality(x, assign[:n], n_neighbors)
    return typiclust_order(assign[:n], None if labeled is None else assign[n:], typicality, c)[:k]


# ---------------------------------------------------------------------------------------------
# ProbCover.


def purity_delta(x, pseudo_labels, purity):
    """The largest δ whose balls ``{x' : ‖x − x'‖ < δ}`` are pure (one pseudo-label) for at least a
    fraction ``purity`` of the rows, exactly: a ball is pure iff δ ≤ ``r(x)``, the distance from x to
    the nearest row of another pseudo-label, so the purity of δ is the fraction of ``r ≥ δ``, and
    the largest δ with purity ≥ α is the ``⌈α·n⌉``-th largest ``r`` (``inf`` with one label)."""
    n = x.shape[0]
    sq = jnp.sum(x * x, axis=1)

    def block(rows, index):
        lab = pseudo_labels[jnp.minimum(index, n - 1)]
        d2 = _sqdist(rows, x, jnp.sum(rows * rows, axis=1), sq)
        return jnp.min(jnp.where(lab[:, None] != pseudo_labels[None, :], d2, jnp.inf), axis=1)

    r2 = _map_row_blocks(block, x, _row_block(n, n))
    need = jnp.ceil(purity * n - 1e-9).astype(jnp.int32)      # rows whose ball must be pure
    return jnp.sqrt(jnp.sort(r2)[n - jnp.clip(need, 1, n)])


def _probcover_greedy(key, x, labeled, delta, k: int):
    """Greedy maximum coverage of the δ-balls (``j`` covers ``i`` iff ``‖x_i − x_j‖ < δ``): each
    step picks the row whose ball holds the most uncovered rows (lowest index on ties) and marks
    them covered. Degrees (uncovered rows per ball) are built once and then decremented by the
    balls of the newly covered rows only, ``_COVER_BLOCK`` of them per matrix product, so the
    whole run costs about two ``n × n`` distance passes however large ``k`` is."""
    n = x.shape[0]
    d2max = jnp.asarray(delta, x.dtype) ** 2
    sq = jnp.sum(x * x, axis=1)
    rows = jnp.arange(n, dtype=jnp.int32)
    uncovered = jnp.ones(n, bool)
    if labeled is not None:
        sq_l = jnp.sum(labeled * labeled, axis=1)
        near = _map_row_blocks(lambda r, _: jnp.any(_sqdist(r, labeled, jnp.sum(r * r, axis=1), sq_l) < d2max, axis=1),
                               x, _row_block(n, labeled.shape[0]))
        uncovered = ~near

    def degree_block(r, _):
        return jnp.sum((_sqdist(r, x, jnp.sum(r * r, axis=1), sq) < d2max) & uncovered[None, :], axis=1,
                       dtype=jnp.int32)

    degree = _map_row_blocks(degree_block, x, _row_block(n, n))
    block = min(_COVER_BLOCK, n)

    def step(t, state):
        degree, uncovered, picked, picks = state
        best = jnp.where(picked, -1, degree)
        j = jnp.argmax(best).astype(jnp.int32)
        # Every row covered: the remaining picks are uniform among the unpicked rows.
        noise = jax.random.uniform(jax.random.fold_in(key, t), (n,))
        j = jnp.where(best[j] > 0, j, jnp.argmax(jnp.where(picked, -1.0, noise)).astype(jnp.int32))
        new = uncovered & (_sqdist(x, x[j][None], sq, sq[j][None])[:, 0] < d2max)
        count = jnp.sum(new)
        index = jnp.nonzero(new, size=n, fill_value=n)[0]
        index = jnp.pad(index, (0, block), constant_values=n)

        def drop(b, degree):
            ids = jax.lax.dynamic_slice_in_dim(index, b * block, block)
            valid = ids < n
            pts = x[jnp.minimum(ids, n - 1)]
            inside = (_sqdist(x, pts, sq, sq[jnp.minimum(ids, n - 1)]) < d2max) & valid[None, :]
            return degree - jnp.sum(inside, axis=1, dtype=jnp.int32)

        degree = jax.lax.fori_loop(0, -(-count // block), drop, degree)
        return degree, uncovered & ~new, picked | (rows == j), picks.at[t].set(j)

    state = (degree, uncovered, jnp.zeros(n, bool), jnp.zeros(k, jnp.int32))
    return jax.lax.fori_loop(0, k, step, state)[3]


@functools.partial(jax.jit, static_argnames=("k", "n_classes"))
def _probcover_kernel(key, x, labeled, delta, purity, *, k: int, n_classes: int | None):
    x, labeled = _centred(x, labeled)
    cluster_key, fill_key = jax.random.split(key)
    if n_classes is not None:
        both = x if labeled is None else jnp.concatenate([x, labeled])
        _, pseudo = kmeans(cluster_key, both, n_classes)
        delta = purity_delta(both, pseudo, purity)
    return _probcover_greedy(fill_key, x, labeled, delta, k), delta


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
    return _typiclust_kernel(key, embedding, labeled, k=k, n_neighbors=n_neighbors)


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
    picks, _ = _probcover_kernel(key, embedding, labeled, jnp.float32(0.0) if delta is None else delta, purity,
                                 k=k, n_classes=n_classes)
    return picks
