"""Every benchmark of issue 5 runs in its --smoke mode and ends with a parsable RESULT line.

Each script runs in a subprocess (they set torch's thread count, start Ray or spawn
workers: nothing may leak into the test process). Only the output's shape is checked,
never a timing.
"""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def run_script(name: str, *args: str, timeout: float = 600) -> dict[str, float]:
    """Run benchmarks/<name>.py and return its RESULT line as {key: value}."""
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert len(lines) == 1, f"{name}: expected one RESULT line, got {lines}"
    assert proc.stdout.rstrip().splitlines()[-1] == lines[0], f"{name}: RESULT is not the last line"
    out = {}
    for item in lines[0].split()[1:]:
        key, _, value = item.partition("=")
        assert key and value, f"{name}: bad RESULT item {item!r}"
        out[key] = float(value)
    return out


def check(result: dict[str, float], keys: list[str]) -> None:
    missing = [k for k in keys if k not in result]
    assert not missing, f"RESULT lacks {missing}: {result}"
    assert all(math.isfinite(result[k]) and result[k] >= 0 for k in keys), result


def test_ckd_step_smoke():
    result = run_script("ckd_step", "--smoke")
    check(result, ["ckd_fraction_k32", "ckd_fraction_k128"])
    assert all(result[k] < 1 for k in result)  # a share of the step


def test_data_throughput_smoke(tmp_path):
    result = run_script("data_throughput", "--smoke", "--root", str(tmp_path / "data"))
    check(result, ["decode_ips", "memory_ips", "model_ips_test_resnet", "model_ips_mobilenetv3_small_050",
                   "decode_ips_w1", "decode_ips_w2", "decode_ips_w4", "stream_ips_w0", "stream_ips_w1",
                   "stream_ips_w2", "stream_model_ips_test_resnet", "stream_model_ips_mobilenetv3_small_050"])


def test_distill_cost_smoke(tmp_path):
    result = run_script("distill_cost", "--smoke", "--threads", "1", "--root", str(tmp_path / "data"))
    check(result, ["kd_cached", "rkd_cached", "ckd_cached", "kd_uncached", "ckd_uncached", "kd_live_aug",
                   "kd_live_aug_vs_vt_aug", "at_live"])  # live_aug: KD with crops and mixup, its teacher live; at_live: maps


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would run the full benchmark")
def test_gpu_throughput_without_cuda_says_so():
    assert run_script("gpu_throughput") == {"cuda": 0.0}


@pytest.mark.slow
def test_gpu_throughput_smoke_on_cpu():
    result = run_script("gpu_throughput", "--smoke", "--device", "cpu")
    check(result, ["cuda", "engine_ips_test_resnet", "bare_ips_test_resnet", "ratio_test_resnet",
                   "trials_per_hour_1", "trials_per_hour_2", "share_speedup"])
    assert result["cuda"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_search_efficiency_smoke(tmp_path):
    result = run_script("search_efficiency", "--smoke", "--root", str(tmp_path / "data"))
    check(result, [f"{kind}_{what}" for what in ("best", "epochs") for kind in ("tpe_asha", "random", "grid")]
          + ["seeds"])
    assert result["seeds"] == 1  # --smoke: one searcher seed (the default is 3): no spread to give
    assert all(math.isnan(result[f"{kind}_best_std"]) for kind in ("tpe_asha", "random", "grid"))
    assert all(0 <= result[f"{kind}_best"] <= 1 for kind in ("tpe_asha", "random", "grid"))
    # --smoke: 2 trials of 2 epochs each; ASHA may stop one after its 1-epoch grace period
    assert result["random_epochs"] == result["grid_epochs"] == 4
    assert 3 <= result["tpe_asha_epochs"] <= 4


@pytest.mark.slow
def test_harness_overhead_smoke():
    result = run_script("harness_overhead", "--smoke", timeout=300)
    check(result, ["throughput_ratio", "overhead_s_per_trial", "stage_start_s", "steady_overhead_s_per_trial",
                   "export_s_per_trial", "lazy_export_s"])
    assert result["export_s_per_trial"] == 0  # grid trials leave their MLflow models to the first use
    assert result["lazy_export_s"] > 0  # which it times once


@pytest.mark.slow
def test_sweep_stage_smoke():
    result = run_script("sweep_stage", "--smoke", timeout=300)
    check(result, ["one_tuner_s", "per_cell_tuners_s", "ratio"])
    assert "saved_s_per_cell" in result  # may be negative on a noisy machine: only its presence is checked


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_efficiency_grid_spans_the_space_with_as_many_points_as_trials():
    from search_spaces import get_space

    se = load("search_efficiency")
    dists, constants = se.space_distributions(get_space("ckd", "ckd", 100))
    assert list(dists)[:3] == ["tau", "lam", "k"] and constants == {"method": "ckd"}
    for trials in (1, 2, 7, 12, 27):
        points = se.grid_points(dists, ["tau", "lam", "k"], trials)
        assert math.prod(len(v) for v in points.values()) == trials
        assert all(0.01 <= t <= 1.0 for t in points["tau"]) and all(0.01 <= v <= 10 for v in points["lam"])
        assert set(points["k"]) <= set(dists["k"].choices)
    assert se.grid_points(dists, ["tau", "lam", "k"], 12) == {
        "tau": [0.02154, 0.1, 0.4642], "lam": [0.05623, 1.778], "k": [16, 64]}
    assert se.grid_points(dists, ["tau", "lam", "k"], 1)["k"] == [32]  # the centre choice


@pytest.mark.slow
def test_paper_scale_smoke():
    result = run_script("paper_scale", "--smoke", timeout=300)
    check(result, ["rss_growth_4x", "later_prep_fraction", "eval_ratio", "cache_gb", "trials_killed"])
    assert result["cache_gb"] > 0 and result["trials_killed"] == 0


def test_scoring_cost_smoke():
    result = run_script("scoring_cost", "--smoke", "--threads", "1")
    check(result, ["test_resnet_s_per_1000"])
    assert result["test_resnet_s_per_1000"] > 0
