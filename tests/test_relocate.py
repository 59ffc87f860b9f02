"""A study folder that was moved: its SQLite store recorded absolute artifact paths, so a read
of an artifact names the move and the command that fixes it; `study relocate` rewrites the
paths (after a snapshot) and every artifact is found again."""
from __future__ import annotations

import shutil

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
