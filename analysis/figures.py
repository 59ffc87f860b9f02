"""Fig. 2 (accuracy against training-set size), Fig. 4 (accuracy against K), training curves.

Drawn on `matplotlib.figure.Figure` with the Agg canvas: no pyplot state, no display.
Each figure function takes the tidy runs frame (or a metric history) and returns the
data it plotted, so the numbers behind a figure can be written beside it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, ScalarFormatter

LOSSES = ("train_loss", "train_ce", "train_distill")
VAL = ("val_acc", "val_auc", "val_ap")


def _new(width: float = 5.0, height: float = 3.6, ncols: int = 1):
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def spread(frame: pd.DataFrame, by: list[str], x: str, metric: str) -> pd.DataFrame:
    """Mean, std (ddof=1; 0 for one seed) and n of `metric` over seeds per (by..., x)."""
    ok = frame[frame[metric].notna()] if metric in frame else frame.iloc[0:0]
    if ok.empty:
        return pd.DataFrame(columns=[*by, x, "mean", "std", "n"])
    out = ok.groupby([*by, x])[metric].agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out.sort_values([*by, x]).reset_index(drop=True)


def _finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "FINISHED"] if not runs.empty else runs


def efficiency_data(runs: pd.DataFrame, metric: str = "test_acc") -> tuple[pd.DataFrame, str]:
    """Fig. 2's points: the `ablation=efficiency` runs, else the grid's runs without a teacher (VT)."""
    done = _finished(runs)
    ablation = done[(done["stage"] == "ablations") & (done["ablation"] == "efficiency") & (done["teachers"] == "")]
    origin = "ablations (efficiency)"
    if ablation.empty or metric not in ablation or ablation[metric].isna().all():
        ablation, origin = done[(done["stage"] == "grid") & (done["teachers"] == "")], "grid runs without a teacher"
    return spread(ablation, ["source", "student"], "volume_n", metric), origin


def k_data(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Fig. 4's points: the `ablation=k` runs, per (source, pair, volume) and K."""
    done = _finished(runs)
    ablation = done[(done["stage"] == "ablations") & (done["ablation"] == "k")]
    return spread(ablation, ["source", "pair", "volume_n"], "k", metric)


def _lines(ax, data: pd.DataFrame, group: list[str], x: str, label) -> None:
    for key, sub in data.groupby(group, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        xs, mean, std = sub[x].to_numpy(float), sub["mean"].to_numpy(float), sub["std"].to_numpy(float)
        seeds = int(sub["n"].max())
        (line,) = ax.plot(xs, mean, marker="o", label=f"{label(key)}, {seeds} seed{'s' if seeds > 1 else ''}")
        if (sub["n"] > 1).any():
            ax.fill_between(xs, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1),
                            color=line.get_color(), alpha=0.2, linewidth=0)


def _ticks(ax, values) -> None:
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(values))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())


def plot_efficiency(data: pd.DataFrame, path: Path, metric: str = "test_acc", origin: str = "") -> Path:
    """Fig. 2: one line per student architecture, log x, mean ± std over seeds shaded."""
    fig, ax = _new()
    several = data["source"].nunique() > 1
    _lines(ax, data, ["source", "student"], "volume_n",
           lambda k: f"{k[1]} ({k[0]})" if several else str(k[1]))
    ax.set_xscale("log")
    _ticks(ax, data["volume_n"].astype(int))
    ax.set_xlabel("training images (balanced real/fake)")
    ax.set_ylabel(metric)
    ax.set_title(f"Fig. 2: {metric} against training-set size (VT)" + (f"\n{origin}" if origin else ""),
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_k(data: pd.DataFrame, path: Path, metric: str = "test_acc") -> Path:
    """Fig. 4: accuracy against K, one line per volume, mean ± std over seeds shaded."""
    fig, ax = _new()
    several = data[["source", "pair"]].drop_duplicates().shape[0] > 1
    _lines(ax, data, ["source", "pair", "volume_n"], "k",
           lambda k: f"{int(k[2])} images" + (f" ({k[0]}, {k[1]})" if several else ""))
    ax.set_xscale("log", base=2)
    _ticks(ax, data["k"].astype(int))
    ax.set_xlabel("K (negatives per positive)")
    ax.set_ylabel(metric)
    ax.set_title(f"Fig. 4: {metric} against K (CKD)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_curves(history: pd.DataFrame, path: Path, title: str) -> Path:
    """Training curves of one run: losses (left) and validation metrics (right) against epoch."""
    fig, (left, right) = _new(width=9.0, ncols=2)
    for ax, keys, ylabel in ((left, LOSSES, "loss"), (right, VAL, "validation")):
        for key in keys:
            sub = history[history["key"] == key]
            if not sub.empty:
                ax.plot(sub["step"], sub["value"], marker=".", label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
