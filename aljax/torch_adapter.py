"""Torch models and tensors in aljax: DLPack hand-over, embeddings computed in torch, selectors.

The torch model runs in torch, on its own device, in eval mode under ``torch.no_grad()``. A
forward hook captures the input ``h`` of the final ``nn.Linear`` (the penultimate features)
together with the logits; both are handed to JAX through DLPack (no copy on the same device) and
the JAX selectors run unchanged. A ``(model, tokenizer)`` pair takes raw strings (Hugging Face
sequence classifiers: BERT's ``classifier``, DistilBERT's ``pre_classifier``/``classifier``,
GPT-2's ``score`` read at the last non-pad token).

Design decision: torch models go through the functions of this module
(``aljax.torch_adapter.badge(model, pool, k, key=0)``, ``bait``, ``vessal``, ``margin``, ...);
the top-level ``aljax.*`` selectors stay JAX-only and take ``(params, apply_fn)``.
:class:`aljax.ActiveSampler` takes either kind of model and dispatches.

This module imports torch; ``import aljax`` does not import it.

Example:
  >>> import torch, aljax.torch_adapter as ta
  >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
  >>> pool = torch.randn(100, 4)
  >>> ta.badge(model, pool, 10, key=0).shape
  (10,)
"""

from __future__ import annotations

import ctypes
import inspect
import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise ImportError("aljax.torch_adapter needs torch: `pip install 'aljax[torch]' 'torch==2.13.0'` (pin "
                      "torch: an unpinned install may pull a multi-GB CUDA build).") from _err

from . import _validate
from ._badge import _check_prune
from ._baselines import _select_bald
from ._embeddings import hallucinated_residual, softmax
from ._types import Factored, FisherFactors
from .scores import _bald_parts

__all__ = [
    "bait", "badge", "bald", "coreset", "empty_cache", "entropy", "fisher_embedding", "gradient_embedding",
    "last_layer_embedding", "least_confidence", "logits_and_features", "margin", "random_sample", "to_jax", "to_torch",
    "vessal",
]

# XLA on CPU reads a DLPack buffer in place only when it is 64-byte aligned (torch's CPU allocator
# aligns to 64 bytes, so only views that start inside an allocation are affected).
_ALIGNMENT = 64
_NARROWER = {torch.float64: torch.float32, torch.int64: torch.int32, torch.complex128: torch.complex64}
if hasattr(torch, "uint64"):
    _NARROWER[torch.uint64] = torch.uint32
_LABEL_KEYS = ("labels", "label", "label_ids")


# ---------------------------------------------------------------------------------------------
# DLPack hand-over.


def to_jax(tensor, *, narrow: bool = False) -> jax.Array:
    """A torch tensor as a JAX array through DLPack, sharing memory (no copy) on the same device.

    Memory is shared: the JAX array reads the tensor's buffer. JAX treats arrays as immutable, so
    do not write to the tensor afterwards while the JAX array is alive (in-place torch ops would
    change the JAX array behind XLA's back).

    What the plain protocol trips on is handled, each case with a rule:

    * ``requires_grad`` tensors are detached first (no copy).
    * Non-contiguous views (transposes, slices with a step, ``expand``) are copied into a
      contiguous tensor first (``tensor.contiguous()``): an explicit copy.
    * On CPU, a view that starts at an address that is not 64-byte aligned (e.g. ``x[1:]``) is
      copied (``tensor.clone()``), because XLA reads only aligned buffers in place.
    * Conjugate or negative views are resolved (a copy).
    * 64-bit dtypes (``int64``, ``float64``, ``complex128``, ``uint64``) while JAX's x64 mode is
      off raise a ``TypeError``, unless ``narrow=True``: then they are cast in torch to their
      32-bit counterpart (a copy), and ``int64`` values outside the ``int32`` range raise a
      ``ValueError`` instead of wrapping; ``float64`` values are rounded to the nearest
      ``float32``, so finite values beyond its range (about ±3.4e38) become ±Inf (the embedding
      functions check their narrowed outputs for that). (JAX's own DLPack import would narrow
      silently.)
      With x64 on, 64-bit tensors are shared as they are.

    Args:
      tensor: a ``torch.Tensor`` of any shape, on CPU or on a device JAX can see (CUDA).
      narrow: allow the 64-bit → 32-bit cast described above when x64 is off.

    Returns:
      A ``jax.Array`` of the same shape (and dtype, narrowing aside).

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
      >>> x = ta.to_jax(t)
      >>> x.unsafe_buffer_pointer() == t.data_ptr()
      True
    """
    fn = "torch_adapter.to_jax"
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(_validate.message(fn, "tensor", "a torch.Tensor", type(tensor).__name__))
    if not isinstance(narrow, bool):
        raise TypeError(_validate.message(fn, "narrow", "a bool", type(narrow).__name__))
    if tensor.layout != torch.strided:
        raise TypeError(_validate.message(fn, "tensor", "a dense (strided) tensor", f"layout {tensor.layout}"))
    tensor = tensor.detach()
    if tensor.is_conj():
        tensor = tensor.resolve_conj()
    if tensor.is_neg():
        tensor = tensor.resolve_neg()
    if tensor.dtype in _NARROWER and not jax.config.jax_enable_x64:
        if not narrow:
            raise TypeError(
                f"aljax.{fn}: argument `tensor` has dtype {tensor.dtype} but JAX's x64 mode is off; pass "
                f"`narrow=True` to cast it to {_NARROWER[tensor.dtype]} (a copy), or enable x64 "
                "(`jax.config.update('jax_enable_x64', True)`).")
        tensor = _narrowed(fn, tensor)
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % _ALIGNMENT:
        tensor = tensor.clone()
    try:
        return jax.dlpack.from_dlpack(tensor)
    except Exception as err:  # noqa: BLE001 - re-raised with the cause attached
        raise ValueError(
            f"aljax.{fn}: cannot hand a tensor on device {tensor.device} to JAX (JAX devices: "
            f"{jax.devices()}); move it to a device JAX can see, e.g. `tensor.cpu()`. Cause: {err}") from err


def _narrowed(fn: str, tensor):
    target = _NARROWER[tensor.dtype]
    if tensor.dtype == torch.int64 and tensor.numel():
        info = torch.iinfo(torch.int32)
        low, high = int(tensor.min()), int(tensor.max())
        if low < info.min or high > info.max:
            raise ValueError(
                f"aljax.{fn}: argument `tensor` holds int64 values in [{low}, {high}], outside the int32 range; "
                "enable JAX's x64 mode to hand it over without loss.")
    if tensor.dtype == getattr(torch, "uint64", None) and tensor.numel():
        bits = tensor.view(torch.int64)  # torch has no max() for uint64; >= 2**63 reads negative here
        if int(bits.min()) < 0 or int(bits.max()) > 2**32 - 1:
            raise ValueError(f"aljax.{fn}: argument `tensor` holds uint64 values above the uint32 range; "
                             "enable JAX's x64 mode to hand it over without loss.")
    return tensor.to(target)


def to_torch(array):
    """A JAX array as a torch tensor through DLPack, sharing memory (no copy) on the same device.

    Memory is shared, and JAX assumes its arrays never change: do not write to the returned
    tensor (clone it first if you need a mutable copy).

    Args:
      array: a concrete ``jax.Array`` on a single device (not a tracer).

    Returns:
      A ``torch.Tensor`` of the same shape and dtype, on the matching torch device.

    Example:
      >>> import jax.numpy as jnp, aljax.torch_adapter as ta
      >>> x = jnp.arange(4.0)
      >>> ta.to_torch(x).data_ptr() == x.unsafe_buffer_pointer()
      True
    """
    fn = "torch_adapter.to_torch"
    if isinstance(array, jax.core.Tracer):
        raise TypeError(_validate.message(fn, "array", "a concrete jax.Array", "a tracer (inside jit/vmap/grad)"))
    if not isinstance(array, jax.Array):
        raise TypeError(_validate.message(fn, "array", "a jax.Array", type(array).__name__))
    if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):
        raise TypeError(_validate.message(fn, "array", "an array of numbers (DLPack carries no PRNG keys)",
                                          f"a key array of dtype {array.dtype}; pass jax.random.key_data(key)"))
    if len(array.devices()) != 1:
        raise ValueError(_validate.message(fn, "array", "an array on a single device",
                                           f"an array sharded over {len(array.devices())} devices"))
    return torch.from_dlpack(array)


# ---------------------------------------------------------------------------------------------
# Models and pools.


def _unpack_model(fn: str, model):
    """``model`` or ``(model, tokenizer)`` -> (module, tokenizer or None)."""
    if isinstance(model, torch.nn.Module):
        return model, None
    if isinstance(model, (tuple, list)) and len(model) == 2 and isinstance(model[0], torch.nn.Module):
        tokenizer = model[1]
        if not callable(tokenizer):
            raise TypeError(_validate.message(fn, "model", "a (model, tokenizer) pair with a callable tokenizer",
                                              f"a tokenizer of type {type(tokenizer).__name__}"))
        return model[0], tokenizer
    raise TypeError(_validate.message(fn, "model", "a torch.nn.Module or a (torch.nn.Module, tokenizer) pair",
                                      type(model).__name__))


def _model_device(module, device):
    if device is not None:
        return torch.device(device)
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _model_float_dtype(module):
    for tensor in module.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def _is_strings(pool) -> bool:
    return isinstance(pool, (list, tuple)) and len(pool) > 0 and all(isinstance(s, str) for s in pool)


class _Inputs:
    """A pool, cut into model-ready batches: ``batches()`` yields ``(args, kwargs)`` on ``device``."""

    def __init__(self, fn: str, module, tokenizer, pool, batch_size: int, device, max_length, arg: str = "pool"):
        self.fn, self.module, self.tokenizer, self.device = fn, module, tokenizer, device
        self.batch_size, self.max_length, self.arg = batch_size, max_length, arg
        self.float_dtype = _model_float_dtype(module)
        self.forward_params = _forward_params(module)
        self.pool = self._normalise(pool)

    def _normalise(self, pool):
        fn, arg = self.fn, self.arg
        if isinstance(pool, str):
            raise TypeError(_validate.message(fn, arg, "a list of strings (not a single string)", "a str"))
        if isinstance(pool, np.ndarray) and pool.ndim == 1 and pool.dtype.kind in "UO" and pool.size \
                and all(isinstance(s, str) for s in pool.tolist()):
            pool = pool.tolist()                     # a NumPy array of strings, as a list
        if isinstance(pool, (list, tuple)) and pool and all(isinstance(s, str) for s in pool):
            if self.tokenizer is None:
                raise TypeError(_validate.message(fn, "model", "a (model, tokenizer) pair for a pool of strings",
                                                  "a model without a tokenizer"))
            self._check_tokenizer()
            if self.max_length is None:
                self.max_length = _default_max_length(self.tokenizer, getattr(self.module, "config", None))
            self.n = len(pool)
            return list(pool)
        if isinstance(pool, (list, tuple)) and not pool:
            raise ValueError(_validate.message(fn, arg, "a non-empty pool", "an empty pool (0 examples)"))
        if isinstance(pool, jax.Array):
            pool = to_torch(pool)
        if isinstance(pool, np.ndarray):
            pool = np.ascontiguousarray(pool)
            pool = torch.from_numpy(pool if pool.flags.writeable else pool.copy())
        if isinstance(pool, torch.Tensor):
            if pool.ndim == 0:
                raise ValueError(_validate.message(fn, arg, "a tensor with a leading example axis", "a 0-d tensor"))
            self.n = int(pool.shape[0])
            if self.n == 0:
                raise ValueError(_validate.message(fn, arg, "a non-empty pool", "an empty pool (0 examples)"))
            return pool
        if isinstance(pool, Mapping):
            sizes = {key: int(v.shape[0]) for key, v in pool.items() if isinstance(v, torch.Tensor) and v.ndim}
            if not sizes or len(set(sizes.values())) != 1:
                raise ValueError(_validate.message(fn, arg, "a mapping of tensors sharing the leading axis",
                                                   f"leading sizes {sizes}"))
            self.n = next(iter(sizes.values()))
            if self.n == 0:
                raise ValueError(_validate.message(fn, arg, "a non-empty pool", "an empty pool (0 examples)"))
            return dict(pool)
        if isinstance(pool, torch.utils.data.DataLoader):
            if not isinstance(pool.sampler, torch.utils.data.SequentialSampler):
                raise ValueError(_validate.message(
                    fn, arg, "a DataLoader that keeps the order (shuffle=False, the default sampler)",
                    f"a DataLoader with a {type(pool.sampler).__name__}: the returned indices would be meaningless"))
            batches = pool.batch_sampler
            if batches is not None and not (type(batches) is torch.utils.data.BatchSampler
                                            and isinstance(batches.sampler, torch.utils.data.SequentialSampler)):
                raise ValueError(_validate.message(
                    fn, arg, "a DataLoader that keeps the order (shuffle=False, the default sampler)",
                    f"a DataLoader with a custom batch_sampler ({type(batches).__name__}): "
                    "the returned indices could be meaningless"))
            if getattr(pool, "drop_last", False):
                raise ValueError(_validate.message(fn, arg, "a DataLoader with drop_last=False",
                                                   "drop_last=True: the last examples would never be considered"))
            self.n = len(pool.dataset) if hasattr(pool.dataset, "__len__") else None
            return pool
        if isinstance(pool, torch.utils.data.Dataset):
            if not hasattr(pool, "__len__"):
                raise TypeError(_validate.message(fn, arg, "a sized Dataset (or a DataLoader)", "an IterableDataset"))
            self.n = len(pool)
            if self.n == 0:
                raise ValueError(_validate.message(fn, arg, "a non-empty pool", "an empty pool (0 examples)"))
            return torch.utils.data.DataLoader(pool, batch_size=self.batch_size, shuffle=False)
        raise TypeError(_validate.message(
            fn, arg, "a torch.Tensor, a NumPy or JAX array, a mapping of tensors, a Dataset/DataLoader, or a "
            "list of strings with a (model, tokenizer) pair", type(pool).__name__))

    def _check_tokenizer(self):
        tokenizer, config = self.tokenizer, getattr(self.module, "config", None)
        if getattr(tokenizer, "pad_token", "") is None:
            raise ValueError(
                f"aljax.{self.fn}: the tokenizer has no pad token, so strings cannot be batched; set one, e.g. "
                "`tokenizer.pad_token = tokenizer.eos_token` and `model.config.pad_token_id = tokenizer.pad_token_id`.")
        if config is not None and getattr(config, "pad_token_id", 0) is None:
            raise ValueError(
                f"aljax.{self.fn}: `model.config.pad_token_id` is None, so the model cannot find the last "
                "non-pad token of a padded batch; set `model.config.pad_token_id = tokenizer.pad_token_id`.")
        # Sequence heads on the last token (GPT-2's `score`) find it by `config.pad_token_id`: a
        # tokenizer padding with another id would make them read a pad token, silently.
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if isinstance(getattr(self.module, "score", None), torch.nn.Module) and config is not None \
                and isinstance(pad_id, int) and pad_id != config.pad_token_id:
            raise ValueError(
                f"aljax.{self.fn}: the tokenizer pads with id {pad_id} but `model.config.pad_token_id` is "
                f"{config.pad_token_id}, so the model would read a pad token as the last one; set "
                "`model.config.pad_token_id = tokenizer.pad_token_id`.")

    def batches(self) -> Iterator[tuple[tuple, dict]]:
        pool = self.pool
        if isinstance(pool, torch.utils.data.DataLoader):
            for batch in pool:
                yield self._prepare(batch)
        elif isinstance(pool, dict):
            for start in range(0, self.n, self.batch_size):
                yield self._prepare({key: v[start:start + self.batch_size] for key, v in pool.items()})
        else:
            for start in range(0, self.n, self.batch_size):
                yield self._prepare(pool[start:start + self.batch_size])

    def _prepare(self, batch):
        if type(batch) is torch.Tensor:  # the common case first: this runs once per batch
            return (self._to_device(batch),), {}
        if isinstance(batch, list) and batch and all(isinstance(s, str) for s in batch):
            if self.tokenizer is None:
                raise TypeError(_validate.message(self.fn, "model", "a (model, tokenizer) pair for a pool of strings",
                                                  "a model without a tokenizer"))
            return self._prepare(dict(self._tokenize(batch)))
        if isinstance(batch, Mapping):
            kwargs = {key: self._to_device(v) for key, v in batch.items()
                      if key not in _LABEL_KEYS and (self.forward_params is None or key in self.forward_params)}
            return (), kwargs
        if isinstance(batch, (tuple, list)):  # (inputs, labels, ...) from a Dataset: the inputs
            return self._prepare(batch[0])
        if isinstance(batch, torch.Tensor):
            return (self._to_device(batch),), {}
        raise TypeError(_validate.message(self.fn, self.arg, "batches of tensors, (inputs, labels) tuples, "
                                          "mappings or strings", f"a batch of type {type(batch).__name__}"))

    def _tokenize(self, batch: list):
        """Right padding whatever the tokenizer's ``padding_side`` (restored after): pad tokens are
        then masked and every real token keeps its position, so each string's features are those
        it has alone. Left padding shifts the positions of models with absolute position
        embeddings (BERT, GPT-2) and puts a pad token where BERT's pooler reads ``[CLS]``."""
        tokenizer = self.tokenizer
        side = getattr(tokenizer, "padding_side", "right")
        tokenizer.padding_side = "right"
        try:
            return tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        finally:
            tokenizer.padding_side = side

    def _to_device(self, value):
        if not isinstance(value, torch.Tensor):
            return value
        dtype = self.float_dtype if value.is_floating_point() and self.float_dtype is not None else value.dtype
        if value.dtype == dtype and value.device == self.device:
            return value
        return value.to(device=self.device, dtype=dtype, non_blocking=True)


def _default_max_length(tokenizer, config) -> int | None:
    """Truncation length when none is given: the smaller of the tokenizer's ``model_max_length``
    (when set: unset, transformers uses a huge number) and the model's position limit, so that a
    long string is truncated instead of failing inside the model."""
    limits = [getattr(tokenizer, "model_max_length", None)]
    limits += [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions")]
    limits = [int(x) for x in limits if isinstance(x, (int, np.integer)) and 0 < x < 1_000_000]
    return min(limits) if limits else None


def _forward_params(module):
    """Names the model's forward accepts, or None when it takes ``**kwargs``."""
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def _logits_of(fn: str, out):
    """The logits in a model's output: a tensor, ``.logits``, ``out["logits"]`` or ``out[0]``."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(_validate.message(fn, "model", "a model returning logits (a tensor, or an output with `.logits`)",
                                      f"an output of type {type(out).__name__}"))


# ---------------------------------------------------------------------------------------------
# The final Linear layer: found by a forward hook, features matched to the logits.


def _head_module(fn: str, module, head):
    """The submodule named ``head``, or a clear error for a name that is not one."""
    if not isinstance(head, str):
        raise TypeError(_validate.message(fn, "head", "the name of a submodule (a str) or None", type(head).__name__))
    modules = dict(module.named_modules())
    if head not in modules:
        linears = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
        raise ValueError(_validate.message(fn, "head", f"the name of a submodule (Linear layers: {linears})",
                                           repr(head)))
    return modules[head]


def _describe_inputs(args, kwargs) -> str:
    """``float32 (256, 6)``-style summary of a batch's tensors, with a hint for integer features."""
    tensors = [(str(i), v) for i, v in enumerate(args)] + list(kwargs.items())
    parts = [f"{'' if name.isdigit() else name + '='}{str(v.dtype).replace('torch.', '')} {tuple(v.shape)}"
             for name, v in tensors if isinstance(v, torch.Tensor)]
    text = ", ".join(parts) or "non-tensor inputs"
    integer_features = [v for _, v in tensors if isinstance(v, torch.Tensor) and not v.is_floating_point()]
    if integer_features and not kwargs:
        text += " (integer inputs are passed as they are, as token ids would be: cast features to float)"
    return text


def _no_linear(fn: str):
    raise ValueError(f"aljax.{fn}: the model has no torch.nn.Linear layer, so there is no final Linear "
                     "layer whose input could serve as features; pass `head=` with the name of the "
                     "final layer (any module whose input is the penultimate features).")


def _check_head(fn: str, model, head: str | None) -> None:
    """What can be checked of the final layer before a forward pass: ``head`` names a submodule,
    or (auto-detection) the model has an ``nn.Linear`` at all."""
    module, _ = _unpack_model(fn, model)
    if head is not None:
        _head_module(fn, module, head)
    elif not any(isinstance(m, torch.nn.Linear) for m in module.modules()):
        _no_linear(fn)


class _Head:
    """Captures the input and output of the model's final ``nn.Linear`` during forward passes.

    Auto-detection hooks every ``nn.Linear`` and keeps the last one executed; ``head="name"``
    hooks that module only. After the first batch only the head stays hooked.
    """

    def __init__(self, fn: str, module, head: str | None):
        self.fn, self.module, self.name, self.captured, self.checked = fn, module, head, None, False
        self.logits_are_head_output = False
        modules = dict(module.named_modules())
        if head is not None:
            self.handles = [_head_module(fn, module, head).register_forward_hook(self._hook(head))]
        else:
            linears = [(n, m) for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
            if not linears:
                _no_linear(fn)
            self.handles = [m.register_forward_hook(self._hook(n)) for n, m in linears]

    def _hook(self, name):
        def hook(mod, inputs, output):
            if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                # A plain nn.Linear (a subclass may compute anything): see `logits_are_head_output`.
                self.captured = (name, inputs[0], output, type(mod) is torch.nn.Linear)
        return hook

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def run(self, args, kwargs):
        """One forward pass -> (logits, features) on the model's device."""
        self.captured = None
        try:
            output = self.module(*args, **kwargs)
        except (RuntimeError, TypeError, ValueError) as err:
            try:  # the same exception type, named; unless that type takes other arguments
                named = type(err)(f"aljax.{self.fn}: the model's forward pass failed on a batch of "
                                  f"{_describe_inputs(args, kwargs)}: {err}")
            except Exception:
                raise err from None
            raise named from err
        logits = _logits_of(self.fn, output)
        if not logits.is_floating_point():
            raise TypeError(_validate.message(self.fn, "model", "a model returning floating logits",
                                              f"outputs of dtype {logits.dtype}"))
        if self.captured is None:
            raise ValueError(f"aljax.{self.fn}: no nn.Linear layer ran in the model's forward pass (or the "
                             f"named `head` did not run); pass `head=` with the name of the final layer.")
        name, h, out, plain_linear = self.captured
        self.captured = None  # let torch's allocator reuse these before the next batch
        self.logits_are_head_output = out is logits and plain_linear
        if self.name is None:  # first batch: keep only the head hooked
            self.name = name
            self.remove()
            self.handles = [dict(self.module.named_modules())[name].register_forward_hook(self._hook(name))]
        return logits, self._features(logits, h, out)

    def _features(self, logits, h, out):
        """``h`` row for each logits row. A sequence head (GPT-2's ``score``) runs on every token and the
        model reads one position per example: find that position by matching the head's outputs."""
        rows = logits.shape[0] if logits.ndim else 0
        if out.shape == logits.shape or (out.numel() == logits.numel() and out.shape[0] == rows):
            # Checked on the first batch (where the head is identified); the graph is the same after.
            if not self.checked and out is not logits and not torch.allclose(
                    out.reshape(logits.shape), logits, rtol=1e-5, atol=1e-6, equal_nan=True):
                self._mismatch(logits, out)
            self.checked = True
            return h.reshape(rows, -1) if h.ndim != 2 else h
        if out.ndim == 3 and logits.ndim == 2 and out.shape[0] == rows and out.shape[2] == logits.shape[1] \
                and h.ndim == 3:
            gap = ((out - logits[:, None, :]) ** 2).sum(-1)          # (B, T)
            position = gap.argmin(dim=1)
            scale = 1e-10 + (logits ** 2).sum(-1)
            if not bool((gap.gather(1, position[:, None])[:, 0] <= 1e-8 * scale + 1e-10).all()):
                self._mismatch(logits, out)
            return h[torch.arange(rows, device=h.device), position]
        self._mismatch(logits, out)

    def _mismatch(self, logits, out):
        raise ValueError(
            f"aljax.{self.fn}: the final Linear layer found ('{self.name}', output shape {tuple(out.shape)}) does not "
            f"produce the model's logits (shape {tuple(logits.shape)}): the model's last operation is not a Linear "
            "layer; pass `head=` with the name of the layer that produces the logits, or end the model with one.")


_HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE = 14  # Linux <sys/mman.h>


def _madvise_huge_pages(tensor) -> None:
    """Ask Linux to back a large CPU buffer with transparent huge pages (when THP is in
    ``madvise`` mode): a fresh ``(n, D)`` buffer otherwise takes one page fault per 4 KiB on first
    write, which costs more than the copy itself. A no-op elsewhere or if the call fails."""
    nbytes = tensor.numel() * tensor.element_size()
    if tensor.device.type != "cpu" or nbytes < 4 * _HUGE_PAGE or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        start = (tensor.data_ptr() + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)
        stop = (tensor.data_ptr() + nbytes) & ~(_HUGE_PAGE - 1)
        libc.madvise(start, stop - start, _MADV_HUGEPAGE)
    except (OSError, AttributeError):
        pass


class _HandOverBuffers:
    """A one-slot cache of the CPU memory that features are gathered into before the hand-over.

    The ``(n, D)`` feature matrix must live in memory that outlives the call (JAX reads it in
    place). Fresh memory costs one page fault and one page of zeroing per 4 KiB (2 MiB with huge
    pages) on first write: for an MLP head that is more than the copy itself. So, like torch's
    CUDA caching allocator, the adapter keeps the most recent buffer (up to ``_CACHE_LIMIT``
    bytes) and reuses it once the arrays handed over from it have been garbage collected. A
    buffer is never reused while any array, view or NumPy copy-free alias of it is alive: its
    lifetime is tied to a NumPy view that the torch storage, and through DLPack the JAX array,
    hold a reference to. :func:`empty_cache` releases the cached memory.
    """

    def __init__(self):
        # Re-entrant: a view may be collected (its finalizer run) by a GC pass inside `empty`.
        self.block, self.lent, self.lock = None, False, threading.RLock()

    def empty(self, shape, dtype):
        itemsize = torch.empty((), dtype=dtype).element_size()
        nbytes = int(np.prod(shape)) * itemsize
        fresh = nbytes < 4 * _HUGE_PAGE or nbytes > _CACHE_LIMIT
        with self.lock:
            reuse = not fresh and self.block is not None and not self.lent and nbytes <= self.block.nbytes <= 2 * nbytes
            if fresh or (not reuse and self.lent):  # uncached size, or the cached block is in use
                out = torch.empty(shape, dtype=dtype)
                _madvise_huge_pages(out)
                return out
            if not reuse:
                raw = np.empty(nbytes + _ALIGNMENT, dtype=np.uint8)
                start = -raw.ctypes.data % _ALIGNMENT
                self.block = raw[start:start + nbytes]
                _madvise_huge_pages(torch.from_numpy(self.block))
            self.lent = True
        view = self.block[:nbytes]          # a new object: alive exactly as long as the hand-over
        weakref.finalize(view, self._returned)
        return torch.from_numpy(view).view(dtype).view(shape)

    def _returned(self):
        with self.lock:
            self.lent = False

    def clear(self):
        with self.lock:
            if not self.lent:
                self.block = None


_CACHE_LIMIT = 1 << 30
_BUFFERS = _HandOverBuffers()


def empty_cache() -> None:
    """Release the CPU memory the adapter keeps for reuse between calls.

    ``last_layer_embedding`` and the other embedding functions gather the features of a CPU
    model into one buffer that JAX then reads without a copy. The most recent such buffer (at most
    1 GiB) stays allocated after its arrays are garbage collected, so that the next call does not
    pay for fresh pages again. This frees it (if no array still uses it; then it is freed with
    the next call that needs a different size). GPU memory is torch's own caching allocator's.
    """
    _BUFFERS.clear()


class _Gather:
    """Batches stacked into one tensor. With the pool size known, each batch is copied into a
    preallocated ``(n, ...)`` buffer while it is still in cache (no ``torch.cat`` pass at the end);
    on CPU the buffer comes from :class:`_HandOverBuffers`.

    NaN/Inf guard (see ``maybe_finite``): a NaN/Inf anywhere makes a sum non-finite, so one cheap
    reduction replaces a full ``isfinite`` pass. Batches of at least ``_GUARD_BATCH_BYTES`` are
    summed while still in cache; smaller ones (logits, narrow features) cost more in per-op
    dispatch than their bytes do, so the whole result is summed once at the end instead. The
    running total is accumulated in place (``out=``), so nothing allocated in the loop outlives its
    batch: keeping one 0-d ``batch.sum()`` per batch instead (any small tensor kept alive across
    batches does it) made the MLP case of ``benchmarks/adapter_overhead.py`` ≈ 1.14× the forward
    pass against ≈ 1.04× at one torch thread, without a single page fault in either (presumably
    the allocator then no longer hands each batch the same, cache-hot activation memory)."""

    def __init__(self, n: int | None):
        self.n, self.rows, self.buffer, self.parts, self.total, self.part = n, 0, None, [], None, None
        self.per_batch = None

    def add(self, batch, covered: bool = False):
        """Append ``batch``. ``covered``: a NaN/Inf in it is sure to show in another guarded
        tensor (the features of a plain ``nn.Linear`` whose output is the logits), so its own
        per-batch sum is skipped (:meth:`maybe_finite` then speaks for the other batches only)."""
        if self.per_batch is None:
            self.per_batch = batch.numel() * batch.element_size() >= _GUARD_BATCH_BYTES
        if self.per_batch and not covered:
            if self.total is None:
                dtype = torch.float64 if batch.dtype == torch.float64 else torch.float32
                self.total = torch.zeros((), dtype=dtype, device=batch.device)
                self.part = torch.zeros((), dtype=dtype, device=batch.device)
            torch.sum(batch, dim=tuple(range(batch.ndim)), dtype=self.total.dtype, out=self.part)
            self.total.add_(self.part)
        if self.n is not None and self.buffer is None and batch.shape[0] < self.n:
            shape = (self.n,) + tuple(batch.shape[1:])
            if batch.device.type == "cpu":
                self.buffer = _BUFFERS.empty(shape, batch.dtype)
            else:
                self.buffer = torch.empty(shape, dtype=batch.dtype, device=batch.device)
        if self.buffer is not None and self.rows + batch.shape[0] <= self.n and \
                batch.shape[1:] == self.buffer.shape[1:] and batch.dtype == self.buffer.dtype:
            self.buffer[self.rows:self.rows + batch.shape[0]].copy_(batch)
        else:
            if self.buffer is not None:  # the pool was not the size announced: fall back to cat
                self.parts, self.buffer = [self.buffer[:self.rows]], None
            self.parts.append(batch)
        self.rows += batch.shape[0]

    def maybe_finite(self, result) -> bool:
        """False if a NaN/Inf may be present in ``result`` (what :meth:`result` returned); the sums
        can also overflow: then the caller checks exactly."""
        if self.rows == 0:
            return True
        if not self.per_batch:
            dtype = torch.float64 if result.dtype == torch.float64 else torch.float32
            return bool(torch.isfinite(torch.sum(result, dtype=dtype)))
        return self.total is None or bool(torch.isfinite(self.total))

    def result(self):
        if self.buffer is not None:
            return self.buffer[:self.rows]
        return self.parts[0] if len(self.parts) == 1 else torch.cat(self.parts)


_GUARD_BATCH_BYTES = 1 << 16


def _outputs(fn: str, model, pool, *, batch_size: int = 256, device=None, head: str | None = None,
             max_length: int | None = None, problem_type: str = "classification", arg: str = "pool"):
    """Run the model over the pool -> ``(logits, h)`` as JAX arrays (``n`` rows each)."""
    module, tokenizer = _unpack_model(fn, model)
    batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
    if max_length is not None:
        max_length = _validate.check_int(fn, "max_length", max_length, low=1)
    device = _model_device(module, device)
    inputs = _Inputs(fn, module, tokenizer, pool, batch_size, device, max_length, arg=arg)
    gather_logits, gather_h = _Gather(inputs.n), _Gather(inputs.n)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), _Head(fn, module, head) as capture:
            for args, kwargs in inputs.batches():
                logits, h = capture.run(args, kwargs)
                gather_logits.add(logits)
                # The logits are then exactly a plain Linear's output on h: every output sums a
                # product with every feature, and NaN·w, ±Inf·w (NaN for w = 0) are not finite, so
                # a NaN/Inf in h makes the logits' guard fail (then h is checked exactly).
                gather_h.add(h, covered=capture.logits_are_head_output)
                del logits, h  # freed before the next forward pass, as without the adapter
    finally:
        module.train(was_training)
    if gather_logits.rows == 0:
        raise ValueError(_validate.message(fn, arg, "a non-empty pool", "an empty pool (0 examples)"))
    logits, h = gather_logits.result(), gather_h.result()
    _check_outputs(fn, logits, h, problem_type)
    # Features ``covered`` by the logits are finite once the logits are (checked first, exactly).
    logits_finite, h_finite = gather_logits.maybe_finite(logits), gather_h.maybe_finite(h)
    sizes = logits.element_size(), h.element_size()
    logits, h = to_jax(logits, narrow=True), to_jax(h, narrow=True)
    # float64 outputs narrowed to float32 (x64 off) can overflow to ±Inf: checked again, exactly.
    narrowed = [" (narrowed to float32)" if x.dtype.itemsize < size else "" for x, size in zip((logits, h), sizes)]
    if not logits_finite or narrowed[0]:
        _validate.check_finite(fn, f"the model's outputs (logits) on argument `{arg}`{narrowed[0]}", logits)
    if not h_finite or narrowed[1]:
        _validate.check_finite(fn, f"the penultimate features of argument `{arg}`{narrowed[1]}", h)
    return logits, h


def _check_outputs(fn, logits, h, problem_type):
    if problem_type == "classification":
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise ValueError(_validate.message(fn, "model", "a classifier returning logits (batch, C) with C >= 2",
                                               f"outputs of shape {tuple(logits.shape)}"))
    elif problem_type == "regression":
        if logits.ndim not in (1, 2):
            raise ValueError(_validate.message(fn, "model", "outputs of shape (batch,) or (batch, m)",
                                               f"outputs of shape {tuple(logits.shape)}"))
    else:
        raise ValueError(_validate.message(fn, "problem_type", "'classification' or 'regression'", repr(problem_type)))
    if not logits.is_floating_point() or not h.is_floating_point():
        raise TypeError(_validate.message(fn, "model", "floating logits and features",
                                          f"dtypes {logits.dtype} and {h.dtype}"))
    if h.ndim != 2:
        raise ValueError(_validate.message(fn, "head", "a final layer whose input is (batch, D) features",
                                           f"features of shape {tuple(h.shape)}"))


# ---------------------------------------------------------------------------------------------
# Embeddings.

_MODEL_ARGS = """
      model: a ``torch.nn.Module`` returning logits ``(batch, C)`` (a tensor, or an output with
        ``.logits`` such as a Hugging Face ``...ForSequenceClassification``), or a
        ``(model, tokenizer)`` pair when ``pool`` is a list of strings.
      pool: ``n`` examples: a ``torch.Tensor``, a NumPy or JAX array, a mapping of tensors (e.g.
        tokenised inputs), a ``Dataset`` or an unshuffled ``DataLoader`` (items ``x`` or
        ``(x, y, ...)``: the first element is the input; mappings are passed as keyword
        arguments, label keys dropped), or a list of strings with a ``(model, tokenizer)`` pair
        (tokenised in batches with padding and truncation; either padding side).
        Floating inputs are cast to the model's parameter dtype.
      batch_size: examples per forward pass.
      device: where input batches are sent; default the device of the model's parameters. The
        model itself is not moved.
      head: name of the final layer (as in ``model.named_modules()``); default the last
        ``nn.Linear`` executed in the forward pass, checked to produce the logits.
      max_length: tokeniser truncation length (strings only); default the smaller of the
        tokeniser's ``model_max_length`` and the model's ``max_position_embeddings``."""


def last_layer_embedding(model, pool, *, batch_size: int = 256, device=None, head: str | None = None,
                         max_length: int | None = None) -> Factored:
    """BADGE's last-layer gradient embedding of a torch model, in factored form.

    Row ``i`` is the gradient of the cross-entropy at the predicted label with respect to the
    final Linear layer's weight, ``a_i ⊗ h_i`` with ``a_i = p_i − onehot(ŷ_i)`` (Ash et al.,
    ICLR 2020). The model runs in torch (eval mode, ``torch.no_grad()``); ``h`` (the input of the
    final ``nn.Linear``) and the logits are handed to JAX through DLPack without a copy. With
    JAX's x64 off, float64 model outputs are narrowed to float32.

    Args:""" + _MODEL_ARGS + """

    Returns:
      :class:`~aljax.Factored` with ``a: (n, C)`` and ``h: (n, D)``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
      >>> ta.last_layer_embedding(model, torch.randn(50, 4))
      Factored(a=float32[50, 3], h=float32[50, 16])
    """
    logits, h = _outputs("torch_adapter.last_layer_embedding", model, pool, batch_size=batch_size, device=device,
                         head=head, max_length=max_length)
    return Factored(hallucinated_residual(logits), h)


def fisher_embedding(model, pool, *, batch_size: int = 256, device=None, head: str | None = None,
                     max_length: int | None = None) -> FisherFactors:
    """The last-layer Fisher embedding ``(softmax(logits), h)`` of a torch model.

    The exact Fisher of the final Linear layer (no bias) at each point is
    ``(diag p − p pᵀ) ⊗ h hᵀ`` (Ash et al., "Gone fishing", NeurIPS 2021); see
    :class:`~aljax.FisherFactors`. Computed as :func:`last_layer_embedding` is.

    Args:""" + _MODEL_ARGS + """

    Returns:
      :class:`~aljax.FisherFactors` with ``probs: (n, C)`` and ``h: (n, D)``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
      >>> ta.fisher_embedding(model, torch.randn(50, 4))
      FisherFactors(probs=float32[50, 3], h=float32[50, 16])
    """
    logits, h = _outputs("torch_adapter.fisher_embedding", model, pool, batch_size=batch_size, device=device,
                         head=head, max_length=max_length)
    return FisherFactors(softmax(logits), h)


def logits_and_features(model, pool, *, batch_size: int = 256, device=None, head: str | None = None,
             max_length: int | None = None, problem_type: str = "classification"):
    """The model's outputs and penultimate features, ``(logits, h)``, as JAX arrays.

    Args:""" + _MODEL_ARGS + """
      problem_type: ``"classification"`` (logits ``(n, C)``) or ``"regression"`` (outputs
        ``(n,)`` or ``(n, m)``).

    Returns:
      ``(logits, h)``: ``(n, C)`` (or ``(n,)``/``(n, m)``) and ``(n, D)`` JAX arrays.
    """
    return _outputs("torch_adapter.logits_and_features", model, pool, batch_size=batch_size, device=device, head=head,
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
    ``Factored.to_dense("cd")``. Selected parameters are flattened row-major and concatenated in
    the order given (or ``named_parameters()`` order for a predicate).

    Args:""" + _MODEL_ARGS + """
      wrt: ``None`` (the final layer's weight), a list of parameter names (as in
        ``model.named_parameters()``), or a predicate ``wrt(name, param) -> bool``.
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
    module, tokenizer = _unpack_model(fn, model)
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


# ---------------------------------------------------------------------------------------------
# Selectors: embeddings in torch, selection by the JAX embedding-level functions.


def _pool_len(pool) -> int | None:
    if isinstance(pool, (torch.Tensor, np.ndarray, jax.Array)):
        return int(pool.shape[0]) if pool.ndim else None
    if isinstance(pool, (list, tuple)):
        return len(pool)
    if isinstance(pool, torch.utils.data.DataLoader):
        return len(pool.dataset) if hasattr(pool.dataset, "__len__") else None
    if isinstance(pool, torch.utils.data.Dataset) and hasattr(pool, "__len__"):
        return len(pool)
    return None


def _check_k_early(fn, k, pool):
    """``k`` checked before any forward pass where the pool's size is known."""
    n = _pool_len(pool)
    if n:
        return _validate.check_k(fn, k, n)
    return _validate.check_int(fn, "k", k, low=1)


def _select(fn, strategy, model, pool, k, *, key=0, rate=None, labeled=None, options=None, batch_size=256,
            device=None, head=None, max_length=None, problem_type="classification"):
    from .sampler import _select_embedded

    key = _validate.as_key(fn, key)
    if k is not None:
        k = _check_k_early(fn, k, pool)
    common = dict(batch_size=batch_size, device=device, head=head, max_length=max_length)
    if strategy == "random":
        n = _pool_len(pool)
        if n is None:
            n = int(_outputs(fn, model, pool, **common)[0].shape[0])
        return _select_embedded(fn, strategy, "classification", key, None, None, n, k, rate=rate)
    logits, h = _outputs(fn, model, pool, problem_type=problem_type, **common)
    labeled_outputs = None
    if labeled is not None:
        labeled_outputs = _outputs(fn, model, labeled, arg="labeled", problem_type=problem_type, **common)
    return _select_embedded(fn, strategy, problem_type, key, logits, h, logits.shape[0], k, rate=rate,
                            labeled=labeled_outputs, options=options or {})


_SELECTOR_OPTIONS = """
      batch_size, device, head, max_length: as in :func:`last_layer_embedding`."""


def badge(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
          max_length: int | None = None, prune: bool = False) -> jax.Array:
    """BADGE for a torch model: k-means++ seeding over last-layer gradient embeddings.

    Ash et al., "Deep batch active learning by diverse, uncertain gradient lower bounds", ICLR
    2020. The embedding (:func:`last_layer_embedding`) is computed in torch and handed over
    through DLPack; :func:`aljax.kmeans_pp` then picks on the factored form. Given the same
    weights and key, the picks equal ``aljax.badge(params, apply_fn, pool, k, key=key)`` on the
    equivalent JAX model (up to float32 rounding of near-ties).

    Args:
      model: a ``torch.nn.Module`` or ``(model, tokenizer)`` pair (see :func:`last_layer_embedding`).
      pool: ``n`` examples (tensor, array, Dataset/DataLoader, mapping, or strings).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key.""" + _SELECTOR_OPTIONS + """
      prune: exact pruning of the k-means++ steps (same picks; see :func:`aljax.kmeans_pp`).

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, in pick order.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
      >>> ta.badge(model, torch.randn(100, 4), 10, key=0).shape
      (10,)
    """
    fn = "torch_adapter.badge"
    prune = _check_prune(fn, prune, factored=True)
    return _select(fn, "badge", model, pool, k, key=key, batch_size=batch_size, device=device, head=head,
                   max_length=max_length, options={"prune": prune})


def bait(model, pool, k: int, *, labeled=None, lamb: float = 1.0, oversample: float = 2.0, batch_size: int = 256,
         device=None, head: str | None = None, max_length: int | None = None, problem_type: str = "classification",
         key=None) -> jax.Array:
    """BAIT for a torch model: greedy Fisher-trace minimisation over last-layer Fisher embeddings.

    Ash et al., "Gone fishing: neural active learning with Fisher embeddings", NeurIPS 2021.
    :func:`fisher_embedding` of the pool (and of ``labeled``) is computed in torch and handed
    to :func:`aljax.fisher_greedy`.

    Args:
      model: a ``torch.nn.Module`` or ``(model, tokenizer)`` pair.
      pool: ``n`` candidate examples.
      k: number of points, a Python int in ``[1, n]``.
      labeled: optional labeled inputs (same kinds as ``pool``), whose Fisher seeds the greedy.
      lamb: the damping ``λ`` of ``λI + F_S``.
      oversample: forward pass to ``⌈oversample·k⌉`` points, then prune back to ``k``.""" + _SELECTOR_OPTIONS + """
      problem_type: ``"classification"`` or ``"regression"`` (the model's outputs ``(batch,)`` or
        ``(batch, m)``; the Fisher of a Gaussian head is ``h hᵀ`` per output), as in :func:`aljax.bait`.
      key: accepted and ignored (BAIT is deterministic), as in :func:`aljax.bait`.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.bait(model, torch.randn(60, 4), 5).shape
      (5,)
    """
    fn = "torch_adapter.bait"
    if problem_type not in ("classification", "regression"):
        raise ValueError(_validate.message(fn, "problem_type", "'classification' or 'regression'", repr(problem_type)))
    if key is not None:
        _validate.as_key(fn, key)
    return _select(fn, "bait", model, pool, k, labeled=labeled, options={"lamb": lamb, "oversample": oversample},
                   batch_size=batch_size, device=device, head=head, max_length=max_length, problem_type=problem_type)


def vessal(model, pool, k: int | None = None, *, rate: float | None = None, key=0, rank: int = 1, labeled=None,
           seed_fisher: bool = False, precompute_covariance: bool = False, lamb: float = 0.01,
           batch_size: int = 256, device=None, head: str | None = None, max_length: int | None = None) -> jax.Array:
    """VeSSAL for a torch model: streaming volume sampling over last-layer Fisher embeddings.

    Saran et al., "Streaming active learning with deep neural networks", ICML 2023. The pool is
    embedded in torch (:func:`fisher_embedding`) and streamed in order through
    :func:`aljax.volume_stream`. Give exactly one of ``k`` (a count) and ``rate`` (a labeling
    rate in ``(0, 1]``).

    Args:
      model: a ``torch.nn.Module`` or ``(model, tokenizer)`` pair.
      pool: ``n`` streamed examples, in stream order.
      k: number of points to keep, or None with ``rate``.
      rate: target fraction kept, in ``(0, 1]``, or None with ``k``.
      key: int seed or ``jax.random`` key.
      rank: rank of each point's Fisher rows (1: the top class direction).
      labeled: optional labeled inputs; with ``seed_fisher=True`` they seed ``A`` and ``Σ̂``.
      seed_fisher: seed the stream's statistics with ``labeled``.
      precompute_covariance: estimate ``Σ̂`` in a first pass over the whole pool.
      lamb: the damping of ``A₀ = λI``.""" + _SELECTOR_OPTIONS + """

    Returns:
      int32 unique indices into ``pool``, in stream order.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.vessal(model, torch.randn(60, 4), 5, key=0).shape
      (5,)
    """
    fn = "torch_adapter.vessal"
    for name, flag in (("seed_fisher", seed_fisher), ("precompute_covariance", precompute_covariance)):
        if not isinstance(flag, bool):
            raise TypeError(_validate.message(fn, name, "a bool", f"{type(flag).__name__} {flag!r}"))
    if labeled is not None and not seed_fisher:
        raise ValueError(_validate.message(fn, "labeled", "used with seed_fisher=True (it seeds A and Σ̂)",
                                           "labeled inputs with seed_fisher=False"))
    if seed_fisher and labeled is None:
        raise ValueError(_validate.message(fn, "labeled", "labeled inputs when seed_fisher=True", "None"))
    return _select(fn, "vessal", model, pool, k, key=key, rate=rate, labeled=labeled,
                   options={"rank": rank, "seed_fisher": seed_fisher, "precompute_covariance": precompute_covariance,
                            "lamb": lamb}, batch_size=batch_size, device=device, head=head, max_length=max_length)


def _uncertainty_doc(name: str, what: str) -> str:
    return f"""{what} sampling for a torch model: the ``k`` points of largest
    :func:`aljax.scores.{name}` score on the model's logits (ties to the lowest index).

    Args:
      model: a ``torch.nn.Module`` or ``(model, tokenizer)`` pair.
      pool: ``n`` candidate examples.
      k: number of points, a Python int in ``[1, n]``.
      key: accepted and ignored (deterministic).""" + _SELECTOR_OPTIONS + f"""

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, highest score first.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.{name}(model, torch.randn(60, 4), 5).shape
      (5,)
    """


def margin(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
           max_length: int | None = None) -> jax.Array:
    return _select("torch_adapter.margin", "margin", model, pool, k, key=key, batch_size=batch_size, device=device,
                   head=head, max_length=max_length)


def entropy(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
            max_length: int | None = None) -> jax.Array:
    return _select("torch_adapter.entropy", "entropy", model, pool, k, key=key, batch_size=batch_size,
                   device=device, head=head, max_length=max_length)


def least_confidence(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
                     max_length: int | None = None) -> jax.Array:
    return _select("torch_adapter.least_confidence", "least_confidence", model, pool, k, key=key,
                   batch_size=batch_size, device=device, head=head, max_length=max_length)


margin.__doc__ = _uncertainty_doc("margin", "Margin")
entropy.__doc__ = _uncertainty_doc("entropy", "Entropy")
least_confidence.__doc__ = _uncertainty_doc("least_confidence", "Least-confidence")


# BALD's per-batch parts (mean probabilities, mean entropy over the passes), compiled once.
_jit_bald_parts = jax.jit(_bald_parts)


def _dropout_seed(key) -> int:
    """The torch seed of :func:`bald`'s MC passes, drawn from the JAX ``key``."""
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def bald(model, pool, k: int, *, key=0, mc_samples: int = 20, batch_size: int = 256, device=None,
         max_length: int | None = None) -> jax.Array:
    """BALD with Monte Carlo dropout for a torch model: the ``k`` points of largest mutual
    information between the label and the weights.

    Houlsby et al. 2011; Gal, Islam & Ghahramani, ICML 2017. Each batch runs through the model
    ``mc_samples`` times with its ``nn.Dropout`` modules (any ``torch.nn.modules.dropout``
    module) in training mode and every other module in eval mode (batch norm keeps its running
    statistics), under ``torch.no_grad()``. The logits of the passes are handed to JAX and scored
    as :func:`aljax.scores.bald` scores them, ``H(mean_s p_s) − mean_s H(p_s)``; the top ``k``
    are returned (top-k BALD, not BatchBALD). The dropout masks come from torch's generator seeded
    from ``key`` inside ``torch.random.fork_rng``: the same key gives the same picks, and the
    caller's torch random state is left as it was. Modules' training flags are restored.

    Args:
      model: a ``torch.nn.Module`` or ``(model, tokenizer)`` pair with at least one dropout module.
      pool: ``n`` candidate examples (see :func:`last_layer_embedding`).
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key for the dropout masks.
      mc_samples: stochastic passes per batch, a Python int ``>= 2``.
      batch_size, device, max_length: as in :func:`last_layer_embedding`.

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, highest score first, ties to the lowest index.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
      ...                             torch.nn.Linear(16, 3))
      >>> ta.bald(model, torch.randn(60, 4), 5, key=0, mc_samples=8).shape
      (5,)
    """
    fn = "torch_adapter.bald"
    module, tokenizer = _unpack_model(fn, model)
    key = _validate.as_key(fn, key)
    k = _check_k_early(fn, k, pool)
    mc_samples = _validate.check_int(fn, "mc_samples", mc_samples, low=2)
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
                    raise ValueError(_validate.message(fn, "model", "a classifier returning floating logits (batch, C) "
                                                       "with C >= 2", f"outputs of shape {tuple(logits.shape[1:])} "
                                                       f"and dtype {logits.dtype}"))
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
    return _select_bald(mean_probs, mean_entropy, k)


def coreset(model, pool, k: int, *, key=0, labeled=None, batch_size: int = 256, device=None,
            head: str | None = None, max_length: int | None = None) -> jax.Array:
    """Core-set (k-center greedy) for a torch model, on the penultimate features.

    Sener & Savarese, "Active learning for convolutional neural networks: a core-set approach",
    ICLR 2018. The features ``h`` (input of the final Linear layer) are computed in torch and
    handed to :func:`aljax.k_center_greedy`.

    Args:
      model: a ``torch.nn.Module`` or ``(model, tokenizer)`` pair.
      pool: ``n`` candidate examples.
      k: number of points, a Python int in ``[1, n]``.
      key: accepted and ignored (deterministic).
      labeled: optional labeled inputs (same kinds as ``pool``), the initial centres.""" + _SELECTOR_OPTIONS + """

    Returns:
      ``(k,)`` int32 unique indices into ``pool``, in greedy order.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
      >>> ta.coreset(model, torch.randn(60, 4), 5).shape
      (5,)
    """
    return _select("torch_adapter.coreset", "coreset", model, pool, k, key=key, labeled=labeled,
                   batch_size=batch_size, device=device, head=head, max_length=max_length)


def random_sample(model, pool, k: int, *, key=0, batch_size: int = 256, device=None, head: str | None = None,
                  max_length: int | None = None) -> jax.Array:
    """Uniform random sampling without replacement (the baseline); ``model`` is not run when the
    pool's size is known.

    Args:
      model: ignored where ``len(pool)`` is known (else run once to count the examples).
      pool: ``n`` candidate examples.
      k: number of points, a Python int in ``[1, n]``.
      key: int seed or ``jax.random`` key.""" + _SELECTOR_OPTIONS + """

    Returns:
      ``(k,)`` int32 unique indices into ``pool``.

    Example:
      >>> import torch, aljax.torch_adapter as ta
      >>> ta.random_sample(None, torch.zeros(10, 3), 4, key=0).shape
      (4,)
    """
    return _select("torch_adapter.random_sample", "random", model, pool, k, key=key, batch_size=batch_size,
                   device=device, head=head, max_length=max_length)
