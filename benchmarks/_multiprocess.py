"""``throughput.py --processes P``: the throughput table across P processes (``jax.distributed``).

The parent spawns P local processes (CPU: ``--devices-per-process`` forced host devices each,
gloo collectives; on a cluster run ``throughput.py --processes P --distributed`` under the
launcher instead, one process per host). Every process builds the same data, hands its own rows
to :func:`aljax.global_pool` and runs each case on the global pool (``global``); then the same
case on its own part alone, over its local devices only (``local``: the work of one process
without any collective between processes). Per step the difference is what crossing processes
costs: the collectives and the wait for the slowest process. ``allreduce`` times one all-reduce
across the processes of the bytes a step of the case exchanges (its picked row), the floor of
that cost. Process 0 prints the table and writes the JSON.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys

import numpy as np

MARKER = "MULTIPROCESS-RESULT "

# (algorithm, numbers one step moves between devices: the picked row, plus (value, index) pairs)
PER_STEP = {"kmeans_pp": lambda c, d: c + d + 1, "k_center_greedy": lambda c, d: d,
            "fisher_greedy": lambda c, d: c + d}


def spawn(argv: list[str], processes: int, devices: int, timeout: float = 3600) -> int:
    """Run ``throughput.py argv`` as ``processes`` local processes; their largest exit status."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py")
    children = [subprocess.Popen([sys.executable, script, *argv, "--process-child", str(i),
                                  "--coordinator", f"localhost:{port}"], env=env) for i in range(processes)]
    try:
        return max(child.wait(timeout=timeout) for child in children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


def _part(x, me, processes):
    n = x.shape[0] // processes
    return x[me * n:(me + 1) * n]


def _allreduce_seconds(numbers: int, repeats: int) -> float:
    """Median seconds of one psum of ``numbers`` float32 across every device of every process."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    import aljax
    from aljax._hosts import default_mesh

    mesh = default_mesh("data")
    x = aljax.global_pool(np.ones((jax.local_device_count(), numbers), np.float32))
    reduce = jax.jit(jax.shard_map(lambda b: jax.lax.psum(b, "data"), mesh=mesh, in_specs=P("data"),
                                   out_specs=P("data")))
    import _timing

    return _timing.measure(lambda: reduce(x), repeats)["median_s"]


def child(args, cases_of, sizes, classes) -> None:
    """One of the P processes: every case on the global pool and on this process's part alone."""
    import jax

    if args.coordinator:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.processes,
                                   process_id=args.process_child)
    else:
        jax.distributed.initialize()
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import _timing

    import aljax

    me, processes = jax.process_index(), jax.process_count()
    local_mesh = Mesh(np.asarray(jax.local_devices()), ("data",))

    def spread(tree):
        return aljax.global_pool(jax.tree_util.tree_map(lambda x: _part(np.asarray(x), me, processes), tree))

    def local(tree):
        return jax.tree_util.tree_map(lambda x: jax.device_put(_part(np.asarray(x), me, processes),
                                                               NamedSharding(local_mesh, P("data"))), tree)

    results = []
    for size in args.sizes:
        for case in cases_of(sizes[size], set(args.algorithms)):
            entry = dict(size=size, classes=classes, processes=processes, devices=jax.device_count(),
                         **{k: v for k, v in case.items() if k not in ("call", "data")})
            for where, place in (("global", spread), ("local", local)):
                jax.clear_caches()
                data = place(case["data"])
                timing = _timing.measure(lambda: case["call"](data), args.repeats)
                entry[f"{where}_median_s"] = timing["median_s"]
                entry[f"{where}_compile_s"] = timing["compile_s"]
            if case["algorithm"] in PER_STEP:
                numbers = PER_STEP[case["algorithm"]](classes, case["dim"])
                entry["step_bytes"] = 4 * numbers
                entry["allreduce_s"] = _allreduce_seconds(numbers, args.repeats)
                steps = case["k"]
                entry["global_ms_per_step"] = entry["global_median_s"] / steps * 1e3
                entry["local_ms_per_step"] = entry["local_median_s"] / steps * 1e3
            entry["load"] = _timing.loadavg()
            entry["measured_at"] = datetime.datetime.now().isoformat(timespec="seconds")
            results.append(entry)
            if me == 0:
                print(format_entry(entry), flush=True)
    if me == 0:
        print(MARKER + json.dumps(results), flush=True)
        write(args, results)
    jax.distributed.shutdown()


def format_entry(e: dict) -> str:
    head = f"{e['size']:6s} {e['algorithm']:20s} n={e['n']:>9,} D={e['dim']:>4}"
    if "global_ms_per_step" in e:
        extra = e["global_ms_per_step"] - e["local_ms_per_step"]
        return (f"{head}  {e['global_ms_per_step']:8.3f} ms/step across {e['processes']} processes, "
                f"{e['local_ms_per_step']:8.3f} local ({extra:+.3f}); one all-reduce of {e['step_bytes']} B: "
                f"{e['allreduce_s'] * 1e3:.3f} ms")
    return (f"{head}  {e['n'] / e['global_median_s']:12,.0f} points/s across {e['processes']} processes "
            f"({e['n'] // e['processes'] / e['local_median_s']:12,.0f} points/s of one process's part alone)")


def write(args, results) -> None:
    import jax

    import _provenance

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"throughput-{jax.default_backend()}-processes{args.processes}.json")
    data = dict(environment=dict(backend=jax.default_backend(), processes=jax.process_count(),
                                 devices=jax.device_count(), local_devices=jax.local_device_count(),
                                 jax=jax.__version__),
                provenance=_provenance.collect([sys.argv[0], *args.argv]), results=results)
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
    print(f"\nwrote {out}", flush=True)
