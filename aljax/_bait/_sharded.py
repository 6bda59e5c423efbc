"""BAIT on a pool sharded along its example axis: :func:`aljax._bait._kernel.forward_backward`
under ``jax.shard_map``.

Each device builds its part of ``F`` (one ``psum`` of the ``d × d`` sums) and keeps its points'
rows and blocks; per step the devices exchange only each shard's best ``(gain, index)`` (two
all-gathers of one number per device), the picked point's factors and two maxima for the refresh
test; the backward pass runs replicated on the forward picks. Per-point state never leaves its
device.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from .. import _sharding, _validate
from ._kernel import forward_backward
from ._rows import KronChunks, counts, mask_points, picked


class Shards(NamedTuple):
    """The example axis inside ``shard_map``: mesh axes ``axes`` cut it into ``count`` blocks;
    ``labeled_sharded``: the labeled embedding is cut the same way (else it is replicated). The
    topology object of :func:`aljax._bait._kernel.forward_backward` (see
    :data:`aljax._bait._kernel.LOCAL` for one device)."""

    axes: Any
    count: int
    labeled_sharded: bool

    def psum(self, x):
        return jax.lax.psum(x, self.axes)

    def psum_labeled(self, x):
        return self.psum(x) if self.labeled_sharded else x

    def pmax(self, x):
        return jax.lax.pmax(x, self.axes)

    def pick(self, rows, gains, taken, p_local, n_local):
        """The global argmax and the picked point's rows.

        Each shard offers its best unpicked point; one all-gather of the ``(gain, index)`` pairs
        picks the winner (ties: the lowest shard, i.e. the lowest pool index, as on one device);
        the winner's rows reach every device through one ``psum`` of its factors (``r·C + D``
        numbers for Kronecker rows, ``r·d`` for dense ones), never of the pool.
        Returns ``(global index, whether this shard holds it, X_p (r, d))``."""
        best = jnp.where(taken, -jnp.inf, gains).reshape(-1)[p_local]
        bests = jax.lax.all_gather(best, self.axes)
        owners = jax.lax.all_gather(p_local, self.axes)
        winner = jnp.argmax(bests).astype(jnp.int32)
        p = winner * n_local + owners[winner]
        mine = jax.lax.axis_index(self.axes) == winner
        nc, b = counts(rows)
        ci, pi = p_local // b, p_local % b
        if isinstance(rows, KronChunks):
            s_p = jnp.where(mine, rows.s[ci, :, :, pi], 0)
            h_p = jnp.where(mine, rows.ht[ci, :, pi], 0)
            s_p, h_p = self.psum((s_p, h_p))
            xp = (s_p[:, :, None] * h_p[None, None, :]).reshape(s_p.shape[0], -1)
        else:
            xp = self.psum(jnp.where(mine, rows.x[ci, pi], 0))
        return p, mine, xp

    def picked(self, rows, g, h, drift, picks, n_local):
        """Rows, blocks and drift of the forward picks on every device: each device takes the
        picks it holds (zeros elsewhere) and one ``psum`` replicates them."""
        local = picks - jax.lax.axis_index(self.axes) * n_local
        mine = (local >= 0) & (local < n_local)
        sub, g, h, drift = picked(rows, g, h, drift, jnp.clip(local, 0, n_local - 1))
        parts = (mask_points(sub, mine),) + tuple(jnp.where(mine, x, 0) for x in (g, h, drift))
        return self.psum(parts)


@functools.partial(jax.jit, static_argnames=("k", "n_forward", "chunk", "layout", "labeled_sharded"))
def sharded_kernel(pool, labeled, lamb, *, k, n_forward, chunk, layout, labeled_sharded):
    """:func:`aljax._bait._kernel.forward_backward` under ``shard_map`` over the pool's example
    axis (``layout``, a :class:`aljax._sharding.RowLayout`)."""
    shards = Shards(layout.axes, layout.shards, labeled_sharded)
    rows_spec = PartitionSpec(layout.axes)
    labeled_spec = rows_spec if labeled_sharded else PartitionSpec()

    def body(pool, labeled, lamb):
        return forward_backward(pool, labeled, lamb, k, n_forward, chunk, shards)

    # check_vma=False: the loops carry per-shard and replicated state side by side, and the picks
    # returned are replicated by construction (computed from all-gathered / psum-med values only).
    return jax.shard_map(body, mesh=layout.mesh, in_specs=(rows_spec, labeled_spec, PartitionSpec()),
                         out_specs=PartitionSpec(), check_vma=False)(pool, labeled, lamb)


def layouts(fn, pool_arg, pool, labeled_arg, labeled):
    """The example-axis layouts of the pool and labeled embeddings (concrete or traced with
    Explicit mesh axes; see :mod:`aljax._sharding`), None where not sharded."""
    def layout_of(arg, tree):
        if tree is None:
            return None
        return _sharding.row_layout(fn, arg, tree) or _sharding.traced_row_layout(fn, arg, tree)
    return layout_of(pool_arg, pool), layout_of(labeled_arg, labeled)


def place(tree, sharding_of):
    """Every leaf laid out as ``sharding_of(ndim)`` (a no-op where it is already): ``device_put``
    on arrays, ``reshard`` on values traced with an explicitly sharded type."""
    def put(x):
        if isinstance(x, jax.core.Tracer):
            return jax.sharding.reshard(x, sharding_of(x.ndim))
        return jax.device_put(x, sharding_of(x.ndim))
    return jax.tree_util.tree_map(put, tree)


def plan_sharded(fn, rows, labeled_rows, lamb, layout, labeled_layout, static):
    """``(kernel, args, static kwargs)`` for a pool sharded as ``layout``: the rows placed on the
    pool's layout (a no-op when they are there already), the labeled rows sharded like the pool
    or replicated."""
    labeled_sharded = labeled_layout is not None
    if labeled_sharded and labeled_layout != layout:
        raise ValueError(_validate.message(
            fn, "labeled", f"unsharded, replicated, or sharded like the pool ({layout.describe()})",
            f"labeled examples {labeled_layout.describe()}"))
    rows = place(rows, layout.sharding)
    if labeled_rows is not None:
        replicated = NamedSharding(layout.mesh, PartitionSpec())
        labeled_rows = place(labeled_rows, layout.sharding if labeled_sharded else lambda ndim: replicated)
    return sharded_kernel, (rows, labeled_rows, lamb), dict(static, layout=layout, labeled_sharded=labeled_sharded)
