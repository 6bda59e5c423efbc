"""Chunking and streaming a pool: arrays, pytrees of arrays, iterables of batches.

A pool is processed in chunks of a fixed number of rows, so a function applied to it compiles
once, and pools larger than device (or host) memory work: only each chunk's outputs are kept.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _progress, _sharding, _validate


def map_chunks(fn: Callable, pool: Any, n: int, batch_size: int, *, fn_name: str = "map_chunks"):
    """Apply ``fn`` to ``pool`` in chunks of ``batch_size`` rows and concatenate the outputs.

    Every chunk has the same shape (the last one is padded by repeating its last row, then cut),
    so ``fn`` compiles once; a pool of fewer than ``batch_size`` rows is one chunk of the next
    power of two. A pool whose leaves are sharded along the example axis (one
    ``NamedSharding`` for all of them) runs data-parallel: ``batch_size`` rows per device per
    step, outputs sharded like the pool (:func:`aljax._sharding.map_chunks_sharded`); leaves
    sharded differently raise a ``ValueError`` naming ``fn_name``. The pool is expected on Auto
    mesh axes (:func:`open_pool` moves Explicit-axes pools there first).
    """
    layout = _sharding.row_layout(fn_name, "pool", pool)
    if layout is not None:
        return _sharding.map_chunks_sharded(fn, pool, n, batch_size, layout)
    # A pool smaller than a batch runs as one chunk of the next power of two (at most twice the
    # rows): small pools that change size every round (labeled sets) compile `fn` once per doubling.
    size = min(batch_size, 1 << (n - 1).bit_length())
    outs = []
    with _progress.bar("forward pass", n) as bar:
        for start in range(0, n, size):
            stop = min(start + size, n)
            outs.append(fn(jax.tree_util.tree_map(lambda leaf: _rows_padded(leaf, start, stop, size), pool)))
            bar.update(stop - start, outs[-1])
    return assemble(outs, n)


def _rows_padded(leaf, start: int, stop: int, size: int):
    """Rows ``start:stop`` of ``leaf``, the last one repeated up to ``size`` rows (valid model
    inputs). Nothing here compiles once per pool size that need not: a host (NumPy) leaf is cut and
    padded in NumPy, a device leaf's last chunk is one jitted gather."""
    if stop - start == size:
        return leaf[start:stop]
    if isinstance(leaf, np.ndarray):
        return np.concatenate([leaf[start:stop], np.repeat(leaf[stop - 1:stop], size - (stop - start), 0)])
    return _tail_rows(jnp.asarray(leaf), jnp.int32(start), size=size)


@functools.partial(jax.jit, static_argnames=("size",))
def _tail_rows(leaf, start, *, size: int):
    return jnp.take(leaf, jnp.minimum(start + jnp.arange(size), leaf.shape[0] - 1), axis=0)


def _concatenate(leaves, n=None):
    """``jnp.concatenate(leaves)[:n]``, in NumPy for small leaves on the host or one CPU device
    (eagerly, the concatenation and the cut each compile once per new length: every round of a
    loop)."""
    if _validate.on_host(*leaves):
        return _validate.host_put(np.concatenate([np.asarray(leaf) for leaf in leaves])[:n], *leaves)
    return jnp.concatenate(leaves)[:n]


@functools.partial(jax.jit, static_argnames=("n",))
def _assemble(outs, *, n: int):
    return jax.tree_util.tree_map(lambda *parts: jnp.concatenate(parts)[:n], *outs)


def assemble(outs: list, n: int):
    """Fixed-size chunk outputs (the last one padded) -> the first ``n`` rows of their
    concatenation: in NumPy for small outputs on the host or one CPU device
    (:func:`aljax._validate.on_host`), else as one jitted call (one compilation per pool size,
    not one per eager op)."""
    if len(outs) == 1 and all(leaf.shape[0] == n for leaf in jax.tree_util.tree_leaves(outs[0])):
        return outs[0]
    if _validate.on_host(*jax.tree_util.tree_leaves(outs)):   # (NumPy: no compilation per pool size)
        return jax.tree_util.tree_map(lambda *parts: _concatenate(parts, n), *outs)
    return _assemble(outs, n=n)


def _first_chunk(pool, n, batch_size):
    size = min(batch_size, n)
    return jax.tree_util.tree_map(lambda leaf: leaf[:size], pool)


def open_pool(fn_name: str, pool: Any, batch_size: int):
    """A pool as ``(first, n, run)``, for an array / pytree of arrays or an iterable of batches.

    ``first`` is one chunk (for shape checks before any heavy work), ``n`` the number of examples
    (``None`` for an iterable: known only after the pass), and ``run(fn) -> (outputs, n)`` applies
    ``fn`` chunk by chunk and concatenates its outputs. An iterable is read once and regrouped
    into chunks of exactly ``batch_size`` rows (the last padded, then cut), so ``fn`` compiles
    once whatever the batch sizes and only the outputs (not the raw pool) are held. Batches must
    keep their structure and trailing shape; an empty iterable is refused.
    """
    if not _validate.is_batch_iterable(pool):
        n = _validate.pool_size(fn_name, pool)
        pool = _sharding.auto_axes(pool)
        return _first_chunk(pool, n, batch_size), n, lambda fn: (map_chunks(fn, pool, n, batch_size, fn_name=fn_name), n)
    chunks = stream_chunks(_validate.checked_batches(fn_name, pool), batch_size)
    try:
        first, first_valid = next(chunks)
    except StopIteration:
        raise ValueError(_validate.message(fn_name, "pool", "a non-empty pool (array or iterable of batches)",
                                           "an iterable that yielded no examples")) from None

    def run(fn):
        outs, n = [], 0
        with _progress.bar("forward pass", None) as bar:
            for chunk, n_valid in itertools.chain([(first, first_valid)], chunks):
                outs.append(fn(chunk))
                n += n_valid
                bar.update(n_valid, outs[-1])
        return assemble(outs, n), n

    return jax.tree_util.tree_map(lambda leaf: leaf[:first_valid], first), None, run


def stream_chunks(batches, size: int, *, pad: str = "repeat"):
    """``(chunk, n_valid)`` with exactly ``size`` rows per chunk from batches of any sizes (0
    included). The last chunk is padded by repeating its last row (``pad="repeat"``: valid model
    inputs) or with zeros (``pad="zeros"``). A batch larger than ``size`` is cut in place (an
    offset into it), so the work stays linear in its length."""
    pending, have = [], 0  # rows carried over from earlier batches (fewer than ``size``)

    def rows(tree, start, stop):
        return jax.tree_util.tree_map(lambda leaf: _validate.host_put(np.asarray(leaf)[start:stop], leaf)
                                      if _validate.on_host(leaf) else leaf[start:stop], tree)

    def join(parts):
        if len(parts) == 1:
            return parts[0]
        return jax.tree_util.tree_map(lambda *leaves: _concatenate(leaves), *parts)

    for batch in batches:
        # On the device at once: chunks are then copies, never views that keep a user's batch alive.
        # (Not jax.device_put: its transfer of a NumPy batch holds the batch for a while after.)
        batch = jax.tree_util.tree_map(jnp.asarray, batch)
        length, offset = _validate.pool_size("", batch, allow_empty=True), 0
        if have and have + length >= size:  # complete the carried-over rows first
            offset = size - have
            yield join(pending + [rows(batch, 0, offset)]), size
            pending, have = [], 0
        if not have:
            while length - offset >= size:
                yield rows(batch, offset, offset + size), size
                offset += size
        if offset < length:
            pending.append(rows(batch, offset, length))
            have += length - offset
    if have:
        joined = join(pending)

        def padded(leaf):
            host = _validate.on_host(leaf)   # (NumPy: eagerly, each jnp op compiles per length)
            xp, x = (np, np.asarray(leaf)) if host else (jnp, leaf)
            fill = xp.repeat(x[-1:], size - have, 0) if pad == "repeat" else xp.zeros((size - have,) + x.shape[1:],
                                                                                       x.dtype)
            return _validate.host_put(np.concatenate([x, fill]), leaf) if host else jnp.concatenate([x, fill])

        yield jax.tree_util.tree_map(padded, joined), have
