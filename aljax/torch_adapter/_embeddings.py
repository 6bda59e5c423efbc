"""Embeddings of a torch model's pool, computed in torch and handed to JAX through DLPack.

The model runs in eval mode under ``torch.no_grad()``; the input ``h`` of its final Linear layer
and its logits give BADGE's factored gradient embedding and BAIT's/VeSSAL's Fisher embedding;
``torch.func`` gives per-example gradients over any parameter subset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from .. import _validate
from .._embeddings import hallucinated_residual, softmax
from .._types import Factored, FisherFactors
from ._dlpack import to_jax
from ._head import _Head, _head_module, _logits_of
from ._inputs import _Inputs, _model_device, unpack_model
from ._outputs import outputs


def last_layer_embedding(model, pool, *, batch_size: int = 256, device=None, head: str | None = None,
                         max_length: int | None = None) -> Factored:
    """BADGE's last-layer gradient embedding of a torch model, in factored form.

    Row ``i`` is the gradient of the cross-entropy at the predicted label with respect to the
    final Linear layer's weight, ``a_i ⊗ h_i`` with ``a_i = p_i − onehot(ŷ_i)`` (Ash et al.,
    "Deep batch active learning by diverse, uncertain gradient lower bounds", ICLR 2020). The
    model runs in torch (eval mode, ``torch.no_grad()``); ``h`` (the input of the final
    ``nn.Linear``) and the logits are handed to JAX through DLPack without a copy. With JAX's x64
    off, float64 model outputs are narrowed to float32.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits`` such as a Hugging Face ``...ForSequenceClassification``), or a
        ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a mapping of
        ``(n, ...)`` tensors (e.g. tokenised inputs, passed as keyword arguments, label keys
        dropped), a ``Dataset`` or an unshuffled ``DataLoader`` (items ``x`` or ``(x, y, ...)``:
        the first element is the input), or a list of ``n`` strings with a ``(model, tokenizer)``
        pair (tokenised in batches with padding and truncation, either padding side). Floating
        inputs are cast to the model's parameter dtype.
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters. The
        model itself is not moved.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the smaller of the
        tokeniser's ``model_max_length`` and the model's ``max_position_embeddings``.

    Returns:
      :class:`~aljax.Factored` with ``a: (n, C)`` and ``h: (n, D)``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
      >>> ta.last_layer_embedding(model, torch.randn(50, 4))
      Factored(a=float32[50, 3], h=float32[50, 16])
    """
    logits, h = outputs("torch_adapter.last_layer_embedding", model, pool, batch_size=batch_size, device=device,
                         head=head, max_length=max_length)
    return Factored(hallucinated_residual(logits), h)


def fisher_embedding(model, pool, *, batch_size: int = 256, device=None, head: str | None = None,
                     max_length: int | None = None) -> FisherFactors:
    """The last-layer Fisher embedding ``(softmax(logits), h)`` of a torch model.

    The exact Fisher of the final Linear layer (no bias) at each point is
    ``(diag p − p pᵀ) ⊗ h hᵀ`` (Ash et al., "Gone fishing: neural active learning with Fisher
    embeddings", NeurIPS 2021); see :class:`~aljax.FisherFactors`. Computed as
    :func:`last_layer_embedding` is: the model runs in torch and ``h`` and the logits are handed
    to JAX through DLPack.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits``), or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a mapping of
        ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list of ``n``
        strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the model's limit.

    Returns:
      :class:`~aljax.FisherFactors` with ``probs: (n, C)`` and ``h: (n, D)``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
      >>> ta.fisher_embedding(model, torch.randn(50, 4))
      FisherFactors(probs=float32[50, 3], h=float32[50, 16])
    """
    logits, h = outputs("torch_adapter.fisher_embedding", model, pool, batch_size=batch_size, device=device,
                         head=head, max_length=max_length)
    return FisherFactors(softmax(logits), h)


def logits_and_features(model, pool, *, batch_size: int = 256, device=None, head: str | None = None,
                        max_length: int | None = None, problem_type: str = "classification"):
    """The model's outputs and penultimate features, ``(logits, h)``, as JAX arrays.

    What every embedding of this module is built from: the model runs in torch (eval mode,
    ``torch.no_grad()``), a forward hook captures the input ``h`` of the final Linear layer, and
    both are handed to JAX through DLPack. Use it to feed the embedding-level selectors
    (:func:`aljax.kmeans_pp`, :func:`aljax.k_center_greedy`, ...) your own embedding.

    Args:
      model: a ``torch.nn.Module`` returning logits (a tensor, or an output with ``.logits``),
        or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a mapping of
        ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list of ``n``
        strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the outputs.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      problem_type: ``"classification"`` (logits ``(n, C)``, ``C >= 2``) or ``"regression"``
        (outputs ``(n,)`` or ``(n, m)``).

    Returns:
      ``(logits, h)``, JAX arrays of shapes ``(n, C)`` (``(n,)`` or ``(n, m)`` for regression) and
      ``(n, D)``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
      >>> logits, h = ta.logits_and_features(model, torch.randn(50, 4))
      >>> logits.shape, h.shape
      ((50, 3), (50, 16))
    """
    return outputs("torch_adapter.logits_and_features", model, pool, batch_size=batch_size, device=device, head=head,
                    max_length=max_length, problem_type=problem_type)


def _select_params(fn, module, wrt, head_name):
    named = dict(module.named_parameters())
    if wrt is None:
        weight = f"{head_name}.weight" if head_name else "weight"
        if weight not in named:
            raise ValueError(f"aljax.{fn}: the final layer '{head_name}' has no `weight` parameter; pass `wrt=`.")
        return [weight]
    if callable(wrt):
        chosen = [name for name, p in named.items() if wrt(name, p)]
    elif isinstance(wrt, str):
        raise TypeError(_validate.message(fn, "wrt", "None, a predicate (name, param) -> bool or a list of "
                                          "parameter names", "a str (wrap a single name in a list)"))
    else:
        chosen = list(wrt)
        unknown = [name for name in chosen if name not in named]
        if unknown:
            raise ValueError(_validate.message(fn, "wrt", f"parameter names of the model (e.g. {list(named)[:6]})",
                                               f"unknown names {unknown}"))
    if not chosen:
        raise ValueError(_validate.message(fn, "wrt", "a selection of at least one parameter", "a selection of none"))
    return chosen


def gradient_embedding(model, pool, *, wrt=None, batch_size: int = 256, device=None, head: str | None = None,
                       max_length: int | None = None, project_to: int | None = None, key=0) -> jax.Array:
    """Per-example gradients of the cross-entropy at the predicted label, computed with ``torch.func``.

    ``torch.func.vmap(torch.func.grad(loss))`` over ``functional_call`` of the model, for any
    parameter subset, handed to JAX through DLPack. For the default ``wrt`` (the weight of the
    final Linear layer, no bias) it equals :func:`last_layer_embedding` flattened: torch weights
    are ``C × D``, so the flattened order is class-major (index ``c·D + d``), i.e.
    ``Factored.to_dense("cd")``, BADGE's gradient embedding (Ash et al., "Deep batch active
    learning by diverse, uncertain gradient lower bounds", ICLR 2020). Selected parameters are
    flattened row-major and concatenated in the order given (or ``named_parameters()`` order for a
    predicate).

    The model runs in eval mode; with no ``head`` and the default ``wrt``, the final Linear
    layer is found by a forward hook on the first batch (as in :func:`last_layer_embedding`).
    Where the model's forward pass defeats ``vmap`` (data-dependent control flow, as in Hugging
    Face mask checks), the gradients are taken one example at a time: the same result.

    Args:
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits``), or a ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` examples: a ``torch.Tensor`` ``(n, ...)``, a NumPy or JAX array, a mapping of
        ``(n, ...)`` tensors, a ``Dataset`` or an unshuffled ``DataLoader``, or a list of ``n``
        strings with a ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      wrt: ``None`` (the final layer's weight), a list of parameter names (as in
        ``model.named_parameters()``), or a predicate ``wrt(name, param) -> bool``.
      batch_size: examples per ``vmap`` call.
      device: where input batches are sent; default the device of the model's parameters.
      head: name of the final layer (as in ``model.named_modules()``), whose weight is the default
        ``wrt``; default the last ``nn.Linear`` executed in the forward pass.
      max_length: tokeniser truncation length (strings only); default the model's limit.
      project_to: if given, multiply by a Gaussian sketch ``R / √project_to`` drawn from ``key``
        (in JAX, as :func:`aljax.gradient_embedding` does).
      key: int or ``jax.random`` key for the sketch.

    Returns:
      ``(n, d)`` JAX array (``(n, project_to)`` with a sketch).

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
      >>> ta.gradient_embedding(model, torch.randn(20, 4)).shape
      (20, 48)
    """
    fn = "torch_adapter.gradient_embedding"
    module, tokenizer = unpack_model(fn, model)
    batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
    key = _validate.as_key(fn, key)
    if project_to is not None:
        project_to = _validate.check_int(fn, "project_to", project_to, low=1)
    if max_length is not None:
        max_length = _validate.check_int(fn, "max_length", max_length, low=1)
    if head is not None:
        _head_module(fn, module, head)
    device = _model_device(module, device)
    inputs = _Inputs(fn, module, tokenizer, pool, batch_size, device, max_length)
    buffers = dict(module.named_buffers())
    was_training = module.training
    module.eval()
    grads_out = []
    try:
        head_name = head
        if wrt is None and head_name is None:  # find the final Linear on the first batch
            args, kwargs = next(iter(inputs.batches()))
            with torch.no_grad(), _Head(fn, module, None) as capture:
                capture.run(args, kwargs)
                head_name = capture.name
        names = _select_params(fn, module, wrt, head_name)
        named = dict(module.named_parameters())
        chosen = {name: named[name].detach() for name in names}

        def loss(params, args, kwargs):
            batch_args = tuple(a.unsqueeze(0) for a in args)
            batch_kwargs = {k: (v.unsqueeze(0) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
            out = torch.func.functional_call(module, (params, buffers), batch_args, batch_kwargs, strict=False)
            logits = _logits_of(fn, out)[0]
            logp = torch.log_softmax(logits, dim=-1)
            label = torch.argmax(logits.detach())
            return -torch.gather(logp, 0, label.reshape(1))[0]

        vmapped = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
        looped = _looped(torch.func.grad(loss))
        per_example = vmapped
        for args, kwargs in inputs.batches():
            try:
                grads = per_example(chosen, args, kwargs)
            except RuntimeError as err:
                # Data-dependent control flow in the model (e.g. Hugging Face mask checks) defeats
                # vmap: fall back to one grad per example, same result, slower.
                if per_example is looped or "vmap" not in str(err):
                    raise
                per_example = looped
                grads = per_example(chosen, args, kwargs)
            grads_out.append(torch.cat([grads[name].reshape(grads[name].shape[0], -1) for name in names], dim=1))
    finally:
        module.train(was_training)
    emb = to_jax(torch.cat(grads_out) if len(grads_out) > 1 else grads_out[0], narrow=True)
    _validate.check_finite(fn, "the per-example gradients", emb)
    if project_to is not None:
        sketch = jax.random.normal(key, (emb.shape[1], project_to), emb.dtype) / np.sqrt(project_to)
        emb = jnp.matmul(emb, sketch, precision=jax.lax.Precision.HIGHEST)
    return emb


def _looped(grad_fn):
    """``vmap(grad_fn, in_dims=(None, 0, 0))`` as a Python loop over the batch."""
    def per_example(params, args, kwargs):
        rows = (list(args) + [v for v in kwargs.values() if isinstance(v, torch.Tensor)])[0].shape[0]
        grads = [grad_fn(params, tuple(a[i] for a in args),
                         {k: (v[i] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})
                 for i in range(rows)]
        return {name: torch.stack([g[name] for g in grads]) for name in params}
    return per_example
