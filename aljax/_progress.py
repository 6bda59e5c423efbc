"""Progress bars for long work: the forward pass over a pool and the selection, on the host only.

A front door opens a :func:`scope` with its ``progress`` argument; the layers below ask for a
:func:`bar` (a pass over rows, updated chunk by chunk) or a :func:`waiting` bar (one compiled
selection, shown as a live timer until its result is ready). Outside a scope, or when the scope
is off, both are a shared no-op object: no tqdm import, no thread, no synchronisation, so
``progress=False`` costs one context-variable lookup per pass.

The rule for ``progress=None`` (the default): bars are on when stderr is a terminal, and each
bar appears only once its work has run for :data:`DELAY` seconds, so quick calls print
nothing. ``progress=True`` shows every bar at once (tqdm must be installed), ``progress=False``
none. Nothing here runs inside ``jax.jit``: bars are updated between compiled calls, and an
active bar waits for each chunk's result before counting it (the cost of being shown).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
from typing import Any

from . import _validate

# Seconds a bar waits before it appears under progress=None (tqdm's ``delay``).
DELAY = 2.0
# Seconds between redraws of a waiting bar (a live timer while one compiled call runs).
TICK = 0.5


class _Scope:
    __slots__ = ("fn", "delay")

    def __init__(self, fn: str, delay: float):
        self.fn, self.delay = fn, delay


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("aljax_progress", default=None)
# Set while a scope decided "no bars", so that a nested progress=None scope stays off.
_SCOPE_OFF: contextvars.ContextVar[bool] = contextvars.ContextVar("aljax_progress_off", default=False)


def check(fn: str, progress) -> bool | None:
    """``progress`` as None/True/False; ``True`` needs tqdm (an ImportError before any work)."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(_validate.message(fn, "progress", "None, True or False",
                                          f"{type(progress).__name__} {progress!r}"))
    if progress:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            raise ImportError(f"{fn}: progress=True needs tqdm (`pip install tqdm`); "
                              "pass progress=False or None to run without a bar") from None
    return progress


def _terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _tqdm_available() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def scope(fn: str, progress):
    """Bars of the work below this call: on, off, or (``None``) as the enclosing scope decided,
    else on when stderr is a terminal. An inner scope never turns on what an outer one turned
    off unless it says ``progress=True``."""
    progress = check(fn, progress)
    outer = _SCOPE.get()
    if progress is None:
        if outer is not None or _SCOPE_OFF.get():
            yield  # the enclosing call decided
            return
        state = _Scope(fn, DELAY) if _terminal() and _tqdm_available() else None
    else:
        state = _Scope(fn, 0.0) if progress else None
    token, off = _SCOPE.set(state), _SCOPE_OFF.set(state is None)
    try:
        yield
    finally:
        _SCOPE.reset(token)
        _SCOPE_OFF.reset(off)



class _Null:
    """The bar of work nobody watches: every method does nothing."""

    active = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1, result: Any = None) -> None:
        pass

    def wait(self, result):
        return result


NULL = _Null()


class _Bar:
    active = True

    def __init__(self, desc: str, total: int | None, unit: str, delay: float):
        from tqdm.auto import tqdm

        self._tqdm = tqdm(total=total, desc=desc, unit=unit, delay=delay, leave=False, file=sys.stderr,
                          dynamic_ncols=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._tqdm.close()
        return False

    def update(self, n: int = 1, result: Any = None) -> None:
        """Count ``n`` more units done, once ``result`` (a pytree of arrays) is computed."""
        if result is not None:
            _block(result)
        self._tqdm.update(n)


def _block(result) -> None:
    """Wait until ``result`` is computed (never for values traced under a caller's jit)."""
    import jax

    leaves = jax.tree_util.tree_leaves(result)
    if _validate.is_concrete(*leaves):
        for leaf in leaves:
            if hasattr(leaf, "block_until_ready"):
                leaf.block_until_ready()


class _Waiting(_Bar):
    """A bar over one compiled call: redrawn every :data:`TICK` seconds by a thread (the call
    releases the GIL while XLA runs) so the elapsed time moves, completed when the result is."""

    def __init__(self, desc: str, total: int, unit: str, delay: float):
        super().__init__(desc, total, unit, delay)
        self._delay, self._done = delay, threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self):
        bar = self._tqdm
        while not self._done.wait(TICK):
            if bar._time() - bar.start_t >= self._delay:
                bar.refresh()

    def wait(self, result):
        _block(result)
        self._tqdm.update(self._tqdm.total - self._tqdm.n)
        return result

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        return super().__exit__(*exc)


def bar(what: str, total: int | None, unit: str = "row"):
    """A bar over ``total`` units of ``what`` (None: unknown, an iterable pool), or :data:`NULL`."""
    state = _SCOPE.get()
    if state is None:
        return NULL
    return _Bar(f"{state.fn}: {what}", total, unit, state.delay)


def waiting(what: str, total: int, unit: str = "pick"):
    """A live timer over one compiled call that produces ``total`` units, or :data:`NULL`.
    Use as ``with waiting(...) as w: out = w.wait(kernel(...))``."""
    state = _SCOPE.get()
    if state is None:
        return NULL
    return _Waiting(f"{state.fn}: {what}", total, unit, state.delay)
