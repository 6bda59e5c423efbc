"""aljax._compile: the quick-to-compile twin of a jitted function and its fallback where XLA
refuses the options (BAIT's choice of twin: tests/test_bait.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aljax import _compile


@pytest.fixture
def state(monkeypatch):
    """The module's process-wide state, restored after the test."""
    monkeypatch.setattr(_compile, "_state", dict(_compile._state))
    return _compile._state


def test_quick_twin_computes_what_the_plain_function_does(state):
    f = lambda x, n: jnp.cumsum(jnp.sin(x) * n)  # noqa: E731
    quick, plain = _compile.quick_jit(f, static_argnames="n"), jax.jit(f, static_argnames="n")
    x = np.linspace(0, 3, 50, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(_compile.call(quick, plain, x, n=3)), np.asarray(plain(x, n=3)),
                               rtol=1e-6)
    assert quick._cache_size() == 1 and plain._cache_size() == 1  # (the reference's own call)
    assert state["supported"]


def test_options_xla_refuses_fall_back_to_the_plain_function_for_good(state, monkeypatch):
    monkeypatch.setattr(_compile, "QUICK_OPTIONS", {"xla_no_such_option_for_aljax": False})
    calls = []

    def plain(x):
        calls.append(x)
        return x + 1

    quick = _compile.quick_jit(lambda x: x + 1)
    assert _compile.call(quick, plain, 1.0) == 2.0 and calls == [1.0]
    assert state["supported"] is False
    never = lambda x: pytest.fail("the quick twin is not tried again")  # noqa: E731
    assert _compile.call(never, plain, 2.0) == 3.0 and calls == [1.0, 2.0]


def test_other_errors_of_the_quick_twin_are_raised(state):
    def broken(x):
        raise ValueError("a bad argument")

    with pytest.raises(ValueError, match="a bad argument"):
        _compile.call(broken, lambda x: x, 1.0)
    assert state["supported"]


def test_on_cpu_reads_the_arrays_device():
    assert _compile.on_cpu(jnp.zeros(3))
    assert _compile.on_cpu({"a": None, "b": np.zeros(2)}) == (jax.default_backend() == "cpu")
    assert _compile.on_cpu(jax.device_put(np.zeros(2), jax.devices("cpu")[-1]))



def test_inside_a_callers_jit_the_plain_function_runs(state):
    """JAX takes compiler options on top-level jits only: with concrete inputs closed over inside
    a caller's ``jax.jit``, the plain function runs (and the twin stays in use elsewhere)."""
    quick, plain = _compile.quick_jit(lambda x: 3 * x), jax.jit(lambda x: 3 * x)
    x = np.float32(2.0)
    assert float(jax.jit(lambda y: _compile.call(quick, plain, x) + y)(1.0)) == 7.0
    assert state["supported"]
