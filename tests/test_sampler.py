"""aljax.ActiveSampler: every strategy, both budget kinds, the three kinds of model, bad inputs."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import aljax
from aljax.sampler import FRONT_DOOR, STRATEGIES, ActiveSampler

# The strategies run on one forward pass of a deterministic model; those that call a front door
# (a stochastic model, a clustering) are tested in test_sampler_front_doors.py.
ONE_PASS = [s for s in STRATEGIES if s not in FRONT_DOOR]

IN, HID, C = 5, 10, 3
N = 90
K, RATE = 6, 0.07   # round(RATE·N) = K: one compiled kernel per strategy serves both budget kinds

def jax_model(seed=0, out=C):
    rng = np.random.default_rng(seed)
    params = {"w1": jnp.asarray(rng.normal(size=(IN, HID)) / 2, jnp.float32), "b1": jnp.zeros(HID),
              "w2": jnp.asarray(rng.normal(size=(HID, out)), jnp.float32),
              "b2": jnp.asarray(rng.normal(size=out), jnp.float32)}

    def features(p, x):
        return jnp.tanh(jnp.matmul(x, p["w1"], precision="highest") + p["b1"])

    def apply_fn(p, x):
        out_ = jnp.matmul(features(p, x), p["w2"], precision="highest") + p["b2"]
        return out_

    return params, apply_fn, features


def pool_of(n=N, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, IN)), jnp.float32)


def first_key(seed):
    """The key a sampler built with ``key=seed`` uses on its first ``select``."""
    return jax.random.split(jax.random.key(seed))[1]


# ---------------------------------------------------------------- every strategy, both budgets


@pytest.mark.parametrize("strategy", ONE_PASS)
def test_int_budget_gives_exactly_budget_unique_indices(strategy):
    params, apply_fn, _ = jax_model()
    picks = ActiveSampler("classification", (params, apply_fn), K, strategy=strategy).select(pool_of())
    assert isinstance(picks, np.ndarray) and picks.dtype == np.int32
    assert picks.shape == (K,) and len(set(picks.tolist())) == K
    assert picks.min() >= 0 and picks.max() < N


@pytest.mark.parametrize("strategy", ONE_PASS)
def test_rate_budget(strategy):
    params, apply_fn, _ = jax_model()
    picks = ActiveSampler("classification", (params, apply_fn), RATE, strategy=strategy).select(pool_of())
    assert len(set(picks.tolist())) == len(picks) and (picks >= 0).all() and (picks < N).all()
    if strategy == "vessal":
        assert 1 <= len(picks) <= N // 2   # streaming: near rate·n, not equal to it
    else:
        assert len(picks) == round(RATE * N) == K


@pytest.mark.parametrize("strategy", ["badge", "coreset", "margin", "entropy", "least_confidence", "random",
                                      "bait"])
def test_jax_pair_equals_the_functions(strategy):
    params, apply_fn, features = jax_model(2)
    pool = pool_of(seed=2)
    picks = ActiveSampler("classification", (params, apply_fn), K, strategy=strategy, key=4).select(pool)
    front = {"badge": aljax.badge, "coreset": aljax.coreset, "margin": aljax.margin, "entropy": aljax.entropy,
             "least_confidence": aljax.least_confidence, "random": aljax.random_sample,
             "bait": aljax.bait}[strategy]
    kwargs = {"features_fn": features} if strategy == "coreset" else {}
    # Same keywords, same defaults (BAIT's lamb=1.0 in both), same picks.
    want = front(params, apply_fn, pool, K, key=first_key(4), **kwargs)
    np.testing.assert_array_equal(picks, np.asarray(want))


@pytest.mark.parametrize("options, budget, seeded", [({}, K, False), ({"rank": 2, "precompute_covariance": True}, RATE, False),
                                                     ({"precompute_covariance": True}, K, True), ({}, RATE, True)])
def test_vessal_equals_the_function(options, budget, seeded):
    # labeled_data seeds A and Σ̂ on its own (the old seed_fisher=True); unseeded and seeded differ.
    params, apply_fn, _ = jax_model(3)
    pool, labeled = pool_of(seed=3), pool_of(15, seed=9)
    picks = ActiveSampler("classification", (params, apply_fn), budget, labeled_data=labeled if seeded else (),
                          strategy="vessal", key=5, lamb=0.05, **options).select(pool)
    k, rate = (budget, None) if isinstance(budget, int) else (None, budget)
    want = aljax.vessal(params, apply_fn, pool, k, rate=rate, key=first_key(5), labeled=labeled if seeded else None,
                        lamb=0.05, **options)
    np.testing.assert_array_equal(picks, np.asarray(want))


def test_lamb_defaults_to_each_algorithms_own():
    params, apply_fn, _ = jax_model(3)
    pool = pool_of(seed=3)
    for strategy, front, lamb in (("bait", aljax.bait, 1.0), ("vessal", aljax.vessal, 0.01)):
        picks = ActiveSampler("classification", (params, apply_fn), K, strategy=strategy, key=2).select(pool)
        np.testing.assert_array_equal(picks, np.asarray(front(params, apply_fn, pool, K, key=first_key(2), lamb=lamb)))


def test_repeated_selects_differ_but_repeat_across_samplers():
    params, apply_fn, _ = jax_model()
    a = ActiveSampler("classification", (params, apply_fn), 10, strategy="random", key=7)
    b = ActiveSampler("classification", (params, apply_fn), 10, strategy="random", key=7)
    first, second = a.select(pool_of()), a.select(pool_of())
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(b.select(pool_of()), first)
    np.testing.assert_array_equal(b.select(pool_of()), second)


def test_random_strategy_is_uniform():
    params, apply_fn, _ = jax_model()
    sampler = ActiveSampler("classification", (params, apply_fn), 3, strategy="random", key=0)
    pool = pool_of(12)
    counts = np.bincount(np.concatenate([sampler.select(pool) for _ in range(400)]), minlength=12)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_coreset_uses_labeled_data():
    params, apply_fn, features = jax_model(3)
    pool, labeled = pool_of(seed=3), pool_of(20, seed=4)
    picks = ActiveSampler("classification", (params, apply_fn), 5, labeled_data=labeled,
                          strategy="coreset").select(pool)
    want = aljax.k_center_greedy(features(params, pool), 5, labeled=features(params, labeled))
    np.testing.assert_array_equal(picks, np.asarray(want))


@pytest.mark.parametrize("strategy, labeled_rows", [("typiclust", 0), ("typiclust", 12), ("probcover", 12)])
def test_cold_start_strategies_equal_the_selectors_on_the_features(strategy, labeled_rows):
    params, apply_fn, features = jax_model(3)
    pool, labeled = pool_of(seed=3), pool_of(labeled_rows, seed=4)
    picks = ActiveSampler("classification", (params, apply_fn), K, labeled_data=labeled if labeled_rows else (),
                          strategy=strategy, key=3, features_fn=features).select(pool)
    lab = features(params, labeled) if labeled_rows else None
    if strategy == "typiclust":
        want = aljax.typiclust(features(params, pool), K, key=first_key(3), labeled=lab)
    else:  # the purity rule with the head's C classes
        want = aljax.probcover(features(params, pool), K, key=first_key(3), labeled=lab, n_classes=C)
    np.testing.assert_array_equal(picks, np.asarray(want))


@pytest.mark.parametrize("labeled_rows, budget, phase", [(0, K, "typiclust"), (5 * C, K, "typiclust"),
                                                         (5 * C + 1, K, "badge"), (0, RATE, "typiclust"),
                                                         (5 * C + 1, RATE, "badge")])
def test_auto_runs_typiclust_up_to_5_labels_per_class_then_badge(labeled_rows, budget, phase):
    params, apply_fn, features = jax_model(5)
    pool = pool_of(seed=5)
    labeled = pool_of(labeled_rows, seed=6) if labeled_rows else ()
    sampler = ActiveSampler("classification", (params, apply_fn), budget, labeled_data=labeled, key=1)
    assert sampler.strategy == "auto" and sampler.last_strategy is None     # the default
    picks = sampler.select(pool)
    assert sampler.last_strategy == phase
    twin = ActiveSampler("classification", (params, apply_fn), budget, labeled_data=labeled, strategy=phase, key=1)
    np.testing.assert_array_equal(picks, twin.select(pool))


def test_auto_rule_counts_labels_per_output_and_per_feature():
    from aljax.sampler import auto_strategy

    assert auto_strategy(10, 2) == "typiclust"
    assert auto_strategy(11, 2) == "badge"
    assert auto_strategy(50, 10) == "typiclust"
    assert auto_strategy(51, 10) == "badge"
    assert auto_strategy(5, 1) == "typiclust"         # regression: one output
    assert auto_strategy(6, 1) == "badge"
    # ... or at most as many labels as the head reads features, whichever is larger.
    assert auto_strategy(20, 2, 384) == "typiclust"   # the flagship: MiniLM's 384 features
    assert auto_strategy(384, 2, 384) == "typiclust"
    assert auto_strategy(385, 2, 384) == "badge"
    assert auto_strategy(50, 10, 32) == "typiclust"   # 5 per class is the larger bound
    assert auto_strategy(51, 10, 32) == "badge"


@pytest.mark.parametrize("labeled_rows, phase", [(HID, "typiclust"), (HID + 1, "badge")])
def test_auto_reads_the_width_of_the_head_input(labeled_rows, phase):
    # One regression output: 5 per output is 5 labels, below the HID = 10 features the head reads.
    params, apply_fn, _ = jax_model(7, out=1)
    sampler = ActiveSampler("regression", (params, apply_fn), 5, pool_of(labeled_rows, seed=8), key=3)
    sampler.select(pool_of(seed=7))
    assert sampler.last_strategy == phase


def test_auto_runs_the_labeled_forward_pass_only_when_the_phase_uses_it(monkeypatch):
    params, apply_fn, _ = jax_model(5)
    passes = []
    outputs = ActiveSampler._outputs

    def recording(self, data, arg):
        passes.append(arg)
        return outputs(self, data, arg)

    monkeypatch.setattr(ActiveSampler, "_outputs", recording)
    pool = pool_of(seed=5)
    for rows, phase, want in ((5 * C + 1, "badge", ["candidates"]), (4, "typiclust", ["candidates", "labeled_data"])):
        passes.clear()
        sampler = ActiveSampler("classification", (params, apply_fn), K, pool_of(rows, seed=6), key=1)
        sampler.select(pool)
        assert sampler.last_strategy == phase and passes == want   # BADGE never reads labeled_data
    passes.clear()   # a labeled set of unknown length (an iterable of batches) is counted by its pass
    sampler = ActiveSampler("classification", (params, apply_fn), K, iter([pool_of(4, seed=6)]), key=1)
    sampler.select(pool)
    assert sampler.last_strategy == "typiclust" and passes == ["candidates", "labeled_data"]


@pytest.mark.parametrize("strategy", ["auto", "typiclust", "probcover"])
def test_cold_start_strategies_take_a_one_point_pool(strategy):
    params, apply_fn, _ = jax_model(5)
    picks = ActiveSampler("classification", (params, apply_fn), 1, strategy=strategy).select(pool_of(1, seed=2))
    np.testing.assert_array_equal(picks, [0])


def test_auto_on_regression_uses_the_features():
    params, apply_fn, features = jax_model(7, out=1)
    pool = pool_of(seed=7)
    sampler = ActiveSampler("regression", (params, apply_fn), 5, pool_of(5, seed=8), key=3)
    picks = sampler.select(pool)
    assert sampler.last_strategy == "typiclust"       # 5 labels, one output
    want = aljax.typiclust(features(params, pool), 5, key=first_key(3), labeled=features(params, pool_of(5, seed=8)))
    np.testing.assert_array_equal(picks, np.asarray(want))


# ---------------------------------------------------------------- regression


def numpy_features(params, x):
    x = np.asarray(x, np.float64)
    return np.tanh(x @ np.asarray(params["w1"], np.float64) + np.asarray(params["b1"], np.float64))


@pytest.mark.slow
@pytest.mark.parametrize("damping", ["absolute", "relative"])
def test_regression_bait_equals_the_function(damping):
    params, apply_fn, _ = jax_model(5, out=1)
    pool, labeled = pool_of(seed=5), pool_of(12, seed=6)
    picks = ActiveSampler("regression", (params, apply_fn), K, labeled_data=labeled, strategy="bait",
                          lamb=0.5, damping=damping).select(pool)
    want = aljax.bait(params, apply_fn, pool, K, labeled=labeled, lamb=0.5, damping=damping,
                      problem_type="regression")
    np.testing.assert_array_equal(picks, np.asarray(want))


@pytest.mark.parametrize("strategy", ["badge", "coreset"])
def test_regression_uses_penultimate_features(strategy):
    params, apply_fn, _ = jax_model(5, out=1)
    pool = pool_of(seed=5)
    picks = ActiveSampler("regression", (params, apply_fn), 6, strategy=strategy, key=1).select(pool)
    h = jnp.asarray(numpy_features(params, pool), jnp.float32)
    if strategy == "badge":
        want = aljax.kmeans_pp(h, 6, key=first_key(1))
        front = aljax.badge(params, apply_fn, pool, 6, key=first_key(1), problem_type="regression")
    else:
        want = aljax.k_center_greedy(h, 6)
        front = aljax.coreset(params, apply_fn, pool, 6, problem_type="regression")
    np.testing.assert_array_equal(picks, np.asarray(want))
    np.testing.assert_array_equal(picks, np.asarray(front))


# ---------------------------------------------------------------- torch models

def torch_twin(params):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.Tanh(), torch.nn.Linear(HID, params["w2"].shape[1]))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(np.asarray(params["w1"]).T))
        model[0].bias.copy_(torch.tensor(np.asarray(params["b1"])))
        model[2].weight.copy_(torch.tensor(np.asarray(params["w2"]).T))
        model[2].bias.copy_(torch.tensor(np.asarray(params["b2"])))
    return model


@pytest.mark.slow
def test_badge_prune_is_passed_through_and_changes_no_pick():
    params, apply_fn, _ = jax_model(3)
    pool = pool_of(seed=3)
    pruned = ActiveSampler("classification", (params, apply_fn), 20, strategy="badge", key=5, prune=True)
    want = aljax.badge(params, apply_fn, pool, 20, key=first_key(5))
    np.testing.assert_array_equal(pruned.select(pool), np.asarray(want))
    torch = pytest.importorskip("torch")
    got = ActiveSampler("classification", torch_twin(params), 20, strategy="badge", key=5, prune=True)
    np.testing.assert_array_equal(got.select(torch.tensor(np.asarray(pool))), np.asarray(want))


@pytest.mark.parametrize("strategy, budget", [(s, b) for s in ONE_PASS for b in (K, RATE)])
def test_torch_module_matches_jax_pair(strategy, budget):
    params, apply_fn, _ = jax_model(6)
    model = torch_twin(params)
    pool = pool_of(seed=6)
    # BAIT at λ = 0.01 amplifies float32 differences between the torch and JAX forward passes
    # into different near-tied picks; at its usual λ = 1 the greedy is well conditioned.
    lamb = 1.0 if strategy == "bait" else 0.01
    # ProbCover's purity rule takes δ equal to a distance between two points, which then sit on
    # the ball's boundary, where the forward passes' float32 differences (1e-7) decide the
    # coverage; a fixed δ compares the two pipelines (the rule itself: tests/test_coldstart.py).
    extra = dict(delta=0.75) if strategy == "probcover" else {}
    got = ActiveSampler("classification", model, budget, strategy=strategy, key=2, lamb=lamb,
                        **extra).select(np.asarray(pool))
    want = ActiveSampler("classification", (params, apply_fn), budget, strategy=strategy, key=2,
                         lamb=lamb, **extra).select(pool)
    np.testing.assert_array_equal(got, want)


def test_torch_regression_uses_penultimate_features():
    torch = pytest.importorskip("torch")
    params, _, _ = jax_model(7, out=1)
    model = torch_twin(params)
    pool = pool_of(seed=7)
    picks = ActiveSampler("regression", model, 5, strategy="badge", key=3).select(torch.tensor(np.asarray(pool)))
    want = aljax.kmeans_pp(jnp.asarray(numpy_features(params, pool), jnp.float32), 5, key=first_key(3))
    np.testing.assert_array_equal(picks, np.asarray(want))


@pytest.mark.slow
def test_hf_pair_with_strings(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from models import tiny_bert

    model, tok = tiny_bert(tmp_path)
    texts = ["the movie was good", "bad plot", "not fun", "the plot was not bad", "good good", "a movie"]
    from aljax import torch_adapter as ta

    for strategy in ONE_PASS:
        for budget in (3, 0.5):
            picks = ActiveSampler("classification", (model, tok), budget, labeled_data=["fun movie"],
                                  strategy=strategy).select(texts)
            assert picks.dtype.kind == "i" and len(set(picks.tolist())) == len(picks) and picks.max() < len(texts)
            if budget == 3 or strategy != "vessal":  # the batch strategies pick round(0.5 · 6) = 3
                assert len(picks) == 3, (strategy, budget)
    want = ta.margin((model, tok), texts, 3)
    got = ActiveSampler("classification", (model, tok), 3, strategy="margin").select(texts)
    np.testing.assert_array_equal(got, np.asarray(want))


# ---------------------------------------------------------------- bad inputs


def test_torch_model_with_a_non_callable_tokenizer_is_refused_at_construction():
    pytest.importorskip("torch")
    from aljax import torch_adapter  # noqa: F401

    import torch
    with pytest.raises(TypeError, match=r"aljax\.ActiveSampler: argument `model`.*tokenizer"):
        ActiveSampler("classification", (torch.nn.Linear(IN, C), None), 3)


def test_torch_model_without_final_linear_is_refused():
    torch = pytest.importorskip("torch")

    class NoLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(1, C, IN)

        def forward(self, x):
            return self.conv(x[:, None, :])[:, :, 0]

    with pytest.raises(ValueError, match=r"aljax\.ActiveSampler: the model has no torch\.nn\.Linear"):
        ActiveSampler("classification", NoLinear(), 3, strategy="badge")       # at construction
    with pytest.raises(ValueError, match=r"aljax\.ActiveSampler: argument `head`"):
        ActiveSampler("classification", NoLinear(), 3, strategy="badge", head="fc")
    picks = ActiveSampler("classification", NoLinear(), 3, strategy="random").select(np.asarray(pool_of(10)))
    assert len(set(picks.tolist())) == 3                                        # random never runs it
    named = ActiveSampler("classification", NoLinear(), 3, strategy="badge", head="conv")  # any named head
    assert len(set(named.select(np.asarray(pool_of(10))).tolist())) == 3


@pytest.mark.parametrize("strategy", ["margin", "entropy", "least_confidence"])
def test_uncertainty_strategies_pick_as_the_front_doors_and_refuse_nan_logits(strategy):
    """The sampler's uncertainty picks (logits padded to the pool's bucket) are the front door's,
    for a pool of a size that is not a bucket; a model whose logits hold a NaN is refused by name."""
    params, apply_fn, _ = jax_model(3)
    pool = pool_of(77, seed=4)
    got = ActiveSampler("classification", (params, apply_fn), K, strategy=strategy).select(pool)
    np.testing.assert_array_equal(got, getattr(aljax, strategy)(params, apply_fn, pool, K))
    broken = dict(params, b2=params["b2"].at[0].set(jnp.nan))
    with pytest.raises(ValueError, match="logits"):
        ActiveSampler("classification", (broken, apply_fn), K, strategy=strategy).select(pool)
