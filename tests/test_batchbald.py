"""BatchBALD (Kirsch et al., NeurIPS 2019): ``aljax.mutual_information_greedy`` picks what an
exhaustive NumPy greedy picks (joint entropies by enumerating every configuration), its first
pick is BALD's, its sampled joint entropy is unbiased with an error that shrinks as
``1/√configurations``, and ``aljax.batch_bald`` runs it on consistent MC dropout passes.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aljax
from aljax import _batchbald, scores

# ---------------------------------------------------------------- NumPy references


def np_joint_entropy(probs: np.ndarray, batch) -> float:
    """``H(y_batch)`` over all ``C^|batch|`` configurations; ``probs (S, n, C)``: the joint of
    each weight sample as an outer product, averaged over the samples."""
    per_sample = np.ones((probs.shape[0], 1))
    for j in batch:
        per_sample = (per_sample[:, :, None] * probs[:, j, None, :]).reshape(probs.shape[0], -1)
    p = per_sample.mean(axis=0)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def np_conditional_entropy(probs: np.ndarray) -> np.ndarray:
    logp = np.log(np.where(probs > 0, probs, 1.0))
    return -(probs * logp).sum(-1).mean(0)


def np_batchbald_scores(probs: np.ndarray, batch) -> np.ndarray:
    """The joint mutual information of ``batch + [i]`` for every candidate ``i`` (−inf if chosen)."""
    cond = np_conditional_entropy(probs)
    out = np.full(probs.shape[1], -np.inf)
    for i in range(probs.shape[1]):
        if i not in batch:
            out[i] = np_joint_entropy(probs, list(batch) + [i]) - cond[list(batch) + [i]].sum()
    return out


def random_probs(seed: int, shape, sharpness: float = 2.0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=shape) * sharpness
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)


# ---------------------------------------------------------------- exact phase against enumeration


@pytest.mark.parametrize("seed, shape, k", [(0, (5, 9, 3), 4), (1, (4, 8, 2), 6), (2, (6, 7, 4), 3),
                                            (3, (3, 10, 3), 5)])
def test_picks_equal_an_exhaustive_numpy_greedy(seed, shape, k):
    probs = random_probs(seed, shape)
    picks = aljax.mutual_information_greedy(jnp.asarray(probs, jnp.float32), k, configurations=10_000).tolist()
    reference = []
    for _ in range(k):
        reference.append(int(np.argmax(np_batchbald_scores(probs, reference))))
    assert picks == reference


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 8), n_classes=st.integers(2, 4), samples=st.integers(2, 6),
       data=st.data())
def test_every_pick_maximises_the_exact_joint_mutual_information(seed, n, n_classes, samples, data):
    """Followed step by step (so that a float32 near-tie cannot derail the comparison), each pick
    scores within rounding of the best exhaustive score given the picks before it."""
    k = data.draw(st.integers(1, min(n, 4)))
    probs = random_probs(seed, (samples, n, n_classes), sharpness=data.draw(st.sampled_from([0.5, 2.0, 6.0])))
    picks = aljax.mutual_information_greedy(jnp.asarray(probs, jnp.float32), k).tolist()
    assert len(set(picks)) == k and all(0 <= i < n for i in picks)
    for t, i in enumerate(picks):
        ref = np_batchbald_scores(probs, picks[:t])
        assert ref[i] >= ref.max() - 1e-4, (t, ref, picks)


def test_the_first_pick_is_balds_top_point():
    for seed in range(5):
        probs = random_probs(10 + seed, (12, 200, 5), sharpness=1.5)
        bald_top = int(scores.top_k(scores.bald(jnp.log(jnp.asarray(probs, jnp.float32))), 1)[0])
        assert int(aljax.mutual_information_greedy(jnp.asarray(probs, jnp.float32), 1)[0]) == bald_top


# ---------------------------------------------------------------- the sampled phase


def test_the_sampled_joint_entropy_is_unbiased_and_its_error_shrinks_with_configurations():
    """A batch of 7 points with 4 classes (16,384 configurations, more than either bound) plus each
    candidate: estimated from 100 and from 10,000 sampled configurations, 12 seeds each, against
    the exhaustive value. The paper's estimator is unbiased with a standard error ∝ 1/√M: the
    root-mean-square error must fall by over half of the expected factor 10 (measured: 0.087 and
    0.008 nats), and the mean error sit within a few standard errors of 0."""
    probs = random_probs(5, (10, 14, 4), sharpness=1.0)
    batch = list(range(7))
    exact = np.array([np_joint_entropy(probs, batch + [i]) for i in range(7, 14)])
    probs_t = jnp.asarray(np.swapaxes(probs, 0, 1), jnp.float32)
    errors = {}
    for m in (100, 10_000):
        assert 4 ** len(batch) > m            # both sampled, neither exact
        runs = [np.asarray(_batchbald._joint_entropy_with(probs_t, jnp.asarray(batch), jax.random.key(seed),
                                                          configurations=m))[7:] for seed in range(12)]
        errors[m] = np.stack(runs) - exact
    rmse = {m: float(np.sqrt(np.mean(e ** 2))) for m, e in errors.items()}
    assert rmse[10_000] < rmse[100] / 5, rmse
    assert rmse[10_000] > 1e-4, rmse       # really sampled
    for e in errors.values():
        mean_error = e.mean(axis=0)
        standard_error = e.std(axis=0, ddof=1) / np.sqrt(e.shape[0])
        assert np.all(np.abs(mean_error) < 4 * standard_error + 1e-4), (mean_error, standard_error)


def test_the_exact_joint_entropy_matches_enumeration():
    probs = random_probs(6, (7, 9, 3))
    probs_t = jnp.asarray(np.swapaxes(probs, 0, 1), jnp.float32)
    got = np.asarray(_batchbald._joint_entropy_with(probs_t, jnp.asarray([2, 5]), jax.random.key(0),
                                                    configurations=27))
    want = np.array([np_joint_entropy(probs, [2, 5, i]) for i in range(9)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sampled_picks_are_unique_deterministic_and_reach_the_whole_pool():
    probs = jnp.asarray(random_probs(7, (8, 25, 3)), jnp.float32)
    a = aljax.mutual_information_greedy(probs, 25, key=3, configurations=16)
    b = aljax.mutual_information_greedy(probs, 25, key=3, configurations=16)
    assert sorted(a.tolist()) == list(range(25)) and a.tolist() == b.tolist() and a.dtype == jnp.int32


@pytest.mark.slow
def test_sampled_greedy_steps_maximise_the_sampled_estimate():
    """10 classes and a bound of 999 configurations: exact for batches of up to 2 points, sampled
    (992 configurations) from the fourth pick on. Each pick is the argmax of the estimate that
    the estimator test above checks against enumeration, given the picks before it (the label of
    batch point ``t`` drawn with ``fold_in(key, t)``)."""
    probs = random_probs(12, (8, 40, 10), sharpness=1.0)
    key = jax.random.key(1)
    picks = aljax.mutual_information_greedy(jnp.asarray(probs, jnp.float32), 5, key=key, configurations=999).tolist()
    probs_t = jnp.asarray(np.swapaxes(probs, 0, 1), jnp.float32)
    cond = np_conditional_entropy(probs)
    for t, i in list(enumerate(picks))[3:]:   # the sampled steps
        joint = np.asarray(_batchbald._joint_entropy_with(probs_t, jnp.asarray(picks[:t], jnp.int32), key,
                                                          configurations=999))
        score = np.where(np.isin(np.arange(40), picks[:t]), -np.inf, joint - cond)
        assert i == int(np.argmax(score)), (t, picks)
    ref = np_batchbald_scores(probs, picks[:3])      # the first sampled step is near-optimal
    assert ref.max() - ref[picks[3]] < 0.02


@pytest.mark.slow
def test_long_batches_of_confident_points_do_not_underflow():
    probs = jnp.asarray(random_probs(9, (6, 120, 10), sharpness=12.0), jnp.float32)
    picks = aljax.mutual_information_greedy(probs, 100, configurations=600)
    assert len(set(picks.tolist())) == 100


def test_same_picks_with_and_without_jit(maybe_jit):
    probs = jnp.asarray(random_probs(11, (6, 30, 3)), jnp.float32)
    want = aljax.mutual_information_greedy(probs, 8, key=1, configurations=60)
    got = maybe_jit(lambda p: aljax.mutual_information_greedy(p, 8, key=1, configurations=60))(probs)
    assert got.tolist() == want.tolist()


# ---------------------------------------------------------------- the front door


IN, C = 6, 3


def _mlp():
    rng = np.random.default_rng(0)
    return {"w1": jnp.asarray(rng.normal(size=(IN, 16)), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(16, C)), jnp.float32)}


def _dropout_apply(p, x, key):
    h = jnp.tanh(x @ p["w1"])
    keep = jax.random.bernoulli(key, 0.5, h.shape)
    return (h * keep / 0.5) @ p["w2"]


POOL = jnp.asarray(np.random.default_rng(1).normal(size=(23, IN)), jnp.float32)


def test_front_door_equals_the_selector_on_consistent_passes():
    """Pass ``s`` runs every row alone with the key ``fold_in(keys[s], 0)``: one dropout mask per
    pass for the whole pool (a weight sample), then the selector with the second half of the key."""
    params, key = _mlp(), jax.random.key(4)
    pass_key, draw_key = jax.random.split(key)
    keys = jax.random.split(pass_key, 6)
    probs = np.stack([np.concatenate([np.asarray(jax.nn.softmax(_dropout_apply(params, POOL[i:i + 1],
                                                                               jax.random.fold_in(kk, 0))))
                                      for i in range(POOL.shape[0])]) for kk in keys])
    mask = np.asarray(jax.random.bernoulli(jax.random.fold_in(keys[0], 0), 0.5, (1, 16)))
    h = np.tanh(np.asarray(POOL) @ np.asarray(params["w1"]))
    logits = (h * mask / 0.5) @ np.asarray(params["w2"])       # pass 0: the same mask for every row
    np.testing.assert_allclose(probs[0], jax.nn.softmax(logits), rtol=1e-4, atol=1e-5)
    want = aljax.mutual_information_greedy(jnp.asarray(probs, jnp.float32), 7, key=draw_key, configurations=30)
    got = aljax.batch_bald(params, _dropout_apply, POOL, 7, key=key, mc_samples=6, configurations=30)
    assert got.tolist() == want.tolist()


def test_front_door_picks_do_not_depend_on_batch_size_or_iterable_pools():
    params = _mlp()
    want = aljax.batch_bald(params, _dropout_apply, POOL, 6, key=2, mc_samples=5, batch_size=256).tolist()
    assert aljax.batch_bald(params, _dropout_apply, POOL, 6, key=2, mc_samples=5, batch_size=5).tolist() == want
    batches = [POOL[:10], POOL[10:11], POOL[11:]]
    assert aljax.batch_bald(params, _dropout_apply, iter(batches), 6, key=2, mc_samples=5).tolist() == want


# ---------------------------------------------------------------- bad input


PROBS = jnp.asarray(random_probs(0, (4, 10, 3)), jnp.float32)


@pytest.mark.parametrize("call, exc, arg, detail", [
    (lambda: aljax.mutual_information_greedy(PROBS[:1], 2), ValueError, "embedding", r"mc_samples >= 2"),
    (lambda: aljax.mutual_information_greedy(PROBS[0], 2), ValueError, "embedding", r"3-D"),
    (lambda: aljax.mutual_information_greedy(PROBS[:, :, :1], 2), ValueError, "embedding", r"2 classes"),
    (lambda: aljax.mutual_information_greedy(PROBS[:, :0], 1), ValueError, "embedding", r"empty"),
    (lambda: aljax.mutual_information_greedy(PROBS * 1.1, 2), ValueError, "embedding", r"summing to 1"),
    (lambda: aljax.mutual_information_greedy(PROBS.at[0, 0].set(jnp.array([1.5, -0.5, 0.0])), 2), ValueError,
     "embedding", r">= 0"),
    (lambda: aljax.mutual_information_greedy(PROBS.at[0, 0, 0].set(jnp.nan), 2), ValueError, "embedding", r"NaN"),
    (lambda: aljax.mutual_information_greedy(PROBS.astype(jnp.int32), 2), TypeError, "embedding", r"floating"),
    (lambda: aljax.mutual_information_greedy(np.asarray(PROBS).tolist(), 2), TypeError, "embedding", r"array"),
    (lambda: aljax.mutual_information_greedy(PROBS, 0), ValueError, "k", r">= 1"),
    (lambda: aljax.mutual_information_greedy(PROBS, 11), ValueError, "k", r"pool of 10"),
    (lambda: aljax.mutual_information_greedy(PROBS, 2, configurations=3), ValueError, "configurations", r">= 4"),
    (lambda: aljax.mutual_information_greedy(PROBS, 2, configurations=1e4), TypeError, "configurations", r"int"),
    (lambda: aljax.batch_bald(_mlp(), _dropout_apply, POOL, 2, mc_samples=1), ValueError, "mc_samples", r">= 2"),
    (lambda: aljax.batch_bald(_mlp(), _dropout_apply, POOL, 2, mc_samples=8, configurations=4), ValueError,
     "configurations", r">= 8"),
    (lambda: aljax.batch_bald(_mlp(), lambda p, x, key: x @ p["w1"] @ p["w2"], POOL, 2), ValueError, "apply_fn",
     r"stochastic"),
    (lambda: aljax.batch_bald(_mlp(), lambda p, x: x, POOL, 2), TypeError, "apply_fn", r"stochastic"),
    (lambda: aljax.batch_bald(_mlp(), _dropout_apply, POOL, 24), ValueError, "k", r"pool of 23"),
])
def test_bad_input_is_refused_before_any_work(call, exc, arg, detail):
    with pytest.raises(exc, match=detail) as info:
        call()
    assert f"`{arg}`" in str(info.value), str(info.value)


# ---------------------------------------------------------------- the torch mirror


def _torch_model():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, 16), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(16, C))


def _hooked_probs(model, x, seed, mc_samples):
    """The passes as the mirror runs them, through its hooks: ``(S, n, C)``."""
    import torch
    from aljax.torch_adapter._batchbald import _ConsistentDropout

    hooks = _ConsistentDropout("t", [model[2]], seed)
    try:
        model.eval()
        with torch.no_grad():
            out = []
            for s in range(mc_samples):
                hooks.current = s
                out.append(torch.softmax(model(x), -1).numpy())
    finally:
        hooks.remove()
    return np.stack(out)


def test_torch_mirror_runs_consistent_passes_and_the_same_greedy():
    torch = pytest.importorskip("torch")
    from aljax.torch_adapter._bald import _dropout_seed

    model, key = _torch_model(), jax.random.key(3)
    x = torch.randn(30, IN, generator=torch.Generator().manual_seed(1))
    x[20:] = x[:10]                                          # rows 20..29 repeat rows 0..9
    pass_key, draw_key = jax.random.split(key)
    probs = _hooked_probs(model, x, _dropout_seed(pass_key), 5)
    np.testing.assert_array_equal(probs[:, 20:], probs[:, :10])   # one mask per pass for every row
    assert not np.allclose(probs[0], probs[1])                    # passes differ
    want = aljax.mutual_information_greedy(jnp.asarray(probs), 6, key=draw_key, configurations=50)
    import aljax.torch_adapter as ta
    for batch_size in (256, 7):
        got = ta.batch_bald(model, x, 6, key=key, mc_samples=5, configurations=50, batch_size=batch_size)
        assert got.tolist() == want.tolist()


def test_torch_mirror_restores_training_flags_and_refuses_bad_models():
    torch = pytest.importorskip("torch")
    import aljax.torch_adapter as ta

    model = _torch_model()
    model.train()
    x = torch.randn(12, IN)
    state = torch.random.get_rng_state()
    ta.batch_bald(model, x, 3, mc_samples=3)
    assert all(m.training for m in model.modules())
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="without any"):
        ta.batch_bald(torch.nn.Sequential(torch.nn.Linear(IN, C)), torch.randn(12, IN), 3)
    with pytest.raises(ValueError, match="AlphaDropout"):
        ta.batch_bald(torch.nn.Sequential(torch.nn.AlphaDropout(0.2), torch.nn.Linear(IN, C)), torch.randn(12, IN), 3)
    with pytest.raises(ValueError, match="same logits"):
        ta.batch_bald(torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Linear(IN, C)), torch.randn(12, IN), 3)
    with pytest.raises(ValueError, match="mc_samples"):
        ta.batch_bald(model, torch.randn(12, IN), 3, mc_samples=1)
    with pytest.raises(ValueError, match="configurations"):
        ta.batch_bald(model, torch.randn(12, IN), 3, mc_samples=4, configurations=3)


@pytest.mark.parametrize("configurations", [10_000, 60])
def test_padded_pools_pick_as_unpadded_and_share_one_compilation(configurations):
    """The greedy pads a concrete pool to a size bucket (padding never picked): the picks of the
    unpadded greedy, exact (10,000 configurations) and sampled (60), and one compilation for
    pools of 60, 58 and 57 rows (bucket 60)."""
    from aljax import _batchbald

    probs = jax.nn.softmax(jax.random.normal(jax.random.key(4), (60, 8, 3)) * 2)
    key = jax.random.key(9)
    before = _batchbald._greedy._cache_size()
    for n in (60, 58, 57):
        got = _batchbald.greedy(probs[:n], key, k=6, configurations=configurations)
        want = _batchbald._greedy(probs[:n], key, None, k=6, configurations=configurations)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert _batchbald._greedy._cache_size() - before == 1 + 3   # (the unpadded references: 3)
    # rows past the count are never picked, even the most informative ones (samples disagreeing)
    loud = jnp.tile(jnp.eye(3)[jnp.arange(8) % 3][None], (4, 1, 1))
    got = _batchbald._greedy(jnp.concatenate([probs[:56], loud]), key, np.int32(56), k=6,
                             configurations=configurations)
    want = _batchbald._greedy(probs[:56], key, None, k=6, configurations=configurations)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
