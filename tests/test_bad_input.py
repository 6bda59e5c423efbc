"""One table of bad input over the whole public API (scikit-learn's "common tests" habit).

Every case is ``(id, call, exception, function, argument, detail)``: calling ``call()`` raises
``exception`` whose message names ``aljax.<function>`` and the argument (`` `argument` ``, or a
phrase for errors about values rather than an argument) and matches the regex ``detail``.

Two parts: a sweep generated over every front door and selector for the arguments they share
(``k``, ``key``, ``batch_size``, ``problem_type``, ``pool``/``embedding``, ``labeled``), which
also checks that argument errors come before any heavy work (no forward pass executed); and
hand-written cases for each function's own arguments.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aljax
from aljax import LabelPool, scores, stopping
from models import MODEL_KINDS
from test_bait import random_factors
from test_iterable_pools import APPLY as IT_APPLY
from test_iterable_pools import LABELED as IT_LABELED
from test_iterable_pools import PARAMS as IT_PARAMS
from test_iterable_pools import POOL as IT_POOL
from test_iterable_pools import batches as it_batches
from test_simulate import _run
from test_vessal import _model_and_pool

IN, C, N = 6, 3, 10

# ---------------------------------------------------------------- models that count their forward passes

FORWARD_RUNS = []


def _count(_):
    FORWARD_RUNS.append(1)


def _params():
    rng = np.random.default_rng(0)
    return {"w1": jnp.asarray(rng.normal(size=(IN, 8)), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(8, C)), jnp.float32)}


def _features(p, x):
    return jnp.tanh(x @ p["w1"])


def _apply(p, x):
    """A classifier whose every executed forward pass is counted (``jax.debug.callback`` runs when
    the computation runs, not when it is traced or shape-evaluated)."""
    jax.debug.callback(_count, x.shape[0])
    return _features(p, x) @ p["w2"]


def _apply_dropout(p, x, key):
    jax.debug.callback(_count, x.shape[0])
    keep = jax.random.bernoulli(key, 0.5, x.shape)
    return _features(p, x * keep / 0.5) @ p["w2"]


POOL = jnp.asarray(np.random.default_rng(1).normal(size=(N, IN)), jnp.float32)
LABELED = POOL[:4]


def _front(name):
    fn = getattr(aljax, name)
    apply_fn = _apply_dropout if name in ("bald", "batch_bald") else _apply
    return lambda **kw: fn(kw.pop("params", _params()), kw.pop("apply_fn", apply_fn), kw.pop("pool", POOL),
                           kw.pop("k", 3), **kw)


FRONT_DOORS = ["badge", "bait", "bald", "batch_bald", "coreset", "entropy", "least_confidence", "margin", "random_sample",
               "vessal", "cluster_margin"]
TAKES_LABELED = {"bait", "coreset", "vessal"}

SHARED_FRONT = [
    # (id, keywords, exception, argument, detail)
    ("k zero", {"k": 0}, ValueError, "k", r">= 1, got 0"),
    ("k above n", {"k": N + 1}, ValueError, "k", r"11"),
    ("k float", {"k": 2.5}, TypeError, "k", r"Python int"),
    ("k bool", {"k": True}, TypeError, "k", r"Python int"),
    ("key str", {"key": "seed"}, TypeError, "key", r""),
    ("key batch", {"key": jax.random.split(jax.random.key(0), 3)}, ValueError, "key", r""),
    ("batch_size zero", {"batch_size": 0}, ValueError, "batch_size", r">= 1"),
    ("batch_size float", {"batch_size": 1.5}, TypeError, "batch_size", r""),
    ("problem_type", {"problem_type": "regresion"}, ValueError, "problem_type", r"'classification' or 'regression'"),
    ("empty pool", {"pool": jnp.ones((0, IN))}, ValueError, "pool", r"empty"),
    ("progress str", {"progress": "yes"}, TypeError, "progress", r"None, True or False"),
    ("progress int", {"progress": 1}, TypeError, "progress", r"None, True or False"),
]


# The score-based front doors' draw (stochastic batch acquisition): refused before the forward pass.
SCORE_BASED = ["bald", "entropy", "least_confidence", "margin"]
STOCHASTIC_FRONT = [
    ("stochastic unknown", {"stochastic": "gumbel"}, ValueError, "stochastic", r"'power', 'softmax', 'softrank'"),
    ("stochastic bool", {"stochastic": True}, TypeError, "stochastic", r"None, 'power'"),
    ("beta zero", {"stochastic": "power", "beta": 0.0}, ValueError, "beta", r"finite number > 0, got 0.0"),
    ("beta negative", {"stochastic": "softmax", "beta": -1.0}, ValueError, "beta", r"> 0"),
    ("beta nan", {"stochastic": "softrank", "beta": float("nan")}, ValueError, "beta", r"finite"),
    ("beta inf", {"stochastic": "power", "beta": float("inf")}, ValueError, "beta", r"finite"),
    ("beta str", {"stochastic": "power", "beta": "1"}, TypeError, "beta", r"real number"),
    ("beta without stochastic", {"beta": 0.0}, ValueError, "beta", r"> 0"),
]


def _shared_front_cases():
    for name in FRONT_DOORS:
        for case_id, kw, exc, arg, detail in SHARED_FRONT:
            yield pytest.param(name, kw, exc, arg, detail, id=f"{name}-{case_id}")
        if name in SCORE_BASED:
            for case_id, kw, exc, arg, detail in STOCHASTIC_FRONT:
                yield pytest.param(name, kw, exc, arg, detail, id=f"{name}-{case_id}")
        if name in TAKES_LABELED:
            yield pytest.param(name, {"labeled": jnp.ones((4, IN + 1))}, ValueError, "labeled", r"",
                               id=f"{name}-labeled shape")
            yield pytest.param(name, {"labeled": {"x": LABELED}}, ValueError, "labeled", r"structure",
                               id=f"{name}-labeled structure")


@pytest.mark.parametrize("name, kw, exc, arg, detail", list(_shared_front_cases()))
def test_front_doors_refuse_shared_arguments_before_any_forward_pass(name, kw, exc, arg, detail):
    FORWARD_RUNS.clear()
    with pytest.raises(exc) as info:
        _front(name)(**kw)
    jax.effects_barrier()
    message = str(info.value)
    assert f"aljax.{name}" in message and f"`{arg}`" in message, message
    assert re.search(detail, message), message
    assert not FORWARD_RUNS, f"aljax.{name} ran {len(FORWARD_RUNS)} forward pass(es) before refusing `{arg}`"


def test_the_forward_counter_counts():
    FORWARD_RUNS.clear()
    aljax.margin(_params(), _apply, POOL, 3)
    jax.effects_barrier()
    assert FORWARD_RUNS


SELECTORS = {
    "kmeans_pp": jnp.asarray(np.random.default_rng(2).normal(size=(N, 4)), jnp.float32),
    "k_center_greedy": jnp.asarray(np.random.default_rng(2).normal(size=(N, 4)), jnp.float32),
    "fisher_greedy": aljax.FisherFactors(jax.nn.softmax(jnp.asarray(np.random.default_rng(3).normal(size=(N, C)),
                                                                    jnp.float32)), jnp.ones((N, 4))),
    "volume_stream": jnp.asarray(np.random.default_rng(2).normal(size=(N, 4)), jnp.float32),
    "typiclust": jnp.asarray(np.random.default_rng(2).normal(size=(N, 4)), jnp.float32),
    "probcover": jnp.asarray(np.random.default_rng(2).normal(size=(N, 4)), jnp.float32),
    "margin_round_robin": jnp.asarray(np.random.default_rng(2).normal(size=(N, 4)), jnp.float32),
    "mutual_information_greedy": jax.nn.softmax(jnp.asarray(np.random.default_rng(3).normal(size=(4, N, C)),
                                                            jnp.float32)),
}
TAKES_LABELED_EMBEDDING = {"k_center_greedy", "fisher_greedy", "volume_stream", "typiclust", "probcover"}


def _shared_selector_cases():
    for name, emb in SELECTORS.items():
        dense = not isinstance(emb, aljax.FisherFactors)
        cases = [
            ("k zero", {"k": 0}, ValueError, "k"),
            ("k above n", {"k": N + 1}, ValueError, "k"),
            ("k float", {"k": 2.5}, TypeError, "k"),
            ("key str", {"key": "seed"}, TypeError, "key"),
            ("key bool", {"key": True}, TypeError, "key"),
        ]
        if dense:
            cases += [
                ("1-D", {"embedding": jnp.ones(N)}, ValueError, "embedding"),
                ("int", {"embedding": jnp.ones((N, 4), jnp.int32)}, TypeError, "embedding"),
                ("nan", {"embedding": emb.at[2, 1].set(jnp.nan)}, ValueError, "NaN"),
            ]
        if name in TAKES_LABELED_EMBEDDING and dense:
            cases.append(("labeled columns", {"labeled": jnp.ones((3, 5))}, ValueError, "labeled"))
        for case_id, kw, exc, arg in cases:
            yield pytest.param(name, kw, exc, arg, id=f"{name}-{case_id}")


@pytest.mark.parametrize("name, kw, exc, arg", list(_shared_selector_cases()))
def test_selectors_refuse_shared_arguments(name, kw, exc, arg):
    kw = {"embedding": SELECTORS[name], "k": 3, **kw}
    with pytest.raises(exc) as info:
        getattr(aljax, name)(kw.pop("embedding"), kw.pop("k"), **kw)
    message = str(info.value)
    assert f"aljax.{name}" in message, message
    assert (f"`{arg}`" if arg != "NaN" else "NaN") in message, message


# ---------------------------------------------------------------- each function's own arguments

_PLAIN_PARAMS, _PLAIN, *_ = MODEL_KINDS["plain"](jax.random.key(0))
_PLAIN_POOL = jnp.ones((10, 6))
_W = jax.random.normal(jax.random.key(0), (3, 4))
_LIN = lambda W, x: x @ W  # noqa: E731
_POOL3 = jax.random.normal(jax.random.key(1), (10, 3))
_EMB10 = jnp.asarray(np.random.default_rng(4).normal(size=(10, 4)), jnp.float32)
_FACTORED_TREE = jax.tree_util.tree_structure(aljax.Factored(jnp.ones((2, 2)), jnp.ones((2, 3))))


def _badge(**kw):
    return aljax.badge(kw.pop("params", _PLAIN_PARAMS), kw.pop("apply_fn", _PLAIN), kw.pop("pool", _PLAIN_POOL),
                       kw.pop("k", 3), **kw)


def _grad_emb(**kw):
    return aljax.gradient_embedding(kw.pop("params", _PLAIN_PARAMS), kw.pop("apply_fn", _PLAIN),
                                    kw.pop("pool", _PLAIN_POOL), **kw)


def _det(w, x, key):
    return x @ w


def _det_mlp(p, x, key):
    return _features(p, x) @ p["w2"]


def _sampler(**kw):
    kw.setdefault("strategy", "vessal")     # the rank cases are VeSSAL's
    return aljax.ActiveSampler(kw.pop("problem_type", "classification"), kw.pop("model", (_params(), _apply)),
                               kw.pop("budget", 5), **kw)


CASES = [
    # badge
    ("badge 3-D logits", lambda: _badge(apply_fn=lambda p, x: (x @ p["w1"])[:, :, None] * jnp.ones(2)), ValueError,
     "badge", "apply_fn", r"2-D logits"),
    ("badge int logits", lambda: _badge(apply_fn=lambda p, x: (x @ p["w1"]).astype(jnp.int32)), TypeError, "badge",
     "apply_fn", r"floating"),
    ("badge nan logits", lambda: _badge(pool=_PLAIN_POOL.at[3, 0].set(jnp.nan)), ValueError, "badge", "pool",
     r"NaN/Inf"),
    ("badge ragged pool", lambda: _badge(pool={"a": jnp.ones((10, 6)), "b": jnp.ones((9, 6))}), ValueError, "badge",
     "pool", r"sharing the leading"),
    ("badge apply_fn not callable", lambda: _badge(apply_fn="model"), TypeError, "badge", "apply_fn", r"callable"),
    ("badge nan features", lambda: _badge(features_fn=lambda p, x: (x @ p["w1"]).at[3, 1].set(jnp.nan)), ValueError,
     "badge", "pool", r"penultimate features of argument `pool` contain 1 NaN/Inf"),
    ("badge inf features", lambda: _badge(features_fn=lambda p, x: (x @ p["w1"]).at[0, 0].set(-jnp.inf)),
     ValueError, "badge", "pool", r"penultimate features .* contain 1 NaN/Inf"),
    ("badge prune str", lambda: _badge(prune="yes"), TypeError, "badge", "prune", r"a bool"),
    ("ActiveSampler progress str", lambda: _sampler(progress="on"), TypeError, "ActiveSampler", "progress",
     r"None, True or False"),
    ("badge prune regression", lambda: aljax.badge(_params(), lambda p, x: _features(p, x) @ p["w2"][:, :1], POOL, 3,
                                                   problem_type="regression", prune=True), ValueError, "badge",
     "prune", r"regression"),
    # kmeans_pp and the embedding types
    ("kmeans_pp bool key", lambda: aljax.kmeans_pp(jnp.ones((5, 2)), 2, key=True), TypeError, "kmeans_pp", "key", r""),
    ("kmeans_pp prune dense", lambda: aljax.kmeans_pp(jnp.ones((5, 2)), 2, prune=True), ValueError, "kmeans_pp",
     "prune", r"False for a dense"),
    ("kmeans_pp prune int", lambda: aljax.kmeans_pp(jnp.ones((5, 2)), 2, prune=1), TypeError, "kmeans_pp", "prune",
     r"a bool"),
    ("kmeans_pp factors of different lengths",   # tree_unflatten skips Factored's own check
     lambda: aljax.kmeans_pp(jax.tree_util.tree_unflatten(_FACTORED_TREE, [jnp.ones((5, 2)), jnp.ones((4, 3))]), 2),
     ValueError, "kmeans_pp", "embedding.a", r"same number of rows, got 5 and 4"),
    ("Factored rows", lambda: aljax.Factored(jnp.ones((4, 3)), jnp.ones((5, 2))), ValueError, "Factored", "a",
     r"same number of rows, got 4 and 5"),
    ("Factored 1-D", lambda: aljax.Factored(jnp.ones(4), jnp.ones((4, 2))), ValueError, "Factored", "a", r"2-D array"),
    ("Factored int", lambda: aljax.Factored(jnp.ones((4, 3), jnp.int32), jnp.ones((4, 2))), TypeError, "Factored", "a",
     r"floating"),
    ("FisherFactors rows", lambda: aljax.FisherFactors(jnp.ones((4, 3)) / 3, jnp.ones((5, 2))), ValueError,
     "FisherFactors", "probs", r"same number of rows"),
    # the cold start selectors
    ("typiclust fewer points than n_neighbors + 1", lambda: aljax.typiclust(_EMB10, 2), ValueError, "typiclust",
     "n_neighbors", r"at most n − 1 = 9"),
    ("typiclust n_neighbors zero", lambda: aljax.typiclust(_EMB10, 2, n_neighbors=0), ValueError, "typiclust",
     "n_neighbors", r">= 1"),
    ("typiclust n_neighbors float", lambda: aljax.typiclust(_EMB10, 2, n_neighbors=3.0), TypeError, "typiclust",
     "n_neighbors", r"Python int"),
    ("typiclust one point", lambda: aljax.typiclust(_EMB10[:1], 1, n_neighbors=1), ValueError, "typiclust",
     "embedding", r"at least 2 points"),
    ("typiclust inf", lambda: aljax.typiclust(_EMB10.at[4, 0].set(jnp.inf), 2, n_neighbors=3), ValueError,
     "typiclust", "embedding", r"1 NaN/Inf"),
    ("typiclust labeled nan", lambda: aljax.typiclust(_EMB10, 2, n_neighbors=3, labeled=_EMB10.at[0, 0].set(jnp.nan)),
     ValueError, "typiclust", "labeled", r"NaN/Inf"),
    ("typiclust labeled int", lambda: aljax.typiclust(_EMB10, 2, n_neighbors=3, labeled=jnp.ones((2, 4), jnp.int32)),
     TypeError, "typiclust", "labeled", r"floating"),
    ("probcover delta zero", lambda: aljax.probcover(_EMB10, 2, delta=0.0), ValueError, "probcover", "delta", r"> 0"),
    ("probcover delta negative", lambda: aljax.probcover(_EMB10, 2, delta=-1.0), ValueError, "probcover", "delta",
     r"> 0"),
    ("probcover delta nan", lambda: aljax.probcover(_EMB10, 2, delta=float("nan")), ValueError, "probcover", "delta",
     r"finite"),
    ("probcover delta inf", lambda: aljax.probcover(_EMB10, 2, delta=float("inf")), ValueError, "probcover", "delta",
     r"finite"),
    ("probcover delta str", lambda: aljax.probcover(_EMB10, 2, delta="1"), TypeError, "probcover", "delta", r"real"),
    ("probcover no delta, no n_classes", lambda: aljax.probcover(_EMB10, 2), ValueError, "probcover", "n_classes",
     r"when `delta` is None"),
    ("probcover n_classes with delta", lambda: aljax.probcover(_EMB10, 2, delta=1.0, n_classes=3), ValueError,
     "probcover", "n_classes", r"None when `delta` is given"),
    ("probcover n_classes one", lambda: aljax.probcover(_EMB10, 2, n_classes=1), ValueError, "probcover",
     "n_classes", r"\[2, 10\]"),
    ("probcover n_classes above n", lambda: aljax.probcover(_EMB10, 2, n_classes=11), ValueError, "probcover",
     "n_classes", r"\[2, 10\]"),
    ("probcover purity zero", lambda: aljax.probcover(_EMB10, 2, n_classes=2, purity=0.0), ValueError, "probcover",
     "purity", r"\(0, 1\]"),
    ("probcover purity above 1", lambda: aljax.probcover(_EMB10, 2, n_classes=2, purity=1.5), ValueError,
     "probcover", "purity", r"\(0, 1\]"),
    ("probcover purity bool", lambda: aljax.probcover(_EMB10, 2, n_classes=2, purity=True), TypeError, "probcover",
     "purity", r""),
    ("probcover nan", lambda: aljax.probcover(_EMB10.at[1, 1].set(jnp.nan), 2, delta=1.0), ValueError, "probcover",
     "embedding", r"1 NaN/Inf"),
    ("probcover labeled width", lambda: aljax.probcover(_EMB10, 2, delta=1.0, labeled=jnp.ones((3, 5))), ValueError,
     "probcover", "labeled", r"4 columns"),
    ("probcover key", lambda: aljax.probcover(_EMB10, 2, delta=1.0, key=1.5), TypeError, "probcover", "key", r""),
    # uncertainty scores, random, BALD, core-set
    ("margin 1-D logits", lambda: aljax.margin(_W, lambda W, x: (x @ W)[:, 0], _POOL3, 2), ValueError, "margin",
     "apply_fn", r"2-D"),
    ("entropy one class", lambda: aljax.entropy(_W[:, :1], _LIN, _POOL3, 2), ValueError, "entropy", "apply_fn",
     r"2 classes"),
    ("margin nan", lambda: aljax.margin(_W, _LIN, _POOL3.at[2, 1].set(jnp.nan), 2), ValueError, "margin", "pool",
     r"NaN"),
    ("margin regression", lambda: aljax.margin(_W, _LIN, _POOL3, 2, problem_type="regression"), ValueError, "margin",
     "problem_type", r"class probabilities"),
    ("bald deterministic", lambda: aljax.bald(_params(), lambda p, x, key: _apply(p, x), POOL, 2), ValueError, "bald",
     "apply_fn", r"stochastic"),
    ("bald two arguments", lambda: aljax.bald(_W, _LIN, _POOL3, 2), TypeError, "bald", "apply_fn", r"stochastic"),
    ("bald mc_samples", lambda: aljax.bald(_params(), _apply_dropout, POOL, 2, mc_samples=1), ValueError, "bald",
     "mc_samples", r">= 2"),
    ("batch_bald mc_samples", lambda: aljax.batch_bald(_params(), _apply_dropout, POOL, 2, mc_samples=1), ValueError,
     "batch_bald", "mc_samples", r">= 2"),
    ("batch_bald configurations", lambda: aljax.batch_bald(_params(), _apply_dropout, POOL, 2, configurations=10),
     ValueError, "batch_bald", "configurations", r">= 20"),
    ("batch_bald deterministic", lambda: aljax.batch_bald(_params(), lambda p, x, key: _apply(p, x), POOL, 2),
     ValueError, "batch_bald", "apply_fn", r"stochastic"),
    ("mutual_information_greedy one sample", lambda: aljax.mutual_information_greedy(jnp.ones((1, 5, 2)) / 2, 2),
     ValueError, "mutual_information_greedy", "embedding", r"mc_samples >= 2"),
    ("mutual_information_greedy not normalised", lambda: aljax.mutual_information_greedy(jnp.ones((3, 5, 2)), 2),
     ValueError, "mutual_information_greedy", "embedding", r"summing to 1"),
    ("mutual_information_greedy negative", lambda: aljax.mutual_information_greedy(
        jnp.tile(jnp.array([1.5, -0.5]), (3, 5, 1)), 2), ValueError, "mutual_information_greedy", "embedding", r">= 0"),
    ("coreset no dense head", lambda: aljax.coreset(_W, lambda W, x: jnp.sin(x @ W), _POOL3, 2), ValueError,
     "coreset", "apply_fn", r"features_fn"),
    # gradient_embedding
    ("gradient_embedding not callable", lambda: _grad_emb(apply_fn="model"), TypeError, "gradient_embedding",
     "apply_fn", r"callable"),
    ("gradient_embedding int logits", lambda: _grad_emb(apply_fn=lambda p, x: (x @ p["w1"]).astype(jnp.int32)),
     TypeError, "gradient_embedding", "apply_fn", r"floating"),
    ("gradient_embedding 1-D logits", lambda: _grad_emb(apply_fn=lambda p, x: (x @ p["w1"])[:, 0]), ValueError,
     "gradient_embedding", "apply_fn", r"2-D logits"),
    ("gradient_embedding empty pool", lambda: _grad_emb(pool=jnp.ones((0, 6))), ValueError, "gradient_embedding",
     "pool", r"empty pool"),
    ("gradient_embedding batch_size", lambda: _grad_emb(batch_size=0), ValueError, "gradient_embedding",
     "batch_size", r">= 1, got 0"),
    ("gradient_embedding key", lambda: _grad_emb(key="seed"), TypeError, "gradient_embedding", "key", r""),
    ("gradient_embedding project_to", lambda: _grad_emb(project_to=0), ValueError, "gradient_embedding", "project_to",
     r">= 1, got 0"),
    ("gradient_embedding wrt nothing", lambda: _grad_emb(wrt=lambda path, leaf: False), ValueError,
     "gradient_embedding", "wrt", r""),
    ("gradient_embedding wrt mismatched", lambda: _grad_emb(wrt="w2"), ValueError, "gradient_embedding", "wrt",
     r"mismatched"),
    ("gradient_embedding nan", lambda: _grad_emb(pool=_PLAIN_POOL.at[2, 0].set(jnp.nan)), ValueError,
     "gradient_embedding", "pool", r"NaN/Inf"),
    # scores
    ("scores.margin 1-D", lambda: scores.margin(jnp.ones(5)), ValueError, "scores.margin", "logits", r"2-D"),
    ("scores.entropy int", lambda: scores.entropy(jnp.ones((5, 3), jnp.int32)), TypeError, "scores.entropy", "logits",
     r""),
    ("scores.least_confidence one class", lambda: scores.least_confidence(jnp.ones((5, 1))), ValueError,
     "scores.least_confidence", "logits", r"2 classes"),
    ("scores.least_confidence empty", lambda: scores.least_confidence(jnp.ones((0, 3))), ValueError,
     "scores.least_confidence", "logits", r""),
    ("scores.margin nan", lambda: scores.margin(jnp.ones((2, 3)).at[0, 0].set(jnp.nan)), ValueError, "scores.margin",
     "logits", r"NaN"),
    ("scores.bald 2-D", lambda: scores.bald(jnp.ones((5, 3))), ValueError, "scores.bald", "logits", r"3-D"),
    ("scores.top_k k", lambda: scores.top_k(jnp.ones(4), 5), ValueError, "scores.top_k", "k", r""),
    ("scores.top_k 2-D", lambda: scores.top_k(jnp.ones((4, 1)), 1), ValueError, "scores.top_k", "scores", r""),
    ("scores.top_k empty", lambda: scores.top_k(jnp.ones(0), 1), ValueError, "scores.top_k", "scores", r""),
    # stochastic batch acquisition on scores
    ("stochastic_top_k power negative", lambda: aljax.stochastic_top_k(0, jnp.array([0.5, -0.25, 1.0, -0.5]), 2),
     ValueError, "stochastic_top_k", "scores",
     r"non-negative for mode='power'.*2 negative value\(s\), the smallest -0.5"),
    ("stochastic_top_k power nan", lambda: aljax.stochastic_top_k(0, jnp.array([0.5, jnp.nan, 1.0]), 2), ValueError,
     "stochastic_top_k", "scores", r"1 NaN/Inf"),
    ("stochastic_top_k softmax inf", lambda: aljax.stochastic_top_k(0, jnp.array([0.5, jnp.inf]), 1, mode="softmax"),
     ValueError, "stochastic_top_k", "scores", r"NaN/Inf"),
    ("stochastic_top_k beta zero", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 2, beta=0.0), ValueError,
     "stochastic_top_k", "beta", r"finite number > 0, got 0.0"),
    ("stochastic_top_k beta negative", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 2, beta=-2.0), ValueError,
     "stochastic_top_k", "beta", r"> 0"),
    ("stochastic_top_k beta nan", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 2, beta=float("nan")), ValueError,
     "stochastic_top_k", "beta", r"finite"),
    ("stochastic_top_k beta inf", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 2, beta=float("inf")), ValueError,
     "stochastic_top_k", "beta", r"finite"),
    ("stochastic_top_k beta array", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 2, beta=jnp.ones(2)), TypeError,
     "stochastic_top_k", "beta", r"real number"),
    ("stochastic_top_k k zero", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 0), ValueError, "stochastic_top_k",
     "k", r">= 1, got 0"),
    ("stochastic_top_k k above n", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 5), ValueError, "stochastic_top_k",
     "k", r"5 points from a pool of 4"),
    ("stochastic_top_k k float", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 2.0), TypeError, "stochastic_top_k",
     "k", r"Python int"),
    ("stochastic_top_k mode", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 2, mode="gumbel"), ValueError,
     "stochastic_top_k", "mode", r"'power', 'softmax', 'softrank'"),
    ("stochastic_top_k mode None", lambda: aljax.stochastic_top_k(0, jnp.ones(4), 2, mode=None), TypeError,
     "stochastic_top_k", "mode", r""),
    ("stochastic_top_k 2-D", lambda: aljax.stochastic_top_k(0, jnp.ones((4, 1)), 2), ValueError, "stochastic_top_k",
     "scores", r"1-D"),
    ("stochastic_top_k int scores", lambda: aljax.stochastic_top_k(0, jnp.ones(4, jnp.int32), 2), TypeError,
     "stochastic_top_k", "scores", r"floating"),
    ("stochastic_top_k empty", lambda: aljax.stochastic_top_k(0, jnp.ones(0), 1), ValueError, "stochastic_top_k",
     "scores", r"non-empty"),
    ("stochastic_top_k list", lambda: aljax.stochastic_top_k(0, [0.5, 1.0], 1), TypeError, "stochastic_top_k",
     "scores", r"an array"),
    ("stochastic_top_k key", lambda: aljax.stochastic_top_k("seed", jnp.ones(4), 2), TypeError, "stochastic_top_k",
     "key", r""),
    ("stochastic_top_k arguments in selector order", lambda: aljax.stochastic_top_k(jnp.ones(4), 2, 0), TypeError,
     "stochastic_top_k", "key", r""),
    # stopping criteria
    ("stopping.kappas mismatched stop sets", lambda: stopping.kappas([np.zeros(5, int), np.zeros(4, int)]), ValueError,
     "stopping.kappas", "predictions", r"same stop set.*round 1"),
    ("stopping.cohen_kappa lengths", lambda: stopping.cohen_kappa([0, 1], [0, 1, 1]), ValueError,
     "stopping.cohen_kappa", "b", r"2 points"),
    ("stopping.cohen_kappa float labels", lambda: stopping.cohen_kappa([0.0, 1.0], [0, 1]), TypeError,
     "stopping.cohen_kappa", "a", r"integer"),
    ("stopping.cohen_kappa num_classes", lambda: stopping.cohen_kappa([0, 1], [0, 1], num_classes=0), ValueError,
     "stopping.cohen_kappa", "num_classes", r">= 1"),
    ("stopping.kappas float labels", lambda: stopping.kappas(np.zeros((3, 4))), TypeError, "stopping.kappas",
     "predictions", r"integer"),
    ("stopping.stabilizing_predictions threshold", lambda: stopping.stabilizing_predictions(
        np.zeros((4, 3), int), threshold=1.01), ValueError, "stopping.stabilizing_predictions", "threshold",
     r"\(0, 1\]"),
    ("stopping.stabilizing_predictions window", lambda: stopping.stabilizing_predictions(
        np.zeros((4, 3), int), window=0), ValueError, "stopping.stabilizing_predictions", "window", r">= 1"),
    ("stopping.average_kappa window float", lambda: stopping.average_kappa(np.zeros((4, 3), int), window=1.5),
     TypeError, "stopping.average_kappa", "window", r"Python int"),
    ("stopping.overall_uncertainty nan", lambda: stopping.overall_uncertainty(np.full((2, 3, 2), np.nan)),
     ValueError, "stopping.overall_uncertainty", "predictions", r"NaN"),
    ("stopping.overall_uncertainty logits", lambda: stopping.overall_uncertainty(np.full((2, 3, 2), 3.0)),
     ValueError, "stopping.overall_uncertainty", "predictions", r"summing to 1"),
    ("stopping.overall_uncertainty threshold", lambda: stopping.overall_uncertainty(
        np.full((2, 3, 2), 0.5), threshold=0), ValueError, "stopping.overall_uncertainty", "threshold", r"> 0"),
    ("stopping.max_confidence labels", lambda: stopping.max_confidence(np.zeros((2, 3), int)), TypeError,
     "stopping.max_confidence", "predictions", r"floating"),
    ("stopping.max_confidence measure", lambda: stopping.max_confidence(np.full((2, 3, 2), 0.5), measure="margin"),
     ValueError, "stopping.max_confidence", "measure", r"'entropy'"),
    ("stopping.stopping_points unknown", lambda: stopping.stopping_points(np.full((2, 3, 2), 0.5), early={}),
     ValueError, "stopping.stopping_points", "options", r"criterion names"),
    # ActiveSampler
    ("sampler strategy", lambda: _sampler(strategy="badgee"), ValueError, "ActiveSampler", "strategy", r"one of"),
    ("sampler strategy None", lambda: _sampler(strategy=None), ValueError, "ActiveSampler", "strategy", r""),
    ("sampler problem_type", lambda: _sampler(problem_type="classify"), ValueError, "ActiveSampler", "problem_type",
     r""),
    ("sampler budget zero", lambda: _sampler(budget=0), ValueError, "ActiveSampler", "budget", r""),
    ("sampler budget negative", lambda: _sampler(budget=-3), ValueError, "ActiveSampler", "budget", r""),
    ("sampler budget rate above 1", lambda: _sampler(budget=1.5), ValueError, "ActiveSampler", "budget", r"\(0, 1\]"),
    ("sampler budget rate zero", lambda: _sampler(budget=0.0), ValueError, "ActiveSampler", "budget", r""),
    ("sampler budget bool", lambda: _sampler(budget=True), TypeError, "ActiveSampler", "budget", r""),
    ("sampler budget str", lambda: _sampler(budget="10"), TypeError, "ActiveSampler", "budget", r""),
    ("sampler model str", lambda: _sampler(model="model"), TypeError, "ActiveSampler", "model", r""),
    ("sampler model pair", lambda: _sampler(model=(_params(), 3)), TypeError, "ActiveSampler", "model", r""),
    ("sampler rank", lambda: _sampler(rank=0), ValueError, "ActiveSampler", "rank", r""),
    ("sampler rank above C", lambda: _sampler(rank=C + 1).select(POOL), ValueError, "ActiveSampler.select", "rank",
     r"number of classes"),
    ("sampler lamb", lambda: _sampler(lamb=-1.0), ValueError, "ActiveSampler", "lamb", r""),
    ("sampler damping", lambda: _sampler(damping="fixed"), ValueError, "ActiveSampler", "damping", r""),
    ("sampler delta", lambda: _sampler(strategy="probcover", delta=0.0), ValueError, "ActiveSampler", "delta", r""),
    ("sampler regression probcover without delta", lambda: _sampler(problem_type="regression", strategy="probcover"),
     ValueError, "ActiveSampler", "delta", r"regression"),
    ("sampler regression rank", lambda: _sampler(problem_type="regression", rank=2), ValueError, "ActiveSampler",
     "rank", r"1 for regression"),
    ("sampler oversample", lambda: _sampler(oversample=0.0), ValueError, "ActiveSampler", "oversample", r""),
    ("sampler precompute_covariance", lambda: _sampler(precompute_covariance=1), TypeError, "ActiveSampler",
     "precompute_covariance", r"a bool"),
    ("sampler key", lambda: _sampler(key="k"), TypeError, "ActiveSampler", "key", r""),
    ("sampler regression margin", lambda: _sampler(problem_type="regression", strategy="margin"), ValueError,
     "ActiveSampler", "problem_type", r""),
    ("sampler head on a JAX model", lambda: _sampler(head="fc"), ValueError, "ActiveSampler", "head", r""),
    ("sampler prune int", lambda: _sampler(strategy="badge", prune=1), TypeError, "ActiveSampler", "prune", r""),
    ("sampler prune margin", lambda: _sampler(strategy="margin", prune=True), ValueError, "ActiveSampler", "prune",
     r""),
    ("sampler stochastic badge", lambda: _sampler(strategy="badge", stochastic="power"), ValueError, "ActiveSampler",
     "stochastic", r"'margin', 'entropy', 'least_confidence'.*'badge'"),
    ("sampler stochastic auto", lambda: _sampler(strategy="auto", stochastic="softmax"), ValueError, "ActiveSampler",
     "stochastic", r"strategy='auto'"),
    ("sampler stochastic unknown", lambda: _sampler(strategy="margin", stochastic="soft"), ValueError,
     "ActiveSampler", "stochastic", r""),
    ("sampler beta", lambda: _sampler(strategy="entropy", stochastic="power", beta=0), ValueError, "ActiveSampler",
     "beta", r"> 0"),
    ("sampler prune regression", lambda: _sampler(problem_type="regression", strategy="badge", prune=True),
     ValueError, "ActiveSampler", "prune", r""),
    ("sampler budget above n", lambda: _sampler(budget=50, strategy="random").select(POOL), ValueError,
     "ActiveSampler.select", "budget", r""),
    ("sampler strings to a JAX model", lambda: _sampler().select(["a", "b"]), TypeError, "ActiveSampler.select",
     "candidates", r""),
    ("sampler mc_samples margin", lambda: _sampler(strategy="margin", mc_samples=5), ValueError, "ActiveSampler",
     "mc_samples", r"unless strategy is 'bald' or 'batch_bald'"),
    ("sampler configurations bald", lambda: _sampler(model=(_params(), _apply_dropout), strategy="bald",
                                                     configurations=50), ValueError, "ActiveSampler", "configurations",
     r"unless strategy is 'batch_bald'"),
    ("sampler clustering badge",
     lambda: _sampler(strategy="badge", clustering=aljax.hac_clustering(POOL, threshold=1.0)), ValueError,
     "ActiveSampler", "clustering", r"unless strategy is 'cluster_margin'"),
    ("sampler threshold margin", lambda: _sampler(strategy="margin", threshold=1.0), ValueError, "ActiveSampler",
     "threshold", r"unless strategy is 'cluster_margin'"),
    ("sampler margin_multiple auto", lambda: _sampler(strategy="auto", margin_multiple=3.0), ValueError,
     "ActiveSampler", "margin_multiple", r"unless strategy is 'cluster_margin'"),
    ("sampler stochastic batch_bald", lambda: _sampler(model=(_params(), _apply_dropout), strategy="batch_bald",
                                                       stochastic="power"), ValueError, "ActiveSampler", "stochastic",
     r"'bald'"),
    ("sampler mc_samples 1", lambda: _sampler(model=(_params(), _apply_dropout), strategy="bald", mc_samples=1),
     ValueError, "ActiveSampler", "mc_samples", r""),
    ("sampler configurations below mc_samples", lambda: _sampler(model=(_params(), _apply_dropout),
                                                                 strategy="batch_bald", mc_samples=8, configurations=4),
     ValueError, "ActiveSampler", "configurations", r""),
    ("sampler bald keyless apply_fn", lambda: _sampler(strategy="bald"), TypeError, "ActiveSampler", "model",
     r"apply_fn\(params, x, key\)"),
    ("sampler bald deterministic apply_fn", lambda: _sampler(model=(_params(), _det_mlp), strategy="bald").select(POOL),
     ValueError, "ActiveSampler.select", "apply_fn", r"stochastic in its key"),
    ("sampler cluster_margin without clustering", lambda: _sampler(strategy="cluster_margin"), ValueError,
     "ActiveSampler", "clustering", r"threshold="),
    ("sampler cluster_margin clustering and threshold", lambda: _sampler(
        strategy="cluster_margin", clustering=aljax.hac_clustering(POOL, threshold=1.0), threshold=1.0), ValueError,
     "ActiveSampler", "threshold", r"None when `clustering` is given"),
    ("sampler cluster_margin clustering type", lambda: _sampler(strategy="cluster_margin", clustering=np.zeros(N)),
     TypeError, "ActiveSampler", "clustering", r"aljax\.Clustering"),
    ("sampler cluster_margin threshold", lambda: _sampler(strategy="cluster_margin", threshold=0.0), ValueError,
     "ActiveSampler", "threshold", r"> 0"),
    ("sampler cluster_margin margin_multiple", lambda: _sampler(strategy="cluster_margin", threshold=1.0,
                                                                margin_multiple=0.5), ValueError, "ActiveSampler",
     "margin_multiple", r">= 1"),
    ("sampler cluster_margin other candidates", lambda: _sampler(
        strategy="cluster_margin", clustering=aljax.hac_clustering(POOL[::-1], threshold=1.0)).select(POOL),
     ValueError, "ActiveSampler.select", "clustering", r"another pool.*`candidates`"),
    ("sampler batch_bald budget above a streamed pool", lambda: _sampler(
        model=(_params(), _apply_dropout), strategy="batch_bald", budget=N + 1).select(iter([POOL[:4], POOL[4:]])),
     ValueError, "ActiveSampler.select", "budget", r"strategy='batch_bald'"),
    ("sampler bald rate on an iterable", lambda: _sampler(model=(_params(), _apply_dropout), strategy="bald",
                                                          budget=0.5).select(iter([POOL])), ValueError,
     "ActiveSampler.select", "budget", r"unknown length"),
]


# Pools given as iterables of batches.
CASES += [
    ("badge empty iterable", lambda: aljax.badge(IT_PARAMS, IT_APPLY, iter([]), 3), ValueError, "badge", "pool",
     r"no examples"),
    ("random_sample iterable of empty batches",
     lambda: aljax.random_sample(None, None, iter([IT_POOL[:0], IT_POOL[:0]]), 3), ValueError, "random_sample",
     "pool", r"no examples"),
    ("margin batches change shape", lambda: aljax.margin(IT_PARAMS, IT_APPLY, iter([IT_POOL[:10], IT_POOL[:10, :3]]), 3),
     ValueError, "margin", "pool", r"trailing shape"),
    ("coreset k above a streamed pool", lambda: aljax.coreset(IT_PARAMS, IT_APPLY, it_batches(IT_POOL[:30], [10]), 50),
     ValueError, "coreset", "k", r"cannot select 50 points from a pool of 30"),
    ("random_sample k above a streamed pool",
     lambda: aljax.random_sample(None, None, it_batches(IT_POOL[:30], [10]), 50), ValueError, "random_sample", "k",
     r"cannot select 50 points from a pool of 30"),
    ("bait labeled shape, streamed pool",
     lambda: aljax.bait(IT_PARAMS, IT_APPLY, it_batches(IT_POOL, [100]), 3, labeled=IT_LABELED[:, :3]), ValueError,
     "bait", "labeled", r"trailing shape"),
    ("coreset labeled structure, streamed pool",
     lambda: aljax.coreset(IT_PARAMS, IT_APPLY, it_batches(IT_POOL, [100]), 3, labeled={"x": IT_LABELED}),
     ValueError, "coreset", "labeled", r"structure"),
    ("bait k zero, streamed pool", lambda: aljax.bait(IT_PARAMS, IT_APPLY, it_batches(IT_POOL, [100]), 0), ValueError,
     "bait", "k", r""),
    ("entropy k float, streamed pool", lambda: aljax.entropy(IT_PARAMS, IT_APPLY, it_batches(IT_POOL, [100]), 2.5),
     TypeError, "entropy", "k", r""),
    ("global_pool empty part", lambda: aljax.global_pool(np.zeros((0, 3))), ValueError, "global_pool", "local",
     r"at least one row"),
    ("global_pool empty iterable", lambda: aljax.global_pool(iter([])), ValueError, "global_pool", "local", r"empty"),
    ("global_pool axis", lambda: aljax.global_pool(
        np.zeros((4, 3)), mesh=jax.sharding.Mesh(np.array(jax.devices()), ("data",)), axis="rows"), ValueError, "global_pool", "axis",
     r"mesh's axes"),
    ("local_indices out of range", lambda: aljax.local_indices(np.array([4]), np.zeros((4, 2))), ValueError,
     "local_indices", "indices", r"\[0, 4\)"),
    ("last_layer_embedding empty batches",
     lambda: aljax.last_layer_embedding(IT_PARAMS, IT_APPLY, (b for b in [jnp.zeros((0, 6))])), ValueError,
     "last_layer_embedding", "pool", r""),
]


# Cluster-Margin: its clustering and its options.
_CM_CLUSTERING = aljax.hac_clustering(POOL, threshold=1.0, fingerprint_of=POOL)
_CM_LOGITS = jnp.asarray(np.random.default_rng(5).normal(size=(N, C)), jnp.float32)


def _cm(**kw):
    return _front("cluster_margin")(**{"clustering": _CM_CLUSTERING, **kw})


CASES += [
    ("cluster_margin margin_multiple below 1", lambda: _cm(margin_multiple=0.5), ValueError, "cluster_margin",
     "margin_multiple", r">= 1, got 0.5"),
    ("cluster_margin margin_multiple nan", lambda: _cm(margin_multiple=float("nan")), ValueError, "cluster_margin",
     "margin_multiple", r"finite"),
    ("cluster_margin margin_multiple str", lambda: _cm(margin_multiple="10"), TypeError, "cluster_margin",
     "margin_multiple", r"real number"),
    ("cluster_margin clustering of a smaller pool", lambda: _cm(clustering=_CM_CLUSTERING.take(jnp.arange(5))),
     ValueError, "cluster_margin", "clustering", r"pool of 5 points, but the pool has 10"),
    ("cluster_margin clustering of another pool", lambda: _cm(pool=POOL + 1.0), ValueError, "cluster_margin",
     "clustering", r"another pool: 10 of the 10 rows"),
    ("cluster_margin clustering not a Clustering", lambda: _cm(clustering=_CM_CLUSTERING.labels), TypeError,
     "cluster_margin", "clustering", r"aljax.Clustering"),
    ("cluster_margin threshold with clustering", lambda: _cm(threshold=1.0), ValueError, "cluster_margin",
     "threshold", r"None when `clustering` is given"),
    ("cluster_margin neither threshold nor clustering", lambda: _cm(clustering=None), ValueError, "cluster_margin",
     "threshold", r"or pass `clustering=`"),
    ("cluster_margin threshold zero", lambda: _cm(clustering=None, threshold=0.0), ValueError, "cluster_margin",
     "threshold", r"> 0"),
    ("cluster_margin threshold nan", lambda: _cm(clustering=None, threshold=float("nan")), ValueError,
     "cluster_margin", "threshold", r"finite"),
    ("cluster_margin regression", lambda: _cm(problem_type="regression"), ValueError, "cluster_margin",
     "problem_type", r"class probabilities"),
    ("cluster_pool threshold negative", lambda: aljax.cluster_pool(_params(), _apply, POOL, threshold=-1.0),
     ValueError, "cluster_pool", "threshold", r"> 0"),
    ("cluster_pool n_centres above max_exact",
     lambda: aljax.cluster_pool(_params(), _apply, POOL, threshold=1.0, max_exact=4, n_centres=6), ValueError,
     "cluster_pool", "n_centres", r"at most `max_exact` \(4\) for a pool of 10"),
    ("hac_clustering n_centres zero", lambda: aljax.hac_clustering(_EMB10, threshold=1.0, n_centres=1), ValueError,
     "hac_clustering", "n_centres", r">= 2"),
    ("hac_clustering threshold inf", lambda: aljax.hac_clustering(_EMB10, threshold=float("inf")), ValueError,
     "hac_clustering", "threshold", r"finite"),
    ("hac_clustering threshold str", lambda: aljax.hac_clustering(_EMB10, threshold="1"), TypeError,
     "hac_clustering", "threshold", r"real number"),
    ("hac_clustering embedding nan", lambda: aljax.hac_clustering(_EMB10.at[1, 1].set(jnp.nan), threshold=1.0),
     ValueError, "hac_clustering", "embedding", r"NaN"),
    ("hac_clustering fingerprint_of rows", lambda: aljax.hac_clustering(_EMB10, threshold=1.0, fingerprint_of=POOL[:4]),
     ValueError, "hac_clustering", "fingerprint_of", r"10 rows"),
    ("margin_round_robin no clustering", lambda: aljax.margin_round_robin(_CM_LOGITS, 3), TypeError,
     "margin_round_robin", "clustering", r"aljax.Clustering"),
    ("margin_round_robin clustering size",
     lambda: aljax.margin_round_robin(_CM_LOGITS[:6], 3, clustering=_CM_CLUSTERING), ValueError,
     "margin_round_robin", "clustering", r"pool of 10 points, but the pool has 6"),
    ("margin_round_robin one class", lambda: aljax.margin_round_robin(_CM_LOGITS[:, :1], 3, clustering=_CM_CLUSTERING),
     ValueError, "margin_round_robin", "embedding", r"C >= 2"),
    ("margin_round_robin margin_multiple zero",
     lambda: aljax.margin_round_robin(_CM_LOGITS, 3, clustering=_CM_CLUSTERING, margin_multiple=0), ValueError,
     "margin_round_robin", "margin_multiple", r">= 1"),
    ("margin_round_robin k above n", lambda: aljax.margin_round_robin(_CM_LOGITS, 11, clustering=_CM_CLUSTERING),
     ValueError, "margin_round_robin", "k", r"cannot select 11 points from a pool of 10"),
]


@pytest.mark.parametrize("case_id, call, exc, fn, arg, detail", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_message_naming_function_and_argument(case_id, call, exc, fn, arg, detail):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert f"aljax.{fn}" in message, message
    assert f"`{arg}`" in message, message
    assert re.search(detail, message), message


# ---------------------------------------------------------------- BAIT and VeSSAL: their own options
# (arg, keywords changed from a valid call, exception)

_FISHER_GOOD = random_factors(0, 10, 3, 4, dtype=np.float32)


def _good():
    return _FISHER_GOOD


_EMB = jnp.ones((10, 4))
_FF = aljax.FisherFactors(jnp.full((10, 3), 1 / 3), jnp.ones((10, 2)))


GREEDY_BAD = [
    ("k", dict(k=0), ValueError),
    ("k", dict(k=11), ValueError),
    ("k", dict(k=2.0), TypeError),
    ("lamb", dict(lamb=0.0), ValueError),
    ("lamb", dict(lamb=-1.0), ValueError),
    ("lamb", dict(lamb=float("nan")), ValueError),
    ("oversample", dict(oversample=0.5), ValueError),
    ("oversample", dict(oversample="2"), TypeError),
    ("damping", dict(damping="scaled"), ValueError),
    ("damping", dict(damping=None), ValueError),
    ("key", dict(key="seed"), TypeError),
    ("key", dict(key=jnp.zeros(3)), TypeError),
    ("embedding", dict(embedding=jnp.ones((10, 12))), ValueError),
    ("embedding", dict(embedding=jnp.ones((10, 3, 12), jnp.int32)), TypeError),
    ("embedding", dict(embedding=[[1.0]]), TypeError),
    ("embedding", dict(embedding=jnp.full((10, 3, 12), jnp.nan)), ValueError),
    ("embedding", dict(embedding=aljax.FisherFactors(-jnp.ones((10, 3)), jnp.ones((10, 4)))), ValueError),
    ("labeled", dict(labeled=random_factors(0, 5, 3, 5, dtype=np.float32)), ValueError),
    # Rows of probabilities that do not sum to 1 (the Fisher sum relies on it).
    ("embedding", dict(embedding=aljax.FisherFactors(jnp.full((10, 3), 0.5), jnp.ones((10, 4)))), ValueError),
    ("embedding", dict(embedding=aljax.FisherFactors(_good().probs.at[7, 1].add(0.01), _good().h)), ValueError),
    ("labeled", dict(labeled=aljax.FisherFactors(jnp.full((5, 3), 0.3), jnp.ones((5, 4)))), ValueError),
    ("labeled", dict(labeled=jnp.ones((5, 3, 12))), TypeError),
    ("labeled", dict(embedding=jnp.ones((10, 3, 12)), labeled=jnp.ones((5, 2, 12))), ValueError),
    ("labeled", dict(embedding=jnp.ones((10, 3, 12)), labeled=random_factors(0, 5, 3, 4, dtype=np.float32)), TypeError),
]

BAIT_BAD = [
    ("k", dict(k=11), ValueError),
    ("lamb", dict(lamb=0), ValueError),
    ("oversample", dict(oversample=0.99), ValueError),
    ("damping", dict(damping="Relative"), ValueError),
    ("labeled", dict(labeled=jnp.ones((4, 7))), ValueError),
    ("labeled", dict(labeled=(jnp.ones((4, 6)),)), ValueError),
    ("problem_type", dict(problem_type="ranking"), ValueError),
    ("key", dict(key="seed"), TypeError),
    ("pool", dict(pool=jnp.ones((0, 6))), ValueError),
    ("apply_fn", dict(apply_fn=lambda p, x: jnp.ones((x.shape[0], 2, 2))), ValueError),
]

VOLUME_BAD = [
    (dict(embedding=_EMB, k=None), ValueError, "k"),
    (dict(embedding=_EMB, k=3, rate=0.5), ValueError, "k"),
    (dict(embedding=_EMB, rate=0.0), ValueError, "rate"),
    (dict(embedding=_EMB, rate=1.5), ValueError, "rate"),
    (dict(embedding=_EMB, rate=True), TypeError, "rate"),
    (dict(embedding=_EMB, k=0), ValueError, "k"),
    (dict(embedding=_EMB, k=11), ValueError, "k"),
    (dict(embedding=_EMB, k=2.0), TypeError, "k"),
    (dict(embedding=_EMB, k=2, lamb=0.0), ValueError, "lamb"),
    (dict(embedding=_EMB, k=2, lamb=-1.0), ValueError, "lamb"),
    (dict(embedding=_FF, k=2, rank=0), ValueError, "rank"),
    (dict(embedding=_FF, k=2, rank=4), ValueError, "rank"),
    (dict(embedding=_EMB, k=2, rank=2), ValueError, "rank"),
    (dict(embedding=jnp.ones(10), k=2), ValueError, "embedding"),
    (dict(embedding=jnp.ones((10, 4), jnp.int32), k=2), TypeError, "embedding"),
    (dict(embedding=[[1.0]], k=1), TypeError, "embedding"),
    (dict(embedding=_EMB, k=2, covariance=jnp.eye(3)), ValueError, "covariance"),
    (dict(embedding=_EMB, k=2, labeled=jnp.ones((3, 5))), ValueError, "labeled"),
    (dict(embedding=_EMB, k=2, labeled=_FF), TypeError, "labeled"),
    (dict(embedding=_EMB, k=2, key="seed"), TypeError, "key"),
]



def _vessal_cases():
    params, apply_fn, features, pool = _model_and_pool(40)

    def shifting():
        yield pool[:10]
        yield pool[10:20, :3]

    return [
        (dict(pool=pool, k=None), ValueError, "k"),
        (dict(pool=pool, k=3, rate=0.2), ValueError, "k"),
        (dict(pool=pool, rate=2.0), ValueError, "rate"),
        (dict(pool=pool, k=41), ValueError, "k"),
        (dict(pool=pool, k=3, rank=0), ValueError, "rank"),
        (dict(pool=pool, k=3, rank=5), ValueError, "rank"),
        (dict(pool=pool, k=3, rank=1.0), TypeError, "rank"),
        (dict(pool=pool, k=3, rank=2, problem_type="regression"), ValueError, "rank"),
        (dict(pool=pool, k=3, problem_type="ranking"), ValueError, "problem_type"),
        (dict(pool=pool, k=3, lamb=0), ValueError, "lamb"),
        (dict(pool=pool, k=3, batch_size=0), ValueError, "batch_size"),
        (dict(pool=shifting(), rate=0.5), ValueError, "pool"),
        (dict(pool=iter([pool[:10]]), k=3), ValueError, "length"),
        (dict(pool=iter([pool[:10]]), k=3, length=0), ValueError, "length"),
        (dict(pool=iter([pool[:10]]), rate=0.3, precompute_covariance=True), ValueError, "pool"),
        (dict(pool=iter([]), rate=0.3), ValueError, "pool"),
        (dict(pool=pool, k=3, precompute_covariance=1), TypeError, "precompute_covariance"),
        (dict(pool=pool, k=3, length=40), ValueError, "length"),
        (dict(pool=pool, k=3, key=1.5), TypeError, "key"),
    ], params, apply_fn


def _bait_model():
    params, apply_fn, _, _, in_shape = MODEL_KINDS["plain"](jax.random.key(0))
    return params, apply_fn, jnp.ones((10,) + in_shape)


def _own_option_cases():
    for i, (arg, change, exc) in enumerate(GREEDY_BAD):
        kw = dict(embedding=_good(), k=3) | change
        yield pytest.param(lambda kw=kw: aljax.fisher_greedy(kw.pop("embedding"), kw.pop("k"), **kw), exc,
                           "fisher_greedy", arg, id=f"fisher_greedy-{arg}-{i}")
    params, apply_fn, pool = _bait_model()
    for i, (arg, change, exc) in enumerate(BAIT_BAD):
        kw = dict(params=params, apply_fn=apply_fn, pool=pool, k=3) | change
        yield pytest.param(lambda kw=kw: aljax.bait(kw.pop("params"), kw.pop("apply_fn"), kw.pop("pool"), kw.pop("k"),
                                                    **kw), exc, "bait", arg, id=f"bait-{arg}-{i}")
    for i, (kw, exc, arg) in enumerate(VOLUME_BAD):
        yield pytest.param(lambda kw=dict(kw): aljax.volume_stream(kw.pop("embedding"), kw.pop("k", None), **kw), exc,
                           "volume_stream", arg, id=f"volume_stream-{arg}-{i}")
    cases, params, apply_fn = _vessal_cases()
    for i, (kw, exc, arg) in enumerate(cases):
        yield pytest.param(lambda kw=dict(kw): aljax.vessal(params, apply_fn, kw.pop("pool"), kw.pop("k", None), **kw),
                           exc, "vessal", arg, id=f"vessal-{arg}-{i}")


@pytest.mark.parametrize("call, exc, fn, arg", list(_own_option_cases()))
def test_bait_and_vessal_refuse_their_own_bad_options(call, exc, fn, arg):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert f"aljax.{fn}" in message and f"`{arg}`" in message, message


# ---------------------------------------------------------------- small inputs are checked in NumPy
# Small concrete inputs on the host or one CPU device are checked (and padded) in NumPy instead of
# a jitted check that compiles per shape (aljax._validate.on_host): both paths must refuse the same
# inputs with the same message.

def _value_cases():
    """Every tabled case about values (NaN/Inf, probabilities), the table's and BAIT's own."""
    for case in CASES:
        if re.search(r"NaN|summing|>= 0", case[5]):
            yield pytest.param(case[1], id=case[0])
    for i, (arg, change, exc) in enumerate(GREEDY_BAD):
        if arg in ("embedding", "labeled") and exc is ValueError:
            yield pytest.param(lambda change=change: aljax.fisher_greedy(**(dict(embedding=_good(), k=3) | change)),
                               id=f"fisher_greedy-{arg}-{i}")


@pytest.mark.parametrize("call", list(_value_cases()))
def test_numpy_and_jitted_value_checks_give_the_same_message(call, monkeypatch):
    messages = []
    for limit in (aljax._validate.HOST_MAX_ELEMENTS, 0):
        monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", limit)
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        messages.append((type(info.value), str(info.value)))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("where", ["numpy", "jax"])
def test_numpy_value_checks_name_the_worst_row(where, monkeypatch):
    """The row sum farthest from 1 (row 7, either side) and each kind of bad value, from NumPy and
    from jax arrays, host path and jitted path alike."""
    as_array = np.asarray if where == "numpy" else jnp.asarray
    good = random_factors(0, 10, 3, 4, dtype=np.float32)
    probs, h = np.array(good.probs), np.array(good.h)
    def at(a, i, j, value):
        a = a.copy()
        a[i, j] = value
        return a

    bad = {"high": (at(probs, 7, 1, probs[7, 1] + 0.01), h, r"row 7 summing to 1\.01"),
           "low": (at(probs, 7, 0, probs[7, 0] / 2), h, r"row 7 summing to 0\.60"),
           "nan": (at(probs, 2, 0, np.nan), h, r"1 NaN/Inf"),
           "inf h": (probs, at(h, 5, 3, np.inf), r"1 NaN/Inf"),
           "negative": (at(probs, 4, 2, -probs[4, 2]), h, r"probabilities >= 0")}
    for name, (p, x, detail) in bad.items():
        for limit in (aljax._validate.HOST_MAX_ELEMENTS, 0):
            monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", limit)
            with pytest.raises(ValueError, match=detail):
                aljax.fisher_greedy(aljax.FisherFactors(as_array(p.astype(np.float32)), as_array(x)), 3)
    monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", 1 << 20)
    picks = aljax.fisher_greedy(aljax.FisherFactors(as_array(probs), as_array(h)), 3)
    monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", 0)
    assert np.array_equal(picks, aljax.fisher_greedy(aljax.FisherFactors(as_array(probs), as_array(h)), 3))


def test_on_host_takes_small_host_and_cpu_arrays_only(monkeypatch):
    x = jnp.ones((4, 3))
    assert aljax._validate.on_host(np.ones(3), x)
    assert not aljax._validate.on_host(np.ones(3), [1.0])
    monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", 14)
    assert aljax._validate.on_host(np.ones(2), x) and not aljax._validate.on_host(np.ones(3), x)
    jax.jit(lambda y: aljax._validate.on_host(y) and 1 / 0)(x)  # a tracer is never on the host


# ---------------------------------------------------------------- the experiment harness

HARNESS = [
    # (call, exception, substrings: the function, the argument, then details)
    (lambda: LabelPool(0), ValueError, ["aljax.LabelPool", "`n`"]),
    (lambda: LabelPool(3.0), TypeError, ["aljax.LabelPool", "`n`"]),
    (lambda: LabelPool(5).label([5]), ValueError, ["aljax.LabelPool.label", "`indices`", "[5]"]),
    (lambda: LabelPool(5).label([-1]), ValueError, ["aljax.LabelPool.label", "`indices`"]),
    (lambda: LabelPool(5).label([1, 1]), ValueError, ["aljax.LabelPool.label", "repeated", "[1]"]),
    (lambda: LabelPool(5).label([1]).label([2, 1]), ValueError, ["aljax.LabelPool.label", "already labeled", "[1]"]),
    (lambda: LabelPool(5).label([0.5]), TypeError, ["aljax.LabelPool.label", "integer"]),
    (lambda: LabelPool(5).label([[1]]), ValueError, ["aljax.LabelPool.label", "1-D"]),
    (lambda: LabelPool(5).label([1]).from_unlabeled_index([4]), ValueError,
     ["aljax.LabelPool.from_unlabeled_index", "`positions`", "[0, 4)"]),
    (lambda: LabelPool(5).label([1]).to_unlabeled_index([1]), ValueError,
     ["aljax.LabelPool.to_unlabeled_index", "already labeled"]),
    (lambda: LabelPool.from_dict({"n": 3}), ValueError, ["aljax.LabelPool.from_dict", "`state`"]),
    (lambda: LabelPool.from_dict({"format": "aljax.LabelPool/1", "n": 3, "labeled": [0, 1], "rounds": [1, 0]}),
     ValueError, ["aljax.LabelPool.from_dict", "non-decreasing"]),
    (lambda: LabelPool.from_dict({"format": "aljax.LabelPool/1", "n": 3, "labeled": [0, 0], "rounds": [0, 0]}),
     ValueError, ["aljax.LabelPool.label", "repeated"]),
    (lambda: _run(aljax.random_sample, initial=50, per_round=10, rounds=4), ValueError,
     ["aljax.simulate", "`initial`", "90 > 80"]),
    (lambda: _run(aljax.random_sample, initial=0), ValueError, ["aljax.simulate", "`initial`"]),
    (lambda: _run(aljax.random_sample, per_round=0), ValueError, ["aljax.simulate", "`per_round`"]),
    (lambda: _run(aljax.random_sample, rounds=-1), ValueError, ["aljax.simulate", "`rounds`"]),
    (lambda: _run(aljax.random_sample, rounds=1.5), TypeError, ["aljax.simulate", "`rounds`"]),
    (lambda: _run(aljax.random_sample, key="seed"), TypeError, ["aljax.simulate", "`key`"]),
    (lambda: _run(aljax.random_sample, apply_fn=3), TypeError, ["aljax.simulate", "`apply_fn`"]),
    (lambda: _run(aljax.random_sample, name=3), TypeError, ["aljax.simulate", "`name`"]),
    (lambda: _run(aljax.margin, stop_set=np.zeros((4, 2), np.float32)), ValueError,
     ["aljax.simulate", "`stop_set`", "trailing shape (3,)"]),
    (lambda: _run(aljax.random_sample, apply_fn=None, stop_set=np.zeros((4, 3), np.float32)), ValueError,
     ["aljax.simulate", "`stop_set`", "apply_fn"]),
    (lambda: _run(aljax.margin, stop_set={"x": np.zeros((4, 3), np.float32)}), ValueError,
     ["aljax.simulate", "`stop_set`", "structure"]),
]


@pytest.mark.parametrize("call, exc, parts", HARNESS, ids=[f"{c[2][0]}-{i}" for i, c in enumerate(HARNESS)])
def test_harness_refuses_bad_input_naming_function_and_argument(call, exc, parts):
    with pytest.raises(exc) as info:
        call()
    for part in parts:
        assert part in str(info.value), (part, str(info.value))


# ---------------------------------------------------------------- the torch adapter (when torch is installed)

try:
    import torch
except ImportError:
    torch = None


def _torch_cases():
    if torch is None:
        return []
    import aljax.torch_adapter as ta
    from test_torch_adapter import C, IN, ConvOnly, IntLogits, pool_of, torch_mlp

    model, x = torch_mlp(), pool_of(10)
    shuffled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4, shuffle=True)
    subset = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4,
                                         sampler=torch.utils.data.SubsetRandomSampler(range(10)))
    dropping = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4, drop_last=True)
    random_batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_sampler=(
        torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(range(len(x))), 4, False)))
    softmaxed = torch.nn.Sequential(torch.nn.Linear(IN, C), torch.nn.Softmax(-1))

    return [
        (lambda: ta.to_jax(np.ones(3)), TypeError, "to_jax", "tensor"),
        (lambda: ta.to_jax(torch.ones(3), narrow=1), TypeError, "to_jax", "narrow"),
        (lambda: ta.to_torch(np.ones(3)), TypeError, "to_torch", "array"),
        (lambda: ta.badge(model, x, 0), ValueError, "badge", "k"),
        (lambda: ta.badge(model, x, 11), ValueError, "badge", "k"),
        (lambda: ta.badge(model, x, 2.0), TypeError, "badge", "k"),
        (lambda: ta.badge(model, x, 2, key="0"), TypeError, "badge", "key"),
        (lambda: ta.badge(model, x, 2, prune="yes"), TypeError, "badge", "prune"),
        (lambda: ta.badge(model, x, 2, progress="yes"), TypeError, "badge", "progress"),
        (lambda: ta.margin(model, x, 2, progress=0), TypeError, "margin", "progress"),
        (lambda: ta.badge("model", x, 2), TypeError, "badge", "model"),
        (lambda: ta.badge(model, "text", 2), TypeError, "badge", "pool"),
        (lambda: ta.badge(model, torch.zeros(0, IN), 1), ValueError, "badge", "pool"),
        (lambda: ta.last_layer_embedding(model, torch.zeros(0, IN)), ValueError, "last_layer_embedding", "pool"),
        (lambda: ta.last_layer_embedding(model, [1, 2]), TypeError, "last_layer_embedding", "pool"),
        (lambda: ta.last_layer_embedding(model, ["a", "b"]), TypeError, "last_layer_embedding", "model"),
        (lambda: ta.last_layer_embedding(model, x, batch_size=0), ValueError, "last_layer_embedding", "batch_size"),
        (lambda: ta.last_layer_embedding(model, x, head="nope"), ValueError, "last_layer_embedding", "head"),
        (lambda: ta.last_layer_embedding(model, shuffled), ValueError, "last_layer_embedding", "pool"),
        (lambda: ta.last_layer_embedding(model, subset), ValueError, "last_layer_embedding", "pool"),
        (lambda: ta.last_layer_embedding(model, dropping), ValueError, "last_layer_embedding", "pool"),
        (lambda: ta.last_layer_embedding(model, random_batches), ValueError, "last_layer_embedding", "batch_sampler"),
        (lambda: ta.to_torch(jax.random.key(0)), TypeError, "to_torch", "key_data"),
        (lambda: ta.last_layer_embedding(ConvOnly(), x), ValueError, "last_layer_embedding", "no torch.nn.Linear"),
        (lambda: ta.last_layer_embedding(softmaxed, x), ValueError, "last_layer_embedding", "not a Linear"),
        (lambda: ta.last_layer_embedding(torch_mlp(out=1), x), ValueError, "last_layer_embedding", "model"),
        (lambda: ta.vessal(model, x, None), ValueError, "vessal", "rate"),
        (lambda: ta.vessal(model, x, 2, rate=0.5), ValueError, "vessal", "rate"),
        (lambda: ta.vessal(model, x, None, rate=1.5), ValueError, "vessal", "rate"),
        (lambda: ta.vessal(model, x, 2, rank=0), ValueError, "vessal", "rank"),
        (lambda: ta.vessal(model, x, 2, rank=2, problem_type="regression"), ValueError, "vessal", "rank"),
        (lambda: ta.vessal(model, x, 2, lamb=0.0), ValueError, "vessal", "lamb"),
        (lambda: ta.vessal(model, x, 2, precompute_covariance=1), TypeError, "vessal", "precompute_covariance"),
        (lambda: ta.vessal(model, x, 2, labeled="text"), TypeError, "vessal", "labeled"),
        (lambda: ta.badge(model, x, 2, prune=True, problem_type="regression"), ValueError, "badge", "prune"),
        (lambda: ta.coreset(model, x, 2, problem_type="ranking"), ValueError, "coreset", "problem_type"),
        (lambda: ta.bait(model, x, 2, oversample=0.5), ValueError, "bait", "oversample"),
        (lambda: ta.bait(model, x, 2, lamb=-1.0), ValueError, "bait", "lamb"),
        (lambda: ta.bait(model, x, 2, damping="scale-free"), ValueError, "bait", "damping"),
        (lambda: ta.gradient_embedding(model, x, wrt=["nope"]), ValueError, "gradient_embedding", "wrt"),
        (lambda: ta.gradient_embedding(model, x, wrt="0.weight"), TypeError, "gradient_embedding", "wrt"),
        (lambda: ta.gradient_embedding(model, x, wrt=lambda n, p: False), ValueError, "gradient_embedding", "wrt"),
        (lambda: ta.gradient_embedding(model, x, project_to=0), ValueError, "gradient_embedding", "project_to"),
        (lambda: ta.gradient_embedding(model, x, head=3), TypeError, "gradient_embedding", "head"),
        (lambda: ta.gradient_embedding(model, x, head="nope"), ValueError, "gradient_embedding", "Linear layers"),
        (lambda: ta.last_layer_embedding(IntLogits(), x), TypeError, "last_layer_embedding", "floating logits"),
        (lambda: ta.badge(IntLogits(), x, 2), TypeError, "badge", "floating logits"),
        (lambda: ta.bait(model, x, 2, problem_type="ranking"), ValueError, "bait", "problem_type"),
        (lambda: ta.bait(model, x, 2, key="0"), TypeError, "bait", "key"),
        (lambda: ta.bald(torch.nn.Sequential(torch.nn.Linear(IN, C)), x, 2), ValueError, "bald", "without any"),
        (lambda: ta.bald(model, x, 2), ValueError, "bald", "same logits"),   # Dropout(0.0)
        (lambda: ta.bald(torch_mlp(dropout=0.5), x, 2, mc_samples=1), ValueError, "bald", "mc_samples"),
        (lambda: ta.bald(torch_mlp(dropout=0.5), x, 11), ValueError, "bald", "k"),
        (lambda: ta.bald(torch_mlp(dropout=0.5), x, 2, key="0"), TypeError, "bald", "key"),
        (lambda: ta.bald(torch_mlp(dropout=0.5), x, 2, stochastic="gumbel"), ValueError, "bald", "stochastic"),
        (lambda: ta.bald(torch_mlp(dropout=0.5), x, 2, stochastic="power", beta=0.0), ValueError, "bald", "beta"),
        (lambda: ta.margin(model, x, 2, stochastic="powr"), ValueError, "margin", "stochastic"),
        (lambda: ta.entropy(model, x, 2, stochastic=1), TypeError, "entropy", "stochastic"),
        (lambda: ta.least_confidence(model, x, 2, stochastic="softmax", beta=float("inf")), ValueError,
         "least_confidence", "beta"),
    ]


TORCH_CASES = _torch_cases()


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("case", range(len(TORCH_CASES)), ids=[f"torch_adapter.{c[2]}-{c[3]}" for c in TORCH_CASES])
def test_torch_adapter_refuses_bad_input_naming_function_and_argument(case):
    call, exc, fn, arg = TORCH_CASES[case]
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert f"aljax.torch_adapter.{fn}" in message, message
    assert arg in message, message
