"""Cold start selectors (TypiClust, ProbCover): k-means, typicality, the purity rule and the coverage
greedy against slow NumPy references; properties; bad input (also in tests/test_bad_input.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aljax
from aljax import _coldstart, _kmeans

# ---------------------------------------------------------------- NumPy references (float64, full matrices)


def _sqdist_ref(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=2)


def _lloyd_ref(x, centres, max_iter=100, tol=1e-4):
    """Lloyd's iterations with scikit-learn's stopping rules, from fixed centres."""
    x, centres = np.asarray(x, np.float64), np.asarray(centres, np.float64).copy()
    tol = tol * np.mean(np.var(x, axis=0))
    assign = np.argmin(_sqdist_ref(x, centres), axis=1)
    for _ in range(max_iter):
        new = centres.copy()
        for c in range(len(centres)):
            if np.any(assign == c):
                new[c] = x[assign == c].mean(axis=0)
        new_assign = np.argmin(_sqdist_ref(x, new), axis=1)
        shift = np.sum((new - centres) ** 2)
        done = np.array_equal(new_assign, assign) or shift <= tol
        centres, assign = new, new_assign
        if done:
            break
    return centres, assign


def _typicality_ref(x, assign, n_neighbors):
    """1 / mean distance to the K = min(n_neighbors, size // 2) nearest other points of the cluster."""
    x = np.asarray(x, np.float64)
    out = np.zeros(len(x))
    for i in range(len(x)):
        same = np.flatnonzero((assign == assign[i]) & (np.arange(len(x)) != i))
        kk = min(n_neighbors, (len(same) + 1) // 2)
        if kk == 0:
            continue
        d = np.sort(np.sqrt(np.sum((x[same] - x[i]) ** 2, axis=1)))[:kk]
        out[i] = np.inf if d.mean() == 0 else 1 / d.mean()
    return out


def _typiclust_ref(assign_pool, assign_lab, typicality, c, k):
    """The authors' selection loop (clusters by fewest labeled points, then largest; the most typical
    remaining point of cluster ``i % len``), typicality not recomputed, clusters of <= 5 points last."""
    size = np.bincount(assign_pool, minlength=c) + (np.bincount(assign_lab, minlength=c) if assign_lab is not None
                                                    else 0)
    n_lab = np.bincount(assign_lab, minlength=c) if assign_lab is not None else np.zeros(c, int)
    clusters = sorted(range(c), key=lambda cl: (n_lab[cl], -size[cl], cl))
    big = [cl for cl in clusters if size[cl] > 5 and np.any(assign_pool == cl)]
    small = [cl for cl in clusters if size[cl] <= 5 and np.any(assign_pool == cl)]
    remaining = np.ones(len(assign_pool), bool)
    picks = []
    for group in (big, small):
        while len(picks) < k and any(np.any(remaining & (assign_pool == cl)) for cl in group):
            for cl in group:
                members = np.flatnonzero(remaining & (assign_pool == cl))
                if len(picks) == k or not len(members):
                    continue
                best = members[np.argmax(typicality[members])]   # lowest index on ties
                picks.append(best)
                remaining[best] = False
    return np.array(picks)


def _purity_delta_ref(x, labels, alpha):
    """The largest δ (strict balls) with at least ⌈α·n⌉ pure balls: the ⌈α·n⌉-th largest distance to
    the nearest point of another label."""
    d = np.sqrt(_sqdist_ref(x, x))
    r = np.where(labels[:, None] != labels[None, :], d, np.inf).min(axis=1)
    return np.sort(r)[::-1][int(np.ceil(alpha * len(x) - 1e-9)) - 1], r


def _coverage_ref(x, k, delta, labeled=None):
    """Greedy max coverage on the full δ-ball matrix (strict), lowest index on ties; returns the
    picks and the number of covered pool points after each step (stops when all are covered)."""
    inside = _sqdist_ref(x, x) < delta ** 2          # inside[i, j]: j covers i
    covered = np.zeros(len(x), bool) if labeled is None else (_sqdist_ref(x, labeled) < delta ** 2).any(axis=1)
    picks, counts = [], []
    for _ in range(k):
        gain = (inside & ~covered[:, None]).sum(axis=0)
        gain[picks] = -1
        j = int(np.argmax(gain))
        if gain[j] <= 0:
            break
        picks.append(j)
        covered |= inside[:, j]
        counts.append(int(covered.sum()))
    return picks, counts


def _replay_counts(x, picks, delta, labeled=None):
    """Covered pool points after each of ``picks``, and whether each pick had the largest gain then."""
    inside = _sqdist_ref(x, x) < delta ** 2
    covered = np.zeros(len(x), bool) if labeled is None else (_sqdist_ref(x, labeled) < delta ** 2).any(axis=1)
    counts, greedy = [], []
    for j in picks:
        gain = (inside & ~covered[:, None]).sum(axis=0)
        greedy.append(gain[j] == gain.max())
        covered |= inside[:, j]
        counts.append(int(covered.sum()))
    return counts, greedy


def _blobs(seed, n_per=30, centres=4, d=5, spread=0.3):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(centres, d)) * 4
    x = np.concatenate([m + spread * rng.normal(size=(n_per, d)) for m in mu])
    y = np.repeat(np.arange(centres), n_per)
    perm = rng.permutation(len(x))
    return x[perm].astype(np.float32), y[perm]


# ---------------------------------------------------------------- k-means


@pytest.mark.parametrize("seed", range(3))
def test_lloyd_from_fixed_centres_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(150, 4)).astype(np.float32)
    x[:50] += 3
    start = x[rng.choice(150, 6, replace=False)]
    centres, assign = _kmeans.lloyd(jnp.asarray(x), jnp.asarray(start))
    want_centres, want_assign = _lloyd_ref(x, start)
    np.testing.assert_array_equal(assign, want_assign)
    np.testing.assert_allclose(centres, want_centres, rtol=1e-4, atol=1e-4)


def test_lloyd_keeps_the_centre_of_an_empty_cluster():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]], np.float32)
    start = np.array([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]], np.float32)
    centres, assign = _kmeans.lloyd(jnp.asarray(x), jnp.asarray(start))
    np.testing.assert_array_equal(assign, [0, 0, 1, 1])
    np.testing.assert_allclose(centres[2], [100.0, 100.0])


def test_kmeans_recovers_well_separated_blobs():
    x, y = _blobs(0)
    _, assign = _kmeans.kmeans(jax.random.key(1), jnp.asarray(x), 4)
    assign = np.asarray(assign)
    # one cluster per blob: the assignment is a relabelling of the blobs
    assert all(len(set(assign[y == b])) == 1 for b in range(4)) and len(set(assign)) == 4


def test_kmeans_with_more_clusters_than_distinct_points():
    x = jnp.asarray(np.repeat(np.eye(3, dtype=np.float32), 4, axis=0))
    centres, assign = _kmeans.kmeans(jax.random.key(0), x, 5)
    assert np.all(np.isfinite(centres))
    assert len(set(np.asarray(assign).tolist())) == 3


def test_kmeans_pp_seeding_draws_in_proportion_to_squared_distance():
    """k-means++ on four points of a line (0, 1, 3, 7), two centres, over 4,000 keys: the first
    centre uniform, the second with probability ∝ its squared distance to the first; a
    chi-square test of the 12 (first, second) pairs against those probabilities. The draw is
    per point from its index (padding-free): padded parts give the same centres."""
    x = jnp.asarray([[0.0], [1.0], [3.0], [7.0]], jnp.float32)
    keys = jax.random.split(jax.random.key(5), 4000)
    init = jax.jit(jax.vmap(lambda kk: _kmeans.kmeans_pp_init(kk, (x,), 2, _kmeans.Rows.of((x,)))))
    centres = np.asarray(init(keys))[:, :, 0]
    pos = {0.0: 0, 1.0: 1, 3.0: 2, 7.0: 3}
    pairs = np.array([[pos[a], pos[b]] for a, b in centres])
    observed = np.zeros((4, 4))
    np.add.at(observed, (pairs[:, 0], pairs[:, 1]), 1)
    pts = np.array([0.0, 1.0, 3.0, 7.0])
    d2 = (pts[:, None] - pts[None, :]) ** 2
    expected = 0.25 * d2 / d2.sum(1, keepdims=True) * len(keys)
    off = ~np.eye(4, dtype=bool)
    assert observed[~off].sum() == 0
    chi2 = np.sum((observed[off] - expected[off]) ** 2 / expected[off])
    assert chi2 < 32.9, (chi2, observed)    # 11 degrees of freedom: p = 0.0005
    # padded: the same points with zero rows after them, the counts given
    padded = jnp.concatenate([x, jnp.zeros((3, 1))])
    rows = _kmeans.Rows.of((padded,), (4,))
    got = jax.jit(jax.vmap(lambda kk: _kmeans.kmeans_pp_init(kk, (padded,), 2, rows)))(keys[:200])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(init(keys[:200])))


# ---------------------------------------------------------------- TypiClust


@pytest.mark.parametrize("n_neighbors", [1, 3, 20])
@pytest.mark.parametrize("seed", range(2))
def test_typicality_within_clusters_matches_numpy(seed, n_neighbors):
    rng = np.random.default_rng(seed)
    n = 1100 if seed else 97                      # several row blocks, clusters spanning them
    x = rng.normal(size=(n, 3)).astype(np.float32)
    assign = rng.integers(0, 7, size=n).astype(np.int32)
    assign[:2] = 7                                 # a cluster of two points: K = 1
    assign[2] = 8                                  # a cluster of one point: typicality 0
    got = np.asarray(_coldstart.cluster_typicality(jnp.asarray(x), jnp.asarray(assign), n_neighbors))
    np.testing.assert_allclose(got, _typicality_ref(x, assign, n_neighbors), rtol=2e-4)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("m", [0, 7])
def test_typiclust_matches_the_authors_loop_on_its_own_clusters(seed, m):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(160, 4)).astype(np.float32)
    x[:60] += 2.5
    labeled = rng.normal(size=(m, 4)).astype(np.float32) + 2.5 if m else None
    k = 6
    got = np.asarray(aljax.typiclust(jnp.asarray(x), k, key=seed, labeled=labeled, n_neighbors=5))
    # the clusters the kernel computes (same key, same centring), then the reference selection
    xc, lc = _kmeans.centred(jnp.asarray(x), None if labeled is None else jnp.asarray(labeled))
    both = xc if lc is None else jnp.concatenate([xc, lc])
    _, assign = _kmeans.kmeans(jax.random.key(seed), both, m + k)
    assign = np.asarray(assign)
    typ = _typicality_ref(x, assign[:160], 5)
    want = _typiclust_ref(assign[:160], assign[160:] if m else None, typ, m + k, k)
    np.testing.assert_array_equal(got, want)


def test_typiclust_picks_one_typical_point_per_blob():
    x, y = _blobs(3, n_per=40)
    got = np.asarray(aljax.typiclust(jnp.asarray(x), 4, key=0))
    assert sorted(y[got].tolist()) == [0, 1, 2, 3]
    # and the typical one: nearer its blob's mean than the blob's median point
    for i in got:
        blob = x[y == y[i]]
        dist = np.linalg.norm(blob - blob.mean(axis=0), axis=1)
        assert np.linalg.norm(x[i] - blob.mean(axis=0)) <= np.median(dist)


def test_typiclust_skips_clusters_the_labeled_set_covers():
    x, y = _blobs(4, n_per=40)
    labeled = x[y == 2][:3] + 0.01
    got = np.asarray(aljax.typiclust(jnp.asarray(x), 3, key=0, labeled=jnp.asarray(labeled)))
    assert sorted(y[got].tolist()) == [0, 1, 3]


def test_typiclust_order_with_fewer_uncovered_clusters_than_k():
    # clusters: 0 (8 pool, 0 labeled), 1 (10 pool, 1 labeled), 2 (6 pool, 0 labeled), 3 (3 pool: small)
    assign = np.array([0] * 8 + [1] * 10 + [2] * 6 + [3] * 3, np.int32)
    typ = np.arange(len(assign), 0, -1).astype(np.float32)        # lower index = more typical
    order = np.asarray(_coldstart.typiclust_order(jnp.asarray(assign), jnp.asarray([1], jnp.int32),
                                                  jnp.asarray(typ), 5))
    # uncovered first, largest first (0, then 2), then the covered cluster 1; then round robin;
    # the small cluster 3 only after every other point
    np.testing.assert_array_equal(order[:6], [0, 18, 8, 1, 19, 9])
    assert set(order[-3:].tolist()) == {24, 25, 26}
    np.testing.assert_array_equal(order, _typiclust_ref(assign, np.array([1]), typ, 5, len(assign)))


def test_typiclust_on_duplicates_gives_k_unique_picks():
    # 3 distinct points, 10 copies each: 5 clusters, 2 of them empty; round robin fills the rest
    x = jnp.asarray(np.repeat(np.eye(3, dtype=np.float32), 10, axis=0))
    got = np.asarray(aljax.typiclust(x, 5, key=0, n_neighbors=3))
    assert len(set(got.tolist())) == 5
    assert sorted((got[:3] // 10).tolist()) == [0, 1, 2]


def test_typiclust_is_deterministic_in_the_key(maybe_jit):
    x = jax.random.normal(jax.random.key(0), (120, 6))
    f = maybe_jit(lambda e: aljax.typiclust(e, 7, key=3))
    a = np.asarray(f(x))
    np.testing.assert_array_equal(a, f(x))
    np.testing.assert_array_equal(a, aljax.typiclust(x, 7, key=jax.random.key(3)))


@pytest.mark.parametrize("m", [0, 5, 13])
def test_typiclust_on_padded_rows_picks_as_without_padding(m):
    """The front door zero-pads the pool to a size bucket and the labeled set to a power of two
    (traced counts, padding in no cluster, inactive centres take no row): the picks of the kernel
    on the rows as they are, for a few keys."""
    rng = np.random.default_rng(m)
    x = rng.normal(size=(203, 5)).astype(np.float32)
    x[:70] += 3
    labeled = rng.normal(size=(m, 5)).astype(np.float32) + 3 if m else None
    for key in range(3):
        got = aljax.typiclust(x, 9, key=key, labeled=labeled, n_neighbors=6)
        want = _coldstart._typiclust_kernel(jax.random.key(key), jnp.asarray(x), None if labeled is None
                                            else jnp.asarray(labeled), k=9, n_neighbors=6)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_typiclust_rounds_of_a_loop_share_one_compilation():
    """A loop of rounds (pool shrinking by 4, labeled set growing by 4 within one power of two):
    one compilation of the kernel (its quick twin on a CPU) for all of them, and the picks the
    unpadded plain kernel's."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(280, 4)).astype(np.float32)
    def compiled():
        return _coldstart._typiclust_quick._cache_size() + _coldstart._typiclust_kernel._cache_size()

    before = compiled()
    for r in range(4):
        pool, labeled = x[:240 - 4 * r], x[240:240 + 17 + 4 * r]   # 240 .. 228 (bucket 240), 17 .. 29 labeled (32)
        got = aljax.typiclust(pool, 4, key=r, labeled=labeled)
        want = _coldstart._typiclust_kernel(jax.random.key(r), jnp.asarray(pool), jnp.asarray(labeled),
                                            k=4, n_neighbors=20)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert compiled() - before == 1 + 4   # (the unpadded references: 4)


@pytest.mark.slow   # a compilation per example (k-means has |labeled| + k centres)
@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 40), st.integers(0, 6), st.data())
def test_typiclust_properties(seed, n, m, data):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    lab = rng.normal(size=(m, 3)).astype(np.float32) if m else None
    k = data.draw(st.integers(1, n))
    got = np.asarray(aljax.typiclust(jnp.asarray(x), k, key=seed, labeled=lab, n_neighbors=min(20, n - 1)))
    assert got.dtype == np.int32 and got.shape == (k,)
    assert len(set(got.tolist())) == k and got.min() >= 0 and got.max() < n


# ---------------------------------------------------------------- ProbCover


@pytest.mark.parametrize("seed", range(3))
def test_purity_delta_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(230, 3)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0.5)
    for alpha in (0.5, 0.9, 0.95, 1.0):
        got = float(_coldstart.purity_delta(jnp.asarray(x), jnp.asarray(labels), alpha))
        want, r = _purity_delta_ref(x, labels, alpha)
        np.testing.assert_allclose(got, want, rtol=1e-4)
        # the rule itself: balls of radius δ (strict) are pure around >= α of the points, a
        # slightly larger δ is not
        assert np.mean(r >= want) >= alpha and np.mean(r >= want * (1 + 1e-6)) < alpha


def test_purity_delta_is_infinite_with_one_pseudo_label():
    x = jax.random.normal(jax.random.key(0), (20, 2))
    assert np.isinf(float(_coldstart.purity_delta(x, jnp.zeros(20, jnp.int32), 0.95)))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("m", [0, 12])
@pytest.mark.parametrize("n", [90, 700])      # 700: several newly covered blocks of 256 per step
def test_probcover_coverage_matches_the_reference_greedy_at_every_step(seed, m, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    labeled = rng.normal(size=(m, 3)).astype(np.float32) if m else None
    delta = 0.9
    want_picks, want_counts = _coverage_ref(x, 12, delta, labeled)
    got = np.asarray(aljax.probcover(jnp.asarray(x), 12, delta=delta, labeled=labeled))
    assert len(set(got.tolist())) == 12
    counts, greedy = _replay_counts(x, got, delta, labeled)
    steps = len(want_counts)
    assert counts[:steps] == want_counts      # ties may pick differently, coverage may not
    assert all(greedy[:steps])
    np.testing.assert_array_equal(got[:steps], want_picks)   # and here without ties: the same picks


def test_probcover_fills_uniformly_once_everything_is_covered():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32))
    first = np.asarray(aljax.probcover(x, 10, delta=100.0, key=0))
    _, counts = _coverage_ref(np.asarray(x), 10, 100.0)
    assert counts == [40] and len(set(first.tolist())) == 10
    assert first[0] == 0                               # every ball holds all: lowest index
    draws = [tuple(np.asarray(aljax.probcover(x, 10, delta=100.0, key=s))[1:]) for s in range(3)]
    assert len(set(draws)) == 3                        # the rest comes from the key


def test_probcover_fill_is_uniform_over_the_unpicked_points():
    """Once every point is covered (δ = 100), the second pick is uniform over the 39 points left:
    a chi-square test over 3,900 keys (noise per point from its index)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32))
    keys = jax.random.split(jax.random.key(3), 3900)
    second = jax.vmap(lambda kk: _coldstart._probcover_kernel(kk, x, None, jnp.float32(100.0), 0.95, k=2,
                                                             n_classes=None)[0][1])(keys)
    counts = np.bincount(np.asarray(second), minlength=40)
    assert counts[0] == 0
    chi2 = np.sum((counts[1:] - 100) ** 2 / 100)
    assert chi2 < 72.0, (chi2, counts)      # 38 degrees of freedom: p ≈ 0.0008


@pytest.mark.parametrize("m", [0, 6])
@pytest.mark.parametrize("rule", ["delta", "purity"])
@pytest.mark.parametrize("origin", ["in a blob", "far"])
def test_probcover_on_padded_rows_picks_as_without_padding(m, rule, origin):
    """The front door zero-pads the pool to a size bucket and the labeled set to a power of two
    (traced counts: padding is never covered, covers nothing, joins no pseudo-label cluster and
    counts in no purity): the picks and δ of the kernel on the rows as they are, for a few keys,
    past the point where everything is covered. The zero padding sits in a blob (padding that
    counted would cover it or be its nearest other label) or far from all (its distance to the
    nearest other label would be the largest)."""
    x, y = _blobs(m + 1, n_per=51, spread=0.3)
    x = x - x[y == 0].mean(axis=0) if origin == "in a blob" else x + 100
    labeled = x[:m] + 0.05 if m else None
    kw = dict(delta=0.5) if rule == "delta" else dict(n_classes=4)
    padded_x, padded_lab, counts = _coldstart._padded(None, jnp.asarray(x), None if m == 0 else jnp.asarray(labeled))
    assert padded_x.shape[0] > len(x) and (m == 0 or padded_lab.shape[0] > m)
    for key in range(2):
        args = (jnp.float32(kw.get("delta", 0.0)), 0.95)
        static = dict(k=30, n_classes=kw.get("n_classes"))
        want = _coldstart._probcover_kernel(jax.random.key(key), jnp.asarray(x), None if labeled is None
                                            else jnp.asarray(labeled), *args, **static)
        got = _coldstart._probcover_kernel(jax.random.key(key), padded_x, padded_lab, *args, counts, **static)
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
        np.testing.assert_allclose(float(got[1]), float(want[1]), rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(aljax.probcover(x, 30, key=key, labeled=labeled, **kw)),
                                      np.asarray(want[0]))


@pytest.mark.parametrize("limit, twin, lab_rows", [(1 << 20, "quick", 32), (100, "kernel", 19)])
def test_small_pools_are_padded_and_take_the_quick_twin(limit, twin, lab_rows, monkeypatch):
    """Pools of at most QUICK_MAX_NUMBERS numbers run the quick twin with the labeled set padded to
    a power of two (19 → 32 rows), larger ones the plain kernel unpadded; the same picks."""
    x = np.random.default_rng(5).normal(size=(170, 3)).astype(np.float32)
    want = {"typiclust": aljax.typiclust(x[:150], 4, key=2, labeled=x[150:169]),
            "probcover": aljax.probcover(x[:150], 4, key=2, labeled=x[150:169], n_classes=3)}
    monkeypatch.setattr(_coldstart, "QUICK_MAX_NUMBERS", limit)
    seen = []
    for method in ("typiclust", "probcover"):
        for kind in ("quick", "kernel"):
            name = f"_{method}_{kind}"

            def spy(*args, _fn=getattr(_coldstart, name), _kind=kind, **kwargs):
                seen.append((_kind, args[1].shape[0], args[2].shape[0]))
                return _fn(*args, **kwargs)

            monkeypatch.setattr(_coldstart, name, spy)
    got = {"typiclust": aljax.typiclust(x[:150], 4, key=2, labeled=x[150:169]),
           "probcover": aljax.probcover(x[:150], 4, key=2, labeled=x[150:169], n_classes=3)}
    assert seen == [(twin, 160 if twin == "quick" else 150, lab_rows)] * 2
    for method in got:
        np.testing.assert_array_equal(np.asarray(got[method]), np.asarray(want[method]))


def test_cold_start_on_a_concrete_pool_inside_a_callers_jit():
    """A pool closed over by a caller's ``jax.jit`` (a tracer there once checked, so unpadded, and
    the plain kernels, since JAX refuses compiler options on a nested jit): the same picks as
    outside it (padded, the quick twin)."""
    x = np.random.default_rng(4).normal(size=(90, 3)).astype(np.float32)
    lab = x[80:] + 0.1
    got = jax.jit(lambda key: aljax.typiclust(x[:80], 5, key=key, labeled=lab))(jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(aljax.typiclust(x[:80], 5, key=1, labeled=lab)))
    got = jax.jit(lambda key: aljax.probcover(x[:80], 5, key=key, labeled=lab, n_classes=3))(jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(got),
                                  np.asarray(aljax.probcover(x[:80], 5, key=1, labeled=lab, n_classes=3)))


def test_probcover_rounds_of_a_loop_share_one_compilation():
    """Pool shrinking and labeled set growing within their buckets: one compilation."""
    x = np.random.default_rng(2).normal(size=(280, 3)).astype(np.float32)

    def compiled():
        return _coldstart._probcover_quick._cache_size() + _coldstart._probcover_kernel._cache_size()

    before = compiled()
    for r in range(4):
        aljax.probcover(x[:240 - 4 * r], 4, key=r, labeled=x[240:257 + 4 * r], n_classes=3)
    assert compiled() - before == 1


def test_probcover_labeled_covered_points_are_never_counted_again():
    x, y = _blobs(5, n_per=30, spread=0.2)
    labeled = x[y == 1][:2]
    got = np.asarray(aljax.probcover(jnp.asarray(x), 3, delta=1.5, labeled=jnp.asarray(labeled)))
    assert 1 not in set(y[got].tolist())               # that blob is covered already
    counts, greedy = _replay_counts(x, got, 1.5, labeled)
    assert all(greedy)


def test_probcover_purity_rule_uses_kmeans_pseudo_labels():
    x, y = _blobs(6, n_per=40, spread=0.3)
    picks, delta = _coldstart._probcover_kernel(jax.random.key(0), jnp.asarray(x), None, jnp.float32(0), 0.95, k=4,
                                                n_classes=4)
    _, pseudo = _kmeans.kmeans(jax.random.split(jax.random.key(0))[0], _kmeans.centred(jnp.asarray(x),
                                                                                               None)[0], 4)
    want, _ = _purity_delta_ref(x, np.asarray(pseudo), 0.95)
    np.testing.assert_allclose(float(delta), want, rtol=1e-4)
    assert sorted(y[np.asarray(picks)].tolist()) == [0, 1, 2, 3]   # one ball per blob
    np.testing.assert_array_equal(picks, aljax.probcover(jnp.asarray(x), 4, n_classes=4, key=0))


def test_probcover_is_deterministic_in_the_key(maybe_jit):
    x = jax.random.normal(jax.random.key(0), (150, 4))
    f = maybe_jit(lambda e: aljax.probcover(e, 6, n_classes=3, key=2))
    a = np.asarray(f(x))
    np.testing.assert_array_equal(a, f(x))
    np.testing.assert_array_equal(a, aljax.probcover(x, 6, n_classes=3, key=jax.random.key(2)))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(0, 6), st.floats(0.05, 3.0), st.data())
def test_probcover_properties(seed, n, m, delta, data):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    lab = rng.normal(size=(m, 2)).astype(np.float32) if m else None
    k = data.draw(st.integers(1, n))
    got = np.asarray(aljax.probcover(jnp.asarray(x), k, key=seed, labeled=lab, delta=delta))
    assert got.dtype == np.int32 and got.shape == (k,)
    assert len(set(got.tolist())) == k and got.min() >= 0 and got.max() < n
    _, want_counts = _coverage_ref(x, k, delta, lab)
    counts, greedy = _replay_counts(x, got, delta, lab)
    assert counts[:len(want_counts)] == want_counts and all(greedy[:len(want_counts)])


# ---------------------------------------------------------------- bad input before heavy work


@pytest.mark.parametrize("call, arg", [
    (lambda: aljax.typiclust(jnp.ones((10, 3)), 11), "k"),
    (lambda: aljax.typiclust(jnp.ones((10, 3)), 2), "n_neighbors"),
    (lambda: aljax.typiclust(jnp.ones((10, 3)).at[0, 0].set(jnp.inf), 2, n_neighbors=3), "NaN/Inf"),
    (lambda: aljax.typiclust(jnp.ones((10, 3)), 2, n_neighbors=3, labeled=jnp.ones((2, 4))), "labeled"),
    (lambda: aljax.probcover(jnp.ones((10, 3)), 2, delta=0.0), "delta"),
    (lambda: aljax.probcover(jnp.ones((10, 3)), 2), "n_classes"),
    (lambda: aljax.probcover(jnp.ones((10, 3)), 2, delta=1.0, labeled=jnp.ones((2, 3)).at[1, 1].set(jnp.nan)),
     "NaN/Inf"),
])
def test_bad_input_is_refused_before_any_kernel_runs(call, arg, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the kernel ran before the arguments were checked")

    monkeypatch.setattr(_coldstart, "_typiclust_kernel", fail)
    monkeypatch.setattr(_coldstart, "_typiclust_quick", fail)
    monkeypatch.setattr(_coldstart, "_probcover_quick", fail)
    monkeypatch.setattr(_coldstart, "_probcover_kernel", fail)
    with pytest.raises(ValueError) as info:
        call()
    assert "aljax." in str(info.value) and arg in str(info.value), str(info.value)


@pytest.mark.slow
def test_the_benchmark_script_runs(tmp_path):
    import json
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "coldstart.py"
    for method in ("typiclust", "probcover"):
        out = subprocess.run([sys.executable, str(script), "--n", "300", "--d", "8", "--k", "5", "--method", method,
                              "--repeats", "1"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["unique_picks"] == 5 and result["peak_rss_mib"] > 0
