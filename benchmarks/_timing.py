"""Timing helpers shared by the benchmarks: medians after a warm-up, compile time apart,
``block_until_ready`` around every timing, and the memory bandwidth a jitted reduction reaches.

Nothing here is device specific: the same calls run on CPU, GPU and TPU.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def run_blocked(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds for one call of ``fn()``, waiting for every array it returns; and what it returned."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn()`` (no warm-up; each call waits for the arrays
    it returns)."""
    return statistics.median(run_blocked(fn)[0] for _ in range(repeats))


def measure(fn: Callable[[], Any], repeats: int = 3) -> dict:
    """Time ``fn()``: one warm-up call (it compiles), then the median of ``repeats`` calls.

    Returns a dict with ``first_s`` (the warm-up call: compilation plus one run), ``median_s``,
    ``runs_s`` (every timed call) and ``compile_s`` = ``first_s − median_s`` (at least 0): the
    one-off cost a first call pays, tracing and compilation included.
    """
    if repeats < 1:
        raise ValueError(f"measure: `repeats` must be at least 1, got {repeats}")
    first, _ = run_blocked(fn)
    runs = [run_blocked(fn)[0] for _ in range(repeats)]
    median = statistics.median(runs)
    return {"first_s": first, "median_s": median, "runs_s": runs, "compile_s": max(first - median, 0.0)}


def compile_seconds(fn: Callable, *args) -> float:
    """Seconds to lower and compile ``jax.jit(fn)`` for ``args`` (arrays or
    ``jax.ShapeDtypeStruct``s) ahead of time, without running it."""
    start = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start


def streaming_bandwidth(nbytes: int, repeats: int = 5) -> dict:
    """Bytes per second a jitted reduction reads from the default device's memory.

    Reads a float32 buffer of about ``nbytes`` (rows of 512) with a jitted ``sum`` and with a
    jitted matrix-vector product (the two ways a memory-bound step reads its operands), median
    of ``max(repeats, 5)`` runs each after a warm-up, and keeps the faster of the two.
    """
    rows = max(nbytes // (4 * 512), 1)
    x = jnp.ones((rows, 512), jnp.float32)
    v = jnp.ones((512,), jnp.float32)
    total = jax.jit(jnp.sum)
    matvec = jax.jit(lambda x, v: x @ v)
    repeats = max(repeats, 5)
    seconds = {"sum": measure(lambda: total(x), repeats)["median_s"],
               "matvec": measure(lambda: matvec(x, v), repeats)["median_s"]}
    best = min(seconds, key=seconds.get)
    nread = x.size * 4
    del x
    return {"bytes": nread, "bytes_per_s": nread / seconds[best], "method": best,
            "seconds": seconds}


def environment() -> dict:
    """Backend, devices, versions and host load, for the header of a results file."""
    devices = jax.devices()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "jax": jax.__version__,
        "jaxlib": _jaxlib_version(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(load) if load else None,
    }


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # pragma: no cover - reporting only
        return None


def loadavg() -> list[float] | None:
    """The host's 1, 5 and 15 minute load averages (None where the OS does not give them)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


# The largest VmHWM read since the last reset_peak_rss(): Linux computes VmHWM as the larger of
# the stored high-water mark and the current resident size, which it counts approximately (per-CPU
# counters), so a later read can come out a few pages lower than an earlier one (seen: 160 KiB).
_read = {"peak": 0}


def peak_rss_bytes(children: bool = False) -> int:
    """Peak resident memory of this process (or of its finished children), in bytes.

    Reads ``/proc/self/status`` ``VmHWM`` for this process where it exists (never less than an
    earlier read since :func:`reset_peak_rss`), else ``getrusage`` (``ru_maxrss`` is KiB on Linux,
    bytes on macOS).
    """
    if not children:
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        _read["peak"] = max(_read["peak"], int(line.split()[1]) * 1024)
                        return _read["peak"]
        except OSError:
            pass
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (``VmHWM``) to its current resident memory, so
    that :func:`peak_rss_bytes` then reads the peak since now; True where it worked (Linux: writing
    ``5`` to ``/proc/self/clear_refs``), False elsewhere (the peak then counts from the start)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        _read["peak"] = 0
        return True
    except OSError:
        return False


def device_peak_bytes() -> int | None:
    """Peak bytes in use on the default device where the backend reports it (GPU, TPU); None on
    backends without memory statistics (CPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    return (stats or {}).get("peak_bytes_in_use")
