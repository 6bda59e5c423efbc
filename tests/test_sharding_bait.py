"""BAIT on a pool sharded across devices: the same picks as on one device, the heavy work sharded.

The checks run in a subprocess with 8 host CPU devices (``XLA_FLAGS`` must be set before JAX
starts; this process has one device): tests/_sharded_bait_checks.py holds them, once in the
default float32 and once (a subset) in float64 with x64 on; the fast tier runs a small subset.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

CHECKS = pathlib.Path(__file__).with_name("_sharded_bait_checks.py")
ALL = ("factors", "factors_labeled", "dense", "other_meshes", "exhausted_shards", "zero_fisher_ties",
       "under_user_jit", "bait", "bait_regression", "hlo_sharded", "bad_input", "sum_zero_columns")
X64 = ("factors_labeled", "dense")
# The fast tier's subset: picks on a sharded pool and labeled set equal one device's, and bad
# layouts are refused (the full list runs with the slow tests).
FAST = ("dense", "bad_input")


def _run(*flags: str) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    out = subprocess.run([sys.executable, str(CHECKS), *flags], env=env, capture_output=True, text=True,
                         timeout=900, cwd=CHECKS.parent.parent)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def float32_results():
    return _run()


@pytest.fixture(scope="module")
def float64_results():
    return _run("--x64")


def test_sharded_bait_fast_subset():
    results = _run("--only=" + ",".join(FAST))
    for check in FAST:
        assert results.get(check) == "ok", results.get(check, f"check {check!r} did not run")


@pytest.mark.slow
@pytest.mark.parametrize("check", ALL)
def test_sharded_bait_float32(float32_results, check):
    assert float32_results.get(check) == "ok", float32_results.get(check, f"check {check!r} did not run")


@pytest.mark.slow
@pytest.mark.parametrize("check", X64)
def test_sharded_bait_float64(float64_results, check):
    assert float64_results.get(check) == "ok", float64_results.get(check, f"check {check!r} did not run")


@pytest.mark.slow
def test_every_check_is_collected(float32_results):
    assert set(float32_results) == set(ALL)
