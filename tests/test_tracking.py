"""The driver's MLflow callback, driven with stand-in trials (no Ray cluster needed)."""
from dataclasses import dataclass, field

import pytest
from mlflow.tracking import MlflowClient

from study.tracking import MLflowTrialCallback, Tracking


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    checkpoint: object = None
    error: str | None = None

    def get_error(self):
        return RuntimeError(self.error) if self.error else None


def trial_config(method="ckd"):
    return {"cell": {
        "spec": {"role": "student", "arch": "test_resnet", "data": {"kind": "synthetic", "root": "/x"},
                 "image_size": 32, "volume": 10, "subset_seed": 0, "teachers": [], "eval_splits": ["val", "test"]},
        "hparams": {"method": method, "epochs": 2, "seed": 0},
        "tags": {"stage": "grid", "method": method, "volume": "10", "seed": "0", "source": "synthetic",
                 "cell": "c1", "config_hash": "abc"},
    }, "tau": 0.2}


@pytest.fixture
def tracking(tmp_path):
    t = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    parent = t.start_parent("h", "name: s\n", "v1")
    return t, parent


def test_one_run_per_trial_reopened_after_resume(tracking):
    t, parent = tracking
    cb = MLflowTrialCallback(t.uri, t.experiment_id, parent, "s")
    trial = FakeTrial("t0001", trial_config())
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, {"epoch": 0, "val_auc": 0.6, "train_loss": 1.0, "time_total_s": 3.0,
                                      "config/tau": 0.2, "node_ip": "127.0.0.1", "trial_id": "t0001"})
    # the driver dies; a new driver restores the callback from Ray's pickle and resumes the trial
    import pickle
    cb2 = pickle.loads(pickle.dumps(cb))
    cb2.on_trial_start(0, [], trial)
    cb2.on_trial_result(0, [], trial, {"epoch": 1, "val_auc": 0.7, "test_acc": 0.65})
    cb2.on_trial_complete(0, [], trial)

    runs = t.children()
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["trial_id"] == "t0001"
    assert run.data.tags["node_ip"] == "127.0.0.1"
    assert run.data.params["tau"] == "0.2" and run.data.params["method"] == "ckd"
    # the budget: 10 images at the default batch (24, capped at 10) = 1 step an epoch, 2 epochs
    assert run.data.params["steps"] == "2"
    assert set(run.data.metrics) == {"epoch", "val_auc", "train_loss", "test_acc"}  # no time_*/config/* noise
    history = MlflowClient(t.uri).get_metric_history(run.info.run_id, "val_auc")
    assert [(m.step, m.value) for m in history] == [(0, 0.6), (1, 0.7)]


def test_failed_trial_records_the_error(tracking):
    t, parent = tracking
    cb = MLflowTrialCallback(t.uri, t.experiment_id, parent, "s")
    trial = FakeTrial("t0002", trial_config(), error="Traceback ...\nTrainingDiverged: loss is nan at epoch 1")
    cb.on_trial_start(0, [], trial)
    cb.on_trial_error(0, [], trial)
    run = t.children()[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "TrainingDiverged: loss is nan at epoch 1"
    assert [a.path for a in MlflowClient(t.uri).list_artifacts(run.info.run_id)] == ["error.txt", "trial.yaml"]


def test_interrupted_runs_are_marked_killed_and_parent_is_reused(tracking):
    t, parent = tracking
    cb = MLflowTrialCallback(t.uri, t.experiment_id, parent, "s")
    cb.on_trial_start(0, [], FakeTrial("t0003", trial_config()))
    assert t.kill_running() == 1
    assert t.children()[0].info.status == "KILLED"
    assert t.start_parent("h", "", "v1") == parent  # a resume reuses the parent run


def test_unreachable_tracking_uri_is_a_user_error(monkeypatch):
    from trainables.errors import UserError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    t = Tracking("http://127.0.0.1:9", "s")  # nothing listens on the discard port
    with pytest.raises(UserError, match="cannot be reached"):
        t.check_reachable()


def test_a_finished_run_is_left_alone_when_ray_replays_its_end(tracking):
    t, parent = tracking
    cb = MLflowTrialCallback(t.uri, t.experiment_id, parent, "s")
    trial = FakeTrial("t0004", trial_config())
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, {"epoch": 1, "test_acc": 0.6})
    cb.on_trial_complete(0, [], trial)
    end = t.children()[0].info.end_time
    # a new driver restores the trial from its final checkpoint and replays its last result
    replay = MLflowTrialCallback(t.uri, t.experiment_id, parent, "s")
    replay.on_trial_start(0, [], trial)
    replay.on_trial_result(0, [], trial, {"epoch": 1, "test_acc": 0.6})
    replay.on_trial_complete(0, [], trial)
    run = t.children()[0]
    assert run.info.status == "FINISHED" and run.info.end_time == end
    assert len(MlflowClient(t.uri).get_metric_history(run.info.run_id, "test_acc")) == 1


def test_a_sqlite_studys_artifacts_live_beside_its_database_not_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's own default would be ./mlruns here
    uri = f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}"
    (tmp_path / "work").mkdir()
    t = Tracking(uri, "s")
    run_id = t.start_parent("h", "name: s\n", "code")
    t.client.log_text(run_id, "x", "note.txt")
    location = t.client.get_experiment(t.experiment_id).artifact_location
    assert location == (tmp_path / "work" / "artifacts").as_uri()
    assert (tmp_path / "work" / "artifacts").is_dir() and not (tmp_path / "mlruns").exists()


def test_a_trials_memory_and_data_preparation_are_recorded_but_not_rays_noise():
    from study.tracking import METRIC_RE

    kept = {"sys_peak_rss_mb", "sys_data_prep_s", "sys_export_s", "val_auc", "test_acc", "train_loss", "epoch", "lr"}
    dropped = {"sys_data_prep_start", "time_total_s", "config/cell", "training_iteration", "node_id"}
    assert {k for k in kept | dropped if METRIC_RE.match(k)} == kept


class DirCheckpoint:
    """Stands in for a Ray checkpoint: a local folder."""

    def __init__(self, path):
        self.path = path

    def as_directory(self):
        import contextlib
        return contextlib.nullcontext(str(self.path))


def test_a_sweep_trial_records_its_datasets_but_logs_no_model(tracking, tmp_path):
    import json

    import torch

    from trainables.serving import DATASETS_FILE

    t, parent = tracking
    folder = tmp_path / "final"
    folder.mkdir()
    torch.save({"w": torch.zeros(1)}, folder / "model.pt")
    record = {"context": "training", "name": "synthetic-train", "digest": "d1", "source_type": "local",
              "source": json.dumps({"uri": "/x"}), "schema": "", "profile": json.dumps({"num_rows": 10})}
    (folder / DATASETS_FILE).write_text(json.dumps([record]))
    cb = MLflowTrialCallback(t.uri, t.experiment_id, parent, "s", log_models=False)  # the sweep's callback
    trial = FakeTrial("t1", trial_config(), checkpoint=DirCheckpoint(folder))
    cb.on_trial_start(0, [], trial)
    cb.on_trial_complete(0, [], trial)
    run = t.client.get_run(cb.run_id(trial))
    assert run.info.status == "FINISHED"
    assert [(i.dataset.digest, i.tags[0].value) for i in run.inputs.dataset_inputs] == [("d1", "training")]
    assert not t.client.list_artifacts(run.info.run_id, "model")  # no weights, no MLflow model
