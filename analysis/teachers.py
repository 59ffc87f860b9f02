"""Are the teachers worth distilling? Each teacher's validation and test metrics beside the
best student distilled from it: a teacher that does not clearly beat its students on
validation has nothing to transfer, and a study built on it cannot show what distillation does.
"""
from __future__ import annotations

import math

import pandas as pd

CLEAR_MARGIN = 0.02  # validation accuracy a teacher should have over its best student
TEACHER_COLUMNS = ["source", "teacher", "arch", "val_acc", "val_auc", "test_acc", "test_auc", "code_version",
                   "best_student", "best_student_val_acc", "margin", "verdict"]


def teacher_table(runs: pd.DataFrame, margin: float = CLEAR_MARGIN) -> pd.DataFrame:
    """One row per finished teacher run: its metrics, the best grid cell (mean validation
    accuracy over seeds) distilled from it, and whether the teacher is clearly stronger."""
    if runs.empty:
        return pd.DataFrame(columns=TEACHER_COLUMNS)
    done = runs[runs["status"] == "FINISHED"]
    teachers = done[done["stage"] == "teachers"]
    grid = done[done["stage"] == "grid"]
    rows = []
    for t in teachers.itertuples():
        mine = grid[(grid["source"] == t.source)
                    & grid["teachers"].map(lambda names: t.teacher_name in str(names).split("+"))]
        best_label, best_val = "", math.nan
        if not mine.empty and "val_acc" in mine:
            cells = mine.groupby(["pair", "method", "volume"])["val_acc"].mean().dropna()
            if not cells.empty:
                (pair, method, volume), best_val = cells.idxmax(), float(cells.max())
                best_label = f"{method} {pair} at {volume}"
        val = float(getattr(t, "val_acc", math.nan))
        diff = val - best_val if not math.isnan(best_val) else math.nan
        verdict = ("no distilled student yet" if math.isnan(diff)
                   else "clearly stronger" if diff >= margin
                   else f"WEAK: not {margin:.2f} above its best student on validation")
        rows.append({"source": t.source, "teacher": t.teacher_name, "arch": t.arch, "val_acc": val,
                     "val_auc": _get(t, "val_auc"), "test_acc": _get(t, "test_acc"),
                     "test_auc": _get(t, "test_auc"), "code_version": getattr(t, "code_version", ""),
                     "best_student": best_label, "best_student_val_acc": best_val, "margin": diff,
                     "verdict": verdict})
    return pd.DataFrame(rows, columns=TEACHER_COLUMNS)


def _get(row, name: str) -> float:
    value = getattr(row, name, math.nan)
    return float(value) if value is not None else math.nan


def weak_teachers(table: pd.DataFrame) -> list[str]:
    """Plain-words warnings, one per teacher that is not clearly stronger than its students."""
    return [f"teacher {r.teacher} ({r.source}) has validation ACC {r.val_acc:.3f}, its best student "
            f"({r.best_student}) {r.best_student_val_acc:.3f}: train the teacher longer or larger "
            f"(teachers[].hparams) so that distillation has something to transfer"
            for r in table.itertuples() if r.verdict.startswith("WEAK")]
