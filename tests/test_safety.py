"""Safe by default: recorded checkpoints are verified, the UI binds loopback, no shell."""
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from study.cli import main
from study.config import parse_config
from study.plan import teacher_cells
from study.runner import RunOptions, StudyRunner
from trainables.errors import UserError
from trainables.models import create_model, save_checkpoint, sha256_file


def test_reused_teacher_checkpoint_is_verified_by_sha256(tmp_path):
    raw = {
        "name": "s", "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "image_size": 32},
        "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 1}}],
        "students": {"pairs": ["r->test_resnet"], "methods": ["kd"], "volumes": [10]},
        "grid": {"hparams": "paper"},
    }
    cfg = parse_config(raw, "s.yaml", tmp_path)
    runner = StudyRunner(cfg, RunOptions(workdir=tmp_path))
    cell = teacher_cells(cfg)[0]
    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(create_model("test_resnet"), ckpt)
    client = runner.tracking.client
    run = client.create_run(runner.tracking.experiment_id, tags={
        "stage": "teachers", "config_hash": cell.config_hash, "checkpoint_path": str(ckpt),
        "checkpoint_sha256": sha256_file(ckpt)})
    client.set_terminated(run.info.run_id, "FINISHED")
    assert runner._finished_teacher(cell).checkpoint == str(ckpt)  # intact: reused

    save_checkpoint(create_model("test_resnet"), ckpt)  # replaced behind our back
    with pytest.raises(UserError, match="changed since it was recorded"):
        runner._finished_teacher(cell)
    ckpt.unlink()  # gone: retrained rather than trusted
    assert runner._finished_teacher(cell) is None


def test_ui_binds_loopback_and_passes_an_argument_list(monkeypatch, tmp_path):
    import sys

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    exp = MlflowClient(uri).create_experiment("demo")
    calls = []
    monkeypatch.setattr("os.execv", lambda prog, argv: calls.append((prog, argv)))
    result = CliRunner().invoke(main, ["ui", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    prog, argv = calls[0]
    # this interpreter's MLflow (no `mlflow` on PATH needed), bound to loopback
    assert prog == sys.executable and argv[:3] == [sys.executable, "-m", "mlflow"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--backend-store-uri") + 1] == uri
    # the runs list in the model-training view, every run unfolded (sorted by name, not time)
    page = f"study demo: http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning&"
    assert page + "orderByKey=tags.%60mlflow.runName%60&orderByAsc=true" in result.output, result.output


def test_a_studys_experiment_is_of_mlflow_3s_model_training_kind(tmp_path):
    from study.tracking import Tracking

    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "demo")
    exp = tracking.client.get_experiment(tracking.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_ui_on_a_workdir_without_a_store_exits_2_creating_nothing(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("os.execv", lambda prog, argv: calls.append((prog, argv)))
    result = CliRunner().invoke(main, ["ui", "--workdir", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no MLflow store" in result.output, result.output
    assert not calls and not (tmp_path / "nope").exists()


def test_a_teacher_is_what_it_trains_on_studies_that_score_it_otherwise_reuse_it(tmp_path):
    """Two studies in one store, alike in their teacher and data but not in how models are scored
    (the students' validation caps, an evaluation dataset): the same teacher identity, so the
    second study reuses the first's teacher (warning that its run has no scores on the new
    dataset); a teacher recorded under the older identity (scoring included) is found too; a
    change to what it trains on (its epochs) is another teacher."""
    from study.plan import Cell
    raw = {
        "name": "a", "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "image_size": 32},
        "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 1}}],
        "students": {"pairs": ["r->test_resnet"], "methods": ["kd"], "volumes": [10]},
        "grid": {"hparams": "paper"},
    }
    other = {**raw, "name": "b", "grid": {"hparams": "paper", "max_val_per_class": 20},
             "evaluate": {"datasets": [{"name": "other", "kind": "synthetic", "root": str(tmp_path / "e"),
                                        "manipulation": "swap"}]}}
    first, second = parse_config(raw, "a.yaml", tmp_path), parse_config(other, "b.yaml", tmp_path)
    a, b = teacher_cells(first)[0], teacher_cells(second)[0]
    assert b.spec.evaluate and not a.spec.evaluate
    assert a.config_hash == b.config_hash  # scoring is not identity
    assert b.legacy_hash != b.config_hash and a.legacy_hash == a.config_hash  # the older identity counted it
    retrained = parse_config({**raw, "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 2}}]},
                             "c.yaml", tmp_path)
    assert teacher_cells(retrained)[0].config_hash != a.config_hash

    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(create_model("test_resnet"), ckpt)
    echoed: list[str] = []
    runner = StudyRunner(second, RunOptions(workdir=tmp_path), echo=echoed.append)
    client = runner.tracking.client
    run = client.create_run(runner.tracking.experiment_id, tags={  # recorded under the older identity
        "stage": "teachers", "config_hash": b.legacy_hash, "checkpoint_path": str(ckpt),
        "checkpoint_sha256": sha256_file(ckpt), "code_version": runner.code})
    client.set_terminated(run.info.run_id, "FINISHED")
    assert isinstance(b, Cell) and runner._finished_teacher(b, warn=True).checkpoint == str(ckpt)
    assert any("was not scored on evaluation dataset(s) ['other']" in line for line in echoed)
