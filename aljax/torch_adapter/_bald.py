"""BALD for a torch model: Monte Carlo dropout passes run in torch, scored in JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import torch

from .. import _progress, _scores, _stochastic, _validate, scores
from ._dlpack import to_jax
from ._head import _logits_of
from ._inputs import _Inputs, _model_device, pool_len, unpack_model

# BALD's per-batch parts (mean probabilities, mean entropy over the passes), compiled once.
_jit_bald_parts = jax.jit(_scores.bald_parts)


def _dropout_seed(key) -> int:
    """The torch seed of :func:`bald`'s MC passes, drawn from the JAX ``key``."""
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def bald(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, max_length: int | None = None,
         problem_type: str = "classification", mc_samples: int = 20, progress: bool | None = None,
         stochastic: str | None = None, beta: float = 1.0) -> jax.Array:
    """BALD with Monte Carlo dropout for a torch model: the ``k`` points of largest mutual
    information between the label and the weights.

    Houlsby, Huszár, Ghahramani & Lengyel, "Bayesian active learning for classification and
    preference learning", 2011; Gal, Islam & Ghahramani, "Deep Bayesian active learning with
    image data", ICML 2017. Each batch runs through the model ``mc_samples`` times with its
    dropout modules (any ``torch.nn.modules.dropout`` module) in training mode and every other
    module in eval mode (batch norm keeps its running statistics), under ``torch.no_grad()``. The
    logits of the passes are handed to JAX and scored as :func:`aljax.scores.bald` scores them,
    ``H(mean_s p_s) − mean_s H(p_s)``; the top ``k`` are returned (top-k BALD, not BatchBALD).

    The dropout masks come from torch's generator, seeded from ``key`` inside
    ``torch.random.fork_rng``: the same key and ``batch_size`` give the same picks, and the
    caller's torch random state is left as it was. torch draws one mask per batch, so unlike
    :func:`aljax.bald` the masks (and so the picks) change with ``batch_size``. Modules' training
    flags are restored.

    With ``stochastic`` the batch is drawn from the BALD scores rather than taken from the top
    (PowerBALD with ``"power"``; Kirsch et al., TMLR 2023), with the key
    ``jax.random.fold_in(key, 0xBA1D)`` as in :func:`aljax.bald`: the picks equal
    ``aljax.stochastic_top_k(jax.random.fold_in(key, 0xBA1D), scores, k, mode=stochastic,
    beta=beta)``.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` with at least one dropout
        module, or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` candidate examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a
        mapping of ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list
        of ``n`` strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key for the dropout masks (default 0: two calls without a
        key use the same masks).
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` only (the score needs class probabilities); anything
        else is refused before the forward pass.
      mc_samples: stochastic passes per batch, a Python int ``>= 2``.
      progress: progress bars for the forward pass and the selection: ``None`` (default) shows
        them when stderr is a terminal, once the work has run for two seconds; ``True``
        always (needs tqdm); ``False`` never.
      stochastic: ``None`` (default) for the top ``k``; ``"power"``, ``"softmax"`` or
        ``"softrank"`` to draw the batch (see :func:`aljax.stochastic_top_k`).
      beta: the draw's inverse temperature, a finite number ``> 0``.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, highest score first and ties to the lowest
      index (in draw order with ``stochastic``).

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
      ...                             torch.nn.Linear(16, 3))
      >>> ta.bald(model, torch.randn(60, 4), 5, key=0, mc_samples=8).shape
      (5,)
    """
    with _progress.scope("torch_adapter.bald", progress):
        fn = "torch_adapter.bald"
        module, tokenizer = unpack_model(fn, model)
        key = _validate.as_key(fn, key)
        _validate.check_problem_type(fn, problem_type, "bald")
        k = _validate.check_k(fn, k, pool_len(pool) or None)
        mc_samples = _validate.check_int(fn, "mc_samples", mc_samples, low=2)
        stochastic, beta = _stochastic.check_options(fn, stochastic, beta)
        batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
        if max_length is not None:
            max_length = _validate.check_int(fn, "max_length", max_length, low=1)
        dropouts = [m for m in module.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        if not dropouts:
            raise ValueError(_validate.message(
                fn, "model", "a model with dropout modules (torch.nn.Dropout, ...) for MC dropout",
                f"a {type(module).__name__} without any: a deterministic model has zero mutual information"))
        device = _model_device(module, device)
        inputs = _Inputs(fn, module, tokenizer, pool, batch_size, device, max_length)
        flags = {m: m.training for m in module.modules()}
        probs, entropies = [], []
        try:
            module.eval()
            for m in dropouts:
                m.train()
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(_dropout_seed(key))
                for args, kwargs in inputs.batches():
                    logits = torch.stack([_logits_of(fn, module(*args, **kwargs)) for _ in range(mc_samples)])
                    if logits.ndim != 3 or logits.shape[2] < 2 or not logits.is_floating_point():
                        raise ValueError(_validate.message(
                            fn, "model", "a classifier returning floating logits (batch, C) with C >= 2",
                            f"outputs of shape {tuple(logits.shape[1:])} and dtype {logits.dtype}"))
                    if not probs and bool((logits == logits[:1]).all()):
                        raise ValueError(_validate.message(
                            fn, "model", "stochastic under dropout (MC dropout) for BALD",
                            f"the same logits in all {mc_samples} passes of the first batch: its dropout modules do "
                            "not change the output"))
                    mean_probs, mean_entropy = _jit_bald_parts(to_jax(logits, narrow=True))
                    probs.append(mean_probs)
                    entropies.append(mean_entropy)
        finally:
            for m, training in flags.items():
                m.train(training)
        if not probs:
            raise ValueError(_validate.message(fn, "pool", "a non-empty pool", "an empty pool (0 examples)"))
        mean_probs, mean_entropy = jnp.concatenate(probs), jnp.concatenate(entropies)
        _validate.check_k(fn, k, mean_probs.shape[0])
        _validate.check_finite(fn, "the MC-averaged probabilities and entropies", mean_probs, mean_entropy)
        bald_scores = _scores.bald_from_parts(mean_probs, mean_entropy)
        if stochastic is None:
            return scores.top_k(bald_scores, k)
        return _stochastic.draw_acquisition(jax.random.fold_in(key, _stochastic.BALD_DRAW), bald_scores, k,
                                            stochastic, beta)
