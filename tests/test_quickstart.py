"""The README's main job: `study run` with no argument, then `study report` on its output."""
import subprocess
import sys

import mlflow
import pytest
import yaml

from study.cli import CONFIG_DIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_quickstart_then_report(tmp_path):
    work = tmp_path / "runs"
    run = subprocess.run([sys.executable, "-m", "study.cli", "run", "--workdir", str(work), "--quiet"],
                         capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "study quickstart: done" in run.stdout
    # it ends with the paired comparisons, in plain words
    assert "paired comparisons of test accuracy" in run.stdout
    assert "differences resolved (Holm-adjusted p < 0.05 across" in run.stdout
    assert "warning: teacher" not in run.stdout  # the teacher clearly beats its best student

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    frame = mlflow.search_runs(experiment_names=["quickstart"])
    parent = frame[frame["tags.kind"] == "parent"]
    kids = frame[frame["tags.kind"] == "trial"]
    assert list(parent["status"]) == ["FINISHED"]
    assert set(kids["status"]) == {"FINISHED"}  # nothing left RUNNING
    assert set(kids["tags.stage"]) == {"teachers", "sweep", "grid", "ablations"}
    grid = kids[kids["tags.stage"] == "grid"]
    students = yaml.safe_load((CONFIG_DIR / "quickstart.yaml").read_text())["students"]
    per_cell = len(students.get("draws") or [None]) * len(students["seeds"])  # draws x seeds
    assert per_cell >= 3  # enough runs to resolve an effect
    cells = len(students["methods"]) * len(students["volumes"]) * per_cell
    assert len(grid) == cells and grid["metrics.test_acc"].notna().all()
    assert set(grid["tags.hparams_from"]) == {"sweep"}  # every method swept, on the same budget
    sweep = kids[kids["tags.stage"] == "sweep"]
    cfg = yaml.safe_load((CONFIG_DIR / "quickstart.yaml").read_text())
    trials = cfg["sweep"]["trials"]  # the same budget for every method of the grid
    assert sweep.groupby("tags.method").size().to_dict() == {m: trials for m in students["methods"]}
    assert grid["tags.test_rows"].nunique() == 1  # one test set for every trial
    teacher = kids[kids["tags.stage"] == "teachers"]
    assert teacher["metrics.test_acc"].iloc[0] > 0.7  # the teacher learned the synthetic task

    out = tmp_path / "report"
    rep = subprocess.run([sys.executable, "-m", "study.cli", "report", "--workdir", str(work),
                          "--study", "quickstart", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    text = (out / "report.md").read_text()
    assert "synthetic" in text and "CKD" in text and "## Teachers" in text and "clearly stronger" in text
    assert "the same rows for every grid trial" in text
    for png in ("fig2_data_efficiency.png", "fig4_k.png"):
        assert (out / png).stat().st_size > 5000
