"""The final layer of a torch model: found by a forward hook, its input (the penultimate features)
captured together with the logits and matched to them row by row."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .. import _validate
from ._inputs import unpack_model


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


def check_head(fn: str, model, head: str | None) -> None:
    """What can be checked of the final layer before a forward pass: ``head`` names a submodule,
    or (auto-detection) the model has an ``nn.Linear`` at all."""
    module, _ = unpack_model(fn, model)
    if head is not None:
        _head_module(fn, module, head)
    elif not any(isinstance(m, torch.nn.Linear) for m in module.modules()):
        _no_linear(fn)


class _Head:
    """Captures the input and output of the model's final ``nn.Linear`` during forward passes.

    Auto-detection hooks every ``nn.Linear`` and keeps the last one executed; ``head="name"``
    hooks that module only. After the first batch only the head stays hooked.
    """

    def __init__(self, fn: str, module, head: str | None, arg: str = "pool"):
        self.fn, self.module, self.name, self.captured, self.checked = fn, module, head, None, False
        self.arg = arg
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
                named = type(err)(f"aljax.{self.fn}: the model's forward pass failed on a batch of argument "
                                  f"`{self.arg}` ({_describe_inputs(args, kwargs)}): {err}")
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
