"""Small dense linear algebra shared by the Fisher and covariance code.

Matmuls in curvature code run at ``precision=HIGHEST``: on accelerators the default precision
rounds float32 inputs to bfloat16, which changes which point a greedy Fisher step picks.
"""

from __future__ import annotations

import contextlib

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


_blas = {}


def one_blas_thread():
    """A context in which NumPy's BLAS and LAPACK run on one thread (through ``threadpoolctl``, where
    it is installed; otherwise nothing changes), for the small host linear algebra done just before
    a jitted kernel. OpenBLAS's worker threads spin-wait after each threaded call (``2^28`` cycles by
    default, ``OPENBLAS_THREAD_TIMEOUT``) before they sleep, so a kernel started then shares every core
    with them. One thread also makes these host results independent of the machine's core count
    (a threaded OpenBLAS splits a product differently on different counts).

    >>> import numpy as np
    >>> with one_blas_thread():
    ...     float((np.eye(2) @ np.ones(2)).sum())
    2.0
    """
    if "controller" not in _blas:
        try:
            import threadpoolctl
        except ImportError:
            _blas["controller"] = None
        else:
            _blas["controller"] = threadpoolctl.ThreadpoolController()
    if _blas["controller"] is None:
        return contextlib.nullcontext()
    return _blas["controller"].limit(limits=1, user_api="blas")


def host_spd_inverse(m: np.ndarray) -> np.ndarray:
    """:func:`spd_inverse` in NumPy, for a small matrix on the host: ``R⁻ᵀR⁻¹`` with ``R`` the
    Cholesky factor. Raises ``numpy.linalg.LinAlgError`` where ``m`` is not numerically positive
    definite."""
    inv_factor = np.linalg.inv(np.linalg.cholesky((m + m.T) / 2))
    out = inv_factor.T @ inv_factor
    return (out + out.T) / 2
