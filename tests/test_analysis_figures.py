"""Fig. 2, Fig. 4 and training curves: the numbers behind them (means and Student-t 95 %
intervals pinned by hand), what is drawn (intervals inside the y-range, every method, chance
line, labels) and the files (PNG at 300 dpi beside a PDF)."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image

from analysis import figures
from analysis.figures import ablation_data, ablation_file, efficiency_data, plot_ablation, plot_curves, plot_efficiency
from analysis.runs import load_study, metric_history
from test_analysis_store import store  # noqa: F401  (fixture)

T_975_2 = 4.302652729911275  # Student t, 97.5th percentile, 2 degrees of freedom (tables)
T_975_1 = 12.706204736174707  # 1 degree of freedom
HALF_3 = 0.1 * T_975_2 / math.sqrt(3)  # values [0.5, 0.6, 0.7]: s = 0.1, n = 3 -> 0.248414


def _png_ok(path) -> None:
    assert path.is_file() and path.stat().st_size > 10_000
    with Image.open(path) as img:
        assert img.size[0] > 400 and img.size[1] > 300
        assert len(set(img.convert("L").getdata())) > 20  # lines, text, shading: not a blank canvas


def _paper_files_ok(png) -> None:
    """A paper figure: the PNG at 300 dpi and a PDF of the same stem."""
    _png_ok(png)
    with Image.open(png) as img:
        assert img.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert img.size == (1500, 1080)  # 5 x 3.6 inches at 300 dpi
    pdf = png.with_suffix(".pdf")
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5_000


def _run(stage, method, volume, seed, acc, *, teachers="t", ablation="", k=None, student="st", status="FINISHED",
         value=""):
    return {"status": status, "stage": stage, "ablation": ablation, "source": "src", "student": student,
            "teachers": teachers if method != "vt" else "", "method": method,
            "pair": f"{teachers}->{student}" if stage == "grid" or method != "vt" else f"->{student}",
            "volume_n": float(volume), "k": k, "seed": seed, "test_acc": acc, "value": value}


# grid: VT, KD, CKD at 10 and 100 images, 3 seeds; acc = base + 0.1 * seed (+ 0.2 at 100 images)
BASE = {"vt": 0.5, "kd": 0.55, "ckd": 0.6}


def constructed_runs() -> pd.DataFrame:
    rows = [_run("grid", m, v, seed, base + 0.1 * seed + (0.2 if v == 100 else 0.0))
            for m, base in BASE.items() for v in (10, 100) for seed in range(3)]
    # the efficiency ablation: VT at 100 (the grid ran it too) and at 400, 3 seeds
    rows += [_run("ablations", "vt", v, seed, 0.3 + 0.05 * seed, ablation="efficiency")
             for v in (100, 400) for seed in range(3)]
    rows += [_run("grid", "kd", 10, 3, 0.0, status="FAILED")]  # left out
    rows += [_run("ablations", "ckd", 100, seed, acc, ablation="k", k=k)
             for k, accs in ((4, [0.5, 0.6, 0.7]), (16, [0.9, 0.95, 1.0]), (64, [0.8])) for seed, acc in enumerate(accs)]
    return pd.DataFrame(rows)


def _drawn(monkeypatch) -> list:
    """The figures the plot functions save, kept for inspection."""
    seen, save = [], figures._save_paper
    monkeypatch.setattr(figures, "_save_paper", lambda fig, path: seen.append(fig) or save(fig, path))
    return seen


def test_fig2_points_have_the_t_interval_by_hand():
    data, origin = efficiency_data(constructed_runs())
    assert list(data.columns) == ["source", "student", "teachers", "method", "volume_n", "mean", "std", "n",
                                  "ci_low", "ci_high", "origin"]
    grid = data[data["origin"] == "grid"].set_index(["method", "volume_n"])
    assert len(grid) == 6 and (grid["n"] == 3).all()  # one row per (method, volume), the FAILED run left out
    vt = grid.loc[("vt", 10.0)]  # values [0.5, 0.6, 0.7]
    assert vt["mean"] == pytest.approx(0.6) and vt["std"] == pytest.approx(0.1)
    assert HALF_3 == pytest.approx(0.248414, abs=1e-6)
    assert vt["ci_low"] == pytest.approx(0.6 - HALF_3, abs=1e-9)
    assert vt["ci_high"] == pytest.approx(0.6 + HALF_3, abs=1e-9)
    assert grid.loc[("ckd", 100.0), "mean"] == pytest.approx(0.9)
    assert grid.loc[("ckd", 100.0), "ci_high"] == pytest.approx(0.9 + HALF_3, abs=1e-9)
    assert origin == "grid runs and the efficiency ablation"


def test_fig2_has_every_grid_method_and_the_ablation_where_the_grid_did_not_run():
    data, _ = efficiency_data(constructed_runs())
    assert set(data["method"]) == {"vt", "kd", "ckd"}
    assert set(data.loc[data["method"] != "vt", "teachers"]) == {"t"} and set(data.loc[data["method"] == "vt",
                                                                                     "teachers"]) == {""}
    vt = data[data["method"] == "vt"].set_index("volume_n")
    assert vt.index.tolist() == [10.0, 100.0, 400.0]  # one line: the grid's volumes and the ablation's
    # at 100 images the grid's runs (tuned like the methods beside them), not the ablation's 0.3-0.4
    assert vt.loc[100.0, "origin"] == "grid" and vt.loc[100.0, "mean"] == pytest.approx(0.8)
    assert vt.loc[400.0, "origin"] == "efficiency ablation" and vt.loc[400.0, "mean"] == pytest.approx(0.35)
    assert vt.loc[400.0, "ci_low"] == pytest.approx(0.35 - 0.05 * T_975_2 / math.sqrt(3), abs=1e-9)


def test_fig2_drawn_with_intervals_inside_the_y_range(monkeypatch, tmp_path):
    data, origin = efficiency_data(constructed_runs())
    seen = _drawn(monkeypatch)
    png = plot_efficiency(data, tmp_path / "fig2.png", origin=origin)
    _paper_files_ok(png)
    ax = seen[0].axes[0]
    low, high = ax.get_ylim()
    assert data["ci_high"].max() > 1.0  # CKD at 100 images: 0.9 + 0.248, not clipped at 1
    assert low < data["ci_low"].min() and high > data["ci_high"].max()
    assert ax.get_ylabel() == "test accuracy" and ax.get_xlabel().startswith("training images")
    assert ax.get_xscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [t.split(",")[0] for t in legend] == ["VT", "CKD", "KD", "chance"]
    assert "CKD, t→st (3 runs)" in legend
    chance = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(chance) == 1 and set(chance[0].get_ydata()) == {0.5}
    bars = sum(len(c.lines[2][0].get_segments()) for c in ax.containers if isinstance(c, ErrorbarContainer))
    assert bars == len(data) == 7  # every point has 3 runs: one interval each


def test_fig4_points_intervals_and_files(monkeypatch, tmp_path):
    ablations = ablation_data(constructed_runs())
    assert list(ablations) == [("ckd", "k")]  # runs recorded with only the older `k` tag read as CKD's k
    data = ablations[("ckd", "k")]
    assert list(data.columns) == ["source", "pair", "volume_n", "k", "mean", "std", "n", "ci_low", "ci_high"]
    assert data["k"].tolist() == [4, 16, 64] and data["n"].tolist() == [3, 3, 1]
    assert data["mean"].tolist() == pytest.approx([0.6, 0.95, 0.8])
    assert data["ci_low"].iloc[0] == pytest.approx(0.6 - HALF_3, abs=1e-9)
    assert data["ci_high"].iloc[1] == pytest.approx(0.95 + 0.05 * T_975_2 / math.sqrt(3), abs=1e-9)
    one = data.iloc[2]  # one run: no spread, no interval
    assert math.isnan(one["std"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    seen = _drawn(monkeypatch)
    _paper_files_ok(plot_ablation(data, tmp_path / "fig4.png", "ckd", "k", paper=32.0))
    ax = seen[0].axes[0]
    low, high = ax.get_ylim()
    assert low < data["ci_low"].min() and high > data["ci_high"].max() > 1.0
    assert ax.get_ylabel() == "test accuracy" and ax.get_xlabel() == "K (negatives)"
    bars = sum(len(c.lines[2][0].get_segments()) for c in ax.containers if isinstance(c, ErrorbarContainer))
    assert bars == 2  # K = 64 has one run and is drawn without an interval
    assert any(ln.get_linestyle() == "--" and set(ln.get_ydata()) == {0.5} for ln in ax.get_lines())


def test_y_range_is_never_narrower_than_the_spread():
    data = pd.DataFrame({"mean": [0.9, 0.92], "std": [0.2, float("nan")], "n": [10, 1],
                         "ci_low": [0.85, float("nan")], "ci_high": [0.95, float("nan")]})
    low, high = figures.y_range(data, None)
    assert low < 0.7 and high > 1.1  # mean ± std reaches beyond the interval of 10 runs
    low, high = figures.y_range(data.iloc[1:], 0.5)
    assert low < 0.5 < 0.92 < high  # the chance line is in view


def test_metric_words():
    assert figures.metric_label("test_acc") == "test accuracy"
    assert figures.metric_label("test_auc") == "test AUC"
    assert figures.metric_label("test_video_auc") == "test video-level AUC"
    assert figures.chance_level("test_auc") == 0.5 and figures.chance_level("test_eer") is None


def test_fig2_from_a_study_store(store, tmp_path):
    runs = load_study(store["uri"], "demo").runs
    data, origin = efficiency_data(runs)
    assert origin == "grid runs and the efficiency ablation"
    eff = data.set_index(["student", "method", "volume_n"])
    # grid: efficientnet VT at 10 (one run: no interval) and 100, KD at 100, CKD at 10 and 100
    assert eff.loc[("efficientnet", "vt", 100.0), "mean"] == pytest.approx(0.80)
    assert eff.loc[("efficientnet", "vt", 100.0), "origin"] == "grid"
    assert math.isnan(eff.loc[("efficientnet", "vt", 10.0), "ci_low"])
    assert eff.loc[("efficientnet", "kd", 100.0), "mean"] == pytest.approx(0.8166667)
    assert eff.loc[("efficientnet", "ckd", 10.0), "mean"] == pytest.approx(0.60)
    # the efficiency ablation (acc = base + 0.1 * volume index + 0.02 * seed, 2 seeds) where the grid did not run
    row = eff.loc[("mobilenet", "vt", 400.0)]
    assert row["mean"] == pytest.approx(0.71) and row["n"] == 2 and row["origin"] == "efficiency ablation"
    assert row["ci_high"] == pytest.approx(0.71 + T_975_1 * (0.02 / math.sqrt(2)) / math.sqrt(2), abs=1e-9)
    assert eff.loc[("efficientnet", "vt", 400.0), "origin"] == "efficiency ablation"
    assert len(data) == 2 + 1 + 2 + 1 + 3  # efficientnet VT 10, 100 (grid) and 400; KD; CKD; mobilenet VT
    _paper_files_ok(plot_efficiency(data, tmp_path / "fig2.png", origin=origin))


def test_fig2_of_a_grid_without_ablations(store, tmp_path):
    data, origin = efficiency_data(load_study(store["uri"], "quick").runs)
    assert origin == "grid runs"
    assert data[["teachers", "method", "volume_n", "n"]].values.tolist() == [["", "vt", 100.0, 2],
                                                                             ["resnet", "ckd", 100.0, 2]]
    assert data["mean"].tolist() == pytest.approx([0.72, 0.775])
    assert plot_efficiency(data, tmp_path / "fig2.png").is_file()


def test_fig4_from_a_study_store(store, tmp_path):
    data = ablation_data(load_study(store["uri"], "demo").runs)[("ckd", "k")]
    assert data["k"].tolist() == [4, 16, 64]
    assert data["mean"].tolist() == pytest.approx([0.805, 0.815, 0.825])
    assert (data["volume_n"] == 100).all() and (data["n"] == 2).all()
    assert (data["mean"] - data["ci_low"]).tolist() == pytest.approx([T_975_1 * 0.005] * 3, abs=1e-9)
    _paper_files_ok(plot_ablation(data, tmp_path / "fig4.png", "ckd", "k"))


def test_ablations_of_any_option_one_figure_each(monkeypatch, tmp_path):
    """`ablations.vary` runs carry the option in `ablation` and its value in `value`: one frame per
    (method, option), numeric values on the x axis, the paper's value marked; the file is
    fig4_<option> unless two methods vary an option of that name."""
    rows = [_run("ablations", "kd", 100, seed, 0.6 + 0.1 * i, ablation="kd_t", value=str(t))
            for i, t in enumerate((1.0, 4.0, 16.0)) for seed in range(3)]
    rows += [_run("ablations", "ckd", 100, seed, 0.7, ablation="lam", value=str(lam))
             for lam in (0.1, 1.0) for seed in range(3)]
    rows += [_run("ablations", "kd", 100, seed, 0.7, ablation="lam", value=str(lam))
             for lam in (0.1, 1.0) for seed in range(3)]
    ablations = ablation_data(pd.DataFrame(rows))
    assert sorted(ablations) == [("ckd", "lam"), ("kd", "kd_t"), ("kd", "lam")]
    kd_t = ablations[("kd", "kd_t")]
    assert kd_t["kd_t"].tolist() == [1.0, 4.0, 16.0] and kd_t["n"].tolist() == [3, 3, 3]
    assert kd_t["mean"].tolist() == pytest.approx([0.6, 0.7, 0.8])
    assert ablation_file("kd", "kd_t", list(ablations)) == "fig4_kd_t"
    assert ablation_file("kd", "lam", list(ablations)) == "fig4_kd_lam"  # CKD varies a lam too
    seen = _drawn(monkeypatch)
    _paper_files_ok(plot_ablation(kd_t, tmp_path / "t.png", "kd", "kd_t", paper=4.0))
    ax = seen[0].axes[0]
    assert ax.get_xlabel() == "T (KD temperature)"  # the label its declaration gives
    assert any(ln.get_linestyle() == ":" and list(ln.get_xdata()) == [4.0, 4.0] for ln in ax.get_lines())
    assert "KD" in ax.get_title()


def test_training_curves_png(store, tmp_path):
    history = metric_history(store["uri"], store["curve"])
    assert set(history["key"]) == {"train_loss", "train_ce", "val_acc", "val_auc"}
    _png_ok(plot_curves(history, tmp_path / "curves.png", "ckd run"))
