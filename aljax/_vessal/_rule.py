"""The keep rule both kernels share: the target rate and the first point the draws keep.

Between two keeps ``A`` is fixed, so a kernel scores all the remaining points of its chunk at
once and asks here for the first one kept; everything after that point is scored again under
the new ``A``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def target_rate(budget: int | None, kept, target, pos, positions, dtype) -> jax.Array:
    """``ρ_i = (k − kept) / (N − i)`` at the chunk's ``positions`` (budget form, ``target = N``,
    ``pos`` the global position of the chunk's first point) or the fixed rate ``target``."""
    if budget is None:
        return jnp.asarray(target, dtype)
    return (budget - kept).astype(dtype) / (target - pos - positions).astype(dtype)


def first_keep(scores, normaliser, rate, uniforms, active, n_valid) -> tuple[jax.Array, jax.Array]:
    """``(found, j)``: whether any ``active`` point is kept, and the first one that is
    (``n_valid`` when none). Point ``i`` is kept iff ``v_i < min(1, ρ_i · s_i / tr(Σ̂ A⁻¹))``;
    a zero score or normaliser never keeps (a zero row adds no volume)."""
    ok = (scores > 0) & (normaliser > 0)
    prob = jnp.where(ok, jnp.minimum(1.0, rate * scores / jnp.where(ok, normaliser, 1)), 0.0)
    keeps = active & (uniforms < prob)
    found = jnp.any(keeps)
    return found, jnp.where(found, jnp.argmax(keeps), n_valid).astype(jnp.int32)
