"""Pools sharded along the example axis: how aljax reads a pool's layout and runs over it.

aljax uses JAX's own machinery for several devices: the caller lays the pool out with a
``jax.sharding.NamedSharding`` over a ``jax.sharding.Mesh`` whose partition spec shards axis 0
(the example axis), e.g. ``NamedSharding(mesh, P("data"))``; the selectors' kernels are jitted
functions that XLA partitions from those input shardings (each device updates the distances or
scores of its own rows; only argmaxes, sampled indices and picked rows cross devices).

This module holds the small shared pieces:

* :func:`row_layout` — the ``(mesh, axes)`` that shards every leaf's example axis, ``None`` for
  an unsharded pool, a clear error for leaves sharded differently ("mixed shardings").
* :func:`map_chunks_sharded` — the data-parallel embedding pass: each step runs ``fn`` on
  ``batch_size`` rows *per device*, laid out with the pool's sharding, and the outputs come back
  sharded the same way.
* :func:`take_row` — row ``i`` of a (possibly sharded) array without gathering the array: each
  device slices its own block, one all-reduce of the row.

The example axis must be divisible by the number of shards: JAX itself refuses to build such an
array (``jax.device_put`` raises ``IndivisibleError``), so aljax never sees one eagerly; inside a
caller's ``jax.jit``, ``jax.lax.with_sharding_constraint`` on a pool of any size works (XLA pads
the last shard internally) and the picks are unchanged.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from . import _progress, _validate


class RowLayout(NamedTuple):
    """How the example axis is split: mesh axes ``axes`` of ``mesh`` (``spec[0]`` of the leaves'
    ``PartitionSpec``, a name or a tuple of names)."""

    mesh: jax.sharding.Mesh
    axes: Any

    @property
    def shards(self) -> int:
        """Number of blocks the example axis is cut into."""
        names = self.axes if isinstance(self.axes, tuple) else (self.axes,)
        return math.prod(self.mesh.shape[name] for name in names)

    def sharding(self, ndim: int) -> NamedSharding:
        """The sharding of an ``ndim``-D array split along axis 0 like the pool."""
        return NamedSharding(self.mesh, PartitionSpec(self.axes, *([None] * (ndim - 1))))

    def describe(self) -> str:
        return f"sharded over mesh axes {self.axes!r} of a mesh {dict(self.mesh.shape)}"


def _spec_layout(sharding, ndim: int) -> RowLayout | None:
    """The row layout a (possibly abstract) ``NamedSharding`` gives an ``ndim``-D array."""
    axes = (tuple(sharding.spec) + (None,) * ndim)[0]
    if axes is None or (isinstance(axes, tuple) and not axes):
        return None
    layout = RowLayout(sharding.mesh, axes)
    return layout if layout.shards > 1 else None


def _common_layout(fn: str, arg: str, layouts: list) -> RowLayout | None:
    """The one layout of ``layouts`` (``(leaf index, layout or None)`` pairs): ``None`` when no leaf
    is sharded along its rows, a ``ValueError`` when leaves are laid out differently."""
    if all(layout is None for _, layout in layouts):
        return None
    if any(layout != layouts[0][1] for _, layout in layouts):
        got = "; ".join(f"leaf {i} {'not sharded along the example axis' if lay is None else lay.describe()}"
                        for i, lay in layouts)
        raise ValueError(_validate.message(
            fn, arg, "leaves laid out the same way along the example axis (one NamedSharding for all, e.g. "
                     "jax.device_put(pool, NamedSharding(mesh, P('data'))))", got))
    return layouts[0][1]


def row_layout(fn: str, arg: str, tree) -> RowLayout | None:
    """The layout that shards every leaf of ``tree`` along its example axis (axis 0).

    Returns ``None`` when no leaf is sharded along that axis (one device, replicated, NumPy, or a
    traced value whose sharding is not visible: XLA then partitions from what it sees). Raises a
    ``ValueError`` naming ``aljax.<fn>`` and ``arg`` when leaves are laid out differently, e.g.
    one sharded over ``"data"`` and one replicated, or two different meshes.
    """
    layouts = []
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        if isinstance(leaf, jax.core.Tracer):
            continue  # its sharding is not visible
        sharding = getattr(leaf, "sharding", None)
        ndim = getattr(leaf, "ndim", 0)
        layouts.append((i, _spec_layout(sharding, ndim) if isinstance(sharding, NamedSharding) and ndim else None))
    return _common_layout(fn, arg, layouts)


def auto_axes(tree):
    """Leaves laid out on a mesh with *Explicit* axes (``jax.make_mesh``'s default) moved to the
    same devices and layout on the equivalent mesh with *Auto* axes, where XLA partitions the
    selectors' kernels itself (Explicit axes would ask every gather, cumsum and top-k for an
    output sharding). Other leaves, and traced ones, are returned as they are."""

    def convert(leaf):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(leaf, jax.core.Tracer) or not isinstance(sharding, NamedSharding):
            return leaf
        mesh = sharding.mesh
        if not any(kind == jax.sharding.AxisType.Explicit for kind in getattr(mesh, "axis_types", ())):
            return leaf
        auto = jax.sharding.Mesh(mesh.devices, mesh.axis_names,
                                 axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names))
        return jax.device_put(leaf, NamedSharding(auto, sharding.spec))

    return jax.tree_util.tree_map(convert, tree)


def take_row(x: jax.Array, i: jax.Array) -> jax.Array:
    """``x[i]`` as a gather with a clipped index: on an array sharded along axis 0 XLA lowers it to
    a local slice on every device and one all-reduce of the row, where ``x[i]`` (a dynamic slice)
    would all-gather the whole array first."""
    return jnp.take(x, jnp.reshape(i, (1,)), axis=0, mode="clip")[0]


@functools.partial(jax.jit, static_argnames=("size", "layout"))
def _take_chunk(pool, start, *, size: int, layout: RowLayout):
    """Rows ``[start, start + size)`` of every shard's block, as one array of ``shards · size``
    rows laid out with the pool's sharding (no data moves between devices)."""
    shards = layout.shards

    def take(leaf):
        blocks = leaf.reshape(shards, leaf.shape[0] // shards, *leaf.shape[1:])
        chunk = jax.lax.dynamic_slice_in_dim(blocks, start, size, axis=1)
        return jax.lax.with_sharding_constraint(chunk.reshape(shards * size, *leaf.shape[1:]),
                                                layout.sharding(leaf.ndim))

    return jax.tree_util.tree_map(take, pool)


@functools.partial(jax.jit, static_argnames=("keep", "layout"))
def _assemble(outs, *, keep: tuple, layout: RowLayout):
    """Chunk outputs (each ``shards · size`` rows) back into the pool's row order, sharded; only
    the last ``keep[t]`` rows of each shard's block of output ``t`` are new."""
    shards = layout.shards

    def join(*parts):
        blocks = [part.reshape(shards, -1, *part.shape[1:])[:, part.shape[0] // shards - kept:]
                  for part, kept in zip(parts, keep)]
        out = jnp.concatenate(blocks, axis=1)
        out = out.reshape(-1, *out.shape[2:])
        return jax.lax.with_sharding_constraint(out, layout.sharding(out.ndim))

    return jax.tree_util.tree_map(join, *outs)


def map_chunks_sharded(fn: Callable, pool, n: int, batch_size: int, layout: RowLayout):
    """``fn`` over a pool sharded along its example axis, data-parallel.

    Each of the pool's ``S`` shards holds ``L = n / S`` rows; step ``t`` hands ``fn`` rows
    ``[t·b, (t + 1)·b)`` of every shard (``b = min(batch_size, L)``), ``S · b`` rows sharded like
    the pool, so every device runs ``fn`` on its own ``b`` rows. The last step starts at ``L − b``
    (it overlaps the previous one; the overlap is dropped), so every step has the same shape and
    ``fn`` compiles once. The outputs are returned in the pool's row order, sharded like the pool.
    """
    local = n // layout.shards
    size = min(batch_size, local)
    starts = list(range(0, local - size + 1, size))
    if starts[-1] + size < local:
        starts.append(local - size)
    outs = []
    with _progress.bar("forward pass", local * layout.shards) as bar:
        for previous, start in zip([-size] + starts, starts):
            outs.append(fn(_take_chunk(pool, jnp.int32(start), size=size, layout=layout)))
            bar.update((start - previous) * layout.shards, outs[-1])
    keep = [size] + [start - previous for previous, start in zip(starts, starts[1:])]
    return _assemble(tuple(outs), keep=tuple(keep), layout=layout)


def traced_row_layout(fn: str, arg: str, tree) -> RowLayout | None:
    """:func:`row_layout` for values traced under a caller's ``jax.jit``: only a mesh with
    *Explicit* axes puts the sharding in the traced type (``jax.typeof(x).sharding``); the layout
    then holds that abstract mesh (enough for ``jax.shard_map``). ``None`` when no traced leaf is
    sharded along its example axis that way (Auto axes: XLA partitions from what it sees); the
    same ``ValueError`` as :func:`row_layout` for leaves laid out differently."""
    layouts = []
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        traced = isinstance(leaf, jax.core.Tracer) and getattr(leaf, "ndim", 0) > 0
        layouts.append((i, _spec_layout(jax.typeof(leaf).sharding, leaf.ndim) if traced else None))
    return _common_layout(fn, arg, layouts)
