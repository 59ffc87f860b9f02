"""One sweep Tuner for every swept cell (study/per_cell.py): the equal budget per cell, each
cell's searcher suggesting what it would alone, results routed back to it, ASHA deciding
within a cell only, and the searcher's state surviving a save and restore (a resumed sweep).
No Ray cluster: the searcher and scheduler are driven as Tune's controller drives them."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces import get_space
from study.per_cell import PerCellScheduler, PerCellSearch


def cell(name: str) -> dict:
    return {"spec": {}, "hparams": {}, "tags": {"cell": name, "stage": "sweep"}}


class Recorder(Searcher):
    """Suggests {"x": n} for its n-th trial and records what it is told."""

    def __init__(self):
        super().__init__(metric="val_auc", mode="max")
        self.suggested, self.results, self.completed = [], [], []

    def suggest(self, trial_id):
        self.suggested.append(trial_id)
        return {"x": len(self.suggested)}

    def on_trial_result(self, trial_id, result):
        self.results.append((trial_id, result["val_auc"]))

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, error))


def test_each_cell_gets_its_budget_in_turn_and_hears_only_of_its_own_trials():
    a, b, c = Recorder(), Recorder(), Recorder()
    search = PerCellSearch([(cell("vt"), a), (cell("kd"), b), (cell("ckd"), c)], trials=2, metric="val_auc", mode="max")
    configs = [search.suggest(f"t{i}") for i in range(6)]
    assert [cf["cell"]["tags"]["cell"] for cf in configs] == ["vt", "kd", "ckd", "vt", "kd", "ckd"]
    assert [cf["x"] for cf in configs] == [1, 1, 1, 2, 2, 2]  # each cell's own sequence
    assert search.suggest("t6") == Searcher.FINISHED
    assert search.counts() == {"vt": 2, "kd": 2, "ckd": 2}
    search.on_trial_result("t1", {"val_auc": 0.6})
    search.on_trial_complete("t1", {"val_auc": 0.7})
    search.on_trial_complete("t5", None, error=True)
    assert (a.results, a.completed, c.results) == ([], [], [])
    assert b.results == [("t1", 0.6)] and b.completed == [("t1", False)]
    assert c.completed == [("t5", True)]


def test_a_cells_searcher_suggests_what_it_would_alone_and_a_restored_search_goes_on(tmp_path):
    def optuna(method: str) -> OptunaSearch:
        return OptunaSearch(space=get_space(method, method, 100), metric="val_auc", mode="max", seed=3)

    search = PerCellSearch([(cell("kd"), optuna("kd")), (cell("ckd"), optuna("ckd"))], 3, "val_auc", "max")
    alone = {"kd": optuna("kd"), "ckd": optuna("ckd")}
    got = {"kd": [], "ckd": []}
    for i in range(4):
        config = search.suggest(f"t{i}")
        got[config.pop("cell")["tags"]["cell"]].append(config)
        search.on_trial_complete(f"t{i}", {"val_auc": 0.5 + i / 10})
    search.save(str(tmp_path / "searcher.pkl"))
    restored = PerCellSearch([(cell("kd"), optuna("kd")), (cell("ckd"), optuna("ckd"))], 3, "val_auc", "max")
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.counts() == {"kd": 2, "ckd": 2}
    for i in range(4, 6):
        config = restored.suggest(f"t{i}")
        got[config.pop("cell")["tags"]["cell"]].append(config)
    assert restored.suggest("t6") == Searcher.FINISHED
    for name, searcher in alone.items():  # the same seed: the same first (random start-up) suggestions
        want = []
        for i in range(3):
            want.append(searcher.suggest(f"{name}{i}"))
            searcher.on_trial_complete(f"{name}{i}", {"val_auc": 0.5})
        assert got[name] == want, name


def trial(trial_id: str, name: str):
    return SimpleNamespace(trial_id=trial_id, config={"cell": cell(name), "tau": 0.1})


def asha() -> ASHAScheduler:
    return ASHAScheduler(metric="val_auc", mode="max", max_t=4, grace_period=1, reduction_factor=2)


def test_asha_stops_a_trial_only_against_trials_of_its_own_cell():
    scheduler = PerCellScheduler({"vt": asha(), "ckd": asha()})
    good1, good2, weak = trial("g1", "vt"), trial("g2", "vt"), trial("w", "ckd")
    for t in (good1, good2, weak):
        scheduler.on_trial_add(None, t)

    def result(t, auc):
        return scheduler.on_trial_result(None, t, {"training_iteration": 1, "val_auc": auc})

    assert result(good1, 0.8) == result(good2, 0.9) == TrialScheduler.CONTINUE  # better than the cut
    # alone in its cell's first rung: nothing to be cut against, however weak
    assert result(weak, 0.1) == TrialScheduler.CONTINUE
    # one shared ladder would have stopped it
    shared = asha()
    for t in (good1, good2, weak):
        shared.on_trial_add(None, t)
    for t, auc in ((good1, 0.8), (good2, 0.9)):
        shared.on_trial_result(None, t, {"training_iteration": 1, "val_auc": auc})
    assert shared.on_trial_result(None, weak, {"training_iteration": 1, "val_auc": 0.1}) == TrialScheduler.STOP
    # within its own cell the same trial is cut
    weak2 = trial("w2", "vt")
    scheduler.on_trial_add(None, weak2)
    assert result(weak2, 0.1) == TrialScheduler.STOP
    scheduler.on_trial_complete(None, good1, {"training_iteration": 4, "val_auc": 0.9})
    scheduler.on_trial_remove(None, weak2)
    assert "vt:" in scheduler.debug_string() and "ckd:" in scheduler.debug_string()


def test_a_sweep_an_older_version_ran_per_cell_is_refused_not_run_again(tmp_path):
    import pytest

    from study.config import parse_config
    from study.runner import RunOptions, StudyRunner
    from trainables.errors import UserError

    raw = {"name": "s", "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "image_size": 32},
           "teachers": [], "students": {"pairs": ["test_resnet"], "methods": ["vt"], "volumes": [10]},
           "sweep": {"spaces": {"vt": "vt"}, "trials": 2, "volumes": [10]}}
    runner = StudyRunner(parse_config(raw, "s.yaml", tmp_path), RunOptions(workdir=tmp_path))
    runner._refuse_per_cell_sweep()  # nothing recorded: fine
    (Path(runner.storage) / "sweep-vt-v10").mkdir(parents=True)
    with pytest.raises(UserError, match="one Tuner per cell .*sweep-vt-v10.*code_version"):
        runner._refuse_per_cell_sweep()
    (Path(runner.storage) / "sweep").mkdir()  # a sweep this version started: its own to resume
    runner._refuse_per_cell_sweep()


def test_a_sweep_whose_searcher_state_is_missing_is_refused_not_restarted(tmp_path):
    """Ray Tune restarts such an experiment and then waits forever (seen): the runner refuses."""
    import pytest

    from study.tuner import check_search_state
    from trainables.errors import UserError

    check_search_state(str(tmp_path))  # nothing saved: fine
    (tmp_path / "search_gen_state-2026-11-29_21-57-01.json").write_text("{}")
    with pytest.raises(UserError, match="searcher's saved state .*searcher-state-.*is missing"):
        check_search_state(str(tmp_path))
    (tmp_path / "searcher-state-2026-11-29_21-57-01.pkl").write_bytes(b"")
    check_search_state(str(tmp_path))
    check_search_state("s3://bucket/study/sweep")  # remote: left to Ray
