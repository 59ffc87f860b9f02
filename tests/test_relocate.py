"""A study folder that was moved: its SQLite store recorded absolute artifact paths, so a read
of an artifact names the move and the command that fixes it; `study relocate` rewrites the
paths (after a snapshot) and every artifact is found again."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from analysis.runs import load_study, tracking_uri
from analysis.store import MovedStore, moved_from, recorded_root, snapshots_of
from study.cli import main
from test_analysis_store import Writer, acc_auc


def test_a_moved_study_folder_is_named_and_relocate_makes_it_whole(tmp_path):
    old = tmp_path / "old" / "runs"
    old.mkdir(parents=True)
    w = Writer(tracking_uri(old), "moved")
    run = w.trial("grid", "synthetic", "r->test_resnet", "kd", "10", 0, "test_resnet", acc_auc(0.7))
    MlflowClient(tracking_uri(old)).set_tag(run, "checkpoint_path", f"{old}/teachers/r.pt")
    assert load_study(tracking_uri(old), "moved").parent.config_text.startswith("name: moved")
    assert recorded_root(old / "mlflow.db") == old.resolve() and moved_from(tracking_uri(old)) is None

    new = tmp_path / "new" / "runs"
    new.parent.mkdir()
    shutil.move(str(old), str(new))
    assert moved_from(tracking_uri(new)) == old.resolve()
    with pytest.raises(MovedStore, match=rf"was moved from {old.resolve()}.*"
                                          rf"study relocate --workdir {new.resolve()} {old.resolve()}"):
        load_study(tracking_uri(new), "moved")  # the config is not dropped in silence
    for argv in (["report", "--workdir", str(new), "--out", str(tmp_path / "r")],
                 ["status", "--workdir", str(new)]):
        refused = CliRunner().invoke(main, argv)
        assert refused.exit_code == 2 and "study relocate" in refused.output, refused.output

    result = CliRunner().invoke(main, ["relocate", "--workdir", str(new)])
    assert result.exit_code == 0, result.output
    assert f"rewrote paths under {old.resolve()} to {new.resolve()}" in result.output
    assert snapshots_of(new / "mlflow.db")  # the store as it was, kept
    study = load_study(tracking_uri(new), "moved")
    assert study.parent.config_text.startswith("name: moved") and moved_from(tracking_uri(new)) is None
    tags = MlflowClient(tracking_uri(new)).get_run(run).data.tags
    assert tags["checkpoint_path"] == f"{new.resolve()}/teachers/r.pt"
    again = CliRunner().invoke(main, ["relocate", "--workdir", str(new)])
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_relocate_refuses_a_folder_without_a_store(tmp_path):
    result = CliRunner().invoke(main, ["relocate", "--workdir", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "nothing").exists()


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /shared nfs4 rw,relatime,vers=4.2 0 0
tmpfs /shared/scratch tmpfs rw 0 0
"""


def test_a_sqlite_store_on_a_network_filesystem_is_warned_about():
    from analysis.store import filesystem_of, network_store_warning
    assert filesystem_of(Path("/shared/runs/mlflow.db"), MOUNTS) == "nfs4"
    assert filesystem_of(Path("/shared/scratch/runs"), MOUNTS) == "tmpfs"  # the longest mount point wins
    assert filesystem_of(Path("/home/me/runs"), MOUNTS) == "ext4"
    warning = network_store_warning("sqlite:////shared/runs/mlflow.db", MOUNTS)
    assert "network filesystem (nfs4)" in warning and "run an MLflow server" in warning
    assert network_store_warning("sqlite:////home/me/runs/mlflow.db", MOUNTS) is None
    assert network_store_warning("http://mlflow:5000", MOUNTS) is None  # a server: nothing to warn about


def test_study_run_prints_the_network_filesystem_warning_first(tmp_path, monkeypatch):
    import study.runner as runner_module
    from study.config import parse_config
    from study.runner import RunOptions, StudyRunner
    from trainables.errors import UserError
    raw = {"name": "n", "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "image_size": 32},
           "teachers": [{"name": "r", "arch": "test_resnet"}],
           "students": {"pairs": ["r->test_resnet"], "methods": ["kd"], "volumes": [10]}, "grid": {"hparams": "paper"}}
    echoed: list[str] = []
    runner = StudyRunner(parse_config(raw, "n.yaml", tmp_path), RunOptions(workdir=tmp_path), echo=echoed.append)
    monkeypatch.setattr(runner_module, "network_store_warning", lambda uri: f"{uri} is on nfs4")

    def stop():
        raise UserError("stopped after the warning")

    monkeypatch.setattr(runner, "check", stop)
    with pytest.raises(UserError, match="stopped after the warning"):
        runner._run()
    assert echoed == [f"warning: {runner.cfg.tracking_uri} is on nfs4"]


def test_an_error_while_the_disk_is_full_is_exit_2_naming_the_disk(tmp_path, monkeypatch):
    """`study run` ends with exit 2 and the disk named when a full disk caused the error: ENOSPC in
    it, SQLite's "database or disk is full", or any error while the workdir's disk has less than
    LOW_SPACE_BYTES left (a store half-written by the full disk fails in ways of its own)."""
    import errno

    import yaml

    import study.runner as runner_module
    import study.tracking as tracking
    from study.cli import main
    from study.tracking import disk_full
    assert disk_full(OSError(errno.ENOSPC, "No space left on device")) and disk_full("database or disk is full")
    assert not disk_full(RuntimeError("boom")) and not disk_full(None)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "n", "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "image_size": 32},
        "teachers": [{"name": "r", "arch": "test_resnet"}],
        "students": {"pairs": ["r->test_resnet"], "methods": ["kd"], "volumes": [10]}, "grid": {"hparams": "paper"}}))

    def broken(self):
        raise RuntimeError("a store the full disk left half-written")

    monkeypatch.setattr(runner_module.StudyRunner, "run", broken)
    monkeypatch.setattr(tracking, "low_space", lambda path: 2048)
    result = CliRunner().invoke(main, ["run", str(config), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2 and "no space left on the disk of" in result.output
    assert "RuntimeError: a store the full disk left half-written with 2 KB left" in result.output
    monkeypatch.setattr(tracking, "low_space", lambda path: 0)  # plenty of space: not the disk's doing
    result = CliRunner().invoke(main, ["run", str(config), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
