"""VeSSAL: the fast streaming kernel against a slow NumPy transcription of the procedure, fed the
same uniform draws; counts, diversity and batching invariance; the front door (labeled seeding,
regression, checks before the forward pass); bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aljax
from aljax import _vessal
from aljax._embeddings import logits_and_features
from aljax._vessal import _dense, _rows, _span, _stream
from models import MODEL_KINDS

# ---------------------------------------------------------------- the slow, explicit reference


def _reference(rows, uniforms, *, k=None, rate=None, lamb=0.01, labeled_rows=None, covariance=None):
    """The procedure as written, in float64: explicit A, A⁻¹ = inv(A) after every keep, explicit
    running Σ̂ (point i included before its decision) and tr(Σ̂ A⁻¹). Returns the kept positions."""
    rows = np.asarray(rows, np.float64)  # (N, r, d)
    n, r, d = rows.shape
    a = lamb * np.eye(d)
    cov_sum, count = np.zeros((d, d)), 0
    if labeled_rows is not None:
        for u in np.asarray(labeled_rows, np.float64):
            a += u.T @ u
            cov_sum += u.T @ u
            count += 1
    a_inv = np.linalg.inv(a)
    kept = []
    for i in range(n):
        u = rows[i]  # (r, d)
        m = u @ a_inv @ u.T
        score = abs(m[0, 0]) if r == 1 else abs(np.linalg.det(m))
        if covariance is None:
            cov_sum = cov_sum + u.T @ u
            count += 1
            sigma = cov_sum / count
        else:
            sigma = np.asarray(covariance, np.float64)
        rate_i = (k - len(kept)) / (n - i) if k is not None else rate
        normaliser = np.trace(sigma @ a_inv)
        prob = min(1.0, rate_i * score / normaliser) if score > 0 and normaliser > 0 else 0.0
        if uniforms[i] < prob:
            kept.append(i)
            a = a + u.T @ u
            a_inv = np.linalg.inv(a)
    return np.array(kept, np.int64)


def _fast(emb, uniforms, *, rank, k=None, rate=None, lamb=0.01, labeled=None, covariance=None, span=None):
    """The fast path (the private driver), fed the given uniforms; ``span`` forces the kernel."""
    n = _rows.n_rows(emb)
    dtype = _rows.compute_dtype(emb, labeled, covariance)
    out = _stream.run(jax.random.key(0), _rows.array_blocks(emb, n), d=_rows.width(emb), rank=rank, dtype=dtype,
                      budget=k, rate=rate, total=n if k is not None else None, lamb=lamb, labeled=labeled,
                      covariance=covariance, uniforms=uniforms, span=span)
    return np.asarray(out)


def _rows_np(probs, h, rank):
    """Class-aligned Fisher rows, built from FisherFactors.to_dense() (rows of the top classes)."""
    dense = np.asarray(aljax.FisherFactors(jnp.asarray(probs), jnp.asarray(h)).to_dense(), np.float64)
    top = np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :rank]
    return np.stack([dense[i, top[i]] for i in range(len(dense))])


def _fisher(seed, n, c=4, dim=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs.astype(dtype), rng.normal(size=(n, dim)).astype(dtype)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 64 points and a Woodbury buffer of 3 keeps, so short streams cross several chunk
    boundaries and fold full buffers into A⁻¹."""
    monkeypatch.setattr(_rows, "CHUNK", 64)
    monkeypatch.setattr(_dense, "BUFFER", 3)


# ---------------------------------------------------------------- identical picks


def _slow_unless(fast: bool):
    return () if fast else (pytest.mark.slow,)


# Fast tier: the running covariance seeded at rank 1, a fixed one unseeded at rank 2.
@pytest.mark.parametrize("rank, seeded, precompute", [
    pytest.param(rank, seeded, precompute, marks=_slow_unless((rank, seeded, precompute) in ((1, True, False),
                                                                                              (2, False, True))))
    for precompute in (False, True) for seeded in (False, True) for rank in (1, 2)])
def test_matches_reference_on_same_draws(small_chunks, rank, seeded, precompute):
    n, k = 300, 25
    with jax.enable_x64(True):
        probs, h = _fisher(rank * 10 + seeded * 2 + precompute, n + 40)
        rows = _rows_np(probs, h, rank)
        stream, labeled = rows[:n], rows[n:] if seeded else None
        covariance = None
        if precompute:
            every = rows if seeded else stream
            covariance = np.einsum("nri,nrj->ij", every, every) / len(every)
        uniforms = np.random.default_rng(7).uniform(size=n)
        ref = _reference(stream, uniforms, k=k, labeled_rows=labeled, covariance=covariance)
        emb = aljax.FisherFactors(jnp.asarray(probs[:n]), jnp.asarray(h[:n]))
        lab = aljax.FisherFactors(jnp.asarray(probs[n:]), jnp.asarray(h[n:])) if seeded else None
        out = _fast(emb, uniforms, rank=rank, k=k, labeled=lab,
                    covariance=None if covariance is None else jnp.asarray(covariance))
    assert 3 <= len(ref) <= k  # the test exercises keeps, and skips
    np.testing.assert_array_equal(out[: len(ref)], ref)
    assert len(np.unique(out)) == k and not np.isin(out[len(ref):], ref).any()


def _embedding_of_kind(kind, rng, n):
    """An embedding of each accepted kind and its rows ``(n, r, d)`` for the NumPy reference."""
    if kind == "dense":
        emb = jnp.asarray(rng.normal(size=(n, 6)))
        return emb, np.asarray(emb)[:, None, :]
    if kind == "dense3":
        emb = jnp.asarray(rng.normal(size=(n, 2, 6)))
        return emb, np.asarray(emb)
    a, h = rng.normal(size=(n, 3)), rng.normal(size=(n, 4))
    return aljax.Factored(jnp.asarray(a), jnp.asarray(h)), np.einsum("nc,nd->ncd", a, h).reshape(n, 1, -1)


@pytest.mark.parametrize("kind", [pytest.param("dense", marks=pytest.mark.slow), "dense3",
                                  pytest.param("factored", marks=pytest.mark.slow)])
def test_matches_reference_rate_form_all_kinds(small_chunks, kind):
    n = 200
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        emb, rows = _embedding_of_kind(kind, rng, n)
        uniforms = rng.uniform(size=n)
        ref = _reference(rows, uniforms, rate=0.1, lamb=0.5)
        out = _fast(emb, uniforms, rank=rows.shape[1], rate=0.1, lamb=0.5)
    assert len(ref) > 5
    np.testing.assert_array_equal(out, ref)


def test_float32_agrees_with_float64_reference(small_chunks):
    # C = 4, D = 12, k = 20: the kernel that test_iterable_pool_gives_the_array_picks[1] uses.
    probs, h = _fisher(5, 400, c=4, dim=12, dtype=np.float32)
    uniforms = np.random.default_rng(1).uniform(size=400)
    ref = _reference(_rows_np(probs, h, 1), uniforms, k=20)
    out = _fast(aljax.FisherFactors(jnp.asarray(probs), jnp.asarray(h)), uniforms, rank=1, k=20)
    np.testing.assert_array_equal(out[: len(ref)], ref)


def test_fisher_rows_are_class_aligned():
    probs, h = _fisher(0, 7, c=5, dim=3, dtype=np.float32)
    rows = _rows.dense_rows(aljax.FisherFactors(jnp.asarray(probs), jnp.asarray(h)), 3, jnp.float32)
    np.testing.assert_allclose(rows, _rows_np(probs, h, 3), rtol=1e-5, atol=1e-6)
    factored = _rows.dense_rows(aljax.Factored(jnp.asarray(probs), jnp.asarray(h)), 1, jnp.float32)
    np.testing.assert_allclose(factored[:, 0], np.einsum("nc,nd->ncd", probs, h).reshape(7, -1), rtol=1e-6)


# ---------------------------------------------------------------- the span-of-kept-points kernel


@pytest.fixture
def span_small(small_chunks, monkeypatch):
    """With `rate`, the span kernel starts with room for 4 rows and may grow to 16 (d = 12 here),
    so short streams double the room twice and then hand over to the dense kernel mid-chunk."""
    monkeypatch.setattr(_span, "START", 4)
    monkeypatch.setattr(_span, "MAX_ROWS", 16 / 12)
    calls = {"grow": 0, "to_dense": 0}
    for name in calls:
        original = getattr(_span, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(_span, name, spy)
    return calls


@pytest.mark.parametrize("rank, seeded, form", [
    pytest.param(1, False, "k", marks=pytest.mark.slow), pytest.param(1, True, "k", marks=pytest.mark.slow),
    pytest.param(2, False, "k", marks=pytest.mark.slow), (2, True, "k"), (1, False, "rate"),
    pytest.param(2, True, "rate", marks=pytest.mark.slow)])
def test_span_kernel_matches_reference_and_dense(span_small, rank, seeded, form):
    # The inputs of test_matches_reference_on_same_draws[precompute]: the dense kernel is compiled once.
    n, k, rate = 300, 25, 0.2
    budget = dict(k=k) if form == "k" else dict(rate=rate)
    with jax.enable_x64(True):
        probs, h = _fisher(rank * 10 + seeded * 2 + 1, n + 40)
        rows = _rows_np(probs, h, rank)
        stream, labeled = rows[:n], rows[n:] if seeded else None
        every = rows if seeded else stream
        covariance = np.einsum("nri,nrj->ij", every, every) / len(every)
        uniforms = np.random.default_rng(7).uniform(size=n)
        ref = _reference(stream, uniforms, labeled_rows=labeled, covariance=covariance, **budget)
        emb = aljax.FisherFactors(jnp.asarray(probs[:n]), jnp.asarray(h[:n]))
        lab = aljax.FisherFactors(jnp.asarray(probs[n:]), jnp.asarray(h[n:])) if seeded else None
        kw = dict(rank=rank, labeled=lab, covariance=jnp.asarray(covariance), **budget)
        span = _fast(emb, uniforms, span=True, **kw)
        dense = _fast(emb, uniforms, span=False, **kw)
    assert len(ref) >= 3
    np.testing.assert_array_equal(span[: len(ref)], ref)
    np.testing.assert_array_equal(span, dense)
    if form == "rate":  # the room ran out: doubled (4 → 8 → 16 rows), then handed over to the dense kernel
        assert span_small["to_dense"] == 1
        assert span_small["grow"] == (0 if seeded else 2)


@pytest.mark.parametrize("kind", [pytest.param("dense", marks=pytest.mark.slow),
                                  pytest.param("dense3", marks=pytest.mark.slow), "factored"])
def test_span_kernel_all_kinds(span_small, kind):
    n = 200
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        emb, rows = _embedding_of_kind(kind, rng, n)
        covariance = np.einsum("nri,nrj->ij", rows, rows) / n
        uniforms = rng.uniform(size=n)
        ref = _reference(rows, uniforms, k=15, lamb=0.5, covariance=covariance)
        out = _fast(emb, uniforms, rank=rows.shape[1], k=15, lamb=0.5, covariance=jnp.asarray(covariance), span=True)
    assert len(ref) > 5
    np.testing.assert_array_equal(out[: len(ref)], ref)


def test_span_kernel_float32_agrees_with_float64_reference(small_chunks):
    # The stream of test_float32_agrees_with_float64_reference, with the covariance fixed.
    probs, h = _fisher(5, 400, c=4, dim=12, dtype=np.float32)
    rows = _rows_np(probs, h, 1)
    covariance = np.einsum("nri,nrj->ij", rows, rows) / len(rows)
    uniforms = np.random.default_rng(1).uniform(size=400)
    ref = _reference(rows, uniforms, k=20, covariance=covariance)
    out = _fast(aljax.FisherFactors(jnp.asarray(probs), jnp.asarray(h)), uniforms, rank=1, k=20,
                covariance=jnp.asarray(covariance, jnp.float32), span=True)
    assert len(ref) >= 5
    np.testing.assert_array_equal(out[: len(ref)], ref)


@pytest.mark.slow  # the span kernel tests of the fast tier run these helpers too
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**30), r=st.sampled_from([1, 3]))
def test_small_factorisations_match_numpy(seed, r):
    # The span kernel's LAPACK-free r × r helpers: G = L⁻¹ (GᵀG = s⁻¹, G lower) and |det|.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, r, r + 2))
    spd = x @ np.swapaxes(x, 1, 2) + 0.1 * np.eye(r)
    with jax.enable_x64(True):
        g = np.asarray(_span.small_inverse_cholesky(jnp.asarray(spd[0])))
        det = np.asarray(_span.small_abs_det(jnp.asarray(spd)))
        singular = np.asarray(_span.small_abs_det(jnp.zeros((1, r, r))))
    np.testing.assert_allclose(g, np.linalg.inv(np.linalg.cholesky(spd[0])), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(det, np.abs(np.linalg.det(spd)), rtol=1e-9)
    np.testing.assert_array_equal(singular, [0.0])


@pytest.mark.slow
def test_span_kernel_is_chosen_for_a_fixed_covariance_at_large_d(monkeypatch):
    assert _span.plan(5120, 1, 1000, 0, None) == 1000  # C·D = 5,120, k = 1,000 rows
    assert _span.plan(5120, 2, 700, 500, None) == 2400 and _span.plan(5120, 2, 800, 500, None) is None
    assert _span.plan(5120, 1, None, 0, None) == _span.START
    assert _span.plan(512, 1, 100, 0, None) is None  # d below _SPAN_MIN_D
    assert _span.plan(640, 1, 320, 0, None) == 320 and _span.plan(640, 1, 321, 0, None) is None
    assert _span.plan(512, 1, 100, 0, True) == 100 and _span.plan(5120, 1, 10, 0, False) is None
    # Through the public functions: with the threshold lowered, a fixed covariance takes the span kernel.
    monkeypatch.setattr(_span, "MIN_D", 16)
    calls = []
    original = _span.chunk
    monkeypatch.setattr(_span, "chunk", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    emb = jax.random.normal(jax.random.key(2), (300, 16))
    cov = emb.T @ emb / 300
    picks = aljax.volume_stream(emb, 5, key=3, covariance=cov)
    assert calls
    np.testing.assert_array_equal(jax.jit(lambda e, c: aljax.volume_stream(e, 5, key=3, covariance=c))(emb, cov),
                                  picks)
    monkeypatch.setattr(_span, "MIN_D", 10**9)
    np.testing.assert_array_equal(picks, aljax.volume_stream(emb, 5, key=3, covariance=cov))
    with pytest.raises(ValueError, match="fixed covariance"):
        _fast(emb, np.zeros(300), rank=1, k=5, span=True)


# ---------------------------------------------------------------- counts and properties


# Several tests share the width 16 and the budgets 1 and 40, so the chunk kernel compiles once for them.


@pytest.mark.slow  # the fast tier checks k unique picks in the reference comparisons
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**30), k=st.sampled_from([1, 40]), zero_part=st.booleans())
def test_budget_gives_exactly_k_unique(seed, k, zero_part):
    emb = np.array(jax.random.normal(jax.random.key(seed), (120, 16)))
    if zero_part:  # zero rows are never kept: forces a uniform fill of the shortfall
        emb[20:] = 0
    out = aljax.volume_stream(jnp.asarray(emb), k, key=seed)
    assert out.dtype == jnp.int32 and out.shape == (k,)
    assert len(np.unique(np.asarray(out))) == k and np.all((out >= 0) & (out < 120))
    np.testing.assert_array_equal(out, aljax.volume_stream(jnp.asarray(emb), k, key=seed))


def test_fill_is_uniform_over_the_skipped():
    emb = jnp.zeros((120, 16))  # nothing is kept; every pick comes from the fill
    counts = np.zeros(120)
    for seed in range(100):
        counts[np.asarray(aljax.volume_stream(emb, 40, key=seed))] += 1
    from scipy import stats
    assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.slow
def test_rate_count_matches_the_procedures_expectation(small_chunks):
    n, rate, runs = 150, 0.1, 100
    probs, h = _fisher(1, n, c=4, dim=12, dtype=np.float32)  # the kernel of the rate case below
    emb = aljax.FisherFactors(jnp.asarray(probs), jnp.asarray(h))
    fast = np.array([len(aljax.volume_stream(emb, rate=rate, key=seed)) for seed in range(runs)])
    rng = np.random.default_rng(0)
    rows = _rows_np(probs, h, 1)
    ref = np.array([len(_reference(rows, rng.uniform(size=n), rate=rate)) for _ in range(runs)])
    se = np.sqrt(fast.var() / runs + ref.var() / runs)
    assert abs(fast.mean() - ref.mean()) < 4 * se
    assert 0.5 * rate * n < fast.mean() < 2 * rate * n


def test_keeps_far_fewer_duplicates_than_uniform():
    rng = np.random.default_rng(0)
    n, k, d = 400, 40, 16
    copies = rng.permutation(n)[: n // 2]
    emb = rng.normal(size=(n, d))
    emb[copies] = rng.normal(size=d)
    is_copy = np.zeros(n, bool)
    is_copy[copies] = True
    picked = [is_copy[np.asarray(aljax.volume_stream(jnp.asarray(emb, jnp.float32), k, key=seed))].sum()
              for seed in range(10)]
    # Uniform sampling picks k/2 = 20 copies on average (hypergeometric, sd ≈ 3): a mean below 8
    # over 10 runs is beyond 10 sd of it.
    assert np.mean(picked) < 8, picked


def test_same_picks_with_and_without_jit(maybe_jit):
    emb = jax.random.normal(jax.random.key(2), (300, 16))
    out = maybe_jit(lambda e: aljax.volume_stream(e, 40, key=3))(emb)
    np.testing.assert_array_equal(out, aljax.volume_stream(emb, 40, key=3))
    assert not np.array_equal(out, aljax.volume_stream(emb, 40, key=4))
    # The default key is 0: two calls without a key use the same randomness.
    np.testing.assert_array_equal(aljax.volume_stream(emb, 40), aljax.volume_stream(emb, 40, key=0))


# ---------------------------------------------------------------- the front door


def _model_and_pool(n=230):
    params, apply_fn, features, _, shape = MODEL_KINDS["plain"](jax.random.key(0))
    pool = np.asarray(jax.random.normal(jax.random.key(1), (n,) + shape), np.float32)
    return params, apply_fn, features, pool


def _batches(pool, sizes):
    start = 0
    for size in itertools_cycle(sizes):
        if start >= len(pool):
            return
        yield pool[start:start + size]
        start += size


def itertools_cycle(sizes):
    while True:
        yield from sizes


@pytest.mark.parametrize("rank", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_iterable_pool_gives_the_array_picks(small_chunks, rank):
    params, apply_fn, features, pool = _model_and_pool()
    kw = dict(key=5, rank=rank, features_fn=features)
    # batch_size 50 here, the default (256) for the stream: it only groups the forward pass.
    by_array = aljax.vessal(params, apply_fn, pool, 20, batch_size=50, **kw)
    by_stream = aljax.vessal(params, apply_fn, _batches(pool, [90, 50]), 20, length=len(pool), **kw)
    np.testing.assert_array_equal(by_array, by_stream)


@pytest.mark.slow
def test_iterable_pool_gives_the_array_picks_at_a_rate(small_chunks):
    params, apply_fn, features, pool = _model_and_pool()
    kw = dict(key=5, rank=1, features_fn=features)
    rate_array = aljax.vessal(params, apply_fn, pool, rate=0.1, **kw)
    rate_stream = aljax.vessal(params, apply_fn, _batches(pool, [50, 90]), rate=0.1, **kw)
    np.testing.assert_array_equal(rate_array, rate_stream)
    gaps = iter([pool[:0], pool[:70], pool[:0], pool[70:], pool[:0]])   # batches with no rows are skipped
    np.testing.assert_array_equal(aljax.vessal(params, apply_fn, gaps, rate=0.1, **kw), rate_array)


def test_an_empty_labeled_set_seeds_nothing(small_chunks):
    params, apply_fn, features, pool = _model_and_pool(60)
    np.testing.assert_array_equal(aljax.vessal(params, apply_fn, pool, 8, key=2, labeled=pool[:0]),
                                  aljax.vessal(params, apply_fn, pool, 8, key=2))


@pytest.mark.slow
def test_vessal_is_volume_stream_on_the_fisher_embedding(small_chunks):
    params, apply_fn, features, pool = _model_and_pool()
    labeled = pool[:30]
    emb = aljax.fisher_embedding(params, apply_fn, pool)
    lab = aljax.fisher_embedding(params, apply_fn, labeled)
    out = aljax.vessal(params, apply_fn, pool, 20, key=1, rank=2, labeled=labeled)
    np.testing.assert_array_equal(out, aljax.volume_stream(emb, 20, key=1, rank=2, labeled=lab))
    # precompute_covariance = the fixed mean of UᵀU over the labeled set and the pool
    rows = np.concatenate([_rows_np(lab.probs, lab.h, 2), _rows_np(emb.probs, emb.h, 2)])
    cov = np.einsum("nri,nrj->ij", rows, rows) / len(rows)
    np.testing.assert_allclose(_vessal.covariance_of(emb, lab, 2), cov, rtol=1e-4, atol=1e-6)
    pre = aljax.vessal(params, apply_fn, pool, 20, key=1, rank=2, labeled=labeled, precompute_covariance=True)
    ref = aljax.volume_stream(emb, 20, key=1, rank=2, labeled=lab, covariance=_vessal.covariance_of(emb, lab, 2))
    np.testing.assert_array_equal(pre, ref)


def test_covariance_of_a_stream_of_blocks_is_that_of_the_array(small_chunks):
    emb = jax.random.normal(jax.random.key(3), (150, 2, 5))
    lab = jax.random.normal(jax.random.key(4), (20, 2, 5))
    whole = _vessal.covariance_of(emb, lab)
    rows = np.concatenate([np.asarray(emb), np.asarray(lab)]).reshape(-1, 5)
    np.testing.assert_allclose(whole, rows.T @ rows / 170, rtol=1e-5, atol=1e-6)
    blocks = (emb[start:start + 40] for start in range(0, 150, 40))
    np.testing.assert_array_equal(_vessal.covariance_of(blocks, lab), whole)


@pytest.mark.slow
def test_precomputed_covariance_from_a_reiterable_pool(small_chunks):
    params, apply_fn, features, pool = _model_and_pool()

    class Loader:  # each iteration starts a new pass
        def __iter__(self):
            return iter([pool[:90], pool[90:]])

    kw = dict(key=3, features_fn=features, precompute_covariance=True, labeled=pool[:10])
    np.testing.assert_array_equal(aljax.vessal(params, apply_fn, Loader(), 20, length=len(pool), **kw),
                                  aljax.vessal(params, apply_fn, pool, 20, **kw))


# `vessal(..., labeled=x, seed_fisher=True)` before the API change (default internal chunk):
# `labeled=` now seeds A and Σ̂ on its own, so the same call without `seed_fisher` gives these picks.
SEEDED_BEFORE = {
    1: [23, 31, 32, 35, 36, 43, 47, 51, 56, 61, 66, 71, 72, 110, 150, 154, 176, 185, 221, 225],
    2: [23, 31, 32, 56, 66, 71, 72, 114, 115, 122, 213, 216, 221, 225, 19, 102, 172, 182, 54, 174],
}


@pytest.mark.parametrize("rank", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_labeled_alone_seeds_as_seed_fisher_did(rank):
    params, apply_fn, _, pool = _model_and_pool()
    seeded = aljax.vessal(params, apply_fn, pool, 20, key=1, rank=rank, labeled=pool[:30])
    np.testing.assert_array_equal(seeded, SEEDED_BEFORE[rank])
    assert not np.array_equal(seeded, aljax.vessal(params, apply_fn, pool, 20, key=1, rank=rank))


def test_regression_streams_the_features(small_chunks):
    # The Fisher of a Gaussian head is h hᵀ: the stream rows are the penultimate features h (rank 1).
    params, apply_fn, features, pool = _model_and_pool()
    _, h = logits_and_features(params, apply_fn, pool, problem_type="regression")
    np.testing.assert_allclose(h, features(params, pool), rtol=1e-5, atol=1e-6)
    out = aljax.vessal(params, apply_fn, pool, 20, key=2, problem_type="regression")
    np.testing.assert_array_equal(out, aljax.volume_stream(h, 20, key=2))


@pytest.mark.slow
def test_regression_with_labeled_set_and_single_output(small_chunks):
    params, apply_fn, features, pool = _model_and_pool()
    labeled = pool[:30]
    _, h = logits_and_features(params, apply_fn, pool, problem_type="regression")
    _, h_lab = logits_and_features(params, apply_fn, labeled, problem_type="regression")
    seeded = aljax.vessal(params, apply_fn, pool, 20, key=2, labeled=labeled, problem_type="regression",
                          precompute_covariance=True)
    ref = aljax.volume_stream(h, 20, key=2, labeled=h_lab, covariance=_vessal.covariance_of(h, h_lab))
    np.testing.assert_array_equal(seeded, ref)
    # One output per example, (batch,): the same rows.
    single = lambda p, x: (features(p, x) @ p["w2"] + p["b2"])[:, 0]  # noqa: E731
    np.testing.assert_array_equal(
        aljax.vessal(params, single, pool, 20, key=2, features_fn=features, problem_type="regression"),
        aljax.volume_stream(h, 20, key=2))


@pytest.mark.parametrize("streaming", [False, True])
def test_rank_above_the_classes_fails_before_the_forward_pass(streaming):
    params, apply_fn, features, pool = _model_and_pool(40)
    ran = []

    def counting_apply(p, x):  # counts executions of the model, not traces
        jax.debug.callback(lambda: ran.append(1))
        return apply_fn(p, x)

    source = (lambda: iter([pool[:20], pool[20:]])) if streaming else (lambda: pool)
    kw = dict(rate=0.5, features_fn=features)
    with pytest.raises(ValueError, match=r"aljax\.vessal: argument `rank` must be an int in \[1, 4\], got 5"):
        aljax.vessal(params, counting_apply, source(), rank=5, **kw)
    jax.effects_barrier()
    assert ran == []
    aljax.vessal(params, counting_apply, source(), rank=4, **kw)  # the counter does count a forward pass
    jax.effects_barrier()
    assert ran


# ---------------------------------------------------------------- bad input (the table: tests/test_bad_input.py)

_EMB = jnp.ones((10, 4))

_NAN = jnp.ones((10, 4)).at[3, 1].set(jnp.nan)

def test_volume_stream_refuses_nan_and_rate_under_jit():
    with pytest.raises(ValueError, match=r"aljax\.volume_stream: .*NaN"):
        aljax.volume_stream(_NAN, 2)
    with pytest.raises(TypeError, match=r"aljax\.volume_stream: `rate=`"):
        jax.jit(lambda e: aljax.volume_stream(e, rate=0.5))(_EMB)


def test_vessal_refuses_the_removed_seed_fisher():
    params, apply_fn, _, pool = _model_and_pool(40)
    with pytest.raises(TypeError, match="seed_fisher"):
        aljax.vessal(params, apply_fn, pool, 3, labeled=pool[:5], seed_fisher=True)


def test_vessal_declared_length_must_match(small_chunks):
    params, apply_fn, _, pool = _model_and_pool(40)
    kw = dict(rank=2)  # k = 20 at rank 2 in chunks of 64: the kernel compiled for the tests above
    with pytest.raises(ValueError, match=r"aljax\.vessal: .*declared length is 50"):
        aljax.vessal(params, apply_fn, iter([pool[:20], pool[20:]]), 20, length=50, **kw)
    with pytest.raises(ValueError, match=r"aljax\.vessal: .*more than its declared length 30"):
        aljax.vessal(params, apply_fn, iter([pool[:20], pool[20:]]), 20, length=30, **kw)
