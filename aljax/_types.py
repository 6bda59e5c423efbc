"""Structured embeddings: gradient and Fisher embeddings kept as per-point factors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate


def check_pair(cls: str, first: str, second: str, x, y) -> None:
    for name, arr in ((first, x), (second, y)):
        shape = getattr(arr, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(_validate.message(cls, name, "a 2-D array", f"shape {shape}"))
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(_validate.message(cls, name, "a floating array", f"dtype {arr.dtype}"))
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"aljax.{cls}: `{first}` and `{second}` must have the same number of rows, "
            f"got {x.shape[0]} and {y.shape[0]}."
        )


@jax.tree_util.register_pytree_node_class
class Factored:
    """A last-layer gradient embedding in factored form.

    Row ``i`` is the flattened outer product ``a[i] ⊗ h[i]`` (length ``C·D``), never
    materialised by the selectors. For BADGE ``a = p − onehot(argmax p)`` and ``h`` are the
    penultimate features, so the row is the gradient of the cross-entropy at the predicted
    label with respect to the last dense kernel.

    Args:
      a: ``(n, C)`` per-class factor.
      h: ``(n, D)`` features.

    Example:
      >>> import jax.numpy as jnp, aljax
      >>> emb = aljax.Factored(jnp.ones((4, 3)), jnp.ones((4, 5)))
      >>> emb.to_dense().shape
      (4, 15)
    """

    def __init__(self, a, h):
        check_pair("Factored", "a", "h", a, h)
        self.a = a
        self.h = h

    def tree_flatten(self):
        return (self.a, self.h), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.a, obj.h = children
        return obj

    @property
    def n(self) -> int:
        """Number of rows (points)."""
        return self.a.shape[0]

    @property
    def dim(self) -> int:
        """Length ``C·D`` of a row of the embedding it stands for."""
        return self.a.shape[1] * self.h.shape[1]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> "Factored":
        """Rows ``index`` (an int keeps the row axis: the result has one row)."""
        index = _row_index(index)
        return Factored.tree_unflatten(None, (self.a[index], self.h[index]))

    def to_dense(self, layout: str = "cd") -> jax.Array:
        """The ``(n, C·D)`` embedding. ``layout="cd"`` is class-major (index ``c·D + d``, the
        flattened ``a ⊗ h``); ``layout="dc"`` is feature-major (index ``d·C + c``), the order of a
        flattened Flax ``Dense`` kernel gradient (kernels there are ``D × C``).

        Example:
          >>> import jax.numpy as jnp, aljax
          >>> emb = aljax.Factored(jnp.array([[1.0, -1.0]]), jnp.array([[2.0, 3.0, 4.0]]))
          >>> emb.to_dense().tolist(), emb.to_dense("dc").tolist()
          ([[2.0, 3.0, 4.0, -2.0, -3.0, -4.0]], [[2.0, -2.0, 3.0, -3.0, 4.0, -4.0]])
        """
        if layout == "cd":
            outer = self.a[:, :, None] * self.h[:, None, :]
        elif layout == "dc":
            outer = self.h[:, :, None] * self.a[:, None, :]
        else:
            raise ValueError(_validate.message("Factored.to_dense", "layout", "'cd' or 'dc'", repr(layout)))
        return outer.reshape(self.n, -1)

    def __repr__(self) -> str:
        return f"Factored(a={_shape(self.a)}, h={_shape(self.h)})"


@jax.tree_util.register_pytree_node_class
class FisherFactors:
    """The last-layer Fisher embedding of softmax cross-entropy in factored form.

    Row block ``i`` is ``V_i = S_i ⊗ h_iᵀ`` (``C × C·D``) with ``S_i = diag(√p_i)(I − 1 p_iᵀ)``,
    so ``V_iᵀ V_i = (diag p_i − p_i p_iᵀ) ⊗ h_i h_iᵀ`` is the exact Fisher information of the last
    dense layer (no bias) at point ``i``.

    Args:
      probs: ``(n, C)`` predicted class probabilities.
      h: ``(n, D)`` penultimate features.

    Example:
      >>> import jax.numpy as jnp, aljax
      >>> emb = aljax.FisherFactors(jnp.full((4, 3), 1 / 3), jnp.ones((4, 5)))
      >>> emb.n, emb.dim, emb.to_dense().shape
      (4, 15, (4, 3, 15))
    """

    def __init__(self, probs, h):
        check_pair("FisherFactors", "probs", "h", probs, h)
        self.probs = probs
        self.h = h

    def tree_flatten(self):
        return (self.probs, self.h), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.probs, obj.h = children
        return obj

    @property
    def n(self) -> int:
        """Number of points."""
        return self.probs.shape[0]

    @property
    def dim(self) -> int:
        """Length ``C·D`` of a Fisher row (the last dense kernel's size)."""
        return self.probs.shape[1] * self.h.shape[1]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> "FisherFactors":
        """Rows ``index`` (an int keeps the row axis: the result has one row)."""
        index = _row_index(index)
        return FisherFactors.tree_unflatten(None, (self.probs[index], self.h[index]))

    def s_factor(self) -> jax.Array:
        """``S_i = diag(√p_i)(I − 1 p_iᵀ)``, shape ``(n, C, C)``: ``S_iᵀS_i = diag p_i − p_i p_iᵀ``.

        Example:
          >>> import jax.numpy as jnp, aljax
          >>> s = aljax.FisherFactors(jnp.array([[0.5, 0.5]]), jnp.ones((1, 2))).s_factor()
          >>> jnp.round(s[0].T @ s[0], 6).tolist()
          [[0.25, -0.25], [-0.25, 0.25]]
        """
        return _s_factor(self.probs)

    def to_dense(self) -> jax.Array:
        """The ``(n, C, C·D)`` tensor of the ``V_i`` (class-major columns). For tests and small
        problems only: this is exactly what the fast paths never build.

        Example:
          >>> import jax.numpy as jnp, aljax
          >>> aljax.FisherFactors(jnp.full((2, 3), 1 / 3), jnp.ones((2, 4))).to_dense().shape
          (2, 3, 12)
        """
        s = self.s_factor()
        n, c, _ = s.shape
        return (s[:, :, :, None] * self.h[:, None, None, :]).reshape(n, c, -1)

    def __repr__(self) -> str:
        return f"FisherFactors(probs={_shape(self.probs)}, h={_shape(self.h)})"


def _shape(x) -> str:
    return f"{getattr(x, 'dtype', '?')}{list(getattr(x, 'shape', ()))}"


def _row_index(index):
    if isinstance(index, tuple):
        raise IndexError("aljax: factored embeddings are indexed by rows only, e.g. emb[rows].")
    if isinstance(index, (int, np.integer)) or (getattr(index, "ndim", None) == 0):
        return jnp.asarray(index).reshape(1)
    return index


@jax.jit
def _s_factor(probs: jax.Array) -> jax.Array:
    """:meth:`FisherFactors.s_factor`, as one jitted call (eager, it is five ops, each compiled once
    per pool size)."""
    eye = jnp.eye(probs.shape[1], dtype=probs.dtype)
    return jnp.sqrt(probs)[:, :, None] * (eye[None] - probs[:, None, :])
