"""Pools spread over several processes (``jax.distributed``): each process's own part of the
pool assembled into one global pool sharded along the example axis, and global indices mapped
back to ``(process, local index)``.

With JAX's multi-controller runtime every host runs the same program, one process per host, after
``jax.distributed.initialize()``; a global ``jax.Array`` has shards on other hosts' devices. The
selectors and front doors take such arrays as they take a pool sharded over the devices of one
process (:mod:`aljax._sharding`): the kernels are jitted over the mesh of every process's devices,
so the heavy work stays on the shards and the picks come back as the same replicated array on
every process. This module only builds the global pool from per-process parts:

* :func:`global_pool` — each process passes the rows it holds (an array, a pytree of arrays, or
  an iterable of batches read from its own disk, optionally embedded batch by batch with
  ``map_fn``); the parts are laid out process-major: process 0's rows first, then process 1's, …
* :func:`local_indices` — global indices (the picks) back to ``(process, local index)``.

Every process must call both functions (they run one small collective: the processes exchange
their part sizes and layouts), and a bad part raises the same ``ValueError`` on every process.
"""

from __future__ import annotations

import zlib
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _validate


def _parts_from_batches(fn: str, batches, map_fn: Callable | None):
    """The batches of one process (each mapped by ``map_fn``) concatenated on the host, leaf by
    leaf."""
    leaves, treedef = [], None
    for batch in _validate.checked_batches(fn, batches):
        batch = batch if map_fn is None else map_fn(batch)
        flat, treedef = jax.tree_util.tree_flatten(batch)
        leaves.append([np.asarray(jax.device_get(x)) for x in flat])
    if treedef is None:
        raise ValueError(_validate.message(fn, "local", "an iterable of at least one batch", "an empty iterable"))
    return jax.tree_util.tree_unflatten(treedef, [np.concatenate(column) for column in zip(*leaves)])


def _local_part(fn: str, local, map_fn: Callable | None):
    """This process's part on the host: the batches concatenated, or the array(s), each mapped by
    ``map_fn`` first."""
    if _validate.is_batch_iterable(local):
        return _parts_from_batches(fn, local, map_fn)
    part = local if map_fn is None else map_fn(local)
    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), part)


def _signature(tree) -> int:
    """A checksum of the tree structure, trailing shapes and dtypes of a part (the same on every
    process when the parts fit together)."""
    treedef, shapes = _validate.batch_signature(tree)
    return zlib.crc32(repr((str(treedef), shapes)).encode())


def _exchange(values: list[int]) -> np.ndarray:
    """Every process's ``values``: a ``(processes, len(values))`` int array, the same everywhere."""
    mine = np.asarray(values, np.int64)
    if jax.process_count() == 1:
        return mine[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)


def default_mesh(axis: str = "data") -> Mesh:
    """A 1-D mesh over every device of every process, process-major (process 0's devices first),
    so that the example axis is split into one contiguous block of rows per process."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (axis,))


def global_pool(local, *, mesh=None, axis: str = "data", map_fn: Callable | None = None):
    """One global pool, sharded along its example axis, from each process's own part.

    Called by every process with the rows that process holds (read from its own disk, for
    instance). The global pool holds process 0's rows first, then process 1's, and so on: a
    global index ``i`` is row ``i − offset_p`` of process ``p``'s part (:func:`local_indices`
    maps picks back). Every selector and front door takes the result; their picks are the same
    replicated array on every process, and the same as one process holding the whole pool.

    Every process must pass a part of the same size, a multiple of its number of devices on the
    mesh (JAX shards an axis into equal blocks only), with the same structure, trailing shapes and
    dtypes; otherwise every process raises the same ``ValueError`` (the processes exchange the
    sizes first, so none is left waiting in a collective). A part that fails on its own process
    (not an array, an empty iterable, an error in ``map_fn``) raises its error there and a
    ``ValueError`` naming that process on the others. To use uneven parts, trim each to the
    smallest size (and label the rest in a later round) before calling.

    Args:
      local: this process's rows: an ``(n_p, ...)`` array or pytree of arrays, or an iterable of
        batches of them (read once; concatenated on this host).
      mesh: the ``jax.sharding.Mesh`` to shard over; default: every device of every process,
        process-major (``jax.devices()`` ordered by process). A given mesh should list each process's devices
        contiguously along ``axis`` (for :func:`local_indices`).
      axis: the mesh axis the example axis is split over.
      map_fn: optional ``map_fn(batch) -> pytree of arrays`` applied to each batch on this
        process's devices before assembly, e.g. ``lambda x: aljax.last_layer_embedding(params,
        apply_fn, x)``: only the compact embedding is kept, and the global pool is that
        embedding (an :class:`~aljax.Factored` of global arrays in this example).

    Returns:
      The pool (same structure as a part), every leaf a global ``jax.Array`` of
      ``Σ_p n_p`` rows sharded as ``NamedSharding(mesh, P(axis))``.

    Example:
      >>> import numpy as np, aljax
      >>> part = np.arange(12.0, dtype=np.float32).reshape(6, 2)   # this process's rows
      >>> pool = aljax.global_pool(part)                             # one process: all of them
      >>> pool.shape
      (6, 2)
      >>> aljax.local_indices(aljax.k_center_greedy(pool, 2), pool)
      (array([0, 0], dtype=int32), array([5, 0], dtype=int32))
    """
    fn = "global_pool"
    if mesh is None:
        mesh = default_mesh(axis)
    if axis not in mesh.axis_names:
        raise ValueError(_validate.message(fn, "axis", f"one of the mesh's axes {mesh.axis_names}", repr(axis)))
    try:   # an error here stays local: the others must hear of it, not wait in the exchange
        part = _local_part(fn, local, map_fn)
        size, failure = _validate.pool_size(fn, part, "local", allow_empty=True), None
    except Exception as error:   # noqa: BLE001 - re-raised below, once the others know
        part, size, failure = None, 0, error
    process, along = jax.process_index(), mesh.axis_names.index(axis)
    # This process's blocks of rows: its devices' distinct coordinates along `axis`.
    shards = len({idx[along] for idx in np.ndindex(mesh.devices.shape) if mesh.devices[idx].process_index == process})
    table = _exchange([size, shards, 0 if part is None else _signature(part), failure is not None])
    sizes, shard_counts, signatures, failed = table[:, 0], table[:, 1], table[:, 2], np.flatnonzero(table[:, 3])
    if failure is not None:
        raise failure
    if failed.size:
        raise ValueError(_validate.message(fn, "local", "a valid part on every process",
                                           f"an error on process {', '.join(map(str, failed))} (raised there)"))
    described = ", ".join(f"process {p}: {int(n)}" for p, n in enumerate(sizes))
    if sizes.min() == 0:
        raise ValueError(_validate.message(fn, "local", "at least one row on every process", f"sizes {described}"))
    if len(set(signatures.tolist())) > 1:
        raise ValueError(_validate.message(
            fn, "local", "parts with the same structure, trailing shapes and dtypes on every process",
            f"parts that differ between processes (this one: {_validate.batch_signature(part)[1]})"))
    if len(set(sizes.tolist())) > 1:
        raise ValueError(_validate.message(
            fn, "local", "parts of the same size on every process (JAX shards the example axis into equal "
                         "blocks; trim each part to the smallest)", f"uneven sizes {described}"))
    if any(sizes[p] % max(int(shard_counts[p]), 1) for p in range(len(sizes))):
        raise ValueError(_validate.message(
            fn, "local", "a part size divisible by the process's number of shards along the mesh axis "
                         f"{axis!r} ({', '.join(f'process {p}: {int(shard_counts[p])}' for p in range(len(sizes)))})",
            f"sizes {described}"))

    def assemble(leaf):
        spec = NamedSharding(mesh, PartitionSpec(axis, *([None] * (leaf.ndim - 1))))
        return jax.make_array_from_process_local_data(spec, leaf)

    return jax.tree_util.tree_map(assemble, part)


def _row_blocks(leaf) -> dict[int, tuple[int, int]]:
    """Process → the ``[start, stop)`` rows of ``leaf`` its devices hold (one contiguous block)."""
    n = leaf.shape[0]
    blocks: dict[int, set] = {}
    for device, index in leaf.sharding.devices_indices_map(leaf.shape).items():
        rows = index[0] if index else slice(None)
        start, stop, _ = rows.indices(n)
        blocks.setdefault(device.process_index, set()).add((start, stop))
    out = {}
    for process, spans in blocks.items():
        spans = sorted(spans)
        start, stop = spans[0][0], spans[-1][1]
        if sum(b - a for a, b in spans) != stop - start:
            raise ValueError(_validate.message(
                "local_indices", "pool", "a pool whose rows on each process form one contiguous block "
                "(aljax.global_pool's layout)", f"process {process} holding rows {spans}"))
        out[process] = (start, stop)
    return out


def local_indices(indices, pool) -> tuple[np.ndarray, np.ndarray]:
    """Global indices into a pool spread over processes, as ``(process, local index)``.

    ``local index`` is the row of that process's own part (what it passed to
    :func:`global_pool`), so process ``p`` finds its picks as ``local[process == p]``. Works on
    every process (the picks are replicated) and in one process (process 0 throughout).

    Args:
      indices: int array of global indices (e.g. the picks of any selector), replicated.
      pool: the global pool (or any array laid out like it, e.g. one leaf of the embedding):
        its sharding tells which process holds which rows.

    Returns:
      ``(process, local)``, two int32 NumPy arrays shaped like ``indices``, the owning process
      and the row in its part.

    Example:
      >>> import numpy as np, aljax
      >>> pool = aljax.global_pool(np.zeros((8, 3), np.float32))
      >>> aljax.local_indices(np.array([7, 2]), pool)
      (array([0, 0], dtype=int32), array([7, 2], dtype=int32))
    """
    fn = "local_indices"
    leaf = jax.tree_util.tree_leaves(pool)[0]
    n = leaf.shape[0]
    if isinstance(indices, jax.Array) and not indices.is_fully_addressable:
        if not indices.is_fully_replicated:
            raise ValueError(_validate.message(fn, "indices", "replicated indices (as the selectors return)",
                                               f"an array sharded as {indices.sharding}"))
        indices = indices.addressable_data(0)
    indices = np.asarray(jax.device_get(indices))
    if not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(_validate.message(fn, "indices", "an integer array", f"dtype {indices.dtype}"))
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(_validate.message(fn, "indices", f"indices in [0, {n})",
                                           f"values from {int(indices.min())} to {int(indices.max())}"))
    sharding = getattr(leaf, "sharding", None)
    if sharding is None or not hasattr(sharding, "devices_indices_map"):
        blocks = {0: (0, n)}
    else:
        blocks = _row_blocks(leaf)
    process = np.zeros(indices.shape, np.int32)
    local = np.zeros(indices.shape, np.int32)
    for p, (start, stop) in blocks.items():
        inside = (indices >= start) & (indices < stop)
        process[inside] = p
        local[inside] = indices[inside] - start
    return process, local
