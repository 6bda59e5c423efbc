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


def bucket_rows(tree, n: int):
    """``(tree, n_valid)`` for a kernel that compiles once per size bucket: a concrete tree on the
    host or one device with every leaf zero-padded to :func:`bucket` ``(n)`` rows, as jax Arrays
    (a NumPy array and a jax Array of one shape are two entries of a jit cache), and ``n_valid =
    np.int32(n)``; a traced or sharded tree as it is, and None.

    >>> padded, n_valid = bucket_rows(np.ones((17, 2)), 17)
    >>> padded.shape, int(n_valid)
    ((18, 2), 17)
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if not _validate.is_concrete(*leaves) or any(isinstance(x, jax.Array) and len(x.sharding.device_set) > 1
                                                 for x in leaves):
        return tree, None
    return jax.tree_util.tree_map(_validate.on_device, pad_to_bucket(tree, n)), np.int32(n)


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
