"""Find the last dense layer of an arbitrary ``apply_fn`` by tracing it to a jaxpr.

The jaxpr of ``apply_fn(params, x)`` is evaluated equation by equation (nested ``jit`` and
``custom_jvp``/``custom_vjp`` calls are entered). Each value carries a little provenance:
whether it depends on ``x``, which parameter leaf it is a view of, and — if it is an affine image
of a dense layer's output, ``h @ W (+ b)`` — the value of ``h`` and the leaf of ``W``. The
logits must carry such a record, or the model's last layer is not dense and we say so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

# Ops through which "this is the output of the last dense layer" survives (with a parameter-only
# second operand for the binary ones: a bias).
_VIEW_OPS = {"reshape", "squeeze", "expand_dims", "transpose", "convert_element_type", "copy", "copy_p",
             "broadcast_in_dim", "reduce_precision", "optimization_barrier"}
_BIAS_OPS = {"add", "sub", "add_any"}
_CALL_PARAMS = ("jaxpr", "call_jaxpr")
_CALL_OPS = {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
             "custom_vjp_call_jaxpr", "remat", "checkpoint", "remat2"}


@dataclasses.dataclass(frozen=True)
class _Info:
    from_x: bool = False
    leaf: int | None = None          # index of the params leaf this value is a view of
    dense: Any = None                # (h, kernel_leaf) when this value is an affine image of h @ W
    breaker: str | None = None       # the op that broke the chain, for the error message


class DenseHeadError(ValueError):
    pass


def _read(env, var):
    if isinstance(var, jcore.Literal):
        return var.val, _Info()
    return env[var]


def _dense_from_dot(eqn, vals, infos) -> Any:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if lb or rb:
        return None
    lhs_x, rhs_x = infos[0].from_x, infos[1].from_x
    if lhs_x == rhs_x:
        return None
    side = 0 if lhs_x else 1
    feats, contract = vals[side], (lc, rc)[side]
    free = [d for d in range(feats.ndim) if d not in contract]
    feats = jnp.transpose(feats, free + list(contract))
    batch = math.prod(feats.shape[: len(free)])
    return feats.reshape(batch, -1), infos[1 - side].leaf


def _eval(jaxpr, consts, args, arg_infos):
    env = {}
    for v, c in zip(jaxpr.constvars, consts):
        env[v] = (c, _Info())
    for v, a, i in zip(jaxpr.invars, args, arg_infos):
        env[v] = (a, i)
    for eqn in jaxpr.eqns:
        pairs = [_read(env, v) for v in eqn.invars]
        vals = [p[0] for p in pairs]
        infos = [p[1] for p in pairs]
        from_x = any(i.from_x for i in infos)
        name = eqn.primitive.name
        sub = next((eqn.params[p] for p in _CALL_PARAMS if p in eqn.params), None)
        if name in _CALL_OPS and isinstance(sub, jcore.ClosedJaxpr):
            n_skip = len(vals) - len(sub.jaxpr.invars)  # custom_vjp may pass leading consts
            outs = _eval(sub.jaxpr, sub.consts, vals[n_skip:], infos[n_skip:])
        else:
            result = eqn.primitive.bind(*vals, **eqn.params)
            result = result if eqn.primitive.multiple_results else [result]
            if name == "dot_general":
                dense = _dense_from_dot(eqn, vals, infos)
                info = _Info(from_x=from_x, dense=dense, breaker=None if dense else "dot_general")
            elif name in _VIEW_OPS and len(infos) == 1:
                info = dataclasses.replace(infos[0], breaker=infos[0].breaker)
            elif name in _BIAS_OPS and len(infos) == 2 and sum(i.from_x for i in infos) == 1:
                xi = infos[0] if infos[0].from_x else infos[1]
                info = _Info(from_x=True, dense=xi.dense, breaker=xi.breaker)
            else:
                info = _Info(from_x=from_x, breaker=name)
            outs = [(r, info) for r in result]
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [_read(env, v) for v in jaxpr.outvars]


def trace_head(apply_fn: Callable, params, x):
    """Run ``apply_fn(params, x)`` and return ``(logits, h, kernel_leaf)``.

    ``h`` is the ``(batch, D)`` input of the dense layer producing the output, and
    ``kernel_leaf`` the index (in ``jax.tree_util.tree_leaves(params)``) of its kernel, or
    ``None`` if the kernel is not a parameter leaf. Raises :class:`DenseHeadError` when the
    output is not produced by a dense layer.
    """
    closed = jax.make_jaxpr(apply_fn)(params, x)
    p_leaves = jax.tree_util.tree_leaves(params)
    x_leaves = jax.tree_util.tree_leaves(x)
    infos = [_Info(leaf=i) for i in range(len(p_leaves))] + [_Info(from_x=True)] * len(x_leaves)
    outs = _eval(closed.jaxpr, closed.consts, p_leaves + x_leaves, infos)
    if len(outs) != 1:
        raise DenseHeadError(f"apply_fn returned {len(outs)} arrays; expected one logits array")
    logits, info = outs[0]
    if info.dense is None:
        raise DenseHeadError(
            f"its output is produced by `{info.breaker}`, not by a dense layer (h @ W + b)"
            if info.breaker else "its output does not depend on a dense layer of the input"
        )
    h, kernel_leaf = info.dense
    batch = logits.shape[0] if logits.ndim else 0
    if h.shape[0] != batch:
        raise DenseHeadError(
            f"the last dense layer maps {h.shape[0]} rows, not the {batch} examples of the batch"
        )
    return logits, h, kernel_leaf
