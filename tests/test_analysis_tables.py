"""Every table cell, interval and paper number of the small store, against hand computations."""
from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from analysis.paper import dataset_of, paper_table, table_name
from analysis.render import cell_text, latex_table, markdown_table
from analysis.runs import load_study
from analysis.stats import mean_std, paired, t_interval
from analysis.tables import build_cells, comparisons, missing_paper, views
from test_analysis_store import DEMO, ENS, store  # noqa: F401  (fixture)

PAIR = "xception->efficientnet"
# the paper's Table I, FaceForensics++ Deepfakes, Xception -> EfficientNet (paper_tables.csv)
PAPER_DF_XE = {("full", "vt"): 0.979, ("100", "vt"): 0.832, ("100", "kd"): 0.865, ("100", "ckd"): 0.880,
               ("10", "vt"): 0.512, ("10", "ckd"): 0.535}


def _cells(store, study):
    return build_cells(load_study(store["uri"], study).runs)


def _get(cells, volume, method, metric="acc", pair=PAIR, table=None):
    sel = cells[(cells["volume"] == volume) & (cells["method"] == method) & (cells["metric"] == metric)
                & (cells["pair"] == pair)]
    if table:
        sel = sel[sel["table"] == table]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_paper_copy_is_complete():
    table = paper_table()
    assert len(table) == 199
    assert table.groupby("table").size().to_dict() == {"I": 156, "II": 39, "III": 4}
    assert dataset_of("Face2Face") == ("FaceForensics++", "Face2Face")
    assert dataset_of("Celeb-DF") == ("Celeb-DF", "") and dataset_of("synthetic") is None
    assert table_name("synthetic") == "Table I-like: synthetic"


def test_every_cell_mean_std_n_and_paper(store):
    cells = _cells(store, "demo")
    assert set(cells["table"]) == {"I"}
    assert len(cells) == 2 * (1 + len(DEMO))  # acc and auc of full VT plus the five grid cells
    for (method, volume), values in DEMO.items():
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
        for metric, shift in (("acc", 0.0), ("auc", 0.01)):
            c = _get(cells, volume, method, metric)
            assert c["n"] == n and c["seeds"] == tuple(range(n))
            assert c["mean"] == pytest.approx(mean + shift)
            assert (math.isnan(c["std"]) and n == 1) or c["std"] == pytest.approx(std)
        c = _get(cells, volume, method)
        assert c["paper"] == PAPER_DF_XE[(volume, method)]
        assert c["diff"] == pytest.approx(mean - PAPER_DF_XE[(volume, method)])
        assert math.isnan(_get(cells, volume, method, "auc")["paper"])  # the paper has no AUC
    # the stale duplicate (0.10) of CKD/100/seed 2 is not in; the FAILED KD run is not in
    assert _get(cells, "100", "ckd")["values"] == pytest.approx((0.85, 0.86, 0.83))
    assert _get(cells, "100", "kd")["n"] == 3
    # full: the teachers-stage run whose arch is the student's timm name (efficientnet_b0)
    full = _get(cells, "full", "vt")
    assert full["values"] == pytest.approx((0.97,)) and full["paper"] == 0.979


def test_best_per_row_in_bold(store):
    cells = _cells(store, "demo")
    best = cells[cells["best"]]
    assert {(r.volume, r.method, r.metric) for r in best.itertuples()} == {
        ("100", "ckd", "acc"), ("100", "ckd", "auc"), ("10", "ckd", "acc"), ("10", "ckd", "auc")}


def test_paired_comparisons_by_seed(store):
    comp = comparisons(_cells(store, "demo"))
    acc = comp[comp["metric"] == "acc"].set_index(["volume", "a", "b"])
    # every method against every other of its row, the later one minus the earlier: each
    # distillation method against VT, and against each other
    assert set(acc.index) == {("100", "kd", "vt"), ("100", "ckd", "vt"), ("100", "ckd", "kd"), ("10", "ckd", "vt")}
    t2 = sps.t.ppf(0.975, 2)
    for other, diffs in (("vt", [0.05, 0.04, 0.05]), ("kd", [0.04, 0.02, 0.03])):
        mean = sum(diffs) / 3
        se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
        row = acc.loc[("100", "ckd", other)]
        assert row["n"] == 3 and row["low"] > 0  # both t intervals lie above 0
        assert row["mean_diff"] == pytest.approx(mean)
        assert row["low"] == pytest.approx(mean - t2 * se) and row["high"] == pytest.approx(mean + t2 * se)
        assert row["p"] == pytest.approx(sps.ttest_rel([0.85, 0.86, 0.83], [v - d for v, d in
                                                          zip([0.85, 0.86, 0.83], diffs)]).pvalue)
    # Holm over the study's 3 ACC comparisons with a p-value (CKD - VT at 10 has one seed): sorted p
    # CKD-VT 0.0051 < CKD-KD 0.0351 < KD-VT 0.0377 -> 3 p, then max(previous, 2 p), then max(previous, p)
    p = {k: acc.loc[("100", *k)]["p"] for k in (("ckd", "vt"), ("ckd", "kd"), ("kd", "vt"))}
    holm = {k: acc.loc[("100", *k)]["p_holm"] for k in p}
    assert holm["ckd", "vt"] == pytest.approx(3 * p["ckd", "vt"]) == pytest.approx(0.0152, abs=1e-4)
    assert holm["ckd", "kd"] == pytest.approx(2 * p["ckd", "kd"]) == pytest.approx(0.0702, abs=1e-4)
    assert holm["kd", "vt"] == pytest.approx(2 * p["ckd", "kd"])  # the step-down max, not 1 x 0.0377
    # resolved: Holm-adjusted p < 0.05; CKD - KD's t interval excludes 0 but not after the adjustment
    assert {k for k in acc.index if acc.loc[k]["resolved"]} == {("100", "ckd", "vt")}
    assert acc.loc[("100", "ckd", "vt")]["text"] == \
        "+0.047 [+0.032, +0.061] (n=3); p_holm=0.015, P(A>B)=1.00 [1.00, 1.00]"
    kd_vt = acc.loc[("100", "kd", "vt")]  # KD - VT = (CKD - VT) - (CKD - KD), seed by seed
    assert kd_vt["mean_diff"] == pytest.approx(((0.05 - 0.04) + (0.04 - 0.02) + (0.05 - 0.03)) / 3)
    one = acc.loc[("10", "ckd", "vt")]
    assert one["n"] == 1 and one["text"] == "+0.050, n/a (1 seed)" and math.isnan(one["low"])
    assert not one["resolved"]


def test_missing_paper_cells_are_listed(store):
    runs = load_study(store["uri"], "demo").runs
    missing, not_run = missing_paper(build_cells(runs), sorted(set(runs["source"])))
    assert len(missing) == 39 - 6  # the paper's Deepfakes block minus the six cells the study has
    assert set(missing["subset"]) == {"Deepfakes"}
    keys = set(zip(missing["volume"], missing["method"], missing["teachers"], missing["student"]))
    assert ("10", "kd", "xception", "efficientnet") in keys  # a row we have, a method we lack
    assert ("1000", "ckd", "xception", "efficientnet") in keys  # a volume we never ran
    assert ("100", "ckd", "xception", "efficientnet") not in keys
    assert not_run == ["FaceForensics++ FaceSwap", "FaceForensics++ Face2Face", "FaceForensics++ NeuralTextures",
                       "Celeb-DF"]


def test_table_views_render_paper_beside_and_bold(store):
    acc = views(_cells(store, "demo"))[0]
    assert acc.title == "Table I: FaceForensics++ Deepfakes" and acc.metric == "acc" and acc.has_paper
    assert acc.methods == ["vt", "kd", "ckd"]
    assert acc.rows == [("full", PAIR), ("100", PAIR), ("10", PAIR)]
    md = markdown_table(acc)
    assert "| 100 | xception→efficientnet | 0.800 ± 0.020 (3) · paper 0.832, Δ -0.032 |" in md
    assert "**0.847 ± 0.015 (3)** · paper 0.880, Δ -0.033" in md
    assert "– · paper 0.565" in md  # KD at 10: the paper has it, the study does not
    tex = latex_table(acc, "tab:1")
    assert r"\textbf{0.847 $\pm$ 0.015 (3)} [0.880, $-0.033$]" in tex and r"\label{tab:1}" in tex


def test_ensemble_table_three(store):
    cells = _cells(store, "ens")
    assert set(cells["table"]) == {"II", "III"}
    single, ens = "efficientnet->mobilenet", "xception+efficientnet->mobilenet"
    assert _get(cells, "100", "ckd", pair=single, table="II")["paper"] == 0.775
    assert ens not in set(cells[cells["table"] == "II"]["pair"])
    e = _get(cells, "100", "ckd", pair=ens, table="III")
    assert e["mean"] == pytest.approx(0.80) and e["std"] == 0.0 and e["paper"] == 0.794 and e["best"]
    assert not _get(cells, "100", "ckd", pair=single, table="III")["best"]
    comp = comparisons(cells)
    row = comp[(comp["metric"] == "acc")].iloc[0]
    assert (row["a"], row["b"], row["n"]) == (ens, single, 2)
    half = sps.t.ppf(0.975, 1) * (math.sqrt(2 * 0.01 ** 2) / math.sqrt(2))  # diffs 0.03, 0.01
    diffs = [a - b for a, b in zip(ENS[ens], ENS[single])]  # the values the store wrote, seed by seed
    assert row["mean_diff"] == pytest.approx(sum(diffs) / 2) == pytest.approx(0.02)
    assert row["low"] == pytest.approx(0.02 - half) and row["high"] == pytest.approx(0.02 + half)
    missing, _ = missing_paper(cells, ["Celeb-DF"])
    assert len(missing) == 39 + 4 - 3 and (missing["table"] == "III").sum() == 2


def test_other_source_gives_a_table_one_like_without_paper(store):
    runs = load_study(store["uri"], "quick").runs
    cells = build_cells(runs)
    assert set(cells["table"]) == {"I-like"} and cells["paper"].isna().all()
    assert set(cells["block"]) == {"Table I-like: synthetic"}
    c = _get(cells, "100", "ckd", pair="resnet->test_efficientnet")
    assert c["mean"] == pytest.approx(0.775) and c["std"] == pytest.approx(math.sqrt(2 * 0.025 ** 2))
    missing, not_run = missing_paper(cells, ["synthetic"])
    assert missing.empty and len(not_run) == 5
    assert not views(cells)[0].has_paper


def test_stats_helpers():
    assert mean_std([0.5]) == (0.5, pytest.approx(math.nan, nan_ok=True), 1)
    assert mean_std([]) [2] == 0
    mean, low, high, p = t_interval([0.1, 0.1, 0.1])
    assert (mean, low, high) == pytest.approx((0.1, 0.1, 0.1)) and math.isnan(p)
    res = paired({0: 0.9, 1: 0.8, 5: 0.7}, {1: 0.6, 5: 0.6, 7: 0.1})
    assert res.seeds == (1, 5) and res.mean == pytest.approx(0.15)
    assert paired({0: 1.0}, {1: 1.0}).text == "n/a (no common seed)"
    assert cell_text(0.5, math.nan, 1) == "0.500 (1)" and cell_text(0.5, 0.01, 2) == "0.500 ± 0.010 (2)"


def test_blocks_in_the_papers_order():
    from analysis.tables import source_key, volume_key

    sources = ["synthetic", "NeuralTextures", "Celeb-DF", "Deepfakes", "FaceSwap", "Face2Face"]
    assert sorted(sources, key=source_key) == ["FaceSwap", "Face2Face", "Deepfakes", "NeuralTextures", "Celeb-DF",
                                                "synthetic"]
    assert sorted(["10", "full", "1000", "100"], key=volume_key) == ["full", "1000", "100", "10"]
