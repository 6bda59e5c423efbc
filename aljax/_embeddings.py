"""(params, apply_fn, pool) -> embeddings. Embedding code never chooses points.

* :func:`logits_and_features` — the model's outputs and the penultimate features ``h`` (the input
  of the last dense layer, found by tracing ``apply_fn`` unless ``features_fn`` is given),
  computed in chunks of ``batch_size`` so pools larger than device memory work.
* :func:`last_layer_embedding` — BADGE's gradient embedding as :class:`~aljax.Factored`.
* :func:`fisher_embedding` — BAIT/VeSSAL's Fisher embedding as :class:`~aljax.FisherFactors`.
* :func:`gradient_embedding` — the generic ``vmap(grad)`` path over any parameter subset.

Every pool may be an array / pytree of arrays or an **iterable of batches** (a generator, an
iterator, a data loader): :func:`aljax._pool.open_pool` reads it once, regroups it into
fixed-size chunks and keeps only the compact outputs (``n × (C + D)``), never the raw pool, so
pools larger than host memory work through every front door.
"""

from __future__ import annotations

import collections
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate
from ._dense_head import DenseHeadError, trace_head
from ._pool import open_pool
from ._types import Factored, FisherFactors

_JIT_CACHE: "collections.OrderedDict" = collections.OrderedDict()
_JIT_CACHE_SIZE = 64


def _cache_key(obj):
    try:
        hash(obj)
        return obj
    except TypeError:
        return ("id", id(obj))


def cached(tag: str, fn: Callable, build: Callable[[], Callable], *static) -> Callable:
    """``build()``'s jitted function, made once per (tag, user callable, static options), so
    repeated calls with the same shapes never recompile. Unhashable callables are keyed by
    identity. The cache keeps the 64 most recently used entries (a fresh lambda per call compiles
    anew each time: define the function once)."""
    key = (tag, _cache_key(fn), tuple(_cache_key(o) for o in static))
    if key in _JIT_CACHE:
        _JIT_CACHE.move_to_end(key)
    else:
        _JIT_CACHE[key] = build()
        if len(_JIT_CACHE) > _JIT_CACHE_SIZE:
            _JIT_CACHE.popitem(last=False)
    return _JIT_CACHE[key]


def _cached_jit(tag: str, fn: Callable, *static) -> Callable:
    return cached(tag, fn, lambda: _build(tag, fn, *static), *static)


def _build(tag: str, fn: Callable, *static) -> Callable:
    if tag == "head":
        apply_fn, features_fn = fn, static[0]

        def head(params, x):
            if features_fn is None:
                logits, h, _ = trace_head(apply_fn, params, x)
            else:
                logits, h = apply_fn(params, x), features_fn(params, x)
            return logits, h

        return jax.jit(head)
    if tag == "grad":
        apply_fn, selected = fn, static[0]
        return jax.jit(lambda params, x: _per_example_grads(apply_fn, params, x, selected))
    raise AssertionError(tag)


def logits_and_features(params, apply_fn: Callable, pool, *, batch_size: int = 256,
                        features_fn: Callable | None = None, fn_name: str = "logits_and_features",
                        problem_type: str = "classification"):
    """The model's outputs and penultimate features for every pool example.

    Args:
      params: the model parameters (any pytree).
      apply_fn: ``apply_fn(params, x) -> logits`` of shape ``(batch, C)`` (or ``(batch,)`` /
        ``(batch, m)`` with ``problem_type="regression"``).
      pool: an array or pytree of arrays with a leading example axis ``n``.
      batch_size: rows per chunk.
      features_fn: optional ``features_fn(params, x) -> (batch, D)``; without it the input of the
        last dense layer is found by tracing ``apply_fn``.
      fn_name: the public function name used in error messages.
      problem_type: ``"classification"`` (2-D floating logits) or ``"regression"``.

    Returns:
      ``(outputs, h)``: ``(n, C)`` (or ``(n,)``/``(n, m)``) and ``(n, D)`` arrays.
    """
    _validate.check_params(fn_name, params)
    if not callable(apply_fn):
        raise TypeError(_validate.message(fn_name, "apply_fn", "a callable apply_fn(params, x)", type(apply_fn).__name__))
    if features_fn is not None and not callable(features_fn):
        raise TypeError(_validate.message(fn_name, "features_fn", "a callable features_fn(params, x) or None",
                                          type(features_fn).__name__))
    batch_size = _validate.check_int(fn_name, "batch_size", batch_size, low=1)
    first, _, run = open_pool(fn_name, pool, batch_size)
    head = _cached_jit("head", apply_fn, features_fn)
    # Shape checks on one chunk, before any heavy work.
    check_outputs(fn_name, output_shape(fn_name, apply_fn, params, first), problem_type)
    try:
        out_shape, h_shape = jax.eval_shape(head, params, first)
    except DenseHeadError as err:
        raise ValueError(
            f"aljax.{fn_name}: cannot find the last dense layer of `apply_fn`: {err}. "
            "Pass `features_fn=lambda params, x: ...` returning the (batch, D) penultimate features."
        ) from None
    _check_features(fn_name, out_shape, h_shape)
    (outputs, h), _ = run(lambda chunk: head(params, chunk))
    _validate.check_finite_each(fn_name, [("the model's outputs (logits) on argument `pool`", outputs),
                                          ("the penultimate features of argument `pool`", h)])
    return outputs, h


def output_shape(fn_name, apply_fn, params, chunk):
    """``apply_fn``'s output shape on one chunk; a failure there (a pool whose example shape the
    model does not take, say) is reported with the pool's shape."""
    try:
        return jax.eval_shape(apply_fn, params, chunk)
    except (TypeError, ValueError) as err:
        shapes = jax.tree_util.tree_map(lambda leaf: tuple(leaf.shape[1:]), chunk)
        raise ValueError(
            f"aljax.{fn_name}: `apply_fn(params, x)` failed on a chunk of the pool (example shape "
            f"{shapes}): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err


def check_outputs(fn_name, out_shape, problem_type):
    if not hasattr(out_shape, "ndim"):
        raise TypeError(_validate.message(fn_name, "apply_fn", "a function returning one array of outputs",
                                          type(out_shape).__name__))
    if problem_type == "classification":
        if out_shape.ndim != 2:
            raise ValueError(_validate.message(fn_name, "apply_fn", "a function returning 2-D logits (batch, C)",
                                               f"outputs of shape {out_shape.shape}"))
        if out_shape.shape[1] < 2:
            raise ValueError(_validate.message(fn_name, "apply_fn", "logits with at least 2 classes",
                                               f"outputs of shape {out_shape.shape}"))
    elif problem_type == "regression":
        if out_shape.ndim not in (1, 2):
            raise ValueError(_validate.message(fn_name, "apply_fn", "outputs of shape (batch,) or (batch, m)",
                                               f"outputs of shape {out_shape.shape}"))
    else:
        raise ValueError(_validate.message(fn_name, "problem_type", "'classification' or 'regression'",
                                           repr(problem_type)))
    if not jnp.issubdtype(out_shape.dtype, jnp.floating):
        raise TypeError(_validate.message(fn_name, "apply_fn", "a function returning floating outputs",
                                          f"dtype {out_shape.dtype}"))


def _check_features(fn_name, out_shape, h_shape):
    batch = h_shape.shape[0] if h_shape.ndim else None
    if h_shape.ndim != 2 or not jnp.issubdtype(h_shape.dtype, jnp.floating):
        raise ValueError(_validate.message(fn_name, "features_fn", "floating features of shape (batch, D)",
                                           f"{h_shape.dtype}{list(h_shape.shape)}"))
    if batch != out_shape.shape[0]:
        raise ValueError(f"aljax.{fn_name}: the features have {batch} rows but the outputs have "
                         f"{out_shape.shape[0]}; they must match the batch.")


def last_layer_embedding(params, apply_fn: Callable, pool, *, batch_size: int = 256,
                         features_fn: Callable | None = None) -> Factored:
    """BADGE's last-layer gradient embedding, in factored form.

    Row ``i`` is the gradient of the cross-entropy at the predicted label ``ŷ_i`` with respect to
    the last dense kernel: ``a_i ⊗ h_i`` with ``a_i = p_i − onehot(ŷ_i)`` (Ash et al., ICLR 2020).

    Args:
      params: model parameters.
      apply_fn: ``apply_fn(params, x) -> logits (batch, C)``.
      pool: ``(n, ...)`` array or pytree of arrays, or an iterable of batches of such arrays.
      batch_size: rows per chunk.
      features_fn: optional ``features_fn(params, x) -> (batch, D)``.

    Returns:
      :class:`~aljax.Factored` with ``a: (n, C)`` and ``h: (n, D)``.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W = jnp.ones((5, 3)); apply_fn = lambda W, x: jnp.tanh(x) @ W
      >>> aljax.last_layer_embedding(W, apply_fn, jnp.ones((8, 5)))
      Factored(a=float32[8, 3], h=float32[8, 5])
    """
    return factored_embedding(params, apply_fn, pool, batch_size=batch_size, features_fn=features_fn,
                              fn_name="last_layer_embedding")


def factored_embedding(params, apply_fn, pool, *, batch_size, features_fn, fn_name) -> Factored:
    """:func:`last_layer_embedding` with the caller's name in error messages."""
    logits, h = logits_and_features(params, apply_fn, pool, batch_size=batch_size, features_fn=features_fn,
                                    fn_name=fn_name)
    return Factored(hallucinated_residual(logits), h)


def softmax(logits) -> jax.Array:
    """``softmax(logits)`` over the last axis, in the logits' dtype: in NumPy for small concrete
    logits on the host or one CPU device (:func:`aljax._validate.on_host`; computed in at least
    float32), else as one jitted call (eager, it is five ops, each compiled once per pool size);
    either way nothing compiles once per pool size for the pools of an everyday loop."""
    if _validate.on_host(logits):
        return _validate.host_put(_host_softmax(logits).astype(_host_dtype(logits)), logits)
    return _softmax(logits)


def hallucinated_residual(logits) -> jax.Array:
    """``a = softmax(logits) − onehot(argmax logits)``: the logit gradient of the cross-entropy at
    the predicted label (ties go to the lowest class index). In NumPy for small concrete logits,
    as :func:`softmax`."""
    if not _validate.on_host(logits):
        return _hallucinated_residual(logits)
    probs = _host_softmax(logits)
    probs[np.arange(len(probs)), np.argmax(np.asarray(logits), axis=-1)] -= 1
    return _validate.host_put(probs.astype(_host_dtype(logits)), logits)


def _host_dtype(logits):
    return jax.dtypes.canonicalize_dtype(logits.dtype)


def _host_softmax(logits) -> np.ndarray:
    x = np.asarray(logits)
    x = x.astype(np.promote_types(x.dtype, np.float32))
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


@jax.jit
def _softmax(logits):
    return jax.nn.softmax(logits, axis=-1)


@jax.jit
def _hallucinated_residual(logits):
    probs = jax.nn.softmax(logits, axis=-1)
    return probs - jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=probs.dtype)


def fisher_embedding(params, apply_fn: Callable, pool, *, batch_size: int = 256,
                     features_fn: Callable | None = None) -> FisherFactors:
    """The last-layer Fisher embedding ``(softmax(logits), h)`` as :class:`~aljax.FisherFactors`.

    Args:
      params: model parameters.
      apply_fn: ``apply_fn(params, x) -> logits (batch, C)``.
      pool: ``(n, ...)`` array or pytree of arrays, or an iterable of batches of such arrays.
      batch_size: rows per chunk.
      features_fn: optional ``features_fn(params, x) -> (batch, D)``.

    Returns:
      :class:`~aljax.FisherFactors` with ``probs (n, C)`` and ``h (n, D)``.

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jnp.ones((4, 16)) / 4, jnp.arange(48.0).reshape(16, 3) / 48
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> emb = aljax.fisher_embedding((W1, W2), apply_fn, jnp.ones((10, 4)))
      >>> emb.probs.shape, emb.h.shape
      ((10, 3), (10, 16))
    """
    return fisher_factors(params, apply_fn, pool, batch_size=batch_size, features_fn=features_fn,
                          fn_name="fisher_embedding")


def fisher_factors(params, apply_fn, pool, *, batch_size, features_fn, fn_name) -> FisherFactors:
    """:func:`fisher_embedding` with the caller's name in error messages."""
    logits, h = logits_and_features(params, apply_fn, pool, batch_size=batch_size, features_fn=features_fn,
                                    fn_name=fn_name)
    return FisherFactors(softmax(logits), h)


# ---------------------------------------------------------------------------------------------
# The generic path: per-example gradients with vmap(grad).


def _selected_leaves(fn_name, params, apply_fn, first, wrt) -> tuple[int, ...]:
    leaves_with_paths = jax.tree_util.tree_leaves_with_path(params)
    if wrt is None:
        try:
            kernel_leaf = {}

            def locate(p, x):
                _, _, kernel_leaf["index"] = trace_head(apply_fn, p, x)
                return 0

            jax.eval_shape(locate, params, first)
        except DenseHeadError as err:
            raise ValueError(f"aljax.{fn_name}: cannot find the last dense layer of `apply_fn` for the default "
                             f"`wrt`: {err}. Pass `wrt=` (a predicate on parameter paths).") from None
        if kernel_leaf["index"] is None:
            raise ValueError(f"aljax.{fn_name}: the kernel of the last dense layer is computed, not a parameter "
                             "leaf; pass `wrt=` (a predicate on parameter paths).")
        return (kernel_leaf["index"],)
    if callable(wrt):
        mask = [bool(wrt(path, leaf)) for path, leaf in leaves_with_paths]
    else:
        try:
            mask_leaves = jax.tree_util.tree_structure(params).flatten_up_to(wrt)
        except (ValueError, TypeError) as err:
            raise ValueError(_validate.message(fn_name, "wrt", "a predicate (path, leaf) -> bool or a pytree of "
                                               "bools with the structure of params", f"a mismatched pytree ({err})"))
        mask = [bool(m) for m in mask_leaves]
    selected = tuple(i for i, m in enumerate(mask) if m)
    if not selected:
        raise ValueError(_validate.message(fn_name, "wrt", "a selection of at least one parameter leaf",
                                           "a selection of none"))
    return selected


def _per_example_grads(apply_fn, params, x, selected):
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def loss(chosen, example):
        full = list(leaves)
        for i, leaf in zip(selected, chosen):
            full[i] = leaf
        batch = jax.tree_util.tree_map(lambda e: e[None], example)
        logits = apply_fn(jax.tree_util.tree_unflatten(treedef, full), batch)[0]
        label = jax.lax.stop_gradient(jnp.argmax(logits))
        return -jax.nn.log_softmax(logits)[label]

    chosen = [leaves[i] for i in selected]
    grads = jax.vmap(jax.grad(loss), in_axes=(None, 0))(chosen, x)
    return jnp.concatenate([g.reshape(g.shape[0], -1) for g in grads], axis=1)


def gradient_embedding(params, apply_fn: Callable, pool, *, wrt=None, batch_size: int = 256,
                       project_to: int | None = None, key=0) -> jax.Array:
    """Per-example gradients of the cross-entropy at the predicted label, flattened.

    The generic path, ``jax.vmap(jax.grad(loss))``, over any parameter subset. For the default
    ``wrt`` (the kernel of the last dense layer, no bias) it equals the factored embedding:
    ``Factored.to_dense("dc")`` for a Flax ``Dense`` head (kernel ``D × C``, so the flattened
    order is feature-major, index ``d·C + c``) and ``to_dense("cd")`` for a ``C × D`` kernel
    (Equinox ``Linear``).

    Args:
      params: model parameters.
      apply_fn: ``apply_fn(params, x) -> logits (batch, C)``; called on batches of one example.
      pool: ``(n, ...)`` array or pytree of arrays, or an iterable of batches of such arrays.
      wrt: which parameters: ``None`` (the last dense kernel), a predicate
        ``wrt(path, leaf) -> bool`` on ``jax.tree_util`` key paths (e.g.
        ``lambda path, _: "Dense_1" in jax.tree_util.keystr(path)``), or a pytree of bools with
        the structure of ``params``. Selected leaves are flattened row-major and concatenated in
        ``tree_leaves`` order.
      batch_size: rows per chunk.
      project_to: if given, multiply by a Gaussian sketch ``R / √project_to`` (``R`` of shape
        ``(d, project_to)`` drawn from ``key``), which preserves distances in expectation.
      key: int or ``jax.random`` key for the sketch.

    Returns:
      ``(n, d)`` array (``(n, project_to)`` with a sketch).

    Example:
      >>> import jax, jax.numpy as jnp, aljax
      >>> W1, W2 = jnp.ones((4, 16)) / 4, jnp.arange(48.0).reshape(16, 3) / 48
      >>> apply_fn = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
      >>> aljax.gradient_embedding((W1, W2), apply_fn, jnp.ones((10, 4))).shape   # d = D·C
      (10, 48)
    """
    fn_name = "gradient_embedding"
    _validate.check_params(fn_name, params)
    if not callable(apply_fn):
        raise TypeError(_validate.message(fn_name, "apply_fn", "a callable apply_fn(params, x)", type(apply_fn).__name__))
    batch_size = _validate.check_int(fn_name, "batch_size", batch_size, low=1)
    key = _validate.as_key(fn_name, key)
    if project_to is not None:
        project_to = _validate.check_int(fn_name, "project_to", project_to, low=1)
    first, _, run = open_pool(fn_name, pool, batch_size)
    check_outputs(fn_name, output_shape(fn_name, apply_fn, params, first), "classification")
    selected = _selected_leaves(fn_name, params, apply_fn, first, wrt)
    grads_fn = _cached_jit("grad", apply_fn, selected)
    emb, _ = run(lambda chunk: grads_fn(params, chunk))
    _validate.check_finite(fn_name, "the per-example gradients of argument `pool`", emb)
    if project_to is not None:
        sketch = jax.random.normal(key, (emb.shape[1], project_to), emb.dtype) / np.sqrt(project_to)
        emb = jnp.matmul(emb, sketch, precision=jax.lax.Precision.HIGHEST)
    return emb
