"""students.arms: the grid once per named recipe (augmentations, transfer set), each a table block."""
import pytest
from test_study_config import tiny

from study.config import parse_config
from study.plan import grid_cells, sweep_cells
from trainables.errors import ConfigError
from trainables.record import RunTags
from trainables.trial import TeacherRef

TEACHERS = {("synthetic", "r"): TeacherRef("test_resnet", "t.pt")}
ARMS = [{"name": "flip"},
        {"name": "fm", "hparams": {"augment": ["flip", "crop", "mixup"]}},
        {"name": "fm_transfer", "hparams": {"augment": ["flip", "crop", "mixup"]},
         "transfer": {"source": "train_unlabeled", "size": 20}}]


def arms_config(tmp_path, arms=ARMS, **students):
    raw = tiny(tmp_path / "d", sweep={}, grid={"hparams": "paper"})
    raw["students"].update({"methods": ["vt", "kd"], "seeds": [0, 1], "arms": arms, **students})
    return parse_config(raw, "c.yaml", tmp_path)


def test_the_grid_runs_once_per_arm_with_its_recipe_and_transfer_set(tmp_path):
    cfg = arms_config(tmp_path)
    cells = grid_cells(cfg, TEACHERS, {})
    assert len(cells) == 3 * 2 * 2  # arms x methods x seeds
    by = {(c.tags.arm, c.tags.method, c.tags.seed): c for c in cells}
    assert by[("flip", "kd", 0)].hparams.get("augment", ("flip",)) in (("flip",), ["flip"])
    assert list(by[("fm", "kd", 0)].hparams["augment"]) == ["flip", "crop", "mixup"]
    assert list(by[("fm", "vt", 0)].hparams["augment"]) == ["flip", "crop", "mixup"]  # VT on equal footing
    assert by[("fm_transfer", "kd", 1)].spec.transfer.label == "train_unlabeled:20"
    assert by[("fm_transfer", "vt", 1)].spec.transfer is None  # VT has no distillation term to see it
    assert by[("fm", "kd", 0)].spec.transfer is None and by[("flip", "kd", 0)].spec.transfer is None
    # the same subset and initial weights in every arm: the arms differ by their recipe alone
    assert {by[(a, "kd", 1)].spec.subset_seed for a in ("flip", "fm", "fm_transfer")} == {1}
    assert len({c.tags.cell for c in cells}) == len(cells)
    assert by[("fm", "kd", 0)].tags.cell.endswith("/kd/10/fm/0")
    tags = RunTags.to_mlflow(by[("fm", "kd", 0)].tags)
    assert tags["arm"] == "fm" and RunTags.from_mlflow(tags) == by[("fm", "kd", 0)].tags
    assert all(c.tags.arm is None for c, _ in sweep_cells(cfg, TEACHERS))


def test_without_arms_nothing_changes(tmp_path):
    raw = tiny(tmp_path / "d", sweep={}, grid={"hparams": "paper"})
    cells = grid_cells(parse_config(raw, "c.yaml", tmp_path), TEACHERS, {})
    assert all(c.tags.arm is None and "arm" not in RunTags.to_mlflow(c.tags) for c in cells)


@pytest.mark.parametrize("arms, extra, match", [
    ([{"name": "Flip"}], {}, r"students\.arms\[0\]\.name='Flip'"),
    ([{"name": "a"}, {"name": "a"}], {}, r"students\.arms\[1\]\.name='a'"),
    ([{"name": "a", "hparams": {"colour": 1}}], {}, r"students\.arms\[0\]\.hparams: unknown key"),
    ([{"name": "a", "transfer": {"source": "web", "size": 3}}], {}, r"students\.arms\[0\]\.transfer\.source='web'"),
    ([{"name": "a", "seeds": [1]}], {}, r"unknown key\(s\) \['students\.arms\[0\]\.seeds'\]"),
    ([{"name": "a"}], {"transfer": {"source": "train_unlabeled", "size": 3}}, "move it into the arms"),
])
def test_bad_arms_name_the_key(tmp_path, arms, extra, match):
    with pytest.raises(ConfigError, match=match):
        arms_config(tmp_path, arms, **extra)


def test_an_arms_runs_form_their_own_table_block():
    from types import SimpleNamespace

    from analysis.runs import run_record

    def run(arm):
        tags = {"stage": "grid", "source": "synthetic", "method": "kd", "student": "s", "seed": "0",
                "volume": "100", "cell": "c", "kind": "trial"}
        if arm:
            tags["arm"] = arm
        return SimpleNamespace(info=SimpleNamespace(run_id="r", status="FINISHED", start_time=0, end_time=1),
                               data=SimpleNamespace(tags=tags, params={}, metrics={"test_acc": 0.5}))

    assert run_record(run("fm"))["source"] == "synthetic · fm"
    assert run_record(run(None))["source"] == "synthetic"
