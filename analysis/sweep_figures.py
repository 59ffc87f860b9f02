"""The sweep's figures, per swept cell (`analysis.sweep.SweepCell`): slices (the metric against
each varied hyperparameter) and parallel coordinates (one line per trial across them).

Drawn like `analysis.figures` (Agg canvas, no pyplot state), each saved as PNG at 300 dpi
and PDF. Complete trials are filled, those ASHA stopped hollow (their last value, after
fewer epochs); the `paper` space's value of a hyperparameter is a dashed vertical line.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from analysis.figures import _save_paper, metric_label
from analysis.sweep import Param, SweepCell, param_label

LOG2_RATIO = 8  # numeric choices spanning at least this factor (K: 8..128) get a log2 axis


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1):
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _numeric_choices(p: Param) -> bool:
    return p.kind == "categorical" and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                           for c in p.choices)


def _x(p: Param, values: list) -> list[float]:
    """Where each value goes on the x-axis: itself if numeric, else its choice's index."""
    if p.kind != "categorical" or _numeric_choices(p):
        return [float(v) for v in values]
    return [float(p.choices.index(v)) for v in values]


def _x_axis(ax, p: Param) -> None:
    if p.kind == "categorical" and not _numeric_choices(p):
        ax.set_xticks(range(len(p.choices)), [str(c) for c in p.choices])
        ax.set_xlim(-0.5, len(p.choices) - 0.5)
    elif p.log:
        ax.set_xscale("log")
        pad = (p.high / p.low) ** 0.04  # the searched range, so a point's place in it shows
        ax.set_xlim(p.low / pad, p.high * pad)
        ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^-4, 3x10^-4, ... overlap
    elif _numeric_choices(p) and min(p.choices) > 0 and max(p.choices) / min(p.choices) >= LOG2_RATIO:
        ax.set_xscale("log", base=2)
    if p.kind in ("float", "int") and not p.log:
        pad = 0.04 * (p.high - p.low) or 0.5
        ax.set_xlim(p.low - pad, p.high + pad)
    if _numeric_choices(p):
        ax.set_xticks(sorted(p.choices), [f"{c:g}" for c in sorted(p.choices)])
        ax.minorticks_off()
    ax.set_xlabel(param_label(p.name) + (" (log)" if p.log else ""), fontsize=8)
    ax.tick_params(labelsize=7)


def plot_slices(cell: SweepCell, path: Path) -> Path:
    """One panel per varied hyperparameter: the metric of every trial against its value."""
    params, trials = cell.params, cell.trials
    ncols = min(len(params), 3)
    nrows = math.ceil(len(params) / ncols)
    fig, axes = _figure(2.7 * ncols + 0.3, 2.4 * nrows + 0.6, nrows, ncols)
    best, drawn = cell.best, set()
    for ax, p in zip(axes.flat, params):
        col = f"p_{p.name}"
        for complete, face in ((True, "C0"), (False, "none")):
            sub = trials[(trials["complete"] == complete) & trials[col].notna()]
            if not sub.empty:
                xs = _x(p, [cell.value(p.name, v) for v in sub[col]])
                ax.scatter(xs, sub["value"], s=20, facecolors=face, edgecolors="C0", linewidths=1)
        if best is not None and best.get(col) is not None:
            ax.scatter(_x(p, [cell.value(p.name, best[col])]), [best["value"]], marker="*", s=90, color="C3",
                       zorder=3)
        paper = cell.paper.get(p.name)
        if paper is not None and (p.kind != "categorical" or paper in p.choices):
            ax.axvline(_x(p, [paper])[0], color="0.3", linestyle="--", linewidth=1)
            drawn.add("paper")
        _x_axis(ax, p)
        ax.grid(True, alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric_label(cell.metric), fontsize=8)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker="o", linestyle="", color="C0", label="complete")]
    if not trials["complete"].all():
        handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="C0",
                              label="stopped by ASHA (last value)"))
    if best is not None:
        handles.append(Line2D([], [], marker="*", linestyle="", color="C3", markersize=10, label="best (chosen)"))
    if "paper" in drawn:
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="paper's value"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=7, frameon=False)
    fig.suptitle(f"Sweep: {cell.title()}\n{metric_label(cell.metric)} per trial ({len(trials)} trials)", fontsize=9)
    return _save_paper(fig, path)


def plot_parallel(cell: SweepCell, path: Path) -> Path:
    """One line per trial across the varied hyperparameters, each scaled to [0, 1] over its range
    (log where log, a choice by its index), coloured by the metric; stopped trials dashed."""
    params, trials = cell.params, cell.trials.sort_values("value", kind="stable")  # the best drawn last
    fig, axes = _figure(max(1.3 * len(params) + 1.8, 4.5), 3.6)
    ax = axes[0, 0]
    values = trials["value"].astype(float)
    norm = Normalize(values.min(), values.max() if values.max() > values.min() else values.min() + 1e-9)
    cmap = colormaps["viridis"]
    xs = np.arange(len(params))
    for r in trials.to_dict("records"):
        ys = [p.unit(cell.value(p.name, r.get(f"p_{p.name}"))) if cell.value(p.name, r.get(f"p_{p.name}"))
              is not None else np.nan for p in params]
        ax.plot(xs, ys, color=cmap(norm(r["value"])), linewidth=1.2 if r["complete"] else 0.8,
                linestyle="-" if r["complete"] else "--", alpha=0.9 if r["complete"] else 0.6)
    for i, p in enumerate(params):
        ax.axvline(i, color="0.5", linewidth=0.8)
        low, high = (p.choices[0], p.choices[-1]) if p.kind == "categorical" else (p.low, p.high)
        ax.annotate(f"{high:g}" if isinstance(high, (int, float)) and not isinstance(high, bool) else str(high),
                    (i, 1.0), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=6)
        ax.annotate(f"{low:g}" if isinstance(low, (int, float)) and not isinstance(low, bool) else str(low),
                    (i, 0.0), xytext=(0, -3), textcoords="offset points", ha="center", va="top", fontsize=6)
    ax.set_xticks(xs, [param_label(p.name) + (" (log)" if p.log else "") for p in params], fontsize=7,
                  rotation=20, ha="right")
    ax.set_xlim(-0.3, len(params) - 0.7)
    ax.set_ylim(-0.08, 1.08)
    ax.set_yticks([0, 1], ["low", "high"], fontsize=7)
    ax.set_ylabel("position in the searched range", fontsize=8)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=metric_label(cell.metric))
    ax.set_title(f"Sweep: {cell.title()}\n{len(trials)} trials; dashed: stopped by ASHA (last value)",
                 fontsize=9)
    return _save_paper(fig, path)
