"""A study with grid arms shows each arm's validation curves in its report: per arm a panel, a
line per method, the mean over the cell's runs after each epoch (what tells a recipe still
rising at the end of its budget from one that has flattened)."""
from __future__ import annotations

import pandas as pd
import pytest

from analysis.report import build_report
from analysis.runs import tracking_uri
from test_analysis_store import Writer, acc_auc


def test_each_arms_validation_curves_are_drawn_from_its_runs(tmp_path):
    uri = tracking_uri(tmp_path)
    w = Writer(uri, "arms")
    # flips flatten (0.6, 0.7, 0.7), crops + mixup still rise (0.5, 0.6, 0.7): seeds 0 and 1 are
    # 0.02 apart, so each epoch's mean sits between them
    curves = {"flip": (0.6, 0.7, 0.7), "fm": (0.5, 0.6, 0.7)}
    for arm, curve in curves.items():
        for method in ("vt", "kd"):
            for seed in (0, 1):
                history = [{"val_auc": v + 0.02 * seed, "train_loss": 1.0} for v in curve]
                w.trial("grid", "synthetic", "r->test_resnet", method, "100", seed, "test_resnet",
                        acc_auc(0.7 + 0.01 * seed), history=history, extra={"arm": arm})
    rep = build_report(uri, "arms", tmp_path / "out", formats=("md", "csv", "png"))
    assert (tmp_path / "out" / "curves_arms.png").stat().st_size > 5000
    data = pd.read_csv(tmp_path / "out" / "curves_arms.csv")
    assert set(data["source"]) == {"synthetic · flip", "synthetic · fm"}
    fm_kd = data[(data["source"] == "synthetic · fm") & (data["method"] == "kd")].sort_values("step")
    assert fm_kd["mean"].tolist() == pytest.approx([0.51, 0.61, 0.71]) and set(fm_kd["n"]) == {2}
    assert "Validation curves per arm" in (tmp_path / "out" / "report.md").read_text()
    assert any(p.name == "curves_arms.png" for p in rep.files)


def test_a_study_without_arms_draws_no_arm_curves(tmp_path):
    uri = tracking_uri(tmp_path)
    w = Writer(uri, "plain")
    for seed in (0, 1):
        w.trial("grid", "synthetic", "r->test_resnet", "kd", "100", seed, "test_resnet", acc_auc(0.7),
                history=[{"val_auc": 0.6}])
    build_report(uri, "plain", tmp_path / "out", formats=("md", "png"))
    assert not (tmp_path / "out" / "curves_arms.png").exists()


def test_a_recipe_the_budget_stage_found_still_improving_is_marked_in_its_arm_only():
    from analysis.report import mark_budget_unconverged
    cells = pd.DataFrame({"source": ["s · flip", "s · fm", "s · fm", "s"], "method": ["kd", "kd", "vt", "kd"],
                          "volume": ["100"] * 4, "unconverged": [False] * 4})
    choices = [{"method": "kd", "arm": "fm", "volume": 100, "converged": False, "steps": 1200},
               {"method": "kd", "arm": "flip", "volume": 100, "converged": True, "steps": 600}]
    marked = mark_budget_unconverged(cells, choices)
    assert marked["unconverged"].tolist() == [False, True, False, False]
    plain = mark_budget_unconverged(cells, [{"method": "kd", "volume": 100, "converged": False}])
    assert plain["unconverged"].tolist() == [False, False, False, True]  # no arm: the study without arms
