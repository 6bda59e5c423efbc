"""Active learning over a pool spread across several processes (``jax.distributed``).

Each process holds its own part of the unlabeled pool (here: a slice of scikit-learn's digits,
standing in for the files on that host's disk), ``aljax.global_pool`` assembles the parts into
one pool sharded along the example axis over every process's devices, and the selectors run on
it: the picks are the same array on every process, and the same as one process holding the
whole pool. Each process then maps the picks back to its own rows with ``aljax.local_indices``.

The same script runs

* as 2 local processes on one CPU machine (2 CPU devices each, gloo collectives), one command::

      python examples/multi_host.py --local-processes 2

* on a TPU pod slice, under SLURM (``srun python examples/multi_host.py``), or on any cluster
  where ``jax.distributed.initialize()`` detects the processes by itself: run it on every host
  with ``--distributed``;
* on one multi-GPU node as one process over all its GPUs: ``python examples/multi_host.py``;
* with explicit coordinates on every host: ``python examples/multi_host.py --coordinator
  HOST:PORT --processes N --process-id I``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys


def spawn_local(processes: int, devices: int) -> int:
    """Run this script as ``processes`` local processes of ``devices`` CPU devices each."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    children = [subprocess.Popen([sys.executable, __file__, "--coordinator", f"localhost:{port}", "--processes",
                                  str(processes), "--process-id", str(i), "--cpu-collectives"], env=env)
                for i in range(processes)]
    return max(child.wait() for child in children)


def main(args) -> None:
    import jax

    if args.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.coordinator:
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.processes,
                                   process_id=args.process_id)
    elif args.distributed:
        jax.distributed.initialize()   # TPU pods, SLURM, ...: the cluster is detected

    import flax.linen as nn
    import jax.numpy as jnp
    import numpy as np
    import optax
    from sklearn.datasets import load_digits

    import aljax

    me, processes = jax.process_index(), jax.process_count()

    def say(*parts):
        print(f"[process {me}/{processes}]", *parts, flush=True)

    # Every process: the same labeled seed set and model; its own slice of the unlabeled pool.
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    labeled_x, labeled_y, unlabeled = x[:40], y[:40], x[40:]
    per_process = len(unlabeled) // processes
    per_process -= per_process % jax.local_device_count()   # equal parts, a multiple of the local devices
    mine = unlabeled[me * per_process:(me + 1) * per_process]

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(nn.relu(nn.Dense(64)(x)))

    model = MLP()
    params = model.init(jax.random.key(0), labeled_x[:1])
    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
            model.apply(p, labeled_x), labeled_y).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    for _ in range(100):
        params, opt_state, loss = step(params, opt_state)
    say(f"trained on {len(labeled_x)} labels, loss {float(loss):.3f}; my part of the pool: {len(mine)} rows")

    # 1. The raw inputs as one global pool: every front door takes it.
    pool = aljax.global_pool(mine)
    say(f"global pool {pool.shape} over {jax.device_count()} devices of {processes} process(es)")
    for name in ("badge", "bait", "margin", "vessal"):
        picks = getattr(aljax, name)(params, model.apply, pool, 10, key=0)
        process, local = aljax.local_indices(picks, pool)
        say(f"{name:7s} global picks {np.asarray(picks.addressable_data(0)).tolist()}; mine (local rows): "
            f"{local[process == me].tolist()}")

    # 2. Each process embeds its own batches (read from its own disk), only the embedding is kept.
    batches = (mine[i:i + 128] for i in range(0, len(mine), 128))
    embedding = aljax.global_pool(batches, map_fn=lambda b: aljax.last_layer_embedding(params, model.apply, b))
    picks = aljax.kmeans_pp(embedding, 10, key=0)
    say(f"kmeans_pp on the per-process embedding: {np.asarray(picks.addressable_data(0)).tolist()}")
    assert (jnp.asarray(picks.addressable_data(0)) == aljax.badge(params, model.apply, pool, 10, key=0)
            .addressable_data(0)).all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-processes", type=int, default=0, help="spawn this many local CPU processes")
    parser.add_argument("--devices-per-process", type=int, default=2, help="CPU devices of each spawned process")
    parser.add_argument("--distributed", action="store_true", help="jax.distributed.initialize() with auto-detection")
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--cpu-collectives", action="store_true", help="gloo collectives between CPU processes")
    args = parser.parse_args()
    if args.local_processes:
        sys.exit(spawn_local(args.local_processes, args.devices_per_process))
    main(args)
