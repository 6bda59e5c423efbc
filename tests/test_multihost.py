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
TIMEOUT = 180

SELECTORS = ["kmeans_pp_factored", "kmeans_pp_dense", "k_center_greedy", "k_center_greedy_labeled", "fisher_greedy",
             "fisher_greedy_labeled", "fisher_greedy_dense_rows", "volume_stream_dense", "volume_stream_fisher_rank2",
             "volume_stream_rate", "typiclust", "probcover", "stochastic_top_k"]
FRONT_DOORS = ["badge", "bait", "bait_labeled", "coreset", "coreset_labeled", "margin", "entropy", "least_confidence",
               "random_sample", "vessal", "vessal_stream", "bald", "sampler_badge", "sampler_bait", "sampler_margin"]
PER_PROCESS = ["global_pool_batches_kmeans_pp"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def spawn(mode: str, processes: int, devices: int) -> list[dict]:
    """Run the worker as ``processes`` processes of ``devices`` CPU devices each; their results."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=str(HERE.parent))
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [pathlib.Path(tmp, f"{i}.json") for i in range(processes)]
        logs = [open(pathlib.Path(tmp, f"{i}.log"), "w+") for i in range(processes)]
        procs = [subprocess.Popen([sys.executable, str(WORKER), mode, str(i), str(processes), str(port), str(out)],
                                  env=env, cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT)
                 for i, (out, log) in enumerate(zip(outs, logs))]
        try:
            for proc in procs:
                proc.wait(timeout=TIMEOUT)
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
        assert not hung, f"{mode}: processes {hung} still running after {TIMEOUT} s:\n" + "\n".join(tails)
        assert all(proc.returncode == 0 for proc in procs), "\n".join(tails)
        return [json.loads(out.read_text()) for out in outs]


@pytest.fixture(scope="module")
def two_processes():
    return spawn("picks", 2, 2)


@pytest.fixture(scope="module")
def four_devices():
    return spawn("picks", 1, 4)[0]


def test_the_workers_see_two_processes_of_two_devices(two_processes, four_devices):
    for results in two_processes:
        assert results["_devices"] == {"processes": 2, "devices": 4, "local_devices": 2}
    assert four_devices["_devices"] == {"processes": 1, "devices": 4, "local_devices": 4}


@pytest.mark.parametrize("name", SELECTORS + FRONT_DOORS + PER_PROCESS)
def test_two_processes_pick_as_one_device_and_as_four_devices(two_processes, four_devices, name):
    first, second = (results[name] for results in two_processes)
    for results in (first, second, four_devices[name]):
        assert "error" not in results, results["error"]
    assert first["global"] == second["global"], "the processes returned different picks"
    assert first["global"] == first["one_device"], "two processes differ from one device"
    assert four_devices[name]["global"] == first["one_device"], "four devices differ from one device"
    picks = first["global"]
    assert len(set(picks)) == len(picks) and all(isinstance(i, int) for i in picks)


def test_every_check_of_the_worker_is_tested(two_processes):
    assert set(two_processes[0]) == set(SELECTORS + FRONT_DOORS + PER_PROCESS + ["local_indices", "_devices"])


def test_vessal_streams_the_processes_parts_in_process_major_order(two_processes):
    # The stream is the global row order: process 0's part, then process 1's. With a rate, the
    # kept points come back in stream order; VeSSAL's 1200-point stream (600 per process, one
    # internal chunk of 1024 spanning both) keeps points of both parts, the same as one device
    # streaming the concatenation (the parametrized test above).
    rate_picks = two_processes[0]["volume_stream_rate"]["global"]
    assert rate_picks == sorted(rate_picks)
    picks = two_processes[0]["vessal_stream"]["global"]
    assert any(i < 600 for i in picks) and any(i >= 600 for i in picks), picks


def test_local_indices_map_picks_to_each_process_part(two_processes):
    for results in two_processes:
        got = results["local_indices"]
        assert got["process"] == got["expected_process"]
        assert got["local"] == got["expected_local"]
        assert set(got["process"]) == {0, 1}


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
