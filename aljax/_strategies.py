"""Strategy name -> embedding of the model's outputs -> selector.

The one dispatch from a model's outputs (logits and penultimate features, computed by a JAX
``apply_fn`` or by the torch adapter) to an embedding-level selector. ``ActiveSampler`` and the
torch adapter's front doors both go through it, so a strategy is implemented once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _scores, _stochastic, _validate, scores
from ._badge import kmeans_pp
from ._bait import fisher_greedy
from ._baselines import k_center_greedy, random_kernel
from ._coldstart import probcover, typiclust
from ._embeddings import hallucinated_residual, softmax
from ._types import Factored, FisherFactors
from . import _vessal


STRATEGIES = ("vessal", "badge", "bait", "margin", "entropy", "least_confidence", "coreset", "typiclust",
              "probcover", "random")
UNCERTAINTY = ("margin", "entropy", "least_confidence")
# Strategies that read only the features h (the head's input), never the head's outputs.
COLD_START = ("typiclust", "probcover")
# Strategies that use the labeled examples' outputs.
USES_LABELED = ("bait", "coreset", "vessal", *COLD_START)
# The damping of each algorithm where its paper's default differs (used when ``lamb`` is None).
DEFAULT_LAMB = {"bait": 1.0, "vessal": 0.01}


def k_from_rate(rate: float, n: int) -> int:
    """A labeling rate turned into a count for the batch strategies: ``max(1, round(rate·n))``."""
    return max(1, min(n, int(round(rate * n))))


def select_from_outputs(fn: str, strategy: str, problem_type: str, key, logits, h, n: int, k: int | None, *,
                        rate: float | None = None, labeled=None, options: dict | None = None) -> jax.Array:
    """Pick from model outputs: ``logits (n, C)`` (or regression outputs) and features ``h (n, D)``.

    ``labeled`` is ``(labeled_logits, labeled_h)`` or None. Exactly one of ``k`` / ``rate``.
    ``options`` holds the algorithm's keywords (``prune``, ``lamb`` (None: the algorithm's
    default), BAIT's ``damping``, ``oversample``, ``rank``, ``precompute_covariance``, ``delta``,
    and the uncertainty scores' ``stochastic`` and ``beta``, already checked).
    """
    options = options or {}
    k, rate = _validate.check_k_or_rate(fn, k, rate, n)
    if strategy != "vessal" and k is None:
        k = k_from_rate(rate, n)
    _validate.check_problem_type(fn, problem_type, strategy)
    regression = problem_type == "regression"
    labeled_logits, labeled_h = labeled if labeled is not None else (None, None)
    lamb = options.get("lamb")
    lamb = DEFAULT_LAMB.get(strategy) if lamb is None else lamb

    if strategy == "random":
        return random_kernel(key, n, k)
    if strategy in UNCERTAINTY:
        # (Logits checked finite where they were made: logits_and_features, the torch adapter's outputs.)
        if options.get("stochastic") is None:   # (one compilation per pool bucket, not per pool size)
            return _scores.select(logits, getattr(_scores, strategy), k)
        score = getattr(scores, strategy)(logits)
        return _stochastic.draw_acquisition(key, score, k, options["stochastic"], options.get("beta", 1.0))
    if strategy == "coreset":
        return k_center_greedy(h, k, key=key, labeled=labeled_h)
    if strategy in COLD_START and n == 1:
        return jnp.zeros((1,), jnp.int32)   # k = 1: the only point (both need two points to measure)
    if strategy == "typiclust":
        # The paper's 20 neighbours, fewer on a pool too small for them.
        return typiclust(h, k, key=key, labeled=labeled_h, n_neighbors=max(1, min(20, n - 1)))
    if strategy == "probcover":
        delta = options.get("delta")
        if delta is None and (regression or logits.shape[1] < 2):
            raise ValueError(_validate.message(fn, "delta", "a positive float for problem_type='regression' (the "
                                               "purity rule needs a number of classes)", None))
        n_classes = None if delta is not None else min(int(logits.shape[1]), n)
        return probcover(h, k, key=key, labeled=labeled_h, delta=delta, n_classes=n_classes)
    if strategy == "badge":
        # Regression: the squared loss's gradient at the hallucinated label (the prediction itself)
        # is zero, so BADGE's embedding degenerates; k-means++ runs on h (diversity only).
        emb = h if regression else Factored(hallucinated_residual(logits), h)
        return kmeans_pp(emb, k, key=key, prune=options.get("prune", False))
    # BAIT and VeSSAL: Fisher embeddings; regression's Fisher is h hᵀ (dense rows h).
    emb = h if regression else FisherFactors(softmax(logits), h)
    labeled_emb = None
    if labeled_h is not None:
        labeled_emb = labeled_h if regression else FisherFactors(softmax(labeled_logits), labeled_h)
    if strategy == "bait":
        if regression:  # fisher_greedy takes dense Fisher rows as (n, r, d): one row h per point
            emb = emb[:, None, :]
            labeled_emb = None if labeled_emb is None else labeled_emb[:, None, :]
        return fisher_greedy(emb, k, key=key, labeled=labeled_emb, lamb=lamb,
                             damping=options.get("damping", "absolute"), oversample=options.get("oversample", 2.0))
    if strategy == "vessal":
        _validate.check_rank(fn, options.get("rank", 1), problem_type)
        rank = options.get("rank", 1) if isinstance(emb, FisherFactors) else None
        if rank is not None and rank > emb.probs.shape[1]:
            raise ValueError(_validate.message(fn, "rank", f"at most the number of classes ({emb.probs.shape[1]})",
                                               rank))
        covariance = None
        if options.get("precompute_covariance", False):
            covariance = _vessal.covariance_of(emb, labeled_emb, rank)
        return _vessal.volume_stream(emb, k, key=key, labeled=labeled_emb, rate=rate, lamb=lamb, rank=rank,
                                     covariance=covariance)
    raise AssertionError(strategy)
