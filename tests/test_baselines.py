"""Baselines: scores against NumPy references, selectors against slow references, bad input."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import aljax
from aljax import scores
from aljax._baselines import random_kernel
from models import MODEL_KINDS

# ---------------------------------------------------------------- NumPy references


def _softmax_ref(logits):
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _least_confidence_ref(logits):
    return 1 - _softmax_ref(logits).max(axis=1)


def _margin_ref(logits):
    p = np.sort(_softmax_ref(logits), axis=1)
    return 1 - (p[:, -1] - p[:, -2])


def _entropy_ref(logits):
    p = _softmax_ref(logits)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def _bald_ref(samples):
    p = _softmax_ref(samples)                                   # (S, n, C)
    mean = p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_mean = -np.sum(np.where(mean > 0, mean * np.log(mean), 0.0), axis=1)
        h_each = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=2).mean(axis=0)
    return h_mean - h_each


def _top_k_ref(s, k):
    """Largest first, ties to the lowest index: a stable sort on the negated scores."""
    return np.argsort(-np.asarray(s, np.float64), kind="stable")[:k]


def _k_center_ref(feats, k, labeled=None):
    """Slow, obvious k-center greedy in float64 with full distance rows."""
    f = np.asarray(feats, np.float64)
    picks = []
    if labeled is None or len(labeled) == 0:
        first = int(np.argmax(np.sum(f ** 2, axis=1)))
        picks.append(first)
        dist = np.sum((f - f[first]) ** 2, axis=1)
    else:
        lab = np.asarray(labeled, np.float64)
        dist = np.array([min(np.sum((fi - lj) ** 2) for lj in lab) for fi in f])
    while len(picks) < k:
        d = dist.copy()
        d[picks] = -np.inf
        i = int(np.argmax(d))
        picks.append(i)
        dist = np.minimum(dist, np.sum((f - f[i]) ** 2, axis=1))
    return np.array(picks)


def _logits(seed, n=64, c=5, scale=3.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, c)) * scale, jnp.float32)


# ---------------------------------------------------------------- scores

SCORES = [(scores.least_confidence, _least_confidence_ref), (scores.margin, _margin_ref),
          (scores.entropy, _entropy_ref)]


@pytest.mark.parametrize("score, ref", SCORES, ids=lambda f: getattr(f, "__name__", ""))
@pytest.mark.parametrize("seed", range(3))
def test_scores_match_numpy(score, ref, seed):
    logits = _logits(seed)
    np.testing.assert_allclose(score(logits), ref(logits), rtol=1e-5, atol=1e-6)


def test_scores_on_extreme_logits_are_finite_and_correct():
    logits = jnp.array([[200.0, -200.0, 0.0], [0.0, 0.0, 0.0], [1e-3, 0.0, 0.0]])
    for score, ref in SCORES:
        got = np.asarray(score(logits))
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, ref(logits), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_bald_score_matches_numpy(seed):
    samples = jnp.asarray(np.random.default_rng(seed).normal(size=(7, 40, 4)) * 2, jnp.float32)
    np.testing.assert_allclose(scores.bald(samples), _bald_ref(samples), rtol=1e-4, atol=1e-5)


def test_bald_score_is_zero_when_samples_agree():
    one = _logits(0, n=10)
    got = scores.bald(jnp.stack([one] * 5))
    np.testing.assert_allclose(got, 0.0, atol=1e-6)
    assert np.all(np.asarray(got) >= 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=30), st.data())
def test_top_k_breaks_ties_by_lowest_index(values, data):
    s = jnp.asarray(values, jnp.float32)
    k = data.draw(st.integers(1, len(values)))
    got = scores.top_k(s, k)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, _top_k_ref(values, k))


def test_top_k_treats_negative_zero_as_zero():
    np.testing.assert_array_equal(scores.top_k(jnp.array([-0.0, 0.0, -0.0, -1.0]), 3), [0, 1, 2])


# ---------------------------------------------------------------- uncertainty front doors

FRONT = [(aljax.least_confidence, _least_confidence_ref), (aljax.margin, _margin_ref),
         (aljax.entropy, _entropy_ref)]


@pytest.mark.parametrize("select, ref", FRONT, ids=lambda f: getattr(f, "__name__", ""))
@pytest.mark.parametrize("kind", ["plain", "linen_mlp"])
def test_uncertainty_front_doors_match_numpy(select, ref, kind, maybe_jit):
    params, apply_fn, _, _, in_shape = MODEL_KINDS[kind](jax.random.key(3))
    pool = jax.random.normal(jax.random.key(4), (53,) + in_shape) * 2
    expected = _top_k_ref(ref(apply_fn(params, pool)), 9)
    got = maybe_jit(lambda p, x: select(p, apply_fn, x, 9, batch_size=16))(params, pool)
    assert got.dtype == jnp.int32 and got.shape == (9,)
    np.testing.assert_array_equal(got, expected)


def test_uncertainty_ties_go_to_lowest_index():
    pool = jnp.zeros((12, 3))                       # every point has the same logits
    apply_fn = lambda W, x: x @ W                   # noqa: E731
    for select in (aljax.least_confidence, aljax.margin, aljax.entropy):
        np.testing.assert_array_equal(select(jnp.ones((3, 4)), apply_fn, pool, 5), np.arange(5))


def test_uncertainty_accepts_pytree_pool():
    params = {"w": jnp.ones((3, 2)), "v": jnp.arange(6.0).reshape(3, 2)}
    apply_fn = lambda p, x: x["a"] @ p["w"] + x["b"] @ p["v"]   # noqa: E731
    pool = {"a": jax.random.normal(jax.random.key(0), (20, 3)), "b": jax.random.normal(jax.random.key(1), (20, 3))}
    expected = _top_k_ref(_margin_ref(apply_fn(params, pool)), 4)
    np.testing.assert_array_equal(aljax.margin(params, apply_fn, pool, 4, batch_size=7), expected)


# ---------------------------------------------------------------- random

def test_random_sample_unique_and_deterministic(maybe_jit):
    pool = jnp.zeros((30, 2))
    f = maybe_jit(lambda x: aljax.random_sample(None, None, x, 10, key=5))
    a, b = f(pool), f(pool)
    assert a.dtype == jnp.int32 and len(set(np.asarray(a).tolist())) == 10
    assert np.all((np.asarray(a) >= 0) & (np.asarray(a) < 30))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, aljax.random_sample(None, None, pool, 10, key=6))


def test_random_sample_inclusion_is_uniform():
    """Chi-squared test: each of n points is included with probability k/n."""
    n, k, draws = 10, 3, 4000
    picks = jax.vmap(lambda kk: random_kernel(kk, n, k))(jax.random.split(jax.random.key(0), draws))
    counts = np.bincount(np.asarray(picks).ravel(), minlength=n)
    assert stats.chisquare(counts).pvalue > 1e-4
    # and the first pick alone is uniform too
    assert stats.chisquare(np.bincount(np.asarray(picks[:, 0]), minlength=n)).pvalue > 1e-4


# ---------------------------------------------------------------- BALD

def _dropout_model(seed=0, d=6, c=4):
    w = jax.random.normal(jax.random.key(seed), (d, c))

    def apply_fn(w, x, key):
        keep = jax.random.bernoulli(key, 0.7, x.shape)
        return (x * keep / 0.7) @ w

    return w, apply_fn


def test_bald_matches_numpy_reference():
    w, apply_fn = _dropout_model()
    pool = jax.random.normal(jax.random.key(1), (40, 6))
    keys = jax.random.split(jax.random.key(7), 12)
    # Pass s of row i: the row alone, with the key fold_in(keys[s], i).
    samples = np.stack([np.concatenate([np.asarray(apply_fn(w, pool[i:i + 1], jax.random.fold_in(kk, i)))
                                        for i in range(pool.shape[0])]) for kk in keys])
    expected = _top_k_ref(_bald_ref(samples), 6)
    got = aljax.bald(w, apply_fn, pool, 6, key=7, mc_samples=12, batch_size=64)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, expected)


def test_bald_picks_do_not_depend_on_batch_size_or_batching():
    # One key per chunk gave rows j and j + batch_size the same masks: picks changed with batch_size.
    w, apply_fn = _dropout_model()
    pool = jax.random.normal(jax.random.key(2), (45, 6))
    want = np.asarray(aljax.bald(w, apply_fn, pool, 8, key=3, mc_samples=6, batch_size=64))
    for batch_size in (7, 16):
        np.testing.assert_array_equal(aljax.bald(w, apply_fn, pool, 8, key=3, mc_samples=6, batch_size=batch_size),
                                      want)
    batches = [pool[:10], pool[10:11], pool[11:45]]
    np.testing.assert_array_equal(aljax.bald(w, apply_fn, iter(batches), 8, key=3, mc_samples=6, batch_size=16),
                                  want)


def test_bald_chunked_is_deterministic_and_valid(maybe_jit):
    w, apply_fn = _dropout_model()
    pool = jax.random.normal(jax.random.key(1), (45, 6))
    f = maybe_jit(lambda x: aljax.bald(w, apply_fn, x, 8, key=3, mc_samples=5, batch_size=16))
    a = np.asarray(f(pool))
    np.testing.assert_array_equal(a, f(pool))
    assert len(set(a.tolist())) == 8 and a.min() >= 0 and a.max() < 45


def test_bald_prefers_points_where_samples_disagree():
    # rows 0..9 are zero except the last feature: dropout on it flips the logits; others are zero.
    w = jnp.array([[0.0, 0.0], [5.0, -5.0]])
    pool = jnp.zeros((30, 2)).at[20:25, 1].set(1.0)
    _, apply_fn = _dropout_model()
    got = aljax.bald(w, apply_fn, pool, 5, key=0, mc_samples=30)
    assert set(np.asarray(got).tolist()) == set(range(20, 25))


# ---------------------------------------------------------------- core-set

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_labeled", [False, True])
def test_k_center_greedy_matches_slow_reference(seed, with_labeled):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(120, 5)).astype(np.float32)
    labeled = rng.normal(size=(300, 5)).astype(np.float32) if with_labeled else None
    got = aljax.k_center_greedy(jnp.asarray(feats), 15,
                                labeled=None if labeled is None else jnp.asarray(labeled))
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, _k_center_ref(feats, 15, labeled))


@pytest.mark.parametrize("with_labeled", [False, True])
def test_k_center_greedy_with_a_large_common_offset(with_labeled):
    # Distances are tiny next to the norms: the picks must still be the exact greedy's.
    rng = np.random.default_rng(7)
    feats = (100 + 0.01 * rng.normal(size=(200, 32))).astype(np.float32)
    labeled = (100 + 0.01 * rng.normal(size=(20, 32))).astype(np.float32) if with_labeled else None
    got = aljax.k_center_greedy(jnp.asarray(feats), 10,
                                labeled=None if labeled is None else jnp.asarray(labeled))
    np.testing.assert_array_equal(got, _k_center_ref(feats, 10, labeled))


@pytest.mark.parametrize("n, m, k", [(123, 0, 123), (1001, 37, 40), (209, 301, 209), (130, 5, 17)])
def test_k_center_greedy_padded_to_a_size_bucket_picks_as_unpadded(n, m, k):
    # The pool (and labeled set) are zero-padded to size buckets; padding must never be picked
    # (k = n takes every real row) nor act as a centre or shift the centring mean.
    from aljax._padding import bucket as _bucket
    assert _bucket(n) != n or (m and _bucket(m) != m)
    rng = np.random.default_rng(n + m)
    feats = rng.normal(size=(n, 6)).astype(np.float32)   # the padding (origin) would be a near centre
    labeled = rng.normal(size=(m, 6)).astype(np.float32) if m else None
    got = np.asarray(aljax.k_center_greedy(jnp.asarray(feats), k, labeled=labeled))
    unpadded = aljax._baselines._k_center_greedy_padded(
        jnp.asarray(feats), None if labeled is None else jnp.asarray(labeled), jnp.int32(n),
        None if labeled is None else jnp.int32(m), k=k)
    np.testing.assert_array_equal(got, np.asarray(unpadded))
    np.testing.assert_array_equal(got, _k_center_ref(feats, k, labeled))


def test_k_center_greedy_with_duplicates_never_repeats():
    feats = jnp.asarray(np.repeat(np.eye(3, dtype=np.float32), 4, axis=0))   # 3 distinct points, 12 rows
    got = np.asarray(aljax.k_center_greedy(feats, 10))
    assert len(set(got.tolist())) == 10
    np.testing.assert_array_equal(got, _k_center_ref(np.asarray(feats), 10))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 40), st.integers(0, 5), st.data())
def test_k_center_greedy_properties(seed, n, m, data):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, 3)).astype(np.float32)
    lab = rng.normal(size=(m, 3)).astype(np.float32) if m else None
    k = data.draw(st.integers(1, n))
    got = np.asarray(aljax.k_center_greedy(jnp.asarray(feats), k, labeled=lab))
    assert got.shape == (k,) and len(set(got.tolist())) == k and got.min() >= 0 and got.max() < n
    # permutation equivariance: permuting the pool permutes the picks (no ties with random data)
    perm = rng.permutation(n)
    permuted = np.asarray(aljax.k_center_greedy(jnp.asarray(feats[perm]), k, labeled=lab))
    np.testing.assert_array_equal(perm[permuted], got)


@pytest.mark.parametrize("kind", ["plain", "linen_cnn"])
def test_coreset_front_door_uses_penultimate_features(kind, maybe_jit):
    params, apply_fn, features, _, in_shape = MODEL_KINDS[kind](jax.random.key(0))
    pool = jax.random.normal(jax.random.key(1), (50,) + in_shape)
    labeled = jax.random.normal(jax.random.key(2), (20,) + in_shape)
    expected = _k_center_ref(features(params, pool), 7, features(params, labeled))
    got = maybe_jit(lambda p, x, lab: aljax.coreset(p, apply_fn, x, 7, labeled=lab, batch_size=16))(
        params, pool, labeled)
    np.testing.assert_array_equal(got, expected)
    expected = _k_center_ref(features(params, pool), 7)
    np.testing.assert_array_equal(aljax.coreset(params, apply_fn, pool, 7), expected)
    np.testing.assert_array_equal(aljax.coreset(params, apply_fn, pool, 7, features_fn=features), expected)


# ---------------------------------------------------------------- one signature (bad input: tests/test_bad_input.py)


def test_selectors_share_a_signature():
    """Every baseline is callable as strategy(params, apply_fn, pool, k, key=...)."""
    params, apply_fn, _, _, in_shape = MODEL_KINDS["plain"](jax.random.key(0))
    pool = jax.random.normal(jax.random.key(1), (25,) + in_shape)
    for select in (aljax.random_sample, aljax.least_confidence, aljax.margin, aljax.entropy, aljax.coreset):
        got = np.asarray(select(params, apply_fn, pool, 6, key=jax.random.key(2)))
        assert got.shape == (6,) and len(set(got.tolist())) == 6


@settings(deadline=None, max_examples=25)
@given(n=st.integers(1, 300), data=st.data())
def test_uncertainty_picks_of_small_pools_padded_to_a_bucket_are_the_unpadded_top_k(n, data):
    """The front doors' ``top_k(score(logits), k)`` on logits zero-padded to a size bucket (the
    padded rows masked): the top k of the unpadded scores, ties to the lower index as before."""
    from aljax import _scores

    k = data.draw(st.integers(1, n))
    seed = data.draw(st.integers(0, 2**16))
    logits = np.round(np.random.default_rng(seed).normal(size=(n, 4)), 1).astype(np.float32)   # ties
    for name in ("least_confidence", "margin", "entropy"):
        score = getattr(_scores, name)
        want = _scores.top_k(jax.jit(score)(logits), k)
        np.testing.assert_array_equal(_scores.select(logits, score, k), want)


def test_uncertainty_selection_compiles_once_per_bucket():
    """Pools of 97 to 104 rows (one bucket) share one compilation of the score and top k."""
    from aljax import _scores

    logits = np.random.default_rng(0).normal(size=(104, 3)).astype(np.float32)
    before = _scores._select._cache_size()
    for n in range(97, 105):
        _scores.select(logits[:n], _scores.margin, 5)
    assert _scores._select._cache_size() - before <= 1


def test_k_center_greedy_compiles_nothing_more_for_a_loop_within_one_bucket(caplog):
    """NumPy pools of 104 down to 97 rows (one bucket) with 20 to 34 labeled rows (one labeled
    block), after a first call: no XLA program compiled in any round (the padding and the
    transfers included), and the reference's picks."""
    rng = np.random.default_rng(7)
    feats, lab = rng.normal(size=(104, 5)).astype(np.float32), rng.normal(size=(34, 5)).astype(np.float32)
    aljax.k_center_greedy(feats, 3, labeled=lab[:19])
    for n, m in zip(range(104, 96, -1), range(20, 36, 2)):
        with jax.log_compiles(True), caplog.at_level(logging.WARNING):
            caplog.clear()
            got = aljax.k_center_greedy(feats[:n], 3, labeled=lab[:m])
        assert not [r.getMessage() for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
        np.testing.assert_array_equal(np.asarray(got), _k_center_ref(feats[:n], 3, lab[:m]))


@pytest.mark.parametrize("x64", [False, True], ids=["x32", "x64"])
def test_on_device_puts_numpy_arrays_as_jnp_asarray_does(x64):
    """``_validate.on_device``: jax Arrays unchanged, NumPy arrays as ``jnp.asarray`` makes them
    (canonical dtype, same values), lists through ``jnp.asarray``."""
    from aljax import _validate

    x = np.arange(6, dtype=np.float64).reshape(3, 2) / 7
    with jax.enable_x64(x64):
        got, want = _validate.on_device(x), jnp.asarray(x)
        assert isinstance(got, jax.Array) and got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert _validate.on_device(want) is want
        assert _validate.on_device([1.0, 2.0]).dtype == jnp.asarray([1.0, 2.0]).dtype
