"""ActiveSampler's strategies that run a front door: "bald", "batch_bald", "cluster_margin".

Each gives the picks of the front door of the same name (a torch model: its torch_adapter mirror)
called with the sampler's keywords and the key of that ``select``; BALD and Cluster-Margin are
also checked against the NumPy references of their own test files. Refusals: a model that cannot
be stochastic, a clustering of other candidates, the new keywords with strategies that do not
use them (the table of tests/test_bad_input.py holds the rest).
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aljax
from aljax.sampler import FRONT_DOOR, OWN_OPTIONS, STRATEGIES, ActiveSampler
from test_baselines import _bald_ref, _top_k_ref
from test_cluster_margin import round_robin_reference

IN, HID, C = 5, 10, 3
N, K = 48, 5


def params_of(seed=0):
    rng = np.random.default_rng(seed)
    return {"w1": jnp.asarray(rng.normal(size=(IN, HID)), jnp.float32), "b1": jnp.zeros(HID),
            "w2": jnp.asarray(rng.normal(size=(HID, C)), jnp.float32),
            "b2": jnp.asarray(rng.normal(size=C), jnp.float32)}


def features(p, x):
    return jnp.tanh(jnp.matmul(x, p["w1"], precision="highest") + p["b1"])


def apply_fn(p, x):
    return jnp.matmul(features(p, x), p["w2"], precision="highest") + p["b2"]


def dropout_apply(p, x, key):
    """MC dropout on the hidden layer."""
    keep = jax.random.bernoulli(key, 0.5, (x.shape[0], HID))
    return jnp.matmul(features(p, x) * keep / 0.5, p["w2"], precision="highest") + p["b2"]


def pool_of(n=N, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, IN)), jnp.float32)


def select_keys(seed, calls=2):
    """The keys a sampler built with ``key=seed`` hands its first ``calls`` selects."""
    key, out = jax.random.key(seed), []
    for _ in range(calls):
        key, sub = jax.random.split(key)
        out.append(sub)
    return out


def torch_mlp(params, dropout=0.5, kind="Dropout"):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.Tanh(), getattr(torch.nn, kind)(dropout),
                                torch.nn.Linear(HID, C))
    with torch.no_grad():
        for layer, w, b in ((model[0], "w1", "b1"), (model[3], "w2", "b2")):
            layer.weight.copy_(torch.tensor(np.asarray(params[w]).T))
            layer.bias.copy_(torch.tensor(np.asarray(params[b])))
    return model


# ---------------------------------------------------------------- JAX pairs


def test_bald_equals_the_front_door_and_a_numpy_reference_at_every_select():
    params, pool, passes = params_of(1), pool_of(seed=1), 4
    sampler = ActiveSampler("classification", (params, dropout_apply), K, strategy="bald", key=3,
                            mc_samples=passes)
    for call, sub in enumerate(select_keys(3)):
        picks = sampler.select(pool)
        assert picks.dtype == np.int32 and sampler.last_strategy == "bald"
        np.testing.assert_array_equal(picks, np.asarray(aljax.bald(params, dropout_apply, pool, K, key=sub,
                                                                   mc_samples=passes)))
        if call == 0:   # aljax.bald's documented passes: row i, pass s alone, with fold_in(keys[s], i)
            keys = jax.random.split(sub, passes)
            logits = np.stack([np.concatenate([np.asarray(dropout_apply(params, pool[i:i + 1],
                                                                        jax.random.fold_in(keys[s], i)))
                                               for i in range(N)]) for s in range(passes)])
            np.testing.assert_array_equal(picks, _top_k_ref(_bald_ref(logits.astype(np.float64)), K))


def test_bald_draws_with_stochastic_and_takes_a_rate():
    params, pool = params_of(2), pool_of(seed=2)
    sub = select_keys(4, 1)[0]
    picks = ActiveSampler("classification", (params, dropout_apply), 0.1, strategy="bald", key=4, mc_samples=4,
                          stochastic="power", beta=2.0).select(pool)
    want = aljax.bald(params, dropout_apply, pool, round(0.1 * N), key=sub, mc_samples=4, stochastic="power",
                      beta=2.0)
    np.testing.assert_array_equal(picks, np.asarray(want))
    assert len(picks) == round(0.1 * N)


def test_batch_bald_equals_the_front_door_through_exact_and_sampled_steps():
    # C = 3, configurations = 30: the first steps enumerate every configuration (3^3 <= 30), the
    # last are sampled with the select's key.
    params, pool = params_of(3), pool_of(seed=3)
    sampler = ActiveSampler("classification", (params, dropout_apply), 6, strategy="batch_bald", key=5,
                            mc_samples=6, configurations=30)
    picks = sampler.select(pool)
    want = aljax.batch_bald(params, dropout_apply, pool, 6, key=select_keys(5, 1)[0], mc_samples=6, configurations=30)
    np.testing.assert_array_equal(picks, np.asarray(want))
    assert sampler.last_strategy == "batch_bald"


def test_cluster_margin_with_a_clustering_of_the_whole_pool_restricted_to_the_candidates():
    params, pool = params_of(4), pool_of(seed=4)
    clustering = aljax.cluster_pool(params, apply_fn, pool, threshold=0.8)
    rows = jnp.arange(12, N)                       # the first 12 are labeled
    candidates, restricted = pool[rows], clustering.take(rows)
    sub = select_keys(6, 1)[0]
    picks = ActiveSampler("classification", (params, apply_fn), K, strategy="cluster_margin", key=6,
                          clustering=restricted, margin_multiple=3.0).select(candidates)
    want = aljax.cluster_margin(params, apply_fn, candidates, K, key=sub, clustering=restricted, margin_multiple=3.0)
    np.testing.assert_array_equal(picks, np.asarray(want))
    order = np.asarray(jax.random.permutation(sub, 3 * K))
    ref = round_robin_reference(np.asarray(apply_fn(params, candidates)), np.asarray(restricted.labels), K, 3 * K,
                                order)
    assert picks.tolist() == ref


def test_cluster_margin_with_a_threshold_clusters_each_selects_candidates():
    params, pool = params_of(5), pool_of(seed=5)
    sub = select_keys(7, 1)[0]
    picks = ActiveSampler("classification", (params, apply_fn), 0.125, strategy="cluster_margin", key=7,
                          threshold=0.8, features_fn=features).select(pool)
    want = aljax.cluster_margin(params, apply_fn, pool, 6, key=sub, threshold=0.8, features_fn=features)
    np.testing.assert_array_equal(picks, np.asarray(want))


def test_a_clustering_of_other_candidates_is_refused_before_any_pick():
    params, pool = params_of(4), pool_of(seed=4)
    clustering = aljax.cluster_pool(params, apply_fn, pool, threshold=0.8)
    sampler = ActiveSampler("classification", (params, apply_fn), K, strategy="cluster_margin",
                            clustering=clustering)
    with pytest.raises(ValueError, match=r"aljax\.ActiveSampler\.select .*another pool.*rows of `candidates`"):
        sampler.select(pool[::-1])
    with pytest.raises(ValueError, match=r"aljax\.ActiveSampler\.select .*`clustering` was computed on a pool of "
                                         r"48 points.*clustering\.take"):
        sampler.select(pool[8:])
    with pytest.raises(ValueError, match="another pool"):    # an iterable of batches: hashed as it streams
        sampler.select(iter([pool[:20], pool[20:].at[0, 0].add(1.0)]))
    assert sampler.select(iter([pool[:20], pool[20:]])).shape == (K,)


def test_a_keyless_or_deterministic_apply_fn_is_refused_for_bald_and_batch_bald():
    params, pool = params_of(), pool_of()
    for strategy in ("bald", "batch_bald"):
        with pytest.raises(TypeError, match=r"aljax\.ActiveSampler: argument `model`.*apply_fn\(params, x, key\)"):
            ActiveSampler("classification", (params, apply_fn), K, strategy=strategy)
        sampler = ActiveSampler("classification", (params, lambda p, x, key: apply_fn(p, x)), K, strategy=strategy)
        with pytest.raises(ValueError, match=r"aljax\.ActiveSampler\.select \(strategy='%s', through aljax\.%s\): "
                                             r"argument `apply_fn` must be stochastic" % (strategy, strategy)):
            sampler.select(pool)


def test_a_rate_needs_candidates_of_known_length():
    params, pool = params_of(), pool_of()
    for strategy, kw in (("bald", {}), ("cluster_margin", {"threshold": 1.0})):
        sampler = ActiveSampler("classification", (params, dropout_apply if strategy == "bald" else apply_fn), 0.1,
                                strategy=strategy, **kw)
        with pytest.raises(ValueError, match=r"aljax\.ActiveSampler\.select: argument `budget` must be an int"):
            sampler.select(iter([pool]))


def test_the_new_keywords_default_to_the_front_doors_and_are_refused_with_other_strategies():
    sampler = inspect.signature(ActiveSampler).parameters
    for name, (users, default) in OWN_OPTIONS.items():
        assert sampler[name].default == default, name
        for strategy in users:
            assert inspect.signature(getattr(aljax, strategy)).parameters[name].default == default, (name, strategy)
    assert set(FRONT_DOOR) <= set(STRATEGIES)
    params = params_of()
    changed = {"mc_samples": 5, "configurations": 50, "threshold": 1.0, "margin_multiple": 2.0,
               "clustering": aljax.hac_clustering(jnp.zeros((4, 1)), threshold=1.0)}
    for name, value in changed.items():
        users = OWN_OPTIONS[name][0]
        for strategy in ("margin", "auto", *[s for s in FRONT_DOOR if s not in users]):
            with pytest.raises(ValueError, match=rf"aljax\.ActiveSampler: argument `{name}` must be .*unless strategy"):
                ActiveSampler("classification", (params, dropout_apply), K, strategy=strategy, **{name: value})
    with pytest.raises(ValueError, match="argument `stochastic`"):
        ActiveSampler("classification", (params, dropout_apply), K, strategy="batch_bald", stochastic="power")


# ---------------------------------------------------------------- torch models


@pytest.mark.parametrize("strategy", FRONT_DOOR)
def test_torch_module_equals_the_torch_mirror(strategy):
    torch = pytest.importorskip("torch")
    import aljax.torch_adapter as ta

    params = params_of(6)
    model, pool = torch_mlp(params), torch.tensor(np.asarray(pool_of(seed=6)))
    kw = {"bald": {"mc_samples": 5}, "batch_bald": {"mc_samples": 5, "configurations": 30},
          "cluster_margin": {"margin_multiple": 3.0}}[strategy]
    if strategy == "cluster_margin":
        kw["clustering"] = ta.cluster_pool(model, pool, threshold=0.8)
    sampler = ActiveSampler("classification", model, K, strategy=strategy, key=8, **kw)
    training = [m.training for m in model.modules()]
    for sub in select_keys(8):
        want = getattr(ta, strategy)(model, pool, K, key=sub, **kw)
        np.testing.assert_array_equal(sampler.select(pool), np.asarray(want))
    assert [m.training for m in model.modules()] == training
    if strategy == "cluster_margin":
        with pytest.raises(ValueError, match=r"ActiveSampler\.select .*another pool.*`candidates`"):
            sampler.select(pool.flip(0))


def test_torch_module_without_usable_dropout_is_refused_before_any_forward_pass():
    torch = pytest.importorskip("torch")
    params = params_of()
    runs = []
    plain = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.Tanh(), torch.nn.Linear(HID, C))
    alpha = torch_mlp(params, kind="AlphaDropout")
    for model in (plain, alpha):
        model.register_forward_hook(lambda *_: runs.append(1))
    for strategy in ("bald", "batch_bald"):
        with pytest.raises(ValueError, match=r"aljax\.ActiveSampler: argument `model` must be a torch model with "
                                             r"dropout modules.*Sequential without any"):
            ActiveSampler("classification", plain, K, strategy=strategy)
    pool = torch.tensor(np.asarray(pool_of()))
    with pytest.raises(ValueError, match=r"aljax\.ActiveSampler\.select \(strategy='batch_bald', through aljax\."
                                         r"torch_adapter\.batch_bald\): argument `model`.*AlphaDropout modules"):
        ActiveSampler("classification", alpha, K, strategy="batch_bald").select(pool)
    assert runs == []
    assert ActiveSampler("classification", alpha, K, strategy="bald", mc_samples=3).select(pool).shape == (K,)
    assert len(runs) == 3                                                   # one batch, three passes
    inert = ActiveSampler("classification", torch_mlp(params, dropout=0.0), K, strategy="bald")
    with pytest.raises(ValueError, match=r"ActiveSampler\.select \(strategy='bald', through "
                                         r"aljax\.torch_adapter\.bald\): argument `model`.*same logits"):
        inert.select(pool)


@pytest.mark.slow
def test_hf_pair_with_strings_equals_the_torch_mirrors(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import aljax.torch_adapter as ta
    from models import tiny_bert

    model, tok = tiny_bert(tmp_path, hidden_dropout_prob=0.3)
    texts = ["the movie was good", "bad plot", "not fun", "the plot was not bad", "good good", "a movie",
             "fun fun movie", "the bad", "was it", "a good plot"]
    clustering = ta.cluster_pool((model, tok), texts, threshold=1.0)
    for strategy, kw in (("bald", {"mc_samples": 4}), ("batch_bald", {"mc_samples": 4}),
                         ("cluster_margin", {"clustering": clustering})):
        sampler = ActiveSampler("classification", (model, tok), 3, strategy=strategy, key=1, **kw)
        want = getattr(ta, strategy)((model, tok), texts, 3, key=select_keys(1, 1)[0], **kw)
        np.testing.assert_array_equal(sampler.select(texts), np.asarray(want))
