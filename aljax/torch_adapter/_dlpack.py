"""DLPack hand-over between torch tensors and JAX arrays, sharing memory on the same device."""

from __future__ import annotations

import jax
import torch

from .. import _validate

# XLA on CPU reads a DLPack buffer in place only when it is 64-byte aligned (torch's CPU allocator
# aligns to 64 bytes, so only views that start inside an allocation are affected).
_ALIGNMENT = 64
_NARROWER = {torch.float64: torch.float32, torch.int64: torch.int32, torch.complex128: torch.complex64}
if hasattr(torch, "uint64"):
    _NARROWER[torch.uint64] = torch.uint32


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
