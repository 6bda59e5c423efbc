"""Sharded BAIT checks, run in a subprocess with 8 host devices (see tests/test_sharding_bait.py).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_sharded_bait_checks.py [--x64] [--only=a,b]

Every check compares a pool sharded along its example axis against the same pool on one device
(whose picks tests/test_bait.py pins against a dense NumPy reference). Prints one JSON object:
``{check name: "ok" or the failure}``.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback

import jax

if "--x64" in sys.argv:
    jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import aljax  # noqa: E402
from aljax import _sharding  # noqa: E402
from aljax._bait import _kernel, _plan, _sharded  # noqa: E402

DTYPE = np.float64 if "--x64" in sys.argv else np.float32
DEVICES = jax.devices()
assert len(DEVICES) == 8, f"expected 8 host devices, got {len(DEVICES)} (XLA_FLAGS not set?)"
MESH = jax.make_mesh((8,), ("data",))                            # Explicit axis types (JAX's default)
AUTO_MESH = Mesh(np.array(DEVICES), ("data",))                   # Auto axis types
GRID = Mesh(np.array(DEVICES).reshape(4, 2), ("rows", "model"))  # a 2-D mesh

# Count the calls of the sharded kernel, to know that a sharded input really took that path.
_calls = {"sharded": 0}
_sharded_kernel = _sharded.sharded_kernel


def _counting_kernel(*args, **kwargs):
    _calls["sharded"] += 1
    return _sharded_kernel(*args, **kwargs)


_sharded.sharded_kernel = _counting_kernel


def shard(x, mesh=MESH, axes="data"):
    return jax.device_put(x, NamedSharding(mesh, P(axes)))


def shard_factors(emb, mesh=MESH, axes="data"):
    return aljax.FisherFactors(shard(emb.probs, mesh, axes), shard(emb.h, mesh, axes))


def factors(n, c, dim, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    h = rng.normal(size=(n, dim))
    return aljax.FisherFactors(jnp.asarray(probs, DTYPE), jnp.asarray(h, DTYPE))


def dense_rows(n, r, d, seed):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, r, d)) / np.sqrt(d), DTYPE)


def same_picks(unsharded, sharded, k):
    """Sharded picks equal the one-device picks (same points, same order), and the sharded call
    ran the shard_map kernel."""
    before = _calls["sharded"]
    want = np.asarray(unsharded())
    got = np.asarray(sharded())
    assert _calls["sharded"] == before + 1, "the sharded input did not take the sharded kernel"
    assert got.dtype == np.int32 and got.shape == (k,), (got.dtype, got.shape)
    assert len(set(got.tolist())) == k, got
    assert np.array_equal(got, want), f"sharded {got.tolist()} != one device {want.tolist()}"


# ------------------------------------------------------------------------------------------------
# The checks. Each returns None or raises.


# Most checks share one problem size (n = 128, C = 3, D = 4, k = 5), so that the kernels compile
# once for all of them.
N, C, D, K = 8 * 16, 3, 4, 5


def check_factors():
    for seed, c, dim, k, oversample in ((0, C, D, K, 2.0), (1, 10, 3, 6, 1.5)):
        emb = factors(N, c, dim, seed=seed)
        same_picks(lambda: aljax.fisher_greedy(emb, k, oversample=oversample),
                   lambda: aljax.fisher_greedy(shard_factors(emb), k, oversample=oversample), k)


def check_factors_labeled():
    emb, lab = factors(N, C, D, seed=1), factors(16, C, D, seed=2)
    run = lambda pool, labeled: aljax.fisher_greedy(pool, K, labeled=labeled, lamb=0.5)  # noqa: E731
    same_picks(lambda: run(emb, lab), lambda: run(shard_factors(emb), lab), K)                  # uncommitted
    same_picks(lambda: run(emb, lab), lambda: run(shard_factors(emb), shard_factors(lab)), K)   # sharded
    replicated = aljax.FisherFactors(*(jax.device_put(x, NamedSharding(MESH, P())) for x in (lab.probs, lab.h)))
    same_picks(lambda: run(emb, lab), lambda: run(shard_factors(emb), replicated), K)           # replicated


def check_sum_zero_columns():
    """Wide softmax heads run on the (C−1)·D sum-zero columns (``REDUCE_MIN_DIM``, lowered here to
    a small head, of a size no other check uses: a fresh trace): sharded pool and labeled set, the
    one-device picks."""
    emb, lab = factors(8 * 17, 4, 5, seed=3), factors(16, 4, 5, seed=4)
    run = lambda pool, labeled: aljax.fisher_greedy(pool, K, labeled=labeled, lamb=0.5)  # noqa: E731
    before, _kernel.REDUCE_MIN_DIM = _kernel.REDUCE_MIN_DIM, 0
    try:
        same_picks(lambda: run(emb, None), lambda: run(shard_factors(emb), None), K)
        same_picks(lambda: run(emb, lab), lambda: run(shard_factors(emb), shard_factors(lab)), K)
    finally:
        _kernel.REDUCE_MIN_DIM = before


def check_dense():
    x, lab = dense_rows(N, 2, 12, seed=3), dense_rows(8, 2, 12, seed=4)
    same_picks(lambda: aljax.fisher_greedy(x, K, labeled=lab),
               lambda: aljax.fisher_greedy(shard(x), K, labeled=shard(lab)), K)
    same_picks(lambda: aljax.fisher_greedy(x, K, labeled=lab, damping="relative"),
               lambda: aljax.fisher_greedy(shard(x), K, labeled=shard(lab), damping="relative"), K)


def check_other_meshes():
    emb = factors(N, C, D, seed=5)
    want = lambda: aljax.fisher_greedy(emb, K)  # noqa: E731
    same_picks(want, lambda: aljax.fisher_greedy(shard_factors(emb, AUTO_MESH), K), K)
    same_picks(want, lambda: aljax.fisher_greedy(shard_factors(emb, GRID, ("rows", "model")), K), K)


def check_exhausted_shards():
    # 4 points per shard and 30 forward steps: most shards run out of candidates mid-way.
    emb = factors(8 * 4, 3, 5, seed=6)
    same_picks(lambda: aljax.fisher_greedy(emb, 20, oversample=1.5),
               lambda: aljax.fisher_greedy(shard_factors(emb), 20, oversample=1.5), 20)


def check_zero_fisher_ties():
    # Fully confident predictions: every gain is 0. Ties go to the lowest index (forward: picks
    # 0..9, across shards) and the earliest pick (backward: drops 0..4), on both paths.
    probs = jnp.asarray(np.eye(C)[np.arange(N) % C], DTYPE)
    emb = aljax.FisherFactors(probs, jnp.ones((N, D), DTYPE))
    same_picks(lambda: aljax.fisher_greedy(emb, K), lambda: aljax.fisher_greedy(shard_factors(emb), K), K)
    assert np.array_equal(np.asarray(aljax.fisher_greedy(shard_factors(emb), K)), np.arange(K, 2 * K))


def check_under_user_jit():
    # Under a caller's jit, Explicit mesh axes are visible in the traced types (the shard_map
    # kernel runs); Auto axes are not (XLA partitions the one-device kernel).
    emb, lab = factors(N, C, D, seed=7), factors(16, C, D, seed=8)
    select = jax.jit(lambda e, lab: aljax.fisher_greedy(e, K, labeled=lab))
    want = np.asarray(aljax.fisher_greedy(emb, K, labeled=lab))
    for mesh, labeled, sharded_kernel in ((MESH, shard_factors(lab), True), (MESH, lab, True), (AUTO_MESH, lab, False)):
        before = _calls["sharded"]
        got = np.asarray(select(shard_factors(emb, mesh), labeled))
        assert (_calls["sharded"] > before) == sharded_kernel, mesh
        assert np.array_equal(got, want), (got, want)


def _model(seed):
    rng = np.random.default_rng(seed)
    params = (jnp.asarray(rng.normal(size=(5, 12)) / 2, DTYPE), jnp.asarray(rng.normal(size=(12, 4)), DTYPE))
    return params, lambda p, x: jnp.tanh(x @ p[0]) @ p[1]  # a plain function; last op a dense layer


def check_bait():
    params, apply_fn = _model(8)
    rng = np.random.default_rng(9)
    pool, lab = (jnp.asarray(rng.normal(size=(m, 5)), DTYPE) for m in (8 * 30, 16))
    run = lambda pool, labeled: aljax.bait(params, apply_fn, pool, 9, labeled=labeled, batch_size=16)  # noqa: E731
    same_picks(lambda: run(pool, lab), lambda: run(shard(pool, AUTO_MESH), lab), 9)
    same_picks(lambda: run(pool, lab), lambda: run(shard(pool, AUTO_MESH), shard(lab, AUTO_MESH)), 9)


def check_bait_regression():
    params, apply_fn = _model(10)
    pool = jnp.asarray(np.random.default_rng(11).normal(size=(8 * 30, 5)), DTYPE)
    for weights in (params, (params[0], params[1][:, 0])):  # (batch, m) and (batch,) outputs
        run = lambda pool: aljax.bait(weights, apply_fn, pool, 8, problem_type="regression")  # noqa: E731
        same_picks(lambda: run(pool), lambda: run(shard(pool, AUTO_MESH)), 8)


_COLLECTIVE = re.compile(r"=\s*(\(.*?\)|\S+)\s+(all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)"
                         r"(?:-start)?\(")


def collectives(embedding, k, labeled=None):
    """``[(op, number of elements)]`` of every collective in the compiled sharded kernel."""
    layout = _sharding.row_layout("fisher_greedy", "embedding", embedding)
    lab_layout = None if labeled is None else _sharding.row_layout("fisher_greedy", "labeled", labeled)
    rows = _plan.as_rows("fisher_greedy", "embedding", embedding)
    lab_rows = None if labeled is None else _plan.as_rows("fisher_greedy", "labeled", labeled)
    kernel, args, static = _plan.plan("fisher_greedy", rows, lab_rows, k, 1.0, 2.0, layout, lab_layout)
    assert kernel is _counting_kernel
    text = _sharded_kernel.lower(*args, **static).compile().as_text()
    found = []
    for match in _COLLECTIVE.finditer(text):
        shapes = re.findall(r"[a-z]+\d*\[([\d,]*)\]", match.group(1))
        for dims in shapes:
            found.append((match.group(2), int(np.prod([int(s) for s in dims.split(",") if s]))))
    return found


def check_hlo_sharded():
    # 400 points per device, d = C·D = 12: any all-gather (or other collective) of a pool-sized
    # array would carry at least 400 numbers; what BAIT sends is smaller (d² = 144, and the
    # n_forward = 10 picked points' dense rows, 10·2·12 = 240, before the backward pass).
    n_local = 400
    for pool, lab in ((shard_factors(factors(8 * n_local, 3, 4, seed=12)), shard_factors(factors(8 * 3, 3, 4, 13))),
                      (shard(dense_rows(8 * n_local, 2, 12, seed=14)), None)):
        found = collectives(pool, 5, lab)
        ops = {op for op, _ in found}
        assert {"all-gather", "all-reduce"} <= ops, f"not partitioned as expected: {found}"
        assert ("all-gather", 8) in found, found          # each shard's best gain / index, per step
        too_big = [(op, size) for op, size in found if size >= n_local]
        assert not too_big, f"pool-sized collectives in the sharded kernel: {too_big}"


def check_bad_input():
    emb = factors(8 * 8, 3, 4, seed=15)

    def raises(fn, *words):
        try:
            fn()
        except ValueError as err:
            for word in words:
                assert word in str(err), f"{word!r} not in {err}"
            return
        raise AssertionError("no ValueError")

    mixed = aljax.FisherFactors(shard(emb.probs), emb.h)  # probs sharded, h on one device
    raises(lambda: aljax.fisher_greedy(mixed, 3), "aljax.fisher_greedy", "`embedding`", "leaf 1")
    grid = shard_factors(emb, GRID, "rows")
    lab_other_axis = shard_factors(factors(8, 3, 4, seed=16), GRID, "model")
    raises(lambda: aljax.fisher_greedy(grid, 3, labeled=lab_other_axis),
           "aljax.fisher_greedy", "`labeled`", "sharded like the pool")
    mixed_lab = aljax.FisherFactors(shard(emb.probs[:8]), emb.h[:8])
    raises(lambda: aljax.fisher_greedy(shard_factors(emb), 3, labeled=mixed_lab),
           "aljax.fisher_greedy", "`labeled`")
    # A pool that the mesh does not divide cannot even be built (JAX refuses it).
    try:
        shard(emb.probs[:63])
    except ValueError:
        pass
    else:
        raise AssertionError("JAX built an unevenly sharded array")


CHECKS = {name[len("check_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("check_")}
X64_CHECKS = ("factors_labeled", "dense")


def main():
    names = X64_CHECKS if "--x64" in sys.argv else tuple(CHECKS)
    only = [arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--only=")]
    if only:
        names = tuple(only[-1].split(","))
    results = {}
    for name in names:
        try:
            start = time.perf_counter()
            CHECKS[name]()
            results[name] = "ok"
            print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it
            results[name] = traceback.format_exc(limit=4)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
