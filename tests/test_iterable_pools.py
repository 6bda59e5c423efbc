"""Every front door takes the pool as an iterable of batches (pools larger than memory): the
same picks as the array, whatever the batch sizes; read once; the raw batches are not kept."""

from __future__ import annotations

import gc
import weakref

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import aljax
from tests.models import plain_mlp

PARAMS, APPLY, FEATURES, _, SHAPE = plain_mlp(jax.random.key(0))
POOL = np.asarray(jax.random.normal(jax.random.key(1), (300,) + SHAPE), np.float32)
LABELED = POOL[:20] + 0.5


def batches(x, sizes):
    """A one-shot generator over ``x`` cut at the given batch sizes (the rest in one batch)."""
    start = 0
    for size in sizes:
        if start >= len(x):
            break
        yield x[start:start + size]
        start += size
    if start < len(x):
        yield x[start:]


SELECTORS = {
    "badge": lambda pool, k: aljax.badge(PARAMS, APPLY, pool, k, key=3, batch_size=64),
    "bait": lambda pool, k: aljax.bait(PARAMS, APPLY, pool, k, labeled=LABELED, batch_size=64),
    "bait_regression": lambda pool, k: aljax.bait(PARAMS, lambda p, x: FEATURES(p, x) @ p["w2"][:, :2], pool, k,
                                                  problem_type="regression", features_fn=FEATURES, batch_size=64),
    "coreset": lambda pool, k: aljax.coreset(PARAMS, APPLY, pool, k, labeled=LABELED, batch_size=64),
    "margin": lambda pool, k: aljax.margin(PARAMS, APPLY, pool, k, batch_size=64),
    "entropy": lambda pool, k: aljax.entropy(PARAMS, APPLY, pool, k, batch_size=64),
    "least_confidence": lambda pool, k: aljax.least_confidence(PARAMS, APPLY, pool, k, batch_size=64),
    "random_sample": lambda pool, k: aljax.random_sample(PARAMS, APPLY, pool, k, key=5),
    "bald": lambda pool, k: aljax.bald(PARAMS, lambda p, x, key: APPLY(p, x * jax.random.bernoulli(key, 0.7, x.shape)),
                                       pool, k, key=2, mc_samples=4, batch_size=64),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "bald" else n for n in sorted(SELECTORS)])
def test_iterable_pool_gives_the_array_picks(name):
    select = SELECTORS[name]
    expected = np.asarray(select(POOL, 12))
    got = np.asarray(select(batches(POOL, [7, 100, 1, 64, 50]), 12))
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int32
    # Batches with no rows (e.g. the tail of np.array_split) are skipped, wherever they come.
    with_empty = np.asarray(select(iter(np.array_split(POOL[:150], 3) + [POOL[:0]] + np.array_split(POOL[150:], 160)),
                                   12))
    np.testing.assert_array_equal(with_empty, expected)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 90), min_size=1, max_size=8), batch_size=st.sampled_from([7, 64, 130]))
def test_embeddings_do_not_depend_on_batch_boundaries(sizes, batch_size):
    ref = aljax.last_layer_embedding(PARAMS, APPLY, POOL, batch_size=batch_size)
    got = aljax.last_layer_embedding(PARAMS, APPLY, batches(POOL, sizes), batch_size=batch_size)
    np.testing.assert_allclose(got.a, ref.a, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.h, ref.h, rtol=1e-6, atol=1e-6)
    fisher = aljax.fisher_embedding(PARAMS, APPLY, batches(POOL, sizes), batch_size=batch_size)
    np.testing.assert_allclose(fisher.probs, jax.nn.softmax(APPLY(PARAMS, POOL)), rtol=1e-5, atol=1e-6)


def test_gradient_embedding_and_pytree_batches():
    ref = aljax.gradient_embedding(PARAMS, APPLY, POOL, batch_size=50)
    got = aljax.gradient_embedding(PARAMS, APPLY, batches(POOL, [33, 33]), batch_size=50)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    # Batches may be pytrees of arrays (here a dict), like array pools.
    apply_dict = lambda p, x: APPLY(p, x["x"])  # noqa: E731
    ref = aljax.margin(PARAMS, apply_dict, {"x": POOL}, 9)
    got = aljax.margin(PARAMS, apply_dict, ({"x": b} for b in batches(POOL, [120, 90])), 9)
    np.testing.assert_array_equal(got, ref)


def test_mappings_are_pytrees_not_batch_streams():
    from flax.core import FrozenDict

    apply_dict = lambda p, x: APPLY(p, x["x"])  # noqa: E731
    np.testing.assert_array_equal(aljax.margin(PARAMS, apply_dict, FrozenDict({"x": POOL}), 9),
                                  aljax.margin(PARAMS, apply_dict, {"x": POOL}, 9))


def test_re_iterable_loader_and_sampler():
    class Loader:  # a data-loader-like object: each iter() starts a new pass
        def __iter__(self):
            return batches(POOL, [40] * 10)

    expected = aljax.badge(PARAMS, APPLY, POOL, 10, key=1)
    np.testing.assert_array_equal(aljax.badge(PARAMS, APPLY, Loader(), 10, key=1), expected)
    sampler = aljax.ActiveSampler("classification", (PARAMS, APPLY), 10, strategy="margin")
    np.testing.assert_array_equal(sampler.select(Loader()), aljax.margin(PARAMS, APPLY, POOL, 10))


def test_raw_batches_are_not_kept():
    """The pass holds the compact outputs only: a batch is garbage once the next ones are read."""
    alive = []

    def tracked():
        for i, batch in enumerate(batches(POOL, [30] * 10)):
            if i >= 3:
                gc.collect()
                assert alive[i - 3]() is None, f"batch {i - 3} still referenced while reading batch {i}"
            batch = batch.copy()
            alive.append(weakref.ref(batch))
            yield batch

    aljax.badge(PARAMS, APPLY, tracked(), 5, batch_size=16)
    assert len(alive) == 10  # read once, every batch


def test_small_chunk_outputs_are_assembled_in_numpy_as_the_jitted_concatenation(monkeypatch):
    """Chunk outputs of a small pool are joined in NumPy (no compilation per pool size): the
    values, dtypes and devices of the jitted concatenation, cut to ``n`` rows."""
    import jax.numpy as jnp

    from aljax import _pool

    device = jax.devices()[-1]
    outs = [dict(a=jnp.arange(8 * i, 8 * i + 8, dtype=jnp.float32).reshape(4, 2),
                 b=jax.device_put(jnp.arange(4, dtype=jnp.bfloat16) + i, device),
                 c=np.full((4, 3), i, np.int32)) for i in range(3)]
    host = _pool.assemble(outs, 10)
    monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", 0)
    jitted = _pool.assemble(outs, 10)
    for name in "abc":
        x, y = host[name], jitted[name]
        assert isinstance(x, jax.Array) and x.shape == y.shape == (10,) + outs[0][name].shape[1:]
        assert x.dtype == y.dtype and x.sharding.device_set == y.sharding.device_set
        assert np.array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))
        np.testing.assert_array_equal(np.asarray(x, np.float64),
                                      np.concatenate([np.asarray(o[name], np.float64) for o in outs])[:10])
    assert host["b"].sharding.device_set == {device}


@pytest.mark.parametrize("pad", ["repeat", "zeros"])
def test_small_stream_chunks_are_joined_and_padded_in_numpy_as_on_the_device(pad, monkeypatch, caplog):
    """Batches regrouped into chunks of 8 rows: joined and the last chunk padded in NumPy for small
    batches (no compilation per length), the same values, dtypes and counts as with the jnp
    operations; a second stream of other lengths compiles nothing."""
    import logging

    from aljax import _pool

    rng = np.random.default_rng(1)
    batches = [dict(x=rng.normal(size=(n, 3)).astype(np.float32), y=np.arange(n, dtype=np.int32)) for n in (5, 6, 2)]
    host = list(_pool.stream_chunks(iter(batches), 8, pad=pad))
    shorter = [jax.device_put(dict(x=b["x"][:-1], y=b["y"][:-1])) for b in batches]   # (jax batches: not staged)
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        caplog.clear()
        list(_pool.stream_chunks(iter(shorter), 8, pad=pad))
    assert not [r.getMessage() for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
    monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", 0)
    device = list(_pool.stream_chunks(iter(batches), 8, pad=pad))
    assert [n for _, n in host] == [n for _, n in device] == [8, 5]
    everything = {k: np.concatenate([b[k] for b in batches]) for k in "xy"}
    for (a, _), (b, _), start in zip(host, device, (0, 8)):
        for k in "xy":
            assert isinstance(a[k], jax.Array) and a[k].dtype == b[k].dtype and a[k].shape == (8,) + b[k].shape[1:]
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
            np.testing.assert_array_equal(np.asarray(a[k])[:13 - start], everything[k][start:start + 8])
    tail = np.asarray(host[1][0]["x"])[5:]
    np.testing.assert_array_equal(tail, np.repeat(everything["x"][-1:], 3, 0) if pad == "repeat" else 0 * tail)
