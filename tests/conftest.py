import gc
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def maybe_jit(request):
    """Call a function as is, or under an outer ``jax.jit`` (static args bound by the caller)."""
    return (lambda f: jax.jit(f)) if request.param else (lambda f: f)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program after each test module.

    Each XLA:CPU executable holds its own memory mappings, and JAX's caches keep them alive. The
    whole suite compiles thousands of programs in one process: kept, they pass the kernel's limit
    on mappings per process (``vm.max_map_count``, 65,530 by default), and the next compilation
    crashes with a segmentation fault. No test relies on a compilation from another module."""
    yield
    from aljax import _embeddings

    _embeddings._JIT_CACHE.clear()
    jax.clear_caches()
    gc.collect()
