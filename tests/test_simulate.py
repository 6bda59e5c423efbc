"""simulate end to end on a tiny problem, learning-curve statistics, plots, bad input."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aljax

N, D = 80, 3


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.int32)
    return x, y


def _train(xl, yl, key):
    """Ridge regression on ±1 targets as a 2-class 'network': logits = [−s, s]; a few jitter
    features from ``key`` so that the training key matters."""
    t = 2.0 * yl - 1
    w = np.linalg.solve(xl.T @ xl + 1e-2 * np.eye(D), xl.T @ t)
    w = w + 1e-3 * np.asarray(jax.random.normal(key, (D,)))
    return jnp.asarray(np.stack([-w, w], axis=1), jnp.float32)


def _apply(W, xb):
    return xb @ W


def _make_eval(x, y):
    return lambda W: float(np.mean(np.argmax(x @ np.asarray(W), axis=1) == y))


def _run(strategy, key=0, **kw):
    x, y = _data()
    opts = dict(apply_fn=_apply, initial=6, per_round=5, rounds=4, key=key, progress=False)
    opts.update(kw)
    return aljax.simulate(strategy, _train, _make_eval(x, y), x, y, **opts)


def test_end_to_end_records_every_round():
    res = _run(aljax.margin)
    assert res["labels"] == [6, 11, 16, 21, 26]
    assert len(res["metrics"]) == 5 and all(0.0 <= m <= 1.0 for m in res["metrics"])
    assert len(res["selected"]) == 4 and all(len(s) == 5 for s in res["selected"])
    assert len(res["select_seconds"]) == 4 and len(res["train_seconds"]) == 5
    assert res["strategy"] == "margin" and res["seed"] == 0
    # every label appears once; the final pool holds the initial set then the picks in order
    pool = aljax.LabelPool.from_dict(res["pool"])
    flat = [i for s in res["selected"] for i in s]
    assert pool.num_labeled == 26 and len(set(pool.labeled.tolist())) == 26
    assert pool.labeled[6:].tolist() == flat
    assert pool.round_of(flat).tolist() == [r for r in range(1, 5) for _ in range(5)]
    # JSON round trip
    assert json.loads(json.dumps(res)) == res


def test_margin_picks_match_a_manual_loop():
    """The harness's picks equal a hand-written loop using the same pool and model."""
    x, y = _data()
    res = _run(aljax.margin)
    pool = aljax.LabelPool(N).label(aljax.LabelPool.from_dict(res["pool"]).labeled[:6])
    for r in range(1, 5):
        lab = pool.labeled
        W = _train(x[lab], y[lab], jax.random.fold_in(jax.random.key(0), r - 1))
        picks = aljax.margin(W, _apply, x[pool.unlabeled], 5)
        chosen = pool.from_unlabeled_index(picks)
        assert chosen.tolist() == res["selected"][r - 1]
        pool = pool.label(chosen)


def test_same_key_same_run_and_strategies_are_paired():
    a, b = _run(aljax.random_sample, key=3), _run(aljax.random_sample, key=3)
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds")}   # noqa: E731
    assert strip(a) == strip(b)
    c = _run(aljax.margin, key=3)
    # same initial set and same first model (same training key) across strategies
    assert a["pool"]["labeled"][:6] == c["pool"]["labeled"][:6]
    assert a["metrics"][0] == c["metrics"][0]
    d = _run(aljax.random_sample, key=4)
    assert d["pool"]["labeled"][:6] != a["pool"]["labeled"][:6]


def test_strategy_sees_unlabeled_rows_and_gets_a_key():
    x, _ = _data()
    seen = []

    def spy(params, apply_fn, pool, k, *, key):
        seen.append((np.asarray(pool).copy(), k, key))
        return jnp.arange(k, dtype=jnp.int32)[::-1]

    res = _run(spy, rounds=2, key=jax.random.key(1), name="spy")
    assert res["strategy"] == "spy" and res["seed"] is None
    lab0 = res["pool"]["labeled"][:6]
    rows = np.setdiff1d(np.arange(N), lab0)
    np.testing.assert_array_equal(seen[0][0], x[rows])
    assert seen[0][1] == 5
    assert res["selected"][0] == rows[:5][::-1].tolist()
    assert not np.array_equal(jax.random.key_data(seen[0][2]), jax.random.key_data(seen[1][2]))


def test_zero_rounds_and_progress_bar(capsys):
    res = _run(aljax.random_sample, rounds=0, progress=True)
    assert res["labels"] == [6] and res["selected"] == []


def test_partial_strategy_options():
    res = _run(functools.partial(aljax.coreset, features_fn=lambda W, x: x), name="coreset")
    assert res["labels"][-1] == 26


@pytest.mark.parametrize("bad, msg", [
    (lambda p, f, x, k, key: jnp.zeros(k, jnp.int32), "duplicate"),
    (lambda p, f, x, k, key: jnp.arange(k + 1), "must return 5"),
    (lambda p, f, x, k, key: jnp.arange(k) + 10_000, "outside"),
    (lambda p, f, x, k, key: jnp.ones(k), "integer"),
])
def test_misbehaving_strategy_is_refused(bad, msg):
    with pytest.raises(ValueError) as info:
        _run(bad)
    assert "aljax.simulate" in str(info.value) and "`strategy`" in str(info.value) and msg in str(info.value)


def test_bad_data_and_callables():
    x, y = _data()
    ev = _make_eval(x, y)
    kw = dict(apply_fn=_apply, initial=2, per_round=2, rounds=1, progress=False)
    with pytest.raises(ValueError, match=r"aljax.simulate: `x` and `y` .* 80 and 79"):
        aljax.simulate(aljax.margin, _train, ev, x, y[:-1], **kw)
    with pytest.raises(ValueError, match=r"aljax.simulate: argument `x`.*empty"):
        aljax.simulate(aljax.margin, _train, ev, x[:0], y[:0], **kw)
    for pos, name in ((0, "strategy"), (1, "train_fn"), (2, "eval_fn")):
        args = [aljax.margin, _train, ev]
        args[pos] = "nope"
        with pytest.raises(TypeError, match=f"aljax.simulate: argument `{name}`"):
            aljax.simulate(*args, x, y, **kw)
    with pytest.raises(TypeError, match="aljax.simulate: argument `eval_fn`"):
        aljax.simulate(aljax.margin, _train, lambda W: "good", x, y, **kw)


# ---------------------------------------------------------------- curve statistics

def _trapz_ref(labels, metrics):
    labels, metrics = np.asarray(labels, float), np.asarray(metrics, float)
    area = sum((labels[i + 1] - labels[i]) * (metrics[i + 1] + metrics[i]) / 2 for i in range(len(labels) - 1))
    return area / (labels[-1] - labels[0])


def test_curve_area_matches_trapezoid_reference():
    rng = np.random.default_rng(0)
    labels = np.cumsum(rng.integers(1, 20, size=9)).tolist()
    metrics = rng.uniform(size=9).tolist()
    assert aljax.curve_area({"labels": labels, "metrics": metrics}) == pytest.approx(_trapz_ref(labels, metrics))
    assert aljax.curve_area({"labels": [5], "metrics": [0.3]}) == pytest.approx(0.3)


def test_relative_auc_pairs_by_seed_and_reports_spread():
    lab = [10, 20, 30]
    runs = {
        "random": [{"seed": s, "labels": lab, "metrics": [0.5, 0.6, 0.7 + s / 100]} for s in (2, 0, 1)],
        "margin": [{"seed": s, "labels": lab, "metrics": [0.5, 0.7, 0.8 + s / 50]} for s in (0, 1, 2)],
    }
    out = aljax.relative_auc(runs)
    by_seed = {r["seed"]: r for r in runs["random"]}
    expected = [_trapz_ref(lab, r["metrics"]) / _trapz_ref(lab, by_seed[r["seed"]]["metrics"])
                for r in runs["margin"]]
    assert out["margin"]["per_seed"] == pytest.approx(expected)
    assert out["margin"]["mean"] == pytest.approx(np.mean(expected))
    assert out["margin"]["std"] == pytest.approx(np.std(expected, ddof=1))
    assert out["random"]["mean"] == pytest.approx(1.0) and out["random"]["std"] == pytest.approx(0.0)
    assert out["margin"]["mean"] > 1
    json.dumps(out)


def test_relative_auc_bad_input():
    run = {"seed": 0, "labels": [1, 2], "metrics": [0.5, 0.6]}
    with pytest.raises(ValueError, match="aljax.relative_auc: argument `baseline`"):
        aljax.relative_auc({"margin": [run]})
    with pytest.raises(ValueError, match=r"aljax.relative_auc: argument `results_by_strategy\['random'\]`"):
        aljax.relative_auc({"random": [{"labels": [1, 2], "metrics": [0.5]}]})
    with pytest.raises(ValueError, match="aljax.relative_auc: argument `results_by_strategy`"):
        aljax.relative_auc({})
    with pytest.raises(ValueError, match="shares no seed"):
        aljax.relative_auc({"random": [run], "margin": [dict(run, seed=1)]})


def test_plot_learning_curves_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    runs = {"random": [_run(aljax.random_sample, key=s, rounds=2) for s in range(2)],
            "margin": [_run(aljax.margin, key=s, rounds=2) for s in range(2)]}
    path = aljax.plot_learning_curves(runs, tmp_path / "curves.png", title="tiny")
    data = (tmp_path / "curves.png").read_bytes()
    assert path.endswith("curves.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="aljax.plot_learning_curves"):
        aljax.plot_learning_curves({}, tmp_path / "x.png")


def test_labeled_inputs_are_passed_to_strategies_that_take_them():
    x, _ = _data()
    seen = []

    def spy(params, apply_fn, pool, k, *, key, labeled=None):
        seen.append(None if labeled is None else np.asarray(labeled).copy())
        return jnp.arange(k, dtype=jnp.int32)

    res = _run(spy, rounds=2)
    lab = res["pool"]["labeled"]
    np.testing.assert_array_equal(seen[0], x[lab[:6]])
    np.testing.assert_array_equal(seen[1], x[lab[:11]])
    _run(spy, rounds=1, pass_labeled=False)
    assert seen[-1] is None
    # coreset conditioned on the labeled set: the harness equals a direct call
    res = _run(functools.partial(aljax.coreset, features_fn=lambda W, x: x), rounds=1)
    pool = aljax.LabelPool(N).label(res["pool"]["labeled"][:6])
    W = _train(x[pool.labeled], _data()[1][pool.labeled], jax.random.fold_in(jax.random.key(0), 0))
    picks = aljax.coreset(W, _apply, x[pool.unlabeled], 5, labeled=x[pool.labeled], features_fn=lambda W, x: x)
    assert pool.from_unlabeled_index(picks).tolist() == res["selected"][0]


def test_labeled_inputs_go_to_every_strategy_with_a_labeled_keyword():
    from aljax._simulate import _accepts_labeled

    def keyword(params, apply_fn, pool, k, *, key=0, labeled=None):
        return None

    def positional(params, apply_fn, pool, k, key=0, labeled=None):
        return None

    def anything(params, apply_fn, pool, k, **options):
        return None

    assert _accepts_labeled(keyword) and _accepts_labeled(positional)
    assert _accepts_labeled(functools.partial(keyword, key=1))
    assert not _accepts_labeled(anything) and not _accepts_labeled(len)
    assert _accepts_labeled(aljax.coreset) and _accepts_labeled(aljax.bait) and not _accepts_labeled(aljax.margin)
    # aljax.vessal seeds its statistics with `labeled` on its own (docs/api.md): no flag to set.
    assert _accepts_labeled(aljax.vessal)


@pytest.mark.slow   # compiles VeSSAL; the fast tier checks the labeled hand-over with a spy above
def test_vessal_runs_in_the_harness_seeded_with_the_labeled_set():
    seen = []

    def vessal(params, apply_fn, pool, k, *, key=0, labeled=None):
        seen.append(labeled.shape[0])
        return aljax.vessal(params, apply_fn, pool, k, key=key, labeled=labeled, features_fn=lambda W, x: x)

    res = _run(vessal, rounds=1)
    assert seen == [6] and res["labels"] == [6, 11] and len(set(res["selected"][0])) == 5
