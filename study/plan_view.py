"""`study plan CONFIG`: what a study would run, without running it: its stages, their cells and
trial counts, and where each cell's hyperparameters come from. Torch-free and Ray-free (the
planning modules import neither), so it answers in about a second; a config error is the
same exit 2, with the same message, that `study run` gives before anything is written.

The teachers are not trained and the sweep has not chosen anything yet: the plan shows the
teachers' cells as they would train, the grid's cells that take the sweep's choice as
"sweep's best" (their other keys as the paper gives them), and the budget stage's first round
(its later rounds depend on what validation finds).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Callable, Iterable

from study.budget import BudgetSearch
from study.config import StudyConfig
from study.plan import (
    Cell, ablation_cells, budget_cells, budget_recipes, given_teachers, grid_cells, sweep_cells, teacher_cells,
)
from trainables.hparams import for_method
from trainables.spec import TeacherRef

TO_TRAIN = "(trained in stage teachers)"  # a planned teacher's checkpoint: not there yet


def planned_teachers(cfg: StudyConfig) -> dict[tuple[str, str], TeacherRef]:
    """Every (source, teacher) the students distil from: a given checkpoint, or a placeholder."""
    given = given_teachers(cfg)
    return {(source, t.name): given.get((source, t.name)) or TeacherRef(t.arch, TO_TRAIN)
            for source, _ in cfg.source_specs() for t in cfg.teachers}


def plan_stages(cfg: StudyConfig) -> list[tuple[str, list[Cell], int]]:
    """(stage, its cells, its trials) in run order; a sweep's cell is one search of
    `sweep.trials` trials."""
    teachers = planned_teachers(cfg)
    out: list[tuple[str, list[Cell], int]] = []
    cells = teacher_cells(cfg)
    if cells:
        out.append(("teachers", cells, len(cells)))
    if cfg.students.auto_budget:
        b = cfg.budget
        search = BudgetSearch(b.start_steps, b.max_steps, b.tol, len(b.seeds))
        todo = search.todo({}, budget_recipes(cfg), b.volumes or cfg.students.volumes)  # its first round
        cells = budget_cells(cfg, teachers, todo)
        out.append(("budget", cells, len(cells)))
    searches = [cell for cell, _space in sweep_cells(cfg, teachers)] if cfg.sweep.spaces else []
    if searches:
        out.append(("sweep", searches, len(searches) * cfg.sweep.trials))
    chosen = {(c.tags.method, c.tags.volume): {} for c in searches}  # the sweep's choice: not made yet
    if cfg.grid.enabled:
        cells = grid_cells(cfg, teachers, chosen)
        out.append(("grid", cells, len(cells)))
    cells = ablation_cells(cfg, teachers, chosen)
    if cells:
        out.append(("ablations", cells, len(cells)))
    return out


def _sources(cfg: StudyConfig, cell: Cell) -> str:
    """Where a cell's hyperparameters come from, lowest precedence first."""
    base = {"sweep": "the sweep's best", "paper": "the paper's values", "from_run": "grid.from_run's choice",
            "": "the paper's values"}.get(cell.tags.hparams_from, cell.tags.hparams_from)
    if cell.stage == "sweep":
        base = f"search space {cell.tags.space!r} over the paper's values"
    if cell.stage == "teachers":
        teacher = cfg.teacher(cell.tags.teacher_name)
        given = sorted(teacher.hparams)
        return "teachers[].hparams " + ("{" + ", ".join(given) + "}" if given else "(defaults)")
    parts = [base]
    user = sorted(k for k in for_method(cfg.students.hparams, cell.tags.method) if k != "min_steps"
                  or not cfg.students.auto_budget)
    if user:
        parts.append("students.hparams {" + ", ".join(user) + "}")
    if cell.tags.arm:
        parts.append(f"arm {cell.tags.arm}")
    if cell.stage == "budget":
        parts.append(f"min_steps={cell.tags.budget}")
    return " < ".join(parts)


def _group(cell: Cell) -> tuple:
    t = cell.tags
    return (t.source, t.pair or t.student, t.method, t.volume_label, t.arm or "", t.ablation, t.space, t.budget)


def _runs(cells: Iterable[Cell]) -> str:
    cells = list(cells)
    seeds = sorted({c.tags.seed for c in cells})
    draws = sorted({c.tags.draw_or_seed for c in cells})
    text = f"{len(cells)} run{'s' if len(cells) != 1 else ''}"
    if len(draws) > 1 and draws != seeds:
        return f"{text} (draws {_ints(draws)} x seeds {_ints(seeds)})"
    return f"{text} (seed{'s' if len(seeds) > 1 else ''} {_ints(seeds)})"


def _ints(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)


def describe(cfg: StudyConfig, echo: Callable[[str], None] = print) -> int:
    """Print the plan; the number of trials it would run (the budget stage's first round)."""
    stages = plan_stages(cfg)
    total = sum(n for _, _, n in stages)
    echo(f"study {cfg.name} ({cfg.path}): {len(stages)} stage(s), {total} trial(s); "
         f"MLflow {cfg.tracking_uri}")
    for stage, cells, trials in stages:
        head = f"{stage}: {trials} trial(s)"
        if stage == "sweep":
            head += f", {len(cells)} search(es) of {cfg.sweep.trials} trials ({cfg.sweep.scheduler or 'no early stop'}, " \
                    f"on {cfg.sweep.metric})"
        if stage == "budget":
            steps = sorted({c.tags.budget for c in cells})
            head += (f" in its first round, at min_steps {', '.join(map(str, steps))}; it doubles up to "
                     f"{cfg.budget.max_steps} while validation gains {cfg.budget.tol} or more; the grid and "
                     "the later stages train at the budget it finds")
        echo(head)
        groups: dict[tuple, list[Cell]] = defaultdict(list)
        for cell in cells:
            groups[_group(cell)].append(cell)
        for key, members in groups.items():
            source, pair, method, volume, arm, ablation, _space, _budget = key
            what = " / ".join(p for p in (source, pair, method, f"{volume} img" if volume != "full" else "full split",
                                          f"arm {arm}" if arm else "") if p)
            if ablation and ablation != "efficiency":
                values = sorted({c.tags.value for c in members}, key=_number)
                what += f" / {ablation} in [{', '.join(values)}]"
            per = Counter(c.tags.value for c in members)
            runs = _runs(members) if len(per) <= 1 else f"{len(members)} runs ({max(per.values())} per value)"
            if stage == "sweep":
                runs = f"a search of {cfg.sweep.trials} trials (seed {members[0].tags.seed})"
            if stage == "teachers":
                what = " / ".join((source, f"teacher {members[0].tags.teacher_name}", pair, "full split"))
            hp = members[0].hp
            budget = f", {hp.epochs} epochs" + (f", min_steps {hp.min_steps}" if hp.min_steps else "")
            echo(f"  {what}: {runs}{budget}; hyperparameters: {_sources(cfg, members[0])}")
    return total


def _number(text: str) -> tuple:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)
