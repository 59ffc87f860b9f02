"""Expand a study config into stages of cells (one cell = one trial's fixed config).

A cell carries the `TrialSpec` fields, the constant hyperparameters and the MLflow
tags; Ray Tune's grid runs a list of cells, an Optuna sweep runs one cell with the
searched hyperparameters merged on top.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from search_spaces import get_space
from study.config import Pair, StudyConfig, stable_hash
from trainables.errors import UserError
from trainables.hparams import HParams
from trainables.trial import TeacherRef

STAGES = ("teachers", "sweep", "grid", "ablations")


@dataclass(frozen=True)
class Cell:
    stage: str
    spec: Mapping[str, Any]
    hparams: Mapping[str, Any]
    tags: Mapping[str, str]

    @property
    def config_hash(self) -> str:
        # where and how, not what: streaming decodes the same pixels as the in-memory path
        spec = {k: v for k, v in self.spec.items() if k not in ("device", "cache_dir", "stream", "loader_workers")}
        return stable_hash({"spec": spec, "hparams": HParams.from_dict(self.hparams).to_dict()})

    def config(self) -> dict[str, Any]:
        tags = {**self.tags, "stage": self.stage, "config_hash": self.config_hash}
        return {"spec": dict(self.spec), "hparams": dict(self.hparams), "tags": tags}


# (source, teacher name) -> the teacher's checkpoint
TeacherMap = Mapping[tuple[str, str], TeacherRef]
# (method, volume) -> the hyperparameters chosen for it
ChosenHParams = Mapping[tuple[str, int], Mapping[str, Any]]


def teacher_cells(cfg: StudyConfig) -> list[Cell]:
    cells = []
    for source, data in cfg.source_specs():
        for t in cfg.teachers:
            if t.checkpoint is not None:
                continue
            spec = {"role": "teacher", "arch": t.arch, "data": data, "image_size": cfg.image_size,
                    "weights": t.weights, "stream": cfg.stream, "loader_workers": cfg.resources.loader_workers}
            hp = {**t.hparams, "method": "vt"}
            cells.append(Cell("teachers", spec, hp, {
                "method": "vt", "teachers": "", "teacher_name": t.name, "student": t.arch,
                "volume": "full", "seed": str(hp.get("seed", 0)), "source": source,
                "cell": f"{source}/{t.name}",
            }))
    return cells


def given_teachers(cfg: StudyConfig) -> dict[tuple[str, str], TeacherRef]:
    """Teachers whose checkpoint the config names: reused, never trained."""
    return {(source, t.name): TeacherRef(t.arch, t.checkpoint)
            for source, _ in cfg.source_specs() for t in cfg.teachers if t.checkpoint is not None}


def student_cell(cfg: StudyConfig, stage: str, source: str, data: Mapping, pair: Pair | None,
                 student: str, method: str, volume: int, seed: int, hparams: Mapping[str, Any],
                 teachers: TeacherMap, *, eval_splits=("val", "test"), max_eval_per_class=None,
                 extra_tags: Mapping[str, str] | None = None, forced: Mapping[str, Any] | None = None) -> Cell:
    refs = []
    if method != "vt" and pair is not None:
        refs = [teachers[(source, name)] for name in pair.teachers]
    spec = {
        "role": "student", "arch": student, "data": dict(data), "image_size": cfg.image_size,
        "volume": volume, "subset_seed": seed,
        "teachers": [{"arch": r.arch, "checkpoint": r.checkpoint} for r in refs],
        "eval_splits": list(eval_splits), "max_eval_per_class": max_eval_per_class,
        "eval_seed": cfg.eval_seed,
        "weights": cfg.students.weights.get(student),
        # teachers' outputs on this subset, computed once and shared by all trials of the study
        "cache_dir": None if "://" in cfg.storage_path else f"{cfg.storage_path}/{cfg.name}/teacher_cache",
    }
    # precedence: the paper's (or the sweep's) values < the user's students.hparams < what the
    # cell itself varies (an ablation's K, the method, the seed)
    hp = {**hparams, **cfg.students.hparams, **(forced or {}), "method": method, "seed": seed}
    teacher_label = "+".join(pair.teachers) if (pair is not None and method != "vt") else ""
    tags = {
        "method": method, "teachers": teacher_label, "student": student, "volume": str(volume),
        "seed": str(seed), "source": source, "pair": pair.label if pair is not None else f"->{student}",
        "cell": f"{source}/{pair.label if pair else student}/{method}/{volume}/{seed}",
        **(extra_tags or {}),
    }
    return Cell(stage, spec, hp, tags)


def sweep_cells(cfg: StudyConfig, teachers: TeacherMap) -> list[tuple[Cell, Any]]:
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
                                extra_tags={"space": space_name})
            out.append((cell, get_space(space_name, method, volume)))
    return out


def paper_hparams(method: str, volume: int) -> dict[str, Any]:
    from optuna.trial import FixedTrial
    return get_space("paper", method, volume)(FixedTrial({}))


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


def grid_cells(cfg: StudyConfig, teachers: TeacherMap, chosen: ChosenHParams) -> list[Cell]:
    cells, vt_students = [], set()
    for source, data in cfg.source_specs():
        for pair in cfg.students.pairs:
            for method in cfg.students.methods:
                if method == "vt":  # VT does not depend on the teacher: one cell per student
                    if (source, pair.student) in vt_students:
                        continue
                    vt_students.add((source, pair.student))
                for volume in cfg.students.volumes:
                    hp, origin = grid_hparams(cfg, chosen, method, volume)
                    for seed in cfg.students.seeds:
                        cells.append(student_cell(cfg, "grid", source, data, pair, pair.student,
                                                  method, volume, seed, hp, teachers,
                                                  max_eval_per_class=cfg.grid.max_val_per_class,
                                                  extra_tags={"hparams_from": origin}))
    return cells


def ablation_cells(cfg: StudyConfig, teachers: TeacherMap, chosen: ChosenHParams) -> list[Cell]:
    a = cfg.ablations
    source, data = cfg.source_specs()[0]
    cells = []
    if a.k_values:
        pair = cfg.students.pairs[0]
        for volume in a.k_volumes or cfg.students.volumes:
            base = chosen_for(chosen, "ckd", volume) if cfg.grid.hparams != "paper" else None
            origin = cfg.grid.hparams if base is not None else "paper"
            for k in a.k_values:
                for seed in a.k_seeds:
                    cells.append(student_cell(cfg, "ablations", source, data, pair, pair.student, "ckd",
                                              volume, seed, base or paper_hparams("ckd", volume), teachers,
                                              max_eval_per_class=cfg.grid.max_val_per_class,
                                              extra_tags={"ablation": "k", "k": str(k), "hparams_from": origin},
                                              forced={"k": k}))
    for student in a.efficiency_students:
        for volume in a.efficiency_volumes:
            for seed in a.efficiency_seeds:
                cells.append(student_cell(cfg, "ablations", source, data, None, student, "vt", volume,
                                          seed, paper_hparams("vt", volume), teachers,
                                          max_eval_per_class=cfg.grid.max_val_per_class,
                                          extra_tags={"ablation": "efficiency", "hparams_from": "paper"}))
    return cells
