"""LabelPool: an immutable record of which examples are labeled, and when."""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import stat
import tempfile
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
        """The dataset size.

        Example:
          >>> import aljax
          >>> aljax.LabelPool(10).n
          10
        """
        return self._n

    @property
    def labeled(self) -> np.ndarray:
        """``(n_labeled,)`` dataset indices, in the order they were labeled.

        Example:
          >>> import aljax
          >>> aljax.LabelPool(10).label([7, 2]).label([5]).labeled.tolist()
          [7, 2, 5]
        """
        return self._order

    @property
    def unlabeled(self) -> np.ndarray:
        """``(n − n_labeled,)`` dataset indices still in the pool, ascending; they are the positions a
        selector's output refers to when it was run on ``x[pool.unlabeled]``.

        Example:
          >>> import aljax
          >>> aljax.LabelPool(5).label([3, 0]).unlabeled.tolist()
          [1, 2, 4]
        """
        return _readonly(np.flatnonzero(self._rounds < 0))

    @property
    def mask(self) -> np.ndarray:
        """``(n,)`` bool, True where labeled.

        Example:
          >>> import aljax
          >>> aljax.LabelPool(4).label([1]).mask.tolist()
          [False, True, False, False]
        """
        return _readonly(self._rounds >= 0)

    @property
    def rounds(self) -> np.ndarray:
        """``(n,)`` the round each example was labeled in, ``-1`` where still unlabeled.

        Example:
          >>> import aljax
          >>> aljax.LabelPool(4).label([1]).label([3]).rounds.tolist()
          [-1, 0, -1, 1]
        """
        return self._rounds

    @property
    def num_labeled(self) -> int:
        """How many examples are labeled.

        Example:
          >>> import aljax
          >>> aljax.LabelPool(10).label([1, 2, 3]).num_labeled
          3
        """
        return int(self._order.size)

    @property
    def num_unlabeled(self) -> int:
        """How many examples are still unlabeled.

        Example:
          >>> import aljax
          >>> aljax.LabelPool(10).label([1, 2, 3]).num_unlabeled
          7
        """
        return self._n - self.num_labeled

    @property
    def num_rounds(self) -> int:
        """Number of rounds so far (``max round + 1``; 0 when nothing is labeled).

        Example:
          >>> import aljax
          >>> aljax.LabelPool(10).num_rounds, aljax.LabelPool(10).label([0]).label([1]).num_rounds
          (0, 2)
        """
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
        """The round each dataset index was labeled in (``-1`` if unlabeled).

        Args:
          indices: dataset indices, an int, a sequence or a 1-D integer array, in ``[0, n)``.

        Returns:
          ``(len(indices),)`` int64 rounds.

        Example:
          >>> import aljax
          >>> aljax.LabelPool(6).label([4]).label([1]).round_of([1, 4, 0]).tolist()
          [1, 0, -1]
        """
        return self._rounds[self._as_indices("LabelPool.round_of", "indices", indices, self._n)]

    def from_unlabeled_index(self, positions) -> np.ndarray:
        """Map positions in :attr:`unlabeled` (a selector's output) to dataset indices.

        Args:
          positions: indices into ``x[pool.unlabeled]``, in ``[0, num_unlabeled)``: what a
            selector returns when run on the unlabeled rows (a JAX int32 array is fine).

        Returns:
          ``(len(positions),)`` dataset indices, in the order of ``positions``.

        Example:
          >>> import aljax
          >>> pool = aljax.LabelPool(6).label([0, 2])      # unlabeled: [1, 3, 4, 5]
          >>> pool.from_unlabeled_index([3, 0]).tolist()
          [5, 1]
        """
        unlabeled = self.unlabeled
        positions = self._as_indices("LabelPool.from_unlabeled_index", "positions", positions, unlabeled.size)
        return _readonly(unlabeled[positions])

    def to_unlabeled_index(self, indices) -> np.ndarray:
        """Map dataset indices of unlabeled examples to their positions in :attr:`unlabeled`;
        the inverse of :meth:`from_unlabeled_index`.

        Args:
          indices: dataset indices of examples that are not labeled yet.

        Returns:
          ``(len(indices),)`` positions in :attr:`unlabeled`.

        Raises:
          ValueError: an index out of range or already labeled.

        Example:
          >>> import aljax
          >>> pool = aljax.LabelPool(6).label([0, 2])      # unlabeled: [1, 3, 4, 5]
          >>> pool.to_unlabeled_index([5, 1]).tolist()
          [3, 0]
        """
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

        Example:
          >>> import aljax
          >>> pool = aljax.LabelPool(5).label([4, 1])
          >>> pool.label([0], round=3).round_of([4, 1, 0]).tolist()
          [0, 0, 3]
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
        """A JSON-serialisable dict (``format``, ``n``, ``labeled`` in order, and their ``rounds``).

        Example:
          >>> import aljax
          >>> aljax.LabelPool(4).label([3]).label([0]).to_dict()
          {'format': 'aljax.LabelPool/1', 'n': 4, 'labeled': [3, 0], 'rounds': [0, 1]}
        """
        return {"format": _FORMAT, "n": self._n, "labeled": self._order.tolist(),
                "rounds": self._rounds[self._order].tolist()}

    @classmethod
    def from_dict(cls, state: dict) -> "LabelPool":
        """Rebuild a pool from :meth:`to_dict`'s output.

        Args:
          state: a dict as :meth:`to_dict` returns it.

        Returns:
          The :class:`LabelPool` it describes.

        Raises:
          ValueError: a state of another format, with mismatched lengths, with rounds that are
            negative or decrease, or with an index repeated or out of range.

        Example:
          >>> import aljax
          >>> pool = aljax.LabelPool(4).label([3]).label([0])
          >>> aljax.LabelPool.from_dict(pool.to_dict()) == pool
          True
        """
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
        """Write the state as JSON to ``path``, atomically.

        The JSON goes to a temporary file in the folder of ``path``, which is flushed, synced to
        disk and then renamed onto ``path`` (``os.replace``; the folder is synced too where the
        OS allows). So ``path`` holds either the previous state or the new one, never a mix: a
        crash or a full disk mid-write cannot destroy the record of what is labeled. On an
        error the temporary file is removed and the error raised. A process killed outright
        (``SIGKILL``, power loss) during the write can leave that temporary file behind, named
        ``.<name>.<random>.tmp`` beside ``path``; it is safe to delete. An existing file keeps
        its permissions; a new one gets the usual ``0o666`` less the umask. When ``path`` is a
        symbolic link, the file it points to is replaced.

        Args:
          path: the file to write (its folder must exist).

        Example:
          >>> import aljax, os, tempfile
          >>> path = os.path.join(tempfile.mkdtemp(), "pool.json")
          >>> aljax.LabelPool(5).label([2, 4]).save(path)
          >>> aljax.LabelPool.load(path).labeled.tolist()
          [2, 4]
        """
        state = self.to_dict()
        target = os.path.realpath(path)
        folder, name = os.path.split(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                if hasattr(os, "fchmod"):  # POSIX; on Windows mkstemp's file is already writable
                    os.fchmod(f.fileno(), _new_file_mode(target))
                json.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_folder(folder)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabelPool":
        """Read a pool written by :meth:`save`.

        Args:
          path: a file written by :meth:`save`.

        Returns:
          The :class:`LabelPool` it holds (validated as in :meth:`from_dict`).

        Example:
          >>> import aljax, os, tempfile
          >>> path = os.path.join(tempfile.mkdtemp(), "pool.json")
          >>> aljax.LabelPool(5).label([1]).label([0, 3]).save(path)
          >>> aljax.LabelPool.load(path).rounds.tolist()
          [1, 0, -1, 1, -1]
        """
        with open(path) as f:
            return cls.from_dict(json.load(f))


def _new_file_mode(target: str) -> int:
    """The permissions the saved file gets: the existing file's, else ``0o666`` less the umask
    (what ``open(path, "w")`` would give; ``mkstemp`` alone would give ``0o600``)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        # The umask can only be read by setting it; a thread creating a file in this instant
        # gets 0o077, the private side, rather than a looser mode than its own.
        umask = os.umask(0o077)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_folder(folder: str) -> None:
    """Sync the folder entry of a renamed file, so the rename itself survives a power loss.
    Windows cannot open a folder and some file systems refuse to sync one: the rename is then as
    durable as the OS makes it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
