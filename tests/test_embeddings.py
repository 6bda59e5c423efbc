import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aljax
from models import MODEL_KINDS


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(params=sorted(MODEL_KINDS))
def model(request):
    params, apply_fn, features, layout, shape = MODEL_KINDS[request.param](jax.random.key(3))
    x = np.asarray(jax.random.normal(jax.random.key(4), (45,) + shape), np.float32)
    return params, apply_fn, features, layout, x


def test_last_layer_embedding_matches_explicit_features(model):
    params, apply_fn, features, _, x = model
    emb = aljax.last_layer_embedding(params, apply_fn, x, batch_size=16)  # 3 chunks, last one padded
    logits = np.asarray(apply_fn(params, x), np.float64)
    probs = _softmax(logits)
    a_ref = probs - np.eye(logits.shape[1])[logits.argmax(1)]
    np.testing.assert_allclose(emb.h, np.asarray(features(params, x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(emb.a, a_ref, rtol=1e-4, atol=1e-5)


def test_gradient_embedding_equals_factored_flattened(model):
    params, apply_fn, _, layout, x = model
    emb = aljax.last_layer_embedding(params, apply_fn, x, batch_size=16)
    grads = aljax.gradient_embedding(params, apply_fn, x, batch_size=16)
    assert grads.shape == (x.shape[0], emb.dim)
    np.testing.assert_allclose(grads, emb.to_dense(layout), rtol=1e-4, atol=1e-5)


def test_factored_layouts_are_outer_products():
    rng = np.random.default_rng(0)
    a, h = rng.normal(size=(3, 4)), rng.normal(size=(3, 5))
    emb = aljax.Factored(jnp.asarray(a), jnp.asarray(h))
    for i in range(3):
        np.testing.assert_allclose(emb.to_dense("cd")[i], np.outer(a[i], h[i]).ravel(), rtol=1e-6)
        np.testing.assert_allclose(emb.to_dense("dc")[i], np.outer(h[i], a[i]).ravel(), rtol=1e-6)


def test_gradient_embedding_wrt_predicate_pytree_and_projection():
    params, apply_fn, features, _, _ = MODEL_KINDS["plain"](jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (20, 6))
    both = aljax.gradient_embedding(params, apply_fn, x, wrt=lambda path, _: "2" in jax.tree_util.keystr(path))
    mask = {"w1": False, "b1": False, "w2": True, "b2": True}
    both_tree = aljax.gradient_embedding(params, apply_fn, x, wrt=mask)
    np.testing.assert_array_equal(both, both_tree)
    # tree_leaves order of a dict is sorted keys: b2 (C) then w2 (D·C); the bias gradient is a.
    emb = aljax.last_layer_embedding(params, apply_fn, x)
    np.testing.assert_allclose(both[:, :4], emb.a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[:, 4:], emb.to_dense("dc"), rtol=1e-5, atol=1e-6)
    # A Gaussian sketch: deterministic per key and preserving squared distances on average.
    full = aljax.gradient_embedding(params, apply_fn, x, wrt=mask, project_to=2000, key=1)
    again = aljax.gradient_embedding(params, apply_fn, x, wrt=mask, project_to=2000, key=1)
    np.testing.assert_array_equal(full, again)
    d_true = np.sum((np.asarray(both)[0] - np.asarray(both)[1:]) ** 2, axis=1)
    d_proj = np.sum((np.asarray(full)[0] - np.asarray(full)[1:]) ** 2, axis=1)
    np.testing.assert_allclose(d_proj, d_true, rtol=0.2)


def test_pool_as_pytree_and_explicit_features_fn():
    def apply_fn(p, x):
        return jnp.concatenate([x["a"], x["b"]], axis=1) @ p

    params = jax.random.normal(jax.random.key(0), (5, 3))
    pool = {"a": jnp.ones((7, 2)), "b": jnp.arange(21.0).reshape(7, 3)}
    emb = aljax.last_layer_embedding(params, apply_fn, pool, batch_size=3)
    np.testing.assert_allclose(emb.h, np.concatenate([pool["a"], pool["b"]], axis=1))
    emb2 = aljax.last_layer_embedding(params, apply_fn, pool,
                                      features_fn=lambda p, x: jnp.concatenate([x["a"], x["b"]], axis=1))
    np.testing.assert_array_equal(emb.h, emb2.h)


@pytest.mark.parametrize("bad_head", [
    lambda p, x: 2.0 * (x @ p),                  # scaled after the dense layer
    lambda p, x: jnp.tanh(x @ p),                # non-linearity on top
    lambda p, x: jax.nn.log_softmax(x @ p),      # log-probabilities
    lambda p, x: x[:, :3] * p[0, :3],            # no dense layer at all
])
def test_non_dense_output_raises_and_points_to_features_fn(bad_head):
    params = jnp.ones((5, 3))
    with pytest.raises(ValueError, match=r"aljax\.badge: cannot find the last dense layer.*features_fn"):
        aljax.badge(params, bad_head, jnp.ones((10, 5)), 2)
    # ... and works when the user names the features.
    idx = aljax.badge(params, bad_head, jnp.ones((10, 5)), 2, features_fn=lambda p, x: x)
    assert idx.shape == (2,)


def test_x64_inputs_give_float64_embeddings_and_int32_picks():
    with jax.enable_x64(True):
        params, apply_fn, *_ = MODEL_KINDS["plain"](jax.random.key(0))
        params = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), params)
        x = jnp.asarray(np.random.default_rng(0).normal(size=(30, 6)))
        emb = aljax.last_layer_embedding(params, apply_fn, x)
        assert emb.h.dtype == jnp.float64
        idx = aljax.badge(params, apply_fn, x, 5)
        assert idx.dtype == jnp.int32


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16, np.float64])
@pytest.mark.parametrize("where", ["numpy", "jax"])
def test_small_softmax_and_residual_in_numpy_equal_the_jitted_ones(dtype, where, monkeypatch):
    """Small logits get their softmax and hallucinated residual in NumPy (no compilation per pool
    size): the jitted values (within a few ulps of the dtype; bfloat16's jitted softmax runs in
    bfloat16), the same dtype and device, the argmax ties to the lowest class."""
    from aljax import _embeddings

    rng = np.random.default_rng(2)
    with jax.enable_x64(dtype == np.float64):
        logits = np.asarray(rng.normal(size=(11, 5)) * 4).astype(dtype)
        logits[3] = [1.0, 2.0, 2.0, 0.0, -1.0]                            # a tie: class 1
        logits = logits if where == "numpy" else jax.device_put(jnp.asarray(logits), jax.devices()[-1])
        host = _embeddings.softmax(logits), _embeddings.hallucinated_residual(logits)
        monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", 0)
        jitted = _embeddings.softmax(logits), _embeddings.hallucinated_residual(logits)
    tol = {np.float64: 1e-14, np.float32: 1e-6}.get(dtype, 1e-2)
    for x, y in zip(host, jitted):
        assert isinstance(x, jax.Array) and x.dtype == y.dtype and x.shape == y.shape
        assert x.sharding.device_set == y.sharding.device_set
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=tol, atol=tol)
    assert np.argmin(np.asarray(host[1][3], np.float64)) == 1
    if where == "jax":
        assert host[0].sharding.device_set == {jax.devices()[-1]}
