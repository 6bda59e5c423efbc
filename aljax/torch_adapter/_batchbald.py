"""BatchBALD for a torch model: consistent MC dropout passes run in torch, the greedy in JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import torch

from .. import _batchbald, _progress, _validate
from ._bald import _dropout_seed
from ._dlpack import to_jax
from ._head import _logits_of
from ._inputs import _Inputs, _model_device, pool_len, unpack_model

# Dropout modules whose consistent mask is a Bernoulli mask on one axis of the input.
_FEATURE_AXIS = {torch.nn.Dropout: -1, torch.nn.Dropout1d: 1, torch.nn.Dropout2d: 1, torch.nn.Dropout3d: 1}


class _ConsistentDropout:
    """Forward hooks that replace each dropout module's output by ``x · mask_s / (1 − p)``, with
    one mask per (module, pass ``s``) shared by every example: a weight sample, as BatchBALD
    needs. The mask covers the module's feature axis (the last axis for ``nn.Dropout``, the
    channel axis for ``Dropout1d/2d/3d``) and is drawn from a torch generator seeded by
    ``(seed, module, s)``, so it does not depend on batching or on the order of calls."""

    def __init__(self, fn: str, dropouts: list, seed: int):
        self.fn, self.seed, self.masks, self.handles, self.current = fn, seed, {}, [], 0
        for index, module in enumerate(dropouts):
            self.handles.append(module.register_forward_hook(self._hook(index)))

    def _hook(self, index: int):
        def hook(module, inputs, output):
            x = inputs[0]
            axis = _FEATURE_AXIS[type(module)] % x.ndim
            mask = self._mask(index, module.p, x.shape[axis], x.device, x.dtype)
            shape = [1] * x.ndim
            shape[axis] = -1
            return x * mask.reshape(shape)
        return hook

    def _mask(self, index: int, p: float, width: int, device, dtype):
        cache_key = (index, self.current)
        if cache_key not in self.masks:
            generator = torch.Generator().manual_seed(self.seed + 7919 * index + 104729 * self.current)
            keep = torch.rand(width, generator=generator) >= p
            self.masks[cache_key] = keep.to(dtype) / (1.0 - p) if p < 1 else torch.zeros(width)
        mask = self.masks[cache_key]
        if mask.shape[0] != width:
            raise ValueError(_validate.message(self.fn, "model", "dropout inputs of one width across batches (one "
                                               "mask per pass is shared by every example)",
                                               f"widths {mask.shape[0]} and {width}"))
        return mask.to(device=device, dtype=dtype)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def batch_bald(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, max_length: int | None = None,
               problem_type: str = "classification", mc_samples: int = 20,
               configurations: int = _batchbald.DEFAULT_CONFIGURATIONS, progress: bool | None = None) -> jax.Array:
    """BatchBALD with consistent MC dropout for a torch model (Kirsch, van Amersfoort & Gal,
    NeurIPS 2019): the mirror of :func:`aljax.batch_bald`.

    Each of the ``mc_samples`` passes is one weight sample for the whole pool: the model runs in
    eval mode (batch norm keeps its running statistics) under ``torch.no_grad()``, and forward
    hooks on its dropout modules (``nn.Dropout`` and ``nn.Dropout1d/2d/3d``) multiply their input
    by a mask drawn once per module and pass, shared by every example: over the last axis for
    ``nn.Dropout`` (a dropped feature, i.e. a dropped weight row; for sequence models the same
    features are dropped at every position), over the channel axis for ``Dropout1d/2d/3d``.
    Torch's own random state is not touched; the masks come from generators seeded from ``key``,
    so the picks do not depend on ``batch_size``. The ``(mc_samples, n, C)`` probabilities are
    handed to JAX and :func:`aljax.mutual_information_greedy` picks the batch, with the
    sampled configurations drawn from ``jax.random.split(key)[1]``, as :func:`aljax.batch_bald`
    does. Modules' training flags are restored and the hooks removed.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` with at least one
        ``nn.Dropout``/``Dropout1d/2d/3d`` module, or a ``(model, tokenizer)`` pair when ``pool``
        is a list of strings.
      pool: ``n`` candidate examples (as for :func:`aljax.torch_adapter.bald`).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key of the masks and the sampled configurations.
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` only.
      mc_samples: number of passes, a Python int ``>= 2``.
      configurations: the joint-configuration bound, a Python int ``>= mc_samples`` (see
        :func:`aljax.mutual_information_greedy`).
      progress: progress bars: ``None`` (default) when stderr is a terminal, ``True``, ``False``.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, in greedy order.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
      ...                             torch.nn.Linear(16, 3))
      >>> ta.batch_bald(model, torch.randn(60, 4), 5, key=0, mc_samples=8).shape
      (5,)
    """
    with _progress.scope("torch_adapter.batch_bald", progress):
        fn = "torch_adapter.batch_bald"
        module, tokenizer = unpack_model(fn, model)
        key = _validate.as_key(fn, key)
        _validate.check_problem_type(fn, problem_type, "batch_bald")
        k = _validate.check_k(fn, k, pool_len(pool) or None)
        mc_samples = _validate.check_int(fn, "mc_samples", mc_samples, low=2)
        configurations = _validate.check_int(fn, "configurations", configurations, low=mc_samples)
        batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
        if max_length is not None:
            max_length = _validate.check_int(fn, "max_length", max_length, low=1)
        dropouts = [m for m in module.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        unsupported = sorted({type(m).__name__ for m in dropouts if type(m) not in _FEATURE_AXIS})
        if not dropouts or unsupported:
            got = f"a {type(module).__name__} without any" if not dropouts else f"{', '.join(unsupported)} modules"
            raise ValueError(_validate.message(
                fn, "model", "a model with nn.Dropout or nn.Dropout1d/2d/3d modules for consistent MC dropout", got))
        device = _model_device(module, device)
        inputs = _Inputs(fn, module, tokenizer, pool, batch_size, device, max_length)
        pass_key, draw_key = jax.random.split(key)
        flags = {m: m.training for m in module.modules()}
        hooks = _ConsistentDropout(fn, dropouts, _dropout_seed(pass_key))
        chunks = []
        try:
            module.eval()
            with torch.no_grad():
                for args, kwargs in inputs.batches():
                    passes = []
                    for s in range(mc_samples):
                        hooks.current = s
                        passes.append(_logits_of(fn, module(*args, **kwargs)))
                    logits = torch.stack(passes, dim=1)      # (batch, S, C)
                    if logits.ndim != 3 or logits.shape[2] < 2 or not logits.is_floating_point():
                        raise ValueError(_validate.message(
                            fn, "model", "a classifier returning floating logits (batch, C) with C >= 2",
                            f"outputs of shape {(logits.shape[0], *logits.shape[2:])} and dtype {logits.dtype}"))
                    if not chunks and bool((logits == logits[:, :1]).all()):
                        raise ValueError(_validate.message(
                            fn, "model", "stochastic under dropout (MC dropout) for BatchBALD",
                            f"the same logits in all {mc_samples} passes of the first batch: its dropout modules do "
                            "not change the output"))
                    chunks.append(to_jax(torch.softmax(logits.float(), dim=-1).contiguous()))
        finally:
            hooks.remove()
            for m, training in flags.items():
                m.train(training)
        if not chunks:
            raise ValueError(_validate.message(fn, "pool", "a non-empty pool", "an empty pool (0 examples)"))
        probs_t = jnp.concatenate(chunks)
        k = _validate.check_k(fn, k, probs_t.shape[0])
        _validate.check_finite(fn, "the MC probabilities", probs_t)
        with _progress.waiting("selecting", k, unit="pick") as bar:
            return bar.wait(_batchbald.greedy(probs_t, draw_key, k=k, configurations=configurations))
