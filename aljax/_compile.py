"""A second compilation of a jitted function, with XLA options that shorten the compilation, for
calls whose compilation outweighs their run.

XLA:CPU's newer fusion emitters take much longer to compile a program of many small fusions (a
whole BAIT selection in one loop: ~150 of them) than the older ones, and the code they make runs
no faster there; on the large unrolled fusions of big pools the newer ones make faster code. So
a kernel keeps its plain ``jax.jit`` and gains a :func:`quick_jit` twin that its caller picks for
small problems on a CPU (:func:`call`). Options are a compiler's, not the user's: where the
installed jax cannot take them (an older ``jax.jit`` without ``compiler_options``, an XLA that no
longer knows the option), the twin is the plain function, or is dropped at its first call.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import numpy as np

# XLA debug options of the quick twin.
QUICK_OPTIONS = {"xla_cpu_use_fusion_emitters": False}

_state = {"supported": "compiler_options" in inspect.signature(jax.jit).parameters}


def quick_jit(fun: Callable, **jit_kwargs) -> Callable:
    """``jax.jit(fun, **jit_kwargs)`` compiled with :data:`QUICK_OPTIONS` (the plain ``jax.jit``
    where this jax takes no compiler options).

    >>> import jax.numpy as jnp
    >>> double = quick_jit(lambda x: 2 * x)
    >>> float(call(double, double, jnp.float32(1.5)))
    3.0
    """
    if not _state["supported"]:
        return jax.jit(fun, **jit_kwargs)
    return jax.jit(fun, compiler_options=QUICK_OPTIONS, **jit_kwargs)


def on_cpu(*trees: Any) -> bool:
    """Whether a jitted function of ``trees`` (concrete) runs on a CPU: the platform of their first
    jax Array, else of the default backend.

    >>> import numpy as np
    >>> on_cpu(np.zeros(3)) == (jax.default_backend() == "cpu")
    True
    """
    for x in jax.tree_util.tree_leaves(trees):
        if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
            return next(iter(x.sharding.device_set)).platform == "cpu"
    return jax.default_backend() == "cpu"


def call(quick: Callable, plain: Callable, *args, **kwargs):
    """``quick(*args, **kwargs)``; ``plain(...)`` inside a caller's ``jax.jit`` (concrete inputs
    closed over: JAX takes compiler options at the top level only, and the caller's compilation
    is the one that counts), and once XLA has refused :data:`QUICK_OPTIONS` (from then on in this
    process).

    >>> import jax.numpy as jnp
    >>> float(call(quick_jit(jnp.sin), jax.jit(jnp.sin), np.float32(0.0)))
    0.0
    """
    if _state["supported"]:
        try:
            return quick(*args, **kwargs)
        except Exception as err:  # jax's runtime error class moved between versions
            if "compiler_options" in str(err) and "top-level" in str(err):
                return plain(*args, **kwargs)
            if "compile option" not in str(err):
                raise
            _state["supported"] = False
    return plain(*args, **kwargs)
