"""LabelPool: an immutable record of which examples are labeled, and when."""

from __future__ import annotations

import json
import numbers
import os
from typing import Any

import numpy as np

from . import _validate

_FORMAT = "aljax.LabelPool/1"


def _readonly(x: np.ndarray) -> np.ndarray:
    x = np.array(x, copy=True)
    x.setflags(write=False)
    return x


class LabelPool:
    """Which examples of a dataset are labeled, in which round each was labeled, and the map
    between selector output (indices into the unlabeled subset) and dataset indices.

    Immutable: :meth:`label` returns a new pool. Arrays it hands out are read-only NumPy arrays.

    Args:
      n: the dataset size, a Python int ``>= 1``.

    Example:
      >>> import aljax
      >>> pool = aljax.LabelPool(10).label([3, 7])           # round 0
      >>> pool.unlabeled.tolist()
      [0, 1, 2, 4, 5, 6, 8, 9]
      >>> picks = [0, 2]                                      # a selector's output on x[pool.unlabeled]
      >>> pool = pool.label(pool.from_unlabeled_index(picks))  # round 1: dataset indices 0 and 2
      >>> pool.labeled.tolist(), pool.round_of([0, 3]).tolist()
      ([3, 7, 0, 2], [1, 0])
    """

    __slots__ = ("_n", "_order", "_rounds")

    def __init__(self, n: int):
        self._n = _validate.check_int("LabelPool", "n", n, low=1)
        self._order = _readonly(np.zeros(0, np.int64))
        self._rounds = _readonly(np.full(self._n, -1, np.int64))

    @classmethod
    def _make(cls, n: int, order: np.ndarray, rounds: np.ndarray) -> "LabelPool":
        obj = object.__new__(cls)
        obj._n, obj._order, obj._rounds = n, _readonly(order), _readonly(rounds)
        return obj

    def __setattr__(self, name, value):
        if name in self.__slots__ and not hasattr(self, name):
            object.__setattr__(self, name, value)
        else:
            raise AttributeError("aljax.LabelPool is immutable; label() returns a new pool.")

    # -- views --------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        """The dataset size."""
        return self._n

    @property
    def labeled(self) -> np.ndarray:
        """``(n_labeled,)`` dataset indices, in the order they were labeled."""
        return self._order

    @property
    def unlabeled(self) -> np.ndarray:
        """``(n − n_labeled,)`` dataset indices still in the pool, ascending: the positions a
        selector's output refers to when it was run on ``x[pool.unlabeled]``."""
        return _readonly(np.flatnonzero(self._rounds < 0))

    @property
    def mask(self) -> np.ndarray:
        """``(n,)`` bool, True where labeled."""
        return _readonly(self._rounds >= 0)

    @property
    def rounds(self) -> np.ndarray:
        """``(n,)`` the round each example was labeled in, ``-1`` where still unlabeled."""
        return self._rounds

    @property
    def num_labeled(self) -> int:
        return int(self._order.size)

    @property
    def num_unlabeled(self) -> int:
        return self._n - self.num_labeled

    @property
    def num_rounds(self) -> int:
        """Number of rounds so far (``max round + 1``; 0 when nothing is labeled)."""
        return int(self._rounds.max()) + 1 if self.num_labeled else 0

    def __len__(self) -> int:
        return self._n

    def __eq__(self, other) -> bool:
        if not isinstance(other, LabelPool):
            return NotImplemented
        return (self._n == other._n and np.array_equal(self._order, other._order)
                and np.array_equal(self._rounds, other._rounds))

    __hash__ = None

    def __repr__(self) -> str:
        return (f"LabelPool(n={self._n}, labeled={self.num_labeled}, unlabeled={self.num_unlabeled}, "
                f"rounds={self.num_rounds})")

    # -- index maps ---------------------------------------------------------------------------

    def round_of(self, indices) -> np.ndarray:
        """The round each dataset index was labeled in (``-1`` if unlabeled)."""
        return self._rounds[self._as_indices("LabelPool.round_of", "indices", indices, self._n)]

    def from_unlabeled_index(self, positions) -> np.ndarray:
        """Map positions in :attr:`unlabeled` (a selector's output) to dataset indices."""
        unlabeled = self.unlabeled
        positions = self._as_indices("LabelPool.from_unlabeled_index", "positions", positions, unlabeled.size)
        return _readonly(unlabeled[positions])

    def to_unlabeled_index(self, indices) -> np.ndarray:
        """Map dataset indices of unlabeled examples to their positions in :attr:`unlabeled`."""
        fn = "LabelPool.to_unlabeled_index"
        indices = self._as_indices(fn, "indices", indices, self._n)
        taken = indices[self._rounds[indices] >= 0]
        if taken.size:
            raise ValueError(_validate.message(fn, "indices", "indices of unlabeled examples",
                                               f"already labeled index(es) {taken[:10].tolist()}"))
        position = np.cumsum(self._rounds < 0) - 1
        return _readonly(position[indices])

    # -- labeling -----------------------------------------------------------------------------

    def label(self, indices, *, round: int | None = None) -> "LabelPool":  # noqa: A002
        """A new pool with ``indices`` (dataset indices) labeled.

        Args:
          indices: dataset indices, a sequence or 1-D integer array; none may be labeled already,
            none may repeat, all must lie in ``[0, n)``.
          round: the round to record, a Python int ``>=`` the last round; default: the next
            round (0 for the first call).

        Returns:
          A new :class:`LabelPool`.

        Raises:
          ValueError: an index out of range, repeated, or already labeled.
        """
        fn = "LabelPool.label"
        indices = self._as_indices(fn, "indices", indices, self._n)
        unique, counts = np.unique(indices, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(_validate.message(fn, "indices", "indices without repeats",
                                               f"repeated index(es) {unique[counts > 1][:10].tolist()}"))
        taken = indices[self._rounds[indices] >= 0]
        if taken.size:
            raise ValueError(_validate.message(
                fn, "indices", "indices not labeled yet",
                f"already labeled index(es) {taken[:10].tolist()} (labeled in round(s) "
                f"{self._rounds[taken[:10]].tolist()})"))
        last = self.num_rounds - 1
        if round is None:
            round = last + 1
        else:
            round = _validate.check_int(fn, "round", round, low=max(last, 0))
        rounds = self._rounds.copy()
        rounds[indices] = round
        return LabelPool._make(self._n, np.concatenate([self._order, indices]), rounds)

    @staticmethod
    def _as_indices(fn: str, arg: str, indices: Any, size: int) -> np.ndarray:
        if isinstance(indices, numbers.Integral) and not isinstance(indices, bool):
            indices = [indices]
        arr = np.asarray(indices)
        if arr.size == 0:
            return np.zeros(0, np.int64)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(_validate.message(fn, arg, "integer indices", f"dtype {arr.dtype}"))
        if arr.ndim != 1:
            raise ValueError(_validate.message(fn, arg, "a 1-D sequence of indices", f"shape {arr.shape}"))
        arr = arr.astype(np.int64)
        bad = arr[(arr < 0) | (arr >= size)]
        if bad.size:
            raise ValueError(_validate.message(fn, arg, f"indices in [0, {size})",
                                               f"out-of-range index(es) {bad[:10].tolist()}"))
        return arr

    # -- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (``format``, ``n``, ``labeled`` in order, and their ``rounds``)."""
        return {"format": _FORMAT, "n": self._n, "labeled": self._order.tolist(),
                "rounds": self._rounds[self._order].tolist()}

    @classmethod
    def from_dict(cls, state: dict) -> "LabelPool":
        """Rebuild a pool from :meth:`to_dict`'s output (validated)."""
        fn = "LabelPool.from_dict"
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(_validate.message(fn, "state", f"a dict with format {_FORMAT!r}",
                                               repr(state)[:80]))
        labeled, rounds = state.get("labeled", []), state.get("rounds", [])
        if len(labeled) != len(rounds):
            raise ValueError(_validate.message(fn, "state", "as many rounds as labeled indices",
                                               f"{len(labeled)} indices and {len(rounds)} rounds"))
        pool = cls(state["n"])
        rounds = np.asarray(rounds, np.int64)
        if rounds.size and (np.any(rounds < 0) or np.any(np.diff(rounds) < 0)):
            raise ValueError(_validate.message(fn, "state", "non-negative, non-decreasing rounds",
                                               rounds[:10].tolist()))
        for r in np.unique(rounds):
            pool = pool.label(np.asarray(labeled, np.int64)[rounds == r], round=int(r))
        return pool

    def save(self, path: str | os.PathLike) -> None:
        """Write the state as JSON to ``path``."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabelPool":
        """Read a pool written by :meth:`save`."""
        with open(path) as f:
            return cls.from_dict(json.load(f))
