"""Several hosts: pools spread over two processes (``jax.distributed``, two CPU devices each, gloo
collectives on localhost) give the same picks as one process with four devices and as one device
holding the whole pool, on every process; bad inputs raise the same error on every process.

The work runs in tests/_multihost_worker.py: one spawn of two processes runs every selector and
front door (``picks``), one the failure paths (``failures``), and one four-device process the
``picks`` again. Each spawn is killed after ``TIMEOUT`` seconds: a process left waiting in a
collective fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
WORKER = HERE / "_multihost_worker.py"
TIMEOUT = 300   # seconds per spawn: generous for a busy 2-core machine; a hang fails, not blocks

SELECTORS = ["kmeans_pp_factored", "kmeans_pp_dense", "k_center_greedy", "k_center_greedy_labeled", "fisher_greedy",
             "fisher_greedy_labeled", "fisher_greedy_dense_rows", "volume_stream_dense", "volume_stream_fisher_rank2",
             "volume_stream_rate", "typiclust", "probcover", "stochastic_top_k", "margin_round_robin"]
FRONT_DOORS = ["badge", "bait", "bait_labeled", "coreset", "coreset_labeled", "margin", "entropy", "least_confidence",
               "random_sample", "vessal", "vessal_stream", "bald", "batch_bald", "cluster_margin", "sampler_badge",
               "sampler_bait", "sampler_margin"]
PER_PROCESS = ["global_pool_batches_kmeans_pp"]   # a pool given per process as batches (always run)
# The fast tier: one of each kind (and fisher_greedy, which used to fetch a global array); the
# rest compiles for minutes on a small CPU and runs with the slow tests.
FAST = ["kmeans_pp_factored", "fisher_greedy", "k_center_greedy", "volume_stream_rate", "margin", "badge"]
SLOW = [name for name in SELECTORS + FRONT_DOORS if name not in FAST]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def spawn(mode: str, processes: int, devices: int, only=(), timeout: float = TIMEOUT) -> list[dict]:
    """Run the worker as ``processes`` processes of ``devices`` CPU devices each (the checks
    ``only``, all when empty); their results. Every process is killed after ``timeout`` s."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=str(HERE.parent), ALJAX_WORKER_ONLY=",".join(only),
               ALJAX_WORKER_TIMEOUT=str(timeout - 10))
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [pathlib.Path(tmp, f"{i}.json") for i in range(processes)]
        logs = [open(pathlib.Path(tmp, f"{i}.log"), "w+") for i in range(processes)]
        procs = [subprocess.Popen([sys.executable, str(WORKER), mode, str(i), str(processes), str(port), str(out)],
                                  env=env, cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT)
                 for i, (out, log) in enumerate(zip(outs, logs))]
        try:
            for proc in procs:
                proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            hung = [proc.pid for proc in procs if proc.poll() is None]
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        tails = []
        for log in logs:
            log.seek(0)
            tails.append(log.read()[-3000:])
            log.close()
        assert not hung, f"{mode}: processes {hung} still running after {timeout} s:\n" + "\n".join(tails)
        assert all(proc.returncode == 0 for proc in procs), "\n".join(tails)
        return [json.loads(out.read_text()) for out in outs]


def spawn_both(only, timeout):
    """The checks ``only`` on two processes × two devices and on one process of four devices
    (which also computes the one-device references), run at the same time."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        two = pool.submit(spawn, "picks", 2, 2, only, timeout)
        four = pool.submit(spawn, "picks", 1, 4, only, timeout)
        return two.result(), four.result()[0]


@pytest.fixture(scope="module")
def fast_runs():
    return spawn_both(FAST, TIMEOUT)


@pytest.fixture(scope="module")
def slow_runs():
    return spawn_both(SLOW, 3 * TIMEOUT)   # minutes of compilation on a small, busy CPU


def _same_picks(runs, name):
    two_processes, four_devices = runs
    first, second = (results[name] for results in two_processes)
    for results in (first, second, four_devices[name]):
        assert "error" not in results, results["error"]
    one_device = four_devices[name]["one_device"]
    assert first["global"] == second["global"], "the processes returned different picks"
    assert first["global"] == one_device, f"two processes {first['global']} != one device {one_device}"
    assert four_devices[name]["global"] == one_device, "four devices differ from one device"
    assert len(set(one_device)) == len(one_device) and all(isinstance(i, int) for i in one_device)


def test_the_workers_see_two_processes_of_two_devices(fast_runs):
    two_processes, four_devices = fast_runs
    for results in two_processes:
        assert results["_devices"] == {"processes": 2, "devices": 4, "local_devices": 2}
    assert four_devices["_devices"] == {"processes": 1, "devices": 4, "local_devices": 4}
    assert set(two_processes[0]) == set(FAST + PER_PROCESS + ["local_indices", "_devices", "_checks", "collectives"])


@pytest.mark.parametrize("name", FAST + PER_PROCESS)
def test_two_processes_pick_as_one_device_and_as_four_devices(fast_runs, name):
    _same_picks(fast_runs, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_every_selector_and_front_door_across_two_processes(slow_runs, name):
    _same_picks(slow_runs, name)


def test_vessal_streams_the_processes_parts_in_process_major_order(fast_runs):
    # The stream is the global row order: process 0's part, then process 1's; with a rate the
    # kept points come back in stream order, the same as one device streaming the concatenation.
    picks = fast_runs[0][0]["volume_stream_rate"]["global"]
    assert picks == sorted(picks)
    assert any(i < 64 for i in picks) and any(i >= 64 for i in picks), picks


@pytest.mark.slow
def test_vessal_stream_chunk_spans_the_processes(slow_runs):
    # 1200 points, 600 per process: the first internal chunk (1,024 points) holds rows of both.
    picks = slow_runs[0][0]["vessal_stream"]["global"]
    assert any(i < 600 for i in picks) and any(i >= 600 for i in picks), picks


def test_local_indices_map_picks_to_each_process_part(fast_runs):
    for results in fast_runs[0]:
        got = results["local_indices"]
        assert got["process"] == got["expected_process"]
        assert got["local"] == got["expected_local"]
        assert set(got["process"]) == {0, 1}


def test_the_selection_kernel_moves_no_pool_sized_array_between_processes(fast_runs):
    # BADGE's kernel compiled on the global pool of two processes: collectives there are (the
    # picked row, each device's best), none as large as one device's 32 rows.
    for name, found in fast_runs[0][0]["collectives"].items():
        assert found, f"{name}: no collectives at all; was the kernel partitioned?"
        big = [c for c in found if c[1] >= 32]
        assert not big, f"{name}: collectives moving pool-sized arrays: {big}"


def test_every_check_of_the_worker_is_listed(fast_runs):
    assert sorted(fast_runs[1]["_checks"]) == sorted(SELECTORS + FRONT_DOORS)


# ------------------------------------------------------------------------------- failure paths

@pytest.fixture(scope="module")
def failures():
    return spawn("failures", 2, 2)


@pytest.mark.parametrize("case, error, phrase", [
    ("nan_kmeans_pp", "ValueError", "NaN/Inf"),
    ("nan_k_center_greedy", "ValueError", "NaN/Inf"),
    ("nan_fisher_greedy", "ValueError", "NaN/Inf"),
    ("nan_volume_stream", "ValueError", "NaN/Inf"),
    ("nan_badge", "ValueError", "NaN/Inf"),
    ("k_too_large_kmeans_pp", "ValueError", "from a pool of 128"),
    ("k_too_large_fisher_greedy", "ValueError", "from a pool of 128"),
    ("k_too_large_badge", "ValueError", "from a pool of 128"),
    ("k_too_large_vessal", "ValueError", "128"),
    ("uneven_local_sizes", "ValueError", "uneven sizes process 0: 30, process 1: 34"),
    ("local_size_not_divisible", "ValueError", "divisible"),
    ("parts_differ", "ValueError", "differ between processes"),
])
def test_bad_input_raises_the_same_error_on_every_process(failures, case, error, phrase):
    first, second = (results[case] for results in failures)
    assert first.startswith(error + ": "), first
    assert phrase in first, first
    if case != "parts_differ":   # that message names this process's own trailing shape
        assert first == second
    else:
        assert second.startswith(error + ": ") and phrase in second, second


def test_a_part_failing_on_one_process_raises_there_and_names_it_on_the_others(failures):
    first, second = (results["one_process_has_no_batches"] for results in failures)
    assert first.startswith("ValueError: ") and "an error on process 1" in first, first
    assert second.startswith("ValueError: ") and "empty iterable" in second, second


def test_the_processes_are_still_in_step_after_the_errors(failures):
    first, second = (results["still_in_step"] for results in failures)
    assert first.startswith("ok: ") and first == second


def test_local_indices_on_one_process_and_its_checks():
    import aljax

    pool = aljax.global_pool(np.arange(10.0, dtype=np.float32).reshape(5, 2))
    process, local = aljax.local_indices(np.array([4, 0, 2]), pool)
    np.testing.assert_array_equal(process, [0, 0, 0])
    np.testing.assert_array_equal(local, [4, 0, 2])
    with pytest.raises(ValueError, match=r"aljax.local_indices.*indices in \[0, 5\)"):
        aljax.local_indices(np.array([5]), pool)
    with pytest.raises(TypeError, match="aljax.local_indices.*integer"):
        aljax.local_indices(np.array([0.5]), pool)


# ------------------------------------------------------------------------------- the benchmark

@pytest.mark.slow
def test_throughput_runs_across_two_processes(tmp_path):
    out = tmp_path / "processes.json"
    proc = subprocess.run([sys.executable, str(HERE.parent / "benchmarks" / "throughput.py"), "--processes", "2",
                           "--sizes", "tiny", "--repeats", "1", "--algorithms", "kmeans_pp", "--out", str(out)],
                          capture_output=True, text=True, cwd=HERE.parent, timeout=3 * TIMEOUT,
                          env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["environment"]["processes"] == 2 and data["environment"]["devices"] == 4
    (entry,) = data["results"]
    assert entry["algorithm"] == "kmeans_pp" and entry["step_bytes"] == 4 * (10 + 32 + 1)
    assert entry["global_ms_per_step"] > 0 and entry["local_ms_per_step"] > 0 and entry["allreduce_s"] > 0
    assert "ms/step across 2 processes" in proc.stdout
