"""Pools and models as the forward pass needs them: batches of inputs on the model's device.

A pool is a tensor, a NumPy or JAX array, a mapping of tensors, a ``Dataset``/``DataLoader``, or a
list of strings with a ``(model, tokenizer)`` pair (tokenised batch by batch).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Iterator

import jax
import numpy as np
import torch

from .. import _validate
from ._dlpack import to_torch

_LABEL_KEYS = ("labels", "label", "label_ids")


def unpack_model(fn: str, model):
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


def pool_len(pool) -> int | None:
    if isinstance(pool, (torch.Tensor, np.ndarray, jax.Array)):
        return int(pool.shape[0]) if pool.ndim else None
    if isinstance(pool, (list, tuple)):
        return len(pool)
    if isinstance(pool, torch.utils.data.DataLoader):
        return len(pool.dataset) if hasattr(pool.dataset, "__len__") else None
    if isinstance(pool, torch.utils.data.Dataset) and hasattr(pool, "__len__"):
        return len(pool)
    return None
