"""Statistics for many comparisons (Holm, bootstrap, P(A>B)), pairing on (draw, seed), and the
spread split into draw and seed: each against a hand computation."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.stats import (
    BOOTSTRAP_SEED, N_RESAMPLES, bootstrap_interval, holm, is_resolved, paired, probability_of_improvement,
)
from analysis.tables import build_cells, comparisons
from analysis.variance import NOT_SEPARABLE, components, variance_table
from test_analysis_store import store  # noqa: F401  (fixture)


def test_holm_matches_a_hand_computation():
    # sorted: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 4 x 0.005 = 0.02; 3 x 0.01 = 0.03; 2 x 0.03 = 0.06;
    # 1 x 0.04 = 0.04, raised to the running max 0.06; back in the input order
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # nan stays nan and is not counted in m (still 4)
    assert holm([0.01, math.nan, 0.04, 0.03, 0.005]) == pytest.approx([0.03, math.nan, 0.06, 0.06, 0.02],
                                                                      nan_ok=True)
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 2 x 0.5 capped at 1, then the running max
    assert holm([0.2]) == pytest.approx([0.2]) and holm([]).size == 0
    assert np.isnan(holm([math.nan, math.nan])).all()


def test_resolved_needs_two_pairs_and_holm_below_005():
    assert is_resolved(3, 0.049) and not is_resolved(3, 0.05) and not is_resolved(3, math.nan)
    assert not is_resolved(1, 0.0)


def test_probability_of_improvement_counts_ties_half():
    a = [0.9, 0.8, 0.7, 0.6, 0.5]
    b = [0.8, 0.8, 0.75, 0.5, 0.4]  # A wins, tie, B wins, A wins, A wins: (1 + 0.5 + 0 + 1 + 1) / 5
    p, lo, hi = probability_of_improvement(a, b)
    assert p == pytest.approx(0.7)
    assert 0 <= lo <= p <= hi <= 1 and (lo, hi) == bootstrap_interval([1, 0.5, 0, 1, 1])  # pairs resampled
    assert probability_of_improvement(b, a)[0] == pytest.approx(0.3)
    assert probability_of_improvement(a, a) == pytest.approx((0.5, 0.5, 0.5))
    assert all(math.isnan(x) for x in probability_of_improvement([], []))
    one = probability_of_improvement([0.9], [0.8])
    assert one[0] == 1.0 and math.isnan(one[1]) and math.isnan(one[2])


def test_bootstrap_interval_is_the_percentile_one_contains_the_mean_and_is_fixed():
    d = [0.01, 0.03, -0.02, 0.05, 0.02, 0.04]
    low, high = bootstrap_interval(d)
    assert min(d) <= low < np.mean(d) < high <= max(d)
    assert bootstrap_interval(d) == (low, high)  # the same in every report
    ref = sps.bootstrap((np.array(d),), np.mean, method="percentile", confidence_level=0.95,
                        n_resamples=N_RESAMPLES, random_state=BOOTSTRAP_SEED).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high))
    assert all(math.isnan(x) for x in bootstrap_interval([0.1]))
    assert bootstrap_interval([0.1, 0.1, 0.1]) == (0.1, 0.1)
    res = paired({0: 0.8, 1: 0.9, 2: 0.7, 3: 0.85}, {0: 0.7, 1: 0.88, 2: 0.72, 3: 0.8})
    assert (res.boot_low, res.boot_high) == pytest.approx(bootstrap_interval([0.1, 0.02, -0.02, 0.05]))
    assert res.p_improvement == pytest.approx(0.75)


def test_identical_nonzero_differences_have_p_zero_and_identical_values_none():
    assert paired({0: 0.8, 1: 0.9}, {0: 0.7, 1: 0.8}).p == 0.0
    assert math.isnan(paired({0: 0.8, 1: 0.9}, {0: 0.8, 1: 0.9}).p)


def _runs(values: dict[str, dict[tuple[int, int], float]], rows: dict[tuple[str, int, int], str] = {}):
    """Grid runs of one cell per method; values[method][(draw, seed)] = test accuracy."""
    out = []
    for method, by_key in values.items():
        for (draw, seed), acc in by_key.items():
            out.append({"run_id": f"{method}-d{draw}s{seed}", "status": "FINISHED", "stage": "grid",
                        "source": "synthetic", "method": method, "volume": "100", "pair": "r->s", "teachers": "r",
                        "student": "s", "seed": seed, "draw": draw, "arch": "s", "hparams_from": "sweep",
                        "test_rows": rows.get((method, draw, seed), "abc"), "test_acc": acc, "test_auc": 0.8})
    return pd.DataFrame(out)


def test_comparisons_pair_runs_on_draw_and_seed():
    vt = {(0, 0): 0.70, (0, 1): 0.72, (1, 0): 0.60, (1, 1): 0.62}
    ckd = {(0, 0): 0.71, (0, 1): 0.73, (1, 1): 0.63}  # no (draw 1, seed 0) run
    cells = build_cells(_runs({"vt": vt, "ckd": ckd}))
    assert _cell(cells, "vt")["draws"] == (0, 0, 1, 1) and _cell(cells, "vt")["seeds"] == (0, 1, 0, 1)
    row = _acc(comparisons(cells))
    # on (draw, seed): three pairs, each exactly +0.01. On the seed alone, seed 0 would set CKD's 0.71
    # against VT's mean of draws 0 and 1 (0.65): +0.06
    assert row["n"] == 3 and row["seeds"] == ((0, 0), (0, 1), (1, 1))
    assert row["mean_diff"] == pytest.approx(0.01) and row["p_improvement"] == 1.0
    assert row["p"] == 0.0 and row["p_holm"] == 0.0 and row["resolved"]  # one comparison: Holm changes nothing
    # a key scored on other test rows is left out and named by draw and seed
    row = _acc(comparisons(build_cells(_runs({"vt": vt, "ckd": ckd}, {("ckd", 1, 1): "other"}))))
    assert row["n"] == 2 and "seeds [draw 1 seed 1] left out" in row["text"]


def test_holm_family_is_every_comparison_of_one_metric():
    vt = {(0, s): 0.70 + 0.01 * s for s in range(3)}
    kd = {(0, s): 0.72 + 0.01 * s + 0.002 * (s == 1) for s in range(3)}
    ckd = {(0, s): 0.74 + 0.01 * s - 0.003 * (s == 2) for s in range(3)}
    comp = comparisons(build_cells(_runs({"vt": vt, "kd": kd, "ckd": ckd})))
    for metric in ("acc", "auc"):
        fam = comp[comp["metric"] == metric]
        assert fam["p_holm"].to_numpy() == pytest.approx(holm(fam["p"].to_numpy()), nan_ok=True)
        assert list(fam["resolved"]) == [is_resolved(n, p) for n, p in zip(fam["n"], fam["p_holm"])]
    acc = comp[comp["metric"] == "acc"]
    assert len(acc) == 3 and (acc["p_holm"] > acc["p"]).any()  # adjusted over 3, not 1
    text = acc.iloc[0]["text"]
    assert "; p_holm=" in text and ", P(A>B)=" in text


def _cell(cells, method):
    sel = cells[(cells["method"] == method) & (cells["metric"] == "acc")]
    assert len(sel) == 1
    return sel.iloc[0]


def _acc(comp):
    acc = comp[comp["metric"] == "acc"]
    assert len(acc) == 1
    return acc.iloc[0]


# --- where the spread comes from ---------------------------------------------------------

def _crossed(table: list[list[float]]):
    draws, seeds, values = zip(*[(d, s, v) for d, row in enumerate(table) for s, v in enumerate(row)])
    return list(draws), [s + 10 for s in seeds], list(values)  # seeds 10.. never equal a draw


def test_variance_components_of_a_crossed_table_without_residual():
    draw_effect, seed_effect = [0.0, 0.03, 0.06], [0.0, 0.01, -0.01]
    out = components(*_crossed([[0.7 + de + se for se in seed_effect] for de in draw_effect]))
    # MS_draw = 3 x (0.03² + 0 + 0.03²) / 2 = 0.0027, MS_res = 0 -> var_draw = 0.0027 / 3 = 0.03²;
    # MS_seed = 3 x (0.01² + 0.01²) / 2 = 0.0003 -> var_seed = 0.0003 / 3 = 0.01²
    assert (out["n"], out["n_draws"], out["n_seeds"], out["note"]) == (9, 3, 3, "")
    assert out["sd_draw"] == pytest.approx(0.03) and out["sd_seed"] == pytest.approx(0.01)
    assert out["sd_residual"] == pytest.approx(0.0, abs=1e-9)
    assert out["std_draw_means"] == pytest.approx(0.03) and out["std_seed_means"] == pytest.approx(0.01)
    assert out["std"] == pytest.approx(np.std([0.7 + de + se for de in draw_effect for se in seed_effect], ddof=1))


def test_variance_components_with_a_residual_two_draws_by_three_seeds():
    # grand mean 3.5; draw means 3, 4; seed means 2, 3, 5.5
    # MS_draw = 3 x (0.25 + 0.25) / 1 = 1.5; MS_seed = 2 x (2.25 + 0.25 + 4) / 2 = 6.5
    # residuals -0.5, -0.5, 1, 0.5, 0.5, -1 -> MS_res = 3 / 2 = 1.5
    # var_draw = max(0, (1.5 - 1.5) / 3) = 0; var_seed = (6.5 - 1.5) / 2 = 2.5; var_res = 1.5
    out = components(*_crossed([[1, 2, 6], [3, 4, 5]]))
    assert out["sd_draw"] == pytest.approx(0.0)
    assert out["sd_seed"] == pytest.approx(math.sqrt(2.5)) and out["sd_residual"] == pytest.approx(math.sqrt(1.5))
    # transposed (3 draws x 2 seeds): the roles swap, var_draw = (6.5 - 1.5) / 2 divides by the 2 seeds
    out = components(*_crossed([[1, 3], [2, 4], [6, 5]]))
    assert out["sd_draw"] == pytest.approx(math.sqrt(2.5)) and out["sd_seed"] == pytest.approx(0.0)
    assert out["sd_residual"] == pytest.approx(math.sqrt(1.5))


def test_no_split_where_the_seed_drew_the_subset_or_the_design_is_not_crossed():
    legacy = components([0, 1, 2], [0, 1, 2], [0.7, 0.8, 0.75])
    assert legacy["note"] == NOT_SEPARABLE and legacy["std"] == pytest.approx(0.05)
    assert all(math.isnan(legacy[k]) for k in ("sd_draw", "sd_seed", "sd_residual", "std_draw_means"))
    gap = components([0, 0, 1], [0, 1, 0], [0.7, 0.8, 0.75])  # draw 1 lacks seed 1
    assert gap["note"].startswith("not crossed") and math.isnan(gap["sd_draw"]) and math.isnan(gap["sd_seed"])
    assert gap["std_draw_means"] == pytest.approx(np.std([0.75, 0.75], ddof=1))
    one_draw = components([5, 5, 5], [0, 1, 2], [0.7, 0.8, 0.75])
    assert one_draw["note"].startswith("not crossed") and math.isnan(one_draw["sd_seed"])
    assert components([0], [0], [0.7])["note"] == "one run"


def test_variance_table_has_one_row_per_grid_cell():
    vt = {(d, s): 0.7 + 0.03 * d + 0.01 * s for d in range(2) for s in range(2)}
    legacy = {(s, s): 0.7 + 0.01 * s for s in range(3)}
    var = variance_table(build_cells(_runs({"vt": vt, "ckd": legacy})))
    assert list(var["method"]) == ["vt", "ckd"] and set(var["metric"]) == {"acc"}
    vt_row, ckd_row = var.iloc[0], var.iloc[1]
    # 2 x 2, no residual: var_draw = MS_draw / S = 2 x 2 x 0.015² / 2 = 0.03² / 2
    assert vt_row["sd_draw"] == pytest.approx(0.03 / math.sqrt(2))
    assert vt_row["sd_seed"] == pytest.approx(0.01 / math.sqrt(2))
    assert ckd_row["note"] == NOT_SEPARABLE and (ckd_row["n_draws"], ckd_row["n_seeds"]) == (3, 3)


def test_resolved_text_says_why_not():
    from types import SimpleNamespace as Row

    from analysis.render import resolved_text

    base = {"a": "ckd", "b": "vt", "n": 3, "mean_diff": 0.03, "low": 0.01, "high": 0.05}
    assert resolved_text(Row(**base, p_holm=0.01, resolved=True)) == "resolved: CKD higher than VT"
    assert resolved_text(Row(**base, p_holm=0.07, resolved=False)) == \
        "not resolved (Holm-adjusted p = 0.070 over the study's comparisons; the t interval alone excludes 0)"
    assert resolved_text(Row(**{**base, "low": -0.01}, p_holm=0.4, resolved=False)).startswith(
        "not resolved (interval includes 0")


def test_report_writes_where_the_spread_comes_from(store, tmp_path):
    from analysis.report import build_report

    rep = build_report(store["uri"], "demo", tmp_path, formats=("md", "csv"))
    var = pd.read_csv(tmp_path / "variance.csv")
    assert len(var) == 5 and set(var["note"]) == {NOT_SEPARABLE, "one run"}  # the store's runs: draw = seed
    md = (tmp_path / "report.md").read_text()
    section = md.split("## Where the spread comes from")[1].split("\n## ")[0]
    assert f"| {NOT_SEPARABLE} |" in section and "| 100 | xception→efficientnet | CKD | 3 | 3 |" in section
    comp = pd.read_csv(tmp_path / "comparisons.csv")
    assert {"boot_low", "boot_high", "p_holm", "p_improvement", "p_improvement_lo", "p_improvement_hi"} <= \
        set(comp.columns) and len(comp) == len(rep.comparisons)
    assert "Holm-adjusted p < 0.05" in md
