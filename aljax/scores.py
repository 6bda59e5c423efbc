"""Score-level forms of the uncertainty baselines, for users who have their own predictions.

Every score here is "larger = more informative = picked first", so any of them feeds
:func:`top_k`, which breaks ties deterministically by the lowest index::

    >>> import jax.numpy as jnp
    >>> from aljax import scores
    >>> logits = jnp.array([[2.0, 0.0], [0.1, 0.0], [5.0, 0.0]])
    >>> scores.top_k(scores.margin(logits), 1).tolist()
    [1]

References: least confidence and margin (Settles, "Active learning literature survey", 2009;
Scheffer et al., 2001), entropy (Shannon; Settles 2009), BALD (Houlsby et al., 2011;
Gal, Islam & Ghahramani, "Deep Bayesian active learning with image data", ICML 2017).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _scores, _validate

__all__ = ["bald", "entropy", "least_confidence", "margin", "top_k"]


def _check_logits(fn: str, logits, *, ndim: int = 2) -> jax.Array:
    shape, dtype = getattr(logits, "shape", None), getattr(logits, "dtype", None)
    if shape is None:
        raise TypeError(_validate.message(fn, "logits", "an array", type(logits).__name__))
    if len(shape) != ndim:
        expected = "a 2-D array (n, C)" if ndim == 2 else "a 3-D array (mc_samples, n, C)"
        raise ValueError(_validate.message(fn, "logits", expected, f"shape {tuple(shape)}"))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(_validate.message(fn, "logits", "a floating array", f"dtype {dtype}"))
    if shape[-2] == 0:
        raise ValueError(_validate.message(fn, "logits", "at least one row", f"shape {tuple(shape)}"))
    if shape[-1] < 2:
        raise ValueError(_validate.message(fn, "logits", "at least 2 classes", f"shape {tuple(shape)}"))
    _validate.check_finite(fn, "the values of argument `logits`", logits)
    return _validate.as_array(logits)


# One jitted program per score and input shape: run eagerly, each score is several small XLA
# programs, each compiled apart on a first call.
_least_confidence, _margin, _entropy, _bald = (jax.jit(f) for f in (_scores.least_confidence, _scores.margin,
                                                                     _scores.entropy, _scores.bald))

# Public score-level API.


def least_confidence(logits) -> jax.Array:
    """Least-confidence score ``1 − max_c p_c`` (larger = less confident).

    Args:
      logits: ``(n, C)`` floating logits.

    Returns:
      ``(n,)`` scores in ``[0, 1 − 1/C]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from aljax import scores
      >>> scores.least_confidence(jnp.zeros((1, 4))).tolist()
      [0.75]
    """
    return _least_confidence(_check_logits("scores.least_confidence", logits))


def margin(logits) -> jax.Array:
    """Margin score ``1 − (p₍₁₎ − p₍₂₎)``: one minus the gap between the two most likely classes,
    so a small margin gives a large score (Scheffer et al., 2001).

    Args:
      logits: ``(n, C)`` floating logits.

    Returns:
      ``(n,)`` scores in ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from aljax import scores
      >>> scores.margin(jnp.zeros((1, 3))).tolist()
      [1.0]
    """
    return _margin(_check_logits("scores.margin", logits))


def entropy(logits) -> jax.Array:
    """Predictive entropy ``−Σ_c p_c log p_c`` (nats).

    Args:
      logits: ``(n, C)`` floating logits.

    Returns:
      ``(n,)`` scores in ``[0, log C]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from aljax import scores
      >>> round(float(scores.entropy(jnp.zeros((1, 2)))[0]), 4)
      0.6931
    """
    return _entropy(_check_logits("scores.entropy", logits))


def bald(logits) -> jax.Array:
    """BALD mutual information ``H(E_s p_s) − E_s H(p_s)`` from Monte Carlo samples (e.g. MC
    dropout), Houlsby et al. 2011; Gal et al., ICML 2017.

    Args:
      logits: ``(S, n, C)`` logits of ``S`` stochastic forward passes over ``n`` points.

    Returns:
      ``(n,)`` non-negative scores (nats).

    Example:
      >>> import jax.numpy as jnp
      >>> from aljax import scores
      >>> samples = jnp.array([[[4.0, 0.0]], [[0.0, 4.0]]])   # two passes that disagree
      >>> bool(scores.bald(samples)[0] > 0.5)
      True
    """
    return _bald(_check_logits("scores.bald", logits, ndim=3))


def top_k(scores, k: int) -> jax.Array:
    """Indices of the ``k`` largest scores, largest first, ties broken by the lowest index.

    Args:
      scores: ``(n,)`` floating scores.
      k: a Python int in ``[1, n]``.

    Returns:
      ``(k,)`` int32 indices.

    Example:
      >>> import jax.numpy as jnp
      >>> from aljax import scores
      >>> scores.top_k(jnp.array([0.5, 0.9, 0.9, 0.1]), 2).tolist()
      [1, 2]
    """
    fn = "scores.top_k"
    _validate.check_scores_1d(fn, scores)
    k = _validate.check_k(fn, k, scores.shape[0])
    _validate.check_finite(fn, "the values of argument `scores`", scores)
    return _scores.top_k(_validate.as_array(scores), k)
