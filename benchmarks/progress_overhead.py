"""What progress bars cost when they are off: the front doors with progress=False against the
same calls in a checkout from before the bars existed (paired, alternating processes), and the
bookkeeping alone (a scope, a bar, its updates) per call.

Usage::

    python benchmarks/progress_overhead.py --baseline c2256a7 --repeats 7

``--baseline`` is a commit without progress bars; it is checked out into a temporary git worktree
and imported from there (PYTHONPATH) in its own processes. Each process times ``--calls`` warm
calls of each front door on a small pool (where a fixed per-call cost shows most) and prints the
median; the two versions alternate ``--repeats`` times and the report gives the median ratio.
Results go to benchmarks/results/progress-overhead.json with the provenance of this checkout. On a
loaded machine the paired ratios scatter widely; the bookkeeping time against the calls' own time
(same run) bounds the cost without that noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, statistics, sys, time
import jax, jax.numpy as jnp, aljax
progress = sys.argv[1] == "off"
n, calls = int(sys.argv[2]), int(sys.argv[3])
W1, W2 = jnp.ones((32, 64)) / 32, jnp.arange(640.0).reshape(64, 10) / 640
apply_fn = jax.jit(lambda p, x: jnp.tanh(x @ p[0]) @ p[1])
pool = jax.random.normal(jax.random.key(1), (n, 32))
out = {}
for name in ("margin", "badge", "coreset"):
    fn = getattr(aljax, name)
    kw = {"progress": False} if progress else {}
    fn((W1, W2), apply_fn, pool, 10, key=0, batch_size=256, **kw).block_until_ready()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn((W1, W2), apply_fn, pool, 10, key=0, batch_size=256, **kw).block_until_ready()
        times.append(time.perf_counter() - start)
    out[name] = statistics.median(times)
print(json.dumps(out))
"""


def _bookkeeping_seconds(repeats: int = 20000) -> float:
    """One front door's worth of bookkeeping with bars off: a scope, a pass bar with 8 updates
    and a waiting bar, per call."""
    from aljax import _progress

    start = time.perf_counter()
    for _ in range(repeats):
        with _progress.scope("bench", False):
            with _progress.bar("forward pass", 2048) as bar:
                for _ in range(8):
                    bar.update(256, None)
            with _progress.waiting("selecting", 10) as wait:
                wait.wait(None)
    return (time.perf_counter() - start) / repeats


def _run(pythonpath: str, mode: str, n: int, calls: int) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(n), str(calls)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="c2256a7", help="a commit from before the progress bars")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--json", default=str(HERE / "results" / "progress-overhead.json"))
    args = parser.parse_args()

    from _provenance import collect

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.baseline],
                       check=True)
        try:
            ratios, seconds = {}, {}
            for _ in range(args.repeats):
                old = _run(str(base), "default", args.n, args.calls)
                new = _run(str(ROOT), "off", args.n, args.calls)
                for name in old:
                    ratios.setdefault(name, []).append(new[name] / old[name])
                    seconds.setdefault(name, []).append(new[name])
                print({name: round(new[name] / old[name], 3) for name in old}, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    per_call = _bookkeeping_seconds()
    result = {
        "provenance": collect(),
        "baseline": args.baseline,
        "settings": {"n": args.n, "calls": args.calls, "repeats": args.repeats, "k": 10, "features": 64,
                     "classes": 10, "batch_size": 256},
        "ratio_off_vs_baseline": {name: {"median": statistics.median(r), "runs": r} for name, r in ratios.items()},
        "bookkeeping_seconds_per_call": per_call,
        "call_seconds_off": {name: statistics.median(t) for name, t in seconds.items()},
        "bookkeeping_fraction_of_call": {name: per_call / statistics.median(t) for name, t in seconds.items()},
    }
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=1))


if __name__ == "__main__":
    main()
