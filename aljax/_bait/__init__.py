"""BAIT: Ash et al., "Gone fishing: neural active learning with Fisher embeddings", NeurIPS 2021.

Every pool point ``i`` contributes ``r`` rows ``X_i`` (``r × d``) with ``X_iᵀX_i`` its last-layer
Fisher. BAIT greedily picks the batch ``S`` minimising ``tr((λI + F_L' + Σ_{i∈S} X_iᵀX_i)⁻¹ F)``:
forward additions, then backward removals.

The fast path never builds the ``n × r × d`` tensor or a per-point ``d × d`` product; a step costs
``O(n r C D + n r³ + r d²)`` instead of the reference's ``O(n r d²)``. The modules, from the
public functions down:

* ``_api``: :func:`fisher_greedy` (the selector) and :func:`bait` (model → Fisher embedding →
  selector);
* ``_plan``: validation of embeddings, chunk sizes, size buckets and padding, and the choice of
  kernel;
* ``_sharded``: the kernel under ``shard_map`` for a pool sharded along its example axis;
* ``_kernel``: Fisher sums, then the forward and backward passes over ``A = M⁻¹`` and the
  per-point blocks, with exact refreshes;
* ``_lazy``: the Woodbury updates of ``A``, applied lazily;
* ``_picks_space``: the backward removals of a wide head, in the space of the forward picks;
* ``_blocks``: the per-point ``r × r`` blocks: gains and rank-``r`` corrections;
* ``_rows``: the rows' layouts, products with them, and Fisher sums without outer products.

Example:
  >>> import jax, aljax
  >>> probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (100, 3)))
  >>> h = jax.random.normal(jax.random.key(1), (100, 8))
  >>> emb = aljax.FisherFactors(probs, h)
  >>> picks = aljax.fisher_greedy(emb[10:], 5, labeled=emb[:10])
  >>> bool((aljax.fisher_greedy(emb[10:], 5, labeled=emb[:10], key=7) == picks).all())  # the key is ignored
  True
"""

from ._api import bait as bait
from ._api import fisher_greedy as fisher_greedy

__all__ = ["bait", "fisher_greedy"]
