import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def maybe_jit(request):
    """Call a function as is, or under an outer ``jax.jit`` (static args bound by the caller)."""
    return (lambda f: jax.jit(f)) if request.param else (lambda f: f)
