"""Argument checks shared by every public function, with one message style.

Every message reads ``aljax.<function>: argument `<name>` must be <expected>, got <actual>.``
Checks read only shapes, dtypes and Python values, so they also run under a user's ``jit``;
value checks (NaN/Inf) run only on concrete arrays (see :func:`check_finite`).
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def message(fn: str, arg: str, expected: str, got: Any) -> str:
    return f"aljax.{fn}: argument `{arg}` must be {expected}, got {got}."


# The model-level functions that have a torch mirror of the same name in aljax.torch_adapter
# (named here, not looked up, so that this lowest layer never imports the adapter).
TORCH_MIRRORS = ("badge", "bait", "bald", "batch_bald", "coreset", "entropy", "fisher_embedding", "gradient_embedding",
                 "last_layer_embedding", "least_confidence", "logits_and_features", "margin", "random_sample",
                 "vessal", "cluster_margin", "cluster_pool")
PROBLEM_TYPES = ("classification", "regression")
# Strategies defined for a regression head (the rest need class probabilities).
REGRESSION_STRATEGIES = ("vessal", "badge", "bait", "coreset", "typiclust", "probcover", "auto", "random")


def check_params(fn: str, params: Any) -> None:
    """A torch module passed where JAX ``params`` go gets pointed to the torch adapter (torch is
    not imported: the module is recognised by its class hierarchy)."""
    if any(c.__name__ == "Module" and c.__module__.startswith("torch.nn") for c in type(params).__mro__):
        name = fn.split(".")[-1]
        where = f"`aljax.torch_adapter.{name}(model, pool, ...)`" if name in TORCH_MIRRORS else \
            "`aljax.torch_adapter`"
        raise TypeError(message(fn, "params", "JAX model parameters (with `apply_fn`)",
                                f"a torch.nn.Module; torch models go through {where}"))


def check_bool(fn: str, arg: str, value: Any) -> bool:
    """A Python bool (not an int, not an array)."""
    if not isinstance(value, bool):
        raise TypeError(message(fn, arg, "a bool", f"{type(value).__name__} {value!r}"))
    return value


def check_problem_type(fn: str, problem_type: Any, strategy: str | None = None) -> str:
    """``problem_type`` is ``"classification"`` or ``"regression"``, and regression only for a
    strategy defined for it (``strategy=None``: any)."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(message(fn, "problem_type", "'classification' or 'regression'", repr(problem_type)))
    if problem_type == "regression" and strategy is not None and strategy not in REGRESSION_STRATEGIES:
        raise ValueError(message(fn, "problem_type", f"'classification' ({strategy} needs class probabilities; "
                                 f"regression works with {', '.join(REGRESSION_STRATEGIES)})", repr(problem_type)))
    return problem_type


def check_rate(fn: str, arg: str, rate: Any) -> float:
    """A labeling rate: a float in ``(0, 1]``."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(message(fn, arg, "a float in (0, 1]", f"{type(rate).__name__} {rate!r}"))
    if not 0 < rate <= 1:
        raise ValueError(message(fn, arg, "a float in (0, 1]", rate))
    return float(rate)


def is_concrete(*arrays) -> bool:
    """True when no leaf is being traced (values can be inspected)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(arrays))


def check_int(fn: str, arg: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """A Python (or NumPy) integer in [low, high]; bools are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(message(fn, arg, "a Python int", f"{type(value).__name__} {value!r}"))
    value = int(value)
    if low is not None and value < low:
        bound = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise ValueError(message(fn, arg, bound, value))
    if high is not None and value > high:
        bound = f"an int <= {high}" if low is None else f"an int in [{low}, {high}]"
        raise ValueError(message(fn, arg, bound, value))
    return value


def check_k(fn: str, k: Any, n: int | None) -> int:
    """The number of points to select: a Python int in [1, n] (``n=None``: size not known yet)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(message(fn, "k", "a Python int", f"{type(k).__name__} {k!r}"))
    if k < 1:
        raise ValueError(message(fn, "k", "an int >= 1", int(k)))
    if n is not None and k > n:
        raise ValueError(
            f"aljax.{fn}: argument `k` must be at most the pool size: cannot select "
            f"{int(k)} points from a pool of {n}."
        )
    return int(k)


def check_positive(fn: str, arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(message(fn, arg, "a real number", f"{type(value).__name__} {value!r}"))
    if not value > 0 or not np.isfinite(value):
        raise ValueError(message(fn, arg, "a finite number > 0", value))
    return float(value)


def as_key(fn: str, key: Any) -> jax.Array:
    """An int seed or a JAX PRNG key (typed, or raw uint32 of shape (2,)) -> a typed key."""
    if isinstance(key, bool):
        raise TypeError(message(fn, "key", "an int seed or a jax.random key", "bool"))
    if isinstance(key, numbers.Integral):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(message(fn, "key", "a single key (shape ())", f"a key array of shape {shape}"))
        return key
    if dtype is not None and shape == () and jnp.issubdtype(dtype, jnp.integer):
        return jax.random.key(key)  # an integer seed given as a (possibly traced) 0-d array
    if dtype is not None and dtype == jnp.uint32 and shape == (2,):
        return jax.random.wrap_key_data(key)
    got = f"{type(key).__name__}" + (f" of dtype {dtype} and shape {shape}" if dtype is not None else f" {key!r}")
    raise TypeError(message(fn, "key", "an int seed or a jax.random key", got))


def check_key(fn: str, key: Any) -> None:
    """:func:`as_key`'s checks, without making a key: for a selector that takes a key only so that
    strategies can be swapped, and ignores it (an int seed would otherwise compile a PRNG seeding
    on a first call)."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return
    as_key(fn, key)


def pool_size(fn: str, pool: Any, arg: str = "pool", *, allow_empty: bool = False) -> int:
    """Number of examples in a pool (an array or a pytree of arrays sharing the leading axis);
    ``allow_empty`` for one batch of a stream, which may hold no rows."""
    leaves = jax.tree_util.tree_leaves(pool)
    if not leaves:
        raise ValueError(message(fn, arg, "an array or a pytree of arrays", "an empty pytree"))
    sizes = []
    for leaf in leaves:
        shape = getattr(leaf, "shape", None)
        if shape is None:
            raise TypeError(message(fn, arg, "an array or a pytree of arrays", type(leaf).__name__))
        if len(shape) == 0:
            raise ValueError(message(fn, arg, "arrays with a leading example axis", "a 0-d array"))
        sizes.append(shape[0])
    if len(set(sizes)) != 1:
        raise ValueError(message(fn, arg, "arrays sharing the leading (example) axis", f"leading sizes {sizes}"))
    if sizes[0] == 0 and not allow_empty:
        raise ValueError(message(fn, arg, "a non-empty pool", "an empty pool (0 examples)"))
    return int(sizes[0])


def check_floating_2d(fn: str, arg: str, x: Any) -> None:
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None:
        raise TypeError(message(fn, arg, "an array", type(x).__name__))
    if len(shape) != 2:
        raise ValueError(message(fn, arg, "a 2-D array (n, d)", f"shape {tuple(shape)}"))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(message(fn, arg, "a floating array", f"dtype {dtype}"))


def check_scores_1d(fn: str, scores: Any) -> None:
    """A non-empty 1-D floating array of per-point scores (values are checked apart)."""
    shape, dtype = getattr(scores, "shape", None), getattr(scores, "dtype", None)
    if shape is None:
        raise TypeError(message(fn, "scores", "an array", type(scores).__name__))
    if len(shape) != 1:
        raise ValueError(message(fn, "scores", "a 1-D array (n,)", f"shape {tuple(shape)}"))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(message(fn, "scores", "a floating array", f"dtype {dtype}"))
    if shape[0] == 0:
        raise ValueError(message(fn, "scores", "a non-empty array", "an empty array"))


# Concrete inputs with at most this many numbers in all, each on the host (NumPy) or on one CPU
# device, are checked (and padded, aljax._padding) in NumPy: a jitted check compiles once per new
# shape, which on small inputs is most of a first call and recurs every round of an
# active-learning loop (the pool shrinks, the labeled set grows); NumPy compiles nothing, and
# reading this few numbers is cheap beside the selection.
HOST_MAX_ELEMENTS = 1 << 20


def on_host(*arrays) -> bool:
    """Whether ``arrays`` (concrete) are small enough, and close enough to the host, that NumPy
    reads them without a device transfer or a gather: NumPy arrays, or jax Arrays on one CPU
    device, ``HOST_MAX_ELEMENTS`` numbers or fewer in all."""
    total = 0
    for x in arrays:
        if isinstance(x, jax.Array):
            if isinstance(x, jax.core.Tracer) or len(x.sharding.device_set) != 1:
                return False
            if next(iter(x.sharding.device_set)).platform != "cpu":
                return False
        elif not isinstance(x, np.ndarray):
            return False
        total += x.size
    return total <= HOST_MAX_ELEMENTS


def host_put(value: np.ndarray, *like) -> jax.Array:
    """A NumPy result of a host twin (see :func:`on_host`) as a jax Array where the jitted function
    would have put it: on the sharding of the first committed jax Array among ``like``, else on the
    default device, uncommitted."""
    where = next((x.sharding for x in like if isinstance(x, jax.Array) and x.committed), None)
    return jax.device_put(value, where)


def as_array(x):
    """``x`` as an array a jitted function takes: NumPy and jax arrays as they are, anything else
    through ``jnp.asarray`` (which, for a NumPy array, compiles a small program per new shape)."""
    return x if isinstance(x, (np.ndarray, jax.Array)) else jnp.asarray(x)


def on_device(x) -> jax.Array:
    """``x`` as a jax Array: jax Arrays (and tracers) as they are, NumPy arrays by
    ``jax.device_put`` (which compiles nothing, where ``jnp.asarray`` compiles a small program per
    new shape), anything else through ``jnp.asarray``. (The transfer may hold the NumPy array for a
    while after: streamed batches, which must not outlive their turn, keep ``jnp.asarray``.)"""
    if isinstance(x, jax.Array):
        return x
    return jax.device_put(x) if isinstance(x, np.ndarray) else jnp.asarray(x)


@jax.jit
def all_finite(x) -> jax.Array:
    """Whether every value of ``x`` is finite, as one fused sum: ``x·0`` is 0 for a finite value
    and NaN for ±Inf or NaN, and a sum of zeros cannot overflow, so the test is exact. It is one
    float reduction, which XLA:CPU vectorises better than the boolean ``jnp.isfinite(x).all()``."""
    return jnp.isfinite(jnp.sum(x * 0))


@jax.jit
def _finite_flags(arrays) -> jax.Array:
    """:func:`all_finite` of each array, in one jitted call (one compilation per set of shapes)."""
    return jnp.stack([all_finite(x) for x in arrays])


def check_finite(fn: str, what: str, *arrays) -> None:
    """Raise on NaN/Inf. Skipped (documented) when the arrays are being traced."""
    check_finite_each(fn, [(what, x) for x in arrays])


def check_finite_each(fn: str, named: list) -> None:
    """:func:`check_finite` for ``[(what, array), ...]``: all flags from one device call; the
    first array with a NaN/Inf is named in the error."""
    arrays = [x for _, x in named]
    if not arrays or not is_concrete(*arrays):
        return
    if on_host(*arrays):
        flags = [bool(np.isfinite(np.asarray(x)).all()) for x in arrays]
    elif len({x.sharding for x in arrays if isinstance(x, jax.Array)}) <= 1:
        flags = np.asarray(_finite_flags(arrays))
    else:  # differently placed arrays cannot meet in one computation
        flags = [bool(all_finite(x)) for x in arrays]
    for (what, x), ok in zip(named, flags):
        if not ok:
            bad = int(jnp.sum(~jnp.isfinite(x)))
            raise ValueError(f"aljax.{fn}: {what} contain {bad} NaN/Inf value(s); they must be finite.")


def check_k_for_pool(fn: str, k: Any, pool: Any) -> int:
    """:func:`check_k` against the pool's size; for an iterable of batches, whose size is known
    only once it has been read, only the type and ``k >= 1`` now (check again after the pass)."""
    return check_k(fn, k, None if is_batch_iterable(pool) else pool_size(fn, pool))


def is_batch_iterable(pool) -> bool:
    """An iterable of batches (a generator, an iterator, a re-iterable object such as a data
    loader), as opposed to an array or a pytree of arrays (lists, tuples and mappings such as dicts
    or Flax's ``FrozenDict`` are pytrees)."""
    if hasattr(pool, "shape") or isinstance(pool, (list, tuple, Mapping)):
        return False
    return isinstance(pool, Iterable)


def batch_signature(batch):
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    return treedef, tuple((tuple(getattr(x, "shape", ())[1:]), str(getattr(x, "dtype", type(x).__name__)))
                          for x in leaves)


def checked_batches(fn: str, pool: Iterable):
    """Iterate the user's batches, refusing batches whose trailing shape (or structure) changes.
    A batch may hold no rows (e.g. the tail of ``np.array_split``); the whole stream may not."""
    first = None
    for number, batch in enumerate(pool):
        pool_size(fn, batch, arg="pool", allow_empty=True)
        signature = batch_signature(batch)
        if first is None:
            first = signature
        elif signature != first:
            raise ValueError(message(
                fn, "pool", f"batches with the same structure and trailing shape as the first {first[1]}",
                f"{signature[1]} at batch {number}"))
        yield batch


def peek_batches(fn: str, pool):
    """``(like, pool)``: something shaped like one batch of the pool (for checks against other
    inputs before any heavy work) and the pool to read. An array pool is its own ``like``; for an
    iterable, ``like`` is its first batch and the returned iterable yields every batch, the first
    included."""
    if not is_batch_iterable(pool):
        return pool, pool
    batches = iter(pool)
    try:
        first = next(batches)
    except StopIteration:
        raise ValueError(message(fn, "pool", "a non-empty pool (array or iterable of batches)",
                                 "an iterable that yielded no batches")) from None
    return first, itertools.chain([first], batches)


def check_labeled_like_pool(fn: str, labeled, pool) -> int:
    """The number of labeled examples given as inputs (``labeled=`` of a front door); their
    structure and trailing shapes must match the pool's (``pool``: the pool or one chunk of it)."""
    pool_leaves, pool_tree = jax.tree_util.tree_flatten(pool)
    lab_leaves, lab_tree = jax.tree_util.tree_flatten(labeled)
    if lab_tree != pool_tree:
        raise ValueError(message(fn, "labeled", f"inputs with the pool's structure {pool_tree}", f"{lab_tree}"))
    sizes = set()
    for lab, ref in zip(lab_leaves, pool_leaves):
        shape = getattr(lab, "shape", None)
        if shape is None:
            raise TypeError(message(fn, "labeled", "an array or a pytree of arrays", type(lab).__name__))
        if len(shape) == 0 or tuple(shape[1:]) != tuple(ref.shape[1:]):
            raise ValueError(message(fn, "labeled", f"inputs of trailing shape {tuple(ref.shape[1:])} like the "
                                     "pool's", f"shape {tuple(shape)}"))
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise ValueError(message(fn, "labeled", "arrays sharing the leading (example) axis",
                                 f"leading sizes {sorted(sizes)}"))
    return sizes.pop()


def check_oversample(fn: str, oversample: Any) -> float:
    """BAIT's forward-pass factor: a finite real number >= 1."""
    if isinstance(oversample, bool) or not isinstance(oversample, numbers.Real):
        raise TypeError(message(fn, "oversample", "a real number >= 1", f"{type(oversample).__name__} {oversample!r}"))
    if not np.isfinite(oversample) or oversample < 1:
        raise ValueError(message(fn, "oversample", "a finite number >= 1", oversample))
    return float(oversample)


def check_damping(fn: str, damping: Any) -> str:
    """BAIT's ``damping`` mode: ``"relative"`` or ``"absolute"``."""
    if damping not in ("relative", "absolute"):
        raise ValueError(message(fn, "damping", "'relative' (λ·tr(F)/d) or 'absolute' (λ as given)", repr(damping)))
    return damping


def check_k_or_rate(fn: str, k: Any, rate: Any, n: int | None) -> tuple[int | None, float | None]:
    """``(k, rate)`` with exactly one of them given: ``k`` a count in ``[1, n]`` (``n=None``: size
    not known yet), ``rate`` a float in ``(0, 1]``."""
    if (k is None) == (rate is None):
        raise ValueError(message(fn, "k", "given exactly when `rate` is not (one of `k` or `rate`)",
                                 f"k={k!r} and rate={rate!r}"))
    if rate is not None:
        return None, check_rate(fn, "rate", rate)
    if n is None:
        return check_int(fn, "k", k, low=1), None
    return check_k(fn, k, n), None


def check_rank(fn: str, rank: Any, problem_type: str) -> int:
    """VeSSAL's Fisher rows per point: an int >= 1, and 1 for regression."""
    rank = check_int(fn, "rank", rank, low=1)
    if problem_type == "regression" and rank != 1:
        raise ValueError(message(fn, "rank", "1 for regression (the Fisher of a Gaussian head is h hᵀ: one row "
                                 "per point)", rank))
    return rank
