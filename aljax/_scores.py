"""The uncertainty scores' kernels: valid input assumed (the public, validated versions are
in :mod:`aljax.scores`); shared by the scores, the model-level front doors and the torch adapter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate
from ._padding import pad_to_bucket


def least_confidence(logits: jax.Array) -> jax.Array:
    return 1.0 - jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)


def margin(logits: jax.Array) -> jax.Array:
    top2 = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), 2)[0]
    return 1.0 - (top2[..., 0] - top2[..., 1])


def entropy(logits: jax.Array) -> jax.Array:
    # H(p) = -sum_c p_c log p_c, with log p from log_softmax (0 log 0 = 0, no log of 0).
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def bald_parts(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per point: the mean probabilities over MC samples ``(n, C)`` and the mean entropy ``(n,)``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    probs = jnp.exp(logp)
    return jnp.mean(probs, axis=0), jnp.mean(-jnp.sum(probs * logp, axis=-1), axis=0)


def bald_from_parts(mean_probs: jax.Array, mean_entropy: jax.Array) -> jax.Array:
    # I(y; w | x) = H(E_w p) - E_w H(p) >= 0 (Jensen); clip the rounding noise below 0.
    safe = jnp.where(mean_probs > 0, mean_probs, 1.0)
    predictive_entropy = -jnp.sum(mean_probs * jnp.log(safe), axis=-1)
    return jnp.maximum(predictive_entropy - mean_entropy, 0.0)


def bald(logits: jax.Array) -> jax.Array:
    return bald_from_parts(*bald_parts(logits))


@functools.partial(jax.jit, static_argnames="k")
def top_k(scores: jax.Array, k: int) -> jax.Array:
    # lax.top_k puts the lower index first among equal values; -0.0 would rank below +0.0, so
    # canonicalise zeros first.
    scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)
    return jax.lax.top_k(scores, k)[1].astype(jnp.int32)


def select(logits, score, k: int) -> jax.Array:
    """``top_k(score(logits), k)`` as one jitted call. Small concrete logits (on the host or one
    CPU device, :func:`aljax._validate.on_host`) are zero-padded to a size bucket
    (:func:`aljax._padding.bucket`) whose rows score ``-inf``, below every real score (all are
    finite): a pool that shrinks every round compiles once per bucket, with the same picks."""
    n = logits.shape[0]
    if _validate.on_host(logits):
        # (A NumPy array and a jax Array of one shape are two entries of the jit cache.)
        logits = jax.device_put(pad_to_bucket(logits, n))
    return _select(logits, np.int32(n), score=score, k=k)


@functools.partial(jax.jit, static_argnames=("score", "k"))
def _select(logits, n_valid, *, score, k: int):
    scores = score(logits)
    return top_k(jnp.where(jnp.arange(scores.shape[0]) < n_valid, scores, -jnp.inf), k)
