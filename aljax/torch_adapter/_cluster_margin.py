"""Cluster-Margin for torch models: the model runs in torch (logits and penultimate features, as
for every mirror), the clustering and the round-robin are :mod:`aljax._clustermargin`'s."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import torch

from .. import _progress, _validate
from .._clustermargin import MARGIN_MULTIPLE, round_robin_kernel, candidates_for, check_clustering, \
    check_margin_multiple
from .._hac import MAX_EXACT, N_CENTRES, Clustering, check_fingerprint, check_sizes, check_threshold, \
    cluster_features, row_hashes
from ._inputs import pool_len
from ._outputs import outputs

_CLUSTER_KEY = 0xC1A5


def _pool_hashes(pool):
    """The rows' 64-bit hashes where the pool's rows can be read without the model: a tensor or an
    array (every bit), a mapping of them, or a list of strings (their UTF-8 bytes); ``None`` for a
    ``Dataset`` or a ``DataLoader`` (then only the size is compared)."""
    if isinstance(pool, torch.Tensor):
        return row_hashes(np.asarray(pool.detach().cpu().numpy()))
    if isinstance(pool, (np.ndarray, jax.Array)):
        return row_hashes(pool)
    if isinstance(pool, dict) and pool and all(isinstance(v, torch.Tensor) for v in pool.values()):
        return row_hashes({name: v.detach().cpu().numpy() for name, v in sorted(pool.items())})
    if isinstance(pool, (list, tuple)) and pool and all(isinstance(s, str) for s in pool):
        digests = [hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest() for s in pool]
        return jnp.asarray(np.frombuffer(b"".join(digests), dtype="<u4").reshape(len(pool), 2))
    return None


def _checked_sizes(fn, threshold, max_exact, n_centres):
    if threshold is None:
        raise ValueError(_validate.message(fn, "threshold", "a finite distance > 0 (or pass `clustering=`)", None))
    return (check_threshold(fn, threshold), *check_sizes(fn, max_exact, n_centres))


def cluster_pool(model, pool, *, threshold: float, key=0, batch_size: int = 256, device=None,
                 head: str | None = None, max_length: int | None = None, problem_type: str = "classification",
                 max_exact: int = MAX_EXACT, n_centres: int = N_CENTRES, progress: bool | None = None) -> Clustering:
    """Cluster-Margin's clustering of a pool for a torch model: average-linkage HAC of the
    penultimate features (the input of the final ``nn.Linear``) cut at ``threshold``, as
    :func:`aljax.cluster_pool` (exact up to ``max_exact`` points, two-level beyond).

    The fingerprint hashes every row of a tensor or array pool (or mapping of tensors), and the
    UTF-8 bytes of each string of a list of strings; a ``Dataset`` or ``DataLoader`` pool gets no
    row hashes (zeros), and only its size is compared in later rounds.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)``, or a ``(model, tokenizer)``
        pair when ``pool`` is a list of strings.
      pool: ``n`` examples (as :func:`aljax.torch_adapter.margin` takes them).
      threshold: the distance cut, a finite number ``> 0``, on the scale of the features.
      key: int seed or ``jax.random`` key of the two-level scheme.
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer; default the last ``nn.Linear`` executed.
      max_length: tokeniser truncation length (strings only).
      problem_type: ``"classification"`` or ``"regression"`` (only the features are read).
      max_exact: the largest pool clustered exactly, an int ``>= 2``.
      n_centres: the two-level scheme's centres, an int ``>= 2`` (at most ``max_exact`` when
        the pool has more than ``max_exact`` points).
      progress: progress bars: ``None`` (default) when stderr is a terminal; ``True``; ``False``.

    Returns:
      An :class:`aljax.Clustering` of the ``n`` points.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.cluster_pool(model, torch.randn(60, 4), threshold=1.0).labels.shape
      (60,)
    """
    fn = "torch_adapter.cluster_pool"
    with _progress.scope(fn, progress):
        key = _validate.as_key(fn, key)
        threshold, max_exact, n_centres = _checked_sizes(fn, threshold, max_exact, n_centres)
        return _cluster(fn, model, pool, key, threshold, max_exact, n_centres, problem_type,
                        dict(batch_size=batch_size, device=device, head=head, max_length=max_length))[0]


def _cluster(fn, model, pool, key, threshold, max_exact, n_centres, problem_type, common):
    logits, h = outputs(fn, model, pool, problem_type=problem_type, **common)
    hashes = _pool_hashes(pool)
    if hashes is None:
        hashes = jnp.zeros((h.shape[0], 2), jnp.uint32)
    labels, n_clusters = cluster_features(fn, key, h, threshold, max_exact, n_centres)
    return Clustering(labels, n_clusters, hashes), logits


def cluster_margin(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
                   max_length: int | None = None, problem_type: str = "classification",
                   clustering: Clustering | None = None, threshold: float | None = None,
                   margin_multiple: float = MARGIN_MULTIPLE, max_exact: int = MAX_EXACT,
                   n_centres: int = N_CENTRES, progress: bool | None = None) -> jax.Array:
    """Cluster-Margin for a torch model (Citovsky et al., "Batch active learning at scale",
    NeurIPS 2021): the ``⌈margin_multiple·k⌉`` lowest-margin points, round-robin over a
    clustering of the pool from the smallest cluster up, as :func:`aljax.cluster_margin`; the
    picks equal ``aljax.margin_round_robin(logits, k, key=key, clustering=clustering,
    margin_multiple=margin_multiple)`` on the logits the model computes.

    Pass the clustering made once by :func:`aljax.torch_adapter.cluster_pool` (restricted with
    ``clustering.take(rows)`` as the pool shrinks); it is checked against ``pool`` before the
    forward pass (size, and the row hashes where the pool's rows can be read: see
    :func:`cluster_pool`). Without it, ``threshold`` is required and the pool is clustered here
    (``fold_in(key, 0xC1A5)`` for the two-level scheme).

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)``, or a ``(model, tokenizer)``
        pair when ``pool`` is a list of strings.
      pool: ``n`` candidate examples (as :func:`aljax.torch_adapter.margin` takes them).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the order within clusters.
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer; default the last ``nn.Linear`` executed.
      max_length: tokeniser truncation length (strings only).
      problem_type: ``"classification"`` only.
      clustering: the :class:`aljax.Clustering` of ``pool``, or ``None`` to compute it here.
      threshold: the distance cut when ``clustering`` is ``None`` (else it must be ``None``).
      margin_multiple: candidates per pick, a finite number ``>= 1``.
      max_exact, n_centres: the clustering's sizes when it is computed here.
      progress: progress bars: ``None`` (default) when stderr is a terminal; ``True``; ``False``.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, in pick order.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> pool = torch.randn(60, 4)
      >>> clustering = ta.cluster_pool(model, pool, threshold=1.0)
      >>> ta.cluster_margin(model, pool, 5, clustering=clustering, key=1).shape
      (5,)
    """
    fn = "torch_adapter.cluster_margin"
    with _progress.scope(fn, progress):
        key = _validate.as_key(fn, key)
        _validate.check_problem_type(fn, problem_type, "cluster_margin")
        n = pool_len(pool)
        if k is not None:
            k = _validate.check_k(fn, k, n or None)
        margin_multiple = check_margin_multiple(fn, margin_multiple)
        common = dict(batch_size=batch_size, device=device, head=head, max_length=max_length)
        if clustering is None:
            threshold, max_exact, n_centres = _checked_sizes(fn, threshold, max_exact, n_centres)
            clustering, logits = _cluster(fn, model, pool, jax.random.fold_in(key, _CLUSTER_KEY), threshold,
                                          max_exact, n_centres, problem_type, common)
        else:
            if threshold is not None:
                raise ValueError(_validate.message(fn, "threshold", "None when `clustering` is given (the threshold "
                                                   "was fixed when the clustering was computed)", threshold))
            check_clustering(fn, clustering, n)
            hashes = _pool_hashes(pool)
            if hashes is not None and bool(jnp.any(clustering.row_hash != 0)):
                check_fingerprint(fn, "pool", clustering, hashes)
            logits, _ = outputs(fn, model, pool, problem_type=problem_type, **common)
            check_clustering(fn, clustering, int(logits.shape[0]))
        n = int(logits.shape[0])
        k = _validate.check_k(fn, k, n)
        return round_robin_kernel(key, logits, clustering.labels, k, candidates_for(k, margin_multiple, n))
