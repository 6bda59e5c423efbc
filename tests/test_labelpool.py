"""LabelPool: invariants under random labeling sequences, index maps, persistence, bad input."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aljax
from aljax import LabelPool


@st.composite
def label_sequences(draw):
    """A dataset size and a list of rounds, each a set of *positions in the current unlabeled
    subset* (what a selector returns)."""
    n = draw(st.integers(1, 60))
    rounds, remaining = [], n
    for _ in range(draw(st.integers(0, 6))):
        if remaining == 0:
            break
        k = draw(st.integers(1, remaining))
        rounds.append(draw(st.lists(st.integers(0, remaining - 1), min_size=k, max_size=k, unique=True)))
        remaining -= k
    return n, rounds


def _check_invariants(pool, history):
    n = pool.n
    labeled, unlabeled = pool.labeled, pool.unlabeled
    # a partition of range(n), unlabeled ascending, labeled in labeling order
    assert sorted(labeled.tolist() + unlabeled.tolist()) == list(range(n))
    assert np.all(np.diff(unlabeled) > 0)
    np.testing.assert_array_equal(labeled, [i for r in history for i in r])
    assert pool.num_labeled + pool.num_unlabeled == n
    np.testing.assert_array_equal(pool.mask, np.isin(np.arange(n), labeled))
    # rounds: the index of the call that labeled each index, -1 elsewhere
    expected_rounds = np.full(n, -1)
    for r, idx in enumerate(history):
        expected_rounds[idx] = r
    np.testing.assert_array_equal(pool.rounds, expected_rounds)
    assert pool.num_rounds == len(history)
    # the two index maps are inverse
    positions = np.arange(pool.num_unlabeled)
    np.testing.assert_array_equal(pool.to_unlabeled_index(pool.from_unlabeled_index(positions)), positions)


@settings(max_examples=60, deadline=None)
@given(label_sequences())
def test_invariants_hold_along_any_labeling_sequence(seq):
    n, rounds = seq
    pool, history = LabelPool(n), []
    _check_invariants(pool, history)
    for positions in rounds:
        before = pool
        chosen = pool.from_unlabeled_index(positions)
        # the map agrees with a plain list of the unlabeled indices
        assert chosen.tolist() == [sorted(set(range(n)) - {i for r in history for i in r})[p] for p in positions]
        pool = pool.label(chosen)
        history.append(chosen.tolist())
        _check_invariants(pool, history)
        # immutability: the old pool is unchanged
        assert before.num_labeled == pool.num_labeled - len(positions)
        # labeling any of them again is refused
        with pytest.raises(ValueError, match="already labeled"):
            pool.label(chosen[:1])


@settings(max_examples=30, deadline=None)
@given(seq=label_sequences())
def test_save_load_round_trip(tmp_path_factory, seq):
    n, rounds = seq
    pool = LabelPool(n)
    for positions in rounds:
        pool = pool.label(pool.from_unlabeled_index(positions))
    path = tmp_path_factory.mktemp("lp") / "pool.json"
    pool.save(path)
    loaded = LabelPool.load(path)
    assert loaded == pool
    np.testing.assert_array_equal(loaded.rounds, pool.rounds)
    np.testing.assert_array_equal(loaded.labeled, pool.labeled)
    assert json.loads(json.dumps(pool.to_dict())) == pool.to_dict()


def test_explicit_rounds_and_round_of():
    pool = LabelPool(8).label([5, 1], round=0).label([2], round=0).label([7], round=3)
    assert pool.round_of([5, 1, 2, 7, 0]).tolist() == [0, 0, 0, 3, -1]
    assert pool.num_rounds == 4
    assert pool.label([0]).round_of(0).tolist() == [4]
    with pytest.raises(ValueError, match="`round`"):
        pool.label([0], round=2)


def test_arrays_are_read_only_and_pool_is_immutable():
    pool = LabelPool(5).label([1, 3])
    for arr in (pool.labeled, pool.unlabeled, pool.rounds, pool.mask):
        with pytest.raises(ValueError):
            arr[0] = 0
    with pytest.raises(AttributeError):
        pool._n = 3
    assert "labeled=2" in repr(pool)


def test_accepts_jax_int32_selector_output():
    import jax.numpy as jnp

    pool = LabelPool(6).label([0])
    picks = jnp.array([4, 0], jnp.int32)
    assert pool.from_unlabeled_index(picks).tolist() == [5, 1]


BAD = [
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
]


@pytest.mark.parametrize("call, exc, parts", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input(call, exc, parts):
    with pytest.raises(exc) as info:
        call()
    for part in parts:
        assert part in str(info.value), (part, str(info.value))


def test_public_name():
    assert aljax.LabelPool is LabelPool
