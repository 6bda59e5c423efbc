"""Stochastic batch acquisition (Kirsch et al., TMLR 2023): ``aljax.stochastic_top_k`` follows
the Plackett–Luce law of its weights (chi-squared tests against exact probabilities, which also
reject a wrong law), has the properties of a selector, and the score-based front doors draw
with it on their own scores.

Many draws are made at once with ``jax.vmap`` over keys; every seed is fixed, so each
statistical test passes or fails the same way on every run.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import aljax
from aljax import scores
from aljax._stochastic import BALD_DRAW
from models import MODEL_KINDS

MODES = ("power", "softmax", "softrank")
P_MIN = 1e-3           # a correct law is rejected with probability 1e-3 per test
DRAWS = 40_000

# ---------------------------------------------------------------- NumPy references


def _weights(s, mode, beta):
    """The weights of each mode, in float64: ``s**β``, ``exp(β s)``, ``rank**(−β)``."""
    s = np.asarray(s, np.float64)
    if mode == "power":
        return s ** beta
    if mode == "softmax":
        return np.exp(beta * (s - s.max()))
    order = np.argsort(-s, kind="stable")          # rank 1 = highest score, ties to the lowest index
    rank = np.empty(len(s))
    rank[order] = np.arange(1, len(s) + 1)
    return rank ** -beta


def _plackett_luce(w, picks):
    """Probability of drawing the ordered tuple ``picks`` without replacement, each draw in
    proportion to the weights of the points left."""
    p, left = 1.0, float(np.sum(w))
    for i in picks:
        p *= w[i] / left
        left -= w[i]
    return p


def _draws(s, k, mode, beta, seed, draws=DRAWS):
    keys = jax.random.split(jax.random.key(seed), draws)
    picks = jax.vmap(lambda kk: aljax.stochastic_top_k(kk, s, k, mode=mode, beta=beta))(keys)
    return np.asarray(picks)


def _tuple_counts(picks, tuples):
    index = {t: i for i, t in enumerate(tuples)}
    counts = np.zeros(len(tuples))
    for row in map(tuple, picks.tolist()):
        counts[index[row]] += 1            # a tuple outside the law's support raises KeyError
    return counts


def _chisquare_p(counts, probs):
    probs = np.asarray(probs, np.float64)
    assert abs(probs.sum() - 1) < 1e-9
    expected = probs * counts.sum()
    assert expected.min() >= 5, "too few draws for the chi-squared approximation"
    return stats.chisquare(counts, expected).pvalue


# Score vectors of each mode's kind, with a tie for softrank.
SCORES = {
    "power": jnp.array([0.5, 1.0, 2.0, 0.25, 1.5, 3.0]),
    "softmax": jnp.array([-1.0, 0.0, 0.5, 1.0, -0.5, 2.0]),
    "softrank": jnp.array([0.3, 0.9, 0.3, -2.0, 0.1, 0.6]),
}


# ---------------------------------------------------------------- the law of the first pick


@pytest.mark.parametrize("beta", [1.0, 2.0])
@pytest.mark.parametrize("mode", MODES)
def test_first_pick_frequencies_match_the_weights(mode, beta):
    s = SCORES[mode]
    w = _weights(s, mode, beta)
    picks = _draws(s, 1, mode, beta, seed=11)
    counts = np.bincount(picks[:, 0], minlength=len(s))
    assert _chisquare_p(counts, w / w.sum()) > P_MIN


@pytest.mark.parametrize("mode", MODES)
def test_the_chi_squared_test_rejects_a_wrong_law(mode):
    """The same draws against a mis-specified law (the weights at β = 1 for draws at β = 2, and
    uniform probabilities) give p-values far below the threshold: the test has power."""
    s = SCORES[mode]
    counts = np.bincount(_draws(s, 1, mode, 2.0, seed=11)[:, 0], minlength=len(s))
    wrong = _weights(s, mode, 1.0)
    assert _chisquare_p(counts, wrong / wrong.sum()) < P_MIN
    assert _chisquare_p(counts, np.full(len(s), 1 / len(s))) < P_MIN


# ---------------------------------------------------------------- without replacement: Plackett–Luce


SMALL = {
    "power": jnp.array([1.0, 2.0, 3.0, 4.0, 5.0]),
    "softmax": jnp.array([0.0, 0.5, 1.0, 1.5, 2.0]),
    "softrank": jnp.array([0.2, 0.7, 0.1, 0.9, 0.4]),
}


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_ordered_tuples_follow_the_plackett_luce_law(mode, k):
    """Every ordered k-tuple of 5 points against its exact probability under sequential
    sampling without replacement."""
    s = SMALL[mode]
    w = _weights(s, mode, 1.0)
    tuples = list(itertools.permutations(range(len(s)), k))
    counts = _tuple_counts(_draws(s, k, mode, 1.0, seed=23, draws=60_000), tuples)
    assert _chisquare_p(counts, [_plackett_luce(w, t) for t in tuples]) > P_MIN


@pytest.mark.parametrize("mode", MODES)
def test_the_tuple_test_rejects_independent_draws(mode):
    """Draws that are independent given distinctness (``w_i w_j`` renormalised over distinct
    pairs) are not the without-replacement law, and the test tells them apart."""
    s = SMALL[mode]
    w = _weights(s, mode, 1.0)
    tuples = list(itertools.permutations(range(len(s)), 2))
    counts = _tuple_counts(_draws(s, 2, mode, 1.0, seed=23, draws=60_000), tuples)
    independent = np.array([w[i] * w[j] for i, j in tuples])
    assert _chisquare_p(counts, independent / independent.sum()) < P_MIN


# ---------------------------------------------------------------- zero scores under "power"


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_zero_scores_come_last_in_a_uniformly_random_order(k):
    """Under "power" a zero score has weight 0: the positive points are drawn first by their law,
    the places left are filled uniformly from the zero-score points."""
    s = jnp.array([0.0, 2.0, 0.0, 1.0, 0.0])
    positive, zero = [1, 3], [0, 2, 4]
    w = _weights(s, "power", 1.0)
    tuples = [t for t in itertools.permutations(range(5), k)
              if set(t[:2]) == set(positive)]
    probs = []
    for t in tuples:
        head, tail = t[:2], t[2:]
        probs.append(_plackett_luce(w, head) / math.perm(len(zero), len(tail)))
    counts = _tuple_counts(_draws(s, k, "power", 1.0, seed=5, draws=30_000), tuples)
    assert _chisquare_p(counts, probs) > P_MIN


def test_all_zero_scores_draw_a_uniform_permutation():
    tuples = list(itertools.permutations(range(4)))
    counts = _tuple_counts(_draws(jnp.zeros(4), 4, "power", 1.0, seed=9, draws=24_000), tuples)
    assert _chisquare_p(counts, np.full(len(tuples), 1 / len(tuples))) > P_MIN


def test_a_zero_score_is_never_drawn_while_positive_ones_are_left():
    s = jnp.zeros(50).at[jnp.array([3, 17, 29, 41])].set(jnp.array([1e-6, 0.5, 2.0, 1e-30]))
    picks = _draws(s, 4, "power", 3.0, seed=2, draws=2_000)
    assert all(set(row) == {3, 17, 29, 41} for row in picks.tolist())


# ---------------------------------------------------------------- properties


# A few sizes, so that the examples share their compilations.
@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2, 7, 40]), st.sampled_from(MODES), st.integers(0, 2**31 - 1), st.data())
def test_draws_are_k_distinct_indices_in_range_and_repeat_per_key(n, mode, seed, data):
    values = data.draw(st.lists(st.floats(0.0, 10.0, width=32), min_size=n, max_size=n))
    k = data.draw(st.sampled_from(sorted({1, max(1, n // 2), n})))
    beta = data.draw(st.floats(0.05, 20.0))
    s = jnp.asarray(values, jnp.float32)
    got = aljax.stochastic_top_k(seed, s, k, mode=mode, beta=beta)
    assert got.dtype == jnp.int32 and got.shape == (k,)
    picks = np.asarray(got).tolist()
    assert len(set(picks)) == k and all(0 <= i < n for i in picks)
    jitted = jax.jit(lambda kk, x: aljax.stochastic_top_k(kk, x, k, mode=mode, beta=beta))
    np.testing.assert_array_equal(jitted(jax.random.key(seed), s), got)
    np.testing.assert_array_equal(aljax.stochastic_top_k(jax.random.key(seed), s, k, mode=mode, beta=beta), got)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 9, 40]), st.sampled_from(MODES), st.integers(0, 2**31 - 1), st.data())
def test_a_large_beta_gives_the_top_k(n, mode, seed, data):
    """β → ∞ concentrates every draw on the largest remaining weight: with distinct scores and
    a large β the draw is ``scores.top_k``."""
    values = data.draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n, unique=True))
    k = data.draw(st.sampled_from(sorted({1, max(1, n // 3), n})))
    s = jnp.asarray(values, jnp.float32)
    np.testing.assert_array_equal(aljax.stochastic_top_k(seed, s, k, mode=mode, beta=1e5), scores.top_k(s, k))


def test_softrank_depends_only_on_the_order_of_the_scores():
    s = jnp.array([0.3, 5.0, -1.0, 0.7, 2.0])
    monotone = jnp.exp(s) * 100 - 7                              # same order, other values
    for seed in range(5):
        np.testing.assert_array_equal(aljax.stochastic_top_k(seed, s, 3, mode="softrank"),
                                      aljax.stochastic_top_k(seed, monotone, 3, mode="softrank"))


def test_softmax_is_invariant_to_a_shift_and_power_to_a_scale():
    s = jnp.array([0.3, 1.0, 0.1, 0.7, 0.2])
    for seed in range(5):
        base = aljax.stochastic_top_k(seed, s, 3, mode="softmax", beta=2.0)
        np.testing.assert_array_equal(aljax.stochastic_top_k(seed, s + 4.0, 3, mode="softmax", beta=2.0), base)
        base = aljax.stochastic_top_k(seed, s, 3, mode="power", beta=2.0)
        np.testing.assert_array_equal(aljax.stochastic_top_k(seed, s * 8.0, 3, mode="power", beta=2.0), base)


def test_extreme_scores_and_beta_give_valid_draws():
    """No overflow: weights are computed relative to the largest (a shift of the log-weights)."""
    s = jnp.array([1e30, 3e38, 1e-30, 0.0, 5.0])
    for mode in MODES:
        for beta in (1e-3, 1.0, 1e6):
            picks = np.asarray(aljax.stochastic_top_k(0, s, 5, mode=mode, beta=beta)).tolist()
            assert sorted(picks) == list(range(5)), (mode, beta, picks)


def test_half_precision_scores_are_drawn_in_float32():
    s = jnp.array([0.5, 1.0, 2.0, 0.25], jnp.bfloat16)
    np.testing.assert_array_equal(aljax.stochastic_top_k(3, s, 2), aljax.stochastic_top_k(3, s.astype(jnp.float32), 2))


def test_different_keys_give_different_draws():
    s = jnp.ones(100)
    assert not np.array_equal(aljax.stochastic_top_k(0, s, 10), aljax.stochastic_top_k(1, s, 10))


# ---------------------------------------------------------------- the front doors


def _model(kind="plain"):
    params, apply_fn, _, _, in_shape = MODEL_KINDS[kind](jax.random.key(3))
    pool = jax.random.normal(jax.random.key(4), (53,) + in_shape) * 2
    return params, apply_fn, pool


UNCERTAINTY = ["margin", "entropy", "least_confidence"]


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_stochastic_none_gives_the_top_k(name):
    params, apply_fn, pool = _model()
    select = getattr(aljax, name)
    expected = scores.top_k(getattr(scores, name)(apply_fn(params, pool)), 9)
    np.testing.assert_array_equal(select(params, apply_fn, pool, 9), expected)
    np.testing.assert_array_equal(select(params, apply_fn, pool, 9, key=7, stochastic=None, beta=3.0), expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", UNCERTAINTY)
def test_stochastic_front_door_draws_with_stochastic_top_k_on_its_scores(name, mode, maybe_jit):
    params, apply_fn, pool = _model("linen_mlp")
    select = getattr(aljax, name)
    got = maybe_jit(lambda p, x: select(p, apply_fn, x, 9, key=5, batch_size=16, stochastic=mode, beta=2.0))(params,
                                                                                                                pool)
    expected = aljax.stochastic_top_k(5, getattr(scores, name)(apply_fn(params, pool)), 9, mode=mode, beta=2.0)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, select(params, apply_fn, pool, 9, key=6, stochastic=mode, beta=2.0))


def _dropout_model():
    w = jax.random.normal(jax.random.key(0), (6, 4))

    def apply_fn(w, x, key):
        keep = jax.random.bernoulli(key, 0.7, x.shape)
        return (x * keep / 0.7) @ w

    return w, apply_fn


def _bald_samples(w, apply_fn, pool, key, mc_samples):
    """The MC logits of :func:`aljax.bald`: pass s of row i runs on the row alone with the key
    ``fold_in(split(key, mc_samples)[s], i)``."""
    keys = jax.random.split(jax.random.key(key), mc_samples)
    rows = jnp.arange(pool.shape[0])
    one_pass = jax.jit(lambda kk: jax.vmap(lambda x, i: apply_fn(w, x[None], jax.random.fold_in(kk, i))[0])(pool, rows))
    return jnp.stack([one_pass(kk) for kk in keys])


@pytest.mark.parametrize("mode", MODES)
def test_stochastic_bald_draws_on_the_bald_scores_with_a_key_of_its_own(mode):
    w, apply_fn = _dropout_model()
    pool = jax.random.normal(jax.random.key(1), (30, 6))
    bald_scores = scores.bald(_bald_samples(w, apply_fn, pool, 7, 8))
    got = aljax.bald(w, apply_fn, pool, 6, key=7, mc_samples=8, stochastic=mode)
    draw_key = jax.random.fold_in(jax.random.key(7), BALD_DRAW)
    np.testing.assert_array_equal(got, aljax.stochastic_top_k(draw_key, bald_scores, 6, mode=mode))
    np.testing.assert_array_equal(aljax.bald(w, apply_fn, pool, 6, key=7, mc_samples=8, stochastic=None),
                                  scores.top_k(bald_scores, 6))


def test_power_margin_never_draws_a_certain_point_while_uncertain_ones_are_left():
    """Margin's score ``1 − (p₍₁₎ − p₍₂₎)`` is 0 where the top class has probability 1: such
    points have weight 0 under "power" and fill the batch only once the others are drawn."""
    apply_fn = lambda W, x: x @ W                                    # noqa: E731
    W = jnp.array([[200.0, -200.0], [1.0, 0.0]])
    pool = jnp.zeros((40, 2)).at[:, 0].set(1.0).at[jnp.arange(5, 40, 7)].set(jnp.array([0.0, 1.0]))
    uncertain = set(range(5, 40, 7))                                 # 5 points, margin < 1
    for key in range(5):
        picks = np.asarray(aljax.margin(W, apply_fn, pool, 5, key=key, stochastic="power")).tolist()
        assert set(picks) == uncertain
        picks = np.asarray(aljax.margin(W, apply_fn, pool, 8, key=key, stochastic="power")).tolist()
        assert set(picks[:5]) == uncertain and len(set(picks)) == 8


def test_active_sampler_draws_like_the_front_door_with_the_select_key():
    params, apply_fn, pool = _model()
    sampler = aljax.ActiveSampler("classification", (params, apply_fn), 7, strategy="entropy", key=4,
                                  stochastic="softrank", beta=0.5)
    _, sub = jax.random.split(jax.random.key(4))
    expected = aljax.entropy(params, apply_fn, pool, 7, key=sub, stochastic="softrank", beta=0.5)
    np.testing.assert_array_equal(sampler.select(pool), expected)
    top = aljax.ActiveSampler("classification", (params, apply_fn), 7, strategy="entropy", key=4)
    np.testing.assert_array_equal(top.select(pool), aljax.entropy(params, apply_fn, pool, 7))


# ---------------------------------------------------------------- the torch mirrors


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_torch_mirrors_draw_with_stochastic_top_k_on_the_torch_logits(name):
    torch = pytest.importorskip("torch")
    import aljax.torch_adapter as ta

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = torch.randn(60, 4) * 3
    with torch.no_grad():
        logits = ta.to_jax(model(x))
    for mode in MODES:
        got = getattr(ta, name)(model, x, 6, key=3, stochastic=mode, beta=2.0)
        expected = aljax.stochastic_top_k(3, getattr(scores, name)(logits), 6, mode=mode, beta=2.0)
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(getattr(ta, name)(model, x, 6, stochastic=None),
                                  scores.top_k(getattr(scores, name)(logits), 6))


def test_torch_bald_draws_on_its_own_scores():
    """With softrank and a large β the draw is the top k of the scores it draws from: the same
    picks as the deterministic torch BALD on the same masks (same key)."""
    torch = pytest.importorskip("torch")
    import aljax.torch_adapter as ta

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(16, 3))
    x = torch.randn(40, 4)
    top = ta.bald(model, x, 5, key=2, mc_samples=6)
    np.testing.assert_array_equal(ta.bald(model, x, 5, key=2, mc_samples=6, stochastic="softrank", beta=1e5), top)
    drawn = ta.bald(model, x, 5, key=2, mc_samples=6, stochastic="power")
    np.testing.assert_array_equal(drawn, ta.bald(model, x, 5, key=2, mc_samples=6, stochastic="power"))
    assert len(set(np.asarray(drawn).tolist())) == 5
