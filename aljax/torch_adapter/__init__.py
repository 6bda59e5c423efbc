"""Torch models and tensors in aljax: DLPack hand-over, embeddings computed in torch, selectors.

The torch model runs in torch, on its own device, in eval mode under ``torch.no_grad()``. A
forward hook captures the input ``h`` of the final ``nn.Linear`` (the penultimate features)
together with the logits; both are handed to JAX through DLPack (no copy on the same device) and
the JAX selectors run unchanged, through the same strategy dispatch as :class:`aljax.ActiveSampler`.
A ``(model, tokenizer)`` pair takes raw strings (Hugging Face sequence classifiers: BERT's
``classifier``, DistilBERT's ``pre_classifier``/``classifier``, GPT-2's ``score`` read at the last
non-pad token).

Torch models go through the functions of this package, which mirror the JAX front doors of the
same name with ``(model, pool, k, *, ...)`` in place of ``(params, apply_fn, pool, k, *, ...)``
and ``device=None, head=None, max_length=None`` in place of ``features_fn`` (``docs/api.md``);
the top-level ``aljax.*`` functions stay JAX-only. This package imports torch; ``import aljax``
does not.

Modules, in the order data flows through them: ``_dlpack`` (tensors to arrays and back),
``_inputs`` (pools, data loaders and tokenizers to model-ready batches), ``_head`` (the final
layer, found by a forward hook), ``_outputs`` (the model over the pool: logits and features,
checked and handed over), ``_embeddings``, ``_selectors``, ``_bald`` and ``_batchbald`` (the public functions).

Example:
  >>> import torch, aljax.torch_adapter as ta
  >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
  >>> pool = torch.randn(100, 4)
  >>> ta.badge(model, pool, 10, key=0).shape
  (10,)
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise ImportError("aljax.torch_adapter needs torch: `pip install 'aljax[torch]' 'torch==2.13.0'` (pin "
                      "torch: an unpinned install may pull a multi-GB CUDA build).") from _err

# DLPack hand-over
from ._dlpack import to_jax as to_jax
from ._dlpack import to_torch as to_torch

# Embeddings
from ._embeddings import fisher_embedding as fisher_embedding
from ._embeddings import gradient_embedding as gradient_embedding
from ._embeddings import last_layer_embedding as last_layer_embedding
from ._embeddings import logits_and_features as logits_and_features

# Selectors
from ._bald import bald as bald
from ._batchbald import batch_bald as batch_bald
from ._selectors import badge as badge
from ._selectors import bait as bait
from ._cluster_margin import cluster_margin as cluster_margin
from ._cluster_margin import cluster_pool as cluster_pool
from ._selectors import coreset as coreset
from ._selectors import entropy as entropy
from ._selectors import least_confidence as least_confidence
from ._selectors import margin as margin
from ._selectors import random_sample as random_sample
from ._selectors import vessal as vessal

__all__ = [
    # DLPack hand-over
    "to_jax",
    "to_torch",
    # Embeddings
    "fisher_embedding",
    "gradient_embedding",
    "last_layer_embedding",
    "logits_and_features",
    # Selectors
    "badge",
    "bait",
    "cluster_margin",
    "cluster_pool",
    "bald",
    "batch_bald",
    "coreset",
    "entropy",
    "least_confidence",
    "margin",
    "random_sample",
    "vessal",
]
