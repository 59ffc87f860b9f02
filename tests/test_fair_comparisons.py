"""What makes a study's comparisons ones a reviewer accepts: fixed evaluation rows, methods
tuned on equal footing (or the exceptions marked), and a clear precedence of hyperparameters."""
import math
from dataclasses import replace

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from test_study_config import tiny

from analysis import render
from analysis.tables import build_cells, comparisons, views
from study.cli import main
from study.config import parse_config
from study.plan import ablation_cells, grid_cells, sweep_cells
from study.tracking import Tracking
from trainables.data.subsets import rows_digest
from trainables.errors import ConfigError, UserError
from trainables.hparams import HParams
from trainables.trial import TeacherRef, TrialSpec, dataset_index, eval_frame, run_trial

TEACHERS = {("synthetic", "r"): TeacherRef("test_resnet", "t.pt")}


def specs(cells) -> list[TrialSpec]:
    return [c.spec for c in cells]


# --- fixed evaluation sets --------------------------------------------------------------

def test_every_seed_of_a_cell_is_scored_on_the_same_whole_test_split(tmp_path, synthetic_root):
    cfg = parse_config(tiny(synthetic_root, **{"students.seeds": [0, 1, 2]}), "cfg.yaml", tmp_path)
    cells = [c for c in grid_cells(cfg, TEACHERS, {("ckd", 10): {}}) if c.tags.method == "ckd"]
    assert [c.tags.seed for c in cells] == [0, 1, 2]
    index = dataset_index(cfg.data)
    whole = index[index["split"] == "test"]
    tests = [eval_frame(s, index, "test") for s in specs(cells)]
    assert len({rows_digest(t) for t in tests}) == 1  # identical rows for every seed
    assert sorted(tests[0]["path"]) == sorted(whole["path"])  # the whole split, not a balanced draw
    # the training subsets do differ with the seed: only the evaluation rows are fixed
    assert len({tuple(s.subset_seed for s in specs(cells))}) == 1 and len({s.subset_seed for s in specs(cells)}) == 3


def test_a_capped_validation_set_is_the_studys_own_draw_not_the_seeds(tmp_path, synthetic_root):
    raw = tiny(synthetic_root, **{"students.seeds": [0, 1]})
    raw["sweep"]["max_eval_per_class"] = 5
    cfg = parse_config(raw, "cfg.yaml", tmp_path)
    index = dataset_index(cfg.data)
    (cell, _space), = sweep_cells(cfg, TEACHERS)
    base = cell.spec
    vals = [eval_frame(replace(base, subset_seed=seed), index, "val") for seed in (0, 1, 7)]
    assert len({rows_digest(v) for v in vals}) == 1 and len(vals[0]) == 10
    assert vals[0]["label"].value_counts().to_dict() == {0: 5, 1: 5}
    other = replace(base, eval_seed=base.eval_seed + 1)
    assert rows_digest(eval_frame(other, index, "val")) != rows_digest(vals[0])  # the study's seed decides
    assert len(eval_frame(other, index, "test")) == (index["split"] == "test").sum()  # test is never capped


def test_two_trials_record_the_same_test_rows_and_the_set_size(synthetic_root):
    index = dataset_index({"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32,
                           "seed": 0})
    test = index[index["split"] == "test"]
    outcomes = []
    for seed in (0, 1):
        spec = TrialSpec.from_dict({
            "role": "student", "arch": "test_resnet", "image_size": 32, "volume": 10, "subset_seed": seed,
            "data": {"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32, "seed": 0}})
        outcomes.append(run_trial(spec, HParams(epochs=1, batch_size=10, seed=seed)))
    a, b = outcomes
    assert a.tags["test_rows"] == b.tags["test_rows"] and a.tags["val_rows"] == b.tags["val_rows"]
    assert a.metrics["test_n"] == len(test)
    assert (a.metrics["test_n_real"], a.metrics["test_n_fake"]) == ((test["label"] == 0).sum(),
                                                                      (test["label"] == 1).sum())
    assert 0 <= a.metrics["test_bacc"] <= 1 and "test_video_bacc" in a.metrics


# --- equal treatment ----------------------------------------------------------------------

def test_an_unswept_method_in_a_swept_grid_is_an_error_unless_listed(tmp_path):
    raw = tiny(tmp_path / "d")
    del raw["grid"]
    with pytest.raises(ConfigError, match=r"grid.hparams='sweep': methods \['vt'\] are not swept.*grid.untuned"):
        parse_config(raw, "cfg.yaml", tmp_path)
    raw["grid"] = {"untuned": ["ckd"]}
    with pytest.raises(ConfigError, match=r"grid.untuned\[0\]='ckd': is also swept"):
        parse_config(raw, "cfg.yaml", tmp_path)
    raw["grid"] = {"hparams": "paper", "untuned": ["vt"]}
    with pytest.raises(ConfigError, match="only means something with grid.hparams: sweep"):
        parse_config(raw, "cfg.yaml", tmp_path)
    raw["grid"] = {"untuned": ["vt"]}
    cfg = parse_config(raw, "cfg.yaml", tmp_path)
    origin = {c.tags.method: c.tags.hparams_from for c in grid_cells(cfg, TEACHERS, {("ckd", 10): {"tau": 0.3}})}
    assert origin == {"vt": "paper", "ckd": "sweep"}


def cell_runs(origins: dict[str, str]) -> pd.DataFrame:
    """A runs frame (as analysis.runs reads it) of one block: 3 seeds per method at volume 100."""
    rows = []
    for m_i, (method, origin) in enumerate(origins.items()):
        for seed in range(3):
            rows.append({"run_id": f"{method}{seed}", "status": "FINISHED", "stage": "grid", "source": "synthetic",
                         "method": method, "volume": "100", "pair": "r->s", "teachers": "r", "student": "s",
                         "seed": seed, "arch": "s", "hparams_from": origin, "test_rows": "abc",
                         "test_acc": 0.7 + 0.01 * m_i + 0.001 * seed, "test_auc": 0.8})
    return pd.DataFrame(rows)


def test_untuned_cells_are_marked_in_every_table_and_the_summary_text():
    cells = build_cells(cell_runs({"vt": "paper", "kd": "sweep", "ckd": "sweep"}))
    assert set(cells[cells["untuned"]]["method"]) == {"vt"}
    (acc,) = [v for v in views(cells) if v.metric == "acc"]
    assert acc.untuned
    table = render.markdown_table(acc)
    vt_cell = [line for line in table.splitlines() if line.startswith("| 100")][0].split("|")[3]
    assert render.DAGGER in vt_cell and render.DAGGER not in table.replace(vt_cell, "")
    assert r"$^\dagger$" in render.latex_table(acc, "t")
    # all on the paper's values: nothing to mark
    plain = build_cells(cell_runs({"vt": "paper", "kd": "paper"}))
    assert not plain["untuned"].any() and render.DAGGER not in render.markdown_table(views(plain)[0])


def test_comparisons_pair_only_seeds_scored_on_the_same_rows():
    runs = cell_runs({"vt": "sweep", "ckd": "sweep"})
    runs.loc[(runs["method"] == "ckd") & (runs["seed"] == 2), "test_rows"] = "other"
    comp = comparisons(build_cells(runs))
    row = comp[(comp["metric"] == "acc")].iloc[0]
    assert (row["a"], row["b"], row["n"]) == ("ckd", "vt", 2) and "seeds [2] left out" in row["text"]
    assert row["mean_diff"] == pytest.approx(0.01)


# --- precedence: paper < sweep < the user's students.hparams ------------------------------

def test_a_user_fixed_key_reaches_every_trial(tmp_path):
    raw = tiny(tmp_path / "d", **{"students.hparams": {"epochs": 2, "batch_size": 7, "ckd": {"momentum": 0.9}}})
    raw["grid"] = {"hparams": "paper"}
    raw["sweep"] = {}
    cfg = parse_config(raw, "cfg.yaml", tmp_path)
    cells = grid_cells(cfg, TEACHERS, {})
    assert {c.hparams["batch_size"] for c in cells} == {7}  # the paper's 10 at 10 images does not win
    ckd = next(c for c in cells if c.tags.method == "ckd")
    assert (ckd.hparams["tau"], ckd.hparams["k"], ckd.hparams["momentum"]) == (0.05, 10, 0.9)
    # with a sweep: its choice beats the paper, the user's key beats both
    raw = tiny(tmp_path / "d", **{"students.hparams": {"epochs": 2, "ckd": {"momentum": 0.9}}})
    cfg = parse_config(raw, "cfg.yaml", tmp_path)
    ckd = next(c for c in grid_cells(cfg, TEACHERS, {("ckd", 10): {"tau": 0.3, "batch_size": 8}})
               if c.tags.method == "ckd")
    assert (ckd.hparams["tau"], ckd.hparams["batch_size"], ckd.hparams["k"], ckd.hparams["momentum"]) == \
        (0.3, 8, 10, 0.9)
    (sweep_cell, _), = sweep_cells(cfg, TEACHERS)
    assert sweep_cell.hparams["momentum"] == 0.9 and sweep_cell.hparams["k"] == 10  # paper base, user on top
    vt = next(c for c in grid_cells(cfg, TEACHERS, {("ckd", 10): {"tau": 0.3}}) if c.tags.method == "vt")
    assert "momentum" not in vt.hparams and vt.hparams["epochs"] == 2  # CKD's own section reaches CKD alone


def test_a_key_both_fixed_and_searched_exits_2_naming_both(tmp_path):
    raw = tiny(tmp_path / "d", **{"students.hparams": {"epochs": 2, "lr": 0.01}})
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump(raw))
    work = tmp_path / "w"
    result = CliRunner().invoke(main, ["run", str(path), "--workdir", str(work)])
    assert result.exit_code == 2, result.output
    assert "both.yaml" in result.output and "students.hparams.lr=0.01" in result.output
    assert "search space 'ckd' (sweep.spaces.ckd)" in result.output
    assert not work.exists()


def test_the_k_ablation_keeps_its_own_k_and_refuses_a_fixed_one(tmp_path):
    raw = tiny(tmp_path / "d", ablations={"k_values": [4, 8], "k_volumes": [10]})
    cfg = parse_config(raw, "cfg.yaml", tmp_path)
    ks = [c.hparams["k"] for c in ablation_cells(cfg, TEACHERS, {("ckd", 10): {"k": 64, "tau": 0.2}})]
    assert ks == [4, 4, 4, 8, 8, 8]  # each K at the default three seeds
    raw["students"]["hparams"] = {"epochs": 2, "ckd": {"k": 16}}
    raw["sweep"]["spaces"] = {}
    raw["grid"] = {"hparams": "paper"}
    with pytest.raises(ConfigError, match=r"ablations.k_values=\[4, 8\].*students.hparams fixes k for every trial of ckd"):
        parse_config(raw, "cfg.yaml", tmp_path)


# --- the sweep's choice, recorded and reused ------------------------------------------------

def test_chosen_values_round_trip_through_the_parent_run_and_feed_a_grid(tmp_path):
    tracking = Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", "t")
    parent = tracking.start_parent("h", "name: t\n", "v1")
    chosen = {("ckd", 10): {"tau": 0.25, "lam": 2.0, "batch_size": 8}, ("ckd", 100): {"tau": 0.1}}
    tracking.log_chosen(parent, chosen)
    assert tracking.chosen_of(parent) == chosen
    with pytest.raises(UserError, match="grid.from_run='nope'"):
        tracking.chosen_of("nope")

    raw = tiny(tmp_path / "d", grid={"hparams": "from_run", "from_run": parent})
    cfg = parse_config(raw, "cfg.yaml", tmp_path)
    with pytest.raises(UserError, match="no chosen hyperparameters for method 'vt'"):
        grid_cells(cfg, TEACHERS, chosen)  # from_run covers only what that study swept
    raw["students"]["methods"] = ["ckd"]
    cfg = parse_config(raw, "cfg.yaml", tmp_path)
    (cell,) = grid_cells(cfg, TEACHERS, tracking.chosen_of(parent))
    assert (cell.hparams["tau"], cell.hparams["lam"], cell.tags.hparams_from) == (0.25, 2.0, "from_run")
    raw["grid"] = {"hparams": "from_run"}
    with pytest.raises(ConfigError, match="grid.from_run"):
        parse_config(raw, "cfg.yaml", tmp_path)


def test_resolved_is_said_in_plain_words():
    comp = comparisons(build_cells(cell_runs({"vt": "sweep", "ckd": "sweep"})))
    row = next(comp[comp["metric"] == "acc"].itertuples())
    # every seed: CKD exactly 0.01 above VT: a point interval above 0
    assert row.resolved and render.resolved_text(row) == "resolved: CKD higher than VT"
    noisy = cell_runs({"vt": "sweep", "ckd": "sweep"})
    noisy.loc[noisy["run_id"] == "ckd2", "test_acc"] = 0.60
    row = next(c for c in comparisons(build_cells(noisy)).itertuples() if c.metric == "acc")
    assert not row.resolved and render.resolved_text(row).startswith("not resolved (interval includes 0")
    assert not math.isnan(row.low)


def test_the_sweeps_choice_breaks_ties_by_start_order_whatever_order_runs_come_in():
    """Equal validation values (a small validation set) go to the trial started first; a trial
    ASHA stopped early is never chosen, however high its metric."""
    import itertools
    from types import SimpleNamespace as NS

    from study.runner import best_sweep_run

    def run(rid, start, auc, epoch=2):
        return NS(info=NS(run_id=rid, start_time=start), data=NS(metrics={"val_auc": auc, "epoch": epoch}))

    runs = [run("a", 300, 0.70), run("b", 100, 0.70), run("c", 200, 0.65), run("d", 50, 0.90, epoch=0)]
    for order in itertools.permutations(runs):
        assert best_sweep_run(list(order), "val_auc").info.run_id == "b"
