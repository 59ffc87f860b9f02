"""`study report`: a study's runs -> tables (md/tex/csv), figures (png) and report.md."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from analysis import cross, figures, render, sweep
from analysis.sweep import param_label
from analysis.runs import ARM_SEPARATOR, StudyRuns, histories, load_study, metric_history, run_label
from analysis.store import workdir_of
from analysis.tables import TableView, build_cells, comparisons, missing_paper, views
from analysis.tables import convergence, unconverged_warnings
from analysis.teachers import CLEAR_MARGIN, teacher_table
from analysis.variance import variance_table
from trainables.convergence import FIT_CE_TOL, LATE_GAIN_TOL
from trainables.errors import UserError
from trainables.methods import method_label

FORMATS = ("md", "tex", "csv", "png")


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format {text!r}: use a comma-separated subset of {','.join(FORMATS)}")
    return formats


@dataclass
class Report:
    study: StudyRuns
    out: Path
    cells: pd.DataFrame
    comparisons: pd.DataFrame
    missing: pd.DataFrame
    not_run: list[str]
    views: list[TableView]
    files: list[Path] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> file
    registered: pd.DataFrame | None = None  # --register: one row per model version (analysis.registry)
    cross_dataset: cross.CrossTables | None = None  # runs scored on evaluation datasets (None: no run was)
    sweep: list[sweep.SweepCell] = field(default_factory=list)  # per swept cell ([]: no sweep run)
    sweep_figures: dict[tuple, list[tuple[str, str]]] = field(default_factory=dict)  # cell key -> (caption, file)

    def write_csv(self, frame: pd.DataFrame, name: str) -> None:
        path = self.out / name
        frame.to_csv(path, index=False)
        self.files.append(path)

    def write_text(self, text: str, name: str) -> None:
        path = self.out / name
        path.write_text(text)
        self.files.append(path)


def build_report(uri: str, study: str | None, out: str | Path, formats: Iterable[str] = FORMATS,
                 curves: Iterable[str] = (), metric: str = "test_acc", register: bool = False,
                 ensure_model: Callable[[Any, str], str] | None = None) -> Report:
    formats = tuple(formats)
    runs = load_study(uri, study)
    cells = build_cells(runs.runs, runs.parent.config_text if runs.parent else "")
    cells = mark_budget_unconverged(cells, budget_choices(uri, runs.parent))
    sources = sorted(s for s in set(runs.runs["source"]) if s)
    missing, not_run = missing_paper(cells, sources)
    rep = Report(runs, Path(out), cells, comparisons(cells), missing, not_run, views(cells),
                 cross_dataset=cross.cross_tables(runs.runs, runs.parent.config_text if runs.parent else ""))
    rep.out.mkdir(parents=True, exist_ok=True)
    if register:
        from analysis.registry import candidates, register as register_models

        rep.registered = register_models(uri, runs.experiment_id, candidates(runs.study, cells, runs.runs),
                                         ensure_model=ensure_model)
        if "csv" in formats:
            rep.write_csv(rep.registered, "registered.csv")
    if "csv" in formats:
        rep.write_csv(runs.runs, "runs.csv")
        rep.write_csv(teacher_table(runs.runs), "teachers.csv")
        rep.write_csv(render.cells_csv(cells), "cells.csv")
        rep.write_csv(render.cells_csv(rep.comparisons), "comparisons.csv")
        rep.write_csv(variance_table(cells), "variance.csv")
        rep.write_csv(missing, "paper_missing.csv")
        rep.write_csv(convergence(cells), "convergence.csv")
        if rep.cross_dataset is not None:
            rep.write_csv(cross.long_frame(rep.cross_dataset), "cross_dataset.csv")
            rep.write_csv(cross.comparisons_frame(rep.cross_dataset), "cross_comparisons.csv")
    if "tex" in formats:
        tables = [render.latex_table(v, f"tab:{i}") for i, v in enumerate(rep.views, 1)]
        rep.write_text("% needs \\usepackage{booktabs}\n" + "\n\n".join(tables) + "\n", "tables.tex")
        if rep.cross_dataset is not None:
            rep.write_text(cross.latex(rep.cross_dataset), "cross_dataset.tex")
    rep.sweep = sweep.sweep_cells(runs.runs, runs.parent.config_text if runs.parent else "")
    if rep.sweep and "csv" in formats:
        rep.write_csv(sweep.trials_frame(rep.sweep), "sweep_trials.csv")
        rep.write_csv(sweep.importance_frame(rep.sweep), "sweep_importance.csv")
    if "png" in formats:
        _figures(rep, metric, "csv" in formats)
        _sweep_figures(rep)
    if "png" in formats:
        _arm_curves(rep, uri, "csv" in formats)
    for run_id in curves:
        history = metric_history(uri, run_id)
        if history.empty:
            raise UserError(f"run {run_id} has no per-epoch metrics to draw")
        label = run_label(uri, run_id)
        path = figures.plot_curves(history, rep.out / f"curves_{run_id[:8]}.png", f"{label} ({run_id[:8]})")
        rep.files.append(path)
        rep.figures[f"Training curves of {label}"] = path
    if "md" in formats:
        if runs.parent is not None and runs.parent.config_text:
            rep.write_text(runs.parent.config_text, "study.yaml")
        rep.write_text(markdown(rep, metric), "report.md")
    return rep


def _figures(rep: Report, metric: str, csv: bool) -> None:
    """Fig. 2 and Fig. 4, each as PNG (300 dpi, linked in the report) and PDF (same stem), with
    the numbers behind it as CSV: per point mean, std, n and the 95 % interval (ci_low, ci_high)."""
    label = figures.metric_label(metric)
    eff, origin = figures.efficiency_data(rep.study.runs, metric)
    if not eff.empty:
        path = figures.plot_efficiency(eff, rep.out / "fig2_data_efficiency.png", metric, origin)
        _paper_figure(rep, path, f"Fig. 2: {label} against training images per method, mean and 95 % "
                                 f"interval over seeds ({origin})")
        if csv:
            rep.write_csv(eff, "fig2_data_efficiency.csv")
    ablations = {key: data for key, data in figures.ablation_data(rep.study.runs, metric).items() if not data.empty}
    for (method, option), data in ablations.items():
        stem = figures.ablation_file(method, option, list(ablations))
        paper = paper_value(method, option, data)
        path = figures.plot_ablation(data, rep.out / f"{stem}.png", method, option, metric, paper)
        _paper_figure(rep, path, f"Ablation of {method_label(method.partition('+')[0])}'s {param_label(option)}: "
                                 f"{label}, mean and 95 % interval over seeds"
                                 + (f" (dotted: the paper's value, {paper:g})" if paper is not None else ""))
        if csv:
            rep.write_csv(data, f"{stem}.csv")


ARM_CURVE_METRIC = "val_auc"  # the convergence diagnostic's curve (trainables.convergence)


def _arm_curves(rep: Report, uri: str, csv: bool) -> None:
    """A study with grid arms: each arm's validation curves (mean over seeds per method), the
    picture behind each arm's convergence flag: a recipe that needs a longer schedule (crops
    and mixup) shows curves still rising where flips alone have flattened."""
    runs = rep.study.runs
    if runs.empty or "source" not in runs:
        return
    grid = runs[(runs["stage"] == "grid") & (runs["status"] == "FINISHED")
                & runs["source"].str.contains(ARM_SEPARATOR, regex=False)]
    if grid.empty:
        return
    data = figures.arm_curves_data(runs, histories(uri, list(grid["run_id"]), ARM_CURVE_METRIC))
    if data.empty:
        return
    path = figures.plot_arm_curves(data, rep.out / "curves_arms.png", ARM_CURVE_METRIC)
    rep.files.append(path)
    rep.figures[f"Validation curves per arm ({ARM_CURVE_METRIC} after each epoch, mean over each cell's runs)"] = path
    if csv:
        rep.write_csv(data, "curves_arms.csv")


def _sweep_figures(rep: Report) -> None:
    """Per swept cell with a varied hyperparameter: its slices, and its parallel coordinates when
    two or more varied (PNG at 300 dpi, linked in the sweep's section, and PDF)."""
    from analysis.sweep_figures import plot_parallel, plot_slices

    for cell in rep.sweep:
        if not cell.params or cell.trials.empty:
            continue
        made = [(plot_slices(cell, rep.out / f"sweep_slices_{cell.slug()}.png"),
                 f"Sweep slices, {cell.title()}: {figures.metric_label(cell.metric)} against each varied "
                 "hyperparameter; filled: complete, hollow: stopped by ASHA (its last value), star: the best, "
                 "dashed: the paper's value (the `paper` space)")]
        if len(cell.params) >= 2:
            made.append((plot_parallel(cell, rep.out / f"sweep_parallel_{cell.slug()}.png"),
                         f"Sweep parallel coordinates, {cell.title()}: one line per trial, coloured by "
                         f"{figures.metric_label(cell.metric)}"))
        for png, caption in made:
            pdf = png.with_suffix(".pdf")
            rep.files += [png, pdf]
            rep.sweep_figures.setdefault(cell.key, []).append((f"{caption}; vector version {pdf.name}", png.name))


BUDGETS_FILE = "budgets.json"  # min_steps: auto's choices on the parent run (study.tracking.log_budgets)


def budget_choices(uri: str, parent) -> list[dict]:
    """The budget stage's choices recorded on the parent run ([] when it ran none)."""
    import json

    from analysis.store import downloaded, open_existing
    if parent is None or "budgets" not in parent.tags:
        return []
    try:
        with downloaded(open_existing(uri), parent.run_id, BUDGETS_FILE) as path:
            return list(json.loads(path.read_text()).get("choices", []))
    except FileNotFoundError:
        return []


def mark_budget_unconverged(cells: pd.DataFrame, choices: list[dict]) -> pd.DataFrame:
    """Cells whose recipe (method, arm) the budget stage found still improving at its largest
    budget (`converged: false` in budgets.json) are marked ‡ too: doubling that budget still
    gained on validation, whatever a run's own late gain says."""
    if cells.empty or "unconverged" not in cells:
        return cells
    cells = cells.copy()
    for c in choices:
        if c.get("converged", True):
            continue
        arm = c.get("arm")
        block = cells["source"].str.endswith(f"{ARM_SEPARATOR}{arm}") if arm else \
            ~cells["source"].str.contains(ARM_SEPARATOR, regex=False)
        hit = block & (cells["method"] == c["method"]) & (cells["volume"] == str(c["volume"]))
        cells.loc[hit, "unconverged"] = True
    return cells


def paper_value(method: str, option: str, data: pd.DataFrame) -> float | None:
    """The paper's (or the method's authors') value of `method`'s `option` at the ablation's
    smallest volume, when it is a number and the method has paper values (else None)."""
    from search_spaces import paper_values
    from trainables.methods import METHODS
    base = method.partition("+")[0]
    if base not in METHODS or data.empty:
        return None
    volume = int(data["volume_n"].min())
    try:
        value = paper_values(base, volume).get(option)
    except UserError:
        return None
    if value is None:  # not among its paper values: the option's declared default
        value = getattr(METHODS[base].options(), option, None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _paper_figure(rep: Report, png: Path, caption: str) -> None:
    pdf = png.with_suffix(".pdf")
    rep.files += [png, pdf]
    rep.figures[f"{caption}; vector version {pdf.name}"] = png


def explain_candidate(runs: pd.DataFrame) -> str | None:
    """A grid run with a model to draw Fig. 3 from: the best distilled student (a method with
    teachers; the paper draws its CKD's) of the largest volume, else the best run."""
    from trainables.methods import METHODS
    grid = runs[(runs["stage"] == "grid") & (runs["status"] == "FINISHED")]
    if grid.empty or "test_acc" not in grid:
        return None
    distilled = grid[grid["method"].map(lambda m: m in METHODS and METHODS[m].needs_teachers)]
    pool = distilled if not distilled.empty else grid
    pool = pool[pool["volume_n"] == pool["volume_n"].max()].sort_values("test_acc", ascending=False)
    return pool["run_id"].iloc[0] if not pool.empty else None


def markdown(rep: Report, metric: str) -> str:
    s, runs = rep.study, rep.study.runs
    parent = s.parent
    tags = parent.tags if parent else {}
    code = tags.get("code_version", "unknown")
    lines = [f"# Study report: {s.study}", "",
             f"- tracking URI: `{s.uri}` (experiment {s.experiment_id})",
             f"- parent run: `{parent.run_id}` ({parent.status})" if parent else "- parent run: none found",
             f"- code version: `{code}`, config hash `{tags.get('config_hash', 'unknown')}`",
             f"- generated {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
             "## Runs", "", _run_counts(runs), ""]
    lines += _failed(runs)
    lines += ["## Tables", "",
              "Each cell: mean ± sample std (number of seeds) of the test metric over seeds; the best of each "
              "row in bold (Table III: the best pair of each volume and method). `paper x, Δ d`: the paper's "
              "single-run accuracy and ours minus the paper's. VT does not depend on the teacher: a pair's VT "
              "cell is its student's VT runs; `full` is the teachers-stage run of the student's architecture.", ""]
    for view in rep.views:
        lines += [f"### {view.title} (test {render.METRIC_NAMES[view.metric]})", "", render.markdown_table(view), ""]
        if view.untuned:
            lines += [render.UNTUNED_NOTE, ""]
        if view.unconverged:
            lines += [render.UNCONVERGED_NOTE, ""]
        if view.transfer:
            lines += [render.transfer_note(view.transfer), ""]
    if rep.cells.empty:
        lines += ["No finished grid run with test metrics yet.", ""]
    lines += _evaluation_section(rep)
    lines += _teachers_section(rep)
    lines += _paper_section(rep)
    lines += _convergence_section(rep)
    lines += ["## Paired comparisons across seeds", "",
              "Differences of test metrics paired by (subset draw, seed): the two runs of a pair share the "
              "training subset, the initial weights and the test rows (checked by the rows' digest), so the "
              "difference is the methods'. The mean difference with its Student-t 95 % interval and its "
              "percentile bootstrap 95 % interval; the paired t-test's p-value, and that p-value "
              "Holm-adjusted over every comparison of the study on the same metric (all ACC comparisons "
              "together, all AUC comparisons together); P(A>B): the share of pairs where A scores higher, "
              "ties counting half, with its bootstrap 95 % interval. A difference is resolved when its "
              "Holm-adjusted p < 0.05 (and it has at least 2 pairs). The paper reports none.", ""]
    lines += [render.comparisons_markdown(rep.comparisons) if not rep.comparisons.empty
              else "No row has two methods side by side.", ""]
    lines += cross.markdown(rep.cross_dataset) if rep.cross_dataset is not None else []
    lines += _variance_section(rep)
    lines += sweep.markdown(rep.sweep, rep.sweep_figures)
    lines += ["## Figures", ""]
    for caption, path in rep.figures.items():
        lines += [f"![{caption}]({path.name})", "", f"*{caption}*", ""]
    if not rep.figures:
        lines += ["No figure: the study has no ablation runs (and no grid VT runs) with test metrics.", ""]
    lines += _registered_section(rep)
    lines += _reproduce(rep)
    if parent and parent.config_text:
        lines += ["## Study config (`study.yaml`, from the parent run)", "", "```yaml",
                  parent.config_text.rstrip(), "```", ""]
    lines += ["## Files", ""] + [f"- [{p.name}]({p.name})" for p in rep.files if p.name != "report.md"]
    return "\n".join(lines) + "\n"


def _variance_section(rep: Report) -> list[str]:
    """Test accuracy per grid cell: the spread split into the subset draw's part and the seed's."""
    var = variance_table(rep.cells)
    if var.empty:
        return []
    rows = [[r.source, r.volume, render.pair_text(r.pair), render.method_name(r.method), str(r.n_draws), str(r.n_seeds),
             render.num(r.std), render.num(r.sd_draw), render.num(r.sd_seed), render.num(r.sd_residual),
             r.note or "–"] for r in var.itertuples()]
    header = ["source", "volume", "pair", "method", "draws", "seeds", "total std", "sd draw", "sd seed",
              "sd residual", "note"]
    return ["## Where the spread comes from", "",
            "Test accuracy per grid cell: the training subset's draw and the seed (initial weights, order) "
            "each move a result. With every draw run with every seed, a two-way ANOVA without replication "
            "splits the variance: sd draw = √max(0, (MS_draw − MS_res)/seeds), sd seed = √max(0, (MS_seed − "
            "MS_res)/draws), sd residual = √MS_res. Runs whose subset the seed drew (draw = seed) cannot be "
            "split. `variance.csv` also has the std of the per-draw and per-seed means.", "",
            render.md_rows(header, rows), ""]


def _run_counts(runs: pd.DataFrame) -> str:
    counts = runs.groupby(["stage", "status"]).size().unstack(fill_value=0)
    header = ["stage", *counts.columns]
    rows = [[stage, *(str(int(v)) for v in row)] for stage, row in counts.iterrows()]
    return render.md_rows(header, rows)


def _failed(runs: pd.DataFrame) -> list[str]:
    bad = runs[runs["status"] != "FINISHED"]
    if bad.empty:
        return []
    rows = [[r.stage, r.cell, r.status, r.run_id, r.error or ""] for r in bad.itertuples()]
    return ["Runs that did not finish (left out of the tables):", "",
            render.md_rows(["stage", "cell", "status", "run", "error"], rows), ""]


def _evaluation_section(rep: Report) -> list[str]:
    """What the tables were scored on, per source, and every metric beside ACC."""
    runs = rep.study.runs
    grid = runs[(runs["stage"] == "grid") & (runs["status"] == "FINISHED")]
    if grid.empty or "test_n" not in grid:
        return []
    lines = ["## Evaluation sets and all metrics", ""]
    for source, g in grid.groupby("source", sort=True):
        sets = g.drop_duplicates(["test_rows", "test_n", "test_n_real", "test_n_fake"])
        described = "; ".join(f"{int(r.test_n)} images ({int(r.test_n_real)} real, {int(r.test_n_fake)} fake), "
                              f"rows digest `{r.test_rows or 'unknown'}`" for r in sets.itertuples())
        same = "the same rows for every grid trial" if len(sets) == 1 else \
            f"WARNING: {len(sets)} different test sets among the grid trials (comparisons pair only equal ones)"
        lines += [f"- {source}: test set {described}: {same}."]
    lines += [""]
    blocks = rep.cells.drop_duplicates("block")["block"] if not rep.cells.empty else []
    for block in blocks:
        for level, metrics in (("frame", ("acc", "bacc", "auc", "eer", "ap")),
                               ("video", ("video_acc", "video_bacc", "video_auc", "video_eer", "video_ap"))):
            if rep.cells[(rep.cells["block"] == block) & rep.cells["metric"].isin(metrics)].empty:
                continue
            lines += [f"### {block}: every test metric, {level} level (mean ± std (seeds))", "",
                      render.metrics_markdown(rep.cells, block, metrics), ""]
    return lines


def _teachers_section(rep: Report) -> list[str]:
    table = teacher_table(rep.study.runs)
    if table.empty:
        return []
    rows = [[r.source, r.teacher, r.arch, render.num(r.val_acc), render.num(r.val_auc), render.num(r.test_acc),
             render.num(r.test_auc), r.best_student or "–", render.num(r.best_student_val_acc),
             render.num(r.margin, signed=True), r.verdict] for r in table.itertuples()]
    header = ["source", "teacher", "arch", "val ACC", "val AUC", "test ACC", "test AUC", "best student (val)",
              "its val ACC", "margin", "verdict"]
    return ["## Teachers", "",
            f"Each teacher beside the best student distilled from it (grid cell with the highest mean validation "
            f"ACC). A teacher should beat it clearly (by {CLEAR_MARGIN:.2f}) for distillation to have something "
            "to transfer.", "", render.md_rows(header, rows), ""]


def _paper_section(rep: Report) -> list[str]:
    lines = ["## The paper's cells this study lacks", ""]
    has_paper = any(v.has_paper for v in rep.views)
    if not has_paper and rep.missing.empty:
        sources = ", ".join(sorted(set(rep.study.runs["source"]) - {""}))
        return lines + [f"The study ran none of the paper's datasets (sources: {sources}): its tables are "
                        "Table I-like, without paper numbers.", ""]
    if rep.missing.empty:
        lines += ["None: every paper cell on the study's datasets has a value here.", ""]
    else:
        lines += [f"{len(rep.missing)} cell(s):", "", render.missing_markdown(rep.missing), ""]
    if rep.not_run:
        lines += [f"Paper blocks the study did not run: {', '.join(rep.not_run)}.", ""]
    return lines


def _convergence_section(rep: Report) -> list[str]:
    """Per table cell: its budget (optimiser steps), its runs' mean late gain, still improving or not."""
    conv = convergence(rep.cells)
    if conv.empty:
        return []

    def verdict(r) -> str:
        if r.checked:
            return "yes" if r.still_improving else "no"
        return "not checked (runs recorded before this diagnostic)"

    rows = [[r.source, render.pair_text(r.pair), render.method_name(r.method), r.volume, str(r.steps) or "–",
             render.num(r.train_ce), render.num(r.late_gain, signed=True), verdict(r)] for r in conv.itertuples()]
    lines = ["## Budgets and convergence", "",
             "A cell is still improving when its runs had not fitted their labelled training images (mean "
             f"cross-entropy of the last epoch above {FIT_CE_TOL} nats) or their validation AUC was still rising "
             f"steeply (mean late gain above {LATE_GAIN_TOL}; a run's late gain: its mean validation AUC over the "
             "last third of its epochs minus the mean over the third before; a run of fewer than 3 epochs has "
             "none; trainables.convergence). Its numbers measure how far the training budget got, not what the "
             f"method can learn (marked {render.DDAGGER} in the tables). Steps: the runs' optimiser steps.", ""]
    notes = [f"- warning: {w}" for w in unconverged_warnings(rep.cells)]
    if not conv["checked"].any():
        notes += ["- the budget was not checked: no run recorded the diagnostic."]
    lines += notes + [""] if notes else []
    return lines + [render.md_rows(["source", "pair", "method", "volume", "steps", "final train CE",
                                    "mean late gain", "still improving"], rows), ""]


def _registered_section(rep: Report) -> list[str]:
    if rep.registered is None:
        return []
    from analysis.registry import SELECT_BY

    reg = rep.registered
    rows = [[r.name, r.version or "–", r.run_id, str(r.seed), render.num(getattr(r, SELECT_BY)), r.status, r.note]
            for r in reg.itertuples()]
    return ["## Model Registry", "",
            f"`--register`: per student cell of the tables, the seed with the highest {SELECT_BY} (never chosen "
            "on test), its model version tagged with the cell's test metrics (mean and std over seeds). Load one "
            "with `mlflow.pyfunc.load_model('models:/<name>/<version>')` or `study predict --model "
            "models:/<name>/<version>`.", "",
            render.md_rows(["name", "version", "run", "seed", SELECT_BY, "status", "note"], rows)
            if rows else "No student cell to register.", ""]


def _reproduce(rep: Report) -> list[str]:
    s = rep.study
    code = (s.parent.tags.get("code_version", "unknown") if s.parent else "unknown")
    workdir = workdir_of(s.uri)
    where = f"--workdir {workdir}" if workdir else f"--tracking-uri {s.uri}"
    lines = ["## Reproduce", "", "```bash"]
    if code not in ("unknown", ""):
        lines.append(f"git checkout {code.removesuffix('-dirty')}"
                     + ("   # the study ran on uncommitted changes (-dirty)" if code.endswith("-dirty") else ""))
    if s.parent and s.parent.config_text:
        lines.append("study run study.yaml --workdir runs-reproduce   # study.yaml: the config beside this report")
    lines.append(f"study report {where} --study {s.study} --out {rep.out}")
    candidate = explain_candidate(s.runs)
    if candidate:
        lines.append(f"study explain {where} --run {candidate} --images <folder with real/ and fake/ images> "
                     f"--out {rep.out / 'gradcam'}   # Fig. 3")
    run = candidate or s.runs["run_id"].iloc[0]
    lines += [f"study report {where} --study {s.study} --out {rep.out} --curves {run}   # training curves",
              "```", ""]
    return lines
