"""aljax.stopping: Cohen's κ against a confusion-matrix reference, its properties, the degenerate
cases, each criterion's stopping round on constructed histories, and simulate(stop_set=...)."""

import json
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import aljax
from aljax import stopping
from test_simulate import N, _apply, _data, _make_eval, _train

# ---------------------------------------------------------------- slow, obviously correct references


def kappa_ref(a, b):
    """Cohen's κ from the confusion matrix, with loops: p_o is its trace / m, p_e the sum over
    classes of the row total times the column total / m²; κ = 1 when p_e = 1."""
    classes = sorted(set(a) | set(b))
    m = len(a)
    table = {(i, j): 0 for i in classes for j in classes}
    for x, z in zip(a, b):
        table[(x, z)] += 1
    p_o = sum(table[(c, c)] for c in classes) / m
    p_e = 0.0
    for c in classes:
        row = sum(table[(c, j)] for j in classes)
        col = sum(table[(i, c)] for i in classes)
        p_e += (row / m) * (col / m)
    if p_e == 1.0:
        return 1.0
    return (p_o - p_e) / (1 - p_e)


def kappa_exact(a, b):
    """:func:`kappa_ref` in exact rational arithmetic: ``(m·Σ_c n_cc − Σ_c row_c·col_c) /
    (m² − Σ_c row_c·col_c)``, 1 when every label is one class on both sides."""
    m, classes = len(a), set(a) | set(b)
    agree = sum(x == z for x, z in zip(a, b))
    chance = sum(a.count(c) * b.count(c) for c in classes)
    return Fraction(1) if chance == m * m else Fraction(m * agree - chance, m * m - chance)


def entropy_ref(p):
    return -sum(q * np.log(q) for q in p if q > 0)


def first_all_window_ref(kappas, threshold, window):
    for r in range(window, len(kappas) + 1):
        if all(k >= threshold for k in kappas[r - window:r]):
            return r
    return None


def first_mean_window_ref(kappas, threshold, window):
    for r in range(window, len(kappas) + 1):
        if sum(kappas[r - window:r]) / window >= threshold:
            return r
    return None


labelings = st.integers(1, 40).flatmap(lambda m: st.tuples(
    st.lists(st.integers(0, 4), min_size=m, max_size=m), st.lists(st.integers(0, 4), min_size=m, max_size=m)))

# ---------------------------------------------------------------- κ


@settings(max_examples=200, deadline=None)
@given(labelings)
def test_kappa_matches_the_confusion_matrix_reference(pair):
    a, b = pair
    assert stopping.cohen_kappa(np.array(a), np.array(b)) == pytest.approx(kappa_ref(a, b), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(labelings)
def test_kappa_is_symmetric_at_most_one_and_invariant_to_relabeling(pair):
    a, b = np.array(pair[0]), np.array(pair[1])
    k = stopping.cohen_kappa(a, b)
    assert k == pytest.approx(stopping.cohen_kappa(b, a), abs=1e-12)
    assert -1.0 - 1e-12 <= k <= 1.0 + 1e-12
    perm = np.random.default_rng(len(a)).permutation(5)
    assert stopping.cohen_kappa(perm[a], perm[b]) == pytest.approx(k, abs=1e-12)
    # so are the criteria: the same relabeling of every round changes nothing
    assert stopping.kappas(np.stack([a, b])).tolist() == pytest.approx([k], abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=40).filter(lambda a: len(set(a)) > 1))
def test_kappa_of_identical_predictions_is_one(a):
    assert stopping.cohen_kappa(a, a) == 1.0


def test_kappa_degenerate_one_class_everywhere():
    assert stopping.cohen_kappa([3, 3, 3, 3], [3, 3, 3, 3]) == 1.0        # p_e = 1: defined as 1
    # one class everywhere in one round only: p_e = 1/m·count < 1, κ = 0 (chance agreement)
    assert stopping.cohen_kappa([3, 3, 3, 3], [3, 3, 3, 1]) == pytest.approx(kappa_ref([3] * 4, [3, 3, 3, 1]))
    assert stopping.cohen_kappa([0, 0], [1, 1]) == pytest.approx(0.0)        # different single classes
    assert stopping.cohen_kappa([0, 1], [1, 0]) == pytest.approx(-1.0)
    assert stopping.cohen_kappa([0], [0]) == 1.0


def test_kappa_accepts_jax_arrays_and_num_classes():
    a, b = jnp.array([0, 1, 2, 2]), jnp.array([0, 1, 2, 1])
    assert stopping.cohen_kappa(a, b, num_classes=3) == pytest.approx(kappa_ref([0, 1, 2, 2], [0, 1, 2, 1]))


def test_kappas_of_labels_and_of_probabilities_agree():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(6, 30))
    labels = probs.argmax(-1)
    expected = [kappa_ref(labels[i].tolist(), labels[i + 1].tolist()) for i in range(5)]
    np.testing.assert_allclose(stopping.kappas(labels), expected, atol=1e-12)
    np.testing.assert_allclose(stopping.kappas(probs), expected, atol=1e-12)
    np.testing.assert_allclose(stopping.kappas(list(probs.astype(np.float32))), expected, atol=1e-12)
    assert stopping.kappas(labels[:1]).shape == (0,)


# ---------------------------------------------------------------- the criteria on constructed histories


def _history_with_kappas(pattern):
    """Label histories whose consecutive κ's are exactly 1 (``"="``) or below 0.99 (``"x"``):
    a round that differs flips one of 20 points."""
    base = np.array([0, 1] * 10)
    rows = [base.copy()]
    for step, c in enumerate(pattern):
        row = rows[-1].copy()
        if c == "x":
            row[step % 20] = 1 - row[step % 20]
        rows.append(row)
    return np.stack(rows)


@pytest.mark.parametrize("pattern, all_window, mean_window", [
    ("===", 3, 3),          # the earliest possible stop: round `window`
    ("==", None, None),      # fewer than window + 1 rounds: never
    ("", None, None),        # one round
    ("x===", 4, 4),
    ("==x===", 6, 6),
    ("x==x==x", None, None),
    ("xxxxx", None, None),
])
def test_kappa_criteria_stop_at_the_hand_computed_round(pattern, all_window, mean_window):
    history = _history_with_kappas(pattern)
    k = stopping.kappas(history)
    assert [v == 1.0 for v in k] == [c == "=" for c in pattern]
    assert all(v < 0.99 for v, c in zip(k, pattern) if c == "x")
    assert stopping.stabilizing_predictions(history) == all_window
    assert stopping.average_kappa(history) == mean_window


def test_average_kappa_lets_one_low_kappa_pass_and_the_all_window_rule_does_not():
    history = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]]   # κ: 1, .5, 1, 1
    assert stopping.average_kappa(history, threshold=0.8) == 3
    assert stopping.stabilizing_predictions(history, threshold=0.8) is None
    assert stopping.stabilizing_predictions(history, threshold=0.8, window=2) == 4
    assert stopping.stabilizing_predictions(history, threshold=0.8, window=1) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=4, max_size=10), st.integers(1, 4),
       st.sampled_from([0.3, 0.6, 0.9, 1.0]), st.integers(0, 10_000))
@example(flips_per_round=[1, 1, 2, 0], window=4, threshold=0.9, seed=640)   # a tie: skipped
@example(flips_per_round=[1, 1, 2, 0], window=3, threshold=0.9, seed=640)
def test_kappa_criteria_match_the_window_references(flips_per_round, window, threshold, seed):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, 3, size=12)]
    for flips in flips_per_round:
        row = rows[-1].copy()
        row[rng.choice(12, size=flips, replace=False)] = rng.integers(0, 3, size=flips)
        rows.append(row)
    history = np.stack(rows)
    k = [kappa_ref(history[i].tolist(), history[i + 1].tolist()) for i in range(len(rows) - 1)]
    # Where a κ, or a window's mean κ, equals the threshold exactly, rounding decides either way:
    # those histories are not compared (found: κ = 13/15 three times and 1 against 0.9).
    exact, t = [kappa_exact(history[i].tolist(), history[i + 1].tolist()) for i in range(len(rows) - 1)], \
        Fraction(str(threshold))
    assume(t not in exact and all(sum(exact[r - window:r]) / window != t for r in range(window, len(exact) + 1)))
    assert [float(x) for x in exact] == pytest.approx(k, abs=1e-12)
    assert stopping.stabilizing_predictions(history, threshold=threshold, window=window) == \
        first_all_window_ref(k, threshold, window)
    assert stopping.average_kappa(history, threshold=threshold, window=window) == \
        first_mean_window_ref(k, threshold, window)


def test_uncertainty_criteria_stop_at_the_hand_computed_round():
    sure, unsure = [0.9999, 0.0001], [0.55, 0.45]
    history = np.array([[unsure, unsure, sure], [unsure, sure, sure], [sure, sure, sure]])
    mean_h = [np.mean([entropy_ref(p) for p in round_]) for round_ in history]
    max_h = [max(entropy_ref(p) for p in round_) for round_ in history]
    for threshold in (0.01, 0.3, 0.5, 0.7):
        expect = next((r for r, v in enumerate(mean_h) if v < threshold), None)
        assert stopping.overall_uncertainty(history, threshold=threshold) == expect
        expect = next((r for r, v in enumerate(max_h) if v < threshold), None)
        assert stopping.max_confidence(history, threshold=threshold) == expect
    assert stopping.overall_uncertainty(history, threshold=0.3) == 1     # (0.69 + 2·0.001)/3 < 0.3
    assert stopping.max_confidence(history, threshold=0.3) == 2
    assert stopping.max_confidence(history) is None                      # H(sure) ≈ 0.001 > 0.001
    # least confidence: 1 − max p, so 0.45 then 0.0001
    assert stopping.max_confidence(history, threshold=0.5, measure="least_confidence") == 0
    assert stopping.max_confidence(history, threshold=0.01, measure="least_confidence") == 2


def test_stopping_points_runs_every_criterion_with_options():
    probs = np.eye(2)[_history_with_kappas("x===")] * 0.998 + 0.001
    points = stopping.stopping_points(probs)
    assert points == {"stabilizing_predictions": 4, "average_kappa": 4, "overall_uncertainty": 0,
                      "max_confidence": None}
    points = stopping.stopping_points(probs, stabilizing_predictions={"window": 2},
                                      max_confidence={"threshold": 0.1})
    assert points["stabilizing_predictions"] == 3 and points["max_confidence"] == 0
    with pytest.raises(ValueError, match="stopping.stopping_points"):
        stopping.stopping_points(probs, early_stopping={})
    with pytest.raises(TypeError, match="stopping.stopping_points"):
        stopping.stopping_points(probs, average_kappa=2)
    with pytest.raises(TypeError, match="stopping.stopping_points: argument `predictions`"):
        stopping.stopping_points(probs.argmax(-1))     # the uncertainty criteria need probabilities


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("call, exc, match", [
    (lambda: stopping.kappas([np.zeros(5, int), np.zeros(4, int)]), ValueError, r"same stop set.*\(4,\) at round 1"),
    (lambda: stopping.stabilizing_predictions([np.zeros((5, 3)) + 1 / 3] * 2 + [np.zeros((6, 3)) + 1 / 3]),
     ValueError, r"round 2"),
    (lambda: stopping.cohen_kappa([0, 1], [0, 1, 1]), ValueError, r"`b`.*2 points"),
    (lambda: stopping.cohen_kappa([0.0, 1.0], [0, 1]), TypeError, r"`a`.*integer"),
    (lambda: stopping.cohen_kappa([0, -1], [0, 1]), ValueError, r">= 0"),
    (lambda: stopping.cohen_kappa([0, 3], [0, 1], num_classes=3), ValueError, r"num_classes = 3"),
    (lambda: stopping.cohen_kappa([], []), ValueError, r"at least one"),
    (lambda: stopping.kappas(np.zeros((3, 4))), TypeError, r"integer"),
    (lambda: stopping.kappas(np.zeros((3, 0), int)), ValueError, r"non-empty stop set"),
    (lambda: stopping.kappas([]), ValueError, r"at least one round"),
    (lambda: stopping.kappas("labels"), TypeError, r"`predictions`"),
    (lambda: stopping.stabilizing_predictions(np.zeros((4, 3), int), threshold=1.5), ValueError, r"\(0, 1\]"),
    (lambda: stopping.stabilizing_predictions(np.zeros((4, 3), int), threshold=0.0), ValueError, r"\(0, 1\]"),
    (lambda: stopping.average_kappa(np.zeros((4, 3), int), window=0), ValueError, r"`window`"),
    (lambda: stopping.average_kappa(np.zeros((4, 3), int), window=2.0), TypeError, r"`window`"),
    (lambda: stopping.overall_uncertainty(np.full((2, 3, 2), np.nan)), ValueError, r"NaN"),
    (lambda: stopping.overall_uncertainty(np.zeros((2, 3, 2))), ValueError, r"summing to 1"),
    (lambda: stopping.overall_uncertainty(np.full((2, 3), 0.5)), ValueError, r"\(rounds, m, C\)"),
    (lambda: stopping.overall_uncertainty(np.full((2, 3, 2), 0.5), threshold=-1), ValueError, r"`threshold`"),
    (lambda: stopping.max_confidence(np.full((2, 3, 2), 0.5), measure="margin"), ValueError, r"`measure`"),
    (lambda: stopping.max_confidence(np.full((2, 3, 1), 1.0)), ValueError, r"2 classes"),
])
def test_bad_histories_are_refused_before_any_work(call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call()
    assert "aljax.stopping." in str(info.value)


# ---------------------------------------------------------------- simulate(stop_set=...)


def _stop_set():
    return np.random.default_rng(7).normal(size=(40, 3)).astype(np.float32)


def test_simulate_records_the_stopping_points_of_the_recorded_predictions():
    x, y = _data()
    stop = _stop_set()
    res = aljax.simulate(aljax.margin, _train, _make_eval(x, y), x, y, apply_fn=_apply, initial=6, per_round=5,
                         rounds=8, key=0, progress=False, stop_set=stop)
    rec = res["stopping"]
    assert json.loads(json.dumps(res)) == res
    # Replay: the model of every round (same labeled set, same training key), predicted on the stop set.
    pool = aljax.LabelPool.from_dict(res["pool"])
    probs = []
    for r in range(9):
        labeled = pool.labeled[:6 + 5 * r]
        W = _train(x[labeled], y[labeled], jax.random.fold_in(jax.random.key(0), r))
        logits = np.asarray(_apply(W, stop), np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    probs = np.stack(probs)
    labels = probs.argmax(-1)
    k = [kappa_ref(labels[i].tolist(), labels[i + 1].tolist()) for i in range(8)]
    np.testing.assert_allclose(rec["kappas"], k, atol=1e-12)
    np.testing.assert_allclose(rec["mean_entropy"], [np.mean([entropy_ref(p) for p in pr]) for pr in probs],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rec["max_entropy"], [max(entropy_ref(p) for p in pr) for pr in probs],
                               rtol=1e-4, atol=1e-6)
    expected = {"stabilizing_predictions": first_all_window_ref(k, 0.99, 3),
                "average_kappa": first_mean_window_ref(k, 0.99, 3)}
    for name, r in expected.items():
        got = rec["criteria"][name]
        assert got["round"] == r
        assert got["labels"] == (None if r is None else res["labels"][r])
        assert got["metric"] == (None if r is None else res["metrics"][r])
    assert rec["stop_set_size"] == 40
    assert rec["final_metric"] == res["metrics"][-1] and rec["final_labels"] == res["labels"][-1]
    assert set(rec["criteria"]) == {"stabilizing_predictions", "average_kappa", "overall_uncertainty",
                                    "max_confidence"}


def test_simulate_stop_set_criteria_equal_stopping_points_on_the_replayed_probabilities(monkeypatch):
    """The harness hands exactly the per-round softmax to stopping_points: spy on it."""
    from aljax import _simulate

    seen = []
    real = stopping.stopping_points
    monkeypatch.setattr(_simulate.stopping, "stopping_points", lambda h: seen.append(h) or real(h))
    x, y = _data()
    res = aljax.simulate(aljax.random_sample, _train, _make_eval(x, y), x, y, apply_fn=_apply, initial=6,
                         per_round=5, rounds=3, key=1, progress=False, stop_set=_stop_set())
    (history,) = seen
    assert history.shape == (4, 40, 2)
    np.testing.assert_allclose(history.sum(-1), 1.0, atol=1e-12)
    assert {n: c["round"] for n, c in res["stopping"]["criteria"].items()} == real(history)


def test_simulate_without_a_stop_set_is_unchanged():
    x, y = _data()
    kw = dict(apply_fn=_apply, initial=6, per_round=5, rounds=2, key=0, progress=False)
    plain = aljax.simulate(aljax.margin, _train, _make_eval(x, y), x, y, **kw)
    with_stop = aljax.simulate(aljax.margin, _train, _make_eval(x, y), x, y, stop_set=_stop_set(), **kw)
    assert "stopping" not in plain
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds") and k != "stopping"}   # noqa: E731
    assert strip(plain) == strip(with_stop)


def test_simulate_refuses_a_stop_set_unlike_x_or_without_a_model():
    x, y = _data()
    kw = dict(initial=6, per_round=5, rounds=1, progress=False)
    ev = _make_eval(x, y)
    with pytest.raises(ValueError, match=r"aljax.simulate: argument `stop_set`.*trailing shape \(3,\)"):
        aljax.simulate(aljax.margin, _train, ev, x, y, apply_fn=_apply, stop_set=np.zeros((5, 4), np.float32), **kw)
    with pytest.raises(ValueError, match=r"aljax.simulate: argument `stop_set`.*apply_fn"):
        aljax.simulate(aljax.random_sample, _train, ev, x, y, apply_fn=None, stop_set=_stop_set(), **kw)
    with pytest.raises(ValueError, match=r"aljax.simulate: argument `stop_set`.*empty"):
        aljax.simulate(aljax.margin, _train, ev, x, y, apply_fn=_apply, stop_set=np.zeros((0, 3), np.float32), **kw)
    with pytest.raises(ValueError, match=r"aljax.simulate: argument `apply_fn`.*\(m, C\)"):
        aljax.simulate(aljax.margin, _train, ev, x, y, apply_fn=lambda W, xb: (xb @ W)[:, 0],
                       stop_set=_stop_set(), **kw)
    with pytest.raises(ValueError, match=r"aljax.simulate: the logits .* NaN"):
        aljax.simulate(aljax.random_sample, _train, ev, x, y, apply_fn=lambda W, xb: xb @ W * np.nan,
                       stop_set=_stop_set(), **kw)
    assert N == len(x)
