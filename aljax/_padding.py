"""Size buckets and zero padding along the example axis.

An active-learning loop calls a selector on a pool that shrinks every round. Padding each pool
to one of a few bucket sizes lets the jitted kernels compile once per bucket instead of once per
round; every kernel that pads also receives the real row count and never picks a padded row.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate

# Pools whose factors take at most this many bytes are zero-padded to a size bucket before a
# selection loop. The padding costs up to 1/8 more work per step: below this size a compilation
# costs more than that; above it the loop's steps dominate, and the pool is left as it is.
BUCKET_MAX_BYTES = 1 << 26


def bucket(n: int) -> int:
    """``n`` rounded up to a multiple of ``2^(bit_length(n) − 4)``: at most 1/8 padding, 8 to 16
    sizes per doubling of ``n``."""
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


def nbytes(tree) -> int:
    """Total bytes of the leaves of ``tree``."""
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree))


def pad_to_bucket(tree, n: int):
    """Every leaf of ``tree`` (``n`` rows each) with zero rows appended up to :func:`bucket` ``(n)``."""
    size = bucket(n)
    return tree if size == n else pad_tree(tree, size=size)


def pad_tree(tree, *, size: int):
    """Every leaf of ``tree`` with zero rows appended up to ``size`` rows: in one jitted call
    (padding each leaf eagerly would compile one pad per leaf for every new row count), or, for
    small concrete trees on the host or one CPU device (:func:`aljax._validate.on_host`), in NumPy,
    which compiles nothing."""
    leaves = jax.tree_util.tree_leaves(tree)
    if leaves and _validate.on_host(*leaves):
        def pad(x):
            padded = np.pad(np.asarray(x), [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
            return _validate.host_put(padded, x)
        return jax.tree_util.tree_map(pad, tree)
    return _pad_tree(tree, size=size)


@functools.partial(jax.jit, static_argnames="size")
def _pad_tree(tree, *, size: int):
    return jax.tree_util.tree_map(lambda x: jnp.pad(x, [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1)), tree)
