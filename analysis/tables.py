"""The paper's tables from the runs frame: one long frame of cells, then per-block views.

A cell is (source, volume, pair, method, metric) with its values over seeds. Blocks:
- Table I (one per FF++ source), Table II (Celeb-DF), "Table I-like" for any other
  source (e.g. the quickstart's `synthetic`): rows (volume, pair), columns the methods,
  the best method of each row in bold. VT does not depend on the teacher: its cell is
  the (source, student, volume) VT runs; the `full` row is the teachers-stage run whose
  architecture is the student's.
- Table III (per source with an ensemble pair): the ensemble pairs and the single-teacher
  pairs of the same student, the ensemble's methods; the best pair of each (volume,
  method) in bold.

A cell's runs carry their (draw, seed): the draw picks the training subset, the seed the
initial weights (legacy studies: draw = seed). `comparisons` pairs two cells on (draw,
seed) and Holm-adjusts the p-values over every comparison of the study on one metric; a
difference is *resolved* when its Holm-adjusted p-value is below 0.05 (`analysis.stats`).

A student distilled with an unlabeled transfer set (param `transfer`, e.g.
"train_unlabeled:2000") is a cell of its own: its method reads `kd+train_unlabeled:2000`
(`method_label`, given by `analysis.runs`), so runs of different transfer settings never pool,
and the tables mark it (`mark_transfer`, §); its volume counts the labelled images only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection, Mapping

import pandas as pd
import yaml

from analysis.paper import (
    CELEBDF, FFPP_SOURCES, dataset_of, paper_cells, paper_lookup, paper_table, table_name,
)
from analysis.stats import holm, is_resolved, mean_std, paired, per_seed
from trainables.convergence import FIT_METRIC, LATE_GAIN, mean_known, still_improving
from trainables.model_names import ALIASES

# short name -> MLflow metric: ACC as the paper reports it, the others beside it, frame and video level
METRICS = {m: f"test_{m}" for m in ("acc", "bacc", "auc", "eer", "ap", "video_acc", "video_bacc", "video_auc",
                                    "video_eer", "video_ap")}
# a cell's metric -> (the runs frame's column, the column of the digest of the rows it was scored on)
TEST_METRICS = {m: (column, "test_rows") for m, column in METRICS.items()}
MIXING = ("mixup", "cutmix")  # augmentations that train on mixed labels (trainables/augment.py)
TRANSFER_SEP = "+"  # method + transfer setting: no method name holds it (registry names are words)
VIEW_METRICS = ("acc", "auc")  # laid out as the paper's tables; every metric is in cells.csv
COMPARED_METRICS = ("acc", "auc")  # paired comparisons
LOWER_IS_BETTER = {"eer", "video_eer"}
PAIR_ORDER = ("xception->xception", "xception->efficientnet", "efficientnet->mobilenet",
              "xception+efficientnet->mobilenet")  # the paper's column order


def teachers_of(pair: str) -> str:
    return pair.rsplit("->", 1)[0]


def student_of(pair: str) -> str:
    return pair.rsplit("->", 1)[-1]


def volume_key(volume: str) -> tuple[int, float, str]:
    """Paper order: full, then the largest volume first."""
    if volume == "full":
        return (0, 0.0, "")
    return (1, -float(volume), "") if volume.isdigit() else (2, 0.0, volume)


def pair_key(pair: str) -> tuple[int, str]:
    return (PAIR_ORDER.index(pair), "") if pair in PAIR_ORDER else (len(PAIR_ORDER), pair)


def source_key(source: str) -> tuple[int, str]:
    """The paper's order (FaceSwap, Face2Face, Deepfakes, NeuralTextures, Celeb-DF), then the rest."""
    order = (*FFPP_SOURCES, CELEBDF)
    return (order.index(source), "") if source in order else (len(order), source)


def timm_name(model: str) -> str:
    return ALIASES.get(model, model)


def method_label(method: str, transfer) -> str:
    """A cell's method: `method`, or `method+<transfer>` for a student distilled with an unlabeled
    transfer set (`transfer`: the run's param, e.g. "train_unlabeled:2000"; None or "": none)."""
    return f"{method}{TRANSFER_SEP}{transfer}" if transfer not in (None, "") and not pd.isna(transfer) else method


def transfer_of(label: str) -> str:
    """The transfer setting of a `method_label` ("" when none)."""
    return label.partition(TRANSFER_SEP)[2]


def baselines(runs: pd.DataFrame) -> list[str]:
    """Methods whose student runs have no teacher (VT): their cell is shared by every pair of a
    student, and every other method is compared against them."""
    students = runs[runs["stage"] != "teachers"] if not runs.empty else runs
    return sorted(set(students[students["teachers"] == ""]["method"]) - {""}) if not students.empty else []


def method_order(runs: pd.DataFrame, config_text: str = "") -> list[str]:
    """Table columns: the baselines, then the methods in the order the study's config lists
    them (`students.methods` of the parent run's study.yaml), then any other in the order
    its first trial started (the plan's order)."""
    listed: list[str] = []
    if config_text:
        try:
            listed = [str(m) for m in ((yaml.safe_load(config_text) or {}).get("students") or {}).get("methods", [])]
        except (yaml.YAMLError, AttributeError):
            listed = []
    if runs.empty:
        return []
    by_first_run = runs.sort_values("start_time", kind="stable") if "start_time" in runs else runs
    present = [m for m in dict.fromkeys(by_first_run["method"]) if m]  # the order trials were planned in
    base = baselines(runs)
    # a method's transfer cells (`kd+train_unlabeled:2000`) right after the method
    rest = [x for m in listed for x in present if x.partition(TRANSFER_SEP)[0] == m and x not in base]
    return base + rest + [m for m in present if m not in base and m not in rest]


def _finished(runs: pd.DataFrame, stage: str) -> pd.DataFrame:
    if runs.empty:
        return runs
    return runs[(runs["stage"] == stage) & (runs["status"] == "FINISHED")]


def _cell(table: str, block: str, source: str, volume: str, pair: str, method: str,
          sel: pd.DataFrame, paper: dict, metrics: Mapping[str, tuple[str, str]] = TEST_METRICS) -> list[dict]:
    ds = dataset_of(source)
    out = []
    for metric, (column, rows_column) in metrics.items():
        if column not in sel:
            continue
        ok = sel[sel[column].notna()]
        if ok.empty:
            continue
        mean, std, n = mean_std(ok[column].tolist())
        ref = math.nan
        if metric == "acc" and ds is not None:
            ref = paper.get((*ds, volume, method, teachers_of(pair), student_of(pair)), math.nan)
        origins = sorted(set(ok["hparams_from"]) - {""}) if "hparams_from" in ok else []
        out.append({
            "table": table, "block": block, "source": source,
            "dataset": ds[0] if ds else source, "subset": ds[1] if ds else "",
            "volume": volume, "pair": pair, "teachers": teachers_of(pair), "student": student_of(pair),
            "method": method, "metric": metric, "n": n, "mean": mean, "std": std,
            "paper": ref, "diff": mean - ref if not math.isnan(ref) else math.nan,
            "seeds": tuple(int(s) for s in ok["seed"]),
            # the training subset's draw beside each seed; frames without one (legacy): the seed drew it
            "draws": tuple(int(d) for d in (ok["draw"] if "draw" in ok else ok["seed"])),
            "values": tuple(float(v) for v in ok[column]),
            "run_ids": tuple(ok["run_id"]),
            # the digest of the rows the metric was scored on (its own test split, or an evaluation set's)
            "test_rows": tuple(ok[rows_column]) if rows_column in ok else ("",) * len(ok),
            "hparams_from": "+".join(origins),
        })
    return out


def _select(grid: pd.DataFrame, volume: str, pair: str, method: str, base: list[str]) -> pd.DataFrame:
    g = grid[(grid["volume"] == volume) & (grid["method"] == method)]
    if method in base:  # no teacher: one cell per (source, student), shared by every pair of that student
        return g[g["student"] == student_of(pair)]
    return g[g["pair"] == pair]


def _block(table: str, block: str, source: str, grid: pd.DataFrame, teachers: pd.DataFrame,
           pairs: list[str], methods: list[str], base: list[str], paper: dict, full: bool,
           metrics: Mapping[str, tuple[str, str]] = TEST_METRICS) -> list[dict]:
    rows: list[dict] = []
    for pair in pairs:
        if full and base:  # the teacher of the student's architecture, in the baseline's column
            arch = timm_name(student_of(pair))
            rows += _cell(table, block, source, "full", pair, base[0], teachers[teachers["arch"] == arch], paper,
                          metrics)
        for volume in sorted(set(grid["volume"]), key=volume_key):
            for method in methods:
                rows += _cell(table, block, source, volume, pair, method,
                              _select(grid, volume, pair, method, base), paper, metrics)
    return rows


def build_cells(runs: pd.DataFrame, config_text: str = "",
                metrics: Mapping[str, tuple[str, str]] = TEST_METRICS) -> pd.DataFrame:
    """Long frame: one row per (block, volume, pair, method, metric) the study has values for;
    methods in `method_order` (the study config's order, given its text). `metrics`: each cell
    metric's runs-frame column and rows-digest column (the test split's by default; the
    cross-dataset table passes its evaluation sets', `analysis.cross`)."""
    grid, teachers = _finished(runs, "grid"), _finished(runs, "teachers")
    paper = paper_lookup()
    order, base = method_order(grid, config_text), baselines(grid)
    rows: list[dict] = []
    for source in sorted(set(grid["source"]), key=source_key):
        g = grid[grid["source"] == source]
        t = teachers[teachers["source"] == source] if not teachers.empty else teachers
        pairs = sorted(set(g["pair"]), key=pair_key)
        ensembles = [p for p in pairs if "+" in teachers_of(p)]
        single = [p for p in pairs if teachers_of(p) and p not in ensembles]
        # a baseline student with no single-teacher pair (VT only, or only ensembles): a row of its own
        alone = set(g[g["method"].isin(base)]["student"]) - {student_of(p) for p in single}
        single += [f"->{s}" for s in sorted(alone)]
        ds = dataset_of(source)
        table = "I-like" if ds is None else ("II" if ds[1] == "" else "I")
        rows += _block(table, table_name(source), source, g, t, single, order, base, paper, full=True,
                       metrics=metrics)
        if ensembles:
            students = {student_of(p) for p in ensembles}
            pairs3 = [p for p in pairs if student_of(p) in students and teachers_of(p)]
            methods3 = [m for m in order if m not in base and (g[g["pair"].isin(ensembles)]["method"] == m).any()]
            rows += _block("III", f"Table III: ensemble, {source}", source, g, t, pairs3, methods3, base, paper,
                           full=False, metrics=metrics)
    cells = pd.DataFrame(rows, columns=CELL_COLUMNS)
    return mark_transfer(mark_unconverged(mark_untuned(mark_best(cells)), pd.concat([grid, teachers])))


CELL_COLUMNS = ["table", "block", "source", "dataset", "subset", "volume", "pair", "teachers", "student",
                "method", "metric", "n", "mean", "std", "paper", "diff", "seeds", "draws", "values", "run_ids",
                "test_rows", "hparams_from"]


def mark_best(cells: pd.DataFrame) -> pd.DataFrame:
    """`best`: the best mean of its group, highest (lowest for EER): the best method per row;
    Table III: the best pair per column."""
    cells = cells.copy()
    cells["best"] = False
    if cells.empty:
        return cells
    for (table, _b, metric, volume), group in cells.groupby(["table", "block", "metric", "volume"], sort=False):
        keys = ["method"] if table == "III" else ["pair"]
        for _, sub in group.groupby(keys, sort=False):
            if len(sub) > 1:
                best = sub["mean"].min() if metric in LOWER_IS_BETTER else sub["mean"].max()
                cells.loc[sub.index, "best"] = sub["mean"] == best
    return cells


def mark_untuned(cells: pd.DataFrame) -> pd.DataFrame:
    """`untuned`: a cell on the paper's fixed values in a block whose other cells were tuned
    (grid.untuned): the tables mark it with a dagger, never mix it in silently."""
    cells = cells.copy()
    cells["untuned"] = False
    if cells.empty:
        return cells
    for _, block in cells.groupby("block", sort=False):
        student_cells = block[block["hparams_from"] != ""]
        if (student_cells["hparams_from"] != "paper").any():
            cells.loc[student_cells.index[student_cells["hparams_from"] == "paper"], "untuned"] = True
    return cells


def mark_unconverged(cells: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`unconverged`: the cell's runs (its `run_ids` in `runs`) were still improving when training
    stopped (trainables.convergence: their mean final training CE above FIT_CE_TOL, or their mean
    late gain of validation AUC above LATE_GAIN_TOL), so its number measures the budget, not the
    method. Beside it `late_gain` and `train_ce` (means over its runs; nan when none logged the
    diagnostic: runs recorded before it, or under 3 epochs) and `steps`
    (the runs' optimiser steps: one number, 'min–max' when they differ, '' when unknown)."""
    cells = cells.copy()
    by_id = runs.drop_duplicates("run_id", keep="last").set_index("run_id") if not runs.empty else runs
    def column(name: str) -> pd.Series:
        return by_id[name] if name in by_id else pd.Series(math.nan, index=by_id.index)

    gains, ces = column(LATE_GAIN), column(FIT_METRIC)
    augment = column("p_augment")
    steps = by_id["p_steps"] if "p_steps" in by_id else pd.Series(None, index=by_id.index, dtype=object)
    mean_gain, mean_ce, unconverged, budget = [], [], [], []
    for run_ids in cells["run_ids"]:
        ids = [r for r in run_ids if r in by_id.index]
        known = [float(gains[r]) for r in ids if pd.notna(gains[r])]
        # the fit is judged only where the run logged the diagnostic (runs recorded before it are not judged)
        # ... and not for runs trained on mixed images: their CE against mixed labels has a floor (the
        # entropy of the mixing weight, 0.5 nats on average for lambda ~ U[0, 1]), so only the late gain judges them
        fits = [float(ces[r]) for r in ids if pd.notna(ces[r]) and pd.notna(gains[r]) and not mixes(augment[r])]
        mean_gain.append(mean_known(known))
        mean_ce.append(mean_known(fits))
        unconverged.append(still_improving(known, fits))
        budget.append(steps_text(steps[r] for r in ids))
    cells["unconverged"] = pd.Series(unconverged, index=cells.index, dtype=bool)
    cells["late_gain"] = pd.Series(mean_gain, index=cells.index, dtype=float)
    cells["train_ce"] = pd.Series(mean_ce, index=cells.index, dtype=float)
    cells["steps"] = pd.Series(budget, index=cells.index, dtype=object)  # int, or 'min–max' text, or ''
    return cells


def mixes(augment) -> bool:
    """Whether a run's `augment` param (a tuple, or its text as MLflow keeps it) mixes images."""
    return isinstance(augment, (str, tuple, list)) and any(m in str(augment) for m in MIXING)


def mark_transfer(cells: pd.DataFrame) -> pd.DataFrame:
    """`transfer`: the unlabeled transfer set the cell's students were distilled with ("" none), read
    from its method label; the tables mark such a cell (§). Added only when some cell has one: a
    study without transfer sets keeps its cells (and cells.csv) as before."""
    settings = cells["method"].map(transfer_of) if not cells.empty else pd.Series(dtype=object)
    if not settings.astype(bool).any():
        return cells
    cells = cells.copy()
    cells["transfer"] = settings
    return cells


def steps_text(values) -> int | str:
    """Optimiser steps of some runs: the number when all agree, 'min–max' when not, '' when unknown."""
    known = sorted({int(v) for v in values if v is not None and pd.notna(v)})
    if not known:
        return ""
    return known[0] if len(known) == 1 else f"{known[0]}–{known[-1]}"


def unconverged_warnings(cells: pd.DataFrame) -> list[str]:
    """One line per (source, pair, volume) with cells still improving when training stopped,
    naming their methods and budget: the tables and comparisons of these cells are not results."""
    if cells.empty or "unconverged" not in cells:
        return []
    out = []
    flagged = cells[cells["unconverged"]]
    for (source, pair, volume), group in flagged.groupby(["source", "pair", "volume"], sort=False):
        methods = list(dict.fromkeys(group["method"]))  # column order
        budgets = list(dict.fromkeys(str(s) for s in group["steps"] if s != ""))
        budget = f" (budget {', '.join(budgets)} steps)" if budgets else ""
        where = "the full training set" if volume == "full" else f"{volume} images"
        teachers, student = teachers_of(pair), student_of(pair)
        pair_words = f"{teachers}→{student}" if teachers else f"{student}, VT only"
        out.append(f"at {where} ({source}, {pair_words}) {', '.join(methods)} "
                   f"{'was' if len(methods) == 1 else 'were'} still improving when training stopped{budget}: "
                   "their comparisons below are not results; give them more steps (students.hparams.min_steps, "
                   "or min_steps: auto)")
    return out


def convergence(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, pair, method, volume) of the tables: its runs' steps, mean late gain and
    whether they were still improving; `checked` False where no run logged the diagnostic."""
    columns = ["source", "pair", "method", "volume", "n", "steps", "train_ce", "late_gain", "still_improving",
               "checked"]
    if cells.empty or "unconverged" not in cells:
        return pd.DataFrame(columns=columns)
    first = cells.drop_duplicates(["source", "pair", "method", "volume"])
    rows = [{"source": r.source, "pair": r.pair, "method": r.method, "volume": r.volume, "n": len(r.run_ids),
             "steps": r.steps, "train_ce": r.train_ce, "late_gain": r.late_gain,
             "still_improving": bool(r.unconverged),
             "checked": not math.isnan(r.late_gain)} for r in first.itertuples()]
    return pd.DataFrame(rows, columns=columns)


def comparisons(cells: pd.DataFrame, metrics: Collection[str] = COMPARED_METRICS) -> pd.DataFrame:
    """Every method of a row against every other (the later column minus the earlier: each
    distillation method against the baseline, VT, and against each other), and (Table III)
    ensemble against single teacher; on the `metrics` cells (ACC and AUC)."""
    rows = []
    cells = cells[cells["metric"].isin(metrics)] if not cells.empty else cells
    for (table, block, metric, volume, pair), row in cells.groupby(
            ["table", "block", "metric", "volume", "pair"], sort=False):
        by_method = {r.method: r for r in row.itertuples()}
        if table != "III":
            present = list(by_method)  # in column order, as build_cells made the rows
            for i, b in enumerate(present):
                for a in present[i + 1:]:
                    rows.append(_compare(by_method[a], by_method[b], a, b))
        if table == "III" and "+" in teachers_of(pair):
            singles = cells[(cells["block"] == block) & (cells["metric"] == metric) & (cells["volume"] == volume)
                            & ~cells["teachers"].str.contains("+", regex=False)]
            for b in singles.itertuples():
                if b.method in by_method:
                    rows.append(_compare(by_method[b.method], b, pair, b.pair))
    return _adjust(pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS, "left_out"]))


def baseline_comparisons(cells: pd.DataFrame, metrics: Collection[str], base: Collection[str]) -> pd.DataFrame:
    """Each method's cell (ensemble pairs too) minus the baseline cell (VT) of its student at the same
    source and volume, on the `metrics` cells, paired as `comparisons` pairs; the p-values
    Holm-adjusted over these comparisons alone, per metric."""
    rows = []
    cells = cells[cells["metric"].isin(metrics)] if not cells.empty else cells
    first = cells.drop_duplicates(["source", "volume", "pair", "method", "metric"])  # Table III repeats cells
    vt = first[first["method"].isin(base)].drop_duplicates(["source", "volume", "student", "method", "metric"])
    for a in first[~first["method"].isin(base)].itertuples():
        same = vt[(vt["source"] == a.source) & (vt["volume"] == a.volume) & (vt["student"] == a.student)
                  & (vt["metric"] == a.metric)]
        rows += [_compare(a, b, a.method, b.method) for b in same.itertuples()]
    return _adjust(pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS, "left_out"]))


# low/high: Student-t 95 % interval of the mean difference; boot_low/boot_high: its percentile bootstrap
# 95 % interval; p: paired t-test; p_holm: p Holm-adjusted over every comparison of the study on the same
# metric; p_improvement (lo, hi): P(A > B) over the pairs, ties half, with its bootstrap 95 % interval;
# seeds: the paired (draw, seed) keys; resolved: p_holm < 0.05 with at least two pairs
COMPARISON_COLUMNS = ["table", "block", "source", "volume", "pair", "method", "metric", "a", "b", "n",
                      "mean_diff", "low", "high", "boot_low", "boot_high", "p", "p_holm", "p_improvement",
                      "p_improvement_lo", "p_improvement_hi", "seeds", "resolved", "text", "unconverged"]


def _key_text(key: tuple[int, int], legacy: bool) -> str:
    """A (draw, seed) key as text: the seed alone in a legacy study (the seed drew the subset)."""
    draw, seed = key
    return str(seed) if legacy else f"draw {draw} seed {seed}"


def _compare(a, b, a_label: str, b_label: str) -> dict:
    """a - b paired on (draw, seed): the same training subset and initial weights; a key pairs only
    where both runs were scored on the same test rows."""
    keys_a = list(zip(getattr(a, "draws", a.seeds), a.seeds))
    keys_b = list(zip(getattr(b, "draws", b.seeds), b.seeds))
    rows_a, rows_b = dict(zip(keys_a, a.test_rows)), dict(zip(keys_b, b.test_rows))
    unpaired = sorted(k for k in set(rows_a) & set(rows_b) if rows_a[k] != rows_b[k])
    va = {k: v for k, v in per_seed(keys_a, a.values).items() if k not in unpaired}
    res = paired(va, per_seed(keys_b, b.values))
    legacy = all(d == s for d, s in keys_a + keys_b)
    left_out = (f"; seeds [{', '.join(_key_text(k, legacy) for k in unpaired)}] left out: scored on different "
                "test rows" if unpaired else "")
    return {"table": a.table, "block": a.block, "source": a.source, "volume": a.volume, "pair": a.pair,
            "method": a.method, "metric": a.metric, "a": a_label, "b": b_label, "n": res.n,
            "mean_diff": res.mean, "low": res.low, "high": res.high, "boot_low": res.boot_low,
            "boot_high": res.boot_high, "p": res.p, "p_holm": math.nan, "p_improvement": res.p_improvement,
            "p_improvement_lo": res.p_improvement_lo, "p_improvement_hi": res.p_improvement_hi,
            "seeds": res.seeds, "resolved": False, "text": res.text, "left_out": left_out,
            # either side still improving when training stopped: the difference is the budget's
            "unconverged": bool(getattr(a, "unconverged", False) or getattr(b, "unconverged", False))}


def _adjust(comp: pd.DataFrame) -> pd.DataFrame:
    """Holm-adjust the p-values over every comparison of the study on the same metric (ACC together,
    AUC together); `resolved` and `text` follow from the adjusted values."""
    for _, family in comp.groupby("metric", sort=False):
        comp.loc[family.index, "p_holm"] = holm(family["p"].to_numpy())
    comp["resolved"] = [is_resolved(n, p) for n, p in zip(comp["n"], comp["p_holm"])]
    comp["text"] = [text + (_tests_text(r) if r.n >= 2 else "") + r.left_out
                    for text, r in zip(comp["text"], comp.itertuples())]
    return comp[COMPARISON_COLUMNS]


def _tests_text(r) -> str:
    """'; p_holm=0.012, P(A>B)=0.80 [0.60, 1.00]'."""
    p = "n/a" if math.isnan(r.p_holm) else ("<0.001" if r.p_holm < 0.001 else f"{r.p_holm:.3f}")
    return (f"; p_holm={p}, P(A>B)={r.p_improvement:.2f} "
            f"[{r.p_improvement_lo:.2f}, {r.p_improvement_hi:.2f}]")


def missing_paper(cells: pd.DataFrame, sources) -> tuple[pd.DataFrame, list[str]]:
    """(paper cells on the study's datasets that it has no value for, paper blocks it did not run)."""
    acc = cells[(cells["metric"] == "acc") & (cells["n"] > 0)] if not cells.empty else cells
    have = {(r.dataset, r.subset, r.volume, r.method, r.teachers, r.student) for r in acc.itertuples()}
    wanted = paper_cells(sources)
    keys = zip(wanted["dataset"], wanted["subset"], wanted["volume"], wanted["method"], wanted["teachers"],
               wanted["student"])
    missing = wanted[[k not in have for k in keys]].reset_index(drop=True)
    covered = {dataset_of(s) for s in sources} - {None}
    blocks = paper_table()[["dataset", "subset"]].drop_duplicates()
    not_run = [f"{d} {s}".strip() for d, s in zip(blocks["dataset"], blocks["subset"]) if (d, s) not in covered]
    return missing, not_run


@dataclass
class TableView:
    """One block and metric laid out for rendering: rows (volume, pair), columns methods."""
    title: str
    metric: str
    methods: list[str]
    rows: list[tuple[str, str]]
    cells: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (volume, pair, method) -> cell
    paper: dict[tuple[str, str, str], float] = field(default_factory=dict)  # paper numbers of empty cells
    has_paper: bool = False
    untuned: bool = False  # some cell is on the paper's values among swept ones (dagger)
    unconverged: bool = False  # some cell's students were still improving when training stopped (‡)
    transfer: tuple[str, ...] = ()  # the transfer settings of its cells distilled with one (§)


def views(cells: pd.DataFrame) -> list[TableView]:
    out = []
    if cells.empty:
        return out
    paper = paper_lookup()
    first = cells.drop_duplicates("block")  # blocks in the order build_cells made them; Table III last
    blocks = [b for b, t in zip(first["block"], first["table"]) if t != "III"] + \
        [b for b, t in zip(first["block"], first["table"]) if t == "III"]
    for block in blocks:
        for metric in VIEW_METRICS:
            sub = cells[(cells["block"] == block) & (cells["metric"] == metric)]
            if sub.empty:
                continue
            methods = list(dict.fromkeys(sub["method"]))  # column order, as build_cells made the rows
            rows = sorted({(r.volume, r.pair) for r in sub.itertuples()},
                          key=lambda vp: (volume_key(vp[0]), pair_key(vp[1])))
            view = TableView(block, metric, methods, rows)
            view.cells = {(r.volume, r.pair, r.method): r._asdict() for r in sub.itertuples()}
            view.untuned = bool(sub["untuned"].any())
            view.unconverged = bool(sub["unconverged"].any()) if "unconverged" in sub else False
            view.transfer = transfer_settings(sub)
            ds = dataset_of(sub["source"].iloc[0])
            if metric == "acc" and ds is not None:
                view.has_paper = True
                for volume, pair in rows:
                    for m in methods:
                        ref = paper.get((*ds, volume, m, teachers_of(pair), student_of(pair)))
                        if ref is not None and (volume, pair, m) not in view.cells:
                            view.paper[(volume, pair, m)] = ref
            out.append(view)
    return out


def transfer_settings(cells: pd.DataFrame) -> tuple[str, ...]:
    """The transfer settings of `cells` distilled with one, in order ((): none)."""
    if "transfer" not in cells:
        return ()
    return tuple(t for t in dict.fromkeys(cells["transfer"]) if t)
