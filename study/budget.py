"""`students.hparams.min_steps: auto`: the training budget of each volume, found on validation.

Per volume, every method of the grid is trained at doubling budgets (`budget.start_steps`,
twice that, four times, ... up to `budget.max_steps`) on `budget.seeds`; a method's budget is
the smallest one after which doubling gains less than `budget.tol` in the validation metric
(mean over the seeds). The volume's budget is the largest of its methods' budgets, so that
every method is compared at one budget at which all of them have converged. Only validation
metrics are read: the budget trials never score the test split.

With grid arms (`students.arms`: e.g. flips only against crops and mixup, which is known to
need longer schedules), each method is budgeted in each arm (a "recipe", `recipe(method,
arm)`: "kd" or "kd@fm"), and the volume's budget is one at which every arm of every method has
converged.

This module is the decision alone (pure: scores in, budgets to train or chosen out); the
runner trains what `todo` asks for, round after round, and records `choose` on the parent run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

# (recipe, volume, min_steps) -> the validation metric of each finished budget trial (one per seed)
Scores = Mapping[tuple[str, int, int], Sequence[float]]

ARM_MARK = "@"  # recipe "kd@fm": method kd in grid arm fm (arm names are identifiers: no "@")


def recipe(method: str, arm: str | None = None) -> str:
    """What a budget is chosen for: a method, in a grid arm when the study has arms."""
    return method if not arm else f"{method}{ARM_MARK}{arm}"


def split_recipe(key: str) -> tuple[str, str | None]:
    """(method, arm or None) of a recipe."""
    method, _, arm = key.partition(ARM_MARK)
    return method, arm or None


@dataclass(frozen=True)
class Choice:
    steps: int  # the budget chosen for (method, volume)
    converged: bool  # False: doubling still helped at max_steps (the largest budget tried is used)
    means: tuple[tuple[int, float], ...]  # (steps, mean validation metric) of every budget tried

    def text(self) -> str:
        tried = ", ".join(f"{s}: {m:.3f}" for s, m in self.means)
        return f"{self.steps} steps ({'converged' if self.converged else 'still improving at the largest budget'}; {tried})"


@dataclass(frozen=True)
class BudgetSearch:
    start: int
    max_steps: int
    tol: float
    seeds: int  # trials per (method, volume, budget) for a budget to count as scored

    def ladder(self) -> list[int]:
        """start, 2·start, 4·start, ... while <= max_steps."""
        out, steps = [], self.start
        while steps <= self.max_steps:
            out.append(steps)
            steps *= 2
        return out

    def _mean(self, scores: Scores, key: tuple[str, int, int]) -> float | None:
        values = [float(v) for v in scores.get(key, ()) if v is not None and not math.isnan(float(v))]
        return sum(values) / len(values) if len(values) >= self.seeds else None

    def walk(self, scores: Scores, method: str, volume: int) -> tuple[list[int], Choice | None]:
        """(budgets still to train, None) or ([], the choice) for one (method, volume)."""
        ladder = self.ladder()
        means: list[tuple[int, float]] = []
        for i, steps in enumerate(ladder):
            here = self._mean(scores, (method, volume, steps))
            if here is None:
                missing = [steps] + ([ladder[i + 1]] if i + 1 < len(ladder) and
                                     self._mean(scores, (method, volume, ladder[i + 1])) is None else [])
                return missing, None
            means.append((steps, here))
            if i + 1 == len(ladder):
                return [], Choice(steps, False, tuple(means))
            doubled = self._mean(scores, (method, volume, ladder[i + 1]))
            if doubled is None:
                return [ladder[i + 1]], None
            if doubled - here < self.tol:  # doubling no longer helps: this budget is enough
                means.append((ladder[i + 1], doubled))
                return [], Choice(steps, True, tuple(means))
        raise AssertionError("unreachable: the ladder always has a last budget")

    def todo(self, scores: Scores, methods: Iterable[str], volumes: Iterable[int]) -> list[tuple[str, int, int]]:
        """Every (method, volume, min_steps) the next round must train; [] when all are decided."""
        out = []
        for volume in volumes:
            for method in methods:
                missing, _ = self.walk(scores, method, volume)
                out += [(method, volume, steps) for steps in missing]
        return out

    def choose(self, scores: Scores, methods: Sequence[str],
               volumes: Iterable[int]) -> tuple[dict[int, int], dict[tuple[str, int], Choice]]:
        """(volume -> its budget: the largest of its methods' choices, (method, volume) -> choice)."""
        choices: dict[tuple[str, int], Choice] = {}
        budgets: dict[int, int] = {}
        for volume in volumes:
            for method in methods:
                missing, choice = self.walk(scores, method, volume)
                if choice is None:
                    raise ValueError(f"budget of {method} at {volume} images is not decided yet: "
                                     f"{missing} steps still to train")
                choices[(method, volume)] = choice
            budgets[volume] = max(choices[(m, volume)].steps for m in methods)
        return budgets, choices
