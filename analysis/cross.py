"""Cross-dataset evaluation: the study's teachers and students scored on other datasets.

A run scored on evaluation dataset <name> (the study's `evaluate.datasets`) carries metrics
`cross_<name>_<metric>` (frame and `video_` ones), `cross_<name>_n` (frames scored), the tag
`cross_<name>_rows` (the rows' digest) and params `evaluate`, `video_rule`, `frames_per_video`.
The table keeps the in-domain tables' cells (source, pair, method, volume; the teachers'
`full` row; transfer-set cells apart, § ) and marks (†, ‡), over the runs scored on some
evaluation dataset: their in-domain test AUC beside each dataset's frame AUC and video AUC,
mean ± std over seeds. Each method is compared with VT, paired by (draw, seed) as the
in-domain comparisons are (`analysis.tables.baseline_comparisons`); these comparisons are
their own Holm family per dataset and level, apart from the in-domain ones. Where a
published number exists (DeepfakeBench, FF++ c23 -> Celeb-DF v2, Xception and
EfficientNet-B4) it stands beside the frame AUC. Never read to choose anything.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from analysis import render
from analysis.paper import FFPP, FFPP_SOURCES
from analysis.tables import (
    baseline_comparisons, baselines, build_cells, pair_key, student_of, timm_name, transfer_of, transfer_settings,
    volume_key,
)

PREFIX = "cross_"
IN_DOMAIN = "test_auc"  # the runs' AUC on their own source's test split
LEVELS = {"auc": "AUC", "video_auc": "video AUC"}  # per evaluation dataset
# DeepfakeBench (Yan et al. 2023, github.com/SCLBD/DeepfakeBench, README results table): frame-level AUC of
# detectors trained on FaceForensics++ c23 (all four manipulations, full data) and tested on Celeb-DF v2
PUBLISHED_FFPP_TO_CELEBDF = {"xception": 0.7365, "efficientnet_b4": 0.7487}
PUBLISHED_BY = "DeepfakeBench"
CSV_COLUMNS = ["source", "pair", "method", "volume", "dataset", "metric", "n", "mean", "std", "published",
               "untuned", "unconverged", "transfer"]


@dataclass(frozen=True)
class CrossTables:
    datasets: list[str]  # evaluation dataset names, in the study's order
    cells: pd.DataFrame  # build_cells' frame on metrics test_auc and cross_<name>_<level>, one row per cell
    comparisons: pd.DataFrame  # each method - VT on every cross metric
    settings: list[str]  # "video rule: mean, frames per video: 32" (one per setting the runs used)
    scored: list[str]  # per dataset: frames scored and the rows' digest


def column(dataset: str, level: str) -> str:
    return f"{PREFIX}{dataset}_{level}"


def dataset_names(runs: pd.DataFrame) -> list[str]:
    """Evaluation datasets the runs have scores on: the `evaluate` params' names in order, then any
    other with a `cross_<name>_n` column (the one metric name without an underscore, so unambiguous)."""
    listed = [n.strip() for text in runs.get("p_evaluate", pd.Series(dtype=object)).dropna()
              for n in str(text).split(",") if n.strip()]
    found = [c[len(PREFIX):-2] for c in runs.columns if c.startswith(PREFIX) and c.endswith("_n")]
    return [d for d in dict.fromkeys([*listed, *found])
            if any(column(d, lv) in runs and runs[column(d, lv)].notna().any() for lv in LEVELS)]


def published(source: str, student: str, dataset: str) -> float:
    """The published frame AUC of a cell: its source FF++, its architecture (the student's, or the
    `full` teacher's, of the same architecture) Xception or EfficientNet-B4, its dataset Celeb-DF; else nan."""
    if not (_is_ffpp(source) and re.fullmatch(r"celeb_?df(_?v?2)?", dataset)):
        return math.nan
    return PUBLISHED_FFPP_TO_CELEBDF.get(arch_family(timm_name(student)), math.nan)


def arch_family(arch: str) -> str:
    """'legacy_xception', 'xception41', 'xception65p' -> 'xception'; 'tf_efficientnet_b4_ns',
    'efficientnet_b4.ra2_in1k' -> 'efficientnet_b4'; anything else as given."""
    name = re.sub(r"^(legacy|gluon|tf|timm)_", "", arch.lower().replace("-", "_").split(".")[0])
    if re.fullmatch(r"xception\d*p?", name):
        return "xception"
    if re.fullmatch(r"efficientnet_b4(_[a-z0-9_]+)?", name):
        return "efficientnet_b4"
    return name


def _is_ffpp(source: str) -> bool:
    text = source.lower()
    return (any(m.lower() in text for m in FFPP_SOURCES) or "ff++" in text or "ffpp" in text
            or FFPP.lower() in text)


def cross_tables(runs: pd.DataFrame, config_text: str = "") -> CrossTables | None:
    """The cross-dataset cells and comparisons of the finished runs scored on some evaluation
    dataset; None when no run was (the report then has no such section)."""
    if runs.empty:
        return None
    done = runs[runs["status"] == "FINISHED"]
    datasets = dataset_names(done)
    if not datasets:
        return None
    cross_columns = [column(d, lv) for d in datasets for lv in LEVELS if column(d, lv) in done]
    scored = done[done[cross_columns].notna().any(axis=1)]  # the in-domain AUC of the same models
    metrics = {IN_DOMAIN: (IN_DOMAIN, "test_rows"),
               **{column(d, lv): (column(d, lv), f"{PREFIX}{d}_rows") for d in datasets for lv in LEVELS}}
    cells = build_cells(scored, config_text, metrics)
    cells = cells.drop_duplicates(["source", "volume", "pair", "method", "metric"])  # Table III repeats cells
    comp = baseline_comparisons(cells, cross_columns, baselines(scored[scored["stage"] == "grid"]))
    return CrossTables(datasets, cells.reset_index(drop=True), comp, _settings(scored), _scored(scored, datasets))


def _settings(runs: pd.DataFrame) -> list[str]:
    """'video rule: <rule>, frames per video: <k>' from the runs' params; one line per setting when
    they disagree, with its runs' count."""
    def value(row, name):
        v = row.get(f"p_{name}")
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    counts: dict[tuple[str, str], int] = {}
    for _, row in runs.iterrows():
        rule, k = value(row, "video_rule"), value(row, "frames_per_video")
        k_text = str(int(k)) if k is not None else ("all" if rule is not None else "unknown")
        key = (str(rule) if rule is not None else "unknown", k_text)
        counts[key] = counts.get(key, 0) + 1
    lines = [f"video rule: {rule}, frames per video: {k}" for rule, k in counts]
    if len(counts) > 1:
        lines = [f"{line} ({n} runs)" for line, n in zip(lines, counts.values())]
    return lines


def _scored(runs: pd.DataFrame, datasets: list[str]) -> list[str]:
    out = []
    for d in datasets:
        n_col, rows_col = f"{PREFIX}{d}_n", f"{PREFIX}{d}_rows"
        frames = sorted({int(v) for v in runs[n_col].dropna()}) if n_col in runs else []
        digests = sorted({str(v) for v in runs[rows_col].dropna() if v}) if rows_col in runs else []
        same = "" if len(digests) <= 1 else \
            f"; WARNING: {len(digests)} different row sets (comparisons pair only equal ones)"
        out.append(f"{d}: {', '.join(map(str, frames)) or 'unknown'} frames scored, rows digest "
                   f"{', '.join(f'`{x}`' for x in digests) or 'unknown'}{same}")
    return out


def _split(metric: str, source: str, datasets: list[str]) -> tuple[str, str]:
    """A cell metric as (dataset, level): ('<source>', 'test_auc') in domain, else ('celebdf', 'auc')."""
    if metric == IN_DOMAIN:
        return source, IN_DOMAIN
    for d in sorted(datasets, key=len, reverse=True):  # 'celebdf_v2' before 'celebdf'
        for lv in LEVELS:
            if metric == column(d, lv):
                return d, lv
    raise ValueError(f"not a cross-dataset metric: {metric}")


def long_frame(ct: CrossTables) -> pd.DataFrame:
    """cross_dataset.csv: one row per (source, pair, method, volume, dataset, metric)."""
    rows = []
    for r in ct.cells.itertuples():
        dataset, level = _split(r.metric, r.source, ct.datasets)
        rows.append({"source": r.source, "pair": r.pair, "method": r.method, "volume": r.volume,
                     "dataset": dataset, "metric": level, "n": r.n, "mean": r.mean, "std": r.std,
                     "published": published(r.source, r.student, dataset) if level == "auc" else math.nan,
                     "untuned": bool(r.untuned), "unconverged": bool(r.unconverged),
                     "transfer": getattr(r, "transfer", "")})
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def comparisons_frame(ct: CrossTables) -> pd.DataFrame:
    """cross_comparisons.csv: the comparisons with their dataset and level (auc, video_auc)."""
    comp = render.cells_csv(ct.comparisons)
    split = [_split(m, s, ct.datasets) for m, s in zip(comp["metric"], comp["source"])]
    comp.insert(comp.columns.get_loc("metric"), "dataset", [d for d, _ in split])
    comp["metric"] = [lv for _, lv in split]
    return comp


def metric_names(ct: CrossTables) -> dict[str, str]:
    return {IN_DOMAIN: "in-domain AUC", **{column(d, lv): f"{d} {name}" for d in ct.datasets
                                           for lv, name in LEVELS.items()}}


@dataclass(frozen=True)
class _Table:
    source: str
    header: list[str]
    rows: list[list[str]]  # volume, pair, method (marked), values
    untuned: bool
    unconverged: bool
    transfer: tuple[str, ...]


def _tables(ct: CrossTables, pair_arrow: str = "→") -> list[_Table]:
    """Per source: rows (volume, pair, method), columns in-domain AUC, then per dataset its frame AUC,
    video AUC and (where one exists) the published frame AUC with our mean minus it."""
    out, names = [], metric_names(ct)
    for source in dict.fromkeys(ct.cells["source"]):
        sub = ct.cells[ct.cells["source"] == source]
        present = [m for m in names if m in set(sub["metric"])]
        split = {m: _split(m, source, ct.datasets) for m in present}
        order = {m: i for i, m in enumerate(dict.fromkeys(sub["method"]))}  # column order of the tables
        keys = sorted(dict.fromkeys(zip(sub["volume"], sub["pair"], sub["method"])),
                      key=lambda k: (volume_key(k[0]), pair_key(k[1]), order[k[2]]))
        with_published = {d for d in ct.datasets
                          if any(not math.isnan(published(source, student_of(p), d)) for _, p, _ in keys)}
        header = ["volume", "pair", "method"]
        for m in present:
            header.append(names[m])
            if split[m][1] == "auc" and split[m][0] in with_published:
                header.append(f"{split[m][0]} AUC, {PUBLISHED_BY} (Δ ours)")
        rows = []
        for volume, pair, method in keys:
            group = sub[(sub["volume"] == volume) & (sub["pair"] == pair) & (sub["method"] == method)]
            by_metric = {r.metric: r for r in group.itertuples()}
            flags = {"untuned": group["untuned"].any(), "unconverged": group["unconverged"].any(),
                     "transfer": transfer_of(method)}
            line = [volume, render.pair_text(pair, arrow=pair_arrow), render.method_name(method) + render.marks(flags)]
            for m in present:
                cell = by_metric.get(m)
                line.append(render.cell_text(cell.mean, cell.std, cell.n) if cell is not None else "–")
                if split[m][1] == "auc" and split[m][0] in with_published:
                    ref = published(source, student_of(pair), split[m][0])
                    line.append("–" if math.isnan(ref) else render.num(ref, 4) + (
                        f" (Δ {render.num(cell.mean - ref, signed=True)})" if cell is not None else ""))
            rows.append(line)
        out.append(_Table(source, header, rows, bool(sub["untuned"].any()), bool(sub["unconverged"].any()),
                          transfer_settings(sub)))
    return out


def markdown(ct: CrossTables) -> list[str]:
    """The report's "Cross-dataset evaluation" section."""
    lines = ["## Cross-dataset evaluation", "",
             f"The runs scored after training on other datasets' test splits ({', '.join(ct.datasets)}; never "
             "read to choose anything). Each cell: mean ± sample std (number of seeds) over the runs scored on "
             "some evaluation dataset; in-domain AUC: the same runs' test AUC on their own source; video AUC: a "
             "video's score from its frames by the video rule below. Rows as in the tables: VT does not depend "
             "on the teacher, `full` is the teachers-stage run of the student's architecture. "
             f"{PUBLISHED_BY}: its published frame AUC of the architecture trained on all of FF++ c23 and tested "
             "on Celeb-DF v2 (single runs, full data: a cell trained on one manipulation or on a subset is not "
             "its setting), Δ ours minus it.", ""]
    for table in _tables(ct):
        lines += [f"### {table.source}: cross-dataset AUC", "", render.md_rows(table.header, table.rows), ""]
        lines += [render.UNTUNED_NOTE, ""] if table.untuned else []
        lines += [render.UNCONVERGED_NOTE, ""] if table.unconverged else []
        lines += [render.transfer_note(table.transfer), ""] if table.transfer else []
    lines += [*(f"- {s}" for s in ct.settings), *(f"- {s}" for s in ct.scored), ""]
    lines += ["### Paired comparisons on the evaluation datasets (method − VT)", "",
              "Each method minus VT of the same student, source and volume, paired by (subset draw, seed) and "
              "checked to be scored on the same rows, as the in-domain comparisons. Holm-adjusted as a family of "
              "their own, one per dataset and level (all frame AUC comparisons on one dataset together, all its "
              "video AUC ones together), apart from the in-domain comparisons.", "",
              render.comparisons_markdown(ct.comparisons, metric_names(ct)) if not ct.comparisons.empty
              else "No method beside VT was scored on an evaluation dataset.", ""]
    return lines


def _tex(text: str) -> str:
    """A markdown cell as LaTeX: escaped, then its arrow, ±, marks, Δ and dash as math or TeX."""
    return render.tex_escape(text).replace("->", r"$\to$").replace("±", r"$\pm$") \
        .replace(render.DAGGER, r"$^\dagger$").replace(render.DDAGGER, r"$^\ddagger$") \
        .replace(render.SECTION, r"$^\S$").replace("Δ", r"$\Delta$").replace("–", "--")


def latex(ct: CrossTables, label: str = "tab:cross") -> str:
    """cross_dataset.tex: one booktabs table per source."""
    out = []
    for i, table in enumerate(_tables(ct, pair_arrow="->"), 1):
        caption = (f"{render.tex_escape(table.source)}: cross-dataset AUC, mean $\\pm$ std (seeds); "
                   f"{render.tex_escape('; '.join(ct.settings))}."
                   + (r" $^\dagger$ the paper's fixed hyperparameters, not swept." if table.untuned else "")
                   + (r" $^\ddagger$ still improving when training stopped." if table.unconverged else "")
                   + (rf" $^\S$ distilled with an unlabeled transfer set "
                      rf"({render.tex_escape(', '.join(table.transfer))}); the volume counts labelled images only."
                      if table.transfer else ""))
        body = [" & ".join(_tex(c) for c in row) + r" \\" for row in table.rows]
        out.append("\n".join([r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
                              rf"\label{{{label}:{i}}}", rf"\begin{{tabular}}{{lll{'c' * (len(table.header) - 3)}}}",
                              r"\toprule", " & ".join(_tex(h) for h in table.header) + r" \\", r"\midrule", *body,
                              r"\bottomrule", r"\end{tabular}", r"\end{table}"]))
    return "% needs \\usepackage{booktabs}\n" + "\n\n".join(out) + "\n"
