"""BAIT (Ash et al., NeurIPS 2021): the structured fast path against a slow dense NumPy reference.

Compilation dominates this file's run time, so the tests share a handful of problem shapes.
"""

import functools
import math
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aljax
from aljax import _linalg, _padding
from aljax._bait import _blocks, _kernel, _lazy, _picks_space, _plan, _rows
from models import MODEL_KINDS

# ---------------------------------------------------------------- the dense reference


def reference_bait(pool_rows, labeled_rows, k, lamb=1.0, oversample=2.0):
    """The procedure of the issue, straight from its formulas, in float64 with explicit inverses.

    ``pool_rows``: ``(n, r, d)`` rows ``X_i``; ``labeled_rows``: ``(n_L, r, d)`` or None.
    """
    x = np.asarray(pool_rows, np.float64)
    n, r, d = x.shape
    lab = np.zeros((0, r, d)) if labeled_rows is None else np.asarray(labeled_rows, np.float64)
    n_lab = len(lab)
    everything = np.concatenate([x, lab])
    fisher = sum(v.T @ v for v in everything) / len(everything)
    fisher_lab = sum(v.T @ v for v in lab) / n_lab if n_lab else np.zeros((d, d))
    m = lamb * np.eye(d) + fisher_lab * n_lab / (n_lab + k)
    x = x * np.sqrt(k / (n_lab + k))
    picks = []
    for _ in range(min(math.ceil(oversample * k), n)):
        m_inv = np.linalg.inv(m)
        gains = np.array([np.trace(xi @ m_inv @ fisher @ m_inv @ xi.T @ np.linalg.inv(np.eye(r) + xi @ m_inv @ xi.T))
                          for xi in x])
        gains[picks] = -np.inf
        best = int(np.argmax(gains))
        picks.append(best)
        m = m + x[best].T @ x[best]
    while len(picks) > k:
        # The objective after removing each pick; drop the one that raises it least.
        after = [np.trace(np.linalg.inv(m - x[j].T @ x[j]) @ fisher) for j in picks]
        drop = picks[int(np.argmin(after))]
        picks.remove(drop)
        m = m - x[drop].T @ x[drop]
    return picks


def dense_fisher_rows(probs, h):
    """``V_i = S_i ⊗ h_iᵀ`` with ``S_i = diag(√p)(I − 1pᵀ)``, built naively in NumPy."""
    probs, h = np.asarray(probs, np.float64), np.asarray(h, np.float64)
    c = probs.shape[1]
    return np.stack([np.kron(np.diag(np.sqrt(p)) @ (np.eye(c) - np.outer(np.ones(c), p)), hi[None, :])
                     for p, hi in zip(probs, h)])


def reference_picks(pool, labeled, k, **kwargs):
    """:func:`reference_bait` on the dense rows of :class:`aljax.FisherFactors` ``pool`` and
    ``labeled`` (or None)."""
    lab_rows = None if labeled is None else dense_fisher_rows(labeled.probs, labeled.h)
    return reference_bait(dense_fisher_rows(pool.probs, pool.h), lab_rows, k, **kwargs)


def random_factors(seed, n, c, dim, dtype=np.float64, temperature=1.5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * temperature
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    h = rng.normal(size=(n, dim))
    return aljax.FisherFactors(jnp.asarray(probs, dtype), jnp.asarray(h, dtype))


# (C, n, D, n_labeled, k, oversample): C ∈ {2, 3, 10}, with and without labels, oversample ∈ {1, 2},
# and one where ⌈oversample·k⌉ exceeds the pool (the forward pass stops at n).
CASES = [
    (2, 20, 5, 0, 4, 2.0),
    (3, 20, 4, 6, 4, 1.0),
    (10, 20, 3, 6, 4, 2.0),
    (3, 20, 4, 0, 4, 2.0),
    (3, 9, 4, 3, 6, 2.0),
]


PARITY = [(case, "factors") for case in CASES] + [(CASES[0], "dense"), (CASES[2], "dense")]
# C = 10 compiles longest: the slow tier's.
PARITY = [pytest.param(case, kind, id=f"{kind}-C{case[0]}-lab{case[3]}-over{case[5]:g}-k{case[4]}",
                       marks=[pytest.mark.slow] if case[0] == 10 else [])
          for case, kind in PARITY]


@pytest.mark.parametrize("case, kind", PARITY)
def test_same_picks_as_dense_reference_float64(case, kind):
    c, n, dim, n_lab, k, oversample = case
    with jax.enable_x64(True):
        for seed in range(2):
            emb = random_factors(seed, n + n_lab, c, dim)
            pool, lab = emb[:n], (emb[n:] if n_lab else None)
            expected = reference_picks(pool, lab, k, oversample=oversample)
            if kind == "dense":
                pool, lab = pool.to_dense(), (None if lab is None else lab.to_dense())
            got = aljax.fisher_greedy(pool, k, labeled=lab, oversample=oversample)
            assert got.dtype == jnp.int32
            np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("kind", ["factors", pytest.param("dense", marks=pytest.mark.slow)])
def test_chunked_pool_with_padding_matches_reference(kind):
    """Pool split in chunks of 7 (the last one padded): same picks."""
    with jax.enable_x64(True):
        emb = random_factors(5, 26, 3, 4)
        pool, lab = emb[:20], emb[20:]
        expected = reference_picks(pool, lab, 4, lamb=0.5)
        if kind == "factors":
            rows, lab_rows = _rows.from_fisher_factors(pool), _rows.from_fisher_factors(lab)
        else:
            rows, lab_rows = pool.to_dense(), lab.to_dense()
        got = _kernel.kernel(rows, lab_rows, 0.5, k=4, n_forward=8, chunk=7)
        np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("labeled", [False, True])
def test_unrolled_forms_of_large_pools_keep_the_reference_picks(monkeypatch, labeled):
    """Large pools' forward steps use the unrolled block algebra (packed triangles), small ones the
    loop forms: both pick as the reference. (A pool size no other test uses: a fresh compilation.)"""
    monkeypatch.setattr(_kernel, "UNROLL_MIN_POINTS", 0)
    with jax.enable_x64(True):
        emb = random_factors(11, 23 + 5, 3, 4)
        pool, lab = emb[:23], (emb[23:] if labeled else None)
        expected = reference_picks(pool, lab, 4)
        rows = _rows.from_fisher_factors(pool)
        lab_rows = None if lab is None else _rows.from_fisher_factors(lab)
        got = _kernel.kernel(rows, lab_rows, 1.0, k=4, n_forward=8, chunk=23)
        np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("labeled", [False, True])
@pytest.mark.parametrize("one_loop", [False, True])
def test_one_loop_and_two_loops_keep_the_reference_picks(monkeypatch, labeled, one_loop):
    """Small pools run both passes in one loop (its step compiled once; the backward steps then
    correct the whole pool's blocks), larger ones a forward and a backward loop: both pick as the
    reference, with the exact refresh of the blocks at every step too. (Pool sizes no other test
    uses, one per path: fresh compilations.)"""
    monkeypatch.setattr(_kernel, "ONE_LOOP_MAX_WORK", 1 << 30 if one_loop else 0)
    n = 31 if one_loop else 29
    with jax.enable_x64(True):
        emb = random_factors(13 + labeled, n + 6, 3, 4)
        pool, lab = emb[:n], (emb[n:] if labeled else None)
        expected = reference_picks(pool, lab, 5, lamb=0.7)
        rows = _rows.from_fisher_factors(pool)
        lab_rows = None if lab is None else _rows.from_fisher_factors(lab)
        nc, b = -(-n // 8), 8
        assert _kernel.one_loop(_kernel.LOCAL, 3, nc, b, 11, 5) == one_loop
        got = _kernel.kernel(rows, lab_rows, 0.7, k=5, n_forward=11, chunk=8)
        np.testing.assert_array_equal(np.asarray(got), expected)
        monkeypatch.setattr(_kernel, "REFRESH_TOL", 0.0)
        eager = jax.jit(_kernel.forward_backward, static_argnames=("k", "n_forward", "chunk"))
        got = eager(rows, lab_rows, 0.7, k=5, n_forward=11, chunk=8)
        np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("seed", range(3))
def test_float32_picks_match_float64_reference(seed):
    emb = random_factors(seed, 20, 3, 4, dtype=np.float32)
    expected = reference_bait(dense_fisher_rows(emb.probs, emb.h), None, 4)
    np.testing.assert_array_equal(np.asarray(aljax.fisher_greedy(emb, 4)), expected)


def _objective(emb, picks, lamb):
    """``tr((λI + Σ_S X_iᵀX_i)⁻¹ F)`` in float64 from the dense rows (no labeled set)."""
    x = dense_fisher_rows(emb.probs, emb.h)
    fisher = np.einsum("nri,nrj->ij", x, x) / len(x)
    m = lamb * np.eye(x.shape[2]) + np.einsum("nri,nrj->ij", x[picks], x[picks])
    return np.trace(np.linalg.solve(m, fisher))


# λ tiny against ‖X_i‖² (directly, or through large features), and k·(C − 1) = 180 > C·D = 160:
# the rank-r corrections of the blocks cancel them by many orders of magnitude.
ILL_CONDITIONED = [(1e-4, 1.0, 20, 2.0), (1.0, 100.0, 20, 2.0), (1e-2, 10.0, 20, 2.0), (1e-2, 10.0, 40, 1.0)]


def _force_window(monkeypatch):
    """The window rebuilds of large pools (``refresh_window``) on every pool, in the forward loop
    that uses them (not the one loop of small pools), through a freshly traced kernel (a jitted
    function's trace is cached by its identity and shapes)."""
    monkeypatch.setattr(_kernel, "WINDOW_MIN_POINTS", 0)
    monkeypatch.setattr(_kernel, "ONE_LOOP_MAX_WORK", 0)
    monkeypatch.setattr(_plan, "kernel", jax.jit(lambda *args, **kw: _kernel.forward_backward(*args, **kw),
                                                 static_argnames=("k", "n_forward", "chunk")))


@pytest.mark.parametrize("window", [False, True])
def test_float32_keeps_the_reference_picks_when_lambda_is_small(monkeypatch, window):
    """A small ill-conditioned case: λ = 1e-4 and k·(C − 1) = 16 > C·D = 12. Without the exact
    refresh of the blocks, float32 leaves the float64 reference's picks here; also with the window
    rebuilds of large pools (``refresh_window``, forced)."""
    if window:
        _force_window(monkeypatch)
    with jax.enable_x64(True):
        emb = random_factors(3, 20, 3, 4, temperature=2.0)
        probs, h = np.asarray(emb.probs), np.asarray(emb.h)
    expected = reference_bait(dense_fisher_rows(probs, h), None, 8, lamb=1e-4)
    emb32 = aljax.FisherFactors(jnp.asarray(probs, jnp.float32), jnp.asarray(h, jnp.float32))
    np.testing.assert_array_equal(np.asarray(aljax.fisher_greedy(emb32, 8, lamb=1e-4)), expected)


@pytest.mark.slow
@pytest.mark.parametrize("window", [False, True])
@pytest.mark.parametrize("lamb, scale, k, oversample", ILL_CONDITIONED)
def test_float32_matches_float64_when_lambda_is_small(monkeypatch, lamb, scale, k, oversample, window):
    """Float32 must not drift from float64 when λ is small against the Fisher (near-ties may
    legitimately flip a pick, so the objective is compared, and most picks must agree); also with
    the window rebuilds of large pools (``refresh_window``, forced on this pool of 300)."""
    if window:
        _force_window(monkeypatch)
    with jax.enable_x64(True):
        emb = random_factors(3, 300, 10, 16, temperature=2.0)
        emb = aljax.FisherFactors(emb.probs, emb.h * scale)
        assert emb.h.dtype == jnp.float64
        f64 = np.asarray(aljax.fisher_greedy(emb, k, lamb=lamb, oversample=oversample))
        probs, h = np.asarray(emb.probs), np.asarray(emb.h)
    emb32 = aljax.FisherFactors(jnp.asarray(probs, jnp.float32), jnp.asarray(h, jnp.float32))
    f32 = np.asarray(aljax.fisher_greedy(emb32, k, lamb=lamb, oversample=oversample))
    assert len(set(f32.tolist())) == k
    assert len(set(f32.tolist()) & set(f64.tolist())) >= k - 2
    emb = aljax.FisherFactors(probs, h)
    obj32, obj64 = _objective(emb, f32, lamb), _objective(emb, f64, lamb)
    assert obj32 <= obj64 * (1 + 1e-3), (obj32, obj64)


@pytest.mark.slow
def test_exact_refresh_of_the_blocks_keeps_the_reference_picks(monkeypatch):
    """Rebuilding G and H from A at every step (the drift guard at its most eager) changes nothing."""
    monkeypatch.setattr(_kernel, "REFRESH_TOL", 0.0)
    kernel = jax.jit(_kernel.forward_backward, static_argnames=("k", "n_forward", "chunk"))
    with jax.enable_x64(True):
        emb = random_factors(5, 26, 3, 4)
        pool, lab = emb[:20], emb[20:]
        for labeled in (None, lab):
            expected = reference_picks(pool, labeled, 4, lamb=0.5)
            got = kernel(_rows.from_fisher_factors(pool),
                         None if labeled is None else _rows.from_fisher_factors(lab), 0.5, k=4, n_forward=8, chunk=7)
            np.testing.assert_array_equal(np.asarray(got), expected)
            got = kernel(pool.to_dense(), None if labeled is None else lab.to_dense(), 0.5, k=4, n_forward=8, chunk=7)
            np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("labeled", [False, True])
def test_two_class_rows_as_one_row_per_point_keep_the_picks(labeled):
    """``binary_rows``: a two-class softmax head as the single rows √(2p₀p₁)·h_iᵀ (d = D) gives the
    kernel's picks on the full C = 2 rows (d = 2D) and the dense reference's."""
    with jax.enable_x64(True):
        emb = random_factors(21 + labeled, 30, 2, 5)
        pool, lab = emb[:24], (emb[24:] if labeled else None)
        expected = reference_picks(pool, lab, 5, lamb=0.4)
        full = _rows.from_fisher_factors(pool), None if lab is None else _rows.from_fisher_factors(lab)
        assert _rows.is_binary(full[0])
        one = tuple(None if r is None else _rows.binary_rows(r) for r in full)
        assert one[0].s.shape == (24, 1, 1) and not _rows.is_binary(one[0])
        x = np.asarray(one[0].s)[:, 0] * np.asarray(one[0].h)                    # (n, D) single rows
        np.testing.assert_allclose(x.T @ x, np.einsum("nri,nrj->ij", *[dense_fisher_rows(pool.probs, pool.h)] * 2)
                                   .reshape(2, 5, 2, 5)[0, :, 0] * 2, rtol=1e-10)   # = 2·(0,0) block
        for rows in (full, one):
            got = _kernel.kernel(*rows, 0.4, k=5, n_forward=10, chunk=24)
            np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("c", [3, 10])
def test_sum_zero_columns_keep_the_blocks(c):
    """``softmax_basis``: an orthonormal basis of the sum-zero vectors; on the columns ``E = Q ⊗ I``
    (``reduce_rows``, ``reduce_columns``) the blocks ``X_i B X_iᵀ`` are unchanged for ``B`` the Fisher
    sum (in the span) and ``B = (λI + Fisher)⁻¹`` (``λI`` outside it), against dense products."""
    with jax.enable_x64(True):
        q = np.asarray(_rows.softmax_basis(c, jnp.float64))
        np.testing.assert_allclose(q.T @ q, np.eye(c - 1), atol=1e-12)
        np.testing.assert_allclose(np.ones(c) @ q, 0, atol=1e-12)
        dim, n = 3, 7
        emb = random_factors(c, n, c, dim)
        x = dense_fisher_rows(emb.probs, emb.h)                                 # (n, C, C·D)
        e = np.kron(q, np.eye(dim))                                             # (C·D, (C−1)·D)
        gram = np.einsum("nri,nrj->ij", x, x)
        rows = _rows.chunk_kron(emb.s_factor(), emb.h, n)
        reduced = _rows.reduce_rows(rows, jnp.asarray(q))
        one, one_reduced = (jax.tree_util.tree_map(lambda v: v[0], r) for r in (rows, reduced))
        np.testing.assert_allclose(np.asarray(_rows.row(reduced, 2)), x[2] @ e, atol=1e-12)
        for b_mat in (gram, np.linalg.inv(0.3 * np.eye(c * dim) + gram)):
            small = np.asarray(_rows.reduce_columns(jnp.asarray(b_mat), jnp.asarray(q)))
            np.testing.assert_allclose(small, e.T @ b_mat @ e, rtol=1e-10, atol=1e-12)
            got = np.asarray(_rows.quad(one_reduced, jnp.asarray(small)))
            np.testing.assert_allclose(got.transpose(2, 0, 1), x @ b_mat @ x.transpose(0, 2, 1), rtol=1e-9,
                                       atol=1e-11)
            np.testing.assert_allclose(got, np.asarray(_rows.quad(one, jnp.asarray(b_mat))), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("reduce", [False, True])
def test_softmax_rows_on_all_or_sum_zero_columns_keep_the_reference_picks(monkeypatch, reduce):
    """The kernel on C·D columns (``REDUCE_MIN_CLASSES`` out of reach) and on the (C−1)·D sum-zero
    ones (``REDUCE_MIN_DIM`` lowered to these small heads), with a labeled set given as rows and as
    the plan's ``LabeledGram`` (sum and ``A₀``), picks as the reference. (Pool sizes no other test
    uses: fresh compilations.)"""
    monkeypatch.setattr(_kernel, "REDUCE_MIN_CLASSES", 3 if reduce else 1 << 30)
    monkeypatch.setattr(_kernel, "REDUCE_MIN_DIM", 0)
    n = 35 if reduce else 36
    with jax.enable_x64(True):
        emb = random_factors(31 + reduce, n + 7, 4, 3)
        pool, lab = emb[:n], emb[n:]
        expected = reference_picks(pool, lab, 5, lamb=0.8)
        kernel = jax.jit(_kernel.forward_backward, static_argnames=("k", "n_forward", "chunk"))
        lab_rows = _rows.from_fisher_factors(lab)
        gram = _plan._labeled_gram(lab_rows, 0.8, jnp.int32(7), jnp.int32(5), chunk=8, dtype=jnp.float64)
        for labeled, n_lab in ((lab_rows, None), (gram, jnp.int32(7))):
            got = kernel(_rows.from_fisher_factors(pool), labeled, 0.8, k=5, n_forward=10, chunk=8, n_lab_valid=n_lab)
            np.testing.assert_array_equal(np.asarray(got), expected)


def test_factored_rows_are_the_exact_fisher():
    emb = random_factors(0, 5, 3, 4, dtype=np.float32)
    rows = np.asarray(emb.to_dense(), np.float64)
    np.testing.assert_allclose(rows, dense_fisher_rows(emb.probs, emb.h), atol=1e-6)
    p, h = np.asarray(emb.probs, np.float64), np.asarray(emb.h, np.float64)
    for i in range(5):
        exact = np.kron(np.diag(p[i]) - np.outer(p[i], p[i]), np.outer(h[i], h[i]))
        np.testing.assert_allclose(rows[i].T @ rows[i], exact, atol=1e-5)


# ---------------------------------------------------------------- the structured pieces


def _random_spd(rng, d, scale=1.0):
    q = rng.normal(size=(d, d))
    return q @ q.T * scale / d + np.eye(d) * 0.5


@pytest.mark.parametrize("b", [384, 200, 128])
def test_loop_gains_over_blocks_of_points_equal_dense_formulas(b):
    """The loop-form gains ``tr(H (I ± G)⁻¹)`` run over blocks of ``GAINS_BLOCK`` points when
    they divide the stack (384: three blocks; 200 and 128: one pass), against NumPy."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(b)
        r = 5
        w, v = rng.normal(size=(b, r, 7)), rng.normal(size=(b, r, 9))
        g = np.einsum("naj,ncj->nac", w, w) / (2 * 7 * (1 + np.abs(w).max()) ** 2)  # ‖G‖ < 1: I − G SPD
        h = np.einsum("naj,ncj->nac", v, v) / 9
        for sign in (1.0, -1.0):
            got = jax.jit(_blocks.gains, static_argnums=2)(*(jnp.asarray(x.transpose(1, 2, 0)) for x in (g, h)), sign)
            dense = [np.trace(hi @ np.linalg.inv(np.eye(r) + sign * gi)) for gi, hi in zip(g, h)]
            np.testing.assert_allclose(np.asarray(got), dense, rtol=1e-10)


@pytest.mark.parametrize("kind", [pytest.param("factors", marks=pytest.mark.slow), "dense"])
def test_structured_blocks_and_updates_equal_dense_formulas(kind):
    """G_i = X A Xᵀ, H_i = X A F A Xᵀ, the gain tr(H (I ± G)⁻¹), and their rank-r updates after a
    Woodbury step, all against explicit dense products (float64)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        c, dim, n = 3, 4, 9
        emb = random_factors(1, n, c, dim)
        x = dense_fisher_rows(emb.probs, emb.h)
        d = c * dim
        a, fisher = np.linalg.inv(_random_spd(rng, d)), _random_spd(rng, d, 2.0)
        if kind == "factors":
            rows = _rows.chunk_kron(emb.s_factor(), emb.h, n)
        else:
            rows = _rows.chunk_dense(jnp.asarray(x), n)
        chunk = jax.tree_util.tree_map(lambda v: v[0], rows)
        quad = jax.jit(_rows.quad, static_argnums=2)
        g = np.asarray(quad(chunk, jnp.asarray(a), False))
        h = np.asarray(quad(chunk, jnp.asarray(a @ fisher @ a), False))
        if kind == "factors":  # the upper-block path used for large d gives the same blocks
            np.testing.assert_allclose(np.asarray(quad(chunk, jnp.asarray(a), True)), g, rtol=1e-12)
        gains_fn = jax.jit(_blocks.gains, static_argnums=2)
        np.testing.assert_allclose(g.transpose(2, 0, 1), x @ a @ x.transpose(0, 2, 1), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(h.transpose(2, 0, 1), x @ a @ fisher @ a @ x.transpose(0, 2, 1),
                                   rtol=1e-10, atol=1e-12)
        for sign in (1.0, -1.0):
            gains = np.asarray(gains_fn(jnp.asarray(g), jnp.asarray(h), sign))
            r = x.shape[1]
            dense = [np.trace(xi @ a @ fisher @ a @ xi.T @ np.linalg.inv(np.eye(r) + sign * xi @ a @ xi.T)) for xi in x]
            np.testing.assert_allclose(gains, dense, rtol=1e-9)
            if sign > 0:  # the forward steps' unrolled Cholesky form, on packed upper triangles
                packed = [_blocks.pack(jnp.asarray(blocks)) for blocks in (g, h)]
                np.testing.assert_allclose(np.asarray(_blocks.unpack(packed[0], r)), g, rtol=1e-12)
                cholesky = np.asarray(jax.jit(_blocks.forward_gains, static_argnums=2)(*packed, r))
                np.testing.assert_allclose(cholesky, dense, rtol=1e-9)
        # The gain is the decrease of tr(M⁻¹F) when the point is added.
        m = np.linalg.inv(a)
        drops = [np.trace(a @ fisher) - np.trace(np.linalg.inv(m + xi.T @ xi) @ fisher) for xi in x]
        np.testing.assert_allclose(np.asarray(gains_fn(jnp.asarray(g), jnp.asarray(h), 1.0)), drops, rtol=1e-9)
        woodbury = jax.jit(_lazy.woodbury_directions, static_argnums=3)
        update = jax.jit(_kernel.update_chunk, static_argnums=4)
        # One Woodbury step adding point 4, then one removing it again.
        for p, sign in ((4, 1.0), (4, -1.0)):
            # (No pending low-rank term: A is a itself, and A' = A − σ (U L)(U L)ᵀ.)
            directions, ul = woodbury(jnp.asarray(a), jnp.asarray(fisher), _rows.row(rows, p), sign,
                                      jnp.zeros((d, 0)))
            a_new = a - sign * np.asarray(ul) @ np.asarray(ul).T
            expected_a = np.linalg.inv(np.linalg.inv(a) + sign * x[p].T @ x[p])
            np.testing.assert_allclose(np.asarray(a_new), expected_a, rtol=1e-8, atol=1e-10)
            g_new, h_new, dh_norm = update(chunk, jnp.asarray(g), jnp.asarray(h), directions, sign)
            # The forward steps' whole-pool form, on a layout of 3 chunks of 4 (3 padding points).
            # (Factors: with S_i as a matrix, and applied from p_i as diag(√p_i)(I − 1p_iᵀ).)
            if kind == "factors":
                chunked = _rows.chunk_kron(emb.s_factor(), emb.h, 4)
                flats = [_rows.flat_rows(chunked), _rows.flat_rows(chunked, emb.probs)]
            else:
                flats = [_rows.flat_rows(_rows.chunk_dense(jnp.asarray(x), 4))]
            pad = ((0, 0), (0, 0), (0, 3))
            for flat in flats:  # (blocks packed: r = 3)
                g_flat, h_flat, dh_flat = jax.jit(_kernel.update_flat, static_argnums=4)(
                    flat, _blocks.pack(jnp.asarray(np.pad(g, pad))), _blocks.pack(jnp.asarray(np.pad(h, pad))),
                    directions, sign)
                for got, want in zip((_blocks.unpack(g_flat, 3), _blocks.unpack(h_flat, 3), dh_flat),
                                     (g_new, h_new, dh_norm)):
                    np.testing.assert_allclose(np.asarray(got)[..., :n], np.asarray(want), rtol=1e-10, atol=1e-12)
            # The size of the H correction, which drives the exact refresh of the blocks.
            np.testing.assert_allclose(np.linalg.norm(np.asarray(h_new) - h, axis=(0, 1)), np.asarray(dh_norm),
                                       rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(np.asarray(g_new).transpose(2, 0, 1), x @ expected_a @ x.transpose(0, 2, 1),
                                       rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(np.asarray(h_new).transpose(2, 0, 1),
                                       x @ expected_a @ fisher @ expected_a @ x.transpose(0, 2, 1),
                                       rtol=1e-8, atol=1e-10)
            a, g, h = expected_a, np.asarray(g_new), np.asarray(h_new)


@pytest.mark.parametrize("c", [1, 2, 3, 4, 9, 10])
def test_quadratic_forms_over_half_the_class_blocks_equal_dense_products(c):
    """``quad_chunks(..., symmetric=True)`` takes class row ``c``'s blocks ``c .. c + ⌊C/2⌋`` (mod
    ``C``), from ``B``'s upper blocks only: odd and even ``C`` against ``X_i B X_iᵀ`` formed densely."""
    rng = np.random.default_rng(c)
    nc, b, dim, r = 3, 5, 4, c + 1
    s, ht = rng.normal(size=(nc, r, c, b)), rng.normal(size=(nc, dim, b))
    mat = rng.normal(size=(c * dim, c * dim))
    mat = mat + mat.T
    upper = np.triu(np.ones((c, c))).repeat(dim, 0).repeat(dim, 1) * mat   # the lower blocks are never read
    with jax.enable_x64(True):
        rows = _rows.KronChunks(jnp.asarray(s), jnp.asarray(ht))
        got = np.asarray(jax.jit(_rows.quad_chunks, static_argnums=2)(rows, jnp.asarray(upper), True))
    x = np.einsum("kacn,ken->knace", s, ht).reshape(nc, b, r, c * dim)       # X_i = S_i ⊗ h_iᵀ
    want = np.einsum("knad,de,knbe->kabn", x, mat, x)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_fisher_sum_without_outer_products_equals_dense_sum():
    """``gram_kron`` (full, upper class blocks mirrored, and on the sum-zero columns ``EᵀGE``,
    ``E = Q ⊗ I``) and ``gram_dense`` against the sum of dense outer products, on chunks of 3 with
    padding (the upper form: 2 of 7); softmax rows (``w = z = p``) and rows ``diag(√w_i) ⊗ h_iᵀ``
    without a rank-one term."""
    with jax.enable_x64(True):
        emb = random_factors(2, 13, 3, 4)
        x = dense_fisher_rows(emb.probs, emb.h)
        w = np.random.default_rng(3).uniform(0.1, 2.0, size=(13, 3))
        x_diag = np.stack([np.kron(np.diag(np.sqrt(wi)), hi[None, :]) for wi, hi in zip(w, np.asarray(emb.h))])
        q = _rows.softmax_basis(3, jnp.float64)
        e = np.kron(np.asarray(q), np.eye(4))
        for rows, (w_, z_) in ((x, (emb.probs, emb.probs)), (x_diag, (jnp.asarray(w), None))):
            expected = np.einsum("nri,nrj->ij", rows, rows)
            for symmetric in (False, True):
                got = _rows.gram_kron(w_, z_, emb.h, 3, jnp.float64, symmetric)
                np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-12)
                got = _rows.gram_kron(w_, z_, emb.h, 3, jnp.float64, symmetric, basis=q)
                np.testing.assert_allclose(np.asarray(got), e.T @ expected @ e, rtol=1e-10, atol=1e-12)
            dense = _rows.gram_dense(jnp.asarray(rows), 3, jnp.float64)
            np.testing.assert_allclose(np.asarray(dense), expected, rtol=1e-10, atol=1e-12)
            dense = _rows.gram_dense(jnp.asarray(rows), 3, jnp.float64, basis=q)
            np.testing.assert_allclose(np.asarray(dense), e.T @ expected @ e, rtol=1e-10, atol=1e-12)


def test_fisher_sum_on_sum_zero_columns_forms_its_class_weights_a_chunk_at_a_time():
    """The per-point weights ``Qᵀ(diag p_i − p_i p_iᵀ)Q`` are ``(n, C−1, C−1)``: at C = 100 far larger
    than the rows. The compiled Fisher sum's temporaries stay under half of that array (they grew
    with it when it was formed whole: 2.2 GiB at n = 20,000)."""
    n, c, dim = 50_000, 100, 16
    probs, h = jax.ShapeDtypeStruct((n, c), jnp.float32), jax.ShapeDtypeStruct((n, dim), jnp.float32)
    b, q = _plan.chunk_size(n, c * dim, 1), _rows.softmax_basis(c, jnp.float32)
    gram = jax.jit(lambda p, x: _rows.gram_kron(p, p, x, b, jnp.float32, True, basis=q))
    temp = gram.lower(probs, h).compile().memory_analysis().temp_size_in_bytes
    assert temp < n * (c - 1) ** 2 * 4 / 2


def test_quadratic_forms_of_the_fisher_sum_from_feature_products_equal_dense_products():
    """``quad_gram``: X_i (Σ_j X_jᵀX_j) X_iᵀ from the features' inner products (no d × d sum), on
    chunks of 5 with padding, for softmax rows (SᵀS = diag p − ppᵀ) and for rows without the rank-one
    term (SᵀS = diag w); and ``quad`` over the upper class blocks reads only those."""
    with jax.enable_x64(True):
        emb = random_factors(3, 13, 3, 4)
        rng = np.random.default_rng(3)
        w = rng.uniform(0.1, 2.0, size=(13, 3))
        cases = [(emb.s_factor(), emb.probs, emb.probs, dense_fisher_rows(emb.probs, emb.h)),
                 (jnp.asarray(np.stack([np.diag(np.sqrt(wi)) for wi in w])), jnp.asarray(w), None,
                  np.stack([np.kron(np.diag(np.sqrt(wi)), hi[None, :]) for wi, hi in zip(w, np.asarray(emb.h))]))]
        for s, w_, z, x in cases:
            rows = _rows.chunk_kron(s, emb.h, 5)
            got = np.asarray(_rows.quad_gram(rows, w_, z))                   # (nc, r, r, b)
            got = got.transpose(0, 3, 1, 2).reshape(-1, 3, 3)[:13]
            gram = np.einsum("nri,nrj->ij", x, x)
            np.testing.assert_allclose(got, x @ gram @ x.transpose(0, 2, 1), rtol=1e-10, atol=1e-12)
        one = jax.tree_util.tree_map(lambda v: v[0], rows)
        upper = np.triu(np.ones((3, 3))).repeat(4, 0).repeat(4, 1) * gram   # the lower blocks are never read
        np.testing.assert_allclose(np.asarray(_rows.quad(one, jnp.asarray(upper), True)),
                                   np.asarray(_rows.quad(one, jnp.asarray(gram), False)), rtol=1e-10)


@pytest.mark.parametrize("labeled", [False, True])
def test_wide_rows_forms_keep_the_reference_picks(monkeypatch, labeled):
    """Wide heads' forms, forced on small problems: the initial ``H_i`` from the features' inner
    products (``quad_gram``; used without labeled points); then exact rebuilds at every step from
    the upper class blocks of ``A`` and ``A F A``. (Pool sizes no other test uses: fresh
    compilations.)"""
    monkeypatch.setattr(_kernel, "quad_gram_cheaper", lambda *shape: True)
    with jax.enable_x64(True):
        for n, eager in ((33, False), (34, True)):
            if eager:
                monkeypatch.setattr(_rows, "SYMMETRIC_MIN_DIM", 0)
                monkeypatch.setattr(_kernel, "REFRESH_TOL", 0.0)
            emb = random_factors(17 + labeled, n + 5, 3, 4)
            pool, lab = emb[:n], (emb[n:] if labeled else None)
            expected = reference_picks(pool, lab, 5, lamb=0.6)
            kernel = jax.jit(_kernel.forward_backward, static_argnames=("k", "n_forward", "chunk"))
            got = kernel(_rows.from_fisher_factors(pool), None if lab is None else _rows.from_fisher_factors(lab),
                         0.6, k=5, n_forward=10, chunk=8)
            np.testing.assert_array_equal(np.asarray(got), expected)


def test_exact_blocks_of_a_few_points_equal_dense_products():
    """``exact_blocks``: G = X_S A X_Sᵀ and H = X_S A F A X_Sᵀ of a few gathered points, with ``A``
    held as ``a − σ P Pᵀ``, against dense products; ``dense`` of gathered Kronecker rows is the
    rows themselves."""
    rng = np.random.default_rng(8)
    with jax.enable_x64(True):
        emb = random_factors(9, 11, 3, 4)
        x = dense_fisher_rows(emb.probs, emb.h)
        d, idx = 12, jnp.asarray([7, 0, 10, 3])
        a, fisher = np.linalg.inv(_random_spd(rng, d)), _random_spd(rng, d, 2.0)
        pending = rng.normal(size=(d, 5)) * 0.1
        for rows in (_rows.chunk_kron(emb.s_factor(), emb.h, 4), _rows.chunk_dense(jnp.asarray(x), 4)):
            got_x = np.asarray(_rows.dense(_rows.gather(rows, idx)))
            np.testing.assert_allclose(got_x, x[np.asarray(idx)], rtol=1e-14)
            for sign in (1.0, -1.0):
                lazy = _lazy.LazyA(jnp.asarray(a), jnp.asarray(pending), sign)
                g, h = jax.jit(lambda x, f: _kernel.exact_blocks(x, lazy.times, f))(jnp.asarray(got_x),
                                                                                   jnp.asarray(fisher))
                big_a = a - sign * pending @ pending.T
                xs = x[np.asarray(idx)]
                np.testing.assert_allclose(np.asarray(g).transpose(2, 0, 1), xs @ big_a @ xs.transpose(0, 2, 1),
                                           rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(np.asarray(h).transpose(2, 0, 1),
                                           xs @ big_a @ fisher @ big_a @ xs.transpose(0, 2, 1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("packed", [False, True])
def test_window_rebuild_recomputes_the_blocks_near_the_best_only(monkeypatch, packed):
    """``refresh_window`` on blocks made stale by hand (float64, 12 points in 3 chunks of 4, a
    window of 4): the 4 stale points of highest gain, corrupted, come back exact with zero drift; a
    corrupted but fresh point far below them is left as it is (only the window is rebuilt); with a
    stale point that could still decide the pick outside the window, every block is rebuilt."""
    monkeypatch.setattr(_kernel, "WINDOW", 4)
    monkeypatch.setattr(_kernel, "UNROLL_MIN_POINTS", 0 if packed else 1 << 30)
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        emb = random_factors(6, 12, 3, 4)
        x = dense_fisher_rows(emb.probs, emb.h)
        rows = _rows.chunk_kron(emb.s_factor(), emb.h, 4)
        a, fisher = np.linalg.inv(_random_spd(rng, 12)), _random_spd(rng, 12, 2.0)
        pending = rng.normal(size=(12, 3)) * 0.1
        lazy = _lazy.LazyA(jnp.asarray(a), jnp.asarray(pending), 1.0)
        big_a = a - pending @ pending.T
        g_true = x @ big_a @ x.transpose(0, 2, 1)
        h_true = x @ big_a @ fisher @ big_a @ x.transpose(0, 2, 1)
        gains_true = np.array([np.trace(hi @ np.linalg.inv(np.eye(3) + gi)) for gi, hi in zip(g_true, h_true)])
        order = np.argsort(-gains_true)
        top, low = order[:4], order[-1]
        layout = _kernel._FlatBlocks(3, 3, 4)
        assert layout.packed == packed
        to_layout = lambda blocks: layout.to_flat(jnp.asarray(blocks.transpose(1, 2, 0).reshape(3, 3, 3, 4)
                                                              .transpose(2, 0, 1, 3)))  # noqa: E731
        from_layout = lambda blocks: (np.asarray(layout.to_chunks(blocks))  # noqa: E731
                                      .transpose(0, 3, 1, 2).reshape(12, 3, 3))
        noise = np.zeros((12, 3, 3))
        noise[top] = 1e-3 * gains_true[top, None, None] * np.eye(3)
        noise[low] = 1e-3 * np.eye(3)
        h_bad = h_true + noise
        drift = np.zeros(12)
        # Stale (eps·drift ≫ REFRESH_TOL·max gain), their error bounds 100× the largest gain.
        drift[top] = 100 * gains_true.max() / (_kernel.ARGMAX_MARGIN * np.finfo(np.float64).eps)
        excluded = jnp.zeros((3, 4), bool)
        window = jax.jit(_kernel.refresh_window, static_argnums=8)
        for far_stale in (False, True):
            d0 = drift.copy()
            if far_stale:
                d0[order[5]] = drift[top[0]]   # stale, outside the window, its bound above the best
            g_l, h_l = to_layout(g_true), to_layout(h_bad)
            gains = layout.gains(g_l, h_l)
            # (The rebuild's gains, in the loop form that compiles quickly: the same numbers.)
            np.testing.assert_allclose(np.asarray(layout.rare_gains(g_l, h_l)), np.asarray(gains), rtol=1e-9)
            g_out, h_out, d_out, gains_out, stale = window(rows, lazy, jnp.asarray(fisher), g_l, h_l,
                                                          jnp.asarray(d0.reshape(3, 4)), excluded, gains, layout)
            assert bool(stale)
            expected_h = h_true.copy()
            if not far_stale:
                expected_h[low] = h_bad[low]
            np.testing.assert_allclose(from_layout(g_out), g_true, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(from_layout(h_out), expected_h, rtol=1e-9, atol=1e-12)
            expected_drift = np.zeros(12) if far_stale else np.where(np.isin(np.arange(12), top), 0, d0)
            np.testing.assert_array_equal(np.asarray(d_out).reshape(-1), expected_drift)
            expected_gains = np.array([np.trace(hi @ np.linalg.inv(np.eye(3) + gi))
                                       for gi, hi in zip(g_true, expected_h)])
            np.testing.assert_allclose(np.asarray(gains_out).reshape(-1), expected_gains, rtol=1e-9)


def _fresh_kernel(pool, lab, dense, lamb, **static):
    """The kernel's picks for ``FisherFactors`` ``pool`` (and ``lab``, or None) as Kronecker or
    ``dense`` rows, through a freshly traced kernel (so that monkeypatched constants apply)."""
    kernel = jax.jit(lambda *args, **kw: _kernel.forward_backward(*args, **kw),
                     static_argnames=("k", "n_forward", "chunk"))
    if dense:
        return kernel(pool.to_dense(), None if lab is None else lab.to_dense(), lamb, **static)
    return kernel(_rows.from_fisher_factors(pool), None if lab is None else _rows.from_fisher_factors(lab), lamb,
                  **static)


@pytest.mark.parametrize("labeled", [False, True])
def test_window_rebuilds_keep_the_reference_picks(monkeypatch, labeled):
    """The window rebuilds of large pools, forced on a small one at every step (every point stale
    and near the best): a window over the whole pool, then one of 2 points that falls back to
    rebuilding every block; the backward pass then starts from the picks' exact blocks
    (``exact_blocks``). Kronecker and dense rows, packed and loop forms. (Pool sizes no other test
    uses: fresh compilations.)"""
    monkeypatch.setattr(_kernel, "WINDOW_MIN_POINTS", 0)
    monkeypatch.setattr(_kernel, "ONE_LOOP_MAX_WORK", 0)   # (the forward loop, where windows are)
    monkeypatch.setattr(_kernel, "REFRESH_TOL", 0.0)
    monkeypatch.setattr(_kernel, "ARGMAX_MARGIN", 1e30)
    # Every rebuild of one chunk (the backward pass's) by exact_blocks, Kronecker rows too.
    monkeypatch.setattr(_kernel, "_few_points", lambda rows: _rows.counts(rows)[0] == 1)
    with jax.enable_x64(True):
        n = 27
        emb = random_factors(23 + labeled, n + 5, 3, 4)
        pool, lab = emb[:n], (emb[n:] if labeled else None)
        expected = reference_picks(pool, lab, 5, lamb=0.6)
        for window, unroll, dense in ((32, 0, False), (2, 1 << 30, False), (32, 1 << 30, True)):
            monkeypatch.setattr(_kernel, "WINDOW", window)
            monkeypatch.setattr(_kernel, "UNROLL_MIN_POINTS", unroll)
            got = _fresh_kernel(pool, lab, dense, 0.6, k=5, n_forward=10, chunk=8)
            np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("labeled", [False, True], ids=["no-labeled", "labeled"])
def test_backward_pass_in_the_picks_space_keeps_the_reference_picks(monkeypatch, labeled):
    """Wide heads run the backward pass on ``K = X_S A X_Sᵀ`` and ``L = X_S A F A X_Sᵀ`` of the
    forward picks' rows (``_picks_space``), forced here on small problems: Kronecker rows on all
    and on sum-zero columns, dense rows, loop and packed forward forms; and with every step's
    blocks recomputed exactly (the drift guard at 0), from ``U = a X_Sᵀ + P (Pᵀ X_Sᵀ)``."""
    used = []
    monkeypatch.setattr(_picks_space, "worth_it", lambda *args: used.append(args) or True)
    monkeypatch.setattr(_kernel, "ONE_LOOP_MAX_WORK", 0)   # (the backward pass apart)
    with jax.enable_x64(True):
        n = 29
        emb = random_factors(31 + labeled, n + 6, 3, 4)
        pool, lab = emb[:n], (emb[n:] if labeled else None)
        expected = reference_picks(pool, lab, 5, lamb=0.3)
        for reduce_dim, unroll, dense, tol in ((1 << 30, 1 << 30, False, 1e-5), (0, 0, False, 1e-5),
                                               (1 << 30, 1 << 30, True, 1e-5), (0, 1 << 30, False, 0.0)):
            monkeypatch.setattr(_kernel, "REDUCE_MIN_DIM", reduce_dim)
            monkeypatch.setattr(_kernel, "UNROLL_MIN_POINTS", unroll)
            monkeypatch.setattr(_kernel, "REFRESH_TOL", tol)
            got = _fresh_kernel(pool, lab, dense, 0.3, k=5, n_forward=11, chunk=8)
            np.testing.assert_array_equal(np.asarray(got), expected)
    assert len(used) == (4 if labeled else 8)   # (without a labeled set implicit_a asks too)


def test_picks_space_removals_equal_dense_formulas():
    """After removing picks 2 then 4, ``K``, ``L``, ``U`` (from the pending columns) and the drift
    of the picks' space equal ``X_S A' X_Sᵀ``, ``X_S A' F A' X_Sᵀ`` and ``A' X_Sᵀ`` with
    ``A' = (A⁻¹ − X_2ᵀX_2 − X_4ᵀX_4)⁻¹``."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        p, r, d = 6, 3, 40
        x = rng.normal(size=(p, r, d)) / np.sqrt(d)
        xs = x.reshape(p * r, d)
        m = 0.7 * np.eye(d) + xs.T @ xs
        fisher = _random_spd(rng, d, 2.0)
        times_a = functools.partial(jnp.matmul, jnp.asarray(np.linalg.inv(m)))
        u0, xs_j, state = _picks_space.start(jnp.asarray(x), times_a, jnp.asarray(fisher), 2)
        remove = jax.jit(_picks_space.remove, static_argnums=5)
        drift = np.zeros(p)
        for t, q in enumerate((2, 4)):
            l_before = np.asarray(state.l)
            state = remove(state, q, t, u0, xs_j, r)
            m = m - x[q].T @ x[q]
            a = np.linalg.inv(m)
            dl = (xs @ a @ fisher @ a @ xs.T - l_before).reshape(p, r, p, r)
            drift += [np.linalg.norm(dl[j, :, j]) for j in range(p)]
            np.testing.assert_allclose(np.asarray(_picks_space.current_u(state, u0, xs_j)), a @ xs.T, rtol=1e-9,
                                       atol=1e-12)
            np.testing.assert_allclose(np.asarray(state.k), xs @ a @ xs.T, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(np.asarray(state.l), xs @ a @ fisher @ a @ xs.T, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(np.asarray(state.drift), drift, rtol=1e-9)
        assert np.asarray(state.removed).tolist() == [False, False, True, False, True, False]


def test_picks_space_refresh_recomputes_the_blocks_and_their_costs(monkeypatch):
    """The drift guard of the picks' space: a start whose ``L`` is scaled by per-pick factors in
    1–10 (as if drifted) and flagged stale is recomputed from ``U`` before the first removal, and
    the removals then use the recomputed costs: the reference's picks."""
    monkeypatch.setattr(_picks_space, "worth_it", lambda *args: True)
    monkeypatch.setattr(_kernel, "ONE_LOOP_MAX_WORK", 0)
    start = _picks_space.start

    def drifted(x, a, fisher, n_remove):
        u0, xs, state = start(x, a, fisher, n_remove)
        p, r = x.shape[:2]
        scale = jnp.repeat(jnp.linspace(1.0, 10.0, p, dtype=state.l.dtype), r)
        return u0, xs, state._replace(l=state.l * scale[:, None] * scale[None, :],
                                      drift=jnp.full_like(state.drift, 1e30))

    monkeypatch.setattr(_picks_space, "start", drifted)
    with jax.enable_x64(True):
        emb = random_factors(41, 31, 3, 4)
        expected = reference_bait(dense_fisher_rows(emb.probs, emb.h), None, 5, lamb=0.4)
        got = _fresh_kernel(emb, None, False, 0.4, k=5, n_forward=11, chunk=8)
    np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("forms", ["loop", "packed-window", "rebuild-every-step", "dense-rows"])
def test_wide_heads_without_a_labeled_set_keep_a_implicit(monkeypatch, forms):
    """Without a labeled set, where the backward pass runs in the picks' space, the forward pass
    keeps ``A = I/λ − P Pᵀ`` unformed (``implicit_a``): forced on small problems (``worth_it``), the
    picks are the float64 reference's and those of the same kernel with ``A`` formed, in loop and
    packed forms, with window rebuilds, with every block rebuilt at every step (``LazyA.full`` of
    the scalar form) and on dense rows; with a labeled set ``A`` is formed."""
    seen = []
    implicit = _kernel.implicit_a

    def spy(*args):
        seen.append(implicit(*args))
        return seen[-1]

    monkeypatch.setattr(_kernel, "implicit_a", spy)
    monkeypatch.setattr(_picks_space, "worth_it", lambda *args: True)
    monkeypatch.setattr(_kernel, "ONE_LOOP_MAX_WORK", 0)
    monkeypatch.setattr(_kernel, "UNROLL_MIN_POINTS", 0 if forms == "packed-window" else 1 << 30)
    monkeypatch.setattr(_kernel, "WINDOW_MIN_POINTS", 0 if forms == "packed-window" else 1 << 30)
    monkeypatch.setattr(_kernel, "REFRESH_TOL", 0.0 if forms == "rebuild-every-step" else 1e-5)
    with jax.enable_x64(True):
        emb = random_factors(43, 37, 3, 5)
        expected = reference_picks(emb, None, 6, lamb=0.25)
        got = _fresh_kernel(emb, None, forms == "dense-rows", 0.25, k=6, n_forward=13, chunk=8)
        np.testing.assert_array_equal(np.asarray(got), expected)
        assert seen == [True]
        monkeypatch.setattr(_kernel, "implicit_a", lambda *args: seen.append(False) or False)
        formed = _fresh_kernel(emb, None, forms == "dense-rows", 0.25, k=6, n_forward=13, chunk=8)
        np.testing.assert_array_equal(np.asarray(formed), expected)
        monkeypatch.setattr(_kernel, "implicit_a", spy)
        _fresh_kernel(emb[:30], emb[30:], forms == "dense-rows", 0.25, k=6, n_forward=13, chunk=8)
        assert seen == [True, False, False]
    emb32 = random_factors(44, 37, 3, 5, dtype=np.float32)
    got32 = _fresh_kernel(emb32, None, False, 0.25, k=6, n_forward=13, chunk=8)
    monkeypatch.setattr(_kernel, "implicit_a", lambda *args: False)
    np.testing.assert_array_equal(np.asarray(got32), np.asarray(_fresh_kernel(emb32, None, False, 0.25, k=6,
                                                                               n_forward=13, chunk=8)))


def test_lazy_a_with_a_scalar_is_that_multiple_of_the_identity_minus_p_pt():
    with jax.enable_x64(True):
        rng = np.random.default_rng(6)
        p, x = rng.normal(size=(7, 4)), rng.normal(size=(7, 3))
        for sign in (1.0, -1.0):
            lazy = _lazy.LazyA(jnp.asarray(2.5), jnp.asarray(p), sign)
            dense = 2.5 * np.eye(7) - sign * p @ p.T
            np.testing.assert_allclose(np.asarray(lazy.full()), dense, rtol=1e-12)
            np.testing.assert_allclose(np.asarray(lazy.times(jnp.asarray(x))), dense @ x, rtol=1e-12)
            got = _picks_space.start(jnp.asarray(rng.normal(size=(2, 2, 7))), lazy.times, jnp.eye(7), 1)
            want = _picks_space.start(got[1].reshape(2, 2, 7), functools.partial(jnp.matmul, jnp.asarray(dense)),
                                      jnp.eye(7), 1)
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def test_picks_space_is_used_for_wide_heads_only():
    assert _picks_space.worth_it(200, 10, 6912) and _picks_space.worth_it(200, 1, 768)
    assert not _picks_space.worth_it(200, 10, 1152) and not _picks_space.worth_it(20, 10, 320)


@pytest.mark.parametrize("packed", [False, True])
def test_backward_pass_restarts_from_exact_blocks_after_window_rebuilds(monkeypatch, packed):
    """The window rebuilds never refresh the picks' own blocks, so after a forward pass that saw
    stale blocks the backward pass must not start from them: here the picks' ``H`` blocks are
    scaled by per-point factors in 1–10 at every forward step (as if drifted; the forward picks
    are unaffected) and the forward pass reports stale blocks, and the picks stay the reference's."""
    monkeypatch.setattr(_kernel, "WINDOW_MIN_POINTS", 0)
    monkeypatch.setattr(_kernel, "ONE_LOOP_MAX_WORK", 0)
    monkeypatch.setattr(_kernel, "UNROLL_MIN_POINTS", 0 if packed else 1 << 30)
    window = _kernel.refresh_window

    def drifted(rows, a, fisher, g, h, drift, excluded, gains, layout):
        g, h, drift, gains, _ = window(rows, a, fisher, g, h, drift, excluded, gains, layout)
        factor = 1 + 9 * jax.random.uniform(jax.random.key(0), excluded.shape, h[0].dtype if packed else h.dtype)
        factor = jnp.where(excluded, factor, 1).reshape(-1)
        h = [row * factor for row in h] if packed else h * factor
        return g, h, drift, gains, jnp.asarray(True)

    monkeypatch.setattr(_kernel, "refresh_window", drifted)
    with jax.enable_x64(True):
        n = 23
        pool = random_factors(41 + packed, n, 3, 4)
        expected = reference_picks(pool, None, 5, lamb=0.7)
        kernel = jax.jit(lambda *args, **kw: _kernel.forward_backward(*args, **kw),
                         static_argnames=("k", "n_forward", "chunk"))
        got = kernel(_rows.from_fisher_factors(pool), None, 0.7, k=5, n_forward=12, chunk=8)
        np.testing.assert_array_equal(np.asarray(got), expected)


# ---------------------------------------------------------------- properties


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), temperature=st.sampled_from([0.1, 1.0, 5.0, 50.0]),
       k=st.sampled_from([4]))
def test_k_unique_in_range_and_deterministic(seed, temperature, k):
    emb = random_factors(seed, 20, 3, 4, dtype=np.float32, temperature=temperature)
    picks = np.asarray(aljax.fisher_greedy(emb, k))
    assert picks.shape == (k,) and picks.dtype == np.int32
    assert len(set(picks.tolist())) == k
    assert picks.min() >= 0 and picks.max() < 20
    np.testing.assert_array_equal(picks, np.asarray(aljax.fisher_greedy(emb, k)))


def test_jit_and_no_jit_pick_the_same(maybe_jit):
    emb = random_factors(3, 20, 3, 4, dtype=np.float32)
    lab = random_factors(4, 6, 3, 4, dtype=np.float32)
    f = maybe_jit(lambda e, l: aljax.fisher_greedy(e, 4, labeled=l, oversample=1.0))
    expected = reference_bait(dense_fisher_rows(emb.probs, emb.h), dense_fisher_rows(lab.probs, lab.h), 4,
                              oversample=1.0)
    np.testing.assert_array_equal(np.asarray(f(emb, lab)), expected)


@pytest.mark.parametrize("key", [0, 7, 2**31 - 1, "typed", "raw"])
def test_the_key_is_accepted_and_ignored(key):
    """BAIT is deterministic: any key gives the picks of the call without one."""
    key = {"typed": jax.random.key(3), "raw": jax.random.PRNGKey(3)}.get(key, key)
    emb, lab = random_factors(3, 20, 3, 4, dtype=np.float32), random_factors(4, 6, 3, 4, dtype=np.float32)
    np.testing.assert_array_equal(aljax.fisher_greedy(emb, 4, key=key, labeled=lab),
                                  aljax.fisher_greedy(emb, 4, labeled=lab))


def test_fully_confident_pool_gives_k_unique_indices_without_nan():
    """p one-hot: S = 0, the Fisher is 0, every gain is 0: the lowest indices are taken forward
    and the earliest picks dropped backward (the reference's tie rule)."""
    probs = jax.nn.one_hot(jnp.arange(20) % 3, 3)
    emb = aljax.FisherFactors(probs, jnp.ones((20, 4)))
    picks = np.asarray(aljax.fisher_greedy(emb, 4))
    np.testing.assert_array_equal(picks, reference_bait(dense_fisher_rows(probs, emb.h), None, 4))
    np.testing.assert_array_equal(picks, [4, 5, 6, 7])
    huge = aljax.FisherFactors(jax.nn.softmax(jnp.asarray(np.random.default_rng(0).normal(size=(20, 3))) * 1e4),
                               jnp.ones((20, 4)))
    assert len(set(np.asarray(aljax.fisher_greedy(huge, 4)).tolist())) == 4


def test_float64_inputs_give_int32_picks():
    with jax.enable_x64(True):
        emb = random_factors(0, 20, 3, 4)
        assert emb.probs.dtype == jnp.float64
        assert aljax.fisher_greedy(emb, 4).dtype == jnp.int32


# The small case has the shapes of two float64 reference tests above (their compilations are shared).
@pytest.mark.parametrize("x64, n, c, dim, ks", [(True, 20, 2, 5, (4,)),
                                                 pytest.param(False, 200, 4, 8, (1, 5), marks=pytest.mark.slow),
                                                 pytest.param(True, 200, 4, 8, (1, 5), marks=pytest.mark.slow)])
def test_bfloat16_factors_pick_as_their_widened_values(x64, n, c, dim, ks):
    # bfloat16 storage: the same values widened to the compute dtype must give the same picks.
    rng = np.random.default_rng(0)
    with jax.enable_x64(x64):
        probs = jax.nn.softmax(jnp.asarray(rng.standard_normal((n, c)) * 2, jnp.float32), axis=1)
        probs = probs.astype(jnp.bfloat16)
        h = jnp.asarray(rng.standard_normal((n, dim)), jnp.float32).astype(jnp.bfloat16)
        wide = jnp.float64 if x64 else jnp.float32
        for k in ks:
            got = aljax.fisher_greedy(aljax.FisherFactors(probs, h), k, lamb=0.1)
            # Dense rows of the widened values (bfloat16 rows sum to 1 only within bfloat16's tolerance).
            dense = aljax.FisherFactors(probs.astype(wide), h.astype(wide)).to_dense()
            ref = aljax.fisher_greedy(dense, k, lamb=0.1)
            np.testing.assert_array_equal(got, ref)


# ---------------------------------------------------------------- front door and regression


@pytest.mark.slow
def test_bait_equals_fisher_greedy_on_the_fisher_embedding():
    params, apply_fn, _, _, in_shape = MODEL_KINDS["plain"](jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (30,) + in_shape)
    pool, labeled = x[:24], x[24:]
    got = aljax.bait(params, apply_fn, pool, 5, labeled=labeled, key=0)
    emb, lab = aljax.fisher_embedding(params, apply_fn, pool), aljax.fisher_embedding(params, apply_fn, labeled)
    np.testing.assert_array_equal(got, aljax.fisher_greedy(emb, 5, labeled=lab))
    expected = reference_bait(dense_fisher_rows(emb.probs, emb.h), dense_fisher_rows(lab.probs, lab.h), 5)
    np.testing.assert_array_equal(got, expected)


def test_bait_on_a_small_model_equals_fisher_greedy_and_the_reference():
    """The front door on a model with C = 3 classes and D = 4 features (the problem shape of the
    selector tests above, so that the kernel's compilation is shared)."""
    rng = np.random.default_rng(12)
    params = (jnp.asarray(rng.normal(size=(5, 4)), jnp.float32), jnp.asarray(rng.normal(size=(4, 3)), jnp.float32))
    apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]  # noqa: E731
    pool = jnp.asarray(rng.normal(size=(20, 5)), jnp.float32)
    got = aljax.bait(params, apply_fn, pool, 4, key=5)
    emb = aljax.fisher_embedding(params, apply_fn, pool)
    np.testing.assert_array_equal(got, aljax.fisher_greedy(emb, 4))
    np.testing.assert_array_equal(got, reference_bait(dense_fisher_rows(emb.probs, emb.h), None, 4))


def test_empty_labeled_set_is_the_same_as_none():
    emb = random_factors(0, 20, 3, 4, dtype=np.float32)
    np.testing.assert_array_equal(aljax.fisher_greedy(emb, 4, labeled=emb[:0]), aljax.fisher_greedy(emb, 4))


# ---------------------------------------------------------------- relative damping


def reference_relative_lamb(pool_rows, labeled_rows, lamb):
    """``λ·tr(F)/d``, ``F`` the mean of the dense ``X_iᵀX_i`` over pool ∪ labeled."""
    everything = np.concatenate([np.asarray(pool_rows, np.float64)] +
                                ([] if labeled_rows is None else [np.asarray(labeled_rows, np.float64)]))
    fisher = sum(v.T @ v for v in everything) / len(everything)
    return lamb * np.trace(fisher) / fisher.shape[0]


@pytest.mark.parametrize("kind, n_lab, c", [("factors", 6, 3), ("factors", 0, 3), ("dense", 6, 3), ("factors", 6, 2)])
def test_relative_damping_is_the_reference_at_lambda_times_the_mean_fisher_diagonal(kind, n_lab, c):
    """(C = 2: the rows run as one row per point on D columns; λ is still per column of the C·D.)"""
    with jax.enable_x64(True):
        emb = random_factors(7, 20 + n_lab, c, 4, temperature=0.5)
        pool, lab = emb[:20], (emb[20:] if n_lab else None)
        pool_rows = dense_fisher_rows(pool.probs, pool.h)
        lab_rows = None if lab is None else dense_fisher_rows(lab.probs, lab.h)
        lamb = reference_relative_lamb(pool_rows, lab_rows, 0.3)
        assert not 0.2 < lamb < 0.4   # the scaled λ is not the given one
        expected = reference_bait(pool_rows, lab_rows, 4, lamb=lamb)
        if kind == "dense":
            pool, lab = pool.to_dense(), (None if lab is None else lab.to_dense())
        got = aljax.fisher_greedy(pool, 4, labeled=lab, lamb=0.3, damping="relative")
        np.testing.assert_array_equal(np.asarray(got), expected)
        np.testing.assert_array_equal(got, aljax.fisher_greedy(pool, 4, labeled=lab, lamb=lamb))


@settings(deadline=None, max_examples=8)
@given(seed=st.integers(0, 2**16), power=st.integers(-8, 8))
def test_relative_damping_picks_do_not_depend_on_the_feature_scale(seed, power):
    """Features times 2^j (exact in floating point): F and the damping both scale by 4^j, so every
    gain is unchanged and the picks are the same, bit for bit."""
    emb = random_factors(seed, 26, 3, 4, dtype=np.float32)
    scaled = aljax.FisherFactors(emb.probs, emb.h * 2.0 ** power)
    run = lambda e: aljax.fisher_greedy(e[:20], 4, labeled=e[20:], damping="relative")  # noqa: E731
    np.testing.assert_array_equal(run(scaled), run(emb))


def test_relative_damping_of_a_zero_fisher_falls_back_to_lambda():
    probs = jax.nn.one_hot(jnp.arange(20) % 3, 3)
    emb = aljax.FisherFactors(probs, jnp.ones((20, 4)))
    np.testing.assert_array_equal(aljax.fisher_greedy(emb, 4, damping="relative"), [4, 5, 6, 7])


def test_bait_passes_the_damping_to_fisher_greedy():
    params, apply_fn, _, _, in_shape = MODEL_KINDS["plain"](jax.random.key(0))
    x = jax.random.normal(jax.random.key(2), (30,) + in_shape)
    emb, lab = aljax.fisher_embedding(params, apply_fn, x[:24]), aljax.fisher_embedding(params, apply_fn, x[24:])
    got = aljax.bait(params, apply_fn, x[:24], 5, labeled=x[24:], lamb=0.1, damping="relative")
    np.testing.assert_array_equal(got, aljax.fisher_greedy(emb, 5, labeled=lab, lamb=0.1, damping="relative"))
    rows = dense_fisher_rows(emb.probs, emb.h), dense_fisher_rows(lab.probs, lab.h)
    np.testing.assert_array_equal(got, reference_bait(*rows, 5, lamb=reference_relative_lamb(*rows, 0.1)))


@pytest.mark.parametrize("outputs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_regression_matches_its_dense_reference(outputs):
    with jax.enable_x64(True):
        rng = np.random.default_rng(outputs)
        w1 = jnp.asarray(rng.normal(size=(3, 5)))
        w2 = jnp.asarray(rng.normal(size=(5, outputs)))

        def features(p, x):
            return jnp.tanh(x @ p[0])

        def apply_fn(p, x):
            out = features(p, x) @ p[1]
            return out[:, 0] if outputs == 1 else out

        x = jnp.asarray(rng.normal(size=(22, 3)))
        pool, labeled = x[:18], x[18:]
        h_pool, h_lab = np.asarray(features((w1, w2), pool)), np.asarray(features((w1, w2), labeled))
        # Gaussian head: rows e_j ⊗ h per output j, so X_iᵀX_i = I_m ⊗ h hᵀ.
        rows = lambda h: np.stack([np.kron(np.eye(outputs), hi[None, :]) for hi in h])  # noqa: E731
        expected = reference_bait(rows(h_pool), rows(h_lab), 4, lamb=0.3)
        got = aljax.bait((w1, w2), apply_fn, pool, 4, labeled=labeled, lamb=0.3, problem_type="regression")
        np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("problem_type, dtype", [("classification", np.float32), ("classification", jnp.bfloat16),
                                                  ("classification", np.float64), ("regression", np.float32),
                                                  ("regression", np.float64)])
def test_host_rows_from_outputs_equal_the_jitted_rows(problem_type, dtype):
    """The model outputs' rows in NumPy (small pools: no compilation per pool size): the jitted
    rows (the softmax's probabilities within a few ulps; ``S`` from them as the jitted rows build
    theirs; Gaussian rows exactly), same dtypes and shapes."""
    rng = np.random.default_rng(3)
    with jax.enable_x64(dtype == np.float64):
        outputs = jnp.asarray(rng.normal(size=(13, 4)) * 3, dtype)
        if problem_type == "regression":
            outputs = outputs[:, :2]
        h = jnp.asarray(rng.normal(size=(13, 6)), dtype)
        host, jitted = _rows.host_rows_from_outputs(outputs, h, problem_type), _rows.rows_from_outputs(outputs, h,
                                                                                                       problem_type)
        rebuilt = _rows.host_fisher_rows(aljax.FisherFactors(host.w, h)) if problem_type == "classification" else host
    assert host.softmax == jitted.softmax == (problem_type == "classification")
    rtol = {np.float64: 1e-13, np.float32: 1e-6}.get(dtype, 2e-2)   # (bfloat16: the jitted softmax runs in it)
    if problem_type == "classification":
        e = np.exp(np.asarray(outputs, np.float64) - np.max(np.asarray(outputs, np.float64), axis=1, keepdims=True))
        np.testing.assert_allclose(np.asarray(host.w, np.float64), e / e.sum(1, keepdims=True),
                                   rtol=1e-13 if dtype == np.float64 else 1e-6 if dtype == np.float32 else 4e-3)
    for x, y, same in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(jitted),
                          jax.tree_util.tree_leaves(rebuilt)):
        assert isinstance(x, jax.Array) and x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=rtol)
        assert np.array_equal(np.asarray(x).view(np.uint8), np.asarray(same).view(np.uint8))
        if problem_type == "regression":
            assert np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))


@pytest.mark.parametrize("problem_type", ["classification", "regression"])
def test_bait_on_small_pools_compiles_only_the_model_and_the_kernel(problem_type, monkeypatch):
    """The front door on small pools assembles the model's outputs and makes their rows in NumPy:
    neither jitted helper runs, and the picks are those of the jitted helpers."""
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        params = (jnp.asarray(rng.normal(size=(5, 4))), jnp.asarray(rng.normal(size=(4, 3))))
        apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]  # noqa: E731
        x = rng.normal(size=(40, 5))
        run = lambda: aljax.bait(params, apply_fn, x[:33], 4, labeled=x[33:], batch_size=8,  # noqa: E731
                                 problem_type=problem_type)
        rows_calls = _count_calls(monkeypatch, aljax._bait._api, "rows_from_outputs")
        assemble_calls = _count_calls(monkeypatch, aljax._pool, "_assemble")
        host = run()
        assert rows_calls == dict(rows_from_outputs=0) and assemble_calls == dict(_assemble=0)
        monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", 0)
        jitted = run()
        assert rows_calls == dict(rows_from_outputs=2) and assemble_calls == dict(_assemble=2)
    np.testing.assert_array_equal(np.asarray(host), np.asarray(jitted))


# ---------------------------------------------------------------- bad input (the table: tests/test_bad_input.py)


def _model():
    params, apply_fn, _, _, in_shape = MODEL_KINDS["plain"](jax.random.key(0))
    return params, apply_fn, jnp.ones((10,) + in_shape)


def test_bait_rejects_nan_outputs():
    params, apply_fn, pool = _model()
    with pytest.raises(ValueError, match=r"aljax\.bait.*NaN"):
        aljax.bait(params, apply_fn, pool.at[0, 0].set(jnp.nan), 3)


class _LazyState(NamedTuple):
    a: jax.Array          # the lazily updated A (with its pending columns)
    pending: jax.Array
    eager: jax.Array      # A updated at every step
    gaps: jax.Array       # per step: largest difference between the two updates' directions


def test_woodbury_directions_with_padded_columns_equal_the_dense_update(monkeypatch):
    """Points with 5 to 15 rows run a wide step's products with zero columns padded up to a multiple
    of 8 (``PAD_COLUMNS``): the directions are those of the dense Woodbury update, with a lazy ``A``
    (``P`` and ``Pᵀ``), and the products really ran 8 columns wide."""
    monkeypatch.setattr(_lazy, "PAD_MIN_DIM", 0)
    with jax.enable_x64(True):
        rng = np.random.default_rng(11)
        d, r, m = 14, 6, 5
        a0, pend = _random_spd(rng, d), 0.05 * rng.normal(size=(d, m))
        fisher, xp = _random_spd(rng, d), 0.1 * rng.normal(size=(r, d))   # (I − G_p ≻ 0 for removals)
        for sign in (1.0, -1.0):
            a = a0 - sign * pend @ pend.T
            u = a @ xp.T
            l_fac = np.linalg.inv(np.linalg.cholesky(np.eye(r) + sign * xp @ u)).T
            ul, zl = u @ l_fac, a @ fisher @ u @ l_fac
            want = np.concatenate([ul, zl - 0.5 * sign * ul @ (l_fac.T @ u.T @ fisher @ u @ l_fac)], axis=1)
            args = (jnp.asarray(a0), jnp.asarray(fisher), jnp.asarray(xp), sign, jnp.asarray(pend))
            for pending_t in (None, jnp.asarray(pend.T)):
                got, got_ul = _lazy.woodbury_directions(*args, pending_t)
                np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-11)
                np.testing.assert_allclose(np.asarray(got_ul), ul, rtol=1e-9, atol=1e-11)
        jaxpr = str(jax.make_jaxpr(_lazy.woodbury_directions, static_argnums=3)(*args))
        assert f"f64[{d},8]" in jaxpr and f"f64[{d},{r}]" in jaxpr


def test_unrolled_forward_gain_is_traced_once():
    """The unrolled Cholesky gain (``r`` square roots of ``(N,)`` vectors, ``N`` the padded pool) is
    a large fusion for XLA to compile: only the forward step has it; the start and a rebuild of
    every block use the loop form. (The correction's norm is the one other square root there.)"""
    n, c, dim, k = 4096, 4, 8, 5
    emb = random_factors(0, n, c, dim, dtype=np.float32)
    rows = _rows.from_fisher_factors(emb)
    jaxpr = jax.make_jaxpr(lambda r: _kernel.kernel(r, None, 1.0, k=k, n_forward=2 * k,
                                                    chunk=_plan.chunk_size(n, c * dim, 1)))(rows)
    count = 0

    def walk(j):
        nonlocal count
        for eqn in j.eqns:
            count += eqn.primitive.name == "sqrt" and eqn.outvars[0].aval.shape == (n,)
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(jaxpr.jaxpr)
    assert _kernel._FlatBlocks(c, 1, n).packed
    assert count == c + 1


def test_lazy_woodbury_updates_equal_the_explicit_inverse():
    """The forward/backward loops hold A = a − σ P Pᵀ and fold P in every LAZY_STEPS steps: after
    19 additions (two full blocks and a partial one) and 11 removals, A is the explicit inverse,
    and every step's directions are those of the eager update (float64)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        r, d, lamb = 2, 6, 0.7
        xs = rng.normal(size=(19, r, d))
        fisher = jnp.asarray(_random_spd(rng, d))

        def run(sign, count, a0, rows):
            def step(t, state):
                dirs, ul = _lazy.woodbury_directions(state.a, fisher, rows[t], sign, state.pending)
                dirs_eager, ul_eager = _lazy.woodbury_directions(state.eager, fisher, rows[t], sign,
                                                                   jnp.zeros((d, 0)))
                return _LazyState(state.a, _lazy.append(state.pending, t, ul),
                                  state.eager - sign * ul_eager @ ul_eager.T,
                                  state.gaps.at[t].set(jnp.max(jnp.abs(dirs - dirs_eager))))
            state = _LazyState(a0, jnp.zeros((d, _lazy.LAZY_STEPS * r)), a0, jnp.zeros(count))
            return jax.jit(lambda s: _lazy.lazy_loop(count, step, s, sign))(state)

        a, pending, eager, gaps = run(1.0, 19, jnp.eye(d) / lamb, jnp.asarray(xs))
        m = lamb * np.eye(d) + np.einsum("nri,nrj->ij", xs, xs)
        np.testing.assert_allclose(np.asarray(a), np.linalg.inv(m), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(pending), 0)
        assert float(jnp.max(gaps)) < 1e-9
        a, _, _, gaps = run(-1.0, 11, a, jnp.asarray(xs[:11]))
        m = lamb * np.eye(d) + np.einsum("nri,nrj->ij", xs[11:], xs[11:])
        np.testing.assert_allclose(np.asarray(a), np.linalg.inv(m), rtol=1e-8, atol=1e-11)
        assert float(jnp.max(gaps)) < 1e-8


def test_pool_bucket_is_a_power_of_two_up_to_4_mib_of_padded_rows_then_a_fine_bucket():
    row = np.zeros((1, 4, 256), np.float32)                # 4 KiB per point
    assert _plan.pool_bucket(np.repeat(row, 1000, 0), 1000) == 1024          # 4 MiB padded
    assert _plan.pool_bucket(np.repeat(row, 1024, 0), 1024) == 1024
    assert _plan.pool_bucket(np.repeat(row, 1025, 0), 1025) == 1152          # 1/8 bucket
    assert _padding.bucket(1025) == 1152
    assert _plan.pool_bucket(np.zeros((3, 2, 2), np.float32), 3) == 4


def test_pad_tree_in_numpy_equals_the_jitted_pad(monkeypatch):
    """Small trees on the host or one CPU device are padded in NumPy (no compilation per shape):
    the same values, dtypes and devices as the jitted pad, zero rows appended."""
    device = jax.devices()[-1]
    tree = dict(a=np.arange(15, dtype=np.float32).reshape(5, 3), b=jnp.arange(5, dtype=jnp.bfloat16) + 1,
                c=jax.device_put(jnp.ones((5, 2, 2), jnp.int32), device), d=None)
    host = _padding.pad_tree(tree, size=8)
    monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", 0)
    jitted = _padding.pad_tree(tree, size=8)
    assert host["d"] is None and jitted["d"] is None
    for name in "abc":
        x, y = host[name], jitted[name]
        assert isinstance(x, jax.Array) and x.shape == y.shape == (8,) + tuple(np.shape(tree[name]))[1:]
        assert x.dtype == y.dtype and x.sharding.device_set == y.sharding.device_set
        assert np.array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))
        assert not np.any(np.asarray(x[5:], np.float64)) and np.array_equal(np.asarray(x[:5]), np.asarray(tree[name]))
    assert host["c"].sharding.device_set == {device}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, jnp.bfloat16])
@pytest.mark.parametrize("where", ["numpy", "jax"])
@pytest.mark.parametrize("x64", [False, True], ids=["x32", "x64"])
def test_host_fisher_rows_equal_the_jitted_rows_bit_for_bit(dtype, where, x64):
    """Small inputs get their rows in NumPy (no compilation per pool size): the forward steps
    rebuild ``S`` from ``p`` in the kernel, so the rows must be the jitted ones exactly."""
    emb = random_factors(3, 37, 7, 5, temperature=4.0)
    as_array = np.asarray if where == "numpy" else jnp.asarray
    with jax.enable_x64(x64):
        emb = aljax.FisherFactors(as_array(np.asarray(emb.probs).astype(dtype)),
                                  as_array(np.asarray(emb.h).astype(dtype)))
        host, jitted = _rows.host_fisher_rows(emb), _rows.from_fisher_factors(emb)
    assert host.softmax and jitted.softmax
    for x, y in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(jitted)):
        assert isinstance(x, jax.Array) and x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))


@pytest.mark.parametrize("kind", ["softmax", "binary", "dense"])
def test_host_gram_and_trace_equal_the_dense_sums(kind):
    """The NumPy Fisher sum and trace of small rows (``host_gram``, ``host_fisher_trace``): the
    sums of the dense rows' ``X_iᵀX_i``, and the jitted ones."""
    with jax.enable_x64(True):
        emb = random_factors(5, 23, 2 if kind == "binary" else 4, 6)
        x = dense_fisher_rows(emb.probs, emb.h)
        rows = _rows.from_fisher_factors(emb)
        if kind == "binary":
            rows = _rows.binary_rows(rows)
            x = np.asarray(rows.s)[:, :, 0, None] * np.asarray(rows.h)[:, None, :]   # (n, 1, D)
        elif kind == "dense":
            rows = jnp.asarray(x)
        gram = np.einsum("nri,nrj->ij", x, x)
        np.testing.assert_allclose(_rows.host_gram(rows), gram, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(_rows.host_gram(rows), np.asarray(_rows.prepare(rows, 8, jnp.float64)[1]()),
                                   rtol=1e-12, atol=1e-14)
        assert _rows.host_fisher_trace(rows) == pytest.approx(np.trace(gram), rel=1e-12)
        assert _rows.host_fisher_trace(rows) == pytest.approx(float(_rows.fisher_trace(rows)), rel=1e-12)


@pytest.mark.parametrize("where", ["numpy", "jax"])
@pytest.mark.parametrize("x64", [False, True], ids=["x32", "x64"])
def test_host_binary_rows_equal_the_jitted_rows_bit_for_bit(where, x64):
    """Two-class rows of small inputs are made in NumPy (no compilation per pool size): exactly the
    jitted :func:`binary_rows`."""
    emb = random_factors(4, 31, 2, 5)
    as_array = np.asarray if where == "numpy" else jnp.asarray
    with jax.enable_x64(x64):
        dtype = np.float64 if x64 else np.float32
        emb = aljax.FisherFactors(as_array(np.asarray(emb.probs, dtype)), as_array(np.asarray(emb.h, dtype)))
        rows = _rows.host_fisher_rows(emb)
        host, jitted = _rows.host_binary_rows(rows), _rows.binary_rows(rows)
    assert host.z is None and jitted.z is None and not host.softmax
    for x, y in zip(jax.tree_util.tree_leaves(host), jax.tree_util.tree_leaves(jitted)):
        assert isinstance(x, jax.Array) and x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))


@pytest.mark.parametrize("x64", [False, True], ids=["x32", "x64"])
def test_host_labeled_gram_equals_the_jitted_one(x64):
    """The labeled Fisher sum and ``A₀ = (λI + Σ_L X_jᵀX_j/(n_L + k))⁻¹`` of a small labeled set,
    in NumPy (float64, then the compute dtype): the dense formula, and the jitted function's."""
    with jax.enable_x64(True):
        emb = random_factors(6, 17, 3, 5)
        x = np.asarray(dense_fisher_rows(emb.probs, emb.h), np.float64)
    gram = np.einsum("nri,nrj->ij", x, x)
    inverse = np.linalg.inv(0.7 * np.eye(15) + gram / (17 + 4))
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        rows = _rows.host_fisher_rows(aljax.FisherFactors(*(np.asarray(v, dtype) for v in (emb.probs, emb.h))))
        host = _plan._host_labeled_gram(rows, 0.7, 17, 4, dtype)
        jitted = _plan._labeled_gram(rows, 0.7, np.int32(17), np.int32(4), chunk=16, dtype=dtype)
    tol = dict(rtol=1e-12, atol=1e-13) if x64 else dict(rtol=2e-5, atol=1e-6)
    for got, want in ((host.matrix, gram), (host.inverse, inverse), (jitted.matrix, gram), (jitted.inverse, inverse)):
        assert got.dtype == dtype
        np.testing.assert_allclose(np.asarray(got, np.float64), want, **tol)


def _count_calls(monkeypatch, module, *names):
    """Wrap ``module``'s functions ``names`` to count their calls: ``{name: calls}``."""
    calls = dict.fromkeys(names, 0)

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    for name in names:
        monkeypatch.setattr(module, name, counting(name, getattr(module, name)))
    return calls


@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("damping", ["absolute", "relative"])
def test_small_inputs_go_around_the_kernel_in_numpy_with_the_same_picks(classes, damping, monkeypatch):
    """Small concrete inputs get the labeled Fisher sum and ``A₀``, the two-class rows and the
    relative damping's trace in NumPy (nothing compiled but the kernel, whatever the pool and
    labeled sizes): the picks of the dense reference, and of the jitted helpers."""
    emb = random_factors(8 + classes, 60, classes, 5)
    pool, lab = emb[:45], emb[45:]
    x, x_lab = dense_fisher_rows(pool.probs, pool.h), dense_fisher_rows(lab.probs, lab.h)
    lamb = 0.3
    if damping == "relative":
        everything = np.concatenate([x, x_lab])
        lamb *= np.sum(everything ** 2) / (len(everything) * x.shape[2])
    expected = reference_bait(x, x_lab, 6, lamb=lamb)
    jitted_helpers = ("_labeled_gram", "binary_rows", "fisher_trace")
    with jax.enable_x64(True):
        calls = _count_calls(monkeypatch, _plan, *jitted_helpers)
        host = aljax.fisher_greedy(pool, 6, labeled=lab, lamb=0.3, damping=damping)
        assert set(calls.values()) == {0}
        monkeypatch.setattr(aljax._validate, "HOST_MAX_ELEMENTS", 0)
        jitted = aljax.fisher_greedy(pool, 6, labeled=lab, lamb=0.3, damping=damping)
        assert calls == dict(_labeled_gram=1, binary_rows=2 * (classes == 2), fisher_trace=2 * (damping == "relative"))
    np.testing.assert_array_equal(np.asarray(host), expected)
    np.testing.assert_array_equal(np.asarray(jitted), expected)


def test_host_labeled_gram_falls_back_to_the_jitted_one(monkeypatch):
    """Where NumPy's Cholesky refuses ``M₀`` (not numerically positive definite), the jitted
    labeled Fisher sum takes over: the same picks."""
    emb = random_factors(12, 40, 3, 4)
    pool, lab = emb[:30], emb[30:]
    with jax.enable_x64(True):
        expected = aljax.fisher_greedy(pool, 5, labeled=lab, lamb=0.5)

        def refuse(m):
            raise np.linalg.LinAlgError("Matrix is not positive definite")

        monkeypatch.setattr(_plan, "host_spd_inverse", refuse)
        calls = _count_calls(monkeypatch, _plan, "_labeled_gram")
        got = aljax.fisher_greedy(pool, 5, labeled=lab, lamb=0.5)
        assert calls == dict(_labeled_gram=1)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_host_labeled_gram_runs_numpy_blas_on_one_thread(monkeypatch):
    """The host labeled Fisher sum and ``A₀`` run NumPy's BLAS on one thread (threadpoolctl), and
    the caller's thread count is back afterwards; without threadpoolctl nothing is limited."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    emb = random_factors(13, 40, 3, 4)
    pool, lab = emb[:30], emb[30:]
    seen = []

    def blas_threads():   # of NumPy's own BLAS (SciPy's, which jaxlib loads, is not the host code's)
        return {info["num_threads"] for info in threadpoolctl.threadpool_info()
                if info["user_api"] == "blas" and "numpy" in info["filepath"]}

    def spy(m, inverse=_plan.host_spd_inverse):
        seen.append(blas_threads())
        return inverse(m)

    monkeypatch.setattr(_plan, "host_spd_inverse", spy)
    with jax.enable_x64(True), threadpoolctl.threadpool_limits(2, user_api="blas"):
        if blas_threads() != {2}:
            pytest.skip(f"no BLAS of NumPy's here that takes 2 threads: {threadpoolctl.threadpool_info()}")
        aljax.fisher_greedy(pool, 5, labeled=lab, lamb=0.5)
        assert seen == [{1}] and blas_threads() == {2}
        monkeypatch.setattr(_linalg, "_blas", {})
        monkeypatch.setitem(sys.modules, "threadpoolctl", None)   # import fails
        aljax.fisher_greedy(pool, 5, labeled=lab, lamb=0.5)
        assert seen == [{1}, {2}]


@pytest.mark.parametrize("n, twin", [(40, "quick_kernel"), (_plan.UNROLL_MIN_POINTS, "kernel")])
def test_bait_takes_the_quick_twin_for_small_pools_only(n, twin, monkeypatch):
    """Pools below ``UNROLL_MIN_POINTS`` (the loop forms) run the kernel's quick-to-compile twin
    (aljax._compile) on a CPU, larger ones (the unrolled forms) the plain kernel; either way the
    dense reference's picks."""
    with jax.enable_x64(True):
        emb, lab = random_factors(n, n, 3, 2), random_factors(n + 1, 5, 3, 2)
        calls = _count_calls(monkeypatch, _plan, "kernel", "quick_kernel")
        got = aljax.fisher_greedy(emb, 3, labeled=lab, lamb=0.5)
        want = reference_picks(emb, lab, 3, lamb=0.5)
    assert calls == dict({"kernel": 0, "quick_kernel": 0}, **{twin: 1})
    np.testing.assert_array_equal(np.asarray(got), want)


def test_small_concrete_pool_inside_a_callers_jit(monkeypatch):
    """A small pool closed over by a caller's ``jax.jit``: the front door's first steps make it a
    tracer there, and the plain kernel runs inside the caller's program (JAX refuses compiler
    options on a nested jit; aljax._compile.call falls back to the plain function should the twin
    be reached): the dense reference's picks."""
    with jax.enable_x64(True):
        emb, lab = random_factors(3, 40, 3, 2), random_factors(4, 5, 3, 2)
        got = jax.jit(lambda s: aljax.fisher_greedy(emb, 3, labeled=lab, lamb=0.5) + s)(0)
        want = reference_picks(emb, lab, 3, lamb=0.5)
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quick_and_plain_kernels_pick_the_same(dtype):
    """The twin is the same program compiled with other XLA options: the same picks as the plain
    kernel (float32 and float64, with a labeled set, forward and backward steps)."""
    with jax.enable_x64(dtype == np.float64):
        emb = random_factors(7, 300, 4, 6, dtype=dtype)
        rows, lab = _rows.from_fisher_factors(emb[:260]), _rows.from_fisher_factors(emb[260:])
        static = dict(k=8, n_forward=16, chunk=64)
        quick = _kernel.quick_kernel(rows, lab, 0.3, **static)
        plain = _kernel.kernel(rows, lab, 0.3, **static)
    np.testing.assert_array_equal(np.asarray(quick), np.asarray(plain))


def _kernel_compilations():
    """Compilations of the one-device kernel and of its quick twin (small pools on a CPU)."""
    return _kernel.kernel._cache_size() + _kernel.quick_kernel._cache_size()


def test_pool_sizes_of_one_bucket_share_one_compilation():
    """Pools of 20, 18 and 17 points (one bucket: 32 rows) with 6 or 9 labeled points: the picks
    of the dense reference, and at most one compilation of the kernel for all of them."""
    emb = random_factors(13, 29, 3, 4, dtype=np.float32)
    before = _kernel_compilations()
    for n in (20, 18, 17):
        for n_lab in (6, 9):
            pool, lab = emb[:n], emb[20:20 + n_lab]
            got = aljax.fisher_greedy(pool, 4, labeled=lab, lamb=0.5)
            want = reference_picks(pool, lab, 4, lamb=0.5)
            np.testing.assert_array_equal(np.asarray(got), want)
    assert _kernel_compilations() - before <= 1


@pytest.mark.slow
@pytest.mark.parametrize("dense", [False, True])
def test_size_buckets_change_no_pick_and_share_one_compilation(dense):
    """The front door pads the pool to a size bucket (300, 296, 290 → 512 rows: a power of two
    for so small a pool), passes the real count traced, and hands the kernel the labeled rows'
    Fisher sum instead of the rows: the same picks as the kernel on the unpadded rows (chunked
    alike), and one compilation of the kernel for every pool size of the bucket and every number
    of labeled points."""
    emb = random_factors(11, 350, 3, 4, dtype=np.float32)
    sizes = {_plan.pool_bucket(emb[:n].to_dense() if dense else _rows.from_fisher_factors(emb[:n]), n)
             for n in (300, 296, 290)}
    assert sizes == {512}
    chunk = _plan.chunk_size(512, 12 if dense else 3 * 4, 3 if dense else 1)
    cases = [(n, n_lab) for n in (300, 296, 290) for n_lab in (20, 33, 50)]
    wants = []
    for n, n_lab in cases:   # the reference: no padding
        pool, lab = emb[:n], emb[300:300 + n_lab]
        rows = pool.to_dense() if dense else _rows.from_fisher_factors(pool)
        lab_rows = lab.to_dense() if dense else _rows.from_fisher_factors(lab)
        wants.append(_kernel.kernel(rows, lab_rows, 0.5, k=6, n_forward=12, chunk=chunk))
    before = _kernel_compilations()
    for (n, n_lab), want in zip(cases, wants):
        pool, lab = emb[:n], emb[300:300 + n_lab]
        if dense:
            pool, lab = pool.to_dense(), lab.to_dense()
        got = aljax.fisher_greedy(pool, 6, labeled=lab, lamb=0.5)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert _kernel_compilations() - before <= 1
