""""What the sweep learned": sweep trials made by hand (MLflow-shaped runs through
`analysis.runs.runs_frame`: no store, no Ray, no training), their importance, files and section;
and the summary's warning on sweeps too short for TPE."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import report, sweep
from analysis.runs import StudyRuns, runs_frame

PAIR = "xception->efficientnet"


def _run(stage, method, params, metrics, *, space=None, volume=100, seed=0, status="FINISHED", start=None):
    """One trial as MLflow returns it: string tags and params, float metrics."""
    _run.clock += 1
    rid = f"{stage}-{method}-{volume}-{_run.clock:04d}"
    teachers, student = PAIR.rsplit("->", 1)
    tags = {"stage": stage, "source": "Deepfakes", "method": method, "student": student, "seed": str(seed),
            "volume": str(volume), "cell": f"Deepfakes/{PAIR}/{method}/{volume}/{seed}",
            "teachers": teachers if method != "vt" else "", "pair": PAIR, "trial_id": rid,
            **({"space": space} if space else {})}
    return SimpleNamespace(info=SimpleNamespace(run_id=rid, status=status, end_time=None,
                                                start_time=_run.clock if start is None else start),
                           data=SimpleNamespace(tags=tags, params={"method": method, "arch": "efficientnet_b0",
                                                                   **{k: str(v) for k, v in params.items()}},
                                                metrics=metrics))


_run.clock = 0


def _lr_sweep(n: int, seed: int = 0, method: str = "vt", space: str = "vt", epochs: int = 4) -> list:
    """`n` complete trials of the `vt` space (batch size, lr, weight decay), drawn at random; the
    metric depends on lr only: -(ln lr + 7)^2, plus noise far below its spread."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n):
        lr = float(math.exp(rng.uniform(math.log(1e-4), math.log(3e-3))))
        wd = float(math.exp(rng.uniform(math.log(1e-5), math.log(1e-2))))
        bs = int(rng.choice([8, 16, 24, 32]))
        value = -(math.log(lr) + 7) ** 2 + 1e-4 * rng.standard_normal()
        runs.append(_run("sweep", method, {"lr": lr, "weight_decay": wd, "batch_size": bs, "epochs": epochs},
                         {"val_auc": value, "epoch": epochs - 1}, space=space))
    return runs


def _grid() -> list:
    return [_run("grid", m, {"lr": 0.001}, {"test_acc": 0.7 + 0.01 * s, "test_auc": 0.8}, seed=s)
            for m in ("vt", "kd") for s in (0, 1)]


def test_importance_ranks_the_only_hyperparameter_that_matters_first():
    cells = sweep.sweep_cells(runs_frame(_lr_sweep(24)))
    assert len(cells) == 1
    cell = cells[0]
    assert [p.name for p in cell.params] == ["batch_size", "lr", "weight_decay"]  # the vt space's order
    lr = cell.kinds["lr"]
    assert (lr.kind, lr.low, lr.high, lr.log, lr.declared) == ("float", 1e-4, 3e-3, True, True)
    assert cell.kinds["batch_size"].choices == (8, 16, 24, 32)
    assert cell.n_importance == 24 and not cell.warning and not cell.note
    ranked = list(cell.importance)
    assert ranked[0] == "lr" and cell.importance["lr"] > 0.5
    assert sum(cell.importance.values()) == pytest.approx(1.0)


def test_few_trials_warn_and_too_few_or_nothing_varied_give_no_importance():
    few = sweep.sweep_cells(runs_frame(_lr_sweep(8, seed=1)))[0]
    assert few.importance and few.warning == \
        "importance from 8 trials: indicative only; fANOVA needs about 20 or more"
    md = "\n".join(sweep.markdown([few]))
    assert "- warning: importance from 8 trials: indicative only; fANOVA needs about 20 or more" in md
    one = sweep.sweep_cells(runs_frame(_lr_sweep(1)))[0]
    assert not one.importance and one.note == "no importance: 1 complete trial(s); it needs at least 2"
    same = [_run("sweep", "ckd", {"lr": 0.001, "tau": 0.05}, {"val_auc": 0.7 + i / 10, "epoch": 2}, space="ckd")
            for i in range(2)]
    cell = sweep.sweep_cells(runs_frame(same))[0]
    assert not cell.params and cell.note == "no importance: no hyperparameter varied across the complete trials"


def test_stopped_trials_are_counted_shown_but_not_chosen_nor_in_the_importance():
    runs = _lr_sweep(3, epochs=4)
    runs += [_run("sweep", "vt", {"lr": 0.0009, "weight_decay": 1e-4, "batch_size": 8}, {"val_auc": 5.0, "epoch": 1},
                  space="vt"),  # stopped by ASHA after 2 of 4 epochs: highest value, yet not the choice
             _run("sweep", "vt", {"lr": 0.002}, {"epoch": 0}, space="vt", status="FAILED")]
    cell = sweep.sweep_cells(runs_frame(runs))[0]
    assert len(cell.trials) == 4 and len(cell.complete) == 3 and cell.failed == 1
    assert cell.n_importance == 3
    best = cell.best
    assert best["value"] == cell.complete["value"].max() and best["epochs"] == 4
    md = "\n".join(sweep.markdown([cell]))
    assert "- trials: 4 (3 complete, 1 stopped by ASHA; 1 failed or without val_auc)" in md


def test_best_ties_go_to_the_earliest_started_trial():
    runs = [_run("sweep", "vt", {"lr": lr, "weight_decay": 1e-4, "batch_size": 8}, {"val_auc": 0.9, "epoch": 3},
                 space="vt", start=start) for lr, start in ((0.002, 30), (0.001, 10), (0.0005, 20))]
    assert sweep.sweep_cells(runs_frame(runs))[0].best["p_lr"] == 0.001


def test_unknown_space_infers_distributions_from_the_values():
    lr = sweep.inferred_param("lr", [1e-4, 5e-4, 3e-3])
    assert (lr.kind, lr.log, lr.declared) == ("float", True, False)
    assert sweep.inferred_param("kd_t", [1.0, 4.0, 8.0]).log is False  # a factor 8: linear
    assert sweep.inferred_param("k", [8, 32]).kind == "int"
    assert sweep.inferred_param("z_mode", ["none", "running"]).choices == ("none", "running")
    assert sweep.inferred_param("symmetric", [True, False]).choices == (False, True)
    cell = sweep.sweep_cells(runs_frame(_lr_sweep(6, space="gone")))[0]
    assert [p.name for p in cell.params] == ["batch_size", "lr", "weight_decay"]
    assert not cell.kinds["lr"].declared and cell.importance


def test_sweep_metric_from_the_parent_config():
    assert sweep.sweep_metric("") == "val_auc"
    assert sweep.sweep_metric("name: x\nsweep:\n  metric: val_acc\n") == "val_acc"
    assert sweep.sweep_metric("name: x\n") == "val_auc"


def _report(runs, tmp_path, monkeypatch, formats=("md", "csv", "png"), config_text=""):
    parent = SimpleNamespace(run_id="p", status="FINISHED", tags={}, config_text=config_text) if config_text else None
    study = StudyRuns("sqlite:////nowhere/mlflow.db", "hand", "1", runs_frame(runs), parent)
    monkeypatch.setattr(report, "load_study", lambda uri, name: study)
    rep = report.build_report("sqlite:////nowhere/mlflow.db", "hand", tmp_path, formats=formats)
    return rep, (tmp_path / "report.md").read_text(), {p.name for p in tmp_path.iterdir()}


def test_report_section_csvs_and_figures(tmp_path, monkeypatch):
    rep, md, files = _report(_grid() + _lr_sweep(8), tmp_path, monkeypatch)
    section = md.split("## What the sweep learned")[1].split("\n## ")[0]
    assert "### Deepfakes, xception→efficientnet, VT, 100 images (space `vt`)" in section
    assert "- trials: 8 (8 complete, 0 stopped by ASHA)" in section
    assert "- best configuration (validation AUC " in section and "batch_size=" in section
    assert "| learning rate | `lr` |" in section
    assert "importance from 8 trials: indicative only" in section
    assert "Stopped (ASHA) trials are left out of the importance" in section
    stem = "Deepfakes_xception_efficientnet_vt_100"
    assert {f"sweep_slices_{stem}.png", f"sweep_slices_{stem}.pdf", f"sweep_parallel_{stem}.png",
            f"sweep_parallel_{stem}.pdf", "sweep_trials.csv", "sweep_importance.csv"} <= files
    for target in [line.split("](")[1].rstrip(")") for line in section.splitlines() if line.startswith("![")]:
        assert (tmp_path / target).is_file()
    trials = pd.read_csv(tmp_path / "sweep_trials.csv")
    assert list(trials.columns) == ["source", "pair", "method", "volume", "space", "cell", "run_id", "epochs",
                                    "complete", "best", "metric", "value", "batch_size", "lr", "weight_decay"]
    assert len(trials) == 8 and trials["best"].sum() == 1 and trials["complete"].all()
    assert (trials["epochs"] == 4).all() and (trials["metric"] == "val_auc").all()
    imp = pd.read_csv(tmp_path / "sweep_importance.csv")
    assert list(imp.columns) == ["source", "pair", "method", "volume", "param", "importance", "n_trials"]
    assert set(imp["param"]) == {"batch_size", "lr", "weight_decay"} and (imp["n_trials"] == 8).all()


def test_report_reads_the_sweep_metric_of_the_study_config(tmp_path, monkeypatch):
    runs = [_run("sweep", "vt", {"lr": lr, "weight_decay": 1e-4, "batch_size": 8},
                 {"val_acc": v, "val_auc": 1 - v, "epoch": 1}, space="vt") for lr, v in ((0.001, 0.6), (0.002, 0.7))]
    rep, md, _ = _report(_grid() + runs, tmp_path, monkeypatch, formats=("md",),
                         config_text="name: hand\nsweep:\n  metric: val_acc\n")
    assert rep.sweep[0].metric == "val_acc" and rep.sweep[0].best["p_lr"] == 0.002
    assert "(validation accuracy 0.700, run " in md


def test_no_section_nor_files_without_sweep_runs(tmp_path, monkeypatch):
    rep, md, files = _report(_grid(), tmp_path, monkeypatch)
    assert rep.sweep == [] and "What the sweep learned" not in md
    assert not any(f.startswith("sweep_") for f in files)


def test_summary_warns_when_the_sweep_is_too_short_for_tpe(monkeypatch):
    from study import summary as summary_mod

    assert summary_mod.tpe_startup_trials() == 10  # Ray's OptunaSearch makes TPESampler(seed=...): optuna's default
    assert summary_mod.sweep_warning(20) == ""
    monkeypatch.setattr(summary_mod, "_results", lambda cfg, echo: None)
    cfg = SimpleNamespace(name="s", sweep=SimpleNamespace(trials=8), budget=SimpleNamespace(tol=0.01),
                          tracking_uri="sqlite:////nowhere/mlflow.db", storage_path="/nowhere/ray")

    def lines(stages):
        out = []
        done = SimpleNamespace(stages=stages, chosen={}, budgets={}, budget_choices={})  # a StudySummary's fields
        summary_mod.print_summary(cfg, done, "/nowhere", out.append)
        return [line for line in out if "warning" in line]

    def stage(name, trials):  # a StageSummary's fields
        return SimpleNamespace(name=name, trials=trials, errors=0, reused=0, seconds=1.0)

    assert lines([stage("sweep", 16)]) == [
        "  warning: the sweep ran 8 trials per cell; Optuna's TPE sampler proposes its first 10 at random and "
        "guides only after them: with fewer than 20 (2 x 10) it is close to a random search (raise sweep.trials)"]
    assert lines([stage("grid", 4)]) == []  # no sweep ran: nothing to say
    cfg.sweep.trials = 24
    assert lines([stage("sweep", 48)]) == []
