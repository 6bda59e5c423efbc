"""The uncertainty scores' kernels: valid input assumed (the public, validated versions are
in :mod:`aljax.scores`); shared by the scores, the model-level front doors and the torch adapter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


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
