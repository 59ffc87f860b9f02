"""One Tuner for every swept cell: each (method, volume) keeps its own searcher and its own
early-stopping ladder, while the trials of all cells share the stage's worker processes.

A sweep used to run one Tuner per cell, and every Tuner starts fresh worker processes that
import torch, timm and Ray Tune (about 4.5 s on a 2-core machine, `benchmarks/harness_overhead.py`)
before its first trial; the quickstart's four swept methods paid it four times. Here the
cells' searchers and schedulers sit behind one `Searcher` and one `TrialScheduler`:

- `PerCellSearch` asks the cell with the fewest trials so far (ties: the cell's order) for the
  next configuration, so every cell gets exactly `trials` trials (the equal budget the
  comparisons rest on), each from its own searcher seeded as before; results go back to the
  searcher that suggested the trial.
- `PerCellScheduler` hands each trial's results to its cell's scheduler: ASHA stops a trial
  only against trials of the same method and volume, never against another cell's.

A trial's cell is its config's `cell` (`study.plan.Cell.config()`), named by its `cell` tag.
"""
from __future__ import annotations

import pickle
from typing import Any, Mapping, Sequence

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher


def cell_name(config: Mapping[str, Any]) -> str:
    """The cell a trial config belongs to: its `cell` tag (source/pair/method/volume/seed)."""
    return config["cell"]["tags"]["cell"]


class PerCellSearch(Searcher):
    """`trials` configurations from each cell's own searcher, the cells taken in turn."""

    def __init__(self, cells: Sequence[tuple[dict[str, Any], Searcher]], trials: int, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        names = [cell_name({"cell": config}) for config, _ in cells]
        if len(set(names)) != len(names):
            raise ValueError(f"sweep cells must have distinct names, got {names}")
        self._cells = list(cells)
        self._trials = trials
        self._count = [0] * len(self._cells)
        self._owner: dict[str, int] = {}  # trial id -> index of the cell that suggested it

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return False  # each cell's searcher has its space, metric and mode already

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for i in sorted(range(len(self._cells)), key=lambda i: (self._count[i], i)):
            if self._count[i] >= self._trials:
                continue
            config, searcher = self._cells[i]
            params = searcher.suggest(trial_id)
            if params is None or params == Searcher.FINISHED:
                continue
            self._count[i] += 1
            self._owner[trial_id] = i
            return {**params, "cell": config}
        return Searcher.FINISHED if min(self._count, default=self._trials) >= self._trials else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._owner:
            self._cells[self._owner[trial_id]][1].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._owner:
            self._cells[self._owner[trial_id]][1].on_trial_complete(trial_id, result=result, error=error)

    def counts(self) -> dict[str, int]:
        """Trials suggested so far, by cell name."""
        return {cell_name({"cell": config}): n for (config, _), n in zip(self._cells, self._count)}

    def save(self, checkpoint_path: str) -> None:  # Tune calls it after each step; a resumed sweep restores it
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class PerCellScheduler(FIFOScheduler):
    """Each trial's events go to the scheduler of its cell; trials start first in, first out."""

    def __init__(self, schedulers: Mapping[str, TrialScheduler]):
        super().__init__()
        self._by_cell = dict(schedulers)

    def _of(self, trial) -> TrialScheduler:
        return self._by_cell[cell_name(trial.config)]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return all([s.set_search_properties(metric, mode, **spec) for s in self._by_cell.values()])

    def on_trial_add(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{name}: {s.debug_string()}" for name, s in self._by_cell.items())
