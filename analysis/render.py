"""Tables as Markdown and LaTeX (booktabs) text; cells as `mean ± std (n)`, the paper beside."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

from analysis.tables import TRANSFER_SEP, TableView
from trainables.convergence import FIT_CE_TOL, LATE_GAIN_TOL
from trainables.methods import method_label  # torch-free

METRIC_NAMES = {"acc": "ACC", "bacc": "balanced ACC", "auc": "AUC", "eer": "EER", "ap": "AP",
                **{f"video_{k}": f"video {v}" for k, v in (("acc", "ACC"), ("bacc", "balanced ACC"),
                                                            ("auc", "AUC"), ("eer", "EER"), ("ap", "AP"))}}
DAGGER = "†"
UNTUNED_NOTE = (f"{DAGGER} the paper's fixed hyperparameters, not swept (grid.untuned), beside cells whose "
                "hyperparameters were swept: not an equal-footing comparison.")
DDAGGER = "‡"
UNCONVERGED_NOTE = (f"{DDAGGER} still improving when training stopped (trainables.convergence): its students had "
                    f"not fitted their training images (mean final training CE above {FIT_CE_TOL} nats) or their "
                    f"validation AUC was still rising steeply (mean gain over the last third of training above "
                    f"{LATE_GAIN_TOL}); this number measures how far the budget got, not what the method can learn: "
                    "give these cells more steps (students.hparams.min_steps, or min_steps: auto to find a budget "
                    "on validation).")
SECTION = "§"


def transfer_note(settings: Sequence[str]) -> str:
    """The footnote of a table with cells distilled with an unlabeled transfer set."""
    return (f"{SECTION} distilled with an unlabeled transfer set ({', '.join(settings)}) beside the labelled images "
            "(its method reads method+transfer); the volume counts labelled images only: not the paper's setting, "
            "and not pooled with the same method's runs without it.")


def marks(cell) -> str:
    """' †', ' ‡', ' §' after a cell's text, as its flags say (a dict or a row)."""
    get = cell.get if isinstance(cell, Mapping) else (lambda k: getattr(cell, k, None))
    return ((f" {DAGGER}" if get("untuned") else "") + (f" {DDAGGER}" if get("unconverged") else "")
            + (f" {SECTION}" if get("transfer") else ""))


def num(x: float, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def cell_text(mean: float, std: float, n: int, pm: str = "±") -> str:
    """'0.962 ± 0.010 (5)'; one seed has no spread: '0.962 (1)'."""
    if n < 2 or math.isnan(std):
        return f"{num(mean)} ({n})"
    return f"{num(mean)} {pm} {num(std)} ({n})"


def pair_text(pair: str, arrow: str = "→") -> str:
    teachers, student = pair.rsplit("->", 1)
    return f"{student} (VT only)" if not teachers else f"{teachers}{arrow}{student}"


def _paper_note(paper: float | None, diff: float | None) -> str:
    if paper is None or math.isnan(paper):
        return ""
    if diff is None or math.isnan(diff):
        return f"paper {num(paper)}"
    return f"paper {num(paper)}, Δ {num(diff, signed=True)}"


def _grid(view: TableView, fmt_cell, fmt_missing) -> list[list[str]]:
    rows = []
    for volume, pair in view.rows:
        line = [volume, pair]
        for m in view.methods:
            cell = view.cells.get((volume, pair, m))
            line.append(fmt_cell(cell) if cell is not None else fmt_missing(view.paper.get((volume, pair, m))))
        rows.append(line)
    return rows


def markdown_table(view: TableView) -> str:
    def fmt(cell: dict) -> str:
        text = cell_text(cell["mean"], cell["std"], cell["n"])
        text = f"**{text}**" if cell["best"] else text
        text += marks(cell)
        note = _paper_note(cell["paper"], cell["diff"])
        return f"{text} · {note}" if note else text

    def missing(paper: float | None) -> str:
        return f"– · paper {num(paper)}" if paper is not None else "–"

    header = ["volume", "pair", *(method_name(m) for m in view.methods)]
    rows = [[v, pair_text(p), *rest] for v, p, *rest in _grid(view, fmt, missing)]
    return md_rows(header, rows)


def md_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(x) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIAL.get(c, c) for c in str(text))


def latex_table(view: TableView, label: str) -> str:
    def fmt(cell: dict) -> str:
        text = cell_text(cell["mean"], cell["std"], cell["n"], pm=r"$\pm$")
        text = rf"\textbf{{{text}}}" if cell["best"] else text
        text += r"$^\dagger$" if cell.get("untuned") else ""
        text += r"$^\ddagger$" if cell.get("unconverged") else ""
        text += r"$^\S$" if cell.get("transfer") else ""
        if not math.isnan(cell["paper"]):
            text += rf" [{num(cell['paper'])}, ${num(cell['diff'], signed=True)}$]"
        return text

    def missing(paper: float | None) -> str:
        return f"-- [{num(paper)}]" if paper is not None else "--"

    cols = "ll" + "c" * len(view.methods)
    head = " & ".join(["volume", "pair", *(tex_escape(method_name(m)) for m in view.methods)]) + r" \\"
    body = [" & ".join([tex_escape(v), tex_escape(pair_text(p, arrow="->")).replace("->", r"$\to$"), *rest])
            + r" \\" for v, p, *rest in _grid(view, fmt, missing)]
    caption = (f"{tex_escape(view.title)}, test {METRIC_NAMES[view.metric]}: mean $\\pm$ std (seeds)"
               + (", [paper, difference]" if view.has_paper else "") + "; best in bold."
               + (r" $^\dagger$ the paper's fixed hyperparameters, not swept." if view.untuned else "")
               + (r" $^\ddagger$ still improving when training stopped: the budget's number, not the method's."
                  if view.unconverged else "")
               + (rf" $^\S$ distilled with an unlabeled transfer set ({tex_escape(', '.join(view.transfer))}); the "
                  "volume counts labelled images only." if view.transfer else ""))
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
                      rf"\label{{{label}}}", rf"\begin{{tabular}}{{{cols}}}", r"\toprule", head, r"\midrule",
                      *body, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def comparisons_markdown(comp: pd.DataFrame, names: Mapping[str, str] = METRIC_NAMES) -> str:
    """One row per comparison; `names`: each metric's name in the table."""
    header = ["table", "volume", "pair", "metric", "a - b",
              "mean difference [95 % t interval] (pairs); Holm-adjusted p; P(A>B) [95 % bootstrap interval]",
              "95 % bootstrap interval", "p", "resolved"]
    rows = [[r.block, r.volume, pair_text(r.pair), names[r.metric],
             f"{method_name(r.a)} - {method_name(r.b)}", r.text,
             f"[{num(r.boot_low, signed=True)}, {num(r.boot_high, signed=True)}]" if r.n >= 2 else "n/a",
             num(r.p), resolved_text(r)]
            for r in comp.itertuples()]
    return md_rows(header, rows)


def resolved_text(r) -> str:
    """In plain words: is the difference resolved (Holm-adjusted p < 0.05 over the study's comparisons
    of its metric, with at least 2 pairs), and which way; if not, why not."""
    if r.n < 2 or math.isnan(r.low):
        return "not resolved (fewer than 2 paired seeds)"
    if not r.resolved and r.low <= 0 <= r.high:
        return f"not resolved (interval includes 0, half-width {num((r.high - r.low) / 2)})"
    if not r.resolved:
        return (f"not resolved (Holm-adjusted p = {num(r.p_holm)} over the study's comparisons; "
                "the t interval alone excludes 0)")
    a, b = method_name(r.a), method_name(r.b)
    higher, lower = (a, b) if r.mean_diff > 0 else (b, a)
    if getattr(r, "unconverged", False):
        return (f"resolved: {higher} higher than {lower}, but {DDAGGER} under-trained (still improving when "
                "training stopped): the budget's ordering, not a result")
    return f"resolved: {higher} higher than {lower}"


def metrics_markdown(cells: pd.DataFrame, block: str, metrics: Sequence[str]) -> str:
    """One block's cells, one row per (volume, pair, method), a column per metric."""
    sub = cells[(cells["block"] == block) & cells["metric"].isin(metrics)]
    present = [m for m in metrics if m in set(sub["metric"])]
    rows = []
    for (volume, pair, method), group in sub.groupby(["volume", "pair", "method"], sort=False):
        by_metric = {r.metric: r for r in group.itertuples()}
        mark = f" {DAGGER}" if any(r.untuned for r in group.itertuples()) else ""
        mark += f" {DDAGGER}" if any(getattr(r, "unconverged", False) for r in group.itertuples()) else ""
        mark += f" {SECTION}" if any(getattr(r, "transfer", "") for r in group.itertuples()) else ""
        rows.append([volume, pair_text(pair), method_name(method) + mark,
                     *(cell_text(by_metric[m].mean, by_metric[m].std, by_metric[m].n) if m in by_metric else "–"
                       for m in present)])
    return md_rows(["volume", "pair", "method", *(METRIC_NAMES[m] for m in present)], rows)


def method_name(label: str) -> str:
    """A comparison's side or a column: a pair ('a→b'), or a method upper case with its transfer
    setting as given ('KD+train_unlabeled:2000')."""
    if "->" in label:
        return pair_text(label)
    method, sep, transfer = label.partition(TRANSFER_SEP)
    return method_label(method) + sep + transfer


def missing_markdown(missing: pd.DataFrame) -> str:
    header = ["paper table", "dataset", "subset", "volume", "method", "pair", "paper acc"]
    rows = [[r.table, r.dataset, r.subset or "–", r.volume, method_name(r.method), f"{r.teachers}→{r.student}",
             num(r.acc)] for r in missing.itertuples()]
    return md_rows(header, rows)


def cells_csv(cells: pd.DataFrame) -> pd.DataFrame:
    """The long cell frame with tuples written as ';'-joined text."""
    out = cells.copy()
    for col in ("seeds", "draws", "values", "run_ids", "test_rows"):
        if col in out:
            out[col] = out[col].map(lambda t: ";".join(str(x) for x in t))
    return out
