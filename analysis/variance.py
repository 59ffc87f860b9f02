"""Where a grid cell's spread comes from: the training subset's draw or the seed.

A cell's runs each have a draw (which images form the training subset) and a seed (the
initial weights and training order). When every draw is run with every seed (a crossed
design, D >= 2 draws and S >= 2 seeds, each (draw, seed) once), the two-way ANOVA without
replication splits the variance:

    MS_draw = S Σ_d (ȳ_d· - ȳ)² / (D - 1),  MS_seed = D Σ_s (ȳ_·s - ȳ)² / (S - 1),
    MS_res = Σ_ds (y_ds - ȳ_d· - ȳ_·s + ȳ)² / ((D - 1)(S - 1)),
    var_draw = max(0, (MS_draw - MS_res) / S),  var_seed = max(0, (MS_seed - MS_res) / D),
    var_res = MS_res

reported as standard deviations. Studies recorded before draws existed drew the subset with
the seed (draw = seed): the two cannot be told apart there, and no split is made up.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.stats import mean_std, per_seed

NOT_SEPARABLE = "draw = seed: not separable"
NOT_CROSSED = "not crossed"
ONE_RUN = "one run"

VARIANCE_COLUMNS = ["source", "volume", "pair", "method", "metric", "n", "n_draws", "n_seeds", "mean", "std",
                    "sd_draw", "sd_seed", "sd_residual", "std_draw_means", "std_seed_means", "note"]


def _std(x) -> float:
    x = np.asarray(list(x), dtype=float)
    return float(x.std(ddof=1)) if x.size > 1 else math.nan


def components(draws: Sequence[int], seeds: Sequence[int], values: Sequence[float]) -> dict:
    """n, n_draws, n_seeds, mean, std (all runs), sd_draw, sd_seed, sd_residual (crossed designs
    only, else nan), std_draw_means and std_seed_means (the plain std of the per-draw and per-seed
    means; nan where draw = seed), and a note saying why a split is missing ("" when made)."""
    mean, std, n = mean_std(values)
    y = per_seed(list(zip(draws, seeds)), values)  # (draw, seed) -> value
    ds, ss = sorted({d for d, _ in y}), sorted({s for _, s in y})
    out = {"n": n, "n_draws": len(ds), "n_seeds": len(ss), "mean": mean, "std": std, "sd_draw": math.nan,
           "sd_seed": math.nan, "sd_residual": math.nan, "std_draw_means": math.nan, "std_seed_means": math.nan,
           "note": ""}
    if n < 2:
        return {**out, "note": ONE_RUN}
    if all(d == s for d, s in y):
        return {**out, "note": NOT_SEPARABLE}
    out["std_draw_means"] = _std(np.mean([v for (d, _), v in y.items() if d == dd]) for dd in ds)
    out["std_seed_means"] = _std(np.mean([v for (_, s), v in y.items() if s == sv]) for sv in ss)
    if len(ds) < 2 or len(ss) < 2 or len(y) != len(ds) * len(ss):
        return {**out, "note": _not_crossed_note(len(ds), len(ss), len(y))}
    table = np.array([[y[(d, s)] for s in ss] for d in ds])  # (D, S)
    n_d, n_s = table.shape
    grand, rows, cols = table.mean(), table.mean(axis=1), table.mean(axis=0)
    ms_draw = n_s * ((rows - grand) ** 2).sum() / (n_d - 1)
    ms_seed = n_d * ((cols - grand) ** 2).sum() / (n_s - 1)
    ms_res = ((table - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((n_d - 1) * (n_s - 1))
    out["sd_draw"] = math.sqrt(max(0.0, (ms_draw - ms_res) / n_s))
    out["sd_seed"] = math.sqrt(max(0.0, (ms_seed - ms_res) / n_d))
    out["sd_residual"] = math.sqrt(max(0.0, ms_res))
    return out


def _not_crossed_note(n_draws: int, n_seeds: int, n_pairs: int) -> str:
    return (f"{NOT_CROSSED}: {n_pairs} (draw, seed) pairs of {n_draws} draws x {n_seeds} seeds; the split needs "
            "every draw with every seed, at least 2 of each")


def variance_table(cells: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """One row per grid cell of `metric` (the teachers' `full` row and cells repeated in other
    blocks, such as VT shared by pairs or Table III's single-teacher pairs, left out)."""
    if cells.empty:
        return pd.DataFrame(columns=VARIANCE_COLUMNS)
    sub = cells[(cells["metric"] == metric) & (cells["volume"] != "full")]
    sub = sub[~sub["run_ids"].duplicated()]
    rows = []
    for c in sub.itertuples():
        draws = c.draws if "draws" in sub else c.seeds
        rows.append({"source": c.source, "volume": c.volume, "pair": c.pair, "method": c.method, "metric": metric,
                     **components(draws, c.seeds, c.values)})
    return pd.DataFrame(rows, columns=VARIANCE_COLUMNS)
