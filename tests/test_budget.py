"""min_steps: auto: budgets found by doubling on validation (study/budget.py), the budget
stage's cells, the draws x seeds grid, and each run's recorded budget (`steps`)."""
import math

import pytest
from mlflow.tracking import MlflowClient

from study.budget import BudgetSearch
from study.config import parse_config
from study.plan import budget_cells, budget_for, grid_cells
from trainables.errors import ConfigError
from trainables.hparams import HParams, total_steps


def search(**kw):
    return BudgetSearch(**{"start": 50, "max_steps": 800, "tol": 0.01, "seeds": 2, **kw})


def scores_from(curves: dict) -> dict:
    """(method, volume) -> {steps: mean} as two seeds' values around each mean (+-0.004)."""
    return {(m, v, s): [x - 0.004, x + 0.004] for (m, v), curve in curves.items() for s, x in curve.items()}


def test_the_ladder_doubles_up_to_max_steps():
    assert search().ladder() == [50, 100, 200, 400, 800]
    assert search(max_steps=799).ladder() == [50, 100, 200, 400]


def test_the_first_round_trains_the_first_two_budgets_of_every_method():
    todo = search().todo({}, ["vt", "kd"], [10, 100])
    assert todo == [("vt", 10, 50), ("vt", 10, 100), ("kd", 10, 50), ("kd", 10, 100),
                    ("vt", 100, 50), ("vt", 100, 100), ("kd", 100, 50), ("kd", 100, 100)]


def test_the_smallest_budget_after_which_doubling_stops_helping_is_chosen():
    # vt gains 0.10, 0.05, then 0.004 (< tol) from 200 to 400: 200 steps;
    # kd gains until 400 -> 800 (0.005): 400 steps; the volume takes the larger one
    curves = {("vt", 100): {50: 0.60, 100: 0.70, 200: 0.75, 400: 0.754},
              ("kd", 100): {50: 0.55, 100: 0.62, 200: 0.70, 400: 0.76, 800: 0.765}}
    s = search()
    assert s.todo(scores_from(curves), ["vt", "kd"], [100]) == []
    budgets, choices = s.choose(scores_from(curves), ["vt", "kd"], [100])
    assert choices[("vt", 100)].steps == 200 and choices[("vt", 100)].converged
    assert choices[("kd", 100)].steps == 400 and choices[("kd", 100)].converged
    assert budgets == {100: 400}
    assert choices[("vt", 100)].means == ((50, pytest.approx(0.60)), (100, pytest.approx(0.70)),
                                          (200, pytest.approx(0.75)), (400, pytest.approx(0.754)))


def test_undecided_methods_ask_for_the_next_doubling_only():
    curves = {("vt", 100): {50: 0.60, 100: 0.70}, ("kd", 100): {50: 0.60, 100: 0.605}}
    assert search().todo(scores_from(curves), ["vt", "kd"], [100]) == [("vt", 100, 200)]
    with pytest.raises(ValueError, match="not decided"):
        search().choose(scores_from(curves), ["vt", "kd"], [100])


def test_a_budget_with_too_few_finished_seeds_is_trained_again_not_judged():
    scores = {("vt", 100, 50): [0.6, 0.6], ("vt", 100, 100): [0.9]}  # one seed of 100 finished
    assert search().todo(scores, ["vt"], [100]) == [("vt", 100, 100)]
    scores[("vt", 100, 100)].append(math.nan)  # a nan metric does not count either
    assert search().todo(scores, ["vt"], [100]) == [("vt", 100, 100)]


def test_still_improving_at_the_largest_budget_takes_it_and_says_so():
    curves = {("vt", 100): {50: 0.5, 100: 0.6, 200: 0.7, 400: 0.8, 800: 0.9}}
    budgets, choices = search().choose(scores_from(curves), ["vt"], [100])
    assert budgets == {100: 800} and not choices[("vt", 100)].converged
    assert "still improving" in choices[("vt", 100)].text()


def test_budget_for_takes_the_nearest_budgeted_volume_the_larger_on_a_tie():
    budgets = {10: 100, 100: 400}
    assert budget_for(budgets, 100) == {"min_steps": 400}
    assert budget_for(budgets, 400) == {"min_steps": 400}
    assert budget_for(budgets, 20) == {"min_steps": 100}
    assert budget_for({10: 100, 30: 300}, 20) == {"min_steps": 300}
    assert budget_for(None, 20) == {} and budget_for({}, 20) == {}


# --- the config and the plan ---------------------------------------------------------------------
def config(tmp_path, students=None, **sections):
    raw = {"name": "b", "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "num_images": 480,
                                 "size": 32, "image_size": 32},
           "teachers": [{"name": "r", "arch": "test_resnet"}],
           "students": {"pairs": ["r->test_resnet"], "methods": ["vt", "kd"], "volumes": [10, 20],
                        "seeds": [0, 1], "hparams": {"epochs": 3, "min_steps": "auto"}, **(students or {})},
           "grid": {"hparams": "paper"}, **sections}
    return parse_config(raw, "b.yaml", tmp_path)


TEACHERS = {("synthetic", "r"): None}


def test_budget_trials_score_validation_only_at_the_budget_they_try(tmp_path):
    cfg = config(tmp_path, budget={"seeds": [0, 1, 2], "max_eval_per_class": 30})
    assert cfg.students.auto_budget and "min_steps" not in cfg.students.hparams
    from trainables.trial import TeacherRef
    teachers = {("synthetic", "r"): TeacherRef("test_resnet", "/t.pt")}
    cells = budget_cells(cfg, teachers, [("kd", 10, 50), ("kd", 10, 100)])
    assert len(cells) == 6
    for cell in cells:
        assert cell.spec.eval_splits == ("val",)  # the test split is never scored, so never read
        assert cell.spec.max_eval_per_class == 30 and cell.stage == "budget"
        assert cell.hparams["min_steps"] == cell.tags.budget and cell.tags.budget in (50, 100)
    assert len({c.config_hash for c in cells}) == 6


def test_the_budget_is_chosen_on_validation_and_its_section_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="budget.metric"):
        config(tmp_path, budget={"metric": "test_acc"})
    with pytest.raises(ConfigError, match="min_steps: auto"):
        config(tmp_path, students={"hparams": {"epochs": 3}}, budget={"seeds": [0, 1]})
    with pytest.raises(ConfigError, match="budget.seeds"):
        config(tmp_path, budget={"seeds": [0]})
    with pytest.raises(ConfigError, match="budget.max_steps"):
        config(tmp_path, budget={"start_steps": 100, "max_steps": 150})


def test_grid_cells_take_their_volumes_budget(tmp_path):
    cfg = config(tmp_path, students={"methods": ["vt"], "pairs": ["test_resnet"]}, teachers=[])
    cells = grid_cells(cfg, {}, {}, budgets={10: 100, 20: 400})
    assert {(c.tags.volume, c.hparams["min_steps"]) for c in cells} == {(10, 100), (20, 400)}
    hp = HParams.from_dict(cells[-1].hparams)
    assert total_steps(20, hp) == 3 * math.ceil(400 / 3)  # 134 steps an epoch, 3 epochs


def test_draws_times_seeds_make_every_pair_once_and_draws_pick_the_subset(tmp_path):
    cfg = config(tmp_path, students={"methods": ["vt"], "pairs": ["test_resnet"], "draws": [5, 6],
                                     "seeds": [0, 1, 2], "hparams": {"epochs": 3}}, teachers=[])
    cells = grid_cells(cfg, {}, {})
    per_volume = [(c.tags.draw, c.tags.seed, c.spec.subset_seed) for c in cells if c.tags.volume == 10]
    assert sorted(per_volume) == [(d, s, d) for d in (5, 6) for s in (0, 1, 2)]
    assert all(c.hparams["seed"] == c.tags.seed for c in cells)  # the seed: initial weights and order
    assert len({c.tags.cell for c in cells}) == len(cells) == 12
    # without draws each seed draws its own subset, and cells keep their names
    legacy = grid_cells(config(tmp_path, students={"methods": ["vt"], "pairs": ["test_resnet"],
                                                   "hparams": {"epochs": 3}}, teachers=[]), {}, {})
    assert [(c.tags.draw, c.spec.subset_seed, c.tags.cell.rsplit("/", 1)[1]) for c in legacy if c.tags.volume == 10] \
        == [(0, 0, "0"), (1, 1, "1")]
    with pytest.raises(ConfigError, match="students.draws"):
        config(tmp_path, students={"draws": [1, 1]})


# --- the runner reads validation only ------------------------------------------------------------
def test_the_runner_scores_budgets_from_validation_metrics_never_test(tmp_path):
    """Budget runs whose test accuracy would pick another budget: only `budget.metric` is read."""
    from study.runner import RunOptions, StudyRunner

    cfg = config(tmp_path, students={"methods": ["vt"], "pairs": ["test_resnet"]}, teachers=[],
                 budget={"seeds": [0, 1], "max_steps": 200})
    runner = StudyRunner(cfg, RunOptions(workdir=tmp_path))
    runner.tracking.start_parent("h", "name: b\n", "v1")
    client = MlflowClient(cfg.tracking_uri)
    val = {50: 0.60, 100: 0.70, 200: 0.705}  # doubling stops helping after 100
    test = {50: 0.60, 100: 0.61, 200: 0.90}  # on test, 200 would look better
    for steps in (50, 100, 200):
        for seed in (0, 1):
            run = client.create_run(runner.tracking.experiment_id, tags={
                "study": "b", "kind": "trial", "stage": "budget", "method": "vt", "volume": "10",
                "seed": str(seed), "budget": str(steps), "cell": "c"})
            client.log_metric(run.info.run_id, "val_auc", val[steps])
            client.log_metric(run.info.run_id, "test_acc", test[steps])
            client.set_terminated(run.info.run_id, "FINISHED")
    scores = runner._budget_scores()
    assert set(scores) == {("vt", 10, s) for s in (50, 100, 200)}
    assert all(v == [val[s]] * 2 for (_, _, s), v in scores.items())
    b = cfg.budget
    budgets, _ = BudgetSearch(b.start_steps, b.max_steps, b.tol, len(b.seeds)).choose(scores, ["vt"], [10])
    assert budgets == {10: 100}


# --- patience: every arm budgeted to its own convergence ---------------------------------------

ARMS = [{"name": "flip", "hparams": {"augment": ["flip"]}},
        {"name": "fm", "hparams": {"augment": ["flip", "crop", "mixup"]}}]


def test_with_arms_every_method_is_budgeted_in_every_arm_with_the_arms_recipe(tmp_path):
    from study.plan import budget_recipes
    from trainables.trial import TeacherRef
    cfg = config(tmp_path)
    assert budget_recipes(cfg) == list(cfg.students.methods)  # no arms: a method each
    raw_arms = config(tmp_path, students={"arms": ARMS})
    assert budget_recipes(raw_arms) == ["vt@flip", "vt@fm", "kd@flip", "kd@fm"]
    teachers = {("synthetic", "r"): TeacherRef("test_resnet", "/t.pt")}
    cells = budget_cells(raw_arms, teachers, [("kd@fm", 10, 50), ("vt@flip", 10, 50)])
    fm = [c for c in cells if c.tags.arm == "fm"]
    assert len(fm) == len(raw_arms.budget.seeds) and all(c.tags.method == "kd" for c in fm)
    assert all(c.hp.augment == ("flip", "crop", "mixup") and c.hp.min_steps == 50 for c in fm)  # the arm's recipe
    assert all(c.hp.augment == ("flip",) for c in cells if c.tags.arm == "flip")


def test_the_volumes_budget_is_one_at_which_every_arm_has_converged():
    # flips converge at 100 steps; crops + mixup still gain until 400 -> 800 (0.004 < tol): 400
    curves = {("kd@flip", 100): {50: 0.60, 100: 0.70, 200: 0.705},
              ("kd@fm", 100): {50: 0.50, 100: 0.56, 200: 0.63, 400: 0.69, 800: 0.694}}
    budgets, choices = search().choose(scores_from(curves), ["kd@flip", "kd@fm"], [100])
    assert choices[("kd@flip", 100)].steps == 100 and choices[("kd@fm", 100)].steps == 400
    assert budgets == {100: 400}
    from study.budget import recipe, split_recipe
    assert split_recipe(recipe("kd", "fm")) == ("kd", "fm") and split_recipe(recipe("kd")) == ("kd", None)


def test_study_plan_shows_the_budget_stages_first_round_per_arm(tmp_path):
    from study.plan_view import describe
    lines: list[str] = []
    cfg = config(tmp_path, students={"arms": ARMS}, budget={"start_steps": 50, "max_steps": 400, "seeds": [0, 1, 2]})
    total = describe(cfg, lines.append)
    head = next(line for line in lines if line.startswith("budget:"))
    # 4 recipes (2 methods x 2 arms) x 2 volumes x the first two budgets x 3 seeds
    assert head.startswith("budget: 48 trial(s) in its first round, at min_steps 50, 100")
    assert any("/ kd / 10 img / arm fm: 3 runs (seeds 0, 1, 2), 3 epochs, min_steps 100" in line for line in lines)
    grid = next(line for line in lines if line.startswith("grid:"))
    assert grid == "grid: 16 trial(s)" and total == 48 + 16 + 1  # + the teacher
