"""What an active-learning loop pays per round for a pool that shrinks and a labeled set that grows.

Each round of a real loop hands the selector a pool of a size it has not seen before (the points
just labeled are gone) and a labeled set that is larger. Whatever the selector compiles once per
pool size (or labeled size) it pays again every round. This script times that directly: per
strategy, in a fresh process, ``--rounds`` calls on scikit-learn's digits with a fixed random MLP,
the pool shrinking and the labeled set growing by ``k`` per round, each call waited for. Every
strategy gets ``key=`` the round, and ``labeled=`` the labeled inputs where it takes them (core-set,
BAIT, and VeSSAL, which seeds its statistics with them), as ``aljax.simulate`` calls it.

Reported per strategy: the first call (compiles everything) and the sum and median of the later
rounds (what a loop pays on top of the first round).

    python benchmarks/shrinking_pool.py
    python benchmarks/shrinking_pool.py --strategies vessal,coreset --rounds 20

Results go to ``--json`` (default ``benchmarks/results/shrinking_pool-<backend>.json``, with the
run's provenance, see ``_provenance.py``; the backend and devices are those the child processes
ran on); ``benchmarks/report.py`` turns it into RESULTS.md's table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

STRATEGIES = ("margin", "badge", "coreset", "vessal", "bait")
TAKE_LABELED = ("coreset", "vessal", "bait")


def one(strategy: str, rounds: int, k: int, pool_size: int) -> dict:
    import jax
    import numpy as np
    from sklearn.datasets import load_digits

    import aljax

    x = load_digits().data.astype(np.float32) / 16.0
    params = {"w1": jax.random.normal(jax.random.key(0), (64, 128)) * 0.1,
              "w2": jax.random.normal(jax.random.key(1), (128, 10)) * 0.1}

    def apply_fn(p, batch):
        return jax.nn.relu(batch @ p["w1"]) @ p["w2"]

    fn = getattr(aljax, strategy)
    times = []
    for r in range(rounds):
        labeled, pool = x[:k * (r + 1)], x[k * (r + 1):pool_size]
        kwargs = {"key": r, "labeled": labeled} if strategy in TAKE_LABELED else {"key": r}
        start = time.perf_counter()
        jax.block_until_ready(fn(params, apply_fn, pool, k, **kwargs))
        times.append(time.perf_counter() - start)
    devices = jax.devices()
    return {"strategy": strategy, "first_s": times[0], "later_total_s": sum(times[1:]),
            "later_median_s": statistics.median(times[1:]), "rounds_s": times,
            "devices": {"backend": jax.default_backend(), "device_kinds": sorted({d.device_kind for d in devices}),
                        "device_count": len(devices)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=13)
    parser.add_argument("--k", type=int, default=20, help="points selected (and labeled) per round")
    parser.add_argument("--pool-size", type=int, default=1500, help="labeled + unlabeled rows of digits used")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/shrinking_pool-<backend>.json)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.rounds, args.k, args.pool_size)))
        return
    print(f"digits, MLP 64-128-10, pool {args.pool_size - args.k} shrinking and labeled set {args.k} growing by "
          f"{args.k} per round, {args.rounds} rounds; one fresh process per strategy")
    sys.path.insert(0, str(HERE))
    import _provenance

    provenance = _provenance.collect()                  # JAX is not imported here: devices from a child
    data = dict(provenance=provenance, benchmark="shrinking_pool", rounds=args.rounds, k=args.k,
                pool_size=args.pool_size, load_before=list(os.getloadavg()), results=[])
    print(f"{'strategy':<10} {'first call':>11} {'later rounds':>13} {'median round':>13}")
    for strategy in args.strategies.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", strategy, "--rounds", str(args.rounds),
                              "--k", str(args.k), "--pool-size", str(args.pool_size)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{strategy:<10} {r['first_s'] * 1e3:9.0f}ms {r['later_total_s']:12.2f}s "
              f"{r['later_median_s'] * 1e3:11.0f}ms", flush=True)
        provenance.update({key: value for key, value in r.pop("devices").items() if provenance.get(key) is None})
        data["results"].append(r)
    data["load_after"] = list(os.getloadavg())
    path = args.json or HERE / "results" / f"shrinking_pool-{provenance['backend']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
