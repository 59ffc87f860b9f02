"""Faults a shared cluster inflicts: a SIGKILLed driver, many trials writing at once."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from studies import grid_study, kill_tree, trial_runs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def write(tmp_path: Path, root: Path, name: str, seeds, epochs: int, steps: int, cpu: float = 1.0) -> Path:
    return grid_study(tmp_path, root, name, seeds, epochs, steps, volume=10, resources={"cpu": cpu})


def test_sigkilled_driver_resumes_without_rerunning_or_duplicating(tmp_path, synthetic_root):
    work = tmp_path / "w"
    cfg = write(tmp_path, synthetic_root, "killed", range(4), epochs=4, steps=25)
    cmd = [sys.executable, "-m", "study.cli", "run", str(cfg), "--workdir", str(work), "--quiet",
           "--max-concurrent", "2"]
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    grid = work / "ray" / "killed" / "grid"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # until one trial has finished and another is mid-way
            assert proc.poll() is None, log.read_text()[-3000:]
            # read MLflow only once the Tuner started: the driver has set up the store by then
            # (two processes creating a new SQLite store at once may collide)
            if grid.exists():
                runs = trial_runs(work, "killed")
                if (runs["status"] == "FINISHED").sum() >= 1 and (runs["status"] == "RUNNING").sum() >= 1:
                    break
            time.sleep(0.5)
    finally:
        kill_tree(proc.pid)  # the driver first, then the local Ray it started (by process id)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = trial_runs(work, "killed")
    assert "RUNNING" in set(before["status"]), log.read_text()[-3000:]  # a killed driver cannot close its runs
    assert "FINISHED" in set(before["status"]), log.read_text()[-3000:]  # so "not re-run" below checks something

    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    after = trial_runs(work, "killed")
    assert len(after) == 4 and after["tags.trial_id"].is_unique  # reopened, never duplicated
    assert set(after["status"]) == {"FINISHED"}
    for _, run in before[before["status"] == "FINISHED"].iterrows():  # finished trials not re-run
        assert after.loc[after["run_id"] == run["run_id"], "end_time"].iloc[0] == run["end_time"]
    for run_id in after["run_id"]:
        steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "train_loss")]
        assert sorted(set(steps)) == [0, 1, 2, 3]

    # Ray's saved state cut short (as a full disk leaves it): resumed from the stage's last good copy
    state = sorted(grid.glob("experiment_state-*.json"))[-1]
    state.write_bytes(state.read_bytes()[:100])
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert f"{state.name}): resumed from its last good copy" in again.stdout
    final = trial_runs(work, "killed")
    assert len(final) == 4 and set(final["status"]) == {"FINISHED"} and final["tags.trial_id"].is_unique


def test_sixteen_concurrent_trials_one_sqlite_store(tmp_path, synthetic_root):
    work = tmp_path / "w"
    cfg = write(tmp_path, synthetic_root, "many", range(16), epochs=2, steps=3, cpu=0.125)
    done = subprocess.run([sys.executable, "-m", "study.cli", "run", str(cfg), "--workdir", str(work), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "[sweep]" not in done.stdout and not (work / "ray" / "many" / "sweep").exists()  # nothing swept: no stage
    runs = trial_runs(work, "many")
    assert len(runs) == 16 and set(runs["status"]) == {"FINISHED"}
    client = mlflow.MlflowClient()
    for run_id in runs["run_id"]:
        for key in ("train_loss", "val_acc", "val_auc"):
            assert [m.step for m in client.get_metric_history(run_id, key)] == [0, 1], key
    for key in ("metrics.test_acc", "metrics.test_auc", "metrics.test_eer", "metrics.test_ap"):
        assert runs[key].notna().all(), key
