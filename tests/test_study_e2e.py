"""End-to-end `study run` in a subprocess: a real local Ray, a real SQLite MLflow store."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STAGES = {"teachers", "sweep", "grid", "ablations"}


def write_config(path: Path, root: Path, name: str, **changes) -> Path:
    cfg = {
        "name": name,
        # teachers stream their split from disk with DataLoader workers inside the Ray actors
        "data": {"kind": "synthetic", "root": str(root), "num_images": 480, "size": 32, "seed": 0,
                 "image_size": 32, "stream": True},
        "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 2, "batch_size": 64}}],
        "students": {"pairs": ["r->test_efficientnet"], "methods": ["vt", "kd", "rkd", "ckd"],
                     "volumes": [10, 20], "seeds": [0], "hparams": {"epochs": 2, "min_steps": 4}},
        "sweep": {"spaces": {"ckd": "ckd"}, "trials": 2, "volumes": [10], "max_eval_per_class": 30},
        "ablations": {"k_values": [4], "k_volumes": [10], "efficiency_volumes": [10]},
        "grid": {"untuned": ["vt", "kd", "rkd"]},  # only CKD is swept here (time): the others are marked
        "resources": {"cpu": 1, "loader_workers": 2},
    }
    for key, value in changes.items():
        cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def study(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.cli", *args, "--quiet"], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600, **kw)


def runs(workdir: Path, name: str):
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[name])


def children(frame):
    return frame[frame["tags.kind"] == "trial"]


def test_study_run_records_every_stage_and_reuses_teachers(tmp_path, synthetic_root):
    work = tmp_path / "w"
    cfg = write_config(tmp_path / "s.yaml", synthetic_root, "e2e")
    done = study("run", str(cfg), "--workdir", str(work))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "mlflow ui --backend-store-uri" in done.stdout and "study report" in done.stdout

    frame = runs(work, "e2e")
    parent = frame[frame["tags.kind"] == "parent"]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED"
    kids = children(frame)
    assert set(kids["status"]) == {"FINISHED"}
    assert set(kids["tags.stage"]) == STAGES
    assert (kids["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    assert kids["tags.trial_id"].is_unique
    # grid: 4 methods x 2 volumes x 1 seed, with test metrics, params and tags
    grid = kids[kids["tags.stage"] == "grid"]
    assert len(grid) == 8
    for col in ("metrics.test_acc", "metrics.test_auc", "metrics.test_eer", "metrics.test_ap",
                "metrics.test_video_auc", "metrics.val_acc", "params.lam",
                "params.batch_size", "params.lr", "tags.study", "tags.method",
                "tags.teachers", "tags.student", "tags.volume", "tags.seed", "tags.source",
                "tags.config_hash"):
        assert grid[col].notna().all(), col
    # a method's own options are logged for its runs only
    own = {"ckd": ("params.tau", "params.k"), "kd": ("params.kd_t",), "rkd": ("params.rkd_angle_w",)}
    for method, cols in own.items():
        for col in cols:
            assert grid.loc[grid["tags.method"] == method, col].notna().all(), (method, col)
            assert grid.loc[grid["tags.method"] != method, col].isna().all(), (method, col)
    assert not any(c.startswith("metrics.config") or c.startswith("metrics.time_") for c in frame.columns)
    # the sweep's best CKD values reached the grid's CKD cells
    sweep = kids[kids["tags.stage"] == "sweep"]
    assert len(sweep) == 2 and sweep["metrics.test_acc"].isna().all()  # never evaluated on test
    ckd = grid[grid["tags.method"] == "ckd"]
    assert set(ckd["params.tau"]) <= set(sweep["params.tau"])
    assert dict(zip(grid["tags.method"], grid["tags.hparams_from"])) == {
        "ckd": "sweep", "vt": "paper", "kd": "paper", "rkd": "paper"}
    # every grid trial was scored on the same, whole test split, and recorded it
    assert grid["tags.test_rows"].nunique() == 1 and grid["metrics.test_n"].nunique() == 1
    assert (grid["metrics.test_n_real"] + grid["metrics.test_n_fake"] == grid["metrics.test_n"]).all()
    parent_id = parent["run_id"].iloc[0]
    chosen = json.loads(Path(mlflow.MlflowClient().download_artifacts(
        parent_id, "chosen_hparams.json", str(tmp_path))).read_text())
    assert [(c["method"], c["volume"]) for c in chosen] == [("ckd", 10)]
    assert chosen[0]["hparams"]["tau"] in set(ckd["params.tau"].astype(float))
    # per-epoch history and artifacts
    client = mlflow.MlflowClient()
    run_id = grid["run_id"].iloc[0]
    assert [m.step for m in client.get_metric_history(run_id, "val_auc")] == [0, 1]
    assert {a.path for a in client.list_artifacts(run_id)} >= {"trial.yaml", "model"}
    teacher = kids[kids["tags.stage"] == "teachers"]
    assert Path(teacher["tags.checkpoint_path"].iloc[0]).is_file()
    # teachers' outputs were computed once per subset and shared on disk by the trials
    assert len(list((work / "ray" / "e2e" / "teacher_cache").glob("*.pt"))) >= 2

    # running it again without --resume is refused, and nothing changes
    again = study("run", str(cfg), "--workdir", str(work))
    assert again.returncode == 2 and "--resume" in again.stderr
    assert len(runs(work, "e2e")) == len(frame)

    # a second study with the same teacher config reuses the finished teacher, with a warning
    # when another code version trained it
    mlflow.MlflowClient().set_tag(teacher["run_id"].iloc[0], "code_version", "0000old")
    cfg2 = write_config(tmp_path / "s2.yaml", synthetic_root, "e2e-vt",
                        students={"pairs": ["r->test_efficientnet"], "methods": ["kd"], "volumes": [10],
                                  "seeds": [0], "hparams": {"epochs": 1}},
                        sweep={}, ablations={}, grid={"hparams": "paper"})
    second = study("run", str(cfg2), "--workdir", str(work))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 reused" in second.stdout
    assert "trained by code version 0000old" in second.stdout and "--retrain-teachers" in second.stdout
    refused = study("run", str(cfg2), "--workdir", str(work), "--retrain-teachers", "--resume")
    assert refused.returncode == 2 and "retrain them in a new study" in refused.stderr
    kids2 = children(runs(work, "e2e-vt"))
    assert set(kids2["tags.stage"]) == {"grid"}
    status = subprocess.run([sys.executable, "-m", "study.cli", "status", "--workdir", str(work), "--study", "e2e-vt"],
                            capture_output=True, text=True, timeout=120)  # the teacher stage says it reused one
    assert status.returncode == 0 and "1 reused from an earlier run (nothing to train)" in status.stdout, status.stdout
    assert kids2["params.teacher_checkpoints"].iloc[0] == teacher["tags.checkpoint_path"].iloc[0]


def grid_only(tmp_path: Path, root: Path, name: str, epochs: int = 3, seeds=(0,)) -> Path:
    return write_config(tmp_path / f"{name}.yaml", root, name, teachers=[],
                        students={"pairs": ["test_efficientnet"], "methods": ["vt"], "volumes": [20],
                                  "seeds": list(seeds), "hparams": {"epochs": epochs, "min_steps": 6}},
                        sweep={}, ablations={}, grid={"hparams": "paper"})


def test_crashed_trial_resumes_from_its_checkpoint_with_the_same_result(tmp_path, synthetic_root):
    work = tmp_path / "w"
    plain = study("run", str(grid_only(tmp_path, synthetic_root, "plain")), "--workdir", str(work))
    assert plain.returncode == 0, plain.stderr[-3000:]
    marker = tmp_path / "fault-fired"
    crashed = study("run", str(grid_only(tmp_path, synthetic_root, "crashed")), "--workdir", str(work),
                    env={"CKD_STUDY_INJECT_FAULT": f"1:{marker}"})
    assert crashed.returncode == 0, crashed.stderr[-3000:]
    assert marker.exists()  # the fault did fire after epoch 1's checkpoint
    a, b = children(runs(work, "plain")), children(runs(work, "crashed"))
    assert len(b) == 1 and b["status"].iloc[0] == "FINISHED"
    # the retried trial resumed from epoch 1 and ended exactly where the undisturbed one did
    # ... and its convergence diagnostic read the whole curve (epochs before the crash travel in the state)
    for metric in ("metrics.test_acc", "metrics.test_auc", "metrics.val_auc", "metrics.train_loss",
                   "metrics.val_late_gain"):
        assert a[metric].iloc[0] == pytest.approx(b[metric].iloc[0], abs=1e-6), metric
    history = mlflow.MlflowClient().get_metric_history(b["run_id"].iloc[0], "train_loss")
    assert sorted({m.step for m in history}) == [0, 1, 2]


def interrupt_mid_stage(cfg: Path, work: Path, name: str, stage: str) -> str:
    """`study run` (2 trials at a time) sent Ctrl+C once `stage` has one trial finished and one
    running; checks it exits 130 and returns its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(cfg), "--workdir", str(work),
                             "--quiet", "--max-concurrent", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stage_dir = work / "ray" / name / stage
    deadline = time.time() + 300

    def one_done_one_running() -> bool:
        # read MLflow only once the Tuner started: the driver has set up the store by then
        if not stage_dir.exists():
            return False
        frame = runs(work, name)
        if "tags.kind" not in frame.columns:  # no run yet
            return False
        status = list(children(frame)["status"])
        return status.count("FINISHED") >= 1 and status.count("RUNNING") >= 1

    while time.time() < deadline and not one_done_one_running():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    return err


def test_interrupted_driver_exits_nonzero_and_resume_finishes(tmp_path, synthetic_root):
    work = tmp_path / "w"
    cfg = grid_only(tmp_path, synthetic_root, "intr", epochs=6, seeds=(0, 1, 2, 3))
    err = interrupt_mid_stage(cfg, work, "intr", "grid")
    assert f"study run {cfg} --resume" in err
    first = children(runs(work, "intr"))
    assert "RUNNING" not in set(first["status"])  # left KILLED, not RUNNING forever

    resumed = study("run", str(cfg), "--workdir", str(work), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = children(runs(work, "intr"))
    assert len(final) == 4 and final["tags.trial_id"].is_unique  # reopened, not duplicated
    assert set(final["status"]) == {"FINISHED"}
    finished_before = set(first.loc[first["status"] == "FINISHED", "run_id"])
    assert finished_before  # one trial had finished before the interrupt: the check below has work
    # finished trials were not re-run: their runs are untouched (same end time)
    for run_id in finished_before:
        before = first.loc[first["run_id"] == run_id, "end_time"].iloc[0]
        after = final.loc[final["run_id"] == run_id, "end_time"].iloc[0]
        assert before == after


def test_one_config_run_twice_one_at_a_time_chooses_the_same_and_retrains_on_request(tmp_path, synthetic_root):
    """The sweep's sampler is seeded from the study (sweep.seed): with one trial at a time, two
    runs of one config choose the same values. The second study retrains its teacher
    (--retrain-teachers) instead of reusing the first one's."""
    work = tmp_path / "w"
    chosen, sweeps, seen = [], [], []
    for name, extra in (("rep-a", ()), ("rep-b", ("--retrain-teachers",))):
        cfg = write_config(tmp_path / f"{name}.yaml", synthetic_root, name,
                           teachers=[{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 1, "batch_size": 64}}],
                           students={"pairs": ["r->test_efficientnet"], "methods": ["ckd"], "volumes": [10],
                                     "seeds": [0], "hparams": {"epochs": 2, "min_steps": 4}},
                           sweep={"spaces": {"ckd": "ckd"}, "trials": 3, "volumes": [10], "max_eval_per_class": 30,
                                  "seed": 7},
                           grid={"enabled": False}, ablations={})
        done = study("run", str(cfg), "--workdir", str(work), "--max-concurrent", "1", *extra)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        frame = runs(work, name)
        assert "reused" not in done.stdout  # rep-b trained its own teacher
        assert (children(frame)["tags.stage"] == "teachers").sum() == 1
        parent = frame[frame["tags.kind"] == "parent"]["run_id"].iloc[0]
        path = mlflow.MlflowClient().download_artifacts(parent, "chosen_hparams.json", str(tmp_path / name))
        chosen.append(json.loads(Path(path).read_text()))
        sweep = children(frame)
        sweep = sweep[sweep["tags.stage"] == "sweep"].sort_values("start_time")
        sweeps.append(list(zip(sweep["params.tau"], sweep["params.lam"], sweep["params.batch_size"])))
        # what each study saw, printed should the two differ (this test once failed in a full run and
        # not alone; its output was lost): the teacher's checkpoint and every sweep trial's values
        teacher = children(frame)[children(frame)["tags.stage"] == "teachers"]
        seen.append({"teacher": list(teacher.get("tags.checkpoint_sha256", [])),
                     "trials": sweep[["tags.trial_id", "params.tau", "params.lam", "params.batch_size",
                                      "metrics.val_auc", "metrics.epoch"]].to_dict("records")})
    assert sweeps[0] == sweeps[1] and len(sweeps[0]) == 3, seen  # the same trials in the same order
    assert chosen[0] == chosen[1] and chosen[0][0]["method"] == "ckd", (chosen, seen)


def test_a_sweep_interrupted_mid_way_resumes_to_each_cells_budget(tmp_path, synthetic_root):
    """Every swept cell runs in one Tuner (study/per_cell.py): after Ctrl+C and --resume each
    (method, volume) has exactly `sweep.trials` trials, the finished ones untouched."""
    work = tmp_path / "w"
    cfg = write_config(tmp_path / "sw.yaml", synthetic_root, "sw", teachers=[],
                       students={"pairs": ["test_efficientnet"], "methods": ["vt"], "volumes": [10, 20],
                                 "seeds": [0], "hparams": {"epochs": 4, "min_steps": 6}},
                       sweep={"spaces": {"vt": "vt"}, "trials": 3, "volumes": [10, 20], "max_eval_per_class": 30},
                       ablations={}, grid={"hparams": "sweep"})
    interrupt_mid_stage(cfg, work, "sw", "sweep")
    first = children(runs(work, "sw"))
    assert set(first["tags.stage"]) == {"sweep"} and len(first) < 6

    resumed = study("run", str(cfg), "--workdir", str(work), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = children(runs(work, "sw"))
    sweep = final[final["tags.stage"] == "sweep"]
    assert sweep["tags.trial_id"].is_unique and set(sweep["status"]) == {"FINISHED"}
    assert sweep.groupby("tags.volume").size().to_dict() == {"10": 3, "20": 3}  # each cell's budget
    assert not (work / "ray" / "sw" / "sweep-vt-v10").exists()  # one Tuner for the cells
    finished_before = first.loc[first["status"] == "FINISHED", ["run_id", "end_time"]]
    assert len(finished_before)
    for run_id, end in finished_before.itertuples(index=False):
        assert final.loc[final["run_id"] == run_id, "end_time"].iloc[0] == end
    grid = final[final["tags.stage"] == "grid"]
    assert len(grid) == 2 and set(grid["tags.hparams_from"]) == {"sweep"}
    # each cell's Optuna study, beside mlflow.db, continued by the resumed sweep: its 3 trials,
    # with the values the runs record
    import optuna

    for volume in (10, 20):
        ot = optuna.load_study(study_name=f"sw/vt/{volume}", storage=f"sqlite:///{work / 'optuna.db'}")
        complete = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 3, [t.state for t in ot.trials]
        lrs = sorted(float(v) for v in sweep.loc[sweep["tags.volume"] == str(volume), "params.lr"])
        assert sorted(t.params["lr"] for t in complete) == pytest.approx(lrs, rel=1e-6)


def test_min_steps_auto_finds_each_volumes_budget_on_validation_and_the_grid_uses_it(tmp_path, synthetic_root):
    """A budget stage of doubling rounds (budget-0, budget-1, ...) before the grid: its trials score
    validation only, the chosen budgets land on the parent run, and every grid run trains at its
    volume's budget and records it (param steps) with its convergence diagnostic."""
    work = tmp_path / "w"
    cfg = write_config(tmp_path / "auto.yaml", synthetic_root, "auto", teachers=[],
                       students={"pairs": ["test_efficientnet"], "methods": ["vt"], "volumes": [10, 20],
                                 "seeds": [0, 1], "hparams": {"epochs": 3, "min_steps": "auto"}},
                       budget={"start_steps": 3, "max_steps": 12, "seeds": [0, 1], "max_eval_per_class": 30},
                       sweep={}, ablations={}, grid={"hparams": "paper"})
    done = study("run", str(cfg), "--workdir", str(work))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    frame = runs(work, "auto")
    parent = frame[frame["tags.kind"] == "parent"]
    path = mlflow.MlflowClient().download_artifacts(parent["run_id"].iloc[0], "budgets.json", str(tmp_path))
    recorded = json.loads(Path(path).read_text())
    budgets = {int(v): b for v, b in recorded["budgets"].items()}
    assert set(budgets) == {10, 20} and all(b in (3, 6, 12) for b in budgets.values())
    assert "budget at 10 images" in done.stdout
    budget_line = next(line for line in done.stdout.splitlines() if line.strip().startswith("budget ")
                       and "trials" in line)
    assert float(budget_line.split(",")[-1].removesuffix(" s").strip()) > 0  # the rounds' time, summed
    kids = children(frame)
    tried = kids[kids["tags.stage"] == "budget"]
    assert len(tried) >= 2 * 2 * 2  # round 0: two budgets x two volumes x two seeds
    assert "metrics.test_acc" not in tried or tried["metrics.test_acc"].isna().all()  # never scored on test
    for choice in recorded["choices"]:  # each choice rests on the validation means of the budgets tried
        steps = [s for s, _ in choice["validation_means"]]
        assert choice["steps"] in steps
    grid = kids[kids["tags.stage"] == "grid"]
    assert len(grid) == 4
    for _, run in grid.iterrows():
        budget = budgets[int(run["tags.volume"])]
        assert int(run["params.min_steps"]) == budget
        assert int(run["params.steps"]) == budget  # 3 epochs of budget / 3 steps (each volume is one batch)
        assert run["metrics.val_late_gain"] == run["metrics.val_late_gain"]  # logged (not nan)

