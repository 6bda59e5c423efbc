"""Average-linkage hierarchical agglomerative clustering (HAC) cut at a distance threshold, as a
reusable value: the clustering step of Cluster-Margin (Citovsky et al., NeurIPS 2021).

* Exact, up to ``max_exact`` points: the nearest-neighbour-chain algorithm (Murtagh, "A survey of
  recent advances in hierarchical clustering algorithms", 1983; Müllner, "Modern hierarchical,
  agglomerative clustering algorithms", 2011) in one ``lax.while_loop`` over the ``n × n``
  Euclidean distance matrix (built in blocks of rows), with the Lance–Williams update
  ``d(a ∪ b, c) = (|a| d(a, c) + |b| d(b, c)) / (|a| + |b|)``. Average linkage is *reducible*
  (``d(a ∪ b, c) ≥ min(d(a, c), d(b, c))``), so the chain finds the same dendrogram as the naive
  algorithm (ties aside), and a cluster whose nearest neighbour is farther than the threshold can
  never merge below it again: it is retired at once. The flat clusters equal SciPy's
  ``fcluster(linkage(x, "average"), t, criterion="distance")``: two points share a cluster when
  their cophenetic distance is at most ``t``.
* Two-level, beyond ``max_exact`` points: ``n_centres`` centres by k-means++ seeding
  (:func:`aljax.kmeans_pp`) on a uniform sample of ``8·n_centres`` points; every point is
  assigned to its nearest centre; then exact weighted HAC over the centres, each centre a cluster
  of its assigned points (its size their count, its distances the centres' distances), and each
  point inherits its centre's cluster. Memory: the pool, ``n_centres²`` distances and O(n)
  vectors; time: one ``n × n_centres`` distance pass plus the seeding and the chain.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _progress, _validate
from ._badge import kmeans_pp
from ._linalg import HIGHEST
from ._padding import bucket_rows

# Distance blocks hold about this many entries (rows × columns): 2^24 float32 = 64 MiB.
_BLOCK_ENTRIES = 1 << 24
# Rows hashed per step of the fingerprint pass.
_HASH_ROWS = 1 << 14
MAX_EXACT = 8192
N_CENTRES = 4096
# The two-level scheme's k-means++ runs on a uniform sample of this many points per centre.
_SAMPLE_PER_CENTRE = 8


class Clustering(NamedTuple):
    """A flat clustering of a pool, computed once and passed to every round of Cluster-Margin.

    Attributes:
      labels: ``(n,)`` int32 cluster of each point, numbered ``0, 1, …`` in order of each
        cluster's first point.
      n_clusters: ``()`` int32, the number of clusters.
      row_hash: ``(n, 2)`` uint32, a 64-bit hash of each row of the data it was computed on (all
        leaves, every bit): the fingerprint that :func:`aljax.cluster_margin` compares with the
        pool it is given, so that a clustering of another pool is refused.

    ``clustering.take(rows)`` restricts it to some of its rows (the still unlabeled ones, say),
    in that order.

    Example:
      >>> import jax.numpy as jnp, aljax
      >>> c = aljax.hac_clustering(jnp.array([[0.0], [0.1], [5.0]]), threshold=1.0)
      >>> c.labels.tolist(), int(c.n_clusters)
      ([0, 0, 1], 2)
      >>> c.take(jnp.array([2, 0])).labels.tolist()
      [0, 1]
    """

    labels: jax.Array
    n_clusters: jax.Array
    row_hash: jax.Array

    def take(self, rows) -> "Clustering":
        """The clustering of some of its rows, in the order of ``rows`` (``(m,)`` integer
        indices), clusters renumbered in order of first appearance among them.

        Example:
          >>> import jax.numpy as jnp, aljax
          >>> c = aljax.hac_clustering(jnp.array([[0.0], [0.1], [5.0]]), threshold=1.0)
          >>> c.take(jnp.array([1, 2])).labels.tolist()
          [0, 1]
        """
        rows = rows if isinstance(rows, (np.ndarray, jax.Array)) else np.asarray(rows)
        if isinstance(rows, jax.Array) and _validate.on_host(rows):
            rows = np.asarray(rows)
        if rows.ndim != 1 or not jnp.issubdtype(rows.dtype, jnp.integer):
            raise TypeError(_validate.message("Clustering.take", "rows", "a 1-D integer array of row indices",
                                              f"dtype {rows.dtype} and shape {tuple(rows.shape)}"))
        n = self.labels.shape[0]
        if rows.size and _validate.is_concrete(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n):
            raise ValueError(_validate.message("Clustering.take", "rows", f"indices in [0, {n})",
                                               f"indices in [{int(rows.min())}, {int(rows.max())}]"))
        if _validate.on_host(rows, self.labels, self.row_hash):   # (NumPy: no compilation per size)
            labels = np.asarray(self.labels)[rows]
            _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
            rank = np.empty(len(first), np.int32)
            rank[np.argsort(first)] = np.arange(len(first), dtype=np.int32)
            return Clustering(_validate.host_put(rank[inverse.reshape(-1)], self.labels),
                              _validate.host_put(np.int32(len(first)), self.n_clusters),
                              _validate.host_put(np.asarray(self.row_hash)[rows], self.row_hash))
        rows = jnp.asarray(rows)
        labels, n_clusters = _canonical(self.labels[rows], self.labels.shape[0])
        return Clustering(labels, n_clusters, self.row_hash[rows])


# ---------------------------------------------------------------------------------------------
# Fingerprint: a 64-bit hash of every row.


def _mix32(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection in which every output bit depends on every
    input bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _words(leaf: jax.Array) -> jax.Array:
    """Every element's bits as uint32 words, ``(b, w)``."""
    b = leaf.shape[0]
    if leaf.dtype == jnp.bool_:
        return leaf.reshape(b, -1).astype(jnp.uint32)
    size = jnp.dtype(leaf.dtype).itemsize
    if size == 4:
        bits = jax.lax.bitcast_convert_type(leaf, jnp.uint32)
    elif size == 8:
        bits = jax.lax.bitcast_convert_type(leaf, jnp.uint32)  # a trailing axis of 2 words
    else:
        bits = jax.lax.bitcast_convert_type(leaf, {2: jnp.uint16, 1: jnp.uint8}[size]).astype(jnp.uint32)
    return bits.reshape(b, -1)


@jax.jit
def _hash_rows(leaves) -> jax.Array:
    """``(b, 2)`` uint32: per row, ``Σ_j mix(bits_j + mix(j ⊕ seed))`` over the elements ``j`` of
    all leaves, mod 2³², for two seeds. A sum of well-mixed words: it changes with any bit of
    the row, and is the same however the pool is split into chunks (the row is hashed alone)."""
    out = []
    for seed in (0x9E3779B9, 0x85EBCA6B):
        total, offset = None, 0
        for leaf in leaves:
            words = _words(leaf)
            pos = jnp.arange(offset, offset + words.shape[1], dtype=jnp.uint32)
            part = jnp.sum(_mix32(words + _mix32(pos ^ jnp.uint32(seed))[None, :]), axis=1, dtype=jnp.uint32)
            total = part if total is None else total + part
            offset += words.shape[1]
        out.append(total)
    return jnp.stack(out, axis=1)


def row_hashes(data) -> jax.Array:
    """``(n, 2)`` uint32 hash of each row of an array or pytree of arrays (leading axis n),
    in chunks of rows."""
    leaves = jax.tree_util.tree_leaves(data)
    n = leaves[0].shape[0]
    if n <= _HASH_ROWS and _validate.on_host(*leaves):   # rows padded to a size bucket: a compilation per bucket
        hashes = _hash_rows(bucket_rows(leaves, n)[0])
        return _validate.host_put(np.asarray(hashes)[:n], hashes)
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    if n <= _HASH_ROWS:
        return _hash_rows(leaves)
    parts = [_hash_rows([leaf[start:start + _HASH_ROWS] for leaf in leaves]) for start in range(0, n, _HASH_ROWS)]
    return jnp.concatenate(parts)


def check_fingerprint(fn: str, arg: str, clustering: Clustering, hashes: jax.Array) -> None:
    """Refuse a clustering whose size or row hashes differ from those of the data given."""
    n_c, n = clustering.labels.shape[0], hashes.shape[0]
    if n_c != n:
        raise ValueError(f"aljax.{fn}: argument `clustering` was computed on a pool of {n_c} points, but `{arg}` "
                         f"has {n}: pass the clustering of this pool (restrict a clustering of a larger pool to "
                         "the rows still unlabeled with `clustering.take(rows)`).")
    differ = np.flatnonzero(np.any(np.asarray(clustering.row_hash) != np.asarray(hashes), axis=1))
    if differ.size:
        raise ValueError(f"aljax.{fn}: argument `clustering` was computed on another pool: {differ.size} of the {n} "
                         f"rows of `{arg}` differ from the rows it was computed on (the first is row {differ[0]}); "
                         "pass the clustering of this pool, in this order.")


# ---------------------------------------------------------------------------------------------
# Exact average-linkage HAC: the nearest-neighbour chain.


def _distances(x: jax.Array) -> jax.Array:
    """The ``(m, m)`` Euclidean distances, built in blocks of rows; ``inf`` on the diagonal."""
    m = x.shape[0]
    x = x - jnp.mean(x, axis=0)  # translation-invariant: centring limits the cancellation below
    sq = jnp.sum(x * x, axis=1)
    block = max(1, min(m, _BLOCK_ENTRIES // max(m, 1)))
    pad = (-m) % block
    xs = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)]).reshape(-1, block, x.shape[1])
    sqs = jnp.concatenate([sq, jnp.zeros((pad,), sq.dtype)]).reshape(-1, block)

    def rows(args):
        xb, sqb = args
        d2 = sqb[:, None] + sq[None, :] - 2 * jnp.matmul(xb, x.T, precision=HIGHEST, preferred_element_type=x.dtype)
        return jnp.sqrt(jnp.maximum(d2, 0.0))

    d = jax.lax.map(rows, (xs, sqs)).reshape(-1, m)[:m]
    return jnp.where(jnp.eye(m, dtype=bool), jnp.inf, d)


class _Chain(NamedTuple):
    dist: jax.Array     # (m, m) cluster distances, each row as of its last write (see _nn_chain)
    stamp: jax.Array    # (m,) when each row was last written (0: never)
    size: jax.Array     # (m,) weight of each slot's cluster
    live: jax.Array     # (m,) slot still able to merge below the threshold
    chain: jax.Array    # (m,) the stack of slots
    depth: jax.Array    # () stack height
    slot: jax.Array     # (m,) the slot each initial item belongs to
    steps: jax.Array    # () iterations so far (a safety bound)


def _row(dist: jax.Array, stamp: jax.Array, a) -> jax.Array:
    """The current distances from slot ``a``: ``d(a, j)`` sits in the row written last of rows
    ``a`` and ``j`` (a merge rewrites only its own row; writing the column too would make XLA copy
    the whole matrix every step)."""
    across = jax.lax.dynamic_index_in_dim(dist, a, axis=0, keepdims=False)
    down = jax.lax.dynamic_index_in_dim(dist, a, axis=1, keepdims=False)
    return jnp.where(stamp[a] >= stamp, across, down)


def _nn_chain(dist: jax.Array, size: jax.Array, live: jax.Array, threshold) -> jax.Array:
    """Average-linkage HAC cut at ``threshold`` over ``m`` items of weights ``size`` (dead items
    never merge): the slot (cluster representative) of every item.

    Each step looks at the top ``a`` of the chain and its nearest live neighbour ``b`` (the
    previous chain element on a tie, then the lowest index). If ``d(a, b) > threshold``, ``a``
    is retired (reducibility: no later merge brings a cluster closer to ``a``); if ``b`` is the
    previous element they are reciprocal nearest neighbours and merge into slot ``a``; otherwise
    ``b`` is pushed. At most about ``3m`` steps, each O(m)."""
    m = dist.shape[0]
    idx = jnp.arange(m, dtype=jnp.int32)

    def cond(s: _Chain):
        return jnp.any(s.live) & (s.steps < 4 * m + 8)

    def body(s: _Chain):
        empty = s.depth == 0
        first_live = jnp.argmax(s.live).astype(jnp.int32)
        chain = jnp.where(empty, s.chain.at[0].set(first_live), s.chain)
        depth = jnp.where(empty, 1, s.depth)
        a = chain[depth - 1]
        prev = jnp.where(depth >= 2, chain[jnp.maximum(depth - 2, 0)], -1)
        da = _row(s.dist, s.stamp, a)
        row = jnp.where(s.live & (idx != a), da, jnp.inf)
        dmin = jnp.min(row)
        b = jnp.argmin(row).astype(jnp.int32)
        b = jnp.where((prev >= 0) & (row[jnp.maximum(prev, 0)] == dmin), prev, b)
        retire = ~(dmin <= threshold)   # also when a is the last live cluster (inf)
        merge = ~retire & (b == prev)
        push = ~retire & ~merge

        # Merge b into a: Lance–Williams, clipped below at min(d_a, d_b) so that the update stays
        # reducible in floating point too. Row a is rewritten only when merging.
        sa, sb = s.size[a], s.size[b]
        db = _row(s.dist, s.stamp, b)
        new = jnp.maximum((sa * da + sb * db) / (sa + sb), jnp.minimum(da, db)).at[a].set(jnp.inf)
        dist = jax.lax.dynamic_update_index_in_dim(s.dist, jnp.where(merge, new, da), a, axis=0)
        stamp = s.stamp.at[a].set(jnp.where(merge, s.steps + 1, s.stamp[a]))
        size = s.size.at[a].set(jnp.where(merge, sa + sb, sa))
        live = s.live & ~(retire & (idx == a)) & ~(merge & (idx == b))
        slot = jnp.where(merge & (s.slot == b), a, s.slot)
        chain = jnp.where(push, chain.at[jnp.minimum(depth, m - 1)].set(b), chain)
        depth = jnp.where(push, depth + 1, jnp.where(merge, depth - 2, depth - 1))
        return _Chain(dist, stamp, size, live, chain, depth, slot, s.steps + 1)

    init = _Chain(dist, jnp.zeros(m, jnp.int32), size, live, jnp.zeros(m, jnp.int32), jnp.int32(0), idx,
                  jnp.int32(0))
    final = jax.lax.while_loop(cond, body, init)
    # Every step pushes, merges or retires: at most 2m pushes and m merges or retirements. A chain
    # still live after 4m + 8 steps would be a bug; it is reported, never returned as a result.
    return final.slot, jnp.any(final.live)


def _canonical(slots: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
    """Cluster ids ``0, 1, …`` in order of each cluster's first point, and their count."""
    n = slots.shape[0]
    rows = jnp.arange(n, dtype=jnp.int32)
    first = jax.ops.segment_min(rows, slots, num_segments=m)
    is_first = rows == first[slots]
    ids = jnp.cumsum(is_first.astype(jnp.int32)) - 1
    return ids[first[slots]], jnp.sum(is_first).astype(jnp.int32)


@jax.jit
def _exact(x: jax.Array, threshold) -> tuple[jax.Array, jax.Array]:
    dtype = jnp.result_type(jnp.float32, x.dtype)
    x = x.astype(dtype)
    m = x.shape[0]
    slots, stuck = _nn_chain(_distances(x), jnp.ones(m, dtype), jnp.ones(m, bool), jnp.asarray(threshold, dtype))
    return (*_canonical(slots, m), stuck)


# ---------------------------------------------------------------------------------------------
# Two-level: k-means++ centres, then weighted HAC over the centres.


@jax.jit
def _nearest_centre(x: jax.Array, centres: jax.Array) -> jax.Array:
    """The nearest centre of every row, over blocks of rows (``‖c‖² − 2 x·c``)."""
    n, d = x.shape
    m = centres.shape[0]
    sq_c = jnp.sum(centres * centres, axis=1)
    block = max(1, min(n, _BLOCK_ENTRIES // max(m, 1)))
    pad = (-n) % block
    xs = jnp.concatenate([x, jnp.zeros((pad, d), x.dtype)]).reshape(-1, block, d)

    def rows(xb):
        cross = jnp.matmul(xb, centres.T, precision=HIGHEST, preferred_element_type=x.dtype)
        return jnp.argmin(sq_c[None, :] - 2 * cross, axis=1).astype(jnp.int32)

    return jax.lax.map(rows, xs).reshape(-1)[:n]


@jax.jit
def _centre_hac(centres: jax.Array, assign: jax.Array, threshold) -> tuple[jax.Array, jax.Array]:
    m = centres.shape[0]
    counts = jnp.zeros(m, centres.dtype).at[assign].add(1.0)
    slots, stuck = _nn_chain(_distances(centres), counts, counts > 0, jnp.asarray(threshold, centres.dtype))
    return (*_canonical(slots[assign], m), stuck)


def _two_level(key: jax.Array, x: jax.Array, threshold: float, n_centres: int):
    dtype = jnp.result_type(jnp.float32, x.dtype)
    x = x.astype(dtype) - jnp.mean(x.astype(dtype), axis=0)
    n = x.shape[0]
    sample_key, seed_key = jax.random.split(key)
    sample = jax.random.choice(sample_key, n, (min(n, _SAMPLE_PER_CENTRE * n_centres),), replace=False)
    picks = kmeans_pp(x[sample], n_centres, key=seed_key)
    centres = x[sample[picks]]
    assign = _nearest_centre(x, centres)
    return _centre_hac(centres, assign, threshold)


# ---------------------------------------------------------------------------------------------
# Public.


def check_threshold(fn: str, threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(_validate.message(fn, "threshold", "a real number",
                                          f"{type(threshold).__name__} {threshold!r}"))
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(_validate.message(fn, "threshold", "a finite distance > 0", threshold))
    return float(threshold)


def check_sizes(fn: str, max_exact: Any, n_centres: Any) -> tuple[int, int]:
    return _validate.check_int(fn, "max_exact", max_exact, low=2), _validate.check_int(fn, "n_centres", n_centres,
                                                                                         low=2)


def cluster_features(fn: str, key: jax.Array, features: jax.Array, threshold: float, max_exact: int,
                     n_centres: int) -> tuple[jax.Array, jax.Array]:
    """Validated inputs -> ``(labels, n_clusters)``: exact up to ``max_exact`` rows, else two-level."""
    n = features.shape[0]
    if n > max_exact and n_centres > max_exact:
        raise ValueError(_validate.message(fn, "n_centres", f"at most `max_exact` ({max_exact}) for a pool of {n} "
                                           "points (more than `max_exact`: clustered in two levels)", n_centres))
    with _progress.waiting("clustering", n, unit="point") as bar:
        if n <= max_exact:
            labels, n_clusters, stuck = bar.wait(_exact(features, threshold))
        else:
            labels, n_clusters, stuck = bar.wait(_two_level(key, features, threshold, min(n_centres, n)))
    if _validate.is_concrete(stuck) and bool(stuck):
        raise RuntimeError(f"aljax.{fn}: the nearest-neighbour chain did not finish within its step bound; "
                           "this is a bug in aljax, please report it with the embedding.")
    return labels, n_clusters


def hac_clustering(embedding, *, threshold: float, key=0, max_exact: int = MAX_EXACT, n_centres: int = N_CENTRES,
                   fingerprint_of=None) -> Clustering:
    """Average-linkage agglomerative clustering cut at a distance ``threshold``: Cluster-Margin's
    clustering (Citovsky et al., "Batch active learning at scale", NeurIPS 2021).

    Exact up to ``max_exact`` points: equal to SciPy's ``fcluster(linkage(embedding, "average"),
    threshold, criterion="distance")`` up to the numbering (Euclidean distances; ties and
    distances within float rounding of the threshold aside). It holds the ``n × n`` distance
    matrix (256 MiB of float32 at the default 8,192 points) and runs the nearest-neighbour chain in
    one ``lax.while_loop``: O(n²) time.

    Beyond ``max_exact`` points, two levels: ``n_centres`` centres by k-means++ seeding on a
    uniform sample of ``8·n_centres`` points, every point assigned to its nearest centre, then the
    exact HAC over the centres weighted by their counts (a centre is a cluster of its points,
    placed at the centre); every point inherits its centre's cluster. Points that share a centre
    always share a cluster, so choose ``threshold`` above the spread of a centre's points. Memory
    O(n·d + n_centres²); at 1,000,000 × 128 see ``docs/algorithms/cluster_margin.md``.

    Args:
      embedding: ``(n, d)`` floating features (penultimate features, in the paper).
      threshold: the distance cut, a finite number ``> 0``: clusters whose average distance is
        at most ``threshold`` are merged.
      key: int seed or ``jax.random`` key of the two-level scheme's sample and seeding (unused by
        the exact path).
      max_exact: the largest pool clustered exactly, an int ``>= 2``.
      n_centres: the two-level scheme's centres, an int ``>= 2``, at most ``max_exact`` when the
        pool has more than ``max_exact`` points (the centres are clustered exactly).
      fingerprint_of: the data whose row hashes become the clustering's fingerprint (default: the
        embedding itself); pass the pool's inputs to use the clustering with
        :func:`aljax.cluster_margin`.

    Returns:
      A :class:`Clustering`.

    Example:
      >>> import jax.numpy as jnp, aljax
      >>> x = jnp.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.5], [30.0, 0.0]])
      >>> aljax.hac_clustering(x, threshold=2.0).labels.tolist()
      [0, 0, 1, 1, 2]
    """
    fn = "hac_clustering"
    key = _validate.as_key(fn, key)
    _validate.check_floating_2d(fn, "embedding", embedding)
    n = embedding.shape[0]
    if n == 0:
        raise ValueError(_validate.message(fn, "embedding", "a non-empty pool", "an empty pool (0 examples)"))
    threshold = check_threshold(fn, threshold)
    max_exact, n_centres = check_sizes(fn, max_exact, n_centres)
    if n > max_exact and n_centres > max_exact:
        raise ValueError(_validate.message(fn, "n_centres", f"at most `max_exact` ({max_exact}) for a pool of {n} "
                                           "points (more than `max_exact`: clustered in two levels)", n_centres))
    if fingerprint_of is not None:
        m = _validate.pool_size(fn, fingerprint_of, "fingerprint_of")
        if m != n:
            raise ValueError(_validate.message(fn, "fingerprint_of", f"{n} rows like `embedding`", f"{m} rows"))
    _validate.check_finite(fn, "argument `embedding`", embedding)
    hashes = row_hashes(embedding if fingerprint_of is None else fingerprint_of)
    labels, n_clusters = cluster_features(fn, key, jnp.asarray(embedding), threshold, max_exact, n_centres)
    return Clustering(labels, n_clusters, hashes)
