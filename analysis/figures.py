"""Fig. 2 (accuracy against training-set size), Fig. 4 (accuracy against K), training curves.

Drawn on `matplotlib.figure.Figure` with the Agg canvas: no pyplot state, no display.
Each figure function takes the tidy runs frame (or a metric history) and returns the
data it plotted, so the numbers behind a figure can be written beside it. A point of
Fig. 2 or Fig. 4 is the mean over its runs (seeds) with the Student-t 95 % interval of
that mean, mean ± t_{0.975, n-1} · s/√n; a point with one run has no interval.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, ScalarFormatter

from analysis.runs import ARM_SEPARATOR
from analysis.stats import mean_std, t_interval
from analysis.sweep import param_label
from trainables.methods import method_label, method_names  # torch-free

LOSSES = ("train_loss", "train_ce", "train_distill")
VAL = ("val_acc", "val_auc", "val_ap")
STATS = ("mean", "std", "n", "ci_low", "ci_high")
EFFICIENCY_BY = ["source", "student", "teachers", "method"]  # teachers "": the baseline, one line per student
PAPER_DPI = 300  # Fig. 2 and Fig. 4 go into a paper: PNG at 300 dpi beside a vector PDF
CHANCE = {"acc": 0.5, "bacc": 0.5, "auc": 0.5}  # a balanced test set or a ranking metric: chance is 0.5
METRIC_WORDS = {"acc": "accuracy", "bacc": "balanced accuracy", "auc": "AUC", "eer": "EER", "ap": "AP"}
SPLIT_WORDS = {"test": "test", "val": "validation", "train": "training"}


def _new(width: float = 5.0, height: float = 3.6, ncols: int = 1):
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _save_paper(fig: Figure, path: Path) -> Path:
    """`path` as PNG at PAPER_DPI and the same stem as PDF; returns the PNG's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=PAPER_DPI)
    fig.savefig(path.with_suffix(".pdf"))
    return path.with_suffix(".png")


def _parts(metric: str) -> tuple[str, str, str]:
    """("test", "video_", "acc") of `test_video_acc`; split "" when the key names none."""
    split, _, rest = metric.partition("_")
    if split not in SPLIT_WORDS:
        split, rest = "", metric
    level = "video_" if rest.startswith("video_") else ""
    return split, level, rest.removeprefix("video_")


def metric_label(metric: str) -> str:
    """Words for an axis: `test_acc` -> "test accuracy", `test_video_auc` -> "test video-level AUC"."""
    split, level, base = _parts(metric)
    words = [SPLIT_WORDS.get(split, ""), "video-level" if level else "", METRIC_WORDS.get(base, base)]
    return " ".join(w for w in words if w)


def chance_level(metric: str) -> float | None:
    """The metric's value at chance (accuracy and AUC: 0.5), None where it has no fixed one."""
    return CHANCE.get(_parts(metric)[2])


def spread(frame: pd.DataFrame, by: list[str], x: str, metric: str) -> pd.DataFrame:
    """Per (by..., x) over its runs: mean, std (ddof=1), n and the 95 % interval of the mean
    (ci_low, ci_high: Student t with n-1 degrees of freedom). One run: std and interval NaN."""
    columns = [*by, x, *STATS]
    ok = frame[frame[metric].notna()] if metric in frame else frame.iloc[0:0]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, values in ok.groupby([*by, x], sort=True)[metric]:
        mean, std, n = mean_std(values.to_numpy(float))
        _, low, high, _ = t_interval(values.to_numpy(float))
        rows.append([*key, mean, std, n, low, high])
    return pd.DataFrame(rows, columns=columns)


def _finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "FINISHED"] if not runs.empty else runs


def efficiency_data(runs: pd.DataFrame, metric: str = "test_acc") -> tuple[pd.DataFrame, str]:
    """Fig. 2's points and where they come from: every grid method per (source, student,
    teachers; "" for the baseline, which needs none) at the grid's volumes, and the
    `ablation=efficiency` runs (the baseline) at theirs. Where both ran a line's method at a
    volume, the grid's runs make the point: tuned like the methods beside them (column origin)."""
    done = _finished(runs)
    columns = [*EFFICIENCY_BY, "volume_n", *STATS, "origin"]
    if done.empty or metric not in done:
        return pd.DataFrame(columns=columns), ""
    grid = spread(done[done["stage"] == "grid"], EFFICIENCY_BY, "volume_n", metric).assign(origin="grid")
    ablation = done[(done["stage"] == "ablations") & (done["ablation"] == "efficiency")]
    extra = spread(ablation, EFFICIENCY_BY, "volume_n", metric).assign(origin="efficiency ablation")
    keys = [*EFFICIENCY_BY, "volume_n"]
    taken = set(grid[keys].itertuples(index=False, name=None))
    extra = extra[[k not in taken for k in extra[keys].itertuples(index=False, name=None)]]
    parts = [f for f in (grid, extra) if not f.empty]
    if not parts:
        return pd.DataFrame(columns=columns), ""
    data = pd.concat(parts, ignore_index=True).sort_values(keys).reset_index(drop=True)
    origin = " and ".join({"grid": "grid runs", "efficiency ablation": "the efficiency ablation"}[o]
                          for o in ("grid", "efficiency ablation") if o in set(data["origin"]))
    return data[columns], origin


def ablation_data(runs: pd.DataFrame, metric: str = "test_acc") -> dict[tuple[str, str], pd.DataFrame]:
    """The points of each ablation of an option (ablations.vary; the paper's Fig. 4 is CKD's `k`):
    (method, option) -> per (source, pair, volume) and value of the option (a column named
    after it), mean and 95 % interval over seeds. Runs recorded before the `value` tag read
    their K from the `k` tag."""
    done = _finished(runs)
    if done.empty or "ablation" not in done:
        return {}
    ablation = done[(done["stage"] == "ablations") & ~done["ablation"].isin(["", "efficiency"])]
    out = {}
    for (method, option), sub in ablation.groupby(["method", "ablation"], sort=True):
        text = sub["value"] if "value" in sub else pd.Series("", index=sub.index)
        if "k" in sub:
            text = text.where(text.astype(str) != "", sub["k"])
        values = pd.to_numeric(text, errors="coerce")
        if values.isna().any():  # a categorical option: its values as text
            values = text.astype(str)
        out[(method, option)] = spread(sub.assign(**{option: values}), ["source", "pair", "volume_n"], option, metric)
    return out


def ablation_file(method: str, option: str, varied: list[tuple[str, str]]) -> str:
    """The figure's file stem: `fig4_<option>` (the paper's Fig. 4 is fig4_k), with the method
    when two methods' ablations vary an option of that name."""
    shared = sum(1 for _, o in varied if o == option) > 1
    return f"fig4_{method}_{option}" if shared else f"fig4_{option}"


def _runs_text(n: pd.Series) -> str:
    low, high = int(n.min()), int(n.max())
    return f"{low} run{'s' if high > 1 else ''}" if low == high else f"{low}-{high} runs"


def _lines(ax, data: pd.DataFrame, group: list[str], x: str, label, order=None) -> None:
    """One line per group (in `order` of its key, else sorted): means joined, the 95 % interval
    as error bars (points with one run have none); groups nudged apart along the log x so that
    bars at the same x do not overlap."""
    groups = list(data.groupby(group, sort=True))
    if order is not None:
        groups.sort(key=lambda kv: order(kv[0] if isinstance(kv[0], tuple) else (kv[0],)))
    xs_all = data[x].astype(float)
    decades = max(math.log10(xs_all.max() / xs_all.min()), 1.0)
    for i, (key, sub) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        nudge = 10 ** (0.012 * decades * (i - (len(groups) - 1) / 2))
        sub = sub.sort_values(x)
        xs, mean = sub[x].to_numpy(float) * nudge, sub["mean"].to_numpy(float)
        (line,) = ax.plot(xs, mean, marker="o", markersize=4, label=f"{label(key)} ({_runs_text(sub['n'])})")
        has = sub["ci_low"].notna().to_numpy()
        if has.any():
            low, high = sub["ci_low"].to_numpy(float)[has], sub["ci_high"].to_numpy(float)[has]
            ax.errorbar(xs[has], mean[has], yerr=[mean[has] - low, high - mean[has]], fmt="none",
                        ecolor=line.get_color(), elinewidth=1, capsize=3)


def y_range(data: pd.DataFrame, chance: float | None) -> tuple[float, float]:
    """Limits holding every mean, interval, mean ± std and the chance line, with a margin."""
    std = data["std"].astype(float).fillna(0.0)
    values = pd.concat([data["mean"], data["ci_low"], data["ci_high"], data["mean"] - std, data["mean"] + std])
    values = values.astype(float).dropna().tolist() + ([chance] if chance is not None else [])
    low, high = min(values), max(values)
    margin = max(0.06 * (high - low), 0.01)
    return low - margin, high + margin


def _finish(ax, data: pd.DataFrame, metric: str, xlabel: str, title: str) -> None:
    chance = chance_level(metric)
    if chance is not None:
        ax.axhline(chance, color="0.4", linestyle="--", linewidth=1, label="chance")
    ax.set_ylim(*y_range(data, chance))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric_label(metric))
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    entries = len(ax.get_legend_handles_labels()[0])
    ax.legend(fontsize=7, ncols=1 if entries <= 6 else 2)


def _ticks(ax, values) -> None:
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(values))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())


def _method_text(method: str) -> str:
    """A method's label as figures show it ("kd+train_unlabeled:2000": a transfer-set cell)."""
    base, sep, rest = method.partition("+")
    return method_label(base) + sep + rest


def _pair_text(teachers: str, student: str) -> str:
    return f"{teachers}→{student}" if teachers else student


def plot_efficiency(data: pd.DataFrame, path: Path, metric: str = "test_acc", origin: str = "") -> Path:
    """Fig. 2: one line per (source, student or pair, method) against training images (log x),
    mean and 95 % interval over runs. Writes `path` as PNG (300 dpi) and PDF; returns the PNG."""
    fig, ax = _new()
    several = data["source"].nunique() > 1
    rank = {m: i for i, m in enumerate(method_names())}  # the baseline first, as in the tables
    _lines(ax, data, EFFICIENCY_BY, "volume_n",
           lambda k: f"{_method_text(k[3])}, {_pair_text(k[2], k[1])}" + (f" ({k[0]})" if several else ""),
           order=lambda k: (k[0], k[1], rank.get(k[3], len(rank)), k[3], k[2]))
    ax.set_xscale("log")
    _ticks(ax, data["volume_n"].astype(int))
    _finish(ax, data, metric, "training images (balanced real/fake)",
            f"Fig. 2: {metric_label(metric)} against training images\nmean, 95 % interval over seeds"
            + (f"; {origin}" if origin else ""))
    return _save_paper(fig, path)


def plot_ablation(data: pd.DataFrame, path: Path, method: str, option: str, metric: str = "test_acc",
                  paper: float | None = None) -> Path:
    """An ablation of `method`'s `option` (the paper's Fig. 4: CKD's K): one line per (source,
    pair, volume) against the option's values, mean and 95 % interval over runs; `paper`, the
    method's paper value, is marked. Writes `path` as PNG (300 dpi) and PDF; returns the PNG."""
    fig, ax = _new()
    name = _method_text(method)
    several = data[["source", "pair"]].drop_duplicates().shape[0] > 1
    numeric = pd.api.types.is_numeric_dtype(data[option])
    plotted = data if numeric else data.assign(**{option: data[option].map(
        {v: i + 1 for i, v in enumerate(sorted(set(data[option])))})})
    _lines(ax, plotted, ["source", "pair", "volume_n"], option,
           lambda k: f"{name}, {int(k[2])} images" + (f" ({k[0]}, {k[1].replace('->', '→')})" if several else ""))
    xs = plotted[option].astype(float)
    if numeric and xs.min() > 0 and xs.max() / xs.min() >= 4:
        ints = bool((xs == xs.round()).all())
        ax.set_xscale("log", base=2 if ints else 10)
    if numeric:
        _ticks(ax, data[option])
    else:
        ax.set_xticks(sorted(set(plotted[option])), sorted(set(data[option])))
    if paper is not None and numeric:
        ax.axvline(float(paper), color="0.5", linestyle=":", linewidth=1, label=f"paper's value ({paper:g})")
    _finish(ax, plotted, metric, param_label(option),
            f"{metric_label(metric)} against {param_label(option)} ({name})\nmean, 95 % interval over seeds")
    return _save_paper(fig, path)


def arm_curves_data(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The validation curve of every grid cell that ran in an arm: per (source · arm, method,
    volume, epoch) the mean of its runs' value and the number of runs (`history`: run_id, step,
    value, from `analysis.runs.histories`)."""
    grid = _finished(runs)
    grid = grid[(grid["stage"] == "grid") & grid["source"].str.contains(ARM_SEPARATOR, regex=False)] \
        if not grid.empty else grid
    columns = ["source", "method", "volume_n", "step", "mean", "n"]
    if grid.empty or history.empty:
        return pd.DataFrame(columns=columns)
    merged = history.merge(grid[["run_id", "source", "method", "volume_n"]], on="run_id")
    out = merged.groupby(["source", "method", "volume_n", "step"], sort=True)["value"].agg(["mean", "count"])
    return out.reset_index().rename(columns={"count": "n"})[columns]


def plot_arm_curves(data: pd.DataFrame, path: Path, metric: str) -> Path:
    """Each arm's validation curves: one panel per arm (a table block `<source> · <arm>`), a line
    per method and volume, the mean over its runs against epoch; whether they were still rising
    when training stopped is what shows a budget too short for that arm."""
    blocks = list(dict.fromkeys(data["source"]))
    fig, axes = _new(width=min(4.0 * len(blocks), 16.0), ncols=len(blocks))
    axes = list(axes) if len(blocks) > 1 else [axes]
    for ax, block in zip(axes, blocks):
        sub = data[data["source"] == block]
        for (method, volume), line in sub.groupby(["method", "volume_n"], sort=True):
            ax.plot(line["step"] + 1, line["mean"], marker=".",
                    label=f"{_method_text(method)}, {int(volume)} img (n={int(line['n'].max())})")
        ax.set_title(block.split(ARM_SEPARATOR, 1)[-1], fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"{metric} (mean over runs)")
    fig.suptitle(f"validation curves per arm: {metric} after each epoch", fontsize=9)
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
