"""The short summary `study run` ends with: stages, chosen hyperparameters, the test accuracy
table, the teachers beside their students, the paired comparisons in plain words, next commands.
It reads the study back from MLflow through `analysis/`, as `study report` does."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from analysis import render
from analysis.runs import load_study
from analysis.tables import build_cells, comparisons, unconverged_warnings, views
from analysis.teachers import teacher_table, weak_teachers
from study.config import StudyConfig
from trainables.errors import UserError

if TYPE_CHECKING:  # a type only: the summary (and its tests) need no Ray
    from study.runner import StudySummary


def print_summary(cfg: StudyConfig, summary: StudySummary, workdir: Path, echo: Callable[[str], None]) -> None:
    echo("")
    echo(f"study {cfg.name}: done")
    for s in summary.stages:
        if not (s.trials or s.reused):
            continue
        extra = f", {s.reused} reused" if s.reused else ""
        echo(f"  {s.name:<22} {s.trials:>3} trials, {s.errors} failed{extra}, {s.seconds:6.1f} s")
    if any(s.name == "sweep" and (s.trials or s.reused) for s in summary.stages):
        warning = sweep_warning(cfg.sweep.trials)
        if warning:
            echo(f"  warning: {warning}")
    for (method, volume), hp in sorted(summary.chosen.items()):
        echo(f"  best {method} at {volume} images (validation): "
             + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hp.items())))
    for volume, steps in sorted(summary.budgets.items()):  # students.hparams.min_steps: auto
        echo(f"  budget at {volume} images (validation, doubling until it gains < {cfg.budget.tol:g} "
             f"{cfg.budget.metric}): {steps} steps")
        for (method, v), choice in sorted(summary.budget_choices.items()):
            if v == volume:
                echo(f"    {method}: {choice.text()}")
    _results(cfg, echo)
    uri = cfg.tracking_uri
    echo(f"\nMLflow tracking URI: {uri}")
    echo(f"Ray storage:         {cfg.storage_path}/{cfg.name}")
    echo("next:")
    echo(f"  mlflow ui --backend-store-uri {uri}      (or: study ui --workdir {workdir})")
    echo(f"  study report --workdir {workdir} --study {cfg.name} --out reports/")


def tpe_startup_trials() -> int:
    """The random start-up trials of the sweep's sampler: `study.runner` gives Ray's OptunaSearch no
    sampler, so it makes `optuna.samplers.TPESampler(seed=...)`, with optuna's default."""
    import inspect

    import optuna

    return int(inspect.signature(optuna.samplers.TPESampler).parameters["n_startup_trials"].default)


def sweep_warning(trials: int) -> str:
    """A line when `trials` per cell leave TPE little room beyond its random start-up ("" otherwise)."""
    startup = tpe_startup_trials()
    if trials >= 2 * startup:
        return ""
    return (f"the sweep ran {trials} trials per cell; Optuna's TPE sampler proposes its first {startup} at random "
            f"and guides only after them: with fewer than {2 * startup} (2 x {startup}) it is close to a random "
            "search (raise sweep.trials)")


def _results(cfg: StudyConfig, echo: Callable[[str], None]) -> None:
    try:
        study = load_study(cfg.tracking_uri, cfg.name)
    except UserError:  # no trial run (e.g. only teachers given): nothing to tabulate
        return
    runs = study.runs
    cells = build_cells(runs, study.parent.config_text if study.parent else "")
    for view in (v for v in views(cells) if v.metric == "acc"):
        echo(f"\n{view.title}: test accuracy, mean ± std (seeds)")
        echo(render.markdown_table(view))
        if view.untuned:
            echo(render.UNTUNED_NOTE)
        if view.unconverged:
            echo(render.UNCONVERGED_NOTE)
    for warning in unconverged_warnings(cells):
        echo(f"\nwarning: {warning}")
    for warning in weak_teachers(teacher_table(runs)):
        echo(f"\nwarning: {warning}")
    comp = comparisons(cells)
    comp = comp[comp["metric"] == "acc"] if not comp.empty else comp
    if comp.empty:
        return
    family = int(comp["p"].notna().sum())  # the Holm family: every test-accuracy comparison with a p-value
    scope = (f"all {family} test-accuracy comparisons of the study" if family == len(comp) else
             f"the study's {family} test-accuracy comparisons with a p-value")
    echo("\npaired comparisons of test accuracy (the two runs of a pair share the training subset, initial "
         "weights and test rows): mean difference with its 95 % t interval; resolved means Holm-adjusted "
         f"p < 0.05 across {scope}:")
    several = comp["block"].nunique() > 1  # several sources or grid arms: say which table each is from
    for r in comp.itertuples():
        where = f"{r.block.split(': ', 1)[-1]}, " if several else ""
        echo(f"  {where}{render.pair_text(r.pair)} at {r.volume}: {render.method_name(r.a)} - {render.method_name(r.b)} "
             f"{r.text}: {render.resolved_text(r)}")
    resolved = int(comp["resolved"].sum())
    budget_bound = int((comp["resolved"] & comp["unconverged"]).sum())
    echo(f"  {resolved} of {len(comp)} differences resolved (Holm-adjusted p < 0.05 across {scope}); the others "
         "cannot be told apart from 0 with these seeds and test rows."
         + (f" {budget_bound} of the resolved ones compare under-trained cells ({render.DDAGGER}): they order "
            "the budget, not the methods." if budget_bound else ""))
