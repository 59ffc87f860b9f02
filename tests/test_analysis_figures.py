"""Fig. 2, Fig. 4 and training curves: the numbers behind them and non-trivial PNG files."""
from __future__ import annotations

import pytest
from PIL import Image

from analysis.figures import efficiency_data, k_data, plot_curves, plot_efficiency, plot_k
from analysis.runs import load_study, metric_history
from test_analysis_store import store  # noqa: F401  (fixture)


def _png_ok(path) -> None:
    assert path.is_file() and path.stat().st_size > 10_000
    with Image.open(path) as img:
        assert img.size[0] > 400 and img.size[1] > 300
        assert len(set(img.convert("L").getdata())) > 20  # lines, text, shading: not a blank canvas


def test_fig2_points_and_png(store, tmp_path):
    runs = load_study(store["uri"], "demo").runs
    data, origin = efficiency_data(runs)
    assert origin == "ablations (efficiency)"
    eff = data.set_index(["student", "volume_n"])
    # acc = base + 0.1 * volume index + 0.02 * seed, seeds 0 and 1
    assert eff.loc[("efficientnet", 10.0), "mean"] == pytest.approx(0.61)
    assert eff.loc[("mobilenet", 400.0), "mean"] == pytest.approx(0.71)
    assert eff.loc[("mobilenet", 400.0), "std"] == pytest.approx(0.02 / 2 ** 0.5)
    assert (eff["n"] == 2).all() and len(eff) == 6
    _png_ok(plot_efficiency(data, tmp_path / "fig2.png", origin=origin))


def test_fig2_falls_back_to_grid_vt_runs(store, tmp_path):
    runs = load_study(store["uri"], "quick").runs
    data, origin = efficiency_data(runs)
    assert origin == "grid runs without a teacher"
    assert data[["student", "volume_n", "n"]].values.tolist() == [["test_efficientnet", 100.0, 2]]
    assert data["mean"].iloc[0] == pytest.approx(0.72)
    assert plot_efficiency(data, tmp_path / "fig2.png").is_file()


def test_fig4_points_and_png(store, tmp_path):
    data = k_data(load_study(store["uri"], "demo").runs)
    assert data["k"].tolist() == [4, 16, 64]
    assert data["mean"].tolist() == pytest.approx([0.805, 0.815, 0.825])
    assert (data["volume_n"] == 100).all() and (data["n"] == 2).all()
    _png_ok(plot_k(data, tmp_path / "fig4.png"))


def test_training_curves_png(store, tmp_path):
    history = metric_history(store["uri"], store["curve"])
    assert set(history["key"]) == {"train_loss", "train_ce", "val_acc", "val_auc"}
    _png_ok(plot_curves(history, tmp_path / "curves.png", "ckd run"))
