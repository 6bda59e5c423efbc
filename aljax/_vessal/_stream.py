"""Driving the stream: fixed-size chunks from any sequence of embedding blocks, their draws, the
kernel for each chunk (dense or span, with the span kernel's room grown or handed over), and the
uniform fill of a budget's shortfall."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _progress, _validate
from . import _dense, _rows, _span


@functools.partial(jax.jit, static_argnames=("size",))
def _draws(key, start, *, size: int):
    """Uniform draws for the chunk of stream positions ``start … start + size − 1``: chunks start
    at multiples of :data:`~aljax._vessal._rows.CHUNK`, so each draw is a function of the global
    position alone."""
    return jax.random.uniform(jax.random.fold_in(key, start), (size,))


def _chunks(blocks, stream_key, uniforms, dtype, total: int | None, fn: str):
    """``(chunk, n_valid, seen, draws)`` for each internal chunk, ``seen`` the position of its first
    point; checks the declared stream length. ``uniforms`` (tests only) replaces the draws."""
    seen, size = 0, _rows.CHUNK
    for chunk, n_valid in _rows.rechunk(blocks, size):
        if total is not None and seen + n_valid > total:
            raise ValueError(f"aljax.{fn}: the stream yielded more than its declared length {total}.")
        if uniforms is None:
            draws = _draws(stream_key, jnp.int32(seen), size=size)
        else:
            draws = jnp.zeros(size, dtype).at[:n_valid].set(jnp.asarray(uniforms[seen:seen + n_valid], dtype))
        yield chunk, n_valid, seen, draws
        seen += n_valid
    if total is not None and seen != total:
        raise ValueError(f"aljax.{fn}: the stream yielded {seen} points but its declared length is {total}.")


class _Kernels:
    """Which kernel runs the next chunk, and the span kernel's room (its rows, ``cap``)."""

    def __init__(self, *, rank, budget, target, lamb, covariance, cap):
        self.rank, self.budget, self.target, self.lamb, self.cap = rank, budget, target, lamb, cap
        self.running = covariance is None
        if cap is not None:
            self.cov = covariance
            self.cov_trace = jnp.trace(covariance)
            self.limit = int(_span.MAX_ROWS * covariance.shape[0])

    def step(self, state, chunk, draws, n_valid: int, start: int):
        """One kernel call from chunk position ``start``: ``(state, mask, stop)``, ``stop`` where
        the next call resumes (``n_valid`` when the chunk is done)."""
        if self.cap is None:
            state, mask = _dense.chunk(state, chunk, draws, jnp.int32(n_valid), self.target, jnp.int32(start),
                                       rank=self.rank, running=self.running, budget=self.budget)
            return state, mask, n_valid
        state, mask, stop = _span.chunk(state, chunk, draws, jnp.int32(n_valid), self.target, jnp.int32(start),
                                        self.cov, self.cov_trace, self.lamb, rank=self.rank, budget=self.budget)
        # With a budget the rows never run out (k·r are allocated), so there is no host sync.
        stop = n_valid if self.budget is not None else int(stop)
        if stop < n_valid:  # out of rows: double them, or hand over to the dense kernel
            if 2 * self.cap <= self.limit:
                self.cap *= 2
                state = _span.grow(state, self.lamb, cap=self.cap)
            else:
                state, self.cap = _span.to_dense(state, self.cov, self.lamb), None
        return state, mask, stop


def run(key, blocks, *, d: int, rank: int, dtype, budget: int | None, rate: float | None, total: int | None,
        lamb: float, labeled=None, covariance=None, uniforms=None, fn: str = "volume_stream",
        span: bool | None = None) -> jax.Array:
    """The whole procedure over a stream of embedding blocks (valid input). Returns int32 indices.

    ``labeled``: the labeled-set embedding or ``None``. ``span``: ``None`` picks the kernel
    (:func:`~aljax._vessal._span.plan`), ``True``/``False`` force the span / dense kernel (the
    span kernel needs a fixed ``covariance``)."""
    stream_key, fill_key = jax.random.split(key)
    labeled_blocks = None if labeled is None else list(_rows.array_blocks(labeled, _rows.n_rows(labeled)))
    if covariance is None and span:
        raise ValueError(f"aljax.{fn}: the span-of-kept-points kernel needs a fixed covariance.")
    n_labeled = 0 if labeled is None else _rows.n_rows(labeled)
    cap = None if covariance is None else _span.plan(d, rank, budget, n_labeled, span)
    if cap is not None:
        covariance = jnp.asarray(covariance, dtype)
    kernels = _Kernels(rank=rank, budget=budget, target=jnp.int32(total) if budget is not None else
                       jnp.asarray(rate, dtype), lamb=lamb, covariance=covariance, cap=cap)
    state = None if cap is not None else _dense_start(labeled_blocks, covariance, lamb, d=d, rank=rank,
                                                      dtype=dtype, budget=budget)
    masks, seen = [], 0
    with _progress.bar("stream", total) as bar:
        for chunk, n_valid, seen, draws in _chunks(blocks, stream_key, uniforms, dtype, total, fn):
            if state is None:  # the span state; its factor widths C', D' come from the first chunk
                state = _span_start(labeled_blocks, chunk, covariance, lamb, rank=rank, dtype=dtype, cap=cap,
                                    budget=budget)
            start = 0
            while start < n_valid:
                state, mask, stop = kernels.step(state, chunk, draws, n_valid, start)
                if budget is None:
                    masks.append(np.flatnonzero(np.asarray(mask[start:stop])) + seen + start)
                start = stop
            seen += n_valid
            bar.update(n_valid, state)
    if budget is None:
        return jnp.asarray(np.concatenate(masks) if masks else np.zeros(0), jnp.int32)
    if _validate.is_concrete(state.kept) and int(state.kept) == budget:
        return state.picks
    return fill(fill_key, state.picks, state.kept, seen, budget)


def _dense_start(labeled_blocks, covariance, lamb, *, d, rank, dtype, budget) -> _dense.DenseState:
    """The dense kernel's state before the stream, ``A`` (and ``S``) seeded with the labeled rows."""
    seed, n_labeled = (None, 0) if labeled_blocks is None else _rows.gram(iter(labeled_blocks), d, rank, dtype)
    return _dense.initial_state(seed, None if covariance is None else jnp.asarray(covariance), lamb, n_labeled,
                                d=d, dtype=jnp.dtype(dtype), budget=budget)


def _span_start(labeled_blocks, chunk, covariance, lamb, *, rank, dtype, cap, budget) -> _span.SpanState:
    """The span kernel's state before the stream, the labeled rows (if any) already kept."""
    factors = [_rows.factor_rows(block, rank, dtype) for block in labeled_blocks or [_rows.take(chunk, 0, 0)]]
    la, lh = (jnp.concatenate([f[i] for f in factors]) for i in (0, 1))
    return _span.initial(la, lh, covariance, lamb, cap=cap, budget=budget)


@functools.partial(jax.jit, static_argnames=("size", "budget"))
def _fill_chunk(best_scores, best_index, key, picks, kept, start, total, *, size: int, budget: int):
    """Running top-``budget`` of uniform scores over the positions not kept (a uniformly random
    subset in random order), for one chunk of positions ``start … start + size − 1``."""
    positions = start + jnp.arange(size, dtype=jnp.int32)
    scores = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(positions)
    kept_sorted = jnp.sort(jnp.where(jnp.arange(budget) < kept, picks, jnp.iinfo(jnp.int32).max))
    where = jnp.clip(jnp.searchsorted(kept_sorted, positions), 0, budget - 1)
    taken = (kept_sorted[where] == positions) | (positions >= total)
    scores = jnp.where(taken, -1.0, scores)
    all_scores = jnp.concatenate([best_scores, scores])
    all_index = jnp.concatenate([best_index, positions])
    top_scores, top = jax.lax.top_k(all_scores, budget)
    return top_scores, all_index[top]


def fill(key, picks, kept, total: int, budget: int) -> jax.Array:
    """Complete ``picks[:kept]`` to ``budget`` unique indices, drawn uniformly from the rest."""
    best_scores = jnp.full((budget,), -2.0, jnp.float32)
    best_index = jnp.zeros((budget,), jnp.int32)
    for start in range(0, total, _rows.CHUNK):
        best_scores, best_index = _fill_chunk(best_scores, best_index, key, picks, kept, jnp.int32(start),
                                              jnp.int32(total), size=_rows.CHUNK, budget=budget)
    slot = jnp.arange(budget)
    filler = best_index[jnp.clip(slot - kept, 0, budget - 1)]
    return jnp.where(slot < kept, picks, filler).astype(jnp.int32)
