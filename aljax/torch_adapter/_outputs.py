"""The model run over a pool: logits and penultimate features gathered into ``(n, ...)`` tensors,
checked for NaN/Inf, and handed to JAX."""

from __future__ import annotations

import torch

from .. import _progress, _validate
from ._dlpack import to_jax
from ._head import _Head
from ._inputs import _Inputs, _model_device, unpack_model


class _Gather:
    """Batches stacked into one tensor. With the pool size known, each batch is copied into a
    preallocated ``(n, ...)`` tensor while it is still in cache (no ``torch.cat`` pass at the end).

    NaN/Inf guard (see ``maybe_finite``): a NaN/Inf anywhere makes a sum non-finite, so one cheap
    reduction replaces a full ``isfinite`` pass. Batches of at least ``_GUARD_BATCH_BYTES`` are
    summed while still in cache; smaller ones (logits, narrow features) cost more in per-op
    dispatch than their bytes do, so the whole result is summed once at the end instead. The
    running total is accumulated in place (``out=``) so that nothing allocated in the loop
    outlives its batch: a small tensor kept alive across batches stops torch's allocator from
    handing each batch the same, cache-hot, activation memory.
    """

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


def outputs(fn: str, model, pool, *, batch_size: int = 256, device=None, head: str | None = None,
             max_length: int | None = None, problem_type: str = "classification", arg: str = "pool",
             check_first_batch=None):
    """Run the model over the pool -> ``(logits, h)`` as JAX arrays (``n`` rows each).

    ``check_first_batch(logits)``, if given, runs on the first batch's logits (a torch tensor), so
    that an argument that depends on the output shape fails before the rest of the pool runs.
    """
    module, tokenizer = unpack_model(fn, model)
    _validate.check_problem_type(fn, problem_type)
    batch_size = _validate.check_int(fn, "batch_size", batch_size, low=1)
    if max_length is not None:
        max_length = _validate.check_int(fn, "max_length", max_length, low=1)
    device = _model_device(module, device)
    inputs = _Inputs(fn, module, tokenizer, pool, batch_size, device, max_length, arg=arg)
    gather_logits, gather_h = _Gather(inputs.n), _Gather(inputs.n)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), _Head(fn, module, head, arg) as capture, \
                _progress.bar("forward pass", inputs.n) as bar:
            for args, kwargs in inputs.batches():
                logits, h = capture.run(args, kwargs)
                bar.update(logits.shape[0])
                if check_first_batch is not None and gather_logits.rows == 0:
                    _check_outputs(fn, logits, h, problem_type)
                    check_first_batch(logits)
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
    elif logits.ndim not in (1, 2):
        raise ValueError(_validate.message(fn, "model", "outputs of shape (batch,) or (batch, m)",
                                           f"outputs of shape {tuple(logits.shape)}"))
    if not logits.is_floating_point() or not h.is_floating_point():
        raise TypeError(_validate.message(fn, "model", "floating logits and features",
                                          f"dtypes {logits.dtype} and {h.dtype}"))
    if h.ndim != 2:
        raise ValueError(_validate.message(fn, "head", "a final layer whose input is (batch, D) features",
                                           f"features of shape {tuple(h.shape)}"))
