
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import aljax
from aljax._badge import _inner_with_row, _kmeans_pp, _sqnorms
from models import MODEL_KINDS


def _factored(seed, n, c=3, d=5):
    rng = np.random.default_rng(seed)
    return aljax.Factored(jnp.asarray(rng.normal(size=(n, c)), jnp.float32),
                          jnp.asarray(rng.normal(size=(n, d)), jnp.float32))


def _dense_sqdist_ref(g, i):
    g = np.asarray(g, np.float64)
    return np.sum((g - g[i]) ** 2, axis=1)


# ---------------------------------------------------------------- against NumPy references

@pytest.mark.parametrize("seed", range(3))
def test_factored_distances_equal_dense_distances(seed):
    emb = _factored(seed, 40)
    dense = np.asarray(emb.to_dense(), np.float64)
    for i in (0, 7, 39):
        got = _sqnorms(emb, jnp.float32) + _sqnorms(emb, jnp.float32)[i] - 2 * _inner_with_row(emb, i, jnp.float32)
        np.testing.assert_allclose(got, _dense_sqdist_ref(dense, i), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_first_pick_is_largest_norm(seed):
    emb = _factored(seed, 50)
    dense = np.asarray(emb.to_dense(), np.float64)
    expected = int(np.argmax(np.sum(dense ** 2, axis=1)))
    assert int(aljax.kmeans_pp(emb, 3, key=seed)[0]) == expected
    assert int(aljax.kmeans_pp(jnp.asarray(dense, jnp.float32), 3, key=seed)[0]) == expected


@pytest.mark.parametrize("seed", range(3))
def test_factored_and_dense_inputs_pick_the_same_points(seed):
    emb = _factored(seed, 200, c=4, d=8)
    np.testing.assert_array_equal(aljax.kmeans_pp(emb, 20, key=seed), aljax.kmeans_pp(emb.to_dense(), 20, key=seed))


def test_second_pick_follows_d2_distribution():
    """Chi-squared test of the 2nd pick against the exact D² probabilities on a tiny pool."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    x[0] *= 3  # the first pick: largest norm
    first = int(np.argmax(np.sum(x.astype(np.float64) ** 2, 1)))
    d2 = _dense_sqdist_ref(x, first)
    probs = d2 / d2.sum()
    draws = 4000
    keys = jax.random.split(jax.random.key(123), draws)
    picks = jax.vmap(lambda key: _kmeans_pp(key, jnp.asarray(x), 2))(keys)
    assert np.all(np.asarray(picks[:, 0]) == first)
    counts = np.bincount(np.asarray(picks[:, 1]), minlength=6)
    assert counts[first] == 0
    mask = probs > 0
    _, p_value = stats.chisquare(counts[mask], draws * probs[mask])
    assert p_value > 1e-3, (counts, draws * probs)


def test_later_picks_use_min_distance_to_all_centres():
    """Exact D² probabilities of the 3rd pick given the first two, by conditioning on pick 2."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 2)).astype(np.float32)
    draws = 6000
    picks = np.asarray(jax.vmap(lambda key: _kmeans_pp(key, jnp.asarray(x), 3))(
        jax.random.split(jax.random.key(7), draws)))
    first = picks[0, 0]
    second_mode = np.bincount(picks[:, 1]).argmax()
    third = picks[picks[:, 1] == second_mode, 2]
    d2 = np.minimum(_dense_sqdist_ref(x, first), _dense_sqdist_ref(x, second_mode))
    probs = d2 / d2.sum()
    mask = probs > 0
    counts = np.bincount(third, minlength=5)
    assert counts[~mask].sum() == 0
    _, p_value = stats.chisquare(counts[mask], len(third) * probs[mask])
    assert p_value > 1e-3


def test_d2_sample_is_proportional_to_the_weights_and_never_draws_a_zero():
    """The exponential-race draw against the exact probabilities ``w / Σ w`` (chi-squared), including
    weights spanning four orders of magnitude."""
    from aljax._badge import _d2_sample

    weights = jnp.asarray([0.0, 1.0, 2.0, 0.0, 5.0, 0.5, 1.5, 1e-3], jnp.float32)
    draws = 6000
    words = jax.random.bits(jax.random.key(11), (draws, 2), jnp.uint32)
    picks = np.asarray(jax.vmap(lambda w: _d2_sample(w, weights, jnp.ones(8, bool)))(words))
    counts = np.bincount(picks, minlength=8)
    assert counts[0] == counts[3] == 0
    probs = np.asarray(weights, np.float64) / float(np.sum(np.asarray(weights, np.float64)))
    big = probs > 0.01  # expected counts >= 5; the tiny weight is checked for being drawn rarely
    _, p_value = stats.chisquare(counts[big], draws * probs[big] * counts[big].sum() / (draws * probs[big].sum()))
    assert p_value > 1e-3, (counts, draws * probs)
    assert counts[7] <= 5


def test_d2_sample_with_all_weights_zero_is_uniform_over_the_eligible_rows():
    from aljax._badge import _d2_sample

    eligible = jnp.asarray([True, False, True, True, False, True])
    draws = 4000
    words = jax.random.bits(jax.random.key(3), (draws, 2), jnp.uint32)
    picks = np.asarray(jax.vmap(lambda w: _d2_sample(w, jnp.zeros(6), eligible))(words))
    counts = np.bincount(picks, minlength=6)
    assert counts[1] == counts[4] == 0
    _, p_value = stats.chisquare(counts[[0, 2, 3, 5]])
    assert p_value > 1e-3, counts


def test_race_variates_are_exponential_across_rows_and_steps_and_fine_near_zero():
    """The counter-based Exp(1) variates: Kolmogorov-Smirnov across the rows of one step and
    across steps for one row, no correlation between neighbouring rows, and no ties among the
    smallest of a million (which decide the race; a float32 uniform's 2⁻²³ grid would tie them)."""
    from aljax._badge import _exponentials

    words = jax.random.bits(jax.random.key(5), (3000, 2), jnp.uint32)
    rows = np.asarray(_exponentials(words[0], 1 << 20, jnp.float32), np.float64)
    assert stats.kstest(rows[:50_000], "expon").pvalue > 1e-3
    assert abs(np.corrcoef(rows[:-1], rows[1:])[0, 1]) < 0.01
    smallest = np.sort(rows)[:200]
    assert len(np.unique(smallest)) == 200 and smallest[0] > 0
    per_step = np.asarray(jax.vmap(lambda w: _exponentials(w, 8, jnp.float32))(words))[:, 5].astype(np.float64)
    assert stats.kstest(per_step, "expon").pvalue > 1e-3
    other = np.asarray(_exponentials(words[1], 1 << 20, jnp.float32), np.float64)
    assert abs(np.corrcoef(rows, other)[0, 1]) < 0.01


def test_race_variate_transform_is_accurate_to_a_few_ulps():
    """``−log(1 − v)`` by Kahan's trick against float64 ``log1p``: random uniforms, the smallest and
    largest the race can draw, and every power of two in between."""
    from aljax._badge import _neg_log1p_neg

    rng = np.random.default_rng(0)
    bits = np.concatenate([
        rng.integers(0, 2**32, 500_000, dtype=np.uint64),
        np.arange(4096, dtype=np.uint64),
        2**32 - 1 - np.arange(4096, dtype=np.uint64),
        2 ** np.arange(32, dtype=np.uint64) + np.arange(-1, 2, dtype=np.int64)[:, None].astype(np.uint64),
    ], axis=None)
    v = np.minimum((bits.astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-32), np.float32(1 - 2**-24))
    exact = -np.log1p(-v.astype(np.float64))
    got = np.asarray(jax.jit(_neg_log1p_neg)(jnp.asarray(v)), np.float64)
    assert np.all(np.abs(got - exact) <= 4 * 2.0**-24 * exact)


def test_take_row_equals_indexing():
    from aljax._sharding import take_row

    x = jnp.arange(12.0).reshape(4, 3)
    for i in range(4):
        np.testing.assert_array_equal(take_row(x, jnp.int32(i)), x[i])
    np.testing.assert_array_equal(take_row(jnp.arange(5.0), 2), 2.0)


# ---------------------------------------------------------------- properties

@settings(max_examples=15, deadline=None)
@given(n=st.sampled_from([1, 2, 9, 40]), frac=st.floats(0.01, 1.0), seed=st.integers(0, 2**31 - 1),
       distinct=st.integers(1, 40), factored=st.booleans())
def test_exactly_k_unique_in_range(n, frac, seed, distinct, factored):
    k = max(1, int(round(frac * n)))
    rng = np.random.default_rng(seed)
    # Rows repeat (only `distinct` different ones), so k may exceed the number of distinct points.
    a = rng.normal(size=(distinct, 3))[rng.integers(0, distinct, n)]
    h = rng.normal(size=(distinct, 4))[rng.integers(0, distinct, n)]
    emb = aljax.Factored(jnp.asarray(a, jnp.float32), jnp.asarray(h, jnp.float32))
    idx = np.asarray(aljax.kmeans_pp(emb if factored else emb.to_dense(), k, key=seed))
    assert idx.dtype == np.int32 and idx.shape == (k,)
    assert len(set(idx.tolist())) == k
    assert idx.min() >= 0 and idx.max() < n


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_permutation_equivariance_of_first_pick_and_set_size(seed):
    emb = _factored(seed % 1000, 30)
    perm = np.random.default_rng(seed).permutation(30)
    first = int(aljax.kmeans_pp(emb, 1, key=0)[0])
    first_perm = int(aljax.kmeans_pp(emb[perm], 1, key=0)[0])
    assert perm[first_perm] == first


def test_same_key_same_picks_with_and_without_jit():
    params, apply_fn, *_ = MODEL_KINDS["linen_mlp"](jax.random.key(0))
    pool = jax.random.normal(jax.random.key(1), (300, 6))
    eager = aljax.badge(params, apply_fn, pool, 25, key=5, batch_size=64)
    jitted = jax.jit(lambda p, x: aljax.badge(p, apply_fn, x, 25, key=5, batch_size=64))(params, pool)
    np.testing.assert_array_equal(eager, jitted)
    typed = aljax.badge(params, apply_fn, pool, 25, key=jax.random.key(5), batch_size=64)
    raw = aljax.badge(params, apply_fn, pool, 25, key=jax.random.PRNGKey(5), batch_size=64)
    np.testing.assert_array_equal(eager, typed)
    np.testing.assert_array_equal(eager, raw)
    other = aljax.badge(params, apply_fn, pool, 25, key=6, batch_size=64)
    assert not np.array_equal(eager, other)
    emb = aljax.last_layer_embedding(params, apply_fn, pool)
    jit_key = jax.jit(aljax.kmeans_pp, static_argnums=1)(emb, 25, key=jax.random.key(5))
    np.testing.assert_array_equal(jit_key, aljax.kmeans_pp(emb, 25, key=5))


def test_no_recompilation_on_second_call():
    from aljax._embeddings import _cached_jit

    params, apply_fn, *_ = MODEL_KINDS["plain"](jax.random.key(0))
    pool = jax.random.normal(jax.random.key(1), (100, 6))
    aljax.badge(params, apply_fn, pool, 10, key=0, batch_size=32)  # 4 chunks, last padded
    head = _cached_jit("head", apply_fn, None)
    sizes = (_kmeans_pp._cache_size(), head._cache_size())
    assert sizes[1] == 1  # every chunk has the same shape
    other_pool, other_key = pool + 1.0, jax.random.key(2)
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    # Every XLA compilation anywhere in JAX (not only in the wrappers above) would be counted.
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        aljax.badge(params, apply_fn, pool, 10, key=1, batch_size=32)
        aljax.badge(params, apply_fn, other_pool, 10, key=other_key, batch_size=32)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert (_kmeans_pp._cache_size(), head._cache_size()) == sizes


def test_duplicates_and_fully_confident_model_give_unique_picks_without_nan():
    # Fully confident: logits so large that p is one-hot, every gradient embedding is 0.
    params = jnp.eye(4) * 1e4
    pool = jnp.tile(jnp.eye(4), (5, 1))
    idx = aljax.badge(params, lambda p, x: x @ p, pool, 12, key=0)
    assert len(set(np.asarray(idx).tolist())) == 12
    # Fewer distinct points than k: the remainder is filled uniformly from unpicked points.
    emb = jnp.tile(jnp.asarray([[1.0, 0.0], [0.0, 2.0]]), (10, 1))
    idx = np.asarray(aljax.kmeans_pp(emb, 20, key=0))
    assert sorted(idx.tolist()) == list(range(20))
    assert {int(emb[idx[0], 1] > 0), int(emb[idx[1], 1] > 0)} == {0, 1}


def test_fill_after_exhaustion_is_uniform():
    """With 2 distinct rows, picks 3.. are uniform over the unpicked duplicates (chi-squared)."""
    emb = jnp.asarray([[3.0, 0.0]] + [[1.0, 0.0]] * 5)
    draws = 3000
    picks = np.asarray(jax.vmap(lambda key: _kmeans_pp(key, emb, 3))(jax.random.split(jax.random.key(0), draws)))
    assert np.all(picks[:, 0] == 0)
    counts = np.bincount(picks[:, 1:].ravel(), minlength=6)[1:]
    _, p_value = stats.chisquare(counts)
    assert p_value > 1e-3


# ---------------------------------------------------------------- misc (bad input: tests/test_bad_input.py)

def _plain():
    params, apply_fn, *_ = MODEL_KINDS["plain"](jax.random.key(0))
    return params, apply_fn, jnp.ones((10, 6))


def test_pool_the_model_cannot_take_names_the_function():
    params, apply_fn, _ = _plain()
    with pytest.raises(ValueError, match=r"aljax\.badge: `apply_fn\(params, x\)` failed on a chunk of the pool "
                                         r"\(example shape \(4,\)\)"):
        aljax.badge(params, apply_fn, jnp.ones((10, 4)), 3)


def test_traced_integer_seed_and_row_indexing():
    emb = _factored(0, 30)
    jitted = jax.jit(aljax.kmeans_pp, static_argnums=1)(emb, 5, key=3)
    np.testing.assert_array_equal(jitted, aljax.kmeans_pp(emb, 5, key=3))
    row = emb[4]
    assert row.a.shape == (1, 3) and row.h.shape == (1, 5)
    np.testing.assert_array_equal(row.to_dense(), emb.to_dense()[4:5])


@pytest.mark.slow
def test_unhashable_features_fn_and_bounded_cache():
    from aljax import _embeddings

    class Unhashable:
        __hash__ = None

        def __call__(self, p, x):
            return jnp.tanh(x @ p["w1"] + p["b1"])

    params, apply_fn, pool = _plain()
    idx = aljax.badge(params, apply_fn, pool, 3, features_fn=Unhashable())
    np.testing.assert_array_equal(idx, aljax.badge(params, apply_fn, pool, 3))
    for _ in range(_embeddings._JIT_CACHE_SIZE + 5):
        aljax.last_layer_embedding(params, apply_fn, pool[:2], features_fn=lambda p, x: x)
    assert len(_embeddings._JIT_CACHE) <= _embeddings._JIT_CACHE_SIZE


# ---------------------------------------------------------------- exact pruning

def _badge_like(n, c, d, seed, duplicates=0):
    """``a = p − onehot(argmax p)`` from peaked random logits, ``h`` ReLU features (float32)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    a, h = p - np.eye(c)[p.argmax(1)], np.maximum(rng.normal(size=(n, d)), 0)
    if duplicates:
        a[-duplicates:], h[-duplicates:] = a[0], h[0]
    return a.astype(np.float32), h.astype(np.float32)


@pytest.mark.parametrize("nonneg", [pytest.param(True, marks=pytest.mark.slow), False])
def test_pruned_update_equals_the_full_update_in_every_branch(nonneg):
    """``_pruned_min`` against a float64 NumPy ``min(dist, ‖g_j − g_i‖²)``. The current distances
    are set so that m rows cannot be ruled out by the bound (above it: their minimum changes) and
    the others can (below it by twice the margin), which sends the step through gathers of
    several capacities and the full pass. Nonnegative (ReLU) features use the tighter bound
    ``max(a_j·a_i, 0)``; signed ones ``|a_j·a_i|``."""
    from aljax._badge import _PRUNE_MARGIN, _gather_capacities, _pruned_min

    n, i = 64, 5
    a, h = _badge_like(n, 5, 7, seed=3)
    if not nonneg:
        h = h - np.float32(0.4)
    g = (a[:, :, None] * h[:, None, :]).reshape(n, -1).astype(np.float64)
    sq = np.einsum("ij,ij->i", g, g)
    exact = np.sum((g - g[i]) ** 2, axis=1)
    aa = a.astype(np.float64) @ a[i]
    weight = np.maximum(aa, 0) if nonneg else np.abs(aa)
    bound = sq + sq[i] - 2 * weight * np.linalg.norm(h, axis=1) * np.linalg.norm(h[i])
    assert np.all(exact >= bound - 1e-9 * sq.max())   # it is a lower bound
    emb = aljax.Factored(jnp.asarray(a), jnp.asarray(h))
    hnorm = jnp.sqrt(jnp.sum(jnp.asarray(h) ** 2, axis=1))
    rtol = 16 * np.finfo(np.float32).eps

    def sqdist(sq_j, sq_i, inner):
        d = sq_j + sq_i - 2 * inner
        return jnp.where(d <= rtol * (sq_j + sq_i), 0.0, d)

    branches = set()
    for m in (0, 3, 6, 12, 30, 64):
        below = np.maximum(bound - 2 * _PRUNE_MARGIN * (sq + sq[i]), 0)
        dist = np.where(np.arange(n) < m, 1.5 * exact + 1.0, below).astype(np.float32)
        got = np.asarray(_pruned_min(emb, jnp.asarray(sq, jnp.float32), hnorm, jnp.asarray(dist), jnp.int32(i),
                                     jnp.float32, sqdist, jnp.asarray(nonneg)))
        np.testing.assert_allclose(got, np.minimum(dist, exact), rtol=1e-5, atol=1e-5 * sq.max())
        needed = int(np.sum(bound - dist < _PRUNE_MARGIN * (sq + sq[i])))
        assert needed >= m
        branches.add(int(np.sum(needed > np.array(_gather_capacities(n)))))
    full = len(_gather_capacities(n))
    assert {0, full} <= branches and len(branches) >= 4   # the smallest gather, larger ones, the full pass
    if not nonneg:
        # Rows that signed features bring closer than ‖g_j‖² + ‖g_i‖² (a_j·a_i < 0 and h_j·h_i < 0):
        # a current distance between the two must be lowered, so the bound may not assume h ≥ 0.
        ceiling = (sq + sq[i]) * (1 - 2 * _PRUNE_MARGIN)
        closer = (exact < ceiling) & (aa < 0)
        assert closer.sum() >= 3
        below = np.maximum(bound - 2 * _PRUNE_MARGIN * (sq + sq[i]), 0)   # the rest: ruled out (a gather step)
        dist = np.where(closer, (exact + ceiling) / 2, below).astype(np.float32)
        got = np.asarray(_pruned_min(emb, jnp.asarray(sq, jnp.float32), hnorm, jnp.asarray(dist), jnp.int32(i),
                                     jnp.float32, sqdist, jnp.asarray(False)))
        np.testing.assert_allclose(got, np.minimum(dist, exact), rtol=1e-5, atol=1e-5 * sq.max())


@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(n=st.sampled_from([3, 17, 64, 300]), k_frac=st.floats(0.05, 1.0), seed=st.integers(0, 2**31 - 1),
       duplicates=st.integers(0, 2), shift=st.sampled_from([0.0, 0.3]))
def test_prune_gives_the_same_picks(n, k_frac, seed, duplicates, shift):
    a, h = _badge_like(n, 4, 9, seed, duplicates=min(duplicates, n - 1))
    h = h - np.float32(shift)   # 0: ReLU features (the tighter bound); 0.3: signed ones
    emb = aljax.Factored(jnp.asarray(a), jnp.asarray(h))
    k = max(1, int(k_frac * n))
    np.testing.assert_array_equal(aljax.kmeans_pp(emb, k, prune=True, key=seed), aljax.kmeans_pp(emb, k, key=seed))


@pytest.mark.slow
def test_prune_same_picks_at_benchmark_shape_and_through_badge():
    a, h = _badge_like(6000, 10, 128, seed=0)
    emb = aljax.Factored(jnp.asarray(a), jnp.asarray(h))
    np.testing.assert_array_equal(aljax.kmeans_pp(emb, 300, prune=True, key=1), aljax.kmeans_pp(emb, 300, key=1))
    params, apply_fn, pool = _plain()
    pool = jax.random.normal(jax.random.key(2), (200, 6))
    np.testing.assert_array_equal(aljax.badge(params, apply_fn, pool, 30, key=4, prune=True),
                                  aljax.badge(params, apply_fn, pool, 30, key=4))


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), frac=st.floats(0.0, 1.0), slack=st.integers(0, 5), seed=st.integers(0, 2**31 - 1))
def test_compact_lists_the_true_rows_in_order_then_zeros(n, frac, slack, seed):
    from aljax._badge import _compact, _slots

    mask = np.random.default_rng(seed).random(n) < frac
    capacity = int(mask.sum()) + slack
    if capacity == 0:
        return
    expected = np.zeros(capacity, np.int32)
    expected[:mask.sum()] = np.flatnonzero(mask)
    slot, count = jax.jit(_slots)(jnp.asarray(mask))
    assert int(count) == mask.sum()
    np.testing.assert_array_equal(jax.jit(_compact, static_argnums=1)(slot, capacity), expected)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, "max", "-max", 0.0])
def test_check_finite_finds_every_nan_and_inf_and_passes_the_largest_finite_values(dtype, value):
    from aljax import _validate

    x = np.random.default_rng(0).normal(size=(33, 17)).astype(np.float32)
    finite = isinstance(value, str) or np.isfinite(value)
    if isinstance(value, str):   # the largest finite values of the dtype everywhere: the sum must not overflow
        x = np.full_like(x, float(jnp.finfo(dtype).max) * (-1 if value.startswith("-") else 1))
    else:
        x[31, 5] = value
    x = jnp.asarray(x).astype(dtype)
    if finite:
        _validate.check_finite("f", "the values", x)
    else:
        with pytest.raises(ValueError, match=r"aljax\.f: the values contain 1 NaN/Inf"):
            _validate.check_finite("f", "the values", x)


@pytest.mark.slow
@pytest.mark.parametrize("factored, prune", [(True, False), (True, True), (False, False)])
def test_size_buckets_change_no_pick_and_share_one_compilation(factored, prune):
    """Front doors pad a pool to a size bucket (n = 1000, 990, 970 → 1024 rows): the same picks as
    the loop run on the unpadded rows, and one compilation of the loop for all three sizes."""
    from aljax._padding import bucket as _bucket

    a, h = _badge_like(1000, 4, 9, seed=7, duplicates=2)
    before = _kmeans_pp._cache_size()
    for n in (1000, 990, 970):
        assert _bucket(n) == 1024
        emb = aljax.Factored(jnp.asarray(a[:n]), jnp.asarray(h[:n]))
        emb = emb if factored else emb.to_dense("cd")
        for key in (0, 1):
            want = _kmeans_pp(jax.random.key(key), emb, 40, prune=prune, n_valid=jnp.int32(n))   # no padding
            np.testing.assert_array_equal(aljax.kmeans_pp(emb, 40, prune=prune, key=key), want)
    # The unpadded reference compiled once per size (3); the padded front door once in all.
    assert _kmeans_pp._cache_size() - before <= 4


def test_size_buckets_fill_uniformly_without_ever_picking_padding():
    # 37 rows, 5 distinct: after 5 picks every distance is 0 and the rest are drawn uniformly
    # from the unpicked real rows; the 3 padded rows (bucket 40) must never come out.
    from aljax._padding import bucket as _bucket

    assert _bucket(37) == 40
    x = np.repeat(np.random.default_rng(0).normal(size=(5, 3)), [8, 8, 8, 8, 5], axis=0).astype(np.float32)
    for key in range(20):
        picks = np.asarray(aljax.kmeans_pp(jnp.asarray(x), 37, key=key))
        assert sorted(picks.tolist()) == list(range(37))
