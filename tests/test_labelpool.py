"""LabelPool: invariants under random labeling sequences, index maps, persistence, bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap

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


def _old_and_new_pools():
    old = LabelPool(50_000).label([7, 3]).label([11])
    new = LabelPool(50_000).label(np.arange(0, 50_000, 2))     # about 240 kB of JSON
    return old, new


# The child saves `new` over `old`'s file with json.dump swapped for one that writes half the
# JSON, flushes it, tells the parent and waits to be killed: a writer stopped mid-save, the same
# point on every run. (It relies on save writing through json.dump: the parent fails loudly,
# rather than passing, if the child never gets there.)
_KILLED_WRITER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from aljax import LabelPool

    path = sys.argv[1]
    new = LabelPool(50_000).label(np.arange(0, 50_000, 2))

    def half_then_wait(obj, fp, **kw):
        text = json.dumps(obj, **kw)
        fp.write(text[: len(text) // 2])
        fp.flush()
        os.fsync(fp.fileno())
        print("half written", flush=True)
        time.sleep(120)

    json.dump = half_then_wait
    new.save(path)
""")


def test_a_writer_killed_mid_save_leaves_the_previous_file_intact(tmp_path):
    old, _ = _old_and_new_pools()
    path = tmp_path / "pool.json"
    old.save(path)
    root = os.path.dirname(os.path.dirname(aljax.__file__))          # the child imports this aljax
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline()
        assert line.strip() == "half written", (line, child.stderr.read() if child.poll() is not None else "")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert LabelPool.load(path) == old
    # SIGKILL leaves no chance to clean up: at most the half-written temporary file remains,
    # hidden beside the target, under the name save documents.
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "pool.json")
    assert all(name.startswith(".pool.json.") and name.endswith(".tmp") for name in leftovers), leftovers


def test_an_error_mid_save_leaves_the_previous_file_and_no_temporary_file(tmp_path, monkeypatch):
    old, new = _old_and_new_pools()
    path = tmp_path / "pool.json"
    old.save(path)

    def half_then_disk_full(obj, fp, **kw):
        text = json.dumps(obj, **kw)
        fp.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", half_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
        new.save(path)
    monkeypatch.undo()
    assert LabelPool.load(path) == old
    assert [p.name for p in tmp_path.iterdir()] == ["pool.json"]
    new.save(path)
    assert LabelPool.load(path) == new and [p.name for p in tmp_path.iterdir()] == ["pool.json"]


def test_save_syncs_the_file_before_renaming_it(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    LabelPool(3).label([1]).save(tmp_path / "pool.json")
    assert events[:2] == ["fsync", "replace"]
    assert LabelPool.load(tmp_path / "pool.json") == LabelPool(3).label([1])


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_save_keeps_permissions_and_writes_through_a_symlink(tmp_path):
    path = tmp_path / "pool.json"
    LabelPool(3).save(path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask      # as open(path, "w") would make it
    path.chmod(0o640)
    LabelPool(3).label([0]).save(path)
    assert (path.stat().st_mode & 0o777) == 0o640
    link = tmp_path / "link.json"
    link.symlink_to(path)
    LabelPool(3).label([2]).save(link)
    assert link.is_symlink() and LabelPool.load(path) == LabelPool(3).label([2])


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


def test_public_name():
    assert aljax.LabelPool is LabelPool
