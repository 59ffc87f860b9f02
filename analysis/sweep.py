"""What the sweep learned, per swept cell (source, pair, method, volume): its trials, the best
configuration, and how much each hyperparameter mattered (Optuna's fANOVA).

A sweep trial is a run with tag stage `sweep`; its params (`p_*` in the runs frame) are the
hyperparameters it trained with, its metrics the sweep metric (the study config's
`sweep.metric`) and `epoch` (0-based, the last one it ran). ASHA stops weak trials early: a
trial whose last epoch is below the cell's largest ran fewer epochs (stopped), the others are
complete. The importance is computed on an in-memory Optuna study rebuilt from the complete
trials, over the hyperparameters that varied among them, with the distributions the search
space declares (`search_spaces`, torch-free); optuna itself is imported only there, so the
report runs without it (and says so).
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import yaml

from analysis import render
from analysis.tables import TRANSFER_SEP
from trainables.errors import UserError

DEFAULT_METRIC = "val_auc"  # SweepConfig.metric's default
FEW_TRIALS = 20  # fANOVA's random forest on fewer trials than this is indicative only
CELL = ["source", "pair", "method", "volume"]
LOG_RATIO = 20.0  # an undeclared positive range wider than this factor is read as log-scaled
# the common hyperparameters; a method's own options are labelled in its declaration
PARAM_LABELS = {"lr": "learning rate", "weight_decay": "weight decay", "batch_size": "batch size",
                "lam": "λ (distillation weight)"}
STOPPED_NOTE = ("Stopped (ASHA) trials are left out of the importance: their last value was measured after "
                "fewer epochs than the complete trials', and ASHA stopped them because it was low, so mixing them "
                "in would credit a hyperparameter with the effect of training length (Optuna leaves pruned "
                "trials out of its importances for the same reason). The figures show them, hollow.")


def param_label(name: str) -> str:
    from trainables.methods import option_label
    return PARAM_LABELS.get(name) or option_label(name) or name.replace("_", " ")


@dataclass(frozen=True)
class Param:
    """One hyperparameter's distribution: as the search space declares it, or inferred from the
    values its trials took (`declared` False)."""

    name: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    declared: bool = True

    def widened(self, values: list) -> "Param":
        """The same distribution grown to hold `values` (a space edited since the sweep ran)."""
        if self.kind == "categorical":
            extra = tuple(v for v in dict.fromkeys(values) if v not in self.choices)
            return Param(self.name, self.kind, choices=self.choices + extra, declared=self.declared)
        low, high = min([self.low, *values]), max([self.high, *values])
        return Param(self.name, self.kind, low, high, self.log and low > 0, declared=self.declared)

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def value(self, v: Any) -> Any:
        """A trial's value as the distribution takes it (params come back from MLflow as text)."""
        v = v.item() if hasattr(v, "item") else v
        if self.kind == "float":
            return float(v)
        if self.kind == "int":
            return int(v)
        for choice in self.choices:  # 32.0 (a pandas column with gaps) -> the choice 32
            if choice == v and isinstance(choice, bool) == isinstance(v, bool):
                return choice
        return v

    def unit(self, v: Any) -> float:
        """Where `v` lies in the distribution's range, 0 to 1 (log where log; a choice by its index)."""
        if self.kind == "categorical":
            return self.choices.index(v) / max(len(self.choices) - 1, 1)
        low, high, v = float(self.low), float(self.high), float(v)
        if self.log:
            low, high, v = math.log(low), math.log(high), math.log(v)
        return (v - low) / (high - low) if high > low else 0.5


class _Ranges:
    """A stand-in trial that records each `suggest_*`'s distribution (the spaces do not branch)."""

    def __init__(self):
        self.params: dict[str, Param] = {}

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False, **_):
        self.params[name] = Param(name, "float", low, high, log)
        return low

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False, **_):
        self.params[name] = Param(name, "int", low, high, log)
        return low

    def suggest_categorical(self, name: str, choices):
        self.params[name] = Param(name, "categorical", choices=tuple(choices))
        return list(choices)[0]


def declared_params(space: str, method: str, volume: int | None) -> dict[str, Param] | None:
    """What space `space` searches for `method`, in its order; None when the space is unknown here."""
    from search_spaces import get_space

    trial = _Ranges()
    try:
        get_space(space, method, volume)(trial)
    except UserError:
        return None
    return trial.params


def inferred_param(name: str, values: list) -> Param:
    """A distribution from the values alone: text and booleans categorical, integers and floats
    over their observed range, log-scaled when all are positive and span more than LOG_RATIO."""
    if any(isinstance(v, (str, bool)) for v in values):
        return Param(name, "categorical", choices=tuple(sorted(set(values), key=str)), declared=False)
    kind = "int" if all(float(v).is_integer() and not isinstance(v, float) for v in values) else "float"
    low, high = min(values), max(values)
    return Param(name, kind, low, high, low > 0 and high / low > LOG_RATIO, declared=False)


def paper_values(method: str, volume: int | None) -> dict[str, Any]:
    from search_spaces import paper_values as values

    try:
        return {k: v for k, v in values(method, volume).items() if k != "method"}
    except UserError:  # a method without registered paper values
        return {}


def sweep_metric(config_text: str) -> str:
    """The study config's `sweep.metric` (the parent run's study.yaml), else its default."""
    try:
        raw = yaml.safe_load(config_text) if config_text else {}
    except yaml.YAMLError:
        return DEFAULT_METRIC
    sweep = (raw or {}).get("sweep") if isinstance(raw, dict) else None
    return str(sweep.get("metric") or DEFAULT_METRIC) if isinstance(sweep, dict) else DEFAULT_METRIC


@dataclass
class SweepCell:
    source: str
    pair: str
    method: str
    volume: str
    space: str
    metric: str
    trials: pd.DataFrame  # the finished trials with the metric: run_id, start_time, epochs, complete, value, p_*
    failed: int  # runs that failed or recorded no metric
    params: list[Param]  # the hyperparameters that varied across the trials, in the space's order
    searched: list[str]  # every hyperparameter the space searches (the varied ones, if the space is unknown)
    kinds: dict[str, Param]  # the searched ones' distributions (a value's type: MLflow gives text, pandas 32.0)
    paper: dict[str, Any]  # the `paper` space's values of the method at this volume
    importance: dict[str, float] = field(default_factory=dict)  # param -> fANOVA importance (sums to 1)
    n_importance: int = 0  # complete trials the importance was computed on
    note: str = ""  # why there is no importance
    warning: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.source, self.pair, self.method, self.volume

    @property
    def complete(self) -> pd.DataFrame:
        return self.trials[self.trials["complete"]]

    @property
    def best(self) -> pd.Series | None:
        """The complete trial with the highest metric, a tie to the earliest started (then the
        greatest run id): `study.runner.best_sweep_run`'s rule, the grid's choice."""
        done = self.complete
        if done.empty:
            return None
        order = done.assign(_neg_start=-done["start_time"]).sort_values(
            ["value", "_neg_start", "run_id"], ascending=False, kind="stable")
        return order.iloc[0]

    def value(self, name: str, v: Any) -> Any:
        """A trial's value of `name` in its type (None where it has none)."""
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return self.kinds[name].value(v) if name in self.kinds else v

    def title(self) -> str:
        volume = f"{self.volume} images" if self.volume != "full" else "full train split"
        return f"{self.source}, {render.pair_text(self.pair)}, {render.method_name(self.method)}, {volume}"

    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", "_".join(self.key)).strip("_")


def _volume(label: str) -> int | None:
    return int(label) if str(label).isdigit() else None


def _varied(trials: pd.DataFrame, name: str) -> bool:
    col = f"p_{name}"
    return col in trials and trials[col].dropna().astype(str).nunique() > 1


def sweep_cells(runs: pd.DataFrame, config_text: str = "") -> list[SweepCell]:
    """One `SweepCell` per swept (source, pair, method, volume), importance included; [] when the
    study has no sweep run."""
    if runs.empty or "stage" not in runs:
        return []
    sweep = runs[runs["stage"] == "sweep"]
    if sweep.empty:
        return []
    metric = sweep_metric(config_text)
    cells = []
    for key, group in sweep.groupby(CELL, sort=True):
        ok = group[(group["status"] == "FINISHED")]
        ok = ok[ok[metric].notna()] if metric in ok else ok.iloc[0:0]
        epochs = ok["epoch"].fillna(0).astype(int) + 1 if "epoch" in ok else pd.Series(1, index=ok.index)
        trials = ok.assign(epochs=epochs, complete=epochs == (epochs.max() if len(ok) else 0),
                           value=ok[metric] if metric in ok else []).sort_values("start_time", kind="stable")
        cells.append(_cell(key, group, trials, metric))
    for cell in cells:
        _importance(cell)
    return cells


def _cell(key: tuple, group: pd.DataFrame, trials: pd.DataFrame, metric: str) -> SweepCell:
    source, pair, method, volume = key
    space = next((s for s in group.get("space", pd.Series(dtype=str)) if isinstance(s, str) and s), "")
    raw = group["p_method"].dropna().iloc[0] if "p_method" in group and group["p_method"].notna().any() \
        else method.partition(TRANSFER_SEP)[0]
    declared = declared_params(space, str(raw), _volume(volume)) if space else None
    if declared is not None:
        searched = list(declared)
    else:
        names = sorted(c[2:] for c in trials.columns if c.startswith("p_") and c != "p_method")
        searched = [n for n in names if _varied(trials, n)]
    kinds = {}
    for name in searched:
        values = [v.item() if hasattr(v, "item") else v for v in trials.get(f"p_{name}", pd.Series()).dropna()]
        param = declared[name] if declared is not None else inferred_param(name, values)
        kinds[name] = param.widened([param.value(v) for v in values]) if values else param
    params = [kinds[n] for n in searched if _varied(trials, n)]
    return SweepCell(source, pair, method, volume, space, metric, trials.reset_index(drop=True),
                     failed=len(group) - len(trials), params=params, searched=searched, kinds=kinds,
                     paper=paper_values(str(raw), _volume(volume)))


def _importance(cell: SweepCell) -> None:
    """fANOVA importance over the complete trials (STOPPED_NOTE says why only those)."""
    done = cell.complete
    params = [p for p in cell.params if _varied(done, p.name)]
    done = done.dropna(subset=[f"p_{p.name}" for p in params])
    cell.n_importance = len(done)
    if len(done) < 2:
        cell.note = f"no importance: {len(done)} complete trial(s); it needs at least 2"
        return
    if not params:
        cell.note = "no importance: no hyperparameter varied across the complete trials"
        return
    if done["value"].nunique() < 2:
        cell.note = "no importance: every complete trial scored the same"
        return
    try:
        cell.importance = fanova_importance(done, params)
    except ImportError:
        cell.note = "no importance: optuna is not installed"
        return
    if len(done) < FEW_TRIALS:
        cell.warning = (f"importance from {len(done)} trials: indicative only; fANOVA needs about "
                        f"{FEW_TRIALS} or more")


def fanova_importance(trials: pd.DataFrame, params: list[Param]) -> dict[str, float]:
    """`optuna.importance.get_param_importances` (fANOVA, seed 0) on a study rebuilt from
    `trials` (columns `value` and `p_<name>`), over `params`; maximised metric."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(direction="maximize")
            dists = {p.name: p.distribution() for p in params}
            for row in trials.itertuples(index=False):
                values = {p.name: p.value(getattr(row, f"p_{p.name}")) for p in params}
                study.add_trial(optuna.trial.create_trial(params=values, distributions=dists,
                                                          value=float(row.value)))
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                params=[p.name for p in params])
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {k: float(v) for k, v in found.items()}


def trials_frame(cells: list[SweepCell]) -> pd.DataFrame:
    """One row per sweep trial: its cell, run, epochs, complete or stopped, the metric and the
    hyperparameters its space searches (one column each; empty where another space's)."""
    names = list(dict.fromkeys(n for c in cells for n in c.searched))
    columns = [*CELL, "space", "cell", "run_id", "epochs", "complete", "best", "metric", "value", *names]
    rows = []
    for c in cells:
        best = c.best
        for r in c.trials.to_dict("records"):
            rows.append({"source": c.source, "pair": c.pair, "method": c.method, "volume": c.volume,
                         "space": c.space, "cell": r.get("cell", ""), "run_id": r["run_id"],
                         "epochs": int(r["epochs"]), "complete": bool(r["complete"]),
                         "best": best is not None and r["run_id"] == best["run_id"], "metric": c.metric,
                         "value": r["value"], **{n: c.value(n, r.get(f"p_{n}")) for n in c.searched}})
    frame = pd.DataFrame(rows, columns=columns)
    for n in names:  # K stays 32, not 32.0, beside another space's gaps
        frame[n] = pd.Series([r.get(n) for r in rows], index=frame.index, dtype=object)
    return frame


def importance_frame(cells: list[SweepCell]) -> pd.DataFrame:
    """One row per (cell, hyperparameter) with an importance; n_trials: the complete trials behind it."""
    rows = [[*c.key, p, v, c.n_importance] for c in cells for p, v in c.importance.items()]
    return pd.DataFrame(rows, columns=[*CELL, "param", "importance", "n_trials"])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(cells: list[SweepCell], figures: dict[tuple, list[tuple[str, str]]] | None = None) -> list[str]:
    """The report's "What the sweep learned" section; [] without sweep cells. `figures`: per
    cell key, (caption, file name) of its figures."""
    if not cells:
        return []
    from analysis.figures import metric_label

    metric = cells[0].metric
    lines = ["## What the sweep learned", "",
             f"Per swept cell: its trials (finished sweep runs with the sweep metric, {metric_label(metric)} "
             f"`{metric}`; complete: ran every epoch, stopped: ASHA ended it early). Best configuration: the "
             "complete trial with the highest metric, a tie to the earliest started (the grid's choice, "
             "`study.runner.best_sweep_run`). Importance: Optuna's fANOVA (`FanovaImportanceEvaluator(seed=0)`) "
             "on a study rebuilt from the complete trials, over the hyperparameters that varied among them, with "
             "the search space's declared ranges (log-scaled where declared so); it sums to 1 per cell and says "
             "how much of the metric's spread across these trials each hyperparameter explains within the "
             "ranges searched, not which value is good (the slice figures show that). " + STOPPED_NOTE, ""]
    for c in cells:
        n, done = len(c.trials), len(c.complete)
        failed = f"; {c.failed} failed or without {c.metric}" if c.failed else ""
        lines += [f"### {c.title()}" + (f" (space `{c.space}`)" if c.space else ""), "",
                  f"- trials: {n} ({done} complete, {n - done} stopped by ASHA{failed})"]
        best = c.best
        if best is not None:
            config = ", ".join(f"{k}={_fmt(c.value(k, best.get(f'p_{k}')))}" for k in c.searched) \
                or "nothing searched"
            lines.append(f"- best configuration ({metric_label(c.metric)} {render.num(float(best['value']))}, "
                         f"run `{best['run_id']}`): {config}")
        else:
            lines.append("- best configuration: none (no complete trial)")
        varied = ", ".join(param_label(p.name) for p in c.params)
        lines.append(f"- varied across the trials: {varied or 'nothing'}")
        if c.note:
            lines.append(f"- {c.note}")
        if c.warning:
            lines.append(f"- warning: {c.warning}")
        lines.append("")
        if c.importance:
            rows = [[param_label(p), f"`{p}`", render.num(v)] for p, v in c.importance.items()]
            lines += [f"fANOVA importance over {c.n_importance} complete trials:", "",
                      render.md_rows(["hyperparameter", "key", "importance"], rows), ""]
        for caption, name in (figures or {}).get(c.key, []):
            lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    return lines
