"""Expand a study config into stages of cells (one cell = one trial's fixed config).

A cell is typed: a `TrialSpec` (what to train and score), the constant hyperparameters
(validated here, with the searched ones merged on top at trial time in a sweep) and the
run's `RunTags`. `Cell.config()` serialises it once for Ray; `trainables.tune.split_config`
reads it back. Ray Tune's grid runs a list of cells, an Optuna sweep runs one cell.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from search_spaces import get_space, paper_values
from study.config import STAGES as STUDY_STAGES, ArmConfig, Pair, StudyConfig, stable_hash
from trainables.errors import UserError
from trainables.hparams import HParams, for_method
from trainables.methods import baseline_method, needs_teachers
from trainables.record import RunTags
from trainables.spec import CrossSet, TeacherRef, TransferSpec, TrialSpec, encode_cell

STAGES = STUDY_STAGES  # re-exported: the runner's order


@dataclass(frozen=True)
class Cell:
    stage: str
    spec: TrialSpec
    hparams: Mapping[str, Any]  # flat keys of HParams (the common ones and the method's options)
    tags: RunTags

    hp: HParams = field(init=False, repr=False, compare=False)  # typed once, here: a bad value fails at planning

    def __post_init__(self):
        object.__setattr__(self, "hp", HParams.from_dict(self.hparams, where=f"cell {self.tags.cell}"))

    @property
    def config_hash(self) -> str:
        """What is trained: the spec's identity (TrialSpec marks what does not count) and the
        hyperparameters."""
        return stable_hash({"spec": self.spec.identity(), "hparams": self.hp.identity()})

    @property
    def legacy_hash(self) -> str:
        """The hash a teacher was recorded under before its scoring left its identity."""
        return stable_hash({"spec": self.spec.identity(legacy=True), "hparams": self.hp.identity()})

    def config(self) -> dict[str, Any]:
        """Plain data for Ray (`trainables.spec.encode_cell`; `split_config` reads it back)."""
        return encode_cell(self.spec, self.hparams, self.tags.with_hash(self.config_hash))


# (source, teacher name) -> the teacher's checkpoint
TeacherMap = Mapping[tuple[str, str], TeacherRef]
# (method, volume) -> the hyperparameters chosen for it
ChosenHParams = Mapping[tuple[str, int], Mapping[str, Any]]

# volume -> the training budget (min_steps) the budget stage chose for it (min_steps: auto)
Budgets = Mapping[int, int]


def budget_for(budgets: Budgets | None, volume: int) -> dict[str, Any]:
    """{"min_steps": budget} for `volume` (the nearest budgeted volume's, the larger on a tie:
    larger subsets need more steps), or {} when the study does not find budgets."""
    if not budgets:
        return {}
    nearest = volume if volume in budgets else min(budgets, key=lambda v: (abs(v - volume), -v))
    return {"min_steps": int(budgets[nearest])}


def cross_sets(cfg: StudyConfig) -> tuple[CrossSet, ...]:
    """`evaluate.datasets` as the trial scores them: teachers and grid trials only (the tables'
    models); sweep, budget and ablation trials choose or chart, on their own data."""
    e = cfg.evaluate
    return tuple(CrossSet(d.name, dict(d.data), e.video_rule, e.frames_per_video) for d in e.datasets)


def teacher_cells(cfg: StudyConfig) -> list[Cell]:
    cells = []
    for source, data in cfg.source_specs():
        for t in cfg.teachers:
            if t.checkpoint is not None:
                continue
            spec = TrialSpec(role="teacher", arch=t.arch, data=data, image_size=cfg.image_size, weights=t.weights,
                             evaluate=cross_sets(cfg),
                             stream=cfg.stream, loader_workers=cfg.resources.loader_workers,
                             decode_dir=cfg.decode_cache, memory_budget=cfg.memory_budget)
            hp = {**t.hparams, "method": baseline_method()}
            tags = RunTags(stage="teachers", source=source, method=hp["method"], student=t.arch,
                           seed=int(hp.get("seed", 0)), volume=None, cell=f"{source}/{t.name}", teacher_name=t.name)
            cells.append(Cell("teachers", spec, hp, tags))
    return cells


def given_teachers(cfg: StudyConfig) -> dict[tuple[str, str], TeacherRef]:
    """Teachers whose checkpoint the config names: reused, never trained."""
    return {(source, t.name): TeacherRef(t.arch, t.checkpoint)
            for source, _ in cfg.source_specs() for t in cfg.teachers if t.checkpoint is not None}


def student_cell(cfg: StudyConfig, stage: str, source: str, data: Mapping, pair: Pair | None,
                 student: str, method: str, volume: int, seed: int, hparams: Mapping[str, Any],
                 teachers: TeacherMap, *, eval_splits=("val", "test"), max_eval_per_class=None,
                 tags: Mapping[str, Any] | None = None, forced: Mapping[str, Any] | None = None,
                 draw: int | None = None, evaluate: tuple[CrossSet, ...] = (), arm: ArmConfig | None = None) -> Cell:
    """One student trial. `draw` picks the subset's images (default: the seed, as before
    students.draws existed); `seed` the initial weights and the training order. `arm` (a grid
    arm of students.arms) adds its hyperparameters over students.hparams and replaces
    students.transfer with its own."""
    distils = needs_teachers(method)
    subset = seed if draw is None else draw
    refs = tuple(teachers[(source, name)] for name in pair.teachers) if distils and pair is not None else ()
    t = cfg.students.transfer if arm is None else arm.transfer  # only a distillation term sees it: VT cells keep their identity
    transfer = TransferSpec(t.source, t.size) if t is not None and distils else None
    spec = TrialSpec(
        role="student", arch=student, data=dict(data), image_size=cfg.image_size, volume=volume, subset_seed=subset,
        teachers=refs, eval_splits=tuple(eval_splits), max_eval_per_class=max_eval_per_class,
        eval_seed=cfg.eval_seed, weights=cfg.students.weights.get(student), transfer=transfer, evaluate=evaluate,
        # teachers' outputs on this subset, computed once and shared by all trials of the study
        cache_dir=None if "://" in cfg.storage_path else f"{cfg.storage_path}/{cfg.name}/teacher_cache",
        decode_dir=cfg.decode_cache, memory_budget=cfg.memory_budget)
    # precedence: the paper's (or the sweep's) values < the user's students.hparams < what the
    # cell itself varies (an ablation's K, the method, the seed)
    own = for_method(arm.hparams, method) if arm is not None else {}
    hp = {**hparams, **for_method(cfg.students.hparams, method), **own, **(forced or {}), "method": method,
          "seed": seed}
    label = pair.label if pair is not None else f"->{student}"
    run = seed if draw is None else f"d{draw}s{seed}"
    run = run if arm is None else f"{arm.name}/{run}"
    run_tags = RunTags(stage=stage, source=source, method=method, student=student, seed=seed, volume=volume,
                       draw=subset, cell=f"{source}/{pair.label if pair else student}/{method}/{volume}/{run}",
                       teachers="+".join(pair.teachers) if (pair is not None and distils) else "", pair=label,
                       arm=None if arm is None else arm.name, **(tags or {}))
    return Cell(stage, spec, hp, run_tags)


def budget_cells(cfg: StudyConfig, teachers: TeacherMap, todo: Sequence[tuple[str, int, int]]) -> list[Cell]:
    """The budget stage's trials for each (recipe, volume, min_steps): a recipe is a method, or a
    method in a grid arm (`study.budget.recipe`: "kd@fm", trained with the arm's
    hyperparameters and transfer set); the paper's values and the user's students.hparams at
    that budget, on `budget.seeds`, scored on validation only (the test split is never read to
    choose a budget)."""
    from study.budget import split_recipe
    source, data = cfg.source_specs()[0]
    pair = cfg.students.pairs[0]
    arms = {a.name: a for a in cfg.students.arms}
    cells = []
    for key, volume, steps in todo:
        method, arm = split_recipe(key)
        for seed in cfg.budget.seeds:
            cells.append(student_cell(cfg, "budget", source, data, pair, pair.student, method, volume, seed,
                                      paper_hparams(method, volume), teachers, eval_splits=("val",),
                                      max_eval_per_class=cfg.budget.max_eval_per_class,
                                      tags={"budget": steps, "hparams_from": "paper"},
                                      forced={"min_steps": steps}, arm=arms[arm] if arm else None))
    return cells


def budget_recipes(cfg: StudyConfig) -> list[str]:
    """What the budget stage budgets: each grid method, in each grid arm when there are arms."""
    from study.budget import recipe
    return [recipe(m, a.name) for m in cfg.students.methods for a in cfg.students.arms] or \
        list(cfg.students.methods)


def sweep_cells(cfg: StudyConfig, teachers: TeacherMap, budgets: Budgets | None = None) -> list[tuple[Cell, Any]]:
    """(fixed cell, define-by-run space) per swept method and volume, on the first source and pair."""
    source, data = cfg.source_specs()[0]
    pair = cfg.students.pairs[0]
    out = []
    for method, space_name in cfg.sweep.spaces.items():
        for volume in cfg.sweep.volumes:
            # the searched values go on top of these at trial time (tune.split_config); the
            # config refuses a user-fixed key that the space also sets
            cell = student_cell(cfg, "sweep", source, data, pair, pair.student, method, volume,
                                cfg.sweep.seed, paper_hparams(method, volume), teachers, eval_splits=("val",),
                                max_eval_per_class=cfg.sweep.max_eval_per_class,
                                tags={"space": space_name}, forced=budget_for(budgets, volume))
            out.append((cell, get_space(space_name, method, volume)))
    return out


def paper_hparams(method: str, volume: int) -> dict[str, Any]:
    return paper_values(method, volume)


def chosen_for(chosen: ChosenHParams, method: str, volume: int) -> dict[str, Any] | None:
    """The paper's values under the sweep's choice for (method, volume), else for the nearest
    swept volume; None when `method` was not swept."""
    volumes = [v for (m, v) in chosen if m == method]
    if not volumes:
        return None
    nearest = volume if volume in volumes else min(volumes, key=lambda v: (abs(v - volume), v))
    return {**paper_hparams(method, volume), **chosen[(method, nearest)]}


def grid_hparams(cfg: StudyConfig, chosen: ChosenHParams, method: str, volume: int) -> tuple[dict, str]:
    """(base hyperparameters, where they come from: 'sweep', 'from_run' or 'paper') of a grid cell.
    A method the grid takes from a sweep but that was not swept is a listed `grid.untuned` one."""
    if cfg.grid.hparams != "paper":
        swept = chosen_for(chosen, method, volume)
        if swept is not None:
            return swept, cfg.grid.hparams
        if method not in cfg.grid.untuned:
            raise UserError(f"{cfg.path}: no chosen hyperparameters for method {method!r} "
                            f"(grid.hparams: {cfg.grid.hparams}): sweep it, or list it in grid.untuned")
    return paper_hparams(method, volume), "paper"


def grid_cells(cfg: StudyConfig, teachers: TeacherMap, chosen: ChosenHParams,
               budgets: Budgets | None = None) -> list[Cell]:
    cells, vt_students = [], set()
    explicit = bool(cfg.students.draws)
    for source, data in cfg.source_specs():
        for pair in cfg.students.pairs:
            for method in cfg.students.methods:
                if not needs_teachers(method):  # VT does not depend on the teacher: one cell per student
                    if (source, pair.student) in vt_students:
                        continue
                    vt_students.add((source, pair.student))
                for volume in cfg.students.volumes:
                    hp, origin = grid_hparams(cfg, chosen, method, volume)
                    for arm in cfg.students.arms or (None,):
                        for draw, seed in cfg.students.draw_seed_pairs():
                            cells.append(student_cell(cfg, "grid", source, data, pair, pair.student,
                                                      method, volume, seed, hp, teachers,
                                                      max_eval_per_class=cfg.grid.max_val_per_class,
                                                      tags={"hparams_from": origin},
                                                      forced=budget_for(budgets, volume),
                                                      draw=draw if explicit else None, evaluate=cross_sets(cfg),
                                                      arm=arm))
    return cells


def ablation_cells(cfg: StudyConfig, teachers: TeacherMap, chosen: ChosenHParams,
                   budgets: Budgets | None = None) -> list[Cell]:
    a = cfg.ablations
    source, data = cfg.source_specs()[0]
    cells = []
    pair = cfg.students.pairs[0]
    for vary in a.vary:  # one declared option of one method at each of its values
        for volume in a.vary_volumes or cfg.students.volumes:
            base = chosen_for(chosen, vary.method, volume) if cfg.grid.hparams != "paper" else None
            origin = cfg.grid.hparams if base is not None else "paper"
            for value in vary.values:
                for seed in a.vary_seeds:
                    cells.append(student_cell(cfg, "ablations", source, data, pair, pair.student, vary.method,
                                              volume, seed, base or paper_hparams(vary.method, volume), teachers,
                                              max_eval_per_class=cfg.grid.max_val_per_class,
                                              tags={"ablation": vary.option, "value": str(value), "hparams_from": origin},
                                              forced={vary.option: value, **budget_for(budgets, volume)}))
    baseline = baseline_method()  # the data-efficiency curve is the baseline's
    for student in a.efficiency_students:
        for volume in a.efficiency_volumes:
            for seed in a.efficiency_seeds:
                cells.append(student_cell(cfg, "ablations", source, data, None, student, baseline, volume,
                                          seed, paper_hparams(baseline, volume), teachers,
                                          max_eval_per_class=cfg.grid.max_val_per_class,
                                          tags={"ablation": "efficiency", "hparams_from": "paper"},
                                          forced=budget_for(budgets, volume)))
    return cells
