"""Cross-dataset evaluation (`evaluate`): parsed and checked before anything runs, carried by
teacher and grid trials only, scored after training, and never read to choose anything."""
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_study_config import tiny

from study.cli import main
from study.config import parse_config
from study.plan import ablation_cells, grid_cells, sweep_cells, teacher_cells
from study.runner import best_sweep_run
from trainables.errors import ConfigError
from trainables.trial import CrossSet, TeacherRef, TrialSpec


def folder_dataset(root: Path, counts: dict[str, int], split: str = "test") -> Path:
    """`root/<split>/<real|fake>/v<i>/0.png`: one 8-px frame a video, `counts` videos a class."""
    import numpy as np
    from PIL import Image

    for cls, n in counts.items():
        for i in range(n):
            folder = root / split / cls / f"v{i}"
            folder.mkdir(parents=True)
            Image.fromarray(np.full((8, 8, 3), 40 * i % 255, np.uint8)).save(folder / "0.png")
    return root


def with_evaluate(tmp_path, evaluate) -> dict:
    raw = tiny(tmp_path / "d")
    raw["evaluate"] = evaluate
    return raw


def test_evaluate_is_parsed_with_its_defaults(tmp_path):
    other = folder_dataset(tmp_path / "o", {"real": 1, "fake": 2})
    cfg = parse_config(with_evaluate(tmp_path, {"datasets": [{"name": "other", "kind": "folder",
                                                               "root": str(other)}]}), "c.yaml", tmp_path)
    (d,) = cfg.evaluate.datasets
    assert d.name == "other" and d.data == {"kind": "folder", "root": str(other)}
    assert (cfg.evaluate.video_rule, cfg.evaluate.frames_per_video) == ("mean", 32)  # DeepfakeBench's
    assert parse_config(tiny(tmp_path / "d"), "c.yaml", tmp_path).evaluate.datasets == ()


@pytest.mark.parametrize("evaluate, match", [
    ({"datasets": [{"name": "Celeb-DF", "kind": "folder", "root": "{o}"}]}, r"datasets\[0\]\.name='Celeb-DF'"),
    ({"datasets": [{"name": "a", "kind": "folder", "root": "{o}"}, {"name": "a", "kind": "folder", "root": "{o}"}]},
     r"datasets\[1\]\.name='a': names must be unique"),
    ({"datasets": [{"name": "a", "kind": "folder", "root": "{o}/missing"}]},
     r"evaluate\.datasets\[0\]\.root=.*missing.*does not exist"),
    ({"datasets": [{"name": "a", "kind": "nope", "root": "{o}"}]}, r"evaluate\.datasets\[0\]\.kind='nope'"),
    ({"datasets": [{"name": "a", "kind": "folder"}]}, r"missing key 'evaluate\.datasets\[0\]\.root'"),
    ({"video_rule": "median", "datasets": [{"name": "a", "kind": "folder", "root": "{o}"}]},
     r"evaluate\.video_rule='median': must be one of \['mean', 'max'\]"),
    ({"frames_per_video": 0, "datasets": [{"name": "a", "kind": "folder", "root": "{o}"}]},
     r"evaluate\.frames_per_video=0: must be > 0"),
    ({"video_rule": "max"}, r"list at least one dataset"),
    ({"datasets": [], "frames": 3}, r"unknown key\(s\) \['evaluate\.frames'\]"),
])
def test_bad_evaluate_entries_name_the_key(tmp_path, evaluate, match):
    other = folder_dataset(tmp_path / "o", {"real": 1, "fake": 1})
    text = yaml.safe_dump(evaluate).replace("{o}", str(other))
    with pytest.raises(ConfigError, match=match):
        parse_config(with_evaluate(tmp_path, yaml.safe_load(text)), "c.yaml", tmp_path)


def test_the_study_data_is_not_an_evaluation_dataset(tmp_path):
    raw = tiny(tmp_path / "d")
    raw["evaluate"] = {"datasets": [{"name": "self", **{k: v for k, v in raw["data"].items() if k != "image_size"}}]}
    with pytest.raises(ConfigError, match="is the study's own data"):
        parse_config(raw, "c.yaml", tmp_path)


def test_selection_metrics_cannot_be_cross_dataset_ones(tmp_path):
    for section in ("sweep", "budget"):
        raw = tiny(tmp_path / "d")
        raw.setdefault(section, {})["metric"] = "cross_other_auc"
        if section == "budget":
            raw["students"]["hparams"] = {"epochs": 2, "min_steps": "auto"}
        with pytest.raises(ConfigError, match=rf"{section}\.metric='cross_other_auc'"):
            parse_config(raw, "c.yaml", tmp_path)


@pytest.mark.parametrize("counts, match", [
    ({"real": 2}, "has 2 real and 0 fake test images"),
    (None, "no images"),
])
def test_an_evaluation_dataset_without_both_classes_exits_2_writing_nothing(tmp_path, synthetic_root, counts,
                                                                            match):
    other = tmp_path / "o"
    if counts is None:
        folder_dataset(other, {"real": 1, "fake": 1}, split="train")  # a test split that is empty
        for f in other.rglob("*.png"):
            f.unlink()
    else:
        folder_dataset(other, counts)
    raw = tiny(synthetic_root)
    raw["evaluate"] = {"datasets": [{"name": "other", "kind": "folder", "root": str(other)}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    work = tmp_path / "work"
    result = CliRunner().invoke(main, ["run", str(path), "--workdir", str(work)])
    assert result.exit_code == 2, result.output
    assert "other" in result.output and match in result.output, result.output
    assert not (work / "ray").exists()


def test_teacher_and_grid_cells_carry_the_evaluation_datasets_and_nothing_else_does(tmp_path):
    other = folder_dataset(tmp_path / "o", {"real": 1, "fake": 1})
    raw = with_evaluate(tmp_path, {"video_rule": "max", "frames_per_video": 4,
                                   "datasets": [{"name": "other", "kind": "folder", "root": str(other)}]})
    raw["ablations"] = {"k_values": [4], "k_seeds": [0, 1, 2], "efficiency_volumes": [10], "efficiency_seeds": [0, 1, 2]}
    cfg = parse_config(raw, "c.yaml", tmp_path)
    want = (CrossSet("other", {"kind": "folder", "root": str(other)}, "max", 4),)
    teachers = {("synthetic", "r"): TeacherRef("test_resnet", "t.pt")}
    assert [c.spec.evaluate for c in teacher_cells(cfg)] == [want]
    grid = grid_cells(cfg, teachers, {("ckd", 10): {}})
    assert grid and all(c.spec.evaluate == want for c in grid)
    assert all(c.spec.evaluate == () for c, _ in sweep_cells(cfg, teachers))
    abl = ablation_cells(cfg, teachers, {})
    assert abl and all(c.spec.evaluate == () for c in abl)
    # a spec with an evaluation dataset survives Ray's plain config; one without keeps its identity
    spec = grid[0].spec
    assert TrialSpec.from_dict(spec.to_dict()) == spec
    plain = grid_cells(parse_config(tiny(tmp_path / "d"), "c.yaml", tmp_path), teachers, {("ckd", 10): {}})[0]
    assert "evaluate" not in plain.spec.identity() and "evaluate" in spec.identity()


class Poisoned(dict):
    """Run metrics that fail the test when a cross-dataset metric is read."""

    def __getitem__(self, key):
        assert not str(key).startswith("cross_"), f"selection read {key}"
        return super().__getitem__(key)

    def get(self, key, default=None):
        assert not str(key).startswith("cross_"), f"selection read {key}"
        return super().get(key, default)


def test_the_sweeps_choice_never_reads_cross_dataset_metrics():
    from types import SimpleNamespace

    def run(i, val, cross):
        metrics = Poisoned({"epoch": 3, "val_auc": val, "cross_other_auc": cross})
        return SimpleNamespace(data=SimpleNamespace(metrics=metrics), info=SimpleNamespace(start_time=i, run_id=str(i)))

    runs = [run(0, 0.6, 0.9), run(1, 0.7, 0.1), run(2, 0.5, 1.0)]
    assert best_sweep_run(runs, "val_auc").info.run_id == "1"  # the best on validation, the worst across


def test_registry_choice_never_reads_cross_dataset_metrics():
    """The registered seed of a cell is the highest val_acc whatever the cross-dataset columns say."""
    import pandas as pd

    from analysis.registry import candidates

    runs = pd.DataFrame({"run_id": ["a", "b"], "seed": [0, 1], "val_acc": [0.6, 0.8], "teachers": ["r", "r"],
                         "cross_other_auc": [0.99, 0.01], "cross_other_acc": [0.99, 0.01]})
    cells = pd.DataFrame({"source": ["s"], "student": ["st"], "method": ["kd"], "volume": [10], "metric": ["acc"],
                          "run_ids": [["a", "b"]], "mean": [0.5], "std": [0.1], "n": [2], "seeds": [[0, 1]],
                          "pair": ["r->st"], "block": ["s"]})
    chosen = candidates("x", cells, runs)
    assert [c.run_id for c in chosen] == ["b"]
    flipped = runs.assign(cross_other_auc=runs["cross_other_auc"][::-1].to_numpy())
    assert [c.run_id for c in candidates("x", cells, flipped)] == ["b"]
