"""Small dense linear algebra shared by the Fisher and covariance code.

Matmuls in curvature code run at ``precision=HIGHEST``: on accelerators the default precision
rounds float32 inputs to bfloat16, which changes which point a greedy Fisher step picks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST


def mm(a, b):
    """``a @ b`` at full float32 (or float64) precision."""
    return jnp.matmul(a, b, precision=HIGHEST)


def sym(m):
    """The symmetric part ``(m + mᵀ)/2`` of a (batch of) square matrices, over the last two axes."""
    return (m + jnp.swapaxes(m, -1, -2)) / 2


def inverse_factor(m):
    """``L = R⁻ᵀ`` with ``R = chol(m)``, so that ``L Lᵀ = m⁻¹``, for a small symmetric positive
    definite ``m``: the factor a Woodbury step applies to its ``r`` directions."""
    eye = jnp.eye(m.shape[-1], dtype=m.dtype)
    return jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(m), eye, lower=True).T


def spd_inverse(m):
    """The inverse of a symmetric positive definite ``m`` through its Cholesky factor (outside hot
    loops: a one-off setup solve)."""
    eye = jnp.eye(m.shape[-1], dtype=m.dtype)
    return sym(jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(sym(m)), True), eye))


def host_spd_inverse(m: np.ndarray) -> np.ndarray:
    """:func:`spd_inverse` in NumPy, for a small matrix on the host: ``R⁻ᵀR⁻¹`` with ``R`` the
    Cholesky factor. Raises ``numpy.linalg.LinAlgError`` where ``m`` is not numerically positive
    definite."""
    inv_factor = np.linalg.inv(np.linalg.cholesky((m + m.T) / 2))
    out = inv_factor.T @ inv_factor
    return (out + out.T) / 2
