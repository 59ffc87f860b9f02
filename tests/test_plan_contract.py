"""The trial contract: every shipped config plans, through every stage, into typed cells
whose serialised form (what Ray carries) reads back into the same spec, hyperparameters and
run tags; and `study report` needs neither torch nor Ray."""
import subprocess
import sys
import textwrap

import optuna
import pytest
import yaml
from test_analysis_store import store  # noqa: F401  (fixture)
from test_study_config import SHIPPED, shipped_config

from study.config import parse_config
from study.plan import ablation_cells, grid_cells, sweep_cells, teacher_cells
from trainables.hparams import HParams
from trainables.losses import needs_teachers
from trainables.record import RunTags
from trainables.trial import TeacherRef
from trainables.tune import split_config


def plan_everything(cfg):
    """(trial config as Ray gets it, the cell) for every trial of every stage."""
    teachers = {(s, t.name): TeacherRef(t.arch, t.checkpoint or f"/ckpt/{s}-{t.name}.pt")
                for s, _ in cfg.source_specs() for t in cfg.teachers}
    planned = [({"cell": c.config()}, c) for c in teacher_cells(cfg)]
    chosen = {}
    for cell, space in sweep_cells(cfg, teachers):
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        constants = space(trial)
        chosen[(cell.tags.method, cell.tags.volume)] = {**trial.params,
                                                        **{k: v for k, v in constants.items() if k != "method"}}
        planned.append(({"cell": cell.config(), **trial.params}, cell))
    if cfg.grid.enabled:
        planned += [({"cell": c.config()}, c) for c in grid_cells(cfg, teachers, chosen)]
    planned += [({"cell": c.config()}, c) for c in ablation_cells(cfg, teachers, chosen)]
    return planned


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_plans_every_stage_into_trial_specs(path, tmp_path):
    cfg = shipped_config(path, tmp_path)
    planned = plan_everything(cfg)
    assert planned
    stages = set()
    for config, cell in planned:
        spec, hp, tags = split_config(config)
        stages.add(tags.stage)
        assert spec == cell.spec and tags == cell.tags.with_hash(cell.config_hash)
        assert hp.method == tags.method and hp.seed == tags.seed
        assert set(hp.to_dict()) == set(HParams.keys(hp.method))  # its own options, no other method's
        if spec.role == "student":
            assert spec.volume == tags.volume and spec.subset_seed == tags.draw_or_seed
            assert bool(spec.teachers) == needs_teachers(hp.method)  # teachers exactly where distilled
        assert RunTags.from_mlflow(tags.to_mlflow()) == tags  # MLflow's strings read back the same
        written = tags.to_mlflow()  # only the tags that apply to the run
        assert ("teacher_name" in written) == (tags.stage == "teachers")
        assert ("ablation" in written) == bool(tags.ablation) and ("space" in written) == (tags.stage == "sweep")
        assert "teachers" in written and all(v != "" for k, v in written.items() if k != "teachers")
    expected = {"teachers"} if teacher_cells(cfg) else set()
    expected |= {"sweep"} if cfg.sweep.spaces else set()
    expected |= {"grid"} if cfg.grid.enabled else set()
    expected |= {"ablations"} if (cfg.ablations.vary or cfg.ablations.efficiency_volumes) else set()
    assert stages == expected


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_run_names_are_unique_within_a_study_and_lead_with_what_varies(path, tmp_path):
    from study.tracking import run_name

    cfg = shipped_config(path, tmp_path)
    names = []
    for _config, cell in plan_everything(cfg):
        trials = cfg.sweep.trials if cell.stage == "sweep" else 1  # a search's trials share its cell
        names += [run_name(cell.tags, f"5e1f2_{i:05d}") for i in range(trials)]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1][:3]
    first = {n.split(" · ")[0] for n in names}
    assert all(f.split()[0] in {"teacher", "sweep", "budget", "ablation", *cfg.students.methods} for f in first)
    # a run's logged model is named after it: unique too, in the characters MLflow takes in a model name
    from types import SimpleNamespace

    from study.logged_model import model_name

    models = [model_name(SimpleNamespace(data=SimpleNamespace(tags={"study": cfg.name}),
                                         info=SimpleNamespace(run_name=n, run_id="r"))) for n in names]
    assert len(models) == len(set(models)), [m for m in models if models.count(m) > 1][:3]
    assert not any(c in m for m in models for c in "/:.%\"'") and all(m.startswith(f"{cfg.name}-") for m in models)


def test_config_hash_counts_what_is_trained_not_how(tmp_path):
    from dataclasses import replace

    cfg = parse_config(yaml.safe_load((SHIPPED[0].parent / "quickstart.yaml").read_text()), "q.yaml", tmp_path)
    (teacher,) = teacher_cells(cfg)
    how = replace(teacher, spec=replace(teacher.spec, device="cuda", stream=True, loader_workers=7, cache_dir="/x"))
    what = replace(teacher, spec=replace(teacher.spec, image_size=teacher.spec.image_size * 2))
    assert how.config_hash == teacher.config_hash != what.config_hash


BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "timm", "ray", "optuna"):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
""")


def test_study_report_runs_without_torch_or_ray(store, tmp_path):  # noqa: F811
    out = tmp_path / "report"
    code = BLOCKER + textwrap.dedent(f"""
        import analysis, analysis.report, analysis.runs, analysis.tables, analysis.figures, analysis.store
        from study.cli import main
        main(["report", "--tracking-uri", {store["uri"]!r}, "--study", "demo", "--out", {str(out)!r}])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    text = (out / "report.md").read_text()
    assert "Table I: FaceForensics++ Deepfakes" in text and "| KD - VT |" in text  # every method against VT
    # and the blocker does block: importing the engine fails in the same set-up
    failed = subprocess.run([sys.executable, "-c", BLOCKER + "import trainables.engine"], capture_output=True,
                            text=True, timeout=120)
    assert failed.returncode != 0 and "is blocked in this test" in failed.stderr


def test_a_trials_identity_survives_new_hyperparameters_at_their_defaults(tmp_path):
    """Config hashes pinned as code before `augment` and its options existed computed them: a
    teacher finished then is still found (and reused) now. A new key set away from its default
    does change the identity."""
    from study.config import parse_config
    from study.plan import grid_cells, teacher_cells

    raw = {"name": "h", "data": {"kind": "synthetic", "root": "/nonexistent/d", "num_images": 480, "size": 32},
           "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 2}}],
           "students": {"pairs": ["r->test_resnet"], "methods": ["vt"], "volumes": [10], "seeds": [0],
                        "hparams": {"epochs": 2}},
           "grid": {"hparams": "paper"}}
    cfg = parse_config(raw, "h.yaml", "/tmp/hw")
    assert teacher_cells(cfg)[0].config_hash == "4b7230d86ae0ffaf"
    assert grid_cells(cfg, {}, {})[0].config_hash == "0bc94c4b95cdae78"
    raw["students"]["hparams"]["augment"] = ["flip", "crop"]
    assert grid_cells(parse_config(raw, "h.yaml", "/tmp/hw"), {}, {})[0].config_hash != "0bc94c4b95cdae78"
