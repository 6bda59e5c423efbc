"""Cluster-Margin: the average-linkage clustering against SciPy, the round-robin selection against
a NumPy reference, the fingerprint that refuses a clustering of another pool, and the front doors
against the selector."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings, strategies as st
from scipy.cluster.hierarchy import fcluster, linkage

import aljax
from aljax import _hac


# ---------------------------------------------------------------- references


def same_partition(a, b) -> bool:
    """Two labelings describe the same partition (up to the numbering)."""
    a, b = np.asarray(a), np.asarray(b)
    forward, backward = {}, {}
    for x, y in zip(a.tolist(), b.tolist()):
        if forward.setdefault(x, y) != y or backward.setdefault(y, x) != x:
            return False
    return True


def threshold_in_a_gap(heights: np.ndarray, rng, min_gap: float = 1e-3):
    """A cut halfway between two merge heights at least ``min_gap`` (relative) apart, so that
    float32 rounding cannot move a merge across it; None if the dendrogram has no such gap."""
    heights = np.sort(heights)
    gaps = [j for j in range(len(heights) - 1)
            if heights[j + 1] - heights[j] > min_gap * max(heights[j + 1], 1e-6)]
    if not gaps:
        return None
    j = gaps[rng.integers(len(gaps))]
    return float((heights[j] + heights[j + 1]) / 2)


def scipy_labels(x: np.ndarray, threshold: float) -> np.ndarray:
    return fcluster(linkage(x.astype(np.float64), method="average"), threshold, criterion="distance")


def round_robin_reference(logits, labels, k, n_candidates, order_in_cluster):
    """Cluster-Margin's batch, step by step: the ``n_candidates`` lowest margins (stable: ties to
    the lowest index), grouped by cluster; clusters visited smallest first (ties: lower id), one
    point per cluster per turn, each cluster's points in the order ``order_in_cluster``."""
    logits = np.asarray(logits, np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top2 = np.sort(p, axis=1)[:, -2:]
    margin = np.asarray(jnp.asarray(1.0 - (top2[:, 1] - top2[:, 0]), jnp.float32))  # the kernel's float32 score
    candidates = np.argsort(-margin, kind="stable")[:n_candidates]
    groups = {}
    for position, i in enumerate(candidates):
        groups.setdefault(int(labels[i]), []).append((order_in_cluster[position], int(i)))
    queues = [[i for _, i in sorted(members)] for _, members in
              sorted(groups.items(), key=lambda item: (len(item[1]), item[0]))]
    picks = []
    while len(picks) < k:
        for queue in queues:
            if queue and len(picks) < k:
                picks.append(queue.pop(0))
    return picks


def blobs(rng, n, d, n_blobs, spread=10.0):
    centres = rng.normal(scale=spread, size=(n_blobs, d))
    truth = rng.integers(0, n_blobs, n)
    return (centres[truth] + rng.normal(size=(n, d))).astype(np.float32), truth


# ---------------------------------------------------------------- exact HAC against SciPy


@pytest.mark.parametrize("seed", range(5))
def test_exact_hac_equals_scipy_average_linkage_at_the_threshold(seed):
    rng = np.random.default_rng(seed)
    n, d = [(5, 1), (37, 3), (64, 7), (100, 2), (150, 5)][seed]
    x = rng.normal(size=(n, d)).astype(np.float32)
    t = threshold_in_a_gap(linkage(x.astype(np.float64), "average")[:, 2], rng)
    if t is None:
        pytest.skip("no gap between merge heights")
    got = aljax.hac_clustering(jnp.asarray(x), threshold=t)
    ref = scipy_labels(x, t)
    assert same_partition(got.labels, ref)
    assert int(got.n_clusters) == len(set(ref.tolist()))


@settings(max_examples=8, deadline=None)
@given(n=st.sampled_from([3, 17, 40]), d=st.integers(1, 4), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_exact_hac_equals_scipy_hypothesis(n, d, seed, data):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * data.draw(st.sampled_from([0.01, 1.0, 100.0]))).astype(np.float32)
    t = threshold_in_a_gap(linkage(x.astype(np.float64), "average")[:, 2], rng)
    if t is None:
        return
    assert same_partition(aljax.hac_clustering(jnp.asarray(x), threshold=t).labels, scipy_labels(x, t))


def test_exact_hac_on_blobs_with_an_offset_and_duplicates():
    rng = np.random.default_rng(5)
    x, truth = blobs(rng, 300, 16, 7, spread=20.0)
    x = np.concatenate([x, x[:20]]) + 1000.0   # duplicates, and a large common offset
    truth = np.concatenate([truth, truth[:20]])
    got = aljax.hac_clustering(jnp.asarray(x), threshold=30.0)
    assert same_partition(got.labels, truth)
    assert same_partition(got.labels, scipy_labels(x, 30.0))


def test_labels_are_numbered_in_order_of_first_appearance():
    x = jnp.array([[5.0], [0.0], [5.1], [9.0], [0.1]])
    c = aljax.hac_clustering(x, threshold=1.0)
    assert c.labels.tolist() == [0, 1, 0, 2, 1] and int(c.n_clusters) == 3
    assert c.labels.dtype == jnp.int32


def test_threshold_extremes_give_singletons_or_one_cluster():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(30, 3)), jnp.float32)
    assert int(aljax.hac_clustering(x, threshold=1e-6).n_clusters) == 30
    assert int(aljax.hac_clustering(x, threshold=1e6).n_clusters) == 1


# ---------------------------------------------------------------- two levels


def test_weighted_centre_hac_equals_scipy_on_repeated_centres():
    """A centre of count c is c coincident points: average linkage over the repeated centres."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(25, 3)).astype(np.float32)
    assign = rng.integers(0, 25, 200)
    assign[:25] = np.arange(25)
    assign[assign == 7] = 8   # centre 7 gets no point: it must not take part
    counts = np.bincount(assign, minlength=25)
    repeated = np.repeat(centres, counts, axis=0)
    owner = np.repeat(np.arange(25), counts)
    t = threshold_in_a_gap(linkage(repeated.astype(np.float64), "average")[:, 2], rng)
    ref = scipy_labels(repeated, t)
    ref_of_centre = {c: ref[np.flatnonzero(owner == c)[0]] for c in np.unique(owner)}
    labels, n_clusters, stuck = _hac._centre_hac(jnp.asarray(centres), jnp.asarray(assign, jnp.int32), t)
    assert not bool(stuck)
    assert same_partition(labels, [ref_of_centre[c] for c in assign])
    assert int(n_clusters) == len(set(ref.tolist()))


def test_two_level_recovers_separated_blobs_as_the_exact_path_does():
    rng = np.random.default_rng(2)
    x, truth = blobs(rng, 800, 8, 12, spread=30.0)
    two_level = aljax.hac_clustering(jnp.asarray(x), threshold=20.0, max_exact=300, n_centres=60, key=3)
    exact = aljax.hac_clustering(jnp.asarray(x), threshold=20.0)
    assert same_partition(two_level.labels, truth) and same_partition(exact.labels, truth)


def test_two_level_is_deterministic_in_its_key():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(300, 4)), jnp.float32)
    a = aljax.hac_clustering(x, threshold=1.5, max_exact=100, n_centres=60, key=1)
    b = aljax.hac_clustering(x, threshold=1.5, max_exact=100, n_centres=60, key=1)
    c = aljax.hac_clustering(x, threshold=1.5, max_exact=100, n_centres=60, key=2)
    assert a.labels.tolist() == b.labels.tolist() and a.labels.tolist() != c.labels.tolist()


# ---------------------------------------------------------------- fingerprint


def test_row_hashes_do_not_depend_on_chunking_and_change_with_any_bit(monkeypatch):
    rng = np.random.default_rng(0)
    pool = {"x": jnp.asarray(rng.normal(size=(50, 3, 2)), jnp.float32), "ids": jnp.arange(50)}
    whole = _hac.row_hashes(pool)
    monkeypatch.setattr(_hac, "_HASH_ROWS", 7)
    assert np.array_equal(_hac.row_hashes(pool), whole)
    flipped = dict(pool, x=pool["x"].at[10, 2, 1].set(jnp.nextafter(pool["x"][10, 2, 1], 10.0)))
    differ = np.flatnonzero(np.any(np.asarray(_hac.row_hashes(flipped)) != np.asarray(whole), axis=1))
    assert differ.tolist() == [10]
    assert len({tuple(r) for r in np.asarray(whole).tolist()}) == 50
    for dtype in (jnp.float16, jnp.int8, jnp.bool_, jnp.uint32):
        assert _hac.row_hashes(jnp.ones((4, 3), dtype)).shape == (4, 2)


def test_take_restricts_and_renumbers():
    x = jnp.array([[0.0], [0.1], [5.0], [5.1], [9.0]])
    c = aljax.hac_clustering(x, threshold=1.0)
    sub = c.take(jnp.array([4, 2, 0]))
    assert sub.labels.tolist() == [0, 1, 2] and int(sub.n_clusters) == 3
    assert np.array_equal(sub.row_hash, np.asarray(c.row_hash)[[4, 2, 0]])
    with pytest.raises(ValueError, match="Clustering.take"):
        c.take(jnp.array([5]))


# ---------------------------------------------------------------- the selection


def _problem(seed, n=60, n_classes=4, n_blobs=6):
    rng = np.random.default_rng(seed)
    feats, _ = blobs(rng, n, 5, n_blobs)
    logits = jnp.asarray(rng.normal(size=(n, n_classes)), jnp.float32)
    return logits, aljax.hac_clustering(jnp.asarray(feats), threshold=15.0)


@pytest.mark.parametrize("seed, k, multiple", [(0, 5, 3.0), (1, 10, 2.0), (2, 7, 10.0), (3, 20, 1.5),
                                               (4, 1, 4.0), (5, 60, 1.0)])
def test_round_robin_equals_the_numpy_reference(seed, k, multiple):
    logits, clustering = _problem(seed)
    key = jax.random.key(seed)
    n_candidates = min(60, int(np.ceil(multiple * k)))
    order = np.asarray(jax.random.permutation(key, n_candidates))
    ref = round_robin_reference(logits, np.asarray(clustering.labels), k, n_candidates, order)
    got = aljax.margin_round_robin(logits, k, key=key, clustering=clustering, margin_multiple=multiple)
    assert got.tolist() == ref
    assert got.dtype == jnp.int32


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 4, 13, 40]), multiple=st.sampled_from([1.0, 1.7, 3.0, 8.0]))
def test_round_robin_properties(seed, k, multiple):
    logits, clustering = _problem(seed % 7, n=40)
    picks = aljax.margin_round_robin(logits, k, key=seed, clustering=clustering, margin_multiple=multiple)
    again = aljax.margin_round_robin(logits, k, key=seed, clustering=clustering, margin_multiple=multiple)
    assert picks.tolist() == again.tolist()
    assert len(set(picks.tolist())) == k and all(0 <= i < 40 for i in picks.tolist())
    # Only candidates are picked, and the first turn holds one point of each of the smallest clusters.
    n_candidates = min(40, int(np.ceil(multiple * k - 1e-9)))
    candidates = set(aljax.scores.top_k(aljax.scores.margin(logits), n_candidates).tolist())
    assert set(picks.tolist()) <= candidates
    labels = np.asarray(clustering.labels)
    first_turn = labels[picks.tolist()[:len({labels[i] for i in candidates})]]
    assert len(set(first_turn.tolist())) == len(first_turn)


def test_same_picks_with_and_without_jit():
    logits, clustering = _problem(8)
    plain = aljax.margin_round_robin(logits, 7, key=3, clustering=clustering, margin_multiple=4.0)
    jitted = jax.jit(lambda lg, c, key: aljax.margin_round_robin(lg, 7, key=key, clustering=c, margin_multiple=4.0))
    assert jitted(logits, clustering, jax.random.key(3)).tolist() == plain.tolist()


def test_margin_multiple_one_is_margin_sampling():
    logits, clustering = _problem(9)
    got = aljax.margin_round_robin(logits, 8, clustering=clustering, margin_multiple=1.0)
    assert sorted(got.tolist()) == sorted(aljax.margin(None, lambda p, x: x, logits, 8).tolist())


def test_one_big_cluster_is_a_random_subset_of_the_candidates():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(50, 3)), jnp.float32)
    one = aljax.hac_clustering(jnp.zeros((50, 2)) + jnp.arange(50.0)[:, None] * 1e-3, threshold=10.0)
    assert int(one.n_clusters) == 1
    draws = {tuple(aljax.margin_round_robin(logits, 3, key=s, clustering=one, margin_multiple=5.0).tolist())
             for s in range(10)}
    assert len(draws) > 1


# ---------------------------------------------------------------- front doors


W1 = jax.random.normal(jax.random.key(0), (4, 16))
W2 = jax.random.normal(jax.random.key(2), (16, 3))
PARAMS = (W1, W2)
POOL = jax.random.normal(jax.random.key(1), (120, 4))


def apply_fn(p, x):
    return jnp.tanh(x @ p[0]) @ p[1]


def features_fn(p, x):
    return jnp.tanh(x @ p[0])


def test_cluster_pool_is_hac_of_the_penultimate_features_fingerprinted_by_the_pool():
    c = aljax.cluster_pool(PARAMS, apply_fn, POOL, threshold=2.0, batch_size=32)
    ref = aljax.hac_clustering(features_fn(PARAMS, POOL), threshold=2.0, fingerprint_of=POOL)
    assert c.labels.tolist() == ref.labels.tolist() and int(c.n_clusters) > 1
    assert np.array_equal(c.row_hash, ref.row_hash)
    streamed = aljax.cluster_pool(PARAMS, apply_fn, iter([POOL[:50], POOL[50:]]), threshold=2.0)
    assert streamed.labels.tolist() == c.labels.tolist() and np.array_equal(streamed.row_hash, c.row_hash)


def test_front_door_equals_the_selector_on_the_logits():
    c = aljax.cluster_pool(PARAMS, apply_fn, POOL, threshold=2.0, features_fn=features_fn)
    got = aljax.cluster_margin(PARAMS, apply_fn, POOL, 9, key=4, clustering=c, margin_multiple=3.0)
    ref = aljax.margin_round_robin(apply_fn(PARAMS, POOL), 9, key=4, clustering=c, margin_multiple=3.0)
    assert got.tolist() == ref.tolist()
    inline = aljax.cluster_margin(PARAMS, apply_fn, POOL, 9, key=4, threshold=2.0, margin_multiple=3.0)
    assert inline.tolist() == ref.tolist()
    streamed = aljax.cluster_margin(PARAMS, apply_fn, iter([POOL[:7], POOL[7:]]), 9, key=4, clustering=c,
                                    margin_multiple=3.0)
    assert streamed.tolist() == ref.tolist()


def test_a_clustering_of_another_pool_is_refused_and_take_fits_a_shrunk_pool():
    c = aljax.cluster_pool(PARAMS, apply_fn, POOL, threshold=2.0)
    with pytest.raises(ValueError, match=r"another pool: 1 of the 120 rows .* row 3"):
        aljax.cluster_margin(PARAMS, apply_fn, POOL.at[3, 0].add(1.0), 5, clustering=c)
    with pytest.raises(ValueError, match="another pool"):
        aljax.cluster_margin(PARAMS, apply_fn, POOL[::-1], 5, clustering=c)
    with pytest.raises(ValueError, match="pool of 120 points, but the pool has 100"):
        aljax.cluster_margin(PARAMS, apply_fn, POOL[20:], 5, clustering=c)
    with pytest.raises(ValueError, match="another pool"):
        aljax.cluster_margin(PARAMS, apply_fn, iter([POOL[:60], POOL[60:].at[0, 0].add(1.0)]), 5, clustering=c)
    rows = jnp.arange(20, 120)
    got = aljax.cluster_margin(PARAMS, apply_fn, POOL[20:], 5, clustering=c.take(rows), key=1)
    ref = aljax.margin_round_robin(apply_fn(PARAMS, POOL[20:]), 5, key=1, clustering=c.take(rows))
    assert got.tolist() == ref.tolist()


# ---------------------------------------------------------------- torch mirror


def test_torch_mirror_equals_the_jax_selector_and_checks_the_fingerprint():
    torch = pytest.importorskip("torch")
    import aljax.torch_adapter as ta

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    pool = torch.randn(80, 4)
    clustering = ta.cluster_pool(model, pool, threshold=1.5)
    with torch.no_grad():
        feats = model[1](model[0](pool)).numpy()
        logits = jnp.asarray(model(pool).numpy())
    ref_clustering = aljax.hac_clustering(jnp.asarray(feats), threshold=1.5)
    assert same_partition(clustering.labels, ref_clustering.labels)
    got = ta.cluster_margin(model, pool, 6, key=2, clustering=clustering, margin_multiple=4.0)
    ref = aljax.margin_round_robin(logits, 6, key=2, clustering=clustering, margin_multiple=4.0)
    assert got.tolist() == ref.tolist()
    assert ta.cluster_margin(model, pool, 6, key=2, threshold=1.5, margin_multiple=4.0).shape == (6,)
    with pytest.raises(ValueError, match="another pool"):
        ta.cluster_margin(model, pool.flip(0), 6, clustering=clustering)
    with pytest.raises(ValueError, match="pool of 80 points, but the pool has 40"):
        ta.cluster_margin(model, pool[:40], 6, clustering=clustering)
    with pytest.raises(ValueError, match="margin_multiple"):
        ta.cluster_margin(model, pool, 6, clustering=clustering, margin_multiple=0.9)


# ---------------------------------------------------------------- no compilation per pool size


def test_small_inputs_take_numpy_paths_with_the_jitted_results(monkeypatch):
    """``Clustering.take`` and the row hashes of small host inputs run in NumPy (the hashes on rows
    padded to a size bucket): the jitted paths' results (HOST_MAX_ELEMENTS = 0 forces them)."""
    from aljax import _hac, _validate

    rng = np.random.default_rng(3)
    pool = rng.normal(size=(90, 3)).astype(np.float32)
    clustering = aljax.hac_clustering(jnp.asarray(pool), threshold=1.5)
    rows = rng.permutation(90)[:61]
    host = (clustering.take(rows), _hac.row_hashes(pool), _hac.row_hashes({"a": pool, "b": pool[:, :1] > 0}))
    monkeypatch.setattr(_validate, "HOST_MAX_ELEMENTS", 0)
    jitted = (clustering.take(rows), _hac.row_hashes(pool), _hac.row_hashes({"a": pool, "b": pool[:, :1] > 0}))
    for a, b in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(jitted)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(host[0].n_clusters) == len(set(np.asarray(clustering.labels)[rows].tolist())) > 1


def test_round_robin_on_padded_logits_picks_as_unpadded_and_compiles_once():
    """The selection pads concrete logits and labels to a size bucket (padding never a candidate):
    the unpadded kernel's picks, and one compilation for pools of 60, 58 and 57 rows."""
    from aljax import _clustermargin

    rng = np.random.default_rng(8)
    logits, labels = rng.normal(size=(60, 4)).astype(np.float32), rng.integers(0, 5, 60).astype(np.int32)
    key = jax.random.key(2)
    before = _clustermargin._round_robin._cache_size()
    for n in (60, 58, 57):
        got = _clustermargin.round_robin_kernel(key, logits[:n], labels[:n], 6, 30)
        want = _clustermargin._round_robin(key, jnp.asarray(logits[:n]), jnp.asarray(labels[:n]), None, k=6,
                                           n_candidates=30)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert _clustermargin._round_robin._cache_size() - before == 1 + 3   # (the unpadded references: 3)
